//! Cloud vTPMs end to end against a real software TPM (swtpm) provisioned
//! the way the clouds provision theirs, since no cloud is reachable here:
//!
//! - GCP: an AK template in NV (0x01c10001 RSA, 0x01c10003 ECC) and a
//!   certificate from a test "cloud CA" for the key TPM2_CreatePrimary
//!   makes from it in the endorsement hierarchy (0x01c10000, 0x01c10002).
//!   The worker, given no `--ak-cert`, quotes with that key.
//! - Azure: the paravisor's AK persistent at 0x81000003 and an HCL report
//!   in NV 0x01400001 whose SNP report (from the simulator) binds runtime
//!   data naming that AK. The worker, on `--platform azure`, quotes with it.
//!
//! The verifier accepts each under a policy naming the right root and
//! refuses each broken link by its reason.

// Test code: a failed unwrap is a failed test.
#![cfg(feature = "tpm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod common;
#[path = "../../tests/support/swtpm.rs"]
mod swtpm;

use common::{TestCa, pem_certificates, shared, unix_now};

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind};
use provenix_firmware::snp::Product;
use provenix_firmware::tpm::EventLog;
use provenix_firmware::tpm::device::{
    AZURE_AK_HANDLE, AkKind, GCP_AK_CERT_ECC_NV, GCP_AK_CERT_RSA_NV, GCP_AK_TEMPLATE_ECC_NV,
    GCP_AK_TEMPLATE_RSA_NV, Tpm,
};
use provenix_firmware::tpm::hcl::HCL_REPORT_NV_INDEX;
use provenix_firmware::tpm::structures::{Public, PublicKey};
use provenix_verifier::tpm::ak::OID_TCG_KP_AIK_CERTIFICATE;
use provenix_verifier::{
    AzureEvidence, Bundle, Error, Evidence, Policy, Refusal, VerifiedBundle, Verifier,
    verify_bundle,
};
use provenix_worker::attest::{AttestOptions, attest, bundle_path};
use provenix_worker::platform::{Choice, Platform, TpmOptions, sim_policy};
use swtpm::Swtpm;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The boot replayed into the swtpm: a real GCE boot's event log.
const EVENT_LOG: &str = "vectors/tpm/gce-ubuntu2404-amd-sevsnp/eventlog.bin";

/// A swtpm whose PCRs hold what the GCE boot's event log replays to.
fn booted_swtpm(test: &str) -> Option<(Swtpm, PathBuf, PathBuf)> {
    let shared = shared(test, "vectors/tpm")?;
    if !swtpm::tool_available(test, "tpm2_nvdefine", &["--version"]) {
        return None;
    }
    let sw = Swtpm::start(test)?;
    let log_path = shared.join(EVENT_LOG);
    let log = EventLog::parse(&std::fs::read(&log_path).unwrap()).unwrap();
    let mut tpm = Tpm::open(Some(&sw.tcti())).unwrap();
    let banks = tpm.pcr_banks().unwrap();
    for e in log.events().iter().filter(|e| e.is_extended()) {
        for (bank, digest) in &e.digests {
            if banks.contains(bank) {
                tpm.pcr_extend(u8::try_from(e.pcr).unwrap(), *bank, digest)
                    .unwrap();
            }
        }
    }
    Some((sw, shared, log_path))
}

/// Define NV `index` (owner-written; readable by owner and by its own
/// empty auth, as a cloud's) and write `data` with tpm2-tools. swtpm
/// serves one connection at a time: no `Tpm` may be open.
fn nv_write(sw: &Swtpm, index: u32, data: &[u8], attributes: &str) {
    let file = sw.dir().join(format!("nv-{index:08x}.bin"));
    std::fs::write(&file, data).unwrap();
    let index = format!("{index:#010x}");
    let run = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", sw.tcti())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Undefined first when a test writes it again (an error otherwise
    // means it was not defined, which is fine).
    let _ = Command::new("tpm2_nvundefine")
        .args([&index, "-C", "o"])
        .env("TPM2TOOLS_TCTI", sw.tcti())
        .output();
    let size = data.len().to_string();
    run(&[
        "tpm2_nvdefine",
        &index,
        "-C",
        "o",
        "-s",
        &size,
        "-a",
        attributes,
    ]);
    run(&["tpm2_nvwrite", &index, "-C", "o", "-i"]
        .into_iter()
        .chain([file.to_str().unwrap()])
        .collect::<Vec<_>>());
}

