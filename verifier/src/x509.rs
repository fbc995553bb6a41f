//! The certificates of AMD's SEV-SNP chain: parsing with x509-parser, the
//! signature checks with ring, and AMD's VCEK/VLEK extensions.
//!
//! AMD's certificate profile is "Versioned Chip Endorsement Key (VCEK)
//! Certificate and KDS Interface Specification" (publication 57230): ARK and
//! ASK/ASVK are RSA-4096 and sign with RSASSA-PSS (SHA-384, MGF1-SHA-384,
//! salt 48); the VCEK/VLEK is ECDSA P-384 and carries the TCB it was issued
//! for in extensions under 1.3.6.1.4.1.3704.1.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use provenix_firmware::snp::{Product, TcbVersion};
use ring::signature::{self, UnparsedPublicKey};
use x509_parser::der_parser::oid::Oid;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::AlgorithmIdentifier;

use crate::error::{CertRole, Error};
use crate::hash::sha256;

/// Largest certificate accepted; AMD's are under 2.5 KiB.
pub(crate) const MAX_CERT_SIZE: usize = 16 * 1024;

/// An owned, parsed certificate with what the chain checks need.
#[derive(Clone, Debug)]
pub(crate) struct Cert {
    pub(crate) role: CertRole,
    pub(crate) der: Vec<u8>,
    pub(crate) tbs: Vec<u8>,
    pub(crate) subject: Vec<u8>,
    pub(crate) issuer: Vec<u8>,
    pub(crate) subject_cn: String,
    pub(crate) serial: Vec<u8>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) signature: Vec<u8>,
    pub(crate) key: PublicKey,
    pub(crate) amd: AmdExtensions,
}

/// How a certificate is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SigAlg {
    /// RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48, trailer 1: the only
    /// parameters AMD uses, and the only ones accepted.
    RsaPssSha384,
}

/// A subject public key of a type the chain uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// RSAPublicKey DER, as ring takes it.
    Rsa(Vec<u8>),
    /// An uncompressed P-384 point.
    EcP384(Vec<u8>),
}

/// AMD's extensions (VCEK spec, Table 8), where present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AmdExtensions {
    pub(crate) struct_version: Option<u8>,
    pub(crate) product_name: Option<String>,
    /// SPLs by the last arc of 1.3.6.1.4.1.3704.1.3.N.
    pub(crate) spl: [Option<u8>; 10],
    pub(crate) hw_id: Option<Vec<u8>>,
    pub(crate) csp_id: Option<String>,
}

impl AmdExtensions {
    /// The TCB the certificate was issued for, in `product`'s layout:
    /// boot loader 3.1, TEE 3.2, SNP 3.3, microcode 3.8, FMC 3.9 (Turin).
    pub(crate) fn tcb(&self, product: Product, role: CertRole) -> Result<TcbVersion, Error> {
        let spl = |n: usize, name: &'static str| {
            self.spl
                .get(n)
                .copied()
                .flatten()
                .ok_or(Error::Certificate {
                    role,
                    reason: format!("missing {name} SPL extension 1.3.6.1.4.1.3704.1.3.{n}"),
                })
        };
        Ok(TcbVersion {
            fmc: if product.has_fmc() {
                Some(spl(9, "FMC")?)
            } else {
                None
            },
            bootloader: spl(1, "boot loader")?,
            tee: spl(2, "TEE")?,
            snp: spl(3, "SNP")?,
            microcode: spl(8, "microcode")?,
        })
    }
}

const AMD_ARC: [u64; 8] = [1, 3, 6, 1, 4, 1, 3704, 1];
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_SECP384R1: &str = "1.3.132.0.34";

