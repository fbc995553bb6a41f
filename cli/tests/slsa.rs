//! `provenix export slsa`: a direct-mode bundle from the simulated platform
//! becomes a DSSE envelope around an in-toto Statement v1 with SLSA
//! Provenance v1, which an independent implementation (securesystemslib,
//! from PyPI, in the tests' venv) accepts.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind, ark_fingerprint};
use provenix_firmware::snp::{Product, TcbVersion};
use provenix_verifier::slsa::{self, InTotoStatement};
use provenix_verifier::{
    Bundle, Evidence, Policy, SnpEvidence, Statement, Subject, Verifier, statement_report_data,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// 2026-06-01T00:00:00Z; the simulated VEK is valid for a year around it.
const AT: i64 = 1_780_272_000;
const YEAR: i64 = 365 * 86_400;
const PATH: &str = "/nix/store/7h7qgvs4kgzsn8a6rb274saxyqh4jxlz-hello-2.12.1";
const NAR_SHA256: [u8; 32] = [0x5a; 32];
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("provenix-slsa-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn key() -> (Ed25519KeyPair, Vec<u8>, [u8; 32]) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut public = [0u8; 32];
    public.copy_from_slice(key.public_key().as_ref());
    (key, pkcs8.as_ref().to_vec(), public)
}

/// A direct-mode bundle for a store path, signed by a fresh worker key and
/// bound by a simulated Genoa report; and a policy that trusts the
/// simulator's root.
fn direct_bundle() -> (Vec<u8>, Policy, String, [u8; 32]) {
    let tcb = TcbVersion {
        fmc: None,
        bootloader: 9,
        tee: 1,
        snp: 22,
        microcode: 0xD4,
    };
    let platform = SimPlatform::new(&ChainParams {
        product: Product::Genoa,
        kind: VekKind::Vcek,
        tcb,
        hw_id: [0xC4; 64],
        not_before: AT - YEAR,
        not_after: AT + YEAR,
    })
    .unwrap();
    let (worker, _, worker_public) = key();
    let mut statement = Statement {
        subject: Subject::StorePath(PATH.into()),
        sha256: NAR_SHA256,
        size: 226_560,
        references: vec![
            "/nix/store/3n58xw4373jp0ljirf06d8077j15pc4j-glibc-2.37-8".into(),
            PATH.into(),
        ],
        deriver: Some("/nix/store/ifc1y1a8pdzy4hkzg7qbgpdgr3xgz1vz-hello-2.12.1.drv".into()),
        worker_key: worker_public,
        source_commit: COMMIT.into(),
        log_index: None,
        time: AT - 3600,
        nix_signature: None,
        trace: None,
    };
    statement.add_nix_signature(&worker).unwrap();
    let signed = statement.sign(&worker).unwrap();
    let report = platform
        .report_bytes(&ReportParams {
            product: Product::Genoa,
            tcb,
            chip_id: [0xC4; 64],
            measurement: [0x11; 48],
            report_data: statement_report_data(&statement.to_cbor()),
            ..ReportParams::default()
        })
        .unwrap();
    let bundle = Bundle::Direct {
        statement: signed,
        evidence: SnpEvidence {
            report: report.to_vec(),
            cert_table: Some(platform.cert_table().unwrap()),
            vek: None,
        }
        .into(),
    }
    .to_cbor();
    let policy_text = format!(
        "trust_amd_roots = false\n[[roots]]\nname = \"provenix simulator\"\nproduct = \"Genoa\"\nsha256 = \"{}\"\n[snp]\nmeasurements = [\"{}\"]\n",
        hex::encode(ark_fingerprint(Product::Genoa)),
        "11".repeat(48)
    );
    let policy = Policy::from_toml(&policy_text).unwrap();
    (bundle, policy, policy_text, worker_public)
}

#[test]
fn the_library_makes_the_documented_statement() {
    let (bundle, policy, _, worker_public) = direct_bundle();
    let verifier = Verifier::new(policy.anchors().unwrap());
    let st = slsa::provenance(&bundle, &verifier, &policy, AT).unwrap();
    let json: serde_json::Value = serde_json::to_value(&st).unwrap();
    assert_eq!(json["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(json["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(json["subject"][0]["name"], PATH);
    assert_eq!(
        json["subject"][0]["digest"]["sha256"],
        hex::encode(NAR_SHA256)
    );
    let p = &json["predicate"];
    assert_eq!(
        p["buildDefinition"]["buildType"],
        "https://provenix.dev/nix-build/v1"
    );
    assert_eq!(
        p["buildDefinition"]["resolvedDependencies"][0]["uri"],
        "/nix/store/3n58xw4373jp0ljirf06d8077j15pc4j-glibc-2.37-8"
    );
    assert_eq!(
        p["runDetails"]["builder"]["id"],
        format!(
            "https://provenix.dev/worker/{COMMIT}#{}",
            hex::encode([0x11; 48])
        )
    );
    assert_eq!(
        p["runDetails"]["metadata"]["invocationId"],
        format!(
            "{}/direct/{}",
            hex::encode(worker_public),
            hex::encode(NAR_SHA256)
        )
    );
    assert_eq!(
        p["runDetails"]["metadata"]["startedOn"],
        "2026-05-31T23:00:00Z"
    );
    let names: Vec<_> = p["runDetails"]["byproducts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["snp-report", "snp-cert-table", "provenix-bundle"]);
    // Deterministic: the same bundle gives the same bytes.
    let again = slsa::provenance(&bundle, &verifier, &policy, AT).unwrap();
    assert_eq!(
        serde_json::to_vec(&st).unwrap(),
        serde_json::to_vec(&again).unwrap()
    );
    // It parses back.
    let back: InTotoStatement = serde_json::from_value(json).unwrap();
    assert_eq!(back, st);
}

#[test]
fn nothing_is_exported_from_a_bundle_that_does_not_verify() {
    let (bundle, policy, _, _) = direct_bundle();
    let (signer, _, _) = key();
    // The AMD roots only: the simulator's chain is not trusted.
    let amd = Policy::default();
    let verifier = Verifier::new(amd.anchors().unwrap());
    assert!(matches!(
        slsa::export_slsa(&bundle, &verifier, &amd, AT, &signer),
        Err(slsa::ExportError::Refused(_))
    ));
    // Expired evidence.
    let verifier = Verifier::new(policy.anchors().unwrap());
    assert!(slsa::export_slsa(&bundle, &verifier, &policy, AT + 2 * YEAR, &signer).is_err());
    // A flipped byte in the report.
    let mut bad = Bundle::from_cbor(&bundle).unwrap();
    if let Bundle::Direct {
        evidence: Evidence::Snp(evidence),
        ..
    } = &mut bad
    {
        evidence.report[0x50] ^= 1;
    }
    assert!(slsa::export_slsa(&bad.to_cbor(), &verifier, &policy, AT, &signer).is_err());
}

/// The tests' Python venv: `PROVENIX_PYTHON`, else beside
/// `PROVENIX_SNP_MEASURE` (set by ./run), else `target/pyenv`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PROVENIX_PYTHON") {
        return PathBuf::from(p);
    }
    if let Some(tool) = std::env::var_os("PROVENIX_SNP_MEASURE") {
        if let Some(dir) = Path::new(&tool).parent() {
            return dir.join("python");
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python")
}

const CHECK: &str = r#"
import base64, json, sys
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from securesystemslib.exceptions import VerificationError

path, public, want_name, want_sha = sys.argv[1:5]
with open(path) as f:
    text = f.read()
keyid = json.loads(text)["signatures"][0]["keyid"]
env = Envelope.from_dict(json.loads(text))
key = SSlibKey(keyid, "ed25519", "ed25519", {"public": public})
env.verify([key], 1)
assert env.payload_type == "application/vnd.in-toto+json", env.payload_type
st = json.loads(env.payload)
assert st["_type"] == "https://in-toto.io/Statement/v1", st["_type"]
assert st["predicateType"] == "https://slsa.dev/provenance/v1"
assert st["subject"] == [{"name": want_name, "digest": {"sha256": want_sha}}], st["subject"]
bp = {b["name"]: b for b in st["predicate"]["runDetails"]["byproducts"]}
report = base64.b64decode(bp["snp-report"]["content"])
assert len(report) == 1184 and bp["snp-report"]["mediaType"] == "application/vnd.amd.sev-snp.report"
assert bp["provenix-bundle"]["mediaType"] == "application/vnd.provenix.bundle+cbor"
# A changed payload must not verify.
data = json.loads(text)
data["payload"] = base64.b64encode(env.payload.replace(want_sha.encode(), b"0" * 64)).decode()
try:
    Envelope.from_dict(data).verify([key], 1)
    sys.exit("a tampered payload verified")
except VerificationError:
    pass
print("OK", st["predicate"]["runDetails"]["builder"]["id"])
"#;

#[test]
fn securesystemslib_accepts_the_cli_envelope() {
    let dir = scratch("cli");
    let (bundle, _, policy_text, _) = direct_bundle();
    let (_, pkcs8, signer_public) = key();
    std::fs::write(dir.join("out.provenix"), &bundle).unwrap();
    std::fs::write(dir.join("policy.toml"), policy_text).unwrap();
    std::fs::write(dir.join("key.pk8"), pkcs8).unwrap();
    let run = |out: &Path, bundle: &Path, at: &str| {
        Command::new(env!("CARGO_BIN_EXE_provenix"))
            .args(["export", "slsa", s(bundle), "--out", s(out)])
            .args(["--policy", s(&dir.join("policy.toml"))])
            .args(["--key", s(&dir.join("key.pk8")), "--at", at])
            .output()
            .unwrap()
    };
    let envelope = dir.join("out.intoto.json");
    let out = run(&envelope, &dir.join("out.provenix"), &format!("@{AT}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Our own verification of the envelope.
    let payload = slsa::dsse_verify(&std::fs::read(&envelope).unwrap(), &signer_public).unwrap();
    let st: InTotoStatement = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        st.subject[0].digest.as_ref().unwrap().sha256,
        hex::encode(NAR_SHA256)
    );
    // Expired evidence: rejected, exit 1, nothing written.
    let late = dir.join("late.json");
    let out = run(&late, &dir.join("out.provenix"), "@1900000000");
    assert_eq!(out.status.code(), Some(1));
    assert!(!late.exists());

    // The independent implementation.
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import securesystemslib.dsse, cryptography"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true but {} cannot import securesystemslib (./run installs it)",
                python.display()
            );
        }
        eprintln!(
            "SKIP: securesystemslib not importable by {} (run ./run test, or set PROVENIX_PYTHON)",
            python.display()
        );
        return;
    }
    let out = Command::new(&python)
        .args(["-c", CHECK, s(&envelope), &hex::encode(signer_public)])
        .args([PATH, &hex::encode(NAR_SHA256)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "securesystemslib refused the envelope:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK "));
}
