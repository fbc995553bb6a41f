//! TPM quote verification on real evidence: a GCP Shielded VM's quote, the
//! Azure CVM vTPM quote and HCL reports, and quotes a real software TPM
//! (swtpm, through tpm2-tools) makes during the test, which
//! `tpm2_checkquote` must accept too. Every rejection is one mutation of a
//! good input, asserting the exact error.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing)]

#[path = "../../tests/support/evidence.rs"]
mod common;
#[path = "tpm_quote/swtpm.rs"]
mod swtpm;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind, ark_fingerprint};
use provenix_firmware::snp::{Product, TcbVersion};
use provenix_firmware::tpm::HashAlg;
use provenix_firmware::tpm::hcl::{HclReport, HwReport, RUNTIME_DATA_OFFSET};
use provenix_firmware::tpm::structures::{Attest, Public, PublicKey, Scheme, Signature};
use provenix_verifier::tpm::{
    AttestationKey, HclRuntimeData, PcrValues, bound_runtime_data, name_of, verify_hcl_report,
    verify_quote,
};
use provenix_verifier::{Error, TrustAnchors, Verifier};
use serde_json::Value;
use swtpm::{AKS, Swtpm};

fn tpm_vectors() -> Option<PathBuf> {
    Some(common::shared()?.join("vectors/tpm"))
}

/// A file of a vector folder, checked against the SHA-256 that
/// `vectors.json` records for it.
fn vector_file(dir: &Path, vector: &str, file: &str) -> Vec<u8> {
    let bytes = std::fs::read(dir.join(vector).join(file)).unwrap();
    let manifest = manifest(dir, vector);
    let want = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == file)
        .unwrap_or_else(|| panic!("{vector}/{file} not in vectors.json"))["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
    assert_eq!(got, want, "{vector}/{file}");
    bytes
}

fn manifest(dir: &Path, vector: &str) -> Value {
    let all: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("vectors.json")).unwrap()).unwrap();
    all.into_iter().find(|v| v["name"] == vector).unwrap()
}

// ---------------------------------------------------------------------------
// GCP Shielded VM (Windows): RSASSA-SHA1 quote of sha1:0-23, AK nameAlg SHA-256

const GCP: &str = "gcp-windows-shielded-vm-quote";

struct Gcp {
    ak: Vec<u8>,
    attest: Vec<u8>,
    signature: Vec<u8>,
    pcrs: PcrValues,
    json: Value,
}

