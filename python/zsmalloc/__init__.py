"""zsmalloc: the Linux kernel's compressed-memory allocator, from Python.

A pure-Python (ctypes) binding of libzsmalloc's C ABI (``include/zsmalloc.h``)::

    import zsmalloc

    with zsmalloc.Pool("cache") as pool:
        h = pool.malloc(1200)              # an int handle
        pool.write(h, data)                # any bytes-like, at most the object's slot
                                           # (dense layout: exactly its size)
        assert pool.read(h, len(data)) == data
        with pool.map(h, "rw") as mv:      # a writable memoryview of the object
            mv[0:4] = b"head"
        pool.free(h)

The shared library is found through, in order: the environment variable
``ZSMALLOC_LIB`` (a path to the file), a ``libzsmalloc.so`` next to this package, the
checkout's cargo target folder (``target/release``, then ``target/debug``), and the
system's library path.

Errors: ``ValueError`` for an invalid, stale or foreign handle, a bad size or length
(``EINVAL``, ``ENOSPC``) and for a closed pool; ``MemoryError`` for ``ENOMEM``;
``BusyError`` (an ``OSError`` with errno ``EBUSY``) for an object that is mapped or
being read; ``CheckError`` (a ``RuntimeError``) when ``Pool.check()`` finds a broken
invariant.

Threads: every method may be called from any number of threads at once, except
``close()``, which waits for calls in progress and refuses while mappings are open.
A mapping must be ended on the thread that made it, which the ``with`` statement does.
"""

import ctypes
import ctypes.util
import errno as _errno
import inspect
import operator
import os
import sys
import threading

__all__ = [
    "Pool",
    "BusyError",
    "CheckError",
    "MAX_ALLOC_SIZE",
    "ALLOC_NOGROW",
    "NR_FULLNESS_GROUPS",
    "LAYOUTS",
    "MAP_MODES",
    "MAX_CLASSES",
    "library_path",
    "has_compact",
]

__version__ = "0.1.0"

# Constants of include/zsmalloc.h.
MAX_ALLOC_SIZE = 4096  # ZS_MAX_ALLOC_SIZE
ALLOC_NOGROW = 1  # ZS_ALLOC_NOGROW
NR_FULLNESS_GROUPS = 12  # ZS_NR_FULLNESS_GROUPS
LAYOUTS = {"dense": 0, "kernel": 1}  # enum zs_layout
MAP_MODES = {"rw": 0, "ro": 1, "wo": 2}  # enum zs_mapmode

_ULONG_MAX = 2**64 - 1
_MAX_ERRNO = 4095  # handles >= 2**64 - 4095 are -errno (ZS_IS_ERR)
_UINT_MAX = 2**32 - 1


class BusyError(OSError):
    """The object is mapped or being read (errno ``EBUSY``); nothing was done."""


class CheckError(RuntimeError):
    """``zs_pool_check`` found a broken invariant (the library names it on stderr)."""


# ---------------------------------------------------------------------------------
# Finding and loading the library
# ---------------------------------------------------------------------------------

_LIB_NAME = "libzsmalloc.so"
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    """The places the library is looked for, in order, as (description, path)."""
    env = os.environ.get("ZSMALLOC_LIB")
    if env:
        yield "ZSMALLOC_LIB", env
        return
    yield "next to the package", os.path.join(_PKG_DIR, _LIB_NAME)
    root = os.path.normpath(os.path.join(_PKG_DIR, os.pardir, os.pardir))
    for profile in ("release", "debug"):
        yield "target/" + profile, os.path.join(root, "target", profile, _LIB_NAME)
    yield "the system library path", ctypes.util.find_library("zsmalloc")


def _load():
    tried = []
    for where, path in _candidates():
        if where == "ZSMALLOC_LIB":
            # An explicit choice: load it or fail, never fall back silently.
            try:
                return ctypes.CDLL(path, use_errno=True), path
            except OSError as e:
                raise ImportError(f"zsmalloc: cannot load ZSMALLOC_LIB={path!r}: {e}") from e
        if path is None:
            tried.append(f"{where}: not found")
        elif os.path.isabs(path) and not os.path.exists(path):
            tried.append(f"{path} ({where}): not found")
        else:
            try:
                return ctypes.CDLL(path, use_errno=True), path
            except OSError as e:
                tried.append(f"{path} ({where}): {e}")
    raise ImportError(
        "zsmalloc: libzsmalloc.so not found; build it with `make build` or set ZSMALLOC_LIB.\n  tried:\n    "
        + "\n    ".join(tried)
    )


