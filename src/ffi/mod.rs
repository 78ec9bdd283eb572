//! The C ABI: `extern "C"` functions only, each a thin call into [`Pool`].
//!
//! Conventions (also in the README, "API conventions"):
//! - Every call runs inside [`ffi_boundary!`]: a panic (an internal bug) prints its
//!   message and aborts rather than unwinding into C or continuing on a pool whose
//!   state is unknown.
//! - Every pointer is checked for NULL. Errors set `errno`; functions returning a
//!   handle return the negated errno as the handle (`ZS_IS_ERR`), pointer functions
//!   return NULL, `int` functions return the negated errno. Success leaves `errno`
//!   alone.
//! - Misuse (API.md's table) is counted in the pool and, with
//!   `ZSMALLOC_ABORT_ON_MISUSE=1`, aborts with one line on stderr.
//! - Extension structs start with `size`; the library reads and writes only that many
//!   bytes of them.
//! - Mappings and reads in progress are recorded per thread, so that `zs_unmap_object`
//!   and `zs_obj_read_end` find the matching begin, and refuse when there is none. The
//!   record names a pool by its serial, never by its address: a pool created after
//!   another's destruction may get the same address, and must not match the old
//!   pool's entries.
//! - Pools are registered by serial in [`LIVE`] from creation to destruction. A thread
//!   that exits with mappings or reads open has them ended under that registry's lock
//!   (each counted as a misuse in its pool), and `zs_destroy_pool` takes the pool out
//!   of the registry under the same lock before freeing it: a thread's exit never
//!   touches a destroyed pool, and the entries of a destroyed pool, on any thread,
//!   are dropped without being followed.

// The C names are the contract.
#![allow(non_camel_case_types)]
// `unsigned long` is u64 on every target this library builds for (LP64, checked in
// lib.rs); the casts keep the C types visible where values cross the boundary.
#![allow(clippy::unnecessary_cast)]

use parking_lot::Mutex;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::mem::size_of;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pool::access::{MapMode, MapState};

use crate::error::{report_misuse, Error};
use crate::facade::Pool;
use crate::handle::slot::Slot;
use crate::handle::Handle;
use crate::layout::classes::Layout;
use crate::pool::config::{AllocFlags, AutoCompact, Config};
use crate::pool::stats::{ClassInfo, PoolInfo};

/// Largest object, in bytes.
pub const ZS_MAX_ALLOC_SIZE: usize = 4096;
/// `zs_malloc` flag: fail with `-ENOMEM` rather than take a new frame.
pub const ZS_ALLOC_NOGROW: c_uint = 1;
/// Number of fullness groups in `zs_class_info.zspages`.
pub const ZS_NR_FULLNESS_GROUPS: usize = 12;

// The header is generated from this file alone, so its constants are literals; these
// tie them to the definitions they restate.
const _: () = assert!(ZS_MAX_ALLOC_SIZE == crate::layout::classes::MAX_ALLOC_SIZE);
const _: () = assert!(ZS_NR_FULLNESS_GROUPS == crate::layout::kernel::NR_GROUPS);
const _: () = assert!(ZS_ALLOC_NOGROW == AllocFlags::NOGROW.0);
const _: () = assert!(ZS_MAX_CLASSES >= 255, "the kernel layout's full table has 255 classes");

/// An opaque pool.
pub struct zs_pool {
    pool: Pool,
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

/// Runs an FFI body; a panic is an internal bug: report it and abort.
///
/// errno: the body reports an error with [`set_errno`], which records it for this
/// call; on the way out the recorded error is written to errno, or, when the call
/// succeeded, the caller's errno is put back. (Inside, a contended lock's futex call,
/// madvise, or the malloc behind a copied mapping's buffer or a thread's list of open
/// mappings may clobber errno; a successful call must leave it as it was.)
macro_rules! ffi_boundary {
    // The body behind the panic boundary; yields (its value, the error it recorded).
    (@run $name:literal, $body:block) => {{
        CALL_ERRNO.with(|e| e.set(0));
        let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| $body)) {
            Ok(v) => v,
            Err(_) => {
                eprintln!(concat!("zsmalloc: internal error in ", $name, "; aborting"));
                std::process::abort()
            }
        };
        (r, CALL_ERRNO.with(|e| e.get()))
    }};
    ($name:literal, $body:block) => {{
        let errno = Errno::here();
        let saved = errno.get();
        let (r, e) = ffi_boundary!(@run $name, $body);
        errno.set(if e != 0 { e } else { saved });
        r
    }};
}

