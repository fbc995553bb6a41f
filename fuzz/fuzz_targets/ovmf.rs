//! `Ovmf::from_bytes` on the tail of a firmware image: parsing never
//! panics, the accessors agree with the footer table they came from, and
//! the launch digests of a parsed image compute or fail, never panic.
//!
//! The input is the end of an image: everything OVMF's footer table and
//! SEV metadata hold sits in its last pages, found from the end. The image
//! measured is `zeros || data`, padded at the front to whole pages (at
//! least one), so that every input reaches the table and metadata parsers
//! and the page hashing rather than being refused for its size.
//!
//! Inputs over [`MAX_IMAGE`] are skipped: under 64 pages the page digests
//! are computed on the calling thread, so one run uses one core.

#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_measurements::snp::{
    self, FOOTER_GUID, MAX_SECTIONS, Ovmf, PAGE_SIZE, SEV_ES_RESET_BLOCK_GUID,
    SEV_HASH_TABLE_RV_GUID, SEV_METADATA_GUID, SnpInputs, SvsmInputs, VmmType,
};
use ring::digest::{SHA384, digest};

/// Largest image built: 63 pages.
const MAX_IMAGE: usize = 63 * PAGE_SIZE;

/// Skip the launch digests when the sections add up to more pages than
/// this (a real OVMF declares about 50): each page is one SHA-384, and the
/// library's own budget of 2^20 pages would cost a second per run. Above
/// that budget it refuses before hashing, so those still run.
const MAX_MEASURED_PAGES: u64 = 1 << 12;
const SECTION_PAGE_BUDGET: u64 = 1 << 20;

/// `zeros || data`, a whole number of pages, at least one.
fn image(data: &[u8]) -> Vec<u8> {
    let len = data.len().div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
    let mut image = vec![0; len - data.len()];
    image.extend_from_slice(data);
    image
}

