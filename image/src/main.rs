//! `provenix-image`: builds the worker's boot image from the recipe
//! (image/image.toml), the pinned packages (image/packages.lock), the files
//! of image/rootfs, and the worker and init binaries built from the same
//! commit. Every output is a function of those inputs alone: no clock, no
//! host name, no host tool whose version would show in the bytes.
//! `./run image` is the way to call it (docs/image.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};

mod debs;
mod disk;
mod initrd;
mod modules;
mod uki;

use debs::{Fetcher, Files, Pin};
use initrd::{Node, Sonames, Tree};

/// Build the worker image, or fetch the packages it is made of.
#[derive(Parser)]
#[command(about)]
enum Cli {
    /// Build the image from the recipe, the packages and the binaries.
    Build(BuildArgs),
    /// Fetch every package of the lock into the cache, checking its sha256.
    Fetch(Packages),
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The recipe.
    #[arg(long, default_value = "image/image.toml")]
    recipe: PathBuf,
    /// Files copied into the initrd as they are (etc/...).
    #[arg(long, default_value = "image/rootfs")]
    rootfs: PathBuf,
    /// The worker binary (built from `--commit`).
    #[arg(long)]
    worker: PathBuf,
    /// The init binary (built from `--commit`).
    #[arg(long)]
    init: PathBuf,
    /// The source commit of the worker and of this recipe.
    #[arg(long)]
    commit: String,
    /// Facts about the build to record in inputs.json (`KEY=VALUE`, e.g.
    /// the toolchain and Cargo.lock's hash).
    #[arg(long = "record", value_parser = parse_record)]
    records: Vec<(String, String)>,
    #[command(flatten)]
    packages: Packages,
    /// Where to write the image.
    #[arg(long)]
    out: PathBuf,
}

/// The pinned packages and where their files come from.
#[derive(clap::Args)]
struct Packages {
    /// The pinned packages.
    #[arg(long, default_value = "image/packages.lock")]
    lock: PathBuf,
    /// A package given as a file, `SHA256=PATH` (nix/image.nix passes its
    /// fixed-output paths so); its sha256 is checked.
    #[arg(long = "deb", value_parser = parse_deb)]
    given: Vec<(String, PathBuf)>,
    /// The .deb cache (files named `<sha256>.deb`) for the packages not
    /// given [default: $PROVENIX_IMAGE_DEBS].
    #[arg(long, env = "PROVENIX_IMAGE_DEBS")]
    debs: Option<PathBuf>,
    /// The Debian archive to fetch missing packages from.
    #[arg(
        long,
        env = "PROVENIX_DEBIAN_MIRROR",
        default_value = "http://deb.debian.org/debian"
    )]
    mirror: String,
}

impl Packages {
    fn fetcher(&self) -> Fetcher {
        Fetcher {
            given: self.given.iter().cloned().collect(),
            cache: self.debs.clone(),
            mirror: self.mirror.clone(),
        }
    }
}

fn parse_deb(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((sha256, path))
            if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok((sha256.to_ascii_lowercase(), path.into()))
        }
        _ => Err(format!("{s:?} is not SHA256=PATH")),
    }
}

