//! The C structs, enums and constants of the ABI (`include/zsmalloc.h` declares them
//! from here). Every extension struct starts with its `size` as the caller was
//! compiled, and the library reads and writes only that many bytes of it
//! (`read_sized`, `write_out` in `ffi/mod.rs`).

use std::ffi::{c_uint, c_ulong};

use crate::facade::Pool;
use crate::pool::config::AllocFlags;

/// Largest object, in bytes, of a pool of 4 KiB frames and the default
/// `max_object_size`, kept for source compatibility: a pool's own limit is its frame
/// size by default (as the kernel's `ZS_MAX_ALLOC_SIZE` is `PAGE_SIZE`) or its
/// `max_object_size`, and `zs_pool_info` reports it.
pub const ZS_MAX_ALLOC_SIZE: usize = 4096;
/// `zs_malloc` flag: fail with `-ENOMEM` rather than take a new frame.
pub const ZS_ALLOC_NOGROW: c_uint = 1;
/// Number of fullness groups in `zs_class_info.zspages`.
pub const ZS_NR_FULLNESS_GROUPS: usize = 12;

// The header is generated from these files alone, so its constants are literals;
// these tie them to the definitions they restate.
const _: () = assert!(ZS_MAX_ALLOC_SIZE == crate::frames::MIN_FRAME_SIZE);
const _: () = assert!(ZS_NR_FULLNESS_GROUPS == crate::layout::kernel::NR_GROUPS);
const _: () = assert!(ZS_ALLOC_NOGROW == AllocFlags::NOGROW.0);
const _: () = assert!(ZS_MAX_CLASSES >= 255, "the kernel layout's full table has 255 classes");

/// An opaque pool.
pub struct zs_pool {
    pub(crate) pool: Pool,
}

/// How a mapping will be used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum zs_mapmode {
    /// Read, and stored back at unmap.
    ZS_MM_RW = 0,
    /// Read only.
    ZS_MM_RO = 1,
    /// Write only: stored at unmap.
    ZS_MM_WO = 2,
}

/// A class layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum zs_layout {
    /// This library's denser layout (the default): no size classes; objects of every
    /// size share zspages, packed end to end, each taking exactly its size (no
    /// alignment). Its "classes" are lanes, one per CPU up to 16, each with its own
    /// lock: a thread allocates in its lane.
    ZS_LAYOUT_DENSE = 0,
    /// The kernel's exact class table.
    ZS_LAYOUT_KERNEL = 1,
}

/// A `zs_mapmode` as C passes it: any integer, checked before use (an out-of-range
/// value in a Rust enum would be undefined behaviour). The header names the enum.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct MapModeArg(pub c_uint);

/// A `zs_layout` as C stores it; see [`MapModeArg`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct LayoutArg(pub c_uint);

/// The kernel's pool statistics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct zs_pool_stats {
    /// Frames freed by compaction, cumulative.
    pub pages_compacted: c_ulong,
}

/// Pool configuration for `zs_create_pool_with`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct zs_pool_config {
    /// `sizeof(struct zs_pool_config)` as the caller was compiled.
    pub size: usize,
    /// Most frames the pool may hold; 0 = no limit.
    pub max_pages: c_ulong,
    /// Most frames per zspage, 4..16; 0 = the layout's default.
    pub chain_size: c_uint,
    /// The class layout.
    pub layout: LayoutArg,
    /// Automatic compaction: compact a class on a background thread once compaction
    /// could free this many frames in it; 0 = off (the default).
    pub auto_compact_pages: c_ulong,
    /// Automatic compaction: most frames freed per second; 0 = no bound.
    pub auto_compact_max_pages_per_sec: c_ulong,
    /// Automatic compaction: how often the thread looks, in milliseconds; 0 = 100.
    pub auto_compact_interval_ms: c_uint,
    /// Largest object the pool takes, in bytes, up to 65536; 0 = the frame size.
    pub max_object_size: c_uint,
    /// Bytes of a frame: 0 = the system's page size; otherwise a power of two from
    /// 4096 to 65536 and a multiple of the page size (`EINVAL` else).
    pub frame_size: c_uint,
    /// 1: fault in the arena's frames a commit step (2 MiB) at a time as the pool
    /// grows, rather than a page at a time on first write (less CPU for a pool that
    /// fills fast, up to a step of resident memory ahead of use); 0: on first write
    /// (the default); other values `EINVAL`. Eight bytes wide, so that it starts past
    /// the struct as the previous header declared it (`frame_size` and 4 bytes of
    /// padding, 56 bytes): a caller compiled with that header, which may leave its
    /// padding uninitialised, passes `size` 56 and this field is not read.
    pub prefault: c_ulong,
}

