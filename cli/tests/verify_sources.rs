//! `provenix verify`'s bundle sources, through the binary: a directory, a
//! `file://` binary cache and an `http://` one served by a small HTTP/1.1
//! server in this test (on 127.0.0.1, one request per connection). The
//! store paths are real (`nix-store --add`); the bundles are direct-mode
//! bundles from simulated chips, as `verify_cli.rs` writes them. Without
//! Nix the tests print `SKIP: ...` and pass, unless CI=true.
//!
//! The gRPC source is tested with the real worker daemon in
//! `worker/tests/verify_closure.rs`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/evidence.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{provenix, sim_chip, unix_now};
use provenix_firmware::sim::{ReportParams, SimPlatform, ark_fingerprint};
use provenix_firmware::snp::Product;
use provenix_verifier::nixsig;
use provenix_verifier::{Bundle, SnpEvidence, Statement, Subject, statement_report_data};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The simulator's launch measurement: it launches no image, so all zeros.
const SIM_MEASUREMENT: &str = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

/// Whether `nix-store` works; absent, SKIP, and with CI=true a failure.
fn nix_available(test: &str) -> bool {
    if Command::new("nix-store")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    let why = "nix-store (Debian package nix-bin) is not usable";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {test}: {why}"
    );
    eprintln!("SKIP: {test}: {why}");
    false
}

/// A fresh directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("provenix-vsrc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn join(&self, p: &str) -> PathBuf {
        let path = self.0.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real store path holding `content`, and its NAR's digest.
fn store_path(dir: &Scratch, name: &str, content: &str) -> (String, [u8; 32], u64) {
    let file = dir.join(&format!("add/{name}"));
    std::fs::write(&file, content).unwrap();
    let out = Command::new("nix-store")
        .arg("--add")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let nar = provenix_verifier::nar::hash_path(Path::new(&path)).unwrap();
    (path, nar.sha256, nar.size)
}

/// A direct-mode bundle: chip `platform` attests that `path` has this NAR
/// digest.
fn bundle(platform: &SimPlatform, path: &str, sha256: [u8; 32], size: u64) -> Vec<u8> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let statement = Statement {
        subject: Subject::StorePath(path.to_owned()),
        sha256,
        size,
        references: Vec::new(),
        deriver: None,
        worker_key: key.public_key().as_ref().try_into().unwrap(),
        source_commit: COMMIT.into(),
        log_index: None,
        time: unix_now(),
        nix_signature: None,
        trace: None,
    };
    let p = platform.chain().params();
    let report = platform
        .report_bytes(&ReportParams {
            product: p.product,
            tcb: p.tcb,
            chip_id: p.hw_id,
            report_data: statement_report_data(&statement.to_cbor()),
            ..ReportParams::default()
        })
        .unwrap();
    Bundle::Direct {
        statement: statement.sign(&key).unwrap(),
        evidence: SnpEvidence {
            report: report.to_vec(),
            cert_table: Some(platform.cert_table().unwrap()),
            vek: None,
        }
        .into(),
    }
    .to_cbor()
}

/// Put `path` into the binary cache `dir` as `provenix-worker export
/// --out DIR --cache DIR` lays it out: `<hash>.narinfo` stating this digest,
/// and the bundle as `<hash>-<name>.provenix`.
fn cache_put(dir: &Path, path: &str, sha256: [u8; 32], size: u64, bundle: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let base = path.strip_prefix("/nix/store/").unwrap();
    let narinfo = nixsig::narinfo(path, &sha256, size, &[], None, &[]).unwrap();
    std::fs::write(dir.join(format!("{}.narinfo", &base[..32])), narinfo).unwrap();
    std::fs::write(dir.join(format!("{base}.provenix")), bundle).unwrap();
}

