//! The handle table: the slots handles name, and beside them, where the layout wants
//! it, each object's size and, per block of slots, the class that took it.
//!
//! The table is an array of blocks of 4 KiB (under loom, of 512 bytes), in segments
//! whose sizes double (`frames/segments.rs`), taken as it grows: the first ones on the
//! heap, so a small pool's table makes no mapping. A block is one class's batch: taken
//! whole by a class whose free-slot list is empty (under a small growth lock that
//! nothing nests in), its slots then live in that class's list, linked through the
//! slots themselves, so malloc and free touch only their class's lock. In a table that
//! keeps sizes a block holds 409 slots followed by their 409 sizes (3,272 and 818
//! bytes, 6 unused); in one that does not, 512 slots. Slot `k` of block `b` has index
//! `b << 9 | k`: the slot is at `8 * k` in the block, its size at `3272 + 2 * k`, with
//! no division. Indices whose `k` is at or above a block's slot count are never handed
//! out and are refused like those above the high-water mark.
//!
//! A slot never leaves the class that took its block: malloc takes slots from its
//! class's list, an object stays in its class (compaction and migration move it
//! between that class's zspages), and its free links the slot back into the list of
//! the object's class. So the class of a slot's block is the class of every object
//! the slot ever holds, and where the table keeps it ([`HandleTable::owner`]) a free
//! learns its object's class from the handle alone, without the side table and the
//! zspage descriptor (`pool/deferred.rs`). The checker holds every class to it.

use crate::frames::os::page_size;
use crate::handle::slot::Slot;
use crate::sync::{hg, AtomicU16, AtomicU8, AtomicUsize, Mutex, Ordering};

/// log2 of the 8-byte words of a block: 4 KiB (512 bytes under loom, whose models'
/// whole table is two blocks).
///
/// A block is one lane's batch of slots, with their sizes, so that two lanes' slots and
/// sizes never share a 4 KiB page. A processor's prefetchers bring in lines near the
/// ones a core reads, within the same 4 KiB page: with batches of 64 slots (512 bytes),
/// two threads of private malloc+free pairs in one pool ran at 1.4 times one thread's
/// speed where two pools gave 1.9; with batches of 512 slots, a page to themselves,
/// but their sizes (2 bytes each, in an array of their own) four batches to a page,
/// at 1.7 (docs/hot-paths.md, "Slot batches of a page" and "Slots and sizes in one
/// block"). The cost is at most 408 slots a lane taken and not yet used (4 KiB), and a
/// byte of owners per block.
pub const BLOCK_SHIFT: u32 = if cfg!(loom) { 6 } else { 9 };

/// Bytes of a block.
pub const BLOCK_BYTES: usize = 8 << BLOCK_SHIFT;

/// Slots of a block in a table that keeps sizes: as many as fit with their sizes,
/// 10 bytes each (409 in 4 KiB, 51 in 512 bytes).
const SIZED_SLOTS: usize = BLOCK_BYTES / 10;

// A block lies in one segment of the words' array (segments hold multiples of
// `1 << COMMIT_SHIFT` words), so a slot and its size share their segment.
#[cfg(not(loom))]
const _: () = assert!(BLOCK_SHIFT <= crate::frames::COMMIT_SHIFT);

/// The handle table: `used <= capacity`, both whole blocks (in indices: 512 a block),
/// and every block below `used` is committed, its slots and sizes.
///
/// A table may keep, beside each slot, its object's size (16 bits, in the slot's
/// block): the dense layout's readers learn an object's length there, as the kernel
/// layout's learn it from the class. It may also keep the class of each block (a
/// byte a block, a second array): the dense layout's frees find their lane there.
pub struct HandleTable {
    blocks: Blocks,
    /// Slots of a block: 409 with sizes, 512 without (51 and 64 under loom).
    per_block: usize,
    with_sizes: bool,
    /// Per block, the class that took it (below 256: the dense layout's lanes).
    owners: Option<Cells<AtomicU8>>,
    /// In indices (`blocks << BLOCK_SHIFT`).
    capacity: usize,
    /// Indices below this one are in blocks handed to a class (growth lock).
    grow: Mutex<usize>,
    /// Mirror of the high-water mark for lock-free bounds checks.
    used: AtomicUsize,
}

