//! AK trust through the EK: the EK certificate's chain to a CA the
//! operator names, the AK's attributes, TPM2_MakeCredential in pure Rust
//! (so only the TPM holding that EK, with that AK loaded, can answer), the
//! AK certificate issued once it did, and that certificate's verification.
//!
//! MakeCredential follows TPM 2.0 Part 1, section 24 (Credential
//! Protection) and Annex B/C (secret sharing): a seed shared with the EK
//! (RSA-OAEP with label "IDENTITY", or ECDH with an ephemeral key and KDFe),
//! from it with KDFa a symmetric key (label "STORAGE", context the AK's
//! name) and an HMAC key (label "INTEGRITY"); the credential, as a
//! TPM2B_DIGEST, encrypted with AES-CFB and a zero IV; an outer HMAC over
//! the ciphertext and the AK's name.
//!
//! EKs supported: RSA 2048 and ECC P-256 (the EK Credential Profile's
//! low-range templates L-1 and L-2: nameAlg SHA-256, AES-128-CFB), and
//! P-384 with SHA-384 and AES-256-CFB where a TPM has one.

use std::borrow::Cow;

use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use provenix_firmware::tpm::HashAlg;
use provenix_firmware::tpm::structures::{
    EccCurve, ObjectAttributes, Public, PublicKey, SymAlg, SymMode,
};
use ring::rand::SecureRandom;
use ring::{agreement, digest, hmac, signature};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey as X509Key;

use super::quote::{AttestationKey, name_of};
use crate::error::Error;

/// tcg-kp-AIKCertificate (TCG EK Credential Profile 2.0, 3.2.16 and the
/// TCG OID registry): the extended key usage of an AK certificate.
pub const OID_TCG_KP_AIK_CERTIFICATE: &[u64] = &[2, 23, 133, 8, 3];

/// The prefix of the AK certificate's URI SAN; the rest is the hex
/// [`VerifiedEk::key_id`] of the EK, naming the TPM the AK lives in by its
/// key (not by its certificate's bytes, which can be re-encoded).
pub const EK_URI_PREFIX: &str = "urn:provenix:tpm:ek-key:";

/// Longest chain below a root (EK certificates: leaf, one or two vendor
/// intermediates).
const MAX_CHAIN: usize = 5;
/// Most signature checks one chain search may try (webpki's budget idea:
/// many same-named intermediates cannot make the search expensive).
const MAX_SIGNATURE_CHECKS: usize = 32;
/// Largest certificate accepted (vendor EK certificates are 1-2 KiB).
const MAX_CERT: usize = 16 * 1024;

/// An EK certificate that chains to a CA the operator trusts, and the EK
/// public area it certifies. Only [`verify_ek`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedEk {
    public: Public,
    serial: Vec<u8>,
    issuer: Vec<u8>,
    key_id: [u8; 32],
}

impl VerifiedEk {
    /// The EK's TPMT_PUBLIC.
    pub fn public(&self) -> &Public {
        &self.public
    }
    /// The EK certificate's serial number (big-endian).
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }
    /// The EK certificate's issuer, DER.
    pub fn issuer(&self) -> &[u8] {
        &self.issuer
    }
    /// The EK by its public key alone ([`super::quote::key_id`]): the
    /// TPM's name in AK certificates. Not a hash of the certificate, whose
    /// bytes outside the signed part can vary for one EK.
    pub fn key_id(&self) -> [u8; 32] {
        self.key_id
    }
}

/// Verify `ek_certificate` (DER) to one of `roots` through `intermediates`
/// at `at` (unix seconds), and that `ek_public` (a TPMT_PUBLIC) is the
/// restricted decryption key it certifies, of a kind MakeCredential
/// supports.
pub fn verify_ek(
    ek_certificate: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    at: i64,
    ek_public: &[u8],
) -> Result<VerifiedEk, Error> {
    let ek = |reason: String| Error::Ek(reason);
    let leaf = verify_chain("EK", ek_certificate, intermediates, roots, at)?;
    let public = Public::from_bytes(ek_public)?;
    let attrs = public.object_attributes();
    let wanted = ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::DECRYPT;
    if !attrs.has(wanted) || attrs.sign() {
        return Err(ek(format!(
            "objectAttributes {attrs} (an EK is fixedtpm|fixedparent|sensitivedataorigin|restricted|decrypt, not sign)"
        )));
    }
    credential_params(&public)?;
    let same = match (public.key(), &leaf.key) {
        (PublicKey::Rsa(k), CertKey::Rsa { n, e }) => {
            strip(&k.modulus) == strip(n) && k.public_exponent().to_be_bytes()[..] == *pad(e, 4)
        }
        (PublicKey::Ecc(k), CertKey::Ecc { point, .. }) => {
            ecc_point(k.curve, &k.x, &k.y).is_some_and(|p| p == *point)
        }
        _ => false,
    };
    if !same {
        return Err(ek(
            "the EK public is not the key the EK certificate certifies".into(),
        ));
    }
    let key_id = super::quote::key_id(public.key())
        .ok_or_else(|| ek("an ECC coordinate is longer than its curve".into()))?;
    Ok(VerifiedEk {
        public,
        serial: leaf.serial,
        issuer: leaf.issuer,
        key_id,
    })
}

/// Check that `ak_public` (a TPMT_PUBLIC) is an attestation key: a
/// restricted signing key that cannot decrypt, made inside the TPM
/// (sensitiveDataOrigin) and bound to it (fixedTPM, fixedParent), of a kind
/// quotes can be verified with. Returns the key.
pub fn check_ak_public(ak_public: &Public) -> Result<AttestationKey, Error> {
    let attrs = ak_public.object_attributes();
    let wanted = ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::SIGN;
    if !attrs.has(wanted) || attrs.decrypt() {
        return Err(Error::AkNotRestrictedSigning {
            attributes: attrs.to_string(),
        });
    }
    AttestationKey::from_public(ak_public)
}

/// A credential wrapped for one EK and one AK name: the contents (no size
/// prefix) of the TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET that
/// TPM2_ActivateCredential takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// TPM2B_ID_OBJECT contents: outer HMAC (as a TPM2B) || encIdentity.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents: the OAEP ciphertext, or the
    /// ephemeral ECC point (TPMS_ECC_POINT).
    pub encrypted_secret: Vec<u8>,
}

/// TPM2_MakeCredential: wrap `credential` (at most the EK nameAlg's digest
/// size) so that only the TPM holding `ek`'s private key recovers it, and
/// only for the object named `ak_name` loaded beside it.
pub fn make_credential(
    ek: &Public,
    ak_name: &[u8],
    credential: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Credential, Error> {
    let fail = |reason: &str| Error::Activation(reason.to_owned());
    let (hash, aes_bits) = credential_params(ek)?;
    if credential.is_empty() || credential.len() > hash.size() {
        return Err(Error::Activation(format!(
            "a credential is 1 to {} bytes, not {}",
            hash.size(),
            credential.len()
        )));
    }
    let (seed, encrypted_secret) = match ek.key() {
        PublicKey::Rsa(k) => {
            let mut seed = vec![0u8; hash.size()];
            rng.fill(&mut seed).map_err(|_| fail("no randomness"))?;
            let secret = rsa_oaep_identity(hash, &k.modulus, k.public_exponent(), &seed, rng)?;
            (seed, secret)
        }
        PublicKey::Ecc(k) => {
            let alg = match k.curve {
                EccCurve::NistP256 => &agreement::ECDH_P256,
                EccCurve::NistP384 => &agreement::ECDH_P384,
                other => return Err(Error::Ek(format!("curve {other:?}"))),
            };
            let size = k.curve.size();
            let ek_point = ecc_point(k.curve, &k.x, &k.y)
                .ok_or_else(|| Error::Ek("ECC point longer than its curve".into()))?;
            let ephemeral = agreement::EphemeralPrivateKey::generate(alg, rng)
                .map_err(|_| fail("cannot make an ephemeral ECDH key"))?;
            let q = ephemeral
                .compute_public_key()
                .map_err(|_| fail("cannot compute the ephemeral public key"))?;
            // Uncompressed: 0x04 || x || y.
            let (qx, qy) = q
                .as_ref()
                .get(1..)
                .map(|p| p.split_at(size))
                .unwrap_or_default();
            let (qx, qy) = (qx.to_vec(), qy.to_vec());
            let ek_x = ek_point.get(1..=size).unwrap_or_default().to_vec();
            // ring hands over the shared secret Z as the x-coordinate, which
            // is what KDFe takes (Part 1, C.6.1).
            let z = agreement::agree_ephemeral(
                ephemeral,
                &agreement::UnparsedPublicKey::new(alg, &ek_point),
                |z| z.to_vec(),
            )
            .map_err(|_| Error::Ek("the EK's ECC point is not on its curve".into()))?;
            let seed = kdfe(hash, &z, b"IDENTITY", &qx, &ek_x, hash.size());
            let mut point = Vec::new();
            tpm2b(&mut point, &qx);
            tpm2b(&mut point, &qy);
            (seed, point)
        }
    };
    let sym_key = kdfa(hash, &seed, b"STORAGE", ak_name, &[], aes_bits / 8);
    let mut plain = Vec::new();
    tpm2b(&mut plain, credential);
    let enc_identity = aes_cfb_encrypt(&sym_key, &plain)?;
    let hmac_key = kdfa(hash, &seed, b"INTEGRITY", &[], &[], hash.size());
    let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac_alg(hash), &hmac_key));
    mac.update(&enc_identity);
    mac.update(ak_name);
    let mut blob = Vec::new();
    tpm2b(&mut blob, mac.sign().as_ref());
    blob.extend_from_slice(&enc_identity);
    Ok(Credential {
        credential_blob: blob,
        encrypted_secret,
    })
}

