//! NAR serialisation and hashing: the worker computes every output's NAR hash
//! and size itself, from the file system, byte for byte as Nix does, and the
//! `provenix verify --store-path` CLI recomputes a local path's NAR the same
//! way to compare it with what builders stated. (It lives in the verifier so
//! both share one encoder; the worker re-exports it as `provenix_worker::nar`.
//! Unix only: it reads file modes and opens with `O_NOFOLLOW`.)
//!
//! The format is Nix's "Nix ARchive": Eelco Dolstra, "The Purely Functional
//! Software Deployment Model" (2006), section 5.2.1 and figure 5.2
//! (`serialise`), as implemented by Nix's `src/libutil/archive.cc` (`dump`,
//! `dumpContents`) and `src/libutil/serialise.cc` (`writeString`,
//! `writePadding`):
//!
//! ```text
//! nar      = str("nix-archive-1") node
//! node     = str("(") str("type") body str(")")
//! body     = str("regular") [str("executable") str("")] str("contents") u64(size) data pad
//!          | str("symlink") str("target") str(target)
//!          | str("directory") entry*          -- sorted by name, as bytes
//! entry    = str("entry") str("(") str("name") str(name) str("node") node str(")")
//! str(s)   = u64(len(s)) s pad
//! u64(n)   = n as 8 bytes, little-endian
//! pad      = zero bytes up to the next multiple of 8
//! ```
//!
//! Nix sorts entries with `std::map<std::string, ...>`, whose order is
//! `memcmp` on the bytes, not the locale's collation. A regular file is
//! "executable" when its owner may execute it (`st_mode & S_IXUSR`); the
//! other mode bits, owners and times are not part of a NAR.
//!
//! One traversal writes the bytes into fixed-size chunks and hands each full
//! chunk to a sink: the hasher ([`hash_path`]) or a writer ([`dump`]). The
//! bytes hashed are therefore the bytes dumped. Memory stays constant: a file
//! is read straight into the chunk being filled, never held whole.
//!
//! [`hash_path`] overlaps I/O with hashing: the calling thread walks the
//! tree and reads files while a second thread runs SHA-256 over the chunks
//! already filled. Hashing is the floor (one SHA-256 stream, about 1.5 GB/s
//! with SHA-NI); reading small files is system calls (open, fstat, read,
//! close: about 8 us a file). Overlapping them made a warm 1 GiB tree hash
//! 1.2 times faster than one thread doing both on a 2-vCPU machine, and its
//! 20,000 small files 1.7 times faster (`benches/nar.sh`). Both functions
//! block; the daemon calls them from a blocking context.
//!
//! The tree must not change while it is read; the worker reads outputs
//! after their build has finished, and nothing here can make a tree that is
//! still being written safe to hash. Where it is cheap, a change is refused
//! ([`NarError::Changed`]) rather than hashed in a state that never existed
//! on disk as a whole: a regular file that shrinks or grows while it is
//! read, or that is replaced by a symlink or another type after its
//! directory was listed. Nix itself only notices a file that shrank.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::ffi::OsString;
use std::fs::{self, File, FileType, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::{fmt, mem, thread};

use ring::digest;

/// Nix's base 32, used for NAR hashes and store path hash parts; it lives
/// with the fingerprint code.
pub use crate::nixsig::nix32;

/// The NAR hash and size of a path, as narinfo's `NarHash` and `NarSize`
/// and the path's signature fingerprint state them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NarDigest {
    /// SHA-256 of the NAR serialisation.
    pub sha256: [u8; 32],
    /// Length of the NAR serialisation in bytes.
    pub size: u64,
}

impl NarDigest {
    /// The hash as Nix writes it in narinfo (`NarHash:`) and in signature
    /// fingerprints: `sha256:` and the hash in Nix's base 32.
    pub fn nar_hash(&self) -> String {
        crate::nixsig::nar_hash(&self.sha256)
    }
}

