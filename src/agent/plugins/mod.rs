//! The plugin manager thread: owns the set of declared plugins and starts
//! runs, at most `VIGIL_PLUGIN_CONCURRENCY` at once.
//!
//! Runs are asked for by `run_plugin` (from the link thread), by local
//! declarations with `local = true` on their interval, and each ends as a
//! `result` message handed to the link thread. Each run has its own worker
//! thread (it mostly waits on the plugin). The decisions (what is declared,
//! what is due, what waits, what starts) are [`manager::Manager`]'s, a
//! state machine without threads; this loop only feeds it events and the
//! time and carries out its actions. The host `registration` (process
//! `vigil-agent`, the file-declared plugins) is sent at start and whenever
//! a rescan of `VIGIL_PLUGIN_DIR` changes it.

pub mod declare;
pub mod manager;
pub mod perfdata;
pub mod run;

use super::channels::{LinkTx, PluginEvent, PluginTx, ToLink};
use super::message;
use super::metrics::AgentMetrics;
use super::outqueue::{Kind, Outgoing};
use crate::doorbell::{Doorbell, Ringer};
use crate::protocol::{PluginResult, PluginState, Process, Registration};
use crate::signals::ShutdownWatch;
use crossbeam_channel::{Receiver, Sender};
use declare::Declaration;
use manager::{Action, Job, Manager};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct PluginManager {
    pub rx: Receiver<PluginEvent>,
    pub tx: PluginTx,
    pub bell: Doorbell,
    pub link: LinkTx,
    pub uuid: String,
    pub hostname: String,
    pub plugin_dir: PathBuf,
    pub rescan: Option<Duration>,
    pub concurrency: usize,
    pub output_max: usize,
    pub metrics: Arc<AgentMetrics>,
    pub shutdown: ShutdownWatch,
}

