//! What the Linux EFI stub measures into PCR 9, and the load options a
//! firmware hands it.
//!
//! The stub (drivers/firmware/efi/libstub, Linux 5.17+ for the initrd,
//! 6.1+ for the load options) logs two EV_EVENT_TAG events, each a
//! `TCG_PCClientTaggedEvent` (PFP 10.4.2.1: taggedEventID u32,
//! taggedEventDataSize u32, data) whose data is a NUL-terminated ASCII
//! description:
//!
//! - `efi_convert_cmdline` measures `LoadOptions`, all `LoadOptionsSize`
//!   bytes as the firmware or boot loader set them (UTF-16LE, whatever they
//!   hold), before it converts them to the kernel's command line; nothing is
//!   logged when the size is 0;
//! - `efi_load_initrd` measures the initrd it got through the
//!   LINUX_EFI_INITRD_MEDIA_GUID LoadFile2 protocol: exactly the bytes
//!   loaded, with no padding. (An initrd loaded from the command line,
//!   `initrd=` on the ESP, is not measured.)
//!
//! Load options first, then the initrd. Checked against a real QEMU + OVMF
//! boot of Debian's 6.1 cloud kernel (tests/tpm_measure.rs).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use super::Error;

/// The stub's tag for the initrd event (`INITRD_EVENT_TAG_ID`, efistub.h).
pub const INITRD_EVENT_TAG_ID: u32 = 0x8F3B_22EC;
/// The stub's tag for the load-options event (`LOAD_OPTIONS_EVENT_TAG_ID`).
pub const LOAD_OPTIONS_EVENT_TAG_ID: u32 = 0x8F3B_22ED;
/// The PCR both events go to.
pub const PCR: u32 = 9;

/// The event data of the initrd event: the tagged event with "Linux
/// initrd" and its NUL.
pub fn initrd_event_data() -> Vec<u8> {
    tagged_event(INITRD_EVENT_TAG_ID, b"Linux initrd\0")
}

/// The event data of the load-options event.
pub fn load_options_event_data() -> Vec<u8> {
    tagged_event(LOAD_OPTIONS_EVENT_TAG_ID, b"LOADED_IMAGE::LoadOptions\0")
}

fn tagged_event(id: u32, data: &[u8]) -> Vec<u8> {
    let mut out = id.to_le_bytes().to_vec();
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The LoadOptions OVMF gives a kernel booted directly by QEMU
/// (`QemuLoadKernelImage`, OvmfPkg X86QemuLoadImageLib): the command line
/// QEMU passed, then " initrd=initrd" when QEMU has an initrd, each byte
/// widened to one UTF-16 code unit (`UnicodeSPrintAsciiFormat` with `%a`),
/// then a UTF-16 NUL. `None` when both are empty: OVMF then sets no load
/// options and the stub logs no event.
///
/// The command line must not hold a NUL: QEMU passes it as a C string, so
/// whatever followed would be neither passed nor measured.
pub fn qemu_load_options(cmdline: &[u8], initrd: bool) -> Result<Option<Vec<u8>>, Error> {
    if let Some(at) = cmdline.iter().position(|&b| b == 0) {
        return Err(Error::CmdlineNul { at });
    }
    let suffix: &[u8] = if initrd { b" initrd=initrd" } else { b"" };
    if cmdline.is_empty() && suffix.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(
        cmdline
            .len()
            .saturating_add(suffix.len())
            .saturating_add(1)
            .saturating_mul(2),
    );
    for &b in cmdline.iter().chain(suffix) {
        out.extend_from_slice(&u16::from(b).to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    Ok(Some(out))
}
