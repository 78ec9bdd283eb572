"""Objects of every size round-trip through write/read and map in both layouts; the
pool's page limit and nogrow; the statistics agree with what the pool holds."""

import pytest

import zsmalloc
from zsutil import class_indices

MAX = zsmalloc.MAX_ALLOC_SIZE


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


def test_max_pages_limit(make_pool, layout, rng):
    limit = 40
    p = make_pool("limited", layout=layout, max_pages=limit)
    # One-frame objects: exactly `limit` fit.
    big = []
    with pytest.raises(MemoryError, match=r"zs_malloc\(\): ENOMEM"):
        while True:
            big.append(p.malloc(MAX))
            assert len(big) <= limit
    assert len(big) == limit and p.total_pages == limit
    for h in big:
        p.write(h, h.to_bytes(8, "little") * (MAX // 8))
    p.check()
    for h in big[:10]:
        p.free(h)
    # Small objects fill whole zspages within what is left.
    size = 300
    c = p.class_info(p.lookup_class_index(size))
    small = []
    with pytest.raises(MemoryError):
        while True:
            small.append(p.malloc(size))
    assert len(small) == (10 // c["pages_per_zspage"]) * c["objs_per_zspage"]
    assert p.total_pages <= limit
    for h in big[10:]:
        assert p.read(h, MAX) == h.to_bytes(8, "little") * (MAX // 8)
    p.check()
    assert p.info()["misuse_events"] == 0, "running out of memory is no misuse"
    for h in small:
        p.free(h)
    assert p.malloc(MAX)  # room again


def test_nogrow(pool):
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


def test_class_table(pool):
    indices = class_indices(pool)
    assert len(indices) > 10
    sizes = {}
    for s in range(1, MAX + 1):
        sizes.setdefault(pool.lookup_class_index(s), []).append(s)
    prev = 0
    for i in indices:
        c = pool.class_info(i)
        assert c["class_size"] > prev, "class sizes grow with the index"
        prev = c["class_size"]
        assert c["class_size"] >= max(sizes[i]), "every size fits its class"
        ppz, opz = c["pages_per_zspage"], c["objs_per_zspage"]
        assert opz == ppz * 4096 // c["class_size"]
        assert c["zspages"] == [0] * zsmalloc.NR_FULLNESS_GROUPS
        assert (c["objs_allocated"], c["objs_inuse"], c["pages_used"], c["pages_freeable"]) == (0, 0, 0, 0)
    # Indices that name no (merged) class are refused.
    for bad in sorted(set(range(indices[-1] + 5)) - set(indices))[:50] + [2**32 - 1]:
        with pytest.raises(ValueError, match="zs_class_info"):
            pool.class_info(bad)


def _group(inuse, objs):
    # The kernel's get_fullness_group(): 0, then ratio // 10 + 1, then full.
    if inuse == 0:
        return 0
    if inuse == objs:
        return zsmalloc.NR_FULLNESS_GROUPS - 1
    return 100 * inuse // objs // 10 + 1


def test_info_and_class_info_agree_with_the_objects(pool, rng):
    live = {}
    for _ in range(3000):
        size = rng.choice([rng.randint(1, 64), rng.randint(65, 1024), rng.randint(1025, MAX)])
        live[pool.malloc(size)] = size
    for h in rng.sample(sorted(live), 1000):
        pool.free(h)
        del live[h]
    pool.check()
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


def test_fullness_groups(pool):
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
            expected[_group(k % objs, objs)] += 1
        assert z == expected, k
    assert pool.class_info(pool.lookup_class_index(size))["pages_freeable"] == 0
    for h in hs[: objs + objs // 2]:
        pool.free(h)
    c = pool.class_info(pool.lookup_class_index(size))
    assert sum(c["zspages"]) == 1 and c["objs_inuse"] == objs - objs // 2


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


def test_huge_objects_take_one_frame_each(pool):
    hs = [pool.malloc(MAX) for _ in range(10)]
    assert pool.total_pages == 10
    c = pool.class_info(pool.lookup_class_index(MAX))
    assert c["zspages"][-1] == 10 and c["pages_used"] == 10
    for h in hs:
        pool.free(h)
    assert pool.total_pages == 0
