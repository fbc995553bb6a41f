//! `provenix-init`: PID 1 of the worker image (image/image.toml).
//!
//! The image has no shell and no login: this program is all that runs
//! besides the worker and the Nix it drives. It
//! 1. moves the initramfs onto a tmpfs (Nix's sandbox pivots its root,
//!    which the kernel refuses on the initial rootfs), and runs again there;
//! 2. mounts the kernel's file systems and loads the image's modules;
//! 3. reads the deployment settings (QEMU fw_cfg `opt/org.provenix/settings`;
//!    on GCP, AWS and Azure, which have no fw_cfg, the metadata service,
//!    after DHCP), which are outside the measured image, so the worker
//!    binds their SHA-256 into its evidence before it serves (docs/image.md);
//! 4. configures the network (the settings' static address, else DHCP),
//!    starts `provenix-worker serve`, proves the
//!    sandbox and the post-build hook with one build of its own, and reaps
//!    orphans until the worker exits, then powers off.
//!
//! Any failure powers the VM off: a worker that cannot start as measured
//! must not half-start.

use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

mod cloud;
mod dhcp;
mod sys;

/// Where QEMU's fw_cfg shows the settings file.
const SETTINGS: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.provenix/settings/raw";
/// The largest settings file read.
const MAX_SETTINGS: u64 = 1 << 20;
/// Set in the environment of the second run, on the tmpfs root.
const STAGE2: &str = "PROVENIX_INIT_ON_TMPFS";
const WORKER: &str = "/usr/bin/provenix-worker";
const SOCKET: &str = "/run/provenix/hook.sock";

/// The deployment settings (TOML). Certificates and keys are PEM text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The VM's IPv4 address with its prefix, e.g. `10.0.2.15/24`
    /// [default: by DHCP].
    address: Option<String>,
    /// The default gateway of a static address, if any.
    gateway: Option<Ipv4Addr>,
    /// The interface [default: eth0, else the first there is].
    interface: Option<String>,
    /// The gRPC port on the VM's address.
    grpc_port: u16,
    /// mTLS: the server's certificate chain, its key, and the CA client
    /// certificates must chain to.
    tls_cert: String,
    tls_key: String,
    client_ca: String,
    /// `auto`, `snp`, `tpm` or `sim` [default: auto].
    platform: Option<String>,
    /// TPM: the AK's certificate chain from `provenix ak enroll`.
    ak_cert: Option<String>,
    /// Checkpoint cadence: entries, and milliseconds.
    checkpoint_every: Option<u64>,
    checkpoint_ms: Option<u64>,
}

fn main() {
    let result = if std::env::var_os(STAGE2).is_some() {
        run()
    } else {
        move_to_tmpfs()
    };
    if let Err(e) = result {
        eprintln!("provenix-init: error: {e:#}");
    }
    eprintln!("provenix-init: powering off");
    sys::power_off();
}

/// Stage 1: copy the initramfs onto a tmpfs, freeing it as it goes, make
/// that the root and run this program again there.
fn move_to_tmpfs() -> Result<()> {
    const NEW: &str = "/.root";
    std::fs::DirBuilder::new().mode(0o755).create(NEW)?;
    sys::mount("tmpfs", NEW, "tmpfs", libc::MS_NOSUID, "mode=0755")?;
    let mut entries: Vec<_> = std::fs::read_dir("/")?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        if entry.file_name() == ".root" {
            continue;
        }
        let from = entry.path();
        let to = Path::new(NEW).join(entry.file_name());
        move_tree(&from, &to).with_context(|| format!("moving {}", from.display()))?;
    }
    std::env::set_current_dir(NEW)?;
    sys::mount(".", "/", "", libc::MS_MOVE, "")?;
    sys::chroot(".")?;
    std::env::set_current_dir("/")?;
    let err = std::os::unix::process::CommandExt::exec(Command::new("/init").env(STAGE2, "1"));
    bail!("exec /init on the tmpfs: {err}")
}

fn move_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
        std::fs::remove_file(from)?;
    } else if kind.is_dir() {
        std::fs::DirBuilder::new()
            .mode(meta.permissions().mode() & 0o7777)
            .create(to)?;
        std::fs::set_permissions(to, meta.permissions())?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            move_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        std::fs::remove_dir(from)?;
    } else if kind.is_file() {
        std::fs::copy(from, to)?;
        std::fs::remove_file(from)?;
    } else {
        // A device node (/dev/console): devtmpfs provides them.
        std::fs::remove_file(from)?;
    }
    Ok(())
}