fn write_policy(dir: &Scratch, m: u32) -> String {
    let path = dir.join(&format!("policy-{m}.toml"));
    std::fs::write(
        &path,
        format!(
            "trust_amd_roots = false\n\
             [[roots]]\nname = \"sim\"\nproduct = \"Milan\"\nsha256 = \"{}\"\n\
             [snp]\naccepted_commits = [\"{COMMIT}\"]\n\
             measurements = [\"{SIM_MEASUREMENT}\"]\n\
             [threshold]\nm = {m}\ndistinct = \"chip\"\n",
            hex::encode(ark_fingerprint(Product::Milan))
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// How the test server answers.
#[derive(Clone, Copy)]
enum Serve {
    /// Files under the root; 404 for anything else.
    Files,
    /// Accept and never answer.
    Hang,
}

/// An HTTP/1.1 server on 127.0.0.1 for `root`, in a thread that stops by
/// itself after 60 s or 500 connections; its base URL.
fn http_server(root: &Path, how: Serve) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let root = root.to_owned();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        let mut held = Vec::new();
        while Instant::now() < deadline && served < 500 {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            served += 1;
            if let Serve::Hang = how {
                held.push(stream);
                continue;
            }
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // The headers, up to the empty line.
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(n) if n > 2 => {}
                    _ => break,
                }
            }
            let target = request.split(' ').nth(1).unwrap_or("/");
            let file = root.join(target.trim_start_matches('/'));
            let (status, body) = match std::fs::read(&file) {
                Ok(b) if !target.contains("..") => ("200 OK", b),
                _ => ("404 Not Found", b"not found\n".to_vec()),
            };
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    url
}

#[test]
fn a_directory_and_two_caches_combine_and_one_bundle_counts_once() {
    if !nix_available("verify_sources combine") {
        return;
    }
    let dir = Scratch::new("combine");
    let (path, sha, size) = store_path(&dir, "provenix-source-test", "combined sources\n");
    let a = bundle(&sim_chip(1), &path, sha, size);
    let b = bundle(&sim_chip(2), &path, sha, size);
    // Chip 1's bundle in a directory and in the http cache; chip 2's in
    // the file cache.
    let bundles = dir.join("bundles/x");
    let bundles = bundles.parent().unwrap();
    std::fs::write(bundles.join("a.provenix"), &a).unwrap();
    let file_cache = dir.0.join("file-cache");
    cache_put(&file_cache, &path, sha, size, &b);
    let http_root = dir.0.join("http-cache");
    cache_put(&http_root, &path, sha, size, &a);
    let http = http_server(&http_root, Serve::Files);
    let file_url = format!("file://{}", file_cache.display());

    let run = |m: u32, extra: &[&str]| {
        let policy = write_policy(&dir, m);
        let mut args = vec!["verify", "--policy", &policy, "--store-path", &path];
        args.extend_from_slice(extra);
        provenix(&args)
    };
    let all = [
        "--bundles",
        bundles.to_str().unwrap(),
        "--cache",
        &file_url,
        "--cache",
        &http,
    ];
    let (code, out, err) = run(2, &all);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("ACCEPTED {path}: sha256:")),
        "{out}"
    );
    assert!(out.contains("2 of 2 required distinct by chip"), "{out}");
    // Chip 1's bundle came twice and counts once: no duplicate is listed.
    assert!(!out.contains("not counted"), "{out}");

    // Three distinct chips are not there.
    let (code, out, err) = run(3, &all);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("2 distinct builder(s) by chip agree, the policy requires 3"),
        "{out}"
    );

    // Each source alone.
    for source in [
        &["--bundles", bundles.to_str().unwrap()][..],
        &["--cache", &file_url],
        &["--cache", &http],
    ] {
        let (code, out, err) = run(1, source);
        assert_eq!(code, 0, "{source:?}: {out}{err}");
        assert!(out.contains("1 of 1 required"), "{out}");
    }
    // The JSON names where the counted bundle came from.
    let (code, out, _) = run(1, &["--json", "--cache", &http]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let base = path.strip_prefix("/nix/store/").unwrap();
    assert_eq!(
        v["subjects"][0]["counted"][0]["bundle"],
        format!("{http}/{base}.provenix")
    );
}

