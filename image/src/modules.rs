//! The kernel modules the init loads, in the recipe's order: each module's
//! `depends` (its .modinfo section) must name only modules listed before
//! it, so the init can load them in one pass and skip those whose device
//! is absent together with the modules that depend on them.

use std::io::Read;

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSection};

/// A module's name as the kernel knows it: the file name without `.ko*`,
/// with `-` read as `_`.
pub(crate) fn name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The `depends=` of a module file (`.ko` or `.ko.xz`).
pub(crate) fn depends(path: &str, data: &[u8]) -> Result<Vec<String>> {
    let mut elf = Vec::new();
    let data = if path.ends_with(".xz") {
        lzma_rust2::XzReader::new(data, false)
            .read_to_end(&mut elf)
            .with_context(|| format!("decompressing {path}"))?;
        &elf[..]
    } else {
        data
    };
    let file = object::File::parse(data).with_context(|| format!("{path} is not an ELF file"))?;
    let modinfo = file
        .section_by_name(".modinfo")
        .with_context(|| format!("{path} has no .modinfo: not a kernel module"))?
        .data()?;
    let mut depends = Vec::new();
    for list in modinfo
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
    {
        let list = String::from_utf8_lossy(list);
        depends.extend(
            list.split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_")),
        );
    }
    Ok(depends)
}

/// The init's module list: `/PATH DEP,DEP` per line, in load order. A
/// module that depends on one not listed before it is an error naming both.
pub(crate) fn list(modules: &[(String, Vec<String>)]) -> Result<String> {
    let mut out = String::new();
    let mut loaded: Vec<String> = Vec::new();
    for (path, deps) in modules {
        for d in deps {
            if !loaded.contains(d) {
                bail!("{path} depends on {d}, which the recipe does not list before it");
            }
        }
        loaded.push(name(path));
        out.push_str(&format!("/{path} {}\n", deps.join(",")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            name("kernel/drivers/pci/controller/pci-hyperv-intf.ko.xz"),
            "pci_hyperv_intf"
        );
        assert_eq!(name("virtio_net.ko"), "virtio_net");
    }

    #[test]
    fn order_is_checked() {
        let m = |p: &str, d: &[&str]| {
            (
                p.to_owned(),
                d.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
        };
        let ok = list(&[
            m("a/hv_vmbus.ko.xz", &[]),
            m("a/hv_netvsc.ko.xz", &["hv_vmbus"]),
        ])
        .unwrap();
        assert_eq!(ok, "/a/hv_vmbus.ko.xz \n/a/hv_netvsc.ko.xz hv_vmbus\n");
        let e = list(&[
            m("a/hv_netvsc.ko.xz", &["hv_vmbus"]),
            m("a/hv_vmbus.ko.xz", &[]),
        ])
        .unwrap_err();
        assert!(
            format!("{e}").contains("a/hv_netvsc.ko.xz depends on hv_vmbus"),
            "{e}"
        );
    }

    #[test]
    fn what_is_not_a_module_is_named() {
        let e = depends("x.ko", b"not elf").unwrap_err();
        assert!(format!("{e:#}").contains("x.ko is not an ELF file"));
        let e = depends("x.ko.xz", b"not xz").unwrap_err();
        assert!(format!("{e:#}").contains("decompressing x.ko.xz"));
    }
}
