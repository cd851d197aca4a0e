//! The disk spool of acked messages: nothing a local sender was told is
//! accepted may be lost, not even to `kill -9` or a power cut.
//!
//! One append-only file, `spool.log`, of records:
//!
//! ```text
//!  tag (1 byte: 'A' add or 'D' done) | len (u32 LE) | fnv1a-64 of body (u64 LE) | body
//!  A body: id length (u16 LE) | id | frame        D body: id
//! ```
//!
//! The spool thread collects every request waiting in its channel, writes
//! them all and fsyncs once (group commit), and only then tells each sender
//! "accepted" and hands the messages to the link thread. On start the file
//! is replayed. A bad record (its checksum does not match) with valid ones
//! after it is damage, not a crash: the groups after it were fsynced and
//! answered `ok`. Replay skips to the next valid record, the damaged file
//! is copied to `spool.log.corrupt-<unix time>` and the spool rewritten
//! with what is valid. Only a torn tail, bad bytes with nothing valid after
//! them, can be records never fsynced (so never acknowledged to anyone),
//! and it is cut off. A `D` record is
//! written when the ack arrives, without its own fsync: losing one only
//! means one duplicate resend, which sinks drop. The file is rewritten with
//! only the live records once the dead ones outweigh them; a rewrite that
//! failed (a full disk, say) is not tried again until the file has grown by
//! half as much again, so a full disk is not refilled on every commit.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fnv::fnv1a;

pub const FILE_NAME: &str = "spool.log";
/// Locked for the agent's lifetime. Not the spool file itself: compaction
/// replaces that, and a lock on the replaced inode would guard nothing.
pub const LOCK_NAME: &str = "spool.lock";
const HEADER: usize = 1 + 4 + 8;
/// Compaction is not worth it below this size.
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// One acked message kept until its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub frame: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Add(Entry),
    Done(String),
}

pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let (tag, body) = match record {
        Record::Add(entry) => {
            let mut body = Vec::with_capacity(2 + entry.id.len() + entry.frame.len());
            body.extend_from_slice(&(entry.id.len() as u16).to_le_bytes());
            body.extend_from_slice(entry.id.as_bytes());
            body.extend_from_slice(&entry.frame);
            (b'A', body)
        }
        Record::Done(id) => (b'D', id.as_bytes().to_vec()),
    };
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&fnv1a(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// What replaying a spool file found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub records: Vec<Record>,
    /// Where the last valid record ends: bytes after it are a torn tail.
    pub valid_end: usize,
    /// Bad stretches with valid records after them, as (offset, length).
    pub skipped: Vec<(usize, usize)>,
}

impl Decoded {
    /// Whether every one of the file's `len` bytes is in a valid record.
    pub fn is_whole(&self, len: usize) -> bool {
        self.skipped.is_empty() && self.valid_end == len
    }
}

/// Decodes every valid record in `bytes`. A bad one does not end the
/// replay: the records after it may have been fsynced and accepted, so
/// decoding goes on at the next valid record ([`resync`]).
pub fn decode_all(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    let mut at = 0;
    while at < bytes.len() {
        if let Some((record, len)) = decode_one(&bytes[at..]) {
            decoded.records.push(record);
            at += len;
            decoded.valid_end = at;
            continue;
        }
        match resync(bytes, at) {
            Some(next) => {
                decoded.skipped.push((at, next - at));
                at = next;
            }
            None => break,
        }
    }
    decoded
}

/// Where the first valid record after the bad one at `at` begins, if any.
/// Most damage (a flipped bit, a lost sector) spares the header's length,
/// so the record right after it is tried first; only then each later
/// offset. A record counts only if its 64-bit checksum matches, which
/// bytes not written as a record (a frame's text, zeroes) all but never do.
fn resync(bytes: &[u8], at: usize) -> Option<usize> {
    let framed = bytes
        .get(at + 1..at + 5)
        .map(|len| at + HEADER + u32::from_le_bytes(len.try_into().unwrap()) as usize)
        .filter(|&next| next < bytes.len() && decode_one(&bytes[next..]).is_some());
    framed.or_else(|| (at + 1..bytes.len()).find(|&p| decode_one(&bytes[p..]).is_some()))
}

