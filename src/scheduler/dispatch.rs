//! The thread that sends `run_plugin` requests to clients through the
//! routers, and records each one in `runs`.
//!
//! It owns the [`BackendClient`] (a REQ per router, with failover), so a
//! slow or dead router delays only this thread, never the lease renewal.
//! For each batch from the planner it first records the runs in one
//! IMMEDIATE transaction that also checks the lease: a scheduler that lost
//! the lease records and sends nothing, and a run is in the store before
//! its request leaves, so a result can never arrive for an unknown run and
//! a new lease holder sees what its predecessor sent. A request that no
//! router delivered is deleted again (no run happened); the planner has
//! already moved the pair to its next slot, so it is retried then, not
//! hammered.

use super::lease;
use crate::backend_client::{BackendClient, DeliveryError};
use crate::params;
use crate::protocol::ToClient;
use crate::signals::ShutdownWatch;
use crate::store::{self, Store};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One run to request.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub uuid: String,
    pub plugin: String,
    /// The plugin's timeout, seconds.
    pub timeout_s: f64,
    /// The end of the slot this run is for: a run not sent by then is
    /// dropped, since the next slot's run is due. So a backlog never sends a
    /// plugin twice in one interval, and `sent_at` always lies in the slot
    /// the run was planned for (which a new lease holder relies on).
    pub slot_end: f64,
}

/// The lease's expiry as the planner last saw it (f64 bits; 0 = not held):
/// the dispatcher stops sending the moment it passes.
#[derive(Debug, Default)]
pub struct LeaseClock(AtomicU64);

impl LeaseClock {
    pub fn set(&self, expires_at: Option<f64>) {
        self.0
            .store(expires_at.unwrap_or(0.0).to_bits(), Ordering::SeqCst);
    }