fn gcp() -> Option<Gcp> {
    let dir = tpm_vectors()?;
    let m = manifest(&dir, GCP);
    let pcrs = m["quoted_pcrs_sha1"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(i, v)| {
            (
                (HashAlg::Sha1, i.parse().unwrap()),
                hex::decode(v.as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    Some(Gcp {
        ak: vector_file(&dir, GCP, "ak_tpmt_public.bin"),
        attest: vector_file(&dir, GCP, "quote_tpms_attest.bin"),
        signature: vector_file(&dir, GCP, "quote_tpmt_signature.bin"),
        pcrs,
        json: serde_json::from_slice(&vector_file(&dir, GCP, "windows_gcp_shielded_vm.json"))
            .unwrap(),
    })
}

fn gcp_verify(
    ak: &[u8],
    attest: &[u8],
    signature: &[u8],
    qualifying: &[u8],
    pcrs: &PcrValues,
) -> Result<provenix_verifier::tpm::VerifiedQuote, Error> {
    let ak = AttestationKey::from_public(&Public::from_bytes(ak)?)?;
    verify_quote(
        &ak,
        attest,
        &Signature::from_bytes(signature)?,
        qualifying,
        pcrs,
    )
}

#[test]
fn gcp_quote_verifies_with_the_signature_hash_not_the_name_alg() {
    let Some(v) = gcp() else { return };
    let public = Public::from_bytes(&v.ak).unwrap();
    assert_eq!(public.name_alg(), HashAlg::Sha256);
    assert_eq!(public.scheme(), Some(Scheme::RsaSsa(HashAlg::Sha1)));
    let attrs = public.object_attributes();
    assert!(
        attrs.restricted() && attrs.sign() && attrs.fixed_tpm(),
        "{attrs}"
    );
    let PublicKey::Rsa(rsa) = public.key() else {
        panic!("RSA AK expected")
    };
    assert_eq!((rsa.key_bits, rsa.public_exponent()), (2048, 65537));

    // README: extraData empty, selection sha1:0-23.
    let q = gcp_verify(&v.ak, &v.attest, &v.signature, b"", &v.pcrs).unwrap();
    assert_eq!(q.signature_hash(), HashAlg::Sha1);
    assert_eq!(q.extra_data(), b"");
    let info = q.quote_info().unwrap();
    assert_eq!(
        hex::encode(&info.pcr_digest),
        "a610f27bc687ce906243287d832706036e79f6e1"
    );
    assert_eq!(
        info.selected().collect::<Vec<_>>(),
        (0..24).map(|i| (HashAlg::Sha1, i)).collect::<Vec<_>>()
    );
    assert_eq!(q.ak_name(), Some(name_of(&public).as_slice()));
    assert_eq!(q.ak_name().unwrap().len(), 34);

    // The replayed log's PCRs (expected_pcrs.json) are among the quoted.
    let dir = tpm_vectors().unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join(GCP).join("expected_pcrs.json")).unwrap())
            .unwrap();
    for (i, value) in expected["sha1"].as_object().unwrap() {
        let got = q.pcr(HashAlg::Sha1, i.parse().unwrap()).unwrap();
        assert_eq!(hex::encode(got), value.as_str().unwrap(), "PCR {i}");
    }
}

#[test]
fn gcp_every_flipped_byte_of_attest_or_signature_fails() {
    let Some(v) = gcp() else { return };
    for i in 0..v.attest.len() {
        let mut a = v.attest.clone();
        a[i] ^= 0x01;
        match gcp_verify(&v.ak, &a, &v.signature, b"", &v.pcrs) {
            Err(Error::QuoteSignature | Error::Parse(_)) => {}
            other => panic!("attest byte {i}: {other:?}"),
        }
    }
    for i in 0..v.signature.len() {
        let mut s = v.signature.clone();
        s[i] ^= 0x01;
        match gcp_verify(&v.ak, &v.attest, &s, b"", &v.pcrs) {
            Err(Error::QuoteSignature | Error::QuoteScheme { .. } | Error::Parse(_)) => {}
            other => panic!("signature byte {i}: {other:?}"),
        }
    }
}

#[test]
fn gcp_negative_matrix() {
    let Some(v) = gcp() else { return };
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Gcp) -> Vec<u8>>,
        fn(&Error) -> bool,
    );
    // Offsets in the AK's TPMT_PUBLIC: objectAttributes at 4..8 (big-endian),
    // the modulus at the end.
    let cases: Vec<Case> = vec![
        (
            "ak not restricted",
            Box::new(|v| {
                v.ak[5] &= !0x01;
                vec![]
            }),
            |e| matches!(e, Error::AkNotRestrictedSigning { .. }),
        ),
        (
            "ak not a signing key",
            Box::new(|v| {
                v.ak[5] &= !0x04;
                vec![]
            }),
            |e| matches!(e, Error::AkNotRestrictedSigning { .. }),
        ),
        (
            "ak also decrypts",
            Box::new(|v| {
                v.ak[5] |= 0x02;
                vec![]
            }),
            |e| matches!(e, Error::AkNotRestrictedSigning { .. }),
        ),
        (
            "ak reserved attribute bit",
            Box::new(|v| {
                v.ak[7] |= 0x01;
                vec![]
            }),
            |e| matches!(e, Error::Parse(_)),
        ),
        (
            "wrong ak (modulus changed)",
            Box::new(|v| {
                let last = v.ak.len() - 1;
                v.ak[last] ^= 0x02;
                vec![]
            }),
            |e| matches!(e, Error::QuoteSignature),
        ),
        (
            "ak scheme sha256, signature sha1",
            Box::new(|v| {
                // TPMS_RSA_PARMS scheme hash: after type, nameAlg,
                // attributes, authPolicy (2 + 32), symmetric NULL, scheme.
                let at = 2 + 2 + 4 + 2 + 32 + 2 + 2;
                assert_eq!(v.ak[at..at + 2], [0x00, 0x04]);
                v.ak[at + 1] = 0x0B;
                vec![]
            }),
            |e| matches!(e, Error::QuoteScheme { .. }),
        ),
        (
            "wrong qualifying data",
            Box::new(|_| b"nonce".to_vec()),
            |e| matches!(e, Error::QualifyingData { .. }),
        ),
        (
            "pcr value changed",
            Box::new(|v| {
                v.pcrs.get_mut(&(HashAlg::Sha1, 7)).unwrap()[0] ^= 1;
                vec![]
            }),
            |e| {
                matches!(
                    e,
                    Error::PcrDigest {
                        hash: HashAlg::Sha1,
                        ..
                    }
                )
            },
        ),
        (
            "pcr asked for but not quoted",
            Box::new(|v| {
                v.pcrs.insert((HashAlg::Sha256, 0), vec![0; 32]);
                vec![]
            }),
            |e| {
                matches!(
                    e,
                    Error::PcrNotQuoted {
                        bank: HashAlg::Sha256,
                        pcr: 0
                    }
                )
            },
        ),
        (
            "quoted pcr without a value",
            Box::new(|v| {
                v.pcrs.remove(&(HashAlg::Sha1, 23));
                vec![]
            }),
            |e| {
                matches!(
                    e,
                    Error::PcrValueMissing {
                        bank: HashAlg::Sha1,
                        pcr: 23
                    }
                )
            },
        ),
        (
            "pcr value of the wrong length",
            Box::new(|v| {
                v.pcrs.insert((HashAlg::Sha1, 3), vec![0; 32]);
                vec![]
            }),
            |e| {
                matches!(
                    e,
                    Error::PcrValueLength {
                        pcr: 3,
                        len: 32,
                        ..
                    }
                )
            },
        ),
        (
            "attest trailing byte",
            Box::new(|v| {
                v.attest.push(0);
                vec![]
            }),
            |e| matches!(e, Error::Parse(_)),
        ),
        (
            "signature trailing byte",
            Box::new(|v| {
                v.signature.push(0);
                vec![]
            }),
            |e| matches!(e, Error::Parse(_)),
        ),
        (
            "ak trailing byte",
            Box::new(|v| {
                v.ak.push(0);
                vec![]
            }),
            |e| matches!(e, Error::Parse(_)),
        ),
        (
            "signature says sha256",
            Box::new(|v| {
                v.signature[3] = 0x0B;
                vec![]
            }),
            |e| matches!(e, Error::QuoteScheme { .. }),
        ),
    ];
    for (name, mutate, want) in cases {
        let mut m = gcp().unwrap();
        let qualifying = mutate(&mut m);
        let err = gcp_verify(&m.ak, &m.attest, &m.signature, &qualifying, &m.pcrs)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(want(&err), "{name}: {err:?}");
        // Each error says what is wrong.
        assert!(!err.to_string().is_empty());
    }
    // Truncated inputs: every proper prefix fails to parse.
    for cut in 0..v.attest.len() {
        assert!(matches!(
            gcp_verify(&v.ak, &v.attest[..cut], &v.signature, b"", &v.pcrs),
            Err(Error::Parse(_))
        ));
    }
    for cut in 0..v.ak.len() {
        assert!(Public::from_bytes(&v.ak[..cut]).is_err(), "ak cut at {cut}");
    }
    for cut in 0..v.signature.len() {
        assert!(Signature::from_bytes(&v.signature[..cut]).is_err());
    }
    // Oversized: a TPM2B size past its structure's maximum.
    let mut big = v.attest.clone();
    big[6..8].copy_from_slice(&0x0100u16.to_be_bytes()); // qualifiedSigner
    let e = Attest::from_bytes(&big).unwrap_err().to_string();
    assert!(e.contains("qualifiedSigner: size 256 exceeds 66"), "{e}");
}