fn decode_one(bytes: &[u8]) -> Option<(Record, usize)> {
    // The tag first: resync calls this at every offset of a bad stretch,
    // and most offsets fail here without a checksum over a claimed body.
    if bytes.len() < HEADER || !matches!(bytes[0], b'A' | b'D') {
        return None;
    }
    let len = u32::from_le_bytes(bytes[1..5].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(bytes[5..13].try_into().ok()?);
    let body = bytes.get(HEADER..HEADER + len)?;
    if fnv1a(body) != sum {
        return None;
    }
    let record = match bytes[0] {
        b'A' => {
            let id_len = u16::from_le_bytes(body.get(0..2)?.try_into().ok()?) as usize;
            let id = std::str::from_utf8(body.get(2..2 + id_len)?).ok()?;
            Record::Add(Entry {
                id: id.to_string(),
                frame: body[2 + id_len..].to_vec(),
            })
        }
        b'D' => Record::Done(std::str::from_utf8(body).ok()?.to_string()),
        _ => return None,
    };
    Some((record, HEADER + len))
}

/// The live entries after replaying `records`, in the order they were added.
pub fn live_entries(records: Vec<Record>) -> Vec<Entry> {
    let mut order = Vec::new();
    let mut live: HashMap<String, Entry> = HashMap::new();
    for record in records {
        match record {
            Record::Add(entry) => {
                if !live.contains_key(&entry.id) {
                    order.push(entry.id.clone());
                }
                live.insert(entry.id.clone(), entry);
            }
            Record::Done(id) => {
                live.remove(&id);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| live.remove(&id))
        .collect()
}

/// Why an append was not accepted: the spool is at `VIGIL_SPOOL_MAX_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    Full { live: u64, max: u64 },
}

/// What the spool remembers of a live entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    size: u64,
    /// [`content_fingerprint`] of its frame: tells a sender's retry (same
    /// content) from a different message reusing the id.
    fingerprint: u64,
}

/// A message's identity for retries: its frame without `ts`, which the
/// agent fills in anew on every try. JSON object keys are sorted (serde's
/// map), so the same fields give the same fingerprint.
pub fn content_fingerprint(frame: &[u8]) -> u64 {
    match serde_json::from_slice::<serde_json::Value>(frame) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.remove("ts");
            fnv1a(serde_json::Value::Object(map).to_string().as_bytes())
        }
        _ => fnv1a(frame),
    }
}

