//! CURVE for the benchmark: the keys of one encrypted run, and applying
//! them to the load generator's sockets, so `vigil-bench router --curve`
//! can compare the router with CURVE on against the router with it off and
//! against `zmq_proxy` with CURVE, in one run.
//!
//! The router runs with `VIGIL_CLIENT_AUTH=derived`, so each simulated
//! client mints its own key and speaks as the UUID derived from it, as an
//! autoscaled fleet does; its ZAP handler still decides every handshake.
//! The proxy has no ZAP handler: libzmq then lets every key in, so the
//! baseline pays for the encryption alone.

use super::{BenchError, Doing};
use std::path::{Path, PathBuf};
use vigil::curve::{derived_uuid, KeyPair};

/// The keys of one encrypted run, written under a scratch directory.
pub struct Curve {
    pub dir: PathBuf,
    pub server: KeyPair,
    pub sink: KeyPair,
    pub backend: KeyPair,
}

impl std::fmt::Debug for Curve {
    /// The directory only: never a secret key in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Curve({})", self.dir.display())
    }
}

impl Curve {
    /// New keys, and the files the router reads, under `dir`.
    pub fn create(dir: &Path) -> Result<Curve, BenchError> {
        std::fs::create_dir_all(dir).doing("creating the benchmark's key directory")?;
        let pair = |name: &str| -> Result<KeyPair, BenchError> {
            let pair = KeyPair::generate().map_err(|e| BenchError::usage(e.to_string()))?;
            let path = dir.join(format!("{name}.key"));
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(vigil::curve::public_path(&path));
            pair.write(&path)
                .map_err(|e| BenchError::usage(format!("{}: {e}", path.display())))?;
            Ok(pair)
        };
        let curve = Curve {
            dir: dir.to_path_buf(),
            server: pair("router")?,
            sink: pair("sink")?,
            backend: pair("backend")?,
        };
        std::fs::write(
            dir.join("sink.keys"),
            format!("{} bench sinks\n", curve.sink.public),
        )
        .doing("writing sink.keys")?;
        std::fs::write(
            dir.join("backend.keys"),
            format!("{} bench\n", curve.backend.public),
        )
        .doing("writing backend.keys")?;
        Ok(curve)
    }

    /// The router's variables for this run.
    pub fn router_env(&self) -> Vec<(String, String)> {
        let file = |name: &str| self.dir.join(name).display().to_string();
        vec![
            ("VIGIL_CURVE_KEY".into(), file("router.key")),
            ("VIGIL_CLIENT_AUTH".into(), "derived".into()),
            ("VIGIL_BACKEND_KEYS".into(), file("backend.keys")),
            ("VIGIL_SINK_KEYS".into(), file("sink.keys")),
        ]
    }

    /// The secret key file the proxy serves with.
    pub fn server_key_path(&self) -> PathBuf {
        self.dir.join("router.key")
    }

    /// Makes `socket` a client of the server with `own`'s key.
    fn client(&self, socket: &zmq::Socket, own: &KeyPair) -> Result<(), BenchError> {
        vigil::curve::ClientKeys {
            own: own.clone(),
            router: self.server.public,
        }
        .apply(socket)
        .map_err(|e| BenchError::usage(e.to_string()))
    }

    pub fn sink_client(&self, socket: &zmq::Socket) -> Result<(), BenchError> {
        self.client(socket, &self.sink)
    }

    pub fn backend_client(&self, socket: &zmq::Socket) -> Result<(), BenchError> {
        self.client(socket, &self.backend)
    }

    /// Makes `socket` a client with a fresh key of its own, and returns
    /// the UUID that key may speak as.
    pub fn new_client(&self, socket: &zmq::Socket) -> Result<String, BenchError> {
        let own = KeyPair::generate().map_err(|e| BenchError::usage(e.to_string()))?;
        self.client(socket, &own)?;
        Ok(derived_uuid(&own.public).to_string())
    }
}

/// Makes `socket` a CURVE server with the key in `path` (the proxy's).
pub fn serve(socket: &zmq::Socket, path: &Path) -> Result<(), BenchError> {
    let pair =
        KeyPair::read(path).map_err(|e| BenchError::usage(format!("{}: {e}", path.display())))?;
    socket
        .set_curve_server(true)
        .doing("setting CURVE server")?;
    socket
        .set_curve_secretkey(pair.secret())
        .doing("setting the CURVE secret key")
}
