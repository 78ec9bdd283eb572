//! Helpers shared by the integration tests.
#![allow(dead_code)]

use zsmalloc::{Config, Layout, Pool};

/// A deterministic byte pattern for object `seed` of `len` bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A pool with a bounded arena (tests create many pools).
pub fn pool(layout: Layout) -> Pool {
    Pool::with_config("test", &Config { max_pages: 1 << 18, layout, ..config() }).unwrap()
}

/// Asserts the pool's invariants.
pub fn check(p: &Pool) {
    if let Err(e) = p.check() {
        panic!("pool check failed: {e}");
    }
}

/// A seeded xorshift generator: the same sequence on every run.
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Object sizes from a bundled trace (data/workloads/NAME).
pub fn trace(name: &str) -> Vec<usize> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/workloads/");
    std::fs::read_to_string(format!("{path}{name}"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// The kernel's own zsmalloc test workload, restated: `per` objects of every size
/// from 32 bytes up to the last size below `huge` (the kernel layout's huge class
/// size, whose objects take a frame each), `step` bytes apart, in ascending order,
/// one size at a time. The kernel's test runs 182 objects a size, steps 1, 9, ..., 121.
pub fn kernel_selftest(huge: usize, step: usize, per: usize) -> Vec<usize> {
    (32..huge).step_by(step).flat_map(|s| std::iter::repeat(s).take(per)).collect()
}

/// The kernel layout's huge class size for a chain limit (3257, 3625, 3833 for 4, 8, 16).
pub fn kernel_huge_class_size(chain: usize) -> usize {
    let cfg = Config { layout: Layout::Kernel, chain_size: chain, max_pages: 16, ..Config::default() };
    Pool::with_config("huge", &cfg).unwrap().huge_class_size()
}

/// Orders of arrival that leave an allocator no later object to fill a gap with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Smallest first.
    Ascending,
    /// Largest first.
    Descending,
    /// Ascending ramps, one after another: the sorted sizes dealt out to as many
    /// ramps as the most common size has objects, so each ramp climbs the whole range.
    Sawtooth,
    /// Every object of one size, then every object of the next, the sizes in a
    /// seeded shuffle.
    BySize,
}

impl Order {
    /// Every order.
    pub const ALL: [Order; 4] = [Order::Ascending, Order::Descending, Order::Sawtooth, Order::BySize];

    /// Its name in the harness (`zsbench --order`).
    pub fn name(self) -> &'static str {
        match self {
            Order::Ascending => "ascending",
            Order::Descending => "descending",
            Order::Sawtooth => "sawtooth",
            Order::BySize => "by-size",
        }
    }

    /// `sizes` rearranged in this order.
    pub fn arrange(self, sizes: &[usize]) -> Vec<usize> {
        let mut sorted = sizes.to_vec();
        sorted.sort_unstable();
        // Runs of equal sizes in sorted order: (size, count).
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &s in &sorted {
            match runs.last_mut() {
                Some((last, n)) if *last == s => *n += 1,
                _ => runs.push((s, 1)),
            }
        }
        match self {
            Order::Ascending => sorted,
            Order::Descending => sorted.into_iter().rev().collect(),
            Order::Sawtooth => {
                let ramps = runs.iter().map(|&(_, n)| n).max().unwrap_or(1);
                (0..ramps).flat_map(|r| sorted.iter().skip(r).step_by(ramps).copied()).collect()
            }
            Order::BySize => {
                let mut rng = Rng(0xC0FFEE);
                for i in (1..runs.len()).rev() {
                    runs.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
                }
                runs.into_iter().flat_map(|(s, n)| std::iter::repeat(s).take(n)).collect()
            }
        }
    }
}

/// A pool's figures after a fill.
pub struct Filled {
    /// Requested bytes over the bytes of the frames held: what the kernel's test
    /// reports, from the pool's pages.
    pub utilisation: f64,
    /// Requested bytes over the pool's whole footprint (frames and all metadata).
    pub density: f64,
    /// Requested bytes over the frames and an 8-byte handle object per live object:
    /// the kernel's own memory for the kernel layout, its `struct page`s left out.
    pub kernel_count: f64,
    /// Footprint less requested bytes, per object: the whole footprint for the dense
    /// layout, the kernel's count for the kernel layout.
    pub waste: f64,
}

/// Fills a pool of `layout` and chain limit `chain` with objects of `sizes`, in
/// order, and counts it.
pub fn fill(layout: Layout, chain: usize, sizes: &[usize]) -> Filled {
    // 2 GiB of arena: the largest fill, the kernel's workload at step 1 and chain 16,
    // takes 1.3 GiB.
    let cfg = Config { layout, chain_size: chain, max_pages: 1 << 19, ..Config::default() };
    let p = Pool::with_config("fill", &cfg).unwrap();
    for &s in sizes {
        p.malloc(s, zsmalloc::AllocFlags::default()).unwrap();
    }
    let i = p.info();
    let (req, frames, live) = (i.requested_bytes as f64, (i.total_pages * 4096) as f64, i.live_objects as f64);
    let kernel_foot = frames + 8.0 * live;
    let foot = if layout == Layout::Dense { i.footprint() as f64 } else { kernel_foot };
    Filled {
        utilisation: req / frames,
        density: req / i.footprint() as f64,
        kernel_count: req / kernel_foot,
        waste: (foot - req) / live,
    }
}

/// The frame size the suites run with: `ZS_TEST_FRAME_SIZE` in bytes (`make test`
/// runs the suites at 4, 16 and 64 KiB), or 0, the system's page, where it is unset.
pub fn frame_size() -> usize {
    match std::env::var("ZS_TEST_FRAME_SIZE") {
        Ok(v) => v.parse().expect("ZS_TEST_FRAME_SIZE is a number of bytes"),
        Err(_) => 0,
    }
}

/// The frame size the suites' pools have, in bytes: [`frame_size`], or the system's
/// page where that is 0.
pub fn frame() -> usize {
    match frame_size() {
        0 => Pool::new("page").unwrap().info().frame_size as usize,
        f => f,
    }
}

/// The default configuration with the suites' frame size: what every test's pool is
/// built from.
pub fn config() -> Config {
    Config { frame_size: frame_size(), ..Config::default() }
}
