//! The TCG PC Client measured-boot event log, as Linux exports it in
//! `/sys/kernel/security/tpm0/binary_bios_measurements`.
//!
//! Two formats (TCG PC Client Platform Firmware Profile, PFP, version 1.05,
//! section 10 "Event Logging"):
//!
//! - crypto agile: a first event in the SHA-1 format (`TCG_PCClientPCREvent`,
//!   PFP 10.2.1) that holds the Spec ID event (`TCG_EfiSpecIDEvent`, PFP
//!   10.4.5.1, signature "Spec ID Event03"), which names every hash algorithm
//!   and its digest size; then `TCG_PCR_EVENT2` events (PFP 10.2.2), each with
//!   one digest per algorithm;
//! - SHA-1 only: `TCG_PCClientPCREvent` events throughout (TPM 1.2 firmware,
//!   and Windows' measured-boot logs of the time).
//!
//! Parsing is pure and bounded: every length is checked against the input,
//! and [`MAX_EVENTS`] and [`MAX_EVENT_DATA`] keep a hostile log from making
//! the parser allocate much more than the log's own size. Replaying digests
//! into PCRs needs hashing and lives in the verifier.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use core::fmt;

use super::{HashAlg, Reader};
use crate::Error;

/// Most events accepted in one log. Real firmware logs hold tens to a few
/// hundred events (the vectors: 21 to 159); Linux copies at most the ACPI
/// TPM2 table's log area or the EFI TCG2 final-events table, both sized by
/// firmware, and the smallest well-formed event is 32 bytes, so this is far
/// above any real log and keeps the event vector's overhead bounded.
pub const MAX_EVENTS: usize = 1 << 16;

/// Largest event data accepted. The largest real events are Secure Boot
/// variables (a full `dbx` is about 30 KiB); the PFP sets no limit.
pub const MAX_EVENT_DATA: usize = 1 << 20;

/// Most algorithms a Spec ID event may list. The TCG Algorithm Registry has
/// fewer than 16 hash algorithms; TPML_DIGEST_VALUES holds HASH_COUNT.
pub const MAX_ALGORITHMS: usize = 16;

/// Largest digest size accepted for an algorithm this crate does not know
/// (the largest known, SHA-512 and SHA3-512, are 64 bytes).
pub const MAX_DIGEST_SIZE: u16 = 256;

/// The highest PCR index plus one: a PC Client TPM has 24 PCRs (TCG PC Client
/// Platform TPM Profile, section 4.6.1).
pub const PCR_COUNT: u32 = 24;

/// The signature of the crypto-agile Spec ID event (PFP 10.4.5.1).
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// The signature of the StartupLocality event (PFP 10.4.5.3).
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// An event type (PFP 10.4.1, Table 9), kept as the raw `u32` so that types
/// this crate does not name survive parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(pub u32);

macro_rules! event_types {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl EventType {
            $($(#[$doc])* pub const $name: EventType = EventType($value);)*

            /// The PFP's name for this type (`EV_SEPARATOR`), if it has one.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(EventType::$name => Some(concat!("EV_", stringify!($name))),)*
                    _ => None,
                }
            }
        }
    };
}

