//! Compaction: per class, objects move out of the least-used zspages into the most-used
//! ones, and zspages left empty give their frames back.
//!
//! # The kernel layout
//!
//! The algorithm is the kernel's (__zs_compact in mm/zsmalloc.c), restated: while the
//! class has at least a whole zspage's worth of free slots, take the emptiest zspage as
//! the source and the fullest non-full one as the destination, and move objects from
//! the first into the second until the source is empty or the destination full. When
//! that condition fails, the class holds exactly ceil(objects / objects per zspage)
//! zspages, the ideal.
//!
//! # The dense layout
//!
//! A dense zspage's free bytes are holes between objects and its tail, and an object
//! fits wherever a run is long enough, so there is no fixed count of slots to fill.
//! A lane's compaction takes its zspages in order of the share of their bytes in
//! use, and picks as sources the longest prefix of those with at least 1/16 free
//! whose objects fit in their bytes less one whole zspage ([`drain_count`]). The
//! sources go on the lane's drain list, where malloc does not place objects; their
//! objects are found in one pass over the handle table (`locate.rs`) and moved one
//! at a time to wherever malloc would place them: into
//! holes and tails of the other zspages, the tightest first, and into new zspages
//! when none fits. Emptying the sources then gives back at least one zspage more
//! than the new ones took; what `compact` reports is that net count. After freeing
//! a random half of a pool's objects, nearly every zspage is a source, and the
//! objects end up packed as tightly as after a fill.
//!
//! # Moving an object
//!
//! Under the class lock (so no malloc or free of the class runs, and the zspages' free
//! lists are ours), the destination is chosen first: in the kernel layout a free
//! object of an existing zspage, in the dense layout wherever malloc would place the
//! object, which may take a new zspage (frames, and with them mmap or mprotect). Only
//! then is the object's slot claimed, with one CAS from `LIVE` without holders to
//! `COPYING` (`slot.rs`); if that fails, the dense placement is undone. So an object
//! is claimed for one copy and nothing else: no system call, no lock, no allocation.
//! A held object (mapped, being read or written, or being freed) cannot be claimed: it
//! is skipped and counted, and its zspage stays. Once claimed, no one can take it;
//! readers and writers that try wait out the copy (one object, at most 4 KiB). The
//! bytes are copied into the destination, the zspages' entries updated, and the slot
//! published `LIVE` at the new location with a Release store. Readers of every other
//! object go on untouched: compaction never blocks a reader of an object it is not
//! moving.
//!
//! # Bounded pauses
//!
//! The class lock is dropped after each source zspage (at most one zspage's objects,
//! copied), so malloc and free of the class wait at most that long. A source whose
//! objects could not all move (pinned) is not taken again in the same pass.
//!
//! Emptied zspages are retired under the lock (off the lists, side-table words
//! cleared) and released after it: frames back to the OS, descriptors to the epoch
//! collector.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use crate::locate::Located;
use crate::os::PAGE_SIZE;
use crate::packed::DRAIN;
use crate::pool::{ClassState, PoolCore, Released};
use crate::zspage::{ObjMeta, ZsPage, GROUP_EMPTY, GROUP_FULL, NONE};

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

/// Whether the class has a whole zspage's worth of free slots (the kernel's
/// zs_can_compact() being non-zero).
fn can_compact(st: &ClassState, objs: usize, live: usize) -> bool {
    let zspages: usize = st.counts.iter().sum();
    zspages * objs - live >= objs
}

/// The emptiest zspage not in `tried`, scanning from the lowest non-empty group
/// (under 10% full) up.
fn pick_source(st: &ClassState, tried: &HashSet<usize>) -> Option<*mut ZsPage> {
    st.lists(GROUP_EMPTY + 1..GROUP_FULL).find(|&zs| !tried.contains(&(zs as usize)))
}

