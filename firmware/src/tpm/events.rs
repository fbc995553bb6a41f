//! What the data of an event says, for the event types an appraisal of a
//! measured boot looks at (TCG PC Client Platform Firmware Profile, PFP,
//! 1.05, section 10.4; UEFI 2.10 for device paths and variables).
//!
//! The data describes a measurement; for most types it is not what was
//! hashed (an image's digest is its Authenticode hash, the Linux stub's
//! initrd event describes the initrd). An appraisal compares digests with
//! expected values and uses the decoded data to know which value to expect.
//!
//! Types this module does not decode come back as [`Decoded::Raw`]; a type
//! it decodes whose data is malformed is an error naming the event.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use core::fmt;

use super::Reader;
use super::eventlog::{Event, EventType, SpecId};
use crate::Error;

/// The Linux EFI stub's tag for the initrd it loaded (PCR 9), from
/// `drivers/firmware/efi/libstub/efistub.h`, INITRD_EVENT_TAG_ID.
pub const LINUX_INITRD_TAG: u32 = 0x8F3B_22EC;
/// The Linux EFI stub's tag for its load options, the kernel command line
/// (PCR 9), LOAD_OPTIONS_EVENT_TAG_ID.
pub const LINUX_LOAD_OPTIONS_TAG: u32 = 0x8F3B_22ED;

/// The PCR a Provenix worker extends its deployment settings into before
/// it serves: 15, which firmware and boot loaders leave alone (the UAPI
/// PCR registry gives it to the system's identity).
pub const PROVENIX_SETTINGS_PCR: u32 = 15;
/// The tag of the event a Provenix worker appends to the log it ships
/// when it extends its deployment settings into PCR 15 (EV_EVENT_TAG; the
/// digests are each bank's hash of the settings file): "PVXS".
pub const PROVENIX_SETTINGS_TAG: u32 = 0x5356_5850;
/// That event's data after the tag: what the digests are of.
pub const PROVENIX_SETTINGS_TEXT: &[u8] = b"provenix deployment settings";

/// Most device-path nodes decoded in one path; every node is at least 4
/// bytes, so this only bounds pathological paths.
pub const MAX_DEVICE_PATH_NODES: usize = 256;

/// An EFI_GUID, in its mixed-endian wire form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// EFI_GLOBAL_VARIABLE (UEFI 2.10, 3.3): SecureBoot, PK, KEK, Boot####.
    pub const GLOBAL_VARIABLE: Guid = Guid::new(
        0x8BE4_DF61,
        0x93CA,
        0x11D2,
        [0xAA, 0x0D, 0x00, 0xE0, 0x98, 0x03, 0x2B, 0x8C],
    );
    /// EFI_IMAGE_SECURITY_DATABASE_GUID (UEFI 2.10, 32.6.1): db, dbx.
    pub const IMAGE_SECURITY_DATABASE: Guid = Guid::new(
        0xD719_B2CB,
        0x3D3A,
        0x4596,
        [0xA3, 0xBC, 0xDA, 0xD0, 0x0E, 0x67, 0x65, 0x6F],
    );

    /// The GUID written `{d1}-{d2}-{d3}-{d4[0..2]}-{d4[2..]}`.
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    fn read(r: &mut Reader<'_>, what: &str) -> Result<Guid, Error> {
        r.array(what).map(Guid)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a0, a1, a2, a3, b0, b1, c0, c1, d @ ..] = self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-",
            u32::from_le_bytes([a0, a1, a2, a3]),
            u16::from_le_bytes([b0, b1]),
            u16::from_le_bytes([c0, c1])
        )?;
        for (i, byte) in d.iter().enumerate() {
            if i == 2 {
                f.write_str("-")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An event's data, decoded by its type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decoded {
    /// EV_NO_ACTION: not extended.
    NoAction(NoAction),
    /// EV_POST_CODE: a firmware blob or a description ("ACPI DATA").
    PostCode(PostCode),
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB and _BLOB2: a firmware volume in PCR 0.
    FirmwareBlob(FirmwareBlob),
    /// EV_S_CRTM_VERSION: the firmware version.
    CrtmVersion(CrtmVersion),
    /// EV_EFI_BOOT_SERVICES_APPLICATION, _BOOT_SERVICES_DRIVER and
    /// _RUNTIME_SERVICES_DRIVER: a PE/COFF image the firmware loaded.
    Image(ImageLoad),
    /// EV_EFI_VARIABLE_DRIVER_CONFIG, _VARIABLE_BOOT, _VARIABLE_BOOT2 and
    /// _VARIABLE_AUTHORITY: a UEFI variable.
    Variable(Variable),
    /// EV_SEPARATOR.
    Separator(Separator),
    /// EV_ACTION and EV_EFI_ACTION: an ASCII action string.
    Action(String),
    /// EV_EVENT_TAG: a tagged event (the Linux stub's initrd and load
    /// options on PCR 9).
    Tagged(TaggedEvent),
    /// EV_IPL: a boot loader's description of what it measured (GRUB's
    /// `grub_cmd:` lines, systemd-stub's section names), as text.
    Ipl(String),
    /// EV_EFI_GPT_EVENT and _GPT_EVENT2: the boot disk's partition table.
    Gpt(GptEvent),
    /// Any other type: the data as logged.
    Raw(Vec<u8>),
}

/// An EV_NO_ACTION event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoAction {
    /// The Spec ID event.
    SpecId(SpecId),
    /// StartupLocality: the locality of TPM2_Startup.
    StartupLocality(u8),
    /// Another EV_NO_ACTION event (SP800-155, NvIndexInstance, ...).
    Other(Vec<u8>),
}

