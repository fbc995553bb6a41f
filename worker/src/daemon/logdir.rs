//! One worker identity's log directory: the identity that owns it, its
//! Merkle log, and the history of its attested checkpoints.
//!
//! ```text
//! <state>/logs/<hex of K>/
//!     identity      K, the source commit, the boot nonce, the identity
//!                   evidence and the generation (CBOR), written once at
//!                   creation before anything else: the key of the log
//!     log/          the Merkle log (`crate::log`) of K's signed statements
//!     checkpoints   every checkpoint K signed and the platform attested,
//!                   append-only, fsynced before it is served
//!     relogged      after a restart: how many of this log's entries the
//!                   next identity has logged again (see `Worker::start`)
//!     lost          entries the next identity could not log again, one a
//!                   line: `<index> <store path> <why>`
//! ```
//!
//! The key never touches the disk, so a restarted worker is a new identity
//! with a new directory; a directory is appended to only by the process
//! that created it, and only while that process's key is the one its
//! `identity` file names. Older directories stay readable: their entries
//! and proofs, and bundles for every entry their last attested checkpoint
//! covers.

// Parses what clients, files or Nix hand it: no panics from input.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ciborium::Value;
use provenix_verifier::cbor::{Fields, decode_map_with};
use provenix_verifier::{
    Bundle, Evidence, Hash, Identity, InclusionProof, SnpEvidence, VerifierKey, log_origin,
    verify_checkpoint,
};
use ring::digest;
use tokio::sync::watch;

use super::DaemonError;
use crate::log::Log;

/// The directory under the state directory that holds one directory per
/// identity.
pub const LOGS_DIR: &str = "logs";
const IDENTITY_FILE: &str = "identity";
const LOG_DIR: &str = "log";
const CHECKPOINTS_FILE: &str = "checkpoints";
const RELOGGED_FILE: &str = "relogged";
const LOST_FILE: &str = "lost";
/// Largest `lost` file read: a line per entry past the last checkpoint,
/// which a checkpoint interval bounds to a few thousand.
const MAX_LOST_FILE: u64 = 64 << 20;

/// Largest `identity` file read: a report, a certificate table and a VEK
/// are a few KiB.
const MAX_IDENTITY_FILE: u64 = 1 << 20;
/// Largest checkpoint record. The worker's notes are one signature over
/// four lines (origin, size, root, time: a few hundred bytes) and the evidence is a 1184-byte report
/// with a certificate table of a few KiB. The bound also bounds the torn
/// tail a crash can leave (see `History`).
const MAX_RECORD: usize = 64 << 10;
/// Most entries one [`LogDir::entries`] call returns.
pub const MAX_ENTRIES_PER_READ: u64 = 1024;

const CHECKPOINTS_MAGIC: &[u8; 16] = b"provenix-cps v1\n";
/// Record header: body length (u32), tree size (u64), SHA-256 of the size
/// and the body.
const RECORD_HEADER: usize = 4 + 8 + 32;

/// A log's tree head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The number of entries.
    pub size: u64,
    /// The RFC 9162 root of those entries.
    pub root: Hash,
}

/// A checkpoint signed by the log's key and attested by the platform
/// (`REPORT_DATA = checkpoint_report_data(note)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestedCheckpoint {
    /// The C2SP signed note.
    pub note: String,
    /// Its tree size.
    pub size: u64,
    /// Its root.
    pub root: Hash,
    /// The evidence binding it.
    pub evidence: Evidence,
}

/// One identity's log directory.
#[derive(Debug)]
pub struct LogDir {
    dir: PathBuf,
    generation: u64,
    identity: Identity,
    origin: String,
    vkey: VerifierKey,
    log: RwLock<Log>,
    history: Mutex<History>,
    latest: watch::Sender<Option<Arc<AttestedCheckpoint>>>,
}

