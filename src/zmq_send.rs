//! A ZeroMQ send that keeps the message when libzmq refuses it.
//!
//! rust-zmq's `Socket::send` consumes its `Message` and drops it when the
//! send fails, so a `DONTWAIT` send to a full PUSH would lose the message.
//! libzmq itself leaves a refused message with the caller; this calls it
//! directly so a full socket costs a wait, not a message, and a forwarded
//! frame travels from the client socket to the sink socket without a copy.

use std::mem::size_of;

// `zmq::Message` is a struct whose only field is a `zmq_msg_t`. Equal sizes
// prove it has nothing else, so that field sits at offset 0 and a pointer
// to the one is a pointer to the other.
const _: () = assert!(size_of::<zmq::Message>() == size_of::<zmq_sys::zmq_msg_t>());

/// Sends `msg` on `socket` with `flags`. On success libzmq has taken the
/// content and `msg` is left empty; on failure `msg` is untouched.
pub fn send_keeping(
    socket: &mut zmq::Socket,
    msg: &mut zmq::Message,
    flags: i32,
) -> zmq::Result<()> {
    let msg_ptr = (msg as *mut zmq::Message).cast::<zmq_sys::zmq_msg_t>();
    // SAFETY: `msg_ptr` points to a live, initialised zmq_msg_t (see the size
    // assertion above), and `socket` is a live socket owned by this thread.
    let rc = unsafe { zmq_sys::zmq_msg_send(msg_ptr, socket.as_mut_ptr(), flags) };
    if rc == -1 {
        // SAFETY: reads this thread's errno as libzmq left it.
        return Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }));
    }
    Ok(())
}

/// A second handle on the same content (libzmq's `zmq_msg_copy`: a
/// reference count for large frames, a small copy for tiny ones).
pub fn share(msg: &mut zmq::Message) -> zmq::Message {
    let mut copy = zmq::Message::new();
    let dest = (&mut copy as *mut zmq::Message).cast::<zmq_sys::zmq_msg_t>();
    let src = (msg as *mut zmq::Message).cast::<zmq_sys::zmq_msg_t>();
    // SAFETY: both point to live, initialised zmq_msg_t (see the size
    // assertion above); zmq_msg_copy fails only for an invalid message.
    let rc = unsafe { zmq_sys::zmq_msg_copy(dest, src) };
    assert_eq!(rc, 0, "zmq_msg_copy of a valid message");
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_message_is_kept_and_sent_later() {
        let ctx = zmq::Context::new();
        let mut push = ctx.socket(zmq::PUSH).unwrap();
        push.set_linger(0).unwrap();
        push.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = push.get_last_endpoint().unwrap().unwrap();
        let mut msg = zmq::Message::from(&b"kept"[..]);
        // No peer yet: PUSH refuses, and the message must survive.
        assert_eq!(
            send_keeping(&mut push, &mut msg, zmq::DONTWAIT),
            Err(zmq::Error::EAGAIN)
        );
        assert_eq!(&msg[..], b"kept");
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.set_linger(0).unwrap();
        pull.connect(&endpoint).unwrap();
        assert_eq!(push.poll(zmq::POLLOUT, 5000).unwrap(), 1);
        send_keeping(&mut push, &mut msg, zmq::DONTWAIT).unwrap();
        pull.set_rcvtimeo(5000).unwrap();
        assert_eq!(pull.recv_bytes(0).unwrap(), b"kept");
    }

    #[test]
    fn a_shared_message_outlives_the_original() {
        let big = vec![7u8; 4096];
        let mut msg = zmq::Message::from(&big[..]);
        let copy = share(&mut msg);
        drop(msg);
        assert_eq!(&copy[..], &big[..]);
    }
}