event_types! {
    /// EV_PREBOOT_CERT (0x0, deprecated).
    PREBOOT_CERT = 0x0000_0000;
    /// EV_POST_CODE: BIOS/firmware code measured in PCR 0.
    POST_CODE = 0x0000_0001;
    /// EV_UNUSED.
    UNUSED = 0x0000_0002;
    /// EV_NO_ACTION: logged but not extended (Spec ID, StartupLocality).
    NO_ACTION = 0x0000_0003;
    /// EV_SEPARATOR: the end of pre-OS measurements in PCRs 0-7.
    SEPARATOR = 0x0000_0004;
    /// EV_ACTION: an ASCII action string.
    ACTION = 0x0000_0005;
    /// EV_EVENT_TAG: a TCG_PCClientTaggedEvent (the Linux EFI stub's initrd
    /// and load options).
    EVENT_TAG = 0x0000_0006;
    /// EV_S_CRTM_CONTENTS.
    S_CRTM_CONTENTS = 0x0000_0007;
    /// EV_S_CRTM_VERSION: the firmware version, UTF-16.
    S_CRTM_VERSION = 0x0000_0008;
    /// EV_CPU_MICROCODE.
    CPU_MICROCODE = 0x0000_0009;
    /// EV_PLATFORM_CONFIG_FLAGS.
    PLATFORM_CONFIG_FLAGS = 0x0000_000A;
    /// EV_TABLE_OF_DEVICES.
    TABLE_OF_DEVICES = 0x0000_000B;
    /// EV_COMPACT_HASH.
    COMPACT_HASH = 0x0000_000C;
    /// EV_IPL: boot loader measurements (GRUB, systemd-stub, shim).
    IPL = 0x0000_000D;
    /// EV_IPL_PARTITION_DATA.
    IPL_PARTITION_DATA = 0x0000_000E;
    /// EV_NONHOST_CODE.
    NONHOST_CODE = 0x0000_000F;
    /// EV_NONHOST_CONFIG.
    NONHOST_CONFIG = 0x0000_0010;
    /// EV_NONHOST_INFO.
    NONHOST_INFO = 0x0000_0011;
    /// EV_OMIT_BOOT_DEVICE_EVENTS.
    OMIT_BOOT_DEVICE_EVENTS = 0x0000_0012;
    /// EV_POST_CODE2.
    POST_CODE2 = 0x0000_0013;
    /// EV_EFI_VARIABLE_DRIVER_CONFIG: Secure Boot variables in PCR 7.
    EFI_VARIABLE_DRIVER_CONFIG = 0x8000_0001;
    /// EV_EFI_VARIABLE_BOOT: BootOrder and Boot#### in PCR 1.
    EFI_VARIABLE_BOOT = 0x8000_0002;
    /// EV_EFI_BOOT_SERVICES_APPLICATION: a UEFI application (PCR 4).
    EFI_BOOT_SERVICES_APPLICATION = 0x8000_0003;
    /// EV_EFI_BOOT_SERVICES_DRIVER.
    EFI_BOOT_SERVICES_DRIVER = 0x8000_0004;
    /// EV_EFI_RUNTIME_SERVICES_DRIVER.
    EFI_RUNTIME_SERVICES_DRIVER = 0x8000_0005;
    /// EV_EFI_GPT_EVENT: the GPT of the boot disk (PCR 5).
    EFI_GPT_EVENT = 0x8000_0006;
    /// EV_EFI_ACTION: an ASCII action ("Exit Boot Services Invocation").
    EFI_ACTION = 0x8000_0007;
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB: a firmware volume (PCR 0).
    EFI_PLATFORM_FIRMWARE_BLOB = 0x8000_0008;
    /// EV_EFI_HANDOFF_TABLES.
    EFI_HANDOFF_TABLES = 0x8000_0009;
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB2: a described firmware blob (PCR 0).
    EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000_000A;
    /// EV_EFI_HANDOFF_TABLES2.
    EFI_HANDOFF_TABLES2 = 0x8000_000B;
    /// EV_EFI_VARIABLE_BOOT2.
    EFI_VARIABLE_BOOT2 = 0x8000_000C;
    /// EV_EFI_GPT_EVENT2.
    EFI_GPT_EVENT2 = 0x8000_000D;
    /// EV_EFI_HCRTM_EVENT.
    EFI_HCRTM_EVENT = 0x8000_0010;
    /// EV_EFI_VARIABLE_AUTHORITY: the db entry that verified an image (PCR 7).
    EFI_VARIABLE_AUTHORITY = 0x8000_00E0;
    /// EV_EFI_SPDM_FIRMWARE_BLOB.
    EFI_SPDM_FIRMWARE_BLOB = 0x8000_00E1;
    /// EV_EFI_SPDM_FIRMWARE_CONFIG.
    EFI_SPDM_FIRMWARE_CONFIG = 0x8000_00E2;
    /// EV_EFI_SPDM_DEVICE_POLICY.
    EFI_SPDM_DEVICE_POLICY = 0x8000_00E3;
    /// EV_EFI_SPDM_DEVICE_AUTHORITY.
    EFI_SPDM_DEVICE_AUTHORITY = 0x8000_00E4;
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{:#010x}", self.0),
        }
    }
}

