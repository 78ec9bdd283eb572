//! Four threads on shared classes: malloc, write, read, map and free, with objects
//! freed by threads other than the one that made them; every byte verified at the end.

mod common;
use common::{check, pattern};
use parking_lot::Mutex;
use std::sync::Arc;
use zsmalloc::{AllocFlags, Config, Handle, MapMode, Pool};

#[test]
fn four_threads_mixed_operations() {
    let p = Arc::new(Pool::with_config("threads", &Config { max_pages: 1 << 18, ..common::config() }).unwrap());
    // A shared exchange: threads free each other's objects.
    let exchange: Arc<Mutex<Vec<(Handle, u64, usize)>>> = Arc::default();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (p, ex) = (p.clone(), exchange.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut x = 0x1234_5678 + t;
                for i in 0..20_000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Sizes from a few shared classes, so threads contend on them.
                    let s = [48usize, 100, 700, 1500, 3000, 4096][(x % 6) as usize] - (x % 7) as usize;
                    let seed = (t << 32) | i;
                    let h = p.malloc(s, AllocFlags::default()).unwrap();
                    p.write(h, &pattern(seed, s)).unwrap();
                    match x % 5 {
                        0 => ex.lock().push((h, seed, s)),
                        1 => {
                            let m = p.map(h, MapMode::ReadOnly).unwrap();
                            assert_eq!(&m[..s], &pattern(seed, s)[..]);
                            drop(m);
                            mine.push((h, seed, s));
                        }
                        _ => mine.push((h, seed, s)),
                    }
                    if x % 3 == 0 {
                        if let Some((h, seed, s)) = ex.lock().pop() {
                            let mut out = vec![0u8; s];
                            p.read(h, &mut out).unwrap();
                            assert_eq!(out, pattern(seed, s));
                            p.free(h).unwrap();
                        }
                    }
                    if mine.len() > 2000 {
                        let (h, _, _) = mine.swap_remove((x % 2000) as usize);
                        p.free(h).unwrap();
                    }
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.extend(exchange.lock().drain(..));
    check(&p);
    assert_eq!(p.info().live_objects, all.len() as u64);
    for (h, seed, s) in all {
        let mut out = vec![0u8; s];
        p.read(h, &mut out).unwrap();
        assert_eq!(out, pattern(seed, s));
        p.free(h).unwrap();
    }
    check(&p);
    assert_eq!(p.total_pages(), 0);
}
