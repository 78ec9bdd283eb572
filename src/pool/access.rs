//! Object access without locks: reads, writes and mappings.
//!
//! Every access holds the object in its handle slot (`handle/slot.rs`), which keeps its
//! location, zspage and frames fixed, then works on the bytes: in place where the
//! bytes are contiguous in the arena (inside one frame, or straddling frames of the
//! chain that happen to be adjacent: two for an object up to a page, up to seventeen
//! for the largest), through a copy otherwise. No class lock and
//! no epoch guard is taken; the hold is in the slot word, so it may outlive the call
//! (a mapping, a read between `read_begin` and `read_end`).
//!
//! # Readers share, writers are alone
//!
//! | access | holds the object | while it is held by another |
//! |---|---|---|
//! | `read` (one copy out) | alone if no one else reads it, else shared with the readers | reader: shares; write or move in progress: waits for it; writable mapping: `Busy` |
//! | `read_begin` .. end, read-only mapping | shared (a pin) | reader: shares; write or move in progress: waits for it; writable mapping: `Busy` |
//! | `write` (one copy in) | alone | reader or writable mapping: `Busy`; write or move in progress: waits for it |
//! | writable mapping (`ReadWrite`, `WriteOnly`) | alone, until unmapped | reader or writable mapping: `Busy`; write or move in progress: waits for it |
//!
//! So the bytes a caller sees through a shared borrow never change under it, and a
//! writable mapping is the only view of its object: two live `&mut [u8]` of one
//! object, or a `&mut` and a `&`, cannot exist. Waiting is only ever for a copy of
//! at most 4 KiB that its claimant finishes without waiting for anyone; a hold that
//! may last (a pin, a writable mapping) is never waited for, since the very thread
//! that asks may be its owner.

use std::cell::RefCell;
use std::ptr::NonNull;

use crate::error::{keeping_errno, Error, Result};
use crate::frames::FrameSource;
use crate::handle::slot::{Claim, Slot, SlotError, Word};
use crate::handle::Handle;
use crate::handle::SizeCell;
use crate::layout::zspage::ZsPage;
use crate::pool::PoolCore;
use crate::sync::{track_read, track_write};

/// How an access holds its object (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Shared with other readers, for as long as the caller likes (a pin).
    Share,
    /// One copy out: alone, or shared if others read it.
    Read,
    /// One copy in: alone.
    Write,
    /// A writable mapping: alone, for as long as the caller likes.
    Writer,
}

/// How a hold ends.
#[derive(Clone, Copy, Debug)]
enum Release {
    /// Drop a pin.
    Unpin,
    /// Give back a copy claim: the word to store.
    Copy(Word),
    /// Give back a writable mapping's claim.
    Writer,
}

/// A held object: where it is, how many bytes of it a caller may use, and how the hold
/// ends. Its zspage is not looked up unless the bytes asked for leave the object's
/// first frame ([`PoolCore::span`]): for most objects an access then touches the slot,
/// the size beside it and the bytes, and neither the side table nor the descriptor.
#[derive(Debug)]
pub(crate) struct Pin {
    slot: NonNull<Slot>,
    loc: u64,
    release: Release,
    /// Bytes a caller may use.
    pub usable: usize,
}

/// Where `len` bytes of a held object are.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Span {
    /// Contiguous at this address.
    One(*mut u8),
    /// The first `.1` bytes at `.0`, the rest at `.2`.
    Two(*mut u8, usize, *mut u8),
    /// An object larger than a page over frames of the chain of `.1`, from byte `.2`
    /// of it, not all adjacent: a piece per frame, found in the arena `.0`.
    Chain(*const FrameSource, *const ZsPage, usize),
}

/// Calls `f(address, position, n)` for each frame's piece of the `len` bytes at byte
/// `off` of the chain of `zs`: `n` bytes at `address`, which are bytes
/// `position..position + n` of the range.
///
/// # Safety
/// `frames` and `zs` are alive, and the chain's frames stay put, while this runs.
unsafe fn each_piece(
    frames: *const FrameSource,
    zs: *const ZsPage,
    off: usize,
    len: usize,
    mut f: impl FnMut(*mut u8, usize, usize),
) {
    let mut done = 0;
    while done < len {
        let at = off + done;
        // SAFETY: `frames` is alive (the precondition).
        let (shift, frame) = unsafe { ((*frames).shift(), (*frames).frame_size()) };
        let within = at & (frame - 1);
        let n = (frame - within).min(len - done);
        // SAFETY: both alive (the precondition); the chain covers the range, as the
        // span that led here was made for it.
        let addr = unsafe { (*frames).addr((*frames).location((*zs).frame(at >> shift), within)) };
        f(addr, done, n);
        done += n;
    }
}

/// The boundaries where mapped memory may end: every page size this library runs on is
/// a multiple of the smallest, so a 4 KiB boundary is found whatever the system's page.
const MAP_GRAIN: usize = crate::frames::MIN_FRAME_SIZE;
/// How far from a page's end a copy out of the arena stops its long part.
const COPY_TAIL: usize = 128;