/// The format a log was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// SHA-1 `TCG_PCClientPCREvent` events only, no Spec ID event.
    Sha1,
    /// A Spec ID event, then crypto-agile `TCG_PCR_EVENT2` events.
    CryptoAgile,
}

/// One algorithm of a Spec ID event: its TPM2_ALG_ID and digest size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlgorithmSize {
    /// TPM2_ALG_ID.
    pub id: u16,
    /// Digest size in bytes, as the log declares it.
    pub size: u16,
}

/// The Spec ID event (`TCG_EfiSpecIDEvent`, PFP 10.4.5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecId {
    /// platformClass: 0 client, 1 server.
    pub platform_class: u32,
    /// specVersionMajor (2 for this format).
    pub spec_version_major: u8,
    /// specVersionMinor.
    pub spec_version_minor: u8,
    /// specErrata.
    pub spec_errata: u8,
    /// uintnSize: 1 for 32-bit UINTN, 2 for 64-bit.
    pub uintn_size: u8,
    /// Every algorithm, in the log's order, including ones this crate does
    /// not know (their digests are skipped by their declared size).
    pub algorithms: Vec<AlgorithmSize>,
    /// vendorInfo.
    pub vendor_info: Vec<u8>,
}

impl SpecId {
    /// Parse the Spec ID event's data; `Ok(None)` when it does not start
    /// with the "Spec ID Event03" signature.
    pub fn parse(data: &[u8]) -> Result<Option<SpecId>, Error> {
        if !data.starts_with(SPEC_ID_SIGNATURE) {
            return Ok(None);
        }
        let mut r = Reader::new("Spec ID event", data);
        r.take(SPEC_ID_SIGNATURE.len(), "signature")?;
        let platform_class = r.u32_le("platformClass")?;
        let spec_version_minor = r.u8("specVersionMinor")?;
        let spec_version_major = r.u8("specVersionMajor")?;
        let spec_errata = r.u8("specErrata")?;
        let uintn_size = r.u8("uintnSize")?;
        if spec_version_major != 2 {
            return Err(r.error(format!(
                "specVersionMajor {spec_version_major}, expected 2 for a crypto-agile log"
            )));
        }
        let count = r.u32_le("numberOfAlgorithms")?;
        let count = usize::try_from(count)
            .ok()
            .filter(|&n| (1..=MAX_ALGORITHMS).contains(&n))
            .ok_or_else(|| {
                r.error(format!(
                    "numberOfAlgorithms {count}, expected 1 to {MAX_ALGORITHMS}"
                ))
            })?;
        let mut algorithms: Vec<AlgorithmSize> = Vec::with_capacity(count);
        for _ in 0..count {
            let id = r.u16_le("algorithmId")?;
            let size = r.u16_le("digestSize")?;
            if algorithms.iter().any(|a| a.id == id) {
                return Err(r.error(format!("algorithm {id:#06x} listed twice")));
            }
            match HashAlg::from_id(id) {
                Some(alg) if usize::from(size) != alg.size() => {
                    return Err(r.error(format!(
                        "{alg} declared with digest size {size}, expected {}",
                        alg.size()
                    )));
                }
                None if size == 0 || size > MAX_DIGEST_SIZE => {
                    return Err(r.error(format!(
                        "algorithm {id:#06x} declared with digest size {size}, expected 1 to {MAX_DIGEST_SIZE}"
                    )));
                }
                _ => {}
            }
            algorithms.push(AlgorithmSize { id, size });
        }
        let vendor_size = r.u8("vendorInfoSize")?;
        let vendor_info = r.take(usize::from(vendor_size), "vendorInfo")?.to_vec();
        r.finish()?;
        Ok(Some(SpecId {
            platform_class,
            spec_version_major,
            spec_version_minor,
            spec_errata,
            uintn_size,
            algorithms,
            vendor_info,
        }))
    }

