//! `vigil sink`'s configuration: the command line's type(s) and the
//! `VIGIL_*` variables, validated into plain data that is logged once at
//! start.

use crate::config::{ConfigError, Env};
use crate::protocol::{ClientMessage, Heartbeat, Notification, PluginResult, Registration, Stats};
use crate::store::Target;
use std::fmt;
use std::time::Duration;

/// The five message types of PROTOCOL.md, each with its own sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SinkType {
    Heartbeat,
    Stats,
    Registration,
    Notification,
    Result,
}

impl SinkType {
    pub const ALL: [SinkType; 5] = [
        SinkType::Heartbeat,
        SinkType::Stats,
        SinkType::Registration,
        SinkType::Notification,
        SinkType::Result,
    ];

    /// The message `type` this sink takes, as the protocol's types spell it.
    pub fn name(self) -> &'static str {
        match self {
            SinkType::Heartbeat => Heartbeat::TYPE,
            SinkType::Stats => Stats::TYPE,
            SinkType::Registration => Registration::TYPE,
            SinkType::Notification => Notification::TYPE,
            SinkType::Result => PluginResult::TYPE,
        }
    }

    pub fn parse(name: &str) -> Option<SinkType> {
        SinkType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The protocol's default PUSH port of this type on a router.
    fn default_port(self) -> u16 {
        match self {
            SinkType::Heartbeat => 5561,
            SinkType::Stats => 5562,
            SinkType::Registration => 5563,
            SinkType::Notification => 5564,
            SinkType::Result => 5565,
        }
    }
}

impl fmt::Display for SinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `VIGIL_SINK_CONNECT`'s default: the five protocol ports on localhost.
pub fn default_connect() -> String {
    SinkType::ALL
        .iter()
        .map(|t| format!("{}=tcp://127.0.0.1:{}", t.name(), t.default_port()))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// The types this process runs, in protocol order.
    pub types: Vec<SinkType>,
    /// Every router endpoint of each type this process runs.
    pub connect: Vec<(SinkType, Vec<String>)>,
    /// Every router's back-end endpoint, for acks.
    pub backends: Vec<String>,
    /// The store (`VIGIL_DB`): a SQLite file or a PostgreSQL URL.
    pub db: Target,
    /// A client is down after `grace × interval_s` without a heartbeat.
    pub heartbeat_grace: f64,
    /// How often the heartbeat sink looks for silent clients.
    pub sweep: Duration,
    /// How long an ack waits for one router's reply before the next.
    pub ack_timeout: Duration,
    /// Most messages handed from a PULL thread to its worker at once.
    pub batch_max: usize,
    /// Batches waiting for a worker; when full the PULL thread stops
    /// reading, and the router's queue takes the backlog.
    pub queue_batches: usize,
    /// First and longest wait between outbox attempts of a notification.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How often the outbox looks for notifications other processes raised.
    pub outbox_poll: Duration,
    /// How long one outbox attempt holds a notification before another
    /// process may take it over.
    pub handler_lease: Duration,
    /// How long handled ids are remembered for dropping duplicates.
    pub dedup_retention: Duration,
    pub stats_interval: Option<Duration>,
    /// Recent metric samples kept in the store for `vigil web`; `None`
    /// when `VIGIL_METRICS_RETENTION_RAW_SECS=0`.
    pub metrics: Option<MetricsRetention>,
    /// Shutdown's bound on flushing Graphite and pending acks.
    pub drain: Duration,
    /// `VIGIL_CURVE_KEY` + `VIGIL_ROUTER_KEY`: the PULL and ack sockets
    /// are CURVE clients of the routers.
    pub keys: Option<crate::curve::ClientKeys>,
}

impl SinkConfig {
    /// `args`: the words after `vigil sink` (one type, several, or `all`).
    pub fn from_args_env(args: &[String], env: &Env) -> Result<SinkConfig, ArgsOrConfig> {
        let types = parse_types(args).map_err(ArgsOrConfig::Usage)?;
        SinkConfig::from_env(types, env).map_err(ArgsOrConfig::Config)
    }

