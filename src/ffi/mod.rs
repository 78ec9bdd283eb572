//! The C ABI: `extern "C"` functions only, each a thin call into [`Pool`].
//!
//! Conventions (also in the README, "API conventions"):
//! - Every call runs inside `ffi_boundary!`: a panic (an internal bug) prints its
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
//!   and `zs_obj_read_end` find the matching begin, and refuse when there is none;
//!   pools are registered from creation to destruction, so that a thread's exit ends
//!   what it left open in live pools only (`ffi/active.rs`).
//!
//! One file per family of calls: `pool.rs` (creation, destruction), `object.rs`
//! (malloc, free), `access.rs` (reads, writes, mappings), `arena.rs` (compaction,
//! defragmentation, the arena's release, adjacency, the frame census), `info.rs`
//! (statistics, the checker, an object's size); the C structs and constants in
//! `types.rs`. The header declares them in that order (`build.rs`).

// The C names are the contract.
#![allow(non_camel_case_types)]
// `unsigned long` is u64 on every target this library builds for (LP64, checked in
// lib.rs); the casts keep the C types visible where values cross the boundary.
#![allow(clippy::unnecessary_cast)]

use std::ffi::{c_int, c_ulong};
use std::mem::size_of;

use crate::error::Error;

/// The name of the C ABI function it is written in, for messages (a misuse report, a
/// panic's), so that a function writes its name once: in its signature. Found from
/// the type name of an item declared where it is written, which is the function's
/// path (`zsmalloc::ffi::object::zs_malloc::here`, with a `{{closure}}` segment inside
/// a closure). Computed only when a message needs it.
macro_rules! here {
    () => {{
        fn here() {}
        $crate::ffi::fn_name(std::any::type_name_of_val(&here))
    }};
}

/// The body of a C ABI function, behind the boundary (rustls-ffi's
/// `ffi_panic_boundary!` and `try_ref_from_ptr!` in one):
///
/// - `ffi_boundary!(pool, handle, |p| body, |e| error)`: `pool`, the function's
///   `*mut zs_pool`, is checked first: NULL is a misuse, reported with `handle` and
///   answered with errno EINVAL; otherwise `body` runs with `p`, the pool.
///   `ffi_boundary!(|| body, |e| error)`: a call with no pool to check.
/// - `body` yields `Result<T, Errno>` (an [`Error`] converts with `?`): `Ok(v)` returns
///   `v`; `Err(e)` sets errno to `e` and returns `error`, with `e` the errno value.
/// - errno is located once per call and left as the caller had it when the call
///   succeeds: inside, a contended lock's futex call, madvise, or the malloc behind a
///   copied mapping's buffer or a thread's list of open mappings may clobber it.
/// - `ffi_boundary!(lean: pool, handle, |p| body, |e| error)` (and `lean: || ..`):
///   the same, but errno is neither located nor saved unless the call fails, so
///   `body` must leave it alone when it succeeds. For the access calls (reads,
///   writes, mappings), whose fast paths make no system call and allocate nothing:
///   what may set errno on their way (growing the thread's list of open mappings, a
///   copied mapping's buffer) runs inside [`keeping_errno`](crate::error::keeping_errno).
///   With errno saved and restored, and the list's thread-local checked for its
///   destructor's state, on every call, a map+unmap pair took 345 instructions; 321
///   without (callgrind, zshot --only map).
/// - A panic (an internal bug) prints the function's name and aborts, rather than
///   unwinding into C or going on with a pool whose state is unknown.
macro_rules! ffi_boundary {
    ($pool:ident, $handle:expr, |$p:ident| $body:expr, |$e:pat_param| $error:expr) => {
        ffi_boundary!(|| ffi_boundary!(@pool $pool, $handle, |$p| $body), |$e| $error)
    };
    (lean: $pool:ident, $handle:expr, |$p:ident| $body:expr, |$e:pat_param| $error:expr) => {
        ffi_boundary!(lean: || ffi_boundary!(@pool $pool, $handle, |$p| $body), |$e| $error)
    };
    (@pool $pool:ident, $handle:expr, |$p:ident| $body:expr) => {{
        if $pool.is_null() {
            $crate::error::report_misuse(here!(), $handle as u64, $crate::error::Error::Invalid("NULL pool"));
            return Err($crate::ffi::Errno::INVAL);
        }
        // SAFETY: every function of the C ABI asks that a non-null `pool` be live (its
        // `# Safety`): one that `zs_create_pool*` returned and `zs_destroy_pool` has not
        // destroyed, whose `zs_pool` is therefore allocated and unchanged.
        let $p = unsafe { &(*$pool).pool };
        $body
    }};
    (|| $body:expr, |$e:pat_param| $error:expr) => {{
        let errno = $crate::ffi::ThreadErrno::here();
        let saved = errno.get();
        let run = || -> Result<_, $crate::ffi::Errno> { $body };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(Ok(v)) => {
                errno.set(saved);
                v
            }
            Ok(Err($crate::ffi::Errno(e))) => {
                errno.set(e);
                let $e = e;
                $error
            }
            Err(_) => {
                eprintln!("zsmalloc: internal error in {}; aborting", here!());
                std::process::abort()
            }
        }
    }};
    (lean: || $body:expr, |$e:pat_param| $error:expr) => {{
        let run = || -> Result<_, $crate::ffi::Errno> { $body };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(Ok(v)) => v,
            Ok(Err($crate::ffi::Errno(e))) => {
                $crate::ffi::ThreadErrno::here().set(e);
                let $e = e;
                $error
            }
            Err(_) => {
                eprintln!("zsmalloc: internal error in {}; aborting", here!());
                std::process::abort()
            }
        }
    }};
}

