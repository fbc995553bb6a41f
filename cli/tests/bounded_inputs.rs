//! Every file `provenix` reads, given something hostile instead: a device
//! that never ends (`/dev/zero`), a FIFO with no writer (opening it would
//! block), a directory, a regular file one byte over its format's limit,
//! and a 2 GiB sparse file. Each is answered with exit 2 and a message
//! naming the file, in under a second.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/evidence.rs"]
mod common;
#[path = "../../tests/support/logged.rs"]
mod logged;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use logged::{TempDir, Worker, policy_file};

/// A hostile stand-in for a file, made in `dir`.
struct Hostile {
    name: &'static str,
    path: PathBuf,
    /// What the error must say besides the path.
    says: &'static str,
}

fn hostile(dir: &Path, limit: usize) -> Vec<Hostile> {
    let fifo = dir.join("fifo");
    if !fifo.exists() {
        let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(ok.success(), "mkfifo");
    }
    let sparse = dir.join("sparse");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let over = dir.join(format!("over-{limit}"));
    std::fs::write(&over, vec![b'0'; limit + 1]).unwrap();
    vec![
        Hostile {
            name: "/dev/zero",
            path: "/dev/zero".into(),
            says: "not a regular file",
        },
        Hostile {
            name: "a FIFO",
            path: fifo,
            says: "FIFO",
        },
        Hostile {
            name: "a directory",
            path: dir.to_path_buf(),
            says: "directory",
        },
        Hostile {
            name: "one byte over the limit",
            path: over,
            says: "larger than the limit",
        },
        Hostile {
            name: "a 2 GiB sparse file",
            path: sparse,
            says: "larger than the limit",
        },
    ]
}

#[test]
fn hostile_files_are_refused_by_name_quickly() {
    let tmp = TempDir::new("bounded");
    let dir = tmp.path();
    let policy = policy_file(dir, "");
    let worker = Worker::new(3);
    let signed = worker.statement(
        "/nix/store/00000000000000000000000000000000-x",
        None,
        b"x",
        None,
    );
    let bundle = dir.join("good.provenix");
    std::fs::write(&bundle, worker.direct(&signed)).unwrap();
    let artifact = dir.join("x");
    std::fs::write(&artifact, b"x").unwrap();
    let vcek = dir.join("vcek.der");
    std::fs::write(&vcek, worker.platform.chain().vek_der()).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let v = s(&vcek);
    let key = dir.join("key.pk8");
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    std::fs::write(&key, pkcs8.as_ref()).unwrap();
    let k = s(&key);

    // (what is read, its limit, the command with "{}" where the file goes)
    let (b, p, a) = (s(&bundle), s(&policy), s(&artifact));
    let cases: Vec<(&str, usize, Vec<String>)> = vec![
        (
            "a bundle (verify --bundle)",
            provenix_verifier::MAX_BUNDLE_SIZE,
            vec![
                "verify".into(),
                "--bundle".into(),
                "{}".into(),
                "--policy".into(),
                p.clone(),
            ],
        ),
        (
            "a bundle (verify-bundle)",
            provenix_verifier::MAX_BUNDLE_SIZE,
            vec![
                "verify-bundle".into(),
                "{}".into(),
                "--policy".into(),
                p.clone(),
            ],
        ),
        (
            "a policy",
            provenix_verifier::MAX_POLICY_SIZE,
            vec![
                "verify".into(),
                "--bundle".into(),
                b.clone(),
                "--policy".into(),
                "{}".into(),
            ],
        ),
        (
            "a CRL",
            provenix_verifier::MAX_CRL_SIZE,
            vec![
                "verify".into(),
                "--bundle".into(),
                b.clone(),
                "--policy".into(),
                p.clone(),
                "--crl".into(),
                "{}".into(),
            ],
        ),
        (
            "a consistency proof",
            provenix_verifier::ConsistencyProof::MAX_LEN,
            vec![
                "verify".into(),
                "--bundle".into(),
                b.clone(),
                "--policy".into(),
                p.clone(),
                "--consistency".into(),
                "{}".into(),
            ],
        ),
        (
            "a report",
            8 << 10,
            vec![
                "verify-report".into(),
                "{}".into(),
                "--vcek".into(),
                v.clone(),
            ],
        ),
        (
            "a VCEK",
            512 << 10,
            vec![
                "verify-report".into(),
                a.clone(),
                "--vcek".into(),
                "{}".into(),
            ],
        ),
        (
            "a chain",
            512 << 10,
            vec![
                "verify-report".into(),
                a.clone(),
                "--vcek".into(),
                v.clone(),
                "--chain".into(),
                "{}".into(),
            ],
        ),
        (
            "a certificate table",
            provenix_firmware::snp::MAX_TABLE_SIZE,
            vec![
                "verify-report".into(),
                a.clone(),
                "--certs".into(),
                "{}".into(),
            ],
        ),
        (
            "a bundle (report)",
            provenix_verifier::MAX_BUNDLE_SIZE,
            vec!["report".into(), "{}".into(), "--policy".into(), p.clone()],
        ),
        (
            "a bundle (export slsa)",
            provenix_verifier::MAX_BUNDLE_SIZE,
            vec![
                "export".into(),
                "slsa".into(),
                "{}".into(),
                "--key".into(),
                k.clone(),
                "--policy".into(),
                p.clone(),
            ],
        ),
        (
            "an artifact",
            usize::MAX,
            vec![
                "verify".into(),
                "--bundle".into(),
                b.clone(),
                "--policy".into(),
                p.clone(),
                "--artifact".into(),
                "{}".into(),
            ],
        ),
    ];
    let mut checked = 0;
    for (what, limit, args) in &cases {
        for h in hostile(dir, (*limit).min(64 << 20)) {
            // An artifact may be any size: a big regular one is hashed.
            if *limit == usize::MAX && h.says == "larger than the limit" {
                continue;
            }
            // `report` walks a directory it is given, by design.
            if what.contains("(report)") && h.name == "a directory" {
                continue;
            }
            let args: Vec<String> = args.iter().map(|a| a.replace("{}", &s(&h.path))).collect();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let started = Instant::now();
            let (code, out, err) = common::provenix(&refs);
            let took = started.elapsed();
            assert_eq!(code, 2, "{what} as {}: {out}{err}", h.name);
            assert!(
                err.contains(&s(&h.path)) && err.contains(h.says),
                "{what} as {}: the error does not name the file and say {:?}: {err}",
                h.name,
                h.says
            );
            assert!(
                took < Duration::from_secs(1),
                "{what} as {}: {took:?}",
                h.name
            );
            checked += 1;
        }
    }
    eprintln!("{checked} hostile inputs refused, each with exit 2 in under a second");
}
