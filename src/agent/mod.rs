//! `vigil agent`: the daemon on every monitored host.
//!
//! Threads, each the only user of its socket or file:
//!
//! ```text
//!  local processes ─► [intake: ROUTER on VIGIL_AGENT_LOCAL] ──acked──► [spool: fsync, group commit]
//!                          │ unacked                                        │ committed
//!  statsd (UDP) ──► [statsd: aggregate] ──┐                                 ▼
//!                                         └──────────────► [link: DEALER to every router] ◄──► routers
//!  plugin runs ◄── [plugin manager] ◄── run_plugin ──────────────┘  ▲ results
//! ```
//!
//! Channels are bounded crossbeam channels; threads that wait in `zmq::poll`
//! have a doorbell. Here the identity is loaded, the spool replayed, the
//! sockets made and bound (a bad endpoint stops the start with exit status
//! 2), the threads started, and supervised until a signal drains them.

mod channels;
pub mod config;
mod handshakes;
pub mod identity;
mod intake;
mod link;
mod message;
mod metrics;
mod outqueue;
mod plugins;
mod refused;
mod resend;
mod spool;
mod spool_thread;
mod statsd;

use crate::curve::{ClientKeys, KeyPair};
use crate::doorbell::{Doorbell, Ringer};
use crate::error::Error;
use crate::signals::{Shutdown, SignalThread};
use crate::supervisor::Supervisor;
use channels::{LinkTx, PluginTx};
use config::{AgentConfig, ClientAuth};
use crossbeam_channel::{bounded, unbounded};
use link::LinkThread;
use metrics::AgentMetrics;
use outqueue::OutQueue;
use plugins::PluginManager;
use refused::Refused;
use std::sync::Arc;

const USAGE: &str = "\
usage: vigil agent [--print-uuid | --print-key]

Runs the agent of this host in the foreground, configured by VIGIL_*
variables (see README). --print-uuid prints this host's UUID (minting it
on first use) and exits. --print-key prints `UUID PUBLIC_KEY` (minting the
CURVE key in VIGIL_STATE_DIR/curve.key on first use), the line a router's
VIGIL_CLIENT_KEYS file takes, and exits.";

/// The agent's CURVE secret key file, beside its identity.
pub const KEY_FILE: &str = "curve.key";

/// Messages waiting for the link thread, at most.
const LINK_CHANNEL: usize = 4_096;
/// Requests waiting for the spool thread, at most.
const SPOOL_CHANNEL: usize = 8_192;
/// Bytes of unacked traffic kept in memory while no router is reachable.
const QUEUE_MAX_BYTES: usize = 32 << 20;

pub fn command(args: &[String]) -> Result<(), Error> {
    let mut print_uuid = false;
    let mut print_key = false;
    for arg in args {
        match arg.as_str() {
            "--print-uuid" => print_uuid = true,
            "--print-key" => print_key = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => {
                return Err(Error::Usage(format!(
                    "unexpected argument {other:?}\n{USAGE}"
                )))
            }
        }
    }
    let env = crate::config::Env::from_process()?;
    let config = AgentConfig::from_env(&env)?;
    let (identity, key) = load_identity(&config)?;
    if print_uuid {
        println!("{}", identity.uuid);
        return Ok(());
    }
    if print_key {
        println!("{} {}", identity.uuid, key.public);
        return Ok(());
    }
    run(config, identity, key)
}

