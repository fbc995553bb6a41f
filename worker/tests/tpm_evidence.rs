//! TPM evidence end to end against a real software TPM (swtpm): the worker
//! quotes with a certified attestation key over PCRs that a real boot's
//! event log replays to, in direct and logged mode; the verifier accepts
//! under a policy naming the AK's CA and refuses each broken piece with
//! its reason.

// Test code: a failed unwrap is a failed test.
#![cfg(feature = "tpm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../tests/support/swtpm.rs"]
mod swtpm;

use common::{TestCa, pem_certificates, shared, unix_now};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use provenix_firmware::tpm::EventLog;
use provenix_firmware::tpm::device::{EkKind, Tpm};
use provenix_firmware::tpm::structures::Public;
use provenix_measurements::manifest::{
    Firmware, FirmwareSource, Image, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, TpmReference,
};
use provenix_verifier::tpm::ak::{issue_ak_certificate, verify_ek};
use provenix_verifier::{
    Bundle, Error, Evidence, InclusionProof, Policy, Refusal, Statement, Subject, Verifier,
    certificates_from_pem_or_der, checkpoint_report_data, log_origin, verify_bundle,
};
use provenix_worker::attest::{AttestOptions, attest, bundle_path};
use provenix_worker::identity::WorkerIdentity;
use provenix_worker::log::{CheckpointSigner, Log};
use provenix_worker::platform::{AkChoice, Choice, Platform, TpmOptions};
use swtpm::Swtpm;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A swtpm whose PCRs hold what a real boot's event log replays to, an
/// ECC attestation key certified by an operator CA, and the worker's TPM
/// platform on it.
struct Rig {
    // Fields drop in order: the platform's TPM thread before its swtpm.
    platform: Platform,
    dir: PathBuf,
    log: PathBuf,
    ca: TestCa,
    _swtpm: Swtpm,
}

fn rig(test: &str) -> Option<Rig> {
    rig_with_ca(test, None)
}

