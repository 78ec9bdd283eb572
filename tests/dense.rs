//! The dense layout's own behaviour: objects of every size packed end to end in shared
//! zspages, holes reused, lanes per thread, short zspages under a page limit, and
//! compaction that empties zspages into wherever malloc would place their objects.

mod common;
use common::{check, pattern, pool, trace, Rng};
use zsmalloc::{AllocFlags, Config, Error, Handle, Layout, MapMode, Pool};

/// A dense zspage's bytes at every frame size: 16 frames of 4 KiB, 4 of 16 KiB, one of
/// 64 KiB. Tests whose figures are frames under a page limit pin 4 KiB frames
/// (`page_limited`); the others run at the suite's frame (`ZS_TEST_FRAME_SIZE`).
const ZSPAGE: usize = 65536;

/// Frames of a whole dense zspage at the suite's frame size.
fn chain() -> usize {
    ZSPAGE / common::frame()
}

/// A pool of 4 KiB frames and `max_pages`: for the tests that count frames against
/// a page limit.
fn page_limited(name: &str, max_pages: usize) -> Pool {
    Pool::with_config(name, &Config { max_pages, frame_size: 4096, ..Config::default() }).unwrap()
}

#[test]
fn objects_of_every_size_share_a_zspage_end_to_end() {
    let p = pool(Layout::Dense);
    assert_eq!(p.class_table().chain(), chain(), "the dense layout's default chain");
    // 655 objects of 100 bytes and one of 36 fill 16 frames to the byte.
    let mut hs: Vec<Handle> = (0..655).map(|_| p.malloc(100, AllocFlags::default()).unwrap()).collect();
    hs.push(p.malloc(36, AllocFlags::default()).unwrap());
    assert_eq!(p.total_pages(), chain());
    assert_eq!(p.malloc(1, AllocFlags::NOGROW), Err(Error::NoMemory), "not one byte is left");
    check(&p);
    // Mixed sizes: the bytes of 40 objects of 1..4096 bytes need this many frames.
    let q = pool(Layout::Dense);
    let sizes: Vec<usize> = (0..40).map(|i| 1 + (i * 997) % 4096).collect();
    let total: usize = sizes.iter().sum();
    for &s in &sizes {
        q.malloc(s, AllocFlags::default()).unwrap();
    }
    assert_eq!(q.total_pages(), total.div_ceil(ZSPAGE) * chain());
    assert_eq!(q.info().requested_bytes as usize, total);
    check(&q);
    for h in hs {
        p.free(h).unwrap();
    }
    assert_eq!(p.total_pages(), 0, "the emptied zspage went back");
}

#[test]
fn an_object_is_exactly_its_size() {
    let p = pool(Layout::Dense);
    for size in [1usize, 7, 100, 1999, 4096] {
        let h = p.malloc(size, AllocFlags::default()).unwrap();
        let m = p.map(h, MapMode::WriteOnly).unwrap();
        assert_eq!(m.len(), size, "a mapping covers the object, no padding");
        drop(m);
        let mut out = vec![0u8; size + 1];
        assert!(matches!(p.read(h, &mut out), Err(Error::Invalid(_))), "one byte past the object is refused");
        assert!(matches!(p.write(h, &out), Err(Error::Invalid(_))));
        p.free(h).unwrap();
    }
    assert_eq!(p.info().misuse_events, 10);
}

