//! The daemon in-process on the simulated platform, fed real store paths
//! (Debian's Nix 2.8, as root): through the library, through the
//! `provenix-worker hook` binary and through hostile bytes on its socket.
//! Every bundle it hands out must verify with the verifier library under a
//! policy pinning the simulator's roots, and its NAR hashes must be Nix's.
//!
//! Without Nix the tests print `SKIP: ...` and pass, unless CI=true.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use provenix_verifier::{
    Bundle, Policy, Statement, Subject, Verifier, verify_bundle, verify_consistency,
    verify_inclusion,
};
use provenix_worker::daemon::{BundleFor, Config, DaemonError, Worker};
use provenix_worker::hook::{self, Client, Request, Response, ServerOptions};
use provenix_worker::platform::{Choice, sim_policy};
use tokio::sync::watch;

mod nixbuild;

use nixbuild::Built;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const WORKER: &str = env!("CARGO_BIN_EXE_provenix-worker");

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("provenix-daemon-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether Nix is usable: `nix-store` and `nix` on PATH and a writable
/// store. Prints `SKIP` (or fails, with CI=true) when it is not.
fn nix_usable(test: &str) -> bool {
    let works = Command::new("nix-store")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("nix")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !works {
        let why = "nix-store and nix (Debian package nix-bin) are not usable";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {why}"
        );
        eprintln!("SKIP: {test}: {why}");
    }
    works
}

