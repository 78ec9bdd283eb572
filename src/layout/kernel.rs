//! The kernel layout's zspages: objects at fixed places one class size apart, and a
//! free list through the places not in use.
//!
//! Place `i` of a zspage starts at byte `i * class size` of its chain (so an object may
//! straddle two frames). The descriptor keeps one entry per place: for an allocated
//! object the index of its handle slot and its requested size (the back-reference
//! compaction follows, kept here rather than inside the object as the kernel does),
//! for a free place the next free place. Malloc takes the first free place and free
//! pushes the place back, so both are a few stores; compaction moves an object by
//! taking a place in one zspage and pushing one in another.
//!
//! Invariants of [`Objects`] (checked by [`Objects::check`], run by the pool checker):
//! - `inuse + length(free list) == places`;
//! - the free list stays in range and has no cycle;
//! - an allocated place's entry names its handle slot and its size (1 or more); a free
//!   place's size is 0.

/// Number of fullness groups: 0%, under 10%, 10-19%, ..., 90-99%, 100% (the kernel's
/// ten-percent buckets, `ZS_INUSE_RATIO_0` .. `ZS_INUSE_RATIO_100`).
pub const NR_GROUPS: usize = 12;
/// Group of empty zspages.
pub const GROUP_EMPTY: usize = 0;
/// Group of full zspages.
pub const GROUP_FULL: usize = NR_GROUPS - 1;

/// The fullness group of a zspage with `inuse` of `objs` objects allocated: empty,
/// full, or the ten-percent bucket of its use ratio (as the kernel's
/// get_fullness_group() buckets it: ratio 0..9% is group 1, 90..99% is group 10).
pub fn fullness_group(inuse: usize, objs: usize) -> usize {
    if inuse == 0 {
        GROUP_EMPTY
    } else if inuse == objs {
        GROUP_FULL
    } else {
        inuse * 100 / objs / 10 + 1
    }
}

/// No place / end of the free list.
pub const NONE: u16 = u16::MAX;

/// The entry of one place of a zspage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(2))]
pub struct Entry {
    /// Allocated: the handle slot's index. Free: the next free place (or NONE).
    pub link: u32,
    /// Allocated: the size passed to malloc, in 16 bits (so 65536 reads 0). Free: 0.
    /// A size of 65536 fills a 16-frame zspage's only place, which the zspage's use
    /// count tells allocated ([`Objects::is_allocated`]).
    pub size: u16,
}

impl Entry {
    /// The size of an allocated place's object.
    #[inline]
    pub fn len(&self) -> usize {
        ((self.size as usize).wrapping_sub(1) & 0xFFFF) + 1
    }
}

/// The objects of a kernel-layout zspage: an entry per place, and the free list.
///
/// ```text
/// inuse + length(free list) == places       free_head == NONE  <=>  inuse == places
/// ```
///
/// The first is checked by [`check`](Self::check) (it walks the list); the second,
/// which follows from it, by debug builds after every change.
#[derive(Debug)]
pub struct Objects {
    entries: Box<[Entry]>,
    /// Places allocated.
    inuse: u16,
    /// First free place, or NONE.
    free_head: u16,
}

impl Objects {
    /// A zspage of `places` places, every one free, listed in ascending order.
    pub fn new(places: usize) -> Objects {
        debug_assert!((1..NONE as usize).contains(&places));
        let entries = (0..places)
            .map(|i| Entry { link: if i + 1 < places { i as u32 + 1 } else { NONE as u32 }, size: 0 })
            .collect();
        Objects { entries, inuse: 0, free_head: 0 }
    }

    /// Places in the zspage.
    #[inline]
    pub fn places(&self) -> usize {
        self.entries.len()
    }

    /// Objects allocated.
    #[inline]
    pub fn len(&self) -> usize {
        self.inuse as usize
    }

