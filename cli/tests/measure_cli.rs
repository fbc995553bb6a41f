//! `provenix measure snp` against `sev-snp-measure` 0.0.13, process against
//! process: the same stdout line and exit status class (0 digest, 1 inputs
//! refused, 2 usage error), the argument quirks, `--dump-vmsa` files, and
//! what `--json` adds.
//!
//! Needs the shared firmware (`PROVENIX_SHARED`, default `../shared`), the
//! reference tool (`sev-snp-measure` on PATH or `$PROVENIX_SNP_MEASURE`) and
//! `xz`; without them the tests print `SKIP`, or fail under `CI=true`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use ring::digest::{SHA256, digest};
use serde_json::Value;

const SID: &str = "sid-OVMF.amdsev.fd";
const BOOKWORM: &str = "bookworm-OVMF.fd";

struct Fixture {
    dir: PathBuf,
    tool: OsString,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {why}");
    }
    eprintln!("SKIP: {why}");
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
        if !Command::new(&tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            skip("the reference tool sev-snp-measure 0.0.13 is not runnable");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "provenix-measure-cli-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let fx = Fixture { dir, tool };
        for fw in [SID, BOOKWORM] {
            let out = Command::new("xz")
                .arg("-dc")
                .arg(firmware.join(format!("{fw}.xz")))
                .output();
            match out {
                Ok(out) if out.status.success() => {
                    std::fs::write(fx.dir.join(fw), out.stdout).unwrap()
                }
                _ => {
                    skip("xz is missing or failed");
                    return None;
                }
            }
        }
        std::fs::write(fx.dir.join("kernel"), pattern(7000, 1)).unwrap();
        std::fs::write(fx.dir.join("initrd"), pattern(12000, 2)).unwrap();
        Some(fx)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    /// Run the reference and ours with the same arguments in `cwd` (or the
    /// fixture's directory); return (exit, stdout) of each.
    fn both(&self, args: &[&str], cwd: Option<&Path>) -> ((i32, String), (i32, String)) {
        let cwd = cwd.unwrap_or(&self.dir);
        let run = |cmd: &mut Command| {
            let out = cmd.args(args).current_dir(cwd).output().unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8(out.stdout).unwrap(),
            )
        };
        let reference = run(&mut Command::new(&self.tool));
        let ours = run(Command::new(env!("CARGO_BIN_EXE_provenix")).args(["measure", "snp"]));
        (reference, ours)
    }

    fn agree(&self, args: &[&str]) -> String {
        let (reference, ours) = self.both(args, None);
        assert_eq!(ours, reference, "{args:?}");
        reference.1
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The same line on stdout and exit 0: hex, base64 (with padding for the
/// 32-byte SEV digest), verbose in every mode.
#[test]
fn output_formats() {
    let Some(fx) = Fixture::new("formats") else {
        return;
    };
    let (sid, kernel, initrd) = (fx.path(SID), fx.path("kernel"), fx.path("initrd"));
    let boot = [
        "--ovmf",
        &sid,
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--append",
        "console=ttyS0",
    ];
    for extra in [
        &["--mode", "snp", "--vcpus", "4", "--vcpu-type", "EPYC-Milan"][..],
        &[
            "--mode",
            "snp",
            "--vcpus",
            "4",
            "--vcpu-type",
            "EPYC-Milan",
            "--output-format",
            "base64",
        ],
        &[
            "--mode",
            "snp",
            "--vcpus",
            "2",
            "--vcpu-sig",
            "0xa00f11",
            "-v",
        ],
        &[
            "--mode",
            "seves",
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--verbose",
        ],
        &["--mode", "sev", "--output-format", "base64", "-v"],
    ] {
        let out = fx.agree(&[extra, &boot[..]].concat());
        assert!(!out.trim().is_empty());
    }
}

/// The reference's argument handling: abbreviations, the last repeated
/// option wins, zero signature falls through to the type, empty strings
/// are absent, and snp:ovmf-hash ignores every other option.
#[test]
fn argument_quirks() {
    let Some(fx) = Fixture::new("quirks") else {
        return;
    };
    let (sid, kernel) = (fx.path(SID), fx.path("kernel"));
    for args in [
        &[
            "--mod",
            "snp",
            "--ov",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-ty",
            "EPYC-v4",
        ][..],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpus",
            "3",
            "--vcpu-type",
            "EPYC",
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-sig",
            "0",
            "--vcpu-type",
            "EPYC-Rome",
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-family",
            "0",
            "--vcpu-type",
            "EPYC",
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--append",
            "",
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--kernel",
            "",
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--kernel",
            &kernel,
            "--initrd",
            "",
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--guest-features",
            "33",
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vmm-type",
            "gce",
        ],
        &[
            "--mode",
            "snp:ovmf-hash",
            "--ovmf",
            &sid,
            "--initrd",
            "x",
            "--output-format",
            "base64",
            "-v",
        ],
    ] {
        let out = fx.agree(args);
        assert_eq!(out.trim().len(), 96, "{args:?}");
    }
}

/// Usage errors exit 2 on both sides; refusals of the inputs exit 1.
#[test]
fn exit_status_classes() {
    let Some(fx) = Fixture::new("exits") else {
        return;
    };
    let (sid, bookworm, kernel) = (fx.path(SID), fx.path(BOOKWORM), fx.path("kernel"));
    let usage: [&[&str]; 9] = [
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--initrd",
            &kernel,
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--append",
            "x",
        ],
        &["--mode", "snp", "--ovmf", &sid, "--vcpu-type", "EPYC"],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--vmm-type",
            "qemu",
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC-Zen9",
        ],
        &["--mode", "snp", "--ovmf", &sid, "--vcpus", "2"],
        &["--ovmf", &sid, "--vcpus", "2", "--vcpu-type", "EPYC"],
        &["--mode", "sev", "--ovmf", &sid, "--dump-vmsa"],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "two",
            "--vcpu-type",
            "EPYC",
        ],
    ];
    for args in usage {
        let ((code, _), (ours, _)) = fx.both(args, None);
        assert_eq!((code, ours), (2, 2), "{args:?}");
    }
    let refused: [&[&str]; 5] = [
        &[
            "--mode",
            "snp",
            "--ovmf",
            &bookworm,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--kernel",
            &kernel,
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            "/nonexistent/OVMF.fd",
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
        ],
        &[
            "--mode",
            "seves",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--snp-ovmf-hash",
            &"ab".repeat(48),
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--snp-ovmf-hash",
            "abcd",
        ],
        &[
            "--mode",
            "snp",
            "--ovmf",
            &sid,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--kernel",
            "/nonexistent/vmlinuz",
        ],
    ];
    for args in refused {
        let ((code, out), (ours, our_out)) = fx.both(args, None);
        assert_eq!((code, ours), (1, 1), "{args:?}");
        assert!(out.is_empty() && our_out.is_empty(), "{args:?}");
    }
}