#[test]
fn gcp_creation_attestation_by_the_same_ak_is_not_a_quote() {
    let Some(v) = gcp() else { return };
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v.json["AK"][k].as_str().unwrap())
            .unwrap()
    };
    let (attest, sig) = (b64("CreateAttestation"), b64("CreateSignature"));
    let parsed = Attest::from_bytes(&attest).unwrap();
    assert!(parsed.quote().is_none());
    let err = gcp_verify(&v.ak, &attest, &sig, b"", &PcrValues::new()).unwrap_err();
    assert!(matches!(err, Error::NotAQuote), "{err:?}");
}

// ---------------------------------------------------------------------------
// Azure: HCL reports and the vTPM quote

const AZURE: &str = "azure-cvm-hcl-report-and-vtpm-quote";

#[test]
fn azure_hcl_reports_bind_their_runtime_data() {
    let Some(dir) = tpm_vectors() else { return };
    let m = manifest(&dir, AZURE);

    let snp = HclReport::from_bytes(&vector_file(&dir, AZURE, "hcl-report-snp.bin")).unwrap();
    let report = snp.snp_report().unwrap();
    assert_eq!(report.version(), 2);
    assert_eq!(
        hex::encode(report.measurement()),
        m["hcl_report_snp"]["snp_measurement"].as_str().unwrap()
    );
    assert_eq!(snp.report_data_hash(), HashAlg::Sha256);
    assert_eq!(snp.runtime_data().len(), 583);
    let runtime = bound_runtime_data(&snp).unwrap();
    let jwk = &m["hcl_report_snp"]["runtime_data_json"]["keys"][0];
    let (n, e) = runtime.ak();
    let b64 = |s: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.as_str().unwrap())
            .unwrap()
    };
    assert_eq!(
        (n, e),
        (b64(&jwk["n"]).as_slice(), b64(&jwk["e"]).as_slice())
    );
    assert_eq!(n.len(), 256);
    assert_eq!(runtime.json()["vm-configuration"]["secure-boot"], true);

    let tdx = HclReport::from_bytes(&vector_file(&dir, AZURE, "hcl-report-tdx.bin")).unwrap();
    assert!(matches!(tdx.hw_report(), HwReport::Tdx(_)));
    let runtime = bound_runtime_data(&tdx).unwrap();
    assert_eq!(runtime.user_data(), Some(&[0u8; 64][..]));
    assert!(runtime.json()["keys"].as_array().unwrap().len() == 2);
    // A TDREPORT cannot be authenticated here, and says so.
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    let err = verify_hcl_report(&verifier, &tdx, &[], &[], common::vcek_time()).unwrap_err();
    assert!(matches!(err, Error::HclUnsupported(_)), "{err:?}");

    // The newer runtime data sample: AK (sign), EK, user data.
    let var = HclRuntimeData::from_json(&vector_file(&dir, AZURE, "var-data.bin")).unwrap();
    assert_eq!(var.ak().0.len(), 256);
    assert_eq!(var.json()["keys"][0]["key_ops"][0], "sign");
    assert_eq!(var.user_data().map(<[u8]>::len), Some(64));
}