fn parse_record(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// image/image.toml.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipe {
    kernel: KernelRecipe,
    uki: UkiRecipe,
    firmware: FirmwareRecipe,
    #[serde(default)]
    program: Vec<ProgramRecipe>,
    manifest: provenix_measurements::manifest::ImageDescription,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelRecipe {
    package: String,
    cmdline: String,
    modules: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UkiRecipe {
    package: String,
    stub: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FirmwareRecipe {
    package: String,
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramRecipe {
    package: String,
    path: String,
    /// Where it goes [default: `path`].
    install: Option<String>,
    #[serde(default)]
    links: Vec<String>,
}

/// inputs.json: everything the image was made from.
#[derive(Serialize)]
struct Inputs {
    commit: String,
    build: BTreeMap<String, String>,
    packages: Vec<PackageRecord>,
    /// SHA-256 of each output file.
    outputs: BTreeMap<String, String>,
    /// The libraries in the initrd and the package of each.
    libraries: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct PackageRecord {
    name: String,
    version: String,
    sha256: String,
}

/// The files an image directory holds, in the order they are built.
pub const KERNEL: &str = "vmlinuz";
/// The initrd.
pub const INITRD: &str = "initrd.img";
/// The kernel command line, without a newline.
pub const CMDLINE: &str = "cmdline";
/// The SEV-SNP firmware.
pub const FIRMWARE: &str = "OVMF.amdsev.fd";
/// The UKI.
pub const UKI: &str = "provenix-worker.efi";
/// The GPT disk with the UKI on its ESP.
pub const DISK: &str = "disk.raw";

fn main() -> ExitCode {
    let done = match Cli::parse() {
        Cli::Build(args) => build(&args),
        Cli::Fetch(packages) => fetch(&packages),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provenix-image: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Fetch every pinned package into the cache.
fn fetch(packages: &Packages) -> Result<()> {
    let fetcher = packages.fetcher();
    let pins = debs::read_lock(&packages.lock)?;
    for p in &pins {
        fetcher.fetch(p)?;
    }
    eprintln!(
        "provenix-image: {} packages, each with its pinned sha256",
        pins.len()
    );
    Ok(())
}

fn build(args: &BuildArgs) -> Result<()> {
    let recipe: Recipe = toml::from_str(&read_text(&args.recipe)?)
        .with_context(|| format!("reading {}", args.recipe.display()))?;
    let lock = &args.packages.lock;
    let pins = debs::read_lock(lock)?;
    let fetcher = args.packages.fetcher();
    let by_name: BTreeMap<&str, &Pin> = pins.iter().map(|p| (p.name.as_str(), p)).collect();
    let pin = |name: &str| {
        by_name
            .get(name)
            .copied()
            .with_context(|| format!("{name} is not in {}", lock.display()))
    };
    let mut files = Files::default();
    for p in &pins {
        let deb = fetcher.fetch(p)?;
        files
            .add_deb(&p.name, &deb)
            .with_context(|| format!("reading {} {}", p.name, p.version))?;
    }
    let from = |package: &str, path: &str| -> Result<Vec<u8>> {
        pin(package)?;
        let (_, owner, data) = files.resolve(path)?;
        if owner != package {
            bail!("{path} comes from {owner}, the recipe says {package}");
        }
        Ok(data.to_vec())
    };

    std::fs::create_dir_all(&args.out)?;
    let out = |name: &str| args.out.join(name);
    let release = recipe
        .kernel
        .package
        .strip_prefix("linux-image-")
        .context("the kernel package is not linux-image-<release>")?;
    let kernel = from(&recipe.kernel.package, &format!("boot/vmlinuz-{release}"))?;
    let stub = from(&recipe.uki.package, &recipe.uki.stub)?;
    let firmware = from(&recipe.firmware.package, &recipe.firmware.path)?;

    // The initrd.
    let sonames = Sonames::index(&files);
    let mut tree = Tree::default();
    for dir in ["dev", "proc", "sys", "run", "nix", "var", "root"] {
        tree.insert(dir, Node::Dir(0o755))?;
    }
    tree.insert("tmp", Node::Dir(0o1777))?;
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        tree.insert(link, Node::Symlink(target.into()))?;
    }
    tree.insert("dev/console", Node::CharDev(5, 1))?;
    tree.program("init", read(&args.init)?, &files, &sonames)?;
    tree.program(
        "usr/bin/provenix-worker",
        read(&args.worker)?,
        &files,
        &sonames,
    )?;
    // Nix runs its post-build hook with no arguments: the worker answers
    // to this name as `provenix-worker hook`.
    let hook = "usr/libexec/provenix/post-build-hook";
    tree.insert(
        hook,
        Node::Symlink(relative(hook, "usr/bin/provenix-worker")),
    )?;
    for p in &recipe.program {
        let data = from(&p.package, &p.path)?;
        let install = p.install.as_deref().unwrap_or(&p.path);
        tree.program(install, data, &files, &sonames)
            .with_context(|| format!("{} from {}", p.path, p.package))?;
        for link in &p.links {
            let target = relative(link, install);
            tree.insert(link, Node::Symlink(target))?;
        }
    }
    let mut module_deps = Vec::new();
    for m in &recipe.kernel.modules {
        let path = format!("usr/lib/modules/{release}/kernel/{m}");
        let data = from(&recipe.kernel.package, &path)?;
        module_deps.push((path.clone(), modules::depends(&path, &data)?));
        tree.file(&path, data, 0o644)?;
    }
    let module_list = modules::list(&module_deps).context("the recipe's kernel modules")?;
    tree.file("etc/provenix/modules", module_list.into_bytes(), 0o644)?;
    tree.file(
        "etc/provenix/commit",
        format!("{}\n", args.commit).into_bytes(),
        0o644,
    )?;
    copy_rootfs(&args.rootfs, &args.rootfs, &mut tree)?;
    let initrd = tree.cpio();

    let cmdline = recipe.kernel.cmdline.clone();
    let os_release = format!(
        "ID=provenix\nNAME=\"Provenix worker\"\nPRETTY_NAME=\"Provenix worker ({})\"\nIMAGE_VERSION={}\n",
        short(&args.commit),
        args.commit
    );
    // The stub passes .cmdline on as the kernel's load options. It is
    // written with a NUL at its end (ukify writes none); PCR 11 measures
    // the section as it is, so the manifest describes exactly this.
    let cmdline_section = format!("{cmdline}\0");
    let uki = uki::build(
        &stub,
        &[
            (".osrel", os_release.as_bytes()),
            (".cmdline", cmdline_section.as_bytes()),
            (".initrd", &initrd),
            (".linux", &kernel),
        ],
    )
    .context("building the UKI")?;

    write(&out(KERNEL), &kernel)?;
    write(&out(INITRD), &initrd)?;
    write(&out(CMDLINE), cmdline.as_bytes())?;
    write(&out(FIRMWARE), &firmware)?;
    write(&out(UKI), &uki)?;
    disk::write(&out(DISK), &uki)?;

    // The reference values, from the files just written.
    let mut description = recipe.manifest;
    description.commit = Some(args.commit.clone());
    if let Some(boot) = &mut description.boot {
        boot.append = Some(cmdline.clone());
    }
    let manifest = provenix_measurements::manifest::describe(&description, &args.out, None)
        .context("computing the reference values")?;
    write(&out("manifest.json"), manifest.to_json().as_bytes())?;

    let mut outputs = BTreeMap::new();
    for name in [
        KERNEL,
        INITRD,
        CMDLINE,
        FIRMWARE,
        UKI,
        DISK,
        "manifest.json",
    ] {
        outputs.insert(name.to_owned(), sha256_hex(&read(&out(name))?));
    }
    let inputs = Inputs {
        commit: args.commit.clone(),
        build: args.records.iter().cloned().collect(),
        packages: pins
            .iter()
            .map(|p| PackageRecord {
                name: p.name.clone(),
                version: p.version.clone(),
                sha256: p.sha256.clone(),
            })
            .collect(),
        outputs,
        libraries: tree.libraries.clone(),
    };
    let mut json = serde_json::to_string_pretty(&inputs)?;
    json.push('\n');
    write(&out("inputs.json"), json.as_bytes())?;
    eprintln!(
        "provenix-image: {} files in the initrd ({} bytes), UKI {} bytes, in {}",
        tree.len(),
        initrd.len(),
        uki.len(),
        args.out.display()
    );
    Ok(())
}

/// Copy image/rootfs into the tree: files 0644 (0755 if executable).
fn copy_rootfs(base: &Path, dir: &Path, tree: &mut Tree) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let rel = path
            .strip_prefix(base)?
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?
            .to_owned();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tree.insert(&rel, Node::Dir(0o755))?;
            copy_rootfs(base, &path, tree)?;
        } else if kind.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let exec = entry.metadata()?.permissions().mode() & 0o111 != 0;
            tree.file(&rel, read(&path)?, if exec { 0o755 } else { 0o644 })?;
        } else {
            bail!(
                "{}: only files and directories belong in the rootfs",
                path.display()
            );
        }
    }
    Ok(())
}

/// The path of `target` relative to the directory of `link`.
fn relative(link: &str, target: &str) -> String {
    let link_dir: Vec<&str> = link
        .split('/')
        .collect::<Vec<_>>()
        .split_last()
        .map_or(vec![], |(_, d)| d.to_vec());
    let target: Vec<&str> = target.split('/').collect();
    let common = link_dir
        .iter()
        .zip(&target)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts = vec![".."; link_dir.len() - common];
    parts.extend(&target[common..]);
    parts.join("/")
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_links() {
        assert_eq!(super::relative("usr/bin/nix-build", "usr/bin/nix"), "nix");
        assert_eq!(
            super::relative("usr/libexec/provenix/hook", "usr/bin/provenix-worker"),
            "../../bin/provenix-worker"
        );
    }
}