/// An EV_POST_CODE event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostCode {
    /// A UEFI_PLATFORM_FIRMWARE_BLOB.
    Blob(FirmwareBlob),
    /// A description ("POST CODE", "SMM CODE", "ACPI DATA", "BIS CODE",
    /// "Embedded UEFI Driver"; PFP 10.4.2).
    Text(String),
}

/// UEFI_PLATFORM_FIRMWARE_BLOB (PFP 10.4.3) or, with a description,
/// UEFI_PLATFORM_FIRMWARE_BLOB2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareBlob {
    /// BlobDescription, for _BLOB2 events.
    pub description: Option<String>,
    /// BlobBase: where the blob was in memory.
    pub base: u64,
    /// BlobLength.
    pub length: u64,
}

/// An EV_S_CRTM_VERSION event: UTF-16 by the PFP, a GUID or bytes on some
/// real firmware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrtmVersion {
    /// A UTF-16 string, without its terminating NUL.
    Text(String),
    /// Data that is not UTF-16 text.
    Bytes(Vec<u8>),
}

/// UEFI_IMAGE_LOAD_EVENT (PFP 10.4.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLoad {
    /// ImageLocationInMemory.
    pub location: u64,
    /// ImageLengthInMemory.
    pub length: u64,
    /// ImageLinkTimeAddress.
    pub link_time_address: u64,
    /// Where the image came from.
    pub device_path: DevicePath,
}

/// UEFI_VARIABLE_DATA (PFP 10.4.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// VariableName: the vendor GUID.
    pub guid: Guid,
    /// UnicodeName.
    pub name: String,
    /// VariableData.
    pub data: Vec<u8>,
}

/// An EV_SEPARATOR event (PFP 10.4.1): 0 for a normal end of pre-OS
/// measurements, 1 when the firmware hit an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Separator {
    /// 00 00 00 00.
    Normal,
    /// 01 00 00 00: an error occurred; what follows cannot be trusted.
    Error,
    /// Anything else (Windows writes "WBCL" on its PCRs).
    Other(Vec<u8>),
}

/// TCG_PCClientTaggedEvent (PFP 10.4.2.1): an id and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedEvent {
    /// taggedEventID ([`LINUX_INITRD_TAG`], [`LINUX_LOAD_OPTIONS_TAG`]).
    pub id: u32,
    /// taggedEventData: for the Linux stub a NUL-terminated description
    /// ("Linux initrd", "LOADED_IMAGE::LoadOptions").
    pub data: Vec<u8>,
}

impl TaggedEvent {
    /// The data as text, without trailing NULs.
    pub fn text(&self) -> String {
        text(&self.data)
    }
}

/// UEFI_GPT_DATA (PFP 10.4.8): the GPT header and the partitions in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptEvent {
    /// The disk GUID from the header.
    pub disk_guid: Guid,
    /// The partitions, in the order logged.
    pub partitions: Vec<GptPartition>,
}

/// One EFI_PARTITION_ENTRY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptPartition {
    /// PartitionTypeGUID.
    pub type_guid: Guid,
    /// UniquePartitionGUID.
    pub unique_guid: Guid,
    /// StartingLBA.
    pub start_lba: u64,
    /// EndingLBA.
    pub end_lba: u64,
    /// Attributes.
    pub attributes: u64,
    /// PartitionName.
    pub name: String,
}

impl Event {
    /// Decode the data by the event's type. Types not decoded here are
    /// [`Decoded::Raw`]; malformed data of a decoded type is an error.
    pub fn decode(&self) -> Result<Decoded, Error> {
        let data = self.data.as_slice();
        let decoded = match self.event_type {
            EventType::NO_ACTION => Decoded::NoAction(no_action(data)?),
            EventType::POST_CODE => Decoded::PostCode(post_code(data)),
            EventType::EFI_PLATFORM_FIRMWARE_BLOB => Decoded::FirmwareBlob(blob(data)?),
            EventType::EFI_PLATFORM_FIRMWARE_BLOB2 => Decoded::FirmwareBlob(blob2(data)?),
            EventType::S_CRTM_VERSION => Decoded::CrtmVersion(crtm_version(data)),
            EventType::EFI_BOOT_SERVICES_APPLICATION
            | EventType::EFI_BOOT_SERVICES_DRIVER
            | EventType::EFI_RUNTIME_SERVICES_DRIVER => Decoded::Image(image_load(data)?),
            EventType::EFI_VARIABLE_DRIVER_CONFIG
            | EventType::EFI_VARIABLE_BOOT
            | EventType::EFI_VARIABLE_BOOT2
            | EventType::EFI_VARIABLE_AUTHORITY => Decoded::Variable(variable(data)?),
            EventType::SEPARATOR => Decoded::Separator(match data {
                [0, 0, 0, 0] => Separator::Normal,
                [1, 0, 0, 0] => Separator::Error,
                other => Separator::Other(other.to_vec()),
            }),
            EventType::ACTION | EventType::EFI_ACTION => Decoded::Action(text(data)),
            EventType::EVENT_TAG => Decoded::Tagged(tagged(data)?),
            EventType::IPL => Decoded::Ipl(text(data)),
            EventType::EFI_GPT_EVENT | EventType::EFI_GPT_EVENT2 => Decoded::Gpt(gpt(data)?),
            _ => Decoded::Raw(data.to_vec()),
        };
        Ok(decoded)
    }
}

