#!/usr/bin/env python3
"""Merges zsbench JSON results into one side-by-side table (Markdown, aligned so that it
reads as well in a terminal), implementations as columns, with ratios against glibc
malloc measured in the same run.

    compare.py [--out table.md] [--machine] [--density-phases ...] [--speed-phases ...] DIR|FILE...

Runs of the same case (workload, sizes, objects, threads) and label are repetitions:
each figure is their median. Standard library only.
"""
import argparse
import glob
import json
import os
import statistics
import sys

BASELINE = "malloc"
ORDER = ["zsmalloc-dense", "zsmalloc-kernel", "malloc", "jemalloc", "mimalloc"]
PHASE_TITLES = {
    "fill": "fill (malloc + write)",
    "read": "read (read_begin/end + verify)",
    "map": "map (map/unmap + verify)",
    "free": "free",
    "compact": "compact",
    "churn": "churn (free + malloc + write)",
    "verify": "verify (read + verify)",
}


def load(paths):
    runs = []
    for p in paths:
        files = sorted(glob.glob(os.path.join(p, "*.json"))) if os.path.isdir(p) else [p]
        for f in files:
            with open(f) as fh:
                r = json.load(fh)
            r["_file"] = f
            runs.append(r)
    return runs


def case_key(r):
    # A pool with another object limit or frame size is another case (they set the
    # dense layout's chain and the kernel layout's classes); it is named with the sizes.
    # The frame size asked for, not the one reported: the malloc shim counts 4096.
    sizes = r["sizes"]
    if r.get("max_object_size", 4096) != 4096:
        sizes = f"{sizes}, max object size {r['max_object_size']}"
    if r.get("frame_size_opt", 0):
        sizes = f"{sizes}, frames of {r['frame_size_opt']} bytes"
    return (r["workload"], sizes, r["objects"], r["threads"])


def human(n):
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div:
            v = n / div
            return f"{v:.3g}{suffix}" if v < 100 else f"{v:.0f}{suffix}"
    return str(n)


def case_title(key):
    workload, sizes, objects, threads = key
    name = sizes if workload == "trace" else f"{workload}: {sizes}"
    return f"{name}, {human(objects)} objects, {threads} thread{'s' if threads > 1 else ''}"


def labels_in(runs):
    present = {r["label"] for r in runs}
    return [l for l in ORDER if l in present] + sorted(present - set(ORDER))


class Case:
    """The median of each figure over the repetitions of one case and label."""

    def __init__(self, runs):
        self.by_label = {}
        for r in runs:
            self.by_label.setdefault(r["label"], []).append(r)

    def phase_order(self, wanted):
        """The wanted phases in the order the runs made them (the churn workload churns
        before it frees)."""
        for runs in self.by_label.values():
            done = [p["phase"] for p in runs[0]["phases"]]
            return [p for p in done if p in wanted] + [p for p in wanted if p not in done]
        return list(wanted)

    def impl(self, label):
        runs = self.by_label.get(label)
        return runs[0].get("impl") if runs else None

    def frame_size(self, label):
        runs = self.by_label.get(label)
        return runs[0].get("frame_size", 4096) if runs else 4096

    def reps(self, label):
        return len(self.by_label.get(label, []))

    def phase(self, label, phase, field):
        vals = []
        for r in self.by_label.get(label, []):
            for p in r["phases"]:
                if p["phase"] == phase and p.get("available") and field in p:
                    vals.append(p[field])
        return statistics.median(vals) if vals else None


def fmt_ratio(x):
    return f"{x:.2f}×"


