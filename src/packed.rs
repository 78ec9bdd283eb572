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
//! The descriptor keeps only the zspage's free space, as [`Extents`]: its holes
//! (offset and length, 4 bytes each, in address order), where the unused tail
//! starts, and counts. It keeps nothing per object. An object's size sits beside its
//! handle slot (readers need it there), and its place is the slot's location, so a
//! free knows both; the bytes an object list would take are 6 per object, a quarter
//! of the layout's overhead. Compaction, migration and the checker, which do need a
//! zspage's objects, find them in one pass over the handle table (`locate.rs`).
//!
//! A freed object becomes a hole, merged with its neighbours; a hole at the end gives
//! its bytes back to the unused tail. malloc fills the tail or, when the tail is too
//! short, the first hole large enough. Holes too small for the objects that come are
//! what compaction takes back: it moves the objects of zspages with free space into
//! others and releases the emptied ones.
//!
//! Invariants (checked by [`Extents::check`] against the objects the handle table
//! locates in the zspage, run by `Pool::check`):
//! - objects and holes cover `0..end` exactly, in address order, with no gap or
//!   overlap;
//! - no two holes are neighbours, and the last byte before `end` is an object's;
//! - every length is positive, an object's at most 4096; `end <= cap`;
//! - the object count, the byte count and the largest hole match.

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

/// The free space of a dense zspage (see the module comment).
///
/// One allocation holds the holes, ascending by offset, each as one 32-bit word:
/// offset in the low half, length in the high half, so that the searches below are
/// plain loops over words, which the compiler vectorises. Holes are few (neighbours merge), so finding one that fits is a
/// short scan, and a free touches only the holes around its object.
#[derive(Debug)]
pub struct Extents {
    buf: Box<[u32]>,
    /// Objects in the zspage.
    nobj: u16,
    nhole: u16,
    /// The largest hole's length (0: none).
    largest_hole: u16,
    /// Frames of the chain.
    frames: u8,
    /// Bytes in use from the start of the chain: the tail starts here.
    end: u32,
    /// Bytes of objects.
    used: u32,
}

impl Extents {
    /// An empty zspage of `frames` frames.
    pub fn new(frames: usize) -> Extents {
        debug_assert!((1..=16).contains(&frames));
        Extents { buf: Box::new([]), nobj: 0, nhole: 0, largest_hole: 0, frames: frames as u8, end: 0, used: 0 }
    }

