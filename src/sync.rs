//! The one place the concurrency primitives come from, so that the loom models can
//! swap in loom's.
//!
//! Every atomic a protocol's argument rests on (the handle slots of `handle/slot.rs`, the
//! handle table's high-water mark, the side-table words, a zspage's frame list, the
//! frame count a zspage's birth checks against the limit), every lock, the epoch
//! collector, and the busy-wait all come from here. Under `--cfg loom` they are loom's
//! model-checked types, or stand-ins built on them (below), so the models in
//! `tests/loom.rs` run the library's own functions. Statistics that no decision rests
//! on (`pool/mod.rs`'s class counters and cumulative counters) use `std`'s atomics
//! directly: loom would only explore their interleavings for nothing.
//!
//! Under loom:
//! - the lanes' lock ([`LaneLock`], `sync/lane.rs`) is the library's own, built on
//!   loom's atomics, its futex wait a bounded yield; the other locks are loom's, behind
//!   the `parking_lot` interface the library uses (`lock()` returns the guard; a
//!   poisoned lock is a bug and panics);
//! - the epoch collector is [`epoch`]'s stand-in: a deferred function runs when no
//!   guard is held any more, which is never earlier than crossbeam-epoch would run
//!   it;
//! - [`track_read`] and [`track_write`] report accesses to the arena's bytes to a loom
//!   cell per 4 KiB, so a model learns of any two unordered accesses to the same
//!   4 KiB, one of them a write (the arena itself is plain memory loom cannot see).
//!
//! Built with `--cfg zs_valgrind` (only for `make test-c-helgrind`), the same places
//! tell valgrind's race detector, helgrind, what it cannot see for itself ([`hg`]):
//! helgrind knows pthread's locks and nothing else, neither atomics nor the futex-based
//! locks of parking_lot. Each Release that a protocol relies on declares a
//! happens-before edge on its atomic, each Acquire that pairs with it the other end;
//! the locks declare theirs on unlock and lock; the epoch collector's deferred
//! functions run after every guard dropped before them; and memory that is only ever
//! accessed atomically is not checked (its concurrent accesses are the protocol, not a
//! race). Everything else (objects' bytes, zspage state, the class lists, the frame
//! lists) is checked against those edges.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(all(not(loom), zs_valgrind))]
pub(crate) use self::annotated_locks::{Mutex, RwLock, RwLockReadGuard};
#[cfg(all(not(loom), not(zs_valgrind)))]
pub(crate) use parking_lot::{Mutex, RwLock, RwLockReadGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

#[cfg(loom)]
pub(crate) use self::loom_locks::{Mutex, RwLock, RwLockReadGuard};

mod lane;
pub use lane::{LaneGuard, LaneLock};

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

/// Asks the processor to bring the cache line at `addr` in, without waiting for it:
/// for a line to be read a little later whose address is known now, so that its miss
/// overlaps others. A hint, not an access: `addr` need not be valid, and nothing is
/// read (so nothing here for loom or helgrind to see).
#[inline(always)]
pub(crate) fn prefetch(_addr: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // SAFETY: a prefetch changes no memory and faults on no address (SSE, part of
    // every x86_64).
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(_addr.cast())
    };
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

/// The epoch collector: crossbeam-epoch, or under loom a stand-in (with
/// `zs_valgrind`, crossbeam-epoch with its ordering declared to helgrind).
pub(crate) mod epoch {
    #[cfg(all(not(loom), not(zs_valgrind)))]
    pub(crate) use crossbeam_epoch::{pin, Guard};

    #[cfg(all(not(loom), zs_valgrind))]
    pub(crate) use super::annotated_epoch::{pin, Guard};

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

/// Loom cells that stand for the arena's bytes, one per 4 KiB (see the module
/// comment). An access reports every cell its byte range touches, so two accesses
/// that share a byte share a cell, whatever the frame size: a real race is never
/// missed. The converse does not hold: a model must not have two threads write
/// different objects of one 4 KiB at once, or it will be told of a race that is not
/// one. At 4 KiB frames a cell is a frame; a frame of 16 or 64 KiB is 4 or 16 cells,
/// which sees no more false races than a cell per frame would, and fewer.
#[cfg(loom)]
mod bytes {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// Bytes a cell stands for: the smallest frame, so that a cell never spans two
    /// frames whatever a model's frame size (frames are multiples of 4 KiB, aligned to
    /// the system's page).
    const CELL_BYTES: usize = 4096;

    /// The stand-in for 4 KiB of the arena: it holds nothing, loom only watches who
    /// touches it.
    struct Cell(loom::cell::UnsafeCell<()>);

    // SAFETY: the cell holds no data; every access to it goes through loom's checked
    // `with`/`with_mut`, which is what sharing it between threads is for.
    unsafe impl Sync for Cell {}
    // SAFETY: the cell holds no data that could be sent; loom checks every access.
    unsafe impl Send for Cell {}

    loom::lazy_static! {
        // A std mutex, for the reason given in `loom_epoch`.
        static ref CELLS: Mutex<HashMap<usize, Arc<Cell>>> = Mutex::new(HashMap::new());
    }

    pub(super) fn track(addr: *const u8, len: usize, write: bool) {
        if len == 0 {
            return;
        }
        let first = addr as usize / CELL_BYTES;
        let last = (addr as usize + len - 1) / CELL_BYTES;
        for n in first..=last {
            let cell = CELLS
                .lock()
                .unwrap()
                .entry(n)
                .or_insert_with(|| Arc::new(Cell(loom::cell::UnsafeCell::new(()))))
                .clone();
            if write {
                cell.0.with_mut(|_| ());
            } else {
                cell.0.with(|_| ());
            }
        }
    }
}

/// Happens-before annotations for helgrind (see the module comment). Without
/// `--cfg zs_valgrind` they compile to nothing; with it, each is one valgrind client
/// request, which costs a few instructions outside valgrind.
pub(crate) mod hg {
    /// What this thread has done so far happens before whatever a thread does after
    /// a later [`happens_after`] on the same `tag` (an atomic's address).
    #[inline(always)]
    pub(crate) fn happens_before<T: ?Sized>(_tag: &T) {
        #[cfg(zs_valgrind)]
        client::request(client::SEND_PRE, _tag as *const T as *const u8 as usize, 0);
    }

    /// See [`happens_before`].
    #[inline(always)]
    pub(crate) fn happens_after<T: ?Sized>(_tag: &T) {
        #[cfg(zs_valgrind)]
        client::request(client::RECV_POST, _tag as *const T as *const u8 as usize, 0);
    }

    /// `len` bytes at `addr` are only ever accessed atomically: helgrind does not
    /// check them.
    #[inline(always)]
    pub(crate) fn untracked(_addr: *const u8, _len: usize) {
        #[cfg(zs_valgrind)]
        client::request(client::UNTRACKED, _addr as usize, _len);
    }

    /// Undoes [`untracked`] for memory about to be freed (and reused for anything), and
    /// has helgrind check memory it would not (see `FrameSource::grow`).
    #[inline(always)]
    pub(crate) fn tracked(_addr: *const u8, _len: usize) {
        #[cfg(zs_valgrind)]
        client::request(client::TRACKED, _addr as usize, _len);
    }

    /// Valgrind's client requests: a special instruction sequence that does nothing
    /// natively and that valgrind recognises, with the request in a block of six
    /// words. The request numbers are helgrind's ABI (`valgrind/helgrind.h`, whose
    /// enum must never be reordered): `VG_USERREQ_TOOL_BASE('H','G')` + 0x121 ..
    /// 0x128.
    #[cfg(zs_valgrind)]
    mod client {
        pub(super) const SEND_PRE: usize = 0x4847_0121;
        pub(super) const RECV_POST: usize = 0x4847_0122;
        pub(super) const UNTRACKED: usize = 0x4847_0127;
        pub(super) const TRACKED: usize = 0x4847_0128;

        #[inline(always)]
        pub(super) fn request(req: usize, a1: usize, a2: usize) {
            let args: [usize; 6] = [req, a1, a2, 0, 0, 0];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the four rotations of rdi add up to two whole turns (rdi ends as
            // it began) and `xchg rbx, rbx` changes nothing: natively the sequence is
            // a no-op. Under valgrind it reads `args` (alive across the block) and
            // writes the result to rdx, declared clobbered.
            unsafe {
                std::arch::asm!(
                    "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51", "xchg rbx, rbx",
                    in("rax") args.as_ptr(),
                    inout("rdx") 0usize => _,
                    inout("rdi") 0usize => _,
                    options(nostack),
                );
            }
            #[cfg(target_arch = "aarch64")]
            // SAFETY: the four rotations of x12 add up to two whole turns (x12 ends as
            // it began) and `orr x10, x10, x10` changes nothing: natively the sequence
            // is a no-op. Under valgrind it reads `args` (alive across the block) and
            // writes the result to x3, declared clobbered.
            unsafe {
                std::arch::asm!(
                    "ror x12, x12, #3", "ror x12, x12, #13", "ror x12, x12, #51", "ror x12, x12, #61",
                    "orr x10, x10, x10",
                    in("x4") args.as_ptr(),
                    inout("x3") 0usize => _,
                    inout("x12") 0usize => _,
                    options(nostack),
                );
            }
            let _ = args;
        }
    }
}

/// parking_lot's locks, declaring their ordering to helgrind: the guard's drop
/// happens before the next acquisition.
#[cfg(all(not(loom), zs_valgrind))]
mod annotated_locks {
    use super::hg;

    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    pub(crate) struct MutexGuard<'a, T>(&'a parking_lot::Mutex<T>, parking_lot::MutexGuard<'a, T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Mutex<T> {
            Mutex(parking_lot::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.untrack_lock_word();
            let g = self.0.lock();
            hg::happens_after(&self.0);
            MutexGuard(&self.0, g)
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.untrack_lock_word();
            let g = self.0.try_lock()?;
            hg::happens_after(&self.0);
            Some(MutexGuard(&self.0, g))
        }

        /// The value, through the only reference to the lock: no locking, and no
        /// ordering to declare.
        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut()
        }

        /// The lock word is parking_lot's, only ever accessed atomically (here, once
        /// the lock is in place, on every use: this build is for helgrind only).
        fn untrack_lock_word(&self) {
            // SAFETY: `raw` is unsafe because the raw lock could be unlocked under a
            // guard; we only take its address, for the size of its type.
            let raw = unsafe { self.0.raw() };
            hg::untracked((raw as *const parking_lot::RawMutex).cast(), std::mem::size_of::<parking_lot::RawMutex>());
        }
    }

    impl<T> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.1
        }
    }

    impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.1
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        fn drop(&mut self) {
            // Before the unlock, which the field's drop does after this.
            hg::happens_before(self.0);
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(parking_lot::RwLock<T>);

    /// The lock's guard, with the lock it declares its edge on (the guard is dropped,
    /// unlocking, after the edge is declared).
    pub(crate) struct RwLockReadGuard<'a, T> {
        lock: &'a parking_lot::RwLock<T>,
        _held: parking_lot::RwLockReadGuard<'a, T>,
    }

    /// As [`RwLockReadGuard`].
    pub(crate) struct RwLockWriteGuard<'a, T> {
        lock: &'a parking_lot::RwLock<T>,
        _held: parking_lot::RwLockWriteGuard<'a, T>,
    }

    impl<T> RwLock<T> {
        pub(crate) fn new(v: T) -> RwLock<T> {
            RwLock(parking_lot::RwLock::new(v))
        }

        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.untrack_lock_word();
            let g = self.0.read();
            hg::happens_after(&self.0);
            RwLockReadGuard { lock: &self.0, _held: g }
        }

        pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.untrack_lock_word();
            let g = self.0.write();
            hg::happens_after(&self.0);
            RwLockWriteGuard { lock: &self.0, _held: g }
        }
    }

    impl<T> RwLock<T> {
        /// As `Mutex::untrack_lock_word`.
        fn untrack_lock_word(&self) {
            // SAFETY: `raw` is unsafe because the raw lock could be unlocked under a
            // guard; we only take its address, for the size of its type.
            let raw = unsafe { self.0.raw() };
            hg::untracked((raw as *const parking_lot::RawRwLock).cast(), std::mem::size_of::<parking_lot::RawRwLock>());
        }
    }

    impl<T> Drop for RwLockReadGuard<'_, T> {
        fn drop(&mut self) {
            hg::happens_before(self.lock);
        }
    }

    impl<T> Drop for RwLockWriteGuard<'_, T> {
        fn drop(&mut self) {
            hg::happens_before(self.lock);
        }
    }
}