def pad_table(rows, align):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append("|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                                      for w, a in zip(widths, align)) + "|")
    return "\n".join(out)


def density_table(cases, labels, phases):
    rows = [["case", "after"] + labels]
    for key, case in cases:
        first = True
        for ph in case.phase_order(phases):
            base = case.phase(BASELINE, ph, "density")
            cells = []
            for l in labels:
                d = case.phase(l, ph, "density")
                if d is None:
                    cells.append("n/a")
                elif base and l != BASELINE:
                    cells.append(f"{d:.3f} ({fmt_ratio(d / base)})")
                else:
                    cells.append(f"{d:.3f}")
            if all(c == "n/a" for c in cells):
                continue
            rows.append([case_title(key) if first else "", ph] + cells)
            first = False
        # Cross-check of the footprint: the anonymous resident set's growth after the fill.
        # (Where the footprint is itself the RSS growth, as for malloc, there is nothing to check: "—".)
        cells = []
        for l in labels:
            rss, foot = case.phase(l, "fill", "rss_delta"), case.phase(l, "fill", "footprint")
            if case.impl(l) not in (None, "zsmalloc"):
                cells.append("—")
            else:
                cells.append(f"{rss / foot:.3f}" if rss is not None and foot else "n/a")
        rows.append(["", "RSS / footprint (fill)"] + cells)
    return pad_table(rows, ["l", "l"] + ["r"] * len(labels))


def speed_table(cases, labels, phases):
    rows = [["case", "phase"] + labels]
    for key, case in cases:
        first = True
        for ph in case.phase_order(phases):
            if ph == "compact":
                continue
            base = case.phase(BASELINE, ph, "ns_per_op")
            cells = []
            for l in labels:
                ns = case.phase(l, ph, "ns_per_op")
                if ns is None or ns == 0:
                    cells.append("n/a")
                elif base and l != BASELINE:
                    cells.append(f"{ns:,.0f} ({fmt_ratio(base / ns)})")
                else:
                    cells.append(f"{ns:,.0f}")
            if all(c == "n/a" for c in cells):
                continue
            rows.append([case_title(key) if first else "", PHASE_TITLES.get(ph, ph)] + cells)
            first = False
    return pad_table(rows, ["l", "l"] + ["r"] * len(labels))


def compaction_table(cases, labels):
    labels = [l for l in labels if any(c.phase(l, "compact", "compact_freed") for _, c in cases)]
    if not labels:
        return None
    rows = [["case", "figure"] + labels]
    for key, case in cases:
        if not any(case.phase(l, "compact", "frames") is not None for l in labels):
            continue
        figures = [
            ("frames freed", lambda l: case.phase(l, "compact", "compact_freed"), "{:,.0f}"),
            ("objects moved", lambda l: case.phase(l, "compact", "ops"), "{:,.0f}"),
            ("time (ms)", lambda l: _ms(case.phase(l, "compact", "seconds")), "{:.1f}"),
            ("frames after / ideal", lambda l: _ratio(case.phase(l, "compact", "frames"),
                                                      case.phase(l, "compact", "ideal_frames")), "{:.4f}"),
        ]
        for n, (name, get, fmt) in enumerate(figures):
            cells = []
            for l in labels:
                v = get(l)
                cells.append(fmt.format(v) if v is not None else "n/a")
            rows.append([case_title(key) if n == 0 else "", name] + cells)
    return pad_table(rows, ["l", "l"] + ["r"] * len(labels))


def kernel_table(cases):
    """The dense layout's waste against the kernel layout's, per live object, after the
    fill and after free-half plus compaction. Waste = footprint - requested bytes. The
    dense layout's footprint is the pool's full count; the kernel layout is counted as
    the kernel's own memory would be: its frames plus an 8-byte handle object per live
    object, and, in the last column, per handle its slab still holds (after freeing a
    random half, every slab page of 512 handles keeps some, so all the handles of the
    fill stay held)."""
    rows = [["case", "after", "dense density", "kernel density (its count)", "dense waste",
             "kernel waste", "dense / kernel", "kernel waste, slab kept", "dense / kernel, slab kept"]]
    for key, case in cases:
        if key[0] != "trace" or not case.reps("zsmalloc-dense") or not case.reps("zsmalloc-kernel"):
            continue
        first = True
        for ph in ("fill", "compact"):
            d = {f: case.phase("zsmalloc-dense", ph, f) for f in ("footprint", "requested", "live", "density")}
            k = {f: case.phase("zsmalloc-kernel", ph, f) for f in ("frames", "requested", "live", "density")}
            if None in d.values() or None in k.values() or not d["live"] or not k["live"]:
                continue
            kbytes = k["frames"] * case.frame_size("zsmalloc-kernel")
            dw = (d["footprint"] - d["requested"]) / d["live"]
            kw = (kbytes + 8 * k["live"] - k["requested"]) / k["live"]
            ks = (kbytes + 8 * key[2] - k["requested"]) / k["live"]
            rows.append([case_title(key) if first else "", ph, f"{d['density']:.3f}",
                         f"{k['requested'] / (kbytes + 8 * k['live']):.3f}",
                         f"{dw:.1f} B", f"{kw:.1f} B", f"{dw / kw:.2f}", f"{ks:.1f} B", f"{dw / ks:.2f}"])
            first = False
    return pad_table(rows, ["l", "l"] + ["r"] * 7) if len(rows) > 1 else None


def _ms(s):
    return None if s is None else s * 1e3


def _ratio(a, b):
    return None if a is None or not b else a / b


def machine():
    cpu, mem = "unknown CPU", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) / 1048576
    except OSError:
        pass
    mem_s = f", {mem:.0f} GiB of memory" if mem else ""
    return f"{os.cpu_count()} CPUs (nproc), {cpu}{mem_s}, Linux {os.uname().release}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="JSON files or directories of them")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--machine", action="store_true", help="name the machine above the tables")
    ap.add_argument("--density-phases", default="fill,free,compact,churn")
    ap.add_argument("--speed-phases", default="fill,read,map,free,churn,verify")
    ap.add_argument("--density-threads", type=int, default=1,
                    help="density rows only for runs with this many threads (0: all)")
    a = ap.parse_args()

    runs = load(a.inputs)
    if not runs:
        sys.exit("compare.py: no results")
    bad = [r["_file"] for r in runs if r.get("errors")]
    groups = {}
    for r in runs:
        groups.setdefault(case_key(r), []).append(r)
    keys = sorted(groups, key=lambda k: (k[0] != "trace", k[0], k[1], k[2], k[3]))
    cases = [(k, Case(groups[k])) for k in keys]
    labels = labels_in(runs)

    out = []
    if a.machine:
        out.append(f"Machine: {machine()}.\n")
    reps = sorted({c.reps(l) for _, c in cases for l in labels if c.reps(l)})
    rep_s = "/".join(map(str, reps))
    have_base = any(c.reps(BASELINE) for _, c in cases)
    out.append(f"Each figure is the median of {rep_s} run{'s' if reps != [1] else ''}. "
               + ("Ratios (×) are against glibc malloc (`malloc`) in the same run."
                  if have_base else "No glibc malloc run: no ratios."))
    out.append("")
    dcases = [(k, c) for k, c in cases if not a.density_threads or k[3] == a.density_threads] or cases
    out.append("**Density** (requested bytes / footprint; × = this density / malloc's, higher is denser)\n")
    out.append(density_table(dcases, labels, a.density_phases.split(",")))
    out.append("\nRSS / footprint: the growth of the anonymous resident set over the pool's own count "
               "(frames × 4096 + metadata) after the fill; — where the footprint is the RSS growth itself.")
    out.append("")
    out.append("**Speed** (ns per operation, wall time / operations; × = malloc's ns / this ns, higher is faster)\n")
    out.append(speed_table(cases, labels, a.speed_phases.split(",")))
    kt = kernel_table(dcases)
    if kt:
        out.append("")
        out.append("**Dense against kernel layout** (waste = footprint - requested bytes, per live object; "
                   "the kernel layout counted as the kernel's memory: frames + 8-byte handle objects)\n")
        out.append(kt)
    ct = compaction_table(dcases, labels)
    if ct:
        out.append("")
        out.append("**Compaction** (one zs_compact after freeing; ideal = every class packed perfectly; for the dense layout, the requested bytes end to end in whole zspages)\n")
        out.append(ct)
    out.append("")
    provided = {}
    for r in runs:
        provided.setdefault(r["label"], (os.path.basename(r["zs_lib"]), os.path.basename(r["malloc_lib"])))
    out.append("Implementations: " + "; ".join(
        f"`{l}` = zs_* from {provided[l][0]}, malloc from {provided[l][1]}" for l in labels) + ".")
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    if bad:
        sys.exit("compare.py: runs with errors: " + ", ".join(bad))


if __name__ == "__main__":
    main()
