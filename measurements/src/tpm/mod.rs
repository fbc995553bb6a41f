//! Expected TPM measurements: the event digests a boot of given artifacts
//! produces, and a golden event log with those events put in.
//!
//! What is measured where (TCG PC Client PFP, and the code named in each
//! submodule):
//!
//! | boot path | PCR 4 (firmware, Authenticode) | PCR 9 (Linux EFI stub) | PCR 11 |
//! | --- | --- | --- | --- |
//! | `qemu-direct`: QEMU `-kernel` with OVMF | the kernel as QEMU patched it ([`qemu`]) | load options as OVMF builds them, initrd | - |
//! | `uki`: firmware boots a UKI | the UKI | not modelled | systemd-stub's sections ([`uki`]) |
//! | `disk`: shim, GRUB, kernel from disk | each boot application given, in order | GRUB 2.12's load options, initrd | - |
//!
//! With a golden log of a boot of the same firmware, [`substitute`] swaps
//! these events for the computed ones and writes a log whose replay gives
//! the expected PCRs; replaying is the verifier's (`provenix measure tpm`).

use std::path::PathBuf;

use provenix_firmware::tpm::{Event, EventLog, EventType, HashAlg};
use thiserror::Error;

pub mod pe;
pub mod qemu;
pub mod stub;
pub mod uki;

pub use pe::{PeFormat, PeImage, Section};
pub use qemu::{Machine, QemuVm};

/// Why expected TPM measurements could not be computed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
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
    /// The image ends before a header field.
    #[error("PE image: {field} at offset {offset:#x} lies beyond the end of the {size}-byte file")]
    PeTruncated {
        /// The field.
        field: &'static str,
        /// Its offset.
        offset: usize,
        /// Bytes in the file.
        size: usize,
    },
    /// No "PE\0\0" where the MS-DOS header points.
    #[error("PE image: no PE signature at offset {offset:#x} (found {found:02x?})")]
    PeSignature {
        /// Where it was looked for.
        offset: usize,
        /// What was there.
        found: Vec<u8>,
    },
    /// An optional header that is neither PE32 nor PE32+.
    #[error(
        "PE image: optional header magic {found:#x} at offset {offset:#x}; expected 0x10b (PE32) or 0x20b (PE32+)"
    )]
    PeMagic {
        /// Offset of the magic.
        offset: usize,
        /// The magic found.
        found: u16,
    },
    /// More data-directory entries than the format defines.
    #[error("PE image: NumberOfRvaAndSizes is {count}; the format defines 16")]
    PeDataDirectories {
        /// The count found.
        count: u32,
    },
    /// The optional header is too short for its own data directory.
    #[error("PE image: SizeOfOptionalHeader {size} is below the {needed} bytes its fields need")]
    PeOptionalHeaderSize {
        /// SizeOfOptionalHeader.
        size: u16,
        /// Bytes the declared fields need.
        needed: usize,
    },
    /// SizeOfHeaders is inconsistent with the headers or the file.
    #[error("PE image: SizeOfHeaders {size_of_headers:#x} is wrong: {reason}")]
    PeSizeOfHeaders {
        /// SizeOfHeaders.
        size_of_headers: usize,
        /// Why.
        reason: String,
    },
    /// A section's raw data lies outside the file.
    #[error(
        "PE image: section {index} ({name:?}) at {start:#x}, {size:#x} bytes, runs past the end of the {file_size}-byte file"
    )]
    PeSectionBounds {
        /// Index in the section table.
        index: usize,
        /// Its name.
        name: String,
        /// PointerToRawData.
        start: usize,
        /// SizeOfRawData.
        size: usize,
        /// Bytes in the file.
        file_size: usize,
    },
    /// The sections together hold more bytes than the file: some overlap.
    #[error(
        "PE image: section {index} ({name:?}) overlaps others: the sections hold more bytes than the file"
    )]
    PeSectionsOverlap {
        /// Index in the section table of the section that exceeded it.
        index: usize,
        /// Its name.
        name: String,
    },
    /// The certificate table is larger than what follows the sections.
    #[error(
        "PE image: certificate table of {size} bytes does not fit after the {hashed} bytes of headers and sections in a {file_size}-byte file"
    )]
    PeCertificateTable {
        /// The certificate table's Size.
        size: usize,
        /// Headers plus sections.
        hashed: usize,
        /// Bytes in the file.
        file_size: usize,
    },
    /// A kernel QEMU would refuse or that is not modelled.
    #[error("QEMU direct boot: {reason}")]
    QemuKernel {
        /// Why.
        reason: String,
    },
    /// A command line with a NUL: QEMU passes it as a C string.
    #[error("the kernel command line holds a NUL at byte {at}")]
    CmdlineNul {
        /// Byte offset of the first NUL.
        at: usize,
    },
    /// A UKI that is not modelled.
    #[error("UKI: {reason}")]
    Uki {
        /// Why.
        reason: String,
    },
    /// The golden log does not have the events to substitute.
    #[error("golden log: {reason}")]
    Golden {
        /// Why.
        reason: String,
    },
}

