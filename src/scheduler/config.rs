//! `vigil scheduler`'s configuration: `VIGIL_*` variables validated into
//! plain data, logged once at start.
//!
//! The parsing of the variables the scheduler shares with `vigil status`
//! (`VIGIL_DB`, `VIGIL_BACKENDS`, `VIGIL_HEARTBEAT_GRACE`,
//! `VIGIL_BACKEND_TIMEOUT_MS`) lives here too, so both read them alike.

use crate::config::{ConfigError, Env};
use crate::store::Target;
use std::time::Duration;

pub const DEFAULT_DB: &str = "/var/lib/vigil/vigil.db";
pub const DEFAULT_BACKENDS: &str = "tcp://127.0.0.1:5556";

#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// The store (`VIGIL_DB`).
    pub db: Target,
    /// Every router's back-end endpoint (`VIGIL_BACKENDS`).
    pub backends: Vec<String>,
    /// A client is schedulable while its last heartbeat is younger than
    /// its heartbeat interval times this (`VIGIL_HEARTBEAT_GRACE`).
    pub heartbeat_grace: f64,
    /// How long a lease lasts unless renewed (`VIGIL_LEASE_SECS`).
    pub lease: Duration,
    /// Added to a plugin's timeout before its run is overdue
    /// (`VIGIL_RESULT_GRACE_SECS`).
    pub result_grace_secs: f64,
    /// This scheduler's name in the lease (`VIGIL_SCHEDULER_ID`).
    pub id: String,
    /// How long to wait for one router's reply (`VIGIL_BACKEND_TIMEOUT_MS`).
    pub backend_timeout: Duration,
    /// How often the declared plugins and client liveness are re-read
    /// (`VIGIL_SCHEDULER_RELOAD_MS`).
    pub reload: Duration,
    /// A plugin's timeout when its registration gave none
    /// (`VIGIL_DEFAULT_TIMEOUT_SECS`).
    pub default_timeout_secs: f64,
    /// Finished runs older than this are deleted (`VIGIL_RUNS_KEEP_SECS`).
    pub runs_keep_secs: f64,
    /// `VIGIL_CURVE_KEY` + `VIGIL_ROUTER_KEY`: CURVE to the back ends.
    pub keys: Option<crate::curve::ClientKeys>,
}

impl SchedulerConfig {
    pub fn from_env(env: &Env) -> Result<SchedulerConfig, ConfigError> {
        Ok(SchedulerConfig {
            db: db_path(env)?,
            backends: backends(env)?,
            heartbeat_grace: heartbeat_grace(env)?,
            lease: Duration::from_secs(env.int("VIGIL_LEASE_SECS", 15, 1, 3_600)?),
            result_grace_secs: env.int("VIGIL_RESULT_GRACE_SECS", 30u32, 0, 86_400)? as f64,
            id: scheduler_id(env)?,
            backend_timeout: backend_timeout(env)?,
            reload: Duration::from_millis(env.int(
                "VIGIL_SCHEDULER_RELOAD_MS",
                5_000,
                100,
                3_600_000,
            )?),
            default_timeout_secs: env.int("VIGIL_DEFAULT_TIMEOUT_SECS", 60u32, 1, 86_400)? as f64,
            runs_keep_secs: env.int("VIGIL_RUNS_KEEP_SECS", 86_400u32, 60, 365 * 86_400)? as f64,
            keys: crate::curve::client_keys(env)?,
        })
    }

    /// How late a due run may still be sent: long enough to cover a lease
    /// handover (a lapsed lease plus a standby's check), so a takeover
    /// catches up the runs that fell in the gap; any later and the run waits
    /// for its next slot, so a scheduler back from a long outage does not
    /// fire every plugin at once.
    pub fn catch_up_secs(&self) -> f64 {
        2.0 * self.lease.as_secs_f64() + self.reload.as_secs_f64()
    }
}

/// `VIGIL_DB`: the store, a SQLite file or a PostgreSQL URL.
pub fn db_path(env: &Env) -> Result<Target, ConfigError> {
    Target::from_env(env, DEFAULT_DB)
}

/// `VIGIL_BACKENDS`: a comma list of ZeroMQ endpoints, at least one.
pub fn backends(env: &Env) -> Result<Vec<String>, ConfigError> {
    env.endpoints("VIGIL_BACKENDS", DEFAULT_BACKENDS)
}

pub use crate::config::heartbeat_grace;

/// `VIGIL_BACKEND_TIMEOUT_MS`: how long one router may take to answer.
pub fn backend_timeout(env: &Env) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(env.int(
        "VIGIL_BACKEND_TIMEOUT_MS",
        2_000,
        10,
        600_000,
    )?))
}

/// `VIGIL_SCHEDULER_ID`, defaulting to `hostname:pid`, which tells apart
/// two schedulers on one host and a restarted one from its former self.
fn scheduler_id(env: &Env) -> Result<String, ConfigError> {
    const VAR: &str = "VIGIL_SCHEDULER_ID";
    match env.get(VAR) {
        Some(id) if id.len() <= 200 && !id.contains(char::is_control) => Ok(id.to_string()),
        Some(id) => Err(ConfigError::new(
            VAR,
            id,
            "expected at most 200 characters, no control characters",
        )),
        None => Ok(format!("{}:{}", hostname(), std::process::id())),
    }
}

fn hostname() -> String {
    crate::config::system_hostname().unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = SchedulerConfig::from_env(&Env::from_pairs([])).unwrap();
        assert_eq!(config.db, Target::Sqlite(DEFAULT_DB.into()));
        assert_eq!(config.backends, vec![DEFAULT_BACKENDS.to_string()]);
        assert_eq!(config.heartbeat_grace, 3.0);
        assert_eq!(config.lease, Duration::from_secs(15));
        assert!(config.id.ends_with(&format!(":{}", std::process::id())));
    }

    #[test]
    fn backends_are_a_comma_list_of_endpoints() {
        let env = Env::from_pairs([("VIGIL_BACKENDS", "tcp://a:1, tcp://b:2,")]);
        assert_eq!(backends(&env).unwrap(), vec!["tcp://a:1", "tcp://b:2"]);
        let env = Env::from_pairs([("VIGIL_BACKENDS", "tcp://a:1,localhost:2")]);
        let err = backends(&env).unwrap_err();
        assert_eq!(err.var, "VIGIL_BACKENDS");
        let env = Env::from_pairs([("VIGIL_BACKENDS", ",")]);
        assert!(backends(&env).is_err());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("VIGIL_HEARTBEAT_GRACE", "0"),
            ("VIGIL_HEARTBEAT_GRACE", "NaN"),
            ("VIGIL_LEASE_SECS", "0"),
            ("VIGIL_RESULT_GRACE_SECS", "-1"),
            ("VIGIL_BACKEND_TIMEOUT_MS", "x"),
            ("VIGIL_SCHEDULER_RELOAD_MS", "5"),
            ("VIGIL_SCHEDULER_ID", "a\nb"),
            ("VIGIL_DB", "postgresql://"),
        ] {
            let err = SchedulerConfig::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{value:?}");
        }
        let env = Env::from_pairs([("VIGIL_HEARTBEAT_GRACE", "1.5")]);
        assert_eq!(heartbeat_grace(&env).unwrap(), 1.5);
    }
}
