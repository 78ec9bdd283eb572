#!/usr/bin/env python3
"""Compressed sizes of the units of a file, as a compressed block store keeps them.

Cuts FILE (or, with --ext4-of-usr MiB, an ext4 image of that many MiB of real files
made as the nbdkit benchmark makes it: `mkfs.ext4 -d` over files of /usr and the
repository, `nbdkit/tests/nbdutil.py`) into units of --unit bytes and compresses each
with lz4 (block format, no size prefix) or zstd (level 3), through the system's liblz4
and libzstd. Units of one repeated byte are left out (a store keeps those without the
allocator); a unit that does not compress is written as the unit size (stored whole).
Writes one compressed size per line, a comment line first saying how it was made.
"""
import argparse
import ctypes
import ctypes.util
import os
import sys
import tempfile


def codec(name, unit):
    """A function from bytes to their compressed length."""
    if name == "lz4":
        lib = ctypes.CDLL(ctypes.util.find_library("lz4") or "liblz4.so.1")
        lib.LZ4_compressBound.restype = ctypes.c_int
        cap = lib.LZ4_compressBound(unit)
        out = ctypes.create_string_buffer(cap)

        def lz4(b):
            n = lib.LZ4_compress_default(b, out, len(b), cap)
            if n <= 0:
                raise RuntimeError("LZ4_compress_default failed")
            return n

        return lz4
    lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compress.restype = ctypes.c_size_t
    lib.ZSTD_isError.restype = ctypes.c_uint
    cap = lib.ZSTD_compressBound(ctypes.c_size_t(unit))
    out = ctypes.create_string_buffer(cap)

    def zstd(b):
        n = lib.ZSTD_compress(out, ctypes.c_size_t(cap), b, ctypes.c_size_t(len(b)), 3)
        if lib.ZSTD_isError(ctypes.c_size_t(n)):
            raise RuntimeError("ZSTD_compress failed")
        return n

    return zstd


def units(path, unit):
    with open(path, "rb") as f:
        while True:
            b = f.read(unit)
            if len(b) < unit:
                return
            yield b


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unit", type=int, default=16384)
    ap.add_argument("--codec", choices=["lz4", "zstd"], default="lz4")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ext4-of-usr", type=int, metavar="MiB")
    src.add_argument("file", nargs="?")
    a = ap.parse_args()
    comp = codec(a.codec, a.unit)
    with tempfile.TemporaryDirectory() as work:
        if a.ext4_of_usr:
            here = os.path.dirname(os.path.abspath(__file__))
            sys.path.insert(0, os.path.join(here, "..", "nbdkit", "tests"))
            from nbdutil import make_ext4_image

            path = os.path.join(work, "usr.ext4")
            mib = a.ext4_of_usr
            _, data = make_ext4_image(path, (mib + mib // 4 + 64) << 20, mib << 20, work)
            what = f"an ext4 image of {data >> 20} MiB of files of /usr and the repository"
        else:
            path = a.file
            what = os.path.basename(path)
        n = same = 0
        sizes = []
        for b in units(path, a.unit):
            if b.count(b[:1]) == len(b):
                same += 1
                continue
            sizes.append(min(comp(b), a.unit))
            n += 1
    print(f"# {a.codec} of {a.unit}-byte units of {what}: {n} units, {same} of one byte left out")
    for s in sizes:
        print(s)
    total = sum(sizes)
    print(f"# {n} units, ratio {n * a.unit / max(total, 1):.2f}:1", file=sys.stderr)


main()
