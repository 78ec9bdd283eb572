//! The lanes' lock (`Class::state`, `pool/mod.rs`): one compare-and-swap to take it
//! when it is free, one plain store to release it when no thread sleeps on it, and
//! waiters that sleep (a futex wait) rather than spin while the holder is preempted.
//!
//! parking_lot's mutex, which the lanes used before, releases with a
//! compare-and-swap, because its unlock must learn whether a thread is parked on the
//! lock; on x86 that is a locked instruction, which waits for the store buffer to
//! drain, and a malloc+free pair takes the lock twice (docs/hot-paths.md, "A lane lock
//! whose unlock is a plain store"). Here the unlock is a Release store of the lock
//! word (a `mov` on x86) followed by a plain load of a count of sleepers, kept beside
//! the word on the same cache line.
//!
//! # The protocol
//!
//! The lock word is [`FREE`], [`HELD`], or [`HANDED`] (released by a fair unlock for a
//! thread that has waited: see below).
//!
//! - *lock*: compare-and-swap `FREE` -> `HELD` (Acquire). If that fails: watch the
//!   word a bounded number of rounds, pausing (the holder is usually a few hundred
//!   nanoseconds from releasing), then yielding the CPU a few times; then register in
//!   `sleepers` (an atomic add), read the word again, and, if it is still taken, sleep
//!   on it (`futex_wait` while it reads what was read) for at most [`WAIT_NS`];
//!   deregister (or be deregistered by the thread that woke it), and start over.
//! - *unlock*: store `FREE` (Release); then load `sleepers` (Relaxed, a plain load);
//!   if it is not zero, `futex_wake` one thread, and if one was woken, deregister it
//!   (so that the unlocks made before it runs again, which may be long with more
//!   threads than CPUs, do not each make a system call for it).
//! - *try_lock*: one compare-and-swap `FREE` -> `HELD`.
//!
//! # Why a wake-up may be missed, and why that costs at most [`WAIT_NS`]
//!
//! The unlock's store and its load of `sleepers` are not ordered against each other
//! (the store may still sit in the store buffer when the load reads: x86 reorders a
//! store with a later load, and so does the language's memory model without a
//! SeqCst fence between them). So this can happen: the unlock reads `sleepers` as 0;
//! a waiter then registers, reads the word, still sees it taken (the unlocking
//! thread's store not yet visible) and enters `futex_wait`, whose own check of the
//! word (done in the kernel, under the futex's lock) may also come before the store
//! is visible. Then the waiter sleeps and no wake-up comes. The window is the few
//! nanoseconds a store spends in the buffer, and nothing follows from it but a late
//! waiter: every wait is bounded by [`WAIT_NS`], after which the waiter reads the
//! word again and finds it free. A missed wake-up delays one waiter by at most that;
//! it never loses the lock and never hangs. Mutual exclusion rests on the word's
//! compare-and-swaps alone, never on `sleepers`. Closing the window would cost the
//! unlock a fence (a locked instruction again), the thing this lock exists to avoid.
//!
//! # The fair unlock
//!
//! [`LaneGuard::unlock_fair`] is for a holder that takes the lock back at once, in a
//! loop (the compactor, one source zspage a hold). With a plain unlock it would take
//! the lock again before a woken waiter runs, every time, and starve it
//! (docs/hot-paths.md, "A compactor called back to back"). If threads sleep on the
//! lock, the fair unlock stores `HANDED` (Release) instead of `FREE` and wakes one.
//! `HANDED` is taken (compare-and-swap `HANDED` -> `HELD`, Acquire) only by a thread
//! that has returned from a wait on the lock in this call of `lock`: the woken one,
//! or another that was waiting too; never by the fast path, `try_lock` or a thread
//! still spinning before its first wait, so the releasing thread, coming back at
//! once, waits its turn. If the wake-up found no thread asleep in the kernel (the
//! registered ones were between their registration and their wait, or just woken by
//! a time-out), the unlock puts the word back to `FREE` (a compare-and-swap, which
//! fails if a returning waiter took it meanwhile) and wakes again if anyone is
//! registered, as a plain unlock would: a waiter that went to sleep on `HANDED` in
//! between is woken by that, and at worst by its time-out.
//!
//! # Under loom and for helgrind
//!
//! Under `--cfg loom` the words are loom's atomics (from `crate::sync`) and the
//! protected value is a loom cell, taken for writing for as long as a guard lives, so
//! the models (`tests/loom.rs`) check this lock's own code: two guards alive at once,
//! or a critical section not ordered before the next one, is a reported race. The
//! futex wait is a yield (after checking the word, as the kernel does), bounded like
//! the real one, and ends as a time-out; the wake finds no thread asleep, so a fair
//! unlock stores `HANDED` and puts `FREE` back, and the models explore a waiter taking
//! the lock in between. Built with `--cfg zs_valgrind`, the lock declares its
//! happens-before edge to helgrind (unlock before the next lock), which cannot see
//! futexes, and its words are left unchecked (only ever accessed atomically).

