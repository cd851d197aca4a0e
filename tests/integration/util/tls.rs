//! Real TLS servers for the notification handler tests: a test CA made with
//! the `openssl` CLI, aiosmtpd with STARTTLS / implicit TLS and AUTH
//! (`tests/servers/smtpd.py`), and an HTTPS webhook receiver on Python's
//! http.server (`tests/servers/https_hook.py`).
//!
//! Self-contained (std and serde_json only) so it does not depend on the
//! rest of the harness. The servers print one JSON line per event on
//! stdout, which a thread collects; they are killed when dropped. When
//! python3, aiosmtpd or openssl is missing, [`servers_present`] says so
//! loudly and the test returns, except under `CI=true`, where it fails.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
/// How long a server may take to start listening.
const SERVER_START: Duration = Duration::from_secs(30);

/// Whether python3 with aiosmtpd and openssl are installed. `false` (with a
/// loud note) lets a developer's run go on; under `CI=true` it panics: CI
/// installs them (`.ci/tls.sh`), so their absence there is a broken run.
pub fn servers_present() -> bool {
    let ok = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let python = ok(Command::new(PYTHON).args(["-c", "import aiosmtpd, ssl, http.server"]));
    let openssl = ok(Command::new("openssl").arg("version"));
    vigil::testkit::require(
        "python3 with aiosmtpd (Debian python3-aiosmtpd) and the openssl CLI (.ci/tls.sh)",
        python && openssl,
    )
}

use vigil::testkit::free_port;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority made for one test.
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

/// A server certificate and its key, as PEM files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `openssl req` arguments for a new P-256 key without a passphrase,
/// written to the file named next (`-keyout`).
const NEW_P256_KEY: [&str; 6] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
];

impl TestCa {
    /// A new CA in `dir` (files `NAME-ca.pem`, `NAME-ca.key`).
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = format!("{name}-ca.key");
        let cert = format!("{name}-ca.pem");
        openssl(
            dir,
            &[
                &["req", "-x509"][..],
                &NEW_P256_KEY,
                &[
                    &key,
                    "-out",
                    &cert,
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=vigil test CA {name}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        TestCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// The CA's certificate (what `VIGIL_NOTIFY_CA_FILE` points at).
    pub fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for 127.0.0.1 and localhost, signed by this CA.
    pub fn issue(&self, server: &str) -> ServerCert {
        let base = format!("{}-{server}", self.name);
        let ext = self.dir.join(format!("{base}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions file");
        let (key, csr, cert) = (
            format!("{base}.key"),
            format!("{base}.csr"),
            format!("{base}.pem"),
        );
        openssl(
            &self.dir,
            &[
                &["req"][..],
                &NEW_P256_KEY,
                &[&key, "-out", &csr, "-subj", "/CN=localhost"],
            ]
            .concat(),
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{}-ca.pem", self.name),
                "-CAkey",
                &format!("{}-ca.key", self.name),
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                ext.to_str().expect("utf-8 path"),
            ],
        );
        ServerCert {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }
}

/// A Python server from `tests/servers/`, its stdout's JSON lines collected.
struct PyServer {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl PyServer {
    fn start(script: &str, args: &[String]) -> PyServer {
        let port = free_port();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/servers")
            .join(script);
        let mut child = Command::new(PYTHON)
            .arg("-u")
            .arg(&path)
            .args(["--port", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PYTHON} {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{line:?} from the test server is not JSON: {e}"));
                sink.lock().expect("lines lock").push(value);
            }
        });
        let server = PyServer { child, port, lines };
        let deadline = Instant::now() + SERVER_START;
        loop {
            let listening = server.lines().iter().any(|l| l.get("listening").is_some());
            if listening && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "{script} did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lines lock").clone()
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How an [`SmtpServer`] protects its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpMode {
    /// STARTTLS offered and required before MAIL (and before AUTH).
    StartTls,
    /// TLS from the first byte (port 465 style).
    Tls,
    /// Plain: no STARTTLS offered.
    Off,
}

/// aiosmtpd with TLS and, when given a user, AUTH required.
pub struct SmtpServer {
    server: PyServer,
}

impl SmtpServer {
    pub fn start(
        mode: SmtpMode,
        cert: Option<&ServerCert>,
        auth: Option<(&str, &Path)>,
    ) -> SmtpServer {
        let mut args = vec![
            "--tls".to_string(),
            match mode {
                SmtpMode::StartTls => "starttls",
                SmtpMode::Tls => "tls",
                SmtpMode::Off => "off",
            }
            .to_string(),
        ];
        if let Some(c) = cert {
            args.extend([
                "--cert".into(),
                c.cert.display().to_string(),
                "--key".into(),
                c.key.display().to_string(),
            ]);
        }
        if let Some((user, password_file)) = auth {
            args.extend([
                "--user".into(),
                user.to_string(),
                "--password-file".into(),
                password_file.display().to_string(),
            ]);
        }
        SmtpServer {
            server: PyServer::start("smtpd.py", &args),
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The messages accepted so far (see `tests/servers/smtpd.py`).
    pub fn messages(&self) -> Vec<Value> {
        self.server
            .lines()
            .into_iter()
            .filter(|l| l.get("headers").is_some())
            .collect()
    }

    /// The AUTH attempts so far: (user, accepted).
    pub fn auths(&self) -> Vec<(String, bool)> {
        self.server
            .lines()
            .into_iter()
            .filter_map(|l| {
                Some((
                    l.get("auth")?.as_str().unwrap_or("").to_string(),
                    l.get("ok")?.as_bool()?,
                ))
            })
            .collect()
    }
}

/// An HTTPS receiver answering POSTs from a script (`503:1,202`: a 503
/// with `Retry-After: 1`, then 202s).
pub struct HookServer {
    server: PyServer,
}

impl HookServer {
    pub fn start(cert: &ServerCert, script: &str) -> HookServer {
        let args = [
            "--cert".to_string(),
            cert.cert.display().to_string(),
            "--key".to_string(),
            cert.key.display().to_string(),
            "--script".to_string(),
            script.to_string(),
        ];
        HookServer {
            server: PyServer::start("https_hook.py", &args),
        }
    }

    /// `https://127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.server.port)
    }

    /// The requests so far: path, headers, body (parsed JSON), status.
    pub fn requests(&self) -> Vec<Value> {
        self.server
            .lines()
            .into_iter()
            .filter(|l| l.get("path").is_some())
            .map(|mut l| {
                let body = l["body"].as_str().unwrap_or("").to_string();
                l["json"] = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("the webhook body is not JSON ({e}): {body}"));
                l
            })
            .collect()
    }
}

/// Writes `secret` to `path` readable by its owner only, as the handlers
/// require of a secret file.
pub fn secret_file(path: &Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{secret}\n")).expect("write the secret file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the secret file");
}