#[test]
fn freed_objects_leave_holes_that_malloc_fills() {
    let p = pool(Layout::Dense);
    // One zspage, exactly full: 16 objects of 4096 bytes.
    let hs: Vec<Handle> = (0..16).map(|_| p.malloc(4096, AllocFlags::default()).unwrap()).collect();
    for (i, &h) in hs.iter().enumerate() {
        p.write(h, &pattern(i as u64, 4096)).unwrap();
    }
    p.free(hs[5]).unwrap();
    // The 4096-byte hole takes 1000 + 3000 + 96 bytes without a new frame, then
    // nothing more.
    let small: Vec<Handle> = [1000usize, 3000, 96].iter().map(|&s| p.malloc(s, AllocFlags::NOGROW).unwrap()).collect();
    assert_eq!(p.malloc(1, AllocFlags::NOGROW), Err(Error::NoMemory));
    assert_eq!(p.total_pages(), chain());
    check(&p);
    // Freeing neighbours merges their holes: 1000 + 3000 make room for 4000.
    p.free(small[0]).unwrap();
    p.free(small[1]).unwrap();
    let big = p.malloc(4000, AllocFlags::NOGROW).unwrap();
    check(&p);
    for (i, &h) in hs.iter().enumerate().filter(|&(i, _)| i != 5) {
        let mut out = vec![0u8; 4096];
        p.read(h, &mut out).unwrap();
        assert_eq!(out, pattern(i as u64, 4096), "neighbours of the holes are intact");
    }
    let left = hs.iter().enumerate().filter(|&(i, _)| i != 5).map(|(_, &h)| h);
    for h in left.chain([small[2], big]) {
        p.free(h).unwrap();
    }
    assert_eq!(p.total_pages(), 0);
    check(&p);
}

#[test]
fn a_zspage_is_shorter_where_the_page_limit_leaves_fewer_frames() {
    let p = page_limited("limit", 20);
    let first: Vec<Handle> = (0..16).map(|_| p.malloc(4096, AllocFlags::default()).unwrap()).collect();
    assert_eq!(p.total_pages(), 16);
    let rest: Vec<Handle> = (0..4).map(|_| p.malloc(4096, AllocFlags::default()).unwrap()).collect();
    assert_eq!(p.total_pages(), 20, "a second zspage of the 4 frames left");
    assert_eq!(p.malloc(1, AllocFlags::default()), Err(Error::NoMemory));
    let lane = p.lookup_class_index(1).unwrap();
    let c = p.class_info(lane).unwrap();
    assert_eq!((c.pages_used, c.zspages.iter().sum::<u64>(), c.pages_per_zspage), (20, 2, 16));
    check(&p);
    for h in first.into_iter().chain(rest) {
        p.free(h).unwrap();
    }
    assert_eq!(p.total_pages(), 0);
}

#[test]
fn each_thread_allocates_in_its_lane() {
    let p = std::sync::Arc::new(pool(Layout::Dense));
    let lanes = p.class_indices().count();
    assert!((1..=16).contains(&lanes));
    let seen: Vec<usize> = (0..4)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || {
                let lane = p.lookup_class_index(1).unwrap();
                assert!((1..=4096).step_by(97).all(|s| p.lookup_class_index(s).unwrap() == lane));
                let before = p.class_info(lane).unwrap().objs_inuse;
                let h = p.malloc(300, AllocFlags::default()).unwrap();
                assert_eq!(p.class_info(lane).unwrap().objs_inuse, before + 1, "the object is in the thread's lane");
                p.free(h).unwrap();
                lane
            })
            .join()
            .unwrap()
        })
        .collect();
    if lanes > 1 {
        assert!(seen.windows(2).any(|w| w[0] != w[1]), "threads spread over the lanes: {seen:?}");
    }
    let c = p.class_info(seen[0]).unwrap();
    let frame = common::frame();
    assert_eq!((c.class_size, c.objs_per_zspage, c.pages_per_zspage), (frame, 0, chain()));
    assert_eq!(p.huge_class_size(), frame);
}

