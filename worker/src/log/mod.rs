//! The worker's append-only Merkle log of statements, and its checkpoints.
//!
//! Statements are the leaves of the log (DESIGN.md, "The binding", step 5),
//! hashed as RFC 9162 section 2.1 says. [`Log::append`] and
//! [`Log::append_batch`] return only once the entries are on disk (one
//! `fdatasync` per batch, so the daemon's group commit pays one per group);
//! roots and proofs for any size up to the current one read O(log n)
//! stored hashes. [`Log::checkpoint`] signs the current tree head as a C2SP
//! checkpoint with the worker's key.
//!
//! A log directory holds `entries`, the length-and-leaf-hash framed
//! records and the only source of truth, and three files derived from it:
//! `hashes` (every perfect subtree hash), `offsets` (where each record
//! ends) and `synced` (how much of those two is durable, with the root at
//! that size). The `storage` module describes them.
//!
//! Crash safety: after a crash at any point (`kill -9`, or power loss on a
//! disk that honours flushes), [`Log::open`] finds every entry an append
//! acknowledged, drops the torn end of an unacknowledged one, makes what it
//! kept durable, and rebuilds the derived files from `entries`.
//!
//! One process writes a log directory at a time; nothing enforces it yet
//! (`File::try_lock` needs Rust 1.89, past the workspace's `rust-version`,
//! and `flock` through libc needs `unsafe`, which this crate forbids).

mod storage;
mod tree;

use std::io::BufReader;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use provenix_verifier::{Checkpoint, Hash, VerifierKey, signature_line};
use ring::signature::{Ed25519KeyPair, KeyPair};

pub use storage::MAX_ENTRY_LEN;
use storage::{Files, HEADER_LEN, MAX_UNSYNCED_BYTES, Next, RECORD_HEADER_LEN, Scan, Synced};
use tree::{Border, Nodes};

/// Entries appended between two syncs of the derived files (`hashes`,
/// `offsets`): what recovery may have to replay from `entries`. At 5,000
/// entries/s that is one sync (four fsyncs) every 13 s, and a replay of at
/// most 64 Ki records on open.
const DERIVED_SYNC_INTERVAL: u64 = 1 << 16;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// To which file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds what the log never writes, or is missing what it wrote:
    /// not something a crash leaves.
    #[error("{}: corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What was found.
        reason: String,
    },
    /// An entry is over [`MAX_ENTRY_LEN`].
    #[error("entry of {len} bytes is over the {max}-byte limit")]
    EntryTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A leaf index is not below the tree size asked about.
    #[error("index {index} is not below the tree size {size}")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A tree size beyond the log's.
    #[error("tree size {requested} is beyond the log's size {size}")]
    SizeOutOfRange {
        /// The size asked about.
        requested: u64,
        /// The log's size.
        size: u64,
    },
    /// No consistency proof exists between these sizes (RFC 9162 section
    /// 2.1.4.1 needs `0 < size1 <= size2`).
    #[error("no consistency proof from tree size {size1} to {size2}")]
    NoConsistencyProof {
        /// The older size.
        size1: u64,
        /// The newer size.
        size2: u64,
    },
    /// An earlier write failed: whether its entries reached the disk is
    /// unknown until the log is opened again, which recovers them or not.
    #[error("an earlier write failed; reopen the log")]
    Poisoned,
    /// The log has as many entries as a `u64` counts.
    #[error("the log is full")]
    Full,
    /// A checkpoint could not be made (the origin or key name is invalid).
    #[error(transparent)]
    Checkpoint(#[from] provenix_verifier::Error),
    /// A bug: an invariant of the tree did not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// What [`Log::open`] found and repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Entries re-read from `entries` to rebuild the derived files.
    pub replayed: u64,
    /// Bytes of a torn final write cut from `entries`.
    pub truncated_bytes: u64,
}

