//! Simulated reports of every version and product, through the same
//! verifier as real ones: accepted only when a policy pins the simulator's
//! root; every binding and every policy check can fail.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind, ark_fingerprint};
use provenix_firmware::snp::{AttestationReport, CertKind, CertTable, Product, TcbVersion};
use provenix_verifier::{CertRole, Error, Policy, Verifier};

/// 2026-06-01T00:00:00Z; the simulated VEKs are valid for a year around it.
const AT: i64 = 1_780_272_000;
const YEAR: i64 = 365 * 86_400;

fn tcb(product: Product) -> TcbVersion {
    TcbVersion {
        fmc: product.has_fmc().then_some(3),
        bootloader: 9,
        tee: 1,
        snp: 22,
        microcode: 0xD4,
    }
}

fn chain_params(product: Product, kind: VekKind) -> ChainParams {
    ChainParams {
        product,
        kind,
        tcb: tcb(product),
        hw_id: [0xC4; 64],
        not_before: AT - YEAR,
        not_after: AT + YEAR,
    }
}

fn report_params(version: u32, product: Product) -> ReportParams {
    ReportParams {
        version,
        product,
        tcb: tcb(product),
        chip_id: [0xC4; 64],
        measurement: [0x11; 48],
        report_data: [0x22; 64],
        host_data: [0x33; 32],
        guest_svn: 7,
        ..ReportParams::default()
    }
}

/// A policy trusting the simulator's root for `product` and nothing else.
/// A policy trusting the simulator's root for `product`, with `extra`
/// appended; it pins the measurement these tests' reports carry unless
/// `extra` names `measurements` itself.
fn sim_policy(product: Product, extra: &str) -> Policy {
    let pin = format!("measurements = [\"{}\"]\n", "11".repeat(48));
    let extra = if extra.contains("measurements") {
        extra.to_owned()
    } else if extra.contains("[snp]\n") {
        extra.replacen("[snp]\n", &format!("[snp]\n{pin}"), 1)
    } else {
        format!("[snp]\n{pin}{extra}")
    };
    Policy::from_toml(&format!(
        "trust_amd_roots = false\n[[roots]]\nname = \"provenix simulator\"\nproduct = \"{product}\"\nsha256 = \"{}\"\n{extra}",
        hex::encode(ark_fingerprint(product))
    ))
    .unwrap()
}

fn chain_of(platform: &SimPlatform) -> Vec<Vec<u8>> {
    vec![
        platform.chain().ask_der().to_vec(),
        platform.chain().ark_der().to_vec(),
    ]
}

fn cases() -> impl Iterator<Item = (u32, Product, VekKind)> {
    (2..=5u32).flat_map(|version| {
        Product::ALL
            .into_iter()
            .filter(move |p| !(version == 2 && p.has_fmc()))
            .flat_map(move |p| [VekKind::Vcek, VekKind::Vlek].map(|k| (version, p, k)))
    })
}

#[test]
fn every_version_and_product_verifies_when_the_policy_names_the_simulator() {
    let mut n = 0;
    for (version, product, kind) in cases() {
        let platform = SimPlatform::new(&chain_params(product, kind)).unwrap();
        let params = report_params(version, product);
        let report = platform.report(&params).unwrap();
        let what = format!("v{version} {product} {kind:?}");

        // Fields are what was asked for.
        assert_eq!(report.version(), version, "{what}");
        assert_eq!(
            report.product(),
            (version >= 3).then_some(product),
            "{what}"
        );
        assert_eq!(
            report.reported_tcb(),
            tcb(if version == 2 {
                Product::Milan
            } else {
                product
            }),
            "{what}"
        );
        assert_eq!(report.measurement(), &params.measurement, "{what}");
        assert_eq!(report.report_data(), &params.report_data, "{what}");
        assert_eq!(report.host_data(), &params.host_data, "{what}");
        assert_eq!(report.guest_svn(), 7, "{what}");

        let policy = sim_policy(product, "[snp]\nmax_vmpl = 0\n");
        let verifier = Verifier::new(policy.anchors().unwrap());
        let auth = verifier
            .authenticate(
                &report,
                platform.chain().vek_der(),
                &chain_of(&platform),
                AT,
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(auth.product(), product, "{what}");
        let want = if kind == VekKind::Vlek {
            CertRole::Vlek
        } else {
            CertRole::Vcek
        };
        assert_eq!(auth.signer(), want, "{what}");
        assert_eq!(auth.root_fingerprint(), &ark_fingerprint(product), "{what}");
        policy
            .appraise(auth)
            .unwrap_or_else(|e| panic!("{what}: {e}"));

        // The same evidence with AMD's roots only: the simulator is refused.
        let amd = Verifier::new(Policy::default().anchors().unwrap());
        let err = amd
            .authenticate(
                &report,
                platform.chain().vek_der(),
                &chain_of(&platform),
                AT,
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::UntrustedRoot { product: p, .. } if p == product),
            "{what}: {err}"
        );
        // And a pin for another product's simulated root does not help.
        let other = Product::ALL.into_iter().find(|p| *p != product).unwrap();
        let err = Verifier::new(sim_policy(other, "").anchors().unwrap())
            .authenticate(
                &report,
                platform.chain().vek_der(),
                &chain_of(&platform),
                AT,
            )
            .unwrap_err();
        assert!(matches!(err, Error::UntrustedRoot { .. }), "{what}: {err}");
        n += 1;
    }
    assert_eq!(n, 22);
}

