//! Handles and the handle table.
//!
//! A handle names a slot of the pool's handle table; the slot (see `handle/slot.rs`) holds
//! where the object is now. Compaction and migration rewrite the slot, never the handle.
//!
//! # Handle encoding
//!
//! ```text
//!  63        48 47        32 31                     0
//! +------------+------------+------------------------+
//! |  pool tag  | generation |     slot index + 1     |
//! +------------+------------+------------------------+
//! ```
//!
//! The pool tag (1..=0xFFFE) differs between pools alive at once, so a handle from
//! another pool is refused; the generation refuses stale handles; the index is checked
//! against the table's high-water mark. Every valid handle is at least 2^48, so it is
//! never 0 and never in the error range (values >= -4095, whose top 16 bits are all
//! ones: the tag is never 0xFFFF).
//!
//! # Pool identity
//!
//! A pool's tag comes from a process-wide registry of the tags of live pools
//! ([`TagSpace`]): no two live pools carry the same tag, so at most [`POOL_TAGS`]
//! pools live at once, and creating one more fails. A destroyed pool's tag goes back
//! to the registry, which hands out every never-used tag first and then the least
//! recently freed: a handle of a destroyed pool is refused by the pools created after
//! it until 65,534 more pools have been created (fewer only when that many live at
//! once). Even then its generation most likely differs: each pool's slots start at a
//! generation of their own ([`PoolId::first_gen`]).
//!
//! Beside its tag, a pool has a serial, a 64-bit number never reused in the process:
//! what must name a pool after it is gone (the C ABI's per-thread record of open
//! mappings) names it by serial, never by its tag or its address.
//!
//! The table (`handle/table.rs`) holds the slots.

pub(crate) mod locate;
pub mod slot;
mod table;

pub use table::{HandleTable, SizeCell, SLOT_BATCH};

use std::sync::atomic::AtomicU64 as StdAtomicU64;

use crate::sync::Ordering;

/// A handle: opaque, stable, never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Handle(pub(crate) u64);

impl Handle {
    pub(crate) fn new(tag: u16, gen: u16, index: u32) -> Handle {
        Handle(((tag as u64) << 48) | ((gen as u64) << 32) | (index as u64 + 1))
    }

    /// The raw value (what the C ABI calls an `unsigned long` handle).
    pub fn to_raw(self) -> u64 {
        self.0
    }

    /// A handle from its raw value. Any value is accepted here; the pool refuses the
    /// ones it did not issue.
    pub fn from_raw(raw: u64) -> Handle {
        Handle(raw)
    }

    pub(crate) fn tag(self) -> u16 {
        (self.0 >> 48) as u16
    }

    pub(crate) fn gen(self) -> u16 {
        (self.0 >> 32) as u16
    }

    /// The slot index, or None for a value no pool issues (low half 0).
    pub(crate) fn index(self) -> Option<u32> {
        (self.0 as u32).checked_sub(1)
    }
}

/// How many pools can live at once: the tags a handle can carry (1..=0xFFFE).
pub const POOL_TAGS: usize = 0xFFFE;

/// Fresh tags are handed out in the order `i * TAG_STRIDE mod POOL_TAGS`, which
/// spreads consecutive pools' tags over the space. The stride is prime to
/// `POOL_TAGS` (2 * 7 * 31 * 151), so the order is a permutation.
const TAG_STRIDE: usize = 0x9E37;
const _: () = assert!(TAG_STRIDE % 2 != 0 && TAG_STRIDE % 7 != 0 && TAG_STRIDE % 31 != 0 && TAG_STRIDE % 151 != 0);

/// The tags of live pools.
pub(crate) struct TagSpace {
    // parking_lot's, not `sync`'s: a static needs a const constructor, and the
    // registry is outside what the loom models explore.
    state: parking_lot::Mutex<TagState>,
}

/// Every tag is in exactly one place: not yet handed out (ordinals `fresh..` of the
/// order), carried by a live pool, or in the ring of tags given back. The ring is a
/// fixed array, so that taking and giving back never allocate.
struct TagState {
    /// Tags handed out for the first time so far: the first `fresh` of the order.
    fresh: usize,
    /// Tags given back, least recently given back first: `len` of them from `head`.
    ring: [u16; POOL_TAGS],
    head: usize,
    len: usize,
}

impl TagSpace {
    pub(crate) const fn new() -> TagSpace {
        TagSpace { state: parking_lot::Mutex::new(TagState { fresh: 0, ring: [0; POOL_TAGS], head: 0, len: 0 }) }
    }

    /// A tag that no live pool carries: a never-used one while any is left, else the
    /// least recently given back. None when every tag is taken.
    pub(crate) fn take(&self) -> Option<u16> {
        let mut st = self.state.lock();
        if st.fresh < POOL_TAGS {
            let i = st.fresh;
            st.fresh += 1;
            return Some((i * TAG_STRIDE % POOL_TAGS + 1) as u16);
        }
        if st.len == 0 {
            return None;
        }
        let tag = st.ring[st.head];
        st.head = (st.head + 1) % POOL_TAGS;
        st.len -= 1;
        Some(tag)
    }

