//! The AMD SEV-SNP launch digest (the attestation report's MEASUREMENT),
//! recomputed from the boot artifacts: the firmware image, the kernel,
//! initrd and command line of a measured direct boot, and the vCPUs.
//!
//! What the PSP measures at launch, in order (QEMU `target/i386/sev.c`,
//! KVM `arch/x86/kvm/svm/sev.c`), each page folded in by
//! SNP_LAUNCH_UPDATE as [`PageType`] describes:
//!
//! 1. the firmware image, page by page, as NORMAL pages, mapped to end at
//!    4 GiB; the digest at this point is the *firmware hash*, which a VMM
//!    vendor can publish so the image itself need not be shipped;
//! 2. the SEV metadata sections, in the order the metadata lists them (not
//!    sorted by address): zero pages for SNP_SEC_MEM (unmeasured on GCE)
//!    and SVSM_CAA, the secrets page, the CPUID page (on EC2 after all other
//!    sections), and the SNP_KERNEL_HASHES page: the SEV hashes table when
//!    a kernel is booted directly, zero pages otherwise;
//! 3. one VMSA page per vCPU: the BSP's, then the APs'.
//!
//! The result agrees byte for byte with the reference tool `sev-snp-measure`
//! 0.0.13 (PyPI) on every input both accept; where an input cannot come
//! from a real launch (an unknown section type, a misaligned section, a
//! hashes table QEMU would refuse) this module refuses it instead of
//! producing a value no platform will ever report.
//!
//! [`sev_launch_digest`] and [`seves_launch_digest`] compute the older SEV
//! and SEV-ES launch digests (SHA-256 over the same inputs), which the
//! reference tool also offers.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

mod buf;
mod gctx;
mod hashes;
mod ovmf;
mod sev;
mod vmsa;

use std::num::NonZeroUsize;
use std::sync::OnceLock;

use serde::Serialize;

pub use gctx::{DIGEST_SIZE, Digest384, PageType, VMSA_GPA};
pub use hashes::{Digest256, DirectBoot, HASHES_TABLE_SIZE, KernelHashes};
pub use ovmf::{
    FOOTER_GUID, Guid, HashesTableArea, MAX_FIRMWARE_SIZE, MAX_SECTIONS, MetadataSection, Ovmf,
    PAGE_SIZE, SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_RV_GUID, SEV_METADATA_GUID, SVSM_INFO_GUID,
    SectionType,
};
pub use sev::{SevMeasurement, sev_launch_digest, seves_launch_digest};
pub use vmsa::{BSP_EIP, VCPU_TYPES, VcpuType, VmmType, cpu_signature, vcpu_type_signature};

use crate::Error;
use gctx::{Gctx, sha384};

/// OVMF ends at 4 GiB: its last 16 bytes hold the reset vector at
/// 0xFFFF_FFF0.
pub const FIRMWARE_END: u64 = 1 << 32;

/// The guest features an SNP guest is launched with unless told otherwise:
/// SEV_FEATURES bit 0, SNPActive.
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;

/// Everything an SEV-SNP launch digest depends on.
#[derive(Clone, Copy, Debug)]
pub struct SnpInputs<'a> {
    /// The firmware image (OVMF).
    pub ovmf: &'a Ovmf,
    /// The kernel, initrd and command line of a measured direct boot.
    pub direct_boot: Option<DirectBoot<'a>>,
    /// How many vCPUs the guest starts with.
    pub vcpus: u32,
    /// Their CPUID signature (family, model, stepping), which QEMU puts in
    /// RDX at reset. EC2 and GCE ignore it.
    pub vcpu_sig: u32,
    /// The VMM launching the guest.
    pub vmm: VmmType,
    /// SEV_FEATURES of every VMSA ([`DEFAULT_GUEST_FEATURES`] unless the
    /// VMM enables more).
    pub guest_features: u64,
    /// A firmware hash computed earlier (or published by the VMM vendor),
    /// used instead of hashing `ovmf`'s pages. The image is still needed
    /// for its metadata and reset address.
    pub ovmf_hash: Option<Digest384>,
}

