//! The hot paths against baselines measured in the same group: glibc malloc+free for
//! allocation, memcpy for write+read, and the per-call cost of map+unmap (Rust guard
//! and the C ABI's per-thread mapping stack); and the fast paths through the C ABI,
//! as a C program calls them. Sizes replay the bundled node trace (10,915 objects).
//!
//! `cargo bench --bench hot_paths`; each figure is per object (Throughput::Elements).

use criterion::measurement::WallTime;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput};
use std::time::Duration;
use zsmalloc::ffi::{
    zs_create_pool_with, zs_destroy_pool, zs_free, zs_malloc, zs_map_object, zs_obj_read_begin, zs_obj_read_end,
    zs_obj_write, zs_pool, zs_pool_config, zs_unmap_object,
};
use zsmalloc::{AllocFlags, Config, Handle, Layout, MapMode, Pool};

fn sizes() -> Vec<usize> {
    let text = include_str!("../data/workloads/node-heap-lz4.txt");
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn pool(layout: Layout) -> Pool {
    Pool::with_config("bench", &Config { max_pages: 1 << 18, layout, ..Config::default() }).unwrap()
}

fn fill(p: &Pool, sizes: &[usize]) -> Vec<Handle> {
    sizes
        .iter()
        .map(|&s| {
            let h = p.malloc(s, AllocFlags::default()).unwrap();
            p.write(h, &vec![0x5A; s]).unwrap();
            h
        })
        .collect()
}

/// The position replaced at step `i` of round `r`: a fixed pseudo-random walk over the
/// live set, the same for every allocator.
fn victim(i: usize, r: usize, n: usize) -> usize {
    (i * 7919 + r) % n
}

/// glibc malloc+free pairs on a steady live set of the trace's sizes, walked as
/// [`victim`] walks the library's: the baseline of the steady pair.
fn glibc_steady_pairs(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, sizes: &[usize]) {
    let mut ring: Vec<*mut libc::c_void> = sizes
        .iter()
        // SAFETY: plain malloc; every pointer is freed once (replaced, or below).
        .map(|&s| unsafe { libc::malloc(s) })
        .collect();
    let mut r = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            r += 1;
            for (i, &s) in sizes.iter().enumerate() {
                let j = victim(i, r, ring.len());
                // SAFETY: as above.
                unsafe {
                    libc::free(ring[j]);
                    ring[j] = black_box(libc::malloc(s));
                }
            }
        })
    });
    for p in ring {
        // SAFETY: as above.
        unsafe { libc::free(p) };
    }
}

/// memcpy of the trace's sizes into malloc'd objects and out again: the baseline of
/// write+read.
fn memcpy_in_out(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, sizes: &[usize]) {
    let src = vec![0xA5u8; 4096];
    let mut local = vec![0u8; 4096];
    let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&s| vec![0u8; s]).collect();
    g.bench_function(name, |b| {
        b.iter(|| {
            for (buf, &s) in bufs.iter_mut().zip(sizes) {
                buf.copy_from_slice(&src[..s]);
                local[..s].copy_from_slice(black_box(&buf[..]));
                black_box(local[s - 1]);
            }
        })
    });
}

/// malloc+free pairs on a steady live set (the trace's objects), each pair replacing
/// an object: the pattern of a compressed page store that pages churn through.
fn malloc_free_steady(c: &mut Criterion) {
    let sizes = sizes();
    let mut g = c.benchmark_group("malloc+free, steady live set");
    g.throughput(Throughput::Elements(sizes.len() as u64));
    for (name, layout) in [("zsmalloc dense", Layout::Dense), ("zsmalloc kernel", Layout::Kernel)] {
        let p = pool(layout);
        let mut ring: Vec<Handle> = sizes.iter().map(|&s| p.malloc(s, AllocFlags::default()).unwrap()).collect();
        let mut r = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                r += 1;
                for (i, &s) in sizes.iter().enumerate() {
                    let j = victim(i, r, ring.len());
                    p.free(ring[j]).unwrap();
                    ring[j] = p.malloc(s, AllocFlags::default()).unwrap();
                }
            })
        });
    }
    glibc_steady_pairs(&mut g, "glibc malloc", &sizes);
    g.finish();
}

