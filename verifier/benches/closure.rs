//! What verifying a closure of 2,000 store paths from one worker costs,
//! next to its floor: 2,000 raw Ed25519 verifications with ring; and what
//! verifying the same 2,000 paths as one build graph costs
//! (`provenix verify --recursive`, issue 12).
//!
//! The bundles are logged-mode bundles as the worker's daemon makes them:
//! one simulated SEV-SNP worker identity, one `provenix_worker::log::Log`
//! of 2,000 signed statements (each with its Nix signature), attested
//! checkpoints every 500 entries, each bundle under the first checkpoint
//! that covers it (so 4 checkpoints are shared by 500 bundles each). They
//! are made once and kept in cargo's target tmp directory
//! (`closure-bench-v2.bin`, with the time they were made: they are verified
//! at that time, as the simulated VCEK is valid for a year).
//!
//! Measured, on ONE thread, medians of several runs:
//!
//! - `ring_ed25519_raw`: 2,000 `ring::signature::ED25519` verifications of
//!   2,000 distinct statements' COSE signatures;
//! - `closure_cold`: a fresh `Verifier` and `BundleVerifier` (empty
//!   caches and memo) each run, then for each bundle `BundleVerifier::verify`
//!   and `Policy::decide` on its store path, as `provenix verify --closure
//!   --jobs 1` does after hashing.
//!
//! - `graph_cold`: the same, fresh, but `decide_graph` on the last path,
//!   whose build graph is all 2,000: each statement's trace names the 50
//!   paths before it and a content-addressed source of its own (a text
//!   path, checked from its hash), so 102,000 trace inputs are checked;
//!   bundles are verified as the walk asks for them.
//!
//! The targets are `closure_cold` under 0.5 s and `graph_cold` under 1 s;
//! the ratios are printed. Run with `cargo bench -p provenix-verifier
//! --bench closure`.

// A bench that cannot set up has nothing to measure: it stops loudly.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use coset::CborSerializable as _;
use provenix_verifier::storepath::{ContentAddress, HashAlgo, Method};
use provenix_verifier::{
    Bundle, BundleLookup, BundleVerifier, InclusionProof, Statement, Subject, Verifier,
    checkpoint_report_data, decide_graph, log_origin,
};
use provenix_verifier::{Content, Trace, TraceInput};
use ring::signature::{ED25519, UnparsedPublicKey};

