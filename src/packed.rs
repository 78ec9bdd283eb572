//! The dense layout's zspages: objects of every size packed end to end.
//!
//! The kernel's layout gives each object a slot of its class's size, and each class
//! its own zspages. Three costs follow, and on real compressed-page traces they are
//! most of the kernel layout's waste: the gap between an object and its class's size,
//! the tail a chain of frames leaves when it does not divide by the class size, and
//! the partly filled last zspage every class keeps. The dense layout has none of them.
//! A dense zspage takes objects of any size, each taking exactly its size, laid end
//! to end from the start of the chain (an object may straddle two frames, as in the
//! kernel's layout). Small objects fill what large ones leave at the end of a
//! zspage. Objects are not aligned: compressed data needs no alignment, and every
//! byte of padding would be memory the pool holds for nothing.
//!
//! The descriptor keeps the zspage's contents as [`Extents`]: one 8-byte entry per
//! object and per hole, in address order. A freed object becomes a hole, merged with
//! its neighbours; a hole at the end gives its bytes back to the unused tail. malloc
//! fills the tail or, when the tail is too short, the first hole large enough. Holes
//! too small for the objects that come are what compaction takes back: it moves the
//! objects of zspages with free space into others and releases the emptied ones.
//!
//! Invariants (checked by [`Extents::check`], run by `Pool::check`):
//! - the entries cover `0..end` exactly, in address order, with no gap or overlap;
//! - no two holes are neighbours and the last entry is an object;
//! - every length is positive, an object's at most 4096; `end <= cap`;
//! - the byte and object counts and the largest hole match the entries.

/// The link of a hole.
pub const HOLE: u32 = u32::MAX;

/// Width of a placement bucket, in bytes of a zspage's longest free run.
pub const BUCKET_BYTES: usize = 64;
/// The bucket of zspages with a free run of 4096 bytes or more (any object fits).
pub const TOP_BUCKET: usize = crate::os::PAGE_SIZE / BUCKET_BYTES;
/// The list of zspages compaction is emptying: malloc places nothing there.
pub const DRAIN: usize = TOP_BUCKET + 1;
/// Lists a dense lane keeps: the buckets and the drain list.
pub const NR_LISTS: usize = DRAIN + 1;

/// The placement bucket of a zspage whose longest free run is `extent` bytes: every
/// zspage in bucket `b` has a run of at least `b * BUCKET_BYTES` bytes.
#[inline]
pub fn bucket(extent: usize) -> usize {
    (extent / BUCKET_BYTES).min(TOP_BUCKET)
}

/// The first bucket whose every zspage fits `len` bytes.
#[inline]
pub fn bucket_for(len: usize) -> usize {
    len.div_ceil(BUCKET_BYTES)
}

/// One object or hole: where it starts and, for an object, its handle slot. Its
/// length is where the next one starts (or the end of the used bytes), so an entry
/// is 6 bytes.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, packed(2))]
struct Entry {
    /// An object's handle slot index, or [`HOLE`].
    link: u32,
    /// Byte offset in the chain (an object or hole starts below 65536).
    off: u16,
}

/// An object of a dense zspage, as the entries describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Obj {
    /// Its handle slot index.
    pub link: u32,
    /// Byte offset in the chain.
    pub off: usize,
    /// Bytes it takes.
    pub len: usize,
}

/// The contents of a dense zspage (see the module comment).
///
/// The entries live in a boxed slice of which the first `n` are in use: 16 bytes of
/// descriptor where a `Vec` takes 24, which keeps the descriptor at 128 bytes.
#[derive(Debug)]
pub struct Extents {
    ents: Box<[Entry]>,
    n: u16,
    /// Frames of the chain.
    frames: u8,
    /// The largest hole, in bytes (0: none).
    largest_hole: u16,
    /// Bytes in use from the start of the chain: the tail starts here.
    end: u32,
    /// Bytes of objects.
    used: u32,
}