/// The fullest non-full zspage other than `not`.
fn pick_destination(st: &ClassState, not: *mut ZsPage) -> Option<*mut ZsPage> {
    (GROUP_EMPTY + 1..GROUP_FULL).rev().flat_map(|g| st.list(g)).find(|&zs| zs != not)
}

impl PoolCore {
    /// Compacts every class; returns what it did. A compaction already running on this
    /// pool makes this one return at once with nothing done, as the kernel's does.
    pub fn compact(&self) -> CompactStats {
        let Some(_running) = self.compaction.try_lock() else { return CompactStats::default() };
        let mut total = CompactStats::default();
        for ci in 0..self.classes.len() {
            total.add(self.compact_class(ci, usize::MAX));
        }
        total
    }

    /// Compacts one class (the caller holds the pool's compaction lock), stopping once
    /// it has freed `budget` frames or more.
    pub(crate) fn compact_class(&self, ci: usize, budget: usize) -> CompactStats {
        let done = if self.dense { self.compact_lane(ci, budget) } else { self.compact_slots(ci, budget) };
        let n = &self.counters;
        // Relaxed: statistics.
        n.pages_compacted.fetch_add(done.pages_freed as u64, Ordering::Relaxed);
        n.objs_moved.fetch_add(done.objs_moved as u64, Ordering::Relaxed);
        n.compact_skipped.fetch_add(done.skipped_pinned as u64, Ordering::Relaxed);
        done
    }

    /// The kernel's algorithm, for a class of the kernel layout.
    fn compact_slots(&self, ci: usize, budget: usize) -> CompactStats {
        let class = &self.classes[ci];
        let spec = class.spec;
        let mut done = CompactStats::default();
        let mut tried: HashSet<usize> = HashSet::new();
        let mut buf = [0u8; PAGE_SIZE];
        loop {
            let mut st = class.state.lock();
            // Relaxed: written under the lock we hold.
            if done.pages_freed >= budget || !can_compact(&st, spec.objs, class.live.load(Ordering::Relaxed)) {
                break;
            }
            let Some(src) = pick_source(&st, &tried) else { break };
            tried.insert(src as usize);
            let mut released: Vec<Released> = Vec::new();
            // SAFETY: `src` is a live zspage of this class and we hold its lock.
            let nobj = spec.objs;
            for obj in 0..nobj {
                // SAFETY: as above; the state borrow ends within this iteration.
                let meta = unsafe { (*src).state().objs()[obj] };
                if meta.size == 0 {
                    continue; // free slot
                }
                let Some(dst) = pick_destination(&st, src) else { break };
                // SAFETY: below the high-water mark (recorded at malloc).
                let slot = unsafe { self.handles.slot_unchecked(meta.link) };
                let Some(claimed) = slot.begin_move() else {
                    done.skipped_pinned += 1;
                    continue;
                };
                // SAFETY: both zspages are live and ours under the class lock; the object
                // is claimed, so nothing else reads or writes its bytes, and the
                // destination slot is free, so no one else touches it.
                let new_loc = unsafe { self.move_object(&mut st, src, obj, dst, meta, &mut buf) };
                slot.end_move(claimed, new_loc);
                done.objs_moved += 1;
                // SAFETY: as above.
                if unsafe { (*src).state().inuse } == 0 {
                    break;
                }
            }
            // SAFETY: as above.
            if unsafe { (*src).state().inuse } == 0 {
                // SAFETY: live, empty, ours.
                released.push(unsafe { self.retire(ci, &mut st, src) });
                done.pages_freed += spec.frames;
            }
            drop(st);
            for r in released {
                self.release(r);
            }
        }
        done
    }