    fn digest_size(&self, id: u16) -> Option<usize> {
        self.algorithms
            .iter()
            .find(|a| a.id == id)
            .map(|a| usize::from(a.size))
    }
}

/// One event of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the log, from 0 (the Spec ID event, when there is one).
    pub index: usize,
    /// Byte offset of the event's header in the log.
    pub offset: usize,
    /// The PCR it was extended into (0 to 23).
    pub pcr: u32,
    /// Its type.
    pub event_type: EventType,
    /// One digest per known algorithm, in the log's order. Digests of
    /// algorithms this crate does not know are skipped.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    /// The event data (what the digest describes; often not what was hashed).
    pub data: Vec<u8>,
}

impl Event {
    /// The event as `TCG_PCR_EVENT2` (PFP 10.2.2): how a crypto-agile log
    /// holds every event after the Spec ID event.
    pub fn to_event2(&self) -> Vec<u8> {
        let u32le = |v: usize| u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes();
        let mut out = Vec::new();
        out.extend_from_slice(&self.pcr.to_le_bytes());
        out.extend_from_slice(&self.event_type.0.to_le_bytes());
        out.extend_from_slice(&u32le(self.digests.len()));
        for (alg, d) in &self.digests {
            out.extend_from_slice(&alg.id().to_le_bytes());
            out.extend_from_slice(d);
        }
        out.extend_from_slice(&u32le(self.data.len()));
        out.extend_from_slice(&self.data);
        out
    }

    /// The digest for `alg`, if the event has one.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }

    /// Whether this event is extended into its PCR: every type but
    /// EV_NO_ACTION (PFP 10.4.1).
    pub fn is_extended(&self) -> bool {
        self.event_type != EventType::NO_ACTION
    }
}

/// A parsed event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    format: LogFormat,
    spec_id: Option<SpecId>,
    banks: Vec<HashAlg>,
    events: Vec<Event>,
    startup_locality: Option<u8>,
}

impl EventLog {
    /// Parse a whole log. Every byte must belong to an event.
    pub fn parse(bytes: &[u8]) -> Result<EventLog, Error> {
        let mut r = Reader::new("event log", bytes);
        let mut events = Vec::new();

        // The first event is always in the SHA-1 format; it is the Spec ID
        // event of a crypto-agile log.
        let first = sha1_event(&mut r, 0)?;
        let spec_id = if first.pcr == 0 && first.event_type == EventType::NO_ACTION {
            SpecId::parse(&first.data).map_err(|e| at(e, first.offset))?
        } else {
            None
        };
        events.push(first);

        let (format, banks) = match &spec_id {
            None => (LogFormat::Sha1, vec![HashAlg::Sha1]),
            Some(spec) => {
                let banks: Vec<HashAlg> = spec
                    .algorithms
                    .iter()
                    .filter_map(|a| HashAlg::from_id(a.id))
                    .collect();
                // Nothing could be replayed or compared with a quote.
                if banks.is_empty() {
                    return Err(at(
                        Error::Tpm {
                            structure: "Spec ID event",
                            offset: 0,
                            reason:
                                "no algorithm this crate supports (sha1, sha256, sha384, sha512)"
                                    .into(),
                        },
                        0,
                    ));
                }
                (LogFormat::CryptoAgile, banks)
            }
        };

        while !r.is_empty() {
            let index = events.len();
            if index >= MAX_EVENTS {
                return Err(r.error(format!("more than {MAX_EVENTS} events")));
            }
            let event = match &spec_id {
                None => sha1_event(&mut r, index)?,
                Some(spec) => agile_event(&mut r, index, spec)?,
            };
            events.push(event);
        }

        let startup_locality = startup_locality(&events)?;
        Ok(EventLog {
            format,
            spec_id,
            banks,
            events,
            startup_locality,
        })
    }

