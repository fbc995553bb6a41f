//! PE/COFF images and their Authenticode digest, as UEFI firmware measures
//! a boot application into PCR 4 (EV_EFI_BOOT_SERVICES_APPLICATION).
//!
//! The rules are those of "Windows Authenticode Portable Executable
//! Signature Format" (Microsoft, 2008), "Calculating the PE Image Hash",
//! as EDK2 implements them (`SecurityPkg/Tcg/Tcg2Dxe/MeasureBootPeCoff.c`,
//! `MeasurePeImageAndExtend`), since that is the code whose output we
//! predict:
//!
//! 1. the headers up to `SizeOfHeaders`, without the optional header's
//!    `CheckSum` and without the certificate-table entry of the data
//!    directory (index 4, `IMAGE_DIRECTORY_ENTRY_SECURITY`) when the image
//!    has one;
//! 2. each section with a non-zero `SizeOfRawData`, in `PointerToRawData`
//!    order (a stable sort, so equal offsets keep table order);
//! 3. the bytes after that: from offset `SUM_OF_BYTES_HASHED` (headers plus
//!    sections), `file size - certificate table size - SUM_OF_BYTES_HASHED`
//!    of them; the certificate table (the signature) is at the end of a
//!    signed file and is left out.
//!
//! Like EDK2, an image need not start with an MS-DOS header ("MZ"); without
//! one the PE signature is at offset 0. Unlike `osslsigncode`, an unsigned
//! file is not padded to 8 bytes: firmware hashes the file as it is.
//!
//! What EDK2 would read out of bounds (a section past the end of the file,
//! `SizeOfHeaders` shorter than the header fields it excludes), or what no
//! linker produces (overlapping sections, more data directories than the
//! 16 the format defines) is refused with an error naming the field.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::ops::Range;

use provenix_firmware::tpm::HashAlg;

use super::Error;

/// Optional-header magic of a PE32 image (PE format, "Optional Header
/// Standard Fields").
const PE32_MAGIC: u16 = 0x10b;
/// Optional-header magic of a PE32+ image.
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Bytes of the COFF file header that follows "PE\0\0".
const FILE_HEADER_SIZE: usize = 20;
/// Bytes of one section header.
const SECTION_HEADER_SIZE: usize = 40;
/// Offset of `CheckSum` in the optional header (PE32 and PE32+ alike).
const CHECKSUM_OFFSET: usize = 64;
/// Offset of `SizeOfHeaders` in the optional header (both formats).
const SIZE_OF_HEADERS_OFFSET: usize = 60;
/// The certificate table's index in the data directory.
const SECURITY_DIRECTORY: u32 = 4;
/// Data-directory entries the format defines; EDK2's loader refuses more.
const MAX_DATA_DIRECTORIES: u32 = 16;

/// PE32 or PE32+.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeFormat {
    /// 32-bit (optional-header magic 0x10b).
    Pe32,
    /// 64-bit (optional-header magic 0x20b).
    Pe32Plus,
}

/// A section header, as far as measuring needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The name field, 8 bytes, NUL-padded.
    pub name: [u8; 8],
    /// `VirtualSize`: bytes in memory.
    pub virtual_size: u32,
    /// `SizeOfRawData`: bytes in the file.
    pub size_of_raw_data: u32,
    /// `PointerToRawData`: file offset of the data.
    pub pointer_to_raw_data: u32,
}

impl Section {
    /// The name up to its first NUL, lossily as UTF-8.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(8);
        String::from_utf8_lossy(self.name.get(..end).unwrap_or_default()).into_owned()
    }
}

/// A PE/COFF image, checked so that its Authenticode digest can be computed
/// without reading outside it.
#[derive(Clone, Debug)]
pub struct PeImage<'a> {
    bytes: &'a [u8],
    format: PeFormat,
    sections: Vec<Section>,
    /// `(file offset, size)` of the certificate table, when the data
    /// directory has the entry.
    certificate_table: Option<(u32, u32)>,
    /// What Authenticode hashes, in order.
    hashed: Vec<Range<usize>>,
}

