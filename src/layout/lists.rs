//! A class's zspages, on lists: doubly linked through their descriptors, one list per
//! fullness group (the kernel layout) or per placement bucket, with the drain list
//! (the dense layout). Which list a zspage belongs on, and which list malloc and
//! compaction look at, is the layout's choice (`layout/mod.rs`); this module only keeps
//! the lists.
//!
//! Invariants (checked by `Pool::check`):
//! - every zspage of the class is on exactly one list, the one its `group` names, and
//!   the links run both ways;
//! - `counts[g]` is the length of list `g`;
//! - bit `g` of `nonempty` is set exactly when list `g` is not empty, for `g` below
//!   [`TOP_BUCKET`].
//!
//! Everything here is protected by the class lock, which the holder of a `&mut Lists`
//! (or a `&Lists` borrowed from the lock's guard) holds.

use crate::layout::dense::{Arrivals, NR_LISTS, TOP_BUCKET};
use crate::layout::zspage::ZsPage;

/// The lists of one class (see the module comment):
///
/// ```text
/// counts[g] == length of list g        nonempty bit g  <=>  heads[g] != null  (g < TOP_BUCKET)
/// ```
///
/// Debug builds check, after every change, that a list is counted empty exactly when
/// it is, in the count and in the bitmap.
pub(crate) struct Lists {
    /// Heads of the lists: the fullness groups (kernel layout, the first
    /// `NR_GROUPS`), or the placement buckets and the drain list (dense layout).
    heads: [*mut ZsPage; NR_LISTS],
    /// Zspages per list.
    counts: [usize; NR_LISTS],
    /// Bit `g` set when list `g` is not empty, for the lists below [`TOP_BUCKET`]
    /// (the dense layout's top bucket and drain list are looked at directly; the
    /// kernel layout's fullness groups are all below it).
    nonempty: u64,
    /// Dense layout: the sizes that opened its zspages, which choose the length of a
    /// new zspage.
    pub arrivals: Arrivals,
}

const _: () = assert!(TOP_BUCKET <= 64 && crate::layout::kernel::NR_GROUPS <= TOP_BUCKET, "the list bitmap is a u64");

// SAFETY: the raw pointers name descriptors owned by the pool; they are only followed
// while the class lock around the lists is held.
unsafe impl Send for Lists {}

impl Lists {
    /// Empty lists.
    pub(crate) fn new() -> Lists {
        Lists {
            heads: [std::ptr::null_mut(); NR_LISTS],
            counts: [0; NR_LISTS],
            nonempty: 0,
            arrivals: Arrivals::default(),
        }
    }

    /// The head of list `g` (null when empty).
    #[inline]
    pub(crate) fn head(&self, g: usize) -> *mut ZsPage {
        self.heads[g]
    }

    /// Zspages on list `g`.
    pub(crate) fn count(&self, g: usize) -> usize {
        self.counts[g]
    }

    /// Zspages on every list.
    pub(crate) fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// The lists below [`TOP_BUCKET`] that are not empty, as a bitmap.
    #[inline]
    pub(crate) fn nonempty(&self) -> u64 {
        self.nonempty
    }

    /// Puts `zs` at the head of list `g`.
    ///
    /// # Safety
    /// 1. `zs` is a live descriptor of this class, on no list;
    /// 2. the class lock is held (these lists are its);
    /// 3. no reference to `zs`'s state is alive.
    pub(crate) unsafe fn push(&mut self, zs: *mut ZsPage, g: usize) {
        // SAFETY: `zs` is live (1), so dereferenceable; `state` asks for its class's
        // lock (2) and no other reference to its state (3).
        let s = unsafe { (*zs).state() };
        s.group = g as u8;
        s.prev = std::ptr::null_mut();
        s.next = self.heads[g];
        if !s.next.is_null() {
            // SAFETY: the old head is on a list of this class, so a live descriptor of
            // it; the class lock is held (2); it is not `zs` (on no list, 1), and no
            // other reference to its state is taken here.
            unsafe { (*s.next).state().prev = zs };
        }
        self.heads[g] = zs;
        self.counts[g] += 1;
        if g < TOP_BUCKET {
            self.nonempty |= 1 << g;
        }
        self.debug_check(g);
    }

