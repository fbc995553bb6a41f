//! Distinct hardware is counted from what the hardware signed, through
//! `provenix verify`: two workers on one VLEK are one builder, a VLEK
//! certificate re-encoded outside its signed part is refused, two runs on
//! one chip are one builder by default, and `distinct = "key"` counts keys
//! only when the policy says so.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/evidence.rs"]
mod common;
#[path = "../../tests/support/logged.rs"]
mod logged;

use std::path::Path;

use logged::{TempDir, Worker, file_statement, now, policy_file};
use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind};
use provenix_firmware::snp::Product;
use provenix_verifier::{Bundle, SnpEvidence, Statement, statement_report_data};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

const CONTENT: &[u8] = b"one artifact, several builders\n";

/// A fresh worker key.
fn key() -> (Ed25519KeyPair, [u8; 32]) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = key.public_key().as_ref().try_into().unwrap();
    (key, public)
}

/// A direct bundle about the artifact by the worker key `key` on
/// `platform`, with `vek` (when given) instead of the table's VCEK/VLEK.
fn direct(
    platform: &SimPlatform,
    (key, public): (&Ed25519KeyPair, [u8; 32]),
    vek: Option<Vec<u8>>,
) -> Vec<u8> {
    let signed = file_statement(key, public, CONTENT, None);
    let statement = Statement::verify(&signed).unwrap();
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
    Bundle::Direct {
        statement: signed,
        evidence: SnpEvidence {
            report: report.to_vec(),
            cert_table: Some(platform.cert_table().unwrap()),
            vek,
        }
        .into(),
    }
    .to_cbor()
}

/// `provenix verify` of `bundles` (written to `dir`) about the artifact:
/// the exit code and the JSON decision.
fn verify(dir: &Path, policy: &Path, bundles: &[(&str, Vec<u8>)]) -> (i32, serde_json::Value) {
    let artifact = dir.join("artifact");
    std::fs::write(&artifact, CONTENT).unwrap();
    let mut args = vec!["verify".to_owned()];
    for (name, bytes) in bundles {
        let path = dir.join(format!("{name}.provenix"));
        std::fs::write(&path, bytes).unwrap();
        args.extend(["--bundle".into(), path.to_str().unwrap().to_owned()]);
    }
    args.extend(
        [
            "--artifact",
            artifact.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--json",
        ]
        .map(str::to_owned),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = common::provenix(&refs);
    let json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, json)
}

/// The reason codes of every bundle not counted.
fn excluded(json: &serde_json::Value) -> Vec<String> {
    json["subjects"][0]["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["reasons"].as_array().unwrap().clone())
        .map(|r| format!("{}: {}", r["code"], r["message"]))
        .collect()
}

#[test]
fn one_vlek_is_one_builder_however_its_certificate_is_encoded() {
    let tmp = TempDir::new("units-vlek");
    let dir = tmp.path();
    let vlek = SimPlatform::new(&ChainParams {
        product: Product::Milan,
        kind: VekKind::Vlek,
        tcb: ReportParams::default().tcb,
        hw_id: [9; 64],
        not_before: now() - 86_400,
        not_after: now() + 86_400,
    })
    .unwrap();
    let (a, b, c) = (key(), key(), key());
    // The VLEK's outer SEQUENCE length with one more octet than DER
    // allows: the signature, over the TBS only, still verifies.
    let der = vlek.chain().vek_der();
    assert_eq!(der[1], 0x82);
    let mut reencoded = vec![0x30, 0x83, 0x00];
    reencoded.extend_from_slice(&der[2..]);

    // Default distinct (chip): three workers on one VLEK are one builder.
    let m2 = policy_file(dir, "[threshold]\nm = 2\n");
    let (code, json) = verify(
        dir,
        &m2,
        &[
            ("a", direct(&vlek, (&a.0, a.1), None)),
            ("b", direct(&vlek, (&b.0, b.1), None)),
            ("c", direct(&vlek, (&c.0, c.1), None)),
        ],
    );
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(json["subjects"][0]["distinct"], "chip");
    assert_eq!(json["subjects"][0]["counted"].as_array().unwrap().len(), 1);
    let why = excluded(&json);
    assert_eq!(why.len(), 2, "{why:?}");
    assert!(
        why.iter()
            .all(|w| w.contains("duplicate") && w.contains("VLEK")),
        "{why:?}"
    );

    // The same VLEK re-encoded is not a second one: it is refused.
    let (code, json) = verify(
        dir,
        &m2,
        &[
            ("a", direct(&vlek, (&a.0, a.1), None)),
            ("b", direct(&vlek, (&b.0, b.1), Some(reencoded))),
        ],
    );
    assert_eq!(code, 1, "{json:#}");
    let why = excluded(&json);
    assert!(
        why.iter().any(|w| w.contains("not canonical DER")),
        "{why:?}"
    );

    // Keys are counted only when the policy asks for that weaker notion.
    let by_key = policy_file(dir, "[threshold]\nm = 2\ndistinct = \"key\"\n");
    let (code, json) = verify(
        dir,
        &by_key,
        &[
            ("a", direct(&vlek, (&a.0, a.1), None)),
            ("b", direct(&vlek, (&b.0, b.1), None)),
        ],
    );
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["subjects"][0]["distinct"], "key");
}

#[test]
fn two_runs_on_one_chip_do_not_make_two_builders() {
    let tmp = TempDir::new("units-chip");
    let dir = tmp.path();
    // Two workers (two VMs, two keys) on chip 7, one on chip 8.
    let (first, second, other) = (Worker::new(7), Worker::new(7), Worker::new(8));
    let bundle = |w: &Worker| direct(&w.platform, (&w.key, w.public), None);
    let m2 = policy_file(dir, "[threshold]\nm = 2\n");
    let (code, json) = verify(
        dir,
        &m2,
        &[("first", bundle(&first)), ("second", bundle(&second))],
    );
    assert_eq!(code, 1, "{json:#}");
    let why = excluded(&json);
    assert!(
        why.iter()
            .any(|w| w.contains("duplicate") && w.contains("chip")),
        "{why:?}"
    );
    let (code, json) = verify(
        dir,
        &m2,
        &[("first", bundle(&first)), ("other", bundle(&other))],
    );
    assert_eq!(code, 0, "{json:#}");
}
