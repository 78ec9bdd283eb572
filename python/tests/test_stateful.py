"""A stateful property test of the binding: hypothesis runs random sequences of calls,
valid and invalid mixed, on a pool beside a second live pool and a closed one, and
holds every object to a shadow model of its bytes.

Among the rules are the bad arguments a careless caller passes: ints past their C
type, negative ints, bools, floats, strings; stale, foreign, invented and closed-pool
handles; lengths past the object's slot; map() blocks whose slices are kept, written
and read after the block, also after compaction, migration and release_arena(); map()
objects dropped inside their block. Each must raise its exception and change nothing.
After every step the pools pass zs_pool_check and the model's objects are the pool's.

Bounded for `make test` (a few seconds); ZS_STATEFUL_PROFILE=long runs far more
sequences, longer ones.
"""

import gc
import os

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

import zsmalloc
from zsutil import usable

# No example database: the tests run from a temporary folder, and a failure prints the
# whole call sequence that reproduces it.
_COMMON = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("bounded", max_examples=20, stateful_step_count=40, **_COMMON)
settings.register_profile("long", max_examples=2000, stateful_step_count=150, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("ZS_STATEFUL_PROFILE", "bounded"))

U64 = 2**64
MAX = zsmalloc.MAX_ALLOC_SIZE
MAX_LIVE = 48



def past(bits):
    """Ints outside a C type of `bits` bits: each is refused before any C call (and
    each, truncated, would be a valid value)."""
    top = 2**bits
    return st.one_of(
        st.integers(min_value=top, max_value=2**80),
        st.integers(max_value=-1, min_value=-(2**80)),
        st.sampled_from([top, top + 1, top + 100, -top + 50]),
    )


past_the_type = past(64)  # size_t, unsigned long
past_unsigned_int = past(32)
not_an_int = st.one_of(st.booleans(), st.floats(allow_nan=True), st.text(max_size=3), st.none())


class Obj:
    """The model of one object: its size, its slot (what may be read and written) and
    its bytes, of which the first `known` are defined."""

    def __init__(self, size, slot):
        self.size = size
        self.slot = slot
        self.data = bytearray(slot)
        self.known = 0

    def store(self, data, defined_to=None):
        self.data[: len(data)] = data
        self.known = max(self.known, len(data)) if defined_to is None else defined_to


