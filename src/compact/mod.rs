//! Compaction: per class, objects move out of the least-used zspages into the most-used
//! ones, and zspages left empty give their frames back.
//!
//! # The kernel layout
//!
//! The algorithm is the kernel's (__zs_compact in mm/zsmalloc.c), restated: while the
//! class has at least a whole zspage's worth of free places, take the emptiest zspage
//! as the source and the fullest non-full one as the destination, and move objects
//! from the first into the second until the source is empty or the destination full.
//! When that condition fails, the class holds exactly ceil(objects / objects per
//! zspage) zspages, the ideal.
//!
//! Which zspages are emptied and where their objects go is the layout's answer
//! (`Sweep`, in `layout/mod.rs`); this module moves the objects, the same way for both.
//!
//! # The dense layout
//!
//! A dense zspage's free bytes are holes between objects and its tail, and an object
//! fits wherever a run is long enough, so there is no fixed count of places to fill.
//! A lane's compaction takes its zspages in order of the share of their bytes in
//! use, and picks as sources the longest prefix of those with at least 1/16 free
//! whose objects fit in their bytes less one whole zspage (`drain_count`). The
//! sources go on the lane's drain list, where malloc does not place objects; their
//! objects are found in one pass over the handle table (`handle/locate.rs`) and moved one
//! at a time to wherever malloc would place them: into
//! holes and tails of the other zspages, the tightest first, and into new zspages
//! when none fits. Emptying the sources then gives back at least one zspage more
//! than the new ones took; what `compact` reports is that net count. After freeing
//! a random half of a pool's objects, nearly every zspage is a source, and the
//! objects end up packed as tightly as after a fill.
//!
//! # Moving an object
//!
//! Under the class lock (so no malloc or free of the class runs, and the zspages'
//! bodies are ours), the destination is chosen first: in the kernel layout a zspage
//! with a free place, in the dense layout one where malloc would place the object,
//! which may be a new zspage (frames, and with them mmap or mprotect). Only then is the
//! object's slot claimed, with one CAS from `LIVE` without holders to `COPYING`
//! (`handle/slot.rs`); if that fails, a new zspage taken for it is given back. So an object is
//! claimed for one copy and nothing else: no system call, no lock. A held object
//! (mapped, being read or written, or being freed) cannot be claimed: it is skipped
//! and counted, and its zspage stays. Once claimed, no one can take it; readers and
//! writers that try wait out the copy (one object, at most 4 KiB). The object is
//! placed in the destination, its bytes copied, the source's body updated, and the
//! slot published `LIVE` at the new location with a Release store. Readers of every
//! other object go on untouched: compaction never blocks a reader of an object it is
//! not moving.
//!
//! # Bounded pauses
//!
//! The class lock is dropped after each source zspage (at most one zspage's objects,
//! copied), so malloc and free of the class wait at most that long: it is released
//! fairly, to a malloc or free parked on it if there is one, rather than taken back
//! by the sweep's next source first. A source whose objects could not all move
//! (pinned) is not taken again in the same pass. A class with nothing to empty (its
//! counters say so: `PoolCore::sweep_due`) and no frees pending is not locked at
//! all, so a compactor called back to back leaves malloc and free alone.
//!
//! Emptied zspages are retired under the lock (off the lists, side-table words
//! cleared) and released after it: frames back to the OS, descriptors to the epoch
//! collector.

pub(crate) mod auto;

use std::sync::atomic::Ordering;

use crate::layout::classes::Layout;
use crate::layout::zspage::ZsPage;
use crate::layout::Sweep;
use crate::pool::deferred::Deferred;
use crate::pool::{ClassState, PoolCore, Released};

/// What one compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Frames given back.
    pub pages_freed: usize,
    /// Objects moved.
    pub objs_moved: usize,
    /// Objects left in place because they were pinned.
    pub skipped_pinned: usize,
}

impl CompactStats {
    fn add(&mut self, o: CompactStats) {
        self.pages_freed += o.pages_freed;
        self.objs_moved += o.objs_moved;
        self.skipped_pinned += o.skipped_pinned;
    }
}

