//! The C ABI from Rust: every misuse row of the contract, the error conventions, and
//! the `size` convention of the extension structs.

mod common;

use std::ffi::c_void;
use std::ptr::{null, null_mut};
use zsmalloc::ffi::*;

fn errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}
fn clear_errno() {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = 0 };
}
fn is_err(h: u64) -> bool {
    h >= (-4095i64) as u64
}

fn new_pool(layout: u32) -> *mut zs_pool {
    pool_of_frames(layout, common::frame_size())
}

/// A pool of frames of `frame_size` bytes (0: the system's page).
fn pool_of_frames(layout: u32, frame_size: usize) -> *mut zs_pool {
    let cfg = zs_pool_config {
        size: std::mem::size_of::<zs_pool_config>(),
        max_pages: 1 << 16,
        chain_size: 0,
        layout: LayoutArg(layout),
        auto_compact_pages: 0,
        auto_compact_max_pages_per_sec: 0,
        auto_compact_interval_ms: 0,
        max_object_size: 0,
        frame_size: frame_size as u32,
        prefault: 0,
    };
    // SAFETY: a valid config and name.
    let p = unsafe { zs_create_pool_with(c"ffi".as_ptr(), &cfg) };
    assert!(!p.is_null());
    p
}

fn misuse_count(p: *mut zs_pool) -> u64 {
    let mut i = zs_pool_info { size: std::mem::size_of::<zs_pool_info>(), ..Default::default() };
    // SAFETY: live pool, full-size struct.
    assert_eq!(unsafe { zs_pool_info(p, &mut i) }, 0);
    i.misuse_events
}

/// Runs `f`, expecting errno `e` and one more misuse event.
fn expect_misuse(p: *mut zs_pool, e: i32, f: impl FnOnce()) {
    let before = misuse_count(p);
    clear_errno();
    f();
    assert_eq!(errno(), e);
    assert_eq!(misuse_count(p), before + 1, "counted as misuse");
}

#[test]
fn null_pool_is_refused_everywhere_but_destroy() {
    // SAFETY: every call below is defined for a NULL pool.
    unsafe {
        zs_destroy_pool(null_mut());
        let h = zs_malloc(null_mut(), 10, 0);
        assert!(is_err(h) && (-(h as i64)) as i32 == libc::EINVAL);
        for f in [
            &mut || zs_free(null_mut(), 1 << 48) as _,
            &mut || zs_obj_write(null_mut(), 1 << 48, b"x".as_ptr().cast(), 1),
            &mut || zs_unmap_object(null_mut(), 1 << 48),
            &mut || zs_obj_read_end(null_mut(), 1 << 48, 0, null_mut()),
            &mut || zs_pool_stats(null_mut(), null_mut()),
        ] as [&mut dyn FnMut(); 5]
        {
            clear_errno();
            f();
            assert_eq!(errno(), libc::EINVAL);
        }
        clear_errno();
        assert!(zs_map_object(null_mut(), 1 << 48, MapModeArg(0)).is_null());
        assert_eq!(errno(), libc::EINVAL);
        assert!(zs_obj_read_begin(null_mut(), 1 << 48, 1, null_mut()).is_null());
        assert_eq!(zs_get_total_pages(null_mut()), 0);
        assert_eq!(zs_huge_class_size(null_mut()), 0);
        assert_eq!(zs_lookup_class_index(null_mut(), 100), u32::MAX);
        assert_eq!(zs_compact(null_mut()), 0);
        assert_eq!(zs_pool_info(null_mut(), null_mut()), -libc::EINVAL);
        assert_eq!(zs_class_info(null_mut(), 0, null_mut()), -libc::EINVAL);
        assert_eq!(zs_pool_check(null_mut()), -libc::EINVAL);
    }
}