#[test]
fn the_certificate_table_carries_the_chain() {
    for kind in [VekKind::Vcek, VekKind::Vlek] {
        let platform = SimPlatform::new(&chain_params(Product::Genoa, kind)).unwrap();
        let table = CertTable::from_bytes(&platform.cert_table().unwrap()).unwrap();
        let vek_kind = if kind == VekKind::Vcek {
            CertKind::Vcek
        } else {
            CertKind::Vlek
        };
        let vek = table.get(vek_kind).unwrap();
        let chain = vec![
            table.get(CertKind::Ask).unwrap().to_vec(),
            table.get(CertKind::Ark).unwrap().to_vec(),
        ];
        let report = platform.report(&report_params(3, Product::Genoa)).unwrap();
        let policy = sim_policy(Product::Genoa, "");
        Verifier::new(policy.anchors().unwrap())
            .authenticate(&report, vek, &chain, AT)
            .unwrap();
    }
}

#[test]
fn a_vcek_for_another_tcb_or_chip_is_refused() {
    for product in Product::ALL {
        let platform = SimPlatform::new(&chain_params(product, VekKind::Vcek)).unwrap();
        let verifier = Verifier::new(sim_policy(product, "").anchors().unwrap());
        let check = |params: ReportParams| {
            let report = platform.report(&params).unwrap();
            verifier.authenticate(
                &report,
                platform.chain().vek_der(),
                &chain_of(&platform),
                AT,
            )
        };
        // Each TCB component in turn one higher than the VCEK's.
        let components: &[&str] = if product.has_fmc() {
            &["fmc", "bootloader", "tee", "snp", "microcode"]
        } else {
            &["bootloader", "tee", "snp", "microcode"]
        };
        for component in components {
            let mut params = report_params(5, product);
            let t = &mut params.tcb;
            match *component {
                "fmc" => t.fmc = t.fmc.map(|f| f + 1),
                "bootloader" => t.bootloader += 1,
                "tee" => t.tee += 1,
                "snp" => t.snp += 1,
                _ => t.microcode += 1,
            }
            let err = check(params).unwrap_err();
            assert!(
                matches!(err, Error::TcbMismatch { component: c, .. } if c == *component),
                "{product} {component}: {err}"
            );
        }
        // Another chip.
        let mut params = report_params(5, product);
        params.chip_id[0] ^= 1;
        assert!(
            matches!(check(params).unwrap_err(), Error::ChipIdMismatch { .. }),
            "{product}"
        );
        // Turin compares CHIP_ID[0..8] only; the simulator zeroes the rest.
        let mut params = report_params(5, product);
        params.chip_id[9] ^= 1;
        let result = check(params);
        if product.has_fmc() {
            result.unwrap();
        } else {
            assert!(
                matches!(result.unwrap_err(), Error::ChipIdMismatch { .. }),
                "{product}"
            );
        }
        // A masked chip ID is not compared.
        let mut params = report_params(5, product);
        params.mask_chip_key = true;
        check(params).unwrap();
    }
}

