//! Reference-value manifests: the values a worker image built from one
//! source commit must measure as, on every platform shape it is deployed
//! with. Operators publish them; users pin them in their policy.
//!
//! The format is JSON, documented in `docs/reference-values.md`, versioned
//! by `format` and `version`; a reader refuses a version it does not know.
//! [`describe`] computes one from a description of the image
//! ([`ImageDescription`], TOML), so every value in it can be recomputed by
//! anyone from the same artifacts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use provenix_firmware::tpm::{Event, EventLog, HashAlg};

use crate::Error;
use crate::snp::{self, DirectBoot, Ovmf, SnpInputs, VmmType};
use crate::tpm::{self, Boot, ExpectedEvent, Machine, QemuVm, stub};

/// The `format` field of every manifest.
pub const MANIFEST_FORMAT: &str = "provenix-reference-values";
/// The manifest version this code writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest file read: thousands of shapes fit in far less.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// A reference-value manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Always [`MANIFEST_VERSION`] for this code.
    pub version: u32,
    /// The worker's source commit: 40 (SHA-1) or 64 (SHA-256) hex digits.
    pub commit: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The boot artifacts the values were computed from.
    pub image: Image,
    /// Expected SEV-SNP launch digests, one per deployment shape.
    #[serde(default)]
    pub snp: Vec<SnpReference>,
    /// Expected TPM event digests and PCR values, one entry per bank, so
    /// that one manifest describes an image on every platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tpm: Vec<TpmReference>,
}

/// Digests of the artifacts a manifest was computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The firmware and where its measured part comes from.
    pub firmware: Firmware,
    /// SHA-256 of the kernel of a measured direct boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_sha256: Option<String>,
    /// SHA-256 of the initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_sha256: Option<String>,
    /// The kernel command line, exactly as measured (without the NUL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

/// The firmware part of the measurement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// `computed`: hashed from our own OVMF image; `vendor`: the cloud
    /// vendor's published firmware hash (GCE, EC2), which our image is only
    /// used to lay out.
    pub source: FirmwareSource,
    /// The image's file name, or the vendor's name for its firmware.
    pub name: String,
    /// SHA-256 of the OVMF image used.
    pub sha256: String,
    /// The SNP launch digest after the firmware pages (the value
    /// `sev-snp-measure --mode snp:ovmf-hash` prints, or the vendor's).
    pub snp_firmware_hash: String,
}

/// Where the firmware's measured part comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareSource {
    /// Hashed from our OVMF image.
    Computed,
    /// Published by the cloud vendor.
    Vendor,
}

/// The expected MEASUREMENT for one deployment shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpReference {
    /// The VMM: `QEMU`, `ec2` or `gce`.
    pub vmm: VmmType,
    /// The vCPU count.
    pub vcpus: u32,
    /// The vCPU type name, when one was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_type: Option<String>,
    /// The vCPU signature (`0x` hex).
    pub vcpu_sig: String,
    /// SEV_FEATURES of the VMSAs (`0x` hex).
    pub guest_features: String,
    /// The launch digest, 96 hex digits.
    pub measurement: String,
}

/// Expected TPM values for one boot path in one PCR bank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmReference {
    /// The boot path: `qemu-direct`, `uki` or `disk`.
    pub boot_path: String,
    /// The PCR bank: `sha1`, `sha256`, `sha384` or `sha512`.
    pub bank: String,
    /// For `qemu-direct`, the VM shape the kernel digest depends on (QEMU
    /// writes the initrd's placement into the kernel's header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<QemuVm>,
    /// The events the boot artifacts produce, in log order per PCR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<TpmEvent>,
    /// Expected PCR values by index, hex: every PCR a golden log of the
    /// same firmware replays to, with the events above put in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pcrs: BTreeMap<u32, String>,
}