impl Cert {
    /// Parse DER, refusing trailing bytes and oversized input.
    pub(crate) fn from_der(der: &[u8], role: CertRole) -> Result<Cert, Error> {
        let bad = |reason: String| Error::Certificate { role, reason };
        if der.len() > MAX_CERT_SIZE {
            return Err(bad(format!(
                "{} bytes exceeds the limit of {MAX_CERT_SIZE}",
                der.len()
            )));
        }
        crate::der::check_certificate_envelope(der)
            .map_err(|e| bad(format!("not canonical DER: {e}")))?;
        let (rest, x509) = X509Certificate::from_der(der)
            .map_err(|e| bad(format!("not a DER X.509 certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(bad(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let tbs = &x509.tbs_certificate;
        if tbs.signature != x509.signature_algorithm {
            return Err(bad(
                "inner and outer signature algorithms differ (RFC 5280 4.1.1.2)".into(),
            ));
        }
        let SigAlg::RsaPssSha384 = sig_alg(&x509.signature_algorithm).map_err(bad)?;
        if x509.signature_value.unused_bits != 0 {
            return Err(bad("signature BIT STRING has unused bits".into()));
        }
        let key = public_key(&x509).map_err(bad)?;
        let amd = amd_extensions(&x509).map_err(bad)?;
        let subject_cn = tbs
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Cert {
            role,
            der: der.to_vec(),
            tbs: tbs.as_ref().to_vec(),
            subject: tbs.subject.as_raw().to_vec(),
            issuer: tbs.issuer.as_raw().to_vec(),
            subject_cn,
            serial: tbs.raw_serial().to_vec(),
            not_before: tbs.validity.not_before.timestamp(),
            not_after: tbs.validity.not_after.timestamp(),
            signature: x509.signature_value.data.to_vec(),
            key,
            amd,
        })
    }

    /// SHA-256 of the DER: the fingerprint trust anchors are pinned by.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        sha256(&self.der)
    }

    /// SHA-256 of the subject public key: the RSAPublicKey DER (canonical:
    /// ring refuses any other encoding when it verifies with it) or the
    /// uncompressed P-384 point (the only form [`public_key`] accepts).
    pub(crate) fn key_id(&self) -> [u8; 32] {
        match &self.key {
            PublicKey::Rsa(der) | PublicKey::EcP384(der) => sha256(der),
        }
    }

    /// Check this certificate's signature with `issuer`'s key, and that the
    /// issuer's subject is this certificate's issuer.
    pub(crate) fn verify_signed_by(&self, issuer: &Cert) -> Result<(), Error> {
        if self.issuer != issuer.subject {
            return Err(Error::IssuerMismatch {
                role: self.role,
                issuer: issuer.role,
            });
        }
        verify_rsa_pss(&issuer.key, &self.tbs, &self.signature).map_err(|()| Error::CertSignature {
            role: self.role,
            issuer: issuer.role,
        })
    }

    /// Check the validity period at `at` (unix seconds), both ends inclusive
    /// (RFC 5280 4.1.2.5).
    pub(crate) fn check_validity(&self, at: i64) -> Result<(), Error> {
        if at < self.not_before || at > self.not_after {
            return Err(Error::Expired {
                role: self.role,
                not_before: self.not_before,
                not_after: self.not_after,
                at,
            });
        }
        Ok(())
    }
}

/// Verify an RSASSA-PSS SHA-384 signature (salt 48, as ring requires and as
/// AMD uses).
pub(crate) fn verify_rsa_pss(key: &PublicKey, message: &[u8], signature: &[u8]) -> Result<(), ()> {
    let PublicKey::Rsa(der) = key else {
        return Err(());
    };
    UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA384, der)
        .verify(message, signature)
        .map_err(|_| ())
}

/// Accept exactly AMD's RSASSA-PSS parameters; name what differs otherwise.
pub(crate) fn sig_alg(alg: &AlgorithmIdentifier<'_>) -> Result<SigAlg, String> {
    let parsed = SignatureAlgorithm::try_from(alg)
        .map_err(|e| format!("unsupported signature algorithm {}: {e}", alg.algorithm))?;
    let SignatureAlgorithm::RSASSA_PSS(params) = parsed else {
        return Err(format!(
            "signature algorithm {} is not RSASSA-PSS",
            alg.algorithm
        ));
    };
    let hash = params.hash_algorithm_oid().to_id_string();
    if hash != OID_SHA384 {
        return Err(format!("RSASSA-PSS hash {hash}, expected SHA-384"));
    }
    let mgf = params
        .mask_gen_algorithm()
        .map_err(|e| format!("RSASSA-PSS mask generation: {e}"))?;
    if mgf.mgf.to_id_string() != OID_MGF1 || mgf.hash.to_id_string() != OID_SHA384 {
        return Err(format!(
            "RSASSA-PSS mask generation {} with {}, expected MGF1 with SHA-384",
            mgf.mgf, mgf.hash
        ));
    }
    if params.salt_length() != 48 {
        return Err(format!(
            "RSASSA-PSS salt length {}, expected 48",
            params.salt_length()
        ));
    }
    if params.trailer_field() != 1 {
        return Err(format!(
            "RSASSA-PSS trailer field {}, expected 1",
            params.trailer_field()
        ));
    }
    Ok(SigAlg::RsaPssSha384)
}

fn public_key(x509: &X509Certificate<'_>) -> Result<PublicKey, String> {
    let spki = x509.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    let bits = &spki.subject_public_key;
    if bits.unused_bits != 0 {
        return Err("public key BIT STRING has unused bits".into());
    }
    match alg.as_str() {
        OID_RSA_ENCRYPTION => Ok(PublicKey::Rsa(bits.data.to_vec())),
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            if curve.as_deref() != Some(OID_SECP384R1) {
                return Err(format!(
                    "EC key on curve {}, expected P-384",
                    curve.as_deref().unwrap_or("(none)")
                ));
            }
            // SEC 1 uncompressed point: 0x04 || X (48) || Y (48).
            if bits.data.len() != 97 || bits.data.first() != Some(&4) {
                return Err("P-384 public key is not an uncompressed point".into());
            }
            Ok(PublicKey::EcP384(bits.data.to_vec()))
        }
        other => Err(format!("unsupported public key algorithm {other}")),
    }
}