    /// Whether no object is left.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.inuse == 0
    }

    /// The zspage's fullness group.
    #[inline]
    pub fn group(&self) -> usize {
        fullness_group(self.len(), self.places())
    }

    /// Takes the first free place for the object of handle slot `idx`, of `size`
    /// bytes; returns the place, or None if the zspage is full.
    #[inline]
    pub fn place(&mut self, idx: u32, size: usize) -> Option<usize> {
        debug_assert!(size >= 1 && size <= u16::MAX as usize + 1);
        let obj = self.free_head;
        if obj == NONE {
            return None;
        }
        self.free_head = self.entries[obj as usize].link as u16;
        self.entries[obj as usize] = Entry { link: idx, size: size as u16 };
        self.inuse += 1;
        self.debug_check();
        Some(obj as usize)
    }

    /// Frees place `obj` (allocated): it goes to the head of the free list. Returns
    /// the entry it had.
    #[inline]
    pub fn remove(&mut self, obj: usize) -> Entry {
        let e = self.entries[obj];
        debug_assert!(self.is_allocated(obj, &e) && self.inuse > 0, "freeing a free place");
        self.entries[obj] = Entry { link: self.free_head as u32, size: 0 };
        self.free_head = obj as u16;
        self.inuse -= 1;
        self.debug_check();
        e
    }

    /// The equation's cheap half (see [`Objects`]), in debug builds.
    #[inline]
    fn debug_check(&self) {
        debug_assert_eq!(self.free_head == NONE, self.len() == self.places(), "free list and use count disagree");
    }

    /// The entry of place `obj`.
    #[inline]
    pub fn entry(&self, obj: usize) -> Entry {
        self.entries[obj]
    }

    /// Whether place `obj`, whose entry is `e`, is allocated: its size says so, but
    /// for a 65536-byte object, in the only place of its zspage.
    #[inline]
    pub fn is_allocated(&self, obj: usize, e: &Entry) -> bool {
        e.size != 0 || (obj == 0 && self.places() == 1 && self.inuse == 1)
    }

    /// The allocated places, ascending, with their entries.
    pub fn allocated(&self) -> impl Iterator<Item = (usize, Entry)> + '_ {
        self.entries.iter().copied().enumerate().filter(|(o, e)| self.is_allocated(*o, e))
    }

    /// The allocated places among `range`, with their entries.
    pub fn allocated_in(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = (usize, Entry)> + '_ {
        let range = range.start.min(self.places())..range.end.min(self.places());
        self.entries[range.clone()]
            .iter()
            .copied()
            .zip(range)
            .filter(|(e, o)| self.is_allocated(*o, e))
            .map(|(e, o)| (o, e))
    }

    /// Bytes of metadata the entries hold (their allocation).
    pub fn meta_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries)
    }

    /// Checks the invariants of the module comment.
    pub fn check(&self) -> Result<(), String> {
        let places = self.places();
        let mut free = vec![false; places];
        let mut nfree = 0;
        let mut o = self.free_head;
        while o != NONE {
            if o as usize >= places {
                return Err(format!("free object {o} out of range"));
            }
            if free[o as usize] {
                return Err("free list has a cycle".into());
            }
            free[o as usize] = true;
            nfree += 1;
            o = self.entries[o as usize].link as u16;
        }
        let inuse = self.len();
        if inuse + nfree != places {
            return Err(format!("inuse {inuse} + free {nfree} != {places}"));
        }
        if let Some(obj) = (0..places).find(|&o| free[o] == self.is_allocated(o, &self.entries[o])) {
            return Err(format!("object {obj}: size {} disagrees with the free list", { self.entries[obj].size }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_kernel_buckets() {
        assert_eq!(fullness_group(0, 10), GROUP_EMPTY);
        assert_eq!(fullness_group(10, 10), GROUP_FULL);
        assert_eq!(fullness_group(1, 100), 1);
        assert_eq!(fullness_group(9, 100), 1);
        assert_eq!(fullness_group(10, 100), 2);
        assert_eq!(fullness_group(99, 100), 10);
        assert_eq!(fullness_group(1, 2), 6);
    }

    #[test]
    fn places_come_from_the_free_list_and_go_back_to_its_head() {
        assert_eq!(std::mem::size_of::<Entry>(), 6);
        let mut o = Objects::new(3);
        assert_eq!((o.places(), o.len(), o.meta_bytes()), (3, 0, 18));
        assert_eq!(o.place(70, 10), Some(0));
        assert_eq!(o.place(71, 11), Some(1));
        assert_eq!(o.place(72, 12), Some(2));
        assert_eq!(o.place(73, 13), None, "full");
        assert_eq!(o.group(), GROUP_FULL);
        assert_eq!(o.remove(1), Entry { link: 71, size: 11 });
        assert_eq!(o.allocated().map(|(i, e)| (i, e.link)).collect::<Vec<_>>(), vec![(0, 70), (2, 72)]);
        assert_eq!(o.allocated_in(1..3).map(|(i, _)| i).collect::<Vec<_>>(), vec![2]);
        o.check().unwrap();
        assert_eq!(o.place(74, 14), Some(1), "the place just freed first");
        assert_eq!(o.entry(1), Entry { link: 74, size: 14 });
        o.check().unwrap();
        o.free_head = 0;
        assert!(o.check().is_err(), "a free list through an allocated place");
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "free list and use count disagree")]
    fn debug_builds_catch_a_free_list_that_ends_early() {
        let mut o = Objects::new(3);
        o.place(1, 1).unwrap();
        o.entries[1].link = NONE as u32;
        o.place(2, 1).unwrap();
    }
}