_lib, library_path = _load()

# ---------------------------------------------------------------------------------
# The C types
# ---------------------------------------------------------------------------------

_c_enum = ctypes.c_uint  # enum zs_mapmode, enum zs_layout (values 0..2)


def _int_field(ctype, lo=0):
    """A converter for an integer config field of C type `ctype`, checked for range."""
    hi = 2 ** (8 * ctypes.sizeof(ctype)) - 1

    def convert(name, value):
        if isinstance(value, bool):
            raise TypeError(f"Pool(): {name} must be an int, not bool")
        try:
            v = operator.index(value)
        except TypeError:
            raise TypeError(f"Pool(): {name} must be an int, not {type(value).__name__}") from None
        if not lo <= v <= hi:
            raise ValueError(f"Pool(): {name}={v} is outside {lo}..{hi}")
        return v

    return convert


def _layout_field(name, value):
    if isinstance(value, str):
        try:
            return LAYOUTS[value]
        except KeyError:
            raise ValueError(f"Pool(): layout must be one of {sorted(LAYOUTS)}, not {value!r}") from None
    raise TypeError(f"Pool(): layout must be a str ({' or '.join(map(repr, LAYOUTS))}), not {type(value).__name__}")


# struct zs_pool_config after its `size`: (field, C type, default, converter). The
# library reads only the `size` bytes a caller declares, so a field appended to the C
# struct is one more line here.
_CONFIG_FIELDS = (
    ("max_pages", ctypes.c_ulong, 0, _int_field(ctypes.c_ulong)),
    ("chain_size", ctypes.c_uint, 0, _int_field(ctypes.c_uint)),
    ("layout", _c_enum, "dense", _layout_field),
    ("auto_compact_pages", ctypes.c_ulong, 0, _int_field(ctypes.c_ulong)),
    ("auto_compact_max_pages_per_sec", ctypes.c_ulong, 0, _int_field(ctypes.c_ulong)),
    ("auto_compact_interval_ms", ctypes.c_uint, 0, _int_field(ctypes.c_uint)),
)


class zs_pool_config(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t)] + [(n, t) for n, t, _, _ in _CONFIG_FIELDS]


class zs_pool_stats(ctypes.Structure):
    _fields_ = [("pages_compacted", ctypes.c_ulong)]


class zs_pool_info(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("live_objects", ctypes.c_ulong),
        ("requested_bytes", ctypes.c_ulong),
        ("total_pages", ctypes.c_ulong),
        ("meta_bytes", ctypes.c_ulong),
        ("pages_compacted", ctypes.c_ulong),
        ("objs_moved", ctypes.c_ulong),
        ("compact_skipped_mapped", ctypes.c_ulong),
        ("misuse_events", ctypes.c_ulong),
        ("frames_migrated", ctypes.c_ulong),
        ("read_copied_bytes", ctypes.c_ulong),
    ]


class zs_class_info(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("class_size", ctypes.c_uint),
        ("pages_per_zspage", ctypes.c_uint),
        ("objs_per_zspage", ctypes.c_uint),
        ("zspages", ctypes.c_ulong * NR_FULLNESS_GROUPS),
        ("objs_allocated", ctypes.c_ulong),
        ("objs_inuse", ctypes.c_ulong),
        ("pages_used", ctypes.c_ulong),
        ("pages_freeable", ctypes.c_ulong),
    ]


MAX_CLASSES = 256  # ZS_MAX_CLASSES


class zs_frame_census(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("arena_frames", ctypes.c_ulong),
        ("committed_frames", ctypes.c_ulong),
        ("top", ctypes.c_ulong),
        ("free_frames", ctypes.c_ulong),
        ("zspage_frames", ctypes.c_ulong),
        ("huge_frames", ctypes.c_ulong),
        ("transit_frames", ctypes.c_ulong),
        ("class_frames", ctypes.c_ulong * MAX_CLASSES),
        ("arena_mapped_bytes", ctypes.c_ulong),
        ("side_table_mapped_bytes", ctypes.c_ulong),
    ]


_pool_p = ctypes.c_void_p  # struct zs_pool * (opaque)
_ul = ctypes.c_ulong
_sz = ctypes.c_size_t
_vp = ctypes.c_void_p
_P = ctypes.POINTER