/// One SEV metadata section as measured: where, how, and the digest after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SectionStep {
    /// The section's index in the SEV metadata.
    pub index: usize,
    /// What it holds.
    pub section: SectionType,
    /// Its guest-physical address.
    pub gpa: u32,
    /// Its size in bytes.
    pub size: u32,
    /// How its pages were measured.
    pub page_type: PageType,
    /// How many pages were measured.
    pub pages: u32,
    /// The launch digest after the section.
    #[serde(serialize_with = "crate::hex::serialize")]
    pub digest: Digest384,
}

/// One vCPU's VMSA as measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmsaStep {
    /// The vCPU index: 0 is the BSP.
    pub vcpu: u32,
    /// SHA-384 of its VMSA page.
    #[serde(serialize_with = "crate::hex::serialize")]
    pub vmsa_sha384: Digest384,
    /// The launch digest after it.
    #[serde(serialize_with = "crate::hex::serialize")]
    pub digest: Digest384,
}

/// A launch digest and how it came about.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// The launch digest: what the attestation report's MEASUREMENT holds.
    #[serde(serialize_with = "crate::hex::serialize")]
    pub digest: Digest384,
    /// The digest after the firmware pages, or the one given in its place.
    #[serde(serialize_with = "crate::hex::serialize")]
    pub firmware_hash: Digest384,
    /// Whether `firmware_hash` was given rather than computed.
    pub firmware_hash_given: bool,
    /// SVSM mode: the digest after the SVSM image's pages.
    #[serde(serialize_with = "crate::hex::serialize_opt")]
    pub svsm_hash: Option<Digest384>,
    /// The digests of a measured direct boot.
    pub kernel_hashes: Option<KernelHashes>,
    /// The SEV hashes table built from them, as measured.
    #[serde(serialize_with = "crate::hex::serialize_opt")]
    pub hashes_table: Option<[u8; HASHES_TABLE_SIZE]>,
    /// Every metadata section, in the order measured.
    pub sections: Vec<SectionStep>,
    /// Every vCPU's VMSA, in the order measured.
    pub vmsas: Vec<VmsaStep>,
    #[serde(skip)]
    vmsa_pages: VmsaPages,
}

impl Measurement {
    /// The VMSA page measured for a vCPU (what `--dump-vmsa` writes).
    pub fn vmsa_page(&self, vcpu: u32) -> Option<&[u8; PAGE_SIZE]> {
        self.vmsa_pages.get(vcpu)
    }
}

/// The distinct VMSA pages of a launch: the BSP's and the APs' (all APs
/// share one), and how many vCPUs there are.
#[derive(Clone, Debug)]
pub(crate) struct VmsaPages {
    bsp: Box<[u8; PAGE_SIZE]>,
    ap: Option<Box<[u8; PAGE_SIZE]>>,
    vcpus: u32,
}

impl VmsaPages {
    pub(crate) fn get(&self, vcpu: u32) -> Option<&[u8; PAGE_SIZE]> {
        if vcpu >= self.vcpus {
            return None;
        }
        if vcpu == 0 {
            Some(&self.bsp)
        } else {
            self.ap.as_deref()
        }
    }

    /// BSP at the reset vector, APs at `ap_eip` (which must be non-zero
    /// when there are APs).
    fn new(
        vcpus: u32,
        ap_eip: u32,
        build: impl Fn(u32) -> Box<[u8; PAGE_SIZE]>,
    ) -> Result<Self, Error> {
        if vcpus > 1 && ap_eip == 0 {
            return Err(Error::ApResetAddress { vcpus });
        }
        Ok(VmsaPages {
            bsp: build(BSP_EIP),
            ap: (vcpus > 1).then(|| build(ap_eip)),
            vcpus,
        })
    }

    /// Fold every vCPU's page into `gctx`, recording each step.
    fn measure(&self, gctx: &mut Gctx) -> Vec<VmsaStep> {
        let bsp = sha384(&self.bsp[..]);
        let ap = self.ap.as_ref().map(|p| sha384(&p[..]));
        (0..self.vcpus)
            .map(|vcpu| {
                let d = if vcpu == 0 { bsp } else { ap.unwrap_or(bsp) };
                gctx.update(PageType::Vmsa, VMSA_GPA, &d);
                VmsaStep {
                    vcpu,
                    vmsa_sha384: d,
                    digest: gctx.ld(),
                }
            })
            .collect()
    }
}

