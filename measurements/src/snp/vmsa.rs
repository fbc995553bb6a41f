//! The initial VMSA (VM save area) of each vCPU, which SEV-ES and SEV-SNP
//! measure page for page.
//!
//! Layout: AMD64 Architecture Programmer's Manual Vol. 2 (pub. 24593),
//! Appendix B, Table B-4 "VMSA Layout, State Save Area for SEV-ES" (Linux
//! `struct sev_es_save_area`). Only the first 0x670 bytes are named; the
//! rest of the 4 KiB page is zero.
//!
//! Values: the x86 reset state (APM Vol. 2, section 14.1.3 "Processor
//! Initialization State"), as the VMM sets it up before launch. QEMU and KVM
//! (`target/i386/sev.c`, `arch/x86/kvm/svm/sev.c`) copy their reset state into
//! the VMSA; Amazon EC2's and Google GCE's VMMs differ in a few fields, as
//! the reference tool `sev-snp-measure` records.
//!
//! The bootstrap processor starts at the reset vector 0xFFFF_FFF0; every
//! application processor at the firmware's SEV-ES AP reset address, since an
//! SEV-ES guest's AP state cannot be set by INIT-SIPI from the host.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::ovmf::PAGE_SIZE;

/// The VMM that launches the guest. Each sets up the initial vCPU state and
/// some metadata pages a little differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum VmmType {
    /// QEMU with KVM.
    #[serde(rename = "QEMU")]
    Qemu,
    /// Amazon EC2.
    #[serde(rename = "ec2")]
    Ec2,
    /// Google Compute Engine.
    #[serde(rename = "gce")]
    Gce,
}

impl VmmType {
    /// The names the reference tool accepts, in its order.
    pub const NAMES: [&'static str; 3] = ["QEMU", "ec2", "gce"];
}

impl FromStr for VmmType {
    type Err = ();
    /// Exactly the reference tool's names: `QEMU`, `ec2`, `gce`.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "QEMU" => Ok(VmmType::Qemu),
            "ec2" => Ok(VmmType::Ec2),
            "gce" => Ok(VmmType::Gce),
            _ => Err(()),
        }
    }
}

impl fmt::Display for VmmType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmmType::Qemu => "QEMU",
            VmmType::Ec2 => "ec2",
            VmmType::Gce => "gce",
        })
    }
}

/// The CPUID Fn0000_0001_EAX signature of a family, model and stepping (AMD
/// CPUID Specification, pub. 25481, "CPUID Fn0000_0001_EAX Family, Model,
/// Stepping Identifiers"): a family above 0xF is stored as 0xF plus an
/// extended family of `family - 0xF`. Fields are masked to their widths,
/// as the reference tool does.
pub const fn cpu_signature(family: u64, model: u64, stepping: u64) -> u32 {
    let (base_family, ext_family) = if family > 0xf {
        (0xf, family.wrapping_sub(0xf) & 0xff)
    } else {
        (family, 0)
    };
    let ext_model = (model >> 4) & 0xf;
    let base_model = model & 0xf;
    let stepping = stepping & 0xf;
    let sig =
        (ext_family << 20) | (ext_model << 16) | (base_family << 8) | (base_model << 4) | stepping;
    // Every part is masked: the value is below 2^28.
    let bytes = sig.to_le_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// A QEMU CPU model that the reference tool knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuType {
    /// QEMU's name (`-cpu NAME`).
    pub name: &'static str,
    /// CPUID family.
    pub family: u8,
    /// CPUID model.
    pub model: u8,
    /// CPUID stepping.
    pub stepping: u8,
}

impl VcpuType {
    /// Its CPUID signature.
    pub const fn signature(&self) -> u32 {
        // Widening u8 -> u64 without `as`.
        cpu_signature(
            u64::from_le_bytes([self.family, 0, 0, 0, 0, 0, 0, 0]),
            u64::from_le_bytes([self.model, 0, 0, 0, 0, 0, 0, 0]),
            u64::from_le_bytes([self.stepping, 0, 0, 0, 0, 0, 0, 0]),
        )
    }
}

const fn t(name: &'static str, family: u8, model: u8, stepping: u8) -> VcpuType {
    VcpuType {
        name,
        family,
        model,
        stepping,
    }
}

