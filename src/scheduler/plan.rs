//! When each (client, plugin) runs: pure decisions, no store, no sockets.
//!
//! A plugin with interval I runs in slots `[k·I + phase, (k+1)·I + phase)`
//! counted from the Unix epoch, once per slot, at the slot's start. The
//! phase is a fixed hash of the client's UUID and the plugin's name
//! (FNV-1a, not std's randomly seeded hasher), so runs are spread over the
//! interval, and every scheduler, before and after a restart or a lease
//! handover, computes the same slots. "Already run in this slot" is read
//! from the time the last run was sent, which the store keeps, so a new
//! lease holder does not repeat what its predecessor sent.

use crate::fnv::Fnv1a;

/// The shortest interval the scheduler honours, in seconds.
pub const MIN_INTERVAL_SECS: f64 = 1.0;

/// 64-bit FNV-1a of `uuid`, a zero byte, and `plugin`.
pub fn splay_hash(uuid: &str, plugin: &str) -> u64 {
    Fnv1a::new()
        .write(uuid.as_bytes())
        .write(&[0])
        .write(plugin.as_bytes())
        .finish()
}

/// The pair's phase within its interval, in seconds: `[0, interval)`.
pub fn phase(uuid: &str, plugin: &str, interval: f64) -> f64 {
    // The top 53 bits make an exact fraction in [0, 1).
    let fraction = (splay_hash(uuid, plugin) >> 11) as f64 / (1u64 << 53) as f64;
    fraction * interval
}

/// The interval actually used for a declared `interval_s`: None (not
/// scheduled) when absent, not a number or not positive; at least
/// [`MIN_INTERVAL_SECS`].
pub fn effective_interval(declared: Option<f64>) -> Option<f64> {
    let interval = declared.filter(|i| i.is_finite() && *i > 0.0)?;
    Some(interval.max(MIN_INTERVAL_SECS))
}

/// The start of the slot `now` is in: the latest `k·interval + phase <= now`.
pub fn slot_start(now: f64, interval: f64, phase: f64) -> f64 {
    let start = ((now - phase) / interval).floor() * interval + phase;
    // Rounding may land a hair past `now`; the slot before is the right one.
    if start > now {
        start - interval
    } else {
        start
    }
}

/// Whether a client may be sent runs: its last heartbeat is younger than
/// its heartbeat interval times the grace. A client that never sent a
/// heartbeat is not schedulable.
pub fn schedulable(
    last_heartbeat: Option<f64>,
    heartbeat_interval: Option<f64>,
    grace: f64,
    now: f64,
) -> bool {
    match (last_heartbeat, heartbeat_interval) {
        (Some(at), Some(interval)) if interval.is_finite() && interval > 0.0 => {
            at + interval * grace > now
        }
        _ => false,
    }
}

/// What to do with one pair now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Send a run now.
    Run,
    /// Nothing until this time (the next slot's start).
    WaitUntil(f64),
}

/// Decides for one pair: run when the current slot has had no run yet
/// (`last_sent` before its start) and is at most `catch_up` seconds old;
/// otherwise wait for the next slot.
pub fn decide(
    now: f64,
    interval: f64,
    phase: f64,
    last_sent: Option<f64>,
    catch_up: f64,
) -> Decision {
    let start = slot_start(now, interval, phase);
    let next = start + interval;
    // A last send "in the future" means the wall clock stepped back; it does
    // not count for this slot, or nothing would run until the clock caught up.
    let done = last_sent.is_some_and(|sent| sent >= start && sent < next);
    if done || now - start > catch_up {
        Decision::WaitUntil(next)
    } else {
        Decision::Run
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_clock_stepped_back_does_not_stop_scheduling() {
        // Last sent at 4600, then the clock went back to 965 (slot 960–1020).
        assert_eq!(
            super::decide(965.0, 60.0, 0.0, Some(4600.0), 30.0),
            super::Decision::Run
        );
    }

    use super::*;

    const U: &str = "6f1c1d7e-8a5b-4c1e-9d2f-0a1b2c3d4e5f";

    #[test]
    fn hash_is_fnv1a_and_fixed() {
        // FNV-1a of "\0" (reference value), and a pinned pair: a change here
        // would move every run of every deployment.
        assert_eq!(splay_hash("", ""), 0xaf63_bd4c_8601_b7df);
        assert_eq!(splay_hash(U, "load"), 0x4ea7_f51e_5126_f804);
        assert_ne!(splay_hash("ab", "c"), splay_hash("a", "bc"));
    }

    #[test]
    fn phase_is_within_the_interval_and_spread() {
        let mut buckets = [0u32; 10];
        for n in 0..10_000 {
            let p = phase(&format!("client-{n}"), "load", 60.0);
            assert!((0.0..60.0).contains(&p));
            buckets[(p / 6.0) as usize] += 1;
        }
        // 1,000 expected per bucket; a fair hash stays well inside this.
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
    }

    #[test]
    fn slots_start_at_phase_multiples() {
        assert_eq!(slot_start(125.0, 60.0, 10.0), 70.0);
        assert_eq!(slot_start(130.0, 60.0, 10.0), 130.0);
        assert_eq!(slot_start(9.0, 60.0, 10.0), -50.0);
    }

    #[test]
    fn runs_once_per_slot() {
        let (i, p, c) = (60.0, 10.0, 30.0);
        assert_eq!(decide(130.0, i, p, None, c), Decision::Run);
        assert_eq!(
            decide(131.0, i, p, Some(130.0), c),
            Decision::WaitUntil(190.0)
        );
        // A run sent in the previous slot does not count for this one.
        assert_eq!(decide(131.0, i, p, Some(129.9), c), Decision::Run);
        // Too late to catch up: wait for the next slot.
        assert_eq!(
            decide(165.0, i, p, Some(100.0), c),
            Decision::WaitUntil(190.0)
        );
        assert_eq!(decide(160.0, i, p, Some(100.0), c), Decision::Run);
    }

    #[test]
    fn intervals_below_the_minimum_are_raised_and_bad_ones_refused() {
        assert_eq!(effective_interval(Some(0.2)), Some(1.0));
        assert_eq!(effective_interval(Some(300.0)), Some(300.0));
        assert_eq!(effective_interval(Some(0.0)), None);
        assert_eq!(effective_interval(Some(f64::NAN)), None);
        assert_eq!(effective_interval(None), None);
    }

    #[test]
    fn stale_clients_are_not_schedulable() {
        assert!(schedulable(Some(100.0), Some(10.0), 3.0, 129.0));
        assert!(!schedulable(Some(100.0), Some(10.0), 3.0, 130.0));
        assert!(!schedulable(None, Some(10.0), 3.0, 100.0));
        assert!(!schedulable(Some(100.0), None, 3.0, 100.0));
        assert!(!schedulable(Some(100.0), Some(0.0), 3.0, 100.0));
    }
}