/// One expected event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmEvent {
    /// The PCR.
    pub pcr: u32,
    /// The event type's PFP name, e.g. `EV_EFI_BOOT_SERVICES_APPLICATION`.
    pub event_type: String,
    /// What it measures: `kernel`, `uki`, `application NAME`,
    /// `load-options`, `initrd`, `uki-section-name NAME`, `uki-section NAME`.
    pub source: String,
    /// The digest in the reference's bank, hex.
    pub digest: String,
}

/// An event or PCR of TPM evidence that differs from a [`TpmReference`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmMismatch {
    /// The PCR.
    pub pcr: u32,
    /// The event's source (`kernel`, `initrd`, ...), or `None` for a PCR
    /// value.
    pub event: Option<String>,
    /// The expected digest or value, hex; `None` when the evidence has an
    /// event the reference does not expect.
    pub expected: Option<String>,
    /// What the evidence holds, hex; `None` when it lacks the event.
    pub found: Option<String>,
}

impl std::fmt::Display for TpmMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "nothing".into());
        match &self.event {
            Some(e) => write!(f, "PCR {} event {e}: ", self.pcr)?,
            None => write!(f, "PCR {}: ", self.pcr)?,
        }
        write!(
            f,
            "found {}, expected {}",
            or_none(&self.found),
            or_none(&self.expected)
        )
    }
}

impl TpmReference {
    /// The events of `log` that come from the boot artifacts, compared
    /// with the expected ones in this reference's bank: PCR 4 boot
    /// applications in order, the Linux EFI stub's load-options and initrd
    /// events by tag, systemd-stub's PCR 11 events in order. Every
    /// difference is reported. Other events (firmware, Secure Boot state)
    /// are not checked here; the PCR values cover them ([`check_pcrs`]).
    ///
    /// [`check_pcrs`]: TpmReference::check_pcrs
    pub fn check(&self, log: &EventLog) -> Vec<TpmMismatch> {
        let Some(bank) = HashAlg::from_name(&self.bank) else {
            return vec![TpmMismatch {
                pcr: 0,
                event: Some(format!("bank {}", self.bank)),
                expected: Some(self.bank.clone()),
                found: None,
            }];
        };
        let mut out = Vec::new();
        // Groups of events compared in order: (PCR, type, tag of the data).
        let mut groups: Vec<(u32, String, Option<[u8; 4]>)> = Vec::new();
        for e in &self.events {
            let key = (e.pcr, e.event_type.clone(), stub_tag(&e.source));
            if !groups.contains(&key) {
                groups.push(key);
            }
        }
        for (pcr, event_type, tag) in groups {
            let expected: Vec<&TpmEvent> = self
                .events
                .iter()
                .filter(|e| {
                    e.pcr == pcr && e.event_type == event_type && stub_tag(&e.source) == tag
                })
                .collect();
            let found: Vec<&Event> = log
                .events()
                .iter()
                .filter(|e| {
                    e.pcr == pcr
                        && e.event_type.name() == Some(event_type.as_str())
                        && tag.is_none_or(|t| e.data.get(..4) == Some(&t[..]))
                })
                .collect();
            for i in 0..expected.len().max(found.len()) {
                let x = expected.get(i);
                let f = found.get(i).map(|e| e.digest(bank).map(hex_lower));
                let f = f.flatten();
                if x.map(|x| &x.digest) != f.as_ref() {
                    out.push(TpmMismatch {
                        pcr,
                        event: Some(x.map_or_else(|| event_type.clone(), |x| x.source.clone())),
                        expected: x.map(|x| x.digest.clone()),
                        found: f,
                    });
                }
            }
        }
        out
    }

    /// `pcrs` (replayed from a log the quote vouched for, index -> value)
    /// compared with this reference's expected PCR values.
    pub fn check_pcrs(&self, pcrs: &BTreeMap<u32, Vec<u8>>) -> Vec<TpmMismatch> {
        self.pcrs
            .iter()
            .filter_map(|(&pcr, want)| {
                let found = pcrs.get(&pcr).map(|v| hex_lower(v));
                (found.as_ref() != Some(want)).then(|| TpmMismatch {
                    pcr,
                    event: None,
                    expected: Some(want.clone()),
                    found,
                })
            })
            .collect()
    }

