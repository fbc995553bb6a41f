//! The simulated AMD certificate chain: ARK -> ASK (or ASVK) -> VCEK (or VLEK).
//!
//! Every certificate is shaped like AMD's, down to the encodings a strict
//! parser would notice; the real certificates it copies are AMD's KDS chains
//! (`../shared/vectors/snp/amd-anchors`) and VCEKs/VLEKs from Oak and Trustee
//! (`../shared/vectors/snp/{project-oak,trustee}`). Only the names say
//! otherwise: the CA common names carry a `SIM-` prefix and the CRL and CSP
//! names point under `.invalid` (RFC 2606), so a simulated certificate cannot
//! be mistaken for AMD's in a log, and no verifier fetches anything for it.
//!
//! The ARK, ASK and ASVK certificates are fixed files under `keys/`, signed
//! once by `keys/gen.sh` from the fixed test keys next to them: RSASSA-PSS
//! signatures are randomised, so certificates built at run time would get a
//! new fingerprint every time, and a policy could not pin the simulated root.
//! Only the VEK (VCEK or VLEK) is built here at run time, with a fresh P-384
//! key, for the TCB and chip the caller asks for.

use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};

use super::der;
use crate::Error;
use crate::snp::{Product, TcbVersion};

/// Which versioned endorsement key (VEK) signs the simulated reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VekKind {
    /// Versioned Chip Endorsement Key: one per chip and TCB, certified by the
    /// ASK (`SEV-<Product>`).
    Vcek,
    /// Versioned Loaded Endorsement Key: one per cloud provider and TCB,
    /// certified by the ASVK (`SEV-VLEK-<Product>`).
    Vlek,
}

/// What the simulated VEK certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainParams {
    /// The EPYC generation; picks the CA certificates and the VEK layout.
    pub product: Product,
    /// VCEK or VLEK.
    pub kind: VekKind,
    /// The TCB the VEK is issued for (the report's REPORTED_TCB). `fmc` is
    /// used on Turin only, where a missing value encodes as zero.
    pub tcb: TcbVersion,
    /// CHIP_ID. A VCEK carries its first `product.hw_id_len()` bytes; a VLEK
    /// carries none.
    pub hw_id: [u8; 64],
    /// Start of the VEK's validity, in seconds since the Unix epoch.
    pub not_before: i64,
    /// End of the VEK's validity, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// The `cspId` a simulated VLEK names as its cloud provider, in the
/// `CN=<host>` form AMD uses (AWS's VLEKs say `CN=cc-us-east-2.amazonaws.com`).
pub const SIM_CSP_ID: &str = "CN=sim.provenix.invalid";

/// Start of the simulated ARK, ASK and ASVK validity: 2020-01-01T00:00:00Z.
pub const SIM_CA_NOT_BEFORE: i64 = 1_577_836_800;

/// End of the simulated ARK, ASK and ASVK validity: 2049-12-31T23:59:59Z, the
/// last second UTCTime can express, as AMD's CA certificates use UTCTime.
pub const SIM_CA_NOT_AFTER: i64 = 2_524_607_999;

/// A simulated SNP platform's chain and its VEK signing key.
#[derive(Debug)]
pub struct SimChain {
    params: ChainParams,
    ark: &'static [u8],
    ask: &'static [u8],
    vek: Vec<u8>,
    vek_key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SimChain {
    /// Generate a fresh VEK key and certify it with the product's simulated
    /// ASK (VCEK) or ASVK (VLEK). The ARK and ASK/ASVK are the fixed ones of
    /// [`ark_der`] and [`ask_der`].
    pub fn generate(params: &ChainParams) -> Result<SimChain, Error> {
        if params.not_before > params.not_after {
            return Err(Error::Sim(format!(
                "VEK validity ends ({}) before it starts ({})",
                params.not_after, params.not_before
            )));
        }
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)
            .map_err(|e| Error::Sim(format!("generating the VEK key: {e}")))?;
        let vek_key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|e| Error::Sim(format!("loading the VEK key: {e}")))?;

        let role = CaRole::issuer_of(params.kind);
        let signer = RsaKeyPair::from_pkcs8(ca_set(params.product).key(role)?)
            .map_err(|e| Error::Sim(format!("loading the simulated {role:?} key: {e}")))?;
        let tbs = vek_tbs(params, vek_key.public_key().as_ref())?;
        // AMD's KDS has issued VEKs without the PSS trailerField since
        // about 2024 (see `rsassa_pss_sha384`).
        let vek = sign_certificate(tbs, &signer, &rsassa_pss_sha384(false)?, &rng)?;

        Ok(SimChain {
            params: params.clone(),
            ark: ark_der(params.product),
            ask: ask_der(params.product, params.kind),
            vek,
            vek_key,
            rng,
        })
    }

    /// The simulated ARK certificate (DER), self-signed.
    pub fn ark_der(&self) -> &[u8] {
        self.ark
    }

    /// The simulated ASK certificate (DER), or the ASVK for a VLEK chain.
    pub fn ask_der(&self) -> &[u8] {
        self.ask
    }

    /// The VCEK or VLEK certificate (DER).
    pub fn vek_der(&self) -> &[u8] {
        &self.vek
    }

    /// The VEK public key: an uncompressed P-384 point, `04 || X || Y`.
    pub fn vek_public_key(&self) -> &[u8] {
        self.vek_key.public_key().as_ref()
    }

    /// Sign `signed_bytes` (a report's signed range) with the VEK: ECDSA
    /// P-384 with SHA-384. Returns `r || s`, each 48 bytes big-endian; the
    /// report stores them little-endian in 72-byte fields (ABI spec Table
    /// 142, "ECDSA Signature Format"), which is the caller's conversion.
    pub fn sign_report(&self, signed_bytes: &[u8]) -> Result<[u8; 96], Error> {
        let sig = self
            .vek_key
            .sign(&self.rng, signed_bytes)
            .map_err(|e| Error::Sim(format!("signing the report: {e}")))?;
        <[u8; 96]>::try_from(sig.as_ref()).map_err(|_| {
            Error::Sim(format!(
                "ECDSA P-384 signature is {} bytes, expected 96",
                sig.as_ref().len()
            ))
        })
    }

    /// The parameters the chain was generated with.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }
}

/// The simulated ARK certificate of `product` (DER): fixed bytes, so its
/// fingerprint can be pinned (see [`sim_ark_fingerprints`]).
pub fn ark_der(product: Product) -> &'static [u8] {
    ca_set(product).cert(CaRole::Ark)
}

/// The simulated ASK (for [`VekKind::Vcek`]) or ASVK (for
/// [`VekKind::Vlek`]) certificate of `product` (DER): fixed bytes.
pub fn ask_der(product: Product, kind: VekKind) -> &'static [u8] {
    ca_set(product).cert(CaRole::issuer_of(kind))
}