/// The identity and the CURVE key, minted together on first start and
/// again together when the machine changed (a clone must not share its
/// parent's key any more than its UUID). Under `VIGIL_CLIENT_AUTH=derived`
/// the UUID is the one derived from the key; `identity.json` then still
/// tells a clone apart (which gets a new key, hence a new UUID), but its
/// `uuid` is not used.
fn load_identity(config: &AgentConfig) -> Result<(identity::Identity, KeyPair), Error> {
    let machine = identity::Machine::read(&config.machine_id_file, &config.hostname)
        .map_err(|e| Error::setup("VIGIL_MACHINE_ID_FILE", e))?;
    let (mut identity, origin) = identity::load_or_create(&config.state_dir, &machine)
        .map_err(|e| Error::setup("agent identity", e))?;
    let path = config.state_dir.join(KEY_FILE);
    if origin == identity::Origin::MachineChanged && path.exists() {
        retire_key(&path)?;
    }
    let key = KeyPair::read_or_create(&path)
        .map_err(|e| Error::setup(format!("agent key (VIGIL_STATE_DIR/{KEY_FILE})"), e))?;
    if config.client_auth == ClientAuth::Derived {
        identity.uuid = crate::protocol::uuid_text(&crate::curve::derived_uuid(&key.public));
    }
    Ok((identity, key))
}

/// Moves the key of the machine this state was copied from aside
/// (`curve.key.old`), so a fresh one is minted.
fn retire_key(path: &std::path::Path) -> Result<(), Error> {
    let old = path.with_extension("key.old");
    let fail = |e: std::io::Error| Error::setup(format!("retiring {}", path.display()), e);
    std::fs::rename(path, &old).map_err(fail)?;
    let public = crate::curve::public_path(path);
    if public.exists() {
        std::fs::rename(&public, crate::curve::public_path(&old)).map_err(fail)?;
    }
    log::warn!(
        "machine identity changed: the CURVE key was moved to {} and a new one minted; \
         enroll the new key (vigil agent --print-key) with the routers",
        old.display()
    );
    Ok(())
}

/// Every thread's doorbell, made before shutdown so it can ring them all.
struct Bells {
    link: (Doorbell, Ringer),
    intake: (Doorbell, Ringer),
    statsd: (Doorbell, Ringer),
    plugins: (Doorbell, Ringer),
}

impl Bells {
    fn new() -> Result<Bells, Error> {
        let bell = |what: &str| {
            Doorbell::new().map_err(|e| Error::setup(format!("creating the {what} doorbell"), e))
        };
        Ok(Bells {
            link: bell("link")?,
            intake: bell("intake")?,
            statsd: bell("statsd")?,
            plugins: bell("plugins")?,
        })
    }

    fn ringers(&self) -> Vec<Ringer> {
        vec![
            self.link.1.clone(),
            self.intake.1.clone(),
            self.statsd.1.clone(),
            self.plugins.1.clone(),
        ]
    }
}

