//! Frees that do not take a class lock.
//!
//! A free in a layout that defers (the dense one) does not take its object's class lock
//! if another holds it (the allocating thread's malloc, another free, a compaction
//! sweep), nor if it follows other frees in its lane with no malloc between
//! (`Class::frees_in_a_row`: a workload emptying the pool). It turns the slot PENDING
//! with one CAS, if no one holds the object (`Slot::defer_unpinned`; the lane is known
//! without the object, so no pin is needed first): from then on every handle of the slot is
//! stale, so the free has taken effect for every caller, as `zs_free` promises; the
//! object's bytes stay in its zspage. It then names the slot in one of the class's
//! [`DEFERRED`] entries and returns. It learns the class from the handle table, as the
//! owner of the slot's batch (`HandleTable::owner`: a slot's objects are all of the
//! class that took its batch), so such a free reads the slot and nothing else of the
//! object's: not its frame's side-table word, not its zspage's descriptor. Whoever next
//! holds the class lock (a malloc, a free, compaction, migration, the statistics, the
//! checker) applies the frees named there first ([`PoolCore::drain`]), so their bytes
//! are reused by the very next malloc of the class. With every entry taken, the free
//! takes the lock and applies them all and its own: pending frees are bounded by
//! [`DEFERRED`] a class. A thread that frees many objects in a row thus applies them
//! [`DEFERRED`] + 1 at a time, and the holder applies them in stages (their frames'
//! side-table words asked for first, then the sizes beside their slots and their
//! zspages' states, then those states' holes, then each free), so that the cache misses
//! of one free, which follow each other, overlap those of the others. What reads the
//! pool's frames ([`PoolCore::total_pages`]) applies pending frees first, as the
//! statistics do.
//!
//! # The entries
//!
//! `entries[i]` holds a slot index plus one, or 0; bit `i` of `ready` says that entry
//! `i` was filled. A freer fills an empty entry with a compare-and-swap (Release: the
//! PENDING word it stored is visible with the index), then sets its bit (Release).
//! The lock holder takes the bits with a swap (Acquire) and empties each entry they
//! name with a swap (Acquire); only it empties entries. An entry is filled only when
//! empty and its bit set only after it is filled, so a bit taken names a filled entry;
//! a filled entry whose bit is not yet set waits for the next holder.
//!
//! # Frees in flight, and lost frees
//!
//! `defer_unpinned` leaves the slot PENDING *in flight*: its freer has yet to name it.
//! Once the entry is filled and its bit set, the freer settles the word (`settle`, a
//! CAS, Release), unless the holder applied the free first; a freer that found every
//! entry taken keeps the word in flight until it applies the free itself under the
//! lock. So whoever holds the locks (the checker holds them all) can tell a free that
//! is on its way from one that is lost: a settled PENDING slot that no entry with its
//! bit set names will never be applied (its object would stay in its zspage for good,
//! and the pool's counts never drop), and the checker reports it; one in flight is its
//! freer's, a few instructions from being named, or waiting for the very lock the
//! checker holds. The settle's CAS compares the whole word, generation and all: it
//! can succeed on a later free of the slot only after the generation has come round
//! (2^16 frees of the slot meanwhile), the same bound as a stale handle's.
//!
//! What a PENDING object is to the rest of the pool: still an object of its zspage, in
//! the class's counts (`live`, `requested`) and in its body, so the zspage cannot die
//! under it; not LIVE, so no one can pin, claim or move it (compaction and migration
//! pass over it as over a held object); found by passes over the handle table, and
//! by the checker, as an object whose slot has already let go of it.

use crate::frames::side::FrameWord;
use crate::handle::slot::{Slot, SlotError, Word};
use crate::layout::zspage::ZsPage;
use crate::pool::{ClassState, PoolCore, Released};
use crate::sync::{AtomicU32, Ordering};

/// Most frees pending in one class at once: as many as fill a cache line with the
/// bits.
#[cfg(not(loom))]
pub(crate) const DEFERRED: usize = 15;
/// In the loom models, one: two frees find every entry taken.
#[cfg(loom)]
pub(crate) const DEFERRED: usize = 1;