    /// The log's format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// The Spec ID event of a crypto-agile log.
    pub fn spec_id(&self) -> Option<&SpecId> {
        self.spec_id.as_ref()
    }

    /// The PCR banks the log has digests for, in the log's order: the
    /// known algorithms of the Spec ID event, or SHA-1 for a SHA-1 log.
    pub fn banks(&self) -> &[HashAlg] {
        &self.banks
    }

    /// Every event, in order, including the Spec ID event and other
    /// EV_NO_ACTION events (which are not extended).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The locality TPM2_Startup ran at, from the StartupLocality
    /// EV_NO_ACTION event on PCR 0 (PFP 10.4.5.3), when the log has one.
    /// Locality 3 and 4 (H-CRTM) set PCR 0's initial value.
    pub fn startup_locality(&self) -> Option<u8> {
        self.startup_locality
    }
}

/// `e` with its offset moved by `base`, for a structure parsed from a slice
/// that starts at `base` in the log.
fn at(e: Error, base: usize) -> Error {
    match e {
        Error::Tpm {
            structure,
            offset,
            reason,
        } => Error::Tpm {
            structure,
            offset: offset.saturating_add(base),
            reason: format!("{reason} (in the event at byte {base})"),
        },
        other => other,
    }
}

fn pcr_index(r: &Reader<'_>, index: usize) -> Result<u32, Error> {
    let mut peek = r.clone();
    let pcr = peek.u32_le("pcrIndex")?;
    if pcr >= PCR_COUNT {
        return Err(r.error(format!(
            "event {index}: PCR index {pcr}, a PC Client TPM has {PCR_COUNT}"
        )));
    }
    Ok(pcr)
}

fn event_data(r: &mut Reader<'_>, index: usize) -> Result<Vec<u8>, Error> {
    let size = r.u32_le("eventSize")?;
    let size = usize::try_from(size)
        .ok()
        .filter(|&n| n <= MAX_EVENT_DATA)
        .ok_or_else(|| {
            r.error(format!(
                "event {index}: event data of {size} bytes exceeds {MAX_EVENT_DATA}"
            ))
        })?;
    Ok(r.take(size, "event data")?.to_vec())
}

/// `TCG_PCClientPCREvent` (PFP 10.2.1): pcrIndex, eventType, a SHA-1 digest,
/// eventDataSize, event.
fn sha1_event(r: &mut Reader<'_>, index: usize) -> Result<Event, Error> {
    let offset = r.position();
    let pcr = pcr_index(r, index)?;
    r.u32_le("pcrIndex")?;
    let event_type = EventType(r.u32_le("eventType")?);
    let digest = r.take(HashAlg::Sha1.size(), "SHA-1 digest")?.to_vec();
    let data = event_data(r, index)?;
    Ok(Event {
        index,
        offset,
        pcr,
        event_type,
        digests: vec![(HashAlg::Sha1, digest)],
        data,
    })
}

