//! The spool thread: the only writer of the spool file, with group commit.
//!
//! It blocks on its channel, then takes every request already waiting, so
//! that one write and one fsync cover all the senders that arrived while
//! the previous fsync ran. Only after the fsync are the senders answered
//! (through the intake thread) and the messages handed to the link thread.
//! It ends when every sender of its channel is gone (intake and link have
//! stopped), so nothing accepted is left half-written.
//!
//! The thread holds no socket: [`SpoolThread::commit_group`] is one group's
//! whole decision (accept, answer a retry, refuse a duplicate or a full
//! spool), unit-tested below over channels and a scratch spool file.

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

    /// Writes one group with one fsync, then answers every sender and hands
    /// the accepted entries to the link.
    pub fn commit_group(&mut self, group: Vec<SpoolCmd>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doorbell::Doorbell;
    use crate::testkit::TempDir;
    use crossbeam_channel::{bounded, Receiver};

    struct Harness {
        thread: SpoolThread,
        completions: Receiver<Completion>,
        link: Receiver<ToLink>,
        _bells: (Doorbell, Doorbell),
        dir: TempDir,
    }

    fn harness(max_bytes: u64) -> Harness {
        let dir = TempDir::new("spool-thread");
        let (spool, replayed) = Spool::open(&dir.0, max_bytes).unwrap();
        assert!(replayed.is_empty());
        let (_cmds, rx) = bounded(16);
        let (completions_tx, completions) = bounded(64);
        let (link_tx, link) = bounded(64);
        let (intake_bell, intake_ringer) = Doorbell::new().unwrap();
        let (link_bell, link_ringer) = Doorbell::new().unwrap();
        let thread = SpoolThread {
            spool,
            rx,
            completions: completions_tx,
            intake_bell: intake_ringer,
            link: LinkTx {
                tx: link_tx,
                ringer: link_ringer,
            },
            metrics: Arc::new(AgentMetrics::default()),
        };
        Harness {
            thread,
            completions,
            link,
            _bells: (intake_bell, link_bell),
            dir,
        }
    }

    fn append(id: &str, frame: &str, token: u64) -> SpoolCmd {
        SpoolCmd::Append {
            entry: Entry {
                id: id.to_string(),
                frame: frame.as_bytes().to_vec(),
            },
            token,
        }
    }

    fn answers(h: &Harness) -> Vec<(u64, Result<String, AppendRefusal>)> {
        let mut all: Vec<_> = h
            .completions
            .try_iter()
            .map(|c| (c.token, c.result))
            .collect();
        all.sort_by_key(|(token, _)| *token);
        all
    }

    fn linked(h: &Harness) -> Vec<String> {
        h.link
            .try_iter()
            .map(|m| match m {
                ToLink::Spooled(entry) => entry.id,
                other => panic!("not a spooled entry: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_group_is_answered_after_its_commit_and_handed_to_the_link() {
        let mut h = harness(1 << 20);
        h.thread.commit_group(vec![
            append("a", r#"{"id":"a"}"#, 1),
            append("b", r#"{"id":"b"}"#, 2),
        ]);
        assert_eq!(
            answers(&h),
            [(1, Ok("a".to_string())), (2, Ok("b".to_string()))]
        );
        assert_eq!(linked(&h), ["a", "b"]);
        assert_eq!(h.thread.metrics.spooled.load(Relaxed), 2);
        // Durable: the file opened again (the spool's lock released) replays
        // both.
        let Harness { thread, dir, .. } = h;
        drop(thread);
        let (_, replayed) = Spool::open(&dir.0, 1 << 20).unwrap();
        let ids: Vec<_> = replayed.into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn a_retry_gets_the_same_answer_and_one_copy() {
        let mut h = harness(1 << 20);
        // In the same group, and again in a later one.
        h.thread.commit_group(vec![
            append("a", r#"{"id":"a"}"#, 1),
            append("a", r#"{"id":"a"}"#, 2),
        ]);
        h.thread.commit_group(vec![append("a", r#"{"id":"a"}"#, 3)]);
        assert_eq!(
            answers(&h),
            [
                (1, Ok("a".to_string())),
                (2, Ok("a".to_string())),
                (3, Ok("a".to_string()))
            ]
        );
        assert_eq!(linked(&h), ["a"], "one copy reaches the link");
        assert_eq!(h.thread.spool.live_count(), 1);
    }

    #[test]
    fn another_message_under_a_waiting_id_is_refused_not_lost() {
        let mut h = harness(1 << 20);
        h.thread.commit_group(vec![
            append("a", r#"{"id":"a","n":1}"#, 1),
            append("a", r#"{"id":"a","n":2}"#, 2),
        ]);
        assert_eq!(
            answers(&h),
            [
                (1, Ok("a".to_string())),
                (2, Err(AppendRefusal::DuplicateId("a".to_string())))
            ]
        );
        // Once acked, the id is free again.
        h.thread.commit_group(vec![SpoolCmd::Done("a".to_string())]);
        h.thread
            .commit_group(vec![append("a", r#"{"id":"a","n":2}"#, 3)]);
        assert_eq!(answers(&h), [(3, Ok("a".to_string()))]);
    }

    #[test]
    fn a_full_spool_refuses_with_its_figures() {
        let mut h = harness(20);
        h.thread.commit_group(vec![
            append("a", "0123456789012345", 1),
            append("b", "0123456789012345", 2),
        ]);
        assert_eq!(
            answers(&h),
            [
                (1, Ok("a".to_string())),
                (2, Err(AppendRefusal::Full { live: 16, max: 20 }))
            ]
        );
        assert_eq!(linked(&h), ["a"]);
    }
}
