//! Debian packages pinned by `packages.lock`: fetched once into a cache,
//! checked against their sha256, and read as file trees.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lzma_rust2::XzReader;

use crate::sha256_hex;

/// One pinned package: a line of `packages.lock`.
#[derive(Clone, Debug)]
pub(crate) struct Pin {
    /// The package name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of the .deb, lower-case hex.
    pub sha256: String,
    /// Its path in the archive's pool.
    pub pool_path: String,
}

/// Read `packages.lock`: `name version sha256 pool-path` per line, `#`
/// comments.
pub(crate) fn read_lock(path: &Path) -> Result<Vec<Pin>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut pins = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, version, sha256, pool_path] = fields[..] else {
            bail!(
                "{}:{}: expected `name version sha256 pool-path`",
                path.display(),
                n + 1
            );
        };
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{}:{}: {sha256:?} is not a sha256", path.display(), n + 1);
        }
        pins.push(Pin {
            name: name.into(),
            version: version.into(),
            sha256: sha256.to_ascii_lowercase(),
            pool_path: pool_path.into(),
        });
    }
    Ok(pins)
}

/// Where .debs come from: files given by their sha256 (Nix's fixed-output
/// paths), else a cache directory (files named by their sha256) filled
/// from the archive on a miss.
pub(crate) struct Fetcher {
    /// Packages given as files, by sha256.
    pub given: BTreeMap<String, PathBuf>,
    /// The cache, `<sha256>.deb`; none where nothing may be downloaded.
    pub cache: Option<PathBuf>,
    /// The archive, e.g. `http://deb.debian.org/debian`.
    pub mirror: String,
}

impl Fetcher {
    /// The path of `pin`'s .deb: given, or in the cache, fetched if it is
    /// not there. Its sha256 is checked either way; a package the archive
    /// no longer has is an error that says how to supply it.
    pub(crate) fn fetch(&self, pin: &Pin) -> Result<PathBuf> {
        if let Some(path) = self.given.get(&pin.sha256) {
            let have = sha256_hex(
                &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            );
            if have != pin.sha256 {
                bail!(
                    "{} has sha256 {have}, packages.lock pins {} for {} {}",
                    path.display(),
                    pin.sha256,
                    pin.name,
                    pin.version
                );
            }
            return Ok(path.clone());
        }
        let Some(cache) = &self.cache else {
            bail!(
                "{} {} (sha256 {}) is neither given (--deb) nor to be fetched (no --debs cache)",
                pin.name,
                pin.version,
                pin.sha256
            );
        };
        let path = cache.join(format!("{}.deb", pin.sha256));
        if path.exists() {
            let have = sha256_hex(&std::fs::read(&path)?);
            if have == pin.sha256 {
                return Ok(path);
            }
            std::fs::remove_file(&path)?;
        }
        std::fs::create_dir_all(cache)?;
        let url = format!("{}/{}", self.mirror.trim_end_matches('/'), pin.pool_path);
        let file = pin.pool_path.rsplit('/').next().unwrap_or(&pin.pool_path);
        let supply = format!(
            "supply {file} (sha256 {}) as {path}: from a Debian mirror or snapshot.debian.org \
             that still has {} {}, or set PROVENIX_DEBIAN_MIRROR to one; nix/image.nix takes \
             the same file with `nix-store --add-fixed sha256 {path}`",
            pin.sha256,
            pin.name,
            pin.version,
            path = path.display(),
        );
        let mut body = Vec::new();
        match ureq::get(&url).call() {
            Ok(response) => {
                response
                    .into_body()
                    .into_reader()
                    .take(1 << 30)
                    .read_to_end(&mut body)
                    .with_context(|| format!("downloading {url}"))?;
            }
            Err(e) => bail!(
                "cannot download {} {} from {url}: {e}\n{supply}",
                pin.name,
                pin.version
            ),
        }
        let have = sha256_hex(&body);
        if have != pin.sha256 {
            bail!(
                "{url} has sha256 {have}, packages.lock pins {} for {} {}\n{supply}",
                pin.sha256,
                pin.name,
                pin.version
            );
        }
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &body)?;
        std::fs::rename(&partial, &path)?;
        Ok(path)
    }
}

/// The most memory the XZ decoder may take for its dictionary (KiB):
/// `xz -9` needs 64 MiB, dpkg-deb's default is 8 MiB.
const XZ_MEMORY_KIB: u32 = 128 * 1024;

/// A file-system entry of a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A directory.
    Dir,
    /// A regular file and whether it is executable.
    File(Vec<u8>, bool),
    /// A symbolic link's target, as written.
    Symlink(String),
}

/// The files of a set of packages, by path without the leading `/`, with
/// the usr merge applied (`lib/x` is `usr/lib/x`), as Debian installs them.
#[derive(Default)]
pub(crate) struct Files {
    entries: BTreeMap<String, (String, Entry)>,
}

