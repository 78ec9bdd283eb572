//! What the C ABI keeps between calls: the registry of live pools ([`LIVE`]), and each
//! thread's record of the mappings and reads it has begun and not ended.
//!
//! Mappings and reads in progress are recorded per thread, so that `zs_unmap_object`
//! and `zs_obj_read_end` find the matching begin, and refuse when there is none. The
//! record names a pool by its serial, never by its address: a pool created after
//! another's destruction may get the same address, and must not match the old pool's
//! entries.
//!
//! Pools are registered by serial in [`LIVE`] from creation to destruction. A thread
//! that exits with mappings or reads open has them ended under that registry's lock
//! (each counted as a misuse in its pool), and `zs_destroy_pool` takes the pool out of
//! the registry under the same lock before freeing it: a thread's exit never touches
//! a destroyed pool, and the entries of a destroyed pool, on any thread, are dropped
//! without being followed.

use parking_lot::Mutex;
use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::ffi::c_ulong;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::types::zs_pool;
use crate::error::{keeping_errno, Error};
use crate::facade::Pool;
use crate::handle::slot::Slot;
use crate::pool::access::{MapState, MAP_COPIED, MAP_MODE, MAP_RO, MAP_RW, MAP_WO};
use crate::sync::thread_words;

/// The pools alive through the C ABI, registered from creation to destruction.
///
/// A thread that exits with mappings or reads open ends them under this lock, and
/// `zs_destroy_pool` takes its pool out under it before freeing it: a pool found here
/// stays alive while the lock is held, and one not found is gone, whatever its address
/// holds now.
pub(super) struct LivePools {
    by_serial: BTreeMap<u64, *mut zs_pool>,
    by_addr: BTreeMap<usize, u64>,
}

// SAFETY: the pointers are followed only while the lock around the registry is held
// and the pool is registered (see `end_at_thread_exit`), never through a copy taken
// out of it.
unsafe impl Send for LivePools {}

impl LivePools {
    pub(super) fn insert(&mut self, serial: u64, pool: *mut zs_pool) {
        self.by_serial.insert(serial, pool);
        self.by_addr.insert(pool as usize, serial);
    }

    /// Unregisters the pool at `pool`, if one is registered: returns its serial.
    pub(super) fn remove(&mut self, pool: *mut zs_pool) -> Option<u64> {
        let serial = self.by_addr.remove(&(pool as usize))?;
        self.by_serial.remove(&serial);
        // Relaxed: read only as a hint to look at the registry (under this lock).
        DESTROYED.fetch_add(1, Ordering::Relaxed);
        Some(serial)
    }
}

pub(super) static LIVE: Mutex<LivePools> =
    Mutex::new(LivePools { by_serial: BTreeMap::new(), by_addr: BTreeMap::new() });

/// Pools destroyed so far: a thread looks for stale entries when this has moved.
static DESTROYED: AtomicU64 = AtomicU64::new(0);

/// What a thread has begun and not yet ended. `pool` is the pool's serial.
pub(super) enum Active {
    /// A read-only mapping in place: a pin on `slot`, which its end drops; nothing
    /// to store back. Three words to write and read back: the mapping nearly every
    /// caller makes.
    Shared {
        pool: u64,
        handle: c_ulong,
        slot: NonNull<Slot>,
    },
    /// Any other mapping (writable, or copied).
    Map {
        pool: u64,
        handle: c_ulong,
        state: MapState,
    },
    Read {
        pool: u64,
        handle: c_ulong,
        len: usize,
        ptr: *const u8,
        slot: NonNull<Slot>,
    },
}

/// What a thread has begun and not yet ended, as its list keeps it: five words, no
/// padding and no enum tag to copy, so that recording the read-only mapping most
/// callers make writes five words and its end compares two and reads one.
///
/// `word` is a mapping's first word of [`MapState::into_words`] (`ptr` and `len` its
/// others): a slot's address or a copied mapping's box, with its mode (and
/// `MAP_COPIED`) in the low bits; or, for a read, its slot's address with [`READ`],
/// a value no mapping has (a read-only one in place is `MAP_RO`).
pub(super) struct Entry {
    pool: u64,
    handle: c_ulong,
    word: usize,
    ptr: usize,
    len: usize,
}

/// The entries that are a pin alone, and end with its unpin ([`end_last_pin`]).
pub(super) enum Pinned {
    /// A read-only mapping in place.
    Map,
    /// A read.
    Read,
}

