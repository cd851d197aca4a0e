//! `vigil router`: the stateless hub between agents and back-end sinks.
//!
//! Threads, one per socket, each the only user of its socket:
//!
//! ```text
//!  clients ──► [client thread: ROUTER, UUID table] ──queue per type──► [sink thread: PUSH] ──► sinks
//!                     ▲   commands + doorbell
//!  back end ◄──► [backend thread: REP-like ROUTER]
//! ```
//!
//! The queues are bounded (in messages) crossbeam channels; a full one makes
//! the client thread stop reading client input until there is room, for at
//! most `VIGIL_OVERLOAD_WAIT_MS` (back-pressure, `pressure.rs`); only a
//! queue that stays full longer turns into `overloaded` replies, so one
//! absent sink type never holds up the others for longer than that.
//! Here the sockets are made and bound (so a bad endpoint stops the start
//! with exit status 2), handed to their threads, and the threads supervised
//! until a signal drains them.

mod admit;
pub mod auth;
mod backend;
mod clients;
pub mod config;
pub mod keyfiles;
mod metrics;
mod pressure;
mod sink;
mod table;
mod zap;

use crate::curve;
use crate::doorbell::{Doorbell, Ringer};
use crate::error::Error;
use crate::protocol::MetadataWriter;
use crate::signals::{Shutdown, SignalThread};
use crate::supervisor::Supervisor;
use backend::BackendThread;
use clients::{Batch, ClientThread, Command, RejectLog};
use config::RouterConfig;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use metrics::Metrics;
use pressure::{Gate, OverloadReplies, RoomBell};
use sink::{Remake, SinkThread};
use std::sync::Arc;
use table::ClientTable;

/// Deliveries waiting for the client thread: a whole back-end burst, so
/// the back-end thread hands it over without waiting.
const COMMAND_QUEUE: usize = backend::BURST;
/// New key sets waiting for the back-end thread (the ZAP thread retries).
const ACCESS_QUEUE: usize = 4;

/// The router's sockets, bound and configured, before their threads start.
struct Sockets {
    client: zmq::Socket,
    backend: zmq::Socket,
    sinks: Vec<zmq::Socket>,
    /// Under CURVE, the readers of the CURVE sockets' handshake events,
    /// for the ZAP thread (which closes them after the sockets they watch).
    monitors: Vec<zmq::Socket>,
    /// Under CURVE, the ZAP handler's sockets, bound before the others.
    zap: Option<Vec<zmq::Socket>>,
}

pub fn run(config: RouterConfig) -> Result<(), Error> {
    log::info!("starting router: {config:?}");
    let ctx = zmq::Context::new();
    ctx.set_io_threads(config.io_threads)
        .map_err(|e| Error::setup("VIGIL_IO_THREADS", e))?;
    // The back end's socket has a context, so an I/O thread, of its own:
    // its requests and replies never wait behind client traffic in the
    // client I/O thread's queue (delivery latency under load).
    let backend_ctx = zmq::Context::new();
    // Before any CURVE server binds: without a ZAP handler libzmq would let
    // every key in. ZAP is per context, so each context gets one.
    let zap_sockets = match &config.curve {
        Some(_) => Some(
            [&ctx, &backend_ctx]
                .into_iter()
                .map(zap::bind)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::setup("binding the ZAP handler socket", e))?,
        ),
        None => {
            log::warn!(
                "VIGIL_CURVE_KEY is not set: every socket is plaintext and open to anyone \
                 who can reach it (no encryption, no authentication)"
            );
            None
        }
    };
    let mut sockets = bind_all(&ctx, &backend_ctx, &config)?;
    sockets.zap = zap_sockets;
    let ready_line = ready_line(&sockets, &config);
    let bells = Bells::new(config.sinks.len())?;
    let shutdown = Arc::new(Shutdown::new(bells.ringers()));
    let signals = SignalThread::start(Arc::clone(&shutdown))
        .map_err(|e| Error::setup("installing signal handlers", e))?;
    let metrics = Arc::new(Metrics::new(config.sink_types()));

    let mut supervisor = Supervisor::default();
    let zap = spawn_threads(
        &mut supervisor,
        &config,
        sockets,
        bells,
        &shutdown,
        &metrics,
        &ctx,
    )
    .map_err(|e| Error::setup("starting threads", e))?;
    // Only now: a signal sent as soon as this line appears must drain.
    log::info!(target: crate::ready::TARGET, "{ready_line}");
    let watch = shutdown.watch();
    let failed = supervisor.wait(|| watch.is_set(), || shutdown.trigger());
    // Last: the other sockets are closed, so no handshake can go unchecked.
    if let Some(zap) = zap {
        zap.stop();
    }
    signals.stop();
    log::info!("router stopped; {}", metrics.summary_line());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::ThreadsFailed(failed))
    }
}

