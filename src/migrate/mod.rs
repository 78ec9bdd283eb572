//! Frame migration, and the two things built on it: arena defragmentation and making
//! zspages' frames adjacent.
//!
//! # Moving one frame
//!
//! Under the class lock of the frame's zspage (so no malloc, free or compaction of the
//! class runs), every object whose slot overlaps the frame is claimed (a dense
//! zspage's objects are found by a pass over the handle table, `handle/locate.rs`; a
//! batch of moves shares one pass, checked under the lock), exactly as
//! compaction claims an object (`handle/slot.rs`: `LIVE` with no pins to `MOVING`). If one is
//! pinned (mapped, being read or written, being freed) the claims are undone and the
//! frame is not moved: a pinned object never moves. With every overlapping object
//! claimed, no one reads or writes the frame: its bytes are copied to the new frame,
//! the descriptor's frame list and both side-table words are rewritten, and each
//! claimed object is published at its new location (objects that start in an earlier
//! frame keep their location: only the frame they straddle into changed). Handles
//! never change. The old frame goes back through the epoch (`FrameSource::
//! free_deferred`): the pfn scanner may have read its word just before.
//!
//! # Defragmenting the arena
//!
//! Frames in use above the point where all held frames would fit are moved into the
//! lowest free frames; then the top comes down past the free frames at the end and the
//! arena above it is decommitted (`FrameSource::shrink`): memory and commit charge go
//! back, the address range stays reserved so the arena can always grow back. Giving
//! the address space itself back is a separate, explicit step
//! (`release_address_space`): it gives up the arena's segments above the one the top
//! is in, and that segment's tail only under RLIMIT_AS, because another mapping may
//! then take the range.
//!
//! # Adjacency
//!
//! An object straddling two frames of its chain is read and mapped in place only if
//! those frames are adjacent in the arena; otherwise every access copies it. Making a
//! zspage's frames adjacent moves them into a run of adjacent free frames.

pub(crate) mod scan;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::frames::side::{FrameType, FrameWord};
use crate::handle::locate::locate;
use crate::handle::slot::Word;
use crate::layout::zspage::ZsPage;
use crate::pool::PoolCore;
use crate::sync::{epoch, track_read, track_write, Ordering as SyncOrdering};

/// What a defragmentation or adjacency pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrateStats {
    /// Frames moved.
    pub frames_moved: usize,
    /// Frames that could not move because an object in them was pinned.
    pub frames_busy: usize,
    /// Frames the arena's top came down by (defragmentation).
    pub frames_released: usize,
    /// Zspages whose frames are now all adjacent (adjacency).
    pub zspages_joined: usize,
}