/// The spool file and the size of what is live in it. Owned by the spool
/// thread alone.
pub struct Spool {
    path: PathBuf,
    file: File,
    /// Held open (and flocked) for the agent's lifetime.
    _lock: File,
    /// Each live entry, by id.
    live: HashMap<String, Live>,
    live_bytes: u64,
    file_bytes: u64,
    max_bytes: u64,
    buf: Vec<u8>,
    /// No compaction is tried while the file is smaller than this: set
    /// after a failed one.
    compact_after: u64,
    /// The file's bad bytes are already copied aside: a rewrite that fails
    /// after the copy does not copy the whole spool again on every try.
    damage_saved: bool,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, replays it, cuts a torn tail,
    /// and returns the entries still waiting for their ack.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, Vec<Entry>), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        let lock_path = dir.join(LOCK_NAME);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| format!("{}: cannot open: {e}", lock_path.display()))?;
        lock(&lock_file).map_err(|e| {
            format!(
                "{}: {e}; is another agent using this VIGIL_STATE_DIR?",
                lock_path.display()
            )
        })?;
        let path = dir.join(FILE_NAME);
        let fail =
            |what: &str, e: std::io::Error| format!("{}: cannot {what}: {e}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fail("open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| fail("read", e))?;
        let decoded = decode_all(&bytes);
        let mut end = bytes.len();
        if decoded.skipped.is_empty() && decoded.valid_end < end {
            end = decoded.valid_end;
            log::warn!(
                "{}: cutting {} bytes of torn records at offset {end} \
                 (never fsynced, so never accepted)",
                path.display(),
                bytes.len() - end
            );
            file.set_len(end as u64).map_err(|e| fail("truncate", e))?;
            file.sync_all().map_err(|e| fail("fsync", e))?;
        }
        // Valid records after bad bytes were fsynced (so answered `ok`),
        // unless a crash wrote an unfsynced group's pages out of order:
        // kept either way, since resending one never accepted costs a
        // duplicate, which sinks drop, and losing an accepted one is loss.
        let damaged = !decoded.skipped.is_empty();
        let entries = live_entries(decoded.records);
        let live: HashMap<String, Live> = entries
            .iter()
            .map(|e| {
                let live = Live {
                    size: e.frame.len() as u64,
                    fingerprint: content_fingerprint(&e.frame),
                };
                (e.id.clone(), live)
            })
            .collect();
        let live_bytes = live.values().map(|l| l.size).sum();
        let mut spool = Spool {
            path,
            file,
            _lock: lock_file,
            live,
            live_bytes,
            file_bytes: end as u64,
            max_bytes,
            buf: Vec::new(),
            compact_after: 0,
            damage_saved: false,
        };
        // Left by a compaction that a crash interrupted: never the spool.
        let _ = std::fs::remove_file(spool.tmp_path());
        if damaged {
            spool.repair(&bytes, &entries);
        }
        Ok((spool, entries))
    }

    /// Damage in the middle of the file: saves a copy of it as found, then
    /// rewrites the spool with the live entries. Either failing leaves the
    /// file as it is, which loses nothing (replay skips the bad bytes, and
    /// appends go after them), so the agent starts anyway.
    fn repair(&mut self, bytes: &[u8], entries: &[Entry]) {
        let result = self.save_damage(bytes).and_then(|()| self.rewrite(entries));
        if let Err(e) = result {
            log::error!("{}: left as it is: {e}", self.path.display());
        }
    }

    /// Copies the file's `bytes` to a new `spool.log.corrupt-<unix time>`
    /// (once per damage) and logs an error naming it: the bad bytes are
    /// about to be rewritten away, and may be an accepted message.
    fn save_damage(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.damage_saved {
            return Ok(());
        }
        let decoded = decode_all(bytes);
        let copy = write_new_copy(&self.path, bytes)?;
        self.damage_saved = true;
        let bad: usize = decoded.skipped.iter().map(|(_, len)| len).sum();
        log::error!(
            "{}: {bad} corrupt bytes in {} stretch(es), the first at offset {}{}; kept \
             the {} valid records around them; the damaged file is saved as {}",
            self.path.display(),
            decoded.skipped.len(),
            decoded
                .skipped
                .first()
                .map_or(decoded.valid_end, |(at, _)| *at),
            match bytes.len() - decoded.valid_end {
                0 => String::new(),
                torn => format!(", and {torn} torn bytes at the end"),
            },
            decoded.records.len(),
            copy.display()
        );
        Ok(())
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    #[cfg(test)]
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn contains(&self, id: &str) -> bool {
        self.live.contains_key(id)
    }

    /// The content fingerprint of live entry `id`, if it is live.
    pub fn fingerprint(&self, id: &str) -> Option<u64> {
        self.live.get(id).map(|l| l.fingerprint)
    }

    /// Buffers an add record; it is durable only after [`Spool::commit`].
    pub fn add(&mut self, entry: &Entry) -> Result<(), AppendError> {
        let size = entry.frame.len() as u64;
        if self.live_bytes + size > self.max_bytes {
            return Err(AppendError::Full {
                live: self.live_bytes,
                max: self.max_bytes,
            });
        }
        encode(&Record::Add(entry.clone()), &mut self.buf);
        let fingerprint = content_fingerprint(&entry.frame);
        self.live
            .insert(entry.id.clone(), Live { size, fingerprint });
        self.live_bytes += size;
        Ok(())
    }

    /// Buffers a done record for an acked id (unknown ids are ignored: a
    /// duplicate ack, or one for an id already compacted away).
    pub fn done(&mut self, id: &str) {
        if let Some(live) = self.live.remove(id) {
            self.live_bytes -= live.size;
            encode(&Record::Done(id.to_string()), &mut self.buf);
        }
    }

    /// Writes what is buffered; with `sync`, fsyncs it. On failure the
    /// buffered adds are undone so the caller can refuse them.
    pub fn commit(&mut self, sync: bool, added: &[&str]) -> Result<(), String> {
        let start = self.file_bytes;
        if !self.buf.is_empty() {
            // At the known end whatever moved the handle (a compaction's
            // read that failed half-way): the file is not O_APPEND, and a
            // write elsewhere would overwrite live records.
            let result = (self.file.seek(SeekFrom::Start(start)))
                .and_then(|_| self.file.write_all(&self.buf));
            self.file_bytes += self.buf.len() as u64;
            self.buf.clear();
            if let Err(e) = result {
                self.undo(added, start);
                return Err(format!("{}: write failed: {e}", self.path.display()));
            }
        }
        if sync {
            if let Err(e) = self.file.sync_data() {
                self.undo(added, start);
                return Err(format!("{}: fsync failed: {e}", self.path.display()));
            }
        }
        Ok(())
    }

    /// Forgets the refused adds and cuts the file back to `start`, where
    /// this group began. A torn record left in the middle of the file would
    /// be taken for damage at the next start (an error, a copy saved).
    fn undo(&mut self, added: &[&str], start: u64) {
        for id in added {
            if let Some(live) = self.live.remove(*id) {
                self.live_bytes -= live.size;
            }
        }
        let cut = self
            .file
            .set_len(start)
            .and_then(|()| self.file.seek(SeekFrom::Start(start)));
        match cut {
            Ok(_) => self.file_bytes = start,
            Err(e) => {
                // Cannot cut: later groups go after the torn record, which
                // replay skips to reach them; the next compaction saves a
                // copy of it before rewriting it away. Later groups are
                // still refused only if their own writes fail.
                log::error!(
                    "{}: cannot cut a failed write back: {e}",
                    self.path.display()
                );
                if let Ok(len) = self.file.seek(SeekFrom::End(0)) {
                    self.file_bytes = len;
                }
                self.damage_saved = false;
            }
        }
    }

    /// Rewrites the file with only live records when dead ones dominate.
    /// After a failure the next try waits for the file to grow by half
    /// (at least [`COMPACT_MIN_BYTES`]): each try reads the whole file.
    pub fn maybe_compact(&mut self) -> Result<bool, String> {
        if self.file_bytes < COMPACT_MIN_BYTES
            || self.file_bytes < 4 * self.live_bytes.max(1)
            || self.file_bytes < self.compact_after
        {
            return Ok(false);
        }
        self.compact().map(|()| true).inspect_err(|_| {
            // A partly written copy only takes the room the spool needs.
            let _ = std::fs::remove_file(self.tmp_path());
            self.compact_after = self.file_bytes + (self.file_bytes / 2).max(COMPACT_MIN_BYTES);
        })
    }

    fn tmp_path(&self) -> PathBuf {
        self.path.with_extension("log.tmp")
    }

    /// The rewrite itself: live records into a new file, renamed over.
    fn compact(&mut self) -> Result<(), String> {
        let fail = |what: &str, e: std::io::Error| {
            format!("compacting {}: {what}: {e}", self.path.display())
        };
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| fail("seek", e))?;
        let mut bytes = Vec::new();
        self.file
            .read_to_end(&mut bytes)
            .map_err(|e| fail("read", e))?;
        let decoded = decode_all(&bytes);
        if !decoded.is_whole(bytes.len()) {
            // A write that failed and could not be cut back: the rewrite
            // would drop its bytes, so they are kept first, as at start.
            self.save_damage(&bytes)?;
        }
        self.rewrite(&live_entries(decoded.records))
    }

    /// Replaces the file with one of only `entries`' add records.
    fn rewrite(&mut self, entries: &[Entry]) -> Result<(), String> {
        let fail = |what: &str, e: std::io::Error| {
            format!("rewriting {}: {what}: {e}", self.path.display())
        };
        let mut out = Vec::new();
        for entry in entries {
            encode(&Record::Add(entry.clone()), &mut out);
        }
        let tmp = self.tmp_path();
        // Opened for reading and writing before the rename, so after it this
        // very handle is the spool: nothing can fail between the rename and
        // switching to it (a reopen could, leaving us writing to the
        // unlinked old file).
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| fail("create", e))?;
        file.write_all(&out).map_err(|e| fail("write", e))?;
        file.sync_all().map_err(|e| fail("fsync", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| fail("rename", e))?;
        self.file = file;
        self.file_bytes = out.len() as u64;
        self.damage_saved = false;
        if let Some(dir) = self.path.parent() {
            super::identity::sync_dir(dir);
        }
        Ok(())
    }
}

