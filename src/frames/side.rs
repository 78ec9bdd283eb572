//! The side table ("memmap"): one machine word per frame, and no other per-frame
//! metadata anywhere in the library.
//!
//! This is the "pageless memory" arrangement proposed on linux-mm for zsmalloc (the
//! thread "pageless memory & zsmalloc", 2021): the per-page metadata shrinks to a single
//! word that points at the memory descriptor, here the zspage descriptor. Everything the
//! kernel keeps in `struct page` for zsmalloc (first object offset, next page, huge
//! flag, lock, refcount) lives in the descriptor or is computed.
//!
//! # The word's encoding
//!
//! ```text
//!  63                                              6 5          1   0
//! +-------------------------------------------------+------------+------+
//! |  address of the frame's owner (bits 63..6)      | frame idx  | huge |
//! +-------------------------------------------------+------------+------+
//! ```
//!
//! - a free frame's word is 0 ([`FrameType::Free`]); every other word names an owner,
//!   so is not 0.
//! - `huge` (1 bit): set for the single frame of a zspage holding one object
//!   ([`FrameType::Huge`], whose index is 0), clear for a frame of a multi-object
//!   zspage ([`FrameType::Zspage`]).
//! - `frame idx` (5 bits): the frame's position in its owner's chain, 0..31: up to
//!   16 frames in the kernel's layout, 17 in a dense zspage of objects above 61440
//!   bytes (`layout/classes.rs`, `MAX_FRAMES`). (The word once had 2 bits of type,
//!   the fourth value reserved for frames in transit and never written, and 4 of
//!   index; a free frame is told by its zero word, so one bit of type is enough, and
//!   the index is read with a shift and a mask, as before.)
//! - the owner's address: what the layer above keeps for the frame (a zspage
//!   descriptor), 64-byte aligned, so its low six bits are zero and carry the two
//!   fields above. The table stores it and gives it back; it never follows it.
//!   Descriptors 128-byte aligned would have given a seventh bit, at the price of an
//!   aligned allocation for each, whose split-off remainders scatter small free
//!   blocks through the heap.
//!
//! A frame's order is always 0: a scanner walking frames by number steps by one and
//! never infers the extent of a run from a word.
//!
//! Words are written with `Release` when a zspage takes a frame (after its descriptor
//! is initialised) and cleared when it gives it back; readers load with `Acquire`, so a
//! non-free word always shows an initialised owner.
//!
//! # Which words may be read
//!
//! The table is in segments like the arena's (`frames/segments.rs`), the first ones
//! on the heap, so a small pool's table makes no mapping. It is committed with the
//! arena and its tail may be unmapped by a shrink
//! (`FrameSource::shrink`), so reading a word is `unsafe`: the word must stay mapped
//! while it is read. It does for a frame held by a zspage (a shrink gives back only
//! frames above every held one), and for any frame below the arena's top while the
//! reader holds the side table's walk guard, the frame lock or the pool's compaction
//! lock, each of which keeps a shrink out.
//!
//! Under loom the table is an array of loom atomics that knows which of its words are
//! mapped, and panics on a read of any other: the models find a walker that reads a
//! word a shrink is giving back.

use crate::sync::{hg, AtomicUsize, Ordering};

/// What a frame is, as its side-table word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    /// Not part of any zspage.
    Free = 0,
    /// One frame of a zspage of several objects.
    Zspage = 1,
    /// The only frame of a zspage holding a single object.
    Huge = 2,
}

/// The bit of a huge frame.
const HUGE: usize = 0b1;
const INDEX_SHIFT: u32 = 1;
const INDEX_MASK: usize = 0b11111 << INDEX_SHIFT;
const PTR_MASK: usize = !(HUGE | INDEX_MASK);
/// Frames a word can number.
pub const MAX_INDEX: usize = 32;

/// A decoded side-table word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWord(usize);

impl FrameWord {
    /// The word of a free frame.
    pub const FREE: FrameWord = FrameWord(0);

    /// The word of frame `index` of the owner at address `owner` (64-byte aligned,
    /// not null), of type `ty` (not free).
    pub fn new(ty: FrameType, index: usize, owner: usize) -> FrameWord {
        debug_assert!(owner & !PTR_MASK == 0, "owner not 64-byte aligned");
        debug_assert!(index < MAX_INDEX && (ty != FrameType::Huge || index == 0));
        debug_assert!(ty != FrameType::Free && owner != 0);
        FrameWord(owner | (index << INDEX_SHIFT) | usize::from(ty == FrameType::Huge))
    }

    /// The frame's type.
    #[inline]
    pub fn frame_type(self) -> FrameType {
        if self.0 == 0 {
            FrameType::Free
        } else if self.0 & HUGE != 0 {
            FrameType::Huge
        } else {
            FrameType::Zspage
        }
    }

    /// The frame's position in its owner's chain.
    #[inline]
    pub fn index(self) -> usize {
        (self.0 & INDEX_MASK) >> INDEX_SHIFT
    }

