"""Compaction: frames freed, statistics, contents and handles kept, mapped objects
skipped; automatic compaction from the pool's configuration.

In the kernel layout compaction brings a class to its ideal number of zspages (from
the class table); in the dense layout it empties zspages with at least 1/16 of their
bytes free, moving their objects to wherever malloc would place them, and returns
the net frames freed."""

import time

import pytest

import zsmalloc
from zsutil import FRAME


def fragment(pool, rng, size=200, count=4000, keep=0.2):
    """Fills a class, then frees most of its objects at random; returns the survivors."""
    hs = [pool.malloc(size) for _ in range(count)]
    data = {}
    for h in hs:
        d = rng.randbytes(size)
        pool.write(h, d)
        data[h] = d
    for h in rng.sample(hs, int(count * (1 - keep))):
        pool.free(h)
        del data[h]
    return data


def test_compact_frees_frames_and_keeps_objects(make_pool, rng):
    pool = make_pool("compact", layout="kernel")
    data = fragment(pool, rng)
    pool.check()
    i = pool.lookup_class_index(200)
    freeable = pool.class_info(i)["pages_freeable"]
    assert freeable > 0
    before = pool.info()
    freed = pool.compact()
    pool.check()
    after = pool.info()
    assert freed > 0
    assert pool.total_pages == before["total_pages"] - freed
    assert after["pages_compacted"] == before["pages_compacted"] + freed
    assert after["objs_moved"] > before["objs_moved"]
    assert pool.stats() == {"pages_compacted": after["pages_compacted"]}
    assert after["live_objects"] == len(data) and after["requested_bytes"] == 200 * len(data)
    c = pool.class_info(i)
    # The class now holds ceil(objects / objects per zspage) zspages, the ideal.
    assert sum(c["zspages"]) == -(-len(data) // c["objs_per_zspage"])
    assert c["pages_freeable"] == 0
    assert freed >= freeable
    for h, d in data.items():  # same handles, same bytes
        assert pool.read(h, 200) == d
    assert pool.compact() == 0, "nothing left to compact"
    assert pool.info()["pages_compacted"] == after["pages_compacted"]


def _dense_compact(pool, data):
    """Compacts a dense pool whose objects (all in this thread's lane) are `data`, and
    checks what the dense layout promises; returns the frames freed."""
    lane = pool.lookup_class_index(1)
    chain = pool.class_info(lane)["pages_per_zspage"]
    cap = chain * FRAME
    live = sum(len(d) for d in data.values())
    ideal = -(-live // cap)  # zspages the live bytes need, packed end to end
    before = pool.info()
    c = pool.class_info(lane)
    assert sum(c["zspages"]) > ideal + 1, "the test needs a fragmented lane"
    assert c["pages_freeable"] > 0
    freed = pool.compact()
    pool.check()
    after = pool.info()
    assert freed > 0
    assert pool.total_pages == before["total_pages"] - freed, "the net frames freed"
    assert after["pages_compacted"] == before["pages_compacted"] + freed
    assert after["objs_moved"] > before["objs_moved"]
    assert pool.stats() == {"pages_compacted": after["pages_compacted"]}
    assert after["live_objects"] == len(data) and after["requested_bytes"] == live
    c = pool.class_info(lane)
    nz = sum(c["zspages"])
    # Close to the zspages the live bytes need (no class-table ideal: objects of every
    # size share zspages).
    assert ideal <= nz <= ideal + 1, (nz, ideal)
    assert c["pages_used"] == nz * chain == pool.total_pages
    assert c["objs_inuse"] == c["objs_allocated"] == len(data)
    assert c["pages_freeable"] <= (nz - ideal) * chain
    for h, d in data.items():  # same handles, same bytes
        assert pool.read(h, len(d)) == d
    again = pool.compact()
    assert again <= (nz - ideal) * chain, "compaction never goes below what the bytes need"
    assert pool.total_pages >= ideal * chain
    pool.check()
    for h, d in data.items():
        assert pool.read(h, len(d)) == d
    return freed


def test_dense_compact_frees_frames_and_keeps_objects(make_pool, rng):
    # The fragmentation and _dense_compact's ideal are built from 4 KiB frames.
    dense_pool = make_pool("test-dense", frame_size=4096)
    data = fragment(dense_pool, rng)
    dense_pool.check()
    _dense_compact(dense_pool, data)


@pytest.mark.parametrize("chain", [0, 4])
def test_dense_compact_mixed_sizes(make_pool, rng, chain):
    # Objects of every size in one lane; a random half freed. _dense_compact's ideal
    # counts 4 KiB frames, and 1500 objects fragment a lane of them.
    pool = make_pool("mixed", chain_size=chain, frame_size=4096)
    data = {}
    for _ in range(1500):
        size = rng.choice([rng.randint(1, 64), rng.randint(65, 1024), rng.randint(1025, zsmalloc.MAX_ALLOC_SIZE)])
        h = pool.malloc(size)
        data[h] = rng.randbytes(size)
        pool.write(h, data[h])
    for h in rng.sample(sorted(data), len(data) // 2):
        pool.free(h)
        del data[h]
    pool.check()
    _dense_compact(pool, data)


def test_compact_empty_pool(pool):
    assert pool.compact() == 0
    pool.check()


def test_compact_skips_mapped_objects(make_pool, layout, rng):
    import contextlib

    # 600 objects of 500 bytes leave something to compact in 4 KiB frames.
    pool = make_pool("test-" + layout, layout=layout, frame_size=4096)
    data = fragment(pool, rng, size=500, count=600, keep=0.1)
    survivors = list(data)
    before = pool.info()
    with contextlib.ExitStack() as stack:
        for h in survivors:
            stack.enter_context(pool.map(h, "ro"))
        assert pool.compact() == 0, "every object is pinned: nothing may move"
        mid = pool.info()
        assert mid["objs_moved"] == before["objs_moved"]
        assert mid["compact_skipped_mapped"] > before["compact_skipped_mapped"]
        assert mid["total_pages"] == before["total_pages"]
    pool.check()
    assert pool.compact() > 0  # unpinned, the same objects move
    for h, d in data.items():
        assert pool.read(h, 500) == d
    pool.check()


def test_compact_many_classes(pool, rng):
    data = {}
    for size in (40, 100, 333, 900, 1500, 2500):
        data.update(fragment(pool, rng, size=size, count=800, keep=0.3))
    pool.check()
    freed = pool.compact()
    assert freed > 0
    pool.check()
    for h, d in data.items():
        assert pool.read(h, len(d)) == d
    # New objects and frees work on the compacted pool.
    more = [pool.malloc(100) for _ in range(500)]
    for h in more:
        pool.free(h)
    for h in data:
        pool.free(h)
    assert pool.total_pages == 0
    pool.check()


def test_auto_compaction(make_pool, layout, rng):
    p = make_pool("auto", layout=layout, auto_compact_pages=1, auto_compact_interval_ms=10)
    assert p.config["auto_compact_pages"] == 1
    data = fragment(p, rng, size=300, count=3000)
    deadline = time.monotonic() + 10
    while p.info()["pages_compacted"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.info()["pages_compacted"] > 0, "the background compactor freed nothing in 10 s"
    for h, d in data.items():
        assert p.read(h, 300) == d
    p.check()


def test_auto_compaction_off_by_default(make_pool, rng):
    p = make_pool("manual")
    fragment(p, rng, size=300, count=3000)
    time.sleep(0.3)
    assert p.info()["pages_compacted"] == 0
    assert p.class_info(p.lookup_class_index(300))["pages_freeable"] > 0


def test_auto_compaction_config_refused():
    with pytest.raises(ValueError, match="zs_create_pool_with"):
        zsmalloc.Pool(auto_compact_pages=1, auto_compact_interval_ms=3_600_001)
