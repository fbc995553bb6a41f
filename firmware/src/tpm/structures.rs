//! The TPM 2.0 structures a quote is made of, unmarshalled in pure Rust:
//! TPMS_ATTEST (and TPM2B_ATTEST), TPMT_SIGNATURE, TPMT_PUBLIC (and
//! TPM2B_PUBLIC).
//!
//! Layouts and constants follow "TPM 2.0 Library, Part 2: Structures"
//! (rev 1.59; table numbers below are from it) and the TCG Algorithm
//! Registry. Everything is big-endian. Every size is bounded by the
//! structure's maximum, every enum value is checked against the values the
//! spec allows in that place, reserved bits must be zero and trailing bytes
//! are refused. The bytes received are kept: a signature is checked over
//! them and a name is computed over them, never over a re-marshalled copy.
//!
//! There is no cryptography here: the verifier checks signatures, digests
//! and names.

use crate::Error;

use super::{HashAlg, Reader};

/// TPM_GENERATED_VALUE (Table 7): the first field of everything a TPM signs
/// as an attestation, and that no external data can start with when signed
/// by a restricted key.
pub const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;

// TPM_ST (Table 19): the attestation types.
const TPM_ST_ATTEST_NV: u16 = 0x8014;
const TPM_ST_ATTEST_COMMAND_AUDIT: u16 = 0x8015;
const TPM_ST_ATTEST_SESSION_AUDIT: u16 = 0x8016;
const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ST_ATTEST_TIME: u16 = 0x8019;
const TPM_ST_ATTEST_CREATION: u16 = 0x801A;
const TPM_ST_ATTEST_NV_DIGEST: u16 = 0x801C;

// TPM_ALG_ID (TCG Algorithm Registry, Table 3).
const ALG_RSA: u16 = 0x0001;
const ALG_HMAC: u16 = 0x0005;
const ALG_AES: u16 = 0x0006;
const ALG_MGF1: u16 = 0x0007;
const ALG_KEYEDHASH: u16 = 0x0008;
const ALG_NULL: u16 = 0x0010;
const ALG_SM4: u16 = 0x0013;
const ALG_RSASSA: u16 = 0x0014;
const ALG_RSAES: u16 = 0x0015;
const ALG_RSAPSS: u16 = 0x0016;
const ALG_OAEP: u16 = 0x0017;
const ALG_ECDSA: u16 = 0x0018;
const ALG_ECDH: u16 = 0x0019;
const ALG_ECDAA: u16 = 0x001A;
const ALG_SM2: u16 = 0x001B;
const ALG_ECSCHNORR: u16 = 0x001C;
const ALG_ECMQV: u16 = 0x001D;
const ALG_KDF1_SP800_56A: u16 = 0x0020;
const ALG_KDF2: u16 = 0x0021;
const ALG_KDF1_SP800_108: u16 = 0x0022;
const ALG_ECC: u16 = 0x0023;
const ALG_SYMCIPHER: u16 = 0x0025;
const ALG_CAMELLIA: u16 = 0x0026;
const ALG_CTR: u16 = 0x0040;
const ALG_OFB: u16 = 0x0041;
const ALG_CBC: u16 = 0x0042;
const ALG_CFB: u16 = 0x0043;
const ALG_ECB: u16 = 0x0044;

/// sizeof(TPMU_HA): the largest digest, SHA-512 (Table 80). Bounds
/// TPM2B_DIGEST.
const MAX_DIGEST: usize = 64;
/// sizeof(TPMT_HA) = algorithm + SHA-512 digest (Tables 79, 81). Bounds
/// TPM2B_DATA and TPM2B_NAME (TPMU_NAME is a TPMT_HA or a 4-byte handle).
const MAX_HA: usize = 2 + MAX_DIGEST;
/// MAX_RSA_KEY_BYTES for RSA-4096, the largest key a TPM is asked to
/// support. Bounds TPM2B_PUBLIC_KEY_RSA (Table 174).
const MAX_RSA_KEY_BYTES: usize = 512;
/// MAX_ECC_KEY_BYTES for the largest curve in the registry, BN P-638
/// (80 bytes). Bounds TPM2B_ECC_PARAMETER (Table 180).
const MAX_ECC_KEY_BYTES: usize = 80;
/// HASH_COUNT bound for TPML_PCR_SELECTION (Table 110): the registry has
/// far fewer PCR banks than this.
const MAX_PCR_BANKS: u32 = 16;
/// PCR_SELECT_MAX bound (Table 93): PC Client TPMs have 24 PCRs (3 bytes);
/// one more byte allows 32.
const MAX_PCR_SELECT: usize = 4;
/// sizeof(TPMS_ATTEST) bound for TPM2B_ATTEST (Table 130): the quote,
/// certify and creation forms parsed here are a few hundred bytes at most.
const MAX_ATTEST: usize = 2048;

/// An error at `offset` of `structure`.
fn err(structure: &'static str, offset: usize, reason: impl Into<String>) -> Error {
    Error::Tpm {
        structure,
        offset,
        reason: reason.into(),
    }
}

/// A TPMI_ALG_HASH: one of the supported hashes. `NULL` and the hashes no
/// verifier here can compute (SM3, SHA-3) are refused by name.
fn hash_alg(r: &mut Reader<'_>, structure: &'static str, what: &str) -> Result<HashAlg, Error> {
    let at = r.position();
    let id = r.u16_be(what)?;
    HashAlg::from_id(id).ok_or_else(|| {
        let why = if id == ALG_NULL {
            "TPM_ALG_NULL is not allowed here".to_owned()
        } else {
            format!("unsupported hash algorithm {id:#06x}")
        };
        err(structure, at, format!("{what}: {why}"))
    })
}

// ---------------------------------------------------------------------------
// TPMS_ATTEST

/// TPMS_CLOCK_INFO (Table 120).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was made.
    pub clock: u64,
    /// TPM2_Startup(CLEAR) count since the last TPM2_Clear.
    pub reset_count: u32,
    /// TPM2_Shutdown/Startup(STATE) count since the last reset.
    pub restart_count: u32,
    /// Whether `clock` cannot have been rolled back.
    pub safe: bool,
}