impl PoolCore {
    /// Compacts every class; returns what it did. A compaction already running on this
    /// pool makes this one return at once with nothing done, as the kernel's does.
    pub fn compact(&self) -> CompactStats {
        let Some(_running) = self.compaction().try_lock() else { return CompactStats::default() };
        let mut total = CompactStats::default();
        for ci in 0..self.classes().len() {
            total.add(self.compact_class(ci, usize::MAX));
        }
        total
    }

    /// Compacts one class (the caller holds the pool's compaction lock), stopping once
    /// it has freed `budget` frames or more.
    pub(crate) fn compact_class(&self, ci: usize, budget: usize) -> CompactStats {
        let done = self.sweep(ci, budget);
        if done == CompactStats::default() {
            // Nothing to count: no write to the pool's counters, which a compactor
            // called back to back would otherwise make at every call.
            return done;
        }
        let n = self.counters();
        // Relaxed: statistics.
        n.pages_compacted.fetch_add(done.pages_freed as u64, Ordering::Relaxed);
        n.objs_moved.fetch_add(done.objs_moved as u64, Ordering::Relaxed);
        n.compact_skipped.fetch_add(done.skipped_pinned as u64, Ordering::Relaxed);
        done
    }

    /// Empties the zspages class `ci`'s layout chooses, one per hold of the class
    /// lock, moving their objects where it says (see the module comment). What it
    /// reports freed is net of the new zspages the objects took.
    fn sweep(&self, ci: usize, budget: usize) -> CompactStats {
        let class = &self.classes()[ci];
        let spec = class.spec;
        let mut done = CompactStats::default();
        // A lane with nothing to empty and no frees pending is left alone, its lock
        // untaken: a compactor called back to back would otherwise take it twice a
        // call, and sort the lane's zspages under it, for nothing.
        if !self.deferred(ci).is_some_and(Deferred::any) && !self.sweep_due(ci) {
            return done;
        }
        let mut sweep = {
            note_lane_lock();
            let mut st = class.state.lock();
            // Pending frees first: their zspages may empty, or need no moving.
            self.drain(ci, &mut st);
            self.count_drainable(ci, &st);
            if !self.sweep_due(ci) {
                return done;
            }
            let sweep = Sweep::begin(self.layout(), &mut st.lists, &spec, self.frames().shift());
            st.unlock_fair();
            sweep
        };
        sweep.find_objects(self.handles(), self.frames().shift());
        let mut buf = vec![0u8; self.max_object_size().max(self.frames().frame_size())];
        // Frames released and frames taken for new zspages: the objects of the
        // zspages being emptied may need some.
        let (mut released_frames, mut taken_frames) = (0, 0);
        loop {
            note_lane_lock();
            let mut st = class.state.lock();
            self.drain(ci, &mut st);
            let give_up = released_frames >= budget.saturating_add(taken_frames);
            // Relaxed: written under the lock we hold.
            let live = class.live.load(Ordering::Relaxed);
            let Some(src) = sweep.next_source(&mut st.lists, &spec, live, give_up) else {
                st.unlock_fair();
                break;
            };
            let objects = {
                // SAFETY: `src` is a live zspage of this class (the sweep found it on
                // its lists), whose lock we hold (`st`); no other reference to its
                // state is alive, and this one ends with the block.
                let (z, body) = unsafe { (&*src, &(*src).state().body) };
                sweep.objects(z, body, &spec, self.handles(), self.frames().shift())
            };
            if sweep.whole_sources() {
                // A zspage with a held object (mapped, being read or written) cannot
                // be emptied now: moving its other objects would only take room
                // elsewhere. Left whole, back to malloc.
                let held = objects
                    .iter()
                    // SAFETY: listed slots are below the table's high-water mark.
                    .filter(|o| unsafe { self.handles().slot_unchecked(o.idx) }.load().held())
                    .count();
                if held != 0 {
                    done.skipped_pinned += held;
                    // SAFETY: `keep` asks for 1. a live zspage on one of the class's
                    // lists: `src`, as the sweep gave it; 2. the lock: `st`; 3. no
                    // reference to its state: the block above ended its one.
                    unsafe { sweep.keep(&mut st.lists, src) };
                    st.unlock_fair();
                    continue;
                }
            }
            // New destinations a claim refused, emptied again.
            let mut undone: Vec<Released> = Vec::new();
            for o in objects {
                // SAFETY: listed: below the table's high-water mark.
                let slot = unsafe { self.handles().slot_unchecked(o.idx) };
                // Destination first, then the claim: taking a new zspage may mean
                // mmap and mprotect, during which a claimed object would keep its
                // readers waiting.
                let Some((dst, fresh)) = self.destination(ci, &mut st, &mut sweep, src, o.len) else {
                    sweep.no_room();
                    break;
                };
                let Some(claimed) = slot.begin_move() else {
                    // Held since it was listed: it stays, and so does its zspage.
                    done.skipped_pinned += 1;
                    if fresh {
                        // SAFETY: `retire` asks for 1. a live, empty zspage of class
                        // `ci`: `dst` was made for this object, which it did not take;
                        // 2. its lock: `st`; 3. no reference to its state.
                        undone.push(unsafe { self.retire(ci, &mut st, dst) });
                    }
                    continue;
                };
                // Under the class lock only a hold can change the word of an object of
                // its zspages, and the claim needs none: it locates the object listed.
                // SAFETY: `src` is a live descriptor (not retired while we hold the
                // class lock); its frames are read atomically.
                debug_assert_eq!(claimed.loc(), unsafe { (*src).loc_of(o.off, self.frames().shift()) });
                // SAFETY: `dst` is a live descriptor (as `src`); `nframes` never changes.
                taken_frames += if fresh { usize::from(unsafe { (*dst).nframes }) } else { 0 };
                // SAFETY: `move_object` asks for 1. the class lock (`st`) and two
                // distinct live zspages of the class: the sweep never gives the source
                // as a destination; 2. room in `dst` for `o`: the sweep chose it for
                // `o.len` bytes, or made it for them; 3. the object claimed: `claimed`.
                let new_loc = unsafe { self.move_object(ci, &mut st, src, o, dst, &mut buf) };
                slot.end_move(claimed, new_loc);
                done.objs_moved += 1;
                // SAFETY: `src` is live, its class lock is held, and no other
                // reference to its state is alive; this one ends with the statement.
                if unsafe { (*src).state() }.body.is_empty() {
                    break;
                }
            }
            // SAFETY: `src` is live, its class lock is held, and no other reference to
            // its state is alive; this one ends with the condition.
            let released = if unsafe { (*src).state() }.body.is_empty() {
                // SAFETY: `src` is a live descriptor; `nframes` never changes.
                released_frames += usize::from(unsafe { (*src).nframes });
                // SAFETY: `retire` asks for 1. a live, empty zspage of class `ci`:
                // `src`, just found empty; 2. its lock: `st`; 3. no reference to its
                // state: the condition's has ended.
                Some(unsafe { self.retire(ci, &mut st, src) })
            } else {
                // Held objects stayed, or there was no room for them.
                // SAFETY: `keep` asks for 1. a live zspage on one of the class's
                // lists: `src`, as the sweep gave it; 2. the lock: `st`; 3. no
                // reference to its state: the condition's has ended.
                unsafe { sweep.keep(&mut st.lists, src) };
                None
            };
            // To a malloc or free waiting for the lock, if any, before the next source.
            st.unlock_fair();
            for r in released.into_iter().chain(undone) {
                self.release(r);
            }
        }
        done.pages_freed = released_frames.saturating_sub(taken_frames);
        if done.objs_moved != 0 && sweep.trims() {
            note_lane_lock();
            let st = class.state.lock();
            for zs in st.lists.all() {
                // SAFETY: a list member is a live descriptor of the class, whose lock is
                // held (`st`); no other reference to its state is alive.
                self.edit_body(ci, &mut unsafe { (*zs).state() }.body, |b| b.shrink_to_fit());
            }
        }
        done
    }

