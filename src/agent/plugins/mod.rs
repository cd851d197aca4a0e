//! The plugin manager: owns the set of declared plugins and decides which
//! runs start, at most `VIGIL_PLUGIN_CONCURRENCY` at once.
//!
//! Runs are asked for by `run_plugin` (from the link thread), by local
//! declarations with `local = true` on their interval, and each ends as a
//! `result` message handed to the link thread. Each run has its own worker
//! thread (it mostly waits on the plugin); the manager only bookkeeps. The
//! host `registration` (process `vigil-agent`, the file-declared plugins) is
//! sent at start and whenever a rescan of `VIGIL_PLUGIN_DIR` changes it.
//!
//! At most one run per plugin is waiting or running: a `run_plugin` for a
//! plugin already waiting or running shares that run, and when it ends the
//! manager answers every request that shared it with a `result` carrying
//! its own `run_id` (PROTOCOL.md). So no requester can make the host run a
//! plugin faster than it finishes, nor fill the queue ahead of the
//! schedule's runs.
//!
//! The manager holds no socket (its input is a channel, its output the
//! link's channel), so its rules (sharing, refusal, the concurrency bound,
//! local schedules) are unit-tested below over real channels.

pub mod declare;
pub mod local;
pub mod perfdata;
pub mod run;

use super::channels::{LinkTx, PluginEvent, PluginTx, Report, ToLink};
use super::message;
use super::metrics::AgentMetrics;
use super::outqueue::{Kind, Outgoing};
use crate::doorbell::{Doorbell, Ringer};
use crate::protocol::{PluginResult, PluginState, Process, Registration};
use crate::rate_limit::RateLimit;
use crate::signals::ShutdownWatch;
use crossbeam_channel::{Receiver, Sender};
use declare::Declaration;
use local::LocalBook;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs waiting for a free slot, at most.
const WAITING_MAX: usize = 1024;
/// Requests sharing one run, at most; more are answered UNKNOWN at once.
const SHARERS_MAX: usize = 10_000;
/// One warning per window about local registrations, the rest counted:
/// any local process may send them as fast as it likes.
const LOCAL_LOG_WINDOW: Duration = Duration::from_secs(10);
/// Names of plugins missing from the directory shown in one warning.
const MISSING_SHOWN: usize = 5;

#[derive(Debug, Clone)]
struct Job {
    decl: Declaration,
    /// Every request this run answers: `None` for a local (scheduled here)
    /// run, the `run_id` of each `run_plugin`.
    run_ids: Vec<Option<String>>,
}

impl Job {
    fn new(decl: Declaration, run_id: Option<String>) -> Job {
        Job {
            decl,
            run_ids: vec![run_id],
        }
    }
}

/// A run in progress.
struct Running {
    name: String,
    handle: JoinHandle<()>,
    run_ids: Vec<Option<String>>,
}

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

struct State {
    files: Vec<Declaration>,
    /// Each local process's declarations (none is no entry), within
    /// `book`'s bounds.
    local: BTreeMap<String, Vec<Declaration>>,
    book: LocalBook,
    /// Warnings about local registrations (refused, or naming plugins the
    /// directory lacks).
    local_log: RateLimit,
    /// The info line on each changed local declaration set.
    declared_log: RateLimit,
    next_local: HashMap<String, Instant>,
    waiting: VecDeque<Job>,
    running: HashMap<u64, Running>,
    next_worker: u64,
    /// The problems the last read of the directory found, logged once.
    file_errors: Vec<String>,
}

impl State {
    fn new(files: Vec<Declaration>) -> State {
        State {
            files,
            local: BTreeMap::new(),
            book: LocalBook::default(),
            local_log: RateLimit::new(LOCAL_LOG_WINDOW),
            declared_log: RateLimit::new(LOCAL_LOG_WINDOW),
            next_local: HashMap::new(),
            waiting: VecDeque::new(),
            running: HashMap::new(),
            next_worker: 0,
            file_errors: Vec::new(),
        }
    }
}

