//! The handle slot: one 64-bit word per handle, and the lock-free protocol on it that
//! lets readers, writers and mappers work without any lock while free and compaction
//! change the object under the class lock.
//!
//! # The word
//!
//! ```text
//!  63        48 47  46 45     37 36                                   0
//! +------------+------+---------+--------------------------------------+
//! | generation | state|  pins   | location (LIVE, MOVING) / next free  |
//! +------------+------+---------+--------------------------------------+
//! ```
//!
//! - generation (16 bits): bumped on every free; a handle carries the generation it
//!   was issued with, so a stale handle is refused until the slot has been reused 2^16
//!   times.
//! - state: FREE (in a class's free-slot list), LIVE, or MOVING (compaction is copying
//!   the object).
//! - pins (9 bits): how many reads, writes and mappings are using the object now.
//! - location (37 bits): the object's byte offset in the arena (pfn * 4096 + offset in
//!   frame), so a pool's arena is at most 128 GiB; for a FREE slot, the index of the
//!   next free slot of its class.
//!
//! # The protocol
//!
//! A pin is a count in the slot, not a guard: it is taken with one CAS from a LIVE word
//! of the expected generation, and while it is held the object can be neither freed
//! (free refuses with EBUSY) nor moved (compaction's CAS to MOVING needs zero pins).
//! Its location is therefore stable, and so is the zspage and frame it points into:
//! a zspage is released only when its last object is gone. Readers need no lock and no
//! epoch guard to use the object's bytes.
//!
//! - `pin`: CAS `LIVE(g, p, loc)` -> `LIVE(g, p+1, loc)`, Acquire on success: pairs
//!   with the Release that made the word LIVE, so the bytes stored by malloc's caller
//!   before it shared the handle, or by compaction's copy, are visible. A MOVING word
//!   is waited out (one object copy).
//! - `unpin`: `fetch_sub` one pin, Release: the caller's writes to the object
//!   happen-before whatever next takes the word (compaction's copy, free).
//! - `free`: the freer pins the object like a reader (so its class and zspage are
//!   certain before it takes the class lock), then CASes `LIVE(g, 1, loc)` ->
//!   `FREE(g+1, next)`, AcqRel; with any other pin it is refused (EBUSY), the freer
//!   unpins, and nothing changes.
//! - `begin_move` / `end_move`: CAS `LIVE(g, 0, loc)` -> `MOVING(g, 0, loc)`, Acquire
//!   (the last unpinner's writes are visible to the copy); then a Release store of
//!   `LIVE(g, 0, new_loc)`, publishing the copy.
//!
//! Free, moves and the free-slot list are serialised by the class lock; `pin` and
//! `unpin` race with all of them and the CASes decide.

use crate::sync::{backoff, AtomicU64, Ordering};

/// Bits of the location field.
pub const LOC_BITS: u32 = 37;
/// Bits of the pin count.
pub const PIN_BITS: u32 = 9;
const PIN_SHIFT: u32 = LOC_BITS;
const STATE_SHIFT: u32 = PIN_SHIFT + PIN_BITS;
const GEN_SHIFT: u32 = 48;

const LOC_MASK: u64 = (1 << LOC_BITS) - 1;
const PIN_ONE: u64 = 1 << PIN_SHIFT;
const PIN_MASK: u64 = ((1 << PIN_BITS) - 1) << PIN_SHIFT;
/// Most pins one object can carry at once.
pub const MAX_PINS: u64 = (1 << PIN_BITS) - 1;
/// Largest arena location a slot can hold.
pub const MAX_LOC: u64 = LOC_MASK;

/// State of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// In a free-slot list (or never used).
    Free = 0,
    /// Holds a live object.
    Live = 1,
    /// Compaction is copying the object.
    Moving = 2,
}

/// A decoded slot word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word(pub u64);

impl Word {
    /// A LIVE word without pins.
    pub fn live(gen: u16, loc: u64) -> Word {
        debug_assert!(loc <= LOC_MASK);
        Word(((gen as u64) << GEN_SHIFT) | ((State::Live as u64) << STATE_SHIFT) | loc)
    }

    /// A FREE word linking to `next`.
    pub fn free(gen: u16, next: u64) -> Word {
        debug_assert!(next <= LOC_MASK);
        Word(((gen as u64) << GEN_SHIFT) | next)
    }

    /// The generation.
    pub fn gen(self) -> u16 {
        (self.0 >> GEN_SHIFT) as u16
    }

    /// The state.
    pub fn state(self) -> State {
        match (self.0 >> STATE_SHIFT) & 0b11 {
            0 => State::Free,
            1 => State::Live,
            _ => State::Moving,
        }
    }

    /// Current pins.
    pub fn pins(self) -> u64 {
        (self.0 & PIN_MASK) >> PIN_SHIFT
    }

    /// The location (LIVE, MOVING) or next free slot (FREE).
    pub fn loc(self) -> u64 {
        self.0 & LOC_MASK
    }
}

/// Why a slot operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// Wrong generation or not live: a stale or invented handle.
    Stale,
    /// Pinned: the object is mapped or being read or written.
    Busy,
    /// The pin count is saturated.
    TooManyPins,
}

/// One handle slot.
#[repr(transparent)]
pub struct Slot(pub AtomicU64);

impl Slot {
    /// A never-used slot.
    #[cfg(loom)]
    pub fn new(w: Word) -> Slot {
        Slot(AtomicU64::new(w.0))
    }