impl LogDir {
    /// Create the directory of a new identity under `logs`, and its empty
    /// log. Fails if it exists: a key is never reused.
    pub(crate) fn create(
        logs: &Path,
        generation: u64,
        identity: Identity,
    ) -> Result<LogDir, DaemonError> {
        let dir = logs.join(hex::encode(identity.worker_key));
        std::fs::create_dir(&dir).map_err(io("create", &dir))?;
        sync_dir(logs)?;
        write_atomically(
            &dir.join(IDENTITY_FILE),
            &encode_identity(generation, &identity),
        )?;
        let log = Log::open(&dir.join(LOG_DIR))?;
        let history = History::open(&dir.join(CHECKPOINTS_FILE))?;
        Self::assemble(dir, generation, identity, log, history, None)
    }

    /// Open an existing directory (recovering its log and checkpoint
    /// history from a crash), and check that its files agree: the
    /// directory is named after the identity's key, the last checkpoint is
    /// signed by that key and is a tree head of the log.
    pub fn open(dir: &Path) -> Result<LogDir, DaemonError> {
        let path = dir.join(IDENTITY_FILE);
        let bytes = read_limited(&path, MAX_IDENTITY_FILE)?;
        let (generation, identity) =
            decode_identity(&bytes).map_err(|reason| state(&path, reason))?;
        if dir.file_name().and_then(|n| n.to_str()) != Some(&hex::encode(identity.worker_key)) {
            return Err(state(
                dir,
                "the directory is not named after its identity's key",
            ));
        }
        let log = Log::open(&dir.join(LOG_DIR))?;
        let history = History::open(&dir.join(CHECKPOINTS_FILE))?;
        let vkey = checkpoint_key(&identity.worker_key)?;
        let origin = log_origin(&identity.worker_key);
        let latest = match history.last_offset() {
            Some(at) => Some(Arc::new(history.read(at, &vkey, &origin)?)),
            None => None,
        };
        if let Some(cp) = &latest {
            if cp.size > log.size() || log.root_at(cp.size)? != cp.root {
                return Err(state(
                    &history.path,
                    format!("checkpoint of size {} is not a head of the log", cp.size),
                ));
            }
        }
        Self::assemble(dir.to_owned(), generation, identity, log, history, latest)
    }

    fn assemble(
        dir: PathBuf,
        generation: u64,
        identity: Identity,
        log: Log,
        history: History,
        latest: Option<Arc<AttestedCheckpoint>>,
    ) -> Result<LogDir, DaemonError> {
        let origin = log_origin(&identity.worker_key);
        let vkey = checkpoint_key(&identity.worker_key)?;
        Ok(LogDir {
            dir,
            generation,
            identity,
            origin,
            vkey,
            log: RwLock::new(log),
            history: Mutex::new(history),
            latest: watch::Sender::new(latest),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// K, the key whose statements and checkpoints this log holds.
    pub fn key(&self) -> &[u8; 32] {
        &self.identity.worker_key
    }
    /// The identity document that owns the log.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// 1 for the first identity of a state directory, then one more per
    /// restart.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The checkpoint origin (`provenix_verifier::log_origin` of K).
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// The note verifier key of the log's checkpoints.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.vkey
    }

    pub(crate) fn read_log(&self) -> RwLockReadGuard<'_, Log> {
        // A panic while the lock was held leaves the log as a failed
        // append would: poisoned inside `Log` itself, refusing appends.
        self.log.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_log(&self) -> RwLockWriteGuard<'_, Log> {
        self.log.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current tree head (entries acknowledged so far).
    pub fn head(&self) -> Head {
        let log = self.read_log();
        Head {
            size: log.size(),
            root: log.root(),
        }
    }

    /// The latest attested checkpoint, if there is one.
    pub fn latest_checkpoint(&self) -> Option<Arc<AttestedCheckpoint>> {
        self.latest.borrow().clone()
    }

    /// A receiver that sees every new attested checkpoint.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<AttestedCheckpoint>>> {
        self.latest.subscribe()
    }

    /// Every attested checkpoint, oldest first, each read back and its
    /// signature checked. O(checkpoints): for audits and tests.
    pub fn checkpoints(&self) -> Result<Vec<AttestedCheckpoint>, DaemonError> {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history
            .index
            .iter()
            .map(|&(_, at)| history.read(at, &self.vkey, &self.origin))
            .collect()
    }

    /// Entry `index`: a COSE_Sign1 statement.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, DaemonError> {
        Ok(self.read_log().entry(index)?)
    }

