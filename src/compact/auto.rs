//! Automatic compaction: a background thread per pool that compacts a class once the
//! frames compaction could free in it reach a threshold.
//!
//! Off by default. The kernel does this from its shrinker, under memory pressure; a
//! userspace pool has no shrinker, so it looks on a timer instead. Its effect on the
//! pool's users is bounded twice, in the spirit of Redis's active defragmentation and
//! Mesh, which bound their pauses and their work rate:
//! - pause: compaction drops its class lock after every source zspage (`compact/mod.rs`),
//!   so malloc and free of a class wait at most one zspage's worth of copies, and
//!   readers never wait except on the one object being copied;
//! - rate: at most `max_pages_per_sec` frames are freed per second (0: no bound), the
//!   budget being spent per wake-up.

#[cfg(not(loom))]
use parking_lot::{Condvar, Mutex};
#[cfg(not(loom))]
use std::sync::Arc;
#[cfg(not(loom))]
use std::thread::JoinHandle;

use crate::pool::config::AutoCompact;
use crate::pool::PoolCore;
#[cfg(not(loom))]
use crate::sync::hg;

#[cfg(not(loom))]
struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The running compactor; stops and joins its thread when dropped. (Not under loom,
/// whose models do not run threads of their own.)
#[cfg(not(loom))]
pub(crate) struct AutoCompactor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[cfg(not(loom))]
impl AutoCompactor {
    pub(crate) fn start(core: Arc<PoolCore>, cfg: AutoCompact) -> std::io::Result<AutoCompactor> {
        let shared = Arc::new(Shared { stop: Mutex::new(false), wake: Condvar::new() });
        let s = shared.clone();
        // The stop flag's lock declares its edges to helgrind (`sync::hg`) by hand:
        // the condition variable needs parking_lot's own guard.
        let thread = std::thread::Builder::new().name("zs-autocompact".into()).spawn(move || {
            let mut stop = s.stop.lock();
            hg::happens_after(&s.stop);
            while !*stop {
                hg::happens_before(&s.stop);
                s.wake.wait_for(&mut stop, cfg.interval());
                hg::happens_after(&s.stop);
                if *stop {
                    break;
                }
                hg::happens_before(&s.stop);
                drop(stop);
                run_once(&core, &cfg);
                stop = s.stop.lock();
                hg::happens_after(&s.stop);
            }
            hg::happens_before(&s.stop);
        })?;
        Ok(AutoCompactor { shared, thread: Some(thread) })
    }
}

/// One wake-up: compact the classes over the threshold, within the budget.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn run_once(core: &PoolCore, cfg: &AutoCompact) -> usize {
    // One compaction per pool at a time: an explicit zs_compact running wins.
    let Some(_running) = core.compaction().try_lock() else { return 0 };
    let mut budget = cfg.budget_per_wakeup();
    let mut freed = 0;
    for ci in 0..core.classes().len() {
        if budget == 0 {
            break;
        }
        if core.freeable(ci) >= cfg.threshold_pages {
            let n = core.compact_class(ci, budget).pages_freed;
            freed += n;
            budget = budget.saturating_sub(n);
        }
    }
    freed
}

#[cfg(not(loom))]
impl Drop for AutoCompactor {
    fn drop(&mut self) {
        {
            let mut stop = self.shared.stop.lock();
            hg::happens_after(&self.shared.stop);
            *stop = true;
            hg::happens_before(&self.shared.stop);
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facade::Pool;
    use crate::pool::config::{AllocFlags, Config};

    #[test]
    fn one_wakeup_stays_within_its_budget_and_threshold() {
        let p = Pool::with_config("auto", &Config { max_pages: 1 << 14, ..Config::for_tests() }).unwrap();
        let hs: Vec<_> = (0..20_000).map(|_| p.malloc(100, AllocFlags::default()).unwrap()).collect();
        for h in hs.iter().step_by(2) {
            p.free(*h).unwrap();
        }
        let freeable: usize = (0..p.classes().len()).map(|ci| p.freeable(ci)).sum();
        assert!(freeable > 10);
        // A threshold above what any class could free: nothing happens.
        let high = AutoCompact { threshold_pages: freeable + 1, interval_ms: 1, max_pages_per_sec: 0 };
        assert_eq!(run_once(&p, &high), 0);
        // A budget of 4 frames per wake-up: at least that, and at most one zspage more.
        let slow = AutoCompact { threshold_pages: 1, interval_ms: 100, max_pages_per_sec: 40 };
        let n = run_once(&p, &slow);
        assert!((4..4 + crate::layout::classes::MAX_CHAIN).contains(&n), "freed {n}");
        p.check().unwrap();
    }
}