pub fn run(config: AgentConfig, identity: identity::Identity, key: KeyPair) -> Result<(), Error> {
    log::info!(
        "starting agent {} (key {}): {config:?}",
        identity.uuid,
        key.public
    );
    let uuid = identity.uuid.clone();
    let (spool, entries) = spool::Spool::open(&config.state_dir, config.spool_max_bytes)
        .map_err(|e| Error::setup("VIGIL_STATE_DIR", e))?;
    if !entries.is_empty() {
        log::info!(
            "spool: {} acked message(s) waiting for their ack; resending",
            entries.len()
        );
    }
    let (files, errors) = plugins::declare::read_dir(&config.plugin_dir);
    for e in errors {
        log::warn!("plugin declarations: {e}");
    }
    let ctx = zmq::Context::new();
    let bells = Bells::new()?;
    let (dealer, refused_handshakes) =
        make_dealer(&ctx, &uuid, &config, key, bells.link.1.clone())?;
    let local = bind_local(&ctx, &config)?;
    let statsd = match config.statsd {
        Some(addr) => Some(std::net::UdpSocket::bind(addr).map_err(|e| Error::Setup {
            what: format!("VIGIL_STATSD_BIND={addr}"),
            reason: format!("cannot bind: {e}"),
        })?),
        None => None,
    };
    let shutdown = Arc::new(Shutdown::new(bells.ringers()));
    let signals = SignalThread::start(Arc::clone(&shutdown))
        .map_err(|e| Error::setup("installing signal handlers", e))?;
    let metrics = Arc::new(AgentMetrics::default());

    let (link_tx, link_rx) = bounded(LINK_CHANNEL);
    let link_tx = LinkTx {
        tx: link_tx,
        ringer: bells.link.1.clone(),
    };
    let (plugin_tx, plugin_rx) = bounded(1_024);
    let plugin_tx = PluginTx {
        tx: plugin_tx,
        ringer: bells.plugins.1.clone(),
    };
    let (spool_tx, spool_rx) = bounded(SPOOL_CHANNEL);
    let (done_tx, done_rx) = unbounded();
    let statsd_port = statsd
        .as_ref()
        .and_then(|s| s.local_addr().ok())
        .map_or("off".to_string(), |a| a.to_string());
    let local_endpoint = match local.get_last_endpoint() {
        Ok(Ok(e)) => e,
        _ => config.local.clone(),
    };

    let mut supervisor = Supervisor::default();
    let start = |e: std::io::Error| Error::setup("starting threads", e);
    let mut resend = resend::Resend::new(config.resend_min, config.resend_max);
    for entry in entries {
        resend.add(entry);
    }
    let link_thread = LinkThread {
        socket: dealer,
        bell: bells.link.0,
        rx: link_rx,
        uuid: uuid.clone(),
        hostname: config.hostname.clone(),
        heartbeat: config.heartbeat,
        queue: OutQueue::new(config.queue_max, QUEUE_MAX_BYTES),
        refused: Refused::new(config.queue_max, QUEUE_MAX_BYTES),
        resend,
        plugins: plugin_tx.clone(),
        spool: spool_tx.clone(),
        metrics: Arc::clone(&metrics),
        shutdown: shutdown.watch(),
        stats_interval: config.stats_interval,
        drain: config.drain,
        reachable: false,
        pending_done: Vec::new(),
        refused_handshakes,
        redial: handshakes::Redial::default(),
        routers: config.routers.clone(),
    };
    supervisor
        .spawn("link", move || link_thread.run())
        .map_err(start)?;
    let spool_thread = spool_thread::SpoolThread {
        spool,
        rx: spool_rx,
        completions: done_tx,
        intake_bell: bells.intake.1.clone(),
        link: link_tx.clone(),
        metrics: Arc::clone(&metrics),
    };
    supervisor
        .spawn("spool", move || spool_thread.run())
        .map_err(start)?;
    let intake = intake::IntakeThread {
        socket: local,
        bell: bells.intake.0,
        completions: done_rx,
        spool: spool_tx,
        link: link_tx.clone(),
        plugins: plugin_tx.clone(),
        uuid: uuid.clone(),
        hostname: config.hostname.clone(),
        max_message_bytes: config.max_message_bytes,
        policy: intake::Policy {
            commands: config.local_commands,
        },
        metrics: Arc::clone(&metrics),
        shutdown: shutdown.watch(),
        drain: config.drain,
    };
    supervisor
        .spawn("intake", move || intake.run())
        .map_err(start)?;
    if let Some(socket) = statsd {
        let thread = statsd::StatsdThread {
            socket,
            bell: bells.statsd.0,
            link: link_tx.clone(),
            uuid: uuid.clone(),
            hostname: config.hostname.clone(),
            flush_every: config.statsd_flush,
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.watch(),
        };
        supervisor
            .spawn("statsd", move || thread.run())
            .map_err(start)?;
    }
    let manager = PluginManager {
        rx: plugin_rx,
        tx: plugin_tx,
        bell: bells.plugins.0,
        link: link_tx,
        uuid: uuid.clone(),
        hostname: config.hostname.clone(),
        plugin_dir: config.plugin_dir.clone(),
        rescan: config.plugin_rescan,
        concurrency: config.plugin_concurrency,
        output_max: config.plugin_output_max,
        metrics: Arc::clone(&metrics),
        shutdown: shutdown.watch(),
    };
    supervisor
        .spawn("plugins", move || manager.run(files))
        .map_err(start)?;
    // Only now: a signal sent as soon as this line appears must drain.
    log::info!(
        target: crate::ready::TARGET,
        "ready: uuid={uuid} local={local_endpoint} statsd={statsd_port} routers={}",
        config.routers.join(",")
    );
    let watch = shutdown.watch();
    let failed = supervisor.wait(|| watch.is_set(), || shutdown.trigger());
    signals.stop();
    log::info!("agent stopped; {}", metrics.summary_line());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::ThreadsFailed(failed))
    }
}

