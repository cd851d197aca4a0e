//! vigil's integration tests, as one test binary (ripgrep's layout): every
//! part tested from the outside, with the real `vigil` binary, real sockets
//! on 127.0.0.1 and real servers (carbon-cache, aiosmtpd, PostgreSQL, an
//! HTTPS and an SMTP server with a test CA, headless chromium).
//!
//! One binary links the harness (`util`) and the crate once, instead of once
//! per file. `cargo test --release --test integration router::` runs one
//! part's tests; the PostgreSQL second pass (`.ci/postgres.sh`) picks its
//! parts the same way. The pieces shared with the unit tests and the
//! benchmarks (free ports, scratch directories, the ready-line parser) live
//! in the library, `vigil::testkit` and `vigil::ready`.

mod util;

mod agent;
mod e2e;
mod notify;
mod overload;
mod pg;
mod router;
mod scheduler;
mod security;
mod sinks;
mod standalone;
mod status;
mod web;
