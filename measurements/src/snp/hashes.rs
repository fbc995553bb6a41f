//! The SEV hashes table: SHA-256 of the kernel, initrd and command line that
//! QEMU writes into the firmware's reserved area for measured direct boot,
//! so that OVMF can check what QEMU's fw_cfg hands it.
//!
//! Layout and contents as QEMU builds them (`target/i386/sev.c`,
//! `SevHashTable`, `PaddedSevHashTable`, `build_kernel_loader_hashes`):
//!
//! ```text
//! SevHashTable (packed, 168 bytes):
//!   GUID 9438d606-4f22-4cc9-b479-a793d411fd21 | len:u16 = 168
//!   cmdline: GUID 97d02dd8-bd20-4c94-aa78-e7714d36ab2a | len:u16 = 50 | SHA-256
//!   initrd:  GUID 44baf731-3a2f-4bd7-9af1-41e29169781d | len:u16 = 50 | SHA-256
//!   kernel:  GUID 4de79437-abd2-427f-b835-d5b172d2045b | len:u16 = 50 | SHA-256
//! PaddedSevHashTable: the above, zero-padded to a multiple of 16 (176)
//! ```
//!
//! - cmdline: the bytes with their terminating NUL; with no `-append`, the
//!   one byte "\0".
//! - initrd: the file; with no `-initrd`, the empty string.
//! - kernel: the file as given to `-kernel`.
//!
//! Files are streamed through a fixed buffer, so a large initrd is never
//! held in memory.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::io::Read;
use std::path::Path;

use ring::digest::{Context, SHA256};
use serde::Serialize;
use zerocopy::little_endian::U16;
use zerocopy::{Immutable, IntoBytes, KnownLayout, Unaligned};

use super::buf::AlignedBuf;
use super::ovmf::{Guid, PAGE_SIZE};
use crate::Error;

/// A SHA-256 digest.
pub type Digest256 = [u8; 32];

/// Bytes of the hashes table QEMU writes, padding included.
pub const HASHES_TABLE_SIZE: usize = 176;

/// Read buffer for streaming the kernel and initrd: large enough that a
/// read(2) per MiB costs nothing next to hashing it, small enough to keep
/// in cache.
const READ_BUFFER: usize = 1 << 20;

const TABLE_GUID: Guid = Guid::new(
    0x9438_d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
const KERNEL_GUID: Guid = Guid::new(
    0x4de7_9437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);
const INITRD_GUID: Guid = Guid::new(
    0x44ba_f731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
const CMDLINE_GUID: Guid = Guid::new(
    0x97d0_2dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);

/// `SevHashTableEntry` (packed).
#[derive(IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Entry {
    guid: [u8; 16],
    len: U16,
    hash: Digest256,
}

/// `PaddedSevHashTable` (packed): `SevHashTable`, then its padding.
#[derive(IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Table {
    guid: [u8; 16],
    len: U16,
    cmdline: Entry,
    initrd: Entry,
    kernel: Entry,
    padding: [u8; 8],
}

const ENTRY_SIZE: u16 = 50;
/// `sizeof(SevHashTable)`: what the table's own length field holds.
const UNPADDED_TABLE_SIZE: u16 = 168;
const _: () = assert!(size_of::<Entry>() == 50);
const _: () = assert!(size_of::<Table>() == HASHES_TABLE_SIZE);
const _: () = assert!(HASHES_TABLE_SIZE == (168usize).div_ceil(16) * 16);

/// What QEMU boots directly: `-kernel`, `-initrd`, `-append`.
#[derive(Clone, Copy, Debug)]
pub struct DirectBoot<'a> {
    /// The kernel image.
    pub kernel: &'a Path,
    /// The initrd, if any.
    pub initrd: Option<&'a Path>,
    /// The command line, if any. `None` and `Some("")` are the same to
    /// QEMU: the command line is then the single byte NUL.
    pub cmdline: Option<&'a str>,
}

/// The three digests of the SEV hashes table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KernelHashes {
    /// SHA-256 of the kernel file.
    #[serde(serialize_with = "crate::hex::serialize")]
    pub kernel_sha256: Digest256,
    /// SHA-256 of the initrd file, or of nothing.
    #[serde(serialize_with = "crate::hex::serialize")]
    pub initrd_sha256: Digest256,
    /// SHA-256 of the command line and its NUL.
    #[serde(serialize_with = "crate::hex::serialize")]
    pub cmdline_sha256: Digest256,
}

impl KernelHashes {
    /// Hash the kernel, the initrd and the command line. A command line
    /// with a NUL inside is refused: QEMU would hash it only up to that NUL.
    pub fn compute(boot: &DirectBoot<'_>) -> Result<Self, Error> {
        let cmdline = boot.cmdline.unwrap_or_default();
        if let Some(at) = cmdline.bytes().position(|b| b == 0) {
            return Err(Error::CmdlineNul { at });
        }
        let mut ctx = Context::new(&SHA256);
        ctx.update(cmdline.as_bytes());
        ctx.update(&[0]);
        let cmdline_sha256 = finish256(ctx);
        let initrd_sha256 = match boot.initrd {
            Some(path) => sha256_file(path)?,
            None => finish256(Context::new(&SHA256)),
        };
        Ok(KernelHashes {
            kernel_sha256: sha256_file(boot.kernel)?,
            initrd_sha256,
            cmdline_sha256,
        })
    }

