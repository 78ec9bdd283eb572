//! Loom models: every interleaving of a few threads is explored (up to
//! `LOOM_MAX_PREEMPTIONS` preemptions), and loom reports any unsynchronised access it
//! can see. Run with `make test-loom` (RUSTFLAGS="--cfg loom").
//!
//! Two kinds of model:
//!
//! - The handle slot's protocol (`src/handle/slot.rs`), on the library's own `Slot`, with the
//!   object's bytes as loom cells: a reader that pins sees the object's current bytes
//!   and never races with a copy, a write, a free or the reuse of the memory; a
//!   writable mapping is never shared; a free never frees a held object.
//! - Whole pools, built by the library itself on loom's stand-ins (`src/sync.rs`): the
//!   side table is an array of loom atomics that panics on a read of a word a shrink
//!   has given back, the lanes' lock is the library's own on loom's atomics
//!   (`src/sync/lane.rs`, its futex wait a yield), the other locks are loom's, the
//!   epoch collector runs deferred frees once no guard is held, and every access to
//!   the arena's bytes is reported to the
//!   loom cells of its byte range, a cell per 4 KiB (the smallest frame: a frame of 16
//!   or 64 KiB is 4 or 16 cells, and a copy of a whole frame reports them all). The
//!   models call the library's functions: a census against a release of the arena, a
//!   defragmentation against readers, a writer and a census, a free against a
//!   migration, frees left pending (in flight, named, or waiting for a lane whose one
//!   entry is taken: the models' lanes have one) against the checker.
//!
//! The pools take their frame size from `ZS_TEST_FRAME_SIZE`, as every integration
//! test's do (`make test-loom-frames` runs the models at 16 and 64 KiB), and state
//! their figures in the pool's terms: frames, objects of a frame, the huge class.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;
use zsmalloc::__loom::{track_read, track_write, Claim, LaneLock, Slot, SlotError, State, Word};
use zsmalloc::{AllocFlags, Config, Error, FrameKind, Handle, Layout, Pool};

struct Model {
    slot: Slot,
    /// The two places the object can be.
    mem: [UnsafeCell<u64>; 2],
    /// The lane's lock, the library's own.
    class_lock: LaneLock<()>,
}

// SAFETY: the cells are accessed only as the protocol allows; loom checks that claim.
unsafe impl Sync for Model {}
// SAFETY: as above.
unsafe impl Send for Model {}

fn model(word: Word, at0: u64) -> Arc<Model> {
    Arc::new(Model {
        slot: Slot::new(word),
        mem: [UnsafeCell::new(at0), UnsafeCell::new(0)],
        class_lock: LaneLock::new(()),
    })
}

/// Reader: pin, read the object's bytes where the slot says, unpin.
fn read(m: &Model, gen: u16) -> Option<u64> {
    match m.slot.pin(gen) {
        Ok(loc) => {
            // SAFETY: pinned: no writer, mover or freer touches the bytes.
            let v = m.mem[loc as usize].with(|p| unsafe { *p });
            m.slot.unpin();
            Some(v)
        }
        Err(SlotError::Stale) => None,
        Err(e) => panic!("{e:?}"),
    }
}

/// A one-copy read, as `Pool::read` does it: alone if no one else reads.
fn read_once(m: &Model, gen: u16) -> Result<u64, SlotError> {
    let claim = m.slot.claim_copy(gen, true)?;
    let loc = match claim {
        Claim::Alone(w) => w.loc(),
        Claim::Shared(loc) => loc,
    };
    // SAFETY: claimed: no writer, mover or freer touches the bytes.
    let v = m.mem[loc as usize].with(|p| unsafe { *p });
    match claim {
        Claim::Alone(w) => m.slot.end_copy(w),
        Claim::Shared(_) => m.slot.unpin(),
    }
    Ok(v)
}

/// A one-copy write, as `Pool::write` does it.
fn write_once(m: &Model, gen: u16, v: u64) -> Result<(), SlotError> {
    let Claim::Alone(w) = m.slot.claim_copy(gen, false)? else { panic!("a write is never shared") };
    // SAFETY: claimed alone.
    m.mem[w.loc() as usize].with_mut(|p| unsafe { *p = v });
    m.slot.end_copy(w);
    Ok(())
}

/// Compaction: under the class lock, claim, copy from 0 to 1, publish.
fn migrate(m: &Model) -> bool {
    let _g = m.class_lock.lock();
    let Some(claimed) = m.slot.begin_move() else { return false };
    // SAFETY: claimed: no one else touches either place.
    let v = m.mem[0].with(|p| unsafe { *p });
    // SAFETY: as above.
    m.mem[1].with_mut(|p| unsafe { *p = v });
    m.slot.end_move(claimed, 1);
    true
}

