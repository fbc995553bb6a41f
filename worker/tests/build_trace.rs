//! Build traces and `provenix verify --recursive` end to end with Debian's
//! real Nix (2.8), as issue 12 asks: a source (`builtins.path`) and a
//! fixed-output fetch, then three levels of derivations (a, b, c), built
//! once and submitted through the post-build hook to three workers
//! (`provenix-worker serve`, simulated platforms, distinct chips).
//!
//! 1. The honest graph is accepted, 2 of 3 distinct chips, recursively:
//!    the source and the fixed output check themselves from their hashes
//!    alone (nothing is looked up for them), a and b are decided once
//!    although every trace names them.
//! 2. A third worker whose store held a doctored b (imported under b's
//!    path, as a poisoned cache would deliver it) builds and attests c.
//!    Its trace records the doctored hash: with all three workers' caches
//!    c is still accepted from the two honest ones, and the third is not
//!    counted, the reason naming b, the hash the trace recorded and the
//!    hash the trusted builders state. With its cache alone, c is
//!    rejected (exit 1), naming b. No local store path is needed.
//!
//! Needs root (a writable /nix/store) and the Nix tools on PATH; without
//! them it prints `SKIP: ...` and passes, unless CI=true.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

mod common;
mod nixbuild;

use common::{Daemon, nix_available, provenix_bin, sim_policy_file, success, wait_for};

const WORKER: &str = env!("CARGO_BIN_EXE_provenix-worker");

fn run(cmd: &mut Command, what: &str) -> String {
    success(cmd.output().unwrap(), what)
}

/// One simulated worker: its daemon and hook socket.
struct Worker {
    socket: PathBuf,
    cache: PathBuf,
    _daemon: Daemon,
}

impl Worker {
    fn start(dir: &Path, name: &str) -> Worker {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let socket = home.join("hook.sock");
        let child = Command::new(WORKER)
            .args(["serve", "--platform", "sim", "--checkpoint-ms", "100"])
            .arg("--state")
            .arg(home.join("state"))
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Daemon(child, home.join("state"));
        wait_for(&socket);
        Worker {
            socket,
            cache: dir.join(format!("{name}-cache")),
            _daemon: daemon,
        }
    }

    /// Submit a build as Nix's post-build hook does.
    fn hook(&self, drv: &str, outs: &[String]) {
        run(
            Command::new(WORKER)
                .args(["hook", "--socket"])
                .arg(&self.socket)
                .env("DRV_PATH", drv)
                .env("OUT_PATHS", outs.join(" ")),
            "provenix-worker hook",
        );
    }

    /// Export the bundles of `paths` into this worker's binary cache.
    fn export(&self, paths: &[&str]) {
        run(
            Command::new(WORKER)
                .arg("export")
                .arg("--socket")
                .arg(&self.socket)
                .arg("--out")
                .arg(&self.cache)
                .arg("--cache")
                .arg(&self.cache)
                .args(paths),
            "provenix-worker export",
        );
    }

    fn cache_url(&self) -> String {
        format!("file://{}", self.cache.display())
    }
}

/// Build `drv` again (its outputs deleted), as Nix would on a worker.
fn rebuild(drv: &str) {
    run(
        Command::new("nix-store")
            .args(["--option", "sandbox", "false"])
            .args(["--option", "substituters", ""])
            .args(["--option", "post-build-hook", ""])
            .args(["--realise", drv]),
        "nix-store --realise",
    );
}

fn nar_sha256(path: &str) -> [u8; 32] {
    provenix_worker::nar::hash_path(Path::new(path))
        .unwrap()
        .sha256
}

/// What every test here starts from, or `None` (SKIP) without Nix: the
/// `provenix` binary, a scratch directory, and a tag that makes the
/// test's store paths its own (so Nix builds them, in this boot).
fn setup(test: &str, dir: &str) -> Option<(PathBuf, common::TempDir, u128)> {
    if !nix_available(test) {
        return None;
    }
    let tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Some((provenix_bin(), common::TempDir::new(dir), tag))
}

