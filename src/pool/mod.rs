//! The pool: classes with their fullness lists behind per-class locks; malloc and free.
//!
//! # Locks, in the order they may be taken
//!
//! 1. `compaction` (pool): one compaction, defragmentation, adjacency pass or
//!    release of the arena at a time.
//! 2. the side table's extent lock (`frames/mod.rs`): taken shared by side-table walkers
//!    (the census), holding no other lock, and exclusively by a shrink, under the
//!    compaction lock; nothing but the frame lock is taken under it.
//! 3. a class's `state` lock: its fullness lists, its zspages' object lists (free
//!    space, for the dense layout) and its free-slot list; and the words of the
//!    slots whose objects are in its zspages, but for holds. malloc and free take
//!    only the lock of their object's class; compaction and migration one class
//!    lock at a time. The checker takes every class lock, in ascending class order.
//! 4. the handle table's growth lock (taken under a class lock once per
//!    [`SLOT_BATCH`](crate::handle::SLOT_BATCH) new handles; nothing is taken under
//!    it), and the frame lock (under a class lock when a zspage is born or dies or a
//!    frame migrates; under the extent lock in a shrink; alone otherwise).
//! 5. the frame source's retired lock, under the frame lock or alone (in the epoch
//!    collector's deferred functions, which may run wherever a guard is pinned and
//!    so must take no other lock).
//!
//! Reads, writes and maps take no lock: they hold the object in its handle slot
//! (`handle/slot.rs`).
//!
//! # The life of a handle
//!
//! `malloc` pops a slot from its class's free-slot list (taking a fresh batch from the
//! handle table when empty), takes the first free object of the fullest zspage that
//! is not full (a new zspage when there is none), records the slot in the zspage's
//! entry for the object, and publishes `LIVE(gen, location)` in the slot. In the
//! dense layout the "class" is the thread's lane, and the object goes in the zspage
//! of the lowest placement bucket that fits it (`layout/dense.rs`), at the tail or in a
//! hole; its size goes beside its slot, where lock-free readers find it, and the
//! zspage records nothing of it but the bytes it took. The handle is the pool's tag,
//! the slot's generation and its index. `free` pins the object, takes the class
//! lock, and turns the slot `FREE(gen + 1)` if no one else pins it (a dense-layout
//! free knows its lane from the slot's index, so when it finds the lane's lock free
//! it takes it without a pin, and one CAS turns the slot `FREE(gen + 1)` if no one
//! holds it: `Slot::free_locked`); the object goes
//! back to its zspage's free list (dense: its bytes, at the slot's location and of
//! the slot's size, become a hole), and a zspage left empty gives its frames back to
//! the frame source and its descriptor to the epoch collector. A dense-layout free
//! that finds its lane lock held does not wait: it turns the slot PENDING and leaves
//! the rest to the lock's next holder (`pool/deferred.rs`).

pub(crate) mod access;
pub(crate) mod check;
pub mod config;
pub(crate) mod deferred;
pub(crate) mod stats;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::error::{report_misuse, Error, Result};
use crate::frames::os::physical_memory;
use crate::frames::side::{FrameType, FrameWord};
use crate::frames::{Discard, FrameSource};
use crate::handle::slot::{Slot, SlotError, State, Word, MAX_LOC};
use crate::handle::{Handle, HandleTable, PoolId};
use crate::layout::classes::{ClassSpec, ClassTable, Layout, MAX_CHAIN, MAX_FRAMES, MIN_CHAIN};
use crate::layout::lists::Lists;
use crate::layout::zspage::{Body, DeferredFree, ZsPage};
use crate::layout::Accounted;
use crate::pool::config::{AllocFlags, Config};
use crate::pool::deferred::{Deferral, Deferred};
use crate::sync::{epoch, hg, LaneGuard, LaneLock, Mutex};

/// Most frames a pool of frames of `1 << shift` bytes can address: a slot's location
/// has 40 bits of bytes, so 2^28 frames of 4 KiB, 2^26 of 16 KiB, 2^24 of 64 KiB.
pub fn max_pool_frames(shift: u32) -> usize {
    ((MAX_LOC as usize) + 1) >> shift
}

/// The state a class lock protects.
pub(crate) struct ClassState {
    /// The class's zspages, on their lists.
    pub lists: Lists,
    /// First free handle slot of this class, plus one (0: none).
    pub free_slot: u64,
}

