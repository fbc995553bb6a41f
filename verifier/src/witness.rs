//! Checkpoint memory: what this verifier has seen of each worker's log, so
//! a log that shows different histories to different readers (a fork) is
//! caught.
//!
//! A worker's log is append-only only if someone checks: a worker (or
//! whoever holds its key) could sign two checkpoints that disagree, and
//! give each to a different user. The verifier therefore remembers, per
//! log, the largest checkpoint it has accepted, and accepts another one
//! only when it is provably the same history:
//!
//! - same size: the roots must be equal; two signed checkpoints of one size
//!   with different roots are a **fork**, proof of misbehaviour by the key
//!   holder, kept as both signed notes;
//! - larger: an RFC 9162 consistency proof from the remembered checkpoint to
//!   the new one must verify, and the new one is then remembered;
//! - smaller: a consistency proof from the new one to the remembered one
//!   must verify.
//!
//! A checkpoint that is neither provably the same history nor a fork is
//! *unproven*: without a proof the verifier cannot tell an extension from
//! a fork at another size. The policy says whether to refuse such bundles
//! (the default) or accept them with a warning (`[checkpoint] unproven`).
//! A proof that fails to verify is not itself a fork (proofs are unsigned:
//! anyone can write a bad one), so it is treated as no proof.
//!
//! The memory is a directory with one small file per log, `<hex key>.checkpoint`,
//! holding the remembered signed note; it is checked again on every load.
//! A fork found is kept as `<hex key>.fork` (both signed notes, JSON), and
//! refuses every bundle of that log from then on. Writes are crash-safe
//! (a temporary file, fsync, rename, fsync of the directory) and, on Unix,
//! serialised between concurrent verifiers by an advisory lock, under which
//! the file is read again and the new checkpoint checked against what
//! another verifier may have written meanwhile.
//!
//! Checkpoints also carry the worker's clock (the `provenix-time` extension
//! line), which [`check_freshness`] compares with the verification time.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::binding::log_origin;
use crate::bundle::Bundle;
use crate::checkpoint::{MAX_NOTE_LEN, VerifiedCheckpoint, VerifierKey, verify_checkpoint};
use crate::error::{Error, Finding, fmt_time};
use crate::merkle::{Hash, MAX_CONSISTENCY_PROOF, verify_consistency};
use crate::verify_bundle::VerifiedBundle;

/// The checkpoint extension line that carries the worker's clock when it
/// signed the checkpoint: `provenix-time <unix seconds>` (canonical
/// decimal). c2sp.org/tlog-checkpoint leaves extension lines to the log;
/// the prefix keeps it apart from other logs' lines.
pub const TIME_EXTENSION: &str = "provenix-time";

/// How far in the future of the verification time a checkpoint's time may
/// be: clocks of worker and verifier differ by seconds, not minutes.
pub const MAX_CLOCK_SKEW: i64 = 300;

/// The `provenix-time` extension line for `time` (unix seconds), without
/// its newline.
pub fn time_extension(time: i64) -> String {
    format!("{TIME_EXTENSION} {time}")
}

/// The time a checkpoint states in its `provenix-time` line, if it has one.
/// More than one such line, or one that is not canonical decimal, is an
/// error: the worker writes exactly one.
pub fn checkpoint_time(checkpoint: &VerifiedCheckpoint) -> Result<Option<i64>, Error> {
    let mut found = None;
    for line in checkpoint.checkpoint().extensions() {
        // Ours is the line that is the name, or the name and a space;
        // `provenix-timezone …` would be someone else's.
        let Some(rest) = line
            .strip_prefix(TIME_EXTENSION)
            .filter(|r| r.is_empty() || r.starts_with(' '))
        else {
            continue;
        };
        let bad = |why: &str| {
            Error::Policy(format!(
                "checkpoint of {} at size {}: {why}: {line:?}",
                checkpoint.origin(),
                checkpoint.size()
            ))
        };
        let digits = rest
            .strip_prefix(' ')
            .ok_or_else(|| bad("malformed time line"))?;
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        let time: i64 = digits
            .parse()
            .ok()
            .filter(|_| canonical)
            .ok_or_else(|| bad("time is not canonical decimal unix seconds"))?;
        if found.replace(time).is_some() {
            return Err(bad("more than one time line"));
        }
    }
    Ok(found)
}

