//! The thin OS layer: the only module that calls mmap, mprotect and madvise.
//!
//! A [`Region`] is a range of address space reserved up front with no access and no
//! commit charge (`PROT_NONE`, `MAP_NORESERVE`), made readable and writable from the
//! bottom up as it is needed (`commit`), and whose pages can be handed back to the
//! operating system at any time (`discard`) while the range stays usable: the next
//! touch faults in a zero page. Reserving `PROT_NONE` keeps large reservations out of
//! the commit accounting even under `vm.overcommit_memory=2`.
//!
//! The tail of a region can also be given up entirely (`release_tail`: unmapped, so the
//! process's virtual size shrinks) and taken back later (`restore_tail`), with
//! `MAP_FIXED_NOREPLACE` so that it never replaces a mapping someone else made in the
//! meantime: then the region simply cannot grow back. A region unmaps only what it has
//! mapped.
//!
//! For tests, the mmap, mprotect and madvise calls of this module can be made to fail
//! on purpose ([`zs_testonly_fail_os`]), so that every caller's handling of a refusal
//! by the OS can be exercised.

use parking_lot::Mutex;
use std::ffi::{c_uint, c_ulong};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// The system's page size (`sysconf(_SC_PAGESIZE)`, read once): the unit in which
/// regions are reserved, committed and discarded. A pool's frame is a multiple of it
/// (its size is the pool's, `pool/config.rs`), so a frame is aligned to the page, not
/// to its own size: nothing relies on more.
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    // Relaxed: every thread computes the same value; the cache only saves the call.
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            let p = system_page_size();
            PAGE.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// A reserved range of address space.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    /// Bytes from the base that are mapped (the rest of `len` was released). Changed
    /// only by the region's owner under its own lock; atomic so that `Drop` and
    /// readers see a value.
    mapped: AtomicUsize,
}

// SAFETY: a Region is a plain address range; all access to its bytes goes through raw
// pointers whose synchronisation is the responsibility of the layer that owns them.
unsafe impl Send for Region {}
// SAFETY: the bytes are reached through raw pointers whose synchronisation is the
// owning layer's; the Region's own state is `base` and `len`, which never change, and
// `mapped`, an atomic that only its owner changes, under its lock.
unsafe impl Sync for Region {}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOMEM)
}

/// `zs_testonly_fail_os` call kinds.
const FAIL_MMAP: u32 = 1;
const FAIL_MPROTECT: u32 = 2;
const FAIL_MADVISE: u32 = 4;

/// The kinds of call to fail (0: none, the normal state): read on every OS call, so
/// it is apart from the plan, which is locked only while failures are on.
static FAIL_KINDS: AtomicU32 = AtomicU32::new(0);

/// Which calls of the kinds in `FAIL_KINDS` fail.
struct FailPlan {
    /// Calls still to let through before failing.
    skip: u64,
    /// Calls still to fail after those.
    fail: u64,
    /// Calls failed since the plan was set.
    failed: u64,
}

static FAIL_PLAN: Mutex<FailPlan> = Mutex::new(FailPlan { skip: 0, fail: 0, failed: 0 });

/// Whether this call, of kind `kind`, is to fail (as if the OS said ENOMEM).
#[inline]
fn injected(kind: u32) -> bool {
    // Relaxed: the plan is read under its lock; this only says whether to look.
    if FAIL_KINDS.load(Ordering::Relaxed) & kind == 0 {
        return false;
    }
    let mut plan = FAIL_PLAN.lock();
    if plan.skip > 0 {
        plan.skip -= 1;
        return false;
    }
    if plan.fail == 0 {
        return false;
    }
    plan.fail -= 1;
    plan.failed += 1;
    true
}

/// TEST ONLY, not part of the API (not in the header): makes this library's own
/// mmap, mprotect and madvise calls fail, process-wide, as if the OS refused them with
/// ENOMEM. `calls` is a mask of the kinds concerned (1 mmap, 2 mprotect, 4 madvise;
/// 0 turns injection off); of those, the next `skip` calls go through, the `fail`
/// after them fail without being made (`c_ulong::MAX`: all of them), and the rest go
/// through. Each call replaces the previous plan and resets the count of
/// [`zs_testonly_os_failures`].
#[doc(hidden)]
#[no_mangle]
pub extern "C" fn zs_testonly_fail_os(calls: c_uint, skip: c_ulong, fail: c_ulong) {
    let mut plan = FAIL_PLAN.lock();
    *plan = FailPlan { skip, fail, failed: 0 };
    // Relaxed: `injected` reads the plan under the lock held here.
    FAIL_KINDS.store(calls & (FAIL_MMAP | FAIL_MPROTECT | FAIL_MADVISE), Ordering::Relaxed);
}

