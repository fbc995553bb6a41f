//! Nix signatures and narinfo, checked against Nix itself (Debian
//! `nix-bin`, Nix 2.8), on real store paths with references, a
//! self-reference and a deriver, built by `nix-build`:
//!
//! - A binary cache written entirely by our code (`nar::dump`, `narinfo`,
//!   `sign` with a fresh in-memory key) is accepted by
//!   `nix store verify --trusted-public-keys <our key> --sigs-needed 1`, and
//!   `nix path-info` reads our NAR hash, size, references and signature
//!   from it.
//! - The same cache is refused as untrusted under another key of the same
//!   name, or when the signature covers another fingerprint; a narinfo whose
//!   NAR hash is not the NAR's is refused as modified.
//! - With a key from `nix key generate-secret`, our `sign` output equals
//!   `nix store sign`'s, our narinfo equals the one `nix copy` and
//!   `nix store sign` write, byte for byte, and our `verify` accepts Nix's
//!   signature.
//!
//! The tests need root (a writable /nix/store) and the tools on PATH.
//! Without them they print `SKIP: ...` and pass, unless CI=true, where they
//! fail: CI installs `nix-bin`.

// Test helpers outside #[test] functions may unwrap and panic too: a
// failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TempDir;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use provenix_verifier::nixsig::{
    self, Fingerprint, fingerprint, narinfo, public_key_line, sign, verify, worker_key_name,
};
use provenix_verifier::{Error, NixFailure};
use provenix_worker::identity::generate_key;
use provenix_worker::nar::{self, NarDigest};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Two input-addressed outputs: `y` refers to two `builtins.toFile` paths
/// and to itself, `z` to nothing. `/bin/sh` is the host's: the build runs
/// without the sandbox. `src/nixsig.rs` pins `y` as built on x86_64-linux.
const EXPRESSION: &str = r#"
let
  a = builtins.toFile "provenix-nixsig-a" "a";
  b = builtins.toFile "provenix-nixsig-b" "b";
  drv = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
in [
  (drv "provenix-nixsig-y" "echo ${b} ${a} $out > $out")
  (drv "provenix-nixsig-z" "echo z > $out")
]
"#;

/// Nix's command-line tools.
struct Nix {
    nix_store: PathBuf,
    nix_build: PathBuf,
    nix: PathBuf,
}

/// The Nix tools, or `None` (after printing `SKIP: why`) when they are
/// missing. With CI=true a missing tool fails the test instead.
fn nix(test: &str) -> Option<Nix> {
    match (which("nix-store"), which("nix-build"), which("nix")) {
        (Some(nix_store), Some(nix_build), Some(nix)) => Some(Nix {
            nix_store,
            nix_build,
            nix,
        }),
        _ => {
            skip(
                test,
                "nix-store, nix-build and nix (Debian package nix-bin) are not on PATH",
            );
            None
        }
    }
}

fn skip(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why}"
    );
    eprintln!("SKIP: {test}: {why}");
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
}

