//! Density of the dense layout beside the kernel's, on the bundled compressed-page
//! traces at 10k, 100k and 1M objects (the trace cycled), after the fill and after a
//! seeded random half is freed and the pool compacted.
//!
//! Waste is footprint minus requested bytes, per live object. The dense layout's
//! footprint is the pool's own full count (frames and every byte of metadata). The
//! kernel layout is counted the kernel's way: its frames plus an 8-byte handle object
//! per live object (a `struct page` per frame is not counted). The goal: the dense
//! layout's waste at most 0.75 of the kernel's, density at least 0.97 after the
//! fill at 100k objects and more, at least 0.95 after free-half plus compaction.
//!
//! `cargo run --release --example density_figures` (about a minute); `--markdown`
//! prints the README's table.
//!
//! `--max-object-size N` (above 4096) measures pools of that limit instead, on the
//! traces of compressed 16 and 32 KiB units of an ext4 image of real files (those of
//! units no larger than N), at 10k and 100k objects: the same figures, with the
//! same goals of 0.97 and 0.95.
//!
//! `--frame-size N` (16384, 65536) builds both layouts' pools with frames of N bytes:
//! their default limit is then the frame, so the unit traces that fit it are measured,
//! to set beside the same traces in 4 KiB frames with `--max-object-size N`.

use zsmalloc::{AllocFlags, Config, Handle, Layout, Pool};

#[path = "../tests/common/mod.rs"]
mod common;
use common::Rng;

struct Figures {
    density: f64,
    waste: f64,
}

fn measure(p: &Pool, layout: Layout) -> Figures {
    let i = p.info();
    let live = i.live_objects as f64;
    let footprint = match layout {
        Layout::Dense => i.footprint() as f64,
        Layout::Kernel => (i.total_pages * i.frame_size + 8 * i.live_objects) as f64,
    };
    let req = i.requested_bytes as f64;
    Figures { density: req / footprint, waste: (footprint - req) / live }
}

fn run(sizes: &[usize], n: usize, layout: Layout, max_object_size: usize, frame_size: usize) -> [Figures; 2] {
    let cfg = Config { layout, max_object_size, frame_size, ..Config::default() };
    let p = Pool::with_config("density", &cfg).unwrap();
    let hs: Vec<Handle> = (0..n).map(|i| p.malloc(sizes[i % sizes.len()], AllocFlags::default()).unwrap()).collect();
    let fill = measure(&p, layout);
    let mut rng = Rng(0x5EED);
    for h in hs {
        if rng.next_u64() % 2 == 0 {
            p.free(h).unwrap();
        }
    }
    p.compact();
    [fill, measure(&p, layout)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let markdown = args.iter().any(|a| a == "--markdown");
    let number = |flag: &str| match args.iter().position(|a| a == flag) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} N")),
        None => 0,
    };
    let (max_object_size, frame_size): (usize, usize) = (number("--max-object-size"), number("--frame-size"));
    // The pools' limit: the one asked for, else the frame's.
    let limit = if max_object_size != 0 { max_object_size } else { frame_size };
    let (traces, counts): (Vec<&str>, &[usize]) = if limit > 4096 {
        let units = [("usr-ext4-lz4-16k.txt", 16384), ("usr-ext4-lz4-32k.txt", 32768)];
        (units.iter().filter(|u| u.1 <= limit).map(|u| u.0).collect(), &[10_000, 100_000])
    } else {
        (vec!["node-heap-lz4.txt", "sqlite-heap-lz4.txt"], &[10_000, 100_000, 1_000_000])
    };
    assert!(!traces.is_empty(), "no trace of units up to {limit} bytes");
    if markdown {
        println!("| trace | objects | phase | dense density | kernel density | dense waste (B/object) | kernel waste (B/object) | dense / kernel waste |");
        println!("|---|---:|---|---:|---:|---:|---:|---:|");
    } else {
        println!(
            "{:<8} {:>9} {:<14} {:>8} {:>8} {:>8} {:>8} {:>6}",
            "trace", "objects", "phase", "dense", "kernel", "waste-d", "waste-k", "ratio"
        );
    }
    for name in traces {
        let sizes = common::trace(name);
        let short = if limit > 4096 { name.trim_end_matches(".txt") } else { name.split('-').next().unwrap() };
        for &n in counts {
            let dense = run(&sizes, n, Layout::Dense, max_object_size, frame_size);
            let kernel = run(&sizes, n, Layout::Kernel, max_object_size, frame_size);
            for (k, phase) in ["fill", "half + compact"].iter().enumerate() {
                let (d, kk) = (&dense[k], &kernel[k]);
                if markdown {
                    println!(
                        "| {short} | {n} | {phase} | {:.3} | {:.3} | {:.1} | {:.1} | {:.2} |",
                        d.density,
                        kk.density,
                        d.waste,
                        kk.waste,
                        d.waste / kk.waste
                    );
                } else {
                    println!(
                        "{short:<8} {n:>9} {phase:<14} {:>8.4} {:>8.4} {:>8.1} {:>8.1} {:>6.2}",
                        d.density,
                        kk.density,
                        d.waste,
                        kk.waste,
                        d.waste / kk.waste
                    );
                }
            }
        }
    }
}
