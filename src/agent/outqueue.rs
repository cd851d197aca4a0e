//! The bounded memory queue of unacked traffic (heartbeats, stats,
//! registrations, results) waiting for a router to become reachable, or
//! to be sent again after a router refused it as `overloaded`.
//!
//! Unacked messages are at most once by contract, so when the queue is full
//! something is dropped, and counted: the oldest stats first (a newer
//! sample of the same metrics follows), then the oldest message of any
//! other kind. A heartbeat, or the agent's own stats sample, is superseded
//! by a newer one of its kind: queueing the newer drops the older (counted
//! as `superseded`), since sending it would say nothing the newer does not.
//!
//! A refused message queued again is dropped the same way (as `superseded`)
//! when a newer message with its supersession key was queued since, even
//! one already sent: a heartbeat, the own stats sample, or the `result` of
//! a scheduled run (no `run_id`) of the same host and plugin. Sent after
//! the newer one, it would reach the sinks as the latest state: a stale
//! result would raise a false state change.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stats from local processes or statsd: dropped first when full.
    Stats,
    /// The agent's heartbeat: a newer one supersedes it.
    Heartbeat,
    /// The agent's own counters (`vigil.agent.*`): a newer sample
    /// supersedes it, and it is dropped first when full, like stats.
    AgentStats,
    Other,
}

impl Kind {
    /// Whether a newer message of this kind makes an older one pointless.
    pub fn supersedable(self) -> bool {
        matches!(self, Kind::Heartbeat | Kind::AgentStats)
    }

    /// Whether this kind is dropped first when a queue is full.
    pub fn drops_first(self) -> bool {
        matches!(self, Kind::Stats | Kind::AgentStats)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub kind: Kind,
    pub frame: Vec<u8>,
    /// The message's `id`, which a router echoes when it refuses it, so a
    /// refused message can be found and sent again.
    pub id: Option<String>,
    /// How often a router refused it so far, for its retry backoff. Kept
    /// here, not in a book by id: a book would have to learn of every way
    /// a message leaves the queue, or grow.
    pub refusals: u32,
    /// A newer message with the same key says all this one would (see the
    /// module doc); none for most messages.
    pub key: Option<String>,
    /// When it was first queued, in the queue's own count (0: never).
    pub seq: u64,
}

impl Outgoing {
    /// A message whose `id` (if any) is read from the frame itself.
    pub fn new(kind: Kind, frame: Vec<u8>) -> Outgoing {
        let value = serde_json::from_slice::<serde_json::Value>(&frame).ok();
        let id = (value.as_ref())
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string));
        let key = supersession_key(kind, value.as_ref());
        Outgoing::keyed(kind, frame, id, key)
    }

    /// A message whose `id` is known already.
    pub fn with_id(kind: Kind, frame: Vec<u8>, id: Option<String>) -> Outgoing {
        // Only other messages may be results: stats are not read again.
        let value = match kind {
            Kind::Other => serde_json::from_slice(&frame).ok(),
            _ => None,
        };
        let key = supersession_key(kind, value.as_ref());
        Outgoing::keyed(kind, frame, id, key)
    }

    /// A message whose `id` and supersession key are known already (the
    /// local intake works the key out from the object it built the frame
    /// from, so the frame is not parsed again).
    pub fn keyed(kind: Kind, frame: Vec<u8>, id: Option<String>, key: Option<String>) -> Outgoing {
        Outgoing {
            kind,
            frame,
            id,
            refusals: 0,
            key,
            seq: 0,
        }
    }
}

/// The key under which a newer message makes this one stale: its kind for
/// heartbeats and own stats; host and plugin for the `result` of a
/// scheduled run. A requested run's result (`run_id`) answers its request
/// and is never stale.
pub(super) fn supersession_key(kind: Kind, frame: Option<&serde_json::Value>) -> Option<String> {
    match kind {
        Kind::Heartbeat => return Some("heartbeat".into()),
        Kind::AgentStats => return Some("agent_stats".into()),
        Kind::Stats => return None,
        Kind::Other => {}
    }
    let frame = frame?;
    let text = |k: &str| frame.get(k).and_then(serde_json::Value::as_str);
    if text("type") != Some("result") || !frame.get("run_id").is_none_or(|r| r.is_null()) {
        return None;
    }
    Some(format!(
        "result\n{}\n{}",
        text("hostname")?,
        text("plugin")?
    ))
}