/// Check that `checkpoint` was signed at most `max_age` seconds before
/// `at`, and not more than [`MAX_CLOCK_SKEW`] after it. A checkpoint
/// without a time cannot be shown fresh and fails.
pub fn check_freshness(
    checkpoint: &VerifiedCheckpoint,
    max_age: u64,
    at: i64,
) -> Result<(), Finding> {
    let expected = || {
        format!(
            "signed within {} before {} (policy checkpoint.max_age)",
            fmt_age(max_age),
            fmt_time(at)
        )
    };
    let time = match checkpoint_time(checkpoint) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(Finding {
                field: "checkpoint.time",
                found: format!("no {TIME_EXTENSION} line"),
                expected: expected(),
            });
        }
        Err(e) => {
            return Err(Finding {
                field: "checkpoint.time",
                found: e.to_string(),
                expected: expected(),
            });
        }
    };
    let age = i128::from(at).saturating_sub(i128::from(time));
    if age > i128::from(max_age) {
        return Err(Finding {
            field: "checkpoint.time",
            found: format!("{} ({} old)", fmt_time(time), fmt_age_i(age)),
            expected: expected(),
        });
    }
    if age < i128::from(MAX_CLOCK_SKEW).saturating_neg() {
        return Err(Finding {
            field: "checkpoint.time",
            found: format!("{} (in the future)", fmt_time(time)),
            expected: format!(
                "not after {} plus {MAX_CLOCK_SKEW} s of clock skew",
                fmt_time(at)
            ),
        });
    }
    Ok(())
}

/// Seconds as people read them: `90s`, `15m`, `36h`, `3d`.
pub fn fmt_age(secs: u64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn fmt_age_i(secs: i128) -> String {
    fmt_age(u64::try_from(secs).unwrap_or(u64::MAX))
}

/// A verified checkpoint of one worker's log, with its signed note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    worker_key: [u8; 32],
    note: String,
    checkpoint: VerifiedCheckpoint,
}

impl Seen {
    /// Verify `note` as a checkpoint of the log of worker key `worker_key`
    /// (origin and key name [`log_origin`], signed by that key).
    pub fn from_note(note: &str, worker_key: &[u8; 32]) -> Result<Seen, Error> {
        let origin = log_origin(worker_key);
        let key = VerifierKey::ed25519(&origin, worker_key)?;
        let checkpoint = verify_checkpoint(note.as_bytes(), &key, &origin)?;
        Ok(Seen {
            worker_key: *worker_key,
            note: note.to_owned(),
            checkpoint,
        })
    }

    /// The checkpoint of a bundle that [`crate::verify_bundle`] accepted
    /// as `verified`; `None` for a direct-mode bundle, which has none. The
    /// checkpoint's signature is checked again here (one Ed25519
    /// verification), so nothing is taken on trust from the bytes.
    pub fn from_bundle(bytes: &[u8], verified: &VerifiedBundle) -> Result<Option<Seen>, Error> {
        match Bundle::from_cbor(bytes)? {
            Bundle::Direct { .. } => Ok(None),
            Bundle::Logged {
                identity,
                checkpoint,
                ..
            } => {
                if identity.worker_key != verified.statement().worker_key {
                    return Err(Error::Binding(
                        "the bundle is not the one that was verified".into(),
                    ));
                }
                Seen::from_note(&checkpoint, &identity.worker_key).map(Some)
            }
        }
    }

    /// The worker key whose log this is.
    pub fn worker_key(&self) -> &[u8; 32] {
        &self.worker_key
    }
    /// The log's origin.
    pub fn origin(&self) -> &str {
        self.checkpoint.origin()
    }
    /// The tree size.
    pub fn size(&self) -> u64 {
        self.checkpoint.size()
    }
    /// The root hash.
    pub fn root(&self) -> &Hash {
        self.checkpoint.root()
    }
    /// The signed note, as received.
    pub fn note(&self) -> &str {
        &self.note
    }
    /// The verified checkpoint.
    pub fn checkpoint(&self) -> &VerifiedCheckpoint {
        &self.checkpoint
    }

    fn same_tree(&self, other: &Seen) -> bool {
        self.size() == other.size() && self.root() == other.root()
    }
}

/// First line of a `.consistency` file.
const PROOF_HEADER: &str = "provenix consistency v1";

