"""A careless or hostile caller: ints past their C type, views kept past their block,
map() objects dropped inside it. Each test is a case that once gave a wrong answer
without an error, or killed the interpreter; those that could crash run in a child
interpreter, so that a crash fails the test instead of ending the run."""

import ctypes
import gc
import threading

import pytest

import zsmalloc
from zsutil import run_python

U64 = 2**64


# -- ints past their C type ----------------------------------------------------------


def test_sizes_and_lengths_past_size_t_are_refused(pool):
    # ctypes passes an int modulo 2**64: this once allocated 100 bytes, and read
    # 50 bytes and then none.
    before = pool.info()
    with pytest.raises(ValueError, match="size_t"):
        pool.malloc(U64 + 100)
    assert pool.info()["live_objects"] == before["live_objects"] == 0
    h = pool.malloc(100)
    pool.write(h, bytes(range(100)))
    for n in (U64 + 50, U64, U64 + 100, -1, -U64 + 50):
        with pytest.raises(ValueError, match="size_t"):
            pool.read(h, n)
    assert pool.read(h, 100) == bytes(range(100))
    assert pool.info()["misuse_events"] == before["misuse_events"], "refused before any C call"


def _int_arguments(pool, h):
    """Every int argument of every method, as (call, C type): call(v) passes v there."""
    return [
        (lambda v: pool.malloc(v), "size_t"),
        (lambda v: pool.free(v), "unsigned long"),
        (lambda v: pool.write(v, b"x"), "unsigned long"),
        (lambda v: pool.read(v, 1), "unsigned long"),
        (lambda v: pool.read(h, v), "size_t"),
        (lambda v: pool.map(v, "ro").__enter__(), "unsigned long"),
        (lambda v: pool.lookup_class_index(v), "unsigned int"),
        (lambda v: pool.class_info(v), "unsigned int"),
    ] + [
        (lambda v, f=field: zsmalloc.Pool(**{f: v}), "unsigned long" if ctype is ctypes.c_ulong else "unsigned int")
        for field, ctype, default, _ in zsmalloc._CONFIG_FIELDS
        if isinstance(default, int)
    ]


def test_every_int_argument_is_checked_against_its_c_type(pool):
    h = pool.malloc(10)
    pool.write(h, b"0123456789")
    bits = {"size_t": 64, "unsigned long": 64, "unsigned int": 32}
    for call, ctype in _int_arguments(pool, h):
        top = 2 ** bits[ctype]
        # Each of these is a valid value modulo 2**bits: truncated, it would be a call.
        for v in (top, top + 1, top + 10, top + h, -1, -top + 1, 2**200):
            with pytest.raises(ValueError, match=ctype):
                call(v)
        for v in (True, 1.0, "1", None, b"1"):
            with pytest.raises(TypeError):
                call(v)
    assert pool.info()["live_objects"] == 1 and pool.read(h, 10) == b"0123456789"


def test_map_mode_and_nogrow_are_checked(pool):
    h = pool.malloc(10)
    for bad in ("RW", "", "rwx"):
        with pytest.raises(ValueError, match="mode"):
            pool.map(h, bad)
    for bad in (0, 1, None, ["rw"], b"rw"):
        with pytest.raises(TypeError, match="mode"):
            pool.map(h, bad)
    for bad in (1, "yes", None, 2**64):
        with pytest.raises(TypeError, match="nogrow"):
            pool.malloc(10, nogrow=bad)
    pool.free(h)  # nothing was left mapped


# -- views kept past their block -----------------------------------------------------


def test_slice_kept_past_the_block_never_writes_the_pool(pool):
    # The slice once pointed into the pool: after its object was freed, writing it
    # changed objects allocated later in the same place.
    h = pool.malloc(256)
    pool.write(h, b"a" * 256)
    try:
        with pool.map(h, "rw") as mv:
            kept = mv[:200]
    except BufferError:
        pass  # how the block once reported the slice; the harm was after it
    pool.free(h)
    later = {}
    for i in range(64):
        g = pool.malloc(256)
        pool.write(g, bytes([i]) * 256)
        later[g] = bytes([i]) * 256
    kept[:] = b"\xee" * 200
    for g, data in later.items():
        assert pool.read(g, 256) == data
    assert bytes(kept) == b"\xee" * 200
    pool.check()