/// Why a path could not be serialised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NarError {
    /// A file system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "reading directory".
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The path is neither a regular file, a directory nor a symlink: NAR
    /// has no encoding for it. Nix 2.8 refuses it too ("file '...' has an
    /// unsupported type").
    #[error("{}: {kind} cannot be stored in a NAR (only regular files, directories and symlinks can)", path.display())]
    UnsupportedType {
        /// The offending path.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// A directory entry whose name a NAR may not hold: empty, `.`, `..`,
    /// or containing `/` or NUL. Nix refuses these when it unpacks a NAR;
    /// a Linux directory cannot hold them, so seeing one means the file
    /// system is lying.
    #[error("{}: entry name {name:?} is not allowed in a NAR", dir.display())]
    InvalidName {
        /// The directory holding the entry.
        dir: PathBuf,
        /// The name as the directory returned it.
        name: OsString,
    },
    /// A file changed while it was being read.
    #[error("{}: changed while being read: {change}", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// What changed.
        change: Change,
    },
    /// The NAR would be larger than `u64::MAX` bytes, so its size field
    /// cannot state it.
    #[error("the NAR would be larger than 2^64 - 1 bytes")]
    TooLarge,
    /// Writing the NAR to the caller's writer failed.
    #[error("writing the NAR: {0}")]
    Write(#[source] io::Error),
}

/// A file type that NAR cannot represent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A type the standard library does not name.
    Unknown,
}

impl FileKind {
    fn of(file_type: FileType) -> FileKind {
        if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_socket() {
            FileKind::Socket
        } else if file_type.is_char_device() {
            FileKind::CharDevice
        } else if file_type.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Unknown
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Unknown => "a file of unknown type",
        })
    }
}

/// How a file changed while it was being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// It ended before the size it had when it was opened.
    Shrank {
        /// The size when it was opened.
        expected: u64,
        /// The bytes read before the end.
        read: u64,
    },
    /// It had more bytes than its size when it was opened.
    Grew {
        /// The size when it was opened.
        expected: u64,
    },
    /// The directory listed it as a regular file, but what was opened under
    /// its name is not one (or is a symlink).
    Replaced,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Shrank { expected, read } => {
                write!(f, "ended after {read} of {expected} bytes")
            }
            Change::Grew { expected } => write!(f, "grew beyond {expected} bytes"),
            Change::Replaced => f.write_str("no longer a regular file"),
        }
    }
}

/// The NAR hash and size of `path`, which is not followed if it is a
/// symlink.
pub fn hash_path(path: &Path) -> Result<NarDigest, NarError> {
    let (full_tx, full_rx) = sync_channel::<Chunk>(CHUNKS);
    let (free_tx, free_rx) = sync_channel::<Chunk>(CHUNKS);
    // The walker holds one chunk; the rest start out free. At most CHUNKS
    // chunks exist, so neither channel ever blocks a sender for lack of room.
    for _ in 1..CHUNKS {
        if free_tx.send(Chunk::new()).is_err() {
            break;
        }
    }
    thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut context = digest::Context::new(&digest::SHA256);
            for mut chunk in full_rx {
                context.update(chunk.filled());
                chunk.len = 0;
                // The walker has gone once it stops taking chunks back.
                let _ = free_tx.send(chunk);
            }
            context.finish()
        });
        let mut encoder = Encoder::new(Pipe {
            full: full_tx,
            free: free_rx,
        });
        let walked = walk(path, &mut encoder).and_then(|()| encoder.finish());
        // Closing the pipe ends the hasher's loop, on error too.
        drop(encoder);
        let digest = hasher
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let size = walked?;
        // SHA-256 digests are 32 bytes; copy_from_slice would panic only if
        // ring broke that.
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        Ok(NarDigest { sha256, size })
    })
}

/// Write the NAR serialisation of `path` to `out` and return its size. The
/// bytes are exactly those [`hash_path`] hashes. `out` receives large
/// writes, so it needs no buffering of its own.
pub fn dump(path: &Path, out: impl Write) -> Result<u64, NarError> {
    let mut encoder = Encoder::new(Writer(out));
    walk(path, &mut encoder)?;
    let size = encoder.finish()?;
    encoder.sink.0.flush().map_err(NarError::Write)?;
    Ok(size)
}

/// Size of one chunk. Small enough that a chunk stays in L2 between the
/// walker writing it and the hasher reading it; large enough that a big
/// file is read in few system calls. Measured with `benches/nar.sh`.
const CHUNK_SIZE: usize = 256 * 1024;

/// Chunks in flight between the walker and the hasher.
const CHUNKS: usize = 4;

/// `S_IXUSR` (POSIX `<sys/stat.h>`): Nix's archive.cc marks a regular file
/// executable when this bit, and only this one, is set.
const S_IXUSR: u32 = 0o100;

