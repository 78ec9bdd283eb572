//! Segments: an array whose storage is taken as it grows, in segments whose sizes
//! double, so that a pool takes address space in proportion to what it holds and
//! still finds any element in a few instructions without a lock.
//!
//! Segment 0 holds elements `[0, 2^s)`, segment `k >= 1` holds `[2^(s+k-1), 2^(s+k))`:
//! an element's segment is the position of the highest bit of `i >> s`. Each segment
//! is placed wherever its memory was found; what is kept per segment is the address
//! element 0 would have if the whole array were laid out as that segment is (its
//! bias), so an element's address is one load and an add. Two elements adjacent by
//! index are adjacent in memory only inside one segment: whoever needs adjacency
//! (straddling objects) compares addresses.
//!
//! A segment of at most `heap_max` bytes comes from the heap, zeroed and whole, and
//! makes no mapping: a small pool's side table and handle table then cost no entry of
//! the process's mappings (`vm.max_map_count`, 65,530 by default, is what limits the
//! number of pools otherwise). A larger one is a [`Region`]: reserved without access
//! when its first element is needed, committed as used. When the OS refuses the
//! reservation and the process's address space is limited (`RLIMIT_AS`), halves of it
//! are tried down to the part needed now; the segment then grows in place, and where
//! that is refused too (the limit, or another mapping right after it) the elements
//! above are unavailable (`ENOMEM`) while every element already reached stays where
//! it is.
//!
//! Changes (commit, discard, release) are serialised by the owner (the frame lock,
//! the handle table's growth lock); reads of an address take no lock.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};

// Under helgrind, the lock that declares its ordering (`sync`): with parking_lot's own,
// helgrind sees the list read by `census` and changed by `commit` under a lock it does
// not know, and reports a race that is not one. Not loom's lock under loom: the models
// do not race segment growth, and its interleavings would only slow them.
#[cfg(zs_valgrind)]
use crate::sync::Mutex;
#[cfg(not(zs_valgrind))]
use parking_lot::Mutex;

use crate::frames::os::{page_size, Region};

/// Segments an array can have: enough for 2^32 elements.
const NSEG: usize = 33;

/// Alignment of heap segments: what malloc gives anyway (no aligned allocation, whose
/// split-off remainders would scatter small free blocks), enough for the elements
/// (atomics of at most 8 bytes).
const HEAP_ALIGN: usize = 16;

/// Where a segment's elements are.
enum Store {
    /// Not yet needed, or given back.
    None,
    /// On the heap, whole and zeroed.
    Heap(NonNull<u8>, Layout),
    /// A reservation whose first byte holds element `first`.
    Mapped { region: Region, first: usize },
}

/// log2 of the elements of segment 0: as many as the frames of one commit step of
/// the arena (a constant, so that finding a segment loads nothing but its bias).
const SHIFT: u32 = crate::frames::COMMIT_SHIFT;

/// An array of `capacity` elements of `elem` bytes in doubling segments.
pub struct Segments {
    elem: usize,
    heap_max: usize,
    capacity: usize,
    /// Per segment, the address element 0 would have (see the module comment); null
    /// while the segment has no storage. Set before any of its elements is handed to
    /// anyone and cleared only when none is referred to any more.
    bias: [AtomicPtr<u8>; NSEG],
    stores: Mutex<Vec<Store>>,
}

// SAFETY: the heap blocks and regions are owned by the array and reached only
// through raw pointers, whose synchronisation is the owning layer's; the array's own
// state is atomics and a mutex.
unsafe impl Send for Segments {}
// SAFETY: as for Send: shared access reads atomics, changes go through the mutex.
unsafe impl Sync for Segments {}

