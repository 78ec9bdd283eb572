//! The seam between the two layouts: every question the pool, compaction, migration,
//! the statistics and the checker ask of a layout, answered here. With the class
//! table (`layout/classes.rs`, which builds size classes or lanes), this is the only place that
//! asks which layout a pool uses.
//!
//! | question | kernel layout (`layout/kernel.rs`) | dense layout (`layout/dense.rs`) |
//! |---|---|---|
//! | a zspage's contents ([`Body`]) | an entry per fixed place, a free list | the holes between objects, the tail |
//! | placing an object | the first free place | the tail, else the first hole that fits |
//! | where an object's size is | its place's entry | beside its handle slot |
//! | listing a zspage's objects | its entries | a pass over the handle table (`handle/locate.rs`) |
//! | a zspage's list | its fullness group | the bucket of its longest free run |
//! | malloc's zspage ([`Layout::pick`]) | the head of the fullest group not full | the tightest that fits |
//! | a new zspage's length | the class's chain | the lane's chain, shorter for rising sizes |
//! | compaction's sources ([`Sweep`]) | one at a time: the emptiest not tried, while a zspage's worth of places is free | chosen at the start, put on the drain list |
//! | compaction's destination | the fullest other zspage not full | where malloc would place it, a new zspage if none fits |
//! | frames compaction could free | whole zspages of free places | whole zspages of free bytes |
//! | the checker | the free list; the group | the holes against the objects found; the bucket |

pub mod classes;
pub mod dense;
pub mod kernel;
pub(crate) mod lists;
// The loom and helgrind builds box their zspage descriptors and leave the store out
// (`zspage.rs`, `DESCRIPTORS`).
#[cfg_attr(any(loom, zs_valgrind), allow(dead_code))]
pub(crate) mod slab;
pub mod zspage;

use std::collections::{HashMap, HashSet};

use crate::frames::pfn_of;
use crate::handle::locate::{locate, objects_now};
use crate::handle::HandleTable;
use crate::layout::classes::{ClassSpec, Layout};
use crate::layout::dense::{bucket, bucket_for, list_of, FreeSpace, BANDS, BUCKETED_RUN, DRAIN, NR_LISTS, TOP_BUCKET};
use crate::layout::kernel::{fullness_group, Objects, GROUP_EMPTY, GROUP_FULL, NR_GROUPS};
use crate::layout::lists::Lists;
use crate::layout::zspage::{Body, ZsPage};

/// An object of a zspage, as the holder of its class lock sees it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    /// Its handle slot.
    pub idx: u32,
    /// Where it starts in the chain.
    pub off: usize,
    /// The bytes of it a move copies: its size (dense), its place's usable bytes
    /// (kernel).
    pub len: usize,
    /// The size malloc was asked for.
    pub size: usize,
}

impl Layout {
    /// The contents of a new, empty zspage of class `spec` over `frames` frames of
    /// `1 << shift` bytes.
    pub(crate) fn body(self, spec: &ClassSpec, frames: usize, shift: u32) -> Body {
        match self {
            Layout::Kernel => Body::Kernel(Objects::new(spec.objs)),
            // A lane's size is the pool's largest object.
            Layout::Dense => Body::Dense(FreeSpace::with_bands(frames << shift, spec.size > BUCKETED_RUN)),
        }
    }

    /// Whether the handle table records each object's size beside its slot (the
    /// dense layout's readers find it there; the kernel layout's take their class's).
    pub(crate) fn sizes_beside_slots(self) -> bool {
        self == Layout::Dense
    }

    /// The average object size the handle table is sized for: the smallest class's
    /// (kernel), 16 bytes (dense, whose objects may be as small as 1 byte).
    pub(crate) fn smallest_object(self, smallest_class: &ClassSpec) -> usize {
        match self {
            Layout::Kernel => smallest_class.size,
            Layout::Dense => 16,
        }
    }

    /// The zspage malloc places an object of `len` bytes in: the head of the fullest
    /// group that is not full (kernel: any zspage not full fits), or the tightest
    /// zspage that fits (dense). None: a new zspage is needed.
    #[inline(always)]
    pub(crate) fn pick(self, lists: &Lists, len: usize) -> Option<*mut ZsPage> {
        match self {
            Layout::Kernel => (GROUP_EMPTY..GROUP_FULL).rev().map(|g| lists.head(g)).find(|z| !z.is_null()),
            Layout::Dense if len > BUCKETED_RUN => pick_large(lists, len),
            // Where no bucket has room, a pool of large objects may have zspages with
            // room on its bands (none in other pools: the branch taken only before a
            // new zspage is opened).
            Layout::Dense => pick_fitting(lists, len).or_else(|| first_band(lists, DRAIN + 1)),
        }
    }

