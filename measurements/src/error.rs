//! The one error type of this crate.

use std::path::PathBuf;

use thiserror::Error;

use crate::snp::{Guid, SectionType};

/// Why an expected measurement could not be computed.
///
/// Offsets are byte offsets into the firmware file, so a malformed image can
/// be inspected with a hex dump at the place the error names.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    // -- files --
    /// A file could not be opened or read. The I/O error is the source
    /// (printed by `{:#}` with anyhow, or by walking `source()`).
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    // -- the firmware image as a whole --
    /// The firmware image is smaller than one page, or larger than the limit.
    #[error("firmware image is {size} bytes; expected {min} to {max} bytes")]
    FirmwareSize {
        /// Bytes in the image.
        size: u64,
        /// Smallest accepted size.
        min: u64,
        /// Largest accepted size.
        max: u64,
    },
    /// SEV-SNP measures the image page by page, so its size must be a
    /// multiple of 4 KiB.
    #[error("firmware image is {size} bytes, not a multiple of the 4096-byte page")]
    FirmwarePageMultiple {
        /// Bytes in the image.
        size: u64,
    },
    /// Placed so that it ends at `end`, the image would start below address 0.
    #[error("firmware image of {size} bytes does not fit below guest address {end:#x}")]
    FirmwarePlacement {
        /// Bytes in the image.
        size: u64,
        /// The guest-physical address the image must end at.
        end: u64,
    },

    // -- the footer GUID table --
    /// The footer GUID is present but its length cannot even cover itself.
    #[error(
        "OVMF footer table at offset {offset:#x}: length {length} is below the 18-byte entry header"
    )]
    FooterLength {
        /// Offset of the footer entry's header.
        offset: usize,
        /// The length it declares.
        length: u16,
    },
    /// The footer declares a table that starts before the file does.
    #[error(
        "OVMF footer table of {length} bytes does not fit in the {available} bytes before its footer"
    )]
    FooterTableSize {
        /// The table length the footer declares (header included).
        length: u16,
        /// Bytes available up to the end of the footer entry.
        available: usize,
    },
    /// Fewer bytes are left in the table than an entry header needs.
    #[error(
        "OVMF footer table truncated: {remaining} bytes left at offset {offset:#x}, an entry header is 18"
    )]
    FooterTableTruncated {
        /// Offset of the leftover bytes.
        offset: usize,
        /// How many bytes are left.
        remaining: usize,
    },
    /// An entry's length is smaller than its own header.
    #[error(
        "OVMF footer table entry {guid} at offset {offset:#x}: length {length} is below the 18-byte header"
    )]
    FooterEntrySize {
        /// Offset of the entry's header.
        offset: usize,
        /// The entry's GUID.
        guid: Guid,
        /// The length it declares.
        length: u16,
    },
    /// An entry's length reaches past the start of the table.
    #[error(
        "OVMF footer table entry {guid} at offset {offset:#x}: length {length} exceeds the {remaining} bytes left in the table"
    )]
    FooterEntryOverrun {
        /// Offset of the entry's header.
        offset: usize,
        /// The entry's GUID.
        guid: Guid,
        /// The length it declares.
        length: u16,
        /// Bytes of the table left before the header's end.
        remaining: usize,
    },
    /// The same GUID appears twice; which one counts would be a guess.
    #[error("OVMF footer table holds entry {guid} twice")]
    DuplicateEntry {
        /// The repeated GUID.
        guid: Guid,
    },
    /// A table entry that the computation needs is absent.
    #[error("{}", missing_entry(.name, .guid, *.table_present))]
    MissingEntry {
        /// What the entry is.
        name: &'static str,
        /// Its GUID.
        guid: Guid,
        /// Whether the image has a footer table at all.
        table_present: bool,
    },
    /// A table entry is shorter than the fields read from it.
    #[error("OVMF footer table entry {name} holds {length} bytes, expected at least {needed}")]
    EntryTooShort {
        /// What the entry is.
        name: &'static str,
        /// Bytes of data in the entry.
        length: usize,
        /// Bytes needed.
        needed: usize,
    },

    // -- SEV metadata --
    /// The metadata offset (from the end of the file) does not leave room for
    /// the 16-byte header inside the file.
    #[error(
        "SEV metadata offset {offset:#x} (from the end) is out of range for a {size}-byte image"
    )]
    MetadataOffset {
        /// Offset from the end of the image, as the table entry holds it.
        offset: u32,
        /// Bytes in the image.
        size: usize,
    },
    /// The metadata header does not start with "ASEV".
    #[error("SEV metadata at offset {offset:#x}: signature {found:02x?}, expected \"ASEV\"")]
    MetadataSignature {
        /// File offset of the header.
        offset: usize,
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A metadata version other than 1.
    #[error("SEV metadata at offset {offset:#x}: version {found}, only version 1 is defined")]
    MetadataVersion {
        /// File offset of the header.
        offset: usize,
        /// The version found.
        found: u32,
    },
    /// The metadata's length cannot hold its sections, or runs past the end
    /// of the image.
    #[error(
        "SEV metadata at offset {offset:#x}: length {length} for {sections} sections (needs {needed}) in a {size}-byte image"
    )]
    MetadataLength {
        /// File offset of the header.
        offset: usize,
        /// The length the header declares.
        length: u32,
        /// The section count the header declares.
        sections: u32,
        /// Bytes that header plus sections need.
        needed: u64,
        /// Bytes in the image.
        size: usize,
    },

    /// More metadata sections than any firmware declares.
    #[error(
        "SEV metadata at offset {offset:#x} declares {sections} sections; at most {max} are accepted"
    )]
    MetadataSections {
        /// File offset of the header.
        offset: usize,
        /// The section count the header declares.
        sections: u32,
        /// The limit.
        max: u32,
    },

    // -- direct boot --
    /// The command line holds a NUL. QEMU hashes it up to its first NUL, so
    /// what follows would not be measured.
    #[error("the kernel command line holds a NUL at byte {at}")]
    CmdlineNul {
        /// Byte offset of the first NUL.
        at: usize,
    },

    // -- SEV metadata sections, as SEV-SNP measures them --
    /// A section type that no supported OVMF declares; QEMU refuses it too.
    #[error("SEV metadata section {index}: unknown section type {section_type:#x}")]
    UnknownSectionType {
        /// Index of the section in the metadata.
        index: usize,
        /// The type found.
        section_type: u32,
    },
    /// A section's address or size is not a whole number of pages, it is
    /// empty, or it runs past 4 GiB.
    #[error(
        "SEV metadata section {index} ({section}): gpa {gpa:#x} size {size:#x} is not a non-empty, page-aligned range below 4 GiB"
    )]
    SectionAlignment {
        /// Index of the section in the metadata.
        index: usize,
        /// Its type.
        section: SectionType,
        /// Its guest-physical address.
        gpa: u32,
        /// Its size.
        size: u32,
    },
    /// The sections together cover more pages than there are below 4 GiB,
    /// so they cannot all be distinct guest pages of one launch.
    #[error(
        "SEV metadata sections cover {pages} pages in all; at most {max} pages lie below 4 GiB"
    )]
    SectionPages {
        /// Pages the sections cover, counted with repeats.
        pages: u64,
        /// Pages below 4 GiB.
        max: u64,
    },
    /// A section that must be exactly one page is not.
    #[error("SEV metadata section {index} ({section}): size {size:#x}, expected one page (0x1000)")]
    SectionSize {
        /// Index of the section in the metadata.
        index: usize,
        /// Its type.
        section: SectionType,
        /// Its size.
        size: u32,
    },
    /// A kernel was given, but the firmware has no SNP_KERNEL_HASHES
    /// section to measure its hashes in.
    #[error("a kernel was given, but the firmware's SEV metadata has no SNP_KERNEL_HASHES section{}", if *.metadata_present { "" } else { " (it has no SEV metadata at all)" })]
    NoKernelHashesSection {
        /// Whether the image has SEV metadata at all.
        metadata_present: bool,
    },
    /// A kernel was given for SEV or SEV-ES, but the firmware reserves no
    /// area for the hashes table.
    #[error("a kernel was given, but the firmware does not support kernel/initrd/cmdline measurement ({})", if *.entry_present { "its SEV hashes table area has base 0" } else { "it has no SEV hashes table entry" })]
    HashesTableUnsupported {
        /// Whether the footer table has the entry (with a zero base).
        entry_present: bool,
    },
    /// The hashes table area the firmware declares is one QEMU refuses.
    #[error(
        "the firmware's SEV hashes table area is invalid (base={base:#x} size={size:#x}); QEMU refuses it"
    )]
    HashesTableArea {
        /// The area's guest-physical address.
        base: u32,
        /// The area's size.
        size: u32,
    },
    /// The hashes table, at its offset in the page, would cross the page.
    #[error("the SEV hashes table at page offset {offset:#x} does not fit in the 4096-byte page")]
    HashesTablePlacement {
        /// Offset of the table within its page.
        offset: usize,
    },
    /// Application processors start at the SEV-ES reset vector, and the
    /// firmware's is zero.
    #[error(
        "{vcpus} vCPUs need an AP reset address, and the firmware's SEV-ES reset block holds 0"
    )]
    ApResetAddress {
        /// The vCPU count asked for.
        vcpus: u32,
    },
    /// SVSM mode measures the guest as QEMU launches it; other VMMs are not
    /// implemented (as in the reference tool).
    #[error("SVSM mode is only implemented for QEMU, not {0}")]
    SvsmVmm(crate::snp::VmmType),
    // -- reference-value manifests --
    /// A manifest or image description is invalid.
    #[error("reference values: {0}")]
    Manifest(String),
}

fn missing_entry(name: &str, guid: &Guid, table_present: bool) -> String {
    if table_present {
        format!("the firmware's OVMF footer table has no {name} entry ({guid})")
    } else {
        format!(
            "the firmware has no OVMF footer table, so no {name} entry ({guid}); is it an OVMF image?"
        )
    }
}
