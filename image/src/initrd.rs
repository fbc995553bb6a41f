//! The initrd: a file tree assembled from packages and build outputs, the
//! ELF closure of its programs, and its bytes as a newc cpio archive with
//! every timestamp, owner and inode number fixed.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};

use crate::debs::{Entry, Files};

/// A node of the initrd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// A directory with its permission bits.
    Dir(u32),
    /// A regular file with its permission bits.
    File(Vec<u8>, u32),
    /// A symbolic link.
    Symlink(String),
    /// A character device (major, minor): /dev/console, before devtmpfs.
    CharDev(u32, u32),
}

/// The initrd's tree, by path without the leading `/`.
#[derive(Default)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Where each library came from, for the inputs record.
    pub libraries: BTreeMap<String, String>,
}

impl Tree {
    /// Add `node` at `path`, and its parent directories.
    pub(crate) fn insert(&mut self, path: &str, node: Node) -> Result<()> {
        let path = path.trim_start_matches('/');
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, d)| d)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent.clone(), Node::Dir(0o755));
                }
                Some(Node::Dir(_)) => {}
                Some(_) => {
                    bail!("{parent} is in the initrd, but not as a directory (adding {path})")
                }
            }
        }
        match self.nodes.get(path) {
            Some(old) if *old != node => bail!("{path} is in the initrd twice, differently"),
            _ => {
                self.nodes.insert(path.to_owned(), node);
            }
        }
        Ok(())
    }

    /// A file.
    pub(crate) fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<()> {
        self.insert(path, Node::File(data, mode))
    }

    /// An ELF program at `path` and, from `files`, its interpreter and the
    /// libraries of its closure, found as ld.so finds them: in the
    /// RUNPATH of the object that needs them, then in
    /// /usr/lib/x86_64-linux-gnu by name or by DT_SONAME.
    pub(crate) fn program(
        &mut self,
        path: &str,
        data: Vec<u8>,
        files: &Files,
        sonames: &Sonames,
    ) -> Result<()> {
        let elf = Elf::read(&data).with_context(|| format!("reading {path} as ELF"))?;
        self.file(path, data, 0o755)?;
        if let Some(interp) = &elf.interpreter {
            let (_, pkg, bytes) = files
                .resolve(interp)
                .with_context(|| format!("{path}'s interpreter {interp}"))?;
            self.libraries.insert(interp.clone(), pkg.to_owned());
            self.file(&crate::debs::merged(interp), bytes.to_vec(), 0o755)?;
        }
        let mut queue: Vec<(String, Vec<String>, String)> = elf
            .needed
            .into_iter()
            .map(|n| (n, elf.runpath.clone(), path.to_owned()))
            .collect();
        while let Some((name, runpath, by)) = queue.pop() {
            let (install, pkg, bytes) = sonames.find(&name, &runpath, files).with_context(|| {
                format!("{by} needs {name}: add the package that ships it to image/packages and run image/lock.sh")
            })?;
            if self.nodes.contains_key(&install) {
                continue;
            }
            let lib = Elf::read(bytes).with_context(|| format!("reading {install} as ELF"))?;
            self.libraries.insert(install.clone(), pkg.to_owned());
            self.file(&install, bytes.to_vec(), 0o755)?;
            queue.extend(
                lib.needed
                    .into_iter()
                    .map(|n| (n, lib.runpath.clone(), install.clone())),
            );
        }
        Ok(())
    }

    /// The newc cpio archive of the tree: entries in path order (parents
    /// first), inode numbers in that order, owner root, mtime 0.
    pub(crate) fn cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, node)) in (1u32..).zip(&self.nodes) {
            let (mode, rdev, data): (u32, (u32, u32), &[u8]) = match node {
                Node::Dir(perm) => (0o040_000 | perm, (0, 0), &[]),
                Node::File(data, perm) => (0o100_000 | perm, (0, 0), data),
                Node::Symlink(target) => (0o120_777, (0, 0), target.as_bytes()),
                Node::CharDev(major, minor) => (0o020_600, (*major, *minor), &[]),
            };
            cpio_entry(&mut out, ino, mode, rdev, path, data);
        }
        cpio_entry(&mut out, 0, 0, (0, 0), "TRAILER!!!", &[]);
        out
    }

    /// Every path, for listings.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// Where ld.so looks on Debian (x86-64), and where the image installs
/// every library, under its SONAME.
const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";

/// Shared objects by DT_SONAME: what ldconfig would link, without running
/// it (packages ship some SONAME links only as ldconfig's work).
pub(crate) struct Sonames(BTreeMap<String, String>);

