//! Objects larger than a page: the limit, every access call for sizes up to 64 KiB in
//! both layouts, objects over frames that are not adjacent, compaction and migration.

mod common;
use common::{check, pattern, Rng};
use zsmalloc::{AllocFlags, Config, Error, FrameKind, Handle, Layout, MapMode, Pool};

fn pool(layout: Layout, limit: usize) -> Pool {
    let cfg = Config { max_pages: 1 << 18, layout, max_object_size: limit, ..common::config() };
    Pool::with_config("large", &cfg).unwrap()
}

const LAYOUTS: [Layout; 2] = [Layout::Dense, Layout::Kernel];

/// Every size up to 8192, then a sweep to 65536 that ends on it.
fn sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (1..=8192).collect();
    v.extend((8193..65536).step_by(251));
    v.extend([16384, 32768, 32769, 65535, 65536]);
    v
}

/// Reads the object through every read call and checks it against `want`.
fn verify_all_ways(p: &Pool, h: Handle, want: &[u8]) {
    let n = want.len();
    let mut out = vec![0u8; n];
    p.read(h, &mut out).unwrap();
    assert_eq!(out, want, "read of {n} bytes");
    let mut local = vec![0u8; n];
    let r = p.read_begin(h, n, &mut local).unwrap();
    assert_eq!(&r[..], want, "read_begin of {n} bytes");
    drop(r);
    let m = p.map(h, MapMode::ReadOnly).unwrap();
    assert!(m.len() >= n, "a mapping covers the whole object");
    assert_eq!(&m[..n], want, "read-only mapping of {n} bytes");
    drop(m);
    assert_eq!(p.obj_size(h).unwrap(), n);
}

#[test]
fn the_limit_is_configured_and_enforced() {
    for layout in LAYOUTS {
        let cfg = |limit| Config { max_pages: 1 << 12, layout, max_object_size: limit, ..common::config() };
        assert!(matches!(Pool::with_config("x", &cfg(65537)), Err(Error::Invalid(_))));
        assert!(matches!(Pool::with_config("x", &cfg(usize::MAX)), Err(Error::Invalid(_))));
        let p = Pool::with_config("x", &cfg(0)).unwrap();
        let frame = common::frame();
        assert_eq!(p.max_object_size(), frame, "0 is the kernel's limit: the frame");
        assert_eq!(p.info().max_object_size, frame as u64);
        assert_eq!(p.malloc(frame + 1, AllocFlags::default()), Err(Error::TooLarge));
        let p = Pool::with_config("x", &cfg(20000)).unwrap();
        assert_eq!(p.info().max_object_size, 20000);
        assert_eq!(p.malloc(20001, AllocFlags::default()), Err(Error::TooLarge));
        let h = p.malloc(20000, AllocFlags::default()).unwrap();
        // A length beyond the object is refused, and the object is untouched.
        p.write(h, &pattern(1, 20000)).unwrap();
        // The object's slot: its size (dense), its class's place (kernel).
        let slot = p.map(h, MapMode::ReadOnly).unwrap().len();
        assert!(slot >= 20000 && (layout == Layout::Kernel || slot == 20000));
        assert!(matches!(p.write(h, &vec![0u8; slot + 1]), Err(Error::Invalid(_))));
        let mut out = vec![0u8; slot + 1];
        assert!(matches!(p.read(h, &mut out), Err(Error::Invalid(_))));
        assert!(p.read_begin(h, slot + 1, &mut out).is_err());
        verify_all_ways(&p, h, &pattern(1, 20000));
        let p = Pool::with_config("x", &cfg(65536)).unwrap();
        p.malloc(65536, AllocFlags::default()).unwrap();
        check(&p);
    }
}

