//! The writer against a real carbon-cache (Debian's graphite-carbon), read
//! back with whisper-fetch (python3-whisper): delivery, buffering while
//! carbon is away and reconnecting when it comes (back), overflow.

use super::*;
use crate::testkit::carbon::Carbon;
use crate::testkit::free_port;

const WAIT: Duration = Duration::from_secs(60);

fn now() -> i64 {
    crate::clock::unix_secs() as i64
}

/// Polls `check` until it gives a value, failing the test after [`WAIT`].
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    crate::testkit::wait_for(what, WAIT, check)
}

fn config(port: u16) -> GraphiteConfig {
    let server = format!("127.0.0.1:{port}");
    let env = Env::from_pairs([
        ("VIGIL_GRAPHITE", server.as_str()),
        ("VIGIL_GRAPHITE_BACKOFF_MIN_MS", "20"),
        ("VIGIL_GRAPHITE_BACKOFF_MAX_MS", "200"),
    ]);
    GraphiteConfig::from_env(&env).unwrap()
}

#[test]
fn config_defaults_and_errors() {
    let c = GraphiteConfig::from_env(&Env::from_pairs([])).unwrap();
    assert_eq!(c.server, "127.0.0.1:2003");
    assert_eq!(c.prefix, "vigil");
    assert_eq!((c.buffer, c.batch), (100_000, 500));
    for (var, value) in [
        ("VIGIL_GRAPHITE", "host:notaport"),
        ("VIGIL_GRAPHITE_PREFIX", "vigil prod"),
        ("VIGIL_GRAPHITE_PREFIX", "vigil..prod"),
        ("VIGIL_GRAPHITE_BUFFER", "0"),
        ("VIGIL_GRAPHITE_BATCH", "x"),
        ("VIGIL_GRAPHITE_BACKOFF_MAX_MS", "1"),
    ] {
        let err = GraphiteConfig::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
        assert_eq!(err.var, var, "{err}");
    }
}

#[test]
fn lines_reach_a_real_carbon() {
    if !Carbon::required() {
        return;
    }
    let carbon = Carbon::start();
    let graphite = Graphite::start(config(carbon.port())).unwrap();
    let ts = now();
    let lines = vec![
        line("vigil", &["web1", "load.1"], 0.25, ts).unwrap(),
        line(
            "vigil",
            &["db1.example.org", "check_disk", "/var"],
            97.5,
            ts,
        )
        .unwrap(),
        line("vigil", &["web1", "cpu.user"], 12.0, ts).unwrap(),
    ];
    graphite.send(lines);
    carbon.expect_point("vigil.web1.load.1", ts, 0.25);
    carbon.expect_point("vigil.db1_example_org.check_disk._var", ts, 97.5);
    carbon.expect_point("vigil.web1.cpu.user", ts, 12.0);
    let stats = graphite.stats();
    assert_eq!(
        (stats.sent, stats.dropped, stats.buffered),
        (3, 0, 0),
        "{stats:?}"
    );
    graphite.stop(Duration::from_secs(5));
}

#[test]
fn buffers_while_carbon_is_down_and_reconnects() {
    if !Carbon::required() {
        return;
    }
    let mut carbon = Carbon::in_scratch();
    // Carbon is not running yet: lines wait in the buffer.
    let graphite = Graphite::start(config(carbon.port())).unwrap();
    let ts = now();
    graphite.send(vec![line("vigil", &["h", "early"], 1.0, ts).unwrap()]);
    eventually("a failed connect", || {
        (graphite.stats().connect_failures >= 2).then_some(())
    });
    assert_eq!(graphite.stats().buffered, 1);
    carbon.run().expect("start carbon-cache");
    carbon.expect_point("vigil.h.early", ts, 1.0);
    assert_eq!(
        graphite.stats().reconnects,
        0,
        "the first connection is not a reconnect"
    );

    // Carbon goes away and comes back on the same port: the lines sent
    // meanwhile arrive, through a new connection.
    carbon.kill();
    let failures = graphite.stats().connect_failures;
    let ts2 = ts - 10;
    graphite.send(vec![line("vigil", &["h", "while_down"], 2.0, ts2).unwrap()]);
    eventually("the writer to notice carbon is gone", || {
        (graphite.stats().connect_failures > failures).then_some(())
    });
    graphite.send(vec![line("vigil", &["h", "while_down2"], 3.0, ts2).unwrap()]);
    carbon.run().expect("start carbon-cache");
    carbon.expect_point("vigil.h.while_down", ts2, 2.0);
    carbon.expect_point("vigil.h.while_down2", ts2, 3.0);
    let stats = graphite.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    graphite.stop(Duration::from_secs(5));
}

