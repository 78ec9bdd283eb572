//! The core through the safe Rust API: contents, layouts, limits, statistics, misuse.

mod common;
use common::{check, pattern, pool};
use zsmalloc::{AllocFlags, Config, Error, Handle, Layout, MapMode, Pool};

const LAYOUTS: [Layout; 2] = [Layout::Dense, Layout::Kernel];

#[test]
fn every_size_round_trips_through_both_generations() {
    for layout in LAYOUTS {
        let p = pool(layout);
        let mut live = Vec::new();
        for size in 1..=4096usize {
            let h = p.malloc(size, AllocFlags::default()).unwrap();
            let data = pattern(size as u64, size);
            p.write(h, &data).unwrap();
            live.push((h, data));
        }
        check(&p);
        for (i, (h, data)) in live.iter().enumerate() {
            let mut out = vec![0u8; data.len()];
            p.read(*h, &mut out).unwrap();
            assert_eq!(&out, data, "{layout:?} size {}", i + 1);
            let mut local = vec![0u8; data.len()];
            let r = p.read_begin(*h, data.len(), &mut local).unwrap();
            assert_eq!(&*r, &data[..]);
            drop(r);
            let m = p.map(*h, MapMode::ReadOnly).unwrap();
            assert!(m.len() >= data.len());
            assert_eq!(&m[..data.len()], &data[..]);
        }
        // Write through mappings, read back through the other generation.
        for (h, data) in live.iter_mut() {
            let mode = if data.len() % 2 == 0 { MapMode::ReadWrite } else { MapMode::WriteOnly };
            let mut m = p.map(*h, mode).unwrap();
            for b in data.iter_mut() {
                *b = b.wrapping_add(1);
            }
            m.as_mut_slice().unwrap()[..data.len()].copy_from_slice(data);
            drop(m);
            let mut out = vec![0u8; data.len()];
            p.read(*h, &mut out).unwrap();
            assert_eq!(&out, data);
        }
        check(&p);
        for (h, _) in live {
            p.free(h).unwrap();
        }
        check(&p);
        assert_eq!(p.total_pages(), 0, "every frame goes back when the pool empties");
        assert_eq!(p.info().live_objects, 0);
    }
}

/// A kernel-layout pool of 4 KiB frames, whatever the suite's: `make_split_zspage`
/// counts on the 48-byte class's chain of three 4 KiB frames.
fn kernel_4k() -> Pool {
    let cfg = Config { max_pages: 1 << 18, layout: Layout::Kernel, frame_size: 4096, ..Config::default() };
    Pool::with_config("split", &cfg).unwrap()
}

#[test]
fn read_only_mappings_are_not_writable_and_share_the_object() {
    let p = kernel_4k();
    let (straddler, _) = make_split_zspage(&p);
    let data = pattern(1, 40);
    p.write(straddler, &data).unwrap();
    // In place or copied, a read-only mapping hands out no writable bytes: another
    // read-only mapping of the object may be open.
    let mut m = p.map(straddler, MapMode::ReadOnly).unwrap();
    assert!(m.is_copy());
    let mut other = p.map(straddler, MapMode::ReadOnly).unwrap();
    assert_eq!(m.as_mut_slice(), Err(Error::Invalid("a read-only mapping is not writable")));
    assert!(other.as_mut_slice().is_err());
    assert_eq!(&m[..40], &data[..]);
    assert_eq!(&other[..40], &data[..]);
    // Nor may anyone write the object meanwhile.
    assert_eq!(p.write(straddler, &[0]), Err(Error::Busy));
    assert_eq!(p.map(straddler, MapMode::ReadWrite).err(), Some(Error::Busy));
    drop((m, other));
    let mut out = vec![0u8; 40];
    p.read(straddler, &mut out).unwrap();
    assert_eq!(out, data);
}

