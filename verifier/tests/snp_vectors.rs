//! The ten real-hardware vectors in `../shared/vectors/snp`: every parsed
//! field equals `vectors.json`, and each verifies or fails exactly as its
//! README says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/evidence.rs"]
mod common;

use common::{Vector, today, vectors};
use provenix_firmware::snp::{Product, TcbVersion};
use provenix_verifier::{CertRole, Error, Policy, TrustAnchors, Verifier};
use serde_json::Value;

fn hex_field(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing"))
        .to_owned()
}

fn u64_hex(v: &Value, key: &str) -> u64 {
    u64::from_str_radix(hex_field(v, key).trim_start_matches("0x"), 16).unwrap()
}

fn check_tcb(id: &str, name: &str, tcb: TcbVersion, raw: &[u8; 8], json: &Value) {
    assert_eq!(
        hex::encode(raw),
        json["raw"].as_str().unwrap(),
        "{id} {name} raw"
    );
    assert_eq!(
        u64::from(tcb.bootloader),
        json["bl"].as_u64().unwrap(),
        "{id} {name}.bl"
    );
    assert_eq!(
        u64::from(tcb.tee),
        json["tee"].as_u64().unwrap(),
        "{id} {name}.tee"
    );
    assert_eq!(
        u64::from(tcb.snp),
        json["snp"].as_u64().unwrap(),
        "{id} {name}.snp"
    );
    assert_eq!(
        u64::from(tcb.microcode),
        json["ucode"].as_u64().unwrap(),
        "{id} {name}.ucode"
    );
    assert_eq!(
        tcb.fmc.map(u64::from),
        json["fmc"].as_u64(),
        "{id} {name}.fmc"
    );
}