thread_local! {
    /// The error of the FFI call running on this thread (0: none yet).
    static CALL_ERRNO: std::cell::Cell<c_int> = const { std::cell::Cell::new(0) };
}

/// This thread's errno, located once per call.
#[derive(Clone, Copy)]
struct Errno(*mut c_int);

impl Errno {
    fn here() -> Errno {
        // SAFETY: no precondition; the result is valid for this thread's lifetime.
        Errno(unsafe { libc::__errno_location() })
    }

    fn get(self) -> c_int {
        // SAFETY: this thread's errno (`here`), and we are on this thread.
        unsafe { *self.0 }
    }

    /// Sets errno to `e`, storing only if it differs.
    fn set(self, e: c_int) {
        if self.get() != e {
            // SAFETY: as in `get`.
            unsafe { *self.0 = e };
        }
    }
}

/// Records the current call's error; [`ffi_boundary!`] stores it in errno on return.
fn set_errno(e: c_int) {
    CALL_ERRNO.with(|c| c.set(e));
}

/// The negated errno as a handle (the kernel's ERR_PTR convention).
fn err_handle(e: c_int) -> c_ulong {
    set_errno(e);
    (-(e as i64)) as u64 as c_ulong
}

fn is_err_or_zero(h: c_ulong) -> bool {
    h == 0 || h >= (-4095i64) as u64 as c_ulong
}

/// The pool behind a pointer, or a misuse (`EINVAL`) for NULL.
///
/// # Safety
/// A non-null `pool` came from `zs_create_pool*` and was not destroyed.
unsafe fn pool_ref<'a>(pool: *mut zs_pool, call: &str, handle: c_ulong) -> Option<&'a Pool> {
    if pool.is_null() {
        report_misuse(call, handle as u64, Error::Invalid("NULL pool"));
        set_errno(libc::EINVAL);
        return None;
    }
    // SAFETY: caller's contract.
    Some(unsafe { &(*pool).pool })
}

/// Copies a caller's extension struct in: reads only `size` bytes.
///
/// # Safety
/// `p` is non-null and valid for reads of the `size` it declares.
unsafe fn read_sized<T: Copy + Default>(p: *const T, size_of_size: usize) -> Option<T> {
    // SAFETY: every extension struct starts with a size_t, which the caller provides.
    let n = unsafe { std::ptr::read_unaligned(p as *const usize) };
    if n < size_of_size {
        return None;
    }
    let mut out = T::default();
    // SAFETY: the caller declared n readable bytes; we copy at most size_of::<T>().
    unsafe { std::ptr::copy_nonoverlapping(p as *const u8, &mut out as *mut T as *mut u8, n.min(size_of::<T>())) };
    Some(out)
}

/// Fills a caller's extension struct: `-EINVAL` (and errno) for NULL or a `size`
/// below `sizeof(size_t)`, else writes only the `size` bytes the caller declared and
/// returns 0.
///
/// # Safety
/// A non-null `p` is valid for writes of the `size` it declares.
unsafe fn fill_out<T: Copy>(p: *mut T, val: &T) -> c_int {
    // SAFETY: caller's contract.
    if !p.is_null() && unsafe { write_sized(p, val) } {
        0
    } else {
        set_errno(libc::EINVAL);
        -libc::EINVAL
    }
}

/// Copies an extension struct out: writes only the `size` bytes the caller declared,
/// leaving its `size` as it was.
///
/// # Safety
/// `p` is non-null and valid for writes of the `size` it declares.
unsafe fn write_sized<T: Copy>(p: *mut T, val: &T) -> bool {
    // SAFETY: the struct starts with a size_t the caller set.
    let n = unsafe { std::ptr::read_unaligned(p as *const usize) };
    if n < size_of::<usize>() {
        return false;
    }
    let n = n.min(size_of::<T>());
    // SAFETY: we write bytes [size_of(usize), n), inside what the caller declared.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (val as *const T as *const u8).add(size_of::<usize>()),
            (p as *mut u8).add(size_of::<usize>()),
            n - size_of::<usize>(),
        )
    };
    true
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
        }
    }
}

/// Creates a pool with the default configuration. `name` may be NULL; it is copied.
/// Returns NULL with errno set on failure: ENOMEM when its memory cannot be had,
/// EMFILE when 65,534 pools are alive (as many as handles can tell apart).
///
/// # Safety
/// A non-null `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn zs_create_pool(name: *const c_char) -> *mut zs_pool {
    // SAFETY: forwarded contract; a NULL config means the default.
    unsafe { zs_create_pool_with(name, std::ptr::null()) }
}

