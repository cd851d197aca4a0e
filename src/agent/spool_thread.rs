//! The spool thread: the only writer of the spool file, with group commit.
//!
//! It blocks on its channel, then takes every request already waiting, so
//! that one write and one fsync cover all the senders that arrived while
//! the previous fsync ran. Only after the fsync are the senders answered
//! (through the intake thread) and the messages handed to the link thread.
//! It ends when every sender of its channel is gone (intake and link have
//! stopped), so nothing accepted is left half-written.
//!
//! What one group does to the spool and what everyone is told is
//! [`commit_group`], a function over the spool and the group's requests;
//! the thread only moves its inputs and outputs to and from the channels,
//! so the rules are unit-tested below without threads.

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
            let outcome = commit_group(&mut self.spool, group);
            self.deliver(outcome);
        }
        Ok(())
    }

    /// Hands a committed group's entries to the link thread and its
    /// answers to the intake thread.
    fn deliver(&mut self, outcome: GroupOutcome) {
        if let Some(e) = &outcome.commit_error {
            log::error!("spool: {e}");
        }
        AgentMetrics::add(&self.metrics.spooled, outcome.spooled.len() as u64);
        for entry in outcome.spooled {
            // The entry is on disk; if the link is gone (shutdown) the next
            // start sends it. Waiting for room here is the backpressure
            // that keeps the resend book whole.
            let _ = self.link.send(ToLink::Spooled(entry));
        }
        for completion in outcome.completions {
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

/// What one group commit did.
#[derive(Debug, Default, PartialEq)]
pub struct GroupOutcome {
    /// Entries now durably in the spool, for the link thread to send.
    pub spooled: Vec<Entry>,
    /// One answer per append of the group, for the intake thread.
    pub completions: Vec<Completion>,
    /// Why the write or fsync failed; every new entry is refused then.
    pub commit_error: Option<String>,
}

/// Applies one group of requests to the spool with one write and (when
/// anything was added) one fsync, and says who is told what.
///
/// Architecture invariant: an append is answered `Ok` only once its entry
/// is fsynced. A retry of an id already kept, with the same content, gets
/// the same answer and no second copy; another content under a kept id is
/// refused as a duplicate, never dropped silently.
pub fn commit_group(spool: &mut Spool, group: Vec<SpoolCmd>) -> GroupOutcome {
    let mut accepted: Vec<(u64, Entry)> = Vec::new();
    let mut refused: Vec<Completion> = Vec::new();
    // Retries of an entry added in this same group: answered as it is,
    // once the commit says whether it stuck.
    let mut retries: Vec<(u64, String)> = Vec::new();
    for cmd in group {
        match cmd {
            SpoolCmd::Done(id) => spool.done(&id),
            SpoolCmd::Append { entry, token } => {
                let in_group = accepted.iter().any(|(_, e)| e.id == entry.id);
                if in_group || spool.contains(&entry.id) {
                    let fingerprint = content_fingerprint(&entry.frame);
                    if spool.fingerprint(&entry.id) != Some(fingerprint) {
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
                match spool.add(&entry) {
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
    let committed = spool.commit(!accepted.is_empty(), &ids);
    let mut out = GroupOutcome {
        commit_error: committed.as_ref().err().cloned(),
        ..GroupOutcome::default()
    };
    let answer = |id: String| match &committed {
        Ok(()) => Ok(id),
        Err(e) => Err(AppendRefusal::Io(e.clone())),
    };
    for (token, entry) in accepted {
        let result = answer(entry.id.clone());
        if result.is_ok() {
            out.spooled.push(entry);
        }
        out.completions.push(Completion { token, result });
    }
    for (token, id) in retries {
        out.completions.push(Completion {
            token,
            result: answer(id),
        });
    }
    out.completions.extend(refused);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spool(max_bytes: u64) -> (Spool, Dir) {
        let dir = std::env::temp_dir().join(format!("vigil-group-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (spool, replayed) = Spool::open(&dir, max_bytes).unwrap();
        assert!(replayed.is_empty());
        (spool, Dir(dir))
    }

    fn append(token: u64, id: &str, frame: &str) -> SpoolCmd {
        SpoolCmd::Append {
            entry: Entry {
                id: id.into(),
                frame: frame.as_bytes().to_vec(),
            },
            token,
        }
    }

    fn answers(out: &GroupOutcome) -> Vec<(u64, Result<String, AppendRefusal>)> {
        out.completions
            .iter()
            .map(|c| (c.token, c.result.clone()))
            .collect()
    }

    #[test]
    fn one_group_answers_every_sender_after_one_commit() {
        let (mut s, dir) = spool(1 << 20);
        let out = commit_group(
            &mut s,
            vec![
                append(1, "a", "{1}"),
                append(2, "b", "{2}"),
                append(3, "a", "{1}"),
            ],
        );
        assert_eq!(
            answers(&out),
            [
                (1, Ok("a".into())),
                (2, Ok("b".into())),
                (3, Ok("a".into()))
            ]
        );
        let ids: Vec<&str> = out.spooled.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "a retry in the group is kept once");
        assert_eq!(out.commit_error, None);
        // Durable: a reopen replays both.
        drop(s);
        let (_, replayed) = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(replayed.len(), 2);
    }

    #[test]
    fn a_retry_of_a_kept_id_is_answered_ok_and_another_content_is_refused() {
        let (mut s, _dir) = spool(1 << 20);
        commit_group(&mut s, vec![append(1, "a", "{1}")]);
        let out = commit_group(
            &mut s,
            vec![
                append(2, "a", "{1}"),
                append(3, "a", "{other}"),
                append(4, "b", "{2}"),
                append(5, "b", "{changed}"),
            ],
        );
        assert_eq!(
            answers(&out),
            [
                (4, Ok("b".into())),
                (2, Ok("a".into())),
                (3, Err(AppendRefusal::DuplicateId("a".into()))),
                (5, Err(AppendRefusal::DuplicateId("b".into()))),
            ]
        );
        assert_eq!(out.spooled.len(), 1, "only b is new");
        assert_eq!(s.live_count(), 2);
    }

    #[test]
    fn a_full_spool_refuses_new_entries_and_done_frees_room() {
        let (mut s, _dir) = spool(64);
        let big = format!("{{{}}}", "x".repeat(40));
        let out = commit_group(&mut s, vec![append(1, "a", &big), append(2, "b", &big)]);
        assert_eq!(answers(&out)[0], (1, Ok("a".into())));
        assert!(matches!(
            answers(&out)[1],
            (2, Err(AppendRefusal::Full { .. }))
        ));
        let out = commit_group(
            &mut s,
            vec![SpoolCmd::Done("a".into()), append(3, "b", &big)],
        );
        assert_eq!(answers(&out), [(3, Ok("b".into()))]);
        assert_eq!(s.live_count(), 1);
    }

    #[test]
    fn a_group_of_only_acks_answers_nobody() {
        let (mut s, _dir) = spool(1 << 20);
        commit_group(&mut s, vec![append(1, "a", "{1}")]);
        let out = commit_group(&mut s, vec![SpoolCmd::Done("a".into())]);
        assert_eq!(out, GroupOutcome::default());
        assert_eq!(s.live_count(), 0);
    }
}