#[test]
fn overflow_drops_the_oldest_and_counts_them() {
    if !Carbon::required() {
        return;
    }
    let mut carbon = Carbon::in_scratch();
    let mut cfg = config(carbon.port());
    cfg.buffer = 10;
    cfg.batch = 4;
    let graphite = Graphite::start(cfg).unwrap();
    let ts = now();
    // Wait until the writer is failing to connect, holding what it took.
    graphite.send(vec![line("vigil", &["h", "m00"], 0.0, ts).unwrap()]);
    eventually("a failed connect", || {
        (graphite.stats().connect_failures >= 1).then_some(())
    });
    let lines: Vec<String> = (1..30)
        .map(|i| line("vigil", &["h", &format!("m{i:02}")], i as f64, ts).unwrap())
        .collect();
    graphite.send(lines);
    let stats = graphite.stats();
    // 30 lines in all; one in the writer's hand, 10 in the buffer.
    assert_eq!(stats.buffered, 11, "{stats:?}");
    assert_eq!(stats.dropped, 19, "{stats:?}");
    carbon.run().expect("start carbon-cache");
    // The newest ten and the one in hand arrive; the 19 oldest after it do not.
    for i in 20..30 {
        carbon.expect_point(&format!("vigil.h.m{i:02}"), ts, i as f64);
    }
    carbon.expect_point("vigil.h.m00", ts, 0.0);
    eventually("everything written", || {
        (graphite.stats().buffered == 0).then_some(())
    });
    graphite.stop(Duration::from_secs(5));
    assert_eq!(carbon.metric_count(), 11);
    assert!(!carbon.wsp("vigil.h.m01").exists());
}

#[test]
fn many_small_batches_all_arrive_and_stop_flushes() {
    if !Carbon::required() {
        return;
    }
    let carbon = Carbon::start();
    let mut cfg = config(carbon.port());
    cfg.batch = 7;
    let graphite = Graphite::start(cfg).unwrap();
    let ts = now();
    let lines: Vec<String> = (0..500)
        .map(|i| line("vigil", &["h", "many"], i as f64, ts - i).unwrap())
        .collect();
    graphite.send(lines);
    graphite.stop(Duration::from_secs(10));
    eventually("all 500 points", || {
        (carbon
            .points("vigil.h.many", now() - 3000, now() + 60)
            .len()
            == 500)
            .then_some(())
    });
}

#[test]
fn stop_gives_up_at_the_deadline_without_carbon() {
    let port = free_port();
    let graphite = Graphite::start(config(port)).unwrap();
    graphite.send(vec!["vigil.h.m 1 1\n".to_string()]);
    let started = Instant::now();
    graphite.stop(Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn dropping_the_handle_joins_the_writer() {
    let port = free_port();
    let graphite = Graphite::start(config(port)).unwrap();
    graphite.send(vec!["vigil.h.m 1 1".to_string()]);
    assert_eq!(graphite.stats().buffered, 1);
    let started = Instant::now();
    drop(graphite);
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Throughput of the writer into a real carbon-cache: lines/s written to
/// the socket (carbon reads as fast as it parses, so TCP backpressure makes
/// this carbon's intake rate too). Run with
/// `cargo test --release graphite::tests::bench_writer -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_writer_into_carbon() {
    if !Carbon::required() {
        return;
    }
    let carbon = Carbon::start();
    let mut cfg = config(carbon.port());
    cfg.buffer = 1_000_000;
    let graphite = Graphite::start(cfg).unwrap();
    let total = 200_000u64;
    let ts = now();
    let started = Instant::now();
    for chunk in 0..total / 1000 {
        let lines = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                line(
                    "vigil",
                    &[&format!("host{}", n % 100), "bench.value"],
                    n as f64,
                    ts - (n / 100 % 3000) as i64,
                )
                .unwrap()
            })
            .collect();
        graphite.send(lines);
    }
    let queued = started.elapsed();
    eventually("all lines written", || {
        (graphite.stats().sent == total).then_some(())
    });
    let elapsed = started.elapsed();
    let stats = graphite.stats();
    assert_eq!(stats.dropped, 0);
    println!(
        "{{\"lines\":{total},\"queue_s\":{:.3},\"written_s\":{:.3},\"lines_per_s\":{:.0}}}",
        queued.as_secs_f64(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    graphite.stop(Duration::from_secs(5));
}