# Every function of include/zsmalloc.h: name -> (restype, argtypes).
PROTOTYPES = {
    "zs_create_pool": (_pool_p, [ctypes.c_char_p]),
    "zs_create_pool_with": (_pool_p, [ctypes.c_char_p, _P(zs_pool_config)]),
    "zs_destroy_pool": (None, [_pool_p]),
    "zs_malloc": (_ul, [_pool_p, _sz, ctypes.c_uint]),
    "zs_free": (None, [_pool_p, _ul]),
    "zs_obj_read_begin": (_vp, [_pool_p, _ul, _sz, _vp]),
    "zs_obj_read_end": (None, [_pool_p, _ul, _sz, _vp]),
    "zs_obj_write": (None, [_pool_p, _ul, _vp, _sz]),
    "zs_map_object": (_vp, [_pool_p, _ul, _c_enum]),
    "zs_unmap_object": (None, [_pool_p, _ul]),
    "zs_compact": (_ul, [_pool_p]),
    "zs_get_total_pages": (_ul, [_pool_p]),
    "zs_huge_class_size": (_sz, [_pool_p]),
    "zs_lookup_class_index": (ctypes.c_uint, [_pool_p, ctypes.c_uint]),
    "zs_pool_stats": (None, [_pool_p, _P(zs_pool_stats)]),
    "zs_pool_info": (ctypes.c_int, [_pool_p, _P(zs_pool_info)]),
    "zs_class_info": (ctypes.c_int, [_pool_p, ctypes.c_uint, _P(zs_class_info)]),
    "zs_pool_check": (ctypes.c_int, [_pool_p]),
    "zs_defragment": (ctypes.c_long, [_pool_p]),
    "zs_release_arena": (ctypes.c_long, [_pool_p]),
    "zs_make_adjacent": (ctypes.c_long, [_pool_p]),
    "zs_frame_census": (ctypes.c_int, [_pool_p, _P(zs_frame_census)]),
    "zs_obj_size": (_sz, [_pool_p, _ul]),
}

# Functions a library of this ABI version may lack; the binding refuses them at call
# time instead of at import.
_OPTIONAL = {"zs_compact"}


def _bind():
    missing = []
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            fn = getattr(_lib, name)
        except AttributeError:
            if name not in _OPTIONAL:
                missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ImportError(f"zsmalloc: {library_path} lacks {', '.join(missing)}: rebuild it (`make build`)")


_bind()

has_compact = hasattr(_lib, "zs_compact")

# ---------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------


def _errname(e):
    return _errno.errorcode.get(e, f"errno {e}")


def _error(call, e, handle=None, detail=None):
    """The exception for errno `e` raised by `call`."""
    where = f"{call}(handle=0x{handle:x})" if handle is not None else f"{call}()"
    msg = f"{where}: {_errname(e)} ({os.strerror(e)})"
    if detail:
        msg += f": {detail}"
    if e == _errno.ENOMEM:
        return MemoryError(msg)
    if e == _errno.EBUSY:
        return BusyError(e, msg)
    if e in (_errno.EINVAL, _errno.ENOSPC):
        return ValueError(msg)
    return OSError(e, msg)


def _bad_access(n):
    return f"invalid, stale or foreign handle, or {n} bytes exceed the object's slot"


def _handle(h):
    """A handle as the C ABI takes it: an int in 0..2**64-1."""
    if isinstance(h, bool):
        raise TypeError("a handle is an int, not bool")
    try:
        h = operator.index(h)
    except TypeError:
        raise TypeError(f"a handle is an int, not {type(h).__name__}") from None
    if not 0 <= h <= _ULONG_MAX:
        raise ValueError(f"invalid handle {h}: handles are unsigned 64-bit values")
    return h


def _length(n, what="length"):
    if isinstance(n, bool):
        raise TypeError(f"{what} must be an int, not bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(n).__name__}") from None
    if n < 0:
        raise ValueError(f"{what} must not be negative, got {n}")
    return n


def _struct_dict(s):
    out = {}
    for name, _ in s._fields_:
        if name == "size":
            continue
        v = getattr(s, name)
        out[name] = list(v) if isinstance(v, ctypes.Array) else v
    return out


# ---------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------