    /// Frames of the zspage malloc opens for an object of `len` bytes in a class of
    /// `spec`: the class's chain (kernel); for the dense layout, as long as the sizes
    /// arriving call for ([`Arrivals`](crate::layout::dense::Arrivals), which notes this
    /// opening first: malloc's openings tell how sizes arrive, where compaction's,
    /// always the whole chain, follow the objects' places), and no longer than
    /// `headroom` (the frames the page limit leaves) allows. Frames of `1 << shift`
    /// bytes.
    pub(crate) fn zspage_frames(
        self,
        lists: &mut Lists,
        spec: &ClassSpec,
        len: usize,
        shift: u32,
        headroom: impl FnOnce() -> usize,
    ) -> usize {
        match self {
            Layout::Kernel => spec.frames,
            Layout::Dense => {
                lists.arrivals.note(len);
                // An object takes the frames its bytes need (one, up to a frame); past
                // the page limit's headroom, the frame source refuses the zspage.
                let frame = 1 << shift;
                lists.arrivals.zspage_frames(len, spec.frames, frame).min(headroom()).max(len.div_ceil(frame))
            }
        }
    }

    /// Frames compaction could free in a class of `spec` with `zspages` zspages,
    /// `live` objects and `requested` bytes of them: whole zspages' worth of free
    /// places (the kernel's zs_can_compact()), or of free bytes (dense, where an
    /// object takes exactly its size). Frames of `1 << shift` bytes.
    pub(crate) fn freeable(self, spec: &ClassSpec, zspages: usize, live: usize, requested: usize, shift: u32) -> usize {
        match self {
            Layout::Kernel => (zspages * spec.objs).saturating_sub(live) / spec.objs * spec.frames,
            Layout::Dense => {
                let cap = spec.frames << shift;
                (zspages * cap).saturating_sub(requested) / cap * spec.frames
            }
        }
    }

    /// Whether a compaction of a class of `spec` with `zspages` zspages, `live`
    /// objects and `drainable` bytes ([`Body::drainable`], summed) finds a zspage to
    /// empty: the kernel's while a whole zspage's worth of places is free (its
    /// `Sweep::next_source`); the dense layout's when [`drain_count`] is not 0, which
    /// is exactly when the free bytes of the zspages at least 1/[`DRAIN_FREE_SHARE`]
    /// free reach a whole chain (the prefix it looks for can always be all of them,
    /// their free bytes only adding up). Frames of `1 << shift` bytes.
    pub(crate) fn sweep_due(self, spec: &ClassSpec, zspages: usize, live: usize, drainable: usize, shift: u32) -> bool {
        match self {
            Layout::Kernel => (zspages * spec.objs).saturating_sub(live) >= spec.objs,
            Layout::Dense => drainable >= spec.frames << shift,
        }
    }

    /// The slots of the objects in the frames `frames()` names, by key, for the
    /// layouts whose zspages do not list their objects: one pass over the handle table
    /// (dense, see `handle/locate.rs`); nothing for the kernel layout, whose entries list
    /// them (`frames` is not called). Frames of `1 << shift` bytes.
    pub(crate) fn locate(
        self,
        handles: &HandleTable,
        shift: u32,
        frames: impl FnOnce() -> Vec<(u32, usize)>,
    ) -> HashMap<usize, Vec<u32>> {
        match self {
            Layout::Kernel => HashMap::new(),
            Layout::Dense => locate(handles, frames(), shift),
        }
    }
}

/// What the class counts of a body, kept by `PoolCore::edit_body` around each edit: a
/// [`Body`], or a dense one's [`FreeSpace`] once matched, so that a dense-only path
/// edits it without matching the body again on each question.
pub(crate) trait Accounted {
    /// Bytes of metadata the body holds outside the descriptor.
    fn meta_bytes(&self) -> usize;
    /// The free bytes of a zspage worth emptying, else 0 (see [`Body::drainable`]).
    fn drainable(&self) -> usize;
}

impl Accounted for Body {
    #[inline(always)]
    fn meta_bytes(&self) -> usize {
        Body::meta_bytes(self)
    }
    #[inline(always)]
    fn drainable(&self) -> usize {
        Body::drainable(self)
    }
}

