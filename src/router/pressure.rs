//! Back-pressure toward a sink type whose queue is full, instead of refusal.
//!
//! Refusing a valid message while its sinks are connected and draining
//! sheds nothing: each refusal costs a reply, and the client sends again.
//! So when a type's queue is full the client thread stops reading client
//! input, as `zmq_proxy` does; libzmq's high-water marks then push back on
//! the clients through TCP, and the cores go to draining. It waits at most
//! `VIGIL_OVERLOAD_WAIT_MS` without progress: a type whose queue stays full
//! that long has absent or stuck sinks, and is marked *stuck*, so its
//! messages are answered `overloaded` at once and the other types flow
//! again. A stuck type is admitted again once its queue has drained to the
//! low mark (a quarter below the capacity), so a slow type does not stall
//! the others again for every message its sinks take. With a wait of 0 a
//! type is stuck as soon as its queue is full.
//!
//! The decision is the pure [`Gate`]; the wake-up the sink threads give a
//! waiting client thread is [`RoomBell`]; the refusal frame, built once per
//! type with only the message's `id` spliced in, is [`OverloadReplies`].

use crate::doorbell::Ringer;
use crate::protocol::{RejectCode, Rejection};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

/// What to do with a valid message for a type, given its queue depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// There is room: queue it.
    Admit,
    /// The queue is full and has been for longer than the wait (or there
    /// is no wait): refuse.
    Refuse,
    /// The queue is full: stop reading input until there is room, for at
    /// most the wait, then call [`Gate::waited`].
    Wait,
}

/// One type's back-pressure state, owned by the client thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gate {
    stuck: bool,
}

impl Gate {
    /// Decides for a message arriving while `depth` messages are queued.
    /// `may_wait` is false when waiting is switched off (a wait of 0).
    pub fn admit(&mut self, depth: usize, capacity: usize, may_wait: bool) -> Admission {
        if self.stuck {
            if depth > low_mark(capacity) {
                return Admission::Refuse;
            }
            self.stuck = false;
        }
        if depth < capacity {
            Admission::Admit
        } else if may_wait {
            Admission::Wait
        } else {
            // With no wait to give (a wait of 0), the full queue counts as
            // a wait that ran out: the type is stuck, refused at once until
            // it drains to the low mark, as `PROTOCOL.md` promises.
            self.waited(false)
        }
    }

    /// Records how a wait ended: with room (`true`), or at the deadline,
    /// which makes the type stuck. Returns the admission for the message
    /// that waited.
    pub fn waited(&mut self, room: bool) -> Admission {
        if room {
            Admission::Admit
        } else {
            self.stuck = true;
            Admission::Refuse
        }
    }

    #[cfg(test)]
    pub fn is_stuck(&self) -> bool {
        self.stuck
    }
}

/// The depth a stuck type must drain to before it is admitted again.
pub fn low_mark(capacity: usize) -> usize {
    capacity - (capacity / 4).max(1).min(capacity)
}

/// Lets a sink thread wake the client thread when it frees room in a
/// queue the client thread is waiting on: a flag per type, and the client
/// thread's doorbell. One atomic load per chunk sent when nobody waits.
#[derive(Debug)]
pub struct RoomBell {
    waiting: Vec<AtomicBool>,
    ringer: Ringer,
}

impl RoomBell {
    pub fn new(types: usize, ringer: Ringer) -> RoomBell {
        RoomBell {
            waiting: (0..types).map(|_| AtomicBool::new(false)).collect(),
            ringer,
        }
    }

    /// The client thread is about to wait for room in `index`'s queue. It
    /// checks the depth again after this, so a chunk freed in between is
    /// not missed: the flag, the sink thread's decrement of the depth and
    /// the client thread's load of it are all SeqCst, so one of the two
    /// threads sees the other's write (on any CPU, not only x86).
    pub fn want(&self, index: usize) {
        self.waiting[index].store(true, SeqCst);
    }

    /// The client thread stopped waiting.
    pub fn cancel(&self, index: usize) {
        self.waiting[index].store(false, SeqCst);
    }

    /// A sink thread has just lowered `index`'s depth.
    pub fn freed(&self, index: usize) {
        if self.waiting[index].load(SeqCst) && self.waiting[index].swap(false, SeqCst) {
            self.ringer.ring();
        }
    }
}

/// The `overloaded` reply of each type, serialized once: a refusal is then
/// a copy and, when the message had a string `id`, one splice, instead of
/// escaping the detail text per message (which, under a flood, was a good
/// part of the client thread's time).
#[derive(Debug, Clone)]
pub struct OverloadReplies {
    /// Per type: the frame up to and including `"id":`.
    heads: Vec<Vec<u8>>,
    /// Per type: the whole frame with `"id":null`.
    anonymous: Vec<Vec<u8>>,
    details: Vec<String>,
}

impl OverloadReplies {
    pub fn new(sink_types: &[String], capacity: usize, wait_ms: u64) -> OverloadReplies {
        let details: Vec<String> = sink_types
            .iter()
            .map(|kind| overloaded_detail(kind, capacity, wait_ms))
            .collect();
        let anonymous: Vec<Vec<u8>> = details
            .iter()
            .map(|d| Rejection::new(RejectCode::Overloaded, d.clone(), None).to_frame())
            .collect();
        let heads = anonymous
            .iter()
            .map(|frame| {
                let tail = b"null}".len();
                frame[..frame.len() - tail].to_vec()
            })
            .collect();
        OverloadReplies {
            heads,
            anonymous,
            details,
        }
    }