    /// Compacts a lane of the dense layout (see the module comment): picks the
    /// zspages to empty, puts them on the drain list, where malloc does not look, and
    /// moves their objects, one zspage per hold of the lock, to wherever malloc would
    /// place them.
    fn compact_lane(&self, ci: usize, budget: usize) -> CompactStats {
        let class = &self.classes[ci];
        let mut done = CompactStats::default();
        // The drained zspages' frames, each with its zspage.
        let mut drained: Vec<(u32, usize)> = Vec::new();
        {
            let mut st = class.state.lock();
            let mut all: Vec<(usize, usize, *mut ZsPage)> = st
                .lists(0..DRAIN)
                .map(|zs| {
                    // SAFETY: list members are live descriptors of the locked lane.
                    let x = unsafe { (*zs).state() }.ext();
                    (x.used(), x.cap(), zs)
                })
                .collect();
            // Fullest last, by the share of their bytes in use.
            all.sort_unstable_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)));
            let sources = drain_count(all.iter().map(|&(used, cap, _)| (used, cap)), class.spec.frames * PAGE_SIZE);
            for &(_, _, zs) in &all[..sources] {
                // SAFETY: as above; each is on one list, and moves to the drain list.
                unsafe {
                    st.unlink(zs);
                    st.push(zs, DRAIN);
                    drained.extend((*zs).frame_list().map(|pfn| (pfn, zs as usize)));
                }
            }
        }
        // Their objects, found without the lock: none is placed in a drained zspage, so
        // none is missed; those freed or moved meanwhile drop out under the lock.
        let mut objects_of = self.locate(drained);
        let mut buf = [0u8; PAGE_SIZE];
        let mut stop = false;
        // Frames released and frames taken for new zspages: the objects of the
        // zspages being emptied may need some.
        let (mut released_frames, mut taken_frames) = (0, 0);
        loop {
            let mut st = class.state.lock();
            let src = st.heads[DRAIN];
            if src.is_null() {
                break;
            }
            if stop || released_frames >= budget.saturating_add(taken_frames) {
                // Give the rest back to malloc.
                while !st.heads[DRAIN].is_null() {
                    let zs = st.heads[DRAIN];
                    // SAFETY: a live zspage of the locked lane, on the drain list.
                    unsafe { st.undrain(zs) };
                }
                break;
            }
            let found = objects_of.remove(&(src as usize)).unwrap_or_default();
            // SAFETY: as above.
            let objects = self.objects_now(unsafe { &*src }, &found);
            // A zspage with a held object (mapped, being read or written) cannot be
            // emptied now: moving its other objects would only take room elsewhere.
            // Left whole, back to malloc.
            let pinned = objects.iter().filter(|o| o.word.held()).count();
            if pinned != 0 {
                done.skipped_pinned += pinned;
                // SAFETY: live, on the drain list, ours.
                unsafe { st.undrain(src) };
                continue;
            }
            // Destinations a claim refused after they were placed, emptied again.
            let mut undone: Vec<Released> = Vec::new();
            for Located { idx, word, off, len } in objects {
                // SAFETY: located: below the table's high-water mark.
                let slot = unsafe { self.handles.slot_unchecked(idx) };
                // Place first, then claim: placing may take a new zspage (mmap,
                // mprotect), during which a claimed object would keep its readers
                // waiting. The source is on the drain list, so it is never the
                // destination. A new zspage is a whole chain or none: a short one could
                // not take the source's objects, and would stay.
                let placed = loop {
                    match self.place_dense(ci, &mut st, len, true, false) {
                        Ok(placed) => break Some(placed),
                        // No room, and no whole chain to be had (the page limit): the
                        // fullest zspage still waiting to be emptied takes objects
                        // instead.
                        Err(_) => match fullest_drained(&st, src) {
                            // SAFETY: a live zspage of the locked lane, on the drain list.
                            Some(z) => unsafe { st.undrain(z) },
                            None => break None,
                        },
                    }
                };
                let Some((dst, to, fresh)) = placed else {
                    stop = true;
                    break;
                };
                let Some(claimed) = slot.begin_move() else {
                    // Held since it was located: it stays, and so does its zspage.
                    done.skipped_pinned += 1;
                    // SAFETY: `dst` is live and ours; the bytes just placed hold nothing.
                    let d = unsafe { (*dst).state() };
                    self.edit_ext(ci, d, |x| x.remove(to, len));
                    if d.ext().is_empty() {
                        // SAFETY: live, empty (it was new), ours.
                        undone.push(unsafe { self.retire(ci, &mut st, dst) });
                    } else {
                        // SAFETY: live, on a list, ours.
                        unsafe { st.regroup_dense(dst) };
                    }
                    continue;
                };
                // Under the lane lock only a hold can change the word of an object of
                // its zspages, and the claim needs none.
                debug_assert_eq!((claimed.gen(), claimed.loc()), (word.gen(), word.loc()));
                // SAFETY: `dst` is live and ours.
                taken_frames += if fresh { usize::from(unsafe { (*dst).nframes }) } else { 0 };
                // SAFETY: both zspages are live and ours under the lane lock; the
                // object is claimed, so nothing else reads or writes its bytes, and
                // the destination bytes were free until `place_dense` took them.
                unsafe {
                    let bytes = &mut buf[..len];
                    self.zspage_span(&*src, off, len).copy_out(bytes);
                    self.zspage_span(&*dst, to, len).copy_in(bytes);
                }
                // SAFETY: as above.
                let s = unsafe { (*src).state() };
                self.edit_ext(ci, s, |x| x.remove(off, len));
                // SAFETY: `dst` is live and ours.
                slot.end_move(claimed, unsafe { (*dst).loc_of(to) });
                done.objs_moved += 1;
            }
            // SAFETY: `src` is live and ours.
            let released = if unsafe { (*src).state() }.ext().is_empty() {
                // SAFETY: as above.
                released_frames += usize::from(unsafe { (*src).nframes });
                // SAFETY: live, empty, ours.
                Some(unsafe { self.retire(ci, &mut st, src) })
            } else {
                // Pinned objects stayed, or the pool could not grow: back to malloc.
                // SAFETY: live, on the drain list, ours.
                unsafe { st.undrain(src) };
                None
            };
            drop(st);
            for r in released.into_iter().chain(undone) {
                self.release(r);
            }
        }
        done.pages_freed = released_frames.saturating_sub(taken_frames);
        if done.objs_moved != 0 {
            // The zspages the objects went to are full now: their entries' room to
            // grow is metadata held for nothing.
            let st = class.state.lock();
            for zs in st.lists(0..DRAIN) {
                // SAFETY: list members are live descriptors of the locked lane.
                self.edit_ext(ci, unsafe { (*zs).state() }, |x| x.shrink_to_fit());
            }
            drop(st);
        }
        done
    }

    /// Copies object `obj` of `src` into a free object of `dst` and moves its entry;
    /// returns the new location.
    ///
    /// # Safety
    /// The class lock (`st`) is held, `src` and `dst` are distinct live zspages of the
    /// class, `dst` is not full, and the object's slot is claimed (MOVING).
    unsafe fn move_object(
        &self,
        st: &mut ClassState,
        src: *mut ZsPage,
        obj: usize,
        dst: *mut ZsPage,
        meta: ObjMeta,
        buf: &mut [u8; PAGE_SIZE],
    ) -> u64 {
        // SAFETY: caller's contract: live, ours, distinct.
        let (s, d, zs_src, zs_dst) = unsafe { ((*src).state(), (*dst).state(), &*src, &*dst) };
        let spec = self.classes[zs_src.class as usize].spec;
        let to = d.free_head as usize;
        debug_assert!(to != NONE as usize);
        let len = spec.usable();
        let bytes = &mut buf[..len];
        // SAFETY: the source object is claimed and the destination slot is free; both
        // spans lie in frames of live zspages held under the class lock.
        unsafe {
            self.zspage_span(zs_src, obj * spec.size, len).copy_out(bytes);
            self.zspage_span(zs_dst, to * spec.size, len).copy_in(bytes);
        }
        d.free_head = d.objs()[to].link as u16;
        d.objs()[to] = meta;
        d.inuse += 1;
        let head = s.free_head as u32;
        s.objs()[obj] = ObjMeta { link: head, size: 0 };
        s.free_head = obj as u16;
        s.inuse -= 1;
        // SAFETY: both on this class's lists, lock held. An empty source is left in the
        // empty group until the caller retires it.
        unsafe {
            st.regroup(dst, spec.objs);
            st.regroup(src, spec.objs);
        }
        zs_dst.loc_of(to * spec.size)
    }
}