impl<'a> PeImage<'a> {
    /// Parse `bytes` (a whole file) as a PE/COFF image.
    pub fn parse(bytes: &'a [u8]) -> Result<PeImage<'a>, Error> {
        let len = bytes.len();
        let pe = if bytes.starts_with(b"MZ") {
            // e_lfanew, the last field of the 64-byte MS-DOS header.
            usize_from(read_u32(bytes, 0x3c, "MS-DOS header e_lfanew")?)
        } else {
            0
        };
        let signature = bytes
            .get(pe..pe.saturating_add(4))
            .ok_or(Error::PeTruncated {
                field: "PE signature",
                offset: pe,
                size: len,
            })?;
        if signature != b"PE\0\0" {
            return Err(Error::PeSignature {
                offset: pe,
                found: signature.to_vec(),
            });
        }
        let file_header = add(pe, 4, "COFF file header")?;
        let sections_count = read_u16(bytes, add(file_header, 2, "")?, "NumberOfSections")?;
        let optional_size = read_u16(bytes, add(file_header, 16, "")?, "SizeOfOptionalHeader")?;
        let optional = add(file_header, FILE_HEADER_SIZE, "optional header")?;
        let format = match read_u16(bytes, optional, "optional header Magic")? {
            PE32_MAGIC => PeFormat::Pe32,
            PE32_PLUS_MAGIC => PeFormat::Pe32Plus,
            found => {
                return Err(Error::PeMagic {
                    offset: optional,
                    found,
                });
            }
        };
        // Where NumberOfRvaAndSizes and the data directory sit differs by
        // format (PE format, "Optional Header Windows-Specific Fields").
        let (rva_count_at, directories_at): (usize, usize) = match format {
            PeFormat::Pe32 => (92, 96),
            PeFormat::Pe32Plus => (108, 112),
        };
        let rva_count = read_u32(
            bytes,
            add(optional, rva_count_at, "")?,
            "NumberOfRvaAndSizes",
        )?;
        if rva_count > MAX_DATA_DIRECTORIES {
            return Err(Error::PeDataDirectories { count: rva_count });
        }
        // Every directory entry read must lie inside the optional header.
        let directories_end =
            directories_at.saturating_add(usize_from(rva_count).saturating_mul(8));
        if usize::from(optional_size) < directories_end {
            return Err(Error::PeOptionalHeaderSize {
                size: optional_size,
                needed: directories_end,
            });
        }
        let size_of_headers = usize_from(read_u32(
            bytes,
            add(optional, SIZE_OF_HEADERS_OFFSET, "")?,
            "SizeOfHeaders",
        )?);
        let checksum = add(optional, CHECKSUM_OFFSET, "CheckSum")?;
        let directories = add(optional, directories_at, "data directory")?;
        let certificate_entry = (rva_count > SECURITY_DIRECTORY)
            .then(|| add(directories, 32, "certificate table entry"))
            .transpose()?;
        let certificate_table = match certificate_entry {
            Some(at) => Some((
                read_u32(bytes, at, "certificate table VirtualAddress")?,
                read_u32(bytes, add(at, 4, "")?, "certificate table Size")?,
            )),
            None => None,
        };

        // The section table, inside the headers as EDK2's loader requires.
        let table = add(optional, usize::from(optional_size), "section table")?;
        let table_end = add(
            table,
            usize::from(sections_count) * SECTION_HEADER_SIZE,
            "section table",
        )?;
        if table_end > len {
            return Err(Error::PeTruncated {
                field: "section table",
                offset: table,
                size: len,
            });
        }
        if size_of_headers > len {
            return Err(Error::PeSizeOfHeaders {
                size_of_headers,
                reason: format!("beyond the end of the {len}-byte file"),
            });
        }
        if size_of_headers < table_end {
            return Err(Error::PeSizeOfHeaders {
                size_of_headers,
                reason: format!("the section table ends at {table_end:#x}"),
            });
        }
        let mut sections = Vec::with_capacity(usize::from(sections_count));
        for i in 0..usize::from(sections_count) {
            // Within the file: table_end was checked above.
            let at = table.saturating_add(i.saturating_mul(SECTION_HEADER_SIZE));
            let mut name = [0u8; 8];
            name.copy_from_slice(bytes.get(at..at.saturating_add(8)).unwrap_or(&[0; 8]));
            sections.push(Section {
                name,
                virtual_size: read_u32(bytes, at.saturating_add(8), "section VirtualSize")?,
                size_of_raw_data: read_u32(bytes, at.saturating_add(16), "section SizeOfRawData")?,
                pointer_to_raw_data: read_u32(
                    bytes,
                    at.saturating_add(20),
                    "section PointerToRawData",
                )?,
            });
        }

        // 1. The headers, without CheckSum and the certificate-table entry.
        let mut hashed = Vec::new();
        let after_checksum = checksum.saturating_add(4);
        let header_excluded_end = certificate_entry.map_or(after_checksum, |c| c.saturating_add(8));
        if size_of_headers < header_excluded_end {
            return Err(Error::PeSizeOfHeaders {
                size_of_headers,
                reason: format!("the header fields it covers end at {header_excluded_end:#x}"),
            });
        }
        hashed.push(0..checksum);
        match certificate_entry {
            Some(entry) => {
                hashed.push(after_checksum..entry);
                hashed.push(entry.saturating_add(8)..size_of_headers);
            }
            None => hashed.push(after_checksum..size_of_headers),
        }

        // 2. The sections in file order.
        let mut ordered: Vec<(usize, &Section)> = sections
            .iter()
            .enumerate()
            .filter(|(_, s)| s.size_of_raw_data != 0)
            .collect();
        ordered.sort_by_key(|(_, s)| s.pointer_to_raw_data);
        // No two sections share bytes in a linked image, so the sections
        // together never exceed the file; this also bounds the work a
        // hostile section table can cause to one pass over the file.
        let mut sum = size_of_headers;
        let mut section_bytes = 0usize;
        for (index, s) in ordered {
            let start = usize_from(s.pointer_to_raw_data);
            let size = usize_from(s.size_of_raw_data);
            let end = start
                .checked_add(size)
                .filter(|&e| e <= len)
                .ok_or_else(|| Error::PeSectionBounds {
                    index,
                    name: s.name(),
                    start,
                    size,
                    file_size: len,
                })?;
            section_bytes = section_bytes.saturating_add(size);
            if section_bytes > len {
                return Err(Error::PeSectionsOverlap {
                    index,
                    name: s.name(),
                });
            }
            hashed.push(start..end);
            sum = sum.saturating_add(size);
        }

        // 3. What follows, up to the certificate table.
        let certificate_size = certificate_table.map_or(0, |(_, size)| usize_from(size));
        if len > sum {
            let end = len
                .checked_sub(certificate_size)
                .filter(|&e| e >= sum)
                .ok_or(Error::PeCertificateTable {
                    size: certificate_size,
                    hashed: sum,
                    file_size: len,
                })?;
            hashed.push(sum..end);
        }
        hashed.retain(|r| !r.is_empty());

        Ok(PeImage {
            bytes,
            format,
            sections,
            certificate_table,
            hashed,
        })
    }

    /// PE32 or PE32+.
    pub fn format(&self) -> PeFormat {
        self.format
    }

    /// The section table, in table order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Whether the image carries a certificate table (is signed).
    pub fn is_signed(&self) -> bool {
        self.certificate_table.is_some_and(|(_, size)| size != 0)
    }

    /// The bytes of section `s` as the loader maps them: `VirtualSize`
    /// bytes, the part beyond `SizeOfRawData` zero (PE format, "Section
    /// Table"). `None` when `s` is not this image's.
    pub fn section_in_memory(&self, s: &Section) -> Option<Vec<u8>> {
        let start = usize_from(s.pointer_to_raw_data);
        let raw = usize_from(s.size_of_raw_data.min(s.virtual_size));
        let mut data = self.bytes.get(start..start.checked_add(raw)?)?.to_vec();
        data.resize(usize_from(s.virtual_size), 0);
        Some(data)
    }

    /// The Authenticode digest with `alg`.
    pub fn authenticode(&self, alg: HashAlg) -> Vec<u8> {
        let mut ctx = ring::digest::Context::new(super::ring_alg(alg));
        for r in &self.hashed {
            ctx.update(self.bytes.get(r.clone()).unwrap_or_default());
        }
        ctx.finish().as_ref().to_vec()
    }
}

fn usize_from(v: u32) -> usize {
    // usize is at least 32 bits on every target this crate builds for.
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn add(base: usize, offset: usize, field: &'static str) -> Result<usize, Error> {
    base.checked_add(offset).ok_or(Error::PeTruncated {
        field,
        offset: base,
        size: usize::MAX,
    })
}

fn read_u16(bytes: &[u8], at: usize, field: &'static str) -> Result<u16, Error> {
    let b = at
        .checked_add(2)
        .and_then(|end| bytes.get(at..end))
        .ok_or(Error::PeTruncated {
            field,
            offset: at,
            size: bytes.len(),
        })?;
    Ok(u16::from_le_bytes([
        b.first().copied().unwrap_or(0),
        b.get(1).copied().unwrap_or(0),
    ]))
}

fn read_u32(bytes: &[u8], at: usize, field: &'static str) -> Result<u32, Error> {
    let b = at
        .checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .ok_or(Error::PeTruncated {
            field,
            offset: at,
            size: bytes.len(),
        })?;
    let mut out = [0u8; 4];
    out.copy_from_slice(b);
    Ok(u32::from_le_bytes(out))
}
