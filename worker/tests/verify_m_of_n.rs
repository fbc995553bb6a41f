//! The decide phase end to end: three simulated workers with distinct chip
//! IDs attest one artifact in direct mode; one of them signs a tampered
//! digest. M-of-N policies over their bundles, verified with the verifier
//! library, accept or reject with every reason.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use provenix_verifier::{
    Actual, Builders, Bundle, Decision, Distinct, Hex, NamedBuilder, Policy, Reason, Statement,
    Subject, Threshold, Verifier, Why, statement_report_data, verify_bundle,
};
use provenix_worker::attest::{AttestOptions, attest};
use provenix_worker::identity::generate_key;
use provenix_worker::platform::{Choice, Platform, sim_policy};
use ring::rand::SystemRandom;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OTHER_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";
const ARTIFACT: &str = "app.tar.gz";
const HONEST: &[u8] = b"the output every honest builder produces\n";
const TAMPERED: &[u8] = b"the output with a backdoor\n";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("provenix-mofn-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A simulated platform: each has a fresh random chip ID.
fn sim() -> Platform {
    Platform::detect(Choice::Sim, now(), |_| {}).unwrap()
}

/// Attest `content` as `ARTIFACT` (or `name`) on `platform` at `commit`;
/// the bundle's bytes.
fn attested(dir: &Path, platform: &Platform, commit: &str, name: &str, content: &[u8]) -> Vec<u8> {
    let sub = dir.join(format!("w{}", rand_suffix()));
    std::fs::create_dir_all(&sub).unwrap();
    let artifact = sub.join(name);
    std::fs::write(&artifact, content).unwrap();
    let done = attest(
        &[artifact],
        &AttestOptions {
            platform,
            commit,
            vek: None,
            policy: &sim_policy(),
            now: now(),
        },
    )
    .unwrap();
    std::fs::read(&done[0].bundle).unwrap()
}

fn rand_suffix() -> String {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut b).unwrap();
    hex::encode(b)
}

/// A direct-mode bundle built by hand: `platform` attests a statement about
/// `ARTIFACT` whose digest is that of `content` (a worker signing what it
/// did not build, or a tampered build). Returns the bundle and the key.
fn hand_built(platform: &Platform, content: &[u8]) -> (Vec<u8>, [u8; 32]) {
    let (key, public) = generate_key(&SystemRandom::new()).unwrap();
    let statement = Statement {
        subject: Subject::File(ARTIFACT.into()),
        sha256: sha256(content),
        size: content.len().try_into().unwrap(),
        references: Vec::new(),
        deriver: None,
        worker_key: public,
        source_commit: COMMIT.into(),
        log_index: None,
        time: now(),
        nix_signature: None,
        trace: None,
    };
    let evidence = platform
        .evidence(&statement_report_data(&statement.to_cbor()), 0)
        .unwrap();
    let bundle = Bundle::Direct {
        statement: statement.sign(&key).unwrap(),
        evidence,
    };
    (bundle.to_cbor(), public)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

fn honest_actual() -> Actual {
    Actual {
        sha256: sha256(HONEST),
        size: HONEST.len().try_into().unwrap(),
    }
}

fn policy(m: u32, distinct: Distinct) -> Policy {
    let mut p = sim_policy();
    p.snp.accepted_commits = Some(vec![COMMIT.into()]);
    p.threshold = Threshold {
        m,
        distinct,
        builders: Builders::Any,
    };
    p
}

/// Verify each bundle and decide on `ARTIFACT`.
fn decide(policy: &Policy, actual: Option<Actual>, bundles: &[(&str, &[u8])]) -> Decision {
    let verifier = Verifier::new(policy.anchors().unwrap());
    let found = bundles
        .iter()
        .map(|(name, bytes)| {
            (
                (*name).to_owned(),
                verify_bundle(bytes, &verifier, policy, now()),
            )
        })
        .collect();
    policy.decide(&Subject::File(ARTIFACT.into()), actual, found)
}

fn excluded_for<'a>(d: &'a Decision, source: &str) -> &'a [Why] {
    &d.excluded()
        .iter()
        .find(|e| e.source == source)
        .unwrap_or_else(|| panic!("{source} is not excluded: {d:#?}"))
        .reasons
}

fn counted(d: &Decision) -> Vec<&str> {
    d.counted().iter().map(|b| b.source.as_str()).collect()
}

