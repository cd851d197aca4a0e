//! `vigil router`'s configuration: `VIGIL_*` variables validated into plain
//! data, logged once at start.

use super::auth::AuthConfig;
use crate::config::{ConfigError, Env};
use std::time::Duration;

pub const DEFAULT_SINK_BINDS: &str = "heartbeat=tcp://*:5561,stats=tcp://*:5562,\
registration=tcp://*:5563,notification=tcp://*:5564,result=tcp://*:5565";

/// One sink type and the endpoint its PUSH socket binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkBind {
    pub kind: String,
    pub endpoint: String,
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub client_bind: String,
    pub backend_bind: String,
    pub sinks: Vec<SinkBind>,
    pub name: String,
    pub max_message_bytes: usize,
    pub io_threads: i32,
    pub queue_capacity: usize,
    /// Longest time the client thread stops reading input while a type's
    /// queue is full, before that type is answered `overloaded`.
    pub overload_wait: Duration,
    pub client_hwm: i32,
    pub client_sndhwm: i32,
    pub sink_hwm: i32,
    pub client_ttl_secs: u64,
    pub max_clients: usize,
    pub zmtp_heartbeat_ms: i32,
    pub zmtp_heartbeat_timeout_ms: i32,
    pub stats_interval: Option<Duration>,
    pub drain: Duration,
    /// CURVE on every socket, with the key files: `VIGIL_CURVE_KEY` and
    /// the variables of `auth.rs`. `None`: plaintext.
    pub curve: Option<AuthConfig>,
}

impl RouterConfig {
    pub fn from_env(env: &Env) -> Result<RouterConfig, ConfigError> {
        let heartbeat_ms = env.int("VIGIL_ZMTP_HEARTBEAT_MS", 5_000, 0, 3_600_000)?;
        let stats_secs = env.int("VIGIL_STATS_INTERVAL_SECS", 60u64, 0, 86_400)?;
        Ok(RouterConfig {
            client_bind: endpoint(env, "VIGIL_CLIENT_BIND", "tcp://*:5555")?,
            backend_bind: endpoint(env, "VIGIL_BACKEND_BIND", "tcp://*:5556")?,
            sinks: parse_sink_binds(env)?,
            name: router_name(env)?,
            max_message_bytes: env.int("VIGIL_MAX_MESSAGE_BYTES", 65_536, 64, 16 << 20)?,
            io_threads: env.int("VIGIL_IO_THREADS", 1, 1, 64)?,
            queue_capacity: env.int("VIGIL_QUEUE_CAPACITY", 4_096, 1, 10_000_000)?,
            overload_wait: Duration::from_millis(env.int(
                "VIGIL_OVERLOAD_WAIT_MS",
                1_000,
                0,
                600_000,
            )?),
            client_hwm: env.int("VIGIL_CLIENT_HWM", 1_000, 1, 10_000_000)?,
            client_sndhwm: env.int("VIGIL_CLIENT_SNDHWM", 1_000, 1, 10_000_000)?,
            sink_hwm: env.int("VIGIL_SINK_HWM", 10_000, 1, 10_000_000)?,
            client_ttl_secs: env.int("VIGIL_CLIENT_TTL_SECS", 900, 1, 365 * 86_400)?,
            max_clients: env.int("VIGIL_MAX_CLIENTS", 100_000, 1, 10_000_000)?,
            zmtp_heartbeat_ms: heartbeat_ms,
            zmtp_heartbeat_timeout_ms: env.int(
                "VIGIL_ZMTP_HEARTBEAT_TIMEOUT_MS",
                heartbeat_ms.saturating_mul(3).max(1),
                1,
                3_600_000,
            )?,
            stats_interval: (stats_secs > 0).then(|| Duration::from_secs(stats_secs)),
            drain: Duration::from_millis(env.int("VIGIL_DRAIN_MS", 2_000, 0, 600_000)?),
            curve: AuthConfig::from_env(env)?,
        })
    }

    /// The configured sink type names, in index order.
    pub fn sink_types(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.kind.clone()).collect()
    }
}

/// A ZeroMQ endpoint: `transport://address`. libzmq has the last word when
/// binding; this catches what is plainly not an endpoint with a clear line.
fn endpoint(env: &Env, var: &str, default: &str) -> Result<String, ConfigError> {
    let value = env.string(var, default);
    check_endpoint(var, &value)?;
    Ok(value)
}