/// Every thread's doorbell, made before shutdown so it can ring them all.
struct Bells {
    client: Doorbell,
    client_ringer: Ringer,
    backend: Doorbell,
    backend_ringer: Ringer,
    sinks: Vec<(Doorbell, Ringer)>,
}

impl Bells {
    fn new(sinks: usize) -> Result<Bells, Error> {
        let (client, client_ringer) = doorbell("client")?;
        let (backend, backend_ringer) = doorbell("backend")?;
        let sinks = (0..sinks)
            .map(|_| doorbell("sink"))
            .collect::<Result<_, _>>()?;
        Ok(Bells {
            client,
            client_ringer,
            backend,
            backend_ringer,
            sinks,
        })
    }

    fn ringers(&self) -> Vec<Ringer> {
        let mut ringers = vec![self.client_ringer.clone(), self.backend_ringer.clone()];
        ringers.extend(self.sinks.iter().map(|(_, ringer)| ringer.clone()));
        ringers
    }
}

/// Wires the sockets to their threads and starts them; under CURVE, the
/// ZAP thread too (not supervised: it must outlive every other socket).
fn spawn_threads(
    supervisor: &mut Supervisor,
    config: &RouterConfig,
    sockets: Sockets,
    bells: Bells,
    shutdown: &Shutdown,
    metrics: &Arc<Metrics>,
    ctx: &zmq::Context,
) -> std::io::Result<Option<zap::ZapHandle>> {
    // Unbounded in batches, bounded in messages: the client thread admits a
    // message only while its type's `queued` count is under the capacity,
    // and each batch holds at least one. (A bounded channel would reserve
    // every slot up front.)
    let (queue_txs, queue_rxs): (Vec<Sender<Batch>>, Vec<Receiver<Batch>>) =
        config.sinks.iter().map(|_| unbounded()).unzip();
    let (command_tx, command_rx) = bounded::<Command>(COMMAND_QUEUE);
    let (access_tx, access_rx) = bounded(ACCESS_QUEUE);
    let access = config.curve.as_ref().map(|c| Arc::new(c.initial.clone()));
    let (rebuild_txs, rebuild_rxs): (Vec<_>, Vec<_>) =
        config.sinks.iter().map(|_| bounded::<()>(1)).unzip();
    let sink_ringers: Vec<Ringer> = bells.sinks.iter().map(|(_, r)| r.clone()).collect();
    let sink_types = config.sink_types();
    let room = Arc::new(RoomBell::new(sink_types.len(), bells.client_ringer.clone()));
    let wait_ms = config.overload_wait.as_millis() as u64;
    let zap = match (sockets.zap, &config.curve) {
        (Some(zap_sockets), Some(auth)) => {
            let thread = zap::ZapThread {
                config: auth.clone(),
                subscribers: zap::Subscribers {
                    clients: command_tx.clone(),
                    client_bell: bells.client_ringer.clone(),
                    backend: access_tx,
                    backend_bell: bells.backend_ringer.clone(),
                    sinks: rebuild_txs.into_iter().zip(sink_ringers).collect(),
                },
                metrics: Arc::clone(metrics),
                monitors: sockets.monitors,
            };
            Some(thread.start(zap_sockets)?)
        }
        _ => None,
    };
    let client_thread = ClientThread {
        socket: sockets.client,
        bell: bells.client,
        commands: command_rx,
        queues: queue_txs,
        pending: config.sinks.iter().map(|_| Vec::new()).collect(),
        queue_capacity: config.queue_capacity,
        sink_types: config.sink_types(),
        table: ClientTable::new(config.max_clients, config.client_ttl_secs),
        metrics: Arc::clone(metrics),
        shutdown: shutdown.watch(),
        router_name: config.name.clone(),
        max_message_bytes: config.max_message_bytes,
        stats_interval: config.stats_interval,
        access: access.clone(),
        last_allowed: None,
        gates: vec![Gate::default(); sink_types.len()],
        room: Arc::clone(&room),
        overload_wait: config.overload_wait,
        overload_replies: OverloadReplies::new(&sink_types, config.queue_capacity, wait_ms),
        reject_log: RejectLog::default(),
        burst_ms: 0,
        last_peer: None,
    };
    supervisor.spawn("clients", move || client_thread.run())?;
    let backend_thread = BackendThread {
        socket: sockets.backend,
        bell: bells.backend,
        commands: command_tx,
        client_bell: bells.client_ringer,
        shutdown: shutdown.watch(),
        metrics: Arc::clone(metrics),
        router_name: config.name.clone(),
        max_message_bytes: config.max_message_bytes,
        access,
        access_updates: access_rx,
    };
    supervisor.spawn("backend", move || backend_thread.run())?;
    let metadata = MetadataWriter::new(&config.name);
    let parts = sockets.sinks.into_iter().zip(queue_rxs).zip(bells.sinks);
    for ((index, ((socket, queue), (bell, _))), requests) in parts.enumerate().zip(rebuild_rxs) {
        let remake = config.curve.as_ref().map(|auth| Remake {
            requests,
            make: sink_socket_maker(ctx.clone(), config, auth),
            endpoint: bound_endpoint(&socket),
        });
        let sink_thread = SinkThread {
            index,
            socket,
            queue,
            bell,
            shutdown: shutdown.watch(),
            metrics: Arc::clone(metrics),
            metadata: metadata.clone(),
            drain: config.drain,
            deadline: None,
            room: Arc::clone(&room),
            last_meta: sink::MetaCache::default(),
            remake,
        };
        let name = format!("sink-{}", config.sinks[index].kind);
        supervisor.spawn(&name, move || sink_thread.run())?;
    }
    Ok(zap)
}

