//! `vigil standalone`: the whole system on one machine, in one command.
//!
//! It runs a router, every sink (`vigil sink all`), the scheduler, a local
//! agent and the web view (`vigil web`, whose URL it prints last) as child
//! processes of this binary, so each part runs exactly as it
//! would in production, configured by the same `VIGIL_*` variables. Unset
//! variables get local defaults: the protocol's ports on 127.0.0.1 and every
//! file under one data directory. Each child's log lines are passed through
//! with its name in front; its `ready:` line is what we wait for before
//! starting the next part (the sinks need the router's endpoints).
//!
//! A child that exits on its own stops the others and this command (status
//! 1): a half-running system would mislead the newcomer it is for. SIGTERM or
//! SIGINT stops the children in reverse order, each with a deadline, and
//! exits 0. Children run in their own process group, so a terminal's Ctrl-C
//! reaches only us (a second signal would make them skip their drain), and
//! they are sent SIGTERM if we die (PR_SET_PDEATHSIG).
//!
//! CURVE is on: every part runs with its own key (`keys.rs`), the agent
//! enrolled in the router's client list, so a newcomer runs the secure
//! path a fleet runs.

mod keys;

use crate::config::{ConfigError, Env};
use crate::error::Error;
use crate::ready;
use crate::signals::SignalThread;
use crossbeam_channel::{Receiver, Sender};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a part may take to print its `ready:` line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a part may take to drain after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the supervising loop hears about.
enum Event {
    /// A line a child wrote on stderr.
    Line { part: &'static str, line: String },
    /// A child closed its stderr: it has exited (or is about to).
    Closed { part: &'static str },
    /// SIGTERM or SIGINT.
    Signal(i32),
}

/// The settings `standalone` decides; everything else passes through.
#[derive(Debug, Clone, PartialEq)]
pub struct StandaloneConfig {
    pub data_dir: PathBuf,
    /// Where the example plugins are (`scripts/plugins` of a checkout).
    pub examples: PathBuf,
    /// Where Debian's monitoring-plugins live.
    pub monitoring_plugins: PathBuf,
}

impl StandaloneConfig {
    pub fn from_env(env: &Env) -> Result<StandaloneConfig, ConfigError> {
        let raw = env.string("VIGIL_DATA_DIR", "vigil-data");
        let data_dir = absolute(Path::new(&raw))
            .map_err(|e| ConfigError::new("VIGIL_DATA_DIR", &raw, e.to_string()))?;
        let raw = env.string("VIGIL_EXAMPLE_PLUGINS", "scripts/plugins");
        let examples = absolute(Path::new(&raw))
            .map_err(|e| ConfigError::new("VIGIL_EXAMPLE_PLUGINS", &raw, e.to_string()))?;
        Ok(StandaloneConfig {
            data_dir,
            examples,
            monitoring_plugins: PathBuf::from(MONITORING_PLUGINS),
        })
    }
}

/// Debian's monitoring-plugins directory.
const MONITORING_PLUGINS: &str = "/usr/lib/nagios/plugins";

/// Checks from Debian's monitoring-plugins that make sense on any host,
/// with thresholds a newcomer would accept: (name, program, arguments).
const MONITORING_CHECKS: &[(&str, &str, &str)] = &[
    ("load", "check_load", "-r -w 4,3,2 -c 8,6,4"),
    ("disk_root", "check_disk", "-w 20% -c 10% -p /"),
    ("users", "check_users", "-w 20 -c 50"),
    ("procs", "check_procs", "-w 500 -c 1000"),
    ("swap", "check_swap", "-n ok -w 20% -c 10%"),
];

/// How often the standalone plugins run.
const PLUGIN_INTERVAL_S: u32 = 30;

/// Writes the plugin declarations of the standalone agent into
/// `DATA/plugins.d`: one per example plugin, one per monitoring-plugins
/// check found. Files the user added there are left alone; ours
/// (`standalone-*.conf`) are rewritten at every start.
fn write_plugin_declarations(config: &StandaloneConfig) -> std::io::Result<PathBuf> {
    let dir = config.data_dir.join("plugins.d");
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("standalone-") && n.ends_with(".conf"));
        if ours {
            std::fs::remove_file(&path)?;
        }
    }
    let mut declared = Vec::new();
    for (name, command) in example_plugins(&config.examples)
        .into_iter()
        .chain(monitoring_checks(&config.monitoring_plugins))
    {
        if declared.contains(&name) {
            continue;
        }
        let text = format!(
            "# written by `vigil standalone` at each start\nname = {name}\ncommand = {command}\ninterval_s = {PLUGIN_INTERVAL_S}\ntimeout_s = 10\n"
        );
        std::fs::write(dir.join(format!("standalone-{name}.conf")), text)?;
        declared.push(name);
    }
    log::info!("standalone plugins: {}", declared.join(", "));
    Ok(dir)
}