    /// Whether no object is left.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.nobj == 0
    }

    /// Objects in the zspage.
    #[inline]
    pub fn len(&self) -> usize {
        self.nobj as usize
    }

    /// Holes between objects.
    pub fn holes(&self) -> usize {
        self.nhole as usize
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

    /// Bytes of metadata the entries hold (their allocation).
    pub fn meta_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buf)
    }

    /// The hole entries in use.
    #[inline]
    fn entries(&self) -> &[u32] {
        &self.buf[..self.holes()]
    }

    #[inline]
    fn hole(&self, j: usize) -> (usize, usize) {
        let w = self.buf[j];
        ((w & 0xFFFF) as usize, (w >> 16) as usize)
    }

    #[inline]
    fn set_hole(&mut self, j: usize, off: usize, len: usize) {
        debug_assert!(off < 1 << 16 && len < 1 << 16);
        self.buf[j] = off as u32 | (len as u32) << 16;
    }

    /// The position of the first hole at or after byte `off`.
    #[inline]
    fn hole_position(&self, off: usize) -> usize {
        if self.holes() <= 32 {
            // Holes are few: a straight count, which the compiler vectorises, beats
            // a search's unpredictable branches.
            return self.entries().iter().filter(|&&w| ((w & 0xFFFF) as usize) < off).count();
        }
        let (mut lo, mut hi) = (0, self.holes());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.hole(mid).0 < off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Reallocates to `cap` words.
    fn resize(&mut self, cap: usize) {
        let mut buf = vec![0u32; cap].into_boxed_slice();
        buf[..self.holes()].copy_from_slice(self.entries());
        self.buf = buf;
    }

    /// Gives back the entries' room to grow (compaction leaves zspages that will
    /// mostly just lose objects).
    pub fn shrink_to_fit(&mut self) {
        if self.holes() < self.buf.len() {
            self.resize(self.holes());
        }
    }

    fn insert_hole(&mut self, j: usize, off: usize, len: usize) {
        let n = self.holes();
        if n == self.buf.len() {
            // A quarter at a time: the entries are metadata, and doubling would leave
            // a third of them unused on average.
            self.resize(n + (n / 4).max(2));
        }
        self.buf.copy_within(j..n, j + 1);
        self.nhole += 1;
        self.set_hole(j, off, len);
    }

    fn remove_hole(&mut self, j: usize) {
        let n = self.holes();
        self.buf.copy_within(j + 1..n, j);
        self.nhole -= 1;
        if self.buf.len() > 16 && 2 * (n - 1) < self.buf.len() {
            self.resize(n + n / 4);
        }
    }

    fn scan_largest_hole(&self) -> u16 {
        // Over the words directly: a loop the compiler turns into vector max.
        self.entries().iter().map(|&w| w >> 16).max().unwrap_or(0) as u16
    }

    /// Places an object of `len` bytes: in the tail if it fits there, else in the
    /// first hole that fits. Returns its offset, or None if nothing fits.
    #[inline]
    pub fn place(&mut self, len: usize) -> Option<usize> {
        debug_assert!(len > 0 && len <= crate::os::PAGE_SIZE);
        let end = self.end as usize;
        let off = if self.cap() - end >= len {
            self.end += len as u32;
            end
        } else {
            if (self.largest_hole as usize) < len {
                return None;
            }
            let j = self.entries().iter().position(|&w| (w >> 16) as usize >= len)?;
            let (off, hole) = self.hole(j);
            if hole == len {
                self.remove_hole(j);
            } else {
                self.set_hole(j, off + len, hole - len);
            }
            if hole == self.largest_hole as usize {
                self.largest_hole = self.scan_largest_hole();
            }
            off
        };
        self.used += len as u32;
        self.nobj += 1;
        Some(off)
    }

    /// Frees the object of `len` bytes at byte `off`: its bytes become a hole, merged
    /// with neighbouring holes, or join the tail.
    #[inline]
    pub fn remove(&mut self, off: usize, len: usize) {
        debug_assert!(self.nobj > 0 && off + len <= self.end as usize);
        self.nobj -= 1;
        self.used -= len as u32;
        let j = self.hole_position(off);
        let before = (j > 0).then(|| self.hole(j - 1)).filter(|&(o, l)| o + l == off);
        debug_assert!(j == 0 || self.hole(j - 1).0 + self.hole(j - 1).1 <= off, "freeing a hole");
        if off + len == self.end as usize {
            // The last object: its bytes, and a hole just before it, join the tail.
            self.end = off as u32;
            if let Some((o, l)) = before {
                self.remove_hole(j - 1);
                self.end = o as u32;
                if l == self.largest_hole as usize {
                    self.largest_hole = self.scan_largest_hole();
                }
            }
            return;
        }
        let after = (j < self.holes()).then(|| self.hole(j)).filter(|&(o, _)| o == off + len);
        debug_assert!(j == self.holes() || self.hole(j).0 >= off + len, "freeing a hole");
        let (start, stop) = (before.map_or(off, |h| h.0), after.map_or(off + len, |h| h.0 + h.1));
        match (before, after) {
            (Some(_), Some(_)) => {
                self.set_hole(j - 1, start, stop - start);
                self.remove_hole(j);
            }
            (Some(_), None) => self.set_hole(j - 1, start, stop - start),
            (None, Some(_)) => self.set_hole(j, start, stop - start),
            (None, None) => self.insert_hole(j, start, stop - start),
        }
        // Any hole merged here was shorter than the run it joined.
        self.largest_hole = self.largest_hole.max((stop - start) as u16);
    }

    /// Free bytes (holes and tail) among bytes `lo..hi` of the chain.
    pub fn free_in(&self, lo: usize, hi: usize) -> usize {
        let overlap = |o: usize, l: usize| (o + l).min(hi).saturating_sub(o.max(lo));
        let first = self.hole_position(lo).saturating_sub(1);
        let holes: usize =
            (first..self.holes()).map(|j| self.hole(j)).take_while(|&(o, _)| o < hi).map(|(o, l)| overlap(o, l)).sum();
        holes + overlap(self.end as usize, self.cap() - self.end as usize)
    }

    /// Checks the invariants of the module comment, with the zspage's objects as
    /// (offset, length) in `objects` (sorted here).
    pub fn check(&self, objects: &mut [(usize, usize)]) -> Result<(), String> {
        objects.sort_unstable();
        if objects.len() != self.len() {
            return Err(format!("{} objects counted, {} located", self.len(), objects.len()));
        }
        let (mut at, mut used, mut largest) = (0usize, 0usize, 0usize);
        let (mut i, mut j) = (0, 0);
        let mut last_was_hole = false;
        while i < objects.len() || j < self.holes() {
            let hole_next = j < self.holes() && (i == objects.len() || self.hole(j).0 < objects[i].0);
            if hole_next {
                let (off, len) = self.hole(j);
                if off != at || len == 0 {
                    return Err(format!("hole {j} at {off}+{len} where {at} was expected"));
                }
                if last_was_hole {
                    return Err(format!("holes {} and {j} are neighbours", j - 1));
                }
                largest = largest.max(len);
                at += len;
                j += 1;
            } else {
                let (off, len) = objects[i];
                if off != at || len == 0 || len > crate::os::PAGE_SIZE {
                    return Err(format!("object {i} at {off}+{len} where {at} was expected"));
                }
                used += len;
                at += len;
                i += 1;
            }
            last_was_hole = hole_next;
        }
        if last_was_hole {
            return Err("the last entry is a hole".into());
        }
        if at != self.end as usize || at > self.cap() {
            return Err(format!("entries end at {at}, end is {}, cap {}", self.end, self.cap()));
        }
        if used != self.used as usize || largest != self.largest_hole as usize {
            return Err(format!(
                "used {} / largest hole {} recorded, {used} / {largest} found",
                self.used, self.largest_hole
            ));
        }
        if self.holes() > self.buf.len() {
            return Err("more holes than the entry buffer holds".into());
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
        assert_eq!(x.place(1000), Some(0));
        assert_eq!(x.place(2000), Some(1000));
        assert_eq!(x.place(1000), Some(3000));
        assert_eq!(x.extent(), 96);
        assert_eq!(x.place(100), None, "neither the tail nor a hole fits");
        x.remove(1000, 2000);
        assert_eq!((x.extent(), x.holes()), (2000, 1));
        assert_eq!(x.place(90), Some(4000), "the tail first");
        assert_eq!(x.place(7), Some(1000), "then the first hole that fits");
        assert_eq!((x.len(), x.holes()), (4, 1), "the rest of the hole stays a hole");
        assert_eq!(x.extent(), 1993);
        x.check(&mut [(0, 1000), (1000, 7), (3000, 1000), (4000, 90)]).unwrap();
        assert!(x.check(&mut [(0, 1000), (3000, 1000), (4000, 90)]).is_err(), "an object is missing");
        assert!(x.check(&mut [(0, 1000), (1000, 8), (3000, 1000), (4000, 90)]).is_err(), "an object overlaps a hole");
    }

    #[test]
    fn holes_merge_and_join_the_tail() {
        let mut x = Extents::new(1);
        for k in 0..5 {
            assert_eq!(x.place(32), Some(32 * k));
        }
        x.remove(32, 32);
        x.remove(96, 32);
        assert_eq!(x.holes(), 2);
        x.remove(64, 32);
        assert_eq!((x.len(), x.holes()), (2, 1), "three neighbouring frees make one hole");
        assert_eq!(x.extent(), 4096 - 160);
        x.check(&mut [(0, 32), (128, 32)]).unwrap();
        x.remove(128, 32);
        assert_eq!((x.len(), x.holes()), (1, 0), "the hole before the last object joins the tail with it");
        assert_eq!((x.used(), x.extent()), (32, 4096 - 32));
        x.remove(0, 32);
        assert!(x.is_empty());
        x.check(&mut []).unwrap();
    }

    #[test]
    fn free_bytes_in_a_range() {
        let mut x = Extents::new(2);
        for _ in 0..4 {
            x.place(1600).unwrap();
        }
        x.remove(1600, 1600);
        assert_eq!(x.free_in(0, 4096), 1600, "the hole");
        assert_eq!(x.free_in(4096, 8192), 8192 - 6400, "the tail");
        assert_eq!(x.free_in(2000, 2100), 100, "inside the hole");
        assert_eq!(x.free_in(3300, 3400), 0, "inside an object");
    }

    #[test]
    fn entries_grow_and_shrink() {
        let mut x = Extents::new(16);
        for _ in 0..2000 {
            x.place(10).unwrap();
        }
        assert_eq!(x.meta_bytes(), 0, "objects take no entries");
        for k in (0..2000).filter(|k| k % 2 == 0) {
            x.remove(10 * k, 10);
        }
        assert_eq!((x.len(), x.holes()), (1000, 1000));
        let grown = x.meta_bytes();
        assert!((4 * 1000..=4 * 1000 * 5 / 4 + 32).contains(&grown), "{grown} bytes for 1000 holes");
        for k in (0..2000).filter(|k| k % 2 == 1) {
            x.remove(10 * k, 10);
        }
        assert!(x.is_empty() && x.meta_bytes() < 100, "{} bytes left", x.meta_bytes());
        for _ in 0..10 {
            x.place(10).unwrap();
        }
        x.remove(30, 10);
        x.shrink_to_fit();
        assert_eq!(x.meta_bytes(), 4, "no room to grow left");
        x.remove(50, 10);
        assert_eq!(x.holes(), 2);
    }

    proptest! {
        /// Random places and removes against a byte map of the chain.
        #[test]
        fn matches_a_byte_map(ops in proptest::collection::vec((any::<bool>(), 1usize..600, any::<prop::sample::Index>()), 1..300)) {
            let cap = 4 * 4096;
            let mut x = Extents::new(4);
            let mut taken = vec![false; cap];
            let mut live: Vec<(usize, usize)> = Vec::new();
            for (alloc, size, pick) in ops {
                if alloc || live.is_empty() {
                    let fits = x.extent() >= size;
                    match x.place(size) {
                        Some(off) => {
                            prop_assert!(off + size <= cap);
                            prop_assert!(taken[off..off + size].iter().all(|&t| !t), "placed over a live object");
                            taken[off..off + size].fill(true);
                            live.push((off, size));
                        }
                        None => prop_assert!(!fits, "refused although the extent fits"),
                    }
                } else {
                    let (off, len) = live.swap_remove(pick.index(live.len()));
                    x.remove(off, len);
                    taken[off..off + len].fill(false);
                }
                x.check(&mut live.clone()).map_err(TestCaseError::fail)?;
                prop_assert_eq!(x.used(), taken.iter().filter(|&&t| t).count());
                let lo = pick.index(cap);
                let hi = (lo + 100).min(cap);
                prop_assert_eq!(x.free_in(lo, hi), taken[lo..hi].iter().filter(|&&t| !t).count());
            }
        }
    }
}
