"""The Pool API: configuration, objects, maps, statistics, errors, closing."""

import array
import ctypes
import errno
import gc
import os
import subprocess
import sys
import threading
import time

import pytest

import zsmalloc
from zsutil import LIB, ROOT, dense_chain


# -- creation and configuration --------------------------------------------------------


def test_create_and_name(make_pool):
    p = make_pool("cache")
    assert p.name == "cache" and not p.closed
    assert p.config["layout"] == "dense" and p.config["max_pages"] == 0
    assert p.total_pages == 0
    assert make_pool().name is None
    assert make_pool(b"raw").name == "raw"
    assert "cache" in repr(p)


def test_config_keywords_are_checked(make_pool):
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_page'"):
        zsmalloc.Pool(max_page=3)
    with pytest.raises(TypeError):
        zsmalloc.Pool("a", 5)  # the configuration is keyword-only
    with pytest.raises(ValueError, match="layout"):
        zsmalloc.Pool(layout="sparse")
    with pytest.raises(TypeError):
        zsmalloc.Pool(layout=1)
    with pytest.raises(ValueError):
        zsmalloc.Pool(max_pages=-1)
    with pytest.raises(ValueError):
        zsmalloc.Pool(chain_size=2**32)
    with pytest.raises(TypeError):
        zsmalloc.Pool(chain_size=4.0)
    with pytest.raises(TypeError):
        zsmalloc.Pool(name=3)
    with pytest.raises(ValueError, match="NUL"):
        zsmalloc.Pool("a\0b")


def test_prefault_is_0_or_1(make_pool):
    with pytest.raises(ValueError, match=r"zs_create_pool_with\(\): EINVAL.*prefault=2"):
        zsmalloc.Pool(prefault=2)
    p = make_pool(prefault=1)
    assert p.config["prefault"] == 1
    data = [bytes((i + k) % 251 for k in range(50 + i % 900)) for i in range(2000)]
    handles = []
    for d in data:
        h = p.malloc(len(d))
        p.write(h, d)
        handles.append(h)
    assert [p.read(h, len(d)) for h, d in zip(handles, data)] == data
    p.check()


@pytest.mark.parametrize("chain", [3, 17, 1000])
def test_chain_size_refused_by_the_library(chain):
    with pytest.raises(ValueError, match=r"zs_create_pool_with\(\): EINVAL.*chain_size=" + str(chain)):
        zsmalloc.Pool(chain_size=chain)


@pytest.mark.parametrize("chain", [4, 8, 16])
def test_chain_size_bounds_zspages(make_pool, layout, chain):
    p = make_pool(chain_size=chain, layout=layout)
    frames = set()
    for s in range(1, p.max_object_size + 1, 7):
        c = p.class_info(p.lookup_class_index(s))
        assert 1 <= c["pages_per_zspage"] <= chain
        frames.add(c["pages_per_zspage"])
    if layout == "dense":
        assert max(frames) == dense_chain(p, chain)
    else:
        assert max(frames) > 1


@pytest.mark.parametrize("chain,huge", [(4, 3257), (8, 3625), (16, 3833)])
def test_kernel_layout_huge_class_size(make_pool, chain, huge):
    # The kernel's figures for 4 KiB pages (mm/zsmalloc.c, CONFIG_ZSMALLOC_CHAIN_SIZE),
    # so 4 KiB frames whatever the suite's frame size.
    assert make_pool(layout="kernel", chain_size=chain, frame_size=4096).huge_class_size == huge


def test_huge_class_size(make_pool):
    pool = make_pool(layout="kernel")
    huge, top = pool.huge_class_size, pool.max_object_size
    assert 0 < huge <= top
    for s in (huge, huge + 1, top):
        if s <= top:
            c = pool.class_info(pool.lookup_class_index(s))
            assert (c["pages_per_zspage"], c["objs_per_zspage"]) == (1, 1), s
    c = pool.class_info(pool.lookup_class_index(huge - 1))
    assert (c["pages_per_zspage"], c["objs_per_zspage"]) != (1, 1)


@pytest.mark.parametrize("chain", [0, 4, 8, 16])
def test_dense_huge_class_size(make_pool, chain):
    # The dense layout has no huge class: only a whole page is "huge", and page-sized
    # objects share zspages of the chain's length like any other.
    pool = make_pool(chain_size=chain)
    frame = pool.frame_size
    assert pool.huge_class_size == pool.max_object_size == frame
    c = pool.class_info(pool.lookup_class_index(frame))
    assert (c["class_size"], c["pages_per_zspage"], c["objs_per_zspage"]) == (frame, dense_chain(pool, chain), 0)