/// The executables in the examples directory: (name without `check_`, path).
fn example_plugins(dir: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?;
            let name = stem.strip_prefix("check_").unwrap_or(stem);
            let name: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            Some((name, shell_quote(&p.display().to_string())))
        })
        .collect();
    found.sort();
    found
}

fn monitoring_checks(dir: &Path) -> Vec<(String, String)> {
    MONITORING_CHECKS
        .iter()
        .filter(|(_, program, _)| dir.join(program).is_file())
        .map(|(name, program, args)| {
            let path = shell_quote(&dir.join(program).display().to_string());
            (name.to_string(), format!("{path} {args}"))
        })
        .collect()
}

/// Quotes a path for `/bin/sh -c`, which runs plugin commands.
fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

const USAGE: &str = "usage: vigil standalone

Runs a router, all sinks, the scheduler, an agent and the web view on this
machine. Files go under VIGIL_DATA_DIR (default ./vigil-data); see README.md.";

pub fn command(args: &[String]) -> Result<(), Error> {
    if crate::error::help_or_no_args(args, USAGE)? {
        return Ok(());
    }
    let env = Env::from_process()?;
    let config = StandaloneConfig::from_env(&env)?;
    run(&env, config)
}

/// One running part.
struct Part {
    name: &'static str,
    child: Child,
}

pub fn run(env: &Env, config: StandaloneConfig) -> Result<(), Error> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::setup(format!("VIGIL_DATA_DIR={}", config.data_dir.display()), e))?;
    let exe = std::env::current_exe().map_err(|e| Error::setup("finding the vigil binary", e))?;
    let (events, inbox) = crossbeam_channel::bounded::<Event>(1024);
    let signals = watch_signals(events.clone())?;
    let mut parts: Vec<Part> = Vec::new();
    let result = start_all(env, &config, &exe, &events, &inbox, &mut parts)
        .and_then(|()| supervise(&inbox, &parts));
    stop_all(&mut parts, &inbox);
    signals.stop();
    result
}