impl Accounted for FreeSpace {
    #[inline(always)]
    fn meta_bytes(&self) -> usize {
        FreeSpace::meta_bytes(self)
    }
    #[inline(always)]
    fn drainable(&self) -> usize {
        FreeSpace::drainable(self)
    }
}

impl Body {
    /// Places an object of `size` bytes whose handle slot is `idx`; returns its offset
    /// in the chain, or None if it does not fit.
    #[inline(always)]
    pub(crate) fn place(&mut self, spec: &ClassSpec, size: usize, idx: u32) -> Option<usize> {
        match self {
            Body::Kernel(o) => o.place(idx, size).map(|obj| obj * spec.size),
            Body::Dense(x) => x.place(size),
        }
    }

    /// Starts bringing in what a [`remove`](Self::remove) reads first: the dense
    /// layout's hole offsets and lengths.
    #[inline(always)]
    pub(crate) fn prefetch(&self) {
        if let Body::Dense(x) = self {
            x.prefetch();
        }
    }

    /// Removes the object at chain offset `off`, whose handle slot is `idx`; returns
    /// its size. `beside_slot` is the size the handle table records beside the slot
    /// (Some for the dense layout, whose body needs it; the kernel's entries have it).
    #[inline(always)]
    pub(crate) fn remove(&mut self, spec: &ClassSpec, off: usize, idx: u32, beside_slot: Option<usize>) -> usize {
        match self {
            Body::Kernel(o) => {
                let e = o.remove(off / spec.size);
                debug_assert_eq!({ e.link }, idx, "the place's entry names another slot");
                e.len()
            }
            Body::Dense(x) => {
                let size = beside_slot.expect("a dense pool's table records sizes");
                x.remove(off, size);
                size
            }
        }
    }

