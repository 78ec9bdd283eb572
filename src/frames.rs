//! Frames: order-0 pages of one mmap-backed arena, handed out and taken back one at a
//! time, like the pages zsmalloc takes from the kernel's page allocator.
//!
//! The arena is reserved whole at pool creation and committed from the bottom in
//! [`COMMIT_STEP`] steps as the high-water mark (`top`) rises. A frame's number (pfn)
//! is its index in the arena. Freed frames go back to the operating system
//! (`MADV_DONTNEED`), so the resident set follows the pool, and are reused before the
//! arena grows. The most recently freed [`HOT_FRAMES`] frames are kept resident
//! instead, like the kernel's per-CPU page lists: a pool that churns around a steady
//! size (a zspage emptied and another born) would otherwise pay a madvise and a page
//! fault per frame each time. The resident set thus exceeds the pool by at most
//! `HOT_FRAMES` frames (1 MiB). The frame lock is a leaf lock: it is taken only while a zspage is born
//! or dies, never on the malloc/free fast path, and nothing is acquired under it.
//!
//! Frames are handed out in ascending runs where possible (fresh frames from `top`
//! are consecutive; freed ones are pushed so that they pop back in ascending order),
//! because objects straddling two adjacent frames can then be read in place.

use crossbeam_epoch as epoch;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::memmap::SideTable;
use crate::os::{Region, PAGE_SIZE};

/// Frames committed at a time as the arena grows (2 MiB): few mprotect calls, and a
/// whole page of side table per step.
pub const COMMIT_STEP: usize = 512;

/// Freed frames kept resident for reuse (1 MiB). Measured on the node trace, a
/// malloc+free cycle that empties and refills the pool spent about half its time in
/// madvise and the page-table work behind it without this cache.
pub const HOT_FRAMES: usize = 256;

struct FrameState {
    /// Freed frames whose memory went back to the OS, popped from the end.
    free: Vec<u32>,
    /// Freed frames still resident (at most HOT_FRAMES), popped from the end first.
    hot: Vec<u32>,
    /// Frames below this pfn have been handed out at least once.
    top: usize,
    /// Frames below this pfn are committed.
    committed: usize,
}

/// Frames given up by migration, on their way back through the epoch: a lock-free
/// walker that read a frame's side-table word before the move may still be looking
/// at the frame's number, so the frame is not handed out again until every guard of
/// that time is gone. Shared with the deferred closures, which outlive nothing they
/// touch.
#[derive(Default)]
struct Retired {
    /// Frames whose epoch has passed: free to reuse.
    ready: Mutex<Vec<u32>>,
    /// Frames still waiting for their epoch.
    waiting: AtomicUsize,
}

/// The arena, its side table, and the frame allocator.
pub struct FrameSource {
    retired: Arc<Retired>,
    /// Held (shared) by walkers of the side table for a whole walk, and exclusively by
    /// `shrink` while it unmaps the table's tail: a walker never reads an unmapped
    /// word. Taken before the frame lock.
    side_extent: RwLock<()>,
    arena: Region,
    /// One word per frame; see `memmap.rs`.
    pub side: SideTable,
    nframes: usize,
    limit: usize,
    state: Mutex<FrameState>,
    /// Frames currently held by zspages (or taken for a migration). Updated only with
    /// read-modify-writes: `free_deferred` decrements it without the frame lock.
    held: AtomicUsize,
}

impl FrameSource {
    /// Reserves an arena of `nframes` frames; at most `limit` may be held at once.
    pub fn new(nframes: usize, limit: usize) -> Result<FrameSource, i32> {
        Ok(FrameSource {
            retired: Arc::default(),
            side_extent: RwLock::new(()),
            arena: Region::reserve(nframes * PAGE_SIZE)?,
            side: SideTable::reserve(nframes)?,
            nframes,
            limit: limit.min(nframes),
            state: Mutex::new(FrameState { free: Vec::new(), hot: Vec::new(), top: 0, committed: 0 }),
            held: AtomicUsize::new(0),
        })
    }

    /// Address of the first byte of frame `pfn`.
    #[inline]
    pub fn frame_addr(&self, pfn: u32) -> *mut u8 {
        debug_assert!((pfn as usize) < self.nframes);
        // SAFETY: pfn < nframes, so the offset lies inside the arena reservation.
        unsafe { self.arena.base().add(pfn as usize * PAGE_SIZE) }
    }

    /// Address of byte `loc` of the arena (a location is pfn * PAGE_SIZE + offset).
    #[inline]
    pub fn addr(&self, loc: u64) -> *mut u8 {
        debug_assert!((loc as usize) < self.nframes * PAGE_SIZE);
        // SAFETY: locations are built from pfns below nframes and offsets below
        // PAGE_SIZE, so they lie inside the arena reservation.
        unsafe { self.arena.base().add(loc as usize) }
    }

