//! TPM2_Quote verification: the AK's signature over TPMS_ATTEST, the
//! qualifying data, the PCR selection and the PCR digest.
//!
//! What a [`VerifiedQuote`] proves: a TPM holding the AK's private key
//! signed, with a restricted key (so the TPM itself produced the
//! TPMS_ATTEST: a restricted key refuses to sign data that starts with
//! TPM_GENERATED_VALUE unless the TPM made it), a quote with the caller's
//! qualifying data over exactly the PCR values the caller gave. That the AK
//! belongs to a genuine TPM (an AK certificate, credential activation, an
//! Azure HCL report) is a separate decision; [`VerifiedQuote::ak_name`] is
//! what credential activation binds.
//!
//! Algorithms, with ring:
//! - RSASSA-PKCS1-v1_5 with SHA-1, SHA-256, SHA-384 or SHA-512 (RSA 2048 to
//!   8192 bits; SHA-1 because TPMs and clouds still quote with it, e.g.
//!   GCP's Windows Shielded VMs);
//! - RSASSA-PSS with SHA-256, SHA-384 or SHA-512, MGF1 with the same hash
//!   and a salt as long as the hash. TPM 2.0 Part 1 (B.7, since rev 1.38,
//!   following FIPS 186-4) makes the TPM use exactly that salt, and libtpms
//!   (swtpm) does; ring verifies only that salt length, so a quote from an
//!   older TPM that used the largest salt fails as a bad signature.
//!   RSA-PSS with SHA-1 is refused (ring has no such verifier);
//! - ECDSA on P-256 with SHA-256 and on P-384 with SHA-384 (ring's fixed
//!   `r || s` verifiers exist for these pairs only; the cross pairs are
//!   refused by name). The TPM's r and s are big-endian TPM2B fields that
//!   may be shorter than the curve: they are left-padded to its size.
//!
//! pcrDigest is hashed with the signature scheme's hash (TPM 2.0 Part 3,
//! TPM2_Quote: "the digest is computed using the hash of the signing
//! scheme"), not the AK's nameAlg.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::collections::BTreeMap;

use provenix_firmware::tpm::structures::{
    Attest, ClockInfo, EccCurve, ObjectAttributes, Public, PublicKey, QuoteInfo, Scheme,
};
use provenix_firmware::tpm::{HashAlg, Signature};
use ring::{digest, signature};

use crate::error::Error;

/// PCR values, by bank and index: what the caller says the quoted PCRs
/// hold (read from the TPM beside the quote, or replayed from a log).
pub type PcrValues = BTreeMap<(HashAlg, u32), Vec<u8>>;

/// TPM_RH_ENDORSEMENT (TPM 2.0 Part 2, 7.4 "TPM_RH"): the hierarchy the
/// worker makes its attestation keys in, as primaries.
pub const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;

/// The Qualified Name of a primary object in `hierarchy` (TPM 2.0 Part 1,
/// 16.6: a hierarchy's qualified name is its handle, and QN(child) =
/// nameAlg || H_nameAlg(QN(parent) || Name(child))). A quote's
/// qualifiedSigner is the signing key's qualified name, so comparing them
/// proves that the TPMT_PUBLIC the verifier was given, attributes, policy
/// and all, is the one the TPM signed with.
pub fn primary_qualified_name(public: &Public, hierarchy: u32) -> Vec<u8> {
    let alg = public.name_alg();
    let mut ctx = digest::Context::new(crate::hash::tpm_algorithm(alg));
    ctx.update(&hierarchy.to_be_bytes());
    ctx.update(&name_of(public));
    let mut qn = alg.id().to_be_bytes().to_vec();
    qn.extend_from_slice(ctx.finish().as_ref());
    qn
}

/// Domain of [`key_id`].
const KEY_ID_DOMAIN: &[u8] = b"provenix tpm key v1";

