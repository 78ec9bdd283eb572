#!/usr/bin/python3
"""The nbdkit plugin against nbdkit's memory plugin (allocator=sparse and
allocator=zstd), on one ext4 image of real files, in one run.

The timed copies go round the stores in turn, so that the stores see the same load
from other work on the machine: in each of --reps rounds, every store gets a fresh
server, the image nbdcopied into it (timed) and out of it to null: (timed); the best
of the rounds counts. The last round's servers go on: their resident set after the
fill and a flush; a checksum of the image read back; half of the image's files
deleted (the metadata blocks that debugfs changed are written, then every free block
of the file system is trimmed, as fstrim does) and a flush; the resident set and a
checksum against the expected image; fio 4k random read/write for a fixed time, two
runs, again round the stores (the better counts); the resident set again.

Besides the wall times, each timed step records the server's CPU time (which load
from other work moves much less) and the CPU time that other work took meanwhile.

Run with the system Python (python3-libnbd): `make bench-nbd`."""

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nbdkit", "tests"))
from nbdutil import PLUGIN, TOOL_ENV, Server, make_ext4_image, nbdcopy, read_stats  # noqa: E402

MiB = 1 << 20
BLOCK = 4096

STORES = [
    ("nbdkit memory allocator=sparse", "memory", ["allocator=sparse"]),
    ("nbdkit memory allocator=zstd", "memory", ["allocator=zstd"]),
    ("zsmalloc plugin, lz4", PLUGIN, ["compressor=lz4"]),
    ("zsmalloc plugin, lz4, acceleration 1", PLUGIN, ["compressor=lz4", "level=1"]),
    ("zsmalloc plugin, zstd", PLUGIN, ["compressor=zstd"]),
    ("zsmalloc plugin, zstd, 4 KiB units", PLUGIN, ["compressor=zstd", "unit=4096"]),
    ("zsmalloc plugin, zstd, 64 KiB units", PLUGIN, ["compressor=zstd", "unit=65536"]),
]

# The plugin's unit where its parameters give none (README, "The nbdkit plugin").
PLUGIN_UNIT = {"lz4": 4096, "zstd": 32768, "none": 4096}


def sha256_of_uri(uri):
    p = subprocess.Popen(["nbdcopy", uri, "-"], stdout=subprocess.PIPE, env=TOOL_ENV)
    h = hashlib.sha256()
    for block in iter(lambda: p.stdout.read(MiB), b""):
        h.update(block)
    if p.wait() != 0:
        raise RuntimeError("nbdcopy out failed")
    return h.hexdigest()


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


def free_ranges(image):
    """(offset, length) of every free block run of the file system, from dumpe2fs."""
    out = subprocess.run(["dumpe2fs", image], capture_output=True, text=True, check=True, env=TOOL_ENV).stdout
    ranges = []
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("Free blocks: "):
            continue
        for part in line[len("Free blocks: "):].split(","):
            part = part.strip()
            if not part:
                continue
            a, _, b = part.partition("-")
            a = int(a)
            b = int(b) if b else a
            ranges.append((a * BLOCK, (b - a + 1) * BLOCK))
    return ranges