    /// Whether no object is left.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Body::Kernel(o) => o.is_empty(),
            Body::Dense(x) => x.is_empty(),
        }
    }

    /// The list the zspage belongs on: its fullness group (kernel), the bucket of its
    /// longest free run (dense).
    #[inline(always)]
    pub(crate) fn list(&self) -> usize {
        match self {
            Body::Kernel(o) => o.group(),
            Body::Dense(x) => x.list(),
        }
    }

    /// The fullness group the statistics count the zspage in: by places in use
    /// (kernel), by bytes in use (dense).
    pub(crate) fn fullness(&self) -> usize {
        match self {
            Body::Kernel(o) => o.group(),
            Body::Dense(x) => fullness_group(x.used(), x.cap()),
        }
    }

    /// What the statistics count as the zspage's allocated objects: its places
    /// (kernel), its objects (dense, which has no places).
    pub(crate) fn objs_allocated(&self) -> usize {
        match self {
            Body::Kernel(o) => o.places(),
            Body::Dense(x) => x.len(),
        }
    }

    /// The free bytes of a zspage worth emptying (dense: at least
    /// 1/[`DRAIN_FREE_SHARE`] of it free, as [`drain_count`] takes them), else 0; 0
    /// for the kernel layout, whose compaction counts places. A lane's sum of these
    /// (`Class::drainable`) says, without its lock, whether a compaction would find
    /// anything to empty in it ([`Layout::sweep_due`]).
    #[inline(always)]
    pub(crate) fn drainable(&self) -> usize {
        match self {
            Body::Kernel(_) => 0,
            Body::Dense(x) => x.drainable(),
        }
    }

    /// Bytes of metadata the body holds outside the descriptor.
    #[inline(always)]
    pub(crate) fn meta_bytes(&self) -> usize {
        match self {
            Body::Kernel(o) => o.meta_bytes(),
            Body::Dense(x) => x.meta_bytes(),
        }
    }

    /// Gives back what the body holds to grow (a dense zspage's hole entries' room).
    pub(crate) fn shrink_to_fit(&mut self) {
        if let Body::Dense(x) = self {
            x.shrink_to_fit();
        }
    }

    /// The size of the object at chain offset `off`, where the body records it (the
    /// kernel's entries); None where it does not (dense: beside the handle slot).
    pub(crate) fn size_at(&self, spec: &ClassSpec, off: usize) -> Option<usize> {
        match self {
            Body::Kernel(o) => Some(o.entry(off / spec.size).len()),
            Body::Dense(_) => None,
        }
    }

    /// The objects of zspage `zs`, whose body this is, as the holder of its class
    /// lock sees them: from the entries (kernel), or from `found`, the slots a pass
    /// over the handle table found in its frames, as they are now (dense). Frames of
    /// `1 << shift` bytes.
    pub(crate) fn objects(
        &self,
        zs: &ZsPage,
        spec: &ClassSpec,
        handles: &HandleTable,
        found: &[u32],
        shift: u32,
    ) -> Vec<Object> {
        match self {
            Body::Kernel(o) => o
                .allocated()
                .map(|(obj, e)| Object { idx: e.link, off: obj * spec.size, len: spec.usable(), size: e.len() })
                .collect(),
            Body::Dense(_) => objects_now(handles, found, |loc| chain_offset(zs, loc, shift))
                .into_iter()
                .map(|o| Object { idx: o.idx, off: o.off, len: o.len, size: o.len })
                .collect(),
        }
    }

    /// The objects of `zs` whose bytes overlap `bytes` of its chain, as (handle
    /// slot, chain offset): all of them, or None. The kernel layout finds them from
    /// its places (an object's place is its class size, its header included); the
    /// dense layout among `found` (see [`objects`](Self::objects)), and only if those
    /// with the free bytes cover the range: otherwise a slot was missed, and the
    /// caller passes over the handle table again.
    pub(crate) fn objects_in(
        &self,
        zs: &ZsPage,
        spec: &ClassSpec,
        handles: &HandleTable,
        found: &[u32],
        bytes: std::ops::Range<usize>,
        shift: u32,
    ) -> Option<Vec<(u32, usize)>> {
        let (lo, hi) = (bytes.start, bytes.end);
        match self {
            Body::Kernel(o) => {
                let first = lo.saturating_sub(spec.size - 1) / spec.size;
                let last = hi.div_ceil(spec.size);
                Some(
                    o.allocated_in(first..last)
                        .map(|(obj, e)| (e.link, obj * spec.size))
                        .filter(|&(_, off)| off < hi && off + spec.size > lo)
                        .collect(),
                )
            }
            Body::Dense(x) => {
                let inside: Vec<Object> = self
                    .objects(zs, spec, handles, found, shift)
                    .into_iter()
                    .filter(|o| o.off < hi && o.off + x.extent(o.len) > lo)
                    .collect();
                // An object takes its size rounded up to the zspage's grain.
                let taken: usize = inside.iter().map(|o| (o.off + x.extent(o.len)).min(hi) - o.off.max(lo)).sum();
                (taken + x.free_in(lo, hi) == hi - lo).then(|| inside.iter().map(|o| (o.idx, o.off)).collect())
            }
        }
    }

    /// Checks the body of a zspage of `nframes` frames in a class of `spec`, on list
    /// `g`, against its objects as [`objects`](Self::objects) listed them: the
    /// layout's own invariants (`layout/kernel.rs`, `layout/dense.rs`), that an empty zspage was
    /// not kept, its length (frames of `1 << shift` bytes), and that it is on the list
    /// it calls for.
    pub(crate) fn check(
        &self,
        spec: &ClassSpec,
        nframes: usize,
        g: usize,
        objects: &[Object],
        shift: u32,
    ) -> Result<(), String> {
        match self {
            Body::Kernel(o) => {
                if nframes != spec.frames {
                    return Err(format!("zspage has {nframes} frames"));
                }
                if g >= NR_GROUPS {
                    return Err(format!("zspage on list {g}"));
                }
                if o.group() != g {
                    return Err(format!("{}/{} in group {g}", o.len(), o.places()));
                }
                if g == GROUP_EMPTY {
                    return Err("an empty zspage was kept".into());
                }
                o.check()
            }
            Body::Dense(x) => {
                if nframes > spec.frames {
                    return Err(format!("zspage has {nframes} frames"));
                }
                let mut extents: Vec<(usize, usize)> = objects.iter().map(|o| (o.off, o.len)).collect();
                x.check(&mut extents)?;
                if x.is_empty() {
                    return Err("an empty zspage was kept".into());
                }
                if x.cap() != nframes << shift {
                    return Err(format!("zspage of {} bytes", x.cap()));
                }
                if g != DRAIN && g != x.list() {
                    return Err(format!("zspage with a run of {} bytes in bucket {g}", x.longest_run()));
                }
                Ok(())
            }
        }
    }
}

/// The chain offset of arena location `loc` if it lies in one of `zs`'s frames.
fn chain_offset(zs: &ZsPage, loc: u64, shift: u32) -> Option<usize> {
    let pfn = pfn_of(loc, shift);
    let k = zs.frame_list().position(|p| p == pfn)?;
    Some(ZsPage::offset_in_chain(k, loc, shift))
}

