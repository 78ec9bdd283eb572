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
//!  63                                              6 5        2 1    0
//! +-------------------------------------------------+----------+------+
//! |  address of the zspage descriptor (bits 63..6)  | frame idx | type |
//! +-------------------------------------------------+----------+------+
//! ```
//!
//! - `type` (2 bits): [`FrameType::Free`] (the whole word is 0), [`FrameType::Zspage`]
//!   (a frame of a multi-object zspage), [`FrameType::Huge`] (the single frame of a
//!   zspage holding one object), and one value reserved for frames in transit.
//! - `frame idx` (4 bits): the frame's position in its zspage's chain, 0..15.
//! - the descriptor address: descriptors are 64-byte aligned, so its low six bits are
//!   zero and carry the two fields above.
//!
//! A frame's order is always 0: a scanner walking frames by number steps by one and
//! never infers the extent of a run from a word.
//!
//! Words are written with `Release` when a zspage takes a frame (after its descriptor
//! is initialised) and cleared when it gives it back; readers load with `Acquire`, so a
//! non-free word always shows an initialised descriptor.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::os::{Region, PAGE_SIZE};
use crate::zspage::ZsPage;

/// What a frame is, as its side-table word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    /// Not part of any zspage.
    Free = 0,
    /// One frame of a zspage of several objects.
    Zspage = 1,
    /// The only frame of a zspage holding a single object.
    Huge = 2,
    /// Reserved for frames being migrated.
    Transit = 3,
}

const TYPE_MASK: usize = 0b11;
const INDEX_SHIFT: u32 = 2;
const INDEX_MASK: usize = 0b1111 << INDEX_SHIFT;
const PTR_MASK: usize = !(TYPE_MASK | INDEX_MASK);

/// A decoded side-table word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWord(usize);

impl FrameWord {
    /// The word of a free frame.
    pub const FREE: FrameWord = FrameWord(0);

    /// The word of frame `index` of zspage `desc`.
    pub fn new(ty: FrameType, index: usize, desc: *const ZsPage) -> FrameWord {
        let addr = desc as usize;
        debug_assert!(addr & !PTR_MASK == 0, "descriptor not 64-byte aligned");
        debug_assert!(index < 16);
        FrameWord(addr | (index << INDEX_SHIFT) | ty as usize)
    }

    /// The frame's type.
    pub fn frame_type(self) -> FrameType {
        match self.0 & TYPE_MASK {
            0 => FrameType::Free,
            1 => FrameType::Zspage,
            2 => FrameType::Huge,
            _ => FrameType::Transit,
        }
    }

    /// The frame's position in its zspage.
    pub fn index(self) -> usize {
        (self.0 & INDEX_MASK) >> INDEX_SHIFT
    }

    /// The zspage descriptor the frame belongs to (null for a free frame).
    pub fn zspage(self) -> *const ZsPage {
        (self.0 & PTR_MASK) as *const ZsPage
    }

    /// The raw word.
    pub fn raw(self) -> usize {
        self.0
    }
}

/// One word per frame of the arena, committed as the arena grows.
pub struct SideTable {
    region: Region,
}

/// Words per page of side table: the side table commits in these steps.
pub const WORDS_PER_PAGE: usize = PAGE_SIZE / std::mem::size_of::<usize>();

impl SideTable {
    /// Reserves a table for `frames` frames.
    pub fn reserve(frames: usize) -> Result<SideTable, i32> {
        Ok(SideTable { region: Region::reserve(frames * std::mem::size_of::<usize>())? })
    }

    /// Makes the words of frames `[from, to)` usable (rounded out to whole pages).
    pub fn commit(&self, from: usize, to: usize) -> Result<(), i32> {
        let bytes = |f: usize| f * std::mem::size_of::<usize>();
        let lo = bytes(from) / PAGE_SIZE * PAGE_SIZE;
        let hi = bytes(to).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if hi > lo {
            self.region.commit(lo, hi.min(self.region.size()) - lo)?;
        }
        Ok(())
    }

    /// Discards the words of frames from `from` to `to` (whole pages only): their
    /// pages go back to the OS and read as zero (free) until written again.
    pub fn discard(&self, from: usize, to: usize) {
        let word = std::mem::size_of::<usize>();
        let lo = (from * word).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let hi = ((to * word) / PAGE_SIZE * PAGE_SIZE).min(self.region.mapped());
        if hi > lo {
            self.region.discard(lo, hi - lo);
        }
    }

    /// Unmaps the words of frames from `from` on (whole pages only: words below
    /// `from` stay). No one may read them any more (see `FrameSource::walk_guard`).
    pub fn release(&self, from: usize) {
        let lo = (from * std::mem::size_of::<usize>()).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        self.region.release_tail(lo);
    }

    /// Maps the words of frames below `to` again after a [`release`](Self::release)
    /// (they become usable with [`commit`](Self::commit)).
    pub fn restore(&self, to: usize) -> Result<(), i32> {
        self.region.restore_tail((to * std::mem::size_of::<usize>()).min(self.region.size()))
    }

    /// Bytes of the table currently mapped.
    pub fn mapped_bytes(&self) -> usize {
        self.region.mapped()
    }

    #[inline]
    fn slot(&self, pfn: u32) -> &AtomicUsize {
        debug_assert!((pfn as usize) < self.region.size() / std::mem::size_of::<usize>());
        // SAFETY: callers pass only pfns below the arena's committed top (the frame
        // source never hands out others, and the scanner stops at the top), whose
        // words are committed, zero-initialised, aligned, and only ever accessed
        // atomically.
        unsafe { &*(self.region.base() as *const AtomicUsize).add(pfn as usize) }
    }

    /// The word of frame `pfn`.
    #[inline]
    pub fn get(&self, pfn: u32) -> FrameWord {
        // Acquire: pairs with the Release in `set`, so the descriptor it names is
        // seen initialised.
        FrameWord(self.slot(pfn).load(Ordering::Acquire))
    }

    /// Sets the word of frame `pfn`.
    #[inline]
    pub fn set(&self, pfn: u32, word: FrameWord) {
        // Release: publishes the descriptor's initialisation to `get`.
        self.slot(pfn).store(word.raw(), Ordering::Release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_roundtrip() {
        #[repr(align(64))]
        struct A(#[allow(dead_code)] [u8; 64]);
        let a = A([0; 64]);
        let p = &a as *const A as *const ZsPage;
        for (ty, idx) in [(FrameType::Zspage, 0), (FrameType::Zspage, 15), (FrameType::Huge, 0)] {
            let w = FrameWord::new(ty, idx, p);
            assert_eq!(w.frame_type(), ty);
            assert_eq!(w.index(), idx);
            assert_eq!(w.zspage(), p);
        }
        assert_eq!(FrameWord::FREE.frame_type(), FrameType::Free);
        assert!(FrameWord::FREE.zspage().is_null());
    }
}
