//! Zspages: the descriptor of a chain of frames holding the objects of one class (in
//! the dense layout, of one lane: objects of any size).
//!
//! The descriptor keeps, beside the chain, its place on its class's lists and its
//! contents as its layout keeps them ([`Body`]): in the kernel layout an entry per
//! fixed place and a free list (`layout/kernel.rs`), in the dense layout the holes where
//! objects were freed (`layout/dense.rs`). What a layout does with a body (place an
//! object, remove one, list them, check them) is in `layout/mod.rs`, the one place that
//! matches on it.
//!
//! Its invariants are written beside [`ZsPage`]; each body's own beside the body.
//!
//! Which fields are protected by what: `class` and `nframes` never change; `frames` is
//! written at birth (and by frame migration, with every object of the frame claimed),
//! and read without locks by pinned readers; everything in [`ZsPageState`] is
//! protected by the class lock.

use std::cell::UnsafeCell;

use crate::sync::{hg, AtomicU32, Ordering};

use crate::frames::side::{FrameType, FrameWord};
use crate::frames::{location, offset_in_frame};
use crate::layout::classes::MAX_FRAMES;
use crate::layout::dense::FreeSpace;
use crate::layout::kernel::Objects;

/// The state of a zspage that the class lock protects.
pub struct ZsPageState {
    /// The list this zspage is on.
    pub group: u8,
    /// Neighbours on that list.
    pub prev: *mut ZsPage,
    pub next: *mut ZsPage,
    /// What the zspage holds, by layout.
    pub body: Body,
}

/// A zspage's objects: fixed places (the kernel's layout) or packed (the dense one).
pub enum Body {
    /// An entry per place of the class, and a free list (`layout/kernel.rs`).
    Kernel(Objects),
    /// Objects of any size, end to end: the holes between them (`layout/dense.rs`).
    Dense(FreeSpace),
}

// Loom's atomics are larger than the real ones: its descriptors are too.
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<ZsPage>() == crate::layout::dense::DESCRIPTOR_BYTES);

/// A zspage descriptor. 64-byte aligned: the side-table word keeps its low six bits.
///
/// Invariants (checked by `Pool::check`):
/// - `state.group` is the list the zspage is on, and the one its body calls for
///   ([`Body::list`]), but for the dense layout's drain list, where compaction keeps
///   the zspages it empties; a zspage on a list is never empty;
/// - `1 <= nframes <= ` the class's chain (equal to it in the kernel layout), and frame
///   `k` of the chain has the side-table word (type, k, this descriptor);
/// - every object of the body has a handle slot that is not FREE and locates it.
#[repr(C, align(64))]
pub struct ZsPage {
    /// Position of the class in the pool's class table.
    pub class: u16,
    /// Frames in the chain.
    pub nframes: u8,
    /// The chain's pfns: up to 16, and a 17th in a dense pool of objects above 61440
    /// bytes (`layout/classes.rs`, `MAX_FRAMES`), in what would be padding before the
    /// 8-byte aligned state, so that the descriptor keeps its 128 bytes.
    pub frames: [AtomicU32; MAX_FRAMES],
    state: UnsafeCell<ZsPageState>,
}

impl ZsPage {
    /// A descriptor for a new zspage of class `class` on `frames`, holding `body`
    /// (empty), on no list, boxed (the library makes its descriptors with
    /// [`create`](Self::create)).
    #[cfg(any(test, loom, zs_valgrind))]
    pub fn new(class: usize, frames: &[u32], body: Body) -> Box<ZsPage> {
        let zs = Box::new(Self::value(class, frames, body));
        // The frame list is read without locks (the scanner) while migration writes
        // it: only ever accessed atomically.
        hg::untracked(zs.frames.as_ptr().cast(), std::mem::size_of_val(&zs.frames));
        zs
    }

    /// The descriptor [`new`](Self::new) boxes.
    fn value(class: usize, frames: &[u32], body: Body) -> ZsPage {
        let pfns = std::array::from_fn(|k| AtomicU32::new(frames.get(k).copied().unwrap_or(0)));
        ZsPage {
            class: class as u16,
            nframes: frames.len() as u8,
            frames: pfns,
            state: UnsafeCell::new(ZsPageState {
                group: 0,
                prev: std::ptr::null_mut(),
                next: std::ptr::null_mut(),
                body,
            }),
        }
    }

    /// The pfn of frame `k` of the chain.
    #[inline]
    pub fn frame(&self, k: usize) -> u32 {
        // Relaxed: the pfn was published with the side-table word (Release/Acquire) or
        // the slot word that led the reader here; migration changes it only while every
        // object of that frame is claimed.
        self.frames[k].load(Ordering::Relaxed)
    }