/// Signs checkpoints with an Ed25519 key, as a C2SP signed note.
pub struct CheckpointSigner {
    key: Arc<Ed25519KeyPair>,
    vkey: VerifierKey,
}

impl CheckpointSigner {
    /// A signer with `key` under the note key name `name`. c2sp.org's
    /// tlog-checkpoint says the key name SHOULD be the log's origin.
    pub fn new(name: &str, key: Arc<Ed25519KeyPair>) -> Result<Self, Error> {
        let vkey = VerifierKey::ed25519(name, key.public_key().as_ref())?;
        Ok(CheckpointSigner { key, vkey })
    }

    /// The verifier key: `to_string()` gives the
    /// `<name>+<key ID>+<base64 key>` form verifiers are configured with.
    pub fn vkey(&self) -> &VerifierKey {
        &self.vkey
    }

    /// The signed note of `checkpoint`: its text, a blank line, and the
    /// signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let text = checkpoint.text();
        let signature = self.key.sign(text.as_bytes());
        format!("{text}\n{}", signature_line(&self.vkey, signature.as_ref()))
    }

    /// The signed note of `checkpoint` with the worker's clock `time`
    /// (unix seconds) as its `provenix-time` extension line, so verifiers
    /// can tell how fresh it is (docs/policy.md, "Checkpoints").
    pub fn sign_at(&self, checkpoint: &Checkpoint, time: i64) -> String {
        let text = format!(
            "{}{}\n",
            checkpoint.text(),
            provenix_verifier::time_extension(time)
        );
        let signature = self.key.sign(text.as_bytes());
        format!("{text}\n{}", signature_line(&self.vkey, signature.as_ref()))
    }
}

/// An append-only Merkle log in a directory.
#[derive(Debug)]
pub struct Log {
    files: Files,
    size: u64,
    /// Where the next record goes in `entries`.
    entries_end: u64,
    border: Border,
    /// Entries the derived files hold durably.
    synced: u64,
    poisoned: bool,
    recovery: Recovery,
}

impl Nodes for Files {
    fn node(&self, level: u32, index: u64) -> Result<Hash, Error> {
        self.read_hash(tree::stored_index(level, index).ok_or(Error::Full)?)
    }
}

impl Log {
    /// Open the log in `dir`, creating it if it does not exist, and recover
    /// from any crash: see [`Log::recovery`] for what was done.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let files = Files::open(dir)?;
        let synced = files.read_synced()?.unwrap_or(Synced {
            size: 0,
            root: provenix_verifier::EMPTY_ROOT,
        });
        let n = synced.size;
        let hashes_len = tree::stored_count(n)
            .and_then(|c| c.checked_mul(32))
            .ok_or(Error::Full)?;
        let offsets_len = n.checked_mul(8).ok_or(Error::Full)?;
        // What `synced` vouches for was fsynced before it was written.
        if files.len(&files.hashes, "hashes")? < hashes_len {
            return Err(storage::corrupt(
                &files.path("hashes"),
                hashes_len,
                format!("shorter than the {n} entries synced"),
            ));
        }
        if files.len(&files.offsets, "offsets")? < offsets_len {
            return Err(storage::corrupt(
                &files.path("offsets"),
                offsets_len,
                format!("shorter than the {n} entries synced"),
            ));
        }
        let border = Border::load(n, &files)?;
        if border.root() != synced.root {
            return Err(storage::corrupt(
                &files.path("hashes"),
                0,
                format!("the root at size {n} is not the one synced"),
            ));
        }
        let start = files.record_start(n)?;
        let file_len = files.len(&files.entries, "entries")?;
        if file_len < start {
            return Err(storage::corrupt(
                &files.path("entries"),
                file_len,
                format!("shorter than the {n} entries synced"),
            ));
        }
        // Whatever the derived files hold past `n` was not synced: drop it
        // and rebuild it from `entries`.
        files
            .hashes
            .set_len(hashes_len)
            .map_err(storage::io("truncate", &files.path("hashes")))?;
        files
            .offsets
            .set_len(offsets_len)
            .map_err(storage::io("truncate", &files.path("offsets")))?;