#[test]
fn azure_hcl_runtime_data_changed_is_refused() {
    let Some(dir) = tpm_vectors() else { return };
    let bytes = vector_file(&dir, AZURE, "hcl-report-snp.bin");
    // A character inside HCLAkPub's "n", still valid JSON and base64url.
    let mut b = bytes.clone();
    let at = RUNTIME_DATA_OFFSET
        + b.windows(5)
            .skip(RUNTIME_DATA_OFFSET)
            .position(|w| w == b"\"n\":\"")
            .unwrap()
        + 10;
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    let err = bound_runtime_data(&HclReport::from_bytes(&b).unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::HclReportData {
                hash: HashAlg::Sha256,
                ..
            }
        ),
        "{err:?}"
    );
    // REPORT_DATA's unused half must stay zero.
    let mut b = bytes.clone();
    b[32 + 0x50 + 40] = 1;
    let err = bound_runtime_data(&HclReport::from_bytes(&b).unwrap()).unwrap_err();
    assert!(matches!(err, Error::HclReportData { .. }), "{err:?}");
}

/// What could not be verified with the vectors: the HCL report's VCEK is
/// not in them (its CHIP_ID 3a5d5b1d... matches no VCEK of vectors/snp),
/// so the SNP report is not authentic to us. A Milan VCEK of another chip
/// is refused for its TCB or chip, never accepted.
#[test]
fn azure_hcl_report_with_another_chips_vcek_is_refused() {
    let Some(shared) = common::shared() else {
        return;
    };
    let hcl = HclReport::from_bytes(&vector_file(
        &shared.join("vectors/tpm"),
        AZURE,
        "hcl-report-snp.bin",
    ))
    .unwrap();
    let vcek = provenix_verifier::certificates_from_pem_or_der(
        &std::fs::read(shared.join("vectors/snp/microsoft-tav/milan_vcek.pem")).unwrap(),
    )
    .unwrap()
    .remove(0);
    let verifier = Verifier::new(TrustAnchors::amd().unwrap());
    let err = verify_hcl_report(&verifier, &hcl, &vcek, &[], common::vcek_time()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TcbMismatch { .. } | Error::ChipIdMismatch { .. }
        ),
        "{err:?}"
    );
    let err = verify_hcl_report(&verifier, &hcl, &[], &[], common::vcek_time()).unwrap_err();
    assert!(matches!(err, Error::Certificate { .. }), "{err:?}");
}