#[test]
fn a_doctored_input_is_named_and_the_honest_graph_is_accepted() {
    let Some((provenix, tmp, tag)) = setup("build_trace", "build-trace") else {
        return;
    };
    let dir = tmp.path();
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file"), format!("source {tag}\n")).unwrap();
    let fod_content = format!("fetched {tag}\n");
    let fod_hash = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        fod_content.as_bytes(),
    ));
    // Each level refers to the one below, so c's build-time closure is b,
    // a, the source and the fixed output.
    let expression = format!(
        r#"let
             mk = n: s: derivation {{ name = "provenix-trace-${{n}}-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "PATH=/usr/bin:/bin; ${{s}}" ]; }};
             src = builtins.path {{ path = {src}; name = "provenix-trace-src-{tag}"; }};
             fod = derivation {{ name = "provenix-trace-fod-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "printf 'fetched {tag}\n' > $out" ]; outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "{fod_hash}"; }};
             a = mk "a" "cat ${{src}}/file ${{fod}} > $out; echo ${{src}} ${{fod}} >> $out";
             b = mk "b" "cat ${{a}} > $out; echo level-b-{tag} ${{a}} >> $out";
             c = mk "c" "cat ${{b}} > $out; echo ${{b}} >> $out";
           in [ a b c ]"#,
        src = src.display()
    );
    let built = nixbuild::build(&expression);
    assert_eq!(built.len(), 3, "{built:?}");
    let drvs: Vec<String> = built.iter().map(|b| b.drv.clone()).collect();
    let outs: Vec<Vec<String>> = built.into_iter().map(|b| b.outs).collect();
    let [a, b, c] = [&outs[0][0], &outs[1][0], &outs[2][0]].map(String::as_str);

    let workers: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| Worker::start(dir, n))
        .collect();
    // Every worker attests a; the first two also b and c.
    for (i, w) in workers.iter().enumerate() {
        let levels = if i < 2 { 3 } else { 1 };
        for (drv, out) in drvs.iter().zip(&outs).take(levels) {
            w.hook(drv, out);
        }
    }
    for w in &workers[..2] {
        w.export(&[a, b, c]);
    }
    workers[2].export(&[a]);

    // The checkpoint memory of a user who first looks after the attack:
    // the third worker's export of c carries no proof that its log grew
    // consistently from the checkpoint of its export of a.
    let phase = std::cell::Cell::new(1);
    let verify = |policy: &Path, caches: &[&Worker], json: bool| {
        let mut cmd = Command::new(&provenix);
        cmd.args(["verify", "--recursive", "--store-path", c, "--policy"])
            .arg(policy)
            .arg("--checkpoint-cache")
            .arg(dir.join(format!("memory-{}", phase.get())));
        for w in caches {
            cmd.args(["--cache", &w.cache_url()]);
        }
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let two_of_three = sim_policy_file(&dir.join("two.toml"), "[threshold]\nm = 2\n");
    let one = sim_policy_file(&dir.join("one.toml"), "");

    // 1. The honest graph, with c in the local store.
    let all: Vec<&Worker> = workers.iter().collect();
    let (code, out, err) = verify(&two_of_three, &all, true);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "accepted", "{out}");
    assert_eq!(v["subjects"][0]["counted"].as_array().unwrap().len(), 2);
    let graph = &v["graph"];
    // Only a, b and c needed decisions; the source and the fixed output
    // checked themselves, and nothing was looked up for them.
    let decided: Vec<&str> = graph["decided"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["subject"]["name"].as_str().unwrap())
        .collect();
    let mut expected = vec![a, b, c];
    expected.sort_unstable();
    assert_eq!(decided, expected, "{graph}");
    assert_eq!(graph["paths_looked_up"], 3, "{graph}");
    assert_eq!(graph["content_addressed"], 2, "{graph}");
    for d in graph["decided"].as_array().unwrap() {
        assert_eq!(d["verdict"], "accepted", "{d}");
    }

    // 2. Doctor b in the store, as a poisoned cache would: the same path,
    // other bytes, registered consistently (Nix hashes what it imports).
    let honest_b = nar_sha256(b);
    let export = Command::new("nix-store")
        .args(["--export", b])
        .output()
        .unwrap();
    let mut image = common::success_bytes(export, "nix-store --export");
    let marker = format!("level-b-{tag}");
    let at = find(&image, marker.as_bytes()).expect("b's content in its export");
    image[at..at + 5].copy_from_slice(b"LEVEL");
    run(
        Command::new("nix-store").args(["--delete", c, b]),
        "nix-store --delete",
    );
    let mut import = Command::new("nix-store")
        .arg("--import")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    import.stdin.take().unwrap().write_all(&image).unwrap();
    success(import.wait_with_output().unwrap(), "nix-store --import");
    let doctored_b = nar_sha256(b);
    assert_ne!(doctored_b, honest_b);
    // The third worker builds c on it and attests it; then c leaves the
    // local store, so the verifier has only what builders state.
    rebuild(&drvs[2]);
    workers[2].hook(&drvs[2], &outs[2]);
    // Exported with a again: the cache then holds the consistency proof
    // between the two checkpoints its bundles carry.
    workers[2].export(&[a, c]);
    run(
        Command::new("nix-store").args(["--delete", c, b]),
        "nix-store --delete",
    );
    assert!(!Path::new(c).exists());
    phase.set(2);

    let (code, out, err) = verify(&two_of_three, &all, false);
    assert_eq!(code, 0, "{out}{err}");
    let recorded = provenix_verifier::nixsig::nar_hash(&doctored_b);
    let trusted = provenix_verifier::nixsig::nar_hash(&honest_b);
    let line = out
        .lines()
        .find(|l| l.contains("not counted") && l.contains("untrusted input"))
        .unwrap_or_else(|| panic!("no exclusion for the doctored trace: {out}"));
    assert!(
        line.contains(&format!("{b} (the trace recorded {recorded})"))
            && line.contains(&format!("state {trusted}")),
        "{line}"
    );
    let (code, out, err) = verify(&two_of_three, &all, true);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let excluded = v["subjects"][0]["excluded"].as_array().unwrap();
    let untrusted = excluded
        .iter()
        .flat_map(|e| e["reasons"].as_array().unwrap())
        .find(|r| r["code"] == "untrusted_inputs")
        .unwrap_or_else(|| panic!("{out}"));
    let input = &untrusted["inputs"][0];
    assert_eq!(input["path"], b);
    assert_eq!(input["recorded_sha256"], hex::encode(doctored_b));
    assert_eq!(input["problem"]["code"], "other_hash");
    assert_eq!(
        input["problem"]["accepted"]["sha256"],
        hex::encode(honest_b)
    );
    assert_eq!(input["problem"]["builders"].as_array().unwrap().len(), 2);

    // `provenix report` tells the cause of the disagreement on c apart:
    // the inputs differ (b), not the build.
    let mut cmd = Command::new(&provenix);
    cmd.arg("report")
        .arg("--policy")
        .arg(&one)
        .arg("--checkpoint-cache")
        .arg(dir.join("memory-report"));
    for w in &workers {
        cmd.arg(&w.cache);
    }
    let out = cmd.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("inputs: 1 differ between the traces:"),
        "{report}"
    );
    assert!(
        report.contains(&format!("      {b}: {trusted} by worker"))
            && report.contains(&format!("; {recorded} by worker")),
        "{report}"
    );

    // Its cache alone: c is rejected, and the reason names b.
    let (code, out, err) = verify(&one, &[&workers[2]], false);
    eprintln!("{out}");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("REJECTED {c}")), "{out}");
    assert!(
        out.contains(&format!(
            "{b} (the trace recorded {recorded}): not accepted under the policy"
        )),
        "{out}"
    );
}