    pub fn valid_at(&self, now: f64) -> bool {
        now < f64::from_bits(self.0.load(Ordering::SeqCst))
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// A router handed it to the client's connection.
    Yes,
    /// Every router said it has no route: no run happened.
    No,
    /// A router did not answer in time: it may have delivered it before
    /// stalling, so the run stays recorded (its result may still come; if
    /// not, it goes overdue, which is the truth of it).
    Maybe,
}

/// Whether one failed try (`"ENDPOINT: WHY"` from [`BackendClient`]) was
/// a router's definite answer that it cannot deliver, rather than silence.
fn refused(attempt: &str) -> bool {
    attempt.ends_with(": unknown_client")
        || attempt.ends_with(": unreachable")
        || attempt.ends_with(crate::backend_client::NOT_TRIED)
}

/// How often the counters are logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

pub struct Dispatcher {
    pub client: BackendClient,
    pub store: Store,
    pub me: String,
    pub result_grace_secs: f64,
    pub jobs: Receiver<Vec<Job>>,
    pub shutdown: ShutdownWatch,
    pub lease: Arc<LeaseClock>,
    pub sent: u64,
    pub failed: u64,
    /// Runs a router did not confirm in time (kept as sent).
    pub unconfirmed: u64,
    /// Runs dropped because their slot ended before they could be sent.
    pub late: u64,
}

impl Dispatcher {
    /// Sends batches until the planner hangs up.
    pub fn run(mut self) -> Result<(), String> {
        let mut summary_at = Instant::now() + SUMMARY_EVERY;
        loop {
            match self.jobs.recv_timeout(Duration::from_millis(500)) {
                Ok(batch) => self.dispatch(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= summary_at {
                summary_at = Instant::now() + SUMMARY_EVERY;
                self.summary("runs");
            }
        }
        self.summary("dispatcher stopped; runs");
        Ok(())
    }

    fn summary(&self, what: &str) {
        let line = format!(
            "{what} sent: {}, unconfirmed: {}, not delivered: {}, dropped late: {}",
            self.sent, self.unconfirmed, self.failed, self.late
        );
        if self.late > 0 {
            // Runs are due faster than this scheduler sends them.
            log::warn!("{line}");
        } else {
            log::info!("{line}");
        }
    }

    fn dispatch(&mut self, batch: Vec<Job>) {
        let now = store::now();
        let planned = batch.len();
        let runs: Vec<(String, Job)> = batch
            .into_iter()
            .filter(|job| job.slot_end > now)
            .map(|job| (uuid::Uuid::new_v4().to_string(), job))
            .collect();
        self.late += (planned - runs.len()) as u64;
        if runs.is_empty() {
            return;
        }
        match self.record(&runs) {
            Ok(true) => {}
            Ok(false) => {
                log::info!("lease not held: {} run(s) not sent", runs.len());
                return;
            }
            Err(e) => {
                // An outage is logged once by the store.
                if !e.is_outage() {
                    log::error!(
                        "{}: {} run(s) not sent",
                        self.store.error("recording runs", e),
                        runs.len()
                    );
                }
                return;
            }
        }
        let mut undone = Vec::new();
        let mut sending = Vec::new();
        let now = store::now();
        for (run_id, job) in &runs {
            if self.shutdown.is_set() || !self.lease.valid_at(now) {
                undone.push(run_id.as_str());
                continue;
            }
            if now >= job.slot_end {
                self.late += 1;
                undone.push(run_id.as_str());
                continue;
            }
            sending.push((run_id.as_str(), job));
        }
        // One pipelined batch through the routers, not a round trip each.
        for ((run_id, _), sent) in sending.iter().zip(self.send_all(&sending)) {
            match sent {
                Sent::Yes => self.sent += 1,
                Sent::Maybe => self.unconfirmed += 1,
                Sent::No => {
                    self.failed += 1;
                    undone.push(run_id);
                }
            }
        }
        if let Err(e) = self.forget(&undone) {
            self.store.log_error("deleting runs not sent", e);
        }
    }

    /// Inserts the runs if this scheduler holds the lease.
    fn record(&mut self, runs: &[(String, Job)]) -> store::Result<bool> {
        let now = store::now();
        let tx = self.store.write()?;
        if !lease::held_in(&tx, &self.me, now)? {
            return Ok(false);
        }
        for (run_id, job) in runs {
            let due_by = now + job.timeout_s + self.result_grace_secs;
            tx.execute(
                "INSERT INTO runs (run_id, uuid, plugin, sent_at, due_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, &job.uuid, &job.plugin, now, due_by],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn forget(&mut self, run_ids: &[&str]) -> store::Result<()> {
        if run_ids.is_empty() {
            return Ok(());
        }
        self.store.in_write(|tx| {
            for run_id in run_ids {
                tx.execute("DELETE FROM runs WHERE run_id = ?1", params![run_id])?;
            }
            Ok(())
        })
    }

    /// Sends each run_plugin through the first router that takes it.
    fn send_all(&mut self, runs: &[(&str, &Job)]) -> Vec<Sent> {
        let frames: Vec<Vec<u8>> = runs
            .iter()
            .map(|(run_id, job)| {
                ToClient::RunPlugin {
                    to: job.uuid.clone(),
                    plugin: job.plugin.clone(),
                    run_id: Some(run_id.to_string()),
                }
                .to_frame()
            })
            .collect();
        // A router that times out may hold the batch past the lease: then
        // no other router gets it, and the runs not delivered are forgotten.
        let lease = &self.lease;
        let results = self
            .client
            .deliver_batch_while(&frames, || lease.valid_at(store::now()));
        runs.iter()
            .zip(results)
            .map(|((run_id, job), result)| outcome(run_id, job, result))
            .collect()
    }
}

/// What one delivery's result means for its run, logged.
fn outcome(run_id: &str, job: &Job, result: Result<usize, DeliveryError>) -> Sent {
    match result {
        Ok(_) => Sent::Yes,
        Err(DeliveryError::NoRoute(tries)) if tries.iter().all(|t| refused(t)) => {
            log::warn!(
                "run {run_id} of {} on {}: no route, retried next interval ({})",
                job.plugin,
                job.uuid,
                tries.join("; ")
            );
            Sent::No
        }
        Err(DeliveryError::NoRoute(tries)) => {
            log::warn!(
                "run {run_id} of {} on {}: not confirmed, kept as sent ({})",
                job.plugin,
                job.uuid,
                tries.join("; ")
            );
            Sent::Maybe
        }
        Err(e) => {
            log::warn!("run {run_id} of {} on {}: {e}", job.plugin, job.uuid);
            Sent::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_definite_refusals_undo_a_run() {
        assert!(refused("tcp://a:1: unknown_client"));
        assert!(refused("tcp://a:1: unreachable"));
        assert!(!refused("tcp://a:1: no reply within 2000 ms"));
        assert!(!refused(
            "tcp://a:1: send: Resource temporarily unavailable"
        ));
    }

    #[test]
    fn lease_clock() {
        let clock = LeaseClock::default();
        assert!(!clock.valid_at(1.0));
        clock.set(Some(100.0));
        assert!(clock.valid_at(99.9));
        assert!(!clock.valid_at(100.0));
        clock.set(None);
        assert!(!clock.valid_at(50.0));
    }
}