/// The firmware hash: the launch digest after the firmware's pages alone
/// (what `sev-snp-measure --mode snp:ovmf-hash` prints).
pub fn ovmf_hash(ovmf: &Ovmf) -> Result<Digest384, Error> {
    let mut gctx = Gctx::new();
    measure_image(&mut gctx, ovmf, FIRMWARE_END)?;
    Ok(gctx.ld())
}

/// The SEV-SNP launch digest of a guest launched from `inputs`.
///
/// Everything that can be refused is checked before any hashing. A kernel
/// and initrd are hashed on a second thread while the firmware pages are.
pub fn launch_digest(inputs: &SnpInputs<'_>) -> Result<Measurement, Error> {
    let ovmf = inputs.ovmf;
    let plan = plan_sections(ovmf, inputs.vmm, inputs.direct_boot.is_some())?;
    let hashes_offset = match inputs.direct_boot {
        Some(_) => Some(snp_hashes_offset(ovmf)?),
        None => None,
    };
    let vmsa_pages = VmsaPages::new(inputs.vcpus, ovmf.sev_es_reset_eip()?, |eip| {
        vmsa::page(eip, inputs.guest_features, inputs.vcpu_sig, inputs.vmm)
    })?;
    if inputs.ovmf_hash.is_none() {
        // Refuse an image that is not whole pages before hashing anything.
        ovmf.check_whole_pages()?;
    }

    let (firmware, kernel_hashes) =
        alongside(inputs.direct_boot.as_ref(), || match inputs.ovmf_hash {
            Some(hash) => Ok(Gctx::resume(hash)),
            None => {
                let mut gctx = Gctx::new();
                measure_image(&mut gctx, ovmf, FIRMWARE_END)?;
                Ok(gctx)
            }
        });
    let mut gctx = firmware?;
    let kernel_hashes = kernel_hashes.transpose()?;
    let firmware_hash = gctx.ld();

    let hashes_page = match (&kernel_hashes, hashes_offset) {
        (Some(h), Some(offset)) => Some(h.page(offset)?),
        _ => None,
    };
    let sections = run_plan(&mut gctx, &plan, hashes_page.as_deref());
    let vmsas = vmsa_pages.measure(&mut gctx);
    Ok(Measurement {
        digest: gctx.ld(),
        firmware_hash,
        firmware_hash_given: inputs.ovmf_hash.is_some(),
        svsm_hash: None,
        hashes_table: kernel_hashes.as_ref().map(KernelHashes::table),
        kernel_hashes,
        sections,
        vmsas,
        vmsa_pages,
    })
}

/// Everything an SEV-SNP launch of OVMF under COCONUT-SVSM depends on.
#[derive(Clone, Copy, Debug)]
pub struct SvsmInputs<'a> {
    /// The firmware image (OVMF, the guest's firmware, run by the SVSM).
    pub ovmf: &'a Ovmf,
    /// The SVSM image, mapped just below OVMF's variable store.
    pub svsm: &'a Ovmf,
    /// Bytes of the OVMF variable store between the SVSM and OVMF.
    pub vars_size: u64,
    /// How many vCPUs the guest starts with.
    pub vcpus: u32,
    /// Their CPUID signature.
    pub vcpu_sig: u32,
    /// The VMM; only QEMU is implemented.
    pub vmm: VmmType,
}