/// Copies `n` bytes out of the arena, from `src` to `dst`.
///
/// memcpy moves a few KiB and more with the CPU's string copy (`rep movsb`), which,
/// where the destination is not 64-byte aligned, reads its source ahead; where the
/// source ends less than that read-ahead before a page with nothing mapped (a frame
/// past the object that was never written, or was given back to the OS), the whole
/// copy slows down: 16 KiB out of a pool's only zspage took 233 ns, the same copy with
/// the next page mapped 131 ns, and 4 KiB 143 ns against 41. The last `COPY_TAIL`
/// bytes of such a copy are copied apart, so that the long copy ends far enough from
/// the page (the same 16 KiB then took 134 ns); a copy ending elsewhere is one call.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes, and they do not overlap.
#[inline]
unsafe fn copy_from_arena(src: *const u8, dst: *mut u8, n: usize) {
    let to_page_end = (src as usize).wrapping_add(n).wrapping_neg() & (MAP_GRAIN - 1);
    let long = if n > COPY_TAIL && to_page_end < COPY_TAIL { n - COPY_TAIL } else { n };
    // SAFETY: both ranges are parts of the `n` bytes the caller vouches for: readable
    // at `src`, writable at `dst`, not overlapping.
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, long);
        if long < n {
            std::ptr::copy_nonoverlapping(src.add(long), dst.add(long), n - long);
        }
    }
}

impl Span {
    /// Copies `dst.len()` bytes out.
    ///
    /// # Safety
    /// 1. The span covers at least `dst.len()` bytes, in committed frames;
    /// 2. no one writes them while the copy runs: they are an object the caller holds
    ///    (shared or alone);
    /// 3. they do not overlap `dst`.
    pub(crate) unsafe fn copy_out(self, dst: &mut [u8]) {
        let n = dst.len();
        // SAFETY: the sources are readable for `n` bytes in all (1: `first` of them at
        // `a` and the rest at `b` for two pieces; a piece per frame of a chain, whose
        // descriptor and frames the hold keeps, for `each_piece`), and not written
        // meanwhile (2); the destination is `dst`, writable for `n` bytes, and
        // overlaps none of them (3).
        unsafe {
            match self {
                Span::One(p) => {
                    track_read(p, n);
                    copy_from_arena(p, dst.as_mut_ptr(), n)
                }
                Span::Two(a, first, b) => {
                    let first = first.min(n);
                    track_read(a, first);
                    track_read(b, n - first);
                    copy_from_arena(a, dst.as_mut_ptr(), first);
                    copy_from_arena(b, dst.as_mut_ptr().add(first), n - first);
                }
                Span::Chain(frames, zs, off) => each_piece(frames, zs, off, n, |p, at, k| {
                    track_read(p, k);
                    copy_from_arena(p, dst.as_mut_ptr().add(at), k)
                }),
            }
        }
    }

    /// Copies `src` in.
    ///
    /// # Safety
    /// 1. The span covers at least `src.len()` bytes, in committed frames;
    /// 2. no one else reads or writes them while the copy runs: they are an object the
    ///    caller holds alone, or bytes it has just placed an object in, under the class
    ///    lock, before the object is published;
    /// 3. they do not overlap `src`.
    pub(crate) unsafe fn copy_in(self, src: &[u8]) {
        let n = src.len();
        // SAFETY: the destinations are writable for `n` bytes in all (1: for a chain,
        // a piece per frame, whose descriptor and frames the hold keeps, for
        // `each_piece`), and no one else touches them meanwhile (2); the source is
        // `src`, readable for `n` bytes, and overlaps none of them (3).
        unsafe {
            match self {
                Span::One(p) => {
                    track_write(p, n);
                    std::ptr::copy_nonoverlapping(src.as_ptr(), p, n)
                }
                Span::Two(a, first, b) => {
                    let first = first.min(n);
                    track_write(a, first);
                    track_write(b, n - first);
                    std::ptr::copy_nonoverlapping(src.as_ptr(), a, first);
                    std::ptr::copy_nonoverlapping(src.as_ptr().add(first), b, n - first);
                }
                Span::Chain(frames, zs, off) => each_piece(frames, zs, off, n, |p, at, k| {
                    track_write(p, k);
                    std::ptr::copy_nonoverlapping(src.as_ptr().add(at), p, k)
                }),
            }
        }
    }
}