/// Errors name the event by its offset in the log.
fn reader<'a>(structure: &'static str, data: &'a [u8]) -> Reader<'a> {
    Reader::new(structure, data)
}

fn no_action(data: &[u8]) -> Result<NoAction, Error> {
    if let Some(spec) = SpecId::parse(data)? {
        return Ok(NoAction::SpecId(spec));
    }
    Ok(match data.strip_prefix(b"StartupLocality\0") {
        Some([locality]) => NoAction::StartupLocality(*locality),
        _ => NoAction::Other(data.to_vec()),
    })
}

/// EV_POST_CODE data is a blob descriptor in UEFI firmware and a string
/// otherwise (PFP 10.4.2); printable text wins, then the 16-byte blob.
fn post_code(data: &[u8]) -> PostCode {
    let printable = |b: &u8| b.is_ascii_graphic() || *b == b' ' || *b == 0;
    if !data.is_empty() && data.iter().all(printable) {
        return PostCode::Text(text(data));
    }
    match blob(data) {
        Ok(b) => PostCode::Blob(b),
        Err(_) => PostCode::Text(text(data)),
    }
}

fn blob(data: &[u8]) -> Result<FirmwareBlob, Error> {
    let mut r = reader("UEFI_PLATFORM_FIRMWARE_BLOB", data);
    let base = r.u64_le("BlobBase")?;
    let length = r.u64_le("BlobLength")?;
    r.finish()?;
    Ok(FirmwareBlob {
        description: None,
        base,
        length,
    })
}

fn blob2(data: &[u8]) -> Result<FirmwareBlob, Error> {
    let mut r = reader("UEFI_PLATFORM_FIRMWARE_BLOB2", data);
    let size = r.u8("BlobDescriptionSize")?;
    let description = text(r.take(usize::from(size), "BlobDescription")?);
    let base = r.u64_le("BlobBase")?;
    let length = r.u64_le("BlobLength")?;
    r.finish()?;
    Ok(FirmwareBlob {
        description: Some(description),
        base,
        length,
    })
}

/// Text when the data is printable ASCII in UCS-2, as firmware writes its
/// version; a GUID or other binary that merely happens to be valid UTF-16
/// (the Arch workstation's 16 bytes) stays bytes.
fn crtm_version(data: &[u8]) -> CrtmVersion {
    match utf16(data) {
        Some(s) if s.chars().all(|c| c.is_ascii_graphic() || c == ' ') => CrtmVersion::Text(s),
        _ => CrtmVersion::Bytes(data.to_vec()),
    }
}

/// UEFI_IMAGE_LOAD_EVENT: ImageLocationInMemory is a 64-bit
/// EFI_PHYSICAL_ADDRESS, the other three fields are UINTN. The log's
/// uintnSize is not at hand here (and a SHA-1 log has none), so the layout
/// is the one whose LengthOfDevicePath accounts for exactly the bytes that
/// follow: 64-bit first, as on every x86-64 and AArch64 firmware.
fn image_load(data: &[u8]) -> Result<ImageLoad, Error> {
    for wide in [true, false] {
        let mut r = reader("UEFI_IMAGE_LOAD_EVENT", data);
        let uintn = |r: &mut Reader<'_>, what| {
            if wide {
                r.u64_le(what)
            } else {
                r.u32_le(what).map(u64::from)
            }
        };
        let Ok(location) = r.u64_le("ImageLocationInMemory") else {
            continue;
        };
        let (Ok(length), Ok(link_time_address), Ok(path_len)) = (
            uintn(&mut r, "ImageLengthInMemory"),
            uintn(&mut r, "ImageLinkTimeAddress"),
            uintn(&mut r, "LengthOfDevicePath"),
        ) else {
            continue;
        };
        if u64::try_from(r.remaining()).ok() != Some(path_len) {
            continue;
        }
        let device_path = DevicePath::parse(r.take(r.remaining(), "DevicePath")?)?;
        return Ok(ImageLoad {
            location,
            length,
            link_time_address,
            device_path,
        });
    }
    Err(Error::Tpm {
        structure: "UEFI_IMAGE_LOAD_EVENT",
        offset: 0,
        reason: format!(
            "LengthOfDevicePath does not match the {} bytes of the event in either UINTN size",
            data.len()
        ),
    })
}