/// TPMS_PCR_SELECTION (Table 93): a bank and a bitmap of its PCRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrSelection {
    hash: HashAlg,
    select: Vec<u8>,
}

impl PcrSelection {
    /// A selection of `pcrs` in bank `hash`, with the PC Client's 3-byte
    /// bitmap (or more when a PCR index needs it). `None` when an index is
    /// beyond what a selection can hold (31).
    pub fn new(hash: HashAlg, pcrs: &[u32]) -> Option<PcrSelection> {
        let mut select = vec![0u8; 3];
        for &pcr in pcrs {
            let byte = usize::try_from(pcr / 8).ok()?;
            if byte >= MAX_PCR_SELECT {
                return None;
            }
            if select.len() <= byte {
                select.resize(byte.checked_add(1)?, 0);
            }
            let slot = select.get_mut(byte)?;
            *slot |= 1 << (pcr % 8);
        }
        Some(PcrSelection { hash, select })
    }

    /// The bank.
    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// The bitmap as marshalled (pcrSelect): PCR `i` is bit `i % 8` of
    /// byte `i / 8`.
    pub fn bitmap(&self) -> &[u8] {
        &self.select
    }

    /// The selected PCR indices, ascending: the order their values enter
    /// the quote's pcrDigest.
    pub fn pcrs(&self) -> impl Iterator<Item = u32> + '_ {
        (0u32..).zip(self.select.iter()).flat_map(|(byte, &bits)| {
            (0u32..8)
                .filter(move |bit| bits & (1 << bit) != 0)
                .map(move |bit| byte.saturating_mul(8).saturating_add(bit))
        })
    }

    /// Whether PCR `pcr` is selected.
    pub fn contains(&self, pcr: u32) -> bool {
        let Ok(byte) = usize::try_from(pcr / 8) else {
            return false;
        };
        self.select
            .get(byte)
            .is_some_and(|bits| bits & (1 << (pcr % 8)) != 0)
    }

    fn parse(r: &mut Reader<'_>, s: &'static str) -> Result<PcrSelection, Error> {
        let hash = hash_alg(r, s, "TPMS_PCR_SELECTION.hash")?;
        let at = r.position();
        let size = usize::from(r.u8("TPMS_PCR_SELECTION.sizeofSelect")?);
        if size > MAX_PCR_SELECT {
            return Err(err(
                s,
                at,
                format!("sizeofSelect {size} exceeds {MAX_PCR_SELECT}"),
            ));
        }
        let select = r.take(size, "TPMS_PCR_SELECTION.pcrSelect")?.to_vec();
        Ok(PcrSelection { hash, select })
    }

    /// The marshalled TPMS_PCR_SELECTION.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.hash.id().to_be_bytes().to_vec();
        // `new` and `parse` keep the bitmap within MAX_PCR_SELECT bytes.
        out.push(u8::try_from(self.select.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.select);
        out
    }
}

/// TPML_PCR_SELECTION (Table 110), as the list of banks in marshalled
/// order. A bank appears at most once.
fn pcr_selection_list(r: &mut Reader<'_>, s: &'static str) -> Result<Vec<PcrSelection>, Error> {
    let at = r.position();
    let count = r.u32_be("TPML_PCR_SELECTION.count")?;
    if count > MAX_PCR_BANKS {
        return Err(err(
            s,
            at,
            format!("TPML_PCR_SELECTION.count {count} exceeds {MAX_PCR_BANKS}"),
        ));
    }
    let mut list: Vec<PcrSelection> = Vec::new();
    for _ in 0..count {
        let at = r.position();
        let sel = PcrSelection::parse(r, s)?;
        // A bank listed twice would put its PCRs twice into pcrDigest; no
        // TPM answers a quote that way, and a verifier keyed by (bank, PCR)
        // could not say which copy a value belongs to.
        if list.iter().any(|l| l.hash == sel.hash) {
            return Err(err(s, at, format!("bank {} selected twice", sel.hash)));
        }
        list.push(sel);
    }
    Ok(list)
}

/// TPMS_QUOTE_INFO (Table 124).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteInfo {
    /// pcrSelect: the banks and PCRs quoted, in marshalled order.
    pub pcr_select: Vec<PcrSelection>,
    /// pcrDigest: the hash of the selected PCR values, concatenated in
    /// selection order, with the signing scheme's hash.
    pub pcr_digest: Vec<u8>,
}

impl QuoteInfo {
    /// Every (bank, PCR) quoted, in the order their values enter
    /// pcrDigest: bank by bank as listed, each bank's PCRs ascending.
    pub fn selected(&self) -> impl Iterator<Item = (HashAlg, u32)> + '_ {
        self.pcr_select
            .iter()
            .flat_map(|sel| sel.pcrs().map(move |pcr| (sel.hash, pcr)))
    }
}

/// TPMS_CERTIFY_INFO (Table 123): TPM2_Certify's statement that an object
/// with this name is loaded in the TPM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertifyInfo {
    /// The certified object's name.
    pub name: Vec<u8>,
    /// Its qualified name.
    pub qualified_name: Vec<u8>,
}

/// TPMS_CREATION_INFO (Table 127): TPM2_CertifyCreation's statement that
/// the TPM created an object with this name and creation data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreationInfo {
    /// The object's name.
    pub object_name: Vec<u8>,
    /// The hash of its TPMS_CREATION_DATA.
    pub creation_hash: Vec<u8>,
}

/// TPMU_ATTEST (Table 129), for the attestation types understood here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attested {
    /// TPM_ST_ATTEST_QUOTE (0x8018).
    Quote(QuoteInfo),
    /// TPM_ST_ATTEST_CERTIFY (0x8017).
    Certify(CertifyInfo),
    /// TPM_ST_ATTEST_CREATION (0x801A).
    Creation(CreationInfo),
}