/// Fill with the trace's sizes, then free everything: every zspage is born and dies
/// each round (frames beyond the resident cache go back to the OS), where malloc keeps
/// its memory. The worst case for an allocator that returns memory at once.
fn malloc_free_fill_empty(c: &mut Criterion) {
    let sizes = sizes();
    let mut g = c.benchmark_group("malloc+free, fill then empty");
    g.throughput(Throughput::Elements(sizes.len() as u64));
    for (name, layout) in [("zsmalloc dense", Layout::Dense), ("zsmalloc kernel", Layout::Kernel)] {
        let p = pool(layout);
        let mut hs = Vec::with_capacity(sizes.len());
        g.bench_function(name, |b| {
            b.iter(|| {
                for &s in &sizes {
                    hs.push(p.malloc(s, AllocFlags::default()).unwrap());
                }
                for h in hs.drain(..) {
                    p.free(h).unwrap();
                }
            })
        });
    }
    let mut ps: Vec<*mut libc::c_void> = Vec::with_capacity(sizes.len());
    g.bench_function("glibc malloc", |b| {
        b.iter(|| {
            for &s in &sizes {
                // SAFETY: plain malloc; freed below.
                ps.push(unsafe { libc::malloc(s) });
            }
            for p in ps.drain(..) {
                // SAFETY: from malloc above, freed once.
                unsafe { libc::free(black_box(p)) };
            }
        })
    });
    g.finish();
}

/// Objects in the live set of `free_large_live_set`: the trace cycled to a million
/// objects (about 1.4 GB), as in the harness at a million objects, so that the slots,
/// the side table and the descriptors are far larger than the caches (at 262,144
/// objects a free took a third of the time it takes here).
const LARGE_SET: usize = 1 << 20;

/// The order `free_large_live_set` frees in: the first half of a fixed pseudo-random
/// permutation of the live set (the same for every allocator).
fn free_order(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order.truncate(n / 2);
    order
}