/// How many of a lane's zspages, as (bytes in use, bytes) ordered by the share in
/// use ascending, to empty: the longest prefix of zspages with at least
/// 1/[`DRAIN_FREE_SHARE`] of their bytes free whose objects fit in the bytes of the
/// prefix less one whole zspage (`chain_bytes`), so that emptying them gives frames
/// back even if every object lands in a new zspage. 0 if no prefix frees anything.
pub(crate) fn drain_count(zspages: impl Iterator<Item = (usize, usize)>, chain_bytes: usize) -> usize {
    let (mut best, mut used, mut bytes) = (0, 0, 0);
    for (k, (u, cap)) in zspages.enumerate() {
        if (cap - u) * DRAIN_FREE_SHARE < cap {
            break;
        }
        used += u;
        bytes += cap;
        if used + chain_bytes <= bytes {
            best = k + 1;
        }
    }
    best
}

/// The zspage on the drain list, other than `not`, with the most bytes in use.
fn fullest_drained(st: &ClassState, not: *mut ZsPage) -> Option<*mut ZsPage> {
    st.list(DRAIN)
        .filter(|&zs| zs != not)
        // SAFETY: list members are live descriptors of the locked lane. The first of
        // the fullest, as `min_by_key` keeps the first of equals.
        .min_by_key(|&zs| std::cmp::Reverse(unsafe { (*zs).state() }.ext().used()))
}

