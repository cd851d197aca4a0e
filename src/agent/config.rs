//! `vigil agent`'s configuration: `VIGIL_*` variables validated into plain
//! data, logged once at start. Every default is in the README's `vigil agent` section.

use crate::config::{ConfigError, Env};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_LOCAL: &str = "ipc:///run/vigil/agent.sock";

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    pub machine_id_file: PathBuf,
    pub hostname: String,
    pub routers: Vec<String>,
    pub heartbeat: Duration,
    pub local: String,
    pub statsd: Option<SocketAddr>,
    pub statsd_flush: Duration,
    pub plugin_dir: PathBuf,
    pub plugin_rescan: Option<Duration>,
    pub plugin_concurrency: usize,
    pub plugin_output_max: usize,
    pub spool_max_bytes: u64,
    pub queue_max: usize,
    pub resend_min: Duration,
    pub resend_max: Duration,
    pub reconnect_ms: i32,
    pub reconnect_max_ms: i32,
    pub zmtp_heartbeat_ms: i32,
    pub max_message_bytes: usize,
    pub stats_interval: Option<Duration>,
    pub drain: Duration,
}

impl AgentConfig {
    pub fn from_env(env: &Env) -> Result<AgentConfig, ConfigError> {
        let stats_secs = env.int("VIGIL_STATS_INTERVAL_SECS", 60u64, 0, 86_400)?;
        let resend_min = env.int("VIGIL_RESEND_MIN_MS", 5_000u64, 10, 3_600_000)?;
        let resend_max = env.int("VIGIL_RESEND_MAX_MS", 300_000u64, 10, 86_400_000)?;
        if resend_max < resend_min {
            let raw = resend_max.to_string();
            return Err(ConfigError::new(
                "VIGIL_RESEND_MAX_MS",
                &raw,
                "must be at least VIGIL_RESEND_MIN_MS",
            ));
        }
        let reconnect_ms = env.int("VIGIL_RECONNECT_MS", 1_000, 10, 3_600_000)?;
        let reconnect_max_ms = env.int("VIGIL_RECONNECT_MAX_MS", 30_000, 10, 3_600_000)?;
        Ok(AgentConfig {
            state_dir: PathBuf::from(env.string("VIGIL_STATE_DIR", "/var/lib/vigil/agent")),
            machine_id_file: PathBuf::from(env.string("VIGIL_MACHINE_ID_FILE", "/etc/machine-id")),
            hostname: hostname(env)?,
            routers: env.endpoints("VIGIL_ROUTERS", "tcp://127.0.0.1:5555")?,
            heartbeat: Duration::from_secs(env.int("VIGIL_HEARTBEAT_SECS", 30u64, 1, 86_400)?),
            local: local_endpoint(env)?,
            statsd: statsd_bind(env)?,
            statsd_flush: Duration::from_secs(env.int(
                "VIGIL_STATSD_FLUSH_SECS",
                10u64,
                1,
                3_600,
            )?),
            plugin_dir: PathBuf::from(env.string("VIGIL_PLUGIN_DIR", "/etc/vigil/plugins.d")),
            plugin_rescan: {
                let secs = env.int("VIGIL_PLUGIN_RESCAN_SECS", 30u64, 0, 86_400)?;
                (secs > 0).then(|| Duration::from_secs(secs))
            },
            plugin_concurrency: env.int("VIGIL_PLUGIN_CONCURRENCY", 4, 1, 256)?,
            plugin_output_max: env.int("VIGIL_PLUGIN_OUTPUT_MAX", 8_192, 256, 1 << 20)?,
            spool_max_bytes: env.int("VIGIL_SPOOL_MAX_BYTES", 64 << 20, 1_024, 1 << 40)?,
            queue_max: env.int("VIGIL_QUEUE_MAX", 10_000, 1, 10_000_000)?,
            resend_min: Duration::from_millis(resend_min),
            resend_max: Duration::from_millis(resend_max),
            reconnect_ms,
            reconnect_max_ms: reconnect_max_ms.max(reconnect_ms),
            zmtp_heartbeat_ms: env.int("VIGIL_ZMTP_HEARTBEAT_MS", 5_000, 0, 3_600_000)?,
            max_message_bytes: env.int("VIGIL_MAX_MESSAGE_BYTES", 65_536, 256, 16 << 20)?,
            stats_interval: (stats_secs > 0).then(|| Duration::from_secs(stats_secs)),
            drain: Duration::from_millis(env.int("VIGIL_DRAIN_MS", 2_000, 0, 600_000)?),
        })
    }
}

/// `VIGIL_AGENT_LOCAL`: ipc, or tcp on a loopback address. Anything else
/// would let other machines inject messages under this host's UUID, so it
/// needs `VIGIL_AGENT_LOCAL_ALLOW_REMOTE=1`.
fn local_endpoint(env: &Env) -> Result<String, ConfigError> {
    const VAR: &str = "VIGIL_AGENT_LOCAL";
    let value = env.string(VAR, DEFAULT_LOCAL);
    let allow_remote = env.int("VIGIL_AGENT_LOCAL_ALLOW_REMOTE", 0u8, 0, 1)? == 1;
    check_local(&value, allow_remote)
        .map_err(|reason| ConfigError::new(VAR, &value, reason.to_string()))?;
    Ok(value)
}

/// Why a `VIGIL_AGENT_LOCAL` endpoint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalEndpointError {
    Spaces,
    NoIpcPath,
    Scheme,
    NoPort,
    NotLoopback,
}