/// TPMS_ATTEST (Table 130): what a TPM signs when it attests.
///
/// The bytes are kept as received, for the signature check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attest {
    bytes: Vec<u8>,
    qualified_signer: Vec<u8>,
    extra_data: Vec<u8>,
    clock_info: ClockInfo,
    firmware_version: u64,
    attested: Attested,
}

impl Attest {
    const S: &'static str = "TPMS_ATTEST";

    /// Parse a marshalled TPMS_ATTEST (what `tpm2_quote -m` writes), all of
    /// `bytes` and nothing more.
    pub fn from_bytes(bytes: &[u8]) -> Result<Attest, Error> {
        let s = Self::S;
        let mut r = Reader::new(s, bytes);
        let magic = r.u32_be("magic")?;
        if magic != TPM_GENERATED_VALUE {
            return Err(err(
                s,
                0,
                format!(
                    "magic {magic:#010x} is not TPM_GENERATED_VALUE {TPM_GENERATED_VALUE:#010x}"
                ),
            ));
        }
        let type_at = r.position();
        let st = r.u16_be("type")?;
        let qualified_signer = r.tpm2b("qualifiedSigner", MAX_HA)?.to_vec();
        let extra_data = r.tpm2b("extraData", MAX_HA)?.to_vec();
        let clock = r.u64_be("clockInfo.clock")?;
        let reset_count = r.u32_be("clockInfo.resetCount")?;
        let restart_count = r.u32_be("clockInfo.restartCount")?;
        let safe_at = r.position();
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            v => {
                return Err(err(
                    s,
                    safe_at,
                    format!("clockInfo.safe is {v}, a TPMI_YES_NO must be 0 or 1"),
                ));
            }
        };
        let firmware_version = r.u64_be("firmwareVersion")?;
        let attested = match st {
            TPM_ST_ATTEST_QUOTE => Attested::Quote(QuoteInfo {
                pcr_select: pcr_selection_list(&mut r, s)?,
                pcr_digest: r.tpm2b("pcrDigest", MAX_DIGEST)?.to_vec(),
            }),
            TPM_ST_ATTEST_CERTIFY => Attested::Certify(CertifyInfo {
                name: r.tpm2b("name", MAX_HA)?.to_vec(),
                qualified_name: r.tpm2b("qualifiedName", MAX_HA)?.to_vec(),
            }),
            TPM_ST_ATTEST_CREATION => Attested::Creation(CreationInfo {
                object_name: r.tpm2b("objectName", MAX_HA)?.to_vec(),
                creation_hash: r.tpm2b("creationHash", MAX_DIGEST)?.to_vec(),
            }),
            TPM_ST_ATTEST_NV
            | TPM_ST_ATTEST_NV_DIGEST
            | TPM_ST_ATTEST_COMMAND_AUDIT
            | TPM_ST_ATTEST_SESSION_AUDIT
            | TPM_ST_ATTEST_TIME => {
                return Err(err(
                    s,
                    type_at,
                    format!(
                        "attestation type {st:#06x} is not supported (quote, certify and creation are)"
                    ),
                ));
            }
            other => {
                return Err(err(
                    s,
                    type_at,
                    format!("type {other:#06x} is not a TPMI_ST_ATTEST"),
                ));
            }
        };
        r.finish()?;
        Ok(Attest {
            bytes: bytes.to_vec(),
            qualified_signer,
            extra_data,
            clock_info: ClockInfo {
                clock,
                reset_count,
                restart_count,
                safe,
            },
            firmware_version,
            attested,
        })
    }

    /// Parse a TPM2B_ATTEST (Table 131): a size, then a TPMS_ATTEST of
    /// exactly that size.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Attest, Error> {
        let mut r = Reader::new("TPM2B_ATTEST", bytes);
        let inner = r.tpm2b("attestationData", MAX_ATTEST)?;
        r.finish()?;
        Attest::from_bytes(inner)
    }

    /// The TPMS_ATTEST bytes as received: what the signature covers.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// qualifiedSigner: the qualified name of the signing key.
    pub fn qualified_signer(&self) -> &[u8] {
        &self.qualified_signer
    }
    /// extraData: the caller's qualifying data (a nonce or a binding hash).
    pub fn extra_data(&self) -> &[u8] {
        &self.extra_data
    }
    /// clockInfo.
    pub fn clock_info(&self) -> ClockInfo {
        self.clock_info
    }
    /// firmwareVersion: vendor-specific TPM firmware version.
    pub fn firmware_version(&self) -> u64 {
        self.firmware_version
    }
    /// What is attested.
    pub fn attested(&self) -> &Attested {
        &self.attested
    }
    /// The quote, if this is one.
    pub fn quote(&self) -> Option<&QuoteInfo> {
        match &self.attested {
            Attested::Quote(q) => Some(q),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Schemes

/// The asymmetric schemes (TPMT_RSA_SCHEME, Table 173; TPMT_ECC_SCHEME,
/// Table 185; TPMU_SIG_SCHEME, Table 162), each with its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// TPM_ALG_RSASSA: RSASSA-PKCS1-v1_5.
    RsaSsa(HashAlg),
    /// TPM_ALG_RSAPSS: RSASSA-PSS.
    RsaPss(HashAlg),
    /// TPM_ALG_RSAES: RSAES-PKCS1-v1_5 (no hash).
    RsaEs,
    /// TPM_ALG_OAEP: RSAES-OAEP.
    Oaep(HashAlg),
    /// TPM_ALG_ECDSA.
    Ecdsa(HashAlg),
    /// TPM_ALG_ECDH.
    Ecdh(HashAlg),
    /// TPM_ALG_ECDAA, with its commit count.
    Ecdaa(HashAlg, u16),
    /// TPM_ALG_SM2.
    Sm2(HashAlg),
    /// TPM_ALG_ECSCHNORR.
    EcSchnorr(HashAlg),
    /// TPM_ALG_ECMQV.
    EcMqv(HashAlg),
}

impl Scheme {
    /// The scheme's hash (none for RSAES).
    pub fn hash(self) -> Option<HashAlg> {
        match self {
            Scheme::RsaEs => None,
            Scheme::RsaSsa(h)
            | Scheme::RsaPss(h)
            | Scheme::Oaep(h)
            | Scheme::Ecdsa(h)
            | Scheme::Ecdh(h)
            | Scheme::Ecdaa(h, _)
            | Scheme::Sm2(h)
            | Scheme::EcSchnorr(h)
            | Scheme::EcMqv(h) => Some(h),
        }
    }

    /// Whether this is a signing scheme.
    pub fn is_signing(self) -> bool {
        matches!(
            self,
            Scheme::RsaSsa(_)
                | Scheme::RsaPss(_)
                | Scheme::Ecdsa(_)
                | Scheme::Ecdaa(..)
                | Scheme::Sm2(_)
                | Scheme::EcSchnorr(_)
        )
    }

    /// A TPMT_RSA_SCHEME or TPMT_ECC_SCHEME; `None` for TPM_ALG_NULL.
    fn parse(r: &mut Reader<'_>, s: &'static str, rsa: bool) -> Result<Option<Scheme>, Error> {
        let at = r.position();
        let id = r.u16_be("scheme")?;
        let hash = |r: &mut Reader<'_>| hash_alg(r, s, "scheme.details.hashAlg");
        let scheme = match (rsa, id) {
            (_, ALG_NULL) => return Ok(None),
            (true, ALG_RSASSA) => Scheme::RsaSsa(hash(r)?),
            (true, ALG_RSAPSS) => Scheme::RsaPss(hash(r)?),
            (true, ALG_RSAES) => Scheme::RsaEs,
            (true, ALG_OAEP) => Scheme::Oaep(hash(r)?),
            (false, ALG_ECDSA) => Scheme::Ecdsa(hash(r)?),
            (false, ALG_ECDH) => Scheme::Ecdh(hash(r)?),
            (false, ALG_ECDAA) => {
                let h = hash(r)?;
                Scheme::Ecdaa(h, r.u16_be("scheme.details.count")?)
            }
            (false, ALG_SM2) => Scheme::Sm2(hash(r)?),
            (false, ALG_ECSCHNORR) => Scheme::EcSchnorr(hash(r)?),
            (false, ALG_ECMQV) => Scheme::EcMqv(hash(r)?),
            _ => {
                let kind = if rsa { "an RSA" } else { "an ECC" };
                return Err(err(s, at, format!("scheme {id:#06x} is not {kind} scheme")));
            }
        };
        Ok(Some(scheme))
    }
}

// ---------------------------------------------------------------------------
// TPMT_SIGNATURE

/// TPMT_SIGNATURE (Table 192) for the schemes a quote can be verified
/// with. A TPM_ALG_NULL signature (an unsigned attestation) is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    /// TPM_ALG_RSASSA: TPMS_SIGNATURE_RSA.
    RsaSsa {
        /// The hash the TPM signed with.
        hash: HashAlg,
        /// The signature, as long as the modulus.
        sig: Vec<u8>,
    },
    /// TPM_ALG_RSAPSS: TPMS_SIGNATURE_RSA.
    RsaPss {
        /// The hash the TPM signed with (also the MGF1 hash).
        hash: HashAlg,
        /// The signature, as long as the modulus.
        sig: Vec<u8>,
    },
    /// TPM_ALG_ECDSA: TPMS_SIGNATURE_ECC.
    Ecdsa {
        /// The hash the TPM signed with.
        hash: HashAlg,
        /// signatureR, big-endian; may be shorter than the curve's size.
        r: Vec<u8>,
        /// signatureS, big-endian; may be shorter than the curve's size.
        s: Vec<u8>,
    },
}

