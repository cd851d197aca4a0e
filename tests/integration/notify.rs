//! The notification handlers against real servers: `vigil sink` with its
//! email handler talking to aiosmtpd over STARTTLS or implicit TLS with
//! AUTH, and its webhook POSTing to an HTTPS server, both with a
//! certificate from a CA made by the test (`openssl`), trusted through
//! `VIGIL_NOTIFY_CA_FILE`.
//!
//! Failures (wrong password, no STARTTLS, a certificate from another CA, a
//! 503, a 400) are checked where they matter: the attempt fails with a
//! clear error, the notification is retried and never marked handled or
//! acked while unsent. Notifications are sent without `ack` so the
//! sink's outbox retries them; its store shows the attempts.
//!
//! Needs python3 with aiosmtpd and openssl (`.ci/tls.sh`); without them
//! each test says so and returns, except under `CI=true`, where it fails.

use crate::util;

use crate::util::sinks as sinks_util;

use crate::util::tls as tls_util;

use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Value};
use sinks_util::{at_least, wait_for, SinkBuilder, SinkProc, TempDir, EVENTUALLY};
use std::path::Path;
use std::time::Duration;
use tls_util::{secret_file, servers_present, HookServer, SmtpMode, SmtpServer, TestCa};
use util::Router;

const PASSWORD: &str = "s3cret-Pa55word-xyzzy";
const ROUTING_KEY: &str = "R0UTINGKEY-0123456789abcdef";
const URL_TOKEN: &str = "T0KEN-in-the-url-B00000000";