#[test]
fn every_policy_check_reports_field_found_and_expected() {
    let platform = SimPlatform::new(&chain_params(Product::Milan, VekKind::Vcek)).unwrap();
    let params = ReportParams {
        // DEBUG, MIGRATE_MA, SMT, reserved bit 17, ABI 1.2.
        policy: 0x3_0000 | 1 << 18 | 1 << 19 | 0x0102,
        vmpl: 2,
        family_id: [1; 16],
        image_id: [2; 16],
        id_key_digest: [3; 48],
        author_key_digest: [4; 48],
        firmware: (1, 51, 3),
        ..report_params(5, Product::Milan)
    };
    let report = platform.report(&params).unwrap();
    let strict = sim_policy(
        Product::Milan,
        r#"
[snp]
allow_smt = false
require_single_socket = true
max_vmpl = 0
min_abi = "1.55"
products = ["Genoa"]
signers = ["VLEK"]
measurements = ["000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"]
host_data = "0000000000000000000000000000000000000000000000000000000000000000"
report_data = "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
id_key_digests = ["000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"]
author_key_digests = ["000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"]
min_guest_svn = 8
family_id = "00000000000000000000000000000000"
image_id = "00000000000000000000000000000000"
chip_ids = ["00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"]
[snp.min_tcb.Milan]
bootloader = 10
tee = 2
snp = 23
microcode = 255
fmc = 1
"#,
    );
    let verifier = Verifier::new(strict.anchors().unwrap());
    let auth = verifier
        .authenticate(
            &report,
            platform.chain().vek_der(),
            &chain_of(&platform),
            AT,
        )
        .unwrap();
    let rejection = strict.appraise(auth).unwrap_err();
    let fields: Vec<&str> = rejection.findings.iter().map(|f| f.field).collect();
    assert_eq!(
        fields,
        [
            "policy.debug",
            "policy.migrate_ma",
            "policy.smt",
            "policy.single_socket",
            "vmpl",
            "current_version",
            "product",
            "signing_key",
            "reported_tcb.fmc",
            "reported_tcb.bootloader",
            "reported_tcb.tee",
            "reported_tcb.snp",
            "reported_tcb.microcode",
            "measurement",
            "host_data",
            "report_data",
            "id_key_digest",
            "author_key_en",
            "author_key_digest",
            "guest_svn",
            "family_id",
            "image_id",
            "chip_id",
        ]
    );
    let vmpl = &rejection.findings[4];
    assert_eq!(
        (vmpl.found.as_str(), vmpl.expected.as_str()),
        ("2", "at most 0")
    );
    assert!(
        rejection
            .to_string()
            .contains("guest_svn: found 7, expected at least 8"),
        "{rejection}"
    );
}

#[test]
fn policy_bits_the_spec_reserves_are_refused() {
    let platform = SimPlatform::new(&chain_params(Product::Milan, VekKind::Vcek)).unwrap();
    let policy = sim_policy(Product::Milan, "");
    let verifier = Verifier::new(policy.anchors().unwrap());
    for (bits, field) in [(0x1_0000u64, "policy"), (0x3_0000 | 1 << 40, "policy")] {
        let report = platform
            .report(&ReportParams {
                policy: bits,
                ..report_params(5, Product::Milan)
            })
            .unwrap();
        let auth = verifier
            .authenticate(
                &report,
                platform.chain().vek_der(),
                &chain_of(&platform),
                AT,
            )
            .unwrap();
        let rejection = policy.appraise(auth).unwrap_err();
        assert_eq!(rejection.findings[0].field, field, "{bits:#x}");
    }
}