    /// The reply for a message of type `index` whose raw `id` JSON text
    /// was `raw_id` (only a string is echoed, as for every refusal).
    pub fn frame(&self, index: usize, raw_id: Option<&str>) -> Vec<u8> {
        let Some(raw) = raw_id.filter(|r| r.starts_with('"')) else {
            return self.anonymous[index].clone();
        };
        if raw.contains('\\') {
            // Escapes: let serde write the canonical form, as before.
            let id = crate::protocol::string_id(Some(raw));
            return Rejection::new(RejectCode::Overloaded, self.details[index].clone(), id)
                .to_frame();
        }
        let head = &self.heads[index];
        let mut frame = Vec::with_capacity(head.len() + raw.len() + 1);
        frame.extend_from_slice(head);
        frame.extend_from_slice(raw.as_bytes());
        frame.push(b'}');
        frame
    }

    /// The detail text of type `index`'s refusal, for the log.
    pub fn detail(&self, index: usize) -> &str {
        &self.details[index]
    }
}

fn overloaded_detail(kind: &str, capacity: usize, wait_ms: u64) -> String {
    format!(
        "the queue for {kind} has been full ({capacity} messages) for over {wait_ms} ms: \
         its sinks are absent or stuck; retry later"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_admits_and_a_full_queue_waits() {
        let mut gate = Gate::default();
        assert_eq!(gate.admit(0, 10, true), Admission::Admit);
        assert_eq!(gate.admit(9, 10, true), Admission::Admit);
        assert_eq!(gate.admit(10, 10, true), Admission::Wait);
        assert!(!gate.is_stuck());
    }

    #[test]
    fn with_a_wait_of_0_a_full_queue_is_refused_until_it_drains_to_the_low_mark() {
        let mut gate = Gate::default();
        assert_eq!(gate.admit(9, 10, false), Admission::Admit);
        assert_eq!(gate.admit(10, 10, false), Admission::Refuse);
        assert!(gate.is_stuck(), "the first refusal makes the type stuck");
        assert_eq!(low_mark(10), 8);
        assert_eq!(
            gate.admit(9, 10, false),
            Admission::Refuse,
            "room, but not drained enough"
        );
        assert_eq!(gate.admit(8, 10, false), Admission::Admit);
        assert!(!gate.is_stuck());
    }

    #[test]
    fn a_wait_with_room_admits_and_one_without_makes_the_type_stuck() {
        let mut gate = Gate::default();
        assert_eq!(gate.waited(true), Admission::Admit);
        assert!(!gate.is_stuck());
        assert_eq!(gate.waited(false), Admission::Refuse);
        assert!(gate.is_stuck());
    }

    #[test]
    fn a_stuck_type_is_refused_without_waiting_until_it_drains_to_the_low_mark() {
        let mut gate = Gate::default();
        gate.waited(false);
        assert_eq!(low_mark(100), 75);
        assert_eq!(gate.admit(100, 100, true), Admission::Refuse);
        assert_eq!(
            gate.admit(76, 100, true),
            Admission::Refuse,
            "not drained enough"
        );
        assert_eq!(gate.admit(75, 100, true), Admission::Admit);
        assert!(!gate.is_stuck());
        assert_eq!(gate.admit(100, 100, true), Admission::Wait, "waits again");
    }

    #[test]
    fn low_mark_of_tiny_queues() {
        assert_eq!(low_mark(1), 0);
        assert_eq!(low_mark(2), 1);
        assert_eq!(low_mark(4096), 3072);
    }

    #[test]
    fn the_bell_rings_once_per_wait() {
        let (mut bell, ringer) = crate::doorbell::Doorbell::new().unwrap();
        let room = RoomBell::new(2, ringer);
        room.freed(0);
        let mut items = [bell.poll_item()];
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 0, "nobody waited");
        room.want(1);
        room.freed(0);
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 0, "another type");
        room.freed(1);
        assert_eq!(zmq::poll(&mut items, 1000).unwrap(), 1);
        bell.clear();
        room.freed(1);
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 0, "the wait was over");
    }

    fn json(frame: &[u8]) -> serde_json::Value {
        serde_json::from_slice(frame).unwrap()
    }

    #[test]
    fn refusal_frames_match_the_serialized_rejection() {
        let types = vec!["stats".to_string(), "result".to_string()];
        let replies = OverloadReplies::new(&types, 4096, 1000);
        let full = |id: Option<&str>| {
            Rejection::new(
                RejectCode::Overloaded,
                replies.detail(1).to_string(),
                id.map(str::to_string),
            )
            .to_frame()
        };
        assert_eq!(replies.frame(1, None), full(None));
        assert_eq!(
            replies.frame(1, Some("17")),
            full(None),
            "numbers not echoed"
        );
        assert_eq!(replies.frame(1, Some(r#""m-1""#)), full(Some("m-1")));
        let escaped = replies.frame(1, Some(r#""a\"b""#));
        assert_eq!(json(&escaped)["id"], "a\"b");
        let v = json(&replies.frame(0, Some(r#""x""#)));
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"], "overloaded");
        assert!(v["detail"].as_str().unwrap().contains("stats"));
    }
}