impl PluginManager {
    pub fn run(self, files: Vec<Declaration>) -> Result<(), String> {
        let mut state = State::new(files);
        self.register(&state.files);
        reschedule_local(&mut state, Instant::now());
        let mut next_rescan = self.rescan.map(|r| Instant::now() + r);
        let mut bell = self.bell;
        let this = Inner {
            rx: self.rx,
            tx: self.tx,
            link: self.link,
            uuid: self.uuid,
            hostname: self.hostname,
            plugin_dir: self.plugin_dir,
            concurrency: self.concurrency,
            output_max: self.output_max,
            metrics: self.metrics,
            shutdown: self.shutdown.clone(),
        };
        loop {
            let now = Instant::now();
            this.due_local(&mut state, now);
            if let (Some(at), Some(every)) = (next_rescan, self.rescan) {
                if now >= at {
                    this.rescan(&mut state);
                    next_rescan = Some(now + every);
                }
            }
            this.start_waiting(&mut state);
            let mut wake = next_rescan;
            for at in state.next_local.values() {
                wake = Some(wake.map_or(*at, |w| w.min(*at)));
            }
            let timeout = wake.map_or(-1, |w| {
                w.saturating_duration_since(Instant::now()).as_millis() as i64
            });
            let mut items = [bell.poll_item()];
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            if items[0].is_readable() {
                bell.clear();
            }
            while let Ok(event) = this.rx.try_recv() {
                this.handle(&mut state, event);
            }
            if self.shutdown.is_set() {
                break;
            }
        }
        // Runs in progress see the shutdown and kill their process groups;
        // their results are still sent (the link drains what it can).
        while !state.running.is_empty() {
            match this.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(event @ PluginEvent::Finished { .. }) => this.handle(&mut state, event),
                Ok(_) => {}
                Err(_) => state.running.retain(|_, r| !r.handle.is_finished()),
            }
        }
        Ok(())
    }

    fn register(&self, files: &[Declaration]) {
        register(&self.link, &self.uuid, &self.hostname, files);
    }
}

/// Brings the local schedule in line with the declarations: plugins no
/// longer declared `local` leave it, new ones are due `now`, the others
/// keep their next run.
fn reschedule_local(state: &mut State, now: Instant) {
    let names: HashSet<String> = state
        .files
        .iter()
        .chain(state.local.values().flatten())
        .filter(|d| d.local)
        .map(|d| d.name.clone())
        .collect();
    state.next_local.retain(|name, _| names.contains(name));
    for name in names {
        state.next_local.entry(name).or_insert(now);
    }
}

/// The manager's parts that its loop uses (split out so the loop can
/// borrow the state mutably beside them).
struct Inner {
    rx: Receiver<PluginEvent>,
    tx: PluginTx,
    link: LinkTx,
    uuid: String,
    hostname: String,
    plugin_dir: PathBuf,
    concurrency: usize,
    output_max: usize,
    metrics: Arc<AgentMetrics>,
    shutdown: ShutdownWatch,
}

