//! Frame migration, the pfn scanner, arena defragmentation and adjacency.

mod common;
use common::{check, pattern};
use zsmalloc::{AllocFlags, Config, FrameKind, Handle, Layout, MapMode, Pool};

fn pool(layout: Layout) -> Pool {
    Pool::with_config("migrate", &Config { max_pages: 1 << 16, layout, ..common::config() }).unwrap()
}

/// A pool of 4 KiB frames, whatever the suite's: for the tests whose figures are the
/// 48-byte class's chain of 4 KiB frames, and the one that needs the arena to pass
/// its first segment (512 frames) with a few MiB of objects.
fn pool_4k(layout: Layout) -> Pool {
    let cfg = Config { max_pages: 1 << 16, layout, frame_size: 4096, ..Config::default() };
    Pool::with_config("migrate", &cfg).unwrap()
}

fn verify(p: &Pool, objs: &[(Handle, u64, usize)]) {
    for &(h, seed, s) in objs {
        let mut out = vec![0u8; s];
        p.read(h, &mut out).unwrap();
        assert_eq!(out, pattern(seed, s), "object intact");
    }
}

fn fill(p: &Pool, n: usize, size: impl Fn(usize) -> usize) -> Vec<(Handle, u64, usize)> {
    (0..n)
        .map(|i| {
            let s = size(i);
            let h = p.malloc(s, AllocFlags::default()).unwrap();
            p.write(h, &pattern(i as u64, s)).unwrap();
            (h, i as u64, s)
        })
        .collect()
}

#[test]
fn census_agrees_with_the_class_statistics() {
    let p = pool(Layout::Kernel);
    let objs = fill(&p, 5000, |i| 20 + (i * 37) % 4077);
    let c = p.census();
    assert_eq!(c.transit, 0, "nothing changes during this walk");
    assert_eq!(c.zspage + c.huge, p.total_pages());
    assert_eq!(c.top, c.free + c.zspage + c.huge);
    for idx in p.class_indices() {
        let ci = p.class_info(idx).unwrap();
        assert_eq!(c.by_class[idx] as u64, ci.pages_used, "class {idx}");
        if ci.pages_per_zspage == 1 && ci.objs_per_zspage == 1 {
            assert_eq!(c.huge as u64, ci.pages_used, "the huge class's frames are huge frames");
        }
    }
    // Frame by frame: each in-use frame's index lies within its class's chain.
    let kinds = p.frame_kinds();
    assert_eq!(kinds.len(), c.top);
    let mut seen = 0;
    for kind in kinds {
        if let FrameKind::Zspage { class_index, index } = kind {
            assert!(index < p.class_info(class_index).unwrap().pages_per_zspage);
            seen += 1;
        }
    }
    assert_eq!(seen, c.zspage);
    for (h, _, _) in &objs[..2500] {
        p.free(*h).unwrap();
    }
    assert_eq!(p.census().zspage + p.census().huge, p.total_pages());
    verify(&p, &objs[2500..]);
}

/// A zspage of the kernel layout's 48-byte class on frames 0, 2, 3 (see tests/pool.rs).
fn split_zspage(p: &Pool) -> Vec<(Handle, u64, usize)> {
    let a = p.malloc(4096, AllocFlags::default()).unwrap();
    let _b = p.malloc(4096, AllocFlags::default()).unwrap();
    p.free(a).unwrap();
    (0..256u64)
        .map(|i| {
            let h = p.malloc(40, AllocFlags::default()).unwrap();
            p.write(h, &pattern(i, 40)).unwrap();
            (h, i, 40)
        })
        .collect()
}

#[test]
fn adjacency_turns_copies_into_direct_reads() {
    let p = pool_4k(Layout::Kernel);
    let objs = split_zspage(&p);
    let straddler = objs[85].0;
    let mut local = [0u8; 40];
    assert!(p.read_begin(straddler, 40, &mut local).unwrap().is_copy());
    let copied = p.info().read_copied_bytes;
    assert_eq!(copied, 40, "bytes copied by reads are counted");
    let r = p.make_adjacent();
    assert_eq!(r.zspages_joined, 1);
    assert_eq!(r.frames_moved, 3);
    assert_eq!(p.info().frames_migrated, 3);
    check(&p);
    let read = p.read_begin(straddler, 40, &mut local).unwrap();
    assert!(!read.is_copy(), "in place now");
    drop(read);
    assert_eq!(p.info().read_copied_bytes, copied, "no more copies");
    verify(&p, &objs);
    assert_eq!(p.make_adjacent().zspages_joined, 0, "nothing left to join");
}

#[test]
fn a_frame_with_a_pinned_object_does_not_move() {
    let p = pool_4k(Layout::Kernel);
    let objs = split_zspage(&p);
    let m = p.map(objs[0].0, MapMode::ReadOnly).unwrap(); // pins an object of frame 0
    let addr = m.as_ptr();
    let r = p.make_adjacent();
    assert_eq!(r.zspages_joined, 0);
    assert_eq!(r.frames_busy, 1);
    assert_eq!(m.as_ptr(), addr);
    assert_eq!(&m[..40], &pattern(0, 40)[..]);
    drop(m);
    check(&p);
    assert_eq!(p.make_adjacent().zspages_joined, 1, "unmapped, it moves");
    check(&p);
    verify(&p, &objs);
}