fn variable(data: &[u8]) -> Result<Variable, Error> {
    let mut r = reader("UEFI_VARIABLE_DATA", data);
    let guid = Guid::read(&mut r, "VariableName")?;
    let name_len = r.u64_le("UnicodeNameLength")?;
    let data_len = r.u64_le("VariableDataLength")?;
    let name_bytes = usize::try_from(name_len)
        .ok()
        .and_then(|n| n.checked_mul(2))
        .ok_or_else(|| r.error(format!("UnicodeNameLength {name_len} is too large")))?;
    let name_raw = r.take(name_bytes, "UnicodeName")?;
    let name = utf16(name_raw).ok_or_else(|| r.error("UnicodeName is not UTF-16"))?;
    let data_len = usize::try_from(data_len)
        .map_err(|_| r.error(format!("VariableDataLength {data_len} is too large")))?;
    let value = r.take(data_len, "VariableData")?.to_vec();
    r.finish()?;
    Ok(Variable {
        guid,
        name,
        data: value,
    })
}

fn tagged(data: &[u8]) -> Result<TaggedEvent, Error> {
    let mut r = reader("TCG_PCClientTaggedEvent", data);
    let id = r.u32_le("taggedEventID")?;
    let size = r.u32_le("taggedEventDataSize")?;
    let size = usize::try_from(size)
        .map_err(|_| r.error(format!("taggedEventDataSize {size} is too large")))?;
    let data = r.take(size, "taggedEventData")?.to_vec();
    r.finish()?;
    Ok(TaggedEvent { id, data })
}

/// UEFI_GPT_DATA: the 92-byte EFI_PARTITION_TABLE_HEADER (UEFI 2.10 Table
/// 5.5), a UINTN
/// NumberOfPartitions (sized like the image event's, see [`image_load`]),
/// then that many entries of the header's SizeOfPartitionEntry.
fn gpt(data: &[u8]) -> Result<GptEvent, Error> {
    /// UEFI 2.10 5.3.3: at least 128 bytes per entry.
    const MIN_ENTRY: usize = 128;
    let mut r = reader("UEFI_GPT_DATA", data);
    let signature = r.take(8, "Signature")?;
    if signature != b"EFI PART" {
        return Err(r.error("GPT header signature is not \"EFI PART\""));
    }
    r.take(48, "header fields")?;
    let disk_guid = Guid::read(&mut r, "DiskGUID")?;
    r.take(12, "PartitionEntryLBA, NumberOfPartitionEntries")?;
    let entry_size = r.u32_le("SizeOfPartitionEntry")?;
    r.u32_le("PartitionEntryArrayCRC32")?;
    let entry_size = usize::try_from(entry_size)
        .ok()
        .filter(|&n| n >= MIN_ENTRY)
        .ok_or_else(|| r.error(format!("SizeOfPartitionEntry {entry_size} < {MIN_ENTRY}")))?;

    let after_header = r.clone();
    for uintn in [8usize, 4] {
        let mut r = after_header.clone();
        let count = match uintn {
            8 => r.u64_le("NumberOfPartitions"),
            _ => r.u32_le("NumberOfPartitions").map(u64::from),
        };
        let Ok(count) = count else { continue };
        let fits = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(entry_size))
            .is_some_and(|total| total == r.remaining());
        if !fits {
            continue;
        }
        let mut partitions = Vec::new();
        while !r.is_empty() {
            let entry = r.take(entry_size, "EFI_PARTITION_ENTRY")?;
            let mut e = reader("EFI_PARTITION_ENTRY", entry);
            let type_guid = Guid::read(&mut e, "PartitionTypeGUID")?;
            let unique_guid = Guid::read(&mut e, "UniquePartitionGUID")?;
            let start_lba = e.u64_le("StartingLBA")?;
            let end_lba = e.u64_le("EndingLBA")?;
            let attributes = e.u64_le("Attributes")?;
            let name = utf16(e.take(72, "PartitionName")?)
                .ok_or_else(|| e.error("PartitionName is not UTF-16"))?;
            partitions.push(GptPartition {
                type_guid,
                unique_guid,
                start_lba,
                end_lba,
                attributes,
                name,
            });
        }
        return Ok(GptEvent {
            disk_guid,
            partitions,
        });
    }
    Err(after_header.error(format!(
        "NumberOfPartitions does not account for the {} bytes after the header",
        after_header.remaining()
    )))
}

/// Text from event data: UTF-16LE when every second byte is zero (how
/// firmware and systemd write ASCII in UCS-2), else UTF-8; trailing NULs
/// removed, invalid sequences replaced (the digest, not this text, is what
/// an appraisal trusts).
fn text(data: &[u8]) -> String {
    let looks_utf16 =
        data.len() >= 2 && data.len() % 2 == 0 && data.iter().skip(1).step_by(2).all(|&b| b == 0);
    if let Some(s) = utf16(data).filter(|_| looks_utf16) {
        return s;
    }
    String::from_utf8_lossy(data)
        .trim_end_matches('\0')
        .to_owned()
}

/// UTF-16LE without trailing NULs; `None` for an odd length or unpaired
/// surrogates.
fn utf16(data: &[u8]) -> Option<String> {
    if data.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| match c {
            [a, b] => Some(u16::from_le_bytes([*a, *b])),
            _ => None,
        })
        .collect::<Option<Vec<u16>>>()?;
    let end = units
        .iter()
        .rposition(|&u| u != 0)
        .map_or(0, |i| i.saturating_add(1));
    String::from_utf16(units.get(..end)?).ok()
}