    pub fn from_env(types: Vec<SinkType>, env: &Env) -> Result<SinkConfig, ConfigError> {
        let ms = |var: &str, default: u64, min: u64, max: u64| {
            env.int(var, default, min, max).map(Duration::from_millis)
        };
        let stats_secs = env.int("VIGIL_STATS_INTERVAL_SECS", 60u64, 0, 86_400)?;
        let retry_min = ms("VIGIL_NOTIFY_RETRY_MS", 5_000, 10, 86_400_000)?;
        let retry_max = ms("VIGIL_NOTIFY_RETRY_MAX_MS", 600_000, 10, 86_400_000)?;
        if retry_max < retry_min {
            return Err(ConfigError::new(
                "VIGIL_NOTIFY_RETRY_MAX_MS",
                env.get("VIGIL_NOTIFY_RETRY_MAX_MS").unwrap_or("600000"),
                "must not be below VIGIL_NOTIFY_RETRY_MS",
            ));
        }
        Ok(SinkConfig {
            connect: parse_connect(env, &types)?,
            types,
            backends: env.endpoints("VIGIL_BACKENDS", "tcp://127.0.0.1:5556")?,
            db: Target::from_env(env, crate::scheduler::config::DEFAULT_DB)?,
            heartbeat_grace: crate::config::heartbeat_grace(env)?,
            sweep: ms("VIGIL_HEARTBEAT_SWEEP_MS", 1_000, 10, 3_600_000)?,
            ack_timeout: ms("VIGIL_ACK_TIMEOUT_MS", 2_000, 10, 600_000)?,
            batch_max: env.int("VIGIL_SINK_BATCH", 500, 1, 100_000)?,
            queue_batches: env.int("VIGIL_SINK_QUEUE", 16, 1, 100_000)?,
            retry_min,
            retry_max,
            outbox_poll: ms("VIGIL_OUTBOX_POLL_MS", 1_000, 10, 3_600_000)?,
            handler_lease: Duration::from_secs(env.int(
                "VIGIL_NOTIFY_LEASE_SECS",
                600,
                1,
                86_400,
            )?),
            dedup_retention: Duration::from_secs(
                86_400 * env.int("VIGIL_DEDUP_RETENTION_DAYS", 30, 1, 3_650)?,
            ),
            stats_interval: (stats_secs > 0).then(|| Duration::from_secs(stats_secs)),
            metrics: MetricsRetention::from_env(env)?,
            drain: ms("VIGIL_DRAIN_MS", 2_000, 0, 600_000)?,
            keys: crate::curve::client_keys(env)?,
        })
    }

    /// The endpoints of `kind`'s routers.
    pub fn endpoints(&self, kind: SinkType) -> &[String] {
        self.connect
            .iter()
            .find(|(t, _)| *t == kind)
            .map(|(_, e)| e.as_slice())
            .unwrap_or(&[])
    }

    pub fn runs(&self, kind: SinkType) -> bool {
        self.types.contains(&kind)
    }
}

/// How long the store keeps metric samples (`store::metrics`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsRetention {
    /// Every sample, for this long (`VIGIL_METRICS_RETENTION_RAW_SECS`).
    pub raw: Duration,
    /// One-minute averages, for this long
    /// (`VIGIL_METRICS_RETENTION_MINUTE_SECS`).
    pub minute: Duration,
    /// How often older samples are folded and expired
    /// (`VIGIL_METRICS_ROLLUP_SECS`).
    pub rollup_every: Duration,
}

impl MetricsRetention {
    pub fn from_env(env: &Env) -> Result<Option<MetricsRetention>, ConfigError> {
        let raw = env.int("VIGIL_METRICS_RETENTION_RAW_SECS", 3_600u64, 0, 7 * 86_400)?;
        let minute = env.int(
            "VIGIL_METRICS_RETENTION_MINUTE_SECS",
            86_400u64,
            0,
            31 * 86_400,
        )?;
        let every = env.int("VIGIL_METRICS_ROLLUP_SECS", 60u64, 1, 3_600)?;
        Ok((raw > 0).then(|| MetricsRetention {
            raw: Duration::from_secs(raw),
            minute: Duration::from_secs(minute),
            rollup_every: Duration::from_secs(every),
        }))
    }
}

/// The two ways starting can fail before anything runs.
#[derive(Debug)]
pub enum ArgsOrConfig {
    Usage(String),
    Config(ConfigError),
}

pub const USAGE: &str = "usage: vigil sink TYPE... | all

TYPE is heartbeat, stats, registration, notification or result; `all` runs
the five in one process. Configured by VIGIL_* variables; see README.md.";

/// `heartbeat`, `stats result`, `all`...: the types in protocol order.
fn parse_types(args: &[String]) -> Result<Vec<SinkType>, String> {
    if args.is_empty() {
        return Err(format!("missing sink type\n{USAGE}"));
    }
    let mut types = Vec::new();
    for arg in args {
        match arg.as_str() {
            "all" => types.extend(SinkType::ALL),
            name => types.push(
                SinkType::parse(name)
                    .ok_or_else(|| format!("unknown sink type {name:?}\n{USAGE}"))?,
            ),
        }
    }
    types.sort();
    types.dedup();
    Ok(types)
}

