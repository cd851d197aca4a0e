//! The planner's table of (client, plugin) pairs and which of them are due:
//! the slot logic of the scheduler, without a store, a channel or a clock
//! of its own.
//!
//! The planner thread (`planner.rs`) loads pairs from the store, asks
//! [`Slots::due`] what to send at `now` and hands the batch to the
//! dispatcher; the rules (one run per slot, a late slot dropped, a stale
//! client skipped, a batch capped, a pair's last send kept across reloads)
//! are unit-tested below.

use super::dispatch::Job;
use super::plan;
use std::collections::HashMap;

/// Runs handed to the dispatcher at once.
pub const MAX_BATCH: usize = 1_000;
/// The longest the planner sleeps without looking around, seconds.
pub const MAX_SLEEP: f64 = 1.0;

/// One declared plugin of one client, and its scheduling state.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub uuid: String,
    pub plugin: String,
    pub interval: f64,
    pub phase: f64,
    pub timeout_s: f64,
    pub last_heartbeat: Option<f64>,
    pub heartbeat_interval: Option<f64>,
    /// When the last run was sent (by this or, at takeover, any scheduler).
    pub last_sent: Option<f64>,
    /// Nothing to decide before this time.
    pub next_check: f64,
}

impl Pair {
    /// A pair as declared, its phase from the splay, never sent.
    pub fn new(uuid: String, plugin: String, interval: f64, timeout_s: f64) -> Pair {
        Pair {
            phase: plan::phase(&uuid, &plugin, interval),
            uuid,
            plugin,
            interval,
            timeout_s,
            last_heartbeat: None,
            heartbeat_interval: None,
            last_sent: None,
            next_check: 0.0,
        }
    }
}

/// The rules `due` applies.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// How late in its slot a run may still be sent, seconds.
    pub catch_up: f64,
    /// A client is schedulable while its last heartbeat is younger than
    /// its interval times this.
    pub heartbeat_grace: f64,
}

#[derive(Debug, Default)]
pub struct Slots {
    pairs: Vec<Pair>,
}

impl Slots {
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Forgets every pair (a new lease: the store says what was sent).
    pub fn clear(&mut self) {
        self.pairs.clear();
    }

    /// Takes a fresh load of the declared pairs, keeping each known pair's
    /// last send. A pair new to this table while others are known (a plugin
    /// removed and declared again) takes its last send from `stored`, so it
    /// does not run twice in one slot; after a `clear` the load already
    /// carries the store's last sends.
    pub fn replace(&mut self, loaded: Vec<Pair>, mut stored: impl FnMut(&Pair) -> Option<f64>) {
        let fresh = self.pairs.is_empty();
        let mut known: HashMap<(String, String), Option<f64>> = self
            .pairs
            .drain(..)
            .map(|p| ((p.uuid, p.plugin), p.last_sent))
            .collect();
        for mut pair in loaded {
            match known.remove(&(pair.uuid.clone(), pair.plugin.clone())) {
                Some(sent) => pair.last_sent = sent,
                None if !fresh => pair.last_sent = stored(&pair),
                None => {}
            }
            self.pairs.push(pair);
        }
    }

    /// The runs due at `now` (at most [`MAX_BATCH`]), each marked sent, and
    /// when to look again. A pair whose client is not schedulable waits
    /// for the next reload (`next_reload_at`), since liveness changes only
    /// then.
    pub fn due(&mut self, now: f64, rules: &Rules, next_reload_at: f64) -> (Vec<Job>, f64) {
        let mut next = now + MAX_SLEEP;
        let mut batch = Vec::new();
        for pair in &mut self.pairs {
            if pair.next_check > now {
                next = next.min(pair.next_check);
                continue;
            }
            if !plan::schedulable(
                pair.last_heartbeat,
                pair.heartbeat_interval,
                rules.heartbeat_grace,
                now,
            ) {
                pair.next_check = next_reload_at;
                continue;
            }
            match plan::decide(
                now,
                pair.interval,
                pair.phase,
                pair.last_sent,
                rules.catch_up,
            ) {
                plan::Decision::Run if batch.len() < MAX_BATCH => {
                    let slot_end = plan::slot_start(now, pair.interval, pair.phase) + pair.interval;
                    batch.push(Job {
                        uuid: pair.uuid.clone(),
                        plugin: pair.plugin.clone(),
                        timeout_s: pair.timeout_s,
                        slot_end,
                    });
                    pair.last_sent = Some(now);
                    pair.next_check = slot_end;
                    next = next.min(pair.next_check);
                }
                // Over the batch cap: due still, look again at once.
                plan::Decision::Run => next = now,
                plan::Decision::WaitUntil(at) => {
                    pair.next_check = at;
                    next = next.min(at);
                }
            }
        }
        (batch, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        catch_up: 30.0,
        heartbeat_grace: 3.0,
    };

    fn live(uuid: &str, plugin: &str, interval: f64, at: f64) -> Pair {
        let mut p = Pair::new(uuid.into(), plugin.into(), interval, 5.0);
        p.phase = 0.0;
        p.last_heartbeat = Some(at);
        p.heartbeat_interval = Some(1_000.0);
        p
    }

    fn slots(pairs: Vec<Pair>) -> Slots {
        let mut s = Slots::default();
        s.replace(pairs, |_| unreachable!("a fresh table reads nothing"));
        s
    }

    fn names(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.plugin.as_str()).collect()
    }