impl PluginManager {
    pub fn run(mut self, files: Vec<Declaration>) -> Result<(), String> {
        let mut m = Manager::new(files, self.concurrency, Instant::now());
        register(&self.link, &self.uuid, &self.hostname, m.files());
        let mut workers: HashMap<u64, JoinHandle<()>> = HashMap::new();
        let mut next_rescan = self.rescan.map(|r| Instant::now() + r);
        let mut actions = Vec::new();
        loop {
            let now = Instant::now();
            m.due_local(now, &mut actions);
            if let (Some(at), Some(every)) = (next_rescan, self.rescan) {
                if now >= at {
                    let (files, errors) = declare::read_dir(&self.plugin_dir);
                    for e in m.files_read(files, errors, now, &mut actions) {
                        log::warn!("plugin declarations: {e}");
                    }
                    next_rescan = Some(now + every);
                }
            }
            m.start_waiting(&mut actions);
            for action in actions.drain(..) {
                self.perform(action, &mut m, &mut workers);
            }
            let wake = match (next_rescan, m.next_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = wake.map_or(-1, |w| {
                w.saturating_duration_since(Instant::now()).as_millis() as i64
            });
            let mut items = [self.bell.poll_item()];
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            if items[0].is_readable() {
                self.bell.clear();
            }
            while let Ok(event) = self.rx.try_recv() {
                match event {
                    PluginEvent::Run { plugin, run_id } => {
                        m.run_requested(plugin, run_id, &mut actions)
                    }
                    PluginEvent::Local { process, plugins } => {
                        log::info!("process {process:?} declared {} plugin(s)", plugins.len());
                        m.local_declared(process, plugins, Instant::now());
                    }
                    PluginEvent::Finished { worker } => {
                        m.finished(worker);
                        if let Some(handle) = workers.remove(&worker) {
                            let _ = handle.join();
                        }
                    }
                }
            }
            if self.shutdown.is_set() {
                break;
            }
        }
        // Runs in progress see the shutdown and kill their process groups.
        for (_, handle) in workers.drain() {
            let _ = handle.join();
        }
        Ok(())
    }

    /// Carries out one of the manager's decisions.
    fn perform(&self, action: Action, m: &mut Manager, workers: &mut HashMap<u64, JoinHandle<()>>) {
        match action {
            Action::Start { worker, job } => {
                let name = job.decl.name.clone();
                let ctx = Worker {
                    link: self.link.clone(),
                    tx: self.tx.tx.clone(),
                    ringer: self.tx.ringer.clone(),
                    uuid: self.uuid.clone(),
                    hostname: self.hostname.clone(),
                    output_max: self.output_max,
                    metrics: Arc::clone(&self.metrics),
                    stopping: self.shutdown.clone(),
                };
                let spawned = std::thread::Builder::new()
                    .name(format!("plugin-{name}"))
                    .spawn(move || ctx.run(job, worker));
                match spawned {
                    Ok(handle) => {
                        workers.insert(worker, handle);
                    }
                    Err(e) => {
                        log::error!("cannot start a thread for plugin {name}: {e}");
                        m.finished(worker);
                    }
                }
            }
            Action::Refuse { plugin, run_id } => {
                AgentMetrics::add(&self.metrics.plugin_refused, 1);
                log::warn!("refused run_plugin for {plugin:?}: not declared on this host");
                let text =
                    format!("UNKNOWN: plugin {plugin:?} is not declared on this host; refused");
                self.send_unknown(plugin, run_id, text);
            }
            Action::Unknown {
                plugin,
                run_id,
                text,
            } => self.send_unknown(plugin, run_id, text),
            Action::Register => {
                log::info!(
                    "plugin declarations changed: {} plugin(s); registering again",
                    m.files().len()
                );
                register(&self.link, &self.uuid, &self.hostname, m.files());
            }
        }
    }

    /// An UNKNOWN result for a run that did not happen.
    fn send_unknown(&self, plugin: String, run_id: Option<String>, text: String) {
        let result = PluginResult {
            hostname: self.hostname.clone(),
            plugin,
            status: PluginState::Unknown,
            output: text,
            long_output: String::new(),
            perfdata: Vec::new(),
            duration_ms: 0,
            run_id,
            timed_out: false,
            truncated: false,
        };
        send_result(&self.link, &self.uuid, &result);
    }
}

fn register(link: &LinkTx, uuid: &str, hostname: &str, files: &[Declaration]) {
    let registration = Registration {
        hostname: hostname.to_string(),
        process: Process {
            name: "vigil-agent".into(),
            pid: Some(std::process::id()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        },
        plugins: files.iter().map(Declaration::to_wire).collect(),
    };
    let item = ToLink::Send(Outgoing {
        kind: Kind::Other,
        frame: message::stamped(uuid, &registration),
    });
    if link.send_timeout(item, Duration::from_secs(5)).is_err() {
        log::error!("could not queue the host registration");
    }
}

fn send_result(link: &LinkTx, uuid: &str, result: &PluginResult) {
    let item = ToLink::Send(Outgoing {
        kind: Kind::Other,
        frame: message::stamped(uuid, result),
    });
    if link.send_timeout(item, Duration::from_secs(5)).is_err() {
        log::error!("could not queue the result of plugin {}", result.plugin);
    }
}

/// One run, on its own thread.
struct Worker {
    link: LinkTx,
    tx: Sender<PluginEvent>,
    ringer: Ringer,
    uuid: String,
    hostname: String,
    output_max: usize,
    metrics: Arc<AgentMetrics>,
    stopping: ShutdownWatch,
}

impl Worker {
    fn run(self, job: Job, worker: u64) {
        let decl = &job.decl;
        AgentMetrics::add(&self.metrics.plugin_runs, 1);
        let timeout = Duration::from_secs_f64(decl.timeout_s);
        let stopping = || self.stopping.is_set();
        let outcome = run::run(&decl.command, timeout, self.output_max, &stopping);
        if outcome.timed_out {
            AgentMetrics::add(&self.metrics.plugin_timeouts, 1);
            log::warn!(
                "plugin {} timed out after {:?}; its process group was killed",
                decl.name,
                timeout
            );
        }
        let result = PluginResult {
            hostname: self.hostname.clone(),
            plugin: decl.name.clone(),
            status: PluginState::from_code(outcome.status.into()).unwrap_or(PluginState::Unknown),
            output: outcome.output.text,
            long_output: outcome.output.long_output,
            perfdata: outcome.output.perfdata,
            duration_ms: outcome.duration.as_millis() as u64,
            run_id: job.run_id,
            timed_out: outcome.timed_out,
            truncated: outcome.truncated,
        };
        send_result(&self.link, &self.uuid, &result);
        let _ = self.tx.send(PluginEvent::Finished { worker });
        self.ringer.ring();
    }
}