impl Lists {
    /// Moves `zs` to the list its body now calls for, unless compaction is draining
    /// it.
    ///
    /// # Safety
    /// 1. `zs` is a live descriptor on one of this class's lists;
    /// 2. the class lock is held;
    /// 3. no reference to `zs`'s state is alive.
    #[inline(always)]
    pub(crate) unsafe fn relist(&mut self, zs: *mut ZsPage) {
        // SAFETY: `zs` is live (1); `state` asks for its class's lock (2) and no other
        // reference to its state (3); this one ends with the statement.
        let want = unsafe { (*zs).state() }.body.list();
        // SAFETY: `relist_to` asks for 1, 2 and 3, which still hold, and the list the
        // body calls for: `want`, just read.
        unsafe { self.relist_to(zs, want) };
    }

    /// [`relist`](Self::relist) to list `want`, which the caller has from the body
    /// (`Body::list`), unless compaction is draining the zspage.
    ///
    /// # Safety
    /// As for [`relist`](Self::relist); and `want` is the list `zs`'s body calls for.
    #[inline(always)]
    pub(crate) unsafe fn relist_to(&mut self, zs: *mut ZsPage, want: usize) {
        // SAFETY: `zs` is live (1); `state` asks for its class's lock (2) and no other
        // reference to its state (3); this one ends with the block.
        let now = unsafe {
            let s = (*zs).state();
            debug_assert_eq!(want, s.body.list(), "the list the body calls for");
            s.group as usize
        };
        if now != want && now != DRAIN {
            // SAFETY: `move_to` asks for 1, 2 and 3, which still hold.
            unsafe { self.move_to(zs, want) };
        }
    }

    /// Takes a zspage off the drain list and puts it on the list its body calls for.
    ///
    /// # Safety
    /// 1. `zs` is a live descriptor on this class's drain list;
    /// 2. the class lock is held;
    /// 3. no reference to `zs`'s state is alive.
    pub(crate) unsafe fn undrain(&mut self, zs: *mut ZsPage) {
        // SAFETY: `state` asks for a live descriptor (1), its class's lock (2) and no
        // other reference to its state (3), and the one taken ends before `move_to`,
        // which asks for the same on a list (the drain list is one).
        unsafe {
            let want = (*zs).state().body.list();
            self.move_to(zs, want);
        }
    }
}

/// The dense zspage to place `len` bytes in, tightest first: the head of the bucket
/// `len` falls in if its run fits, else the head of the lowest bucket whose every
/// zspage fits it.
#[inline(always)]
fn pick_fitting(lists: &Lists, len: usize) -> Option<*mut ZsPage> {
    let own = bucket(len);
    let head = lists.head(own);
    // SAFETY: a list's head is a live dense zspage of this lane, whose lock the caller
    // holds (it has `&Lists` through the guard); no reference to its state is alive
    // (`ZsPage::state`).
    let own_fits = !head.is_null() && unsafe { run_of(head) } >= len;
    // The lowest bucket below the top one that fits (in the bitmap), else the top
    // one: `trailing_zeros` of an empty set is 64.
    let fits = lists.nonempty() & u64::MAX.checked_shl(bucket_for(len) as u32).unwrap_or(0);
    let other = (fits.trailing_zeros() as usize).min(TOP_BUCKET);
    // Whether the own bucket's head fits is a coin toss: choose without a branch the
    // processor would mispredict half the time.
    let mask = (own_fits as usize).wrapping_neg();
    let zs = lists.head((own & mask) | (other & !mask));
    (!zs.is_null()).then_some(zs)
}

/// Zspages of one list [`pick_large`] looks at for the tightest fit.
pub const LARGE_PICK_SCAN: usize = 32;

/// The dense zspage to place `len` bytes in, for an object larger than a page: the
/// tightest fit among the first [`LARGE_PICK_SCAN`] zspages of the list whose runs
/// are about `len` (the top bucket, or a band: some fit it, some do not), else the
/// head of the lowest band above it (every one fits). Bands exist in the pools that
/// take objects larger than a page; out of line, so that placing small objects stays
/// as it was.
#[inline(never)]
fn pick_large(lists: &Lists, len: usize) -> Option<*mut ZsPage> {
    let own = list_of(len, true);
    let tightest = lists
        .list(own)
        .take(LARGE_PICK_SCAN)
        // SAFETY: list members are live dense zspages of this lane, whose lock the
        // caller holds (it has `&Lists` through the guard); no reference to their
        // state is alive (`ZsPage::state`).
        .map(|zs| (unsafe { run_of(zs) }, zs))
        .filter(|&(run, _)| run >= len)
        .min_by_key(|&(run, _)| run)
        .map(|(_, zs)| zs);
    tightest.or_else(|| first_band(lists, if own == TOP_BUCKET { DRAIN + 1 } else { own + 1 }))
}