/// The AMD EPYC models of QEMU's `builtin_x86_defs` (target/i386/cpu.c),
/// with their versions, as the reference tool lists them.
pub const VCPU_TYPES: [VcpuType; 16] = [
    t("EPYC", 23, 1, 2),
    t("EPYC-v1", 23, 1, 2),
    t("EPYC-v2", 23, 1, 2),
    t("EPYC-IBPB", 23, 1, 2),
    t("EPYC-v3", 23, 1, 2),
    t("EPYC-v4", 23, 1, 2),
    t("EPYC-Rome", 23, 49, 0),
    t("EPYC-Rome-v1", 23, 49, 0),
    t("EPYC-Rome-v2", 23, 49, 0),
    t("EPYC-Rome-v3", 23, 49, 0),
    t("EPYC-Milan", 25, 1, 1),
    t("EPYC-Milan-v1", 25, 1, 1),
    t("EPYC-Milan-v2", 25, 1, 1),
    t("EPYC-Genoa", 25, 17, 0),
    t("EPYC-Genoa-v1", 25, 17, 0),
    t("EPYC-Turin", 26, 0, 0),
];

/// The CPUID signature of a vCPU type named as QEMU names it.
pub fn vcpu_type_signature(name: &str) -> Option<u32> {
    VCPU_TYPES
        .iter()
        .find(|t| t.name == name)
        .map(VcpuType::signature)
}

/// A segment register in the save area: selector, attributes, limit, base.
#[derive(Clone, Copy, FromZeros, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Segment {
    selector: U16,
    attrib: U16,
    limit: U32,
    base: U64,
}

fn seg(selector: u16, attrib: u16, limit: u32, base: u64) -> Segment {
    Segment {
        selector: U16::new(selector),
        attrib: U16::new(attrib),
        limit: U32::new(limit),
        base: U64::new(base),
    }
}

