//! The client thread's decisions about one message, without a socket: may
//! its connection speak at all (under CURVE), and is the message itself
//! acceptable (size, frames, envelope).
//!
//! `clients.rs` reads the frames and acts on the answer (learns a route,
//! queues the frame, replies with an error, or drops it silently); what it
//! acts on is decided here and unit-tested below, so the rules of the hot
//! path need no router process to check.

use super::auth::Peer;
use crate::protocol::{self, Accepted, RejectCode, Rejection};
use uuid::Uuid;

/// Frames after the first in a client message (which make it invalid).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extra {
    pub frames: usize,
    pub bytes: usize,
}

/// What may be said of a message's connection under CURVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// ROUTER_NOTIFY's disconnect notification: the connection is gone,
    /// and so is its route.
    Gone,
    /// A message without the ZAP handler's identity: dropped (it cannot
    /// happen with a ZAP handler bound; refused to be sure).
    NoIdentity,
    /// The connection's key is no longer allowed (removed, denied, or
    /// speaking as another UUID): dropped without a reply.
    Revoked,
    /// It may speak, as this peer.
    Allowed(Peer),
}

/// Judges a message's connection. `peer` is its metadata (User-Id and
/// key); a bodiless single frame without metadata is a disconnect
/// notification. `last_allowed` is the peer last found allowed under the
/// same key set, which needs no new check (the check costs a SHA-256 in
/// derived mode, and a burst mostly comes from few connections).
pub fn judge(
    peer: Option<Peer>,
    bodiless: bool,
    last_allowed: Option<Peer>,
    allows: impl FnOnce(&Peer) -> bool,
) -> Speaker {
    match peer {
        None if bodiless => Speaker::Gone,
        None => Speaker::NoIdentity,
        Some(peer) if last_allowed == Some(peer) || allows(&peer) => Speaker::Allowed(peer),
        Some(_) => Speaker::Revoked,
    }
}

/// Checks one message: its size (`max_bytes`, all frames counted), that it
/// is a single frame, and its envelope (`protocol::validate_as`; a `uuid`
/// other than `speaker`'s is `forbidden`).
pub fn admit<'a>(
    body: &'a [u8],
    extra: Extra,
    max_bytes: usize,
    sink_types: &[String],
    speaker: Option<&Uuid>,
) -> Result<Accepted<'a>, Rejection> {
    let size = body.len() + extra.bytes;
    if size > max_bytes {
        let detail = format!("message is {size} bytes; the limit is {max_bytes}");
        return Err(Rejection::new(RejectCode::TooLarge, detail, None));
    }
    if extra.frames > 0 {
        let detail = format!("message has {} frames; send exactly one", extra.frames + 1);
        return Err(Rejection::new(RejectCode::Multipart, detail, None));
    }
    protocol::validate_as(body, sink_types, speaker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curve::PublicKey;
    use crate::protocol::Target;

    const U: &str = "0b4e7a7e-3c1a-4c57-9a4b-6d0c1f2e3a4b";

    fn types() -> Vec<String> {
        vec!["heartbeat".to_string(), "stats".to_string()]
    }

    fn peer(n: u8) -> Peer {
        Peer {
            uuid: Uuid::from_bytes([n; 16]),
            key: PublicKey([n; 32]),
        }
    }

    fn stats(uuid: &str) -> Vec<u8> {
        format!(r#"{{"uuid":"{uuid}","type":"stats","metrics":{{"load":1}}}}"#).into_bytes()
    }

    #[test]
    fn a_valid_message_is_routed_to_its_type() {
        let body = stats(U);
        let accepted = admit(&body, Extra::default(), 1024, &types(), None).unwrap();
        assert_eq!(accepted.uuid.to_string(), U);
        assert_eq!(accepted.target, Target::Sink(1));
        let hello = format!(r#"{{"uuid":"{U}","type":"hello"}}"#);
        let accepted = admit(hello.as_bytes(), Extra::default(), 1024, &types(), None).unwrap();
        assert_eq!(accepted.target, Target::Hello);
    }

    #[test]
    fn size_counts_every_frame_and_comes_first() {
        let body = stats(U);
        let limit = body.len();
        assert!(admit(&body, Extra::default(), limit, &types(), None).is_ok());
        let err = admit(&body, Extra::default(), limit - 1, &types(), None).unwrap_err();
        assert_eq!(err.code, RejectCode::TooLarge);
        let extra = Extra {
            frames: 1,
            bytes: 1,
        };
        let err = admit(&body, extra, limit, &types(), None).unwrap_err();
        assert_eq!(err.code, RejectCode::TooLarge, "{}", err.detail);
        let err = admit(b"not json", extra, 1024, &types(), None).unwrap_err();
        assert_eq!(err.code, RejectCode::Multipart, "before the JSON is read");
        assert!(err.detail.contains("2 frames"), "{}", err.detail);
    }

    #[test]
    fn an_authenticated_connection_speaks_only_as_its_uuid() {
        let me: Uuid = U.parse().unwrap();
        let body = stats(U);
        assert!(admit(&body, Extra::default(), 1024, &types(), Some(&me)).is_ok());
        let other = stats("6f1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d");
        let err = admit(&other, Extra::default(), 1024, &types(), Some(&me)).unwrap_err();
        assert_eq!(err.code, RejectCode::Forbidden);
        let err = admit(b"{", Extra::default(), 1024, &types(), Some(&me)).unwrap_err();
        assert_eq!(err.code, RejectCode::BadJson);
    }

    #[test]
    fn connections_are_judged_by_their_metadata() {
        assert_eq!(judge(None, true, None, |_| unreachable!()), Speaker::Gone);
        assert_eq!(
            judge(None, false, None, |_| unreachable!()),
            Speaker::NoIdentity
        );
        assert_eq!(
            judge(Some(peer(1)), false, None, |_| true),
            Speaker::Allowed(peer(1))
        );
        assert_eq!(
            judge(Some(peer(1)), false, None, |_| false),
            Speaker::Revoked
        );
        // A bodiless frame with metadata is a message, judged as one.
        assert_eq!(
            judge(Some(peer(1)), true, None, |_| false),
            Speaker::Revoked
        );
    }

    #[test]
    fn the_last_allowed_peer_is_not_checked_again() {
        assert_eq!(
            judge(Some(peer(1)), false, Some(peer(1)), |_| unreachable!()),
            Speaker::Allowed(peer(1))
        );
        // Another peer is checked.
        assert_eq!(
            judge(Some(peer(2)), false, Some(peer(1)), |p| *p == peer(2)),
            Speaker::Allowed(peer(2))
        );
    }
}