/// A class of the pool: in the kernel layout a size class, in the dense layout a lane
/// (a share of the pool that threads allocate in, taking objects of every size). Its
/// parameters, its lock, and statistics readable without the lock.
///
/// Under the class lock, over the zspages on its lists:
///
/// ```text
/// zspages    == number of zspages            live       == their objects
/// requested  == the sizes of their objects   body_bytes == their bodies' meta_bytes()
/// drainable  == their bodies' drainable(), modulo 2^32, once counts_drainable
/// ```
///
/// The checker (`pool/check.rs`) walks them all; debug builds check the first
/// whenever a zspage is born or dies. The handle slots of the class's free-slot list
/// are FREE, and every slot the table has handed out is either on a class's free-slot
/// list or holds an object (checked by the checker).
#[repr(align(128))]
pub(crate) struct Class {
    pub spec: ClassSpec,
    pub state: LaneLock<ClassState>,
    /// Live objects. Written under the lock, read anywhere.
    pub live: AtomicUsize,
    /// Bytes requested by live objects. As `live`.
    pub requested: AtomicUsize,
    /// Zspages. As `live`.
    pub zspages: AtomicUsize,
    /// Bytes the zspages' bodies hold outside their descriptors (entries, holes). As
    /// `live`.
    pub body_bytes: AtomicUsize,
    /// Whether the lane's last operation under its lock was a free, not a malloc: a
    /// hint that the next free is one of a run (a workload emptying the pool), whose
    /// frees are best left pending and applied together (`pool/deferred.rs`). A free
    /// right after a malloc (churn) is applied at once: the next malloc would apply it
    /// anyway. Written under the lock, read without it; no decision but that rests on
    /// it.
    pub frees_in_a_row: AtomicBool,
    /// The free bytes of the zspages a compaction would take as sources (dense: those
    /// at least 1/16 free, [`Body::drainable`]): compaction finds nothing to empty in
    /// a lane that has less than a chain's worth, and leaves it, and its lock, alone
    /// (`compact/mod.rs`). Modulo 2^32, to fit what the alignment leaves: exact while
    /// the lane's zspages hold less than 4 GiB, the only case where compaction reads
    /// it ([`PoolCore::sweep_due`]). As `live`, once `counts_drainable`.
    pub drainable: AtomicU32,
    /// Whether `drainable` is kept: from the first compaction of the lane on (which
    /// counts it), so that the malloc and free of a pool never compacted do not pay
    /// for it. Written under the lock, read anywhere.
    pub counts_drainable: AtomicBool,
}

// The statistics count the classes' bytes as metadata: the band lists of pools of
// large objects fit in what the alignment leaves, so a class is as large as before.
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Class>() == 1280);

/// Adds `d` to a statistic that only the holder of a lock writes.
#[inline]
pub(crate) fn bump(a: &AtomicUsize, d: isize) {
    // Relaxed load and store: one writer at a time (the lock), readers want a value.
    a.store(a.load(Ordering::Relaxed).wrapping_add_signed(d), Ordering::Relaxed);
}

/// Adds `d` to a statistic modulo 2^32 that only the holder of a lock writes.
#[inline]
pub(crate) fn bump32(a: &AtomicU32, d: isize) {
    // Relaxed load and store: one writer at a time (the lock), readers want a value.
    a.store(a.load(Ordering::Relaxed).wrapping_add(d as u32), Ordering::Relaxed);
}

/// Cumulative counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub misuse: AtomicU64,
    pub pages_compacted: AtomicU64,
    pub objs_moved: AtomicU64,
    pub compact_skipped: AtomicU64,
    pub frames_migrated: AtomicU64,
    pub read_copied_bytes: AtomicU64,
}

/// What compaction writes on every call, and statistics no hot path reads: on a
/// cache line of their own, away from the fields malloc and free read on every call
/// (the classes, the pool's tag, its layout and object limit), which a compactor
/// called back to back would otherwise take from their cache at each of its calls.
/// (A line, not two: the pool's own bytes count in the density figures, and the
/// second line would change them.)
#[repr(align(64))]
struct Written {
    counters: Counters,
    compaction: Mutex<()>,
}

/// Everything a pool is; shared (behind [`Pool`](crate::Pool)) with its automatic compactor.
pub struct PoolCore {
    name: String,
    /// The tag in its handles and its serial; the tag is given back when the pool goes.
    id: PoolId,
    table: ClassTable,
    frames: FrameSource,
    handles: HandleTable,
    classes: Box<[Class]>,
    /// Per class, the frees waiting for its lock (`pool/deferred.rs`): the dense
    /// layout's lanes, where threads of every size meet; none for the kernel layout's
    /// classes (empty).
    deferred: Box<[Deferred]>,
    /// The cumulative counters and the compaction lock.
    written: Written,
    /// The layout (`layout/mod.rs` answers what differs between them).
    layout: Layout,
    /// The largest object malloc takes.
    max_object_size: usize,
}

/// A zspage taken off its lists under the class lock, to be released after it: its
/// frames are already back in the frame source (what must still go back to the OS is
/// in `discard`), its descriptor still to be handed to the epoch collector.
pub(crate) struct Released {
    zs: *mut ZsPage,
    discard: Discard,
}

