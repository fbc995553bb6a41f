//! transparency-dev/merkle's proof vectors (`../shared/vectors/merkle`,
//! README there): every inclusion, consistency, subtree inclusion and
//! subtree consistency case on disk runs, and each verifies or fails as its
//! `wantErr` says, with four named exceptions (see [`DIVERGENCES`]).
//!
//! The folder is found through `PROVENIX_SHARED` (default `../shared`
//! beside the repository). Where it is absent the test says so and skips;
//! with `CI=true` it fails.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use provenix_verifier::{
    Error, Hash, hash_from_slice, verify_consistency, verify_inclusion, verify_subtree_consistency,
    verify_subtree_inclusion,
};
use serde_json::Value;

/// Cases on disk per folder, at transparency-dev/merkle commit
/// 417fb0c314750d94e53942e9f92e79b6d35915db. A folder that loses or gains
/// a file fails the test instead of passing with fewer cases.
const EXPECTED: [(&str, usize); 4] = [
    ("consistency", 98),
    ("inclusion", 98),
    ("subtreeconsistency", 118),
    ("subtreeinclusion", 204),
];

/// Cases that Go's verifier accepts and ours refuses, on purpose: each has
/// a "hash" that is not 32 bytes (the 12-byte strings "don't care 1" and
/// "don't care 2") in a place Go never reads (equal sizes compare the two
/// roots as byte strings; an empty subtree ignores the tree's root). Our
/// API takes `[u8; 32]`, so such input is refused where it is decoded, by
/// `hash_from_slice`, before any proof logic: each must fail with
/// `Error::HashLength`.
const DIVERGENCES: [&str; 4] = [
    "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json",
    "subtreeconsistency/additional/sizes-are-equal-one-and-proof-is-empty.json",
    "subtreeconsistency/additional/subtree-is-empty-sizes-are-equal-one-subtree-root-valid-tree-root-random-proof-is-empty.json",
    "subtreeconsistency/additional/subtree-is-empty-sizes-are-equal-zero-subtree-root-valid-tree-root-random-proof-is-empty.json",
];

fn testdata() -> Option<PathBuf> {
    let shared = std::env::var_os("PROVENIX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = shared.join("vectors/merkle/testdata");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but the Merkle vectors are missing at {} (set PROVENIX_SHARED)",
            dir.display()
        );
    }
    eprintln!(
        "SKIP: Merkle vectors not found at {} (set PROVENIX_SHARED)",
        dir.display()
    );
    None
}

/// Every file under `dir`, as paths relative to `root`, sorted.
fn files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
            out.push(rel.to_owned());
        }
    }
}

fn bytes(case: &Value, key: &str) -> Vec<u8> {
    let s = case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing"));
    STANDARD.decode(s).unwrap()
}

fn number(case: &Value, key: &str) -> u64 {
    case[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing"))
}

/// A hash field through the verifier's own decoding.
fn hash(case: &Value, key: &'static str) -> Result<Hash, Error> {
    hash_from_slice(key, &bytes(case, key))
}

/// The `proof` field: `null` is the empty proof.
fn proof(case: &Value) -> Result<Vec<Hash>, Error> {
    match &case["proof"] {
        Value::Null => Ok(Vec::new()),
        Value::Array(nodes) => nodes
            .iter()
            .map(|n| hash_from_slice("proof", &STANDARD.decode(n.as_str().unwrap()).unwrap()))
            .collect(),
        other => panic!("proof is {other}"),
    }
}

/// Run one case; the error says whether the proof logic or the decoding
/// refused it.
fn run(kind: &str, case: &Value) -> Result<(), Error> {
    match kind {
        "inclusion" => verify_inclusion(
            &hash(case, "leafHash")?,
            number(case, "leafIdx"),
            number(case, "treeSize"),
            &proof(case)?,
            &hash(case, "root")?,
        ),
        "consistency" => verify_consistency(
            number(case, "size1"),
            number(case, "size2"),
            &proof(case)?,
            &hash(case, "root1")?,
            &hash(case, "root2")?,
        ),
        "subtreeinclusion" => verify_subtree_inclusion(
            &hash(case, "leafHash")?,
            number(case, "leafIdx"),
            number(case, "start"),
            number(case, "end"),
            &proof(case)?,
            &hash(case, "root")?,
        ),
        "subtreeconsistency" => verify_subtree_consistency(
            number(case, "start"),
            number(case, "end"),
            number(case, "size"),
            &proof(case)?,
            &hash(case, "root1")?,
            &hash(case, "root2")?,
        ),
        other => panic!("unknown vector folder {other}"),
    }
}

/// The error variant a refusal of this kind must have.
fn right_variant(kind: &str, e: &Error) -> bool {
    matches!(
        (kind, e),
        (_, Error::HashLength { .. })
            | ("inclusion", Error::InclusionProof { .. })
            | ("consistency", Error::ConsistencyProof { .. })
            | ("subtreeinclusion", Error::SubtreeInclusionProof { .. })
            | ("subtreeconsistency", Error::SubtreeConsistencyProof { .. })
    )
}

#[derive(Default, Debug)]
struct Tally {
    total: usize,
    passed: usize,
    verified: usize,
    refused_by_proof: usize,
    refused_by_decoding: usize,
}

#[test]
fn every_merkle_vector_on_disk() {
    let Some(dir) = testdata() else { return };
    let mut all = Vec::new();
    files(&dir, &dir, &mut all);
    all.sort();

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for rel in &all {
        let (kind, _) = rel.split_once('/').expect("a file at the top of testdata");
        assert!(rel.ends_with(".json"), "not a vector: {rel}");
        let case: Value = serde_json::from_slice(&std::fs::read(dir.join(rel)).unwrap()).unwrap();
        let want_err = case["wantErr"].as_bool().expect("wantErr");
        let tally = tallies.entry(kind.to_owned()).or_default();
        tally.total += 1;

        let result = run(kind, &case);
        match &result {
            Ok(()) => tally.verified += 1,
            Err(Error::HashLength { .. }) => tally.refused_by_decoding += 1,
            Err(_) => tally.refused_by_proof += 1,
        }
        let ok = if DIVERGENCES.contains(&rel.as_str()) {
            assert!(
                !want_err,
                "{rel} is listed as a divergence but Go refuses it too"
            );
            matches!(result, Err(Error::HashLength { .. }))
        } else {
            match &result {
                Ok(()) => !want_err,
                Err(e) => want_err && right_variant(kind, e),
            }
        };
        if ok {
            tally.passed += 1;
        } else {
            failures.push(format!(
                "{rel} ({}): wantErr {want_err}, got {result:?}",
                case["desc"]
            ));
        }
    }

    for (kind, t) in &tallies {
        println!(
            "{kind}: {}/{} as expected ({} verify, {} refused by the proof check, {} refused at decoding)",
            t.passed, t.total, t.verified, t.refused_by_proof, t.refused_by_decoding
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing skipped, nothing lost: every folder ran every file it has.
    let counts: Vec<(&str, usize)> = tallies.iter().map(|(k, t)| (k.as_str(), t.total)).collect();
    assert_eq!(counts, EXPECTED);
    assert_eq!(
        tallies.values().map(|t| t.total).sum::<usize>(),
        all.len(),
        "every file on disk is a case that ran"
    );
    for d in DIVERGENCES {
        assert!(all.iter().any(|f| f == d), "divergence {d} is not on disk");
    }
}