/// SHA-256 of the simulated ARK certificate of `product`.
pub fn ark_fingerprint(product: Product) -> [u8; 32] {
    let hash = digest::digest(&digest::SHA256, ark_der(product));
    let mut out = [0; 32];
    for (o, b) in out.iter_mut().zip(hash.as_ref()) {
        *o = *b;
    }
    out
}

/// SHA-256 fingerprints of the simulated ARKs, the values a policy names to
/// accept simulated evidence. They change only when `keys/gen.sh` is run.
pub fn sim_ark_fingerprints() -> [(Product, [u8; 32]); 3] {
    Product::ALL.map(|p| (p, ark_fingerprint(p)))
}

/// A CRL for `product`'s `kind` chain, signed by the simulated ARK as AMD's
/// KDS CRLs (`/{vcek|vlek}/v1/{product}/crl`) are. `revoke_intermediate`
/// lists the ASK (for [`VekKind::Vcek`]) or ASVK (for [`VekKind::Vlek`]) as
/// revoked. Times are unix seconds; RFC 5280 section 5.1.
pub fn crl(
    product: Product,
    kind: VekKind,
    revoke_intermediate: bool,
    this_update: i64,
    next_update: i64,
) -> Result<Vec<u8>, Error> {
    let rng = SystemRandom::new();
    let set = ca_set(product);
    let key = RsaKeyPair::from_pkcs8(set.key(CaRole::Ark)?)
        .map_err(|e| Error::Sim(format!("simulated ARK key: {e}")))?;
    let algorithm = rsassa_pss_sha384(true)?;
    let mut tbs = vec![
        der::uint(1), // v2, as AMD's CRLs are
        algorithm.clone(),
        amd_name(&CaRole::Ark.common_name(product))?,
        der::time(this_update)?,
        der::time(next_update)?,
    ];
    if revoke_intermediate {
        let serial = ca_serial(product, CaRole::issuer_of(kind));
        tbs.push(der::sequence([der::sequence([
            der::uint(serial),
            der::time(this_update)?,
        ])]));
    }
    sign_certificate(der::sequence(tbs), &key, &algorithm, &rng)
}

// ---------------------------------------------------------------------------
// The committed CA material.

/// A certificate authority in AMD's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CaRole {
    /// AMD Root Key, self-signed.
    Ark,
    /// AMD SEV Key, signs VCEKs.
    Ask,
    /// AMD SEV VLEK Key, signs VLEKs.
    Asvk,
}

impl CaRole {
    fn issuer_of(kind: VekKind) -> Self {
        match kind {
            VekKind::Vcek => CaRole::Ask,
            VekKind::Vlek => CaRole::Asvk,
        }
    }

    /// AMD's common names (`ARK-Milan`, `SEV-Milan`, `SEV-VLEK-Milan`) with
    /// the simulator's `SIM-` prefix.
    fn common_name(self, product: Product) -> String {
        let name = product.name();
        match self {
            CaRole::Ark => format!("SIM-ARK-{name}"),
            CaRole::Ask => format!("SIM-SEV-{name}"),
            CaRole::Asvk => format!("SIM-SEV-VLEK-{name}"),
        }
    }
}

/// One product's committed certificates and the private keys the simulator
/// signs VEKs with (`keys/<product>/`, see `keys/README.md`). The ARK keys
/// are only needed to re-sign the CA certificates, so they are not embedded.
struct CaSet {
    ark: &'static [u8],
    ask: &'static [u8],
    asvk: &'static [u8],
    ark_key: &'static [u8],
    ask_key: &'static [u8],
    asvk_key: &'static [u8],
}

macro_rules! ca_set {
    ($dir:literal) => {
        CaSet {
            ark: include_bytes!(concat!("keys/", $dir, "/ark.der")),
            ask: include_bytes!(concat!("keys/", $dir, "/ask.der")),
            asvk: include_bytes!(concat!("keys/", $dir, "/asvk.der")),
            ark_key: include_bytes!(concat!("keys/", $dir, "/ark.pk8")),
            ask_key: include_bytes!(concat!("keys/", $dir, "/ask.pk8")),
            asvk_key: include_bytes!(concat!("keys/", $dir, "/asvk.pk8")),
        }
    };
}

static MILAN: CaSet = ca_set!("milan");
static GENOA: CaSet = ca_set!("genoa");
static TURIN: CaSet = ca_set!("turin");

fn ca_set(product: Product) -> &'static CaSet {
    match product {
        Product::Milan => &MILAN,
        Product::Genoa => &GENOA,
        Product::Turin => &TURIN,
    }
}

impl CaSet {
    fn cert(&self, role: CaRole) -> &'static [u8] {
        match role {
            CaRole::Ark => self.ark,
            CaRole::Ask => self.ask,
            CaRole::Asvk => self.asvk,
        }
    }

    /// The signing key of a CA (PKCS#8 DER). The ARK's signs CRLs, as AMD's
    /// does for its KDS CRLs.
    fn key(&self, role: CaRole) -> Result<&'static [u8], Error> {
        match role {
            CaRole::Ark => Ok(self.ark_key),
            CaRole::Ask => Ok(self.ask_key),
            CaRole::Asvk => Ok(self.asvk_key),
        }
    }
}

// ---------------------------------------------------------------------------
// Object identifiers.

/// rsaEncryption, RFC 8017 Appendix C.
#[cfg(test)]
const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113_549, 1, 1, 1];
/// id-RSASSA-PSS, RFC 4055 §3.1.
const RSASSA_PSS: &[u64] = &[1, 2, 840, 113_549, 1, 1, 10];
/// id-mgf1, RFC 4055 §2.1.
const MGF1: &[u64] = &[1, 2, 840, 113_549, 1, 1, 8];
/// id-sha384, RFC 4055 §2.1.
const SHA384: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
/// id-ecPublicKey, RFC 5480 §2.1.1.
const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10_045, 2, 1];
/// secp384r1, RFC 5480 §2.1.1.1.
const SECP384R1: &[u64] = &[1, 3, 132, 0, 34];

/// id-at-* attribute types, X.520 via RFC 5280 Appendix A.1.
const AT_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const AT_COUNTRY: &[u64] = &[2, 5, 4, 6];
const AT_LOCALITY: &[u64] = &[2, 5, 4, 7];
const AT_STATE: &[u64] = &[2, 5, 4, 8];
const AT_ORGANIZATION: &[u64] = &[2, 5, 4, 10];
const AT_ORGANIZATIONAL_UNIT: &[u64] = &[2, 5, 4, 11];

/// AMD's VEK extensions live under its IANA private enterprise number 3704:
/// 1.3.6.1.4.1.3704.1.x (AMD publication 57230, "Versioned Chip Endorsement
/// Key (VCEK) Certificate and KDS Interface Specification").
const AMD_VEK_ARC: &[u64] = &[1, 3, 6, 1, 4, 1, 3704, 1];
/// `.1` structVersion, INTEGER.
const AMD_STRUCT_VERSION: &[u64] = &[1];
/// `.2` productName, IA5String.
const AMD_PRODUCT_NAME: &[u64] = &[2];
/// `.3.n` SPLs, INTEGER: 1 boot loader, 2 TEE, 3 SNP, 4-7 reserved,
/// 8 microcode, 9 FMC (Turin).
const AMD_SPL: u64 = 3;
/// `.4` hwID: the first bytes of CHIP_ID, raw (not DER-wrapped).
const AMD_HW_ID: &[u64] = &[4];
/// `.5` cspId, IA5String: the cloud provider a VLEK was issued to.
const AMD_CSP_ID: &[u64] = &[5];

