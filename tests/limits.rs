//! A pool takes address space as it grows: pools under an address-space limit
//! (RLIMIT_AS), many live pools at once, and a pool of the most frames it may have
//! (1 TiB: 2^28 frames of 4 KiB, 2^26 of 16 KiB, 2^24 of 64 KiB) used at its top.
//!
//! Every pool has the suites' frame size (`ZS_TEST_FRAME_SIZE`, `common::config()`;
//! `make test-frames` runs these tests at 16 and 64 KiB too), and the figures are in
//! the pool's terms: frames, the 1 TiB a pool addresses, or bytes scaled from those
//! of 4 KiB frames so that a test covers the same ground at every frame size.

mod common;
use common::{check, config, frame, pattern};
use std::process::Command;
use zsmalloc::{AllocFlags, Config, Error, FrameKind, Handle, Layout, Pool};

/// Bytes a pool addresses at every frame size: a slot's location is a byte offset of
/// 40 bits.
const POOL_BYTES: usize = 1 << 40;

/// The most frames a pool may have at the suites' frame size.
fn max_frames() -> usize {
    POOL_BYTES / frame()
}

/// `n` frames of 4 KiB as frames of the suites' size (at least one): the same bytes.
fn frames_of_4k(n: usize) -> usize {
    (n * 4096 / frame()).max(1)
}

/// Bytes of the system's page: the unit of /proc/self/statm, whatever a pool's frame.
fn system_page() -> u64 {
    // SAFETY: sysconf reads nothing of ours.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// Bytes of the process's virtual size.
fn virtual_size() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().next().unwrap().parse::<u64>().unwrap() * system_page()
}

/// Bytes of the process's resident set.
fn resident_size() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * system_page()
}

/// Lines of /proc/self/maps: the process's mappings.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

fn verify(p: &Pool, objs: &[(Handle, u64, usize)]) {
    let mut out = vec![0u8; p.max_object_size()];
    for &(h, seed, s) in objs {
        p.read(h, &mut out[..s]).unwrap();
        assert!(out[..s] == pattern(seed, s)[..], "object {seed} intact");
    }
}

/// Runs the ignored test `name` of this binary in a child process with `env` set, and
/// checks that it ran and passed.
fn run_child(name: &str, env: &[(&str, String)]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "--nocapture", "--test-threads=1", name])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("1 passed"), "child {name} failed:\n{text}");
    text
}