/// Writes `bytes` to a file beside `path` that did not exist,
/// `<name>.corrupt-<unix time>[-n]`, fsynced, and returns its path.
fn write_new_copy(path: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    let secs = crate::clock::unix_ms() / 1000;
    let base = format!("{}.corrupt-{secs}", path.display());
    for n in 0..100 {
        let copy = PathBuf::from(match n {
            0 => base.clone(),
            n => format!("{base}-{n}"),
        });
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&copy) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: cannot create: {e}", copy.display())),
        };
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        if let Err(e) = written {
            // A partial copy would only take the room the spool needs.
            let _ = std::fs::remove_file(&copy);
            return Err(format!("{}: cannot write: {e}", copy.display()));
        }
        if let Some(dir) = path.parent() {
            super::identity::sync_dir(dir);
        }
        return Ok(copy);
    }
    Err(format!("{base}: 100 copies already exist"))
}

/// Takes an exclusive lock on the spool for this process's lifetime: two
/// agents sharing one state directory would interleave records and, with
/// one UUID, steal each other's route.
fn lock(file: &File) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor we own; the lock goes
    // away with the descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("cannot lock: {}", std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, frame: &str) -> Entry {
        Entry {
            id: id.into(),
            frame: frame.as_bytes().to_vec(),
        }
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-spool-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_cut() {
        let mut bytes = Vec::new();
        encode(&Record::Add(entry("a", "{1}")), &mut bytes);
        encode(&Record::Done("a".into()), &mut bytes);
        encode(&Record::Add(entry("b", "{2}")), &mut bytes);
        let full = bytes.len();
        let decoded = decode_all(&bytes);
        assert_eq!((decoded.records.len(), decoded.valid_end), (3, full));
        assert!(decoded.is_whole(full));
        assert_eq!(live_entries(decoded.records), vec![entry("b", "{2}")]);
        for cut in 0..full {
            let decoded = decode_all(&bytes[..cut]);
            assert!(decoded.valid_end <= cut);
            assert_eq!(decoded.skipped, [], "a cut leaves only a torn tail");
        }
        let mut corrupt = bytes.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert_eq!(decode_all(&corrupt).records.len(), 2);
    }

    /// Three records; the middle one damaged at byte `at` of it.
    fn damaged_at(at: usize) -> (Vec<u8>, usize, usize) {
        let mut bytes = Vec::new();
        encode(&Record::Add(entry("a", r#"{"m":"a"}"#)), &mut bytes);
        let start = bytes.len();
        encode(&Record::Add(entry("b", r#"{"m":"b"}"#)), &mut bytes);
        let len = bytes.len() - start;
        encode(&Record::Add(entry("c", r#"{"m":"c"}"#)), &mut bytes);
        bytes[start + at] ^= 0x40;
        (bytes, start, len)
    }

    #[test]
    fn replay_goes_on_after_a_bad_record_in_the_middle() {
        // In the tag, the length (the framing is lost: found by scanning),
        // the checksum and the body.
        for at in [0, 1, 4, 5, HEADER, HEADER + 4] {
            let (bytes, start, len) = damaged_at(at);
            let decoded = decode_all(&bytes);
            let ids: Vec<_> = live_entries(decoded.records)
                .into_iter()
                .map(|e| e.id)
                .collect();
            assert_eq!(ids, ["a", "c"], "damage at byte {at}");
            assert_eq!(decoded.skipped, [(start, len)], "damage at byte {at}");
            assert_eq!(decoded.valid_end, bytes.len());
        }
    }

    fn corrupt_copies(dir: &Path) -> Vec<PathBuf> {
        let mut copies: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("spool.log.corrupt-"))
            .collect();
        copies.sort();
        copies
    }

    #[test]
    fn a_corrupt_middle_record_loses_no_accepted_group_after_it() {
        let dir = temp_dir();
        let (mut spool, _) = Spool::open(&dir, 1 << 20).unwrap();
        let mut group_starts = Vec::new();
        for group in [["a1", "a2"], ["b1", "b2"], ["c1", "c2"]] {
            group_starts.push(spool.file_bytes as usize);
            for id in group {
                spool
                    .add(&entry(id, &format!(r#"{{"m":"{id}"}}"#)))
                    .unwrap();
            }
            spool.commit(true, &group).unwrap();
        }
        drop(spool);
        // Bit rot in the body of the second group's first record.
        let path = dir.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[group_starts[1] + HEADER + 3] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let (spool, entries) = Spool::open(&dir, 1 << 20).unwrap();
        let ids: Vec<_> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a1", "a2", "b2", "c1", "c2"]);
        let copies = corrupt_copies(&dir);
        assert_eq!(copies.len(), 1, "the damaged file is set aside");
        assert_eq!(std::fs::read(&copies[0]).unwrap(), bytes, "as it was found");
        // Rewritten whole: the next start finds no damage, saves no copy.
        let rewritten = std::fs::read(&path).unwrap();
        assert!(decode_all(&rewritten).is_whole(rewritten.len()));
        drop(spool);
        let (_, again) = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(again, entries);
        assert_eq!(corrupt_copies(&dir).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_alone_is_cut_and_not_saved() {
        let dir = temp_dir();
        let (mut spool, _) = Spool::open(&dir, 1 << 20).unwrap();
        spool.add(&entry("a", r#"{"m":"a"}"#)).unwrap();
        spool.commit(true, &["a"]).unwrap();
        let end = spool.file_bytes;
        drop(spool);
        let path = dir.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        // The first half of a record, as a crash mid-write leaves.
        let mut torn = Vec::new();
        encode(&Record::Add(entry("b", r#"{"m":"b"}"#)), &mut torn);
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, entries) = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(entries, [entry("a", r#"{"m":"a"}"#)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end, "cut");
        assert_eq!(corrupt_copies(&dir), Vec::<PathBuf>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_write_that_could_not_be_cut_buries_nothing() {
        let dir = temp_dir();
        let (mut spool, _) = Spool::open(&dir, 1 << 30).unwrap();
        spool.add(&entry("a", r#"{"m":"a"}"#)).unwrap();
        spool.commit(true, &["a"]).unwrap();
        // What undo leaves when set_len fails: the torn record stays and
        // the next groups go after it.
        spool.file.write_all(b"A\x40\x00\x00\x00torn").unwrap();
        spool.file_bytes = spool.file.stream_position().unwrap();
        spool.add(&entry("b", r#"{"m":"b"}"#)).unwrap();
        spool.commit(true, &["b"]).unwrap();
        // Compaction saves the torn bytes before rewriting them away.
        fill(&mut spool, 0, 600, usize::MAX);
        assert_eq!(spool.maybe_compact(), Ok(true));
        assert_eq!(corrupt_copies(&dir).len(), 1);
        drop(spool);
        let (_, entries) = Spool::open(&dir, 1 << 30).unwrap();
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "the group after the torn record is kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn spool_survives_reopen_and_enforces_its_bound() {
        let dir = temp_dir();
        let (mut spool, entries) = Spool::open(&dir, 10).unwrap();
        assert!(entries.is_empty());
        spool.add(&entry("a", "12345")).unwrap();
        spool.add(&entry("b", "12345")).unwrap();
        assert!(matches!(
            spool.add(&entry("c", "1")),
            Err(AppendError::Full { .. })
        ));
        spool.commit(true, &["a", "b"]).unwrap();
        spool.done("a");
        spool.commit(false, &[]).unwrap();
        drop(spool);
        // A torn record at the end, as a crash mid-write leaves.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE_NAME))
            .unwrap();
        f.write_all(b"A\x10\x00").unwrap();
        drop(f);
        let (spool, entries) = Spool::open(&dir, 10).unwrap();
        assert_eq!(entries, vec![entry("b", "12345")]);
        let second = Spool::open(&dir, 10)
            .err()
            .expect("a second opener is refused");
        assert!(second.contains("another agent"), "{second}");
        assert_eq!(spool.live_bytes(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_keeps_only_live_entries() {
        let dir = temp_dir();
        let (mut spool, _) = Spool::open(&dir, 1 << 30).unwrap();
        let big = "x".repeat(4096);
        for i in 0..600 {
            let id = format!("m{i}");
            spool.add(&entry(&id, &big)).unwrap();
            spool.commit(false, &[]).unwrap();
            if i != 7 {
                spool.done(&id);
            }
        }
        spool.commit(true, &[]).unwrap();
        assert!(spool.maybe_compact().unwrap());
        spool.add(&entry("late", "{}")).unwrap();
        spool.commit(true, &[]).unwrap();
        drop(spool);
        let (_, entries) = Spool::open(&dir, 1 << 30).unwrap();
        let ids: Vec<_> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["m7", "late"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appends_go_to_the_end_wherever_the_handle_was_left() {
        let dir = temp_dir();
        let (mut spool, _) = Spool::open(&dir, 1 << 20).unwrap();
        spool.add(&entry("a", r#"{"m":"a"}"#)).unwrap();
        spool.commit(true, &["a"]).unwrap();
        // As a compaction's read that failed half-way leaves it.
        spool.file.seek(SeekFrom::Start(0)).unwrap();
        spool.add(&entry("b", r#"{"m":"b"}"#)).unwrap();
        spool.commit(true, &["b"]).unwrap();
        drop(spool);
        let (_, entries) = Spool::open(&dir, 1 << 20).unwrap();
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "b did not overwrite a");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Adds `n` entries of 4 KiB, all acked but `keep`.
    fn fill(spool: &mut Spool, from: usize, n: usize, keep: usize) {
        let big = "x".repeat(4096);
        for i in from..from + n {
            let id = format!("m{i}");
            spool.add(&entry(&id, &big)).unwrap();
            if i != keep {
                spool.done(&id);
            }
            spool.commit(false, &[]).unwrap();
        }
    }

    #[test]
    fn a_failed_compaction_leaves_no_copy_and_waits_for_growth() {
        let dir = temp_dir();
        let (mut spool, _) = Spool::open(&dir, 1 << 30).unwrap();
        fill(&mut spool, 0, 600, 7);
        // The rename cannot replace a directory: the copy is written, then
        // the compaction fails.
        std::fs::remove_file(dir.join(FILE_NAME)).unwrap();
        std::fs::create_dir(dir.join(FILE_NAME)).unwrap();
        let tmp = dir.join("spool.log.tmp");
        assert!(spool.maybe_compact().is_err());
        assert!(!tmp.exists(), "the partial copy is removed");
        assert_eq!(spool.maybe_compact(), Ok(false), "not tried at once again");
        fill(&mut spool, 600, 100, usize::MAX);
        assert_eq!(
            spool.maybe_compact(),
            Ok(false),
            "nor after a little growth"
        );
        std::fs::remove_dir(dir.join(FILE_NAME)).unwrap();
        fill(&mut spool, 700, 300, usize::MAX);
        assert_eq!(spool.maybe_compact(), Ok(true), "tried again once grown");
        drop(spool);
        let (_, entries) = Spool::open(&dir, 1 << 30).unwrap();
        let ids: Vec<_> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["m7"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_is_cut_away_so_later_groups_survive_replay() {
        let dir = temp_dir();
        let (mut spool, _) = Spool::open(&dir, 1 << 20).unwrap();
        spool.add(&entry("a", r#"{"m":"a"}"#)).unwrap();
        spool.commit(true, &["a"]).unwrap();
        // A write that failed half-way: a torn record at the end.
        let start = spool.file_bytes;
        spool.file.write_all(b"A\x40\x00\x00\x00torn").unwrap();
        spool.undo(&[], start);
        spool.add(&entry("b", r#"{"m":"b"}"#)).unwrap();
        spool.commit(true, &["b"]).unwrap();
        drop(spool);
        let (_, entries) = Spool::open(&dir, 1 << 20).unwrap();
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "the group after the failed write is kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn fingerprints_ignore_ts_only() {
        let a = content_fingerprint(br#"{"id":"x","message":"m","ts":1.0}"#);
        let b = content_fingerprint(br#"{"ts":2.5,"message":"m","id":"x"}"#);
        let c = content_fingerprint(br#"{"id":"x","message":"other","ts":1.0}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_lock_outlives_compaction() {
        let dir = temp_dir();
        let (_spool, _) = Spool::open(&dir, 1 << 20).unwrap();
        let second = Spool::open(&dir, 1 << 20);
        assert!(
            second.is_err(),
            "a second agent on the same directory is refused"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