use super::{hg, AtomicU32, Ordering};
use std::marker::PhantomData;

/// The lock word: free.
const FREE: u32 = 0;
/// The lock word: held.
const HELD: u32 = 1;
/// The lock word: released by a fair unlock to a thread that has waited for it.
const HANDED: u32 = 2;

/// Rounds of watching a taken lock before sleeping on it: in the first [`PAUSES`]
/// rounds, 2, 4, 8 .. `pause`s (each about 40 ns on recent x86, a few on older parts:
/// longer than a malloc or free holds the lock), then a `sched_yield` a round, as
/// parking_lot's spinning does. The yields matter with more threads than CPUs: a
/// waiter that kept spinning would keep two threads of one lane taking turns on a
/// CPU while a thread of another lane, ready to run, waits for one; yielding gives it
/// the CPU.
const SPINS: u32 = if cfg!(loom) { 1 } else { 10 };

/// Rounds of [`SPINS`] that pause rather than yield.
const PAUSES: u32 = 3;

/// The longest one wait sleeps, in nanoseconds: what a missed wake-up can cost a
/// waiter (see the module comment). A waiter for a lock held longer (a holder
/// preempted, a compaction's source zspage) wakes this often, finds it held, and
/// sleeps again: one system call each time, a few microseconds in 200.
const WAIT_NS: u32 = 200_000;

#[cfg(loom)]
type Cell<T> = loom::cell::UnsafeCell<T>;
#[cfg(not(loom))]
type Cell<T> = std::cell::UnsafeCell<T>;

/// A mutual-exclusion lock for a lane's state: see the module comment. The interface
/// is the part of parking_lot's `Mutex` the library uses: `lock`, `try_lock`, a guard
/// that unlocks when dropped, and a fair unlock.
pub struct LaneLock<T> {
    /// [`FREE`], [`HELD`] or [`HANDED`]; the futex word.
    word: AtomicU32,
    /// Threads registered to sleep on the lock (or about to, or just woken): the unlock
    /// wakes one when this is not zero.
    sleepers: AtomicU32,
    data: Cell<T>,
}

// SAFETY: the lock hands the value to one thread at a time (the word's
// compare-and-swaps decide which), with the previous holder's writes ordered before
// the next holder's accesses (Release on every store that releases, Acquire on every
// compare-and-swap that takes): what sending the value from thread to thread needs,
// so `T: Send` suffices, as for `std::sync::Mutex`.
unsafe impl<T: Send> Sync for LaneLock<T> {}
// SAFETY: the lock owns its value; sending it sends the value.
unsafe impl<T: Send> Send for LaneLock<T> {}

/// Holds a [`LaneLock`]; unlocks when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct LaneGuard<'a, T> {
    lock: &'a LaneLock<T>,
    /// Under loom, the model's record of this thread's access to the value, from the
    /// lock to the unlock.
    #[cfg(loom)]
    access: Option<loom::cell::MutPtr<T>>,
    /// Not `Send`, as parking_lot's guard: unlocked on the thread that locked.
    _not_send: PhantomData<*const ()>,
}

