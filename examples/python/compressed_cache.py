#!/usr/bin/env python3
"""A compressed in-memory cache on a zsmalloc pool, the way zram and zswap use it.

Values are zlib-compressed and stored as pool objects; a dict maps each key to its
handles. A value whose compressed form is larger than one object (4096 bytes) is
split over several objects; one that does not compress is stored as it is.

Run as a script, it stores a mix of compressible and random values, reads them back,
replaces and deletes some, compacts the pool, checks every value and prints a summary.
It exits with status 1 if any value read back differs from what was stored.

    ZSMALLOC_LIB=target/release/libzsmalloc.so python3 examples/python/compressed_cache.py
"""

import os
import random
import sys
import zlib

try:
    import zsmalloc
except ImportError:  # run from the checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "python"))
    import zsmalloc


class CompressedCache:
    """A dict-like map from hashable keys to bytes, stored compressed in a pool."""

    def __init__(self, name="compressed-cache", level=6, **pool_config):
        self.pool = zsmalloc.Pool(name, **pool_config)
        self.level = level
        self._entries = {}  # key -> (raw length, compressed flag, [(handle, length)])
        self.raw_bytes = 0
        self.stored_bytes = 0

    def __setitem__(self, key, value):
        value = bytes(value)
        packed = zlib.compress(value, self.level)
        compressed = len(packed) < len(value)
        if not compressed:
            packed = value
        chunks = []
        try:
            for off in range(0, max(len(packed), 1), zsmalloc.MAX_ALLOC_SIZE):
                part = packed[off : off + zsmalloc.MAX_ALLOC_SIZE] or b"\0"
                h = self.pool.malloc(len(part))
                chunks.append((h, len(part)))
                self.pool.write(h, part)
        except BaseException:
            for h, _ in chunks:
                self.pool.free(h)
            raise
        if key in self._entries:
            del self[key]
        self._entries[key] = (len(value), compressed, chunks)
        self.raw_bytes += len(value)
        self.stored_bytes += sum(n for _, n in chunks)

    def __getitem__(self, key):
        raw_len, compressed, chunks = self._entries[key]
        packed = b"".join(self.pool.read(h, n) for h, n in chunks)
        if not compressed:
            return packed[:raw_len]
        return zlib.decompress(packed)

    def __delitem__(self, key):
        raw_len, _, chunks = self._entries.pop(key)
        for h, _ in chunks:
            self.pool.free(h)
        self.raw_bytes -= raw_len
        self.stored_bytes -= sum(n for _, n in chunks)

    def __contains__(self, key):
        return key in self._entries

    def __len__(self):
        return len(self._entries)

    def __iter__(self):
        return iter(list(self._entries))

    def compact(self):
        return self.pool.compact()

    def stats(self):
        frames = self.pool.total_pages
        info = self.pool.info()
        return {
            "entries": len(self),
            "raw_bytes": self.raw_bytes,
            "stored_bytes": self.stored_bytes,
            "frames": frames,
            "pool_bytes": frames * 4096,
            "meta_bytes": info["meta_bytes"],
            # Bytes stored per byte of frames held: 1.0 would be no waste at all.
            "density": self.stored_bytes / (frames * 4096) if frames else 0.0,
        }

    def close(self):
        self._entries.clear()
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


WORDS = (
    "page frame zspage class handle slot compact object memory swap zram zswap kernel "
    "allocator fragment density pool chain header frames free map unmap read write"
).split()


def make_value(rng, i):
    kind = i % 4
    if kind == 0:  # text: compresses well
        return " ".join(rng.choices(WORDS, k=rng.randint(5, 800))).encode()
    if kind == 1:  # random bytes: does not compress
        return rng.randbytes(rng.randint(1, 3000))
    if kind == 2:  # a page of records with some repetition
        noise = rng.randbytes(4 * 256)
        return b"".join(
            k.to_bytes(4, "little") + noise[4 * k : 4 * k + 4] + bytes(24) for k in range(rng.randint(1, 256))
        )
    return rng.randbytes(rng.randint(1, 64)) * rng.randint(1, 600)  # long, repetitive


def main(n=8000):
    """Fills a cache with `n` values, rewrites and deletes some, checks them all and
    prints a summary; returns the exit status (1 on any mismatch)."""
    rng = random.Random(2024)
    expected = {}
    mismatches = 0
    with CompressedCache() as cache:
        for i in range(n):
            key = f"key-{i}"
            value = make_value(rng, i)
            cache[key] = value
            expected[key] = value
        # Replace some values and delete others.
        for i in rng.sample(range(n), n // 5):
            key = f"key-{i}"
            value = make_value(rng, i + 1)
            cache[key] = value
            expected[key] = value
        for i in rng.sample(range(n), n * 3 // 10):
            key = f"key-{i}"
            if key in cache:
                del cache[key]
                del expected[key]
        before = cache.stats()
        freed = cache.compact()
        cache.pool.check()
        for key, value in expected.items():
            if key not in cache or cache[key] != value:
                mismatches += 1
                print(f"MISMATCH for {key}", file=sys.stderr)
        if len(cache) != len(expected) or set(cache) != set(expected):
            mismatches += 1
            print("MISMATCH in the set of keys", file=sys.stderr)
        s = cache.stats()
    print(f"entries:       {s['entries']}")
    print(f"bytes:         {s['raw_bytes']} raw, {s['stored_bytes']} compressed "
          f"({s['raw_bytes'] / max(s['stored_bytes'], 1):.2f}x)")
    print(f"pool frames:   {s['frames']} ({s['pool_bytes']} bytes, {freed} freed by compaction "
          f"from {before['frames']}), {s['meta_bytes']} bytes of metadata")
    print(f"density:       {s['density']:.3f} (compressed bytes per byte of frames)")
    if mismatches:
        print(f"FAILED: {mismatches} mismatch(es)", file=sys.stderr)
        return 1
    print("all values read back intact")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8000))