    /// Whether a compaction of class `ci` finds a zspage to empty, by the counters
    /// its lock's holders keep ([`Layout::sweep_due`]): exact under the lock, and
    /// without it as of an instant. True where the counters cannot tell (a dense lane
    /// not compacted before, whose drainable bytes are not counted yet, or of 4 GiB
    /// or more, where they are counted modulo 2^32): the sweep then looks at the
    /// zspages themselves.
    pub(crate) fn sweep_due(&self, ci: usize) -> bool {
        let class = &self.classes()[ci];
        let shift = self.frames().shift();
        // Relaxed: counters written under the class lock; a value of some instant.
        let zspages = class.zspages.load(Ordering::Relaxed);
        if self.layout() == Layout::Dense
            && (!class.counts_drainable.load(Ordering::Relaxed)
                || zspages.saturating_mul(class.spec.frames << shift) > u32::MAX as usize)
        {
            return true;
        }
        let live = class.live.load(Ordering::Relaxed);
        let drainable = class.drainable.load(Ordering::Relaxed) as usize;
        self.layout().sweep_due(&class.spec, zspages, live, drainable, shift)
    }

    /// Counts the drainable bytes of dense lane `ci` (its lock held: `st`) if it does
    /// not keep them yet, and keeps them from now on (`Class::counts_drainable`).
    fn count_drainable(&self, ci: usize, st: &ClassState) {
        let class = &self.classes()[ci];
        // Relaxed: written under the lock we hold.
        if self.layout() != Layout::Dense || class.counts_drainable.load(Ordering::Relaxed) {
            return;
        }
        let sum: usize = st
            .lists
            .all()
            // SAFETY: a list member is a live descriptor of the class, whose lock is
            // held (`st`); no other reference to its state is alive, and this one ends
            // with the closure.
            .map(|zs| unsafe { (*zs).state() }.body.drainable())
            .sum();
        // Relaxed: read under the lock, or as a value of some instant without it.
        class.drainable.store(sum as u32, Ordering::Relaxed);
        class.counts_drainable.store(true, Ordering::Relaxed);
    }