/// What an AK certificate says, once verified. Only
/// [`verify_ak_certificate`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedAkCertificate {
    key: AttestationKey,
    ek_key_id: Option<[u8; 32]>,
}

impl VerifiedAkCertificate {
    /// The AK, to verify quotes with.
    pub fn attestation_key(&self) -> &AttestationKey {
        &self.key
    }
    /// The EK of the TPM the AK was enrolled from, by its public key
    /// ([`VerifiedEk::key_id`]), when the certificate names one
    /// (Provenix's do).
    pub fn ek_key_id(&self) -> Option<[u8; 32]> {
        self.ek_key_id
    }
}

/// Issue an AK certificate for `ak_public` (already checked with
/// [`check_ak_public`] and proven by credential activation: an
/// [`ActivatedAk`] from [`finish_enrollment`] gives both), naming the TPM
/// by `ek`'s certificate, signed by the operator CA (`ca_certificate` DER,
/// `ca_key_pem` its PKCS#8 key), valid from `not_before` to `not_after`
/// (unix seconds). Returns DER.
pub fn issue_ak_certificate(
    ak_public: &Public,
    ek: &VerifiedEk,
    ca_certificate: &[u8],
    ca_key_pem: &str,
    not_before: i64,
    not_after: i64,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Error> {
    let bad = |reason: String| Error::AkChain {
        which: "AK",
        reason,
    };
    let spki = AkSpki::from_public(ak_public)?;
    let key =
        rcgen::KeyPair::from_pem(ca_key_pem).map_err(|e| bad(format!("operator CA key: {e}")))?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_certificate.to_vec().into(), key)
        .map_err(|e| bad(format!("operator CA certificate: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    let time = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| bad(format!("time {t}: {e}")))
    };
    params.not_before = time(not_before)?;
    params.not_after = time(not_after)?;
    let mut serial = [0u8; 16];
    rng.fill(&mut serial)
        .map_err(|_| bad("no randomness for the serial number".into()))?;
    serial[0] &= 0x7F; // a positive INTEGER (RFC 5280 4.1.2.2)
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let name = name_of(ak_public);
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        format!(
            "Provenix AK {}",
            hex::encode(name.get(2..10).unwrap_or_default())
        ),
    );
    // The EK certificate's serial in the subject: an operator can find the
    // TPM's certificate with it (X.520 serialNumber).
    dn.push(
        rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]),
        rcgen::DnValue::PrintableString(
            hex::encode(ek.serial())
                .try_into()
                .map_err(|e| bad(format!("EK serial: {e}")))?,
        ),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("{EK_URI_PREFIX}{}", hex::encode(ek.key_id()))
            .try_into()
            .map_err(|e| bad(format!("SAN: {e}")))?,
    )];
    // An end entity: it can never act as a CA for another AK.
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::Other(
        OID_TCG_KP_AIK_CERTIFICATE.to_vec(),
    )];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&spki, &issuer)
        .map_err(|e| bad(format!("cannot sign: {e}")))?;
    Ok(cert.der().to_vec())
}

/// Verify an AK certificate (DER) to one of `roots` (the operator CA)
/// through `intermediates` at `at`, check that it is for attestation keys
/// (tcg-kp-AIKCertificate) and that its key is `ak_public`'s, and that
/// `ak_public` is a restricted signing key.
pub fn verify_ak_certificate(
    ak_certificate: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    at: i64,
    ak_public: &Public,
) -> Result<VerifiedAkCertificate, Error> {
    let bad = |reason: String| Error::AkChain {
        which: "AK",
        reason,
    };
    let leaf = verify_chain("AK", ak_certificate, intermediates, roots, at)?;
    if !leaf.aik_usage {
        return Err(bad(
            "no tcg-kp-AIKCertificate (2.23.133.8.3) extended key usage".into(),
        ));
    }
    let key = check_ak_public(ak_public)?;
    let spki = AkSpki::from_public(ak_public)?;
    let same = match &leaf.key {
        CertKey::Rsa { n, e } => key
            .rsa_components()
            .is_some_and(|(kn, ke)| strip(kn) == strip(n) && strip(ke) == strip(e)),
        CertKey::Ecc { point, .. } => spki.key == *point,
    };
    if !same {
        return Err(bad(
            "the certificate's key is not the attestation key given".into(),
        ));
    }
    Ok(VerifiedAkCertificate {
        key,
        ek_key_id: leaf.ek_key_id,
    })
}

// ---------------------------------------------------------------------
// Enrollment: the files `provenix-worker ak` and `provenix ak enroll`
// exchange (docs/tpm.md)

/// The version of the enrollment files this code reads and writes.
pub const ENROLLMENT_VERSION: u32 = 1;
/// The `format` of [`AkRequest`] files.
pub const REQUEST_FORMAT: &str = "provenix-ak-request";
/// The `format` of [`AkChallenge`] files.
pub const CHALLENGE_FORMAT: &str = "provenix-ak-challenge";
/// The `format` of [`AkResponse`] files.
pub const RESPONSE_FORMAT: &str = "provenix-ak-response";
/// The `format` of [`EnrollmentState`] files.
pub const STATE_FORMAT: &str = "provenix-ak-enrollment-state";
/// How long a challenge can be answered (seconds): the worker answers in
/// a second; a day leaves room for files carried by hand.
pub const CHALLENGE_LIFETIME: i64 = 86_400;
/// Largest enrollment file read: a few certificates and TPM structures,
/// a few KiB; the limit keeps a hostile file from costing memory.
pub const MAX_ENROLLMENT_FILE: usize = 256 * 1024;
/// Most endorsement keys a request may offer (a TPM has at most a handful
/// of EK certificate indices: EK Credential Profile 2.0, 2.2.1.4).
const MAX_REQUEST_EKS: usize = 8;
/// Bytes of the activation secret: SHA-256's size, the most a credential
/// for an EK with nameAlg SHA-256 holds (a TPM2B_DIGEST, Part 1, 24.4).
const SECRET_SIZE: usize = 32;
/// Bytes of a challenge's identifier.
const CHALLENGE_ID_SIZE: usize = 16;
/// Domain separation of the state's commitment to the secret.
const COMMITMENT_DOMAIN: &[u8] = b"provenix ak enrollment v1\0";

/// An endorsement key the TPM offers: its certificate from NV and its
/// public area as TPM2_CreatePrimary made it from the default template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEk {
    /// The EK certificate, DER (base64).
    #[serde(with = "b64")]
    pub certificate: Vec<u8>,
    /// The EK's TPMT_PUBLIC (base64).
    #[serde(with = "b64")]
    pub public: Vec<u8>,
}