#[test]
fn a_narinfo_that_disagrees_with_the_statement_is_rejected_and_named() {
    if !nix_available("verify_sources narinfo") {
        return;
    }
    let dir = Scratch::new("narinfo");
    let (path, sha, size) = store_path(&dir, "provenix-narinfo-test", "narinfo\n");
    let (other, other_sha, other_size) = store_path(
        &dir,
        "provenix-narinfo-other",
        "other content, longer than the first\n",
    );
    let cache = dir.0.join("cache");
    cache_put(
        &cache,
        &path,
        sha,
        size,
        &bundle(&sim_chip(1), &path, sha, size),
    );
    // The narinfo states another NAR than the statement beside it.
    let base = path.strip_prefix("/nix/store/").unwrap();
    let narinfo_file = cache.join(format!("{}.narinfo", &base[..32]));
    std::fs::write(
        &narinfo_file,
        nixsig::narinfo(&path, &other_sha, other_size, &[], None, &[]).unwrap(),
    )
    .unwrap();
    let url = format!("file://{}", cache.display());
    let policy = write_policy(&dir, 1);
    let (code, out, err) = provenix(&[
        "verify",
        "--policy",
        &policy,
        "--store-path",
        &path,
        "--cache",
        &url,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with(&format!("REJECTED {path}")), "{out}");
    let narinfo_url = format!("{url}/{}.narinfo", &base[..32]);
    assert!(
        out.contains(&format!("the narinfo at {narinfo_url} disagrees")),
        "{out}"
    );
    assert!(
        out.contains(&format!("NarHash {}", nixsig::nar_hash(&other_sha))),
        "{out}"
    );
    assert!(out.contains(&format!("NarSize {other_size}")), "{out}");

    // A cache that serves, for this path, a bundle about another path: a
    // replay, named.
    let replay = bundle(&sim_chip(1), &other, other_sha, other_size);
    cache_put(&cache, &path, sha, size, &replay);
    let (code, out, err) = provenix(&[
        "verify",
        "--policy",
        &policy,
        "--store-path",
        &path,
        "--cache",
        &url,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("the statement is about {other}")),
        "{out}"
    );
}

#[test]
fn missing_malformed_and_silent_caches_are_errors_naming_the_url() {
    if !nix_available("verify_sources errors") {
        return;
    }
    let dir = Scratch::new("errors");
    let (path, sha, size) = store_path(&dir, "provenix-errors-test", "errors\n");
    let base = path.strip_prefix("/nix/store/").unwrap().to_owned();
    let hash = &base[..32];
    let root = dir.0.join("cache");
    std::fs::create_dir_all(&root).unwrap();
    let http = http_server(&root, Serve::Files);
    let policy = write_policy(&dir, 1);
    let verify = |cache: &str, extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--policy",
            &policy,
            "--store-path",
            &path,
            "--cache",
            cache,
        ];
        args.extend_from_slice(extra);
        provenix(&args)
    };

    // 404: no narinfo.
    let (code, out, err) = verify(&http, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("{http}/{hash}.narinfo: not found (HTTP 404)")),
        "{err}"
    );
    // A narinfo without its bundle: 404 naming the bundle.
    let good = bundle(&sim_chip(1), &path, sha, size);
    cache_put(&root, &path, sha, size, &good);
    std::fs::remove_file(root.join(format!("{base}.provenix"))).unwrap();
    let (code, _, err) = verify(&http, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{http}/{base}.provenix: not found (HTTP 404)")),
        "{err}"
    );
    // Malformed narinfos, over HTTP and from a file.
    std::fs::write(root.join(format!("{base}.provenix")), &good).unwrap();
    let file_url = format!("file://{}", root.display());
    for (text, says) in [
        (
            format!("StorePath: {path}\nNarSize: {size}\n"),
            "no NarHash",
        ),
        (
            format!("StorePath: {path}\nNarHash: sha256:xyz\nNarSize: {size}\n"),
            "NarHash \"sha256:xyz\"",
        ),
        ("garbage without a colon\n".to_owned(), "line 1"),
    ] {
        std::fs::write(root.join(format!("{hash}.narinfo")), &text).unwrap();
        for url in [&http, &file_url] {
            let (code, _, err) = verify(url, &[]);
            assert_eq!(code, 2, "{err}");
            assert!(
                err.contains(&format!("{url}/{hash}.narinfo: malformed narinfo")),
                "{err}"
            );
            assert!(err.contains(says), "{says}: {err}");
        }
    }
    // A missing file:// narinfo.
    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, err) = verify(&format!("file://{}", empty.display()), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{hash}.narinfo")), "{err}");
    // A server that never answers: a timeout naming the URL.
    let silent = http_server(&root, Serve::Hang);
    let started = Instant::now();
    let (code, _, err) = verify(&silent, &["--timeout", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{silent}/{hash}.narinfo: timed out")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // Not a cache URL; a worker or cache without a store path.
    let (code, _, err) = verify("ftp://x", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not a file://, http:// or https:// URL"),
        "{err}"
    );
    let (code, _, err) = provenix(&["verify", "--policy", &policy, "--cache", &http]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give --store-path"), "{err}");
}