/// Where the reference would drop an input silently, we refuse (a
/// documented difference): `--kernel ""` with an initrd.
#[test]
fn empty_kernel_with_initrd_is_refused() {
    let Some(fx) = Fixture::new("empty-kernel") else {
        return;
    };
    let (sid, initrd) = (fx.path(SID), fx.path("initrd"));
    let args = [
        "--mode",
        "snp",
        "--ovmf",
        &sid,
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC",
        "--kernel",
        "",
        "--initrd",
        &initrd,
    ];
    let ((code, _), (ours, _)) = fx.both(&args, None);
    assert_eq!((code, ours), (0, 2));
}

/// `--dump-vmsa` writes the same vmsa<N>.bin files.
#[test]
fn dump_vmsa_files() {
    let Some(fx) = Fixture::new("dump") else {
        return;
    };
    let sid = fx.path(SID);
    for (mode, vcpus, vmm) in [
        ("snp", "3", "QEMU"),
        ("seves", "2", "QEMU"),
        ("snp", "2", "ec2"),
    ] {
        let theirs = fx.dir.join(format!("theirs-{mode}-{vmm}"));
        let ours = fx.dir.join(format!("ours-{mode}-{vmm}"));
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::create_dir_all(&ours).unwrap();
        let args = [
            "--mode",
            mode,
            "--ovmf",
            &sid,
            "--vcpus",
            vcpus,
            "--vcpu-type",
            "EPYC-v4",
            "--vmm-type",
            vmm,
            "--dump-vmsa",
        ];
        let (reference, _) = fx.both(&args, Some(&theirs));
        let (_, mine) = fx.both(&args, Some(&ours));
        assert_eq!(reference.0, 0);
        assert_eq!(mine.0, 0);
        let n: usize = vcpus.parse().unwrap();
        for i in 0..n {
            let name = format!("vmsa{i}.bin");
            let a = std::fs::read(theirs.join(&name)).unwrap();
            let b = std::fs::read(ours.join(&name)).unwrap();
            assert_eq!(a.len(), 4096);
            assert!(a == b, "{mode} {vmm} {name} differs");
        }
        assert!(!ours.join(format!("vmsa{n}.bin")).exists());
    }
}

