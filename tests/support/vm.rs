//! A measured-boot VM for tests: QEMU (TCG) with Debian's OVMF and a swtpm
//! TPM 2.0, booting Debian's cloud kernel directly with an initrd built here.
//!
//! OVMF measures itself and the kernel into PCRs 0-7, the kernel's EFI stub
//! measures its load options and the initrd into PCR 9, and inside the VM a
//! busybox `/init` runs the test's script and hands every file the script
//! wrote to `/out` back over the serial console, base64-encoded between
//! markers. See tests/vm/README.md.
//!
//! Include it with `#[path = "../../tests/support/vm.rs"] mod vm;`. It needs
//! the `base64` crate.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// The repository's root, from the including crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Where the harness caches the kernel and keeps the golden boot:
/// `$PROVENIX_VM_DIR`, else `target/vm` (honouring `CARGO_TARGET_DIR`).
pub fn vm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROVENIX_VM_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("vm")
}

/// The host programs and firmware a boot needs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// OVMF's code, mapped read-only (`OVMF_CODE_4M.fd`).
    pub ovmf_code: PathBuf,
    /// OVMF's variable store template (`OVMF_VARS_4M.fd`), copied per boot.
    pub ovmf_vars: PathBuf,
    /// busybox-static's `busybox`: the initrd's shell and tools.
    pub busybox: PathBuf,
}

/// The tools, or `None` after printing `SKIP: <test>: <why>` when one is
/// missing. With `CI=true` a missing tool fails the test instead.
pub fn tools(test: &str) -> Option<Tools> {
    match find_tools() {
        Ok(tools) => Some(tools),
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {test}: {why}"
            );
            eprintln!("SKIP: {test}: {why}");
            None
        }
    }
}

fn find_tools() -> Result<Tools, String> {
    let ovmf = std::env::var_os("PROVENIX_OVMF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/OVMF"));
    let tools = Tools {
        qemu: which("qemu-system-x86_64")
            .ok_or("qemu-system-x86_64 (Debian qemu-system-x86) is not installed")?,
        ovmf_code: ovmf.join("OVMF_CODE_4M.fd"),
        ovmf_vars: ovmf.join("OVMF_VARS_4M.fd"),
        busybox: which("busybox").ok_or("busybox (Debian busybox-static) is not installed")?,
    };
    for firmware in [&tools.ovmf_code, &tools.ovmf_vars] {
        if !firmware.is_file() {
            return Err(format!("{} (Debian ovmf) is missing", firmware.display()));
        }
    }
    for tool in ["swtpm", "swtpm_setup", "swtpm_localca"] {
        which(tool).ok_or(format!(
            "{tool} (Debian swtpm, swtpm-tools) is not installed"
        ))?;
    }
    // The initrd's /init needs a busybox that runs without libraries.
    if !ldd(&tools.busybox)?.is_empty() {
        return Err(format!(
            "{} is linked dynamically; install busybox-static",
            tools.busybox.display()
        ));
    }
    Ok(tools)
}

/// The first `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The kernel the VM boots: Debian's cloud kernel pinned by
/// tests/vm/kernel.lock, fetched once by tests/vm/fetch-kernel.sh.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The signed `vmlinuz` from the package.
    pub vmlinuz: PathBuf,
    /// Package and version, e.g. `linux-image-6.1.0-56-cloud-amd64 6.1.192-2`.
    pub version: String,
}

/// Fetch (or reuse) the pinned kernel. A failure is an error, never a skip:
/// the kernel is pinned, so a fetch that fails is something to fix.
pub fn kernel() -> Result<Kernel, String> {
    let script = repo_root().join("tests/vm/fetch-kernel.sh");
    let out = Command::new(&script)
        .env("PROVENIX_VM_DIR", vm_dir())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let version = std::fs::read_to_string(dir.join("VERSION"))
        .map_err(|e| format!("reading {}/VERSION: {e}", dir.display()))?;
    Ok(Kernel {
        vmlinuz: dir.join("vmlinuz"),
        version: version.trim().to_owned(),
    })
}

