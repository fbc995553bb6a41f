//! Test support: a real software TPM (swtpm) with an EK certificate from a
//! local CA of its own, reachable through the `swtpm:` TCTI.
//!
//! Include it with `#[path = "../../tests/support/swtpm.rs"] mod swtpm;`.
//! It uses only std, so any crate's tests can. Each [`Swtpm`] lives in its
//! own temporary directory (state, CA, configuration); nothing under /etc
//! or /var is read or written, and two instances have two different CAs.
//! Where swtpm is not installed the test prints SKIP, except with
//! `CI=true`, where that is a failure.

// Test code: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running swtpm, killed and its directory removed when dropped.
pub struct Swtpm {
    child: Child,
    dir: PathBuf,
    port: u16,
}

/// Whether swtpm, swtpm_setup and swtpm_localca are installed. Absent, the
/// test says so and is skipped, except with `CI=true`, where it fails.
pub fn available(test: &str) -> bool {
    tool_available(test, "swtpm", &["--version"])
        && tool_available(test, "swtpm_setup", &["--version"])
        && tool_available(test, "swtpm_localca", &["--help"])
}

/// Whether `tool` runs. Absent, SKIP, or under `CI=true` a failure.
pub fn tool_available(test: &str, tool: &str, args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        let why = format!("{tool} is not installed (Debian swtpm, swtpm-tools, tpm2-tools)");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {test}: {why}"
        );
        eprintln!("SKIP: {test}: {why}");
    }
    ok
}

impl Swtpm {
    /// A freshly manufactured TPM 2.0 (SHA-256 and SHA-384 banks, RSA 2048
    /// EK with certificate, platform certificate) serving on two free
    /// loopback ports, or `None` (after SKIP) when swtpm is missing.
    pub fn start(test: &str) -> Option<Swtpm> {
        if !available(test) {
            return None;
        }
        let dir = temp_dir(test);
        setup(&dir);
        // The TCTI's control port is the server port + 1; another process
        // may take a port between our probe and swtpm's bind, so retry.
        for _ in 0..20 {
            let port = free_port_pair();
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2"])
                .arg("--tpmstate")
                .arg(format!("dir={}", dir.join("state").display()))
                .args([
                    "--server",
                    &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                ])
                .args([
                    "--ctrl",
                    &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
                ])
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start swtpm");
            if wait_listening(&mut child, port + 1) {
                return Some(Swtpm { child, dir, port });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start on any port pair");
    }

    /// The TCTI string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The local CA's root certificate (PEM): the trust anchor for the EK
    /// certificate.
    pub fn ca_root(&self) -> PathBuf {
        self.dir.join("ca/swtpm-localca-rootca-cert.pem")
    }

    /// The local CA's issuing certificate (PEM), signed by the root; it
    /// signed the EK certificate.
    pub fn ca_issuer(&self) -> PathBuf {
        self.dir.join("ca/issuercert.pem")
    }

    /// This instance's directory, for a test's own files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Manufacture the TPM state in `dir/state` with a local CA in `dir/ca`,
/// from configuration files written into `dir`.
fn setup(dir: &Path) {
    for sub in ["state", "ca"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let ca = dir.join("ca");
    let localca = dir.join("swtpm-localca.conf");
    let options = dir.join("swtpm-localca.options");
    let conf = dir.join("swtpm_setup.conf");
    std::fs::write(
        &localca,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &options,
        "--platform-manufacturer Provenix\n--platform-version 2.1\n--platform-model swtpm\n",
    )
    .unwrap();
    std::fs::write(
        &conf,
        format!(
            "create_certs_tool = {}\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256,sha384\n",
            in_path("swtpm_localca").display(),
            localca.display(),
            options.display()
        ),
    )
    .unwrap();
    let out = Command::new("swtpm_setup")
        .args(["--tpm2", "--create-ek-cert", "--create-platform-cert"])
        .arg("--tpmstate")
        .arg(dir.join("state"))
        .arg("--config")
        .arg(&conf)
        .args(["--pcr-banks", "sha256,sha384", "--overwrite"])
        .output()
        .expect("cannot run swtpm_setup");
    assert!(
        out.status.success(),
        "swtpm_setup failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where `tool` is on PATH: swtpm_setup wants the CA tool's full path.
fn in_path(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{tool} is not on PATH"))
}

/// A port P such that P and P + 1 were free a moment ago.
fn free_port_pair() -> u16 {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Wait until `child` accepts connections on `port`, at most 10 s; false
/// when it exited (its port was taken).
fn wait_listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A fresh directory `provenix-swtpm-<test>-<pid>-<n>` under the system's
/// temporary directory.
fn temp_dir(test: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("provenix-swtpm-{test}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