    /// The references of `expected` events, one per bank, without PCR
    /// values.
    pub fn from_events(
        boot_path: &str,
        qemu: Option<QemuVm>,
        banks: &[HashAlg],
        expected: &[ExpectedEvent],
    ) -> Vec<TpmReference> {
        banks
            .iter()
            .map(|&bank| TpmReference {
                boot_path: boot_path.into(),
                bank: bank.name().into(),
                qemu,
                events: expected
                    .iter()
                    .filter_map(|e| {
                        Some(TpmEvent {
                            pcr: e.pcr,
                            event_type: e.event_type.name().unwrap_or("unknown").into(),
                            source: e.source.to_string(),
                            digest: hex_lower(e.digest(bank)?),
                        })
                    })
                    .collect(),
                pcrs: BTreeMap::new(),
            })
            .collect()
    }
}

/// The Linux EFI stub's tag for an event source, which tells its two PCR 9
/// events apart.
fn stub_tag(source: &str) -> Option<[u8; 4]> {
    match source {
        "load-options" => Some(stub::LOAD_OPTIONS_EVENT_TAG_ID.to_le_bytes()),
        "initrd" => Some(stub::INITRD_EVENT_TAG_ID.to_le_bytes()),
        _ => None,
    }
}

impl Manifest {
    /// Parse and validate: the format and version, the commit, and every
    /// digest's length.
    pub fn from_json(text: &str) -> Result<Manifest, Error> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| Error::Manifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Read a manifest file.
    pub fn read(path: &Path) -> Result<Manifest, Error> {
        let text = read_limited(path)?;
        Manifest::from_json(&text).map_err(|e| Error::Manifest(format!("{}: {e}", path.display())))
    }

    /// Pretty JSON, with a final newline; field order is fixed, so the same
    /// inputs give the same bytes.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Manifest(m));
        if self.format != MANIFEST_FORMAT {
            return bad(format!(
                "format {:?}, expected {MANIFEST_FORMAT:?}",
                self.format
            ));
        }
        if self.version != MANIFEST_VERSION {
            return bad(format!(
                "version {}, this verifier reads version {MANIFEST_VERSION}",
                self.version
            ));
        }
        check_commit(&self.commit)?;
        let fw = &self.image.firmware;
        check_hex("image.firmware.sha256", &fw.sha256, 32)?;
        check_hex(
            "image.firmware.snp_firmware_hash",
            &fw.snp_firmware_hash,
            48,
        )?;
        for (name, v) in [
            ("image.kernel_sha256", &self.image.kernel_sha256),
            ("image.initrd_sha256", &self.image.initrd_sha256),
        ] {
            if let Some(v) = v {
                check_hex(name, v, 32)?;
            }
        }
        for (i, r) in self.tpm.iter().enumerate() {
            let bank = HashAlg::from_name(&r.bank).ok_or_else(|| {
                Error::Manifest(format!("tpm[{i}].bank {:?} is not a known bank", r.bank))
            })?;
            for (j, e) in r.events.iter().enumerate() {
                check_hex(
                    &format!("tpm[{i}].events[{j}].digest"),
                    &e.digest,
                    bank.size(),
                )?;
            }
            for (pcr, v) in &r.pcrs {
                check_hex(&format!("tpm[{i}].pcrs.{pcr}"), v, bank.size())?;
            }
        }
        for (i, r) in self.snp.iter().enumerate() {
            check_hex(&format!("snp[{i}].measurement"), &r.measurement, 48)?;
            parse_u64(&r.vcpu_sig)
                .map_err(|e| Error::Manifest(format!("snp[{i}].vcpu_sig: {e}")))?;
            parse_u64(&r.guest_features)
                .map_err(|e| Error::Manifest(format!("snp[{i}].guest_features: {e}")))?;
        }
        Ok(())
    }

    /// The reference whose measurement is `measurement`, if any.
    pub fn snp_reference(&self, measurement: &[u8; 48]) -> Option<&SnpReference> {
        let want = hex_lower(measurement);
        self.snp.iter().find(|r| r.measurement == want)
    }
}