/// Makes the compiler load `v` and then forget it: a read done only for its cache
/// miss. (`black_box` would also store it to the stack and take its address.)
#[inline(always)]
#[cfg_attr(zs_valgrind, allow(dead_code))]
fn keep(v: usize) {
    #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
    // SAFETY: an empty instruction string: names the register and does nothing.
    unsafe {
        std::arch::asm!("/* {0} */", in(reg) v, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
    std::hint::black_box(v);
}

/// How a mapping will be used (the kernel's `zs_mapmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapMode {
    /// Read and stored back: holds the object alone.
    ReadWrite,
    /// Read only: shares the object with other readers; writes through a copied
    /// mapping are lost at unmap.
    ReadOnly,
    /// Write only: the bytes need not hold the object's contents; stored at unmap.
    /// Holds the object alone.
    WriteOnly,
}

/// A copied mapping's buffer: a page, or as many bytes as the object it was last made
/// for, if more.
type PageBuf = Box<[u8]>;

thread_local! {
    /// Buffers for mappings of objects that are not contiguous, reused per thread.
    static PAGE_BUFS: RefCell<Vec<PageBuf>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of at least `len` bytes: 4 KiB for any object up to that, as many bytes
/// as a larger object has (a buffer too short is dropped for it).
fn take_buf(len: usize) -> PageBuf {
    match PAGE_BUFS.try_with(|b| b.borrow_mut().pop()).ok().flatten() {
        Some(buf) if buf.len() >= len => buf,
        _ => vec![0u8; len.max(crate::frames::MIN_FRAME_SIZE)].into_boxed_slice(),
    }
}

fn give_buf(buf: PageBuf) {
    // Keep a few per thread; the kernel keeps one per CPU.
    let _ = PAGE_BUFS.try_with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < 16 {
            b.push(buf);
        }
    });
}

/// The state of one mapping, between `map_begin` and `map_end`. Small (the C ABI
/// keeps one per open mapping in a per-thread list): what a copied mapping needs to
/// store its bytes back lives in the boxed `copy`, made only on that slow path.
#[derive(Debug)]
pub(crate) struct MapState {
    slot: NonNull<Slot>,
    ptr: *mut u8,
    len: usize,
    mode: MapMode,
    copy: Option<Box<CopyBack>>,
}

// The first word of [`MapState::into_words`]. (Used by the C ABI, which loom builds
// leave out, as are the other items marked so below.)
/// The mode's bits in [`MapState::into_words`]'s first word.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const MAP_MODE: usize = 0b11;
/// [`MapMode::ReadWrite`] there.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const MAP_RW: usize = 0;
/// [`MapMode::ReadOnly`] there.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const MAP_RO: usize = 1;
/// [`MapMode::WriteOnly`] there.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const MAP_WO: usize = 2;
/// Set there for a copied mapping.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const MAP_COPIED: usize = 0b100;
// The three low bits of a slot's address and of a `CopyBack`'s are free for them.
const _: () = assert!(std::mem::align_of::<Slot>() >= 8 && std::mem::align_of::<CopyBack>() >= 8);

/// A read-only mapping just begun ([`PoolCore::map_shared`]).
#[derive(Debug)]
#[cfg_attr(loom, allow(dead_code))]
pub(crate) enum SharedMap {
    /// In place, at this address: the object is pinned in this slot.
    InPlace(*mut u8, NonNull<Slot>),
    /// Copied: the state to end it with [`PoolCore::map_end`].
    Copied(MapState),
}

/// A copied mapping's buffer and the hold that says where its bytes go back.
#[derive(Debug)]
struct CopyBack {
    buf: PageBuf,
    pin: Pin,
}

impl MapState {
    /// The address handed to the caller.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes the caller may use.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The state in three words, for a compact record of open mappings: the slot
    /// (in place) or the copied mapping's [`CopyBack`] (`MAP_COPIED` set), with the
    /// mode in the low bits (both are 8-byte aligned); the address; the length.
    /// [`from_words`](Self::from_words) takes them back, and must, once: a copied
    /// mapping's buffer is owned by the words meanwhile.
    #[inline(always)]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn into_words(self) -> [usize; 3] {
        let mode = match self.mode {
            MapMode::ReadWrite => MAP_RW,
            MapMode::ReadOnly => MAP_RO,
            MapMode::WriteOnly => MAP_WO,
        };
        let at = match self.copy {
            None => self.slot.as_ptr() as usize,
            Some(c) => Box::into_raw(c) as usize | MAP_COPIED,
        };
        debug_assert_eq!(at & MAP_MODE, 0, "8-byte aligned");
        [at | mode, self.ptr as usize, self.len]
    }

    /// The state [`into_words`](Self::into_words) gave.
    ///
    /// # Safety
    /// `w` is what `into_words` returned, and this is the one call given it.
    #[inline(always)]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) unsafe fn from_words(w: [usize; 3]) -> MapState {
        let mode = match w[0] & MAP_MODE {
            MAP_RW => MapMode::ReadWrite,
            MAP_RO => MapMode::ReadOnly,
            _ => MapMode::WriteOnly,
        };
        let at = w[0] & !(MAP_MODE | MAP_COPIED);
        let (slot, copy) = if w[0] & MAP_COPIED == 0 {
            // SAFETY: `into_words` put a slot's address here, not null.
            (unsafe { NonNull::new_unchecked(at as *mut Slot) }, None)
        } else {
            // SAFETY: `into_words` put a box's pointer here, which this one call takes
            // back (the precondition).
            let c = unsafe { Box::from_raw(at as *mut CopyBack) };
            (c.pin.slot, Some(c))
        };
        MapState { slot, ptr: w[1] as *mut u8, len: w[2], mode, copy }
    }

    /// The slot the mapping holds and its mode, to let the object go with
    /// [`PoolCore::abandon_map`] if the mapping is abandoned before the caller sees it.
    // Its callers are left out of loom builds.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn hold(&self) -> (NonNull<Slot>, MapMode) {
        (self.slot, self.mode)
    }
}

