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
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
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
                .map_err(|v| ConfigError::new(key, &v.to_string_lossy(), "not valid UTF-8"))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
