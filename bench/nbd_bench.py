#!/usr/bin/python3
"""The nbdkit plugin against nbdkit's memory plugin (allocator=sparse and
allocator=zstd), on one ext4 image of real files, in one run.

For each store: nbdcopy the image into a fresh server (timed; the best of --reps, each
into a fresh server); flush; the server's resident set; nbdcopy it out to null: (timed,
the best of --reps) and once more to a checksum; delete half of the image's files (the
metadata blocks that debugfs changed are written, then every free block of the file
system is trimmed, as fstrim does) and flush; the resident set and a checksum against
the expected image; fio 4k random read/write for a fixed time (the better of two
runs); the resident set again.

Run with the system Python (python3-libnbd): `make bench-nbd`."""

import argparse
import hashlib
import json
import os
import platform
import random
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
    ("zsmalloc plugin, zstd", PLUGIN, ["compressor=zstd"]),
]


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
    for off, n in trims:
        b[off:off + n] = bytes(n)
    return changed, trims, sha256_of(b), len(gone)


def zstd_ratios(image, units=(4096, 16384, 32768), level=3):
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
    cmd = ["fio", "--name=randrw", "--ioengine=nbd", f"--uri={uri}", "--rw=randrw", "--bs=4k",
           f"--size={size}", "--iodepth=16", "--numjobs=1", "--time_based", f"--runtime={seconds}",
           "--norandommap", "--buffer_compress_percentage=50", "--refill_buffers", "--randseed=7",
           "--output-format=json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=TOOL_ENV, check=True, cwd=tempfile.gettempdir())
    job = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
    return job["read"]["iops"], job["write"]["iops"]


def run_store(label, plugin, params, image, image_size, changed, trims, want_full, want_half, fio_seconds,
              reps):
    stats = tempfile.mktemp(prefix="nbd-bench-stats-")
    if plugin == PLUGIN:
        params = params + [f"stats={stats}"]
    r = {"store": label}
    # Copy-in into a fresh server, `reps` times; the last server goes on.
    copy_in = []
    for rep in range(reps):
        srv = Server(f"size={image_size}", *params, plugin=plugin)
        if rep < reps - 1:
            copy_in.append(nbdcopy(image, srv.uri))
            srv.__exit__()
    with srv:
        r["rss_start_mib"] = srv.rss_kib() / 1024
        copy_in.append(nbdcopy(image, srv.uri))
        r["copy_in_mbs"] = image_size / 1e6 / min(copy_in)
        h = srv.connect()
        h.flush()
        r["rss_fill_mib"] = srv.rss_kib() / 1024
        r["copy_out_mbs"] = image_size / 1e6 / min(nbdcopy(srv.uri, "null:") for _ in range(reps))
        r["checksum_fill_ok"] = sha256_of_uri(srv.uri) == want_full
        if plugin == PLUGIN:
            r["stats_fill"] = read_stats(stats)

        for off, data in changed:
            h.pwrite(data, off)
        for off, n in trims:
            while n:
                k = min(n, 1 << 30)
                h.trim(k, off)
                off += k
                n -= k
        h.flush()
        r["rss_half_mib"] = srv.rss_kib() / 1024
        r["checksum_half_ok"] = sha256_of_uri(srv.uri) == want_half
        if plugin == PLUGIN:
            r["stats_half"] = read_stats(stats)
        h.shutdown()

        runs = [fio_randrw(srv.uri, image_size, fio_seconds) for _ in range(2)]
        r["fio_read_iops"], r["fio_write_iops"] = max(runs, key=sum)
        r["rss_fio_mib"] = srv.rss_kib() / 1024
    if os.path.exists(stats):
        os.unlink(stats)
    return r


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
    zstdp = base["zsmalloc plugin, zstd"]
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
        f"is about {sum(r['rss_start_mib'] for r in results) / len(results):.0f} MiB of it). Copy rates are the image's size over nbdcopy's time, the best of "
        f"{meta['reps']} (copy-in: each into a fresh server; copy-out: to `null:`). fio: 4k random "
        f"read/write (50/50) over the whole disk, iodepth 16, one job, {meta['fio_seconds']} s, data half "
        "compressible, the better of 2 runs.",
        "",
        "| store | RSS after fill | after deleting half + trim + flush | after fio | nbdcopy in / out (MB/s) "
        "| fio 4k randrw IOPS (read / write) | checksums |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ok = "ok" if r["checksum_fill_ok"] and r["checksum_half_ok"] else "**DIFFER**"
        lines.append(
            f"| {r['store']} | {r['rss_fill_mib']:.0f} MiB | {r['rss_half_mib']:.0f} MiB | {r['rss_fio_mib']:.0f} MiB "
            f"| {fmt_rate(r['copy_in_mbs'])} / {fmt_rate(r['copy_out_mbs'])} "
            f"| {r['fio_read_iops'] / 1000:.1f}k / {r['fio_write_iops'] / 1000:.1f}k | {ok} |")
    ratios = meta["zstd_ratios"]
    lines += ["", "zstd-3 on this image's non-zero data, by unit (each unit compressed alone, stored whole when "
              "it does not shrink): " + ", ".join(f"{int(u) // 1024} KiB {r:.2f}" for u, r in ratios.items())
              + ". nbdkit's zstd allocator compresses 32 KiB pages; the plugin, 4 KiB units until the pool "
              "stores objects larger than a page."]
    lines += ["", "The plugin's own statistics (zram's mm_stat, from `stats=FILE`), after the fill and after "
              "deleting half:", "",
              "| store | orig_data_size | compr_data_size | ratio | mem_used_total | same_pages | huge_pages "
              "| pages_compacted |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in (lz4p, zstdp):
        for when in ("fill", "half"):
            s = r[f"stats_{when}"]
            ratio = s["orig_data_size"] / s["compr_data_size"] if s["compr_data_size"] else 0
            lines.append(
                f"| {r['store']}, {when} | {s['orig_data_size'] / MiB:.1f} MiB | {s['compr_data_size'] / MiB:.1f} MiB "
                f"| {ratio:.2f} | {s['mem_used_total'] / MiB:.1f} MiB | {s['same_pages']} | {s['huge_pages']} "
                f"| {s['pages_compacted']} |")

    def t(r):
        return 1 / r["copy_in_mbs"] + 1 / r["copy_out_mbs"]

    goals = [
        ("zstd: RSS after the fill at most nbdkit zstd's",
         zstdp["rss_fill_mib"] <= zstd["rss_fill_mib"],
         f"{zstdp['rss_fill_mib']:.0f} vs {zstd['rss_fill_mib']:.0f} MiB "
         f"({zstdp['rss_fill_mib'] / zstd['rss_fill_mib']:.2f}x)"),
        ("zstd: after deleting half + flush, at most 0.8 of nbdkit zstd's",
         zstdp["rss_half_mib"] <= 0.8 * zstd["rss_half_mib"],
         f"{zstdp['rss_half_mib']:.0f} vs {zstd['rss_half_mib']:.0f} MiB "
         f"({zstdp['rss_half_mib'] / zstd['rss_half_mib']:.2f}x)"),
        ("zstd: copy-in + copy-out time at most 0.7 of nbdkit zstd's",
         t(zstdp) <= 0.7 * t(zstd), f"{t(zstdp) / t(zstd):.2f}x"),
        ("lz4: copy times within 1.3x of the sparse allocator's",
         t(lz4p) <= 1.3 * t(sparse), f"{t(lz4p) / t(sparse):.2f}x"),
        ("lz4: under 65% of the sparse allocator's memory (after the fill)",
         lz4p["rss_fill_mib"] < 0.65 * sparse["rss_fill_mib"],
         f"{lz4p['rss_fill_mib'] / sparse['rss_fill_mib']:.2f}x"),
        ("no checksum differs", all(r["checksum_fill_ok"] and r["checksum_half_ok"] for r in results), ""),
    ]
    lines += ["", "Goals of the issue, against this run:", "", "| goal | holds | figure |", "|---|---|---|"]
    for g, held, fig in goals:
        lines.append(f"| {g} | {'yes' if held else 'no'} | {fig} |")
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
    ap.add_argument("--reps", type=int, default=3, help="copies in and out; the best counts")
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
        results = []
        for label, plugin, params in STORES:
            print(f"{label}...", flush=True)
            r = run_store(label, plugin, params, image, size, changed, trims, want_full, want_half,
                          args.fio_seconds, args.reps)
            print("   " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in r.items() if not k.startswith("stats")), flush=True)
            results.append(r)
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
