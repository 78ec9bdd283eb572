//! Figures for frame migration: bytes copied by a read-all pass before and after
//! zs_make_adjacent on the bundled traces, time per frame migrated, and the arena
//! before and after defragmenting a pool that grew to 1 GiB and shrank to 100 MiB.
//!
//! `cargo run --release --example migration_figures` (about a minute, 1.2 GiB).

use std::time::Instant;
use zsmalloc::{AllocFlags, Config, Handle, Layout, Pool};

// The tests' helpers: the seeded generator and the trace loader.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{trace, Rng};

fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() >> 10
}

fn read_all(p: &Pool, hs: &[(Handle, usize)]) -> u64 {
    let before = p.info().read_copied_bytes;
    let mut local = vec![0u8; 4096];
    for &(h, s) in hs {
        let r = p.read_begin(h, s, &mut local).unwrap();
        std::hint::black_box(r[0]);
    }
    p.info().read_copied_bytes - before
}

fn main() {
    println!("## Adjacency: bytes copied by a read-all pass");
    println!("| layout | trace | objects | bytes read | copied before | copied after | zspages joined | frames moved | ns per frame |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (layout, name) in [Layout::Dense, Layout::Kernel]
        .into_iter()
        .flat_map(|l| ["node-heap-lz4.txt", "sqlite-heap-lz4.txt"].map(|n| (l, n)))
    {
        let sizes = trace(name);
        let p = Pool::with_config("adj", &Config { max_pages: 1 << 20, layout, ..Config::default() }).unwrap();
        // Fill, free a seeded half, compact, refill: the new zspages take the frames
        // compaction scattered, as a long-lived pool's do.
        let mut rng = Rng(0xAD1 ^ 0x5EED);
        let mut hs: Vec<(Handle, usize)> =
            sizes.iter().map(|&s| (p.malloc(s, AllocFlags::default()).unwrap(), s)).collect();
        hs.retain(|&(h, _)| rng.next_u64() % 2 == 0 || p.free(h).is_err());
        p.compact();
        hs.extend(sizes.iter().map(|&s| (p.malloc(s, AllocFlags::default()).unwrap(), s)));
        let bytes: usize = hs.iter().map(|h| h.1).sum();
        let before = read_all(&p, &hs);
        let t = Instant::now();
        let r = p.make_adjacent();
        let ns = if r.frames_moved == 0 {
            "—".to_string()
        } else {
            format!("{:.0}", t.elapsed().as_nanos() as f64 / r.frames_moved as f64)
        };
        let after = read_all(&p, &hs);
        p.check().unwrap();
        println!(
            "| {layout:?} | {name} | {} | {bytes} | {before} ({:.2}%) | {after} | {} | {} | {ns} |",
            hs.len(),
            100.0 * before as f64 / bytes as f64,
            r.zspages_joined,
            r.frames_moved
        );
    }

    println!("\n## Defragmentation: a pool that grew to 1 GiB and shrank to 100 MiB");
    let sizes = trace("sqlite-heap-lz4.txt");
    let p = Pool::with_config("defrag", &Config { max_pages: 1 << 19, ..Config::default() }).unwrap();
    let mut hs = Vec::new();
    let mut i = 0;
    while p.total_pages() < (1 << 30) / 4096 {
        let s = sizes[i % sizes.len()];
        let h = p.malloc(s, AllocFlags::default()).unwrap();
        p.write(h, &vec![i as u8; s]).unwrap();
        hs.push(h);
        i += 1;
    }
    let grown = (p.census(), status("VmRSS:"), status("VmSize:"));
    let mut rng = Rng(42);
    let keep_one_in = 10;
    hs.retain(|&h| rng.next_u64() % keep_one_in == 0 || p.free(h).is_err());
    let t = Instant::now();
    let compacted = p.compact();
    let compact_ms = t.elapsed().as_secs_f64() * 1e3;
    let shrunk = (p.census(), status("VmRSS:"), status("VmSize:"));
    let t = Instant::now();
    let r = p.defragment();
    let defrag_s = t.elapsed().as_secs_f64();
    let after = (p.census(), status("VmRSS:"), status("VmSize:"));
    p.release_address_space();
    let released = (p.census(), status("VmRSS:"), status("VmSize:"));
    p.check().unwrap();
    println!("| state | frames held | arena top (frames) | arena committed (MiB) | arena mapped (MiB) | side table mapped (KiB) | VmRSS (MiB) | VmSize (MiB) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (label, (c, rss, vsz)) in [
        ("grown", &grown),
        ("freed 90% + compacted", &shrunk),
        ("zs_defragment", &after),
        ("zs_release_arena", &released),
    ] {
        println!(
            "| {label} | {} | {} | {} | {} | {} | {rss} | {vsz} |",
            c.zspage + c.huge,
            c.top,
            (c.committed * 4096) >> 20,
            c.arena_mapped_bytes >> 20,
            c.side_table_mapped_bytes >> 10
        );
    }
    println!(
        "\ncompaction: {} frames freed, {} objects moved in {compact_ms:.0} ms; defragmentation: {} frames moved, \
         top lowered by {} frames, {:.0} ns per frame moved ({} busy)",
        compacted.pages_freed,
        compacted.objs_moved,
        r.frames_moved,
        r.frames_released,
        defrag_s * 1e9 / r.frames_moved.max(1) as f64,
        r.frames_busy
    );
}