/// Creates a pool with a configuration (NULL: the default). Invalid fields give NULL
/// with errno `EINVAL`; otherwise as `zs_create_pool` (ENOMEM, EMFILE).
///
/// # Safety
/// A non-null `name` is a NUL-terminated string; a non-null `config` points at a
/// `struct zs_pool_config` whose `size` bytes are readable.
#[no_mangle]
pub unsafe extern "C" fn zs_create_pool_with(name: *const c_char, config: *const zs_pool_config) -> *mut zs_pool {
    ffi_boundary!("zs_create_pool_with", {
        let name = if name.is_null() {
            String::new()
        } else {
            // SAFETY: caller's contract.
            unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned()
        };
        let mut cfg = Config::default();
        if !config.is_null() {
            // SAFETY: caller's contract.
            let Some(c) = (unsafe { read_sized(config, size_of::<usize>()) }) else {
                set_errno(libc::EINVAL);
                return std::ptr::null_mut();
            };
            cfg.max_pages = c.max_pages as usize;
            cfg.chain_size = c.chain_size as usize;
            cfg.auto_compact = AutoCompact {
                threshold_pages: c.auto_compact_pages as usize,
                interval_ms: c.auto_compact_interval_ms,
                max_pages_per_sec: c.auto_compact_max_pages_per_sec as usize,
            };
            cfg.layout = match c.layout.0 {
                0 => Layout::Dense,
                1 => Layout::Kernel,
                _ => {
                    set_errno(libc::EINVAL);
                    return std::ptr::null_mut();
                }
            };
        }
        match Pool::with_config(&name, &cfg) {
            Ok(pool) => {
                let serial = pool.serial();
                let p = Box::into_raw(Box::new(zs_pool { pool }));
                LIVE.lock().insert(serial, p);
                p
            }
            Err(e) => {
                set_errno(e.errno());
                std::ptr::null_mut()
            }
        }
    })
}

/// Frees the pool, every object in it and all its memory. NULL is a no-op; a pointer
/// that is not a live pool (one already destroyed) is refused with errno EINVAL. Must
/// not race with any other call on the pool.
///
/// Mappings and reads of the pool still open, on this thread or others, end with it:
/// their pointers are invalid from then on, like freed memory, and a later
/// `zs_unmap_object` or `zs_obj_read_end` naming them, on any pool, finds no matching
/// begin (EINVAL, counted as a misuse in the pool it names).
///
/// # Safety
/// A non-null `pool` came from `zs_create_pool*`.
#[no_mangle]
pub unsafe extern "C" fn zs_destroy_pool(pool: *mut zs_pool) {
    ffi_boundary!("zs_destroy_pool", {
        if pool.is_null() {
            return;
        }
        let Some(serial) = LIVE.lock().remove(pool) else {
            report_misuse("zs_destroy_pool", 0, Error::Invalid("not a live pool (destroyed already?)"));
            set_errno(libc::EINVAL);
            return;
        };
        // This thread's entries of the pool go now; other threads' when they next end
        // something that matches none of their entries, or exit.
        let _ = ACTIVE.try_with(|t| t.borrow_mut().open.retain(|a| a.pool() != serial));
        // SAFETY: it was registered, so it came from Box::into_raw and was not
        // destroyed; it is no longer registered, so it is destroyed once.
        drop(unsafe { Box::from_raw(pool) });
    })
}

/// Allocates an object of `size` bytes (1..ZS_MAX_ALLOC_SIZE). Returns its handle, or
/// an error handle (`ZS_IS_ERR`): -EINVAL (size 0, NULL pool, unknown flags), -ENOSPC
/// (size too large), -ENOMEM (no frame, page limit, or ZS_ALLOC_NOGROW).
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_malloc(pool: *mut zs_pool, size: usize, flags: c_uint) -> c_ulong {
    ffi_boundary!("zs_malloc", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_malloc", 0) }) else { return err_handle(libc::EINVAL) };
        match p.malloc(size, AllocFlags(flags)) {
            Ok(h) => h.to_raw() as c_ulong,
            Err(e) => err_handle(e.errno()),
        }
    })
}

/// Frees an object. 0 and error handles are no-ops. Refused with errno EBUSY while the
/// object is mapped or being read, EINVAL for a handle this pool did not issue or
/// already freed.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_free(pool: *mut zs_pool, handle: c_ulong) {
    ffi_boundary!("zs_free", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_free", handle) }) else { return };
        if is_err_or_zero(handle) {
            return;
        }
        if let Err(e) = p.free(Handle::from_raw(handle as u64)) {
            set_errno(e.errno());
        }
    })
}

