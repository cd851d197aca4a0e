//! The spool thread: the only writer of the spool file, with group commit.
//!
//! It blocks on its channel, then takes every request already waiting, so
//! that one write and one fsync cover all the senders that arrived while
//! the previous fsync ran. Only after the fsync are the senders answered
//! (through the intake thread) and the messages handed to the link thread.
//! It ends when every sender of its channel is gone (intake and link have
//! stopped), so nothing accepted is left half-written.

use super::channels::{AppendRefusal, Completion, LinkTx, SpoolCmd, ToLink};
use super::metrics::AgentMetrics;
use super::spool::{content_fingerprint, AppendError, Entry, Spool};
use crate::doorbell::Ringer;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Requests per group commit, at most.
const GROUP_MAX: usize = 1024;

pub struct SpoolThread {
    pub spool: Spool,
    pub rx: Receiver<SpoolCmd>,
    pub completions: Sender<Completion>,
    pub intake_bell: Ringer,
    pub link: LinkTx,
    pub metrics: Arc<AgentMetrics>,
}

impl SpoolThread {
    pub fn run(mut self) -> Result<(), String> {
        while let Ok(first) = self.rx.recv() {
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match self.rx.try_recv() {
                    Ok(cmd) => group.push(cmd),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        Ok(())
    }

    fn commit_group(&mut self, group: Vec<SpoolCmd>) {
        let mut accepted: Vec<(u64, Entry)> = Vec::new();
        let mut refused: Vec<Completion> = Vec::new();
        // Retries of an entry added in this same group: answered as it is,
        // once the commit says whether it stuck.
        let mut retries: Vec<(u64, String)> = Vec::new();
        for cmd in group {
            match cmd {
                SpoolCmd::Done(id) => self.spool.done(&id),
                SpoolCmd::Append { entry, token } => {
                    let in_group = accepted.iter().any(|(_, e)| e.id == entry.id);
                    if in_group || self.spool.contains(&entry.id) {
                        let fingerprint = content_fingerprint(&entry.frame);
                        if self.spool.fingerprint(&entry.id) != Some(fingerprint) {
                            // Another message under an id already waiting:
                            // saying "accepted" would lose it silently.
                            refused.push(Completion {
                                token,
                                result: Err(AppendRefusal::DuplicateId(entry.id)),
                            });
                        } else if in_group {
                            retries.push((token, entry.id));
                        } else {
                            // Already kept: a sender retrying. Same answer,
                            // one copy.
                            refused.push(Completion {
                                token,
                                result: Ok(entry.id),
                            });
                        }
                        continue;
                    }
                    match self.spool.add(&entry) {
                        Ok(()) => accepted.push((token, entry)),
                        Err(AppendError::Full { live, max }) => refused.push(Completion {
                            token,
                            result: Err(AppendRefusal::Full { live, max }),
                        }),
                    }
                }
            }
        }
        let ids: Vec<&str> = accepted.iter().map(|(_, e)| e.id.as_str()).collect();
        let committed = self.spool.commit(!accepted.is_empty(), &ids);
        if let Err(e) = &committed {
            log::error!("spool: {e}");
        }
        for (token, entry) in accepted {
            let result = match &committed {
                Ok(()) => {
                    AgentMetrics::add(&self.metrics.spooled, 1);
                    let id = entry.id.clone();
                    // The entry is on disk; if the link is gone (shutdown)
                    // the next start sends it. Waiting for room here is
                    // the backpressure that keeps the resend book whole.
                    let _ = self.link.send(ToLink::Spooled(entry));
                    Ok(id)
                }
                Err(e) => Err(AppendRefusal::Io(e.clone())),
            };
            let _ = self.completions.send(Completion { token, result });
        }
        for (token, id) in retries {
            let result = match &committed {
                Ok(()) => Ok(id),
                Err(e) => Err(AppendRefusal::Io(e.clone())),
            };
            let _ = self.completions.send(Completion { token, result });
        }
        for completion in refused {
            let _ = self.completions.send(completion);
        }
        self.intake_bell.ring();
        self.metrics
            .spool_live
            .store(self.spool.live_count() as u64, Relaxed);
        if let Err(e) = self.spool.maybe_compact() {
            log::error!("spool: {e}");
        }
    }
}
