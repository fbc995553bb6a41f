//! An OVMF image as the VMM sees it: the footer GUID table and the SEV
//! metadata it points to.
//!
//! The footer table ("OVMF GUIDed structure table") sits at the very end of
//! the flash image, in the reset vector. OVMF defines it in
//! `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm`; QEMU reads it in
//! `hw/i386/pc_sysfw_ovmf.c`:
//!
//! ```text
//!  ... | data | len:u16 | GUID | ... | data | len:u16 | GUID | len:u16 | FOOTER GUID | 32 bytes |
//!      `------ entry -----------'                            `------ footer ------'
//! ```
//!
//! Every entry ends with an 18-byte header, a little-endian `u16` length
//! (the whole entry, header included) then its GUID; the entry's data sits
//! before the header. The footer is itself such a header, its length covering
//! the table and itself, and it ends 32 bytes before the end of the image.
//! The table is walked from the footer towards the start of the image.
//!
//! The SEV metadata (`OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`) is found
//! through the entry `dc886566-...`, whose first `u32` is the metadata's
//! offset from the end of the image: a 16-byte header ("ASEV", length,
//! version 1, section count) and then 12-byte section descriptors
//! `{ gpa: u32, size: u32, type: u32 }`.
//!
//! Nothing here trusts the image: every offset and length is checked, a
//! malformed table is an error that names the offset, and no input can make
//! this module panic.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use core::fmt;
use core::ops::Range;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;

use super::buf::AlignedBuf;
use super::gctx::{Digest384, page_digests, read_hashing_pages};
use crate::Error;

/// The page size SEV-SNP measures in (ABI spec, SNP_LAUNCH_UPDATE: pages
/// are 4 KiB unless a 2 MiB page is asked for, which no VMM here does).
pub const PAGE_SIZE: usize = 4096;
const PAGE_SIZE_U64: u64 = 4096;

/// Largest firmware image read. QEMU's `pc` machines cap flash firmware at
/// 16 MiB (`max-fw-size`); real OVMF builds are 2 to 4 MiB. The limit only
/// bounds memory: a whole image is held to be hashed page by page.
pub const MAX_FIRMWARE_SIZE: usize = 64 << 20;

/// The entry header: `u16` length then the GUID (ResetVectorVtf0.asm).
const ENTRY_HEADER_SIZE: usize = 18;
/// Bytes between the footer and the end of the image: QEMU
/// (`pc_sysfw_ovmf.c`) and OVMF put the footer GUID 48 bytes before the
/// end, that is 32 bytes after the footer entry.
const BYTES_AFTER_FOOTER: usize = 32;
/// The SEV metadata header: signature, length, version, section count.
const METADATA_HEADER_SIZE: usize = 16;
/// One SEV metadata section descriptor: gpa, size, type.
const SECTION_SIZE: usize = 12;
/// Most SEV metadata sections accepted. OVMF declares five to seven
/// (`OvmfSevMetadata.asm`); the limit only bounds what a hostile image can
/// make the parser allocate.
pub const MAX_SECTIONS: u32 = 4096;

/// A GUID in the byte order EFI stores it (`EFI_GUID`: the first three
/// fields little-endian), as the footer table and the hashes table hold it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID `a-b-c-d` (canonical text order) in EFI byte order.
    pub const fn new(a: u32, b: u16, c: u16, d: [u8; 8]) -> Self {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a0, a1, a2, a3, b0, b1, c0, c1, d @ ..] = self.0;
        let a = u32::from_le_bytes([a0, a1, a2, a3]);
        let b = u16::from_le_bytes([b0, b1]);
        let c = u16::from_le_bytes([c0, c1]);
        let [d0, d1, e @ ..] = d;
        write!(f, "{a:08x}-{b:04x}-{c:04x}-{d0:02x}{d1:02x}-")?;
        e.iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The footer GUID: 96b582de-1fb2-45f7-baea-a366c55a082d.
