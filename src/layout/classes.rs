//! Size classes: a pure table computed once at pool creation.
//!
//! A class is a size of place. Each class keeps its objects in zspages: chains of
//! `frames` order-0 frames holding `objs` places laid end to end, an object allowed to
//! straddle two frames. Two layouts are built from the same arithmetic:
//!
//! - [`Layout::Kernel`], the kernel's table exactly (mm/zsmalloc.c), with the pool's
//!   frame where the kernel has `PAGE_SIZE`: 255 classes 16 bytes apart from 32 at
//!   4 KiB frames (`ZS_MIN_ALLOC_SIZE` 32, `CLASS_BITS` 8 so the step is a 256th of
//!   the frame; 257 classes 64 and 256 bytes apart at 16 and 64 KiB), an 8-byte
//!   handle header in every non-huge object (`ZS_HANDLE_SIZE`, added to the size before the class lookup), chains of up to
//!   `CONFIG_ZSMALLOC_CHAIN_SIZE` frames (default 8, range 4..16) chosen as the length
//!   with the least tail waste, and merging of neighbouring classes whose frames and
//!   objects per zspage are equal (the smaller sizes use the larger class). The huge
//!   class size is the largest class that is neither one frame nor one object, minus
//!   `ZS_HANDLE_SIZE - 1`: 3257, 3625 and 3833 for chains of 4, 8 and 16 at 4 KiB.
//!   `tools/kernel_density.py --page-size` computes the same tables at any page size.
//! - [`Layout::Dense`], this library's default, has no size classes: objects of
//!   every size share zspages, packed end to end (`layout/dense.rs`). Its table is a list
//!   of lanes, each a lock and a set of zspages, one per thread the machine runs at
//!   once; a thread allocates in its own lane.
//!
//! The lookup from a size to its class is one table load.

use crate::frames::MIN_FRAME_SIZE;
/// Most frames a zspage may have (the kernel's chain size limit is 16), but for the
/// dense layout's one frame more ([`MAX_FRAMES`]).
pub const MAX_CHAIN: usize = 16;
/// Frames a zspage descriptor has room for: the longest chain, and a 17th for a dense
/// zspage of a pool whose objects exceed 61440 bytes at 4 KiB frames ([`dense_chain`]),
/// where an object of up to 64 KiB starting anywhere in the first frame still fits. The
/// descriptor holds it in the padding before its state: it stays 128 bytes
/// (`layout/zspage.rs`).
pub const MAX_FRAMES: usize = MAX_CHAIN + 1;
/// Fewest frames the chain limit may be set to (kernel: `CONFIG_ZSMALLOC_CHAIN_SIZE` >= 4).
pub const MIN_CHAIN: usize = 4;
/// The kernel's handle header, `ZS_HANDLE_SIZE` (sizeof(unsigned long)).
pub const KERNEL_HANDLE_SIZE: usize = 8;

/// Which class table a pool uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    /// This library's denser layout (the default).
    #[default]
    Dense,
    /// The kernel's exact table.
    Kernel,
}

impl Layout {
    /// The chain limit used when the configuration says 0.
    pub fn default_chain(self) -> usize {
        match self {
            // The kernel's CONFIG_ZSMALLOC_CHAIN_SIZE default.
            Layout::Kernel => 8,
            Layout::Dense => 16,
        }
    }
}

/// One (merged) class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassSpec {
    /// The class's index in the full table (the kernel's `class->index`): the index of
    /// the largest size merged into it.
    pub index: usize,
    /// Slot size: the stride of objects in a zspage.
    pub size: usize,
    /// Frames per zspage.
    pub frames: usize,
    /// Objects per zspage: 0 for a dense lane, whose zspages have no fixed places
    /// (what the statistics report; the layout is [`ClassTable::layout`]).
    pub objs: usize,
    /// Bytes of each place kept for the kernel's handle header.
    pub header: usize,
}

impl ClassSpec {
    /// Bytes a caller may use in a place of this class.
    pub fn usable(&self) -> usize {
        self.size - self.header
    }

    /// A huge class stores one object per frame.
    pub fn is_huge(&self) -> bool {
        self.frames == 1 && self.objs == 1
    }
}