    /// A zspage other than `src` to take an object of `len` bytes: one the sweep
    /// chooses, else (where its layout grows) a new zspage of the whole chain (a short
    /// one could not take the source's objects, and would stay); where no chain can be
    /// had (the page limit), the sweep may give a zspage it was emptying back to take
    /// objects instead. Returns it and whether it is new; None: no room.
    fn destination(
        &self,
        ci: usize,
        st: &mut ClassState,
        sweep: &mut Sweep,
        src: *mut ZsPage,
        len: usize,
    ) -> Option<(*mut ZsPage, bool)> {
        loop {
            if let Some(zs) = sweep.destination(&st.lists, src, len) {
                return Some((zs, false));
            }
            if !sweep.grows() {
                return None;
            }
            if let Ok(zs) = self.new_zspage(ci, st, self.classes()[ci].spec.frames) {
                return Some((zs, true));
            }
            // SAFETY: the class lock is held (`st`).
            if !unsafe { sweep.refill(&mut st.lists, src) } {
                return None;
            }
        }
    }

    /// Moves object `o` of `src` to `dst`: places it, copies its bytes, removes it from
    /// `src`; returns its new location.
    ///
    /// # Safety
    /// 1. The class lock (`st`) is held, and `src` and `dst` are distinct live zspages
    ///    of class `ci`;
    /// 2. `dst` has room for `o` (the sweep chose it for `o.len` bytes);
    /// 3. the object's slot is claimed (COPYING).
    unsafe fn move_object(
        &self,
        ci: usize,
        st: &mut ClassState,
        src: *mut ZsPage,
        o: crate::layout::Object,
        dst: *mut ZsPage,
        buf: &mut [u8],
    ) -> u64 {
        let spec = &self.classes()[ci].spec;
        // SAFETY: by 1, both are live and ours, and distinct, so the two state
        // references do not alias.
        let (s, d, zs_src, zs_dst) = unsafe { ((*src).state(), (*dst).state(), &*src, &*dst) };
        let to =
            self.edit_body(ci, &mut d.body, |b| b.place(spec, o.size, o.idx)).expect("a destination with room (2)");
        let bytes = &mut buf[..o.len];
        // SAFETY: by 3, nothing else reads or writes the source object's bytes; the
        // destination bytes were free until the placement above took them; both spans
        // lie in frames of live zspages of the locked class (1).
        unsafe {
            self.zspage_span(zs_src, o.off, o.len).copy_out(bytes);
            self.zspage_span(zs_dst, to, o.len).copy_in(bytes);
        }
        self.edit_body(ci, &mut s.body, |b| b.remove(spec, o.off, o.idx, Some(o.size)));
        // SAFETY: both on this class's lists, lock held (1). An empty source is left
        // on its list until the caller retires it.
        unsafe {
            st.lists.relist(dst);
            st.lists.relist(src);
        }
        zs_dst.loc_of(to, self.frames().shift())
    }
}