/// APM Vol. 2, Table B-4, offsets as in the spec.
#[derive(FromZeros, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SaveArea {
    es: Segment,                      // 0x000
    cs: Segment,                      // 0x010
    ss: Segment,                      // 0x020
    ds: Segment,                      // 0x030
    fs: Segment,                      // 0x040
    gs: Segment,                      // 0x050
    gdtr: Segment,                    // 0x060
    ldtr: Segment,                    // 0x070
    idtr: Segment,                    // 0x080
    tr: Segment,                      // 0x090
    vmpl0_ssp: U64,                   // 0x0A0
    vmpl1_ssp: U64,                   // 0x0A8
    vmpl2_ssp: U64,                   // 0x0B0
    vmpl3_ssp: U64,                   // 0x0B8
    u_cet: U64,                       // 0x0C0
    reserved_0c8: [u8; 2],            // 0x0C8
    vmpl: u8,                         // 0x0CA
    cpl: u8,                          // 0x0CB
    reserved_0cc: [u8; 4],            // 0x0CC
    efer: U64,                        // 0x0D0
    reserved_0d8: [u8; 104],          // 0x0D8
    xss: U64,                         // 0x140
    cr4: U64,                         // 0x148
    cr3: U64,                         // 0x150
    cr0: U64,                         // 0x158
    dr7: U64,                         // 0x160
    dr6: U64,                         // 0x168
    rflags: U64,                      // 0x170
    rip: U64,                         // 0x178
    dr0: U64,                         // 0x180
    dr1: U64,                         // 0x188
    dr2: U64,                         // 0x190
    dr3: U64,                         // 0x198
    dr0_addr_mask: U64,               // 0x1A0
    dr1_addr_mask: U64,               // 0x1A8
    dr2_addr_mask: U64,               // 0x1B0
    dr3_addr_mask: U64,               // 0x1B8
    reserved_1c0: [u8; 24],           // 0x1C0
    rsp: U64,                         // 0x1D8
    s_cet: U64,                       // 0x1E0
    ssp: U64,                         // 0x1E8
    isst_addr: U64,                   // 0x1F0
    rax: U64,                         // 0x1F8
    star: U64,                        // 0x200
    lstar: U64,                       // 0x208
    cstar: U64,                       // 0x210
    sfmask: U64,                      // 0x218
    kernel_gs_base: U64,              // 0x220
    sysenter_cs: U64,                 // 0x228
    sysenter_esp: U64,                // 0x230
    sysenter_eip: U64,                // 0x238
    cr2: U64,                         // 0x240
    reserved_248: [u8; 32],           // 0x248
    g_pat: U64,                       // 0x268
    dbgctl: U64,                      // 0x270
    br_from: U64,                     // 0x278
    br_to: U64,                       // 0x280
    last_excp_from: U64,              // 0x288
    last_excp_to: U64,                // 0x290
    reserved_298: [u8; 80],           // 0x298
    pkru: U32,                        // 0x2E8
    tsc_aux: U32,                     // 0x2EC
    reserved_2f0: [u8; 24],           // 0x2F0
    rcx: U64,                         // 0x308
    rdx: U64,                         // 0x310
    rbx: U64,                         // 0x318
    reserved_320: U64,                // 0x320
    rbp: U64,                         // 0x328
    rsi: U64,                         // 0x330
    rdi: U64,                         // 0x338
    r8: U64,                          // 0x340
    r9: U64,                          // 0x348
    r10: U64,                         // 0x350
    r11: U64,                         // 0x358
    r12: U64,                         // 0x360
    r13: U64,                         // 0x368
    r14: U64,                         // 0x370
    r15: U64,                         // 0x378
    reserved_380: [u8; 16],           // 0x380
    guest_exit_info_1: U64,           // 0x390
    guest_exit_info_2: U64,           // 0x398
    guest_exit_int_info: U64,         // 0x3A0
    guest_nrip: U64,                  // 0x3A8
    sev_features: U64,                // 0x3B0
    vintr_ctrl: U64,                  // 0x3B8
    guest_exit_code: U64,             // 0x3C0
    virtual_tom: U64,                 // 0x3C8
    tlb_id: U64,                      // 0x3D0
    pcpu_id: U64,                     // 0x3D8
    event_inj: U64,                   // 0x3E0
    xcr0: U64,                        // 0x3E8
    reserved_3f0: [u8; 16],           // 0x3F0
    x87_dp: U64,                      // 0x400
    mxcsr: U32,                       // 0x408
    x87_ftw: U16,                     // 0x40C
    x87_fsw: U16,                     // 0x40E
    x87_fcw: U16,                     // 0x410
    x87_fop: U16,                     // 0x412
    x87_ds: U16,                      // 0x414
    x87_cs: U16,                      // 0x416
    x87_rip: U64,                     // 0x418
    fpreg_x87: [u8; 80],              // 0x420
    fpreg_xmm: [u8; 256],             // 0x470
    fpreg_ymm: [u8; 256],             // 0x570
    unnamed: [u8; PAGE_SIZE - 0x670], // 0x670: zero to the end of the page
}

const _: () = assert!(size_of::<Segment>() == 16);
const _: () = assert!(size_of::<SaveArea>() == PAGE_SIZE);

/// The reset vector (APM Vol. 2, 14.1.3): where the BSP starts.
pub const BSP_EIP: u32 = 0xFFFF_FFF0;

/// PAT after reset: PA0..PA7 = WB, WT, UC-, UC, WB, WT, UC-, UC (APM Vol. 2,
/// "PAT Register", reset value).
const RESET_PAT: u64 = 0x0007_0406_0007_0406;
/// GCE's hypervisor sets a different initial PAT (reference tool).
const GCE_PAT: u64 = 0x0007_0106;
/// CPUID Fn0000_0001_EAX as EC2 and GCE report it in RDX at reset (reference
/// tool); QEMU puts the vCPU's real signature there, as hardware does.
const CLOUD_RDX: u64 = 0x600;