/// A UEFI device path (UEFI 2.10, section 10), decoded node by node. Its
/// `Display` is the text form of UEFI 10.6 ("PciRoot(0x0)/Pci(0x1,0x1)/...").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePath {
    /// The nodes, without the end-of-path node; an end-of-instance node
    /// separates instances.
    pub nodes: Vec<DevicePathNode>,
}

/// One device-path node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DevicePathNode {
    /// Hardware, PCI (1, 1): `Pci(device,function)`.
    Pci {
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
    },
    /// Hardware, memory mapped (1, 3): `MemoryMapped(type,start,end)`.
    MemoryMapped {
        /// EFI_MEMORY_TYPE.
        memory_type: u32,
        /// First address.
        start: u64,
        /// Last address.
        end: u64,
    },
    /// A vendor node (hardware 1/4, messaging 3/10, media 4/3):
    /// `VenHw(guid,data)`, `VenMsg`, `VenMedia`.
    Vendor {
        /// The node's type (1, 3 or 4).
        node_type: u8,
        /// The vendor GUID.
        guid: Guid,
        /// Vendor-defined data.
        data: Vec<u8>,
    },
    /// ACPI (2, 1): `PciRoot(uid)`, `PcieRoot(uid)` or `Acpi(hid,uid)`.
    Acpi {
        /// _HID, a compressed EISA id.
        hid: u32,
        /// _UID.
        uid: u32,
    },
    /// Expanded ACPI (2, 2):
    /// `AcpiEx(hid,cid,uid,hidstr,cidstr,uidstr)` (Hyper-V's VMBus root).
    AcpiEx {
        /// _HID, a compressed EISA id.
        hid: u32,
        /// _UID.
        uid: u32,
        /// _CID, a compressed EISA id.
        cid: u32,
        /// _HIDSTR.
        hid_str: String,
        /// _UIDSTR.
        uid_str: String,
        /// _CIDSTR.
        cid_str: String,
    },
    /// Messaging, SCSI (3, 2): `Scsi(target,lun)`.
    Scsi {
        /// Target id.
        target: u16,
        /// Logical unit.
        lun: u16,
    },
    /// Messaging, SATA (3, 18): `Sata(port,multiplier,lun)`.
    Sata {
        /// HBA port.
        port: u16,
        /// Port multiplier port.
        multiplier: u16,
        /// Logical unit.
        lun: u16,
    },
    /// Messaging, NVMe namespace (3, 23): `NVMe(nsid,eui64)`.
    Nvme {
        /// Namespace id.
        namespace: u32,
        /// IEEE EUI-64, as stored.
        eui64: [u8; 8],
    },
    /// Messaging, URI (3, 24): `Uri(uri)`.
    Uri(String),
    /// Media, hard drive (4, 1): `HD(n,GPT,guid,start,size)`.
    HardDrive {
        /// Partition number (1-based; 0 is the whole disk).
        partition: u32,
        /// First LBA.
        start: u64,
        /// Size in blocks.
        size: u64,
        /// Partition signature: a GUID (GPT) or 4 bytes (MBR) padded.
        signature: [u8; 16],
        /// 1 MBR, 2 GPT.
        format: u8,
        /// 0 none, 1 MBR signature, 2 GUID.
        signature_type: u8,
    },
    /// Media, file path (4, 4): the path, as written.
    FilePath(String),
    /// Media, PIWG firmware file (4, 6): `FvFile(guid)`.
    FvFile(Guid),
    /// Media, PIWG firmware volume (4, 7): `Fv(guid)`.
    Fv(Guid),
    /// Media, relative offset range (4, 8): `Offset(start,end)`.
    Offset {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// End of this instance; another follows (printed as `,`).
    EndInstance,
    /// A node not decoded here, or one whose size does not fit its type:
    /// `Path(type,subtype,data)`.
    Other {
        /// Node type.
        node_type: u8,
        /// Node subtype.
        subtype: u8,
        /// Its data after the 4-byte header.
        data: Vec<u8>,
    },
}

impl DevicePath {
    /// Parse a device path: nodes up to the end-of-path node (7F FF), which
    /// must end the data. A path without one (some firmware's memory-mapped
    /// paths) ends with the data.
    pub fn parse(bytes: &[u8]) -> Result<DevicePath, Error> {
        let mut r = Reader::new("device path", bytes);
        let mut nodes = Vec::new();
        while !r.is_empty() {
            if nodes.len() >= MAX_DEVICE_PATH_NODES {
                return Err(r.error(format!("more than {MAX_DEVICE_PATH_NODES} nodes")));
            }
            let node_type = r.u8("Type")?;
            let subtype = r.u8("SubType")?;
            let len = usize::from(r.u16_le("Length")?);
            let body_len = len
                .checked_sub(4)
                .ok_or_else(|| r.error(format!("node length {len} is below its 4-byte header")))?;
            let body = r.take(body_len, "node data")?;
            match (node_type, subtype) {
                (0x7F, 0xFF) => {
                    r.finish()?;
                    break;
                }
                (0x7F, 0x01) => nodes.push(DevicePathNode::EndInstance),
                _ => nodes.push(node(node_type, subtype, body)),
            }
        }
        Ok(DevicePath { nodes })
    }

