"""API.md's misuse table, row by row: each misuse is refused with its errno, counted once
in misuse_events, and leaves the pool intact and every other object untouched."""

import ctypes
import errno
import os
import threading

import pytest

import zsmalloc
from zsutil import LIB, counts_misuse, run_python, usable

ERR = lambda e: 2**64 - e  # noqa: E731  the error handle of errno e


@pytest.fixture
def objs(pool, rng):
    """A few live objects whose contents the tests verify after each misuse."""
    out = {}
    for size in (1, 17, 100, 1000, 3000, 4096):
        h = pool.malloc(size)
        data = rng.randbytes(size)
        pool.write(h, data)
        out[h] = data
    return out


def intact(pool, objs):
    for h, data in objs.items():
        assert pool.read(h, len(data)) == data
    pool.check()
    assert pool.info()["live_objects"] == len(objs)


# -- NULL pool -----------------------------------------------------------------------

NULL_CALLS = {
    "zs_malloc": (lambda: LIB.zs_malloc(None, 16, 0), ERR(errno.EINVAL)),
    "zs_free": (lambda: LIB.zs_free(None, 1 << 48 | 1), None),
    "zs_obj_read_begin": (lambda: LIB.zs_obj_read_begin(None, 1 << 48 | 1, 4, ctypes.create_string_buffer(4)), None),
    "zs_obj_read_end": (lambda: LIB.zs_obj_read_end(None, 1 << 48 | 1, 4, ctypes.create_string_buffer(4)), None),
    "zs_obj_write": (lambda: LIB.zs_obj_write(None, 1 << 48 | 1, b"abcd", 4), None),
    "zs_map_object": (lambda: LIB.zs_map_object(None, 1 << 48 | 1, 0), None),
    "zs_unmap_object": (lambda: LIB.zs_unmap_object(None, 1 << 48 | 1), None),
    "zs_compact": (lambda: LIB.zs_compact(None), 0),
    "zs_get_total_pages": (lambda: LIB.zs_get_total_pages(None), 0),
    "zs_huge_class_size": (lambda: LIB.zs_huge_class_size(None), 0),
    "zs_lookup_class_index": (lambda: LIB.zs_lookup_class_index(None, 16), 2**32 - 1),
    "zs_pool_stats": (lambda: LIB.zs_pool_stats(None, ctypes.byref(zsmalloc.zs_pool_stats())), None),
    "zs_pool_info": (lambda: LIB.zs_pool_info(None, ctypes.byref(_sized(zsmalloc.zs_pool_info))), -errno.EINVAL),
    "zs_class_info": (lambda: LIB.zs_class_info(None, 0, ctypes.byref(_sized(zsmalloc.zs_class_info))), -errno.EINVAL),
    "zs_pool_check": (lambda: LIB.zs_pool_check(None), -errno.EINVAL),
    "zs_defragment": (lambda: LIB.zs_defragment(None), -errno.EINVAL),
    "zs_make_adjacent": (lambda: LIB.zs_make_adjacent(None), -errno.EINVAL),
    "zs_release_arena": (lambda: LIB.zs_release_arena(None), -errno.EINVAL),
    "zs_frame_census": (
        lambda: LIB.zs_frame_census(None, ctypes.byref(_sized(zsmalloc.zs_frame_census))),
        -errno.EINVAL,
    ),
    "zs_obj_size": (lambda: LIB.zs_obj_size(None, 1 << 48 | 1), 0),
}


def _sized(cls):
    s = cls()
    s.size = ctypes.sizeof(cls)
    return s


@pytest.mark.parametrize("name", sorted(NULL_CALLS))
def test_null_pool(name):
    call, expected = NULL_CALLS[name]
    ctypes.set_errno(0)
    r = call()
    assert ctypes.get_errno() == errno.EINVAL, f"{name}(NULL) errno"
    assert r == expected, f"{name}(NULL) returned {r!r}"