#[test]
fn a_writable_mapping_holds_its_object_alone() {
    for layout in [Layout::Dense, Layout::Kernel] {
        let p = pool(layout);
        let h = p.malloc(100, AllocFlags::default()).unwrap();
        let g = p.malloc(100, AllocFlags::default()).unwrap();
        p.write(h, &pattern(7, 100)).unwrap();
        let misuse = p.info().misuse_events;
        for mode in [MapMode::ReadWrite, MapMode::WriteOnly] {
            let mut m = p.map(h, mode).unwrap();
            // Every other access to the object is refused, on this thread too: none
            // waits (it would wait for ever here).
            let mut out = [0u8; 100];
            let mut local = [0u8; 100];
            assert_eq!(p.read(h, &mut out), Err(Error::Busy));
            assert_eq!(p.read_begin(h, 100, &mut local).err(), Some(Error::Busy));
            assert_eq!(p.write(h, &out), Err(Error::Busy));
            for other in [MapMode::ReadOnly, MapMode::ReadWrite, MapMode::WriteOnly] {
                assert_eq!(p.map(h, other).err(), Some(Error::Busy), "{other:?} beside {mode:?}");
            }
            // Other objects are untouched by it.
            p.write(g, &out).unwrap();
            m.as_mut_slice().unwrap()[..100].copy_from_slice(&pattern(8, 100));
            drop(m);
            p.read(h, &mut out).unwrap();
            assert_eq!(out[..], pattern(8, 100)[..]);
            p.write(h, &pattern(7, 100)).unwrap();
        }
        // Refusals for being held are not misuse (only a free of a held object is).
        assert_eq!(p.info().misuse_events, misuse);
        let _m = p.map(h, MapMode::ReadWrite).unwrap();
        assert_eq!(p.free(h), Err(Error::Busy));
        assert_eq!(p.info().misuse_events, misuse + 1);
    }
}

/// Builds a zspage of the kernel layout's 48-byte class (3 frames, 256 objects) on
/// frames that are not adjacent (pfn 0, then 2 and 3), fills it, and returns one
/// object straddling the non-adjacent frames 0|2 and one straddling the adjacent 2|3.
fn make_split_zspage(p: &Pool) -> (Handle, Handle) {
    let a = p.malloc(4096, AllocFlags::default()).unwrap(); // huge: pfn 0
    let b = p.malloc(4096, AllocFlags::default()).unwrap(); // huge: pfn 1
    p.free(a).unwrap(); // pfn 0 free; the next zspage takes 0, then 2 and 3
    let hs: Vec<Handle> = (0..256).map(|_| p.malloc(40, AllocFlags::default()).unwrap()).collect();
    check(p);
    let _ = b;
    // Slot i of the 48-byte class starts at 48 * i; 4096 / 48 = 85.33, so object 85
    // straddles frames 0 and 1 of the chain, object 170 frames 1 and 2.
    (hs[85], hs[170])
}

#[test]
fn reads_are_in_place_where_contiguous_and_copied_where_not() {
    let p = kernel_4k();
    let (split, adjacent) = make_split_zspage(&p);
    for (h, copied) in [(split, true), (adjacent, false)] {
        let data = pattern(h.to_raw(), 40);
        p.write(h, &data).unwrap();
        let mut local = vec![0u8; 40];
        let r = p.read_begin(h, 40, &mut local).unwrap();
        assert_eq!(r.is_copy(), copied);
        assert_eq!(&*r, &data[..]);
        drop(r);
        let m = p.map(h, MapMode::ReadWrite).unwrap();
        assert_eq!(m.is_copy(), copied);
        assert_eq!(&m[..40], &data[..]);
    }
    // A read short enough to stay inside the first frame is in place even there.
    let mut local = vec![0u8; 8];
    let r = p.read_begin(split, 8, &mut local).unwrap();
    assert!(!r.is_copy());
}

#[test]
fn kernel_layout_tables_through_the_pool() {
    // The kernel's huge class sizes for chains of 4, 8 and 16 at each page size
    // (tools/kernel_density.py --table --page N --chain C).
    let frame = common::frame();
    let huges = match frame {
        4096 => [3257, 3625, 3833],
        16384 => [13081, 14553, 15385],
        65536 => [52249, 58137, 61465],
        f => panic!("no figures for frames of {f} bytes"),
    };
    for (chain, huge) in [4, 8, 16].into_iter().zip(huges) {
        let p = Pool::with_config(
            "k",
            &Config { max_pages: 4096, chain_size: chain, layout: Layout::Kernel, ..common::config() },
        )
        .unwrap();
        assert_eq!(p.huge_class_size(), huge);
        // The huge class: one object per frame.
        let h = p.malloc(huge, AllocFlags::default()).unwrap();
        assert_eq!(p.total_pages(), 1);
        let c = p.class_info(p.lookup_class_index(huge).unwrap()).unwrap();
        assert_eq!((c.pages_per_zspage, c.objs_per_zspage, c.class_size), (1, 1, frame));
        p.free(h).unwrap();
        // One below: a multi-object class.
        let c = p.class_info(p.lookup_class_index(huge - 1).unwrap()).unwrap();
        assert!(c.objs_per_zspage > 1 && c.class_size == huge + 7);
    }
}