impl HandleTable {
    /// Reserves a table of at least `capacity` slots (or as many as 32-bit indices
    /// allow), with sizes beside them if `with_sizes` and the class of each block if
    /// `with_owners`.
    pub fn new(capacity: usize, with_sizes: bool, with_owners: bool) -> Result<HandleTable, i32> {
        let per_block = if with_sizes { SIZED_SLOTS } else { 1 << BLOCK_SHIFT };
        // The largest index, `capacity - 1 - (512 - per_block)`, stays below
        // u32::MAX (a handle holds index + 1 in 32 bits).
        let max_blocks = if cfg!(loom) { LOOM_BLOCKS } else { (u32::MAX as usize >> BLOCK_SHIFT) - 1 };
        let blocks = capacity.div_ceil(per_block).clamp(1, max_blocks);
        let capacity = blocks << BLOCK_SHIFT;
        Ok(HandleTable {
            blocks: Blocks::reserve(capacity)?,
            per_block,
            with_sizes,
            owners: if with_owners { Some(Cells::reserve(blocks)?) } else { None },
            capacity,
            grow: Mutex::new(0),
            used: AtomicUsize::new(0),
        })
    }

    /// Whether `index` names a slot of a block handed out (with `used`, the
    /// high-water mark, loaded by the caller).
    #[inline(always)]
    fn valid(&self, index: u32, used: usize) -> bool {
        (index as usize) < used && (index as usize & ((1 << BLOCK_SHIFT) - 1)) < self.per_block
    }

    /// The slot at `index`, if it was ever handed out.
    #[inline]
    pub fn get(&self, index: u32) -> Option<&Slot> {
        // Acquire: pairs with the Release in `take_batch`, so a slot below the mark
        // is committed.
        let used = self.used.load(Ordering::Acquire);
        hg::happens_after(&self.used);
        if self.valid(index, used) {
            // SAFETY: a slot of a block below the high-water mark, so committed,
            // zero-initialised and aligned; slots are only accessed atomically.
            Some(unsafe { self.slot_unchecked(index) })
        } else {
            None
        }
    }

    /// The slot at `index` and the cell of its size (None where the table records no
    /// sizes), if the slot was ever handed out: [`get`](Self::get) and
    /// [`size_cell`](Self::size_cell) with one look-up of the segment for both (a
    /// block lies in one segment).
    #[inline(always)]
    pub fn get_sized(&self, index: u32) -> Option<(&Slot, Option<SizeCell<'_>>)> {
        // Acquire: as in `get`.
        let used = self.used.load(Ordering::Acquire);
        hg::happens_after(&self.used);
        if !self.valid(index, used) {
            return None;
        }
        let k = self.blocks.segment_of(index as usize);
        // SAFETY: a slot of a block below the high-water mark, so the slot and its
        // size are committed (`take_batch`); `k` is the segment of its block. Slots
        // are only accessed atomically.
        unsafe {
            let size = if self.with_sizes { Some(SizeCell(self.blocks.size_in(k, index as usize))) } else { None };
            Some((self.blocks.slot_in(k, index as usize), size))
        }
    }

    /// # Safety
    /// `index` must be a slot handed out ([`get`](Self::get) finds it).
    #[inline]
    pub unsafe fn slot_unchecked(&self, index: u32) -> &Slot {
        // SAFETY: the caller guarantees the slot is committed.
        unsafe { self.blocks.slot(index as usize) }
    }

    /// Slots a block holds: those [`take_batch`](Self::take_batch) hands out at once.
    #[inline]
    pub fn batch(&self) -> usize {
        self.per_block
    }