#[test]
fn every_size_through_every_call() {
    for layout in LAYOUTS {
        let p = pool(layout, 65536);
        let objs: Vec<(Handle, usize)> = sizes()
            .into_iter()
            .map(|s| {
                let h = p.malloc(s, AllocFlags::default()).unwrap();
                p.write(h, &pattern(s as u64, s)).unwrap();
                (h, s)
            })
            .collect();
        check(&p);
        let requested: usize = objs.iter().map(|o| o.1).sum();
        assert_eq!(p.info().requested_bytes as usize, requested);
        for &(h, s) in &objs {
            verify_all_ways(&p, h, &pattern(s as u64, s));
        }
        // Writable mappings: read-write keeps the bytes, write-only stores new ones.
        for &(h, s) in objs.iter().step_by(7) {
            let mut m = p.map(h, MapMode::ReadWrite).unwrap();
            let bytes = m.as_mut_slice().unwrap();
            assert_eq!(&bytes[..s], &pattern(s as u64, s)[..], "{layout:?}: read-write mapping of {s} bytes");
            bytes[s - 1] ^= 0xff;
            drop(m);
            let mut want = pattern(s as u64, s);
            want[s - 1] ^= 0xff;
            verify_all_ways(&p, h, &want);
            let mut m = p.map(h, MapMode::WriteOnly).unwrap();
            m.as_mut_slice().unwrap()[..s].copy_from_slice(&pattern(s as u64 + 1, s));
            drop(m);
            verify_all_ways(&p, h, &pattern(s as u64 + 1, s));
            p.write(h, &pattern(s as u64, s)).unwrap();
        }
        // Free a scattered half, compact, and every object left is intact.
        let mut rng = Rng(7);
        let (gone, kept): (Vec<_>, Vec<_>) = objs.into_iter().partition(|_| rng.next_u64() % 2 == 0);
        for (h, _) in gone {
            p.free(h).unwrap();
        }
        let before = p.total_pages();
        p.compact();
        assert!(p.total_pages() < before, "{layout:?}: compaction frees frames");
        check(&p);
        p.make_adjacent();
        p.defragment();
        check(&p);
        for &(h, s) in &kept {
            verify_all_ways(&p, h, &pattern(s as u64, s));
        }
        for (h, _) in kept {
            p.free(h).unwrap();
        }
        assert_eq!(p.total_pages(), 0);
    }
}

/// An object of `frames` frames' worth and 100 bytes, straddling `frames + 1` or
/// `frames + 2` frames (2..=17), in frames that are not adjacent: read, written and
/// mapped through copies, made adjacent, then in place.
#[test]
fn objects_over_frames_that_are_not_adjacent() {
    for layout in LAYOUTS {
        for frames in 1..=15usize {
            // 4 KiB frames, whatever the suite's: the figures below are their chains.
            let cfg =
                Config { max_pages: 1 << 18, layout, max_object_size: 65536, frame_size: 4096, ..Config::default() };
            let p = Pool::with_config("large", &cfg).unwrap();
            // A zspage of one 64 KiB object and a one-frame object past it; freeing
            // the first leaves a run of free frames with a used one after it. In the
            // kernel layout, the 4096-byte class takes one of the run, the lead
            // object's class some more, and the class of `h` what is left of it and
            // more past the wall: apart.
            let first = p.malloc(65536, AllocFlags::default()).unwrap();
            let wall = p.malloc(4096, AllocFlags::default()).unwrap();
            p.free(first).unwrap();
            let small = p.malloc(4096, AllocFlags::default()).unwrap();
            let len = frames * 4096 + 100;
            let lead = p.malloc(60000 - len.min(59000), AllocFlags::default()).unwrap();
            let h = p.malloc(len, AllocFlags::default()).unwrap();
            p.write(h, &pattern(3, len)).unwrap();
            verify_all_ways(&p, h, &pattern(3, len));
            let mut m = p.map(h, MapMode::ReadWrite).unwrap();
            m.as_mut_slice().unwrap()[len - 1] = 0x5a;
            drop(m);
            let mut want = pattern(3, len);
            want[len - 1] = 0x5a;
            verify_all_ways(&p, h, &want);
            check(&p);
            let copied = p.info().read_copied_bytes;
            // (The dense layout places all of them in the wall's zspage, one run.)
            if layout == Layout::Kernel {
                assert!(copied >= 5 * len as u64, "{len} bytes: copied, as its frames are apart");
            }
            p.make_adjacent();
            check(&p);
            let mut local = vec![0u8; len];
            let r = p.read_begin(h, len, &mut local).unwrap();
            assert!(!r.is_copy(), "{layout:?}, {len} bytes: in place once adjacent");
            assert_eq!(&r[..], &want[..]);
            drop(r);
            assert!(!p.map(h, MapMode::ReadOnly).unwrap().is_copy());
            assert_eq!(p.info().read_copied_bytes, copied, "no copies once adjacent");
            for x in [wall, small, lead, h] {
                p.free(x).unwrap();
            }
        }
    }
}