impl Pin {
    /// The slot of a shared hold (`read_begin_raw`), to end it with
    /// [`PoolCore::unpin_slot`]. (Used by the C ABI, which loom builds leave out.)
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn slot(&self) -> NonNull<Slot> {
        debug_assert!(matches!(self.release, Release::Unpin));
        self.slot
    }
}

impl PoolCore {
    /// Holds the object a handle names, as `access` asks.
    // Always: called with a constant `access` from each access path, so that inlined
    // each keeps its own claim only and returns the hold in registers. Out of line
    // (four callers), a map+unmap pair of the C ABI took 379 instructions, inlined 345
    // (callgrind, zshot --only map); write+read 1,312 against 1,241 with its memcpy
    // baseline.
    #[inline(always)]
    fn hold(&self, h: Handle, access: Access, call: &str) -> Result<Pin> {
        let (slot, size) = self.resolve_sized(h, call)?;
        // The size beside the slot is read after the claim below, whose atomic
        // read-modify-write holds back later loads until it completes: read it once
        // before as well (the value is not used), so that its cache miss overlaps the
        // slot's instead of following it. Not in helgrind builds: that read is ordered
        // with nothing (a malloc may be writing the cell), and helgrind cannot know
        // that its value is thrown away.
        #[cfg(not(zs_valgrind))]
        if let Some(size) = size {
            keep(size.get());
        }
        let held = match access {
            Access::Share => slot.pin(h.gen()).map(|loc| (loc, Release::Unpin)),
            Access::Read | Access::Write => slot.claim_copy(h.gen(), access == Access::Read).map(|c| match c {
                Claim::Alone(w) => (w.loc(), Release::Copy(w)),
                Claim::Shared(loc) => (loc, Release::Unpin),
            }),
            Access::Writer => slot.claim_writer(h.gen()).map(|loc| (loc, Release::Writer)),
        };
        let (loc, release) = match held {
            Ok(held) => held,
            Err(SlotError::Stale) => {
                return Err(self.misuse(call, h.to_raw(), Error::Invalid("stale handle (freed?)")))
            }
            Err(SlotError::Busy) => return Err(Error::Busy),
            Err(SlotError::TooManyPins) => return Err(Error::Again),
        };
        // The hold keeps a size beside the slot fixed (the Acquire in the claim made it
        // visible).
        let usable = match size {
            // The dense layout's objects take exactly their size.
            Some(size) => size.get(),
            None => {
                // SAFETY: the object is held, so its frame is held by its zspage.
                let zs = ZsPage::of(unsafe { self.frames().side().get(self.frames().pfn_of(loc)) });
                // SAFETY: the hold keeps the object, its zspage and its descriptor alive.
                let class = unsafe { (*zs).class } as usize;
                self.classes()[class].spec.usable()
            }
        };
        Ok(Pin { slot: NonNull::from(slot), loc, release, usable })
    }

    /// The slot a handle names, if this pool issued it, and the cell of its size
    /// where the table records sizes: [`resolve`](Self::resolve) and
    /// [`HandleTable::size_cell`] with one look-up of their segment.
    #[inline(always)]
    fn resolve_sized(&self, h: Handle, call: &str) -> Result<(&Slot, Option<SizeCell<'_>>)> {
        if h.tag() == self.id.tag() {
            if let Some(found) = h.index().and_then(|idx| self.handles().get_sized(idx)) {
                return Ok(found);
            }
        }
        self.resolve_sized_again(h, call)
    }

    /// [`resolve_sized`](Self::resolve_sized) for a handle refused there: the refusal,
    /// with its reason (or the slot, if the table has grown to it meanwhile).
    #[cold]
    #[inline(never)]
    fn resolve_sized_again(&self, h: Handle, call: &str) -> Result<(&Slot, Option<SizeCell<'_>>)> {
        let (slot, idx) = self.resolve(h, call)?;
        // SAFETY: `resolve` checked the index against the high-water mark.
        Ok((slot, unsafe { self.handles().size_cell(idx) }))
    }

    /// Pins the object a handle names, shared with other readers (`Busy` while it is
    /// mapped writable).
    #[inline]
    pub(crate) fn pin_shared(&self, h: Handle, call: &str) -> Result<Pin> {
        self.hold(h, Access::Share, call)
    }