    /// Entries `range`, at most [`MAX_ENTRIES_PER_READ`] of them (fewer if
    /// the range is longer or reaches past the end).
    pub fn entries(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, DaemonError> {
        let log = self.read_log();
        let end = range
            .end
            .min(log.size())
            .min(range.start.saturating_add(MAX_ENTRIES_PER_READ));
        (range.start..end)
            .map(|i| log.entry(i).map_err(DaemonError::from))
            .collect()
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, DaemonError> {
        Ok(self.read_log().inclusion_proof(index, size)?)
    }

    /// The consistency proof from the tree of `size1` entries to that of
    /// `size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, DaemonError> {
        Ok(self.read_log().consistency_proof(size1, size2)?)
    }

    /// Read every entry back and recompute the root (O(n)).
    pub fn verify(&self) -> Result<(), DaemonError> {
        Ok(self.read_log().verify()?)
    }

    /// The bundle of entry `index` under the latest attested checkpoint, or
    /// [`DaemonError::NotCovered`] when no attested checkpoint covers it
    /// yet.
    pub fn bundle(&self, index: u64) -> Result<Bundle, DaemonError> {
        let cp = self
            .latest_checkpoint()
            .filter(|cp| cp.size > index)
            .ok_or(DaemonError::NotCovered { index })?;
        self.bundle_under(index, &cp)
    }

    /// The bundle of entry `index` under the checkpoint `cp`.
    pub fn bundle_under(&self, index: u64, cp: &AttestedCheckpoint) -> Result<Bundle, DaemonError> {
        let (statement, hashes) = {
            let log = self.read_log();
            (log.entry(index)?, log.inclusion_proof(index, cp.size)?)
        };
        Ok(Bundle::Logged {
            statement,
            identity: self.identity.clone(),
            proof: InclusionProof {
                index,
                size: cp.size,
                hashes,
            },
            checkpoint: cp.note.clone(),
            checkpoint_evidence: cp.evidence.clone(),
        })
    }

    /// Record an attested checkpoint (durably) and serve it.
    pub(crate) fn add_checkpoint(&self, cp: AttestedCheckpoint) -> Result<(), DaemonError> {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history.append(&cp)?;
        self.latest.send_replace(Some(Arc::new(cp)));
        Ok(())
    }

    /// How many entries of this log a later identity has logged again.
    pub(crate) fn relogged(&self) -> Result<u64, DaemonError> {
        let path = self.dir.join(RELOGGED_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| state(&path, "not a number")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Record, durably, that entry `index` (about `path`) could not be
    /// logged again, and why.
    pub(crate) fn record_lost(&self, index: u64, path: &str, why: &str) -> Result<(), DaemonError> {
        let file = self.dir.join(LOST_FILE);
        let why: String = why
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .map_err(io("open", &file))?;
        f.write_all(format!("{index} {path} {why}\n").as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(io("append", &file))
    }

    /// The entries recorded by [`LogDir::record_lost`]: (index, path, why).
    pub(crate) fn lost(&self) -> Result<Vec<(u64, String, String)>, DaemonError> {
        let file = self.dir.join(LOST_FILE);
        let bytes = match read_limited(&file, MAX_LOST_FILE) {
            Ok(b) => b,
            Err(DaemonError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut out = Vec::new();
        // A line torn by a crash has no newline: it is skipped, and the
        // entry counts as neither logged again nor recorded lost.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let mut parts = line.trim_end().splitn(3, ' ');
            let (Some(index), Some(path), why) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if let Ok(index) = index.parse() {
                out.push((index, path.to_owned(), why.unwrap_or_default().to_owned()));
            }
        }
        Ok(out)
    }

    pub(crate) fn set_relogged(&self, upto: u64) -> Result<(), DaemonError> {
        write_atomically(
            &self.dir.join(RELOGGED_FILE),
            format!("{upto}\n").as_bytes(),
        )
    }
}

/// Whether `dir` is a log directory whose creation was interrupted before
/// its `identity` file was renamed into place: it holds nothing, or only
/// that file's temporary. The log is created only after the identity, so
/// such a directory never held an entry.
pub(crate) fn abandoned(dir: &Path) -> Result<bool, DaemonError> {
    if dir.join(IDENTITY_FILE).exists() {
        return Ok(false);
    }
    let tmp = format!("{IDENTITY_FILE}.tmp");
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        if entry.file_name().to_str() != Some(tmp.as_str()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The note verifier key of K's log.
fn checkpoint_key(worker_key: &[u8; 32]) -> Result<VerifierKey, DaemonError> {
    VerifierKey::ed25519(&log_origin(worker_key), worker_key)
        .map_err(|e| DaemonError::Internal(format!("checkpoint key: {e}")))
}

/// The append-only file of attested checkpoints.
///
/// A 16-byte magic, then records: body length (u32, big-endian), tree size
/// (u64, big-endian), SHA-256 of the size bytes and the body, the body (a
/// CBOR map: 1 note, 2 report, 3 certificate table, 4 VEK). The hash makes
/// a torn record detectable; as in the log, only the last record can be
/// torn (each append is fsynced before the next), so open cuts a bad tail
/// no longer than one record and refuses anything else.
#[derive(Debug)]
struct History {
    path: PathBuf,
    file: File,
    end: u64,
    /// (tree size, record offset) of every record.
    index: Vec<(u64, u64)>,
}

impl History {
    fn open(path: &Path) -> Result<History, DaemonError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("open", path))?;
        let len = file.metadata().map_err(io("stat", path))?.len();
        let header_len = u64::try_from(CHECKPOINTS_MAGIC.len()).unwrap_or(u64::MAX);
        if len < header_len {
            // New, or torn while its magic was written.
            file.set_len(0).map_err(io("truncate", path))?;
            file.write_all_at(CHECKPOINTS_MAGIC, 0)
                .and_then(|()| file.sync_all())
                .map_err(io("write", path))?;
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
            return Ok(History {
                path: path.to_owned(),
                file,
                end: header_len,
                index: Vec::new(),
            });
        }
        let mut magic = [0u8; 16];
        file.read_exact_at(&mut magic, 0)
            .map_err(io("read", path))?;
        if &magic != CHECKPOINTS_MAGIC {
            return Err(state(path, "not a checkpoint history (bad magic)"));
        }
        let mut reader = BufReader::new(ReadAt {
            file: &file,
            at: header_len,
        });
        let mut at = header_len;
        let mut index = Vec::new();
        let mut last_size = 0u64;
        let torn = loop {
            match read_record(&mut reader).map_err(io("read", path))? {
                RecordRead::End => break None,
                RecordRead::Torn(why) => break Some(why),
                RecordRead::Record { size, len } => {
                    if size <= last_size && !index.is_empty() {
                        return Err(state(
                            path,
                            format!("record at {at}: tree size {size} after {last_size}"),
                        ));
                    }
                    last_size = size;
                    index.push((size, at));
                    at = at.saturating_add(len);
                }
            }
        };
        if let Some(why) = torn {
            let max_torn = u64::try_from(RECORD_HEADER.saturating_add(MAX_RECORD)).unwrap_or(0);
            if len.saturating_sub(at) > max_torn {
                return Err(state(path, format!("corrupt record at {at}: {why}")));
            }
            file.set_len(at)
                .and_then(|()| file.sync_all())
                .map_err(io("truncate", path))?;
        }
        Ok(History {
            path: path.to_owned(),
            file,
            end: at,
            index,
        })
    }

    fn last_offset(&self) -> Option<u64> {
        self.index.last().map(|&(_, at)| at)
    }

    fn append(&mut self, cp: &AttestedCheckpoint) -> Result<(), DaemonError> {
        if let Some(&(last, _)) = self.index.last() {
            if cp.size <= last {
                return Err(DaemonError::Internal(format!(
                    "checkpoint of size {} after one of size {last}",
                    cp.size
                )));
            }
        }
        let body = encode_checkpoint(cp);
        if body.len() > MAX_RECORD {
            return Err(DaemonError::Internal("checkpoint record too large".into()));
        }
        let len = u32::try_from(body.len())
            .map_err(|_| DaemonError::Internal("checkpoint record too large".into()))?;
        let size = cp.size.to_be_bytes();
        let mut record = Vec::with_capacity(RECORD_HEADER.saturating_add(body.len()));
        record.extend_from_slice(&len.to_be_bytes());
        record.extend_from_slice(&size);
        record.extend_from_slice(record_hash(&size, &body).as_ref());
        record.extend_from_slice(&body);
        self.file
            .write_all_at(&record, self.end)
            .and_then(|()| self.file.sync_data())
            .map_err(io("append", &self.path))?;
        self.index.push((cp.size, self.end));
        self.end = self
            .end
            .saturating_add(u64::try_from(record.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    /// The record at `at`, its hash and its note's signature checked.
    fn read(
        &self,
        at: u64,
        vkey: &VerifierKey,
        origin: &str,
    ) -> Result<AttestedCheckpoint, DaemonError> {
        let mut reader = ReadAt {
            file: &self.file,
            at,
        };
        let mut header = [0u8; RECORD_HEADER];
        reader
            .read_exact(&mut header)
            .map_err(io("read", &self.path))?;
        let (len, size, hash) = split_header(&header);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_RECORD {
            return Err(state(&self.path, format!("record at {at} too large")));
        }
        let mut body = vec![0u8; len];
        reader
            .read_exact(&mut body)
            .map_err(io("read", &self.path))?;
        if record_hash(&size.to_be_bytes(), &body).as_ref() != hash {
            return Err(state(&self.path, format!("record at {at}: hash mismatch")));
        }
        let (note, evidence) = decode_checkpoint(&body)
            .map_err(|r| state(&self.path, format!("record at {at}: {r}")))?;
        let verified = verify_checkpoint(note.as_bytes(), vkey, origin)
            .map_err(|e| state(&self.path, format!("record at {at}: {e}")))?;
        if verified.size() != size {
            return Err(state(
                &self.path,
                format!(
                    "record at {at}: size {size}, the note says {}",
                    verified.size()
                ),
            ));
        }
        Ok(AttestedCheckpoint {
            size,
            root: *verified.root(),
            note,
            evidence,
        })
    }
}

enum RecordRead {
    Record { size: u64, len: u64 },
    End,
    Torn(String),
}

fn split_header(header: &[u8; RECORD_HEADER]) -> (u32, u64, &[u8]) {
    let (len, rest) = header.split_at(4);
    let (size, hash) = rest.split_at(8);
    let len = u32::from_be_bytes(len.try_into().unwrap_or([0xff; 4]));
    let size = u64::from_be_bytes(size.try_into().unwrap_or([0; 8]));
    (len, size, hash)
}

fn read_record(reader: &mut impl Read) -> std::io::Result<RecordRead> {
    let mut header = [0u8; RECORD_HEADER];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Ok(RecordRead::End);
    }
    if got < RECORD_HEADER {
        return Ok(RecordRead::Torn("short header".into()));
    }
    let (len, size, hash) = split_header(&header);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_RECORD {
        return Ok(RecordRead::Torn(format!("length {len} over the limit")));
    }
    let mut body = vec![0u8; len];
    if read_full(reader, &mut body)? < len {
        return Ok(RecordRead::Torn("short body".into()));
    }
    if record_hash(&size.to_be_bytes(), &body).as_ref() != hash {
        return Ok(RecordRead::Torn("hash mismatch".into()));
    }
    let total = RECORD_HEADER.saturating_add(len);
    Ok(RecordRead::Record {
        size,
        len: u64::try_from(total).unwrap_or(u64::MAX),
    })
}

/// Read until `buf` is full or the end; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => got = got.saturating_add(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn record_hash(size: &[u8], body: &[u8]) -> digest::Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(size);
    ctx.update(body);
    ctx.finish()
}

/// Sequential reads at an offset, through `pread`.
struct ReadAt<'f> {
    file: &'f File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at = self.at.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Encodings: CBOR maps with small integer keys, as statements and bundles.
// ---------------------------------------------------------------------------

const IDENTITY_VERSION: u64 = 1;

fn encode_identity(generation: u64, id: &Identity) -> Vec<u8> {
    let mut map = vec![
        (1, Value::from(IDENTITY_VERSION)),
        (2, Value::from(generation)),
        (3, Value::Bytes(id.worker_key.to_vec())),
        (4, Value::Text(id.source_commit.clone())),
        (5, Value::Bytes(id.boot_nonce.to_vec())),
    ];
    map.extend(evidence_fields(6, &id.evidence));
    encode_map(map)
}

fn decode_identity(bytes: &[u8]) -> Result<(u64, Identity), String> {
    let mut m = decode(
        bytes,
        usize::try_from(MAX_IDENTITY_FILE).unwrap_or(usize::MAX),
    )?;
    if m.uint(1, "version")? != IDENTITY_VERSION {
        return Err("unknown identity file version".into());
    }
    let generation = m.uint(2, "generation")?;
    let worker_key = m.bytes::<32>(3, "worker key")?;
    let source_commit = m.text(4, "source commit")?;
    let boot_nonce = m.bytes::<32>(5, "boot nonce")?;
    let evidence = evidence(&mut m, 6)?;
    m.finish()?;
    Ok((
        generation,
        Identity {
            worker_key,
            source_commit,
            boot_nonce,
            evidence,
        },
    ))
}

fn encode_checkpoint(cp: &AttestedCheckpoint) -> Vec<u8> {
    let mut map = vec![(1, Value::Text(cp.note.clone()))];
    map.extend(evidence_fields(2, &cp.evidence));
    encode_map(map)
}

fn decode_checkpoint(bytes: &[u8]) -> Result<(String, Evidence), String> {
    let mut m = decode(bytes, MAX_RECORD)?;
    let note = m.text(1, "note")?;
    let evidence = evidence(&mut m, 2)?;
    m.finish()?;
    Ok((note, evidence))
}

/// Evidence in the bundle encoding at `first + 3`. Files written before
/// TPM support hold an SNP report at `first`, its certificate table and
/// VEK at the next two keys; [`evidence`] still reads them.
fn evidence_fields(first: u64, e: &Evidence) -> Vec<(u64, Value)> {
    vec![(first.saturating_add(3), Value::Bytes(e.to_cbor()))]
}

fn encode_map(map: Vec<(u64, Value)>) -> Vec<u8> {
    let value = Value::Map(map.into_iter().map(|(k, v)| (Value::from(k), v)).collect());
    let mut out = Vec::new();
    // Writing a Value to a Vec fails only on allocation failure.
    let _ = ciborium::ser::into_writer(&value, &mut out);
    out
}

/// A state file's CBOR map, through the verifier's strict reader: what it
/// refuses in a statement it refuses here.
fn decode(bytes: &[u8], max: usize) -> Result<Fields<u64, String>, String> {
    decode_map_with(bytes, max, |e| e)
}

/// Evidence at `first + 3` in the bundle encoding, or in files written
/// before TPM support an SNP report at `first`, its certificate table and
/// VEK at the next two keys.
fn evidence(m: &mut Fields<u64, String>, first: u64) -> Result<Evidence, String> {
    let (second, third, encoded) = (
        first.saturating_add(1),
        first.saturating_add(2),
        first.saturating_add(3),
    );
    // Evidence parts are bounded by the file's own limit.
    let max = usize::try_from(MAX_IDENTITY_FILE).unwrap_or(usize::MAX);
    let report = m.optional(first, |m| m.byte_string(first, "report", max))?;
    let cert_table = m.optional(second, |m| m.byte_string(second, "certificate table", max))?;
    let vek = m.optional(third, |m| m.byte_string(third, "VEK", max))?;
    let evidence = m.optional(encoded, |m| m.byte_string(encoded, "evidence", max))?;
    match (report, evidence) {
        (None, Some(encoded)) if cert_table.is_none() && vek.is_none() => {
            Evidence::from_cbor(&encoded).map_err(|e| format!("evidence: {e}"))
        }
        (Some(report), None) => Ok(Evidence::Snp(SnpEvidence {
            report,
            cert_table,
            vek,
        })),
        _ => Err(format!("key {first}: no evidence, or two kinds")),
    }
}

// ---------------------------------------------------------------------------
// Files.
// ---------------------------------------------------------------------------

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_owned();
    move |source| DaemonError::Io { op, path, source }
}

fn state(path: &Path, reason: impl Into<String>) -> DaemonError {
    DaemonError::State {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, DaemonError> {
    let file = File::open(path).map_err(io("open", path))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io("read", path))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(state(path, format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// fsync a directory, so the entries created or renamed in it survive.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), DaemonError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

/// Write to a temporary file beside `path`, fsync it, rename it into place
/// and fsync the directory: a reader sees the old file or the new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DaemonError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    match path.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence() -> Evidence {
        Evidence::Snp(SnpEvidence {
            report: vec![1; 1184],
            cert_table: Some(vec![2; 100]),
            vek: None,
        })
    }

    #[test]
    fn identity_files_round_trip() {
        let id = Identity {
            worker_key: [3; 32],
            source_commit: "ab".repeat(20),
            boot_nonce: [4; 32],
            evidence: evidence(),
        };
        let bytes = encode_identity(7, &id);
        assert_eq!(decode_identity(&bytes).unwrap(), (7, id));
        assert!(decode_identity(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_identity(b"\xa0").is_err());
    }

    #[test]
    fn torn_history_tails_are_cut_and_corruption_refused() {
        let dir = std::env::temp_dir().join(format!("provenix-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CHECKPOINTS_FILE);
        let mut h = History::open(&path).unwrap();
        for size in [1, 5, 9] {
            h.append(&AttestedCheckpoint {
                note: format!("note {size}"),
                size,
                root: [0; 32],
                evidence: evidence(),
            })
            .unwrap();
        }
        assert!(
            h.append(&AttestedCheckpoint {
                note: "old".into(),
                size: 9,
                root: [0; 32],
                evidence: evidence(),
            })
            .is_err()
        );
        let full = std::fs::metadata(&path).unwrap().len();
        drop(h);
        // Every cut inside the last record leaves the first two.
        let third = History::open(&path).unwrap().index[2].1;
        for cut in [third + 1, third + 44, full - 1] {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(cut).unwrap();
            let h = History::open(&path).unwrap();
            assert_eq!(h.index.len(), 2, "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), third);
        }
        // A flipped byte in the first record, with more than a record's
        // worth after it: not a torn tail.
        let mut h = History::open(&path).unwrap();
        for size in 20..30 {
            h.append(&AttestedCheckpoint {
                note: "x".repeat(10_000),
                size,
                root: [0; 32],
                evidence: evidence(),
            })
            .unwrap();
        }
        drop(h);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"\xff", 16 + 50).unwrap();
        assert!(matches!(
            History::open(&path),
            Err(DaemonError::State { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