#[test]
fn every_parsed_field_equals_vectors_json() {
    let Some(vectors) = vectors() else { return };
    assert_eq!(vectors.len(), 10);
    for Vector {
        id,
        json: j,
        report: r,
        report_bytes,
        ..
    } in &vectors
    {
        let id = id.as_str();
        assert_eq!(
            u64::from(r.version()),
            j["report_version"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(
            r.key_info().signing_key().unwrap().to_string(),
            hex_field(j, "signing_key"),
            "{id}"
        );
        assert_eq!(
            u64::from(r.signature_algo()),
            j["sig_algo"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(u64::from(r.vmpl()), j["vmpl"].as_u64().unwrap(), "{id}");
        assert_eq!(
            u64::from(r.guest_svn()),
            j["guest_svn"].as_u64().unwrap(),
            "{id}"
        );
        let policy = r.policy();
        assert_eq!(policy.0, u64_hex(j, "policy_hex"), "{id}");
        let flags = &j["policy_flags"];
        assert_eq!(
            format!("{}.{}", policy.abi_major(), policy.abi_minor()),
            hex_field(flags, "abi"),
            "{id}"
        );
        assert_eq!(
            u64::from(policy.smt()),
            flags["smt"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(
            u64::from(policy.migrate_ma()),
            flags["migrate_ma"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(
            u64::from(policy.debug()),
            flags["debug"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(
            u64::from(policy.single_socket()),
            flags["single_socket"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(r.platform_info().0, u64_hex(j, "platform_info_hex"), "{id}");
        assert_eq!(
            hex::encode(r.measurement()),
            hex_field(j, "measurement"),
            "{id}"
        );
        assert_eq!(
            hex::encode(r.report_data()),
            hex_field(j, "report_data"),
            "{id}"
        );
        assert_eq!(
            hex::encode(r.host_data()),
            hex_field(j, "host_data"),
            "{id}"
        );
        assert_eq!(
            hex::encode(r.family_id()),
            hex_field(j, "family_id"),
            "{id}"
        );
        assert_eq!(hex::encode(r.image_id()), hex_field(j, "image_id"), "{id}");
        assert_eq!(
            hex::encode(r.id_key_digest()),
            hex_field(j, "id_key_digest"),
            "{id}"
        );
        assert_eq!(
            u64::from(r.key_info().author_key_en()),
            j["author_key_en"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(
            u64::from(r.key_info().mask_chip_key()),
            j["mask_chip_key"].as_u64().unwrap(),
            "{id}"
        );
        assert_eq!(hex::encode(r.chip_id()), hex_field(j, "chip_id"), "{id}");
        assert_eq!(
            r.current_version().to_string(),
            hex_field(j, "current_fw"),
            "{id}"
        );
        assert_eq!(
            r.committed_version().to_string(),
            hex_field(j, "committed_fw"),
            "{id}"
        );

        let raw = |at: usize| -> [u8; 8] { report_bytes[at..at + 8].try_into().unwrap() };
        check_tcb(
            id,
            "reported_tcb",
            r.reported_tcb(),
            &raw(0x180),
            &j["reported_tcb"],
        );
        check_tcb(
            id,
            "current_tcb",
            r.current_tcb(),
            &raw(0x038),
            &j["current_tcb"],
        );
        check_tcb(
            id,
            "committed_tcb",
            r.committed_tcb(),
            &raw(0x1E0),
            &j["committed_tcb"],
        );
        check_tcb(
            id,
            "launch_tcb",
            r.launch_tcb(),
            &raw(0x1F0),
            &j["launch_tcb"],
        );

        // The product: from CPUID on v3+, absent on v2 (the VEK names it).
        let product = hex_field(j, "product");
        match r.product() {
            Some(p) => assert_eq!(p.name(), product, "{id}"),
            None => assert!(
                r.version() == 2 && product.contains("v2 report has no CPUID"),
                "{id}"
            ),
        }
        assert_eq!(r.cpuid().is_some(), r.version() >= 3, "{id}");
        assert_eq!(r.launch_mit_vector().is_some(), r.version() >= 5, "{id}");
    }
    // Values the READMEs call out.
    let by_id = |id: &str| vectors.iter().find(|v| v.id == id).unwrap();
    assert_eq!(by_id("oak-genoa-v5").report.launch_mit_vector(), Some(1));
    assert_eq!(by_id("oak-genoa-v5").report.current_mit_vector(), Some(1));
    assert_eq!(by_id("oak-turin-v5").report.current_mit_vector(), Some(0));
    let vlek = by_id("trustee-milan-v3-vlek-aws").report.cpuid().unwrap();
    assert_eq!((vlek.family, vlek.model, vlek.stepping), (0x19, 0x01, 1));
    assert_eq!(
        by_id("mstav-turin-v5-fmc1").report.reported_tcb().fmc,
        Some(1)
    );
}

#[test]
fn every_vector_authenticates_with_the_embedded_amd_roots() {
    let Some(vectors) = vectors() else { return };
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    for v in &vectors {
        // With the vector's own chain, and with none (the embedded ASK/ASVK).
        for chain in [v.chain.clone(), vec![]] {
            let auth = verifier
                .authenticate(&v.report, &v.vek, &chain, v.time())
                .unwrap_or_else(|e| panic!("{}: {e}", v.id));
            assert_eq!(auth.product().name(), v.product(), "{}", v.id);
            let want = if v.is_vlek() {
                CertRole::Vlek
            } else {
                CertRole::Vcek
            };
            assert_eq!(auth.signer(), want, "{}", v.id);
            let der_sha256 = ring::digest::digest(&ring::digest::SHA256, &v.vek);
            assert_eq!(
                auth.vek_fingerprint().as_slice(),
                der_sha256.as_ref(),
                "{}",
                v.id
            );
        }
    }
}

#[test]
fn outcomes_match_the_readmes() {
    let Some(vectors) = vectors() else { return };
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    // The READMEs' outcomes are about the report's fields: debug and
    // migration agents forbidden (the default), any launch measurement.
    let strict = Policy::from_toml("measurements = \"any\"\n").unwrap();
    let vmpl0 = Policy::from_toml("measurements = \"any\"\n[snp]\nmax_vmpl = 0\n").unwrap();
    for v in &vectors {
        let auth = verifier
            .authenticate(&v.report, &v.vek, &v.chain, v.time())
            .unwrap();
        // Fail closed: the default policy pins no measurement, so it
        // accepts no real report, whatever else holds; pinning the
        // report's own measurement lifts exactly that finding.
        let unpinned = Policy::default().appraise(auth.clone()).unwrap_err();
        assert!(
            unpinned.findings.iter().any(|f| f.field == "measurement"),
            "{}: {unpinned}",
            v.id
        );
        let pinned = Policy::from_toml(&format!(
            "[snp]\nmeasurements = [\"{}\"]\n",
            hex::encode(auth.report().measurement())
        ))
        .unwrap();
        assert_eq!(
            pinned.appraise(auth.clone()).is_ok(),
            strict.appraise(auth.clone()).is_ok(),
            "{}",
            v.id
        );
        let verdict = strict.appraise(auth.clone());
        match v.id.as_str() {
            "gsg-milan-v2-debug" => {
                let rejection = verdict.unwrap_err();
                assert_eq!(rejection.findings.len(), 1, "{rejection}");
                assert_eq!(rejection.findings[0].field, "policy.debug");
            }
            "trustee-milan-v3-vlek-aws" => {
                verdict.unwrap();
                let rejection = vmpl0.appraise(auth).unwrap_err();
                assert_eq!(rejection.findings[0].field, "vmpl");
                assert_eq!(rejection.findings[0].found, "1");
            }
            _ => {
                verdict.unwrap_or_else(|e| panic!("{}: {e}", v.id));
            }
        }
    }
}

#[test]
fn the_aws_vlek_is_expired_today_and_valid_inside_its_window() {
    let Some(vectors) = vectors() else { return };
    let v = vectors.iter().find(|v| v.is_vlek()).unwrap();
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    match verifier.authenticate(&v.report, &v.vek, &v.chain, today()) {
        Err(Error::Expired {
            role: CertRole::Vlek,
            not_after,
            ..
        }) => {
            assert_eq!(
                not_after,
                common::date("2025-12-10") + 22 * 3600 + 14 * 60 + 21
            );
        }
        other => panic!("{other:?}"),
    }
    // The same cached chain, inside the window, then outside again.
    verifier
        .authenticate(&v.report, &v.vek, &v.chain, common::vlek_time())
        .unwrap();
    assert!(matches!(
        verifier.authenticate(&v.report, &v.vek, &v.chain, common::date("2024-01-01")),
        Err(Error::Expired { .. })
    ));
    // The VLEK carries the cloud provider.
    let auth = verifier
        .authenticate(&v.report, &v.vek, &v.chain, common::vlek_time())
        .unwrap();
    assert_eq!(auth.csp_id(), Some("CN=cc-us-east-2.amazonaws.com"));
}

#[test]
fn turin_tcb_uses_the_turin_layout() {
    let Some(vectors) = vectors() else { return };
    let v = vectors
        .iter()
        .find(|v| v.id == "mstav-turin-v5-fmc1")
        .unwrap();
    assert_eq!(v.report.product(), Some(Product::Turin));
    let tcb = v.report.reported_tcb();
    assert_eq!(
        (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
        (Some(1), 1, 1, 4, 81)
    );
}

#[test]
fn doctored_vceks_do_not_chain() {
    let Some(dir) = common::shared() else { return };
    let vectors = vectors().unwrap();
    let v = vectors
        .iter()
        .find(|v| v.id == "trustee-milan-v2-idblock")
        .unwrap();
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    for name in ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"] {
        let der = std::fs::read(dir.join("vectors/snp/trustee").join(name)).unwrap();
        let err = verifier
            .authenticate(&v.report, &der, &v.chain, v.time())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::CertSignature {
                    role: CertRole::Vcek,
                    issuer: CertRole::Ask
                }
            ),
            "{name}: {err}"
        );
    }
}
