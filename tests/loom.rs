//! Loom models of the handle slot protocol (`src/slot.rs`): every interleaving of a
//! few threads is explored, and loom's cells report any unsynchronised access to the
//! object's bytes. Run with `make test-loom` (RUSTFLAGS="--cfg loom").
//!
//! The object's bytes live at one of two locations, modelled as loom cells; the class
//! lock that serialises free and moves is a loom mutex. What must hold: a reader that
//! pins sees the object's current bytes and never races with a copy, a free or the
//! reuse of the memory; a free never frees a pinned object; nothing is lost. The last
//! model is dense compaction's pass over the slots without the lane lock
//! (`src/locate.rs`): it must miss no object of the zspages it drains.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;
use zsmalloc::slot::{Slot, SlotError, State, Word};

struct Model {
    slot: Slot,
    /// The two places the object can be.
    mem: [UnsafeCell<u64>; 2],
    class_lock: Mutex<()>,
}

// SAFETY: the cells are accessed only as the protocol allows; loom checks that claim.
unsafe impl Sync for Model {}
// SAFETY: as above.
unsafe impl Send for Model {}

fn model(word: Word, at0: u64) -> Arc<Model> {
    Arc::new(Model {
        slot: Slot::new(word),
        mem: [UnsafeCell::new(at0), UnsafeCell::new(0)],
        class_lock: Mutex::new(()),
    })
}

/// Reader: pin, read the object's bytes where the slot says, unpin.
fn read(m: &Model, gen: u16) -> Option<u64> {
    match m.slot.pin(gen) {
        Ok(loc) => {
            let v = m.mem[loc as usize].with(|p| unsafe { *p });
            m.slot.unpin();
            Some(v)
        }
        Err(SlotError::Stale) => None,
        Err(e) => panic!("{e:?}"),
    }
}

/// Compaction: under the class lock, claim, copy from 0 to 1, publish.
fn migrate(m: &Model) -> bool {
    let _g = m.class_lock.lock().unwrap();
    let Some(claimed) = m.slot.begin_move() else { return false };
    let v = m.mem[0].with(|p| unsafe { *p });
    m.mem[1].with_mut(|p| unsafe { *p = v });
    m.slot.end_move(claimed, 1);
    true
}

/// Free: pin, take the class lock, free through the pin; on success the memory is
/// reused at once (written), as a released frame might be.
fn free(m: &Model, gen: u16) -> Result<(), SlotError> {
    let loc = m.slot.pin(gen)?;
    let _g = m.class_lock.lock().unwrap();
    match m.slot.free_pinned(gen, 0) {
        Ok(()) => {
            m.mem[loc as usize].with_mut(|p| unsafe { *p = 0xDEAD });
            Ok(())
        }
        Err(e) => {
            m.slot.unpin();
            Err(e)
        }
    }
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
        // The free either went through (the object was not pinned by anyone else) or
        // was refused because the mover's claim... cannot pin: the mover never pins,
        // so the free always succeeds, before or after the move.
        assert_eq!(freed, Ok(()));
        let w = m.slot.load();
        assert_eq!((w.state(), w.gen()), (State::Free, 1));
        assert_eq!(read(&m, 0), None, "a freed handle is stale");
    });
}

