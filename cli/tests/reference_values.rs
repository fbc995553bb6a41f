//! Reference-value manifests end to end: `provenix measure manifest` writes
//! one from an image description; every value in it equals what the
//! reference tool computes for the same shape; a policy naming it accepts a
//! report with one of its measurements, for an accepted commit only.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind, ark_fingerprint};
use provenix_firmware::snp::Product;
use provenix_measurements::manifest::{FirmwareSource, Manifest};
use provenix_verifier::{Policy, Verifier};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OTHER_COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
const AT: i64 = 1_780_272_000;

fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {why}"
    );
    eprintln!("SKIP: {why}");
}

/// A scratch folder with the sid AmdSev firmware (the one with kernel
/// hashes), a kernel, an initrd and an image description.
fn fixture(name: &str) -> Option<PathBuf> {
    let shared = std::env::var_os("PROVENIX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let xz = shared.join("firmware/sid-OVMF.amdsev.fd.xz");
    if !xz.is_file() {
        skip(&format!(
            "{} is missing (set PROVENIX_SHARED)",
            xz.display()
        ));
        return None;
    }
    let dir = std::env::temp_dir().join(format!("provenix-refvals-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("xz").arg("-dc").arg(&xz).output();
    let Ok(out) = out.map(|o| o.stdout) else {
        skip("xz is missing");
        return None;
    };
    std::fs::write(dir.join("OVMF.amdsev.fd"), out).unwrap();
    std::fs::write(
        dir.join("vmlinuz"),
        (0..200_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(
        dir.join("initrd.img"),
        (0..300_000u32)
            .map(|i| (i * 13 % 253) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(
        dir.join("image.toml"),
        format!(
            r#"
commit = "{COMMIT}"
description = "test image"

[firmware]
ovmf = "OVMF.amdsev.fd"

[boot]
kernel = "vmlinuz"
initrd = "initrd.img"
append = "console=ttyS0 provenix.role=worker"

[[snp]]
vmm = "QEMU"
vcpu_type = "EPYC-Milan"
vcpus = [1, 4]

[[snp]]
vmm = "QEMU"
vcpu_sig = "0x00b10f10"
vcpus = [2]
guest_features = "0x21"

[[snp]]
vmm = "gce"
vcpus = [2]

[[snp]]
vmm = "ec2"
vcpus = [2]
"#
        ),
    )
    .unwrap();
    Some(dir)
}

fn provenix(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_provenix"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_manifest(dir: &Path) -> Manifest {
    let out = dir.join("manifest.json");
    let run = provenix(&[
        "measure",
        "manifest",
        "--description",
        s(&dir.join("image.toml")),
        "--out",
        s(&out),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    Manifest::read(&out).unwrap()
}

#[test]
fn every_value_agrees_with_the_reference_tool() {
    let Some(dir) = fixture("agree") else { return };
    let manifest = write_manifest(&dir);
    assert_eq!(manifest.commit, COMMIT);
    assert_eq!(manifest.snp.len(), 5);
    assert_eq!(manifest.image.firmware.source, FirmwareSource::Computed);
    assert_eq!(
        manifest.image.cmdline.as_deref(),
        Some("console=ttyS0 provenix.role=worker")
    );
    // The same file twice is the same bytes.
    let again = provenix(&[
        "measure",
        "manifest",
        "--description",
        s(&dir.join("image.toml")),
    ]);
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        std::fs::read_to_string(dir.join("manifest.json")).unwrap()
    );

    let tool = std::env::var_os("PROVENIX_SNP_MEASURE").unwrap_or("sev-snp-measure".into());
    if Command::new(&tool).arg("--version").output().is_err() {
        skip("sev-snp-measure is not runnable (set PROVENIX_SNP_MEASURE)");
        return;
    }
    let base = |extra: &[String]| {
        let mut args: Vec<String> = vec![
            "--mode".into(),
            "snp".into(),
            "--ovmf".into(),
            s(&dir.join("OVMF.amdsev.fd")).into(),
            "--kernel".into(),
            s(&dir.join("vmlinuz")).into(),
            "--initrd".into(),
            s(&dir.join("initrd.img")).into(),
            "--append".into(),
            "console=ttyS0 provenix.role=worker".into(),
        ];
        args.extend_from_slice(extra);
        let out = Command::new(&tool).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    for r in &manifest.snp {
        let vmm = match r.vmm {
            provenix_measurements::snp::VmmType::Qemu => "QEMU",
            provenix_measurements::snp::VmmType::Ec2 => "ec2",
            _ => "gce",
        };
        let mut extra = vec![
            "--vcpus".to_owned(),
            r.vcpus.to_string(),
            "--vmm-type".into(),
            vmm.into(),
            "--guest-features".into(),
            r.guest_features.clone(),
        ];
        match &r.vcpu_type {
            Some(t) => extra.extend(["--vcpu-type".into(), t.clone()]),
            None => extra.extend(["--vcpu-sig".into(), r.vcpu_sig.clone()]),
        }
        assert_eq!(base(&extra), r.measurement, "{r:?}");
    }
    let fw = Command::new(&tool)
        .args([
            "--mode",
            "snp:ovmf-hash",
            "--ovmf",
            s(&dir.join("OVMF.amdsev.fd")),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(fw.stdout).unwrap().trim(),
        manifest.image.firmware.snp_firmware_hash
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_vendor_firmware_hash_is_recorded_as_such() {
    let Some(dir) = fixture("vendor") else { return };
    let own = write_manifest(&dir);
    // A vendor publishing the same firmware hash yields the same values.
    let text = std::fs::read_to_string(dir.join("image.toml")).unwrap().replace(
        "ovmf = \"OVMF.amdsev.fd\"",
        &format!(
            "ovmf = \"OVMF.amdsev.fd\"\nvendor = \"Example Cloud firmware 42\"\nsnp_firmware_hash = \"{}\"",
            own.image.firmware.snp_firmware_hash
        ),
    );
    std::fs::write(dir.join("image.toml"), text).unwrap();
    let vendor = write_manifest(&dir);
    assert_eq!(vendor.image.firmware.source, FirmwareSource::Vendor);
    assert_eq!(vendor.image.firmware.name, "Example Cloud firmware 42");
    assert_eq!(vendor.snp, own.snp);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_policy_naming_the_manifest_accepts_its_measurements_only() {
    let Some(dir) = fixture("policy") else { return };
    let manifest = write_manifest(&dir);
    let platform = SimPlatform::new(&ChainParams {
        product: Product::Genoa,
        kind: VekKind::Vcek,
        tcb: ReportParams::default().tcb,
        hw_id: [3; 64],
        not_before: AT - 86_400,
        not_after: AT + 86_400,
    })
    .unwrap();
    let report_with = |measurement: &str| {
        let mut m = [0u8; 48];
        hex::decode_to_slice(measurement, &mut m).unwrap();
        platform
            .report(&ReportParams {
                product: Product::Genoa,
                chip_id: [3; 64],
                measurement: m,
                ..ReportParams::default()
            })
            .unwrap()
    };
    let chain = vec![
        platform.chain().ask_der().to_vec(),
        platform.chain().ark_der().to_vec(),
    ];
    let policy_for = |commits: &str| {
        let path = dir.join("policy.toml");
        std::fs::write(
            &path,
            format!(
                "[[roots]]\nname = \"sim\"\nproduct = \"Genoa\"\nsha256 = \"{}\"\n[snp]\nreference_values = [\"manifest.json\"]\n{commits}",
                hex::encode(ark_fingerprint(Product::Genoa))
            ),
        )
        .unwrap();
        Policy::load(&path)
    };
    let policy = policy_for(&format!("accepted_commits = [\"{COMMIT}\"]\n")).unwrap();
    let verifier = Verifier::new(policy.anchors().unwrap());
    let gce = manifest
        .snp
        .iter()
        .find(|r| r.vcpus == 2 && r.vcpu_type.is_none() && r.vcpu_sig == "0x00000000")
        .unwrap();
    let auth = verifier
        .authenticate(
            &report_with(&gce.measurement),
            platform.chain().vek_der(),
            &chain,
            AT,
        )
        .unwrap();
    let verified = policy.appraise(auth).unwrap();
    let matched = verified.reference().unwrap();
    assert_eq!(matched.commit, COMMIT);
    assert_eq!(matched.shape, *gce);

    // A measurement the manifest does not list.
    let auth = verifier
        .authenticate(
            &report_with(&"ab".repeat(48)),
            platform.chain().vek_der(),
            &chain,
            AT,
        )
        .unwrap();
    let rejection = policy.appraise(auth).unwrap_err();
    assert_eq!(rejection.findings[0].field, "measurement");
    assert!(
        rejection.findings[0].expected.contains(COMMIT),
        "{rejection}"
    );

    // The manifest's commit is not accepted: the policy itself is refused.
    let err = policy_for(&format!("accepted_commits = [\"{OTHER_COMMIT}\"]\n")).unwrap_err();
    assert!(err.to_string().contains("accepted commit"), "{err}");

    // A manifest that is not one.
    std::fs::write(
        dir.join("manifest.json"),
        "{\"format\": \"something-else\"}",
    )
    .unwrap();
    let err = policy_for("").unwrap_err();
    assert!(err.to_string().contains("manifest.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn manifests_are_validated() {
    let good = r#"{"format":"provenix-reference-values","version":1,"commit":"0123456789abcdef0123456789abcdef01234567",
        "image":{"firmware":{"source":"computed","name":"x","sha256":"00000000000000000000000000000000000000000000000000000000000000aa",
        "snp_firmware_hash":"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}},
        "snp":[{"vmm":"QEMU","vcpus":1,"vcpu_sig":"0x00a00f11","guest_features":"0x1",
        "measurement":"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}]}"#;
    Manifest::from_json(good).unwrap();
    for (from, to, needle) in [
        ("\"version\":1", "\"version\":2", "version 2"),
        ("provenix-reference-values", "other", "format"),
        ("0123456789abcdef0123456789abcdef01234567", "HEAD", "commit"),
        ("\"vmm\":\"QEMU\"", "\"vmm\":\"kvm\"", "kvm"),
        ("\"vcpus\":1,", "\"vcpus\":1,\"extra\":2,", "extra"),
        (
            "\"guest_features\":\"0x1\"",
            "\"guest_features\":\"one\"",
            "guest_features",
        ),
        (
            "\"snp_firmware_hash\":\"00",
            "\"snp_firmware_hash\":\"",
            "snp_firmware_hash",
        ),
    ] {
        let bad = good.replacen(from, to, 1);
        let err = Manifest::from_json(&bad).unwrap_err();
        assert!(err.to_string().contains(needle), "{from} -> {to}: {err}");
    }
}