/// A fixed-size buffer and how much of it is filled.
struct Chunk {
    data: Box<[u8]>,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            data: vec![0; CHUNK_SIZE].into_boxed_slice(),
            len: 0,
        }
    }

    /// A placeholder that owns no memory.
    fn none() -> Chunk {
        Chunk {
            data: Box::default(),
            len: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        self.data.get(..self.len).unwrap_or_default()
    }

    fn spare(&mut self) -> &mut [u8] {
        self.data.get_mut(self.len..).unwrap_or_default()
    }

    /// Marks `n` more bytes of the spare part as filled.
    fn advance(&mut self, n: usize) {
        self.len = self.len.saturating_add(n).min(self.data.len());
    }
}

/// Where full chunks go.
trait Sink {
    /// Consume `chunk.filled()` and return an empty chunk to fill next.
    fn take(&mut self, chunk: Chunk) -> Result<Chunk, NarError>;
}

/// Hands chunks to the hashing thread and takes emptied ones back.
struct Pipe {
    full: SyncSender<Chunk>,
    free: Receiver<Chunk>,
}

impl Sink for Pipe {
    fn take(&mut self, chunk: Chunk) -> Result<Chunk, NarError> {
        // Either channel fails only if the hasher has panicked; the panic
        // is raised when it is joined, so carry on with a fresh chunk.
        if let Err(failed) = self.full.send(chunk) {
            let mut chunk = failed.0;
            chunk.len = 0;
            return Ok(chunk);
        }
        Ok(self.free.recv().unwrap_or_else(|_| Chunk::new()))
    }
}

/// Writes chunks to the caller's writer.
struct Writer<W>(W);

impl<W: Write> Sink for Writer<W> {
    fn take(&mut self, mut chunk: Chunk) -> Result<Chunk, NarError> {
        self.0.write_all(chunk.filled()).map_err(NarError::Write)?;
        chunk.len = 0;
        Ok(chunk)
    }
}

/// Writes NAR tokens and file contents into chunks.
struct Encoder<S> {
    sink: S,
    chunk: Chunk,
    /// Bytes handed to the sink so far.
    size: u64,
}

impl<S: Sink> Encoder<S> {
    fn new(sink: S) -> Encoder<S> {
        Encoder {
            sink,
            chunk: Chunk::new(),
            size: 0,
        }
    }

    fn flush(&mut self) -> Result<(), NarError> {
        let chunk = mem::replace(&mut self.chunk, Chunk::none());
        self.size = u64::try_from(chunk.len)
            .ok()
            .and_then(|len| self.size.checked_add(len))
            .ok_or(NarError::TooLarge)?;
        self.chunk = self.sink.take(chunk)?;
        Ok(())
    }

    /// Flushes what is left and returns the NAR's size.
    fn finish(&mut self) -> Result<u64, NarError> {
        if self.chunk.len > 0 {
            self.flush()?;
        }
        Ok(self.size)
    }

    fn bytes(&mut self, mut bytes: &[u8]) -> Result<(), NarError> {
        while !bytes.is_empty() {
            let spare = self.chunk.spare();
            if spare.is_empty() {
                self.flush()?;
                continue;
            }
            let n = spare.len().min(bytes.len());
            let (now, later) = bytes.split_at(n);
            if let Some(to) = spare.get_mut(..n) {
                to.copy_from_slice(now);
            }
            self.chunk.advance(n);
            bytes = later;
        }
        Ok(())
    }

    fn u64(&mut self, n: u64) -> Result<(), NarError> {
        self.bytes(&n.to_le_bytes())
    }

