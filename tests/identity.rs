//! Pool identity: live pools never share a tag, so no pool takes another's handles;
//! the C ABI's per-thread record of open mappings names pools by serial, never by
//! address; and what a thread leaves open is ended at its exit.

use std::ffi::c_void;
use zsmalloc::ffi::*;
use zsmalloc::{AllocFlags, Config, Error, Layout, Pool};

fn small(layout: Layout) -> Config {
    Config { max_pages: 64, layout, ..Config::default() }
}

#[test]
fn a_live_pool_refuses_the_handles_of_every_newer_pool_through_a_whole_tag_cycle() {
    let old = Pool::with_config("old", &small(Layout::Dense)).unwrap();
    let mine = old.malloc(100, AllocFlags::default()).unwrap();
    old.write(mine, &[7; 100]).unwrap();
    let mut serials = std::collections::HashSet::new();
    let mut out = [0u8; 100];
    // More pools than there are tags: each is created, used and destroyed while the
    // old one lives, so every tag but the old pool's comes round at least once.
    for i in 0..66_000 {
        let layout = if i % 2 == 0 { Layout::Dense } else { Layout::Kernel };
        let new = Pool::with_config("new", &small(layout)).unwrap();
        assert!(serials.insert(new.serial()), "serial {} came back", new.serial());
        let theirs = new.malloc(100, AllocFlags::default()).unwrap();
        assert_ne!(theirs, mine);
        assert!(matches!(old.read(theirs, &mut out), Err(Error::Invalid(_))), "pool {i}: the old pool took its handle");
        assert!(matches!(new.read(mine, &mut out), Err(Error::Invalid(_))), "pool {i} took the old pool's handle");
        assert!(matches!(new.free(mine), Err(Error::Invalid(_))));
    }
    old.read(mine, &mut out).unwrap();
    assert_eq!(out, [7; 100], "the old pool's object is intact");
    assert_eq!(old.info().misuse_events, 66_000);
    old.check().unwrap();
}

#[test]
fn a_destroyed_pools_handles_are_refused_by_the_next_pools() {
    // Without a registry, the tag came from a counter; with it, a freed tag goes to the
    // back of the queue, so the next pools never carry it.
    let gone = Pool::with_config("gone", &small(Layout::Kernel)).unwrap();
    let dead = gone.malloc(64, AllocFlags::default()).unwrap();
    drop(gone);
    let mut out = [0u8; 64];
    for _ in 0..1000 {
        let p = Pool::with_config("next", &small(Layout::Kernel)).unwrap();
        let h = p.malloc(64, AllocFlags::default()).unwrap();
        assert_ne!(h, dead);
        assert!(matches!(p.read(dead, &mut out), Err(Error::Invalid(_))));
    }
}

fn errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn c_pool() -> *mut zs_pool {
    let cfg = zs_pool_config { size: std::mem::size_of::<zs_pool_config>(), max_pages: 256, ..Default::default() };
    // SAFETY: a valid config.
    let p = unsafe { zs_create_pool_with(std::ptr::null(), &cfg) };
    assert!(!p.is_null());
    p
}

fn misuse(p: *mut zs_pool) -> u64 {
    let mut i = zs_pool_info { size: std::mem::size_of::<zs_pool_info>(), ..Default::default() };
    // SAFETY: a live pool, a full-size struct.
    assert_eq!(unsafe { zs_pool_info(p, &mut i) }, 0);
    i.misuse_events
}