/// A consistency proof carried beside bundles, as a `.consistency` file
/// (docs/policy.md, "Checkpoints"):
///
/// ```text
/// provenix consistency v1
/// <origin>
/// <size1> <size2>
/// <base64 hash>        (one line per node, RFC 9162 order; none when equal)
/// ```
///
/// It needs no signature: it is checked against two signed checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The log's origin.
    pub origin: String,
    /// The older tree size.
    pub size1: u64,
    /// The newer tree size.
    pub size2: u64,
    /// The proof's nodes.
    pub hashes: Vec<Hash>,
}

impl ConsistencyProof {
    /// Largest `.consistency` file: the header, an origin line, two sizes
    /// and [`MAX_CONSISTENCY_PROOF`] base64 hashes of 44 characters.
    pub const MAX_LEN: usize = 1024 + MAX_CONSISTENCY_PROOF * 45;

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{PROOF_HEADER}\n{}\n{} {}\n",
            self.origin, self.size1, self.size2
        );
        for h in &self.hashes {
            out.push_str(&STANDARD.encode(h));
            out.push('\n');
        }
        out
    }

    /// Parse a `.consistency` file strictly; the error names the line.
    pub fn parse(bytes: &[u8]) -> Result<ConsistencyProof, Error> {
        let bad =
            |line: usize, why: &str| Error::Policy(format!("consistency proof line {line}: {why}"));
        if bytes.len() > Self::MAX_LEN {
            return Err(bad(0, "file too long"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad(0, "not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad(0, "no final newline"))?;
        let mut lines = body.split('\n');
        if lines.next() != Some(PROOF_HEADER) {
            return Err(bad(1, "not \"provenix consistency v1\""));
        }
        let origin = lines
            .next()
            .filter(|o| !o.is_empty() && !o.chars().any(|c| c.is_control() || c.is_whitespace()))
            .ok_or_else(|| bad(2, "missing or malformed origin"))?;
        let sizes = lines.next().ok_or_else(|| bad(3, "missing sizes"))?;
        let parse_size = |s: &str| {
            s.parse::<u64>()
                .ok()
                .filter(|n| n.to_string() == s)
                .ok_or_else(|| bad(3, "sizes are not two canonical decimal numbers"))
        };
        let (s1, s2) = sizes
            .split_once(' ')
            .ok_or_else(|| bad(3, "sizes are not \"<size1> <size2>\""))?;
        let (size1, size2) = (parse_size(s1)?, parse_size(s2)?);
        let mut hashes = Vec::new();
        for (i, line) in lines.enumerate() {
            let n = i.saturating_add(4);
            if hashes.len() >= MAX_CONSISTENCY_PROOF {
                return Err(bad(n, "more nodes than any consistency proof has"));
            }
            let raw = STANDARD
                .decode(line)
                .map_err(|_| bad(n, "not canonical base64"))?;
            hashes.push(Hash::try_from(raw.as_slice()).map_err(|_| bad(n, "not a 32-byte hash"))?);
        }
        Ok(ConsistencyProof {
            origin: origin.to_owned(),
            size1,
            size2,
            hashes,
        })
    }
}

/// Where consistency proofs come from: files carried beside the bundles,
/// or a worker's Log API. The library never fetches anything itself.
pub trait ProofSource {
    /// The consistency proof from the tree of `size1` leaves to that of
    /// `size2` in the log `origin`, if this source has one.
    fn consistency(&self, origin: &str, size1: u64, size2: u64) -> Option<Vec<Hash>>;
}

impl ProofSource for Vec<ConsistencyProof> {
    fn consistency(&self, origin: &str, size1: u64, size2: u64) -> Option<Vec<Hash>> {
        self.iter()
            .find(|p| p.origin == origin && p.size1 == size1 && p.size2 == size2)
            .map(|p| p.hashes.clone())
    }
}

/// Two signed checkpoints of one log and one size with different roots:
/// proof that the key holder signed two histories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The log's origin.
    pub origin: String,
    /// The size both checkpoints claim.
    pub size: u64,
    /// The two signed notes.
    pub notes: [String; 2],
}

/// Schema of a `.fork` file.
pub const FORK_SCHEMA: &str = "provenix.fork/v1";

impl Fork {
    /// The `.fork` file: JSON with both signed notes, so anyone can check
    /// both signatures with the worker key.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "schema": FORK_SCHEMA,
            "origin": self.origin,
            "size": self.size,
            "checkpoints": self.notes,
        })
        .to_string()
    }
}

