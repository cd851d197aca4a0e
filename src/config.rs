//! Reading `VIGIL_*` configuration from the environment.
//!
//! Configuration is read in two steps: the raw strings are captured once into
//! an [`Env`] (a plain map, so tests need no process environment), then each
//! subcommand validates them into its own typed config. Every failure is a
//! [`ConfigError`] that names the variable, so the one-line message a user
//! sees at start-up says exactly what to fix.
//!
//! An empty value means the same as an unset one: the default applies. That
//! is what `VAR=` in a systemd `EnvironmentFile` most often intends.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// The raw `VIGIL_*` variables, captured once at start.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

/// Names only: some values (`VIGIL_DB`'s URL) may carry a password.
impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env").field("set", &names).finish()
    }
}

/// A configuration variable that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable's name, e.g. `VIGIL_CLIENT_BIND`.
    pub var: String,
    /// The value as given.
    pub value: String,
    /// Why it was refused, as a sentence fragment.
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            var: var.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.var, self.value, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Env {
    /// Captures every `VIGIL_*` variable of this process. A value that is
    /// not valid UTF-8 is an error naming the variable.
    pub fn from_process() -> Result<Env, ConfigError> {
        let mut vars = HashMap::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if !key.starts_with("VIGIL_") {
                continue;
            }
            let value = value
                .into_string()
                // Not echoed: the value may be a secret (a URL's password).
                .map_err(|v| {
                    let shown = format!("<{} bytes, not shown>", v.len());
                    ConfigError::new(key, &shown, "not valid UTF-8")
                })?;
            vars.insert(key.to_string(), value);
        }
        Ok(Env { vars })
    }

    /// An environment made of the given pairs, for tests.
    #[cfg(test)]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env { vars }
    }

    /// The value of `var`, or `None` when it is unset or empty.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The string value of `var`, or `default`.
    pub fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or(default).to_string()
    }

    /// An integer in `min..=max`, or `default` when unset.
    pub fn int<T>(&self, var: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        let range = || format!("expected an integer from {min} to {max}");
        let value: T = raw
            .parse()
            .map_err(|_| ConfigError::new(var, raw, range()))?;
        if value < min || value > max {
            return Err(ConfigError::new(var, raw, range()));
        }
        Ok(value)
    }

    /// A number in `(above, max]`, fractions allowed, or `default` when
    /// unset.
    pub fn number(
        &self,
        var: &str,
        default: f64,
        above: f64,
        max: f64,
    ) -> Result<f64, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        match raw.parse::<f64>() {
            Ok(v) if v.is_finite() && v > above && v <= max => Ok(v),
            _ => Err(ConfigError::new(
                var,
                raw,
                format!("expected a number above {above} and at most {max}"),
            )),
        }
    }

    /// A comma-separated list of ZeroMQ endpoints to connect to, at least
    /// one, or `default` when unset.
    pub fn endpoints(&self, var: &str, default: &str) -> Result<Vec<String>, ConfigError> {
        let raw = self.string(var, default);
        let list: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if list.is_empty() {
            return Err(ConfigError::new(
                var,
                &raw,
                "expected at least one endpoint",
            ));
        }
        if let Some(bad) = list.iter().find(|e| !is_endpoint(e)) {
            return Err(ConfigError::new(
                var,
                &raw,
                format!("{bad:?} is not a ZeroMQ endpoint such as tcp://host:5556"),
            ));
        }
        Ok(list)
    }
}

/// What plainly is a ZeroMQ endpoint to connect to; libzmq has the last
/// word when connecting.
pub fn is_endpoint(value: &str) -> bool {
    ["tcp://", "ipc://", "inproc://"]
        .iter()
        .any(|t| value.starts_with(t) && value.len() > t.len())
        && !value.contains(char::is_whitespace)
}

/// `VIGIL_HEARTBEAT_GRACE`: after how many of its heartbeat intervals a
/// silent client is down. Read by the heartbeat sink and the scheduler,
/// which must agree.
pub fn heartbeat_grace(env: &Env) -> Result<f64, ConfigError> {
    env.number("VIGIL_HEARTBEAT_GRACE", 3.0, 0.0, 1_000.0)
}

/// This machine's host name, when the kernel or /etc/hostname gives one.
pub fn system_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists() {
        let env = Env::from_pairs([
            ("VIGIL_X", " tcp://a:1 , ipc:///run/x ,"),
            ("VIGIL_Y", "tcp://a:1,b:2"),
        ]);
        assert_eq!(
            env.endpoints("VIGIL_X", "tcp://d:1").unwrap(),
            ["tcp://a:1", "ipc:///run/x"]
        );
        assert_eq!(
            env.endpoints("VIGIL_Z", "tcp://d:1").unwrap(),
            ["tcp://d:1"]
        );
        let err = env.endpoints("VIGIL_Y", "").unwrap_err();
        assert_eq!(err.var, "VIGIL_Y");
        assert!(err.reason.contains("\"b:2\""), "{err}");
        assert!(Env::from_pairs([("VIGIL_X", ",")])
            .endpoints("VIGIL_X", "")
            .is_err());
    }

    #[test]
    fn numbers_with_fractions() {
        let env = Env::from_pairs([("VIGIL_A", "1.5"), ("VIGIL_B", "0"), ("VIGIL_C", "inf")]);
        assert_eq!(env.number("VIGIL_A", 3.0, 0.0, 10.0).unwrap(), 1.5);
        assert_eq!(env.number("VIGIL_D", 3.0, 0.0, 10.0).unwrap(), 3.0);
        assert!(env.number("VIGIL_B", 3.0, 0.0, 10.0).is_err());
        assert!(env.number("VIGIL_C", 3.0, 0.0, 10.0).is_err());
    }

    #[test]
    fn empty_means_default() {
        let env = Env::from_pairs([("VIGIL_X", "  ")]);
        assert_eq!(env.get("VIGIL_X"), None);
        assert_eq!(env.int("VIGIL_X", 7u32, 1, 10), Ok(7));
    }

    #[test]
    fn int_out_of_range_names_the_variable() {
        let env = Env::from_pairs([("VIGIL_X", "0")]);
        let err = env.int("VIGIL_X", 7u32, 1, 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VIGIL_X=\"0\": expected an integer from 1 to 10"
        );
    }

    #[test]
    fn int_garbage_is_refused() {
        let env = Env::from_pairs([("VIGIL_X", "12abc")]);
        assert!(env.int("VIGIL_X", 7u64, 0, 100).is_err());
    }
}