fn amd_oid(tail: &[u64]) -> Result<Vec<u8>, Error> {
    let arcs: Vec<u64> = AMD_VEK_ARC.iter().chain(tail).copied().collect();
    der::oid(&arcs)
}

// ---------------------------------------------------------------------------
// Certificate pieces shared by the CA certificates and the VEK.

/// X.509 v3: `version [0] EXPLICIT INTEGER 2` (RFC 5280 §4.1.2.1).
fn version_v3() -> Result<Vec<u8>, Error> {
    der::explicit(0, &der::uint(2))
}

/// AMD's distinguished name, attribute by attribute in AMD's order
/// (`OU, C, L, ST, O, CN`): UTF8String everywhere except the country, which
/// RFC 5280 Appendix A.1 makes a PrintableString.
fn amd_name(common_name: &str) -> Result<Vec<u8>, Error> {
    let rdn = |attribute: &[u64], value: Vec<u8>| -> Result<Vec<u8>, Error> {
        Ok(der::set([der::sequence([der::oid(attribute)?, value])]))
    };
    Ok(der::sequence([
        rdn(AT_ORGANIZATIONAL_UNIT, der::utf8_string("Engineering"))?,
        rdn(AT_COUNTRY, der::printable_string("US")?)?,
        rdn(AT_LOCALITY, der::utf8_string("Santa Clara"))?,
        rdn(AT_STATE, der::utf8_string("CA"))?,
        rdn(AT_ORGANIZATION, der::utf8_string("Advanced Micro Devices"))?,
        rdn(AT_COMMON_NAME, der::utf8_string(common_name))?,
    ]))
}

/// The RSASSA-PSS AlgorithmIdentifier AMD signs with: SHA-384, MGF1 with
/// SHA-384, salt length 48 (the SHA-384 output length, which is also the
/// salt ring's `RSA_PSS_SHA384` uses), with every parameter written out
/// (RFC 4055 §3.1), including the DEFAULT SHA-1 overrides' NULL parameters.
///
/// `trailer` adds `trailerField [3] INTEGER 1`. That is the DEFAULT value,
/// which DER says to omit (X.690 §11.5), yet AMD's ARK, ASK and ASVK
/// certificates all carry it, as did VCEKs issued until about 2023; VCEKs
/// and VLEKs issued since omit it.
fn rsassa_pss_sha384(trailer: bool) -> Result<Vec<u8>, Error> {
    let sha384 = der::sequence([der::oid(SHA384)?, der::null()]);
    let mut params = vec![
        der::explicit(0, &sha384)?,
        der::explicit(1, &der::sequence([der::oid(MGF1)?, sha384.clone()]))?,
        // RFC 4055 §3.1 saltLength; 48 = SHA-384's output length.
        der::explicit(2, &der::uint(48))?,
    ];
    if trailer {
        // RFC 4055 §3.1 trailerField: 1 means the 0xBC trailer.
        params.push(der::explicit(3, &der::uint(1))?);
    }
    Ok(der::sequence([
        der::oid(RSASSA_PSS)?,
        der::sequence(params),
    ]))
}

/// `Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE,
/// extnValue OCTET STRING }` (RFC 5280 §4.1); `critical` is only written
/// when true, as DER requires.
fn extension(id: Vec<u8>, critical: bool, value: &[u8]) -> Vec<u8> {
    let mut parts = vec![id];
    if critical {
        parts.push(der::boolean(true));
    }
    parts.push(der::octet_string(value));
    der::sequence(parts)
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm,
/// signatureValue }` (RFC 5280 §4.1.1), signed with RSASSA-PSS SHA-384.
fn sign_certificate(
    tbs: Vec<u8>,
    key: &RsaKeyPair,
    algorithm: &[u8],
    rng: &SystemRandom,
) -> Result<Vec<u8>, Error> {
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(&signature::RSA_PSS_SHA384, rng, &tbs, &mut sig)
        .map_err(|e| Error::Sim(format!("RSASSA-PSS signing: {e}")))?;
    Ok(der::sequence([
        tbs,
        algorithm.to_vec(),
        der::bit_string(&sig),
    ]))
}

// ---------------------------------------------------------------------------
// The VEK.

/// AMD's `productName` in a VEK. Milan VCEKs name the stepping
/// (`Milan-B0`), Genoa and Turin VCEKs and every VLEK seen do not
/// (`Genoa`, `Turin`; AWS's Milan VLEK says `Milan`).
fn product_name(product: Product, kind: VekKind) -> &'static str {
    match (product, kind) {
        (Product::Milan, VekKind::Vcek) => "Milan-B0",
        (product, _) => product.name(),
    }
}

/// AMD's `structVersion`: 1 since Turin, whose VEKs add the FMC SPL and
/// shorten hwID; 0 before (as seen in real VCEKs and VLEKs).
fn struct_version(product: Product) -> u64 {
    if product.has_fmc() { 1 } else { 0 }
}

/// The SPL extensions in AMD's order, as `(n, value)` for OID `.3.n`.
///
/// Milan and Genoa list boot loader, TEE, the reserved 4 to 7, then SNP and
/// microcode. Turin lists FMC first, then the rest in numeric order, and
/// drops reserved SPL 4 (its slot in Turin's TCB_VERSION holds the SNP SPL).
fn spls(product: Product, tcb: &TcbVersion) -> Vec<(u64, u8)> {
    if product.has_fmc() {
        vec![
            (9, tcb.fmc.unwrap_or(0)),
            (1, tcb.bootloader),
            (2, tcb.tee),
            (3, tcb.snp),
            (5, 0),
            (6, 0),
            (7, 0),
            (8, tcb.microcode),
        ]
    } else {
        vec![
            (1, tcb.bootloader),
            (2, tcb.tee),
            (4, 0),
            (5, 0),
            (6, 0),
            (7, 0),
            (3, tcb.snp),
            (8, tcb.microcode),
        ]
    }
}

