//! `provenix report` and the checkpoint memory as users run them: bundles
//! of simulated workers (direct and logged, written here as the worker
//! writes them), a tampered build, a forked log, a stale checkpoint and an
//! unproven extension, through the `provenix` binary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/logged.rs"]
mod logged;

#[path = "../../tests/support/evidence.rs"]
mod common;

use std::path::Path;

use common::provenix;
use logged::{TempDir, Worker, now, policy_file, sha256};
use serde_json::Value;

const DRV: &str = "/nix/store/00000000000000000000000000000000-hello.drv";
const OUT: &str = "/nix/store/00000000000000000000000000000000-hello";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

fn name(w: &Worker) -> String {
    format!("worker {}", hex::encode(&w.public[..8]))
}

#[test]
fn report_names_who_disagrees() {
    let tmp = TempDir::new("report");
    let bundles = tmp.path().join("export");
    std::fs::create_dir_all(bundles.join("w3")).unwrap();
    let policy = policy_file(tmp.path(), "");
    let policy = policy.to_str().unwrap();
    let (w1, w2, w3) = (Worker::new(1), Worker::new(2), Worker::new(3));
    // hello: two honest direct bundles, one tampered (in a subdirectory).
    for (w, content, dir) in [
        (&w1, &b"hello"[..], bundles.clone()),
        (&w2, &b"hello"[..], bundles.clone()),
        (&w3, &b"hello with a backdoor"[..], bundles.join("w3")),
    ] {
        let b = w.direct(&w.statement(OUT, Some(DRV), content, None));
        write(&dir, &format!("hello-{}.provenix", w.chip), &b);
    }
    // Logged bundles from w1's and w2's own logs: their outputs agree
    // (same subjects and contents), one output is w1's alone.
    let (log1, log2) = (w1.entries(3, "lib"), w2.entries(2, "lib"));
    for i in 0..3 {
        write(
            &bundles,
            &format!("lib-1-{i}.provenix"),
            &w1.logged(&log1, i, Some(now())),
        );
    }
    for i in 0..2 {
        write(
            &bundles,
            &format!("lib-2-{i}.provenix"),
            &w2.logged(&log2, i, Some(now())),
        );
    }
    // Garbage is listed as refused, not fatal.
    write(&bundles, "junk.provenix", b"not a bundle");
    let dir = bundles.to_str().unwrap();

    let (code, out, err) = provenix(&["report", dir, "--policy", policy, "--no-checkpoint-cache"]);
    assert_eq!(code, 1, "{out}{err}");
    let tampered = hex::encode(sha256(b"hello with a backdoor"));
    let honest = hex::encode(sha256(b"hello"));
    let line = |status: &str, target: &str| {
        out.lines()
            .find(|l| l.starts_with(status) && l.ends_with(target))
            .unwrap_or_else(|| panic!("no {status} line for {target}:\n{out}"))
            .to_owned()
    };
    let hello = line("DISAGREE", &format!("{DRV} -> {OUT}"));
    assert!(hello.contains("        3       2"), "{hello}");
    let bad = out
        .lines()
        .find(|l| l.contains(&tampered))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(bad.contains(&name(&w3)), "{bad}");
    assert!(bad.contains("chip 0303030303030303"), "{bad}");
    assert!(!bad.contains(&name(&w1)), "{bad}");
    let good = out.lines().find(|l| l.contains(&honest)).unwrap();
    assert!(
        good.contains(&name(&w1)) && good.contains(&name(&w2)),
        "{good}"
    );
    line("agree", "-lib-0");
    line("agree", "-lib-1");
    line("single", "-lib-2");
    assert!(
        out.contains("4 output(s) of 4 derivation(s) from 9 bundle(s): 2 agree, 1 disagree, 1 single; 1 bundle(s) refused"),
        "{out}"
    );
    assert!(
        out.contains("refused: ") && out.contains("junk.provenix"),
        "{out}"
    );

    // The same as JSON.
    let (code, out, err) = provenix(&[
        "report",
        dir,
        "--policy",
        policy,
        "--no-checkpoint-cache",
        "--json",
    ]);
    assert_eq!(code, 1, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["schema"], "provenix.report/v1");
    assert_eq!(doc["summary"]["disagree"], 1);
    assert_eq!(doc["summary"]["refused"], 1);
    let drv = doc["derivations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["derivation"] == DRV)
        .unwrap();
    let output = &drv["outputs"][0];
    assert_eq!(output["subject"]["name"], OUT);
    assert_eq!(output["status"], "disagree");
    assert_eq!(output["counts"]["builders"], 3);
    assert_eq!(output["counts"]["chips"], 3);
    let digests = output["digests"].as_array().unwrap();
    let dissent = digests.iter().find(|d| d["sha256"] == tampered).unwrap();
    assert_eq!(dissent["builders"], serde_json::json!([name(&w3)]));
    let b3 = output["builders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["worker_key"] == hex::encode(w3.public))
        .unwrap();
    assert_eq!(b3["chip"], "03".repeat(64));
    assert_eq!(b3["source_commit"], logged::COMMIT);
    assert_eq!(b3["log_index"], Value::Null);

    // Without the tampered bundle: no disagreement, exit 0.
    std::fs::remove_dir_all(bundles.join("w3")).unwrap();
    let (code, out, err) = provenix(&["report", dir, "--policy", policy, "--no-checkpoint-cache"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_forked_log_is_refused_and_remembered() {
    let tmp = TempDir::new("report-fork");
    let memory = tmp.path().join("memory");
    let policy = policy_file(tmp.path(), "");
    let policy = policy.to_str().unwrap();
    let w = Worker::new(1);
    // Two logs of two entries under one key, the second entry differs.
    let honest = w.entries(2, "a");
    let mut forked = honest.clone();
    forked[1] = w.statement("/nix/store/evil", None, b"evil", Some(1));
    let a = write(tmp.path(), "a.provenix", &w.logged(&honest, 0, Some(now())));
    let b = write(tmp.path(), "b.provenix", &w.logged(&forked, 0, Some(now())));
    let mem = memory.to_str().unwrap();

    let (code, out, err) = provenix(&[
        "report",
        &a,
        &b,
        "--policy",
        policy,
        "--checkpoint-cache",
        mem,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 bundle(s) refused"), "{out}");
    assert!(out.contains("forked"), "{out}");
    // The proof of misbehaviour: both signed notes, on stderr and on disk.
    assert!(err.contains("FORK"), "{err}");
    assert!(err.contains(&w.note(&honest, None)[..20]), "{err}");
    let fork = memory.join(format!("{}.fork", hex::encode(w.public)));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&fork).unwrap()).unwrap();
    assert_eq!(json["schema"], "provenix.fork/v1");
    assert_eq!(json["checkpoints"].as_array().unwrap().len(), 2);

    // Later, the honest bundle alone is still refused, by `verify` too.
    let (code, out, err) = provenix(&[
        "verify",
        "--bundle",
        &a,
        "--policy",
        policy,
        "--checkpoint-cache",
        mem,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("forked"), "{out}");
    // Without the memory, it verifies on its own.
    let (code, out, err) = provenix(&[
        "verify",
        "--bundle",
        &a,
        "--policy",
        policy,
        "--no-checkpoint-cache",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // Within one run, without memory, the fork is still caught.
    let (code, out, _) = provenix(&[
        "verify",
        "--bundle",
        &a,
        "--bundle",
        &b,
        "--policy",
        policy,
        "--no-checkpoint-cache",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("forked"), "{out}");
}

#[test]
fn a_stale_checkpoint_is_refused_by_max_age() {
    let tmp = TempDir::new("report-stale");
    let policy = policy_file(tmp.path(), "[checkpoint]\nmax_age = \"1h\"\n");
    let policy = policy.to_str().unwrap();
    let w = Worker::new(1);
    let log = w.entries(1, "a");
    let stale = write(
        tmp.path(),
        "stale.provenix",
        &w.logged(&log, 0, Some(now() - 7_200)),
    );
    let fresh = write(
        tmp.path(),
        "fresh.provenix",
        &w.logged(&log, 0, Some(now() - 60)),
    );
    let untimed = write(tmp.path(), "untimed.provenix", &w.logged(&log, 0, None));
    let run = |bundle: &str| {
        provenix(&[
            "verify",
            "--bundle",
            bundle,
            "--policy",
            policy,
            "--no-checkpoint-cache",
        ])
    };
    let (code, out, err) = run(&stale);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("checkpoint.time") && out.contains("within 1h"),
        "{out}"
    );
    let (code, out, _) = run(&untimed);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no provenix-time line"), "{out}");
    let (code, out, err) = run(&fresh);
    assert_eq!(code, 0, "{out}{err}");
    // --at moves "now": the stale one was fresh two hours ago.
    let at = format!("@{}", now() - 7_000);
    let (code, out, err) = provenix(&[
        "verify",
        "--bundle",
        &stale,
        "--policy",
        policy,
        "--no-checkpoint-cache",
        "--at",
        &at,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // A bad duration is a policy error.
    let bad = policy_file(tmp.path(), "[checkpoint]\nmax_age = \"1 day\"\n");
    let (code, _, err) = run_with(&bad, &fresh);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("max_age"), "{err}");
}

fn run_with(policy: &Path, bundle: &str) -> (i32, String, String) {
    provenix(&[
        "verify",
        "--bundle",
        bundle,
        "--policy",
        policy.to_str().unwrap(),
        "--no-checkpoint-cache",
    ])
}

#[test]
fn an_extension_needs_a_consistency_proof() {
    let tmp = TempDir::new("report-extend");
    let memory = tmp.path().join("memory");
    let mem = memory.to_str().unwrap();
    let policy = policy_file(tmp.path(), "");
    let policy = policy.to_str().unwrap();
    let w = Worker::new(1);
    let log = w.entries(6, "a");
    let early = write(
        tmp.path(),
        "early.provenix",
        &w.logged(&log[..2], 0, Some(now())),
    );
    let dir = tmp.path().join("later");
    std::fs::create_dir_all(&dir).unwrap();
    let later = write(&dir, "later.provenix", &w.logged(&log, 5, Some(now())));
    let verify = |bundle: &str, policy: &str| {
        provenix(&[
            "verify",
            "--bundle",
            bundle,
            "--policy",
            policy,
            "--checkpoint-cache",
            mem,
        ])
    };
    assert_eq!(verify(&early, policy).0, 0);
    // Size 2 remembered; size 6 without a proof: refused.
    let (code, out, _) = verify(&later, policy);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not proven consistent"), "{out}");
    // Accepted with a warning when the policy says so, and not remembered.
    let warn = policy_file(&dir, "[checkpoint]\nunproven = \"warn\"\n");
    let (code, out, err) = verify(&later, warn.to_str().unwrap());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning") && err.contains("not proven consistent"),
        "{err}"
    );
    let remembered = memory.join(format!("{}.checkpoint", hex::encode(w.public)));
    assert!(
        std::fs::read_to_string(&remembered)
            .unwrap()
            .contains("\n2\n")
    );
    // With the proof beside the bundles (`--bundles DIR`): accepted and
    // remembered.
    write(
        &dir,
        "a.consistency",
        w.consistency(&log, 2).to_text().as_bytes(),
    );
    let (code, out, err) = provenix(&[
        "verify",
        "--bundles",
        dir.to_str().unwrap(),
        "--policy",
        policy,
        "--checkpoint-cache",
        mem,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        std::fs::read_to_string(&remembered)
            .unwrap()
            .contains("\n6\n")
    );
    // And the old one is a proven prefix of it.
    let proof = tmp.path().join("b.consistency");
    std::fs::write(&proof, w.consistency(&log, 2).to_text()).unwrap();
    let (code, out, err) = provenix(&[
        "verify",
        "--bundle",
        &early,
        "--policy",
        policy,
        "--checkpoint-cache",
        mem,
        "--consistency",
        proof.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
}