#[test]
fn bad_policies_are_errors_that_name_the_field() {
    for (text, needle) in [
        ("[snp]\nmeasurements = [\"abcd\"]\n", "48 bytes"),
        ("[snp]\nmax_vmpl = -1\n", "max_vmpl"),
        ("[snp]\nmin_abi = \"1\"\n", "MAJOR.MINOR"),
        ("[snp]\nproducts = [\"Venice\"]\n", "Venice"),
        ("[snp]\nallow_debugg = true\n", "allow_debugg"),
        ("[[roots]]\nname = \"x\"\nproduct = \"Milan\"\n", "sha256"),
        ("[snp.min_tcb.Milan]\nsnp = 300\n", "snp"),
    ] {
        let err = Policy::from_toml(text).unwrap_err();
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}

#[test]
fn a_report_is_verified_as_received() {
    // Re-serialising is never involved: the bytes that parse are the bytes
    // that are hashed, so a report differing only outside the signed range
    // in a reserved byte is refused, not normalised.
    let platform = SimPlatform::new(&chain_params(Product::Turin, VekKind::Vcek)).unwrap();
    let mut bytes = platform
        .report_bytes(&report_params(5, Product::Turin))
        .unwrap();
    bytes[0x4A0 - 1] = 1;
    assert!(AttestationReport::from_bytes(&bytes).is_err());
}

#[test]
fn a_crl_is_honoured() {
    use provenix_firmware::sim::crl;
    use provenix_verifier::Crl;
    for kind in [VekKind::Vcek, VekKind::Vlek] {
        let product = Product::Genoa;
        let platform = SimPlatform::new(&chain_params(product, kind)).unwrap();
        let report = platform.report(&report_params(5, product)).unwrap();
        let policy = sim_policy(product, "");
        let check = |crl_der: &[u8]| {
            let mut verifier = Verifier::new(policy.anchors().unwrap());
            verifier.add_crl(Crl::from_bytes(crl_der)?);
            verifier.authenticate(
                &report,
                platform.chain().vek_der(),
                &chain_of(&platform),
                AT,
            )
        };
        let role = if kind == VekKind::Vcek {
            CertRole::Ask
        } else {
            CertRole::Asvk
        };

        // Current, revoking nothing: accepted.
        check(&crl(product, kind, false, AT - 86_400, AT + 86_400).unwrap()).unwrap();
        // Current, revoking the intermediate: refused, naming it.
        let err = check(&crl(product, kind, true, AT - 86_400, AT + 86_400).unwrap()).unwrap_err();
        assert!(
            matches!(err, Error::Revoked { role: r, .. } if r == role),
            "{kind:?}: {err}"
        );
        // Stale (next update due before the verification time).
        let err =
            check(&crl(product, kind, false, AT - 2 * 86_400, AT - 86_400).unwrap()).unwrap_err();
        assert!(
            matches!(err, Error::Crl(ref m) if m.contains("stale")),
            "{kind:?}: {err}"
        );
        // Issued after the verification time.
        let err =
            check(&crl(product, kind, false, AT + 86_400, AT + 2 * 86_400).unwrap()).unwrap_err();
        assert!(matches!(err, Error::Crl(_)), "{kind:?}: {err}");
        // A forged CRL: one byte of the signed list changed.
        let mut forged = crl(product, kind, false, AT - 86_400, AT + 86_400).unwrap();
        let at = forged.len() - 600;
        forged[at] ^= 1;
        let err = check(&forged).unwrap_err();
        assert!(
            matches!(err, Error::Crl(ref m) if m.contains("signature") || m.contains("DER")),
            "{kind:?}: {err}"
        );
        // Another product's CRL does not speak for this chain.
        check(&crl(Product::Milan, kind, true, AT - 86_400, AT + 86_400).unwrap()).unwrap();
    }
    // Not a CRL at all.
    assert!(matches!(Crl::from_bytes(b"not a crl"), Err(Error::Crl(_))));
}

/// `[snp] host_data` pins one deployment's settings, or any of several.
#[test]
fn host_data_is_one_value_or_one_of_a_list() {
    let platform = SimPlatform::new(&chain_params(Product::Milan, VekKind::Vcek)).unwrap();
    let report = platform.report(&report_params(5, Product::Milan)).unwrap();
    let appraise = |host_data: &str| {
        let policy = sim_policy(Product::Milan, &format!("[snp]\nhost_data = {host_data}\n"));
        let auth = Verifier::new(policy.anchors().unwrap())
            .authenticate(
                &report,
                platform.chain().vek_der(),
                &chain_of(&platform),
                AT,
            )
            .unwrap();
        policy.appraise(auth).map(|_| ())
    };
    let (ours, other) = (
        format!("{:?}", "33".repeat(32)),
        format!("{:?}", "44".repeat(32)),
    );
    appraise(&ours).unwrap();
    appraise(&format!("[{other}, {ours}]")).unwrap();
    for refused in [other.clone(), format!("[{other}]"), "[]".to_owned()] {
        let rejection = appraise(&refused).unwrap_err();
        let fields: Vec<&str> = rejection.findings.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["host_data"], "{refused}");
    }
    let bad = Policy::from_toml(&format!("[snp]\nhost_data = [{ours}, \"33\"]\n")).unwrap_err();
    assert!(format!("{bad:#}").contains("64 hex digits"), "{bad:#}");
}