/// Starts the parts in order, each after the previous one is ready.
fn start_all(
    env: &Env,
    config: &StandaloneConfig,
    exe: &Path,
    events: &Sender<Event>,
    inbox: &Receiver<Event>,
    parts: &mut Vec<Part>,
) -> Result<(), Error> {
    let plugin_dir = write_plugin_declarations(config).map_err(|e| {
        Error::setup(
            format!(
                "writing plugin declarations under {}",
                config.data_dir.display()
            ),
            e,
        )
    })?;
    let keys = keys::Keys::prepare(&config.data_dir)?;
    let plan = Plan::new(env, config, plugin_dir, keys);
    plan.keys.enroll(&print_agent_key(exe, &plan)?)?;
    let router_ready = start_part(
        exe,
        "router",
        &["router"],
        &plan.router_env(),
        events,
        inbox,
        parts,
    )?;
    let endpoints = RouterEndpoints::parse(&router_ready).ok_or_else(|| {
        Error::Runtime(format!(
            "cannot read the router's ready line: {router_ready}"
        ))
    })?;
    // The back-end parts, in order: each starts once the one before is ready.
    let back_end: [(&'static str, &[&str], Vars); 3] = [
        ("sinks", &["sink", "all"], plan.sinks_env(&endpoints)),
        ("scheduler", &["scheduler"], plan.scheduler_env(&endpoints)),
        ("agent", &["agent"], plan.agent_env(&endpoints)),
    ];
    for (name, args, vars) in back_end {
        start_part(exe, name, args, &vars, events, inbox, parts)?;
    }
    let web_ready = start_part(
        exe,
        "web",
        &["web"],
        &plan.web_env(&endpoints),
        events,
        inbox,
        parts,
    )?;
    let url = web_url(&web_ready).ok_or_else(|| {
        Error::Runtime(format!(
            "cannot read the web view's ready line: {web_ready}"
        ))
    })?;
    log::info!("{}", plan.banner(exe, &url));
    Ok(())
}

/// The agent's `UUID PUBLIC_KEY` line (minting its identity and key on
/// first start), run as the agent will run.
fn print_agent_key(exe: &Path, plan: &Plan) -> Result<String, Error> {
    let output = Command::new(exe)
        .args(["agent", "--print-key"])
        .envs(plan.agent_env_without_routers())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::setup("running vigil agent --print-key", e))?;
    if !output.status.success() {
        return Err(Error::Runtime(format!(
            "vigil agent --print-key failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The environment of each part, from the user's variables and the local
/// defaults.
struct Plan {
    user: BTreeMap<String, String>,
    data_dir: PathBuf,
    plugin_dir: PathBuf,
    keys: keys::Keys,
}

impl Plan {
    fn new(env: &Env, config: &StandaloneConfig, plugin_dir: PathBuf, keys: keys::Keys) -> Plan {
        let user = [
            "VIGIL_CLIENT_BIND",
            "VIGIL_BACKEND_BIND",
            "VIGIL_SINK_BINDS",
            "VIGIL_DB",
            "VIGIL_STATE_DIR",
            "VIGIL_AGENT_LOCAL",
            "VIGIL_NOTIFY_COMMAND",
            "VIGIL_PLUGIN_DIR",
            "VIGIL_STATS_INTERVAL_SECS",
            "VIGIL_HEARTBEAT_SECS",
            "VIGIL_WEB_BIND",
        ]
        .iter()
        .filter_map(|var| env.get(var).map(|v| (var.to_string(), v.to_string())))
        .collect();
        Plan {
            user,
            data_dir: config.data_dir.clone(),
            plugin_dir,
            keys,
        }
    }

    /// The user's value of `var`, or `default`.
    fn or(&self, var: &str, default: String) -> (String, String) {
        let value = self.user.get(var).cloned().unwrap_or(default);
        (var.to_string(), value)
    }

    fn db(&self) -> (String, String) {
        self.or(
            "VIGIL_DB",
            self.data_dir.join("vigil.db").display().to_string(),
        )
    }

    fn agent_local(&self) -> (String, String) {
        self.or(
            "VIGIL_AGENT_LOCAL",
            format!("ipc://{}", self.data_dir.join("run/agent.sock").display()),
        )
    }

    fn router_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            self.or("VIGIL_CLIENT_BIND", "tcp://127.0.0.1:5555".into()),
            self.or("VIGIL_BACKEND_BIND", "tcp://127.0.0.1:5556".into()),
            self.or(
                "VIGIL_SINK_BINDS",
                "heartbeat=tcp://127.0.0.1:5561,stats=tcp://127.0.0.1:5562,\
                 registration=tcp://127.0.0.1:5563,notification=tcp://127.0.0.1:5564,\
                 result=tcp://127.0.0.1:5565"
                    .into(),
            ),
            ("VIGIL_ROUTER_NAME".into(), "standalone".into()),
        ];
        env.extend(self.keys.router_env());
        env
    }

    fn sinks_env(&self, router: &RouterEndpoints) -> Vec<(String, String)> {
        let log = self.data_dir.join("notifications.log");
        let mut env = vec![
            self.db(),
            ("VIGIL_SINK_CONNECT".into(), router.sinks.clone()),
            ("VIGIL_BACKENDS".into(), router.backend.clone()),
            // Without a configured handler, notifications would be acked
            // without going anywhere: write them to a file the newcomer can
            // read.
            self.or(
                "VIGIL_NOTIFY_COMMAND",
                format!("cat >> '{}'; echo >> '{}'", log.display(), log.display()),
            ),
        ];
        env.extend(self.keys.part_env("sink"));
        env
    }

    fn scheduler_env(&self, router: &RouterEndpoints) -> Vec<(String, String)> {
        let mut env = vec![self.db(), ("VIGIL_BACKENDS".into(), router.backend.clone())];
        env.extend(self.keys.part_env("scheduler"));
        env
    }

    fn agent_env(&self, router: &RouterEndpoints) -> Vec<(String, String)> {
        let mut env = self.agent_env_without_routers();
        env.push(("VIGIL_ROUTERS".into(), router.client.clone()));
        env
    }

    /// All of the agent's variables but the routers' endpoints, which are
    /// known only once the router is up.
    fn agent_env_without_routers(&self) -> Vec<(String, String)> {
        vec![
            self.keys.router_key(),
            self.or(
                "VIGIL_STATE_DIR",
                self.data_dir.join("agent").display().to_string(),
            ),
            self.agent_local(),
            self.or("VIGIL_PLUGIN_DIR", self.plugin_dir.display().to_string()),
            // Livelier than a fleet's defaults, so a newcomer sees heartbeats
            // and the agent's own stats within seconds.
            self.or("VIGIL_HEARTBEAT_SECS", "10".into()),
            self.or("VIGIL_STATS_INTERVAL_SECS", "10".into()),
        ]
    }

    fn web_env(&self, router: &RouterEndpoints) -> Vec<(String, String)> {
        let mut env = vec![
            self.db(),
            ("VIGIL_BACKENDS".into(), router.backend.clone()),
            self.or("VIGIL_WEB_BIND", crate::web::config::DEFAULT_BIND.into()),
        ];
        env.extend(self.keys.part_env("web"));
        env
    }

    /// What to try next, printed once everything is up; the web view's URL
    /// ends it, where a newcomer's eye lands.
    fn banner(&self, exe: &Path, url: &str) -> String {
        let (_, db) = self.db();
        let (_, local) = self.agent_local();
        format!(
            "standalone ready: every part is running. Try, in another terminal:\n  \
             VIGIL_AGENT_LOCAL={local} {exe} send notification --severity warning --source demo --message 'hello from vigil'\n  \
             VIGIL_DB={db} {exe} status\n\
             Notifications handled by the default handler are appended to {log}. Ctrl-C stops everything.\n\
             The fleet in a browser: {url}",
            exe = exe.display(),
            log = self.data_dir.join("notifications.log").display(),
        )
    }
}

/// A part's environment variables.
type Vars = Vec<(String, String)>;

/// The router's endpoints, as its `ready:` line gives them.
#[derive(Debug, PartialEq)]
struct RouterEndpoints {
    client: String,
    backend: String,
    /// `type=endpoint,...`, the form `VIGIL_SINK_CONNECT` takes.
    sinks: String,
}

impl RouterEndpoints {
    /// Parses `... ready: client=EP backend=EP sinks=T=EP,T=EP ...`. A bound
    /// wildcard (`tcp://0.0.0.0:P`) is reached through 127.0.0.1.
    fn parse(line: &str) -> Option<RouterEndpoints> {
        let mut fields = ready::parse(line)?;
        let sinks = ready::pairs(&fields.remove("sinks")?)?
            .into_iter()
            .map(|(kind, endpoint)| format!("{kind}={}", local(&endpoint)))
            .collect::<Vec<_>>()
            .join(",");
        Some(RouterEndpoints {
            client: local(&fields.remove("client")?),
            backend: local(&fields.remove("backend")?),
            sinks,
        })
    }
}

/// The URL in the web view's `ready: web=URL ...` line.
fn web_url(line: &str) -> Option<String> {
    ready::field(line, "web")
}

fn local(endpoint: &str) -> String {
    endpoint.replace("://0.0.0.0:", "://127.0.0.1:")
}

/// Spawns one part and waits for its `ready:` line, passing its other lines
/// through. Returns the ready line.
fn start_part(
    exe: &Path,
    name: &'static str,
    args: &[&str],
    vars: &[(String, String)],
    events: &Sender<Event>,
    inbox: &Receiver<Event>,
    parts: &mut Vec<Part>,
) -> Result<String, Error> {
    let mut command = Command::new(exe);
    // The ready line must get through whatever level the user chose.
    let log = std::env::var("VIGIL_LOG").unwrap_or_default();
    let log = if log.trim().is_empty() {
        "info".to_string()
    } else {
        log
    };
    command
        .args(args)
        .env("VIGIL_LOG", format!("{log},{}=info", crate::ready::TARGET))
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| Error::setup(format!("starting vigil {}", args.join(" ")), e))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    forward_lines(name, stderr, events.clone())?;
    parts.push(Part { name, child });
    wait_ready(name, inbox)
}

/// Passes a child's stderr through with its name, and reports each line
/// and the end of the stream to the supervisor.
fn forward_lines(
    part: &'static str,
    stderr: std::process::ChildStderr,
    events: Sender<Event>,
) -> Result<(), Error> {
    std::thread::Builder::new()
        .name(format!("log-{part}"))
        .spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{part}] {line}");
                // Only ready lines matter to the supervisor once running;
                // a full inbox must never stop the child's logging.
                let _ = events.try_send(Event::Line { part, line });
            }
            let _ = events.send(Event::Closed { part });
        })
        .map(drop)
        .map_err(|e| Error::setup("starting a log thread", e))
}