/// The frees of one class waiting for its lock: see the module comment. A cache line
/// of its own: the lanes' freers do not share lines.
#[repr(align(64))]
pub(crate) struct Deferred {
    /// Bit `i`: `entries[i]` was filled since the lock holder last looked.
    ready: AtomicU32,
    /// A slot index plus one, or 0.
    entries: [AtomicU32; DEFERRED],
}

/// What [`PoolCore::free_without_lock`] did.
pub(crate) enum Deferral {
    /// The free took effect; the lock's next holder applies it.
    Done,
    /// Someone else holds the object: nothing changed.
    Busy,
    /// The handle is not current (a second free, or never this slot's): nothing
    /// changed.
    Stale,
    /// Every entry is taken: the slot is PENDING, and the caller applies the free
    /// itself under the lock.
    Full,
}

impl Deferred {
    pub(crate) fn new() -> Deferred {
        Deferred { ready: AtomicU32::new(0), entries: std::array::from_fn(|_| AtomicU32::new(0)) }
    }

    /// Whether a free may be waiting (a guess, without the lock: a free that is
    /// missed waits for the next holder).
    #[inline(always)]
    pub(crate) fn any(&self) -> bool {
        // Relaxed: a hint; `take` swaps with Acquire.
        self.ready.load(Ordering::Relaxed) != 0
    }

