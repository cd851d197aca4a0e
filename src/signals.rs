//! SIGTERM and SIGINT, turned into a shutdown that threads can see.
//!
//! The first signal sets the shared [`Shutdown`] flag and rings every
//! registered doorbell, so threads asleep in `zmq::poll` wake and drain.
//! A second signal ends the process at once with status 1 (signal-hook's
//! conditional shutdown), for an operator who will not wait for the drain.

use crate::doorbell::Ringer;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Set once shutdown has begun; rings the doorbells of the threads that
/// must notice it.
#[derive(Debug)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    ringers: Vec<Ringer>,
}

impl Shutdown {
    pub fn new(ringers: Vec<Ringer>) -> Shutdown {
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            ringers,
        }
    }

    /// A handle that only reads the flag, for the threads.
    pub fn watch(&self) -> ShutdownWatch {
        ShutdownWatch(Arc::clone(&self.flag))
    }

    /// Begins shutdown. Idempotent.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        for ringer in &self.ringers {
            ringer.ring();
        }
    }
}

/// A thread's view of the shutdown flag.
#[derive(Debug, Clone)]
pub struct ShutdownWatch(Arc<AtomicBool>);

impl ShutdownWatch {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The thread that waits for signals. Close it with [`SignalThread::stop`].
pub struct SignalThread {
    handle: Handle,
    thread: JoinHandle<()>,
}

impl SignalThread {
    /// Starts listening; a signal then triggers `shutdown`.
    pub fn start(shutdown: Arc<Shutdown>) -> std::io::Result<SignalThread> {
        let flag = Arc::clone(&shutdown.flag);
        SignalThread::spawn(flag, move |sig| {
            log::info!("received signal {sig}: draining and stopping");
            shutdown.trigger();
        })
    }

    /// Starts listening: the first signal sets `stopping` and calls
    /// `first`; a signal while `stopping` is set ends the process at once.
    pub fn spawn(
        stopping: Arc<AtomicBool>,
        first: impl FnOnce(i32) + Send + 'static,
    ) -> std::io::Result<SignalThread> {
        for sig in [SIGTERM, SIGINT] {
            // Registered first, so it sees the flag still false on the first
            // signal and ends the process only on the second.
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stopping))?;
        }
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    stopping.store(true, Ordering::SeqCst);
                    first(sig);
                }
            })?;
        Ok(SignalThread { handle, thread })
    }

    pub fn stop(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}