    /// The address of the frame's owner, as stored (0 for a free frame).
    pub fn owner(self) -> usize {
        self.0 & PTR_MASK
    }

    /// The raw word.
    pub fn raw(self) -> usize {
        self.0
    }
}

/// One word per frame of the arena, committed as the arena grows.
pub struct SideTable {
    words: Words,
}

/// Words per page of side table: the side table commits, discards and releases in
/// these steps. The loom models use pages of four words, to match their commit step
/// of four frames (`frames/mod.rs`).
#[inline]
pub fn words_per_page() -> usize {
    if cfg!(loom) {
        4
    } else {
        crate::frames::os::page_size() / std::mem::size_of::<usize>()
    }
}

impl SideTable {
    /// Reserves a table for `frames` frames.
    pub fn reserve(frames: usize) -> Result<SideTable, i32> {
        Ok(SideTable { words: Words::reserve(frames)? })
    }

    /// Makes the words of frames `[from, to)` usable (rounded out to whole pages).
    pub fn commit(&self, from: usize, to: usize) -> Result<(), i32> {
        let lo = from / words_per_page() * words_per_page();
        let hi = (to.div_ceil(words_per_page()) * words_per_page()).min(self.words.len());
        if hi > lo {
            self.words.commit(lo, hi)?;
        }
        Ok(())
    }

    /// Discards the words of frames from `from` to `to` (whole pages only): their
    /// pages go back to the OS and read as zero (free) until written again.
    pub fn discard(&self, from: usize, to: usize) {
        let lo = from.div_ceil(words_per_page()) * words_per_page();
        let hi = (to / words_per_page() * words_per_page()).min(self.words.len());
        if hi > lo {
            self.words.discard(lo, hi);
        }
    }

    /// Unmaps the words of frames from `from` on (whole pages only: words below
    /// `from` stay). No one may read them any more: the caller holds the side table's
    /// extent lock exclusively (`FrameSource::shrink`).
    pub fn release(&self, from: usize) {
        self.words.release(from.div_ceil(words_per_page()) * words_per_page());
    }

    /// Maps the words of frames below `to` again after a [`release`](Self::release)
    /// (they become usable with [`commit`](Self::commit)).
    pub fn restore(&self, to: usize) -> Result<(), i32> {
        self.words.restore(to.min(self.words.len()))
    }

    /// Bytes of the table currently mapped.
    pub fn mapped_bytes(&self) -> usize {
        self.words.mapped() * std::mem::size_of::<usize>()
    }

    /// The word of frame `pfn`.
    ///
    /// # Safety
    /// The word is committed and stays mapped during the call (see the module
    /// comment: the frame is held by a zspage, or it is below the arena's top and the
    /// caller holds the walk guard, the frame lock or the compaction lock).
    #[inline]
    pub unsafe fn get(&self, pfn: u32) -> FrameWord {
        // SAFETY: `Words::word` asks that the word be committed and stay mapped while
        // used: this function's one precondition, for the same word.
        let w = unsafe { self.words.word(pfn as usize) };
        // Acquire: pairs with the Release in `set`, so the descriptor it names is
        // seen initialised.
        let word = FrameWord(w.load(Ordering::Acquire));
        hg::happens_after(w);
        word
    }

    /// Starts bringing frame `pfn`'s word in, for a [`get`](Self::get) a little
    /// later: a hint, which reads nothing (so needs no precondition).
    #[inline(always)]
    pub fn prefetch(&self, pfn: u32) {
        #[cfg(not(loom))]
        crate::sync::prefetch(self.words.segments.addr(pfn as usize, pfn as usize * Words::BYTES));
        #[cfg(loom)]
        let _ = pfn;
    }

    /// Sets the word of frame `pfn`.
    ///
    /// # Safety
    /// 1. The word is committed and stays mapped during the call (as for
    ///    [`get`](Self::get));
    /// 2. the caller holds the lock of the class whose zspage takes or gives up the
    ///    frame, so that the word has one writer.
    #[inline]
    pub unsafe fn set(&self, pfn: u32, word: FrameWord) {
        // SAFETY: `Words::word` asks that the word be committed and stay mapped while
        // used: precondition 1. (Precondition 2 is for the store below, which is
        // atomic anyway: it makes the word's value the writer's.)
        let w = unsafe { self.words.word(pfn as usize) };
        // Release: publishes the descriptor's initialisation to `get`.
        hg::happens_before(w);
        w.store(word.raw(), Ordering::Release)
    }
}

/// The table's memory: a word per frame, in segments of the arena's sizes; those of
/// up to a page on the heap.
#[cfg(not(loom))]
struct Words {
    segments: crate::frames::segments::Segments,
}

#[cfg(not(loom))]
impl Words {
    const BYTES: usize = std::mem::size_of::<usize>();

    fn reserve(n: usize) -> Result<Words, i32> {
        Ok(Words { segments: crate::frames::segments::Segments::new(Self::BYTES, page_bytes(), n) })
    }

