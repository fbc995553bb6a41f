//! A real software TPM for tests and benches: swtpm on free loopback ports,
//! driven with tpm2-tools through the `swtpm:` TCTI, killed on drop.
//!
//! Without a resource manager every transient object and session stays
//! loaded after a tool exits, and libtpms has only a few slots, so each
//! step flushes them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, unreachable_pub)] // the test and the bench each use a part

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The tools the TPM tests need.
const TOOLS: [&str; 7] = [
    "swtpm",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_quote",
    "tpm2_checkquote",
    "tpm2_pcrextend",
    "tpm2_flushcontext",
];

/// Whether swtpm and tpm2-tools are installed. When they are not: with
/// `CI=true` a failure, else a SKIP line and `false`.
pub fn tools_present() -> bool {
    let missing: Vec<&str> = TOOLS
        .into_iter()
        .filter(|t| {
            Command::new(t)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {missing:?} are not installed (./run installs swtpm and tpm2-tools)");
    }
    eprintln!("SKIP: {missing:?} not installed");
    false
}

/// A running swtpm with its own state directory.
pub struct Swtpm {
    child: Child,
    dir: PathBuf,
    port: u16,
}

/// Two consecutive free loopback ports (server, control).
fn free_port_pair() -> Option<u16> {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").ok()?;
        let port = a.local_addr().ok()?.port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Some(port);
        }
    }
    None
}

impl Swtpm {
    /// Start swtpm and create an RSA EK (`ek.ctx`) to make AKs under.
    pub fn start() -> Swtpm {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "provenix-swtpm-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // A port can be taken between probing and binding: retry.
        for _ in 0..5 {
            let port = free_port_pair().expect("no free loopback ports");
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--server"])
                .arg(format!("type=tcp,port={port}"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={}", port + 1))
                .args(["--flags", "not-need-init,startup-clear", "--tpmstate"])
                .arg(format!("dir={}", dir.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn swtpm");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let tpm = Swtpm { child, dir, port };
                    tpm.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
                    return tpm;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }

    /// The state directory, where tool outputs land.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run a tpm2-tools command in the state directory; panic with its
    /// stderr if it fails. Transient objects and sessions are flushed
    /// afterwards.
    pub fn tool(&self, args: &[&str]) -> Output {
        let out = self.command(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for kind in ["-t", "-s", "-l"] {
            self.command("tpm2_flushcontext")
                .arg(kind)
                .output()
                .unwrap();
        }
        out
    }

    /// A tpm2-tools command pointed at this TPM.
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.current_dir(&self.dir).env(
            "TPM2TOOLS_TCTI",
            format!("swtpm:host=127.0.0.1,port={}", self.port),
        );
        c
    }

    /// Read a file from the state directory.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }

    /// Create an AK under the EK (`tpm2_createak`: a restricted signing key)
    /// and quote `selection` with it; the files are `<name>.*`.
    pub fn ak_quote(&self, ak: &AkSpec, selection: &str, qualifying_hex: &str) -> SwQuote {
        let n = ak.name;
        self.tool(&[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            &format!("{n}.ctx"),
            "-G",
            ak.key,
            "-g",
            ak.hash,
            "-s",
            ak.scheme,
            "-u",
            &format!("{n}.pub"),
            "-n",
            &format!("{n}.name"),
        ]);
        self.quote(n, ak, selection, qualifying_hex)
    }

    /// Quote with the key in `<name>.ctx`.
    pub fn quote(&self, name: &str, ak: &AkSpec, selection: &str, qualifying_hex: &str) -> SwQuote {
        self.tool(&[
            "tpm2_quote",
            "-c",
            &format!("{name}.ctx"),
            "-l",
            selection,
            "-q",
            qualifying_hex,
            "-m",
            &format!("{name}.msg"),
            "-s",
            &format!("{name}.sig"),
            "-o",
            &format!("{name}.pcrs"),
            "-g",
            ak.hash,
            "--scheme",
            ak.scheme,
        ]);
        // The PCR values as `tpm2_quote -F values` would give them: read
        // again, in selection order (nothing extends them in between).
        self.tool(&["tpm2_pcrread", selection, "-o", &format!("{name}.vals")]);
        SwQuote {
            name: name.to_owned(),
            hash: ak.hash.to_owned(),
            qualifying_hex: qualifying_hex.to_owned(),
            ak_public: self.read(&format!("{name}.pub")),
            attest: self.read(&format!("{name}.msg")),
            signature: self.read(&format!("{name}.sig")),
            values: self.read(&format!("{name}.vals")),
        }
    }

    /// Whether `tpm2_checkquote` accepts the quote in `<name>.*`.
    pub fn checkquote(&self, q: &SwQuote) -> bool {
        let n = &q.name;
        self.command("tpm2_checkquote")
            .args(["-u", &format!("{n}.pub"), "-m", &format!("{n}.msg")])
            .args(["-s", &format!("{n}.sig"), "-f", &format!("{n}.pcrs")])
            .args(["-g", &q.hash, "-q", &q.qualifying_hex])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How to make an AK: tpm2-tools' names for key, hash and scheme.
pub struct AkSpec {
    /// File name stem.
    pub name: &'static str,
    /// `-G`: rsa2048, ecc256, ecc384.
    pub key: &'static str,
    /// `-g`: sha1, sha256, sha384.
    pub hash: &'static str,
    /// `-s`: rsassa, rsapss, ecdsa.
    pub scheme: &'static str,
}

/// The AKs every run makes: the two the issue names, PSS, and P-384.
pub const AKS: [AkSpec; 4] = [
    AkSpec {
        name: "rsa",
        key: "rsa2048",
        hash: "sha256",
        scheme: "rsassa",
    },
    AkSpec {
        name: "p256",
        key: "ecc256",
        hash: "sha256",
        scheme: "ecdsa",
    },
    AkSpec {
        name: "pss",
        key: "rsa2048",
        hash: "sha256",
        scheme: "rsapss",
    },
    AkSpec {
        name: "p384",
        key: "ecc384",
        hash: "sha384",
        scheme: "ecdsa",
    },
];

/// A quote made by swtpm, as files.
pub struct SwQuote {
    /// The file stem.
    pub name: String,
    /// The quote's hash, tpm2-tools' name.
    pub hash: String,
    /// The qualifying data, hex.
    pub qualifying_hex: String,
    /// The AK's TPM2B_PUBLIC.
    pub ak_public: Vec<u8>,
    /// The TPMS_ATTEST.
    pub attest: Vec<u8>,
    /// The TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The selected PCRs' values, concatenated in selection order.
    pub values: Vec<u8>,
}