/// The VEK's extensions, none critical, in AMD's order: structVersion,
/// productName, the SPLs, then hwID (VCEK) or cspId (VLEK). Values are DER
/// inside the extnValue OCTET STRING, except hwID, which is the raw bytes.
fn vek_extensions(params: &ChainParams) -> Result<Vec<Vec<u8>>, Error> {
    let product = params.product;
    let mut out = vec![
        extension(
            amd_oid(AMD_STRUCT_VERSION)?,
            false,
            &der::uint(struct_version(product)),
        ),
        extension(
            amd_oid(AMD_PRODUCT_NAME)?,
            false,
            &der::ia5_string(product_name(product, params.kind))?,
        ),
    ];
    for (n, value) in spls(product, &params.tcb) {
        out.push(extension(
            amd_oid(&[AMD_SPL, n])?,
            false,
            &der::uint(u64::from(value)),
        ));
    }
    match params.kind {
        VekKind::Vcek => {
            let hw_id = params
                .hw_id
                .get(..product.hw_id_len())
                .ok_or_else(|| Error::Sim(format!("no hwID length for {product}")))?;
            out.push(extension(amd_oid(AMD_HW_ID)?, false, hw_id));
        }
        VekKind::Vlek => {
            out.push(extension(
                amd_oid(AMD_CSP_ID)?,
                false,
                &der::ia5_string(SIM_CSP_ID)?,
            ));
        }
    }
    Ok(out)
}

/// The VEK's TBSCertificate. Like AMD's: serial number 0, issuer the
/// ASK/ASVK's subject, subject `CN=SEV-VCEK` or `CN=SEV-VLEK` in AMD's name,
/// an EC P-384 key, and no X.509 extensions besides AMD's own (no key
/// usage, basic constraints or key identifiers).
fn vek_tbs(params: &ChainParams, public_key: &[u8]) -> Result<Vec<u8>, Error> {
    let issuer = CaRole::issuer_of(params.kind).common_name(params.product);
    let subject = match params.kind {
        VekKind::Vcek => "SEV-VCEK",
        VekKind::Vlek => "SEV-VLEK",
    };
    let spki = der::sequence([
        der::sequence([der::oid(EC_PUBLIC_KEY)?, der::oid(SECP384R1)?]),
        der::bit_string(public_key),
    ]);
    Ok(der::sequence([
        version_v3()?,
        // AMD's VEKs all have serial number 0.
        der::uint(0),
        rsassa_pss_sha384(false)?,
        amd_name(&issuer)?,
        der::sequence([der::time(params.not_before)?, der::time(params.not_after)?]),
        amd_name(subject)?,
        spki,
        der::explicit(3, &der::sequence(vek_extensions(params)?))?,
    ]))
}

// ---------------------------------------------------------------------------
// The CA certificates' profile: used by `keys/gen.sh` (through the ignored
// test `regenerate_ca_certificates`) to build them, and by the tests to check
// that the committed files still match it.

/// Where the simulated KDS would be: never resolvable (RFC 2606 `.invalid`).
#[cfg(test)]
const SIM_KDS_HOST: &str = "kdsintf.sim.provenix.invalid";

/// id-ce-* extensions, RFC 5280 §4.2.1.
#[cfg(test)]
const CE_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
#[cfg(test)]
const CE_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
#[cfg(test)]
const CE_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
#[cfg(test)]
const CE_CRL_DISTRIBUTION_POINTS: &[u64] = &[2, 5, 29, 31];
#[cfg(test)]
const CE_AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];

/// Serial numbers in AMD's scheme: `0xPP0000` for the ARK, `0xPP0001` for the
/// ASK, `0xPP0101` for the ASVK, with PP = 1 Milan, 2 Genoa, 3 Turin.
fn ca_serial(product: Product, role: CaRole) -> u64 {
    let pp = match product {
        Product::Milan => 0x01_0000,
        Product::Genoa => 0x02_0000,
        Product::Turin => 0x03_0000,
    };
    pp + match role {
        CaRole::Ark => 0x0000,
        CaRole::Ask => 0x0001,
        CaRole::Asvk => 0x0101,
    }
}

/// SHA-1 of the RSAPublicKey, RFC 5280 §4.2.1.2 method (1), as AMD's key
/// identifiers are.
#[cfg(test)]
fn key_identifier(rsa_public_key: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, rsa_public_key)
        .as_ref()
        .to_vec()
}

/// The TBSCertificate of a simulated CA certificate. `subject_key` and
/// `ark_key` are RSAPublicKey DER (RFC 8017 Appendix A.1.1).
///
/// AMD's extensions, in AMD's order and with AMD's encodings:
/// - ARK: key usage (critical; keyCertSign, cRLSign), subject key id, basic
///   constraints (critical; CA), CRL distribution point.
/// - ASK/ASVK: subject key id, authority key id (key id only), basic
///   constraints (critical; CA, path length 0), key usage (critical;
///   keyCertSign), CRL distribution point.
#[cfg(test)]
fn ca_tbs(
    product: Product,
    role: CaRole,
    subject_key: &[u8],
    ark_key: &[u8],
) -> Result<Vec<u8>, Error> {
    let crl_kind = match role {
        CaRole::Ark | CaRole::Ask => "vcek",
        CaRole::Asvk => "vlek",
    };
    // AMD's KDS path: /{vcek|vlek}/v1/{Product}/crl.
    let crl_url = format!(
        "https://{SIM_KDS_HOST}/{crl_kind}/v1/{}/crl",
        product.name()
    );
    // CRLDistributionPoints: one DistributionPoint whose distributionPoint
    // [0] is a fullName [0] holding a uniformResourceIdentifier [6]
    // (RFC 5280 §4.2.1.13).
    let crl_dp = der::sequence([der::sequence([der::explicit(
        0,
        &der::explicit(0, &der::implicit_primitive(6, crl_url.as_bytes())?)?,
    )?])]);
    let ski = der::octet_string(&key_identifier(subject_key));
    // KeyUsage bits (RFC 5280 §4.2.1.3): keyCertSign is bit 5 (0x04),
    // cRLSign bit 6 (0x02). AMD writes both with one unused bit; for the
    // ASK's lone keyCertSign DER would say two (X.690 §11.2.2).
    let extensions = match role {
        CaRole::Ark => vec![
            extension(
                der::oid(CE_KEY_USAGE)?,
                true,
                &der::bit_string_with_unused(1, &[0x06]),
            ),
            extension(der::oid(CE_SUBJECT_KEY_ID)?, false, &ski),
            extension(
                der::oid(CE_BASIC_CONSTRAINTS)?,
                true,
                &der::sequence([der::boolean(true)]),
            ),
            extension(der::oid(CE_CRL_DISTRIBUTION_POINTS)?, false, &crl_dp),
        ],
        CaRole::Ask | CaRole::Asvk => vec![
            extension(der::oid(CE_SUBJECT_KEY_ID)?, false, &ski),
            extension(
                der::oid(CE_AUTHORITY_KEY_ID)?,
                false,
                // AuthorityKeyIdentifier keyIdentifier [0] (RFC 5280 §4.2.1.1).
                &der::sequence([der::implicit_primitive(0, &key_identifier(ark_key))?]),
            ),
            extension(
                der::oid(CE_BASIC_CONSTRAINTS)?,
                true,
                &der::sequence([der::boolean(true), der::uint(0)]),
            ),
            extension(
                der::oid(CE_KEY_USAGE)?,
                true,
                &der::bit_string_with_unused(1, &[0x04]),
            ),
            extension(der::oid(CE_CRL_DISTRIBUTION_POINTS)?, false, &crl_dp),
        ],
    };
    let spki = der::sequence([
        der::sequence([der::oid(RSA_ENCRYPTION)?, der::null()]),
        der::bit_string(subject_key),
    ]);
    Ok(der::sequence([
        version_v3()?,
        der::uint(ca_serial(product, role)),
        rsassa_pss_sha384(true)?,
        amd_name(&CaRole::Ark.common_name(product))?,
        der::sequence([der::time(SIM_CA_NOT_BEFORE)?, der::time(SIM_CA_NOT_AFTER)?]),
        amd_name(&role.common_name(product))?,
        spki,
        der::explicit(3, &der::sequence(extensions))?,
    ]))
}