def test_null_pool_covers_every_call():
    pool_calls = {n for n, (_, args) in zsmalloc.PROTOTYPES.items() if args and args[0] is ctypes.c_void_p}
    assert pool_calls - {"zs_destroy_pool"} == set(NULL_CALLS)
    LIB.zs_destroy_pool(None)  # the one call for which NULL is fine


def test_null_out_struct(pool):
    for call in (
        lambda: LIB.zs_pool_stats(pool, None),
        lambda: LIB.zs_pool_info(pool, None),
        lambda: LIB.zs_class_info(pool, pool.lookup_class_index(8), None),
    ):
        ctypes.set_errno(0)
        call()
        assert ctypes.get_errno() == errno.EINVAL


# -- handles never issued, or from another pool -------------------------------------


def invented(pool, objs):
    h = next(iter(objs))
    tag = h & ~(2**48 - 1)
    return [
        1,
        0x1234_5678,
        (tag ^ (0x8000 << 48)) | 5,  # another tag
        tag,  # this pool's tag, index field 0: names no slot
        tag | 0xFFFF_FFFF,  # this pool's tag, a slot far past the table
        tag | (h & 0xFFFF_FFFF) + 100_000,
        (h ^ (1 << 50)),  # another tag
    ]


def test_invented_handles(pool, objs):
    for bad in invented(pool, objs):
        for op in (
            lambda: pool.free(bad),
            lambda: pool.read(bad, 1),
            lambda: pool.write(bad, b"x"),
            lambda: pool.map(bad, "ro").__enter__(),
        ):
            with counts_misuse(pool), pytest.raises(ValueError, match="EINVAL"):
                op()
    intact(pool, objs)


def test_foreign_handle(pool, objs, make_pool, layout):
    other = make_pool("other", layout=layout)
    theirs = other.malloc(100)
    other.write(theirs, b"t" * 100)
    mine = next(iter(objs))
    for victim, h in ((pool, theirs), (other, mine)):
        for op in (
            lambda: victim.free(h),
            lambda: victim.read(h, 1),
            lambda: victim.write(h, b"x"),
            lambda: victim.map(h, "rw").__enter__(),
        ):
            with counts_misuse(victim), pytest.raises(ValueError, match="EINVAL"):
                op()
    assert other.read(theirs, 100) == b"t" * 100
    intact(pool, objs)
    other.check()


# -- stale handles -------------------------------------------------------------------


def test_double_free_and_use_after_free(pool, objs):
    h = pool.malloc(200)
    pool.write(h, b"s" * 200)
    pool.free(h)
    for op in (
        lambda: pool.free(h),
        lambda: pool.read(h, 1),
        lambda: pool.write(h, b"x"),
        lambda: pool.map(h, "ro").__enter__(),
    ):
        with counts_misuse(pool), pytest.raises(ValueError, match="EINVAL"):
            op()
    intact(pool, objs)


def test_stale_handle_after_slot_reuse(pool, objs, rng):
    # Free and reallocate the same class many times: handle slots are reused with a new
    # generation, and every old handle stays refused.
    old = []
    h = pool.malloc(300)
    for _ in range(200):
        pool.free(h)
        old.append(h)
        h = pool.malloc(300)
        assert h not in old
    pool.write(h, b"n" * 300)
    for stale in rng.sample(old, 20):
        with counts_misuse(pool), pytest.raises(ValueError):
            pool.write(stale, b"o" * 300)
        with counts_misuse(pool), pytest.raises(ValueError):
            pool.free(stale)
    assert pool.read(h, 300) == b"n" * 300
    intact(pool, {**objs, h: b"n" * 300})


# -- free while mapped or being read -------------------------------------------------