/// The pools alive through the C ABI, registered from creation to destruction.
///
/// A thread that exits with mappings or reads open ends them under this lock, and
/// `zs_destroy_pool` takes its pool out under it before freeing it: a pool found here
/// stays alive while the lock is held, and one not found is gone, whatever its address
/// holds now.
struct LivePools {
    by_serial: BTreeMap<u64, *mut zs_pool>,
    by_addr: BTreeMap<usize, u64>,
}

// SAFETY: the pointers are followed only while the lock around the registry is held
// and the pool is registered (see `end_at_thread_exit`), never through a copy taken
// out of it.
unsafe impl Send for LivePools {}

impl LivePools {
    fn insert(&mut self, serial: u64, pool: *mut zs_pool) {
        self.by_serial.insert(serial, pool);
        self.by_addr.insert(pool as usize, serial);
    }

    /// Unregisters the pool at `pool`, if one is registered: returns its serial.
    fn remove(&mut self, pool: *mut zs_pool) -> Option<u64> {
        let serial = self.by_addr.remove(&(pool as usize))?;
        self.by_serial.remove(&serial);
        // Relaxed: read only as a hint to look at the registry (under this lock).
        DESTROYED.fetch_add(1, Ordering::Relaxed);
        Some(serial)
    }
}

static LIVE: Mutex<LivePools> = Mutex::new(LivePools { by_serial: BTreeMap::new(), by_addr: BTreeMap::new() });

/// Pools destroyed so far: a thread looks for stale entries when this has moved.
static DESTROYED: AtomicU64 = AtomicU64::new(0);

/// What a thread has begun and not yet ended. `pool` is the pool's serial.
enum Active {
    Map { pool: u64, handle: c_ulong, state: MapState },
    Read { pool: u64, handle: c_ulong, len: usize, ptr: *const u8, slot: NonNull<Slot> },
}

impl Active {
    fn pool(&self) -> u64 {
        match self {
            Active::Map { pool, .. } | Active::Read { pool, .. } => *pool,
        }
    }
}

/// A thread's open mappings and reads.
struct ThreadActive {
    open: Vec<Active>,
    /// `DESTROYED` when `open` was last cleared of destroyed pools' entries.
    destroys_seen: u64,
}

impl ThreadActive {
    /// Drops the entries of pools destroyed since the last look. Their pins went with
    /// their pools; only the records (and a copied mapping's buffer) are left.
    #[cold]
    #[inline(never)]
    fn forget_destroyed(&mut self) {
        // Relaxed: a stale value only delays the clean-up to a later call; the
        // registry itself is read under its lock.
        let destroyed = DESTROYED.load(Ordering::Relaxed);
        if destroyed != self.destroys_seen {
            self.destroys_seen = destroyed;
            let live = LIVE.lock();
            self.open.retain(|a| live.by_serial.contains_key(&a.pool()));
        }
    }
}

impl Drop for ThreadActive {
    fn drop(&mut self) {
        if !self.open.is_empty() {
            end_at_thread_exit(std::mem::take(&mut self.open));
        }
    }
}

/// Ends what an exiting thread left open, most recent first: a mapping is stored back
/// (unless read-only) and unpinned, a read unpinned, each counted as a misuse in its
/// pool (and, under `ZSMALLOC_ABORT_ON_MISUSE=1`, reported and aborted on). Entries
/// of destroyed pools are dropped.
#[cold]
fn end_at_thread_exit(open: Vec<Active>) {
    let live = LIVE.lock();
    for a in open.into_iter().rev() {
        let Some(&pool) = live.by_serial.get(&a.pool()) else { continue };
        // SAFETY: registered, so alive, and it stays so while we hold the lock, which
        // zs_destroy_pool takes to unregister it before freeing it.
        let p = unsafe { &(*pool).pool };
        match a {
            Active::Map { handle, state, .. } => {
                end_map_cold(p, state);
                p.misuse("zs_map_object", handle as u64, Error::Invalid("mapping still open when its thread exited"));
            }
            Active::Read { handle, slot, .. } => {
                // SAFETY: the entry was recorded by zs_obj_read_begin on this thread
                // for this pool (its serial, looked up above) with the slot of the pin
                // it took; taking the thread's list ended every other use of it.
                unsafe { p.unpin_slot(slot) };
                p.misuse("zs_obj_read_begin", handle as u64, Error::Invalid("read still open when its thread exited"));
            }
        }
    }
}

/// Ends a mapping off the hot path (at thread exit), so that `zs_unmap_object` stays
/// the one hot caller of `map_end`.
#[cold]
#[inline(never)]
fn end_map_cold(p: &Pool, state: MapState) {
    p.map_end(state)
}