    /// The chain's pfns.
    pub fn frame_list(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.nframes as usize).map(|k| self.frame(k))
    }

    /// Arena location of byte `off` of the chain, whose frames are of `1 << shift`
    /// bytes.
    #[inline]
    pub fn loc_of(&self, off: usize, shift: u32) -> u64 {
        location(self.frame(off >> shift), off & ((1 << shift) - 1), shift)
    }

    /// The offset in its chain of location `loc`, which lies in frame `k` of the chain
    /// (the side-table word of its frame says `k`), frames of `1 << shift` bytes:
    /// [`loc_of`](Self::loc_of)'s inverse.
    #[inline]
    pub fn offset_in_chain(k: usize, loc: u64, shift: u32) -> usize {
        (k << shift) + offset_in_frame(loc, shift)
    }

    /// The side-table word of frame `k` of the zspage at `zs`, of type `ty`.
    #[inline]
    pub fn word(zs: *const ZsPage, ty: FrameType, k: usize) -> FrameWord {
        FrameWord::new(ty, k, zs as usize)
    }

    /// The zspage a side-table word names: its owner (null for a free frame). Every
    /// owner the pool stores is a zspage ([`word`](Self::word)).
    #[inline]
    pub fn of(w: FrameWord) -> *mut ZsPage {
        w.owner() as *mut ZsPage
    }

    /// Starts bringing in the line of `zs`'s state, for a read under the class lock a
    /// little later. A hint: `zs` need not be live.
    #[inline(always)]
    pub fn prefetch_state(zs: *const ZsPage) {
        crate::sync::prefetch(zs.cast::<u8>().wrapping_add(std::mem::offset_of!(ZsPage, state)));
    }

    /// The lock-protected state.
    ///
    /// The library holds a reference this returns only within one statement, or a
    /// block that calls nothing that takes another (the lists' and the layout's
    /// functions take their own): so a function that is handed a zspage under the
    /// class lock meets no reference to its state, which is how the callers of this
    /// answer the second precondition.
    ///
    /// # Safety
    /// 1. The caller holds the lock of this zspage's class;
    /// 2. no other reference returned by this function for the same zspage is alive.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn state(&self) -> &mut ZsPageState {
        // SAFETY: every access to the state is through this function, under the class
        // lock (1), so no other thread touches it; and no other reference of this
        // thread to it is alive (2): this one is exclusive.
        unsafe { &mut *self.state.get() }
    }
}

/// The descriptors' store (`layout/slab.rs`). Loom's descriptors are larger and are
/// boxed; so are those of the helgrind build (`--cfg zs_valgrind`): helgrind takes a
/// block malloc hands out as new memory, where a slot the store hands out again would
/// look to it like one memory written by two threads with nothing between them (the
/// store's lock is parking_lot's, which helgrind does not see).
#[cfg(not(any(loom, zs_valgrind)))]
static DESCRIPTORS: crate::layout::slab::Slab = crate::layout::slab::Slab::new(std::mem::size_of::<ZsPage>());

impl ZsPage {
    /// A new descriptor, as [`new`](Self::new) makes it, in the descriptors' store;
    /// `Err(errno)` if the store needed memory and the OS refused it. It is freed with
    /// [`destroy`](Self::destroy).
    pub fn create(class: usize, frames: &[u32], body: Body) -> Result<*mut ZsPage, i32> {
        #[cfg(not(any(loom, zs_valgrind)))]
        {
            let p = DESCRIPTORS.alloc()?.cast::<ZsPage>();
            // SAFETY: a slot of the descriptors' store, of a descriptor's size and
            // alignment (a 128-byte slot aligned to 128), unused: written whole.
            unsafe { p.write(Self::value(class, frames, body)) };
            Ok(p)
        }
        #[cfg(any(loom, zs_valgrind))]
        Ok(Box::into_raw(Self::new(class, frames, body)))
    }

    /// Drops a descriptor and gives its memory back.
    ///
    /// # Safety
    /// `zs` came from [`create`](Self::create), is not destroyed yet, and no one
    /// reaches it any more.
    pub unsafe fn destroy(zs: *mut ZsPage) {
        #[cfg(not(any(loom, zs_valgrind)))]
        // SAFETY: a live descriptor in the store that no one else reaches (the
        // contract): dropped once, then its slot given back once.
        unsafe {
            std::ptr::drop_in_place(zs);
            DESCRIPTORS.free(zs.cast());
        }
        #[cfg(any(loom, zs_valgrind))]
        // SAFETY: made by Box::into_raw (`create`), unreachable, destroyed once.
        drop(unsafe { Box::from_raw(zs) });
    }
}

impl Drop for ZsPage {
    fn drop(&mut self) {
        // The memory goes back to its store, for any use.
        hg::tracked(self.frames.as_ptr().cast(), std::mem::size_of_val(&self.frames));
    }
}

/// Sends a descriptor pointer to the epoch collector.
pub(crate) struct DeferredFree(pub *mut ZsPage);
// SAFETY: the descriptor is unreachable when it is deferred; whichever thread runs the
// destructor is its only user.
unsafe impl Send for DeferredFree {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_layout() {
        assert_eq!(std::mem::align_of::<ZsPage>(), 64);
        assert_eq!(std::mem::size_of::<ZsPage>(), 128, "the README counts 128 bytes a descriptor");
        assert_eq!(std::mem::offset_of!(ZsPage, frames) + 4 * MAX_FRAMES, std::mem::offset_of!(ZsPage, state));
        let pfns: Vec<u32> = (100..117).collect();
        let z = ZsPage::new(0, &pfns, Body::Dense(FreeSpace::with_bands(17 * 4096, true)));
        assert_eq!(z.frame_list().collect::<Vec<_>>(), pfns, "17 frames");
        assert_eq!(z.loc_of(16 * 4096 + 9, 12), (116 << 12) + 9);
        let w = ZsPage::word(&*z, FrameType::Zspage, 16);
        assert_eq!(
            (w.index(), w.frame_type(), ZsPage::of(w) as *const ZsPage),
            (16, FrameType::Zspage, &*z as *const _)
        );
        let z = ZsPage::new(3, &[7, 8], Body::Kernel(Objects::new(5)));
        assert_eq!(z.frame_list().collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(z.loc_of(4096 + 5, 12), (8 << 12) + 5);
        assert_eq!(z.loc_of(16384 + 5, 14), (8 << 14) + 5);
        assert_eq!(ZsPage::offset_in_chain(1, (8 << 16) + 5, 16), 65536 + 5);
        let d = ZsPage::new(0, &[1, 2], Body::Dense(FreeSpace::new(2)));
        // SAFETY: this test is the only user of the descriptor.
        let Body::Dense(x) = &unsafe { d.state() }.body else { panic!("a dense body") };
        assert_eq!(x.cap(), 2 * 4096);
    }
}