/// What the child under RLIMIT_AS does: see `pools_work_under_an_address_space_limit`.
#[test]
#[ignore = "run in a child process by pools_work_under_an_address_space_limit"]
fn child_under_rlimit_as() {
    let limit: u64 = std::env::var("ZS_TEST_RLIMIT_AS").expect("run by the parent test").parse().unwrap();
    let pools_n: usize = std::env::var("ZS_TEST_POOLS").unwrap().parse().unwrap();
    // Everything the test itself needs is taken before the limit: a handle and a seed
    // per object (its pool and size follow from the seed), objects of 1,500 bytes on
    // average.
    let mut objs: Vec<(Handle, u64)> = Vec::with_capacity(limit as usize / 1024);
    let size = |seed: u64| 40 + (seed as usize * 7919) % 3000;
    let frame = frame();
    let mut out = vec![0u8; frame];
    let left = limit - virtual_size();
    let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    let pools: Vec<Pool> = (0..pools_n)
        .map(|i| {
            let layout = if i % 2 == 0 { Layout::Dense } else { Layout::Kernel };
            Pool::with_config("rlimit", &Config { layout, ..config() }).expect("a pool under RLIMIT_AS")
        })
        .collect();
    // Fill the pools in turn until each refuses, with objects of many sizes.
    let mut full = vec![false; pools_n];
    let mut i = 0u64;
    let mut failures = 0;
    while full.iter().any(|f| !f) {
        i += 1;
        let k = i as usize % pools_n;
        if full[k] {
            continue;
        }
        let s = size(i);
        match pools[k].malloc(s, AllocFlags::default()) {
            Ok(h) => {
                pools[k].write(h, &pattern(i, s)).unwrap();
                objs.push((h, i));
            }
            Err(Error::NoMemory) => {
                failures += 1;
                // A refusal may be a class's new zspage; smaller objects may still fit
                // in other classes' zspages, so a pool is full after a few refusals.
                if failures % 8 == 0 {
                    full[k] = true;
                }
            }
            Err(e) => panic!("malloc under RLIMIT_AS: {e:?}"),
        }
        assert!(objs.len() < objs.capacity(), "more objects than planned");
    }
    let held: usize = pools.iter().map(|p| p.total_pages()).sum::<usize>() * frame;
    println!(
        "limit {} MiB, {} MiB left by the test: {} pools hold {} MiB in {} objects",
        limit >> 20,
        left >> 20,
        pools_n,
        held >> 20,
        objs.len()
    );
    // Nothing lost, every pool consistent.
    for &(h, seed) in &objs {
        let (k, s) = (seed as usize % pools_n, size(seed));
        pools[k].read(h, &mut out[..s]).unwrap();
        assert!(out[..s] == pattern(seed, s)[..], "object {seed} intact");
    }
    for p in &pools {
        check(p);
    }
    // The pools hold most of what the limit leaves: arenas grow in doubling
    // segments, and a segment the OS refuses is reserved in part.
    assert!(held as u64 >= left / 2, "only {} MiB held of {} MiB left", held >> 20, left >> 20);
    // Emptied, a pool takes objects again.
    for (h, seed) in objs.drain(..) {
        pools[seed as usize % pools_n].free(h).unwrap();
    }
    for p in &pools {
        assert_eq!(p.total_pages(), 0);
        let h = p.malloc(1000, AllocFlags::default()).unwrap();
        p.free(h).unwrap();
        check(p);
    }
}

/// Pools are created and filled under RLIMIT_AS of 2 GiB and 512 MiB, in a child
/// process (which inherits the suites' frame size): creation succeeds, malloc fails
/// with ENOMEM only when the address space is spent, nothing written is lost and the
/// checker finds nothing.
#[test]
fn pools_work_under_an_address_space_limit() {
    for (limit, pools) in [(2u64 << 30, 1), (512 << 20, 4)] {
        let text = run_child(
            "child_under_rlimit_as",
            &[
                ("ZS_TEST_RLIMIT_AS", limit.to_string()),
                ("ZS_TEST_POOLS", pools.to_string()),
                ("ZS_TEST_FRAME_SIZE", common::frame_size().to_string()),
            ],
        );
        let line = text.lines().find(|l| l.contains("pools hold"));
        println!("{}", line.unwrap_or_else(|| panic!("no figures from the child:\n{text}")));
    }
}