/// crossbeam-epoch, declaring to helgrind the one ordering the library relies on: a
/// function deferred while guards were held runs after those guards are dropped.
/// Every guard's drop (and repin) happens before every deferred function, which is
/// more than crossbeam promises, never less.
#[cfg(all(not(loom), zs_valgrind))]
mod annotated_epoch {
    use super::hg;

    /// The tag the epoch's edges are declared on.
    static EPOCH: u8 = 0;

    pub(crate) struct Guard(crossbeam_epoch::Guard);

    pub(crate) fn pin() -> Guard {
        Guard(crossbeam_epoch::pin())
    }

    impl Guard {
        pub(crate) fn defer<F: FnOnce() -> R + Send + 'static, R>(&self, f: F) {
            self.0.defer(move || {
                hg::happens_after(&EPOCH);
                f()
            });
        }

        pub(crate) fn repin(&mut self) {
            hg::happens_before(&EPOCH);
            self.0.repin();
        }

        pub(crate) fn flush(&self) {
            self.0.flush();
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            hg::happens_before(&EPOCH);
        }
    }
}

/// Two words per thread for the hot paths, reached without a call: the thread's lane
/// (`layout/classes.rs`) and the address of its record of open mappings and reads
/// (`ffi/active.rs`), each 0 until the thread first needs it.
///
/// A `thread_local!` in a shared library is reached through the general-dynamic TLS
/// model: a call to `__tls_get_addr` on every access (11 instructions behind the call,
/// in glibc), which stable Rust offers no way to change. These words are declared in
/// assembly in the `.tbss` section and reached through the initial-exec model: the
/// word's offset from the thread pointer, from the GOT, plus the thread pointer (`%fs:0`
/// holds its own address on x86-64): two loads. The library is then marked as using
/// static TLS (`DF_STATIC_TLS`): its whole TLS block (304 bytes as built for x86-64,
/// the standard library's and its dependencies' thread-locals with these 16) is placed
/// beside the threads' own, and a `dlopen` of it takes those bytes from glibc's
/// surplus for such libraries (512 by default, `glibc.rtld.optional_static_tls`); a
/// process that has used up the surplus gets "cannot allocate memory in static TLS
/// block" from that `dlopen` (README, "Limits"), as with jemalloc. Elsewhere (other
/// architectures, loom, miri) the words are an ordinary `thread_local!`.
pub(crate) mod thread_words {
    /// Index of the thread's lane number plus one (0: not yet taken).
    pub(crate) const LANE: usize = 0;
    /// Index of the address of the thread's record of open mappings (0: not yet known).
    // The C ABI's record of mappings, which uses it, is left out of loom builds.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) const ACTIVE: usize = 1;

    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom), not(miri)))]
    std::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".globl zsmalloc_thread_words",
        ".hidden zsmalloc_thread_words",
        ".type zsmalloc_thread_words,@object",
        ".size zsmalloc_thread_words,16",
        "zsmalloc_thread_words:",
        ".zero 16",
        ".popsection",
    );

    /// The address of this thread's word `i` (`LANE` or `ACTIVE`), valid on this
    /// thread for its whole life.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom), not(miri)))]
    #[inline(always)]
    fn word(i: usize) -> *mut usize {
        let base: usize;
        // SAFETY: reads the GOT entry the linker fills with the words' offset from the
        // thread pointer (an initial-exec TLS relocation against the symbol declared
        // above), and adds the thread pointer, which `%fs:0` holds on x86-64 (the TCB's
        // self-pointer of the ABI). Writes only the output register; the flags are
        // clobbered (`add`), which `asm!` assumes without `preserves_flags`.
        unsafe {
            std::arch::asm!(
                "mov {b}, qword ptr [rip + zsmalloc_thread_words@GOTTPOFF]",
                "add {b}, qword ptr fs:[0]",
                b = out(reg) base,
                options(nostack, pure, readonly),
            )
        };
        (base as *mut usize).wrapping_add(i)
    }

    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom), not(miri))))]
    std::thread_local! {
        static WORDS: [std::cell::Cell<usize>; 2] = const { [std::cell::Cell::new(0), std::cell::Cell::new(0)] };
    }

    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom), not(miri))))]
    #[inline(always)]
    fn word(i: usize) -> *mut usize {
        // No destructor: the words last as long as the thread, so `with` does not fail.
        WORDS.with(|w| w[i].as_ptr())
    }

    /// This thread's word `i`.
    #[inline(always)]
    pub(crate) fn get(i: usize) -> usize {
        // SAFETY: `word` gives the address of this thread's word, aligned, valid for the
        // thread's life and accessed by no other thread.
        unsafe { *word(i) }
    }

    /// Sets this thread's word `i`.
    #[inline(always)]
    pub(crate) fn set(i: usize, v: usize) {
        // SAFETY: as in `get`.
        unsafe { *word(i) = v }
    }
}