#[test]
fn a_free_racing_a_reader_never_frees_a_pinned_object() {
    loom::model(|| {
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
fn release_of_a_zspage_while_a_reader_holds_a_pin() {
    // The zspage is released (its memory reused) only by the free of its last object;
    // a reader holding a pin across other work keeps that from happening.
    loom::model(|| {
        let m = model(Word::live(0, 0), 42);
        let loc = m.slot.pin(0).unwrap(); // a mapping held by this thread
        let m2 = m.clone();
        let freer = thread::spawn(move || free(&m2, 0));
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
            let _g = m2.class_lock.lock().unwrap();
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

/// Frame migration in miniature: the object lives in frame 0 (mem[0]); migration
/// claims it, copies the frame to frame 1, rewrites the descriptor's frame entry and
/// both side-table words, and publishes the new location. A reader and a scanner race
/// with it; loom reports any unsynchronised access to the frames' bytes.
struct Frames {
    m: Arc<Model>,
    /// Side-table words of frames 0 and 1: 1 = in the zspage, 0 = free.
    side: [loom::sync::atomic::AtomicU64; 2],
    /// The descriptor's entry for the frame: which pfn holds it.
    desc_frame: loom::sync::atomic::AtomicU64,
}

fn frames() -> Arc<Frames> {
    use loom::sync::atomic::AtomicU64;
    Arc::new(Frames {
        m: model(Word::live(0, 0), 42),
        side: [AtomicU64::new(1), AtomicU64::new(0)],
        desc_frame: AtomicU64::new(0),
    })
}

fn migrate_frame(f: &Frames) -> bool {
    use loom::sync::atomic::Ordering::*;
    let _g = f.m.class_lock.lock().unwrap();
    let Some(claimed) = f.m.slot.begin_move() else { return false };
    let v = f.m.mem[0].with(|p| unsafe { *p });
    f.m.mem[1].with_mut(|p| unsafe { *p = v });
    f.desc_frame.store(1, Relaxed);
    f.side[1].store(1, Release);
    f.side[0].store(0, Release);
    f.m.slot.end_move(claimed, 1);
    true
}

/// The scanner's rule: a frame is in use when its word says so, the descriptor lists
/// it, and the word did not change meanwhile; otherwise it is free or in transit.
fn scan(f: &Frames) -> [Option<bool>; 2] {
    use loom::sync::atomic::Ordering::*;
    let mut out = [None, None];
    for pfn in 0..2u64 {
        let w = f.side[pfn as usize].load(Acquire);
        out[pfn as usize] = if w == 0 {
            Some(false)
        } else if f.desc_frame.load(Relaxed) == pfn && f.side[pfn as usize].load(Acquire) == w {
            Some(true)
        } else {
            None // in transit
        };
    }
    out
}

#[test]
fn a_scan_and_a_migration_racing_a_read_on_the_same_frame() {
    loom::model(|| {
        let f = frames();
        let f2 = f.clone();
        let mover = thread::spawn(move || migrate_frame(&f2));
        let f3 = f.clone();
        let scanner = thread::spawn(move || scan(&f3));
        assert_eq!(read(&f.m, 0), Some(42));
        let moved = mover.join().unwrap();
        let seen = scanner.join().unwrap();
        // A frame the scanner calls in use was, at that moment, the object's frame:
        // before the move only frame 0 can be, after it only frame 1.
        if !moved {
            assert_ne!(seen[1], Some(true));
        }
        assert!(seen.iter().any(|s| *s != Some(false)) || moved, "the object's frame is never seen free-only");
        assert_eq!(read(&f.m, 0), Some(42));
    });
}

#[test]
fn a_migration_racing_a_free_on_the_same_frame() {
    loom::model(|| {
        let f = frames();
        let f2 = f.clone();
        let mover = thread::spawn(move || migrate_frame(&f2));
        let freed = free(&f.m, 0);
        mover.join().unwrap();
        assert_eq!(freed, Ok(()));
        assert_eq!(read(&f.m, 0), None);
        // Exactly one frame is the zspage's afterwards.
        use loom::sync::atomic::Ordering::Relaxed;
        assert_eq!(f.side[0].load(Relaxed) + f.side[1].load(Relaxed), 1);
    });
}

/// Dense compaction's pass over the handle table (`src/locate.rs`) in miniature. The
/// lane's zspage Z (location 0) is drained under the lane lock; the slots are then
/// read without the lock, and the objects found in Z are moved (to location 1) under
/// the lock again, each after checking its slot still locates into Z. A malloc and a
/// free of the lane race with it. What must hold: the pass misses no object of Z
/// (malloc places nothing in a drained zspage), and a slot freed meanwhile is not
/// moved: Z ends empty unless an object in it was pinned.
#[test]
fn compactions_pass_over_the_slots_misses_no_object_of_a_drained_zspage() {
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