/// A description of a worker image: the input to [`describe`] (TOML).
/// Paths are relative to the description file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDescription {
    /// The source commit the image was built from.
    pub commit: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The firmware.
    pub firmware: FirmwareDescription,
    /// The measured direct boot, if any.
    pub boot: Option<BootDescription>,
    /// The SEV-SNP deployment shapes.
    #[serde(default)]
    pub snp: Vec<ShapeDescription>,
    /// The TPM-measured boots: `[tpm]` for one, `[[tpm]]` for several
    /// (a UKI from a disk and a direct boot of the same artifacts).
    #[serde(default, deserialize_with = "one_or_many")]
    pub tpm: Vec<TpmDescription>,
}

/// `[tpm]` or `[[tpm]]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TpmDescription>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(TpmDescription),
        Many(Vec<TpmDescription>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(v) => v,
    })
}

/// The TPM-measured boot of an image description: the kernel, initrd and
/// command line come from `[boot]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmDescription {
    /// `qemu-direct` (default), `uki` or `disk`.
    pub boot: Option<String>,
    /// PCR banks (default `["sha256"]`).
    #[serde(default)]
    pub banks: Vec<String>,
    /// qemu-direct: the machine type (default `q35`).
    pub machine: Option<String>,
    /// qemu-direct: guest RAM in MiB (default 1024).
    pub memory_mib: Option<u64>,
    /// uki: the UKI.
    pub uki: Option<PathBuf>,
    /// disk: the boot applications measured into PCR 4, in load order.
    #[serde(default)]
    pub applications: Vec<PathBuf>,
    /// A golden event log of a boot of the same firmware; with it the
    /// manifest gets full PCR values.
    pub golden_log: Option<PathBuf>,
}

/// The firmware of an image description.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareDescription {
    /// The OVMF image (always needed: its metadata lays out the launch).
    pub ovmf: PathBuf,
    /// A vendor's name for its firmware; with `snp_firmware_hash`, the
    /// firmware part comes from the vendor, not from hashing `ovmf`.
    pub vendor: Option<String>,
    /// The vendor's published SNP firmware hash, 96 hex digits.
    pub snp_firmware_hash: Option<String>,
}

/// The measured direct boot of an image description.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootDescription {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initrd.
    pub initrd: Option<PathBuf>,
    /// The command line.
    pub append: Option<String>,
}

/// One family of deployment shapes: every vCPU count listed, with one VMM
/// and vCPU type.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeDescription {
    /// `QEMU`, `ec2` or `gce`.
    pub vmm: String,
    /// A vCPU type the reference tool knows, e.g. `EPYC-Milan`.
    pub vcpu_type: Option<String>,
    /// Or an explicit signature (`0x...`).
    pub vcpu_sig: Option<String>,
    /// The vCPU counts.
    pub vcpus: Vec<u32>,
    /// SEV_FEATURES (`0x...`), default 0x1.
    pub guest_features: Option<String>,
}

impl ImageDescription {
    /// Read a description (TOML).
    pub fn read(path: &Path) -> Result<ImageDescription, Error> {
        let text = read_limited(path)?;
        toml::from_str(&text).map_err(|e| Error::Manifest(format!("{}: {e}", path.display())))
    }
}

/// Replays an event log (its bytes) into PCR values, bank by bank: the
/// verifier's replay, passed in so that this crate has none of its own.
pub type Replay<'r> =
    &'r dyn Fn(&[u8]) -> Result<BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>, String>;

