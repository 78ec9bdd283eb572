//! The pfn scanner: walks the arena's frames in pfn order and classifies each from its
//! side-table word alone, plus the descriptor the word points to.
//!
//! Frames change under it: a zspage dies and its frames are freed, a frame is reused
//! by another zspage, migration moves a frame's contents elsewhere. The scanner holds
//! an epoch guard (renewed every [`REPIN_EVERY`] frames, so it never holds back
//! reclamation for long), so a descriptor it reached through a word cannot be freed
//! while it reads it. It validates what it read (the descriptor must list this pfn at
//! the word's index) and re-reads the word when the frame changed; a frame that keeps
//! changing is counted as in transit, never misread. Every frame has order 0: the scan
//! steps by one and never infers the extent of a run from a word.
//!
//! The walk holds the side table's walk guard from before it reads the top to its
//! end, so a shrink that gives the table's tail back waits for it (and a walk that
//! starts after the shrink reads the lowered top).

use crate::frames::side::FrameType;
use crate::layout::zspage::ZsPage;
use crate::pool::PoolCore;
use crate::sync::epoch;

/// Frames between renewals of the scanner's epoch guard.
pub const REPIN_EVERY: u32 = 1024;
/// Reads of a changing frame before it is reported in transit.
const RETRIES: usize = 8;

/// What one frame is, as the scanner saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Not part of any zspage.
    Free,
    /// Frame `index` of a zspage of the class with this index.
    Zspage { class_index: usize, index: usize },
    /// The single frame of a huge zspage of the class with this index.
    Huge { class_index: usize },
    /// Changing while the scanner looked (a migration or a zspage's birth or death).
    Transit,
}

/// Frames by type and class, like the kernel's page-types tool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Frames the arena can address.
    pub capacity: usize,
    /// Frames currently committed (readable and writable).
    pub committed: usize,
    /// Bytes of the arena's reservation mapped (its share of the virtual size).
    pub arena_mapped_bytes: usize,
    /// Bytes of the side table mapped.
    pub side_table_mapped_bytes: usize,
    /// Every pfn ever handed out is below this.
    pub top: usize,
    /// Free frames below the top.
    pub free: usize,
    /// Frames of multi-object zspages.
    pub zspage: usize,
    /// Frames of huge (one-object) zspages.
    pub huge: usize,
    /// Frames seen changing.
    pub transit: usize,
    /// Frames per class, indexed by class index (the kernel's numbering).
    pub by_class: Vec<usize>,
}

impl PoolCore {
    /// Visits every frame below the arena's top in pfn order. `f` runs under the walk
    /// guard, so it must not call anything that takes it (a census, a shrink).
    pub(crate) fn scan_frames(&self, mut f: impl FnMut(u32, FrameKind)) {
        // The side table's extent stays mapped for the walk (a shrink waits for it).
        let _extent = self.frames().walk_guard();
        let top = self.frames().top() as u32;
        let mut guard = epoch::pin();
        for pfn in self.frames().bottom() as u32..top {
            if pfn % REPIN_EVERY == 0 {
                guard.repin();
            }
            f(pfn, self.classify(pfn, &guard));
        }
    }

    /// Classifies one frame (see the module comment).
    fn classify(&self, pfn: u32, _guard: &epoch::Guard) -> FrameKind {
        for _ in 0..RETRIES {
            // SAFETY: `pfn` is below the top read under the walk guard, which the
            // caller (`scan_frames`) still holds, so its word stays mapped.
            let w = unsafe { self.frames().side().get(pfn) };
            let ty = w.frame_type();
            if ty == FrameType::Free {
                return FrameKind::Free;
            }
            // SAFETY: the word was non-free when read under `_guard`; descriptors are
            // handed to the epoch collector only after their words are cleared, so this
            // one stays allocated while the guard lives. Its `class` never changes and
            // `frames` are atomics, so reading them races with nothing.
            let (class, listed) = unsafe {
                let zs = &*ZsPage::of(w);
                (zs.class as usize, w.index() < zs.nframes as usize && zs.frame(w.index()) == pfn)
            };
            // Consistent: the descriptor lists this pfn at the word's index, and the word
            // did not change meanwhile.
            // SAFETY: the same word as the first read: below the top read under the
            // walk guard, which the caller still holds.
            if listed && unsafe { self.frames().side().get(pfn) } == w {
                let class_index = self.classes()[class].spec.index;
                return match ty {
                    FrameType::Huge => FrameKind::Huge { class_index },
                    _ => FrameKind::Zspage { class_index, index: w.index() },
                };
            }
        }
        FrameKind::Transit
    }

    /// Counts frames by type and class, once the frees pending in the lanes are
    /// applied (a zspage they empty holds no frame).
    pub fn census(&self) -> Census {
        self.drain_all();
        let mut c = Census {
            capacity: self.frames().capacity(),
            committed: self.frames().committed(),
            arena_mapped_bytes: self.frames().mapped_bytes(),
            side_table_mapped_bytes: self.frames().side().mapped_bytes(),
            by_class: vec![0; self.class_table().nr_full_classes()],
            ..Census::default()
        };
        self.scan_frames(|_, kind| match kind {
            FrameKind::Free => c.free += 1,
            FrameKind::Transit => c.transit += 1,
            FrameKind::Huge { class_index } => {
                c.huge += 1;
                c.by_class[class_index] += 1;
            }
            FrameKind::Zspage { class_index, .. } => {
                c.zspage += 1;
                c.by_class[class_index] += 1;
            }
        });
        c.top = c.free + c.zspage + c.huge + c.transit;
        c
    }

    /// What every frame below the arena's top is, in pfn order (one walk, as
    /// [`census`](Self::census) counts them).
    pub fn frame_kinds(&self) -> Vec<FrameKind> {
        let mut kinds = Vec::new();
        self.scan_frames(|_, kind| kinds.push(kind));
        kinds
    }
}
