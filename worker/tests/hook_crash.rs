//! Crash safety of the daemon (issue 4): `provenix-worker serve` runs as a
//! child process on the simulated platform while client threads make 2,000
//! hook submissions (most through the socket protocol in-process, some
//! through the `provenix-worker hook` binary), and is killed with SIGKILL at
//! random points several times, sometimes while it is still starting.
//!
//! After each kill, every log directory is checked: the log verifies (every
//! entry against its leaf hash, the root recomputed), every acknowledged
//! statement is present in the log of the identity that acknowledged it, at
//! the index it was acknowledged with, for the path submitted; every
//! attested checkpoint verifies as part of a bundle (signature, evidence,
//! binding, same VM), and consistency proofs hold between every pair of
//! checkpoints of a log and from each to the log's end. After each restart
//! the daemon serves verifying bundles for acknowledged paths, including
//! those an earlier identity acknowledged after its last checkpoint (the
//! new identity logs them again).
//!
//! The kill points come from a seed, printed; `PROVENIX_CRASH_SEED=N`
//! replays a run (thread timing still varies).
//!
//! Without Nix the test prints `SKIP: ...` and passes, unless CI=true.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provenix_verifier::{Statement, Subject, Verifier, verify_bundle, verify_consistency};
use provenix_worker::daemon::{LOGS_DIR, LogDir};
use provenix_worker::hook::Client;
use provenix_worker::platform::sim_policy;

const WORKER: &str = env!("CARGO_BIN_EXE_provenix-worker");

mod nixbuild;
const SUBMISSIONS: usize = 2000;
const KILLS: usize = 5;
const CLIENT_THREADS: usize = 4;
const STORE_PATHS: usize = 40;

/// splitmix64: a seeded generator for kill points and path choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One acknowledged output: which log, which entry, which path.
#[derive(Clone, Debug)]
struct Acked {
    key: [u8; 32],
    index: u64,
    path: String,
}

struct Shared {
    socket: PathBuf,
    /// Derivations Nix built, each with its outputs: the daemon signs an
    /// output only with the derivation Nix registered it as built from.
    built: Vec<nixbuild::Built>,
    acked: Mutex<Vec<Acked>>,
    submissions: AtomicUsize,
    done: AtomicBool,
}

impl Shared {
    fn record(&self, key: [u8; 32], indices: &[u64], outs: &[String]) {
        let mut acked = self.acked.lock().unwrap();
        for (&index, path) in indices.iter().zip(outs) {
            acked.push(Acked {
                key,
                index,
                path: path.clone(),
            });
        }
        drop(acked);
        self.submissions.fetch_add(1, Ordering::SeqCst);
    }
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn nix_usable() -> bool {
    let ok = Command::new("nix-store")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let why = "nix-store (Debian package nix-bin) is not usable";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIP: hook_crash: {why}");
    }
    ok
}