impl<T> LaneLock<T> {
    pub fn new(v: T) -> LaneLock<T> {
        LaneLock { word: AtomicU32::new(FREE), sleepers: AtomicU32::new(0), data: Cell::new(v) }
    }

    /// Takes the lock, waiting (spinning briefly, then sleeping) while another thread
    /// holds it.
    #[inline]
    pub fn lock(&self) -> LaneGuard<'_, T> {
        self.untrack_words();
        if self.word.compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_slow();
        }
        self.guard()
    }

    /// Takes the lock if it is free, at once; `None` if it is held (or handed to a
    /// waiter).
    #[inline]
    pub fn try_lock(&self) -> Option<LaneGuard<'_, T>> {
        self.untrack_words();
        match self.word.compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Some(self.guard()),
            Err(_) => None,
        }
    }

    /// The guard of the lock just taken by this thread.
    #[inline(always)]
    fn guard(&self) -> LaneGuard<'_, T> {
        hg::happens_after(&self.word);
        LaneGuard {
            lock: self,
            #[cfg(loom)]
            access: Some(self.data.get_mut()),
            _not_send: PhantomData,
        }
    }

    /// The contended path of [`lock`](Self::lock): returns with the lock held.
    #[cold]
    #[inline(never)]
    fn lock_slow(&self) {
        // Whether this thread has returned from a wait on the lock (in this call): only
        // then may it take a lock HANDED by a fair unlock.
        let mut waited = false;
        loop {
            for round in 0..SPINS {
                if self.try_take(waited) {
                    return;
                }
                if round < PAUSES {
                    for _ in 0..2u32 << round {
                        std::hint::spin_loop();
                    }
                } else {
                    super::yield_now();
                }
            }
            // Registered before the word is read again, so that an unlock whose store
            // this read does not see reads `sleepers` after this add (but for the
            // window the module comment bounds).
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let w = self.word.load(Ordering::SeqCst);
            if w == FREE || (w == HANDED && waited) {
                self.sleepers.fetch_sub(1, Ordering::Relaxed);
            } else {
                // A thread woken by a wake-up was deregistered by its waker (`wake`);
                // one that returns for any other reason deregisters itself.
                if !futex::wait(&self.word, w, WAIT_NS) {
                    self.sleepers.fetch_sub(1, Ordering::Relaxed);
                }
                waited = true;
            }
            if self.try_take(waited) {
                return;
            }
        }
    }

    /// One attempt at the lock: free, or handed to a waiter if this thread has
    /// waited (`waited`).
    #[inline]
    fn try_take(&self, waited: bool) -> bool {
        let w = self.word.load(Ordering::Relaxed);
        (w == FREE || (w == HANDED && waited))
            && self.word.compare_exchange(w, HELD, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Releases the lock (the guard's drop): a plain store, and a wake-up if a thread
    /// is registered to sleep. See the module comment for why a wake-up missed here
    /// costs its waiter at most [`WAIT_NS`].
    #[inline]
    fn unlock(&self) {
        hg::happens_before(&self.word);
        self.word.store(FREE, Ordering::Release);
        // Relaxed, and not ordered after the store (module comment).
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake();
        }
    }

    /// Wakes one thread sleeping on the word, if any, and deregisters it (so that
    /// the unlocks made before it runs again do not wake for it): whether there was
    /// one.
    #[cold]
    #[inline(never)]
    fn wake(&self) -> bool {
        let woken = futex::wake_one(&self.word);
        if woken {
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
        woken
    }

    /// Releases the lock to a thread waiting for it, if any; else as `unlock`.
    /// Returns whether it was handed over (a thread was woken to take it).
    fn unlock_fair(&self) -> bool {
        // Relaxed: a registration this misses is one the plain unlock below would
        // miss too (its waiter's time-out bounds it).
        if self.sleepers.load(Ordering::Relaxed) == 0 {
            self.unlock();
            return false;
        }
        hg::happens_before(&self.word);
        self.word.store(HANDED, Ordering::Release);
        if self.wake() {
            return true;
        }
        // No one asleep to hand it to: a plain release, unless a waiter returning from
        // its wait took the lock meanwhile.
        if self.word.compare_exchange(HANDED, FREE, Ordering::Release, Ordering::Relaxed).is_ok()
            && self.sleepers.load(Ordering::Relaxed) != 0
        {
            self.wake();
        }
        false
    }

    /// The words are only ever accessed atomically: helgrind is told not to check
    /// them (here, on every use, since the lock may have moved since it was made; this
    /// build is for helgrind only).
    #[inline(always)]
    fn untrack_words(&self) {
        #[cfg(zs_valgrind)]
        hg::untracked((&self.word as *const AtomicU32).cast(), 2 * std::mem::size_of::<AtomicU32>());
    }
}

impl<T> LaneGuard<'_, T> {
    /// Unlocks, handing the lock to a thread sleeping on it if there is one, rather
    /// than letting this thread, or any other that has not waited, take it first (see
    /// the module comment). Returns whether it was handed over.
    #[inline]
    pub fn unlock_fair(mut self) -> bool {
        self.end_access();
        let lock = self.lock;
        std::mem::forget(self);
        lock.unlock_fair()
    }

    /// Under loom, ends the model's record of this thread's access to the value: before
    /// the unlock, since after it another thread may take the lock.
    #[inline(always)]
    fn end_access(&mut self) {
        #[cfg(loom)]
        drop(self.access.take());
    }
}

impl<T> LaneGuard<'_, T> {
    /// The value's address, for the guard's references to it.
    #[inline(always)]
    fn value(&self) -> *mut T {
        #[cfg(loom)]
        let p = self.access.as_ref().expect("ended only at the unlock").with(|p| p);
        #[cfg(not(loom))]
        let p = self.lock.data.get();
        p
    }
}

