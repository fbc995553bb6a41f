//! `provenix verify` as users run it: direct-mode bundles from three
//! simulated chips (written here with the firmware simulator, as the worker
//! writes them), one of them for a tampered output; the threshold from a
//! policy file; exit codes, text and `--json`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/evidence.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{provenix, sim_chip, unix_now};
use provenix_firmware::sim::{ReportParams, SimPlatform, ark_fingerprint};
use provenix_firmware::snp::Product;
use provenix_verifier::{Bundle, SnpEvidence, Statement, Subject, statement_report_data};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::Value;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The simulator's launch measurement: it launches no image, so all zeros.
const SIM_MEASUREMENT: &str = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("provenix-vcli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A direct-mode bundle: `platform` attests a statement that `subject`
/// has the digest of `content`. Returns the bundle and the worker key.
fn bundle(platform: &SimPlatform, subject: Subject, content: &[u8]) -> (Vec<u8>, [u8; 32]) {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
    let statement = Statement {
        subject,
        sha256: ring::digest::digest(&ring::digest::SHA256, content)
            .as_ref()
            .try_into()
            .unwrap(),
        size: content.len().try_into().unwrap(),
        references: Vec::new(),
        deriver: None,
        worker_key: public,
        source_commit: COMMIT.into(),
        log_index: None,
        time: unix_now(),
        nix_signature: None,
        trace: None,
    };
    let p = platform.chain().params();
    let report = platform
        .report_bytes(&ReportParams {
            product: p.product,
            tcb: p.tcb,
            chip_id: p.hw_id,
            report_data: statement_report_data(&statement.to_cbor()),
            ..ReportParams::default()
        })
        .unwrap();
    let b = Bundle::Direct {
        statement: statement.sign(&key).unwrap(),
        evidence: SnpEvidence {
            report: report.to_vec(),
            cert_table: Some(platform.cert_table().unwrap()),
            vek: None,
        }
        .into(),
    };
    (b.to_cbor(), public)
}

fn write_policy(dir: &Path, threshold: &str) -> PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        format!(
            "trust_amd_roots = false\n\
             [[roots]]\nname = \"sim\"\nproduct = \"Milan\"\nsha256 = \"{}\"\n\
             [snp]\naccepted_commits = [\"{COMMIT}\"]\n\
             measurements = [\"{SIM_MEASUREMENT}\"]\n\
             [threshold]\n{threshold}\n",
            hex::encode(ark_fingerprint(Product::Milan))
        ),
    )
    .unwrap();
    path
}

struct Setup {
    dir: PathBuf,
    artifact: PathBuf,
    bundles: PathBuf,
    tampered_key: [u8; 32],
}

/// Three chips attest `app.bin`; chip 3 for other content. A fourth bundle
/// is chip 1's for another file (a replay candidate).
fn setup(name: &str) -> Setup {
    let dir = scratch(name);
    let artifact = dir.join("app.bin");
    std::fs::write(&artifact, b"honest output\n").unwrap();
    let bundles = dir.join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    let subject = || Subject::File("app.bin".into());
    let (a, _) = bundle(&sim_chip(1), subject(), b"honest output\n");
    let (b, _) = bundle(&sim_chip(2), subject(), b"honest output\n");
    let (c, tampered_key) = bundle(&sim_chip(3), subject(), b"tampered output\n");
    let (other, _) = bundle(&sim_chip(1), Subject::File("other.bin".into()), b"x");
    for (n, bytes) in [("a", a), ("b", b), ("c", c), ("other", other)] {
        std::fs::write(bundles.join(format!("{n}.provenix")), bytes).unwrap();
    }
    std::fs::write(bundles.join("notes.txt"), "not a bundle").unwrap();
    Setup {
        dir,
        artifact,
        bundles,
        tampered_key,
    }
}