#[derive(Debug)]
pub struct OutQueue {
    items: VecDeque<Outgoing>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
    pub dropped_stats: u64,
    pub dropped_other: u64,
    /// Heartbeats and own stats samples dropped for a newer one, and
    /// refused messages dropped for a newer one of their key.
    pub superseded: u64,
    /// The last `seq` given.
    seq: u64,
    /// Per supersession key, the `seq` of the newest message queued.
    latest: HashMap<String, u64>,
    /// `latest` is pruned when it grows past this.
    prune_at: usize,
}

/// `latest` is not pruned below this size.
const PRUNE_MIN: usize = 64;

impl OutQueue {
    pub fn new(max_items: usize, max_bytes: usize) -> OutQueue {
        OutQueue {
            items: VecDeque::new(),
            bytes: 0,
            max_items: max_items.max(1),
            max_bytes: max_bytes.max(1),
            dropped_stats: 0,
            dropped_other: 0,
            superseded: 0,
            seq: 0,
            latest: HashMap::new(),
            prune_at: PRUNE_MIN,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `item`, a new message, dropping what it supersedes and old
    /// ones while over either bound.
    pub fn push(&mut self, mut item: Outgoing) {
        if item.kind.supersedable() {
            self.remove_kind(item.kind);
        }
        self.seq += 1;
        item.seq = self.seq;
        if let Some(key) = &item.key {
            self.latest.insert(key.clone(), item.seq);
        }
        self.push_back(item);
    }

    /// Queues again `item`, sent earlier and refused by a router, unless a
    /// newer message of its key was queued since (queued still, or sent).
    pub fn requeue(&mut self, item: Outgoing) {
        let newer = (item.key.as_ref())
            .and_then(|key| self.latest.get(key))
            .is_some_and(|&latest| latest > item.seq);
        if newer {
            self.superseded += 1;
            return;
        }
        self.push_back(item);
    }

    /// Whether `latest` has grown enough to be worth [`OutQueue::prune`].
    pub fn wants_pruning(&self) -> bool {
        self.latest.len() > self.prune_at
    }

    /// Forgets the keys whose newest message is no newer than `oldest`,
    /// the oldest `seq` still kept elsewhere (sent, or held after a
    /// refusal): no message that could be queued again is older than it.
    pub fn prune(&mut self, oldest: Option<u64>) {
        let queued = self.items.iter().map(|i| i.seq).min();
        let oldest = queued.into_iter().chain(oldest).min().unwrap_or(u64::MAX);
        self.latest.retain(|_, latest| *latest > oldest);
        self.prune_at = (2 * self.latest.len()).max(PRUNE_MIN);
    }

    fn remove_kind(&mut self, kind: Kind) {
        let before = self.items.len();
        let mut freed = 0;
        self.items.retain(|i| {
            let keep = i.kind != kind;
            if !keep {
                freed += i.frame.len();
            }
            keep
        });
        self.bytes -= freed;
        self.superseded += (before - self.items.len()) as u64;
    }

    fn push_back(&mut self, item: Outgoing) {
        self.bytes += item.frame.len();
        self.items.push_back(item);
        while self.items.len() > 1
            && (self.items.len() > self.max_items || self.bytes > self.max_bytes)
        {
            self.drop_one();
        }
    }

    fn drop_one(&mut self) {
        let index = self
            .items
            .iter()
            .position(|i| i.kind.drops_first())
            .unwrap_or(0);
        if let Some(item) = self.items.remove(index) {
            self.bytes -= item.frame.len();
            if item.kind.drops_first() {
                self.dropped_stats += 1;
            } else {
                self.dropped_other += 1;
            }
        }
    }

    /// Puts back at the front the item just popped (it could not be sent).
    pub fn unpop(&mut self, item: Outgoing) {
        self.bytes += item.frame.len();
        self.items.push_front(item);
    }

    pub fn pop(&mut self) -> Option<Outgoing> {
        let item = self.items.pop_front()?;
        self.bytes -= item.frame.len();
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: Kind, text: &str) -> Outgoing {
        Outgoing::with_id(kind, text.as_bytes().to_vec(), None)
    }

    fn texts(q: &mut OutQueue) -> Vec<String> {
        std::iter::from_fn(|| q.pop())
            .map(|i| String::from_utf8(i.frame).unwrap())
            .collect()
    }

    #[test]
    fn a_newer_heartbeat_supersedes_the_queued_one() {
        let mut q = OutQueue::new(10, 1 << 20);
        q.push(item(Kind::Heartbeat, "h1"));
        q.push(item(Kind::Other, "r1"));
        q.push(item(Kind::AgentStats, "a1"));
        q.push(item(Kind::Heartbeat, "h2"));
        q.push(item(Kind::AgentStats, "a2"));
        q.push(item(Kind::Stats, "s1"));
        q.push(item(Kind::Stats, "s2"));
        assert_eq!(q.superseded, 2);
        assert_eq!(texts(&mut q), ["r1", "h2", "a2", "s1", "s2"]);
        assert_eq!(q.bytes, 0);
    }

    #[test]
    fn a_refused_heartbeat_is_requeued_only_without_a_newer_one() {
        let mut q = OutQueue::new(10, 1 << 20);
        q.requeue(item(Kind::Heartbeat, "h1"));
        q.requeue(item(Kind::Other, "r1"));
        q.push(item(Kind::Heartbeat, "h2"));
        q.requeue(item(Kind::Heartbeat, "h0"));
        q.requeue(item(Kind::Other, "r0"));
        assert_eq!(q.superseded, 2, "h1 by h2, h0 by h2");
        assert_eq!(texts(&mut q), ["r1", "h2", "r0"]);
    }

    fn result(plugin: &str, run_id: Option<&str>) -> Outgoing {
        let mut v = serde_json::json!({"type": "result", "hostname": "h", "plugin": plugin});
        if let Some(r) = run_id {
            v["run_id"] = r.into();
        }
        Outgoing::new(Kind::Other, serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn a_refused_result_is_dropped_once_a_newer_one_of_its_plugin_was_queued() {
        let mut q = OutQueue::new(10, 1 << 20);
        q.push(result("load", None));
        q.push(result("disk", None));
        q.push(result("load", Some("r-1")));
        let (old_load, disk, asked) = (q.pop().unwrap(), q.pop().unwrap(), q.pop().unwrap());
        // A newer scheduled result of "load", sent before the refusals of
        // the older ones came back.
        q.push(result("load", None));
        let new_load = q.pop().unwrap();
        q.requeue(old_load);
        q.requeue(disk.clone());
        q.requeue(asked.clone());
        assert_eq!(q.superseded, 1, "only the stale load result");
        q.requeue(new_load.clone());
        let left: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(left, [disk, asked, new_load]);
    }

    #[test]
    fn a_refused_heartbeat_is_dropped_when_a_newer_one_was_already_sent() {
        let mut q = OutQueue::new(10, 1 << 20);
        q.push(item(Kind::Heartbeat, "h1"));
        let h1 = q.pop().unwrap();
        q.push(item(Kind::Heartbeat, "h2"));
        let _sent = q.pop().unwrap();
        q.requeue(h1);
        assert_eq!((q.len(), q.superseded), (0, 1));
    }

    #[test]
    fn supersession_keys_are_pruned_once_nothing_older_is_kept() {
        let mut q = OutQueue::new(10, 1 << 20);
        for n in 0..=PRUNE_MIN {
            q.push(result(&format!("p{n}"), None));
            q.pop();
        }
        q.push(result("p0", None));
        let queued_p0 = q.seq;
        assert!(q.wants_pruning());
        // Something sent after p1's result is still kept elsewhere.
        q.prune(Some(3));
        assert!(!q.wants_pruning());
        assert_eq!(q.latest.len(), PRUNE_MIN - 1, "p1's and p2's keys went");
        assert_eq!(q.latest["result\nh\np0"], queued_p0);
        q.prune(None);
        assert_eq!(q.latest.len(), 0, "the queued p0 is the newest of its key");
    }

    #[test]
    fn the_id_is_read_from_the_frame() {
        let o = Outgoing::new(Kind::Other, br#"{"type":"result","id":"r-1"}"#.to_vec());
        assert_eq!(o.id.as_deref(), Some("r-1"));
        assert_eq!(Outgoing::new(Kind::Other, b"{}".to_vec()).id, None);
    }

    #[test]
    fn oldest_stats_go_first_then_oldest_other() {
        let mut q = OutQueue::new(3, 1 << 20);
        q.push(item(Kind::Other, "h1"));
        q.push(item(Kind::Stats, "s1"));
        q.push(item(Kind::Stats, "s2"));
        q.push(item(Kind::Other, "h2"));
        assert_eq!((q.dropped_stats, q.dropped_other), (1, 0));
        q.push(item(Kind::Other, "h3"));
        q.push(item(Kind::Other, "h4"));
        assert_eq!((q.dropped_stats, q.dropped_other), (2, 1));
        let left: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|i| String::from_utf8(i.frame).unwrap())
            .collect();
        assert_eq!(left, ["h2", "h3", "h4"]);
    }

    #[test]
    fn byte_bound_applies() {
        let mut q = OutQueue::new(100, 10);
        q.push(item(Kind::Stats, "123456"));
        q.push(item(Kind::Stats, "123456"));
        assert_eq!((q.len(), q.dropped_stats), (1, 1));
    }
}