#[test]
fn malloc_errors_are_error_handles_and_errno() {
    let p = new_pool(0);
    // SAFETY: live pool.
    unsafe {
        for (size, flags, e) in [(0, 0, libc::EINVAL), (common::frame() + 1, 0, libc::ENOSPC), (10, 0x80, libc::EINVAL)]
        {
            clear_errno();
            let h = zs_malloc(p, size, flags);
            assert!(is_err(h));
            assert_eq!((-(h as i64)) as i32, e);
            assert_eq!(errno(), e);
        }
        let h = zs_malloc(p, 100, 0);
        assert!(!is_err(h) && h != 0);
        // 0 and error handles are no-ops for free, not misuse.
        let before = misuse_count(p);
        zs_free(p, 0);
        zs_free(p, (-(libc::ENOMEM as i64)) as u64);
        assert_eq!(misuse_count(p), before);
        zs_free(p, h);
        assert_eq!(zs_pool_check(p), 0);
        zs_destroy_pool(p);
    }
}

#[test]
fn every_misuse_row() {
    let p = new_pool(1);
    let other = new_pool(1);
    // SAFETY: live pools; buffers sized as passed.
    unsafe {
        let keep = zs_malloc(p, 1000, 0);
        zs_obj_write(p, keep, [7u8; 1000].as_ptr().cast(), 1000);
        let h = zs_malloc(p, 100, 0);
        let foreign = zs_malloc(other, 100, 0);
        let mut buf = [0u8; 4096];
        // A handle from another pool, an invented one.
        expect_misuse(p, libc::EINVAL, || zs_free(p, foreign));
        expect_misuse(p, libc::EINVAL, || zs_free(p, 0xdead_beef));
        expect_misuse(p, libc::EINVAL, || assert!(zs_map_object(p, foreign, MapModeArg(0)).is_null()));
        // Free while mapped or being read: EBUSY and not freed.
        let m = zs_map_object(p, h, MapModeArg(0));
        assert!(!m.is_null());
        expect_misuse(p, libc::EBUSY, || zs_free(p, h));
        zs_unmap_object(p, h);
        let r = zs_obj_read_begin(p, h, 10, buf.as_mut_ptr().cast());
        expect_misuse(p, libc::EBUSY, || zs_free(p, h));
        // read_end must match handle and length.
        expect_misuse(p, libc::EINVAL, || zs_obj_read_end(p, h, 11, r));
        expect_misuse(p, libc::EINVAL, || zs_obj_read_end(p, h, 10, null_mut()));
        clear_errno();
        zs_obj_read_end(p, h, 10, r);
        assert_eq!(errno(), 0);
        // Unmap / read_end with nothing begun on this thread.
        expect_misuse(p, libc::EINVAL, || zs_unmap_object(p, h));
        expect_misuse(p, libc::EINVAL, || zs_obj_read_end(p, h, 10, r));
        // A mapping made on another thread cannot be ended here; the thread's exit
        // ends it, as a misuse.
        let (pa, ha) = (p as usize, h);
        expect_misuse(p, 0, || {
            std::thread::spawn(move || {
                assert!(!zs_map_object(pa as *mut zs_pool, ha, MapModeArg(1)).is_null());
            })
            .join()
            .unwrap()
        });
        expect_misuse(p, libc::EINVAL, || zs_unmap_object(p, h));
        // Lengths larger than the slot; NULL buffers with a length.
        let slot = 4096; // no 100-byte slot is this large
        expect_misuse(p, libc::EINVAL, || assert!(zs_obj_read_begin(p, h, slot, buf.as_mut_ptr().cast()).is_null()));
        expect_misuse(p, libc::EINVAL, || zs_obj_write(p, h, buf.as_ptr().cast(), slot));
        expect_misuse(p, libc::EINVAL, || zs_obj_write(p, h, null(), 5));
        // Bad map mode: an error, not a misuse of a handle.
        clear_errno();
        assert!(zs_map_object(p, h, MapModeArg(9)).is_null());
        assert_eq!(errno(), libc::EINVAL);
        // Double free and use after free. (The object mapped on the other thread was
        // unpinned at that thread's exit: it can be freed.)
        let h2 = zs_malloc(p, 100, 0);
        zs_free(p, h2);
        expect_misuse(p, libc::EINVAL, || zs_free(p, h2));
        expect_misuse(p, libc::EINVAL, || zs_obj_write(p, h2, buf.as_ptr().cast(), 1));
        expect_misuse(p, libc::EINVAL, || assert!(zs_obj_read_begin(p, h2, 1, buf.as_mut_ptr().cast()).is_null()));
        clear_errno();
        zs_free(p, h);
        assert_eq!(errno(), 0);
        // Nothing was lost.
        let r = zs_obj_read_begin(p, keep, 1000, buf.as_mut_ptr().cast()) as *const u8;
        assert_eq!(std::slice::from_raw_parts(r, 1000), &[7u8; 1000][..]);
        zs_obj_read_end(p, keep, 1000, r as *mut c_void);
        assert_eq!(zs_pool_check(p), 0);
        zs_destroy_pool(p);
        zs_destroy_pool(other);
    }
}