/// Stage 2, on the tmpfs root.
fn run() -> Result<()> {
    let started = Instant::now();
    for (source, target, fstype, flags, data) in [
        (
            "proc",
            "/proc",
            "proc",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
        ),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
        ("securityfs", "/sys/kernel/security", "securityfs", 0, ""),
    ] {
        sys::mount(source, target, fstype, flags, data)
            .with_context(|| format!("mounting {target}"))?;
    }
    for dir in ["/dev/pts", "/dev/shm"] {
        std::fs::create_dir_all(dir)?;
    }
    sys::mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=0620,ptmxmode=0666",
    )?;
    sys::mount(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    )?;
    load_modules()?;
    if Path::new("/sys/kernel/config").is_dir() {
        sys::mount("configfs", "/sys/kernel/config", "configfs", 0, "")
            .context("mounting configfs (configfs-tsm reports)")?;
    }

    sys::configure_ipv4("lo", Ipv4Addr::LOCALHOST, Ipv4Addr::new(255, 0, 0, 0))
        .context("bringing up lo")?;
    // QEMU hands settings over by fw_cfg; a cloud VM has none and asks its
    // cloud's metadata service, over the network DHCP brings up.
    let mut lease = None;
    let raw = match read_fw_cfg_settings()? {
        Some(raw) => raw,
        None => {
            let vendor =
                std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").unwrap_or_default();
            let cloud = cloud::Cloud::from_vendor(&vendor).with_context(|| {
                format!(
                    "no deployment settings: no QEMU -fw_cfg name=opt/org.provenix/settings,file=... \
                     and no metadata service known for the system vendor {:?}",
                    vendor.trim()
                )
            })?;
            let interface = default_interface()?;
            lease = Some(dhcp(&interface)?);
            eprintln!("provenix-init: settings from {}", cloud.how());
            cloud::settings(cloud, cloud::METADATA, MAX_SETTINGS)?
        }
    };
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &raw));
    eprintln!("provenix-init: settings sha256 {digest}");
    let text = std::str::from_utf8(&raw).context("the settings are not UTF-8")?;
    let settings: Settings = toml::from_str(text).context("reading the settings")?;

    let address = match (&settings.address, lease) {
        (Some(_), Some(_)) => {
            bail!("the settings give a static address on a cloud, which assigns it by DHCP")
        }
        (_, Some(lease)) => lease.address,
        (address, None) => {
            let interface = match &settings.interface {
                Some(i) => i.clone(),
                None => default_interface()?,
            };
            match address {
                Some(cidr) => {
                    let (address, netmask) = parse_cidr(cidr)?;
                    configure(&interface, address, netmask, settings.gateway)?;
                    address
                }
                None => dhcp(&interface)?.address,
            }
        }
    };

    for dir in [
        "/run/provenix",
        "/var/lib/provenix",
        "/nix/store",
        "/nix/var/nix",
    ] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    std::fs::set_permissions("/nix/store", std::fs::Permissions::from_mode(0o1775))?;
    let secret = |name: &str, pem: &str| -> Result<String> {
        let path = format!("/run/provenix/{name}");
        std::fs::write(&path, pem)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    };
    let settings_path = secret("settings.toml", text)?;
    let mut worker = Command::new(WORKER);
    worker
        .args(["serve", "--state", "/var/lib/provenix", "--socket", SOCKET])
        .arg("--grpc")
        .arg(format!("{address}:{}", settings.grpc_port))
        .arg("--tls-cert")
        .arg(secret("tls.pem", &settings.tls_cert)?)
        .arg("--tls-key")
        .arg(secret("tls.key", &settings.tls_key)?)
        .arg("--client-ca")
        .arg(secret("client-ca.pem", &settings.client_ca)?)
        .arg("--platform")
        .arg(settings.platform.as_deref().unwrap_or("auto"))
        .arg("--settings")
        .arg(&settings_path);
    if let Some(ak) = &settings.ak_cert {
        worker.arg("--ak-cert").arg(secret("ak.pem", ak)?);
    }
    if let Some(n) = settings.checkpoint_every {
        worker.arg("--checkpoint-every").arg(n.to_string());
    }
    if let Some(ms) = settings.checkpoint_ms {
        worker.arg("--checkpoint-ms").arg(ms.to_string());
    }
    let mut worker = worker.spawn().context("starting provenix-worker")?;
    let worker_pid = i32::try_from(worker.id())?;
    wait_for_socket(&mut worker)?;
    eprintln!(
        "provenix-init: worker serving gRPC on {address}:{} ({:.1?} after init)",
        settings.grpc_port,
        started.elapsed()
    );
    self_test()?;

    // PID 1 reaps every orphan; the worker's exit ends the VM.
    while let Some((pid, status)) = sys::wait_any() {
        if pid == worker_pid {
            bail!("provenix-worker exited (wait status {status})");
        }
    }
    bail!("no children left")
}

/// Load the modules of /etc/provenix/modules (`/PATH DEP,DEP` per line,
/// in order; provenix-image checked the order against each module's
/// `depends`).
fn load_modules() -> Result<()> {
    let list = std::fs::read_to_string("/etc/provenix/modules")?;
    let mut absent: Vec<String> = Vec::new();
    for line in list.lines().filter(|l| !l.is_empty()) {
        let (module, deps) = line.split_once(' ').unwrap_or((line, ""));
        let name = module_name(module);
        if let Some(d) = deps.split(',').find(|d| absent.iter().any(|a| a == d)) {
            eprintln!("provenix-init: {name}: not loaded, it needs {d}");
            absent.push(name);
            continue;
        }
        match sys::load_module(Path::new(module)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            // No such device here (no SEV-SNP, no fw_cfg, no Hyper-V):
            // nothing to drive.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                eprintln!("provenix-init: {name}: no device, not loaded");
                absent.push(name);
            }
            Err(e) => bail!("loading {module}: {e}"),
        }
    }
    Ok(())
}