    /// Hands out a block of never-used slots, [`batch`](Self::batch) of them with
    /// consecutive indices, to class `owner` (below 256 where the table keeps owners):
    /// returns the first index.
    pub fn take_batch(&self, owner: usize) -> Result<u32, i32> {
        let mut top = self.grow.lock();
        if *top + (1 << BLOCK_SHIFT) > self.capacity {
            return Err(libc::ENOMEM);
        }
        self.blocks.commit(*top, *top + (1 << BLOCK_SHIFT))?;
        // Slot words are only ever accessed atomically.
        // SAFETY: committed just above.
        hg::untracked(unsafe { self.blocks.slot(*top) } as *const Slot as *const u8, self.per_block * 8);
        if let Some(owners) = &self.owners {
            let block = *top >> BLOCK_SHIFT;
            owners.commit(block, block + 1)?;
            // SAFETY: committed just above.
            let cell = unsafe { owners.get(block) };
            // Relaxed: published with the block by the Release store of `used` below;
            // never written again.
            cell.store(u8::try_from(owner).expect("a class that keeps owners is below 256"), Ordering::Relaxed);
        }
        let first = *top as u32;
        *top += 1 << BLOCK_SHIFT;
        debug_assert!(*top <= self.capacity);
        // Release: the commit above happens-before any `get` that sees the new mark.
        hg::happens_before(&self.used);
        self.used.store(*top, Ordering::Release);
        Ok(first)
    }

    /// See `PoolCore::untrack_counters`: the high-water mark is read without the
    /// growth lock (its edge is declared where it is written and read).
    pub(crate) fn untrack_counters(&self) {
        hg::untracked((&self.used as *const AtomicUsize).cast(), std::mem::size_of::<AtomicUsize>());
    }

    /// The indices of the slots handed out so far, in order (each a valid `get`): the
    /// blocks below the high-water mark, without the indices past each one's slots.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        let used = self.used_indices();
        (0..used >> BLOCK_SHIFT)
            .flat_map(move |b| ((b << BLOCK_SHIFT)..(b << BLOCK_SHIFT) + self.per_block).map(|i| i as u32))
    }

    /// Slots handed out so far.
    pub fn issued(&self) -> usize {
        (self.used_indices() >> BLOCK_SHIFT) * self.per_block
    }

    /// Whether slot `index` was handed out (`get` finds it).
    pub fn is_issued(&self, index: u32) -> bool {
        self.get(index).is_some()
    }

    /// The high-water mark, in indices (whole blocks).
    fn used_indices(&self) -> usize {
        let used = self.used.load(Ordering::Acquire);
        hg::happens_after(&self.used);
        used
    }

    /// Bytes of metadata the table holds (its committed blocks and owners).
    pub fn bytes(&self) -> usize {
        let pages = |bytes: usize| bytes.div_ceil(page_size()) * page_size();
        let blocks = self.used_indices() >> BLOCK_SHIFT;
        let owners = match &self.owners {
            // A byte a block, in segments whose sizes double from one commit step's
            // elements: those of at most a page come from the heap, taken whole (the
            // first `2 * page` bytes), the others are committed in pages.
            Some(_) => match blocks {
                0 => 0,
                n if n <= 2 * page_size() => n.next_power_of_two().max(1 << crate::frames::COMMIT_SHIFT),
                n => 2 * page_size() + pages(n - 2 * page_size()),
            },
            None => 0,
        };
        pages(blocks * BLOCK_BYTES) + owners
    }

    /// The class that took slot `index`'s block, or None if the table keeps no
    /// owners.
    ///
    /// # Safety
    /// `index` is a slot handed out.
    #[inline(always)]
    pub unsafe fn owner(&self, index: u32) -> Option<usize> {
        let owners = self.owners.as_ref()?;
        // SAFETY: the caller passes an index handed out, whose block's owner is
        // committed with it (`take_batch`).
        let cell = unsafe { owners.get(index as usize >> BLOCK_SHIFT) };
        // Relaxed: written before the high-water mark that the caller's index is below
        // was published (Release), which the caller loaded (Acquire) or learned of
        // under a lock; never written again.
        Some(cell.load(Ordering::Relaxed) as usize)
    }

    /// Sets the owner of slot `index`'s block: for the checker's tests, to break the
    /// invariant on purpose.
    ///
    /// # Safety
    /// `index` is a slot handed out.
    #[cfg(test)]
    pub(crate) unsafe fn testonly_set_owner(&self, index: u32, owner: u8) {
        if let Some(owners) = &self.owners {
            // SAFETY: as in `owner`.
            unsafe { owners.get(index as usize >> BLOCK_SHIFT) }.store(owner, Ordering::Relaxed);
        }
    }

    /// The size recorded beside slot `index`, or None if the table records no sizes.
    ///
    /// # Safety
    /// `index` is a slot handed out.
    #[inline]
    pub unsafe fn size(&self, index: u32) -> Option<usize> {
        // SAFETY: the caller passes a slot handed out.
        unsafe { self.size_cell(index) }.map(SizeCell::get)
    }

    /// The cell of the size recorded beside slot `index`, or None if the table
    /// records no sizes: for a reader that reads it more than once.
    ///
    /// # Safety
    /// `index` is a slot handed out.
    #[inline]
    pub unsafe fn size_cell(&self, index: u32) -> Option<SizeCell<'_>> {
        if !self.with_sizes {
            return None;
        }
        // SAFETY: the caller passes a slot handed out, whose size is committed with
        // it, in its block (`take_batch`).
        Some(SizeCell(unsafe { self.blocks.size(index as usize) }))
    }

    /// Records the size of the object slot `index` is about to hold (1..=65536),
    /// before the slot is published; nothing if the table records no sizes.
    ///
    /// # Safety
    /// `index` is a slot handed out.
    #[inline]
    pub unsafe fn set_size(&self, index: u32, size: usize) {
        // SAFETY: as in `size_cell`.
        if let Some(cell) = unsafe { self.size_cell(index) } {
            // Relaxed: see `SizeCell::get`.
            cell.0.store(size as u16, Ordering::Relaxed)
        }
    }
}