    /// Ends a hold.
    #[inline]
    pub(crate) fn unpin(&self, pin: Pin) {
        // SAFETY: slots live as long as the pool, and the slot came from a hold of
        // this pool, which this call ends.
        let slot = unsafe { pin.slot.as_ref() };
        match pin.release {
            Release::Unpin => slot.unpin(),
            Release::Copy(w) => slot.end_copy(w),
            Release::Writer => slot.end_writer(),
        }
    }

    /// Drops a shared hold known by its slot alone (taken from [`Pin::slot`]).
    ///
    /// # Safety
    /// `slot` is the slot of a shared hold (a pin) on an object of this pool that the
    /// caller took and has not ended; this call ends it.
    #[inline]
    pub(crate) unsafe fn unpin_slot(&self, slot: NonNull<Slot>) {
        // SAFETY: slots live as long as the pool, and the caller guarantees this one
        // is of this pool and pinned by the caller.
        unsafe { slot.as_ref() }.unpin();
    }

    /// Where the first `len` bytes of a held object are: at its location when they stay
    /// in its first frame, else wherever its zspage's chain goes on.
    #[inline]
    pub(crate) fn span(&self, pin: &Pin, len: usize) -> Span {
        if self.frames().offset_in_frame(pin.loc) + len <= self.frames().frame_size() {
            return Span::One(self.frames().addr(pin.loc));
        }
        // The location alone, not the pin: passed in a register.
        // SAFETY: the location of the object `pin` holds.
        unsafe { self.span_across(pin.loc, len) }
    }

    /// [`span`](Self::span) for bytes that leave the object's first frame.
    ///
    /// # Safety
    /// `loc` is the location of an object the caller holds, for as long as the span
    /// is used.
    #[inline(never)]
    unsafe fn span_across(&self, loc: u64, len: usize) -> Span {
        // SAFETY: this function's precondition.
        unsafe { self.span_across_inline(loc, len) }
    }

    /// [`span_across`](Self::span_across)'s body, for a caller that is out of line
    /// itself.
    ///
    /// # Safety
    /// As for `span_across`.
    #[inline(always)]
    unsafe fn span_across_inline(&self, loc: u64, len: usize) -> Span {
        // SAFETY: the object is held, so its frame is held by its zspage.
        let fw = unsafe { self.frames().side().get(self.frames().pfn_of(loc)) };
        let off = ZsPage::offset_in_chain(fw.index(), loc, self.frames().shift());
        // SAFETY: held, so the descriptor is alive, its frames stay, and the object is
        // at `off`.
        unsafe { self.zspage_span(&*ZsPage::of(fw), off, len) }
    }

    /// Where `len` bytes at byte `off` of a zspage's chain are.
    ///
    /// # Safety
    /// `zs` is alive and its frames are stable for as long as the span is used (a hold
    /// on an object in those bytes, or the class lock with the objects claimed).
    #[inline]
    pub(crate) unsafe fn zspage_span(&self, zs: &ZsPage, off: usize, len: usize) -> Span {
        let (shift, frame) = (self.frames().shift(), self.frames().frame_size());
        if len > frame {
            // SAFETY: `large_span` asks for `zs` alive with its frames stable while the
            // span is used: this function's own precondition.
            return unsafe { self.large_span(zs, off, len) };
        }
        let k = off >> shift;
        let within = off & (frame - 1);
        let pfn = zs.frame(k);
        let here = self.frames().addr(self.frames().location(pfn, within));
        if within + len <= frame {
            return Span::One(here);
        }
        // Adjacent by address (`FrameSource::adjacent`), with the address of the first
        // frame's end known from `here`: one look-up of a segment fewer.
        let (first, next) = (frame - within, self.frames().frame_addr(zs.frame(k + 1)));
        if next == here.wrapping_add(first) {
            Span::One(here)
        } else {
            Span::Two(here, first, next)
        }
    }

    /// [`zspage_span`](Self::zspage_span) for more than a frame: in place where every
    /// frame it covers follows the one before in memory.
    ///
    /// # Safety
    /// `zs` is alive and its frames are stable for as long as the span is used (a hold
    /// on an object in those bytes, or the class lock with the objects claimed).
    #[inline(never)]
    unsafe fn large_span(&self, zs: &ZsPage, off: usize, len: usize) -> Span {
        let shift = self.frames().shift();
        let (first, last) = (off >> shift, (off + len - 1) >> shift);
        let pfn = zs.frame(first);
        let here = self.frames().addr(self.frames().location(pfn, off & ((1 << shift) - 1)));
        // Adjacent by address, not by number: consecutive numbers part at a segment
        // boundary.
        if (first + 1..=last).all(|k| self.frames().adjacent(zs.frame(k - 1), zs.frame(k))) {
            Span::One(here)
        } else {
            Span::Chain(self.frames(), zs, off)
        }
    }

