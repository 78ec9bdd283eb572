//! The handle table: the slots handles name, and beside them, where the layout wants
//! it, each object's size and, per batch of slots, the class that took it.
//!
//! The table is an array of slots in segments whose sizes double
//! (`frames/segments.rs`), taken as it grows: the first ones on the heap, so a small
//! pool's table makes no mapping. Slots are taken in
//! batches by a class (under a small growth lock that nothing nests in) and then live
//! in that class's free-slot list, linked through the slots themselves, so malloc and
//! free touch only their class's lock.
//!
//! A slot never leaves the class that took its batch: malloc takes slots from its
//! class's list, an object stays in its class (compaction and migration move it
//! between that class's zspages), and its free links the slot back into the list of
//! the object's class. So the class of a slot's batch is the class of every object
//! the slot ever holds, and where the table keeps it ([`HandleTable::owner`]) a free
//! learns its object's class from the handle alone, without the side table and the
//! zspage descriptor (`pool/deferred.rs`). The checker holds every class to it.

use crate::frames::os::page_size;
use crate::handle::slot::Slot;
use crate::sync::{hg, AtomicU16, AtomicU8, AtomicUsize, Mutex, Ordering};

/// Slots taken from the table at once by a class whose free list is empty: 512, 4 KiB
/// of slots, so that two lanes' slots never share a 4 KiB page of the table.
///
/// A processor's prefetchers bring in lines near the ones a core reads, within the
/// same 4 KiB page. With batches of 64 (512 bytes), the batches of two lanes filling at
/// once alternate in the table's pages, and each core's prefetches took the other
/// lane's slot lines into its cache, to be taken back by the next write of their owner:
/// two threads of private malloc+free pairs in one pool ran at 1.4 times one thread's
/// speed where two pools gave 1.9, and a sequential fill of the same live sets 1.85
/// (docs/hot-paths.md, "Slot batches of a page"). The cost is at most 511 slots a lane
/// taken and not yet used (5 KiB of slots and sizes), and a byte of owners per 512
/// slots instead of per 64. Under loom 64, the models' whole table.
pub const SLOT_BATCH: usize = if cfg!(loom) { 64 } else { 512 };

/// The handle table: `used <= capacity`, `used` is a whole number of batches, and
/// every slot below `used` is committed (its size too, where sizes are kept).
///
/// A table may keep, beside each slot, its object's size (16 bits, in a second
/// region grown with the first): the dense layout's readers learn an object's length
/// there, as the kernel layout's learn it from the class. It may also keep the class
/// of each batch (a byte per [`SLOT_BATCH`] slots, a third region): the dense
/// layout's frees find their lane there.
pub struct HandleTable {
    region: Cells<Slot>,
    sizes: Option<Cells<AtomicU16>>,
    /// Per batch, the class that took it (below 256: the dense layout's lanes).
    owners: Option<Cells<AtomicU8>>,
    capacity: usize,
    /// Slots below this index have been handed to a class (growth lock).
    grow: Mutex<usize>,
    /// Mirror of the high-water mark for lock-free bounds checks.
    used: AtomicUsize,
}

impl HandleTable {
    /// Reserves a table of `capacity` slots (at most 2^32 - 1), with sizes beside
    /// them if `with_sizes` and the class of each batch if `with_owners`.
    pub fn new(capacity: usize, with_sizes: bool, with_owners: bool) -> Result<HandleTable, i32> {
        let capacity = capacity.clamp(SLOT_BATCH, if cfg!(loom) { LOOM_SLOTS } else { u32::MAX as usize - 1 });
        let region = Cells::reserve(capacity)?;
        Ok(HandleTable {
            region,
            sizes: if with_sizes { Some(Cells::reserve(capacity)?) } else { None },
            owners: if with_owners { Some(Cells::reserve(capacity.div_ceil(SLOT_BATCH))?) } else { None },
            capacity,
            grow: Mutex::new(0),
            used: AtomicUsize::new(0),
        })
    }

