//! Errors and misuse reporting.

use std::fmt;
use std::sync::OnceLock;

/// Why an operation was refused. Each maps to one errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// `EINVAL`: an invalid argument, handle or state; the text says which.
    Invalid(&'static str),
    /// `EBUSY`: the object is mapped or being read or written.
    Busy,
    /// `ENOMEM`: no frame could be had, or the pool's page limit is reached.
    NoMemory,
    /// `ENOSPC`: the size is above `ZS_MAX_ALLOC_SIZE`.
    TooLarge,
    /// `EAGAIN`: the object carries the most simultaneous pins it can (511).
    Again,
    /// `EMFILE`: as many pools are alive as handles can tell apart (65,534).
    TooManyPools,
}

impl Error {
    /// The errno value (positive).
    pub fn errno(self) -> i32 {
        match self {
            Error::Invalid(_) => libc::EINVAL,
            Error::Busy => libc::EBUSY,
            Error::NoMemory => libc::ENOMEM,
            Error::TooLarge => libc::ENOSPC,
            Error::Again => libc::EAGAIN,
            Error::TooManyPools => libc::EMFILE,
        }
    }

    /// The error for an errno value from the OS layer.
    pub(crate) fn from_errno(e: i32) -> Error {
        match e {
            libc::ENOMEM => Error::NoMemory,
            _ => Error::Invalid("the operating system refused the request"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(why) => write!(f, "invalid argument: {why}"),
            Error::Busy => f.write_str("object is mapped or being read"),
            Error::NoMemory => f.write_str("out of memory (no frame, or the pool's page limit)"),
            Error::TooLarge => f.write_str("size above ZS_MAX_ALLOC_SIZE"),
            Error::Again => f.write_str("too many simultaneous pins on one object"),
            Error::TooManyPools => f.write_str("too many pools alive at once: their handles could not be told apart"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;

/// Whether `ZSMALLOC_ABORT_ON_MISUSE=1` was set when the library first looked.
pub fn abort_on_misuse() -> bool {
    static FLAG: OnceLock<bool> = OnceLock::new();
    *FLAG.get_or_init(|| std::env::var_os("ZSMALLOC_ABORT_ON_MISUSE").is_some_and(|v| v == "1"))
}

/// Reports a misuse: under `ZSMALLOC_ABORT_ON_MISUSE=1`, one line on stderr naming
/// the call and the handle, then abort. Otherwise returns.
#[cold]
pub fn report_misuse(call: &str, handle: u64, err: Error) {
    if abort_on_misuse() {
        eprintln!("zsmalloc: misuse in {call}(handle=0x{handle:x}): {err}; aborting (ZSMALLOC_ABORT_ON_MISUSE=1)");
        std::process::abort();
    }
}

/// Runs `f` and gives the calling thread's errno back the value it had before.
///
/// The C ABI's access calls (`zs_map_object`, `zs_unmap_object`, `zs_obj_read_begin`,
/// `zs_obj_read_end`, `zs_obj_write`) leave errno alone on success without saving and
/// restoring it around the whole call (`ffi_boundary!`): their fast paths make no
/// system call and allocate nothing. The few places on their success paths that may
/// (an allocation, a thread-local's first use, which registers its destructor) run
/// inside this instead.
#[inline]
pub(crate) fn keeping_errno<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: no precondition; the address is this thread's errno, valid while the
    // thread lives, and read and written on this thread only.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno };
    let r = f();
    // SAFETY: as above.
    unsafe { *errno = saved };
    r
}