def test_free_while_mapped(pool, objs):
    h, data = next(iter(objs.items()))
    for mode in ("ro", "rw", "wo"):
        with pool.map(h, mode):
            with counts_misuse(pool), pytest.raises(zsmalloc.BusyError) as e:
                pool.free(h)
            assert e.value.errno == errno.EBUSY and isinstance(e.value, OSError)
            assert f"0x{h:x}" in str(e.value)
        if mode == "wo":
            pool.write(h, data)  # a write-only mapping stores its undefined bytes
    intact(pool, objs)
    pool.free(h)


def test_free_while_mapped_by_another_thread(pool, objs):
    h, data = next(iter(objs.items()))
    mapped, done = threading.Event(), threading.Event()
    seen = []

    def mapper():
        with pool.map(h, "ro") as mv:
            mapped.set()
            done.wait(10)
            seen.append(bytes(mv))

    t = threading.Thread(target=mapper)
    t.start()
    assert mapped.wait(10)
    try:
        with counts_misuse(pool), pytest.raises(zsmalloc.BusyError):
            pool.free(h)
    finally:
        done.set()
        t.join(10)
    assert seen == [data]
    intact(pool, objs)
    pool.free(h)


def test_free_while_being_read(pool, objs):
    h, data = next(iter(objs.items()))
    n = len(data)
    buf = ctypes.create_string_buffer(n)
    mem = LIB.zs_obj_read_begin(pool, h, n, buf)
    assert mem
    try:
        with counts_misuse(pool), pytest.raises(zsmalloc.BusyError):
            pool.free(h)
        assert ctypes.string_at(mem, n) == data
    finally:
        ctypes.set_errno(0)
        LIB.zs_obj_read_end(pool, h, n, mem)
        assert ctypes.get_errno() == 0
    intact(pool, objs)


# -- unmap / read_end without a matching map / begin --------------------------------


def test_unmap_without_map(pool, objs):
    h = next(iter(objs))
    with counts_misuse(pool):
        ctypes.set_errno(0)
        LIB.zs_unmap_object(pool, h)
        assert ctypes.get_errno() == errno.EINVAL
    # Mapped once, unmapped twice: the second is refused.
    assert LIB.zs_map_object(pool, h, 1)
    LIB.zs_unmap_object(pool, h)
    with counts_misuse(pool):
        ctypes.set_errno(0)
        LIB.zs_unmap_object(pool, h)
        assert ctypes.get_errno() == errno.EINVAL
    intact(pool, objs)


def test_unmap_on_another_thread(pool, objs):
    h, data = next(iter(objs.items()))
    errs = []
    with pool.map(h, "ro") as mv:

        def other():
            ctypes.set_errno(0)
            LIB.zs_unmap_object(pool, h)
            errs.append(ctypes.get_errno())

        with counts_misuse(pool):
            t = threading.Thread(target=other)
            t.start()
            t.join(10)
        assert errs == [errno.EINVAL]
        assert bytes(mv) == data  # still mapped here
    intact(pool, objs)


def test_read_end_without_begin(pool, objs):
    h, data = next(iter(objs.items()))
    n = len(data)
    buf = ctypes.create_string_buffer(n)
    with counts_misuse(pool):
        ctypes.set_errno(0)
        LIB.zs_obj_read_end(pool, h, n, buf)
        assert ctypes.get_errno() == errno.EINVAL
    # A begun read ended with another length or pointer is refused; the right end works.
    mem = LIB.zs_obj_read_begin(pool, h, n, buf)
    for args in ((n - 1 if n > 1 else n + 1, mem), (n, ctypes.addressof(buf) + 1)):
        with counts_misuse(pool):
            ctypes.set_errno(0)
            LIB.zs_obj_read_end(pool, h, args[0], args[1])
            assert ctypes.get_errno() == errno.EINVAL
    with pytest.raises(zsmalloc.BusyError):
        pool.free(h)  # the read is still open
    ctypes.set_errno(0)
    LIB.zs_obj_read_end(pool, h, n, mem)
    assert ctypes.get_errno() == 0
    intact(pool, objs)


# -- lengths beyond the slot -------------------------------------------------------