/// What the child with no address space left does: see
/// `the_checker_with_no_address_space_left`.
#[test]
#[ignore = "run in a child process by the_checker_with_no_address_space_left"]
fn child_checker_without_address_space() {
    for layout in [Layout::Kernel, Layout::Dense] {
        // Small objects, so that the checker's sets of slots need far more than the
        // heap keeps spare; the test's own vector is taken before the limit.
        let mut objs: Vec<(Handle, u64, usize)> = Vec::with_capacity(1 << 20);
        let limit = virtual_size() + (24 << 20);
        let rl = libc::rlimit { rlim_cur: limit, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: setrlimit reads the struct it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
        let p = Pool::with_config("no-space", &Config { layout, ..config() }).unwrap();
        let mut i = 0u64;
        loop {
            i += 1;
            let s = 16 + (i as usize * 7919) % 48;
            match p.malloc(s, AllocFlags::default()) {
                Ok(h) => {
                    p.write(h, &pattern(i, s)).unwrap();
                    objs.push((h, i, s));
                }
                Err(Error::NoMemory) => break,
                Err(e) => panic!("malloc: {e:?}"),
            }
            assert!(objs.len() < objs.capacity(), "more objects than planned");
        }
        // Whatever address space is left goes to mappings of no access.
        let mut hogs = Vec::with_capacity(256);
        let mut len = 1usize << 30;
        while len >= 4096 {
            // SAFETY: a new anonymous mapping; nothing of ours is at its address.
            let m = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            };
            if m == libc::MAP_FAILED || hogs.len() == hogs.capacity() {
                len /= 2;
            } else {
                hogs.push((m, len));
            }
        }
        // And whatever the heap has left (the test runs on a thread whose malloc arena
        // was reserved before the limit), in blocks chained through their first word.
        let mut chain: *mut *mut libc::c_void = std::ptr::null_mut();
        let mut len = 1usize << 20;
        while len >= 16 {
            // SAFETY: malloc of a nonzero size.
            let b = unsafe { libc::malloc(len) } as *mut *mut libc::c_void;
            if b.is_null() {
                len /= 2;
            } else {
                // SAFETY: a fresh block of at least 16 bytes.
                unsafe { *b = chain as *mut libc::c_void };
                chain = b;
            }
        }
        // The checker cannot have its working memory: it says so, and nothing else.
        let r = p.check();
        while !chain.is_null() {
            // SAFETY: a block of the chain above; its first word names the next.
            let next = unsafe { *chain } as *mut *mut libc::c_void;
            // SAFETY: allocated by malloc above, freed once.
            unsafe { libc::free(chain as *mut libc::c_void) };
            chain = next;
        }
        assert_eq!(r, Err(zsmalloc::CheckError::NoMemory));
        println!("{layout:?}: {} objects, the checker says {r:?}", objs.len());
        for (m, len) in hogs {
            // SAFETY: the mapping made above, unused.
            unsafe { libc::munmap(m, len) };
        }
        check(&p);
        verify(&p, &objs);
        for (h, _, _) in objs.drain(..) {
            p.free(h).unwrap();
        }
        drop(p);
        let rl = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    }
}

/// With the address space spent by a full pool and other mappings, `zs_pool_check`
/// cannot have the heap memory it walks the pool with: it fails with ENOMEM (the Rust
/// checker's `CheckError::NoMemory`) instead of aborting, and passes once memory is back.
#[test]
fn the_checker_with_no_address_space_left() {
    run_child("child_checker_without_address_space", &[("ZS_TEST_FRAME_SIZE", common::frame_size().to_string())]);
}

/// How many pools `many_live_pools` makes: 20,000 by default.
fn many_pools() -> usize {
    std::env::var("ZS_TEST_MANY_POOLS").map(|v| v.parse().unwrap()).unwrap_or(20_000)
}

/// The process's mappings: start, end and permissions, in address order.
fn mapping_list() -> Vec<(usize, usize, String)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let (a, b) = f.next().unwrap().split_once('-').unwrap();
            let hex = |x: &str| usize::from_str_radix(x, 16).unwrap();
            (hex(a), hex(b), f.next().unwrap().to_string())
        })
        .collect()
}