/// `VIGIL_SINK_CONNECT`: `type=endpoint` pairs; a type repeats once per
/// router. Every type this process runs needs at least one; pairs for other
/// types are allowed (one file can serve several sink processes).
fn parse_connect(
    env: &Env,
    types: &[SinkType],
) -> Result<Vec<(SinkType, Vec<String>)>, ConfigError> {
    const VAR: &str = "VIGIL_SINK_CONNECT";
    let raw = env.string(VAR, &default_connect());
    let fail = |reason: String| ConfigError::new(VAR, &raw, reason);
    let mut connect: Vec<(SinkType, Vec<String>)> = types.iter().map(|t| (*t, vec![])).collect();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, endpoint) = item
            .split_once('=')
            .ok_or_else(|| fail(format!("{item:?} is not type=endpoint")))?;
        let kind = SinkType::parse(name.trim())
            .ok_or_else(|| fail(format!("unknown sink type {:?}", name.trim())))?;
        let endpoint = endpoint.trim();
        if !crate::config::is_endpoint(endpoint) {
            return Err(fail(format!("{endpoint:?} is not a ZeroMQ endpoint")));
        }
        if let Some((_, list)) = connect.iter_mut().find(|(t, _)| *t == kind) {
            if !list.iter().any(|e| e == endpoint) {
                list.push(endpoint.to_string());
            }
        }
    }
    if let Some((kind, _)) = connect.iter().find(|(_, list)| list.is_empty()) {
        return Err(fail(format!("no endpoint for type {kind}")));
    }
    Ok(connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_match_the_protocol() {
        let c = SinkConfig::from_env(SinkType::ALL.to_vec(), &Env::default()).unwrap();
        assert_eq!(c.endpoints(SinkType::Stats), ["tcp://127.0.0.1:5562"]);
        assert_eq!(c.endpoints(SinkType::Result), ["tcp://127.0.0.1:5565"]);
        assert_eq!(c.backends, ["tcp://127.0.0.1:5556"]);
        assert_eq!(c.db, Target::Sqlite("/var/lib/vigil/vigil.db".into()));
        assert_eq!(c.heartbeat_grace, 3.0);
    }

    #[test]
    fn types_from_the_command_line() {
        assert_eq!(parse_types(&args(&["all"])).unwrap(), SinkType::ALL);
        assert_eq!(
            parse_types(&args(&["result", "stats", "result"])).unwrap(),
            [SinkType::Stats, SinkType::Result]
        );
        assert!(parse_types(&args(&["email"])).is_err());
        assert!(parse_types(&[]).is_err());
    }

    #[test]
    fn connect_lists_every_router_per_type() {
        let env = Env::from_pairs([(
            "VIGIL_SINK_CONNECT",
            "stats=tcp://a:1, stats=tcp://b:1,heartbeat=tcp://a:2",
        )]);
        let c = SinkConfig::from_env(vec![SinkType::Stats], &env).unwrap();
        assert_eq!(c.endpoints(SinkType::Stats), ["tcp://a:1", "tcp://b:1"]);
        let err = SinkConfig::from_env(vec![SinkType::Result], &env).unwrap_err();
        assert_eq!(err.var, "VIGIL_SINK_CONNECT");
        assert!(err.reason.contains("result"), "{err}");
        let env = Env::from_pairs([("VIGIL_SINK_CONNECT", "stats=localhost:1")]);
        assert!(SinkConfig::from_env(vec![SinkType::Stats], &env).is_err());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("VIGIL_HEARTBEAT_GRACE", "0"),
            ("VIGIL_HEARTBEAT_GRACE", "lots"),
            ("VIGIL_BACKENDS", "nowhere"),
            ("VIGIL_SINK_BATCH", "0"),
            ("VIGIL_NOTIFY_RETRY_MAX_MS", "20"),
            ("VIGIL_METRICS_RETENTION_RAW_SECS", "-1"),
            ("VIGIL_METRICS_ROLLUP_SECS", "0"),
            ("VIGIL_DB", "postgres://u@h:port/d"),
        ] {
            let env = Env::from_pairs([(var, value)]);
            let err = SinkConfig::from_env(vec![SinkType::Stats], &env).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
        let env = Env::from_pairs([("VIGIL_HEARTBEAT_GRACE", "2.5")]);
        let c = SinkConfig::from_env(vec![SinkType::Heartbeat], &env).unwrap();
        assert_eq!(c.heartbeat_grace, 2.5);
    }
}
