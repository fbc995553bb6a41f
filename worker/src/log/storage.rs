//! The log's files, their framing, and durability.
//!
//! A log directory holds:
//!
//! - `entries`: the source of truth. A 16-byte magic, then one record per
//!   entry: its length (u32, big-endian), its RFC 9162 leaf hash
//!   (`SHA-256(0x00 || data)`), its data. The leaf hash doubles as the
//!   record's checksum: a record cut short, or whose bytes did not all
//!   reach the disk, does not hash to it. An append returns once this file
//!   is `fdatasync`ed, once per batch.
//! - `hashes`: every perfect subtree hash, 32 bytes each, at the positions
//!   `tree::stored_index` gives.
//! - `offsets`: the end of each record in `entries` (u64, big-endian), so
//!   entry `i` is one read.
//! - `synced`: how many entries `hashes` and `offsets` hold durably, and the
//!   root at that size, with a SHA-256 over both. Replaced whole (write a
//!   temporary file, fsync it, rename it, fsync the directory).
//!
//! `hashes` and `offsets` are derived from `entries` and written without
//! their own fsync on the append path; they are made durable every so
//! often (`synced`), and on open whatever lies past `synced` is rebuilt
//! from `entries`. So one fsync per batch is all an append pays.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use provenix_verifier::{Hash, leaf_hash};
use ring::digest;

use super::Error;

/// The first bytes of `entries`.
pub(crate) const MAGIC: &[u8; 16] = b"provenix-log v1\n";
/// Where the first record starts.
pub(crate) const HEADER_LEN: u64 = 16;
/// Record framing: u32 length and the 32-byte leaf hash.
pub(crate) const RECORD_HEADER_LEN: usize = 4 + 32;
/// Largest entry. A statement names one output, its references and its
/// derivation; even a closure with thousands of references stays far
/// below this. The limit bounds what recovery reads into memory for one
/// record.
pub const MAX_ENTRY_LEN: usize = 1 << 20;
/// Most bytes written between two fsyncs of `entries`. A batch larger than
/// this is written and synced in parts. Bounding it bounds how much of the
/// file's end a crash can leave torn, which is how recovery tells a torn
/// write (the last part, at the end) from corruption (anywhere else).
pub(crate) const MAX_UNSYNCED_BYTES: u64 = 16 << 20;

const SYNCED_MAGIC: &[u8; 16] = b"provenix-sync v1";
/// `synced`: magic, size (u64), root, SHA-256 of the three.
const SYNCED_LEN: usize = 16 + 8 + 32 + 32;

/// What `synced` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Synced {
    pub(crate) size: u64,
    pub(crate) root: Hash,
}

/// The open files of a log directory.
#[derive(Debug)]
pub(crate) struct Files {
    pub(crate) dir: PathBuf,
    pub(crate) entries: File,
    pub(crate) hashes: File,
    pub(crate) offsets: File,
}

/// Attach the operation and path to an I/O error.
pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        offset,
        reason: reason.into(),
    }
}

/// fsync a directory, so the names created or renamed in it survive a
/// crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

fn open_file(path: &Path) -> Result<(File, bool), Error> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io("open", path))?;
    Ok((file, !existed))
}