/// `provenix-worker ak request`: the attestation key to certify and the
/// endorsement keys that can vouch for it. Nothing in it is trusted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkRequest {
    /// Always [`REQUEST_FORMAT`].
    pub format: String,
    /// Always [`ENROLLMENT_VERSION`].
    pub version: u32,
    /// The AK's TPMT_PUBLIC (base64).
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
    /// The EKs whose certificates the TPM holds, preferred first.
    pub endorsement_keys: Vec<RequestEk>,
}

/// `provenix ak enroll challenge`: a credential only the TPM that holds
/// the verified EK can unwrap, and only for the AK named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkChallenge {
    /// Always [`CHALLENGE_FORMAT`].
    pub format: String,
    /// Always [`ENROLLMENT_VERSION`].
    pub version: u32,
    /// The challenge's identifier (hex), echoed by the response.
    #[serde(with = "hexb")]
    pub id: Vec<u8>,
    /// Unix seconds after which the operator no longer accepts an answer.
    pub expires: i64,
    /// The EK to activate with: its TPMT_PUBLIC (base64).
    #[serde(with = "b64")]
    pub ek_public: Vec<u8>,
    /// The AK's name (hex): nameAlg || H(TPMT_PUBLIC).
    #[serde(with = "hexb")]
    pub ak_name: Vec<u8>,
    /// TPM2B_ID_OBJECT contents (base64).
    #[serde(with = "b64")]
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents (base64).
    #[serde(with = "b64")]
    pub encrypted_secret: Vec<u8>,
}

/// `provenix-worker ak activate`: the secret TPM2_ActivateCredential
/// recovered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkResponse {
    /// Always [`RESPONSE_FORMAT`].
    pub format: String,
    /// Always [`ENROLLMENT_VERSION`].
    pub version: u32,
    /// The identifier of the challenge answered (hex).
    #[serde(with = "hexb")]
    pub id: Vec<u8>,
    /// The recovered secret (base64).
    #[serde(with = "b64")]
    pub secret: Vec<u8>,
}

/// What the operator keeps between challenge and finish. It holds no
/// secret: only a commitment to it (HMAC keyed by the secret), so reading
/// it does not help anyone answer. Its integrity matters (it says which AK
/// gets certified), so it stays with the operator, like the CA key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentState {
    /// Always [`STATE_FORMAT`].
    pub format: String,
    /// Always [`ENROLLMENT_VERSION`].
    pub version: u32,
    /// The challenge's identifier (hex).
    #[serde(with = "hexb")]
    pub id: Vec<u8>,
    /// Unix seconds when the challenge was made.
    pub created: i64,
    /// Unix seconds after which no response is accepted.
    pub expires: i64,
    /// The AK's TPMT_PUBLIC (base64).
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
    /// The EK certificate that verified, DER (base64).
    #[serde(with = "b64")]
    pub ek_certificate: Vec<u8>,
    /// The EK's TPMT_PUBLIC (base64).
    #[serde(with = "b64")]
    pub ek_public: Vec<u8>,
    /// The EK CAs the operator trusted, DER (base64): the EK is verified
    /// again with them when the enrollment finishes.
    #[serde(with = "b64_list")]
    pub ek_roots: Vec<Vec<u8>>,
    /// Intermediates offered for the EK chain, DER (base64).
    #[serde(with = "b64_list")]
    pub ek_intermediates: Vec<Vec<u8>>,
    /// HMAC-SHA256 keyed by the secret over the challenge's identifier,
    /// the AK's name and the EK certificate's SHA-256 (hex; docs/tpm.md).
    #[serde(with = "hexb")]
    pub commitment: Vec<u8>,
}

/// An enrollment file: its `format` and how it is checked once parsed.
trait EnrollmentFile: serde::de::DeserializeOwned + Serialize {
    const FORMAT: &'static str;
}
impl EnrollmentFile for AkRequest {
    const FORMAT: &'static str = REQUEST_FORMAT;
}
impl EnrollmentFile for AkChallenge {
    const FORMAT: &'static str = CHALLENGE_FORMAT;
}
impl EnrollmentFile for AkResponse {
    const FORMAT: &'static str = RESPONSE_FORMAT;
}
impl EnrollmentFile for EnrollmentState {
    const FORMAT: &'static str = STATE_FORMAT;
}

/// Parse an enrollment file: the format and version first (so a file
/// given in the wrong place says what it is), then every field.
fn from_json<T: EnrollmentFile>(bytes: &[u8]) -> Result<T, Error> {
    #[derive(Deserialize)]
    struct Header {
        format: Option<String>,
        version: Option<u32>,
    }
    let bad = |reason: String| Error::Activation(format!("{} file: {reason}", T::FORMAT));
    if bytes.len() > MAX_ENROLLMENT_FILE {
        return Err(bad(format!(
            "{} bytes exceeds {MAX_ENROLLMENT_FILE}",
            bytes.len()
        )));
    }
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    match (header.format.as_deref(), header.version) {
        (Some(f), Some(ENROLLMENT_VERSION)) if f == T::FORMAT => {}
        (Some(f), Some(v)) if f == T::FORMAT => {
            return Err(bad(format!(
                "version {v}; this code reads version {ENROLLMENT_VERSION}"
            )));
        }
        (Some(f), _) => return Err(bad(format!("this is a {f:?} file"))),
        (None, _) => return Err(bad("no \"format\" field".into())),
    }
    serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))
}

fn to_json<T: EnrollmentFile>(value: &T) -> String {
    // Plain structs of strings, numbers and lists: serialising cannot fail.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

macro_rules! enrollment_file {
    ($t:ty) => {
        impl $t {
            /// Parse this file (JSON), checking its format and version.
            pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
                from_json(bytes)
            }
            /// This file as JSON.
            pub fn to_json(&self) -> String {
                to_json(self)
            }
        }
    };
}
enrollment_file!(AkRequest);
enrollment_file!(AkChallenge);
enrollment_file!(AkResponse);
enrollment_file!(EnrollmentState);

impl AkRequest {
    /// A request for the AK `ak_public` (TPMT_PUBLIC), vouched for by
    /// `endorsement_keys`.
    pub fn new(ak_public: Vec<u8>, endorsement_keys: Vec<RequestEk>) -> AkRequest {
        AkRequest {
            format: REQUEST_FORMAT.into(),
            version: ENROLLMENT_VERSION,
            ak_public,
            endorsement_keys,
        }
    }
}

impl AkResponse {
    /// The answer to challenge `id`: the secret the TPM recovered.
    pub fn new(id: Vec<u8>, secret: Vec<u8>) -> AkResponse {
        AkResponse {
            format: RESPONSE_FORMAT.into(),
            version: ENROLLMENT_VERSION,
            id,
            secret,
        }
    }
}

/// An attestation key proven, by credential activation, to live in the
/// TPM whose EK certificate verified. Only [`finish_enrollment`] makes
/// one; it is what [`issue_ak_certificate`] should be given.
#[derive(Clone, Debug)]
pub struct ActivatedAk {
    ak_public: Public,
    ek: VerifiedEk,
}

impl ActivatedAk {
    /// The AK's TPMT_PUBLIC.
    pub fn ak_public(&self) -> &Public {
        &self.ak_public
    }
    /// The EK that vouched for it, verified again at finish.
    pub fn ek(&self) -> &VerifiedEk {
        &self.ek
    }
}

