//! `vigil web`: the fleet at a glance in a browser, and the same as JSON.
//!
//! A synchronous HTTP server (`tiny_http`): `VIGIL_WEB_THREADS` request
//! threads take requests from it, each with its own read-only connection
//! to the store (the one `vigil status` reads), and one thread asks the
//! routers for their status (`routers`). Pages are made on the server from
//! askama templates (`pages`), need no script, and refresh themselves.
//! Nothing here writes to the store: the store is opened read-only, and
//! only GET and HEAD exist (anything else is 405). Off loopback every
//! request must carry `VIGIL_WEB_TOKEN_FILE`'s token (`http`).
//!
//! ```text
//!   browser ──HTTP──► tiny_http ──► [web-N: route, read store, render] ×N
//!                                          │ ask (bounded channel)
//!                                          ▼
//!                     [web-routers: {"op":"status"} to each router]
//! ```

pub mod config;
mod http;
mod pages;
mod plot;
mod routers;
mod text;

use crate::error::Error;
use crate::signals::{Shutdown, ShutdownWatch, SignalThread};
use crate::status::snapshot::{self, Snapshot};
use crate::store::{fleet, metrics, DbError, Store, Tx};
use askama::Template;
use config::WebConfig;
use http::{Refusal, Target};
use std::sync::Arc;
use std::time::Duration;
use tiny_http::{Header, Request, Response, Server};

const USAGE: &str = "usage: vigil web

Serves the fleet's state in a browser (overview, hosts, notifications,
routers) and as JSON under /api/, from VIGIL_DB and the routers in
VIGIL_BACKENDS. Binds VIGIL_WEB_BIND (default 127.0.0.1:8080); see README.md.";

/// How often a request thread looks at the shutdown flag while idle.
const IDLE_CHECK: Duration = Duration::from_millis(200);
/// Most rows one API page may ask for.
const API_MAX_ROWS: usize = 10_000;

pub fn command(args: &[String]) -> Result<(), Error> {
    if crate::error::help_or_no_args(args, USAGE)? {
        return Ok(());
    }
    let env = crate::config::Env::from_process()?;
    run(WebConfig::from_env(&env)?)
}

pub fn run(config: WebConfig) -> Result<(), Error> {
    log::info!("starting web: {config:?}");
    let server = Server::http(config.bind)
        .map_err(|e| Error::setup(format!("VIGIL_WEB_BIND={}", config.bind), e))?;
    let bound = match server.server_addr() {
        tiny_http::ListenAddr::IP(addr) => addr,
        other => {
            return Err(Error::Runtime(format!(
                "unexpected listen address {other:?}"
            )))
        }
    };
    let server = Arc::new(server);
    let shutdown = Arc::new(Shutdown::new(Vec::new()));
    let signals = SignalThread::start(Arc::clone(&shutdown))
        .map_err(|e| Error::setup("installing signal handlers", e))?;
    let (routers, poller) = routers::start(
        config.backends.clone(),
        config.backend_timeout,
        config.refresh,
        config.keys.clone(),
    )
    .map_err(|e| Error::setup("starting the routers thread", e))?;
    let config = Arc::new(config);
    let mut supervisor = crate::supervisor::Supervisor::default();
    for n in 0..config.threads {
        let worker = Worker {
            server: Arc::clone(&server),
            config: Arc::clone(&config),
            routers: routers.clone(),
            shutdown: shutdown.watch(),
            store: None,
        };
        supervisor
            .spawn(&format!("web-{n}"), move || worker.run())
            .map_err(|e| Error::setup("starting threads", e))?;
    }
    drop(routers);
    let url = local_url(bound);
    log::info!(target: crate::ready::TARGET, "ready: web={url} bind={bound} threads={}", config.threads);
    let watch = shutdown.watch();
    let failed = supervisor.wait(|| watch.is_set(), || shutdown.trigger());
    signals.stop();
    server.unblock();
    let _ = poller.join();
    log::info!("web stopped");
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::ThreadsFailed(failed))
    }
}

/// The URL to open for a bound address (a wildcard is reached on loopback).
pub fn local_url(bound: std::net::SocketAddr) -> String {
    let host = match bound.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}/", bound.port())
}

/// One request thread: its store connection and its share of the server.
struct Worker {
    server: Arc<Server>,
    config: Arc<WebConfig>,
    routers: routers::Routers,
    shutdown: ShutdownWatch,
    /// Opened on first use, and again after it fails (a store that did not
    /// exist yet when the server started).
    store: Option<Store>,
}

/// A response, before it is sent.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn html(status: u16, body: String) -> Answer {
        Answer {
            status,
            content_type: "text/html; charset=utf-8",
            body,
        }
    }

    fn json(status: u16, value: &impl serde::Serialize) -> Answer {
        match serde_json::to_string(value) {
            Ok(body) => Answer {
                status,
                content_type: "application/json",
                body,
            },
            Err(e) => Answer::text(500, format!("encoding JSON: {e}")),
        }
    }

    fn text(status: u16, body: String) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

/// The value of the request's header `name`, if it has one.
fn header<'r>(request: &'r Request, name: &'static str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