class _Mapping:
    """``Pool.map()``: a context manager yielding a memoryview of a mapped object."""

    __slots__ = ("_pool", "_handle", "_mode", "_view", "_array", "_thread", "_refs", "_entered")

    def __init__(self, pool, handle, mode):
        self._pool = pool
        self._handle = handle
        self._mode = mode
        self._view = None
        self._array = None
        self._thread = None
        self._refs = 0
        self._entered = False

    def __enter__(self):
        if self._entered:
            raise RuntimeError("a Pool.map() context manager can be entered only once")
        self._entered = True
        pool = self._pool
        h = self._handle
        ptr = None
        p = pool._enter()
        try:
            ctypes.set_errno(0)
            ptr = _lib.zs_map_object(p, h, MAP_MODES[self._mode])
            e = ctypes.get_errno()
        finally:
            pool._exit(1 if ptr else 0)
        if not ptr:
            raise _error("zs_map_object", e or _errno.EINVAL, h, "invalid, stale or foreign handle")
        try:
            size = pool._sizes.get(h)
            if size is None:
                # Mapped, so live in this pool, yet not allocated through this object.
                raise ValueError(f"zs_map_object(handle=0x{h:x}): the handle was not allocated through this Pool")
            self._thread = threading.get_ident()
            array = (ctypes.c_ubyte * size).from_address(ptr)
            self._refs = sys.getrefcount(array)
            base = memoryview(array)
            view = base.cast("B")
            base.release()
            if self._mode == "ro":
                ro = view.toreadonly()
                view.release()
                view = ro
            self._array = array
            self._view = view
            return view
        except BaseException:
            self._unmap()
            raise

    def _unmap(self):
        pool = self._pool
        h = self._handle
        p = pool._enter()
        try:
            ctypes.set_errno(0)
            _lib.zs_unmap_object(p, h)
            e = ctypes.get_errno()
        finally:
            pool._exit(-1)
        if e:
            raise _error("zs_unmap_object", e, h, "no mapping of this handle on this thread")

    def __exit__(self, exc_type, exc, tb):
        if self._view is None:
            return False
        if self._thread != threading.get_ident():
            raise RuntimeError(
                f"zs_unmap_object(handle=0x{self._handle:x}): a mapping must be ended on the thread that made it"
            )
        view, self._view = self._view, None
        array, self._array = self._array, None
        view.release()
        # Views sliced from `view` share its buffer and hold the array; after the unmap
        # they would point at memory the object no longer owns.
        leaked = sys.getrefcount(array) - self._refs
        del array
        self._unmap()
        if leaked > 0 and exc_type is None:
            raise BufferError(
                f"Pool.map(handle=0x{self._handle:x}): {leaked} view(s) sliced from the mapping outlived "
                "the with block and now point at memory the object no longer owns; copy with bytes() "
                "or release them inside the block"
            )
        return False