    /// Takes `zs` off its list.
    ///
    /// # Safety
    /// 1. `zs` is a live descriptor on one of this class's lists;
    /// 2. the class lock is held;
    /// 3. no reference to `zs`'s state is alive.
    pub(crate) unsafe fn unlink(&mut self, zs: *mut ZsPage) {
        // SAFETY: `zs` is live (1); `state` asks for its class's lock (2) and no other
        // reference to its state (3).
        let s = unsafe { (*zs).state() };
        let g = s.group as usize;
        let (prev, next) = (s.prev, s.next);
        if prev.is_null() {
            self.heads[g] = next;
        } else {
            // SAFETY: `zs`'s neighbours are on its list (1), so live descriptors of
            // this class; the class lock is held (2); a neighbour is not `zs`, and the
            // reference to its state lasts this statement.
            unsafe { (*prev).state().next = next };
        }
        if !next.is_null() {
            // SAFETY: the other neighbour, for the same reasons.
            unsafe { (*next).state().prev = prev };
        }
        self.counts[g] -= 1;
        if g < TOP_BUCKET && self.heads[g].is_null() {
            self.nonempty &= !(1 << g);
        }
        self.debug_check(g);
    }

    /// The equations of [`Lists`] for list `g`, in debug builds.
    #[inline]
    fn debug_check(&self, g: usize) {
        debug_assert_eq!(self.counts[g] == 0, self.heads[g].is_null(), "list {g} counted wrong");
        debug_assert!(g >= TOP_BUCKET || (self.nonempty >> g & 1 == 1) != self.heads[g].is_null());
    }

    /// Moves `zs` from its list to the head of list `g`.
    ///
    /// # Safety
    /// 1. `zs` is a live descriptor on one of this class's lists;
    /// 2. the class lock is held;
    /// 3. no reference to `zs`'s state is alive.
    #[inline]
    pub(crate) unsafe fn move_to(&mut self, zs: *mut ZsPage, g: usize) {
        // SAFETY: `unlink`'s preconditions are this function's (1, 2, 3); after it `zs`
        // is live and on no list, and `unlink`'s state reference has ended, which is
        // what `push` asks with the lock still held.
        unsafe {
            self.unlink(zs);
            self.push(zs, g);
        }
    }

    /// The zspages on list `g`, head first. `&self` is borrowed from the lock's
    /// guard, so they are live descriptors of this class while the iterator lives;
    /// each one's successor is read before it is yielded, so the caller may free a
    /// yielded zspage (never one still ahead).
    pub(crate) fn list(&self, g: usize) -> impl Iterator<Item = *mut ZsPage> + '_ {
        let mut next = self.heads[g];
        std::iter::from_fn(move || {
            let zs = next;
            if zs.is_null() {
                return None;
            }
            // SAFETY: `zs` is on a list of this class, so a live descriptor of it
            // (it stays so while the lock's guard, which `&self` is borrowed from,
            // lives); the lock is held; `zs` is not yet yielded, so the caller has no
            // reference to its state, and this one ends with the statement.
            next = unsafe { (*zs).state() }.next;
            Some(zs)
        })
    }

    /// The zspages on the lists `lists`, list by list.
    pub(crate) fn lists(&self, lists: std::ops::Range<usize>) -> impl Iterator<Item = *mut ZsPage> + '_ {
        lists.flat_map(move |g| self.list(g))
    }

    /// Every zspage of the class.
    pub(crate) fn all(&self) -> impl Iterator<Item = *mut ZsPage> + '_ {
        self.lists(0..NR_LISTS)
    }
}
