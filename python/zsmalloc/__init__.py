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

Errors: ``TypeError`` for an argument of the wrong type (an int argument given a
bool, a float or a str); ``ValueError`` for an int outside its C type's range (never
passed on truncated), for an invalid, stale or foreign handle, a bad size or length
(``EINVAL``, ``ENOSPC``) and for a closed pool; ``MemoryError`` for ``ENOMEM``;
``BusyError`` (an ``OSError`` with errno ``EBUSY``) for an object held by another
access (readers share an object, a writer holds it alone: see ``Pool.map()``);
``CheckError`` (a ``RuntimeError``) when ``Pool.check()`` finds a broken
invariant.

Threads: every method may be called from any number of threads at once, except
``close()``, which waits for calls in progress and refuses while a ``map()`` block is
open. A mapping must be ended on the thread that made it, which the ``with``
statement does.

Mappings never hand out pool memory: ``map()`` yields a view of a private copy of the
object, stored back when the block ends, so no view or slice kept past its block can
reach the pool, whatever is done with it.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno as _errno
import inspect
import operator
import os
import threading
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Tuple, Union

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

_MAX_ERRNO = 4095  # handles >= ULONG_MAX - 4094 are -errno (ZS_IS_ERR)


class BusyError(OSError):
    """The object is mapped or being read (errno ``EBUSY``); nothing was done."""


class CheckError(RuntimeError):
    """``zs_pool_check`` found a broken invariant (the library names it on stderr)."""


# ---------------------------------------------------------------------------------
# Finding and loading the library
# ---------------------------------------------------------------------------------

_LIB_NAME = "libzsmalloc.so"
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def _candidates() -> Iterator[Tuple[str, Optional[str]]]:
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


def _load() -> Tuple[ctypes.CDLL, str]:
    tried = []
    for where, path in _candidates():
        if path is None:
            tried.append(f"{where}: not found")
        elif where == "ZSMALLOC_LIB":
            # An explicit choice: load it or fail, never fall back silently.
            try:
                return ctypes.CDLL(path, use_errno=True), path
            except OSError as e:
                raise ImportError(f"zsmalloc: cannot load ZSMALLOC_LIB={path!r}: {e}") from e
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

# ---------------------------------------------------------------------------------
# Arguments: every value a method passes to C goes through one of these converters
# ---------------------------------------------------------------------------------
#
# ctypes converts a Python int to a C integer modulo 2**bits, so 2**64 + 100 would
# reach zs_malloc as 100. Each converter returns the value unchanged or raises:
# TypeError for what is not an int (bool, float and str included), ValueError for an
# int outside the C type's range. No method passes an int to C any other way.


def _unsigned(ctype: Any, cname: str) -> Callable[[Any, str], int]:
    """A converter for a value of the unsigned C type `ctype` (spelt `cname`)."""
    hi = 2 ** (8 * ctypes.sizeof(ctype)) - 1

    def convert(value: Any, what: str) -> int:
        if isinstance(value, bool):
            raise TypeError(f"{what} must be an int, not bool")
        try:
            v = operator.index(value)
        except TypeError:
            raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None
        if not 0 <= v <= hi:
            raise ValueError(f"{what}={v} is outside {cname} (0..{hi})")
        return v

    return convert


_size_t = _unsigned(ctypes.c_size_t, "size_t")
_ulong = _unsigned(ctypes.c_ulong, "unsigned long")
_uint = _unsigned(ctypes.c_uint, "unsigned int")
_ULONG_MAX = 2 ** (8 * ctypes.sizeof(ctypes.c_ulong)) - 1
_UINT_MAX = 2 ** (8 * ctypes.sizeof(ctypes.c_uint)) - 1


def _enum(table: Dict[str, int]) -> Callable[[Any, str], int]:
    """A converter for a C enum named by the keys of `table` (str only: its ints are
    the library's business)."""

    def convert(value: Any, what: str) -> int:
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a str ({' or '.join(map(repr, table))}), not {type(value).__name__}")
        try:
            return table[value]
        except KeyError:
            raise ValueError(f"{what} must be one of {sorted(table)}, not {value!r}") from None

    return convert