    /// Gives back a tag from [`take`](Self::take) whose pool is gone.
    pub(crate) fn give_back(&self, tag: u16) {
        let mut st = self.state.lock();
        // Cannot overflow: only taken tags come back, and at most POOL_TAGS are.
        debug_assert!(st.len < POOL_TAGS);
        let at = (st.head + st.len) % POOL_TAGS;
        st.ring[at] = tag;
        st.len += 1;
    }
}

/// The process's registry of pool tags.
static TAGS: TagSpace = TagSpace::new();

/// A live pool's identity: the tag its handles carry, held until the identity is
/// dropped with its pool, and a serial never reused in the process.
#[derive(Debug)]
pub(crate) struct PoolId {
    tag: u16,
    serial: u64,
}

impl PoolId {
    /// A new identity, or None when [`POOL_TAGS`] pools are alive.
    pub(crate) fn new() -> Option<PoolId> {
        let tag = TAGS.take()?;
        static SERIALS: StdAtomicU64 = StdAtomicU64::new(1);
        // Relaxed: uniqueness comes from the read-modify-write itself.
        let serial = SERIALS.fetch_add(1, Ordering::Relaxed);
        Some(PoolId { tag, serial })
    }

    /// The tag in the pool's handles.
    #[inline]
    pub(crate) fn tag(&self) -> u16 {
        self.tag
    }

    /// The pool's serial: never 0, never another pool's in this process.
    #[inline]
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// The generation of the pool's never-used slots, drawn from its serial: should a
    /// destroyed pool's tag come back to a new pool, the old handles' generations
    /// still differ from the new pool's (unless by chance, one in 2^16).
    pub(crate) fn first_gen(&self) -> u16 {
        (self.serial.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u16
    }
}

impl Drop for PoolId {
    fn drop(&mut self) {
        TAGS.give_back(self.tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_fields() {
        let h = Handle::new(0xFFFE, 0xFFFF, u32::MAX - 1);
        assert_eq!((h.tag(), h.gen(), h.index()), (0xFFFE, 0xFFFF, Some(u32::MAX - 1)));
        assert!(h.to_raw() < (-4095i64) as u64, "never in the error range");
        assert_eq!(Handle::from_raw(1 << 48).index(), None);
    }

    #[test]
    fn live_tags_are_distinct_and_run_out_cleanly() {
        let space = Box::new(TagSpace::new());
        let mut seen = vec![false; 1 << 16];
        let mut order = Vec::with_capacity(POOL_TAGS);
        for _ in 0..POOL_TAGS {
            let t = space.take().expect("a tag while fewer than POOL_TAGS are taken");
            assert!(t != 0 && t != 0xFFFF, "tag {t:#x} would make handles 0-topped or errors");
            assert!(!seen[t as usize], "tag {t:#x} handed out twice while live");
            seen[t as usize] = true;
            order.push(t);
        }
        assert_eq!(space.take(), None, "every tag is live: creation must fail");
        assert_ne!(order[1], order[0].wrapping_add(1), "consecutive pools' tags are spread");
        // Given back in the order a, b, c: taken again in that order, never before.
        let (a, b, c) = (order[500], order[7], order[60000]);
        for t in [a, b, c] {
            space.give_back(t);
        }
        assert_eq!((space.take(), space.take(), space.take(), space.take()), (Some(a), Some(b), Some(c), None));
    }

    #[test]
    fn a_freed_tag_comes_back_only_after_every_other_free_tag() {
        let space = Box::new(TagSpace::new());
        // One pool lives throughout; a new pool is created and destroyed again and
        // again. The first destroyed pool's tag returns only at the 65534th creation.
        let old = space.take().unwrap();
        let first = space.take().unwrap();
        space.give_back(first);
        for i in 1..POOL_TAGS - 1 {
            let t = space.take().unwrap();
            assert!(t != first && t != old, "creation {i} reused a tag too early");
            space.give_back(t);
        }
        assert_eq!(space.take(), Some(first));
    }

    #[test]
    fn identities_are_unique_and_give_their_tag_back() {
        let a = PoolId::new().unwrap();
        let b = PoolId::new().unwrap();
        assert_ne!(a.tag(), b.tag());
        assert!(a.serial() != 0 && b.serial() > a.serial(), "serials only grow");
        let serial = a.serial();
        drop(a);
        // The serial never comes back.
        let c = PoolId::new().unwrap();
        assert!(c.serial() > serial && c.serial() > b.serial());
        assert_ne!(c.tag(), b.tag());
        // Generations drawn from consecutive serials differ.
        assert_ne!(b.first_gen(), c.first_gen());
    }
}
