//! Reading and writing objects larger than a page in place, against memcpy of the same
//! bytes in the same group, and the per-call cost of an object of 64 bytes (which the
//! large objects' figures should exceed by no more than the copy).
//!
//! `cargo bench --bench large_objects`; each figure is per call (Throughput::Bytes
//! gives the rate too).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use zsmalloc::{AllocFlags, Config, Handle, Layout, MapMode, Pool};

fn pool(layout: Layout) -> Pool {
    let cfg = Config { max_pages: 1 << 16, layout, max_object_size: 65536, ..Config::default() };
    Pool::with_config("bench", &cfg).unwrap()
}

/// An object of `size` bytes in place: its frames adjacent (a fresh pool's zspage is
/// one run of the frame source; the bench asserts it).
fn object(p: &Pool, size: usize) -> Handle {
    let h = p.malloc(size, AllocFlags::default()).unwrap();
    p.write(h, &vec![0x5A; size]).unwrap();
    assert!(!p.map(h, MapMode::ReadOnly).unwrap().is_copy(), "{size} bytes in place");
    h
}

fn access(c: &mut Criterion) {
    for size in [64, 16384, 32768, 65536] {
        let mut g = c.benchmark_group(format!("{size} bytes"));
        g.throughput(Throughput::Bytes(size as u64));
        let src = vec![0xA5u8; size];
        // The reads' destination, 16 bytes past a cache line, as malloc often places a
        // buffer: where memcpy's string copy is slow to leave a page with nothing
        // mapped after it, as the frames past a fresh pool's only object are. A
        // destination of the heap's own alignment made the figures vary from run to run.
        let mut out_backing = vec![0u8; size + 128];
        let at = out_backing.as_ptr().align_offset(64) + 16;
        let out = &mut out_backing[at..at + size];
        for (name, layout) in [("dense", Layout::Dense), ("kernel", Layout::Kernel)] {
            let p = pool(layout);
            let h = object(&p, size);
            g.bench_function(format!("zs write, {name}"), |b| b.iter(|| p.write(h, black_box(&src)).unwrap()));
            g.bench_function(format!("zs read, {name}"), |b| {
                b.iter(|| {
                    p.read(h, out).unwrap();
                    black_box(out[size - 1]);
                })
            });
            // In place: the bytes read through the pointer, as a caller would.
            g.bench_function(format!("zs read_begin + sum, {name}"), |b| {
                b.iter(|| {
                    let r = p.read_begin(h, size, out).unwrap();
                    black_box(r.iter().fold(0u8, |a, &x| a.wrapping_add(x)))
                })
            });
            g.bench_function(format!("zs map rw + fill, {name}"), |b| {
                b.iter(|| {
                    let mut m = p.map(h, MapMode::ReadWrite).unwrap();
                    m.as_mut_slice().unwrap()[..size].fill(black_box(7));
                })
            });
        }
        let mut dst = vec![0u8; size];
        g.bench_function("memcpy", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(dst[size - 1]);
            })
        });
        // The pool's objects here start on a page: the same copy from a page-aligned
        // source, to the same destination as the reads'.
        let mut backing = vec![0xA5u8; size + 4096];
        let at = backing.as_ptr().align_offset(4096);
        let aligned = &mut backing[at..at + size];
        g.bench_function("memcpy from a page-aligned source", |b| {
            b.iter(|| {
                out.copy_from_slice(black_box(&aligned[..]));
                black_box(out[size - 1]);
            })
        });
        g.bench_function("sum", |b| b.iter(|| black_box(black_box(&src).iter().fold(0u8, |a, &x| a.wrapping_add(x)))));
        g.bench_function("fill", |b| b.iter(|| black_box(&mut dst[..]).fill(black_box(7))));
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20);
    targets = access
}
criterion_main!(benches);
