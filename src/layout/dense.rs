//! The dense layout's zspages: objects of every size packed end to end.
//!
//! The kernel's layout gives each object a place of its class's size, and each class
//! its own zspages. Three costs follow, and on real compressed-page traces they are
//! most of the kernel layout's waste: the gap between an object and its class's size,
//! the tail a chain of frames leaves when it does not divide by the class size, and
//! the partly filled last zspage every class keeps. The dense layout has none of them.
//! A dense zspage takes objects of any size, each taking exactly its size, laid end
//! to end from the start of the chain (an object may straddle two frames, as in the
//! kernel's layout). Small objects fill what large ones leave at the end of a
//! zspage. Objects are not aligned: compressed data needs no alignment, and every
//! byte of padding would be memory the pool holds for nothing.
//!
//! The descriptor keeps only the zspage's free space, as [`FreeSpace`]: its holes
//! (offset and length, 4 bytes each, in address order), where the unused tail
//! starts, and counts. It keeps nothing per object. An object's size sits beside its
//! handle slot (readers need it there), and its place is the slot's location, so a
//! free knows both; the bytes an object list would take are 6 per object, a quarter
//! of the layout's overhead. Compaction, migration and the checker, which do need a
//! zspage's objects, find them in one pass over the handle table (`handle/locate.rs`).
//!
//! A freed object becomes a hole, merged with its neighbours; a hole at the end gives
//! its bytes back to the unused tail. malloc fills the tail or, when the tail is too
//! short, the first hole large enough. A tail too short for the object at hand waits
//! for a smaller one; where sizes rise and none comes, new zspages are cut to the
//! length that fits the sizes ([`Arrivals`]). Holes too small for the objects that come are
//! what compaction takes back: it moves the objects of zspages with free space into
//! others and releases the emptied ones.
//!
//! Invariants (checked by [`FreeSpace::check`] against the objects the handle table
//! locates in the zspage, run by `Pool::check`):
//! - objects and holes cover `0..end` exactly, in address order, with no gap or
//!   overlap;
//! - no two holes are neighbours, and the last byte before `end` is an object's;
//! - every length is positive, an object's at most 65536 (the largest object);
//!   `end <= cap`;
//! - the object count, the byte count and the largest hole match.
//!
//! A zspage counts its bytes in 16 bits (hole offsets and lengths, the object count):
//! up to sixteen frames of 4 KiB, four of 16 KiB, one of 64 KiB, in bytes. A chain of
//! 17 frames of 4 KiB (pools of objects above 61440 bytes, where a 64 KiB object
//! starting anywhere in the first frame still fits: `layout/classes.rs`,
//! `dense_chain`) has 69632 bytes, past 16 bits: it counts in grains of 2 bytes, an
//! object taking its size rounded up to a grain (at most a byte more). Every field
//! and hole entry is then in grains, and the functions below take and give bytes.
//! Such a zspage is the only one with more than 65536 bytes, so the grain follows
//! from its length, and every other zspage counts as before.

/// The largest object a dense zspage can hold. Hole offsets and lengths fit 16 bits in
/// a zspage of this many bytes.
pub const MAX_OBJECT: usize = crate::layout::classes::MAX_CHAIN * UNIT;

/// A dense zspage's most bytes: an object of [`MAX_OBJECT`] bytes starting anywhere in
/// the first unit still ends within them. A zspage of more than [`MAX_OBJECT`] bytes
/// counts in grains of 2 bytes (see the module comment).
pub const MAX_BYTES: usize = MAX_OBJECT + UNIT;

/// Grains in a block of [`FreeSpace`]'s length: a zspage of bytes has an even number
/// of blocks, one of 17 frames 17 blocks of 2048 grains of 2 bytes.
const GRAIN_BLOCK: usize = 2048;
const _: () = assert!(MAX_BYTES / 2 == 17 * GRAIN_BLOCK && UNIT % (2 * GRAIN_BLOCK) == 0);
/// What a zspage's bytes are counted in ([`FreeSpace`]): the smallest frame, of which
/// every frame is a whole number.
const UNIT: usize = crate::frames::MIN_FRAME_SIZE;

/// Width of a placement bucket, in bytes of a zspage's longest free run.
pub const BUCKET_BYTES: usize = 64;
/// Runs the buckets tell apart: a pool whose objects are all up to this size is listed
/// by buckets alone, whatever its frame size.
pub const BUCKETED_RUN: usize = 4096;
/// The bucket of zspages with a free run of 4096 bytes or more (any object fits in a
/// pool of objects up to that size).
pub const TOP_BUCKET: usize = BUCKETED_RUN / BUCKET_BYTES;
/// The list of zspages compaction is emptying: malloc places nothing there.
pub const DRAIN: usize = TOP_BUCKET + 1;
/// Width of a band, in bytes of a zspage's longest free run: in a pool of objects
/// larger than a page, zspages with a run of two bands or more are on band lists
/// rather than the top bucket, so that malloc finds a run that fits a large object
/// without looking through zspages whose runs do not.
pub const BAND_BYTES: usize = 2 * BUCKETED_RUN;

/// The most objects a zspage holds: what [`FreeSpace`]'s count keeps in 16 bits.
const MAX_OBJECTS: u16 = u16::MAX;

/// Band lists, after the drain list: runs of 1, 2, ... bands, the last one with
/// every longer run.
pub const BANDS: usize = 7;
/// Lists a dense lane keeps: the buckets, the drain list and the bands.
pub const NR_LISTS: usize = DRAIN + 1 + BANDS;

/// The list of a zspage whose longest free run is `run` bytes in a pool of objects up
/// to a page: its bucket. In a pool of larger objects (`bands`), a run of a band or
/// more is on its band's list instead.
#[inline]
pub fn list_of(run: usize, bands: bool) -> usize {
    if bands && run >= BAND_BYTES {
        DRAIN + (run / BAND_BYTES).min(BANDS)
    } else {
        bucket(run)
    }
}