/// Free: pin, take the class lock, free through the pin; on success the memory is
/// reused at once (written), as a released frame might be.
fn free(m: &Model, gen: u16) -> Result<(), SlotError> {
    let loc = m.slot.pin(gen)?;
    let _g = m.class_lock.lock();
    match m.slot.free_pinned(gen, 0) {
        Ok(()) => {
            // SAFETY: freed: no one can reach the bytes any more.
            m.mem[loc as usize].with_mut(|p| unsafe { *p = 0xDEAD });
            Ok(())
        }
        Err(e) => {
            m.slot.unpin();
            Err(e)
        }
    }
}

/// The dense layout's free that finds its lane's lock free: the lock first (the lane
/// is known from the slot's index), then one CAS frees the object unless someone holds
/// it; on success the memory is reused at once (written), as a released frame might be.
fn free_locked(m: &Model, gen: u16) -> Result<(), SlotError> {
    let _g = m.class_lock.lock();
    let loc = m.slot.free_locked(gen, 0)?;
    // SAFETY: freed: no one can reach the bytes any more.
    m.mem[loc as usize].with_mut(|p| unsafe { *p = 0xDEAD });
    Ok(())
}

/// The dense layout's free left for the lane lock's next holder: one CAS turns the word
/// PENDING unless someone holds the object (no pin first), the freer settles it once
/// named, and the next holder of the lock applies it; then the memory is reused at
/// once (written), as a released frame might be.
fn free_deferred(m: &Model, gen: u16) -> Result<(), SlotError> {
    let w = m.slot.defer_unpinned(gen)?;
    m.slot.settle(w);
    let _g = m.class_lock.lock();
    m.slot.free_pending(gen.wrapping_add(1), 0);
    // SAFETY: freed: no one can reach the bytes any more.
    m.mem[w.loc() as usize].with_mut(|p| unsafe { *p = 0xDEAD });
    Ok(())
}

#[test]
fn a_deferred_free_without_a_pin_racing_a_reader_never_frees_a_pinned_object() {
    free_racing_a_reader(free_deferred);
}

#[test]
fn a_deferred_free_without_a_pin_waits_out_a_write() {
    // As for the free under the lock: the write's copy claim is waited out.
    loom::model(|| {
        let m = model(Word::live(0, 0), 42);
        let m2 = m.clone();
        let writer = thread::spawn(move || write_once(&m2, 0, 7));
        let freed = free_deferred(&m, 0);
        let wrote = writer.join().unwrap();
        assert!(matches!(wrote, Ok(()) | Err(SlotError::Stale)), "{wrote:?}");
        assert_eq!(freed, Ok(()));
        assert_eq!(m.slot.load().state(), State::Free);
    });
}

#[test]
fn a_deferred_free_without_a_pin_refuses_a_stale_handle() {
    loom::model(|| {
        let m = model(Word::live(0, 0), 42);
        let m2 = m.clone();
        let other = thread::spawn(move || free_deferred(&m2, 0));
        let mine = free_deferred(&m, 0);
        let theirs = other.join().unwrap();
        // One of two frees of the same handle wins; the other finds it stale.
        assert!(matches!((mine, theirs), (Ok(()), Err(SlotError::Stale)) | (Err(SlotError::Stale), Ok(()))));
        assert!(m.slot.load().is_vacant());
    });
}

#[test]
fn a_free_without_a_pin_racing_a_reader_never_frees_a_pinned_object() {
    free_racing_a_reader(free_locked);
}

#[test]
fn a_free_without_a_pin_waits_out_a_write() {
    // A write's copy claim (COPYING) is waited out, never overtaken: the free's reuse
    // of the bytes never meets the copy (loom's cells would see it), and the write
    // either lands before the free or finds the handle stale.
    loom::model(|| {
        let m = model(Word::live(0, 0), 42);
        let m2 = m.clone();
        let writer = thread::spawn(move || write_once(&m2, 0, 7));
        let freed = free_locked(&m, 0);
        let wrote = writer.join().unwrap();
        assert!(matches!(wrote, Ok(()) | Err(SlotError::Stale)), "{wrote:?}");
        // The claim ends before the free's CAS, so the free is never refused.
        assert_eq!(freed, Ok(()));
        assert_eq!(m.slot.load().state(), State::Free);
    });
}

#[test]
fn a_free_without_a_pin_waits_out_a_one_copy_read() {
    // As for a write: a read that copies the object alone is waited out.
    loom::model(|| {
        let m = model(Word::live(0, 0), 42);
        let m2 = m.clone();
        let reader = thread::spawn(move || read_once(&m2, 0));
        let freed = free_locked(&m, 0);
        let read = reader.join().unwrap();
        assert!(matches!(read, Ok(42) | Err(SlotError::Stale)), "{read:?}");
        assert_eq!(freed, Ok(()));
        assert_eq!(m.slot.load().state(), State::Free);
    });
}

