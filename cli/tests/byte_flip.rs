//! The byte-flip sweep: every byte of a direct and of a logged bundle,
//! flipped under several masks, through `provenix verify`. Not one mutant
//! may be accepted, and none may crash the verifier.
//!
//! Each mask is one run of the binary over a directory of every mutant
//! (`--bundles DIR --artifact FILE`): the decision on the artifact must be
//! a rejection with no builder counted. Because bundles of one log in one
//! run must agree with each other (a fork refuses them all, which could
//! hide a mutant that verified), every mutant is also verified on its own
//! through the library's `BundleVerifier`, which `provenix verify` runs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/evidence.rs"]
mod common;
#[path = "../../tests/support/logged.rs"]
mod logged;

use std::path::Path;
use std::time::Instant;

use common::provenix;
use logged::{TempDir, Worker, file_statement, now, policy_file};
use provenix_verifier::{BundleVerifier, Policy, Verifier};

/// The artifact every bundle describes.
const CONTENT: &[u8] = b"the artifact the byte-flip sweep is about\n";
/// XOR masks: the lowest bit, the highest bit, every bit.
const MASKS: [u8; 3] = [0x01, 0x80, 0xff];

/// A statement about `artifact` by `worker`, at log `index` if any.
fn statement(worker: &Worker, index: Option<u64>) -> Vec<u8> {
    file_statement(&worker.key, worker.public, CONTENT, index)
}

/// Sweep `good` (accepted as it is) under every mask; returns the number
/// of mutants tried.
fn sweep(kind: &str, good: &[u8], dir: &Path, policy: &Path, artifact: &Path) -> usize {
    let text = std::fs::read_to_string(policy).unwrap();
    let parsed = Policy::from_toml(&text).unwrap();
    let verifier = Verifier::new(parsed.anchors().unwrap());
    let memo = BundleVerifier::new(&verifier, &parsed, now());
    memo.verify(good)
        .unwrap_or_else(|e| panic!("the unmutated {kind} bundle: {e}"));

    let run = |bundles: &Path| {
        provenix(&[
            "verify",
            "--bundles",
            bundles.to_str().unwrap(),
            "--artifact",
            artifact.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--no-checkpoint-cache",
            "--json",
        ])
    };
    // The control: the unmutated bundle alone is accepted.
    let control = dir.join(format!("{kind}-control"));
    std::fs::create_dir_all(&control).unwrap();
    std::fs::write(control.join("good.provenix"), good).unwrap();
    let (code, out, err) = run(&control);
    assert_eq!(code, 0, "control {kind}: {out}{err}");

    let mut tried = 0;
    for mask in MASKS {
        let mutants = dir.join(format!("{kind}-{mask:02x}"));
        std::fs::create_dir_all(&mutants).unwrap();
        let mutant = |i: usize| {
            let mut b = good.to_vec();
            b[i] ^= mask;
            b
        };
        // Each mutant on its own, on every core.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (memo, mutant) = (&memo, &mutant);
                scope.spawn(move || {
                    for i in (t..good.len()).step_by(threads) {
                        if let Ok(v) = memo.verify(&mutant(i)) {
                            panic!(
                                "{kind} bundle, byte {i} ^ {mask:#04x}: verified on its own ({:?})",
                                v.statement().subject
                            );
                        }
                    }
                });
            }
        });
        for i in 0..good.len() {
            std::fs::write(mutants.join(format!("{i:06}.provenix")), mutant(i)).unwrap();
            tried += 1;
        }
        let started = Instant::now();
        let (code, out, err) = run(&mutants);
        assert!(
            code == 1 || (code == 2 && err.contains("no bundle")),
            "{kind} ^ {mask:#04x}: exit {code} (a crash is not a verdict)\n{err}"
        );
        if code == 1 {
            let json: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(json["verdict"], "rejected", "{kind} ^ {mask:#04x}");
            for s in json["subjects"].as_array().unwrap() {
                assert_eq!(
                    s["counted"].as_array().unwrap().len(),
                    0,
                    "{kind} ^ {mask:#04x}: a mutant counted: {}",
                    s["counted"]
                );
            }
        }
        eprintln!(
            "{kind} bundle ^ {mask:#04x}: {} mutants rejected in {:?}",
            good.len(),
            started.elapsed()
        );
        std::fs::remove_dir_all(&mutants).unwrap();
    }
    tried
}

#[test]
fn no_single_byte_flip_of_a_bundle_is_accepted() {
    let tmp = TempDir::new("byte-flip");
    let dir = tmp.path();
    let artifact = dir.join("artifact");
    std::fs::write(&artifact, CONTENT).unwrap();
    let policy = policy_file(dir, "");
    let worker = Worker::new(7);

    let direct = worker.direct(&statement(&worker, None));
    // A log of three statements; the bundle is the middle one's, so its
    // inclusion proof has hashes on both sides.
    let entries = vec![
        statement(&worker, Some(0)),
        statement(&worker, Some(1)),
        statement(&worker, Some(2)),
    ];
    let logged = worker.logged(&entries, 1, Some(now()));

    let n = sweep("direct", &direct, dir, &policy, &artifact)
        + sweep("logged", &logged, dir, &policy, &artifact);
    eprintln!(
        "byte-flip sweep: {n} mutants ({} + {} bytes x {} masks), none accepted",
        direct.len(),
        logged.len(),
        MASKS.len()
    );
}
