//! Frames: order-0 pages of one mmap-backed arena, handed out and taken back one at a
//! time, like the pages zsmalloc takes from the kernel's page allocator.
//!
//! A frame is the pool's unit (`frame_size` of its configuration: the system's page
//! or a larger power of two, up to 64 KiB), as the kernel's zsmalloc takes
//! `PAGE_SIZE` pages; it is a whole number of the system's pages, and aligned to them.
//!
//! The arena is an array of frames in segments whose sizes double (`segments`): the
//! first holds [`COMMIT_STEP`] frames, each is reserved when its first frame is
//! needed, and the arena is committed from the bottom in steps of [`COMMIT_BYTES`]
//! (a whole number of frames) as the high-water mark (`top`) rises. So a pool takes address space in proportion to what
//! it holds (at most about twice its high-water mark), and a small pool takes one
//! mapping. A frame's number (pfn) is its index in the arena; its address is found
//! from the pfn's high bits (its segment) without a lock. Frames adjacent by number
//! are adjacent in memory except across a segment boundary, so adjacency is a
//! comparison of addresses ([`FrameSource::adjacent`]). Freed frames go back to the operating system
//! (`MADV_DONTNEED`), so the resident set follows the pool, and are reused before the
//! arena grows. The most recently freed [`HOT_FRAMES`] frames are kept resident
//! instead, like the kernel's per-CPU page lists: a pool that churns around a steady
//! size (a zspage emptied and another born) would otherwise pay a madvise and a page
//! fault per frame each time. The resident set thus exceeds the pool by at most
//! `HOT_FRAMES` frames (1 MiB).
//!
//! # Where every frame is
//!
//! Every frame below `top` is in exactly one of six places, which the equation beside
//! [`FrameSource`] sums: in a zspage, taken by a migration, on one of the two free
//! lists, on its way to the returned list, or waiting for the epoch after a
//! migration. The checker (`pool/check.rs`) takes it as one cut under the frame lock,
//! and `held` against the zspages under every class lock; debug builds check it after
//! every change under the frame lock.

//! # Locks
//!
//! The frame lock is taken only while a zspage is born or dies (and by migration,
//! shrinking and the checker), never on the malloc/free fast path. Under it, the arena
//! and the side table may be committed (mprotect), a step of the arena faulted in
//! (madvise, with the pool's prefault: a 2 MiB step's pages allocated and zeroed,
//! about a millisecond, which the writes would otherwise pay page by page) and frames
//! discarded (madvise), and the retired lock is taken; nothing else. The side table's extent lock is taken
//! before it: shared by walkers of the side table, exclusively by a shrink that gives
//! the table's tail back.
//!
//! Frames are handed out in ascending runs where possible (fresh frames from `top`
//! are consecutive; freed ones are pushed so that they pop back in ascending order),
//! because objects straddling two adjacent frames can then be read in place.

pub mod os;
pub mod segments;
pub mod side;

use std::sync::Arc;

use crate::frames::segments::Segments;
use crate::frames::side::SideTable;
use crate::sync::{epoch, AtomicUsize, Mutex, Ordering, RwLock, RwLockReadGuard};

/// The smallest frame a pool may have (the kernel's smallest `PAGE_SIZE`).
pub const MIN_FRAME_SIZE: usize = 4096;
/// The largest frame a pool may have (the kernel's largest `PAGE_SIZE`).
pub const MAX_FRAME_SIZE: usize = 65536;

/// Frames in the arena's first segment (512): at 4 KiB frames, one commit step. A
/// frame count rather than bytes, so that finding a frame's segment is a shift by a
/// constant; at larger frames the first segment is more address space (32 MiB at
/// 64 KiB), which costs nothing until committed.
pub const COMMIT_STEP: usize = 1 << COMMIT_SHIFT;
/// log2 of [`COMMIT_STEP`]: the first segment of the arena holds that many frames.
pub(crate) const COMMIT_SHIFT: u32 = if cfg!(loom) { 2 } else { 9 };
/// Bytes committed at a time as the arena grows (2 MiB, whatever the frame size):
/// few mprotect calls, and a whole page of side table per step at 4 KiB frames. A
/// byte count, so that a small pool of 64 KiB frames does not commit 32 MiB at once.
/// The loom models use steps of four frames, so that a pool of a few frames grows and
/// shrinks by whole steps.
pub const COMMIT_BYTES: usize = 2 << 20;