/// The low bits of [`Entry::word`]: those of a mapping's mode and `MAP_COPIED`.
const KIND: usize = MAP_MODE | MAP_COPIED;
/// [`Entry::word`]'s kind for a read: a mode bits value no mapping uses.
const READ: usize = 0b11;
const _: () = assert!(READ & MAP_MODE == READ && READ != MAP_RW && READ != MAP_RO && READ != MAP_WO);

impl Entry {
    /// The entry that records `a`.
    #[inline(always)]
    fn new(a: Active) -> Entry {
        match a {
            Active::Shared { pool, handle, slot } => {
                Entry { pool, handle, word: slot.as_ptr() as usize | MAP_RO, ptr: 0, len: 0 }
            }
            Active::Map { pool, handle, state } => {
                let [word, ptr, len] = state.into_words();
                Entry { pool, handle, word, ptr, len }
            }
            Active::Read { pool, handle, len, ptr, slot } => {
                Entry { pool, handle, word: slot.as_ptr() as usize | READ, ptr: ptr as usize, len }
            }
        }
    }

    /// What the entry records, given back (the entry consumed).
    #[inline(always)]
    fn into_active(self) -> Active {
        let e = ManuallyDrop::new(self);
        let (pool, handle) = (e.pool, e.handle);
        // The address beside the kind: a slot's where the kind has no MAP_COPIED bit.
        // SAFETY: not null: `new` put a slot's address there.
        let slot = || unsafe { NonNull::new_unchecked((e.word & !KIND) as *mut Slot) };
        match e.word & KIND {
            MAP_RO => Active::Shared { pool, handle, slot: slot() },
            READ => Active::Read { pool, handle, len: e.len, ptr: e.ptr as *const u8, slot: slot() },
            // SAFETY: the words of `into_words` (`new`), taken back once: the entry
            // is consumed (and not dropped).
            _ => Active::Map { pool, handle, state: unsafe { MapState::from_words([e.word, e.ptr, e.len]) } },
        }
    }

    fn pool(&self) -> u64 {
        self.pool
    }

    /// Whether this is a mapping of `handle` in the pool with serial `pool`.
    #[inline(always)]
    pub(super) fn is_map_of(&self, pool: u64, handle: c_ulong) -> bool {
        self.pool == pool && self.handle == handle && self.word & KIND != READ
    }

    /// Whether this is a read of `len` bytes of `handle` in the pool with serial
    /// `pool` that gave `ptr`.
    #[inline(always)]
    pub(super) fn is_read_of(&self, pool: u64, handle: c_ulong, len: usize, ptr: *const u8) -> bool {
        self.pool == pool
            && self.handle == handle
            && self.word & KIND == READ
            && self.len == len
            && self.ptr == ptr as usize
    }
}

impl Drop for Entry {
    /// Drops what the entry owns: a copied mapping's buffer (an entry dropped without
    /// being ended: its pool was destroyed).
    fn drop(&mut self) {
        let e = Entry { ..*self };
        drop(e.into_active());
    }
}

/// A thread's open mappings and reads.
///
/// It has no destructor (its list is `ManuallyDrop`): a thread-local without one is
/// reached with no state to check, and its first use registers nothing, so neither
/// allocates nor touches errno. Ending what a thread left open is [`ExitGuard`]'s,
/// registered when the list first allocates.
struct ThreadActive {
    open: ManuallyDrop<Vec<Entry>>,
    /// `DESTROYED` when `open` was last cleared of destroyed pools' entries.
    destroys_seen: u64,
}

impl ThreadActive {
    /// Drops the entries of pools destroyed since the last look. Their pins went with
    /// their pools; only the records (and a copied mapping's buffer) are left.
    #[cold]
    #[inline(never)]
    fn forget_destroyed(&mut self) {
        // Relaxed: a stale value only delays the clean-up to a later call; the
        // registry itself is read under its lock.
        let destroyed = DESTROYED.load(Ordering::Relaxed);
        if destroyed != self.destroys_seen {
            self.destroys_seen = destroyed;
            let live = LIVE.lock();
            self.open.retain(|a| live.by_serial.contains_key(&a.pool()));
        }
    }