/// The thread's record of mappings and reads ends, for each unmap or read_end, the
/// most recent match, wherever it is in the record, and of the right kind: a read is
/// not a mapping, a mapping of another handle is not this one's.
#[test]
fn unmaps_end_the_most_recent_mapping_of_their_handle_in_any_order() {
    let p = new_pool(1);
    // SAFETY: a live pool; buffers sized as passed.
    unsafe {
        let (a, b, c) = (zs_malloc(p, 100, 0), zs_malloc(p, 200, 0), zs_malloc(p, 300, 0));
        // Whether the object is held: a write is refused (and otherwise done).
        let held = |h| {
            clear_errno();
            zs_obj_write(p, h, [1u8].as_ptr().cast(), 1);
            errno() == libc::EBUSY
        };
        let mut buf = [0u8; 300];
        assert!(!zs_map_object(p, a, MapModeArg(1)).is_null());
        assert!(!zs_map_object(p, b, MapModeArg(0)).is_null());
        let rc = zs_obj_read_begin(p, c, 300, buf.as_mut_ptr().cast());
        assert!(!rc.is_null());
        assert!(!zs_map_object(p, a, MapModeArg(1)).is_null());
        // b's writable mapping, before the last two entries.
        clear_errno();
        zs_unmap_object(p, b);
        assert_eq!(errno(), 0);
        assert!(!held(b), "b's mapping ended");
        assert!(held(a) && held(c));
        // c is being read, not mapped.
        expect_misuse(p, libc::EINVAL, || zs_unmap_object(p, c));
        assert!(held(c), "the read goes on");
        // a's two read-only mappings, one at a time.
        zs_unmap_object(p, a);
        assert!(held(a), "a's first mapping goes on");
        zs_obj_read_end(p, c, 300, rc);
        assert!(!held(c), "c's read ended");
        clear_errno();
        zs_unmap_object(p, a);
        assert_eq!(errno(), 0);
        assert!(!held(a), "a's last mapping ended");
        expect_misuse(p, libc::EINVAL, || zs_unmap_object(p, a));
        assert_eq!(zs_pool_check(p), 0);
        zs_destroy_pool(p);
    }
}

#[test]
fn null_local_copy_is_refused_only_when_a_copy_is_needed() {
    // The kernel layout at 4 KiB frames, whatever the suite's: the 48-byte class has 3
    // frames per zspage.
    let p = pool_of_frames(1, 4096);
    // SAFETY: live pool.
    unsafe {
        let a = zs_malloc(p, 4096, 0);
        let _b = zs_malloc(p, 4096, 0);
        zs_free(p, a); // the next zspage takes pfn 0, then two fresh frames
        let hs: Vec<u64> = (0..256).map(|_| zs_malloc(p, 40, 0)).collect();
        // Object 85 straddles pfn 0 and a frame that is not next to it.
        expect_misuse(p, libc::EINVAL, || assert!(zs_obj_read_begin(p, hs[85], 40, null_mut()).is_null()));
        // Object 0 is inside one frame: no copy needed, NULL is fine.
        let r = zs_obj_read_begin(p, hs[0], 40, null_mut());
        assert!(!r.is_null());
        zs_obj_read_end(p, hs[0], 40, r);
        let mut local = [0u8; 40];
        let r = zs_obj_read_begin(p, hs[85], 40, local.as_mut_ptr().cast());
        assert_eq!(r as *mut u8, local.as_mut_ptr(), "copied into local_copy");
        zs_obj_read_end(p, hs[85], 40, r);
        zs_destroy_pool(p);
    }
}