impl Files {
    /// Open the log in `dir`, creating the directory and files as needed.
    pub(crate) fn open(dir: &Path) -> Result<Self, Error> {
        let created_dir = !dir.exists();
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        if created_dir && let Some(parent) = dir.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            sync_dir(parent)?;
        }
        let (entries, created_entries) = open_file(&dir.join("entries"))?;
        let (hashes, created_hashes) = open_file(&dir.join("hashes"))?;
        let (offsets, created_offsets) = open_file(&dir.join("offsets"))?;
        let files = Files {
            dir: dir.to_owned(),
            entries,
            hashes,
            offsets,
        };
        files.check_magic()?;
        if created_entries || created_hashes || created_offsets {
            sync_dir(dir)?;
        }
        // A temporary `synced` left by a crash mid-replace is not the
        // record; the rename is.
        let tmp = dir.join("synced.tmp");
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io("remove", &tmp))?;
        }
        Ok(files)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Check the magic of `entries`, writing it to a new (or torn new)
    /// file.
    fn check_magic(&self) -> Result<(), Error> {
        let path = self.path("entries");
        let len = self.len(&self.entries, "entries")?;
        let mut head = [0u8; 16];
        let have = usize::try_from(len.min(HEADER_LEN)).unwrap_or(0);
        let head_part = head.get_mut(..have).unwrap_or_default();
        self.entries
            .read_exact_at(head_part, 0)
            .map_err(io("read", &path))?;
        if len < HEADER_LEN {
            if !MAGIC.starts_with(head_part) {
                return Err(corrupt(&path, 0, "not a Provenix log (bad magic)"));
            }
            // New, or created by a process that died before the magic was
            // durable: nothing else was ever in it.
            self.entries
                .write_all_at(MAGIC, 0)
                .and_then(|()| self.entries.sync_all())
                .map_err(io("write", &path))?;
            return Ok(());
        }
        if head_part != MAGIC.as_slice() {
            return Err(corrupt(&path, 0, "not a Provenix log (bad magic)"));
        }
        Ok(())
    }

    pub(crate) fn len(&self, file: &File, name: &str) -> Result<u64, Error> {
        file.metadata()
            .map(|m| m.len())
            .map_err(io("stat", &self.path(name)))
    }

    /// The stored hash at position `at`.
    pub(crate) fn read_hash(&self, at: u64) -> Result<Hash, Error> {
        let mut h = [0u8; 32];
        let offset = at.checked_mul(32).ok_or(Error::Full)?;
        self.hashes
            .read_exact_at(&mut h, offset)
            .map_err(io("read", &self.path("hashes")))?;
        Ok(h)
    }

    /// Where record `index` ends in `entries`.
    pub(crate) fn record_end(&self, index: u64) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        let offset = index.checked_mul(8).ok_or(Error::Full)?;
        self.offsets
            .read_exact_at(&mut b, offset)
            .map_err(io("read", &self.path("offsets")))?;
        Ok(u64::from_be_bytes(b))
    }

    /// Where record `index` starts in `entries`.
    pub(crate) fn record_start(&self, index: u64) -> Result<u64, Error> {
        match index.checked_sub(1) {
            None => Ok(HEADER_LEN),
            Some(previous) => self.record_end(previous),
        }
    }

    /// The data of the record in `entries` at `[start, end)`, checked
    /// against its length field and leaf hash.
    pub(crate) fn read_record(&self, start: u64, end: u64) -> Result<(Hash, Vec<u8>), Error> {
        let path = self.path("entries");
        let len = end
            .checked_sub(start)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l >= RECORD_HEADER_LEN)
            .ok_or_else(|| corrupt(&self.path("offsets"), start, "record bounds out of order"))?;
        let mut buf = vec![0u8; len];
        self.entries
            .read_exact_at(&mut buf, start)
            .map_err(io("read", &path))?;
        let Some((header, data)) = buf.split_first_chunk::<RECORD_HEADER_LEN>() else {
            return Err(corrupt(&path, start, "record shorter than its header"));
        };
        let (stated, hash) = split_header(header);
        if usize::try_from(stated).ok() != Some(data.len()) || leaf_hash(data) != hash {
            return Err(corrupt(&path, start, "record does not match its checksum"));
        }
        Ok((hash, data.to_vec()))
    }

    /// Read `synced`; absent means nothing is synced yet.
    pub(crate) fn read_synced(&self) -> Result<Option<Synced>, Error> {
        let path = self.path("synced");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        // It is replaced by rename after an fsync, so a malformed one was
        // not left by a crash.
        let bad = || corrupt(&path, 0, "malformed");
        let record: &[u8; SYNCED_LEN] = bytes.as_slice().try_into().map_err(|_| bad())?;
        let (body, sum) = record.split_at(SYNCED_LEN.saturating_sub(32));
        if digest::digest(&digest::SHA256, body).as_ref() != sum {
            return Err(bad());
        }
        let (magic, rest) = body.split_at(16);
        let (size, root) = rest.split_at(8);
        if magic != SYNCED_MAGIC {
            return Err(bad());
        }
        Ok(Some(Synced {
            size: u64::from_be_bytes(size.try_into().map_err(|_| bad())?),
            root: root.try_into().map_err(|_| bad())?,
        }))
    }

    /// Make `hashes` and `offsets` durable, then record that they are.
    pub(crate) fn write_synced(&self, synced: Synced) -> Result<(), Error> {
        self.hashes
            .sync_data()
            .map_err(io("fsync", &self.path("hashes")))?;
        self.offsets
            .sync_data()
            .map_err(io("fsync", &self.path("offsets")))?;
        let mut record = Vec::with_capacity(SYNCED_LEN);
        record.extend_from_slice(SYNCED_MAGIC);
        record.extend_from_slice(&synced.size.to_be_bytes());
        record.extend_from_slice(&synced.root);
        let sum = digest::digest(&digest::SHA256, &record);
        record.extend_from_slice(sum.as_ref());
        let tmp = self.path("synced.tmp");
        let path = self.path("synced");
        let file = File::create(&tmp).map_err(io("create", &tmp))?;
        let mut written = &file;
        io::Write::write_all(&mut written, &record)
            .and_then(|()| file.sync_all())
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        sync_dir(&self.dir)
    }
}

