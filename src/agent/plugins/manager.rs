//! The plugin manager's decisions, without threads, sockets or clocks of
//! its own: which plugins are declared, which local ones are due, which
//! runs wait and which start, at most `concurrency` at once.
//!
//! The manager thread (`plugins/mod.rs`) feeds it events and the time and
//! carries out the [`Action`]s it returns (spawning workers, sending
//! results and registrations to the link thread), in the manner of
//! lsp-server: the loop moves messages, this decides. So every rule here is
//! unit-tested below without a thread or a plugin process.

use super::declare::Declaration;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Runs waiting for a free slot, at most.
pub const WAITING_MAX: usize = 1024;

/// One run to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub decl: Declaration,
    /// When a `run_plugin` asked for it.
    pub run_id: Option<String>,
}

/// What the manager thread is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start `job` on a new worker numbered `worker`; report its end with
    /// [`Manager::finished`].
    Start { worker: u64, job: Job },
    /// `run_plugin` for a name nobody declared: never run, answered with
    /// an UNKNOWN result naming the refusal.
    Refuse {
        plugin: String,
        run_id: Option<String>,
    },
    /// A run that will not happen: answered with an UNKNOWN result.
    Unknown {
        plugin: String,
        run_id: Option<String>,
        text: String,
    },
    /// The file-declared plugins changed: send the host registration again.
    Register,
}

#[derive(Debug)]
pub struct Manager {
    files: Vec<Declaration>,
    /// Plugins declared by local processes, by process name.
    local: BTreeMap<String, Vec<Declaration>>,
    /// When each `local` plugin is next due.
    next_local: HashMap<String, Instant>,
    waiting: VecDeque<Job>,
    /// Running workers and their plugin's name.
    running: HashMap<u64, String>,
    next_worker: u64,
    concurrency: usize,
    /// The problems the last read of the directory found, logged once.
    file_errors: Vec<String>,
}

impl Manager {
    /// A manager over the plugins declared in files; local ones are due
    /// at `now`.
    pub fn new(files: Vec<Declaration>, concurrency: usize, now: Instant) -> Manager {
        let mut m = Manager {
            files,
            local: BTreeMap::new(),
            next_local: HashMap::new(),
            waiting: VecDeque::new(),
            running: HashMap::new(),
            next_worker: 0,
            concurrency: concurrency.max(1),
            file_errors: Vec::new(),
        };
        m.reschedule_local(now);
        m
    }

    /// The plugins declared in files (the host registration lists them).
    pub fn files(&self) -> &[Declaration] {
        &self.files
    }

    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.running.len()
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// `run_plugin` for `plugin`.
    pub fn run_requested(&mut self, plugin: String, run_id: Option<String>, out: &mut Vec<Action>) {
        match self.find(&plugin) {
            Some(decl) => self.enqueue(Job { decl, run_id }, out),
            None => out.push(Action::Refuse { plugin, run_id }),
        }
    }

    /// A local process (re)declared its plugins: they replace its old set.
    pub fn local_declared(&mut self, process: String, plugins: Vec<Declaration>, now: Instant) {
        self.local.insert(process, plugins);
        self.reschedule_local(now);
    }

    /// Worker `worker` ended (or could not be started).
    pub fn finished(&mut self, worker: u64) {
        self.running.remove(&worker);
    }