/// Compute a manifest for `desc`, whose paths are relative to `base`.
/// `commit` overrides the description's. A description with a TPM golden
/// log needs [`describe_with`] and a replay.
pub fn describe(
    desc: &ImageDescription,
    base: &Path,
    commit: Option<&str>,
) -> Result<Manifest, Error> {
    describe_with(desc, base, commit, None)
}

/// [`describe`], with `replay` to turn a golden log with the expected
/// events into expected PCR values.
pub fn describe_with(
    desc: &ImageDescription,
    base: &Path,
    commit: Option<&str>,
    replay: Option<Replay<'_>>,
) -> Result<Manifest, Error> {
    let commit = commit
        .map(str::to_owned)
        .or_else(|| desc.commit.clone())
        .ok_or_else(|| {
            Error::Manifest("no commit: give one in the description or on the command line".into())
        })?;
    check_commit(&commit)?;
    let path = |p: &Path| base.join(p);
    let ovmf_path = path(&desc.firmware.ovmf);
    let ovmf = Ovmf::read(&ovmf_path)?;
    let vendor_hash = match (&desc.firmware.vendor, &desc.firmware.snp_firmware_hash) {
        (Some(_), Some(h)) => {
            check_hex("firmware.snp_firmware_hash", h, 48)?;
            let mut out = [0u8; 48];
            decode_hex(h, &mut out)?;
            Some(out)
        }
        (None, None) => None,
        _ => {
            return Err(Error::Manifest(
                "firmware.vendor and firmware.snp_firmware_hash go together".into(),
            ));
        }
    };
    let firmware_hash = match vendor_hash {
        Some(h) => h,
        None => snp::ovmf_hash(&ovmf)?,
    };
    let boot_paths = desc.boot.as_ref().map(|b| {
        (
            path(&b.kernel),
            b.initrd.as_deref().map(path),
            b.append.clone(),
        )
    });
    let direct_boot = boot_paths
        .as_ref()
        .map(|(kernel, initrd, append)| DirectBoot {
            kernel,
            initrd: initrd.as_deref(),
            cmdline: append.as_deref(),
        });

    let mut snp_refs = Vec::new();
    for (i, shape) in desc.snp.iter().enumerate() {
        let vmm: VmmType = shape.vmm.parse().map_err(|()| {
            Error::Manifest(format!(
                "snp[{i}].vmm {:?}: expected one of {:?}",
                shape.vmm,
                VmmType::NAMES
            ))
        })?;
        let vcpu_sig = match (&shape.vcpu_type, &shape.vcpu_sig) {
            (Some(t), None) => snp::vcpu_type_signature(t).ok_or_else(|| {
                Error::Manifest(format!("snp[{i}].vcpu_type {t:?} is not a known vCPU type"))
            })?,
            (None, Some(s)) => u32::try_from(
                parse_u64(s).map_err(|e| Error::Manifest(format!("snp[{i}].vcpu_sig: {e}")))?,
            )
            .map_err(|_| Error::Manifest(format!("snp[{i}].vcpu_sig {s} is wider than 32 bits")))?,
            (None, None) if vmm != VmmType::Qemu => 0,
            _ => {
                return Err(Error::Manifest(format!(
                    "snp[{i}]: give exactly one of vcpu_type and vcpu_sig"
                )));
            }
        };
        let guest_features = match &shape.guest_features {
            Some(g) => parse_u64(g)
                .map_err(|e| Error::Manifest(format!("snp[{i}].guest_features: {e}")))?,
            None => snp::DEFAULT_GUEST_FEATURES,
        };
        if shape.vcpus.is_empty() {
            return Err(Error::Manifest(format!("snp[{i}].vcpus is empty")));
        }
        for &vcpus in &shape.vcpus {
            let m = snp::launch_digest(&SnpInputs {
                ovmf: &ovmf,
                direct_boot,
                vcpus,
                vcpu_sig,
                vmm,
                guest_features,
                ovmf_hash: vendor_hash,
            })?;
            snp_refs.push(SnpReference {
                vmm,
                vcpus,
                vcpu_type: shape.vcpu_type.clone(),
                vcpu_sig: format!("{vcpu_sig:#010x}"),
                guest_features: format!("{guest_features:#x}"),
                measurement: hex_lower(&m.digest),
            });
        }
    }

    let kernel_hashes = direct_boot
        .as_ref()
        .map(snp::KernelHashes::compute)
        .transpose()?;
    let name = match &desc.firmware.vendor {
        Some(v) => v.clone(),
        None => desc
            .firmware
            .ovmf
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    };
    Ok(Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        commit,
        description: desc.description.clone(),
        image: Image {
            firmware: Firmware {
                source: if vendor_hash.is_some() {
                    FirmwareSource::Vendor
                } else {
                    FirmwareSource::Computed
                },
                name,
                sha256: hex_lower(&sha256(ovmf.data())),
                snp_firmware_hash: hex_lower(&firmware_hash),
            },
            kernel_sha256: kernel_hashes.as_ref().map(|k| hex_lower(&k.kernel_sha256)),
            initrd_sha256: match (
                &kernel_hashes,
                boot_paths.as_ref().and_then(|b| b.1.as_ref()),
            ) {
                (Some(k), Some(_)) => Some(hex_lower(&k.initrd_sha256)),
                _ => None,
            },
            cmdline: desc
                .boot
                .as_ref()
                .map(|b| b.append.clone().unwrap_or_default()),
        },
        snp: snp_refs,
        tpm: {
            let mut refs = Vec::new();
            for t in &desc.tpm {
                refs.extend(describe_tpm(t, desc.boot.as_ref(), &path, replay)?);
            }
            refs
        },
    })
}