/// The chain length (1..=chain) of frames of `frame` bytes that leaves the least unused
/// tail for places of `size`: the first such length wins a tie, and power-of-two sizes
/// take one frame (the rule of the kernel's calculate_zspage_chain_size()).
pub fn chain_length(size: usize, chain: usize, frame: usize) -> usize {
    if size.is_power_of_two() {
        return 1;
    }
    let mut best = (usize::MAX, 1);
    for k in 1..=chain {
        let waste = (k * frame) % size;
        if waste < best.0 {
            best = (waste, k);
        }
    }
    best.1
}

/// The class table of a pool.
#[derive(Clone, Debug)]
pub struct ClassTable {
    layout: Layout,
    chain: usize,
    /// The frame size the table is built for.
    frame: usize,
    /// The largest object.
    limit: usize,
    /// Every class of the full table, before merging (index -> spec of its merged class).
    merged: Vec<usize>,
    /// The merged classes, in ascending size; `merged` points into this.
    classes: Vec<ClassSpec>,
    /// Size in bytes (0..=limit) -> position in `classes` (kernel layout).
    lookup: Box<[u16]>,
    huge_class_size: usize,
    nr_full: usize,
}

/// Spacing of the kernel layout's classes above a frame of `frame` bytes: a sixteenth
/// of the frame, where the kernel spaces its classes a 256th of one apart. Compressed
/// units of 16 and 32 KiB lose on average half a step to their class; the same share
/// of a frame's worth of object would be a step of 16 times the kernel's.
pub fn large_step(frame: usize) -> usize {
    frame / 16
}

/// The kernel layout's classes above a frame of `frame` bytes for objects of up to
/// `limit` bytes, as (size, frames, objects): sizes [`large_step`] apart from a frame
/// up, the last one at least `limit` (rounded up to the step); each on the chain
/// length, from the frames one object needs up to `chain` (or those frames, if more),
/// that leaves the least tail, the first of equals: the kernel's rule for a class,
/// starting where a zspage holds an object at all.
pub fn large_classes(chain: usize, limit: usize, frame: usize) -> Vec<(usize, usize, usize)> {
    let step = large_step(frame);
    let class = |i: usize| {
        let size = frame + i * step;
        let least = size.div_ceil(frame);
        let frames = (least..=chain.max(least)).min_by_key(|&k| ((k * frame) % size, k)).unwrap_or(least);
        (size, frames, frames * frame / size)
    };
    let mut v: Vec<_> = (1..=limit.saturating_sub(frame).div_ceil(step)).map(class).collect();
    // The last class's places hold a header where a zspage holds more than one: one
    // class more if its usable bytes fall short of the limit (it is at most half the
    // longest chain, so the next one still fits in one).
    if let Some(&(size, _, objs)) = v.last() {
        if objs > 1 && size - KERNEL_HANDLE_SIZE < limit {
            v.push(class(v.len() + 1));
        }
    }
    v
}

/// The dense layout's chain of frames of `frame` bytes for objects of up to `limit`
/// bytes where `chain` is asked for: long enough that an object of `limit` bytes fits
/// in the tail of a zspage whose objects so far fill less than a frame, so that the
/// largest objects still share zspages (a 32 KiB object spans up to 9 frames of
/// 4 KiB, a 64 KiB one up to 17), and never above what a dense zspage can address
/// (`dense::MAX_BYTES`, 64 KiB and a smallest frame): 17 frames of 4 KiB for limits
/// above 61440 ([`MAX_FRAMES`]); at larger frames the dense zspage keeps the bytes it
/// has at 4 KiB (4 frames of 16 KiB, one of 64 KiB), whatever chain is asked for.
pub fn dense_chain(chain: usize, limit: usize, frame: usize) -> usize {
    chain.max(limit.div_ceil(frame) + 1).min(crate::layout::dense::MAX_BYTES / frame)
}