/// The SEV-SNP launch digest of OVMF under COCONUT-SVSM, as
/// `sev-snp-measure --mode snp:svsm` computes it: OVMF's pages, the SVSM's
/// pages (ending where OVMF's variable store starts), the SVSM's metadata
/// sections, then one VMSA per vCPU, every one starting at the SVSM's entry
/// point.
pub fn svsm_launch_digest(inputs: &SvsmInputs<'_>) -> Result<Measurement, Error> {
    if inputs.vmm != VmmType::Qemu {
        return Err(Error::SvsmVmm(inputs.vmm));
    }
    let ovmf_gpa = inputs.ovmf.gpa_ending_at(FIRMWARE_END)?;
    let svsm_end = ovmf_gpa
        .checked_sub(inputs.vars_size)
        .ok_or(Error::FirmwarePlacement {
            size: inputs.vars_size,
            end: ovmf_gpa,
        })?;
    let svsm_gpa = inputs.svsm.gpa_ending_at(svsm_end)?;
    let plan = plan_sections(inputs.svsm, VmmType::Qemu, false)?;
    let entry = u64::from(inputs.svsm.svsm_entry_offset()?)
        .checked_add(svsm_gpa)
        .ok_or(Error::FirmwarePlacement {
            size: svsm_gpa,
            end: u64::MAX,
        })?;
    inputs.ovmf.check_whole_pages()?;
    inputs.svsm.check_whole_pages()?;

    let mut gctx = Gctx::new();
    measure_image(&mut gctx, inputs.ovmf, FIRMWARE_END)?;
    let firmware_hash = gctx.ld();
    measure_image(&mut gctx, inputs.svsm, svsm_end)?;
    let svsm_hash = gctx.ld();
    let sections = run_plan(&mut gctx, &plan, None);
    // Every vCPU, the BSP included, starts at the SVSM entry point.
    let page = vmsa::svsm_page(entry, inputs.vcpu_sig);
    let vmsa_pages = VmsaPages {
        ap: Some(page.clone()),
        bsp: page,
        vcpus: inputs.vcpus,
    };
    let vmsas = vmsa_pages.measure(&mut gctx);
    Ok(Measurement {
        digest: gctx.ld(),
        firmware_hash,
        firmware_hash_given: false,
        svsm_hash: Some(svsm_hash),
        kernel_hashes: None,
        hashes_table: None,
        sections,
        vmsas,
        vmsa_pages,
    })
}

/// Threads to hash with: all the machine offers. Asked once: on Linux the
/// answer takes several reads of /proc and cgroup files.
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// Run `work` while the direct-boot hashes (if any) are computed on another
/// thread.
pub(crate) fn alongside<T>(
    boot: Option<&DirectBoot<'_>>,
    work: impl FnOnce() -> T,
) -> (T, Option<Result<KernelHashes, Error>>) {
    let Some(boot) = boot else {
        return (work(), None);
    };
    std::thread::scope(|s| {
        let hashing = s.spawn(|| KernelHashes::compute(boot));
        let out = work();
        let hashes = match hashing.join() {
            Ok(h) => h,
            // The hashing code does not panic; if it did, pass it on.
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (out, Some(hashes))
    })
}

/// Fold an image's pages into `gctx` as NORMAL pages, the image mapped to
/// end at `end`.
fn measure_image(gctx: &mut Gctx, image: &Ovmf, end: u64) -> Result<(), Error> {
    let gpa = image.gpa_ending_at(end)?;
    gctx.update_normal(gpa, image.page_digests()?);
    Ok(())
}

/// How one metadata section is measured.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// `pages` pages of a type whose contents are not measured.
    Unmeasured(PageType),
    /// The page holding the SEV hashes table.
    HashesPage,
}

#[derive(Clone, Copy, Debug)]
struct Planned {
    index: usize,
    section: MetadataSection,
    action: Action,
    pages: u32,
}