/// DER: a tag, a definite length, the contents.
fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match body.len() {
        n @ 0..=0x7f => out.push(u8::try_from(n).unwrap()),
        n @ 0x80..=0xff => out.extend([0x81, u8::try_from(n).unwrap()]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(body);
    out
}

/// A positive DER INTEGER from big-endian bytes.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
    let mut body = if trimmed.first().is_some_and(|&b| b & 0x80 != 0) {
        vec![0]
    } else {
        Vec::new()
    };
    body.extend(trimmed);
    der(0x02, &body)
}

/// The SubjectPublicKeyInfo (DER) of a TPM key, as a cloud CA certifies it.
fn spki(public: &[u8]) -> Vec<u8> {
    let public = Public::from_bytes(public).unwrap();
    match public.key() {
        PublicKey::Ecc(k) => {
            // id-ecPublicKey, prime256v1 (RFC 5480).
            let alg = hex::decode("301306072a8648ce3d020106082a8648ce3d030107").unwrap();
            let mut point = vec![0x00, 0x04];
            point.extend_from_slice(&k.x);
            point.extend_from_slice(&k.y);
            der(0x30, &[alg, der(0x03, &point)].concat())
        }
        PublicKey::Rsa(k) => {
            // rsaEncryption, NULL parameters (RFC 8017 A.1).
            let alg = hex::decode("300d06092a864886f70d0101010500").unwrap();
            let key = der(
                0x30,
                &[
                    der_uint(&k.modulus),
                    der_uint(&k.public_exponent().to_be_bytes()),
                ]
                .concat(),
            );
            let mut bits = vec![0x00];
            bits.extend(key);
            der(0x30, &[alg, der(0x03, &bits)].concat())
        }
    }
}

/// An AK certificate for the key `spki_der`, issued by `ca` the way a
/// cloud's AK CA issues one (tcg-kp-AIKCertificate).
fn ak_certificate(spki_der: &[u8], ca: &TestCa) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test-instance-1234");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::Other(
        OID_TCG_KP_AIK_CERTIFICATE.to_vec(),
    )];
    let subject = rcgen::SubjectPublicKeyInfo::from_der(spki_der).unwrap();
    let key = ca.key();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca.der.clone().into(), &key).unwrap();
    params.signed_by(&subject, &issuer).unwrap().der().to_vec()
}

fn policy_file(dir: &Path, text: &str) -> Policy {
    let file = dir.join("policy.toml");
    std::fs::write(&file, text).unwrap();
    Policy::load(&file).unwrap()
}

fn gcp_policy(ca: &TestCa, dir: &Path) -> Policy {
    policy_file(
        dir,
        &format!(
            "trust_amd_roots = false\n# swtpm boots nothing to pin: the AK and quote are under test.\nmeasurements = \"any\"\n[tpm]\nak_roots = [{:?}]\n",
            ca.pem_path.display().to_string()
        ),
    )
}

fn verify(bytes: &[u8], policy: &Policy) -> Result<VerifiedBundle, Refusal> {
    let verifier = Verifier::new(policy.anchors().unwrap());
    verify_bundle(bytes, &verifier, policy, unix_now())
}

fn attest_one(platform: &Platform, dir: &Path, policy: &Policy) -> Vec<u8> {
    let artifact = dir.join("app.bin");
    std::fs::write(&artifact, b"an artifact built on a cloud VM").unwrap();
    attest(
        std::slice::from_ref(&artifact),
        &AttestOptions {
            platform,
            commit: COMMIT,
            vek: None,
            policy,
            now: unix_now(),
        },
    )
    .unwrap();
    std::fs::read(bundle_path(&artifact)).unwrap()
}