impl Signature {
    const S: &'static str = "TPMT_SIGNATURE";

    /// Parse a marshalled TPMT_SIGNATURE (what `tpm2_quote -s` writes with
    /// the default `-f tss`), all of `bytes` and nothing more.
    pub fn from_bytes(bytes: &[u8]) -> Result<Signature, Error> {
        let s = Self::S;
        let mut r = Reader::new(s, bytes);
        let at = r.position();
        let alg = r.u16_be("sigAlg")?;
        let sig = match alg {
            ALG_RSASSA | ALG_RSAPSS => {
                let hash = hash_alg(&mut r, s, "hash")?;
                let sig = r.tpm2b("sig", MAX_RSA_KEY_BYTES)?.to_vec();
                if alg == ALG_RSASSA {
                    Signature::RsaSsa { hash, sig }
                } else {
                    Signature::RsaPss { hash, sig }
                }
            }
            ALG_ECDSA => Signature::Ecdsa {
                hash: hash_alg(&mut r, s, "hash")?,
                r: r.tpm2b("signatureR", MAX_ECC_KEY_BYTES)?.to_vec(),
                s: r.tpm2b("signatureS", MAX_ECC_KEY_BYTES)?.to_vec(),
            },
            ALG_NULL => {
                return Err(err(
                    s,
                    at,
                    "sigAlg is TPM_ALG_NULL: the attestation is not signed \
                     (was the signing key's scheme or the command's scheme NULL?)",
                ));
            }
            ALG_HMAC | ALG_ECDAA | ALG_SM2 | ALG_ECSCHNORR => {
                return Err(err(
                    s,
                    at,
                    format!(
                        "signature scheme {alg:#06x} is not supported (RSASSA, RSAPSS and ECDSA are)"
                    ),
                ));
            }
            other => {
                return Err(err(
                    s,
                    at,
                    format!("sigAlg {other:#06x} is not a signature scheme"),
                ));
            }
        };
        r.finish()?;
        Ok(sig)
    }

    /// The scheme, with its hash.
    pub fn scheme(&self) -> Scheme {
        match self {
            Signature::RsaSsa { hash, .. } => Scheme::RsaSsa(*hash),
            Signature::RsaPss { hash, .. } => Scheme::RsaPss(*hash),
            Signature::Ecdsa { hash, .. } => Scheme::Ecdsa(*hash),
        }
    }