/// Frames committed at a time in an arena of frames of `1 << shift` bytes:
/// [`COMMIT_BYTES`] of them (loom: [`COMMIT_STEP`]).
fn commit_step(shift: u32) -> usize {
    if cfg!(loom) {
        COMMIT_STEP
    } else {
        (COMMIT_BYTES >> shift).max(1)
    }
}

/// The frame a location is in, in a pool of frames of `1 << shift` bytes. A location
/// is a byte's offset in the arena: its frame's number times the frame size, plus its
/// offset in the frame. (These three are where the rest of the library turns
/// locations into frames and back.)
#[inline]
pub fn pfn_of(loc: u64, shift: u32) -> u32 {
    (loc >> shift) as u32
}

/// A location's offset in its frame of `1 << shift` bytes.
#[inline]
pub fn offset_in_frame(loc: u64, shift: u32) -> usize {
    loc as usize & ((1 << shift) - 1)
}

/// The location of byte `offset` of frame `pfn`, of `1 << shift` bytes.
#[inline]
pub fn location(pfn: u32, offset: usize, shift: u32) -> u64 {
    debug_assert!(offset < 1 << shift);
    ((pfn as u64) << shift) | offset as u64
}

/// Bytes of freed frames kept resident for reuse (1 MiB: 256 frames of 4 KiB, 16 of
/// 64 KiB). Measured on the node trace, a malloc+free cycle that empties and refills
/// the pool spent about half its time in madvise and the page-table work behind it
/// without this cache.
pub const HOT_BYTES: usize = 1 << 20;

/// What the frame lock protects (see [`FrameSource`] for the equation it keeps).
struct FrameState {
    /// Freed frames whose memory went back to the OS, popped from the end.
    free: Vec<u32>,
    /// Freed frames still resident (at most `HOT_BYTES`), popped from the end first.
    hot: Vec<u32>,
    /// Frames below this pfn have been handed out at least once.
    top: usize,
    /// Frames below this pfn are committed.
    committed: usize,
    /// Frames handed to a migration and in no zspage yet.
    taken: usize,
    /// Freed frames whose madvise runs now, without the lock.
    discarding: usize,
}

/// Frames given up by migration, on their way back through the epoch: a lock-free
/// walker that read a frame's side-table word before the move may still be looking
/// at the frame's number, so the frame is not handed out again until every guard of
/// that time is gone. Shared with the deferred closures, which outlive nothing they
/// touch; they take only this lock, so they may run wherever the epoch collector
/// runs them.
#[derive(Default)]
struct Retired {
    /// Frames whose epoch has passed: free to reuse.
    ready: Vec<u32>,
    /// Frames still waiting for their epoch.
    waiting: usize,
}

impl Retired {
    /// Frames in the `retiring` place of the equation.
    fn count(&self) -> usize {
        self.ready.len() + self.waiting
    }
}

/// Freed frames whose memory must still go back to the OS: counted as `discarding`
/// under the frame lock, discarded (madvise) by [`FrameSource::discard`] after the
/// caller has dropped its locks. Empty (and without an allocation) when the hot list
/// took every frame, which is the common case.
#[must_use = "the frames stay counted as discarding until FrameSource::discard"]
#[derive(Debug, Default)]
pub(crate) struct Discard(Vec<u32>);

/// A consistent cut of the frame accounting, for the checker.
#[derive(Debug)]
pub(crate) struct FrameAccount {
    /// The arena's first frame (see [`FrameSource::bottom`]).
    pub bottom: usize,
    pub top: usize,
    pub held: usize,
    pub taken: usize,
    pub discarding: usize,
    pub retiring: usize,
    /// Both free lists.
    pub free: Vec<u32>,
    /// A free frame whose side-table word is not the free word, if any.
    pub free_with_word: Option<u32>,
}

