//! The invariant checker behind `zs_pool_check`: walks every structure of the pool
//! and reports the first broken invariant.
//!
//! It must pass whenever the pool is sound, whatever runs meanwhile, so it looks only
//! at what it can see as one consistent cut:
//!
//! - it takes every class lock, in ascending order: no malloc, free, compaction or
//!   migration is half done, and the zspages, their objects, the slots of those
//!   objects and the free-slot lists are at rest. Readers, writers and mappers go on,
//!   so an object's slot may be pinned, claimed for a copy or mapped writable: the
//!   checker asks only that it holds the object where the zspage has it;
//! - it then takes the frame accounting (`FrameSource::account`) under the frame
//!   lock: the equation of `frames/mod.rs` holds in that cut, and its `held` count, which
//!   changes only under a class lock, must be exactly the frames of the zspages found.
//!
//! It does not take the compaction lock (so a long compaction does not hold it up, nor
//! it a compaction): frames a defragmentation has taken and not yet used are counted
//! apart (`taken`), and everything compaction and migration change is under a class
//! lock. For tests and debugging: it costs time proportional to the pool.
//!
//! Its working sets (every slot and every frame it has seen) are on the heap, which
//! may be spent when the pool's arena has taken the address space left (a full pool
//! under `RLIMIT_AS`). It asks for them fallibly, and first for a block of their
//! whole size, which it gives back at once: when the heap cannot have them, the
//! check fails with [`CheckError::NoMemory`] (`ENOMEM` from `zs_pool_check`) before it has
//! taken a lock, rather than aborting the process halfway.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use crate::frames::side::FrameType;
use crate::handle::slot::Word;
use crate::layout::dense::{NR_LISTS, TOP_BUCKET};
use crate::layout::zspage::ZsPage;
use crate::pool::PoolCore;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// Why [`PoolCore::check`] gives no pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// An invariant does not hold: which one (`zs_pool_check`: `EUCLEAN`).
    Broken(String),
    /// The heap cannot hold the walk's working sets: no verdict on the pool
    /// (`zs_pool_check`: `ENOMEM`). Made without allocating.
    NoMemory,
}

impl From<String> for CheckError {
    fn from(msg: String) -> CheckError {
        CheckError::Broken(msg)
    }
}