/// The identity of a TPM key by its public key alone: SHA-256 over a
/// domain, then RSA's modulus and exponent (big-endian, no leading zeros;
/// an exponent of 0 in a TPMT_PUBLIC is 65537), or ECC's curve ID and
/// uncompressed point with coordinates left-padded to the curve size. The
/// rest of a TPMT_PUBLIC (attributes, policy, scheme, symmetric parameters,
/// zero padding of the numbers) can differ for one key, so a TPM is never
/// counted by its TPMT_PUBLIC bytes. `None` for an ECC coordinate longer
/// than its curve.
pub fn key_id(key: &PublicKey) -> Option<[u8; 32]> {
    let material = match key {
        PublicKey::Rsa(k) => rsa_key(&k.modulus, &k.public_exponent().to_be_bytes()),
        PublicKey::Ecc(k) => KeyMaterial::Ecc {
            curve: k.curve,
            point: ecc_point(k.curve, &k.x, &k.y)?,
        },
    };
    Some(material.id())
}

/// SEC 1 uncompressed point `0x04 || X || Y`, coordinates left-padded to
/// the curve's size; `None` when one is longer.
fn ecc_point(curve: EccCurve, x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    let mut point = vec![0x04];
    point.extend(left_pad(x, curve.size())?);
    point.extend(left_pad(y, curve.size())?);
    Some(point)
}

impl KeyMaterial {
    /// See [`key_id`].
    fn id(&self) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(KEY_ID_DOMAIN);
        let mut field = |b: &[u8]| {
            ctx.update(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
            ctx.update(b);
        };
        match self {
            KeyMaterial::Rsa { n, e } => {
                field(b"rsa");
                field(n);
                field(e);
            }
            KeyMaterial::Ecc { curve, point } => {
                field(b"ecc");
                field(&curve.id().to_be_bytes());
                field(point);
            }
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(ctx.finish().as_ref());
        id
    }
}

/// An object's name (TPM 2.0 Part 1, 16 "Names"): nameAlg || H_nameAlg
/// (the marshalled TPMT_PUBLIC), over the bytes as received.
pub fn name_of(public: &Public) -> Vec<u8> {
    let alg = public.name_alg();
    let mut name = alg.id().to_be_bytes().to_vec();
    name.extend_from_slice(
        digest::digest(crate::hash::tpm_algorithm(alg), public.as_bytes()).as_ref(),
    );
    name
}

/// The public key of an attestation key, in the form ring verifies with.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyMaterial {
    /// Modulus and exponent, big-endian, without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed point, 0x04 || X || Y, each padded to the curve.
    Ecc { curve: EccCurve, point: Vec<u8> },
}

/// A key quotes can be verified with: an AK whose public area says it is a
/// restricted signing key, or (crate-internal) an AK vouched for by other
/// evidence, such as Azure's HCL report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationKey {
    key: KeyMaterial,
    scheme: Option<Scheme>,
    name: Option<Vec<u8>>,
}

impl AttestationKey {
    /// The AK described by `public` (a TPMT_PUBLIC). It must be a
    /// restricted signing key that cannot decrypt, RSA (2048 bits or more)
    /// or ECC on P-256 or P-384, with a public part.
    pub fn from_public(public: &Public) -> Result<AttestationKey, Error> {
        let attrs = public.object_attributes();
        if !attrs.has(ObjectAttributes::RESTRICTED | ObjectAttributes::SIGN) || attrs.decrypt() {
            return Err(Error::AkNotRestrictedSigning {
                attributes: attrs.to_string(),
            });
        }
        let key = match public.key() {
            PublicKey::Rsa(k) => {
                if k.modulus.is_empty()
                    || k.modulus.len().checked_mul(8) != Some(usize::from(k.key_bits))
                {
                    return Err(Error::AkUnsupported(format!(
                        "RSA modulus is {} bytes but keyBits is {}",
                        k.modulus.len(),
                        k.key_bits
                    )));
                }
                rsa_key(&k.modulus, &k.public_exponent().to_be_bytes())
            }
            PublicKey::Ecc(k) => {
                if !matches!(k.curve, EccCurve::NistP256 | EccCurve::NistP384) {
                    return Err(Error::AkUnsupported(format!(
                        "ECC curve {:?} (P-256 and P-384 are supported)",
                        k.curve
                    )));
                }
                let point = ecc_point(k.curve, &k.x, &k.y).ok_or_else(|| {
                    Error::AkUnsupported(format!(
                        "an ECC coordinate is longer than the curve's {} bytes",
                        k.curve.size()
                    ))
                })?;
                KeyMaterial::Ecc {
                    curve: k.curve,
                    point,
                }
            }
        };
        if let Some(s) = public.scheme()
            && !s.is_signing()
        {
            return Err(Error::AkUnsupported(format!(
                "scheme {s:?} is not a signing scheme"
            )));
        }
        Ok(AttestationKey {
            key,
            scheme: public.scheme(),
            name: Some(name_of(public)),
        })
    }