#[test]
fn lookup_and_class_info_agree_with_malloc() {
    for layout in LAYOUTS {
        let p = pool(layout);
        for size in [1usize, 31, 32, 33, 100, 1000, 2000, 3000, 4096] {
            let idx = p.lookup_class_index(size).unwrap();
            let before = p.class_info(idx).unwrap().objs_inuse;
            let h = p.malloc(size, AllocFlags::default()).unwrap();
            let c = p.class_info(idx).unwrap();
            assert_eq!(c.objs_inuse, before + 1, "{layout:?} size {size} landed in class {idx}");
            assert!(c.class_size >= size);
            if layout == Layout::Kernel {
                assert_eq!(c.objs_allocated, c.objs_per_zspage as u64 * c.zspages.iter().sum::<u64>());
            } else {
                assert_eq!(c.objs_allocated, c.objs_inuse, "a dense lane has no empty slots");
            }
            assert_eq!(c.pages_used, c.pages_per_zspage as u64 * c.zspages.iter().sum::<u64>());
            p.free(h).unwrap();
        }
        assert!(p.lookup_class_index(0).is_err() && p.lookup_class_index(common::frame() + 1).is_err());
        assert!(p.class_info(100_000).is_err());
        // A full-table index merged into a larger class names no class.
        let merged = (0..255).find(|&i| p.class_info(i).is_err());
        if layout == Layout::Kernel {
            assert!(merged.is_some(), "the kernel table merges classes");
        }
    }
}

#[test]
fn info_counts_objects_bytes_and_frames() {
    let p = pool(Layout::Dense);
    let sizes = [100usize, 200, 300, 4096, 1];
    let hs: Vec<_> = sizes.iter().map(|&s| p.malloc(s, AllocFlags::default()).unwrap()).collect();
    let i = p.info();
    assert_eq!(i.live_objects, 5);
    assert_eq!(i.requested_bytes, sizes.iter().sum::<usize>() as u64);
    assert_eq!(i.total_pages, p.total_pages() as u64);
    assert!(i.meta_bytes > 0 && i.footprint() > i.requested_bytes);
    p.free(hs[0]).unwrap();
    assert_eq!(p.info().requested_bytes, sizes[1..].iter().sum::<usize>() as u64);
}

#[test]
fn page_limit_and_nogrow() {
    // 4 KiB frames, whatever the suite's: the figures are frames under the limit.
    let p = Pool::with_config("limit", &Config { max_pages: 8, frame_size: 4096, ..Config::default() }).unwrap();
    let hs: Vec<_> = (0..8).map(|_| p.malloc(4096, AllocFlags::default()).unwrap()).collect();
    assert_eq!(p.total_pages(), 8);
    let before = p.info();
    assert_eq!(p.malloc(4096, AllocFlags::default()), Err(Error::NoMemory));
    assert_eq!(p.malloc(100, AllocFlags::default()), Err(Error::NoMemory), "a new zspage would pass the limit");
    let after = p.info();
    assert_eq!((after.total_pages, after.live_objects), (before.total_pages, before.live_objects), "nothing changed");
    check(&p);
    p.free(hs[0]).unwrap();
    // NOGROW: room in a zspage is used, and without room malloc fails rather than
    // take a frame. The freed object left a 4096-byte hole: 128 + 128 + 2000 bytes
    // fit in it, a second 2000 does not.
    let small = p.malloc(128, AllocFlags::default()).unwrap();
    let again = p.malloc(128, AllocFlags::NOGROW).unwrap();
    let mid = p.malloc(2000, AllocFlags::NOGROW).unwrap();
    assert_eq!(p.malloc(2000, AllocFlags::NOGROW), Err(Error::NoMemory));
    assert_eq!(p.total_pages(), 8);
    for h in [small, again, mid].into_iter().chain(hs.into_iter().skip(1)) {
        p.free(h).unwrap();
    }
    check(&p);
}

