//! What a QEMU direct kernel boot (`-kernel -initrd -append`) hands OVMF,
//! and so what OVMF measures.
//!
//! QEMU does not pass the kernel file unchanged. As a boot loader would, it
//! fills in the x86 boot protocol's setup header (Linux
//! `Documentation/arch/x86/boot.rst`) in the first sectors, then passes
//! them through fw_cfg as the "setup" blob; OVMF's QemuKernelLoaderFsDxe
//! joins setup and kernel blobs into the file it loads with LoadImage, and
//! that is what the firmware's Authenticode digest in PCR 4 covers. So
//! the digest depends on the command line (`vga=`), the initrd's size and
//! where QEMU places it, which depends on the guest's memory below 4 GiB.
//! (Under SEV QEMU leaves the header alone, so that the kernel hash matches
//! the file; this module is for the TPM path without SEV.)
//!
//! The fields and values follow QEMU's `x86_load_linux` (hw/i386/x86.c) in
//! QEMU 7.2, Debian 12's version, for the "high and recent" kernels every
//! EFI-stub kernel is (boot protocol 2.02 or later, LOADED_HIGH); later
//! QEMU versions patch the same fields. Checked against a real boot
//! (tests/tpm_measure.rs, the golden log).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use super::Error;

/// The setup header's magic "HdrS" at offset 0x202 (boot.rst).
const HDRS_MAGIC: u32 = 0x5372_6448;
/// loadflags bit 0: LOADED_HIGH, the protected-mode code loads at 1 MiB.
const LOADED_HIGH: u8 = 0x01;
/// loadflags bit 7: CAN_USE_HEAP, set by QEMU with heap_end_ptr.
const CAN_USE_HEAP: u8 = 0x80;
/// xloadflags bit 1: XLF_CAN_BE_LOADED_ABOVE_4G.
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 0x02;
/// QEMU's loader type: "B" reserved for QEMU, revision 0 (boot.rst,
/// type_of_loader).
const QEMU_LOADER_TYPE: u8 = 0xB0;
/// Where QEMU puts the setup code and the command line of a high kernel.
const REAL_ADDR: u32 = 0x1_0000;
const CMDLINE_ADDR: u32 = 0x2_0000;
/// QEMU reads and patches at most this many bytes of the header
/// (`uint8_t header[8192]`).
const HEADER_BUFFER: usize = 8192;
/// ACPI tables QEMU reserves at the top of low memory for the pc and q35
/// machine types since 2.1 (`pcmc->acpi_data_size = 0x20000 + 0x8000`).
const ACPI_DATA_SIZE: u64 = 0x2_8000;

/// A QEMU x86 machine type, which decides how RAM is split around the
/// 32-bit PCI hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    /// `-machine q35`.
    Q35,
    /// `-machine pc` (i440FX).
    Pc,
}

impl Machine {
    /// Its name on QEMU's command line.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Q35 => "q35",
            Machine::Pc => "pc",
        }
    }

    /// The machine type named `name` (`q35`, `pc`).
    pub fn from_name(name: &str) -> Option<Machine> {
        [Machine::Q35, Machine::Pc]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// RAM below 4 GiB for `memory` bytes of guest RAM (`pc_q35_init` and
    /// `pc_init1`; without `max-ram-below-4g`, with gigabyte alignment).
    pub fn below_4g(self, memory: u64) -> u64 {
        let lowmem = match self {
            Machine::Q35 if memory >= 0xb000_0000 => 0x8000_0000,
            Machine::Q35 => 0xb000_0000,
            Machine::Pc if memory >= 0xe000_0000 => 0xc000_0000,
            Machine::Pc => 0xe000_0000,
        };
        memory.min(lowmem)
    }
}

/// The shape of a QEMU VM that decides how QEMU patches the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuVm {
    /// The machine type.
    pub machine: Machine,
    /// Guest RAM in MiB (`-m`).
    pub memory_mib: u64,
}

