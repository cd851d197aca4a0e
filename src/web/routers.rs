//! The routers' status for `vigil web`: one thread owns the ZeroMQ client
//! that asks every router for `{"op":"status"}` (as `vigil status` does),
//! asks again every refresh period, and works out each type's recent rate
//! from two answers in a row. Request threads ask it for the latest sample
//! over a bounded channel, so a page never waits on an unreachable router
//! and no socket is shared.

use crate::status::snapshot::{self, RouterRow};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

/// A handle on the poller thread.
#[derive(Clone)]
pub struct Routers {
    asks: Sender<Ask>,
}

impl Routers {
    /// The latest sample; an empty one if the poller does not answer
    /// within `wait` (it is asking routers).
    pub fn latest(&self, wait: Duration) -> RouterSample {
        let (tx, rx) = bounded(1);
        if self.asks.send_timeout(tx, wait).is_err() {
            return RouterSample::default();
        }
        rx.recv_timeout(wait).unwrap_or_default()
    }
}

/// Starts the poller; it ends when every [`Routers`] handle is dropped.
pub fn start(
    endpoints: Vec<String>,
    timeout: Duration,
    every: Duration,
    keys: Option<crate::curve::ClientKeys>,
) -> std::io::Result<(Routers, std::thread::JoinHandle<()>)> {
    let (asks, inbox) = bounded::<Ask>(64);
    let thread = std::thread::Builder::new()
        .name("web-routers".into())
        .spawn(move || poll(&endpoints, timeout, every, keys, &inbox))?;
    Ok((Routers { asks }, thread))
}

fn poll(
    endpoints: &[String],
    timeout: Duration,
    every: Duration,
    keys: Option<crate::curve::ClientKeys>,
    inbox: &Receiver<Ask>,
) {
    let mut latest = RouterSample::default();
    loop {
        let rows = snapshot::routers(endpoints, timeout, keys.clone());
        latest = next_sample(&latest, rows, crate::store::now());
        let next = Instant::now() + every;
        loop {
            match inbox.recv_deadline(next) {
                Ok(reply) => {
                    let _ = reply.try_send(latest.clone());
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
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