def test_layouts_differ(make_pool):
    # The figures (655 objects in 16 frames) are those of 4 KiB frames.
    dense, kernel = make_pool(layout="dense", frame_size=4096), make_pool(layout="kernel", frame_size=4096)
    # The kernel layout keeps an 8-byte header in every non-huge object and starts at 32.
    small_k = kernel.class_info(kernel.lookup_class_index(1))["class_size"]
    assert small_k == 32
    assert kernel.class_info(kernel.lookup_class_index(100))["class_size"] >= 108
    # The dense layout has no size classes: one lane takes every size, and an object
    # takes exactly its size, so 655 objects of 100 bytes fit one zspage of 16 frames.
    lane = dense.lookup_class_index(1)
    assert dense.lookup_class_index(100) == dense.lookup_class_index(4096) == lane
    c = dense.class_info(lane)
    assert (c["class_size"], c["objs_per_zspage"]) == (4096, 0)
    n = 16 * 4096 // 100
    for p in (dense, kernel):
        for _ in range(n):
            p.malloc(100)
    assert dense.total_pages == 16
    assert kernel.total_pages > dense.total_pages


def test_raw_config_struct_sizes():
    # A config struct declaring less than its size field is refused; one declaring just
    # the size field is the default configuration.
    cfg = zsmalloc.zs_pool_config()
    cfg.size = 4
    ctypes.set_errno(0)
    assert not LIB.zs_create_pool_with(b"x", ctypes.byref(cfg))
    assert ctypes.get_errno() == errno.EINVAL
    cfg.size = ctypes.sizeof(ctypes.c_size_t)
    cfg.layout = 7  # beyond the declared size: not read
    p = LIB.zs_create_pool_with(b"x", ctypes.byref(cfg))
    assert p
    LIB.zs_destroy_pool(p)
    cfg.size = ctypes.sizeof(cfg)
    ctypes.set_errno(0)
    assert not LIB.zs_create_pool_with(b"x", ctypes.byref(cfg))
    assert ctypes.get_errno() == errno.EINVAL
    p = LIB.zs_create_pool_with(None, None)
    assert p
    LIB.zs_destroy_pool(p)
    p = LIB.zs_create_pool(None)
    assert p
    LIB.zs_destroy_pool(p)
    LIB.zs_destroy_pool(None)


# -- objects -------------------------------------------------------------------------


def test_quick_start(pool):
    data = os.urandom(1200)
    h = pool.malloc(1200)
    assert isinstance(h, int) and h != 0
    pool.write(h, data)
    assert pool.read(h, len(data)) == data
    with pool.map(h, "rw") as mv:
        assert isinstance(mv, memoryview) and len(mv) == 1200 and not mv.readonly
        assert bytes(mv) == data
        mv[0:4] = b"head"
    assert pool.read(h, 1200) == b"head" + data[4:]
    assert pool.size_of(h) == 1200
    pool.free(h)
    assert pool.size_of(h) is None
    assert pool.info()["live_objects"] == 0


def test_handles_are_distinct_and_stable(pool, rng):
    hs = [pool.malloc(rng.randint(1, 4096)) for _ in range(300)]
    assert len(set(hs)) == 300
    assert all(h < 2**64 - 4095 for h in hs)


@pytest.mark.parametrize(
    "make",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: memoryview(bytearray(b)),
        lambda b: memoryview(b).toreadonly(),
        lambda b: array.array("B", b),
        lambda b: (ctypes.c_char * len(b)).from_buffer_copy(b),
    ],
    ids=["bytes", "bytearray", "memoryview", "mv-writable", "mv-readonly", "array", "ctypes"],
)
def test_write_accepts_bytes_like(dense_pool, make):
    data = bytes(range(256)) * 2
    h = dense_pool.malloc(len(data))
    dense_pool.write(h, make(data))
    assert dense_pool.read(h, len(data)) == data


def test_write_non_contiguous_and_wide_items(dense_pool):
    h = dense_pool.malloc(400)
    src = bytes(range(200)) * 4
    dense_pool.write(h, memoryview(src)[::2])
    assert dense_pool.read(h, 400) == src[::2]
    a = array.array("I", range(100))
    dense_pool.write(h, a)
    assert dense_pool.read(h, 400) == a.tobytes()
    with pytest.raises(TypeError):
        dense_pool.write(h, "text")


