"""Compaction: frames freed, statistics, contents and handles kept, mapped objects
skipped; automatic compaction from the pool's configuration."""

import time

import pytest

import zsmalloc


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


def test_compact_frees_frames_and_keeps_objects(pool, rng):
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


def test_compact_empty_pool(pool):
    assert pool.compact() == 0
    pool.check()


def test_compact_skips_mapped_objects(pool, rng):
    import contextlib

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