/// The length and leaf hash of a record header.
pub(crate) fn split_header(header: &[u8; RECORD_HEADER_LEN]) -> (u32, Hash) {
    let (len, hash) = header.split_at(4);
    let mut l = [0u8; 4];
    l.copy_from_slice(len);
    let mut h = [0u8; 32];
    h.copy_from_slice(hash);
    (u32::from_be_bytes(l), h)
}

/// Append the record for `data` to `buf`; returns its leaf hash. The
/// caller checked `data.len() <= MAX_ENTRY_LEN`.
pub(crate) fn encode_record(data: &[u8], buf: &mut Vec<u8>) -> Hash {
    let hash = leaf_hash(data);
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&hash);
    buf.extend_from_slice(data);
    hash
}

/// A reader of a file from an offset on, with positional reads: it leaves
/// the file's cursor alone, so readers sharing the `File` do not race.
pub(crate) struct ReadAt<'f> {
    file: &'f File,
    at: u64,
}

impl<'f> ReadAt<'f> {
    pub(crate) fn new(file: &'f File, at: u64) -> Self {
        ReadAt { file, at }
    }
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at = self.at.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        Ok(n)
    }
}

/// The records of `entries` from some offset on, as recovery reads them.
pub(crate) struct Scan<R> {
    reader: R,
    pub(crate) at: u64,
    end: u64,
}

/// What the scan found at `at`.
pub(crate) enum Next {
    /// A whole record whose leaf hash checks: its hash, and where it ends.
    Record(Hash, u64),
    /// The end of the file, on a record boundary.
    End,
    /// A record cut short, or one that does not check: a torn write, or
    /// corruption.
    Torn(&'static str),
}

impl<R: Read> Scan<R> {
    pub(crate) fn new(reader: R, at: u64, end: u64) -> Self {
        Scan { reader, at, end }
    }

    pub(crate) fn next(&mut self) -> io::Result<Next> {
        let remaining = self.end.saturating_sub(self.at);
        if remaining == 0 {
            return Ok(Next::End);
        }
        let header_len = u64::try_from(RECORD_HEADER_LEN).unwrap_or(u64::MAX);
        if remaining < header_len {
            return Ok(Next::Torn("record header cut short"));
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        self.reader.read_exact(&mut header)?;
        let (len, hash) = split_header(&header);
        let len64 = u64::from(len);
        if usize::try_from(len).map_or(true, |l| l > MAX_ENTRY_LEN) {
            return Ok(Next::Torn("record length over the limit"));
        }
        if remaining.saturating_sub(header_len) < len64 {
            return Ok(Next::Torn("record data cut short"));
        }
        let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.reader.read_exact(&mut data)?;
        if leaf_hash(&data) != hash {
            return Ok(Next::Torn("record does not match its leaf hash"));
        }
        let end = self.at.saturating_add(header_len).saturating_add(len64);
        self.at = end;
        Ok(Next::Record(hash, end))
    }
}