thread_local! {
    static ACTIVE: RefCell<ThreadActive> = const { RefCell::new(ThreadActive { open: Vec::new(), destroys_seen: 0 }) };
}

/// Records a mapping or read begun on this thread; false, and the entry dropped, when
/// the thread's record is gone (a call made from a thread-local destructor that runs
/// after ours): the caller then undoes the begin. The entry is moved into the closure
/// and from there into the list, and nowhere else: each move of it costs the
/// map+unmap pair a copy.
#[inline(always)]
fn push_active(a: Active) -> bool {
    ACTIVE.try_with(move |t| t.borrow_mut().open.push(a)).is_ok()
}

/// Drops this thread's entries of destroyed pools. Called where a thread ends
/// something that matches none of its entries (a misuse, off the hot path): only a
/// program that destroys pools while other threads hold mappings in them leaves
/// stale entries, and they go at the latest when their thread exits.
#[cold]
fn forget_destroyed_here() {
    let _ = ACTIVE.try_with(|t| t.borrow_mut().forget_destroyed());
}

/// Removes this thread's most recent entry that `matches`.
#[inline(always)]
fn take_active(matches: impl Fn(&Active) -> bool) -> Option<Active> {
    ACTIVE
        .try_with(|t| {
            let mut t = t.borrow_mut();
            let i = t.open.iter().rposition(matches)?;
            Some(t.open.remove(i))
        })
        .unwrap_or_default()
}

/// Begins a read of the first `mem_len` bytes of an object: returns a pointer into
/// the pool where they are contiguous, else copies them into `local_copy` and returns
/// it. The object cannot move, be freed or be written until `zs_obj_read_end` on this
/// thread, or the thread's exit, which ends the read and counts a misuse in the pool;
/// other reads and read-only mappings of it may run meanwhile. NULL with errno on
/// error: EBUSY while the object is mapped writable (ZS_MM_RW, ZS_MM_WO), by any
/// thread.
///
/// # Safety
/// A non-null `pool` is live; a non-null `local_copy` is writable for `mem_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn zs_obj_read_begin(
    pool: *mut zs_pool,
    handle: c_ulong,
    mem_len: usize,
    local_copy: *mut c_void,
) -> *mut c_void {
    ffi_boundary!("zs_obj_read_begin", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_obj_read_begin", handle) }) else { return std::ptr::null_mut() };
        // SAFETY: caller's contract for local_copy.
        match unsafe { p.read_begin_raw(Handle::from_raw(handle as u64), mem_len, local_copy.cast()) } {
            Ok((ptr, pin)) => {
                if !push_active(Active::Read { pool: p.serial(), handle, len: mem_len, ptr, slot: pin.slot() }) {
                    p.read_end_raw(pin);
                    set_errno(libc::ENOMEM);
                    return std::ptr::null_mut();
                }
                ptr as *mut c_void
            }
            Err(e) => {
                set_errno(e.errno());
                std::ptr::null_mut()
            }
        }
    })
}

/// Ends a read begun on this thread with the same handle and `mem_len`; `handle_mem`
/// is what `zs_obj_read_begin` returned. errno EINVAL when there is no such read.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_obj_read_end(pool: *mut zs_pool, handle: c_ulong, mem_len: usize, handle_mem: *mut c_void) {
    ffi_boundary!("zs_obj_read_end", {
        const CALL: &str = "zs_obj_read_end";
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, CALL, handle) }) else { return };
        if handle_mem.is_null() && mem_len > 0 {
            set_errno(p.misuse(CALL, handle as u64, Error::Invalid("NULL handle_mem")).errno());
            return;
        }
        let serial = p.serial();
        let found = take_active(|a| {
            matches!(a, Active::Read { pool: q, handle: h, len, ptr, .. }
                if *q == serial && *h == handle && *len == mem_len && *ptr == handle_mem as *const u8)
        });
        match found {
            // SAFETY: the entry was recorded by zs_obj_read_begin on this thread for this
            // pool (matched above) with the slot of the pin it took, removed here once.
            Some(Active::Read { slot, .. }) => unsafe { p.unpin_slot(slot) },
            _ => {
                forget_destroyed_here();
                let e = p.misuse(CALL, handle as u64, Error::Invalid("no matching zs_obj_read_begin on this thread"));
                set_errno(e.errno());
            }
        }
    })
}

