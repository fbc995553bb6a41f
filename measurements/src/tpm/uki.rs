//! What systemd-stub measures into PCR 11 when it boots a unified kernel
//! image (UKI): each of its PE sections that systemd knows, in systemd's
//! order (`unified_sections[]`, src/fundamental/uki.h), not in file order,
//! as two EV_IPL events whose data is the section name in UTF-16 with its
//! NUL:
//!
//! 1. the digest of the section name in ASCII with its NUL (".linux\0");
//! 2. the digest of the section as loaded: `VirtualSize` bytes, zero past
//!    `SizeOfRawData`.
//!
//! `.pcrsig` (signatures over the expected PCR 11) is not measured. Checked
//! against the Azure UKI boot in ../shared/vectors/tpm (the name events);
//! the data events follow from systemd-stub's `measure_sections`.
//!
//! The sections measured depend on the stub's systemd version, read from
//! its `.sdmagic` section. Not modelled: multi-profile UKIs (`.profile`, systemd 257+), the
//! device-tree and hardware-ID selections (`.dtbauto`, `.hwids`), add-ons,
//! and what the stub passes on to the kernel (the kernel's own PCR 9
//! events then depend on the stub version and its add-ons).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use super::Error;
use super::pe::PeImage;

/// The PCR systemd-stub measures sections into (TPM2_PCR_KERNEL_BOOT).
pub const PCR: u32 = 11;

/// The sections systemd-stub measures, in the order it measures them
/// (systemd 256; later versions add sections refused below). Older stubs
/// measure fewer (see `measured_by`).
pub const MEASURED_SECTIONS: [&str; 10] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
    ".pcrpkey",
];

/// Whether a stub of systemd `version` measures `section`: `.uname` and
/// `.sbat` joined the measured sections in 254 and `.ucode` in 256 (a boot
/// of Debian's systemd-stub 252.39 measures neither `.sbat` nor `.uname`:
/// worker/tests/image_boot.rs). An unknown version is taken as 256.
fn measured_by(version: Option<u32>, section: &str) -> bool {
    let since = match section {
        ".uname" | ".sbat" => 254,
        ".ucode" => 256,
        _ => 0,
    };
    version.is_none_or(|v| v >= since)
}

/// The systemd version of the stub, from its `.sdmagic` section
/// (`#### LoaderInfo: systemd-stub 252.39-1~deb12u2 ####`).
pub fn stub_version(image: &PeImage<'_>) -> Option<u32> {
    let section = image.sections().iter().find(|s| s.name() == ".sdmagic")?;
    let data = image.section_in_memory(section)?;
    let text = String::from_utf8_lossy(&data);
    let rest = text.split("systemd-stub ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The kernel in the `.linux` section, as loaded: systemd-stub hands it
/// to the firmware's LoadImage, which measures it into PCR 4 after the
/// UKI (seen with systemd-stub 252.39 and Linux 6.12).
pub fn embedded_kernel(image: &PeImage<'_>) -> Result<Vec<u8>, Error> {
    let section = image
        .sections()
        .iter()
        .find(|s| s.name() == ".linux")
        .ok_or_else(|| Error::Uki {
            reason: "it has no .linux section; is it a UKI?".into(),
        })?;
    image.section_in_memory(section).ok_or_else(|| Error::Uki {
        reason: "section .linux lies outside the file".into(),
    })
}

/// Sections that change what systemd-stub measures in ways not modelled.
const UNSUPPORTED_SECTIONS: [&str; 4] = [".profile", ".dtbauto", ".hwids", ".efifw"];

/// One measured section: its name and its bytes as loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UkiSection {
    /// The section name, e.g. ".linux".
    pub name: &'static str,
    /// `VirtualSize` bytes of the section as loaded.
    pub data: Vec<u8>,
}

impl UkiSection {
    /// What the first event hashes: the name in ASCII with its NUL.
    pub fn name_bytes(&self) -> Vec<u8> {
        let mut v = self.name.as_bytes().to_vec();
        v.push(0);
        v
    }

    /// The event data of both events: the name in UTF-16LE with its NUL.
    pub fn event_data(&self) -> Vec<u8> {
        self.name
            .encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }
}

/// The sections of `image` systemd-stub measures, in its order.
pub fn measured_sections(image: &PeImage<'_>) -> Result<Vec<UkiSection>, Error> {
    let names: Vec<String> = image.sections().iter().map(|s| s.name()).collect();
    if let Some(bad) = names
        .iter()
        .find(|n| UNSUPPORTED_SECTIONS.contains(&n.as_str()))
    {
        return Err(Error::Uki {
            reason: format!("it has a {bad} section, which is not modelled"),
        });
    }
    if !names.iter().any(|n| n == ".linux") {
        return Err(Error::Uki {
            reason: "it has no .linux section; is it a UKI?".into(),
        });
    }
    let version = stub_version(image);
    let mut out = Vec::new();
    for name in MEASURED_SECTIONS
        .into_iter()
        .filter(|n| measured_by(version, n))
    {
        let mut found = image.sections().iter().filter(|s| s.name() == name);
        let Some(section) = found.next() else {
            continue;
        };
        if found.next().is_some() {
            return Err(Error::Uki {
                reason: format!("it has two {name} sections"),
            });
        }
        if section.virtual_size == 0 {
            continue;
        }
        let data = image.section_in_memory(section).ok_or_else(|| Error::Uki {
            reason: format!("section {name} lies outside the file"),
        })?;
        out.push(UkiSection { name, data });
    }
    Ok(out)
}
