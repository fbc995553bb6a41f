//! Bundles end to end on the simulated platform: direct-mode attestation of
//! CI artifacts, and logged statements with identity, signed checkpoint,
//! attested checkpoint and inclusion proof. Each verifies offline with the
//! verifier library; each broken binding is refused with its reason.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use provenix_firmware::sim::sim_ark_fingerprints;
use provenix_verifier::{
    Bundle, Error, Hex, InclusionProof, Policy, Refusal, RootPin, Statement, Subject, Verifier,
    checkpoint_report_data, log_origin, verify_bundle,
};
use provenix_worker::attest::{AttestOptions, attest, bundle_path};
use provenix_worker::identity::WorkerIdentity;
use provenix_worker::log::{CheckpointSigner, Log};
use provenix_worker::platform::{Choice, Platform};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn now() -> i64 {
    time_now()
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn sim_policy() -> Policy {
    let mut p = Policy {
        trust_amd_roots: false,
        ..Policy::default()
    };
    p.snp.measurements = Some(vec![Hex(provenix_firmware::sim::SIM_MEASUREMENT)]);
    for (product, sha256) in sim_ark_fingerprints() {
        p.roots.push(RootPin {
            name: "sim".into(),
            product,
            sha256: Hex(sha256),
        });
    }
    p
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("provenix-bundles-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sim() -> Platform {
    Platform::detect(Choice::Sim, now(), |_| {}).unwrap()
}

fn refused(bytes: &[u8], policy: &Policy) -> Refusal {
    let verifier = Verifier::new(policy.anchors().unwrap());
    verify_bundle(bytes, &verifier, policy, now()).unwrap_err()
}

#[test]
fn direct_mode_attests_ci_artifacts() {
    let dir = scratch("direct");
    let a = dir.join("app.tar.gz");
    let b = dir.join("empty");
    std::fs::write(&a, vec![42u8; 3 << 20]).unwrap();
    std::fs::write(&b, b"").unwrap();
    let platform = sim();
    let policy = sim_policy();
    let done = attest(
        &[a.clone(), b.clone()],
        &AttestOptions {
            platform: &platform,
            commit: COMMIT,
            vek: None,
            policy: &policy,
            now: now(),
        },
    )
    .unwrap();
    assert_eq!(done.len(), 2);
    // The provenance beside each artifact is signed by the statement's key.
    let envelope = std::fs::read(&done[0].slsa).unwrap();
    let verifier = Verifier::new(policy.anchors().unwrap());
    let bundle_a = std::fs::read(bundle_path(&a)).unwrap();
    let v = verify_bundle(&bundle_a, &verifier, &policy, now()).unwrap();
    assert_eq!(v.statement().subject, Subject::File("app.tar.gz".into()));
    assert_eq!(v.statement().size, 3 << 20);
    assert_eq!(v.statement().source_commit, COMMIT);
    assert_eq!(v.log_index(), None);
    let payload =
        provenix_verifier::slsa::dsse_verify(&envelope, &v.statement().worker_key).unwrap();
    let intoto: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        intoto["subject"][0]["digest"]["sha256"],
        hex::encode(v.statement().sha256)
    );

    // AMD's roots alone do not accept the simulator.
    assert!(matches!(
        refused(&bundle_a, &Policy::default()),
        Refusal::Invalid(Error::UntrustedRoot { .. })
    ));
    // Another bundle's evidence under this statement: the binding fails.
    let bundle_b = std::fs::read(bundle_path(&b)).unwrap();
    let (Bundle::Direct { statement, .. }, Bundle::Direct { evidence, .. }) = (
        Bundle::from_cbor(&bundle_a).unwrap(),
        Bundle::from_cbor(&bundle_b).unwrap(),
    ) else {
        panic!("direct bundles expected");
    };
    let swapped = Bundle::Direct {
        statement,
        evidence,
    }
    .to_cbor();
    assert!(matches!(
        refused(&swapped, &policy),
        Refusal::Invalid(Error::Binding(_))
    ));
    // A missing artifact, a directory: clear errors, nothing written.
    let err = attest(
        &[dir.join("nope"), dir.clone()],
        &AttestOptions {
            platform: &platform,
            commit: COMMIT,
            vek: None,
            policy: &policy,
            now: now(),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    // A policy the evidence does not meet: the self-check refuses to write.
    let strict = Policy {
        snp: provenix_verifier::SnpPolicy {
            min_guest_svn: Some(1),
            ..provenix_verifier::SnpPolicy::default()
        },
        ..sim_policy()
    };
    let c = dir.join("c");
    std::fs::write(&c, b"c").unwrap();
    let err = attest(
        std::slice::from_ref(&c),
        &AttestOptions {
            platform: &platform,
            commit: COMMIT,
            vek: None,
            policy: &strict,
            now: now(),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("guest_svn"), "{err}");
    assert!(!bundle_path(&c).exists());
    // A build that does not know its commit refuses.
    let err = attest(
        &[c],
        &AttestOptions {
            platform: &platform,
            commit: "unknown",
            vek: None,
            policy: &policy,
            now: now(),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("source commit"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A worker identity, a log of `n` statements, a checkpoint attested by the
/// same VM, and the bundle of entry `pick`.
fn logged_bundle(platform: &Platform, id: &WorkerIdentity, log: &mut Log, pick: u64) -> Bundle {
    let n = log.size();
    let mut statements = Vec::new();
    for i in n..n + 5 {
        let s = Statement {
            subject: Subject::StorePath(format!("/nix/store/{:032}-out-{i}", i)),
            sha256: [u8::try_from(i % 256).unwrap(); 32],
            size: 1000 + i,
            references: vec![],
            deriver: Some(format!("/nix/store/{:032}-out-{i}.drv", i)),
            worker_key: *id.public(),
            source_commit: COMMIT.into(),
            log_index: Some(i),
            time: now(),
            nix_signature: None,
            trace: None,
        };
        let signed = s.sign(id.key()).unwrap();
        assert_eq!(log.append(&signed).unwrap(), i);
        statements.push(signed);
    }
    let origin = log_origin(id.public());
    let signer = CheckpointSigner::new(&origin, id.key().clone()).unwrap();
    let checkpoint = log.checkpoint(&origin, &signer).unwrap();
    let ev = platform
        .evidence(&checkpoint_report_data(&checkpoint), 0)
        .unwrap();
    let size = log.size();
    Bundle::Logged {
        statement: log.entry(pick).unwrap(),
        identity: id.document().clone(),
        proof: InclusionProof {
            index: pick,
            size,
            hashes: log.inclusion_proof(pick, size).unwrap(),
        },
        checkpoint,
        checkpoint_evidence: ev,
    }
}

#[test]
fn logged_statements_verify_through_identity_checkpoint_and_proof() {
    let dir = scratch("logged");
    let platform = sim();
    let id = WorkerIdentity::new(&platform, COMMIT).unwrap();
    let mut log = Log::open(&dir.join("log")).unwrap();
    let policy = sim_policy();
    let verifier = Verifier::new(policy.anchors().unwrap());
    let bundle = logged_bundle(&platform, &id, &mut log, 3);
    let v = verify_bundle(&bundle.to_cbor(), &verifier, &policy, now()).unwrap();
    assert_eq!(v.log_index(), Some(3));
    assert_eq!(
        v.statement().subject,
        Subject::StorePath(format!("/nix/store/{:032}-out-3", 3))
    );

    let Bundle::Logged {
        statement,
        identity,
        proof,
        checkpoint,
        checkpoint_evidence,
    } = bundle.clone()
    else {
        panic!()
    };
    let rebuild = |statement: Vec<u8>, identity, proof, checkpoint: String, checkpoint_evidence| {
        Bundle::Logged {
            statement,
            identity,
            proof,
            checkpoint,
            checkpoint_evidence,
        }
        .to_cbor()
    };
    // Another entry's statement with this entry's proof.
    let other = log.entry(1).unwrap();
    let r = refused(
        &rebuild(
            other,
            identity.clone(),
            proof.clone(),
            checkpoint.clone(),
            checkpoint_evidence.clone(),
        ),
        &policy,
    );
    assert!(
        matches!(r, Refusal::Invalid(Error::Binding(ref m)) if m.contains("log index")),
        "{r}"
    );
    // A proof node flipped.
    let mut bad = proof.clone();
    bad.hashes[0][0] ^= 1;
    let r = refused(
        &rebuild(
            statement.clone(),
            identity.clone(),
            bad,
            checkpoint.clone(),
            checkpoint_evidence.clone(),
        ),
        &policy,
    );
    assert!(
        matches!(r, Refusal::Invalid(Error::InclusionProof { .. })),
        "{r}"
    );
    // The checkpoint text altered (its signature breaks).
    let altered = checkpoint
        .replacen('\n', "\n\n", 0)
        .replace("\n5\n", "\n6\n");
    let r = refused(
        &rebuild(
            statement.clone(),
            identity.clone(),
            proof.clone(),
            altered,
            checkpoint_evidence.clone(),
        ),
        &policy,
    );
    assert!(matches!(r, Refusal::Invalid(_)), "{r}");
    // The checkpoint attested by another VM (another chip and key).
    let other_vm = sim();
    let foreign = other_vm
        .evidence(&checkpoint_report_data(&checkpoint), 0)
        .unwrap();
    let r = refused(
        &rebuild(
            statement.clone(),
            identity.clone(),
            proof.clone(),
            checkpoint.clone(),
            foreign,
        ),
        &policy,
    );
    assert!(
        matches!(r, Refusal::Invalid(Error::Binding(ref m)) if m.contains("another VM")),
        "{r}"
    );
    // The identity evidence of another worker key.
    let other_id = WorkerIdentity::new(&platform, COMMIT).unwrap();
    let r = refused(
        &rebuild(
            statement.clone(),
            other_id.document().clone(),
            proof.clone(),
            checkpoint.clone(),
            checkpoint_evidence.clone(),
        ),
        &policy,
    );
    assert!(matches!(r, Refusal::Invalid(Error::Binding(_))), "{r}");
    // The identity's commit changed after the fact.
    let mut forged = identity.clone();
    forged.source_commit = "89abcdef0123456789abcdef0123456789abcdef".into();
    let r = refused(
        &rebuild(statement, forged, proof, checkpoint, checkpoint_evidence),
        &policy,
    );
    assert!(matches!(r, Refusal::Invalid(Error::Binding(_))), "{r}");
    // A later checkpoint still proves the early entry (the log only grows).
    let later = logged_bundle(&platform, &id, &mut log, 0);
    verify_bundle(&later.to_cbor(), &verifier, &policy, now()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