fn stdout(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Nix {
    /// `nix` with the `nix-command` feature, which Nix 2.8 still calls
    /// experimental.
    fn nix(&self) -> Command {
        let mut command = Command::new(&self.nix);
        command.args(["--extra-experimental-features", "nix-command"]);
        command
    }

    fn query(&self, flag: &str, path: &str) -> Vec<String> {
        let out = Command::new(&self.nix_store)
            .args(["--query", flag, path])
            .output()
            .unwrap();
        stdout(out, "nix-store --query")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `nix store verify` of `paths` in the binary cache at `cache`,
    /// trusting only `public_key`.
    fn verify(&self, cache: &Path, public_key: &str, paths: &[&str]) -> Output {
        self.nix()
            .args(["store", "verify", "--store", &store_uri(cache)])
            .args(["--trusted-public-keys", public_key, "--sigs-needed", "1"])
            .args(paths)
            .output()
            .unwrap()
    }
}

fn store_uri(cache: &Path) -> String {
    format!("file://{}", cache.display())
}

/// What the worker knows of a path after its build: what it hashed itself,
/// and the references and deriver Nix registered.
#[derive(Clone, Debug)]
struct Built {
    path: String,
    nar: NarDigest,
    references: Vec<String>,
    deriver: Option<String>,
}

impl Built {
    fn of(nix: &Nix, path: &str) -> Built {
        let deriver = nix.query("--deriver", path).remove(0);
        Built {
            path: path.to_owned(),
            nar: nar::hash_path(Path::new(path)).unwrap(),
            references: nix.query("--references", path),
            deriver: (deriver != "unknown-deriver").then_some(deriver),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        fingerprint(
            &self.path,
            &self.nar.sha256,
            self.nar.size,
            &self.references,
        )
        .unwrap()
    }

    fn narinfo(&self, sigs: &[String]) -> String {
        narinfo(
            &self.path,
            &self.nar.sha256,
            self.nar.size,
            &self.references,
            self.deriver.as_deref(),
            sigs,
        )
        .unwrap()
    }

    /// The store path's hash part, which names its narinfo.
    fn hash_part(&self) -> &str {
        let base = &self.path[nixsig::STORE_DIR.len() + 1..];
        &base[..32]
    }
}

/// `y` (references: a, b, itself; a deriver), `z` (no references; a
/// deriver), `a` and `b` (no references, no deriver), built once per test
/// process; or `None` when the tools or a writable store are missing.
fn built(test: &str) -> Option<(Nix, &'static [Built])> {
    static BUILT: OnceLock<Result<Vec<Built>, String>> = OnceLock::new();
    let nix = nix(test)?;
    let built = BUILT.get_or_init(|| {
        let out = Command::new(&nix.nix_build)
            .args(["--no-out-link", "--option", "substituters", ""])
            .args(["--option", "sandbox", "false", "--expr", EXPRESSION])
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "nix-build failed (root and a writable /nix/store are needed): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let outputs: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(outputs.len(), 2, "{outputs:?}");
        let y = Built::of(&nix, &outputs[0]);
        let z = Built::of(&nix, &outputs[1]);
        let mut deps: Vec<Built> = y
            .references
            .iter()
            .filter(|r| **r != y.path)
            .map(|r| Built::of(&nix, r))
            .collect();
        deps.sort_by(|a, b| a.path.cmp(&b.path));
        let mut all = vec![y, z];
        all.extend(deps);
        Ok(all)
    });
    match built {
        Ok(built) => {
            let [y, z, a, b] = built.as_slice() else {
                panic!("expected four paths: {built:?}");
            };
            // What the tests rely on.
            assert_eq!(y.references.len(), 3, "{y:?}");
            assert!(y.references.contains(&y.path), "no self-reference: {y:?}");
            assert!(y.deriver.is_some() && z.deriver.is_some(), "{y:?} {z:?}");
            assert!(z.references.is_empty(), "{z:?}");
            for dep in [a, b] {
                assert!(
                    dep.references.is_empty() && dep.deriver.is_none(),
                    "{dep:?}"
                );
            }
            Some((nix, built.as_slice()))
        }
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

/// A binary cache made by our code alone: `nix-cache-info`, each path's NAR
/// from `nar::dump` under `nar/`, and `narinfo(built)` as
/// `<hash part>.narinfo`.
fn write_cache(cache: &Path, paths: &[Built], narinfo: impl Fn(&Built) -> String) {
    fs::write(cache.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    fs::create_dir_all(cache.join("nar")).unwrap();
    for built in paths {
        let mut bytes = Vec::new();
        nar::dump(Path::new(&built.path), &mut bytes).unwrap();
        let name = format!("{}.nar", nar::nix32(&built.nar.sha256));
        fs::write(cache.join("nar").join(name), bytes).unwrap();
        fs::write(
            cache.join(format!("{}.narinfo", built.hash_part())),
            narinfo(built),
        )
        .unwrap();
    }
}

/// A fresh worker key, as `identity::generate_key` makes it, and its name
/// and public key line.
fn worker_key() -> (Ed25519KeyPair, String, String) {
    let (key, public) = generate_key(&SystemRandom::new()).unwrap();
    let name = worker_key_name(&public);
    let line = public_key_line(&name, &public).unwrap();
    (key, name, line)
}

fn paths(built: &[Built]) -> Vec<&str> {
    built.iter().map(|b| b.path.as_str()).collect()
}

/// `nix store verify` exit status bits (Nix 2.8, `src/nix/verify.cc`):
/// 1 a path's NAR does not match its NarHash, 2 a path lacks enough
/// trusted signatures, 4 a path could not be checked.
const MODIFIED: i32 = 1;
const UNTRUSTED: i32 = 2;

fn assert_refused(out: &Output, code: i32, message: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
    assert!(stderr.contains(message), "{what}: {stderr}");
}

// ---------------------------------------------------------------------------
// Our cache, Nix's verdict
// ---------------------------------------------------------------------------

#[test]
fn nix_store_verify_accepts_our_cache_under_our_key() {
    let test = "nix_store_verify_accepts_our_cache_under_our_key";
    let Some((nix, built)) = built(test) else {
        return;
    };
    let (key, name, public) = worker_key();
    let cache = TempDir::new("nixsig-ours");
    write_cache(cache.path(), built, |b| {
        b.narinfo(&[sign(&name, &key, &b.fingerprint()).unwrap()])
    });

    let out = nix.verify(cache.path(), &public, &paths(built));
    assert!(
        out.status.success(),
        "nix store verify refused our cache: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // Nix reads back what we hashed and signed.
    let y = &built[0];
    let info = stdout(
        nix.nix()
            .args(["path-info", "--json", "--store", &store_uri(cache.path())])
            .arg(&y.path)
            .output()
            .unwrap(),
        "nix path-info --json",
    );
    // Nix 2.8 writes narHash in SRI form (sha256-<base64>).
    let nar_hash = json_string(&info, "narHash");
    let theirs = stdout(
        nix.nix()
            .args(["hash", "to-base32", &nar_hash])
            .output()
            .unwrap(),
        "nix hash to-base32",
    );
    assert_eq!(theirs, nar::nix32(&y.nar.sha256));
    assert!(
        info.contains(&format!("\"narSize\":{},", y.nar.size)),
        "{info}"
    );
    let sig = sign(&name, &key, &y.fingerprint()).unwrap();
    assert!(
        info.contains(&format!("\"signatures\":[\"{sig}\"]")),
        "{info}"
    );
    // Sorted, as Nix holds them; `nix-store --query --references` lists
    // them in another order.
    let mut references: Vec<String> = y.references.iter().map(|r| format!("\"{r}\"")).collect();
    references.sort();
    assert!(
        info.contains(&format!("\"references\":[{}]", references.join(","))),
        "{info}"
    );
    verify(&sig, &public, &y.fingerprint()).unwrap();
}

#[test]
fn nix_store_verify_refuses_another_key_of_the_same_name() {
    let test = "nix_store_verify_refuses_another_key_of_the_same_name";
    let Some((nix, built)) = built(test) else {
        return;
    };
    let (key, name, _) = worker_key();
    let (other, _) = generate_key(&SystemRandom::new()).unwrap();
    let other_public: [u8; 32] = other.public_key().as_ref().try_into().unwrap();
    let other_line = public_key_line(&name, &other_public).unwrap();
    let cache = TempDir::new("nixsig-other-key");
    write_cache(cache.path(), built, |b| {
        b.narinfo(&[sign(&name, &key, &b.fingerprint()).unwrap()])
    });

    for b in built {
        let out = nix.verify(cache.path(), &other_line, &[&b.path]);
        assert_refused(&out, UNTRUSTED, "is untrusted", &b.path);
        let sig = sign(&name, &key, &b.fingerprint()).unwrap();
        assert!(matches!(
            verify(&sig, &other_line, &b.fingerprint()),
            Err(Error::Nix(NixFailure::BadSignature { .. }))
        ));
    }
}

#[test]
fn nix_store_verify_refuses_a_signature_over_another_fingerprint() {
    let test = "nix_store_verify_refuses_a_signature_over_another_fingerprint";
    let Some((nix, built)) = built(test) else {
        return;
    };
    let y = &built[0];
    let (key, name, public) = worker_key();
    let mut bigger = y.nar;
    bigger.size += 1;
    let mut other_hash = y.nar;
    other_hash.sha256[0] ^= 1;
    let tampered: [(&str, Fingerprint); 4] = [
        (
            "NAR size + 1",
            fingerprint(&y.path, &bigger.sha256, bigger.size, &y.references).unwrap(),
        ),
        (
            "another NAR hash",
            fingerprint(&y.path, &other_hash.sha256, other_hash.size, &y.references).unwrap(),
        ),
        (
            "a reference dropped",
            fingerprint(&y.path, &y.nar.sha256, y.nar.size, &y.references[1..]).unwrap(),
        ),
        (
            "another path",
            fingerprint(&built[1].path, &y.nar.sha256, y.nar.size, &y.references).unwrap(),
        ),
    ];
    for (what, signed) in tampered {
        let sig = sign(&name, &key, &signed).unwrap();
        let cache = TempDir::new("nixsig-tampered");
        write_cache(cache.path(), std::slice::from_ref(y), |b| {
            b.narinfo(std::slice::from_ref(&sig))
        });
        let out = nix.verify(cache.path(), &public, &[&y.path]);
        assert_refused(&out, UNTRUSTED, "is untrusted", what);
        assert!(
            matches!(
                verify(&sig, &public, &y.fingerprint()),
                Err(Error::Nix(NixFailure::BadSignature { .. }))
            ),
            "{what}"
        );
    }
}

#[test]
fn nix_store_verify_checks_the_nar_against_our_nar_hash() {
    let test = "nix_store_verify_checks_the_nar_against_our_nar_hash";
    let Some((nix, built)) = built(test) else {
        return;
    };
    let y = &built[0];
    let (key, name, public) = worker_key();
    // A narinfo that is consistently signed but states another NAR hash:
    // the signature is trusted, the NAR is not what it describes.
    let mut wrong = y.clone();
    wrong.nar.sha256[0] ^= 1;
    let cache = TempDir::new("nixsig-wrong-hash");
    write_cache(cache.path(), std::slice::from_ref(y), |_| {
        wrong.narinfo(&[sign(&name, &key, &wrong.fingerprint()).unwrap()])
    });
    // The NAR file is stored under the URL of the stated hash.
    fs::rename(
        cache
            .path()
            .join(format!("nar/{}.nar", nar::nix32(&y.nar.sha256))),
        cache
            .path()
            .join(format!("nar/{}.nar", nar::nix32(&wrong.nar.sha256))),
    )
    .unwrap();
    let out = nix.verify(cache.path(), &public, &[&y.path]);
    let expected = format!(
        "was modified! expected hash '{}', got '{}'",
        wrong.nar.nar_hash(),
        y.nar.nar_hash()
    );
    assert_refused(&out, MODIFIED, &expected, &y.path);
}

// ---------------------------------------------------------------------------
// Nix's own signing, our output
// ---------------------------------------------------------------------------

#[test]
fn sign_and_narinfo_equal_nix_copy_and_nix_store_sign() {
    let test = "sign_and_narinfo_equal_nix_copy_and_nix_store_sign";
    let Some((nix, built)) = built(test) else {
        return;
    };
    let dir = TempDir::new("nixsig-nix-signed");
    let name = "provenix-nixsig-test";

    // Nix's key, read as libsodium's seed || public key (base64 by
    // coreutils, not by our code).
    let secret_file = dir.path().join("secret");
    let secret_line = stdout(
        nix.nix()
            .args(["key", "generate-secret", "--key-name", name])
            .output()
            .unwrap(),
        "nix key generate-secret",
    );
    fs::write(&secret_file, &secret_line).unwrap();
    let public = stdout(
        nix.nix()
            .args(["key", "convert-secret-to-public"])
            .stdin(fs::File::open(&secret_file).unwrap())
            .output()
            .unwrap(),
        "nix key convert-secret-to-public",
    );
    let encoded = secret_line.strip_prefix(&format!("{name}:")).unwrap();
    let encoded_file = dir.path().join("secret.b64");
    fs::write(&encoded_file, encoded).unwrap();
    let decoded = Command::new("base64")
        .arg("-d")
        .arg(&encoded_file)
        .output()
        .unwrap();
    assert!(decoded.status.success(), "base64 -d");
    let secret = decoded.stdout;
    assert_eq!(secret.len(), 64, "Nix's secret key is seed || public key");
    let key = Ed25519KeyPair::from_seed_and_public_key(&secret[..32], &secret[32..]).unwrap();
    let key_public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
    assert_eq!(public_key_line(name, &key_public).unwrap(), public);

    // `nix copy` writes the cache (the closure: y, z, a, b), and
    // `nix store sign` adds a signature to each narinfo there.
    let cache = dir.path().join("cache");
    let uri = store_uri(&cache);
    let out = nix
        .nix()
        .args(["copy", "--to", &format!("{uri}?compression=none")])
        .args(paths(&built[..2]))
        .output()
        .unwrap();
    stdout(out, "nix copy");
    let out = nix
        .nix()
        .args(["store", "sign", "--store", &uri, "--key-file"])
        .arg(&secret_file)
        .args(paths(built))
        .output()
        .unwrap();
    stdout(out, "nix store sign");

    for b in built {
        let ours_sig = sign(name, &key, &b.fingerprint()).unwrap();
        let theirs = fs::read_to_string(cache.join(format!("{}.narinfo", b.hash_part()))).unwrap();
        // `builtins.toFile` paths are content-addressed: Nix adds a CA
        // line, which the worker's (input-addressed) outputs never have.
        let theirs_without_ca: String = theirs
            .split_inclusive('\n')
            .filter(|line| !line.starts_with("CA: "))
            .collect();
        assert_eq!(
            b.narinfo(std::slice::from_ref(&ours_sig)),
            theirs_without_ca,
            "{}",
            b.path
        );
        let theirs_sig = theirs
            .lines()
            .find_map(|line| line.strip_prefix("Sig: "))
            .unwrap();
        assert_eq!(ours_sig, theirs_sig, "{}", b.path);
        verify(theirs_sig, &public, &b.fingerprint()).unwrap();

        // The NAR Nix stored is the one we dump.
        let mut ours_nar = Vec::new();
        nar::dump(Path::new(&b.path), &mut ours_nar).unwrap();
        let theirs_nar =
            fs::read(cache.join(format!("nar/{}.nar", nar::nix32(&b.nar.sha256)))).unwrap();
        assert!(ours_nar == theirs_nar, "{}: NARs differ", b.path);
    }
}

/// The string value of `"key":` in Nix's one-line JSON.
fn json_string(json: &str, key: &str) -> String {
    let start = json.find(&format!("\"{key}\":\"")).unwrap() + key.len() + 4;
    let rest = &json[start..];
    rest[..rest.find('"').unwrap()].to_owned()
}