/// Check every section and decide how each is measured, in measurement
/// order (QEMU `snp_populate_metadata_pages`; the reference tool's
/// `snp_update_metadata_pages`).
fn plan_sections(image: &Ovmf, vmm: VmmType, kernel: bool) -> Result<Vec<Planned>, Error> {
    let mut plan = Vec::new();
    let mut deferred = Vec::new();
    for (index, &section) in image.sections().iter().enumerate() {
        let pages = section_pages(index, section)?;
        let one_page = || {
            if pages == 1 {
                Ok(())
            } else {
                Err(Error::SectionSize {
                    index,
                    section: section.section_type,
                    size: section.size,
                })
            }
        };
        let action = match section.section_type {
            // GCE's VMM encrypts the pre-validated memory without measuring
            // it; everyone else measures it as zero pages.
            SectionType::SnpSecMem if vmm == VmmType::Gce => {
                Action::Unmeasured(PageType::Unmeasured)
            }
            SectionType::SnpSecMem | SectionType::SvsmCaa => Action::Unmeasured(PageType::Zero),
            // The reference tool measures one page at the section's address
            // whatever its size, QEMU the whole section; they agree only on
            // one page, which is what every OVMF declares.
            SectionType::SnpSecrets => {
                one_page()?;
                Action::Unmeasured(PageType::Secrets)
            }
            SectionType::Cpuid => {
                one_page()?;
                Action::Unmeasured(PageType::Cpuid)
            }
            SectionType::SnpKernelHashes if kernel => {
                one_page()?;
                Action::HashesPage
            }
            // No kernel: QEMU measures the area as zero pages.
            SectionType::SnpKernelHashes => Action::Unmeasured(PageType::Zero),
            SectionType::Unknown(section_type) => {
                return Err(Error::UnknownSectionType {
                    index,
                    section_type,
                });
            }
        };
        let planned = Planned {
            index,
            section,
            action,
            pages,
        };
        // EC2's VMM fills and measures the CPUID page after every other
        // section (reference tool).
        if vmm == VmmType::Ec2 && section.section_type == SectionType::Cpuid {
            deferred.push(planned);
        } else {
            plan.push(planned);
        }
    }
    // Work budget: a launch measures each guest page at most once, and the
    // sections' 32-bit addresses put them all below 4 GiB, so together they
    // cannot cover more than 2^20 pages. Checked before any hashing, so a
    // hostile image cannot ask for more than about 10^6 PAGE_INFO digests.
    let pages = plan
        .iter()
        .chain(&deferred)
        .map(|p| u64::from(p.pages))
        .sum::<u64>();
    if pages > MAX_SECTION_PAGES {
        return Err(Error::SectionPages {
            pages,
            max: MAX_SECTION_PAGES,
        });
    }
    if kernel
        && !image
            .sections()
            .iter()
            .any(|s| s.section_type == SectionType::SnpKernelHashes)
    {
        return Err(Error::NoKernelHashesSection {
            metadata_present: image.has_metadata(),
        });
    }
    plan.append(&mut deferred);
    Ok(plan)
}

/// Pages below 4 GiB: the most that metadata sections can cover.
const MAX_SECTION_PAGES: u64 = FIRMWARE_END / 4096;

/// A section's page count; refused unless it is a non-empty, page-aligned
/// range below 4 GiB. KVM's SNP_LAUNCH_UPDATE refuses an empty or unaligned
/// range, and the metadata's 32-bit addresses cannot describe one above.
fn section_pages(index: usize, section: MetadataSection) -> Result<u32, Error> {
    let page = 4096;
    let end = u64::from(section.gpa).checked_add(u64::from(section.size));
    let aligned = section.gpa % page == 0 && section.size % page == 0 && section.size > 0;
    match end {
        Some(end) if aligned && end <= FIRMWARE_END => Ok(section.size / page),
        _ => Err(Error::SectionAlignment {
            index,
            section: section.section_type,
            gpa: section.gpa,
            size: section.size,
        }),
    }
}

/// Where the SEV hashes table sits in the SNP_KERNEL_HASHES page: the table
/// area's offset within its page (QEMU `sev_snp_build_kernel_loader_hashes`),
/// after QEMU's checks on the area (`sev_add_kernel_loader_hashes`: base not
/// zero, size enough for the padded table).
fn snp_hashes_offset(ovmf: &Ovmf) -> Result<usize, Error> {
    let area = ovmf.hashes_table_area()?.ok_or(Error::MissingEntry {
        name: "SEV hashes table",
        guid: SEV_HASH_TABLE_RV_GUID,
        table_present: ovmf.has_footer_table(),
    })?;
    checked_area(area)?;
    let offset = usize::try_from(area.base % 4096).unwrap_or(usize::MAX);
    if offset.saturating_add(HASHES_TABLE_SIZE) > PAGE_SIZE {
        return Err(Error::HashesTablePlacement { offset });
    }
    Ok(offset)
}

/// QEMU's check on the hashes table area (`sev_add_kernel_loader_hashes`).
pub(crate) fn checked_area(area: HashesTableArea) -> Result<HashesTableArea, Error> {
    let table = u32::try_from(HASHES_TABLE_SIZE).unwrap_or(u32::MAX);
    if area.base == 0 || area.size < table {
        return Err(Error::HashesTableArea {
            base: area.base,
            size: area.size,
        });
    }
    Ok(area)
}

