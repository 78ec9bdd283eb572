//! The access calls of the C ABI (`zs_map_object`, `zs_unmap_object`,
//! `zs_obj_read_begin`, `zs_obj_read_end`, `zs_obj_write`) leave errno as it was when
//! they succeed without saving it around the whole call: what may set it on their way
//! (the thread's list of open mappings growing, its first use on a thread, a copied
//! mapping's buffer) keeps it itself. Every allocation in this test's process sets
//! errno, so any of those that did not would show.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::ptr::null_mut;
use zsmalloc::ffi::*;

/// The system's allocator, setting errno to [`CLOBBER`] on every call, as an
/// allocator may (glibc's malloc sets it when it falls back from brk to mmap).
struct Clobbering;

const CLOBBER: i32 = 9999;
const CALLER: i32 = 4242;

fn set_errno(e: i32) {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}

// SAFETY: every call is passed on to `System` unchanged; only errno is written.
unsafe impl GlobalAlloc for Clobbering {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(l) };
        set_errno(CLOBBER);
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(l) };
        set_errno(CLOBBER);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) };
        set_errno(CLOBBER);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let q = unsafe { System.realloc(p, l, n) };
        set_errno(CLOBBER);
        q
    }
}

#[global_allocator]
static ALLOC: Clobbering = Clobbering;

/// A pool of the kernel layout on frames of 4 KiB, with `n` objects of 40 bytes of
/// which the 86th straddles two frames that are not adjacent (as in tests/ffi.rs:
/// its mappings and reads are copies).
fn pool_with_a_copied_object(n: usize) -> (*mut zs_pool, Vec<u64>) {
    let cfg = zs_pool_config {
        size: std::mem::size_of::<zs_pool_config>(),
        max_pages: 1 << 16,
        chain_size: 0,
        layout: LayoutArg(1),
        auto_compact_pages: 0,
        auto_compact_max_pages_per_sec: 0,
        auto_compact_interval_ms: 0,
        max_object_size: 0,
        frame_size: 4096,
        prefault: 0,
    };
    // SAFETY: a valid config and name; the pool is live for the calls below.
    unsafe {
        let p = zs_create_pool_with(c"errno".as_ptr(), &cfg);
        assert!(!p.is_null());
        let a = zs_malloc(p, 4096, 0);
        let _b = zs_malloc(p, 4096, 0);
        zs_free(p, a); // the next zspage takes pfn 0, then two fresh frames
        let hs: Vec<u64> = (0..n).map(|_| zs_malloc(p, 40, 0)).collect();
        (p, hs)
    }
}

/// Runs `f` with errno set to [`CALLER`] and asserts that it is still that after.
fn untouched(what: &str, f: impl FnOnce()) {
    set_errno(CALLER);
    f();
    assert_eq!(errno(), CALLER, "{what}: a successful call changed errno");
}

#[test]
fn the_clobbering_allocator_clobbers() {
    set_errno(CALLER);
    drop(std::hint::black_box(vec![1u8; 100]));
    assert_eq!(errno(), CLOBBER);
}

#[test]
fn successful_access_calls_leave_errno_alone() {
    // On a thread of its own: its first access call is the first use of its list of
    // open mappings, which registers the list's end at the thread's exit.
    std::thread::spawn(|| {
        let (p, hs) = pool_with_a_copied_object(256);
        let copied = hs[85];
        let mut local = [0u8; 40];
        // SAFETY: a live pool, live handles, `local` holds 40 bytes.
        unsafe {
            // Many open at once (each object twice), so that the list grows several
            // times; the first is the thread's first access call.
            for &h in hs.iter().chain(&hs) {
                untouched("zs_map_object(ZS_MM_RO)", || assert!(!zs_map_object(p, h, MapModeArg(1)).is_null()));
            }
            for &h in hs.iter().rev() {
                untouched("zs_unmap_object", || zs_unmap_object(p, h));
                untouched("zs_unmap_object", || zs_unmap_object(p, h));
            }
            let reads: Vec<*mut c_void> = hs
                .iter()
                .map(|&h| {
                    let mut r = null_mut();
                    untouched("zs_obj_read_begin", || r = zs_obj_read_begin(p, h, 40, local.as_mut_ptr().cast()));
                    assert!(!r.is_null());
                    r
                })
                .collect();
            for (&h, &r) in hs.iter().zip(&reads).rev() {
                untouched("zs_obj_read_end", || zs_obj_read_end(p, h, 40, r));
            }
            // The object whose mappings are copies, in every mode: each copied mapping
            // takes a buffer and gives it back.
            for mode in [0, 1, 2] {
                let mut m = null_mut();
                untouched("zs_map_object of a copied object", || m = zs_map_object(p, copied, MapModeArg(mode)));
                assert!(!m.is_null());
                assert_ne!(m, local.as_mut_ptr().cast(), "a buffer of the library's");
                untouched("zs_unmap_object of a copied object", || zs_unmap_object(p, copied));
            }
            let bytes = [7u8; 40];
            for &h in &hs {
                untouched("zs_obj_write", || zs_obj_write(p, h, bytes.as_ptr().cast(), 40));
            }
            let mut r = null_mut();
            untouched("zs_obj_read_begin of a copied object", || {
                r = zs_obj_read_begin(p, copied, 40, local.as_mut_ptr().cast())
            });
            assert_eq!(r, local.as_mut_ptr().cast(), "copied into local_copy");
            assert_eq!(local, bytes);
            untouched("zs_obj_read_end of a copied object", || zs_obj_read_end(p, copied, 40, r));
            // A failure still sets errno: this thread has no mapping left to end.
            set_errno(0);
            zs_unmap_object(p, copied);
            assert_eq!(errno(), libc::EINVAL);
            assert_eq!(zs_pool_check(p), 0);
            zs_destroy_pool(p);
        }
    })
    .join()
    .unwrap();
}

/// A mapping left open when its thread exits is still ended then (the list's end at
/// exit is registered apart from the list): the object can be freed afterwards, and
/// the exit counts a misuse.
#[test]
fn a_mapping_left_open_is_ended_at_thread_exit() {
    let (p, hs) = pool_with_a_copied_object(4);
    let (pp, h) = (p as usize, hs[0]);
    std::thread::spawn(move || {
        // SAFETY: a live pool and handle.
        assert!(!unsafe { zs_map_object(pp as *mut zs_pool, h, MapModeArg(1)) }.is_null());
    })
    .join()
    .unwrap();
    // SAFETY: a live pool; the thread that mapped the object has exited.
    unsafe {
        let mut i = zs_pool_info { size: std::mem::size_of::<zs_pool_info>(), ..Default::default() };
        assert_eq!(zs_pool_info(p, &mut i), 0);
        assert_eq!(i.misuse_events, 1, "the exit counted the mapping left open");
        set_errno(0);
        zs_free(p, h);
        assert_eq!(errno(), 0, "freed: the exit let the object go");
        assert_eq!(zs_pool_check(p), 0);
        zs_destroy_pool(p);
    }
}