/// Why a checkpoint was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// The log forked, now or before (the `.fork` file in the memory).
    Forked {
        /// The evidence.
        fork: Fork,
        /// Where it is kept, when there is a memory directory.
        file: Option<PathBuf>,
    },
    /// No valid consistency proof relates it to the remembered checkpoint.
    Unproven {
        /// The log's origin.
        origin: String,
        /// The remembered (or earlier accepted) size.
        known: u64,
        /// The size of the checkpoint not accepted.
        size: u64,
        /// Why the proof that was found did not verify, if one was found.
        proof_error: Option<String>,
    },
}

impl core::fmt::Display for Conflict {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Conflict::Forked { fork, file } => {
                write!(
                    f,
                    "the log {} forked: two checkpoints of size {} signed by its key have different roots",
                    fork.origin, fork.size
                )?;
                if let Some(file) = file {
                    write!(f, " (both kept in {})", file.display())?;
                }
                Ok(())
            }
            Conflict::Unproven {
                origin,
                known,
                size,
                proof_error,
            } => {
                write!(
                    f,
                    "the checkpoint of size {size} of {origin} is not proven consistent with the one of size {known} already seen: "
                )?;
                match proof_error {
                    Some(e) => write!(f, "the consistency proof does not verify ({e})"),
                    None => write!(
                        f,
                        "no consistency proof (carry a .consistency file or ask the worker)"
                    ),
                }
            }
        }
    }
}

/// How an accepted checkpoint relates to what was known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Nothing was known of this log: trusted on first use, remembered.
    FirstUse,
    /// The same tree as the one known.
    Same,
    /// Proven to extend the known tree (of that size); now remembered.
    Extends(u64),
    /// Proven to be a prefix of the known tree (of that size).
    Prefix(u64),
}

/// How `new` relates to `known`, by size, root and consistency proof.
fn relate(known: &Seen, new: &Seen, proofs: &dyn ProofSource) -> Result<Observation, Conflict> {
    let (old, young) = if new.size() >= known.size() {
        (known, new)
    } else {
        (new, known)
    };
    if old.size() == young.size() {
        if old.root() == young.root() {
            return Ok(Observation::Same);
        }
        return Err(Conflict::Forked {
            fork: Fork {
                origin: known.origin().to_owned(),
                size: known.size(),
                notes: [known.note.clone(), new.note.clone()],
            },
            file: None,
        });
    }
    let unproven = |proof_error| Conflict::Unproven {
        origin: known.origin().to_owned(),
        known: known.size(),
        size: new.size(),
        proof_error,
    };
    // RFC 9162 defines no proof from the empty tree; every tree extends it.
    if old.size() > 0 {
        let proof = proofs
            .consistency(known.origin(), old.size(), young.size())
            .ok_or_else(|| unproven(None))?;
        verify_consistency(old.size(), young.size(), &proof, old.root(), young.root())
            .map_err(|e| unproven(Some(e.to_string())))?;
    }
    Ok(if new.size() > known.size() {
        Observation::Extends(known.size())
    } else {
        Observation::Prefix(known.size())
    })
}

/// What is known of one log.
#[derive(Debug, Default)]
struct LogState {
    /// The largest checkpoint accepted: remembered, or proven since.
    head: Option<Seen>,
    /// Every checkpoint seen in this run, to catch same-size forks among
    /// those that were not proven.
    seen: Vec<Seen>,
    /// A fork, found now or kept from before.
    fork: Option<Conflict>,
    /// Whether `head` is newer than the memory.
    dirty: bool,
}

/// The verifier's memory of worker logs, for one run.
#[derive(Debug)]
pub struct Witness {
    dir: Option<PathBuf>,
    logs: BTreeMap<[u8; 32], LogState>,
}

impl Witness {
    /// A memory kept in `dir` (created when first written), or, with
    /// `None`, only for this run: bundles of one log must still agree with
    /// each other.
    pub fn new(dir: Option<PathBuf>) -> Witness {
        Witness {
            dir,
            logs: BTreeMap::new(),
        }
    }