    /// Counts bytes that a read or map had to copy because the object is not
    /// contiguous (only on that slow path, so the shared counter costs the fast path
    /// nothing).
    fn count_copy(&self, n: usize) {
        // Relaxed: a statistic.
        self.counters().read_copied_bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Holds the object and checks a length against its usable bytes (the "object's
    /// slot" of the error, as the C ABI calls it). A length larger than they are is
    /// refused as the misuse it is even when the object is held by others (where
    /// readers hold it, a look under a shared pin tells its usable bytes), so that the
    /// error does not depend on timing.
    // Always, as `hold`: each caller passes a constant `access`; the refusals are out
    // of line. Out of line itself, with the three claims in one body chosen at run
    // time, write+read took 1,241 instructions an object with its memcpy baseline,
    // inlined 1,137 (callgrind, zshot --only write+read).
    #[inline(always)]
    fn hold_len(&self, h: Handle, len: usize, access: Access, call: &str) -> Result<Pin> {
        let pin = match self.hold(h, access, call) {
            Ok(pin) => pin,
            Err(Error::Busy) if access != Access::Share => return Err(self.busy_len(h, len, call)),
            Err(e) => return Err(e),
        };
        if len > pin.usable {
            return Err(self.too_long(pin, h, call));
        }
        Ok(pin)
    }

    /// The refusal of [`hold_len`](Self::hold_len) for an object others hold: the
    /// misuse of a length larger than its usable bytes (looked at under a shared pin,
    /// where readers hold it) before `Busy`.
    #[cold]
    #[inline(never)]
    fn busy_len(&self, h: Handle, len: usize, call: &str) -> Error {
        if let Ok(pin) = self.hold(h, Access::Share, call) {
            let usable = pin.usable;
            self.unpin(pin);
            if len > usable {
                return self.misuse(call, h.to_raw(), Error::Invalid("length larger than the object's slot"));
            }
        }
        Error::Busy
    }

    /// The refusal of [`hold_len`](Self::hold_len) for a length larger than the
    /// object's usable bytes: lets the hold go and counts the misuse.
    #[cold]
    #[inline(never)]
    fn too_long(&self, pin: Pin, h: Handle, call: &str) -> Error {
        self.unpin(pin);
        self.misuse(call, h.to_raw(), Error::Invalid("length larger than the object's slot"))
    }

    /// Copies `data` into the start of the object. `Busy` while the object is read
    /// (a read in progress, a mapping) by anyone; waits for a write or a move of it
    /// in progress.
    pub fn write(&self, h: Handle, data: &[u8]) -> Result<()> {
        let pin = self.hold_len(h, data.len(), Access::Write, "zs_obj_write")?;
        // SAFETY: the span covers data.len() bytes of the object, held alone.
        unsafe { self.span(&pin, data.len()).copy_in(data) };
        self.unpin(pin);
        Ok(())
    }

    /// Copies the first `out.len()` bytes of the object into `out`. `Busy` while the
    /// object is mapped writable; waits for a write or a move of it in progress.
    pub fn read(&self, h: Handle, out: &mut [u8]) -> Result<()> {
        let pin = self.hold_len(h, out.len(), Access::Read, "zs_obj_read_begin")?;
        // SAFETY: the span covers out.len() bytes of the object, held from writers.
        unsafe { self.span(&pin, out.len()).copy_out(out) };
        self.unpin(pin);
        Ok(())
    }

    /// Begins a read of the first `len` bytes: returns a pointer into the pool where
    /// they are contiguous, else copies them to `local` (which must then be non-null
    /// and hold `len` bytes) and returns `local`. The object stays pinned (shared
    /// with other readers, refused to writers) until [`read_end_raw`](Self::read_end_raw).
    ///
    /// # Safety
    /// A non-null `local` is valid for writes of `len` bytes.
    pub(crate) unsafe fn read_begin_raw(&self, h: Handle, len: usize, local: *mut u8) -> Result<(*const u8, Pin)> {
        const CALL: &str = "zs_obj_read_begin";
        let pin = self.hold_len(h, len, Access::Share, CALL)?;
        match self.span(&pin, len) {
            Span::One(p) => Ok((p, pin)),
            span if !local.is_null() => {
                // SAFETY: `local` is not NULL, and valid for writes of `len` bytes (this
                // function's precondition), which makes the slice; `copy_out` asks for
                // 1. a span of `len` bytes in committed frames: the pinned object's
                // (`hold_len` checked `len` against it); 2. no writer: the pin keeps
                // writers out; 3. no overlap: `local` is the caller's buffer, outside
                // the arena's objects.
                unsafe { span.copy_out(std::slice::from_raw_parts_mut(local, len)) };
                self.count_copy(len);
                Ok((local, pin))
            }
            _ => {
                self.unpin(pin);
                Err(self.misuse(CALL, h.to_raw(), Error::Invalid("NULL local_copy for an object that must be copied")))
            }
        }
    }

    /// Ends a read begun by [`read_begin_raw`](Self::read_begin_raw).
    pub(crate) fn read_end_raw(&self, pin: Pin) {
        self.unpin(pin)
    }

    /// Begins a read-only mapping of the whole slot, shared with other readers:
    /// [`map_begin`](Self::map_begin) with [`MapMode::ReadOnly`], whose mapping in
    /// place is only an address and a pin (ended with [`unpin_slot`](Self::unpin_slot)).
    #[inline(always)]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn map_shared(&self, h: Handle) -> Result<SharedMap> {
        let pin = self.hold(h, Access::Share, "zs_map_object")?;
        let (slot, loc, usable) = (pin.slot, pin.loc, pin.usable);
        if self.frames().offset_in_frame(loc) + usable <= self.frames().frame_size() {
            return Ok(SharedMap::InPlace(self.frames().addr(loc), slot));
        }
        // SAFETY: the pin was taken just above on `slot`, which holds `loc`, `usable`.
        Ok(unsafe { self.map_shared_across(slot, loc, usable) })
    }

    /// [`map_shared`](Self::map_shared) for an object that leaves its first frame,
    /// given its pin's parts (in registers, where a `Pin` would go through memory on
    /// the way in place too).
    ///
    /// # Safety
    /// The caller holds a pin on `slot`, whose object is at `loc` with `usable` bytes;
    /// this call takes it over.
    #[inline(never)]
    #[cfg_attr(loom, allow(dead_code))]
    unsafe fn map_shared_across(&self, slot: NonNull<Slot>, loc: u64, usable: usize) -> SharedMap {
        let pin = Pin { slot, loc, release: Release::Unpin, usable };
        // SAFETY: `loc` is the location of the object the pin holds, which the mapping
        // keeps until its end.
        match unsafe { self.span_across_inline(loc, usable) } {
            Span::One(ptr) => SharedMap::InPlace(ptr, slot),
            span => SharedMap::Copied(self.map_copied(pin, span, MapMode::ReadOnly)),
        }
    }

    /// Begins a mapping of the whole slot: read-only shares the object with other
    /// readers, the writable modes hold it alone (see the module comment).
    #[inline]
    pub(crate) fn map_begin(&self, h: Handle, mode: MapMode) -> Result<MapState> {
        let access = if mode == MapMode::ReadOnly { Access::Share } else { Access::Writer };
        let pin = self.hold(h, access, "zs_map_object")?;
        let (slot, len) = (pin.slot, pin.usable);
        Ok(match self.span(&pin, len) {
            Span::One(ptr) => MapState { slot, ptr, len, mode, copy: None },
            span => self.map_copied(pin, span, mode),
        })
    }

    /// [`map_begin`](Self::map_begin) for an object that is not contiguous: its bytes
    /// in a buffer of this thread's. errno is kept across the buffer's allocation (see
    /// [`keeping_errno`]).
    #[cold]
    #[inline(never)]
    fn map_copied(&self, pin: Pin, span: Span, mode: MapMode) -> MapState {
        let (slot, len) = (pin.slot, pin.usable);
        keeping_errno(|| {
            let mut buf = take_buf(len);
            if mode != MapMode::WriteOnly {
                // SAFETY: the span covers the usable bytes of the held object; the
                // buffer holds at least as many.
                unsafe { span.copy_out(&mut buf[..len]) };
                self.count_copy(len);
            }
            let ptr = buf.as_mut_ptr();
            MapState { slot, ptr, len, mode, copy: Some(Box::new(CopyBack { buf, pin })) }
        })
    }

    /// Ends a mapping: stores a copied mapping back (unless read-only) and lets the
    /// object go.
    // Always: with a third caller (the C ABI's end of mappings at thread exit) the
    // inliner left it out of line, and zs_unmap_object then moved the state through
    // memory: a map+unmap pair of the C ABI took 1.6 times as long (hot_paths bench).
    #[inline(always)]
    pub(crate) fn map_end(&self, m: MapState) {
        match m.copy {
            // SAFETY: a read-only mapping in place holds a pin on this slot of this
            // pool (`map_begin`), which ends here with the mapping.
            None if m.mode == MapMode::ReadOnly => unsafe { self.unpin_slot(m.slot) },
            // SAFETY: slots live as long as the pool; this mapping's claim holds it.
            None => unsafe { m.slot.as_ref() }.end_writer(),
            Some(c) => self.unmap_copied(c, m.mode, m.len),
        }
    }

    /// [`map_end`](Self::map_end) for a copied mapping: stores the buffer back (unless
    /// read-only) and lets the object go. errno is kept across the buffer's release
    /// (see [`keeping_errno`]).
    #[cold]
    #[inline(never)]
    fn unmap_copied(&self, c: Box<CopyBack>, mode: MapMode, len: usize) {
        keeping_errno(|| {
            let CopyBack { buf, pin } = *c;
            if mode != MapMode::ReadOnly {
                // SAFETY: still held alone; the span covers the usable bytes.
                unsafe { self.span(&pin, len).copy_in(&buf[..len]) };
            }
            give_buf(buf);
            self.unpin(pin);
        })
    }

    /// Lets the object of a mapping go without storing anything back, for a mapping
    /// abandoned before its caller saw it (its `MapState` already given away).
    ///
    /// # Safety
    /// 1. `slot` and `mode` are [`MapState::hold`] of a mapping of this pool that
    ///    `map_begin` returned;
    /// 2. that mapping was not ended, and is not ended by anyone else afterwards.
    #[cold]
    // Its callers are left out of loom builds.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) unsafe fn abandon_map(&self, slot: NonNull<Slot>, mode: MapMode) {
        // SAFETY: by 1, the slot is of this pool, and slots live as long as it.
        let slot = unsafe { slot.as_ref() };
        // By 1 and 2, the mapping's hold is still ours to end: a read-only mapping
        // pins the object, a writable one (in place or copied) holds it alone
        // (`map_begin`'s `Access`).
        if mode == MapMode::ReadOnly {
            slot.unpin()
        } else {
            slot.end_writer()
        }
    }