/// Copies `mem_len` bytes from `handle_mem` into the start of the object. errno
/// EINVAL for a stale handle, a length larger than the object's slot, or NULL
/// `handle_mem` with a length; EBUSY (nothing written) while the object is being read
/// (between zs_obj_read_begin and zs_obj_read_end) or mapped, by any thread. A write
/// racing another write of the same object waits for it.
///
/// # Safety
/// A non-null `pool` is live; `handle_mem` is readable for `mem_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn zs_obj_write(pool: *mut zs_pool, handle: c_ulong, handle_mem: *const c_void, mem_len: usize) {
    ffi_boundary!("zs_obj_write", {
        const CALL: &str = "zs_obj_write";
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, CALL, handle) }) else { return };
        let data: &[u8] = if mem_len == 0 {
            &[]
        } else if handle_mem.is_null() {
            set_errno(p.misuse(CALL, handle as u64, Error::Invalid("NULL handle_mem")).errno());
            return;
        } else {
            // SAFETY: caller's contract.
            unsafe { std::slice::from_raw_parts(handle_mem.cast(), mem_len) }
        };
        if let Err(e) = p.write(Handle::from_raw(handle as u64), data) {
            set_errno(e.errno());
        }
    })
}

/// Maps the whole slot of an object until `zs_unmap_object` on this thread. NULL with
/// errno on error. A read-only mapping shares the object with other reads and
/// read-only mappings; a writable one (ZS_MM_RW, ZS_MM_WO) holds it alone. So EBUSY:
/// any mapping while the object is mapped writable, and a writable mapping while it is
/// mapped or being read, by any thread (this one included). A mapping still open when
/// its thread exits is ended then (stored back unless read-only) and counted as a
/// misuse in its pool.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_map_object(pool: *mut zs_pool, handle: c_ulong, mm: MapModeArg) -> *mut c_void {
    ffi_boundary!("zs_map_object", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_map_object", handle) }) else { return std::ptr::null_mut() };
        let mode = match mm.0 {
            0 => MapMode::ReadWrite,
            1 => MapMode::ReadOnly,
            2 => MapMode::WriteOnly,
            _ => {
                set_errno(libc::EINVAL);
                return std::ptr::null_mut();
            }
        };
        match p.map_begin(Handle::from_raw(handle as u64), mode) {
            Ok(state) => {
                let (ptr, (slot, mode)) = (state.ptr(), state.hold());
                if !push_active(Active::Map { pool: p.serial(), handle, state }) {
                    // Never seen by the caller: nothing to store back, only the hold.
                    // SAFETY: 1. `hold()` of the mapping map_begin just returned in
                    // this pool; 2. it was dropped unrecorded, so no one ends it.
                    unsafe { p.abandon_map(slot, mode) };
                    set_errno(libc::ENOMEM);
                    return std::ptr::null_mut();
                }
                ptr.cast()
            }
            Err(e) => {
                set_errno(e.errno());
                std::ptr::null_mut()
            }
        }
    })
}

/// Ends this thread's most recent mapping of the handle. errno EINVAL when there is
/// none.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_unmap_object(pool: *mut zs_pool, handle: c_ulong) {
    ffi_boundary!("zs_unmap_object", {
        const CALL: &str = "zs_unmap_object";
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, CALL, handle) }) else { return };
        let serial = p.serial();
        let found =
            take_active(|a| matches!(a, Active::Map { pool: q, handle: h, .. } if *q == serial && *h == handle));
        match found {
            Some(Active::Map { state, .. }) => p.map_end(state),
            _ => {
                forget_destroyed_here();
                let e = p.misuse(CALL, handle as u64, Error::Invalid("no matching zs_map_object on this thread"));
                set_errno(e.errno());
            }
        }
    })
}

/// Moves objects out of sparse zspages into dense ones and frees the emptied frames;
/// returns the number of frames freed (for the dense layout, net of the new zspages
/// the moved objects may have needed). Safe while other threads allocate, free, read,
/// write and map: objects that are mapped or being read are skipped. A compaction
/// already running on the pool makes this call return 0 at once.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_compact(pool: *mut zs_pool) -> c_ulong {
    ffi_boundary!("zs_compact", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_compact", 0) }) else { return 0 };
        p.compact().pages_freed as c_ulong
    })
}

/// Moves frames in use from the top of the pool's arena into free frames below, then
/// gives the arena's free upper part back to the OS: its memory and commit charge, and
/// the side table's pages beyond it. The address range stays reserved, so the arena
/// grows back at any time (see zs_release_arena to give the range up too). Returns the
/// frames the arena's top came down by, or -EINVAL for NULL. Frames holding a mapped
/// or read object stay where they are. Safe while other threads work on the pool;
/// waits for a running compaction.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_defragment(pool: *mut zs_pool) -> libc::c_long {
    ffi_boundary!("zs_defragment", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_defragment", 0) }) else { return -libc::EINVAL as libc::c_long };
        p.defragment().frames_released as libc::c_long
    })
}