/// The operator's first step: check the AK's attributes, verify an EK
/// certificate of the request to `ek_roots` (through `ek_intermediates`)
/// at `at`, and wrap a fresh secret for that EK and the AK's name. Returns
/// the challenge for the worker and the state to keep.
pub fn make_challenge(
    request: &AkRequest,
    ek_roots: &[Vec<u8>],
    ek_intermediates: &[Vec<u8>],
    at: i64,
    rng: &dyn SecureRandom,
) -> Result<(AkChallenge, EnrollmentState), Error> {
    let ak_public = Public::from_bytes(&request.ak_public)?;
    check_ak_public(&ak_public)?;
    if request.endorsement_keys.len() > MAX_REQUEST_EKS {
        return Err(Error::Ek(format!(
            "the request offers {} endorsement keys, at most {MAX_REQUEST_EKS}",
            request.endorsement_keys.len()
        )));
    }
    // The first EK whose certificate verifies; if none does, every reason.
    let mut failures = Vec::new();
    let mut chosen = None;
    for (i, ek) in request.endorsement_keys.iter().enumerate() {
        match verify_ek(&ek.certificate, ek_intermediates, ek_roots, at, &ek.public) {
            Ok(verified) => {
                chosen = Some((ek, verified));
                break;
            }
            Err(e) => failures.push((i, e)),
        }
    }
    let Some((offered, ek)) = chosen else {
        return Err(match failures.len() {
            0 => Error::Ek("the request offers no endorsement key".into()),
            1 => failures.swap_remove(0).1,
            _ => Error::Ek(format!(
                "no endorsement key verified: {}",
                failures
                    .iter()
                    .map(|(i, e)| format!("EK {}: {e}", i.saturating_add(1)))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        });
    };
    let mut secret = [0u8; SECRET_SIZE];
    let mut id = [0u8; CHALLENGE_ID_SIZE];
    rng.fill(&mut secret)
        .and_then(|()| rng.fill(&mut id))
        .map_err(|_| Error::Activation("no randomness for the secret".into()))?;
    let ak_name = name_of(&ak_public);
    let credential = make_credential(ek.public(), &ak_name, &secret, rng)?;
    let expires = at.saturating_add(CHALLENGE_LIFETIME);
    let challenge = AkChallenge {
        format: CHALLENGE_FORMAT.into(),
        version: ENROLLMENT_VERSION,
        id: id.to_vec(),
        expires,
        ek_public: offered.public.clone(),
        ak_name: ak_name.clone(),
        credential_blob: credential.credential_blob,
        encrypted_secret: credential.encrypted_secret,
    };
    let state = EnrollmentState {
        format: STATE_FORMAT.into(),
        version: ENROLLMENT_VERSION,
        id: id.to_vec(),
        created: at,
        expires,
        ak_public: request.ak_public.clone(),
        ek_certificate: offered.certificate.clone(),
        ek_public: offered.public.clone(),
        ek_roots: ek_roots.to_vec(),
        ek_intermediates: ek_intermediates.to_vec(),
        commitment: commitment(&secret, &id, &ak_name, &sha256(&offered.certificate)),
    };
    Ok((challenge, state))
}

/// The operator's last step: the response must answer this state's
/// challenge before it expires, with the secret committed to (compared in
/// constant time); the AK's attributes and the EK's certificate are then
/// checked again at `at`. Returns the AK, ready to be certified.
pub fn finish_enrollment(
    state: &EnrollmentState,
    response: &AkResponse,
    at: i64,
) -> Result<ActivatedAk, Error> {
    let refuse = |reason: String| Error::Activation(reason);
    if response.id != state.id {
        return Err(refuse(format!(
            "the response answers challenge {}, not this state's {} (a response to another enrollment)",
            hex::encode(&response.id),
            hex::encode(&state.id)
        )));
    }
    if at > state.expires {
        return Err(refuse(format!(
            "the challenge expired at {} (unix), it is now {at}: make a new one",
            state.expires
        )));
    }
    let ak_public = Public::from_bytes(&state.ak_public)?;
    let ak_name = name_of(&ak_public);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &response.secret);
    hmac::verify(
        &key,
        &commitment_message(&state.id, &ak_name, &sha256(&state.ek_certificate)),
        &state.commitment,
    )
    .map_err(|_| {
        refuse(
            "the secret does not match the challenge: the TPM that answered is not the one \
             whose EK was verified or does not hold this AK, or the response or state was modified"
                .into(),
        )
    })?;
    check_ak_public(&ak_public)?;
    let ek = verify_ek(
        &state.ek_certificate,
        &state.ek_intermediates,
        &state.ek_roots,
        at,
        &state.ek_public,
    )?;
    Ok(ActivatedAk { ak_public, ek })
}

/// HMAC-SHA256(secret, domain || id || AK name || SHA-256(EK certificate)):
/// what the state keeps instead of the secret. The secret is 32 random
/// bytes, so the commitment reveals nothing of it, and it ties the secret
/// to the AK and EK the challenge was made for.
fn commitment(
    secret: &[u8],
    id: &[u8],
    ak_name: &[u8],
    ek_certificate_sha256: &[u8; 32],
) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::sign(
        &key,
        &commitment_message(id, ak_name, ek_certificate_sha256),
    )
    .as_ref()
    .to_vec()
}

fn commitment_message(id: &[u8], ak_name: &[u8], ek_certificate_sha256: &[u8; 32]) -> Vec<u8> {
    let mut m = COMMITMENT_DOMAIN.to_vec();
    tpm2b(&mut m, id);
    tpm2b(&mut m, ak_name);
    m.extend_from_slice(ek_certificate_sha256);
    m
}

/// Base64 (RFC 4648, padded) for byte fields.
mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

/// A list of base64 byte strings.
mod b64_list {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| STANDARD.encode(b)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| STANDARD.decode(t.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

/// Hex for identifiers people compare by eye.
mod hexb {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(|e| serde::de::Error::custom(format!("not hex: {e}")))
    }
}

// ---------------------------------------------------------------------
// Certificates and chains

/// A certificate's public key, as ring verifies with it.
#[derive(Clone, Debug)]
enum CertKey {
    /// Modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed point on P-256 or P-384.
    Ecc { curve: EccCurve, point: Vec<u8> },
}

/// The parts of a certificate a chain check needs.
#[derive(Clone, Debug)]
struct Cert {
    tbs: Vec<u8>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    serial: Vec<u8>,
    sig_alg: String,
    signature: Vec<u8>,
    key: CertKey,
    /// SubjectPublicKeyInfo DER: what pins a root.
    spki: Vec<u8>,
    not_before: i64,
    not_after: i64,
    is_ca: bool,
    aik_usage: bool,
    ek_key_id: Option<[u8; 32]>,
}

impl Cert {
    fn parse(which: &'static str, role: &str, der: &[u8]) -> Result<Cert, Error> {
        let bad = |reason: String| Error::AkChain {
            which,
            reason: format!("{role}: {reason}"),
        };
        if der.len() > MAX_CERT {
            return Err(bad(format!("{} bytes exceeds {MAX_CERT}", der.len())));
        }
        crate::der::check_certificate_envelope(der)
            .map_err(|e| bad(format!("not canonical DER: {e}")))?;
        let (rest, x509) = X509Certificate::from_der(der)
            .map_err(|e| bad(format!("not a DER X.509 certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes", rest.len())));
        }
        let tbs = &x509.tbs_certificate;
        if tbs.signature != x509.signature_algorithm {
            return Err(bad("inner and outer signature algorithms differ".into()));
        }
        let spki = x509.public_key();
        let key = match spki.parsed() {
            Ok(X509Key::RSA(k)) => CertKey::Rsa {
                n: strip(k.modulus).to_vec(),
                e: strip(k.exponent).to_vec(),
            },
            Ok(X509Key::EC(point)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                let curve = match curve.as_deref() {
                    Some("1.2.840.10045.3.1.7") => EccCurve::NistP256,
                    Some("1.3.132.0.34") => EccCurve::NistP384,
                    other => return Err(bad(format!("EC curve {other:?} (P-256, P-384)"))),
                };
                CertKey::Ecc {
                    curve,
                    point: point.data().to_vec(),
                }
            }
            Ok(_) => return Err(bad("public key neither RSA nor EC".into())),
            Err(e) => return Err(bad(format!("public key: {e}"))),
        };
        let is_ca = x509
            .basic_constraints()
            .map_err(|e| bad(format!("basicConstraints: {e}")))?
            .is_some_and(|b| b.value.ca);
        let aik_usage = x509
            .extended_key_usage()
            .map_err(|e| bad(format!("extendedKeyUsage: {e}")))?
            .is_some_and(|eku| {
                eku.value
                    .other
                    .iter()
                    .any(|o| o.to_id_string() == "2.23.133.8.3")
            });
        let ek_key_id = x509
            .subject_alternative_name()
            .map_err(|e| bad(format!("subjectAltName: {e}")))?
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => u
                        .strip_prefix(EK_URI_PREFIX)
                        .and_then(|h| hex::decode(h).ok())
                        .and_then(|h| <[u8; 32]>::try_from(h).ok()),
                    _ => None,
                })
            });
        Ok(Cert {
            tbs: tbs.as_ref().to_vec(),
            subject: tbs.subject.as_raw().to_vec(),
            issuer: tbs.issuer.as_raw().to_vec(),
            serial: tbs.raw_serial().to_vec(),
            sig_alg: x509.signature_algorithm.algorithm.to_id_string(),
            signature: x509.signature_value.data.to_vec(),
            key,
            spki: spki.raw.to_vec(),
            not_before: tbs.validity.not_before.timestamp(),
            not_after: tbs.validity.not_after.timestamp(),
            is_ca,
            aik_usage,
            ek_key_id,
        })
    }

    /// Whether `issuer` signed this certificate.
    fn signed_by(&self, issuer: &Cert) -> bool {
        verify_signature(&issuer.key, &self.sig_alg, &self.tbs, &self.signature)
    }
}