/// The page of one vCPU starting at `eip`, for SEV-ES (`sev_features` 0)
/// or SEV-SNP (`sev_features` = the guest features: the VMSA's
/// SEV_FEATURES field, bit 0 SNPActive, APM Vol. 2, "SEV_FEATURES").
pub(crate) fn page(
    eip: u32,
    sev_features: u64,
    vcpu_sig: u32,
    vmm: VmmType,
) -> Box<[u8; PAGE_SIZE]> {
    // The real-mode code segment: selector 0xF000 and the base taken from
    // the top of EIP, so CS.base + RIP is the start address. Attribute
    // 0x9B: present, code, readable, accessed; EC2 leaves the BSP's CS
    // not accessed (0x9A), and uses not-accessed data (0x92) and 16-bit
    // TSS (0x83) attributes.
    let (cs_flags, ss_flags, tr_flags, rdx, mxcsr, fcw, g_pat) = match vmm {
        VmmType::Qemu => (
            0x9b,
            0x93,
            0x8b,
            u64::from(vcpu_sig),
            0x1f80,
            0x37f,
            RESET_PAT,
        ),
        VmmType::Ec2 => {
            let cs = if eip == BSP_EIP { 0x9a } else { 0x9b };
            (cs, 0x92, 0x83, CLOUD_RDX, 0, 0, RESET_PAT)
        }
        VmmType::Gce => (0x9b, 0x93, 0x8b, CLOUD_RDX, 0, 0, GCE_PAT),
    };
    let mut area = SaveArea::new_zeroed();
    area.es = seg(0, 0x93, 0xffff, 0);
    area.cs = seg(0xf000, cs_flags, 0xffff, u64::from(eip & 0xffff_0000));
    area.ss = seg(0, ss_flags, 0xffff, 0);
    area.ds = seg(0, 0x93, 0xffff, 0);
    area.fs = seg(0, 0x93, 0xffff, 0);
    area.gs = seg(0, 0x93, 0xffff, 0);
    area.gdtr = seg(0, 0, 0xffff, 0);
    area.idtr = seg(0, 0, 0xffff, 0);
    area.ldtr = seg(0, 0x82, 0xffff, 0);
    area.tr = seg(0, tr_flags, 0xffff, 0);
    // EFER.SVME: VMRUN refuses guest state with it clear (APM Vol. 2,
    // 15.5.1, "Basic Operation"), so KVM sets it.
    area.efer = U64::new(0x1000);
    // CR4.MCE, which KVM sets for the guest.
    area.cr4 = U64::new(0x40);
    // CR0.ET only, as KVM's SEV-ES VMSA holds it.
    area.cr0 = U64::new(0x10);
    area.dr7 = U64::new(0x400);
    area.dr6 = U64::new(0xffff_0ff0);
    area.rflags = U64::new(0x2);
    area.rip = U64::new(u64::from(eip & 0xffff));
    area.g_pat = U64::new(g_pat);
    area.rdx = U64::new(rdx);
    area.sev_features = U64::new(sev_features);
    // XCR0.X87, the only bit set at reset.
    area.xcr0 = U64::new(0x1);
    area.mxcsr = U32::new(mxcsr);
    area.x87_fcw = U16::new(fcw);
    to_page(&area)
}

/// The page of every vCPU of an SVSM guest: the SVSM starts in 32-bit
/// protected mode (flat 4 GiB segments, CR0.PE) at its entry point, with
/// SEV_FEATURES.SNP only.
///
/// The x87 control word is left 0 on purpose: sev-snp-measure 0.0.13
/// (`VMSA_SVSM.build_save_area`) passes it as `fcw=`, a name that is not a
/// field of its structure, so ctypes ignores it, and it measures 0. This
/// agrees with that tool; check it against a real SVSM launch before
/// relying on it.
pub(crate) fn svsm_page(eip: u64, vcpu_sig: u32) -> Box<[u8; PAGE_SIZE]> {
    let mut area = SaveArea::new_zeroed();
    area.es = seg(16, 0xc93, 0xffff_ffff, 0);
    area.cs = seg(8, 0xc9b, 0xffff_ffff, 0);
    area.ss = seg(16, 0xc93, 0xffff_ffff, 0);
    area.ds = seg(16, 0xc93, 0xffff_ffff, 0);
    area.fs = seg(16, 0xc93, 0xffff_ffff, 0);
    area.gs = seg(0, 0x093, 0xffff, 0);
    area.gdtr = seg(0, 0, 0xffff, 0);
    area.idtr = seg(0, 0, 0xffff, 0);
    area.ldtr = seg(0, 0x82, 0xffff, 0);
    area.tr = seg(0, 0x8b, 0xffff, 0);
    area.efer = U64::new(0x1000);
    area.cr4 = U64::new(0x40);
    // CR0.ET | CR0.PE.
    area.cr0 = U64::new(0x11);
    area.dr7 = U64::new(0x400);
    area.dr6 = U64::new(0xffff_0ff0);
    area.rflags = U64::new(0x2);
    area.rip = U64::new(eip);
    area.g_pat = U64::new(RESET_PAT);
    area.rdx = U64::new(u64::from(vcpu_sig));
    // SEV_FEATURES.SNP: the SVSM's VMSA is an SNP guest's, whatever the
    // guest features asked for (reference tool).
    area.sev_features = U64::new(0x1);
    area.xcr0 = U64::new(0x1);
    area.mxcsr = U32::new(0x1f80);
    to_page(&area)
}