impl Worker {
    fn run(mut self) -> Result<(), String> {
        while !self.shutdown.is_set() {
            match self.server.recv_timeout(IDLE_CHECK) {
                Ok(Some(request)) => self.serve(request),
                Ok(None) => {}
                Err(e) => {
                    // An accept error (a client gone mid-handshake, too many
                    // files): serve the next one.
                    log::warn!("web: receiving a request: {e}");
                    std::thread::sleep(IDLE_CHECK);
                }
            }
        }
        Ok(())
    }

    fn serve(&mut self, request: Request) {
        let method = request.method().as_str().to_string();
        // With a token, the token is the guard; without one, the Host name.
        let rebound = self.config.token.is_none()
            && !http::host_allowed(header(&request, "Host"), self.config.bind);
        let authorization = header(&request, "Authorization");
        let answer = match http::admit(&method, authorization, self.config.token.as_deref()) {
            _ if rebound => Answer::text(421, "this view answers only to a loopback host name (localhost, 127.0.0.1, [::1]) unless it has a token (VIGIL_WEB_TOKEN_FILE)\n".into()),
            Err(Refusal::Unauthorized) => Answer::text(401, "a token is required (Authorization: Bearer TOKEN, or the token as the HTTP basic password)\n".into()),
            Err(Refusal::Method) => Answer::text(405, "only GET and HEAD: nothing here changes anything\n".into()),
            Ok(()) => {
                let target = Target::parse(request.url());
                self.route(&target)
            }
        };
        let status = answer.status;
        let mut response = Response::from_string(answer.body).with_status_code(status);
        for (name, value) in [
            ("Content-Type", answer.content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            // No script may run, whatever got into a page.
            (
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
            ),
        ] {
            if let Ok(h) = Header::from_bytes(name, value) {
                response.add_header(h);
            }
        }
        if status == 401 {
            if let Ok(h) = Header::from_bytes("WWW-Authenticate", "Basic realm=\"vigil\"") {
                response.add_header(h);
            }
        }
        if status == 405 {
            if let Ok(h) = Header::from_bytes("Allow", "GET, HEAD") {
                response.add_header(h);
            }
        }
        if let Err(e) = request.respond(response) {
            log::debug!("web: answering {method}: {e}");
        }
    }

    /// The store connection, opened read-only if needed (a read-only file
    /// and `query_only` on SQLite, read-only transactions on PostgreSQL).
    fn store(&mut self) -> Result<&mut Store, String> {
        if self.store.is_none() {
            let mut store = snapshot::open_store(&self.config.db)?;
            store
                .forbid_writes()
                .map_err(|e| store.error("make read-only", e).to_string())?;
            self.store = Some(store);
        }
        Ok(self.store.as_mut().expect("just opened"))
    }

    fn route(&mut self, target: &Target) -> Answer {
        let segments = target.segments();
        let api = segments.first() == Some(&"api");
        let now = crate::store::now();
        let config = Arc::clone(&self.config);
        let db = config.db.to_string();
        let cx = pages::Context {
            now,
            grace: config.heartbeat_grace,
            refresh: config.refresh.as_secs(),
            page_size: config.page_size,
            db: &db,
            target,
        };
        if segments.as_slice() == ["routers"] {
            let sample = self
                .routers
                .latest(config.backend_timeout * (config.backends.len() as u32 + 1));
            return render(200, &pages::routers(&cx, &sample));
        }
        if segments.as_slice() == ["api", "routers"] {
            let sample = self
                .routers
                .latest(config.backend_timeout * (config.backends.len() as u32 + 1));
            return Answer::json(
                200,
                &serde_json::json!({"asked_at": sample.at, "routers": sample.rows, "rates": sample.rates.iter().map(|(e, r)| (e.clone(), r.clone())).collect::<std::collections::BTreeMap<_, _>>(), "rate_window_s": sample.window}),
            );
        }
        let routers = self.routers.clone();
        let store = match self.store() {
            Ok(store) => store,
            Err(why) => {
                return if api {
                    Answer::json(503, &serde_json::json!({"error": why}))
                } else {
                    render(503, &pages::error(&cx, "store not readable", &why))
                }
            }
        };
        // One read transaction per request: every part of a page is read
        // from the same moment.
        let answer = match store.read() {
            Ok(tx) if api => api_answer(&cx, &tx, &segments[1..], &routers, &config),
            Ok(tx) => page(&cx, &tx, &segments),
            Err(e) => Err(format!("store {}: read: {e}", config.db)),
        };
        match answer {
            Ok(answer) => answer,
            Err(why) => {
                log::warn!("web: reading the store: {why}");
                // The connection may be what failed: open a fresh one next.
                self.store = None;
                if api {
                    Answer::json(500, &serde_json::json!({"error": why}))
                } else {
                    render(500, &pages::error(&cx, "store error", &why))
                }
            }
        }
    }
}

fn render(status: u16, page: &impl Template) -> Answer {
    match page.render() {
        Ok(html) => Answer::html(status, html),
        Err(e) => Answer::text(500, format!("rendering: {e}\n")),
    }
}

fn page(cx: &pages::Context, conn: &Tx, segments: &[&str]) -> Result<Answer, String> {
    let db = |e: DbError| e.to_string();
    Ok(match segments {
        [] => render(200, &pages::overview(cx, conn).map_err(db)?),
        ["hosts"] => render(200, &pages::hosts(cx, conn).map_err(db)?),
        ["hosts", uuid] => match pages::host(cx, conn, uuid)? {
            Some(host) => render(200, &host),
            None => render(
                404,
                &pages::error(
                    cx,
                    "no such host",
                    &format!("the store knows no client {uuid}"),
                ),
            ),
        },
        ["notifications"] => render(200, &pages::notifications(cx, conn).map_err(db)?),
        _ => render(404, &pages::error(cx, "not found", "no such page")),
    })
}

/// `?page=` and `?per_page=` of an API list.
fn api_page(target: &Target, default: usize) -> (usize, usize) {
    let per_page = target
        .param("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=API_MAX_ROWS).contains(n))
        .unwrap_or(default);
    (target.page("page"), per_page)
}

fn api_answer(
    cx: &pages::Context,
    conn: &Tx,
    segments: &[&str],
    routers: &routers::Routers,
    config: &WebConfig,
) -> Result<Answer, String> {
    use serde_json::json;
    let db = |e: DbError| e.to_string();
    let (page, per_page) = api_page(cx.target, cx.page_size);
    let offset = (page - 1).saturating_mul(per_page);
    Ok(match segments {
        // Exactly what `vigil status --json` prints.
        ["status"] => {
            let notifications = cx
                .target
                .param("notifications")
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n <= API_MAX_ROWS)
                .unwrap_or(10);
            let (clients, plugins, notifications) =
                snapshot::read_tx(conn, cx.now, cx.grace, notifications).map_err(db)?;
            let sample =
                routers.latest(config.backend_timeout * (config.backends.len() as u32 + 1));
            Answer::json(
                200,
                &Snapshot {
                    generated_at: cx.now,
                    db: config.db.to_string(),
                    clients,
                    plugins,
                    notifications,
                    routers: sample.rows,
                },
            )
        }
        ["summary"] => Answer::json(200, &fleet::summary(conn, cx.now, cx.grace).map_err(db)?),
        ["problems"] => {
            let checks = fleet::problem_checks(conn, per_page, offset).map_err(db)?;
            let down = fleet::down_hosts(conn, cx.now, cx.grace, per_page, offset).map_err(db)?;
            Answer::json(
                200,
                &json!({"page": page, "down_hosts": down, "checks": checks}),
            )
        }
        ["hosts"] => {
            let search = cx.target.param("q").filter(|q| !q.trim().is_empty());
            let (hosts, total) =
                fleet::hosts(conn, cx.now, cx.grace, search, per_page, offset).map_err(db)?;
            Answer::json(
                200,
                &json!({"page": page, "per_page": per_page, "total": total, "hosts": hosts}),
            )
        }
        ["hosts", uuid] => match fleet::host(conn, cx.now, cx.grace, uuid).map_err(db)? {
            None => Answer::json(404, &json!({"error": "no such host"})),
            Some(client) => {
                let (_, window) = pages::range(cx.target);
                Answer::json(
                    200,
                    &json!({
                        "client": client,
                        "plugins": fleet::host_plugins(conn, uuid).map_err(db)?,
                        "notifications": fleet::host_notifications(conn, uuid, None, 20).map_err(db)?,
                        "metrics": metrics::names(conn, uuid, cx.now - window).map_err(db)?,
                    }),
                )
            }
        },
        ["hosts", uuid, "metrics"] => {
            let (range, window) = pages::range(cx.target);
            let since = cx.now - window;
            match cx.target.param("name") {
                None => Answer::json(
                    200,
                    &json!({"range": range, "names": metrics::names(conn, uuid, since).map_err(db)?}),
                ),
                Some(name) => {
                    let points =
                        metrics::series(conn, uuid, name, since, API_MAX_ROWS).map_err(db)?;
                    Answer::json(
                        200,
                        &json!({"uuid": uuid, "name": name, "unit": plot::unit(name), "range": range, "points": points}),
                    )
                }
            }
        }
        ["notifications"] => {
            let (rows, total) = fleet::notifications(conn, per_page, offset).map_err(db)?;
            Answer::json(
                200,
                &json!({"page": page, "per_page": per_page, "total": total, "notifications": rows}),
            )
        }
        _ => Answer::json(404, &json!({"error": "no such API"})),
    })
}

/// The overview's HTML for a store, as a request for `/` would make it:
/// for the benchmark, which times exactly this.
pub fn render_overview(store: &mut Store, db: &str, grace: f64) -> Result<String, String> {
    let target = Target::parse("/");
    let cx = pages::Context {
        now: crate::store::now(),
        grace,
        refresh: 10,
        page_size: 100,
        db,
        target: &target,
    };
    let tx = store.read().map_err(|e| e.to_string())?;
    let page = pages::overview(&cx, &tx).map_err(|e| e.to_string())?;
    page.render().map_err(|e| e.to_string())
}