/// The libraries `ldd` says `binary` loads (the dynamic loader included,
/// the vDSO not): empty for a static binary.
pub fn ldd(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // glibc's ldd fails on a static binary, saying so on stderr.
        let why = String::from_utf8_lossy(&out.stderr);
        return if why.contains("not a dynamic executable") {
            Ok(Vec::new())
        } else {
            Err(format!("ldd {}: {}: {why}", binary.display(), out.status))
        };
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            return Err(format!("ldd {}: {}", binary.display(), line.trim()));
        }
        // `libc.so.6 => /lib/.../libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// One entry of the initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File {
        data: Vec<u8>,
        executable: bool,
    },
    Symlink(String),
    /// A character device (major, minor): the kernel needs /dev/console
    /// before /init can mount devtmpfs.
    CharDevice(u32, u32),
}

/// An initrd under construction: a busybox `/init`, the programs and
/// libraries added, and the test's `/run` script. Written as a newc cpio
/// with every mtime, owner and inode number fixed, entries sorted, so the
/// same inputs always give the same bytes (and the same PCR 9).
#[derive(Debug, Clone)]
pub struct Initrd {
    entries: BTreeMap<String, Entry>,
    library_dirs: Vec<String>,
}

/// The initrd's PID 1. `@LD_LIBRARY_PATH@` is filled in by [`Initrd::cpio`].
/// Kernel messages are silenced before the output so they cannot split it.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin LD_LIBRARY_PATH=@LD_LIBRARY_PATH@
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t tmpfs tmpfs /tmp
mkdir -p /out
cd /tmp
sh /run >/out/stdout 2>/out/stderr
echo $? >/out/status
dmesg -n 1
for f in /out/*; do
    [ -f "$f" ] || continue
    echo "-----BEGIN PROVENIX-VM-OUTPUT ${f#/out/}-----"
    base64 "$f"
    echo "-----END PROVENIX-VM-OUTPUT ${f#/out/}-----"
done
echo "-----PROVENIX-VM-DONE-----"
poweroff -f
"#;

impl Initrd {
    /// The skeleton: directories, /dev/console, busybox-static as `/bin/busybox`,
    /// `/init`, and `run` (a busybox `sh` script) as `/run`. The script runs
    /// in /tmp; whatever it writes to /out comes back in [`Boot::outputs`],
    /// with its stdout, stderr and exit status as `stdout`, `stderr`, `status`.
    pub fn new(tools: &Tools, run: &str) -> Result<Self, String> {
        let mut initrd = Initrd {
            entries: BTreeMap::new(),
            library_dirs: Vec::new(),
        };
        for dir in ["bin", "dev", "proc", "sys", "tmp"] {
            initrd.entries.insert(dir.to_owned(), Entry::Dir);
        }
        // Linux's devices.txt: 5,1 is /dev/console.
        initrd
            .entries
            .insert("dev/console".to_owned(), Entry::CharDevice(5, 1));
        initrd.file("bin/busybox", read(&tools.busybox)?, true);
        initrd.file("run", run.as_bytes().to_vec(), false);
        Ok(initrd)
    }

    /// Add `data` at `path` (relative to the root), with its parents.
    pub fn file(&mut self, path: &str, data: Vec<u8>, executable: bool) -> &mut Self {
        self.parents(path);
        self.entries.insert(
            path.trim_start_matches('/').to_owned(),
            Entry::File { data, executable },
        );
        self
    }

    /// Add the dynamically linked program `host` as `/bin/<name>`, without
    /// its debug information (so the initrd stays small enough to load
    /// quickly under TCG), and the libraries `ldd` says it needs.
    pub fn program(&mut self, name: &str, host: &Path) -> Result<&mut Self, String> {
        let stripped = std::env::temp_dir().join(format!(
            "provenix-vm-strip-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let status = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(host)
            .arg(&stripped)
            .status()
            .map_err(|e| format!("running objcopy (Debian binutils): {e}"))?;
        let data = read(&stripped);
        let _ = std::fs::remove_file(&stripped);
        if !status.success() {
            return Err(format!(
                "objcopy --strip-debug {}: {status}",
                host.display()
            ));
        }
        self.file(&format!("bin/{name}"), data?, true);
        self.libraries(host)?;
        Ok(self)
    }

    /// Add the libraries `ldd` reports for `binary`, each at the path ldd
    /// gave (so the dynamic loader's own path is right).
    pub fn libraries(&mut self, binary: &Path) -> Result<&mut Self, String> {
        for lib in ldd(binary)? {
            let path = lib.to_string_lossy().into_owned();
            self.file(&path, read(&lib)?, true);
            if let Some(dir) = lib.parent().map(|d| d.to_string_lossy().into_owned()) {
                if !self.library_dirs.contains(&dir) {
                    self.library_dirs.push(dir);
                }
            }
        }
        Ok(self)
    }

    /// Add the tpm2-tss device TCTI (`libtss2-tcti-device.so*`, as the host
    /// has it, symlinks kept) and its libraries: tss-esapi's TCTI loader
    /// opens it with dlopen, so `ldd` of the program does not list it.
    pub fn tss2_device_tcti(&mut self) -> Result<&mut Self, String> {
        let out = Command::new("ldconfig")
            .arg("-p")
            .output()
            .map_err(|e| format!("running ldconfig -p: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let found = text
            .lines()
            .filter(|line| line.trim_start().starts_with("libtss2-tcti-device.so"))
            .filter_map(|line| line.split_once("=> ").map(|(_, p)| PathBuf::from(p.trim())))
            .next()
            .ok_or("libtss2-tcti-device.so is not installed (Debian libtss2-tcti-device0)")?;
        let dir = found
            .parent()
            .ok_or("libtss2-tcti-device.so has no directory")?;
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry
                .map_err(|e| format!("reading {}: {e}", dir.display()))?
                .path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if !name.is_some_and(|n| n.starts_with("libtss2-tcti-device.so")) {
                continue;
            }
            let inside = path.to_string_lossy().into_owned();
            match std::fs::read_link(&path) {
                Ok(target) => {
                    self.parents(&inside);
                    self.entries.insert(
                        inside.trim_start_matches('/').to_owned(),
                        Entry::Symlink(target.to_string_lossy().into_owned()),
                    );
                }
                Err(_) => {
                    self.file(&inside, read(&path)?, true);
                }
            }
        }
        let dir = dir.to_string_lossy().into_owned();
        if !self.library_dirs.contains(&dir) {
            self.library_dirs.push(dir);
        }
        self.libraries(&found)
    }

    fn parents(&mut self, path: &str) {
        let path = path.trim_start_matches('/');
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            self.entries
                .entry(path[..end].to_owned())
                .or_insert(Entry::Dir);
            end += 1;
        }
    }

    /// The initrd's bytes: an uncompressed newc cpio archive (the format
    /// of Linux's Documentation/driver-api/early-userspace/buffer-format.rst).
    pub fn cpio(&self) -> Vec<u8> {
        let mut entries = self.entries.clone();
        let init = INIT.replace("@LD_LIBRARY_PATH@", &self.library_dirs.join(":"));
        entries.insert(
            "init".to_owned(),
            Entry::File {
                data: init.into_bytes(),
                executable: true,
            },
        );
        let mut out = Vec::new();
        // A BTreeMap sorts a directory before its contents ("a" < "a/b").
        for (ino, (name, entry)) in (1u32..).zip(&entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (0o040_755, &[], (0, 0)),
                Entry::File {
                    data,
                    executable: true,
                } => (0o100_755, data, (0, 0)),
                Entry::File {
                    data,
                    executable: false,
                } => (0o100_644, data, (0, 0)),
                Entry::Symlink(target) => (0o120_777, target.as_bytes(), (0, 0)),
                Entry::CharDevice(major, minor) => (0o020_600, &[], (*major, *minor)),
            };
            cpio_entry(&mut out, ino, mode, rdev, name, data);
        }
        cpio_entry(&mut out, 0, 0, (0, 0), "TRAILER!!!", &[]);
        out
    }
}

/// One newc header, name and data, each padded to 4 bytes. Every mtime,
/// uid and gid is 0 and nlink 1, so nothing of the host leaks in.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, mode: u32, rdev: (u32, u32), name: &str, data: &[u8]) {
    let size = u32::try_from(data.len()).expect("an initrd file under 4 GiB");
    let name_size = u32::try_from(name.len() + 1).expect("a short file name");
    let nlink = if mode == 0 { 0 } else { 1 };
    let mut header = String::from("070701");
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    for field in [
        ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
    ] {
        let _ = write!(header, "{field:08x}");
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A boot to run: kernel, initrd bytes and command line.
#[derive(Debug, Clone)]
pub struct Vm {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initrd file (written by the test, e.g. from [`Initrd::cpio`]).
    pub initrd: PathBuf,
    /// The kernel command line given to QEMU's `-append`.
    pub append: String,
    /// Stop QEMU after this long.
    pub timeout: Duration,
}

/// The command line the tests boot with. `panic=-1` reboots at once on a
/// panic, and `-no-reboot` turns that into QEMU exiting.
pub const APPEND: &str = "console=ttyS0 panic=-1";

/// What came out of a boot.
#[derive(Debug)]
pub struct Boot {
    /// The files the script left in /out, by name, plus `stdout`, `stderr`
    /// and `status`.
    pub outputs: BTreeMap<String, Vec<u8>>,
    /// The whole serial console.
    pub serial: String,
    /// From starting QEMU to its exit.
    pub elapsed: Duration,
    dir: WorkDir,
}

impl Boot {
    /// An output file, or an error naming what the VM printed instead.
    pub fn output(&self, name: &str) -> &[u8] {
        match self.outputs.get(name) {
            Some(data) => data,
            None => panic!(
                "the VM wrote no /out/{name}; its stderr:\n{}",
                String::from_utf8_lossy(self.outputs.get("stderr").map_or(&[][..], |v| v))
            ),
        }
    }

    /// The exit status of the test's `/run` script.
    pub fn status(&self) -> Option<i32> {
        std::str::from_utf8(self.outputs.get("status")?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Vm {
    /// Boot: start swtpm, run QEMU until the VM powers off (or the timeout),
    /// stop both, and decode the outputs. An error carries the serial
    /// console's tail, and the boot's directory is kept for inspection.
    pub fn boot(&self, tools: &Tools, tpm: &TpmState) -> Result<Boot, String> {
        let mut dir = WorkDir::new()?;
        let started = Instant::now();
        match self.boot_in(tools, tpm.path(), &dir.path) {
            Ok((outputs, serial)) => Ok(Boot {
                outputs,
                serial,
                elapsed: started.elapsed(),
                dir,
            }),
            Err(why) => {
                dir.keep = true;
                Err(format!(
                    "{why}\n(the boot's files are kept in {})",
                    dir.path.display()
                ))
            }
        }
    }

    fn boot_in(
        &self,
        tools: &Tools,
        state: &Path,
        dir: &Path,
    ) -> Result<(BTreeMap<String, Vec<u8>>, String), String> {
        let (swtpm, ctrl) = swtpm_for_qemu(state, dir)?;

        // OVMF writes its variables; each boot starts from Debian's template.
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy(&tools.ovmf_vars, &vars).map_err(|e| format!("copying OVMF_VARS: {e}"))?;
        let serial = dir.join("serial.log");
        let qemu_log = dir.join("qemu.log");
        let mut qemu = Process::spawn(
            "qemu-system-x86_64",
            qemu_with_ovmf_and_tpm(tools, &["-m", "1024"], &vars, &ctrl)
                .arg("-kernel")
                .arg(&self.kernel)
                .arg("-initrd")
                .arg(&self.initrd)
                .arg("-append")
                .arg(&self.append)
                .arg("-serial")
                .arg(format!("file:{}", serial.display()))
                .stdin(Stdio::null())
                .stdout(file(&qemu_log)?)
                .stderr(file(&dir.join("qemu.err"))?),
        )?;
        let status = qemu.wait_until(Instant::now() + self.timeout);
        drop(qemu);
        drop(swtpm);
        let text =
            String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).replace('\r', "");
        let tail = {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        match status {
            None => Err(format!(
                "QEMU ran over {:?} and was stopped; serial tail:\n{tail}",
                self.timeout
            )),
            Some(status) if !status.success() => {
                let stderr = std::fs::read_to_string(dir.join("qemu.err")).unwrap_or_default();
                Err(format!(
                    "QEMU failed ({status}): {stderr}\nserial tail:\n{tail}"
                ))
            }
            Some(_) => {
                let outputs =
                    outputs(&text).map_err(|why| format!("{why}; serial tail:\n{tail}"))?;
                Ok((outputs, text))
            }
        }
    }
}

/// A swtpm TPM 2.0's state, kept across boots and host-side use, so that
/// keys derived from its seeds (the EK, primary attestation keys) are the
/// same in the VM and outside it. Removed when dropped.
#[derive(Debug)]
pub struct TpmState {
    dir: WorkDir,
    /// `dir/state`: swtpm's own files; `dir/ca` holds the EK CA, if any.
    state: PathBuf,
}

impl TpmState {
    /// A manufactured TPM: `swtpm_setup --create-ek-cert` (an RSA and an ECC
    /// EK certificate in NV) with the sha256 and sha384 PCR banks active.
    /// The EK certificates come from a local CA of this TPM's own
    /// ([`TpmState::ek_ca`]), made by `swtpm_localca` in its directory, so
    /// nothing under /etc or /var is used and a verifier can be given the
    /// CA that vouches for exactly this TPM.
    pub fn manufactured() -> Result<Self, String> {
        let tpm = TpmState::blank()?;
        let dir = &tpm.dir.path;
        let ca = dir.join("ca");
        std::fs::create_dir_all(&ca).map_err(|e| format!("creating {}: {e}", ca.display()))?;
        let localca = dir.join("swtpm-localca.conf");
        let setup = dir.join("swtpm_setup.conf");
        let write = |path: &Path, text: String| {
            std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
        };
        // swtpm-localca.conf(5): where the CA lives; swtpm_localca makes
        // the root and the issuing CA there on first use.
        write(
            &localca,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\n\
                 issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )?;
        // swtpm_setup.conf(5): the certificate tool wants a full path.
        let localca_tool =
            which("swtpm_localca").ok_or("swtpm_localca (Debian swtpm-tools) is not installed")?;
        write(
            &setup,
            format!(
                "create_certs_tool = {}\ncreate_certs_tool_config = {}\n",
                localca_tool.display(),
                localca.display()
            ),
        )?;
        run(Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--pcr-banks", "sha256,sha384"])
            .arg("--config")
            .arg(&setup)
            .arg("--tpmstate")
            .arg(&tpm.state))?;
        Ok(tpm)
    }

    /// No state yet: swtpm manufactures it on first use, with no EK
    /// certificate and all four PCR banks (sha1, sha256, sha384, sha512).
    pub fn blank() -> Result<Self, String> {
        let dir = WorkDir::new()?;
        let state = dir.path.join("state");
        std::fs::create_dir_all(&state)
            .map_err(|e| format!("creating {}: {e}", state.display()))?;
        Ok(TpmState { dir, state })
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.state
    }

    /// The CA that issued a manufactured TPM's EK certificates (PEM): its
    /// root, then the issuing CA under it that signed them. `None` for a
    /// blank TPM.
    pub fn ek_ca(&self) -> Option<(PathBuf, PathBuf)> {
        let ca = self.dir.path.join("ca");
        let root = ca.join("swtpm-localca-rootca-cert.pem");
        let issuer = ca.join("issuercert.pem");
        (root.is_file() && issuer.is_file()).then_some((root, issuer))
    }

    /// Serve this TPM over TCP on 127.0.0.1 for tools on the host (never
    /// during a boot: swtpm would hold the state twice). Stopped when the
    /// returned server is dropped.
    pub fn serve(&self) -> Result<Swtpm, String> {
        // The swtpm TCTI expects the control port right after the server
        // port; ask the kernel for a free pair and retry if one was taken.
        for _ in 0..5 {
            let port = free_port()?;
            let mut process = Process::spawn(
                "swtpm",
                Command::new("swtpm")
                    .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
                    .arg("--tpmstate")
                    .arg(format!("dir={}", self.path().display()))
                    .arg("--server")
                    .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                    .arg("--ctrl")
                    .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = process.0.try_wait() {
                    break; // a port was taken: try another pair
                }
                if std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                    return Ok(Swtpm {
                        tcti: format!("swtpm:host=127.0.0.1,port={port}"),
                        ctrl: port + 1,
                        process,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err("swtpm did not start serving on 127.0.0.1".to_owned())
    }
}

/// A swtpm serving a [`TpmState`] over TCP; stopped when dropped.
pub struct Swtpm {
    /// Its TCTI for tss-esapi and tpm2-tools, `swtpm:host=127.0.0.1,port=N`.
    pub tcti: String,
    ctrl: u16,
    process: Process,
}

impl Drop for Swtpm {
    /// Shut swtpm down through its control channel, so it writes its state
    /// for the boot that follows; kill it (by pid) only if that fails.
    fn drop(&mut self) {
        let _ = Command::new("swtpm_ioctl")
            .args(["--tcp", &format!("127.0.0.1:{}", self.ctrl), "-s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self
            .process
            .wait_until(Instant::now() + Duration::from_secs(5));
    }
}

/// QEMU (q35, TCG, no display, no reboot) with `size` (`-m`, `-smp`),
/// Debian's OVMF as pflash (code read-only, this boot's `vars`) and a TPM
/// TIS device on the swtpm control socket `ctrl`.
fn qemu_with_ovmf_and_tpm(tools: &Tools, size: &[&str], vars: &Path, ctrl: &Path) -> Command {
    let mut command = Command::new(&tools.qemu);
    command
        .args(["-machine", "q35", "-accel", "tcg"])
        .args(size)
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            tools.ovmf_code.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", ctrl.display()))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
        .args(["-device", "tpm-tis,tpmdev=tpm0"]);
    command
}

/// swtpm serving the TPM state in `state` to QEMU through a control socket
/// in `dir` (a path of its own: unix socket paths are short, 108 bytes, and
/// the state directory may be anywhere), its log in `dir/swtpm.log`.
fn swtpm_for_qemu(state: &Path, dir: &Path) -> Result<(Process, PathBuf), String> {
    let ctrl = dir.join("swtpm.sock");
    let swtpm = Process::spawn(
        "swtpm",
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "startup-clear", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .stdout(Stdio::null())
            .stderr(file(&dir.join("swtpm.log"))?),
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctrl.exists() {
        if Instant::now() > deadline {
            return Err(format!("swtpm did not open {}", ctrl.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((swtpm, ctrl))
}

/// A port with a free successor, from the kernel's ephemeral range.
fn free_port() -> Result<u16, String> {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err("no two free consecutive ports on 127.0.0.1".to_owned())
}

/// The outputs between the markers `/init` prints, which must end with the
/// done marker (else the VM died while printing).
fn outputs(serial: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    if !serial.lines().any(|l| l == "-----PROVENIX-VM-DONE-----") {
        return Err("the VM powered off without finishing its output".to_owned());
    }
    let mut outputs = BTreeMap::new();
    let mut lines = serial.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("-----BEGIN PROVENIX-VM-OUTPUT ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END PROVENIX-VM-OUTPUT {name}-----");
        let mut encoded = String::new();
        loop {
            match lines.next() {
                Some(line) if line == end => break,
                Some(line) => encoded.push_str(line.trim()),
                None => return Err(format!("output {name} has no end marker")),
            }
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .map_err(|e| format!("output {name} is not base64: {e}"))?;
        outputs.insert(name.to_owned(), data);
    }
    Ok(outputs)
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

/// A child process, killed (by its own pid) and reaped when dropped.
struct Process(Child);

impl Process {
    fn spawn(name: &str, command: &mut Command) -> Result<Self, String> {
        command
            .spawn()
            .map(Process)
            .map_err(|e| format!("starting {name}: {e}"))
    }

    /// Its exit status, or `None` when it was still running at `deadline`.
    fn wait_until(&mut self, deadline: Instant) -> Option<std::process::ExitStatus> {
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => return None,
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory for one boot, removed when dropped unless the boot
/// failed or the test is failing: then it is kept (and named) for the
/// serial, QEMU and swtpm logs.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "provenix-vm-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(WorkDir {
            path: dir,
            keep: false,
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.keep {
            eprintln!(
                "kept the VM's directory for inspection: {}",
                self.path.display()
            );
        }
        if !self.keep && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// An enrolled attestation key: its certificate chain (PEM: the AK's
/// certificate, then the operator CA's) and the operator CA alone.
pub struct Enrolled {
    /// The AK's chain, PEM.
    pub ak_chain: PathBuf,
    /// The operator CA that certified it, PEM.
    pub operator_ca: PathBuf,
}

/// Enroll the TPM's ECC attestation key with a fresh operator CA, through
/// both CLIs as an operator would (docs/tpm.md), against swtpm serving
/// `tpm`'s state; the EK certificate chains to the TPM's own local CA.
/// `worker` and `provenix` are the two binaries; files go to `dir`.
pub fn enroll(
    tpm: &TpmState,
    worker: &Path,
    provenix: &Path,
    dir: &Path,
) -> Result<Enrolled, String> {
    let f = |name: &str| dir.join(name);
    let (ek_root, ek_issuer) = tpm
        .ek_ca()
        .ok_or("the TPM has no EK CA (not manufactured)")?;
    let operator_ca = f("operator-ca.pem");
    let operator_key = f("operator-ca.key");
    let key = rcgen::KeyPair::generate().map_err(|e| format!("an operator CA key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| format!("CA certificate parameters: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Provenix test operator CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("a self-signed operator CA: {e}"))?;
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write(&operator_ca, cert.pem())?;
    write(&operator_key, key.serialize_pem())?;

    let swtpm = tpm.serve()?;
    let worker_ak = |what: &str| {
        let mut command = Command::new(worker);
        command.args(["ak", what, "--tpm-tcti", &swtpm.tcti, "--ak-kind", "ecc"]);
        command
    };
    run(worker_ak("request").arg("--out").arg(f("ak-request.json")))?;
    run(Command::new(provenix)
        .args(["ak", "enroll", "challenge", "--request"])
        .arg(f("ak-request.json"))
        .arg("--ek-ca")
        .arg(&ek_root)
        .arg("--ek-intermediates")
        .arg(&ek_issuer)
        .arg("--state")
        .arg(f("ak-state.json"))
        .arg("--out")
        .arg(f("ak-challenge.json")))?;
    run(worker_ak("activate")
        .arg("--challenge")
        .arg(f("ak-challenge.json"))
        .arg("--out")
        .arg(f("ak-response.json")))?;
    // swtpm stops (and keeps its state) before the VM's swtpm opens it.
    drop(swtpm);
    run(Command::new(provenix)
        .args(["ak", "enroll", "finish", "--state"])
        .arg(f("ak-state.json"))
        .arg("--response")
        .arg(f("ak-response.json"))
        .arg("--ca-cert")
        .arg(&operator_ca)
        .arg("--ca-key")
        .arg(&operator_key)
        .args(["--days", "1", "--out"])
        .arg(f("ak.pem")))?;
    Ok(Enrolled {
        ak_chain: f("ak.pem"),
        operator_ca,
    })
}

/// The worker image (`./run image`) booted as a cloud boots it: OVMF and
/// a swtpm TPM, `disk.raw` as a virtio disk whose ESP holds the UKI, the
/// deployment settings through fw_cfg, and QEMU's user network forwarding
/// a loopback port of the host to the worker's gRPC port. Stopped (QEMU,
/// then swtpm) when dropped.
pub struct ImageVm {
    qemu: Process,
    _swtpm: Process,
    dir: WorkDir,
    started: Instant,
    /// The host's end of the gRPC port forward: 127.0.0.1:PORT.
    pub grpc: std::net::SocketAddr,
}

/// How the image's VM gets its deployment settings.
pub enum Delivery<'a> {
    /// QEMU's fw_cfg `opt/org.provenix/settings`, as on an own KVM host;
    /// the settings give the guest's static address.
    FwCfg { guest_address: &'a str },
    /// As on GCP: SMBIOS vendor "Google", no fw_cfg, the address by DHCP
    /// and the settings from the metadata server at 169.254.169.254 (a
    /// script behind QEMU's guestfwd that answers only requests with the
    /// `Metadata-Flavor: Google` header, as GCP's does).
    GcpMetadata,
}

/// The address QEMU's DHCP server gives the first client of `net`.
const GCP_NET: &str = "169.254.169.0/24";
const GCP_GUEST: &str = "169.254.169.15";

impl ImageVm {
    /// Boot `disk` with the settings file `settings`, delivered as
    /// `delivery` says, forwarding a free loopback port to the guest's
    /// `guest_port`.
    pub fn start(
        tools: &Tools,
        tpm: &TpmState,
        disk: &Path,
        settings: &Path,
        delivery: Delivery<'_>,
        guest_port: u16,
    ) -> Result<ImageVm, String> {
        let dir = WorkDir::new()?;
        let (swtpm, ctrl) = swtpm_for_qemu(tpm.path(), &dir.path)?;
        let vars = dir.path.join("OVMF_VARS.fd");
        std::fs::copy(&tools.ovmf_vars, &vars).map_err(|e| format!("copying OVMF_VARS: {e}"))?;
        let port = free_port()?;
        let mut qemu = qemu_with_ovmf_and_tpm(tools, &["-m", "2048", "-smp", "2"], &vars, &ctrl);
        qemu.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            disk.display()
        ));
        let netdev = match delivery {
            Delivery::FwCfg { guest_address } => {
                qemu.arg("-fw_cfg").arg(format!(
                    "name=opt/org.provenix/settings,file={}",
                    settings.display()
                ));
                format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-{guest_address}:{guest_port}")
            }
            Delivery::GcpMetadata => {
                let server = dir.path.join("metadata-server");
                std::fs::write(&server, gcp_metadata_script(settings))
                    .map_err(|e| format!("writing {}: {e}", server.display()))?;
                qemu.args([
                    "-smbios",
                    "type=1,manufacturer=Google,product=Google Compute Engine",
                ]);
                format!(
                    "user,id=n0,net={GCP_NET},hostfwd=tcp:127.0.0.1:{port}-{GCP_GUEST}:{guest_port},\
                     guestfwd=tcp:169.254.169.254:80-cmd:bash {}",
                    server.display()
                )
            }
        };
        let started = Instant::now();
        let qemu = Process::spawn(
            "qemu-system-x86_64",
            qemu.arg("-netdev")
                .arg(netdev)
                .args(["-device", "virtio-net-pci,netdev=n0"])
                .arg("-serial")
                .arg(format!("file:{}", dir.path.join("serial.log").display()))
                .stdin(Stdio::null())
                .stdout(file(&dir.path.join("qemu.log"))?)
                .stderr(file(&dir.path.join("qemu.err"))?),
        )?;
        Ok(ImageVm {
            qemu,
            _swtpm: swtpm,
            dir,
            started,
            grpc: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// The serial console so far, without carriage returns.
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(
            &std::fs::read(self.dir.path.join("serial.log")).unwrap_or_default(),
        )
        .replace('\r', "")
    }

    /// Wait until a console line contains `needle`: that line, and the time
    /// since QEMU started. An error (with the console's tail) when QEMU
    /// exits or `timeout` passes first.
    pub fn wait_for(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<(String, Duration), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let serial = self.serial();
            if let Some(line) = serial.lines().find(|l| l.contains(needle)) {
                return Ok((line.to_owned(), self.started.elapsed()));
            }
            let tail = || {
                let lines: Vec<&str> = serial.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            };
            if let Ok(Some(status)) = self.qemu.0.try_wait() {
                self.dir.keep = true;
                return Err(format!(
                    "QEMU exited ({status}) before {needle:?}; kept {}; console tail:\n{}",
                    self.dir.path.display(),
                    tail()
                ));
            }
            if Instant::now() > deadline {
                self.dir.keep = true;
                return Err(format!(
                    "no {needle:?} on the console in {timeout:?}; kept {}; console tail:\n{}",
                    self.dir.path.display(),
                    tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A one-connection HTTP responder, run by QEMU's guestfwd with the
/// connection on its standard input and output: GCP's metadata server for
/// the instance attribute `provenix-settings`, which it serves from
/// `settings` only to requests with the header GCP requires.
fn gcp_metadata_script(settings: &Path) -> String {
    format!(
        r#"read -r method path _
flavor=
while read -r line; do
    line=${{line%$'\r'}}
    [ -z "$line" ] && break
    [ "${{line,,}}" = "metadata-flavor: google" ] && flavor=google
done
if [ "$method $path $flavor" = "GET /computeMetadata/v1/instance/attributes/provenix-settings google" ]; then
    printf 'HTTP/1.1 200 OK\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' "$(wc -c < '{0}')"
    cat '{0}'
else
    printf 'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
fi
"#,
        settings.display()
    )
}