/// Three workers on three chips: two honest, one tampered.
struct Three {
    a: Vec<u8>,
    b: Vec<u8>,
    c: Vec<u8>,
    c_key: [u8; 32],
    platforms: [Platform; 3],
    dir: PathBuf,
}

fn three(name: &str) -> Three {
    let dir = scratch(name);
    let platforms = [sim(), sim(), sim()];
    let a = attested(&dir, &platforms[0], COMMIT, ARTIFACT, HONEST);
    let b = attested(&dir, &platforms[1], COMMIT, ARTIFACT, HONEST);
    let (c, c_key) = hand_built(&platforms[2], TAMPERED);
    Three {
        a,
        b,
        c,
        c_key,
        platforms,
        dir,
    }
}

#[test]
fn two_of_three_accepts_and_names_the_dissenting_builder() {
    let t = three("2of3");
    let bundles = [("a", &t.a[..]), ("b", &t.b[..]), ("c", &t.c[..])];
    for distinct in [Distinct::Key, Distinct::Chip] {
        // With the artifact at hand: the tampered statement never counts.
        let d = decide(&policy(2, distinct), Some(honest_actual()), &bundles);
        assert!(d.accepted(), "{d:#?}");
        assert_eq!(counted(&d), ["a", "b"]);
        assert_eq!(d.digest(), Some(honest_actual()));
        let tampered = Actual {
            sha256: sha256(TAMPERED),
            size: TAMPERED.len().try_into().unwrap(),
        };
        assert_eq!(
            excluded_for(&d, "c"),
            [Why::DigestMismatch {
                stated: tampered,
                actual: honest_actual()
            }]
        );
        let dissenter = format!("worker {}", hex::encode(&t.c_key[..8]));
        assert_eq!(d.disagreement().len(), 2, "{d:#?}");
        let bad = d
            .disagreement()
            .iter()
            .find(|c| c.digest == tampered)
            .unwrap();
        assert_eq!(bad.builders, std::slice::from_ref(&dissenter));

        // Without it: the majority digest wins, the dissenter is named.
        let d = decide(&policy(2, distinct), None, &bundles);
        assert!(d.accepted(), "{d:#?}");
        assert_eq!(d.digest(), Some(honest_actual()));
        assert_eq!(
            excluded_for(&d, "c"),
            [Why::Dissent {
                stated: tampered,
                counted: honest_actual()
            }]
        );
        assert_eq!(
            d.excluded()[0].builder.as_ref().unwrap().name,
            dissenter,
            "the dissenter is named"
        );
    }
}

#[test]
fn three_of_three_rejects() {
    let t = three("3of3");
    let bundles = [("a", &t.a[..]), ("b", &t.b[..]), ("c", &t.c[..])];
    for actual in [Some(honest_actual()), None] {
        let d = decide(&policy(3, Distinct::Chip), actual, &bundles);
        assert!(!d.accepted());
        assert_eq!(
            d.reasons(),
            [Reason::TooFew {
                counted: 2,
                required: 3,
                distinct: Distinct::Chip
            }]
        );
        assert_eq!(counted(&d), ["a", "b"]);
    }
}

#[test]
fn a_worker_of_an_unaccepted_commit_is_not_counted() {
    let t = three("commit");
    let d4 = attested(&t.dir, &sim(), OTHER_COMMIT, ARTIFACT, HONEST);
    let bundles = [("a", &t.a[..]), ("b", &t.b[..]), ("d", &d4[..])];
    let d = decide(&policy(3, Distinct::Key), Some(honest_actual()), &bundles);
    assert!(!d.accepted());
    assert_eq!(counted(&d), ["a", "b"]);
    assert_eq!(
        excluded_for(&d, "d"),
        [Why::CommitNotAccepted(OTHER_COMMIT.into())]
    );
    // Every reason, not just the first: the wrong commit and a wrong digest.
    let d5 = attested(&t.dir, &sim(), OTHER_COMMIT, ARTIFACT, TAMPERED);
    let d = decide(
        &policy(2, Distinct::Key),
        Some(honest_actual()),
        &[("a", &t.a[..]), ("b", &t.b[..]), ("e", &d5[..])],
    );
    assert!(d.accepted());
    let why = excluded_for(&d, "e");
    assert_eq!(why.len(), 2, "{why:?}");
    assert_eq!(why[0], Why::CommitNotAccepted(OTHER_COMMIT.into()));
    assert!(matches!(why[1], Why::DigestMismatch { .. }));
    // Evidence the policy refuses (another root) is reported as refused.
    let mut strict = policy(2, Distinct::Key);
    strict.roots.clear();
    let d = decide(&strict, None, &[("a", &t.a[..])]);
    assert!(!d.accepted());
    assert!(matches!(excluded_for(&d, "a"), [Why::Refused(_)]));
}