/// `/lib/...` and friends are under `/usr` on a merged system.
pub(crate) fn merged(path: &str) -> String {
    let path = path.trim_start_matches("./").trim_start_matches('/');
    for top in ["bin", "sbin", "lib", "lib64"] {
        if path == top {
            return format!("usr/{top}");
        }
        if let Some(rest) = path.strip_prefix(top).and_then(|r| r.strip_prefix('/')) {
            return format!("usr/{top}/{rest}");
        }
    }
    path.trim_end_matches('/').to_owned()
}

impl Files {
    /// Add the files of the .deb at `deb`: an ar archive whose first
    /// member is `debian-binary` (format 2.x) and whose `data.tar.xz`
    /// holds the files (deb(5)).
    pub(crate) fn add_deb(&mut self, package: &str, deb: &Path) -> Result<()> {
        let what = || format!("{package} ({})", deb.display());
        let file =
            std::fs::File::open(deb).with_context(|| format!("opening {}", deb.display()))?;
        let mut archive = ar::Archive::new(BufReader::new(file));
        let mut first = true;
        while let Some(member) = archive.next_entry() {
            let mut member = member.with_context(|| format!("{}: not an ar archive", what()))?;
            let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
            if first {
                let mut version = Vec::new();
                (&mut member).take(16).read_to_end(&mut version)?;
                if name != "debian-binary" || !version.starts_with(b"2.") {
                    bail!("{}: not a Debian package of format 2.x", what());
                }
                first = false;
                continue;
            }
            return match name.as_str() {
                "data.tar.xz" => {
                    let xz = XzReader::new_mem_limit(BufReader::new(member), false, XZ_MEMORY_KIB);
                    self.add_tar(package, xz)
                }
                "data.tar" => self.add_tar(package, member),
                n if n.starts_with("data.tar") => {
                    bail!("{}: {n}: only data.tar.xz and data.tar are read", what())
                }
                _ => continue,
            }
            .with_context(|| format!("{}: reading {name}", what()));
        }
        bail!("{}: no data.tar member", what())
    }

    /// Add the entries of a package's data.tar.
    fn add_tar(&mut self, package: &str, data: impl Read) -> Result<()> {
        let mut archive = tar::Archive::new(data);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = merged(&entry.path()?.to_string_lossy());
            if path.is_empty() {
                continue;
            }
            let kind = entry.header().entry_type();
            let value = if kind.is_dir() {
                Entry::Dir
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()?
                    .with_context(|| format!("{package}: symlink {path} has no target"))?;
                Entry::Symlink(target.to_string_lossy().into_owned())
            } else if kind.is_hard_link() {
                let target = entry
                    .link_name()?
                    .with_context(|| format!("{package}: hard link {path} has no target"))?;
                let target = merged(&target.to_string_lossy());
                match self.entries.get(&target) {
                    Some((_, e)) => e.clone(),
                    None => bail!("{package}: hard link {path} to {target}, which comes later"),
                }
            } else if kind.is_file() {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                Entry::File(data, entry.header().mode()? & 0o111 != 0)
            } else {
                continue;
            };
            self.entries.insert(path, (package.to_owned(), value));
        }
        Ok(())
    }

    /// Every path, in order.
    pub(crate) fn paths(&self) -> impl Iterator<Item = (&str, &str, &Entry)> {
        self.entries
            .iter()
            .map(|(path, (pkg, e))| (path.as_str(), pkg.as_str(), e))
    }

    /// Follow symbolic links from `path` to a regular file: its path, its
    /// package and its bytes.
    pub(crate) fn resolve<'a>(&'a self, path: &str) -> Result<(String, &'a str, &'a [u8])> {
        let mut path = merged(path);
        for _ in 0..40 {
            match self.entries.get(&path) {
                Some((pkg, Entry::File(data, _))) => return Ok((path, pkg, data)),
                Some((_, Entry::Symlink(target))) => {
                    path = if target.starts_with('/') {
                        merged(target)
                    } else {
                        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                        normalize(&format!("{dir}/{target}"))
                    };
                }
                Some((_, Entry::Dir)) => bail!("{path} is a directory"),
                None => bail!("no package of packages.lock has {path}"),
            }
        }
        bail!("{path}: too many symbolic links")
    }
}