/// Verify `leaf` to a root: each step an issuer whose subject is the
/// certificate's issuer, a CA, valid at `at`, whose key verifies its
/// signature; the chain ends at a certificate with the same subject and
/// key (SPKI) as one of `roots`. Returns the leaf.
fn verify_chain(
    which: &'static str,
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    at: i64,
) -> Result<Cert, Error> {
    let bad = |reason: String| Error::AkChain { which, reason };
    if roots.is_empty() {
        return Err(bad("no CA certificate to verify against".into()));
    }
    let parse_all = |role: &str, ders: &[Vec<u8>]| -> Result<Vec<Cert>, Error> {
        ders.iter().map(|d| Cert::parse(which, role, d)).collect()
    };
    let roots = parse_all("CA", roots)?;
    let intermediates = parse_all("intermediate", intermediates)?;
    let leaf_cert = Cert::parse(which, "leaf", leaf)?;
    let valid = |c: &Cert, role: &str| -> Result<(), Error> {
        if at < c.not_before || at > c.not_after {
            return Err(bad(format!(
                "{role} is not valid at {at} (valid {} to {})",
                c.not_before, c.not_after
            )));
        }
        Ok(())
    };
    valid(&leaf_cert, "leaf")?;
    let mut search = ChainSearch {
        roots: &roots,
        intermediates: &intermediates,
        at,
        checks: 0,
        last: None,
    };
    match search.path_from(&leaf_cert, &mut Vec::new()) {
        Ok(true) => Ok(leaf_cert),
        Ok(false) => Err(bad(search.last.unwrap_or_else(|| {
            "no issuer among the CA and intermediates given signed the certificate".into()
        }))),
        Err(e) => Err(bad(e)),
    }
}

/// A depth-first search for a path from a certificate to a root, as
/// rustls-webpki builds chains: when a candidate issuer fails (bad
/// signature, not a CA, expired, or a dead end further up), the next
/// candidate is tried, so a same-named decoy offered first cannot hide the
/// real issuer. A budget bounds the signature checks.
struct ChainSearch<'a> {
    roots: &'a [Cert],
    intermediates: &'a [Cert],
    at: i64,
    checks: usize,
    /// Why the most recent candidate failed, for the error when none works.
    last: Option<String>,
}

impl ChainSearch<'_> {
    /// `Ok(true)` when `cert` chains to a root through intermediates not in
    /// `path`; `Err` when the budget is spent (fatal, as webpki's is).
    fn path_from(&mut self, cert: &Cert, path: &mut Vec<usize>) -> Result<bool, String> {
        for root in self.roots.iter().filter(|r| r.subject == cert.issuer) {
            if !self.check(cert, root)? {
                continue;
            }
            if self.valid(root, "the CA") {
                return Ok(true);
            }
        }
        if path.len() >= MAX_CHAIN {
            self.last = Some(format!("no root within {MAX_CHAIN} certificates"));
            return Ok(false);
        }
        for (i, candidate) in self.intermediates.iter().enumerate() {
            if candidate.subject != cert.issuer || path.contains(&i) {
                continue;
            }
            if !candidate.is_ca {
                self.last = Some("an intermediate named as issuer is not a CA".into());
                continue;
            }
            if !self.valid(candidate, "intermediate") {
                continue;
            }
            if !self.check(cert, candidate)? {
                continue;
            }
            // A root given as an intermediate too ends the chain here.
            if self
                .roots
                .iter()
                .any(|r| r.subject == candidate.subject && r.spki == candidate.spki)
            {
                return Ok(true);
            }
            path.push(i);
            if self.path_from(candidate, path)? {
                return Ok(true);
            }
            path.pop();
        }
        Ok(false)
    }

    /// Whether `cert` is valid at the search's time; if not, why is kept.
    fn valid(&mut self, cert: &Cert, role: &str) -> bool {
        let ok = self.at >= cert.not_before && self.at <= cert.not_after;
        if !ok {
            self.last = Some(format!(
                "{role} is not valid at {} (valid {} to {})",
                self.at, cert.not_before, cert.not_after
            ));
        }
        ok
    }

    /// Whether `issuer` signed `cert`, spending one unit of the budget.
    fn check(&mut self, cert: &Cert, issuer: &Cert) -> Result<bool, String> {
        self.checks = self.checks.saturating_add(1);
        if self.checks > MAX_SIGNATURE_CHECKS {
            return Err(format!(
                "more than {MAX_SIGNATURE_CHECKS} signature checks to find a chain"
            ));
        }
        let ok = cert.signed_by(issuer);
        if !ok {
            self.last = Some(
                "no issuer among the CA and intermediates given signed the certificate".into(),
            );
        }
        Ok(ok)
    }
}

/// Verify a certificate signature: RSA PKCS#1 v1.5 with SHA-256/384/512,
/// ECDSA with SHA-256/384 on P-256/P-384 (what TPM vendors' and swtpm's
/// CAs use).
fn verify_signature(key: &CertKey, sig_alg: &str, message: &[u8], sig: &[u8]) -> bool {
    match key {
        CertKey::Rsa { n, e } => {
            let params = match sig_alg {
                "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
                _ => return false,
            };
            signature::RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok()
        }
        CertKey::Ecc { curve, point } => {
            let alg: &dyn signature::VerificationAlgorithm = match (curve, sig_alg) {
                (EccCurve::NistP256, "1.2.840.10045.4.3.2") => &signature::ECDSA_P256_SHA256_ASN1,
                (EccCurve::NistP256, "1.2.840.10045.4.3.3") => &signature::ECDSA_P256_SHA384_ASN1,
                (EccCurve::NistP384, "1.2.840.10045.4.3.2") => &signature::ECDSA_P384_SHA256_ASN1,
                (EccCurve::NistP384, "1.2.840.10045.4.3.3") => &signature::ECDSA_P384_SHA384_ASN1,
                _ => return false,
            };
            signature::UnparsedPublicKey::new(alg, point)
                .verify(message, sig)
                .is_ok()
        }
    }
}

/// The AK's key as rcgen writes it into the certificate's SPKI.
struct AkSpki {
    alg: &'static rcgen::SignatureAlgorithm,
    /// RSAPublicKey DER, or the uncompressed EC point.
    key: Vec<u8>,
}

impl AkSpki {
    fn from_public(public: &Public) -> Result<AkSpki, Error> {
        match public.key() {
            PublicKey::Rsa(k) => {
                let mut body = der_uint(&k.modulus);
                body.extend(der_uint(&k.public_exponent().to_be_bytes()));
                Ok(AkSpki {
                    alg: &rcgen::PKCS_RSA_SHA256,
                    key: der(0x30, &body),
                })
            }
            PublicKey::Ecc(k) => {
                let alg = match k.curve {
                    EccCurve::NistP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
                    EccCurve::NistP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
                    other => return Err(Error::AkUnsupported(format!("curve {other:?}"))),
                };
                let key = ecc_point(k.curve, &k.x, &k.y).ok_or_else(|| {
                    Error::AkUnsupported("ECC point longer than its curve".into())
                })?;
                Ok(AkSpki { alg, key })
            }
        }
    }
}

