#!/usr/bin/python3
"""The benchmark's fill alone, for stores named on the command line: each gets a fresh
server, the benchmark's ext4 image nbdcopied into it (timed, with the server's CPU)
and a flush, then its resident set and, for the plugin, its mm_stat; then a copy out
to null: (timed). With --reps N the stores go round N times and the best time and the
least CPU count. For trying the plugin's parameters against the benchmark's figures
without the whole of `make bench-nbd`:

    cd nbdkit/tests && /usr/bin/python3 ../../bench/nbd_fill.py \\
        memory:allocator=zstd plugin:compressor=zstd plugin:compressor=zstd,chain=8

A store is `memory:PARAMS` (nbdkit's memory plugin), `plugin:PARAMS` (this plugin) or
`PATH.so:PARAMS` (another build of this plugin, to compare two builds in turn), PARAMS
comma-separated. The image is made once in --workdir and kept there. Besides the least
server CPU of the rounds it prints their median; --faults counts the page faults the
server traps during each copy-in (`perf stat -e page-faults`, which leaves out the pages
a madvise faults in) and prints their median. --smaps writes the server's /proc/PID/smaps after the fill and flush
(the last round's) to WORKDIR/smaps-N.txt and prints its resident set in anonymous pages
and in pages of files, and by kind of mapping."""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nbdkit", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbd_bench import MiB, Step  # noqa: E402
from nbdutil import PLUGIN, Server, make_ext4_image, nbdcopy, read_stats  # noqa: E402


def smaps_summary(text):
    """Resident KiB of a smaps dump by kind of mapping: each file by name, [heap],
    [stack], and anonymous mappings by size: 'anon 8 MiB+' (nbdkit's thread stacks
    and malloc's arenas are 8 and 64 MiB reservations), 'anon <8 MiB'."""
    kinds = {}
    name, size = None, 0
    for line in text.splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            size = hi - lo
            name = head[5] if len(head) > 5 else ("anon 8 MiB+" if size >= 8 << 20 else "anon <8 MiB")
            name = os.path.basename(name) if name.startswith("/") else name
        elif head and head[0] == "Rss:":
            kinds[name] = kinds.get(name, 0) + int(head[1])
    return sorted(((k, v) for k, v in kinds.items() if v), key=lambda kv: -kv[1])


def smaps_split(text):
    """Resident KiB of a smaps dump in anonymous pages (those of file mappings that
    relocations or writes made private among them) and in pages of files."""
    rss = sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Rss:"))
    anon = sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Anonymous:"))
    return anon, rss - anon


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stores", nargs="+", help="memory:PARAMS or plugin:PARAMS")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--image-mib", type=int, default=736)
    ap.add_argument("--data-mib", type=int, default=500)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "nbd-fill"))
    ap.add_argument("--faults", action="store_true", help="count the server's trapped page faults (perf)")
    ap.add_argument("--smaps", action="store_true", help="dump the server's smaps after the fill and flush")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    image = os.path.join(args.workdir, f"image-{args.image_mib}-{args.data_mib}.ext4")
    size = args.image_mib * MiB
    if not os.path.exists(image):
        make_ext4_image(image + ".tmp", size, args.data_mib * MiB, args.workdir)
        os.rename(image + ".tmp", image)
    stats = os.path.join(args.workdir, "stats")
    res = {s: {"in": [], "out": []} for s in args.stores}
    for _ in range(args.reps):
        for store in args.stores:
            kind, _, given = store.partition(":")
            if kind not in ("memory", "plugin") and not kind.endswith(".so"):
                ap.error(f"{store}: a store is memory:PARAMS, plugin:PARAMS or PATH.so:PARAMS")
            params = [p for p in given.split(",") if p]
            if kind != "memory":
                params.append(f"stats={stats}")
            plugin = {"memory": "memory", "plugin": PLUGIN}.get(kind, os.path.abspath(kind))
            with Server(f"size={size}", *params, plugin=plugin) as srv:
                perf = None
                if args.faults:
                    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "page-faults", "-p", str(srv.proc.pid)],
                                            stderr=subprocess.PIPE, text=True)
                    time.sleep(0.3)  # perf attaches
                with Step(srv) as st:
                    nbdcopy(image, srv.uri)
                if perf:
                    perf.send_signal(signal.SIGINT)
                    out = perf.communicate()[1].strip().splitlines()
                    res[store].setdefault("faults", []).append(int(out[-1].split(",")[0]))
                res[store]["in"].append(st)
                h = srv.connect()
                h.flush()
                h.shutdown()
                res[store]["rss"] = srv.rss_kib() / 1024
                if kind != "memory":
                    res[store]["mm"] = read_stats(stats)
                if args.smaps:
                    dump = os.path.join(args.workdir, f"smaps-{args.stores.index(store)}.txt")
                    with open(f"/proc/{srv.proc.pid}/smaps") as f, open(dump, "w") as out:
                        text = f.read()
                        out.write(text)
                    res[store]["smaps"] = (dump, smaps_summary(text), smaps_split(text))
                with Step(srv) as st:
                    nbdcopy(srv.uri, "null:")
                res[store]["out"].append(st)
    print(f"load average {os.getloadavg()[0]:.1f}")
    for store, r in res.items():
        line = (f"{store}: RSS {r['rss']:.2f} MiB, copy in {min(s.wall for s in r['in']):.2f} s "
                f"(server CPU {min(s.cpu for s in r['in']):.2f} s), out {min(s.wall for s in r['out']):.2f} s "
                f"(server CPU {min(s.cpu for s in r['out']):.2f} s); median server CPU in "
                f"{statistics.median(s.cpu for s in r['in']):.2f} s, out {statistics.median(s.cpu for s in r['out']):.2f} s")
        if "faults" in r:
            line += f"; trapped page faults in {statistics.median(r['faults']):.0f}"
        if "mm" in r:
            m = r["mm"]
            line += (f"; objects {m['compr_data_size'] / MiB:.1f} MiB in {m['mem_used_total'] / MiB:.1f} MiB of "
                     f"frames, pool metadata {m['pool_meta_bytes'] / MiB:.2f} MiB")
        print(line)
        if "smaps" in r:
            dump, summary, (anon, files) = r["smaps"]
            print(f"  smaps ({dump}): anonymous {anon / 1024:.2f}, files {files / 1024:.2f}; "
                  + ", ".join(f"{k} {v / 1024:.2f}" for k, v in summary) + " MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