    /// An RSA AK known only by its modulus and exponent (big-endian), whose
    /// being a restricted signing key of the TPM rests on the evidence that
    /// vouched for it.
    pub(crate) fn vouched_rsa(n: &[u8], e: &[u8]) -> AttestationKey {
        AttestationKey {
            key: rsa_key(n, e),
            scheme: None,
            name: None,
        }
    }

    /// The RSA modulus and exponent (big-endian, no leading zeros), if this
    /// is an RSA key.
    pub fn rsa_components(&self) -> Option<(&[u8], &[u8])> {
        match &self.key {
            KeyMaterial::Rsa { n, e } => Some((n, e)),
            KeyMaterial::Ecc { .. } => None,
        }
    }

    /// The key's identity by its public key alone ([`key_id`]).
    pub fn key_id(&self) -> [u8; 32] {
        self.key.id()
    }

    /// The AK's name, when it was given as a TPMT_PUBLIC.
    pub fn name(&self) -> Option<&[u8]> {
        self.name.as_deref()
    }

    /// Check `sig` over `message`: scheme against the key, then the
    /// signature itself.
    fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), Error> {
        let mismatch = || Error::QuoteScheme {
            key: match (&self.key, self.scheme) {
                (_, Some(s)) => format!("{s:?}"),
                (KeyMaterial::Rsa { .. }, None) => "an RSA key".to_owned(),
                (KeyMaterial::Ecc { .. }, None) => "an ECC key".to_owned(),
            },
            signature: format!("{:?}", sig.scheme()),
        };
        if self.scheme.is_some_and(|s| s != sig.scheme()) {
            return Err(mismatch());
        }
        let unsupported = || Error::QuoteAlgorithm(format!("{:?}", sig.scheme()));
        match (&self.key, sig) {
            (KeyMaterial::Rsa { n, e }, Signature::RsaSsa { hash, sig }) => {
                let params = match hash {
                    HashAlg::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                    HashAlg::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    HashAlg::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    HashAlg::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                };
                rsa_verify(params, n, e, message, sig)
            }
            (KeyMaterial::Rsa { n, e }, Signature::RsaPss { hash, sig }) => {
                let params = match hash {
                    HashAlg::Sha1 => return Err(unsupported()),
                    HashAlg::Sha256 => &signature::RSA_PSS_2048_8192_SHA256,
                    HashAlg::Sha384 => &signature::RSA_PSS_2048_8192_SHA384,
                    HashAlg::Sha512 => &signature::RSA_PSS_2048_8192_SHA512,
                };
                rsa_verify(params, n, e, message, sig)
            }
            (KeyMaterial::Ecc { curve, point }, Signature::Ecdsa { hash, r, s }) => {
                let alg = match (curve, hash) {
                    (EccCurve::NistP256, HashAlg::Sha256) => &signature::ECDSA_P256_SHA256_FIXED,
                    (EccCurve::NistP384, HashAlg::Sha384) => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return Err(unsupported()),
                };
                let size = curve.size();
                let mut fixed = Vec::with_capacity(size.saturating_mul(2));
                for part in [r, s] {
                    // A scalar longer than the curve cannot be valid.
                    let part = left_pad(part, size).ok_or(Error::QuoteSignature)?;
                    fixed.extend_from_slice(&part);
                }
                signature::UnparsedPublicKey::new(alg, point)
                    .verify(message, &fixed)
                    .map_err(|_| Error::QuoteSignature)
            }
            _ => Err(mismatch()),
        }
    }
}

