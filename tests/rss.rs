//! Frames go back to the operating system: the resident set follows the pool.

mod common;
use zsmalloc::{AllocFlags, Pool};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[test]
fn freeing_everything_returns_the_memory() {
    const TOTAL: usize = 256 << 20;
    // At the suites' frame size (`ZS_TEST_FRAME_SIZE`): every frame size gives its
    // memory back.
    let p = Pool::with_config("rss", &common::config()).unwrap();
    let sizes = common::trace("sqlite-heap-lz4.txt");
    let start = resident_bytes();
    let mut hs = Vec::new();
    let mut bytes = 0;
    let mut i = 0;
    while bytes < TOTAL {
        let s = sizes[i % sizes.len()];
        let h = p.malloc(s, AllocFlags::default()).unwrap();
        p.write(h, &common::pattern(i as u64, s)).unwrap();
        hs.push(h);
        bytes += s;
        i += 1;
    }
    let full = resident_bytes();
    assert!(full - start >= TOTAL as u64, "the objects are resident: {} MiB", (full - start) >> 20);
    for h in hs.drain(..) {
        p.free(h).unwrap();
    }
    let after = resident_bytes();
    let returned = full.saturating_sub(after);
    assert!(
        returned as f64 >= 0.9 * TOTAL as f64,
        "only {} of {} MiB came back (resident {} -> {} -> {} MiB)",
        returned >> 20,
        TOTAL >> 20,
        start >> 20,
        full >> 20,
        after >> 20
    );
    assert_eq!(p.total_pages(), 0);
    // The arena's segments, up to 128 MiB each, go too: the pool keeps no address
    // space for frames, and grows again from nothing.
    let mapped = p.census().arena_mapped_bytes;
    assert!(mapped >= TOTAL, "the arena's segments cover the pool: {} MiB", mapped >> 20);
    p.defragment();
    p.release_address_space();
    assert_eq!(p.census().arena_mapped_bytes, 0, "every segment of the emptied arena is unmapped");
    let h = p.malloc(100, AllocFlags::default()).unwrap();
    p.write(h, &common::pattern(7, 100)).unwrap();
    let mut out = [0u8; 100];
    p.read(h, &mut out).unwrap();
    assert_eq!(out[..], common::pattern(7, 100)[..]);
    p.free(h).unwrap();
}
