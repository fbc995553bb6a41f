//! `AttestationReport::from_bytes` on arbitrary bytes: parsing never panics,
//! and once a report parses, no accessor panics and the accessors agree with
//! the bytes received (the parser keeps the report as received; ABI spec
//! Table 23 for the offsets).

#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_firmware::snp::{AttestationReport, Product, REPORT_SIZE, SIGNED_RANGE};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = AttestationReport::from_bytes(data) else {
        return;
    };

    // The report is the bytes received, and the signed part is a prefix of
    // them (SIGNED_RANGE, 0x000..0x2A0).
    assert_eq!(data.len(), REPORT_SIZE);
    assert_eq!(report.as_bytes().as_slice(), data);
    assert_eq!(Some(report.signed_bytes()), data.get(SIGNED_RANGE));

    // Fields the parser refuses to guess about.
    let version = report.version();
    assert!((2..=5).contains(&version), "version {version} accepted");
    assert_eq!(report.signature_algo(), 1);
    let key_info = report.key_info();
    let signing_key = key_info.signing_key();
    assert!(
        signing_key.is_ok(),
        "{signing_key:?} after a successful parse"
    );
    let _ = (key_info.author_key_en(), key_info.mask_chip_key());

    // CPUID and product: present from v3 on, and they agree.
    let cpuid = report.cpuid();
    assert_eq!(cpuid.is_some(), version >= 3);
    let product = report.product();
    assert_eq!(
        product,
        cpuid.and_then(|c| Product::from_cpuid(c.family, c.model, c.stepping).ok())
    );
    if let Some(p) = product {
        let _ = (p.name(), p.has_fmc(), p.hw_id_len(), p.to_string());
    }

    // Every TCB decodes, and encodes back to the bytes it came from in the
    // layout it was decoded in (Milan/Genoa for v2).
    let layout = product.unwrap_or(Product::Milan);
    for (tcb, offset) in [
        (report.current_tcb(), 0x038),
        (report.reported_tcb(), 0x180),
        (report.committed_tcb(), 0x1E0),
        (report.launch_tcb(), 0x1F0),
    ] {
        assert_eq!(
            Some(&tcb.encode(layout)[..]),
            data.get(offset..offset + 8),
            "TCB at {offset:#x} does not round-trip"
        );
        assert_eq!(tcb.fmc.is_some(), layout.has_fmc());
        assert!(tcb.meets(&tcb));
        let _ = (tcb.components().count(), tcb.to_string());
    }

    // The mitigation vectors exist from v5 on.
    assert_eq!(report.launch_mit_vector().is_some(), version >= 5);
    assert_eq!(report.current_mit_vector().is_some(), version >= 5);

    // Everything else: call it, format it.
    let policy = report.policy();
    let _ = (
        policy.abi_major(),
        policy.abi_minor(),
        policy.smt(),
        policy.migrate_ma(),
        policy.debug(),
        policy.single_socket(),
        policy.cxl_allow(),
        policy.mem_aes_256_xts(),
        policy.rapl_dis(),
        policy.ciphertext_hiding(),
        policy.page_swap_disable(),
        policy.unknown_bits(),
    );
    let platform_info = report.platform_info();
    let _ = (platform_info.smt_en(), platform_info.tsme_en());
    for n in 0..=64 {
        let _ = platform_info.bit(n);
    }
    let _ = (
        report.guest_svn(),
        report.family_id(),
        report.image_id(),
        report.vmpl(),
        report.report_data(),
        report.measurement(),
        report.host_data(),
        report.id_key_digest(),
        report.author_key_digest(),
        report.report_id(),
        report.report_id_ma(),
        report.chip_id(),
        report.current_version().to_string(),
        report.committed_version().to_string(),
    );
    // R and S are the low 48 bytes of their 72-byte fields (ABI spec
    // Table 142) at 0x2A0 and 0x2E8.
    assert_eq!(Some(&report.signature_r()[..]), data.get(0x2A0..0x2D0));
    assert_eq!(Some(&report.signature_s()[..]), data.get(0x2E8..0x318));
    let _ = format!("{report:?}");
    if let Ok(key) = signing_key {
        let _ = key.to_string();
    }
});