/// The arena, its side table, and the frame allocator.
///
/// Every frame from `bottom` (0 but in tests) to `top` is in exactly one of six
/// places, and a frame changes place only under the frame lock, so whoever holds it
/// sees
///
/// ```text
/// top - bottom == held + taken + hot + returned + discarding + retiring
/// ```
///
/// - `held`: in a zspage. It changes only under the lock of that zspage's class as
///   well (a zspage's birth, its death, a migration), so with every class lock held
///   it is exactly the number of frames on the classes' zspage lists.
/// - `taken`: handed to a migration ([`take_lowest`](FrameSource::take_lowest),
///   [`take_run`](FrameSource::take_run)) and not yet in a zspage.
/// - `hot`, `returned`: free, resident or given back to the OS (the two free lists).
/// - `discarding`: free, on its way to the returned list: its madvise runs without the
///   frame lock ([`Discard`]).
/// - `retiring`: left its zspage by migration and waits for the epoch, because a
///   lock-free walker may still be looking at its number; counted under the retired
///   lock, which nests inside the frame lock.
///
/// And `held + taken <= limit`: the pool's page limit counts the frames taken for a
/// migration too.
pub struct FrameSource {
    retired: Arc<Mutex<Retired>>,
    /// Held (shared) by walkers of the side table for a whole walk, and exclusively by
    /// `shrink` while it gives the table's tail back: a walker never reads an unmapped
    /// word. Taken before the frame lock.
    side_extent: RwLock<()>,
    /// The frames, in segments (see the module comment).
    arena: Segments,
    /// One word per frame; see `frames/side.rs`.
    side: SideTable,
    nframes: usize,
    /// log2 of the frame size.
    shift: u32,
    /// The first frame ever handed out: 0, but for tests of a pool's highest frames.
    bottom: usize,
    limit: usize,
    state: Mutex<FrameState>,
    /// Frames in zspages (`held` in the equation). Written only under the frame lock;
    /// read anywhere (Relaxed: a count).
    held: AtomicUsize,
    /// Whether each commit step is faulted in as it is committed (`Config::prefault`).
    prefault: bool,
}

impl FrameSource {
    /// An arena of `nframes` frames of the unit tests' size (none reserved yet: 4 KiB,
    /// or `ZS_TEST_FRAME_SIZE`); at most `limit` may be held at once.
    #[cfg(test)]
    pub fn new(nframes: usize, limit: usize) -> Result<FrameSource, i32> {
        let shift = match crate::pool::config::test_frame_size() {
            0 => MIN_FRAME_SIZE.trailing_zeros(),
            f => f.trailing_zeros(),
        };
        Self::starting_at(nframes, limit, 0, shift, false)
    }

    /// An arena of frames of `1 << shift` bytes whose frames below `bottom` are never
    /// handed out: its first frame is `bottom` (0 but in tests of the highest frames
    /// of a large arena, which need no memory below them). With `prefault`, each step
    /// of the arena is faulted in when it is committed (see `grow`).
    pub fn starting_at(
        nframes: usize,
        limit: usize,
        bottom: usize,
        shift: u32,
        prefault: bool,
    ) -> Result<FrameSource, i32> {
        if bottom > nframes {
            return Err(libc::EINVAL);
        }
        let commit_step = commit_step(shift);
        Ok(FrameSource {
            retired: Arc::default(),
            side_extent: RwLock::new(()),
            arena: Segments::new(1 << shift, 0, nframes),
            side: SideTable::reserve(nframes)?,
            nframes,
            shift,
            bottom,
            limit: limit.min(nframes),
            state: Mutex::new(FrameState {
                free: Vec::new(),
                hot: Vec::new(),
                top: bottom,
                committed: bottom / commit_step * commit_step,
                taken: 0,
                discarding: 0,
            }),
            held: AtomicUsize::new(0),
            prefault,
        })
    }

    /// log2 of the frame size.
    #[inline]
    pub fn shift(&self) -> u32 {
        self.shift
    }

    /// The frame size in bytes.
    #[inline]
    pub fn frame_size(&self) -> usize {
        1 << self.shift
    }

    /// The frame location `loc` is in ([`pfn_of`] with this arena's frame).
    #[inline]
    pub fn pfn_of(&self, loc: u64) -> u32 {
        pfn_of(loc, self.shift)
    }

    /// Location `loc`'s offset in its frame.
    #[inline]
    pub fn offset_in_frame(&self, loc: u64) -> usize {
        offset_in_frame(loc, self.shift)
    }

    /// The location of byte `offset` of frame `pfn`.
    #[inline]
    pub fn location(&self, pfn: u32, offset: usize) -> u64 {
        location(pfn, offset, self.shift)
    }

