//! `vigil sink TYPE... | all`: the back-end sinks that PULL from every
//! router and put what arrives where it belongs.
//!
//! Threads, one per socket or store connection that writes:
//!
//! ```text
//!  routers ══PUSH══► [pull-TYPE: PULL] ──batches──► [TYPE: worker, store] ──acks──► [acks: REQ → routers]
//!                                                        │  └─lines──► [graphite writer] ──► carbon
//!                                                        └─ring──► [outbox: store, handlers]
//! ```
//!
//! One PULL thread per type connects to that type's endpoint on every
//! router and hands batches over a bounded channel to the type's worker,
//! which owns a store connection and writes each batch in one transaction.
//! What follows from a committed batch (acks, Graphite lines, raised
//! notifications) is published only after the commit. With the
//! notification type comes the outbox, which runs the handlers of
//! notifications vigil raised. A signal stops the PULL threads; the
//! workers finish what they were handed, the ack thread sends what is
//! queued, Graphite is flushed within `VIGIL_DRAIN_MS`, and the process
//! exits 0.

mod acks;
pub mod config;
mod handling;
mod heartbeat;
mod message;
mod metrics;
mod notification;
mod outbox;
mod pull;
mod registration;
mod result;
mod stats;
mod worker;

use crate::backend_client::BackendClient;
use crate::config::Env;
use crate::doorbell::{Doorbell, Ringer};
use crate::error::Error;
use crate::graphite::{Graphite, GraphiteConfig};
use crate::notify::Handlers;
use crate::signals::{Shutdown, ShutdownWatch, SignalThread};
use crate::store::Store;
use crate::supervisor::Supervisor;
use acks::{Ack, AckThread};
use config::{ArgsOrConfig, SinkConfig, SinkType};
use crossbeam_channel::{bounded, Receiver, Sender};
use metrics::Metrics;
use pull::PullThread;
use std::sync::Arc;
use worker::{Batch, TypeSink, Worker};

/// Acks waiting for the ack thread; beyond this they are dropped and the
/// agents' resends are acked instead.
const ACK_QUEUE: usize = 10_000;

pub fn command(args: &[String]) -> Result<(), Error> {
    if args
        .first()
        .is_some_and(|a| a == "--help" || a == "-h" || a == "help")
    {
        println!("{}", config::USAGE);
        return Ok(());
    }
    let env = Env::from_process()?;
    let config = SinkConfig::from_args_env(args, &env).map_err(|e| match e {
        ArgsOrConfig::Usage(text) => Error::Usage(text),
        ArgsOrConfig::Config(e) => Error::Config(e),
    })?;
    run(config, &env)
}

/// What the types of this process need besides their sockets, checked
/// before any thread starts so a bad value stops the start with status 2.
struct Parts {
    handlers: Option<Handlers>,
    graphite: Option<Arc<Graphite>>,
    /// `VIGIL_GRAPHITE_PREFIX`, for the lines the workers build.
    prefix: String,
}

impl Parts {
    fn new(config: &SinkConfig, env: &Env) -> Result<Parts, Error> {
        let handlers = config
            .runs(SinkType::Notification)
            .then(|| Handlers::from_env(env))
            .transpose()?;
        let mut prefix = String::new();
        let graphite = if config.runs(SinkType::Stats) || config.runs(SinkType::Result) {
            let graphite_config = GraphiteConfig::from_env(env)?;
            log::info!("graphite: {graphite_config:?}");
            prefix = graphite_config.prefix.clone();
            Some(Arc::new(Graphite::start(graphite_config)?))
        } else {
            None
        };
        if let Some(h) = &handlers {
            log::info!("notification handlers: {:?}", h.config());
        }
        Ok(Parts {
            handlers,
            graphite,
            prefix,
        })
    }
}