#[test]
fn distinct_chips_count_one_chip_once() {
    let t = three("chip");
    // A second worker key on the first chip.
    let a2 = attested(&t.dir, &t.platforms[0], COMMIT, ARTIFACT, HONEST);
    let bundles = [("a", &t.a[..]), ("a2", &a2[..]), ("b", &t.b[..])];
    let d = decide(&policy(3, Distinct::Chip), Some(honest_actual()), &bundles);
    assert!(!d.accepted());
    assert_eq!(counted(&d), ["a", "b"]);
    match excluded_for(&d, "a2") {
        [Why::Duplicate { unit, counted }] => {
            assert!(unit.starts_with("chip "), "{unit}");
            assert_eq!(counted, "a");
        }
        other => panic!("{other:?}"),
    }
    // By key, the two keys on one chip are two builders.
    let d = decide(&policy(3, Distinct::Key), Some(honest_actual()), &bundles);
    assert!(d.accepted(), "{d:#?}");
    // By platform, all three simulated Milan VCEK chips are one.
    let d = decide(
        &policy(2, Distinct::Platform),
        Some(honest_actual()),
        &bundles,
    );
    assert!(!d.accepted());
    assert_eq!(d.counted().len(), 1);
    assert_eq!(d.counted()[0].unit, "platform Milan VCEK");
}

#[test]
fn a_bundle_for_another_subject_is_not_counted() {
    let t = three("replay");
    // Worker b's honest bundle for another artifact with the same bytes.
    let other = attested(&t.dir, &t.platforms[1], COMMIT, "other.tar.gz", HONEST);
    let bundles = [("a", &t.a[..]), ("other", &other[..])];
    let d = decide(&policy(2, Distinct::Chip), Some(honest_actual()), &bundles);
    assert!(!d.accepted());
    assert_eq!(counted(&d), ["a"]);
    assert_eq!(
        excluded_for(&d, "other"),
        [Why::OtherSubject(Subject::File("other.tar.gz".into()))]
    );
}

#[test]
fn named_builders_list_misses_and_ignore_others() {
    let t = three("named");
    let key = |bytes: &[u8]| {
        let Bundle::Direct { statement, .. } = Bundle::from_cbor(bytes).unwrap() else {
            panic!()
        };
        Statement::verify(&statement).unwrap().worker_key
    };
    let mut p = policy(2, Distinct::Chip);
    p.threshold.builders = Builders::Named(vec![
        NamedBuilder {
            name: "alpha".into(),
            key: Hex(key(&t.a)),
        },
        NamedBuilder {
            name: "gamma".into(),
            key: Hex(t.c_key),
        },
        NamedBuilder {
            name: "delta".into(),
            key: Hex([9; 32]),
        },
    ]);
    let bundles = [("a", &t.a[..]), ("b", &t.b[..]), ("c", &t.c[..])];
    let d = decide(&p, Some(honest_actual()), &bundles);
    assert!(!d.accepted());
    assert_eq!(counted(&d), ["a"]);
    assert_eq!(d.counted()[0].name, "alpha");
    assert_eq!(d.missing(), ["delta"]);
    assert_eq!(excluded_for(&d, "b"), [Why::KeyNotNamed]);
    assert!(matches!(
        excluded_for(&d, "c"),
        [Why::DigestMismatch { .. }]
    ));
    assert_eq!(d.disagreement()[1].builders, ["gamma"]);
}

