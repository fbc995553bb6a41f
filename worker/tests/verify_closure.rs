//! `provenix verify --closure` end to end with Debian's real Nix (2.8):
//! `nix-build` of a three-path closure with the post-build hook -> the
//! real `provenix-worker serve` (simulated platform, gRPC log API on a Unix
//! socket) -> `provenix-worker export --out DIR --cache DIR` -> the
//! `provenix` CLI verifies every path of the closure from the directory,
//! from the worker's gRPC API and from the file:// cache; then one path
//! of the closure is tampered with in the store, and only that path is
//! rejected, with the reason, and the exit code is 1.
//!
//! Needs root (a writable /nix/store) and the Nix tools on PATH; without
//! them it prints `SKIP: ...` and passes, unless CI=true. The `provenix`
//! binary belongs to another package, so cargo gives this test no path to
//! it: the test builds it with the cargo that runs the test (a no-op when
//! it is fresh).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

mod common;

use common::{Daemon, nix_available, provenix_bin, sim_policy_file, success, wait_for};

const WORKER: &str = env!("CARGO_BIN_EXE_provenix-worker");

/// Puts a tampered store file back as it was, even when the test fails.
struct Restore {
    file: PathBuf,
    content: Vec<u8>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.file, &self.content);
        let _ = std::fs::set_permissions(&self.file, std::fs::Permissions::from_mode(0o444));
    }
}

#[test]
fn a_closure_verifies_from_every_source_and_a_tampered_path_is_rejected() {
    if !nix_available("verify_closure") {
        return;
    }
    let provenix = provenix_bin();
    let tmp = std::env::temp_dir().join(format!("provenix-verify-closure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let socket = tmp.join("hook.sock");
    let grpc = tmp.join("grpc.sock");
    let child = Command::new(WORKER)
        .args(["serve", "--platform", "sim", "--checkpoint-ms", "100"])
        .arg("--state")
        .arg(tmp.join("state"))
        .arg("--socket")
        .arg(&socket)
        .arg("--grpc")
        .arg(format!("unix:{}", grpc.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon(child, tmp.clone());
    wait_for(&socket);
    wait_for(&grpc);
    let hook = tmp.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec {WORKER} hook --socket {}\n",
            socket.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Three fresh derivations (so Nix builds them and runs the hook): c
    // refers to a and b, b to a, so c's closure is all three.
    let tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let expression = format!(
        r#"let mk = n: s: derivation {{ name = "provenix-closure-${{n}}-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" s ]; }};
           a = mk "a" "echo a {tag} > $out";
           b = mk "b" "echo ${{a}} b > $out";
        in mk "c" "echo ${{a}} ${{b}} > $out""#
    );
    let built = Command::new("nix-build")
        .args(["--no-out-link", "--option", "sandbox", "false"])
        .args(["--option", "substituters", ""])
        .args(["--option", "post-build-hook"])
        .arg(&hook)
        .args(["--expr", &expression])
        .output()
        .unwrap();
    let root = success(built, "nix-build").trim().to_owned();
    let closure = success(
        Command::new("nix-store")
            .args(["--query", "--requisites", &root])
            .output()
            .unwrap(),
        "nix-store -qR",
    );
    let mut paths: Vec<&str> = closure.lines().collect();
    paths.sort_unstable();
    assert_eq!(paths.len(), 3, "{closure}");

    // Bundles and the binary cache in one directory, as a cache serves them.
    let cache = tmp.join("cache");
    success(
        Command::new(WORKER)
            .arg("export")
            .arg("--socket")
            .arg(&socket)
            .arg("--out")
            .arg(&cache)
            .arg("--cache")
            .arg(&cache)
            .args(&paths)
            .output()
            .unwrap(),
        "provenix-worker export",
    );

    let policy = sim_policy_file(&tmp.join("policy.toml"), "");
    let verify = |source: &[&str], extra: &[&str]| {
        let out = Command::new(&provenix)
            .args(["verify", "--closure", "--store-path", &root, "--policy"])
            .arg(&policy)
            .args(source)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cache_url = format!("file://{}", cache.display());
    let worker_url = format!("unix:{}", grpc.display());
    let sources: [&[&str]; 3] = [
        &["--bundles", cache.to_str().unwrap()],
        &["--worker", &worker_url],
        &["--cache", &cache_url],
    ];
    for source in sources {
        let (code, out, err) = verify(source, &[]);
        assert_eq!(code, 0, "{source:?}: {out}{err}");
        for p in &paths {
            assert!(
                out.contains(&format!("ACCEPTED {p}: sha256:")),
                "{p}: {out}"
            );
        }
        assert!(
            out.contains(&format!(
                "closure of {root}: 3 paths, 3 accepted, 0 rejected"
            )),
            "{out}"
        );
        // Not a terminal: no progress bar.
        assert!(err.is_empty(), "{source:?}: {err}");
    }
    // All three sources together: the same bundles count once.
    let all: Vec<&str> = sources.iter().flat_map(|s| s.iter().copied()).collect();
    let (code, out, err) = verify(&all, &["--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "accepted");
    let subjects = v["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 3);
    for s in subjects {
        assert_eq!(s["verdict"], "accepted");
        assert_eq!(s["counted"].as_array().unwrap().len(), 1, "{s}");
        assert_eq!(s["excluded"].as_array().unwrap().len(), 0, "{s}");
    }

    // Tamper with b in the store (root may write it): b is rejected with
    // the reason, a and c are still accepted, and the exit code is 1.
    let b = *paths
        .iter()
        .find(|p| p.contains("-provenix-closure-b-"))
        .unwrap();
    let file = PathBuf::from(b);
    let _restore = Restore {
        content: std::fs::read(&file).unwrap(),
        file: file.clone(),
    };
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&file, b"tampered\n").unwrap();
    for source in sources {
        let (code, out, err) = verify(source, &[]);
        assert_eq!(code, 1, "{source:?}: {out}{err}");
        assert!(out.contains(&format!("REJECTED {b}: no digest")), "{out}");
        assert!(out.contains("the actual digest is sha256:"), "{out}");
        for p in paths.iter().filter(|p| **p != b) {
            assert!(
                out.contains(&format!("ACCEPTED {p}: sha256:")),
                "{p}: {out}"
            );
        }
        assert!(
            out.contains(&format!(
                "closure of {root}: 3 paths, 2 accepted, 1 rejected"
            )),
            "{out}"
        );
    }
}