/// The placement bucket of a zspage whose longest free run is `run` bytes: every
/// zspage in bucket `b` has a run of at least `b * BUCKET_BYTES` bytes.
#[inline]
pub fn bucket(run: usize) -> usize {
    (run / BUCKET_BYTES).min(TOP_BUCKET)
}

/// The first bucket whose every zspage fits `len` bytes.
#[inline]
pub fn bucket_for(len: usize) -> usize {
    len.div_ceil(BUCKET_BYTES)
}

/// New zspages in a row, each opened by an object no smaller than the one that opened
/// the zspage before, after which a lane takes its sizes to be arriving in ascending
/// order (see [`Arrivals`]). In a mixed order the objects that fit nowhere, and so
/// open zspages, come in no order: sixteen rising in a row is about a 1 in 16!
/// chance. In the kernel's own test workload and any sorted order every opening
/// rises.
pub const RISING_RUN: u32 = 16;

/// The sizes of the objects that opened a lane's zspages, as much as the choice of a
/// new zspage's length needs: the last one, and how many in a row have not been
/// smaller than the one before. Noted only when a zspage is opened, so malloc's
/// placement pays nothing for it.
///
/// A zspage's tail is wasted only if no object small enough to fill it comes later.
/// In mixed orders small objects keep coming, so a zspage of the whole chain wastes
/// least: it has the fewest descriptors and ends. When sizes rise, nothing smaller
/// comes, and the tail that the next object does not fit stays empty; the objects
/// that follow are about the size of the one that opened the zspage, so a chain
/// length that those objects divide closely wastes least, as the kernel chooses
/// one per size class ([`zspage_frames`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Arrivals {
    last: u32,
    rising: u32,
}

impl Arrivals {
    /// Notes a zspage opened by an object of `len` bytes.
    #[inline]
    pub fn note(&mut self, len: usize) {
        let len = len as u32;
        // All ones while sizes do not fall, zero when one does: the run restarts.
        let keep = u32::from(len >= self.last).wrapping_neg();
        self.rising = self.rising.saturating_add(1) & keep;
        self.last = len;
    }

    /// Whether the opening sizes have risen long enough to take the order as
    /// ascending.
    #[inline]
    pub fn ascending(&self) -> bool {
        self.rising >= RISING_RUN
    }

    /// Frames, at most `chain`, for a new zspage opened by an object of `len` bytes
    /// (noted already): the whole chain, unless sizes are rising (then see
    /// [`zspage_frames`]).
    pub fn zspage_frames(&self, len: usize, chain: usize, frame: usize) -> usize {
        if self.ascending() {
            zspage_frames(len, chain, frame)
        } else {
            chain
        }
    }
}

/// Bytes a zspage costs beyond its frames: its descriptor (`layout/zspage.rs` checks that
/// this is its size).
pub const DESCRIPTOR_BYTES: usize = 128;

/// The zspage length, at most `chain` frames (and at least the frames one object
/// takes), that wastes the least share of its bytes if filled with objects of `len`
/// bytes: the tail they leave plus the descriptor a zspage costs. Ties go to the
/// longer zspage. The kernel's rule for a
/// class (`chain_length` in `layout/classes.rs`) weighs the tail alone: here a shorter
/// zspage also costs a descriptor more per byte.
pub fn zspage_frames(len: usize, chain: usize, frame: usize) -> usize {
    let least = len.div_ceil(frame);
    debug_assert!(len > 0 && least <= chain);
    let descriptor = DESCRIPTOR_BYTES;
    // Waste and bytes of a zspage of `k` frames.
    let cost = |k: usize| ((k * frame) % len + descriptor, k * frame);
    (least..=chain).rev().fold(chain, |best, k| {
        let ((w, b), (bw, bb)) = (cost(k), cost(best));
        // w / b < bw / bb, without division.
        if w * bb < bw * b {
            k
        } else {
            best
        }
    })
}

/// Searches over sixteen 16-bit hole words at a time, with no branch inside a group:
/// two vector compares on x86-64 (SSE2, which every x86-64 processor has), a plain
/// loop elsewhere. A zspage in churn keeps around a dozen holes, so one group
/// usually holds them all, and the search takes no branch that depends on where
/// the answer is.
mod group {
    /// Words in a group.
    pub const LANES: usize = 16;
    /// A group of words.
    pub type Group = [u16; LANES];