    /// The memory directory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Accept `seen` if it is provably the same history as every checkpoint
    /// of its log known so far, and remember it if it is the largest.
    /// Checkpoints are best observed in increasing size: proofs then run
    /// from old to new, as logs serve them.
    pub fn observe(
        &mut self,
        seen: &Seen,
        proofs: &dyn ProofSource,
    ) -> Result<Result<Observation, Conflict>, Error> {
        let state = self.state(seen.worker_key())?;
        if let Some(fork) = &state.fork {
            return Ok(Err(fork.clone()));
        }
        if let Some(other) = state
            .seen
            .iter()
            .find(|s| s.size() == seen.size() && s.root() != seen.root())
        {
            let conflict = relate(other, seen, proofs);
            return self.record(seen.worker_key(), conflict);
        }
        if !state.seen.iter().any(|s| s.same_tree(seen)) {
            state.seen.push(seen.clone());
        }
        let Some(head) = &state.head else {
            state.head = Some(seen.clone());
            state.dirty = true;
            return Ok(Ok(Observation::FirstUse));
        };
        let outcome = relate(head, seen, proofs);
        if let Ok(Observation::Extends(_)) = outcome {
            state.head = Some(seen.clone());
            state.dirty = true;
        }
        self.record(seen.worker_key(), outcome)
    }

    /// Write every log's newest proven checkpoint to the memory. Under the
    /// lock the memory is read again: a checkpoint another verifier wrote
    /// meanwhile is kept unless ours provably extends it, and a fork
    /// between the two is recorded and returned.
    pub fn commit(&mut self, proofs: &dyn ProofSource) -> Result<Vec<Conflict>, Error> {
        let Some(dir) = self.dir.clone() else {
            return Ok(Vec::new());
        };
        let dirty: Vec<[u8; 32]> = self
            .logs
            .iter()
            .filter(|(_, s)| s.dirty && s.fork.is_none())
            .map(|(k, _)| *k)
            .collect();
        if dirty.is_empty() {
            return Ok(Vec::new());
        }
        fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, &e))?;
        let _lock = Lock::take(&dir)?;
        let mut forks = Vec::new();
        for key in dirty {
            let Some(head) = self.logs.get(&key).and_then(|s| s.head.clone()) else {
                continue;
            };
            let write = match load(&dir, &key)? {
                Stored::Fork(conflict) => {
                    forks.push(conflict.clone());
                    if let Some(s) = self.logs.get_mut(&key) {
                        s.fork = Some(conflict);
                    }
                    false
                }
                Stored::None => true,
                Stored::Head(current) => match relate(&current, &head, proofs) {
                    Ok(Observation::Extends(_)) => true,
                    Ok(_) | Err(Conflict::Unproven { .. }) => false,
                    Err(Conflict::Forked { fork, .. }) => {
                        let conflict = write_fork(&dir, &key, fork)?;
                        forks.push(conflict.clone());
                        if let Some(s) = self.logs.get_mut(&key) {
                            s.fork = Some(conflict);
                        }
                        false
                    }
                },
            };
            if write {
                write_atomic(&dir, &checkpoint_file(&key), head.note().as_bytes())?;
            }
            if let Some(s) = self.logs.get_mut(&key) {
                s.dirty = false;
            }
        }
        Ok(forks)
    }

    /// The state of `key`'s log, loaded from the memory on first use.
    fn state(&mut self, key: &[u8; 32]) -> Result<&mut LogState, Error> {
        if !self.logs.contains_key(key) {
            let mut state = LogState::default();
            if let Some(dir) = &self.dir {
                match load(dir, key)? {
                    Stored::None => {}
                    Stored::Fork(conflict) => state.fork = Some(conflict),
                    Stored::Head(seen) => {
                        state.seen.push(seen.clone());
                        state.head = Some(seen);
                    }
                }
            }
            self.logs.insert(*key, state);
        }
        self.logs
            .get_mut(key)
            .ok_or_else(|| Error::Policy("checkpoint memory: log state vanished".into()))
    }

    /// Keep a fork found by `observe`, in the memory too.
    fn record(
        &mut self,
        key: &[u8; 32],
        outcome: Result<Observation, Conflict>,
    ) -> Result<Result<Observation, Conflict>, Error> {
        let Err(Conflict::Forked { fork, .. }) = outcome else {
            return Ok(outcome);
        };
        let conflict = match &self.dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(|e| io_error("create", dir, &e))?;
                let _lock = Lock::take(dir)?;
                write_fork(dir, key, fork)?
            }
            None => Conflict::Forked { fork, file: None },
        };
        if let Some(s) = self.logs.get_mut(key) {
            s.fork = Some(conflict.clone());
        }
        Ok(Err(conflict))
    }
}