#[test]
fn a_free_without_a_pin_refuses_a_stale_handle() {
    loom::model(|| {
        let m = model(Word::live(0, 0), 42);
        let m2 = m.clone();
        let other = thread::spawn(move || free_locked(&m2, 0));
        let mine = free_locked(&m, 0);
        let theirs = other.join().unwrap();
        // One of two frees of the same handle wins; the other finds it stale.
        assert!(matches!((mine, theirs), (Ok(()), Err(SlotError::Stale)) | (Err(SlotError::Stale), Ok(()))));
    });
}

#[test]
fn a_read_racing_the_migration_of_its_object() {
    loom::model(|| {
        let m = model(Word::live(0, 0), 42);
        let m2 = m.clone();
        let mover = thread::spawn(move || migrate(&m2));
        assert_eq!(read(&m, 0), Some(42), "the reader sees the bytes, before or after the move");
        let moved = mover.join().unwrap();
        let w = m.slot.load();
        assert_eq!((w.state(), w.pins()), (State::Live, 0));
        assert_eq!(w.loc(), if moved { 1 } else { 0 });
        assert_eq!(read(&m, 0), Some(42));
    });
}

#[test]
fn a_free_racing_the_migration_of_the_same_object() {
    loom::model(|| {
        let m = model(Word::live(0, 0), 42);
        let m2 = m.clone();
        let mover = thread::spawn(move || migrate(&m2));
        let freed = free(&m, 0);
        mover.join().unwrap();
        // The mover never pins (a pin waits out its claim), so the free always
        // succeeds, before or after the move.
        assert_eq!(freed, Ok(()));
        let w = m.slot.load();
        assert_eq!((w.state(), w.gen()), (State::Free, 1));
        assert_eq!(read(&m, 0), None, "a freed handle is stale");
    });
}

/// `free` racing a reader of the same object: it never frees an object the reader
/// pins, and the reader sees the object's bytes or a stale handle.
fn free_racing_a_reader(free: fn(&Model, u16) -> Result<(), SlotError>) {
    loom::model(move || {
        let m = model(Word::live(0, 0), 42);
        let m2 = m.clone();
        let reader = thread::spawn(move || read(&m2, 0));
        let freed = free(&m, 0);
        let seen = reader.join().unwrap();
        match freed {
            // Freed first: the reader found the handle stale; or read before the free.
            Ok(()) => assert!(seen.is_none() || seen == Some(42)),
            // Refused: the reader held its pin; the object is intact and live.
            Err(e) => {
                assert_eq!(e, SlotError::Busy);
                assert_eq!(seen, Some(42));
                assert_eq!(m.slot.load().state(), State::Live);
            }
        }
    });
}

#[test]
fn a_free_racing_a_reader_never_frees_a_pinned_object() {
    free_racing_a_reader(free);
}

#[test]
fn release_of_a_zspage_while_a_reader_holds_a_pin() {
    // The zspage is released (its memory reused) only by the free of its last object;
    // a reader holding a pin across other work keeps that from happening.
    loom::model(|| {
        let m = model(Word::live(0, 0), 42);
        let loc = m.slot.pin(0).unwrap(); // a mapping held by this thread
        let m2 = m.clone();
        let freer = thread::spawn(move || free(&m2, 0));
        // SAFETY: pinned.
        let v = m.mem[loc as usize].with(|p| unsafe { *p });
        assert_eq!(v, 42);
        m.slot.unpin();
        let r = freer.join().unwrap();
        if r.is_err() {
            assert_eq!(m.slot.load().state(), State::Live, "refused: still live");
        }
    });
}

#[test]
fn malloc_publication_and_free_racing_compaction() {
    // malloc writes the object and publishes the slot under the class lock; a reader
    // that pins sees the bytes; a compaction and a free of the class race with it.
    loom::model(|| {
        let m = model(Word::free(0, 0), 0);
        let m2 = m.clone();
        let maker = thread::spawn(move || {
            let _g = m2.class_lock.lock();
            // SAFETY: not yet published: no one else can reach the bytes.
            m2.mem[0].with_mut(|p| unsafe { *p = 7 });
            m2.slot.set(Word::live(0, 0));
        });
        let m3 = m.clone();
        let mover = thread::spawn(move || migrate(&m3));
        if let Some(v) = read(&m, 0) {
            assert_eq!(v, 7, "a published object's bytes are visible");
        }
        maker.join().unwrap();
        mover.join().unwrap();
        assert_eq!(read(&m, 0), Some(7));
        assert_eq!(free(&m, 0), Ok(()));
    });
}

