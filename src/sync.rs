//! The one place atomics come from, so that the loom models can swap in loom's.
//!
//! Everything whose ordering argument matters (the handle slot protocol of `slot.rs`)
//! takes its atomics from here; under `--cfg loom` they are loom's model-checked types.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

/// Busy-wait politely: a few spins, then give the core away. Used only where the
/// other party holds the state for a bounded, short time (one object copy).
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    if *spins < 64 {
        core::hint::spin_loop();
        *spins += 1;
    } else {
        yield_now();
    }
}
