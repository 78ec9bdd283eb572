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
//! The descriptor keeps the zspage's contents as [`Extents`]: its objects (offset and
//! handle slot, 6 bytes each) and its holes (offset and length, 4 bytes each), both
//! in address order. A freed object becomes a hole, merged with its neighbours; a
//! hole at the end gives its bytes back to the unused tail. malloc fills the tail or,
//! when the tail is too short, the first hole large enough. Holes too small for the
//! objects that come are what compaction takes back: it moves the objects of zspages
//! with free space into others and releases the emptied ones.
//!
//! Invariants (checked by [`Extents::check`], run by `Pool::check`):
//! - objects and holes cover `0..end` exactly, in address order, with no gap or
//!   overlap;
//! - no two holes are neighbours and the last entry is an object;
//! - every length is positive, an object's at most 4096; `end <= cap`;
//! - the byte count and the largest hole match the entries.

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

/// An object of a dense zspage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Obj {
    /// Its handle slot index.
    pub link: u32,
    /// Byte offset in the chain.
    pub off: usize,
    /// Bytes it takes (its size).
    pub len: usize,
}

/// Words of an object entry: offset, link low half, link high half.
const OBJ_WORDS: usize = 3;
/// Words of a hole entry: offset, length.
const HOLE_WORDS: usize = 2;

/// The contents of a dense zspage (see the module comment).
///
/// One allocation of 16-bit words holds the objects from the front (offset and
/// handle slot, 6 bytes each, ascending by offset) and the holes from the back
/// (offset and length, 4 bytes each, ascending by offset), with the room to grow
/// between them. An object's length is its size, which the handle table keeps
/// beside its slot: the methods that need it take it, or a function giving it.
/// Holes are few (neighbours merge), so finding one that fits is a short scan, and
/// a free touches only the holes around its object.
#[derive(Debug)]
pub struct Extents {
    buf: Box<[u16]>,
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

    #[inline]
    fn obj_off(&self, i: usize) -> usize {
        self.buf[OBJ_WORDS * i] as usize
    }

    #[inline]
    fn obj_link(&self, i: usize) -> u32 {
        self.buf[OBJ_WORDS * i + 1] as u32 | (self.buf[OBJ_WORDS * i + 2] as u32) << 16
    }

    /// Index in `buf` of the first hole word.
    #[inline]
    fn hole_base(&self) -> usize {
        self.buf.len() - HOLE_WORDS * self.nhole as usize
    }

    #[inline]
    fn hole(&self, j: usize) -> (usize, usize) {
        let w = self.hole_base() + HOLE_WORDS * j;
        (self.buf[w] as usize, self.buf[w + 1] as usize)
    }

    #[inline]
    fn set_hole(&mut self, j: usize, off: usize, len: usize) {
        let w = self.hole_base() + HOLE_WORDS * j;
        self.buf[w] = off as u16;
        self.buf[w + 1] = len as u16;
    }

    /// The object at position `i`, whose length `len_of` gives from its slot.
    pub fn obj(&self, i: usize, len_of: impl Fn(u32) -> usize) -> Obj {
        let link = self.obj_link(i);
        Obj { link, off: self.obj_off(i), len: len_of(link) }
    }

    /// The objects, in address order, as (handle slot, offset).
    pub fn objects(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        (0..self.len()).map(|i| (self.obj_link(i), self.obj_off(i)))
    }