/// Frames of 4 KiB that `len` bytes at `addr` cover: an object mapped in place lies at
/// its address in the arena, whose frames are 4 KiB aligned.
fn frames_covered(addr: usize, len: usize) -> usize {
    (addr + len - 1) / 4096 - addr / 4096 + 1
}

/// The frames an object covers, read from a mapping in place (None if copied).
fn span_in_place(p: &Pool, h: Handle, len: usize) -> Option<usize> {
    let m = p.map(h, MapMode::ReadOnly).unwrap();
    (!m.is_copy()).then(|| frames_covered(m.as_ptr() as usize, len))
}

/// The size that, after 101 bytes at the start of a zspage, straddles `n` frames of
/// 4 KiB: from byte 102 (101 rounded up to the 17-frame chain's grain of 2 bytes) to
/// a byte of frame `n - 1`.
fn straddling(n: usize) -> usize {
    ((n - 1) * 4096 + 1).min(65536)
}

/// A dense pool of objects up to 64 KiB in 4 KiB frames has chains of 17 frames, and
/// an object of every span from 2 to 17 frames is made in one right after an object
/// of 101 bytes, in frames that a segment boundary parts just before the object's
/// last frame (the 17th of the chain for a 64 KiB object): written, read and mapped
/// through copies, its frames migrated (a 17th frame among them) until adjacent, then
/// read and mapped in place, where its address shows the frames it covers; then
/// compacted and defragmented, checked after every step.
#[test]
fn objects_straddle_every_count_of_frames_up_to_17() {
    const BOUNDARY: usize = 1 << 27;
    let cfg = Config {
        max_pages: 1 << 28,
        layout: Layout::Dense,
        max_object_size: 65536,
        frame_size: 4096,
        ..Config::default()
    };
    for n in 2..=17usize {
        let p = Pool::testonly_starting_at("span", &cfg, BOUNDARY - (n - 1)).unwrap();
        assert_eq!(p.class_info(0).unwrap().pages_per_zspage, 17, "limits above 61440 take chains of 17");
        let lead = p.malloc(101, AllocFlags::default()).unwrap();
        let len = straddling(n);
        let h = p.malloc(len, AllocFlags::default()).unwrap();
        p.write(lead, &pattern(1, 101)).unwrap();
        p.write(h, &pattern(n as u64, len)).unwrap();
        check(&p);
        let copied = p.info().read_copied_bytes;
        verify_all_ways(&p, h, &pattern(n as u64, len));
        assert!(p.info().read_copied_bytes >= copied + 2 * len as u64, "{n} frames: copied, as two are apart");
        let mut m = p.map(h, MapMode::ReadWrite).unwrap();
        assert!(m.is_copy());
        m.as_mut_slice().unwrap()[len - 1] ^= 0x5a;
        drop(m);
        let mut want = pattern(n as u64, len);
        want[len - 1] ^= 0x5a;
        verify_all_ways(&p, h, &want);
        let kinds = p.frame_kinds();
        let last = kinds.iter().filter(|k| matches!(k, FrameKind::Zspage { index: 16, .. })).count();
        assert_eq!(last, 1, "the zspage's 17th frame, index 16, in the census");
        check(&p);
        let moved = p.make_adjacent();
        assert!(moved.frames_moved > 0, "{n} frames: the zspage's frames were apart");
        check(&p);
        assert_eq!(span_in_place(&p, h, len), Some(n), "{len} bytes after 101 straddle {n} frames");
        let copied = p.info().read_copied_bytes;
        verify_all_ways(&p, h, &want);
        verify_all_ways(&p, lead, &pattern(1, 101));
        assert_eq!(p.info().read_copied_bytes, copied, "no copies once adjacent");
        p.compact();
        check(&p);
        p.defragment();
        check(&p);
        verify_all_ways(&p, h, &want);
        p.free(lead).unwrap();
        check(&p);
        verify_all_ways(&p, h, &want);
        p.free(h).unwrap();
        assert_eq!(p.total_pages(), 0);
        check(&p);
    }
}

