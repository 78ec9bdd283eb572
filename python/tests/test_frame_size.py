"""Pool(frame_size=...): the rules it is checked against, and what follows it."""

import os

import pytest

import zsmalloc

PAGE = os.sysconf("SC_PAGESIZE")


@pytest.mark.parametrize("frame", [2048, 12288, 131072, 3000, 4097, 1, PAGE // 2])
def test_a_frame_size_outside_the_rules_is_refused(frame, layout):
    with pytest.raises(ValueError, match=r"zs_create_pool_with\(\): EINVAL.*frame_size=" + str(frame)):
        zsmalloc.Pool(layout=layout, frame_size=frame)


@pytest.mark.parametrize("frame", [4096, 16384, 65536])
def test_the_frame_is_the_unit_and_the_default_limit(frame, make_pool, layout):
    if frame % PAGE:
        pytest.skip("a frame smaller than the system's page")
    p = make_pool(layout=layout, frame_size=frame, max_pages=1 << 12)
    info = p.info()
    assert info["frame_size"] == frame == p.frame_size
    assert info["max_object_size"] == frame == p.max_object_size
    h = p.malloc(frame)
    p.write(h, b"x" * frame)
    assert p.read(h, frame) == b"x" * frame
    with pytest.raises(ValueError, match="ENOSPC"):
        p.malloc(frame + 1)
    assert p.info()["total_pages"] >= 1
    p.free(h)
    assert p.info()["total_pages"] == 0


def test_zero_means_the_system_page(make_pool):
    assert make_pool(frame_size=0).info()["frame_size"] == PAGE


def test_a_frame_size_of_the_wrong_type_is_refused():
    with pytest.raises(TypeError):
        zsmalloc.Pool(frame_size="4096")
    with pytest.raises(ValueError):
        zsmalloc.Pool(frame_size=-1)