    /// The holes, in address order, as (offset, length).
    fn hole_list(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.holes()).map(|j| self.hole(j))
    }

    /// The position of the first object at or after byte `off`. Objects fill the
    /// used bytes nearly evenly, so the guess `off / end * objects` lands within an
    /// object or two; a galloping search from there finds the place, in a few loads
    /// of neighbouring entries where a binary search takes a chain of scattered ones.
    #[inline]
    fn obj_position(&self, off: usize) -> usize {
        let n = self.len();
        if n == 0 {
            return 0;
        }
        let guess = (off * n / (self.end as usize).max(1)).min(n - 1);
        // Gallop to a window [lo, hi) with off(lo - 1) < off <= off(hi), then bisect.
        let (mut lo, mut hi);
        if self.obj_off(guess) < off {
            let mut step = 1;
            lo = guess + 1;
            hi = lo;
            while hi < n && self.obj_off(hi) < off {
                lo = hi + 1;
                hi = (hi + step).min(n);
                step *= 2;
            }
        } else {
            let mut step = 1;
            hi = guess;
            lo = hi;
            while lo > 0 && self.obj_off(lo - 1) >= off {
                hi = lo - 1;
                lo = lo.saturating_sub(step);
                step *= 2;
            }
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.obj_off(mid) < off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The position of the first hole at or after byte `off`.
    #[inline]
    fn hole_position(&self, off: usize) -> usize {
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

    /// The position of the object that starts at byte `off`.
    #[inline]
    pub fn find(&self, off: usize) -> Option<usize> {
        let i = self.obj_position(off);
        (i < self.len() && self.obj_off(i) == off).then_some(i)
    }

    /// Makes room for `words` more words between the objects and the holes, growing
    /// by a quarter at a time: the entries are metadata, and doubling would leave a
    /// third of them unused on average.
    fn reserve(&mut self, words: usize) {
        let in_use = OBJ_WORDS * self.len() + HOLE_WORDS * self.holes();
        if in_use + words > self.buf.len() {
            self.resize(in_use + words + (in_use / 4).max(2 * OBJ_WORDS));
        }
    }

    /// Reallocates to `cap` words, objects at the front and holes at the back.
    fn resize(&mut self, cap: usize) {
        let mut buf = vec![0u16; cap].into_boxed_slice();
        let objs = OBJ_WORDS * self.len();
        buf[..objs].copy_from_slice(&self.buf[..objs]);
        let holes = HOLE_WORDS * self.holes();
        buf[cap - holes..].copy_from_slice(&self.buf[self.buf.len() - holes..]);
        self.buf = buf;
    }

    /// Gives back the entries' room to grow (compaction leaves zspages that will
    /// mostly just lose objects).
    pub fn shrink_to_fit(&mut self) {
        let in_use = OBJ_WORDS * self.len() + HOLE_WORDS * self.holes();
        if in_use < self.buf.len() {
            self.resize(in_use);
        }
    }

    fn insert_obj(&mut self, i: usize, off: usize, link: u32) {
        self.reserve(OBJ_WORDS);
        let (w, n) = (OBJ_WORDS * i, OBJ_WORDS * self.len());
        self.buf.copy_within(w..n, w + OBJ_WORDS);
        self.buf[w..w + OBJ_WORDS].copy_from_slice(&[off as u16, link as u16, (link >> 16) as u16]);
        self.nobj += 1;
    }

    fn remove_obj(&mut self, i: usize) {
        let (w, n) = (OBJ_WORDS * i, OBJ_WORDS * self.len());
        self.buf.copy_within(w + OBJ_WORDS..n, w);
        self.nobj -= 1;
    }

    fn insert_hole(&mut self, j: usize, off: usize, len: usize) {
        self.reserve(HOLE_WORDS);
        let base = self.hole_base();
        // The holes before position `j` move one entry down; `j` takes the gap.
        self.buf.copy_within(base..base + HOLE_WORDS * j, base - HOLE_WORDS);
        self.nhole += 1;
        self.set_hole(j, off, len);
    }

    fn remove_hole(&mut self, j: usize) {
        let base = self.hole_base();
        self.buf.copy_within(base..base + HOLE_WORDS * j, base + HOLE_WORDS);
        self.nhole -= 1;
    }

    fn scan_largest_hole(&self) -> u16 {
        self.hole_list().map(|(_, len)| len).max().unwrap_or(0) as u16
    }

    /// Places an object of `len` bytes for handle slot `link`: in the tail if it
    /// fits there, else in the first hole that fits. Returns its offset, or None if
    /// nothing fits.
    pub fn place(&mut self, len: usize, link: u32) -> Option<usize> {
        debug_assert!(len > 0 && len <= crate::os::PAGE_SIZE);
        let end = self.end as usize;
        if self.cap() - end >= len {
            self.insert_obj(self.len(), end, link);
            self.end += len as u32;
            self.used += len as u32;
            return Some(end);
        }
        if (self.largest_hole as usize) < len {
            return None;
        }
        let j = (0..self.holes()).find(|&j| self.hole(j).1 >= len)?;
        let (off, hole) = self.hole(j);
        let i = self.obj_position(off);
        self.insert_obj(i, off, link);
        if hole == len {
            self.remove_hole(j);
        } else {
            self.set_hole(j, off + len, hole - len);
        }
        self.used += len as u32;
        if hole == self.largest_hole as usize {
            self.largest_hole = self.scan_largest_hole();
        }
        Some(off)
    }

    /// Frees the object at position `i` (from [`find`](Self::find)): its bytes
    /// become a hole, merged with neighbouring holes, or join the tail. Returns its
    /// handle slot and its length (where the next object or hole, or the tail,
    /// starts: objects take exactly their size).
    pub fn remove(&mut self, i: usize) -> (u32, usize) {
        let (link, off) = (self.obj_link(i), self.obj_off(i));
        let j = self.hole_position(off);
        let next_obj = if i + 1 < self.len() { self.obj_off(i + 1) } else { self.end as usize };
        let len = if j < self.holes() { next_obj.min(self.hole(j).0) } else { next_obj } - off;
        self.remove_obj(i);
        self.used -= len as u32;
        let before = (j > 0).then(|| self.hole(j - 1)).filter(|&(o, l)| o + l == off);
        let after = (j < self.holes()).then(|| self.hole(j)).filter(|&(o, _)| o == off + len);
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
        } else {
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
        let in_use = OBJ_WORDS * self.len() + HOLE_WORDS * self.holes();
        if self.buf.len() > 16 * OBJ_WORDS && in_use * 2 < self.buf.len() {
            self.resize(in_use + in_use / 4 + 2 * OBJ_WORDS);
        }
        (link, len)
    }

    /// The objects that overlap bytes `lo..hi` of the chain.
    pub fn overlapping(&self, lo: usize, hi: usize, len_of: impl Fn(u32) -> usize) -> Vec<Obj> {
        // The object before the first at or after `lo` may reach into it.
        let first = self.obj_position(lo).saturating_sub(1);
        (first..self.len())
            .take_while(|&i| self.obj_off(i) < hi)
            .map(|i| self.obj(i, &len_of))
            .filter(|o| o.off + o.len > lo)
            .collect()
    }

    /// Checks the invariants of the module comment, with the objects' lengths from
    /// `len_of`.
    pub fn check(&self, len_of: impl Fn(u32) -> usize) -> Result<(), String> {
        let (mut at, mut used, mut largest) = (0usize, 0usize, 0usize);
        let (mut i, mut j) = (0, 0);
        let mut last_was_hole = false;
        while i < self.len() || j < self.holes() {
            let hole_next = j < self.holes() && (i == self.len() || self.hole(j).0 < self.obj_off(i));
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
                let o = self.obj(i, &len_of);
                if o.off != at || o.len == 0 || o.len > crate::os::PAGE_SIZE {
                    return Err(format!("object {i} at {}+{} where {at} was expected", o.off, o.len));
                }
                used += o.len;
                at += o.len;
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
        if OBJ_WORDS * self.len() + HOLE_WORDS * self.holes() > self.buf.len() {
            return Err("objects and holes overlap in the entry buffer".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Places objects of `lens[link]` bytes, link by link.
    fn len_of(lens: &[usize]) -> impl Fn(u32) -> usize + '_ {
        move |link| lens[link as usize]
    }

    #[test]
    fn fills_tail_then_holes() {
        let lens = [1000, 2000, 1000, 100, 90, 7];
        let mut x = Extents::new(1);
        assert_eq!(x.place(1000, 0), Some(0));
        assert_eq!(x.place(2000, 1), Some(1000));
        assert_eq!(x.place(1000, 2), Some(3000));
        assert_eq!(x.extent(), 96);
        assert_eq!(x.place(100, 3), None, "neither the tail nor a hole fits");
        assert_eq!(x.remove(x.find(1000).unwrap()), (1, 2000));
        assert_eq!((x.extent(), x.holes()), (2000, 1));
        assert_eq!(x.place(90, 4), Some(4000), "the tail first");
        assert_eq!(x.place(7, 5), Some(1000), "then the first hole that fits");
        assert_eq!((x.len(), x.holes()), (4, 1), "the rest of the hole stays a hole");
        assert_eq!(x.find(1007), None, "holes are not objects");
        assert_eq!(x.extent(), 1993);
        x.check(len_of(&lens)).unwrap();
    }

    #[test]
    fn holes_merge_and_join_the_tail() {
        let lens = [32; 5];
        let mut x = Extents::new(1);
        for k in 0..5 {
            assert_eq!(x.place(32, k), Some(32 * k as usize));
        }
        x.remove(x.find(32).unwrap());
        x.remove(x.find(96).unwrap());
        assert_eq!(x.holes(), 2);
        x.remove(x.find(64).unwrap());
        assert_eq!((x.len(), x.holes()), (2, 1), "three neighbouring frees make one hole");
        assert_eq!(x.extent(), 4096 - 160);
        x.check(len_of(&lens)).unwrap();
        x.remove(x.find(128).unwrap());
        assert_eq!((x.len(), x.holes()), (1, 0), "the hole before the last object joins the tail with it");
        assert_eq!((x.used(), x.extent()), (32, 4096 - 32));
        x.remove(x.find(0).unwrap());
        assert!(x.is_empty());
        x.check(len_of(&lens)).unwrap();
    }

    #[test]
    fn overlapping_objects() {
        let lens = [1600; 4];
        let mut x = Extents::new(2);
        for k in 0..4 {
            x.place(1600, k).unwrap();
        }
        x.remove(x.find(1600).unwrap());
        let links = |lo, hi| x.overlapping(lo, hi, len_of(&lens)).iter().map(|o| o.link).collect::<Vec<_>>();
        assert_eq!(links(4096, 8192), vec![2, 3], "object 2 straddles into the second frame");
        assert_eq!(links(0, 4096), vec![0, 2], "the hole is not listed");
    }

    #[test]
    fn entries_grow_and_shrink() {
        let lens = [10; 2000];
        let mut x = Extents::new(16);
        for k in 0..2000 {
            x.place(10, k).unwrap();
        }
        let grown = x.meta_bytes();
        assert!((6 * 2000..=6 * 2000 * 5 / 4 + 64).contains(&grown), "{grown} bytes for 2000 objects");
        for k in (0..2000).filter(|k| k % 2 == 0) {
            x.remove(x.find(10 * k).unwrap());
        }
        x.check(len_of(&lens)).unwrap();
        assert_eq!((x.len(), x.holes()), (1000, 1000));
        for k in (0..2000).filter(|k| k % 2 == 1) {
            x.remove(x.find(10 * k).unwrap());
        }
        assert!(x.is_empty() && x.meta_bytes() < 200, "{} bytes left", x.meta_bytes());
        for k in 0..10 {
            x.place(10, k).unwrap();
        }
        x.shrink_to_fit();
        assert_eq!(x.meta_bytes(), 6 * 10, "no room to grow left");
        x.place(10, 10).unwrap();
        x.check(len_of(&lens)).unwrap();
    }

    proptest! {
        /// Random places and removes against a byte map of the chain.
        #[test]
        fn matches_a_byte_map(ops in proptest::collection::vec((any::<bool>(), 1usize..600, any::<prop::sample::Index>()), 1..300)) {
            const FREE: u32 = u32::MAX;
            let cap = 4 * 4096;
            let mut x = Extents::new(4);
            let mut owner = vec![FREE; cap];
            let mut lens: Vec<usize> = Vec::new();
            let mut live: Vec<(u32, usize)> = Vec::new();
            for (alloc, size, pick) in ops {
                if alloc || live.is_empty() {
                    let next = lens.len() as u32;
                    let fits = x.extent() >= size;
                    match x.place(size, next) {
                        Some(off) => {
                            prop_assert!(off + size <= cap);
                            prop_assert!(owner[off..off + size].iter().all(|&o| o == FREE), "placed over a live object");
                            owner[off..off + size].fill(next);
                            live.push((next, off));
                        }
                        None => prop_assert!(!fits, "refused although the extent fits"),
                    }
                    lens.push(size);
                } else {
                    let (link, off) = live.swap_remove(pick.index(live.len()));
                    let i = x.find(off).unwrap();
                    prop_assert_eq!(x.remove(i), (link, lens[link as usize]));
                    owner[off..off + lens[link as usize]].fill(FREE);
                }
                x.check(len_of(&lens)).map_err(TestCaseError::fail)?;
                prop_assert_eq!(x.used(), owner.iter().filter(|&&o| o != FREE).count());
                prop_assert_eq!(x.len(), live.len());
                for &(link, off) in &live {
                    prop_assert_eq!(x.find(off).map(|i| x.obj(i, len_of(&lens)).link), Some(link));
                }
                let lo = pick.index(cap);
                let listed: Vec<u32> = x.overlapping(lo, lo + 100, len_of(&lens)).iter().map(|o| o.link).collect();
                let mut want: Vec<u32> = owner[lo..(lo + 100).min(cap)].iter().copied().filter(|&o| o != FREE).collect();
                want.dedup();
                prop_assert_eq!(listed, want, "objects overlapping {}..{}", lo, lo + 100);
            }
        }
    }
}