/// The kernel as QEMU hands it to the firmware: `kernel` with the setup
/// header filled in for `cmdline` and an initrd of `initrd_size` bytes.
pub fn patched_kernel(
    kernel: &[u8],
    cmdline: &[u8],
    initrd_size: Option<u64>,
    vm: QemuVm,
) -> Result<Vec<u8>, Error> {
    let bad = |reason: String| Error::QemuKernel { reason };
    // QEMU reads the first 8 KiB, patches them, and copies back the part
    // that belongs to the setup.
    let mut k = kernel
        .get(..kernel.len().min(HEADER_BUFFER))
        .unwrap_or_default()
        .to_vec();
    if read_u32(&k, 0x202) != Some(HDRS_MAGIC) {
        return Err(bad(
            "no x86 boot protocol header (\"HdrS\" at 0x202); QEMU would try multiboot or ELF"
                .into(),
        ));
    }
    let protocol = read_u16(&k, 0x206).unwrap_or(0);
    let loadflags = k.get(0x211).copied().unwrap_or(0);
    if protocol < 0x202 || loadflags & LOADED_HIGH == 0 {
        return Err(bad(format!(
            "boot protocol {protocol:#x} with loadflags {loadflags:#x}: only protocol 2.02+ \
             kernels loaded high (every EFI-stub kernel) are modelled"
        )));
    }
    let setup_sects = match k.get(0x1f1).copied().unwrap_or(0) {
        0 => 4,
        n => n,
    };
    let setup_size = usize::from(setup_sects)
        .saturating_add(1)
        .saturating_mul(512);
    if setup_size > kernel.len() {
        return Err(bad(format!(
            "setup of {setup_size} bytes is longer than the {}-byte file (QEMU: invalid kernel header)",
            kernel.len()
        )));
    }

    // The highest address an initrd may end at.
    let xloadflags = read_u16(&k, 0x236).unwrap_or(0);
    let mut initrd_max: u64 = if protocol >= 0x20c && xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0 {
        u64::from(u32::MAX)
    } else if protocol >= 0x203 {
        u64::from(read_u32(&k, 0x22c).unwrap_or(0))
    } else {
        0x37ff_ffff
    };
    let memory = vm
        .memory_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| bad(format!("{} MiB of memory is out of range", vm.memory_mib)))?;
    let top = vm
        .machine
        .below_4g(memory)
        .checked_sub(ACPI_DATA_SIZE)
        .ok_or_else(|| bad(format!("{} MiB of memory is too small", vm.memory_mib)))?;
    if initrd_max >= top {
        initrd_max = top.saturating_sub(1);
    }

    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = k.get_mut(at..at.saturating_add(bytes.len())) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0x228, &CMDLINE_ADDR.to_le_bytes()); // cmd_line_ptr
    if let Some(mode) = vga_mode(cmdline)? {
        put(0x1fa, &mode.to_le_bytes()); // vid_mode
    }
    put(0x210, &[QEMU_LOADER_TYPE]); // type_of_loader
    put(0x211, &[loadflags | CAN_USE_HEAP]);
    // heap_end_ptr: the end of the heap, relative to the setup code.
    let heap_end = CMDLINE_ADDR - REAL_ADDR - 0x200;
    put(0x224, &u16::try_from(heap_end).unwrap_or(0).to_le_bytes());
    if let Some(size) = initrd_size {
        if size >= initrd_max {
            return Err(bad(format!(
                "an initrd of {size} bytes does not fit below {initrd_max:#x} (QEMU: initrd is too large)"
            )));
        }
        // Page-aligned, as high as it fits.
        let addr = initrd_max.saturating_sub(size) & !0xfff;
        let addr = u32::try_from(addr).map_err(|_| bad("initrd address above 4 GiB".into()))?;
        let size = u32::try_from(size).map_err(|_| bad("initrd of 4 GiB or more".into()))?;
        put(0x218, &addr.to_le_bytes()); // ramdisk_image
        put(0x21c, &size.to_le_bytes()); // ramdisk_size
    }
    let patched_end = setup_size.min(k.len());
    let mut out = kernel.to_vec();
    if let (Some(dst), Some(src)) = (out.get_mut(..patched_end), k.get(..patched_end)) {
        dst.copy_from_slice(src);
    }
    Ok(out)
}

/// The `vga=` mode QEMU writes into vid_mode, from the first "vga=" in the
/// command line (QEMU looks for the substring anywhere).
fn vga_mode(cmdline: &[u8]) -> Result<Option<u16>, Error> {
    let Some(at) = cmdline.windows(4).position(|w| w == b"vga=") else {
        return Ok(None);
    };
    let value = cmdline.get(at.saturating_add(4)..).unwrap_or_default();
    for (name, mode) in [(&b"normal"[..], 0xffff), (b"ext", 0xfffe), (b"ask", 0xfffd)] {
        if value.starts_with(name) {
            return Ok(Some(mode));
        }
    }
    let end = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    let text = std::str::from_utf8(value.get(..end).unwrap_or_default()).unwrap_or("");
    // qemu_strtoui with base 0: 0x hex, leading-0 octal, else decimal.
    let parsed = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
    } else if text.len() > 1 && text.starts_with('0') {
        u32::from_str_radix(text.get(1..).unwrap_or_default(), 8)
    } else {
        text.parse()
    };
    match parsed {
        // stw_p stores the low 16 bits.
        Ok(v) => Ok(Some(u16::try_from(v & 0xffff).unwrap_or(0))),
        Err(_) => Err(Error::QemuKernel {
            reason: format!("invalid vga= parameter {text:?}; QEMU refuses to start"),
        }),
    }
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([
        *b.get(at)?,
        *b.get(at.checked_add(1)?)?,
    ]))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}
