//! Checkpoint memory, fork detection and freshness through the library:
//! signed checkpoints of simulated workers' logs, remembered in a
//! directory, extended with and without consistency proofs, forked, and
//! shared by concurrent verifiers.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/logged.rs"]
mod logged;

use logged::{TempDir, Worker, now};
use provenix_verifier::{
    Conflict, ConsistencyProof, FORK_SCHEMA, MAX_CLOCK_SKEW, Observation, Seen, Witness,
    check_freshness, checkpoint_time,
};

const NO_PROOFS: &Vec<ConsistencyProof> = &Vec::new();

fn seen(w: &Worker, entries: &[Vec<u8>], time: Option<i64>) -> Seen {
    Seen::from_note(&w.note(entries, time), &w.public).unwrap()
}

fn memory_file(dir: &std::path::Path, w: &Worker, ext: &str) -> std::path::PathBuf {
    dir.join(format!("{}.{ext}", hex::encode(w.public)))
}

#[test]
fn first_use_is_remembered_and_the_same_tree_accepted() {
    let dir = TempDir::new("witness-tofu");
    let w = Worker::new(1);
    let log = w.entries(5, "a");
    let s5 = seen(&w, &log, Some(now()));
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    assert_eq!(
        witness.observe(&s5, NO_PROOFS).unwrap(),
        Ok(Observation::FirstUse)
    );
    assert_eq!(witness.commit(NO_PROOFS).unwrap(), []);
    let file = memory_file(dir.path(), &w, "checkpoint");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), s5.note());
    // Another run: the same tree (signed at another time) is the same.
    let again = seen(&w, &log, Some(now() + 1));
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    assert_eq!(
        witness.observe(&again, NO_PROOFS).unwrap(),
        Ok(Observation::Same)
    );
}