/// The DEALER to every router. With `VIGIL_ROUTER_KEY` it is a CURVE
/// client (fail closed: without CURVE in libzmq the agent does not start)
/// and leaves its routing id to the router, which routes by the UUID the
/// key authenticates; without, its routing id is its UUID (PROTOCOL.md).
fn make_dealer(
    ctx: &zmq::Context,
    uuid: &str,
    config: &AgentConfig,
    key: KeyPair,
    link_bell: crate::doorbell::Ringer,
) -> Result<(zmq::Socket, Option<crossbeam_channel::Receiver<String>>), Error> {
    let socket = ctx
        .socket(zmq::DEALER)
        .map_err(|e| Error::setup("creating the DEALER socket", e))?;
    let jitter = resend::Jitter::new().unit();
    let routing_id = match config.router_key {
        Some(router) => {
            let keys = ClientKeys { own: key, router };
            crate::curve::require_curve()
                .and_then(|()| keys.apply(&socket))
                .map_err(|e| Error::setup("VIGIL_ROUTER_KEY", e))?;
            None
        }
        None => {
            log::warn!(
                "VIGIL_ROUTER_KEY is not set: talking to the routers in plaintext, unauthenticated"
            );
            Some(uuid)
        }
    };
    link::configure_dealer(&socket, routing_id, config, jitter)
        .map_err(|e| Error::setup("configuring the DEALER socket", e))?;
    // Before connecting, so no refusal goes unseen.
    let refused = match config.router_key {
        Some(_) => Some(
            handshakes::watch(ctx, &socket, link_bell)
                .map_err(|e| Error::setup("watching CURVE handshakes", e))?,
        ),
        None => None,
    };
    for endpoint in &config.routers {
        socket.connect(endpoint).map_err(|source| Error::Bind {
            var: "VIGIL_ROUTERS".into(),
            endpoint: endpoint.clone(),
            source,
        })?;
    }
    Ok((socket, refused))
}

fn bind_local(ctx: &zmq::Context, config: &AgentConfig) -> Result<zmq::Socket, Error> {
    let socket = ctx
        .socket(zmq::ROUTER)
        .map_err(|e| Error::setup("creating the local socket", e))?;
    let setup = |s: &zmq::Socket| -> zmq::Result<()> {
        s.set_linger(link::linger_ms(config.drain))?;
        s.set_maxmsgsize((config.max_message_bytes as i64).saturating_mul(2))?;
        s.set_router_mandatory(false)
    };
    setup(&socket).map_err(|e| Error::setup("configuring the local socket", e))?;
    let ipc = config
        .local
        .strip_prefix("ipc://")
        .map(std::path::Path::new);
    if let Some(path) = ipc {
        intake::prepare_ipc_dir(path).map_err(|reason| Error::Setup {
            what: format!("VIGIL_AGENT_LOCAL={}", config.local),
            reason,
        })?;
    }
    socket.bind(&config.local).map_err(|source| Error::Bind {
        var: "VIGIL_AGENT_LOCAL".into(),
        endpoint: config.local.clone(),
        source,
    })?;
    if let Some(path) = ipc {
        intake::restrict_socket(path).map_err(|reason| Error::Setup {
            what: format!("VIGIL_AGENT_LOCAL={}", config.local),
            reason,
        })?;
    }
    Ok(socket)
}