fn doorbell(what: &str) -> Result<(Doorbell, Ringer), Error> {
    Doorbell::new().map_err(|e| Error::setup(format!("creating the {what} doorbell"), e))
}

/// The back-end ROUTER's send HWM per peer: twenty back-end client
/// windows of replies (each about 50 bytes).
const BACKEND_SNDHWM: i32 = 20 * crate::backend_client::WINDOW as i32;

/// Creates and binds every socket. Any failure names its variable.
fn bind_all(
    ctx: &zmq::Context,
    backend_ctx: &zmq::Context,
    config: &RouterConfig,
) -> Result<Sockets, Error> {
    let curve = |s: &zmq::Socket, domain: &str| -> zmq::Result<()> {
        match &config.curve {
            Some(auth) => curve::apply_server(s, &auth.server, domain).map_err(|e| match e {
                curve::KeyError::Zmq { source, .. } => source,
                _ => zmq::Error::EINVAL,
            }),
            None => Ok(()),
        }
    };
    let mut client = make_socket(ctx, zmq::ROUTER, "VIGIL_CLIENT_BIND", |s| {
        configure_client_socket(s, config)?;
        curve(s, auth::CLIENT_DOMAIN)
    })?;
    if config.curve.is_some() {
        set_router_notify(&mut client, ZMQ_NOTIFY_DISCONNECT)
            .map_err(|e| Error::setup("configuring the socket for VIGIL_CLIENT_BIND", e))?;
    }
    bind(&client, "VIGIL_CLIENT_BIND", &config.client_bind)?;
    let backend = make_socket(backend_ctx, zmq::ROUTER, "VIGIL_BACKEND_BIND", |s| {
        s.set_router_mandatory(true)?;
        // Replies are small, and a reply that finds its requester's queue
        // full is dropped; libzmq learns what the peer read only every half
        // HWM, so the queue must hold well over a back-end client's window.
        s.set_sndhwm(BACKEND_SNDHWM)?;
        s.set_linger(config.drain.as_millis() as i32)?;
        s.set_maxmsgsize(hard_size_limit(config.max_message_bytes))?;
        curve(s, auth::BACKEND_DOMAIN)
    })?;
    bind(&backend, "VIGIL_BACKEND_BIND", &config.backend_bind)?;
    let mut sinks = Vec::new();
    for sink in &config.sinks {
        let push = make_socket(ctx, zmq::PUSH, "VIGIL_SINK_BINDS", |s| {
            configure_sink_socket(s, config)?;
            curve(s, auth::SINK_DOMAIN)
        })?;
        bind(&push, "VIGIL_SINK_BINDS", &sink.endpoint)?;
        sinks.push(push);
    }
    let mut monitors = Vec::new();
    if config.curve.is_some() {
        // A monitor's inproc endpoint lives in its socket's context.
        let all = std::iter::once((ctx, &client))
            .chain([(backend_ctx, &backend)])
            .chain(sinks.iter().map(|s| (ctx, s)));
        for (n, (ctx, socket)) in all.enumerate() {
            let monitor = zap::watch_handshakes(ctx, socket, n)
                .map_err(|e| Error::setup("monitoring CURVE handshakes", e))?;
            monitors.push(monitor);
        }
    }
    Ok(Sockets {
        client,
        backend,
        sinks,
        monitors,
        zap: None,
    })
}

fn configure_sink_socket(s: &zmq::Socket, config: &RouterConfig) -> zmq::Result<()> {
    s.set_sndhwm(config.sink_hwm)?;
    s.set_linger(config.drain.as_millis() as i32)
}