/// `a/b/../c` is `a/c`; the usr merge applied.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    merged(&parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_that_cannot_be_fetched_is_named_with_how_to_supply_it() {
        let cache =
            std::env::temp_dir().join(format!("provenix-image-debs-{}", std::process::id()));
        let pin = Pin {
            name: "nix-bin".into(),
            version: "2.8.0-1.1+b1".into(),
            sha256: "ab".repeat(32),
            pool_path: "pool/main/n/nix/nix-bin_2.8.0-1.1+b1_amd64.deb".into(),
        };
        // A cached file with another hash is not taken for the package.
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join(format!("{}.deb", pin.sha256)), b"not it").unwrap();
        let fetcher = Fetcher {
            given: BTreeMap::new(),
            cache: Some(cache.clone()),
            // Nothing listens on the discard port of the loopback.
            mirror: "http://127.0.0.1:9".into(),
        };
        let e = format!("{:#}", fetcher.fetch(&pin).unwrap_err());
        let _ = std::fs::remove_dir_all(&cache);
        for part in [
            "nix-bin 2.8.0-1.1+b1",
            &pin.sha256,
            "supply nix-bin_2.8.0-1.1+b1_amd64.deb",
            "PROVENIX_DEBIAN_MIRROR",
        ] {
            assert!(e.contains(part), "{part:?} not in {e}");
        }
    }

    /// A .deb of `members` (name, bytes), written with the ar crate.
    fn deb(dir: &Path, members: &[(&str, Vec<u8>)]) -> PathBuf {
        let path = dir.join(format!("{}.deb", members.len()));
        let mut builder = ar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, data) in members {
            let header = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
            builder.append(&header, &data[..]).unwrap();
        }
        path
    }

    /// A data.tar with a directory, a file, a symbolic link and a hard link.
    fn data_tar() -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        tar.append_data(&mut header, "./lib/", &[][..]).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(5);
        tar.append_data(&mut header, "./lib/tool", &b"hello"[..])
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, "./usr/bin/tool", "../../lib/tool")
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Link);
        header.set_size(0);
        tar.append_link(&mut header, "./usr/bin/same", "./lib/tool")
            .unwrap();
        tar.into_inner().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut child = std::process::Command::new("xz")
            .args(["-c", "-6"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("xz (xz-utils) compresses the test's data.tar");
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn debs_are_read_in_process() {
        let dir = std::env::temp_dir().join(format!("provenix-image-deb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = |data_name: &str, data: Vec<u8>| {
            let path = deb(
                &dir,
                &[
                    ("debian-binary", b"2.0\n".to_vec()),
                    ("control.tar.xz", xz(b"not read")),
                    (data_name, data),
                ],
            );
            let mut files = Files::default();
            files.add_deb("tool", &path).unwrap();
            let (path, package, data) = files.resolve("usr/bin/tool").unwrap();
            assert_eq!(
                (path.as_str(), package, data),
                ("usr/lib/tool", "tool", &b"hello"[..])
            );
            assert_eq!(files.resolve("bin/same").unwrap().2, b"hello");
        };
        ok("data.tar.xz", xz(&data_tar()));
        ok("data.tar", data_tar());

        // What is not a Debian package, or not one this reads, is named.
        let bad = |members: &[(&str, Vec<u8>)], expect: &str| {
            let path = deb(&dir, members);
            let e = format!("{:#}", Files::default().add_deb("tool", &path).unwrap_err());
            assert!(
                e.contains(expect) && e.contains("tool"),
                "{expect:?} not in {e}"
            );
        };
        bad(&[("control.tar.xz", vec![])], "not a Debian package");
        bad(
            &[("debian-binary", b"3.0\n".to_vec())],
            "not a Debian package",
        );
        bad(
            &[
                ("debian-binary", b"2.0\n".to_vec()),
                ("data.tar.zst", vec![1]),
            ],
            "only data.tar.xz and data.tar",
        );
        bad(
            &[("debian-binary", b"2.0\n".to_vec())],
            "no data.tar member",
        );
        bad(
            &[
                ("debian-binary", b"2.0\n".to_vec()),
                ("data.tar.xz", b"not xz".to_vec()),
            ],
            "reading data.tar.xz",
        );
        std::fs::write(dir.join("junk.deb"), b"!<arch>\nshort").unwrap();
        let e = Files::default()
            .add_deb("tool", &dir.join("junk.deb"))
            .unwrap_err();
        assert!(format!("{e:#}").contains("tool"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn given_packages_are_checked_and_nothing_else_is_fetched() {
        let dir = std::env::temp_dir().join(format!("provenix-image-given-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.deb");
        std::fs::write(&file, b"a package").unwrap();
        let pin = |sha256: String| Pin {
            name: "x".into(),
            version: "1".into(),
            sha256,
            pool_path: "pool/main/x/x/x_1_amd64.deb".into(),
        };
        let right = pin(sha256_hex(b"a package"));
        let wrong = pin("cd".repeat(32));
        let fetcher = Fetcher {
            given: [
                (right.sha256.clone(), file.clone()),
                (wrong.sha256.clone(), file.clone()),
            ]
            .into(),
            cache: None,
            mirror: "http://127.0.0.1:9".into(),
        };
        assert_eq!(fetcher.fetch(&right).unwrap(), file);
        let e = format!("{:#}", fetcher.fetch(&wrong).unwrap_err());
        assert!(
            e.contains(&format!("packages.lock pins {}", wrong.sha256)),
            "{e}"
        );
        let absent = pin("ef".repeat(32));
        let e = format!("{:#}", fetcher.fetch(&absent).unwrap_err());
        assert!(
            e.contains("neither given") && e.contains(&absent.sha256),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn usr_merge_and_normalize() {
        assert_eq!(
            merged("./lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            merged("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(merged("./usr/bin/nix"), "usr/bin/nix");
        assert_eq!(merged("./library/x"), "library/x");
        assert_eq!(merged("./"), "");
        assert_eq!(
            normalize("usr/lib64/../lib/x86_64-linux-gnu/ld.so"),
            "usr/lib/x86_64-linux-gnu/ld.so"
        );
    }
}