fn to_page(area: &SaveArea) -> Box<[u8; PAGE_SIZE]> {
    let mut page = Box::new([0; PAGE_SIZE]);
    page.copy_from_slice(area.as_bytes());
    page
}

#[cfg(test)]
mod tests {
    // Fixtures of known sizes; a panic here is a failed test.
    #![allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::unwrap_used
    )]

    use super::*;

    fn u64_at(p: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(p[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn signatures_of_named_types() {
        // Milan: family 0x19 = 0xF + 0xA, model 1, stepping 1.
        assert_eq!(vcpu_type_signature("EPYC-Milan"), Some(0x00a0_0f11));
        assert_eq!(vcpu_type_signature("EPYC-v4"), Some(0x0080_0f12));
        assert_eq!(vcpu_type_signature("EPYC-Rome"), Some(0x0083_0f10));
        assert_eq!(vcpu_type_signature("EPYC-Genoa"), Some(0x00a1_0f10));
        assert_eq!(vcpu_type_signature("EPYC-Turin"), Some(0x00b0_0f00));
        assert_eq!(vcpu_type_signature("epyc-milan"), None);
    }

    #[test]
    fn signature_masks_like_the_reference() {
        // A family at or below 0xF has no extended family.
        assert_eq!(cpu_signature(0xf, 0, 0), 0xf00);
        assert_eq!(cpu_signature(6, 0x8f, 0x1f), 0x0008_06ff);
        // Extended family wraps at 8 bits; model above 0xFF keeps 8 bits.
        assert_eq!(cpu_signature(0xf + 0x100 + 2, 0x123, 0), 0x0022_0f30);
    }

    #[test]
    fn qemu_bsp_fields_at_spec_offsets() {
        let p = page(BSP_EIP, 0x1, 0x00a0_0f11, VmmType::Qemu);
        // CS: selector 0xF000, attributes 0x9B, limit 0xFFFF, base 0xFFFF0000.
        assert_eq!(
            p[0x10..0x20],
            [
                0x00, 0xf0, 0x9b, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0
            ]
        );
        assert_eq!(u64_at(&p[..], 0x178), 0xfff0);
        assert_eq!(u64_at(&p[..], 0x310), 0x00a0_0f11);
        assert_eq!(u64_at(&p[..], 0x3b0), 1);
        assert_eq!(u64_at(&p[..], 0x268), RESET_PAT);
        assert_eq!(u64_at(&p[..], 0x3e8), 1);
        assert_eq!(p[0x408..0x40c], 0x1f80u32.to_le_bytes());
        assert_eq!(p[0x410..0x412], 0x37fu16.to_le_bytes());
        assert!(p[0x670..].iter().all(|b| *b == 0));
    }

    #[test]
    fn ec2_and_gce_differences() {
        let ec2_bsp = page(BSP_EIP, 0x1, 0x00a0_0f11, VmmType::Ec2);
        let ec2_ap = page(0x80_b004, 0x1, 0x00a0_0f11, VmmType::Ec2);
        assert_eq!(ec2_bsp[0x12], 0x9a);
        assert_eq!(ec2_ap[0x12], 0x9b);
        assert_eq!(u64_at(&ec2_ap[..], 0x310), 0x600);
        assert_eq!(u64_at(&ec2_ap[..], 0x10 + 8), 0x0080_0000);
        assert_eq!(u64_at(&ec2_ap[..], 0x178), 0xb004);
        let gce = page(BSP_EIP, 0x1, 0, VmmType::Gce);
        assert_eq!(u64_at(&gce[..], 0x268), 0x0007_0106);
        assert_eq!(gce[0x410..0x412], [0, 0]);
    }

    #[test]
    fn vmm_names_round_trip() {
        for name in VmmType::NAMES {
            assert_eq!(name.parse::<VmmType>().unwrap().to_string(), name);
        }
        assert!("qemu".parse::<VmmType>().is_err());
    }
}
