//! vigil's integration tests, as one test binary (the layout ripgrep and
//! cargo's documentation recommend): every part tested from the outside,
//! with the real `vigil` binary, real sockets on 127.0.0.1 and real servers.
//!
//! One binary links the harness (`util`) and the crate once, instead of
//! once per file; `cargo test --release --test integration router::`
//! runs one part's tests. The harness shared with the unit tests and the
//! benchmarks (free ports, scratch directories, carbon-cache, aiosmtpd)
//! is the library's `vigil::testkit`.

mod util;

mod agent;
mod e2e;
mod router;
mod scheduler;
mod sinks;
mod standalone;
mod status;
