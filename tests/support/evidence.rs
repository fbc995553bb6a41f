//! Test support: the real vectors in `../shared/vectors/snp`, dates, a
//! simulated chip, and the `provenix` binary for the CLI's tests. Include it
//! with `#[path = "../../tests/support/evidence.rs"] mod common;`.
//!
//! The shared folder is found through `PROVENIX_SHARED` (default `../shared`
//! beside the repository). Where it is absent a test says so and skips; with
//! `CI=true` it fails, so CI never passes without the vectors.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, unreachable_pub)] // shared by several test binaries, each using a part

use std::path::PathBuf;

use provenix_firmware::snp::AttestationReport;
use serde_json::Value;

/// Unix seconds of a `YYYY-MM-DD` date at midnight UTC.
pub fn date(s: &str) -> i64 {
    let d =
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).unwrap();
    d.midnight().assume_utc().unix_timestamp()
}

/// When every VCEK in the vectors is valid (vectors README, "Clock").
pub fn vcek_time() -> i64 {
    date("2026-06-01")
}
/// Inside the AWS VLEK's one-year validity.
pub fn vlek_time() -> i64 {
    date("2025-06-01")
}
/// "Today" for these tests, pinned.
pub fn today() -> i64 {
    date("2026-11-22")
}

pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("PROVENIX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    if dir.join("vectors/snp/vectors.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but the shared vectors are missing at {} (set PROVENIX_SHARED)",
            dir.display()
        );
    }
    eprintln!(
        "SKIP: shared vectors not found at {} (set PROVENIX_SHARED)",
        dir.display()
    );
    None
}

pub struct Vector {
    pub id: String,
    pub json: Value,
    pub report_bytes: Vec<u8>,
    pub report: AttestationReport,
    pub vek: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
}

impl Vector {
    pub fn is_vlek(&self) -> bool {
        self.json["signing_key"] == "VLEK"
    }
    pub fn time(&self) -> i64 {
        if self.is_vlek() {
            vlek_time()
        } else {
            vcek_time()
        }
    }
    pub fn product(&self) -> &str {
        self.json["product"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    }
}

/// Every vector of vectors.json, loaded; `None` when the shared folder is absent.
pub fn vectors() -> Option<Vec<Vector>> {
    let dir = shared()?.join("vectors/snp");
    let list: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("vectors.json")).unwrap()).unwrap();
    Some(
        list.into_iter()
            .map(|json| {
                let file = |k: &str| dir.join(json["files"][k].as_str().unwrap());
                let raw = std::fs::read(file("report")).unwrap();
                // Provenance: the files are the ones vectors.json describes.
                for (k, bytes) in [
                    ("report", raw.clone()),
                    ("vek", std::fs::read(file("vek")).unwrap()),
                ] {
                    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
                    assert_eq!(
                        hex::encode(digest),
                        json["sha256"][k].as_str().unwrap(),
                        "{} {k}",
                        json["id"]
                    );
                }
                let report_bytes = if raw.len() == 2 * 1184 || raw.len() == 2 * 1184 + 1 {
                    hex::decode(String::from_utf8(raw).unwrap().trim()).unwrap()
                } else {
                    raw
                };
                let vek = provenix_verifier::certificates_from_pem_or_der(
                    &std::fs::read(file("vek")).unwrap(),
                )
                .unwrap()
                .remove(0);
                let chain = provenix_verifier::certificates_from_pem_or_der(
                    &std::fs::read(file("ca_chain")).unwrap(),
                )
                .unwrap();
                let report = AttestationReport::from_bytes(&report_bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", json["id"]));
                Vector {
                    id: json["id"].as_str().unwrap().to_owned(),
                    json,
                    report_bytes,
                    report,
                    vek,
                    chain,
                }
            })
            .collect(),
    )
}

/// Run the `provenix` binary (only the CLI package's tests have it): its
/// exit code, stdout and stderr.
pub fn provenix(args: &[&str]) -> (i32, String, String) {
    let Some(bin) = option_env!("CARGO_BIN_EXE_provenix") else {
        panic!("only the provenix-cli package's tests run the provenix binary");
    };
    let out = std::process::Command::new(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// A simulated Milan chip with CHIP_ID `[id; 64]` and a VCEK valid a day
/// either side of now.
pub fn sim_chip(id: u8) -> provenix_firmware::sim::SimPlatform {
    use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind};
    SimPlatform::new(&ChainParams {
        product: provenix_firmware::snp::Product::Milan,
        kind: VekKind::Vcek,
        tcb: ReportParams::default().tcb,
        hw_id: [id; 64],
        not_before: unix_now() - 86_400,
        not_after: unix_now() + 86_400,
    })
    .unwrap()
}