    /// The last file-path node, if any: the file a boot option loads.
    pub fn file_path(&self) -> Option<&str> {
        self.nodes.iter().rev().find_map(|n| match n {
            DevicePathNode::FilePath(p) => Some(p.as_str()),
            _ => None,
        })
    }
}

/// A node from its type, subtype and data; a known node whose data does not
/// have its size is kept as [`DevicePathNode::Other`].
fn node(node_type: u8, subtype: u8, body: &[u8]) -> DevicePathNode {
    let mut r = Reader::new("device path node", body);
    let known = match (node_type, subtype) {
        (1, 1) => fixed(&mut r, |r| {
            let function = r.u8("Function")?;
            let device = r.u8("Device")?;
            Ok(DevicePathNode::Pci { device, function })
        }),
        (1, 3) => fixed(&mut r, |r| {
            Ok(DevicePathNode::MemoryMapped {
                memory_type: r.u32_le("MemoryType")?,
                start: r.u64_le("StartingAddress")?,
                end: r.u64_le("EndingAddress")?,
            })
        }),
        (1, 4) | (3, 10) | (4, 3) => {
            Guid::read(&mut r, "Vendor GUID")
                .ok()
                .map(|guid| DevicePathNode::Vendor {
                    node_type,
                    guid,
                    data: r
                        .take(r.remaining(), "vendor data")
                        .unwrap_or_default()
                        .to_vec(),
                })
        }
        (2, 1) => fixed(&mut r, |r| {
            Ok(DevicePathNode::Acpi {
                hid: r.u32_le("HID")?,
                uid: r.u32_le("UID")?,
            })
        }),
        (2, 2) => fixed(&mut r, |r| {
            let hid = r.u32_le("HID")?;
            let uid = r.u32_le("UID")?;
            let cid = r.u32_le("CID")?;
            let mut strings = r.take(r.remaining(), "strings")?.split(|&b| b == 0);
            let mut next = || {
                strings
                    .next()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default()
            };
            let (hid_str, uid_str, cid_str) = (next(), next(), next());
            Ok(DevicePathNode::AcpiEx {
                hid,
                uid,
                cid,
                hid_str,
                uid_str,
                cid_str,
            })
        }),
        (3, 2) => fixed(&mut r, |r| {
            Ok(DevicePathNode::Scsi {
                target: r.u16_le("TargetID")?,
                lun: r.u16_le("LUN")?,
            })
        }),
        (3, 18) => fixed(&mut r, |r| {
            Ok(DevicePathNode::Sata {
                port: r.u16_le("HBAPortNumber")?,
                multiplier: r.u16_le("PortMultiplierPortNumber")?,
                lun: r.u16_le("LUN")?,
            })
        }),
        (3, 23) => fixed(&mut r, |r| {
            Ok(DevicePathNode::Nvme {
                namespace: r.u32_le("NamespaceIdentifier")?,
                eui64: r.array("IEEEExtendedUniqueIdentifier")?,
            })
        }),
        (3, 24) => core::str::from_utf8(body)
            .ok()
            .map(|s| DevicePathNode::Uri(s.to_owned())),
        (4, 1) => fixed(&mut r, |r| {
            Ok(DevicePathNode::HardDrive {
                partition: r.u32_le("PartitionNumber")?,
                start: r.u64_le("PartitionStart")?,
                size: r.u64_le("PartitionSize")?,
                signature: r.array("PartitionSignature")?,
                format: r.u8("PartitionFormat")?,
                signature_type: r.u8("SignatureType")?,
            })
        }),
        (4, 4) => utf16(body).map(DevicePathNode::FilePath),
        (4, 6) => fixed(&mut r, |r| {
            Guid::read(r, "FvFile").map(DevicePathNode::FvFile)
        }),
        (4, 7) => fixed(&mut r, |r| Guid::read(r, "Fv").map(DevicePathNode::Fv)),
        (4, 8) => fixed(&mut r, |r| {
            r.u32_le("Reserved")?;
            Ok(DevicePathNode::Offset {
                start: r.u64_le("StartingOffset")?,
                end: r.u64_le("EndingOffset")?,
            })
        }),
        _ => None,
    };
    known.unwrap_or_else(|| DevicePathNode::Other {
        node_type,
        subtype,
        data: body.to_vec(),
    })
}

/// A fixed-size node: `read` must consume the data exactly.
fn fixed(
    r: &mut Reader<'_>,
    read: impl FnOnce(&mut Reader<'_>) -> Result<DevicePathNode, Error>,
) -> Option<DevicePathNode> {
    let node = read(r).ok()?;
    r.is_empty().then_some(node)
}

impl fmt::Display for DevicePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for node in &self.nodes {
            if *node == DevicePathNode::EndInstance {
                f.write_str(",")?;
                first = true;
                continue;
            }
            if !first {
                f.write_str("/")?;
            }
            first = false;
            write!(f, "{node}")?;
        }
        Ok(())
    }
}

/// The compressed EISA id of "PNP" (UEFI 2.10, 10.3.3, EISA_PNP_ID).
const PNP_EISA: u32 = 0x41D0;