#[test]
fn a_write_and_a_one_copy_read_wait_for_each_other_and_never_overlap() {
    // The cell reports any overlap; the read sees one whole value; the write is never
    // refused (it waits out the read's copy).
    model_with_spins(|| {
        let m = model(Word::live(0, 0), 1);
        let writer = {
            let m = m.clone();
            thread::spawn(move || write_once(&m, 0, 2))
        };
        let seen = read_once(&m, 0).unwrap();
        assert!(seen == 1 || seen == 2);
        assert_eq!(writer.join().unwrap(), Ok(()), "a write waits out a copy, it is not refused");
        assert_eq!(read_once(&m, 0), Ok(2));
        assert_eq!(m.slot.load(), Word::live(0, 0));
    });
}

#[test]
fn two_writes_wait_for_each_other_and_never_overlap() {
    model_with_spins(|| {
        let m = model(Word::live(0, 0), 1);
        let writer = {
            let m = m.clone();
            thread::spawn(move || write_once(&m, 0, 2))
        };
        assert_eq!(write_once(&m, 0, 3), Ok(()));
        assert_eq!(writer.join().unwrap(), Ok(()));
        let v = read_once(&m, 0).unwrap();
        assert!(v == 2 || v == 3, "one write wholly after the other");
        assert_eq!(m.slot.load(), Word::live(0, 0));
    });
}

#[test]
fn a_writable_mapping_is_never_shared() {
    // A writable mapping on one thread; a read-only mapping, a write and a one-copy
    // read on another. Each of those either is refused (Busy) or runs wholly before
    // or after the writable mapping, which the cell checks.
    loom::model(|| {
        let m = model(Word::live(0, 0), 1);
        let other = {
            let m = m.clone();
            thread::spawn(move || {
                let mut done = 0;
                if let Ok(loc) = m.slot.pin(0) {
                    // SAFETY: a read-only mapping: pinned, shared with readers only.
                    let v = m.mem[loc as usize].with(|p| unsafe { *p });
                    assert!(v == 1 || v == 5, "a whole value");
                    m.slot.unpin();
                    done += 1;
                }
                match write_once(&m, 0, 9) {
                    Ok(()) => done += 1,
                    Err(e) => assert_eq!(e, SlotError::Busy),
                }
                match read_once(&m, 0) {
                    Ok(_) => done += 1,
                    Err(e) => assert_eq!(e, SlotError::Busy),
                }
                done
            })
        };
        match m.slot.claim_writer(0) {
            Ok(loc) => {
                assert_eq!(m.slot.pin(0), Err(SlotError::Busy), "no second mapping beside a writer");
                assert_eq!(m.slot.claim_writer(0), Err(SlotError::Busy));
                // SAFETY: the writable mapping holds the object alone.
                m.mem[loc as usize].with_mut(|p| unsafe { *p = 5 });
                m.slot.end_writer();
            }
            Err(e) => assert_eq!(e, SlotError::Busy, "refused while the other thread reads it"),
        }
        other.join().unwrap();
        let w = m.slot.load();
        assert_eq!((w.state(), w.pins()), (State::Live, 0), "every hold ended");
    });
}

#[test]
fn compactions_pass_over_the_slots_misses_no_object_of_a_drained_zspage() {
    // Dense compaction's pass over the handle table (`src/handle/locate.rs`) in miniature. The
    // lane's zspage Z (location 0) is drained under the lane lock; the slots are then
    // read without the lock, and the objects found in Z are moved (to location 1)
    // under the lock again, each after checking its slot still locates into Z. A
    // malloc and a free of the lane race with it. What must hold: the pass misses no
    // object of Z (malloc places nothing in a drained zspage), and a slot freed
    // meanwhile is not moved: Z ends empty unless an object in it was pinned.
    const Z: u64 = 0;
    struct Lane {
        drained: bool,
        in_z: u32,
    }
    struct Slots {
        slots: [Slot; 2],
        lane: Mutex<Lane>,
    }
    // SAFETY: only atomics and a mutex inside.
    unsafe impl Sync for Slots {}
    loom::model(|| {
        // Slot 0 is free; slot 1 holds an object in Z.
        let s = Arc::new(Slots {
            slots: [Slot::new(Word::free(0, 0)), Slot::new(Word::live(0, Z))],
            lane: Mutex::new(Lane { drained: false, in_z: 1 }),
        });
        let maker = {
            let s = s.clone();
            thread::spawn(move || {
                let mut lane = s.lane.lock().unwrap();
                let loc = if lane.drained { 1 } else { Z };
                lane.in_z += u32::from(loc == Z);
                s.slots[0].set(Word::live(0, loc));
            })
        };
        let freer = {
            let s = s.clone();
            thread::spawn(move || {
                let loc = s.slots[1].pin(0).unwrap();
                let mut lane = s.lane.lock().unwrap();
                match s.slots[1].free_pinned(0, 0) {
                    Ok(()) => lane.in_z -= u32::from(loc == Z),
                    Err(_) => s.slots[1].unpin(),
                }
            })
        };
        s.lane.lock().unwrap().drained = true;
        let in_z = |w: Word| w.state() != State::Free && w.loc() == Z;
        let found: Vec<usize> = (0..2).filter(|&i| in_z(s.slots[i].load())).collect();
        let mut lane = s.lane.lock().unwrap();
        let mut pinned = false;
        for i in found {
            if !in_z(s.slots[i].load()) {
                continue; // freed since the pass
            }
            match s.slots[i].begin_move() {
                Some(claimed) => {
                    s.slots[i].end_move(claimed, 1);
                    lane.in_z -= 1;
                }
                None => pinned = true,
            }
        }
        assert!(pinned || lane.in_z == 0, "the pass missed an object of the drained zspage");
        drop(lane);
        maker.join().unwrap();
        freer.join().unwrap();
        assert!(s.slots.iter().all(|sl| sl.load().state() == State::Free || sl.load().loc() != Z || pinned));
    });
}

