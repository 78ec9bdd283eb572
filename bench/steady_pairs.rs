//! The steady malloc+free pair of `benches/hot_paths.rs`, dense against kernel layout,
//! measured so that the machine's drift falls on both alike: the same rounds replayed
//! alternately on a dense and a kernel pool in one process, and the median of the
//! paired rounds' ratios reported. A criterion run measures the two layouts seconds
//! apart, and on a shared machine a group moves by 10-30% between runs; here each
//! ratio compares two stretches of work milliseconds apart.
//!
//! `cargo run --release --example steady_pairs [rounds] [block]`: `rounds` paired
//! rounds (200), each running `block` rounds of the trace (1) on each layout in
//! turn. With blocks of one the two pools share the caches round by round; blocks of
//! 30 or so let each layout run warm, as it does alone in criterion, and are the
//! closer measure of what criterion reports.

use std::time::Instant;
use zsmalloc::{AllocFlags, Config, Handle, Layout, Pool};

/// A pool holding the trace's objects, and their handles.
fn filled(sizes: &[usize], layout: Layout) -> (Pool, Vec<Handle>) {
    let p = Pool::with_config("steady", &Config { max_pages: 1 << 18, layout, ..Config::default() }).unwrap();
    let ring = sizes.iter().map(|&s| p.malloc(s, AllocFlags::default()).unwrap()).collect();
    (p, ring)
}

/// `block` rounds, as the criterion bench's: in each, every size of the trace replaces
/// an object (the same victims for both layouts). Returns nanoseconds per pair.
fn round(p: &Pool, ring: &mut [Handle], sizes: &[usize], r: usize, block: usize) -> f64 {
    let t = Instant::now();
    for n in block * r..block * (r + 1) {
        for (i, &s) in sizes.iter().enumerate() {
            let j = (i * 7919 + n) % ring.len();
            p.free(ring[j]).unwrap();
            ring[j] = p.malloc(s, AllocFlags::default()).unwrap();
        }
    }
    t.elapsed().as_nanos() as f64 / (block * sizes.len()) as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let sizes: Vec<usize> =
        include_str!("../data/workloads/node-heap-lz4.txt").lines().filter_map(|l| l.trim().parse().ok()).collect();
    let rounds: usize = std::env::args().nth(1).map_or(200, |a| a.parse().expect("rounds: a number")).max(1);
    let block: usize = std::env::args().nth(2).map_or(1, |a| a.parse().expect("block: a number")).max(1);
    let (dense, mut dense_ring) = filled(&sizes, Layout::Dense);
    let (kernel, mut kernel_ring) = filled(&sizes, Layout::Kernel);
    // The first rounds warm both pools up to their steady state; they are not counted.
    let warm = rounds / 10;
    let (mut d, mut k, mut ratio) = (vec![], vec![], vec![]);
    for r in 1..=rounds {
        let a = round(&dense, &mut dense_ring, &sizes, r, block);
        let b = round(&kernel, &mut kernel_ring, &sizes, r, block);
        if r > warm {
            d.push(a);
            k.push(b);
            ratio.push(a / b);
        }
    }
    println!(
        "steady pair, median of {} paired rounds: dense {:.1} ns, kernel layout {:.1} ns, dense / kernel {:.3}",
        ratio.len(),
        median(&mut d),
        median(&mut k),
        median(&mut ratio)
    );
}
