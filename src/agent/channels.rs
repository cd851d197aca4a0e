//! The messages the agent's threads send each other, and the senders'
//! ends of their channels.
//!
//! Each channel's type lives here, not in the thread that consumes it, so
//! producers and consumers both import this module and none imports
//! another thread's module (link, plugin manager and spool thread used to
//! import each other in a circle for these types alone).
//!
//! ```text
//! intake ──SpoolCmd::Append──► spool thread ──Completion──► intake
//! intake, statsd, plugins, spool ──ToLink──► link thread ──SpoolCmd::Done──► spool
//! intake, link ──PluginEvent──► plugin manager ◄──PluginEvent::Finished── workers
//! ```
//! Every channel is bounded (sizes in `agent/mod.rs`), except the
//! completions, bounded by the intake's own pending limit.

use super::outqueue::Outgoing;
use super::plugins::declare::Declaration;
use super::spool::Entry;
use crate::doorbell::Ringer;
use crate::protocol::{Perfdata, PluginState};
use crossbeam_channel::{Sender, TrySendError};
use std::time::Duration;

/// What other threads give the link thread.
#[derive(Debug)]
pub enum ToLink {
    /// Unacked traffic: sent when a router is reachable, else queued.
    Send(Outgoing),
    /// An acked message, already fsynced in the spool.
    Spooled(Entry),
}

/// The producers' end of the link channel.
#[derive(Clone, Debug)]
pub struct LinkTx {
    pub tx: Sender<ToLink>,
    pub ringer: Ringer,
}

impl LinkTx {
    /// Hands over `msg` without blocking; gives it back when the channel is
    /// full or the link thread is gone.
    pub fn try_send(&self, msg: ToLink) -> Result<(), ToLink> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.ringer.ring();
                Ok(())
            }
            Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => Err(m),
        }
    }

    /// Hands over `msg`, waiting for room as long as the link thread runs.
    pub fn send(&self, msg: ToLink) -> Result<(), ToLink> {
        match self.tx.send(msg) {
            Ok(()) => {
                self.ringer.ring();
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }

    /// Hands over `msg`, waiting at most `timeout` for room.
    pub fn send_timeout(&self, msg: ToLink, timeout: Duration) -> Result<(), ToLink> {
        match self.tx.send_timeout(msg, timeout) {
            Ok(()) => {
                self.ringer.ring();
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }
}

#[derive(Debug)]
pub enum PluginEvent {
    /// Run a declared plugin (`run_id` when the scheduler asked).
    Run {
        plugin: String,
        run_id: Option<String>,
    },
    /// A local process (re)registered: its plugin set replaces the old one.
    Local {
        process: String,
        plugins: Vec<Declaration>,
    },
    /// A worker finished (sent by the worker itself) with its outcome.
    Finished { worker: u64, report: Box<Report> },
}

/// What one run gave, for every request that shared it: a `result`'s
/// outcome fields (each sharer's message adds its own `run_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub status: PluginState,
    /// The first line's text.
    pub output: String,
    pub long_output: String,
    pub perfdata: Vec<Perfdata>,
    pub duration_ms: u64,
    pub timed_out: bool,
    pub truncated: bool,
}

impl Report {
    /// An UNKNOWN outcome of a run that never happened, `output` saying why.
    pub fn unknown(output: &str) -> Report {
        Report {
            status: PluginState::Unknown,
            output: output.to_string(),
            long_output: String::new(),
            perfdata: Vec::new(),
            duration_ms: 0,
            timed_out: false,
            truncated: false,
        }
    }
}

/// The producers' end of the manager's channel.
#[derive(Clone, Debug)]
pub struct PluginTx {
    pub tx: Sender<PluginEvent>,
    pub ringer: Ringer,
}

impl PluginTx {
    /// Hands over `event` without blocking; a full channel drops it with a log
    /// line (the scheduler notices a missing result and asks again).
    pub fn send(&self, event: PluginEvent) {
        match self.tx.try_send(event) {
            Ok(()) => self.ringer.ring(),
            Err(e) => log::warn!("plugin manager busy: dropping {:?}", e.into_inner()),
        }
    }
}

#[derive(Debug)]
pub enum SpoolCmd {
    /// Store `entry` durably, then answer `token` on the completion channel.
    Append { entry: Entry, token: u64 },
    /// Its ack arrived: forget `id`.
    Done(String),
}

/// The answer to one append, for the intake thread.
#[derive(Debug)]
pub struct Completion {
    pub token: u64,
    pub result: Result<String, AppendRefusal>,
}

/// Why the spool did not take an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendRefusal {
    Full {
        live: u64,
        max: u64,
    },
    Io(String),
    /// A different message already waits under this id.
    DuplicateId(String),
}