fn amd_extensions(x509: &X509Certificate<'_>) -> Result<AmdExtensions, String> {
    let mut amd = AmdExtensions::default();
    for ext in x509.extensions() {
        let Some(arcs) = amd_arcs(&ext.oid) else {
            continue;
        };
        let v = ext.value;
        match arcs.as_slice() {
            [1] => amd.struct_version = Some(der_u8(v).map_err(|e| format!("structVersion: {e}"))?),
            [2] => amd.product_name = Some(der_ia5(v).map_err(|e| format!("productName: {e}"))?),
            [3, n] => {
                let slot = usize::try_from(*n)
                    .ok()
                    .and_then(|n| amd.spl.get_mut(n))
                    .ok_or_else(|| format!("unknown SPL extension 1.3.6.1.4.1.3704.1.3.{n}"))?;
                if slot.is_some() {
                    return Err(format!("SPL extension 3.{n} appears twice"));
                }
                *slot = Some(der_u8(v).map_err(|e| format!("SPL 3.{n}: {e}"))?);
            }
            [4] => amd.hw_id = Some(hw_id(v)?),
            [5] => amd.csp_id = Some(der_ia5(v).map_err(|e| format!("cspId: {e}"))?),
            _ => {}
        }
    }
    Ok(amd)
}

/// The arcs after 1.3.6.1.4.1.3704.1, if the OID is under it.
fn amd_arcs(oid: &Oid<'_>) -> Option<Vec<u64>> {
    let arcs: Vec<u64> = oid.iter()?.collect();
    let rest = arcs.strip_prefix(AMD_ARC.as_slice())?;
    Some(rest.to_vec())
}

/// The hwID extension: AMD's VCEKs carry the raw bytes (64, or 8 on Turin);
/// some certificates wrap them in an OCTET STRING, which is unwrapped.
fn hw_id(v: &[u8]) -> Result<Vec<u8>, String> {
    match v {
        [0x04, len, rest @ ..]
            if usize::from(*len) == rest.len() && matches!(rest.len(), 8 | 64) =>
        {
            Ok(rest.to_vec())
        }
        raw if matches!(raw.len(), 8 | 64) => Ok(raw.to_vec()),
        other => Err(format!("hwID of {} bytes, expected 8 or 64", other.len())),
    }
}

/// A DER INTEGER that fits in a u8 (SPLs and structVersion are 0..=255).
fn der_u8(v: &[u8]) -> Result<u8, String> {
    match v {
        [0x02, 0x01, b] if *b < 0x80 => Ok(*b),
        [0x02, 0x02, 0x00, b] if *b >= 0x80 => Ok(*b),
        _ => Err(format!("not a DER INTEGER in 0..=255: {}", hex::encode(v))),
    }
}

/// A short DER IA5String.
fn der_ia5(v: &[u8]) -> Result<String, String> {
    match v {
        [0x16, len, rest @ ..] if usize::from(*len) == rest.len() && rest.is_ascii() => {
            Ok(String::from_utf8_lossy(rest).into_owned())
        }
        _ => Err("not a short DER IA5String".into()),
    }
}

/// Parse one or more certificates: DER, or PEM with any number of blocks.
pub(crate) fn parse_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes.to_vec()]);
    }
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| format!("bad PEM: {e}"))?;
        if pem.label == "CERTIFICATE" || pem.label == "X509 CRL" {
            out.push(pem.contents);
        }
        if out.len() > 16 {
            return Err("more than 16 PEM blocks".into());
        }
    }
    if out.is_empty() {
        return Err("neither DER nor PEM".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn der_integers() {
        assert_eq!(der_u8(&[2, 1, 0x44]), Ok(0x44));
        assert_eq!(der_u8(&[2, 2, 0, 0xD9]), Ok(0xD9));
        assert!(der_u8(&[2, 1, 0x80]).is_err()); // negative
        assert!(der_u8(&[2, 2, 0, 0x10]).is_err()); // not minimal
        assert!(der_u8(&[2, 2, 1, 0]).is_err()); // too large
        assert!(der_u8(&[4, 1, 0]).is_err());
        assert!(der_u8(&[]).is_err());
    }

    #[test]
    fn hw_id_forms() {
        assert_eq!(hw_id(&[7; 64]).unwrap(), vec![7; 64]);
        assert_eq!(hw_id(&[7; 8]).unwrap(), vec![7; 8]);
        let mut wrapped = vec![0x04, 0x40];
        wrapped.extend([9; 64]);
        assert_eq!(hw_id(&wrapped).unwrap(), vec![9; 64]);
        assert!(hw_id(&[1; 63]).is_err());
    }
}