/// Runs a model whose paths are longer than loom's default bound allows: threads that
/// spin (yielding) while another holds a word, or pools built by the library, which
/// do hundreds of loom operations before the threads start.
fn model_with_spins(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.max_branches = 100_000;
    b.check(f);
}

// ---------------------------------------------------------------------------------
// Whole pools: the library's own functions on loom's stand-ins.

fn model_pools(f: impl Fn() + Sync + Send + 'static) {
    model_with_spins(f)
}

/// The frame size the models' pools have: `ZS_TEST_FRAME_SIZE` in bytes, or 0 (the
/// system's page) where it is unset or empty, as `tests/common`'s `frame_size` reads it.
fn frame_size() -> usize {
    match std::env::var("ZS_TEST_FRAME_SIZE") {
        Ok(v) if !v.is_empty() => v.parse().expect("ZS_TEST_FRAME_SIZE is a number of bytes"),
        _ => 0,
    }
}

/// The default configuration with the models' frame size: what every model's pool is
/// built from.
fn config() -> Config {
    Config { frame_size: frame_size(), ..Config::default() }
}

/// Contents of version `v` of a one-frame object of `pool`.
fn frame_bytes(pool: &Pool, v: u8) -> Vec<u8> {
    (0..pool.info().frame_size as u32).map(|i| (i as u8).wrapping_mul(31) ^ v).collect()
}

/// A dense pool whose arena grew to 8 frames (one object of a frame per frame: two
/// zspages of 4 frames at 4 KiB frames, eight zspages of one at 64 KiB, the most a
/// dense zspage holds being 64 KiB) and whose upper half has died: frames 4 to 7 are
/// free, so a release of the arena lowers the top to 4 and gives back the side table's
/// words from 4 on. Returns the pool and the live objects.
fn pool_with_a_free_upper_half() -> (Pool, Vec<Handle>) {
    let p =
        Pool::with_config("loom", &Config { max_pages: 16, chain_size: 4, layout: Layout::Dense, ..config() }).unwrap();
    let frame = p.info().frame_size as usize;
    let hs: Vec<Handle> = (0..8).map(|_| p.malloc(frame, AllocFlags::default()).unwrap()).collect();
    for h in &hs[4..] {
        p.free(*h).unwrap();
    }
    // Frees in a row are left pending (`pool/deferred.rs`); the frames count applies
    // them, so that the upper half has died before the model's threads start.
    assert_eq!(p.total_pages(), 4);
    (p, hs[..4].to_vec())
}

#[test]
fn a_census_racing_the_release_of_the_arena_reads_no_word_given_back() {
    // The census walks the side table up to the top it read; the release lowers the
    // top and unmaps the table above it. Without the walk guard's exclusion, loom
    // finds the census reading word 4..7 after the release gave it back (the stand-in
    // panics where the real table would fault).
    model_pools(|| {
        let (p, _live) = pool_with_a_free_upper_half();
        let p = Arc::new(p);
        let releaser = {
            let p = p.clone();
            thread::spawn(move || p.release_address_space())
        };
        let c = p.census();
        assert!(c.top == 4 || c.top == 8, "the top before or after the release: {}", c.top);
        assert_eq!((c.zspage, c.transit), (4, 0), "the four live frames, nothing changing");
        assert_eq!(c.free, c.top - 4);
        assert!(releaser.join().unwrap() > 0, "the arena's tail was released");
        assert_eq!(p.census().top, 4);
        p.check().unwrap();
    });
}