#[test]
fn bad_arguments() {
    let p = pool(Layout::Dense);
    assert!(matches!(p.malloc(0, AllocFlags::default()), Err(Error::Invalid(_))));
    assert_eq!(p.malloc(common::frame() + 1, AllocFlags::default()), Err(Error::TooLarge));
    assert!(matches!(p.malloc(10, AllocFlags(2)), Err(Error::Invalid(_))));
    for bad in [Config { chain_size: 3, ..common::config() }, Config { chain_size: 17, ..common::config() }] {
        assert!(matches!(Pool::with_config("x", &bad), Err(Error::Invalid(_))));
    }
    assert_eq!(p.info().misuse_events, 0, "plain errors are not misuse");
}

#[test]
fn misuse_is_refused_and_loses_nothing() {
    let p = pool(Layout::Dense);
    let other = pool(Layout::Dense);
    let keep: Vec<_> =
        (0..50).map(|i| (p.malloc(300 + i, AllocFlags::default()).unwrap(), pattern(i as u64, 300 + i))).collect();
    for (h, d) in &keep {
        p.write(*h, d).unwrap();
    }
    let h = p.malloc(500, AllocFlags::default()).unwrap();
    let foreign = other.malloc(500, AllocFlags::default()).unwrap();
    let mut misuse = 0;
    let mut expect = |r: Result<(), Error>, e: Error| {
        assert_eq!(r.map_err(|x| x.errno()), Err(e.errno()));
        misuse += 1;
        assert_eq!(p.info().misuse_events, misuse);
    };
    let inval = Error::Invalid("");
    // Foreign and invented handles.
    expect(p.free(foreign), inval);
    expect(p.free(Handle::from_raw(0x1234_5678)), inval);
    expect(p.write(Handle::from_raw(h.to_raw() + 1_000_000), b"x"), inval);
    // Busy: free while mapped, free while being read; the object survives.
    p.write(h, b"alive").unwrap();
    let m = p.map(h, MapMode::ReadOnly).unwrap();
    expect(p.free(h), Error::Busy);
    drop(m);
    let mut local = [0u8; 5];
    let r = p.read_begin(h, 5, &mut local).unwrap();
    expect(p.free(h), Error::Busy);
    drop(r);
    let mut out = [0u8; 5];
    p.read(h, &mut out).unwrap();
    assert_eq!(&out, b"alive");
    // Longer than the slot.
    let slot = p.map(h, MapMode::ReadOnly).unwrap().len();
    expect(p.write(h, &vec![0u8; slot + 1]), inval);
    expect(p.read(h, &mut vec![0u8; slot + 1]), inval);
    // Double free and use after free.
    p.free(h).unwrap();
    expect(p.free(h), inval);
    expect(p.write(h, b"x"), inval);
    expect(p.map(h, MapMode::ReadWrite).map(|_| ()), inval);
    // The slot is reused by a new object: the old handle still fails.
    let h2 = p.malloc(500, AllocFlags::default()).unwrap();
    assert_ne!(h2, h);
    expect(p.free(h), inval);
    p.free(h2).unwrap();
    for (h, d) in &keep {
        let mut out = vec![0u8; d.len()];
        p.read(*h, &mut out).unwrap();
        assert_eq!(&out, d, "other objects untouched");
    }
    check(&p);
    assert_eq!(other.info().misuse_events, 0);
}

#[test]
fn stale_handles_are_detected_across_many_reuses() {
    let p = pool(Layout::Dense);
    let first = p.malloc(64, AllocFlags::default()).unwrap();
    p.free(first).unwrap();
    // The same slot is reused (LIFO free-slot list) with a new generation each time.
    for _ in 0..1000 {
        let h = p.malloc(64, AllocFlags::default()).unwrap();
        assert_ne!(h, first);
        assert!(p.write(first, b"x").is_err());
        p.free(h).unwrap();
    }
}

#[test]
fn many_mappings_on_one_thread() {
    let p = pool(Layout::Kernel);
    let hs: Vec<_> = (0..64).map(|i| p.malloc(40 + i, AllocFlags::default()).unwrap()).collect();
    let maps: Vec<_> = hs.iter().map(|&h| p.map(h, MapMode::ReadWrite).unwrap()).collect();
    assert_eq!(maps.len(), 64);
    drop(maps);
    for h in hs {
        p.free(h).unwrap();
    }
    check(&p);
}
