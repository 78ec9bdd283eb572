//! A pool's configuration: what `Pool::with_config` and `zs_create_pool_with` take,
//! checked when the pool is built (`PoolCore::build_at`, `AutoCompact::validate`), and
//! the flags of an allocation.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::classes::Layout;

/// A pool's configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Most frames the pool may hold; 0 means no limit but the arena's.
    pub max_pages: usize,
    /// Most frames per zspage, 4..=16; 0 means the layout's default.
    pub chain_size: usize,
    /// The class table.
    pub layout: Layout,
    /// Automatic compaction (off by default).
    pub auto_compact: AutoCompact,
    /// Largest object the pool takes, up to [`MAX_OBJECT_LIMIT`]; 0 means the frame
    /// size (the kernel's `ZS_MAX_ALLOC_SIZE` is its `PAGE_SIZE`).
    pub max_object_size: usize,
    /// Bytes of a frame, the pool's unit as the page is the kernel's: 0 means the
    /// system's page size; otherwise a power of two from 4096 to 65536 and a multiple
    /// of the system's page size.
    pub frame_size: usize,
    /// Whether the arena's frames are faulted in a commit step (2 MiB) at a time as
    /// the pool grows, rather than a page at a time on their first write: less CPU
    /// for a pool that fills fast, for up to a step of resident memory not yet used.
    pub prefault: bool,
}

/// The largest `max_object_size` a pool may be configured with, at every frame size:
/// 64 KiB, sixteen frames of 4 KiB, the longest chain (`layout/classes.rs`), and the
/// most a dense zspage addresses (`layout/dense.rs`).
pub const MAX_OBJECT_LIMIT: usize = 65536;

impl Config {
    /// The frame size this configuration asks for, checked against the system's page.
    pub(crate) fn frame(&self) -> Result<usize> {
        let page = crate::frames::os::page_size();
        let frame = if self.frame_size == 0 { page } else { self.frame_size };
        let allowed = crate::frames::MIN_FRAME_SIZE..=crate::frames::MAX_FRAME_SIZE;
        if !frame.is_power_of_two() || !allowed.contains(&frame) || frame % page != 0 {
            return Err(Error::Invalid(if self.frame_size == 0 {
                "the system's page size is not a frame size this library supports (4096..65536)"
            } else {
                "frame_size must be 0 or a power of two from 4096 to 65536, a multiple of the page size"
            }));
        }
        Ok(frame)
    }

    /// The object limit this configuration asks for in a pool of frames of `frame`
    /// bytes.
    pub(crate) fn object_limit(&self, frame: usize) -> Result<usize> {
        match self.max_object_size {
            0 => Ok(frame),
            n if n <= MAX_OBJECT_LIMIT => Ok(n),
            _ => Err(Error::Invalid("max_object_size above 65536")),
        }
    }
}

/// Allocation flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocFlags(pub u32);

impl AllocFlags {
    /// Fail with `NoMemory` rather than take a new frame (`ZS_ALLOC_NOGROW`).
    pub const NOGROW: AllocFlags = AllocFlags(1);
    /// Every defined flag bit.
    pub const ALL: u32 = 1;
}

/// Settings of the automatic compactor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoCompact {
    /// Compact a class once compaction could free this many frames in it; 0 = off.
    pub threshold_pages: usize,
    /// How often to look, in milliseconds; 0 = 100.
    pub interval_ms: u32,
    /// Most frames freed per second; 0 = no bound.
    pub max_pages_per_sec: usize,
}

/// The wake-up period when the configuration says 0.
pub const DEFAULT_INTERVAL_MS: u32 = 100;

impl AutoCompact {
    /// Whether the compactor runs.
    pub fn is_on(&self) -> bool {
        self.threshold_pages != 0
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.interval_ms > 3_600_000 {
            return Err(Error::Invalid("auto-compaction interval above one hour"));
        }
        Ok(())
    }

    pub(crate) fn interval(&self) -> Duration {
        Duration::from_millis(if self.interval_ms == 0 { DEFAULT_INTERVAL_MS } else { self.interval_ms } as u64)
    }

    /// Frames that one wake-up may free.
    pub(crate) fn budget_per_wakeup(&self) -> usize {
        if self.max_pages_per_sec == 0 {
            return usize::MAX;
        }
        (self.max_pages_per_sec as u128 * self.interval().as_millis() / 1000).max(1) as usize
    }
}

/// The frame size the unit tests' pools and arenas have: `ZS_TEST_FRAME_SIZE` in bytes,
/// as the integration tests read it (`make test-debug-frames` runs the unit tests that
/// build pools or arenas at 16 and 64 KiB), or 0 where it is unset or empty.
#[cfg(test)]
pub(crate) fn test_frame_size() -> usize {
    match std::env::var("ZS_TEST_FRAME_SIZE") {
        Ok(v) if !v.is_empty() => v.parse().expect("ZS_TEST_FRAME_SIZE is a number of bytes"),
        _ => 0,
    }
}

#[cfg(test)]
impl Config {
    /// The default configuration with the unit tests' frame size ([`test_frame_size`];
    /// 0, the system's page, where it is unset).
    pub(crate) fn for_tests() -> Config {
        Config { frame_size: test_frame_size(), ..Config::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_wakeup() {
        let c = AutoCompact { threshold_pages: 1, interval_ms: 0, max_pages_per_sec: 0 };
        assert_eq!(c.budget_per_wakeup(), usize::MAX);
        let c = AutoCompact { threshold_pages: 1, interval_ms: 250, max_pages_per_sec: 100 };
        assert_eq!(c.budget_per_wakeup(), 25);
        let c = AutoCompact { threshold_pages: 1, interval_ms: 1, max_pages_per_sec: 10 };
        assert_eq!(c.budget_per_wakeup(), 1, "at least one frame per wake-up");
    }
}