#[test]
fn a_larger_checkpoint_needs_a_consistency_proof() {
    let dir = TempDir::new("witness-extend");
    let w = Worker::new(1);
    let log = w.entries(9, "a");
    let (s5, s9) = (seen(&w, &log[..5], None), seen(&w, &log, None));
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    witness.observe(&s5, NO_PROOFS).unwrap().unwrap();
    witness.commit(NO_PROOFS).unwrap();

    // No proof: unproven, and not remembered.
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    match witness.observe(&s9, NO_PROOFS).unwrap() {
        Err(Conflict::Unproven {
            known: 5,
            size: 9,
            proof_error: None,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    witness.commit(NO_PROOFS).unwrap();
    let file = memory_file(dir.path(), &w, "checkpoint");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), s5.note());

    // A proof for another tree (one node flipped): unproven, with why.
    let mut bad = w.consistency(&log, 5);
    bad.hashes[0][0] ^= 1;
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    match witness.observe(&s9, &vec![bad]).unwrap() {
        Err(Conflict::Unproven {
            proof_error: Some(e),
            ..
        }) => assert!(
            e.contains("consistency proof from a tree of 5 to one of 9"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }

    // The proof, through its file format: extends, remembered.
    let proof = ConsistencyProof::parse(w.consistency(&log, 5).to_text().as_bytes()).unwrap();
    let proofs = vec![proof];
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    assert_eq!(
        witness.observe(&s9, &proofs).unwrap(),
        Ok(Observation::Extends(5))
    );
    witness.commit(&proofs).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), s9.note());

    // The older one again: a prefix, with the proof; unproven without.
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    assert_eq!(
        witness.observe(&s5, &proofs).unwrap(),
        Ok(Observation::Prefix(9))
    );
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    assert!(matches!(
        witness.observe(&s5, NO_PROOFS).unwrap(),
        Err(Conflict::Unproven {
            known: 9,
            size: 5,
            ..
        })
    ));
}

#[test]
fn two_histories_of_one_size_are_a_fork_kept_for_good() {
    let dir = TempDir::new("witness-fork");
    let w = Worker::new(1);
    // Two logs of three entries under one key: the third entry differs.
    let honest = w.entries(3, "a");
    let mut forked = honest.clone();
    forked[2] = w.statement("/nix/store/evil", None, b"evil", Some(2));
    let (a, b) = (seen(&w, &honest, None), seen(&w, &forked, None));
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    witness.observe(&a, NO_PROOFS).unwrap().unwrap();
    witness.commit(NO_PROOFS).unwrap();

    let mut witness = Witness::new(Some(dir.path().to_owned()));
    let fork_file = memory_file(dir.path(), &w, "fork");
    match witness.observe(&b, NO_PROOFS).unwrap() {
        Err(Conflict::Forked { fork, file }) => {
            assert_eq!(fork.size, 3);
            assert_eq!(fork.notes, [a.note().to_owned(), b.note().to_owned()]);
            assert_eq!(file.as_deref(), Some(fork_file.as_path()));
        }
        other => panic!("{other:?}"),
    }
    // The file holds both signed notes.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fork_file).unwrap()).unwrap();
    assert_eq!(json["schema"], FORK_SCHEMA);
    assert_eq!(json["checkpoints"][0], a.note());
    assert_eq!(json["checkpoints"][1], b.note());
    // From now on, every checkpoint of that log is refused, even the
    // honest one, in every later run.
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    assert!(matches!(
        witness.observe(&a, NO_PROOFS).unwrap(),
        Err(Conflict::Forked { file: Some(_), .. })
    ));
    // Another worker's log is not affected.
    let other = Worker::new(2);
    let s = seen(&other, &other.entries(1, "x"), None);
    assert_eq!(
        witness.observe(&s, NO_PROOFS).unwrap(),
        Ok(Observation::FirstUse)
    );
}

#[test]
fn bundles_of_one_run_must_agree_without_memory() {
    let w = Worker::new(1);
    let honest = w.entries(4, "a");
    let mut forked = honest.clone();
    forked[0] = w.statement("/nix/store/evil", None, b"evil", Some(0));
    let mut witness = Witness::new(None);
    witness
        .observe(&seen(&w, &honest, None), NO_PROOFS)
        .unwrap()
        .unwrap();
    match witness
        .observe(&seen(&w, &forked, None), NO_PROOFS)
        .unwrap()
    {
        Err(Conflict::Forked { fork, file: None }) => assert_eq!(fork.size, 4),
        other => panic!("{other:?}"),
    }
    // A smaller, unproven one of the same run is refused too.
    let mut witness = Witness::new(None);
    witness
        .observe(&seen(&w, &honest, None), NO_PROOFS)
        .unwrap()
        .unwrap();
    assert!(matches!(
        witness
            .observe(&seen(&w, &honest[..2], None), NO_PROOFS)
            .unwrap(),
        Err(Conflict::Unproven {
            known: 4,
            size: 2,
            ..
        })
    ));
    assert_eq!(witness.commit(NO_PROOFS).unwrap(), []);
}

#[test]
fn a_damaged_memory_is_an_error_not_a_blank() {
    let dir = TempDir::new("witness-damaged");
    let w = Worker::new(1);
    let log = w.entries(2, "a");
    let file = memory_file(dir.path(), &w, "checkpoint");
    // Another worker's note under this worker's name.
    let other = Worker::new(2);
    std::fs::write(&file, other.note(&other.entries(2, "a"), None)).unwrap();
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    let err = witness
        .observe(&seen(&w, &log, None), NO_PROOFS)
        .unwrap_err();
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    // Too large.
    std::fs::write(&file, vec![b'a'; 1 << 20]).unwrap();
    let mut witness = Witness::new(Some(dir.path().to_owned()));
    let err = witness
        .observe(&seen(&w, &log, None), NO_PROOFS)
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[test]
fn concurrent_verifiers_keep_the_largest_proven_checkpoint() {
    let dir = TempDir::new("witness-concurrent");
    let w = Worker::new(1);
    let log = w.entries(16, "a");
    // Every proof between prefixes, as a worker would serve them.
    let mut proofs = Vec::new();
    for m in 1..=16 {
        for n in m..=16 {
            proofs.push(w.consistency(&log[..n], m));
        }
    }
    let notes: Vec<Seen> = (1..=16).map(|n| seen(&w, &log[..n], None)).collect();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (dir, notes, proofs) = (dir.path(), &notes, &proofs);
            scope.spawn(move || {
                for round in 0..16 {
                    // Each thread its own verifier run, sizes out of order.
                    let size = (t * 5 + round * 3) % 16;
                    let mut witness = Witness::new(Some(dir.to_owned()));
                    let v = witness.observe(&notes[size], proofs).unwrap();
                    assert!(v.is_ok(), "{v:?}");
                    assert_eq!(witness.commit(proofs).unwrap(), []);
                }
            });
        }
    });
    let file = memory_file(dir.path(), &w, "checkpoint");
    let kept = Seen::from_note(&std::fs::read_to_string(file).unwrap(), &w.public).unwrap();
    assert_eq!(kept.size(), 16);
    // Only the memory file and the lock are left: no temporary files.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("{}.checkpoint", hex::encode(w.public)),
            "lock".into()
        ]
    );
}