/// Lanes of a dense pool: as many as the CPUs this thread may run on (its affinity
/// mask), up to 16.
///
/// Counted with `sched_getaffinity`, not `std::thread::available_parallelism`, which
/// also reads the process's cgroup files on every call: a pool's creation makes no
/// file-system calls, and the library's code that runs stays small (the standard
/// library's cgroup and path parsing took 25 KiB of the text every pool's creation ran,
/// resident in every process using the library: docs/nbdkit.md). A CPU quota of a
/// cgroup is not counted: a lane no thread uses costs nothing but its lock.
fn dense_lanes() -> usize {
    // SAFETY: `set` is a plain bit set that sched_getaffinity fills and CPU_COUNT
    // reads; the size passed is its own. On failure (a mask wider than `cpu_set_t`)
    // the count of online CPUs stands in.
    let cpus = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set) as i64
        } else {
            libc::sysconf(libc::_SC_NPROCESSORS_ONLN) as i64
        }
    };
    cpus.clamp(1, 16) as usize
}

/// This thread's lane number (taken modulo a pool's lanes), kept in its word of
/// `sync::thread_words` (plus one: 0 is not yet taken).
#[inline(always)]
fn thread_lane() -> usize {
    use crate::sync::thread_words;
    match thread_words::get(thread_words::LANE) {
        0 => take_thread_lane(),
        n => n - 1,
    }
}

/// Takes this thread's lane number (its first malloc in a dense pool): threads take
/// them in turn.
#[cold]
#[inline(never)]
fn take_thread_lane() -> usize {
    use crate::sync::thread_words;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    // Relaxed: a round-robin counter, nothing is published through it. Below
    // `usize::MAX`, so that the word's lane plus one is never 0.
    let lane = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (usize::MAX >> 1);
    thread_words::set(thread_words::LANE, lane + 1);
    lane
}

impl ClassTable {
    /// Builds the table for `layout` with chains of at most `chain` frames of 4 KiB,
    /// for objects of up to a frame.
    pub fn new(layout: Layout, chain: usize) -> ClassTable {
        ClassTable::with_limit(layout, chain, MIN_FRAME_SIZE, MIN_FRAME_SIZE)
    }

    /// Builds the table for `layout` with chains of at most `chain` frames of `frame`
    /// bytes, for objects of at most `limit` bytes (`frame..=MAX_CHAIN * frame`).
    ///
    /// The dense layout has no size classes (`layout/dense.rs`): its "classes" are lanes,
    /// each with its own lock and zspages taking objects of every size, and a thread
    /// allocates in its lane. Every lane reports the largest object as its size. Its
    /// chain is long enough for the largest object wherever a zspage's tail holds it:
    /// [`dense_chain`].
    ///
    /// The kernel layout's table up to a page is the kernel's exactly; above it, while
    /// the limit asks, come the large classes ([`large_classes`]).
    pub fn with_limit(layout: Layout, chain: usize, limit: usize, frame: usize) -> ClassTable {
        assert!((MIN_CHAIN..=MAX_CHAIN).contains(&chain));
        assert!(frame.is_power_of_two() && frame >= MIN_FRAME_SIZE);
        assert!((frame..=MAX_CHAIN * frame).contains(&limit));
        if layout == Layout::Dense {
            let n = dense_lanes();
            let chain = dense_chain(chain, limit, frame);
            let classes =
                (0..n).map(|index| ClassSpec { index, size: limit, frames: chain, objs: 0, header: 0 }).collect();
            return ClassTable {
                layout,
                chain,
                frame,
                limit,
                merged: (0..n).collect(),
                classes,
                lookup: Box::new([]),
                huge_class_size: frame,
                nr_full: n,
            };
        }
        // ZS_MIN_ALLOC_SIZE = 32, ZS_SIZE_CLASS_DELTA = PAGE_SIZE >> CLASS_BITS(8), and
        // the in-object handle header. The kernel's minimum is the larger of 32 and
        // what its object index bits leave (a zspage's bytes >> OBJ_INDEX_BITS); with
        // 64-bit longs that is below 32 at every page size up to 64 KiB, so 32 here.
        let (min, step, header) = (32, frame >> 8, KERNEL_HANDLE_SIZE);
        let n_page = (frame - min).div_ceil(step) + 1;
        let mut raw: Vec<(usize, usize, usize)> = (0..n_page)
            .map(|i| {
                let size = (min + i * step).min(frame);
                let frames = chain_length(size, chain, frame);
                (size, frames, frames * frame / size)
            })
            .collect();
        raw.extend(large_classes(chain, limit, frame));
        let n = raw.len();

        // Walk from the largest class down; a class whose (frames, objects) equal those
        // of the class just above it shares that class.
        let mut rep = vec![0usize; n];
        let mut huge_class_size = 0;
        for i in (0..n).rev() {
            let (size, frames, objs) = raw[i];
            if i < n_page && huge_class_size == 0 && frames != 1 && objs != 1 {
                // The smallest object that no longer fits this class with its header.
                huge_class_size = size + 1 - header;
            }
            rep[i] = if i + 1 < n && raw[rep[i + 1]].1 == frames && raw[rep[i + 1]].2 == objs { rep[i + 1] } else { i };
        }
        let mut classes = Vec::new();
        let mut pos_of = vec![usize::MAX; n];
        for i in 0..n {
            if rep[i] == i {
                let (size, frames, objs) = raw[i];
                // One object per zspage (a page's huge class, a large class of one
                // object): no header, as the kernel keeps a huge object's handle
                // outside it.
                let h = if objs == 1 { 0 } else { header };
                pos_of[i] = classes.len();
                classes.push(ClassSpec { index: i, size, frames, objs, header: h });
            }
        }
        let merged: Vec<usize> = rep.iter().map(|&r| pos_of[r]).collect();
        let mut lookup = vec![0u16; limit + 1].into_boxed_slice();
        let mut large = n_page;
        for (s, entry) in lookup.iter_mut().enumerate() {
            *entry = if s <= frame {
                let with_header = s.max(1) + header;
                let idx = if with_header <= min { 0 } else { (with_header - min).div_ceil(step) };
                merged[idx.min(n_page - 1)] as u16
            } else {
                // The first large class whose places hold `s` bytes besides their header.
                while classes[merged[large]].usable() < s {
                    large += 1;
                }
                merged[large] as u16
            };
        }
        ClassTable { layout, chain, frame, limit, merged, classes, lookup, huge_class_size, nr_full: n }
    }