/// A dense zspage is worth emptying when at least 1 / this of it is free.
pub const DRAIN_FREE_SHARE: usize = 16;

/// Frames compaction could free in class `ci` now (for the automatic trigger).
pub(crate) fn freeable(pool: &PoolCore, ci: usize) -> usize {
    let c = &pool.classes[ci];
    if pool.dense {
        // A dense object takes exactly its size: the bytes in use are the requested.
        let cap = c.spec.frames * PAGE_SIZE;
        // Relaxed: an estimate.
        let zspages = c.zspages.load(Ordering::Relaxed);
        return (zspages * cap).saturating_sub(c.requested.load(Ordering::Relaxed)) / cap * c.spec.frames;
    }
    // Relaxed: an estimate; the compaction itself rechecks under the lock.
    let zspages = c.zspages.load(Ordering::Relaxed);
    let live = c.live.load(Ordering::Relaxed);
    (zspages * c.spec.objs).saturating_sub(live) / c.spec.objs * c.spec.frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_count_frees_at_least_one_zspage() {
        let cap = 16 * PAGE_SIZE;
        // Two half-used zspages fit in one: both are emptied.
        assert_eq!(drain_count([(cap / 2, cap), (cap / 2, cap)].into_iter(), cap), 2);
        // One half-used zspage alone would just move: nothing to gain.
        assert_eq!(drain_count([(cap / 2, cap)].into_iter(), cap), 0);
        // Three at 60% fit in two, not in one fewer of just the first two.
        assert_eq!(drain_count([(cap * 6 / 10, cap); 3].into_iter(), cap), 3);
        // A zspage with less than 1/16 free stops the prefix.
        let nearly_full = cap - cap / 32;
        assert_eq!(drain_count([(cap / 4, cap), (cap / 4, cap), (nearly_full, cap)].into_iter(), cap), 2);
        // A short zspage counts its own bytes.
        assert_eq!(drain_count([(100, PAGE_SIZE), (cap / 2, cap)].into_iter(), cap), 0);
        assert_eq!(drain_count([(100, PAGE_SIZE), (cap / 2, cap), (cap / 2, cap)].into_iter(), cap), 3);
    }
}