/// Counts, in the unit tests, the class locks this thread's compactions take.
#[inline(always)]
fn note_lane_lock() {
    #[cfg(test)]
    tests::LANE_LOCKS.with(|n| n.set(n.get() + 1));
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::facade::Pool;
    use crate::layout::classes::Layout;
    use crate::pool::config::{AllocFlags, Config};

    thread_local! {
        /// Class locks taken by this thread's compactions.
        pub(super) static LANE_LOCKS: Cell<u64> = const { Cell::new(0) };
    }

    fn lane_locks() -> u64 {
        LANE_LOCKS.with(Cell::get)
    }

    /// A compaction takes the lock of a class only when it has something to empty
    /// there, or frees pending to apply: one called back to back on a pool whose
    /// classes have nothing to give leaves their locks to malloc and free.
    #[test]
    fn a_class_with_nothing_to_empty_is_left_alone() {
        for layout in [Layout::Dense, Layout::Kernel] {
            let p = Pool::with_config("sweep", &Config { layout, max_pages: 1 << 15, ..Config::for_tests() }).unwrap();
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let mut size = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                64 + (x % 2000) as usize
            };
            let hs: Vec<_> = (0..20_000).map(|_| p.malloc(size(), AllocFlags::default()).unwrap()).collect();
            // Just filled: every class packed but for its last zspage. The first
            // compaction of a dense lane takes its lock once, to count its drainable
            // bytes (`Class::counts_drainable`); none after it.
            let n = lane_locks();
            assert_eq!(p.compact(), CompactStats::default(), "{layout:?}");
            let lanes = if layout == Layout::Dense { p.classes().len() as u64 } else { 0 };
            assert_eq!(lane_locks(), n + lanes, "{layout:?}: the first compaction");
            for _ in 0..3 {
                assert_eq!(p.compact(), CompactStats::default(), "{layout:?}");
            }
            assert_eq!(lane_locks(), n + lanes, "{layout:?}: a class lock taken with nothing to empty");
            // Half freed: now there is, and the locks are taken to empty it.
            for h in hs.iter().step_by(2) {
                p.free(*h).unwrap();
            }
            let done = p.compact();
            assert!(done.pages_freed > 0 && done.objs_moved > 0, "{layout:?}: {done:?}");
            assert!(lane_locks() > n, "{layout:?}");
            p.check().unwrap();
            // And once compacted, nothing again.
            let n = lane_locks();
            assert_eq!(p.compact(), CompactStats::default(), "{layout:?}");
            assert_eq!(lane_locks(), n, "{layout:?}: a class lock taken after the compaction");
            // Frees left pending (a free after a free, in the dense layout) are
            // applied: the lock is taken for them.
            p.free(hs[1]).unwrap();
            p.free(hs[3]).unwrap();
            let n = lane_locks();
            p.compact();
            assert_eq!(lane_locks() > n, layout == Layout::Dense, "{layout:?}: pending frees");
            p.check().unwrap();
        }
    }
}