def test_partial_and_empty_access(pool):
    h = pool.malloc(100)
    pool.write(h, b"x" * 100)
    pool.write(h, b"abc")
    assert pool.read(h, 5) == b"abcxx"
    pool.write(h, b"")
    assert pool.read(h, 0) == b""
    assert pool.read(h, 100) == b"abc" + b"x" * 97


def test_bad_sizes(pool):
    with pytest.raises(ValueError, match=r"zs_malloc\(\): EINVAL"):
        pool.malloc(0)
    with pytest.raises(ValueError, match=r"zs_malloc\(\): ENOSPC"):
        pool.malloc(pool.max_object_size + 1)
    with pytest.raises(ValueError, match=r"ENOSPC"):
        pool.malloc(2**63)
    with pytest.raises(ValueError):
        pool.malloc(-1)
    with pytest.raises(TypeError):
        pool.malloc(10.0)
    with pytest.raises(TypeError):
        pool.malloc(True)
    with pytest.raises(ValueError):
        pool.read(pool.malloc(8), -1)
    assert pool.info()["live_objects"] == 1


def test_handle_arguments_are_checked(pool):
    with pytest.raises(TypeError):
        pool.free("0x10")
    with pytest.raises(ValueError):
        pool.free(-1)
    with pytest.raises(ValueError):
        pool.read(2**64, 1)


def test_free_of_zero_and_error_handles_is_a_noop(pool):
    before = pool.info()
    pool.free(0)
    pool.free(2**64 - errno.ENOMEM)
    assert pool.info() == before


def test_raw_unknown_flags(pool):
    h = LIB.zs_malloc(pool, 16, 2)
    assert h == 2**64 - errno.EINVAL
    h = LIB.zs_malloc(pool, 16, zsmalloc.ALLOC_NOGROW | 4)
    assert h == 2**64 - errno.EINVAL
    assert pool.total_pages == 0


def test_lookup_class_index(pool):
    last = -1
    for s in range(1, pool.max_object_size + 1):
        i = pool.lookup_class_index(s)
        assert i >= last, "class indices grow with the size"
        last = i
    for bad in (0, pool.max_object_size + 1, 2**32 - 1):
        with pytest.raises(ValueError, match="zs_lookup_class_index"):
            pool.lookup_class_index(bad)
    for bad in (-1, 2**32):
        with pytest.raises(ValueError):
            pool.lookup_class_index(bad)


# -- mappings ------------------------------------------------------------------------


def test_map_modes(pool):
    data = os.urandom(777)
    h = pool.malloc(777)
    pool.write(h, data)
    with pool.map(h, "ro") as mv:
        assert mv.readonly and bytes(mv) == data
        with pytest.raises(TypeError):
            mv[0] = 1
    with pool.map(h) as mv:  # rw is the default
        assert not mv.readonly
        mv[-3:] = b"end"
    assert pool.read(h, 777) == data[:-3] + b"end"
    new = os.urandom(777)
    with pool.map(h, "wo") as mv:
        assert not mv.readonly and len(mv) == 777
        mv[:] = new
    assert pool.read(h, 777) == new
    with pytest.raises(ValueError, match="mode"):
        pool.map(h, "rx")


def test_map_released_and_unmapped_on_exception(pool):
    h = pool.malloc(64)
    pool.write(h, b"a" * 64)
    with pytest.raises(KeyError):
        with pool.map(h, "rw") as mv:
            mv[:1] = b"b"
            raise KeyError("inside")
    with pytest.raises(ValueError):
        mv[0]  # released
    assert pool.read(h, 2) == b"ba", "stored back at unmap"
    pool.free(h)  # not mapped any more: no BusyError


def test_map_view_outliving_the_block(pool):
    # A slice kept past the block is a copy: it reads the bytes the block ended with,
    # and writing it reaches neither the object nor the pool.
    h = pool.malloc(64)
    pool.write(h, b"q" * 64)
    with pool.map(h, "rw") as mv:
        mv[:2] = b"ab"
        head = mv[:4]
    assert bytes(head) == b"abqq"
    head[:] = b"ZZZZ"
    assert pool.read(h, 64) == b"ab" + b"q" * 62
    pool.free(h)  # unmapped all the same
    with pool.map(pool.malloc(64), "ro") as mv:
        tail = mv[60:]
    assert tail.readonly