/// Thousands of live pools with a few objects each: each costs at most two mappings
/// (under `vm.max_map_count`) and they all work at once.
///
/// A pool of a few objects commits one step (2 MiB) of its arena's first segment of
/// 512 frames. At 4 KiB frames that is the whole segment: one mapping, which the
/// kernel merges with its neighbours' (0.08 mappings a pool measured, the process's
/// own included). At 16 and 64 KiB frames the segment is 8 and 32 MiB, and its rest,
/// reserved without access, is a second mapping that nothing merges: two a pool,
/// counted here as the mappings that hold a pool's objects and the reserved rest after
/// them, besides the process's total.
#[test]
fn many_live_pools() {
    let n = many_pools();
    let (before, rss) = (mappings(), resident_size());
    let mut pools = Vec::with_capacity(n);
    for i in 0..n {
        let layout = if i % 2 == 0 { Layout::Dense } else { Layout::Kernel };
        let p = Pool::with_config("many", &Config { layout, ..config() }).unwrap_or_else(|e| panic!("pool {i}: {e:?}"));
        let objs: Vec<(Handle, u64, usize)> = (0..3)
            .map(|j| {
                let (seed, s) = ((i * 3 + j) as u64, 50 + 700 * j);
                let h = p.malloc(s, AllocFlags::default()).unwrap();
                p.write(h, &pattern(seed, s)).unwrap();
                (h, seed, s)
            })
            .collect();
        pools.push((p, objs));
    }
    let total = mappings();
    let per_pool = (total as f64 - before as f64) / n as f64;
    let rss = (resident_size() - rss) / n as u64;
    // The mappings holding the pools' objects, and the reserved rest of each.
    let list = mapping_list();
    let mut held = std::collections::BTreeSet::new();
    for (p, objs) in &pools {
        for &(h, _, _) in objs {
            let at = p.map(h, zsmalloc::MapMode::ReadOnly).unwrap().as_ptr() as usize;
            let k = list.partition_point(|m| m.1 <= at);
            assert!(list[k].0 <= at && list[k].2.starts_with("rw"), "object at {at:#x} in a writable mapping");
            held.insert(k);
            if list.get(k + 1).is_some_and(|m| m.0 == list[k].1 && m.2.starts_with("---")) {
                held.insert(k + 1);
            }
        }
    }
    let own = held.len() as f64 / n as f64;
    println!(
        "{n} pools of 3 objects ({} KiB frames): {per_pool:.2} mappings each in all, {own:.2} of their arenas, \
         {} KiB resident each",
        frame() >> 10,
        rss >> 10
    );
    assert!(own <= 2.0, "{own} mappings of its arena per small pool");
    if frame() == 4096 {
        assert!(per_pool <= 2.0, "{per_pool} mappings per small pool");
    }
    let max_map_count: usize =
        std::fs::read_to_string("/proc/sys/vm/max_map_count").map_or(65_530, |s| s.trim().parse().unwrap());
    assert!(total < max_map_count, "{total} mappings for {n} pools, vm.max_map_count is {max_map_count}");
    for (p, objs) in &pools {
        verify(p, objs);
    }
    check(&pools[n / 2].0);
}

/// An empty pool takes no mapping and little memory.
#[test]
fn an_empty_pool_costs_no_mapping() {
    const N: usize = 2000;
    let (before, rss) = (mappings(), resident_size());
    let pools: Vec<Pool> = (0..N).map(|_| Pool::with_config("empty", &config()).unwrap()).collect();
    let per_pool = (mappings() as f64 - before as f64) / N as f64;
    let rss = (resident_size() - rss) / N as u64;
    println!("{N} empty pools: {per_pool:.3} mappings, {} KiB resident each", rss >> 10);
    assert!(per_pool < 0.05, "{per_pool} mappings per empty pool");
    assert!(pools.iter().all(|p| p.total_pages() == 0 && p.census().arena_mapped_bytes == 0));
}

