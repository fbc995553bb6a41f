//! Azure confidential VMs: the HCL report's SNP report, the runtime data it
//! binds, and the vTPM attestation key that runtime data names.
//!
//! The chain of evidence: AMD's ARK -> ASK -> VCEK -> the SNP report
//! ([`Verifier::authenticate`]); its REPORT_DATA = H(runtime data) with the
//! hash the HCL report declares, zero-padded; the runtime data's `HCLAkPub`
//! JWK is the vTPM's AK; that AK signs TPM quotes ([`verify_quote`]).
//!
//! The AK is known from the runtime data by its RSA modulus and exponent
//! only. The paravisor creates it inside the vTPM as a restricted signing
//! key; that it is one rests on the measured paravisor (the SNP report's
//! MEASUREMENT) rather than on attributes the guest reports. When the
//! guest also hands over the AK's TPMT_PUBLIC, it must be the same key and
//! say restricted signing ([`VerifiedHclReport::attestation_key`]).
//!
//! TDX CVMs put a TDREPORT in the HCL report instead; it is MACed for the
//! local platform only and cannot be authenticated from here.
//!
//! [`verify_quote`]: super::quote::verify_quote

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use base64::Engine as _;
use provenix_firmware::tpm::hcl::{HclReport, HwReport};
use provenix_firmware::tpm::{HashAlg, Public};
use ring::digest;
use serde_json::Value;

use super::quote::AttestationKey;
use crate::authenticate::{AuthenticatedReport, Verifier};
use crate::error::Error;

/// The JWK `kid` of the vTPM's attestation key in the runtime data.
pub const HCL_AK_KID: &str = "HCLAkPub";

/// The runtime data of an HCL report: JSON with a `keys` array of JWKs
/// (`HCLAkPub`, and on newer hosts `HCLEkPub`), `vm-configuration` and,
/// once the guest wrote NV 0x01400002, `user-data`.
#[derive(Clone, Debug)]
pub struct HclRuntimeData {
    json: Value,
    ak_n: Vec<u8>,
    ak_e: Vec<u8>,
    user_data: Option<Vec<u8>>,
}

impl HclRuntimeData {
    /// Decode runtime data JSON. This says nothing of where it came from:
    /// [`bound_runtime_data`] checks that a hardware report binds it, and
    /// only a [`VerifiedHclReport`] holds runtime data from an authentic
    /// report.
    pub fn from_json(bytes: &[u8]) -> Result<HclRuntimeData, Error> {
        let bad = |m: String| Error::HclRuntimeData(m);
        let json: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let keys = json
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no \"keys\" array".to_owned()))?;
        let mut aks = keys
            .iter()
            .filter(|k| k.get("kid").and_then(Value::as_str) == Some(HCL_AK_KID));
        let ak = aks
            .next()
            .ok_or_else(|| bad(format!("no key with kid {HCL_AK_KID:?}")))?;
        if aks.next().is_some() {
            return Err(bad(format!("two keys with kid {HCL_AK_KID:?}")));
        }
        if ak.get("kty").and_then(Value::as_str) != Some("RSA") {
            return Err(bad(format!("{HCL_AK_KID} is not an RSA JWK (kty)")));
        }
        let field = |name: &str| -> Result<Vec<u8>, Error> {
            let text = ak
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{HCL_AK_KID} has no \"{name}\"")))?;
            // RFC 7518 6.3.1: base64url without padding.
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|e| bad(format!("{HCL_AK_KID}.{name} is not base64url: {e}")))
        };
        let (ak_n, ak_e) = (field("n")?, field("e")?);
        let user_data = match json.get("user-data") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| hex::decode(s).ok())
                    .ok_or_else(|| bad("user-data is not a hex string".to_owned()))?,
            ),
        };
        Ok(HclRuntimeData {
            json,
            ak_n,
            ak_e,
            user_data,
        })
    }

    /// The whole JSON document.
    pub fn json(&self) -> &Value {
        &self.json
    }
    /// `HCLAkPub`'s modulus and exponent, big-endian, as in the JWK.
    pub fn ak(&self) -> (&[u8], &[u8]) {
        (&self.ak_n, &self.ak_e)
    }
    /// `user-data`: what the guest last wrote to NV 0x01400002.
    pub fn user_data(&self) -> Option<&[u8]> {
        self.user_data.as_deref()
    }
}