#[test]
fn open_mappings_of_a_destroyed_pool_never_match_a_pool_at_its_address() {
    // SAFETY: live pools throughout; pointers used only while their mappings are open.
    unsafe {
        let a = c_pool();
        let (ha, ha2) = (zs_malloc(a, 500, 0), zs_malloc(a, 500, 0));
        // Open at the destruction: a writable mapping of one object, and a read-only
        // mapping and a read of another (readers share it).
        assert!(!zs_map_object(a, ha, rw()).is_null());
        let mut local = [0u8; 500];
        *libc::__errno_location() = 0;
        assert!(zs_obj_read_begin(a, ha, 500, local.as_mut_ptr().cast()).is_null(), "a writable mapping is alone");
        assert_eq!(errno(), libc::EBUSY);
        assert_eq!(misuse(a), 0, "refused for a holder, not misuse");
        assert!(!zs_map_object(a, ha2, MapModeArg(zs_mapmode::ZS_MM_RO as u32)).is_null());
        let ra = zs_obj_read_begin(a, ha2, 500, local.as_mut_ptr().cast());
        assert!(!ra.is_null());
        let at = a as usize;
        zs_destroy_pool(a);
        // A new pool at A's address, where the allocator gives it back.
        let mut b = c_pool();
        for _ in 0..64 {
            if b as usize == at {
                break;
            }
            zs_destroy_pool(b);
            b = c_pool();
        }
        let hb = zs_malloc(b, 500, 0);
        zs_obj_write(b, hb, [9u8; 500].as_ptr().cast(), 500);
        for end in [
            &mut || zs_unmap_object(b, ha) as _,
            &mut || zs_unmap_object(b, ha2) as _,
            &mut || zs_obj_read_end(b, ha2, 500, ra),
            &mut || zs_unmap_object(b, hb),
        ] as [&mut dyn FnMut(); 4]
        {
            let before = misuse(b);
            *libc::__errno_location() = 0;
            end();
            assert_eq!(errno(), libc::EINVAL, "an unmatched end");
            assert_eq!(misuse(b), before + 1);
        }
        let mut out = [0u8; 500];
        let p = zs_obj_read_begin(b, hb, 500, out.as_mut_ptr().cast());
        assert_eq!(std::slice::from_raw_parts(p as *const u8, 500), &[9u8; 500][..]);
        zs_obj_read_end(b, hb, 500, p);
        assert_eq!(zs_pool_check(b), 0);
        zs_free(b, hb);
        zs_destroy_pool(b);
    }
}

fn rw() -> MapModeArg {
    MapModeArg(zs_mapmode::ZS_MM_RW as u32)
}

/// A pool pointer that may cross threads (the pools are thread-safe).
#[derive(Clone, Copy)]
struct Shared(*mut zs_pool);
// SAFETY: every zs_* call but destroy is thread-safe, and destroy runs after the joins.
unsafe impl Send for Shared {}

#[test]
fn what_a_thread_leaves_open_is_ended_at_its_exit() {
    let p = Shared(c_pool());
    // SAFETY: a live pool.
    let (h1, h2) = unsafe { (zs_malloc(p.0, 300, 0), zs_malloc(p.0, 300, 0)) };
    std::thread::spawn(move || {
        let p = p;
        let mut local = [0u8; 300];
        // SAFETY: a live pool; the mapping is the object's 300 bytes.
        unsafe {
            let m = zs_map_object(p.0, h1, rw()) as *mut u8;
            assert!(!m.is_null());
            m.write_bytes(0x42, 300);
            assert!(!zs_obj_read_begin(p.0, h2, 300, local.as_mut_ptr() as *mut c_void).is_null());
            assert!(!zs_obj_read_begin(p.0, h2, 10, local.as_mut_ptr() as *mut c_void).is_null());
        }
    })
    .join()
    .unwrap();
    // SAFETY: a live pool.
    unsafe {
        assert_eq!(misuse(p.0), 3, "one misuse per mapping or read left open");
        let mut out = [0u8; 300];
        let r = zs_obj_read_begin(p.0, h1, 300, out.as_mut_ptr().cast());
        assert_eq!(std::slice::from_raw_parts(r as *const u8, 300), &[0x42u8; 300][..], "stored at exit");
        zs_obj_read_end(p.0, h1, 300, r);
        for h in [h1, h2] {
            *libc::__errno_location() = 0;
            zs_free(p.0, h);
            assert_eq!(errno(), 0, "no longer pinned");
        }
        assert_eq!(zs_pool_check(p.0), 0);
        zs_destroy_pool(p.0);
    }
}

#[test]
fn a_thread_exiting_after_its_pool_was_destroyed_touches_nothing() {
    for _ in 0..50 {
        let p = Shared(c_pool());
        // SAFETY: a live pool.
        let h = unsafe { zs_malloc(p.0, 300, 0) };
        let (mapped_tx, mapped_rx) = std::sync::mpsc::channel();
        let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let p = p;
            // SAFETY: a live pool until the main thread hears back.
            assert!(!unsafe { zs_map_object(p.0, h, rw()) }.is_null());
            mapped_tx.send(()).unwrap();
            exit_rx.recv().unwrap();
        });
        mapped_rx.recv().unwrap();
        exit_tx.send(()).unwrap();
        // Destroyed while the thread exits, or before: either way, nothing breaks.
        // SAFETY: live, and destroyed once.
        unsafe { zs_destroy_pool(p.0) };
        t.join().unwrap();
    }
}