    /// The first word of `g` that is at least `min`, if any.
    #[inline]
    pub fn first_at_least(g: &Group, min: u16) -> Option<usize> {
        let m = at_least(g, min);
        (m != 0).then(|| m.trailing_zeros() as usize)
    }

    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// The two halves of `g`, eight words each.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn halves(g: &Group) -> (__m128i, __m128i) {
        // SAFETY: SSE2 is part of the x86-64 baseline; the loads read the 32 bytes of
        // `g`, unaligned loads being allowed.
        unsafe { (_mm_loadu_si128(g.as_ptr().cast()), _mm_loadu_si128(g.as_ptr().add(LANES / 2).cast())) }
    }

    /// Bit `i` set where word `i` of `g` is at least `min`.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn at_least(g: &Group, min: u16) -> u32 {
        let (a, b) = halves(g);
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe {
            let min = _mm_set1_epi16(min as i16);
            // `min - v`, saturating at 0: zero exactly where `v >= min`.
            let fits = |v| _mm_cmpeq_epi16(_mm_subs_epu16(min, v), _mm_setzero_si128());
            // Packing the all-ones and all-zeros words to bytes leaves one mask bit
            // per word.
            _mm_movemask_epi8(_mm_packs_epi16(fits(a), fits(b))) as u32
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline]
    fn at_least(g: &Group, min: u16) -> u32 {
        portable_at_least(g, min)
    }

    /// [`at_least`] without vector instructions.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline]
    pub fn portable_at_least(g: &Group, min: u16) -> u32 {
        g.iter().enumerate().fold(0, |m, (i, &w)| m | u32::from(w >= min) << i)
    }

    /// Unsigned word-wise max without SSE4.1: max(a, b) = (a - b, saturating) + b.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn vmax(a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_add_epi16(_mm_subs_epu16(a, b), b) }
    }

    /// The largest of eight unsigned words: three halvings fold them into one.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn fold_max(mut v: __m128i) -> u16 {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe {
            v = vmax(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
            v = vmax(v, _mm_shuffle_epi32::<0b10_11_00_01>(v));
            v = vmax(v, _mm_shufflelo_epi16::<0b10_11_00_01>(v));
            _mm_extract_epi16::<0>(v) as u16
        }
    }

    /// The largest word of a run of groups but word `j` of the run (its position
    /// counting from the first group's first word), 0 if it has no other. The groups
    /// are folded word by word, and the eight words this leaves are folded once at
    /// the end.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub fn max_except_run<'a>(groups: impl Iterator<Item = &'a Group>, j: usize) -> u16 {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe {
            // Positions in 16-bit words: a zspage has fewer holes than that (a `j`
            // past them is clamped, and then leaves no word out).
            let j = _mm_set1_epi16(j.min(u16::MAX as usize) as u16 as i16);
            let step = _mm_set1_epi16(LANES as i16);
            let (mut lo, mut hi) =
                (_mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7), _mm_setr_epi16(8, 9, 10, 11, 12, 13, 14, 15));
            let mut most = _mm_setzero_si128();
            for g in groups {
                let (a, b) = halves(g);
                // Word `j` less 0xFFFF, saturating: 0.
                let (a, b) = (_mm_subs_epu16(a, _mm_cmpeq_epi16(lo, j)), _mm_subs_epu16(b, _mm_cmpeq_epi16(hi, j)));
                most = vmax(most, vmax(a, b));
                lo = _mm_add_epi16(lo, step);
                hi = _mm_add_epi16(hi, step);
            }
            fold_max(most)
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline]
    pub fn max_except_run<'a>(groups: impl Iterator<Item = &'a Group>, j: usize) -> u16 {
        portable_max_except_run(groups, j)
    }

    /// [`max_except_run`] without vector instructions.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline]
    pub fn portable_max_except_run<'a>(groups: impl Iterator<Item = &'a Group>, j: usize) -> u16 {
        groups.enumerate().map(|(k, g)| portable_max_except(g, j.wrapping_sub(k * LANES))).max().unwrap_or(0)
    }

    /// The largest word of `g` but word `lane`'s (0 if it has no other); all of
    /// them if `lane` is not below [`LANES`].
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline]
    pub fn portable_max_except(g: &Group, lane: usize) -> u16 {
        g.iter().enumerate().filter(|&(i, _)| i != lane).map(|(_, &w)| w).max().unwrap_or(0)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The vector searches agree with the plain ones.
            #[test]
            fn vector_and_portable_agree(g in any::<Group>(), min in any::<u16>()) {
                prop_assert_eq!(at_least(&g, min), portable_at_least(&g, min));
                prop_assert_eq!(first_at_least(&g, min), g.iter().position(|&w| w >= min));
            }

            /// The run's fold agrees with the plain one, for `j` in any group of the
            /// run or past it.
            #[test]
            fn run_max_agrees(gs in proptest::collection::vec(any::<Group>(), 0..5), j in 0usize..100) {
                prop_assert_eq!(max_except_run(gs.iter(), j), portable_max_except_run(gs.iter(), j));
                let plain = gs.iter().flatten().enumerate().filter(|&(i, _)| i != j).map(|(_, &w)| w).max();
                prop_assert_eq!(max_except_run(gs.iter(), j), plain.unwrap_or(0));
            }
        }
    }
}

use group::{Group, LANES};

/// The offset of an unused hole entry: past every hole (see `hole_position`).
const NO_OFF: u16 = u16::MAX;

/// The free space of a dense zspage (see the module comment).
///
/// One allocation holds the holes, ascending by offset: their offsets, then their
/// lengths, 16 bits each, `room` of each. The searches below look at the offsets or
/// the lengths a group of [`LANES`] at a time (`group`); entries past the holes read
/// as offset `NO_OFF`, length 0, so a group may run past the last hole. Holes are
/// few (neighbours merge), so finding one that fits is a step or two, and a free
/// touches only the holes around its object.
///
/// ```text
/// used + sum(hole lengths) == end <= cap      largest_hole == max(hole lengths)
/// (all in grains: bytes, or pairs of bytes in a zspage of more than 64 KiB)
/// holes <= room                               nobj == 0  =>  end == 0
/// ```
///
/// [`check`](Self::check) checks these and the rest of the module comment's
/// invariants against the objects found in the zspage; debug builds check these after
/// every placement and removal (a sum over a zspage's few holes).
#[derive(Debug)]
pub struct FreeSpace {
    buf: Box<[u16]>,
    /// Objects in the zspage.
    nobj: u16,
    nhole: u16,
    /// The largest hole's length, in grains (0: none).
    largest_hole: u16,
    /// The chain's grains in blocks of 2048: its bytes / 2048 (even: whole frames of
    /// at least 4 KiB, at most 32), or 17 for a chain of 17 frames of 4 KiB, which
    /// counts in grains of 2 bytes. So the grain's shift is its lowest bit, and the
    /// chain's grains `blocks << 11` either way: the hot paths pay an and and a shift
    /// or two for grains.
    blocks: u8,
    /// Whether the zspage is listed by bands ([`list_of`]): a pool of objects larger
    /// than a page.
    bands: bool,
    /// Grains in use from the start of the chain: the tail starts here.
    end: u32,
    /// Grains of objects.
    used: u32,
}

impl FreeSpace {
    /// An empty zspage of `frames` frames of 4 KiB, listed by buckets alone.
    #[cfg(test)]
    pub fn new(frames: usize) -> FreeSpace {
        FreeSpace::with_bands(frames * UNIT, false)
    }

    /// An empty zspage of `cap` bytes (whole frames, at most [`MAX_BYTES`]), listed
    /// by bands if `bands` ([`list_of`]).
    pub fn with_bands(cap: usize, bands: bool) -> FreeSpace {
        debug_assert!(cap % UNIT == 0 && (UNIT..=MAX_BYTES).contains(&cap));
        FreeSpace {
            buf: Box::new([]),
            nobj: 0,
            nhole: 0,
            largest_hole: 0,
            blocks: if cap > MAX_OBJECT { 17 } else { (cap / GRAIN_BLOCK) as u8 },
            bands,
            end: 0,
            used: 0,
        }
    }