/// `provenix substituter` in front of the workers' caches, until dropped.
struct Substituter {
    child: std::process::Child,
    url: String,
    key_line: String,
}

impl Drop for Substituter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Substituter {
    fn start(provenix: &Path, dir: &Path, policy: &Path, upstreams: &[&Worker]) -> Substituter {
        use std::io::BufRead as _;
        let mut cmd = Command::new(provenix);
        cmd.args(["substituter", "--listen", "127.0.0.1:0", "--policy"])
            .arg(policy)
            .arg("--secret-key")
            .arg(dir.join("substituter.key"))
            .arg("--checkpoint-cache")
            .arg(dir.join("substituter-memory"));
        for w in upstreams {
            cmd.args(["--upstream", &w.cache_url()]);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = lines
            .next()
            .unwrap()
            .unwrap()
            .strip_prefix("substituter: ")
            .unwrap()
            .to_owned();
        let key_line = lines
            .next()
            .unwrap()
            .unwrap()
            .strip_prefix("trusted-public-keys = ")
            .unwrap()
            .to_owned();
        Substituter {
            child,
            url,
            key_line,
        }
    }

    /// `nix-store --realise PATH` into the store `store`, substituting from
    /// this substituter alone under its key alone.
    fn realise(&self, store: &Path, path: &str) -> Output {
        Command::new("nix-store")
            .arg("--store")
            .arg(store)
            .args(["--option", "substituters", &self.url])
            .args(["--option", "trusted-public-keys", &self.key_line])
            .args(["--option", "require-sigs", "true"])
            .args(["--realise", path])
            .output()
            .unwrap()
    }

    fn why(&self, path: &str) -> String {
        let hash = &path["/nix/store/".len()..][..32];
        let url = format!("{}/why/{hash}", self.url);
        let out = Command::new("curl").args(["-s", &url]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Issue 12's substituter with Debian's Nix as its client: accepted paths
/// are substituted into a separate store and `nix store verify` passes;
/// a path two builders disagree on, with the policy needing 2 of 3 and the
/// third missing, is not; a NAR altered in the upstream is cut off and
/// Nix reports the failure.
#[test]
fn a_plain_nix_substitutes_only_what_the_policy_accepts() {
    let Some((provenix, tmp, tag)) = setup("substituter", "substituter") else {
        return;
    };
    let dir = tmp.path();
    // `varies` writes what a file outside the store says: two builds of
    // one derivation can differ, as a tampered builder's would.
    let flag = dir.join("flag");
    std::fs::write(&flag, "honest\n").unwrap();
    let expression = format!(
        r#"let
             mk = n: s: derivation {{ name = "provenix-subst-${{n}}-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "PATH=/usr/bin:/bin; ${{s}}" ]; }};
             a = mk "a" "echo a {tag} > $out";
             top = mk "top" "cat ${{a}} > $out; echo ${{a}} >> $out";
             varies = mk "varies" "cat {flag} > $out";
             altered = mk "altered" "yes x | head -c 300000 > $out";
           in [ a top varies altered ]"#,
        flag = flag.display()
    );
    let built = nixbuild::build(&expression);
    let drvs: Vec<String> = built.iter().map(|b| b.drv.clone()).collect();
    let outs: Vec<Vec<String>> = built.into_iter().map(|b| b.outs).collect();
    let [a, top, varies, altered] =
        [&outs[0][0], &outs[1][0], &outs[2][0], &outs[3][0]].map(String::as_str);
    let workers: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| Worker::start(dir, n))
        .collect();
    // All three attest a, top and altered; only the first attests varies.
    for w in &workers {
        for i in [0, 1, 3] {
            w.hook(&drvs[i], &outs[i]);
        }
    }
    workers[0].hook(&drvs[2], &outs[2]);
    workers[0].export(&[a, top, varies, altered]);
    workers[1].export(&[a, top, altered]);
    // The third builds varies again and gets other bytes.
    run(
        Command::new("nix-store").args(["--delete", varies]),
        "nix-store --delete",
    );
    std::fs::write(&flag, "tampered\n").unwrap();
    rebuild(&drvs[2]);
    workers[2].hook(&drvs[2], &outs[2]);
    workers[2].export(&[a, top, varies, altered]);
    // The NAR of altered, changed in every cache (same length).
    let altered_nar = provenix_verifier::nixsig::nix32(&nar_sha256(altered));
    for w in &workers {
        let file = w.cache.join(format!("nar/{altered_nar}.nar"));
        let mut bytes = std::fs::read(&file).unwrap();
        let at = find(&bytes, b"x\nx\nx\n").unwrap() + 200_000;
        bytes[at] = b'y';
        std::fs::write(&file, bytes).unwrap();
    }

    let policy = sim_policy_file(
        &dir.join("policy.toml"),
        "[threshold]\nm = 2\n[graph]\nrecursive = true\n",
    );
    let all: Vec<&Worker> = workers.iter().collect();
    let substituter = Substituter::start(&provenix, dir, &policy, &all);
    let store = dir.join("client-store");

    // Accepted: substituted, and Nix verifies it under the key.
    let out = substituter.realise(&store, top);
    assert!(
        out.status.success(),
        "nix-store --realise {top}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(store.join(&top[1..]).exists() && store.join(&a[1..]).exists());
    let verified = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "store",
            "verify",
        ])
        .arg("--store")
        .arg(&store)
        .args(["--trusted-public-keys", &substituter.key_line])
        .args(["--sigs-needed", "1", top, a])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "nix store verify: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(substituter.why(top).starts_with(&format!("ACCEPTED {top}")));

    // Two builders disagree, the third is missing: 404, and why.
    let out = substituter.realise(&store, varies);
    assert!(!out.status.success());
    assert!(!valid(&store, varies));
    let why = substituter.why(varies);
    assert!(why.starts_with(&format!("REJECTED {varies}")), "{why}");
    assert!(why.contains("builders disagree"), "{why}");

    // Accepted, but the upstream NAR was altered: cut off, Nix fails.
    let out = substituter.realise(&store, altered);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!valid(&store, altered));
    assert!(
        substituter
            .why(altered)
            .starts_with(&format!("ACCEPTED {altered}"))
    );
    eprintln!("Nix on the altered NAR: {stderr}");
}

/// A policy's `[graph] trusted_nix_keys`: an input no worker attests, in a
/// plain Nix cache signed by a key the policy names, is a root of the
/// graph, reported as signed by it; without the key it is not trusted.
#[test]
fn an_input_signed_by_a_named_nix_key_is_a_root() {
    let Some((provenix, tmp, tag)) = setup("build_trace_nix_key", "nix-key-root") else {
        return;
    };
    let dir = tmp.path();
    let expression = format!(
        r#"let
             mk = n: s: derivation {{ name = "provenix-root-${{n}}-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "PATH=/usr/bin:/bin; ${{s}}" ]; }};
             tools = mk "tools" "echo bootstrap {tag} > $out";
             top = mk "top" "cat ${{tools}} > $out";
             names-a-drv = mk "names-a-drv" "echo ${{builtins.unsafeDiscardOutputDependency tools.drvPath}} > $out";
           in [ tools top names-a-drv ]"#
    );
    let built = nixbuild::build(&expression);
    let (tools, top) = (built[0].outs[0].as_str(), built[1].outs[0].as_str());
    let w = Worker::start(dir, "w1");
    w.hook(&built[1].drv, &built[1].outs);
    // A derivation among the input sources (string context from drvPath)
    // is traced as itself, a text path that checks itself.
    w.hook(&built[2].drv, &built[2].outs);
    w.export(&[top]);

    // tools in a plain Nix cache, signed by a key of its own.
    let (secret, public) = (dir.join("plain.sec"), dir.join("plain.pub"));
    run(
        Command::new("nix-store")
            .args(["--generate-binary-cache-key", "plain-cache-1"])
            .args([&secret, &public]),
        "nix-store --generate-binary-cache-key",
    );
    let plain = format!("file://{}/plain?compression=none", dir.display());
    let nix = |args: &[&str]| {
        run(
            Command::new("nix")
                .args(["--extra-experimental-features", "nix-command"])
                .args(args),
            "nix",
        )
    };
    nix(&["copy", "--to", &plain, tools]);
    nix(&[
        "store",
        "sign",
        "--store",
        &plain,
        "--key-file",
        secret.to_str().unwrap(),
        tools,
    ]);
    let key = std::fs::read_to_string(&public).unwrap();

    let verify = |policy: &Path| {
        let out = Command::new(&provenix)
            .args([
                "verify",
                "--recursive",
                "--json",
                "--store-path",
                top,
                "--policy",
            ])
            .arg(policy)
            .args(["--cache", &w.cache_url()])
            .args(["--cache", &format!("file://{}/plain", dir.display())])
            .arg("--checkpoint-cache")
            .arg(dir.join("memory"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let keyed = sim_policy_file(
        &dir.join("keyed.toml"),
        &format!("[graph]\ntrusted_nix_keys = [\"{}\"]\n", key.trim()),
    );
    let (code, v) = verify(&keyed);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["graph"]["roots"],
        serde_json::json!([{"path": tools, "trusted_as": "signed", "key": "plain-cache-1"}])
    );
    let unkeyed = sim_policy_file(&dir.join("unkeyed.toml"), "");
    // The derivation it names checks itself from its text's hash.
    let names_a_drv = built[2].outs[0].as_str();
    w.export(&[names_a_drv]);
    let out = Command::new(&provenix)
        .args([
            "verify",
            "--recursive",
            "--json",
            "--store-path",
            names_a_drv,
        ])
        .arg("--policy")
        .arg(&unkeyed)
        .args(["--cache", &w.cache_url()])
        .arg("--checkpoint-cache")
        .arg(dir.join("memory-drv"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["graph"]["content_addressed"], 1, "{v}");

    let (code, v) = verify(&unkeyed);
    assert_eq!(code, Some(1), "{v}");
    let reasons = &v["subjects"][0]["excluded"][0]["reasons"][0];
    assert_eq!(reasons["code"], "untrusted_inputs", "{v}");
    assert_eq!(reasons["inputs"][0]["path"], tools);
}

/// Whether `path` is valid in the Nix store at `store` (a failed
/// substitution may leave files behind, never a valid path).
fn valid(store: &Path, path: &str) -> bool {
    Command::new("nix-store")
        .arg("--store")
        .arg(store)
        .args(["--check-validity", path])
        .output()
        .unwrap()
        .status
        .success()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
