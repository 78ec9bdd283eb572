//! # zsmalloc in userspace
//!
//! The Linux kernel's allocator for compressed pages, as a library with a C ABI.
//! Objects of 1 byte up to a frame (the pool's unit, as the page is the kernel's: the
//! system's page or a larger power of two up to 64 KiB, chosen per pool) are packed
//! densely into zspages, chains of order-0 frames, and reached through opaque handles
//! so that they can be moved.
//!
//! ## The layers, bottom to top
//!
//! Each is a module (a folder), declared below in this order, and uses only those
//! before it; `sync` (every atomic, lock and the epoch collector: loom's stand-ins
//! under `--cfg loom`, annotations for helgrind under `--cfg zs_valgrind`) and `error`
//! serve all of them (under loom, `sync`'s watch on the arena's bytes counts them in
//! frames of `frames::os`).
//!
//! - `frames` — the bottom, which knows nothing above it: `os`, the only module that
//!   talks to mmap, mprotect and madvise; `segments`, arrays in segments whose sizes
//!   double, each taken when first needed and found from an index's high bits; the
//!   arena (`frames`): such an array of frames, order-0 frames handed out one at a
//!   time, freed frames returned to the OS, every frame counted in one place of an
//!   equation; `side`, the side table: one word per frame (a type, an index, an
//!   owner's address it stores and never follows) and no other per-frame metadata.
//! - `handle` — a handle names a slot of the handle table (`table`); the slot
//!   (`slot`) holds the object's location, a generation, a state and a pin count:
//!   readers share an object, a writer holds it alone. Since slots say where objects
//!   are, `locate` finds the objects of any set of frames in one pass over the table.
//! - `layout` — the two layouts, behind one seam (`layout`'s own module): the class
//!   table (`classes`: the kernel's exact table; the dense default's lanes), the
//!   zspage descriptor (`zspage`) and a class's lists of them (`lists`), and each
//!   layout's zspage contents: fixed places with back-references to their handles and
//!   a free list (`kernel`), or objects of every size packed end to end, of which the
//!   descriptor keeps only the holes (`dense`). What the layers above ask of a layout
//!   (placing, removing, listing objects, which list, which zspage, compaction's
//!   sources and destinations, the check) is answered in the seam, the only place that
//!   asks which layout a pool uses.
//! - `pool` — the pool's core ([`PoolCore`]): its configuration; malloc and free
//!   under per-class locks; reads, writes and maps without locks (`access`);
//!   statistics; the invariant checker (`check`).
//! - `compact` — compaction, and the optional background compactor (`auto`), which
//!   knows the core only.
//! - `migrate` — frame migration (arena defragmentation and adjacency) and the pfn
//!   scanner (`scan`), which classifies frames from their side-table words alone.
//! - `facade` — [`Pool`]: the core, and the background compactor's thread when one
//!   is configured.
//! - `ffi` — the C ABI, a thin layer over [`Pool`]: one boundary macro per function,
//!   one file per family of calls.
//!
//! ## Lock order
//!
//! Pool compaction lock (compaction, defragmentation, adjacency, the arena's release),
//! then the side table's extent lock (held exclusively by a shrink, shared by
//! side-table walkers, who hold nothing else), then one class lock (the checker takes
//! all, ascending), then the handle-table growth lock or the frame lock, then the
//! frame source's retired lock. Readers, writers and mappers take no lock at all.
//! `pool/mod.rs` says which operation takes which.
//!
//! ## The life of a handle
//!
//! `malloc` takes a free handle slot of its class and, in the kernel layout, the first
//! free place of the class's fullest non-full zspage; in the dense layout, the
//! tightest run of free bytes that fits the object in its lane's zspages. It then
//! publishes the object's location in the slot. A read, write or map holds the object
//! with one CAS on the slot: a read or a read-only mapping pins it (a count, shared
//! with other readers, so a mapping can outlive the call), a write or a writable
//! mapping claims it alone (`pool/access.rs` says what is refused when). While held the
//! object cannot move or be freed, so its bytes, frames and descriptor stay put
//! without any lock or epoch guard. `free` pins the object too (which makes its class
//! certain), takes the class lock, and turns the slot free with a new generation
//! unless someone else holds it (EBUSY); in the dense layout, whose slots belong to
//! the lane that took their batch, a free that finds that lane's lock free takes it
//! first and frees with one CAS, no pin. A zspage whose last object goes gives its
//! frames back at once (to the OS, past a small resident cache) and its descriptor to
//! crossbeam-epoch, because lock-free walkers of the side table may still be reading
//! it. Handles carry the pool's tag, the slot's generation and its index, so stale,
//! foreign and invented handles are refused.
//!
//! Holds are kept per object in the handle slot rather than per zspage: `zs_free` must
//! refuse exactly the objects that are mapped, and compaction then skips only the
//! held objects, not their whole zspage.

#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("zsmalloc needs a 64-bit target: handles are unsigned long");

// What every layer uses.
mod error;
mod sync;

// The layers, bottom to top: each uses only those before it.

// Frames: the OS layer, the arena and its frame allocator, the side table.
mod frames;

// Handles: the slot protocol, the handle table, objects located by where they are.
mod handle;

// The layouts: the class table, zspages and their lists, the kernel's and the dense
// layout's contents, and the seam between them.
mod layout;

// The pool's core: configuration, classes, malloc and free, access, stats, checker.
mod pool;

// Compaction and the background compactor.
mod compact;

// Frame migration and the pfn scanner.
mod migrate;

// Pool: the core and its background compactor.
mod facade;

/// The C ABI (`include/zsmalloc.h` is generated from it): `extern "C"` functions, each
/// `unsafe` with its contract under `# Safety`, and the C structs they take.
#[cfg(not(loom))]
pub mod ffi;

pub use compact::CompactStats;
pub use error::{Error, Result};
pub use facade::Pool;
pub use handle::Handle;
pub use layout::classes::{ClassSpec, ClassTable, Layout};
pub use migrate::scan::{Census, FrameKind};
pub use migrate::MigrateStats;
pub use pool::access::{MapMode, Mapping, ObjRead};
pub use pool::check::CheckError;
pub use pool::config::{AllocFlags, AutoCompact, Config};
pub use pool::stats::{ClassInfo, PoolInfo};
pub use pool::PoolCore;

/// What the loom models (`tests/loom.rs`) use beyond the API: the handle slot, whose
/// protocol they check directly, and the watch on the arena's bytes, which they check
/// sees whole frames at every frame size. Not an API; only built under `--cfg loom`.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::handle::slot::{Claim, Slot, SlotError, State, Word};
    pub use crate::sync::{LaneGuard, LaneLock};

    /// Reports a read of `len` bytes at `addr` to the model, as the library reports
    /// each of its reads of the arena. Nothing is read: the address only names the
    /// bytes.
    pub fn track_read(addr: *const u8, len: usize) {
        crate::sync::track_read(addr, len)
    }

    /// Reports a write of `len` bytes at `addr` to the model, as the library reports
    /// each of its writes to the arena. Nothing is written: the address only names the
    /// bytes.
    pub fn track_write(addr: *const u8, len: usize) {
        crate::sync::track_write(addr, len)
    }
}
