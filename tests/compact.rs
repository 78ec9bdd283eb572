//! Compaction: effectiveness against the class table's ideal, pinned objects skipped,
//! and safety while other threads allocate, free, read, write and map.

mod common;
use common::{check, pattern, pool, trace, Rng};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zsmalloc::{AllocFlags, Handle, Layout, MapMode, Pool};

/// Frames the layout needs for the live objects, perfectly packed: for the kernel
/// layout, whole zspages of each class; for the dense one (whose objects are all in
/// this thread's lane), their sizes rounded up to 8 bytes, in whole zspages.
fn ideal_frames(p: &Pool, sizes: impl Iterator<Item = usize>) -> u64 {
    let classes = p.class_indices().map(|i| p.class_info(i).unwrap());
    if p.class_table().layout() == Layout::Dense {
        let chain = p.class_table().chain() as u64;
        let bytes: u64 = sizes.map(|s| s.next_multiple_of(8) as u64).sum();
        return bytes.div_ceil(chain * 4096) * chain;
    }
    classes.map(|c| c.objs_inuse.div_ceil(c.objs_per_zspage as u64) * c.pages_per_zspage as u64).sum()
}

#[test]
fn one_compaction_reaches_the_ideal_after_freeing_half() {
    for name in ["node-heap-lz4.txt", "sqlite-heap-lz4.txt"] {
        let sizes = trace(name);
        for layout in [Layout::Dense, Layout::Kernel] {
            let p = pool(layout);
            let mut live: Vec<(Handle, u64, usize)> = sizes
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    let h = p.malloc(s, AllocFlags::default()).unwrap();
                    p.write(h, &pattern(i as u64, s)).unwrap();
                    (h, i as u64, s)
                })
                .collect();
            let mut rng = Rng(0x5EED);
            let mut kept = Vec::new();
            for (h, seed, s) in live.drain(..) {
                if rng.next_u64() % 2 == 0 {
                    p.free(h).unwrap();
                } else {
                    kept.push((h, seed, s));
                }
            }
            let before = p.total_pages() as u64;
            let ideal = ideal_frames(&p, kept.iter().map(|k| k.2));
            let freed = p.compact();
            let after = p.total_pages() as u64;
            check(&p);
            assert_eq!(before - after, freed.pages_freed as u64);
            assert!(
                after as f64 <= ideal as f64 * 1.02,
                "{name} {layout:?}: {after} frames after compaction, ideal {ideal} (before {before})"
            );
            let info = p.info();
            assert_eq!(info.pages_compacted, freed.pages_freed as u64);
            assert_eq!(info.objs_moved, freed.objs_moved as u64);
            for (h, seed, s) in &kept {
                let mut out = vec![0u8; *s];
                p.read(*h, &mut out).unwrap();
                assert_eq!(out, pattern(*seed, *s), "object moved intact");
            }
        }
    }
}

#[test]
fn pinned_objects_are_skipped_and_counted() {
    let p = pool(Layout::Dense);
    let hs: Vec<_> = (0..2000).map(|i| p.malloc(200, AllocFlags::default()).map(|h| (h, i)).unwrap()).collect();
    for &(h, i) in &hs {
        p.write(h, &pattern(i, 200)).unwrap();
    }
    // Free all but every 10th object, and map a few of the survivors.
    let kept: Vec<_> = hs.iter().filter(|(_, i)| i % 10 == 0).copied().collect();
    for &(h, i) in &hs {
        if i % 10 != 0 {
            p.free(h).unwrap();
        }
    }
    let maps: Vec<_> = kept.iter().take(5).map(|&(h, _)| p.map(h, MapMode::ReadOnly).unwrap()).collect();
    let addrs: Vec<_> = maps.iter().map(|m| m.as_ptr()).collect();
    let r = p.compact();
    assert!(r.pages_freed > 0);
    assert!(r.skipped_pinned >= 1, "a mapped object in a source zspage is skipped");
    assert_eq!(p.info().compact_skipped_mapped, r.skipped_pinned as u64);
    for (m, a) in maps.iter().zip(&addrs) {
        assert_eq!(m.as_ptr(), *a, "a mapped object does not move");
    }
    drop(maps);
    check(&p);
    for &(h, i) in &kept {
        let mut out = vec![0u8; 200];
        p.read(h, &mut out).unwrap();
        assert_eq!(out, pattern(i, 200));
    }
    // Unmapped now: a second compaction can finish the job.
    p.compact();
    check(&p);
    assert!(p.total_pages() as u64 <= ideal_frames(&p, kept.iter().map(|_| 200)) + 1);
}

#[test]
fn a_second_concurrent_compaction_returns_at_once() {
    let p = Arc::new(pool(Layout::Dense));
    // Nothing to do is still a valid run; the contract is that they never overlap.
    let hs: Vec<_> = (0..20000).map(|_| p.malloc(100, AllocFlags::default()).unwrap()).collect();
    for h in hs.iter().step_by(2) {
        p.free(*h).unwrap();
    }
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.compact().pages_freed)
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total > 0);
    check(&p);
}