    /// Freed frames kept resident: [`HOT_BYTES`] of them.
    pub fn hot_frames(&self) -> usize {
        HOT_BYTES >> self.shift
    }

    /// The side table: one word per frame.
    #[inline]
    pub fn side(&self) -> &SideTable {
        &self.side
    }

    /// Address of the first byte of frame `pfn`. Computing it is safe; using it needs
    /// the frame to be committed and the caller's right to its bytes.
    #[inline]
    pub fn frame_addr(&self, pfn: u32) -> *mut u8 {
        self.addr(self.location(pfn, 0))
    }

    /// Address of byte `loc` of the arena (a location is pfn * frame size + offset);
    /// see [`frame_addr`](Self::frame_addr).
    #[inline]
    pub fn addr(&self, loc: u64) -> *mut u8 {
        debug_assert!((loc as usize) < self.nframes << self.shift);
        self.arena.addr(self.pfn_of(loc) as usize, loc as usize)
    }

    /// Whether frame `b` follows frame `a` in memory, so that bytes running from the
    /// end of `a` into `b` are contiguous: numbers that follow each other do, except
    /// across a segment boundary. Both frames are below the top.
    #[inline]
    pub fn adjacent(&self, a: u32, b: u32) -> bool {
        self.frame_addr(b) == self.frame_addr(a).wrapping_add(self.frame_size())
    }

    /// The arena's first frame: 0, but in tests of a large arena's highest frames.
    pub fn bottom(&self) -> usize {
        self.bottom
    }

    /// Frames currently held by zspages.
    pub fn held(&self) -> usize {
        // Relaxed: a count, exact under the frame lock, a recent value elsewhere.
        self.held.load(Ordering::Relaxed)
    }

    /// Adds `d` to `held`; the frame lock is held (`_st`).
    fn add_held(&self, _st: &mut FrameState, d: isize) {
        // Relaxed: every write happens under the frame lock, which orders them.
        self.held.store(self.held.load(Ordering::Relaxed).wrapping_add_signed(d), Ordering::Relaxed);
    }

    /// The arena's high-water mark: every pfn ever handed out is below it.
    pub fn top(&self) -> usize {
        self.state.lock().top
    }

    /// See `PoolCore::untrack_counters`: `held` is read without the frame lock.
    pub(crate) fn untrack_counters(&self) {
        crate::sync::hg::untracked((&self.held as *const AtomicUsize).cast(), std::mem::size_of::<AtomicUsize>());
    }

    /// Frames the arena can hold.
    pub fn capacity(&self) -> usize {
        self.nframes
    }

    /// Frames handed out before and free now (resident or not).
    #[cfg(test)]
    pub fn free_count(&self) -> usize {
        let st = self.state.lock();
        st.free.len() + st.hot.len()
    }

    /// Frames that may still be taken before the limit.
    pub fn headroom(&self) -> usize {
        let st = self.state.lock();
        self.limit.saturating_sub(self.held() + st.taken)
    }

    /// Checks, in debug builds, that every frame is in one place (the equation of
    /// [`FrameSource`]); `st` is the frame lock's state, held.
    #[inline]
    fn debug_check(&self, st: &FrameState) {
        #[cfg(debug_assertions)]
        {
            let retiring = self.retired.lock().count();
            let placed = self.held() + st.taken + st.hot.len() + st.free.len() + st.discarding + retiring;
            debug_assert_eq!(placed, st.top - self.bottom, "frames counted in no place or in two");
            debug_assert!(self.held() + st.taken <= self.limit, "frames held past the limit");
        }
        let _ = st;
    }

    /// Whether `n` more frames stay within the limit (frame lock held).
    fn within_limit(&self, st: &FrameState, n: usize) -> bool {
        self.held() + st.taken + n <= self.limit
    }