/// `n` and `e` without leading zeros, as ring wants them.
fn rsa_key(n: &[u8], e: &[u8]) -> KeyMaterial {
    let strip = |b: &[u8]| {
        let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        b.get(first..).unwrap_or_default().to_vec()
    };
    KeyMaterial::Rsa {
        n: strip(n),
        e: strip(e),
    }
}

fn rsa_verify(
    params: &'static signature::RsaParameters,
    n: &[u8],
    e: &[u8],
    message: &[u8],
    sig: &[u8],
) -> Result<(), Error> {
    signature::RsaPublicKeyComponents { n, e }
        .verify(params, message, sig)
        .map_err(|_| Error::QuoteSignature)
}

/// `b` as `size` bytes, zeros in front; `None` if it is longer once its
/// leading zeros are dropped.
fn left_pad(b: &[u8], size: usize) -> Option<Vec<u8>> {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    let b = b.get(first..)?;
    let pad = size.checked_sub(b.len())?;
    let mut out = vec![0u8; pad];
    out.extend_from_slice(b);
    Some(out)
}

/// A quote whose signature, qualifying data and PCR digest verified. Only
/// [`verify_quote`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedQuote {
    attest: Attest,
    pcrs: PcrValues,
    hash: HashAlg,
    ak_name: Option<Vec<u8>>,
}

impl VerifiedQuote {
    /// The TPMS_ATTEST, as signed.
    pub fn attest(&self) -> &Attest {
        &self.attest
    }
    /// The quote's PCR selection and digest.
    pub fn quote_info(&self) -> Option<&QuoteInfo> {
        self.attest.quote()
    }
    /// The qualifying data (extraData), which equals what was expected.
    pub fn extra_data(&self) -> &[u8] {
        self.attest.extra_data()
    }
    /// The TPM's clock when it quoted.
    pub fn clock_info(&self) -> ClockInfo {
        self.attest.clock_info()
    }
    /// The TPM's firmware version.
    pub fn firmware_version(&self) -> u64 {
        self.attest.firmware_version()
    }
    /// The quoted PCR values, now vouched for by the TPM.
    pub fn pcrs(&self) -> &PcrValues {
        &self.pcrs
    }
    /// One quoted PCR's value.
    pub fn pcr(&self, bank: HashAlg, pcr: u32) -> Option<&[u8]> {
        self.pcrs.get(&(bank, pcr)).map(Vec::as_slice)
    }
    /// The hash the quote was signed with, which also made pcrDigest.
    pub fn signature_hash(&self) -> HashAlg {
        self.hash
    }
    /// The AK's name (nameAlg || H(TPMT_PUBLIC)), when the AK was given as
    /// a TPMT_PUBLIC: what credential activation binds an AK certificate to.
    pub fn ak_name(&self) -> Option<&[u8]> {
        self.ak_name.as_deref()
    }
}