    /// Pushes `e` where the list is full: grows it, first registering this thread's
    /// [`ExitGuard`] when the list has never allocated. Gives back what `e` records
    /// when the guard is gone (a call made from a thread-local destructor that runs
    /// after it). errno is kept: the C ABI's access calls leave it alone on success
    /// without saving it (`ffi_boundary!`), and the allocation, or the registration,
    /// may set it.
    #[cold]
    #[inline(never)]
    fn push_growing(&mut self, pool: u64, handle: c_ulong, word: usize, ptr: usize, len: usize) -> Result<(), Active> {
        // Passed in registers: an `Entry` would be stored on the way to the push in
        // place too.
        let e = Entry { pool, handle, word, ptr, len };
        keeping_errno(|| {
            if self.open.capacity() == 0 && EXIT.try_with(|_| ()).is_err() {
                return Err(e.into_active());
            }
            self.open.push(e);
            Ok(())
        })
    }
}

/// Ends what its thread left open when the thread exits (the list's own destructor,
/// which [`ThreadActive`] leaves out), and frees the list.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        // The list has no destructor, so it is still there, whatever ran before.
        let open = with_active(|t| std::mem::take(&mut *t.open));
        if !open.is_empty() {
            end_at_thread_exit(open);
        }
    }
}

/// Ends what an exiting thread left open, most recent first: a mapping is stored back
/// (unless read-only) and unpinned, a read unpinned, each counted as a misuse in its
/// pool (and, under `ZSMALLOC_ABORT_ON_MISUSE=1`, reported and aborted on). Entries
/// of destroyed pools are dropped.
#[cold]
fn end_at_thread_exit(open: Vec<Entry>) {
    let live = LIVE.lock();
    for e in open.into_iter().rev() {
        let Some(&pool) = live.by_serial.get(&e.pool()) else { continue };
        let a = e.into_active();
        // SAFETY: registered, so alive, and it stays so while we hold the lock, which
        // zs_destroy_pool takes to unregister it before freeing it.
        let p = unsafe { &(*pool).pool };
        match a {
            Active::Shared { handle, slot, .. } => {
                // SAFETY: the entry was recorded by zs_map_object on this thread for
                // this pool (its serial, looked up above) with the slot of the pin it
                // took; taking the thread's list ended every other use of it.
                unsafe { p.unpin_slot(slot) };
                p.misuse("zs_map_object", handle as u64, Error::Invalid("mapping still open when its thread exited"));
            }
            Active::Map { handle, state, .. } => {
                end_map_cold(p, state);
                p.misuse("zs_map_object", handle as u64, Error::Invalid("mapping still open when its thread exited"));
            }
            Active::Read { handle, slot, .. } => {
                // SAFETY: the entry was recorded by zs_obj_read_begin on this thread
                // for this pool (its serial, looked up above) with the slot of the pin
                // it took; taking the thread's list ended every other use of it.
                unsafe { p.unpin_slot(slot) };
                p.misuse("zs_obj_read_begin", handle as u64, Error::Invalid("read still open when its thread exited"));
            }
        }
    }
}

/// Ends a mapping off the hot path (at thread exit), so that `zs_unmap_object` stays
/// the one hot caller of `map_end`.
#[cold]
#[inline(never)]
fn end_map_cold(p: &Pool, state: MapState) {
    p.map_end(state)
}

thread_local! {
    // An `UnsafeCell`, not a `RefCell`: `with_active` is the one way in, and nothing
    // that runs inside it comes back to it (see there), so a borrow flag would only
    // cost each call its test and two stores.
    static ACTIVE: UnsafeCell<ThreadActive> =
        const { UnsafeCell::new(ThreadActive { open: ManuallyDrop::new(Vec::new()), destroys_seen: 0 }) };
    static EXIT: ExitGuard = const { ExitGuard };
}

/// Runs `f` on this thread's record: the only way to it.
///
/// Each `f` given here (all in this module) works on the list alone: it pushes, pops,
/// searches, drops entries (a copied mapping's buffer goes back to the heap), grows
/// the list, registers the [`ExitGuard`] (which runs later, at the thread's exit) or
/// locks the registry of live pools; what callers pass in runs inside it too, and
/// only compares entries (`take_active`'s and `end_last_pin`'s `matches`) or unpins
/// a slot (`end_last_pin`'s `end`). None of them reaches this function again, so the
/// `&mut` it makes is the only reference to the record while it lives.
///
/// Only the record's address comes out of `LocalKey::with`, whose small closure is
/// inlined; `f` runs here, in the caller's frame. With `f` inside the thread-local's
/// access, the compiler kept that access out of line and the entry went through memory
/// into it, and reading it back, wider than it was written, stalled: a third of a
/// map+unmap pair's time in the C ABI.
#[inline(always)]
fn with_active<R>(f: impl FnOnce(&mut ThreadActive) -> R) -> R {
    // The record has no destructor, so it is there for the thread's whole life, in
    // thread-local destructors too: `with` does not fail.
    let t = match thread_words::get(thread_words::ACTIVE) {
        0 => active_here(),
        a => a as *mut ThreadActive,
    };
    // SAFETY: the record lives as long as its thread (no destructor ends it), and
    // this call runs on that thread, so no other thread touches it; no other
    // reference to it lives meanwhile, as `f` does not come back here (above). The
    // address is used for this call only.
    f(unsafe { &mut *t })
}