/// A rig whose AK is certified by `ca` (a new operator CA when `None`).
fn rig_with_ca(test: &str, ca: Option<&TestCa>) -> Option<Rig> {
    let shared = shared(test, "vectors/tpm")?;
    let sw = Swtpm::start(test)?;
    let dir = sw.dir().to_path_buf();
    let log_path = shared.join("vectors/tpm/gce-ubuntu2404-amd-sevsnp/eventlog.bin");
    let log = EventLog::parse(&std::fs::read(&log_path).unwrap()).unwrap();
    let mut tpm = Tpm::open(Some(&sw.tcti())).unwrap();
    let banks = tpm.pcr_banks().unwrap();
    // Boot the TPM "again": extend every measured event of the log.
    for e in log.events().iter().filter(|e| e.is_extended()) {
        for (bank, digest) in &e.digests {
            if banks.contains(bank) {
                tpm.pcr_extend(u8::try_from(e.pcr).unwrap(), *bank, digest)
                    .unwrap();
            }
        }
    }
    // Enroll the AK (credential activation itself is tested in ak_enroll).
    let ek = tpm.endorsement_key(EkKind::Rsa2048).unwrap();
    let ek_cert = tpm.ek_certificate(EkKind::Rsa2048).unwrap().unwrap();
    let mut ek_roots = certificates_from_pem_or_der(&std::fs::read(sw.ca_root()).unwrap()).unwrap();
    let issuer = certificates_from_pem_or_der(&std::fs::read(sw.ca_issuer()).unwrap()).unwrap();
    ek_roots.extend(issuer.iter().cloned());
    let verified_ek = verify_ek(&ek_cert, &issuer, &ek_roots, unix_now(), ek.public()).unwrap();
    let ak = tpm
        .attestation_key(provenix_firmware::tpm::device::AkKind::EccP256, None)
        .unwrap();
    let ak_public = Public::from_bytes(ak.public()).unwrap();
    drop(tpm);
    let ca = match ca {
        Some(ca) => ca.clone(),
        None => TestCa::new(&dir, "operator-ak-ca"),
    };
    let ak_cert = issue_ak_certificate(
        &ak_public,
        &verified_ek,
        &ca.der,
        &ca.key_pem,
        unix_now() - 60,
        unix_now() + 86_400,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let chain = dir.join("ak-chain.pem");
    std::fs::write(&chain, pem_certificates(&[&ak_cert, &ca.der])).unwrap();
    let options = TpmOptions {
        tpm_tcti: Some(sw.tcti()),
        ak_kind: AkChoice::Ecc,
        ak_handle: None,
        ak_cert: Some(chain),
        event_log: Some(log_path.clone()),
        ..TpmOptions::default()
    };
    let platform = Platform::open(Choice::Tpm, &options, unix_now(), |_| {}).unwrap();
    Some(Rig {
        _swtpm: sw,
        dir,
        log: log_path,
        ca,
        platform,
    })
}

fn policy_trusting(ca: &Path, dir: &Path, extra: &str) -> Policy {
    let file = dir.join("policy.toml");
    std::fs::write(
        &file,
        format!(
            "trust_amd_roots = false\n# swtpm boots nothing to pin: the AK and quote are under test.\nmeasurements = \"any\"\n[tpm]\nak_roots = [{:?}]\n{extra}",
            ca.display().to_string()
        ),
    )
    .unwrap();
    Policy::load(&file).unwrap()
}

fn verify(bytes: &[u8], policy: &Policy) -> Result<provenix_verifier::VerifiedBundle, Refusal> {
    let verifier = Verifier::new(policy.anchors().unwrap());
    verify_bundle(bytes, &verifier, policy, unix_now())
}

fn with_tpm_evidence(bundle: &[u8], edit: impl Fn(&mut provenix_verifier::TpmEvidence)) -> Vec<u8> {
    let Bundle::Direct {
        statement,
        evidence: Evidence::Tpm(mut e),
    } = Bundle::from_cbor(bundle).unwrap()
    else {
        panic!("a direct TPM bundle expected");
    };
    edit(&mut e);
    Bundle::Direct {
        statement,
        evidence: Evidence::Tpm(e),
    }
    .to_cbor()
}

#[test]
fn direct_mode_quotes_verify_and_each_broken_piece_is_refused() {
    let Some(rig) = rig("tpm_direct") else {
        return;
    };
    let policy = policy_trusting(&rig.ca.pem_path, &rig.dir, "");
    let artifact = rig.dir.join("app.bin");
    std::fs::write(&artifact, b"an artifact a CI job built").unwrap();
    attest(
        std::slice::from_ref(&artifact),
        &AttestOptions {
            platform: &rig.platform,
            commit: COMMIT,
            vek: None,
            policy: &policy,
            now: unix_now(),
        },
    )
    .unwrap();
    let bundle = std::fs::read(bundle_path(&artifact)).unwrap();
    let v = verify(&bundle, &policy).unwrap();
    let tpm = v.evidence().tpm().expect("TPM evidence");
    assert!(
        tpm.ak_issuer().contains("operator-ak-ca"),
        "{}",
        tpm.ak_issuer()
    );
    assert!(tpm.ek_key_id().is_some());
    assert_eq!(
        tpm.boot()
            .pcrs()
            .iter()
            .filter(|p| p.bank == 0x000B)
            .count(),
        // PCRs 0-9, 11 (a UKI's sections) and 15 (deployment settings).
        12
    );

    // No AK CA named: a policy finding, not an error.
    let err = verify(&bundle, &Policy::default()).unwrap_err();
    assert!(
        matches!(&err, Refusal::Policy { rejection, .. }
            if rejection.findings.iter().any(|f| f.field == "tpm.ak_roots")),
        "{err}"
    );
    // Another CA: the AK certificate does not chain.
    let other = TestCa::new(&rig.dir, "other-ca");
    let err = verify(&bundle, &policy_trusting(&other.pem_path, &rig.dir, "")).unwrap_err();
    assert!(
        matches!(err, Refusal::Invalid(Error::AkChain { .. })),
        "{err}"
    );
    // An event of the log edited: it no longer replays to the quote.
    let err = verify(
        &with_tpm_evidence(&bundle, |e| {
            let log = EventLog::parse(&e.event_log).unwrap();
            let event = log
                .events()
                .iter()
                .find(|ev| ev.pcr == 4 && ev.is_extended())
                .unwrap();
            let digest = &event
                .digests
                .iter()
                .find(|(b, _)| b.id() == 0x000B)
                .unwrap()
                .1;
            let at = e
                .event_log
                .windows(digest.len())
                .position(|w| w == digest.as_slice())
                .unwrap();
            e.event_log[at] ^= 1;
        }),
        &policy,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Refusal::Invalid(Error::EventLogMismatch(m)) if m.contains("PCR 4")),
        "{err}"
    );
    // A quoted PCR value changed: pcrDigest no longer matches.
    let err = verify(
        &with_tpm_evidence(&bundle, |e| e.pcrs[3].value[0] ^= 1),
        &policy,
    )
    .unwrap_err();
    assert!(
        matches!(err, Refusal::Invalid(Error::PcrDigest { .. })),
        "{err}"
    );
    // A PCR dropped from the evidence: the quote covers it.
    let err = verify(&with_tpm_evidence(&bundle, |e| drop(e.pcrs.pop())), &policy).unwrap_err();
    assert!(
        matches!(err, Refusal::Invalid(Error::PcrValueMissing { .. })),
        "{err}"
    );
    // The signature flipped.
    let err = verify(
        &with_tpm_evidence(&bundle, |e| {
            let last = e.signature.len() - 1;
            e.signature[last] ^= 1;
        }),
        &policy,
    )
    .unwrap_err();
    assert!(matches!(err, Refusal::Invalid(_)), "{err}");
    // The AK's public area re-encoded with one attribute more (noDA, bit
    // 10 of objectAttributes, bytes 4..8): the same key, so the AK
    // certificate still names it and the quote's signature verifies; the
    // quote's qualifiedSigner, the TPM's own word for the TPMT_PUBLIC it
    // signed with, is not this one's qualified name.
    let err = verify(
        &with_tpm_evidence(&bundle, |e| e.ak_public[6] ^= 0x04),
        &policy,
    )
    .unwrap_err();
    assert!(
        matches!(err, Refusal::Invalid(Error::QualifiedSigner { .. })),
        "{err}"
    );
    // A policy requiring a PCR the worker did not quote.
    let err = verify(
        &bundle,
        &policy_trusting(&rig.ca.pem_path, &rig.dir, "pcrs = [0, 14]\n"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("without PCR 14"), "{err}");
}

#[test]
fn reference_values_name_the_commit_and_a_different_boot_is_refused() {
    let Some(rig) = rig("tpm_reference") else {
        return;
    };
    let artifact = rig.dir.join("out.bin");
    std::fs::write(&artifact, b"out").unwrap();
    let trusting = policy_trusting(&rig.ca.pem_path, &rig.dir, "");
    attest(
        std::slice::from_ref(&artifact),
        &AttestOptions {
            platform: &rig.platform,
            commit: COMMIT,
            vek: None,
            policy: &trusting,
            now: unix_now(),
        },
    )
    .unwrap();
    let bundle = std::fs::read(bundle_path(&artifact)).unwrap();
    // A manifest whose TPM part holds the PCR values this boot replays to.
    let log = EventLog::parse(&std::fs::read(&rig.log).unwrap()).unwrap();
    let replayed = provenix_verifier::tpm::replay(&log);
    let pcrs = |tweak: Option<u32>| -> BTreeMap<u32, String> {
        (0..10)
            .map(|i| {
                let mut v = replayed
                    .get(provenix_firmware::tpm::HashAlg::Sha256, i)
                    .unwrap()
                    .to_vec();
                if tweak == Some(i) {
                    v[0] ^= 1;
                }
                (i, hex::encode(v))
            })
            .collect()
    };
    let manifest = |commit: &str, tweak: Option<u32>| {
        // The image's SNP side is not used by a TPM worker; its firmware
        // fields are required by the format, so they name the GCE log's.
        let m = Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            commit: commit.into(),
            description: "gce-ubuntu2404-amd-sevsnp boot, replayed into swtpm".into(),
            image: Image {
                firmware: Firmware {
                    source: FirmwareSource::Vendor,
                    name: "GCE".into(),
                    sha256: "00".repeat(32),
                    snp_firmware_hash: "00".repeat(48),
                },
                kernel_sha256: None,
                initrd_sha256: None,
                cmdline: None,
            },
            snp: Vec::new(),
            tpm: vec![TpmReference {
                boot_path: "disk".into(),
                bank: "sha256".into(),
                qemu: None,
                events: Vec::new(),
                pcrs: pcrs(tweak),
            }],
        };
        let path = rig.dir.join(format!("manifest-{commit}-{tweak:?}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        path
    };
    let good = manifest(COMMIT, None);
    let policy = policy_trusting(
        &rig.ca.pem_path,
        &rig.dir,
        &format!(
            "reference_values = [{:?}]\naccepted_commits = [{COMMIT:?}]\n",
            good.display().to_string()
        ),
    );
    let v = verify(&bundle, &policy).unwrap();
    assert_eq!(v.evidence().reference_commit(), Some(COMMIT));
    // The same image with PCR 9 (initrd and command line) one bit off.
    let bad = manifest(COMMIT, Some(9));
    let policy = policy_trusting(
        &rig.ca.pem_path,
        &rig.dir,
        &format!("reference_values = [{:?}]\n", bad.display().to_string()),
    );
    let err = verify(&bundle, &policy).unwrap_err();
    assert!(
        matches!(&err, Refusal::Policy { rejection, .. }
            if rejection.findings.iter().any(|f| f.found.contains("PCR 9"))),
        "{err}"
    );
}

#[test]
fn logged_statements_bind_to_one_boot_of_one_tpm() {
    let Some(rig) = rig("tpm_logged") else {
        return;
    };
    let policy = policy_trusting(&rig.ca.pem_path, &rig.dir, "");
    let id = WorkerIdentity::new(&rig.platform, COMMIT).unwrap();
    let mut log = Log::open(&rig.dir.join("log")).unwrap();
    for i in 0..5u64 {
        let s = Statement {
            subject: Subject::StorePath(format!("/nix/store/{i:032}-out")),
            sha256: [u8::try_from(i).unwrap(); 32],
            size: 100 + i,
            references: vec![],
            deriver: None,
            worker_key: *id.public(),
            source_commit: COMMIT.into(),
            log_index: Some(i),
            time: unix_now(),
            nix_signature: None,
            trace: None,
        };
        log.append(&s.sign(id.key()).unwrap()).unwrap();
    }
    let origin = log_origin(id.public());
    let signer = CheckpointSigner::new(&origin, id.key().clone()).unwrap();
    let checkpoint = log.checkpoint(&origin, &signer).unwrap();
    let cp_evidence = rig
        .platform
        .evidence(&checkpoint_report_data(&checkpoint), 0)
        .unwrap();
    let bundle = |checkpoint_evidence: Evidence| {
        Bundle::Logged {
            statement: log.entry(2).unwrap(),
            identity: id.document().clone(),
            proof: InclusionProof {
                index: 2,
                size: 5,
                hashes: log.inclusion_proof(2, 5).unwrap(),
            },
            checkpoint: checkpoint.clone(),
            checkpoint_evidence,
        }
        .to_cbor()
    };
    let v = verify(&bundle(cp_evidence.clone()), &policy).unwrap();
    assert_eq!(v.log_index(), Some(2));
    // The checkpoint quoted with the identity's qualifying data: not bound.
    let identity_evidence = id.document().evidence.clone();
    let err = verify(&bundle(identity_evidence), &policy).unwrap_err();
    assert!(err.to_string().contains("checkpoint REPORT_DATA"), "{err}");
    // The checkpoint quoted by another TPM of the same operator: not the
    // identity's boot.
    let other = rig_other_tpm(&rig, &checkpoint);
    let err = verify(&bundle(other), &policy).unwrap_err();
    assert!(err.to_string().contains("another VM"), "{err}");
}

/// The checkpoint quoted by a second swtpm with the same log extended and
/// an AK certified by the same operator CA: authentic, trusted, and of
/// another machine.
fn rig_other_tpm(rig: &Rig, checkpoint: &str) -> Evidence {
    let second = rig_with_ca("tpm_logged_other", Some(&rig.ca)).unwrap();
    second
        .platform
        .evidence(&checkpoint_report_data(checkpoint), 0)
        .unwrap()
}