/// The size recorded beside one slot ([`HandleTable::size_cell`]).
#[derive(Clone, Copy)]
pub struct SizeCell<'a>(&'a AtomicU16);

impl SizeCell<'_> {
    /// The size (1..=65536).
    #[inline]
    pub fn get(self) -> usize {
        // Relaxed: written before the slot's LIVE word is published (Release) and
        // read after it is pinned (Acquire), or under the lock that wrote it. Sizes
        // are 1..=65536, kept less one in 16 bits: stored truncated, 0 reads 65536.
        ((self.0.load(Ordering::Relaxed) as usize).wrapping_sub(1) & 0xFFFF) + 1
    }

    /// Starts bringing the cell's line in, for a `get` a little later.
    #[inline(always)]
    pub fn prefetch(self) {
        crate::sync::prefetch((self.0 as *const AtomicU16).cast());
    }
}

/// Blocks a table holds under loom: a model uses a few objects.
const LOOM_BLOCKS: usize = 2;

/// Byte of block `index >> BLOCK_SHIFT` at which the size of slot `index` lies, from
/// the table's start: past the block's slots, 2 bytes a slot.
#[inline(always)]
fn size_byte(index: usize) -> usize {
    let (block, k) = (index >> BLOCK_SHIFT, index & ((1 << BLOCK_SHIFT) - 1));
    block * BLOCK_BYTES + SIZED_SLOTS * 8 + 2 * k
}

/// The table's blocks: an array of 8-byte words, 512 a block, whose pages are committed
/// as the table grows (their zeros are the entries' initial value). Slot `i` is word
/// `i`; the size of slot `i` is at byte [`size_byte`]`(i)`, in a word of the same
/// block. Under loom, arrays of entries made up front (loom's atomics cannot live in
/// raw memory) and found from the same offsets: the slots by word, the sizes by
/// 2-byte half-word.
struct Blocks {
    #[cfg(not(loom))]
    words: crate::frames::segments::Segments,
    #[cfg(loom)]
    slots: Box<[Slot]>,
    #[cfg(loom)]
    sizes: Box<[AtomicU16]>,
}

