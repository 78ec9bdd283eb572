//! Where zspage descriptors live: chunks of address space mapped for them alone, one
//! store for the process, as the kernel keeps its zspage descriptors in a slab cache of
//! their own.
//!
//! A descriptor is 128 bytes, 64-byte aligned, and made and freed once per zspage
//! (about once per 64 KiB of objects). From the process's malloc each would cost a
//! 64-byte-aligned allocation (glibc keeps it in a larger chunk, with a header), and
//! the descriptors would be spread over the heaps of the threads that made the zspages,
//! between those threads' other allocations, holding their pages. Here they lie end to
//! end in chunks of 64 KiB (or a page, where the page is larger), so the memory they
//! take is their count times 128 bytes, rounded up to a chunk, and the pages of a chunk
//! whose descriptors are all freed go back to the OS.
//!
//! Each chunk keeps a list of its freed slots (linked through the slots) and a count
//! of the slots it has handed out from its start. A descriptor is taken from the
//! chunk of lowest address that has room, so that as zspages come and go the chunks of
//! higher address empty out. A chunk left with no descriptor has its pages discarded,
//! and is unmapped if another chunk has room. One lock serialises the store: it is
//! taken once per zspage made or freed, never by an object's malloc, free or access.
//!
//! The store is the process's rather than a pool's because a descriptor is freed by
//! the epoch collector ([`crate::layout::zspage::DeferredFree`]), which may run after
//! its pool is gone.

use parking_lot::{const_mutex, Mutex};

use crate::frames::os::{page_size, Region};

/// A chunk's bytes: 64 KiB, or the page where it is larger.
fn chunk_bytes() -> usize {
    page_size().max(64 << 10)
}

/// A freed slot: the next freed slot of its chunk.
struct Freed {
    next: *mut Freed,
}

struct Chunk {
    region: Region,
    /// Freed slots (null: none).
    freed: *mut Freed,
    /// Slots handed out from the start at least once: the rest have never been used.
    bumped: usize,
    /// Slots in use.
    live: usize,
}

impl Chunk {
    fn base(&self) -> usize {
        self.region.base() as usize
    }

    fn contains(&self, p: usize) -> bool {
        (self.base()..self.base() + self.region.size()).contains(&p)
    }
}

/// A store of slots of one size: a power of two from a pointer's size to 4 KiB, each
/// slot aligned to its size.
pub(crate) struct Slab {
    slot: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Ascending by address.
    chunks: Vec<Chunk>,
    /// No chunk before this index has room.
    first_room: usize,
}

// SAFETY: the raw pointers of the chunks point into their own regions, which only this
// store touches, under its lock.
unsafe impl Send for Inner {}

impl Slab {
    /// A store of slots of `slot` bytes. Maps nothing until the first `alloc`.
    pub(crate) const fn new(slot: usize) -> Slab {
        assert!(slot >= std::mem::size_of::<Freed>() && slot <= 4096 && slot.is_power_of_two());
        Slab { slot, inner: const_mutex(Inner { chunks: Vec::new(), first_room: 0 }) }
    }

    /// Slots a chunk holds.
    fn per_chunk(&self) -> usize {
        chunk_bytes() / self.slot
    }

    /// A slot: `slot` bytes aligned to `slot` (the chunks are page aligned), whose
    /// contents are unspecified. `Err(errno)` if a new chunk was needed and the OS
    /// refused it.
    pub(crate) fn alloc(&self) -> Result<*mut u8, i32> {
        let per = self.per_chunk();
        let mut s = self.inner.lock();
        let i = match (s.first_room..s.chunks.len()).find(|&i| s.chunks[i].live < per) {
            Some(i) => i,
            None => {
                let region = Region::reserve(chunk_bytes())?;
                region.commit(0, chunk_bytes())?;
                leak_checker_root(&region, true);
                let chunk = Chunk { region, freed: std::ptr::null_mut(), bumped: 0, live: 0 };
                let at = s.chunks.partition_point(|c| c.base() < chunk.base());
                s.chunks.insert(at, chunk);
                at
            }
        };
        s.first_room = i;
        let c = &mut s.chunks[i];
        let p = if c.freed.is_null() {
            debug_assert!(c.bumped < per);
            // SAFETY: slot `bumped` lies inside the chunk (fewer than `per` handed out).
            let p = unsafe { c.region.base().add(c.bumped * self.slot) };
            c.bumped += 1;
            p
        } else {
            let p = c.freed;
            // SAFETY: a freed slot of this chunk, holding its successor since `free`
            // wrote it; committed memory of the chunk.
            c.freed = unsafe { (*p).next };
            p.cast()
        };
        c.live += 1;
        Ok(p)
    }

