//! The handle slot: one 64-bit word per handle, and the lock-free protocol on it that
//! lets readers, writers and mappers work without any lock while free and compaction
//! change the object under the class lock, and that keeps readers and writers of one
//! object apart.
//!
//! # The word
//!
//! ```text
//!  63        48 47  46 45   40 39                                      0
//! +------------+------+-------+-----------------------------------------+
//! | generation | state| pins  | location (LIVE, ...) / next free        |
//! +------------+------+-------+-----------------------------------------+
//! ```
//!
//! - generation (16 bits): bumped on every free; a handle carries the generation it
//!   was issued with, so a stale handle is refused until the slot has been reused 2^16
//!   times.
//! - state (2 bits, all four values used):
//!   - FREE: in a class's free-slot list (or never used); with a pin count of one
//!     or two, PENDING: freed, its object still in its zspage until the class lock's
//!     next holder takes it out (two: its freer has yet to name it where that holder
//!     looks, or to apply it itself: it is "in flight");
//!   - LIVE: holds an object, which `pins` readers share (0 or more);
//!   - COPYING: one party copies the object's bytes, alone, for a bounded time (one
//!     object copy of at most 4 KiB): compaction or migration moving it, a write, or a
//!     read that found no other reader;
//!   - WRITER: a writable mapping holds the object, alone, for as long as its owner
//!     keeps it.
//! - pins (6 bits): how many readers share a LIVE object (shared mappings, reads in
//!   progress, and a free checking that no one else does); 1 or 2 in a PENDING word,
//!   0 in every other state.
//!   A 64th simultaneous holder is refused (`TooManyPins`, EAGAIN at the C ABI): a
//!   read shares a pin only while another reader holds the object, so this takes 63
//!   mappings of one object, or as many threads reading it at the same instant.
//! - location (40 bits): the object's byte offset in the arena (its frame's number
//!   times the frame size, plus its offset in the frame), so a pool's arena is at most
//!   1 TiB: 2^28 frames of 4 KiB, 2^26 of 16 KiB, 2^24 of 64 KiB; for a FREE slot, the
//!   index of the next free slot of its class.
//!
//! # The protocol
//!
//! Whoever holds the object (a pin, a copy claim or a writer claim) has taken it with
//! one CAS from a LIVE word of the expected generation, and while it is held the object
//! can be neither freed (free refuses with EBUSY) nor moved (compaction's claim needs a
//! LIVE word without pins). Its location is therefore stable, and so is the zspage and
//! frame it points into: a zspage is released only when its last object is gone. The
//! holder needs no lock and no epoch guard to use the object's bytes.
//!
//! Readers share, writers are alone: a writer claim (COPYING for a write, WRITER for a
//! writable mapping) needs a LIVE word without pins, and no pin is granted while a
//! writer holds the word. Who meets a COPYING word waits it out (one object copy);
//! who meets a pinned word when it needs to be alone, or a WRITER word, is refused
//! (`Busy`) at once: a pin or a writable mapping may be held for as long as its owner
//! likes, possibly by the very thread that asks.
//!
//! - `pin` (a shared mapping, a read kept across calls, the freer's check): CAS
//!   `LIVE(g, p, loc)` -> `LIVE(g, p+1, loc)`, Acquire on success: pairs with the
//!   Release that made the word LIVE, so the bytes stored by malloc's caller before it
//!   shared the handle, by compaction's copy or by the last writer, are visible.
//! - `unpin`: `fetch_sub` one pin, Release: the reader's accesses to the object
//!   happen-before whatever next takes the word alone (a copy, a writer, free).
//! - `claim_copy` (a write, or a read that wants the object alone if no one shares
//!   it): CAS `LIVE(g, 0, loc)` -> `COPYING(g, loc)`, Acquire; `end_copy` stores
//!   `LIVE(g, 0, loc)`, Release: publishes what was written to the next holder.
//! - `claim_writer` / `end_writer`: the same with WRITER, for a writable mapping.
//! - `free`: the freer pins the object like a reader (so its class and zspage are
//!   certain before it takes the class lock), then CASes `LIVE(g, 1, loc)` ->
//!   `FREE(g+1, next)`, AcqRel; with any other pin it is refused (EBUSY), the freer
//!   unpins, and nothing changes.
//! - `free_locked`: the dense layout's free that finds its lane lock free, which it
//!   found from the slot's index alone, so it needs no pin to be sure of the class:
//!   under the lock it CASes `LIVE(g, 0, loc)` -> `FREE(g+1, next)`, AcqRel; with a
//!   pin or a writer it is refused (EBUSY), and a COPYING word is waited out as by
//!   `pin`.
//! - `defer_unpinned`: the dense layout's free without the class lock (held by
//!   another, or left for its next holder), which like `free_locked` needs no pin to
//!   be sure of the class: CAS `LIVE(g, 0, loc)` -> `PENDING(g+1, loc)` in flight,
//!   AcqRel: a FREE word (pins refuse it as stale) with a pin count of two, which
//!   keeps the location for the class lock's next holder, who applies the free
//!   (`pool/deferred.rs`) and links the slot `FREE(g+1, next)`; refused (EBUSY) with a
//!   pin or a writer, a COPYING word waited out. Once the freer has named the slot
//!   for that holder, `settle` CASes the word from in flight to a pin count of one,
//!   Release, unless the holder applied it first: the checker takes a settled
//!   PENDING slot that nothing names for a lost free.
//! - `begin_move` / `end_move`: compaction's and migration's copy claim, under the
//!   class lock: CAS `LIVE(g, 0, loc)` -> `COPYING(g, loc)`, Acquire (the last
//!   holder's writes are visible to the copy); then a Release store of
//!   `LIVE(g, 0, new_loc)`, publishing the copy.
//!
//! Free, moves and the free-slot list are serialised by the class lock; pins and
//! claims race with all of them and the CASes decide. A COPYING or WRITER word is
//! written back only by its claimant: no one else changes it while it is held.