#[cfg(test)]
mod tests {
    // A panic is how a test reports failure.
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )]

    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;

    // -- pinned values --

    /// 2025-01-01T00:00:00Z and 2032-01-01T00:00:00Z: seven years, like the
    /// real VCEKs' validity.
    const VEK_NOT_BEFORE: i64 = 1_735_689_600;
    const VEK_NOT_AFTER: i64 = 1_956_528_000;
    /// 2025-06-15T15:06:40Z: the time the chains are verified at.
    const VERIFY_AT: i64 = 1_750_000_000;

    /// SHA-256 of `keys/<product>/ark.der`, also listed in keys/README.md.
    /// They change only when keys/gen.sh is run.
    const PINNED_ARK_FINGERPRINTS: [(Product, &str); 3] = [
        (
            Product::Milan,
            "99c836ac31df401111b01372a7a689ff08daa43b8d0809b8e6be88fa71fdacd9",
        ),
        (
            Product::Genoa,
            "ed9575f73a57d201298c9303cbda7e0c50da32b1b9005fbf6f0a03111b604a71",
        ),
        (
            Product::Turin,
            "adcb60b5d18fd13e0d1422207d9e6ae82e8fc097b7ea0eda6a358883bdd87764",
        ),
    ];

    /// AMD's RSASSA-PSS AlgorithmIdentifiers, byte for byte: from ARK-Milan
    /// (`amd-anchors/ask_ark_milan.pem`, DER offset 18, with trailerField)
    /// and from Oak's Milan VCEK (`project-oak/milan_vcek.der`, offset 16,
    /// without).
    const AMD_PSS_WITH_TRAILER: &str = "304606092a864886f70d01010a3039a00f300d06096086480165030402020500a11c301a06092a864886f70d010108300d06096086480165030402020500a203020130a303020101";
    const AMD_PSS_WITHOUT_TRAILER: &str = "304106092a864886f70d01010a3034a00f300d06096086480165030402020500a11c301a06092a864886f70d010108300d06096086480165030402020500a203020130";

    fn params(product: Product, kind: VekKind) -> ChainParams {
        let mut hw_id = [0; 64];
        for (i, b) in hw_id.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap().wrapping_mul(37).wrapping_add(11);
        }
        ChainParams {
            product,
            kind,
            tcb: TcbVersion {
                fmc: product.has_fmc().then_some(3),
                bootloader: 4,
                tee: 1,
                snp: 24,
                // 0xDB needs a two-byte INTEGER, as in Oak's Milan VCEK.
                microcode: 219,
            },
            hw_id,
            not_before: VEK_NOT_BEFORE,
            not_after: VEK_NOT_AFTER,
        }
    }

    fn all_params() -> Vec<ChainParams> {
        Product::ALL
            .into_iter()
            .flat_map(|p| [params(p, VekKind::Vcek), params(p, VekKind::Vlek)])
            .collect()
    }

    // -- a minimal DER reader --

    /// One TLV: its tag, its content, all of its bytes, and what follows it.
    struct Tlv<'a> {
        tag: u8,
        content: &'a [u8],
        whole: &'a [u8],
    }

    fn read(input: &[u8]) -> (Tlv<'_>, &[u8]) {
        let tag = input[0];
        let first = input[1];
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let count = usize::from(first & 0x7F);
            let len = input[2..2 + count]
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
            (len, 2 + count)
        };
        let end = header + len;
        let tlv = Tlv {
            tag,
            content: &input[header..end],
            whole: &input[..end],
        };
        (tlv, &input[end..])
    }

    fn read_all(input: &[u8]) -> Tlv<'_> {
        let (tlv, rest) = read(input);
        assert!(rest.is_empty(), "{} trailing bytes", rest.len());
        tlv
    }

    fn children(content: &[u8]) -> Vec<Tlv<'_>> {
        let mut out = Vec::new();
        let mut rest = content;
        while !rest.is_empty() {
            let (tlv, next) = read(rest);
            out.push(tlv);
            rest = next;
        }
        out
    }

    fn uint_value(tlv: &Tlv<'_>) -> u64 {
        assert_eq!(tlv.tag, 0x02);
        assert!(tlv.content.len() <= 8);
        tlv.content
            .iter()
            .fold(0, |acc, &b| acc << 8 | u64::from(b))
    }

    fn oid_text(content: &[u8]) -> String {
        let mut arcs = Vec::new();
        let mut value = 0u64;
        for &b in content {
            value = value << 7 | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (value / 40).min(2);
                    arcs.push(first);
                    arcs.push(value - 40 * first);
                } else {
                    arcs.push(value);
                }
                value = 0;
            }
        }
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// A certificate split into its parts (RFC 5280 §4.1).
    struct Cert<'a> {
        tbs: Tlv<'a>,
        algorithm: Tlv<'a>,
        signature: &'a [u8],
        fields: Vec<Tlv<'a>>,
    }

    impl<'a> Cert<'a> {
        fn parse(der: &'a [u8]) -> Self {
            let cert = read_all(der);
            assert_eq!(cert.tag, 0x30);
            let mut parts = children(cert.content).into_iter();
            let (tbs, algorithm, sig) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            assert!(parts.next().is_none());
            assert_eq!(sig.tag, 0x03);
            assert_eq!(sig.content[0], 0, "unused bits in the signature");
            let fields = children(tbs.content);
            Cert {
                tbs,
                algorithm,
                signature: &sig.content[1..],
                fields,
            }
        }

        fn serial(&self) -> u64 {
            uint_value(&self.fields[1])
        }
        fn issuer(&self) -> &'a [u8] {
            self.fields[3].whole
        }
        fn validity(&self) -> (&'a [u8], &'a [u8]) {
            let times = children(self.fields[4].content);
            (times[0].whole, times[1].whole)
        }
        fn subject(&self) -> &'a [u8] {
            self.fields[5].whole
        }
        /// The subjectPublicKey BIT STRING's bits.
        fn public_key(&self) -> &'a [u8] {
            let spki = children(self.fields[6].content);
            assert_eq!(spki[1].content[0], 0);
            &spki[1].content[1..]
        }
        /// `(dotted OID, critical, extnValue)` in order.
        fn extensions(&self) -> Vec<(String, bool, &'a [u8])> {
            let wrapper = &self.fields[7];
            assert_eq!(wrapper.tag, 0xA3);
            children(read_all(wrapper.content).content)
                .iter()
                .map(|ext| {
                    let parts = children(ext.content);
                    let critical = parts.len() == 3;
                    if critical {
                        assert_eq!(parts[1].whole, [0x01, 0x01, 0xFF]);
                    }
                    let value = parts.last().unwrap();
                    assert_eq!(value.tag, 0x04);
                    (oid_text(parts[0].content), critical, value.content)
                })
                .collect()
        }
    }

    // -- helpers --

    fn keys_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sim/keys")
    }

    fn file_stem(role: CaRole) -> &'static str {
        match role {
            CaRole::Ark => "ark",
            CaRole::Ask => "ask",
            CaRole::Asvk => "asvk",
        }
    }

    fn key_path(product: Product, role: CaRole, ext: &str) -> PathBuf {
        keys_dir()
            .join(product.name().to_ascii_lowercase())
            .join(format!("{}.{ext}", file_stem(role)))
    }

    /// A CA private key, read from disk so that keys/gen.sh sees keys it has
    /// just written.
    fn load_key(product: Product, role: CaRole) -> RsaKeyPair {
        let path = key_path(product, role, "pk8");
        RsaKeyPair::from_pkcs8(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    const ROLES: [CaRole; 3] = [CaRole::Ark, CaRole::Ask, CaRole::Asvk];

    fn verify_pss(issuer_public_key: &[u8], cert: &Cert<'_>) -> bool {
        signature::UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA384, issuer_public_key)
            .verify(cert.tbs.whole, cert.signature)
            .is_ok()
    }

    fn hex(bytes: &[u8]) -> String {
        ::hex::encode(bytes)
    }

    // -- the committed CA certificates --

    /// keys/gen.sh runs this to (re)write the CA certificates.
    #[test]
    #[ignore = "rewrites src/sim/keys/*/*.der; run by keys/gen.sh"]
    fn regenerate_ca_certificates() {
        if std::env::var_os("PROVENIX_SIM_REGEN").is_none() {
            eprintln!("not rewriting: set PROVENIX_SIM_REGEN=1 (keys/gen.sh does)");
            return;
        }
        let rng = SystemRandom::new();
        let algorithm = rsassa_pss_sha384(true).unwrap();
        for product in Product::ALL {
            let ark_key = load_key(product, CaRole::Ark);
            for role in ROLES {
                let key = load_key(product, role);
                let tbs = ca_tbs(
                    product,
                    role,
                    key.public().as_ref(),
                    ark_key.public().as_ref(),
                )
                .unwrap();
                let cert = sign_certificate(tbs, &ark_key, &algorithm, &rng).unwrap();
                std::fs::write(key_path(product, role, "der"), cert).unwrap();
            }
        }
    }

    #[test]
    fn committed_ca_certificates_are_current() {
        let stale = "run firmware/src/sim/keys/gen.sh --certs-only";
        for product in Product::ALL {
            let ark_key = load_key(product, CaRole::Ark);
            for role in ROLES {
                let der = ca_set(product).cert(role);
                assert!(!der.is_empty(), "{product} {role:?} is missing: {stale}");
                let cert = Cert::parse(der);
                let key = load_key(product, role);
                let want = ca_tbs(
                    product,
                    role,
                    key.public().as_ref(),
                    ark_key.public().as_ref(),
                )
                .unwrap();
                assert!(
                    cert.tbs.whole == want,
                    "{product} {role:?} is stale: {stale}"
                );
                assert_eq!(cert.algorithm.whole, rsassa_pss_sha384(true).unwrap());
                assert!(
                    verify_pss(ark_key.public().as_ref(), &cert),
                    "{product} {role:?} is not signed by its ARK"
                );
            }
            // The embedded signing keys are the certified ones.
            for kind in [VekKind::Vcek, VekKind::Vlek] {
                let role = CaRole::issuer_of(kind);
                let embedded = RsaKeyPair::from_pkcs8(ca_set(product).key(role).unwrap()).unwrap();
                let cert = Cert::parse(ask_der(product, kind));
                assert_eq!(cert.public_key(), embedded.public().as_ref());
            }
        }
    }

    #[test]
    fn ca_certificates_use_amds_encodings() {
        assert_eq!(hex(&rsassa_pss_sha384(true).unwrap()), AMD_PSS_WITH_TRAILER);
        assert_eq!(
            hex(&rsassa_pss_sha384(false).unwrap()),
            AMD_PSS_WITHOUT_TRAILER
        );
        for product in Product::ALL {
            let ark = Cert::parse(ark_der(product));
            let ark_exts = ark.extensions();
            let ark_oids: Vec<_> = ark_exts.iter().map(|(o, c, _)| (o.as_str(), *c)).collect();
            assert_eq!(
                ark_oids,
                [
                    ("2.5.29.15", true),
                    ("2.5.29.14", false),
                    ("2.5.29.19", true),
                    ("2.5.29.31", false)
                ]
            );
            // AMD's exact KeyUsage and BasicConstraints values.
            assert_eq!(hex(ark_exts[0].2), "03020106");
            assert_eq!(hex(ark_exts[2].2), "30030101ff");
            assert_eq!(ark.issuer(), ark.subject());
            assert_eq!(ark.serial(), ca_serial(product, CaRole::Ark));

            for kind in [VekKind::Vcek, VekKind::Vlek] {
                let ask = Cert::parse(ask_der(product, kind));
                let exts = ask.extensions();
                let oids: Vec<_> = exts.iter().map(|(o, c, _)| (o.as_str(), *c)).collect();
                assert_eq!(
                    oids,
                    [
                        ("2.5.29.14", false),
                        ("2.5.29.35", false),
                        ("2.5.29.19", true),
                        ("2.5.29.15", true),
                        ("2.5.29.31", false)
                    ]
                );
                assert_eq!(hex(exts[2].2), "30060101ff020100");
                assert_eq!(hex(exts[3].2), "03020104");
                // AKI keyIdentifier = the ARK's SKI.
                assert_eq!(&exts[1].2[4..], &ark_exts[1].2[2..]);
                assert_eq!(ask.issuer(), ark.subject());
                let url = format!(
                    "https://kdsintf.sim.provenix.invalid/{}/v1/{}/crl",
                    if kind == VekKind::Vcek {
                        "vcek"
                    } else {
                        "vlek"
                    },
                    product.name()
                );
                assert!(exts[4].2.ends_with(url.as_bytes()));
            }
        }
    }

    #[test]
    fn ark_fingerprints_are_stable_and_pinned() {
        let first = sim_ark_fingerprints();
        assert_eq!(first, sim_ark_fingerprints());
        let pinned: Vec<_> = PINNED_ARK_FINGERPRINTS
            .iter()
            .map(|&(p, h)| (p, h.to_owned()))
            .collect();
        let now: Vec<_> = first.iter().map(|(p, h)| (*p, hex(h))).collect();
        assert_eq!(
            now, pinned,
            "update the pinned fingerprints here and in keys/README.md after keys/gen.sh"
        );
        // Distinct keys per product and role: no fingerprint or key repeats.
        let mut keys: Vec<&[u8]> = Vec::new();
        for product in Product::ALL {
            for role in ROLES {
                keys.push(Cert::parse(ca_set(product).cert(role)).public_key());
            }
        }
        let count = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), count);
    }

    // -- the VEK --

    #[test]
    fn vek_carries_amds_extensions() {
        for p in all_params() {
            let chain = SimChain::generate(&p).unwrap();
            let vek = Cert::parse(chain.vek_der());
            let ctx = format!("{} {:?}", p.product, p.kind);

            assert_eq!(vek.serial(), 0, "{ctx}");
            assert_eq!(hex(vek.algorithm.whole), AMD_PSS_WITHOUT_TRAILER, "{ctx}");
            assert_eq!(vek.fields[2].whole, vek.algorithm.whole, "{ctx}");
            assert_eq!(
                vek.issuer(),
                Cert::parse(chain.ask_der()).subject(),
                "{ctx}"
            );
            let cn = if p.kind == VekKind::Vcek {
                "SEV-VCEK"
            } else {
                "SEV-VLEK"
            };
            assert_eq!(vek.subject(), amd_name(cn).unwrap(), "{ctx}");
            assert_eq!(vek.validity().0, b"\x17\x0d250101000000Z", "{ctx}");
            assert_eq!(vek.validity().1, b"\x17\x0d320101000000Z", "{ctx}");
            assert_eq!(vek.public_key(), chain.vek_public_key(), "{ctx}");
            assert_eq!(chain.vek_public_key().len(), 97, "{ctx}");

            let exts = vek.extensions();
            assert!(exts.iter().all(|(_, critical, _)| !critical), "{ctx}");
            let oids: Vec<&str> = exts
                .iter()
                .map(|(o, _, _)| o.strip_prefix("1.3.6.1.4.1.3704.1.").unwrap())
                .collect();
            let last = if p.kind == VekKind::Vcek { "4" } else { "5" };
            let want: Vec<&str> = if p.product.has_fmc() {
                vec![
                    "1", "2", "3.9", "3.1", "3.2", "3.3", "3.5", "3.6", "3.7", "3.8", last,
                ]
            } else {
                vec![
                    "1", "2", "3.1", "3.2", "3.4", "3.5", "3.6", "3.7", "3.3", "3.8", last,
                ]
            };
            assert_eq!(oids, want, "{ctx}");

            let value = |name: &str| {
                let i = oids.iter().position(|o| *o == name).unwrap();
                exts[i].2
            };
            let int = |name: &str| uint_value(&read_all(value(name)));
            let ia5 = |name: &str| {
                let tlv = read_all(value(name));
                assert_eq!(tlv.tag, 0x16, "{ctx} {name} is not an IA5String");
                String::from_utf8(tlv.content.to_vec()).unwrap()
            };
            assert_eq!(int("1"), u64::from(p.product.has_fmc()), "{ctx}");
            let name = match (p.product, p.kind) {
                (Product::Milan, VekKind::Vcek) => "Milan-B0",
                (product, _) => product.name(),
            };
            assert_eq!(ia5("2"), name, "{ctx}");
            assert_eq!(Product::from_kds_name(&ia5("2")).unwrap(), p.product);
            assert_eq!(int("3.1"), 4, "{ctx}");
            assert_eq!(int("3.2"), 1, "{ctx}");
            assert_eq!(int("3.3"), 24, "{ctx}");
            assert_eq!(int("3.8"), 219, "{ctx}");
            assert_eq!(hex(value("3.8")), "020200db", "{ctx}");
            for reserved in ["3.4", "3.5", "3.6", "3.7"] {
                if oids.contains(&reserved) {
                    assert_eq!(int(reserved), 0, "{ctx} {reserved}");
                }
            }
            if p.product.has_fmc() {
                assert_eq!(int("3.9"), 3, "{ctx}");
            }
            match p.kind {
                // Raw bytes, not an OCTET STRING inside the OCTET STRING.
                VekKind::Vcek => {
                    assert_eq!(value("4"), &p.hw_id[..p.product.hw_id_len()], "{ctx}");
                }
                VekKind::Vlek => assert_eq!(ia5("5"), SIM_CSP_ID, "{ctx}"),
            }
        }
    }

    #[test]
    fn vek_is_signed_by_its_own_intermediate_only() {
        for p in all_params() {
            let chain = SimChain::generate(&p).unwrap();
            let vek = Cert::parse(chain.vek_der());
            let ask = Cert::parse(chain.ask_der());
            assert!(verify_pss(ask.public_key(), &vek), "{p:?}");
            // Under any other product's or role's intermediate it fails, as
            // with AMD's distinct keys.
            for other in Product::ALL {
                for kind in [VekKind::Vcek, VekKind::Vlek] {
                    if (other, kind) != (p.product, p.kind) {
                        let wrong = Cert::parse(ask_der(other, kind));
                        assert!(!verify_pss(wrong.public_key(), &vek));
                    }
                }
            }
        }
    }

    #[test]
    fn each_chain_has_a_fresh_key() {
        let p = params(Product::Genoa, VekKind::Vcek);
        let a = SimChain::generate(&p).unwrap();
        let b = SimChain::generate(&p).unwrap();
        assert_ne!(a.vek_public_key(), b.vek_public_key());
        assert_eq!(a.ark_der(), b.ark_der());
        assert_eq!(a.ask_der(), b.ask_der());
        assert_eq!(a.params(), &p);
    }

    #[test]
    fn report_signatures_verify_against_the_certified_key() {
        let message = b"simulated attestation report, signed range";
        for p in all_params() {
            let chain = SimChain::generate(&p).unwrap();
            let sig = chain.sign_report(message).unwrap();
            let key = signature::UnparsedPublicKey::new(
                &signature::ECDSA_P384_SHA384_FIXED,
                Cert::parse(chain.vek_der()).public_key(),
            );
            assert!(key.verify(message, &sig).is_ok(), "{p:?}");
            assert!(key.verify(b"another message", &sig).is_err());
        }
    }

    #[test]
    fn validity_after_2049_is_generalized_time() {
        let mut p = params(Product::Turin, VekKind::Vcek);
        // 2052-05-24T00:00:00Z.
        p.not_after = 2_600_121_600;
        let chain = SimChain::generate(&p).unwrap();
        let vek = Cert::parse(chain.vek_der());
        assert_eq!(vek.validity().1, b"\x18\x0f20520524000000Z");
    }

    #[test]
    fn inverted_validity_is_refused() {
        let mut p = params(Product::Milan, VekKind::Vcek);
        p.not_after = p.not_before - 1;
        assert!(matches!(SimChain::generate(&p), Err(Error::Sim(_))));
        // Beyond year 9999.
        let mut p = params(Product::Milan, VekKind::Vcek);
        p.not_after = 253_402_300_800;
        assert!(matches!(SimChain::generate(&p), Err(Error::Sim(_))));
    }

    // -- OpenSSL agrees --

    /// Whether `openssl` can run. On CI a missing openssl fails the test
    /// rather than skipping it.
    fn have_openssl() -> bool {
        let ok = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "openssl is required on CI"
            );
            eprintln!("skipping: openssl not found");
        }
        ok
    }

    fn pem(der: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
    }

    #[test]
    fn openssl_verifies_every_chain() {
        if !have_openssl() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("provenix-sim-chain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cases = all_params();
        let mut late = params(Product::Milan, VekKind::Vlek);
        late.not_after = 2_600_121_600;
        cases.push(late);
        for p in cases {
            let chain = SimChain::generate(&p).unwrap();
            let write = |name: &str, der: &[u8]| {
                let path = dir.join(name);
                std::fs::write(&path, pem(der)).unwrap();
                path
            };
            let ark = write("ark.pem", chain.ark_der());
            let ask = write("ask.pem", chain.ask_der());
            let vek = write("vek.pem", chain.vek_der());
            let out = Command::new("openssl")
                .arg("verify")
                .arg("-check_ss_sig")
                .args(["-attime", &VERIFY_AT.to_string()])
                .arg("-CAfile")
                .arg(&ark)
                .arg("-untrusted")
                .arg(&ask)
                .arg(&vek)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} {:?}: {}{}",
                p.product,
                p.kind,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // And it fails outside the VEK's validity.
            let out = Command::new("openssl")
                .arg("verify")
                .args(["-attime", &(VEK_NOT_BEFORE - 1).to_string()])
                .arg("-CAfile")
                .arg(&ark)
                .arg("-untrusted")
                .arg(&ask)
                .arg(&vek)
                .output()
                .unwrap();
            assert!(!out.status.success());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // -- the same shape as AMD's real certificates --

    /// The real vectors, through `PROVENIX_SHARED` (default `../shared`
    /// beside the repository); absent, the test says so and skips, except
    /// with `CI=true`, where it fails.
    fn vectors_dir() -> Option<PathBuf> {
        let shared = std::env::var_os("PROVENIX_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
        let dir = shared.join("vectors/snp");
        if dir.is_dir() {
            return Some(dir);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {} is missing (set PROVENIX_SHARED)",
            dir.display()
        );
        eprintln!("SKIP: {} not found (set PROVENIX_SHARED)", dir.display());
        None
    }

    fn pem_certs(text: &str) -> Vec<Vec<u8>> {
        let value = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let mut out = Vec::new();
        for block in text.split("-----BEGIN CERTIFICATE-----").skip(1) {
            let body = block.split("-----END CERTIFICATE-----").next().unwrap();
            let chars: Vec<u8> = body
                .bytes()
                .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
                .collect();
            let mut der = Vec::new();
            for chunk in chars.chunks(4) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, &c)| acc | value(c) << (18 - 6 * i));
                for i in 0..chunk.len() - 1 {
                    der.push(n.to_be_bytes()[1 + i]);
                }
            }
            out.push(der);
        }
        out
    }

    /// The certificate's tree without lengths or free-form values: each node's
    /// depth and tag, plus the value of OIDs, BOOLEANs and NULLs. Strings,
    /// times, keys and extension values are left out (compared elsewhere).
    fn skeleton(der: &[u8]) -> Vec<String> {
        fn walk(content: &[u8], depth: usize, out: &mut Vec<String>) {
            for tlv in children(content) {
                let value = match tlv.tag {
                    0x01 | 0x05 | 0x06 => hex(tlv.content),
                    _ => String::new(),
                };
                out.push(format!("{depth} {:02x} {value}", tlv.tag));
                if tlv.tag & 0x20 != 0 {
                    walk(tlv.content, depth + 1, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(der, 0, &mut out);
        out
    }

    /// What must match in an extension's value: all of it for KeyUsage and
    /// BasicConstraints, the length of the raw hwID, and the inner tag of
    /// everything else.
    fn extension_shape(oid: &str, value: &[u8]) -> String {
        match oid {
            "2.5.29.15" | "2.5.29.19" => hex(value),
            "1.3.6.1.4.1.3704.1.4" => format!("raw {} bytes", value.len()),
            _ => format!("tag {:02x}", value[0]),
        }
    }

    fn assert_same_shape(ours: &[u8], amds: &[u8], what: &str) {
        assert_eq!(skeleton(ours), skeleton(amds), "{what}: structure differs");
        let shape = |der: &[u8]| -> Vec<(String, bool, String)> {
            Cert::parse(der)
                .extensions()
                .into_iter()
                .map(|(oid, critical, value)| {
                    let shape = extension_shape(&oid, value);
                    (oid, critical, shape)
                })
                .collect()
        };
        assert_eq!(shape(ours), shape(amds), "{what}: extensions differ");
        let (ours, amds) = (Cert::parse(ours), Cert::parse(amds));
        assert_eq!(ours.signature.len(), amds.signature.len(), "{what}");
        assert_eq!(ours.public_key().len(), amds.public_key().len(), "{what}");
    }

    #[test]
    fn ca_certificates_are_shaped_like_amds() {
        let Some(dir) = vectors_dir() else { return };
        for product in Product::ALL {
            let lower = product.name().to_ascii_lowercase();
            let vcek_file = if product == Product::Turin {
                format!("amd-anchors/ask_ark_{lower}_vcek.pem")
            } else {
                format!("amd-anchors/ask_ark_{lower}.pem")
            };
            let vlek_file = format!("amd-anchors/ask_ark_{lower}_vlek.pem");
            // KDS order: intermediate, then ARK.
            let vcek_chain = pem_certs(&std::fs::read_to_string(dir.join(vcek_file)).unwrap());
            let vlek_chain = pem_certs(&std::fs::read_to_string(dir.join(vlek_file)).unwrap());
            assert_same_shape(ark_der(product), &vcek_chain[1], &format!("ARK-{product}"));
            assert_same_shape(
                ask_der(product, VekKind::Vcek),
                &vcek_chain[0],
                &format!("SEV-{product}"),
            );
            assert_same_shape(
                ask_der(product, VekKind::Vlek),
                &vlek_chain[0],
                &format!("SEV-VLEK-{product}"),
            );
        }
    }

    #[test]
    fn veks_are_shaped_like_amds() {
        let Some(dir) = vectors_dir() else { return };
        let cases = [
            (Product::Milan, VekKind::Vcek, "project-oak/milan_vcek.der"),
            (Product::Genoa, VekKind::Vcek, "project-oak/genoa_vcek.der"),
            (Product::Turin, VekKind::Vcek, "project-oak/turin_vcek.der"),
            (Product::Milan, VekKind::Vlek, "trustee/test-vlek.der"),
        ];
        for (product, kind, file) in cases {
            let chain = SimChain::generate(&params(product, kind)).unwrap();
            let amds = std::fs::read(dir.join(file)).unwrap();
            assert_same_shape(chain.vek_der(), &amds, file);
        }
    }
}