    /// Frames currently held.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The arena's high-water mark: every pfn ever handed out is below it.
    pub fn top(&self) -> usize {
        self.state.lock().top
    }

    /// Frames the arena can hold.
    pub fn capacity(&self) -> usize {
        self.nframes
    }

    /// Frames handed out before and free now (resident or not).
    pub fn free_count(&self) -> usize {
        let st = self.state.lock();
        st.free.len() + st.hot.len()
    }

    /// Frames that may still be taken before the limit.
    pub fn headroom(&self) -> usize {
        self.limit.saturating_sub(self.held())
    }

    /// Takes `out.len()` frames, or none: `Err(ENOMEM)` when the limit would be passed
    /// or the arena is exhausted.
    pub fn alloc(&self, out: &mut [u32]) -> Result<(), i32> {
        let n = out.len();
        let mut st = self.state.lock();
        self.reclaim_retired(&mut st);
        // Relaxed: increments happen under the frame lock we hold, so this is at least
        // the true count (a concurrent `free_deferred` can only lower it).
        let held = self.held.load(Ordering::Relaxed);
        if held + n > self.limit {
            return Err(libc::ENOMEM);
        }
        let from_hot = n.min(st.hot.len());
        let from_free = (n - from_hot).min(st.free.len());
        let fresh = n - from_hot - from_free;
        if st.top + fresh > self.nframes {
            return Err(libc::ENOMEM);
        }
        self.grow(&mut st, fresh)?;
        for slot in out.iter_mut().take(from_hot) {
            *slot = st.hot.pop().expect("counted above");
        }
        for slot in out.iter_mut().skip(from_hot).take(from_free) {
            *slot = st.free.pop().expect("counted above");
        }
        for slot in out.iter_mut().skip(from_hot + from_free) {
            *slot = st.top as u32;
            st.top += 1;
        }
        // Relaxed: a count; increments happen under the frame lock (so the limit check
        // above holds), decrements may not (`free_deferred`), hence RMWs throughout.
        self.held.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Gives frames back. Their side-table words must already be cleared, and nothing
    /// may touch their contents any more.
    pub fn free(&self, frames: &[u32]) {
        let mut st = self.state.lock();
        self.held.fetch_sub(frames.len(), Ordering::Relaxed);
        let cold = Self::keep_hot(&mut st, frames);
        if cold.is_empty() {
            return;
        }
        drop(st);
        self.discard_runs(cold);
        self.state.lock().free.extend(cold.iter().rev());
    }

    /// Puts as many of `frames` as fit on the hot list; returns the rest.
    fn keep_hot<'a>(st: &mut FrameState, frames: &'a [u32]) -> &'a [u32] {
        let keep = (HOT_FRAMES - st.hot.len().min(HOT_FRAMES)).min(frames.len());
        // Reversed, so that the next allocation pops them back in ascending order.
        st.hot.extend(frames[..keep].iter().rev());
        &frames[keep..]
    }

    /// Returns frames' memory to the OS, one madvise per adjacent run.
    fn discard_runs(&self, frames: &[u32]) {
        let mut i = 0;
        while i < frames.len() {
            let mut j = i + 1;
            while j < frames.len() && frames[j] == frames[j - 1] + 1 {
                j += 1;
            }
            self.arena.discard(frames[i] as usize * PAGE_SIZE, (j - i) * PAGE_SIZE);
            i = j;
        }
    }

    /// Gives back a frame that a lock-free walker may still be looking at: it becomes
    /// free once every epoch guard now held is gone. Its side-table word must already
    /// be cleared.
    pub fn free_deferred(&self, pfn: u32) {
        let held = self.held.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(held > 0);
        // Relaxed: a count; the frame itself travels through the mutex below.
        self.retired.waiting.fetch_add(1, Ordering::Relaxed);
        let retired = self.retired.clone();
        epoch::pin().defer(move || {
            retired.ready.lock().push(pfn);
            retired.waiting.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Frames given back with [`free_deferred`](Self::free_deferred) still waiting for
    /// their epoch.
    pub fn retired_waiting(&self) -> usize {
        self.retired.waiting.load(Ordering::Relaxed)
    }

    /// Moves frames whose epoch has passed to the free lists (frame lock held).
    fn reclaim_retired(&self, st: &mut FrameState) {
        let ready = std::mem::take(&mut *self.retired.ready.lock());
        if ready.is_empty() {
            return;
        }
        let cold = Self::keep_hot(st, &ready).to_vec();
        self.discard_runs(&cold);
        st.free.extend(cold);
    }

    /// Takes up to `n` of the lowest free frames below pfn `below`, ascending, as held
    /// frames (for defragmentation: the caller migrates into them or frees them).
    pub fn take_lowest(&self, n: usize, below: usize) -> Vec<u32> {
        let mut st = self.state.lock();
        self.reclaim_retired(&mut st);
        let mut all: Vec<u32> = st.hot.iter().chain(st.free.iter()).copied().collect();
        all.sort_unstable();
        let k = all.iter().take(n).take_while(|&&p| (p as usize) < below).count();
        let taken: Vec<u32> = all.drain(..k).collect();
        // The rest stay where they were: a resident frame must not move to the list
        // of frames whose memory went back to the OS (it would stay resident unseen).
        // `taken` is sorted, so membership is a binary search.
        st.hot.retain(|p| taken.binary_search(p).is_err());
        st.free.retain(|p| taken.binary_search(p).is_err());
        self.held.fetch_add(taken.len(), Ordering::Relaxed);
        taken
    }

    /// Takes `n` frames that are adjacent in the arena (a fresh run from the top,
    /// or a run found among the free frames), as held frames.
    pub fn take_run(&self, n: usize) -> Result<Vec<u32>, i32> {
        let mut st = self.state.lock();
        self.reclaim_retired(&mut st);
        let held = self.held.load(Ordering::Relaxed);
        if held + n > self.limit {
            return Err(libc::ENOMEM);
        }
        let mut all: Vec<u32> = st.hot.iter().chain(st.free.iter()).copied().collect();
        all.sort_unstable();
        let start = (0..all.len().saturating_sub(n - 1)).find(|&i| all[i + n - 1] == all[i] + n as u32 - 1);
        let run: Vec<u32> = match start {
            Some(i) => {
                let run = all[i..i + n].to_vec();
                st.hot.retain(|p| !run.contains(p));
                st.free.retain(|p| !run.contains(p));
                run
            }
            None => {
                if st.top + n > self.nframes {
                    return Err(libc::ENOMEM);
                }
                self.grow(&mut st, n)?;
                let first = st.top as u32;
                st.top += n;
                (first..first + n as u32).collect()
            }
        };
        self.held.fetch_add(n, Ordering::Relaxed);
        Ok(run)
    }

    /// Commits enough of the arena for `fresh` more frames above the top (mapping the
    /// reservation's tail again first if a shrink released it).
    fn grow(&self, st: &mut FrameState, fresh: usize) -> Result<(), i32> {
        if st.top + fresh > st.committed {
            let new_committed = (st.top + fresh).div_ceil(COMMIT_STEP) * COMMIT_STEP;
            let new_committed = new_committed.min(self.nframes);
            self.arena.restore_tail(new_committed * PAGE_SIZE)?;
            self.side.restore(new_committed)?;
            let (from, len) = (st.committed * PAGE_SIZE, (new_committed - st.committed) * PAGE_SIZE);
            self.arena.commit(from, len)?;
            if let Err(e) = self.side.commit(st.committed, new_committed) {
                // Frames without side-table words cannot be used: the arena range goes
                // back too, so that what is committed stays what `committed` says.
                self.arena.decommit(from, len);
                return Err(e);
            }
            st.committed = new_committed;
        }
        Ok(())
    }

    /// Lowers the top past the free frames at the end of the arena and gives the arena
    /// above it back: its memory and commit charge (the range stays reserved, so the
    /// arena grows back at any time), and the side table's pages there. With
    /// `release_address_space`, the arena's and the side table's tails are unmapped as
    /// well, so the process's virtual size falls too; the arena then grows back only
    /// while no other mapping has taken that range (see `Region::restore_tail`). Side-
    /// table walkers are waited for either way. Returns the frames the top came down by.
    pub fn shrink(&self, release_address_space: bool) -> usize {
        let mut st = self.state.lock();
        self.reclaim_retired(&mut st);
        let mut free: Vec<u32> = st.hot.iter().chain(st.free.iter()).copied().collect();
        free.sort_unstable();
        let mut new_top = st.top;
        while let Some(&last) = free.last() {
            if last as usize + 1 != new_top {
                break;
            }
            free.pop();
            new_top -= 1;
        }
        let dropped = st.top - new_top;
        st.hot.retain(|&p| (p as usize) < new_top);
        st.free.retain(|&p| (p as usize) < new_top);
        st.top = new_top;
        let keep = new_top.div_ceil(COMMIT_STEP) * COMMIT_STEP;
        // Frames at and above `keep` are free and referenced by nothing: no slot
        // locates into them and no side-table word names them.
        if keep < st.committed {
            self.arena.decommit(keep * PAGE_SIZE, (st.committed - keep) * PAGE_SIZE);
            self.side.discard(keep, st.committed);
            st.committed = keep;
        }
        if release_address_space {
            self.arena.release_tail(keep * PAGE_SIZE);
            self.side.release(keep);
        }
        dropped
    }

    /// Holds off `shrink` (which unmaps the side table's tail) for a walk of the side
    /// table; take it before reading the top.
    pub fn walk_guard(&self) -> RwLockReadGuard<'_, ()> {
        // Recursive: a walk may call something that takes the guard again (a queued
        // shrink must not make the inner acquisition wait for it).
        self.side_extent.read_recursive()
    }

    /// Bytes of the arena's reservation currently mapped (its share of the process's
    /// virtual size).
    pub fn mapped_bytes(&self) -> usize {
        self.arena.mapped()
    }

    /// Frames of the arena currently committed (readable and writable).
    pub fn committed(&self) -> usize {
        self.state.lock().committed
    }

    /// Calls `f` with every free pfn, resident or not (for the invariant checker).
    pub fn for_each_free(&self, mut f: impl FnMut(u32)) {
        let mut st = self.state.lock();
        self.reclaim_retired(&mut st);
        for &p in st.hot.iter().chain(&st.free) {
            f(p);
        }
    }

    /// Bytes of side table attributed to the frames held.
    pub fn side_table_bytes(&self) -> usize {
        self.held() * std::mem::size_of::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_reuse_and_limit() {
        let fs = FrameSource::new(4096, 10).unwrap();
        let mut a = [0u32; 4];
        fs.alloc(&mut a).unwrap();
        assert_eq!(a, [0, 1, 2, 3]);
        let mut b = [0u32; 7];
        assert_eq!(fs.alloc(&mut b), Err(libc::ENOMEM), "limit of 10 frames");
        assert_eq!(fs.held(), 4);
        // SAFETY: frame 1 is held and committed.
        unsafe { fs.frame_addr(1).write(42) };
        fs.free(&a[..2]);
        assert_eq!(fs.held(), 2);
        let mut c = [0u32; 3];
        fs.alloc(&mut c).unwrap();
        assert_eq!(c, [0, 1, 4], "freed frames come back ascending, then the arena grows");
        assert_eq!(fs.free_count(), 0);
    }
}

#[cfg(test)]
mod hot_tests {
    use super::*;

    #[test]
    fn frames_past_the_hot_cache_go_back_to_the_os() {
        let n = HOT_FRAMES + 8;
        let fs = FrameSource::new(4096, 4096).unwrap();
        let mut a = vec![0u32; n];
        fs.alloc(&mut a).unwrap();
        for &p in &a {
            // SAFETY: held and committed.
            unsafe { fs.frame_addr(p).write(0xAB) };
        }
        fs.free(&a);
        assert_eq!(fs.free_count(), n);
        // The first HOT_FRAMES stayed resident; the rest were discarded (read zero).
        // SAFETY: committed frames; nothing else uses them.
        unsafe {
            assert_eq!(fs.frame_addr(a[0]).read(), 0xAB);
            assert_eq!(fs.frame_addr(a[n - 1]).read(), 0);
        }
        let mut b = vec![0u32; n];
        fs.alloc(&mut b).unwrap();
        assert_eq!(b[..HOT_FRAMES], a[..HOT_FRAMES], "resident frames are reused first, ascending");
    }

    #[test]
    fn take_lowest_keeps_resident_frames_apart_from_returned_ones() {
        let n = HOT_FRAMES + 64;
        let fs = FrameSource::new(4096, 4096).unwrap();
        let mut a = vec![0u32; n];
        fs.alloc(&mut a).unwrap();
        // The highest frames are freed first: they stay resident (hot), and the lowest
        // ones, past the cache, go back to the OS. take_lowest then takes returned frames.
        for &p in a.iter().rev() {
            // SAFETY: held and committed.
            unsafe { fs.frame_addr(p).write(0xAB) };
            fs.free(&[p]);
        }
        let taken = fs.take_lowest(10, n);
        assert_eq!(taken, (0..10).collect::<Vec<u32>>());
        let st = fs.state.lock();
        assert_eq!(st.hot.len(), HOT_FRAMES, "the resident frames are still resident");
        for &p in &st.free {
            // SAFETY: committed frames; nothing uses them.
            assert_eq!(unsafe { fs.frame_addr(p).read() }, 0, "frame {p} on the returned list is resident");
        }
    }
}
