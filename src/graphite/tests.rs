//! The writer against a real carbon-cache (Debian's graphite-carbon), read
//! back with whisper-fetch (python3-whisper): delivery, buffering while
//! carbon is away and reconnecting when it comes (back), overflow.

use super::*;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const CARBON: &str = "/usr/bin/carbon-cache";
const WHISPER_FETCH: &str = "/usr/bin/whisper-fetch";
const WAIT: Duration = Duration::from_secs(60);

fn carbon_present() -> bool {
    let present = Path::new(CARBON).exists() && Path::new(WHISPER_FETCH).exists();
    if !present {
        eprintln!(
            "!!! SKIPPED: {CARBON} or {WHISPER_FETCH} is missing (Debian packages graphite-carbon and python3-whisper)"
        );
    }
    present
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `check` until it gives a value, failing the test after [`WAIT`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A carbon-cache with its own directory and ports.
struct Carbon {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Carbon {
    /// A configured but not yet running carbon.
    fn new() -> Carbon {
        let dir = std::env::temp_dir().join(format!("vigil-carbon-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let conf = format!(
            "[cache]\n\
             STORAGE_DIR = {d}/storage\n\
             LOCAL_DATA_DIR = {d}/whisper\n\
             WHITELISTS_DIR = {d}/lists\n\
             LOG_DIR = {d}/log\n\
             PID_DIR = {d}/run\n\
             USER =\n\
             ENABLE_TAGS = False\n\
             MAX_CACHE_SIZE = inf\n\
             MAX_UPDATES_PER_SECOND = 100000\n\
             MAX_CREATES_PER_MINUTE = 100000\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\n\
             LINE_RECEIVER_PORT = {port}\n\
             ENABLE_UDP_LISTENER = False\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\n\
             PICKLE_RECEIVER_PORT = {pickle}\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\n\
             CACHE_QUERY_PORT = {query}\n\
             LOG_UPDATES = False\n",
            d = dir.display(),
            pickle = free_port(),
            query = free_port(),
        );
        std::fs::write(dir.join("carbon.conf"), conf).unwrap();
        std::fs::write(
            dir.join("storage-schemas.conf"),
            "[all]\npattern = .*\nretentions = 1s:1h\n",
        )
        .unwrap();
        Carbon {
            dir,
            port,
            child: None,
        }
    }

    /// Runs carbon-cache and waits until its line receiver accepts.
    fn start(&mut self) {
        // A pid file left by a killed run would stop the new one.
        let _ = std::fs::remove_dir_all(self.dir.join("run"));
        let log = std::fs::File::create(self.dir.join("console.log")).unwrap();
        let child = Command::new(CARBON)
            .arg(format!(
                "--config={}",
                self.dir.join("carbon.conf").display()
            ))
            .args(["--nodaemon", "start"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        eventually("carbon-cache to listen", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
                panic!("carbon-cache exited with {status}:\n{log}");
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wsp(&self, metric: &str) -> PathBuf {
        self.dir
            .join("whisper")
            .join(format!("{}.wsp", metric.replace('.', "/")))
    }

    /// The non-empty points of a metric, read with whisper-fetch.
    fn points(&self, metric: &str) -> Vec<(i64, f64)> {
        let file = self.wsp(metric);
        if !file.exists() {
            return Vec::new();
        }
        let out = Command::new(WHISPER_FETCH)
            .arg(format!("--from={}", now() - 3000))
            .arg(&file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (ts, v) = l.split_once('\t')?;
                Some((ts.parse().ok()?, v.trim().parse().ok()?))
            })
            .collect()
    }

    /// Waits until `metric` has the point (ts, value).
    fn wait_for(&self, metric: &str, ts: i64, value: f64) {
        eventually(&format!("{metric} = {value} at {ts} in carbon"), || {
            self.points(metric)
                .iter()
                .any(|&(t, v)| t == ts && v == value)
                .then_some(())
        });
    }

    /// Metric files carbon has created.
    fn metric_count(&self) -> usize {
        fn walk(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| {
                            let p = e.path();
                            if p.is_dir() {
                                walk(&p)
                            } else {
                                usize::from(p.extension().is_some_and(|x| x == "wsp"))
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.dir.join("whisper"))
    }
}

impl Drop for Carbon {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    if !carbon_present() {
        return;
    }
    let mut carbon = Carbon::new();
    carbon.start();
    let graphite = Graphite::start(config(carbon.port)).unwrap();
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
    carbon.wait_for("vigil.web1.load.1", ts, 0.25);
    carbon.wait_for("vigil.db1_example_org.check_disk._var", ts, 97.5);
    carbon.wait_for("vigil.web1.cpu.user", ts, 12.0);
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
    if !carbon_present() {
        return;
    }
    let mut carbon = Carbon::new();
    // Carbon is not running yet: lines wait in the buffer.
    let graphite = Graphite::start(config(carbon.port)).unwrap();
    let ts = now();
    graphite.send(vec![line("vigil", &["h", "early"], 1.0, ts).unwrap()]);
    eventually("a failed connect", || {
        (graphite.stats().connect_failures >= 2).then_some(())
    });
    assert_eq!(graphite.stats().buffered, 1);
    carbon.start();
    carbon.wait_for("vigil.h.early", ts, 1.0);
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
    carbon.start();
    carbon.wait_for("vigil.h.while_down", ts2, 2.0);
    carbon.wait_for("vigil.h.while_down2", ts2, 3.0);
    let stats = graphite.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    graphite.stop(Duration::from_secs(5));
}

#[test]
fn overflow_drops_the_oldest_and_counts_them() {
    if !carbon_present() {
        return;
    }
    let mut carbon = Carbon::new();
    let mut cfg = config(carbon.port);
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
    carbon.start();
    // The newest ten and the one in hand arrive; the 19 oldest after it do not.
    for i in 20..30 {
        carbon.wait_for(&format!("vigil.h.m{i:02}"), ts, i as f64);
    }
    carbon.wait_for("vigil.h.m00", ts, 0.0);
    eventually("everything written", || {
        (graphite.stats().buffered == 0).then_some(())
    });
    graphite.stop(Duration::from_secs(5));
    assert_eq!(carbon.metric_count(), 11);
    assert!(!carbon.wsp("vigil.h.m01").exists());
}

#[test]
fn many_small_batches_all_arrive_and_stop_flushes() {
    if !carbon_present() {
        return;
    }
    let mut carbon = Carbon::new();
    carbon.start();
    let mut cfg = config(carbon.port);
    cfg.batch = 7;
    let graphite = Graphite::start(cfg).unwrap();
    let ts = now();
    let lines: Vec<String> = (0..500)
        .map(|i| line("vigil", &["h", "many"], i as f64, ts - i).unwrap())
        .collect();
    graphite.send(lines);
    graphite.stop(Duration::from_secs(10));
    eventually("all 500 points", || {
        (carbon.points("vigil.h.many").len() == 500).then_some(())
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
    if !carbon_present() {
        return;
    }
    let mut carbon = Carbon::new();
    carbon.start();
    let mut cfg = config(carbon.port);
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