use crate::sync::{backoff, hg, AtomicU64, Ordering};

/// Bits of the location field.
pub const LOC_BITS: u32 = 40;
/// Bits of the pin count.
pub const PIN_BITS: u32 = 6;
const PIN_SHIFT: u32 = LOC_BITS;
const STATE_SHIFT: u32 = PIN_SHIFT + PIN_BITS;
const GEN_SHIFT: u32 = 48;

const LOC_MASK: u64 = (1 << LOC_BITS) - 1;
const PIN_ONE: u64 = 1 << PIN_SHIFT;
const PIN_MASK: u64 = ((1 << PIN_BITS) - 1) << PIN_SHIFT;
const STATE_MASK: u64 = 0b11 << STATE_SHIFT;
const GEN_MASK: u64 = !((1 << GEN_SHIFT) - 1);
/// Most pins one object can carry at once.
pub const MAX_PINS: u64 = (1 << PIN_BITS) - 1;
/// Largest arena location a slot can hold.
pub const MAX_LOC: u64 = LOC_MASK;

/// State of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// In a free-slot list (or never used).
    Free = 0,
    /// Holds a live object, shared by `pins` readers.
    Live = 1,
    /// One party copies the object alone, for one object copy.
    Copying = 2,
    /// A writable mapping holds the object alone.
    Writer = 3,
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

    /// A PENDING word: a FREE word (so every handle of the slot is stale) that still
    /// locates its object, whose free the holder of its class lock has yet to apply
    /// (`pool/deferred.rs`). Told from a FREE word by a pin count of one, which a FREE
    /// word never has.
    pub fn pending(gen: u16, loc: u64) -> Word {
        debug_assert!(loc <= LOC_MASK);
        Word(((gen as u64) << GEN_SHIFT) | PIN_ONE | loc)
    }

    /// A PENDING word whose freer has yet to name it for the class lock's next holder
    /// or to apply it itself (`pool/deferred.rs`): a pin count of two.
    pub fn pending_in_flight(gen: u16, loc: u64) -> Word {
        Word(Word::pending(gen, loc).0 + PIN_ONE)
    }

    /// Whether this is a PENDING word: its object is still in its zspage.
    pub fn is_pending(self) -> bool {
        self.state() == State::Free && self.pins() != 0
    }

    /// Whether this is a PENDING word in flight (see [`Word::pending_in_flight`]).
    pub fn is_in_flight(self) -> bool {
        self.state() == State::Free && self.pins() == 2
    }

    /// Whether the slot holds no object: FREE and not PENDING.
    pub fn is_vacant(self) -> bool {
        self.state() == State::Free && self.pins() == 0
    }

    /// This word in state `state` (its other fields unchanged).
    fn with_state(self, state: State) -> Word {
        Word((self.0 & !STATE_MASK) | ((state as u64) << STATE_SHIFT))
    }

    /// The generation.
    pub fn gen(self) -> u16 {
        (self.0 >> GEN_SHIFT) as u16
    }

    /// The state.
    pub fn state(self) -> State {
        match (self.0 & STATE_MASK) >> STATE_SHIFT {
            0 => State::Free,
            1 => State::Live,
            2 => State::Copying,
            _ => State::Writer,
        }
    }

    /// Current pins.
    pub fn pins(self) -> u64 {
        (self.0 & PIN_MASK) >> PIN_SHIFT
    }

    /// The location (an object's word) or next free slot (FREE).
    pub fn loc(self) -> u64 {
        self.0 & LOC_MASK
    }

    /// Whether someone holds the object: pinned, being copied, or mapped writable.
    pub fn held(self) -> bool {
        self.state() != State::Live || self.pins() != 0
    }
}