    /// Names slot `idx` in an empty entry; false if there is none. Tries the entries
    /// whose bits are clear (a guess: a set bit names a filled entry, but a clear one
    /// may be filled by a freer yet to set it, or by one that set it since), first
    /// the one picked by the index, or the next such, so that concurrent freers try
    /// different ones, then the lower ones.
    fn push(&self, idx: u32) -> bool {
        const ALL: u32 = (1 << DEFERRED) - 1;
        // Relaxed: only a guess for the CASes below.
        let mut clear = !self.ready.load(Ordering::Relaxed) & ALL;
        let first = idx % DEFERRED as u32;
        while clear != 0 {
            let above = clear & (ALL << first);
            let i = if above != 0 { above } else { clear }.trailing_zeros() as usize;
            clear &= !(1 << i);
            // Release on the CAS: the slot's PENDING word, stored before, is visible to
            // whoever takes the index.
            if self.entries[i].compare_exchange(0, idx + 1, Ordering::Release, Ordering::Relaxed).is_ok() {
                // Release: pairs with `take`'s Acquire, so a holder that sees the bit
                // sees the entry filled.
                self.ready.fetch_or(1 << i, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// What the entries name, for the checker, which holds the class lock: for each
    /// filled entry, the slot it names and whether its bit is set. The bits are read
    /// first: a bit seen set names an entry that stays filled until the lock's holder
    /// takes it, while an entry seen empty may be filled, and its bit set, just after.
    pub(crate) fn names(&self) -> Vec<(u32, bool)> {
        // Acquire: pairs with the freers' Release on their bits, as in `take`.
        let bits = self.ready.load(Ordering::Acquire);
        let mut names = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            // Acquire: pairs with the freer's CAS, as in `take`.
            let v = e.load(Ordering::Acquire);
            if v != 0 {
                names.push((v - 1, bits >> i & 1 == 1));
            }
        }
        names
    }

    /// Takes the slots the entries name (the caller holds the class lock: entries are
    /// emptied by one party at a time), calling `f` on each.
    fn take(&self, mut f: impl FnMut(u32)) {
        // Acquire: pairs with the freers' Release on their bits, and through it on
        // their entries.
        let mut bits = self.ready.swap(0, Ordering::Acquire);
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            // Acquire: pairs with the freer's CAS, so the slot's PENDING word is seen.
            let v = self.entries[i].swap(0, Ordering::Acquire);
            debug_assert_ne!(v, 0, "a bit names a filled entry");
            if v != 0 {
                f(v - 1);
            }
        }
    }
}

impl PoolCore {
    /// Frees the object of generation `gen` in slot `slot` (index `idx`) of class
    /// `ci` without its lock (held by someone else, or left for its next holder): see
    /// the module comment. The layout must defer frees (`deferred(ci)`). No pin is
    /// taken: one CAS turns the LIVE word PENDING if no one holds it
    /// (`Slot::defer_unpinned`).
    #[inline(always)]
    pub(crate) fn free_without_lock(&self, ci: usize, slot: &Slot, idx: u32, gen: u16) -> Deferral {
        let deferred = self.deferred(ci).expect("called only where the layout defers frees");
        let in_flight = match slot.defer_unpinned(gen) {
            Ok(w) => w,
            Err(SlotError::Stale) => return Deferral::Stale,
            Err(_) => return Deferral::Busy,
        };
        // Read by the holder that applies the free, or under the lock by the caller.
        self.frames().side().prefetch(self.frames().pfn_of(in_flight.loc()));
        if deferred.push(idx) {
            // Named, bit and all: only now may the checker see the word settled.
            slot.settle(in_flight);
            Deferral::Done
        } else {
            // In flight until the caller applies it under the lock.
            Deferral::Full
        }
    }

    /// Applies the frees pending in class `ci`, whose lock the caller holds (`st`).
    #[inline(always)]
    pub(crate) fn drain(&self, ci: usize, st: &mut ClassState) {
        if self.deferred(ci).is_some_and(Deferred::any) {
            self.drain_now(ci, st);
        }
    }

    #[inline(never)]
    fn drain_now(&self, ci: usize, st: &mut ClassState) {
        let Some(deferred) = self.deferred(ci) else { return };
        let mut pending = [0u32; DEFERRED];
        let mut n = 0;
        deferred.take(|idx| {
            pending[n] = idx;
            n += 1;
        });
        let pending = &pending[..n];
        // Each free misses the cache on its frame's side-table word, then on the size
        // beside its slot and its zspage's state, then on that state's holes, one
        // after the other (its freer read none of them: it found the lane through the
        // handle table): asked for in stages over all the pending frees first, their
        // misses overlap. The slots' words and their frames' side-table words, read
        // in the second stage, are kept for the last: under the lock no one else
        // changes either (a PENDING word's freer may settle it, which changes only its
        // pins; a frame leaves its zspage only under its lane's lock, or when an
        // earlier free of this drain empties that zspage, which then holds none of
        // the objects still to be applied).
        for &idx in pending {
            // SAFETY: a PENDING slot was resolved by its freer, so is below the
            // high-water mark.
            let w = unsafe { self.handles().slot_unchecked(idx) }.load();
            self.frames().side().prefetch(self.frames().pfn_of(w.loc()));
        }
        let mut objects = [(Word(0), FrameWord::FREE); DEFERRED];
        for (o, &idx) in objects.iter_mut().zip(pending) {
            let (_, w, fw) = self.pending_object(idx);
            *o = (w, fw);
            // SAFETY: a PENDING slot was resolved by its freer, so is below the
            // high-water mark.
            if let Some(cell) = unsafe { self.handles().size_cell(idx) } {
                cell.prefetch();
            }
            ZsPage::prefetch_state(ZsPage::of(fw));
        }
        for &(_, fw) in &objects[..n] {
            let zs = ZsPage::of(fw);
            // SAFETY: `state` asks for 1. the lock of `zs`'s class: a slot named in
            // this lane's entries holds an object of this lane (its freer found the
            // lane as the owner of the slot's batch, the class of every object the
            // slot holds: `handle/table.rs`), whose lock we hold (`st`); 2. no other
            // reference to its state: this one ends with the statement. The zspage is alive: its
            // pending object is still in it, and none of them is applied yet.
            unsafe { (*zs).state() }.body.prefetch();
        }
        for (&idx, &(w, fw)) in pending.iter().zip(&objects) {
            // SAFETY: a PENDING slot was resolved by its freer, so is below the
            // high-water mark.
            let slot = unsafe { self.handles().slot_unchecked(idx) };
            if let Some(r) = self.apply_pending_object(ci, st, idx, slot, w, fw) {
                // Under the class lock, which `release` allows (it takes the frame
                // lock, which may be taken under a class lock, and the epoch's).
                self.release(r);
            }
        }
    }

    /// Applies the frees pending in every class, so that what is read next (the
    /// statistics, the checker) counts none of them. Whether any class had some.
    pub(crate) fn drain_all(&self) -> bool {
        let mut any = false;
        for (ci, c) in self.classes().iter().enumerate() {
            if self.deferred(ci).is_some_and(Deferred::any) {
                self.drain(ci, &mut c.state.lock());
                any = true;
            }
        }
        any
    }

    /// The slot `idx`, its PENDING word and the side-table word of the frame that
    /// holds its object, named in the entries of a lane whose lock the caller holds
    /// (so the object is still in its zspage).
    #[inline(always)]
    fn pending_object(&self, idx: u32) -> (&Slot, Word, FrameWord) {
        // SAFETY: a PENDING slot was resolved by its freer, so is below the
        // high-water mark.
        let slot = unsafe { self.handles().slot_unchecked(idx) };
        let w = slot.load();
        debug_assert!(w.is_pending(), "slot {idx} named pending is {w:?}");
        // SAFETY: `get` asks for a committed word that stays mapped: the PENDING
        // object is still in its zspage, which holds the frame (a zspage dies only
        // when empty, under the class lock the caller holds).
        let fw = unsafe { self.frames().side().get(self.frames().pfn_of(w.loc())) };
        (slot, w, fw)
    }

    /// Applies the free of the object in PENDING slot `idx` of class `ci`, whose lock
    /// the caller holds (`st`): the slot goes on the class's free-slot list, and the
    /// object out of its zspage. Returns the zspage if that left it empty.
    pub(crate) fn apply_pending(&self, ci: usize, st: &mut ClassState, idx: u32) -> Option<Released> {
        let (slot, w, fw) = self.pending_object(idx);
        self.apply_pending_object(ci, st, idx, slot, w, fw)
    }

    /// [`apply_pending`](Self::apply_pending) of slot `idx` (`slot`), whose PENDING
    /// word `w` and side-table word `fw` of its object's frame the caller has read
    /// under the lock it holds ([`pending_object`](Self::pending_object)).
    #[inline(always)]
    fn apply_pending_object(
        &self,
        ci: usize,
        st: &mut ClassState,
        idx: u32,
        slot: &Slot,
        w: Word,
        fw: FrameWord,
    ) -> Option<Released> {
        let loc = w.loc();
        let zs = ZsPage::of(fw);
        // SAFETY: as above, the zspage is alive; `class` never changes.
        debug_assert_eq!(unsafe { (*zs).class } as usize, ci);
        // Only the holder of the class lock frees a PENDING word; its freer may settle
        // it meanwhile (`Slot::free_pending`).
        slot.free_pending(w.gen(), st.free_slot);
        st.free_slot = idx as u64 + 1;
        // SAFETY: `remove_freed` asks for 1. `zs` live, of class `ci`, holding the
        // object at `loc` whose slot `idx` has just been freed: the PENDING object was
        // still in it (above); 2. the lock: `st`; 3. no reference to its state: none
        // is taken here.
        unsafe { self.remove_freed(ci, st, zs, fw.index(), loc, idx) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::error::Error;
    use crate::handle::slot::Word;
    use crate::sync::Ordering;
    use crate::{AllocFlags, Config, Handle, Layout, MapMode, Pool};

    fn dense() -> Pool {
        Pool::with_config("deferred", &Config { layout: Layout::Dense, max_pages: 256, ..Config::for_tests() }).unwrap()
    }

    fn ci_of(p: &Pool, h: Handle) -> usize {
        let loc = p.resolve(h, "test").unwrap().0.load().loc();
        // SAFETY: the frame of a live object, held by its zspage: its word stays
        // mapped, and its descriptor alive.
        unsafe { (*ZsPage::of(p.frames().side().get(p.frames().pfn_of(loc)))).class as usize }
    }

    fn filled(p: &Pool, n: usize) -> Vec<Handle> {
        (0..n)
            .map(|k| {
                let h = p.malloc(100 + k % 300, AllocFlags::default()).unwrap();
                p.write(h, &vec![k as u8; 100 + k % 300]).unwrap();
                h
            })
            .collect()
    }

    #[test]
    fn frees_in_a_row_are_left_pending_and_applied_together() {
        let p = dense();
        let hs = filled(&p, 60);
        let ci = ci_of(&p, hs[0]);
        let live = |p: &Pool| p.classes()[ci].live.load(Ordering::Relaxed);
        let before = live(&p);
        // The first free after a malloc is applied at once (the next malloc would
        // apply it anyway).
        p.free(hs[0]).unwrap();
        assert!(!p.resolve(hs[0], "test").unwrap().0.load().is_pending(), "a free after a malloc left pending");
        assert_eq!(live(&p), before - 1);
        let before = before - 1;
        let hs = &hs[1..];
        // Those after it, with no lock held anywhere, are left pending, their handles
        // stale at once.
        for &h in &hs[..DEFERRED] {
            p.free(h).unwrap();
        }
        for &h in &hs[..DEFERRED] {
            assert!(p.resolve(h, "test").unwrap().0.load().is_pending(), "a free applied at once");
            assert!(matches!(p.free(h), Err(Error::Invalid(_))), "a second free of a pending free");
        }
        assert_eq!(live(&p), before, "pending frees are still counted live");
        // The next free finds every entry taken: it applies all of them, and its own.
        p.free(hs[DEFERRED]).unwrap();
        assert!(!p.deferred(ci).unwrap().any());
        assert_eq!(live(&p), before - DEFERRED - 1);
        // The frames count applies what is pending: with everything freed, none.
        for &h in &hs[DEFERRED + 1..] {
            p.free(h).unwrap();
        }
        assert_eq!(p.total_pages(), 0, "a zspage kept by pending frees was counted");
        p.check().unwrap();
    }

    #[test]
    fn a_free_finds_its_lane_as_the_owner_of_its_slots_batch_which_the_checker_holds() {
        let p = dense();
        let hs = filled(&p, 3 * crate::handle::SLOT_BATCH);
        let ci = ci_of(&p, hs[0]);
        for &h in &hs {
            let idx = p.resolve(h, "test").unwrap().1;
            // SAFETY: a slot handed out, below the high-water mark.
            assert_eq!(unsafe { p.handles().owner(idx) }, Some(ci_of(&p, h)));
        }
        // Frees in a row are named in the lane of the slot's batch.
        p.free(hs[0]).unwrap();
        p.free(hs[1]).unwrap();
        assert!(p.resolve(hs[1], "test").unwrap().0.load().is_pending());
        let idx = p.resolve(hs[1], "test").unwrap().1;
        assert!(p.deferred(ci).unwrap().names().contains(&(idx, true)));
        p.check().unwrap();
        // A batch said to be another class's: the checker finds the object, and the
        // free slots of the batch, out of place.
        let other = (ci + 1) as u8;
        let idx = p.resolve(hs[2], "test").unwrap().1;
        // SAFETY: below the high-water mark.
        unsafe { p.handles().testonly_set_owner(idx, other) };
        let e = p.check().unwrap_err().to_string();
        assert!(e.contains("is of a batch of class"), "{e}");
        // SAFETY: as above.
        unsafe { p.handles().testonly_set_owner(idx, ci as u8) };
        p.check().unwrap();
        // The kernel layout keeps no owners: its frees wait for their class lock.
        let k = Pool::with_config("kernel", &Config { layout: Layout::Kernel, max_pages: 256, ..Config::for_tests() })
            .unwrap();
        let h = k.malloc(100, AllocFlags::default()).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { k.handles().owner(k.resolve(h, "test").unwrap().1) }, None);
        k.free(h).unwrap();
        k.check().unwrap();
    }

    #[test]
    fn a_malloc_at_the_page_limit_applies_the_frees_pending_in_other_lanes() {
        // Two zspages' worth of frames, whatever the frame size.
        let limit = 2 * dense().classes()[0].spec.frames;
        let p = Pool::with_config("limit", &Config { layout: Layout::Dense, max_pages: limit, ..Config::for_tests() })
            .unwrap();
        let mine = p.table.class_for(1);
        // A thread of another lane fills the pool to its page limit (no other lane,
        // on one CPU: nothing to show).
        let theirs = (0..64).find_map(|_| {
            let (pool, mine) = (&p, mine);
            std::thread::scope(|s| {
                s.spawn(move || {
                    let ci = pool.table.class_for(1);
                    (ci != mine).then(|| {
                        let hs: Vec<Handle> =
                            std::iter::from_fn(|| pool.malloc(3000, AllocFlags::default()).ok()).collect();
                        (ci, hs)
                    })
                })
                .join()
                .unwrap()
            })
        });
        let Some((ci, hs)) = theirs else { return };
        assert_eq!(p.frames().held(), limit, "filled to the limit");
        // All its objects freed, the last of each zspage left pending in its lane
        // (another thread frees them while this one holds that lane's lock).
        let zspage = |h: Handle| {
            let loc = p.resolve(h, "test").unwrap().0.load().loc();
            // SAFETY: the frame of a live object: its word stays mapped.
            ZsPage::of(unsafe { p.frames().side().get(p.frames().pfn_of(loc)) })
        };
        let mut last = std::collections::HashMap::new();
        for &h in &hs {
            last.insert(zspage(h), h);
        }
        let lasts: Vec<Handle> = last.into_values().collect();
        assert!(lasts.len() <= DEFERRED);
        for h in hs.iter().filter(|h| !lasts.contains(h)) {
            p.free(*h).unwrap();
        }
        assert_eq!(p.total_pages(), limit, "each zspage keeps an object");
        std::thread::scope(|s| {
            let held = p.classes()[ci].state.lock();
            let (pool, lasts) = (&p, &lasts);
            s.spawn(move || lasts.iter().for_each(|&h| pool.free(h).unwrap())).join().unwrap();
            drop(held);
        });
        assert!(p.deferred(ci).unwrap().any());
        assert_eq!(p.frames().held(), limit, "the pending frees keep their zspages");
        // A malloc of this thread's lane finds no frame left under the limit until
        // those frees are applied: it applies them and succeeds.
        let h = p.malloc(3000, AllocFlags::default()).expect("a malloc refused for frees left pending");
        assert!(!p.deferred(ci).unwrap().any());
        p.free(h).unwrap();
        p.check().unwrap();
    }

    #[test]
    fn a_free_does_not_wait_for_a_held_lane_lock_and_takes_effect_at_once() {
        let p = dense();
        let hs = filled(&p, 40);
        let before = p.info();
        let ci = ci_of(&p, hs[0]);
        std::thread::scope(|s| {
            // Held inside the scope, so that a failed assertion drops it and the
            // freeing thread is not left waiting for it.
            let held = p.classes()[ci].state.lock();
            // Frees from another thread while this one holds the lane's lock: each
            // returns without the lock (on a lock it waited for, the receive times out).
            let (tx, rx) = mpsc::channel();
            let (pool, freed) = (&p, &hs[..10]);
            s.spawn(move || {
                for &h in freed {
                    tx.send(pool.free(h)).unwrap();
                }
            });
            for _ in 0..10 {
                assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(Ok(())), "a free waited for the lane lock");
            }
            // The handles are stale at once: a second free, a map, a read are refused.
            assert!(matches!(p.free(hs[0]), Err(Error::Invalid(_))), "a second free of a deferred free");
            assert!(matches!(p.map(hs[1], MapMode::ReadOnly).map(|_| ()), Err(Error::Invalid(_))));
            assert!(matches!(p.obj_size(hs[2]), Err(Error::Invalid(_))));
            // A mapped object is refused with Busy and stays whole, lock or no lock.
            let m = p.map(hs[10], MapMode::ReadOnly).unwrap();
            assert_eq!(p.free(hs[10]), Err(Error::Busy));
            drop(held);
            drop(m);
        });
        // Statistics apply the pending frees first: exact.
        let after = p.info();
        assert_eq!(after.live_objects, before.live_objects - 10);
        let freed: usize = (0..10).map(|k| 100 + k % 300).sum();
        assert_eq!(after.requested_bytes, before.requested_bytes - freed as u64);
        p.check().unwrap();
        let mut out = vec![0u8; 400];
        for (k, &h) in hs.iter().enumerate().skip(10) {
            assert_eq!(&*p.read_begin(h, 100 + k % 300, &mut out).unwrap(), &vec![k as u8; 100 + k % 300][..]);
        }
    }

    #[test]
    fn with_every_entry_taken_a_free_waits_and_applies_itself() {
        let p = dense();
        let hs = filled(&p, DEFERRED + 5);
        let ci = ci_of(&p, hs[0]);
        let held = p.classes()[ci].state.lock();
        for &h in &hs[..DEFERRED] {
            assert_eq!(p.free(h), Ok(()));
        }
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| tx.send(p.free(hs[DEFERRED])).unwrap());
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "no entry left: the free waits");
            drop(held);
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(Ok(())));
        });
        assert!(!p.deferred(ci).unwrap().any(), "the waiting free applied the others first");
        assert_eq!(p.info().live_objects, 4);
        p.check().unwrap();
        for &h in &hs[DEFERRED + 1..] {
            p.free(h).unwrap();
        }
        assert_eq!(p.total_pages(), 0, "the zspages emptied by pending frees died");
    }

    #[test]
    fn the_next_malloc_of_the_lane_applies_pending_frees_and_reuses_their_bytes() {
        let p = dense();
        let mut hs = filled(&p, 30);
        let ci = ci_of(&p, hs[0]);
        let pages = p.total_pages();
        for _ in 0..100 {
            // Frees on the thread that holds the lock cannot take it: they are left.
            let held = p.classes()[ci].state.lock();
            for h in hs.drain(..10) {
                p.free(h).unwrap();
            }
            drop(held);
            assert!(p.deferred(ci).unwrap().any());
            // This thread's lane is the objects' lane: its next malloc applies them.
            hs.extend(filled(&p, 1));
            assert_eq!(ci_of(&p, hs[hs.len() - 1]), ci);
            assert!(!p.deferred(ci).unwrap().any(), "the lane's malloc applied the pending frees");
            hs.extend(filled(&p, 9));
        }
        assert_eq!(p.info().live_objects, 30);
        assert!(p.total_pages() <= pages + 1, "pending frees' bytes were reused: {} frames", p.total_pages());
        p.check().unwrap();
    }

    /// Leaves the free of `h` PENDING and named, past the checker's drain: freed on
    /// this thread while it holds the lane lock, so the free cannot take it. Returns
    /// the lane and the slot's index.
    fn pending_named(p: &Pool, h: Handle) -> (usize, u32) {
        let ci = ci_of(p, h);
        let held = p.classes()[ci].state.lock();
        assert_eq!(p.free(h), Ok(()));
        drop(held);
        (ci, p.resolve(h, "test").unwrap().1)
    }

    #[test]
    fn the_checker_counts_a_pending_object_as_its_zspages_and_finds_corruption_still() {
        let p = dense();
        let hs = filled(&p, 20);
        let (ci, idx) = pending_named(&p, hs[3]);
        // Taken out of the entries, as a holder does before it applies the free.
        let d = p.deferred(ci).unwrap();
        let mut st = p.classes()[ci].state.lock();
        let mut taken = Vec::new();
        d.take(|i| taken.push(i));
        assert_eq!(taken, [idx]);
        drop(st);
        // A pending slot that does not locate its object is corruption (in flight,
        // so that it needs no name).
        let slot = p.resolve(hs[3], "test").unwrap().0;
        let w = slot.load();
        assert!(w.is_pending() && !w.is_in_flight(), "settled once named: {w:?}");
        slot.set(Word::pending_in_flight(w.gen(), w.loc() + 1));
        assert!(p.check().is_err(), "a pending slot pointing elsewhere");
        slot.set(w);
        st = p.classes()[ci].state.lock();
        let r = p.apply_pending(ci, &mut st, idx);
        drop(st);
        assert!(r.is_none());
        assert_eq!(p.info().live_objects, 19);
        p.check().unwrap();
    }

    #[test]
    fn the_checker_names_a_pending_slot_that_no_entry_names_a_lost_free() {
        let p = dense();
        let hs = filled(&p, 20);
        let (ci, idx) = pending_named(&p, hs[5]);
        // The name taken and dropped: no holder will ever apply the free.
        let d = p.deferred(ci).unwrap();
        let st = p.classes()[ci].state.lock();
        d.take(|_| {});
        drop(st);
        let e = p.check().unwrap_err().to_string();
        assert!(e.contains(&format!("slot {idx} ")) && e.contains("lost free"), "{e}");
        assert_eq!(p.info().live_objects, 20, "the lost free stays");
        // Named again, it is applied by the checker's own drain, and nothing is lost.
        assert!(d.push(idx));
        p.check().unwrap();
        assert_eq!(p.info().live_objects, 19);
    }

    #[test]
    fn the_checker_names_a_named_slot_whose_bit_was_lost() {
        let p = dense();
        let hs = filled(&p, 20);
        let (ci, idx) = pending_named(&p, hs[7]);
        // The bit taken as a swap of another party's would take it, the entry left
        // filled: no holder looks at it.
        let d = p.deferred(ci).unwrap();
        let st = p.classes()[ci].state.lock();
        assert_ne!(d.ready.swap(0, Ordering::AcqRel), 0);
        drop(st);
        let e = p.check().unwrap_err().to_string();
        assert!(e.contains(&format!("slot {idx} ")) && e.contains("lost free"), "{e}");
        let i = d.entries.iter().position(|e| e.load(Ordering::Relaxed) == idx + 1).unwrap();
        d.ready.fetch_or(1 << i, Ordering::Release);
        p.check().unwrap();
        assert_eq!(p.info().live_objects, 19);
    }

    #[test]
    fn the_checker_lets_a_free_in_flight_be() {
        let p = dense();
        let hs = filled(&p, 20);
        let ci = ci_of(&p, hs[2]);
        // A freer between turning the slot PENDING and naming it: its word is in
        // flight, and the checker waits for nothing from it.
        let (slot, idx) = p.resolve(hs[2], "test").unwrap();
        let w = slot.defer_unpinned(hs[2].gen()).unwrap();
        assert!(w.is_in_flight() && slot.load() == w);
        p.check().unwrap();
        // Named and settled, it passes too, and the checker's drain applies it.
        assert!(p.deferred(ci).unwrap().push(idx));
        slot.settle(w);
        assert!(slot.load().is_pending() && !slot.load().is_in_flight());
        p.check().unwrap();
        assert_eq!(p.info().live_objects, 19);
        // Settling after the free was applied leaves the word alone.
        slot.settle(w);
        assert!(slot.load().is_vacant());
        p.check().unwrap();
    }

    #[test]
    fn the_kernel_layout_waits_for_its_class_lock() {
        let p = Pool::with_config("kernel", &Config { layout: Layout::Kernel, max_pages: 64, ..Config::for_tests() })
            .unwrap();
        let h = p.malloc(100, AllocFlags::default()).unwrap();
        assert!(p.deferred(ci_of(&p, h)).is_none());
        p.free(h).unwrap();
        p.check().unwrap();
    }
}