/// A kernel-layout pool with one live one-frame object (the huge class) in frame 1
/// and frame 0 free, so a defragmentation moves it to frame 0.
fn pool_with_a_movable_frame() -> (Pool, Handle) {
    let p = Pool::with_config("loom", &Config { max_pages: 8, layout: Layout::Kernel, ..config() }).unwrap();
    let size = p.huge_class_size();
    let a = p.malloc(size, AllocFlags::default()).unwrap();
    let b = p.malloc(size, AllocFlags::default()).unwrap();
    p.write(b, &frame_bytes(&p, 1)[..size]).unwrap();
    p.free(a).unwrap();
    (p, b)
}

/// Builds a pool with a movable frame (above), runs `other` on a new thread and `this`
/// on this one, joins, and checks the pool; returns the pool, the object and what
/// `other` returned.
fn race_on_a_movable_frame<R: Send + 'static>(
    other: fn(&Pool, Handle) -> R,
    this: impl FnOnce(&Pool, Handle),
) -> (Arc<Pool>, Handle, R) {
    let (p, h) = pool_with_a_movable_frame();
    let p = Arc::new(p);
    let t = {
        let p = p.clone();
        thread::spawn(move || other(&p, h))
    };
    this(&p, h);
    let r = t.join().unwrap();
    p.check().unwrap();
    (p, h, r)
}

#[test]
fn a_defragmentation_racing_a_reader_of_the_frame_it_moves() {
    // The frame holding the object moves while another thread reads the object (one
    // copy): every access to either frame's bytes is checked against the copy, the
    // reader sees the object's bytes wherever they are, and the move either happens or
    // finds the object held (it skips it, it does not wait).
    model_pools(|| {
        let (_, _, moved) = race_on_a_movable_frame(
            |p, _| p.defragment(),
            |p, h| {
                let mut out = vec![0u8; p.huge_class_size()];
                p.read(h, &mut out).unwrap();
                assert!(out == frame_bytes(p, 1)[..out.len()]);
            },
        );
        assert_eq!(moved.frames_moved + moved.frames_busy, 1);
    });
}

#[test]
fn a_defragmentation_racing_a_writer_of_the_frame_it_moves() {
    // As above with a write: it lands before the copy (and moves with the frame) or
    // after it (in the new frame); it is never lost.
    model_pools(|| {
        let (p, h, _) = race_on_a_movable_frame(
            |p, _| p.defragment(),
            |p, h| p.write(h, &frame_bytes(p, 2)[..p.huge_class_size()]).unwrap(),
        );
        let mut out = vec![0u8; p.huge_class_size()];
        p.read(h, &mut out).unwrap();
        assert!(out == frame_bytes(&p, 2)[..out.len()], "the write survived the move");
    });
}

#[test]
fn a_census_racing_a_defragmentation_sees_the_frame_in_one_place() {
    // The scanner reads each frame's word and its descriptor without any lock while
    // migration rewrites both: a frame is counted in its zspage, free, or in transit,
    // and the live frame is never counted in both places.
    let huge = |kinds: &[FrameKind]| kinds.iter().filter(|k| matches!(k, FrameKind::Huge { .. })).count();
    model_pools(move || {
        let (p, _, _) = race_on_a_movable_frame(
            |p, _| p.defragment(),
            |p, _| {
                let kinds = p.frame_kinds();
                // Seen before the move, after it, or (between its two word updates)
                // in transit or not at all; never in both frames.
                assert!(huge(&kinds) <= 1, "the live frame counted twice: {kinds:?}");
            },
        );
        assert_eq!(huge(&p.frame_kinds()), 1);
    });
}

#[test]
fn a_free_racing_a_defragmentation_of_its_frame() {
    // The object is freed while its frame moves: the free waits out the move or the
    // move finds the frame gone; either way the pool ends empty and sound.
    model_pools(|| {
        let (p, h, _) = race_on_a_movable_frame(|p, _| p.defragment(), |p, h| assert_eq!(p.free(h), Ok(())));
        assert_eq!(p.total_pages(), 0);
        assert!(matches!(p.free(h), Err(Error::Invalid(_))), "a freed handle is stale");
    });
}

#[test]
fn the_checker_passes_while_a_zspage_dies() {
    // The free of a zspage's last object retires it under its class lock and gives
    // its frames back after: the checker, at any point, sees a sound pool.
    model_pools(|| {
        let (_, _, freed) = race_on_a_movable_frame(|p, h| p.free(h), |p, _| assert_eq!(p.check(), Ok(())));
        assert_eq!(freed, Ok(()));
    });
}

#[test]
fn the_checker_passes_while_a_defragmentation_takes_and_moves_frames() {
    // Defragmentation takes a free frame (counted as taken), moves the object's frame
    // into it, retires the old frame through the epoch and shrinks the arena; the
    // checker, which does not take the compaction lock, sees a sound pool throughout.
    model_pools(|| {
        race_on_a_movable_frame(|p, _| p.defragment(), |p, _| assert_eq!(p.check(), Ok(())));
    });
}

