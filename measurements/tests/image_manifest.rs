//! The worker image's manifest.json (`./run image`, docs/image.md) against
//! AMD's reference tool: every SEV-SNP launch digest it lists must be what
//! `sev-snp-measure` 0.0.13 computes from the same files (OVMF.amdsev.fd,
//! vmlinuz, initrd.img, cmdline) for that shape.
//!
//! Needs the image in $PROVENIX_IMAGE_DIR (default target/image; `./run
//! test` builds it first) and the reference tool ($PROVENIX_SNP_MEASURE).
//! Without them: SKIP, or with CI=true a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use provenix_measurements::manifest::Manifest;

#[test]
fn every_snp_digest_of_the_image_manifest_is_sev_snp_measures() {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let skip = |why: &str| {
        assert!(!ci, "CI=true: image_manifest: {why}");
        eprintln!("SKIP: image_manifest: {why}");
    };
    let image = std::env::var_os("PROVENIX_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image"));
    if !image.join("manifest.json").is_file() {
        return skip(&format!("no image in {} (./run image)", image.display()));
    }
    let tool = std::env::var_os("PROVENIX_SNP_MEASURE").unwrap_or("sev-snp-measure".into());
    if !Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return skip("sev-snp-measure is not runnable (set PROVENIX_SNP_MEASURE)");
    }
    let manifest = Manifest::read(&image.join("manifest.json")).unwrap();
    let cmdline = std::fs::read_to_string(image.join("cmdline")).unwrap();
    assert_eq!(manifest.image.cmdline.as_deref(), Some(cmdline.as_str()));
    assert!(
        !manifest.snp.is_empty(),
        "the image's manifest has no SEV-SNP values"
    );
    for shape in &manifest.snp {
        let mut command = Command::new(&tool);
        command
            .args(["--mode", "snp", "--output-format", "hex"])
            .arg("--vcpus")
            .arg(shape.vcpus.to_string())
            .arg("--vmm-type")
            .arg(shape.vmm.to_string())
            .arg("--guest-features")
            .arg(&shape.guest_features)
            .arg("--ovmf")
            .arg(image.join("OVMF.amdsev.fd"))
            .arg("--kernel")
            .arg(image.join("vmlinuz"))
            .arg("--initrd")
            .arg(image.join("initrd.img"))
            .arg("--append")
            .arg(&cmdline);
        match &shape.vcpu_type {
            Some(t) => command.arg("--vcpu-type").arg(t),
            None => command.arg("--vcpu-sig").arg(&shape.vcpu_sig),
        };
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "sev-snp-measure for {shape:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            shape.measurement,
            "{} vCPUs of {:?}",
            shape.vcpus,
            shape.vcpu_type
        );
    }
    eprintln!(
        "image_manifest: {} SEV-SNP digests equal sev-snp-measure's",
        manifest.snp.len()
    );
}