/// Pool statistics for `zs_pool_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct zs_pool_info {
    /// `sizeof(struct zs_pool_info)` as the caller was compiled.
    pub size: usize,
    /// Live objects.
    pub live_objects: c_ulong,
    /// Sum of sizes passed to zs_malloc, live objects.
    pub requested_bytes: c_ulong,
    /// Frames held.
    pub total_pages: c_ulong,
    /// Metadata held outside the frames, in bytes.
    pub meta_bytes: c_ulong,
    /// Frames freed by compaction, cumulative.
    pub pages_compacted: c_ulong,
    /// Objects moved by compaction, cumulative.
    pub objs_moved: c_ulong,
    /// Objects compaction skipped: mapped or being read.
    pub compact_skipped_mapped: c_ulong,
    /// Misuse refused, cumulative.
    pub misuse_events: c_ulong,
    /// Frames moved by migration (zs_defragment, zs_make_adjacent), cumulative.
    pub frames_migrated: c_ulong,
    /// Bytes reads and maps copied because the object was not contiguous, cumulative.
    pub read_copied_bytes: c_ulong,
    /// Largest object the pool takes (its `max_object_size`, the frame size by
    /// default).
    pub max_object_size: c_ulong,
    /// Bytes of a frame (the unit of `total_pages` and `zs_get_total_pages`).
    pub frame_size: c_ulong,
}

/// Per-class statistics for `zs_class_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct zs_class_info {
    /// `sizeof(struct zs_class_info)` as the caller was compiled.
    pub size: usize,
    /// Slot size in bytes.
    pub class_size: c_uint,
    /// Frames per zspage.
    pub pages_per_zspage: c_uint,
    /// Objects per zspage.
    pub objs_per_zspage: c_uint,
    /// Zspages per fullness group: empty, above 0 and under 10% full, 10-19%, ...,
    /// 90-99%, full (the share in use in whole percents, rounded down, as the kernel
    /// buckets it: a zspage exactly 10% full is in the third group).
    pub zspages: [c_ulong; ZS_NR_FULLNESS_GROUPS],
    /// Slots in the class's zspages.
    pub objs_allocated: c_ulong,
    /// Live objects.
    pub objs_inuse: c_ulong,
    /// Frames held.
    pub pages_used: c_ulong,
    /// Frames compaction could free now.
    pub pages_freeable: c_ulong,
}

/// Most class indices a layout has (`zs_frame_census.class_frames`).
pub const ZS_MAX_CLASSES: usize = 256;

/// Frames by type and class, from a walk of the side table (`zs_frame_census`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct zs_frame_census {
    /// `sizeof(struct zs_frame_census)` as the caller was compiled.
    pub size: usize,
    /// Frames the pool's arena can address.
    pub arena_frames: c_ulong,
    /// Frames of the arena currently committed (readable and writable).
    pub committed_frames: c_ulong,
    /// Every frame ever handed out is below this frame number.
    pub top: c_ulong,
    /// Free frames below the top.
    pub free_frames: c_ulong,
    /// Frames of multi-object zspages.
    pub zspage_frames: c_ulong,
    /// Frames of huge (one-object) zspages.
    pub huge_frames: c_ulong,
    /// Frames seen changing during the walk (migration, a zspage's birth or death).
    pub transit_frames: c_ulong,
    /// Frames per class, by class index (as zs_lookup_class_index returns).
    pub class_frames: [c_ulong; ZS_MAX_CLASSES],
    /// Bytes of the arena's address-space reservation currently mapped
    /// (zs_release_arena unmaps the part above the frames in use).
    pub arena_mapped_bytes: c_ulong,
    /// Bytes of the side table currently mapped.
    pub side_table_mapped_bytes: c_ulong,
}

impl Default for zs_frame_census {
    fn default() -> Self {
        zs_frame_census {
            size: 0,
            arena_frames: 0,
            committed_frames: 0,
            top: 0,
            free_frames: 0,
            zspage_frames: 0,
            huge_frames: 0,
            transit_frames: 0,
            class_frames: [0; ZS_MAX_CLASSES],
            arena_mapped_bytes: 0,
            side_table_mapped_bytes: 0,
        }
    }
}

impl Default for zs_pool_config {
    fn default() -> Self {
        zs_pool_config {
            size: 0,
            max_pages: 0,
            chain_size: 0,
            layout: LayoutArg(0),
            auto_compact_pages: 0,
            auto_compact_max_pages_per_sec: 0,
            auto_compact_interval_ms: 0,
            max_object_size: 0,
            frame_size: 0,
            prefault: 0,
        }
    }
}