/// Measure the planned sections.
fn run_plan(
    gctx: &mut Gctx,
    plan: &[Planned],
    hashes_page: Option<&[u8; PAGE_SIZE]>,
) -> Vec<SectionStep> {
    plan.iter()
        .map(|p| {
            let gpa = u64::from(p.section.gpa);
            let page_type = match (p.action, hashes_page) {
                (Action::HashesPage, Some(page)) => {
                    gctx.update(PageType::Normal, gpa, &sha384(&page[..]));
                    PageType::Normal
                }
                // plan_sections plans a hashes page only when a kernel is
                // given, and then the page exists.
                (Action::HashesPage, None) => {
                    gctx.update_unmeasured(PageType::Zero, gpa, u64::from(p.pages));
                    PageType::Zero
                }
                (Action::Unmeasured(t), _) => {
                    gctx.update_unmeasured(t, gpa, u64::from(p.pages));
                    t
                }
            };
            SectionStep {
                index: p.index,
                section: p.section.section_type,
                gpa: p.section.gpa,
                size: p.section.size,
                page_type,
                pages: p.pages,
                digest: gctx.ld(),
            }
        })
        .collect()
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

    use super::ovmf::tests::{Image, metadata, typical};
    use super::*;

    fn inputs(ovmf: &Ovmf) -> SnpInputs<'_> {
        SnpInputs {
            ovmf,
            direct_boot: None,
            vcpus: 2,
            vcpu_sig: 0x00a0_0f11,
            vmm: VmmType::Qemu,
            guest_features: DEFAULT_GUEST_FEATURES,
            ovmf_hash: None,
        }
    }

    fn with_sections(sections: &[(u32, u32, u32)]) -> Ovmf {
        let mut image = typical();
        image.metadata = Some(metadata(sections));
        Ovmf::from_bytes(image.build()).unwrap()
    }

    #[test]
    fn steps_follow_table_order() {
        let ovmf = Ovmf::from_bytes(typical().build()).unwrap();
        let m = launch_digest(&inputs(&ovmf)).unwrap();
        let order: Vec<_> = m
            .sections
            .iter()
            .map(|s| (s.section, s.page_type, s.pages))
            .collect();
        assert_eq!(
            order,
            [
                (SectionType::SnpSecMem, PageType::Zero, 9),
                (SectionType::SnpSecrets, PageType::Secrets, 1),
                (SectionType::Cpuid, PageType::Cpuid, 1),
                (SectionType::SvsmCaa, PageType::Zero, 1),
                (SectionType::SnpKernelHashes, PageType::Zero, 1),
            ]
        );
        assert_eq!(m.vmsas.len(), 2);
        assert_eq!(m.vmsas.last().unwrap().digest, m.digest);
        assert_eq!(m.firmware_hash, ovmf_hash(&ovmf).unwrap());
    }

    #[test]
    fn ec2_measures_cpuid_last_and_gce_sec_mem_unmeasured() {
        let ovmf = Ovmf::from_bytes(typical().build()).unwrap();
        let ec2 = launch_digest(&SnpInputs {
            vmm: VmmType::Ec2,
            ..inputs(&ovmf)
        })
        .unwrap();
        assert_eq!(ec2.sections.last().unwrap().section, SectionType::Cpuid);
        let gce = launch_digest(&SnpInputs {
            vmm: VmmType::Gce,
            ..inputs(&ovmf)
        })
        .unwrap();
        assert_eq!(gce.sections[0].page_type, PageType::Unmeasured);
    }

    #[test]
    fn given_firmware_hash_is_the_seed() {
        let ovmf = Ovmf::from_bytes(typical().build()).unwrap();
        let computed = launch_digest(&inputs(&ovmf)).unwrap();
        let given = launch_digest(&SnpInputs {
            ovmf_hash: Some(computed.firmware_hash),
            ..inputs(&ovmf)
        })
        .unwrap();
        assert_eq!(given.digest, computed.digest);
        assert!(given.firmware_hash_given);
    }

    #[test]
    fn unknown_section_type() {
        let ovmf = with_sections(&[(0x80_0000, 0x1000, 1), (0x80_1000, 0x1000, 5)]);
        assert!(matches!(
            launch_digest(&inputs(&ovmf)),
            Err(Error::UnknownSectionType {
                index: 1,
                section_type: 5
            })
        ));
    }

    #[test]
    fn section_not_page_aligned() {
        for (gpa, size) in [
            (0x80_0800, 0x1000),
            (0x80_0000, 0x1800),
            (0x80_0000, 0),
            (0xffff_f000, 0x2000),
        ] {
            let ovmf = with_sections(&[(gpa, size, 1)]);
            let got = launch_digest(&inputs(&ovmf));
            assert!(
                matches!(got, Err(Error::SectionAlignment { index: 0, gpa: g, size: s, .. }) if g == gpa && s == size),
                "{gpa:#x}+{size:#x}: {got:?}"
            );
        }
    }

    #[test]
    fn secrets_and_cpuid_must_be_one_page() {
        for t in [2, 3] {
            let ovmf = with_sections(&[(0x80_0000, 0x2000, t)]);
            assert!(matches!(
                launch_digest(&inputs(&ovmf)),
                Err(Error::SectionSize { size: 0x2000, .. })
            ));
        }
    }

    #[test]
    fn ap_reset_address_zero() {
        let mut image = typical();
        image.entries[0].1 = 0u32.to_le_bytes().to_vec();
        let ovmf = Ovmf::from_bytes(image.build()).unwrap();
        assert!(matches!(
            launch_digest(&inputs(&ovmf)),
            Err(Error::ApResetAddress { vcpus: 2 })
        ));
        // One vCPU needs no AP address.
        assert!(
            launch_digest(&SnpInputs {
                vcpus: 1,
                ..inputs(&ovmf)
            })
            .is_ok()
        );
    }

    #[test]
    fn image_not_whole_pages() {
        let mut data = typical().build();
        data.insert(0, 0);
        let ovmf = Ovmf::from_bytes(data).unwrap();
        assert!(matches!(
            launch_digest(&inputs(&ovmf)),
            Err(Error::FirmwarePageMultiple { size: 16385 })
        ));
        assert!(matches!(
            ovmf_hash(&ovmf),
            Err(Error::FirmwarePageMultiple { size: 16385 })
        ));
    }

    /// A small kernel file, removed when dropped.
    struct TempKernel(std::path::PathBuf);

    impl Drop for TempKernel {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    impl core::ops::Deref for TempKernel {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    fn kernel_file(name: &str) -> TempKernel {
        let path = std::env::temp_dir().join(format!(
            "provenix-unit-kernel-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, b"kernel").unwrap();
        TempKernel(path)
    }

    #[test]
    fn kernel_needs_hashes_section() {
        let kernel = kernel_file("hashes-section");
        let boot = DirectBoot {
            kernel: &kernel,
            initrd: None,
            cmdline: None,
        };
        let ovmf = with_sections(&[(0x80_0000, 0x1000, 1)]);
        assert!(matches!(
            launch_digest(&SnpInputs {
                direct_boot: Some(boot),
                ..inputs(&ovmf)
            }),
            Err(Error::NoKernelHashesSection {
                metadata_present: true
            })
        ));
        let mut image = typical();
        image.entries.truncate(2);
        image.metadata = None;
        let ovmf = Ovmf::from_bytes(image.build()).unwrap();
        assert!(matches!(
            launch_digest(&SnpInputs {
                direct_boot: Some(boot),
                ..inputs(&ovmf)
            }),
            Err(Error::NoKernelHashesSection {
                metadata_present: false
            })
        ));
    }

    #[test]
    fn kernel_hashes_area_checks() {
        let kernel = kernel_file("area-checks");
        let boot = DirectBoot {
            kernel: &kernel,
            initrd: None,
            cmdline: Some("console=ttyS0"),
        };
        let area = |base: u32, size: u32| {
            let mut image = typical();
            let mut v = base.to_le_bytes().to_vec();
            v.extend_from_slice(&size.to_le_bytes());
            image.entries[1].1 = v;
            Ovmf::from_bytes(image.build()).unwrap()
        };
        let run = |ovmf: &Ovmf| {
            launch_digest(&SnpInputs {
                direct_boot: Some(boot),
                ..inputs(ovmf)
            })
        };
        assert!(matches!(
            run(&area(0, 0x400)),
            Err(Error::HashesTableArea { base: 0, .. })
        ));
        assert!(matches!(
            run(&area(0x81_0c00, 175)),
            Err(Error::HashesTableArea { size: 175, .. })
        ));
        assert!(matches!(
            run(&area(0x81_0f80, 0x400)),
            Err(Error::HashesTablePlacement { offset: 0xf80 })
        ));
        let m = run(&area(0x81_0c00, 0x400)).unwrap();
        assert_eq!(m.sections[4].page_type, PageType::Normal);
        assert_eq!(m.hashes_table.unwrap(), m.kernel_hashes.unwrap().table());
        let mut image: Image = typical();
        image.entries.remove(1);
        assert!(matches!(
            run(&Ovmf::from_bytes(image.build()).unwrap()),
            Err(Error::MissingEntry {
                guid: SEV_HASH_TABLE_RV_GUID,
                ..
            })
        ));
    }

    #[test]
    fn svsm_only_on_qemu() {
        let ovmf = Ovmf::from_bytes(typical().build()).unwrap();
        let svsm = SvsmInputs {
            ovmf: &ovmf,
            svsm: &ovmf,
            vars_size: 0x1000,
            vcpus: 1,
            vcpu_sig: 0,
            vmm: VmmType::Gce,
        };
        assert!(matches!(
            svsm_launch_digest(&svsm),
            Err(Error::SvsmVmm(VmmType::Gce))
        ));
    }

    /// No input panics the whole computation: every single-byte change to
    /// the metadata and the footer table of a typical image, measured with
    /// a kernel, in every VMM type, computes or errs.
    #[test]
    fn mutated_images_never_panic() {
        let kernel = kernel_file("mutations");
        let boot = DirectBoot {
            kernel: &kernel,
            initrd: None,
            cmdline: Some("x"),
        };
        let data = typical().build();
        let n = data.len();
        let metadata = n - super::ovmf::tests::METADATA_FROM_END;
        // The metadata (16 + 5 * 12 bytes) and the footer table (the last
        // 32 bytes, the footer and three entries: under 160 bytes).
        let region = (metadata..metadata + 76).chain(n - 160..n);
        let (mut ok, mut refused) = (0, 0);
        for at in region {
            // Small flips keep section sizes small enough for a quick test;
            // the budget test below covers huge ones.
            for flip in [0x01, 0x08] {
                let mut m = data.clone();
                m[at] ^= flip;
                let Ok(ovmf) = Ovmf::from_bytes(m) else {
                    refused += 1;
                    continue;
                };
                for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
                    let run = launch_digest(&SnpInputs {
                        direct_boot: Some(boot),
                        vmm,
                        ..inputs(&ovmf)
                    });
                    if run.is_ok() { ok += 1 } else { refused += 1 }
                }
            }
        }
        // Some changes are harmless (a GPA, a hash area size), most refused.
        assert!(ok > 0 && refused > 0, "{ok} {refused}");
    }

    #[test]
    fn sections_beyond_the_page_budget() {
        // Three 2 GiB sections: each alone is valid, together they cover
        // more pages than exist below 4 GiB. Refused before any hashing.
        let ovmf = with_sections(&[
            (0, 0x8000_0000, 1),
            (0x8000_0000, 0x8000_0000, 1),
            (0, 0x8000_0000, 4),
        ]);
        assert!(matches!(
            launch_digest(&inputs(&ovmf)),
            Err(Error::SectionPages {
                pages: 0x18_0000,
                max: 0x10_0000
            })
        ));
    }

    #[test]
    fn vmsa_pages_by_vcpu() {
        let ovmf = Ovmf::from_bytes(typical().build()).unwrap();
        let m = launch_digest(&SnpInputs {
            vcpus: 3,
            ..inputs(&ovmf)
        })
        .unwrap();
        assert_ne!(m.vmsa_page(0), m.vmsa_page(1));
        assert_eq!(m.vmsa_page(1), m.vmsa_page(2));
        assert!(m.vmsa_page(3).is_none());
        assert_eq!(m.vmsas[2].vmsa_sha384, sha384(&m.vmsa_page(2).unwrap()[..]));
    }
}