/// Frees of half of a large live set, in a random order: every free misses the cache
/// on what it touches (the handle slot, the frame's side-table word, the zspage's
/// descriptor and free space), where the steady pairs above find them cached. The
/// fill is outside the measurement; glibc's free of the same objects, in the same
/// order, is the baseline.
fn free_large_live_set(c: &mut Criterion) {
    let trace = sizes();
    let sizes: Vec<usize> = trace.iter().copied().cycle().take(LARGE_SET).collect();
    let order = free_order(LARGE_SET);
    let mut g = c.benchmark_group("free, large live set");
    g.sample_size(10);
    g.throughput(Throughput::Elements(order.len() as u64));
    for (name, layout) in [("zsmalloc dense", Layout::Dense), ("zsmalloc kernel", Layout::Kernel)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let config = Config { max_pages: 1 << 20, layout, ..Config::default() };
                    let p = Pool::with_config("bench", &config).unwrap();
                    let hs = fill(&p, &sizes);
                    (p, hs)
                },
                |(p, hs)| {
                    for &i in &order {
                        p.free(hs[i]).unwrap();
                    }
                    (p, hs)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.bench_function("glibc malloc", |b| {
        b.iter_batched(
            || {
                let ps = sizes
                    .iter()
                    .map(|&s| {
                        // SAFETY: plain malloc of `s` bytes, written in full; each pointer
                        // is freed once, in the routine or when `PtrsLeft` drops.
                        unsafe {
                            let p = libc::malloc(s);
                            std::ptr::write_bytes(p.cast::<u8>(), 0x5A, s);
                            p
                        }
                    })
                    .collect();
                PtrsLeft(ps)
            },
            |mut ps| {
                for &i in &order {
                    // SAFETY: from malloc in the setup, freed once (set to null, which
                    // `PtrsLeft` then frees as a no-op).
                    unsafe { libc::free(black_box(ps.0[i])) };
                    ps.0[i] = std::ptr::null_mut();
                }
                ps
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The pointers of `free_large_live_set`'s glibc round, freed when dropped (outside
/// the measurement: criterion drops a routine's output after timing it).
struct PtrsLeft(Vec<*mut libc::c_void>);

impl Drop for PtrsLeft {
    fn drop(&mut self) {
        for &p in &self.0 {
            // SAFETY: from malloc and not freed yet, or null.
            unsafe { libc::free(p) };
        }
    }
}

fn write_read(c: &mut Criterion) {
    let sizes = sizes();
    let mut g = c.benchmark_group("write+read");
    g.throughput(Throughput::Elements(sizes.len() as u64));
    let src = vec![0xA5u8; 4096];
    let mut local = vec![0u8; 4096];
    for (name, layout) in [("zsmalloc dense", Layout::Dense), ("zsmalloc kernel", Layout::Kernel)] {
        let p = pool(layout);
        let hs = fill(&p, &sizes);
        g.bench_function(name, |b| {
            b.iter(|| {
                for (&h, &s) in hs.iter().zip(&sizes) {
                    p.write(h, &src[..s]).unwrap();
                    let r = p.read_begin(h, s, &mut local).unwrap();
                    black_box(r[s - 1]);
                }
            })
        });
    }
    memcpy_in_out(&mut g, "memcpy", &sizes);
    g.finish();
}

/// The calls' own cost: 256 objects, whose handles and descriptors stay in cache, and
/// the object's bytes are not touched (over the whole trace, a cache miss per object
/// on its slot, descriptor and bytes dominates what is measured).
fn map_unmap(c: &mut Criterion) {
    let sizes: Vec<usize> = sizes().into_iter().take(256).collect();
    let mut g = c.benchmark_group("map+unmap, 256 cached objects");
    g.throughput(Throughput::Elements(sizes.len() as u64));
    for (name, layout) in [("zsmalloc dense", Layout::Dense), ("zsmalloc kernel", Layout::Kernel)] {
        let p = pool(layout);
        let hs = fill(&p, &sizes);
        g.bench_function(format!("{name} (Rust guard)"), |b| {
            b.iter(|| {
                for &h in &hs {
                    let m = p.map(h, MapMode::ReadOnly).unwrap();
                    black_box(m.as_ptr());
                }
            })
        });
    }
    // The C ABI, with its per-thread record of mappings.
    let cp = c_pool();
    let hs: Vec<u64> = sizes
        .iter()
        // SAFETY: a live pool.
        .map(|&s| unsafe { zsmalloc::ffi::zs_malloc(cp, s, 0) })
        .collect();
    // Read-only mappings pin the slot; writable ones take the writer's claim and end
    // it instead.
    for (name, mode) in [("zsmalloc dense (C ABI)", 1), ("zsmalloc dense (C ABI, ZS_MM_RW)", 0)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for &h in &hs {
                    // SAFETY: live pool and handles.
                    unsafe {
                        black_box(zs_map_object(cp, h, zsmalloc::ffi::MapModeArg(mode)));
                        zs_unmap_object(cp, h);
                    }
                }
            })
        });
    }
    // SAFETY: no mapping is left; destroyed once.
    unsafe { zs_destroy_pool(cp) };
    g.finish();
    map_copied(c);
}

/// A mapping that must be copied (an object over two frames that are not adjacent),
/// through the C ABI: the buffer taken and given back, errno kept across them.
fn map_copied(c: &mut Criterion) {
    let mut g = c.benchmark_group("map+unmap of an object that must be copied (C ABI)");
    let cfg = zs_pool_config {
        size: std::mem::size_of::<zs_pool_config>(),
        max_pages: 1 << 16,
        layout: zsmalloc::ffi::LayoutArg(1),
        frame_size: 4096,
        ..Default::default()
    };
    // SAFETY: a valid config; the pool is live for the calls below and destroyed once.
    unsafe {
        let cp = zs_create_pool_with(std::ptr::null(), &cfg);
        assert!(!cp.is_null());
        // As in tests/ffi.rs: the kernel layout's 48-byte class has 3 frames a zspage;
        // with pfn 0 freed first, its first zspage takes pfn 0 and two fresh frames,
        // and object 85 lies over pfn 0 and a frame that is not next to it.
        let a = zs_malloc(cp, 4096, 0);
        let _b = zs_malloc(cp, 4096, 0);
        zs_free(cp, a);
        let hs: Vec<u64> = (0..256).map(|_| zs_malloc(cp, 40, 0)).collect();
        let h = hs[85];
        let mut local = [0u8; 40];
        let r = zs_obj_read_begin(cp, h, 40, local.as_mut_ptr().cast());
        assert_eq!(r, local.as_mut_ptr().cast(), "the object must be copied");
        zs_obj_read_end(cp, h, 40, r);
        for (name, mode) in [("ZS_MM_RO", 1), ("ZS_MM_RW", 0)] {
            g.bench_function(name, |b| {
                b.iter(|| {
                    black_box(zs_map_object(cp, h, zsmalloc::ffi::MapModeArg(mode)));
                    zs_unmap_object(cp, h);
                })
            });
        }
        zs_destroy_pool(cp);
    }
    g.finish();
}

/// A pool made through the C ABI (destroyed by the caller).
fn c_pool() -> *mut zs_pool {
    let cfg = zs_pool_config { size: std::mem::size_of::<zs_pool_config>(), max_pages: 1 << 18, ..Default::default() };
    // SAFETY: a valid config.
    let cp = unsafe { zs_create_pool_with(std::ptr::null(), &cfg) };
    assert!(!cp.is_null());
    cp
}

/// The fast paths through the C ABI, as a C program calls them (the boundary's errno
/// handling and the per-thread record of reads included), each with its baseline in
/// the same group: the steady malloc+free pair against glibc's, and writes and reads
/// of every object of the trace against memcpy into and out of malloc'd objects.
fn c_abi(c: &mut Criterion) {
    let sizes = sizes();
    let mut g = c.benchmark_group("C ABI");
    g.throughput(Throughput::Elements(sizes.len() as u64));
    let cp = c_pool();
    let src = vec![0xA5u8; 4096];
    let mut local = vec![0u8; 4096];
    // In every call below, `cp` is a live pool, the handles are live (each freed once,
    // when replaced or at the end), and `src` and `local` hold 4096 bytes, more than
    // any size.
    // SAFETY: a live pool.
    let mut ring: Vec<u64> = sizes.iter().map(|&s| unsafe { zs_malloc(cp, s, 0) }).collect();
    g.bench_function("zs_obj_write", |b| {
        b.iter(|| {
            for (&h, &s) in ring.iter().zip(&sizes) {
                // SAFETY: a live pool and handle; `src` is readable for `s` bytes.
                unsafe { zs_obj_write(cp, h, src.as_ptr().cast(), s) };
            }
        })
    });
    g.bench_function("zs_obj_read_begin+zs_obj_read_end", |b| {
        b.iter(|| {
            for (&h, &s) in ring.iter().zip(&sizes) {
                // SAFETY: a live pool and handle; `local` is writable for `s` bytes; the
                // read returns the object's `s` bytes, and is ended at once.
                unsafe {
                    let p = zs_obj_read_begin(cp, h, s, local.as_mut_ptr().cast());
                    assert!(!p.is_null());
                    black_box(*p.cast::<u8>().add(s - 1));
                    zs_obj_read_end(cp, h, s, p);
                }
            }
        })
    });
    g.bench_function("zs_obj_write+zs_obj_read_begin+zs_obj_read_end", |b| {
        b.iter(|| {
            for (&h, &s) in ring.iter().zip(&sizes) {
                // SAFETY: as the two groups above.
                unsafe {
                    zs_obj_write(cp, h, src.as_ptr().cast(), s);
                    let p = zs_obj_read_begin(cp, h, s, local.as_mut_ptr().cast());
                    assert!(!p.is_null());
                    black_box(*p.cast::<u8>().add(s - 1));
                    zs_obj_read_end(cp, h, s, p);
                }
            }
        })
    });
    // The pairs last: they leave objects of other sizes in the ring's places.
    let mut r = 0;
    g.bench_function("zs_malloc+zs_free, steady live set", |b| {
        b.iter(|| {
            r += 1;
            for (i, &s) in sizes.iter().enumerate() {
                let j = victim(i, r, ring.len());
                // SAFETY: a live pool and a live handle, replaced once freed.
                unsafe {
                    zs_free(cp, ring[j]);
                    ring[j] = zs_malloc(cp, s, 0);
                }
            }
        })
    });
    for h in ring {
        // SAFETY: a live pool and handle, freed once.
        unsafe { zs_free(cp, h) };
    }
    // SAFETY: no read is left open; destroyed once.
    unsafe { zs_destroy_pool(cp) };
    memcpy_in_out(&mut g, "memcpy in + out (baseline)", &sizes);
    glibc_steady_pairs(&mut g, "glibc malloc+free, steady live set (baseline)", &sizes);
    g.finish();
}

fn compact(c: &mut Criterion) {
    let sizes = sizes();
    let mut g = c.benchmark_group("compact");
    g.sample_size(10);
    g.throughput(Throughput::Elements((sizes.len() / 2) as u64));
    for (name, layout) in [("zsmalloc dense", Layout::Dense), ("zsmalloc kernel", Layout::Kernel)] {
        g.bench_function(format!("{name}: free half, compact"), |b| {
            b.iter_batched(
                || {
                    let p = pool(layout);
                    let hs = fill(&p, &sizes);
                    for h in hs.iter().step_by(2) {
                        p.free(*h).unwrap();
                    }
                    p
                },
                // Returned, so that the pool is dropped outside the timing.
                |p| {
                    black_box(p.compact());
                    p
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = malloc_free_steady, malloc_free_fill_empty, free_large_live_set, write_read, map_unmap, c_abi, compact
}
criterion_main!(benches);
