//! Compaction, and the arena's frames: defragmentation, giving the arena's address
//! space back, making zspages' frames adjacent, and the frame census.

use std::ffi::{c_int, c_long, c_ulong};

use super::types::{zs_frame_census, zs_pool};
use super::{write_out, Errno};

/// Moves objects out of sparse zspages into dense ones and frees the emptied frames;
/// returns the number of frames freed (for the dense layout, net of the new zspages
/// the moved objects may have needed). Safe while other threads allocate, free, read,
/// write and map: objects that are mapped or being read are skipped. A compaction
/// already running on the pool makes this call return 0 at once.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_compact(pool: *mut zs_pool) -> c_ulong {
    ffi_boundary!(pool, 0, |p| Ok(p.compact().pages_freed as c_ulong), |_| 0)
}

/// Moves frames in use from the top of the pool's arena into free frames below, then
/// gives the arena's free upper part back to the OS: its memory and commit charge, and
/// the side table's pages beyond it. The address range stays reserved, so the arena
/// grows back at any time (see zs_release_arena to give the range up too). Returns the
/// frames the arena's top came down by, or -EINVAL for NULL. Frames holding a mapped
/// or read object stay where they are. Safe while other threads work on the pool;
/// waits for a running compaction.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_defragment(pool: *mut zs_pool) -> c_long {
    ffi_boundary!(pool, 0, |p| Ok(p.defragment().frames_released as c_long), |e| -e as c_long)
}

/// Unmaps the arena's and the side table's address space above the frames in use
/// (call it after zs_defragment), so the process's virtual size falls. Returns the
/// bytes of arena address space given up, or -EINVAL for NULL. The arena's segments
/// above the one its top is in are given up, and that segment keeps its reservation,
/// so the pool can always grow back. Under an address-space limit (RLIMIT_AS) that
/// segment's tail is given up too; it is mapped again when the pool grows, but never
/// over another mapping: if one has been placed there meanwhile, the pool cannot grow
/// past it and zs_malloc fails with -ENOMEM.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_release_arena(pool: *mut zs_pool) -> c_long {
    ffi_boundary!(pool, 0, |p| Ok(p.release_address_space() as c_long), |e| -e as c_long)
}

/// Moves the frames of every zspage whose frames are not adjacent in the arena into a
/// run of adjacent frames, so that objects straddling two frames are read and mapped
/// in place instead of copied. Returns the zspages joined (a zspage holding a mapped
/// or read object, or one for which no run of free frames could be had, stays as it
/// is), or -EINVAL for NULL.
///
/// # Safety
/// A non-null `pool` is live.
#[no_mangle]
pub unsafe extern "C" fn zs_make_adjacent(pool: *mut zs_pool) -> c_long {
    ffi_boundary!(pool, 0, |p| Ok(p.make_adjacent().zspages_joined as c_long), |e| -e as c_long)
}

/// Walks the side table and counts frames by type and class (only the `size` bytes
/// the caller declared are written). 0, or -EINVAL.
///
/// # Safety
/// A non-null `pool` is live; a non-null `census` is writable for the `size` it
/// declares.
#[no_mangle]
pub unsafe extern "C" fn zs_frame_census(pool: *mut zs_pool, census: *mut zs_frame_census) -> c_int {
    ffi_boundary!(
        pool,
        0,
        |p| {
            if census.is_null() {
                // Checked before the walk, which costs time proportional to the arena.
                return Err(Errno::INVAL);
            }
            let c = p.census();
            let mut out = zs_frame_census {
                arena_frames: c.capacity as c_ulong,
                committed_frames: c.committed as c_ulong,
                top: c.top as c_ulong,
                free_frames: c.free as c_ulong,
                zspage_frames: c.zspage as c_ulong,
                huge_frames: c.huge as c_ulong,
                transit_frames: c.transit as c_ulong,
                arena_mapped_bytes: c.arena_mapped_bytes as c_ulong,
                side_table_mapped_bytes: c.side_table_mapped_bytes as c_ulong,
                ..Default::default()
            };
            for (frames, n) in out.class_frames.iter_mut().zip(&c.by_class) {
                *frames = *n as c_ulong;
            }
            // SAFETY: `census` is not NULL (checked above) and is writable for the
            // `size` it declares (# Safety).
            unsafe { write_out(census, &out) }?;
            Ok(0)
        },
        |e| -e
    )
}