    /// Gives slot `p` back.
    ///
    /// # Safety
    /// `p` came from this store's [`alloc`](Self::alloc), is not freed yet, and is not
    /// used after this call.
    pub(crate) unsafe fn free(&self, p: *mut u8) {
        let mut s = self.inner.lock();
        let at = s.chunks.partition_point(|c| c.base() <= p as usize);
        let i = at.checked_sub(1).filter(|&i| s.chunks[i].contains(p as usize)).expect("a slot of this store");
        let c = &mut s.chunks[i];
        debug_assert!((p as usize - c.base()) % self.slot == 0 && c.live > 0);
        c.live -= 1;
        if c.live == 0 {
            // Its pages go back; the next use starts from the chunk's first slot, on
            // zero pages. Another chunk with room makes this one unneeded.
            c.freed = std::ptr::null_mut();
            c.bumped = 0;
            let per = self.per_chunk();
            if s.chunks.iter().enumerate().any(|(k, o)| k != i && o.live < per) {
                leak_checker_root(&s.chunks.remove(i).region, false);
            } else {
                s.chunks[i].region.discard(0, chunk_bytes());
            }
            s.first_room = s.first_room.min(i).min(s.chunks.len());
        } else {
            let slot = p.cast::<Freed>();
            // SAFETY: the slot is the caller's to give up (the contract), inside this
            // committed chunk and aligned for a pointer (slots are at least a
            // pointer's size, a power of two, from a page-aligned base).
            unsafe { slot.write(Freed { next: c.freed }) };
            c.freed = slot;
            s.first_room = s.first_room.min(i);
        }
    }

    /// Chunks mapped, and slots in use (for tests).
    #[cfg(test)]
    pub(crate) fn census(&self) -> (usize, usize) {
        let s = self.inner.lock();
        (s.chunks.len(), s.chunks.iter().map(|c| c.live).sum())
    }
}

/// Tells LeakSanitizer, where the process runs under it (a program built with
/// `-fsanitize=address` or `leak`), that a chunk is to be scanned for pointers
/// (`register`) or no longer (the chunk is about to be unmapped). It scans malloc's
/// blocks, not the library's mappings: without this, the blocks only a descriptor
/// points to (a dense zspage's holes) would look leaked to it. Elsewhere nothing.
fn leak_checker_root(region: &Region, register: bool) {
    use std::ffi::c_void;
    use std::sync::OnceLock;
    type Root = unsafe extern "C" fn(*const c_void, usize);
    static ROOTS: OnceLock<[Option<Root>; 2]> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        [c"__lsan_register_root_region", c"__lsan_unregister_root_region"].map(|name| {
            // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name looks a symbol
            // up and changes nothing.
            let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            // SAFETY: where the symbol exists it is the sanitizer's function of this
            // type (`void (const void *, size_t)`, sanitizer/lsan_interface.h).
            (!f.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, Root>(f) })
        })
    });
    if let Some(f) = roots[usize::from(!register)] {
        // SAFETY: the region is mapped readable (committed) for as long as it is
        // registered: registered after its commit, unregistered before it is unmapped.
        unsafe { f(region.base().cast(), region.size()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn slots_are_distinct_aligned_and_reused() {
        let slab = Slab::new(128);
        let per = slab.per_chunk();
        let mut taken: Vec<*mut u8> = (0..2 * per).map(|_| slab.alloc().unwrap()).collect();
        assert_eq!(taken.iter().copied().collect::<HashSet<_>>().len(), 2 * per, "distinct slots");
        assert!(taken.iter().all(|&p| p as usize % 128 == 0), "aligned to the slot");
        for (k, &p) in taken.iter().enumerate() {
            // SAFETY: a slot of 128 bytes handed out above and not freed.
            unsafe { p.write_bytes(k as u8 | 1, 128) };
        }
        for (k, &p) in taken.iter().enumerate() {
            // SAFETY: as above.
            assert_eq!(unsafe { *p.add(127) }, k as u8 | 1, "no slot overlaps another");
        }
        assert_eq!(slab.census(), (2, 2 * per), "two chunks, full");
        // Slots come from the chunk of lowest address that has room.
        taken.sort();
        let (low, high) = (taken.remove(0), taken.pop().unwrap());
        for p in [high, low] {
            // SAFETY: handed out by `slab`, freed once, not used again.
            unsafe { slab.free(p) };
        }
        assert_eq!(slab.alloc().unwrap(), low, "the lower chunk's freed slot first");
        assert_eq!(slab.alloc().unwrap(), high);
        taken.extend([low, high]);
        for p in taken {
            // SAFETY: as above.
            unsafe { slab.free(p) };
        }
        assert_eq!(slab.census(), (1, 0), "one empty chunk kept, the other unmapped");
        let again = slab.alloc().unwrap();
        // SAFETY: a fresh slot.
        assert_eq!(unsafe { *again.add(1) }, 0, "an emptied chunk's pages were discarded");
        // SAFETY: handed out above.
        unsafe { slab.free(again) };
    }

    #[test]
    fn threads_share_the_store() {
        let slab = Slab::new(128);
        let per = slab.per_chunk();
        std::thread::scope(|t| {
            for k in 0..4u8 {
                let slab = &slab;
                t.spawn(move || {
                    for round in 0..20 {
                        let mine: Vec<*mut u8> = (0..per / 2 + round).map(|_| slab.alloc().unwrap()).collect();
                        for &p in &mine {
                            // SAFETY: slots this thread took and still holds.
                            unsafe { p.write_bytes(k, 128) };
                        }
                        for &p in &mine {
                            // SAFETY: as above.
                            assert!(unsafe { std::slice::from_raw_parts(p, 128) }.iter().all(|&b| b == k));
                            // SAFETY: as above; freed once.
                            unsafe { slab.free(p) };
                        }
                    }
                });
            }
        });
        assert_eq!(slab.census().1, 0);
    }
}