/// A dense pool with two objects of 100 bytes, in the lane of the thread that made
/// them (this one), one zspage; another thread frees the first while this one runs
/// `this` on the pool and the second. Every free returns Ok and leaves its handle
/// stale, whether it found the lane lock free or left the free pending. Returns the
/// pool and what `this` returned.
fn race_a_free_of_the_first<R>(this: impl FnOnce(&Pool, Handle) -> R) -> (Arc<Pool>, R) {
    let p =
        Pool::with_config("loom", &Config { max_pages: 8, chain_size: 4, layout: Layout::Dense, ..config() }).unwrap();
    let hs: Vec<Handle> = (0..2).map(|_| p.malloc(100, AllocFlags::default()).unwrap()).collect();
    let p = Arc::new(p);
    let t = {
        let p = p.clone();
        let h = hs[0];
        thread::spawn(move || {
            assert_eq!(p.free(h), Ok(()));
            assert!(matches!(p.free(h), Err(Error::Invalid(_))), "stale at return");
        })
    };
    let r = this(&p, hs[1]);
    t.join().unwrap();
    (p, r)
}

#[test]
fn two_frees_in_one_lane_take_effect_whoever_holds_the_lock() {
    // Two threads free objects of one lane: one takes the lane lock, the other finds
    // it held and leaves its free pending for the lock's next holder. In every
    // interleaving both handles are stale at return, and once applied (by the
    // statistics) the lane is empty and sound.
    model_pools(|| {
        let (p, ()) = race_a_free_of_the_first(|p, h| {
            assert_eq!(p.free(h), Ok(()));
            assert!(matches!(p.free(h), Err(Error::Invalid(_))), "stale at return");
        });
        assert_eq!(p.info().live_objects, 0);
        assert_eq!(p.total_pages(), 0, "the emptied zspage died");
        p.check().unwrap();
    });
}

#[test]
fn a_free_left_pending_while_a_malloc_holds_the_lane_is_applied_and_reused() {
    // A free racing a malloc (and its write) in the freed object's lane: the free
    // waits for nothing, the malloc's object is whole, and the freed bytes are
    // applied by the malloc or by the statistics after.
    model_pools(|| {
        let (p, h) = race_a_free_of_the_first(|p, _| {
            let h = p.malloc(100, AllocFlags::default()).unwrap();
            p.write(h, &[7u8; 100]).unwrap();
            h
        });
        let mut out = [0u8; 100];
        p.read(h, &mut out).unwrap();
        assert_eq!(out, [7u8; 100]);
        assert_eq!(p.info().live_objects, 2);
        p.check().unwrap();
    });
}

#[test]
fn the_checker_passes_while_a_free_is_left_pending() {
    // The checker holds every lane lock while a free of one of their objects finds
    // the lock held and leaves the free pending: the checker counts the object, whose
    // slot is already stale, as its zspage's, and raises no alarm.
    model_pools(|| {
        let (p, ()) = race_a_free_of_the_first(|p, _| assert_eq!(p.check(), Ok(())));
        assert_eq!(p.info().live_objects, 1);
        p.check().unwrap();
    });
}

#[test]
fn the_checker_passes_while_a_free_finds_every_entry_taken() {
    // The models' lanes have one entry for pending frees. Two threads free objects of
    // a lane while the checker holds every lane lock: one names its slot in the entry
    // (its word in flight, then settled), the other finds the entry taken and waits
    // for the lock with its word in flight, then applies its own free. The checker
    // tells both from a lost free: no alarm in any interleaving, and nothing is lost.
    model_pools(|| {
        let p = Pool::with_config("loom", &Config { max_pages: 8, chain_size: 4, layout: Layout::Dense, ..config() })
            .unwrap();
        let hs: Vec<Handle> = (0..3).map(|_| p.malloc(100, AllocFlags::default()).unwrap()).collect();
        let p = Arc::new(p);
        let freers: Vec<_> = hs[..2]
            .iter()
            .map(|&h| {
                let p = p.clone();
                thread::spawn(move || assert_eq!(p.free(h), Ok(())))
            })
            .collect();
        assert_eq!(p.check(), Ok(()));
        for t in freers {
            t.join().unwrap();
        }
        assert_eq!(p.info().live_objects, 1, "no free lost");
        p.check().unwrap();
    });
}

// ---------------------------------------------------------------------------------
// The watch on the arena's bytes (`src/sync.rs`) at the models' frame size: a cell
// per 4 KiB, so a frame of 16 or 64 KiB is several cells, and an access reports every
// cell of its byte range. These check the watch itself, with addresses that name
// bytes and are never dereferenced (the watch only turns them into cells).

