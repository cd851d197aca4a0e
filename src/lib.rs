//! vigil, the library: every part of the system, each in its own module.
//!
//! The `vigil` binary (`src/main.rs`) only picks a subcommand and calls the
//! part's `command`/`run`; the benchmarks (`src/bench/`, the `vigil-bench`
//! binary) and the integration tests use these modules directly.
//! `docs/ARCHITECTURE.md` walks through the parts, their threads and the
//! channels between them.

pub mod agent;
pub mod backend_client;
pub mod clock;
pub mod config;
pub mod curve;
pub mod doorbell;
pub mod error;
pub mod fnv;
pub mod graphite;
pub mod json_scan;
pub mod notify;
pub mod process;
pub mod protocol;
pub mod rate_limit;
pub mod ready;
pub mod router;
pub mod scheduler;
pub mod send;
pub mod signals;
pub mod sink;
pub mod standalone;
pub mod status;
pub mod store;
pub mod supervisor;
#[doc(hidden)]
pub mod testkit;
pub mod web;
pub mod zmq_send;
