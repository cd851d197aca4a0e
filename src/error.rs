//! The errors a subcommand can end with, and the exit status each means.
//!
//! Exit statuses are decided here alone: 0 ok, 2 bad configuration or a
//! start-up failure (bad variable, endpoint that cannot be bound), 1 a
//! failure at run time.

use crate::config::ConfigError;
use std::fmt;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A `VIGIL_*` variable could not be used.
    Config(ConfigError),
    /// A socket could not bind the endpoint a variable gave.
    Bind {
        var: String,
        endpoint: String,
        source: zmq::Error,
    },
    /// Setting up a socket, pipe or thread failed at start.
    Setup { what: String, reason: String },
    /// The command line was not understood.
    Usage(String),
    /// A thread of a running daemon died.
    ThreadsFailed(Vec<String>),
    /// The benchmark failed.
    Bench { usage: bool, message: String },
    /// The embedded store could not be opened or used.
    Store(crate::store::StoreError),
    /// A failure at run time, described.
    Runtime(String),
}

/// The arguments of a subcommand configured only by `VIGIL_*` variables:
/// `Ok(true)` when they asked for help (then printed: `usage`), `Ok(false)`
/// when there are none, a usage error (exit 2) for anything else.
pub fn help_or_no_args(args: &[String], usage: &str) -> Result<bool, Error> {
    match args.first().map(String::as_str) {
        None => Ok(false),
        Some("--help" | "-h") => {
            println!("{usage}");
            Ok(true)
        }
        Some(arg) => Err(Error::Usage(format!(
            "unexpected argument {arg:?} (configure with VIGIL_* variables)\n{usage}"
        ))),
    }
}

impl Error {
    pub fn setup(what: impl Into<String>, reason: impl fmt::Display) -> Error {
        Error::Setup {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Bind { .. } | Error::Setup { .. } | Error::Usage(_) => 2,
            Error::Bench { usage: true, .. } => 2,
            Error::ThreadsFailed(_) | Error::Bench { .. } | Error::Store(_) | Error::Runtime(_) => {
                1
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Bind {
                var,
                endpoint,
                source,
            } => write!(f, "{var}={endpoint:?}: cannot bind: {source}"),
            Error::Setup { what, reason } => write!(f, "{what}: {reason}"),
            Error::Usage(text) => write!(f, "{text}"),
            Error::ThreadsFailed(names) => {
                write!(f, "stopped after thread(s) failed: {}", names.join(", "))
            }
            Error::Bench { message, .. } => write!(f, "{message}"),
            Error::Store(e) => write!(f, "{e}"),
            Error::Runtime(text) => write!(f, "{text}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Error {
        Error::Store(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}