fn register(link: &LinkTx, uuid: &str, hostname: &str, files: &[Declaration]) {
    let body = Registration {
        hostname: hostname.to_string(),
        process: Process {
            name: "vigil-agent".into(),
            pid: Some(std::process::id()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        },
        plugins: files.iter().map(Declaration::to_decl).collect(),
    };
    let frame = message::frame(uuid, &body);
    let item = ToLink::Send(Outgoing::new(Kind::Other, frame));
    if link.send_timeout(item, Duration::from_secs(5)).is_err() {
        log::error!("could not queue the host registration");
    }
}

impl Inner {
    fn handle(&self, state: &mut State, event: PluginEvent) {
        match event {
            PluginEvent::Run { plugin, run_id } => match find(state, &plugin) {
                Some(decl) => self.request(state, decl, run_id),
                None => self.refuse(&plugin, run_id),
            },
            PluginEvent::Local { process, plugins } => {
                if declare_local(state, &self.plugin_dir, process, plugins) {
                    reschedule_local(state, Instant::now());
                }
            }
            PluginEvent::Finished { worker, report } => {
                if let Some(run) = state.running.remove(&worker) {
                    let _ = run.handle.join();
                    for run_id in run.run_ids {
                        self.send_report(&run.name, &report, run_id);
                    }
                }
            }
        }
    }

    /// A `run_plugin`: shares the plugin's run that is waiting or running,
    /// or queues one.
    fn request(&self, state: &mut State, decl: Declaration, run_id: Option<String>) {
        let name = decl.name.clone();
        let sharers = match state.running.values_mut().find(|r| r.name == name) {
            Some(run) => Some(&mut run.run_ids),
            None => state
                .waiting
                .iter_mut()
                .find(|j| j.decl.name == name)
                .map(|j| &mut j.run_ids),
        };
        match sharers {
            Some(list) if list.len() < SHARERS_MAX => {
                AgentMetrics::add(&self.metrics.plugin_shared, 1);
                list.push(run_id);
            }
            Some(_) => {
                let text = "UNKNOWN: too many requests waiting for this plugin's run; not run";
                self.send_report(&name, &Report::unknown(text), run_id);
            }
            None => self.enqueue(state, Job::new(decl, run_id)),
        }
    }

    /// The `result` of `plugin`'s run for one request (`run_id`).
    fn send_report(&self, plugin: &str, r: &Report, run_id: Option<String>) {
        let result = PluginResult {
            hostname: self.hostname.clone(),
            plugin: plugin.to_string(),
            status: r.status,
            output: r.output.clone(),
            long_output: r.long_output.clone(),
            perfdata: r.perfdata.clone(),
            duration_ms: r.duration_ms,
            run_id,
            timed_out: r.timed_out,
            truncated: r.truncated,
        };
        let frame = message::frame(&self.uuid, &result);
        let item = ToLink::Send(Outgoing::new(Kind::Other, frame));
        if self
            .link
            .send_timeout(item, Duration::from_secs(5))
            .is_err()
        {
            log::error!("could not queue the result of plugin {plugin}");
        }
    }

    /// `run_plugin` for a name nobody declared: never run, answered with an
    /// UNKNOWN result naming the refusal.
    fn refuse(&self, plugin: &str, run_id: Option<String>) {
        AgentMetrics::add(&self.metrics.plugin_refused, 1);
        log::warn!("refused run_plugin for {plugin:?}: not declared on this host");
        let text = format!("UNKNOWN: plugin {plugin:?} is not declared on this host; refused");
        self.send_report(plugin, &Report::unknown(&text), run_id);
    }

    fn enqueue(&self, state: &mut State, job: Job) {
        if state.waiting.len() >= WAITING_MAX {
            let text = "UNKNOWN: too many plugin runs waiting on this agent; not run";
            let report = Report::unknown(text);
            for run_id in job.run_ids {
                self.send_report(&job.decl.name, &report, run_id);
            }
            return;
        }
        state.waiting.push_back(job);
    }

    fn due_local(&self, state: &mut State, now: Instant) {
        let due: Vec<String> = state
            .next_local
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let Some(decl) = find(state, &name) else {
                state.next_local.remove(&name);
                continue;
            };
            let every = Duration::from_secs_f64(decl.interval_s.unwrap_or(60.0));
            state.next_local.insert(name.clone(), now + every);
            // A slow plugin is not started again while its last run goes on.
            let busy = state.running.values().any(|r| r.name == name)
                || state.waiting.iter().any(|j| j.decl.name == name);
            if !busy {
                self.enqueue(state, Job::new(decl, None));
            }
        }
    }

    fn start_waiting(&self, state: &mut State) {
        while state.running.len() < self.concurrency {
            let Some(job) = state.waiting.pop_front() else {
                return;
            };
            let worker = state.next_worker;
            state.next_worker += 1;
            let name = job.decl.name.clone();
            let ctx = Worker {
                tx: self.tx.tx.clone(),
                ringer: self.tx.ringer.clone(),
                output_max: self.output_max,
                metrics: Arc::clone(&self.metrics),
                stopping: self.shutdown.clone(),
            };
            let decl = job.decl;
            let spawned = std::thread::Builder::new()
                .name(format!("plugin-{name}"))
                .spawn(move || ctx.run(decl, worker));
            match spawned {
                Ok(handle) => {
                    state.running.insert(
                        worker,
                        Running {
                            name,
                            handle,
                            run_ids: job.run_ids,
                        },
                    );
                }
                Err(e) => log::error!("cannot start a thread for plugin {name}: {e}"),
            }
        }
    }

    fn rescan(&self, state: &mut State) {
        let (files, errors) = declare::read_dir(&self.plugin_dir);
        if errors != state.file_errors {
            for e in &errors {
                log::warn!("plugin declarations: {e}");
            }
            state.file_errors = errors;
        }
        if files != state.files {
            log::info!(
                "plugin declarations changed: {} plugin(s); registering again",
                files.len()
            );
            state.files = files;
            register(&self.link, &self.uuid, &self.hostname, &state.files);
            reschedule_local(state, Instant::now());
        }
    }
}