impl Segments {
    /// An array of `capacity` elements of `elem` bytes, with `2^SHIFT` elements in
    /// segment 0; segments of at most `heap_max` bytes come from the heap. No storage
    /// is taken yet.
    pub fn new(elem: usize, heap_max: usize, capacity: usize) -> Segments {
        debug_assert!(capacity <= 1 << 32 && elem.is_power_of_two());
        Segments {
            elem,
            heap_max,
            capacity,
            bias: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            stores: Mutex::new((0..NSEG).map(|_| Store::None).collect()),
        }
    }

    /// The segment of element `i`.
    #[inline]
    pub fn segment_of(&self, i: usize) -> usize {
        debug_assert!(i < self.capacity.max(1));
        // In 32 bits (indices are below 2^32): the result is then at most 32, which
        // the compiler knows, so indexing `bias` needs no bounds check.
        (u32::BITS - ((i as u32) >> SHIFT).leading_zeros()) as usize
    }

    /// The first element of segment `k`.
    fn start(&self, k: usize) -> usize {
        if k == 0 {
            0
        } else {
            1 << (SHIFT + k as u32 - 1)
        }
    }

    /// One past the last element of segment `k` (the array's end for the last one).
    fn end(&self, k: usize) -> usize {
        (1usize << (SHIFT + k as u32)).min(self.capacity)
    }

    /// Elements the array can hold.
    // Its callers are left out of loom builds.
    #[cfg_attr(loom, allow(dead_code))]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The address of byte `byte` of the array, which lies in element `i`
    /// (`byte / elem == i`). Computing it is safe; using it needs the element to be
    /// committed.
    #[inline]
    pub fn addr(&self, i: usize, byte: usize) -> *mut u8 {
        debug_assert_eq!(byte / self.elem, i);
        // Relaxed: the bias was stored before element `i` was handed to anyone (under
        // the owner's lock), and whoever asks for the element learned of it through
        // that lock or an Acquire that follows it.
        self.bias[self.segment_of(i)].load(Ordering::Relaxed).wrapping_add(byte)
    }

    /// [`addr`](Self::addr) with the segment of `i` known (`segment_of(i)`, which
    /// arrays of other elements but the same indices share).
    #[inline]
    // Its caller (the handle table's arrays) uses none under loom.
    #[cfg_attr(loom, allow(dead_code))]
    pub fn addr_in(&self, k: usize, i: usize, byte: usize) -> *mut u8 {
        debug_assert_eq!((byte / self.elem, k), (i, self.segment_of(i)));
        // Relaxed: as in `addr`.
        self.bias[k].load(Ordering::Relaxed).wrapping_add(byte)
    }

    /// Calls `f(k, a, b)` for each segment `k` that `[lo, hi)` reaches, with the part
    /// `[a, b)` of the range inside it.
    fn each(&self, lo: usize, hi: usize, mut f: impl FnMut(usize, usize, usize) -> Result<(), i32>) -> Result<(), i32> {
        let hi = hi.min(self.capacity);
        if lo >= hi {
            return Ok(());
        }
        for k in self.segment_of(lo)..=self.segment_of(hi - 1) {
            f(k, lo.max(self.start(k)), hi.min(self.end(k)))?;
        }
        Ok(())
    }

    /// Byte range, whole pages, of the elements `[a, b)` in a region whose first byte
    /// holds element `first`: the pages they cover entirely (`inner`) or touch.
    fn pages(&self, first: usize, a: usize, b: usize, inner: bool) -> (usize, usize) {
        let (lo, hi) = ((a - first) * self.elem, (b - first) * self.elem);
        let page = page_size();
        if inner {
            (lo.div_ceil(page) * page, hi / page * page)
        } else {
            (lo / page * page, hi.div_ceil(page) * page)
        }
    }

