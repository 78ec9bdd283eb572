"""Objects of every size round-trip through write/read and map in both layouts; the
pool's page limit and nogrow; the statistics agree with what the pool holds.

The kernel layout's class table (objects per zspage, the huge class) is tested on
explicit kernel-layout pools; the dense layout, which has no size classes (its
"classes" are lanes of zspages shared by objects of every size, packed end to end),
has its own tests of the same behaviour."""

import os
import threading

import pytest

import zsmalloc
from zsutil import FRAME, class_indices, dense_chain, fullness_group, lanes

MAX = zsmalloc.MAX_ALLOC_SIZE
DENSE_CHAIN = 16  # frames of a dense zspage by default


def test_every_size_round_trips(pool, rng):
    sizes = list(range(1, MAX + 1))
    rng.shuffle(sizes)
    data = {}
    for n, size in enumerate(sizes):
        h = pool.malloc(size)
        d = rng.randbytes(size)
        if n % 2:
            pool.write(h, d)
        else:
            with pool.map(h, "wo") as mv:
                mv[:] = d
        data[h] = d
        # Read back at once, both ways, before the neighbours are written.
        assert pool.read(h, size) == d, size
        with pool.map(h, "ro") as mv:
            assert len(mv) == size and mv == d, size
    pool.check()
    info = pool.info()
    assert info["live_objects"] == MAX
    assert info["requested_bytes"] == MAX * (MAX + 1) // 2
    assert info["total_pages"] == pool.total_pages > 0
    # Every object still holds its bytes once all are written (no slot overlaps another).
    for h, d in data.items():
        assert pool.read(h, len(d)) == d
    # Rewrite through rw maps, verify, then free in random order.
    handles = list(data)
    rng.shuffle(handles)
    for h in handles[: len(handles) // 2]:
        with pool.map(h, "rw") as mv:
            assert mv == data[h]
            mv[0] ^= 0xFF
        data[h] = bytes([data[h][0] ^ 0xFF]) + data[h][1:]
    pool.check()
    for i, h in enumerate(handles):
        assert pool.read(h, len(data[h])) == data[h]
        pool.free(h)
        if i == len(handles) // 2:
            pool.check()
    pool.check()
    info = pool.info()
    assert (info["live_objects"], info["requested_bytes"], info["total_pages"]) == (0, 0, 0)


def test_density(pool, rng):
    # Many small objects share frames: the pool holds far fewer frames than objects.
    hs = [pool.malloc(rng.randint(20, 200)) for _ in range(5000)]
    requested = pool.info()["requested_bytes"]
    frames = pool.total_pages
    assert frames * 4096 < 2 * requested
    assert frames < len(hs) / 10
    for h in hs:
        pool.free(h)
    assert pool.total_pages == 0


def _fill_to_the_limit(p, limit):
    """Allocates page-sized objects until the pool's page limit refuses one: exactly
    `limit` fit, in either layout. Returns them, each written with its handle."""
    big = []
    with pytest.raises(MemoryError, match=r"zs_malloc\(\): ENOMEM"):
        while True:
            big.append(p.malloc(MAX))
            assert len(big) <= limit
    assert len(big) == limit and p.total_pages == limit
    for h in big:
        p.write(h, h.to_bytes(8, "little") * (MAX // 8))
    p.check()
    return big


def _fill_small(p, size):
    small = []
    with pytest.raises(MemoryError):
        while True:
            small.append(p.malloc(size))
    return small


def _limit_kept(p, big, small):
    for h in big:
        assert p.read(h, MAX) == h.to_bytes(8, "little") * (MAX // 8)
    p.check()
    assert p.info()["misuse_events"] == 0, "running out of memory is no misuse"
    for h in small:
        p.free(h)
    assert p.malloc(MAX)  # room again


def test_max_pages_limit(make_pool):
    limit = 40
    # The frame counts under the limit are those of 4 KiB frames.
    p = make_pool("limited", layout="kernel", max_pages=limit, frame_size=4096)
    # One-frame objects (the huge class): exactly `limit` fit.
    big = _fill_to_the_limit(p, limit)
    for h in big[:10]:
        p.free(h)
    assert p.total_pages == limit - 10
    # Small objects fill whole zspages within what is left.
    size = 300
    c = p.class_info(p.lookup_class_index(size))
    small = _fill_small(p, size)
    assert len(small) == (10 // c["pages_per_zspage"]) * c["objs_per_zspage"]
    assert p.total_pages <= limit
    _limit_kept(p, big[10:], small)


def test_dense_max_pages_limit(make_pool):
    limit = 40
    # The frame counts under the limit are those of 4 KiB frames.
    p = make_pool("limited", max_pages=limit, frame_size=4096)
    # Page-sized objects are packed end to end: two zspages of 16 frames, then one of
    # the 8 frames the limit leaves (a dense zspage shortens under the limit).
    big = _fill_to_the_limit(p, limit)
    lane = p.lookup_class_index(MAX)
    c = p.class_info(lane)
    assert c["pages_per_zspage"] == DENSE_CHAIN
    assert c["zspages"] == [0] * (zsmalloc.NR_FULLNESS_GROUPS - 1) + [3]
    assert c["pages_used"] == limit != 3 * DENSE_CHAIN
    assert c["objs_allocated"] == c["objs_inuse"] == limit
    # Freeing 10 neighbours gives no frame back (their zspage still holds objects) but
    # leaves one merged hole of 10 pages, which small objects fill byte for byte.
    for h in big[:10]:
        p.free(h)
    assert p.total_pages == limit
    size = 300
    small = _fill_small(p, size)
    assert len(small) == 10 * MAX // size
    assert p.total_pages == limit
    c = p.class_info(lane)
    assert c["objs_inuse"] == limit - 10 + len(small) and c["pages_used"] == limit
    _limit_kept(p, big[10:], small)


def test_nogrow(make_pool):
    pool = make_pool("nogrow", layout="kernel")
    size = 200
    with pytest.raises(MemoryError):
        pool.malloc(size, nogrow=True)
    assert pool.total_pages == 0
    first = pool.malloc(size)
    c = pool.class_info(pool.lookup_class_index(size))
    frames = pool.total_pages
    assert frames == c["pages_per_zspage"]
    hs = [first] + [pool.malloc(size, nogrow=True) for _ in range(c["objs_per_zspage"] - 1)]
    assert pool.total_pages == frames
    with pytest.raises(MemoryError, match="nogrow"):
        pool.malloc(size, nogrow=True)
    with pytest.raises(MemoryError):
        pool.malloc(MAX, nogrow=True)  # another class, no zspage either
    assert pool.total_pages == frames
    pool.free(hs.pop())
    hs.append(pool.malloc(size, nogrow=True))  # the freed slot is reused
    hs.append(pool.malloc(size))  # without nogrow the pool grows
    assert pool.total_pages == 2 * frames
    pool.check()
    assert len(set(hs)) == len(hs)


def test_dense_nogrow(make_pool):
    # The free runs and zspage counts are those of 4 KiB frames.
    pool = make_pool("test-dense", frame_size=4096)
    size = 256  # a multiple of 64: nogrow needs a free run of the size rounded up to 64
    with pytest.raises(MemoryError, match="nogrow"):
        pool.malloc(size, nogrow=True)
    assert pool.total_pages == 0
    first = pool.malloc(size)
    lane = pool.lookup_class_index(size)
    assert pool.total_pages == pool.class_info(lane)["pages_used"] == DENSE_CHAIN
    # Objects are packed end to end: exactly chain * 4096 / size fill the zspage.
    fit = DENSE_CHAIN * FRAME // size
    hs = [first] + [pool.malloc(size, nogrow=True) for _ in range(fit - 1)]
    assert pool.total_pages == DENSE_CHAIN
    assert pool.class_info(lane)["zspages"][-1] == 1, "the zspage is full"
    for n in (size, 1):  # not a byte is left, not even for another size
        with pytest.raises(MemoryError, match="nogrow"):
            pool.malloc(n, nogrow=True)
    assert pool.total_pages == DENSE_CHAIN
    # A freed object leaves a hole of its size; two freed neighbours merge into one.
    pool.free(hs.pop(100))
    with pytest.raises(MemoryError, match="nogrow"):
        pool.malloc(size + 1, nogrow=True)
    hs.append(pool.malloc(size, nogrow=True))  # the hole is reused
    pool.free(hs.pop(10))
    pool.free(hs.pop(10))  # the neighbour of the one just freed
    with pytest.raises(MemoryError, match="nogrow"):
        pool.malloc(2 * size + 1, nogrow=True)
    hs.append(pool.malloc(2 * size, nogrow=True))
    assert pool.total_pages == DENSE_CHAIN
    hs.append(pool.malloc(size))  # without nogrow the pool grows by a zspage
    assert pool.total_pages == 2 * DENSE_CHAIN
    pool.check()
    assert len(set(hs)) == len(hs)


def test_class_table(make_pool):
    pool = make_pool("classes", layout="kernel")
    indices = class_indices(pool)
    assert len(indices) > 10
    sizes = {}
    for s in range(1, pool.max_object_size + 1):
        sizes.setdefault(pool.lookup_class_index(s), []).append(s)
    prev = 0
    for i in indices:
        c = pool.class_info(i)
        assert c["class_size"] > prev, "class sizes grow with the index"
        prev = c["class_size"]
        assert c["class_size"] >= max(sizes[i]), "every size fits its class"
        ppz, opz = c["pages_per_zspage"], c["objs_per_zspage"]
        assert opz == ppz * pool.frame_size // c["class_size"]
        assert c["zspages"] == [0] * zsmalloc.NR_FULLNESS_GROUPS
        assert (c["objs_allocated"], c["objs_inuse"], c["pages_used"], c["pages_freeable"]) == (0, 0, 0, 0)
    # Indices that name no (merged) class are refused.
    for bad in sorted(set(range(indices[-1] + 5)) - set(indices))[:50] + [2**32 - 1]:
        with pytest.raises(ValueError, match="zs_class_info"):
            pool.class_info(bad)


@pytest.mark.parametrize("chain", [0, 4, 8, 16])
def test_dense_lanes(make_pool, chain):
    # No size classes: the "classes" are lanes, one per CPU up to 16, each taking
    # objects of every size; a thread allocates in its own lane.
    pool = make_pool("lanes", chain_size=chain)
    frame, top = pool.frame_size, pool.max_object_size
    frames = dense_chain(pool, chain)
    ids = lanes(pool)
    assert 1 <= len(ids) <= min(16, os.cpu_count() or 1)
    assert ids == list(range(len(ids)))
    mine = pool.lookup_class_index(1)
    assert mine in ids
    assert class_indices(pool) == [mine], "one thread: the same lane for every size"
    for i in ids:
        c = pool.class_info(i)
        assert (c["class_size"], c["pages_per_zspage"], c["objs_per_zspage"]) == (frame, frames, 0)
        assert c["zspages"] == [0] * zsmalloc.NR_FULLNESS_GROUPS
        assert (c["objs_allocated"], c["objs_inuse"], c["pages_used"], c["pages_freeable"]) == (0, 0, 0, 0)
    for bad in (len(ids), len(ids) + 1, 16, 2**32 - 1):
        with pytest.raises(ValueError, match="zs_class_info"):
            pool.class_info(bad)
    assert pool.huge_class_size == top

    # Threads, one after another: each sees one lane for every size and its objects are
    # counted there.
    placed = []

    def worker(k):
        lane = pool.lookup_class_index(1 + k)
        assert all(pool.lookup_class_index(s) == lane for s in (1, 64, 1000, 3000, top))
        h = pool.malloc(100 + k)
        assert pool.lookup_class_index(100 + k) == lane
        placed.append((lane, h))

    for k in range(32):
        t = threading.Thread(target=worker, args=(k,))
        t.start()
        t.join(10)
    assert len(placed) == 32, "a worker failed"
    used = {lane for lane, _ in placed}
    assert used <= set(ids)
    if len(ids) > 1:
        assert len(used) > 1, "threads are spread over the lanes"
    for i in ids:
        c = pool.class_info(i)
        n = sum(1 for lane, _ in placed if lane == i)
        assert c["objs_inuse"] == c["objs_allocated"] == n, i
        assert c["pages_used"] == sum(c["zspages"]) * frames == (frames if n else 0), i
    census = pool.census()["class_frames"]
    assert census == {i: frames for i in used}
    assert pool.total_pages == frames * len(used)
    for _, h in placed:
        pool.free(h)
    assert pool.total_pages == 0


def _mixed_objects_two_thirds_kept(pool, rng):
    """3000 objects of small, medium and large sizes, a random 1000 of them freed; the
    pool checked. Returns {handle: size} of the live ones."""
    live = {}
    for _ in range(3000):
        size = rng.choice([rng.randint(1, 64), rng.randint(65, 1024), rng.randint(1025, MAX)])
        live[pool.malloc(size)] = size
    for h in rng.sample(sorted(live), 1000):
        pool.free(h)
        del live[h]
    pool.check()
    return live


def test_info_and_class_info_agree_with_the_objects(make_pool, rng):
    pool = make_pool("agree", layout="kernel")
    live = _mixed_objects_two_thirds_kept(pool, rng)
    info = pool.info()
    assert info["live_objects"] == len(live)
    assert info["requested_bytes"] == sum(live.values())
    per_class = {}
    for size in live.values():
        i = pool.lookup_class_index(size)
        per_class[i] = per_class.get(i, 0) + 1
    pages = 0
    for i in class_indices(pool):
        c = pool.class_info(i)
        nz = sum(c["zspages"])
        assert c["objs_inuse"] == per_class.get(i, 0), i
        assert c["objs_allocated"] == nz * c["objs_per_zspage"]
        assert c["pages_used"] == nz * c["pages_per_zspage"]
        assert c["objs_inuse"] <= c["objs_allocated"]
        assert c["zspages"][0] == 0, "empty zspages are given back"
        free_slots = c["objs_allocated"] - c["objs_inuse"]
        assert c["pages_freeable"] == free_slots // c["objs_per_zspage"] * c["pages_per_zspage"]
        pages += c["pages_used"]
    assert pages == info["total_pages"] == pool.total_pages


def test_dense_info_and_class_info_agree_with_the_objects(make_pool, rng):
    # The zspage counts are those of 4 KiB frames.
    pool = make_pool("test-dense", frame_size=4096)
    live = _mixed_objects_two_thirds_kept(pool, rng)
    info = pool.info()
    assert info["live_objects"] == len(live)
    requested = sum(live.values())
    assert info["requested_bytes"] == requested
    # One thread: every object is in its lane, whatever its size.
    lane = pool.lookup_class_index(1)
    for i in lanes(pool):
        c = pool.class_info(i)
        if i != lane:
            assert (c["objs_inuse"], c["pages_used"], sum(c["zspages"])) == (0, 0, 0), i
    c = pool.class_info(lane)
    nz = sum(c["zspages"])
    cap = DENSE_CHAIN * FRAME
    assert c["objs_inuse"] == c["objs_allocated"] == len(live)
    assert c["zspages"][0] == 0, "empty zspages are given back"
    assert c["pages_used"] == nz * DENSE_CHAIN == info["total_pages"] == pool.total_pages
    # An object takes exactly its size, so the zspages' groups (10% of their bytes
    # each) bound the live bytes: a zspage in group g (1..10) has [g-1, g) tenths used.
    low = sum(n * (g - 1) * cap // 10 for g, n in enumerate(c["zspages"][1:-1], 1))
    high = sum(n * g * cap // 10 for g, n in enumerate(c["zspages"][1:-1], 1))
    full = c["zspages"][-1] * cap
    assert low + full <= requested < high + full
    assert nz >= -(-requested // cap)
    # Compaction could not free frames the live bytes need.
    assert 0 <= c["pages_freeable"] <= c["pages_used"]
    assert (c["pages_used"] - c["pages_freeable"]) * FRAME >= requested


def test_fullness_groups(make_pool):
    pool = make_pool("groups", layout="kernel")
    size = 100
    c = pool.class_info(pool.lookup_class_index(size))
    objs = c["objs_per_zspage"]
    assert objs > 10
    hs = []
    for k in range(1, 2 * objs + 1):
        hs.append(pool.malloc(size))
        z = pool.class_info(pool.lookup_class_index(size))["zspages"]
        expected = [0] * zsmalloc.NR_FULLNESS_GROUPS
        expected[-1] += k // objs
        if k % objs:
            expected[fullness_group(k % objs, objs)] += 1
        assert z == expected, k
    assert pool.class_info(pool.lookup_class_index(size))["pages_freeable"] == 0
    for h in hs[: objs + objs // 2]:
        pool.free(h)
    c = pool.class_info(pool.lookup_class_index(size))
    assert sum(c["zspages"]) == 1 and c["objs_inuse"] == objs - objs // 2


def test_dense_fullness_groups(make_pool):
    # A dense zspage's group is the share of its bytes that objects take; the counts
    # are those of 4 KiB frames.
    pool = make_pool("test-dense", frame_size=4096)
    size = 1000
    cap = DENSE_CHAIN * FRAME
    per = cap // size  # objects end to end; the tail left is too short for another
    assert cap % size
    lane = pool.lookup_class_index(size)
    hs = []
    for k in range(1, 2 * per + 2):
        hs.append(pool.malloc(size))
        c = pool.class_info(lane)
        expected = [0] * zsmalloc.NR_FULLNESS_GROUPS
        expected[fullness_group(per * size, cap)] += (k - 1) // per
        expected[fullness_group((k - 1) % per * size + size, cap)] += 1
        assert c["zspages"] == expected, k
        assert c["pages_used"] == -(-k // per) * DENSE_CHAIN
        assert c["objs_inuse"] == c["objs_allocated"] == k
    # Emptying the first zspage gives its frames back; the others keep their groups.
    for h in hs[:per]:
        pool.free(h)
    c = pool.class_info(lane)
    expected = [0] * zsmalloc.NR_FULLNESS_GROUPS
    expected[fullness_group(per * size, cap)] += 1
    expected[fullness_group(size, cap)] += 1
    assert c["zspages"] == expected
    assert c["pages_used"] == pool.total_pages == 2 * DENSE_CHAIN
    # Half of the second zspage freed: its group follows its bytes.
    for h in hs[per : per + per // 2]:
        pool.free(h)
    c = pool.class_info(lane)
    expected = [0] * zsmalloc.NR_FULLNESS_GROUPS
    expected[fullness_group((per - per // 2) * size, cap)] += 1
    expected[fullness_group(size, cap)] += 1
    assert c["zspages"] == expected and c["objs_inuse"] == per - per // 2 + 1


def test_meta_bytes_follow_the_pool(pool):
    base = pool.info()["meta_bytes"]
    hs = [pool.malloc(64) for _ in range(20000)]
    grown = pool.info()["meta_bytes"]
    assert grown > base
    # At most a few dozen bytes of metadata per object.
    assert grown - base < 64 * len(hs)
    for h in hs:
        pool.free(h)
    assert pool.info()["meta_bytes"] < grown


def test_huge_objects_take_one_frame_each(make_pool):
    pool = make_pool("huge", layout="kernel")
    top = pool.max_object_size
    hs = [pool.malloc(top) for _ in range(10)]
    assert pool.total_pages == 10
    c = pool.class_info(pool.lookup_class_index(top))
    assert c["zspages"][-1] == 10 and c["pages_used"] == 10
    for h in hs:
        pool.free(h)
    assert pool.total_pages == 0


def test_dense_page_sized_objects_are_packed(dense_pool, rng):
    # No huge class: frame-sized objects share zspages like any other, 16 to a zspage
    # of 4 KiB frames (a zspage keeps at most 64 KiB).
    pool = dense_pool
    size, chain = pool.frame_size, dense_chain(pool)
    assert pool.huge_class_size == size
    lane = pool.lookup_class_index(size)
    data = {}
    for k in range(1, chain + 2):
        h = pool.malloc(size)
        data[h] = rng.randbytes(size)
        pool.write(h, data[h])
        c = pool.class_info(lane)
        if k <= chain:
            assert pool.total_pages == c["pages_used"] == chain, k
            assert sum(c["zspages"]) == 1
            assert c["zspages"][fullness_group(k * size, chain * size)] == 1, k
    assert pool.total_pages == 2 * chain
    for h, d in data.items():
        assert pool.read(h, size) == d
    for h in data:
        pool.free(h)
    assert pool.total_pages == 0