impl fmt::Display for DevicePathNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevicePathNode::Pci { device, function } => write!(f, "Pci({device:#X},{function:#X})"),
            DevicePathNode::MemoryMapped {
                memory_type,
                start,
                end,
            } => write!(f, "MemoryMapped({memory_type:#X},{start:#X},{end:#X})"),
            DevicePathNode::Vendor {
                node_type,
                guid,
                data,
            } => {
                let kind = match node_type {
                    1 => "VenHw",
                    3 => "VenMsg",
                    _ => "VenMedia",
                };
                write!(f, "{kind}({guid}")?;
                if !data.is_empty() {
                    f.write_str(",")?;
                    hex(f, data)?;
                }
                f.write_str(")")
            }
            DevicePathNode::Acpi { hid, uid } if hid & 0xFFFF == PNP_EISA => match hid >> 16 {
                0x0A03 => write!(f, "PciRoot({uid:#X})"),
                0x0A08 => write!(f, "PcieRoot({uid:#X})"),
                product => write!(f, "Acpi(PNP{product:04X},{uid:#X})"),
            },
            DevicePathNode::Acpi { hid, uid } => write!(f, "Acpi({},{uid:#X})", Eisa(*hid)),
            DevicePathNode::AcpiEx {
                hid,
                uid,
                cid,
                hid_str,
                uid_str,
                cid_str,
            } => write!(
                f,
                "AcpiEx({},{},{uid:#X},{hid_str},{cid_str},{uid_str})",
                Eisa(*hid),
                Eisa(*cid)
            ),
            DevicePathNode::Scsi { target, lun } => write!(f, "Scsi({target:#X},{lun:#X})"),
            DevicePathNode::Sata {
                port,
                multiplier,
                lun,
            } => write!(f, "Sata({port:#X},{multiplier:#X},{lun:#X})"),
            DevicePathNode::Nvme { namespace, eui64 } => {
                write!(f, "NVMe({namespace:#X},")?;
                // UEFI 10.6.1.6 prints the EUI-64 most significant byte
                // first; it is stored least significant first.
                for (i, b) in eui64.iter().rev().enumerate() {
                    if i > 0 {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02X}")?;
                }
                f.write_str(")")
            }
            DevicePathNode::Uri(uri) => write!(f, "Uri({uri})"),
            DevicePathNode::HardDrive {
                partition,
                start,
                size,
                signature,
                signature_type,
                ..
            } => match signature_type {
                1 => {
                    let [a, b, c, d, ..] = *signature;
                    let mbr = u32::from_le_bytes([a, b, c, d]);
                    write!(f, "HD({partition},MBR,{mbr:#010X},{start:#X},{size:#X})")
                }
                2 => write!(
                    f,
                    "HD({partition},GPT,{},{start:#X},{size:#X})",
                    Guid(*signature)
                ),
                other => write!(f, "HD({partition},{other},0,{start:#X},{size:#X})"),
            },
            DevicePathNode::FilePath(path) => f.write_str(path),
            DevicePathNode::FvFile(guid) => write!(f, "FvFile({guid})"),
            DevicePathNode::Fv(guid) => write!(f, "Fv({guid})"),
            DevicePathNode::Offset { start, end } => write!(f, "Offset({start:#X},{end:#X})"),
            DevicePathNode::EndInstance => f.write_str(","),
            DevicePathNode::Other {
                node_type,
                subtype,
                data,
            } => {
                write!(f, "Path({node_type},{subtype}")?;
                if !data.is_empty() {
                    f.write_str(",")?;
                    hex(f, data)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A compressed EISA id as text: three 5-bit letters ('A' is 1) in the low
/// 16 bits, the product number in the high 16 (UEFI 10.3.3; "PNP0A03").
struct Eisa(u32);

impl fmt::Display for Eisa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letter = |shift: u32| {
            let bits = u8::try_from(self.0.wrapping_shr(shift) & 0x1F).unwrap_or(0);
            char::from(b'@'.wrapping_add(bits))
        };
        write!(
            f,
            "{}{}{}{:04X}",
            letter(10),
            letter(5),
            letter(0),
            self.0.wrapping_shr(16)
        )
    }
}

fn hex(f: &mut fmt::Formatter<'_>, data: &[u8]) -> fmt::Result {
    data.iter().try_for_each(|b| write!(f, "{b:02X}"))
}

#[cfg(test)]
// Test builders: their sizes are small constants.
#[allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::type_complexity
)]
mod tests {
    use super::*;

    fn event(event_type: EventType, data: &[u8]) -> Event {
        Event {
            index: 0,
            offset: 0,
            pcr: 0,
            event_type,
            digests: Vec::new(),
            data: data.to_vec(),
        }
    }