const PATHS: u64 = 2_000;
/// Paths before it each path's trace names (besides its own source).
const WINDOW: u64 = 50;
const CHECKPOINT_EVERY: u64 = 500;
const RUNS: usize = 7;
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too
    // and then one quick run is enough to show it works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (at, bundles) = bundles();
    let policy = provenix_worker::platform::sim_policy();
    let runs = if quick { 1 } else { RUNS };

    // The floor: ring's Ed25519 over what the statements' signatures cover.
    let raw = signatures(&bundles);
    let raw_time = median(runs, || {
        for (key, message, signature) in &raw {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(message, signature)
                .unwrap_or_else(|_| panic!("a statement signature did not verify"));
        }
    });

    let cold = median(runs, || {
        let verifier = Verifier::new(policy.anchors().unwrap_or_else(|e| panic!("{e}")));
        let memo = BundleVerifier::new(&verifier, &policy, at);
        let mut accepted = 0usize;
        for bytes in &bundles {
            let outcome = memo.verify(black_box(bytes));
            let v = outcome.unwrap_or_else(|e| panic!("bundle refused: {e}"));
            let subject = v.statement().subject.clone();
            let d = policy.decide(&subject, None, vec![("bench".to_owned(), Ok(v))]);
            accepted += usize::from(d.accepted());
        }
        assert_eq!(accepted, bundles.len());
    });

    // The graph: every bundle by the path it is about.
    let mut by_path: HashMap<String, Vec<u8>> = HashMap::new();
    let mut last = String::new();
    for bytes in &bundles {
        let Ok(Bundle::Logged { statement, .. }) = Bundle::from_cbor(bytes) else {
            panic!("not a logged bundle")
        };
        let sign1 = coset::CoseSign1::from_slice(&statement).unwrap_or_else(|e| panic!("{e}"));
        let s = Statement::from_cbor(sign1.payload.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        last = s.subject.name().to_owned();
        by_path.insert(last.clone(), bytes.clone());
    }
    let graph = median(runs, || {
        let verifier = Verifier::new(policy.anchors().unwrap_or_else(|e| panic!("{e}")));
        let memo = BundleVerifier::new(&verifier, &policy, at);
        struct Lookup<'a> {
            memo: &'a BundleVerifier<'a>,
            by_path: &'a HashMap<String, Vec<u8>>,
        }
        impl BundleLookup for Lookup<'_> {
            fn bundles(&mut self, path: &str) -> provenix_verifier::Found {
                self.by_path
                    .get(path)
                    .map(|b| vec![("bench".to_owned(), self.memo.verify(black_box(b)))])
                    .unwrap_or_default()
            }
        }
        let mut lookup = Lookup {
            memo: &memo,
            by_path: &by_path,
        };
        let g = decide_graph(&policy, &last, None, &mut lookup);
        assert!(g.accepted(), "{:?}", g.decision().excluded());
        assert_eq!(g.decisions().len(), bundles.len());
        assert_eq!(g.content_addressed(), bundles.len());
    });

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "closure/ring_ed25519_raw  {PATHS} verifies: {:9.1} ms ({:.1} us each)",
        ms(raw_time),
        ms(raw_time) * 1e3 / 2_000.0
    );
    println!(
        "closure/closure_cold      {PATHS} bundles:  {:9.1} ms ({:.1} us each; target < 500 ms)",
        ms(cold),
        ms(cold) * 1e3 / 2_000.0
    );
    println!(
        "closure/ratio             cold / raw = {:.2}",
        cold.as_secs_f64() / raw_time.as_secs_f64()
    );
    println!(
        "closure/graph_cold        {PATHS} paths, {} trace inputs: {:9.1} ms (target < 1000 ms)",
        PATHS * (WINDOW + 1) - WINDOW * (WINDOW + 1) / 2,
        ms(graph)
    );
    println!(
        "closure/ratio             graph / closure = {:.2}",
        graph.as_secs_f64() / cold.as_secs_f64()
    );
}

/// The median wall time of `runs` runs of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Each bundle's statement key, signed bytes and signature (COSE
/// Sig_structure), for the raw rate.
fn signatures(bundles: &[Vec<u8>]) -> Vec<([u8; 32], Vec<u8>, Vec<u8>)> {
    use coset::CborSerializable;
    bundles
        .iter()
        .map(|b| {
            let Ok(Bundle::Logged {
                statement,
                identity,
                ..
            }) = Bundle::from_cbor(b)
            else {
                panic!("not a logged bundle")
            };
            let sign1 = coset::CoseSign1::from_slice(&statement).unwrap_or_else(|e| panic!("{e}"));
            let message = sign1.tbs_data(b"");
            (identity.worker_key, message, sign1.signature)
        })
        .collect()
}