    #[test]
    fn one_run_per_slot_and_the_next_slot_says_when() {
        let mut s = slots(vec![live("u", "load", 60.0, 1_000.0)]);
        let (jobs, next) = s.due(965.0, &RULES, 2_000.0);
        assert_eq!(names(&jobs), ["load"]);
        assert_eq!(jobs[0].slot_end, 1_020.0);
        assert_eq!(next, 966.0, "looks again within MAX_SLEEP");
        let (jobs, _) = s.due(1_015.0, &RULES, 2_000.0);
        assert!(jobs.is_empty(), "the slot already had its run");
        let (jobs, _) = s.due(1_020.0, &RULES, 2_000.0);
        assert_eq!(names(&jobs), ["load"], "the next slot runs again");
    }

    #[test]
    fn a_slot_too_late_to_catch_up_is_dropped_not_sent_twice() {
        // Slot 960-1020: at 975 the run is 15 s late, within catch-up.
        let mut s = slots(vec![live("u", "load", 60.0, 1_000.0)]);
        assert_eq!(names(&s.due(975.0, &RULES, 2_000.0).0), ["load"]);
        // At 1000 it would be 40 s late: dropped, the next slot is awaited.
        let mut s = slots(vec![live("u", "load", 60.0, 1_000.0)]);
        let (jobs, next) = s.due(1_000.0, &RULES, 2_000.0);
        assert!(jobs.is_empty());
        assert_eq!(next, 1_001.0, "looks again within MAX_SLEEP");
        assert_eq!(s.pairs[0].next_check, 1_020.0);
        assert!(s.due(1_019.0, &RULES, 2_000.0).0.is_empty());
        assert_eq!(names(&s.due(1_020.0, &RULES, 2_000.0).0), ["load"]);
    }

    #[test]
    fn a_stale_client_is_skipped_until_the_next_reload() {
        let mut stale = live("u", "load", 60.0, 0.0);
        stale.heartbeat_interval = Some(10.0);
        let mut s = slots(vec![stale, live("v", "disk", 60.0, 1_000.0)]);
        let (jobs, _) = s.due(965.0, &RULES, 1_500.0);
        assert_eq!(names(&jobs), ["disk"]);
        assert_eq!(s.pairs[0].next_check, 1_500.0);
        let never = {
            let mut p = live("w", "x", 60.0, 0.0);
            p.last_heartbeat = None;
            p
        };
        let mut s = slots(vec![never]);
        assert!(
            s.due(965.0, &RULES, 1_500.0).0.is_empty(),
            "no heartbeat yet"
        );
    }

    #[test]
    fn a_batch_is_capped_and_the_rest_stays_due() {
        let pairs = (0..MAX_BATCH + 5)
            .map(|i| live(&format!("u{i}"), "load", 60.0, 1_000.0))
            .collect();
        let mut s = slots(pairs);
        let (jobs, next) = s.due(965.0, &RULES, 2_000.0);
        assert_eq!((jobs.len(), next), (MAX_BATCH, 965.0));
        let (jobs, _) = s.due(965.0, &RULES, 2_000.0);
        assert_eq!(jobs.len(), 5);
    }

    #[test]
    fn a_reload_keeps_last_sends_and_a_redeclared_pair_reads_the_store() {
        let mut s = slots(vec![live("u", "load", 60.0, 1_000.0)]);
        assert_eq!(s.due(965.0, &RULES, 2_000.0).0.len(), 1);
        let mut asked = Vec::new();
        s.replace(
            vec![
                live("u", "load", 60.0, 1_001.0),
                live("u", "disk", 60.0, 1_001.0),
            ],
            |p| {
                asked.push(p.plugin.clone());
                Some(965.5)
            },
        );
        assert_eq!(
            asked,
            ["disk"],
            "only the pair new to the table is looked up"
        );
        let (jobs, _) = s.due(970.0, &RULES, 2_000.0);
        assert!(jobs.is_empty(), "neither runs twice in the slot");
        s.clear();
        assert!(s.is_empty());
    }
}