impl PoolCore {
    /// The pool's structures for `config`, its arena's frames below `bottom` never
    /// handed out (0 but in tests: `Pool::testonly_starting_at`).
    pub(crate) fn build_at(name: &str, config: &Config, bottom: usize) -> Result<PoolCore> {
        let frame = config.frame()?;
        let shift = frame.trailing_zeros();
        let chain = match config.chain_size {
            0 => config.layout.default_chain(),
            c if (MIN_CHAIN..=MAX_CHAIN).contains(&c) => c,
            _ => return Err(Error::Invalid("chain_size must be 0 or 4..16")),
        };
        config.auto_compact.validate()?;
        let limit = config.object_limit(frame)?;
        let max_frames = max_pool_frames(shift);
        if config.max_pages > max_frames {
            return Err(Error::Invalid("max_pages above the arena's limit (2^40 bytes of frames)"));
        }
        // Before any memory is taken: the identity is what most often runs out.
        let id = PoolId::new().ok_or(Error::TooManyPools)?;
        // Classes for objects up to a frame at least, as the kernel's table has them.
        let table = ClassTable::with_limit(config.layout, chain, limit.max(frame), frame);
        // Without a limit, reserve (not commit) as many frames as the machine has memory.
        let nframes = if config.max_pages != 0 {
            config.max_pages
        } else {
            (physical_memory() >> shift).clamp(1 << 16, max_frames)
        };
        let frame_limit = if config.max_pages != 0 { config.max_pages } else { nframes };
        let layout = config.layout;
        // Slots for an average object of the smallest size the layout expects: a
        // reservation, committed as used.
        let smallest = layout.smallest_object(&table.classes()[0]);
        let frames = FrameSource::starting_at(nframes, frame_limit, bottom, shift, config.prefault)
            .map_err(Error::from_errno)?;
        // The dense layout's lanes defer frees, which find their lane through the
        // handle table (`pool/deferred.rs`).
        let defers = layout == Layout::Dense;
        let handles = HandleTable::new(nframes.saturating_mul(frame / smallest), layout.sizes_beside_slots(), defers)
            .map_err(Error::from_errno)?;
        let classes = table
            .classes()
            .iter()
            .map(|&spec| Class {
                spec,
                state: LaneLock::new(ClassState { lists: Lists::new(), free_slot: 0 }),
                live: AtomicUsize::new(0),
                requested: AtomicUsize::new(0),
                zspages: AtomicUsize::new(0),
                body_bytes: AtomicUsize::new(0),
                drainable: AtomicU32::new(0),
                counts_drainable: AtomicBool::new(false),
                frees_in_a_row: AtomicBool::new(false),
            })
            .collect::<Box<[Class]>>();
        let lanes = if defers { classes.len() } else { 0 };
        let deferred = (0..lanes).map(|_| Deferred::new()).collect();
        Ok(PoolCore {
            name: name.to_owned(),
            id,
            table,
            frames,
            handles,
            classes,
            deferred,
            written: Written { counters: Counters::default(), compaction: Mutex::new(()) },
            layout,
            max_object_size: limit,
        })
    }