/// A module's name: its file name without `.ko*`, `-` read as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The network interface to use when the settings name none: eth0, else
/// the first in name order (waiting up to 10 s for its driver).
fn default_interface() -> Result<String> {
    let started = Instant::now();
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        if let Some(name) = names.iter().find(|n| *n == "eth0").or(names.first()) {
            return Ok(name.clone());
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("no network interface (no driver of the image's modules found a device)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bring `interface` up by DHCP: its address, netmask, MTU and default
/// route.
fn dhcp(interface: &str) -> Result<dhcp::Lease> {
    let started = Instant::now();
    sys::configure_ipv4(interface, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        .with_context(|| format!("bringing up {interface}"))?;
    let mac = dhcp::mac_address(interface)?;
    let lease = dhcp::lease(interface, mac, Duration::from_secs(60))?;
    if let Some(mtu) = lease.mtu.filter(|&m| m >= 576) {
        sys::set_mtu(interface, mtu)
            .with_context(|| format!("setting {interface}'s MTU to {mtu}"))?;
    }
    configure(interface, lease.address, lease.netmask, lease.router)?;
    eprintln!(
        "provenix-init: {interface} {}/{} by DHCP from {} ({:.1?})",
        lease.address,
        u32::from(lease.netmask).leading_ones(),
        lease.server,
        started.elapsed()
    );
    Ok(lease)
}

/// Give `interface` its address and netmask, and the default route through
/// `gateway`, if any (with an on-link route to it first when it lies
/// outside the subnet, as a cloud's /32 address has it).
fn configure(
    interface: &str,
    address: Ipv4Addr,
    netmask: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> Result<()> {
    sys::configure_ipv4(interface, address, netmask)
        .with_context(|| format!("configuring {interface}"))?;
    if let Some(gateway) = gateway {
        let mask = u32::from(netmask);
        let on_link = u32::from(gateway) & mask == u32::from(address) & mask;
        sys::default_route(interface, gateway, !on_link)
            .with_context(|| format!("the default route through {gateway}"))?;
    }
    Ok(())
}

/// The settings QEMU hands over by fw_cfg, if it does.
fn read_fw_cfg_settings() -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match std::fs::File::open(SETTINGS) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {SETTINGS}")),
    };
    let mut raw = Vec::new();
    file.take(MAX_SETTINGS + 1).read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_SETTINGS {
        bail!("the settings are larger than {MAX_SETTINGS} bytes");
    }
    Ok(Some(raw))
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let (addr, prefix) = s
        .split_once('/')
        .with_context(|| format!("address {s:?} is not ADDRESS/PREFIX"))?;
    let addr: Ipv4Addr = addr.parse().with_context(|| format!("address {addr:?}"))?;
    let prefix: u32 = prefix
        .parse()
        .with_context(|| format!("prefix {prefix:?}"))?;
    if prefix > 32 {
        bail!("prefix /{prefix} is longer than 32");
    }
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    Ok((addr, Ipv4Addr::from(mask)))
}

fn wait_for_socket(worker: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !Path::new(SOCKET).exists() {
        if let Some(status) = worker.try_wait()? {
            bail!("provenix-worker exited before serving ({status})");
        }
        if Instant::now() > deadline {
            bail!("provenix-worker did not open {SOCKET} in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One build through Nix's sandbox and the post-build hook before anyone
/// else's: the path every local build takes, proven at boot. Its output
/// is logged and attested like any other (the console names it).
fn self_test() -> Result<()> {
    // The same derivation every boot (each boot has a fresh store), so
    // anyone can rebuild it and compare (worker/tests/image_boot.rs).
    let expr = "derivation { name = \"provenix-self-test\"; system = \"x86_64-linux\"; \
                builder = \"/bin/sh\"; args = [ \"-c\" \"echo provenix self-test > $out\" ]; }";
    let started = Instant::now();
    let out = Command::new("/usr/bin/nix-build")
        .args(["--no-out-link", "--expr", expr])
        .output()
        .context("running nix-build")?;
    if !out.status.success() {
        bail!(
            "the self-test build failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    eprintln!(
        "provenix-init: self-test built {path} through the sandbox and the post-build hook in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cidr() {
        let (a, m) = super::parse_cidr("10.0.2.15/24").unwrap();
        assert_eq!(
            (a.to_string(), m.to_string()),
            ("10.0.2.15".into(), "255.255.255.0".into())
        );
        assert_eq!(
            super::parse_cidr("1.2.3.4/0").unwrap().1.to_string(),
            "0.0.0.0"
        );
        assert!(super::parse_cidr("1.2.3.4/33").is_err());
        assert!(super::parse_cidr("1.2.3.4").is_err());
    }
}
