//! The delivery-latency phase: how long a back-end `run_plugin` request
//! takes to reach its client through the router (REQ → REP → client thread
//! → ROUTER → DEALER) while other clients keep the router busy, which is
//! when a scheduler's requests have to get through.

use super::backend::Backend;
use super::fleet::{self, ContextPool, Dealer};
use super::load::{self, Ledger, LoadResult, LoadSpec, Target};
use super::{join, payload, readable, spawn, BenchError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Deliveries timed with the router idle, before the stream starts.
const IDLE_REQUESTS: usize = 200;
/// The whole request loop gives up after this, keeping what it measured.
const PHASE_LIMIT: Duration = Duration::from_secs(45);
/// The background stream is stopped explicitly; this only bounds it.
const STREAM_LIMIT: Duration = Duration::from_secs(60);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// A delivery later than this counts as lost.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct LatencyResult {
    pub requested: usize,
    /// Request-to-delivery times under load, sorted.
    pub samples: Vec<Duration>,
    /// The same with the router idle, sorted: the baseline.
    pub idle_samples: Vec<Duration>,
    /// Requests the router answered with `ok:false`, by error code.
    pub refused: BTreeMap<String, u64>,
    /// Requests answered `ok:true` whose frame never reached the client.
    pub lost: u64,
    /// The phase hit `PHASE_LIMIT` before sending every request.
    pub cut_short: bool,
    /// The background stream meanwhile.
    pub load: LoadResult,
}

/// Times deliveries to one probe client: first a few with the router
/// idle, as a baseline, then `requests` while `spec.clients` others stream
/// at full speed. `backend_endpoint` is the router's REP endpoint.
pub fn measure(
    target: &Target,
    backend_endpoint: &str,
    spec: &LoadSpec,
    requests: usize,
) -> Result<LatencyResult, BenchError> {
    let prepared = load::prepare(target, spec)?;
    let mut pool = ContextPool::default();
    let probe = Dealer::connect(
        &mut pool,
        &target.client,
        fleet::DEFAULT_HWM,
        target.curve.as_deref(),
    )?;
    probe.send_hello()?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    if fleet::await_welcomes(std::slice::from_ref(&probe), deadline)? != 1 {
        let what = "waiting for the probe client's welcome";
        return Err(BenchError::timeout(what));
    }
    let backend = Backend::connect(&mut pool, backend_endpoint, target.curve.as_deref())?;
    let uuid = probe.uuid.clone();
    let listener = Listener::start(probe)?;
    let idle_requests = requests.min(IDLE_REQUESTS);
    let idle = time_requests(&backend, &uuid, &listener.deliveries, 0, idle_requests)?;

    let ledger = Ledger::router(backend_endpoint, target.curve.clone())?;
    let running = prepared.start(STREAM_LIMIT)?;
    let first = idle_requests as u64;
    let timed = time_requests(&backend, &uuid, &listener.deliveries, first, requests);
    running.stop();
    let load = running.finish(&ledger);
    listener.stop()?;
    let mut result = timed?;
    result.idle_samples = idle.samples;
    result.load = load?;
    Ok(result)
}

/// The probe client's thread, stopped and joined however `measure` ends.
struct Listener {
    listening: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), BenchError>>>,
    deliveries: Receiver<(u64, Instant)>,
}

impl Listener {
    fn start(probe: Dealer) -> Result<Listener, BenchError> {
        let listening = Arc::new(AtomicBool::new(true));
        let (tx, deliveries) = crossbeam_channel::unbounded();
        let flag = Arc::clone(&listening);
        let handle = spawn("bench-probe", move || listen(&probe, &tx, &flag))?;
        Ok(Listener {
            listening,
            handle: Some(handle),
            deliveries,
        })
    }

    fn stop(mut self) -> Result<(), BenchError> {
        self.listening.store(false, Ordering::Release);
        match self.handle.take() {
            Some(handle) => join(handle)?,
            None => Ok(()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.listening.store(false, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = join(handle);
        }
    }
}

/// The probe client: stamps each delivered frame the moment it is read and
/// hands (run_id, when) to the timing loop.
fn listen(
    probe: &Dealer,
    tx: &Sender<(u64, Instant)>,
    listening: &AtomicBool,
) -> Result<(), BenchError> {
    while listening.load(Ordering::Acquire) {
        if !readable(&probe.socket, Duration::from_millis(50))? {
            continue;
        }
        loop {
            let frame = match probe.socket.recv_bytes(zmq::DONTWAIT) {
                Ok(frame) => frame,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(BenchError::zmq("receiving at the probe client", e)),
            };
            let at = Instant::now();
            if let Some(run_id) = payload::run_id(&frame) {
                let _ = tx.send((run_id, at));
            }
        }
    }
    Ok(())
}

fn time_requests(
    backend: &Backend,
    uuid: &str,
    deliveries: &Receiver<(u64, Instant)>,
    first_run_id: u64,
    requests: usize,
) -> Result<LatencyResult, BenchError> {
    let mut result = LatencyResult {
        requested: requests,
        ..LatencyResult::default()
    };
    let give_up = Instant::now() + PHASE_LIMIT;
    for run_id in first_run_id..first_run_id + requests as u64 {
        if Instant::now() >= give_up {
            result.cut_short = true;
            break;
        }
        let body = payload::run_plugin(uuid, run_id);
        let sent_at = Instant::now();
        let reply = backend.ask(&body, REPLY_TIMEOUT)?;
        if let Some(code) = refusal(&reply) {
            *result.refused.entry(code).or_default() += 1;
            continue;
        }
        match await_delivery(deliveries, run_id)? {
            Some(at) => result.samples.push(at.saturating_duration_since(sent_at)),
            None => result.lost += 1,
        }
    }
    result.samples.sort();
    Ok(result)
}

/// The error code of an `ok:false` reply; `None` when the router took it.
fn refusal(reply: &serde_json::Value) -> Option<String> {
    if reply.get("ok") == Some(&serde_json::Value::Bool(true)) {
        return None;
    }
    let code = reply.get("error").and_then(|e| e.as_str());
    Some(code.unwrap_or("malformed_reply").to_string())
}

/// Waits for the delivery of `run_id`, skipping late ones of earlier runs.
fn await_delivery(
    deliveries: &Receiver<(u64, Instant)>,
    run_id: u64,
) -> Result<Option<Instant>, BenchError> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match deliveries.recv_timeout(left) {
            Ok((id, at)) if id == run_id => return Ok(Some(at)),
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) => return Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(BenchError::protocol(
                    "timing deliveries",
                    "the probe client stopped",
                ))
            }
        }
    }
}

/// Summary figures in microseconds: p50, p99 (nearest rank) and max.
pub fn percentiles_us(sorted: &[Duration]) -> Option<(f64, f64, f64)> {
    let micros = |d: &Duration| d.as_nanos() as f64 / 1000.0;
    let max = micros(sorted.last()?);
    let at = |p: f64| {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        micros(&sorted[rank.clamp(1, sorted.len()) - 1])
    };
    Some((at(50.0), at(99.0), max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentiles_us(&samples), Some((50.0, 99.0, 100.0)));
        let one = [Duration::from_micros(7)];
        assert_eq!(percentiles_us(&one), Some((7.0, 7.0, 7.0)));
        assert_eq!(percentiles_us(&[]), None);
    }

    #[test]
    fn only_ok_true_is_accepted() {
        assert_eq!(refusal(&serde_json::json!({"ok": true})), None);
        let refused = serde_json::json!({"ok": false, "error": "unreachable"});
        assert_eq!(refusal(&refused).as_deref(), Some("unreachable"));
    }
}