    /// The frame size the table is built for.
    pub fn frame_size(&self) -> usize {
        self.frame
    }

    /// The largest object the table takes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes the size lookup takes, as the statistics count them: two per size up to
    /// the limit (the dense layout, which has no lookup, counts as the kernel's).
    pub fn lookup_bytes(&self) -> usize {
        (self.limit + 1) * 2
    }

    /// The layout this table was built for.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The chain limit.
    pub fn chain(&self) -> usize {
        self.chain
    }

    /// The merged classes, ascending.
    pub fn classes(&self) -> &[ClassSpec] {
        &self.classes
    }

    /// Number of classes in the full table before merging (255 for the kernel's).
    pub fn nr_full_classes(&self) -> usize {
        self.nr_full
    }

    /// Position in [`classes`](Self::classes) of the class for an object of `size`
    /// bytes (1..=[`limit`](Self::limit)): for the dense layout, the calling thread's
    /// lane.
    #[inline]
    pub fn class_for(&self, size: usize) -> usize {
        if self.layout == Layout::Dense {
            let (lane, lanes) = (thread_lane(), self.classes.len());
            // The division only for threads past the lanes' count.
            return if lane < lanes { lane } else { lane % lanes };
        }
        self.lookup[size] as usize
    }

    /// Position of the merged class that full-table `index` belongs to.
    pub fn merged_of(&self, index: usize) -> Option<usize> {
        self.merged.get(index).copied()
    }

    /// Position of the class whose own index is `index` (None if `index` names no
    /// merged class).
    pub fn by_index(&self, index: usize) -> Option<usize> {
        let pos = self.merged_of(index)?;
        (self.classes[pos].index == index).then_some(pos)
    }