/// Unmaps the arena's and the side table's address space above the frames in use
/// (call it after zs_defragment), so the process's virtual size falls. Returns the
/// bytes of arena address space given up, or -EINVAL for NULL. The arena maps that
/// range again when it grows, but never over another mapping: if one has been placed
/// there meanwhile, the pool cannot grow past it and zs_malloc fails with -ENOMEM.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_release_arena(pool: *mut zs_pool) -> libc::c_long {
    ffi_boundary!("zs_release_arena", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_release_arena", 0) }) else {
            return -libc::EINVAL as libc::c_long;
        };
        p.release_address_space() as libc::c_long
    })
}

/// Moves the frames of every zspage whose frames are not adjacent in the arena into a
/// run of adjacent frames, so that objects straddling two frames are read and mapped
/// in place instead of copied. Returns the zspages joined (a zspage holding a mapped
/// or read object, or one for which no run of free frames could be had, stays as it
/// is), or -EINVAL for NULL.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_make_adjacent(pool: *mut zs_pool) -> libc::c_long {
    ffi_boundary!("zs_make_adjacent", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_make_adjacent", 0) }) else { return -libc::EINVAL as libc::c_long };
        p.make_adjacent().zspages_joined as libc::c_long
    })
}

/// Walks the side table and counts frames by type and class (only the `size` bytes
/// the caller declared are written). 0, or -EINVAL.
///
/// # Safety
/// A non-null `pool` is live; a non-null `census` is writable for the `size` it
/// declares.
#[no_mangle]
pub unsafe extern "C" fn zs_frame_census(pool: *mut zs_pool, census: *mut zs_frame_census) -> c_int {
    ffi_boundary!("zs_frame_census", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_frame_census", 0) }) else { return -libc::EINVAL };
        if census.is_null() {
            // Checked before the walk, which costs time proportional to the arena.
            set_errno(libc::EINVAL);
            return -libc::EINVAL;
        }
        let c = p.census();
        let mut out = zs_frame_census {
            arena_frames: c.capacity as c_ulong,
            committed_frames: c.committed as c_ulong,
            top: c.top as c_ulong,
            free_frames: c.free as c_ulong,
            zspage_frames: c.zspage as c_ulong,
            huge_frames: c.huge as c_ulong,
            transit_frames: c.transit as c_ulong,
            arena_mapped_bytes: c.arena_mapped_bytes as c_ulong,
            side_table_mapped_bytes: c.side_table_mapped_bytes as c_ulong,
            ..Default::default()
        };
        for (slot, n) in out.class_frames.iter_mut().zip(&c.by_class) {
            *slot = *n as c_ulong;
        }
        // SAFETY: caller's contract.
        unsafe { fill_out(census, &out) }
    })
}

/// Frames currently held by the pool's zspages (0 with errno EINVAL for NULL).
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_get_total_pages(pool: *mut zs_pool) -> c_ulong {
    ffi_boundary!("zs_get_total_pages", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_get_total_pages", 0) }) else { return 0 };
        p.total_pages() as c_ulong
    })
}

/// Smallest size stored one object per frame (0 with errno EINVAL for NULL): the
/// kernel layout's huge class size; 4096 for the dense layout, which packs every
/// smaller size with others.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_huge_class_size(pool: *mut zs_pool) -> usize {
    ffi_boundary!("zs_huge_class_size", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_huge_class_size", 0) }) else { return 0 };
        p.huge_class_size()
    })
}

/// Index of the (merged) class that `zs_malloc(pool, size, 0)` puts an object in
/// (for the dense layout, the calling thread's lane, whatever the size). UINT_MAX
/// with errno EINVAL for NULL or a size outside 1..ZS_MAX_ALLOC_SIZE.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_lookup_class_index(pool: *mut zs_pool, size: c_uint) -> c_uint {
    ffi_boundary!("zs_lookup_class_index", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_lookup_class_index", 0) }) else { return c_uint::MAX };
        match p.lookup_class_index(size as usize) {
            Ok(i) => i as c_uint,
            Err(e) => {
                set_errno(e.errno());
                c_uint::MAX
            }
        }
    })
}