impl Sonames {
    /// Index the shared objects of `files` in the library directories.
    pub(crate) fn index(files: &Files) -> Sonames {
        let mut map = BTreeMap::new();
        for (path, _, entry) in files.paths() {
            let in_lib_dir = path
                .strip_prefix(LIB_DIR)
                .is_some_and(|rest| rest.starts_with('/') && !rest[1..].contains('/'));
            if let (true, Entry::File(data, _)) = (in_lib_dir, entry)
                && let Ok(Some(soname)) = elf_soname(data)
            {
                map.entry(soname).or_insert_with(|| path.to_owned());
            }
        }
        Sonames(map)
    }

    /// The file for the needed `name`, and where it goes in the image: the
    /// first RUNPATH directory that has it, else the library directory
    /// (under its own name, or the file whose DT_SONAME it is).
    fn find<'a>(
        &self,
        name: &str,
        runpath: &[String],
        files: &'a Files,
    ) -> Result<(String, &'a str, &'a [u8])> {
        for dir in runpath {
            let candidate = crate::debs::merged(&format!("{dir}/{name}"));
            if let Ok((_, pkg, bytes)) = files.resolve(&candidate) {
                return Ok((candidate, pkg, bytes));
            }
        }
        let install = format!("{LIB_DIR}/{name}");
        let found = match files.resolve(&install) {
            Ok(found) => found,
            Err(_) => match self.0.get(name) {
                Some(path) => files.resolve(path)?,
                None => bail!("no package of packages.lock ships {name}"),
            },
        };
        Ok((install, found.1, found.2))
    }
}

/// What the dynamic linker reads of an ELF64 file.
struct Elf {
    /// PT_INTERP.
    interpreter: Option<String>,
    /// DT_NEEDED, in order.
    needed: Vec<String>,
    /// DT_RUNPATH, else DT_RPATH, split at `:` (absolute directories only:
    /// a relative or `$ORIGIN` entry is refused rather than guessed).
    runpath: Vec<String>,
}

impl Elf {
    fn read(data: &[u8]) -> Result<Elf> {
        let header = elf::FileHeader64::<object::Endianness>::parse(data)?;
        let endian = header.endian()?;
        let mut interpreter = None;
        for ph in header.program_headers(endian, data)? {
            if let Some(bytes) = ph.interpreter(endian, data)? {
                interpreter = Some(String::from_utf8_lossy(bytes).into_owned());
            }
        }
        let runpath = match dynamic_strings(data, elf::DT_RUNPATH)?.pop() {
            Some(r) => Some(r),
            None => dynamic_strings(data, elf::DT_RPATH)?.pop(),
        };
        let runpath: Vec<String> = runpath
            .iter()
            .flat_map(|r| r.split(':'))
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(d) = runpath.iter().find(|d| !d.starts_with('/')) {
            bail!("RUNPATH entry {d:?} is not an absolute directory");
        }
        Ok(Elf {
            interpreter,
            needed: dynamic_strings(data, elf::DT_NEEDED)?,
            runpath,
        })
    }
}

fn elf_soname(data: &[u8]) -> Result<Option<String>> {
    Ok(dynamic_strings(data, elf::DT_SONAME)?.into_iter().next())
}

fn dynamic_strings(data: &[u8], tag: u32) -> Result<Vec<String>> {
    let header = elf::FileHeader64::<object::Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let Some((dynamic, strings_index)) = sections.dynamic(endian, data)? else {
        return Ok(Vec::new());
    };
    let strings = sections.strings(endian, data, strings_index)?;
    let mut out = Vec::new();
    for d in dynamic {
        if d.tag32(endian) == Some(tag) {
            let s = d.string(endian, strings)?;
            out.push(String::from_utf8_lossy(s).into_owned());
        }
    }
    Ok(out)
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, mode: u32, rdev: (u32, u32), name: &str, data: &[u8]) {
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        u32::try_from(data.len()).unwrap_or(u32::MAX),
        0,
        0,
        rdev.0,
        rdev.1,
        u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_conflicts_are_refused() {
        let mut t = Tree::default();
        t.file("usr/bin/x", b"x".to_vec(), 0o755).unwrap();
        t.insert("usr-y", Node::Symlink("usr".into())).unwrap();
        assert!(t.file("usr/bin/x", b"y".to_vec(), 0o755).is_err());
        assert!(t.file("usr/bin/x/z", b"z".to_vec(), 0o644).is_err());
        let cpio = t.cpio();
        let text = String::from_utf8_lossy(&cpio);
        let usr = text.find("usr\0").unwrap();
        let bin = text.find("usr/bin\0").unwrap();
        let x = text.find("usr/bin/x\0").unwrap();
        assert!(usr < bin && bin < x);
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!"));
        assert_eq!(cpio.len() % 4, 0);
    }
}