    /// The slot at `index`, if it was ever handed out.
    #[inline]
    pub fn get(&self, index: u32) -> Option<&Slot> {
        // Acquire: pairs with the Release in `take_batch`, so a slot below the mark
        // is committed.
        let used = self.used.load(Ordering::Acquire);
        hg::happens_after(&self.used);
        if (index as usize) < used {
            // SAFETY: below the high-water mark, so committed, zero-initialised and
            // aligned; slots are only accessed atomically.
            Some(unsafe { self.slot_unchecked(index) })
        } else {
            None
        }
    }

    /// The slot at `index` and the cell of its size (None where the table records no
    /// sizes), if the slot was ever handed out: [`get`](Self::get) and
    /// [`size_cell`](Self::size_cell) with one look-up of the segment for both (the
    /// two arrays' segments hold the same indices).
    #[inline(always)]
    pub fn get_sized(&self, index: u32) -> Option<(&Slot, Option<SizeCell<'_>>)> {
        // Acquire: as in `get`.
        let used = self.used.load(Ordering::Acquire);
        hg::happens_after(&self.used);
        if (index as usize) >= used {
            return None;
        }
        let k = self.region.segment_of(index as usize);
        // SAFETY: below the high-water mark, so the slot and its size are committed
        // (`take_batch`); `k` is the segment of `index`, in either array. Slots are
        // only accessed atomically.
        unsafe {
            let size = self.sizes.as_ref().map(|sizes| SizeCell(sizes.get_in(k, index as usize)));
            Some((self.region.get_in(k, index as usize), size))
        }
    }

    /// # Safety
    /// `index` must be below the high-water mark.
    #[inline]
    pub unsafe fn slot_unchecked(&self, index: u32) -> &Slot {
        // SAFETY: the caller guarantees the slot is committed.
        unsafe { self.region.get(index as usize) }
    }

    /// Hands out `SLOT_BATCH` never-used slots to class `owner` (below 256 where the
    /// table keeps owners): returns the first index.
    pub fn take_batch(&self, owner: usize) -> Result<u32, i32> {
        let mut top = self.grow.lock();
        if *top + SLOT_BATCH > self.capacity {
            return Err(libc::ENOMEM);
        }
        self.region.commit(*top, *top + SLOT_BATCH)?;
        // Slot words are only ever accessed atomically. (A batch lies in one segment:
        // segments hold multiples of a batch.)
        // SAFETY: committed just above.
        hg::untracked(unsafe { self.region.get(*top) } as *const Slot as *const u8, SLOT_BATCH * 8);
        if let Some(sizes) = &self.sizes {
            sizes.commit(*top, *top + SLOT_BATCH)?;
        }
        if let Some(owners) = &self.owners {
            let batch = *top / SLOT_BATCH;
            owners.commit(batch, batch + 1)?;
            // SAFETY: committed just above.
            let cell = unsafe { owners.get(batch) };
            // Relaxed: published with the batch by the Release store of `used` below;
            // never written again.
            cell.store(u8::try_from(owner).expect("a class that keeps owners is below 256"), Ordering::Relaxed);
        }
        let first = *top as u32;
        *top += SLOT_BATCH;
        debug_assert!(*top <= self.capacity && *top % SLOT_BATCH == 0);
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

    /// Slots handed out so far (every index below is a valid `get`).
    pub fn used(&self) -> usize {
        let used = self.used.load(Ordering::Acquire);
        hg::happens_after(&self.used);
        used
    }

    /// Bytes of metadata the table holds (its committed slots, sizes and owners).
    pub fn bytes(&self) -> usize {
        // Whole pages of the system, as they are committed: 8 bytes a slot, 2 a size.
        let pages = |bytes: usize| bytes.div_ceil(page_size()) * page_size();
        let used = self.used();
        let sizes = if self.sizes.is_some() { pages(used * 2) } else { 0 };
        let owners = match &self.owners {
            // A byte a batch, in segments whose sizes double from one commit step's
            // elements: those of at most a page come from the heap, taken whole (the
            // first `2 * page` bytes), the others are committed in pages.
            Some(_) => match used / SLOT_BATCH {
                0 => 0,
                n if n <= 2 * page_size() => n.next_power_of_two().max(1 << crate::frames::COMMIT_SHIFT),
                n => 2 * page_size() + pages(n - 2 * page_size()),
            },
            None => 0,
        };
        pages(used * 8) + sizes + owners
    }

    /// The class that took slot `index`'s batch, or None if the table keeps no
    /// owners.
    ///
    /// # Safety
    /// `index` is below the high-water mark.
    #[inline(always)]
    pub unsafe fn owner(&self, index: u32) -> Option<usize> {
        let owners = self.owners.as_ref()?;
        // SAFETY: the caller passes an index below the high-water mark, whose batch's
        // owner is committed with it (`take_batch`).
        let cell = unsafe { owners.get(index as usize / SLOT_BATCH) };
        // Relaxed: written before the high-water mark that the caller's index is below
        // was published (Release), which the caller loaded (Acquire) or learned of
        // under a lock; never written again.
        Some(cell.load(Ordering::Relaxed) as usize)
    }

    /// Sets the owner of slot `index`'s batch: for the checker's tests, to break the
    /// invariant on purpose.
    ///
    /// # Safety
    /// `index` is below the high-water mark.
    #[cfg(test)]
    pub(crate) unsafe fn testonly_set_owner(&self, index: u32, owner: u8) {
        if let Some(owners) = &self.owners {
            // SAFETY: as in `owner`.
            unsafe { owners.get(index as usize / SLOT_BATCH) }.store(owner, Ordering::Relaxed);
        }
    }

    /// The size recorded beside slot `index`, or None if the table records no sizes.
    ///
    /// # Safety
    /// `index` is below the high-water mark.
    #[inline]
    pub unsafe fn size(&self, index: u32) -> Option<usize> {
        // SAFETY: the caller passes an index below the high-water mark.
        unsafe { self.size_cell(index) }.map(SizeCell::get)
    }

    /// The cell of the size recorded beside slot `index`, or None if the table
    /// records no sizes: for a reader that reads it more than once.
    ///
    /// # Safety
    /// `index` is below the high-water mark.
    #[inline]
    pub unsafe fn size_cell(&self, index: u32) -> Option<SizeCell<'_>> {
        let sizes = self.sizes.as_ref()?;
        // SAFETY: the caller passes an index below the high-water mark, whose size is
        // committed with its slot (`take_batch`).
        Some(SizeCell(unsafe { sizes.get(index as usize) }))
    }