pub fn run(config: SinkConfig, env: &Env) -> Result<(), Error> {
    log::info!("starting sink: {config:?}");
    // Opened here first so a bad VIGIL_DB stops the start, and migrated once.
    open_store(&config)?;
    let parts = Parts::new(&config, env)?;
    let ctx = zmq::Context::new();
    let pulls = connect_pulls(&ctx, &config)?;
    let outbox_bell = match parts.handlers {
        Some(_) => Some(doorbell("outbox")?),
        None => None,
    };
    let mut ringers: Vec<Ringer> = pulls.iter().map(|p| p.3.clone()).collect();
    ringers.extend(outbox_bell.as_ref().map(|(_, r)| r.clone()));
    let shutdown = Arc::new(Shutdown::new(ringers));
    let signals = SignalThread::start(Arc::clone(&shutdown))
        .map_err(|e| Error::setup("installing signal handlers", e))?;
    let metrics = Arc::new(Metrics::new(&config.types));

    let mut supervisor = Supervisor::default();
    let (ack_tx, ack_rx) = bounded::<Ack>(ACK_QUEUE);
    let outbox_ringer = outbox_bell.as_ref().map(|(_, r)| r.clone());
    let shared = Shared {
        config: &config,
        metrics: &metrics,
        acks: &ack_tx,
        graphite: &parts.graphite,
        outbox: &outbox_ringer,
        watch: shutdown.watch(),
    };
    let started = spawn_all(
        &mut supervisor,
        &shared,
        pulls,
        &parts,
        outbox_bell,
        ack_rx,
        &ctx,
    );
    drop(ack_tx);
    if let Err(e) = started {
        shutdown.trigger();
        supervisor.wait(|| true, || {});
        signals.stop();
        return Err(e);
    }
    // Only now: a signal sent as soon as this line appears must drain.
    log::info!(target: crate::ready::TARGET, "{}", ready_line(&config));
    let watch = shutdown.watch();
    let failed = supervisor.wait(|| watch.is_set(), || shutdown.trigger());
    signals.stop();
    stop_graphite(parts.graphite, &config);
    log::info!("sink stopped; {}", metrics.summary_line());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::ThreadsFailed(failed))
    }
}

/// Every type's PULL socket, connected to every router, with the doorbell
/// that wakes its thread, and the ringer shutdown uses.
type Pulls = Vec<(SinkType, zmq::Socket, Doorbell, Ringer)>;

fn connect_pulls(ctx: &zmq::Context, config: &SinkConfig) -> Result<Pulls, Error> {
    let mut pulls = Vec::new();
    for kind in &config.types {
        let socket = pull::connect(ctx, config.endpoints(*kind), config.keys.as_ref())
            .map_err(|e| Error::setup(format!("VIGIL_SINK_CONNECT ({kind})"), e))?;
        let (bell, ringer) = doorbell(kind.name())?;
        pulls.push((*kind, socket, bell, ringer));
    }
    Ok(pulls)
}

/// What every worker is handed.
struct Shared<'a> {
    config: &'a SinkConfig,
    metrics: &'a Arc<Metrics>,
    acks: &'a Sender<Ack>,
    graphite: &'a Option<Arc<Graphite>>,
    outbox: &'a Option<Ringer>,
    watch: ShutdownWatch,
}

/// Starts the PULL thread and worker of every type, the ack thread and,
/// with the notification type, the outbox.
fn spawn_all(
    supervisor: &mut Supervisor,
    shared: &Shared,
    pulls: Pulls,
    parts: &Parts,
    outbox_bell: Option<(Doorbell, Ringer)>,
    ack_rx: Receiver<Ack>,
    ctx: &zmq::Context,
) -> Result<(), Error> {
    let config = shared.config;
    for (kind, socket, bell, _) in pulls {
        let (tx, rx) = bounded::<Batch>(config.queue_batches);
        let pull = PullThread {
            kind,
            socket,
            bell,
            batches: tx,
            shutdown: shared.watch.clone(),
            batch_max: config.batch_max,
        };
        spawn(supervisor, &format!("pull-{kind}"), move || pull.run())?;
        spawn_worker(supervisor, shared, parts, kind, rx)?;
    }
    let ack_thread = AckThread {
        client: BackendClient::new(ctx, config.backends.clone(), config.ack_timeout)
            .with_keys(config.keys.clone()),
        acks: ack_rx,
        metrics: Arc::clone(shared.metrics),
        shutdown: shared.watch.clone(),
        drain: config.drain,
    };
    spawn(supervisor, "acks", move || ack_thread.run())?;
    if let (Some(handlers), Some((bell, _))) = (&parts.handlers, outbox_bell) {
        let outbox = outbox::Outbox {
            store: open_store(config)?,
            handlers: handlers.clone(),
            bell,
            shutdown: shared.watch.clone(),
            metrics: Arc::clone(shared.metrics),
            timing: outbox::Timing {
                retry_min: config.retry_min,
                retry_max: config.retry_max,
                poll: config.outbox_poll,
                // Shorter than one attempt could take, a claim would lapse
                // mid-attempt and let a second outbox run the same handlers.
                lease: config.handler_lease.max(client_lease(Some(handlers))),
            },
        };
        spawn(supervisor, "outbox", move || outbox.run())?;
    }
    Ok(())
}