/// ring's algorithm for a TPM bank.
pub(crate) fn ring_alg(alg: HashAlg) -> &'static ring::digest::Algorithm {
    match alg {
        HashAlg::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => &ring::digest::SHA256,
        HashAlg::Sha384 => &ring::digest::SHA384,
        HashAlg::Sha512 => &ring::digest::SHA512,
    }
}

fn digests(banks: &[HashAlg], data: &[u8]) -> Vec<(HashAlg, Vec<u8>)> {
    banks
        .iter()
        .map(|&alg| {
            (
                alg,
                ring::digest::digest(ring_alg(alg), data).as_ref().to_vec(),
            )
        })
        .collect()
}

/// A boot path and its artifacts.
#[derive(Clone, Debug)]
pub enum Boot<'a> {
    /// QEMU direct kernel boot (`-kernel -initrd -append`) with OVMF.
    QemuDirect {
        /// The VM's machine type and memory.
        vm: QemuVm,
        /// The kernel file (`-kernel`).
        kernel: &'a [u8],
        /// The initrd (`-initrd`).
        initrd: Option<&'a [u8]>,
        /// The command line (`-append`), empty for none.
        cmdline: &'a [u8],
    },
    /// The firmware boots a unified kernel image through systemd-stub.
    Uki {
        /// The UKI.
        image: &'a [u8],
    },
    /// A disk boot: the firmware starts the first application (shim), each
    /// starts the next (GRUB, then the kernel, through GRUB 2.12's EFI
    /// loader).
    Disk {
        /// The boot applications measured into PCR 4, in load order, with
        /// names for people. Whether the kernel is one of them depends on
        /// the loader (with shim and GRUB 2.12 it is not).
        applications: Vec<(String, &'a [u8])>,
        /// GRUB's `linux` command line (path and arguments, as GRUB logs it
        /// in its `kernel_cmdline:` event), when the kernel is booted.
        cmdline: Option<&'a [u8]>,
        /// The initrd GRUB hands over through LoadFile2.
        initrd: Option<&'a [u8]>,
    },
}

impl Boot<'_> {
    /// The boot path's name: `qemu-direct`, `uki` or `disk`.
    pub fn path_name(&self) -> &'static str {
        match self {
            Boot::QemuDirect { .. } => "qemu-direct",
            Boot::Uki { .. } => "uki",
            Boot::Disk { .. } => "disk",
        }
    }
}

/// What an expected event measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The kernel, as the firmware loaded it.
    Kernel,
    /// A UKI.
    Uki,
    /// A boot application of a disk boot, by name.
    Application(String),
    /// The kernel's load options (the Linux EFI stub).
    LoadOptions,
    /// The initrd (the Linux EFI stub).
    Initrd,
    /// A UKI section's name (systemd-stub).
    UkiSectionName(&'static str),
    /// A UKI section's contents (systemd-stub).
    UkiSection(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Kernel => f.write_str("kernel"),
            Source::Uki => f.write_str("uki"),
            Source::Application(n) => write!(f, "application {n}"),
            Source::LoadOptions => f.write_str("load-options"),
            Source::Initrd => f.write_str("initrd"),
            Source::UkiSectionName(n) => write!(f, "uki-section-name {n}"),
            Source::UkiSection(n) => write!(f, "uki-section {n}"),
        }
    }
}

/// One event a boot logs, with its digest in every bank asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedEvent {
    /// The PCR.
    pub pcr: u32,
    /// The event type.
    pub event_type: EventType,
    /// What it measures.
    pub source: Source,
    /// The event data the log holds, where it is fixed (tagged events,
    /// UKI section names); `None` where it varies from boot to boot (an
    /// image's load address).
    pub data: Option<Vec<u8>>,
    /// One digest per bank.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
}

