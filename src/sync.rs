//! The one place the concurrency primitives come from, so that the loom models can
//! swap in loom's.
//!
//! Every atomic a protocol's argument rests on (the handle slots of `slot.rs`, the
//! handle table's high-water mark, the side-table words, a zspage's frame list, the
//! frame count a zspage's birth checks against the limit), every lock, the epoch
//! collector, and the busy-wait all come from here. Under `--cfg loom` they are loom's
//! model-checked types, or stand-ins built on them (below), so the models in
//! `tests/loom.rs` run the library's own functions. Statistics that no decision rests
//! on (`pool.rs`'s class counters and cumulative counters) use `std`'s atomics
//! directly: loom would only explore their interleavings for nothing.
//!
//! Under loom:
//! - the locks are loom's, behind the `parking_lot` interface the library uses
//!   (`lock()` returns the guard; a poisoned lock is a bug and panics);
//! - the epoch collector is [`epoch`]'s stand-in: a deferred function runs when no
//!   guard is held any more, which is never earlier than crossbeam-epoch would run
//!   it;
//! - [`track_read`] and [`track_write`] report accesses to the arena's bytes to a loom
//!   cell per frame, so a model learns of any two unordered accesses to one frame,
//!   one of them a write (the arena itself is plain memory loom cannot see).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use parking_lot::{Mutex, RwLock, RwLockReadGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

#[cfg(loom)]
pub(crate) use self::loom_locks::{Mutex, RwLock, RwLockReadGuard};

/// Busy-wait politely: a few spins, then give the core away. Used only where the
/// other party holds the state for a bounded, short time (one object copy).
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    if *spins < 64 && !cfg!(loom) {
        core::hint::spin_loop();
        *spins += 1;
    } else {
        yield_now();
    }
}

/// Reports a read of `len` bytes of the arena at `addr` to the loom model (nothing
/// outside loom).
#[inline(always)]
pub(crate) fn track_read(_addr: *const u8, _len: usize) {
    #[cfg(loom)]
    bytes::track(_addr, _len, false);
}

/// Reports a write of `len` bytes of the arena at `addr` to the loom model (nothing
/// outside loom).
#[inline(always)]
pub(crate) fn track_write(_addr: *const u8, _len: usize) {
    #[cfg(loom)]
    bytes::track(_addr, _len, true);
}

/// The epoch collector: crossbeam-epoch, or under loom a stand-in.
pub(crate) mod epoch {
    #[cfg(not(loom))]
    pub(crate) use crossbeam_epoch::{pin, Guard};

    #[cfg(loom)]
    pub(crate) use super::loom_epoch::{pin, Guard};
}

#[cfg(loom)]
mod loom_locks {
    /// `parking_lot::Mutex`'s interface over loom's mutex.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().expect("a lock holder panicked")
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Mutex<T> {
            Mutex::new(T::default())
        }
    }

    /// `parking_lot::RwLock`'s interface over loom's.
    #[derive(Debug)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    pub(crate) type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;

    impl<T> RwLock<T> {
        pub(crate) fn new(v: T) -> RwLock<T> {
            RwLock(loom::sync::RwLock::new(v))
        }

        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().expect("a lock holder panicked")
        }

        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().expect("a lock holder panicked")
        }
    }
}

/// The epoch collector's stand-in under loom: a count of the guards held and the
/// functions deferred; when the count falls to zero, every function deferred so far
/// runs. crossbeam-epoch runs a deferred function once every guard held when it was
/// deferred is gone, which this waits for too (and possibly longer), so a model never
/// frees earlier than the real collector would.
///
/// Its state sits behind a `std` mutex, which loom does not see: the collector is a
/// stand-in, not under test, and a loom mutex would add orderings between every pin
/// and unpin that the real collector does not promise, hiding races in the models.
/// (loom runs one model thread at a time and switches only at its own operations, so
/// this mutex is never contended.)
#[cfg(loom)]
mod loom_epoch {
    use std::sync::Mutex;

    type Deferred = Box<dyn FnOnce() + Send>;

    #[derive(Default)]
    struct Collector {
        guards: usize,
        deferred: Vec<Deferred>,
    }

    loom::lazy_static! {
        static ref COLLECTOR: Mutex<Collector> = Mutex::new(Collector::default());
    }

    /// A pinned participant.
    pub(crate) struct Guard {
        _not_send: std::marker::PhantomData<*const ()>,
    }

    /// Pins the current thread.
    pub(crate) fn pin() -> Guard {
        COLLECTOR.lock().unwrap().guards += 1;
        Guard { _not_send: std::marker::PhantomData }
    }

    fn unpin() {
        let run = {
            let mut c = COLLECTOR.lock().unwrap();
            c.guards -= 1;
            if c.guards == 0 {
                std::mem::take(&mut c.deferred)
            } else {
                Vec::new()
            }
        };
        for f in run {
            f();
        }
    }

    impl Guard {
        /// Runs `f` once no guard is held.
        pub(crate) fn defer<F: FnOnce() -> R + Send + 'static, R>(&self, f: F) {
            COLLECTOR.lock().unwrap().deferred.push(Box::new(move || drop(f())));
        }

        /// Unpins and pins again.
        pub(crate) fn repin(&mut self) {
            unpin();
            COLLECTOR.lock().unwrap().guards += 1;
        }

        /// Nothing to push: deferred functions are global here.
        pub(crate) fn flush(&self) {}
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            unpin();
        }
    }
}

/// Per-frame loom cells that stand for the arena's bytes (see the module comment).
/// Frame granularity: a model must not have two threads write different objects of
/// one frame at once, or it will be told of a race that is not one.
#[cfg(loom)]
mod bytes {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use crate::os::PAGE_SIZE;

    /// A frame's stand-in: it holds nothing, loom only watches who touches it.
    struct Frame(loom::cell::UnsafeCell<()>);

    // SAFETY: the cell holds no data; every access to it goes through loom's checked
    // `with`/`with_mut`, which is what sharing it between threads is for.
    unsafe impl Sync for Frame {}
    // SAFETY: as above.
    unsafe impl Send for Frame {}

    loom::lazy_static! {
        // A std mutex, for the reason given in `loom_epoch`.
        static ref CELLS: Mutex<HashMap<usize, Arc<Frame>>> = Mutex::new(HashMap::new());
    }

    pub(super) fn track(addr: *const u8, len: usize, write: bool) {
        if len == 0 {
            return;
        }
        let first = addr as usize / PAGE_SIZE;
        let last = (addr as usize + len - 1) / PAGE_SIZE;
        for page in first..=last {
            let cell = CELLS
                .lock()
                .unwrap()
                .entry(page)
                .or_insert_with(|| Arc::new(Frame(loom::cell::UnsafeCell::new(()))))
                .clone();
            if write {
                cell.0.with_mut(|_| ());
            } else {
                cell.0.with(|_| ());
            }
        }
    }
}
