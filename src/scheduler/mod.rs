//! `vigil scheduler`: runs declared plugins where they are declared.
//!
//! It reads the plugins clients registered (table `plugins`), and asks each
//! live client to run each of its plugins once per `interval_s`, at a
//! stable phase within the interval, by sending `run_plugin` through the
//! routers' back ends with failover. Runs are recorded in `runs`; one whose
//! result does not come back in time becomes UNKNOWN "result overdue" with
//! a notification. Several schedulers may run against one store: the one
//! holding the lease sends, the others stand by and take over when it
//! lapses.
//!
//! Threads:
//!
//! ```text
//!  [planner: store, lease, plan, overdue] ──batches of runs──► [dispatch: store, REQ per router] ──► routers
//! ```

pub mod config;
mod dispatch;
mod lease;
mod overdue;
pub mod plan;
mod planner;
mod slots;

use crate::config::Env;
use crate::doorbell::Doorbell;
use crate::error::Error;
use crate::signals::{Shutdown, SignalThread};
use crate::store::Store;
use crate::supervisor::Supervisor;
use config::SchedulerConfig;
use dispatch::{Dispatcher, LeaseClock};
use planner::Planner;
use std::sync::Arc;

/// Batches waiting for the dispatcher; the planner holds runs back (they
/// stay due) while it is full.
const JOB_QUEUE: usize = 4;

const USAGE: &str = "usage: vigil scheduler

Runs the plugin scheduler in the foreground. Configured by VIGIL_*
variables (VIGIL_DB, VIGIL_BACKENDS, VIGIL_LEASE_SECS, ...); see README.md.";

pub fn command(args: &[String]) -> Result<(), Error> {
    if crate::error::help_or_no_args(args, USAGE)? {
        return Ok(());
    }
    let env = Env::from_process()?;
    run(SchedulerConfig::from_env(&env)?)
}

/// A store that cannot be used (a refused login, a newer schema) stops the
/// start for good (status 2); one unreachable now is worth a restart (1).
fn open_store(config: &SchedulerConfig) -> Result<Store, Error> {
    Store::open(&config.db).map_err(|e| {
        if e.source.is_outage() {
            Error::Store(e)
        } else {
            Error::setup("VIGIL_DB", e)
        }
    })
}

pub fn run(config: SchedulerConfig) -> Result<(), Error> {
    log::info!("starting scheduler: {config:?}");
    let planner_store = open_store(&config)?;
    let dispatch_store = open_store(&config)?;
    let ctx = zmq::Context::new();
    let (bell, ringer) =
        Doorbell::new().map_err(|e| Error::setup("creating the planner doorbell", e))?;
    let shutdown = Arc::new(Shutdown::new(vec![ringer]));
    let signals = SignalThread::start(Arc::clone(&shutdown))
        .map_err(|e| Error::setup("installing signal handlers", e))?;
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(JOB_QUEUE);
    let lease_clock = Arc::new(LeaseClock::default());
    let ready_line = format!(
        "ready: scheduler={} db={} backends={}",
        config.id,
        config.db,
        config.backends.join(",")
    );
    let dispatcher = Dispatcher {
        client: crate::backend_client::BackendClient::new(
            &ctx,
            config.backends.clone(),
            config.backend_timeout,
        )
        .with_keys(config.keys.clone()),
        store: dispatch_store,
        me: config.id.clone(),
        result_grace_secs: config.result_grace_secs,
        jobs: jobs_rx,
        shutdown: shutdown.watch(),
        lease: Arc::clone(&lease_clock),
        sent: 0,
        failed: 0,
        unconfirmed: 0,
        late: 0,
    };
    let planner = Planner::new(
        planner_store,
        config,
        bell,
        shutdown.watch(),
        jobs_tx,
        lease_clock,
    );
    let mut supervisor = Supervisor::default();
    supervisor
        .spawn("dispatch", move || dispatcher.run())
        .and_then(|()| supervisor.spawn("planner", move || planner.run()))
        .map_err(|e| Error::setup("starting threads", e))?;
    log::info!(target: crate::ready::TARGET, "{ready_line}");
    let watch = shutdown.watch();
    let failed = supervisor.wait(|| watch.is_set(), || shutdown.trigger());
    signals.stop();
    log::info!("scheduler stopped");
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::ThreadsFailed(failed))
    }
}