    /// Maps the object: the guard derefs to all its usable bytes and unmaps on drop.
    /// `Busy` when a writable mapping is asked for while anyone reads the object, or
    /// any mapping while a writable one is open (on this thread or another).
    #[inline]
    pub fn map(&self, h: Handle, mode: MapMode) -> Result<Mapping<'_>> {
        Ok(Mapping { pool: self, state: Some(self.map_begin(h, mode)?) })
    }

    /// Begins a read of the first `len` bytes, copying into `local` only where they are
    /// not contiguous; the guard derefs to them and ends the read on drop. Shares the
    /// object with other readers; `Busy` while it is mapped writable.
    pub fn read_begin<'a>(&'a self, h: Handle, len: usize, local: &'a mut [u8]) -> Result<ObjRead<'a>> {
        if local.len() < len {
            return Err(Error::Invalid("local copy shorter than the length"));
        }
        // SAFETY: `local` holds at least len bytes.
        let (ptr, pin) = unsafe { self.read_begin_raw(h, len, local.as_mut_ptr())? };
        let copied = ptr == local.as_ptr();
        Ok(ObjRead { pool: self, pin: Some(pin), ptr, len, copied, _local: std::marker::PhantomData })
    }
}

/// A mapped object; unmapped when dropped.
#[derive(Debug)]
pub struct Mapping<'a> {
    pool: &'a PoolCore,
    state: Option<MapState>,
}