/// The first byte of a frame, as the watch sees it: an address aligned to every frame
/// size, named and not dereferenced.
const A_FRAME: usize = 1 << 30;

/// The models' frame size in bytes, from a pool built with it (inside a model: a pool
/// is made of loom's primitives).
fn model_frame() -> usize {
    Pool::with_config("loom", &Config { max_pages: 4, ..config() }).unwrap().info().frame_size as usize
}

/// Runs `a` on a new thread and `b` on this one, with nothing ordering them.
fn unordered(a: fn(usize), b: fn(usize)) {
    loom::model(move || {
        let frame = model_frame();
        let t = thread::spawn(move || a(frame));
        b(frame);
        t.join().unwrap();
    });
}

#[test]
#[should_panic(expected = "Causality violation")]
fn the_watch_sees_a_copy_of_a_whole_frame_race_a_read_of_its_last_bytes() {
    // A migration's copy writes the whole frame; an unordered read of its last 8 bytes
    // (in the frame's last 4 KiB: cell 15 of a 64 KiB frame) is a race loom must see.
    unordered(
        |frame| track_write(A_FRAME as *const u8, frame),
        |frame| track_read((A_FRAME + frame - 8) as *const u8, 8),
    );
}

#[test]
#[should_panic(expected = "Causality violation")]
fn the_watch_sees_a_write_of_a_frames_last_byte_race_a_read_of_the_frame() {
    unordered(
        |frame| track_write((A_FRAME + frame - 1) as *const u8, 1),
        |frame| track_read(A_FRAME as *const u8, frame),
    );
}

#[test]
#[should_panic(expected = "Causality violation")]
fn the_watch_sees_a_race_across_two_frames() {
    // An object straddling two frames, written, against a read of the next frame's
    // first bytes.
    unordered(
        |frame| track_write((A_FRAME + frame - 100) as *const u8, 200),
        |frame| track_read((A_FRAME + frame) as *const u8, 1),
    );
}

#[test]
fn the_watch_sees_no_race_between_writes_to_different_frames() {
    // Two frames side by side, written whole by two threads at once: no race, at every
    // frame size (no cell spans two frames).
    unordered(
        |frame| track_write(A_FRAME as *const u8, frame),
        |frame| track_write((A_FRAME + frame) as *const u8, frame),
    );
}

// ---------------------------------------------------------------------------------
// The lane lock (`src/sync/lane.rs`): the library's own, on loom's atomics, its value a
// loom cell taken for writing while a guard lives, its futex wait a yield.

/// A counter under the lock, read and written back by each holder (so that two holders
/// at once, or a holder not ordered after the last, is a race loom reports, or a lost
/// increment the model's assertion catches).
fn bump(lock: &LaneLock<u32>) {
    let mut g = lock.lock();
    let v = *g;
    *g = v + 1;
}

#[test]
fn the_lane_lock_excludes_and_orders_its_holders() {
    model_with_spins(|| {
        let lock = Arc::new(LaneLock::new(0u32));
        let other = {
            let lock = lock.clone();
            thread::spawn(move || bump(&lock))
        };
        bump(&lock);
        other.join().unwrap();
        assert_eq!(*lock.lock(), 2);
    });
}

#[test]
fn the_lane_lock_try_lock_against_lock() {
    model_with_spins(|| {
        let lock = Arc::new(LaneLock::new(0u32));
        let other = {
            let lock = lock.clone();
            thread::spawn(move || match lock.try_lock() {
                Some(mut g) => {
                    let v = *g;
                    *g = v + 1;
                    1
                }
                None => 0,
            })
        };
        bump(&lock);
        let tried = other.join().unwrap();
        assert_eq!(*lock.lock(), 1 + tried);
    });
}

/// The holder unlocks (plainly, or fairly, handing the lock over) while the other
/// thread registers to sleep on it and waits: every interleaving ends (the model's
/// wait is bounded, as the futex wait with its time-out), with both increments.
fn unlock_racing_a_sleeper(fair: bool) {
    model_with_spins(move || {
        let lock = Arc::new(LaneLock::new(0u32));
        let mut g = lock.lock();
        let other = {
            let lock = lock.clone();
            thread::spawn(move || bump(&lock))
        };
        let v = *g;
        *g = v + 1;
        if fair {
            g.unlock_fair();
            // Back at once, as the compactor is.
            bump(&lock);
        } else {
            drop(g);
        }
        other.join().unwrap();
        assert_eq!(*lock.lock(), if fair { 3 } else { 2 });
    });
}

#[test]
fn the_lane_lock_unlock_racing_a_sleepers_registration() {
    unlock_racing_a_sleeper(false);
}

#[test]
fn the_lane_lock_fair_unlock_racing_a_sleepers_registration() {
    unlock_racing_a_sleeper(true);
}