/// Why a slot operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// Wrong generation or not live: a stale or invented handle.
    Stale,
    /// Held by someone the caller cannot share it with: pinned by readers when the
    /// caller needs it alone, or mapped writable.
    Busy,
    /// The pin count is saturated.
    TooManyPins,
}

/// How a copy claim holds its object (see [`Slot::claim_copy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Alone (COPYING): end it with [`Slot::end_copy`].
    Alone(Word),
    /// Shared with other readers (a pin): end it with [`Slot::unpin`].
    Shared(u64),
}

/// One handle slot.
#[repr(transparent)]
pub struct Slot(pub AtomicU64);

impl Slot {
    /// A slot holding `w`.
    #[cfg(loom)]
    pub fn new(w: Word) -> Slot {
        Slot(AtomicU64::new(w.0))
    }

    /// The current word. Acquire: a location seen here has its object's
    /// initialisation visible (pairs with the Release that stored it).
    #[inline]
    pub fn load(&self) -> Word {
        let w = Word(self.0.load(Ordering::Acquire));
        hg::happens_after(&self.0);
        w
    }

    /// Takes the object of generation `gen` from a LIVE word with `step`, which gives
    /// the new word or refuses; waits out a COPYING word. Acquire on success: see the
    /// module comment.
    #[inline(always)]
    fn take(&self, gen: u16, step: impl Fn(Word) -> Result<Word, SlotError>) -> Result<Word, SlotError> {
        self.take_ordered(gen, Ordering::Acquire, step)
    }

    /// [`take`](Self::take) with `success` as the CAS's ordering on success.
    #[inline(always)]
    fn take_ordered(
        &self,
        gen: u16,
        success: Ordering,
        step: impl Fn(Word) -> Result<Word, SlotError>,
    ) -> Result<Word, SlotError> {
        let mut spins = 0;
        // Relaxed: only a guess for the CAS below, whose Acquire is what counts.
        let mut w = Word(self.0.load(Ordering::Relaxed));
        loop {
            if w.gen() != gen {
                return Err(SlotError::Stale);
            }
            match w.state() {
                State::Free => return Err(SlotError::Stale),
                State::Copying => {
                    // Its claimant holds the word for one object copy.
                    backoff(&mut spins);
                    w = Word(self.0.load(Ordering::Relaxed));
                    continue;
                }
                State::Writer => return Err(SlotError::Busy),
                State::Live => {}
            }
            let new = step(w)?;
            // Acquire (at least) on success: see the module comment.
            if success != Ordering::Acquire {
                hg::happens_before(&self.0);
            }
            match self.0.compare_exchange_weak(w.0, new.0, success, Ordering::Relaxed) {
                Ok(_) => {
                    hg::happens_after(&self.0);
                    return Ok(w);
                }
                Err(now) => w = Word(now),
            }
        }
    }

