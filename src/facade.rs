//! The pool as its users hold it: [`Pool`] owns the core (`pool/mod.rs`: everything a
//! pool is) and, when one is configured, the automatic compactor's thread
//! (`compact/auto.rs`), which shares the core. Dropping a `Pool` stops that thread before the
//! core goes.

use std::sync::Arc;

#[cfg(not(loom))]
use crate::compact::auto::AutoCompactor;
#[cfg(not(loom))]
use crate::error::Error;
use crate::error::Result;
use crate::pool::config::Config;
use crate::pool::PoolCore;

/// A pool of objects: the owner of a [`PoolCore`], which it derefs to, and of the
/// automatic compactor's thread when one is configured.
pub struct Pool {
    // Declared first: dropped (the thread stopped and joined) before the core.
    #[cfg(not(loom))]
    auto: Option<AutoCompactor>,
    core: Arc<PoolCore>,
}

impl Pool {
    /// A pool with the default configuration.
    pub fn new(name: &str) -> Result<Pool> {
        Pool::with_config(name, &Config::default())
    }

    /// A pool with `config`.
    pub fn with_config(name: &str, config: &Config) -> Result<Pool> {
        Self::starting_at(name, config, 0)
    }

    /// TEST ONLY, not part of the API: a pool whose arena hands out no frame below
    /// `first_frame` (at most `config.max_pages`), so that a test reaches the highest
    /// frames of a large pool without the memory below them. `Invalid` past the arena.
    #[doc(hidden)]
    pub fn testonly_starting_at(name: &str, config: &Config, first_frame: usize) -> Result<Pool> {
        Self::starting_at(name, config, first_frame)
    }

    fn starting_at(name: &str, config: &Config, first_frame: usize) -> Result<Pool> {
        let core = Arc::new(PoolCore::build_at(name, config, first_frame)?);
        core.untrack_counters();
        #[cfg(not(loom))]
        let auto = if config.auto_compact.is_on() {
            Some(AutoCompactor::start(core.clone(), config.auto_compact).map_err(|_| Error::NoMemory)?)
        } else {
            None
        };
        Ok(Pool {
            #[cfg(not(loom))]
            auto,
            core,
        })
    }

    /// Whether an automatic compactor runs for this pool.
    pub fn auto_compacting(&self) -> bool {
        #[cfg(not(loom))]
        return self.auto.is_some();
        #[cfg(loom)]
        return false;
    }
}

impl std::ops::Deref for Pool {
    type Target = PoolCore;
    fn deref(&self) -> &PoolCore {
        &self.core
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}