/// The quote.bin vector: signature, extraData and PCRs, as `az-cvm-vtpm`
/// writes it (u64le-length-prefixed signature, attest, PCR list).
struct AzureQuote {
    signature: Signature,
    attest: Vec<u8>,
    pcrs: PcrValues,
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (a, b) = rest.split_at(n);
    *rest = b;
    a
}

/// A u64le length, then that many bytes.
fn prefixed<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let n = u64::from_le_bytes(take(rest, 8).try_into().unwrap());
    take(rest, usize::try_from(n).unwrap())
}

fn azure_quote(dir: &Path) -> AzureQuote {
    let bytes = vector_file(dir, AZURE, "quote.bin");
    let mut rest = &bytes[..];
    let sig = prefixed(&mut rest).to_vec();
    let attest = prefixed(&mut rest).to_vec();
    let count = u64::from_le_bytes(take(&mut rest, 8).try_into().unwrap());
    let pcrs = (0..u32::try_from(count).unwrap())
        .map(|i| ((HashAlg::Sha256, i), take(&mut rest, 32).to_vec()))
        .collect();
    assert!(rest.is_empty());
    AzureQuote {
        // The vector's scheme (README): RSASSA-PKCS1-v1_5 with SHA-256.
        signature: Signature::RsaSsa {
            hash: HashAlg::Sha256,
            sig,
        },
        attest,
        pcrs,
    }
}

/// The SNP part simulated, the rest real: an HCL report shaped like the
/// vector, whose SNP report the simulator signs over REPORT_DATA =
/// SHA-256(`runtime`).
fn simulated_hcl(real: &[u8], runtime: &[u8]) -> (Vec<u8>, SimPlatform, i64) {
    const AT: i64 = 1_780_272_000;
    let tcb = TcbVersion {
        fmc: None,
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 115,
    };
    let platform = SimPlatform::new(&ChainParams {
        product: Product::Milan,
        kind: VekKind::Vcek,
        tcb,
        hw_id: [0x3A; 64],
        not_before: AT - 86_400,
        not_after: AT + 86_400,
    })
    .unwrap();
    let mut report_data = [0u8; 64];
    report_data[..32]
        .copy_from_slice(ring::digest::digest(&ring::digest::SHA256, runtime).as_ref());
    let report = platform
        .report_bytes(&ReportParams {
            version: 3,
            product: Product::Milan,
            tcb,
            chip_id: [0x3A; 64],
            report_data,
            ..ReportParams::default()
        })
        .unwrap();
    let mut b = real[..32].to_vec();
    b.extend_from_slice(&report);
    let n = u32::try_from(runtime.len()).unwrap();
    for v in [n + 20, 1, 2, 1, n] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(runtime);
    let size = u32::try_from(b.len()).unwrap();
    b[8..12].copy_from_slice(&size.to_le_bytes());
    b.resize(real.len().max(b.len()), 0);
    (b, platform, AT)
}

fn sim_verifier() -> Verifier {
    let mut anchors = TrustAnchors::empty();
    anchors.add_root(
        Product::Milan,
        ark_fingerprint(Product::Milan),
        "provenix simulator",
    );
    Verifier::new(anchors)
}