pub const FOOTER_GUID: Guid = Guid::new(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// SEV-ES reset block: the AP reset address, `u32`
/// (00f771de-1a7e-4fcb-890e-68c77e2fb44e).
pub const SEV_ES_RESET_BLOCK_GUID: Guid = Guid::new(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// SEV hashes table area: `{ base: u32, size: u32 }`, where QEMU writes the
/// kernel/initrd/cmdline hashes (7255371f-3a3b-4b04-927b-1da6efa8d454).
pub const SEV_HASH_TABLE_RV_GUID: Guid = Guid::new(
    0x7255_371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);
/// SEV metadata: its offset from the end of the image, `u32`
/// (dc886566-984a-4798-a75e-5585a7bf67cc).
pub const SEV_METADATA_GUID: Guid = Guid::new(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);
/// COCONUT-SVSM information: the SVSM entry point's offset from the start
/// of the SVSM image, `u32` (a789a612-0597-4c4b-a49f-cbb1fe9d1ddd).
pub const SVSM_INFO_GUID: Guid = Guid::new(
    0xa789_a612,
    0x0597,
    0x4c4b,
    [0xa4, 0x9f, 0xcb, 0xb1, 0xfe, 0x9d, 0x1d, 0xdd],
);

/// What an SEV metadata section holds, and so how SEV-SNP measures it
/// (`OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`, `OVMF_SECTION_TYPE_*`;
/// QEMU `target/i386/sev.c`, `snp_metadata_desc_to_page_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum SectionType {
    /// 1: memory that must be validated before boot (SEC page tables, GHCB
    /// pages, ...): zero pages.
    #[serde(rename = "SNP_SEC_MEM")]
    SnpSecMem,
    /// 2: the SNP secrets page, filled by the PSP.
    #[serde(rename = "SNP_SECRETS")]
    SnpSecrets,
    /// 3: the CPUID page, filled by the VMM and checked by the PSP.
    #[serde(rename = "CPUID")]
    Cpuid,
    /// 4: the SVSM calling area: zero pages.
    #[serde(rename = "SVSM_CAA")]
    SvsmCaa,
    /// 0x10: the page holding the kernel/initrd/cmdline hashes table.
    #[serde(rename = "SNP_KERNEL_HASHES")]
    SnpKernelHashes,
    /// Any other value. Kept so that SEV and SEV-ES, which do not use the
    /// metadata, still accept the image; SEV-SNP refuses it.
    #[serde(rename = "UNKNOWN")]
    Unknown(u32),
}

impl SectionType {
    fn from_u32(v: u32) -> Self {
        match v {
            1 => SectionType::SnpSecMem,
            2 => SectionType::SnpSecrets,
            3 => SectionType::Cpuid,
            4 => SectionType::SvsmCaa,
            0x10 => SectionType::SnpKernelHashes,
            other => SectionType::Unknown(other),
        }
    }
}

impl fmt::Display for SectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SectionType::SnpSecMem => f.write_str("SNP_SEC_MEM"),
            SectionType::SnpSecrets => f.write_str("SNP_SECRETS"),
            SectionType::Cpuid => f.write_str("CPUID"),
            SectionType::SvsmCaa => f.write_str("SVSM_CAA"),
            SectionType::SnpKernelHashes => f.write_str("SNP_KERNEL_HASHES"),
            SectionType::Unknown(v) => write!(f, "unknown type {v:#x}"),
        }
    }
}

/// One SEV metadata section descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataSection {
    /// Guest-physical address of the section.
    pub gpa: u32,
    /// Its size in bytes.
    pub size: u32,
    /// What it holds.
    pub section_type: SectionType,
}

/// The SEV hashes table area the firmware reserves (SEV_HASH_TABLE_RV_GUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashesTableArea {
    /// Guest-physical address of the table.
    pub base: u32,
    /// Bytes reserved for it.
    pub size: u32,
}

#[derive(Clone, Debug)]
struct TableEntry {
    guid: Guid,
    data: Range<usize>,
}

/// A parsed firmware image: its bytes, its footer table (if it has one) and
/// its SEV metadata sections (if it has them), in the order the metadata
/// lists them, which is the order SEV-SNP measures them in.
#[derive(Clone)]
pub struct Ovmf {
    data: AlignedBuf,
    /// `None`: no footer GUID at the end, so no table (not OVMF, or an
    /// image whose end was cut off).
    table: Option<Vec<TableEntry>>,
    /// `None`: the table has no SEV metadata entry.
    sections: Option<Vec<MetadataSection>>,
    /// The SHA-384 of every page, computed once (while reading, or when
    /// first needed).
    page_digests: OnceLock<Vec<Digest384>>,
}