fn spawn_daemon(state: &Path, socket: &Path, log: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(WORKER)
        .arg("serve")
        .arg("--state")
        .arg(state)
        .arg("--socket")
        .arg(socket)
        .args([
            "--platform",
            "sim",
            "--checkpoint-every",
            "64",
            "--checkpoint-ms",
            "25",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Wait until the daemon answers `head`.
fn wait_ready(child: &mut Child, socket: &Path, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect(socket, Duration::from_secs(5)) {
            if c.head().is_ok() {
                return;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A client thread speaking the hook protocol in-process.
fn protocol_client(shared: &Shared, seed: u64) {
    let mut rng = Rng(seed);
    let mut client: Option<Client> = None;
    while !shared.done.load(Ordering::SeqCst) {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match Client::connect(&shared.socket, Duration::from_secs(30)) {
                Ok(c) => client.insert(c),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        // One or both outputs of a derivation per submission.
        let b = &shared.built[rng.below(shared.built.len() as u64) as usize];
        let n = 1 + rng.below(b.outs.len() as u64) as usize;
        let first = rng.below(b.outs.len() as u64) as usize;
        let outs: Vec<String> = (0..n)
            .map(|k| b.outs[(first + k) % b.outs.len()].clone())
            .collect();
        match c.submit(Some(&b.drv), &outs) {
            Ok(ack) => shared.record(ack.worker_key, &ack.indices, &outs),
            Err(_) => {
                client = None;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// A client thread running the hook binary, as Nix would.
fn binary_client(shared: &Shared, seed: u64) {
    let mut rng = Rng(seed);
    while !shared.done.load(Ordering::SeqCst) {
        let b = &shared.built[rng.below(shared.built.len() as u64) as usize];
        let path = b.outs[rng.below(b.outs.len() as u64) as usize].clone();
        let out = Command::new(WORKER)
            .arg("hook")
            .arg("--socket")
            .arg(&shared.socket)
            .env("OUT_PATHS", &path)
            .env("DRV_PATH", &b.drv)
            .output()
            .unwrap();
        if !out.status.success() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let stdout = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<&str> = stdout.trim().split(' ').collect();
        assert_eq!(fields.len(), 3, "{stdout}");
        assert_eq!(fields[0], path);
        let key: [u8; 32] = hex::decode(fields[1]).unwrap().try_into().unwrap();
        shared.record(key, &[fields[2].parse().unwrap()], &[path]);
    }
}

/// Check one log directory as it is on disk (the daemon is not running):
/// the log verifies, every checkpoint verifies as a bundle, consistency
/// holds between all of them and to the end of the log.
fn check_log(dir: &Path, verifier: &Verifier) -> (usize, u64) {
    let policy = sim_policy();
    let log = LogDir::open(dir).unwrap();
    log.verify()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let head = log.head();
    let cps = log.checkpoints().unwrap();
    let now = unix_now();
    for cp in &cps {
        assert!(cp.size <= head.size);
        let bundle = log.bundle_under(cp.size - 1, cp).unwrap();
        verify_bundle(&bundle.to_cbor(), verifier, &policy, now)
            .unwrap_or_else(|e| panic!("{}: checkpoint {}: {e}", dir.display(), cp.size));
    }
    for (i, a) in cps.iter().enumerate() {
        for b in cps.iter().skip(i + 1) {
            let proof = log.consistency_proof(a.size, b.size).unwrap();
            verify_consistency(a.size, b.size, &proof, &a.root, &b.root)
                .unwrap_or_else(|e| panic!("{}: {} -> {}: {e}", dir.display(), a.size, b.size));
        }
        let proof = log.consistency_proof(a.size, head.size).unwrap();
        verify_consistency(a.size, head.size, &proof, &a.root, &head.root).unwrap();
    }
    (cps.len(), head.size)
}

/// After a kill: every log verifies (each once, when it is final), and
/// every acknowledged statement is where it was acknowledged.
fn check_state(state: &Path, acked: &[Acked], checked: &mut HashSet<PathBuf>, verifier: &Verifier) {
    let logs = state.join(LOGS_DIR);
    let mut by_key: BTreeMap<[u8; 32], LogDir> = BTreeMap::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("identity").exists() {
            // Killed before its identity was written: the next start
            // removes it; it never held an entry.
            continue;
        }
        if checked.insert(dir.clone()) {
            let (cps, size) = check_log(&dir, verifier);
            eprintln!(
                "  log {}: {size} entries, {cps} attested checkpoints: verified",
                &dir.file_name().unwrap().to_str().unwrap()[..16]
            );
        }
        let log = LogDir::open(&dir).unwrap();
        by_key.insert(*log.key(), log);
    }
    for a in acked {
        let log = by_key
            .get(&a.key)
            .unwrap_or_else(|| panic!("no log for key {}", hex::encode(a.key)));
        let entry = log
            .entry(a.index)
            .unwrap_or_else(|e| panic!("acknowledged entry {} missing: {e}", a.index));
        let s = Statement::verify(&entry).unwrap();
        assert_eq!(s.worker_key, a.key);
        assert_eq!(s.log_index, Some(a.index));
        assert_eq!(s.subject, Subject::StorePath(a.path.clone()));
    }
}

/// Through the restarted daemon: a verifying bundle for each path.
fn check_exports(shared: &Shared, verifier: &Verifier) {
    let policy = sim_policy();
    let acked: HashSet<String> = shared
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.path.clone())
        .collect();
    let mut client = Client::connect(&shared.socket, Duration::from_secs(30)).unwrap();
    for path in acked {
        // Outputs an old identity acknowledged after its last checkpoint
        // are being logged again in the background: retry a little.
        let deadline = Instant::now() + Duration::from_secs(20);
        let bundle = loop {
            match client.export(&path) {
                Ok(b) => break b,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("export {path}: {e}"),
            }
        };
        let v = verify_bundle(&bundle, verifier, &policy, unix_now())
            .unwrap_or_else(|e| panic!("bundle for {path}: {e}"));
        assert_eq!(v.statement().subject, Subject::StorePath(path.clone()));
    }
}

/// Every older log has been logged again up to its end by the running
/// daemon (its `relogged` file says so), so no acknowledged output is left
/// without a checkpoint that can cover it.
fn check_relogged(state: &Path, socket: &Path) {
    let current = Client::connect(socket, Duration::from_secs(30))
        .unwrap()
        .head()
        .unwrap()
        .worker_key;
    for entry in std::fs::read_dir(state.join(LOGS_DIR)).unwrap() {
        let dir = entry.unwrap().path();
        if dir.file_name().unwrap().to_str() == Some(&hex::encode(current)) {
            continue;
        }
        // Old logs are never written again: opening one beside the daemon
        // only reads it.
        let size = LogDir::open(&dir).unwrap().head().size;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let relogged = std::fs::read_to_string(dir.join("relogged")).unwrap_or_default();
            if relogged.trim().parse::<u64>().ok() == Some(size) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: relogged {relogged:?}, size {size}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn kill_9_during_hook_submissions_loses_no_acknowledged_statement() {
    if !nix_usable() {
        return;
    }
    let seed = std::env::var("PROVENIX_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("PROVENIX_CRASH_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("hook_crash: seed {seed} (replay with PROVENIX_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let dir = std::env::temp_dir().join(format!("provenix-hook-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Small outputs, built in one Nix call: derivations with two
    // outputs each, a directory and a file.
    let tag = format!("{}-{seed}", std::process::id());
    let built = nixbuild::build(&format!(
        r#"builtins.genList (i: derivation {{ name = "provenix-crash-{tag}-${{toString i}}"; system = builtins.currentSystem; builder = "/bin/sh"; outputs = [ "out" "b" ]; args = [ "-c" "/bin/mkdir -p $out/sub; echo output ${{toString i}} > $out/sub/file; echo b ${{toString i}} > $b" ]; }}) {}"#,
        STORE_PATHS / 2
    ));
    assert_eq!(
        built.iter().map(|b| b.outs.len()).sum::<usize>(),
        STORE_PATHS
    );

    let state = dir.join("state");
    let socket = dir.join("hook.sock");
    let daemon_log = dir.join("daemon.log");
    let shared = Arc::new(Shared {
        socket: socket.clone(),
        built,
        acked: Mutex::new(Vec::new()),
        submissions: AtomicUsize::new(0),
        done: AtomicBool::new(false),
    });
    let policy = sim_policy();
    let verifier = Verifier::new(policy.anchors().unwrap());
    let mut checked = HashSet::new();

    let mut child = spawn_daemon(&state, &socket, &daemon_log);
    wait_ready(&mut child, &socket, &daemon_log);
    let mut threads = Vec::new();
    for _ in 0..CLIENT_THREADS {
        let s = shared.clone();
        let seed = rng.next();
        threads.push(std::thread::spawn(move || protocol_client(&s, seed)));
    }
    {
        let s = shared.clone();
        let seed = rng.next();
        threads.push(std::thread::spawn(move || binary_client(&s, seed)));
    }

    let step = SUBMISSIONS / (KILLS + 1);
    let mut during_start = false;
    for k in 0..KILLS {
        if during_start {
            // Kill while the daemon is still starting or recovering.
            std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        } else {
            let target = step * (k + 1) - step / 2 + rng.below(step as u64) as usize;
            while shared.submissions.load(Ordering::SeqCst) < target {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "too slow: {} submissions",
                    shared.submissions.load(Ordering::SeqCst)
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = shared.acked.lock().unwrap().clone();
        eprintln!(
            "kill {} ({}): {} submissions, {} outputs acknowledged",
            k + 1,
            if during_start {
                "while starting"
            } else {
                "while serving"
            },
            shared.submissions.load(Ordering::SeqCst),
            acked.len()
        );
        check_state(&state, &acked, &mut checked, &verifier);
        child = spawn_daemon(&state, &socket, &daemon_log);
        during_start = rng.below(4) == 0;
        if !during_start {
            wait_ready(&mut child, &socket, &daemon_log);
        }
    }
    wait_ready(&mut child, &socket, &daemon_log);
    while shared.submissions.load(Ordering::SeqCst) < SUBMISSIONS {
        assert!(started.elapsed() < Duration::from_secs(120), "too slow");
        std::thread::sleep(Duration::from_millis(1));
    }
    shared.done.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    // After the last restart: bundles for every path, old or new.
    check_exports(&shared, &verifier);
    check_relogged(&state, &socket);

    // A clean stop: a last checkpoint covers the whole log.
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "the daemon's clean stop failed: {status}");
    let acked = shared.acked.lock().unwrap().clone();
    check_state(&state, &acked, &mut checked, &verifier);
    let last = std::fs::read_dir(state.join(LOGS_DIR))
        .unwrap()
        .map(|e| LogDir::open(&e.unwrap().path()).unwrap())
        .max_by_key(LogDir::generation)
        .unwrap();
    assert_eq!(
        last.latest_checkpoint().map(|cp| cp.size),
        Some(last.head().size)
    );
    eprintln!(
        "hook_crash: {} submissions, {} outputs acknowledged, {} logs, {:.1} s",
        shared.submissions.load(Ordering::SeqCst),
        acked.len(),
        checked.len(),
        started.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