/// `TCG_PCR_EVENT2` (PFP 10.2.2): pcrIndex, eventType, TPML_DIGEST_VALUES
/// (little-endian here), eventSize, event. The PFP requires one digest per
/// algorithm of the Spec ID event; a missing or repeated one would make
/// that bank's replay meaningless, so both are refused.
fn agile_event(r: &mut Reader<'_>, index: usize, spec: &SpecId) -> Result<Event, Error> {
    let offset = r.position();
    let pcr = pcr_index(r, index)?;
    r.u32_le("pcrIndex")?;
    let event_type = EventType(r.u32_le("eventType")?);
    let count = r.u32_le("digests.count")?;
    if usize::try_from(count).ok() != Some(spec.algorithms.len()) {
        return Err(r.error(format!(
            "event {index}: {count} digests, the Spec ID event lists {} algorithms",
            spec.algorithms.len()
        )));
    }
    let mut seen: Vec<u16> = Vec::with_capacity(spec.algorithms.len());
    let mut digests = Vec::with_capacity(spec.algorithms.len());
    for _ in 0..count {
        let id = r.u16_le("hashAlg")?;
        let size = spec.digest_size(id).ok_or_else(|| {
            r.error(format!(
                "event {index}: digest of algorithm {id:#06x}, not in the Spec ID event"
            ))
        })?;
        if seen.contains(&id) {
            return Err(r.error(format!("event {index}: two digests of algorithm {id:#06x}")));
        }
        seen.push(id);
        let digest = r.take(size, "digest")?;
        if let Some(alg) = HashAlg::from_id(id) {
            digests.push((alg, digest.to_vec()));
        }
    }
    let data = event_data(r, index)?;
    Ok(Event {
        index,
        offset,
        pcr,
        event_type,
        digests,
        data,
    })
}