impl Extents {
    /// An empty zspage of `frames` frames.
    pub fn new(frames: usize) -> Extents {
        debug_assert!((1..=16).contains(&frames));
        Extents { ents: Box::new([]), n: 0, frames: frames as u8, largest_hole: 0, end: 0, used: 0 }
    }

    /// Whether no object is left.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes of the chain.
    #[inline]
    pub fn cap(&self) -> usize {
        self.frames as usize * crate::os::PAGE_SIZE
    }

    /// Bytes taken by objects.
    #[inline]
    pub fn used(&self) -> usize {
        self.used as usize
    }

    /// The longest run of free bytes: the largest hole or the tail.
    #[inline]
    pub fn extent(&self) -> usize {
        (self.largest_hole as usize).max(self.cap() - self.end as usize)
    }

    /// Entries in use (objects and holes).
    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// Bytes of metadata the entries hold (their allocation).
    pub fn meta_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.ents)
    }

    #[inline]
    fn at(&self, i: usize) -> Entry {
        self.ents[i]
    }

    #[inline]
    fn off_at(&self, i: usize) -> usize {
        self.ents[i].off as usize
    }

    /// Where entry `i` ends: the next one's start, or the end of the used bytes.
    #[inline]
    fn end_at(&self, i: usize) -> usize {
        if i + 1 < self.len() {
            self.off_at(i + 1)
        } else {
            self.end as usize
        }
    }

    #[inline]
    fn is_hole(&self, i: usize) -> bool {
        self.at(i).link == HOLE
    }

    fn obj(&self, i: usize) -> Obj {
        let off = self.off_at(i);
        Obj { link: self.at(i).link, off, len: self.end_at(i) - off }
    }

    /// The objects, in address order.
    pub fn objects(&self) -> impl Iterator<Item = Obj> + '_ {
        (0..self.len()).filter(|&i| !self.is_hole(i)).map(|i| self.obj(i))
    }

    /// Places an object of `len` bytes for handle slot `link`: in the tail if it
    /// fits there, else in the first hole that fits. Returns its offset, or None if
    /// nothing fits.
    pub fn place(&mut self, len: usize, link: u32) -> Option<usize> {
        debug_assert!(link != HOLE && len > 0 && len <= crate::os::PAGE_SIZE);
        let end = self.end as usize;
        if self.cap() - end >= len {
            self.insert(self.len(), Entry { link, off: end as u16 });
            self.end += len as u32;
            self.used += len as u32;
            return Some(end);
        }
        if (self.largest_hole as usize) < len {
            return None;
        }
        let i = (0..self.len()).find(|&i| self.is_hole(i) && self.end_at(i) - self.off_at(i) >= len)?;
        let (off, hole) = (self.off_at(i), self.end_at(i) - self.off_at(i));
        self.ents[i].link = link;
        if hole > len {
            self.insert(i + 1, Entry { link: HOLE, off: (off + len) as u16 });
        }
        self.used += len as u32;
        if hole == self.largest_hole as usize {
            self.largest_hole = self.scan_largest_hole();
        }
        Some(off)
    }

    /// The position of the object that starts at byte `off`.
    #[inline]
    pub fn find(&self, off: usize) -> Option<usize> {
        let ents = &self.ents[..self.len()];
        let i = ents.binary_search_by_key(&(off as u16), |e| e.off).ok()?;
        (!self.is_hole(i)).then_some(i)
    }

    /// Frees the object at position `i` (from [`find`](Self::find)): it becomes a
    /// hole, merged with neighbouring holes, or part of the tail. Returns it.
    pub fn remove(&mut self, i: usize) -> Obj {
        let o = self.obj(i);
        debug_assert!(o.link != HOLE);
        self.used -= o.len as u32;
        let last = if i + 1 < self.len() && self.is_hole(i + 1) { i + 1 } else { i };
        let first = if i > 0 && self.is_hole(i - 1) { i - 1 } else { i };
        let (off, end) = (self.off_at(first), self.end_at(last));
        let merged_largest =
            (first..=last).any(|j| j != i && self.end_at(j) - self.off_at(j) == self.largest_hole as usize);
        if last + 1 == self.len() {
            // The end of the used bytes: the run joins the tail.
            self.n = first as u16;
            self.end = off as u32;
            if merged_largest {
                self.largest_hole = self.scan_largest_hole();
            }
        } else {
            self.ents[first] = Entry { link: HOLE, off: off as u16 };
            self.remove_range(first + 1, last + 1);
            // Any hole merged here was smaller than the run it joined.
            self.largest_hole = self.largest_hole.max((end - off) as u16);
        }
        if self.ents.len() > 16 && self.len() * 2 < self.ents.len() {
            self.resize(self.len() + self.len() / 4 + 4);
        }
        o
    }

    /// The objects that overlap bytes `lo..hi` of the chain.
    pub fn overlapping(&self, lo: usize, hi: usize) -> impl Iterator<Item = Obj> + '_ {
        // The first entry ending after `lo`.
        let start = self.ents[..self.len()].partition_point(|e| e.off as usize <= lo).saturating_sub(1);
        (start..self.len())
            .take_while(move |&i| self.off_at(i) < hi)
            .filter(move |&i| !self.is_hole(i) && self.end_at(i) > lo)
            .map(|i| self.obj(i))
    }

    /// Inserts at position `at`, growing the entries by a quarter at a time: they are
    /// metadata, and doubling would leave a third of them unused on average.
    fn insert(&mut self, at: usize, e: Entry) {
        let n = self.len();
        if n == self.ents.len() {
            self.resize(n + (n / 4).max(4));
        }
        self.ents.copy_within(at..n, at + 1);
        self.ents[at] = e;
        self.n += 1;
    }

    /// Drops entries `from..to`.
    fn remove_range(&mut self, from: usize, to: usize) {
        let n = self.len();
        self.ents.copy_within(to..n, from);
        self.n -= (to - from) as u16;
    }

    /// Reallocates the entries to hold `cap`.
    fn resize(&mut self, cap: usize) {
        let mut ents = vec![Entry::default(); cap].into_boxed_slice();
        ents[..self.len()].copy_from_slice(&self.ents[..self.len()]);
        self.ents = ents;
    }

    fn scan_largest_hole(&self) -> u16 {
        (0..self.len()).filter(|&i| self.is_hole(i)).map(|i| self.end_at(i) - self.off_at(i)).max().unwrap_or(0) as u16
    }

    /// Checks the invariants of the module comment.
    pub fn check(&self) -> Result<(), String> {
        let (mut used, mut largest) = (0usize, 0usize);
        for i in 0..self.len() {
            let want = if i == 0 { 0 } else { self.end_at(i - 1) };
            if self.off_at(i) != want || (i > 0 && self.off_at(i) <= self.off_at(i - 1)) {
                return Err(format!("entry {i} at {} where {want} was expected", self.off_at(i)));
            }
            let len = self.end_at(i) - self.off_at(i);
            if len == 0 {
                return Err(format!("entry {i} is {len} bytes"));
            }
            if self.is_hole(i) {
                if i > 0 && self.is_hole(i - 1) {
                    return Err(format!("holes {} and {i} are neighbours", i - 1));
                }
                if i + 1 == self.len() {
                    return Err("the last entry is a hole".into());
                }
                largest = largest.max(len);
            } else {
                if len > crate::os::PAGE_SIZE {
                    return Err(format!("object {i} is {len} bytes"));
                }
                used += len;
            }
        }
        if self.end as usize > self.cap() || (self.is_empty() && self.end != 0) {
            return Err(format!("end {} in a chain of {}", self.end, self.cap()));
        }
        if used != self.used as usize || largest != self.largest_hole as usize {
            return Err(format!(
                "used {} / largest hole {} recorded, {used} / {largest} found",
                self.used, self.largest_hole
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fills_tail_then_holes() {
        let mut x = Extents::new(1);
        assert_eq!(x.place(1000, 1), Some(0));
        assert_eq!(x.place(2000, 2), Some(1000));
        assert_eq!(x.place(1000, 3), Some(3000));
        assert_eq!(x.extent(), 96);
        assert_eq!(x.place(100, 4), None, "neither the tail nor a hole fits");
        x.remove(x.find(1000).unwrap());
        assert_eq!(x.extent(), 2000);
        assert_eq!(x.place(90, 5), Some(4000), "the tail first");
        assert_eq!(x.place(7, 6), Some(1000), "then the first hole that fits");
        assert_eq!(x.len(), 5, "the rest of the hole stays a hole");
        assert_eq!(x.find(1007), None, "holes are not objects");
        assert_eq!(x.extent(), 1993);
        x.check().unwrap();
    }

    #[test]
    fn holes_merge_and_join_the_tail() {
        let mut x = Extents::new(1);
        for k in 0..5 {
            assert_eq!(x.place(32, k), Some(32 * k as usize));
        }
        x.remove(x.find(32).unwrap());
        x.remove(x.find(96).unwrap());
        x.remove(x.find(64).unwrap());
        assert_eq!(x.len(), 3, "three neighbouring frees make one hole");
        assert_eq!(x.extent(), 4096 - 160);
        x.remove(x.find(128).unwrap());
        assert_eq!(x.len(), 1, "the hole before the last object joins the tail with it");
        assert_eq!(x.used(), 32);
        x.remove(x.find(0).unwrap());
        assert!(x.is_empty());
        x.check().unwrap();
    }

    #[test]
    fn overlapping_objects() {
        let mut x = Extents::new(2);
        for k in 0..4 {
            x.place(1600, k).unwrap();
        }
        x.remove(x.find(1600).unwrap());
        let second: Vec<u32> = x.overlapping(4096, 8192).map(|e| e.link).collect();
        assert_eq!(second, vec![2, 3], "object 2 straddles into the second frame");
        let first: Vec<u32> = x.overlapping(0, 4096).map(|e| e.link).collect();
        assert_eq!(first, vec![0, 2], "the hole is not listed");
    }

    proptest! {
        /// Random places and removes against a byte map of the chain.
        #[test]
        fn matches_a_byte_map(ops in proptest::collection::vec((any::<bool>(), 1usize..600, any::<prop::sample::Index>()), 1..300)) {
            let cap = 4 * 4096;
            let mut x = Extents::new(4);
            let mut owner = vec![HOLE; cap];
            let mut live: Vec<(u32, usize)> = Vec::new();
            let mut next = 0u32;
            for (alloc, size, pick) in ops {
                if alloc || live.is_empty() {
                    let len = size;
                    let fits = x.extent() >= len;
                    match x.place(len, next) {
                        Some(off) => {
                            prop_assert!(off + len <= cap);
                            prop_assert!(owner[off..off + len].iter().all(|&o| o == HOLE), "placed over a live object");
                            owner[off..off + len].fill(next);
                            live.push((next, off));
                            next += 1;
                        }
                        None => prop_assert!(!fits, "refused although the extent fits"),
                    }
                } else {
                    let (link, off) = live.swap_remove(pick.index(live.len()));
                    let i = x.find(off).unwrap();
                    let e = x.remove(i);
                    prop_assert_eq!((e.link, e.off), (link, off));
                    owner[off..off + e.len].fill(HOLE);
                }
                x.check().map_err(TestCaseError::fail)?;
                prop_assert_eq!(x.used(), owner.iter().filter(|&&o| o != HOLE).count());
                for &(link, off) in &live {
                    prop_assert!(x.objects().any(|o| o.link == link && o.off == off));
                    prop_assert!(x.find(off).is_some());
                }
                let lo = pick.index(cap);
                let listed: Vec<u32> = x.overlapping(lo, lo + 100).map(|o| o.link).collect();
                let mut want: Vec<u32> = owner[lo..(lo + 100).min(cap)].iter().copied().filter(|&o| o != HOLE).collect();
                want.dedup();
                prop_assert_eq!(listed, want, "objects overlapping {}..{}", lo, lo + 100);
            }
        }
    }
}