fn describe_tpm(
    t: &TpmDescription,
    boot: Option<&BootDescription>,
    path: &dyn Fn(&Path) -> PathBuf,
    replay: Option<Replay<'_>>,
) -> Result<Vec<TpmReference>, Error> {
    let bad = |m: String| Error::Manifest(format!("tpm: {m}"));
    let tpm_err = |e: tpm::Error| bad(format!("{e:#}"));
    let read = |p: &Path| {
        let p = path(p);
        std::fs::read(&p).map_err(|source| Error::Io {
            op: "read",
            path: p,
            source,
        })
    };
    let banks = if t.banks.is_empty() {
        vec![HashAlg::Sha256]
    } else {
        t.banks
            .iter()
            .map(|b| HashAlg::from_name(b).ok_or_else(|| bad(format!("unknown bank {b:?}"))))
            .collect::<Result<_, _>>()?
    };
    let golden = match &t.golden_log {
        Some(p) => {
            let bytes = read(p)?;
            let log = EventLog::parse(&bytes)
                .map_err(|e| bad(format!("golden log {}: {e}", p.display())))?;
            Some(log)
        }
        None => None,
    };
    // Digests for the asked banks and every bank of the golden log.
    let mut all_banks = banks.clone();
    for &b in golden.iter().flat_map(|g| g.banks()) {
        if !all_banks.contains(&b) {
            all_banks.push(b);
        }
    }
    let boot_path = t.boot.as_deref().unwrap_or("qemu-direct");
    let kernel = boot.map(|b| read(&b.kernel)).transpose()?;
    let initrd = boot
        .and_then(|b| b.initrd.as_ref())
        .map(|p| read(p))
        .transpose()?;
    let cmdline = boot.and_then(|b| b.append.clone()).unwrap_or_default();
    let mut qemu = None;
    let uki;
    let apps: Vec<(String, Vec<u8>)>;
    let expected: Vec<ExpectedEvent> = match boot_path {
        "qemu-direct" => {
            let kernel = kernel
                .as_deref()
                .ok_or_else(|| bad("qemu-direct needs [boot] kernel".into()))?;
            let machine = t.machine.as_deref().unwrap_or("q35");
            let vm = QemuVm {
                machine: Machine::from_name(machine)
                    .ok_or_else(|| bad(format!("machine {machine:?}: expected q35 or pc")))?,
                memory_mib: t.memory_mib.unwrap_or(1024),
            };
            qemu = Some(vm);
            tpm::expected_events(
                &Boot::QemuDirect {
                    vm,
                    kernel,
                    initrd: initrd.as_deref(),
                    cmdline: cmdline.as_bytes(),
                },
                &all_banks,
            )
            .map_err(tpm_err)?
        }
        "uki" => {
            let p = t
                .uki
                .as_ref()
                .ok_or_else(|| bad("uki needs tpm.uki".into()))?;
            uki = read(p)?;
            tpm::expected_events(&Boot::Uki { image: &uki }, &all_banks).map_err(tpm_err)?
        }
        "disk" => {
            apps = t
                .applications
                .iter()
                .map(|p| Ok((p.display().to_string(), read(p)?)))
                .collect::<Result<_, Error>>()?;
            let disk = Boot::Disk {
                applications: apps
                    .iter()
                    .map(|(n, b)| (n.clone(), b.as_slice()))
                    .collect(),
                cmdline: boot.and_then(|b| b.append.as_deref()).map(str::as_bytes),
                initrd: initrd.as_deref(),
            };
            tpm::expected_events(&disk, &all_banks).map_err(tpm_err)?
        }
        other => {
            return Err(bad(format!(
                "boot {other:?}: expected qemu-direct, uki or disk"
            )));
        }
    };
    let mut refs = TpmReference::from_events(boot_path, qemu, &banks, &expected);
    if let Some(golden) = &golden {
        let replay = replay.ok_or_else(|| {
            bad("a golden log needs a replay (use provenix measure manifest)".into())
        })?;
        let log = tpm::substitute(golden, &expected).map_err(tpm_err)?;
        let pcrs = replay(&log).map_err(|e| bad(format!("replaying the expected log: {e}")))?;
        for r in &mut refs {
            let Some(bank) = HashAlg::from_name(&r.bank) else {
                continue;
            };
            let values = pcrs
                .get(&bank)
                .ok_or_else(|| bad(format!("the golden log has no {bank} bank")))?;
            r.pcrs = values.iter().map(|(&i, v)| (i, hex_lower(v))).collect();
        }
    }
    Ok(refs)
}