impl ExpectedEvent {
    /// The digest for `alg`, if computed.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }
}

/// The events a boot logs that come from its artifacts, in log order per
/// PCR, with digests in every bank of `banks`.
pub fn expected_events(boot: &Boot<'_>, banks: &[HashAlg]) -> Result<Vec<ExpectedEvent>, Error> {
    let application = |source: Source, bytes: &[u8]| -> Result<ExpectedEvent, Error> {
        let image = PeImage::parse(bytes)?;
        Ok(ExpectedEvent {
            pcr: 4,
            event_type: EventType::EFI_BOOT_SERVICES_APPLICATION,
            source,
            data: None,
            digests: banks.iter().map(|&a| (a, image.authenticode(a))).collect(),
        })
    };
    let stub = |load_options: Option<Vec<u8>>, initrd: Option<&[u8]>| {
        let mut out = Vec::new();
        if let Some(options) = load_options {
            out.push(ExpectedEvent {
                pcr: stub::PCR,
                event_type: EventType::EVENT_TAG,
                source: Source::LoadOptions,
                data: Some(stub::load_options_event_data()),
                digests: digests(banks, &options),
            });
        }
        if let Some(initrd) = initrd {
            out.push(ExpectedEvent {
                pcr: stub::PCR,
                event_type: EventType::EVENT_TAG,
                source: Source::Initrd,
                data: Some(stub::initrd_event_data()),
                digests: digests(banks, initrd),
            });
        }
        out
    };
    match boot {
        Boot::QemuDirect {
            vm,
            kernel,
            initrd,
            cmdline,
        } => {
            let options = stub::qemu_load_options(cmdline, initrd.is_some())?;
            let initrd_size = initrd.map(|i| u64::try_from(i.len()).unwrap_or(u64::MAX));
            let patched = qemu::patched_kernel(kernel, cmdline, initrd_size, *vm)?;
            let mut out = vec![application(Source::Kernel, &patched)?];
            out.extend(stub(options, *initrd));
            Ok(out)
        }
        Boot::Uki { image } => {
            let pe = PeImage::parse(image)?;
            let mut out = vec![
                application(Source::Uki, image)?,
                application(Source::Kernel, &uki::embedded_kernel(&pe)?)?,
            ];
            for section in uki::measured_sections(&pe)? {
                let data = Some(section.event_data());
                out.push(ExpectedEvent {
                    pcr: uki::PCR,
                    event_type: EventType::IPL,
                    source: Source::UkiSectionName(section.name),
                    data: data.clone(),
                    digests: digests(banks, &section.name_bytes()),
                });
                out.push(ExpectedEvent {
                    pcr: uki::PCR,
                    event_type: EventType::IPL,
                    source: Source::UkiSection(section.name),
                    data,
                    digests: digests(banks, &section.data),
                });
            }
            Ok(out)
        }
        Boot::Disk {
            applications,
            cmdline,
            initrd,
        } => {
            let mut out = Vec::new();
            for (name, bytes) in applications {
                out.push(application(Source::Application(name.clone()), bytes)?);
            }
            // GRUB 2.12's EFI loader: "BOOT_IMAGE=" and the command line in
            // UTF-16LE, without a NUL (checked against the GCE Ubuntu 24.04
            // log in ../shared/vectors/tpm).
            let options = cmdline.map(|c| {
                b"BOOT_IMAGE="
                    .iter()
                    .chain(c.iter())
                    .flat_map(|&b| u16::from(b).to_le_bytes())
                    .collect::<Vec<u8>>()
            });
            out.extend(stub(options, *initrd));
            Ok(out)
        }
    }
}

