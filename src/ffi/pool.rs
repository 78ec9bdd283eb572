//! Creating and destroying pools.

use std::ffi::{c_char, CStr};
use std::mem::size_of;

use super::active::{forget_pool_here, LIVE};
use super::types::{zs_pool, zs_pool_config};
use super::{read_sized, Errno};
use crate::error::{report_misuse, Error};
use crate::facade::Pool;
use crate::layout::classes::Layout;
use crate::pool::config::{AutoCompact, Config};

/// Creates a pool with the default configuration. `name` may be NULL; it is copied.
/// Returns NULL with errno set on failure: ENOMEM when its memory cannot be had,
/// EMFILE when 65,534 pools are alive (as many as handles can tell apart).
///
/// # Safety
/// A non-null `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn zs_create_pool(name: *const c_char) -> *mut zs_pool {
    // SAFETY: the caller's `name` is as `zs_create_pool_with` asks (the same words);
    // a NULL config means the default.
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
    ffi_boundary!(
        || {
            let name = if name.is_null() {
                String::new()
            } else {
                // SAFETY: a non-null `name` is a NUL-terminated string (# Safety).
                unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned()
            };
            let mut cfg = Config::default();
            if !config.is_null() {
                // SAFETY: a non-null `config` has the `size` bytes it declares readable
                // (# Safety).
                let c = unsafe { read_sized(config, size_of::<usize>()) }?;
                cfg.max_pages = c.max_pages as usize;
                cfg.chain_size = c.chain_size as usize;
                cfg.max_object_size = c.max_object_size as usize;
                cfg.frame_size = c.frame_size as usize;
                cfg.prefault = match c.prefault {
                    0 => false,
                    1 => true,
                    _ => return Err(Errno::INVAL),
                };
                cfg.auto_compact = AutoCompact {
                    threshold_pages: c.auto_compact_pages as usize,
                    interval_ms: c.auto_compact_interval_ms,
                    max_pages_per_sec: c.auto_compact_max_pages_per_sec as usize,
                };
                cfg.layout = match c.layout.0 {
                    0 => Layout::Dense,
                    1 => Layout::Kernel,
                    _ => return Err(Errno::INVAL),
                };
            }
            // The pool's own block is taken before the pool's structures are made,
            // whose aligned blocks leave small free remainders in the heap: a pool
            // made right after another was destroyed then takes the block the heap
            // kept last (glibc's hands the last freed block of a size out first).
            // The hostile tests rely on it to find a new pool at a destroyed pool's
            // address (c_tests/test_hostile.c).
            let block: Box<std::mem::MaybeUninit<zs_pool>> = Box::new(std::mem::MaybeUninit::uninit());
            let pool = Pool::with_config(&name, &cfg)?;
            let serial = pool.serial();
            let p = Box::into_raw(block).cast::<zs_pool>();
            // SAFETY: `p` is the block just taken for a `zs_pool` (a MaybeUninit has
            // the layout of what it holds), uninitialised and ours alone; written once,
            // it is a `Box<zs_pool>`'s, as `zs_destroy_pool` takes it back.
            unsafe { p.write(zs_pool { pool }) };
            LIVE.lock().insert(serial, p);
            Ok(p)
        },
        |_| std::ptr::null_mut()
    )
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
    ffi_boundary!(
        || {
            if pool.is_null() {
                return Ok(());
            }
            let Some(serial) = LIVE.lock().remove(pool) else {
                report_misuse(here!(), 0, Error::Invalid("not a live pool (destroyed already?)"));
                return Err(Errno::INVAL);
            };
            // This thread's entries of the pool go now; other threads' when they next end
            // something that matches none of their entries, or exit.
            forget_pool_here(serial);
            // SAFETY: it was registered, so it came from Box::into_raw and was not
            // destroyed; it is no longer registered, so it is destroyed once.
            drop(unsafe { Box::from_raw(pool) });
            Ok(())
        },
        |_| ()
    )
}