/// The first little-endian `u32` of `entry` at `at`, as the accessors read
/// it.
fn le_u32(entry: &[u8], at: usize) -> Option<u32> {
    entry
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn inputs(ovmf: &Ovmf, vmm: VmmType, ovmf_hash: Option<snp::Digest384>) -> SnpInputs<'_> {
    SnpInputs {
        ovmf,
        direct_boot: None,
        vcpus: 1,
        vcpu_sig: 0x00a0_0f11,
        vmm,
        guest_features: 0x1,
        ovmf_hash,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_IMAGE {
        return;
    }
    let image = image(data);
    let pages = image.len() / PAGE_SIZE;
    let ovmf = match Ovmf::from_bytes(image.clone()) {
        Ok(ovmf) => ovmf,
        Err(e) => {
            let _ = (e.to_string(), format!("{e:?}"));
            return;
        }
    };

    // The image is kept as given.
    assert_eq!(ovmf.data(), &image[..]);
    let _ = format!("{ovmf:?}");

    // The footer table exists iff the footer GUID ends 32 bytes before the
    // end of the image; its GUIDs are distinct and each entry lies in the
    // image.
    let footer_guid = &image[image.len() - 48..image.len() - 32];
    assert_eq!(ovmf.has_footer_table(), footer_guid == FOOTER_GUID.0);
    let guids: Vec<_> = ovmf.table_guids().collect();
    for (i, guid) in guids.iter().enumerate() {
        assert!(!guids[..i].contains(guid), "{guid} appears twice");
        let entry = ovmf.entry(*guid);
        assert!(entry.is_some(), "{guid} listed but has no data");
        let _ = guid.to_string();
    }
    if !ovmf.has_footer_table() {
        assert!(guids.is_empty());
    }

    // Metadata: present iff its entry is (a bad one is refused), and
    // bounded.
    assert_eq!(ovmf.has_metadata(), ovmf.entry(SEV_METADATA_GUID).is_some());
    let sections = ovmf.sections();
    assert!(sections.len() <= MAX_SECTIONS as usize);
    if !ovmf.has_metadata() {
        assert!(sections.is_empty());
    }
    for s in sections {
        let _ = s.section_type.to_string();
    }

    // The reset block and the hashes table area are the entries' first
    // u32s, read the way the entries hold them.
    let eip = ovmf.sev_es_reset_eip();
    let expected_eip = ovmf
        .entry(SEV_ES_RESET_BLOCK_GUID)
        .and_then(|e| le_u32(e, 0));
    assert_eq!(eip.as_ref().ok().copied(), expected_eip);
    if let Err(e) = &eip {
        let _ = e.to_string();
    }
    let area = ovmf.hashes_table_area();
    match ovmf.entry(SEV_HASH_TABLE_RV_GUID) {
        None => assert!(matches!(area, Ok(None))),
        Some(entry) => match (le_u32(entry, 0), le_u32(entry, 4)) {
            (Some(base), Some(size)) => {
                let area = area.ok().flatten();
                assert_eq!(area.map(|a| (a.base, a.size)), Some((base, size)));
            }
            _ => assert!(area.is_err(), "short hashes table entry: {area:?}"),
        },
    }
    let _ = ovmf.svsm_entry_offset();

    // One SHA-384 per page; check the last one independently.
    let digests = match ovmf.page_digests() {
        Ok(d) => d,
        Err(e) => panic!("whole pages, yet {e}"),
    };
    assert_eq!(digests.len(), pages);
    let last = digest(&SHA384, &image[image.len() - PAGE_SIZE..]);
    assert_eq!(digests.last().map(|d| &d[..]), Some(last.as_ref()));

    // Launch digests. Skipped when the sections alone would take long (see
    // MAX_MEASURED_PAGES), except where the library refuses before hashing.
    let section_pages: u64 = sections.iter().map(|s| u64::from(s.size / 4096)).sum();
    if section_pages > MAX_MEASURED_PAGES && section_pages <= SECTION_PAGE_BUDGET {
        return;
    }

    let computed = snp::launch_digest(&inputs(&ovmf, VmmType::Qemu, None));
    let given = snp::launch_digest(&inputs(&ovmf, VmmType::Qemu, Some([0; 48])));
    // The image is whole pages, so a given firmware hash changes nothing
    // that can be refused.
    assert_eq!(
        computed.is_ok(),
        given.is_ok(),
        "{computed:?} but with a given firmware hash {given:?}"
    );
    match &computed {
        Ok(m) => {
            assert!(!m.firmware_hash_given);
            assert_eq!(Some(m.firmware_hash), snp::ovmf_hash(&ovmf).ok());
            assert_eq!(m.sections.len(), sections.len());
            assert_eq!(m.vmsas.len(), 1);
            assert_eq!(m.vmsas.last().map(|v| v.digest), Some(m.digest));
            assert!(m.vmsa_page(0).is_some() && m.vmsa_page(1).is_none());
            assert!(m.kernel_hashes.is_none() && m.hashes_table.is_none());
            // Giving the firmware hash just computed gives the same digest.
            let again = snp::launch_digest(&inputs(&ovmf, VmmType::Qemu, Some(m.firmware_hash)));
            assert_eq!(again.ok().map(|a| a.digest), Some(m.digest));
            // Other VMMs order or measure sections differently, but accept
            // the same images.
            for vmm in [VmmType::Ec2, VmmType::Gce] {
                let other = snp::launch_digest(&inputs(&ovmf, vmm, Some(m.firmware_hash)));
                assert!(other.is_ok(), "QEMU accepts, {vmm} says {other:?}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(m) = &given {
        assert!(m.firmware_hash_given);
        assert_eq!(m.firmware_hash, [0; 48]);
    }

    // SEV-ES and COCONUT-SVSM (this image as both OVMF and SVSM): compute
    // or fail, never panic.
    let _ = snp::seves_launch_digest(&ovmf, None, 1, 0x00a0_0f11, VmmType::Qemu);
    let _ = snp::svsm_launch_digest(&SvsmInputs {
        ovmf: &ovmf,
        svsm: &ovmf,
        vars_size: 0x2_0000,
        vcpus: 1,
        vcpu_sig: 0x00a0_0f11,
        vmm: VmmType::Qemu,
    });
});
