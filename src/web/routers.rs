//! The routers' status for `vigil web`: one thread owns the ZeroMQ client
//! that asks every router for `{"op":"status"}` (as `vigil status` does),
//! asks again every refresh period, and works out each type's recent rate
//! from two answers in a row. A second thread keeps the latest sample and
//! answers request threads over a bounded channel at once, even while the
//! first one waits on an unreachable router (up to one timeout per
//! router): a page waits only for the very first sample. No socket is
//! shared and the sample has one owner.

use crate::status::snapshot::{self, RouterRow};
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender};
use std::collections::BTreeMap;
use std::time::Duration;

/// The routers as last asked.
#[derive(Debug, Clone, Default)]
pub struct RouterSample {
    /// When they were asked (Unix seconds; 0 before the first time).
    pub at: f64,
    pub rows: Vec<RouterRow>,
    /// Per endpoint: messages forwarded per second and type, between the
    /// previous answer and this one.
    pub rates: Vec<(String, BTreeMap<String, f64>)>,
    /// The seconds those rates cover.
    pub window: Option<f64>,
}

/// A request thread's question: the reply channel for the sample.
pub type Ask = Sender<RouterSample>;

/// A handle on the keeper thread.
#[derive(Clone)]
pub struct Routers {
    asks: Sender<Ask>,
}

impl Routers {
    /// The latest sample; an empty one if none comes within `wait` (only
    /// before the routers were first asked).
    pub fn latest(&self, wait: Duration) -> RouterSample {
        let (tx, rx) = bounded(1);
        if self.asks.send_timeout(tx, wait).is_err() {
            return RouterSample::default();
        }
        rx.recv_timeout(wait).unwrap_or_default()
    }
}

/// Starts the poller and the keeper; they end when every [`Routers`]
/// handle is dropped (the poller after the round it is in). The handle
/// returned is the keeper's, which joins the poller.
pub fn start(
    endpoints: Vec<String>,
    timeout: Duration,
    every: Duration,
    keys: Option<crate::curve::ClientKeys>,
) -> std::io::Result<(Routers, std::thread::JoinHandle<()>)> {
    let (asks, inbox) = bounded::<Ask>(64);
    let (samples, fresh) = bounded::<RouterSample>(1);
    // Dropped by the keeper when it ends: wakes the poller's wait.
    let (stop, stopped) = bounded::<()>(0);
    let poller = std::thread::Builder::new()
        .name("web-routers".into())
        .spawn(move || poll(&endpoints, timeout, every, keys, &samples, &stopped))?;
    let keeper = std::thread::Builder::new()
        .name("web-routers-keep".into())
        .spawn(move || {
            keep(&fresh, &inbox);
            drop(stop);
            let _ = poller.join();
        })?;
    Ok((Routers { asks }, keeper))
}

/// Asks the routers every `every`, handing each sample to the keeper.
fn poll(
    endpoints: &[String],
    timeout: Duration,
    every: Duration,
    keys: Option<crate::curve::ClientKeys>,
    samples: &Sender<RouterSample>,
    stopped: &Receiver<()>,
) {
    let mut latest = RouterSample::default();
    loop {
        let rows = snapshot::routers(endpoints, timeout, keys.clone());
        latest = next_sample(&latest, rows, crate::store::now());
        if samples.send(latest.clone()).is_err() {
            return;
        }
        match stopped.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Keeps the latest sample and answers each ask with it at once; asks
/// that come before the first sample wait for it.
fn keep(fresh: &Receiver<RouterSample>, inbox: &Receiver<Ask>) {
    let mut latest: Option<RouterSample> = None;
    let mut waiting: Vec<Ask> = Vec::new();
    loop {
        select! {
            recv(fresh) -> sample => {
                let Ok(sample) = sample else { return };
                for ask in waiting.drain(..) {
                    let _ = ask.try_send(sample.clone());
                }
                latest = Some(sample);
            }
            recv(inbox) -> ask => {
                let Ok(ask) = ask else { return };
                match &latest {
                    Some(sample) => {
                        let _ = ask.try_send(sample.clone());
                    }
                    // As many as come before the first sample; each asker
                    // gives up after its own wait.
                    None => waiting.push(ask),
                }
            }
        }
    }
}

/// The sample after `previous`, with rates from the counters' growth.
pub fn next_sample(previous: &RouterSample, rows: Vec<RouterRow>, at: f64) -> RouterSample {
    let window = (previous.at > 0.0)
        .then_some(at - previous.at)
        .filter(|w| *w > 0.0);
    let forwarded = |row: &RouterRow| -> BTreeMap<String, f64> {
        row.status
            .as_ref()
            .and_then(|s| s["forwarded_by_type"].as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let rates = match window {
        None => Vec::new(),
        Some(window) => rows
            .iter()
            .filter_map(|row| {
                let before = previous.rows.iter().find(|p| p.endpoint == row.endpoint)?;
                let (then, now) = (forwarded(before), forwarded(row));
                let rates = now
                    .iter()
                    .filter_map(|(k, n)| {
                        let d = n - then.get(k)?;
                        // A restarted router counts from zero again.
                        (d >= 0.0).then(|| (k.clone(), d / window))
                    })
                    .collect();
                Some((row.endpoint.clone(), rates))
            })
            .collect(),
    };
    RouterSample {
        at,
        rows,
        rates,
        window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(forwarded: u64) -> RouterRow {
        RouterRow {
            endpoint: "tcp://r:1".into(),
            reachable: true,
            status: Some(json!({"ok": true, "forwarded_by_type": {"stats": forwarded}})),
            error: None,
        }
    }

    /// An ask before the first sample waits for it; once there is one,
    /// every ask is answered with the latest at once.
    #[test]
    fn the_keeper_answers_with_the_latest_sample() {
        const WAIT: Duration = Duration::from_secs(10);
        let (samples, fresh) = bounded(1);
        let (asks, inbox) = bounded(4);
        let keeper = std::thread::spawn(move || keep(&fresh, &inbox));
        let (early, early_answer) = bounded(1);
        asks.send(early).unwrap();
        let sample = |at| RouterSample {
            at,
            ..Default::default()
        };
        samples.send(sample(5.0)).unwrap();
        assert_eq!(early_answer.recv_timeout(WAIT).unwrap().at, 5.0);
        let routers = Routers { asks };
        assert_eq!(routers.latest(WAIT).at, 5.0);
        samples.send(sample(6.0)).unwrap();
        // The keeper takes the new sample before or after this ask; the
        // next one after a second sample sees 6 at the latest.
        let seen = routers.latest(WAIT).at;
        assert!(seen == 5.0 || seen == 6.0, "{seen}");
        samples.send(sample(7.0)).unwrap();
        assert!(
            routers.latest(WAIT).at >= 6.0,
            "the bounded(1) channel held 7 until 6 was taken"
        );
        drop(routers);
        keeper.join().unwrap();
    }

    #[test]
    fn rates_from_two_answers() {
        let first = next_sample(&RouterSample::default(), vec![row(100)], 1000.0);
        assert!(first.rates.is_empty());
        let second = next_sample(&first, vec![row(150)], 1010.0);
        assert_eq!(second.window, Some(10.0));
        assert_eq!(second.rates[0].1["stats"], 5.0);
        let restarted = next_sample(&second, vec![row(3)], 1020.0);
        assert!(restarted.rates[0].1.is_empty());
    }
}