impl std::fmt::Display for LocalEndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LocalEndpointError::Spaces => "must not contain spaces",
            LocalEndpointError::NoIpcPath => "ipc:// needs a path",
            LocalEndpointError::Scheme => "expected ipc:///path or tcp://127.0.0.1:PORT",
            LocalEndpointError::NoPort => "tcp endpoint needs a port",
            LocalEndpointError::NotLoopback => {
                "not a loopback address; set VIGIL_AGENT_LOCAL_ALLOW_REMOTE=1 to accept other hosts"
            }
        })
    }
}

impl std::error::Error for LocalEndpointError {}

pub fn check_local(value: &str, allow_remote: bool) -> Result<(), LocalEndpointError> {
    if value.contains(char::is_whitespace) {
        return Err(LocalEndpointError::Spaces);
    }
    if let Some(path) = value.strip_prefix("ipc://") {
        return if path.is_empty() {
            Err(LocalEndpointError::NoIpcPath)
        } else {
            Ok(())
        };
    }
    let Some(addr) = value.strip_prefix("tcp://") else {
        return Err(LocalEndpointError::Scheme);
    };
    let host = match addr.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => return Err(LocalEndpointError::NoPort),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if loopback || allow_remote {
        Ok(())
    } else {
        Err(LocalEndpointError::NotLoopback)
    }
}

/// `VIGIL_STATSD_BIND`: `host:port` of the statsd UDP socket, or `off`.
fn statsd_bind(env: &Env) -> Result<Option<SocketAddr>, ConfigError> {
    const VAR: &str = "VIGIL_STATSD_BIND";
    let raw = env.string(VAR, "127.0.0.1:8125");
    if raw == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = raw.parse().map_err(|_| {
        ConfigError::new(VAR, &raw, "expected IP:PORT (e.g. 127.0.0.1:8125) or off")
    })?;
    let allow_remote = env.int("VIGIL_AGENT_LOCAL_ALLOW_REMOTE", 0u8, 0, 1)? == 1;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(ConfigError::new(
            VAR,
            &raw,
            "not a loopback address; set VIGIL_AGENT_LOCAL_ALLOW_REMOTE=1 to accept other hosts",
        ));
    }
    Ok(Some(addr))
}

/// `VIGIL_HOSTNAME`, defaulting to the machine's hostname.
fn hostname(env: &Env) -> Result<String, ConfigError> {
    const VAR: &str = "VIGIL_HOSTNAME";
    let name = match env.get(VAR) {
        Some(name) => name.to_string(),
        None => system_hostname(),
    };
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ConfigError::new(
            VAR,
            &name,
            "must be 1 to 255 printable characters",
        ));
    }
    Ok(name)
}

pub fn system_hostname() -> String {
    crate::config::system_hostname().unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = AgentConfig::from_env(&Env::default()).unwrap();
        assert_eq!(c.routers, ["tcp://127.0.0.1:5555"]);
        assert_eq!(c.local, DEFAULT_LOCAL);
        assert_eq!(c.statsd, Some("127.0.0.1:8125".parse().unwrap()));
        assert_eq!(c.heartbeat, Duration::from_secs(30));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/vigil/agent"));
    }

    #[test]
    fn local_endpoint_must_be_local() {
        assert!(check_local("ipc:///run/vigil/agent.sock", false).is_ok());
        assert!(check_local("tcp://127.0.0.1:7000", false).is_ok());
        assert!(check_local("tcp://[::1]:7000", false).is_ok());
        assert!(check_local("tcp://localhost:7000", false).is_ok());
        assert_eq!(
            check_local("tcp://*:7000", false),
            Err(LocalEndpointError::NotLoopback)
        );
        assert_eq!(
            check_local("tcp://10.0.0.1:7000", false),
            Err(LocalEndpointError::NotLoopback)
        );
        assert!(check_local("tcp://10.0.0.1:7000", true).is_ok());
        assert_eq!(
            check_local("ipc://", false),
            Err(LocalEndpointError::NoIpcPath)
        );
        assert_eq!(
            check_local("udp://x", false),
            Err(LocalEndpointError::Scheme)
        );
        assert_eq!(
            check_local("tcp://host", false),
            Err(LocalEndpointError::NoPort)
        );
        assert_eq!(
            check_local("ipc:// x", false),
            Err(LocalEndpointError::Spaces)
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases = [
            ("VIGIL_ROUTERS", "5555"),
            ("VIGIL_ROUTERS", ","),
            ("VIGIL_AGENT_LOCAL", "tcp://0.0.0.0:1"),
            ("VIGIL_STATSD_BIND", "8125"),
            ("VIGIL_STATSD_BIND", "0.0.0.0:8125"),
            ("VIGIL_HEARTBEAT_SECS", "0"),
            ("VIGIL_SPOOL_MAX_BYTES", "lots"),
            ("VIGIL_PLUGIN_CONCURRENCY", "0"),
        ];
        for (var, value) in cases {
            let err = AgentConfig::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{value}");
        }
        let env = Env::from_pairs([
            ("VIGIL_RESEND_MIN_MS", "500"),
            ("VIGIL_RESEND_MAX_MS", "100"),
        ]);
        assert_eq!(
            AgentConfig::from_env(&env).unwrap_err().var,
            "VIGIL_RESEND_MAX_MS"
        );
    }

    #[test]
    fn statsd_off_and_routers_list() {
        let env = Env::from_pairs([
            ("VIGIL_STATSD_BIND", "off"),
            ("VIGIL_ROUTERS", " tcp://a:1 , tcp://b:2 "),
        ]);
        let c = AgentConfig::from_env(&env).unwrap();
        assert_eq!(c.statsd, None);
        assert_eq!(c.routers, ["tcp://a:1", "tcp://b:2"]);
    }
}