class Pool:
    """A zsmalloc pool: objects of 1..4096 bytes, named by int handles.

    ``Pool(name=None, *, max_pages=0, chain_size=0, layout="dense",
    auto_compact_pages=0, auto_compact_max_pages_per_sec=0, auto_compact_interval_ms=0)``:
    the keywords mirror ``struct zs_pool_config`` (0 means the library's default;
    layout is "dense", the library's default, or "kernel", the kernel's exact class
    table; auto_compact_pages > 0 turns on compaction by a background thread).
    An unknown keyword raises TypeError, a refused configuration ValueError.
    """

    def __init__(self, name=None, **config):
        self._pool = None
        self._sizes = {}
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._inflight = 0
        self._maps = 0
        self._closing = False
        known = {f[0] for f in _CONFIG_FIELDS}
        for k in config:
            if k not in known:
                raise TypeError(f"Pool() got an unexpected keyword argument {k!r}")
        if name is None:
            cname = None
        elif isinstance(name, str):
            cname = name.encode()
        elif isinstance(name, (bytes, bytearray)):
            cname = bytes(name)
            name = cname.decode(errors="replace")
        else:
            raise TypeError(f"Pool(): name must be a str, bytes or None, not {type(name).__name__}")
        if cname is not None and b"\0" in cname:
            raise ValueError("Pool(): name must not contain NUL")
        self.name = name
        cfg = zs_pool_config()
        cfg.size = ctypes.sizeof(zs_pool_config)
        self.config = {}
        for field, _, default, convert in _CONFIG_FIELDS:
            value = config.get(field, default)
            setattr(cfg, field, convert(field, value))
            self.config[field] = value
        ctypes.set_errno(0)
        p = _lib.zs_create_pool_with(cname, ctypes.byref(cfg))
        if not p:
            e = ctypes.get_errno() or _errno.EINVAL
            args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
            detail = f"configuration refused: {args}" if e == _errno.EINVAL else None
            raise _error("zs_create_pool_with", e, None, detail)
        self._pool = p

    # -- lifetime ----------------------------------------------------------------
    #
    # Every C call runs between _enter() and _exit(): close() waits until none is in
    # progress before it destroys the pool, so no call can run on a destroyed pool.

    def _enter(self):
        with self._lock:
            while self._closing:  # a close() in progress: wait for its outcome
                self._cv.wait()
            p = self._pool
            if p is None:
                raise ValueError(f"the pool {self.name!r} is closed")
            self._inflight += 1
            return p

    def _exit(self, maps=0):
        with self._lock:
            self._inflight -= 1
            self._maps += maps
            if self._closing and self._inflight == 0:
                self._cv.notify_all()

    @property
    def _as_parameter_(self):
        """The ``struct zs_pool *``, for calling the C functions directly."""
        p = self._pool
        if p is None:
            raise ValueError(f"the pool {self.name!r} is closed")
        return p

    @property
    def closed(self):
        """Whether close() has run."""
        return self._pool is None

    def close(self):
        """Destroys the pool and every object in it; idempotent. Waits for calls in
        progress on other threads; refused with BusyError while a mapping is open."""
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ failed early
            return
        with lock:
            if self._pool is None:
                return
            while self._closing:  # another thread is closing: wait for its outcome
                self._cv.wait()
                if self._pool is None:
                    return
            self._closing = True
            try:
                while self._inflight:
                    self._cv.wait()
                # Checked once no call is in progress: a map that was under way counts.
                if self._maps:
                    raise BusyError(
                        _errno.EBUSY,
                        f"zs_destroy_pool({self.name!r}): {self._maps} mapping(s) still open; end them first",
                    )
                p, self._pool = self._pool, None
            finally:
                self._closing = False
                self._cv.notify_all()
        self._sizes.clear()
        _lib.zs_destroy_pool(p)

    def __enter__(self):
        if self._pool is None:
            raise ValueError(f"the pool {self.name!r} is closed")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        state = "closed" if self._pool is None else f"total_pages={self.total_pages}"
        return f"<zsmalloc.Pool {self.name!r} layout={self.config.get('layout')!r} {state}>"

    # -- objects -------------------------------------------------------------------

    def malloc(self, size, nogrow=False):
        """Allocates an object of `size` bytes (1..4096) and returns its handle.

        nogrow=True fails with MemoryError rather than take a new frame."""
        size = _length(size, "size")
        p = self._enter()
        try:
            h = _lib.zs_malloc(p, size, ALLOC_NOGROW if nogrow else 0)
        finally:
            self._exit()
        if h > _ULONG_MAX - _MAX_ERRNO:
            e = _ULONG_MAX + 1 - h
            if e == _errno.ENOMEM:
                detail = "no frame could be had, the pool's page limit" + (", or nogrow" if nogrow else "")
            else:
                detail = f"size {size} is outside 1..{MAX_ALLOC_SIZE}"
            raise _error("zs_malloc", e, None, detail)
        self._sizes[h] = size
        return h

    def free(self, handle):
        """Frees an object (0 is a no-op, as in C). BusyError, and the object stays,
        while it is mapped or being read; ValueError for a handle not live here."""
        h = _handle(handle)
        p = self._enter()
        try:
            ctypes.set_errno(0)
            _lib.zs_free(p, h)
            e = ctypes.get_errno()
        finally:
            self._exit()
        if e:
            if e == _errno.EBUSY:
                raise _error("zs_free", e, h, "the object is mapped or being read; not freed")
            raise _error("zs_free", e, h, "invalid, stale (already freed?) or foreign handle")
        self._sizes.pop(h, None)

    def size_of(self, handle):
        """The size `handle` was allocated with through this Pool, or None."""
        return self._sizes.get(handle)

    def obj_size(self, handle):
        """The size the object was allocated with, as the library records it
        (``zs_obj_size``): also for handles allocated outside this Pool object.
        ValueError for a handle not live here."""
        h = _handle(handle)
        p = self._enter()
        try:
            ctypes.set_errno(0)
            n = _lib.zs_obj_size(p, h)
            e = ctypes.get_errno()
        finally:
            self._exit()
        if n == 0:
            raise _error("zs_obj_size", e or _errno.EINVAL, h, "invalid, stale (freed?) or foreign handle")
        return n

    def write(self, handle, data):
        """Copies `data` (any bytes-like object) into the start of the object; at
        most the object's slot (ValueError beyond it, and nothing is copied). The slot
        is the object's size in the dense layout, its class's size less the 8-byte
        header (none in the huge class) in the kernel layout."""
        h = _handle(handle)
        if isinstance(data, bytes):
            n = len(data)
            buf = data
        else:
            mv = memoryview(data)
            n = mv.nbytes
            if mv.readonly or not mv.c_contiguous:
                buf = mv.tobytes()
            else:
                buf = (ctypes.c_char * n).from_buffer(mv)
        p = self._enter()
        try:
            ctypes.set_errno(0)
            _lib.zs_obj_write(p, h, buf if n else None, n)
            e = ctypes.get_errno()
        finally:
            self._exit()
        if e:
            raise _error("zs_obj_write", e, h, _bad_access(n))

    def read(self, handle, n):
        """The first `n` bytes of the object, as bytes (at most its slot, as for
        write(): in the dense layout, its size; ValueError beyond it)."""
        h = _handle(handle)
        n = _length(n)
        # Beyond the largest object the library refuses the length before it needs
        # a buffer; none is allocated for it.
        local = ctypes.create_string_buffer(n) if 0 < n <= MAX_ALLOC_SIZE else None
        p = self._enter()
        try:
            ctypes.set_errno(0)
            mem = _lib.zs_obj_read_begin(p, h, n, local)
            if not mem:
                e = ctypes.get_errno() or _errno.EINVAL
                raise _error("zs_obj_read_begin", e, h, _bad_access(n))
            try:
                out = ctypes.string_at(mem, n)
            finally:
                ctypes.set_errno(0)
                _lib.zs_obj_read_end(p, h, n, mem)
                e = ctypes.get_errno()
        finally:
            self._exit()
        if e:
            raise _error("zs_obj_read_end", e, h, "no matching read on this thread")
        return out

    def map(self, handle, mode="rw"):
        """Maps an object: ``with pool.map(h, "rw") as mv: ...``.

        `mv` is a memoryview of the object's bytes (as many as it was allocated with):
        writable for "rw" (read, and stored back when the block ends) and "wo" (not
        read: undefined until written; stored back), read-only for "ro". The view is
        released and the object unmapped when the block ends, also on an exception;
        views sliced from it must not outlive the block (BufferError if they do)."""
        h = _handle(handle)
        if mode not in MAP_MODES:
            raise ValueError(f"Pool.map(): mode must be one of {sorted(MAP_MODES)}, not {mode!r}")
        return _Mapping(self, h, mode)

    def compact(self):
        """Moves objects out of sparse zspages into dense ones and frees the emptied
        frames; returns the number of frames freed. In the dense layout it empties
        zspages with at least 1/16 of their bytes free, moving their objects to where
        malloc would place them (possibly into new zspages), and returns the net
        frames freed."""
        if not has_compact:
            raise NotImplementedError(f"zs_compact is not in {library_path}")
        p = self._enter()
        try:
            return _lib.zs_compact(p)
        finally:
            self._exit()

    # -- statistics ----------------------------------------------------------------

    @property
    def total_pages(self):
        """Frames held by the pool."""
        p = self._enter()
        try:
            return _lib.zs_get_total_pages(p)
        finally:
            self._exit()

    @property
    def huge_class_size(self):
        """Kernel layout: the smallest size stored one object per frame. Dense layout:
        4096 (no huge class; objects of every size share zspages)."""
        p = self._enter()
        try:
            return _lib.zs_huge_class_size(p)
        finally:
            self._exit()

    def lookup_class_index(self, size):
        """Index of the (merged) class an object of `size` bytes lands in. The dense
        layout has no size classes: it is the calling thread's lane, the same for
        every size."""
        size = _length(size, "size")
        if size > _UINT_MAX:
            raise ValueError(f"zs_lookup_class_index(): size {size} is outside 1..{MAX_ALLOC_SIZE}")
        p = self._enter()
        try:
            ctypes.set_errno(0)
            i = _lib.zs_lookup_class_index(p, size)
            e = ctypes.get_errno()
        finally:
            self._exit()
        if i == _UINT_MAX:
            detail = f"size {size} is outside 1..{MAX_ALLOC_SIZE}"
            raise _error("zs_lookup_class_index", e or _errno.EINVAL, None, detail)
        return i

    def info(self):
        """Pool totals, ``struct zs_pool_info`` as a dict (without `size`)."""
        s = zs_pool_info()
        s.size = ctypes.sizeof(s)
        p = self._enter()
        try:
            r = _lib.zs_pool_info(p, ctypes.byref(s))
        finally:
            self._exit()
        if r:
            raise _error("zs_pool_info", -r)
        return _struct_dict(s)

    def class_info(self, index):
        """One class's statistics, ``struct zs_class_info`` as a dict (without `size`;
        `zspages` a list). `index` is what lookup_class_index() returns. For a dense
        lane: class_size 4096, pages_per_zspage its chain (a zspage made under the page
        limit may be shorter), objs_per_zspage 0, objs_allocated its live objects,
        zspages grouped by the share of their bytes in use, pages_freeable an
        estimate."""
        index = _length(index, "index")
        if index > _UINT_MAX:
            raise ValueError(f"zs_class_info(): no class has index {index}")
        s = zs_class_info()
        s.size = ctypes.sizeof(s)
        p = self._enter()
        try:
            r = _lib.zs_class_info(p, index, ctypes.byref(s))
        finally:
            self._exit()
        if r:
            raise _error("zs_class_info", -r, None, f"no class has index {index}" if -r == _errno.EINVAL else None)
        return _struct_dict(s)

    def stats(self):
        """The kernel's statistics, ``struct zs_pool_stats`` as a dict."""
        s = zs_pool_stats()
        p = self._enter()
        try:
            ctypes.set_errno(0)
            _lib.zs_pool_stats(p, ctypes.byref(s))
            e = ctypes.get_errno()
        finally:
            self._exit()
        if e:
            raise _error("zs_pool_stats", e)
        return _struct_dict(s)

    def census(self):
        """Frames by type and class (a dense pool: lane) from a walk of the side table,
        ``struct zs_frame_census`` as a dict (without `size`). `class_frames` is a
        dict from class index to frames, for the classes that hold any."""
        s = zs_frame_census()
        s.size = ctypes.sizeof(s)
        p = self._enter()
        try:
            r = _lib.zs_frame_census(p, ctypes.byref(s))
        finally:
            self._exit()
        if r:
            raise _error("zs_frame_census", -r)
        out = _struct_dict(s)
        out["class_frames"] = {i: n for i, n in enumerate(out["class_frames"]) if n}
        return out

    def defragment(self):
        """Moves frames in use from the top of the pool's arena into free frames
        below and gives the arena's free upper part back (memory and commit charge;
        the address range stays reserved); returns the frames it shrank by."""
        return self._migration_call("zs_defragment")

    def release_arena(self):
        """Unmaps the arena's address space above the frames in use, so the process's
        virtual size falls; returns the bytes given up. The pool cannot grow back past
        a mapping placed there meanwhile (MemoryError)."""
        return self._migration_call("zs_release_arena")

    def make_adjacent(self):
        """Moves each zspage whose frames are not adjacent into adjacent frames, so
        objects straddling two frames are read in place; returns the zspages joined."""
        return self._migration_call("zs_make_adjacent")

    def _migration_call(self, name):
        p = self._enter()
        try:
            r = getattr(_lib, name)(p)
        finally:
            self._exit()
        if r < 0:
            raise _error(name, -r)
        return r

    def check(self):
        """Walks every internal invariant of the pool; raises CheckError when one is
        broken (the library names it on stderr)."""
        p = self._enter()
        try:
            r = _lib.zs_pool_check(p)
        finally:
            self._exit()
        if r:
            e = -r
            raise CheckError(
                f"zs_pool_check({self.name!r}): {_errname(e)} ({os.strerror(e)}); "
                "the broken invariant is named on stderr"
            )


# help(Pool) and inspect.signature(Pool) show the configuration keywords.
Pool.__init__.__signature__ = inspect.Signature(
    [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ]
    + [inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=d) for f, _, d, _ in _CONFIG_FIELDS]
)
