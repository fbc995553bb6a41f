//! Byte-for-byte agreement with the reference tool, `sev-snp-measure`
//! 0.0.13 (PyPI), run side by side on the same inputs: every firmware in
//! `../shared/firmware`, vCPU counts and types, VMM types, direct boot with
//! and without initrd and command line, guest features, and refusals.
//!
//! The reference runs as a process (`sev-snp-measure` from PATH, or
//! `$PROVENIX_SNP_MEASURE`); our side runs in-process through the library.
//! Where the reference or the shared firmware is missing the tests print
//! `SKIP` and pass, unless `CI=true`, where they fail.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use provenix_measurements::Error;
use provenix_measurements::snp::{
    self, DirectBoot, Guid, Ovmf, SEV_ES_RESET_BLOCK_GUID, SEV_METADATA_GUID, SVSM_INFO_GUID,
    SnpInputs, SvsmInputs, VCPU_TYPES, VmmType,
};

const REFERENCE_VERSION: &str = "sev-snp-measure 0.0.13";

const FIRMWARE: [&str; 5] = [
    "bookworm-OVMF.fd",
    "bookworm-OVMF_CODE.fd",
    "bookworm-OVMF_CODE_4M.fd",
    "trixie-OVMF.fd",
    "sid-OVMF.amdsev.fd",
];
/// The one firmware with an SNP_KERNEL_HASHES section.
const SID: &str = "sid-OVMF.amdsev.fd";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn skip(why: &str) {
    if ci() {
        panic!("CI=true but {why}");
    }
    eprintln!("SKIP: {why}");
}