/// A regular file of at most [`MAX_MANIFEST_SIZE`] bytes of UTF-8.
fn read_limited(path: &Path) -> Result<String, Error> {
    provenix_firmware::file::read_bounded_text(path, MAX_MANIFEST_SIZE)
        .map_err(|e| Error::Manifest(e.to_string()))
}

fn check_commit(commit: &str) -> Result<(), Error> {
    let ok = matches!(commit.len(), 40 | 64)
        && commit
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(Error::Manifest(format!(
            "commit {commit:?} is not 40 or 64 lower-case hex digits"
        )))
    }
}

fn check_hex(field: &str, value: &str, bytes: usize) -> Result<(), Error> {
    let ok = value.len() == bytes.saturating_mul(2)
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(Error::Manifest(format!(
            "{field} is not {bytes} bytes as lower-case hex: {value:?}"
        )))
    }
}

fn decode_hex(s: &str, out: &mut [u8]) -> Result<(), Error> {
    let digits = s.as_bytes();
    if digits.len() != out.len().saturating_mul(2) {
        return Err(Error::Manifest(format!(
            "{s:?} is not {} hex digits",
            out.len().saturating_mul(2)
        )));
    }
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let text =
            std::str::from_utf8(pair).map_err(|_| Error::Manifest(format!("{s:?} is not hex")))?;
        *o = u8::from_str_radix(text, 16)
            .map_err(|_| Error::Manifest(format!("{s:?} is not hex")))?;
    }
    Ok(())
}

/// `0x`-prefixed hex or decimal.
fn parse_u64(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?}: {e}"))
}

fn hex_lower(bytes: &[u8]) -> String {
    crate::hex::encode(bytes)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}
