//! Figures for compaction under load: read and map+unmap throughput of two reader
//! threads alone, beside a thread that churns (frees and reallocates objects), and
//! beside a thread that churns and compacts without pause; the longest single read or
//! map a reader saw in each case; and compaction time per MiB of objects moved.
//!
//! `cargo run --release --example compaction_figures` (about 20 s).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zsmalloc::{AllocFlags, Config, Handle, MapMode, Pool};

// The tests' helpers: the seeded generator and the trace loader.
#[path = "../tests/common/mod.rs"]
mod common;
use common::Rng;

fn trace() -> Vec<usize> {
    common::trace("sqlite-heap-lz4.txt")
}

#[derive(Clone, Copy, PartialEq)]
enum Third {
    None,
    Churn,
    ChurnAndCompact,
}

/// Latencies in power-of-two nanosecond buckets.
#[derive(Clone, Default)]
struct Hist([u64; 32]);
impl Hist {
    fn add(&mut self, d: Duration) {
        let ns = d.as_nanos().max(1) as u64;
        self.0[(63 - ns.leading_zeros()) as usize] += 1;
    }
    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }
    /// Upper bound (ns) of the bucket holding quantile `q`.
    fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.0.iter().sum();
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen as f64 >= q * total as f64 {
                return 2u64 << i;
            }
        }
        u64::MAX
    }
}

/// Two readers for `secs`; returns (ops/s, latency histogram, longest op, frames compacted).
fn run(third: Third, map: bool, secs: f64) -> (f64, Hist, Duration, u64) {
    let sizes = trace();
    let p = Arc::new(Pool::with_config("cmp", &Config { max_pages: 1 << 20, ..Config::default() }).unwrap());
    // The readers' objects, and a separate set the third thread churns through, so
    // that compaction always finds sparse zspages in the same classes.
    let read_set: Arc<Vec<(Handle, usize)>> =
        Arc::new(sizes.iter().map(|&s| (p.malloc(s, AllocFlags::default()).unwrap(), s)).collect());
    let mut churn_set: Vec<(Handle, usize)> =
        sizes.iter().map(|&s| (p.malloc(s, AllocFlags::default()).unwrap(), s)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicUsize::new(0));
    let third_thread = (third != Third::None).then(|| {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(7);
            let mut freed = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..2000 {
                    let i = (rng.next_u64() % churn_set.len() as u64) as usize;
                    let s = churn_set[i].1;
                    p.free(churn_set[i].0).unwrap();
                    churn_set[i].0 = p.malloc(s, AllocFlags::default()).unwrap();
                }
                // Free a tenth, so that zspages go sparse, then refill.
                let n = churn_set.len() / 10;
                let gone: Vec<_> = churn_set.drain(..n).collect();
                for (h, _) in &gone {
                    p.free(*h).unwrap();
                }
                if third == Third::ChurnAndCompact {
                    freed += p.compact().pages_freed as u64;
                }
                churn_set.extend(gone.iter().map(|&(_, s)| (p.malloc(s, AllocFlags::default()).unwrap(), s)));
            }
            freed
        })
    });
    let readers: Vec<_> = (0..2u64)
        .map(|t| {
            let (p, stop, ops, set) = (p.clone(), stop.clone(), ops.clone(), read_set.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(100 + t);
                let mut local = vec![0u8; 4096];
                let mut worst = Duration::ZERO;
                let mut hist = Hist::default();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        let (h, s) = set[(rng.next_u64() % set.len() as u64) as usize];
                        let t0 = Instant::now();
                        if map {
                            let m = p.map(h, MapMode::ReadOnly).unwrap();
                            std::hint::black_box(m[s - 1]);
                        } else {
                            let r = p.read_begin(h, s, &mut local).unwrap();
                            std::hint::black_box(r[s - 1]);
                        }
                        let d = t0.elapsed();
                        hist.add(d);
                        worst = worst.max(d);
                    }
                    n += 256;
                }
                ops.fetch_add(n, Ordering::Relaxed);
                (worst, hist)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut hist = Hist::default();
    let mut worst = Duration::ZERO;
    for r in readers {
        let (w, h) = r.join().unwrap();
        worst = worst.max(w);
        hist.merge(&h);
    }
    let freed = third_thread.map(|t| t.join().unwrap()).unwrap_or(0);
    p.check().unwrap();
    (ops.load(Ordering::Relaxed) as f64 / secs, hist, worst, freed)
}

fn main() {
    let secs = 3.0;
    println!("## Two reader threads, and a third thread (2-core machine)");
    println!("Latencies of single operations, as power-of-two bucket bounds; the longest includes");
    println!("the scheduler's preemption (three busy threads share two cores).\n");
    println!("| third thread | op | ops/s | p50 | p99 | p99.9 | p99.99 | longest | frames compacted |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, third) in [("none", Third::None), ("churn", Third::Churn), ("churn + compact", Third::ChurnAndCompact)]
    {
        for (op, map) in [("read", false), ("map+unmap", true)] {
            let (rate, h, worst, freed) = run(third, map, secs);
            let q = |x| format!("{} ns", h.quantile(x));
            println!(
                "| {label} | {op} | {rate:.3e} | {} | {} | {} | {} | {:.0} µs | {freed} |",
                q(0.5),
                q(0.99),
                q(0.999),
                q(0.9999),
                worst.as_secs_f64() * 1e6
            );
        }
    }

    println!("\n## Compaction time per MiB of objects moved");
    println!("| layout | objects moved | MiB moved | frames freed | ms | ms per MiB |");
    println!("|---|---|---|---|---|---|");
    let sizes = trace();
    for layout in [zsmalloc::Layout::Dense, zsmalloc::Layout::Kernel] {
        let p = Pool::with_config("c", &Config { max_pages: 1 << 20, layout, ..Config::default() }).unwrap();
        let mut rng = Rng(3);
        let hs: Vec<_> =
            (0..5).flat_map(|_| sizes.iter()).map(|&s| (p.malloc(s, AllocFlags::default()).unwrap(), s)).collect();
        for &(h, _) in &hs {
            if rng.next_u64() % 2 == 0 {
                p.free(h).unwrap();
            }
        }
        let before = p.info().requested_bytes;
        let t = Instant::now();
        let r = p.compact();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        // Objects moved are a sample of the live ones: estimate their bytes from the
        // live average.
        let mib = r.objs_moved as f64 * (before as f64 / p.info().live_objects as f64) / (1 << 20) as f64;
        println!("| {layout:?} | {} | {mib:.1} | {} | {ms:.1} | {:.2} |", r.objs_moved, r.pages_freed, ms / mib);
    }
}