    /// The list the zspage belongs on ([`list_of`]).
    #[inline]
    pub fn list(&self) -> usize {
        list_of(self.longest_run(), self.bands)
    }

    /// Whether no object is left.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.nobj == 0
    }

    /// Objects in the zspage.
    #[inline]
    pub fn len(&self) -> usize {
        self.nobj as usize
    }

    /// Holes between objects.
    pub fn holes(&self) -> usize {
        self.nhole as usize
    }

    /// Bytes of the chain.
    #[inline]
    pub fn cap(&self) -> usize {
        self.cap_grains() << self.grain()
    }

    /// The free bytes if at least 1/[`DRAIN_FREE_SHARE`] of the chain is free (what
    /// makes the zspage a source for compaction), else 0: `layout::drainable`,
    /// counted in grains.
    #[inline(always)]
    pub fn drainable(&self) -> usize {
        let free = self.cap_grains() - self.used as usize;
        // A 16th of the chain's grains: its blocks of 2048 grains, 128 each.
        let share = GRAIN_BLOCK / crate::layout::DRAIN_FREE_SHARE;
        if free >= self.blocks as usize * share {
            free << self.grain()
        } else {
            0
        }
    }

    /// Bytes taken by objects (with their rounding up to a grain).
    #[inline]
    pub fn used(&self) -> usize {
        (self.used as usize) << self.grain()
    }

    /// The longest run of free bytes: the largest hole or the tail. An object fits
    /// in it if its size is at most this (a run is whole grains).
    #[inline]
    pub fn longest_run(&self) -> usize {
        if self.nobj == MAX_OBJECTS {
            // Full by count: a 64 KiB zspage of one-byte objects would hold 65536, one
            // more than the count's 16 bits. So the last byte stays free and the
            // zspage is listed as full, where no placement looks for room.
            return 0;
        }
        (self.largest_hole as usize).max(self.cap_grains() - self.end as usize) << self.grain()
    }

    /// The grain the zspage counts in, as a shift: 1 (2 bytes) for a chain of more
    /// than [`MAX_OBJECT`] bytes, else 0 (see the module comment).
    #[inline]
    fn grain(&self) -> u32 {
        u32::from(self.blocks & 1)
    }

    /// The chain's grains.
    #[inline]
    fn cap_grains(&self) -> usize {
        (self.blocks as usize) * GRAIN_BLOCK
    }

    /// Grains an object of `len` bytes takes.
    #[inline]
    fn grains(&self, len: usize) -> usize {
        // A grain of 1 << g bytes, g being 0 or 1, is g + 1 bytes.
        let g = self.grain();
        (len + g as usize) >> g
    }

    /// Bytes an object of `len` bytes takes in this zspage: its size rounded up to a
    /// grain.
    #[inline]
    pub fn extent(&self, len: usize) -> usize {
        self.grains(len) << self.grain()
    }

    /// Bytes of metadata the entries hold (their allocation).
    pub fn meta_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buf)
    }

    /// Holes the buffer has room for.
    #[inline]
    fn room(&self) -> usize {
        self.buf.len() / 2
    }

    /// The entries a scan looks at: the holes, and the unused entries up to a whole
    /// group where the buffer has them.
    #[inline]
    fn scanned(&self) -> usize {
        self.holes().next_multiple_of(LANES).min(self.room())
    }

    /// Starts bringing in the first entries of both halves of the buffer (offsets
    /// and lengths), which a removal reads first.
    #[inline(always)]
    pub(crate) fn prefetch(&self) {
        let p = self.buf.as_ptr();
        crate::sync::prefetch(p.cast());
        crate::sync::prefetch(p.wrapping_add(self.room()).cast());
    }

    /// Starts bringing in the last scanned entry of a half of the buffer (offsets
    /// at 0, lengths at `room`): a search of two groups or more reaches it, and the
    /// largest hole's recount always does.
    #[inline(always)]
    fn prefetch_last(&self, half: usize) {
        let last = (half + self.scanned()).saturating_sub(1);
        crate::sync::prefetch(self.buf.as_ptr().wrapping_add(last).cast());
    }

    #[inline]
    fn hole(&self, j: usize) -> (usize, usize) {
        (self.buf[j] as usize, self.buf[self.room() + j] as usize)
    }

    #[inline]
    fn set_hole(&mut self, j: usize, off: usize, len: usize) {
        debug_assert!(off < NO_OFF as usize && len > 0 && len <= u16::MAX as usize);
        let room = self.room();
        self.buf[j] = off as u16;
        self.buf[room + j] = len as u16;
    }

    /// The scanned entries of one half of the buffer (offsets at 0, lengths at
    /// `room`), as whole groups and the words past the last whole group.
    #[inline]
    fn groups(&self, half: usize) -> (impl Iterator<Item = &Group>, &[u16]) {
        let groups = self.buf[half..half + self.scanned()].chunks_exact(LANES);
        let rest = groups.remainder();
        (groups.map(|g| <&Group>::try_from(g).expect("chunks of a group's length")), rest)
    }

    /// The position of the first entry of a half whose word is at least `min`
    /// (`scanned()` if none).
    #[inline(always)]
    fn first_at_least(&self, half: usize, min: u16) -> usize {
        let (groups, rest) = self.groups(half);
        for (k, g) in groups.enumerate() {
            if let Some(i) = group::first_at_least(g, min) {
                return k * LANES + i;
            }
        }
        let at = self.scanned() - rest.len();
        at + rest.iter().position(|&w| w >= min).unwrap_or(rest.len())
    }

    /// The position of the first hole at or after byte `off`.
    #[inline(always)]
    fn hole_position(&self, off: usize) -> usize {
        if self.holes() > 4 * LANES {
            let (mut lo, mut hi) = (0, self.holes());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.hole(mid).0 < off {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            return lo;
        }
        // Holes are few: a group at a time. Offsets ascend, and unused entries
        // (`NO_OFF`) are at or past every offset asked about (objects and holes start
        // below it), so the first entry at or past `off` is the answer.
        self.first_at_least(0, off.min(NO_OFF as usize) as u16).min(self.holes())
    }

    /// The position of the first hole of `len` bytes or more.
    #[inline]
    fn first_fit(&self, len: usize) -> Option<usize> {
        // Unused entries have length 0, and `len` is positive.
        let j = self.first_at_least(self.room(), len as u16);
        (j < self.holes()).then_some(j)
    }

    /// Reallocates to room for `room` holes.
    fn resize(&mut self, room: usize) {
        let n = self.holes();
        let mut buf = vec![0u16; 2 * room].into_boxed_slice();
        buf[n..room].fill(NO_OFF);
        buf[..n].copy_from_slice(&self.buf[..n]);
        let old = self.room();
        buf[room..room + n].copy_from_slice(&self.buf[old..old + n]);
        self.buf = buf;
    }

    /// Gives back the entries' room to grow (compaction leaves zspages that will
    /// mostly just lose objects).
    pub fn shrink_to_fit(&mut self) {
        if self.holes() < self.room() {
            self.resize(self.holes());
        }
    }

    fn insert_hole(&mut self, j: usize, off: usize, len: usize) {
        let n = self.holes();
        if n == self.room() {
            // A quarter at a time, in whole groups: the entries are metadata, and
            // doubling would leave a third of them unused on average.
            self.resize((n + (n / 4).max(2)).next_multiple_of(LANES));
        }
        let room = self.room();
        self.buf.copy_within(j..n, j + 1);
        self.buf.copy_within(room + j..room + n, room + j + 1);
        self.nhole += 1;
        self.set_hole(j, off, len);
    }

    fn remove_hole(&mut self, j: usize) {
        let n = self.holes();
        let room = self.room();
        self.buf.copy_within(j + 1..n, j);
        self.buf.copy_within(room + j + 1..room + n, room + j);
        self.buf[n - 1] = NO_OFF;
        self.buf[room + n - 1] = 0;
        self.nhole -= 1;
        if room > 2 * LANES && 2 * (n - 1) < room {
            self.resize((n + n / 4).next_multiple_of(LANES));
        }
    }

    /// The largest hole once hole `j` is `len` bytes long (0: gone). Read before the
    /// entry is written: a wide read of words just written narrowly waits for the
    /// writes to reach the cache.
    fn largest_once(&self, j: usize, len: u16) -> u16 {
        let (groups, rest) = self.groups(self.room());
        // No branch on whether `j` is in a group: the groups are folded word by word,
        // with `j`'s word left out, and what is left once at the end.
        let most = len.max(group::max_except_run(groups, j));
        let at = self.scanned() - rest.len();
        rest.iter().enumerate().filter(|&(i, _)| at + i != j).fold(most, |m, (_, &w)| m.max(w))
    }

    /// Places an object of `len` bytes: in the tail if it fits there, else in the
    /// first hole that fits. Returns its offset, or None if nothing fits.
    #[inline]
    pub fn place(&mut self, len: usize) -> Option<usize> {
        debug_assert!(len > 0 && len <= MAX_OBJECT);
        if self.nobj == MAX_OBJECTS {
            return None;
        }
        let len = self.grains(len);
        let end = self.end as usize;
        let off = if self.cap_grains() - end >= len {
            self.end += len as u32;
            end
        } else {
            if (self.largest_hole as usize) < len {
                return None;
            }
            // The search reads the lengths; the offsets' first line is asked for
            // meanwhile, for the entry it finds (a zspage in churn has one or two
            // groups of holes, and the halves are on different lines).
            crate::sync::prefetch(self.buf.as_ptr().cast());
            self.prefetch_last(self.room());
            let j = self.first_fit(len)?;
            let (off, hole) = self.hole(j);
            if hole == self.largest_hole as usize {
                self.largest_hole = self.largest_once(j, (hole - len) as u16);
            }
            if hole == len {
                self.remove_hole(j);
            } else {
                self.set_hole(j, off + len, hole - len);
            }
            off
        };
        self.used += len as u32;
        self.nobj += 1;
        self.debug_check();
        Some(off << self.grain())
    }

    /// Frees the object of `len` bytes at byte `off`: its bytes become a hole, merged
    /// with neighbouring holes, or join the tail.
    #[inline(always)]
    pub fn remove(&mut self, off: usize, len: usize) {
        debug_assert!(off & ((1 << self.grain()) - 1) == 0, "an object off its grain");
        let (off, len) = (off >> self.grain(), self.grains(len));
        debug_assert!(self.nobj > 0 && off + len <= self.end as usize);
        self.nobj -= 1;
        self.used -= len as u32;
        // The search reads the offsets; the lengths' first line is asked for
        // meanwhile, for the neighbours it finds.
        crate::sync::prefetch(self.buf.as_ptr().wrapping_add(self.room()).cast());
        self.prefetch_last(0);
        let j = self.hole_position(off);
        let before = (j > 0).then(|| self.hole(j - 1)).filter(|&(o, l)| o + l == off);
        debug_assert!(j == 0 || self.hole(j - 1).0 + self.hole(j - 1).1 <= off, "freeing a hole");
        if off + len == self.end as usize {
            // The last object: its bytes, and a hole just before it, join the tail.
            self.end = off as u32;
            if let Some((o, l)) = before {
                self.tail_takes_hole(j - 1, o, l);
            }
            self.debug_check();
            return;
        }
        let after = (j < self.holes()).then(|| self.hole(j)).filter(|&(o, _)| o == off + len);
        debug_assert!(j == self.holes() || self.hole(j).0 >= off + len, "freeing a hole");
        let (start, stop) = (before.map_or(off, |h| h.0), after.map_or(off + len, |h| h.0 + h.1));
        match (before, after) {
            (Some(_), Some(_)) => {
                self.set_hole(j - 1, start, stop - start);
                self.remove_hole(j);
            }
            (Some(_), None) => self.set_hole(j - 1, start, stop - start),
            (None, Some(_)) => self.set_hole(j, start, stop - start),
            (None, None) => self.insert_hole(j, start, stop - start),
        }
        // Any hole merged here was shorter than the run it joined.
        self.largest_hole = self.largest_hole.max((stop - start) as u16);
        self.debug_check();
    }

    /// The equations of [`FreeSpace`], in debug builds.
    #[inline]
    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        {
            let holes = (0..self.holes()).map(|j| self.hole(j).1);
            let (sum, largest) = holes.fold((0, 0), |(s, m), l| (s + l, m.max(l)));
            debug_assert_eq!(self.used as usize + sum, self.end as usize, "objects and holes do not cover 0..end");
            debug_assert!(self.end as usize <= self.cap_grains() && self.holes() <= self.room());
            debug_assert_eq!(largest, self.largest_hole as usize, "the largest hole is off");
            debug_assert!(self.nobj != 0 || self.end == 0, "an empty zspage keeps bytes in use");
        }
    }

    /// Hole `j`, at `off` and `len` bytes long, is the last one and now ends where the
    /// tail starts: its bytes join the tail. Rare (a free of the last object next to a
    /// hole), so kept out of the free path.
    #[cold]
    fn tail_takes_hole(&mut self, j: usize, off: usize, len: usize) {
        if len == self.largest_hole as usize {
            self.largest_hole = self.largest_once(j, 0);
        }
        self.remove_hole(j);
        self.end = off as u32;
    }

    /// Free bytes (holes and tail) among bytes `lo..hi` of the chain (an object's
    /// rounding up to a grain is the object's, not free).
    pub fn free_in(&self, lo: usize, hi: usize) -> usize {
        let g = self.grain();
        let overlap = |o: usize, l: usize| ((o + l) << g).min(hi).saturating_sub((o << g).max(lo));
        let first = self.hole_position(lo >> g).saturating_sub(1);
        let holes: usize = (first..self.holes())
            .map(|j| self.hole(j))
            .take_while(|&(o, _)| o << g < hi)
            .map(|(o, l)| overlap(o, l))
            .sum();
        holes + overlap(self.end as usize, self.cap_grains() - self.end as usize)
    }

    /// Checks the invariants of the module comment, with the zspage's objects as
    /// (offset, length) in bytes in `objects` (sorted here).
    pub fn check(&self, objects: &mut [(usize, usize)]) -> Result<(), String> {
        objects.sort_unstable();
        if objects.len() != self.len() {
            return Err(format!("{} objects counted, {} located", self.len(), objects.len()));
        }
        let g = self.grain();
        if let Some(&(off, len)) = objects.iter().find(|&&(off, len)| off & ((1 << g) - 1) != 0 || len > MAX_OBJECT) {
            return Err(format!("object at {off}+{len} off its grain of {} bytes, or too long", 1 << g));
        }
        // In grains from here.
        let objects: Vec<(usize, usize)> = objects.iter().map(|&(off, len)| (off >> g, self.grains(len))).collect();
        let (mut at, mut used, mut largest) = (0usize, 0usize, 0usize);
        let (mut i, mut j) = (0, 0);
        let mut last_was_hole = false;
        while i < objects.len() || j < self.holes() {
            let hole_next = j < self.holes() && (i == objects.len() || self.hole(j).0 < objects[i].0);
            if hole_next {
                let (off, len) = self.hole(j);
                if off != at || len == 0 {
                    return Err(format!("hole {j} at {off}+{len} where {at} was expected"));
                }
                if last_was_hole {
                    return Err(format!("holes {} and {j} are neighbours", j - 1));
                }
                largest = largest.max(len);
                at += len;
                j += 1;
            } else {
                let (off, len) = objects[i];
                if off != at || len == 0 {
                    return Err(format!("object {i} at {off}+{len} where {at} was expected"));
                }
                used += len;
                at += len;
                i += 1;
            }
            last_was_hole = hole_next;
        }
        if last_was_hole {
            return Err("the last entry is a hole".into());
        }
        if at != self.end as usize || at > self.cap_grains() {
            return Err(format!(
                "entries end at {at}, end is {}, cap {} (grains of {} bytes)",
                self.end,
                self.cap_grains(),
                1 << g
            ));
        }
        if used != self.used as usize || largest != self.largest_hole as usize {
            return Err(format!(
                "used {} / largest hole {} recorded, {used} / {largest} found",
                self.used, self.largest_hole
            ));
        }
        if self.holes() > self.room() {
            return Err("more holes than the entry buffer holds".into());
        }
        let room = self.room();
        let unused = (self.holes()..room).find(|&j| self.buf[j] != NO_OFF || self.buf[room + j] != 0);
        if let Some(j) = unused {
            return Err(format!("unused entry {j} is not blank"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fills_tail_then_holes() {
        let mut x = FreeSpace::new(1);
        assert_eq!(x.place(1000), Some(0));
        assert_eq!(x.place(2000), Some(1000));
        assert_eq!(x.place(1000), Some(3000));
        assert_eq!(x.longest_run(), 96);
        assert_eq!(x.place(100), None, "neither the tail nor a hole fits");
        x.remove(1000, 2000);
        assert_eq!((x.longest_run(), x.holes()), (2000, 1));
        assert_eq!(x.place(90), Some(4000), "the tail first");
        assert_eq!(x.place(7), Some(1000), "then the first hole that fits");
        assert_eq!((x.len(), x.holes()), (4, 1), "the rest of the hole stays a hole");
        assert_eq!(x.longest_run(), 1993);
        x.check(&mut [(0, 1000), (1000, 7), (3000, 1000), (4000, 90)]).unwrap();
        assert!(x.check(&mut [(0, 1000), (3000, 1000), (4000, 90)]).is_err(), "an object is missing");
        assert!(x.check(&mut [(0, 1000), (1000, 8), (3000, 1000), (4000, 90)]).is_err(), "an object overlaps a hole");
        let room = x.room();
        x.buf[room + 1] = 5;
        assert!(
            x.check(&mut [(0, 1000), (1000, 7), (3000, 1000), (4000, 90)]).is_err(),
            "an unused entry has a length"
        );
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "objects and holes do not cover 0..end")]
    fn debug_builds_catch_bytes_lost_between_objects_and_holes() {
        let mut x = FreeSpace::new(1);
        x.place(100).unwrap();
        x.place(100).unwrap();
        x.used -= 1;
        x.remove(100, 100);
    }

    #[test]
    fn holes_merge_and_join_the_tail() {
        let mut x = FreeSpace::new(1);
        for k in 0..5 {
            assert_eq!(x.place(32), Some(32 * k));
        }
        x.remove(32, 32);
        x.remove(96, 32);
        assert_eq!(x.holes(), 2);
        x.remove(64, 32);
        assert_eq!((x.len(), x.holes()), (2, 1), "three neighbouring frees make one hole");
        assert_eq!(x.longest_run(), 4096 - 160);
        x.check(&mut [(0, 32), (128, 32)]).unwrap();
        x.remove(128, 32);
        assert_eq!((x.len(), x.holes()), (1, 0), "the hole before the last object joins the tail with it");
        assert_eq!((x.used(), x.longest_run()), (32, 4096 - 32));
        x.remove(0, 32);
        assert!(x.is_empty());
        x.check(&mut []).unwrap();
    }

    #[test]
    fn free_bytes_in_a_range() {
        let mut x = FreeSpace::new(2);
        for _ in 0..4 {
            x.place(1600).unwrap();
        }
        x.remove(1600, 1600);
        assert_eq!(x.free_in(0, 4096), 1600, "the hole");
        assert_eq!(x.free_in(4096, 8192), 8192 - 6400, "the tail");
        assert_eq!(x.free_in(2000, 2100), 100, "inside the hole");
        assert_eq!(x.free_in(3300, 3400), 0, "inside an object");
    }

    #[test]
    fn entries_grow_and_shrink() {
        let mut x = FreeSpace::new(16);
        for _ in 0..2000 {
            x.place(10).unwrap();
        }
        assert_eq!(x.meta_bytes(), 0, "objects take no entries");
        for k in (0..2000).filter(|k| k % 2 == 0) {
            x.remove(10 * k, 10);
        }
        assert_eq!((x.len(), x.holes()), (1000, 1000));
        let grown = x.meta_bytes();
        assert!((4 * 1000..=4 * 1000 * 5 / 4 + 32).contains(&grown), "{grown} bytes for 1000 holes");
        for k in (0..2000).filter(|k| k % 2 == 1) {
            x.remove(10 * k, 10);
        }
        // Two groups of room at most: four bytes a hole.
        assert!(x.is_empty() && x.meta_bytes() <= 4 * 2 * LANES, "{} bytes left", x.meta_bytes());
        for _ in 0..10 {
            x.place(10).unwrap();
        }
        x.remove(30, 10);
        x.shrink_to_fit();
        assert_eq!(x.meta_bytes(), 4, "no room to grow left");
        x.remove(50, 10);
        assert_eq!(x.holes(), 2);
    }

    #[test]
    fn seventeen_frames_count_in_grains_of_two_bytes() {
        let mut x = FreeSpace::with_bands(MAX_BYTES, true);
        assert_eq!((x.cap(), x.longest_run(), x.grain()), (17 * 4096, 17 * 4096, 1));
        assert_eq!(x.place(101), Some(0));
        assert_eq!(x.used(), 102, "101 bytes take 102");
        assert_eq!(x.place(MAX_OBJECT), Some(102), "64 KiB after 101 bytes: into the 17th frame");
        assert_eq!(x.longest_run(), MAX_BYTES - 102 - MAX_OBJECT);
        assert_eq!(x.place(4096 - 101), None);
        assert_eq!(x.place(4096 - 103), Some(102 + MAX_OBJECT), "an odd size fills the last grain");
        assert_eq!(x.longest_run(), 0);
        x.check(&mut [(0, 101), (102, MAX_OBJECT), (102 + MAX_OBJECT, 4096 - 103)]).unwrap();
        assert!(x.check(&mut [(0, 101), (101, MAX_OBJECT), (102 + MAX_OBJECT, 4096 - 103)]).is_err(), "off its grain");
        assert_eq!(x.free_in(16 * 4096, 17 * 4096), 0, "an odd object's last byte is its own");
        // Holes past 64 KiB and of 64 KiB or more: beyond 16 bits in bytes.
        x.remove(0, 101);
        x.remove(102, MAX_OBJECT);
        assert_eq!((x.holes(), x.longest_run()), (1, 102 + MAX_OBJECT), "a hole of more than 64 KiB");
        assert_eq!(x.free_in(60000, 60100), 100);
        assert_eq!(x.place(MAX_OBJECT), Some(0));
        assert_eq!(x.place(101), Some(MAX_OBJECT), "what is left of the hole");
        x.remove(102 + MAX_OBJECT, 4096 - 103);
        x.remove(0, MAX_OBJECT);
        assert_eq!((x.holes(), x.len()), (1, 1));
        x.check(&mut [(MAX_OBJECT, 101)]).unwrap();
        x.remove(MAX_OBJECT, 101);
        assert!(x.is_empty() && x.holes() == 0 && x.longest_run() == MAX_BYTES);
        // Sixteen frames or fewer count in bytes, as before.
        let mut y = FreeSpace::with_bands(MAX_OBJECT, true);
        assert_eq!((y.place(101), y.place(1), y.used()), (Some(0), Some(101), 102));
    }

    #[test]
    fn bands_list_long_runs_of_large_pools_only() {
        for run in [0, 63, 64, 4095, 4096, 8191, 8192, 65535] {
            assert_eq!(list_of(run, false), bucket(run), "without bands, the buckets");
        }
        assert_eq!(list_of(4096, true), TOP_BUCKET, "a run under two pages: the top bucket");
        assert_eq!(list_of(8191, true), TOP_BUCKET);
        assert_eq!(list_of(8192, true), DRAIN + 1);
        assert_eq!(list_of(16383, true), DRAIN + 1);
        assert_eq!(list_of(16384, true), DRAIN + 2);
        assert_eq!(list_of(65535, true), DRAIN + BANDS, "the last band takes every longer run");
        let mut x = FreeSpace::with_bands(65536, true);
        assert_eq!(x.list(), DRAIN + BANDS);
        x.place(40000).unwrap();
        assert_eq!(x.list(), DRAIN + (65536 - 40000) / BAND_BYTES);
    }

    #[test]
    fn zspage_length_fits_the_size_that_opens_it() {
        // 3000 bytes: 4 objects in 3 frames leave 288 bytes, the least of chains 1..4
        // (1096, 2192, 288 and 1384 bytes left).
        assert_eq!(zspage_frames(3000, 4, 4096), 3);
        // Sizes that divide a frame waste nothing at any length: the whole chain, for
        // the fewest descriptors.
        assert_eq!(zspage_frames(4096, 16, 4096), 16);
        assert_eq!(zspage_frames(1024, 8, 4096), 8);
        assert_eq!(zspage_frames(32, 16, 4096), 16);
        // A tail shorter by a descriptor's bytes is not worth a zspage of a quarter of
        // the length: 100 bytes leave 96 in 1 frame, 36 in 16.
        assert_eq!(zspage_frames(100, 16, 4096), 16);
        for chain in [4, 8, 16] {
            for len in (1..=4096).step_by(7) {
                let k = zspage_frames(len, chain, 4096);
                assert!((1..=chain).contains(&k), "{len} bytes, chain {chain}: {k} frames");
                let waste = |k: usize| ((k * 4096) % len + 128) as f64 / (k * 4096) as f64;
                assert!((1..=chain).all(|j| waste(k) <= waste(j)), "{len} bytes, chain {chain}: {k} frames");
            }
        }
    }

    #[test]
    fn only_rising_sizes_shorten_a_zspage() {
        let mut a = Arrivals::default();
        for len in 1..RISING_RUN as usize {
            a.note(len * 100);
        }
        assert!(!a.ascending());
        assert_eq!(a.zspage_frames(3000, 4, 4096), 4, "not yet a run: the whole chain");
        a.note(3000);
        assert!(a.ascending());
        assert_eq!(a.zspage_frames(3000, 4, 4096), 3);
        a.note(3000);
        assert!(a.ascending(), "equal sizes do not end the run");
        a.note(2999);
        assert!(!a.ascending(), "a smaller size ends it");
        assert_eq!(a.zspage_frames(3000, 4, 4096), 4);
    }

    /// Replays `ops` on an empty chain of `frames` frames against a byte map, checking
    /// the invariants after every step: each op places `size` bytes if its flag is set
    /// or nothing is live, and otherwise removes the live object `pick` chooses.
    fn replay(frames: usize, ops: &[(bool, usize, prop::sample::Index)]) -> Result<(), TestCaseError> {
        let cap = frames * 4096;
        let mut x = FreeSpace::new(frames);
        // Bytes an object takes: its size, rounded up to 2 in a chain of 17 frames.
        let grain = if cap > MAX_OBJECT { 2 } else { 1 };
        let mut taken = vec![false; cap];
        let mut live: Vec<(usize, usize)> = Vec::new();
        for &(alloc, size, pick) in ops {
            if alloc || live.is_empty() {
                let fits = x.longest_run() >= size;
                match x.place(size) {
                    Some(off) => {
                        let size = size.next_multiple_of(grain);
                        prop_assert!(off + size <= cap && off % grain == 0);
                        prop_assert!(taken[off..off + size].iter().all(|&t| !t), "placed over a live object");
                        taken[off..off + size].fill(true);
                        live.push((off, size));
                    }
                    None => prop_assert!(!fits, "refused although the longest run fits"),
                }
            } else {
                let (off, len) = live.swap_remove(pick.index(live.len()));
                x.remove(off, len);
                taken[off..off + len].fill(false);
            }
            if size % 8 == 0 {
                // Room for the holes alone: the searches meet words past the
                // last whole group.
                x.shrink_to_fit();
            }
            x.check(&mut live.clone()).map_err(TestCaseError::fail)?;
            prop_assert_eq!(x.used(), taken.iter().filter(|&&t| t).count());
            let lo = pick.index(cap);
            let hi = (lo + 100).min(cap);
            prop_assert_eq!(x.free_in(lo, hi), taken[lo..hi].iter().filter(|&&t| !t).count());
        }
        Ok(())
    }

    proptest! {
        /// Random places and removes against a byte map of the chain. Sizes are
        /// often whole multiples of 50 bytes, so that holes fit objects exactly.
        #[test]
        fn matches_a_byte_map(
            frames in 1usize..=4,
            ops in proptest::collection::vec(
                (any::<bool>(), prop_oneof![1usize..600, (1usize..12).prop_map(|k| 50 * k)], any::<prop::sample::Index>()),
                1..300,
            ),
        ) {
            replay(frames, &ops)?;
        }

        /// A chain of 17 frames (a pool of objects above 61440 bytes), counted in grains
        /// of 2 bytes, with objects of odd and even sizes up to 64 KiB.
        #[test]
        fn matches_a_byte_map_of_seventeen_frames(
            ops in proptest::collection::vec(
                (
                    any::<bool>(),
                    prop_oneof![1usize..600, 4096usize..=MAX_OBJECT, 61000usize..=MAX_OBJECT],
                    any::<prop::sample::Index>(),
                ),
                1..200,
            ),
        ) {
            replay(17, &ops)?;
        }

        /// A frame filled with small objects, then churned: dozens of holes, over
        /// several groups of entries, and the largest of them in any group.
        #[test]
        fn matches_a_byte_map_with_many_holes(
            fill in proptest::collection::vec((Just(true), 1usize..48, any::<prop::sample::Index>()), 100..200),
            churn in proptest::collection::vec((any::<bool>(), 1usize..48, any::<prop::sample::Index>()), 100..400),
        ) {
            replay(1, &[fill, churn].concat())?;
        }
    }
}