fn db(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open the sink's store");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// One row of (state, attempts, last_error) for notification `id`.
fn progress(store: &Path, id: &str) -> Option<(String, i64, Option<String>)> {
    db(store)
        .query_row(
            "SELECT state, attempts, last_error FROM notifications WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .ok()
        .flatten()
}

/// Waits until notification `id` failed at least twice (so it was retried)
/// and returns its last error; asserts it was never marked handled.
fn expect_retried_unsent(store: &Path, id: &str) -> String {
    let (state, _, error) = wait_for("two failed attempts", EVENTUALLY, || {
        progress(store, id).filter(|(_, attempts, _)| *attempts >= 2)
    });
    assert_ne!(state, "handled", "a failed notification was marked handled");
    let handled: i64 = db(store)
        .query_row("SELECT COUNT(*) FROM handled WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap_or(0);
    assert_eq!(handled, 0, "a failed notification was recorded as handled");
    error.expect("a failed attempt records its error")
}

fn wait_handled(store: &Path, id: &str) {
    wait_for("the notification to be handled", EVENTUALLY, || {
        progress(store, id).filter(|(state, _, _)| state == "handled")
    });
}

/// A notification without `ack` (the outbox retries it).
fn notification(agent: &util::Client, id: &str, extra: Value) -> Vec<u8> {
    let mut body = json!({"id": id, "severity": "critical", "source": "raid",
                          "message": "array md0 degraded: sdb failed", "hostname": "db1"});
    if let (Some(b), Value::Object(more)) = (body.as_object_mut(), extra) {
        b.extend(more);
    }
    agent.frame("notification", body)
}

/// A sink with only the email handler, for `server` in `mode`.
fn email_sink(
    router: &Router,
    store: &Path,
    port: u16,
    tls: &str,
    ca: &Path,
    auth: Option<&Path>,
) -> SinkProc {
    let mut b = SinkBuilder::new(&["notification"], &[router], store)
        .env("VIGIL_NOTIFY_SMTP", &format!("127.0.0.1:{port}"))
        .env("VIGIL_NOTIFY_SMTP_TLS", tls)
        .env(
            "VIGIL_NOTIFY_SMTP_TO",
            "ops@example.org, oncall@example.org",
        )
        .env("VIGIL_NOTIFY_SMTP_FROM", "vigil@monitor.example.org")
        .env("VIGIL_NOTIFY_SMTP_HELO", "monitor.example.org")
        .env("VIGIL_NOTIFY_CA_FILE", &ca.display().to_string())
        .env("VIGIL_NOTIFY_TIMEOUT_SECS", "20");
    if let Some(file) = auth {
        b = b.env("VIGIL_NOTIFY_SMTP_USER", "vigil").env(
            "VIGIL_NOTIFY_SMTP_PASSWORD_FILE",
            &file.display().to_string(),
        );
    }
    b.start()
}

/// The mail's checks shared by the STARTTLS and TLS cases.
fn check_mail(mail: &Value) {
    assert_eq!(mail["defects"], json!([]), "the mail has defects: {mail}");
    assert_eq!(mail["tls"], true, "{mail}");
    assert_eq!(mail["authenticated"], true, "{mail}");
    assert_eq!(mail["mail_from"], "vigil@monitor.example.org");
    assert_eq!(
        mail["rcpt_tos"],
        json!(["ops@example.org", "oncall@example.org"])
    );
    let h = &mail["headers"];
    assert_eq!(h["From"], "vigil@monitor.example.org", "{h}");
    assert_eq!(h["To"], "ops@example.org, oncall@example.org", "{h}");
    assert_eq!(
        h["Subject"], "[vigil CRITICAL] db1: array md0 d\u{e9}grad\u{e9}: sdb failed",
        "{h}"
    );
    assert!(
        h["Date"].as_str().is_some_and(|d| d.ends_with("+0000")),
        "{h}"
    );
    assert!(
        h["Message-ID"]
            .as_str()
            .is_some_and(|m| m.ends_with("@monitor.example.org>")),
        "{h}"
    );
    assert_eq!(h["Auto-Submitted"], "auto-generated", "{h}");
    assert_eq!(mail["content_type"], "text/plain");
    let body = mail["body"]
        .as_str()
        .expect("a text body")
        .replace("\r\n", "\n");
    assert!(
        body.starts_with("array md0 d\u{e9}grad\u{e9}: sdb failed\n.leading dot\n"),
        "{body}"
    );
    assert!(body.contains("Host: db1"), "{body}");
    assert!(body.contains("\"id\": \"mail-1\""), "{body}");
}

/// A sink mailing through an SMTP server of `mode` (`tls` as
/// VIGIL_NOTIFY_SMTP_TLS names it) that requires AUTH, with the test CA:
/// one notification sent, handled, and arrived well formed.
struct OneMail {
    _dir: TempDir,
    _router: Router,
    smtp: SmtpServer,
    sink: SinkProc,
}

fn one_mail_with_auth(tag: &str, mode: SmtpMode, tls: &str) -> OneMail {
    let dir = TempDir::new(tag);
    let ca = TestCa::new(&dir.0, "ca");
    let cert = ca.issue("smtp");
    let password = dir.join("smtp-password");
    secret_file(&password, PASSWORD);
    let smtp = SmtpServer::start(mode, Some(&cert), Some(("vigil", &password)));
    let router = Router::start("r1");
    let store = dir.join("vigil.db");
    let sink = email_sink(
        &router,
        &store,
        smtp.port(),
        tls,
        &ca.pem(),
        Some(&password),
    );
    let agent = router.agent();
    agent.send(&notification(
        &agent,
        "mail-1",
        json!({"message": "array md0 d\u{e9}grad\u{e9}: sdb failed\n.leading dot\nlast line"}),
    ));
    wait_handled(&store, "mail-1");
    let mails = at_least(1, "the mail", || smtp.messages());
    assert_eq!(mails.len(), 1, "one mail: {mails:?}");
    check_mail(&mails[0]);
    OneMail {
        _dir: dir,
        _router: router,
        smtp,
        sink,
    }
}

#[test]
fn email_over_starttls_with_auth_arrives_well_formed() {
    if !servers_present() {
        return;
    }
    let sent = one_mail_with_auth("notify-starttls", SmtpMode::StartTls, "starttls");
    assert_eq!(sent.smtp.auths(), [("vigil".to_string(), true)]);
    let (status, log) = sent.sink.stop();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
}

#[test]
fn email_over_implicit_tls_with_auth_arrives() {
    if !servers_present() {
        return;
    }
    one_mail_with_auth("notify-smtps", SmtpMode::Tls, "tls");
}

#[test]
fn a_wrong_password_fails_and_is_retried_without_leaking_it() {
    if !servers_present() {
        return;
    }
    let dir = TempDir::new("notify-badpw");
    let ca = TestCa::new(&dir.0, "ca");
    let cert = ca.issue("smtp");
    let right = dir.join("server-password");
    secret_file(&right, PASSWORD);
    let wrong = dir.join("smtp-password");
    secret_file(&wrong, "wr0ng-Pa55word-plugh");
    let smtp = SmtpServer::start(SmtpMode::StartTls, Some(&cert), Some(("vigil", &right)));
    let router = Router::start("r1");
    let store = dir.join("vigil.db");
    let sink = SinkBuilder::new(&["notification"], &[&router], &store)
        .env("VIGIL_LOG", "debug")
        .env("VIGIL_NOTIFY_SMTP", &format!("127.0.0.1:{}", smtp.port()))
        .env("VIGIL_NOTIFY_SMTP_TO", "ops@example.org")
        .env("VIGIL_NOTIFY_SMTP_USER", "vigil")
        .env(
            "VIGIL_NOTIFY_SMTP_PASSWORD_FILE",
            &wrong.display().to_string(),
        )
        .env("VIGIL_NOTIFY_CA_FILE", &ca.pem().display().to_string())
        .start();
    let agent = router.agent();
    agent.send(&notification(&agent, "mail-1", json!({})));
    let error = expect_retried_unsent(&store, "mail-1");
    assert!(
        error.contains("AUTH as vigil") && error.contains("535"),
        "{error}"
    );
    assert!(smtp.messages().is_empty(), "a mail went out");
    at_least(2, "two AUTH attempts", || smtp.auths());
    let (status, log) = sink.stop();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("wr0ng-Pa55word-plugh"),
        "the password is in the log:\n{log}"
    );
    assert!(!error.contains("wr0ng-Pa55word-plugh"));
}

#[test]
fn starttls_required_but_not_offered_fails_and_nothing_is_sent_in_the_clear() {
    if !servers_present() {
        return;
    }
    let dir = TempDir::new("notify-nostarttls");
    let ca = TestCa::new(&dir.0, "ca");
    let smtp = SmtpServer::start(SmtpMode::Off, None, None);
    let router = Router::start("r1");
    let store = dir.join("vigil.db");
    let _sink = email_sink(&router, &store, smtp.port(), "starttls", &ca.pem(), None);
    let agent = router.agent();
    agent.send(&notification(&agent, "mail-1", json!({})));
    let error = expect_retried_unsent(&store, "mail-1");
    assert!(error.contains("does not offer STARTTLS"), "{error}");
    assert!(smtp.messages().is_empty(), "a mail went out in the clear");
}

#[test]
fn a_certificate_from_another_ca_fails_the_attempt() {
    if !servers_present() {
        return;
    }
    let dir = TempDir::new("notify-otherca");
    let trusted = TestCa::new(&dir.0, "trusted");
    let other = TestCa::new(&dir.0, "other");
    let cert = other.issue("smtp");
    let password = dir.join("smtp-password");
    secret_file(&password, PASSWORD);
    let smtp = SmtpServer::start(SmtpMode::StartTls, Some(&cert), Some(("vigil", &password)));
    let router = Router::start("r1");
    let store = dir.join("vigil.db");
    let _sink = email_sink(
        &router,
        &store,
        smtp.port(),
        "starttls",
        &trusted.pem(),
        Some(&password),
    );
    let agent = router.agent();
    agent.send(&notification(&agent, "mail-1", json!({})));
    let error = expect_retried_unsent(&store, "mail-1");
    assert!(
        error.contains("STARTTLS") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(smtp.messages().is_empty());
    assert!(
        smtp.auths().is_empty(),
        "the password went to an unverified server"
    );
}

/// A sink with only the webhook handler, in `format`.
fn webhook_sink(
    types: &[&str],
    router: &Router,
    store: &Path,
    url: &str,
    format: &str,
    ca: &Path,
) -> SinkBuilder {
    // Slack's URL carries its token, so it comes from an owner-only file,
    // as the README shows; the others come from the environment.
    let sink = SinkBuilder::new(types, &[router], store);
    let sink = if format == "slack" {
        let file = store.with_extension("hook-url");
        secret_file(&file, url);
        sink.env("VIGIL_NOTIFY_WEBHOOK_FILE", &file.display().to_string())
    } else {
        sink.env("VIGIL_NOTIFY_WEBHOOK", url)
    };
    sink.env("VIGIL_NOTIFY_WEBHOOK_FORMAT", format)
        .env("VIGIL_NOTIFY_WEBHOOK_SEVERITIES", "all")
        .env("VIGIL_NOTIFY_CA_FILE", &ca.display().to_string())
}

#[test]
fn pagerduty_trigger_then_resolve_with_the_same_dedup_key() {
    if !servers_present() {
        return;
    }
    let dir = TempDir::new("notify-pagerduty");
    let ca = TestCa::new(&dir.0, "ca");
    let hook = HookServer::start(&ca.issue("hook"), "202");
    let key = dir.join("routing-key");
    secret_file(&key, ROUTING_KEY);
    let router = Router::start("r1");
    let store = dir.join("vigil.db");
    let _sink = webhook_sink(
        &["heartbeat", "notification"],
        &router,
        &store,
        &hook.url("/v2/enqueue"),
        "pagerduty",
        &ca.pem(),
    )
    .env("VIGIL_NOTIFY_WEBHOOK_KEY_FILE", &key.display().to_string())
    .env("VIGIL_HEARTBEAT_GRACE", "2")
    .start();
    let agent = router.agent();
    let beat = agent.frame("heartbeat", json!({"hostname": "web1", "interval_s": 0.25}));
    agent.send(&beat);
    // Silent: down (trigger); heard again: recovery (resolve).
    let trigger = wait_for("the trigger", EVENTUALLY, || {
        hook.requests().into_iter().next()
    });
    agent.send(&beat);
    let requests = at_least(2, "the resolve", || hook.requests());
    assert_eq!(trigger["path"], "/v2/enqueue");
    assert_eq!(trigger["headers"]["content-type"], "application/json");
    let (t, r) = (&requests[0]["json"], &requests[1]["json"]);
    assert_eq!(t["event_action"], "trigger", "{t}");
    assert_eq!(t["routing_key"], ROUTING_KEY);
    assert_eq!(t["payload"]["severity"], "critical");
    assert_eq!(t["payload"]["source"], "web1");
    assert_eq!(t["payload"]["component"], "heartbeat");
    assert!(t["payload"]["summary"]
        .as_str()
        .is_some_and(|s| s.starts_with("web1: no heartbeat")));
    assert_eq!(r["event_action"], "resolve", "{r}");
    assert_eq!(r["routing_key"], ROUTING_KEY);
    assert_eq!(r["dedup_key"], t["dedup_key"]);
    assert_eq!(t["dedup_key"], format!("{}:heartbeat", agent.uuid));
}

#[test]
fn slack_and_json_bodies() {
    if !servers_present() {
        return;
    }
    let dir = TempDir::new("notify-slack");
    let ca = TestCa::new(&dir.0, "ca");
    let cert = ca.issue("hook");
    for format in ["slack", "json"] {
        let hook = HookServer::start(&cert, "200");
        let router = Router::start("r1");
        let store = dir.join(format!("{format}.db").as_str());
        let _sink = webhook_sink(
            &["notification"],
            &router,
            &store,
            &hook.url(&format!("/services/T000/B000/{URL_TOKEN}")),
            format,
            &ca.pem(),
        )
        .start();
        let agent = router.agent();
        agent.send(&notification(&agent, "hook-1", json!({"ts": 1700000000})));
        wait_handled(&store, "hook-1");
        let requests = at_least(1, "the webhook request", || hook.requests());
        assert_eq!(requests.len(), 1, "{requests:?}");
        let body = &requests[0]["json"];
        if format == "slack" {
            assert_eq!(
                body["text"], "[vigil CRITICAL] db1: array md0 degraded: sdb failed",
                "{body}"
            );
            let fields: Vec<&str> = body["blocks"][1]["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .filter_map(|f| f["text"].as_str())
                .collect();
            assert_eq!(
                fields,
                [
                    "*Severity*\nCRITICAL",
                    "*Host*\ndb1",
                    "*Source*\nraid",
                    "*Time*\n2023-11-14T22:13:20Z"
                ],
                "{body}"
            );
            assert_eq!(
                body["blocks"][2]["text"]["text"],
                "*Message*\narray md0 degraded: sdb failed"
            );
        } else {
            assert_eq!(body["type"], "notification", "{body}");
            assert_eq!(body["uuid"], json!(agent.uuid));
            assert_eq!(body["id"], "hook-1");
            assert_eq!(body["severity"], "critical");
            assert_eq!(body["source"], "raid");
            assert_eq!(body["hostname"], "db1");
            assert_eq!(body["message"], "array md0 degraded: sdb failed");
            assert_eq!(body["ts"], 1700000000);
        }
    }
}

#[test]
fn a_503_is_retried_and_delivered_once() {
    if !servers_present() {
        return;
    }
    let dir = TempDir::new("notify-503");
    let ca = TestCa::new(&dir.0, "ca");
    let hook = HookServer::start(&ca.issue("hook"), "503:1,202");
    let router = Router::start("r1");
    let store = dir.join("vigil.db");
    let sink = webhook_sink(
        &["notification"],
        &router,
        &store,
        &hook.url("/hook"),
        "json",
        &ca.pem(),
    )
    .start();
    let agent = router.agent();
    agent.send(&notification(&agent, "hook-1", json!({})));
    wait_handled(&store, "hook-1");
    let requests = at_least(2, "both webhook requests", || hook.requests());
    let answered: Vec<&Value> = requests.iter().map(|r| &r["answered"]).collect();
    assert_eq!(answered, [&json!(503), &json!(202)], "{requests:?}");
    assert_eq!(requests[0]["json"], requests[1]["json"]);
    let (status, log) = sink.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("HTTP 503 Service Unavailable: error line for 503 (will retry)"),
        "{log}"
    );
}

#[test]
fn a_400_fails_with_the_first_line_and_no_secret_reaches_the_log() {
    if !servers_present() {
        return;
    }
    let dir = TempDir::new("notify-400");
    let ca = TestCa::new(&dir.0, "ca");
    let hook = HookServer::start(&ca.issue("hook"), "400");
    let key = dir.join("routing-key");
    secret_file(&key, ROUTING_KEY);
    let router = Router::start("r1");
    let store = dir.join("vigil.db");
    let url = hook.url(&format!("/v2/enqueue/{URL_TOKEN}?token={URL_TOKEN}"));
    let sink = webhook_sink(
        &["notification"],
        &router,
        &store,
        &url,
        "pagerduty",
        &ca.pem(),
    )
    .env("VIGIL_NOTIFY_WEBHOOK_KEY_FILE", &key.display().to_string())
    .env("VIGIL_LOG", "debug")
    .start();
    let agent = router.agent();
    agent.send(&notification(&agent, "hook-1", json!({})));
    let error = expect_retried_unsent(&store, "hook-1");
    assert!(
        error.contains("HTTP 400 Bad Request: error line for 400"),
        "{error}"
    );
    assert!(!error.contains("second line"), "{error}");
    // The server got the key: it was sent, just never shown.
    let requests = at_least(1, "the webhook request", || hook.requests());
    assert_eq!(requests[0]["json"]["routing_key"], ROUTING_KEY);
    let (status, log) = sink.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("HTTP 400 Bad Request: error line for 400"),
        "{log}"
    );
    assert!(log.contains("https://127.0.0.1:"), "{log}");
    for secret in [ROUTING_KEY, URL_TOKEN] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
        assert!(
            !error.contains(secret),
            "{secret} is in the stored error: {error}"
        );
    }
    let stored: Vec<String> = db(&store)
        .prepare("SELECT COALESCE(last_error, '') FROM notifications")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .expect("read the errors");
    assert!(stored
        .iter()
        .all(|e| !e.contains(ROUTING_KEY) && !e.contains(URL_TOKEN)));
}

#[test]
fn secret_files_open_to_others_stop_the_start() {
    let dir = TempDir::new("notify-secret-mode");
    let router = Router::start("r1");
    let store = dir.join("vigil.db");
    let file = dir.join("smtp-password");
    secret_file(&file, PASSWORD);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let (status, stderr) = SinkBuilder::new(&["notification"], &[&router], &store)
        .env("VIGIL_NOTIFY_SMTP", "127.0.0.1:587")
        .env("VIGIL_NOTIFY_SMTP_TO", "ops@example.org")
        .env("VIGIL_NOTIFY_SMTP_USER", "vigil")
        .env(
            "VIGIL_NOTIFY_SMTP_PASSWORD_FILE",
            &file.display().to_string(),
        )
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("VIGIL_NOTIFY_SMTP_PASSWORD_FILE"),
        "{stderr}"
    );
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    // A key given in the environment is refused without being echoed.
    let (status, stderr) = SinkBuilder::new(&["notification"], &[&router], &store)
        .env(
            "VIGIL_NOTIFY_WEBHOOK",
            "https://events.pagerduty.com/v2/enqueue",
        )
        .env("VIGIL_NOTIFY_WEBHOOK_KEY", ROUTING_KEY)
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("VIGIL_NOTIFY_WEBHOOK_KEY_FILE"), "{stderr}");
    assert!(!stderr.contains(ROUTING_KEY), "{stderr}");
}