fn check_endpoint(var: &str, value: &str) -> Result<(), ConfigError> {
    let ok = ["tcp://", "ipc://", "inproc://"]
        .iter()
        .any(|t| value.starts_with(t) && value.len() > t.len());
    if ok && !value.contains(char::is_whitespace) {
        return Ok(());
    }
    Err(ConfigError::new(
        var,
        value,
        "expected a ZeroMQ endpoint such as tcp://*:5555 or ipc:///run/vigil/router",
    ))
}

/// `VIGIL_SINK_BINDS`: `type=endpoint` pairs, comma-separated.
fn parse_sink_binds(env: &Env) -> Result<Vec<SinkBind>, ConfigError> {
    const VAR: &str = "VIGIL_SINK_BINDS";
    let raw = env.string(VAR, DEFAULT_SINK_BINDS);
    let fail = |reason: String| ConfigError::new(VAR, &raw, reason);
    let mut sinks: Vec<SinkBind> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kind, endpoint) = item
            .split_once('=')
            .ok_or_else(|| fail(format!("{item:?} is not type=endpoint")))?;
        let (kind, endpoint) = (kind.trim(), endpoint.trim());
        if !valid_type_name(kind) {
            return Err(fail(format!(
                "type {kind:?} must be 1-64 characters of a-z, 0-9, _ or - and not hello"
            )));
        }
        if sinks.iter().any(|s| s.kind == kind) {
            return Err(fail(format!("type {kind:?} is listed twice")));
        }
        check_endpoint(VAR, endpoint).map_err(|e| fail(format!("{kind}: {}", e.reason)))?;
        sinks.push(SinkBind {
            kind: kind.to_string(),
            endpoint: endpoint.to_string(),
        });
    }
    if sinks.is_empty() {
        return Err(fail("no sink type configured".to_string()));
    }
    Ok(sinks)
}

fn valid_type_name(kind: &str) -> bool {
    let chars_ok = kind
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    chars_ok && !kind.is_empty() && kind.len() <= 64 && kind != crate::protocol::HELLO
}

/// `VIGIL_ROUTER_NAME`, defaulting to the machine's hostname.
fn router_name(env: &Env) -> Result<String, ConfigError> {
    const VAR: &str = "VIGIL_ROUTER_NAME";
    let name = match env.get(VAR) {
        Some(name) => name.to_string(),
        None => hostname(),
    };
    if name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ConfigError::new(
            VAR,
            &name,
            "must be at most 255 printable characters",
        ));
    }
    Ok(name)
}

fn hostname() -> String {
    crate::config::system_hostname().unwrap_or_else(|| "vigil-router".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_protocol() {
        let c = RouterConfig::from_env(&Env::default()).unwrap();
        assert_eq!(c.client_bind, "tcp://*:5555");
        assert_eq!(c.backend_bind, "tcp://*:5556");
        assert_eq!(
            c.sink_types(),
            [
                "heartbeat",
                "stats",
                "registration",
                "notification",
                "result"
            ]
        );
        assert_eq!(c.sinks[4].endpoint, "tcp://*:5565");
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.zmtp_heartbeat_timeout_ms, 15_000);
        assert!(!c.name.is_empty());
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases = [
            ("VIGIL_SINK_BINDS", "stats"),
            ("VIGIL_SINK_BINDS", "Stats=tcp://*:1"),
            ("VIGIL_SINK_BINDS", "hello=tcp://*:1"),
            ("VIGIL_SINK_BINDS", "a=tcp://*:1,a=tcp://*:2"),
            ("VIGIL_SINK_BINDS", "a=nowhere"),
            ("VIGIL_SINK_BINDS", ","),
            ("VIGIL_CLIENT_BIND", "5555"),
            ("VIGIL_MAX_MESSAGE_BYTES", "big"),
            ("VIGIL_IO_THREADS", "0"),
            ("VIGIL_DRAIN_MS", "-1"),
            ("VIGIL_OVERLOAD_WAIT_MS", "soon"),
            ("VIGIL_OVERLOAD_WAIT_MS", "600001"),
        ];
        for (var, value) in cases {
            let err = RouterConfig::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{value}");
        }
    }

    #[test]
    fn custom_sink_types() {
        let env = Env::from_pairs([(
            "VIGIL_SINK_BINDS",
            " audit = ipc:///tmp/a , stats=tcp://*:9 ",
        )]);
        let c = RouterConfig::from_env(&env).unwrap();
        assert_eq!(c.sink_types(), ["audit", "stats"]);
        assert_eq!(c.sinks[0].endpoint, "ipc:///tmp/a");
    }
}