    /// Takes `out.len()` frames for a zspage, or none: `Err(ENOMEM)` when the limit
    /// would be passed or the arena is exhausted. The caller holds the lock of the
    /// zspage's class (see the module comment on `held`).
    pub fn alloc(&self, out: &mut [u32]) -> Result<(), i32> {
        let n = out.len();
        let mut st = self.state.lock();
        self.reclaim_retired(&mut st);
        if !self.within_limit(&st, n) {
            return Err(libc::ENOMEM);
        }
        let from_hot = n.min(st.hot.len());
        let from_free = (n - from_hot).min(st.free.len());
        let fresh = n - from_hot - from_free;
        if st.top + fresh > self.nframes {
            return Err(libc::ENOMEM);
        }
        self.grow(&mut st, fresh)?;
        for pfn in out.iter_mut().take(from_hot) {
            *pfn = st.hot.pop().expect("counted above");
        }
        for pfn in out.iter_mut().skip(from_hot).take(from_free) {
            *pfn = st.free.pop().expect("counted above");
        }
        for pfn in out.iter_mut().skip(from_hot + from_free) {
            *pfn = st.top as u32;
            st.top += 1;
        }
        self.add_held(&mut st, n as isize);
        self.debug_check(&st);
        Ok(())
    }

    /// Takes back the frames of a dying zspage. Their side-table words must already
    /// be cleared, nothing may touch their contents any more, and the caller holds the
    /// zspage's class lock. What must still go back to the OS is returned, for
    /// [`discard`](Self::discard) once the caller's locks are dropped.
    pub fn free(&self, frames: &[u32]) -> Discard {
        let mut st = self.state.lock();
        self.add_held(&mut st, -(frames.len() as isize));
        let d = self.put_free(&mut st, frames);
        self.debug_check(&st);
        d
    }

    /// Gives back frames taken by [`take_lowest`](Self::take_lowest) or
    /// [`take_run`](Self::take_run) that did not go into a zspage.
    pub fn free_taken(&self, frames: &[u32]) {
        let d = {
            let mut st = self.state.lock();
            st.taken -= frames.len();
            let d = self.put_free(&mut st, frames);
            self.debug_check(&st);
            d
        };
        self.discard(d);
    }

    /// Puts free frames on the hot list as far as it has room; counts the rest as
    /// discarding and returns them.
    fn put_free(&self, st: &mut FrameState, frames: &[u32]) -> Discard {
        let cold = self.keep_hot(st, frames);
        st.discarding += cold.len();
        Discard(cold.to_vec())
    }

    /// Returns the frames of `d` to the OS, then lists them as free. Call it with no
    /// lock held: madvise takes as long as the page tables take.
    pub fn discard(&self, d: Discard) {
        if d.0.is_empty() {
            return;
        }
        self.discard_runs(&d.0);
        let mut st = self.state.lock();
        st.discarding -= d.0.len();
        st.free.extend(d.0.iter().rev());
        self.debug_check(&st);
    }