    /// The current word. Acquire: a LIVE location seen here has its object's
    /// initialisation visible (pairs with the Release that stored it).
    #[inline]
    pub fn load(&self) -> Word {
        Word(self.0.load(Ordering::Acquire))
    }

    /// Pins the object of generation `gen`; returns its location.
    #[inline]
    pub fn pin(&self, gen: u16) -> Result<u64, SlotError> {
        let mut spins = 0;
        // Relaxed: only a guess for the CAS below, whose Acquire is what counts.
        let mut w = Word(self.0.load(Ordering::Relaxed));
        loop {
            if w.gen() != gen {
                return Err(SlotError::Stale);
            }
            match w.state() {
                State::Free => return Err(SlotError::Stale),
                State::Moving => {
                    // Compaction holds the word for one object copy.
                    backoff(&mut spins);
                    w = Word(self.0.load(Ordering::Relaxed));
                    continue;
                }
                State::Live => {}
            }
            if w.pins() == MAX_PINS {
                return Err(SlotError::TooManyPins);
            }
            // Acquire on success: see the module comment.
            match self.0.compare_exchange_weak(w.0, w.0 + PIN_ONE, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(w.loc()),
                Err(now) => w = Word(now),
            }
        }
    }

    /// Drops one pin taken by [`pin`](Self::pin).
    #[inline]
    pub fn unpin(&self) {
        // Release: the pinner's accesses to the object happen-before the next owner's.
        let old = Word(self.0.fetch_sub(PIN_ONE, Ordering::Release));
        debug_assert!(old.pins() > 0 && old.state() == State::Live);
    }

    /// Frees the object of generation `gen`, which the caller has pinned once itself,
    /// if no one else pins it; links the slot to `next`. Caller holds the class lock.
    /// On `Busy` the caller still holds its pin.
    ///
    /// Freeing through one's own pin is what makes the object's class and zspage
    /// certain before the class lock is taken: while pinned it cannot move or die.
    pub fn free_pinned(&self, gen: u16, next: u64) -> Result<(), SlotError> {
        let mut w = Word(self.0.load(Ordering::Relaxed));
        loop {
            // Our pin keeps the word LIVE with our generation.
            debug_assert!(w.gen() == gen && w.state() == State::Live && w.pins() >= 1);
            if w.pins() != 1 {
                return Err(SlotError::Busy);
            }
            let new = Word::free(gen.wrapping_add(1), next);
            // AcqRel: Acquire for the last other unpinner's writes; Release so that the
            // free-list link and the generation are published together.
            match self.0.compare_exchange(w.0, new.0, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => w = Word(now),
            }
        }
    }

    /// Claims the object for moving if nothing pins it. Caller holds the class lock.
    pub fn begin_move(&self) -> Option<Word> {
        let w = Word(self.0.load(Ordering::Relaxed));
        if w.state() != State::Live || w.pins() != 0 {
            return None;
        }
        let moving = Word((w.0 & !(0b11 << STATE_SHIFT)) | ((State::Moving as u64) << STATE_SHIFT));
        // Acquire: the last unpinner's writes to the object are visible to the copy.
        self.0.compare_exchange(w.0, moving.0, Ordering::Acquire, Ordering::Relaxed).ok().map(|_| w)
    }

    /// Ends a move begun by [`begin_move`](Self::begin_move): the object is at `loc`.
    pub fn end_move(&self, claimed: Word, loc: u64) {
        // Release: publishes the copied bytes to the next pinner.
        self.0.store(Word::live(claimed.gen(), loc).0, Ordering::Release);
    }

    /// Writes a word with no concurrent pinner possible (a FREE slot being linked,
    /// or a LIVE word being installed by malloc). Release: publishes the object
    /// location (and, for malloc, the zspage state behind it).
    pub fn set(&self, w: Word) {
        self.0.store(w.0, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn word_fields() {
        let w = Word::live(0xBEEF, MAX_LOC);
        assert_eq!((w.gen(), w.state(), w.pins(), w.loc()), (0xBEEF, State::Live, 0, MAX_LOC));
        let f = Word::free(3, 77);
        assert_eq!((f.gen(), f.state(), f.loc()), (3, State::Free, 77));
    }

    #[test]
    fn pin_free_move() {
        let s = Slot(AtomicU64::new(Word::live(5, 4096 + 12).0));
        assert_eq!(s.pin(4), Err(SlotError::Stale));
        assert_eq!(s.pin(5), Ok(4108));
        assert!(s.begin_move().is_none(), "pinned objects do not move");
        s.pin(5).unwrap();
        assert_eq!(s.free_pinned(5, 0), Err(SlotError::Busy), "another pin makes free busy");
        s.unpin();
        s.unpin();
        let claimed = s.begin_move().unwrap();
        assert_eq!(s.load().state(), State::Moving);
        s.end_move(claimed, 8192);
        assert_eq!(s.pin(5), Ok(8192));
        assert_eq!(s.free_pinned(5, 9), Ok(()));
        assert_eq!(s.load(), Word::free(6, 9));
        assert_eq!(s.pin(5), Err(SlotError::Stale), "double free");
        assert_eq!(s.pin(6), Err(SlotError::Stale), "a free slot cannot be pinned");
    }

    #[test]
    fn pins_saturate() {
        let s = Slot(AtomicU64::new(Word::live(0, 0).0));
        for _ in 0..MAX_PINS {
            s.pin(0).unwrap();
        }
        assert_eq!(s.pin(0), Err(SlotError::TooManyPins));
        assert_eq!(s.load().pins(), MAX_PINS);
        assert_eq!(s.load().loc(), 0, "saturation does not spill into the location");
    }
}