/// The head of the first band list from `from` on that has one.
fn first_band(lists: &Lists, from: usize) -> Option<*mut ZsPage> {
    (from..NR_LISTS).map(|g| lists.head(g)).find(|zs| !zs.is_null())
}

const _: () = assert!(DRAIN + BANDS + 1 == NR_LISTS, "the bands are the lists after the drain list");

/// The longest free run of a dense zspage.
///
/// # Safety
/// 1. `zs` is a live dense zspage;
/// 2. the caller holds its class lock;
/// 3. no reference to its state is alive.
#[inline(always)]
unsafe fn run_of(zs: *mut ZsPage) -> usize {
    // SAFETY: `state` asks for a live descriptor (1), its class's lock (2) and no other
    // reference to its state (3); this one ends with the statement.
    match &unsafe { (*zs).state() }.body {
        Body::Dense(x) => x.longest_run(),
        Body::Kernel(_) => unreachable!("a kernel-layout zspage in a dense lane"),
    }
}

/// A dense zspage is worth emptying when at least 1 / this of it is free.
pub const DRAIN_FREE_SHARE: usize = 16;

/// The free bytes of a dense zspage with `used` of its `cap` bytes in use, if at least
/// 1/[`DRAIN_FREE_SHARE`] of it is free (what makes it a source for
/// [`drain_count`]); else 0.
#[inline(always)]
pub(crate) fn drainable(used: usize, cap: usize) -> usize {
    let free = cap - used;
    if free * DRAIN_FREE_SHARE >= cap {
        free
    } else {
        0
    }
}

/// How many of a lane's zspages, as (bytes in use, bytes) ordered by the share in
/// use ascending, to empty: the longest prefix of zspages with at least
/// 1/[`DRAIN_FREE_SHARE`] of their bytes free whose objects fit in the bytes of the
/// prefix less one whole zspage (`chain_bytes`), so that emptying them gives frames
/// back even if every object lands in a new zspage. 0 if no prefix frees anything.
pub(crate) fn drain_count(zspages: impl Iterator<Item = (usize, usize)>, chain_bytes: usize) -> usize {
    let (mut best, mut used, mut bytes) = (0, 0, 0);
    for (k, (u, cap)) in zspages.enumerate() {
        if (cap - u) * DRAIN_FREE_SHARE < cap {
            break;
        }
        used += u;
        bytes += cap;
        if used + chain_bytes <= bytes {
            best = k + 1;
        }
    }
    best
}

/// A compaction of one class, as its layout runs it: which zspages it empties, where
/// their objects go. `compact/mod.rs` drives it and moves the objects.
pub(crate) enum Sweep {
    /// The kernel's (__zs_compact in mm/zsmalloc.c): one source at a time, the
    /// emptiest zspage not tried yet, while the class has a whole zspage's worth of
    /// free places; each object to the fullest other zspage that is not full.
    Kernel { tried: HashSet<usize> },
    /// The dense layout's: the sources chosen at the start ([`drain_count`]) and put
    /// on the drain list, where malloc does not look; their objects found in one pass
    /// over the handle table; each object to wherever malloc would place it, a new
    /// zspage if none fits. `stop`: no room could be had, the rest go back.
    Dense { frames: Vec<(u32, usize)>, found: HashMap<usize, Vec<u32>>, stop: bool },
}

