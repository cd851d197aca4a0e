//! The SMTP client in plain mode (`VIGIL_NOTIFY_SMTP_TLS=off`) against a
//! real aiosmtpd, and against scripted servers for refusals and stalls.
//! STARTTLS, implicit TLS and AUTH are tested against a real aiosmtpd with
//! a test CA in `tests/integration/notify.rs`.

use super::*;
use crate::config::Env;
use crate::notify::config::SeveritySet;
use crate::testkit::aiosmtpd::Aiosmtpd;
use crate::testkit::free_port;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// A client for `server` (`host:port`) without TLS.
fn config(server: &str, to: &[&str]) -> SmtpClient {
    let (host, port) = server.rsplit_once(':').unwrap();
    let config = SmtpConfig {
        host: host.to_string(),
        port: port.parse().unwrap(),
        tls: SmtpTls::Off,
        auth: None,
        from: "vigil@monitor.example.org".into(),
        to: to.iter().map(|s| s.to_string()).collect(),
        helo: "monitor.example.org".into(),
        severities: SeveritySet::from_env(&Env::from_pairs([]), "X", "all").unwrap(),
    };
    SmtpClient::new(&config, &Roots::new(vec![]).unwrap()).unwrap()
}

fn send(client: &SmtpClient, n: &serde_json::Value, timeout: Duration) -> Result<(), String> {
    client.send(n, timeout)
}

fn notification() -> serde_json::Value {
    json!({"type":"notification","uuid":"6f1c","id":"n-42","severity":"critical","source":"disk",
           "message":"/var is 97% full\n.leading dot line\n..two dots","hostname":"web1","ts":1700000000})
}

#[test]
fn delivers_to_a_real_aiosmtpd() {
    if !Aiosmtpd::required() {
        return;
    }
    let server = Aiosmtpd::start();
    let cfg = config(
        &format!("127.0.0.1:{}", server.port),
        &["ops@example.org", "oncall@example.org"],
    );
    send(&cfg, &notification(), Duration::from_secs(20)).unwrap();
    let message = server.next_message();
    let (head, body) = message.split_once("\n\n").expect(&message);
    assert!(
        !head.contains("Content-Transfer-Encoding: base64"),
        "{head}"
    );
    for header in [
        "From: vigil@monitor.example.org",
        "To: ops@example.org, oncall@example.org",
        "Subject: [vigil CRITICAL] web1: /var is 97% full",
        "Content-Type: text/plain; charset=utf-8",
        "MIME-Version: 1.0",
    ] {
        assert!(
            head.lines().any(|l| l == header),
            "{header} missing in\n{head}"
        );
    }
    assert!(
        head.lines()
            .any(|l| l.starts_with("Date: ") && l.ends_with(" +0000")),
        "{head}"
    );
    assert!(
        head.lines().any(|l| l == "Auto-Submitted: auto-generated"),
        "{head}"
    );
    assert!(
        head.lines()
            .any(|l| l.starts_with("Message-ID: <") && l.ends_with("@monitor.example.org>")),
        "{head}"
    );
    // Dot-stuffing was undone by the server: the lines arrive as written.
    assert!(
        body.starts_with("/var is 97% full\n.leading dot line\n..two dots\n"),
        "{body}"
    );
    assert!(body.contains("Host: web1"), "{body}");
    assert!(body.contains("\"id\": \"n-42\""), "{body}");
}

/// A server that answers each command from a script and records the
/// commands it got. Each answer is sent after reading one line (the first
/// one, the greeting, at once).
fn scripted(answers: &'static [&'static str]) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut got = Vec::new();
        for (i, answer) in answers.iter().enumerate() {
            if i > 0 {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                // After a 354 the "command" is the whole message, to the dot.
                if answers[i - 1].starts_with("354") {
                    let mut lines = 1;
                    while line != ".\r\n" {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        lines += 1;
                    }
                    line = format!("<message of {lines} lines>");
                }
                got.push(line.trim_end().to_string());
            }
            if writer.write_all(answer.as_bytes()).is_err() {
                break;
            }
        }
        got
    });
    (addr, handle)
}

/// The error of one send to a scripted server answering `script`, after
/// the server has read everything the client said.
fn refused_by(script: &'static [&'static str]) -> String {
    let (addr, server) = scripted(script);
    let err = send(
        &config(&addr, &["a@x"]),
        &notification(),
        Duration::from_secs(10),
    )
    .unwrap_err();
    server.join().unwrap();
    err
}

#[test]
fn a_554_greeting_is_a_failure() {
    let err = refused_by(&["554 no service for you\r\n", "221 bye\r\n"]);
    assert!(
        err.contains("connecting: permanent error (554): no service for you"),
        "{err}"
    );
}