/// The bundles and the time they were made, from the cache file or made
/// now.
fn bundles() -> (i64, Vec<Vec<u8>>) {
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("closure-bench-v2.bin");
    if let Ok(bytes) = std::fs::read(&file)
        && let Some(parsed) = parse(&bytes)
    {
        // The simulated VCEK is valid a year from when it was made.
        let age = now() - parsed.0;
        if age < 300 * 86_400 {
            return parsed;
        }
    }
    let made = make();
    let mut out = made.0.to_le_bytes().to_vec();
    for b in &made.1 {
        out.extend(u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend(b);
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, out).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::rename(&tmp, &file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    made
}

fn parse(bytes: &[u8]) -> Option<(i64, Vec<Vec<u8>>)> {
    let at = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let mut rest = bytes.get(8..)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = usize::try_from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
        out.push(rest.get(4..4 + len)?.to_vec());
        rest = rest.get(4 + len..)?;
    }
    (out.len() == usize::try_from(PATHS).ok()?).then_some((at, out))
}

fn now() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The store path of bench entry `i`.
fn path_of(i: u64) -> String {
    let hash = provenix_verifier::nixsig::nix32(&[u8::try_from(i % 251).unwrap_or(0); 20]);
    format!("/nix/store/{hash}-bench-{i}")
}

/// The NAR SHA-256 bench entry `i` states.
fn digest_of(i: u64) -> [u8; 32] {
    *ring::digest::digest(&ring::digest::SHA256, &i.to_le_bytes())
        .as_ref()
        .first_chunk()
        .unwrap_or(&[0; 32])
}

/// Entry `i`'s source: a text path, as `builtins.toFile` makes it.
fn source_of(i: u64) -> TraceInput {
    let contents = format!("source {i}\n");
    let address = ContentAddress {
        method: Method::Text,
        algo: HashAlgo::Sha256,
        digest: ring::digest::digest(&ring::digest::SHA256, contents.as_bytes())
            .as_ref()
            .to_vec(),
    };
    let path = address
        .store_path(&format!("source-{i}"), &[], false)
        .unwrap_or_else(|e| panic!("{e}"));
    TraceInput {
        path,
        nar_sha256: [9; 32],
        content: Some(Content {
            address,
            references: Vec::new(),
        }),
    }
}

/// 2,000 statements in one worker's log, with attested checkpoints, as the
/// daemon makes them (`worker::daemon`: sign, append, checkpoint, attest,
/// bundle under a checkpoint).
fn make() -> (i64, Vec<Vec<u8>>) {
    use provenix_worker::identity::WorkerIdentity;
    use provenix_worker::log::{CheckpointSigner, Log};
    use provenix_worker::platform::{Choice, Platform};

    let at = now();
    let fail = |e: &dyn std::fmt::Display| -> ! { panic!("making the bench bundles: {e}") };
    let platform = Platform::detect(Choice::Sim, at, |_| {}).unwrap_or_else(|e| fail(&e));
    let identity = WorkerIdentity::new(&platform, COMMIT).unwrap_or_else(|e| fail(&e));
    let key = identity.key();
    let origin = log_origin(identity.public());
    let signer = CheckpointSigner::new(&origin, key.clone()).unwrap_or_else(|e| fail(&e));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("closure-bench-log");
    let _ = std::fs::remove_dir_all(&dir);
    let mut log = Log::open(&dir).unwrap_or_else(|e| fail(&e));

    let mut bundles = Vec::new();
    for batch in 0..PATHS / CHECKPOINT_EVERY {
        let first = batch * CHECKPOINT_EVERY;
        let entries: Vec<Vec<u8>> = (first..first + CHECKPOINT_EVERY)
            .map(|i| {
                // A store path per entry, with a made-up NAR digest: the
                // bench verifies statements, not NARs. Its trace names the
                // WINDOW paths before it with theirs, and a text source.
                let mut inputs: Vec<TraceInput> = (i.saturating_sub(WINDOW)..i)
                    .map(|j| TraceInput {
                        path: path_of(j),
                        nar_sha256: digest_of(j),
                        content: None,
                    })
                    .collect();
                inputs.push(source_of(i));
                inputs.sort_by(|a, b| a.path.cmp(&b.path));
                let mut s = Statement {
                    subject: Subject::StorePath(path_of(i)),
                    sha256: digest_of(i),
                    size: 1024 + i,
                    references: Vec::new(),
                    deriver: None,
                    worker_key: *identity.public(),
                    source_commit: COMMIT.into(),
                    log_index: Some(i),
                    time: at,
                    nix_signature: None,
                    trace: Some(Trace {
                        derivation_sha256: [7; 32],
                        inputs,
                    }),
                };
                s.add_nix_signature(key).unwrap_or_else(|e| fail(&e));
                s.sign(key).unwrap_or_else(|e| fail(&e))
            })
            .collect();
        log.append_batch(&entries).unwrap_or_else(|e| fail(&e));
        let note = log
            .checkpoint(&origin, &signer)
            .unwrap_or_else(|e| fail(&e));
        let evidence = platform
            .evidence(&checkpoint_report_data(&note), 0)
            .unwrap_or_else(|e| fail(&e));
        for (i, statement) in (first..).zip(entries) {
            let hashes = log
                .inclusion_proof(i, log.size())
                .unwrap_or_else(|e| fail(&e));
            bundles.push(
                Bundle::Logged {
                    statement,
                    identity: identity.document().clone(),
                    proof: InclusionProof {
                        index: i,
                        size: log.size(),
                        hashes,
                    },
                    checkpoint: note.clone(),
                    checkpoint_evidence: evidence.clone(),
                }
                .to_cbor(),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    (at, bundles)
}