#[test]
fn threshold_policy_parses_with_defaults_and_refuses_bad_ones() {
    let p = Policy::from_toml("").unwrap();
    assert_eq!(p.threshold, Threshold::default());
    assert_eq!(p.threshold.m, 1);
    let p = Policy::from_toml(
        r#"
        [threshold]
        m = 2
        distinct = "chip"
        builders = [
            { name = "a", key = "0101010101010101010101010101010101010101010101010101010101010101" },
            { name = "b", key = "0202020202020202020202020202020202020202020202020202020202020202" },
        ]
        "#,
    )
    .unwrap();
    assert_eq!(p.threshold.distinct, Distinct::Chip);
    assert!(matches!(&p.threshold.builders, Builders::Named(n) if n.len() == 2));
    let p = Policy::from_toml("[threshold]\nbuilders = \"any\"\n").unwrap();
    assert_eq!(p.threshold.builders, Builders::Any);
    for bad in [
        "[threshold]\nm = 0\n",
        "[threshold]\nn = 2\n",
        "[threshold]\ndistinct = \"cloud\"\n",
        "[threshold]\nbuilders = \"all\"\n",
        "[threshold]\nbuilders = []\n",
        "[threshold]\nm = 2\nbuilders = [{ name = \"a\", key = \"0101010101010101010101010101010101010101010101010101010101010101\" }]\n",
        "[threshold]\nbuilders = [{ name = \"a\", key = \"01\" }]\n",
        "[threshold]\nbuilders = [{ name = \"a\", key = \"0101010101010101010101010101010101010101010101010101010101010101\" }, { name = \"b\", key = \"0101010101010101010101010101010101010101010101010101010101010101\" }]\n",
        "[threshold]\nm = -1\n",
    ] {
        assert!(Policy::from_toml(bad).is_err(), "accepted: {bad}");
    }
}

/// Verify each bundle at `at` and decide on `ARTIFACT`.
fn decide_at(policy: &Policy, at: i64, bundles: &[(&str, &[u8])]) -> Decision {
    let verifier = Verifier::new(policy.anchors().unwrap());
    let found = bundles
        .iter()
        .map(|(name, bytes)| {
            (
                (*name).to_owned(),
                verify_bundle(bytes, &verifier, policy, at),
            )
        })
        .collect();
    policy.decide(
        &Subject::File(ARTIFACT.into()),
        Some(honest_actual()),
        found,
    )
}

#[test]
fn a_worker_whose_measurement_is_not_accepted_is_not_counted() {
    let t = three("measurement");
    let bundles = [("a", &t.a[..]), ("b", &t.b[..]), ("c", &t.c[..])];
    // The simulator's launch digest, as its reports carry it.
    let measured = {
        let Bundle::Direct { evidence, .. } = Bundle::from_cbor(&t.a).unwrap() else {
            panic!()
        };
        let provenix_verifier::Evidence::Snp(snp) = evidence else {
            panic!()
        };
        *provenix_firmware::snp::AttestationReport::from_bytes(&snp.report)
            .unwrap()
            .measurement()
    };
    let mut p = policy(2, Distinct::Chip);
    p.snp.measurements = Some(vec![Hex(measured)]);
    assert!(decide(&p, Some(honest_actual()), &bundles).accepted());
    // Another image's measurement only: nobody counts, each says why.
    p.snp.measurements = Some(vec![Hex([0x42; 48])]);
    let d = decide(&p, Some(honest_actual()), &bundles);
    assert!(!d.accepted());
    assert!(d.counted().is_empty());
    for source in ["a", "b", "c"] {
        match excluded_for(&d, source) {
            [Why::Refused(why)] => assert!(why.contains("measurement"), "{why}"),
            other => panic!("{source}: {other:?}"),
        }
    }
}

#[test]
fn expired_evidence_is_not_counted() {
    let t = three("expired");
    let bundles = [("a", &t.a[..]), ("b", &t.b[..])];
    let p = policy(2, Distinct::Chip);
    assert!(decide_at(&p, now(), &bundles).accepted());
    // Two years on, the simulated VCEKs (valid one year) have expired.
    let d = decide_at(&p, now() + 2 * 365 * 86_400, &bundles);
    assert!(!d.accepted());
    for source in ["a", "b"] {
        match excluded_for(&d, source) {
            [Why::Refused(why)] => assert!(why.contains("VCEK is not valid at"), "{why}"),
            other => panic!("{source}: {other:?}"),
        }
    }
}

/// A log of the worker `id` holding `entries`, checkpointed by the real
/// signer at `time` and attested on `platform`: the bundle of entry 0.
fn logged_bundle(
    dir: &Path,
    platform: &Platform,
    id: &provenix_worker::identity::WorkerIdentity,
    entries: &[Vec<u8>],
    time: i64,
) -> Vec<u8> {
    use provenix_verifier::{Checkpoint, InclusionProof, checkpoint_report_data, log_origin};
    use provenix_worker::log::{CheckpointSigner, Log};
    let mut log = Log::open(dir).unwrap();
    for e in entries {
        log.append(e).unwrap();
    }
    let origin = log_origin(id.public());
    let signer = CheckpointSigner::new(&origin, id.key().clone()).unwrap();
    let note = signer.sign_at(
        &Checkpoint::new(&origin, log.size(), log.root()).unwrap(),
        time,
    );
    let size = log.size();
    Bundle::Logged {
        statement: log.entry(0).unwrap(),
        identity: id.document().clone(),
        proof: InclusionProof {
            index: 0,
            size,
            hashes: log.inclusion_proof(0, size).unwrap(),
        },
        checkpoint_evidence: platform
            .evidence(&checkpoint_report_data(&note), 0)
            .unwrap(),
        checkpoint: note,
    }
    .to_cbor()
}