    /// The hash the TPM signed with: also the hash of a quote's pcrDigest.
    pub fn hash(&self) -> HashAlg {
        match self {
            Signature::RsaSsa { hash, .. }
            | Signature::RsaPss { hash, .. }
            | Signature::Ecdsa { hash, .. } => *hash,
        }
    }

    /// The marshalled TPMT_SIGNATURE. `None` if a field is longer than a
    /// TPM2B can hold.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        fn tpm2b(out: &mut Vec<u8>, b: &[u8]) -> Option<()> {
            out.extend_from_slice(&u16::try_from(b.len()).ok()?.to_be_bytes());
            out.extend_from_slice(b);
            Some(())
        }
        let (alg, hash) = match self {
            Signature::RsaSsa { hash, .. } => (ALG_RSASSA, hash),
            Signature::RsaPss { hash, .. } => (ALG_RSAPSS, hash),
            Signature::Ecdsa { hash, .. } => (ALG_ECDSA, hash),
        };
        let mut out = alg.to_be_bytes().to_vec();
        out.extend_from_slice(&hash.id().to_be_bytes());
        match self {
            Signature::RsaSsa { sig, .. } | Signature::RsaPss { sig, .. } => tpm2b(&mut out, sig)?,
            Signature::Ecdsa { r, s, .. } => {
                tpm2b(&mut out, r)?;
                tpm2b(&mut out, s)?;
            }
        }
        Some(out)
    }
}

// ---------------------------------------------------------------------------
// TPMT_PUBLIC

/// TPMA_OBJECT (Table 31): an object's attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectAttributes(u32);

impl ObjectAttributes {
    /// fixedTPM: the object cannot be duplicated.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// stClear: saved contexts are lost at TPM Reset and Restart.
    pub const ST_CLEAR: u32 = 1 << 2;
    /// fixedParent: the object's parent cannot change.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin: the TPM generated the private part.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// userWithAuth: the USER role may use authValue or a policy.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// adminWithPolicy: the ADMIN role needs a policy.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// noDA: not subject to dictionary-attack protection.
    pub const NO_DA: u32 = 1 << 10;
    /// encryptedDuplication: duplication needs an inner wrapper.
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    /// restricted: signs only TPM-generated data (or decrypts only
    /// TPM-formatted data).
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt: a decryption key.
    pub const DECRYPT: u32 = 1 << 17;
    /// sign (sign_encrypt): a signing key.
    pub const SIGN: u32 = 1 << 18;
    /// x509sign: signs only X.509 TBS data (rev 1.59).
    pub const X509_SIGN: u32 = 1 << 19;

    /// Bits reserved in Table 31 (0, 3, 8-9, 12-15, 20-31): a TPM refuses
    /// them with TPM_RC_RESERVED_BITS, so they are never set by one.
    pub const RESERVED: u32 = 0xFFF0_F309;

    const NAMES: [(u32, &'static str); 12] = [
        (Self::FIXED_TPM, "fixedtpm"),
        (Self::ST_CLEAR, "stclear"),
        (Self::FIXED_PARENT, "fixedparent"),
        (Self::SENSITIVE_DATA_ORIGIN, "sensitivedataorigin"),
        (Self::USER_WITH_AUTH, "userwithauth"),
        (Self::ADMIN_WITH_POLICY, "adminwithpolicy"),
        (Self::NO_DA, "noda"),
        (Self::ENCRYPTED_DUPLICATION, "encryptedduplication"),
        (Self::RESTRICTED, "restricted"),
        (Self::DECRYPT, "decrypt"),
        (Self::SIGN, "sign"),
        (Self::X509_SIGN, "x509sign"),
    ];

    /// The raw TPMA_OBJECT.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// Whether every flag in `flags` is set.
    pub fn has(self, flags: u32) -> bool {
        self.0 & flags == flags
    }
    /// fixedTPM.
    pub fn fixed_tpm(self) -> bool {
        self.has(Self::FIXED_TPM)
    }
    /// fixedParent.
    pub fn fixed_parent(self) -> bool {
        self.has(Self::FIXED_PARENT)
    }
    /// sensitiveDataOrigin.
    pub fn sensitive_data_origin(self) -> bool {
        self.has(Self::SENSITIVE_DATA_ORIGIN)
    }
    /// userWithAuth.
    pub fn user_with_auth(self) -> bool {
        self.has(Self::USER_WITH_AUTH)
    }
    /// restricted.
    pub fn restricted(self) -> bool {
        self.has(Self::RESTRICTED)
    }
    /// decrypt.
    pub fn decrypt(self) -> bool {
        self.has(Self::DECRYPT)
    }
    /// sign.
    pub fn sign(self) -> bool {
        self.has(Self::SIGN)
    }
}

impl core::fmt::Display for ObjectAttributes {
    /// The set flags as tpm2-tools prints them: `fixedtpm|restricted|sign`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("(none)")?;
        }
        Ok(())
    }
}

/// A symmetric algorithm of TPMT_SYM_DEF_OBJECT (Table 148).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymAlg {
    /// TPM_ALG_AES.
    Aes,
    /// TPM_ALG_SM4.
    Sm4,
    /// TPM_ALG_CAMELLIA.
    Camellia,
}

/// A block cipher mode (TPMI_ALG_SYM_MODE, Table 65).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymMode {
    /// TPM_ALG_CTR.
    Ctr,
    /// TPM_ALG_OFB.
    Ofb,
    /// TPM_ALG_CBC.
    Cbc,
    /// TPM_ALG_CFB.
    Cfb,
    /// TPM_ALG_ECB.
    Ecb,
    /// TPM_ALG_NULL.
    Null,
}

/// TPMT_SYM_DEF_OBJECT (Table 148) when not TPM_ALG_NULL: the symmetric
/// algorithm a storage key protects its children with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SymDefObject {
    /// The algorithm.
    pub algorithm: SymAlg,
    /// Its key size in bits.
    pub key_bits: u16,
    /// Its mode.
    pub mode: SymMode,
}

