//! # zsmalloc in userspace
//!
//! The Linux kernel's allocator for compressed pages, as a library with a C ABI.
//! Objects of 1..4096 bytes are packed densely into zspages, chains of order-0 frames,
//! and reached through opaque handles so that they can be moved.
//!
//! ## The layers, bottom to top
//!
//! - `os` — the only module that talks to mmap, mprotect and madvise.
//! - `frames` — the arena: one reservation, order-0 frames handed out one at a time,
//!   freed frames returned to the OS.
//! - `memmap` — the side table: one word per frame (type, index in its owner's
//!   chain, the owner's address, which it stores and never follows) and no other
//!   per-frame metadata.
//! - `class` — the class table: sizes, frames and objects per zspage, merging: the
//!   kernel's exact table. The dense default has no size classes, only lanes.
//! - `zspage`, `kernel`, `packed`, `lists` — the zspage descriptor: its frames, its
//!   list, its contents; in the kernel layout, fixed places with back-references to
//!   their handles and a free list; in the dense layout, objects of every size packed
//!   end to end, of which the descriptor keeps only the holes where objects were
//!   freed; a class's zspages on their lists.
//! - `layout` — the seam between the two layouts: what the pool, compaction,
//!   migration, the statistics and the checker ask of a layout, answered in one place.
//! - `locate` — objects found by where they are, in one pass over the handle table
//!   (a dense zspage's objects, for compaction, migration and the checker).
//! - `slot`, `handle` — the handle table: a handle names a slot; the slot holds the
//!   object's location, a generation, a state and a pin count: readers share an
//!   object, a writer holds it alone.
//! - `config`, `pool`, `access`, `stats`, `check` — the pool's core: its
//!   configuration; malloc and free under per-class locks; reads, writes and maps
//!   without locks; statistics; the invariant checker.
//! - `compact`, `auto` — compaction, and the optional background compactor (which
//!   knows the core only).
//! - `scan`, `migrate` — the pfn scanner (classifies frames from their side-table
//!   words alone) and frame migration: arena defragmentation and adjacency.
//! - `facade` — [`Pool`]: the core, and the background compactor's thread when one
//!   is configured.
//! - `ffi` — the C ABI, a thin layer over [`Pool`].
//! - `sync` — where every atomic, lock and the epoch collector come from: loom's
//!   stand-ins under `--cfg loom`, annotations for helgrind under `--cfg zs_valgrind`.
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
//! free object of the class's fullest non-full zspage; in the dense layout, the
//! tightest run of free bytes that fits the object in its lane's zspages. It then
//! publishes the object's location in the slot. A read, write or map holds the object
//! with one CAS on the slot: a read or a read-only mapping pins it (a count, shared
//! with other readers, so a mapping can outlive the call), a write or a writable
//! mapping claims it alone (`pool/access.rs` says what is refused when). While held the
//! object cannot move or be freed, so its bytes, frames and descriptor stay put
//! without any lock or epoch guard. `free` pins the object too (which makes its class
//! certain), takes the class lock, and turns the slot free with a new generation
//! unless someone else holds it (EBUSY). A zspage whose last object goes gives its
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

mod compact;
mod error;
mod facade;
/// The C ABI (`include/zsmalloc.h` is generated from it): `extern "C"` functions, each
/// `unsafe` with its contract under `# Safety`, and the C structs they take.
#[cfg(not(loom))]
pub mod ffi;
mod frames;
mod handle;
mod layout;
mod migrate;
mod pool;
mod sync;

pub use compact::CompactStats;
pub use error::{Error, Result};
pub use facade::Pool;
pub use handle::Handle;
pub use layout::classes::{ClassSpec, ClassTable, Layout};
pub use migrate::scan::{Census, FrameKind};
pub use migrate::MigrateStats;
pub use pool::access::{MapMode, Mapping, ObjRead};
pub use pool::config::{AllocFlags, AutoCompact, Config};
pub use pool::stats::{ClassInfo, PoolInfo};
pub use pool::PoolCore;

/// What the loom models (`tests/loom.rs`) use beyond the API: the handle slot, whose
/// protocol they check directly. Not an API; only built under `--cfg loom`.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::handle::slot::{Claim, Slot, SlotError, State, Word};
}
