//! A pollable wake-up for a thread that waits in `zmq::poll`.
//!
//! A socket-owning thread sleeps in `zmq::poll` on its socket; when another
//! thread puts work in its crossbeam channel, or shutdown begins, it must be
//! woken without busy-waiting. A [`Doorbell`] is a pipe whose read end is
//! polled beside the socket (`zmq::PollItem::from_fd`); [`Ringer::ring`]
//! writes one byte.
//!
//! At most one byte is ever pending: a ringer writes only when it flips the
//! shared `rung` flag from false to true. The owner first reads the pipe
//! empty, then clears the flag, then looks at its work. A ring that lands
//! before the clear finds the flag set and writes nothing, but its work is
//! already queued and is seen by the drain that follows; a ring after the
//! clear writes a byte and wakes the next poll. So a ring is never lost,
//! and the pipe never fills, so ringing never blocks. (Clearing before
//! reading would be wrong: a ring in between would have its byte read with
//! the old one while the flag stays set, silencing the bell for good.)

use std::io::{PipeReader, PipeWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The owner's end: poll it, then [`Doorbell::clear`] before draining work.
#[derive(Debug)]
pub struct Doorbell {
    reader: PipeReader,
    rung: Arc<AtomicBool>,
}

/// The other threads' end. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ringer {
    writer: Arc<PipeWriter>,
    rung: Arc<AtomicBool>,
}

impl Doorbell {
    pub fn new() -> std::io::Result<(Doorbell, Ringer)> {
        let (reader, writer) = std::io::pipe()?;
        let rung = Arc::new(AtomicBool::new(false));
        let ringer = Ringer {
            writer: Arc::new(writer),
            rung: Arc::clone(&rung),
        };
        Ok((Doorbell { reader, rung }, ringer))
    }

    /// A poll item that is readable while the bell has been rung.
    pub fn poll_item(&self) -> zmq::PollItem<'static> {
        zmq::PollItem::from_fd(self.reader.as_raw_fd(), zmq::POLLIN)
    }

    /// Sleeps until `socket` has one of `events`, the bell rings, or
    /// `timeout_ms` passes (-1: no limit); re-arms the bell if it rang.
    /// Returns whether the socket is ready. A signal's EINTR is a wake-up
    /// like any other, not an error.
    pub fn wait(
        &mut self,
        socket: &zmq::Socket,
        events: zmq::PollEvents,
        timeout_ms: i64,
    ) -> zmq::Result<bool> {
        let mut items = [socket.as_poll_item(events), self.poll_item()];
        match zmq::poll(&mut items, timeout_ms) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return Ok(false),
            Err(e) => return Err(e),
        }
        let (ready, rung) = (
            items[0].get_revents().intersects(events),
            items[1].is_readable(),
        );
        if rung {
            self.clear();
        }
        Ok(ready)
    }

    /// Sleeps until the bell rings or `timeout_ms` passes (-1: no limit);
    /// re-arms it if it rang. For a thread that has stopped reading its
    /// socket but must still notice work and shutdown.
    pub fn wait_alone(&mut self, timeout_ms: i64) -> zmq::Result<()> {
        let mut items = [self.poll_item()];
        match zmq::poll(&mut items, timeout_ms) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return Ok(()),
            Err(e) => return Err(e),
        }
        if items[0].is_readable() {
            self.clear();
        }
        Ok(())
    }

    /// Re-arms the bell. Call only after poll said it is readable (the read
    /// would block otherwise), and before draining the work it announced.
    pub fn clear(&mut self) {
        let mut buf = [0u8; 64];
        // Readable was reported, so this returns at once; an error here can
        // only mean the writers are gone, which is harmless.
        let _ = self.reader.read(&mut buf);
        self.rung.store(false, Ordering::SeqCst);
    }
}

impl Ringer {
    /// Wakes the owner. Never blocks.
    pub fn ring(&self) {
        if !self.rung.swap(true, Ordering::SeqCst) {
            let _ = (&*self.writer).write(&[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(bell: &Doorbell, timeout_ms: i64) -> bool {
        let mut items = [bell.poll_item()];
        zmq::poll(&mut items, timeout_ms).unwrap();
        items[0].is_readable()
    }

    #[test]
    fn rings_once_and_rearms() {
        let (mut bell, ringer) = Doorbell::new().unwrap();
        assert!(!readable(&bell, 0));
        ringer.ring();
        ringer.ring();
        assert!(readable(&bell, 1000));
        bell.clear();
        assert!(!readable(&bell, 0));
        ringer.ring();
        assert!(readable(&bell, 1000));
    }
}