impl SymDefObject {
    /// `None` for TPM_ALG_NULL.
    fn parse(r: &mut Reader<'_>, s: &'static str) -> Result<Option<SymDefObject>, Error> {
        let at = r.position();
        let algorithm = match r.u16_be("symmetric.algorithm")? {
            ALG_NULL => return Ok(None),
            ALG_AES => SymAlg::Aes,
            ALG_SM4 => SymAlg::Sm4,
            ALG_CAMELLIA => SymAlg::Camellia,
            other => {
                return Err(err(
                    s,
                    at,
                    format!("symmetric.algorithm {other:#06x} is not a TPMI_ALG_SYM_OBJECT"),
                ));
            }
        };
        let at = r.position();
        let key_bits = r.u16_be("symmetric.keyBits")?;
        let allowed: &[u16] = match algorithm {
            SymAlg::Aes | SymAlg::Camellia => &[128, 192, 256],
            SymAlg::Sm4 => &[128],
        };
        if !allowed.contains(&key_bits) {
            return Err(err(
                s,
                at,
                format!("symmetric.keyBits {key_bits} is not a {algorithm:?} key size"),
            ));
        }
        let at = r.position();
        let mode = match r.u16_be("symmetric.mode")? {
            ALG_CTR => SymMode::Ctr,
            ALG_OFB => SymMode::Ofb,
            ALG_CBC => SymMode::Cbc,
            ALG_CFB => SymMode::Cfb,
            ALG_ECB => SymMode::Ecb,
            ALG_NULL => SymMode::Null,
            other => {
                return Err(err(
                    s,
                    at,
                    format!("symmetric.mode {other:#06x} is not a TPMI_ALG_SYM_MODE"),
                ));
            }
        };
        Ok(Some(SymDefObject {
            algorithm,
            key_bits,
            mode,
        }))
    }
}

/// TPMT_KDF_SCHEME (Table 160) when not TPM_ALG_NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kdf {
    /// TPM_ALG_MGF1.
    Mgf1(HashAlg),
    /// TPM_ALG_KDF1_SP800_56A.
    Kdf1Sp800_56a(HashAlg),
    /// TPM_ALG_KDF2.
    Kdf2(HashAlg),
    /// TPM_ALG_KDF1_SP800_108.
    Kdf1Sp800_108(HashAlg),
}

impl Kdf {
    fn parse(r: &mut Reader<'_>, s: &'static str) -> Result<Option<Kdf>, Error> {
        let at = r.position();
        let id = r.u16_be("kdf.scheme")?;
        let make: fn(HashAlg) -> Kdf = match id {
            ALG_NULL => return Ok(None),
            ALG_MGF1 => Kdf::Mgf1,
            ALG_KDF1_SP800_56A => Kdf::Kdf1Sp800_56a,
            ALG_KDF2 => Kdf::Kdf2,
            ALG_KDF1_SP800_108 => Kdf::Kdf1Sp800_108,
            other => {
                return Err(err(
                    s,
                    at,
                    format!("kdf.scheme {other:#06x} is not a TPMI_ALG_KDF"),
                ));
            }
        };
        Ok(Some(make(hash_alg(r, s, "kdf.details.hashAlg")?)))
    }
}

/// TPM_ECC_CURVE (TCG Algorithm Registry, Table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EccCurve {
    /// TPM_ECC_NIST_P192 (0x0001).
    NistP192,
    /// TPM_ECC_NIST_P224 (0x0002).
    NistP224,
    /// TPM_ECC_NIST_P256 (0x0003).
    NistP256,
    /// TPM_ECC_NIST_P384 (0x0004).
    NistP384,
    /// TPM_ECC_NIST_P521 (0x0005).
    NistP521,
    /// TPM_ECC_BN_P256 (0x0010).
    BnP256,
    /// TPM_ECC_BN_P638 (0x0011).
    BnP638,
    /// TPM_ECC_SM2_P256 (0x0020).
    Sm2P256,
}

impl EccCurve {
    /// The curve with this TPM_ECC_CURVE value.
    pub fn from_id(id: u16) -> Option<EccCurve> {
        Some(match id {
            0x0001 => EccCurve::NistP192,
            0x0002 => EccCurve::NistP224,
            0x0003 => EccCurve::NistP256,
            0x0004 => EccCurve::NistP384,
            0x0005 => EccCurve::NistP521,
            0x0010 => EccCurve::BnP256,
            0x0011 => EccCurve::BnP638,
            0x0020 => EccCurve::Sm2P256,
            _ => return None,
        })
    }

    /// Its TPM_ECC_CURVE value.
    pub fn id(self) -> u16 {
        match self {
            EccCurve::NistP192 => 0x0001,
            EccCurve::NistP224 => 0x0002,
            EccCurve::NistP256 => 0x0003,
            EccCurve::NistP384 => 0x0004,
            EccCurve::NistP521 => 0x0005,
            EccCurve::BnP256 => 0x0010,
            EccCurve::BnP638 => 0x0011,
            EccCurve::Sm2P256 => 0x0020,
        }
    }

    /// Bytes in a coordinate or scalar of this curve.
    pub fn size(self) -> usize {
        match self {
            EccCurve::NistP192 => 24,
            EccCurve::NistP224 => 28,
            EccCurve::NistP256 | EccCurve::BnP256 | EccCurve::Sm2P256 => 32,
            EccCurve::NistP384 => 48,
            EccCurve::NistP521 => 66,
            EccCurve::BnP638 => 80,
        }
    }
}

/// An RSA key's parameters and modulus (TPMS_RSA_PARMS, Table 182;
/// unique.rsa).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaPublic {
    /// symmetric: for a storage (restricted decryption) key.
    pub symmetric: Option<SymDefObject>,
    /// scheme; `None` for TPM_ALG_NULL (the command chooses).
    pub scheme: Option<Scheme>,
    /// keyBits.
    pub key_bits: u16,
    /// exponent as marshalled: 0 means the default, 65537.
    pub exponent: u32,
    /// unique.rsa: the modulus, big-endian (empty in a template).
    pub modulus: Vec<u8>,
}