#[test]
fn two_of_three_accepts_naming_the_dissenter() {
    let s = setup("2of3");
    let policy = write_policy(&s.dir, "m = 2\ndistinct = \"chip\"");
    let (code, out, err) = provenix(&[
        "verify",
        "--policy",
        policy.to_str().unwrap(),
        "--bundles",
        s.bundles.to_str().unwrap(),
        "--artifact",
        s.artifact.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ACCEPTED app.bin: sha256:"), "{out}");
    assert!(out.contains("2 of 2 required distinct by chip"), "{out}");
    let dissenter = format!("worker {}", hex::encode(&s.tampered_key[..8]));
    assert!(out.contains(&format!("not counted: {dissenter}")), "{out}");
    assert!(out.contains("builders disagree"), "{out}");
    assert!(
        !out.contains("other.bin"),
        "other subjects are skipped: {out}"
    );

    let (code, out, _) = provenix(&[
        "verify",
        "--json",
        "--policy",
        policy.to_str().unwrap(),
        "--bundles",
        s.bundles.to_str().unwrap(),
        "--artifact",
        s.artifact.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], "provenix.verify/v1");
    assert_eq!(v["verdict"], "accepted");
    assert_eq!(v["threshold"]["m"], 2);
    let subject = &v["subjects"][0];
    assert_eq!(subject["subject"]["kind"], "file");
    assert_eq!(subject["subject"]["name"], "app.bin");
    assert_eq!(subject["counted"].as_array().unwrap().len(), 2);
    assert_eq!(subject["excluded"][0]["builder"]["name"], dissenter);
    assert_eq!(
        subject["excluded"][0]["reasons"][0]["code"],
        "digest_mismatch"
    );
    assert_eq!(subject["disagreement"].as_array().unwrap().len(), 2);
}

#[test]
fn three_of_three_rejects_and_replays_are_reported() {
    let s = setup("3of3");
    let policy = write_policy(&s.dir, "m = 3\ndistinct = \"chip\"");
    let b = |n: &str| s.bundles.join(format!("{n}.provenix"));
    let (code, out, err) = provenix(&[
        "verify",
        "--policy",
        policy.to_str().unwrap(),
        "--artifact",
        s.artifact.to_str().unwrap(),
        "--bundle",
        b("a").to_str().unwrap(),
        b("b").to_str().unwrap(),
        b("c").to_str().unwrap(),
        b("other").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("REJECTED app.bin:"), "{out}");
    assert!(out.contains("2 distinct builder(s) by chip agree, the policy requires 3"));
    assert!(out.contains("the statement is about other.bin"), "{out}");
}

#[test]
fn without_a_subject_every_named_subject_is_decided() {
    let s = setup("nosubject");
    let policy = write_policy(&s.dir, "m = 1");
    let (code, out, err) = provenix(&[
        "verify",
        "--policy",
        policy.to_str().unwrap(),
        "--bundles",
        s.bundles.to_str().unwrap(),
    ]);
    // app.bin: with nothing to compare against and m = 1, both the honest
    // and the tampered digest reach the threshold: a conflict, rejected.
    // other.bin: one bundle, accepted.
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("REJECTED app.bin: no digest"), "{out}");
    assert!(out.contains("builders state 2 different digests"), "{out}");
    assert!(!out.contains("0 distinct builder(s)"), "{out}");
    assert!(out.contains("ACCEPTED other.bin"), "{out}");
    // m = 2: the honest digest alone reaches it.
    let policy = write_policy(&s.dir, "m = 2");
    let (code, out, err) = provenix(&[
        "verify",
        "--policy",
        policy.to_str().unwrap(),
        "--bundles",
        s.bundles.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "other.bin has one builder: {out}{err}");
    assert!(out.contains("ACCEPTED app.bin"), "{out}");
    assert!(out.contains("REJECTED other.bin"), "{out}");
}

#[test]
fn store_paths_are_compared_by_nar_and_errors_exit_2() {
    let s = setup("store");
    let out_path = s.dir.join("store").join("abc-hello");
    std::fs::create_dir_all(&out_path).unwrap();
    std::fs::write(out_path.join("greeting"), b"hi\n").unwrap();
    let nar = provenix_verifier::nar::hash_path(&out_path).unwrap();
    let name = out_path.to_str().unwrap().to_owned();
    let mut nar_bytes = Vec::new();
    provenix_verifier::nar::dump(&out_path, &mut nar_bytes).unwrap();
    assert_eq!(nar_bytes.len(), usize::try_from(nar.size).unwrap());
    let (good, _) = bundle(&sim_chip(1), Subject::StorePath(name.clone()), &nar_bytes);
    let (bad, _) = bundle(
        &sim_chip(2),
        Subject::StorePath(name.clone()),
        b"not the NAR",
    );
    let dir = s.dir.join("store-bundles");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.provenix"), good).unwrap();
    std::fs::write(dir.join("bad.provenix"), bad).unwrap();
    let policy = write_policy(&s.dir, "m = 1");
    let run = |extra: &[&str]| {
        let mut args = vec!["verify", "--policy", policy.to_str().unwrap()];
        args.extend_from_slice(extra);
        provenix(&args)
    };
    let (code, out, err) = run(&["--bundles", dir.to_str().unwrap(), "--store-path", &name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("states sha256:"), "{out}");
    let policy2 = write_policy(&s.dir, "m = 2");
    let (code, out, _) = provenix(&[
        "verify",
        "--policy",
        policy2.to_str().unwrap(),
        "--bundles",
        dir.to_str().unwrap(),
        "--store-path",
        &name,
    ]);
    assert_eq!(code, 1, "{out}");

    // Errors: a missing store path, a bad policy, no bundle source.
    let (code, _, err) = run(&[
        "--bundles",
        dir.to_str().unwrap(),
        "--store-path",
        "/nonexistent/x",
    ]);
    assert_eq!(code, 2, "{err}");
    let bad_policy = s.dir.join("bad.toml");
    std::fs::write(&bad_policy, "[threshold]\nm = 0\n").unwrap();
    let (code, _, err) = provenix(&[
        "verify",
        "--policy",
        bad_policy.to_str().unwrap(),
        "--bundles",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("m = 0"), "{err}");
    let (code, _, _) = provenix(&["verify", "--artifact", s.artifact.to_str().unwrap()]);
    assert_eq!(code, 2);
}