#[test]
fn extension_structs_honour_size() {
    // SAFETY: live pool; the structs are larger than the sizes declared.
    unsafe {
        // A config shorter than the struct: the rest reads as zero (defaults).
        let mut cfg = zs_pool_config {
            size: std::mem::offset_of!(zs_pool_config, chain_size),
            max_pages: 16,
            chain_size: 99, // not read: beyond the declared size
            layout: LayoutArg(77),
            auto_compact_pages: 0,
            auto_compact_max_pages_per_sec: 0,
            auto_compact_interval_ms: 0,
            max_object_size: 0,
            frame_size: 0,
            prefault: 1, // not read either
        };
        let p = zs_create_pool_with(null(), &cfg);
        assert!(!p.is_null(), "fields past `size` are not read");
        // A config of the full size with invalid fields is refused.
        cfg.size = std::mem::size_of::<zs_pool_config>();
        clear_errno();
        assert!(zs_create_pool_with(null(), &cfg).is_null());
        assert_eq!(errno(), libc::EINVAL);
        cfg.chain_size = 8;
        assert!(zs_create_pool_with(null(), &cfg).is_null(), "layout 77 is invalid");
        cfg.size = 4;
        assert!(zs_create_pool_with(null(), &cfg).is_null(), "size below sizeof(size_t)");
        // Info: only the declared bytes are written.
        let h = zs_malloc(p, 100, 0);
        let mut info = zs_pool_info { size: std::mem::offset_of!(zs_pool_info, requested_bytes), ..Default::default() };
        info.requested_bytes = 0xAAAA;
        assert_eq!(zs_pool_info(p, &mut info), 0);
        assert_eq!(info.live_objects, 1);
        assert_eq!(info.requested_bytes, 0xAAAA, "beyond the declared size: untouched");
        assert_eq!(info.size, std::mem::offset_of!(zs_pool_info, requested_bytes), "size kept");
        let mut ci = zs_class_info { size: std::mem::size_of::<zs_class_info>(), ..Default::default() };
        assert_eq!(zs_class_info(p, zs_lookup_class_index(p, 100), &mut ci), 0);
        assert_eq!((ci.objs_inuse, ci.zspages.iter().sum::<u64>()), (1, 1));
        assert_eq!(zs_class_info(p, 100_000, &mut ci), -libc::EINVAL);
        let mut st = zs_pool_stats::default();
        zs_pool_stats(p, &mut st);
        assert_eq!(st.pages_compacted, 0);
        assert_eq!(zs_get_total_pages(p), ci.pages_used, "one zspage of the 100-byte class");
        // The dense layout packs every size: no size is stored alone in a frame but a
        // full page, and a lane's zspages take objects of any size.
        assert_eq!(zs_huge_class_size(p), 4096);
        let lane = zs_lookup_class_index(p, 4096);
        assert_eq!(lane, zs_lookup_class_index(p, 1), "one thread, one lane");
        assert_eq!(zs_class_info(p, lane, &mut ci), 0);
        assert_eq!((ci.class_size, ci.pages_per_zspage, ci.objs_per_zspage), (4096, 16, 0), "a dense lane");
        zs_free(p, h);
        zs_destroy_pool(p);
    }
}

