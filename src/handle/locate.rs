//! Finding objects by where they are: one pass over the handle table.
//!
//! A dense zspage keeps no list of its objects (`layout/dense.rs`). It needs none for
//! malloc and free, and the slots already say where every object is: the objects of
//! a zspage are the slots, LIVE or held, whose location falls in one of its frames.
//! Compaction, frame migration and the checker need a zspage's objects; they gather
//! them for every zspage they will work on in one pass, which reads the table's 8
//! bytes per slot in order and tests each live location against a bitmap of the
//! frames wanted. A pass over a million slots takes about 1.3 ms.
//!
//! A pass run without the zspages' lane locks may list objects freed or moved since,
//! and miss objects placed since. So whoever acts on what a pass found does it under
//! the lane lock (where the objects of the lane's zspages cannot change), and first
//! takes the current word of each listed slot ([`objects_now`]): only a slot that
//! still locates into the zspage counts. A caller that must see every object of a
//! range (migration copies a whole frame) then checks that the objects it has and the
//! zspage's free bytes cover the range exactly; if not, it passes over the table
//! again, under the lock, where nothing can be missed.
//!
//! This knows nothing of zspages: a frame wanted comes with a key of the caller's,
//! and a location is turned into an offset by the caller's function.

use std::collections::HashMap;

use crate::frames::pfn_of;
use crate::handle::HandleTable;

/// An object found in the handle table, as the holder of its lane lock sees it now.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Located {
    /// Its handle slot.
    pub idx: u32,
    /// Where it is, as the caller's function turned the location.
    pub off: usize,
    /// Its size, as recorded beside its slot.
    pub len: usize,
}

/// The slots of the objects that start in the given frames, by owner: `frames` pairs
/// each pfn wanted with a key of the caller's (a zspage), and the result maps each key
/// to its slots, in slot order. See the module comment for what a pass without the
/// lane lock may miss. Frames of `1 << shift` bytes.
pub(crate) fn locate(
    handles: &HandleTable,
    frames: impl IntoIterator<Item = (u32, usize)>,
    shift: u32,
) -> HashMap<usize, Vec<u32>> {
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
    for idx in 0..handles.used() as u32 {
        // SAFETY: below the high-water mark.
        let w = unsafe { handles.slot_unchecked(idx) }.load();
        // A PENDING slot's object is still in its zspage.
        if w.is_vacant() {
            continue;
        }
        let pfn = pfn_of(w.loc(), shift) as usize;
        if bits.get(pfn / 64).is_some_and(|&b| b >> (pfn % 64) & 1 == 1) {
            found.entry(owner[&(pfn as u32)]).or_default().push(idx);
        }
    }
    found
}

/// Of the slots `cands` (from a pass, so below the table's high-water mark), those
/// whose object is where `offset` finds one (a zspage's chain) now, with their offset
/// and size. The caller holds the lane lock of that zspage, and the table
/// records sizes.
pub(crate) fn objects_now(handles: &HandleTable, cands: &[u32], offset: impl Fn(u64) -> Option<usize>) -> Vec<Located> {
    cands
        .iter()
        .filter_map(|&idx| {
            // SAFETY: candidates come from a pass below the high-water mark.
            let word = unsafe { handles.slot_unchecked(idx) }.load();
            if word.is_vacant() {
                return None;
            }
            let off = offset(word.loc())?;
            // SAFETY: `size` asks for an index below the high-water mark: candidates
            // come from a pass below it. (The size was written before the word was
            // published, and the lane lock orders it.)
            let len = unsafe { handles.size(idx) }.expect("a table that records sizes");
            Some(Located { idx, off, len })
        })
        .collect()
}