/// What the memory holds for one log.
enum Stored {
    None,
    Head(Seen),
    Fork(Conflict),
}

fn checkpoint_file(key: &[u8; 32]) -> String {
    format!("{}.checkpoint", hex::encode(key))
}

fn fork_file(key: &[u8; 32]) -> String {
    format!("{}.fork", hex::encode(key))
}

/// Read one log's memory. A remembered note that no longer verifies under
/// the key its file is named after is an error, not a blank memory: a
/// damaged memory must not quietly forget a log.
fn load(dir: &Path, key: &[u8; 32]) -> Result<Stored, Error> {
    let fork_path = dir.join(fork_file(key));
    if let Some(bytes) = read_small(&fork_path, MAX_FORK_FILE)? {
        let fork = parse_fork(&bytes, key).map_err(|why| {
            Error::Policy(format!("checkpoint memory {}: {why}", fork_path.display()))
        })?;
        return Ok(Stored::Fork(Conflict::Forked {
            fork,
            file: Some(fork_path),
        }));
    }
    let path = dir.join(checkpoint_file(key));
    let Some(bytes) = read_small(&path, MAX_NOTE_LEN)? else {
        return Ok(Stored::None);
    };
    let note = String::from_utf8(bytes)
        .map_err(|_| Error::Policy(format!("checkpoint memory {}: not UTF-8", path.display())))?;
    Seen::from_note(&note, key)
        .map(Stored::Head)
        .map_err(|e| Error::Policy(format!("checkpoint memory {}: {e}", path.display())))
}

/// Two notes at most [`MAX_NOTE_LEN`] each, JSON-escaped, and a few fields.
const MAX_FORK_FILE: usize = 4 * MAX_NOTE_LEN;

/// A `.fork` file: both notes must verify under `key` and disagree.
fn parse_fork(bytes: &[u8], key: &[u8; 32]) -> Result<Fork, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if v.get("schema").and_then(|s| s.as_str()) != Some(FORK_SCHEMA) {
        return Err(format!("not a {FORK_SCHEMA} file"));
    }
    let notes: Vec<&str> = v
        .get("checkpoints")
        .and_then(|c| c.as_array())
        .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    let [a, b] = notes.as_slice() else {
        return Err("\"checkpoints\" is not two notes".into());
    };
    let (a, b) = (
        Seen::from_note(a, key).map_err(|e| e.to_string())?,
        Seen::from_note(b, key).map_err(|e| e.to_string())?,
    );
    if a.size() != b.size() || a.root() == b.root() {
        return Err("the two checkpoints are not of one size with different roots".into());
    }
    Ok(Fork {
        origin: a.origin().to_owned(),
        size: a.size(),
        notes: [a.note, b.note],
    })
}

fn write_fork(dir: &Path, key: &[u8; 32], fork: Fork) -> Result<Conflict, Error> {
    let name = fork_file(key);
    // The first fork found stays: one proof of misbehaviour is enough.
    if !dir.join(&name).exists() {
        write_atomic(dir, &name, fork.to_json().as_bytes())?;
    }
    Ok(Conflict::Forked {
        fork,
        file: Some(dir.join(name)),
    })
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::Policy(format!(
        "checkpoint memory: cannot {what} {}: {e}",
        path.display()
    ))
}

/// A file's bytes, `None` when it does not exist, an error when larger
/// than `max`.
fn read_small(path: &Path, max: usize) -> Result<Option<Vec<u8>>, Error> {
    match provenix_firmware::file::read_bounded(path, max) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(Error::Policy(format!("checkpoint memory: {e}"))),
    }
}

/// Write `name` in `dir` so that a crash leaves the old or the new
/// content, never a mix: a unique temporary file, fsync, rename over the
/// old one, fsync of the directory so the rename itself is durable.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    // Unique per process and call, so concurrent writers never share one.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let path = dir.join(name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
        Ok::<_, std::io::Error>(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error("write", &path, &e)
    })
}

/// An exclusive advisory lock on `<dir>/lock`, held while read-check-write
/// runs, released when dropped (or by the kernel when the process dies).
struct Lock {
    _file: File,
}

impl Lock {
    fn take(dir: &Path) -> Result<Lock, Error> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("open", &path, &e))?;
        #[cfg(unix)]
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_error("lock", &path, &e.into()))?;
        Ok(Lock { _file: file })
    }
}