/// A statement of worker `id` about `subject`, at log index `index`.
fn log_entry(
    id: &provenix_worker::identity::WorkerIdentity,
    subject: &str,
    content: &[u8],
    index: u64,
) -> Vec<u8> {
    Statement {
        subject: Subject::File(subject.into()),
        sha256: sha256(content),
        size: content.len().try_into().unwrap(),
        references: Vec::new(),
        deriver: None,
        worker_key: *id.public(),
        source_commit: COMMIT.into(),
        log_index: Some(index),
        time: now(),
        nix_signature: None,
        trace: None,
    }
    .sign(id.key())
    .unwrap()
}

#[test]
fn a_forked_log_is_caught() {
    use provenix_verifier::{Conflict, Seen, Witness};
    let dir = scratch("fork");
    let platform = sim();
    let id = provenix_worker::identity::WorkerIdentity::new(&platform, COMMIT).unwrap();
    // One key, two logs: the same first entry, then different second ones
    // (the key holder shows each user another history).
    let first = log_entry(&id, ARTIFACT, HONEST, 0);
    let shown_to_a = [first.clone(), log_entry(&id, "lib.so", b"lib", 1)];
    let shown_to_b = [first, log_entry(&id, "lib.so", b"lib with a backdoor", 1)];
    let a = logged_bundle(&dir.join("a"), &platform, &id, &shown_to_a, now());
    let b = logged_bundle(&dir.join("b"), &platform, &id, &shown_to_b, now());
    let p = policy(1, Distinct::Key);
    let verifier = Verifier::new(p.anchors().unwrap());
    // Each bundle alone verifies: only a memory of checkpoints sees the fork.
    let va = verify_bundle(&a, &verifier, &p, now()).unwrap();
    let vb = verify_bundle(&b, &verifier, &p, now()).unwrap();
    let memory = dir.join("memory");
    let mut witness = Witness::new(Some(memory.clone()));
    let sa = Seen::from_bundle(&a, &va).unwrap().unwrap();
    let sb = Seen::from_bundle(&b, &vb).unwrap().unwrap();
    let none: &Vec<provenix_verifier::ConsistencyProof> = &Vec::new();
    witness.observe(&sa, none).unwrap().unwrap();
    witness.commit(none).unwrap();
    // A later run, shown the other history.
    let mut witness = Witness::new(Some(memory.clone()));
    match witness.observe(&sb, none).unwrap() {
        Err(Conflict::Forked {
            fork,
            file: Some(file),
        }) => {
            assert_eq!(fork.size, 2);
            assert_eq!(fork.notes, [sa.note().to_owned(), sb.note().to_owned()]);
            assert!(file.exists());
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stale_checkpoint_is_refused_by_max_age() {
    use provenix_verifier::{Seen, check_freshness};
    let dir = scratch("stale");
    let platform = sim();
    let id = provenix_worker::identity::WorkerIdentity::new(&platform, COMMIT).unwrap();
    let entries = [log_entry(&id, ARTIFACT, HONEST, 0)];
    let p = Policy::from_toml("[checkpoint]\nmax_age = \"24h\"\n").unwrap();
    let max = p.checkpoint.max_age.unwrap().0;
    assert_eq!(max, 86_400);
    let policy = policy(1, Distinct::Key);
    let verifier = Verifier::new(policy.anchors().unwrap());
    for (name, time, fresh) in [
        ("fresh", now() - 3_600, true),
        ("stale", now() - 2 * 86_400, false),
    ] {
        let bundle = logged_bundle(&dir.join(name), &platform, &id, &entries, time);
        let v = verify_bundle(&bundle, &verifier, &policy, now()).unwrap();
        let seen = Seen::from_bundle(&bundle, &v).unwrap().unwrap();
        let verdict = check_freshness(seen.checkpoint(), max, now());
        assert_eq!(verdict.is_ok(), fresh, "{name}: {verdict:?}");
        if let Err(finding) = verdict {
            assert_eq!(finding.field, "checkpoint.time");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
