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
    Pool::with_config("test", &Config { max_pages: 1 << 18, layout, ..Config::default() }).unwrap()
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