/// The address of this thread's record, kept in its word of `sync::thread_words` for
/// the next calls.
#[cold]
#[inline(never)]
fn active_here() -> *mut ThreadActive {
    let t: *mut ThreadActive = ACTIVE.with(|t| t.get());
    thread_words::set(thread_words::ACTIVE, t as usize);
    t
}

/// Records a mapping or read begun on this thread; gives it back when the thread's
/// end of what it left open has already run (a call made from a thread-local
/// destructor that runs after it): the caller then undoes the begin. Leaves errno
/// alone.
#[inline(always)]
pub(super) fn push_active(a: Active) -> Result<(), Active> {
    let e = Entry::new(a);
    with_active(move |t| {
        if t.open.len() == t.open.capacity() {
            let e = ManuallyDrop::new(e);
            return t.push_growing(e.pool, e.handle, e.word, e.ptr, e.len);
        }
        t.open.push(e);
        Ok(())
    })
}

/// Drops this thread's entries of destroyed pools. Called where a thread ends
/// something that matches none of its entries (a misuse, off the hot path): only a
/// program that destroys pools while other threads hold mappings in them leaves
/// stale entries, and they go at the latest when their thread exits.
#[cold]
pub(super) fn forget_destroyed_here() {
    with_active(|t| t.forget_destroyed())
}

/// Removes this thread's most recent entry that `matches`.
#[inline(always)]
pub(super) fn take_active(matches: impl Fn(&Entry) -> bool + Copy) -> Option<Active> {
    with_active(|t| {
        // Nearly always the last entry (what a caller began last it ends first): one
        // comparison and a pop, the search for an earlier one out of line.
        if matches(t.open.last()?) {
            return t.open.pop().map(Entry::into_active);
        }
        take_earlier(t, matches).map(Entry::into_active)
    })
}

/// Ends this thread's last entry if it is a pin alone of kind `kind` (a read-only
/// mapping in place, or a read: what nearly every unmap or
/// read end finds) and `matches`: calls `end` with the slot of its pin, then removes
/// the entry; true. Otherwise false and nothing changes (the caller goes on with
/// [`take_active`]).
///
/// `end` (the unpin, a locked instruction) runs before the list's length is stored,
/// so that it does not wait for that store to leave the store buffer.
#[inline(always)]
pub(super) fn end_last_pin(kind: Pinned, matches: impl Fn(&Entry) -> bool, end: impl FnOnce(NonNull<Slot>)) -> bool {
    let kind = match kind {
        Pinned::Map => MAP_RO,
        Pinned::Read => READ,
    };
    with_active(|t| {
        let Some(last) = t.open.last() else { return false };
        if last.word & KIND != kind || !matches(last) {
            return false;
        }
        // SAFETY: not null: a slot's address, which `Entry::new` put there for a
        // read-only mapping in place (MAP_RO) and for a read (READ).
        end(unsafe { NonNull::new_unchecked((last.word & !KIND) as *mut Slot) });
        // The entry owns nothing (no buffer): removed without a drop.
        let len = t.open.len() - 1;
        // SAFETY: `len` is below the length, and the entry past it needs no drop.
        unsafe { t.open.set_len(len) };
        true
    })
}

/// [`take_active`] for an entry before the last.
#[cold]
#[inline(never)]
fn take_earlier(t: &mut ThreadActive, matches: impl Fn(&Entry) -> bool) -> Option<Entry> {
    let i = t.open.iter().rposition(matches)?;
    Some(t.open.remove(i))
}

/// Drops this thread's entries of the pool with serial `serial`, which is being
/// destroyed: their pins go with the pool.
pub(super) fn forget_pool_here(serial: u64) {
    with_active(|t| t.open.retain(|a| a.pool() != serial))
}