#[test]
fn azure_quote_verifies_with_the_ak_a_simulated_hcl_report_vouches_for() {
    let Some(dir) = tpm_vectors() else { return };
    let real = vector_file(&dir, AZURE, "hcl-report-snp.bin");
    let quote = azure_quote(&dir);
    let m = manifest(&dir, AZURE);
    for (i, v) in m["quote"]["pcrs_sha256"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let i = u32::try_from(i).unwrap();
        assert_eq!(
            hex::encode(&quote.pcrs[&(HashAlg::Sha256, i)]),
            v.as_str().unwrap()
        );
    }

    // The AK of quote.bin, from akpub.pem, as an HCLAkPub JWK.
    let pem = vector_file(&dir, AZURE, "akpub.pem");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    use x509_parser::prelude::FromDer as _;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents).unwrap();
    let x509_parser::public_key::PublicKey::RSA(rsa) = spki.parsed().unwrap() else {
        panic!("RSA akpub.pem expected")
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let json = format!(
        r#"{{"keys":[{{"kid":"HCLAkPub","key_ops":["sign"],"kty":"RSA","e":"{}","n":"{}"}}]}}"#,
        b64(rsa.exponent),
        b64(rsa.modulus.strip_prefix(&[0u8]).unwrap_or(rsa.modulus)),
    );
    let (hcl, platform, at) = simulated_hcl(&real, json.as_bytes());
    let hcl = HclReport::from_bytes(&hcl).unwrap();
    let chain = vec![
        platform.chain().ask_der().to_vec(),
        platform.chain().ark_der().to_vec(),
    ];
    let verifier = sim_verifier();
    let verified =
        verify_hcl_report(&verifier, &hcl, platform.chain().vek_der(), &chain, at).unwrap();
    let ak = verified.attestation_key(None).unwrap();
    // README: nonce "challenge", sha256:0-23.
    let q = verify_quote(
        &ak,
        &quote.attest,
        &quote.signature,
        b"challenge",
        &quote.pcrs,
    )
    .unwrap();
    assert_eq!(q.pcrs().len(), 24);
    assert_eq!(q.ak_name(), None);
    let err = verify_quote(
        &ak,
        &quote.attest,
        &quote.signature,
        b"challengf",
        &quote.pcrs,
    )
    .unwrap_err();
    assert!(matches!(err, Error::QualifyingData { .. }), "{err:?}");

    // The real HCL report's own AK is another VM's (README caveat): the
    // quote does not verify with it.
    let runtime = &real[RUNTIME_DATA_OFFSET..RUNTIME_DATA_OFFSET + 583];
    let (hcl, platform, at) = simulated_hcl(&real, runtime);
    let hcl = HclReport::from_bytes(&hcl).unwrap();
    let chain = vec![
        platform.chain().ask_der().to_vec(),
        platform.chain().ark_der().to_vec(),
    ];
    let other = verify_hcl_report(&verifier, &hcl, platform.chain().vek_der(), &chain, at).unwrap();
    let ak = other.attestation_key(None).unwrap();
    let err = verify_quote(
        &ak,
        &quote.attest,
        &quote.signature,
        b"challenge",
        &quote.pcrs,
    )
    .unwrap_err();
    assert!(matches!(err, Error::QuoteSignature), "{err:?}");

    // A TPMT_PUBLIC that is not HCLAkPub is refused.
    let Some(gcp) = gcp() else { return };
    let err = other
        .attestation_key(Some(&Public::from_bytes(&gcp.ak).unwrap()))
        .unwrap_err();
    assert!(
        matches!(err, Error::HclAkMismatch("modulus differs")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------
// swtpm: real quotes, and tpm2_checkquote on the same files

/// PCR values of `q` for a single-bank selection of `pcrs`.
fn values(q: &swtpm::SwQuote, bank: HashAlg, pcrs: &[u32]) -> PcrValues {
    assert_eq!(q.values.len(), pcrs.len() * bank.size());
    pcrs.iter()
        .zip(q.values.chunks(bank.size()))
        .map(|(&i, v)| ((bank, i), v.to_vec()))
        .collect()
}

#[test]
fn swtpm_quotes_verify_and_tpm2_checkquote_agrees() {
    if !swtpm::tools_present() {
        return;
    }
    let tpm = Swtpm::start();
    tpm.tool(&["tpm2_pcrextend", &format!("16:sha256={}", "ab".repeat(32))]);
    let pcrs = [0, 1, 7, 16];
    let qualifying = ring::digest::digest(&ring::digest::SHA256, b"provenix identity v1");
    let qualifying_hex = hex::encode(qualifying.as_ref());
    let mut quotes = Vec::new();
    for spec in &AKS {
        let q = tpm.ak_quote(spec, "sha256:0,1,7,16", &qualifying_hex);
        let public = Public::from_tpm2b(&q.ak_public).unwrap();
        let ak = AttestationKey::from_public(&public).unwrap();
        let sig = Signature::from_bytes(&q.signature).unwrap();
        let vals = values(&q, HashAlg::Sha256, &pcrs);
        let v = verify_quote(&ak, &q.attest, &sig, qualifying.as_ref(), &vals)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        assert_eq!(
            v.pcr(HashAlg::Sha256, 16),
            Some(&vals[&(HashAlg::Sha256, 16)][..])
        );
        // The AK's name as tpm2_createak wrote it.
        assert_eq!(name_of(&public), tpm.read(&format!("{}.name", spec.name)));
        if spec.scheme == "rsapss" {
            // tpm2-tools 5.4's checkquote does not verify RSA-PSS quotes
            // (libtpms signs with salt = hash length, which ring and
            // python-cryptography verify).
            eprintln!("tpm2_checkquote on the PSS quote: {}", tpm.checkquote(&q));
        } else {
            assert!(tpm.checkquote(&q), "tpm2_checkquote refused {}", spec.name);
        }
        // Mutations on a real quote.
        let err = verify_quote(&ak, &q.attest, &sig, b"other", &vals).unwrap_err();
        assert!(matches!(err, Error::QualifyingData { .. }), "{err:?}");
        let mut changed = vals.clone();
        changed.get_mut(&(HashAlg::Sha256, 16)).unwrap()[31] ^= 1;
        let err = verify_quote(&ak, &q.attest, &sig, qualifying.as_ref(), &changed).unwrap_err();
        assert!(matches!(err, Error::PcrDigest { .. }), "{err:?}");
        quotes.push((ak, q, sig, vals));
    }
    // Each quote with every other AK: wrong scheme or wrong key.
    for (i, (ak, ..)) in quotes.iter().enumerate() {
        for (j, (_, q, sig, vals)) in quotes.iter().enumerate() {
            if i == j {
                continue;
            }
            let err = verify_quote(ak, &q.attest, sig, qualifying.as_ref(), vals).unwrap_err();
            assert!(
                matches!(err, Error::QuoteScheme { .. } | Error::QuoteSignature),
                "AK {} on quote {}: {err:?}",
                AKS[i].name,
                AKS[j].name
            );
        }
    }
    // Two quotes by one AK: same key, same name.
    let again = tpm.quote("rsa", &AKS[0], "sha256:0,1,7,16", &qualifying_hex);
    let (ak, ..) = &quotes[0];
    verify_quote(
        ak,
        &again.attest,
        &Signature::from_bytes(&again.signature).unwrap(),
        qualifying.as_ref(),
        &values(&again, HashAlg::Sha256, &pcrs),
    )
    .unwrap();
}

/// A signing key that is not restricted can sign anything a caller hands
/// it, a forged TPMS_ATTEST included; tpm2_checkquote accepts its quotes,
/// we do not.
#[test]
fn swtpm_quote_by_an_unrestricted_key_is_refused() {
    if !swtpm::tools_present() {
        return;
    }
    let tpm = Swtpm::start();
    tpm.tool(&["tpm2_createprimary", "-C", "o", "-c", "srk.ctx"]);
    tpm.tool(&[
        "tpm2_create",
        "-C",
        "srk.ctx",
        "-G",
        "ecc256:ecdsa-sha256",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
        "-u",
        "free.pub",
        "-r",
        "free.priv",
    ]);
    tpm.tool(&[
        "tpm2_load",
        "-C",
        "srk.ctx",
        "-u",
        "free.pub",
        "-r",
        "free.priv",
        "-c",
        "free.ctx",
    ]);
    let spec = &AKS[1];
    let q = tpm.quote("free", spec, "sha256:0", "00");
    eprintln!(
        "tpm2_checkquote on the unrestricted key's quote: {}",
        tpm.checkquote(&q)
    );
    let public = Public::from_tpm2b(&q.ak_public).unwrap();
    assert!(!public.object_attributes().restricted());
    let err = AttestationKey::from_public(&public).unwrap_err();
    assert!(
        matches!(err, Error::AkNotRestrictedSigning { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign")
    );
}