def test_map_context_manager_is_single_use(pool):
    h = pool.malloc(10)
    m = pool.map(h)
    with m:
        pass
    with pytest.raises(RuntimeError):
        with m:
            pass
    pool.free(h)


def test_sixteen_mappings_on_one_thread(pool, rng):
    import contextlib

    hs = [pool.malloc(rng.randint(1, 4096)) for _ in range(20)]
    data = {h: os.urandom(pool.size_of(h)) for h in hs}
    for h in hs:
        pool.write(h, data[h])
    with contextlib.ExitStack() as stack:
        views = [stack.enter_context(pool.map(h, "rw")) for h in hs]
        for h, mv in zip(hs, views):
            assert bytes(mv) == data[h]
        for h, mv in zip(hs, views):
            mv[0] = 0xAB
            data[h] = b"\xab" + data[h][1:]
        for h in hs:
            with pytest.raises(zsmalloc.BusyError):
                pool.free(h)
    for h in hs:
        assert pool.read(h, len(data[h])) == data[h]
        pool.free(h)
    pool.check()


def test_same_object_mapped_twice(pool):
    h = pool.malloc(32)
    pool.write(h, b"z" * 32)
    # Read-only mappings share the object; beside them, no one may write it.
    with pool.map(h, "ro") as a, pool.map(h, "ro") as b:
        assert bytes(a) == bytes(b) == b"z" * 32
        for mode in ("rw", "wo"):
            with pytest.raises(zsmalloc.BusyError):
                with pool.map(h, mode):
                    pass
        with pytest.raises(zsmalloc.BusyError):
            pool.write(h, b"y")
    # A writable mapping holds the object alone, refusing this thread too.
    with pool.map(h, "rw") as w:
        for mode in ("ro", "rw", "wo"):
            with pytest.raises(zsmalloc.BusyError):
                with pool.map(h, mode):
                    pass
        with pytest.raises(zsmalloc.BusyError):
            pool.read(h, 1)
        with pytest.raises(zsmalloc.BusyError):
            pool.write(h, b"y")
        w[0:1] = b"w"
    assert pool.read(h, 32) == b"w" + b"z" * 31
    assert pool.info()["misuse_events"] == 0, "refusals for a held object are not misuse"
    pool.free(h)


def test_map_unknown_to_this_pool_object(make_pool):
    p = make_pool()
    h = LIB.zs_malloc(p, 10, 0)  # allocated behind the binding's back
    with pytest.raises(ValueError, match="not allocated through this Pool"):
        with p.map(h):
            pass
    p.free(h)  # the failed map was undone


# -- statistics ----------------------------------------------------------------------


def test_info_stats_and_check(pool):
    i = pool.info()
    assert set(i) == {f for f, _ in zsmalloc.zs_pool_info._fields_} - {"size"}
    assert i["live_objects"] == 0 and i["requested_bytes"] == 0 and i["total_pages"] == 0
    assert i["meta_bytes"] > 0
    assert pool.stats() == {"pages_compacted": i["pages_compacted"]}
    c = pool.class_info(pool.lookup_class_index(100))
    assert set(c) == {f for f, _ in zsmalloc.zs_class_info._fields_} - {"size"}
    assert isinstance(c["zspages"], list) and len(c["zspages"]) == zsmalloc.NR_FULLNESS_GROUPS
    pool.check()


def test_raw_sized_info_writes_only_declared_bytes(pool):
    pool.malloc(50)
    pool.malloc(60)
    ul = ctypes.sizeof(ctypes.c_ulong)
    for fn, cls, args in (
        (LIB.zs_pool_info, zsmalloc.zs_pool_info, ()),
        (LIB.zs_class_info, zsmalloc.zs_class_info, (pool.lookup_class_index(50),)),
    ):
        buf = (ctypes.c_ubyte * ctypes.sizeof(cls))(*([0xAA] * ctypes.sizeof(cls)))
        s = cls.from_buffer(buf)
        s.size = 8 + ul  # only the first field after size
        assert fn(pool, *args, ctypes.byref(s)) == 0
        assert s.size == 8 + ul, "size left as the caller set it"
        assert any(b != 0xAA for b in bytes(buf[8 : 8 + ul]))
        assert bytes(buf[8 + ul :]) == b"\xaa" * (len(buf) - 8 - ul), "nothing written past size"
        s.size = 4
        assert fn(pool, *args, ctypes.byref(s)) == -errno.EINVAL
    s = zsmalloc.zs_pool_info()
    s.size = 8 + ul
    assert LIB.zs_pool_info(pool, ctypes.byref(s)) == 0 and s.live_objects == 2