/// Verify a quote: `attest` is the marshalled TPMS_ATTEST as the TPM
/// returned it, `signature` its TPMT_SIGNATURE, `qualifying_data` what the
/// verifier asked the TPM to include (extraData), `pcrs` the values of
/// exactly the PCRs the quote selects.
///
/// Checks, in order: the structure; the signature scheme against the AK's;
/// the signature over `attest` as received; that it is a quote; extraData;
/// that every PCR given is quoted and every quoted PCR is given, at its
/// bank's size; pcrDigest = H_sig(values in selection order).
pub fn verify_quote(
    ak: &AttestationKey,
    attest: &[u8],
    signature: &Signature,
    qualifying_data: &[u8],
    pcrs: &PcrValues,
) -> Result<VerifiedQuote, Error> {
    let parsed = Attest::from_bytes(attest)?;
    ak.verify(attest, signature)?;
    let Some(quote) = parsed.quote() else {
        return Err(Error::NotAQuote);
    };
    if parsed.extra_data() != qualifying_data {
        return Err(Error::QualifyingData {
            expected: hex::encode(qualifying_data),
            found: hex::encode(parsed.extra_data()),
        });
    }
    if let Some(&(bank, pcr)) = pcrs.keys().find(|(bank, pcr)| {
        !quote
            .pcr_select
            .iter()
            .any(|s| s.hash() == *bank && s.contains(*pcr))
    }) {
        return Err(Error::PcrNotQuoted { bank, pcr });
    }
    let hash = signature.hash();
    let mut ctx = digest::Context::new(crate::hash::tpm_algorithm(hash));
    for (bank, pcr) in quote.selected() {
        let value = pcrs
            .get(&(bank, pcr))
            .ok_or(Error::PcrValueMissing { bank, pcr })?;
        if value.len() != bank.size() {
            return Err(Error::PcrValueLength {
                bank,
                pcr,
                len: value.len(),
            });
        }
        ctx.update(value);
    }
    let computed = ctx.finish();
    if computed.as_ref() != quote.pcr_digest.as_slice() {
        return Err(Error::PcrDigest {
            hash,
            quoted: hex::encode(&quote.pcr_digest),
            computed: hex::encode(computed.as_ref()),
        });
    }
    Ok(VerifiedQuote {
        pcrs: pcrs.clone(),
        hash,
        ak_name: ak.name.clone(),
        attest: parsed,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn a_key_has_one_id_whatever_else_its_public_area_says() {
        use provenix_firmware::tpm::structures::{EccPublic, RsaPublic};
        let ecc = |scheme, x: &[u8], y: &[u8]| {
            key_id(&PublicKey::Ecc(EccPublic {
                symmetric: None,
                scheme,
                curve: EccCurve::NistP256,
                kdf: None,
                x: x.to_vec(),
                y: y.to_vec(),
            }))
            .unwrap()
        };
        let (x, y) = ([0x11; 32], [0x22; 32]);
        let mut short_x = x.to_vec();
        short_x[0] = 0;
        let base = ecc(None, &x, &y);
        // Another scheme: the same key.
        assert_eq!(ecc(Some(Scheme::Ecdsa(HashAlg::Sha256)), &x, &y), base);
        // Leading zeros, stripped or not: the same key.
        assert_eq!(
            ecc(None, &short_x, &y),
            ecc(None, short_x.get(1..).unwrap(), &y)
        );
        // Another point: another key.
        assert_ne!(ecc(None, &y, &x), base);
        // Longer than the curve: no id.
        assert!(
            key_id(&PublicKey::Ecc(EccPublic {
                symmetric: None,
                scheme: None,
                curve: EccCurve::NistP256,
                kdf: None,
                x: vec![1; 33],
                y: y.to_vec(),
            }))
            .is_none()
        );
        let rsa = |exponent, modulus: &[u8], scheme| {
            key_id(&PublicKey::Rsa(RsaPublic {
                symmetric: None,
                scheme,
                key_bits: 2048,
                exponent,
                modulus: modulus.to_vec(),
            }))
            .unwrap()
        };
        let n = [0xC3; 256];
        let mut padded = vec![0];
        padded.extend_from_slice(&n);
        // Exponent 0 is 65537; a zero byte before the modulus; a scheme.
        assert_eq!(
            rsa(0, &n, None),
            rsa(65537, &padded, Some(Scheme::RsaSsa(HashAlg::Sha256)))
        );
        assert_ne!(rsa(3, &n, None), rsa(65537, &n, None));
        // An RSA key and an ECC key never share an id.
        assert_ne!(rsa(0, &[0x11; 64], None), base);
    }

    #[test]
    fn left_pad_table() {
        type Case<'a> = (&'a [u8], usize, Option<&'a [u8]>);
        let cases: [Case<'_>; 5] = [
            (&[1, 2], 4, Some(&[0, 0, 1, 2])),
            (&[0, 0, 0, 1, 2], 4, Some(&[0, 0, 1, 2])),
            (&[1, 2, 3, 4], 4, Some(&[1, 2, 3, 4])),
            (&[1, 2, 3, 4, 5], 4, None),
            (&[], 2, Some(&[0, 0])),
        ];
        for (input, size, want) in cases {
            assert_eq!(left_pad(input, size).as_deref(), want, "{input:?}");
        }
    }
}