fn wait_ready(name: &'static str, inbox: &Receiver<Event>) -> Result<String, Error> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match inbox.recv_timeout(left) {
            Ok(Event::Line { part, line }) if part == name && ready::is_ready(&line) => {
                return Ok(line)
            }
            Ok(Event::Line { .. }) => {}
            Ok(Event::Closed { part }) => {
                return Err(Error::Runtime(format!(
                    "{part} exited while starting (its log is above)"
                )))
            }
            Ok(Event::Signal(sig)) => {
                return Err(Error::Runtime(format!(
                    "signal {sig} while starting {name}"
                )))
            }
            Err(_) => {
                return Err(Error::Runtime(format!(
                    "{name} not ready within {READY_TIMEOUT:?}"
                )))
            }
        }
    }
}

/// Waits until a signal (→ Ok) or a part exits on its own (→ Err).
fn supervise(inbox: &Receiver<Event>, parts: &[Part]) -> Result<(), Error> {
    loop {
        match inbox.recv() {
            Ok(Event::Signal(sig)) => {
                log::info!("signal {sig}: stopping every part");
                return Ok(());
            }
            Ok(Event::Closed { part }) => {
                return Err(Error::Runtime(format!(
                    "{part} exited on its own; stopping the others ({} parts)",
                    parts.len()
                )))
            }
            Ok(Event::Line { .. }) => {}
            Err(_) => return Err(Error::Runtime("event channel closed".into())),
        }
    }
}

