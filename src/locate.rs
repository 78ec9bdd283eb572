//! Finding the objects of dense zspages: one pass over the handle table.
//!
//! A dense zspage keeps no list of its objects (`packed.rs`). It needs none for
//! malloc and free, and the slots already say where every object is: the objects of
//! a zspage are the slots, LIVE or MOVING, whose location falls in one of its frames.
//! Compaction, frame migration and the checker need a zspage's objects; they gather
//! them for every zspage they will work on in one pass, which reads the table's 8
//! bytes per slot in order and tests each live location against a bitmap of the
//! frames wanted. A pass over a million slots takes about 1.3 ms.
//!
//! A pass run without the zspages' lane locks may list objects freed or moved since,
//! and miss objects placed since. So whoever acts on what a pass found does it under
//! the lane lock (where the objects of the lane's zspages cannot change), and first
//! takes the current word of each listed slot ([`PoolCore::objects_now`]): only a
//! slot that still locates into the zspage counts. A caller that must see every
//! object of a range (migration copies a whole frame) then checks that the objects
//! it has and the zspage's free bytes cover the range exactly; if not, it passes over
//! the table again, under the lock, where nothing can be missed.

use std::collections::HashMap;

use crate::os::{PAGE_SHIFT, PAGE_SIZE};
use crate::pool::PoolCore;
use crate::slot::{State, Word};
use crate::zspage::ZsPage;

/// An object of a dense zspage, as its lane lock's holder sees it now.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Located {
    /// Its handle slot.
    pub idx: u32,
    /// The slot's word when it was taken.
    pub word: Word,
    /// Byte offset in the chain.
    pub off: usize,
    /// Its size.
    pub len: usize,
}

/// The chain offset of arena location `loc` if it lies in one of `zs`'s frames.
pub(crate) fn chain_offset(zs: &ZsPage, loc: u64) -> Option<usize> {
    let pfn = (loc >> PAGE_SHIFT) as u32;
    let k = zs.frame_list().position(|p| p == pfn)?;
    Some(k * PAGE_SIZE + (loc as usize & (PAGE_SIZE - 1)))
}

impl PoolCore {
    /// The slots of the objects that start in the given frames, by owner: `frames`
    /// pairs each pfn wanted with a key of the caller's (a zspage), and the result
    /// maps each key to its slots, in slot order. See the module comment for what a
    /// pass without the lane lock may miss.
    pub(crate) fn locate(&self, frames: impl IntoIterator<Item = (u32, usize)>) -> HashMap<usize, Vec<u32>> {
        let mut owner: HashMap<u32, usize> = HashMap::new();
        let mut bits: Vec<u64> = Vec::new();
        for (pfn, key) in frames {
            let (w, b) = (pfn as usize / 64, pfn % 64);
            if w >= bits.len() {
                bits.resize(w + 1, 0);
            }
            bits[w] |= 1 << b;
            owner.insert(pfn, key);
        }
        let mut found: HashMap<usize, Vec<u32>> = HashMap::new();
        if owner.is_empty() {
            return found;
        }
        for idx in 0..self.handles.used() as u32 {
            // SAFETY: below the high-water mark.
            let w = unsafe { self.handles.slot_unchecked(idx) }.load();
            if w.state() == State::Free {
                continue;
            }
            let pfn = (w.loc() >> PAGE_SHIFT) as usize;
            if bits.get(pfn / 64).is_some_and(|&b| b >> (pfn % 64) & 1 == 1) {
                found.entry(owner[&(pfn as u32)]).or_default().push(idx);
            }
        }
        found
    }

    /// The slots of `zs`'s objects, found by a pass under its lane lock, which the
    /// caller holds: complete.
    pub(crate) fn locate_locked(&self, zs: &ZsPage) -> Vec<u32> {
        self.locate(zs.frame_list().map(|pfn| (pfn, 0))).remove(&0).unwrap_or_default()
    }

    /// Of the slots `cands`, those whose object is in `zs` now, with their current
    /// word, offset and size. The caller holds `zs`'s lane lock.
    pub(crate) fn objects_now(&self, zs: &ZsPage, cands: &[u32]) -> Vec<Located> {
        cands
            .iter()
            .filter_map(|&idx| {
                // SAFETY: candidates come from a pass below the high-water mark.
                let word = unsafe { self.handles.slot_unchecked(idx) }.load();
                if word.state() == State::Free {
                    return None;
                }
                let off = chain_offset(zs, word.loc())?;
                // SAFETY: as above; a dense table keeps sizes. The size was written
                // before the word was published, and the lane lock orders it.
                let len = unsafe { self.handles.size(idx) };
                Some(Located { idx, word, off, len })
            })
            .collect()
    }
}