    /// Records the size of the object slot `index` is about to hold (1..=65536),
    /// before the slot is published; nothing if the table records no sizes.
    ///
    /// # Safety
    /// `index` is below the high-water mark.
    #[inline]
    pub unsafe fn set_size(&self, index: u32, size: usize) {
        if let Some(sizes) = &self.sizes {
            // SAFETY: `Cells::get` asks that entry `index` be committed: it is below
            // the high-water mark (the precondition), and a size is committed with its
            // slot (`take_batch`).
            let cell = unsafe { sizes.get(index as usize) };
            // Relaxed: see `size`.
            cell.store(size as u16, Ordering::Relaxed)
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

/// Slots a table holds under loom: a model uses a few objects.
const LOOM_SLOTS: usize = SLOT_BATCH;

/// An entry of a table array that reads as its zero value in a fresh page.
///
/// # Safety
/// Every bit pattern of all zeros is a valid `Self`, equal to `zero()`.
unsafe trait Zeroed {
    /// The value (made explicitly where entries are not raw memory: under loom).
    #[cfg(loom)]
    fn zero() -> Self;
}

// SAFETY: a transparent AtomicU64 (outside loom), valid for any bits.
unsafe impl Zeroed for Slot {
    #[cfg(loom)]
    fn zero() -> Slot {
        Slot(crate::sync::AtomicU64::new(0))
    }
}

// SAFETY: an AtomicU16 is valid for any bits.
unsafe impl Zeroed for AtomicU16 {
    #[cfg(loom)]
    fn zero() -> AtomicU16 {
        AtomicU16::new(0)
    }
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

    /// The segment of entry `i`: the same in every array of entries, whatever their
    /// size.
    #[inline(always)]
    fn segment_of(&self, i: usize) -> usize {
        #[cfg(not(loom))]
        return self.segments.segment_of(i);
        #[cfg(loom)]
        return i;
    }

    /// [`get`](Self::get) with `k`, the segment of entry `i`, known.
    ///
    /// # Safety
    /// Entry `i` has been committed; `k` is [`segment_of`](Self::segment_of)`(i)`.
    #[inline(always)]
    unsafe fn get_in(&self, k: usize, i: usize) -> &T {
        #[cfg(not(loom))]
        // SAFETY: as in `get`, `k` being the segment of `i` (the precondition).
        return unsafe { &*(self.segments.addr_in(k, i, i * std::mem::size_of::<T>()) as *const T) };
        #[cfg(loom)]
        {
            let _ = k;
            return &self.cells[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_grows_in_batches() {
        let t = HandleTable::new(4 * SLOT_BATCH, true, true).unwrap();
        assert!(t.get(0).is_none());
        assert_eq!(t.take_batch(3).unwrap(), 0);
        assert_eq!(t.take_batch(5).unwrap(), SLOT_BATCH as u32);
        assert!(t.get(2 * SLOT_BATCH as u32 - 1).is_some());
        assert!(t.get(2 * SLOT_BATCH as u32).is_none());
        // SAFETY: below the high-water mark.
        unsafe {
            t.set_size(5, 4096);
            assert_eq!(t.size(5), Some(4096));
            t.set_size(6, 65536);
            assert_eq!(t.size(6), Some(65536), "the largest object's size wraps in 16 bits");
            assert_eq!(t.owner(0), Some(3));
            assert_eq!(t.owner(SLOT_BATCH as u32 - 1), Some(3), "a batch has one owner");
            assert_eq!(t.owner(SLOT_BATCH as u32), Some(5));
            assert_eq!(t.owner(2 * SLOT_BATCH as u32 - 1), Some(5));
        }
        let owners = 1 << crate::frames::COMMIT_SHIFT;
        let pages = |bytes: usize| bytes.div_ceil(page_size()) * page_size();
        let (slots, sizes) = (pages(2 * SLOT_BATCH * 8), pages(2 * SLOT_BATCH * 2));
        assert_eq!(t.bytes(), slots + sizes + owners, "pages of slots and of sizes, a heap segment of owners");
        let t = HandleTable::new(4 * SLOT_BATCH, false, false).unwrap();
        t.take_batch(0).unwrap();
        // SAFETY: below the high-water mark.
        unsafe {
            t.set_size(5, 4096);
            assert_eq!(t.size(5), None, "a table without sizes records none");
            assert_eq!(t.owner(5), None, "a table without owners records none");
        }
        assert_eq!(t.bytes(), pages(SLOT_BATCH * 8));
    }

    /// Two lanes taking batches in turn never have slots in one 4 KiB page (past the
    /// first segments, which come from the heap), so that one core's prefetches do not
    /// take the other's lines ([`SLOT_BATCH`]).
    #[test]
    fn batches_of_two_lanes_share_no_page_of_slots() {
        // The segments of at most a page come from the heap: with sizes doubling, two
        // pages of slots in all, whatever the page size.
        let on_heap = 2 * page_size() / std::mem::size_of::<Slot>();
        let checked = 12;
        let t = HandleTable::new(on_heap + (checked + 2) * SLOT_BATCH, false, true).unwrap();
        let page = |i: usize| t.get(i as u32).unwrap() as *const Slot as usize / 4096;
        let mut owner_of_page = std::collections::HashMap::new();
        let (mut b, mut past_heap) = (0, 0);
        while past_heap < checked {
            let (owner, first) = (b % 2, t.take_batch(b % 2).unwrap() as usize);
            b += 1;
            if first < on_heap {
                continue;
            }
            past_heap += 1;
            for i in first..first + SLOT_BATCH {
                let o = *owner_of_page.entry(page(i)).or_insert(owner);
                assert_eq!(o, owner, "slot {i} of lane {owner} in a page of lane {o}'s");
            }
        }
        assert!(owner_of_page.len() >= checked);
    }
}