    /// Makes elements `[lo, hi)` readable and writable (zero on first use), taking
    /// their segments' storage where it is not there yet. On failure, what was
    /// committed stays committed.
    pub fn commit(&self, lo: usize, hi: usize) -> Result<(), i32> {
        let mut stores = self.stores.lock();
        self.each(lo, hi, |k, a, b| {
            if matches!(stores[k], Store::None) {
                stores[k] = self.take(k, a, b)?;
            }
            match &stores[k] {
                Store::Mapped { region, first } => {
                    if a < *first {
                        return Err(libc::ENOMEM);
                    }
                    let (from, to) = self.pages(*first, a, b, false);
                    let to = to.min(region.size());
                    region.restore_tail(to)?;
                    region.commit(from, to - from)
                }
                _ => Ok(()),
            }
        })
    }

    /// Storage for segment `k`, of which `[a, b)` is needed now.
    fn take(&self, k: usize, a: usize, b: usize) -> Result<Store, i32> {
        let (start, end) = (self.start(k), self.end(k));
        let bytes = (end - start) * self.elem;
        if bytes <= self.heap_max {
            let layout = Layout::from_size_align(bytes, HEAP_ALIGN).map_err(|_| libc::ENOMEM)?;
            // SAFETY: the layout has a non-zero size (a segment holds an element).
            let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).ok_or(libc::ENOMEM)?;
            // Relaxed: see `addr`.
            self.bias[k].store(p.as_ptr().wrapping_sub(start * self.elem), Ordering::Relaxed);
            return Ok(Store::Heap(p, layout));
        }
        // The reservation begins at the page holding `a` (a segment begins at the
        // array's start or at an element whose offset is a multiple of a page, unless
        // it is the first to be needed, mid-segment).
        let per_page = (page_size() / self.elem).max(1);
        let first = (a / per_page * per_page).max(start);
        let whole = (end - first) * self.elem;
        let need = (b - first) * self.elem;
        let mut want = whole;
        let region = loop {
            let r = if want == whole { Region::reserve(whole) } else { Region::reserve_prefix(whole, want) };
            match r {
                Ok(r) => break r,
                Err(e) if want <= need || !address_space_limited() => return Err(e),
                Err(_) => want = (want / 2).max(need),
            }
        };
        // Relaxed: see `addr`.
        self.bias[k].store(region.base().wrapping_sub(first * self.elem), Ordering::Relaxed);
        Ok(Store::Mapped { region, first })
    }

    /// Gives the pages wholly inside elements `[lo, hi)` back to the OS (they read as
    /// zero when next used). Heap segments keep theirs: the owner gives back only
    /// elements it has zeroed, and a heap segment is small.
    pub fn discard(&self, lo: usize, hi: usize) {
        self.each_mapped_page(lo, hi, Region::discard);
    }

    /// Faults in the pages wholly inside elements `[lo, hi)` (see
    /// [`Region::populate`]), which must be committed. Heap segments are left as
    /// they are: they were allocated zeroed and whole.
    pub fn populate(&self, lo: usize, hi: usize) {
        self.each_mapped_page(lo, hi, Region::populate);
    }

    /// Gives back the memory and commit charge of the pages wholly inside elements
    /// `[lo, hi)` and makes them inaccessible; they stay reserved.
    pub fn decommit(&self, lo: usize, hi: usize) {
        self.each_mapped_page(lo, hi, Region::decommit);
    }

    /// Calls `f(region, offset, len)` for the mapped pages wholly inside elements
    /// `[lo, hi)`, one call per reserved segment.
    fn each_mapped_page(&self, lo: usize, hi: usize, f: impl Fn(&Region, usize, usize)) {
        let stores = self.stores.lock();
        let _ = self.each(lo, hi, |k, a, b| {
            if let Store::Mapped { region, first } = &stores[k] {
                let (from, to) = self.pages(*first, a.max(*first), b.max(*first), true);
                let to = to.min(region.mapped());
                if to > from {
                    f(region, from, to - from);
                }
            }
            Ok(())
        });
    }

    /// Unmaps the address space of elements from `from` on (whole pages; heap
    /// segments stay): segments wholly above are given up. The one `from` falls in
    /// keeps its whole reservation, so that it can always grow back (a segment in use
    /// cannot move, and another mapping could take a released tail); only when the
    /// process's address space is limited (RLIMIT_AS), where that space is what
    /// runs out, is its tail given up too. Nothing may refer to those elements any
    /// more.
    pub fn release(&self, from: usize) {
        let limited = address_space_limited();
        let mut stores = self.stores.lock();
        for k in self.segment_of(from.min(self.capacity.max(1) - 1))..NSEG {
            let whole = match &stores[k] {
                Store::Mapped { region, first } => {
                    if from <= *first {
                        true
                    } else if !limited {
                        false
                    } else {
                        region.release_tail(self.pages(*first, from, from, false).1);
                        false
                    }
                }
                _ => false,
            };
            if whole {
                // Relaxed: no one refers to these elements (the caller's promise).
                self.bias[k].store(std::ptr::null_mut(), Ordering::Relaxed);
                stores[k] = Store::None;
            }
        }
    }

    /// Bytes of storage the array holds now: its heap segments and its mapped
    /// address space.
    pub fn mapped_bytes(&self) -> usize {
        let stores = self.stores.lock();
        stores
            .iter()
            .map(|s| match s {
                Store::None => 0,
                Store::Heap(_, layout) => layout.size(),
                Store::Mapped { region, .. } => region.mapped(),
            })
            .sum()
    }

    /// Mappings the array's storage takes at most now: a reservation partly
    /// committed is two.
    #[cfg(test)]
    pub fn regions(&self) -> usize {
        self.stores.lock().iter().filter(|s| matches!(s, Store::Mapped { .. })).count()
    }
}