    /// Words the table can hold.
    fn len(&self) -> usize {
        self.segments.capacity()
    }

    /// Words of storage the table holds now.
    fn mapped(&self) -> usize {
        self.segments.mapped_bytes() / Self::BYTES
    }

    fn commit(&self, lo: usize, hi: usize) -> Result<(), i32> {
        self.segments.commit(lo, hi)?;
        // Only ever accessed atomically.
        for i in (lo..hi).step_by(words_per_page()) {
            // SAFETY: committed just above.
            hg::untracked(unsafe { self.word(i) } as *const AtomicUsize as *const u8, page_bytes());
        }
        Ok(())
    }

    fn discard(&self, lo: usize, hi: usize) {
        self.segments.discard(lo, hi)
    }

    fn release(&self, from: usize) {
        self.segments.release(from)
    }

    fn restore(&self, _to: usize) -> Result<(), i32> {
        // `commit` maps again what it needs.
        Ok(())
    }

    /// # Safety
    /// Word `i` is committed and stays mapped while the reference is used.
    #[inline]
    unsafe fn word(&self, i: usize) -> &AtomicUsize {
        debug_assert!(i < self.len());
        // SAFETY: the caller guarantees the word is committed (zero-initialised by the
        // kernel or the heap) and mapped; segments are aligned to pages or 16 bytes,
        // so the word is aligned; it is only ever accessed atomically.
        unsafe { &*(self.segments.addr(i, i * Self::BYTES) as *const AtomicUsize) }
    }
}

/// Bytes of a page of words.
#[cfg(not(loom))]
fn page_bytes() -> usize {
    words_per_page() * std::mem::size_of::<usize>()
}

/// The table's memory under loom: every word exists, but only those below
/// `accessible` may be read; a read of another panics, as a read of an unmapped or
/// uncommitted word would fault.
#[cfg(loom)]
struct Words {
    words: Box<[AtomicUsize]>,
    /// Words below this are committed and mapped. SeqCst: it stands for the page
    /// tables, which every thread sees change at once.
    accessible: AtomicUsize,
    /// Words below this are mapped (committed or not).
    mapped: AtomicUsize,
}

#[cfg(loom)]
impl Words {
    fn reserve(n: usize) -> Result<Words, i32> {
        Ok(Words {
            words: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            accessible: AtomicUsize::new(0),
            mapped: AtomicUsize::new(n),
        })
    }

    fn len(&self) -> usize {
        self.words.len()
    }

    fn mapped(&self) -> usize {
        self.mapped.load(Ordering::SeqCst)
    }

    fn commit(&self, lo: usize, hi: usize) -> Result<(), i32> {
        assert!(hi <= self.mapped(), "commit of unmapped side-table words");
        assert!(lo <= self.accessible.load(Ordering::SeqCst), "the side table commits from the bottom");
        self.accessible.fetch_max(hi, Ordering::SeqCst);
        Ok(())
    }

    fn discard(&self, lo: usize, hi: usize) {
        for w in &self.words[lo..hi] {
            // Relaxed: the page's contents simply become zero.
            w.store(0, Ordering::Relaxed);
        }
    }

    fn release(&self, from: usize) {
        self.accessible.fetch_min(from, Ordering::SeqCst);
        self.mapped.fetch_min(from, Ordering::SeqCst);
    }

    fn restore(&self, to: usize) -> Result<(), i32> {
        self.mapped.fetch_max(to, Ordering::SeqCst);
        Ok(())
    }

    /// # Safety
    /// None beyond the real table's: a word that is not accessible panics here.
    unsafe fn word(&self, i: usize) -> &AtomicUsize {
        assert!(
            i < self.accessible.load(Ordering::SeqCst),
            "side-table word {i} read while unmapped or uncommitted (it would fault)"
        );
        &self.words[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_roundtrip() {
        let owner = 0x7f12_3456_7840usize;
        let mut raws = std::collections::HashSet::new();
        let cases = (0..MAX_INDEX).map(|k| (FrameType::Zspage, k)).chain([(FrameType::Huge, 0)]);
        for (ty, idx) in cases {
            let w = FrameWord::new(ty, idx, owner);
            assert_eq!(w.frame_type(), ty);
            assert_eq!(w.index(), idx);
            assert_eq!(w.owner(), owner);
            assert_ne!(w, FrameWord::FREE);
            assert!(raws.insert(w.raw()), "two frames share the word {:#x}", w.raw());
        }
        // The 17th frame of a chain (index 16) is told from frame 0 and from a huge
        // frame by its low bits alone.
        assert_eq!(FrameWord::new(FrameType::Zspage, 16, owner).raw() & !PTR_MASK, 16 << INDEX_SHIFT);
        assert_eq!(FrameWord::new(FrameType::Huge, 0, owner).raw() & !PTR_MASK, HUGE);
        assert_eq!(FrameWord::FREE.frame_type(), FrameType::Free);
        assert_eq!(FrameWord::FREE.owner(), 0);
    }
}