#[test]
fn a_fork_between_concurrent_verifiers_is_found_at_commit() {
    let dir = TempDir::new("witness-race");
    let w = Worker::new(1);
    let honest = w.entries(3, "a");
    let mut forked = honest.clone();
    forked[1] = w.statement("/nix/store/evil", None, b"evil", Some(1));
    // Both runs start with an empty memory, each sees one history.
    let mut first = Witness::new(Some(dir.path().to_owned()));
    let mut second = Witness::new(Some(dir.path().to_owned()));
    first
        .observe(&seen(&w, &honest, None), NO_PROOFS)
        .unwrap()
        .unwrap();
    second
        .observe(&seen(&w, &forked, None), NO_PROOFS)
        .unwrap()
        .unwrap();
    assert_eq!(first.commit(NO_PROOFS).unwrap(), []);
    match second.commit(NO_PROOFS).unwrap().as_slice() {
        [
            Conflict::Forked {
                fork,
                file: Some(_),
            },
        ] => assert_eq!(fork.size, 3),
        other => panic!("{other:?}"),
    }
    assert!(memory_file(dir.path(), &w, "fork").exists());
}

#[test]
fn the_checkpoint_time_line() {
    let w = Worker::new(1);
    let log = w.entries(1, "a");
    let t = now();
    assert_eq!(
        checkpoint_time(seen(&w, &log, Some(t)).checkpoint()).unwrap(),
        Some(t)
    );
    assert_eq!(
        checkpoint_time(seen(&w, &log, None).checkpoint()).unwrap(),
        None
    );
    // Signed, but malformed: refused by name.
    for bad in [
        "provenix-time 01",
        "provenix-time +1",
        "provenix-time",
        "provenix-time  1",
        "provenix-timex 1",
    ] {
        let note = w.note(&log, None);
        let text = note.split_once("\n\n").unwrap().0;
        let text = format!("{text}\n{bad}\n");
        let origin = w.origin();
        let vkey = provenix_verifier::VerifierKey::ed25519(&origin, &w.public).unwrap();
        let signed = format!(
            "{text}\n{}",
            provenix_verifier::signature_line(&vkey, w.key.sign(text.as_bytes()).as_ref())
        );
        let s = Seen::from_note(&signed, &w.public).unwrap();
        let r = checkpoint_time(s.checkpoint());
        if bad == "provenix-timex 1" {
            // Another extension, not ours.
            assert_eq!(r.unwrap(), None);
        } else {
            assert!(r.is_err(), "{bad}: {r:?}");
        }
    }
}

#[test]
fn freshness_against_max_age() {
    let w = Worker::new(1);
    let log = w.entries(1, "a");
    let at = now();
    let day = 86_400;
    let fresh = seen(&w, &log, Some(at - day + 1));
    check_freshness(fresh.checkpoint(), 86_400, at).unwrap();
    let stale = seen(&w, &log, Some(at - day - 1));
    let f = check_freshness(stale.checkpoint(), 86_400, at).unwrap_err();
    assert_eq!(f.field, "checkpoint.time");
    assert!(f.expected.contains("within 1d"), "{f}");
    let none = seen(&w, &log, None);
    let f = check_freshness(none.checkpoint(), 86_400, at).unwrap_err();
    assert!(f.found.contains("no provenix-time line"), "{f}");
    let future = seen(&w, &log, Some(at + MAX_CLOCK_SKEW + 1));
    let f = check_freshness(future.checkpoint(), 86_400, at).unwrap_err();
    assert!(f.found.contains("in the future"), "{f}");
    let skewed = seen(&w, &log, Some(at + MAX_CLOCK_SKEW));
    check_freshness(skewed.checkpoint(), 86_400, at).unwrap();
}

#[test]
fn consistency_files_parse_strictly() {
    let w = Worker::new(1);
    let log = w.entries(7, "a");
    let proof = w.consistency(&log, 3);
    let text = proof.to_text();
    assert_eq!(ConsistencyProof::parse(text.as_bytes()).unwrap(), proof);
    let origin = w.origin();
    let cases = [
        text.trim_end().to_owned(),
        text.replacen("v1", "v2", 1),
        text.replacen(" 7\n", " 07\n", 1),
        text.replacen("3 7", "3  7", 1),
        text.replacen(&origin, "", 1),
        text.replacen(&origin, &format!("{origin} x"), 1),
        format!("{text}AAAA\n"),
        format!("{text}\n"),
        format!(
            "{text}{}",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".repeat(70)
        ),
    ];
    for bad in cases {
        assert!(ConsistencyProof::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
    assert!(ConsistencyProof::parse(&[0xff; 10]).is_err());
}
