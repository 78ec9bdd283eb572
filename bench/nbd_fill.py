#!/usr/bin/python3
"""The benchmark's fill alone, for stores named on the command line: each gets a fresh
server, the benchmark's ext4 image nbdcopied into it (timed, with the server's CPU)
and a flush, then its resident set and, for the plugin, its mm_stat; then a copy out
to null: (timed). With --reps N the stores go round N times and the best time and the
least CPU count. For trying the plugin's parameters against the benchmark's figures
without the whole of `make bench-nbd`:

    cd nbdkit/tests && /usr/bin/python3 ../../bench/nbd_fill.py \\
        memory:allocator=zstd plugin:compressor=zstd plugin:compressor=zstd,chain=8

A store is `memory:PARAMS` (nbdkit's memory plugin) or `plugin:PARAMS` (this plugin),
PARAMS comma-separated. The image is made once in --workdir and kept there."""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nbdkit", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbd_bench import MiB, Step  # noqa: E402
from nbdutil import PLUGIN, Server, make_ext4_image, nbdcopy, read_stats  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stores", nargs="+", help="memory:PARAMS or plugin:PARAMS")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--image-mib", type=int, default=736)
    ap.add_argument("--data-mib", type=int, default=500)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "nbd-fill"))
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
            if kind not in ("memory", "plugin"):
                ap.error(f"{store}: a store is memory:PARAMS or plugin:PARAMS")
            params = [p for p in given.split(",") if p]
            if kind == "plugin":
                params.append(f"stats={stats}")
            with Server(f"size={size}", *params, plugin=PLUGIN if kind == "plugin" else "memory") as srv:
                with Step(srv) as st:
                    nbdcopy(image, srv.uri)
                res[store]["in"].append(st)
                h = srv.connect()
                h.flush()
                h.shutdown()
                res[store]["rss"] = srv.rss_kib() / 1024
                if kind == "plugin":
                    res[store]["mm"] = read_stats(stats)
                with Step(srv) as st:
                    nbdcopy(srv.uri, "null:")
                res[store]["out"].append(st)
    print(f"load average {os.getloadavg()[0]:.1f}")
    for store, r in res.items():
        line = (f"{store}: RSS {r['rss']:.1f} MiB, copy in {min(s.wall for s in r['in']):.2f} s "
                f"(server CPU {min(s.cpu for s in r['in']):.2f} s), out {min(s.wall for s in r['out']):.2f} s "
                f"(server CPU {min(s.cpu for s in r['out']):.2f} s)")
        if "mm" in r:
            m = r["mm"]
            line += (f"; objects {m['compr_data_size'] / MiB:.1f} MiB in {m['mem_used_total'] / MiB:.1f} MiB of "
                     f"frames, pool metadata {m['pool_meta_bytes'] / MiB:.2f} MiB")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