_layout = _enum(LAYOUTS)
_map_mode = _enum(MAP_MODES)


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, not {type(value).__name__}")
    return value


# struct zs_pool_config after its `size`: (field, C type, default, converter). The
# library reads only the `size` bytes a caller declares, so a field appended to the C
# struct is one more line here.
_CONFIG_FIELDS: Tuple[Tuple[str, Any, Union[int, str], Callable[[Any, str], int]], ...] = (
    ("max_pages", ctypes.c_ulong, 0, _ulong),
    ("chain_size", ctypes.c_uint, 0, _uint),
    ("layout", _c_enum, "dense", _layout),
    ("auto_compact_pages", ctypes.c_ulong, 0, _ulong),
    ("auto_compact_max_pages_per_sec", ctypes.c_ulong, 0, _ulong),
    ("auto_compact_interval_ms", ctypes.c_uint, 0, _uint),
    ("max_object_size", ctypes.c_uint, 0, _uint),
    ("frame_size", ctypes.c_uint, 0, _uint),
    ("prefault", ctypes.c_ulong, 0, _ulong),
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
        ("max_object_size", ctypes.c_ulong),
        ("frame_size", ctypes.c_ulong),
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


def _bind() -> None:
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


def _errname(e: int) -> str:
    return _errno.errorcode.get(e, f"errno {e}")


def _error(call: str, e: int, handle: Optional[int] = None, detail: Optional[str] = None) -> Exception:
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


def _bad_access(n: int, e: int) -> str:
    if e == _errno.EBUSY:
        return "the object is held by another access (mapped or being read)"
    return f"invalid, stale or foreign handle, or {n} bytes exceed the object's slot"


def _struct_dict(s: ctypes.Structure) -> Dict[str, Any]:
    out = {}
    for field in s._fields_:
        name = field[0]
        if name == "size":
            continue
        v = getattr(s, name)
        out[name] = list(v) if isinstance(v, ctypes.Array) else v
    return out


# ---------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------


# A token per thread, compared by identity: unlike a thread ident, it is never
# reused by a later thread while anything holds it.
_thread_tokens = threading.local()


def _thread_token() -> object:
    token = getattr(_thread_tokens, "token", None)
    if token is None:
        token = _thread_tokens.token = object()
    return token


def _unmap_all(p: int, handles: List[int]) -> None:
    """Ends one of this thread's mappings of each handle: those of map() objects dropped
    inside their block."""
    for h in handles:
        ctypes.set_errno(0)
        _lib.zs_unmap_object(p, h)


class _Mapping:
    """``Pool.map()``: a context manager yielding a memoryview of an object's bytes.

    The view handed out is of a private copy, never of pool memory, so nothing done
    with it or its slices, during or after the block, reaches the pool: a slice kept
    past the block holds the bytes as they were then. From ``__enter__`` to
    ``__exit__`` the block holds a C mapping of the object, which the copy is taken
    from: read-only for "ro" (shared with other readers), read-write for "rw" and
    "wo" (the object's only view: every other access, of any thread, this one's
    included, is refused with BusyError). An "rw" or "wo" block's bytes are copied
    into that mapping when the block ends, and the mapping is then ended.

    ZS_MM_RW even for "wo": where the object is not contiguous the library maps it
    through a copy of its bytes and stores that copy back when the mapping ends. Read
    in by ZS_MM_RW, the copy holds the object's own bytes, and as nothing else can
    change the object while it is mapped writable, a mapping that Python cannot end
    at the block's exit (a map() dropped inside its block, ended later by its thread)
    stores back nothing but what the object already holds. A thread's mappings of one
    handle are either one writable mapping or read-only ones, which are alike, so
    ending "the most recent" one, as zs_unmap_object does, is ending the right one."""

    __slots__ = ("_pool", "_handle", "_mode", "_ptr", "_buf", "_view", "_owner", "_state")

    _NEW, _OPEN, _DONE = range(3)

    def __init__(self, pool: Pool, handle: int, mode: str) -> None:
        self._pool = pool
        self._handle = handle
        self._mode = mode
        self._ptr = 0  # the C mapping, from __enter__ to the block's end
        self._buf: Union[bytes, bytearray, None] = None
        self._view: Optional[memoryview] = None
        self._owner: Optional[object] = None
        self._state = _Mapping._NEW

    def __enter__(self) -> memoryview:
        if self._state != _Mapping._NEW:
            raise RuntimeError("a Pool.map() context manager can be entered only once")
        self._state = _Mapping._DONE  # until the mapping is held
        pool = self._pool
        h = self._handle
        ptr = None
        p = pool._enter()
        try:
            ctypes.set_errno(0)
            ptr = _lib.zs_map_object(p, h, MAP_MODES["ro" if self._mode == "ro" else "rw"])
            e = ctypes.get_errno()
        finally:
            pool._exit(opened=bool(ptr))
        if not ptr:
            if e == _errno.EBUSY:
                detail = "the object is mapped writable" if self._mode == "ro" else "the object is mapped or being read"
            else:
                detail = "invalid, stale or foreign handle"
            raise _error("zs_map_object", e or _errno.EINVAL, h, detail)
        self._ptr = ptr
        self._owner = _thread_token()
        self._state = _Mapping._OPEN
        try:
            size = pool._sizes.get(h)
            if size is None:
                # Mapped, so live in this pool, yet not allocated through this object.
                raise ValueError(f"zs_map_object(handle=0x{h:x}): the handle was not allocated through this Pool")
            # The copy is made while this thread holds the mapping: nothing can end it
            # in between.
            if self._mode == "ro":
                buf: Union[bytes, bytearray] = ctypes.string_at(ptr, size)
            elif self._mode == "rw":
                buf = bytearray(ctypes.string_at(ptr, size))
            else:  # "wo": the object's bytes are not shown
                buf = bytearray(size)
            self._buf = buf
            self._view = memoryview(buf)  # read-only over bytes, for "ro"
            return self._view
        except BaseException:
            self._end(store=False)
            raise

    def _end(self, store: bool) -> None:
        """Stores the copy (when `store`) and ends the C mapping; on its own thread."""
        buf, self._buf = self._buf, None
        ptr, self._ptr = self._ptr, 0
        self._state = _Mapping._DONE
        self._pool._end_mapping(self._handle, ptr, buf if store and isinstance(buf, bytearray) else None)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if self._state != _Mapping._OPEN:
            return False
        if self._owner is not _thread_token():
            raise RuntimeError(
                f"zs_unmap_object(handle=0x{self._handle:x}): a mapping must be ended on the thread that made it"
            )
        view, self._view = self._view, None
        try:
            if view is not None:
                view.release()  # so that the block's name for it is unusable after the block
        except BufferError:
            pass  # the caller holds a buffer export of it (ctypes, numpy): its copy, its memory
        # Stored also when the block raised, as zs_unmap_object stores a mapping's bytes.
        self._end(store=self._mode != "ro")
        return False

    def __del__(self) -> None:
        # Dropped without leaving its block: the block counts as left, and the mapping
        # is ended, without storing the copy, by the next call its thread makes on the
        # pool (zs_unmap_object works only there). A finaliser may run inside any
        # allocation, the pool's locked sections included: an append to a deque is
        # all it may do.
        if getattr(self, "_state", None) == _Mapping._OPEN:
            self._state = _Mapping._DONE
            self._pool._dropped.append((self._owner, self._handle))


class Pool:
    """A zsmalloc pool: objects of 1 byte up to a frame (4096 bytes where the system's
    pages are 4 KiB; up to max_object_size, at most 65536, if given), named by int
    handles.

    ``Pool(name=None, *, max_pages=0, chain_size=0, layout="dense",
    auto_compact_pages=0, auto_compact_max_pages_per_sec=0, auto_compact_interval_ms=0,
    max_object_size=0, frame_size=0, prefault=0)``:
    the keywords mirror ``struct zs_pool_config`` (0 means the library's default;
    layout is "dense", the library's default, or "kernel", the kernel's exact class
    table; auto_compact_pages > 0 turns on compaction by a background thread;
    frame_size is the system's page size by default, else a power of two from 4096
    to 65536 and a multiple of the page size; prefault=1 faults the pool's frames
    in 2 MiB at a time as it grows, 0 on their first write).
    An unknown keyword or a value of the wrong type raises TypeError, a value outside
    its C type or a configuration the library refuses ValueError.
    """

    def __init__(self, name: Union[str, bytes, None] = None, **config: Union[int, str]) -> None:
        self._pool: Optional[int] = None
        self._sizes: Dict[int, int] = {}
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._inflight = 0
        self._maps = 0  # map() blocks open: entered, neither left nor dropped
        # (thread token, handle) of each map() dropped inside its block: appended by
        # _Mapping.__del__, taken under the lock (the block is no longer open) into
        # _orphans, whose mappings the next call of their thread ends.
        self._dropped: collections.deque[Tuple[object, int]] = collections.deque()
        self._orphans: List[Tuple[object, int]] = []
        self._closing = False
        known = {f[0] for f in _CONFIG_FIELDS}
        for k in config:
            if k not in known:
                raise TypeError(f"Pool() got an unexpected keyword argument {k!r}")
        cname: Optional[bytes]
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
        self.name: Optional[str] = name
        cfg = zs_pool_config()
        cfg.size = ctypes.sizeof(zs_pool_config)
        self.config: Dict[str, Union[int, str]] = {}
        for field, _, default, convert in _CONFIG_FIELDS:
            value = config.get(field, default)
            setattr(cfg, field, convert(value, f"Pool(): {field}"))
            self.config[field] = value
        ctypes.set_errno(0)
        p = _lib.zs_create_pool_with(cname, ctypes.byref(cfg))
        if not p:
            e = ctypes.get_errno() or _errno.EINVAL
            args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
            detail = f"configuration refused: {args}" if e == _errno.EINVAL else None
            raise _error("zs_create_pool_with", e, None, detail)
        self._pool = p
        info = self.info()
        self._max_object_size: int = info["max_object_size"]
        self.frame_size: int = info["frame_size"]

    # -- lifetime ----------------------------------------------------------------
    #
    # Every C call runs between _enter() and _exit(): close() waits until none is in
    # progress before it destroys the pool, so no call can run on a destroyed pool.

    def _enter(self) -> int:
        orphans: List[int] = []
        with self._lock:
            p = self._enter_locked()
            if self._orphans:
                orphans = self._take_orphans()
        _unmap_all(p, orphans)
        return p

    def _enter_locked(self) -> int:
        while self._closing:  # a close() in progress: wait for its outcome
            self._cv.wait()
        p = self._pool
        if p is None:
            raise ValueError(f"the pool {self.name!r} is closed")
        self._inflight += 1
        self._adopt_dropped()
        return p

    def _exit(self, opened: bool = False) -> None:
        with self._lock:
            self._inflight -= 1
            self._maps += opened
            if self._closing and self._inflight == 0:
                self._cv.notify_all()

    def _adopt_dropped(self) -> None:
        """Dropped map() objects: their blocks are no longer open; their mappings wait
        for their thread. Under the lock."""
        while self._dropped:
            self._orphans.append(self._dropped.popleft())
            self._maps -= 1

    def _take_orphans(self) -> List[int]:
        """The handles of this thread's dropped mappings, taken off the list. Under the
        lock."""
        me = _thread_token()
        mine = [h for owner, h in self._orphans if owner is me]
        if mine:
            self._orphans = [(owner, h) for owner, h in self._orphans if owner is not me]
        return mine

    def _end_mapping(self, h: int, ptr: int, store: Optional[bytearray]) -> None:
        """Ends a map() block of this thread: copies `store` into its mapping at `ptr`
        (writable, held by this thread alone), then ends the mapping."""
        with self._lock:
            p = self._enter_locked()
            self._maps -= 1
            orphans = self._take_orphans() if self._orphans else []
        try:
            # An orphan of `h` can only be a read-only mapping beside this block's
            # read-only one (a writable mapping is its object's only one): ending
            # either first is the same.
            _unmap_all(p, orphans)
            if store is not None:
                ctypes.memmove(ptr, (ctypes.c_char * len(store)).from_buffer(store), len(store))
            ctypes.set_errno(0)
            _lib.zs_unmap_object(p, h)
            e = ctypes.get_errno()
        finally:
            self._exit()
        if e:
            raise _error("zs_unmap_object", e, h, "no mapping of this handle on this thread")

    @property
    def _as_parameter_(self) -> int:
        """The ``struct zs_pool *``, for calling the C functions directly."""
        p = self._pool
        if p is None:
            raise ValueError(f"the pool {self.name!r} is closed")
        return p

    @property
    def closed(self) -> bool:
        """Whether close() has run."""
        return self._pool is None

    def close(self) -> None:
        """Destroys the pool and every object in it; idempotent. Waits for calls in
        progress on other threads; refused with BusyError while a ``map()`` block is
        open (entered, and neither left nor dropped). Views kept from mappings are
        private copies and never stand in its way."""
        self._close(force=False)

    def _close(self, force: bool) -> None:
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
                self._adopt_dropped()
                # Checked once no call is in progress: a map that was under way counts.
                if self._maps and not force:
                    raise BusyError(
                        _errno.EBUSY,
                        f"zs_destroy_pool({self.name!r}): {self._maps} map() block(s) still open; leave them first",
                    )
                p, self._pool = self._pool, None
                self._orphans.clear()
            finally:
                self._closing = False
                self._cv.notify_all()
        self._sizes.clear()
        # Mappings still open (a block of a collected pool, a dropped one not yet ended
        # by its thread) do not hold the destroy back; no call reaches the pool after it.
        _lib.zs_destroy_pool(p)

    def __enter__(self) -> Pool:
        if self._pool is None:
            raise ValueError(f"the pool {self.name!r} is closed")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        self.close()
        return False

    def __del__(self) -> None:
        # Nothing can use the pool any more: an open map() block would hold a
        # reference to it, unless it is garbage too.
        try:
            self._close(force=True)
        except Exception:
            pass

    @property
    def max_object_size(self) -> int:
        """The largest object the pool takes (its max_object_size, its frame size by
        default)."""
        return self._max_object_size

    def __repr__(self) -> str:
        state = "closed" if self._pool is None else f"total_pages={self.total_pages}"
        return f"<zsmalloc.Pool {self.name!r} layout={self.config.get('layout')!r} {state}>"

    # -- objects -------------------------------------------------------------------

    def malloc(self, size: int, nogrow: bool = False) -> int:
        """Allocates an object of `size` bytes (1..max_object_size, 4096 by default)
        and returns its handle.

        nogrow=True fails with MemoryError rather than take a new frame."""
        size = _size_t(size, "Pool.malloc(): size")
        nogrow = _flag(nogrow, "Pool.malloc(): nogrow")
        p = self._enter()
        try:
            h: int = _lib.zs_malloc(p, size, ALLOC_NOGROW if nogrow else 0)
        finally:
            self._exit()
        if h > _ULONG_MAX - _MAX_ERRNO:
            e = _ULONG_MAX + 1 - h
            if e == _errno.ENOMEM:
                detail = "no frame could be had, the pool's page limit" + (", or nogrow" if nogrow else "")
            else:
                detail = f"size {size} is outside 1..{self.max_object_size}"
            raise _error("zs_malloc", e, None, detail)
        self._sizes[h] = size
        return h

    def free(self, handle: int) -> None:
        """Frees an object (0 is a no-op, as in C). BusyError, and the object stays,
        while it is mapped or being read, by any thread; ValueError for a handle not
        live here."""
        h = _ulong(handle, "Pool.free(): handle")
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

    def size_of(self, handle: int) -> Optional[int]:
        """The size `handle` was allocated with through this Pool, or None."""
        return self._sizes.get(handle)

    def obj_size(self, handle: int) -> int:
        """The size the object was allocated with, as the library records it
        (``zs_obj_size``): also for handles allocated outside this Pool object.
        ValueError for a handle not live here."""
        h = _ulong(handle, "Pool.obj_size(): handle")
        p = self._enter()
        try:
            ctypes.set_errno(0)
            n = _lib.zs_obj_size(p, h)
            e = ctypes.get_errno()
        finally:
            self._exit()
        if n == 0:
            raise _error("zs_obj_size", e or _errno.EINVAL, h, "invalid, stale (freed?) or foreign handle")
        return int(n)

    def write(self, handle: int, data: Any) -> None:
        """Copies `data` (any bytes-like object) into the start of the object; at
        most the object's slot (ValueError beyond it, and nothing is copied). The slot
        is the object's size in the dense layout, its class's size less the 8-byte
        header (none in the huge class) in the kernel layout. BusyError while the
        object is mapped or being read, by any thread."""
        h = _ulong(handle, "Pool.write(): handle")
        buf: Any
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
            raise _error("zs_obj_write", e, h, _bad_access(n, e))

    def read(self, handle: int, n: int) -> bytes:
        """The first `n` bytes of the object, as bytes (at most its slot, as for
        write(): in the dense layout, its size; ValueError beyond it). BusyError
        while the object is in an "rw" or "wo" map() block, of any thread."""
        h = _ulong(handle, "Pool.read(): handle")
        n = _size_t(n, "Pool.read(): n")
        # Beyond the largest object the library refuses the length before it needs
        # a buffer; none is allocated for it.
        local = ctypes.create_string_buffer(n) if 0 < n <= self.max_object_size else None
        p = self._enter()
        try:
            ctypes.set_errno(0)
            mem = _lib.zs_obj_read_begin(p, h, n, local)
            if not mem:
                e = ctypes.get_errno() or _errno.EINVAL
                raise _error("zs_obj_read_begin", e, h, _bad_access(n, e))
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

    def map(self, handle: int, mode: str = "rw") -> _Mapping:
        """Maps an object: ``with pool.map(h, "rw") as mv: ...``.

        `mv` is a memoryview of a private copy of the object's bytes (as many as it
        was allocated with), taken while the block holds the object mapped. "rw":
        read, writable, stored back when the block ends (also on an exception);
        "wo": writable, not read (starts zeroed), stored back; "ro": read, read-only.
        An "ro" block shares the object with readers (other "ro" blocks, read()):
        free(), write() and "rw"/"wo" blocks are refused with BusyError meanwhile.
        An "rw" or "wo" block holds the object alone: every other access, by any
        thread, this one included, is refused with BusyError. The view is released
        when the block ends; a slice kept past the block is a copy like any other:
        writing it changes nothing in the pool. A map() dropped without leaving its
        block is ended without storing, by its thread's next call on the pool; until
        then it holds the object as its block did."""
        h = _ulong(handle, "Pool.map(): handle")
        _map_mode(mode, "Pool.map(): mode")
        return _Mapping(self, h, mode)

    def compact(self) -> int:
        """Moves objects out of sparse zspages into dense ones and frees the emptied
        frames; returns the number of frames freed. In the dense layout it empties
        zspages with at least 1/16 of their bytes free, moving their objects to where
        malloc would place them (possibly into new zspages), and returns the net
        frames freed."""
        if not has_compact:
            raise NotImplementedError(f"zs_compact is not in {library_path}")
        p = self._enter()
        try:
            return int(_lib.zs_compact(p))
        finally:
            self._exit()

    # -- statistics ----------------------------------------------------------------

    @property
    def total_pages(self) -> int:
        """Frames held by the pool."""
        p = self._enter()
        try:
            return int(_lib.zs_get_total_pages(p))
        finally:
            self._exit()

    @property
    def huge_class_size(self) -> int:
        """Kernel layout: the smallest size stored one object per frame. Dense layout:
        4096 (no huge class; objects of every size share zspages)."""
        p = self._enter()
        try:
            return int(_lib.zs_huge_class_size(p))
        finally:
            self._exit()

    def lookup_class_index(self, size: int) -> int:
        """Index of the (merged) class an object of `size` bytes lands in. The dense
        layout has no size classes: it is the calling thread's lane, the same for
        every size."""
        size = _uint(size, "Pool.lookup_class_index(): size")
        p = self._enter()
        try:
            ctypes.set_errno(0)
            i = _lib.zs_lookup_class_index(p, size)
            e = ctypes.get_errno()
        finally:
            self._exit()
        if i == _UINT_MAX:
            detail = f"size {size} is outside 1..{self.max_object_size}"
            raise _error("zs_lookup_class_index", e or _errno.EINVAL, None, detail)
        return int(i)

    def info(self) -> Dict[str, Any]:
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

    def class_info(self, index: int) -> Dict[str, Any]:
        """One class's statistics, ``struct zs_class_info`` as a dict (without `size`;
        `zspages` a list). `index` is what lookup_class_index() returns. For a dense
        lane: class_size 4096, pages_per_zspage its chain (a zspage made under the page
        limit may be shorter), objs_per_zspage 0, objs_allocated its live objects,
        zspages grouped by the share of their bytes in use, pages_freeable an
        estimate."""
        index = _uint(index, "Pool.class_info(): index")
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

    def stats(self) -> Dict[str, Any]:
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

    def census(self) -> Dict[str, Any]:
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

    def defragment(self) -> int:
        """Moves frames in use from the top of the pool's arena into free frames
        below and gives the arena's free upper part back (memory and commit charge;
        the address range stays reserved); returns the frames it shrank by."""
        return self._migration_call("zs_defragment")

    def release_arena(self) -> int:
        """Unmaps the arena's address space above the frames in use, so the process's
        virtual size falls; returns the bytes given up. The pool cannot grow back past
        a mapping placed there meanwhile (MemoryError)."""
        return self._migration_call("zs_release_arena")

    def make_adjacent(self) -> int:
        """Moves each zspage whose frames are not adjacent into adjacent frames, so
        objects straddling two frames are read in place; returns the zspages joined."""
        return self._migration_call("zs_make_adjacent")

    def _migration_call(self, name: str) -> int:
        p = self._enter()
        try:
            r = getattr(_lib, name)(p)
        finally:
            self._exit()
        if r < 0:
            raise _error(name, -r)
        return int(r)

    def check(self) -> None:
        """Walks every internal invariant of the pool; raises CheckError when one is
        broken (the library names it on stderr), MemoryError when the heap cannot
        hold the walk's working sets (no verdict)."""
        p = self._enter()
        try:
            r = _lib.zs_pool_check(p)
        finally:
            self._exit()
        if r == -_errno.ENOMEM:
            # No verdict: the heap cannot hold the walk's working sets.
            raise MemoryError(f"zs_pool_check({self.name!r}): no memory for the check's working sets")
        if r:
            e = -r
            raise CheckError(
                f"zs_pool_check({self.name!r}): {_errname(e)} ({os.strerror(e)}); "
                "the broken invariant is named on stderr"
            )


# help(Pool) and inspect.signature(Pool) show the configuration keywords.
Pool.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ]
    + [inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=d) for f, _, d, _ in _CONFIG_FIELDS]
)