    fn node(t: u8, s: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![t, s];
        out.extend_from_slice(&(body.len() as u16 + 4).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn device_paths_print_as_uefi_text() {
        let guid = Guid::GLOBAL_VARIABLE;
        let mut path = node(2, 1, &[0xD0, 0x41, 0x03, 0x0A, 0, 0, 0, 0]);
        path.extend(node(1, 1, &[1, 0x1F]));
        let mut hd = 1u32.to_le_bytes().to_vec();
        hd.extend_from_slice(&0x800u64.to_le_bytes());
        hd.extend_from_slice(&0x10_0000u64.to_le_bytes());
        hd.extend_from_slice(&guid.0);
        hd.extend_from_slice(&[2, 2]);
        path.extend(node(4, 1, &hd));
        let file: Vec<u8> = "\\EFI\\BOOT\\BOOTX64.EFI\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        path.extend(node(4, 4, &file));
        path.extend(node(9, 9, &[0xAB]));
        path.extend(node(0x7F, 0xFF, &[]));
        let parsed = DevicePath::parse(&path).unwrap();
        assert_eq!(
            parsed.to_string(),
            "PciRoot(0x0)/Pci(0x1F,0x1)/HD(1,GPT,8BE4DF61-93CA-11D2-AA0D-00E098032B8C,0x800,0x100000)/\\EFI\\BOOT\\BOOTX64.EFI/Path(9,9,AB)"
        );
        assert_eq!(parsed.file_path(), Some("\\EFI\\BOOT\\BOOTX64.EFI"));

        // Short node, node past the end, bytes after the end node.
        for bad in [
            vec![1, 1, 3, 0],
            vec![1, 1, 9, 0, 0],
            [node(0x7F, 0xFF, &[]), vec![0]].concat(),
        ] {
            assert!(DevicePath::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn separators_tags_and_unknown_types() {
        let sep = |d: &[u8]| event(EventType::SEPARATOR, d).decode().unwrap();
        assert_eq!(sep(&[0; 4]), Decoded::Separator(Separator::Normal));
        assert_eq!(sep(&[1, 0, 0, 0]), Decoded::Separator(Separator::Error));
        assert_eq!(
            sep(b"WBCL"),
            Decoded::Separator(Separator::Other(b"WBCL".to_vec()))
        );

        let mut tag = LINUX_INITRD_TAG.to_le_bytes().to_vec();
        tag.extend_from_slice(&13u32.to_le_bytes());
        tag.extend_from_slice(b"Linux initrd\0");
        let Decoded::Tagged(t) = event(EventType::EVENT_TAG, &tag).decode().unwrap() else {
            panic!("not a tagged event");
        };
        assert_eq!(
            (t.id, t.text().as_str()),
            (LINUX_INITRD_TAG, "Linux initrd")
        );
        tag.push(0);
        assert!(event(EventType::EVENT_TAG, &tag).decode().is_err());

        assert_eq!(
            event(EventType(0x1234), b"xy").decode().unwrap(),
            Decoded::Raw(b"xy".to_vec())
        );
    }

    #[test]
    fn image_load_in_both_uintn_sizes() {
        let path = node(0x7F, 0xFF, &[]);
        let mut wide = 0x1000u64.to_le_bytes().to_vec();
        wide.extend_from_slice(&0x2000u64.to_le_bytes());
        wide.extend_from_slice(&0u64.to_le_bytes());
        wide.extend_from_slice(&(path.len() as u64).to_le_bytes());
        wide.extend_from_slice(&path);
        let mut narrow = 0x1000u64.to_le_bytes().to_vec();
        narrow.extend_from_slice(&0x2000u32.to_le_bytes());
        narrow.extend_from_slice(&0u32.to_le_bytes());
        narrow.extend_from_slice(&(path.len() as u32).to_le_bytes());
        narrow.extend_from_slice(&path);
        for data in [wide, narrow] {
            let e = event(EventType::EFI_BOOT_SERVICES_APPLICATION, &data);
            let Decoded::Image(img) = e.decode().unwrap() else {
                panic!()
            };
            assert_eq!((img.location, img.length), (0x1000, 0x2000));
            assert!(img.device_path.nodes.is_empty());
        }
        let e = event(EventType::EFI_BOOT_SERVICES_APPLICATION, &[0; 33]);
        assert!(e.decode().is_err());
    }

    #[test]
    fn variables_and_text() {
        let mut v = Guid::GLOBAL_VARIABLE.0.to_vec();
        v.extend_from_slice(&10u64.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
        v.extend("SecureBoot".encode_utf16().flat_map(u16::to_le_bytes));
        v.push(1);
        let Decoded::Variable(var) = event(EventType::EFI_VARIABLE_DRIVER_CONFIG, &v)
            .decode()
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (var.guid, var.name.as_str(), var.data.as_slice()),
            (Guid::GLOBAL_VARIABLE, "SecureBoot", &[1u8][..])
        );
        v.pop();
        assert!(
            event(EventType::EFI_VARIABLE_DRIVER_CONFIG, &v)
                .decode()
                .is_err()
        );

        assert_eq!(
            text(b"Exit Boot Services Invocation"),
            "Exit Boot Services Invocation"
        );
        assert_eq!(text(&[b'a', 0, b'b', 0, 0, 0]), "ab");
        assert_eq!(crtm_version(&[0, 0]), CrtmVersion::Text(String::new()));
        assert_eq!(crtm_version(&[1, 2, 3]), CrtmVersion::Bytes(vec![1, 2, 3]));
        assert_eq!(
            crtm_version(&[0x1E, 0xFB]),
            CrtmVersion::Bytes(vec![0x1E, 0xFB])
        );
    }
}