#[test]
fn prefault_is_0_or_1_and_leaves_objects_as_they_are() {
    let cfg = |prefault| zs_pool_config {
        size: std::mem::size_of::<zs_pool_config>(),
        max_pages: 1 << 12,
        frame_size: common::frame_size() as u32,
        prefault,
        ..Default::default()
    };
    // SAFETY: valid configs and names; live pools; buffers of the lengths given.
    unsafe {
        clear_errno();
        assert!(zs_create_pool_with(null(), &cfg(2)).is_null(), "prefault 2 is refused");
        assert_eq!(errno(), libc::EINVAL);
        for prefault in [0, 1] {
            let p = zs_create_pool_with(null(), &cfg(prefault));
            assert!(!p.is_null(), "prefault {prefault}");
            // Enough objects for zspages of every frame of a few commit steps.
            let handles: Vec<u64> = (0..3000u32)
                .map(|i| {
                    let len = 100 + (i as usize * 37) % 1500;
                    let h = zs_malloc(p, len, 0);
                    assert!(!is_err(h));
                    let data: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
                    zs_obj_write(p, h, data.as_ptr().cast(), len);
                    h
                })
                .collect();
            for (i, &h) in handles.iter().enumerate() {
                let len = 100 + (i * 37) % 1500;
                let mut local = vec![0u8; len];
                let m = zs_obj_read_begin(p, h, len, local.as_mut_ptr().cast()) as *const u8;
                assert!(!m.is_null());
                let got = std::slice::from_raw_parts(m, len);
                assert!(got.iter().enumerate().all(|(k, &b)| b == (i + k) as u8), "object {i}");
                zs_obj_read_end(p, h, len, m as *mut c_void);
            }
            assert_eq!(zs_pool_check(p), 0);
            zs_destroy_pool(p);
        }
    }
}

/// A caller compiled with the header before `prefault` passes `size` 56 (the struct
/// then ended with `frame_size` and 4 bytes of padding it may leave uninitialised):
/// nothing from byte 52 on is read, so garbage there is not taken for a prefault value.
#[test]
fn a_config_of_the_previous_size_is_not_read_past_it() {
    assert_eq!(std::mem::offset_of!(zs_pool_config, prefault), 56, "prefault starts past the old struct");
    let mut cfg =
        zs_pool_config { size: 56, max_pages: 1 << 12, frame_size: common::frame_size() as u32, ..Default::default() };
    // SAFETY: the bytes written lie inside `cfg` (its padding after `frame_size` and
    // its `prefault` field); a valid config and name; the pool is destroyed once.
    unsafe {
        let bytes = (&mut cfg as *mut zs_pool_config).cast::<u8>();
        std::ptr::write_bytes(bytes.add(52), 0xA5, std::mem::size_of::<zs_pool_config>() - 52);
        assert_ne!(cfg.prefault, 0);
        let p = zs_create_pool_with(null(), &cfg);
        assert!(!p.is_null(), "the bytes past the declared size were read");
        zs_destroy_pool(p);
        // The same bytes within a declared size of the whole struct are refused.
        cfg.size = std::mem::size_of::<zs_pool_config>();
        clear_errno();
        assert!(zs_create_pool_with(null(), &cfg).is_null());
        assert_eq!(errno(), libc::EINVAL);
    }
}

/// With ZSMALLOC_ABORT_ON_MISUSE=1 a misuse prints one line and aborts: run this test
/// binary again as a child that misuses.
#[test]
fn abort_on_misuse() {
    if std::env::var_os("ZS_ABORT_CHILD").is_some() {
        let p = new_pool(0);
        // SAFETY: live pool; the double free below is the misuse under test.
        unsafe {
            let h = zs_malloc(p, 10, 0);
            zs_free(p, h);
            zs_free(p, h);
        }
        std::process::exit(0); // not reached when the abort works
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "abort_on_misuse", "--nocapture", "--test-threads=1"])
        .env("ZS_ABORT_CHILD", "1")
        .env("ZSMALLOC_ABORT_ON_MISUSE", "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "the child aborted");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = err.lines().filter(|l| l.starts_with("zsmalloc:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("zs_free") && lines[0].contains("handle=0x"), "{}", lines[0]);
}