/// A scratch directory with the firmware unpacked, removed when dropped.
struct Fixture {
    dir: PathBuf,
    tool: OsString,
    /// Parsed images, so each is read and hashed once per test.
    images: Mutex<HashMap<PathBuf, Arc<Ovmf>>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    fn new(name: &str) -> Option<Fixture> {
        let shared = std::env::var_os("PROVENIX_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
        let firmware = shared.join("firmware");
        if !firmware.join(format!("{SID}.xz")).is_file() {
            skip(&format!(
                "the shared firmware is missing at {} (set PROVENIX_SHARED)",
                firmware.display()
            ));
            return None;
        }
        let tool = std::env::var_os("PROVENIX_SNP_MEASURE").unwrap_or("sev-snp-measure".into());
        match Command::new(&tool).arg("--version").output() {
            Ok(out) if out.status.success() => {
                let version = String::from_utf8_lossy(&out.stdout);
                assert_eq!(
                    version.trim(),
                    REFERENCE_VERSION,
                    "the reference tool must be {REFERENCE_VERSION}"
                );
            }
            _ => {
                skip(&format!(
                    "the reference tool {} is not runnable (pip install sev-snp-measure==0.0.13, or set PROVENIX_SNP_MEASURE)",
                    tool.to_string_lossy()
                ));
                return None;
            }
        }
        let dir =
            std::env::temp_dir().join(format!("provenix-snp-ref-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fixture = Fixture {
            dir,
            tool,
            images: Mutex::new(HashMap::new()),
        };
        for fw in FIRMWARE {
            let out = match Command::new("xz")
                .arg("-dc")
                .arg(firmware.join(format!("{fw}.xz")))
                .output()
            {
                Ok(out) if out.status.success() => out.stdout,
                _ => {
                    skip("xz is missing or failed");
                    return None;
                }
            };
            std::fs::write(fixture.dir.join(fw), out).unwrap();
        }
        Some(fixture)
    }

    fn fw(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file of `len` deterministic bytes (a "kernel" or "initrd").
    fn blob(&self, name: &str, len: usize, seed: u32) -> PathBuf {
        let mut x = seed.wrapping_mul(0x9E37_79B9) | 1;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        let path = self.dir.join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    fn image(&self, path: &Path) -> Result<Arc<Ovmf>, Error> {
        if let Some(img) = self.images.lock().unwrap().get(path) {
            return Ok(img.clone());
        }
        let img = Arc::new(Ovmf::read(path)?);
        self.images
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), img.clone());
        Ok(img)
    }
}

#[derive(Clone, Debug, Default)]
enum Vcpu {
    #[default]
    None,
    Type(&'static str),
    /// As written on the command line.
    Sig(&'static str),
    Fms(u64, u64, u64),
}

/// One invocation, as both sides understand it.
#[derive(Clone, Debug, Default)]
struct Case {
    mode: &'static str,
    ovmf: PathBuf,
    vcpus: Option<u32>,
    vcpu: Vcpu,
    vmm: Option<&'static str>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
    guest_features: Option<&'static str>,
    snp_ovmf_hash: Option<String>,
    svsm: Option<PathBuf>,
    vars_size: Option<u64>,
}

fn snp(ovmf: PathBuf, vcpus: u32) -> Case {
    Case {
        mode: "snp",
        ovmf,
        vcpus: Some(vcpus),
        vcpu: Vcpu::Type("EPYC-v4"),
        ..Case::default()
    }
}

impl Case {
    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["--mode".into(), self.mode.into()];
        a.extend(["--ovmf".into(), self.ovmf.clone().into()]);
        if let Some(n) = self.vcpus {
            a.extend(["--vcpus".into(), n.to_string().into()]);
        }
        match &self.vcpu {
            Vcpu::None => {}
            Vcpu::Type(t) => a.extend(["--vcpu-type".into(), (*t).into()]),
            Vcpu::Sig(s) => a.extend(["--vcpu-sig".into(), (*s).into()]),
            Vcpu::Fms(f, m, s) => {
                for (k, v) in [
                    ("--vcpu-family", f),
                    ("--vcpu-model", m),
                    ("--vcpu-stepping", s),
                ] {
                    a.extend([k.into(), v.to_string().into()]);
                }
            }
        }
        let mut opt = |k: &str, v: Option<OsString>| {
            if let Some(v) = v {
                a.extend([k.into(), v]);
            }
        };
        opt("--vmm-type", self.vmm.map(Into::into));
        opt("--kernel", self.kernel.clone().map(Into::into));
        opt("--initrd", self.initrd.clone().map(Into::into));
        opt("--append", self.append.clone().map(Into::into));
        opt("--guest-features", self.guest_features.map(Into::into));
        opt(
            "--snp-ovmf-hash",
            self.snp_ovmf_hash.clone().map(Into::into),
        );
        opt("--svsm", self.svsm.clone().map(Into::into));
        opt("--vars-size", self.vars_size.map(|v| v.to_string().into()));
        a
    }

    /// The reference's exit status and stdout.
    fn reference(&self, fx: &Fixture) -> (i32, String, String) {
        let out = Command::new(&fx.tool).args(self.args()).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    fn vcpu_sig(&self) -> u32 {
        match self.vcpu {
            Vcpu::None => 0,
            Vcpu::Type(t) => snp::vcpu_type_signature(t).unwrap(),
            Vcpu::Sig(s) => match s.strip_prefix("0x") {
                Some(h) => u32::from_str_radix(h, 16).unwrap(),
                None => s.parse().unwrap(),
            },
            Vcpu::Fms(f, m, s) => snp::cpu_signature(f, m, s),
        }
    }

    fn vmm(&self) -> VmmType {
        self.vmm.unwrap_or("QEMU").parse().unwrap()
    }

    /// Ours, through the library, as hex.
    fn ours(&self, fx: &Fixture) -> Result<String, Error> {
        let ovmf = fx.image(&self.ovmf)?;
        let boot = self.kernel.as_deref().map(|kernel| DirectBoot {
            kernel,
            initrd: self.initrd.as_deref(),
            cmdline: self.append.as_deref(),
        });
        let vcpus = self.vcpus.unwrap_or(0);
        let digest = match self.mode {
            "snp:ovmf-hash" => snp::ovmf_hash(&ovmf)?.to_vec(),
            "sev" => snp::sev_launch_digest(&ovmf, boot.as_ref())?
                .digest
                .to_vec(),
            "seves" => {
                snp::seves_launch_digest(&ovmf, boot.as_ref(), vcpus, self.vcpu_sig(), self.vmm())?
                    .digest
                    .to_vec()
            }
            "snp" => snp::launch_digest(&SnpInputs {
                ovmf: &ovmf,
                direct_boot: boot,
                vcpus,
                vcpu_sig: self.vcpu_sig(),
                vmm: self.vmm(),
                guest_features: self.guest_features.map_or(1, |g| {
                    u64::from_str_radix(g.trim_start_matches("0x"), 16).unwrap()
                }),
                ovmf_hash: self
                    .snp_ovmf_hash
                    .as_ref()
                    .map(|h| hex::decode(h).unwrap().try_into().unwrap()),
            })?
            .digest
            .to_vec(),
            "snp:svsm" => snp::svsm_launch_digest(&SvsmInputs {
                ovmf: &ovmf,
                svsm: &*fx.image(self.svsm.as_ref().unwrap())?,
                vars_size: self.vars_size.unwrap(),
                vcpus,
                vcpu_sig: self.vcpu_sig(),
                vmm: self.vmm(),
            })?
            .digest
            .to_vec(),
            other => panic!("mode {other}"),
        };
        Ok(hex::encode(digest))
    }
}

/// Run every case on both sides (the reference in parallel processes) and
/// fail with every disagreement listed. Returns the number of reference
/// runs.
fn agree(fx: &Fixture, cases: &[Case]) -> usize {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for chunk in cases.chunks(cases.len().div_ceil(threads)) {
            let failures = &failures;
            s.spawn(move || {
                for case in chunk {
                    let (code, out, err) = case.reference(fx);
                    let ours = case.ours(fx);
                    let ok = match (&ours, code) {
                        (Ok(hex), 0) => *hex == out,
                        // The reference refuses with exit 1 (its
                        // RuntimeError, or an uncaught exception).
                        (Err(_), 1) => true,
                        _ => false,
                    };
                    if !ok {
                        failures.lock().unwrap().push(format!(
                            "{:?}\n  reference: exit {code} {out} {err}\n  ours: {ours:?}",
                            case.args()
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} cases agree with {REFERENCE_VERSION}", cases.len());
    cases.len()
}

/// Every firmware: its firmware hash, SNP with 1, 2, 4 and 64 vCPUs, SEV-ES
/// and SEV.
#[test]
fn every_firmware() {
    let Some(fx) = Fixture::new("firmware") else {
        return;
    };
    let mut cases = Vec::new();
    for fw in FIRMWARE {
        let ovmf = fx.fw(fw);
        cases.push(Case {
            mode: "snp:ovmf-hash",
            ovmf: ovmf.clone(),
            ..Case::default()
        });
        for vcpus in [1, 2, 4, 64] {
            cases.push(snp(ovmf.clone(), vcpus));
        }
        cases.push(Case {
            mode: "seves",
            ..snp(ovmf.clone(), 2)
        });
        cases.push(Case {
            mode: "sev",
            ovmf,
            ..Case::default()
        });
    }
    agree(&fx, &cases);
}

/// EC2 and GCE on every firmware, with and without a vCPU type, with many
/// vCPUs and with a kernel.
#[test]
fn vmm_types() {
    let Some(fx) = Fixture::new("vmm") else {
        return;
    };
    let kernel = fx.blob("kernel", 5000, 1);
    let mut cases = Vec::new();
    for fw in FIRMWARE {
        cases.push(Case {
            vmm: Some("ec2"),
            ..snp(fx.fw(fw), 2)
        });
        cases.push(Case {
            vmm: Some("gce"),
            vcpu: Vcpu::None,
            ..snp(fx.fw(fw), 3)
        });
    }
    for vmm in ["ec2", "gce"] {
        cases.push(Case {
            vmm: Some(vmm),
            ..snp(fx.fw(SID), 64)
        });
        cases.push(Case {
            vmm: Some(vmm),
            kernel: Some(kernel.clone()),
            append: Some("console=ttyS0".into()),
            ..snp(fx.fw(SID), 4)
        });
        cases.push(Case {
            mode: "seves",
            vmm: Some(vmm),
            ..snp(fx.fw(SID), 2)
        });
    }
    cases.push(Case {
        vmm: Some("QEMU"),
        ..snp(fx.fw(SID), 2)
    });
    agree(&fx, &cases);
}

/// Measured direct boot on the AmdSev firmware: kernel alone, with initrd,
/// with command lines that need care (double spaces, UTF-8, empty,
/// surrounding spaces), a kernel larger than the read buffer, an empty
/// initrd file, in every mode that supports it.
#[test]
fn direct_boot() {
    let Some(fx) = Fixture::new("boot") else {
        return;
    };
    let kernel = fx.blob("kernel", 6000, 2);
    let initrd = fx.blob("initrd", 9000, 3);
    let big = fx.blob("big-kernel", (3 << 20) + 123, 4);
    let empty = fx.blob("empty", 0, 5);
    let boot = |kernel: &Path, initrd: Option<&Path>, append: Option<&str>| Case {
        kernel: Some(kernel.to_path_buf()),
        initrd: initrd.map(Path::to_path_buf),
        append: append.map(str::to_string),
        ..snp(fx.fw(SID), 2)
    };
    let mut cases = vec![
        boot(&kernel, None, None),
        boot(&kernel, Some(&initrd), None),
        boot(
            &kernel,
            Some(&initrd),
            Some("console=ttyS0 root=/dev/vda1 ro"),
        ),
        boot(
            &kernel,
            Some(&initrd),
            Some("console=ttyS0  root=/dev/vda1"),
        ),
        boot(&kernel, Some(&initrd), Some("nom=é ü 漢字 🚀")),
        boot(&kernel, Some(&initrd), Some("")),
        boot(&kernel, None, Some(" leading and trailing ")),
        boot(&kernel, Some(&empty), Some("x")),
        boot(&big, Some(&initrd), Some("big")),
    ];
    for (mode, vcpus) in [("seves", Some(2)), ("sev", None)] {
        for append in [None, Some("console=ttyS0  quiet")] {
            cases.push(Case {
                mode,
                vcpus,
                ..boot(&kernel, Some(&initrd), append)
            });
        }
    }
    cases.push(Case {
        vcpus: Some(64),
        ..boot(&kernel, Some(&initrd), Some("many"))
    });
    agree(&fx, &cases);
}

/// Every vCPU type the reference knows, explicit signatures (hex and
/// decimal) and family/model/stepping, including a family below 0x10.
#[test]
fn vcpu_signatures() {
    let Some(fx) = Fixture::new("vcpu") else {
        return;
    };
    let mut cases: Vec<Case> = VCPU_TYPES
        .iter()
        .map(|t| Case {
            vcpu: Vcpu::Type(t.name),
            ..snp(fx.fw(SID), 2)
        })
        .collect();
    for sig in ["0x800f12", "8392466", "0xa10f11", "0x00b00f21"] {
        cases.push(Case {
            vcpu: Vcpu::Sig(sig),
            ..snp(fx.fw(SID), 2)
        });
    }
    for (f, m, s) in [
        (25, 1, 1),
        (23, 49, 0),
        (26, 17, 0),
        (15, 4, 1),
        (25, 0x1a1, 0x12),
    ] {
        cases.push(Case {
            vcpu: Vcpu::Fms(f, m, s),
            ..snp(fx.fw(SID), 2)
        });
    }
    cases.push(Case {
        mode: "seves",
        vcpu: Vcpu::Fms(25, 17, 0),
        ..snp(fx.fw("trixie-OVMF.fd"), 4)
    });
    agree(&fx, &cases);
}

/// Guest features (SEV_FEATURES) values, and a precomputed firmware hash.
#[test]
fn guest_features_and_given_firmware_hash() {
    let Some(fx) = Fixture::new("features") else {
        return;
    };
    let mut cases = Vec::new();
    for g in ["0x0", "0x1", "0x21", "0x3f", "0xffffffffffffffff"] {
        cases.push(Case {
            guest_features: Some(g),
            ..snp(fx.fw(SID), 2)
        });
    }
    cases.push(Case {
        guest_features: Some("0x5"),
        vmm: Some("gce"),
        ..snp(fx.fw("trixie-OVMF.fd"), 2)
    });
    for fw in [SID, "bookworm-OVMF.fd"] {
        let hash = Case {
            mode: "snp:ovmf-hash",
            ovmf: fx.fw(fw),
            ..Case::default()
        }
        .reference(&fx)
        .1;
        cases.push(Case {
            snp_ovmf_hash: Some(hash),
            ..snp(fx.fw(fw), 4)
        });
    }
    // A hash that is not this firmware's: the image's pages are not read.
    cases.push(Case {
        snp_ovmf_hash: Some("ab".repeat(48)),
        ..snp(fx.fw(SID), 1)
    });
    agree(&fx, &cases);
}

/// Both refuse: a kernel on firmware without SNP_KERNEL_HASHES (or without
/// SEV metadata at all), a missing file, truncated and corrupted firmware.
#[test]
fn refusals_agree() {
    let Some(fx) = Fixture::new("refusals") else {
        return;
    };
    let kernel = fx.blob("kernel", 4000, 6);
    let sid = std::fs::read(fx.fw(SID)).unwrap();
    let write = |name: &str, data: &[u8]| {
        let p = fx.dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    // The first MiB: no footer table, so no reset block.
    let head = write("head.fd", &sid[..1 << 20]);
    // Not a whole number of pages.
    let short = write("short.fd", &sid[..sid.len() - 100]);
    // The SEV metadata signature broken.
    let mut bad_sig = sid.clone();
    let from_end = u32::from_le_bytes(
        fx.image(&fx.fw(SID))
            .unwrap()
            .entry(SEV_METADATA_GUID)
            .unwrap()[..4]
            .try_into()
            .unwrap(),
    ) as usize;
    let at = sid.len() - from_end;
    bad_sig[at..at + 4].copy_from_slice(b"XSEV");
    let bad_sig = write("bad-sig.fd", &bad_sig);
    // The first entry's length below its header.
    let mut bad_entry = sid.clone();
    let at = sid.len() - 32 - 18 - 18;
    bad_entry[at..at + 2].copy_from_slice(&3u16.to_le_bytes());
    let bad_entry = write("bad-entry.fd", &bad_entry);

    let mut cases = Vec::new();
    for fw in [
        "bookworm-OVMF.fd",
        "bookworm-OVMF_CODE.fd",
        "bookworm-OVMF_CODE_4M.fd",
        "trixie-OVMF.fd",
    ] {
        cases.push(Case {
            kernel: Some(kernel.clone()),
            ..snp(fx.fw(fw), 2)
        });
    }
    cases.push(Case {
        mode: "seves",
        kernel: Some(kernel.clone()),
        ..snp(fx.fw("bookworm-OVMF.fd"), 2)
    });
    cases.push(Case {
        mode: "sev",
        vcpus: None,
        kernel: Some(kernel.clone()),
        ..snp(fx.fw("bookworm-OVMF_CODE_4M.fd"), 1)
    });
    cases.push(snp(fx.dir.join("no-such-file.fd"), 2));
    cases.push(Case {
        kernel: Some(fx.dir.join("no-such-kernel")),
        ..snp(fx.fw(SID), 2)
    });
    for path in [&head, &short, &bad_sig, &bad_entry] {
        cases.push(snp(path.clone(), 2));
    }
    cases.push(Case {
        mode: "snp:ovmf-hash",
        ovmf: short.clone(),
        ..Case::default()
    });
    cases.push(Case {
        mode: "seves",
        ..snp(bad_sig, 2)
    });
    // The 4M image has no SEV metadata but an SEV-ES reset block: without a
    // kernel both measure it (firmware pages and VMSAs only).
    cases.push(snp(fx.fw("bookworm-OVMF_CODE_4M.fd"), 4));
    agree(&fx, &cases);
}

/// An SVSM image built here: a footer table with the SVSM information
/// entry and SEV metadata, like COCONUT-SVSM's stage 2.
fn svsm_image(pages: usize, entry: u32) -> Vec<u8> {
    let size = pages * 4096;
    let mut data: Vec<u8> = (0..size).map(|i| (i * 13 % 241) as u8).collect();
    let sections: [(u32, u32, u32); 4] = [
        (0x80_0000, 0x3000, 1),
        (0x80_3000, 0x1000, 2),
        (0x80_4000, 0x1000, 3),
        (0x80_5000, 0x1000, 4),
    ];
    let mut meta = b"ASEV".to_vec();
    meta.extend_from_slice(&(16 + 12 * sections.len() as u32).to_le_bytes());
    meta.extend_from_slice(&1u32.to_le_bytes());
    meta.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (g, s, t) in sections {
        for v in [g, s, t] {
            meta.extend_from_slice(&v.to_le_bytes());
        }
    }
    let meta_from_end = 0x400u32;
    let at = size - meta_from_end as usize;
    data[at..at + meta.len()].copy_from_slice(&meta);
    let entries: [(Guid, Vec<u8>); 3] = [
        (SVSM_INFO_GUID, entry.to_le_bytes().to_vec()),
        (SEV_ES_RESET_BLOCK_GUID, 0u32.to_le_bytes().to_vec()),
        (SEV_METADATA_GUID, meta_from_end.to_le_bytes().to_vec()),
    ];
    let mut table = Vec::new();
    for (guid, payload) in entries.iter().rev() {
        table.extend_from_slice(payload);
        table.extend_from_slice(&(payload.len() as u16 + 18).to_le_bytes());
        table.extend_from_slice(&guid.0);
    }
    table.extend_from_slice(&(table.len() as u16 + 18).to_le_bytes());
    table.extend_from_slice(&snp::FOOTER_GUID.0);
    let end = size - 32;
    data[end - table.len()..end].copy_from_slice(&table);
    data
}

/// COCONUT-SVSM mode with a synthetic SVSM image (no real one is shared).
#[test]
fn svsm_mode() {
    let Some(fx) = Fixture::new("svsm") else {
        return;
    };
    let svsm = fx.dir.join("svsm.bin");
    std::fs::write(&svsm, svsm_image(16, 0x1230)).unwrap();
    let mut cases = Vec::new();
    for (vcpus, vars) in [(1, 0x2_0000), (4, 0x4_0000)] {
        cases.push(Case {
            mode: "snp:svsm",
            svsm: Some(svsm.clone()),
            vars_size: Some(vars),
            ..snp(fx.fw(SID), vcpus)
        });
    }
    cases.push(Case {
        mode: "snp:svsm",
        svsm: Some(svsm.clone()),
        vars_size: Some(0x2_0000),
        vcpu: Vcpu::Sig("0xa00f11"),
        ..snp(fx.fw("trixie-OVMF.fd"), 2)
    });
    agree(&fx, &cases);
}