    /// Tells helgrind (`sync::hg`) that the counters, which are read without locks
    /// while their writers update them, are only ever accessed atomically. Called once
    /// the core is in place (in its `Arc`).
    pub(crate) fn untrack_counters(&self) {
        let untracked = |a: &AtomicUsize| hg::untracked((a as *const AtomicUsize).cast(), std::mem::size_of_val(a));
        for c in self.classes.iter() {
            for a in [&c.live, &c.requested, &c.zspages, &c.body_bytes] {
                untracked(a);
            }
            hg::untracked((&c.drainable as *const AtomicU32).cast(), std::mem::size_of::<AtomicU32>());
            hg::untracked((&c.counts_drainable as *const AtomicBool).cast(), std::mem::size_of::<AtomicBool>());
            // A hint, only ever accessed atomically, that orders nothing.
            hg::untracked((&c.frees_in_a_row as *const AtomicBool).cast(), std::mem::size_of::<AtomicBool>());
        }
        for d in self.deferred.iter() {
            // Only ever accessed atomically; what they hand over is ordered through
            // the slot words, which tell helgrind of it.
            hg::untracked((d as *const Deferred).cast(), std::mem::size_of_val(d));
        }
        hg::untracked((&self.written.counters as *const Counters).cast(), std::mem::size_of::<Counters>());
        self.frames.untrack_counters();
        self.handles.untrack_counters();
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's serial: a number no other pool of the process has or will have.
    #[inline]
    pub fn serial(&self) -> u64 {
        self.id.serial()
    }

    /// The class table.
    pub fn class_table(&self) -> &ClassTable {
        &self.table
    }

    /// The layout (`layout/mod.rs` answers what differs between the two).
    #[inline]
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// The arena, its side table and the frame allocator.
    #[inline]
    pub(crate) fn frames(&self) -> &FrameSource {
        &self.frames
    }

    /// The handle table.
    #[inline]
    pub(crate) fn handles(&self) -> &HandleTable {
        &self.handles
    }

    /// The classes (the dense layout's lanes), by position in the class table.
    #[inline]
    pub(crate) fn classes(&self) -> &[Class] {
        &self.classes
    }

    /// The frees waiting for the lock of class `ci`, where the layout defers them.
    #[inline(always)]
    pub(crate) fn deferred(&self, ci: usize) -> Option<&Deferred> {
        self.deferred.get(ci)
    }

    /// Bytes of the deferred frees' entries (metadata the statistics count).
    pub(crate) fn deferred_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.deferred)
    }

    /// The cumulative counters.
    #[inline]
    pub(crate) fn counters(&self) -> &Counters {
        &self.written.counters
    }

    /// The pool's compaction lock: one compaction, defragmentation, adjacency pass or
    /// release of the arena at a time (the first lock of the lock order).
    #[inline]
    pub(crate) fn compaction(&self) -> &Mutex<()> {
        &self.written.compaction
    }

    /// Counts a misuse and reports it (see [`report_misuse`]); returns `err`. Cold: it
    /// keeps the hot paths that may call it small enough to inline.
    #[cold]
    #[inline(never)]
    pub(crate) fn misuse(&self, call: &str, h: u64, err: Error) -> Error {
        // Relaxed: a statistic.
        self.written.counters.misuse.fetch_add(1, Ordering::Relaxed);
        report_misuse(call, h, err);
        err
    }

    /// The slot a handle names, if this pool issued it.
    #[inline]
    pub(crate) fn resolve(&self, h: Handle, call: &str) -> Result<(&Slot, u32)> {
        let bad = |why| Err(self.misuse(call, h.to_raw(), Error::Invalid(why)));
        if h.tag() != self.id.tag() {
            return bad("handle from another pool, or never issued");
        }
        let Some(idx) = h.index() else { return bad("handle never issued") };
        match self.handles.get(idx) {
            Some(slot) => Ok((slot, idx)),
            None => bad("handle never issued"),
        }
    }

    /// The largest object the pool takes (its configuration's `max_object_size`).
    #[inline]
    pub fn max_object_size(&self) -> usize {
        self.max_object_size
    }

    /// Allocates an object of `size` bytes (1..=[`max_object_size`](Self::max_object_size)).
    #[inline(always)]
    pub fn malloc(&self, size: usize, flags: AllocFlags) -> Result<Handle> {
        if size == 0 {
            return Err(Error::Invalid("size 0"));
        }
        if size > self.max_object_size {
            return Err(Error::TooLarge);
        }
        if flags.0 & !AllocFlags::ALL != 0 {
            return Err(Error::Invalid("unknown flag bits"));
        }
        let ci = self.table.class_for(size);
        let class = &self.classes[ci];
        let grow = flags.0 & AllocFlags::NOGROW.0 == 0;
        let mut drained = false;
        let (_st, idx, gen, zs, off) = loop {
            let mut st = class.state.lock();
            // Relaxed: a hint (`Class::frees_in_a_row`).
            class.frees_in_a_row.store(false, Ordering::Relaxed);
            self.drain(ci, &mut st);
            let (idx, gen) = self.take_slot(ci, &mut st)?;
            match self.place(ci, &mut st, size, idx, grow) {
                Ok((zs, off)) => break (st, idx, gen, zs, off),
                Err(e) => {
                    self.put_slot(&mut st, idx);
                    drop(st);
                    // Frees left pending in other lanes may keep zspages that they
                    // empty, and so frames, from the page limit: once, they are
                    // applied and the malloc tried again (`pool/deferred.rs`).
                    if e == Error::NoMemory && grow && !drained && self.drain_all() {
                        drained = true;
                        continue;
                    }
                    return Err(e);
                }
            }
        };
        // SAFETY: `take_slot` returned an index below the table's high-water mark.
        unsafe { self.handles.set_size(idx, size) };
        // SAFETY: `zs` is live and ours (class lock).
        let loc = unsafe { (*zs).loc_of(off, self.frames.shift()) };
        Ok(self.publish(class, idx, gen, loc, size))
    }

    /// Publishes a placed object (the caller holds its class lock): its slot, from
    /// `take_slot`, goes LIVE at `loc`, and the class counts it.
    #[inline]
    fn publish(&self, class: &Class, idx: u32, gen: u16, loc: u64, size: usize) -> Handle {
        // SAFETY: `take_slot` returned an index below the table's high-water mark.
        let slot = unsafe { self.handles.slot_unchecked(idx) };
        // Release (inside `set`): the zspage state behind the location, and for the
        // dense layout the size beside the slot, are visible to whoever pins it.
        slot.set(Word::live(gen, loc));
        bump(&class.live, 1);
        bump(&class.requested, size as isize);
        Handle::new(self.id.tag(), gen, idx)
    }

    /// Places an object of `len` bytes, whose handle slot is `idx`, in a zspage of
    /// class `ci`: the one the layout picks ([`Layout::pick`]), else a new one if
    /// `grow`, as long as the layout says ([`Layout::zspage_frames`]). Returns the
    /// zspage and the offset.
    #[inline(always)]
    fn place(&self, ci: usize, st: &mut ClassState, len: usize, idx: u32, grow: bool) -> Result<(*mut ZsPage, usize)> {
        let zs = match self.layout.pick(&st.lists, len) {
            Some(zs) => zs,
            None if !grow => return Err(Error::NoMemory),
            None => self.open_zspage(ci, st, len)?,
        };
        let spec = &self.classes[ci].spec;
        // SAFETY: `zs` is a live zspage of this class (picked from its lists, or just
        // made), whose lock the caller holds (`st`); no other reference to its state
        // is alive, and this one's last use is the next statement.
        let s = unsafe { (*zs).state() };
        // The dense layout's body matched once, for the placement and the list.
        let (off, want) = match &mut s.body {
            Body::Dense(x) => {
                let off = self.edit_body(ci, x, |x| x.place(len));
                (off, x.list())
            }
            b => (self.edit_body(ci, b, |b| b.place(spec, len, idx)), b.list()),
        };
        let off = off.expect("a zspage from a list that fits");
        // SAFETY: `relist_to` asks for a live zspage on one of the class's lists (`zs`,
        // which stays on one), the lock (`st`), no reference to its state (the one
        // above is no longer used), and the list its body calls for (`want`, read
        // after the placement).
        unsafe { st.lists.relist_to(zs, want) };
        Ok((zs, off))
    }

    /// A new zspage in class `ci` for an object of `len` bytes that fits in none: as
    /// `place` says. Out of line: the placement that finds room stays small.
    #[inline(never)]
    fn open_zspage(&self, ci: usize, st: &mut ClassState, len: usize) -> Result<*mut ZsPage> {
        let spec = &self.classes[ci].spec;
        let frames =
            self.layout.zspage_frames(&mut st.lists, spec, len, self.frames.shift(), || self.frames.headroom());
        self.new_zspage(ci, st, frames)
    }

    /// Runs `f` on a zspage's body, keeping the class's counts of body bytes and, once
    /// it keeps them, of drainable bytes (the caller holds the class lock).
    #[inline(always)]
    pub(crate) fn edit_body<B: Accounted, R>(&self, ci: usize, b: &mut B, f: impl FnOnce(&mut B) -> R) -> R {
        let class = &self.classes[ci];
        // Relaxed: written under the lock we hold.
        let counts_drainable = class.counts_drainable.load(Ordering::Relaxed);
        let drainable = if counts_drainable { b.drainable() } else { 0 };
        let before = b.meta_bytes();
        let r = f(b);
        let after = b.meta_bytes();
        // Most edits leave the body's allocation as it was.
        if after != before {
            bump(&class.body_bytes, after as isize - before as isize);
        }
        if counts_drainable {
            bump32(&class.drainable, b.drainable() as isize - drainable as isize);
        }
        r
    }

    /// Adds `d` to the drainable bytes of class `ci`, where it keeps them (the caller
    /// holds the class lock).
    #[inline]
    fn bump_drainable(&self, ci: usize, d: isize) {
        let class = &self.classes[ci];
        // Relaxed: written under the lock we hold.
        if class.counts_drainable.load(Ordering::Relaxed) {
            bump32(&class.drainable, d);
        }
    }

    /// Pops a free slot of class `ci` (refilling from the table); returns (index, gen).
    #[inline(always)]
    fn take_slot(&self, ci: usize, st: &mut ClassState) -> Result<(u32, u16)> {
        if st.free_slot == 0 {
            self.refill_slots(ci, st)?;
        }
        let idx = (st.free_slot - 1) as u32;
        // SAFETY: free-list members are below the high-water mark.
        let w = unsafe { self.handles.slot_unchecked(idx) }.load();
        debug_assert_eq!(w.state(), State::Free);
        st.free_slot = w.loc();
        Ok((idx, w.gen()))
    }

    /// Takes a batch of slots from the table for class `ci`, whose free list is empty.
    /// Out of line: one malloc in a batch's length comes here.
    #[cold]
    #[inline(never)]
    fn refill_slots(&self, ci: usize, st: &mut ClassState) -> Result<()> {
        let first = self.handles.take_batch(ci).map_err(Error::from_errno)?;
        let n = crate::handle::SLOT_BATCH as u32;
        let gen = self.id.first_gen();
        for i in first..first + n {
            // SAFETY: `take_batch` raised the high-water mark past this batch.
            let slot = unsafe { self.handles.slot_unchecked(i) };
            let next = if i + 1 < first + n { i as u64 + 2 } else { st.free_slot };
            slot.set(Word::free(gen, next));
        }
        st.free_slot = first as u64 + 1;
        Ok(())
    }

    /// Returns an untouched slot taken by `take_slot`.
    fn put_slot(&self, st: &mut ClassState, idx: u32) {
        // SAFETY: `idx` came from `take_slot`.
        let slot = unsafe { self.handles.slot_unchecked(idx) };
        slot.set(Word::free(slot.load().gen(), st.free_slot));
        st.free_slot = idx as u64 + 1;
    }

    /// A new, empty zspage of `n` frames for class `ci`, on the list its empty body
    /// calls for. A kernel-layout zspage is always its class's chain; a dense one may
    /// be shorter (`place`).
    pub(crate) fn new_zspage(&self, ci: usize, st: &mut ClassState, n: usize) -> Result<*mut ZsPage> {
        let spec = &self.classes[ci].spec;
        debug_assert!((1..=spec.frames).contains(&n));
        let mut pfns = [0u32; MAX_FRAMES];
        let pfns = &mut pfns[..n];
        self.frames.alloc(pfns).map_err(Error::from_errno)?;
        let body = self.layout.body(spec, n, self.frames.shift());
        let (list, body_bytes, drainable) = (body.list(), body.meta_bytes(), body.drainable());
        let zs = match ZsPage::create(ci, pfns, body) {
            Ok(zs) => zs,
            Err(e) => {
                // Nothing reached the frames yet: they go straight back.
                self.frames.discard(self.frames.free(pfns));
                return Err(Error::from_errno(e));
            }
        };
        let ty = if spec.is_huge() { FrameType::Huge } else { FrameType::Zspage };
        for (k, &pfn) in pfns.iter().enumerate() {
            // Release (inside `set`): the descriptor is initialised before its frames
            // name it.
            // SAFETY: a frame just allocated to this zspage (held, committed), under
            // the lock of its class.
            unsafe { self.frames.side().set(pfn, ZsPage::word(zs, ty, k)) };
        }
        // SAFETY: fresh descriptor of this class, on no list; lock held.
        unsafe { st.lists.push(zs, list) };
        bump(&self.classes[ci].zspages, 1);
        bump(&self.classes[ci].body_bytes, body_bytes as isize);
        self.bump_drainable(ci, drainable as isize);
        self.debug_check_zspages(ci, st);
        Ok(zs)
    }

    /// The zspage count of [`Class`]'s equations, in debug builds (class lock held:
    /// `st`).
    #[inline]
    fn debug_check_zspages(&self, ci: usize, st: &ClassState) {
        // Relaxed: written under the lock the caller holds.
        debug_assert_eq!(self.classes[ci].zspages.load(Ordering::Relaxed), st.lists.total(), "class {ci}: zspages");
    }

    /// Takes an empty zspage off its list, clears its frames' side-table words and
    /// gives the frames back to the frame source (all under the class lock, so that
    /// the checker, holding every class lock, finds the frames counted held exactly
    /// in the zspages on the lists); [`release`](Self::release) finishes after the
    /// class lock is dropped.
    ///
    /// # Safety
    /// 1. `zs` is a live, empty zspage of class `ci`, on one of its lists;
    /// 2. `st` is that class's state, so its lock is held;
    /// 3. no reference to `zs`'s state is alive.
    pub(crate) unsafe fn retire(&self, ci: usize, st: &mut ClassState, zs: *mut ZsPage) -> Released {
        let mut pfns = [0u32; MAX_FRAMES];
        // SAFETY: `zs` is live (1), its class lock is held (2), and the state
        // references taken here end within their statements (3): what `state` and
        // `unlink` ask. Its frames are read atomically, and `nframes` never changes.
        let n = unsafe {
            debug_assert!((*zs).state().body.is_empty());
            st.lists.unlink(zs);
            for (k, pfn) in (*zs).frame_list().enumerate() {
                // SAFETY: `set` asks for 1. a committed word that stays mapped: the
                // frame is held by this zspage until `free` below; 2. the lock of the
                // class whose zspage gives the frame up: held (2).
                self.frames.side().set(pfn, FrameWord::FREE);
                pfns[k] = pfn;
            }
            bump(&self.classes[ci].body_bytes, -((*zs).state().body.meta_bytes() as isize));
            self.bump_drainable(ci, -((*zs).state().body.drainable() as isize));
            (*zs).nframes as usize
        };
        bump(&self.classes[ci].zspages, -1);
        self.debug_check_zspages(ci, st);
        // No object lives in these frames and no holder can reach them: frames are
        // touched only through a held slot, and the zspage has no object left.
        let discard = self.frames.free(&pfns[..n]);
        Released { zs, discard }
    }

    /// Returns a retired zspage's frames to the OS (those the hot list did not keep)
    /// and its descriptor to the epoch collector. Takes no class lock.
    pub(crate) fn release(&self, r: Released) {
        self.frames.discard(r.discard);
        let guard = epoch::pin();
        let d = DeferredFree(r.zs);
        guard.defer(move || {
            let d = d;
            // SAFETY: the descriptor came from ZsPage::create and is unreachable from
            // the side table (words cleared) and the class lists; lock-free walkers
            // that loaded a word before it was cleared hold an epoch guard, so this
            // runs after them, once.
            unsafe { ZsPage::destroy(d.0) };
        });
    }

    /// Frees the object. Refused with `Busy` while it is mapped or being read.
    #[inline(always)]
    pub fn free(&self, h: Handle) -> Result<()> {
        const CALL: &str = "zs_free";
        let (slot, idx) = self.resolve(h, CALL)?;
        // The dense layout: the lane is the one that took the slot's batch
        // (`HandleTable::owner`), known from the index alone. A free that finds the
        // lane's lock free, and is not one of a run (`Class::frees_in_a_row`), takes it
        // without a pin, and under it the slot's one CAS frees the object
        // (`Slot::free_locked`). Otherwise the free is left for the lock's next holder
        // (`pool/deferred.rs`), unless every entry for that is taken: then it applies
        // the lane's pending frees together, their misses overlapped, and its own. A
        // free so left reads neither the side table nor the descriptor.
        // SAFETY: `resolve` found `idx` below the high-water mark.
        let owner = unsafe { self.handles.owner(idx) };
        let Some(ci) = owner else { return self.free_kernel(h, slot, idx) };
        let class = &self.classes[ci];
        // Relaxed: a hint.
        if !class.frees_in_a_row.load(Ordering::Relaxed) {
            if let Some(st) = class.state.try_lock() {
                return self.free_in_lane(h, slot, idx, ci, class, st);
            }
        }
        match self.free_without_lock(ci, slot, idx, h.gen()) {
            Deferral::Done => Ok(()),
            Deferral::Busy => Err(self.misuse(CALL, h.to_raw(), Error::Busy)),
            Deferral::Stale => Err(self.misuse(CALL, h.to_raw(), Error::Invalid("stale handle (double free?)"))),
            Deferral::Full => {
                let mut st = self.classes[ci].state.lock();
                self.drain(ci, &mut st);
                let r = self.apply_pending(ci, &mut st, idx);
                drop(st);
                if let Some(r) = r {
                    self.release(r);
                }
                Ok(())
            }
        }
    }

    /// [`free`](Self::free) in the kernel layout (no deferred frees): the object is
    /// pinned, its class found from its zspage, and its lock waited for.
    #[inline(never)]
    fn free_kernel(&self, h: Handle, slot: &Slot, idx: u32) -> Result<()> {
        const CALL: &str = "zs_free";
        let loc = match slot.pin(h.gen()) {
            Ok(loc) => loc,
            Err(SlotError::Stale) => {
                return Err(self.misuse(CALL, h.to_raw(), Error::Invalid("stale handle (double free?)")))
            }
            Err(_) => return Err(self.misuse(CALL, h.to_raw(), Error::Busy)),
        };
        let pfn = self.frames.pfn_of(loc);
        // SAFETY: our pin keeps the object's frame held by its zspage.
        let fw = unsafe { self.frames.side().get(pfn) };
        let zs = ZsPage::of(fw);
        // SAFETY: our pin keeps the object, hence its zspage, alive and in place.
        let ci = unsafe { (*zs).class } as usize;
        let mut st = self.classes[ci].state.lock();
        if slot.free_pinned(h.gen(), st.free_slot) == Err(SlotError::Busy) {
            drop(st);
            slot.unpin();
            return Err(self.misuse(CALL, h.to_raw(), Error::Busy));
        }
        st.free_slot = idx as u64 + 1;
        // SAFETY: `remove_freed` asks for 1. `zs` live, of class `ci`, holding the
        // object at `loc` whose slot `idx` was just freed: the zspage held our pinned
        // object until `free_pinned` freed it under the class lock, which we still
        // hold, and a zspage dies only under its class lock; 2. the lock: `st`; 3. no
        // reference to its state: none is alive here.
        let r = unsafe { self.remove_freed(ci, &mut st, zs, fw.index(), loc, idx) };
        drop(st);
        if let Some(r) = r {
            self.release(r);
        }
        Ok(())
    }

    /// [`free`](Self::free) in the dense layout with the lock (`st`) of lane `ci`
    /// (`class`), the owner of the batch of `slot` (index `idx`), taken at once and no
    /// pin held.
    #[inline(always)]
    fn free_in_lane(
        &self,
        h: Handle,
        slot: &Slot,
        idx: u32,
        ci: usize,
        class: &Class,
        mut st: LaneGuard<'_, ClassState>,
    ) -> Result<()> {
        // Relaxed: a hint (`Class::frees_in_a_row`), written under the lock.
        class.frees_in_a_row.store(true, Ordering::Relaxed);
        self.drain(ci, &mut st);
        let loc = match slot.free_locked(h.gen(), st.free_slot) {
            Ok(loc) => loc,
            Err(e) => {
                drop(st);
                let why =
                    if e == SlotError::Stale { Error::Invalid("stale handle (double free?)") } else { Error::Busy };
                return Err(self.misuse("zs_free", h.to_raw(), why));
            }
        };
        st.free_slot = idx as u64 + 1;
        // SAFETY: the object was in its frame until `free_locked` freed it under the
        // lock of its lane, which we still hold: its zspage, which holds the frame,
        // dies only under that lock.
        let fw = unsafe { self.frames.side().get(self.frames.pfn_of(loc)) };
        let zs = ZsPage::of(fw);
        // SAFETY: as above; `class` never changes. A slot's objects are all of the
        // class that took its batch (`handle/table.rs`).
        debug_assert_eq!(unsafe { (*zs).class } as usize, ci, "slot {idx}: object of another class");
        // SAFETY: `remove_freed` asks for 1. `zs` live, of class `ci`, holding the
        // object at `loc` whose slot `idx` was just freed: the zspage held the object
        // until `free_locked` freed it under the class lock, which we still hold, and a
        // zspage dies only under its class lock; 2. the lock: `st`; 3. no reference to
        // its state: none is alive here.
        let r = unsafe { self.remove_freed(ci, &mut st, zs, fw.index(), loc, idx) };
        drop(st);
        if let Some(r) = r {
            self.release(r);
        }
        Ok(())
    }

    /// Takes the object at `loc`, in frame `k` of zspage `zs`, out of the zspage,
    /// once its slot `idx` is freed: gives its bytes back to the body and takes it out
    /// of the class's counts; retires the zspage if that left it empty, and returns
    /// it for [`release`](Self::release) after the class lock is dropped.
    ///
    /// # Safety
    /// 1. `zs` is a live zspage of class `ci` holding the object at `loc`, whose slot
    ///    `idx` has been freed (FREE) under the class lock;
    /// 2. `st` is that class's state, so its lock is held;
    /// 3. no reference to `zs`'s state is alive.
    #[inline(always)]
    pub(crate) unsafe fn remove_freed(
        &self,
        ci: usize,
        st: &mut ClassState,
        zs: *mut ZsPage,
        k: usize,
        loc: u64,
        idx: u32,
    ) -> Option<Released> {
        // SAFETY: `remove_object` asks what this function does (1, 2, 3).
        if unsafe { self.remove_object(ci, st, zs, k, loc, idx) } {
            // SAFETY: `retire` asks for 1. a live, empty zspage of class `ci` on its
            // lists: `zs`, just found empty, and left on its list; 2. its lock: `st`;
            // 3. no reference to its state: `remove_object` keeps none.
            Some(unsafe { self.retire(ci, st, zs) })
        } else {
            None
        }
    }

    /// [`remove_freed`](Self::remove_freed) but the retirement: whether the zspage is
    /// now empty (left on its list for the caller to retire), else relisted. Out of
    /// line, its answer in a register: a zspage emptied is the rare case.
    ///
    /// # Safety
    /// As for [`remove_freed`](Self::remove_freed).
    #[inline(never)]
    unsafe fn remove_object(
        &self,
        ci: usize,
        st: &mut ClassState,
        zs: *mut ZsPage,
        k: usize,
        loc: u64,
        idx: u32,
    ) -> bool {
        let class = &self.classes[ci];
        let off = ZsPage::offset_in_chain(k, loc, self.frames.shift());
        // SAFETY: `idx` names a slot of this pool (1). A size beside it is rewritten
        // only when the slot is next taken, under a class lock after ours.
        let beside_slot = unsafe { self.handles.size(idx) };
        // SAFETY: `zs` is live and its class lock held (1, 2); no other reference to
        // its state is alive (3), and this one is last used in the condition below.
        let s = unsafe { (*zs).state() };
        // The dense layout's body matched once, for the removal, the emptiness and the
        // list.
        let (size, empty, want) = match &mut s.body {
            Body::Dense(x) => {
                let size = beside_slot.expect("a dense pool's table records sizes");
                self.edit_body(ci, x, |x| x.remove(off, size));
                (size, x.is_empty(), x.list())
            }
            b => {
                let size = self.edit_body(ci, b, |b| b.remove(&class.spec, off, idx, beside_slot));
                (size, b.is_empty(), b.list())
            }
        };
        bump(&class.live, -1);
        bump(&class.requested, -(size as isize));
        if !empty {
            // SAFETY: `relist_to` asks for a live zspage on the class's lists (`zs`),
            // the lock (`st`), no reference to its state (`s` is no longer used), and
            // the list its body calls for (`want`, read after the removal).
            unsafe { st.lists.relist_to(zs, want) };
        }
        empty
    }

    /// Frames held by the pool's zspages, once the frees pending in its lanes are
    /// applied (so that a zspage they empty is not counted).
    pub fn total_pages(&self) -> usize {
        self.drain_all();
        self.frames.held()
    }

    /// Smallest size stored one object per frame.
    pub fn huge_class_size(&self) -> usize {
        self.table.huge_class_size()
    }

    /// Index of the (merged) class an object of `size` bytes lands in.
    pub fn lookup_class_index(&self, size: usize) -> Result<usize> {
        if size == 0 || size > self.max_object_size {
            return Err(Error::Invalid("size outside 1..the pool's max_object_size"));
        }
        Ok(self.table.classes()[self.table.class_for(size)].index)
    }

    /// The size an object was allocated with, so that a caller storing objects of
    /// varying length (compressed data) needs no length table of its own. The pin
    /// keeps the object in place while its size is read: beside its slot in the dense
    /// layout (no lock), in its zspage's entry under the class lock in the kernel's.
    /// `Busy` while the object is mapped writable, as for any shared hold.
    pub fn obj_size(&self, h: Handle) -> Result<usize> {
        let pin = self.pin_shared(h, "zs_obj_size")?;
        // Where the handle table records sizes (dense), a pin's usable bytes are the
        // object's size; a kernel-layout pin's are its class's, and the size is in its
        // place's entry.
        let size = if self.layout.sizes_beside_slots() {
            pin.usable
        } else {
            // SAFETY: slots live as long as the pool, and this one is pinned by us.
            let loc = unsafe { pin.slot().as_ref() }.load().loc();
            // SAFETY: the object is pinned, so its frame is held by its zspage and its
            // side-table word is committed.
            let fw = unsafe { self.frames.side().get(self.frames.pfn_of(loc)) };
            let zs = ZsPage::of(fw);
            // SAFETY: our pin keeps the object, hence its zspage, alive and in place.
            let ci = unsafe { (*zs).class } as usize;
            let class = &self.classes[ci];
            let _st = class.state.lock();
            let off = ZsPage::offset_in_chain(fw.index(), loc, self.frames.shift());
            // SAFETY: the zspage is alive (our pin) and we hold its class lock, which
            // protects its body.
            let s = unsafe { (*zs).state() };
            s.body.size_at(&class.spec, off).expect("the kernel layout's entries record sizes")
        };
        self.unpin(pin);
        Ok(size)
    }
}

impl Drop for PoolCore {
    fn drop(&mut self) {
        // `&mut self`: no other call can be running. Free every descriptor; the arena,
        // side table and handle table go with their regions.
        for class in self.classes.iter() {
            let st = class.state.lock();
            for zs in st.lists.all() {
                // SAFETY: list members are live descriptors made by ZsPage::create,
                // each on one list once; nothing else can reach them now, and the walk
                // has read this one's successor already.
                unsafe { ZsPage::destroy(zs) };
            }
        }
    }
}

impl std::fmt::Debug for PoolCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).field("layout", &self.table.layout()).finish()
    }
}