/// TEST ONLY, not part of the API: how many calls [`zs_testonly_fail_os`] has made
/// fail since it was last called.
#[doc(hidden)]
#[no_mangle]
pub extern "C" fn zs_testonly_os_failures() -> c_ulong {
    FAIL_PLAN.lock().failed
}

impl Region {
    /// Reserves `len` bytes (rounded up to pages) of inaccessible address space.
    pub fn reserve(len: usize) -> Result<Region, i32> {
        let len = len.div_ceil(page_size()).max(1) * page_size();
        if injected(FAIL_MMAP) {
            return Err(libc::ENOMEM);
        }
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(Region { base: NonNull::new(p.cast()).expect("mmap returned NULL"), len, mapped: AtomicUsize::new(len) })
    }

    /// Reserves `len` bytes (rounded up to pages) of address space of which only the
    /// first `mapped` are mapped now, inaccessible: the rest is taken later with
    /// [`restore_tail`](Self::restore_tail), where no other mapping has taken it
    /// meanwhile. For reservations the OS may refuse whole (RLIMIT_AS) but grant in
    /// part.
    pub fn reserve_prefix(len: usize, mapped: usize) -> Result<Region, i32> {
        let len = len.div_ceil(page_size()).max(1) * page_size();
        let mapped = mapped.div_ceil(page_size()).clamp(1, len / page_size()) * page_size();
        let base = Region::reserve(mapped)?;
        let r = Region { base: base.base, len, mapped: AtomicUsize::new(mapped) };
        // The mapping now belongs to `r`.
        std::mem::forget(base);
        Ok(r)
    }

    /// The first byte of the range.
    #[inline]
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length of the reservation in bytes.
    #[cfg_attr(loom, allow(dead_code))]
    pub fn size(&self) -> usize {
        self.len
    }