def test_length_beyond_the_slot(pool, objs):
    # The slot is what an object may hold: its size in the dense layout, its class's
    # size less the header in the kernel layout.
    for h, data in objs.items():
        slot = usable(pool, len(data))
        with counts_misuse(pool, 0):
            assert pool.read(h, slot)[: len(data)] == data
        over = b"\xee" * (slot + 1)
        with counts_misuse(pool), pytest.raises(ValueError, match="zs_obj_write.*EINVAL"):
            pool.write(h, over)
        with counts_misuse(pool), pytest.raises(ValueError, match="zs_obj_read_begin.*EINVAL"):
            pool.read(h, slot + 1)
        with counts_misuse(pool):
            ctypes.set_errno(0)
            assert not LIB.zs_obj_read_begin(pool, h, 2**40, None)
            assert ctypes.get_errno() == errno.EINVAL
        with counts_misuse(pool):
            ctypes.set_errno(0)
            LIB.zs_obj_read_end(pool, h, slot + 1, ctypes.create_string_buffer(slot + 1))
            assert ctypes.get_errno() == errno.EINVAL
    intact(pool, objs)  # nothing was copied


def test_dense_slot_boundary_is_exact(dense_pool):
    # In the dense layout an object's slot is exactly its size, with its neighbours
    # packed right after it: writes, reads and maps reach its last byte, never past it.
    p = dense_pool
    sizes = (1, 15, 16, 100, 1000, 2047, 3000, 4000, 4096)
    hs = [p.malloc(size) for size in sizes]  # end to end, in this order
    data = {h: os.urandom(size) for h, size in zip(hs, sizes)}
    for h, d in data.items():
        p.write(h, d)
    for h, size in zip(hs, sizes):
        assert p.read(h, size) == data[h]
        with p.map(h, "ro") as mv:
            assert len(mv) == size and mv == data[h]
        ptr = LIB.zs_map_object(p, h, 1)
        assert ptr and ctypes.string_at(ptr, size) == data[h]
        LIB.zs_unmap_object(p, h)
        with counts_misuse(p), pytest.raises(ValueError, match="zs_obj_write.*EINVAL"):
            p.write(h, data[h] + b"!")
        with counts_misuse(p), pytest.raises(ValueError, match="zs_obj_read_begin.*EINVAL"):
            p.read(h, size + 1)
    for h in hs:  # nothing spilled into a neighbour
        assert p.read(h, len(data[h])) == data[h]
    for h in hs:
        p.free(h)


# -- NULL buffers ------------------------------------------------------------------


def test_null_handle_mem_with_length(pool, objs):
    h, data = next(iter(objs.items()))
    with counts_misuse(pool):
        ctypes.set_errno(0)
        LIB.zs_obj_write(pool, h, None, 5)
        assert ctypes.get_errno() == errno.EINVAL
    with counts_misuse(pool):
        ctypes.set_errno(0)
        LIB.zs_obj_read_end(pool, h, 5, None)
        assert ctypes.get_errno() == errno.EINVAL
    # A length of 0 with NULL is no misuse.
    with counts_misuse(pool, 0):
        ctypes.set_errno(0)
        LIB.zs_obj_write(pool, h, None, 0)
        assert ctypes.get_errno() == 0
    intact(pool, objs)


def test_null_local_copy_when_one_is_needed(make_pool):
    # Objects straddling two frames that are not adjacent in memory must be copied to
    # read them. Free frames come back in ascending order, so after freeing every other
    # one-frame zspage, a new multi-frame zspage is built from non-adjacent frames.
    # The construction counts 4 KiB frames.
    p = make_pool("straddle", layout="kernel", frame_size=4096)
    singles = [p.malloc(4096) for _ in range(40)]
    for h in singles[::2]:
        p.free(h)
    size = next(s for s in range(1000, 2000) if p.class_info(p.lookup_class_index(s))["pages_per_zspage"] > 1)
    c = p.class_info(p.lookup_class_index(size))
    hs = [p.malloc(size) for _ in range(c["objs_per_zspage"])]
    _reads_with_and_without_a_copy(p, hs, size)