    /// Puts as many of `frames` as fit on the hot list; returns the rest.
    fn keep_hot<'a>(&self, st: &mut FrameState, frames: &'a [u32]) -> &'a [u32] {
        let hot = self.hot_frames();
        let keep = (hot - st.hot.len().min(hot)).min(frames.len());
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
            self.arena.discard(frames[i] as usize, frames[j - 1] as usize + 1);
            i = j;
        }
    }

    /// Records a migration: frame `to`, taken by the caller, joined a zspage in place
    /// of frame `from`, which goes back through the epoch (a lock-free walker may
    /// still be looking at it). Both side-table words are already rewritten, under the
    /// zspage's class lock, which the caller still holds.
    pub fn migrated(&self, from: u32, to: u32) {
        debug_assert_ne!(from, to);
        {
            let mut st = self.state.lock();
            st.taken -= 1;
            // `held` is unchanged: `to` takes `from`'s place.
            self.retired.lock().waiting += 1;
            self.debug_check(&st);
        }
        let retired = self.retired.clone();
        epoch::pin().defer(move || {
            let mut r = retired.lock();
            r.ready.push(from);
            r.waiting -= 1;
        });
    }

    /// Frames given back through the epoch by [`migrated`](Self::migrated) and still
    /// waiting for it.
    pub fn retired_waiting(&self) -> usize {
        self.retired.lock().waiting
    }

    /// Moves frames whose epoch has passed to the free lists (frame lock held).
    fn reclaim_retired(&self, st: &mut FrameState) {
        let ready = std::mem::take(&mut self.retired.lock().ready);
        if ready.is_empty() {
            return;
        }
        let cold = self.keep_hot(st, &ready).to_vec();
        self.discard_runs(&cold);
        st.free.extend(cold);
    }

    /// Takes up to `n` of the lowest free frames below pfn `below`, ascending (for
    /// defragmentation: the caller migrates into them or gives them back with
    /// [`free_taken`](Self::free_taken)).
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
        st.taken += taken.len();
        self.debug_check(&st);
        taken
    }

    /// Takes `n` frames that are adjacent in the arena (a fresh run from the top,
    /// or a run found among the free frames), for a migration (see
    /// [`take_lowest`](Self::take_lowest)).
    pub fn take_run(&self, n: usize) -> Result<Vec<u32>, i32> {
        let mut st = self.state.lock();
        self.reclaim_retired(&mut st);
        if !self.within_limit(&st, n) {
            return Err(libc::ENOMEM);
        }
        let mut all: Vec<u32> = st.hot.iter().chain(st.free.iter()).copied().collect();
        all.sort_unstable();
        let start = (0..all.len().saturating_sub(n - 1))
            .find(|&i| all[i..i + n].windows(2).all(|w| w[1] == w[0] + 1 && self.adjacent(w[0], w[1])));
        let run: Vec<u32> = match start {
            Some(i) => {
                let run = all[i..i + n].to_vec();
                st.hot.retain(|p| !run.contains(p));
                st.free.retain(|p| !run.contains(p));
                run
            }
            None => loop {
                if st.top + n > self.nframes {
                    return Err(libc::ENOMEM);
                }
                self.grow(&mut st, n)?;
                let first = st.top as u32;
                match (1..n as u32).find(|&j| !self.adjacent(first + j - 1, first + j)) {
                    None => {
                        st.top += n;
                        break (first..first + n as u32).collect();
                    }
                    Some(j) => {
                        // A segment boundary: the frames below it are listed free
                        // (never used, so not resident), and the run begins at it.
                        st.free.extend((first..first + j).rev());
                        st.top += j as usize;
                    }
                }
            },
        };
        st.taken += n;
        self.debug_check(&st);
        Ok(run)
    }

    /// Commits enough of the arena for `fresh` more frames above the top (mapping the
    /// reservation's tail again first if a shrink released it). With `prefault`, the
    /// newly committed frames are faulted in at once: a pool that fills fast (a RAM
    /// disk being copied in) would otherwise take a trap on the first write of each
    /// of their pages, in the copy of an object into its slot; the kernel still
    /// allocates and zeroes every page, so what is saved is the trap. It costs
    /// resident memory for the frames committed and not yet handed out (at most a
    /// step, 2 MiB) and for those handed out and not yet written.
    fn grow(&self, st: &mut FrameState, fresh: usize) -> Result<(), i32> {
        if st.top + fresh > st.committed {
            let step = commit_step(self.shift);
            let new_committed = (st.top + fresh).div_ceil(step) * step;
            let new_committed = new_committed.min(self.nframes);
            self.side.restore(new_committed)?;
            let from = st.committed;
            self.arena.commit(from, new_committed)?;
            // helgrind leaves memory that was reserved without access unchecked when
            // it becomes accessible: the frames' bytes must be checked (`sync::hg`).
            for pfn in (from..new_committed).step_by(step) {
                let frames = (new_committed - pfn).min(step);
                crate::sync::hg::tracked(self.frame_addr(pfn as u32), frames << self.shift);
            }
            if let Err(e) = self.side.commit(st.committed, new_committed) {
                // Frames without side-table words cannot be used: the arena range goes
                // back too, so that what is committed stays what `committed` says.
                self.arena.decommit(from, new_committed);
                return Err(e);
            }
            st.committed = new_committed;
            if self.prefault {
                self.arena.populate(from, new_committed);
            }
        }
        Ok(())
    }

    /// Lowers the top past the free frames at the end of the arena and gives the arena
    /// above it back: its memory and commit charge (the range stays reserved, so the
    /// arena grows back at any time), and the side table's pages there. With
    /// `release_address_space`, the arena's and the side table's tails are unmapped as
    /// well, so the process's virtual size falls too; the arena then grows back only
    /// while no other mapping has taken that range (see `Region::restore_tail`).
    /// Side-table walkers are waited for (the extent lock, exclusively), and none
    /// starts until the top is down. Returns the frames the top came down by and the
    /// bytes of arena address space unmapped (counted under the frame lock: a
    /// concurrent growth cannot make them negative).
    pub fn shrink(&self, release_address_space: bool) -> (usize, usize) {
        let _extent = self.side_extent.write();
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
        let step = commit_step(self.shift);
        let keep = new_top.div_ceil(step) * step;
        // Frames at and above `keep` are free and referenced by nothing: no slot
        // locates into them and no side-table word names them.
        if keep < st.committed {
            self.arena.decommit(keep, st.committed);
            self.side.discard(keep, st.committed);
            st.committed = keep;
        }
        let mut released = 0;
        if release_address_space {
            let before = self.arena.mapped_bytes();
            self.arena.release(keep);
            released = before - self.arena.mapped_bytes();
            self.side.release(keep);
        }
        self.debug_check(&st);
        (dropped, released)
    }

    /// Holds off `shrink`'s release of the side table's tail for a walk of the side
    /// table; take it before reading the top. Not reentrant: a thread holding it must
    /// not take it again (a shrink waiting in between would make the second wait for
    /// ever).
    pub fn walk_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.side_extent.read()
    }

    /// Bytes of the arena's reservation currently mapped (its share of the process's
    /// virtual size).
    pub fn mapped_bytes(&self) -> usize {
        self.arena.mapped_bytes()
    }

    /// Frames of the arena currently committed (readable and writable).
    pub fn committed(&self) -> usize {
        self.state.lock().committed
    }

    /// The accounting of every frame, as one cut (for the invariant checker).
    pub(crate) fn account(&self) -> FrameAccount {
        let st = self.state.lock();
        let retiring = self.retired.lock().count();
        let free: Vec<u32> = st.hot.iter().chain(&st.free).copied().collect();
        // SAFETY: free-listed frames are below the top, whose side-table words stay
        // mapped while the frame lock (held here) keeps `shrink` out.
        let free_with_word = free.iter().copied().find(|&p| unsafe { self.side.get(p) }.raw() != 0);
        FrameAccount {
            bottom: self.bottom,
            top: st.top,
            held: self.held(),
            taken: st.taken,
            discarding: st.discarding,
            retiring,
            free,
            free_with_word,
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
        fs.discard(fs.free(&a[..2]));
        assert_eq!(fs.held(), 2);
        let mut c = [0u32; 3];
        fs.alloc(&mut c).unwrap();
        assert_eq!(c, [0, 1, 4], "freed frames come back ascending, then the arena grows");
        assert_eq!(fs.free_count(), 0);
    }

    /// Pages resident among the `n` frames from frame 0 (`mincore`).
    fn resident_frames(fs: &FrameSource, n: usize) -> usize {
        let page = os::page_size();
        let len = n << fs.shift();
        let mut vec = vec![0u8; len / page];
        // SAFETY: frames 0..n are one committed range of the arena's first segment (n
        // is at most a commit step, which the first segment holds); `vec` has a byte
        // per page of it.
        let r = unsafe { libc::mincore(fs.frame_addr(0).cast(), len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        (vec.iter().filter(|&&b| b & 1 != 0).count() * page) >> fs.shift()
    }

    #[test]
    fn prefault_makes_a_committed_step_resident_at_once() {
        let shift = match crate::pool::config::test_frame_size() {
            0 => MIN_FRAME_SIZE.trailing_zeros(),
            f => f.trailing_zeros(),
        };
        let step = commit_step(shift);
        for prefault in [false, true] {
            let fs = FrameSource::starting_at(4 * step, 4 * step, 0, shift, prefault).unwrap();
            let mut a = [0u32; 1];
            fs.alloc(&mut a).unwrap();
            assert_eq!(fs.committed(), step, "one step committed for the first frame");
            let resident = resident_frames(&fs, step);
            if prefault {
                assert_eq!(resident, step, "the whole step is faulted in when committed");
            } else {
                assert_eq!(resident, 0, "nothing is resident before it is written");
            }
            // Either way the frame reads as zeros and takes writes.
            // SAFETY: frame a[0] is held and committed.
            unsafe {
                assert_eq!(fs.frame_addr(a[0]).read(), 0);
                fs.frame_addr(a[0]).write(7);
            }
            fs.discard(fs.free(&a));
        }
    }
}

#[cfg(test)]
mod hot_tests {
    use super::*;

    #[test]
    fn frames_past_the_hot_cache_go_back_to_the_os() {
        let fs = FrameSource::new(4096, 4096).unwrap();
        let n = fs.hot_frames() + 8;
        let mut a = vec![0u32; n];
        fs.alloc(&mut a).unwrap();
        for &p in &a {
            // SAFETY: held and committed.
            unsafe { fs.frame_addr(p).write(0xAB) };
        }
        let d = fs.free(&a);
        assert_eq!(fs.account().discarding, 8, "past the hot cache, frames wait for their madvise");
        fs.discard(d);
        assert_eq!(fs.free_count(), n);
        // The first hot_frames() stayed resident; the rest were discarded (read zero).
        // SAFETY: committed frames; nothing else uses them.
        unsafe {
            assert_eq!(fs.frame_addr(a[0]).read(), 0xAB);
            assert_eq!(fs.frame_addr(a[n - 1]).read(), 0);
        }
        let mut b = vec![0u32; n];
        fs.alloc(&mut b).unwrap();
        assert_eq!(b[..fs.hot_frames()], a[..fs.hot_frames()], "resident frames are reused first, ascending");
    }

    #[test]
    fn take_lowest_keeps_resident_frames_apart_from_returned_ones() {
        let fs = FrameSource::new(4096, 4096).unwrap();
        let n = fs.hot_frames() + 64;
        let mut a = vec![0u32; n];
        fs.alloc(&mut a).unwrap();
        // The highest frames are freed first: they stay resident (hot), and the lowest
        // ones, past the cache, go back to the OS. take_lowest then takes returned frames.
        for &p in a.iter().rev() {
            // SAFETY: held and committed.
            unsafe { fs.frame_addr(p).write(0xAB) };
            fs.discard(fs.free(&[p]));
        }
        let taken = fs.take_lowest(10, n);
        assert_eq!(taken, (0..10).collect::<Vec<u32>>());
        let st = fs.state.lock();
        assert_eq!(st.hot.len(), fs.hot_frames(), "the resident frames are still resident");
        for &p in &st.free {
            // SAFETY: committed frames; nothing uses them.
            assert_eq!(unsafe { fs.frame_addr(p).read() }, 0, "frame {p} on the returned list is resident");
        }
    }
}

#[cfg(test)]
mod account_tests {
    use super::*;

    /// The equation of the module comment, as the checker computes it.
    fn balanced(fs: &FrameSource) -> bool {
        let a = fs.account();
        a.top - a.bottom == a.held + a.taken + a.free.len() + a.discarding + a.retiring
    }

    #[test]
    fn every_frame_is_counted_in_one_place_at_every_step() {
        let fs = FrameSource::new(4096, 4096).unwrap();
        let mut a = vec![0u32; fs.hot_frames() + 4];
        fs.alloc(&mut a).unwrap();
        assert!(balanced(&fs));
        // Past the hot list, freed frames are discarding until their madvise is done.
        let d = fs.free(&a[..fs.hot_frames() + 2]);
        assert_eq!(fs.account().discarding, 2);
        assert!(balanced(&fs));
        fs.discard(d);
        assert!(balanced(&fs));
        // Frames taken for a migration are counted apart from the zspages' frames.
        let taken = fs.take_lowest(2, 4096);
        assert_eq!((fs.account().taken, fs.held()), (2, 2));
        assert!(balanced(&fs));
        // A migration into one of them retires the frame it replaces.
        fs.migrated(a[fs.hot_frames() + 2], taken[0]);
        let acc = fs.account();
        assert_eq!((acc.taken, acc.held), (1, 2));
        assert!(balanced(&fs));
        fs.free_taken(&taken[1..]);
        assert!(balanced(&fs));
        // Allocation reclaims retired frames whose epoch is over, in one step.
        let mut b = [0u32; 1];
        fs.alloc(&mut b).unwrap();
        assert!(balanced(&fs));
    }

    /// Debug builds check the equation as they go: a frame lost from the count is
    /// caught at the next change, not only by the checker.
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "frames counted in no place or in two")]
    fn a_frame_lost_from_the_count_is_caught_at_the_next_change() {
        let fs = FrameSource::new(4096, 4096).unwrap();
        let mut a = [0u32; 2];
        fs.alloc(&mut a).unwrap();
        fs.state.lock().taken += 1;
        fs.discard(fs.free(&a));
    }
}