def test_check_error(pool):
    assert issubclass(zsmalloc.CheckError, RuntimeError)
    pool.check()
    ctypes.set_errno(0)
    assert LIB.zs_pool_check(None) == -errno.EINVAL


class _CheckReturns:
    """The library with zs_pool_check answering `r`: the binding's reading of each
    answer, whatever makes the library give it."""

    def __init__(self, lib, r):
        self._lib, self._r = lib, r

    def zs_pool_check(self, pool):
        return self._r

    def __getattr__(self, name):
        return getattr(self._lib, name)


@pytest.mark.parametrize(
    "r, exc",
    [(-errno.ENOMEM, MemoryError), (-errno.EUCLEAN, zsmalloc.CheckError), (-errno.EINVAL, zsmalloc.CheckError)],
)
def test_check_answers_become_exceptions(make_pool, monkeypatch, r, exc):
    p = make_pool("check-answers")
    monkeypatch.setattr(zsmalloc, "_lib", _CheckReturns(zsmalloc._lib, r))
    with pytest.raises(exc) as info:
        p.check()
    # An ENOMEM is no verdict on the pool: it is not a CheckError.
    assert isinstance(info.value, zsmalloc.CheckError) == (exc is zsmalloc.CheckError)
    monkeypatch.undo()
    p.check()


# -- errno handling ------------------------------------------------------------------


def test_errno_reset_before_void_calls(pool):
    h = pool.malloc(10)
    with pytest.raises(ValueError):
        pool.free(h + 1)  # leaves EINVAL in errno
    pool.write(h, b"1")  # must not see the stale errno
    pool.free(h)


def test_success_leaves_errno_alone(pool):
    h = LIB.zs_malloc(pool, 300, 0)
    buf = ctypes.create_string_buffer(300)
    for call in (
        lambda: LIB.zs_obj_write(pool, h, b"x" * 300, 300),
        lambda: LIB.zs_obj_read_end(pool, h, 300, LIB.zs_obj_read_begin(pool, h, 300, buf)),
        lambda: (LIB.zs_map_object(pool, h, 0), LIB.zs_unmap_object(pool, h)),
        lambda: LIB.zs_get_total_pages(pool),
        lambda: LIB.zs_free(pool, h),
    ):
        ctypes.set_errno(errno.ERANGE)
        call()
        assert ctypes.get_errno() == errno.ERANGE


def test_error_messages_name_call_handle_and_errno(pool):
    h = pool.malloc(10)
    pool.free(h)
    with pytest.raises(ValueError) as e:
        pool.free(h)
    msg = str(e.value)
    assert "zs_free" in msg and f"0x{h:x}" in msg and "EINVAL" in msg
    with pytest.raises(ValueError) as e:
        pool.read(h, 4)
    assert "zs_obj_read_begin" in str(e.value) and f"0x{h:x}" in str(e.value)


# -- closing -------------------------------------------------------------------------


def test_closed_pool_raises_value_error(make_pool):
    p = make_pool("closing")
    h = p.malloc(100)
    p.close()
    assert p.closed
    p.close()  # idempotent
    for call in (
        lambda: p.malloc(10),
        lambda: p.free(h),
        lambda: p.write(h, b"x"),
        lambda: p.read(h, 1),
        lambda: p.map(h).__enter__(),
        lambda: p.compact(),
        lambda: p.total_pages,
        lambda: p.huge_class_size,
        lambda: p.lookup_class_index(10),
        lambda: p.info(),
        lambda: p.class_info(0),
        lambda: p.stats(),
        lambda: p.check(),
        lambda: p.__enter__(),
    ):
        with pytest.raises(ValueError, match="closed"):
            call()
    with pytest.raises(ctypes.ArgumentError, match="closed"):
        LIB.zs_get_total_pages(p)  # the raw pointer is gone too
    assert "closed" in repr(p)


def test_context_manager_closes():
    with zsmalloc.Pool("ctx") as p:
        p.malloc(10)
    assert p.closed