impl rcgen::PublicKeyData for AkSpki {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

// ---------------------------------------------------------------------
// MakeCredential's primitives

/// The EK's nameAlg and AES key size, when MakeCredential supports it:
/// nameAlg SHA-256 or SHA-384, symmetric AES-128 or AES-256 in CFB mode.
fn credential_params(ek: &Public) -> Result<(HashAlg, usize), Error> {
    let hash = ek.name_alg();
    if !matches!(hash, HashAlg::Sha256 | HashAlg::Sha384) {
        return Err(Error::Ek(format!("nameAlg {hash} (SHA-256, SHA-384)")));
    }
    let symmetric = match ek.key() {
        PublicKey::Rsa(k) => {
            if k.key_bits != 2048 && k.key_bits != 3072 {
                return Err(Error::Ek(format!("RSA {} bits (2048, 3072)", k.key_bits)));
            }
            k.symmetric
        }
        PublicKey::Ecc(k) => {
            if !matches!(k.curve, EccCurve::NistP256 | EccCurve::NistP384) {
                return Err(Error::Ek(format!("curve {:?} (P-256, P-384)", k.curve)));
            }
            k.symmetric
        }
    };
    match symmetric {
        Some(s)
            if s.algorithm == SymAlg::Aes
                && s.mode == SymMode::Cfb
                && matches!(s.key_bits, 128 | 256) =>
        {
            Ok((hash, usize::from(s.key_bits)))
        }
        other => Err(Error::Ek(format!(
            "symmetric {other:?} (a storage EK has AES-128 or AES-256 in CFB mode)"
        ))),
    }
}

/// RSA-OAEP with the EK's nameAlg and the label "IDENTITY\0" (Part 1,
/// B.10.3 and 24.4).
fn rsa_oaep_identity(
    hash: HashAlg,
    modulus: &[u8],
    exponent: u32,
    seed: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, Error> {
    use rsa::traits::PublicKeyParts as _;
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from(exponent),
    )
    .map_err(|e| Error::Ek(format!("RSA key: {e}")))?;
    let size = key.size();
    let mut rng = RingRng { rng, failed: false };
    let padding = match hash {
        HashAlg::Sha384 => rsa::Oaep::new_with_label::<rsa::sha2::Sha384, _>("IDENTITY\0"),
        _ => rsa::Oaep::new_with_label::<rsa::sha2::Sha256, _>("IDENTITY\0"),
    };
    let out = key
        .encrypt(&mut rng, padding, seed)
        .map_err(|e| Error::Activation(format!("RSA-OAEP: {e}")))?;
    if rng.failed || out.len() != size {
        return Err(Error::Activation("RSA-OAEP: no randomness".into()));
    }
    Ok(out)
}

/// ring's system randomness as the `rand_core` RNG the rsa crate takes.
/// `fill_bytes` cannot fail; a failure is recorded and checked after use.
struct RingRng<'a> {
    rng: &'a dyn SecureRandom,
    failed: bool,
}

impl rsa::rand_core::RngCore for RingRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if self.rng.fill(dest).is_err() {
            self.failed = true;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for RingRng<'_> {}

/// KDFa (Part 1, 11.4.10.2, SP 800-108 counter mode with HMAC):
/// HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32),
/// i = 1, 2, ..., truncated to `bytes`.
fn kdfa(hash: HashAlg, key: &[u8], label: &[u8], u: &[u8], v: &[u8], bytes: usize) -> Vec<u8> {
    let key = hmac::Key::new(hmac_alg(hash), key);
    let bits = u32::try_from(bytes.saturating_mul(8)).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(bytes);
    let mut counter = 1u32;
    while out.len() < bytes {
        let mut mac = hmac::Context::with_key(&key);
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(u);
        mac.update(v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(mac.sign().as_ref());
        counter = counter.saturating_add(1);
    }
    out.truncate(bytes);
    out
}

/// KDFe (Part 1, 11.4.10.3, SP 800-56A concatenation):
/// H([i]32 || Z || label || 0x00 || partyU || partyV), truncated to `bytes`.
fn kdfe(hash: HashAlg, z: &[u8], label: &[u8], u: &[u8], v: &[u8], bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes);
    let mut counter = 1u32;
    while out.len() < bytes {
        let mut h = digest::Context::new(crate::hash::tpm_algorithm(hash));
        h.update(&counter.to_be_bytes());
        h.update(z);
        h.update(label);
        h.update(&[0]);
        h.update(u);
        h.update(v);
        out.extend_from_slice(h.finish().as_ref());
        counter = counter.saturating_add(1);
    }
    out.truncate(bytes);
    out
}

/// AES-CFB (full-block feedback) with a zero IV, as Part 1, 24.4 wraps the
/// credential; the last block may be partial.
fn aes_cfb_encrypt(key: &[u8], plain: &[u8]) -> Result<Vec<u8>, Error> {
    // One lives on the stack for one call; boxing the larger key schedule
    // would only add an allocation.
    #[allow(clippy::large_enum_variant)]
    enum Aes {
        K128(aes::Aes128),
        K256(aes::Aes256),
    }
    let bad = |_| Error::Activation(format!("AES key of {} bytes", key.len()));
    let cipher = match key.len() {
        16 => Aes::K128(aes::Aes128::new_from_slice(key).map_err(bad)?),
        _ => Aes::K256(aes::Aes256::new_from_slice(key).map_err(bad)?),
    };
    let mut feedback = GenericArray::from([0u8; 16]);
    let mut out = Vec::with_capacity(plain.len());
    for chunk in plain.chunks(16) {
        match &cipher {
            Aes::K128(c) => c.encrypt_block(&mut feedback),
            Aes::K256(c) => c.encrypt_block(&mut feedback),
        }
        let start = out.len();
        out.extend(chunk.iter().zip(feedback.iter()).map(|(p, k)| p ^ k));
        let mut next = [0u8; 16];
        for (n, c) in next.iter_mut().zip(out.get(start..).unwrap_or_default()) {
            *n = *c;
        }
        feedback = GenericArray::from(next);
    }
    Ok(out)
}

fn hmac_alg(hash: HashAlg) -> hmac::Algorithm {
    match hash {
        HashAlg::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => hmac::HMAC_SHA256,
        HashAlg::Sha384 => hmac::HMAC_SHA384,
        HashAlg::Sha512 => hmac::HMAC_SHA512,
    }
}

use crate::hash::sha256;

/// Append `bytes` as a TPM2B (big-endian u16 size first).
fn tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    let size = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// 0x04 || x || y, each coordinate left-padded to the curve's size.
fn ecc_point(curve: EccCurve, x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    let size = curve.size();
    let (x, y) = (strip(x), strip(y));
    if x.len() > size || y.len() > size {
        return None;
    }
    let mut point = vec![0x04];
    point.extend(std::iter::repeat_n(0, size.saturating_sub(x.len())));
    point.extend_from_slice(x);
    point.extend(std::iter::repeat_n(0, size.saturating_sub(y.len())));
    point.extend_from_slice(y);
    Some(point)
}

/// `b` without leading zero bytes.
fn strip(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or_default()
}

/// `b` left-padded with zeros to at least `size` bytes.
fn pad(b: &[u8], size: usize) -> Cow<'_, [u8]> {
    let b = strip(b);
    if b.len() >= size {
        return Cow::Borrowed(b);
    }
    let mut v = vec![0; size.saturating_sub(b.len())];
    v.extend_from_slice(b);
    Cow::Owned(v)
}

/// A DER element: tag, definite length, contents.
fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let len_bytes = len.to_be_bytes();
            let n = strip(&len_bytes);
            out.push(0x80 | u8::try_from(n.len()).unwrap_or(0));
            out.extend_from_slice(n);
        }
    }
    out.extend_from_slice(body);
    out
}