/// A pool of the most frames it may have (1 TiB: 2^28 frames of 4 KiB, 2^26 of
/// 16 KiB, 2^24 of 64 KiB) is accepted, one frame more is refused, and the highest
/// frames are used: objects whose locations need the slot's high bits are written,
/// read, compacted, migrated, counted by the census and freed, across the segment
/// boundary below them. The frames left above the first are 12 MiB (kernel layout,
/// which fills them) and 4 MiB below the boundary (dense), at every frame size; the
/// objects are of up to 4 KiB and, one in 64, of nearly a frame.
#[test]
fn a_pool_of_the_most_frames_used_at_its_top() {
    let max = max_frames();
    assert_eq!(max << frame().trailing_zeros(), POOL_BYTES);
    let too_big = Config { max_pages: max + 1, ..config() };
    assert!(matches!(Pool::with_config("big", &too_big), Err(Error::Invalid(_))));
    for (layout, first) in [(Layout::Kernel, max - frames_of_4k(3000)), (Layout::Dense, max / 2 - frames_of_4k(1000))] {
        let cfg = Config { max_pages: max, layout, ..config() };
        assert!(matches!(Pool::testonly_starting_at("big", &cfg, max + 1), Err(Error::Invalid(_))));
        let p = Pool::testonly_starting_at("big", &cfg, first).unwrap();
        assert_eq!(p.info().frame_size as usize, frame());
        let mut objs: Vec<(Handle, u64, usize)> = Vec::new();
        for i in 0..20_000u64 {
            let s = if i % 64 == 63 { p.max_object_size() - 100 } else { 20 + (i as usize * 131) % 4000 };
            let h = match p.malloc(s, AllocFlags::default()) {
                Ok(h) => h,
                Err(Error::NoMemory) => break,
                Err(e) => panic!("{e:?}"),
            };
            p.write(h, &pattern(i, s)).unwrap();
            objs.push((h, i, s));
        }
        verify(&p, &objs);
        if layout == Layout::Kernel {
            // Filled until a zspage (at most 16 frames) no longer fits.
            let top = first + p.census().top;
            assert!(top > max - 16, "the fill reached frame {top} of {max}");
        }
        let c = p.census();
        assert_eq!(c.top, c.free + c.zspage + c.huge, "frames from the first to the top");
        let kinds = p.frame_kinds();
        assert!(kinds.iter().all(|k| *k != FrameKind::Transit));
        check(&p);
        // Frees that empty zspages everywhere, then every way frames move.
        for (j, (h, _, _)) in objs.iter().enumerate() {
            if j % 3 != 0 {
                p.free(*h).unwrap();
            }
        }
        objs = objs.into_iter().enumerate().filter(|(j, _)| j % 3 == 0).map(|(_, o)| o).collect();
        p.compact();
        verify(&p, &objs);
        p.defragment();
        p.make_adjacent();
        verify(&p, &objs);
        check(&p);
        p.release_address_space();
        verify(&p, &objs);
        for (h, _, _) in objs {
            p.free(h).unwrap();
        }
        assert_eq!(p.total_pages(), 0);
        check(&p);
    }
}

/// Objects larger than 4 KiB (than a frame, below 64 KiB frames) in zspages whose
/// frames run across a segment boundary: frames numbered one after the other there
/// are not adjacent in memory, so an object across two frames is read through its
/// chain, and every byte of every object stays its own, through frees that leave
/// frames below the boundary for later zspages, compaction and migration. The pool
/// starts 2.8 MiB of frames below the boundary (700 frames of 4 KiB) at every frame
/// size, and the objects fill about 27 MiB.
#[test]
fn large_objects_across_a_segment_boundary() {
    let max = max_frames();
    let boundary = max / 2;
    let below = frames_of_4k(700);
    for layout in [Layout::Kernel, Layout::Dense] {
        let cfg = Config { max_pages: max, layout, max_object_size: 65536, ..config() };
        let p = Pool::testonly_starting_at("large", &cfg, boundary - below).unwrap();
        let size = |seed: u64| 4097 + (seed as usize * 7919) % 60_000;
        let mut objs: Vec<(Handle, u64, usize)> = Vec::new();
        let mut out = vec![0u8; 65536];
        let verify = |objs: &[(Handle, u64, usize)], out: &mut [u8]| {
            for &(h, seed, s) in objs {
                p.read(h, &mut out[..s]).unwrap();
                assert!(out[..s] == pattern(seed, s)[..], "object {seed} of {s} bytes intact");
            }
        };
        let mut seed = 0u64;
        // Rounds of fills and frees: the frees leave frames on both sides of the
        // boundary that later zspages take in number order.
        for round in 0..4 {
            for _ in 0..200 {
                let s = size(seed);
                let h = p.malloc(s, AllocFlags::default()).unwrap();
                p.write(h, &pattern(seed, s)).unwrap();
                objs.push((h, seed, s));
                seed += 1;
            }
            verify(&objs, &mut out);
            let keep: Vec<_> = objs.iter().enumerate().filter(|(j, _)| (j + round) % 3 != 0).map(|(_, o)| *o).collect();
            for (j, (h, _, _)) in objs.iter().enumerate() {
                if (j + round) % 3 == 0 {
                    p.free(*h).unwrap();
                }
            }
            objs = keep;
            verify(&objs, &mut out);
            check(&p);
        }
        let c = p.census();
        // The census counts frames from the first.
        assert!(c.top > below, "the pool grew across the boundary ({} frames)", c.top);
        p.compact();
        verify(&objs, &mut out);
        p.defragment();
        p.make_adjacent();
        verify(&objs, &mut out);
        check(&p);
        for (h, _, _) in objs {
            p.free(h).unwrap();
        }
        assert_eq!(p.total_pages(), 0);
        check(&p);
    }
}