    /// Pins the object of generation `gen`, shared with other readers; returns its
    /// location.
    #[inline]
    pub fn pin(&self, gen: u16) -> Result<u64, SlotError> {
        // The common case in one masked comparison: a LIVE word of this generation
        // with room for a pin. Anything else (another state or generation, a full
        // count, a lost race) goes the general way, which decides as before.
        // Relaxed: a guess for the CAS, as in `take`.
        let w = self.0.load(Ordering::Relaxed);
        let want = ((gen as u64) << GEN_SHIFT) | ((State::Live as u64) << STATE_SHIFT);
        if (w ^ want) & (GEN_MASK | STATE_MASK) == 0
            && w & PIN_MASK != PIN_MASK
            // Acquire on success: see the module comment.
            && self.0.compare_exchange_weak(w, w + PIN_ONE, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            hg::happens_after(&self.0);
            return Ok(w & LOC_MASK);
        }
        self.pin_again(gen)
    }

    /// [`pin`](Self::pin) past its common case.
    #[inline(never)]
    fn pin_again(&self, gen: u16) -> Result<u64, SlotError> {
        let w =
            self.take(
                gen,
                |w| if w.pins() == MAX_PINS { Err(SlotError::TooManyPins) } else { Ok(Word(w.0 + PIN_ONE)) },
            )?;
        Ok(w.loc())
    }

    /// Drops one pin taken by [`pin`](Self::pin).
    #[inline]
    pub fn unpin(&self) {
        // Release: the pinner's accesses to the object happen-before the next owner's.
        hg::happens_before(&self.0);
        let old = Word(self.0.fetch_sub(PIN_ONE, Ordering::Release));
        debug_assert!(old.pins() > 0 && old.state() == State::Live);
    }

    /// Claims the object of generation `gen` for one copy of its bytes. With `share`
    /// (a read), an object other readers pin is pinned too; otherwise (a write) it is
    /// refused with `Busy`. Alone, the claim must be ended with
    /// [`end_copy`](Self::end_copy) after one object copy: other parties wait for it.
    #[inline]
    pub fn claim_copy(&self, gen: u16, share: bool) -> Result<Claim, SlotError> {
        let w = self.take(gen, |w| match w.pins() {
            0 => Ok(w.with_state(State::Copying)),
            _ if !share => Err(SlotError::Busy),
            MAX_PINS => Err(SlotError::TooManyPins),
            _ => Ok(Word(w.0 + PIN_ONE)),
        })?;
        Ok(if w.pins() == 0 { Claim::Alone(w) } else { Claim::Shared(w.loc()) })
    }

    /// Ends a claim taken alone by [`claim_copy`](Self::claim_copy).
    #[inline]
    pub fn end_copy(&self, claimed: Word) {
        debug_assert_eq!(self.load(), claimed.with_state(State::Copying));
        // Release: publishes the bytes written under the claim to the next holder.
        hg::happens_before(&self.0);
        self.0.store(claimed.0, Ordering::Release);
    }

    /// Claims the object of generation `gen` for a writable mapping: refused with
    /// `Busy` while anyone else holds it. Returns its location.
    #[inline]
    pub fn claim_writer(&self, gen: u16) -> Result<u64, SlotError> {
        let w =
            self.take(gen, |w| if w.pins() == 0 { Ok(w.with_state(State::Writer)) } else { Err(SlotError::Busy) })?;
        Ok(w.loc())
    }

    /// Ends a writable mapping begun by [`claim_writer`](Self::claim_writer).
    #[inline]
    pub fn end_writer(&self) {
        // Relaxed: no one but the mapping's owner changes a WRITER word, so this is
        // the word it claimed; the store below is what publishes.
        let w = Word(self.0.load(Ordering::Relaxed));
        debug_assert_eq!(w.state(), State::Writer);
        // Release: publishes the bytes written through the mapping to the next holder.
        hg::happens_before(&self.0);
        self.0.store(w.with_state(State::Live).0, Ordering::Release);
    }

    /// Frees the object of generation `gen`, which the caller has pinned once itself,
    /// if no one else pins it; links the slot to `next`. Caller holds the class lock.
    /// On `Busy` the caller still holds its pin.
    ///
    /// Freeing through one's own pin is what makes the object's class and zspage
    /// certain before the class lock is taken: while pinned it cannot move or die.
    pub fn free_pinned(&self, gen: u16, next: u64) -> Result<(), SlotError> {
        self.leave_pinned(gen, |_| Word::free(gen.wrapping_add(1), next))
    }

