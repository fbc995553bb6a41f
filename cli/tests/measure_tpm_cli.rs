//! `provenix measure tpm` and the TPM part of `provenix measure manifest`
//! against the golden measured boot (target/vm/golden, written by
//! worker/tests/measured_boot.rs): the PCRs it predicts from the kernel,
//! initrd and command line equal those the VM's TPM held.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn provenix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provenix"))
        .args(args)
        .output()
        .unwrap()
}

fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// The golden boot's directory, or `None` after SKIP: it comes from the
/// measured_boot test, which `./run test` runs first (tests/README.md), so
/// with CI=true its absence is a failure.
fn golden() -> Option<PathBuf> {
    // tests/support/vm.rs writes it under $PROVENIX_VM_DIR when set.
    let dir = std::env::var_os("PROVENIX_VM_DIR")
        .map_or_else(|| target().join("vm"), PathBuf::from)
        .join("golden");
    if dir.join("eventlog.bin").is_file() {
        return Some(dir);
    }
    let why = format!(
        "no golden boot in {}: run `cargo test -p provenix-worker --test measured_boot` first",
        dir.display()
    );
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "CI=true: {why}"
    );
    eprintln!("SKIP: {why}");
    None
}

/// `pcrs-sha256.txt`: "INDEX HEX" lines, as the VM read them from sysfs.
fn golden_pcrs(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("pcrs-sha256.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(i, v)| (i.to_string(), v.to_ascii_lowercase()))
        .collect()
}

fn measure(dir: &Path, initrd: &Path) -> Value {
    let cmdline = std::fs::read_to_string(dir.join("cmdline")).unwrap();
    let out = provenix(&[
        "measure",
        "tpm",
        "--kernel",
        dir.join("vmlinuz").to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--append",
        cmdline.trim_end_matches('\n'),
        "--golden-log",
        dir.join("eventlog.bin").to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn predicted_pcrs_equal_the_golden_boots_tpm() {
    let Some(dir) = golden() else { return };
    let v = measure(&dir, &dir.join("initrd.img"));
    let tpm = golden_pcrs(&dir);
    let pcrs = v["pcrs"].as_object().unwrap();
    // PCRs 0-7 and 9 come from the firmware log; PCR 10 is IMA's, not in it.
    for i in ["0", "1", "2", "3", "4", "5", "6", "7", "9"] {
        assert_eq!(pcrs[i].as_str(), tpm.get(i).map(String::as_str), "PCR {i}");
    }
    let sources: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["kernel", "load-options", "initrd"]);

    // One byte more in the initrd: PCR 9 (its digest) and PCR 4 (QEMU
    // writes the initrd's size into the kernel header) change, nothing else.
    let changed = target().join(format!("tmp/measure-tpm-initrd-{}", std::process::id()));
    std::fs::create_dir_all(changed.parent().unwrap()).unwrap();
    let mut initrd = std::fs::read(dir.join("initrd.img")).unwrap();
    initrd.push(0);
    std::fs::write(&changed, &initrd).unwrap();
    let w = measure(&dir, &changed);
    std::fs::remove_file(&changed).unwrap();
    let differ: Vec<&String> = pcrs
        .keys()
        .filter(|k| w["pcrs"][k.as_str()] != pcrs[k.as_str()])
        .collect();
    assert_eq!(differ, ["4", "9"]);
}

#[test]
fn refusals_exit_1_with_the_reason_and_usage_errors_exit_2() {
    let not_pe = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = provenix(&[
        "measure",
        "tpm",
        "--boot",
        "uki",
        "--kernel",
        not_pe.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PE image: no PE signature at offset 0x0"),
        "{err}"
    );

    let out = provenix(&["measure", "tpm", "--kernel", "k", "--boot", "floppy"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn manifest_carries_events_and_pcrs() {
    let Some(dir) = golden() else { return };
    // The manifest's firmware part needs an OVMF with SEV metadata: the
    // shared folder's, unpacked for this test.
    let xz = std::env::var_os("PROVENIX_SHARED")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
            PathBuf::from,
        )
        .join("firmware/sid-OVMF.amdsev.fd.xz");
    let ovmf = target().join(format!("tmp/measure-tpm-ovmf-{}.fd", std::process::id()));
    let unpacked = Command::new("xz").arg("-dc").arg(&xz).output();
    match unpacked {
        Ok(o) if o.status.success() => std::fs::write(&ovmf, o.stdout).unwrap(),
        _ => {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "CI=true: cannot unpack {}",
                xz.display()
            );
            eprintln!("SKIP: cannot unpack {}", xz.display());
            return;
        }
    }
    let cmdline = std::fs::read_to_string(dir.join("cmdline")).unwrap();
    let desc = format!(
        r#"
commit = "0123456789abcdef0123456789abcdef01234567"
[firmware]
ovmf = "{}"
[boot]
kernel = "{}"
initrd = "{}"
append = "{}"
[tpm]
boot = "qemu-direct"
banks = ["sha256", "sha384"]
golden_log = "{}"
"#,
        ovmf.display(),
        dir.join("vmlinuz").display(),
        dir.join("initrd.img").display(),
        cmdline.trim_end_matches('\n'),
        dir.join("eventlog.bin").display(),
    );
    let path = target().join(format!("tmp/measure-tpm-image-{}.toml", std::process::id()));
    std::fs::write(&path, desc).unwrap();
    let out = provenix(&[
        "measure",
        "manifest",
        "--description",
        path.to_str().unwrap(),
    ]);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&ovmf).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tpm = m["tpm"].as_array().unwrap();
    assert_eq!(tpm.len(), 2);
    assert_eq!(tpm[0]["bank"], "sha256");
    assert_eq!(tpm[0]["events"].as_array().unwrap().len(), 3);
    let golden = golden_pcrs(&dir);
    assert_eq!(
        tpm[0]["pcrs"]["9"].as_str(),
        golden.get("9").map(String::as_str)
    );
    // It reads back, and its reference accepts the golden log.
    let manifest =
        provenix_measurements::manifest::Manifest::from_json(&String::from_utf8_lossy(&out.stdout))
            .unwrap();
    let log =
        provenix_firmware::tpm::EventLog::parse(&std::fs::read(dir.join("eventlog.bin")).unwrap())
            .unwrap();
    for r in &manifest.tpm {
        assert_eq!(r.check(&log), []);
    }
}