CHILD_PRELUDE = """
import zsmalloc
p = zsmalloc.Pool("child", layout=LAYOUT)
hs = [p.malloc(3000) for _ in range(2000)]
h = hs[-1]
p.write(h, b"k" * 3000)
try:
    with p.map(h, "rw") as mv:
        kept = mv[:3000]
except BufferError:
    pass
"""


@pytest.mark.parametrize("end", ["close", "release_arena"])
def test_slice_read_after_its_memory_is_gone(end, layout, tmp_path):
    # The slice once pointed into the pool: reading it after close() or after
    # release_arena() unmapped that memory killed the interpreter.
    ending = {
        "close": "p.close()",
        "release_arena": "for g in hs: p.free(g)\nassert p.release_arena() > 0",
    }[end]
    code = CHILD_PRELUDE.replace("LAYOUT", repr(layout)) + ending + """
assert bytes(kept) == b"k" * 3000
kept[:10] = b"0123456789"
print("survived", bytes(kept[:12]))
"""
    r = run_python(code, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, f"child exited with {r.returncode}: {r.stderr}"
    assert r.stdout.strip() == "survived b'0123456789kk'"


# -- map() objects dropped inside their block ------------------------------------------


def test_dropped_map_does_not_keep_close_refused(make_pool):
    # close() once counted the dropped mapping as open for good.
    p = make_pool("dropped")
    h = p.malloc(64)
    p.write(h, b"d" * 64)
    m = p.map(h, "rw")
    view = m.__enter__()
    view[:4] = b"gone"
    with pytest.raises(zsmalloc.BusyError):
        p.close()  # the block is open
    with pytest.raises(zsmalloc.BusyError):
        p.free(h)  # and the object pinned
    del m
    gc.collect()
    assert p.read(h, 64) == b"d" * 64, "a dropped block stores nothing"
    p.free(h)  # the mapping was ended by this thread's next call
    p.check()
    p.close()
    assert p.closed and bytes(view[:4]) == b"gone"


def test_dropped_map_right_before_close(make_pool):
    p = make_pool("dropped-then-closed")
    h = p.malloc(64)
    m = p.map(h, "ro")
    m.__enter__()
    del m
    p.close()
    assert p.closed


def test_map_dropped_on_another_thread(make_pool):
    # The mapping belongs to its thread: it is ended by that thread's next call,
    # never from the thread that dropped it (which the library would refuse).
    p = make_pool("cross")
    h = p.malloc(64)
    held, dropped, done = threading.Event(), threading.Event(), threading.Event()
    box = []
    errors = []

    def mapper():
        try:
            m = p.map(h, "rw")
            m.__enter__()
            box.append(m)
            del m
            held.set()
            assert dropped.wait(10)
            p.read(h, 1)  # the next call of this thread ends the mapping
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=mapper)
    t.start()
    assert held.wait(10)
    before = p.info()["misuse_events"]
    box.clear()  # the last reference: dropped on this thread
    gc.collect()
    with pytest.raises(zsmalloc.BusyError):
        p.free(h)  # still mapped by its own thread
    dropped.set()
    assert done.wait(10)
    t.join(10)
    assert not errors, errors
    p.free(h)
    assert p.info()["misuse_events"] == before + 1, "only the refused free was misuse"
    p.close()


def test_mappings_of_one_handle_end_in_any_order(pool):
    # zs_unmap_object ends the thread's most recent mapping of a handle. Read-only
    # blocks of one handle share the object and their mappings are alike, so they may
    # end in any order, each view whole until its own block ends.
    h = pool.malloc(64)
    pool.write(h, b"0" * 64)
    a = pool.map(h, "ro")
    va = a.__enter__()
    b = pool.map(h, "ro")
    vb = b.__enter__()
    assert bytes(va) == bytes(vb) == b"0" * 64
    a.__exit__(None, None, None)
    assert bytes(vb) == b"0" * 64
    with pytest.raises(zsmalloc.BusyError):
        pool.free(h)  # b's block still holds it
    with pytest.raises(zsmalloc.BusyError):
        pool.write(h, b"x")  # and no one may write it
    b.__exit__(None, None, None)
    # A writable block is its object's only mapping: a second block of the handle, of
    # any mode, is refused and changes nothing; the first stores its bytes when it ends.
    with pool.map(h, "rw") as w:
        w[:1] = b"a"
        for mode in ("rw", "wo", "ro"):
            with pytest.raises(zsmalloc.BusyError):
                with pool.map(h, mode) as mv:
                    mv[1:2] = b"b"  # never reached
    assert pool.read(h, 3) == b"a00"
    assert pool.info()["misuse_events"] == 1, "only the refused free was misuse"
    pool.free(h)
    pool.check()