    /// Frees the object of generation `gen` if no one holds it, without a pin of the
    /// caller's; links the slot to `next`; returns the object's location. Caller holds
    /// the lock of the object's class, found without the object (the dense layout's
    /// owner of the slot's batch, `HandleTable::owner`): under it the object can be
    /// neither moved nor freed by anyone else, so the one CAS that frees it is also
    /// the check that no one holds it (`Busy`, nothing changed) and that the handle is
    /// current (`Stale`). Waits out a COPYING word (one object copy of a lock-free
    /// write or read). AcqRel on success, as [`free_pinned`](Self::free_pinned).
    #[inline(always)]
    pub fn free_locked(&self, gen: u16, next: u64) -> Result<u64, SlotError> {
        let w = self.take_ordered(gen, Ordering::AcqRel, |w| {
            if w.pins() != 0 {
                Err(SlotError::Busy)
            } else {
                Ok(Word::free(gen.wrapping_add(1), next))
            }
        })?;
        Ok(w.loc())
    }

    /// Frees the object of generation `gen` without the class lock: if no one holds
    /// the object, one CAS turns the LIVE word PENDING in flight (see
    /// [`Word::pending_in_flight`]), keeping the object's location for whoever next
    /// holds the class lock, which takes the object out of its zspage and links the
    /// slot. The CAS is also the check that no one holds the object (`Busy`, nothing
    /// changed) and that the handle is current (`Stale`); a COPYING word is waited
    /// out. No pin is taken first: the dense layout's free knows the object's class
    /// without the object (`HandleTable::owner`), and after the CAS the PENDING word
    /// keeps everyone else out. Returns the word stored, for
    /// [`settle`](Self::settle). AcqRel on success, as [`free_pinned`](Self::free_pinned).
    #[inline(always)]
    pub fn defer_unpinned(&self, gen: u16) -> Result<Word, SlotError> {
        let pending = |w: Word| Word::pending_in_flight(gen.wrapping_add(1), w.loc());
        let w = self.take_ordered(gen, Ordering::AcqRel, |w| {
            if w.pins() != 0 {
                Err(SlotError::Busy)
            } else {
                Ok(pending(w))
            }
        })?;
        Ok(pending(w))
    }

    /// Ends the flight of the PENDING word `in_flight` that
    /// [`defer_unpinned`](Self::defer_unpinned) stored, once its freer has named the slot
    /// for the class lock's next holder: the word becomes settled PENDING (a pin count
    /// of one). If that holder applied the free first, the word has moved on and is
    /// left as it is.
    pub fn settle(&self, in_flight: Word) {
        debug_assert!(in_flight.is_in_flight());
        // Release: the checker, which loads the word with Acquire, sees the settled
        // word only with the name the freer wrote before (the entry and its bit).
        // Relaxed on failure: nothing is read.
        hg::happens_before(&self.0);
        let settled = Word(in_flight.0 - PIN_ONE);
        let _ = self.0.compare_exchange(in_flight.0, settled.0, Ordering::Release, Ordering::Relaxed);
    }

