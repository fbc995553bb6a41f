//! NAR serialisation and hashing, checked against Nix itself (Debian
//! `nix-bin`, Nix 2.8): for every case our `dump` bytes must equal
//! `nix-store --dump`, our hash and size must equal `nix hash path` and the
//! SHA-256 of that dump, and for store paths they must equal the `narHash`
//! and `narSize` of `nix path-info --json`.
//!
//! The tools are found through PATH. Without them the Nix comparisons print
//! `SKIP: ...` and pass, unless CI=true, where they fail: CI installs
//! `nix-bin`. The refusal tests run either way.

// Test helpers outside #[test] functions may unwrap and panic too: a
// failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TempDir;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use provenix_worker::nar::{self, Change, FileKind, NarDigest, NarError};
use ring::digest;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Nix's command-line tools.
struct Nix {
    nix_store: PathBuf,
    nix: PathBuf,
}

/// The Nix tools, or `None` (after printing `SKIP: why`) when they are
/// missing. With CI=true a missing tool fails the test instead.
fn nix(test: &str) -> Option<Nix> {
    match (which("nix-store"), which("nix")) {
        (Some(nix_store), Some(nix)) => Some(Nix { nix_store, nix }),
        _ => {
            let why = "nix-store and nix (Debian package nix-bin) are not on PATH";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: {why}"
            );
            eprintln!("SKIP: {test}: {why}");
            None
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
}

impl Nix {
    /// `nix` with the `nix-command` feature, which Nix 2.8 still calls
    /// experimental: without it `nix hash` and `nix path-info` refuse to run.
    fn nix(&self) -> Command {
        let mut command = Command::new(&self.nix);
        command.args(["--extra-experimental-features", "nix-command"]);
        command
    }

    /// `nix-store --dump PATH`: works on any path, in the store or not.
    fn dump(&self, path: &Path) -> Output {
        Command::new(&self.nix_store)
            .arg("--dump")
            .arg(path)
            .output()
            .unwrap()
    }

    /// `nix hash path --type sha256 --base32 PATH`.
    fn hash_path(&self, path: &Path) -> String {
        let out = self
            .nix()
            .args(["hash", "path", "--type", "sha256", "--base32"])
            .arg(path)
            .output()
            .unwrap();
        stdout(out, "nix hash path")
    }

    /// `nix hash to-base32` of each hash (hex with --type, or SRI).
    fn to_base32(&self, hashes: &[String], hash_type: Option<&str>) -> Vec<String> {
        let mut command = self.nix();
        command.args(["hash", "to-base32"]);
        if let Some(hash_type) = hash_type {
            command.args(["--type", hash_type]);
        }
        let out = command.args(hashes).output().unwrap();
        stdout(out, "nix hash to-base32")
            .lines()
            .map(str::to_owned)
            .collect()
    }
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

fn write(path: &Path, contents: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn link(target: &str, path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, path).unwrap();
}

fn dump(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let size = nar::dump(path, &mut out).unwrap();
    assert_eq!(
        size,
        u64::try_from(out.len()).unwrap(),
        "{}",
        path.display()
    );
    out
}

/// Compare two NARs without printing megabytes when they differ.
fn assert_same_nar(ours: &[u8], theirs: &[u8], what: &Path) {
    if ours != theirs {
        let at = ours
            .iter()
            .zip(theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        let window =
            |nar: &[u8]| hex::encode(&nar[at.saturating_sub(16)..(at + 16).min(nar.len())]);
        panic!(
            "{}: NAR differs from nix-store --dump at byte {at} (ours {} bytes, Nix's {}):\n ours {}\n nix  {}",
            what.display(),
            ours.len(),
            theirs.len(),
            window(ours),
            window(theirs)
        );
    }
}

/// Our dump, hash and size for `path` against Nix's.
fn check_against_nix(nix: &Nix, path: &Path) -> NarDigest {
    let out = nix.dump(path);
    assert!(
        out.status.success(),
        "nix-store --dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = out.stdout;
    assert_same_nar(&dump(path), &theirs, path);

    let digest = nar::hash_path(path).unwrap();
    assert_eq!(
        digest.sha256.as_slice(),
        digest::digest(&digest::SHA256, &theirs).as_ref(),
        "{}: hash_path is not the SHA-256 of nix-store --dump",
        path.display()
    );
    assert_eq!(digest.size, u64::try_from(theirs.len()).unwrap());
    assert_eq!(
        nar::nix32(&digest.sha256),
        nix.hash_path(path),
        "{}: nix32 differs from nix hash path",
        path.display()
    );
    digest
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

/// Builds every case under `root` and returns the paths to check one by
/// one (the whole tree is checked too).
fn build_cases(root: &Path) -> Vec<PathBuf> {
    let mut cases = Vec::new();
    let mut case = |name: &str| {
        let path = root.join(name);
        cases.push(path.clone());
        path
    };

    // Roots that are not directories.
    write(&case("file"), b"hello, world\n", 0o644);
    write(&case("empty-file"), b"", 0o644);
    write(&case("exec-file"), b"#!/bin/sh\necho hi\n", 0o755);
    link(
        "/nix/store/00000000000000000000000000000000-absolute",
        &case("symlink-absolute"),
    );
    link("../sibling/x", &case("symlink-relative"));
    link("does-not-exist", &case("symlink-dangling"));
    fs::create_dir(case("empty-dir")).unwrap();

    // Padding: contents, names and symlink targets of 7, 8 and 9 bytes.
    let padding = case("padding");
    for len in [7, 8, 9] {
        write(&padding.join(format!("file{len}")), &vec![b'p'; len], 0o644);
        write(&padding.join("n".repeat(len)), b"x", 0o644);
        link(&"t".repeat(len), &padding.join(format!("link{len}")));
    }
    // Every padding residue, and headers that straddle the 256 KiB chunks.
    let sizes = case("sizes");
    for (i, len) in (0..2000).step_by(7).enumerate() {
        let contents: Vec<u8> = (0..len).map(|b: usize| (b * 31 + i) as u8).collect();
        write(&sizes.join(format!("{len:04}")), &contents, 0o644);
    }

    // Only the owner's execute bit makes a file "executable" (S_IXUSR).
    let modes = case("modes");
    for mode in [0o755, 0o700, 0o500, 0o644, 0o654, 0o645, 0o444, 0o600] {
        write(&modes.join(format!("m{mode:o}")), b"mode\n", mode);
    }

    // Nested and empty directories, and a deep chain.
    let nested = case("nested");
    write(&nested.join("a/b/c/file"), b"deep\n", 0o644);
    fs::create_dir_all(nested.join("a/b/empty")).unwrap();
    fs::create_dir_all(nested.join("a/empty")).unwrap();
    link("../../a", &nested.join("a/b/up"));
    let mut deep = case("deep");
    for _ in 0..100 {
        deep.push("d");
    }
    write(&deep.join("bottom"), b"bottom\n", 0o644);

    // Names: bytewise order differs from a locale's (upper case before
    // lower, '_' between them, UTF-8 after ASCII, a non-UTF-8 byte last),
    // spaces, a leading dash, dots, and the longest name ext4 allows.
    let names = case("names");
    let odd: &[&[u8]] = &[
        b"a",
        b"B",
        b"A",
        b"b",
        b"_",
        b"Z",
        b"~",
        b"-dash",
        b"--",
        b"a b",
        b" lead",
        b"trail ",
        b"10",
        b"9",
        b".hidden",
        b"...",
        b"e",
        "é".as_bytes(),
        "ä".as_bytes(),
        "日本".as_bytes(),
        b"\xff\xfe",
        b"back\\slash",
        b"new\nline",
        b"quote\"'",
        &[b'L'; 255],
    ];
    for name in odd {
        write(&names.join(OsStr::from_bytes(name)), name, 0o644);
    }
    link(
        std::str::from_utf8(&[b'L'; 255]).unwrap(),
        &names.join("to-long"),
    );

    // A large, mostly sparse file whose size is not a multiple of 8.
    let large = case("large");
    let mut file = fs::File::create(&large).unwrap();
    file.set_len(50 * 1024 * 1024 + 3).unwrap();
    for offset in [0u64, 17 * 1024 * 1024 + 5, 50 * 1024 * 1024 - 5] {
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(b"not a hole").unwrap();
    }

    cases
}

// ---------------------------------------------------------------------------
// Against Nix
// ---------------------------------------------------------------------------

#[test]
fn matches_nix_store_dump_and_nix_hash_path() {
    let Some(nix) = nix("matches_nix_store_dump_and_nix_hash_path") else {
        return;
    };
    let tmp = TempDir::new("nar-cases");
    let root = tmp.path().join("tree");
    for case in build_cases(&root) {
        check_against_nix(&nix, &case);
    }
    check_against_nix(&nix, &root);
}

#[test]
fn matches_nix_path_info_for_store_paths() {
    let Some(nix) = nix("matches_nix_path_info_for_store_paths") else {
        return;
    };
    let tmp = TempDir::new("nar-store");
    let dir = tmp.path().join("provenix-nar-test-dir");
    write(&dir.join("bin/tool"), b"#!/bin/sh\nexit 0\n", 0o755);
    write(&dir.join("share/doc/readme"), b"1234567", 0o644);
    write(&dir.join("share/empty"), b"", 0o644);
    link("../bin/tool", &dir.join("share/tool"));
    fs::create_dir_all(dir.join("lib")).unwrap();
    let file = tmp.path().join("provenix-nar-test-file");
    write(&file, b"a single regular file\n", 0o644);
    let symlink = tmp.path().join("provenix-nar-test-link");
    link("/dangling/target", &symlink);

    for source in [&dir, &file, &symlink] {
        // `nix-store --add` copies the path into the store (as root, into
        // the local /nix/store) and registers its NAR hash and size.
        let added = Command::new(&nix.nix_store)
            .arg("--add")
            .arg(source)
            .output()
            .unwrap();
        if !added.status.success() {
            let why = format!(
                "nix-store --add failed (a writable /nix store is needed): {}",
                String::from_utf8_lossy(&added.stderr).trim()
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("SKIP: matches_nix_path_info_for_store_paths: {why}");
            return;
        }
        let store_path = PathBuf::from(stdout(added, "nix-store --add"));

        let info = stdout(
            nix.nix()
                .args(["path-info", "--json"])
                .arg(&store_path)
                .output()
                .unwrap(),
            "nix path-info --json",
        );
        // Nix 2.8 writes narHash in SRI form (sha256-<base64>).
        let nar_hash = json_field(&info, "narHash").trim_matches('"').to_owned();
        let nar_size: u64 = json_field(&info, "narSize").parse().unwrap();
        let nar_hash = nix.to_base32(&[nar_hash], None).remove(0);

        let ours = check_against_nix(&nix, &store_path);
        assert_eq!(
            nar::nix32(&ours.sha256),
            nar_hash,
            "{}",
            store_path.display()
        );
        assert_eq!(ours.size, nar_size, "{}", store_path.display());
        // The store copy has other permissions and times; the NAR does not
        // record them.
        assert_eq!(nar::hash_path(source).unwrap(), ours);
    }
}

/// The value of `"key":` in Nix's one-line JSON: a string or a number.
fn json_field<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    let rest = &json[start..];
    let end = if let Some(string) = rest.strip_prefix('"') {
        string.find('"').unwrap() + 2
    } else {
        rest.find([',', '}']).unwrap()
    };
    &rest[..end]
}

#[test]
fn nix32_matches_nix_hash_to_base32() {
    let Some(nix) = nix("nix32_matches_nix_hash_to_base32") else {
        return;
    };
    let hashes: Vec<[u8; 32]> = (0u8..64)
        .map(|i| {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(digest::digest(&digest::SHA256, &[i]).as_ref());
            hash
        })
        .chain([[0; 32], [0xff; 32]])
        .collect();
    let hex: Vec<String> = hashes.iter().map(hex::encode).collect();
    let theirs = nix.to_base32(&hex, Some("sha256"));
    assert_eq!(theirs.len(), hashes.len());
    for (hash, theirs) in hashes.iter().zip(theirs) {
        assert_eq!(nar::nix32(hash), theirs, "{}", hex::encode(hash));
    }
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

/// Nix 2.8 refuses the same paths: `nix-store --dump` exits 1 with
/// "error: file '<path>' has an unsupported type", naming the same path.
fn nix_refuses_too(test: &str, root: &Path, offending: &Path) {
    let Some(nix) = nix(test) else {
        return;
    };
    let out = nix.dump(root);
    assert!(
        !out.status.success(),
        "nix-store --dump accepted {}",
        root.display()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "file '{}' has an unsupported type",
            offending.display()
        )),
        "{stderr}"
    );
}

fn assert_unsupported(err: NarError, path: &Path, kind: FileKind) {
    let message = err.to_string();
    match err {
        NarError::UnsupportedType { path: p, kind: k } => {
            assert_eq!((p.as_path(), k), (path, kind));
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        other => panic!(
            "expected UnsupportedType for {}, got {other:?}",
            path.display()
        ),
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn fifo_in_tree_is_refused() {
    let tmp = TempDir::new("nar-fifo");
    let root = tmp.path().join("tree");
    write(&root.join("a/file"), b"ok", 0o644);
    let fifo = root.join("a/pipe");
    mkfifo(&fifo);
    // Refused when met, not opened (which would block for a writer).
    assert_unsupported(nar::hash_path(&root).unwrap_err(), &fifo, FileKind::Fifo);
    assert_unsupported(
        nar::dump(&root, io::sink()).unwrap_err(),
        &fifo,
        FileKind::Fifo,
    );
    assert_unsupported(nar::hash_path(&fifo).unwrap_err(), &fifo, FileKind::Fifo);
    nix_refuses_too("fifo_in_tree_is_refused", &root, &fifo);
}

#[test]
fn socket_in_tree_is_refused() {
    let tmp = TempDir::new("nar-socket");
    let root = tmp.path().join("tree");
    fs::create_dir_all(&root).unwrap();
    let socket = root.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    assert_unsupported(
        nar::hash_path(&root).unwrap_err(),
        &socket,
        FileKind::Socket,
    );
    nix_refuses_too("socket_in_tree_is_refused", &root, &socket);
}

#[test]
fn devices_are_refused() {
    let null = Path::new("/dev/null");
    assert_unsupported(
        nar::hash_path(null).unwrap_err(),
        null,
        FileKind::CharDevice,
    );
    nix_refuses_too("devices_are_refused", null, null);

    // A device node inside a tree needs CAP_MKNOD; without it, the root
    // case above stands for both.
    let tmp = TempDir::new("nar-device");
    let root = tmp.path().join("tree");
    fs::create_dir_all(&root).unwrap();
    let device = root.join("null");
    let made = Command::new("mknod")
        .arg(&device)
        .args(["c", "1", "3"])
        .output()
        .is_ok_and(|out| out.status.success());
    if made {
        assert_unsupported(
            nar::hash_path(&root).unwrap_err(),
            &device,
            FileKind::CharDevice,
        );
        nix_refuses_too("devices_are_refused", &root, &device);
    } else {
        eprintln!("note: devices_are_refused: mknod not permitted, device-in-tree case not run");
    }
}

#[test]
fn symlinks_are_not_followed() {
    // A symlink to a FIFO or a device is only a symlink.
    let tmp = TempDir::new("nar-nofollow");
    let root = tmp.path().join("tree");
    fs::create_dir_all(&root).unwrap();
    mkfifo(&tmp.path().join("pipe"));
    link("../pipe", &root.join("to-pipe"));
    link("/dev/null", &root.join("to-null"));
    link(".", &root.join("loop"));
    let digest = nar::hash_path(&root).unwrap();
    if let Some(nix) = nix("symlinks_are_not_followed") {
        assert_eq!(check_against_nix(&nix, &root), digest);
    }
}

#[test]
fn missing_path_is_an_io_error_naming_it() {
    let tmp = TempDir::new("nar-missing");
    let missing = tmp.path().join("not-there");
    match nar::hash_path(&missing).unwrap_err() {
        NarError::Io { op, path, source } => {
            assert_eq!(op, "reading metadata of");
            assert_eq!(path, missing);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn writer_errors_are_write_errors() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let tmp = TempDir::new("nar-writer");
    write(&tmp.path().join("f"), b"x", 0o644);
    match nar::dump(tmp.path(), Broken).unwrap_err() {
        NarError::Write(e) => assert_eq!(e.to_string(), "disk full"),
        other => panic!("expected Write, got {other:?}"),
    }
}

#[test]
fn hash_is_of_the_dumped_bytes() {
    // Without Nix: hash_path and dump agree with each other, on a tree that
    // crosses many chunks.
    let tmp = TempDir::new("nar-agree");
    let root = tmp.path().join("tree");
    for i in 0..40u32 {
        write(
            &root.join(format!("d{}/f{i}", i % 3)),
            &vec![u8::try_from(i).unwrap(); usize::try_from(i * 20_011).unwrap()],
            if i % 2 == 0 { 0o644 } else { 0o755 },
        );
    }
    let bytes = dump(&root);
    let digest = nar::hash_path(&root).unwrap();
    assert_eq!(digest.size, u64::try_from(bytes.len()).unwrap());
    assert_eq!(
        digest.sha256.as_slice(),
        digest::digest(&digest::SHA256, &bytes).as_ref()
    );
    assert_eq!(
        digest.nar_hash(),
        format!("sha256:{}", nar::nix32(&digest.sha256))
    );
}

#[test]
fn change_variants_display() {
    // The Changed error cannot be provoked deterministically from a test
    // (it needs a writer racing the reader); its message still must say
    // what happened.
    let err = NarError::Changed {
        path: PathBuf::from("/nix/store/x"),
        change: Change::Shrank {
            expected: 10,
            read: 4,
        },
    };
    assert_eq!(
        err.to_string(),
        "/nix/store/x: changed while being read: ended after 4 of 10 bytes"
    );
}