/// `golden` with the events of `expected` in place of the golden boot's:
/// the log (crypto-agile, as bytes) a boot of the expected artifacts on the
/// same firmware writes, so that its replay gives the expected PCRs.
///
/// - PCR 4 boot applications: the golden log's must be as many as the
///   expected ones, and are replaced in order;
/// - the Linux EFI stub's tagged events (PCR 9): replaced by tag; one the
///   golden boot lacks is added next to the other, one the expected boot
///   lacks is dropped;
/// - systemd-stub's PCR 11 events: all replaced.
///
/// Every other event is kept as it is. `expected` must have digests for
/// every bank of the golden log.
pub fn substitute(golden: &EventLog, expected: &[ExpectedEvent]) -> Result<Vec<u8>, Error> {
    let bad = |reason: String| Error::Golden { reason };
    let Some(spec) = golden
        .events()
        .first()
        .filter(|_| golden.spec_id().is_some())
    else {
        return Err(bad(
            "not a crypto-agile log (no Spec ID event); only those are supported".into(),
        ));
    };
    if let Some(spec_id) = golden.spec_id() {
        if let Some(a) = spec_id
            .algorithms
            .iter()
            .find(|a| HashAlg::from_id(a.id).is_none())
        {
            return Err(bad(format!(
                "it has digests of algorithm {:#06x}, which cannot be recomputed",
                a.id
            )));
        }
    }
    for &alg in golden.banks() {
        if let Some(e) = expected.iter().find(|e| e.digest(alg).is_none()) {
            return Err(bad(format!(
                "no {alg} digest was computed for {}",
                e.source
            )));
        }
    }
    let is_app = |e: &Event| e.pcr == 4 && e.event_type == EventType::EFI_BOOT_SERVICES_APPLICATION;
    let is_uki = |e: &Event| e.pcr == uki::PCR && e.event_type == EventType::IPL;
    let is_stub = |e: &Event| {
        e.pcr == stub::PCR
            && e.event_type == EventType::EVENT_TAG
            && [stub::LOAD_OPTIONS_EVENT_TAG_ID, stub::INITRD_EVENT_TAG_ID]
                .iter()
                .any(|id| e.data.get(..4) == Some(&id.to_le_bytes()[..]))
    };

    let apps: Vec<&ExpectedEvent> = expected.iter().filter(|e| e.pcr == 4).collect();
    let golden_apps = golden.events().iter().filter(|e| is_app(e)).count();
    if apps.len() != golden_apps {
        return Err(bad(format!(
            "it has {golden_apps} boot applications in PCR 4, the boot path loads {}",
            apps.len()
        )));
    }
    let stub_events: Vec<&ExpectedEvent> = expected
        .iter()
        .filter(|e| e.pcr == stub::PCR && e.event_type == EventType::EVENT_TAG)
        .collect();
    let uki_events: Vec<&ExpectedEvent> = expected.iter().filter(|e| e.pcr == uki::PCR).collect();
    if !uki_events.is_empty() && !golden.events().iter().any(is_uki) {
        return Err(bad(
            "it has no PCR 11 EV_IPL events; it is not the log of a UKI boot".into(),
        ));
    }
    if !stub_events.is_empty() && !golden.events().iter().any(is_stub) {
        return Err(bad(
            "it has no Linux EFI stub events in PCR 9; boot the golden VM with a command line or initrd"
                .into(),
        ));
    }

    let mut out: Vec<Event> = Vec::with_capacity(golden.events().len());
    let mut next_app = apps.into_iter();
    let mut stub_done = false;
    let mut uki_done = false;
    let with = |e: &Event, x: &ExpectedEvent| Event {
        pcr: x.pcr,
        event_type: x.event_type,
        digests: golden
            .banks()
            .iter()
            .filter_map(|&a| Some((a, x.digest(a)?.to_vec())))
            .collect(),
        data: x.data.clone().unwrap_or_else(|| e.data.clone()),
        ..e.clone()
    };
    for e in golden.events().iter().skip(1) {
        if is_app(e) {
            if let Some(x) = next_app.next() {
                out.push(with(e, x));
            }
        } else if is_stub(e) {
            // The stub's events form one group: all expected ones go where
            // the golden group starts.
            if !stub_done {
                out.extend(stub_events.iter().map(|x| with(e, x)));
                stub_done = true;
            }
        } else if is_uki(e) {
            if !uki_done {
                out.extend(uki_events.iter().map(|x| with(e, x)));
                uki_done = true;
            }
        } else {
            out.push(e.clone());
        }
    }
    Ok(encode_log(spec, &out))
}

/// A crypto-agile log: the Spec ID event in the SHA-1 format (PFP 10.2.1),
/// then `TCG_PCR_EVENT2` events (PFP 10.2.2).
fn encode_log(spec: &Event, events: &[Event]) -> Vec<u8> {
    let u32le = |v: usize| u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = Vec::new();
    out.extend_from_slice(&spec.pcr.to_le_bytes());
    out.extend_from_slice(&spec.event_type.0.to_le_bytes());
    out.extend_from_slice(&[0; 20]);
    out.extend_from_slice(&u32le(spec.data.len()));
    out.extend_from_slice(&spec.data);
    for e in events {
        out.extend_from_slice(&e.to_event2());
    }
    out
}