/// SIGTERM to each part, newest first, waiting up to `STOP_TIMEOUT` for each
/// before SIGKILL.
fn stop_all(parts: &mut Vec<Part>, inbox: &Receiver<Event>) {
    while let Some(mut part) = parts.pop() {
        let pid = part.child.id() as libc::pid_t;
        if matches!(part.child.try_wait(), Ok(None)) {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match part.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    // Wake on the child's stderr closing, or re-check soon.
                    let _ = inbox.recv_timeout(Duration::from_millis(50));
                }
                _ => break None,
            }
        };
        match status {
            Some(status) => log::info!("{} stopped ({status})", part.name),
            None => {
                log::warn!(
                    "{} did not stop within {STOP_TIMEOUT:?}: killing it",
                    part.name
                );
                let _ = part.child.kill();
                let _ = part.child.wait();
            }
        }
    }
}

/// Turns SIGTERM/SIGINT into events. A second signal while stopping ends
/// the process at once (the children get SIGTERM from PR_SET_PDEATHSIG).
fn watch_signals(events: Sender<Event>) -> Result<SignalThread, Error> {
    let stopping = Arc::new(AtomicBool::new(false));
    SignalThread::spawn(stopping, move |sig| {
        let _ = events.send(Event::Signal(sig));
    })
    .map_err(|e| Error::setup("signal handler", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_ready_line_gives_local_endpoints() {
        let line = "[2026-11-25T10:00:00Z INFO  vigil::router] ready: client=tcp://0.0.0.0:5555 \
                    backend=tcp://127.0.0.1:5556 sinks=heartbeat=tcp://0.0.0.0:5561,stats=tcp://127.0.0.1:5562";
        assert_eq!(
            RouterEndpoints::parse(line),
            Some(RouterEndpoints {
                client: "tcp://127.0.0.1:5555".into(),
                backend: "tcp://127.0.0.1:5556".into(),
                sinks: "heartbeat=tcp://127.0.0.1:5561,stats=tcp://127.0.0.1:5562".into(),
            })
        );
        assert_eq!(RouterEndpoints::parse("ready: client=x"), None);
        assert_eq!(
            web_url("[x INFO vigil::ready] ready: web=http://127.0.0.1:8080/ bind=127.0.0.1:8080"),
            Some("http://127.0.0.1:8080/".into())
        );
        assert_eq!(web_url("ready: bind=x"), None);
    }

    #[test]
    fn user_variables_win_over_local_defaults() {
        let root = std::env::temp_dir().join(format!("vigil-standalone-{}", uuid::Uuid::new_v4()));
        let data = root.display().to_string();
        let env = Env::from_pairs([("VIGIL_DB", "/tmp/x.db"), ("VIGIL_DATA_DIR", data.as_str())]);
        let config = StandaloneConfig::from_env(&env).unwrap();
        assert_eq!(config.data_dir, root);
        let keys = keys::Keys::prepare(&root).unwrap();
        let plan = Plan::new(&env, &config, root.join("plugins.d"), keys);
        assert_eq!(plan.db().1, "/tmp/x.db");
        assert_eq!(plan.agent_local().1, format!("ipc://{data}/run/agent.sock"));
        // Every part gets CURVE: the router its lists, the others the
        // router's public key.
        let router: BTreeMap<_, _> = plan.router_env().into_iter().collect();
        assert!(router.contains_key("VIGIL_CLIENT_KEYS"));
        let agent: BTreeMap<_, _> = plan.agent_env_without_routers().into_iter().collect();
        assert!(agent.contains_key("VIGIL_ROUTER_KEY"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn declarations_for_examples_and_monitoring_plugins() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("vigil-standalone-{}", uuid::Uuid::new_v4()));
        let examples = root.join("examples");
        let nagios = root.join("nagios");
        std::fs::create_dir_all(&examples).unwrap();
        std::fs::create_dir_all(&nagios).unwrap();
        for path in [examples.join("check_true.sh"), nagios.join("check_load")] {
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(examples.join("README"), "not a plugin").unwrap();
        let config = StandaloneConfig {
            data_dir: root.join("data"),
            examples,
            monitoring_plugins: nagios.clone(),
        };
        std::fs::create_dir_all(root.join("data/plugins.d")).unwrap();
        std::fs::write(root.join("data/plugins.d/mine.conf"), "name = mine\n").unwrap();
        let dir = write_plugin_declarations(&config).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["mine.conf", "standalone-load.conf", "standalone-true.conf"]
        );
        let load = std::fs::read_to_string(dir.join("standalone-load.conf")).unwrap();
        assert!(load.contains(&format!(
            "command = {}/check_load -r -w 4,3,2 -c 8,6,4",
            nagios.display()
        )));
        std::fs::remove_dir_all(root).unwrap();
    }
}