/// Takes `process`'s new declarations in place of its old ones, if they
/// keep within the bounds of [`local`]; says whether that changed them.
/// A process may register in a loop: the same set again is a no-op, and
/// the log lines go through rate limits.
fn declare_local(
    state: &mut State,
    plugin_dir: &Path,
    process: String,
    plugins: Vec<Declaration>,
) -> bool {
    let old = state.local.get(&process);
    if old.map_or(plugins.is_empty(), |old| *old == plugins) {
        return false;
    }
    if let Err(e) = state.book.admit(&process, plugins.len()) {
        state.local_log.warn(format_args!(
            "ignored the registration of process {process:?}: {e}"
        ));
        return false;
    }
    if let Some(held_back) = state.declared_log.allow() {
        let n = plugins.len();
        match held_back {
            0 => log::info!("process {process:?} declared {n} plugin(s)"),
            h => log::info!("process {process:?} declared {n} plugin(s) ({h} similar held back)"),
        }
    }
    let known: HashSet<&str> = state.files.iter().map(|f| f.name.as_str()).collect();
    let missing: Vec<&str> = plugins
        .iter()
        .filter(|d| d.by_name() && !known.contains(d.name.as_str()))
        .map(|d| d.name.as_str())
        .collect();
    if !missing.is_empty() {
        state.local_log.warn(format_args!(
            "process {process:?} declared {} plugin(s) that {} does not declare \
             ({:?}{}): they cannot run until it does",
            missing.len(),
            plugin_dir.display(),
            &missing[..missing.len().min(MISSING_SHOWN)],
            if missing.len() > MISSING_SHOWN {
                ", ..."
            } else {
                ""
            }
        ));
    }
    if plugins.is_empty() {
        state.local.remove(&process);
    } else {
        state.local.insert(process, plugins);
    }
    true
}

/// The plugin `name` as it runs: the directory's command always wins; a
/// local process's declaration by name brings its own interval and
/// timeout; a local command (allowed by `VIGIL_AGENT_LOCAL_COMMANDS=1`)
/// runs only for a name the directory does not declare.
fn find(state: &State, name: &str) -> Option<Declaration> {
    let file = state.files.iter().find(|d| d.name == name);
    let local = state.local.values().flatten().find(|d| d.name == name);
    match (file, local) {
        (Some(file), Some(local)) if local.by_name() => Some(Declaration {
            command: file.command.clone(),
            ..local.clone()
        }),
        (Some(file), _) => Some(file.clone()),
        (None, Some(local)) if !local.by_name() => Some(local.clone()),
        _ => None,
    }
}

/// One run, on its own thread; the manager sends its results.
struct Worker {
    tx: Sender<PluginEvent>,
    ringer: Ringer,
    output_max: usize,
    metrics: Arc<AgentMetrics>,
    stopping: ShutdownWatch,
}

impl Worker {
    fn run(self, decl: Declaration, worker: u64) {
        let decl = &decl;
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
        let report = Box::new(Report {
            status: PluginState::from_exit(Some(outcome.status)),
            output: outcome.output.text,
            long_output: outcome.output.long_output,
            perfdata: outcome.output.perfdata,
            duration_ms: outcome.duration.as_millis() as u64,
            timed_out: outcome.timed_out,
            truncated: outcome.truncated,
        });
        let _ = self.tx.send(PluginEvent::Finished { worker, report });
        self.ringer.ring();
    }
}

