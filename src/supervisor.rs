//! Named threads whose end is noticed.
//!
//! Every long-lived thread is spawned here with a name and its `JoinHandle`
//! kept. When one ends (returning, failing or panicking) it says so on a
//! channel, so the main thread learns of the *first* thread to die, not of
//! whichever it happens to join first, and can shut the rest down loudly.

use crossbeam_channel::{unbounded, Receiver, Sender};
use std::fmt::Display;
use std::thread::JoinHandle;

/// How a thread ended.
#[derive(Debug)]
struct Exit {
    name: String,
    failed: bool,
}

/// Sends the thread's [`Exit`] when dropped, which also happens while a
/// panic unwinds.
struct ExitGuard {
    name: String,
    failed: bool,
    done: Sender<Exit>,
}

impl ExitGuard {
    fn succeeded(mut self) {
        self.failed = false;
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let failed = self.failed || std::thread::panicking();
        let _ = self.done.send(Exit {
            name: std::mem::take(&mut self.name),
            failed,
        });
    }
}

#[derive(Debug)]
pub struct Supervisor {
    done_tx: Sender<Exit>,
    done_rx: Receiver<Exit>,
    handles: Vec<JoinHandle<()>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        let (done_tx, done_rx) = unbounded();
        Supervisor {
            done_tx,
            done_rx,
            handles: Vec::new(),
        }
    }
}

impl Supervisor {
    /// Spawns `body` on a thread called `name`. An `Err` it returns is
    /// logged and counts as a failure.
    pub fn spawn<F, E>(&mut self, name: &str, body: F) -> std::io::Result<()>
    where
        F: FnOnce() -> Result<(), E> + Send + 'static,
        E: Display,
    {
        let guard = ExitGuard {
            name: name.to_string(),
            failed: true,
            done: self.done_tx.clone(),
        };
        let handle =
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || match body() {
                    Ok(()) => guard.succeeded(),
                    Err(e) => log::error!("thread {} failed: {e}", guard.name),
                })?;
        self.handles.push(handle);
        Ok(())
    }

    /// Waits for every thread. `stopping` tells whether shutdown had begun:
    /// a thread that ends before that, or fails, is a failure, and `on_failure`
    /// is called (to begin shutdown) the first time. Returns the names of the
    /// threads that failed.
    pub fn wait(self, stopping: impl Fn() -> bool, on_failure: impl Fn()) -> Vec<String> {
        let mut failed = Vec::new();
        for _ in 0..self.handles.len() {
            let Ok(exit) = self.done_rx.recv() else { break };
            if exit.failed || !stopping() {
                log::error!(
                    "thread {} stopped unexpectedly: stopping the process",
                    exit.name
                );
                failed.push(exit.name);
                on_failure();
            }
        }
        for handle in self.handles {
            let _ = handle.join();
        }
        failed
    }
}
