"""Objects larger than a page: Pool(max_object_size=...), its limit and misuse."""

import random

import pytest

import zsmalloc


@pytest.mark.parametrize("limit", [65537, 2**20, 2**32 - 1])
def test_a_limit_above_64k_is_refused(limit):
    with pytest.raises(ValueError, match=r"zs_create_pool_with\(\): EINVAL.*max_object_size=" + str(limit)):
        zsmalloc.Pool(max_object_size=limit)


def test_the_default_limit_is_a_page(make_pool, layout):
    # The default is the pool's frame, the system page unless the suite sets one.
    p = make_pool(layout=layout)
    frame = p.frame_size
    assert p.max_object_size == frame and p.info()["max_object_size"] == frame
    with pytest.raises(ValueError, match=r"zs_malloc\(\): ENOSPC.*outside 1\.\." + str(frame)):
        p.malloc(frame + 1)


def test_large_objects_round_trip(make_pool, layout):
    p = make_pool(layout=layout, max_object_size=65536)
    assert p.info()["max_object_size"] == 65536
    rng = random.Random(5)
    sizes = [4095, 4096, 4097, 8191, 8192, 8193, 16384, 20000, 32768, 32769, 65535, 65536]
    sizes += [rng.randrange(1, 65537) for _ in range(40)]
    data = {}
    for n, size in enumerate(sizes):
        h = p.malloc(size)
        d = rng.randbytes(size)
        if n % 2:
            p.write(h, d)
        else:
            with p.map(h, "wo") as mv:
                mv[:] = d
        data[h] = d
    p.check()
    for h, d in data.items():
        assert p.read(h, len(d)) == d
        assert p.obj_size(h) == len(d)
        with p.map(h, "ro") as mv:
            assert mv == d
    for h in list(data)[::2]:
        p.free(h)
        del data[h]
    p.compact()
    p.make_adjacent()
    p.check()
    for h, d in data.items():
        assert p.read(h, len(d)) == d


def test_large_misuse_is_refused_and_loses_nothing(make_pool, layout):
    p = make_pool(layout=layout, max_object_size=20000)
    h = p.malloc(20000)
    d = bytes(range(256)) * 78 + bytes(32)
    p.write(h, d)
    with pytest.raises(ValueError, match=r"zs_malloc\(\): ENOSPC.*outside 1..20000"):
        p.malloc(20001)
    with pytest.raises(ValueError, match=r"zs_lookup_class_index"):
        p.lookup_class_index(20001)
    # A length beyond the object's slot: its size (dense), its class's place (kernel).
    slot = 20000 if layout == "dense" else p.class_info(p.lookup_class_index(20000))["class_size"]
    assert slot >= 20000
    with pytest.raises(ValueError, match=r"zs_obj_write\(handle=.*\): EINVAL.*bytes exceed the object's slot"):
        p.write(h, bytes(slot + 1))
    with pytest.raises(ValueError, match=r"EINVAL"):
        p.read(h, slot + 1)
    assert p.read(h, 20000) == d
    p.check()