// ---------------------------------------------------------------------------
// GCP: AK from the NV template, certificate from NV

/// A marshalled AK template: the TPMT_PUBLIC of `kind`'s AK with its
/// `unique` emptied (a template's unique is input to key derivation).
fn template(public: &[u8], kind: AkKind) -> Vec<u8> {
    let (unique, empty): (usize, &[u8]) = match kind {
        AkKind::EccP256 => (2 + 32 + 2 + 32, &[0, 0, 0, 0]),
        AkKind::Rsa2048 => (2 + 256, &[0, 0]),
    };
    let mut t = public[..public.len() - unique].to_vec();
    t.extend_from_slice(empty);
    t
}

#[test]
fn gcp_ak_from_nv_template_attests_under_the_cloud_ca_only() {
    for (kind, cert_nv, template_nv) in [
        (AkKind::EccP256, GCP_AK_CERT_ECC_NV, GCP_AK_TEMPLATE_ECC_NV),
        (AkKind::Rsa2048, GCP_AK_CERT_RSA_NV, GCP_AK_TEMPLATE_RSA_NV),
    ] {
        let test = format!("gcp_{kind:?}");
        let Some((sw, _, log)) = booted_swtpm(&test) else {
            return;
        };
        let dir = sw.dir().to_path_buf();
        // The template: ours, as the cloud's would be a restricted signing
        // key's. Only the owner reads and writes these, as on GCE.
        let mut tpm = Tpm::open(Some(&sw.tcti())).unwrap();
        let ours = tpm.attestation_key(kind, None).unwrap();
        let tmpl = template(ours.public(), kind);
        drop(tpm);
        nv_write(&sw, template_nv, &tmpl, "ownerread|ownerwrite");
        let mut tpm = Tpm::open(Some(&sw.tcti())).unwrap();
        let ak = tpm.attestation_key_from_template(template_nv).unwrap();
        assert_eq!(
            ak.public(),
            ours.public(),
            "{kind:?}: same template, same key"
        );
        let ak_spki = spki(ak.public());
        drop(tpm);
        let cloud = TestCa::new(&dir, "test-cloud-ak-ca");
        nv_write(
            &sw,
            cert_nv,
            &ak_certificate(&ak_spki, &cloud),
            "ownerread|ownerwrite",
        );

        // No --ak-cert: the cloud's AK and its NV certificate.
        let options = TpmOptions {
            tpm_tcti: Some(sw.tcti()),
            event_log: Some(log.clone()),
            ak_chain: Some(cloud.pem_path.clone()),
            ..TpmOptions::default()
        };
        let platform = Platform::open(Choice::Tpm, &options, unix_now(), |_| {}).unwrap();
        let policy = gcp_policy(&cloud, &dir);
        let bundle = attest_one(&platform, &dir, &policy);
        drop(platform);
        let v = verify(&bundle, &policy).unwrap();
        let tpm_evidence = v.evidence().tpm().expect("TPM evidence");
        assert!(
            tpm_evidence.ak_issuer().contains("test-cloud-ak-ca"),
            "{}",
            tpm_evidence.ak_issuer()
        );
        assert_eq!(tpm_evidence.boot().ak_public(), ak.public());

        // Another CA named: the NV certificate does not chain to it.
        let other = TestCa::new(&dir, "another-cloud-ca");
        let err = verify(&bundle, &gcp_policy(&other, &dir)).unwrap_err();
        assert!(
            matches!(err, Refusal::Invalid(Error::AkChain { .. })),
            "{kind:?}: {err}"
        );

        // The cloud CA's certificate in NV for another key: the worker's
        // own check refuses it, and so does a verifier.
        let stranger = rcgen::KeyPair::generate().unwrap();
        let wrong = ak_certificate(
            &rcgen::PublicKeyData::subject_public_key_info(&stranger),
            &cloud,
        );
        nv_write(&sw, cert_nv, &wrong, "ownerread|ownerwrite");
        let platform = Platform::open(Choice::Tpm, &options, unix_now(), |_| {}).unwrap();
        let artifact = dir.join("other.bin");
        std::fs::write(&artifact, b"x").unwrap();
        let err = attest(
            std::slice::from_ref(&artifact),
            &AttestOptions {
                platform: &platform,
                commit: COMMIT,
                vek: None,
                policy: &policy,
                now: unix_now(),
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("the certificate's key is not the attestation key"),
            "{kind:?}: {err}"
        );
        let Bundle::Direct {
            statement,
            evidence: Evidence::Tpm(mut e),
        } = Bundle::from_cbor(&bundle).unwrap()
        else {
            panic!("a direct TPM bundle expected");
        };
        e.ak_chain[0] = wrong;
        let swapped = Bundle::Direct {
            statement,
            evidence: Evidence::Tpm(e),
        }
        .to_cbor();
        let err = verify(&swapped, &policy).unwrap_err();
        assert!(
            matches!(&err, Refusal::Invalid(Error::AkChain { reason, .. })
                if reason.contains("not the attestation key")),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn no_ak_cert_and_no_cloud_certificate_in_nv_is_refused_by_name() {
    let Some((sw, _, log)) = booted_swtpm("gcp_none") else {
        return;
    };
    let options = TpmOptions {
        tpm_tcti: Some(sw.tcti()),
        event_log: Some(log),
        ..TpmOptions::default()
    };
    let err = Platform::open(Choice::Tpm, &options, unix_now(), |_| {})
        .err()
        .expect("no AK certificate anywhere");
    assert!(
        err.to_string().contains("no cloud AK certificate in NV"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Azure: HCL report in NV, AK at 0x81000003

/// The simulated AMD chip of the "Azure host", valid around now.
fn azure_chip() -> SimPlatform {
    let params = ChainParams {
        product: Product::Milan,
        kind: VekKind::Vcek,
        tcb: ReportParams::default().tcb,
        hw_id: [0x5A; 64],
        not_before: unix_now() - 86_400,
        not_after: unix_now() + 86_400,
    };
    SimPlatform::new(&params).unwrap()
}

/// The modulus of the RSA key of TPMT_PUBLIC `ak`.
fn modulus(ak: &[u8]) -> Vec<u8> {
    let public = Public::from_bytes(ak).unwrap();
    let PublicKey::Rsa(rsa) = public.key() else {
        panic!("Azure's AK is RSA");
    };
    assert_eq!(rsa.public_exponent(), 65537);
    rsa.modulus.clone()
}

/// Runtime data as Azure's paravisor writes it, naming the RSA key with
/// modulus `n` (exponent 65537) as `HCLAkPub`.
fn runtime_data(n: &[u8]) -> Vec<u8> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    serde_json::to_vec(&serde_json::json!({
        "keys": [{"kid": "HCLAkPub", "key_ops": ["sign"], "kty": "RSA",
                  "e": b64(&[1, 0, 1]), "n": b64(n)}],
        "vm-configuration": {"console-enabled": false, "secure-boot": true,
                             "tpm-enabled": true, "vmUniqueId": "00000000-0000-0000-0000-000000000001"},
    }))
    .unwrap()
}

/// An HCL report as hcl.rs parses it: header, the SNP report the chip
/// signs over `report_data`, IGVM request data, runtime data, zeros to
/// the NV index's size.
fn hcl_report(chip: &SimPlatform, runtime: &[u8], report_data: [u8; 64]) -> Vec<u8> {
    let params = chip.chain().params();
    let report = chip
        .report_bytes(&ReportParams {
            product: params.product,
            tcb: params.tcb,
            chip_id: params.hw_id,
            report_data,
            ..ReportParams::default()
        })
        .unwrap();
    let mut b = Vec::new();
    // "HCLA", version 1, report_size (below), request_type 2 (AK
    // certificate request), status 0, reserved.
    for v in [0x414C_4348u32, 1, 0, 2, 0, 0, 0, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&report);
    let n = u32::try_from(runtime.len()).unwrap();
    // data_size, version 1, report_type 2 (SNP), hash type 1 (SHA-256).
    for v in [n + 20, 1, 2, 1, n] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(runtime);
    let size = u32::try_from(b.len()).unwrap();
    b[8..12].copy_from_slice(&size.to_le_bytes());
    // The real SNP vector's NV index is 2048 bytes, also swtpm's largest.
    b.resize(2048, 0);
    b
}

/// REPORT_DATA binding `runtime`: SHA-256 of it, then zeros.
fn binding(runtime: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(ring::digest::digest(&ring::digest::SHA256, runtime).as_ref());
    out
}

fn with_azure_evidence(bundle: &[u8], edit: impl Fn(&mut AzureEvidence)) -> Vec<u8> {
    let Bundle::Direct {
        statement,
        evidence: Evidence::Azure(mut e),
    } = Bundle::from_cbor(bundle).unwrap()
    else {
        panic!("a direct Azure bundle expected");
    };
    edit(&mut e);
    Bundle::Direct {
        statement,
        evidence: Evidence::Azure(e),
    }
    .to_cbor()
}

/// A quote of PCRs 0-9 by a new RSA restricted signing key, made with
/// tpm2-tools: its TPMT_PUBLIC, TPMS_ATTEST and TPMT_SIGNATURE.
fn quote_by_another_key(sw: &Swtpm, qualifying: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let dir = sw.dir();
    let (ctx, public, msg, sig) = (
        dir.join("other.ctx"),
        dir.join("other.pub"),
        dir.join("other.msg"),
        dir.join("other.sig"),
    );
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let qualifying = hex::encode(qualifying);
    for args in [
        vec![
            "tpm2_createprimary".to_owned(),
            "-C".into(),
            "o".into(),
            "-G".into(),
            "rsa2048:rsassa-sha256:null".into(),
            "-a".into(),
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign".into(),
            "-c".into(),
            path(&ctx),
        ],
        vec![
            "tpm2_readpublic".into(),
            "-c".into(),
            path(&ctx),
            "-f".into(),
            "tpmt".into(),
            "-o".into(),
            path(&public),
        ],
        vec![
            "tpm2_quote".into(),
            "-c".into(),
            path(&ctx),
            "-l".into(),
            "sha256:0,1,2,3,4,5,6,7,8,9".into(),
            "-q".into(),
            qualifying,
            "-m".into(),
            path(&msg),
            "-s".into(),
            path(&sig),
        ],
    ] {
        let out = Command::new(&args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", sw.tcti())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read = |p: &Path| std::fs::read(p).unwrap();
    (read(&public), read(&msg), read(&sig))
}

#[test]
fn azure_hcl_report_vouches_for_the_quoting_ak_and_each_broken_link_is_refused() {
    let Some((sw, shared, log)) = booted_swtpm("azure") else {
        return;
    };
    let dir = sw.dir().to_path_buf();
    // The paravisor's AK: a restricted signing RSA key, persistent.
    let mut tpm = Tpm::open(Some(&sw.tcti())).unwrap();
    let ak_public = tpm
        .attestation_key(AkKind::Rsa2048, Some(AZURE_AK_HANDLE))
        .unwrap()
        .public()
        .to_vec();
    drop(tpm);
    let chip = azure_chip();
    let runtime = runtime_data(&modulus(&ak_public));
    nv_write(
        &sw,
        HCL_REPORT_NV_INDEX,
        &hcl_report(&chip, &runtime, binding(&runtime)),
        "ownerread|ownerwrite|authread",
    );
    let vcek = dir.join("vcek-chain.pem");
    let c = chip.chain();
    std::fs::write(
        &vcek,
        pem_certificates(&[c.vek_der(), c.ask_der(), c.ark_der()]),
    )
    .unwrap();
    let options = TpmOptions {
        tpm_tcti: Some(sw.tcti()),
        event_log: Some(log),
        azure_vcek: Some(vcek),
        ..TpmOptions::default()
    };
    let platform = Platform::open(Choice::Azure, &options, unix_now(), |_| {}).unwrap();
    // The simulator's root stands for AMD's; `[tpm]` as for any TPM. The
    // links from the HCL report to the quote are under test, not what
    // swtpm's boot measured, which no reference pins.
    let mut policy = sim_policy();
    policy.measurements = provenix_verifier::Measurements::Any;
    let bundle = attest_one(&platform, &dir, &policy);
    // swtpm serves one connection: the platform's thread lets go of it.
    drop(platform);
    let v = verify(&bundle, &policy).unwrap();
    let azure = v.evidence().azure().expect("Azure evidence");
    assert_eq!(azure.boot().ak_public(), ak_public.as_slice());
    assert_eq!(azure.snp().report().chip_id(), &[0x5A; 64]);
    assert_eq!(
        azure
            .boot()
            .pcrs()
            .iter()
            .filter(|p| p.bank == 0x000B)
            .count(),
        // PCRs 0-9, 11 (a UKI's sections) and 15 (deployment settings).
        12
    );

    // AMD's roots only (the default policy): the simulated chip is refused.
    let err = verify(&bundle, &Policy::default()).unwrap_err();
    assert!(
        matches!(err, Refusal::Invalid(Error::UntrustedRoot { .. })),
        "{err}"
    );

    // Runtime data naming another RSA key (one bit of the modulus off),
    // bound by a genuine SNP report.
    let mut n = modulus(&ak_public);
    n[100] ^= 1;
    let stranger = runtime_data(&n);
    let err = verify(
        &with_azure_evidence(&bundle, |e| {
            e.hcl_report = hcl_report(&chip, &stranger, binding(&stranger));
        }),
        &policy,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Refusal::Invalid(Error::HclAkMismatch("modulus differs"))
        ),
        "{err}"
    );
    // An SNP report whose REPORT_DATA does not bind the runtime data.
    let err = verify(
        &with_azure_evidence(&bundle, |e| {
            e.hcl_report = hcl_report(&chip, &runtime, [0x11; 64]);
        }),
        &policy,
    )
    .unwrap_err();
    assert!(
        matches!(err, Refusal::Invalid(Error::HclReportData { .. })),
        "{err}"
    );
    // A quote with the same qualifying data by another RSA restricted
    // signing key of the same TPM (tpm2-tools, owner hierarchy).
    let Bundle::Direct {
        evidence: Evidence::Azure(good),
        ..
    } = Bundle::from_cbor(&bundle).unwrap()
    else {
        panic!("a direct Azure bundle expected");
    };
    let attest = provenix_firmware::tpm::Attest::from_bytes(&good.attest).unwrap();
    let (other_public, forged_attest, forged_signature) =
        quote_by_another_key(&sw, attest.extra_data());
    let err = verify(
        &with_azure_evidence(&bundle, |e| {
            e.attest = forged_attest.clone();
            e.signature = forged_signature.clone();
        }),
        &policy,
    )
    .unwrap_err();
    assert!(
        matches!(err, Refusal::Invalid(Error::QuoteSignature)),
        "{err}"
    );
    // That key offered as the AK: not the one the runtime data names.
    let err = verify(
        &with_azure_evidence(&bundle, |e| {
            e.ak_public = other_public.clone();
            e.attest = forged_attest.clone();
            e.signature = forged_signature.clone();
        }),
        &policy,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Refusal::Invalid(Error::HclAkMismatch("modulus differs"))
        ),
        "{err}"
    );
    // The real Azure vector's HCL report, which comes with no VCEK.
    let real = std::fs::read(
        shared.join("vectors/tpm/azure-cvm-hcl-report-and-vtpm-quote/hcl-report-snp.bin"),
    )
    .unwrap();
    let err = verify(
        &with_azure_evidence(&bundle, |e| {
            e.hcl_report = real.clone();
            e.vek = None;
            e.vek_chain.clear();
        }),
        &policy,
    )
    .unwrap_err();
    assert!(matches!(err, Refusal::Invalid(Error::MissingVek)), "{err}");
}