/// What a sink thread calls to make its PUSH socket anew under CURVE.
fn sink_socket_maker(
    ctx: zmq::Context,
    config: &RouterConfig,
    auth: &auth::AuthConfig,
) -> Box<dyn Fn() -> zmq::Result<zmq::Socket> + Send> {
    let (hwm, linger, server) = (
        config.sink_hwm,
        config.drain.as_millis() as i32,
        auth.server.clone(),
    );
    Box::new(move || {
        let s = ctx.socket(zmq::PUSH)?;
        s.set_sndhwm(hwm)?;
        s.set_linger(linger)?;
        curve::apply_server(&s, &server, auth::SINK_DOMAIN).map_err(|e| match e {
            curve::KeyError::Zmq { source, .. } => source,
            _ => zmq::Error::EINVAL,
        })?;
        Ok(s)
    })
}

/// The client ROUTER's options; `ZMQ-NOTES.md` says why each matters.
fn configure_client_socket(s: &zmq::Socket, config: &RouterConfig) -> zmq::Result<()> {
    // Unknown or full peers fail loudly instead of silently dropping.
    s.set_router_mandatory(true)?;
    // A reconnecting agent takes over its routing id at once. Not under
    // CURVE: there routes follow the authenticated User-Id, never a routing
    // id a peer announces, and clients announce none; without handover a
    // peer announcing an id already in use is parked instead of taking that
    // connection's pipe, and ROUTER_NOTIFY (set in bind_all) drops a route
    // when its connection goes.
    if config.curve.is_none() {
        s.set_router_handover(true)?;
    }
    // Inbound: room for bursts while the client thread catches up.
    s.set_rcvhwm(config.client_hwm)?;
    // Outbound holds replies and deliveries; lower it to bound what clients
    // that never read can pin (each reply is about 300 bytes).
    s.set_sndhwm(config.client_sndhwm)?;
    s.set_maxmsgsize(hard_size_limit(config.max_message_bytes))?;
    s.set_linger(config.drain.as_millis() as i32)?;
    if config.zmtp_heartbeat_ms > 0 {
        // Frozen or vanished peers are dropped, so deliveries to them say
        // `unreachable` instead of queueing forever.
        s.set_heartbeat_ivl(config.zmtp_heartbeat_ms)?;
        s.set_heartbeat_timeout(config.zmtp_heartbeat_timeout_ms)?;
        s.set_heartbeat_ttl(config.zmtp_heartbeat_timeout_ms.min(6_553_000))?;
    }
    Ok(())
}

/// ZMQ_ROUTER_NOTIFY (a DRAFT option rust-zmq has no setter for) and its
/// disconnect flag, from zmq.h.
const ZMQ_ROUTER_NOTIFY: i32 = 97;
const ZMQ_NOTIFY_DISCONNECT: i32 = 2;

fn set_router_notify(socket: &mut zmq::Socket, flags: i32) -> zmq::Result<()> {
    // SAFETY: the socket pointer is valid for the socket's lifetime and the
    // option value is an int, as zmq_setsockopt expects for this option.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            ZMQ_ROUTER_NOTIFY,
            (&flags as *const i32).cast(),
            std::mem::size_of::<i32>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

/// libzmq's MAXMSGSIZE disconnects an over-size sender without a word, so
/// it is set well above the protocol's limit: frames in between get the
/// `too_large` reply, and only absurd ones cost the sender its connection.
fn hard_size_limit(max_message_bytes: usize) -> i64 {
    (max_message_bytes as i64)
        .saturating_mul(4)
        .max(max_message_bytes as i64 + 4096)
}

fn make_socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    var: &str,
    configure: impl FnOnce(&zmq::Socket) -> zmq::Result<()>,
) -> Result<zmq::Socket, Error> {
    let socket = ctx
        .socket(kind)
        .map_err(|e| Error::setup(format!("creating the socket for {var}"), e))?;
    configure(&socket).map_err(|e| Error::setup(format!("configuring the socket for {var}"), e))?;
    Ok(socket)
}

fn bind(socket: &zmq::Socket, var: &str, endpoint: &str) -> Result<(), Error> {
    socket.bind(endpoint).map_err(|source| Error::Bind {
        var: var.to_string(),
        endpoint: endpoint.to_string(),
        source,
    })
}

/// The endpoint a socket actually bound (wildcard ports resolved).
fn bound_endpoint(socket: &zmq::Socket) -> String {
    match socket.get_last_endpoint() {
        Ok(Ok(endpoint)) => endpoint,
        _ => "?".to_string(),
    }
}

/// The start-up line tests and tools parse to learn the bound endpoints.
fn ready_line(sockets: &Sockets, config: &RouterConfig) -> String {
    let sinks: Vec<String> = config
        .sinks
        .iter()
        .zip(&sockets.sinks)
        .map(|(sink, socket)| format!("{}={}", sink.kind, bound_endpoint(socket)))
        .collect();
    format!(
        "ready: client={} backend={} sinks={}",
        bound_endpoint(&sockets.client),
        bound_endpoint(&sockets.backend),
        sinks.join(",")
    )
}