/// The StartupLocality event (PFP 10.4.5.3): EV_NO_ACTION on PCR 0, data
/// "StartupLocality\0" and one byte. Two of them would make PCR 0's
/// initial value ambiguous, so that is refused.
fn startup_locality(events: &[Event]) -> Result<Option<u8>, Error> {
    let mut found = None;
    for e in events {
        if e.pcr != 0
            || e.event_type != EventType::NO_ACTION
            || !e.data.starts_with(STARTUP_LOCALITY_SIGNATURE)
        {
            continue;
        }
        let locality = match e.data.strip_prefix(STARTUP_LOCALITY_SIGNATURE) {
            Some([locality]) => *locality,
            _ => {
                return Err(Error::Tpm {
                    structure: "event log",
                    offset: e.offset,
                    reason: format!(
                        "event {}: StartupLocality event of {} bytes, expected 17",
                        e.index,
                        e.data.len()
                    ),
                });
            }
        };
        if found.is_some() {
            return Err(Error::Tpm {
                structure: "event log",
                offset: e.offset,
                reason: format!("event {}: a second StartupLocality event", e.index),
            });
        }
        found = Some(locality);
    }
    Ok(found)
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

    /// A Spec ID event with these (id, size) pairs, wrapped in the SHA-1
    /// header.
    fn spec_id_event(algs: &[(u16, u16)]) -> Vec<u8> {
        let mut data = SPEC_ID_SIGNATURE.to_vec();
        data.extend_from_slice(&0u32.to_le_bytes()); // platformClass
        data.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintnSize
        data.extend_from_slice(&(algs.len() as u32).to_le_bytes());
        for (id, size) in algs {
            data.extend_from_slice(&id.to_le_bytes());
            data.extend_from_slice(&size.to_le_bytes());
        }
        data.push(0); // vendorInfoSize
        sha1(0, 3, &[0; 20], &data)
    }

    fn sha1(pcr: u32, ty: u32, digest: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = pcr.to_le_bytes().to_vec();
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(digest);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    fn agile(pcr: u32, ty: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) -> Vec<u8> {
        let mut out = pcr.to_le_bytes().to_vec();
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(digests.len() as u32).to_le_bytes());
        for (id, d) in digests {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(d);
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn unknown_algorithm_is_skipped_by_its_declared_size() {
        // Only unknown algorithms: nothing to replay, refused.
        let e = EventLog::parse(&spec_id_event(&[(0x0012, 32)])).unwrap_err();
        assert!(
            e.to_string().contains("no algorithm this crate supports"),
            "{e}"
        );
        // SM3_256 (0x0012) is not a HashAlg here; 7 is an invented size.
        let mut log = spec_id_event(&[(0x0012, 7), (0x000B, 32)]);
        log.extend(agile(
            4,
            4,
            &[(0x0012, vec![0xAA; 7]), (0x000B, vec![0xBB; 32])],
            &[0; 4],
        ));
        let log = EventLog::parse(&log).unwrap();
        assert_eq!(log.format(), LogFormat::CryptoAgile);
        assert_eq!(log.banks(), &[HashAlg::Sha256]);
        let e = &log.events()[1];
        assert_eq!(e.digests, vec![(HashAlg::Sha256, vec![0xBB; 32])]);
        assert_eq!(
            (e.pcr, e.event_type, e.data.as_slice()),
            (4, EventType::SEPARATOR, &[0u8; 4][..])
        );
    }

    #[test]
    fn missing_repeated_and_undeclared_digests_are_refused() {
        let head = spec_id_event(&[(0x0004, 20), (0x000B, 32)]);
        let cases: [(&[(u16, Vec<u8>)], &str); 3] = [
            (&[(0x0004, vec![0; 20])], "1 digests"),
            (
                &[(0x0004, vec![0; 20]), (0x0004, vec![0; 20])],
                "two digests",
            ),
            (
                &[(0x0004, vec![0; 20]), (0x000C, vec![0; 48])],
                "not in the Spec ID",
            ),
        ];
        for (digests, why) in cases {
            let mut log = head.clone();
            log.extend(agile(0, 4, digests, &[0; 4]));
            let e = EventLog::parse(&log).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn spec_id_refuses_wrong_known_sizes_and_duplicates() {
        for (algs, why) in [
            (&[(0x000B, 20)][..], "sha256 declared with digest size 20"),
            (&[(0x0004, 20), (0x0004, 20)][..], "listed twice"),
            (&[(0x0099, 0)][..], "digest size 0"),
            (&[][..], "numberOfAlgorithms 0"),
        ] {
            let e = EventLog::parse(&spec_id_event(algs))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn sha1_log_and_startup_locality() {
        let mut locality = STARTUP_LOCALITY_SIGNATURE.to_vec();
        locality.push(3);
        let mut log = sha1(0, 8, &[1; 20], b"v\0");
        log.extend(sha1(0, 3, &[0; 20], &locality));
        let parsed = EventLog::parse(&log).unwrap();
        assert_eq!(parsed.format(), LogFormat::Sha1);
        assert_eq!(parsed.banks(), &[HashAlg::Sha1]);
        assert_eq!(parsed.startup_locality(), Some(3));
        assert!(!parsed.events()[1].is_extended());

        // Twice, or with the wrong size: refused.
        let mut twice = log.clone();
        twice.extend(sha1(0, 3, &[0; 20], &locality));
        assert!(
            EventLog::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("second StartupLocality")
        );
        let mut long = sha1(0, 8, &[1; 20], b"v\0");
        long.extend(sha1(0, 3, &[0; 20], &[&locality[..], &[0]].concat()));
        assert!(
            EventLog::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("18 bytes")
        );
    }

    #[test]
    fn limits_and_bad_pcrs_are_refused_with_their_place() {
        let e = EventLog::parse(&sha1(24, 1, &[0; 20], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PCR index 24") && e.contains("byte 0"), "{e}");
        let mut huge = sha1(0, 1, &[0; 20], &[]);
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&(MAX_EVENT_DATA as u32 + 1).to_le_bytes());
        let e = EventLog::parse(&huge).unwrap_err().to_string();
        assert!(e.contains("exceeds"), "{e}");
        assert!(EventLog::parse(&[]).is_err());
        assert_eq!(
            EventType(0x8000_0003).to_string(),
            "EV_EFI_BOOT_SERVICES_APPLICATION"
        );
        assert_eq!(EventType(0x1234).to_string(), "0x00001234");
    }
}
