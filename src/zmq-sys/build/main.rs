//! Builds the vendored libzmq with CURVE, linked to the libsodium that
//! `libsodium-sys-stable` built from its bundled source, and with libzmq's
//! DRAFT API (for `ZMQ_ROUTER_NOTIFY`, which tells the router when a
//! client's connection goes, so a route can be dropped with it).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");
    let lib = env::var("DEP_SODIUM_LIB").expect("libsodium-sys-stable sets DEP_SODIUM_LIB");
    let include =
        env::var("DEP_SODIUM_INCLUDE").expect("libsodium-sys-stable sets DEP_SODIUM_INCLUDE");
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(
            PathBuf::from(lib),
            PathBuf::from(include),
        )))
        .enable_draft(true)
        .build();
}
