//! Reading a file someone else wrote: regular files only, bounded without
//! trusting the file's metadata.
//!
//! A size from `stat` says nothing about what `read` will return (`/dev/zero`
//! reports 0 bytes and never ends; a file can grow after the check), opening
//! a FIFO blocks until a writer comes, and a sparse file can claim gigabytes
//! it will happily produce. So a file is opened without blocking, must be a
//! regular file by `fstat` of the open descriptor (not of the path, which
//! can be swapped), and is read through a cap one byte over the limit, so
//! that "too large" is known from what was read. Every format the project
//! reads from files passes its own limit (the same constant its writer and
//! parser use).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a file could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileError {
    /// Opening or reading failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a regular file (a directory, FIFO, socket or device).
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// More bytes than the format allows.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            FileError::NotRegular { path, kind } => {
                write!(f, "{}: {kind}, not a regular file", path.display())
            }
            FileError::TooLarge { path, limit } => {
                write!(
                    f,
                    "{}: larger than the limit of {limit} bytes",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl FileError {
    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Open `path` for reading, refusing anything but a regular file, without
/// blocking on a FIFO. For streaming a file of any size (an artifact to
/// hash); use [`read_bounded`] to read one whole.
pub fn open_regular(path: &Path) -> Result<File, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: open(2) of a FIFO without a writer would otherwise
        // wait forever. It has no effect on reads of a regular file.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io)?;
    let kind = file.metadata().map_err(io)?.file_type();
    if !kind.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_name(&kind),
        });
    }
    Ok(file)
}

/// The whole of the regular file `path`, at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, FileError> {
    let file = open_regular(path)?;
    let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    file.take(limit64.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit: limit64,
        });
    }
    Ok(bytes)
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_bounded_text(path: &Path, limit: usize) -> Result<String, FileError> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|e| FileError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8: {e}")),
    })
}

fn kind_name(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn special_files_are_refused_by_kind_and_quickly() {
        let start = std::time::Instant::now();
        for (path, kind) in [("/dev/zero", "character device"), ("/", "directory")] {
            let e = read_bounded(Path::new(path), 16).unwrap_err();
            assert!(e.to_string().contains(kind), "{e}");
        }
        assert!(
            read_bounded(Path::new("/nonexistent/provenix"), 16)
                .unwrap_err()
                .is_not_found()
        );
        assert!(start.elapsed().as_secs() < 1);
    }

    #[test]
    fn the_limit_is_exact() {
        let dir = std::env::temp_dir().join(format!("provenix-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_bounded(&path, 5).unwrap(), b"12345");
        let e = read_bounded(&path, 4).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { limit: 4, .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