class PoolModel(RuleBasedStateMachine):
    LAYOUT = "dense"

    live = Bundle("live")

    def __init__(self):
        super().__init__()
        self.pool = zsmalloc.Pool("model", layout=self.LAYOUT, max_pages=4096)
        self.objs = {}  # handle -> Obj
        self.stale = []  # handles freed
        self.kept = []  # slices kept past their map() block, with what they hold
        self.other = zsmalloc.Pool("other", layout=self.LAYOUT, max_pages=64)
        self.theirs = {}
        for i in range(4):
            h = self.other.malloc(100 + i)
            self.other.write(h, bytes([i]) * (100 + i))
            self.theirs[h] = bytes([i]) * (100 + i)
        closed = zsmalloc.Pool("closed", layout=self.LAYOUT, max_pages=64)
        self.closed_handles = [closed.malloc(50) for _ in range(3)]
        closed.close()
        self.closed = closed

    def teardown(self):
        # Nothing is left mapped, dropped blocks included: every object can be freed.
        for h in self.objs:
            self.pool.free(h)
        assert self.pool.info()["live_objects"] == 0
        self.pool.check()
        self.pool.close()
        self.other.close()

    def refused(self, exc, call, *args):
        """`call(*args)` raises `exc` and changes nothing (checked by the invariants)."""
        try:
            call(*args)
        except exc:
            return
        raise AssertionError(f"{call.__name__}{args} did not raise {exc.__name__}")

    # -- allocation -----------------------------------------------------------------

    @precondition(lambda self: len(self.objs) < MAX_LIVE)
    @rule(target=live, size=st.integers(1, MAX))
    def malloc(self, size):
        h = self.pool.malloc(size)
        assert h not in self.objs
        self.objs[h] = Obj(size, usable(self.pool, size))
        return h

    @rule(size=st.one_of(st.just(0), st.integers(MAX + 1, U64 - 1)))
    def malloc_refused_by_the_library(self, size):
        self.refused(ValueError, self.pool.malloc, size)

    @rule(size=past_the_type)
    def malloc_past_size_t(self, size):
        self.refused(ValueError, self.pool.malloc, size)

    @rule(size=not_an_int)
    def malloc_not_an_int(self, size):
        self.refused(TypeError, self.pool.malloc, size)

    @rule(h=consumes(live))
    def free(self, h):
        self.pool.free(h)
        del self.objs[h]
        self.stale.append(h)

    # -- handles not live here ---------------------------------------------------------

    def bad_handles(self, data):
        choices = [
            st.integers(1, 2**16),
            st.integers(2**48, U64 - 4096),  # error handles (at the top) are no-ops
            st.sampled_from(list(self.theirs)),
            st.sampled_from(self.closed_handles),
        ]
        if self.stale:
            choices.append(st.sampled_from(self.stale))
        h = data.draw(st.one_of(choices))
        if h in self.objs:  # an invented value may be live
            return None
        return h

    @rule(data=st.data(), op=st.sampled_from(["free", "read", "write", "map"]))
    def use_a_handle_not_live_here(self, data, op):
        h = self.bad_handles(data)
        if h is None:
            return
        calls = {
            "free": lambda: self.pool.free(h),
            "read": lambda: self.pool.read(h, 1),
            "write": lambda: self.pool.write(h, b"x"),
            "map": lambda: self.pool.map(h, "rw").__enter__(),
        }
        self.refused(ValueError, calls[op])

    @rule(h=st.one_of(past_the_type, not_an_int), op=st.sampled_from(["free", "read", "write", "map"]))
    def use_a_handle_past_unsigned_long(self, h, op):
        calls = {
            "free": lambda: self.pool.free(h),
            "read": lambda: self.pool.read(h, 1),
            "write": lambda: self.pool.write(h, b"x"),
            "map": lambda: self.pool.map(h, "rw"),
        }
        self.refused(TypeError if isinstance(h, (bool, float, str, type(None))) else ValueError, calls[op])

    @rule(h=live)
    def use_a_live_handle_on_other_pools(self, h):
        self.refused(ValueError, self.other.read, h, 1)
        self.refused(ValueError, self.other.free, h)
        self.refused(ValueError, self.closed.read, h, 1)
        self.refused(ValueError, self.closed.free, h)

    # -- contents -----------------------------------------------------------------

    @rule(h=live, data=st.data())
    def write(self, h, data):
        o = self.objs[h]
        payload = data.draw(st.binary(min_size=0, max_size=o.slot))
        self.pool.write(h, payload)
        o.store(payload)

    @rule(h=live, extra=st.integers(1, 64))
    def write_past_the_slot(self, h, extra):
        self.refused(ValueError, self.pool.write, h, b"\xee" * (self.objs[h].slot + extra))

    @rule(h=live, data=st.data())
    def read(self, h, data):
        o = self.objs[h]
        n = data.draw(st.integers(0, o.slot))
        out = self.pool.read(h, n)
        k = min(n, o.known)
        assert len(out) == n and out[:k] == o.data[:k]

    @rule(h=live, n=st.one_of(st.integers(MAX + 1, U64 - 1), past_the_type, not_an_int))
    def read_a_bad_length(self, h, n):
        expected = TypeError if isinstance(n, (bool, float, str, type(None))) else ValueError
        self.refused(expected, self.pool.read, h, n)

    @rule(h=live, extra=st.integers(1, 64))
    def read_past_the_slot(self, h, extra):
        self.refused(ValueError, self.pool.read, h, self.objs[h].slot + extra)

    # -- mappings -------------------------------------------------------------------

    @rule(h=live, mode=st.sampled_from(["rw", "ro", "wo"]), data=st.data(), keep=st.booleans())
    def map(self, h, mode, data, keep):
        o = self.objs[h]
        with self.pool.map(h, mode) as mv:
            assert len(mv) == o.size and mv.readonly == (mode == "ro")
            if mode != "wo":
                k = min(o.size, o.known)
                assert mv[:k] == o.data[:k]
            self.refused(zsmalloc.BusyError, self.pool.free, h)
            # Readers share the object; a writable block holds it alone, against this
            # thread too.
            self.refused(zsmalloc.BusyError, self.pool.write, h, b"x")
            self.refused(zsmalloc.BusyError, lambda: self.pool.map(h, "rw").__enter__())
            if mode == "ro":
                k = min(o.size, o.known)
                assert self.pool.read(h, k) == o.data[:k]
            else:
                self.refused(zsmalloc.BusyError, self.pool.read, h, 1)
                self.refused(zsmalloc.BusyError, lambda: self.pool.map(h, "ro").__enter__())
                at = data.draw(st.integers(0, o.size - 1))
                patch = data.draw(st.binary(min_size=1, max_size=o.size - at))
                mv[at : at + len(patch)] = patch
            content = bytes(mv)
            if keep:
                at = data.draw(st.integers(0, o.size - 1))
                self.kept.append([mv[at:], content[at:]])
        if mode != "ro":
            # A write-only mapping defines the object's bytes, and no more of its slot.
            o.store(content, defined_to=o.size if mode == "wo" else max(o.known, o.size))

    @rule(h=live, mode=st.sampled_from(["rw", "ro", "wo"]))
    def map_dropped_inside_its_block(self, h, mode):
        m = self.pool.map(h, mode)
        view = m.__enter__()
        if not view.readonly:
            view[:] = b"\xdd" * len(view)  # never stored: the block is not left
        del m
        gc.collect()

    @rule(
        h=live, outer_mode=st.sampled_from(["rw", "ro", "wo"]), mode=st.sampled_from(["rw", "ro", "wo"]), data=st.data()
    )
    def map_under_a_dropped_map_of_its_handle(self, h, outer_mode, mode, data):
        o = self.objs[h]
        k = min(o.size, o.known)
        outer = self.pool.map(h, outer_mode)
        view = outer.__enter__()
        if not view.readonly:
            view[:] = b"\xdd" * len(view)  # never stored: the block is not left
        if outer_mode != "ro" or mode != "ro":
            # A writable mapping is its object's only one: the later block is refused
            # while the older one is open; dropped, the older one is ended by the
            # later block's own call, and stores nothing.
            self.refused(zsmalloc.BusyError, lambda: self.pool.map(h, mode).__enter__())
            del outer
            gc.collect()
        with self.pool.map(h, mode) as mv:
            if outer_mode == "ro" and mode == "ro":
                del outer  # the older mapping of the handle, dropped under this block
                gc.collect()
                assert self.pool.read(h, k) == o.data[:k]  # this call ends it
                self.refused(zsmalloc.BusyError, self.pool.free, h)  # the block's holds still
            if mode == "rw":
                assert mv[:k] == o.data[:k]
            if mode != "ro":
                mv[:] = data.draw(st.binary(min_size=o.size, max_size=o.size))
            content = bytes(mv)
        if mode != "ro":
            o.store(content, defined_to=o.size if mode == "wo" else max(o.known, o.size))

    @rule(mode=st.one_of(st.text(max_size=3), st.integers(), st.none()), h=live)
    def map_a_bad_mode(self, mode, h):
        if mode in zsmalloc.MAP_MODES:
            return
        self.refused(TypeError if not isinstance(mode, str) else ValueError, self.pool.map, h, mode)

    @precondition(lambda self: self.kept)
    @rule(data=st.data())
    def use_kept_slices(self, data):
        # Written and read after their block: private bytes, whatever the pool did since.
        for entry in self.kept:
            view, content = entry
            assert bytes(view) == content
            if not view.readonly and len(view):
                b = data.draw(st.integers(0, 255))
                view[0] = b
                entry[1] = bytes([b]) + content[1:]

    # -- the pool as a whole --------------------------------------------------------

    @rule(op=st.sampled_from(["compact", "defragment", "make_adjacent", "release_arena"]))
    def move_things(self, op):
        r = getattr(self.pool, op)()
        assert r >= 0

    @rule(index=st.one_of(past_unsigned_int, not_an_int), op=st.sampled_from(["lookup_class_index", "class_info"]))
    def class_calls_with_bad_ints(self, index, op):
        expected = TypeError if isinstance(index, (bool, float, str, type(None))) else ValueError
        self.refused(expected, getattr(self.pool, op), index)

    @rule()
    def close_is_refused_while_a_block_is_open(self):
        if not self.objs:
            return
        h = next(iter(self.objs))
        with self.pool.map(h, "ro"):
            self.refused(zsmalloc.BusyError, self.pool.close)

    @invariant()
    def pools_hold_what_the_model_says(self):
        self.pool.check()
        self.other.check()
        assert self.pool.info()["live_objects"] == len(self.objs)
        for h, o in self.objs.items():
            k = o.known
            if k:
                assert self.pool.read(h, k) == o.data[:k]
        for h, data in self.theirs.items():
            assert self.other.read(h, len(data)) == data


class KernelPoolModel(PoolModel):
    LAYOUT = "kernel"


TestDense = PoolModel.TestCase
TestDense.settings = PROFILE
TestKernel = KernelPoolModel.TestCase
TestKernel.settings = PROFILE