/// `--json` carries every intermediate value, each checkable on its own.
#[test]
fn json_intermediates() {
    let Some(fx) = Fixture::new("json") else {
        return;
    };
    let (sid, kernel, initrd) = (fx.path(SID), fx.path("kernel"), fx.path("initrd"));
    let append = "console=ttyS0  root=/dev/vda é";
    let base = [
        "--mode",
        "snp",
        "--ovmf",
        &sid,
        "--vcpus",
        "4",
        "--vcpu-type",
        "EPYC-Genoa",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--append",
        append,
    ];
    let line = fx.agree(&base);
    let (_, firmware_hash) = fx
        .both(&["--mode", "snp:ovmf-hash", "--ovmf", &sid], None)
        .0;
    let out = Command::new(env!("CARGO_BIN_EXE_provenix"))
        .args(["measure", "snp"])
        .args(base)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["measurement"], line.trim());
    assert_eq!(json["firmware_hash"], firmware_hash.trim());
    let sha = |b: &[u8]| hex::encode(digest(&SHA256, b));
    let kh = &json["kernel_hashes"];
    assert_eq!(kh["kernel_sha256"], sha(&pattern(7000, 1)));
    assert_eq!(kh["initrd_sha256"], sha(&pattern(12000, 2)));
    assert_eq!(kh["cmdline_sha256"], sha(format!("{append}\0").as_bytes()));
    let table = hex::decode(json["hashes_table"].as_str().unwrap()).unwrap();
    assert_eq!(table.len(), 176);
    assert_eq!(
        hex::encode(&table[18 + 18..18 + 50]),
        kh["cmdline_sha256"].as_str().unwrap()
    );
    // The AmdSev image's seven sections, in table order: the kernel hashes
    // page (0x810000) comes after the section above it (0x811000).
    let sections = json["sections"].as_array().unwrap();
    let order: Vec<(&str, &str, u64)> = sections
        .iter()
        .map(|s| {
            (
                s["section"].as_str().unwrap(),
                s["page_type"].as_str().unwrap(),
                s["gpa"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("SNP_SEC_MEM", "ZERO", 0x80_0000),
            ("SNP_SEC_MEM", "ZERO", 0x80_a000),
            ("SNP_SECRETS", "SECRETS", 0x80_d000),
            ("CPUID", "CPUID", 0x80_e000),
            ("SVSM_CAA", "ZERO", 0x80_f000),
            ("SNP_SEC_MEM", "ZERO", 0x81_1000),
            ("SNP_KERNEL_HASHES", "NORMAL", 0x81_0000),
        ]
    );
    let vmsas = json["vmsas"].as_array().unwrap();
    assert_eq!(vmsas.len(), 4);
    assert_eq!(vmsas[3]["digest"], json["measurement"]);
    assert_eq!(vmsas[1]["vmsa_sha384"], vmsas[3]["vmsa_sha384"]);
    assert_ne!(vmsas[0]["vmsa_sha384"], vmsas[1]["vmsa_sha384"]);
}