impl RsaPublic {
    /// The public exponent, with 0 read as the default 2^16 + 1 (Part 2,
    /// TPMS_RSA_PARMS).
    pub fn public_exponent(&self) -> u32 {
        if self.exponent == 0 {
            65537
        } else {
            self.exponent
        }
    }
}

/// An ECC key's parameters and point (TPMS_ECC_PARMS, Table 183;
/// unique.ecc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EccPublic {
    /// symmetric: for a storage key.
    pub symmetric: Option<SymDefObject>,
    /// scheme; `None` for TPM_ALG_NULL.
    pub scheme: Option<Scheme>,
    /// curveID.
    pub curve: EccCurve,
    /// kdf; `None` for TPM_ALG_NULL.
    pub kdf: Option<Kdf>,
    /// unique.ecc.x, big-endian (may be shorter than the curve size).
    pub x: Vec<u8>,
    /// unique.ecc.y, big-endian.
    pub y: Vec<u8>,
}

/// The key of a TPMT_PUBLIC: its parameters and public part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// TPM_ALG_RSA.
    Rsa(RsaPublic),
    /// TPM_ALG_ECC.
    Ecc(EccPublic),
}

/// TPMT_PUBLIC (Table 191) of an RSA or ECC key.
///
/// The bytes are kept as received: the object's name is nameAlg ||
/// H_nameAlg(these bytes), which the verifier computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Public {
    bytes: Vec<u8>,
    name_alg: HashAlg,
    object_attributes: ObjectAttributes,
    auth_policy: Vec<u8>,
    key: PublicKey,
}

impl Public {
    const S: &'static str = "TPMT_PUBLIC";

    /// Parse a marshalled TPMT_PUBLIC, all of `bytes` and nothing more.
    pub fn from_bytes(bytes: &[u8]) -> Result<Public, Error> {
        let s = Self::S;
        let mut r = Reader::new(s, bytes);
        let at = r.position();
        let kind = r.u16_be("type")?;
        if kind != ALG_RSA && kind != ALG_ECC {
            let why = match kind {
                ALG_KEYEDHASH | ALG_SYMCIPHER => {
                    format!(
                        "type {kind:#06x} is a symmetric object; only RSA and ECC keys are supported"
                    )
                }
                _ => format!("type {kind:#06x} is not a TPMI_ALG_PUBLIC"),
            };
            return Err(err(s, at, why));
        }
        // An object with nameAlg NULL has no name (only external public
        // keys may): it cannot be an attestation key.
        let name_alg = hash_alg(&mut r, s, "nameAlg")?;
        let at = r.position();
        let attrs = r.u32_be("objectAttributes")?;
        if attrs & ObjectAttributes::RESERVED != 0 {
            return Err(err(
                s,
                at,
                format!(
                    "objectAttributes {attrs:#010x}: reserved bits {:#010x} set",
                    attrs & ObjectAttributes::RESERVED
                ),
            ));
        }
        let auth_policy = r.tpm2b("authPolicy", MAX_DIGEST)?.to_vec();
        let symmetric = SymDefObject::parse(&mut r, s)?;
        let key = if kind == ALG_RSA {
            let scheme = Scheme::parse(&mut r, s, true)?;
            let at = r.position();
            let key_bits = r.u16_be("keyBits")?;
            if !matches!(key_bits, 1024 | 2048 | 3072 | 4096) {
                return Err(err(
                    s,
                    at,
                    format!("keyBits {key_bits} is not an RSA key size (1024, 2048, 3072, 4096)"),
                ));
            }
            let exponent = r.u32_be("exponent")?;
            let modulus = r.tpm2b("unique.rsa", MAX_RSA_KEY_BYTES)?.to_vec();
            PublicKey::Rsa(RsaPublic {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            })
        } else {
            let scheme = Scheme::parse(&mut r, s, false)?;
            let at = r.position();
            let id = r.u16_be("curveID")?;
            let curve = EccCurve::from_id(id)
                .ok_or_else(|| err(s, at, format!("curveID {id:#06x} is not a TPM_ECC_CURVE")))?;
            let kdf = Kdf::parse(&mut r, s)?;
            let x = r.tpm2b("unique.ecc.x", MAX_ECC_KEY_BYTES)?.to_vec();
            let y = r.tpm2b("unique.ecc.y", MAX_ECC_KEY_BYTES)?.to_vec();
            PublicKey::Ecc(EccPublic {
                symmetric,
                scheme,
                curve,
                kdf,
                x,
                y,
            })
        };
        r.finish()?;
        Ok(Public {
            bytes: bytes.to_vec(),
            name_alg,
            object_attributes: ObjectAttributes(attrs),
            auth_policy,
            key,
        })
    }

    /// Parse a TPM2B_PUBLIC (Table 192): a size, then a TPMT_PUBLIC of
    /// exactly that size (what `tpm2_createak -u` and `tpm2_readpublic -o`
    /// write).
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Public, Error> {
        let mut r = Reader::new("TPM2B_PUBLIC", bytes);
        let inner = r.tpm2b("publicArea", usize::from(u16::MAX))?;
        r.finish()?;
        Public::from_bytes(inner)
    }