/// Three workers doing everything while a fourth compacts without pause and a fifth
/// migrates frames (defragmenting the arena, joining zspages' frames) and walks the
/// side table.
#[test]
fn stress_compaction_beside_every_operation() {
    for layout in [Layout::Dense, Layout::Kernel] {
        let p = Arc::new(pool(layout));
        let stop = Arc::new(AtomicBool::new(false));
        // What the migrator and the compactor have moved so far: the workers go on past
        // their 1.5 s (up to a minute) until both have moved something, so that a
        // loaded machine, which may not run them at first, cannot fail the test.
        let (migrated_yet, compacted_yet) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let migrator = {
            let (p, stop, yet) = (p.clone(), stop.clone(), migrated_yet.clone());
            std::thread::spawn(move || {
                let mut moved = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    moved += p.defragment().frames_moved + p.make_adjacent().frames_moved;
                    yet.store(moved, Ordering::Relaxed);
                    let c = p.census();
                    assert_eq!(c.top, c.free + c.zspage + c.huge + c.transit);
                    // Migration and compaction exclude each other; leave the compactor
                    // room to run.
                    std::thread::sleep(Duration::from_millis(2));
                }
                moved
            })
        };
        let compactor = {
            let (p, stop, yet) = (p.clone(), stop.clone(), compacted_yet.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += p.compact().objs_moved;
                    yet.store(n, Ordering::Relaxed);
                }
                n
            })
        };
        let workers: Vec<_> = (0..3u64)
            .map(|t| {
                let (p, migrated_yet, compacted_yet) = (p.clone(), migrated_yet.clone(), compacted_yet.clone());
                std::thread::spawn(move || {
                    let mut rng = Rng(0xC0FFEE + t);
                    let mut live: Vec<(Handle, u64, usize)> = Vec::new();
                    let start = Instant::now();
                    let (deadline, cap) = (start + Duration::from_millis(1500), start + Duration::from_secs(60));
                    let mut seed = t << 40;
                    let busy = || {
                        let now = Instant::now();
                        now < deadline
                            || (now < cap
                                && (migrated_yet.load(Ordering::Relaxed) == 0
                                    || compacted_yet.load(Ordering::Relaxed) == 0))
                    };
                    while busy() {
                        match rng.next_u64() % 6 {
                            0 | 1 => {
                                let s = 1 + (rng.next_u64() % 4096) as usize;
                                let h = p.malloc(s, AllocFlags::default()).unwrap();
                                seed += 1;
                                p.write(h, &pattern(seed, s)).unwrap();
                                live.push((h, seed, s));
                            }
                            2 if !live.is_empty() => {
                                let (h, sd, s) = live.swap_remove((rng.next_u64() % live.len() as u64) as usize);
                                let mut out = vec![0u8; s];
                                p.read(h, &mut out).unwrap();
                                assert_eq!(out, pattern(sd, s));
                                p.free(h).unwrap();
                            }
                            3 if !live.is_empty() => {
                                let (h, sd, s) = live[(rng.next_u64() % live.len() as u64) as usize];
                                let m = p.map(h, MapMode::ReadOnly).unwrap();
                                assert_eq!(&m[..s], &pattern(sd, s)[..]);
                            }
                            4 if !live.is_empty() => {
                                let i = (rng.next_u64() % live.len() as u64) as usize;
                                let (h, _, s) = live[i];
                                seed += 1;
                                let mut m = p.map(h, MapMode::WriteOnly).unwrap();
                                m.as_mut_slice().unwrap()[..s].copy_from_slice(&pattern(seed, s));
                                live[i].1 = seed;
                            }
                            _ if !live.is_empty() => {
                                let (h, sd, s) = live[(rng.next_u64() % live.len() as u64) as usize];
                                let mut local = vec![0u8; s];
                                let r = p.read_begin(h, s, &mut local).unwrap();
                                assert_eq!(&*r, &pattern(sd, s)[..]);
                            }
                            _ => {}
                        }
                        // Free in bursts so that compaction has sparse zspages to work on.
                        if live.len() > 3000 {
                            for _ in 0..1500 {
                                let (h, _, _) = live.swap_remove((rng.next_u64() % live.len() as u64) as usize);
                                p.free(h).unwrap();
                            }
                        }
                    }
                    live
                })
            })
            .collect();
        let lives: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        let moved = compactor.join().unwrap();
        let migrated = migrator.join().unwrap();
        check(&p);
        assert!(migrated > 0, "{layout:?}: the migrator really moved frames under load");
        let mut n = 0;
        for (h, sd, s) in lives.iter().flatten() {
            let mut out = vec![0u8; *s];
            p.read(*h, &mut out).unwrap();
            assert_eq!(out, pattern(*sd, *s), "no object lost or corrupted");
            n += 1;
        }
        assert_eq!(p.info().live_objects, n);
        assert!(moved > 0, "{layout:?}: the compactor really moved objects under load");
    }
}