/// After `release_address_space`, a pool grows back even where another mapping would
/// like the range above its top: the segment its top is in keeps its reservation
/// (without RLIMIT_AS), so nothing else can be mapped there.
#[test]
fn a_released_pool_grows_back_whatever_is_mapped_meanwhile() {
    use zsmalloc::MapMode;
    let cfg = Config { layout: Layout::Kernel, ..config() };
    let p = Pool::with_config("regrow", &cfg).unwrap();
    let frame = frame();
    // Objects of one frame each (the kernel layout's huge class: 4000 bytes of a
    // 4 KiB frame, above the huge class size at every chain and frame size): 1,500
    // frames reach the third segment of the arena, [1024, 2048), whatever their size.
    let s = frame * 125 / 128;
    assert!(s >= p.huge_class_size());
    let mut objs: Vec<(Handle, u64, usize)> = Vec::new();
    for i in 0..1500u64 {
        let h = p.malloc(s, AllocFlags::default()).unwrap();
        p.write(h, &pattern(i, s)).unwrap();
        objs.push((h, i, s));
    }
    for (h, _, _) in objs.drain(1100..) {
        p.free(h).unwrap();
    }
    p.defragment();
    p.release_address_space();
    assert_eq!(p.census().top, 1100, "defragmented to the frames held");
    // The highest frame in use: the last of the 76 frames in use of the third segment.
    // Segments are placed wherever the OS puts them, so those frames may follow the
    // end of the first or second segment (512 frames each) in memory, but nothing in
    // use follows them (the rest of their segment is not in use): they end the one
    // run of frames whose length is not a multiple of 512. Then try to map each frame
    // above it (a frame's bytes, where a segment's reservation would refuse them).
    let mut frames: Vec<usize> =
        objs.iter().map(|&(h, _, _)| p.map(h, MapMode::ReadOnly).unwrap().as_ptr() as usize).collect();
    frames.sort_unstable();
    let runs: Vec<&[usize]> = frames.chunk_by(|a, b| b - a == frame).collect();
    let third = runs.iter().find(|r| r.len() % 512 == 1100 - 1024).expect("the run that ends at the top");
    let top = *third.last().unwrap();
    let mut placed = Vec::new();
    for k in 1..1024usize {
        let at = top + k * frame;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; a fresh anonymous
        // page, unmapped below.
        let r = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                frame,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            placed.push(r);
        }
    }
    let mut ok = true;
    for i in 1500..2600u64 {
        match p.malloc(s, AllocFlags::default()) {
            Ok(h) => {
                p.write(h, &pattern(i, s)).unwrap();
                objs.push((h, i, s));
            }
            Err(e) => {
                ok = false;
                eprintln!("malloc after release: {e:?}");
                break;
            }
        }
    }
    for r in &placed {
        // SAFETY: mapped above, a frame's bytes each.
        unsafe { libc::munmap(*r, frame) };
    }
    assert!(ok && placed.is_empty(), "{} pages mapped above the released top; the pool grew back: {ok}", placed.len());
    verify(&p, &objs);
    check(&p);
}