#[test]
fn refused_sender_is_a_failure() {
    let (addr, server) = scripted(&[
        "220 hi\r\n",
        "250 ok\r\n",
        "554 5.7.1 sender rejected\r\n",
        "221 bye\r\n",
    ]);
    let err = send(
        &config(&addr, &["a@x"]),
        &notification(),
        Duration::from_secs(10),
    )
    .unwrap_err();
    assert!(
        err.contains(
            "MAIL FROM:<vigil@monitor.example.org>: permanent error (554): 5.7.1 sender rejected"
        ),
        "{err}"
    );
    let got = server.join().unwrap();
    assert_eq!(got[0], "EHLO monitor.example.org");
}

#[test]
fn a_permanently_refused_recipient_does_not_hold_back_the_others() {
    // First recipient permanently refused, second accepted: delivered to
    // the second.
    let (addr, server) = scripted(&[
        "220 server\r\n",
        "250 hello\r\n",
        "250 sender ok\r\n",
        "550 no such user\r\n",
        "250 recipient ok\r\n",
        "354 go ahead\r\n",
        "250 queued\r\n",
        "221 bye\r\n",
    ]);
    send(
        &config(&addr, &["nobody@x", "ops@x"]),
        &notification(),
        Duration::from_secs(10),
    )
    .unwrap();
    let got = server.join().unwrap();
    assert_eq!(
        &got[..5],
        [
            "EHLO monitor.example.org",
            "MAIL FROM:<vigil@monitor.example.org>",
            "RCPT TO:<nobody@x>",
            "RCPT TO:<ops@x>",
            "DATA",
        ]
    );
    assert!(got[5].starts_with("<message of "), "{got:?}");
    assert_eq!(got[6], "QUIT");
}

#[test]
fn no_250_after_the_data_is_a_failure() {
    let err = refused_by(&[
        "220 hi\r\n",
        "250 ok\r\n",
        "250 ok\r\n",
        "250 ok\r\n",
        "354 go\r\n",
        "452 out of space\r\n",
    ]);
    assert!(
        err.contains("end of data: transient error (452): out of space"),
        "{err}"
    );
}

#[test]
fn temporary_recipient_refusal_fails_for_a_retry() {
    let err = refused_by(&[
        "220 hi\r\n",
        "250 ok\r\n",
        "250 ok\r\n",
        "451 try later\r\n",
        "221 bye\r\n",
    ]);
    assert!(
        err.contains("RCPT TO:<a@x>: transient error (451): try later"),
        "{err}"
    );
}

#[test]
fn every_recipient_refused_is_a_failure() {
    let (addr, server) = scripted(&[
        "220 hi\r\n",
        "250-hi\r\n250 8BITMIME\r\n",
        "250 ok\r\n",
        "550 no\r\n",
        "553 bad\r\n",
        "221 bye\r\n",
    ]);
    let err = send(
        &config(&addr, &["a@x", "b@x"]),
        &notification(),
        Duration::from_secs(10),
    )
    .unwrap_err();
    assert!(
        err.contains("every recipient refused") && err.contains("550") && err.contains("553"),
        "{err}"
    );
    server.join().unwrap();
}

#[test]
fn nobody_listening_is_a_failure() {
    let port = free_port();
    let err = send(
        &config(&format!("127.0.0.1:{port}"), &["a@x"]),
        &notification(),
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(err.contains("connecting: "), "{err}");
}

#[test]
fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let err = send(
        &config(&addr, &["a@x"]),
        &notification(),
        Duration::from_millis(500),
    )
    .unwrap_err();
    assert!(err.contains("timed out"), "{err}");
}

#[test]
fn a_trickling_server_cannot_stretch_the_timeout() {
    // A tarpit: the greeting comes one byte every 200 ms, never ending.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            use std::io::Write;
            for _ in 0..200 {
                if stream.write_all(b"2").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cfg = config(&addr, &["ops@example.org"]);
        let _ = tx.send(send(&cfg, &notification(), Duration::from_secs(1)));
    });
    // Each byte resets nothing: the handler gives up at its deadline,
    // not after 200 bytes × 200 ms.
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the handler returned near its 1 s deadline");
    let err = result.unwrap_err();
    assert!(err.contains("timed out"), "{err}");
}

#[test]
fn conversations_stuck_on_a_tarpit_are_capped() {
    // Every connection gets a byte every 100 ms for 10 s: each conversation
    // outlives its handler's deadline.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::Write;
                let mut stream = stream;
                for _ in 0..100 {
                    if stream.write_all(b"2").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    let client = config(&addr, &["ops@example.org"]);
    for _ in 0..super::MAX_LINGERING {
        let err = send(&client, &notification(), Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }
    let started = std::time::Instant::now();
    let err = send(&client, &notification(), Duration::from_secs(5)).unwrap_err();
    assert!(err.contains("have not ended yet"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused without waiting for its own deadline"
    );
}