impl fmt::Debug for Ovmf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ovmf")
            .field("size", &self.data().len())
            .field(
                "table",
                &self
                    .table
                    .as_ref()
                    .map(|t| t.iter().map(|e| e.guid).collect::<Vec<_>>()),
            )
            .field("sections", &self.sections)
            .finish()
    }
}

impl Ovmf {
    /// Read and parse an image from a file, refusing one over
    /// [`MAX_FIRMWARE_SIZE`] before reading it. An image of whole pages is
    /// hashed page by page (for SEV-SNP) while it is read.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let io = |op, source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(|e| io("cannot open", e))?;
        let size = file.metadata().map_err(|e| io("cannot stat", e))?.len();
        let len = usize::try_from(size)
            .ok()
            .filter(|l| (PAGE_SIZE..=MAX_FIRMWARE_SIZE).contains(l))
            .ok_or(Error::FirmwareSize {
                size,
                min: PAGE_SIZE_U64,
                max: u64::try_from(MAX_FIRMWARE_SIZE).unwrap_or(u64::MAX),
            })?;
        let mut data = AlignedBuf::new(len);
        let digests = if len % PAGE_SIZE == 0 {
            Some(
                read_hashing_pages(&mut file, data.as_mut_slice(), super::threads())
                    .map_err(|e| io("cannot read", e))?,
            )
        } else {
            file.read_exact(data.as_mut_slice())
                .map_err(|e| io("cannot read", e))?;
            None
        };
        // What was measured must be the whole file.
        let mut probe = [0; 1];
        if file.read(&mut probe).map_err(|e| io("cannot read", e))? != 0 {
            let grew = std::io::Error::other("the file grew while it was read");
            return Err(io("cannot read", grew));
        }
        let ovmf = Self::parse(data)?;
        if let Some(digests) = digests {
            // A fresh image: the cell is empty.
            let _ = ovmf.page_digests.set(digests);
        }
        Ok(ovmf)
    }

    /// Parse an image. Refused: an image under one page or over
    /// [`MAX_FIRMWARE_SIZE`]; a footer table whose lengths do not add up;
    /// a GUID that appears twice; SEV metadata that is out of range, has
    /// the wrong signature or version, or cannot hold its sections. An
    /// image without the footer GUID is accepted with no table: the modes
    /// that need an entry say which one is missing.
    pub fn from_bytes(data: Vec<u8>) -> Result<Self, Error> {
        Self::parse(AlignedBuf::from_vec(data))
    }

    fn parse(data: AlignedBuf) -> Result<Self, Error> {
        let size = data.as_slice().len();
        if !(PAGE_SIZE..=MAX_FIRMWARE_SIZE).contains(&size) {
            return Err(Error::FirmwareSize {
                size: u64::try_from(size).unwrap_or(u64::MAX),
                min: PAGE_SIZE_U64,
                max: u64::try_from(MAX_FIRMWARE_SIZE).unwrap_or(u64::MAX),
            });
        }
        let table = parse_table(data.as_slice())?;
        let mut ovmf = Ovmf {
            data,
            table,
            sections: None,
            page_digests: OnceLock::new(),
        };
        ovmf.sections = ovmf.parse_metadata()?;
        Ok(ovmf)
    }

    /// The image's bytes.
    pub fn data(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// Whether the image ends with an OVMF footer table.
    pub fn has_footer_table(&self) -> bool {
        self.table.is_some()
    }

    /// Whether the image has SEV metadata.
    pub fn has_metadata(&self) -> bool {
        self.sections.is_some()
    }

    /// The GUIDs of the footer table, from the footer towards the start.
    pub fn table_guids(&self) -> impl Iterator<Item = Guid> + '_ {
        self.table.iter().flatten().map(|e| e.guid)
    }

    /// The SEV metadata sections in table order (empty without metadata).
    pub fn sections(&self) -> &[MetadataSection] {
        self.sections.as_deref().unwrap_or_default()
    }

    /// The data of a footer table entry.
    pub fn entry(&self, guid: Guid) -> Option<&[u8]> {
        let entry = self.table.as_ref()?.iter().find(|e| e.guid == guid)?;
        self.data().get(entry.data.clone())
    }

    /// The first `u32` of an entry that must exist.
    fn entry_u32(&self, guid: Guid, name: &'static str, at: usize) -> Result<u32, Error> {
        let data = self.entry(guid).ok_or(Error::MissingEntry {
            name,
            guid,
            table_present: self.table.is_some(),
        })?;
        let needed = at.saturating_add(4);
        let bytes = data
            .get(at..needed)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or(Error::EntryTooShort {
                name,
                length: data.len(),
                needed,
            })?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// The address application processors start at: the SEV-ES reset block
    /// (OVMF `ResetVectorVtf0.asm`, "SEV-ES reset block"; QEMU
    /// `sev_es_find_reset_vector`).
    pub fn sev_es_reset_eip(&self) -> Result<u32, Error> {
        self.entry_u32(SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block", 0)
    }

    /// The SEV hashes table area, if the firmware declares the entry.
    pub fn hashes_table_area(&self) -> Result<Option<HashesTableArea>, Error> {
        if self.entry(SEV_HASH_TABLE_RV_GUID).is_none() {
            return Ok(None);
        }
        let name = "SEV hashes table";
        Ok(Some(HashesTableArea {
            base: self.entry_u32(SEV_HASH_TABLE_RV_GUID, name, 0)?,
            size: self.entry_u32(SEV_HASH_TABLE_RV_GUID, name, 4)?,
        }))
    }

    /// The SVSM entry point's offset in the SVSM image (COCONUT-SVSM's
    /// QEMU, `target/i386/sev.c`).
    pub fn svsm_entry_offset(&self) -> Result<u32, Error> {
        self.entry_u32(SVSM_INFO_GUID, "SVSM information", 0)
    }

    /// Where the image starts when it is mapped to end at `end`: OVMF ends
    /// at 4 GiB (the reset vector is at 0xFFFF_FFF0); an SVSM image ends
    /// where the OVMF variables start.
    pub fn gpa_ending_at(&self, end: u64) -> Result<u64, Error> {
        let size = u64::try_from(self.data().len()).unwrap_or(u64::MAX);
        end.checked_sub(size)
            .ok_or(Error::FirmwarePlacement { size, end })
    }

    /// The SHA-384 of every page, in order: what SEV-SNP measures the image
    /// by. Computed on first use (on every core) unless [`Ovmf::read`]
    /// computed it while reading.
    pub fn page_digests(&self) -> Result<&[Digest384], Error> {
        self.check_whole_pages()?;
        Ok(self
            .page_digests
            .get_or_init(|| page_digests(self.data(), super::threads())))
    }

    /// SEV-SNP measures whole pages: refuse an image that is not.
    pub(crate) fn check_whole_pages(&self) -> Result<(), Error> {
        if self.data().len() % PAGE_SIZE != 0 {
            return Err(Error::FirmwarePageMultiple {
                size: u64::try_from(self.data().len()).unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }

    fn parse_metadata(&self) -> Result<Option<Vec<MetadataSection>>, Error> {
        if self.entry(SEV_METADATA_GUID).is_none() {
            return Ok(None);
        }
        let from_end = self.entry_u32(SEV_METADATA_GUID, "SEV metadata", 0)?;
        let size = self.data().len();
        let out_of_range = Error::MetadataOffset {
            offset: from_end,
            size,
        };
        let start = usize::try_from(from_end)
            .ok()
            .and_then(|o| size.checked_sub(o))
            .ok_or(out_of_range)?;
        let header = start
            .checked_add(METADATA_HEADER_SIZE)
            .and_then(|end| self.data().get(start..end))
            .ok_or(Error::MetadataOffset {
                offset: from_end,
                size,
            })?;
        let (signature, rest) = header.split_at_checked(4).unwrap_or_default();
        if signature != b"ASEV" {
            let mut found = [0; 4];
            found.iter_mut().zip(signature).for_each(|(d, s)| *d = *s);
            return Err(Error::MetadataSignature {
                offset: start,
                found,
            });
        }
        let length = le_u32(rest, 0);
        let version = le_u32(rest, 4);
        let count = le_u32(rest, 8);
        if version != 1 {
            return Err(Error::MetadataVersion {
                offset: start,
                found: version,
            });
        }
        if count > MAX_SECTIONS {
            return Err(Error::MetadataSections {
                offset: start,
                sections: count,
                max: MAX_SECTIONS,
            });
        }
        // Header plus sections must fit in the declared length, and the
        // declared length in the image.
        let needed = u64::from(count)
            .checked_mul(12)
            .and_then(|n| n.checked_add(16))
            .unwrap_or(u64::MAX);
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| start.checked_add(l));
        let body = match end {
            Some(end) if u64::from(length) >= needed && end <= size => self
                .data()
                .get(start..end)
                .and_then(|m| m.get(METADATA_HEADER_SIZE..)),
            _ => None,
        };
        let body = body.ok_or(Error::MetadataLength {
            offset: start,
            length,
            sections: count,
            needed,
            size,
        })?;
        // `count` sections, at most MAX_SECTIONS, fit in `body`.
        let sections = body
            .chunks_exact(SECTION_SIZE)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .map(|d| MetadataSection {
                gpa: le_u32(d, 0),
                size: le_u32(d, 4),
                section_type: SectionType::from_u32(le_u32(d, 8)),
            })
            .collect();
        Ok(Some(sections))
    }
}

/// A little-endian `u32` at `at`, or 0 where the bytes are missing (callers
/// have checked the length).
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    at.checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes)
}

/// The 18-byte entry header that ends at `end`: its length and GUID.
fn header_ending_at(data: &[u8], end: usize) -> Option<(u16, Guid)> {
    let start = end.checked_sub(ENTRY_HEADER_SIZE)?;
    let header = data.get(start..end)?;
    let (len, guid) = header.split_at_checked(2)?;
    let len = u16::from_le_bytes(<[u8; 2]>::try_from(len).ok()?);
    Some((len, Guid(<[u8; 16]>::try_from(guid).ok()?)))
}

/// Walk the footer table from the footer towards the start of the image.
fn parse_table(data: &[u8]) -> Result<Option<Vec<TableEntry>>, Error> {
    let Some(footer_end) = data.len().checked_sub(BYTES_AFTER_FOOTER) else {
        return Ok(None);
    };
    let Some((length, guid)) = header_ending_at(data, footer_end) else {
        return Ok(None);
    };
    if guid != FOOTER_GUID {
        return Ok(None);
    }
    // header_ending_at succeeded, so the footer's header lies in the image.
    let footer_start = footer_end.saturating_sub(ENTRY_HEADER_SIZE);
    let table_size =
        usize::from(length)
            .checked_sub(ENTRY_HEADER_SIZE)
            .ok_or(Error::FooterLength {
                offset: footer_start,
                length,
            })?;
    let table_start = footer_start
        .checked_sub(table_size)
        .ok_or(Error::FooterTableSize {
            length,
            available: footer_end,
        })?;

    let mut entries: Vec<TableEntry> = Vec::new();
    let mut end = footer_start;
    // Each pass consumes at least ENTRY_HEADER_SIZE bytes of a table of at
    // most u16::MAX bytes: at most 3640 entries.
    while end > table_start {
        let remaining = end.saturating_sub(table_start);
        let header_start = end.saturating_sub(ENTRY_HEADER_SIZE);
        let header = (remaining >= ENTRY_HEADER_SIZE)
            .then(|| header_ending_at(data, end))
            .flatten();
        let Some((length, guid)) = header else {
            return Err(Error::FooterTableTruncated {
                offset: table_start,
                remaining,
            });
        };
        if usize::from(length) < ENTRY_HEADER_SIZE {
            return Err(Error::FooterEntrySize {
                offset: header_start,
                guid,
                length,
            });
        }
        let start = end
            .checked_sub(usize::from(length))
            .filter(|s| *s >= table_start)
            .ok_or(Error::FooterEntryOverrun {
                offset: header_start,
                guid,
                length,
                remaining,
            })?;
        if entries.iter().any(|e| e.guid == guid) {
            return Err(Error::DuplicateEntry { guid });
        }
        entries.push(TableEntry {
            guid,
            data: start..header_start,
        });
        end = start;
    }
    Ok(Some(entries))
}

#[cfg(test)]
pub(crate) mod tests {
    //! Unit tests: a synthetic image, built here, and one mutation each.

    // Fixtures of known sizes; a panic here is a failed test.
    #![allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::unwrap_used
    )]

    use super::*;

    /// A synthetic OVMF-like image builder: `pages` pages, a footer table
    /// with `entries` (first = nearest the footer), and SEV metadata placed
    /// at `metadata_at` (from the end) when given.
    pub(crate) struct Image {
        pub(crate) pages: usize,
        pub(crate) entries: Vec<(Guid, Vec<u8>)>,
        pub(crate) metadata: Option<Vec<u8>>,
    }

    /// Where the synthetic images put the SEV metadata, from the end.
    pub(crate) const METADATA_FROM_END: usize = 0x800;

    pub(crate) fn metadata(sections: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut m = b"ASEV".to_vec();
        let len = 16 + 12 * sections.len();
        m.extend_from_slice(&u32::try_from(len).unwrap().to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&u32::try_from(sections.len()).unwrap().to_le_bytes());
        for (gpa, size, t) in sections {
            m.extend_from_slice(&gpa.to_le_bytes());
            m.extend_from_slice(&size.to_le_bytes());
            m.extend_from_slice(&t.to_le_bytes());
        }
        m
    }

    /// A typical AmdSev-like layout: one of each section type.
    pub(crate) fn typical() -> Image {
        Image {
            pages: 4,
            entries: vec![
                (
                    SEV_ES_RESET_BLOCK_GUID,
                    0x0080_b004u32.to_le_bytes().to_vec(),
                ),
                (SEV_HASH_TABLE_RV_GUID, {
                    let mut v = 0x0081_0c00u32.to_le_bytes().to_vec();
                    v.extend_from_slice(&0x400u32.to_le_bytes());
                    v
                }),
                (
                    SEV_METADATA_GUID,
                    u32::try_from(METADATA_FROM_END)
                        .unwrap()
                        .to_le_bytes()
                        .to_vec(),
                ),
            ],
            metadata: Some(metadata(&[
                (0x80_0000, 0x9000, 1),
                (0x80d_000, 0x1000, 2),
                (0x80e_000, 0x1000, 3),
                (0x80f_000, 0x1000, 4),
                (0x81_0000, 0x1000, 0x10),
            ])),
        }
    }

    impl Image {
        pub(crate) fn build(&self) -> Vec<u8> {
            let size = self.pages * PAGE_SIZE;
            // Deterministic non-zero filler, so page digests differ.
            let mut data: Vec<u8> = (0..size)
                .map(|i| u8::try_from((i * 7 + i / 4096) % 251).unwrap())
                .collect();
            if let Some(m) = &self.metadata {
                let at = size - METADATA_FROM_END;
                data[at..at + m.len()].copy_from_slice(m);
            }
            let mut table = Vec::new();
            for (guid, payload) in self.entries.iter().rev() {
                table.extend_from_slice(payload);
                let len = u16::try_from(payload.len() + 18).unwrap();
                table.extend_from_slice(&len.to_le_bytes());
                table.extend_from_slice(&guid.0);
            }
            let footer_len = u16::try_from(table.len() + 18).unwrap();
            table.extend_from_slice(&footer_len.to_le_bytes());
            table.extend_from_slice(&FOOTER_GUID.0);
            let end = size - 32;
            data[end - table.len()..end].copy_from_slice(&table);
            data
        }
    }

    /// File offset of the footer's length field.
    fn footer_len_at(data: &[u8]) -> usize {
        data.len() - 32 - 18
    }

    fn parse(data: Vec<u8>) -> Result<Ovmf, Error> {
        Ovmf::from_bytes(data)
    }

    #[test]
    fn guid_text_round_trip() {
        assert_eq!(
            FOOTER_GUID.to_string(),
            "96b582de-1fb2-45f7-baea-a366c55a082d"
        );
        assert_eq!(
            SEV_METADATA_GUID.to_string(),
            "dc886566-984a-4798-a75e-5585a7bf67cc"
        );
        // EFI byte order: the first field little-endian.
        assert_eq!(FOOTER_GUID.0[..4], [0xde, 0x82, 0xb5, 0x96]);
    }

    #[test]
    fn typical_image_parses() {
        let ovmf = parse(typical().build()).unwrap();
        assert!(ovmf.has_footer_table());
        assert_eq!(ovmf.sev_es_reset_eip().unwrap(), 0x80_b004);
        assert_eq!(
            ovmf.hashes_table_area().unwrap(),
            Some(HashesTableArea {
                base: 0x81_0c00,
                size: 0x400
            })
        );
        let types: Vec<_> = ovmf.sections().iter().map(|s| s.section_type).collect();
        assert_eq!(
            types,
            [
                SectionType::SnpSecMem,
                SectionType::SnpSecrets,
                SectionType::Cpuid,
                SectionType::SvsmCaa,
                SectionType::SnpKernelHashes
            ]
        );
        assert_eq!(ovmf.gpa_ending_at(1 << 32).unwrap(), (1 << 32) - 4 * 4096);
    }

    #[test]
    fn no_footer_guid_means_no_table() {
        let mut data = typical().build();
        let at = data.len() - 48;
        data[at] ^= 1;
        let ovmf = parse(data).unwrap();
        assert!(!ovmf.has_footer_table());
        assert!(!ovmf.has_metadata());
        assert!(matches!(
            ovmf.sev_es_reset_eip(),
            Err(Error::MissingEntry {
                table_present: false,
                ..
            })
        ));
    }

    #[test]
    fn image_smaller_than_a_page() {
        assert!(matches!(
            parse(vec![0; 4095]),
            Err(Error::FirmwareSize { size: 4095, .. })
        ));
        assert!(matches!(
            parse(Vec::new()),
            Err(Error::FirmwareSize { size: 0, .. })
        ));
    }

    #[test]
    fn image_over_the_limit() {
        assert!(matches!(
            parse(vec![0; MAX_FIRMWARE_SIZE + 1]),
            Err(Error::FirmwareSize { .. })
        ));
    }

    #[test]
    fn footer_length_below_header() {
        let mut data = typical().build();
        let at = footer_len_at(&data);
        data[at..at + 2].copy_from_slice(&17u16.to_le_bytes());
        assert!(matches!(
            parse(data),
            Err(Error::FooterLength { length: 17, .. })
        ));
    }

    #[test]
    fn table_size_larger_than_file() {
        let mut data = typical().build();
        let at = footer_len_at(&data);
        data[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        // A one-page image cannot hold a 64 KiB table.
        let small = data[data.len() - 4096..].to_vec();
        assert!(matches!(
            parse(small),
            Err(Error::FooterTableSize {
                length: u16::MAX,
                available: 4064
            })
        ));
    }

    #[test]
    fn table_truncated() {
        // The footer claims 10 more bytes than its entries fill.
        let mut data = typical().build();
        let at = footer_len_at(&data);
        let len = u16::from_le_bytes([data[at], data[at + 1]]);
        data[at..at + 2].copy_from_slice(&(len + 10).to_le_bytes());
        // The 10 extra bytes before the table are filler: a leftover that
        // is shorter than a header.
        assert!(matches!(
            parse(data),
            Err(Error::FooterTableTruncated { remaining: 10, .. })
        ));
    }

    #[test]
    fn entry_size_smaller_than_header() {
        let mut data = typical().build();
        // The entry nearest the footer: SEV-ES reset block.
        let at = footer_len_at(&data) - 18;
        data[at..at + 2].copy_from_slice(&4u16.to_le_bytes());
        assert!(matches!(
            parse(data),
            Err(Error::FooterEntrySize {
                length: 4,
                guid: SEV_ES_RESET_BLOCK_GUID,
                ..
            })
        ));
    }

    #[test]
    fn entry_overruns_table() {
        let mut data = typical().build();
        let at = footer_len_at(&data) - 18;
        data[at..at + 2].copy_from_slice(&1000u16.to_le_bytes());
        assert!(matches!(
            parse(data),
            Err(Error::FooterEntryOverrun {
                length: 1000,
                guid: SEV_ES_RESET_BLOCK_GUID,
                ..
            })
        ));
    }

    #[test]
    fn duplicate_entry() {
        let mut image = typical();
        image
            .entries
            .push((SEV_ES_RESET_BLOCK_GUID, 0x1000u32.to_le_bytes().to_vec()));
        assert!(matches!(
            parse(image.build()),
            Err(Error::DuplicateEntry {
                guid: SEV_ES_RESET_BLOCK_GUID
            })
        ));
    }

    #[test]
    fn entry_too_short() {
        let mut image = typical();
        image.entries[0].1 = vec![4, 0];
        let ovmf = parse(image.build()).unwrap();
        assert!(matches!(
            ovmf.sev_es_reset_eip(),
            Err(Error::EntryTooShort {
                length: 2,
                needed: 4,
                ..
            })
        ));
        let mut image = typical();
        image.entries[1].1.truncate(6);
        let ovmf = parse(image.build()).unwrap();
        assert!(matches!(
            ovmf.hashes_table_area(),
            Err(Error::EntryTooShort {
                length: 6,
                needed: 8,
                ..
            })
        ));
    }

    #[test]
    fn metadata_entry_too_short() {
        let mut image = typical();
        image.entries[2].1 = vec![0, 8, 0];
        assert!(matches!(
            parse(image.build()),
            Err(Error::EntryTooShort {
                name: "SEV metadata",
                length: 3,
                needed: 4
            })
        ));
    }

    #[test]
    fn metadata_offset_out_of_range() {
        for from_end in [0x4001u32, u32::MAX, 0, 15] {
            let mut image = typical();
            image.entries[2].1 = from_end.to_le_bytes().to_vec();
            let got = parse(image.build());
            assert!(
                matches!(got, Err(Error::MetadataOffset { offset, size: 0x4000 }) if offset == from_end),
                "{from_end:#x}: {got:?}"
            );
        }
    }

    #[test]
    fn metadata_bad_signature() {
        let mut data = typical().build();
        let at = data.len() - METADATA_FROM_END;
        data[at..at + 4].copy_from_slice(b"ASEW");
        assert!(matches!(
            parse(data),
            Err(Error::MetadataSignature { found, .. }) if &found == b"ASEW"
        ));
    }

    #[test]
    fn metadata_bad_version() {
        let mut data = typical().build();
        let at = data.len() - METADATA_FROM_END + 8;
        data[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            parse(data),
            Err(Error::MetadataVersion { found: 2, .. })
        ));
    }

    #[test]
    fn metadata_length_too_small_for_sections() {
        let mut data = typical().build();
        let at = data.len() - METADATA_FROM_END + 4;
        data[at..at + 4].copy_from_slice(&(16u32 + 12 * 4).to_le_bytes());
        assert!(matches!(
            parse(data),
            Err(Error::MetadataLength {
                sections: 5,
                needed: 76,
                ..
            })
        ));
    }

    #[test]
    fn metadata_past_end_of_image() {
        let mut data = typical().build();
        let at = data.len() - METADATA_FROM_END + 12;
        // Sections that would run past the end of the file.
        data[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
        let at = at - 8;
        data[at..at + 4].copy_from_slice(&(16u32 + 12 * 1000).to_le_bytes());
        assert!(matches!(
            parse(data),
            Err(Error::MetadataLength { sections: 1000, .. })
        ));
    }

    #[test]
    fn metadata_too_many_sections() {
        let mut data = typical().build();
        let at = data.len() - METADATA_FROM_END + 12;
        data[at..at + 4].copy_from_slice(&(MAX_SECTIONS + 1).to_le_bytes());
        assert!(matches!(
            parse(data),
            Err(Error::MetadataSections {
                sections: 4097,
                max: MAX_SECTIONS,
                ..
            })
        ));
    }

    #[test]
    fn unknown_section_type_is_kept() {
        let mut image = typical();
        image.metadata = Some(metadata(&[(0x80_0000, 0x1000, 7)]));
        let ovmf = parse(image.build()).unwrap();
        assert_eq!(ovmf.sections()[0].section_type, SectionType::Unknown(7));
    }

    /// No input panics: every single-byte change to the table and metadata
    /// region of a typical image, and every truncation, parses or errs.
    #[test]
    fn mutations_never_panic() {
        let data = typical().build();
        let n = data.len();
        for at in (n - METADATA_FROM_END - 16)..n {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut m = data.clone();
                m[at] = v;
                if let Ok(ovmf) = Ovmf::from_bytes(m) {
                    let _ = ovmf.sev_es_reset_eip();
                    let _ = ovmf.hashes_table_area();
                    let _ = ovmf.svsm_entry_offset();
                }
            }
        }
        for cut in [1, 17, 18, 32, 33, 50, 4095, 4096, 8000] {
            let _ = Ovmf::from_bytes(data[..n - cut].to_vec());
            let _ = Ovmf::from_bytes(data[cut..].to_vec());
        }
    }
}