impl Mapping<'_> {
    #[inline]
    fn st(&self) -> &MapState {
        self.state.as_ref().expect("present until drop")
    }

    /// The mode it was mapped with.
    pub fn mode(&self) -> MapMode {
        self.st().mode
    }

    /// Whether the bytes are a copy (the object is not contiguous in the arena).
    pub fn is_copy(&self) -> bool {
        self.st().copy.is_some()
    }

    /// The object's usable bytes, writable; `Invalid` for a read-only mapping, which shares the
    /// object with other readers (map it `ReadWrite` or `WriteOnly` to write).
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        let st = self.st();
        if st.mode == MapMode::ReadOnly {
            return Err(Error::Invalid("a read-only mapping is not writable"));
        }
        if st.copy.is_none() {
            track_write(st.ptr(), st.len());
        }
        // SAFETY: the pointer is the held object's bytes or our buffer, valid for `len`
        // bytes while the hold lasts (until drop). A writable mapping holds its object
        // alone, so no other mapping, read or write of it exists; a copy is this
        // mapping's own buffer. `&mut self` makes this the only reference through
        // this mapping.
        Ok(unsafe { std::slice::from_raw_parts_mut(st.ptr(), st.len()) })
    }
}

impl std::ops::Deref for Mapping<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        let st = self.st();
        if st.copy.is_none() {
            track_read(st.ptr(), st.len());
        }
        // SAFETY: the pointer is the held object's bytes or our buffer, valid for `len`
        // bytes while the hold lasts (until drop). No writer of the object exists
        // meanwhile: a read-only mapping keeps them out, a writable one is the only
        // holder and writes only through `as_mut_slice`, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(st.ptr(), st.len()) }
    }
}

impl Drop for Mapping<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(st) = self.state.take() {
            self.pool.map_end(st);
        }
    }
}

/// A read in progress; ends when dropped.
#[derive(Debug)]
pub struct ObjRead<'a> {
    pool: &'a PoolCore,
    pin: Option<Pin>,
    ptr: *const u8,
    len: usize,
    copied: bool,
    _local: std::marker::PhantomData<&'a mut [u8]>,
}

impl ObjRead<'_> {
    /// Whether the bytes were copied to the local buffer (the object is not
    /// contiguous in the arena).
    pub fn is_copy(&self) -> bool {
        self.copied
    }
}

impl std::ops::Deref for ObjRead<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if !self.copied {
            track_read(self.ptr, self.len);
        }
        // SAFETY: the pointer is the pinned object or the caller's local copy, valid
        // for `len` bytes while the pin is held; the pin keeps writers out.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for ObjRead<'_> {
    fn drop(&mut self) {
        if let Some(pin) = self.pin.take() {
            self.pool.read_end_raw(pin);
        }
    }
}