impl Blocks {
    /// Room for `n` words (whole blocks).
    fn reserve(n: usize) -> Result<Blocks, i32> {
        Ok(Blocks {
            #[cfg(not(loom))]
            words: crate::frames::segments::Segments::new(8, page_size(), n),
            #[cfg(loom)]
            slots: (0..n).map(|_| Slot(crate::sync::AtomicU64::new(0))).collect(),
            #[cfg(loom)]
            sizes: (0..n * 4).map(|_| AtomicU16::new(0)).collect(),
        })
    }

    /// Makes words `[from, to)` usable: commits the pages they reach into.
    fn commit(&self, from: usize, to: usize) -> Result<(), i32> {
        #[cfg(not(loom))]
        self.words.commit(from, to)?;
        #[cfg(loom)]
        assert!(to <= self.slots.len());
        let _ = (from, to);
        Ok(())
    }

    /// The segment of word `i`: that of every word of its block.
    #[inline(always)]
    fn segment_of(&self, i: usize) -> usize {
        #[cfg(not(loom))]
        return self.words.segment_of(i);
        #[cfg(loom)]
        return i >> BLOCK_SHIFT;
    }

    /// Slot `i`.
    ///
    /// # Safety
    /// Its block has been committed.
    #[inline]
    unsafe fn slot(&self, i: usize) -> &Slot {
        // SAFETY: the caller's precondition, `segment_of(i)` being the segment of `i`.
        unsafe { self.slot_in(self.segment_of(i), i) }
    }

    /// The size of slot `i`.
    ///
    /// # Safety
    /// Its block has been committed.
    #[inline]
    unsafe fn size(&self, i: usize) -> &AtomicU16 {
        // SAFETY: as in `slot`.
        unsafe { self.size_in(self.segment_of(i), i) }
    }

    /// [`slot`](Self::slot) with `k`, the segment of `i`, known.
    ///
    /// # Safety
    /// The block of slot `i` has been committed; `k` is `segment_of(i)`.
    #[inline(always)]
    unsafe fn slot_in(&self, k: usize, i: usize) -> &Slot {
        #[cfg(not(loom))]
        // SAFETY: the word is committed (the precondition), so mapped readable and
        // writable; segments are aligned to pages or 16 bytes, so the word is aligned;
        // it holds zeros or what was written since, and any bits are a valid Slot (a
        // transparent AtomicU64).
        return unsafe { &*(self.words.addr_in(k, i, i * 8) as *const Slot) };
        #[cfg(loom)]
        {
            let _ = k;
            return &self.slots[i];
        }
    }

    /// [`size`](Self::size) with `k`, the segment of `i`, known.
    ///
    /// # Safety
    /// The block of slot `i` has been committed; `k` is `segment_of(i)`.
    #[inline(always)]
    unsafe fn size_in(&self, k: usize, i: usize) -> &AtomicU16 {
        let byte = size_byte(i);
        #[cfg(not(loom))]
        // SAFETY: the size lies in the block of slot `i` (`size_byte`: at most
        // `BLOCK_BYTES - 2` past the block's start), so in a committed word of
        // segment `k` (a block lies in one segment); 2-aligned, as the word is; any
        // bits are a valid AtomicU16.
        return unsafe { &*(self.words.addr_in(k, byte / 8, byte) as *const AtomicU16) };
        #[cfg(loom)]
        {
            let _ = k;
            return &self.sizes[byte / 2];
        }
    }
}

/// An entry of an array of the table's that reads as its zero value in a fresh page.
///
/// # Safety
/// Every bit pattern of all zeros is a valid `Self`, equal to `zero()`.
unsafe trait Zeroed {
    /// The value (made explicitly where entries are not raw memory: under loom).
    #[cfg(loom)]
    fn zero() -> Self;
}

// SAFETY: an AtomicU8 is valid for any bits.
unsafe impl Zeroed for AtomicU8 {
    #[cfg(loom)]
    fn zero() -> AtomicU8 {
        AtomicU8::new(0)
    }
}