    /// Smallest object size stored one object per frame. The dense layout packs
    /// every size with others; only a full page takes a frame's worth of bytes.
    pub fn huge_class_size(&self) -> usize {
        self.huge_class_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's rules, restated independently of the table builder, with pages of
    /// `page` bytes: for every class index, the size, the chain, the objects.
    fn kernel_reference_at(chain: usize, page: usize) -> Vec<(usize, usize, usize)> {
        let delta = page / 256;
        (0..(page - 32).div_ceil(delta) + 1)
            .map(|i| {
                let size = (32 + delta * i).min(page);
                let frames = if size & (size - 1) == 0 {
                    1
                } else {
                    (1..=chain).min_by_key(|k| ((k * page) % size, *k)).unwrap()
                };
                (size, frames, frames * page / size)
            })
            .collect()
    }

    fn kernel_reference(chain: usize) -> Vec<(usize, usize, usize)> {
        kernel_reference_at(chain, 4096)
    }

    /// At 16 and 64 KiB frames the table is the kernel's at those page sizes: 257
    /// classes, merged as at 4 KiB, the huge class size where the kernel puts it.
    #[test]
    fn kernel_table_at_larger_frames_follows_the_page_size() {
        for frame in [16384, 65536] {
            for chain in [4, 8, 16] {
                let t = ClassTable::with_limit(Layout::Kernel, chain, frame, frame);
                let reference = kernel_reference_at(chain, frame);
                assert_eq!((t.nr_full_classes(), reference.len()), (257, 257), "frame {frame}");
                let mut huge = 0;
                for (i, &(size, frames, objs)) in reference.iter().enumerate().rev() {
                    if huge == 0 && frames != 1 && objs != 1 {
                        huge = size + 1 - 8;
                    }
                    let c = t.classes()[t.merged_of(i).unwrap()];
                    let mut j = i;
                    while j + 1 < reference.len() && reference[j + 1].1 == frames && reference[j + 1].2 == objs {
                        j += 1;
                    }
                    assert_eq!((c.index, c.size, c.frames, c.objs), (j, reference[j].0, frames, objs), "class {i}");
                }
                assert_eq!(t.huge_class_size(), huge, "frame {frame}, chain {chain}");
                for s in (1..=frame).step_by(7).chain([frame]) {
                    let c = t.classes()[t.class_for(s)];
                    assert!(c.usable() >= s, "size {s} fits its place");
                    assert_eq!(c.is_huge(), s >= huge, "size {s}, frame {frame}, chain {chain}");
                }
            }
        }
    }

    #[test]
    fn kernel_table_matches_published_rules() {
        for (chain, huge) in [(4, 3257), (8, 3625), (16, 3833)] {
            let t = ClassTable::new(Layout::Kernel, chain);
            let reference = kernel_reference(chain);
            assert_eq!(t.nr_full_classes(), 255);
            assert_eq!(t.huge_class_size(), huge, "chain {chain}");
            for (i, &(size, frames, objs)) in reference.iter().enumerate() {
                let c = t.classes()[t.merged_of(i).unwrap()];
                // Merged into the nearest larger class with equal frames and objects.
                let mut j = i;
                while j + 1 < 255 && reference[j + 1].1 == frames && reference[j + 1].2 == objs {
                    j += 1;
                }
                assert_eq!(c.index, j, "chain {chain} class {i}");
                assert_eq!((c.frames, c.objs), (frames, objs), "chain {chain} class {i}");
                assert_eq!(c.size, reference[j].0);
                let _ = size;
            }
            // zs_malloc adds the 8-byte header before the lookup.
            for s in 1..=4096usize {
                let idx = if s + 8 <= 32 { 0 } else { (s + 8 - 32).div_ceil(16).min(254) };
                assert_eq!(t.class_for(s), t.merged_of(idx).unwrap());
                let c = t.classes()[t.class_for(s)];
                assert!(c.usable() >= s, "size {s} fits its place");
                assert_eq!(c.is_huge(), s >= huge, "size {s}, chain {chain}");
            }
        }
    }

    /// The classes above a page, restated: sizes 256 bytes apart from 4352 up to the
    /// limit (and one more if the last one's places, less a header, fall short of it);
    /// frames from the fewest that hold one object up to the chain, the least tail
    /// first; merged as below a page; no header where a zspage holds one object.
    #[test]
    fn kernel_classes_above_a_page_match_their_rules() {
        for chain in [4, 8, 16] {
            for limit in [4097, 8192, 10240, 16384, 20000, 32768, 40000, 65535, 65536] {
                let t = ClassTable::with_limit(Layout::Kernel, chain, limit, 4096);
                let mut reference = kernel_reference(chain);
                let mut size: usize = 4096;
                loop {
                    let last = reference.last().unwrap();
                    if last.0 > 4096 && last.0 - if last.2 == 1 { 0 } else { 8 } >= limit {
                        break;
                    }
                    size += 256;
                    let least = size.div_ceil(4096);
                    let mut frames = least;
                    for k in least..=chain.max(least) {
                        if (k * 4096) % size < (frames * 4096) % size {
                            frames = k;
                        }
                    }
                    reference.push((size, frames, frames * 4096 / size));
                }
                assert_eq!(t.nr_full_classes(), reference.len(), "chain {chain}, limit {limit}");
                for (i, &(_, frames, objs)) in reference.iter().enumerate() {
                    let c = t.classes()[t.merged_of(i).unwrap()];
                    let mut j = i;
                    while j + 1 < reference.len() && reference[j + 1].1 == frames && reference[j + 1].2 == objs {
                        j += 1;
                    }
                    assert_eq!((c.index, c.size, c.frames, c.objs), (j, reference[j].0, frames, objs), "class {i}");
                    assert_eq!(c.header, if objs == 1 { 0 } else { 8 }, "class {i}");
                    assert!(c.frames <= MAX_CHAIN && c.objs >= 1);
                }
                for s in 4097..=limit {
                    let c = t.classes()[t.class_for(s)];
                    assert!(c.usable() >= s, "{s} bytes fit their place");
                    let below = t.classes().iter().filter(|d| d.size > 4096 && d.size < c.size);
                    assert!(below.clone().all(|d| d.usable() < s), "{s} bytes: the smallest class that fits");
                }
                // Up to a page, and the huge class size, as the kernel's.
                let small = ClassTable::new(Layout::Kernel, chain);
                assert_eq!(t.huge_class_size(), small.huge_class_size());
                assert!((1..=4096).all(|s| t.classes()[t.class_for(s)] == small.classes()[small.class_for(s)]));
            }
        }
    }

    #[test]
    fn dense_chain_holds_the_largest_object_past_a_frame() {
        assert_eq!(dense_chain(16, 4096, 4096), 16);
        assert_eq!(dense_chain(4, 4096, 4096), 4, "a page's limit keeps the chain asked for");
        assert_eq!(dense_chain(4, 32768, 4096), 9, "a 32 KiB object spans up to 9 frames");
        assert_eq!(dense_chain(4, 61440, 4096), 16, "a 60 KiB object spans up to 16 frames");
        assert_eq!(dense_chain(4, 61441, 4096), 17, "past 60 KiB, an object may span 17");
        assert_eq!(dense_chain(16, 65536, 4096), 17, "the longest chain: a 64 KiB object past a frame's start");
        assert_eq!(MAX_FRAMES, 17);
        // Larger frames: the zspage keeps at most 64 KiB, the dense layout's reach.
        assert_eq!(dense_chain(16, 16384, 16384), 4);
        assert_eq!(dense_chain(4, 65536, 16384), 4);
        assert_eq!(dense_chain(8, 65536, 65536), 1);
        let t = ClassTable::with_limit(Layout::Dense, 4, 16384, 4096);
        assert!(t.classes().iter().all(|c| (c.frames, c.size) == (5, 16384)));
    }

    #[test]
    fn known_kernel_values_chain_8() {
        let t = ClassTable::new(Layout::Kernel, 8);
        // Spot values computed by hand from the rules: 3632 bytes takes 8 frames for 9
        // objects (80 bytes of tail), 48 bytes takes 3 frames for 256 objects.
        let c = t.classes()[t.by_index((3632 - 32) / 16).unwrap()];
        assert_eq!((c.size, c.frames, c.objs), (3632, 8, 9));
        let c = t.classes()[t.by_index(1).unwrap()];
        assert_eq!((c.size, c.frames, c.objs), (48, 3, 256));
        assert_eq!(t.by_index(254).map(|p| t.classes()[p].size), Some(4096));
    }

    #[test]
    fn dense_table_is_lanes() {
        for chain in [4, 8, 16] {
            let t = ClassTable::new(Layout::Dense, chain);
            assert!(!t.classes().is_empty() && t.classes().len() <= 16);
            for (i, c) in t.classes().iter().enumerate() {
                assert_eq!((c.index, c.size, c.frames, c.objs, c.header), (i, 4096, chain, 0, 0));
                assert_eq!(t.by_index(i), Some(i));
                assert!(!c.is_huge());
            }
            assert_eq!(t.huge_class_size(), 4096);
            let mine = t.class_for(1);
            assert!((1..=4096).all(|s| t.class_for(s) == mine), "one thread, one lane, every size");
        }
    }
}