    /// A fresh read of the plugin directory. Returns the problems to log
    /// (only when they changed since the last read).
    pub fn files_read(
        &mut self,
        files: Vec<Declaration>,
        errors: Vec<String>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Vec<String> {
        let news = if errors != self.file_errors {
            self.file_errors = errors.clone();
            errors
        } else {
            Vec::new()
        };
        if files != self.files {
            self.files = files;
            out.push(Action::Register);
            self.reschedule_local(now);
        }
        news
    }

    /// Queues the local plugins due at `now` and sets their next time. A
    /// slow plugin is not queued again while its last run waits or runs.
    pub fn due_local(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut due: Vec<String> = self
            .next_local
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        due.sort();
        for name in due {
            let Some(decl) = self.find(&name) else {
                self.next_local.remove(&name);
                continue;
            };
            let every = Duration::from_secs_f64(decl.interval_s.unwrap_or(60.0));
            self.next_local.insert(name.clone(), now + every);
            let busy = self.running.values().any(|n| *n == name)
                || self.waiting.iter().any(|j| j.decl.name == name);
            if !busy {
                self.enqueue(Job { decl, run_id: None }, out);
            }
        }
    }

    /// Starts waiting runs while slots are free, oldest first.
    pub fn start_waiting(&mut self, out: &mut Vec<Action>) {
        while self.running.len() < self.concurrency {
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let worker = self.next_worker;
            self.next_worker += 1;
            self.running.insert(worker, job.decl.name.clone());
            out.push(Action::Start { worker, job });
        }
    }

    /// When a local plugin is next due, if any is declared.
    pub fn next_due(&self) -> Option<Instant> {
        self.next_local.values().min().copied()
    }

    fn enqueue(&mut self, job: Job, out: &mut Vec<Action>) {
        if self.waiting.len() >= WAITING_MAX {
            out.push(Action::Unknown {
                plugin: job.decl.name,
                run_id: job.run_id,
                text: "UNKNOWN: too many plugin runs waiting on this agent; not run".into(),
            });
            return;
        }
        self.waiting.push_back(job);
    }

    fn find(&self, name: &str) -> Option<Declaration> {
        self.files
            .iter()
            .chain(self.local.values().flatten())
            .find(|d| d.name == name)
            .cloned()
    }

    /// Brings the local schedule in line with the declarations: plugins no
    /// longer declared `local` leave it, new ones are due `now`, the
    /// others keep their next run.
    fn reschedule_local(&mut self, now: Instant) {
        let names: Vec<String> = self
            .files
            .iter()
            .chain(self.local.values().flatten())
            .filter(|d| d.local)
            .map(|d| d.name.clone())
            .collect();
        self.next_local.retain(|name, _| names.contains(name));
        for name in names {
            self.next_local.entry(name).or_insert(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, local: bool, interval_s: f64) -> Declaration {
        Declaration {
            name: name.into(),
            command: format!("/usr/lib/{name}"),
            interval_s: Some(interval_s),
            timeout_s: 5.0,
            local,
            process: "vigil-agent".into(),
        }
    }

    fn started(out: &[Action]) -> Vec<(u64, String, Option<String>)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Start { worker, job } => {
                    Some((*worker, job.decl.name.clone(), job.run_id.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_declared_plugin_runs_on_request_and_an_undeclared_one_is_refused() {
        let t0 = Instant::now();
        let mut m = Manager::new(vec![decl("load", false, 60.0)], 2, t0);
        let mut out = Vec::new();
        m.run_requested("load".into(), Some("r1".into()), &mut out);
        m.run_requested("disk".into(), Some("r2".into()), &mut out);
        assert_eq!(
            out,
            [Action::Refuse {
                plugin: "disk".into(),
                run_id: Some("r2".into())
            }]
        );
        out.clear();
        m.start_waiting(&mut out);
        assert_eq!(started(&out), [(0, "load".into(), Some("r1".into()))]);
        assert_eq!(m.running(), 1);
    }

    #[test]
    fn at_most_concurrency_runs_at_once_and_a_finished_one_frees_its_slot() {
        let t0 = Instant::now();
        let files = vec![decl("a", false, 60.0), decl("b", false, 60.0)];
        let mut m = Manager::new(files, 2, t0);
        let mut out = Vec::new();
        for (p, r) in [("a", "1"), ("b", "2"), ("a", "3")] {
            m.run_requested(p.into(), Some(r.into()), &mut out);
        }
        m.start_waiting(&mut out);
        assert_eq!(started(&out).len(), 2);
        assert_eq!((m.running(), m.waiting()), (2, 1));
        out.clear();
        m.start_waiting(&mut out);
        assert!(out.is_empty(), "no free slot");
        m.finished(0);
        m.start_waiting(&mut out);
        assert_eq!(started(&out), [(2, "a".into(), Some("3".into()))]);
    }

    #[test]
    fn local_plugins_run_on_their_interval_and_never_twice_at_once() {
        let t0 = Instant::now();
        let mut m = Manager::new(vec![decl("tick", true, 10.0)], 4, t0);
        assert_eq!(m.next_due(), Some(t0));
        let mut out = Vec::new();
        m.due_local(t0, &mut out);
        m.start_waiting(&mut out);
        assert_eq!(started(&out), [(0, "tick".into(), None)]);
        assert_eq!(m.next_due(), Some(t0 + Duration::from_secs(10)));
        // Due again while the first run still runs: skipped, rescheduled.
        out.clear();
        let t1 = t0 + Duration::from_secs(10);
        m.due_local(t1, &mut out);
        m.start_waiting(&mut out);
        assert!(out.is_empty());
        assert_eq!(m.next_due(), Some(t1 + Duration::from_secs(10)));
        m.finished(0);
        let t2 = t1 + Duration::from_secs(10);
        m.due_local(t2, &mut out);
        m.start_waiting(&mut out);
        assert_eq!(started(&out), [(1, "tick".into(), None)]);
    }

    #[test]
    fn a_local_declaration_replaces_the_process_set() {
        let t0 = Instant::now();
        let mut m = Manager::new(vec![], 1, t0);
        assert_eq!(m.next_due(), None);
        let mut app = decl("q", true, 30.0);
        app.process = "app".into();
        m.local_declared("app".into(), vec![app], t0);
        assert_eq!(m.next_due(), Some(t0));
        let mut out = Vec::new();
        m.run_requested("q".into(), None, &mut out);
        assert!(out.is_empty(), "declared by the process, so it runs");
        m.local_declared("app".into(), vec![], t0);
        assert_eq!(m.next_due(), None, "no longer declared, no longer due");
        m.run_requested("q".into(), Some("r".into()), &mut out);
        assert!(matches!(&out[..], [Action::Refuse { .. }]));
    }

    #[test]
    fn a_changed_directory_registers_again_and_errors_are_logged_once() {
        let t0 = Instant::now();
        let mut m = Manager::new(vec![decl("a", false, 60.0)], 1, t0);
        let mut out = Vec::new();
        let errors = vec!["x: bad".to_string()];
        let same = m.files().to_vec();
        assert_eq!(
            m.files_read(same.clone(), errors.clone(), t0, &mut out),
            errors
        );
        assert!(out.is_empty(), "same files: no registration");
        assert!(
            m.files_read(same, errors, t0, &mut out).is_empty(),
            "logged once"
        );
        m.files_read(vec![decl("b", true, 5.0)], vec![], t0, &mut out);
        assert_eq!(out, [Action::Register]);
        assert_eq!(m.next_due(), Some(t0), "a new local plugin is due at once");
    }

    #[test]
    fn a_full_waiting_list_answers_unknown_instead_of_growing() {
        let t0 = Instant::now();
        let mut m = Manager::new(vec![decl("a", false, 60.0)], 1, t0);
        let mut out = Vec::new();
        for i in 0..=WAITING_MAX {
            m.run_requested("a".into(), Some(i.to_string()), &mut out);
        }
        assert_eq!(m.waiting(), WAITING_MAX);
        assert!(
            matches!(&out[..], [Action::Unknown { run_id: Some(r), .. }] if *r == WAITING_MAX.to_string())
        );
    }
}
