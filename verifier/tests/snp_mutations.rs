//! Mutations of the real vectors: each known-good report with one change,
//! rejected with the exact error variant that change must cause.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/evidence.rs"]
mod common;

use common::{Vector, vectors};
use provenix_firmware::Error as ParseError;
use provenix_firmware::snp::{AttestationReport, Product, SigningKey};
use provenix_verifier::{CertRole, Error, TrustAnchors, Verifier};

/// What a mutation must cause.
#[derive(Debug, PartialEq)]
enum Want {
    Reserved(usize),
    Version,
    SignatureAlgorithm,
    UnknownProduct,
    TcbMismatch(&'static str),
    ChipIdMismatch,
    ReportSignature,
}

fn outcome(verifier: &Verifier, v: &Vector, bytes: &[u8], vek: &[u8]) -> Result<(), Error> {
    let report = AttestationReport::from_bytes(bytes)?;
    verifier
        .authenticate(&report, vek, &v.chain, v.time())
        .map(|_| ())
}

fn matches(err: &Error, want: &Want) -> bool {
    match (err, want) {
        (Error::Parse(ParseError::ReservedNonZero { offset, .. }), Want::Reserved(at)) => {
            offset == at
        }
        (Error::Parse(ParseError::UnsupportedVersion(_)), Want::Version) => true,
        (Error::Parse(ParseError::SignatureAlgorithm(_)), Want::SignatureAlgorithm) => true,
        (Error::Parse(ParseError::UnknownProduct { .. }), Want::UnknownProduct) => true,
        (Error::TcbMismatch { component, .. }, Want::TcbMismatch(c)) => component == c,
        (Error::ChipIdMismatch { .. }, Want::ChipIdMismatch) => true,
        (Error::ReportSignature(_), Want::ReportSignature) => true,
        _ => false,
    }
}

/// The error flipping the top bit of byte `at` must cause, from the layout
/// (ABI spec Table 23) and what each check covers.
fn expected(v: &Vector, at: usize) -> Want {
    let r = &v.report;
    let turin = r.product() == Some(Product::Turin);
    let in_tcb = |base: usize| (base..base + 8).contains(&at);
    // Reserved bytes within a TCB_VERSION, by layout.
    let tcb_reserved = |base: usize| {
        let rel = at - base;
        if turin {
            (4..7).contains(&rel)
        } else {
            (2..6).contains(&rel)
        }
    };
    // Which component a TCB byte holds, by layout.
    let tcb_component = |base: usize| match (turin, at - base) {
        (true, 0) => "fmc",
        (true, 1) | (false, 0) => "bootloader",
        (true, 2) | (false, 1) => "tee",
        (true, 3) | (false, 6) => "snp",
        _ => "microcode",
    };
    let vcek_chip_check =
        r.key_info().signing_key().ok() == Some(SigningKey::Vcek) && !r.key_info().mask_chip_key();
    let hw_id_len = if turin { 8 } else { 64 };
    match at {
        0x000..0x004 => Want::Version,
        0x034..0x038 => Want::SignatureAlgorithm,
        0x048..0x04C => Want::Reserved(0x048),
        0x04C..0x050 => Want::Reserved(at),
        _ if [0x038, 0x180, 0x1E0, 0x1F0]
            .iter()
            .any(|&b| in_tcb(b) && tcb_reserved(b)) =>
        {
            Want::Reserved(at)
        }
        0x180..0x188 => Want::TcbMismatch(tcb_component(0x180)),
        0x188..0x18B if r.version() == 2 => Want::Reserved(at),
        0x188..0x18A => Want::UnknownProduct,
        0x18B..0x1A0 => Want::Reserved(at),
        0x1A0..0x1E0 if vcek_chip_check && at - 0x1A0 < hw_id_len => Want::ChipIdMismatch,
        0x1EB | 0x1EF => Want::Reserved(at),
        0x1F8..0x208 if r.version() < 5 => Want::Reserved(at),
        0x208..0x2A0 => Want::Reserved(at),
        0x2D0..0x2E8 | 0x318..0x4A0 => Want::Reserved(at),
        _ => Want::ReportSignature,
    }
}

#[test]
fn every_flipped_byte_is_rejected_with_its_variant() {
    let Some(vectors) = vectors() else { return };
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    let mut checked = 0;
    for v in &vectors {
        outcome(&verifier, v, &v.report_bytes, &v.vek)
            .unwrap_or_else(|e| panic!("{} unmutated: {e}", v.id));
        for at in 0..v.report_bytes.len() {
            let mut bytes = v.report_bytes.clone();
            bytes[at] ^= 0x80;
            let want = expected(v, at);
            match outcome(&verifier, v, &bytes, &v.vek) {
                Err(e) if matches(&e, &want) => checked += 1,
                other => panic!("{} byte {at:#05x}: want {want:?}, got {other:?}", v.id),
            }
        }
    }
    assert_eq!(checked, 10 * 1184);
}

/// A named mutation of one field, applied to every vector it fits.
#[test]
fn field_mutations() {
    let Some(vectors) = vectors() else { return };
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    for v in &vectors {
        let is_vcek = !v.is_vlek();
        // The report claims the other signing key.
        let mut b = v.report_bytes.clone();
        b[0x48] ^= 0b100;
        let err = outcome(&verifier, v, &b, &v.vek).unwrap_err();
        assert!(
            matches!(err, Error::SignerMismatch { .. }),
            "{}: {err}",
            v.id
        );

        // No signature at all.
        let mut b = v.report_bytes.clone();
        b[0x48] |= 0b111 << 2;
        let err = outcome(&verifier, v, &b, &v.vek).unwrap_err();
        assert!(matches!(err, Error::Unsigned), "{}: {err}", v.id);

        // MASK_CHIP_KEY set after the fact: no chip check, the signature fails.
        let mut b = v.report_bytes.clone();
        b[0x48] ^= 0b10;
        let err = outcome(&verifier, v, &b, &v.vek).unwrap_err();
        assert!(matches!(err, Error::ReportSignature(_)), "{}: {err}", v.id);

        // A v3+ report that claims another product than its VEK.
        // (Milan and Genoa share a TCB layout; a Turin report read as either
        // fails to parse instead, which the byte flips cover.)
        if let Some(product) = v.report.product().filter(|p| *p != Product::Turin) {
            let mut b = v.report_bytes.clone();
            let (family, model) = if product == Product::Genoa {
                (0x19, 0x01)
            } else {
                (0x19, 0x11)
            };
            b[0x188] = family;
            b[0x189] = model;
            let err = outcome(&verifier, v, &b, &v.vek).unwrap_err();
            assert!(
                matches!(err, Error::ProductMismatch { .. }),
                "{}: {err}",
                v.id
            );
        }

        // Truncated and extended.
        for len in [0, 1183, 1185] {
            let mut b = v.report_bytes.clone();
            b.resize(len, 0);
            let err = outcome(&verifier, v, &b, &v.vek).unwrap_err();
            assert!(
                matches!(err, Error::Parse(ParseError::ReportSize { .. })),
                "{}: {err}",
                v.id
            );
        }

        // Before the VEK's validity.
        let report = &v.report;
        let err = verifier
            .authenticate(report, &v.vek, &v.chain, common::date("2020-01-01"))
            .unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{}: {err}", v.id);

        // No trusted root.
        let err = Verifier::new(TrustAnchors::empty())
            .authenticate(report, &v.vek, &v.chain, v.time())
            .unwrap_err();
        assert!(
            matches!(err, Error::UntrustedRoot { .. }),
            "{}: {err}",
            v.id
        );

        // A VEK with a flipped signature byte does not chain.
        let mut vek = v.vek.clone();
        let last = vek.len() - 10;
        vek[last] ^= 1;
        let err = verifier
            .authenticate(report, &vek, &v.chain, v.time())
            .unwrap_err();
        let role = if is_vcek {
            CertRole::Vcek
        } else {
            CertRole::Vlek
        };
        assert!(
            matches!(err, Error::CertSignature { role: r, .. } if r == role),
            "{}: {err}",
            v.id
        );
    }
}

/// Each vector checked with every other product's chain: the intermediate
/// does not issue the VEK.
#[test]
fn wrong_products_chain() {
    let Some(vectors) = vectors() else { return };
    let dir = common::shared().unwrap().join("vectors/snp/amd-anchors");
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    for v in &vectors {
        for (product, file) in [
            (Product::Milan, "ask_ark_milan.pem"),
            (Product::Genoa, "ask_ark_genoa.pem"),
            (Product::Turin, "ask_ark_turin_vcek.pem"),
            (Product::Milan, "ask_ark_milan_vlek.pem"),
        ] {
            let chain = provenix_verifier::certificates_from_pem_or_der(
                &std::fs::read(dir.join(file)).unwrap(),
            )
            .unwrap();
            let own = v.product() == product.name() && (file.contains("vlek") == v.is_vlek());
            let result = verifier.authenticate(&v.report, &v.vek, &chain, v.time());
            if own {
                result.unwrap_or_else(|e| panic!("{} with {file}: {e}", v.id));
            } else {
                let err = result.unwrap_err();
                assert!(
                    matches!(err, Error::NoIssuer { .. }),
                    "{} with {file}: {err}",
                    v.id
                );
            }
        }
        // The right intermediate under another product's ARK.
        let other_ark = if v.product() == "Genoa" {
            "ask_ark_milan.pem"
        } else {
            "ask_ark_genoa.pem"
        };
        let mut chain = vec![v.chain[0].clone()];
        chain.push(
            provenix_verifier::certificates_from_pem_or_der(
                &std::fs::read(dir.join(other_ark)).unwrap(),
            )
            .unwrap()[1]
                .clone(),
        );
        let err = verifier
            .authenticate(&v.report, &v.vek, &chain, v.time())
            .unwrap_err();
        assert!(
            matches!(err, Error::UntrustedRoot { .. }),
            "{}: {err}",
            v.id
        );
    }
}

/// Every report checked with every other vector's VEK: the first binding
/// that differs decides the error.
#[test]
fn swapped_veks() {
    let Some(vectors) = vectors() else { return };
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    let mut by_kind = [0usize; 4];
    for a in &vectors {
        for b in &vectors {
            if a.id == b.id {
                continue;
            }
            let err = verifier
                .authenticate(&a.report, &b.vek, &b.chain, b.time())
                .unwrap_err();
            let kind = match &err {
                Error::SignerMismatch { .. } => 0,
                Error::ProductMismatch { .. } | Error::VersionProductMismatch { .. } => 1,
                Error::TcbMismatch { .. } => 2,
                Error::ChipIdMismatch { .. } => 3,
                other => panic!("{} with {}'s VEK: {other}", a.id, b.id),
            };
            // Same product and kind, same TCB: only the chip can differ.
            if a.product() == b.product()
                && a.is_vlek() == b.is_vlek()
                && a.report.reported_tcb() == b.report.reported_tcb()
                && !a.is_vlek()
            {
                assert_eq!(kind, 3, "{} with {}'s VEK: {err}", a.id, b.id);
            }
            by_kind[kind] += 1;
        }
    }
    // Each binding check was exercised by some pair.
    assert!(by_kind.iter().all(|&n| n > 0), "{by_kind:?}");
}