/// Whether the process's address space is limited (RLIMIT_AS): only then may a
/// smaller reservation succeed where a larger one failed.
fn address_space_limited() -> bool {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) == 0 && rl.rlim_cur != libc::RLIM_INFINITY }
}

impl Drop for Segments {
    fn drop(&mut self) {
        for s in self.stores.get_mut().drain(..) {
            if let Store::Heap(p, layout) = s {
                // SAFETY: allocated in `take` with this layout, freed once (drained).
                unsafe { std::alloc::dealloc(p.as_ptr(), layout) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_double_and_are_found_by_the_high_bits() {
        let s = Segments::new(8, 0, 1 << 20);
        assert_eq!((s.segment_of(0), s.segment_of(511), s.segment_of(512)), (0, 0, 1));
        assert_eq!((s.segment_of(1023), s.segment_of(1024), s.segment_of(2047)), (1, 2, 2));
        for k in 1..10 {
            assert_eq!(s.end(k) - s.start(k), 512 << (k - 1));
            assert_eq!(s.segment_of(s.start(k)), k);
            assert_eq!(s.segment_of(s.end(k) - 1), k);
        }
    }

    #[test]
    fn elements_keep_their_values_across_segments_and_release() {
        let s = Segments::new(8, 4096, 1 << 16);
        s.commit(0, 3000).unwrap();
        assert_eq!(s.regions(), 2, "segment 0 and 1 on the heap, 2 and 3 mapped");
        for i in 0..3000 {
            // SAFETY: committed, aligned, ours.
            unsafe { (s.addr(i, i * 8) as *mut u64).write(i as u64) };
        }
        for i in 0..3000 {
            // SAFETY: as above.
            assert_eq!(unsafe { (s.addr(i, i * 8) as *const u64).read() }, i as u64);
        }
        let before = s.mapped_bytes();
        s.release(1024);
        assert_eq!(s.regions(), 0, "segments 2 and 3 given up");
        assert_eq!(s.mapped_bytes(), before - 3 * 1024 * 8);
        // SAFETY: segment 1 is on the heap and stays.
        assert_eq!(unsafe { (s.addr(1000, 8000) as *const u64).read() }, 1000);
        s.commit(1024, 2048).unwrap();
        // SAFETY: committed again: a fresh segment reads zero.
        assert_eq!(unsafe { (s.addr(1500, 12000) as *const u64).read() }, 0);
    }
}