    /// The 176-byte table as QEMU writes it into guest memory.
    pub fn table(&self) -> [u8; HASHES_TABLE_SIZE] {
        let entry = |guid: Guid, hash: Digest256| Entry {
            guid: guid.0,
            len: U16::new(ENTRY_SIZE),
            hash,
        };
        let table = Table {
            guid: TABLE_GUID.0,
            len: U16::new(UNPADDED_TABLE_SIZE),
            cmdline: entry(CMDLINE_GUID, self.cmdline_sha256),
            initrd: entry(INITRD_GUID, self.initrd_sha256),
            kernel: entry(KERNEL_GUID, self.kernel_sha256),
            padding: [0; 8],
        };
        let mut out = [0; HASHES_TABLE_SIZE];
        out.copy_from_slice(table.as_bytes());
        out
    }

    /// The SNP_KERNEL_HASHES page: zeros, with the table at `offset` (the
    /// table area's base within its page, as QEMU's
    /// `sev_snp_build_kernel_loader_hashes` places it).
    pub(crate) fn page(&self, offset: usize) -> Result<Box<[u8; PAGE_SIZE]>, Error> {
        let mut page = Box::new([0; PAGE_SIZE]);
        let slot = offset
            .checked_add(HASHES_TABLE_SIZE)
            .and_then(|end| page.get_mut(offset..end))
            .ok_or(Error::HashesTablePlacement { offset })?;
        slot.copy_from_slice(&self.table());
        Ok(page)
    }
}

fn finish256(ctx: Context) -> Digest256 {
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// SHA-256 of a file, read through a fixed, page-aligned buffer.
///
/// A second thread reading the next chunk while this one hashes was tried:
/// it was slower (the chunk then moves between cores' caches), see
/// benches/README.md.
fn sha256_file(path: &Path) -> Result<Digest256, Error> {
    let io = |op, source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(|e| io("cannot open", e))?;
    let mut ctx = Context::new(&SHA256);
    let mut buf = AlignedBuf::new(READ_BUFFER);
    let buf = buf.as_mut_slice();
    loop {
        match read_some(&mut file, buf).map_err(|e| io("cannot read", e))? {
            0 => return Ok(finish256(ctx)),
            n => ctx.update(buf.get(..n).unwrap_or_default()),
        }
    }
}

/// One read(2), retried when interrupted.
fn read_some(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    // Fixtures of known sizes; a panic here is a failed test.
    #![allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::unwrap_used
    )]

    use super::*;

    fn sample() -> KernelHashes {
        KernelHashes {
            kernel_sha256: [0x11; 32],
            initrd_sha256: [0x22; 32],
            cmdline_sha256: [0x33; 32],
        }
    }

    /// The table field by field, from QEMU's structure definitions.
    #[test]
    fn table_layout() {
        let t = sample().table();
        assert_eq!(
            t[..16],
            [
                0x06, 0xd6, 0x38, 0x94, 0x22, 0x4f, 0xc9, 0x4c, 0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11,
                0xfd, 0x21
            ]
        );
        assert_eq!(t[16..18], 168u16.to_le_bytes());
        // cmdline, initrd, kernel: in that order, 50 bytes each.
        for (i, (guid, fill)) in [
            (CMDLINE_GUID, 0x33),
            (INITRD_GUID, 0x22),
            (KERNEL_GUID, 0x11),
        ]
        .into_iter()
        .enumerate()
        {
            let e = &t[18 + 50 * i..18 + 50 * (i + 1)];
            assert_eq!(e[..16], guid.0);
            assert_eq!(e[16..18], 50u16.to_le_bytes());
            assert!(e[18..].iter().all(|b| *b == fill));
        }
        assert_eq!(t[168..], [0; 8]);
    }

    #[test]
    fn page_places_table_at_offset() {
        let p = sample().page(0xc00).unwrap();
        assert!(p[..0xc00].iter().all(|b| *b == 0));
        assert_eq!(p[0xc00..0xc00 + 176], sample().table());
        assert!(p[0xc00 + 176..].iter().all(|b| *b == 0));
        assert!(sample().page(4096 - 176).is_ok());
    }

    #[test]
    fn page_refuses_table_crossing_the_page() {
        assert!(matches!(
            sample().page(4096 - 175),
            Err(Error::HashesTablePlacement { offset: 3921 })
        ));
    }

    #[test]
    fn cmdline_with_nul_is_refused() {
        let boot = DirectBoot {
            kernel: Path::new("/nonexistent"),
            initrd: None,
            cmdline: Some("console=ttyS0\0x"),
        };
        assert!(matches!(
            KernelHashes::compute(&boot),
            Err(Error::CmdlineNul { at: 13 })
        ));
    }

    /// A streamed file's digest is the one-shot digest, for sizes around
    /// the buffer size.
    #[test]
    fn streamed_file_digests() {
        let dir = std::env::temp_dir().join(format!("provenix-hashes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for len in [
            0,
            1,
            READ_BUFFER - 1,
            READ_BUFFER,
            READ_BUFFER + 1,
            3 * READ_BUFFER + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            let want = ring::digest::digest(&SHA256, &data);
            assert_eq!(sha256_file(&path).unwrap()[..], *want.as_ref(), "{len}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_kernel_is_an_io_error() {
        let boot = DirectBoot {
            kernel: Path::new("/nonexistent/kernel"),
            initrd: None,
            cmdline: None,
        };
        assert!(matches!(
            KernelHashes::compute(&boot),
            Err(Error::Io {
                op: "cannot open",
                ..
            })
        ));
    }
}