#[test]
fn defragmentation_shrinks_the_arena() {
    let p = pool(Layout::Dense);
    // Grow to ~4000 frames, then free everything but a scattering of objects, many of
    // them near the top of the arena; compaction packs classes but not the arena.
    let objs = fill(&p, 12_000, |i| 300 + (i * 131) % 3000);
    let grown = p.census();
    let keep: Vec<_> = objs.iter().filter(|(_, i, _)| i % 50 == 0).copied().collect();
    for (h, i, _) in &objs {
        if i % 50 != 0 {
            p.free(*h).unwrap();
        }
    }
    p.compact();
    check(&p);
    let before = p.census();
    assert!(before.top > 2 * p.total_pages(), "the arena is sparse: top {} for {} frames", before.top, p.total_pages());
    let r = p.defragment();
    check(&p);
    let after = p.census();
    assert!(r.frames_moved > 0 && r.frames_released > 0, "{r:?}");
    assert_eq!(after.top, p.total_pages(), "every frame in use now sits below the held count");
    assert!(after.committed < before.committed, "committed {} -> {}", before.committed, after.committed);
    assert!(after.committed <= after.top.div_ceil(512) * 512);
    // The address range stays reserved, so the arena can always grow back.
    assert_eq!(after.arena_mapped_bytes, before.arena_mapped_bytes);
    assert_eq!(before.zspage + before.huge, after.zspage + after.huge);
    verify(&p, &keep);
    // The arena grows again on demand.
    let more = fill(&p, 4000, |i| 1000 + i % 500);
    check(&p);
    verify(&p, &more);
    verify(&p, &keep);
    assert!(p.census().committed > after.committed);
    assert!(grown.arena_mapped_bytes == p.census().arena_mapped_bytes);
}

/// Defragmentation moves frames in order: a zspage whose frames were adjacent, moved
/// into a run of free frames, stays adjacent, so its straddling objects are still
/// read in place, but for one zspage cut by the line between frames that stay and
/// frames that move (found by the C tests: the order was reversed, every straddling
/// object was copied on each read).
#[test]
fn defragmentation_keeps_frames_in_order() {
    for layout in [Layout::Dense, Layout::Kernel] {
        let p = pool(layout);
        let fillers = fill(&p, 16, |_| 4096);
        let objs = fill(&p, 48, |_| 3000);
        for (h, _, _) in &fillers {
            p.free(*h).unwrap();
        }
        let copies = |p: &Pool| {
            let before = p.info().read_copied_bytes;
            let mut local = vec![0u8; 3000];
            for &(h, _, s) in &objs {
                drop(p.read_begin(h, s, &mut local).unwrap());
            }
            p.info().read_copied_bytes - before
        };
        assert_eq!(copies(&p), 0, "{layout:?}: fresh zspages are adjacent runs");
        let r = p.defragment();
        assert!(r.frames_moved > 0, "{layout:?}: {r:?}");
        check(&p);
        // Only the zspage cut by the line between frames that stay and frames that
        // move can be split: at most one of its objects straddles the cut.
        assert!(copies(&p) <= 3000, "{layout:?}: moved in order, still adjacent");
        verify(&p, &objs);
    }
}

#[test]
fn releasing_the_address_space_shrinks_the_virtual_size() {
    let p = pool_4k(Layout::Dense);
    let objs = fill(&p, 8000, |i| 300 + (i * 131) % 3000);
    for (h, i, _) in &objs {
        if i % 50 != 0 {
            p.free(*h).unwrap();
        }
    }
    p.compact();
    p.defragment();
    let before = p.census();
    let released = p.release_address_space();
    let after = p.census();
    check(&p);
    assert_eq!(released, before.arena_mapped_bytes - after.arena_mapped_bytes);
    assert!(released > 0);
    assert_eq!(after.arena_mapped_bytes, after.committed * 4096);
    assert!(after.side_table_mapped_bytes < before.side_table_mapped_bytes);
    let keep: Vec<_> = objs.iter().filter(|(_, i, _)| i % 50 == 0).copied().collect();
    verify(&p, &keep);
    // The walker still works over what is mapped.
    assert_eq!(after.zspage + after.huge, p.total_pages());
}

/// Frames a migration gives back wait for the epoch in the migrating thread's bag of
/// deferred functions. A thread that joined zspages and then stays idle (alive,
/// making no call) must not keep them from the pool: a defragmentation on another
/// thread waits for them and then moves the top frames down into them.
#[test]
fn frames_migrated_by_an_idle_thread_come_back() {
    let p = pool_4k(Layout::Kernel);
    let objs = split_zspage(&p);
    let (joined, idle) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = p.make_adjacent();
            assert_eq!((r.zspages_joined, r.frames_moved), (1, 3));
            joined.wait();
            idle.wait(); // alive and idle until the other thread is done
        });
        joined.wait();
        let top = p.census().top;
        // The first waits for the frames the other thread gave back; the second moves
        // the zspage's frames, now at the top, down into them.
        let first = p.defragment();
        let second = p.defragment();
        let after = p.census().top;
        idle.wait();
        assert_eq!(first.frames_moved + second.frames_moved, 3, "the zspage's frames moved down");
        assert_eq!(after, top - 3, "the arena's top came down by them");
    });
    check(&p);
    verify(&p, &objs);
}
