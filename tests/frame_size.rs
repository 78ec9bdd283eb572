//! The frame size a pool is created with: the rules it is checked against, and what
//! follows it (the object limit, the frame count, the class table, the bytes).

mod common;
use zsmalloc::{AllocFlags, Config, Error, Layout, Pool};

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn with_frame(frame_size: usize, layout: Layout) -> Result<Pool, Error> {
    Pool::with_config("frame", &Config { frame_size, layout, max_pages: 1 << 12, ..common::config() })
}

#[test]
fn frame_sizes_outside_the_rules_are_refused() {
    for layout in [Layout::Dense, Layout::Kernel] {
        // Not a power of two, below 4096, above 65536, below the system's page.
        for bad in [2048, 12288, 131072, 3000, 4097, 1, usize::MAX, page() / 2] {
            assert!(
                matches!(with_frame(bad, layout), Err(Error::Invalid(_))),
                "{layout:?}: frame size {bad} is refused"
            );
        }
        for good in [4096, 8192, 16384, 32768, 65536].into_iter().filter(|f| f % page() == 0) {
            let p = with_frame(good, layout).unwrap();
            let info = p.info();
            assert_eq!(info.frame_size, good as u64);
            assert_eq!(info.max_object_size, good as u64, "{layout:?}: the default limit is the frame");
        }
        let p = with_frame(0, layout).unwrap();
        assert_eq!(p.info().frame_size, page() as u64, "0 means the system's page");
    }
}

#[test]
fn objects_up_to_the_frame_and_the_limit_above_it() {
    for frame in [4096, 16384, 65536] {
        for layout in [Layout::Dense, Layout::Kernel] {
            let p = with_frame(frame, layout).unwrap();
            assert!(matches!(p.malloc(frame + 1, AllocFlags::default()), Err(Error::TooLarge)));
            let mut hs = Vec::new();
            for (i, s) in [1, 100, 3000, 4096, 5000, frame / 2 + 7, frame - 1, frame].into_iter().enumerate() {
                if s > frame {
                    continue;
                }
                let h = p.malloc(s, AllocFlags::default()).unwrap();
                p.write(h, &common::pattern(i as u64, s)).unwrap();
                hs.push((h, i, s));
            }
            common::check(&p);
            for &(h, i, s) in &hs {
                let mut out = vec![0u8; s];
                p.read(h, &mut out).unwrap();
                assert_eq!(out, common::pattern(i as u64, s), "{layout:?}, frame {frame}: {s} bytes");
            }
            // Frames of the pool's size: the bytes the pool holds are its frames.
            let info = p.info();
            assert_eq!(info.total_pages as usize, p.total_pages());
            assert!(info.total_pages as usize * frame >= hs.iter().map(|h| h.2).sum::<usize>());
            for (h, _, _) in hs {
                p.free(h).unwrap();
            }
            assert_eq!(p.total_pages(), 0);
            // A limit above the frame, up to 64 KiB at every frame size.
            let cfg =
                Config { frame_size: frame, layout, max_object_size: 65536, max_pages: 1 << 12, ..common::config() };
            let p = Pool::with_config("large", &cfg).unwrap();
            let h = p.malloc(65536, AllocFlags::default()).unwrap();
            p.write(h, &common::pattern(9, 65536)).unwrap();
            let mut out = vec![0u8; 65536];
            p.read(h, &mut out).unwrap();
            assert_eq!(out, common::pattern(9, 65536));
            common::check(&p);
            p.free(h).unwrap();
        }
    }
}

#[test]
fn the_kernel_table_follows_the_frame() {
    for (frame, classes) in [(4096, 255), (16384, 257), (65536, 257)] {
        let p = with_frame(frame, Layout::Kernel).unwrap();
        let t = p.class_table();
        assert_eq!(t.nr_full_classes(), classes, "frame {frame}");
        assert_eq!(t.classes()[t.class_for(frame)].size, frame, "frame {frame}: the largest class is a frame");
        // Spacing frame >> 8 from 32, the kernel's ZS_SIZE_CLASS_DELTA.
        let second = t.classes().iter().map(|c| c.size).find(|&s| s > 32).unwrap();
        assert_eq!((second - 32) % (frame >> 8), 0, "frame {frame}: classes a 256th of the frame apart");
    }
}