impl PoolCore {
    /// Moves the contents of frame `pfn` into frame `to`. On success `to` belongs to
    /// the zspage and `pfn` is on its way back; on error nothing changed and `to` is
    /// still the caller's.
    ///
    /// Errors: `Busy` when an object in the frame is held (mapped, being read or
    /// written); `Invalid` when `pfn` is not a frame of a zspage (now).
    ///
    /// `known` gives, for dense zspages (by address), the slots a pass over the handle
    /// table found in them (`handle/locate.rs`): those are checked under the lock, and the
    /// table is passed over again, under the lane lock, only if they do not account
    /// for the whole frame.
    ///
    /// # Safety
    /// 1. `to` is a frame the caller took from the frame source for a migration
    ///    (`take_lowest`, `take_run`) and has not used or given back;
    /// 2. `pfn` is below the arena's top;
    /// 3. the caller holds the pool's compaction lock (so no shrink gives either
    ///    frame's side-table word back meanwhile).
    unsafe fn move_frame(&self, pfn: u32, to: u32, known: &HashMap<usize, Vec<u32>>) -> Result<()> {
        let guard = epoch::pin();
        // SAFETY: `get` asks for a word that stays mapped: `pfn` is below the top (2),
        // and the compaction lock (3) keeps a shrink out.
        let w = unsafe { self.frames().side().get(pfn) };
        if !matches!(w.frame_type(), FrameType::Zspage | FrameType::Huge) {
            return Err(Error::Invalid("frame not in a zspage"));
        }
        // SAFETY: a non-free word read under `guard`: the descriptor stays allocated
        // while the guard lives (descriptors are freed through the epoch after their
        // words are cleared); `class` never changes.
        let ci = unsafe { (*ZsPage::of(w)).class } as usize;
        let class = &self.classes()[ci];
        let spec = class.spec;
        let mut st = class.state.lock();
        // A pending free would keep the frame's object from moving.
        self.drain(ci, &mut st);
        // Under the lock the frame cannot change if it is still this class's: re-read.
        // SAFETY: `pfn` is still below the top, and the compaction lock still keeps a
        // shrink out (2, 3).
        let w = unsafe { self.frames().side().get(pfn) };
        if !matches!(w.frame_type(), FrameType::Zspage | FrameType::Huge)
            // SAFETY: a non-free word read under `guard`, which still lives: its
            // descriptor stays allocated; `class` never changes.
            || unsafe { (*ZsPage::of(w)).class } as usize != ci
        {
            return Err(Error::Invalid("frame changed hands"));
        }
        drop(guard);
        let zs: &ZsPage = {
            // SAFETY: a zspage of the class whose lock we hold is alive until we drop it.
            unsafe { &*ZsPage::of(w) }
        };
        let k = w.index();
        // SAFETY: `state` asks for the class lock (`st`) and no other reference to the
        // zspage's state: none is taken while this one is used, in this function.
        let s = unsafe { zs.state() };
        let (shift, frame) = (self.frames().shift(), self.frames().frame_size());
        let frame_lo = k << shift;
        let frame_hi = frame_lo + frame;
        // The objects overlapping the frame, as (slot index, start in the chain): from
        // what the caller found, else from a pass under the lock, which misses none.
        let key = zs as *const ZsPage as usize;
        let found = known.get(&key).map_or(&[][..], |v| v);
        let objects =
            match s.body.objects_in(zs, &spec, self.handles(), found, frame_lo..frame_hi, shift).or_else(|| {
                let all = locate(self.handles(), zs.frame_list().map(|pfn| (pfn, key)), shift)
                    .remove(&key)
                    .unwrap_or_default();
                s.body.objects_in(zs, &spec, self.handles(), &all, frame_lo..frame_hi, shift)
            }) {
                Some(objects) => objects,
                None => {
                    debug_assert!(false, "a pass under the lock locates every object");
                    return Err(Error::Invalid("the frame's objects could not all be located"));
                }
            };
        let mut claimed: Vec<(u32, Word, usize)> = Vec::new();
        for (link, start) in objects {
            // SAFETY: `slot_unchecked` asks for an index below the high-water mark: the
            // body listed it as an object's slot, which was issued, so below the mark.
            let slot = unsafe { self.handles().slot_unchecked(link) };
            match slot.begin_move() {
                Some(c) => claimed.push((link, c, start)),
                None => {
                    for (idx, c, _) in claimed {
                        // SAFETY: a slot listed and claimed above: below the mark.
                        unsafe { self.handles().slot_unchecked(idx) }.end_move(c, c.loc());
                    }
                    return Err(Error::Busy);
                }
            }
        }
        let (from_addr, to_addr) = (self.frames().frame_addr(pfn), self.frames().frame_addr(to));
        track_read(from_addr, frame);
        track_write(to_addr, frame);
        // SAFETY: the source is readable for a page and no one writes it: every object
        // overlapping frame `pfn` is claimed and the class lock is held; the
        // destination is writable for a page and no one else touches it: frame `to` is
        // the caller's, unused (1); both are committed frames of the arena (held and
        // taken frames are below the committed top), and distinct, so not overlapping.
        unsafe { std::ptr::copy_nonoverlapping(from_addr, to_addr, frame) };
        // Relaxed: readers reach `frames[k]` only through an object overlapping frame
        // k, all of which are claimed; the Release of `end_move` below publishes it.
        zs.frames[k].store(to, SyncOrdering::Relaxed);
        // SAFETY: `set` asks for 1. words that stay mapped: both frames are below the
        // top (2, and `to` was handed out), and the compaction lock keeps a shrink out
        // (3); 2. the lock of the class whose zspage takes one frame and gives up the
        // other: held (`st`).
        unsafe {
            self.frames().side().set(to, ZsPage::word(zs, w.frame_type(), k));
            self.frames().side().set(pfn, FrameWord::FREE);
        }
        for (idx, c, start) in claimed {
            let loc = if start >> shift == k { zs.loc_of(start, shift) } else { c.loc() };
            // SAFETY: a slot listed and claimed above: below the mark.
            unsafe { self.handles().slot_unchecked(idx) }.end_move(c, loc);
        }
        // Still under the class lock: the checker sees the frame count and the zspage
        // change together.
        self.frames().migrated(pfn, to);
        // Relaxed: a statistic.
        self.counters().frames_migrated.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Moves frames in use from the top of the arena into free frames below, then
    /// gives the arena's free upper part back (pages, commit charge, side-table
    /// pages; the address range stays reserved). Runs exclusive of compaction.
    pub fn defragment(&self) -> MigrateStats {
        let _running = self.compaction().lock();
        let mut done = MigrateStats::default();
        // Frames at or above the arena's bottom plus those in use need a place below.
        let held = self.frames().bottom() + self.frames().held();
        let top = self.frames().top();
        // Frames in use at or above `held` need a place below it. Both lists ascend,
        // so frames keep their order: a zspage whose frames were adjacent stays so
        // wherever the targets are adjacent (its straddling objects stay in place).
        let movers: Vec<u32> = (held as u32..top as u32)
            // SAFETY: below the top, and the compaction lock keeps a shrink out.
            .filter(|&p| unsafe { self.frames().side().get(p) }.frame_type() != FrameType::Free)
            .collect();
        let known = self.locate_in_frames(&movers);
        let mut targets = self.frames().take_lowest(movers.len(), held).into_iter();
        let mut unused = Vec::new();
        for pfn in movers {
            let Some(to) = targets.next() else { break };
            // SAFETY: `to` was taken above and not used; `pfn` is below the top; the
            // compaction lock is held.
            match unsafe { self.move_frame(pfn, to, &known) } {
                Ok(()) => done.frames_moved += 1,
                Err(e) => {
                    if e == Error::Busy {
                        done.frames_busy += 1;
                    }
                    unused.push(to);
                }
            }
        }
        unused.extend(targets);
        self.frames().free_taken(&unused);
        self.wait_for_retired_frames();
        done.frames_released = self.frames().shrink(false).0;
        done
    }

    /// Unmaps the arena's and the side table's address space above the frames in use
    /// (after [`defragment`](Self::defragment), that is above the frames held), so the
    /// process's virtual size falls. Returns the bytes of arena address space given up.
    ///
    /// Whole segments above the one the top is in are given up; that segment keeps its
    /// reservation, so the pool can always grow back. Only when the process's address
    /// space is limited (RLIMIT_AS) is that segment's tail given up too: the arena
    /// maps it again when it grows, but never over another mapping, so if one has been
    /// placed there meanwhile (a thread stack, a malloc arena, another pool), the pool
    /// cannot grow past it and malloc fails with `NoMemory`.
    pub fn release_address_space(&self) -> usize {
        // The frees pending in the lanes first: the zspages they empty give their
        // frames back, which may lower the top.
        self.drain_all();
        let _running = self.compaction().lock();
        self.frames().shrink(true).1
    }

    /// Moves the frames of every zspage whose chain is not contiguous into a run of
    /// adjacent frames, so its straddling objects are read and mapped in place.
    pub fn make_adjacent(&self) -> MigrateStats {
        let _running = self.compaction().lock();
        let mut done = MigrateStats::default();
        for class in self.classes().iter().filter(|c| c.spec.frames > 1) {
            // The zspages to join, as (first pfn, number of frames), found under the lock.
            let mut split: Vec<Vec<u32>> = Vec::new();
            {
                let st = class.state.lock();
                for z in st.lists.all() {
                    // SAFETY: list members are live descriptors; lock held.
                    let pfns: Vec<u32> = unsafe { &*z }.frame_list().collect();
                    if pfns.windows(2).any(|p| !self.frames().adjacent(p[0], p[1])) {
                        split.push(pfns);
                    }
                }
            }
            let firsts: Vec<u32> = split.iter().map(|pfns| pfns[0]).collect();
            let known = self.locate_in_frames(&firsts);
            for pfns in split {
                let Ok(run) = self.frames().take_run(pfns.len()) else { break };
                let mut moved = 0;
                for (&from, &to) in pfns.iter().zip(&run) {
                    // SAFETY: `to` is of the run taken above, not used yet; `from` was
                    // a zspage's frame, so below the top; the compaction lock is held.
                    match unsafe { self.move_frame(from, to, &known) } {
                        Ok(()) => moved += 1,
                        Err(e) => {
                            if e == Error::Busy {
                                done.frames_busy += 1;
                            }
                            break;
                        }
                    }
                }
                done.frames_moved += moved;
                if moved == pfns.len() {
                    done.zspages_joined += 1;
                }
                self.frames().free_taken(&run[moved..]);
            }
        }
        // The frames given up wait for the epoch in this thread's bag of deferred
        // functions, which only this thread empties: into the global queue with them,
        // where any thread's collection (a defragmentation's wait) finds them. Left in
        // the bag of a thread that then stays idle, they never came back, and every
        // defragmentation waited its 2 s for them (tests/migrate.rs).
        epoch::pin().flush();
        done
    }

    /// The slots of the objects of the zspages that hold `pfns`, by zspage, for the
    /// layouts whose zspages do not list their objects (dense): one pass over the
    /// handle table (for [`move_frame`](Self::move_frame)); empty for the kernel
    /// layout. The caller holds the compaction lock, and the pfns were below the top.
    fn locate_in_frames(&self, pfns: &[u32]) -> HashMap<usize, Vec<u32>> {
        self.layout().locate(self.handles(), self.frames().shift(), || {
            let mut frames: Vec<(u32, usize)> = Vec::new();
            let mut seen: HashSet<usize> = HashSet::new();
            let guard = epoch::pin();
            for &pfn in pfns {
                // SAFETY: the pfns were below the top; the caller holds the compaction
                // lock, so no shrink has lowered it since.
                let w = unsafe { self.frames().side().get(pfn) };
                if matches!(w.frame_type(), FrameType::Zspage | FrameType::Huge) && seen.insert(ZsPage::of(w) as usize)
                {
                    // SAFETY: a non-free word read under `guard`: the descriptor stays
                    // allocated while the guard lives. Its frames may change before
                    // they are used; `move_frame` checks what it is given.
                    let zs = unsafe { &*ZsPage::of(w) };
                    frames.extend(zs.frame_list().map(|p| (p, ZsPage::of(w) as usize)));
                }
            }
            drop(guard);
            frames
        })
    }

    /// Waits until frames given back through the epoch can be reused, so that the
    /// arena's top can come down past them. The epoch advances once every thread that
    /// was pinned has moved on; that is normally immediate, but a pinned thread that
    /// the scheduler put aside holds it back, so the bound is wall time (2 s), not a
    /// count of tries. Frames still waiting then just stay below the top.
    fn wait_for_retired_frames(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.frames().retired_waiting() != 0 && std::time::Instant::now() < deadline {
            // Pushes this thread's deferred frees to the collector and tries to
            // advance the epoch.
            epoch::pin().flush();
            #[cfg(not(loom))]
            std::thread::sleep(std::time::Duration::from_micros(50));
            #[cfg(loom)]
            crate::sync::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AllocFlags, Config, Handle, Layout, Pool};

    fn pattern(k: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (k * 31 + i * 7) as u8).collect()
    }

    fn pfn_of(p: &Pool, h: Handle) -> u32 {
        p.frames().pfn_of(p.resolve(h, "test").unwrap().0.load().loc())
    }

    /// A list of a zspage's objects that misses some, or names objects elsewhere,
    /// is found out under the lock, and the frame still moves with all its objects.
    #[test]
    fn a_wrong_list_of_objects_is_found_out_under_the_lock() {
        let p = Pool::with_config("migrate", &Config { layout: Layout::Dense, max_pages: 512, ..Config::for_tests() })
            .unwrap();
        // About four zspages of objects, many straddling two frames (where a zspage has
        // more than one: below 64 KiB frames).
        let objs: Vec<(Handle, Vec<u8>)> = (0..200)
            .map(|k| {
                let data = pattern(k, 900 + k * 7 % 700);
                let h = p.malloc(data.len(), AllocFlags::default()).unwrap();
                p.write(h, &data).unwrap();
                (h, data)
            })
            .collect();
        let slot = |h| p.resolve(h, "test").unwrap().1;
        let (moved, elsewhere) = (objs[20].0, objs[199].0);
        // SAFETY: the frame of a live object, held by its zspage: its word stays mapped.
        let zs = unsafe { p.frames().side().get(pfn_of(&p, moved)) }.owner();
        // SAFETY: the frame of another live object, likewise.
        assert_ne!(unsafe { p.frames().side().get(pfn_of(&p, elsewhere)) }.owner(), zs);
        let lists = [vec![], vec![slot(moved)], vec![slot(elsewhere), slot(moved)]];
        for known in lists {
            let from = pfn_of(&p, moved);
            let to = p.frames().take_run(1).unwrap()[0];
            let running = p.compaction().lock();
            // SAFETY: `to` was just taken for this; `from` holds a live object; the
            // compaction lock is held.
            unsafe { p.move_frame(from, to, &HashMap::from([(zs, known)])) }.unwrap();
            drop(running);
            assert_eq!(pfn_of(&p, moved), to, "the object moved with its frame");
            p.check().unwrap();
            let mut out = vec![0u8; 4096];
            for (h, data) in &objs {
                assert_eq!(&*p.read_begin(*h, data.len(), &mut out).unwrap(), &data[..]);
            }
        }
    }
}