def delete_half(image, files, workdir, seed=42):
    """Deletes a seeded half of `files` from a copy of `image` with debugfs; returns
    (the copy, the blocks debugfs changed as (offset, bytes), the free ranges, the
    image a client sees after writing those blocks and trimming the free ranges)."""
    half = os.path.join(workdir, "half.ext4")
    shutil.copyfile(image, half)
    gone = random.Random(seed).sample(files, len(files) // 2)
    cmds = os.path.join(workdir, "rm.cmds")
    with open(cmds, "w") as f:
        for name in gone:
            f.write(f"rm /{name}\n")
    subprocess.run(["debugfs", "-w", "-f", cmds, half], check=True, capture_output=True, env=TOOL_ENV)
    with open(image, "rb") as f:
        a = f.read()
    with open(half, "rb") as f:
        b = bytearray(f.read())
    changed = [(off, bytes(b[off:off + BLOCK])) for off in range(0, len(a), BLOCK)
               if a[off:off + BLOCK] != b[off:off + BLOCK]]
    trims = free_ranges(half)
    # A trim is a hint: nbdkit's memory plugin zeroes what it is given, the plugin
    # frees whole units and leaves the trimmed part of a partial one as it was. So the
    # image a client then reads depends on the unit the trims are carried out in.
    want = {}
    for unit in sorted({unit_of(store) for store in STORES}):
        c = bytearray(b)
        for off, n in trims:
            lo, hi = -(-off // unit) * unit, (off + n) // unit * unit
            if hi > lo:
                c[lo:hi] = bytes(hi - lo)
        want[unit] = sha256_of(c)
    return changed, trims, want, len(gone)


def unit_of(store):
    """The unit a store carries trims out in: the plugin's unit (its compressor's
    default where unit= is not given), a block for nbdkit's memory plugin, which
    zeroes every trimmed byte."""
    _, plugin, params = store
    if plugin != PLUGIN:
        return BLOCK
    opts = dict(p.split("=", 1) for p in params)
    if "unit" in opts:
        return int(opts["unit"])
    return PLUGIN_UNIT[opts.get("compressor", "lz4")]


def zstd_ratios(image, units=(4096, 16384, 32768, 65536), level=3):
    """{unit: zstd ratio of the image's units that are not all zeros}: how much of the
    difference with nbdkit's 32 KiB pages is the unit's size alone."""
    import ctypes
    import ctypes.util

    z = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
    z.ZSTD_compress.restype = ctypes.c_size_t
    z.ZSTD_compress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    z.ZSTD_isError.argtypes = [ctypes.c_size_t]
    with open(image, "rb") as f:
        data = f.read()
    out = {}
    for unit in units:
        dst = ctypes.create_string_buffer(2 * unit)
        zero = bytes(unit)
        raw = packed = 0
        for off in range(0, len(data), unit):
            block = data[off:off + unit]
            if block == zero:
                continue
            n = z.ZSTD_compress(dst, unit, block, len(block), level)
            raw += len(block)
            packed += len(block) if z.ZSTD_isError(n) else min(n, len(block))
        out[unit] = raw / packed
    return out


def fio_randrw(uri, size, seconds):
    """(read IOPS, write IOPS) of fio's 4k random read/write over the disk."""
    cmd = ["fio", "--name=randrw", "--ioengine=nbd", f"--uri={uri}", "--rw=randrw", "--bs=4k",
           f"--size={size}", "--iodepth=16", "--numjobs=1", "--time_based", f"--runtime={seconds}",
           "--norandommap", "--buffer_compress_percentage=50", "--refill_buffers", "--randseed=7",
           "--output-format=json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=TOOL_ENV, check=True, cwd=tempfile.gettempdir())
    job = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
    return job["read"]["iops"], job["write"]["iops"]


def process_cpu(pid):
    """CPU seconds (user and system) that process `pid` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """CPU seconds that all the machine's CPUs have spent busy (neither idle nor
    waiting for I/O) since boot."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu():
    """CPU seconds of this process and of the clients it has waited for."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Step:
    """A timed step against one server: its wall seconds, the server's CPU seconds,
    and the CPU seconds the rest of the machine (neither the server nor this
    process and its clients) took meanwhile."""

    def __init__(self, srv):
        self.pid = srv.proc.pid

    def __enter__(self):
        self.t = time.monotonic()
        self.cpu = process_cpu(self.pid)
        self.busy = machine_busy()
        self.own = own_cpu()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t
        self.cpu = process_cpu(self.pid) - self.cpu
        self.others = max(0.0, machine_busy() - self.busy - self.cpu - (own_cpu() - self.own))


def start_server(store, size, stats):
    label, plugin, params = store
    if plugin == PLUGIN:
        params = params + [f"stats={stats}"]
    return Server(f"size={size}", *params, plugin=plugin)


def run(image, image_size, changed, trims, want_full, want_half, fio_seconds, reps):
    """Every store through every step; a result dict per store, in STORES' order."""
    results = [{"store": label} for label, _, _ in STORES]
    stats = [tempfile.mktemp(prefix="nbd-bench-stats-") for _ in STORES]
    servers = [None] * len(STORES)
    steps = [{"in": [], "out": [], "fio": []} for _ in STORES]
    try:
        for rep in range(reps):
            for i, store in enumerate(STORES):
                r = results[i]
                srv = start_server(store, image_size, stats[i])
                try:
                    if rep == 0:
                        r["rss_start_mib"] = srv.rss_kib() / 1024
                    with Step(srv) as st:
                        nbdcopy(image, srv.uri)
                    steps[i]["in"].append(st)
                    h = srv.connect()
                    h.flush()
                    h.shutdown()
                    if rep == reps - 1:
                        r["rss_fill_mib"] = srv.rss_kib() / 1024
                        if store[1] == PLUGIN:
                            r["stats_fill"] = read_stats(stats[i])
                    with Step(srv) as st:
                        nbdcopy(srv.uri, "null:")
                    steps[i]["out"].append(st)
                except BaseException:
                    srv.__exit__()
                    raise
                if rep == reps - 1:
                    servers[i] = srv
                else:
                    srv.__exit__()
                print(f"   round {rep + 1}, {store[0]}: in {image_size / 1e6 / steps[i]['in'][-1].wall:,.0f} MB/s, "
                      f"out {image_size / 1e6 / steps[i]['out'][-1].wall:,.0f} MB/s", flush=True)

        for i, (store, srv) in enumerate(zip(STORES, servers)):
            r = results[i]
            r["checksum_fill_ok"] = sha256_of_uri(srv.uri) == want_full
            h = srv.connect()
            for off, data in changed:
                h.pwrite(data, off)
            for off, n in trims:
                while n:
                    k = min(n, 1 << 30)
                    h.trim(k, off)
                    off += k
                    n -= k
            h.flush()
            h.shutdown()
            r["rss_half_mib"] = srv.rss_kib() / 1024
            r["checksum_half_ok"] = sha256_of_uri(srv.uri) == want_half[unit_of(store)]
            if store[1] == PLUGIN:
                r["stats_half"] = read_stats(stats[i])

        for _ in range(2):
            for i, srv in enumerate(servers):
                with Step(srv) as st:
                    st.iops = fio_randrw(srv.uri, image_size, fio_seconds)
                steps[i]["fio"].append(st)

        for i, srv in enumerate(servers):
            r = results[i]
            r["rss_fio_mib"] = srv.rss_kib() / 1024
            s = steps[i]
            best_in = min(s["in"], key=lambda st: st.wall)
            best_out = min(s["out"], key=lambda st: st.wall)
            best_fio = max(s["fio"], key=lambda st: sum(st.iops))
            r["copy_in_mbs"] = image_size / 1e6 / best_in.wall
            r["copy_out_mbs"] = image_size / 1e6 / best_out.wall
            r["cpu_in_s"] = min(st.cpu for st in s["in"])
            r["cpu_out_s"] = min(st.cpu for st in s["out"])
            r["fio_read_iops"], r["fio_write_iops"] = best_fio.iops
            r["fio_cpu_us_per_op"] = best_fio.cpu / (sum(best_fio.iops) * fio_seconds) * 1e6
            timed = s["in"] + s["out"] + s["fio"]
            r["others_cpus"] = sum(st.others for st in timed) / sum(st.wall for st in timed)
            r["copies_in_s"] = [round(st.wall, 3) for st in s["in"]]
            r["copies_out_s"] = [round(st.wall, 3) for st in s["out"]]
    finally:
        for srv in servers:
            if srv is not None:
                srv.__exit__()
        for path in stats:
            if os.path.exists(path):
                os.unlink(path)
    return results


def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    nbdkit = subprocess.run(["nbdkit", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} CPUs, {cpu}, {mem:.0f} GiB, Linux {platform.release()}, {nbdkit}"


def fmt_rate(x):
    return f"{x:,.0f}"


def write_report(path, results, meta):
    base = {r["store"]: r for r in results}
    sparse = base["nbdkit memory allocator=sparse"]
    zstd = base["nbdkit memory allocator=zstd"]
    lz4p = base["zsmalloc plugin, lz4"]
    lz4a1 = base["zsmalloc plugin, lz4, acceleration 1"]
    zstdp = base["zsmalloc plugin, zstd"]
    zstd4 = base["zsmalloc plugin, zstd, 4 KiB units"]
    zstd64 = base["zsmalloc plugin, zstd, 64 KiB units"]
    lines = [
        "# The nbdkit plugin against nbdkit's memory plugin",
        "",
        f"Machine: {meta['machine']}. Generated by `make bench-nbd` ({meta['seconds']:.0f} s; "
        f"load average {meta['load_before']:.1f} before, {meta['load_after']:.1f} after: other work on the "
        "machine slows the compressing stores most, which need the CPU).",
        "",
        f"Image: ext4, {meta['image_mib']:.0f} MiB, made by `mkfs.ext4 -d` from {meta['files']} real files "
        f"({meta['data_mib']:.0f} MiB: the project's sources and files from /usr/include, /usr/share, "
        f"/usr/lib and /usr/bin, picked in an order fixed by a hash of their paths). "
        f"\"Delete half\": {meta['deleted']} files removed with debugfs, the {meta['changed']} metadata "
        f"blocks it changed written, every free block of the file system trimmed "
        f"({meta['trimmed_mib']:.0f} MiB in {meta['trim_ranges']} ranges), then a flush.",
        "",
        "RSS is the server process's VmRSS (its start, nbdkit and the libraries, "
        f"is about {sum(r['rss_start_mib'] for r in results) / len(results):.0f} MiB of it). Copy rates are "
        f"the image's size over nbdcopy's time, the best of {meta['reps']} rounds that go round the stores in "
        "turn (copy-in: each into a fresh server; copy-out: to `null:`). Server CPU: the server process's "
        "user and system time for one copy, the least of the rounds, which other work moves much less "
        "than the rates. fio: 4k random read/write (50/50) over the whole disk, iodepth 16, one job, "
        f"{meta['fio_seconds']} s, data half compressible, the better of 2 runs (the second after every "
        "store's first); its server CPU is per request. Other work: the CPUs that processes other than "
        "the server, nbdcopy and fio kept busy during the store's timed steps, on average (the machine "
        f"has {os.cpu_count()}).",
        "",
        "| store | RSS after fill | after deleting half + trim + flush | after fio | nbdcopy in / out (MB/s) "
        "| server CPU in / out | fio 4k randrw IOPS (read / write) | server CPU per fio request | other work "
        "| checksums |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ok = "ok" if r["checksum_fill_ok"] and r["checksum_half_ok"] else "**DIFFER**"
        lines.append(
            f"| {r['store']} | {r['rss_fill_mib']:.0f} MiB | {r['rss_half_mib']:.0f} MiB | {r['rss_fio_mib']:.0f} MiB "
            f"| {fmt_rate(r['copy_in_mbs'])} / {fmt_rate(r['copy_out_mbs'])} "
            f"| {r['cpu_in_s']:.2f} / {r['cpu_out_s']:.2f} s "
            f"| {r['fio_read_iops'] / 1000:.1f}k / {r['fio_write_iops'] / 1000:.1f}k "
            f"| {r['fio_cpu_us_per_op']:.1f} µs | {r['others_cpus']:.2f} | {ok} |")
    ratios = meta["zstd_ratios"]
    lines += ["", "zstd-3 on this image's non-zero data, by unit (each unit compressed alone, stored whole when "
              "it does not shrink): " + ", ".join(f"{int(u) // 1024} KiB {r:.2f}" for u, r in ratios.items())
              + ". nbdkit's zstd allocator compresses 32 KiB pages; the plugin with zstd 32 KiB units by "
              "default, 4 KiB ones with unit=4096 and 64 KiB ones with unit=65536 (the pool's max_object_size "
              "is the unit). With lz4 its unit is 4 KiB, zram's page, and its acceleration 6 by default; "
              "acceleration 1 (level=1) is zram's."]
    lines += ["", "The plugin's own statistics (zram's mm_stat, from `stats=FILE`), after the fill and after "
              "deleting half:", "",
              "| store | orig_data_size | compr_data_size | ratio | mem_used_total | same_pages | huge_pages "
              "| pages_compacted |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in (lz4p, lz4a1, zstdp, zstd4, zstd64):
        for when in ("fill", "half"):
            s = r[f"stats_{when}"]
            ratio = s["orig_data_size"] / s["compr_data_size"] if s["compr_data_size"] else 0
            lines.append(
                f"| {r['store']}, {when} | {s['orig_data_size'] / MiB:.1f} MiB | {s['compr_data_size'] / MiB:.1f} MiB "
                f"| {ratio:.2f} | {s['mem_used_total'] / MiB:.1f} MiB | {s['same_pages']} | {s['huge_pages']} "
                f"| {s['pages_compacted']} |")

    def t(r):
        return 1 / r["copy_in_mbs"] + 1 / r["copy_out_mbs"]

    def rss_vs(r, key, limit):
        return (r[key] <= limit * zstd[key],
                f"{r[key]:.1f} vs {zstd[key]:.1f} MiB ({r[key] / zstd[key]:.2f}x)")

    goals = []
    for r, units in ((zstdp, "32 KiB units, the default"), (zstd4, "4 KiB units"), (zstd64, "64 KiB units")):
        goals += [
            (f"zstd ({units}): RSS after the fill at most nbdkit zstd's", *rss_vs(r, "rss_fill_mib", 1.0)),
            (f"zstd ({units}): after deleting half + flush, at most 0.8 of nbdkit zstd's",
             *rss_vs(r, "rss_half_mib", 0.8)),
            (f"zstd ({units}): copy-in + copy-out time at most 0.7 of nbdkit zstd's",
             t(r) <= 0.7 * t(zstd), f"{t(r) / t(zstd):.2f}x"),
        ]
    goals += [
        ("lz4 (acceleration 6, the default): copy times within 1.3x of the sparse allocator's",
         t(lz4p) <= 1.3 * t(sparse), f"{t(lz4p) / t(sparse):.2f}x"),
        ("lz4 (acceleration 6, the default): under 65% of the sparse allocator's memory (after the fill)",
         lz4p["rss_fill_mib"] < 0.65 * sparse["rss_fill_mib"],
         f"{lz4p['rss_fill_mib'] / sparse['rss_fill_mib']:.2f}x"),
        ("lz4, acceleration 1 (zram's): copy times within 1.3x of the sparse allocator's",
         t(lz4a1) <= 1.3 * t(sparse), f"{t(lz4a1) / t(sparse):.2f}x"),
        ("lz4, acceleration 1 (zram's): under 65% of the sparse allocator's memory (after the fill)",
         lz4a1["rss_fill_mib"] < 0.65 * sparse["rss_fill_mib"],
         f"{lz4a1['rss_fill_mib'] / sparse['rss_fill_mib']:.2f}x"),
        ("no checksum differs", all(r["checksum_fill_ok"] and r["checksum_half_ok"] for r in results), ""),
    ]
    lines += ["", "Goals of the issue, against this run:", "", "| goal | holds | figure |", "|---|---|---|"]
    for g, held, fig in goals:
        lines.append(f"| {g} | {'yes' if held else 'no'} | {fig} |")

    def cpu(r):
        return r["cpu_in_s"] + r["cpu_out_s"]

    lines += ["", "The same comparisons in server CPU time, which other work moves much less (not goals of the "
              f"issue): lz4 copy-in plus copy-out {cpu(lz4p) / cpu(sparse):.2f}x the sparse allocator's "
              f"({cpu(lz4a1) / cpu(sparse):.2f}x with acceleration 1), zstd "
              f"{cpu(zstdp) / cpu(zstd):.2f}x nbdkit zstd's (whose one lock keeps it to one CPU, so that its "
              "wall time is about its CPU time, while the plugin's requests run on every CPU); per fio request, "
              f"lz4 {lz4p['fio_cpu_us_per_op'] / sparse['fio_cpu_us_per_op']:.2f}x the sparse allocator's."]
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the Markdown report (a .json beside it)")
    ap.add_argument("--image-mib", type=int, default=736)
    ap.add_argument("--data-mib", type=int, default=500)
    ap.add_argument("--fio-seconds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="rounds of copies in and out; the best counts")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    start = time.monotonic()
    work = tempfile.mkdtemp(prefix="nbd-bench-", dir=args.workdir)
    try:
        image = os.path.join(work, "image.ext4")
        size = args.image_mib * MiB
        print(f"making a {args.image_mib} MiB ext4 image of {args.data_mib} MiB of files...", flush=True)
        files, data = make_ext4_image(image, size, args.data_mib * MiB, work)
        with open(image, "rb") as f:
            want_full = sha256_of(f.read())
        changed, trims, want_half, deleted = delete_half(image, files, work)
        meta = {
            "machine": machine(), "image_mib": size / MiB, "data_mib": data / MiB, "files": len(files),
            "deleted": deleted, "changed": len(changed), "trim_ranges": len(trims),
            "trimmed_mib": sum(n for _, n in trims) / MiB, "fio_seconds": args.fio_seconds,
            "reps": args.reps, "load_before": os.getloadavg()[0],
        }
        meta["zstd_ratios"] = {str(k): v for k, v in zstd_ratios(image).items()}
        print("copies, round by round; then checksums, deletes, fio...", flush=True)
        results = run(image, size, changed, trims, want_full, want_half, args.fio_seconds, args.reps)
        for r in results:
            print(f"{r['store']}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in r.items() if k != "store" and not k.startswith("stats")),
                  flush=True)
        meta["seconds"] = time.monotonic() - start
        meta["load_after"] = os.getloadavg()[0]
        write_report(args.out, results, meta)
        print(open(args.out).read())
        if not all(r["checksum_fill_ok"] and r["checksum_half_ok"] for r in results):
            print("a checksum differs", file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