impl Sweep {
    /// Begins a compaction of a class of `spec` whose lists are `lists` (its lock
    /// held), frames of `1 << shift` bytes: the dense layout chooses its sources now.
    pub(crate) fn begin(layout: Layout, lists: &mut Lists, spec: &ClassSpec, shift: u32) -> Sweep {
        match layout {
            Layout::Kernel => Sweep::Kernel { tried: HashSet::new() },
            Layout::Dense => {
                let mut all: Vec<(usize, usize, *mut ZsPage)> = lists
                    .lists(0..DRAIN)
                    .chain(lists.lists(DRAIN + 1..NR_LISTS))
                    .map(|zs| {
                        // SAFETY: list members are live descriptors of the lane, whose lock
                        // is held (`lists` is borrowed from its guard); the state
                        // reference ends with the statement, and no other is taken.
                        match &unsafe { (*zs).state() }.body {
                            Body::Dense(x) => (x.used(), x.cap(), zs),
                            Body::Kernel(_) => unreachable!("a kernel-layout zspage in a dense lane"),
                        }
                    })
                    .collect();
                // Fullest last, by the share of their bytes in use.
                all.sort_unstable_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)));
                let sources = drain_count(all.iter().map(|&(used, cap, _)| (used, cap)), spec.frames << shift);
                debug_assert_eq!(
                    sources != 0,
                    all.iter().map(|&(used, cap, _)| drainable(used, cap)).sum::<usize>() >= spec.frames << shift,
                    "Layout::sweep_due is drain_count's test"
                );
                let mut frames = Vec::new();
                for &(_, _, zs) in &all[..sources] {
                    // SAFETY: `zs` is a live descriptor on one of the lane's lists (found
                    // there above, and nothing moved it since), the lane's lock is held,
                    // and no reference to its state is alive: what `move_to` asks. A
                    // live descriptor's frames are read (`frame_list`) with no more.
                    unsafe {
                        lists.move_to(zs, DRAIN);
                        frames.extend((*zs).frame_list().map(|pfn| (pfn, zs as usize)));
                    }
                }
                Sweep::Dense { frames, found: HashMap::new(), stop: false }
            }
        }
    }

    /// Finds the sources' objects, without the class lock: for the dense layout, one
    /// pass over the handle table. No object is placed in a drained zspage, so none
    /// is missed; those freed or moved meanwhile drop out under the lock
    /// ([`objects`](Self::objects)).
    pub(crate) fn find_objects(&mut self, handles: &HandleTable, shift: u32) {
        if let Sweep::Dense { frames, found, .. } = self {
            *found = locate(handles, std::mem::take(frames), shift);
        }
    }

    /// The next zspage to empty (class lock held), or None when the compaction is
    /// over; `give_up`: the budget is spent. `live` is the class's live objects.
    pub(crate) fn next_source(
        &mut self,
        lists: &mut Lists,
        spec: &ClassSpec,
        live: usize,
        give_up: bool,
    ) -> Option<*mut ZsPage> {
        match self {
            Sweep::Kernel { tried } => {
                // Whether the class has a whole zspage's worth of free places (the
                // kernel's zs_can_compact() being non-zero).
                if give_up || lists.total() * spec.objs - live < spec.objs {
                    return None;
                }
                // The emptiest not tried, scanning from the lowest group that is not
                // empty (under 10% full) up.
                let src = lists.lists(GROUP_EMPTY + 1..GROUP_FULL).find(|&zs| !tried.contains(&(zs as usize)))?;
                tried.insert(src as usize);
                Some(src)
            }
            Sweep::Dense { stop, .. } => {
                let src = lists.head(DRAIN);
                if src.is_null() {
                    return None;
                }
                if *stop || give_up {
                    // Give the rest back to malloc.
                    while !lists.head(DRAIN).is_null() {
                        // SAFETY: the drain list's head is a live zspage on it; the lane's
                        // lock is held (`lists` is borrowed from its guard); no reference
                        // to its state is alive (`ZsPage::state`).
                        unsafe { lists.undrain(lists.head(DRAIN)) };
                    }
                    return None;
                }
                Some(src)
            }
        }
    }

    /// The objects of source `src` (class lock held).
    pub(crate) fn objects(
        &mut self,
        src: &ZsPage,
        body: &Body,
        spec: &ClassSpec,
        handles: &HandleTable,
        shift: u32,
    ) -> Vec<Object> {
        let found = match self {
            Sweep::Dense { found, .. } => found.remove(&(src as *const ZsPage as usize)).unwrap_or_default(),
            Sweep::Kernel { .. } => Vec::new(),
        };
        body.objects(src, spec, handles, &found, shift)
    }

    /// Whether a source with a held object (mapped, being read or written) is left
    /// whole (dense: moving its other objects would only take room elsewhere), rather
    /// than emptied around it (kernel).
    pub(crate) fn whole_sources(&self) -> bool {
        matches!(self, Sweep::Dense { .. })
    }

    /// An existing zspage other than `src` to take an object of `len` bytes.
    pub(crate) fn destination(&self, lists: &Lists, src: *mut ZsPage, len: usize) -> Option<*mut ZsPage> {
        match self {
            // The fullest not full.
            Sweep::Kernel { .. } => {
                (GROUP_EMPTY + 1..GROUP_FULL).rev().flat_map(|g| lists.list(g)).find(|&zs| zs != src)
            }
            // Where malloc would place it: the source is on the drain list, so it is
            // never the destination.
            Sweep::Dense { .. } => Layout::Dense.pick(lists, len),
        }
    }

    /// Whether a new zspage may be taken when no zspage has room (dense).
    pub(crate) fn grows(&self) -> bool {
        matches!(self, Sweep::Dense { .. })
    }

    /// No zspage has room and none could be made (the page limit): the fullest zspage
    /// other than `src` still waiting to be emptied takes objects instead (dense).
    /// Whether there was one.
    ///
    /// # Safety
    /// 1. The class lock, whose lists `lists` are, is held;
    /// 2. no reference to the state of a zspage on the drain list is alive.
    pub(crate) unsafe fn refill(&mut self, lists: &mut Lists, src: *mut ZsPage) -> bool {
        let fullest = lists
            .list(DRAIN)
            .filter(|&zs| zs != src)
            // SAFETY: `used_bytes` asks for a live dense zspage (a member of the
            // lane's drain list), its lock (1) and no reference to its state (2).
            // The first of the fullest, as `min_by_key` keeps the first of equals.
            .min_by_key(|&zs| std::cmp::Reverse(unsafe { used_bytes(zs) }));
        match fullest {
            // SAFETY: `undrain` asks for a live zspage on the drain list (found there
            // just now), the lock (1), no reference to its state (2).
            Some(zs) => unsafe { lists.undrain(zs) },
            None => return false,
        }
        true
    }

    /// No room could be had for an object of `src`: the kernel's goes on with its next
    /// source; the dense layout's stops, and gives its sources back.
    pub(crate) fn no_room(&mut self) {
        if let Sweep::Dense { stop, .. } = self {
            *stop = true;
        }
    }

    /// Source `src` keeps objects (held ones, or no room for them): back to malloc
    /// (dense); where it is (kernel).
    ///
    /// # Safety
    /// 1. `src` is a live zspage of the class whose lists `lists` are, on one of them
    ///    (a dense source: on the drain list);
    /// 2. the class lock is held;
    /// 3. no reference to `src`'s state is alive.
    pub(crate) unsafe fn keep(&mut self, lists: &mut Lists, src: *mut ZsPage) {
        if let Sweep::Dense { .. } = self {
            // SAFETY: `undrain` asks for a live descriptor on the drain list (1: a
            // dense sweep's sources are there), the lock (2), no reference to its
            // state (3).
            unsafe { lists.undrain(src) };
        }
    }

    /// Whether the zspages' bodies are to be trimmed once objects moved (dense: the
    /// zspages the objects went to are full now, and their hole entries' room to grow
    /// is metadata held for nothing).
    pub(crate) fn trims(&self) -> bool {
        matches!(self, Sweep::Dense { .. })
    }
}

