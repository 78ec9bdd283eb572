//! Allocating and freeing objects.

use std::ffi::{c_uint, c_ulong};

use super::types::zs_pool;
use super::{err_handle, is_err_or_zero};
use crate::handle::Handle;
use crate::pool::config::AllocFlags;

/// Allocates an object of `size` bytes (1..ZS_MAX_ALLOC_SIZE). Returns its handle, or
/// an error handle (`ZS_IS_ERR`): -EINVAL (size 0, NULL pool, unknown flags), -ENOSPC
/// (size too large), -ENOMEM (no frame, page limit, or ZS_ALLOC_NOGROW).
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_malloc(pool: *mut zs_pool, size: usize, flags: c_uint) -> c_ulong {
    ffi_boundary!(pool, 0, |p| Ok(p.malloc(size, AllocFlags(flags))?.to_raw() as c_ulong), |e| err_handle(e))
}

/// Frees an object. 0 and error handles are no-ops. Refused with errno EBUSY while the
/// object is mapped or being read, EINVAL for a handle this pool did not issue or
/// already freed.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_free(pool: *mut zs_pool, handle: c_ulong) {
    ffi_boundary!(
        pool,
        handle,
        |p| {
            if is_err_or_zero(handle) {
                return Ok(());
            }
            Ok(p.free(Handle::from_raw(handle as u64))?)
        },
        |_| ()
    )
}