/// After the fill and after freeing a seeded half and compacting, on the bundled
/// traces, the dense layout's footprint (frames and all metadata) is within the
/// issue's bounds, and below the kernel layout's count of frames plus 8-byte handles.
#[test]
fn denser_than_the_kernel_layout_on_the_traces() {
    for name in ["node-heap-lz4.txt", "sqlite-heap-lz4.txt"] {
        let sizes = trace(name);
        let n = 100_000;
        let mut waste = [[0f64; 3]; 2];
        let mut density = [[0f64; 3]; 2];
        for (l, layout) in [Layout::Dense, Layout::Kernel].into_iter().enumerate() {
            let p = pool(layout);
            let hs: Vec<Handle> =
                (0..n).map(|i| p.malloc(sizes[i % sizes.len()], AllocFlags::default()).unwrap()).collect();
            let count = |p: &Pool| {
                let i = p.info();
                let foot = if layout == Layout::Dense {
                    i.footprint()
                } else {
                    i.total_pages * i.frame_size + 8 * i.live_objects
                } as f64;
                (i.requested_bytes as f64 / foot, (foot - i.requested_bytes as f64) / i.live_objects as f64)
            };
            (density[l][0], waste[l][0]) = count(&p);
            let mut rng = Rng(0x5EED);
            let mut live = Vec::new();
            for h in hs {
                if rng.next_u64() % 2 == 0 {
                    p.free(h).unwrap();
                } else {
                    live.push(h);
                }
            }
            p.compact();
            check(&p);
            (density[l][1], waste[l][1]) = count(&p);
            // Churn without compaction, as a page store's steady state: as many
            // replacements as objects, each freeing a random live object and
            // allocating a size drawn from the trace (the harness's churn phase).
            for _ in 0..n {
                let k = (rng.next_u64() % live.len() as u64) as usize;
                p.free(live[k]).unwrap();
                live[k] =
                    p.malloc(sizes[(rng.next_u64() % sizes.len() as u64) as usize], AllocFlags::default()).unwrap();
            }
            check(&p);
            (density[l][2], waste[l][2]) = count(&p);
        }
        assert!(density[0][0] >= 0.97, "{name}: dense density after fill {}", density[0][0]);
        assert!(density[0][1] >= 0.95, "{name}: dense density after half + compaction {}", density[0][1]);
        assert!(
            waste[0][0] <= 0.75 * waste[1][0],
            "{name}: waste after fill, dense {:?} kernel {:?}",
            waste[0],
            waste[1]
        );
        assert!(
            waste[0][1] <= 0.75 * waste[1][1],
            "{name}: waste after compaction, dense {:?} kernel {:?}",
            waste[0],
            waste[1]
        );
        // Holes that later objects do not fit cost the dense layout some of its
        // density under churn; it must not fall below the kernel layout's.
        assert!(
            density[0][2] >= density[1][2],
            "{name}: density after churn, dense {:?} kernel {:?}",
            density[0],
            density[1]
        );
    }
}

#[test]
fn compaction_that_cannot_grow_stops_and_loses_nothing() {
    // A pool at its page limit: emptying a zspage may need a new one first.
    let p = page_limited("full", 64);
    let mut hs = Vec::new();
    let mut i = 0u64;
    while let Ok(h) = p.malloc(300 + (i as usize * 131) % 3000, AllocFlags::default()) {
        p.write(h, &pattern(i, 300 + (i as usize * 131) % 3000)).unwrap();
        hs.push((h, i));
        i += 1;
    }
    assert_eq!(p.total_pages(), 64);
    // Free a third everywhere: every zspage has room, none is empty.
    let kept: Vec<(Handle, u64)> = hs
        .into_iter()
        .filter(|&(h, i)| {
            if i % 3 == 0 {
                p.free(h).unwrap();
            }
            i % 3 != 0
        })
        .collect();
    let before = p.total_pages();
    let r = p.compact();
    check(&p);
    assert_eq!(before - p.total_pages(), r.pages_freed);
    assert!(p.total_pages() <= 64);
    for (h, i) in kept {
        let s = 300 + (i as usize * 131) % 3000;
        let mut out = vec![0u8; s];
        p.read(h, &mut out).unwrap();
        assert_eq!(out, pattern(i, s));
    }
}