    /// Makes `[off, off + len)` readable and writable. Page-aligned arguments.
    pub fn commit(&self, off: usize, len: usize) -> Result<(), i32> {
        assert!(off % page_size() == 0 && len % page_size() == 0 && off + len <= self.len);
        if injected(FAIL_MPROTECT) {
            return Err(libc::ENOMEM);
        }
        // SAFETY: the range lies inside this reservation (asserted above), which no
        // one else maps.
        let r = unsafe { libc::mprotect(self.base().add(off).cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
        if r != 0 {
            return Err(errno());
        }
        Ok(())
    }

    /// Faults in the pages of `[off, off + len)` for writing, in one call
    /// (`MADV_POPULATE_WRITE`): each is allocated and zeroed now rather than trapped
    /// into on its first write. Page-aligned arguments, inside a committed range. A
    /// hint: where the kernel lacks it (before Linux 5.14: `EINVAL`) or refuses (no
    /// memory), nothing is done and the pages fault in on first use as without it.
    pub fn populate(&self, off: usize, len: usize) {
        debug_assert!(off % page_size() == 0 && len % page_size() == 0 && off + len <= self.len);
        if injected(FAIL_MADVISE) {
            return;
        }
        // SAFETY: inside this reservation, committed readable and writable by the
        // caller; populating writes nothing the program can see (the pages read as
        // zeros either way).
        unsafe {
            libc::madvise(self.base().add(off).cast(), len, libc::MADV_POPULATE_WRITE);
        }
    }

    /// Gives the pages of `[off, off + len)` back to the operating system. The range
    /// stays committed; its next use reads zeros.
    pub fn discard(&self, off: usize, len: usize) {
        debug_assert!(off % page_size() == 0 && len % page_size() == 0 && off + len <= self.len);
        if injected(FAIL_MADVISE) {
            return;
        }
        // SAFETY: inside this reservation; the caller no longer needs the contents.
        // MADV_DONTNEED on a private anonymous mapping cannot fail for a valid range,
        // and if it did the only cost would be resident memory, never correctness.
        unsafe {
            libc::madvise(self.base().add(off).cast(), len, libc::MADV_DONTNEED);
        }
    }
}

impl Region {
    /// Gives back the pages and the commit charge of `[off, off + len)` and makes it
    /// inaccessible again; the range stays reserved, so `commit` can take it back.
    /// Page-aligned arguments.
    pub fn decommit(&self, off: usize, len: usize) {
        assert!(off % page_size() == 0 && len % page_size() == 0 && off + len <= self.len);
        self.discard(off, len);
        if injected(FAIL_MPROTECT) {
            return;
        }
        // SAFETY: inside this reservation; the caller guarantees nothing uses the range.
        // Failure would leave the range accessible, which costs only commit charge.
        unsafe {
            libc::mprotect(self.base().add(off).cast(), len, libc::PROT_NONE);
        }
    }

    /// Bytes from the base currently mapped.
    pub fn mapped(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Unmaps the region from byte `from` (page-aligned) to its mapped end. Nothing may
    /// use that range any more; the caller serialises this with `restore_tail`.
    pub fn release_tail(&self, from: usize) {
        let mapped = self.mapped();
        assert!(from % page_size() == 0);
        if from >= mapped {
            return;
        }
        // SAFETY: the range is inside this region's mapped part, which no one else
        // maps, and the caller guarantees nothing uses it.
        let r = unsafe { libc::munmap(self.base().add(from).cast(), mapped - from) };
        if r == 0 {
            // Relaxed: the owner's lock orders this with every other change.
            self.mapped.store(from, Ordering::Relaxed);
        }
    }

    /// Maps the region again up to byte `to` (inaccessible, like a fresh
    /// reservation). `Err(ENOMEM)` if something else now occupies that address range.
    pub fn restore_tail(&self, to: usize) -> Result<(), i32> {
        let mapped = self.mapped();
        let to = to.div_ceil(page_size()) * page_size();
        if to <= mapped {
            return Ok(());
        }
        assert!(to <= self.len);
        if injected(FAIL_MMAP) {
            return Err(libc::ENOMEM);
        }
        // SAFETY: `mapped` <= `len`, so the address lies inside the reservation's range.
        let want = unsafe { self.base().add(mapped) };
        // SAFETY: MAP_FIXED_NOREPLACE maps at exactly this address or fails; it never
        // replaces an existing mapping, so no one else's memory is touched.
        let p = unsafe {
            libc::mmap(
                want.cast(),
                to - mapped,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(libc::ENOMEM);
        }
        if p != want.cast() {
            // A kernel older than 4.17 takes the flag as a hint: give the mapping back.
            // SAFETY: `p` is the mapping just made, of that length.
            unsafe { libc::munmap(p, to - mapped) };
            return Err(libc::ENOMEM);
        }
        self.mapped.store(to, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapped part was mapped by this region (reserve, restore_tail) and
        // is unmapped exactly once; a released tail may belong to someone else now.
        unsafe {
            libc::munmap(self.base().cast(), self.mapped());
        }
    }
}

/// The system's page size, as the kernel reports it.
pub fn system_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        // Not expected: POSIX has no failure for it. The smallest frame, then.
        crate::frames::MIN_FRAME_SIZE
    } else {
        p as usize
    }
}

/// Physical memory of the machine in bytes (used to size default reservations).
pub fn physical_memory() -> usize {
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    if pages <= 0 {
        return 16 << 30;
    }
    (pages as usize).saturating_mul(system_page_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_discard_roundtrip() {
        let r = Region::reserve(4 * page_size()).unwrap();
        r.commit(0, 2 * page_size()).unwrap();
        // SAFETY: the first two pages are committed read-write.
        unsafe {
            r.base().write(7);
            r.base().add(page_size() + 1).write(9);
            assert_eq!(r.base().read(), 7);
        }
        r.discard(0, page_size());
        // SAFETY: still committed; discarded pages read as zero.
        unsafe {
            assert_eq!(r.base().read(), 0);
            assert_eq!(r.base().add(page_size() + 1).read(), 9);
        }
    }

    #[test]
    fn tail_release_and_restore() {
        // Other tests of this process map memory while this one runs, and a mapping
        // of theirs may land in the tail just released, which the region must then
        // leave alone (as the second half of this test shows). Try again with a fresh
        // region when that happens, so that the restore is seen to succeed.
        let r = (0..100)
            .find_map(|_| {
                let r = Region::reserve(8 * page_size()).unwrap();
                r.release_tail(2 * page_size());
                assert_eq!(r.mapped(), 2 * page_size());
                match r.restore_tail(6 * page_size()) {
                    Ok(()) => Some(r),
                    Err(e) => {
                        assert_eq!(e, libc::ENOMEM);
                        None
                    }
                }
            })
            .expect("the released tail was taken by another mapping 100 times in a row");
        r.commit(5 * page_size(), page_size()).unwrap();
        // SAFETY: page 5 is mapped again and committed.
        unsafe { r.base().add(5 * page_size()).write(1) };
        // Someone else maps the address right after the region's mapped part: the
        // region cannot grow over it, and leaves it alone.
        r.release_tail(6 * page_size());
        // SAFETY: a fixed mapping in the released tail, made only for this test.
        let other = unsafe {
            libc::mmap(
                r.base().add(6 * page_size()).cast(),
                page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        assert_eq!(other, r.base().wrapping_add(6 * page_size()).cast());
        assert_eq!(r.restore_tail(8 * page_size()), Err(libc::ENOMEM));
        // SAFETY: our test mapping.
        unsafe { (other as *mut u8).write(7) };
        drop(r);
        // SAFETY: the other mapping survived the region's drop.
        unsafe {
            assert_eq!((other as *mut u8).read(), 7);
            libc::munmap(other, page_size());
        }
    }
}
