#!/usr/bin/env python3
"""Charts zsbench JSON results: density and throughput per implementation and phase.

    chart.py --out chart.png DIR|FILE...

One row per workload (for the traces, the largest object count run), three panels:
density after each phase, throughput per phase with one thread, and with two threads
(where those runs exist). Repetitions are reduced to their median, as in compare.py.
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

DENSITY_PHASES = ["fill", "free", "compact", "churn"]
SPEED_PHASES = ["fill", "read", "map", "free", "churn", "verify"]
COLORS = {
    "zsmalloc-dense": "#1b6ca8",
    "zsmalloc-kernel": "#7fb3dc",
    "malloc": "#555555",
    "jemalloc": "#d9822b",
    "mimalloc": "#5a9e4b",
}


def bars(ax, case, labels, phases, field, scale=1.0):
    # The phases this case ran, in the order it ran them.
    phases = [p for p in case.phase_order(phases)
              if any(case.phase(l, p, field) is not None for l in labels)]
    width = 0.8 / max(1, len(labels))
    for n, label in enumerate(labels):
        vals = []
        for ph in phases:
            v = case.phase(label, ph, field)
            vals.append(0 if v is None else v * scale)
        xs = [i + (n - (len(labels) - 1) / 2) * width for i in range(len(phases))]
        ax.bar(xs, vals, width, label=label, color=COLORS.get(label))
    ax.set_xticks(range(len(phases)))
    ax.set_xticklabels(phases)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    runs = compare.load(a.inputs)
    if not runs:
        sys.exit("chart.py: no results")
    labels = compare.labels_in(runs)
    groups = {}
    for r in runs:
        groups.setdefault(compare.case_key(r), []).append(r)
    # One row per (workload, sizes): its largest object count.
    rows = {}
    for (workload, sizes, objects, threads) in groups:
        k = (workload, sizes)
        rows[k] = max(rows.get(k, 0), objects)
    order = sorted(rows, key=lambda k: (k[0] != "trace", k[0], k[1]))

    height = 3.6 * len(order) + 0.9
    fig, axes = plt.subplots(len(order), 3, figsize=(17, height), squeeze=False)
    for r, (workload, sizes) in enumerate(order):
        objects = rows[(workload, sizes)]
        one = groups.get((workload, sizes, objects, 1))
        two = groups.get((workload, sizes, objects, 2))
        title = compare.case_title((workload, sizes, objects, 1)).rsplit(",", 1)[0]
        after = "after each phase, in run order" if workload == "churn" else "after each phase"
        ax = axes[r][0]
        if one:
            bars(ax, compare.Case(one), labels, DENSITY_PHASES, "density")
            ax.axhline(1.0, color="black", lw=0.8, ls=":")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("density (requested / footprint)")
        ax.set_title(f"{title}: density {after}", fontsize=10)
        for c, (runs_t, t) in enumerate(((one, 1), (two, 2)), start=1):
            ax = axes[r][c]
            if runs_t:
                bars(ax, compare.Case(runs_t), labels, SPEED_PHASES, "ops_per_s", 1e-6)
            else:
                ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes)
            ax.set_ylabel("million operations / s")
            ax.set_title(f"{title}: throughput, {t} thread{'s' if t > 1 else ''}", fontsize=10)
    handles, names = axes[0][0].get_legend_handles_labels()
    if not handles:
        handles, names = axes[0][1].get_legend_handles_labels()
    # Title and legend in the top 0.9 inch, the panels below.
    fig.suptitle(f"zsbench on {compare.machine()}", y=1 - 0.08 / height, va="top", fontsize=11)
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.38 / height),
               ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.9 / height))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=90)
    print(f"chart.py: wrote {a.out}")


if __name__ == "__main__":
    main()