/// An array of table entries: a reserved region whose pages are committed as the
/// table grows (their zeros are the entries' initial value); under loom, an array of
/// entries made up front (loom's atomics cannot live in raw memory).
struct Cells<T> {
    #[cfg(not(loom))]
    segments: crate::frames::segments::Segments,
    #[cfg(loom)]
    cells: Box<[T]>,
    _t: std::marker::PhantomData<T>,
}

impl<T: Zeroed> Cells<T> {
    fn reserve(n: usize) -> Result<Cells<T>, i32> {
        Ok(Cells {
            #[cfg(not(loom))]
            segments: crate::frames::segments::Segments::new(std::mem::size_of::<T>(), page_size(), n),
            #[cfg(loom)]
            cells: (0..n).map(|_| T::zero()).collect(),
            _t: std::marker::PhantomData,
        })
    }

    /// Makes entries `[from, to)` usable: commits the pages they reach into (which
    /// those below `from` did not).
    fn commit(&self, from: usize, to: usize) -> Result<(), i32> {
        #[cfg(not(loom))]
        self.segments.commit(from, to)?;
        #[cfg(loom)]
        assert!(to <= self.cells.len());
        let _ = (from, to);
        Ok(())
    }

    /// Entry `i`.
    ///
    /// # Safety
    /// Entry `i` has been committed.
    #[inline]
    unsafe fn get(&self, i: usize) -> &T {
        #[cfg(not(loom))]
        // SAFETY: entry `i` is committed (the precondition), so mapped readable and
        // writable; segments are aligned to pages or 16 bytes and entries are laid at
        // their size, so aligned; it holds zeros or what was written since, and any
        // bits are a valid T (`Zeroed`).
        return unsafe { &*(self.segments.addr(i, i * std::mem::size_of::<T>()) as *const T) };
        #[cfg(loom)]
        return &self.cells[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots of a block in a table without sizes.
    const WHOLE: usize = 1 << BLOCK_SHIFT;

    #[test]
    fn table_grows_in_blocks() {
        let t = HandleTable::new(4 * SIZED_SLOTS, true, true).unwrap();
        assert_eq!(t.batch(), 409);
        assert!(t.get(0).is_none());
        assert_eq!(t.take_batch(3).unwrap(), 0);
        assert_eq!(t.take_batch(5).unwrap(), WHOLE as u32);
        assert_eq!(t.issued(), 2 * 409);
        assert!(t.get(WHOLE as u32 + 408).is_some());
        assert!(t.get(2 * WHOLE as u32).is_none());
        // SAFETY: slots handed out.
        unsafe {
            t.set_size(5, 4096);
            assert_eq!(t.size(5), Some(4096));
            t.set_size(6, 65536);
            assert_eq!(t.size(6), Some(65536), "the largest object's size wraps in 16 bits");
            assert_eq!(t.owner(0), Some(3));
            assert_eq!(t.owner(408), Some(3), "a block has one owner");
            assert_eq!(t.owner(WHOLE as u32), Some(5));
            assert_eq!(t.owner(WHOLE as u32 + 408), Some(5));
        }
        let indices: Vec<u32> = t.indices().collect();
        assert_eq!(indices.len(), 2 * 409);
        assert_eq!((indices[408], indices[409]), (408, WHOLE as u32));
        let owners = 1 << crate::frames::COMMIT_SHIFT;
        assert_eq!(t.bytes(), 2 * 4096 + owners, "two blocks, a heap segment of owners");
        let t = HandleTable::new(4 * WHOLE, false, false).unwrap();
        assert_eq!(t.batch(), WHOLE);
        t.take_batch(0).unwrap();
        assert!(t.get(WHOLE as u32 - 1).is_some(), "without sizes, a block is all slots");
        // SAFETY: a slot handed out.
        unsafe {
            t.set_size(5, 4096);
            assert_eq!(t.size(5), None, "a table without sizes records none");
            assert_eq!(t.owner(5), None, "a table without owners records none");
        }
        assert_eq!(t.bytes(), 4096);
        assert_eq!(t.indices().count(), WHOLE);
    }

    /// Slot and size of one index: their addresses, as a block's layout puts them.
    #[test]
    fn a_slot_and_its_size_are_in_its_block() {
        let t = HandleTable::new(3 * SIZED_SLOTS, true, false).unwrap();
        t.take_batch(0).unwrap();
        t.take_batch(0).unwrap();
        for i in t.indices() {
            let (slot, size) = t.get_sized(i).unwrap();
            let (slot, size) = (slot as *const Slot as usize, size.unwrap().0 as *const AtomicU16 as usize);
            let base = slot - 8 * (i as usize % WHOLE);
            assert_eq!(size - base, 3272 + 2 * (i as usize % WHOLE), "index {i}");
            // SAFETY: a slot handed out.
            assert_eq!(unsafe { t.size_cell(i) }.unwrap().0 as *const AtomicU16 as usize, size);
        }
        // Every size is a cell of its own, none inside a slot.
        let mut seen = std::collections::HashSet::new();
        for i in t.indices() {
            let (slot, size) = t.get_sized(i).unwrap();
            assert!(seen.insert(slot as *const Slot as usize));
            assert!(seen.insert(size.unwrap().0 as *const AtomicU16 as usize));
        }
    }

    /// An index past a block's slots (where, as a slot, it would be the sizes) is
    /// refused like one above the high-water mark.
    #[test]
    fn indices_past_a_blocks_slots_are_refused() {
        let t = HandleTable::new(4 * SIZED_SLOTS, true, true).unwrap();
        t.take_batch(1).unwrap();
        t.take_batch(2).unwrap();
        for b in 0..2u32 {
            let first = b * WHOLE as u32;
            assert!(t.get(first + 408).is_some() && t.get_sized(first + 408).is_some());
            for k in 409..WHOLE as u32 {
                assert!(t.get(first + k).is_none(), "index {} past block {b}'s slots", first + k);
                assert!(t.get_sized(first + k).is_none());
                assert!(!t.is_issued(first + k));
            }
        }
        assert!(t.indices().all(|i| i as usize % WHOLE < 409));
    }

    /// Two lanes taking blocks in turn never have slots or sizes in one 4 KiB page
    /// (past the first blocks, which come from the heap and are not page-aligned), so
    /// that one core's prefetches do not take the other's lines ([`BLOCK_SHIFT`]).
    #[test]
    fn blocks_of_two_lanes_share_no_page_of_slots_or_sizes() {
        // The segments of at most a page come from the heap: with sizes doubling, two
        // pages of words in all, whatever the page size.
        let on_heap = 2 * page_size() / 8;
        let checked = 12;
        for sizes in [true, false] {
            let t = HandleTable::new(on_heap + (checked + 2) * WHOLE, sizes, true).unwrap();
            let page = |p: usize| p / 4096;
            let mut owner_of_page = std::collections::HashMap::new();
            let (mut b, mut past_heap) = (0, 0);
            while past_heap < checked {
                let (owner, first) = (b % 2, t.take_batch(b % 2).unwrap() as usize);
                b += 1;
                if first < on_heap {
                    continue;
                }
                past_heap += 1;
                for i in first..first + t.batch() {
                    let (slot, size) = t.get_sized(i as u32).unwrap();
                    let mut at = vec![slot as *const Slot as usize];
                    at.extend(size.map(|s| s.0 as *const AtomicU16 as usize));
                    for a in at {
                        let o = *owner_of_page.entry(page(a)).or_insert(owner);
                        assert_eq!(o, owner, "slot {i} of lane {owner} or its size in a page of lane {o}'s");
                    }
                }
            }
            assert!(owner_of_page.len() >= checked);
        }
    }

    /// The largest table: its last index still fits a handle (index + 1 in 32 bits).
    #[test]
    fn the_largest_index_fits_a_handle() {
        for sizes in [true, false] {
            let t = HandleTable::new(usize::MAX / 2, sizes, false).unwrap();
            let last = t.capacity - 1 - (WHOLE - t.batch());
            assert!(last < u32::MAX as usize, "{last}");
            assert!(t.capacity <= 1 << 32 && t.capacity >= (1 << 32) - 2 * WHOLE, "{}", t.capacity);
        }
    }
}
