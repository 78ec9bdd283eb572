//! Zspages: the descriptor of a chain of frames holding the objects of one class (in
//! the dense layout, of one lane: objects of any size, `packed.rs`).
//!
//! In the kernel layout, objects are laid end to end over the chain, slot `i` at byte
//! `i * class size` of the chain (so an object may straddle two frames). The
//! descriptor keeps, beside the chain, one entry per object: for an allocated object
//! the index of its handle slot and its requested size (the back-reference compaction
//! follows, kept here rather than inside the object as the kernel does), for a free
//! one the next free object.
//!
//! Invariants of the kernel layout's zspages (checked by `Pool::check`; the dense
//! layout's are in `packed.rs`):
//! - `inuse + length(free list) == objs`, and the free list has no cycle;
//! - `group == fullness_group(inuse, objs)` and the zspage is on that group's list;
//! - frame `k` of the chain has the side-table word (type, k, this descriptor);
//! - every allocated object's slot is LIVE and locates this object.
//!
//! Which fields are protected by what: `class`, `nframes` and `objs` never change;
//! `frames` is written at birth (and by frame migration, with every object of the frame
//! claimed), and read without locks by pinned readers; everything in [`ZsPageState`]
//! is protected by the class lock.

use std::cell::UnsafeCell;

use crate::sync::{hg, AtomicU32, Ordering};

use crate::class::MAX_CHAIN;
use crate::os::PAGE_SHIFT;
use crate::packed::Extents;

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

/// No object / end of list.
pub const NONE: u16 = u16::MAX;

/// Per-object entry of a zspage.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(2))]
pub struct ObjMeta {
    /// Allocated: the handle slot's index. Free: the next free object (or NONE).
    pub link: u32,
    /// Allocated: the size passed to malloc. Free: 0.
    pub size: u16,
}

/// The state of a zspage that the class lock protects.
pub struct ZsPageState {
    /// Objects allocated.
    pub inuse: u16,
    /// First free object, or NONE.
    pub free_head: u16,
    /// The fullness group whose list this zspage is on.
    pub group: u8,
    /// Neighbours on that list.
    pub prev: *mut ZsPage,
    pub next: *mut ZsPage,
    /// What the zspage holds, by layout.
    pub body: Body,
}

/// A zspage's objects: fixed slots (the kernel's layout) or packed (the dense one).
pub enum Body {
    /// One entry per slot of the class.
    Slots(Box<[ObjMeta]>),
    /// Objects of any size, end to end (`packed.rs`).
    Packed(Extents),
}

impl ZsPageState {
    /// The per-slot entries of a kernel-layout zspage.
    #[inline]
    pub fn objs(&mut self) -> &mut [ObjMeta] {
        match &mut self.body {
            Body::Slots(o) => o,
            Body::Packed(_) => unreachable!("a dense zspage has no fixed slots"),
        }
    }

    /// The contents of a dense zspage.
    #[inline]
    pub fn ext(&mut self) -> &mut Extents {
        match &mut self.body {
            Body::Packed(x) => x,
            Body::Slots(_) => unreachable!("a kernel-layout zspage is not packed"),
        }
    }

    /// Bytes of metadata the body holds outside the descriptor.
    pub fn body_bytes(&self) -> usize {
        match &self.body {
            Body::Slots(o) => std::mem::size_of_val(&**o),
            Body::Packed(x) => x.meta_bytes(),
        }
    }
}

/// A zspage descriptor. 64-byte aligned: the side-table word keeps its low six bits.
#[repr(C, align(64))]
pub struct ZsPage {
    /// Position of the class in the pool's class table.
    pub class: u16,
    /// Frames in the chain.
    pub nframes: u8,
    /// The chain's pfns.
    pub frames: [AtomicU32; MAX_CHAIN],
    state: UnsafeCell<ZsPageState>,
}

impl ZsPage {
    /// A descriptor for a new zspage of `objs` objects on `frames`, every object free;
    /// `objs` 0 makes a dense (packed) zspage.
    pub fn new(class: usize, frames: &[u32], objs: usize) -> Box<ZsPage> {
        let body = if objs == 0 {
            Body::Packed(Extents::new(frames.len()))
        } else {
            Body::Slots(
                (0..objs)
                    .map(|i| ObjMeta { link: if i + 1 < objs { i as u32 + 1 } else { NONE as u32 }, size: 0 })
                    .collect(),
            )
        };
        let pfns = std::array::from_fn(|k| AtomicU32::new(frames.get(k).copied().unwrap_or(0)));
        let zs = Box::new(ZsPage {
            class: class as u16,
            nframes: frames.len() as u8,
            frames: pfns,
            state: UnsafeCell::new(ZsPageState {
                inuse: 0,
                free_head: 0,
                group: GROUP_EMPTY as u8,
                prev: std::ptr::null_mut(),
                next: std::ptr::null_mut(),
                body,
            }),
        });
        // The frame list is read without locks (the scanner) while migration writes
        // it: only ever accessed atomically.
        hg::untracked(zs.frames.as_ptr().cast(), std::mem::size_of_val(&zs.frames));
        zs
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

    /// Arena location of byte `off` of the chain.
    #[inline]
    pub fn loc_of(&self, off: usize) -> u64 {
        ((self.frame(off >> PAGE_SHIFT) as u64) << PAGE_SHIFT) | (off & ((1 << PAGE_SHIFT) - 1)) as u64
    }

    /// The lock-protected state.
    ///
    /// # Safety
    /// The caller holds the lock of this zspage's class, and no other reference
    /// returned by this function for the same zspage is alive.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn state(&self) -> &mut ZsPageState {
        // SAFETY: exclusive access is guaranteed by the class lock (caller's contract).
        unsafe { &mut *self.state.get() }
    }

    /// Bytes of metadata a kernel-layout descriptor of `objs` objects holds.
    pub fn meta_bytes(objs: usize) -> usize {
        std::mem::size_of::<ZsPage>() + objs * std::mem::size_of::<ObjMeta>()
    }
}

impl Drop for ZsPage {
    fn drop(&mut self) {
        // The memory goes back to the heap, for any use.
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
    use crate::os::PAGE_SIZE;

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
    fn descriptor_layout() {
        assert_eq!(std::mem::align_of::<ZsPage>(), 64);
        assert_eq!(std::mem::size_of::<ZsPage>(), 128, "the README counts 128 bytes a descriptor");
        assert_eq!(std::mem::size_of::<ObjMeta>(), 6);
        let z = ZsPage::new(3, &[7, 8], 5);
        assert_eq!(z.frame_list().collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(z.loc_of(4096 + 5), (8 << 12) + 5);
        // SAFETY: this test is the only user of the descriptor.
        let st = unsafe { z.state() };
        assert_eq!({ st.objs()[4].link }, NONE as u32);
        let d = ZsPage::new(0, &[1, 2], 0);
        // SAFETY: as above.
        assert_eq!(unsafe { d.state() }.ext().cap(), 2 * PAGE_SIZE);
    }
}
