//! The SEV and SEV-ES launch digests, which the reference tool computes
//! beside SEV-SNP's: GCTX.LD, the SHA-256 over everything LAUNCH_UPDATE_DATA
//! and LAUNCH_UPDATE_VMSA encrypted, in order (AMD SEV API spec, pub. 55766,
//! LAUNCH_UPDATE_DATA and LAUNCH_UPDATE_VMSA). The report's LAUNCH_MEASURE
//! value is an HMAC over this digest with a key the guest owner shares with
//! the PSP; computing that HMAC is the guest owner's business.
//!
//! Order as QEMU launches (`target/i386/sev.c`): the whole firmware image,
//! then the padded SEV hashes table when a kernel is booted directly, then
//! (SEV-ES) one VMSA per vCPU with SEV_FEATURES 0.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use ring::digest::{Context, SHA256};
use serde::Serialize;

use super::hashes::{DirectBoot, HASHES_TABLE_SIZE, KernelHashes};
use super::ovmf::Ovmf;
use super::{VmmType, VmsaPages, alongside, checked_area, vmsa};
use crate::Error;

/// An SEV or SEV-ES launch digest and its inputs' digests.
#[derive(Clone, Debug, Serialize)]
pub struct SevMeasurement {
    /// GCTX.LD: SHA-256 over the launch data.
    #[serde(serialize_with = "crate::hex::serialize")]
    pub digest: [u8; 32],
    /// The digests of a measured direct boot.
    pub kernel_hashes: Option<KernelHashes>,
    /// The SEV hashes table built from them, as measured.
    #[serde(serialize_with = "crate::hex::serialize_opt")]
    pub hashes_table: Option<[u8; HASHES_TABLE_SIZE]>,
    /// SEV-ES: how many VMSA pages were measured.
    pub vmsas: u32,
    #[serde(skip)]
    vmsa_pages: Option<VmsaPages>,
}

impl SevMeasurement {
    /// The VMSA page measured for a vCPU (SEV-ES only).
    pub fn vmsa_page(&self, vcpu: u32) -> Option<&[u8; super::PAGE_SIZE]> {
        self.vmsa_pages.as_ref()?.get(vcpu)
    }
}

/// The SEV launch digest: the firmware image, then the hashes table.
pub fn sev_launch_digest(
    ovmf: &Ovmf,
    direct_boot: Option<&DirectBoot<'_>>,
) -> Result<SevMeasurement, Error> {
    digest(ovmf, direct_boot, None)
}

/// The SEV-ES launch digest: the firmware image, the hashes table, then one
/// VMSA per vCPU (SEV_FEATURES 0).
pub fn seves_launch_digest(
    ovmf: &Ovmf,
    direct_boot: Option<&DirectBoot<'_>>,
    vcpus: u32,
    vcpu_sig: u32,
    vmm: VmmType,
) -> Result<SevMeasurement, Error> {
    let pages = VmsaPages::new(vcpus, ovmf.sev_es_reset_eip()?, |eip| {
        vmsa::page(eip, 0, vcpu_sig, vmm)
    })?;
    digest(ovmf, direct_boot, Some(pages))
}

fn digest(
    ovmf: &Ovmf,
    direct_boot: Option<&DirectBoot<'_>>,
    vmsa_pages: Option<VmsaPages>,
) -> Result<SevMeasurement, Error> {
    if direct_boot.is_some() {
        // The reference tool's test: an entry with a non-zero base. QEMU's
        // then refuses an area too small for the table.
        match ovmf.hashes_table_area()? {
            Some(area) if area.base != 0 => checked_area(area)?,
            area => {
                return Err(Error::HashesTableUnsupported {
                    entry_present: area.is_some(),
                });
            }
        };
    }
    let (ctx, kernel_hashes) = alongside(direct_boot, || {
        let mut ctx = Context::new(&SHA256);
        ctx.update(ovmf.data());
        ctx
    });
    let mut ctx = ctx;
    let kernel_hashes = kernel_hashes.transpose()?;
    let hashes_table = kernel_hashes.as_ref().map(KernelHashes::table);
    if let Some(table) = &hashes_table {
        ctx.update(table);
    }
    let mut vmsas = 0;
    if let Some(pages) = &vmsa_pages {
        while let Some(page) = pages.get(vmsas) {
            ctx.update(page.as_slice());
            vmsas = vmsas.saturating_add(1);
        }
    }
    let mut digest = [0; 32];
    digest.copy_from_slice(ctx.finish().as_ref());
    Ok(SevMeasurement {
        digest,
        kernel_hashes,
        hashes_table,
        vmsas,
        vmsa_pages,
    })
}
