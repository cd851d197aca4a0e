//! The thread that owns the scheduler's view of the store: it takes and
//! renews the lease, re-reads the declared plugins and client liveness,
//! decides which runs are due (see `plan.rs`), hands them to the
//! dispatcher in batches, and sweeps overdue runs.
//!
//! It sleeps in `zmq::poll` on its doorbell until the next due run, lease
//! renewal, reload or sweep, so a signal wakes it at once. Store errors
//! (a lock held too long, a full disk) are logged and retried on the next
//! round; a scheduler that cannot renew stops sending until it can.

use super::config::SchedulerConfig;
use super::dispatch::{Job, LeaseClock};
use super::slots::{Pair, Rules, Slots, MAX_SLEEP};
use super::{lease, overdue, plan};
use crate::doorbell::Doorbell;
use crate::signals::ShutdownWatch;
use crate::store::{self, Store};
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::sync::Arc;

/// How often overdue runs are looked for, seconds.
const SWEEP_EVERY: f64 = 1.0;
/// How often old runs are pruned, seconds.
const PRUNE_EVERY: f64 = 600.0;
/// The shortest: runs due within one tick go out as one batch, so the
/// dispatcher records them in one transaction instead of one each (store
/// writes, not the network, bound a scheduler that wakes per run).
const TICK: f64 = 0.05;
/// A new sweep looks this far before the last one's horizon, in case a
/// clock step or another holder left runs behind it, seconds.
const SWEEP_OVERLAP: f64 = 60.0;

pub struct Planner {
    pub store: Store,
    pub config: SchedulerConfig,
    pub bell: Doorbell,
    pub shutdown: ShutdownWatch,
    pub jobs: Sender<Vec<Job>>,
    pub lease_clock: Arc<LeaseClock>,
    holding: bool,
    next_lease_at: f64,
    next_reload_at: f64,
    next_sweep_at: f64,
    next_prune_at: f64,
    swept_until: f64,
    pairs: Slots,
}

impl Planner {
    pub fn new(
        store: Store,
        config: SchedulerConfig,
        bell: Doorbell,
        shutdown: ShutdownWatch,
        jobs: Sender<Vec<Job>>,
        lease_clock: Arc<LeaseClock>,
    ) -> Planner {
        Planner {
            store,
            config,
            bell,
            shutdown,
            jobs,
            lease_clock,
            holding: false,
            next_lease_at: 0.0,
            next_reload_at: 0.0,
            next_sweep_at: 0.0,
            next_prune_at: 0.0,
            swept_until: 0.0,
            pairs: Slots::default(),
        }
    }

