//! Every thread-safe entry point against every other, in both layouts.
//!
//! Two workers malloc, write, read (whole, and through `read_begin`), map (all three
//! modes) and free their own objects, each against a shadow copy checked on every
//! read. A contender reads and maps the workers' objects read-only while they work on
//! them: it may be refused (`Busy`, or a stale handle), but what it is shown is always
//! one whole version of the object, never a mix. A census thread walks the side table
//! in a loop, a checker runs the invariant checker in a loop (it must pass every
//! time), a maintenance thread compacts, defragments, makes zspages adjacent and
//! releases the arena's address space, the automatic compactor runs every
//! millisecond, and a burst thread grows the arena by thousands of frames and empties
//! it again, so that shrinking runs under the walkers.
//!
//! Each layout runs for `ZS_TORTURE_MS` milliseconds (default 2000); `make
//! test-torture-long` runs it for longer.

mod common;
use common::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zsmalloc::{AllocFlags, AutoCompact, Config, Error, Handle, Layout, MapMode, Pool};

/// Bytes of the header that makes an object's contents self-describing.
const HEADER: usize = 8;
/// Objects a worker shares with the contender at once (the first of them, its hot
/// object, for the whole run).
const SHARED: usize = 64;

/// Contents of version `seed` of an object of `len` bytes (`len >= HEADER`): its
/// length and seed, then bytes that follow from the seed, so that a reader that does
/// not know which version it is looking at can still tell a whole version from a mix.
fn contents(seed: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&seed.to_le_bytes());
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    v.extend((HEADER..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    v
}

/// Whether `bytes` start with one whole version of an object (see [`contents`]).
fn is_whole_version(bytes: &[u8]) -> Result<(), String> {
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    let seed = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    if !(HEADER..=bytes.len()).contains(&len) {
        return Err(format!("header names {len} bytes in a mapping of {}", bytes.len()));
    }
    if bytes[..len] != contents(seed, len)[..] {
        return Err(format!("torn object: {len} bytes, seed {seed:#x}, the rest from another version"));
    }
    Ok(())
}

struct Shared {
    pool: Pool,
    stop: AtomicBool,
    /// Accesses refused because another thread held the object.
    busy: AtomicUsize,
    /// Handles (raw) the workers offer to the contender; 0 = none.
    offered: Vec<AtomicU64>,
    failures: Mutex<Vec<String>>,
    checks: AtomicUsize,
    censuses: AtomicUsize,
    /// The pool's largest object.
    limit: usize,
}

impl Shared {
    fn fail(&self, what: String) {
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(what);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

/// An object a worker owns: its handle, its length, and the seed of its contents.
#[derive(Clone, Copy)]
struct Obj {
    h: Handle,
    len: usize,
    seed: u32,
    /// Its place in `offered`, if the contender may be looking at it.
    offered: Option<usize>,
}

/// Retries `f` while the contender holds the object (`Busy`); any other error fails.
fn retry<T>(s: &Shared, what: &str, mut f: impl FnMut() -> Result<T, Error>) -> Option<T> {
    loop {
        match f() {
            Ok(v) => return Some(v),
            Err(Error::Busy) => {
                s.busy.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
            Err(e) => {
                s.fail(format!("{what}: {e}"));
                return None;
            }
        }
    }
}

fn worker(s: &Shared, t: usize) -> Vec<Obj> {
    let p = &s.pool;
    let mut rng = Rng(0x5EED_0000 + t as u64);
    let mut objs: Vec<Obj> = Vec::new();
    let mut seeds = (t as u32) << 28;
    let mut buf = vec![0u8; s.limit];
    while s.running() {
        let r = rng.next_u64();
        let op = r % 16;
        if objs.len() < 200 || (op < 4 && objs.len() < 3000) {
            let len = match r >> 8 & 3 {
                0 => HEADER + (r >> 16) as usize % 56,
                1 => HEADER + (r >> 16) as usize % 1000,
                2 => HEADER + (r >> 16) as usize % (4096 - HEADER + 1),
                _ => HEADER + (r >> 16) as usize % (s.limit - HEADER + 1),
            };
            let h = match p.malloc(len, AllocFlags::default()) {
                Ok(h) => h,
                Err(e) => {
                    s.fail(format!("malloc({len}): {e}"));
                    break;
                }
            };
            seeds += 1;
            let data = contents(seeds, len);
            if let Err(e) = p.write(h, &data) {
                s.fail(format!("write to a new object: {e}"));
                break;
            }
            // Some objects are offered to the contender; the first, which the worker
            // never frees and works on a quarter of the time, always.
            let mut offered = None;
            if objs.is_empty() {
                s.offered[t * SHARED].store(h.to_raw(), Ordering::Release);
                offered = Some(t * SHARED);
            } else if r >> 40 & 3 == 0 {
                let k = t * SHARED + (r >> 20) as usize % SHARED;
                if s.offered[k].compare_exchange(0, h.to_raw(), Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    offered = Some(k);
                }
            }
            objs.push(Obj { h, len, seed: seeds, offered });
            continue;
        }
        let i = if r >> 62 == 0 { 0 } else { (r >> 24) as usize % objs.len() };
        let o = objs[i];
        let what = |op: &str| format!("{op}({:?}, {} bytes)", o.h, o.len);
        match op {
            4..=6 if i != 0 => {
                // Free (withdrawn from the contender first; it may still hold it).
                if let Some(k) = o.offered {
                    s.offered[k].store(0, Ordering::Release);
                }
                if retry(s, &what("free"), || p.free(o.h)).is_none() {
                    break;
                }
                objs.swap_remove(i);
            }
            4..=8 => {
                seeds += 1;
                let data = contents(seeds, o.len);
                if retry(s, &what("write"), || p.write(o.h, &data)).is_none() {
                    break;
                }
                objs[i].seed = seeds;
            }
            9 | 10 => {
                let out = &mut buf[..o.len];
                if retry(s, &what("read"), || p.read(o.h, out)).is_none() {
                    break;
                }
                if *out != contents(o.seed, o.len)[..] {
                    s.fail(format!("{}: contents differ from the shadow copy", what("read")));
                }
            }
            11 => {
                let mut local = vec![0u8; o.len];
                let ok = retry(s, &what("read_begin"), || {
                    p.read_begin(o.h, o.len, &mut local).map(|r| *r == contents(o.seed, o.len)[..])
                });
                match ok {
                    Some(true) => {}
                    Some(false) => s.fail(format!("{}: contents differ from the shadow copy", what("read_begin"))),
                    None => break,
                }
            }
            12 => {
                let ok = retry(s, &what("map ro"), || {
                    p.map(o.h, MapMode::ReadOnly).map(|m| m[..o.len] == contents(o.seed, o.len)[..])
                });
                match ok {
                    Some(true) => {}
                    Some(false) => s.fail(format!("{}: contents differ from the shadow copy", what("map ro"))),
                    None => break,
                }
            }
            13 | 14 => {
                // Read, check, and rewrite in place.
                seeds += 1;
                let data = contents(seeds, o.len);
                let ok = retry(s, &what("map rw"), || {
                    p.map(o.h, MapMode::ReadWrite).map(|mut m| {
                        let was = m[..o.len] == contents(o.seed, o.len)[..];
                        m.as_mut_slice().unwrap()[..o.len].copy_from_slice(&data);
                        was
                    })
                });
                match ok {
                    Some(true) => objs[i].seed = seeds,
                    Some(false) => s.fail(format!("{}: contents differ from the shadow copy", what("map rw"))),
                    None => break,
                }
            }
            _ => {
                seeds += 1;
                let data = contents(seeds, o.len);
                let ok = retry(s, &what("map wo"), || {
                    p.map(o.h, MapMode::WriteOnly)
                        .map(|mut m| m.as_mut_slice().unwrap()[..o.len].copy_from_slice(&data))
                });
                if ok.is_none() {
                    break;
                }
                objs[i].seed = seeds;
            }
        }
    }
    objs
}

/// Reads and maps (read-only) the objects the workers offer, while they write, map and
/// free them: refusals are fine, a torn or foreign view is not.
fn contender(s: &Shared) {
    let p = &s.pool;
    let mut rng = Rng(0xC0_17E5D);
    let mut buf = vec![0u8; s.limit];
    while s.running() {
        let r = rng.next_u64();
        // Half the time a worker's hot object, which its owner keeps writing.
        let k = if r & 1 == 0 { (r >> 1 & 1) as usize * SHARED } else { (r >> 2) as usize % s.offered.len() };
        let raw = s.offered[k].load(Ordering::Acquire);
        if raw == 0 {
            std::thread::yield_now();
            continue;
        }
        let h = Handle::from_raw(raw);
        let seen = match r >> 32 & 3 {
            0 => p.map(h, MapMode::ReadOnly).map(|m| is_whole_version(&m)),
            1 => {
                let mut local = vec![0u8; HEADER];
                // The header first, then the whole object, in one read each.
                match p.read_begin(h, HEADER, &mut local).map(|r| u32::from_le_bytes(r[..4].try_into().unwrap())) {
                    Ok(len) if (HEADER..=s.limit).contains(&(len as usize)) => {
                        let mut local = vec![0u8; len as usize];
                        p.read_begin(h, len as usize, &mut local).map(|r| is_whole_version(&r))
                    }
                    Ok(len) => Ok(Err(format!("header names {len} bytes"))),
                    Err(e) => Err(e),
                }
            }
            _ => match p.read(h, &mut buf[..HEADER]) {
                Ok(()) => {
                    let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
                    if !(HEADER..=s.limit).contains(&len) {
                        Ok(Err(format!("header names {len} bytes")))
                    } else {
                        // The object may have been rewritten (or freed and its slot
                        // reused) between the two reads: only a whole version counts.
                        p.read(h, &mut buf[..len]).map(|()| is_whole_version(&buf[..len]))
                    }
                }
                Err(e) => Err(e),
            },
        };
        match seen {
            Ok(Ok(())) => {}
            Ok(Err(why)) => s.fail(format!("contender saw {h:?}: {why}")),
            // Withdrawn and freed meanwhile, rewritten with another length, or held
            // by its owner: refused, as it should be.
            Err(Error::Busy) => {
                s.busy.fetch_add(1, Ordering::Relaxed);
            }
            Err(Error::Invalid(_)) => {}
            Err(e) => s.fail(format!("contender on {h:?}: {e}")),
        }
    }
}

/// Grows the arena by thousands of frames and empties it again.
fn burst(s: &Shared) {
    let p = &s.pool;
    while s.running() {
        let mut held = Vec::new();
        for k in 0..2500u32 {
            match p.malloc(4096, AllocFlags::default()) {
                Ok(h) => {
                    if p.write(h, &k.to_le_bytes()).is_err() {
                        s.fail("write to a burst object".into());
                    }
                    held.push(h);
                }
                Err(Error::NoMemory) => break,
                Err(e) => {
                    s.fail(format!("burst malloc: {e}"));
                    break;
                }
            }
        }
        for (k, h) in held.into_iter().enumerate() {
            let mut b = [0u8; 4];
            if p.read(h, &mut b).is_err() || b != (k as u32).to_le_bytes() {
                s.fail("a burst object lost its bytes".into());
            }
            if let Err(e) = p.free(h) {
                s.fail(format!("burst free: {e}"));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn torture(layout: Layout, limit: usize) {
    let ms: u64 = std::env::var("ZS_TORTURE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let config = Config {
        max_pages: 1 << 15,
        layout,
        auto_compact: AutoCompact { threshold_pages: 1, interval_ms: 1, max_pages_per_sec: 0 },
        max_object_size: limit,
        ..common::config()
    };
    let s = Arc::new(Shared {
        pool: Pool::with_config("torture", &config).unwrap(),
        stop: AtomicBool::new(false),
        offered: (0..2 * SHARED).map(|_| AtomicU64::new(0)).collect(),
        failures: Mutex::new(Vec::new()),
        checks: AtomicUsize::new(0),
        censuses: AtomicUsize::new(0),
        busy: AtomicUsize::new(0),
        limit: limit.max(4096),
    });
    let spawn = |f: fn(&Shared)| {
        let s = s.clone();
        std::thread::spawn(move || f(&s))
    };
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || worker(&s, t))
        })
        .collect();
    let others = vec![
        spawn(contender),
        spawn(burst),
        spawn(|s| {
            while s.running() {
                let c = s.pool.census();
                if c.top != c.free + c.zspage + c.huge + c.transit || c.committed > c.capacity {
                    s.fail(format!("census does not add up: {c:?}"));
                }
                s.censuses.fetch_add(1, Ordering::Relaxed);
            }
        }),
        spawn(|s| {
            while s.running() {
                if let Err(e) = s.pool.check() {
                    s.fail(format!("check under load: {e}"));
                }
                s.checks.fetch_add(1, Ordering::Relaxed);
            }
        }),
        spawn(|s| {
            while s.running() {
                s.pool.compact();
                s.pool.defragment();
                s.pool.make_adjacent();
                let released = s.pool.release_address_space();
                if released > s.pool.census().capacity * 4096 {
                    s.fail(format!("release_address_space gave back {released} bytes"));
                }
            }
        }),
    ];
    let deadline = Instant::now() + Duration::from_millis(ms);
    while s.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    s.stop.store(true, Ordering::Relaxed);
    let objs: Vec<Obj> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    for t in others {
        t.join().unwrap();
    }
    let failures = s.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{layout:?}: {} failures, the first: {failures:#?}", failures.len());
    let (checks, censuses) = (s.checks.load(Ordering::Relaxed), s.censuses.load(Ordering::Relaxed));
    assert!(checks > 0 && censuses > 0, "the checker ran {checks} times, the census {censuses}");
    eprintln!("{layout:?}: {checks} checks, {censuses} censuses, {} refusals", s.busy.load(Ordering::Relaxed));
    // At rest: every object intact, the pool sound, and empty once they are freed.
    let p = &s.pool;
    p.check().unwrap();
    let mut buf = vec![0u8; s.limit];
    for o in &objs {
        p.read(o.h, &mut buf[..o.len]).unwrap();
        assert_eq!(buf[..o.len], contents(o.seed, o.len)[..], "object {:?} at rest", o.h);
        p.free(o.h).unwrap();
    }
    p.check().unwrap();
    assert_eq!(p.info().live_objects, 0);
    p.compact();
    assert_eq!(p.total_pages(), 0, "an empty pool holds no frame");
}

#[test]
fn torture_dense() {
    torture(Layout::Dense, 0);
}

#[test]
fn torture_kernel() {
    torture(Layout::Kernel, 0);
}

/// A quarter of the objects between a page and 32 KiB: compacted, migrated and made
/// adjacent under the same load.
#[test]
fn torture_dense_large() {
    torture(Layout::Dense, 32768);
}

#[test]
fn torture_kernel_large() {
    torture(Layout::Kernel, 32768);
}