/// The bytes in use of a dense zspage.
///
/// # Safety
/// 1. `zs` is a live dense zspage;
/// 2. the caller holds its class lock;
/// 3. no reference to its state is alive.
unsafe fn used_bytes(zs: *mut ZsPage) -> usize {
    // SAFETY: `state` asks for a live descriptor (1), its class's lock (2) and no other
    // reference to its state (3); this one ends with the statement.
    match &unsafe { (*zs).state() }.body {
        Body::Dense(x) => x.used(),
        Body::Kernel(_) => unreachable!("a kernel-layout zspage in a dense lane"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_count_frees_at_least_one_zspage() {
        let cap = 16 * 4096;
        // Two half-used zspages fit in one: both are emptied.
        assert_eq!(drain_count([(cap / 2, cap), (cap / 2, cap)].into_iter(), cap), 2);
        // One half-used zspage alone would just move: nothing to gain.
        assert_eq!(drain_count([(cap / 2, cap)].into_iter(), cap), 0);
        // Three at 60% fit in two, not in one fewer of just the first two.
        assert_eq!(drain_count([(cap * 6 / 10, cap); 3].into_iter(), cap), 3);
        // A zspage with less than 1/16 free stops the prefix.
        let nearly_full = cap - cap / 32;
        assert_eq!(drain_count([(cap / 4, cap), (cap / 4, cap), (nearly_full, cap)].into_iter(), cap), 2);
        // A short zspage counts its own bytes.
        assert_eq!(drain_count([(100, 4096), (cap / 2, cap)].into_iter(), cap), 0);
        assert_eq!(drain_count([(100, 4096), (cap / 2, cap), (cap / 2, cap)].into_iter(), cap), 3);
    }
}