def test_map_dropped_under_a_later_block_of_its_handle(pool):
    h = pool.malloc(64)
    pool.write(h, b"0" * 64)
    # Read-only blocks share the object: the older one, dropped under the later one,
    # is ended by the next call, and the later block holds the object still.
    m = pool.map(h, "ro")
    m.__enter__()
    with pool.map(h, "ro") as mv:
        del m
        gc.collect()
        assert pool.read(h, 4) == b"0000"  # this call ends the dropped mapping
        with pytest.raises(zsmalloc.BusyError):
            pool.free(h)  # the block's mapping holds it still
        assert bytes(mv[:4]) == b"0000"
    # A writable block is its object's only mapping: no later block opens under it.
    # Dropped, it is ended by its thread's next call (here the later block's own),
    # storing nothing.
    m = pool.map(h, "rw")
    m.__enter__()[:4] = b"lost"
    for mode in ("ro", "rw", "wo"):
        with pytest.raises(zsmalloc.BusyError):
            pool.map(h, mode).__enter__()
    del m
    gc.collect()
    with pool.map(h, "rw") as mv:
        assert bytes(mv[:4]) == b"0000"
        mv[:4] = b"late"
    assert pool.read(h, 4) == b"late"
    pool.free(h)
    pool.check()


def test_copied_mappings_store_only_what_a_block_left(make_pool):
    # An object over two frames that are not adjacent is mapped through a copy, which
    # the library stores back when a read-write or write-only mapping ends. A dropped
    # block must store nothing, whenever its mapping is ended.
    p, h = copied_object(make_pool)
    other, oh = copied_object(make_pool)
    other.write(oh, b"\x99" * 1000)
    data = bytes(range(256)) * 4
    p.write(h, data[:1000])
    with p.map(h, "rw") as mv:
        assert mv == data[:1000]
        mv[:4] = b"rw!!"
    assert p.read(h, 1000) == b"rw!!" + data[4:1000]
    for mode in ("wo", "rw"):
        # The library reuses a thread's copy buffers: the one the next mapping gets
        # now holds another object's bytes, which a mapping that did not read the
        # object in would store back.
        with other.map(oh, "ro") as mv:
            assert mv == b"\x99" * 1000
        m = p.map(h, mode)
        v = m.__enter__()
        v[:] = b"\xdd" * 1000
        del m, v
        gc.collect()
        assert p.read(h, 1000) == b"rw!!" + data[4:1000], mode
    # Dropped while a later block is refused for it, then ended by that block's own
    # call: the later block sees and stores only its own bytes.
    outer = p.map(h, "wo")
    outer.__enter__()[:] = b"\xee" * 1000
    with pytest.raises(zsmalloc.BusyError):
        p.map(h, "wo").__enter__()
    del outer
    gc.collect()
    with p.map(h, "rw") as mv:
        assert mv == b"rw!!" + data[4:1000]
        mv[:] = b"\x11" * 1000
    assert p.read(h, 1000) == b"\x11" * 1000
    p.free(h)
    p.check()


def copied_object(make_pool):
    """A new dense pool and an object of it whose mapping is a copy. With a page limit of
    17, a zspage of 16 frames and one of 1 frame are made; freed, their frames come
    back as 16, 0, 1, ..., so the next zspage's first two frames are not adjacent.
    The construction counts 4 KiB frames."""
    p = make_pool("straddle", max_pages=17, frame_size=4096)
    first = [p.malloc(4096) for _ in range(17)]
    for g in first:
        p.free(g)
    for h in [p.malloc(1000) for _ in range(16 * 4096 // 1000)]:
        buf = ctypes.create_string_buffer(1000)
        mem = zsmalloc._lib.zs_obj_read_begin(p, h, 1000, buf)
        zsmalloc._lib.zs_obj_read_end(p, h, 1000, mem)
        if mem == ctypes.addressof(buf):
            return p, h
    raise AssertionError("the construction gave no object that is read through a copy")
