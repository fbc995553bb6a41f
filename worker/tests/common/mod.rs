//! Test support shared by the tests that start the real daemon and Nix.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Whether Debian's Nix (`nix-build` and `nix`) is usable. Absent, the test
/// says so and is skipped, except with `CI=true`, where it fails.
pub fn nix_available(test: &str) -> bool {
    let works = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("nix-build") && works("nix") {
        return true;
    }
    let why = "nix-build and nix (Debian package nix-bin) are not usable";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {test}: {why}"
    );
    eprintln!("SKIP: {test}: {why}");
    false
}

/// A child process (the daemon), killed and its directory removed when
/// dropped.
pub struct Daemon(pub Child, pub PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Wait until the daemon has made `path` (a socket), at most 30 s.
pub fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not open {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh directory under the system's temporary directory, named after
/// the test and the process, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory `provenix-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "provenix-{tag}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The CLI's `provenix` binary of the same profile as this test's
/// worker, built into the worker's target directory (a no-op when current):
/// a test of one package cannot name another package's binary.
pub fn provenix_bin() -> PathBuf {
    let worker = Path::new(env!("CARGO_BIN_EXE_provenix-worker"));
    let dir = worker.parent().expect("the worker's directory");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("{} is not in a profile directory", worker.display()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "provenix-cli",
            "--bin",
            "provenix",
        ])
        .args(["--profile", profile, "--target-dir"])
        .arg(dir.parent().expect("the target directory"))
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build of provenix: {status}");
    dir.join("provenix")
}

/// The standard output of a command that must have succeeded; else the
/// test fails with its status and standard error.
pub fn success(out: std::process::Output, what: &str) -> String {
    String::from_utf8(success_bytes(out, what)).unwrap()
}

/// [`success`], as bytes.
pub fn success_bytes(out: std::process::Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Write the policy file `path`: the simulator's roots and measurement
/// trusted, `extra` TOML after that.
pub fn sim_policy_file(path: &Path, extra: &str) -> PathBuf {
    let mut text = String::from("trust_amd_roots = false\n");
    for (product, sha256) in provenix_firmware::sim::sim_ark_fingerprints() {
        text.push_str(&format!(
            "[[roots]]\nname = \"sim\"\nproduct = \"{product}\"\nsha256 = \"{}\"\n",
            hex::encode(sha256)
        ));
    }
    text.push_str(&format!(
        "[snp]\nmeasurements = [\"{}\"]\n",
        hex::encode(provenix_firmware::sim::SIM_MEASUREMENT),
    ));
    text.push_str(extra);
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

/// The shared data folder (`PROVENIX_SHARED`, default `../shared` beside
/// the repository) when it holds `sub`; else SKIP, or with `CI=true` a
/// failure.
pub fn shared(test: &str, sub: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("PROVENIX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    if dir.join(sub).exists() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {test}: the shared data is missing at {} (set PROVENIX_SHARED)",
        dir.join(sub).display()
    );
    eprintln!(
        "SKIP: {test}: shared data not found at {}",
        dir.join(sub).display()
    );
    None
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
        .try_into()
        .expect("the time fits an i64")
}

/// A self-signed test CA (an operator's or a cloud's AK CA): its
/// certificate (DER), its key (PEM), and the certificate written as
/// `<name>.pem` in a directory, as a policy names it.
#[derive(Clone)]
pub struct TestCa {
    pub der: Vec<u8>,
    pub key_pem: String,
    pub pem_path: PathBuf,
}

impl TestCa {
    /// A new CA named `name` (its common name), its PEM file in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let pem_path = dir.join(format!("{name}.pem"));
        std::fs::write(&pem_path, cert.pem()).expect("writing the CA's PEM");
        TestCa {
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            pem_path,
        }
    }

    /// Its signing key.
    pub fn key(&self) -> rcgen::KeyPair {
        rcgen::KeyPair::from_pem(&self.key_pem).expect("the CA's own key")
    }
}

/// Certificates (DER) as one PEM text, in order, as `--ak-cert` takes it.
pub fn pem_certificates(ders: &[&[u8]]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}
