//! Automatic compaction: off by default; when on, a background thread brings a
//! sparse pool back to its ideal size without being asked.

mod common;
use common::{check, pattern};
use std::time::{Duration, Instant};
use zsmalloc::{AllocFlags, AutoCompact, Config, Pool};

#[test]
fn off_by_default() {
    assert!(!Pool::new("x").unwrap().auto_compacting());
}

#[test]
fn compacts_a_sparse_pool_in_the_background() {
    let cfg = Config {
        max_pages: 1 << 16,
        auto_compact: AutoCompact { threshold_pages: 4, interval_ms: 5, max_pages_per_sec: 0 },
        ..common::config()
    };
    let p = Pool::with_config("auto", &cfg).unwrap();
    assert!(p.auto_compacting());
    let hs: Vec<_> = (0..30_000u64)
        .map(|i| {
            let h = p.malloc(300, AllocFlags::default()).unwrap();
            p.write(h, &pattern(i, 300)).unwrap();
            (h, i)
        })
        .collect();
    let full = p.total_pages();
    for (h, _) in hs.iter().filter(|(_, i)| i % 2 == 0) {
        p.free(*h).unwrap();
    }
    // Liveness, not speed: wait (generously) until the compactor has done its work.
    // It compacts a class while that could free a whole zspage, so it may stop with
    // up to one zspage of free space in the class (16 frames at most), more or less
    // of it depending on how its passes fell among the frees.
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.info().pages_compacted == 0 || p.total_pages() > full / 2 + 17 {
        assert!(Instant::now() < deadline, "no automatic compaction: {} of {full} frames", p.total_pages());
        std::thread::sleep(Duration::from_millis(5));
    }
    check(&p);
    for (h, i) in hs.iter().filter(|(_, i)| i % 2 == 1) {
        let mut out = vec![0u8; 300];
        p.read(*h, &mut out).unwrap();
        assert_eq!(out, pattern(*i, 300));
    }
    drop(p); // stops and joins the thread
}
