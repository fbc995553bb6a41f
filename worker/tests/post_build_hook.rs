//! End to end with Debian's real Nix (2.8), as issue 4 asks: `nix-build`
//! with the post-build hook -> `provenix-worker serve` (simulated platform)
//! -> `provenix-worker export` -> the bundle verifies with the verifier
//! library, the statement's Nix signature verifies, and the binary cache
//! written from it is accepted by `nix store verify` under the worker's key
//! and refused under another key of the same name.
//!
//! Needs root (a writable /nix/store) and the Nix tools on PATH; without
//! them it prints `SKIP: ...` and passes, unless CI=true.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use provenix_verifier::nixsig::{self, public_key_line, worker_key_line, worker_key_name};
use provenix_verifier::{Subject, Verifier, verify_bundle};
use provenix_worker::platform::sim_policy;

mod common;

use common::{Daemon, nix_available, success, wait_for};

const WORKER: &str = env!("CARGO_BIN_EXE_provenix-worker");

/// `nix store verify` of `path` in the binary cache `cache`, trusting
/// only `key` and needing one signature.
fn nix_store_verify(cache: &Path, key: &str, path: &str) -> Output {
    Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "store"])
        .args(["verify", "--store"])
        .arg(format!("file://{}", cache.display()))
        .args(["--trusted-public-keys", key, "--sigs-needed", "1", path])
        .output()
        .unwrap()
}

#[test]
fn nix_build_with_the_post_build_hook_gives_a_bundle_and_a_nix_signature() {
    if !nix_available("post_build_hook") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("provenix-post-build-hook-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("hook.sock");
    let child = Command::new(WORKER)
        .args(["serve", "--platform", "sim", "--checkpoint-ms", "100"])
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon(child, dir.clone());
    wait_for(&socket);

    // Nix runs the hook with no arguments of its own: a wrapper names the
    // socket.
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec {WORKER} hook --socket {}\n",
            socket.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    // A fresh output each run (else Nix would not build, nor run the hook),
    // with a reference, so the fingerprint has one.
    let tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let expression = format!(
        r#"derivation {{ name = "provenix-hook-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${{builtins.toFile "provenix-hook-dep" "dep"}} {tag} > $out" ]; }}"#
    );
    let built = Command::new("nix-build")
        .args(["--no-out-link", "--option", "sandbox", "false"])
        .args(["--option", "substituters", ""])
        .args(["--option", "post-build-hook"])
        .arg(&hook)
        .args(["--expr", &expression])
        .output()
        .unwrap();
    let out_path = success(built, "nix-build").trim().to_owned();
    assert!(out_path.starts_with("/nix/store/"), "{out_path}");

    // The hook only returns once the daemon has logged the output; export
    // waits for the checkpoint that covers it.
    let bundles = dir.join("b");
    let cache = dir.join("cache");
    let exported = Command::new(WORKER)
        .arg("export")
        .arg("--socket")
        .arg(&socket)
        .arg("--out")
        .arg(&bundles)
        .arg("--cache")
        .arg(&cache)
        .arg(&out_path)
        .output()
        .unwrap();
    let stdout = success(exported, "provenix-worker export");
    let mut lines = stdout.lines();
    let bundle_file = PathBuf::from(lines.next().unwrap());
    let key_line = lines
        .next()
        .and_then(|l| l.strip_prefix("trusted-public-keys = "))
        .unwrap_or_else(|| panic!("no key line: {stdout}"))
        .to_owned();

    // The verifier library accepts the bundle under the simulator's policy.
    let policy = sim_policy();
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let verified = verify_bundle(
        &std::fs::read(&bundle_file).unwrap(),
        &Verifier::new(policy.anchors().unwrap()),
        &policy,
        now,
    )
    .unwrap();
    let statement = verified.statement();
    assert_eq!(statement.subject, Subject::StorePath(out_path.clone()));
    assert!(verified.log_index().is_some());
    assert_eq!(statement.references.len(), 1, "{statement:?}");

    // Its trace: the derivation's text hash, and the one input (the
    // `builtins.toFile` text), which checks itself from its hashes.
    let trace = statement.trace.as_ref().expect("a version 2 statement");
    let drv = statement.deriver.as_deref().unwrap();
    assert_eq!(
        trace.derivation_sha256.as_slice(),
        ring::digest::digest(&ring::digest::SHA256, &std::fs::read(drv).unwrap()).as_ref()
    );
    let input = match trace.inputs.as_slice() {
        [only] => only,
        other => panic!("inputs: {other:?}"),
    };
    assert_eq!(input.path, statement.references[0]);
    assert_eq!(input.check_content(), Some(Ok(())));
    let nar = provenix_worker::nar::hash_path(Path::new(&input.path)).unwrap();
    assert_eq!(input.nar_sha256, nar.sha256);

    // Its Nix signature is the worker key's over the statement's own
    // fingerprint, and the key line printed is that key's.
    assert_eq!(key_line, worker_key_line(&statement.worker_key));
    statement.check_nix_signature().unwrap();
    let sig = statement.nix_signature.as_deref().unwrap();
    nixsig::verify(sig, &key_line, &statement.nix_fingerprint().unwrap()).unwrap();

    // The cache holds the narinfo with that signature and the NAR.
    let hash_part = &out_path["/nix/store/".len()..][..32];
    let narinfo = std::fs::read_to_string(cache.join(format!("{hash_part}.narinfo"))).unwrap();
    assert!(narinfo.contains(&format!("Sig: {sig}\n")), "{narinfo}");

    // Plain Nix accepts the path under the worker's key ...
    let out = nix_store_verify(&cache, &key_line, &out_path);
    assert!(
        out.status.success(),
        "nix store verify: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and not under another key, even one with the same name.
    let other = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
    let other_public: [u8; 32] = ring::signature::KeyPair::public_key(&other)
        .as_ref()
        .try_into()
        .unwrap();
    let other_line =
        public_key_line(&worker_key_name(&statement.worker_key), &other_public).unwrap();
    let out = nix_store_verify(&cache, &other_line, &out_path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is untrusted"),
        "nix store verify under another key: {}\n{stderr}",
        out.status
    );
}