def test_dense_null_local_copy_when_one_is_needed(make_pool):
    # A dense zspage shortens to the frames the page limit leaves: with a limit of 17,
    # a full zspage of 16 frames (0..15) is followed by one of 1 frame (16). Freed in
    # that order, the frames pop back as 16, 0, 1, ..., so the next zspage's first two
    # frames are not adjacent and the object straddling them must be copied.
    # The construction counts 4 KiB frames.
    p = make_pool("straddle", max_pages=17, frame_size=4096)
    first = [p.malloc(4096) for _ in range(16)]
    short = p.malloc(4096)
    c = p.class_info(p.lookup_class_index(4096))
    assert p.total_pages == c["pages_used"] == 17 and sum(c["zspages"]) == 2
    for h in first:
        p.free(h)
    p.free(short)
    assert p.total_pages == 0
    size = 1000
    hs = [p.malloc(size) for _ in range(16 * 4096 // size)]
    assert p.total_pages == 16
    # Only the object straddling the zspage's first two frames; the others are read in
    # place (or lie in one frame).
    assert _reads_with_and_without_a_copy(p, hs, size) == 1


def _reads_with_and_without_a_copy(p, hs, size):
    data = {h: os.urandom(size) for h in hs}
    copied = 0
    for h in hs:
        p.write(h, data[h])
        buf = ctypes.create_string_buffer(size)
        mem = LIB.zs_obj_read_begin(p, h, size, buf)
        assert mem and ctypes.string_at(mem, size) == data[h]
        is_copy = mem == ctypes.addressof(buf)
        LIB.zs_obj_read_end(p, h, size, mem)
        ctypes.set_errno(0)
        before = p.info()["misuse_events"]
        mem = LIB.zs_obj_read_begin(p, h, size, None)
        if is_copy:
            copied += 1
            assert not mem and ctypes.get_errno() == errno.EINVAL
            assert p.info()["misuse_events"] == before + 1
        else:
            assert mem and ctypes.string_at(mem, size) == data[h]
            LIB.zs_obj_read_end(p, h, size, mem)
        # Copied or not, maps see and store the object.
        with p.map(h, "rw") as mv:
            assert bytes(mv) == data[h]
            mv[size // 2 :] = bytes(size - size // 2)
        data[h] = data[h][: size // 2] + bytes(size - size // 2)
        with p.map(h, "wo") as mv:
            mv[:] = data[h][::-1]
        data[h] = data[h][::-1]
    assert copied > 0, "the construction gave no object that needs a copy"
    p.check()
    for h in hs:
        assert p.read(h, size) == data[h]
    return copied


def test_unknown_map_mode(pool, objs):
    h = next(iter(objs))
    ctypes.set_errno(0)
    assert not LIB.zs_map_object(pool, h, 7)
    assert ctypes.get_errno() == errno.EINVAL
    with pytest.raises(ValueError):
        pool.map(h, "x")
    pool.free(h)  # nothing was left mapped
    del objs[h]
    intact(pool, objs)


# -- abort on misuse -----------------------------------------------------------------


def test_abort_on_misuse_env(tmp_path):
    code = (
        "import zsmalloc\n"
        "p = zsmalloc.Pool('abort')\n"
        "h = p.malloc(10)\n"
        "p.free(h)\n"
        "print(hex(h), flush=True)\n"
        "p.free(h)\n"
        "print('not aborted', flush=True)\n"
    )
    r = run_python(code, cwd=tmp_path, ZSMALLOC_ABORT_ON_MISUSE="1")
    assert r.returncode != 0 and "not aborted" not in r.stdout
    h = r.stdout.split()[0]
    lines = [line for line in r.stderr.splitlines() if "zs_free" in line]
    assert len(lines) == 1 and h in lines[0], r.stderr