/// Large objects stay intact through compaction under readers on other threads, at
/// limits of 32 KiB and 64 KiB (at 4 KiB frames, dense chains of 9 and 17 frames).
#[test]
fn compaction_moves_large_objects_under_readers() {
    for (layout, limit) in LAYOUTS.into_iter().flat_map(|l| [(l, 32768), (l, 65536)]) {
        let p = pool(layout, limit);
        let mut rng = Rng(11);
        let objs: Vec<(Handle, usize)> = (0..3000)
            .map(|i| {
                // At 64 KiB, one in ten above 61440: sizes that can straddle 17 frames.
                let s = if limit == 65536 && i % 10 == 0 {
                    61441 + (rng.next_u64() % 4096) as usize
                } else {
                    1 + (rng.next_u64() % limit as u64) as usize
                };
                let h = p.malloc(s, AllocFlags::default()).unwrap();
                p.write(h, &pattern(i, s)).unwrap();
                (h, s)
            })
            .collect();
        let (gone, kept): (Vec<_>, Vec<_>) = objs.iter().enumerate().partition(|(i, _)| i % 3 != 0);
        for (_, &(h, _)) in gone {
            p.free(h).unwrap();
        }
        let kept: Vec<(usize, Handle, usize)> = kept.into_iter().map(|(i, &(h, s))| (i, h, s)).collect();
        std::thread::scope(|sc| {
            for t in 0..2 {
                let (p, kept) = (&p, &kept);
                sc.spawn(move || {
                    for round in 0..3 {
                        for &(i, h, s) in kept.iter().skip((t + round) % 2).step_by(2) {
                            let mut out = vec![0u8; s];
                            match p.read(h, &mut out) {
                                Ok(()) => assert_eq!(out, pattern(i as u64, s)),
                                Err(e) => panic!("read: {e:?}"),
                            }
                        }
                    }
                });
            }
            let r = p.compact();
            assert!(r.pages_freed > 0, "{layout:?}: compaction frees frames");
            // Migration under the same readers: the arena's top down, then every
            // zspage's frames adjacent.
            p.defragment();
            p.make_adjacent();
        });
        check(&p);
        for &(i, h, s) in &kept {
            verify_all_ways(&p, h, &pattern(i as u64, s));
        }
        if layout == Layout::Dense && limit == 65536 && common::frame() == 4096 {
            // Every zspage's frames are adjacent now: each object is mapped in place,
            // and covers at most the chain's 17 frames (those above 61440 bytes at
            // least 16; which reach 17 depends on where they landed).
            let most = kept.iter().map(|&(_, h, s)| span_in_place(&p, h, s).expect("in place")).max().unwrap();
            assert!((16..=17).contains(&most), "the most frames an object covers: {most}");
        }
    }
}

/// Requested bytes over frames and metadata, after a fill with real compressed 16 and
/// 32 KiB units (tools/compress_units.py) and after freeing a random half and one
/// compaction: at least 0.97 and 0.95, with every object intact.
#[test]
fn dense_density_on_compressed_units() {
    for (trace, unit) in [("usr-ext4-lz4-16k.txt", 16384), ("usr-ext4-lz4-32k.txt", 32768)] {
        let sizes = common::trace(trace);
        let p = Pool::with_config("density", &Config { max_object_size: unit, ..common::config() }).unwrap();
        let density = |p: &Pool| {
            let i = p.info();
            i.requested_bytes as f64 / i.footprint() as f64
        };
        let objs: Vec<(Handle, usize, usize)> = (0..10_000)
            .map(|i| {
                let s = sizes[i % sizes.len()];
                let h = p.malloc(s, AllocFlags::default()).unwrap();
                p.write(h, &pattern(i as u64, s)).unwrap();
                (h, i, s)
            })
            .collect();
        let fill = density(&p);
        assert!(fill >= 0.97, "{trace}: {fill:.4} after the fill");
        let mut rng = Rng(0x5EED);
        let mut kept = Vec::new();
        for o in objs {
            if rng.next_u64() % 2 == 0 {
                p.free(o.0).unwrap();
            } else {
                kept.push(o);
            }
        }
        p.compact();
        let half = density(&p);
        assert!(half >= 0.95, "{trace}: {half:.4} after freeing half and compacting");
        check(&p);
        let mut out = vec![0u8; unit];
        for (h, i, s) in kept {
            p.read(h, &mut out[..s]).unwrap();
            assert_eq!(out[..s], pattern(i as u64, s)[..], "{trace}: object {i}");
        }
        eprintln!("{trace}: {fill:.4} after the fill, {half:.4} after half and compaction");
    }
}