    /// Zero bytes that take `len` bytes up to a multiple of 8
    /// (`writePadding` in serialise.cc).
    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        // (8 - len % 8) % 8, as the low 3 bits of -len.
        let pad = len.wrapping_neg() & 7;
        let zeros = [0u8; 8];
        self.bytes(
            zeros
                .get(..usize::try_from(pad).unwrap_or(0))
                .unwrap_or_default(),
        )
    }

    /// A length-prefixed, padded string (`writeString` in serialise.cc).
    fn str(&mut self, s: &[u8]) -> Result<(), NarError> {
        let len = u64::try_from(s.len()).map_err(|_| NarError::TooLarge)?;
        self.u64(len)?;
        self.bytes(s)?;
        self.padding(len)
    }

    /// `size` bytes of `file`, read straight into the chunks, then padding
    /// (`dumpContents` in archive.cc, after its size field).
    fn contents(&mut self, file: &mut File, size: u64, path: &Path) -> Result<(), NarError> {
        let mut left = size;
        while left > 0 {
            if self.chunk.spare().is_empty() {
                self.flush()?;
            }
            let spare = self.chunk.spare();
            let want = usize::try_from(left).map_or(spare.len(), |left| left.min(spare.len()));
            let n = read(file, spare.get_mut(..want).unwrap_or_default(), path)?;
            if n == 0 {
                return Err(NarError::Changed {
                    path: path.to_path_buf(),
                    change: Change::Shrank {
                        expected: size,
                        read: size.saturating_sub(left),
                    },
                });
            }
            self.chunk.advance(n);
            left = u64::try_from(n)
                .ok()
                .and_then(|n| left.checked_sub(n))
                .unwrap_or(0);
        }
        // One more read must find the end, or the file grew as it was read.
        if read(file, &mut [0u8; 1], path)? != 0 {
            return Err(NarError::Changed {
                path: path.to_path_buf(),
                change: Change::Grew { expected: size },
            });
        }
        self.padding(size)
    }
}

fn read(file: &mut File, buf: &mut [u8], path: &Path) -> Result<usize, NarError> {
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(NarError::Io {
                    op: "reading",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// A directory's entries, sorted by name as bytes, with their types.
type Entries = std::vec::IntoIter<(OsString, FileType)>;

/// Serialise the tree at `root` (archive.cc `dumpPath`). Iterative, so a
/// deep tree costs heap, not stack: `path` is the node being written and
/// `open` holds the unwritten entries of each directory on the way to it.
fn walk<S: Sink>(root: &Path, enc: &mut Encoder<S>) -> Result<(), NarError> {
    enc.str(b"nix-archive-1")?;
    let root_type = fs::symlink_metadata(root)
        .map_err(|source| NarError::Io {
            op: "reading metadata of",
            path: root.to_path_buf(),
            source,
        })?
        .file_type();
    let mut path = root.to_path_buf();
    let mut open: Vec<Entries> = Vec::new();
    if let Some(entries) = node(enc, &path, root_type)? {
        open.push(entries);
    }
    while let Some(entries) = open.last_mut() {
        match entries.next() {
            Some((name, file_type)) => {
                path.push(&name);
                enc.str(b"entry")?;
                enc.str(b"(")?;
                enc.str(b"name")?;
                enc.str(name.as_bytes())?;
                enc.str(b"node")?;
                match node(enc, &path, file_type)? {
                    // Stay in the directory; its entry closes when it does.
                    Some(entries) => open.push(entries),
                    None => {
                        enc.str(b")")?;
                        path.pop();
                    }
                }
            }
            None => {
                open.pop();
                enc.str(b")")?;
                if !open.is_empty() {
                    enc.str(b")")?;
                    path.pop();
                }
            }
        }
    }
    Ok(())
}

/// Write the node at `path`. A regular file or symlink is written whole; a
/// directory is opened, and its sorted entries are returned for the caller
/// to write and then close.
fn node<S: Sink>(
    enc: &mut Encoder<S>,
    path: &Path,
    file_type: FileType,
) -> Result<Option<Entries>, NarError> {
    if file_type.is_dir() {
        let entries = directory(path)?;
        enc.str(b"(")?;
        enc.str(b"type")?;
        enc.str(b"directory")?;
        return Ok(Some(entries));
    }
    if file_type.is_file() {
        regular(enc, path)?;
    } else if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(|source| NarError::Io {
            op: "reading symlink",
            path: path.to_path_buf(),
            source,
        })?;
        enc.str(b"(")?;
        enc.str(b"type")?;
        enc.str(b"symlink")?;
        enc.str(b"target")?;
        enc.str(target.as_os_str().as_bytes())?;
    } else {
        return Err(NarError::UnsupportedType {
            path: path.to_path_buf(),
            kind: FileKind::of(file_type),
        });
    }
    enc.str(b")")?;
    Ok(None)
}

fn regular<S: Sink>(enc: &mut Encoder<S>, path: &Path) -> Result<(), NarError> {
    let io = |op| {
        move |source| NarError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let replaced = || NarError::Changed {
        path: path.to_path_buf(),
        change: Change::Replaced,
    };
    // O_NOFOLLOW: if a symlink took the file's place since it was listed,
    // fail (ELOOP) rather than read what it points to. O_NONBLOCK: if a FIFO
    // did, fail below rather than wait forever for a writer; on a regular
    // file it has no effect.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                replaced()
            } else {
                io("opening")(e)
            }
        })?;
    // The type, mode and size come from the file that was opened, so they
    // describe the bytes that are read.
    let meta = file.metadata().map_err(io("reading metadata of"))?;
    if !meta.file_type().is_file() {
        return Err(replaced());
    }
    enc.str(b"(")?;
    enc.str(b"type")?;
    enc.str(b"regular")?;
    if meta.mode() & S_IXUSR != 0 {
        enc.str(b"executable")?;
        enc.str(b"")?;
    }
    enc.str(b"contents")?;
    enc.u64(meta.len())?;
    enc.contents(&mut file, meta.len(), path)
}