/// Check that the hardware report's report data is H(runtime data), with
/// the hash the HCL report declares, followed by zeros; then decode the
/// runtime data. The result is only as authentic as the hardware report.
pub fn bound_runtime_data(hcl: &HclReport) -> Result<HclRuntimeData, Error> {
    let hash = hcl.report_data_hash();
    let alg = match hash {
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
        // The HCL report's hash types are SHA-256/384/512 only.
        HashAlg::Sha1 => return Err(Error::HclUnsupported("SHA-1 report data hash".to_owned())),
    };
    let expected = digest::digest(alg, hcl.runtime_data());
    let report_data = hcl.hw_report().report_data();
    let (head, tail) = report_data.split_at(expected.as_ref().len().min(report_data.len()));
    if head != expected.as_ref() || tail.iter().any(|&b| b != 0) {
        return Err(Error::HclReportData {
            hash,
            found: hex::encode(report_data),
            expected: hex::encode(expected.as_ref()),
        });
    }
    HclRuntimeData::from_json(hcl.runtime_data())
}

/// An HCL report whose SNP report authenticated to a trusted AMD root and
/// binds its runtime data. Only [`verify_hcl_report`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedHclReport {
    snp: AuthenticatedReport,
    runtime: HclRuntimeData,
}

/// Authenticate an SEV-SNP CVM's HCL report: the SNP report with the VCEK
/// `vek` and the `chain` offered (as [`Verifier::authenticate`]), then the
/// runtime data binding. `at` is the verification time, unix seconds.
pub fn verify_hcl_report(
    verifier: &Verifier,
    hcl: &HclReport,
    vek: &[u8],
    chain: &[Vec<u8>],
    at: i64,
) -> Result<VerifiedHclReport, Error> {
    let report = match hcl.hw_report() {
        HwReport::Snp(r) => r,
        HwReport::Tdx(_) => {
            return Err(Error::HclUnsupported(
                "a TDX TDREPORT cannot be authenticated remotely (it needs a TD quote)".to_owned(),
            ));
        }
    };
    let snp = verifier.authenticate(report, vek, chain, at)?;
    let runtime = bound_runtime_data(hcl)?;
    Ok(VerifiedHclReport { snp, runtime })
}

impl VerifiedHclReport {
    /// The authenticated SNP report, for appraisal against a policy.
    pub fn snp(&self) -> &AuthenticatedReport {
        &self.snp
    }
    /// The runtime data the report binds.
    pub fn runtime_data(&self) -> &HclRuntimeData {
        &self.runtime
    }

    /// The vTPM AK this report vouches for, to verify quotes with. With
    /// `public` (the AK's TPMT_PUBLIC, as `tpm2_readpublic` reads it from
    /// the vTPM), it must be a restricted signing key with the same modulus
    /// and exponent as `HCLAkPub`; without, the JWK's key is used as is.
    pub fn attestation_key(&self, public: Option<&Public>) -> Result<AttestationKey, Error> {
        let (n, e) = self.runtime.ak();
        let vouched = AttestationKey::vouched_rsa(n, e);
        let Some(public) = public else {
            return Ok(vouched);
        };
        let given = AttestationKey::from_public(public)?;
        let (Some((gn, ge)), Some((vn, ve))) = (given.rsa_components(), vouched.rsa_components())
        else {
            return Err(Error::HclAkMismatch("the TPMT_PUBLIC is not an RSA key"));
        };
        if gn != vn {
            return Err(Error::HclAkMismatch("modulus differs"));
        }
        if ge != ve {
            return Err(Error::HclAkMismatch("exponent differs"));
        }
        Ok(given)
    }
}