impl CheckError {
    /// The message: the broken invariant, or that memory ran out.
    pub fn message(&self) -> &str {
        match self {
            CheckError::Broken(msg) => msg,
            CheckError::NoMemory => "no memory for the checker's working sets",
        }
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CheckError {}

/// Heap bytes the checker may need per handle slot and per frame, at most: a slot is in
/// two sets of `u32` (its owner, its class) and, in the dense layout, in the located
/// objects; a frame in two sets and the located frames. A hash set of `u32` takes up to
/// 2 x (4 + 1) bytes per entry just after it grows.
const CHECK_BYTES_PER_ENTRY: usize = 40;

impl PoolCore {
    /// Checks every invariant; `Err` names the first that does not hold, or says
    /// that the heap cannot hold the walk's working sets.
    pub fn check(&self) -> Result<(), CheckError> {
        // Frees pending for a lock when the check begins are applied; those left while
        // it holds the locks are objects still in their zspages, whose slots are
        // PENDING (`pool/deferred.rs`).
        self.drain_all();
        // The working sets' room, asked for at once and given back: a heap that cannot
        // have it now will most likely not give it piece by piece either (and a
        // failed allocation aborts). The sets below are then reserved fallibly.
        let entries = self.handles().used() + self.frames().top();
        let mut room: Vec<u8> = Vec::new();
        if room.try_reserve_exact(entries.saturating_mul(CHECK_BYTES_PER_ENTRY)).is_err() {
            return Err(CheckError::NoMemory);
        }
        drop(room);
        let guards: Vec<_> = self.classes().iter().map(|c| c.state.lock()).collect();
        let acc = self.frames().account();
        let mut frames_in_zspages: HashSet<u32> = HashSet::new();
        let mut live_objects = 0usize;
        let mut free_slots = 0usize;
        let used_slots = self.handles().used();
        let shift = self.frames().shift();
        let mut slot_owner: HashSet<u32> = HashSet::new();
        let mut free_frames = HashSet::new();
        if frames_in_zspages.try_reserve(acc.held).is_err()
            || slot_owner.try_reserve(used_slots).is_err()
            || free_frames.try_reserve(acc.free.len()).is_err()
        {
            return Err(CheckError::NoMemory);
        }
        // Zspages that keep no object list (dense) have as objects the slots that
        // locate into their frames (every lock is held, so the pass is exact).
        let located = self.layout().locate(self.handles(), self.frames().shift(), || {
            let mut frames: Vec<(u32, usize)> = Vec::new();
            for st in &guards {
                // Bounded: the walk below checks that the lists end.
                for g in 0..NR_LISTS {
                    for zs in st.lists.list(g).take(1 << 24) {
                        // SAFETY: list members are live descriptors; we hold the lock.
                        frames.extend(unsafe { &*zs }.frame_list().map(|pfn| (pfn, zs as usize)));
                    }
                }
            }
            frames
        });

        for (ci, (class, st)) in self.classes().iter().zip(&guards).enumerate() {
            let spec = &class.spec;
            let mut requested = 0usize;
            let mut live = 0usize;
            let mut zspages = 0usize;
            let mut body_bytes = 0usize;
            let mut drainable = 0usize;
            // The PENDING objects of the class, and whether each is in flight.
            let mut pending: Vec<(u32, bool)> = Vec::new();
            // The slots of the class's objects.
            let mut of_class: HashSet<u32> = HashSet::new();
            // Relaxed: written under the lock we hold.
            if of_class.try_reserve(class.live.load(Ordering::Relaxed)).is_err() {
                return Err(CheckError::NoMemory);
            }
            for g in 0..NR_LISTS {
                let mut n = 0usize;
                let mut prev: *mut ZsPage = std::ptr::null_mut();
                let mut zs = st.lists.head(g);
                while !zs.is_null() {
                    n += 1;
                    ensure!(n <= 1 << 24, "class {ci}: group {g} list does not end");
                    // SAFETY: list members are live descriptors of this class; we hold
                    // its lock.
                    let (z, s) = unsafe { (&*zs, (*zs).state()) };
                    ensure!(s.prev == prev, "class {ci}: broken back link in group {g}");
                    ensure!(z.class as usize == ci, "class {ci}: zspage of class {} on its list", z.class);
                    ensure!(s.group as usize == g, "class {ci}: zspage on list {g} says group {}", s.group);
                    // The objects, and the body's own invariants against them.
                    let found = located.get(&(zs as usize)).map_or(&[][..], |v| v);
                    let objects = s.body.objects(z, spec, self.handles(), found, shift);
                    s.body
                        .check(spec, z.nframes as usize, g, &objects, shift)
                        .map_err(|e| CheckError::Broken(format!("class {ci}: {e}")))?;
                    body_bytes += s.body.meta_bytes();
                    drainable += s.body.drainable();
                    // Frames and their side-table words.
                    let ty = if spec.is_huge() { FrameType::Huge } else { FrameType::Zspage };
                    for (k, pfn) in z.frame_list().enumerate() {
                        ensure!((pfn as usize) < acc.top, "class {ci}: pfn {pfn} above the arena top {}", acc.top);
                        ensure!(frames_in_zspages.insert(pfn), "pfn {pfn} in two zspages");
                        // SAFETY: a frame of a zspage on a list of a class whose lock we
                        // hold: held, so its word stays mapped.
                        let w = unsafe { self.frames().side().get(pfn) };
                        ensure!(
                            w.frame_type() == ty && w.index() == k && ZsPage::of(w) == zs,
                            "pfn {pfn}: side-table word {:#x} is not ({ty:?}, {k}, its zspage)",
                            w.raw()
                        );
                    }
                    // Allocated objects and their slots.
                    for o in &objects {
                        let (idx, size, off) = (o.idx, o.size, o.off);
                        ensure!(size >= 1 && size <= spec.usable(), "class {ci}: object of {size} bytes");
                        ensure!((idx as usize) < used_slots, "class {ci}: object names slot {idx}, never issued");
                        ensure!(slot_owner.insert(idx), "slot {idx} owned by two objects");
                        // SAFETY: below the high-water mark.
                        let w = unsafe { self.handles().slot_unchecked(idx) }.load();
                        // Held by a reader, a writer or a mapping, or PENDING: still the
                        // object's (if its free is not lost: see below).
                        ensure!(!w.is_vacant(), "slot {idx} of a live object is free");
                        if w.is_pending() {
                            pending.push((idx, w.is_in_flight()));
                        }
                        of_class.insert(idx);
                        self.check_owner(ci, idx)?;
                        let loc = z.loc_of(off, shift);
                        ensure!(w.loc() == loc, "slot {idx} locates {:#x}, object is at {loc:#x}", w.loc());
                        requested += size;
                    }
                    live += objects.len();
                    zspages += 1;
                    prev = zs;
                    zs = s.next;
                }
                ensure!(n == st.lists.count(g), "class {ci}: group {g} counts {} but holds {n}", st.lists.count(g));
            }
            self.check_pending(ci, &of_class, &pending)?;
            // Relaxed: written under the lock we hold.
            ensure!(class.live.load(Ordering::Relaxed) == live, "class {ci}: live count is off");
            ensure!(class.requested.load(Ordering::Relaxed) == requested, "class {ci}: requested bytes are off");
            ensure!(class.zspages.load(Ordering::Relaxed) == zspages, "class {ci}: zspage count is off");
            ensure!(class.body_bytes.load(Ordering::Relaxed) == body_bytes, "class {ci}: body bytes are off");
            ensure!(
                !class.counts_drainable.load(Ordering::Relaxed)
                    || class.drainable.load(Ordering::Relaxed) == drainable as u32,
                "class {ci}: drainable bytes are off"
            );
            for g in 0..TOP_BUCKET {
                ensure!(
                    (st.lists.nonempty() >> g & 1 == 1) != st.lists.head(g).is_null(),
                    "class {ci}: list bitmap is off at {g}"
                );
            }
            live_objects += live;
            // The class's free-slot list.
            let mut next = st.free_slot;
            while next != 0 {
                let idx = (next - 1) as u32;
                ensure!((idx as usize) < used_slots, "class {ci}: free slot {idx} never issued");
                ensure!(slot_owner.insert(idx), "slot {idx} is both free and used, or free twice");
                // SAFETY: below the high-water mark.
                let w: Word = unsafe { self.handles().slot_unchecked(idx) }.load();
                ensure!(w.is_vacant(), "free-listed slot {idx} is {w:?}");
                self.check_owner(ci, idx)?;
                free_slots += 1;
                next = w.loc();
            }
        }
        ensure!(
            live_objects + free_slots == used_slots,
            "{live_objects} live + {free_slots} free slots != {used_slots} issued (a slot was lost)"
        );
        // Frames: held ones are in zspages, the others are in one of the other places
        // of the equation, once each.
        ensure!(
            frames_in_zspages.len() == acc.held,
            "{} frames in zspages, {} counted held",
            frames_in_zspages.len(),
            acc.held
        );
        for &pfn in &acc.free {
            ensure!(free_frames.insert(pfn), "free frame {pfn} is listed twice");
            ensure!(!frames_in_zspages.contains(&pfn), "free frame {pfn} is in a zspage");
            ensure!((pfn as usize) < acc.top, "free frame {pfn} above the arena top {}", acc.top);
        }
        if let Some(pfn) = acc.free_with_word {
            return Err(format!("free frame {pfn} has a side-table word").into());
        }
        ensure!(
            acc.held + acc.taken + acc.free.len() + acc.discarding + acc.retiring == acc.top - acc.bottom,
            "frames lost: {} held + {} taken + {} free + {} discarding + {} retiring != top {} - bottom {}",
            acc.held,
            acc.taken,
            acc.free.len(),
            acc.discarding,
            acc.retiring,
            acc.top,
            acc.bottom
        );
        drop(guards);
        Ok(())
    }

    /// Checks that slot `idx`, holding an object of class `ci` or on its free-slot
    /// list, is of a batch that class took, where the table keeps owners: frees find
    /// their lane by it (`handle/table.rs`).
    fn check_owner(&self, ci: usize, idx: u32) -> Result<(), String> {
        // SAFETY: the callers checked `idx` below the high-water mark.
        if let Some(owner) = unsafe { self.handles().owner(idx) } {
            ensure!(owner == ci, "slot {idx} of class {ci} is of a batch of class {owner}");
        }
        Ok(())
    }

    /// Checks that no free of class `ci` is lost: that each PENDING object of the
    /// class will be applied. `of_class` holds the slots of the class's objects,
    /// `pending` those that were PENDING, and whether in flight, when the walk loaded
    /// them. The caller holds every class lock, so no holder takes or applies a name
    /// meanwhile; freers go on.
    ///
    /// A word the walk saw settled PENDING was settled by its freer after it named the
    /// slot in an entry and set the entry's bit (`Slot::settle`, Release; the walk
    /// loaded the word with Acquire, before the entries are read here): so the name and
    /// the bit are seen, and stay until the lock's next holder takes them. Without them
    /// the free is lost: no holder will ever apply it, and the object stays in its
    /// zspage for good. A word in flight is its freer's, which is between turning it
    /// PENDING and naming it (it will settle it, or apply the free itself under the
    /// lock once it has it): it needs no name yet.
    fn check_pending(&self, ci: usize, of_class: &HashSet<u32>, pending: &[(u32, bool)]) -> Result<(), String> {
        let Some(deferred) = self.deferred(ci) else {
            ensure!(pending.is_empty(), "class {ci} defers no free, yet slot {} is PENDING", pending[0].0);
            return Ok(());
        };
        let names = deferred.names();
        let mut named = HashSet::new();
        for &(idx, _) in &names {
            ensure!(named.insert(idx), "class {ci}: slot {idx} named twice for a deferred free");
            ensure!(
                of_class.contains(&idx),
                "class {ci}: slot {idx} named for a deferred free is no object of the class"
            );
            // Named by a freer that turned it PENDING before (possibly after the walk
            // loaded it), and not applied since: only the lock's holder applies a
            // named free, emptying the entry first. Whether a bit is missing is asked
            // below of the words the walk saw settled: an entry filled whose bit is not
            // seen may be a freer's between the two.
            // SAFETY: below the high-water mark: the slot of an object the walk found.
            let w = unsafe { self.handles().slot_unchecked(idx) }.load();
            ensure!(w.is_pending(), "class {ci}: slot {idx} named for a deferred free is {w:?}");
        }
        for &(idx, in_flight) in pending {
            ensure!(
                in_flight || names.iter().any(|&(n, bit)| n == idx && bit),
                "slot {idx} of class {ci} is PENDING and named nowhere: a lost free"
            );
        }
        Ok(())
    }
}
