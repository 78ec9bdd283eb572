//! The thin OS layer: the only module that calls mmap, mprotect and madvise.
//!
//! A [`Region`] is a range of address space reserved up front with no access and no
//! commit charge (`PROT_NONE`, `MAP_NORESERVE`), made readable and writable from the
//! bottom up as it is needed (`commit`), and whose pages can be handed back to the
//! operating system at any time (`discard`) while the range stays usable: the next
//! touch faults in a zero page. Reserving `PROT_NONE` keeps large reservations out of
//! the commit accounting even under `vm.overcommit_memory=2`.

use std::ptr::NonNull;

/// The frame size. zsmalloc's unit is the base page; this library assumes 4 KiB pages
/// (checked at pool creation against `sysconf(_SC_PAGESIZE)`).
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A reserved range of address space.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is a plain address range; all access to its bytes goes through raw
// pointers whose synchronisation is the responsibility of the layer that owns them.
unsafe impl Send for Region {}
// SAFETY: as above; the Region itself has no interior state.
unsafe impl Sync for Region {}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOMEM)
}

impl Region {
    /// Reserves `len` bytes (rounded up to pages) of inaccessible address space.
    pub fn reserve(len: usize) -> Result<Region, i32> {
        let len = len.div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
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
        Ok(Region { base: NonNull::new(p.cast()).expect("mmap returned NULL"), len })
    }

    /// The first byte of the range.
    #[inline]
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length of the reservation in bytes.
    pub fn size(&self) -> usize {
        self.len
    }

    /// Makes `[off, off + len)` readable and writable. Page-aligned arguments.
    pub fn commit(&self, off: usize, len: usize) -> Result<(), i32> {
        assert!(off % PAGE_SIZE == 0 && len % PAGE_SIZE == 0 && off + len <= self.len);
        // SAFETY: the range lies inside this reservation (asserted above), which no
        // one else maps.
        let r = unsafe { libc::mprotect(self.base().add(off).cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
        if r != 0 {
            return Err(errno());
        }
        Ok(())
    }

    /// Gives the pages of `[off, off + len)` back to the operating system. The range
    /// stays committed; its next use reads zeros.
    pub fn discard(&self, off: usize, len: usize) {
        debug_assert!(off % PAGE_SIZE == 0 && len % PAGE_SIZE == 0 && off + len <= self.len);
        // SAFETY: inside this reservation; the caller no longer needs the contents.
        // MADV_DONTNEED on a private anonymous mapping cannot fail for a valid range,
        // and if it did the only cost would be resident memory, never correctness.
        unsafe {
            libc::madvise(self.base().add(off).cast(), len, libc::MADV_DONTNEED);
        }
    }
}

impl Region {
    /// Gives back `[off, off + len)` and makes it inaccessible again: its pages and
    /// its commit charge are released. Page-aligned arguments.
    pub fn decommit(&self, off: usize, len: usize) {
        assert!(off % PAGE_SIZE == 0 && len % PAGE_SIZE == 0 && off + len <= self.len);
        self.discard(off, len);
        // SAFETY: inside this reservation; the caller guarantees nothing uses the range.
        // Failure would leave the range accessible, which costs only address space.
        unsafe {
            libc::mprotect(self.base().add(off).cast(), len, libc::PROT_NONE);
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `reserve` and is unmapped exactly once.
        unsafe {
            libc::munmap(self.base().cast(), self.len);
        }
    }
}

/// The system's page size, as the kernel reports it.
pub fn system_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        PAGE_SIZE
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
        let r = Region::reserve(4 * PAGE_SIZE).unwrap();
        r.commit(0, 2 * PAGE_SIZE).unwrap();
        // SAFETY: the first two pages are committed read-write.
        unsafe {
            r.base().write(7);
            r.base().add(PAGE_SIZE + 1).write(9);
            assert_eq!(r.base().read(), 7);
        }
        r.discard(0, PAGE_SIZE);
        // SAFETY: still committed; discarded pages read as zero.
        unsafe {
            assert_eq!(r.base().read(), 0);
            assert_eq!(r.base().add(PAGE_SIZE + 1).read(), 9);
        }
    }
}