/// A successful call leaves errno as it was, even when a contended lock inside made a
/// failing futex call (which sets errno to EAGAIN).
#[test]
fn success_leaves_errno_alone_under_contention() {
    let p = new_pool(0) as usize;
    let workers: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let p = p as *mut zs_pool;
                let mut hs = Vec::new();
                for i in 0..100_000u32 {
                    // SAFETY: this thread's errno; a live pool.
                    unsafe {
                        *libc::__errno_location() = 4242;
                        if i % 2 == 0 || hs.is_empty() {
                            let h = zs_malloc(p, 300, 0);
                            assert!(!is_err(h));
                            hs.push(h);
                        } else {
                            zs_free(p, hs.pop().unwrap());
                        }
                        assert_eq!(errno(), 4242, "a successful call changed errno");
                    }
                }
                hs
            })
        })
        .collect();
    for w in workers {
        for h in w.join().unwrap() {
            // SAFETY: live pool, live handle.
            unsafe { zs_free(p as *mut zs_pool, h) };
        }
    }
    // SAFETY: no call is running on the pool any more.
    unsafe {
        assert_eq!(zs_pool_check(p as *mut zs_pool), 0);
        zs_destroy_pool(p as *mut zs_pool);
    }
}

#[test]
fn migration_calls_through_the_c_abi() {
    // SAFETY: NULL and live pools as each call allows; structs sized as declared.
    unsafe {
        assert_eq!(zs_defragment(null_mut()), -(libc::EINVAL as libc::c_long));
        assert_eq!(zs_make_adjacent(null_mut()), -(libc::EINVAL as libc::c_long));
        assert_eq!(zs_frame_census(null_mut(), null_mut()), -libc::EINVAL);
        let p = new_pool(1);
        assert_eq!(zs_frame_census(p, null_mut()), -libc::EINVAL);
        let hs: Vec<u64> = (0..3000).map(|i| zs_malloc(p, 100 + i % 3000, 0)).collect();
        let mut c = zs_frame_census { size: std::mem::size_of::<zs_frame_census>(), ..Default::default() };
        assert_eq!(zs_frame_census(p, &mut c), 0);
        assert_eq!(c.zspage_frames + c.huge_frames, zs_get_total_pages(p));
        assert_eq!(c.class_frames.iter().sum::<u64>(), zs_get_total_pages(p));
        assert_eq!(c.top, c.free_frames + c.zspage_frames + c.huge_frames + c.transit_frames);
        for h in hs.iter().step_by(3) {
            zs_free(p, *h);
        }
        for h in hs.iter().skip(1).step_by(3) {
            zs_free(p, *h);
        }
        zs_compact(p);
        let (mapped_before, committed_before) = (c.arena_mapped_bytes, c.committed_frames);
        let shrunk = zs_defragment(p);
        assert!(shrunk > 0, "the arena came down by {shrunk} frames");
        assert_eq!(zs_frame_census(p, &mut c), 0);
        assert_eq!(c.top, zs_get_total_pages(p));
        assert!(c.committed_frames < committed_before);
        assert_eq!(c.arena_mapped_bytes, mapped_before, "still reserved");
        assert_eq!(zs_release_arena(null_mut()), -(libc::EINVAL as libc::c_long));
        let released = zs_release_arena(p);
        assert_eq!(zs_frame_census(p, &mut c), 0);
        assert_eq!(released as u64, mapped_before - c.arena_mapped_bytes, "the reservation's tail was unmapped");
        assert!(zs_make_adjacent(p) >= 0);
        let mut i = zs_pool_info { size: std::mem::size_of::<zs_pool_info>(), ..Default::default() };
        assert_eq!(zs_pool_info(p, &mut i), 0);
        assert!(i.frames_migrated as i64 >= shrunk as i64 / 16);
        assert_eq!(zs_pool_check(p), 0);
        zs_destroy_pool(p);
    }
}