// The families of calls, in the order the header declares them: cbindgen follows these
// declarations from this file (`build.rs`).

// The C structs, enums and constants.
mod types;

// Creating and destroying pools.
mod pool;

// malloc and free.
mod object;

// Reads, writes and mappings.
mod access;

// Compaction, defragmentation, the arena's release, adjacency, the frame census.
mod arena;

// Statistics, the checker, an object's size.
mod info;

// What the calls keep between them: live pools, each thread's open mappings and reads.
mod active;

pub use access::*;
pub use arena::*;
pub use info::*;
pub use object::*;
pub use pool::*;
pub use types::*;

/// The errno value a call fails with (positive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) c_int);

impl Errno {
    /// An invalid argument.
    const INVAL: Errno = Errno(libc::EINVAL);
}

impl From<Error> for Errno {
    fn from(e: Error) -> Errno {
        Errno(e.errno())
    }
}

/// The C function's name in the type name of an item declared in it (see `here!`).
pub(crate) fn fn_name(path: &'static str) -> &'static str {
    path.rsplit("::").skip(1).find(|s| !s.starts_with('{')).unwrap_or(path)
}

/// This thread's errno, located once per call.
#[derive(Clone, Copy)]
pub(crate) struct ThreadErrno(*mut c_int);

impl ThreadErrno {
    pub(crate) fn here() -> ThreadErrno {
        // SAFETY: no precondition; the result is valid for this thread's lifetime.
        ThreadErrno(unsafe { libc::__errno_location() })
    }

    pub(crate) fn get(self) -> c_int {
        // SAFETY: this thread's errno (`here`), and we are on this thread.
        unsafe { *self.0 }
    }

    /// Sets errno to `e`, storing only if it differs.
    pub(crate) fn set(self, e: c_int) {
        if self.get() != e {
            // SAFETY: `self.0` is this thread's errno (`here`), valid for the thread's
            // lifetime, and we are on this thread.
            unsafe { *self.0 = e };
        }
    }
}

/// The negated errno as a handle (the kernel's ERR_PTR convention).
fn err_handle(e: c_int) -> c_ulong {
    (-(e as i64)) as u64 as c_ulong
}

/// Whether a handle is 0 or an error handle (which `zs_free` ignores).
fn is_err_or_zero(h: c_ulong) -> bool {
    h == 0 || h >= (-4095i64) as u64 as c_ulong
}

/// Copies a caller's extension struct in: reads only the `size` bytes it declares;
/// EINVAL for a `size` below `size_of_size`.
///
/// # Safety
/// `p` is non-null and valid for reads of the `size` it declares.
unsafe fn read_sized<T: Copy + Default>(p: *const T, size_of_size: usize) -> Result<T, Errno> {
    // SAFETY: `p` is valid for reads of at least its leading size_t (every extension
    // struct starts with one), unaligned reads being allowed.
    let n = unsafe { std::ptr::read_unaligned(p as *const usize) };
    if n < size_of_size {
        return Err(Errno::INVAL);
    }
    let mut out = T::default();
    // SAFETY: the source is valid for `n` bytes (the precondition), of which we read at most
    // size_of::<T>(), the destination's size; the two do not overlap (`out` is ours).
    unsafe { std::ptr::copy_nonoverlapping(p as *const u8, &mut out as *mut T as *mut u8, n.min(size_of::<T>())) };
    Ok(out)
}

/// Copies an extension struct out: writes only the `size` bytes the caller declared,
/// leaving its `size` as it was; EINVAL for NULL or a `size` below `sizeof(size_t)`.
///
/// # Safety
/// A non-null `p` is valid for writes of the `size` it declares.
unsafe fn write_out<T: Copy>(p: *mut T, val: &T) -> Result<(), Errno> {
    if p.is_null() {
        return Err(Errno::INVAL);
    }
    // SAFETY: not NULL, and valid for the `size` it declares (the precondition), which
    // every extension struct holds in its first field: its leading size_t is readable.
    let n = unsafe { std::ptr::read_unaligned(p as *const usize) };
    if n < size_of::<usize>() {
        return Err(Errno::INVAL);
    }
    let n = n.min(size_of::<T>());
    // SAFETY: we write bytes [size_of(usize), n) of `p`, inside the `n` bytes it
    // declares (the precondition), from the same bytes of `val`, which has size_of::<T>()
    // >= n; a caller's struct and ours do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (val as *const T as *const u8).add(size_of::<usize>()),
            (p as *mut u8).add(size_of::<usize>()),
            n - size_of::<usize>(),
        )
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn here_names_the_function_it_is_written_in() {
        fn zs_example() -> (&'static str, &'static str) {
            let in_closure = || here!();
            (here!(), in_closure())
        }
        assert_eq!(zs_example(), ("zs_example", "zs_example"));
    }

    /// A copy of `val` at an odd address inside `buf` (at offset 1 or 2 of it).
    fn odd<T: Copy>(val: &T, buf: &mut Vec<u8>) -> *mut T {
        let n = std::mem::size_of::<T>();
        buf.clear();
        buf.resize(n + 16, 0);
        let at = if (buf.as_ptr() as usize) % 2 == 0 { 1 } else { 2 };
        // SAFETY: `buf` holds n + 16 bytes, so [at, at + n) is inside it; `val` is n bytes.
        unsafe { std::ptr::copy_nonoverlapping(val as *const T as *const u8, buf.as_mut_ptr().add(at), n) };
        // SAFETY: inside `buf`, as above.
        unsafe { buf.as_mut_ptr().add(at) }.cast()
    }

    /// Reads a `T` back from where `odd` put it.
    fn back<T: Copy>(p: *mut T) -> T {
        // SAFETY: `p` is inside a live buffer holding a T's bytes (`odd`).
        unsafe { std::ptr::read_unaligned(p) }
    }

    /// Every struct the C ABI reads or writes may be at any address (a C caller's
    /// struct inside a byte buffer): nothing is read or written through an aligned
    /// access, which would be undefined behaviour (and in a debug build, where Rust
    /// checks the alignment of every dereference, an abort).
    #[test]
    fn structs_at_odd_addresses_are_read_and_written() {
        use super::*;
        use std::mem::size_of;
        let mut buf = Vec::new();
        let cfg = zs_pool_config { size: size_of::<zs_pool_config>(), max_pages: 1 << 12, ..Default::default() };
        // SAFETY: a config readable for its size (at an odd address); NULL name.
        let pool = unsafe { zs_create_pool_with(std::ptr::null(), odd(&cfg, &mut buf)) };
        assert!(!pool.is_null());
        // SAFETY: a live pool.
        let h = unsafe { zs_malloc(pool, 100, 0) };
        assert!(!is_err_or_zero(h));

        let mut b2 = Vec::new();
        let p = odd(&zs_pool_stats::default(), &mut b2);
        // SAFETY: a live pool; `p` is writable for the struct.
        unsafe { zs_pool_stats(pool, p) };
        assert_eq!(back(p).pages_compacted, 0);

        let p = odd(&zs_pool_info { size: size_of::<zs_pool_info>(), ..Default::default() }, &mut b2);
        // SAFETY: a live pool; `p` is writable for the size it declares.
        assert_eq!(unsafe { zs_pool_info(pool, p) }, 0);
        assert_eq!(back(p).live_objects, 1);

        let p = odd(&zs_class_info { size: size_of::<zs_class_info>(), ..Default::default() }, &mut b2);
        // SAFETY: a live pool; `p` is writable for the size it declares.
        let index = unsafe { zs_lookup_class_index(pool, 100) };
        // SAFETY: as above.
        assert_eq!(unsafe { zs_class_info(pool, index, p) }, 0);
        assert_eq!(back(p).objs_inuse, 1);

        let p = odd(&zs_frame_census { size: size_of::<zs_frame_census>(), ..Default::default() }, &mut b2);
        // SAFETY: a live pool; `p` is writable for the size it declares.
        assert_eq!(unsafe { zs_frame_census(pool, p) }, 0);
        assert!(back(p).zspage_frames > 0);

        // SAFETY: the pool is live and nothing else uses it.
        unsafe { zs_free(pool, h) };
        // SAFETY: as above.
        unsafe { zs_destroy_pool(pool) };
    }
}