    /// Replaces the caller's sole pin on the LIVE word of generation `gen` with
    /// `new(word)`; `Busy` if someone else pins it too.
    #[inline(always)]
    fn leave_pinned(&self, gen: u16, mut new: impl FnMut(Word) -> Word) -> Result<(), SlotError> {
        let mut w = Word(self.0.load(Ordering::Relaxed));
        loop {
            // Our pin keeps the word LIVE with our generation.
            debug_assert!(w.gen() == gen && w.state() == State::Live && w.pins() >= 1);
            if w.pins() != 1 {
                return Err(SlotError::Busy);
            }
            let new = new(w);
            // AcqRel: Acquire for the last other unpinner's writes; Release so that the
            // free-list link and the generation are published together.
            hg::happens_before(&self.0);
            match self.0.compare_exchange(w.0, new.0, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    hg::happens_after(&self.0);
                    return Ok(());
                }
                Err(now) => w = Word(now),
            }
        }
    }

    /// Links the PENDING slot of generation `gen` to `next`, `FREE(gen, next)`: the
    /// free deferred by [`defer_unpinned`](Self::defer_unpinned) is applied. Caller holds
    /// the class lock.
    ///
    /// A swap, not a store: its freer may [`settle`](Self::settle) the word at the same
    /// moment (which changes only its pins), and the two must be ordered as a whole (a
    /// settle after this fails; one before is overwritten). A plain store would do on
    /// the machine, but loom lets a store fall between the read and the write of a
    /// concurrent CAS (its issue 254), and so would bring the settled PENDING word back
    /// after it.
    pub fn free_pending(&self, gen: u16, next: u64) {
        // Release: publishes the link to the next holder of the lock, as `set` does.
        hg::happens_before(&self.0);
        let old = Word(self.0.swap(Word::free(gen, next).0, Ordering::Release));
        debug_assert!(old.is_pending() && old.gen() == gen, "freeing a slot that is {old:?}");
    }

    /// Claims the object for moving if no one holds it. Caller holds the class lock.
    pub fn begin_move(&self) -> Option<Word> {
        let w = Word(self.0.load(Ordering::Relaxed));
        if w.held() {
            return None;
        }
        // Acquire: the last holder's writes to the object are visible to the copy.
        let claimed =
            self.0.compare_exchange(w.0, w.with_state(State::Copying).0, Ordering::Acquire, Ordering::Relaxed);
        hg::happens_after(&self.0);
        claimed.ok().map(|_| w)
    }

    /// Ends a move begun by [`begin_move`](Self::begin_move): the object is at `loc`.
    pub fn end_move(&self, claimed: Word, loc: u64) {
        // Release: publishes the copied bytes to the next holder.
        hg::happens_before(&self.0);
        self.0.store(Word::live(claimed.gen(), loc).0, Ordering::Release);
    }

    /// Writes a word with no concurrent holder possible (a FREE slot being linked,
    /// or a LIVE word being installed by malloc). Release: publishes the object
    /// location (and, for malloc, the zspage state behind it).
    pub fn set(&self, w: Word) {
        hg::happens_before(&self.0);
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
        assert_eq!(s.load().state(), State::Copying);
        s.end_move(claimed, 8192);
        assert_eq!(s.pin(5), Ok(8192));
        assert_eq!(s.free_pinned(5, 9), Ok(()));
        assert_eq!(s.load(), Word::free(6, 9));
        assert_eq!(s.pin(5), Err(SlotError::Stale), "double free");
        assert_eq!(s.pin(6), Err(SlotError::Stale), "a free slot cannot be pinned");
    }

    #[test]
    fn readers_share_writers_are_alone() {
        let s = Slot(AtomicU64::new(Word::live(1, 64).0));
        // A read with no other reader holds the object alone, and gives it back LIVE.
        let Claim::Alone(w) = s.claim_copy(1, true).unwrap() else { panic!("no reader: alone") };
        assert_eq!(s.load().state(), State::Copying);
        assert!(s.begin_move().is_none(), "a copy in progress is not moved");
        s.end_copy(w);
        assert_eq!(s.load(), Word::live(1, 64));
        // With a reader holding a pin, a read shares it and a write is refused.
        s.pin(1).unwrap();
        assert_eq!(s.claim_copy(1, true), Ok(Claim::Shared(64)));
        s.unpin();
        assert_eq!(s.claim_copy(1, false), Err(SlotError::Busy), "a write while a reader pins");
        assert_eq!(s.claim_writer(1), Err(SlotError::Busy), "a writable mapping while a reader pins");
        s.unpin();
        // A writable mapping refuses every other holder, and ends LIVE as it began.
        s.claim_writer(1).unwrap();
        assert_eq!(s.load().state(), State::Writer);
        assert_eq!(s.pin(1), Err(SlotError::Busy));
        assert_eq!(s.claim_copy(1, true), Err(SlotError::Busy));
        assert_eq!(s.claim_copy(1, false), Err(SlotError::Busy));
        assert_eq!(s.claim_writer(1), Err(SlotError::Busy));
        assert!(s.begin_move().is_none());
        assert_eq!(s.pin(0), Err(SlotError::Stale), "the generation is checked first");
        s.end_writer();
        assert_eq!(s.load(), Word::live(1, 64));
        assert!(s.begin_move().is_some());
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