/// Fills the kernel's stats struct (errno EINVAL for NULL arguments).
///
/// # Safety
/// A non-null `pool` is live; a non-null `stats` is writable.
#[no_mangle]
pub unsafe extern "C" fn zs_pool_stats(pool: *mut zs_pool, stats: *mut zs_pool_stats) {
    ffi_boundary!("zs_pool_stats", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_pool_stats", 0) }) else { return };
        if stats.is_null() {
            set_errno(libc::EINVAL);
            return;
        }
        // SAFETY: caller's contract.
        unsafe { (*stats).pages_compacted = p.info().pages_compacted as c_ulong };
    })
}

/// Fills `info` (only the `info->size` bytes the caller declared). 0, or -EINVAL.
///
/// # Safety
/// A non-null `pool` is live; a non-null `info` is writable for the `size` it declares.
#[no_mangle]
pub unsafe extern "C" fn zs_pool_info(pool: *mut zs_pool, info: *mut zs_pool_info) -> c_int {
    ffi_boundary!("zs_pool_info", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_pool_info", 0) }) else { return -libc::EINVAL };
        let i: PoolInfo = p.info();
        let out = zs_pool_info {
            size: 0,
            live_objects: i.live_objects as c_ulong,
            requested_bytes: i.requested_bytes as c_ulong,
            total_pages: i.total_pages as c_ulong,
            meta_bytes: i.meta_bytes as c_ulong,
            pages_compacted: i.pages_compacted as c_ulong,
            objs_moved: i.objs_moved as c_ulong,
            compact_skipped_mapped: i.compact_skipped_mapped as c_ulong,
            misuse_events: i.misuse_events as c_ulong,
            frames_migrated: i.frames_migrated as c_ulong,
            read_copied_bytes: i.read_copied_bytes as c_ulong,
        };
        // SAFETY: caller's contract.
        unsafe { fill_out(info, &out) }
    })
}

/// Fills `info` for the class with index `index` (as `zs_lookup_class_index` returns).
/// 0, or -EINVAL for an index that names no class.
///
/// # Safety
/// A non-null `pool` is live; a non-null `info` is writable for the `size` it declares.
#[no_mangle]
pub unsafe extern "C" fn zs_class_info(pool: *mut zs_pool, index: c_uint, info: *mut zs_class_info) -> c_int {
    ffi_boundary!("zs_class_info", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_class_info", 0) }) else { return -libc::EINVAL };
        if info.is_null() {
            // Checked before the class: a NULL struct is the first error.
            set_errno(libc::EINVAL);
            return -libc::EINVAL;
        }
        let c: ClassInfo = match p.class_info(index as usize) {
            Ok(c) => c,
            Err(e) => {
                set_errno(e.errno());
                return -e.errno();
            }
        };
        let out = zs_class_info {
            size: 0,
            class_size: c.class_size as c_uint,
            pages_per_zspage: c.pages_per_zspage as c_uint,
            objs_per_zspage: c.objs_per_zspage as c_uint,
            zspages: c.zspages.map(|n| n as c_ulong),
            objs_allocated: c.objs_allocated as c_ulong,
            objs_inuse: c.objs_inuse as c_ulong,
            pages_used: c.pages_used as c_ulong,
            pages_freeable: c.pages_freeable as c_ulong,
        };
        // SAFETY: caller's contract.
        unsafe { fill_out(info, &out) }
    })
}

/// Walks every internal invariant. 0, or -EUCLEAN ("structure needs cleaning") with
/// a message on stderr naming the first broken invariant; -EINVAL for NULL.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_pool_check(pool: *mut zs_pool) -> c_int {
    ffi_boundary!("zs_pool_check", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_pool_check", 0) }) else { return -libc::EINVAL };
        match p.check() {
            Ok(()) => 0,
            Err(msg) => {
                eprintln!("zsmalloc: zs_pool_check({:?}): {msg}", p.name());
                set_errno(libc::EUCLEAN);
                -libc::EUCLEAN
            }
        }
    })
}

/// The size an object was allocated with (what `zs_malloc` was asked for), so that a
/// caller storing data of varying length needs no length table of its own. 0 with
/// errno EINVAL for a NULL pool or a handle this pool did not issue or already freed
/// (counted as a misuse), EBUSY while the object is mapped writable (ZS_MM_RW,
/// ZS_MM_WO) by any thread, EAGAIN when the object carries the most pins it can.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_obj_size(pool: *mut zs_pool, handle: c_ulong) -> usize {
    ffi_boundary!("zs_obj_size", {
        // SAFETY: caller's contract.
        let Some(p) = (unsafe { pool_ref(pool, "zs_obj_size", handle) }) else { return 0 };
        match p.obj_size(Handle::from_raw(handle as u64)) {
            Ok(n) => n,
            Err(e) => {
                set_errno(e.errno());
                0
            }
        }
    })
}