    pub fn run(mut self) -> Result<(), String> {
        while !self.shutdown.is_set() {
            let wake = self.round();
            let wait = (wake - store::now()).clamp(TICK, MAX_SLEEP);
            let mut items = [self.bell.poll_item()];
            match zmq::poll(&mut items, (wait * 1000.0).ceil() as i64) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(format!("polling the doorbell: {e}")),
            }
            if items[0].is_readable() {
                self.bell.clear();
            }
        }
        self.release();
        Ok(())
    }

    /// Does what is due now; returns when to look again.
    fn round(&mut self) -> f64 {
        let now = store::now();
        if now >= self.next_lease_at {
            self.check_lease(now);
        }
        if !self.holding {
            return self.next_lease_at;
        }
        if now >= self.next_reload_at {
            self.reload(now);
        }
        let next_run = self.dispatch_due(now);
        if now >= self.next_sweep_at {
            self.sweep(now);
        }
        if now >= self.next_prune_at {
            self.prune(now);
        }
        next_run
            .min(self.next_lease_at)
            .min(self.next_reload_at)
            .min(self.next_sweep_at)
    }

    fn check_lease(&mut self, now: f64) {
        let lease_secs = self.config.lease.as_secs_f64();
        let held = lease::acquire(&mut self.store, &self.config.id, lease_secs, now);
        let held = match held {
            Ok(held) => held,
            Err(e) => {
                self.store.log_error("taking or renewing the lease", e);
                None
            }
        };
        self.lease_clock.set(held.map(|h| h.expires_at));
        // A lease that lapsed (this scheduler stalled) and was taken again
        // is a new take, even if this scheduler thought it held it: another
        // may have sent runs in between.
        let was_holding = self.holding;
        let continued = was_holding && held.is_some_and(|h| h.continued);
        self.holding = held.is_some();
        if self.holding {
            // Renew at a third of the lease, so two missed renewals still
            // keep it.
            self.next_lease_at = now + lease_secs / 3.0;
        } else {
            // A standby looks often, to take over soon after a lapse.
            self.next_lease_at = now + (lease_secs / 4.0).min(1.0);
        }
        match (was_holding, self.holding) {
            (_, true) if !continued => {
                log::info!("lease taken by {}: sending runs", self.config.id);
                // Forget what this scheduler knew: another may have sent runs
                // meanwhile; the store says what was sent.
                self.pairs.clear();
                self.next_reload_at = now;
                self.swept_until = now - self.config.runs_keep_secs;
            }
            (true, false) => log::warn!("lease lost by {}: standing by", self.config.id),
            _ => {}
        }
    }

    /// Re-reads declared plugins and client liveness, keeping each pair's
    /// last send. After a takeover (no pairs known) the last sends come
    /// from `runs`.
    fn reload(&mut self, now: f64) {
        self.next_reload_at = now + self.config.reload.as_secs_f64();
        let fresh = self.pairs.is_empty();
        let loaded = match self.load_pairs(fresh) {
            Ok(loaded) => loaded,
            Err(e) => {
                self.store.log_error("reading declared plugins", e);
                return;
            }
        };
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.replace(loaded, |pair| self.last_sent_in_store(pair));
        self.pairs = pairs;
        log::debug!("{} declared plugin(s) loaded", self.pairs.len());
    }

    /// The last run sent for `pair`, from `runs` (an index lookup).
    fn last_sent_in_store(&mut self, pair: &Pair) -> Option<f64> {
        self.store
            .read()
            .and_then(|tx| {
                tx.query_value(
                    "SELECT MAX(sent_at) FROM runs WHERE uuid = ?1 AND plugin = ?2",
                    crate::params![&pair.uuid, &pair.plugin],
                )
            })
            .unwrap_or_else(|e| {
                self.store.log_error("reading a pair's last run", e);
                None
            })
    }

    fn load_pairs(&mut self, with_last_sent: bool) -> store::Result<Vec<Pair>> {
        let tx = self.store.read()?;
        let mut last_sent: HashMap<(String, String), f64> = HashMap::new();
        if with_last_sent {
            let rows = tx.query(
                "SELECT uuid, plugin, MAX(sent_at) FROM runs GROUP BY uuid, plugin",
                &[],
            )?;
            for r in rows {
                last_sent.insert((r.get(0)?, r.get(1)?), r.get(2)?);
            }
        }
        let rows = tx.query(
            "SELECT p.uuid, p.name, p.interval_s, p.timeout_s, c.last_heartbeat, c.heartbeat_interval_s
             FROM plugins p JOIN clients c ON c.uuid = p.uuid",
            &[],
        )?;
        drop(tx);
        let mut pairs = Vec::new();
        for r in rows {
            let (uuid, plugin, interval, timeout, last_heartbeat, heartbeat_interval): (
                String,
                String,
                Option<f64>,
                Option<f64>,
                Option<f64>,
                Option<f64>,
            ) = (
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            );
            // A plugin without a usable interval runs only on demand.
            let Some(interval) = plan::effective_interval(interval) else {
                continue;
            };
            let timeout_s = timeout
                .filter(|t| t.is_finite() && *t > 0.0)
                .unwrap_or(self.config.default_timeout_secs);
            let key = (uuid, plugin);
            let last_sent = last_sent.get(&key).copied();
            let (uuid, plugin) = key;
            pairs.push(Pair {
                last_heartbeat,
                heartbeat_interval,
                last_sent,
                ..Pair::new(uuid, plugin, interval, timeout_s)
            });
        }
        Ok(pairs)
    }

    /// Hands the due runs to the dispatcher; returns the next due time.
    fn dispatch_due(&mut self, now: f64) -> f64 {
        if self.jobs.is_full() {
            // The dispatcher is behind: the due runs stay due.
            return now + 0.02;
        }
        let rules = Rules {
            catch_up: self.config.catch_up_secs(),
            heartbeat_grace: self.config.heartbeat_grace,
        };
        let (batch, next) = self.pairs.due(now, &rules, self.next_reload_at);
        if !batch.is_empty() && self.jobs.try_send(batch).is_err() {
            // Only if the dispatcher died; the supervisor stops us then.
            log::error!("the dispatcher is gone: runs not sent");
        }
        next
    }

    fn sweep(&mut self, now: f64) {
        self.next_sweep_at = now + SWEEP_EVERY;
        let since = self.swept_until;
        match overdue::sweep(&mut self.store, &self.config.id, now, since) {
            Ok(Some(swept)) => {
                if swept.more {
                    // More remain: the next sweep comes at once.
                    self.next_sweep_at = now;
                } else {
                    self.swept_until = now - SWEEP_OVERLAP;
                }
                for run in swept.runs {
                    log::warn!(
                        "run {} of {} on {}: result overdue{}",
                        run.run_id,
                        run.plugin,
                        run.hostname.as_deref().unwrap_or(&run.uuid),
                        match run.outcome {
                            overdue::Outcome::Superseded => " (a newer result arrived)",
                            overdue::Outcome::Record { notify: true } => ": notification raised",
                            overdue::Outcome::Record { notify: false } => "",
                        }
                    );
                }
            }
            Ok(None) => {}
            Err(e) => self.store.log_error("sweeping overdue runs", e),
        }
    }

    fn prune(&mut self, now: f64) {
        self.next_prune_at = now + PRUNE_EVERY;
        match overdue::prune(&mut self.store, now - self.config.runs_keep_secs) {
            Ok(0) => {}
            Ok(n) => log::info!("pruned {n} finished run(s)"),
            Err(e) => self.store.log_error("pruning runs", e),
        }
    }

    /// Gives up the lease on a clean stop so a peer takes over at once.
    fn release(&mut self) {
        self.lease_clock.set(None);
        if !self.holding {
            return;
        }
        match lease::release(&mut self.store, &self.config.id) {
            Ok(_) => log::info!("lease released by {}", self.config.id),
            Err(e) => self.store.log_error("releasing the lease", e),
        }
    }
}