impl<T> std::ops::Deref for LaneGuard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other thread accesses the value until
        // the unlock, which the reference (borrowing the guard) cannot outlive; the
        // value is alive as long as the lock.
        unsafe { &*self.value() }
    }
}

impl<T> std::ops::DerefMut for LaneGuard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the guard is borrowed mutably, so this is the only
        // reference to the value.
        unsafe { &mut *self.value() }
    }
}

impl<T> Drop for LaneGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.end_access();
        self.lock.unlock();
    }
}

/// The futex calls, and their stand-ins under loom and off Linux.
mod futex {
    use super::AtomicU32;

    /// Sleeps while `word` reads `expected`, for at most `ns` nanoseconds, or until
    /// woken; whether it was woken by [`wake_one`]. The kernel checks the word under
    /// the futex's lock, so a wake-up between that check and the sleep is not lost;
    /// and a wake-up counts exactly the threads it takes off the futex's queue, each
    /// of which returns 0 (one that times out meanwhile is not taken, and is not
    /// counted), which is what lets the waker deregister the thread it woke.
    #[cfg(all(target_os = "linux", not(loom), not(miri)))]
    pub(super) fn wait(word: &AtomicU32, expected: u32, ns: u32) -> bool {
        let ts = libc::timespec { tv_sec: 0, tv_nsec: ns as libc::c_long };
        // SAFETY: FUTEX_WAIT reads the aligned 32-bit word at the address (an atomic,
        // alive for the call) and the timeout (alive for the call); it writes nothing
        // of ours. Every result (woken, timed out, interrupted, EAGAIN for a word that
        // no longer reads `expected`) is followed by the caller's fresh read.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                expected,
                &ts as *const libc::timespec,
            )
        };
        r == 0
    }

    /// Wakes one thread sleeping on `word`; whether there was one.
    #[cfg(all(target_os = "linux", not(loom), not(miri)))]
    pub(super) fn wake_one(word: &AtomicU32) -> bool {
        // SAFETY: FUTEX_WAKE only uses the address as a key: nothing is read or
        // written through it.
        let woken =
            unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1) };
        woken > 0
    }

    /// Loom's stand-in: as the kernel, return at once if the word no longer reads
    /// `expected`; else give the other threads a turn (a bounded wait, as the real one
    /// with its time-out). Never woken: every wait ends as a time-out.
    #[cfg(loom)]
    pub(super) fn wait(word: &AtomicU32, expected: u32, _ns: u32) -> bool {
        if word.load(crate::sync::Ordering::Relaxed) == expected {
            loom::thread::yield_now();
        }
        false
    }

    /// Loom's stand-in: no thread is ever asleep in a kernel, so none is woken (and
    /// a fair unlock puts the word back to FREE, unless a waiter returning from its
    /// wait takes the HANDED lock first, which the models explore).
    #[cfg(loom)]
    pub(super) fn wake_one(_word: &AtomicU32) -> bool {
        false
    }

    /// Elsewhere: a short sleep, bounded as the futex wait.
    #[cfg(all(not(all(target_os = "linux", not(miri))), not(loom)))]
    pub(super) fn wait(_word: &AtomicU32, _expected: u32, ns: u32) -> bool {
        std::thread::sleep(std::time::Duration::from_nanos(u64::from(ns) / 8));
        false
    }

    /// Elsewhere: nothing to wake (waiters sleep briefly and look again); none woken.
    #[cfg(all(not(all(target_os = "linux", not(miri))), not(loom)))]
    pub(super) fn wake_one(_word: &AtomicU32) -> bool {
        false
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Threads past the CPUs' count (so that holders are preempted and waiters sleep)
    /// increment a counter under the lock, through `lock`, `try_lock` and the fair
    /// unlock: none of the increments is lost.
    #[test]
    fn no_increment_is_lost_under_contention() {
        const THREADS: usize = 6;
        const ROUNDS: usize = 20_000;
        let lock = Arc::new(LaneLock::new(0usize));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    let mut done = 0;
                    for i in 0..ROUNDS {
                        let mut g = match (t + i) % 3 {
                            0 => match lock.try_lock() {
                                Some(g) => g,
                                None => continue,
                            },
                            _ => lock.lock(),
                        };
                        // Read, then write: a second holder would lose one of the two.
                        let v = *g;
                        std::hint::black_box(&v);
                        *g = v + 1;
                        done += 1;
                        if i % 2 == 0 {
                            g.unlock_fair();
                        }
                    }
                    done
                })
            })
            .collect();
        let done: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(*lock.lock(), done);
        assert_eq!(lock.word.load(Ordering::Relaxed), FREE);
        assert_eq!(lock.sleepers.load(Ordering::Relaxed), 0);
    }

    /// A holder that unlocks fairly and takes the lock again at once (the compactor's
    /// loop) finds that a thread sleeping on the lock went first. A plain unlock takes
    /// it back ahead of the woken thread, which is still on its way out of the kernel.
    #[test]
    fn a_fair_unlock_hands_the_lock_to_a_sleeping_waiter() {
        let lock = Arc::new(LaneLock::new(0u32));
        let mut handed = 0;
        for _ in 0..2000 {
            let g = lock.lock();
            let before = *g;
            let waiter = {
                let lock = lock.clone();
                std::thread::spawn(move || *lock.lock() += 1)
            };
            // Until the waiter has registered, and a little more, for it to be asleep.
            while lock.sleepers.load(Ordering::Relaxed) == 0 {
                std::thread::yield_now();
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
            let was_handed = g.unlock_fair();
            // `try_lock`, which never takes a lock handed over: `lock` may, once it has
            // waited itself, and on a busy machine the woken waiter may not be back on
            // a CPU by then.
            let after = loop {
                if let Some(g) = lock.try_lock() {
                    break *g;
                }
                std::thread::yield_now();
            };
            waiter.join().unwrap();
            // A wake-up that found the waiter between two waits (its time-out, or not
            // yet back on a CPU after it, which on a busy machine is most rounds)
            // cannot hand the lock over: such rounds show nothing.
            if was_handed {
                assert_eq!(after, before + 1, "the lock was taken back ahead of its waiter");
                handed += 1;
                if handed == 5 {
                    return;
                }
            }
        }
        assert!(handed > 0, "none of 2000 fair unlocks found the waiter asleep");
    }
}