/// The manager holds no socket: these tests run it on its own thread over
/// real channels (and the doorbells' pipes), with shell plugins, and read
/// what it hands the link.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Shutdown;
    use crate::testkit::TempDir;
    use crossbeam_channel::bounded;
    use serde_json::Value;
    use std::sync::atomic::Ordering::Relaxed;
    use std::thread;

    const WAIT: Duration = Duration::from_secs(20);

    struct Harness {
        events: PluginTx,
        link: Receiver<ToLink>,
        metrics: Arc<AgentMetrics>,
        shutdown: Arc<Shutdown>,
        thread: Option<JoinHandle<Result<(), String>>>,
        _link_bell: Doorbell,
        _dir: TempDir,
    }

    fn declaration(name: &str, command: &str, interval_s: Option<f64>, local: bool) -> Declaration {
        Declaration {
            name: name.to_string(),
            command: command.to_string(),
            interval_s,
            timeout_s: 10.0,
            local,
            process: "vigil-agent".to_string(),
        }
    }

    fn start(files: Vec<Declaration>, concurrency: usize) -> Harness {
        let dir = TempDir::new("plugin-manager");
        let (bell, ringer) = Doorbell::new().unwrap();
        let (link_bell, link_ringer) = Doorbell::new().unwrap();
        let (events_tx, events_rx) = bounded(64);
        let (link_tx, link) = bounded(64);
        let events = PluginTx {
            tx: events_tx,
            ringer: ringer.clone(),
        };
        let shutdown = Arc::new(Shutdown::new(vec![ringer]));
        let metrics = Arc::new(AgentMetrics::default());
        let manager = PluginManager {
            rx: events_rx,
            tx: events.clone(),
            bell,
            link: LinkTx {
                tx: link_tx,
                ringer: link_ringer,
            },
            uuid: "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b".to_string(),
            hostname: "web1".to_string(),
            plugin_dir: dir.0.clone(),
            rescan: None,
            concurrency,
            output_max: 4096,
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.watch(),
        };
        let thread = thread::spawn(move || manager.run(files));
        let harness = Harness {
            events,
            link,
            metrics,
            shutdown,
            thread: Some(thread),
            _link_bell: link_bell,
            _dir: dir,
        };
        let registration = harness.next_message();
        assert_eq!(registration["type"], "registration", "{registration}");
        harness
    }

    impl Harness {
        fn run(&self, plugin: &str, run_id: &str) {
            self.events.send(PluginEvent::Run {
                plugin: plugin.to_string(),
                run_id: Some(run_id.to_string()),
            });
        }

        /// The next message the manager queued for the routers.
        fn next_message(&self) -> Value {
            match self
                .link
                .recv_timeout(WAIT)
                .expect("a message for the link")
            {
                ToLink::Send(out) => serde_json::from_slice(&out.frame).unwrap(),
                ToLink::Spooled(entry) => panic!("a spooled entry: {entry:?}"),
            }
        }

        fn results(&self, n: usize) -> Vec<Value> {
            (0..n).map(|_| self.next_message()).collect()
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.shutdown.trigger();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    #[test]
    fn an_undeclared_plugin_is_refused_with_an_unknown_result() {
        let h = start(vec![], 2);
        h.run("rm-rf", "r-1");
        let result = h.next_message();
        assert_eq!(result["type"], "result");
        assert_eq!(result["run_id"], "r-1");
        assert_eq!(result["status"], 3);
        assert!(
            result["output"].as_str().unwrap().contains("not declared"),
            "{result}"
        );
        assert_eq!(h.metrics.plugin_refused.load(Relaxed), 1);
        assert_eq!(h.metrics.plugin_runs.load(Relaxed), 0);
    }

    #[test]
    fn requests_for_a_busy_plugin_share_its_run() {
        // The plugin waits until the test has asked three times.
        let gate = TempDir::new("plugin-gate");
        let flag = gate.join("go");
        let command = format!(
            "while [ ! -e '{}' ]; do sleep 0.02; done; echo 'OK - shared'",
            flag.display()
        );
        let h = start(vec![declaration("slow", &command, None, false)], 2);
        for run_id in ["a", "b", "c"] {
            h.run("slow", run_id);
        }
        // All three are in before the run can end.
        crate::testkit::wait_for("the requests to be shared", WAIT, || {
            (h.metrics.plugin_shared.load(Relaxed) == 2).then_some(())
        });
        std::fs::write(&flag, "").unwrap();
        let mut run_ids: Vec<String> = h
            .results(3)
            .iter()
            .map(|r| {
                assert_eq!(r["output"], "OK - shared", "{r}");
                r["run_id"].as_str().unwrap().to_string()
            })
            .collect();
        run_ids.sort();
        assert_eq!(run_ids, ["a", "b", "c"]);
        assert_eq!(
            h.metrics.plugin_runs.load(Relaxed),
            1,
            "one run for three requests"
        );
    }

    #[test]
    fn runs_beyond_the_concurrency_wait_their_turn() {
        // Each plugin appends "start" and "end" to a log: with one slot the
        // lines never interleave.
        let dir = TempDir::new("plugin-turns");
        let log = dir.join("log");
        let plugin = |name: &str| {
            let command = format!(
                "echo start >> '{0}'; sleep 0.1; echo end >> '{0}'; echo 'OK - {name}'",
                log.display()
            );
            declaration(name, &command, None, false)
        };
        let h = start(vec![plugin("p1"), plugin("p2"), plugin("p3")], 1);
        for name in ["p1", "p2", "p3"] {
            h.run(name, name);
        }
        let results = h.results(3);
        assert!(results.iter().all(|r| r["status"] == 0), "{results:?}");
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(lines, "start\nend\n".repeat(3), "runs overlapped");
    }

    #[test]
    fn local_registrations_are_bounded_and_their_warnings_rate_limited() {
        let mut state = State::new(vec![declaration("disk", "true", None, false)]);
        let dir = Path::new("/etc/vigil/plugins.d");
        // Each names 3 plugins the directory lacks, beside one it has.
        let plugins = |i: usize| -> Vec<Declaration> {
            [
                "disk".to_string(),
                format!("a{i}"),
                format!("b{i}"),
                format!("c{i}"),
            ]
            .iter()
            .map(|name| declaration(name, "", Some(60.0), true))
            .collect()
        };
        let sent = local::PROCESSES_MAX + 50;
        let taken = (0..sent)
            .filter(|i| declare_local(&mut state, dir, format!("p{i}"), plugins(*i)))
            .count();
        assert_eq!(taken, local::PROCESSES_MAX);
        assert_eq!(state.local.len(), local::PROCESSES_MAX, "the rest ignored");
        reschedule_local(&mut state, Instant::now());
        assert!(state.next_local.len() <= local::PLUGINS_MAX + 1);
        // One line logged at once; every other registration (a warning
        // each, missing plugins or refused) held back, not logged.
        let later = Instant::now() + LOCAL_LOG_WINDOW;
        assert_eq!(state.local_log.allow_at(later), Some(sent as u64 - 1));
        // The same set again changes nothing and logs nothing.
        assert!(!declare_local(&mut state, dir, "p1".into(), plugins(1)));
        let much_later = later + LOCAL_LOG_WINDOW;
        assert_eq!(
            state.local_log.allow_at(much_later),
            Some(0),
            "none held back"
        );
        // A process registering with no plugins leaves, freeing its place.
        assert!(declare_local(&mut state, dir, "p0".into(), vec![]));
        assert!(!state.local.contains_key("p0"));
        assert!(declare_local(&mut state, dir, "new".into(), plugins(0)));
    }

    #[test]
    fn a_local_plugin_runs_on_its_interval_without_a_request() {
        let h = start(
            vec![declaration("tick", "echo 'OK - tick'", Some(0.2), true)],
            2,
        );
        for result in h.results(2) {
            assert_eq!(result["plugin"], "tick", "{result}");
            assert!(result.get("run_id").is_none_or(Value::is_null), "{result}");
        }
    }
}