/// The entries of the directory at `path`, sorted by name as bytes (Nix's
/// `std::map<std::string, ...>` order).
fn directory(path: &Path) -> Result<Entries, NarError> {
    let io = |op| {
        move |source| NarError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).map_err(io("opening directory"))? {
        let entry = entry.map_err(io("reading directory"))?;
        let name = entry.file_name();
        if !valid_name(name.as_bytes()) {
            return Err(NarError::InvalidName {
                dir: path.to_path_buf(),
                name,
            });
        }
        // From the directory entry's d_type where the file system gives it,
        // so most entries cost no stat call.
        let file_type = entry.file_type().map_err(|source| NarError::Io {
            op: "reading metadata of",
            path: entry.path(),
            source,
        })?;
        entries.push((name, file_type));
    }
    // Names in one directory are distinct, so an unstable sort is exact.
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(entries.into_iter())
}

/// Whether a NAR may hold an entry of this name: the rule Nix's NAR parser
/// (archive.cc `parse`) applies when it unpacks one.
fn valid_name(name: &[u8]) -> bool {
    !(name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_nix_refuses() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b".a", b"-", b" ", b"\xff", b"a\\b"] {
            assert!(valid_name(good), "{good:?}");
        }
    }

    /// A NAR written out by hand from the grammar above: one non-executable
    /// regular file holding "hello".
    #[test]
    fn regular_file_bytes() {
        let dir = std::env::temp_dir().join(format!("provenix-nar-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hello");
        fs::write(&file, b"hello").unwrap();
        let mut out = Vec::new();
        let size = dump(&file, &mut out).unwrap();
        fs::remove_dir_all(&dir).unwrap();

        let mut expected = Vec::new();
        for token in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
        ] {
            expected.extend_from_slice(&u64::try_from(token.len()).unwrap().to_le_bytes());
            expected.extend_from_slice(token);
            expected.resize(expected.len().next_multiple_of(8), 0);
        }
        expected.extend_from_slice(&5u64.to_le_bytes());
        expected.extend_from_slice(b"hello\0\0\0");
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(b")\0\0\0\0\0\0\0");
        assert_eq!(out, expected);
        assert_eq!(size, u64::try_from(expected.len()).unwrap());
    }

    #[test]
    fn chunk_boundaries_do_not_change_the_bytes() {
        // A token that straddles chunks, written through a sink that
        // records every chunk, comes out whole.
        struct Record(Vec<u8>, usize);
        impl Sink for Record {
            fn take(&mut self, mut chunk: Chunk) -> Result<Chunk, NarError> {
                self.0.extend_from_slice(chunk.filled());
                self.1 += 1;
                chunk.len = 0;
                Ok(chunk)
            }
        }
        let mut enc = Encoder::new(Record(Vec::new(), 0));
        let long = vec![7u8; CHUNK_SIZE + 3];
        enc.bytes(&[1; 5]).unwrap();
        enc.str(&long).unwrap();
        let size = enc.finish().unwrap();
        let Record(bytes, chunks) = enc.sink;
        assert_eq!(chunks, 2);
        assert_eq!(size, u64::try_from(bytes.len()).unwrap());
        let mut expected = vec![1; 5];
        expected.extend_from_slice(&u64::try_from(long.len()).unwrap().to_le_bytes());
        expected.extend_from_slice(&long);
        expected.extend_from_slice(&[0; 5]);
        assert_eq!(bytes, expected);
    }
}
