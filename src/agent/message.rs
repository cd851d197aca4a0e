//! The agent's own messages, stamped: the typed messages of
//! [`crate::protocol`] with this agent's `uuid` and the current `ts`.
//! (What routers send back is read with [`crate::protocol::ToClient`].)

use crate::protocol::{ClientMessage, Framed, Heartbeat, Hello};

pub use crate::protocol::now_secs;

/// `msg` from `uuid`, stamped now, as one frame.
pub fn stamped<M: ClientMessage>(uuid: &str, msg: &M) -> Vec<u8> {
    Framed::new(uuid, now_secs(), msg).to_frame()
}

pub fn hello(uuid: &str) -> Vec<u8> {
    stamped(uuid, &Hello {})
}

pub fn heartbeat(uuid: &str, hostname: &str, interval_s: u64) -> Vec<u8> {
    let hb = Heartbeat {
        hostname: hostname.to_string(),
        interval_s,
    };
    stamped(uuid, &hb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn heartbeat_fields() {
        let v: Value = serde_json::from_slice(&heartbeat("u", "h", 30)).unwrap();
        assert_eq!(v["type"], "heartbeat");
        assert_eq!(v["interval_s"], 30);
        assert_eq!(v["hostname"], "h");
        assert!(v["ts"].as_f64().unwrap() > 1e9);
    }
}