def test_close_refused_while_mapped(make_pool):
    p = make_pool()
    h = p.malloc(10)
    with p.map(h):
        with pytest.raises(zsmalloc.BusyError):
            p.close()
        assert not p.closed
    p.close()
    assert p.closed


def test_del_closes_without_error():
    p = zsmalloc.Pool("dropped")
    for _ in range(100):
        p.malloc(3000)
    del p
    gc.collect()


def test_close_waits_for_calls_on_other_threads():
    # Threads hammer a pool while it is closed: every call either completes on the
    # live pool or raises ValueError; none runs on a destroyed pool (which would crash).
    p = zsmalloc.Pool("racing")
    outcome = []

    def worker():
        hs = []
        try:
            while True:
                h = p.malloc(200)
                hs.append(h)
                p.write(h, b"w" * 200)
                assert p.read(h, 200) == b"w" * 200
                if len(hs) > 50:
                    p.free(hs.pop(0))
        except ValueError as e:
            outcome.append("closed" in str(e))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    p.close()
    for t in threads:
        t.join(10)
    assert outcome == [True, True, True]


# -- finding the library -------------------------------------------------------------


def _import_in_subprocess(env_lib, pkg_parent=None, code="import zsmalloc; print(zsmalloc.library_path)"):
    env = {k: v for k, v in os.environ.items() if k != "ZSMALLOC_LIB"}
    if env_lib is not None:
        env["ZSMALLOC_LIB"] = env_lib
    env["PYTHONPATH"] = pkg_parent or os.path.join(ROOT, "python")
    cwd = pkg_parent or ROOT  # "python -c" puts the working directory first on sys.path
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_zsmalloc_lib_missing_file_fails_clearly(tmp_path):
    r = _import_in_subprocess(str(tmp_path / "nope.so"))
    assert r.returncode != 0 and "ZSMALLOC_LIB" in r.stderr and "nope.so" in r.stderr


def test_library_next_to_the_package_wins(tmp_path):
    import shutil

    pkg = tmp_path / "zsmalloc"
    pkg.mkdir()
    shutil.copy(os.path.join(ROOT, "python", "zsmalloc", "__init__.py"), pkg)
    shutil.copy(zsmalloc.library_path, pkg / "libzsmalloc.so")
    r = _import_in_subprocess(None, str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(pkg / "libzsmalloc.so")


def test_checkout_target_folder_is_found():
    r = _import_in_subprocess(None)
    assert r.returncode == 0, r.stderr
    found = r.stdout.strip()
    assert found.startswith(os.path.join(ROOT, "target")) or found == os.path.join(
        ROOT, "python", "zsmalloc", "libzsmalloc.so"
    )


def test_signature_lists_the_configuration():
    import inspect

    params = inspect.signature(zsmalloc.Pool).parameters
    assert list(params)[:2] == ["name", "max_pages"]
    assert all(params[f].kind is inspect.Parameter.KEYWORD_ONLY for f, *_ in zsmalloc._CONFIG_FIELDS)
    assert params["layout"].default == "dense"


def test_huge_read_length_is_refused_by_the_library(dense_pool):
    h = dense_pool.malloc(10)
    before = dense_pool.info()["misuse_events"]
    with pytest.raises(ValueError, match="zs_obj_read_begin.*EINVAL"):
        dense_pool.read(h, 10**12)
    assert dense_pool.info()["misuse_events"] == before + 1


def test_obj_size(pool, make_pool, rng):
    sizes = [1, 2, 7, 8, 100, 1000, 3264, 4095, 4096] + [rng.randint(1, 4096) for _ in range(200)]
    hs = [pool.malloc(n) for n in sizes]
    assert [pool.obj_size(h) for h in hs] == sizes
    for h in hs[::2]:
        pool.free(h)
    pool.compact()
    assert [pool.obj_size(h) for h in hs[1::2]] == sizes[1::2]
    misuse = pool.info()["misuse_events"]
    with pytest.raises(ValueError, match=r"zs_obj_size\(handle=0x[0-9a-f]+\): EINVAL"):
        pool.obj_size(hs[0])
    other = make_pool()
    with pytest.raises(ValueError, match="EINVAL"):
        pool.obj_size(other.malloc(10))
    with pytest.raises(ValueError, match="EINVAL"):
        pool.obj_size(0)
    assert pool.info()["misuse_events"] == misuse + 3