    /// The TPMT_PUBLIC bytes as received: what the name is computed over.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// nameAlg.
    pub fn name_alg(&self) -> HashAlg {
        self.name_alg
    }
    /// objectAttributes.
    pub fn object_attributes(&self) -> ObjectAttributes {
        self.object_attributes
    }
    /// authPolicy (empty when none).
    pub fn auth_policy(&self) -> &[u8] {
        &self.auth_policy
    }
    /// The key's parameters and public part.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }
    /// The key's scheme, if it names one.
    pub fn scheme(&self) -> Option<Scheme> {
        match &self.key {
            PublicKey::Rsa(k) => k.scheme,
            PublicKey::Ecc(k) => k.scheme,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// A TPMS_ATTEST quote of sha256:0,1,2 with extraData "abc".
    fn quote_bytes() -> Vec<u8> {
        let mut b = TPM_GENERATED_VALUE.to_be_bytes().to_vec();
        b.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        b.extend_from_slice(&[0, 2, 0xAA, 0xBB]); // qualifiedSigner
        b.extend_from_slice(&[0, 3, b'a', b'b', b'c']); // extraData
        b.extend_from_slice(&7u64.to_be_bytes()); // clock
        b.extend_from_slice(&1u32.to_be_bytes()); // resetCount
        b.extend_from_slice(&2u32.to_be_bytes()); // restartCount
        b.push(1); // safe
        b.extend_from_slice(&9u64.to_be_bytes()); // firmwareVersion
        b.extend_from_slice(&1u32.to_be_bytes()); // count
        b.extend_from_slice(&[0x00, 0x0B, 3, 0b0000_0111, 0, 0]);
        b.extend_from_slice(&[0, 32]);
        b.extend_from_slice(&[0x5A; 32]);
        b
    }

    #[test]
    fn parses_a_quote_and_keeps_its_bytes() {
        let b = quote_bytes();
        let a = Attest::from_bytes(&b).unwrap();
        assert_eq!(a.as_bytes(), &b[..]);
        assert_eq!(a.extra_data(), b"abc");
        assert_eq!(a.qualified_signer(), &[0xAA, 0xBB]);
        assert_eq!(
            a.clock_info(),
            ClockInfo {
                clock: 7,
                reset_count: 1,
                restart_count: 2,
                safe: true
            }
        );
        assert_eq!(a.firmware_version(), 9);
        let q = a.quote().unwrap();
        assert_eq!(
            q.selected().collect::<Vec<_>>(),
            [
                (HashAlg::Sha256, 0),
                (HashAlg::Sha256, 1),
                (HashAlg::Sha256, 2)
            ]
        );
        assert_eq!(q.pcr_digest, [0x5A; 32]);
        assert_eq!(q.pcr_select[0].to_bytes(), [0x00, 0x0B, 3, 7, 0, 0]);
        // The TPM2B form is the same with a size in front.
        let mut sized = u16::try_from(b.len()).unwrap().to_be_bytes().to_vec();
        sized.extend_from_slice(&b);
        assert_eq!(Attest::from_tpm2b(&sized).unwrap(), a);
    }

    #[test]
    fn refuses_malformed_attestations_naming_the_field() {
        type Mutation = fn(&mut Vec<u8>);
        let cases: [(&str, Mutation, &str); 8] = [
            ("magic", |b| b[0] ^= 1, "not TPM_GENERATED_VALUE"),
            ("type", |b| b[5] = 0x99, "not a TPMI_ST_ATTEST"),
            ("nv type", |b| b[5] = 0x14, "not supported"),
            ("safe", |b| b[31] = 2, "TPMI_YES_NO"),
            (
                "bank",
                |b| b[45] = 0x12,
                "unsupported hash algorithm 0x0012",
            ),
            ("sizeofSelect", |b| b[46] = 5, "sizeofSelect 5 exceeds 4"),
            ("trailing", |b| b.push(0), "1 trailing bytes"),
            (
                "truncated",
                |b| {
                    b.pop();
                },
                "pcrDigest: needs 32 bytes, 31 left",
            ),
        ];
        for (name, mutate, want) in cases {
            let mut b = quote_bytes();
            mutate(&mut b);
            let e = Attest::from_bytes(&b).unwrap_err().to_string();
            assert!(e.contains(want), "{name}: {e}");
        }
        // A bank listed twice.
        let mut b = quote_bytes();
        b[43] = 2;
        let digest = b.split_off(50);
        b.extend_from_slice(&[0x00, 0x0B, 3, 1, 0, 0]);
        b.extend_from_slice(&digest);
        let e = Attest::from_bytes(&b).unwrap_err().to_string();
        assert!(e.contains("bank sha256 selected twice"), "{e}");
    }

    #[test]
    fn signature_round_trips_and_null_is_refused() {
        let sigs = [
            Signature::RsaSsa {
                hash: HashAlg::Sha1,
                sig: vec![1; 256],
            },
            Signature::RsaPss {
                hash: HashAlg::Sha384,
                sig: vec![2; 384],
            },
            Signature::Ecdsa {
                hash: HashAlg::Sha256,
                r: vec![3; 31],
                s: vec![4; 32],
            },
        ];
        for sig in sigs {
            let b = sig.to_bytes().unwrap();
            assert_eq!(Signature::from_bytes(&b).unwrap(), sig);
            let mut long = b.clone();
            long.push(0);
            assert!(Signature::from_bytes(&long).is_err());
        }
        let e = Signature::from_bytes(&[0x00, 0x10])
            .unwrap_err()
            .to_string();
        assert!(e.contains("TPM_ALG_NULL"), "{e}");
        let e = Signature::from_bytes(&[0x00, 0x05, 0, 0x0B])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn pcr_selection_bitmaps() {
        let s = PcrSelection::new(HashAlg::Sha1, &[0, 7, 8, 23]).unwrap();
        assert_eq!(s.bitmap(), &[0x81, 0x01, 0x80]);
        assert_eq!(s.pcrs().collect::<Vec<_>>(), [0, 7, 8, 23]);
        assert!(s.contains(23) && !s.contains(22) && !s.contains(1000));
        assert_eq!(
            PcrSelection::new(HashAlg::Sha1, &[31])
                .unwrap()
                .bitmap()
                .len(),
            4
        );
        assert!(PcrSelection::new(HashAlg::Sha1, &[32]).is_none());
    }

    #[test]
    fn attributes_display_like_tpm2_tools() {
        let a = ObjectAttributes(0x0005_0072);
        assert_eq!(
            a.to_string(),
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
        );
        assert!(a.restricted() && a.sign() && !a.decrypt());
    }
}
