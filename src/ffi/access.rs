//! Reading, writing and mapping objects. A read begun or a mapping made is recorded on
//! the calling thread (`ffi/active.rs`), where its end finds it.

use std::ffi::{c_ulong, c_void};

use super::active::{end_last_pin, forget_destroyed_here, push_active, take_active, Active, Entry, Pinned};
use super::types::{zs_pool, MapModeArg};
use super::Errno;
use crate::error::Error;
use crate::facade::Pool;
use crate::handle::Handle;
use crate::pool::access::{MapMode, MapState, SharedMap};

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
    ffi_boundary!(
        lean: pool,
        handle,
        |p| {
            // SAFETY: a non-null `local_copy` is writable for `mem_len` bytes (# Safety),
            // as `read_begin_raw` asks.
            let (ptr, pin) = unsafe { p.read_begin_raw(Handle::from_raw(handle as u64), mem_len, local_copy.cast()) }?;
            if push_active(Active::Read { pool: p.serial(), handle, len: mem_len, ptr, slot: pin.slot() }).is_err() {
                p.read_end_raw(pin);
                return Err(Errno(libc::ENOMEM));
            }
            Ok(ptr as *mut c_void)
        },
        |_| std::ptr::null_mut()
    )
}

/// Ends a read begun on this thread with the same handle and `mem_len`; `handle_mem`
/// is what `zs_obj_read_begin` returned. errno EINVAL when there is no such read.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_obj_read_end(pool: *mut zs_pool, handle: c_ulong, mem_len: usize, handle_mem: *mut c_void) {
    ffi_boundary!(
        lean: pool,
        handle,
        |p| {
            if handle_mem.is_null() && mem_len > 0 {
                return Err(p.misuse(here!(), handle as u64, Error::Invalid("NULL handle_mem")).into());
            }
            let serial = p.serial();
            let matches = move |a: &Entry| a.is_read_of(serial, handle, mem_len, handle_mem as *const u8);
            // SAFETY: the entry was recorded by zs_obj_read_begin on this thread for
            // this pool (matched) with the slot of the pin it took, and is removed with
            // this end, so the pin is ended once.
            if !end_last_pin(Pinned::Read, matches, |slot| unsafe { p.unpin_slot(slot) }) {
                read_end_other(p, handle, matches)?;
            }
            Ok(())
        },
        |_| ()
    )
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
    ffi_boundary!(
        lean: pool,
        handle,
        |p| {
            let data: &[u8] = if mem_len == 0 {
                &[]
            } else if handle_mem.is_null() {
                return Err(p.misuse(here!(), handle as u64, Error::Invalid("NULL handle_mem")).into());
            } else {
                // SAFETY: `handle_mem` is readable for `mem_len` bytes (# Safety), and
                // not NULL (checked above).
                unsafe { std::slice::from_raw_parts(handle_mem.cast(), mem_len) }
            };
            Ok(p.write(Handle::from_raw(handle as u64), data)?)
        },
        |_| ()
    )
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
    ffi_boundary!(
        lean: pool,
        handle,
        |p| {
            let h = Handle::from_raw(handle as u64);
            let (ptr, entry) = if mm.0 == 1 {
                match p.map_shared(h)? {
                    SharedMap::InPlace(ptr, slot) => (ptr, Active::Shared { pool: p.serial(), handle, slot }),
                    SharedMap::Copied(state) => (state.ptr(), Active::Map { pool: p.serial(), handle, state }),
                }
            } else {
                let state = map_other(p, h, mm)?;
                (state.ptr(), Active::Map { pool: p.serial(), handle, state })
            };
            if let Err(entry) = push_active(entry) {
                abandon(p, entry);
                return Err(Errno(libc::ENOMEM));
            }
            Ok(ptr.cast())
        },
        |_| std::ptr::null_mut()
    )
}

/// Ends a mapping that could not be recorded, never seen by the caller: nothing to
/// store back, only the hold.
#[cold]
#[inline(never)]
fn abandon(p: &Pool, entry: Active) {
    let (slot, mode) = match &entry {
        Active::Shared { slot, .. } => (*slot, MapMode::ReadOnly),
        Active::Map { state, .. } => state.hold(),
        Active::Read { .. } => unreachable!("a mapping's entry"),
    };
    // SAFETY: 1. the slot and mode of the mapping zs_map_object has just begun in this
    // pool (`Active::Shared` records a read-only mapping in place: a pin); 2. it was
    // not recorded, so no one else ends it.
    unsafe { p.abandon_map(slot, mode) };
}

/// The begin of a mapping in any mode but ZS_MM_RO (or none), out of
/// `zs_map_object`'s body, which keeps the read-only mapping's path alone.
#[inline(never)]
fn map_other(p: &Pool, h: Handle, mm: MapModeArg) -> Result<MapState, Errno> {
    let mode = match mm.0 {
        0 => MapMode::ReadWrite,
        1 => MapMode::ReadOnly,
        2 => MapMode::WriteOnly,
        _ => return Err(Errno::INVAL),
    };
    Ok(p.map_begin(h, mode)?)
}

/// Ends this thread's most recent mapping of the handle. errno EINVAL when there is
/// none.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_unmap_object(pool: *mut zs_pool, handle: c_ulong) {
    ffi_boundary!(
        lean: pool,
        handle,
        |p| {
            let serial = p.serial();
            // SAFETY: the entry was recorded by zs_map_object on this thread for this
            // pool (matched) with the slot of the pin it took, and is removed with
            // this end, so the pin is ended once.
            if !end_last_pin(Pinned::Map, |a| a.is_map_of(serial, handle), |slot| unsafe { p.unpin_slot(slot) }) {
                unmap_other(p, serial, handle)?;
            }
            Ok(())
        },
        |_| ()
    )
}

/// `zs_unmap_object` of anything but a read-only mapping in place that this thread
/// made last: another mapping, an earlier one, or none (a misuse).
#[inline(never)]
fn unmap_other(p: &Pool, serial: u64, handle: c_ulong) -> Result<(), Errno> {
    match take_active(move |a| a.is_map_of(serial, handle)) {
        // SAFETY: the entry was recorded by zs_map_object on this thread for this pool
        // (matched above) with the slot of the pin it took, and is removed here, so
        // the pin is ended once.
        Some(Active::Shared { slot, .. }) => unsafe { p.unpin_slot(slot) },
        Some(Active::Map { state, .. }) => p.map_end(state),
        _ => {
            forget_destroyed_here();
            let e =
                p.misuse("zs_unmap_object", handle as u64, Error::Invalid("no matching zs_map_object on this thread"));
            return Err(e.into());
        }
    }
    Ok(())
}

/// `zs_obj_read_end` of anything but this thread's last entry: an earlier read, or
/// none (a misuse).
#[inline(never)]
fn read_end_other(p: &Pool, handle: c_ulong, matches: impl Fn(&Entry) -> bool + Copy) -> Result<(), Errno> {
    match take_active(matches) {
        // SAFETY: the entry was recorded by zs_obj_read_begin on this thread for this
        // pool (matched) with the slot of the pin it took, and is removed here, so the
        // pin is ended once.
        Some(Active::Read { slot, .. }) => unsafe { p.unpin_slot(slot) },
        _ => {
            forget_destroyed_here();
            let e = p.misuse(
                "zs_obj_read_end",
                handle as u64,
                Error::Invalid("no matching zs_obj_read_begin on this thread"),
            );
            return Err(e.into());
        }
    }
    Ok(())
}