        let mut log = Log {
            files,
            size: n,
            entries_end: start,
            border,
            synced: n,
            poisoned: false,
            recovery: Recovery::default(),
        };
        log.replay(file_len)?;
        if log.recovery != Recovery::default() {
            log.sync()?;
        }
        Ok(log)
    }

    /// Re-read the records past the synced size, rebuilding the derived
    /// files, and cut a torn end.
    fn replay(&mut self, file_len: u64) -> Result<(), Error> {
        let path = self.files.path("entries");
        // A second handle, so the scan can read while `self` is written to.
        let entries = self
            .files
            .entries
            .try_clone()
            .map_err(storage::io("dup", &path))?;
        let reader = storage::ReadAt::new(&entries, self.entries_end);
        let mut scan = Scan::new(BufReader::new(reader), self.entries_end, file_len);
        let mut pending = Pending::default();
        let torn = loop {
            match scan.next().map_err(storage::io("read", &path))? {
                Next::Record(hash, end) => {
                    pending.push(&mut self.border, hash, end)?;
                    self.recovery.replayed = self.recovery.replayed.saturating_add(1);
                    if pending.ends.len() >= 4096 {
                        self.write_derived(&mut pending)?;
                    }
                }
                Next::End => break None,
                Next::Torn(reason) => break Some(reason),
            }
        };
        let at = scan.at;
        self.write_derived(&mut pending)?;
        if let Some(reason) = torn {
            // A crash tears at most the last unsynced write, which is at the
            // end and at most MAX_UNSYNCED_BYTES long; a bad record further
            // back held acknowledged entries, and is not ours to drop.
            if file_len.saturating_sub(at) > MAX_UNSYNCED_BYTES {
                return Err(storage::corrupt(&path, at, reason));
            }
            self.files
                .entries
                .set_len(at)
                .and_then(|()| self.files.entries.sync_all())
                .map_err(storage::io("truncate", &path))?;
            self.recovery.truncated_bytes = file_len.saturating_sub(at);
        } else if self.recovery.replayed > 0 {
            // A process killed between its write and its fdatasync leaves
            // whole records in the page cache, never synced: make them
            // durable before a checkpoint can cover them, or a power cut
            // could still take them and let different entries take their
            // indices under a signed root.
            self.files
                .entries
                .sync_data()
                .map_err(storage::io("fdatasync", &path))?;
        }
        Ok(())
    }

    /// Write the derived hashes and offsets of `pending` (no fsync), and
    /// count them in.
    fn write_derived(&mut self, pending: &mut Pending) -> Result<(), Error> {
        if pending.ends.is_empty() {
            return Ok(());
        }
        let hash_at = tree::stored_count(self.size)
            .and_then(|c| c.checked_mul(32))
            .ok_or(Error::Full)?;
        let offset_at = self.size.checked_mul(8).ok_or(Error::Full)?;
        let hashes: Vec<u8> = pending.stored.iter().flatten().copied().collect();
        let offsets: Vec<u8> = pending.ends.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.files
            .hashes
            .write_all_at(&hashes, hash_at)
            .map_err(storage::io("write", &self.files.path("hashes")))?;
        self.files
            .offsets
            .write_all_at(&offsets, offset_at)
            .map_err(storage::io("write", &self.files.path("offsets")))?;
        let added = u64::try_from(pending.ends.len()).map_err(|_| Error::Full)?;
        self.size = self.size.checked_add(added).ok_or(Error::Full)?;
        if let Some(end) = pending.ends.last() {
            self.entries_end = *end;
        }
        pending.stored.clear();
        pending.ends.clear();
        Ok(())
    }

    /// What opening the log recovered.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.files.dir
    }

    /// The number of entries.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the current tree.
    pub fn root(&self) -> Hash {
        self.border.root()
    }

    /// The root of the tree of the first `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash, Error> {
        self.check_size(size)?;
        tree::root(&self.files, size)
    }

    /// Append one entry; returns its index once it is durable.
    pub fn append(&mut self, entry: &[u8]) -> Result<u64, Error> {
        Ok(self.append_batch(&[entry])?.start)
    }

    /// Append entries in order; returns their indices once all are durable.
    /// One `fdatasync` covers the batch (one per `MAX_UNSYNCED_BYTES` of
    /// it).
    ///
    /// On an error the log is poisoned: later appends fail until it is
    /// opened again, and whether entries of the failed batch were kept is
    /// known only then (as with any storage whose write or fsync failed).
    pub fn append_batch<E: AsRef<[u8]>>(&mut self, entries: &[E]) -> Result<Range<u64>, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        for e in entries {
            let len = e.as_ref().len();
            if len > MAX_ENTRY_LEN {
                return Err(Error::EntryTooLarge {
                    len,
                    max: MAX_ENTRY_LEN,
                });
            }
        }
        // The periodic sync of the derived files goes before the batch, not
        // after it: an error then means the batch was not appended, never
        // "appended, but".
        if self.size.saturating_sub(self.synced) >= DERIVED_SYNC_INTERVAL {
            self.sync()?;
        }
        let first = self.size;
        let count = u64::try_from(entries.len()).map_err(|_| Error::Full)?;
        let last = first.checked_add(count).ok_or(Error::Full)?;
        // Poison first: any early return below leaves it set.
        self.poisoned = true;
        let mut rest = entries;
        while !rest.is_empty() {
            rest = self.append_chunk(rest)?;
        }
        self.poisoned = false;
        Ok(first..last)
    }

    /// Write and sync as many of `entries` as fit in `MAX_UNSYNCED_BYTES`
    /// (at least one); returns the rest.
    fn append_chunk<'e, E: AsRef<[u8]>>(&mut self, entries: &'e [E]) -> Result<&'e [E], Error> {
        let mut buf = Vec::new();
        let mut pending = Pending::default();
        let mut border = self.border.clone();
        let mut end = self.entries_end;
        let mut taken = 0usize;
        for e in entries {
            let data = e.as_ref();
            let record = RECORD_HEADER_LEN.saturating_add(data.len());
            let record = u64::try_from(record).map_err(|_| Error::Full)?;
            let unsynced = end.saturating_sub(self.entries_end);
            if taken > 0 && unsynced.saturating_add(record) > MAX_UNSYNCED_BYTES {
                break;
            }
            let hash = storage::encode_record(data, &mut buf);
            end = end.checked_add(record).ok_or(Error::Full)?;
            pending.push(&mut border, hash, end)?;
            taken = taken.saturating_add(1);
        }
        let path = self.files.path("entries");
        self.files
            .entries
            .write_all_at(&buf, self.entries_end)
            .map_err(storage::io("write", &path))?;
        // The durability point: once this returns, the entries survive a
        // crash, and recovery rebuilds the rest from them.
        self.files
            .entries
            .sync_data()
            .map_err(storage::io("fdatasync", &path))?;
        self.write_derived(&mut pending)?;
        self.border = border;
        Ok(entries.get(taken..).unwrap_or_default())
    }

    /// Make the derived files durable, so the next open replays nothing.
    /// Appends do this every `DERIVED_SYNC_INTERVAL` entries; a daemon may
    /// call it when idle, and should before a clean exit.
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        // A failed fsync leaves the files' state unknown (the kernel may
        // have dropped the dirty pages): poisoned until reopened.
        self.poisoned = true;
        self.files.write_synced(Synced {
            size: self.size,
            root: self.root(),
        })?;
        self.poisoned = false;
        self.synced = self.size;
        Ok(())
    }

    /// Sync and close.
    pub fn close(mut self) -> Result<(), Error> {
        self.sync()
    }

    fn check_size(&self, size: u64) -> Result<(), Error> {
        if size > self.size {
            return Err(Error::SizeOutOfRange {
                requested: size,
                size: self.size,
            });
        }
        Ok(())
    }

    fn check_index(&self, index: u64, size: u64) -> Result<(), Error> {
        self.check_size(size)?;
        if index >= size {
            return Err(Error::IndexOutOfRange { index, size });
        }
        Ok(())
    }

    /// Entry `index`, read back and checked against its leaf hash.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, Error> {
        self.check_index(index, self.size)?;
        let start = self.files.record_start(index)?;
        let end = self.files.record_end(index)?;
        Ok(self.files.read_record(start, end)?.1)
    }

    /// The leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, Error> {
        self.check_index(index, self.size)?;
        self.files.node(0, index)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries
    /// (RFC 9162 section 2.1.3.1), deepest node first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        self.check_index(index, size)?;
        tree::inclusion_proof(&self.files, index, size)
    }

    /// The consistency proof from the tree of `size1` entries to the tree
    /// of `size2` (RFC 9162 section 2.1.4.1), `0 < size1 <= size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(size2)?;
        if size1 == 0 || size1 > size2 {
            return Err(Error::NoConsistencyProof { size1, size2 });
        }
        tree::consistency_proof(&self.files, size1, size2)
    }

    /// The checkpoint of the current tree for the log `origin`, signed by
    /// `signer`: C2SP checkpoint text in a signed note.
    pub fn checkpoint(&self, origin: &str, signer: &CheckpointSigner) -> Result<String, Error> {
        let checkpoint = Checkpoint::new(origin, self.size, self.root())?;
        Ok(signer.sign(&checkpoint))
    }

    /// Read every entry back, check each against its leaf hash and the
    /// stored leaf hash, recompute the root from the leaves alone, and
    /// compare it with the root the log serves. O(n): for tests and fsck.
    pub fn verify(&self) -> Result<(), Error> {
        let path = self.files.path("entries");
        let reader = storage::ReadAt::new(&self.files.entries, HEADER_LEN);
        let mut scan = Scan::new(BufReader::new(reader), HEADER_LEN, self.entries_end);
        let mut border = Border::load(0, &self.files)?;
        let mut stored = Vec::new();
        let mut index = 0u64;
        loop {
            match scan.next().map_err(storage::io("read", &path))? {
                Next::Record(hash, end) => {
                    if hash != self.files.node(0, index)? || end != self.files.record_end(index)? {
                        return Err(storage::corrupt(
                            &path,
                            scan.at,
                            format!("entry {index} disagrees with the derived files"),
                        ));
                    }
                    border.push(hash, &mut stored).ok_or(Error::Full)?;
                    stored.clear();
                    index = index.saturating_add(1);
                }
                Next::End => break,
                Next::Torn(reason) => return Err(storage::corrupt(&path, scan.at, reason)),
            }
        }
        if index != self.size {
            return Err(storage::corrupt(
                &path,
                scan.at,
                format!("{index} entries, the log says {}", self.size),
            ));
        }
        if border.root() != self.root() || tree::root(&self.files, self.size)? != self.root() {
            return Err(storage::corrupt(
                &self.files.path("hashes"),
                0,
                "the root recomputed from the leaves differs",
            ));
        }
        Ok(())
    }
}

/// Derived data of records written or replayed, not yet in the files.
#[derive(Default)]
struct Pending {
    stored: Vec<Hash>,
    ends: Vec<u64>,
}

impl Pending {
    fn push(&mut self, border: &mut Border, hash: Hash, end: u64) -> Result<(), Error> {
        border.push(hash, &mut self.stored).ok_or(Error::Full)?;
        self.ends.push(end);
        Ok(())
    }
}
