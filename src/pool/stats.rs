//! Statistics: the pool's totals and the per-class table (in the spirit of the
//! kernel's debugfs `classes` file). Read without stopping the pool; per-class figures
//! are a consistent snapshot of their class (taken under its lock), totals are sums.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::layout::kernel::NR_GROUPS;
use crate::layout::zspage::ZsPage;
use crate::pool::PoolCore;

/// Pool totals (`struct zs_pool_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolInfo {
    /// Live objects.
    pub live_objects: u64,
    /// Sum of the sizes passed to malloc for live objects.
    pub requested_bytes: u64,
    /// Frames held.
    pub total_pages: u64,
    /// Bytes of metadata held outside the frames: handle table, descriptors, the
    /// frames' side-table words, the pool's own structures.
    pub meta_bytes: u64,
    /// Frames freed by compaction, cumulative.
    pub pages_compacted: u64,
    /// Objects moved by compaction, cumulative.
    pub objs_moved: u64,
    /// Objects compaction skipped because they were mapped or being read.
    pub compact_skipped_mapped: u64,
    /// Misuse refused, cumulative.
    pub misuse_events: u64,
    /// Frames moved by migration (defragmentation, adjacency), cumulative.
    pub frames_migrated: u64,
    /// Bytes reads and maps copied because the object was not contiguous, cumulative.
    pub read_copied_bytes: u64,
    /// Largest object the pool takes.
    pub max_object_size: u64,
    /// Bytes of a frame, the unit of `total_pages`.
    pub frame_size: u64,
}

impl PoolInfo {
    /// Frames plus metadata, in bytes: the footprint density is measured against.
    pub fn footprint(&self) -> u64 {
        self.total_pages * self.frame_size + self.meta_bytes
    }
}

/// One class (`struct zs_class_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassInfo {
    /// Its index (what `lookup_class_index` returns).
    pub index: usize,
    /// Slot size in bytes (a dense lane: the largest object, 4096).
    pub class_size: usize,
    /// Frames per zspage (a dense lane: its chain; a zspage made where the pool's
    /// page limit left fewer frames is shorter).
    pub pages_per_zspage: usize,
    /// Objects per zspage (a dense lane: 0, objects of any size share zspages).
    pub objs_per_zspage: usize,
    /// Zspages per fullness group: 0%, above 0 and under 10%, 10-19%, ..., 90-99%,
    /// 100% (whole percents, rounded down; a dense lane: of
    /// its bytes taken by objects).
    pub zspages: [u64; NR_GROUPS],
    /// Places in the class's zspages (a dense lane, which has no places: its live
    /// objects).
    pub objs_allocated: u64,
    /// Live objects.
    pub objs_inuse: u64,
    /// Frames held.
    pub pages_used: u64,
    /// Frames compaction could free now: whole zspages' worth of unused places (the
    /// kernel's zs_can_compact()).
    pub pages_freeable: u64,
}

impl PoolCore {
    /// Pool totals.
    pub fn info(&self) -> PoolInfo {
        // Frees pending for a lock are applied first, so the counts include none.
        self.drain_all();
        let mut i = PoolInfo::default();
        let mut descriptors = 0usize;
        for c in self.classes().iter() {
            // Relaxed: statistics; each is exact for its class at some instant.
            i.live_objects += c.live.load(Ordering::Relaxed) as u64;
            i.requested_bytes += c.requested.load(Ordering::Relaxed) as u64;
            descriptors += c.zspages.load(Ordering::Relaxed) * std::mem::size_of::<ZsPage>();
            descriptors += c.body_bytes.load(Ordering::Relaxed);
        }
        i.total_pages = self.total_pages() as u64;
        let own = std::mem::size_of::<PoolCore>()
            + std::mem::size_of_val(self.classes())
            + self.class_table().lookup_bytes()
            + self.deferred_bytes();
        i.meta_bytes = (self.handles().bytes() + descriptors + self.frames().side_table_bytes() + own) as u64;
        let n = self.counters();
        i.pages_compacted = n.pages_compacted.load(Ordering::Relaxed);
        i.objs_moved = n.objs_moved.load(Ordering::Relaxed);
        i.compact_skipped_mapped = n.compact_skipped.load(Ordering::Relaxed);
        i.misuse_events = n.misuse.load(Ordering::Relaxed);
        i.frames_migrated = n.frames_migrated.load(Ordering::Relaxed);
        i.read_copied_bytes = n.read_copied_bytes.load(Ordering::Relaxed);
        i.max_object_size = self.max_object_size() as u64;
        i.frame_size = self.frames().frame_size() as u64;
        i
    }

    /// The class whose index is `index` (as `lookup_class_index` returns).
    pub fn class_info(&self, index: usize) -> Result<ClassInfo> {
        let pos = self.class_table().by_index(index).ok_or(Error::Invalid("no class has that index"))?;
        let c = &self.classes()[pos];
        let mut st = c.state.lock();
        self.drain(pos, &mut st);
        let mut zspages = [0u64; NR_GROUPS];
        let (mut frames, mut allocated) = (0, 0);
        for zs in st.lists.all() {
            // SAFETY: list members are live descriptors of the locked class.
            let (z, body) = unsafe { (&*zs, &(*zs).state().body) };
            zspages[body.fullness()] += 1;
            frames += z.nframes as usize;
            allocated += body.objs_allocated();
        }
        // Relaxed: written under the lock we hold.
        let (live, requested) = (c.live.load(Ordering::Relaxed), c.requested.load(Ordering::Relaxed));
        drop(st);
        let nzspages = zspages.iter().sum::<u64>() as usize;
        let freeable = self.layout().freeable(&c.spec, nzspages, live, requested, self.frames().shift());
        Ok(ClassInfo {
            index,
            class_size: c.spec.size,
            pages_per_zspage: c.spec.frames,
            objs_per_zspage: c.spec.objs,
            zspages,
            objs_allocated: allocated as u64,
            objs_inuse: live as u64,
            pages_used: frames as u64,
            pages_freeable: freeable as u64,
        })
    }

    /// Frames compaction could free in class `ci` now, as counted without its lock
    /// (for the automatic trigger).
    pub(crate) fn freeable(&self, ci: usize) -> usize {
        let c = &self.classes()[ci];
        // Relaxed: an estimate; the compaction itself rechecks under the lock.
        let (zspages, live, requested) =
            (c.zspages.load(Ordering::Relaxed), c.live.load(Ordering::Relaxed), c.requested.load(Ordering::Relaxed));
        self.layout().freeable(&c.spec, zspages, live, requested, self.frames().shift())
    }

    /// Indices of every class, ascending.
    pub fn class_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.class_table().classes().iter().map(|c| c.index)
    }
}