/// A DER INTEGER holding the unsigned big-endian `b`.
fn der_uint(b: &[u8]) -> Vec<u8> {
    let b = strip(b);
    let mut body = Vec::with_capacity(b.len().saturating_add(1));
    if b.first().is_none_or(|&x| x & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(b);
    der(0x02, &body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn der_lengths_and_integers() {
        assert_eq!(der_uint(&[0x01, 0x00, 0x01]), [2, 3, 1, 0, 1]);
        assert_eq!(der_uint(&[0x80]), [2, 2, 0, 0x80]);
        assert_eq!(der_uint(&[0, 0, 5]), [2, 1, 5]);
        assert_eq!(der(0x30, &[]), [0x30, 0]);
        assert_eq!(&der(0x04, &[7; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(&der(0x04, &[7; 300])[..4], [0x04, 0x82, 1, 44]);
    }

    #[test]
    fn cfb_is_its_own_keystream_and_handles_partial_blocks() {
        // Encrypting zeros yields the keystream; XOR with it recovers the
        // plaintext, block boundaries or not.
        let key = [9u8; 16];
        let plain: Vec<u8> = (0u8..34).collect();
        let c = aes_cfb_encrypt(&key, &plain).unwrap();
        assert_eq!(c.len(), 34);
        assert_ne!(c, plain);
        // First block: E(0) ^ p0, independent of the rest.
        let first = aes_cfb_encrypt(&key, &plain[..16]).unwrap();
        assert_eq!(first, c[..16]);
    }

    /// A TPMT_PUBLIC for an ECC P-256 (ECDSA-SHA256) or RSA 2048
    /// (RSASSA-SHA256) key with `attributes`: the layout of Part 2, 12.2.4.
    fn tpmt_public(ecc: bool, attributes: u32, key: &[u8]) -> Public {
        let mut b = Vec::new();
        b.extend_from_slice(&(if ecc { 0x0023u16 } else { 0x0001 }).to_be_bytes());
        b.extend_from_slice(&0x000Bu16.to_be_bytes()); // nameAlg SHA-256
        b.extend_from_slice(&attributes.to_be_bytes());
        b.extend_from_slice(&[0, 0]); // authPolicy
        b.extend_from_slice(&0x0010u16.to_be_bytes()); // symmetric NULL
        if ecc {
            b.extend_from_slice(&0x0018u16.to_be_bytes()); // ECDSA
            b.extend_from_slice(&0x000Bu16.to_be_bytes());
            b.extend_from_slice(&0x0003u16.to_be_bytes()); // NIST P-256
            b.extend_from_slice(&0x0010u16.to_be_bytes()); // kdf NULL
            let (x, y) = key[1..].split_at(32);
            tpm2b(&mut b, x);
            tpm2b(&mut b, y);
        } else {
            b.extend_from_slice(&0x0014u16.to_be_bytes()); // RSASSA
            b.extend_from_slice(&0x000Bu16.to_be_bytes());
            b.extend_from_slice(&2048u16.to_be_bytes());
            b.extend_from_slice(&0u32.to_be_bytes()); // exponent 65537
            tpm2b(&mut b, key);
        }
        Public::from_bytes(&b).unwrap()
    }

    const AK_ATTRIBUTES: u32 = ObjectAttributes::FIXED_TPM
        | ObjectAttributes::FIXED_PARENT
        | ObjectAttributes::SENSITIVE_DATA_ORIGIN
        | ObjectAttributes::USER_WITH_AUTH
        | ObjectAttributes::RESTRICTED
        | ObjectAttributes::SIGN;

    /// An ECC P-256 AK public with a real point.
    fn ecc_ak(rng: &dyn SecureRandom, attributes: u32) -> Public {
        let key = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, rng).unwrap();
        tpmt_public(true, attributes, key.compute_public_key().unwrap().as_ref())
    }

    /// An RSA 2048 AK public (the modulus need not factor: only its
    /// bytes are certified here).
    fn rsa_ak(rng: &dyn SecureRandom) -> Public {
        let mut n = [0u8; 256];
        rng.fill(&mut n).unwrap();
        n[0] |= 0x80;
        n[255] |= 1;
        tpmt_public(false, AK_ATTRIBUTES, &n)
    }

    /// An operator CA (self-signed, P-256): DER and PKCS#8 PEM key.
    fn operator_ca(name: &str, not_after: i64) -> (Vec<u8>, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = time::OffsetDateTime::from_unix_timestamp(T0 - 86_400).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), key.serialize_pem())
    }

    /// A verified EK as only `verify_ek` makes one (EK chains are tested
    /// against swtpm's real certificates in worker/tests/ak_enroll.rs).
    fn test_ek() -> VerifiedEk {
        VerifiedEk {
            public: ecc_ak(&ring::rand::SystemRandom::new(), AK_ATTRIBUTES),
            serial: vec![0x01, 0x23],
            issuer: Vec::new(),
            key_id: [0xEE; 32],
        }
    }

    /// 2026-01-01T00:00:00Z: time is pinned.
    const T0: i64 = 1_767_225_600;
    const YEAR: i64 = 365 * 86_400;

    #[test]
    fn an_issued_ak_certificate_verifies_for_both_key_kinds() {
        let rng = ring::rand::SystemRandom::new();
        let (ca, ca_key) = operator_ca("Provenix test operator CA", T0 + 10 * YEAR);
        let ek = test_ek();
        for ak in [ecc_ak(&rng, AK_ATTRIBUTES), rsa_ak(&rng)] {
            let cert = issue_ak_certificate(&ak, &ek, &ca, &ca_key, T0, T0 + YEAR, &rng).unwrap();
            let verified =
                verify_ak_certificate(&cert, &[], std::slice::from_ref(&ca), T0 + 1, &ak).unwrap();
            assert_eq!(verified.ek_key_id(), Some([0xEE; 32]));
            assert_eq!(verified.attestation_key().name(), Some(&name_of(&ak)[..]));
        }
    }

    #[test]
    fn an_ak_certificate_is_refused_for_another_key_ca_or_time() {
        let rng = ring::rand::SystemRandom::new();
        let (ca, ca_key) = operator_ca("Provenix test operator CA", T0 + 10 * YEAR);
        let (other_ca, _) = operator_ca("Provenix test operator CA", T0 + 10 * YEAR);
        let ak = ecc_ak(&rng, AK_ATTRIBUTES);
        let cert =
            issue_ak_certificate(&ak, &test_ek(), &ca, &ca_key, T0, T0 + YEAR, &rng).unwrap();
        let roots = std::slice::from_ref(&ca);
        // Another AK (the quote would be signed by a key never enrolled).
        let err =
            verify_ak_certificate(&cert, &[], roots, T0, &ecc_ak(&rng, AK_ATTRIBUTES)).unwrap_err();
        assert!(
            err.to_string().contains("not the attestation key given"),
            "{err}"
        );
        let err = verify_ak_certificate(&cert, &[], roots, T0, &rsa_ak(&rng)).unwrap_err();
        assert!(
            err.to_string().contains("not the attestation key given"),
            "{err}"
        );
        // Another CA of the same name: the signature does not verify.
        let err = verify_ak_certificate(&cert, &[], std::slice::from_ref(&other_ca), T0, &ak)
            .unwrap_err();
        assert!(matches!(err, Error::AkChain { which: "AK", .. }), "{err}");
        // Before and after its validity.
        for at in [T0 - 1, T0 + YEAR + 1] {
            let err = verify_ak_certificate(&cert, &[], roots, at, &ak).unwrap_err();
            assert!(err.to_string().contains("not valid at"), "{err}");
        }
        // Certified, but the key given is not restricted: refused as such.
        let mut bytes = ak.as_bytes().to_vec();
        bytes[4..8].copy_from_slice(&(AK_ATTRIBUTES & !ObjectAttributes::RESTRICTED).to_be_bytes());
        let unrestricted = Public::from_bytes(&bytes).unwrap();
        let err = verify_ak_certificate(&cert, &[], roots, T0, &unrestricted).unwrap_err();
        assert!(matches!(err, Error::AkNotRestrictedSigning { .. }), "{err}");
    }

    /// An intermediate CA for `key`, named `name`, issued by `issuer`
    /// (DER and PKCS#8 PEM key), valid until `not_after`.
    fn intermediate(
        name: &str,
        key: &rcgen::KeyPair,
        issuer: (&[u8], &str),
        not_after: i64,
    ) -> Vec<u8> {
        let issuer_key = rcgen::KeyPair::from_pem(issuer.1).unwrap();
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&issuer.0.to_vec().into(), issuer_key).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = time::OffsetDateTime::from_unix_timestamp(T0 - 86_400).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        params.signed_by(key, &issuer).unwrap().der().to_vec()
    }

    #[test]
    fn chain_building_keeps_searching_past_a_failing_candidate() {
        let rng = ring::rand::SystemRandom::new();
        let (root, root_key) = operator_ca("Provenix test root", T0 + 10 * YEAR);
        let (stranger, stranger_key) = operator_ca("Provenix test stranger", T0 + 10 * YEAR);
        // One intermediate key, certified three times under one name: by a
        // root nobody trusts, by the trusted root but expired, and by the
        // trusted root and valid. Each decoy's signature on the leaf
        // verifies (same key), so only a search that backtracks finds the
        // good one when the decoys come first.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let name = "Provenix test intermediate";
        let untrusted = intermediate(name, &key, (&stranger, &stranger_key), T0 + YEAR);
        let expired = intermediate(name, &key, (&root, &root_key), T0 - 1);
        let good = intermediate(name, &key, (&root, &root_key), T0 + YEAR);
        let ak = ecc_ak(&rng, AK_ATTRIBUTES);
        let cert = issue_ak_certificate(
            &ak,
            &test_ek(),
            &good,
            &key.serialize_pem(),
            T0,
            T0 + YEAR,
            &rng,
        )
        .unwrap();
        let roots = std::slice::from_ref(&root);
        for offered in [
            vec![untrusted.clone(), expired.clone(), good.clone()],
            vec![expired.clone(), untrusted.clone(), good.clone()],
            vec![good.clone(), untrusted.clone()],
        ] {
            verify_ak_certificate(&cert, &offered, roots, T0 + 1, &ak).unwrap();
        }
        // Without the good one, the error says why the last candidate failed.
        let err =
            verify_ak_certificate(&cert, &[untrusted, expired], roots, T0 + 1, &ak).unwrap_err();
        assert!(matches!(err, Error::AkChain { which: "AK", .. }), "{err}");
    }

    #[test]
    fn a_non_canonical_certificate_is_refused() {
        let rng = ring::rand::SystemRandom::new();
        let (ca, ca_key) = operator_ca("Provenix test operator CA", T0 + 10 * YEAR);
        let ak = ecc_ak(&rng, AK_ATTRIBUTES);
        let cert =
            issue_ak_certificate(&ak, &test_ek(), &ca, &ca_key, T0, T0 + YEAR, &rng).unwrap();
        let roots = std::slice::from_ref(&ca);
        verify_ak_certificate(&cert, &[], roots, T0 + 1, &ak).unwrap();
        // The outer SEQUENCE's length re-encoded with one more octet: the
        // signature (over the TBS only) still verifies, the DER is not DER.
        assert_eq!(cert[1], 0x82);
        let mut longer = vec![0x30, 0x83, 0x00];
        longer.extend_from_slice(&cert[2..]);
        let err = verify_ak_certificate(&longer, &[], roots, T0 + 1, &ak).unwrap_err();
        assert!(err.to_string().contains("not canonical DER"), "{err}");
    }

    #[test]
    fn a_certificate_without_the_aik_usage_is_not_an_ak_certificate() {
        let rng = ring::rand::SystemRandom::new();
        let (ca, _) = operator_ca("Provenix test operator CA", T0 + 10 * YEAR);
        // The CA's own certificate, as if it were the AK's: no AIK usage.
        let err = verify_ak_certificate(
            &ca,
            &[],
            std::slice::from_ref(&ca),
            T0,
            &ecc_ak(&rng, AK_ATTRIBUTES),
        )
        .unwrap_err();
        assert!(err.to_string().contains("2.23.133.8.3"), "{err}");
    }

    #[test]
    fn enrollment_files_say_what_is_wrong_with_them() {
        let rng = ring::rand::SystemRandom::new();
        let request = AkRequest::new(ecc_ak(&rng, AK_ATTRIBUTES).as_bytes().to_vec(), vec![]);
        let json = request.to_json();
        assert_eq!(AkRequest::from_json(json.as_bytes()).unwrap(), request);
        let cases: &[(String, &str)] = &[
            (
                json.replace(REQUEST_FORMAT, CHALLENGE_FORMAT),
                "this is a \"provenix-ak-challenge\" file",
            ),
            (
                json.replace("\"version\": 1", "\"version\": 2"),
                "version 2; this code reads version 1",
            ),
            (
                json.replace("\"format\"", "\"kind\""),
                "no \"format\" field",
            ),
            (
                json.replace("\"version\"", "\"extra\": 0, \"version\""),
                "unknown field `extra`",
            ),
            (
                json.replace("\"ak_public\": \"", "\"ak_public\": \"!"),
                "not base64",
            ),
            ("[]".into(), "not JSON"),
            (" ".repeat(MAX_ENROLLMENT_FILE + 1), "exceeds"),
        ];
        for (text, needle) in cases {
            let err = AkRequest::from_json(text.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
        }
    }

    #[test]
    fn finishing_checks_the_challenge_id_expiry_and_secret_before_the_ek() {
        let rng = ring::rand::SystemRandom::new();
        let ak = ecc_ak(&rng, AK_ATTRIBUTES);
        let (id, secret, ek_certificate) =
            (vec![7u8; 16], [9u8; 32], b"not a certificate".to_vec());
        let state = EnrollmentState {
            format: STATE_FORMAT.into(),
            version: ENROLLMENT_VERSION,
            id: id.clone(),
            created: T0,
            expires: T0 + CHALLENGE_LIFETIME,
            ak_public: ak.as_bytes().to_vec(),
            commitment: commitment(&secret, &id, &name_of(&ak), &sha256(&ek_certificate)),
            ek_certificate,
            ek_public: Vec::new(),
            ek_roots: Vec::new(),
            ek_intermediates: Vec::new(),
        };
        let state = EnrollmentState::from_json(state.to_json().as_bytes()).unwrap();
        let finish = |id: &[u8], secret: &[u8], at: i64| {
            finish_enrollment(&state, &AkResponse::new(id.to_vec(), secret.to_vec()), at)
                .unwrap_err()
                .to_string()
        };
        assert!(finish(&[8; 16], &secret, T0).contains("another enrollment"));
        assert!(finish(&id, &secret, T0 + CHALLENGE_LIFETIME + 1).contains("expired"));
        assert!(finish(&id, &[9; 31], T0).contains("the secret does not match"));
        assert!(finish(&id, &[8; 32], T0).contains("the secret does not match"));
        // The right secret: on to the EK, verified again (and refused).
        assert!(finish(&id, &secret, T0).contains("EK certificate"));
        // The state's AK swapped: the commitment no longer matches.
        let mut swapped = state.clone();
        swapped.ak_public = ecc_ak(&rng, AK_ATTRIBUTES).as_bytes().to_vec();
        let err =
            finish_enrollment(&swapped, &AkResponse::new(id, secret.to_vec()), T0).unwrap_err();
        assert!(
            err.to_string().contains("the secret does not match"),
            "{err}"
        );
    }

    #[test]
    fn kdfa_truncates_and_depends_on_every_input() {
        let a = kdfa(HashAlg::Sha256, b"k", b"STORAGE", b"n", &[], 16);
        assert_eq!(a.len(), 16);
        assert_ne!(a, kdfa(HashAlg::Sha256, b"k", b"INTEGRITY", b"n", &[], 16));
        assert_ne!(a, kdfa(HashAlg::Sha256, b"k", b"STORAGE", b"m", &[], 16));
        assert_eq!(kdfa(HashAlg::Sha256, b"k", b"L", &[], &[], 40).len(), 40);
    }
}