/// Starts the worker of `kind`, with its own store connection.
fn spawn_worker(
    supervisor: &mut Supervisor,
    shared: &Shared,
    parts: &Parts,
    kind: SinkType,
    batches: Receiver<Batch>,
) -> Result<(), Error> {
    let config = shared.config;
    let prefix = || parts.prefix.clone();
    match kind {
        SinkType::Heartbeat => start_worker(
            supervisor,
            shared,
            batches,
            heartbeat::HeartbeatSink::new(
                crate::store::now(),
                config.heartbeat_grace,
                config.sweep,
            ),
        ),
        SinkType::Stats => start_worker(
            supervisor,
            shared,
            batches,
            stats::StatsSink {
                prefix: prefix(),
                keeper: stats::MetricKeeper::new(config.metrics),
            },
        ),
        SinkType::Registration => start_worker(
            supervisor,
            shared,
            batches,
            registration::RegistrationSink::default(),
        ),
        SinkType::Notification => start_worker(
            supervisor,
            shared,
            batches,
            notification::NotificationSink::new(
                parts
                    .handlers
                    .clone()
                    .expect("handlers are made when the notification type runs"),
                config.retry_min,
                config.dedup_retention,
                client_lease(parts.handlers.as_ref()),
            ),
        ),
        SinkType::Result => start_worker(
            supervisor,
            shared,
            batches,
            result::ResultSink::new(prefix(), stats::MetricKeeper::new(config.metrics)),
        ),
    }
}

fn start_worker<S: TypeSink + Send + 'static>(
    supervisor: &mut Supervisor,
    shared: &Shared,
    batches: Receiver<Batch>,
    sink: S,
) -> Result<(), Error> {
    let name = sink.kind().name();
    let worker = Worker {
        sink,
        store: open_store(shared.config)?,
        batches,
        acks: shared.acks.clone(),
        graphite: shared.graphite.clone(),
        outbox: shared.outbox.clone(),
        metrics: Arc::clone(shared.metrics),
        stats_interval: shared.config.stats_interval,
        shutdown: shared.watch.clone(),
    };
    spawn(supervisor, name, move || worker.run())
}

/// How long one attempt at a client notification may hold it: every
/// handler at its timeout, and a margin.
fn client_lease(handlers: Option<&Handlers>) -> std::time::Duration {
    let timeout = handlers.map_or(std::time::Duration::from_secs(10), |h| h.config().timeout);
    timeout * 3 + std::time::Duration::from_secs(30)
}

/// A store that cannot be used (a refused login, a newer schema) stops
/// the start for good (status 2); one that is unreachable now is a failure
/// worth a restart (status 1).
fn open_store(config: &SinkConfig) -> Result<Store, Error> {
    Store::open(&config.db).map_err(|e| {
        if e.source.is_outage() {
            Error::Store(e)
        } else {
            Error::setup("VIGIL_DB", e)
        }
    })
}

fn spawn<F>(supervisor: &mut Supervisor, name: &str, body: F) -> Result<(), Error>
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    supervisor
        .spawn(name, body)
        .map_err(|e| Error::setup(format!("starting thread {name}"), e))
}

fn doorbell(what: &str) -> Result<(Doorbell, Ringer), Error> {
    Doorbell::new().map_err(|e| Error::setup(format!("creating the {what} doorbell"), e))
}

/// Flushes Graphite within the drain time; every worker has ended, so
/// this is the last handle.
fn stop_graphite(graphite: Option<Arc<Graphite>>, config: &SinkConfig) {
    let Some(graphite) = graphite else { return };
    match Arc::try_unwrap(graphite) {
        Ok(graphite) => {
            log::info!("graphite before the flush: {:?}", graphite.stats());
            graphite.stop(config.drain);
        }
        Err(_) => log::error!("graphite: still shared at exit; not flushed"),
    }
}

/// The start-up line tools parse: the types and every endpoint connected.
fn ready_line(config: &SinkConfig) -> String {
    let types: Vec<&str> = config.types.iter().map(|t| t.name()).collect();
    let pulls: Vec<String> = config
        .connect
        .iter()
        .flat_map(|(kind, endpoints)| endpoints.iter().map(move |e| format!("{kind}={e}")))
        .collect();
    format!(
        "ready: types={} pull={} backends={} db={}",
        types.join(","),
        pulls.join(","),
        config.backends.join(","),
        config.db
    )
}