/// Under a page limit that leaves no room for a new zspage, compaction moves the
/// objects of the emptiest zspage into the holes of the fullest rather than growing
/// the pool (found by the Python tests: the pool grew by a one-frame zspage, and
/// every later compaction returned 0).
#[test]
fn compaction_at_the_page_limit_uses_holes_and_never_grows() {
    let p = page_limited("limit", 33);
    // Sizes that fall every other object, so that the zspages are whole chains (a
    // run of rising sizes would choose their length), 21 objects each.
    let size = |i: usize| if i % 2 == 0 { 3000 } else { 2990 };
    let hs: Vec<Handle> = (0..42).map(|i| p.malloc(size(i), AllocFlags::default()).unwrap()).collect();
    assert_eq!(p.total_pages(), 32);
    let kept: Vec<Handle> =
        hs.iter().enumerate().filter(|&(i, _)| matches!(i, 0 | 1 | 21 | 22)).map(|(_, &h)| h).collect();
    for (i, &h) in hs.iter().enumerate() {
        if kept.contains(&h) {
            p.write(h, &pattern(i as u64, size(i))).unwrap();
        } else {
            p.free(h).unwrap();
        }
    }
    let r = p.compact();
    check(&p);
    assert_eq!((r.pages_freed, p.total_pages()), (16, 16), "one zspage holds the 11980 bytes left");
    for &h in &kept {
        let i = hs.iter().position(|&x| x == h).unwrap();
        let mut out = vec![0u8; size(i)];
        p.read(h, &mut out).unwrap();
        assert_eq!(out, pattern(i as u64, size(i)));
    }
}

/// A zspage with a pinned object is left whole: moving its other objects out would
/// take frames and give none back (found by the Python tests: 32 frames became 48).
#[test]
fn compaction_leaves_zspages_with_pinned_objects_whole() {
    let p = pool(Layout::Dense);
    let hs: Vec<Handle> = (0..32).map(|_| p.malloc(4096, AllocFlags::default()).unwrap()).collect();
    for (i, &h) in hs.iter().enumerate() {
        if !matches!(i, 0 | 1 | 16 | 17) {
            p.free(h).unwrap();
        }
    }
    assert_eq!(p.total_pages(), 2 * chain());
    let maps = [p.map(hs[0], MapMode::ReadOnly).unwrap(), p.map(hs[16], MapMode::ReadOnly).unwrap()];
    let r = p.compact();
    assert_eq!((r.pages_freed, r.objs_moved, r.skipped_pinned), (0, 0, 2));
    assert_eq!(p.total_pages(), 2 * chain(), "nothing taken");
    check(&p);
    drop(maps);
    let r = p.compact();
    assert_eq!((r.pages_freed, p.total_pages()), (chain(), chain()), "unmapped, the two zspages become one");
    check(&p);
}

/// The handle table is reserved for 256 handles per frame of the arena: tiny objects
/// run out of handles before frames, and the refusal is a clean `NoMemory`.
#[test]
fn tiny_objects_run_out_of_handles_first() {
    let p = page_limited("tiny", 4);
    let mut hs = Vec::new();
    let err = loop {
        match p.malloc(1, AllocFlags::default()) {
            Ok(h) => hs.push(h),
            Err(e) => break e,
        }
    };
    assert_eq!((err, hs.len(), p.total_pages()), (Error::NoMemory, 4 * 256, 4));
    check(&p);
    p.free(hs.pop().unwrap()).unwrap();
    assert!(p.malloc(1, AllocFlags::default()).is_ok(), "a freed handle is taken again");
}

/// A whole dense zspage of one-byte objects: 65536 objects, one more than a 16-bit
/// count holds. Every one keeps its byte through a free of another, a compaction and
/// the checker: a count that wrapped to zero would read as an empty zspage.
#[test]
fn a_zspage_of_65536_one_byte_objects_keeps_every_object() {
    let p = pool(Layout::Dense);
    let hs: Vec<Handle> = (0..ZSPAGE + 1)
        .map(|i| {
            let h = p.malloc(1, AllocFlags::default()).unwrap();
            p.write(h, &[i as u8 ^ 0x5a]).unwrap();
            h
        })
        .collect();
    check(&p);
    assert_eq!(p.info().live_objects as usize, ZSPAGE + 1);
    p.free(hs[7]).unwrap();
    check(&p);
    p.compact();
    check(&p);
    for (i, &h) in hs.iter().enumerate().filter(|&(i, _)| i != 7) {
        let mut b = [0u8];
        p.read(h, &mut b).unwrap();
        assert_eq!(b[0], i as u8 ^ 0x5a, "object {i}");
    }
    for (i, h) in hs.into_iter().enumerate() {
        if i != 7 {
            p.free(h).unwrap();
        }
    }
    check(&p);
    assert_eq!(p.total_pages(), 0, "every zspage went back");
}