/// `nix-store --add` each path; their store paths. The daemon refuses
/// to sign them (no deriver): what a path never submitted looks like.
fn add_to_store(paths: &[PathBuf]) -> Vec<String> {
    let out = Command::new("nix-store")
        .arg("--add")
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-store --add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Outputs built by Nix, as the daemon signs only those.
struct Sample {
    /// A derivation with two outputs: `out`, a file, and `ref`, which
    /// refers to `dep`.
    multi: Built,
    /// Its `out` and `ref` paths.
    file: String,
    referrer: String,
    /// A derivation whose output is a directory with an executable, a
    /// symlink and an empty subdirectory.
    tree: Built,
    /// The derivation `ref` refers to.
    dep: Built,
}

fn sample_paths(tag: &str) -> Sample {
    let expr = format!(
        r#"let
  sh = args: name: extra: derivation ({{ inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" args ]; }} // extra);
  dep = sh "echo dep {tag} > $out" "provenix-daemon-dep-{tag}" {{}};
in [
  (sh "echo a file {tag} > $out; echo uses ${{dep}} > $ref" "provenix-daemon-{tag}" {{ outputs = [ "out" "ref" ]; }})
  (sh "/bin/mkdir -p $out/bin $out/empty; printf '#!/bin/sh\necho hi {tag}\n' > $out/bin/run; /bin/chmod 755 $out/bin/run; /bin/ln -s bin/run $out/link" "provenix-daemon-tree-{tag}" {{}})
  dep
]"#
    );
    let built = nixbuild::build(&expr);
    let [multi, tree, dep] = built.as_slice() else {
        panic!("{built:?}")
    };
    let referrer = multi.outs.iter().find(|o| o.ends_with("-ref")).unwrap();
    let file = multi.outs.iter().find(|o| !o.ends_with("-ref")).unwrap();
    Sample {
        file: file.clone(),
        referrer: referrer.clone(),
        multi: multi.clone(),
        tree: tree.clone(),
        dep: dep.clone(),
    }
}

/// Nix's own NAR hash and size of a store path (`nix path-info --json`),
/// the hash in SRI form.
fn nix_path_info(path: &str) -> (String, u64) {
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
            path,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json = String::from_utf8(out.stdout).unwrap();
    let field = |key: &str| {
        let start = json.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
        let rest = &json[start..];
        let end = rest.find([',', '}']).unwrap();
        rest[..end].trim_matches('"').to_owned()
    };
    (field("narHash"), field("narSize").parse().unwrap())
}

/// Standard base64 with padding, for SRI hashes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn config(state: &Path) -> Config {
    let mut c = Config::new(state);
    c.platform = Choice::Sim;
    c.commit = Some(COMMIT.into());
    c.checkpoint_every = 16;
    c.checkpoint_interval = Duration::from_millis(50);
    c.bundle_timeout = Duration::from_secs(10);
    c
}

/// A daemon serving `socket`, and the switch that stops its server.
struct Daemon {
    worker: Arc<Worker>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Daemon {
    async fn start(config: Config, socket: &Path, options: ServerOptions) -> Daemon {
        let worker = Worker::start(config).await.unwrap();
        let listener = hook::bind(socket, None).unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(hook::serve(worker.clone(), listener, options, stopped));
        Daemon {
            worker,
            stop,
            server,
        }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        self.server.await.unwrap();
        self.worker.shutdown().await.unwrap();
    }
}

fn verify(bundle: &[u8]) -> provenix_verifier::VerifiedBundle {
    let policy = sim_policy();
    let verifier = Verifier::new(policy.anchors().unwrap());
    verify_bundle(bundle, &verifier, &policy, now()).unwrap()
}

/// Run the hook binary with Nix's environment; (exit code, stdout, stderr).
async fn run_hook(socket: &Path, drv: Option<&str>, outs: &str) -> (i32, String, String) {
    let socket = socket.to_owned();
    let drv = drv.map(str::to_owned);
    let outs = outs.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(WORKER);
        cmd.arg("hook")
            .env("PROVENIX_SOCKET", &socket)
            .env("OUT_PATHS", &outs)
            .env_remove("DRV_PATH");
        if let Some(d) = drv {
            cmd.env("DRV_PATH", d);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_through_the_library_and_the_hook_yield_verifying_bundles() {
    if !nix_usable("submissions_yield_verifying_bundles") {
        return;
    }
    let dir = scratch("submit");
    let tag = format!("{}-{}", std::process::id(), now());
    let sample = sample_paths(&tag);
    let (referrer, dep) = (sample.referrer.clone(), sample.dep.outs[0].clone());
    let paths = [sample.file.clone(), sample.tree.outs[0].clone()];
    let socket = dir.join("hook.sock");
    let daemon = Daemon::start(
        config(&dir.join("state")),
        &socket,
        ServerOptions::default(),
    )
    .await;
    let worker = daemon.worker.clone();

    // Through the library: the daemon's hash is Nix's, the references are
    // Nix's, the bundle verifies.
    let drv = sample.multi.drv.as_str();
    let done = worker
        .submit(Some(drv.into()), vec![paths[0].clone(), referrer.clone()])
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].log_index + 1, done[1].log_index);
    for s in &done {
        let (nar_hash, nar_size) = nix_path_info(&s.store_path);
        assert_eq!(format!("sha256-{}", base64(&s.nar.sha256)), nar_hash);
        assert_eq!(s.nar.size, nar_size);
        assert_eq!(&s.worker_key, worker.public_key());
    }
    let bundle = worker
        .bundle(BundleFor::StorePath(referrer.clone()))
        .await
        .unwrap();
    let v = verify(&bundle.to_cbor());
    let st = v.statement();
    assert_eq!(st.subject, Subject::StorePath(referrer.clone()));
    assert_eq!(st.references, vec![dep.clone()]);
    assert_eq!(st.deriver.as_deref(), Some(drv));
    assert_eq!(st.source_commit, COMMIT);
    assert_eq!(v.log_index(), Some(done[1].log_index));
    let by_index = worker
        .bundle(BundleFor::Index(done[0].log_index))
        .await
        .unwrap();
    assert_eq!(
        verify(&by_index.to_cbor()).statement().subject,
        Subject::StorePath(paths[0].clone())
    );

    // Through the hook binary, as Nix runs it: once per derivation.
    let mut lines = Vec::new();
    for built in [&sample.tree, &sample.dep] {
        let (code, stdout, stderr) =
            run_hook(&socket, Some(&built.drv), &built.outs.join(" ")).await;
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        lines.push(stdout.trim().to_owned());
    }
    let key = hex::encode(worker.public_key());
    for (line, path) in lines.iter().zip([&paths[1], &dep]) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[..2], [path.as_str(), key.as_str()], "{line}");
        let index: u64 = fields[2].parse().unwrap();
        let entry = worker.entries(index..index + 1).unwrap().remove(0);
        let s = Statement::verify(&entry).unwrap();
        assert_eq!(s.subject, Subject::StorePath(path.clone()));
        assert_eq!(s.log_index, Some(index));
        let (nar_hash, _) = nix_path_info(path);
        assert_eq!(format!("sha256-{}", base64(&s.sha256)), nar_hash);
    }

    // The hook's failures are clear and non-zero.
    let (code, _, stderr) = run_hook(&socket, None, "").await;
    assert_ne!(code, 0);
    assert!(stderr.contains("OUT_PATHS"), "{stderr}");
    let missing = format!("{}x", &paths[0][..paths[0].len() - 1]);
    let (code, _, stderr) = run_hook(&socket, None, &missing).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("refused"), "{stderr}");
    let (code, _, stderr) = run_hook(&dir.join("nobody.sock"), None, &paths[0]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot connect"), "{stderr}");

    // `export` writes <out>/<basename>.provenix, each one verifying.
    let out_dir = dir.join("bundles");
    let exported = tokio::task::spawn_blocking({
        let socket = socket.clone();
        let out_dir = out_dir.clone();
        let wanted = vec![paths[0].clone(), paths[1].clone(), dep.clone()];
        move || {
            Command::new(WORKER)
                .arg("export")
                .arg("--socket")
                .arg(&socket)
                .arg("--out")
                .arg(&out_dir)
                .args(&wanted)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    for path in [&paths[0], &paths[1], &dep] {
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(out_dir.join(format!("{name}.provenix"))).unwrap();
        assert_eq!(
            verify(&bytes).statement().subject,
            Subject::StorePath(path.clone())
        );
    }
    // A path never submitted: no bundle, a non-zero exit.
    let unsubmitted = dir.join(format!("provenix-daemon-unsubmitted-{tag}"));
    std::fs::write(&unsubmitted, &tag).unwrap();
    let h1 = add_to_store(&[unsubmitted]).remove(0);
    let refused = Command::new(WORKER)
        .arg("export")
        .arg("--socket")
        .arg(&socket)
        .arg("--out")
        .arg(&out_dir)
        .arg(&h1)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no statement"));

    // The log passthroughs: proofs that verify against the checkpoints.
    let cp = worker.latest_checkpoint().unwrap();
    let head = worker.head();
    assert!(cp.size <= head.size && cp.size >= 4);
    let leaf = provenix_verifier::leaf_hash(&worker.entries(1..2).unwrap()[0]);
    verify_inclusion(
        &leaf,
        1,
        cp.size,
        &worker.inclusion_proof(1, cp.size).unwrap(),
        &cp.root,
    )
    .unwrap();
    let cps = worker.current_log().checkpoints().unwrap();
    let first = &cps[0];
    verify_consistency(
        first.size,
        cp.size,
        &worker.consistency_proof(first.size, cp.size).unwrap(),
        &first.root,
        &cp.root,
    )
    .unwrap();
    assert!(worker.entries(0..u64::MAX).unwrap().len() as u64 == head.size);
    daemon.stop().await;
    assert!(!socket.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Write raw bytes, read one response frame (None if the daemon closed).
fn exchange(stream: &mut UnixStream, bytes: &[u8]) -> Option<Response> {
    stream.write_all(bytes).unwrap();
    read_response(stream)
}

fn read_response(stream: &mut UnixStream) -> Option<Response> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(Response::decode(&body).unwrap())
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn assert_error(response: Option<Response>, needle: &str) {
    match response {
        Some(Response::Error(e)) => assert!(e.contains(needle), "{e:?} lacks {needle:?}"),
        other => panic!("expected an error with {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_socket_input_is_refused_and_the_daemon_keeps_serving() {
    if !nix_usable("hostile_socket_input") {
        return;
    }
    let dir = scratch("hostile");
    let tag = format!("{}-{}", std::process::id(), now());
    let sample = sample_paths(&tag);
    let socket = dir.join("hook.sock");
    let options = ServerOptions {
        idle_timeout: Duration::from_millis(300),
        // This test opens 64 connections from one process at once.
        max_per_peer: 128,
        ..ServerOptions::default()
    };
    let daemon = Daemon::start(config(&dir.join("state")), &socket, options).await;
    let good = sample.tree.outs[0].clone();
    let good_drv = sample.tree.drv.clone();
    let other_drv = sample.dep.drv.clone();

    let socket2 = socket.clone();
    tokio::task::spawn_blocking(move || {
        let socket = socket2;
        // Garbage in a well-formed frame: an error, and the connection
        // goes on.
        let mut s = connect(&socket);
        for garbage in [
            &b"\xff\xff\xff"[..],
            b"",
            b"\x01",
            b"\x9f\x9f\x9f",
            b"\x7b\x00\x00\x00\x00\x00\x00\x00\x10", // text of 2^36 bytes
            b"\x62\xff\xfe",                         // invalid UTF-8 text
        ] {
            assert_error(exchange(&mut s, &frame(garbage)), "bad request");
        }
        let mut deep = vec![0x81u8; 200_000];
        deep.push(0);
        assert_error(exchange(&mut s, &frame(&deep)), "bad request");
        assert!(matches!(
            exchange(&mut s, &frame(&Request::Head.encode())),
            Some(Response::Head(_))
        ));

        // Well-formed CBOR the daemon will not act on.
        let cases: Vec<(Request, &str)> = vec![
            (
                Request::Submit {
                    drv: None,
                    outs: vec![],
                },
                "no output",
            ),
            (
                Request::Submit {
                    drv: None,
                    outs: vec![good.clone(); 65],
                },
                "limit",
            ),
            (
                Request::Submit {
                    drv: None,
                    outs: vec![good.clone(), good.clone()],
                },
                "twice",
            ),
            (
                Request::Submit {
                    drv: None,
                    outs: vec![format!("{good}/../../../etc/passwd")],
                },
                "not allow",
            ),
            (
                Request::Submit {
                    drv: None,
                    outs: vec!["/etc/passwd".into()],
                },
                "not in the Nix store",
            ),
            (
                Request::Submit {
                    drv: None,
                    outs: vec![format!("/nix/store/{}", "a".repeat(5000))],
                },
                "hash part",
            ),
            (
                Request::Submit {
                    drv: Some(good.clone()),
                    outs: vec![good.clone()],
                },
                ".drv",
            ),
            (
                Request::Submit {
                    drv: Some(good_drv.clone()),
                    outs: vec!["/nix/store/00000000000000000000000000000000-nope".into()],
                },
                "it is not valid in the Nix store",
            ),
            (
                Request::Submit {
                    drv: None,
                    outs: vec![good.clone()],
                },
                "no derivation is named",
            ),
            (
                Request::Submit {
                    drv: Some(other_drv.clone()),
                    outs: vec![good.clone()],
                },
                "Nix registered it as built from",
            ),
            (
                Request::Export {
                    path: "/nix/store/00000000000000000000000000000000-never".into(),
                },
                "no statement",
            ),
        ];
        for (request, needle) in cases {
            assert_error(exchange(&mut s, &frame(&request.encode())), needle);
        }
        // A client that tries to send a hash is told the field is unknown.
        let mut with_hash = Request::Submit {
            drv: Some(good_drv.clone()),
            outs: vec![good.clone()],
        }
        .encode();
        with_hash[0] += 1; // one more map entry, last in key order
        with_hash.extend(b"\x66sha256\x41\x00");
        assert_error(
            exchange(&mut s, &frame(&with_hash)),
            "unknown or out-of-order key \"sha256\"",
        );

        // A length over the limit: an error, then the connection closes.
        let mut s = connect(&socket);
        assert_error(exchange(&mut s, &u32::MAX.to_be_bytes()), "over the limit");
        assert!(read_response(&mut s).is_none());
        // A truncated frame, then the client goes away.
        let mut s = connect(&socket);
        s.write_all(&[0, 0, 1, 0, 1, 2, 3]).unwrap();
        drop(s);
        // A silent client is closed after the idle timeout.
        let mut s = connect(&socket);
        assert_error(read_response(&mut s), "idle");
        // Half a length prefix, then silence.
        let mut s = connect(&socket);
        s.write_all(&[0, 0]).unwrap();
        assert_error(read_response(&mut s), "idle");
        // Many connections at once, each with garbage.
        let many: Vec<UnixStream> = (0..64)
            .map(|_| {
                let mut s = connect(&socket);
                s.write_all(&frame(b"\xc0\xc0")).unwrap();
                s
            })
            .collect();
        for mut s in many {
            assert_error(read_response(&mut s), "bad request");
        }

        // After all of it, a real submission still works.
        let mut client = Client::connect(&socket, Duration::from_secs(20)).unwrap();
        let ack = client
            .submit(Some(&good_drv), std::slice::from_ref(&good))
            .unwrap();
        assert_eq!(ack.indices.len(), 1);
        assert!(client.export(&good).is_ok());
    })
    .await
    .unwrap();

    // A uid that is not allowed is refused before anything is read.
    let other = dir.join("other.sock");
    let listener = hook::bind(&other, None).unwrap();
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(hook::serve(
        daemon.worker.clone(),
        listener,
        ServerOptions {
            allowed_uids: vec![4242],
            ..ServerOptions::default()
        },
        stopped,
    ));
    let other2 = other.clone();
    let good2 = sample.file.clone();
    tokio::task::spawn_blocking(move || {
        let mut client = Client::connect(&other2, Duration::from_secs(20)).unwrap();
        let err = client.submit(None, &[good2]).unwrap_err();
        assert!(err.to_string().contains("may not use this socket"), "{err}");
    })
    .await
    .unwrap();
    stop.send_replace(true);
    server.await.unwrap();

    // A second daemon on a live socket is refused; so is a non-socket.
    assert!(hook::bind(&socket, None).is_err());
    std::fs::write(dir.join("file"), b"x").unwrap();
    assert!(hook::bind(&dir.join("file"), None).is_err());
    daemon.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_a_new_identity_and_old_logs_stay_verifiable() {
    if !nix_usable("restart") {
        return;
    }
    let dir = scratch("restart");
    let tag = format!("{}-{}", std::process::id(), now());
    let sample = sample_paths(&tag);
    let paths = [sample.tree.outs[0].clone()];
    let drv = Some(sample.tree.drv.clone());
    let state = dir.join("state");

    let first = Worker::start(config(&state)).await.unwrap();
    // One daemon per state directory.
    assert!(matches!(
        Worker::start(config(&state)).await,
        Err(DaemonError::Locked(_))
    ));
    let a = first
        .submit(drv.clone(), vec![paths[0].clone()])
        .await
        .unwrap();
    let key_a = *first.public_key();
    first.shutdown().await.unwrap();
    // The clean stop left a last checkpoint covering everything.
    assert_eq!(
        first.current_log().latest_checkpoint().unwrap().size,
        first.head().size
    );
    assert!(
        first
            .submit(drv.clone(), vec![paths[0].clone()])
            .await
            .is_err()
    );
    drop(first);

    let second = Worker::start(config(&state)).await.unwrap();
    assert_ne!(second.public_key(), &key_a);
    assert_eq!(second.logs().len(), 2);
    let old = second.log(&key_a).unwrap();
    assert_eq!(old.generation() + 1, second.current_log().generation());
    old.verify().unwrap();
    // The old entry still has a verifying bundle, under the old key.
    let bundle = second
        .bundle(BundleFor::LogIndex(key_a, a[0].log_index))
        .await
        .unwrap();
    let Bundle::Logged { identity, .. } = &bundle else {
        panic!("a logged bundle")
    };
    assert_eq!(identity.worker_key, key_a);
    verify(&bundle.to_cbor());
    assert_eq!(
        second
            .bundle(BundleFor::StorePath(paths[0].clone()))
            .await
            .unwrap(),
        bundle
    );
    // New statements go to the new log; the newest statement of a path wins.
    let b = second
        .submit(drv.clone(), vec![paths[0].clone()])
        .await
        .unwrap();
    assert_eq!(b[0].worker_key, *second.public_key());
    let newest = second
        .bundle(BundleFor::StorePath(paths[0].clone()))
        .await
        .unwrap();
    assert_eq!(
        verify(&newest.to_cbor()).statement().worker_key,
        *second.public_key()
    );
    // Old logs are read-only: nothing past their end, no waiting.
    assert!(matches!(
        second.bundle(BundleFor::LogIndex(key_a, 99)).await,
        Err(DaemonError::NotFound(_))
    ));
    second.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_are_group_committed() {
    if !nix_usable("group_commit") {
        return;
    }
    let dir = scratch("group");
    let tag = format!("{}-{}", std::process::id(), now());
    let sample = sample_paths(&tag);
    let built = [sample.tree.clone(), sample.dep.clone()];
    let mut c = config(&dir.join("state"));
    // A small queue: submitters wait for room instead of piling up.
    c.queue_depth = 2;
    let worker = Worker::start(c).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let w = worker.clone();
        let b = built[i % 2].clone();
        tasks.push(tokio::spawn(
            async move { w.submit(Some(b.drv), b.outs).await },
        ));
    }
    let mut indices = Vec::new();
    for t in tasks {
        indices.push(t.await.unwrap().unwrap()[0].log_index);
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..200).collect::<Vec<u64>>());
    worker.shutdown().await.unwrap();
    let log = worker.current_log();
    log.verify().unwrap();
    for (i, e) in log.entries(0..200).unwrap().iter().enumerate() {
        assert_eq!(Statement::verify(e).unwrap().log_index, Some(i as u64));
    }
    // Checkpoints came every 16 entries or 50 ms, each a head of the log.
    let cps = log.checkpoints().unwrap();
    assert!(!cps.is_empty());
    assert_eq!(cps.last().unwrap().size, 200);
    for pair in cps.windows(2) {
        assert!(pair[0].size < pair[1].size);
        verify_consistency(
            pair[0].size,
            pair[1].size,
            &log.consistency_proof(pair[0].size, pair[1].size).unwrap(),
            &pair[0].root,
            &pair[1].root,
        )
        .unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_the_identity_fails_stops_the_start() {
    let dir = scratch("policy");
    let mut c = config(&dir.join("state"));
    // AMD's roots only: the simulator's evidence is refused before serving.
    c.policy = Some(Policy::default());
    let err = Worker::start(c).await.unwrap_err();
    assert!(matches!(err, DaemonError::SelfCheck(_)), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn outputs_acknowledged_after_the_last_checkpoint_are_logged_again() {
    if !nix_usable("relog") {
        return;
    }
    let dir = scratch("relog");
    let tag = format!("{}-{}", std::process::id(), now());
    let sample = sample_paths(&tag);
    let paths = vec![sample.file.clone(), sample.referrer.clone()];
    let drv = Some(sample.multi.drv.clone());
    let state = dir.join("state");
    // A worker that never checkpoints, "killed": its runtime is dropped,
    // so no last checkpoint is made.
    let mut c = config(&state);
    c.checkpoint_every = u64::MAX;
    c.checkpoint_interval = Duration::from_secs(3600);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (first, acked) = runtime.block_on(async {
        let w = Worker::start(c).await.unwrap();
        let acked = w.submit(drv, paths.clone()).await.unwrap();
        (w, acked)
    });
    let key_a = *first.public_key();
    drop(runtime);
    drop(first);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // The first worker's appender lets go of the state directory once
        // it has finished writing.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let second = loop {
            match Worker::start(config(&state)).await {
                Err(DaemonError::Locked(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                started => break started.unwrap(),
            }
        };
        let old = second.log(&key_a).unwrap().clone();
        assert!(old.latest_checkpoint().is_none());
        assert_eq!(old.head().size, 2);
        // The old entries are there, but no checkpoint of theirs can come.
        assert!(matches!(
            second
                .bundle(BundleFor::LogIndex(key_a, acked[0].log_index))
                .await,
            Err(DaemonError::NotCovered { .. })
        ));
        // The new identity logs both outputs again; their bundles verify.
        for path in &paths {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let bundle = loop {
                match second.bundle(BundleFor::StorePath(path.clone())).await {
                    Ok(b) => break b,
                    Err(_) if std::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("{path}: {e}"),
                }
            };
            let v = verify(&bundle.to_cbor());
            assert_eq!(v.statement().worker_key, *second.public_key());
            assert_eq!(v.statement().subject, Subject::StorePath(path.clone()));
        }
        // ... once: the old directory records how far it was logged again.
        second.shutdown().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(old.dir().join("relogged")).unwrap(),
            "2\n"
        );
        let size = second.head().size;
        drop(second);
        let third = Worker::start(config(&state)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(third.head().size, 0);
        third.shutdown().await.unwrap();
        assert_eq!(size, 2);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
