#!/usr/bin/env python3
"""Merges runs of zshot (bench/hot.c) into one report of medians.

    hot_median.py RUN.txt [RUN.txt ...]

Each run is zshot's output for the same arguments and malloc: its first line names the
run (with the machine's load at its start), the rest is a fixed layout of tables. The
merged report lists every run's first line, then the layout of the first run with each
number replaced by the median of that number over the runs, each column on its own
(a ratio column's median is the median of the runs' ratios, not the ratio of the
medians). One process's figures move together when other work takes its CPU, so a
single run can mislead; `make bench-hot` alternates the mallocs over several runs.

Exits with status 1, naming the line, where the runs' layouts differ.
"""

import re
import statistics
import sys

# A figure: digits with an optional fraction, and the ratio columns' trailing "x".
NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(x?)(?![\w.])")


def shape(line):
    """The line with its numbers blanked: what must agree between runs."""
    return NUMBER.sub(lambda m: "#" + m.group(2), line).split()


def merge(runs):
    """The merged report's lines, or raises ValueError where the runs differ."""
    heads = [r[0] for r in runs]
    bodies = [r[1:] for r in runs]
    if any(len(b) != len(bodies[0]) for b in bodies):
        raise ValueError(f"runs of {sorted({len(b) for b in bodies})} lines after their first")
    out = [f"medians of {len(runs)} runs, each figure on its own:"] + heads
    for i, line in enumerate(bodies[0]):
        if any(shape(b[i]) != shape(line) for b in bodies):
            raise ValueError(f"line {i + 2} differs between runs: {line.strip()!r}")
        columns = list(zip(*[[m.group(1) for m in NUMBER.finditer(b[i])] for b in bodies]))
        column = iter(columns)

        def median(m, column=column):
            values = next(column)
            decimals = len(m.group(1).partition(".")[2])
            text = f"{statistics.median(float(v) for v in values):.{decimals}f}" + m.group(2)
            # Right-aligned in the width the first run gave the figure.
            return text.rjust(len(m.group(0)))

        out.append(NUMBER.sub(median, line))
    return out


def main(paths):
    if not paths:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    runs = []
    for p in paths:
        with open(p) as f:
            lines = f.read().rstrip("\n").split("\n")
        if not lines or not lines[0].startswith("zshot:"):
            sys.exit(f"{p}: not zshot's output (its first line starts 'zshot:')")
        runs.append(lines)
    try:
        print("\n".join(merge(runs)))
    except ValueError as e:
        sys.exit(f"hot_median.py: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
