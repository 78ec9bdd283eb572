//! What a pool says of itself and of its objects: its frames, its classes, its
//! statistics, the invariant checker, an object's size.

use std::ffi::{c_int, c_uint, c_ulong};

use super::types::{zs_class_info, zs_pool, zs_pool_info, zs_pool_stats};
use super::{write_out, Errno};
use crate::handle::Handle;
use crate::pool::stats::{ClassInfo, PoolInfo};

/// Frames currently held by the pool's zspages (0 with errno EINVAL for NULL).
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_get_total_pages(pool: *mut zs_pool) -> c_ulong {
    ffi_boundary!(pool, 0, |p| Ok(p.total_pages() as c_ulong), |_| 0)
}

/// Smallest size stored one object per frame (0 with errno EINVAL for NULL): the
/// kernel layout's huge class size; 4096 for the dense layout, which packs every
/// smaller size with others.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_huge_class_size(pool: *mut zs_pool) -> usize {
    ffi_boundary!(pool, 0, |p| Ok(p.huge_class_size()), |_| 0)
}

/// Index of the (merged) class that `zs_malloc(pool, size, 0)` puts an object in
/// (for the dense layout, the calling thread's lane, whatever the size). UINT_MAX
/// with errno EINVAL for NULL or a size outside 1..ZS_MAX_ALLOC_SIZE.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_lookup_class_index(pool: *mut zs_pool, size: c_uint) -> c_uint {
    ffi_boundary!(pool, 0, |p| Ok(p.lookup_class_index(size as usize)? as c_uint), |_| c_uint::MAX)
}

/// Fills the kernel's stats struct (errno EINVAL for NULL arguments).
///
/// # Safety
/// A non-null `pool` is live; a non-null `stats` is writable.
#[no_mangle]
pub unsafe extern "C" fn zs_pool_stats(pool: *mut zs_pool, stats: *mut zs_pool_stats) {
    ffi_boundary!(
        pool,
        0,
        |p| {
            if stats.is_null() {
                return Err(Errno::INVAL);
            }
            // Unaligned, as every struct the C ABI reads or writes: a caller's struct
            // may sit at any address of a byte buffer.
            // SAFETY: `stats` is not NULL (checked above) and is writable (# Safety);
            // the field's address is computed without a reference, so no alignment is
            // asked of it, and the store asks none.
            unsafe {
                std::ptr::addr_of_mut!((*stats).pages_compacted).write_unaligned(p.info().pages_compacted as c_ulong)
            };
            Ok(())
        },
        |_| ()
    )
}

/// Fills `info` (only the `info->size` bytes the caller declared). 0, or -EINVAL.
///
/// # Safety
/// A non-null `pool` is live; a non-null `info` is writable for the `size` it declares.
#[no_mangle]
pub unsafe extern "C" fn zs_pool_info(pool: *mut zs_pool, info: *mut zs_pool_info) -> c_int {
    ffi_boundary!(
        pool,
        0,
        |p| {
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
                max_object_size: i.max_object_size as c_ulong,
                frame_size: i.frame_size as c_ulong,
            };
            // SAFETY: a non-null `info` is writable for the `size` it declares
            // (# Safety); `write_out` refuses NULL.
            unsafe { write_out(info, &out) }?;
            Ok(0)
        },
        |e| -e
    )
}

/// Fills `info` for the class with index `index` (as `zs_lookup_class_index` returns).
/// 0, or -EINVAL for an index that names no class.
///
/// # Safety
/// A non-null `pool` is live; a non-null `info` is writable for the `size` it declares.
#[no_mangle]
pub unsafe extern "C" fn zs_class_info(pool: *mut zs_pool, index: c_uint, info: *mut zs_class_info) -> c_int {
    ffi_boundary!(
        pool,
        0,
        |p| {
            if info.is_null() {
                // Checked before the class: a NULL struct is the first error.
                return Err(Errno::INVAL);
            }
            let c: ClassInfo = p.class_info(index as usize)?;
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
            // SAFETY: `info` is not NULL (checked above) and is writable for the `size`
            // it declares (# Safety).
            unsafe { write_out(info, &out) }?;
            Ok(0)
        },
        |e| -e
    )
}

/// Walks every internal invariant. 0, or -EUCLEAN ("structure needs cleaning") with
/// a message on stderr naming the first broken invariant; -ENOMEM when the heap
/// cannot hold the walk's working sets (no verdict); -EINVAL for NULL.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_pool_check(pool: *mut zs_pool) -> c_int {
    ffi_boundary!(
        pool,
        0,
        |p| match p.check() {
            Ok(()) => Ok(0),
            Err(crate::pool::check::CheckError::NoMemory) => Err(Errno(libc::ENOMEM)),
            Err(msg) => {
                eprintln!("zsmalloc: {}({:?}): {msg}", here!(), p.name());
                Err(Errno(libc::EUCLEAN))
            }
        },
        |e| -e
    )
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
    ffi_boundary!(pool, handle, |p| Ok(p.obj_size(Handle::from_raw(handle as u64))?), |_| 0)
}
