//! The ATTESTATION_REPORT structure: pure ABI, no I/O, no cryptography.
//!
//! Layout: ABI spec Table 23 ("ATTESTATION_REPORT Structure"), which every
//! version from 2 to 5 shares at 1184 (0x4A0) bytes; later versions give
//! meaning to bytes that earlier ones reserve:
//!
//! - v3 adds CPUID_FAM_ID, CPUID_MOD_ID and CPUID_STEP at 0x188..0x18B, so a
//!   report names its product; a v2 report does not.
//! - v5 adds LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR at 0x1F8..0x208.
//!
//! The signed part (0x000..0x2A0) and the signature (0x2A0..0x4A0) are
//! separate types, so the signature is always checked over the bytes that
//! were received.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use core::ops::Range;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::tcb::{Product, TcbVersion};
use super::zero;
use crate::Error;

/// Size of every supported report version (ABI spec Table 23).
pub const REPORT_SIZE: usize = 0x4A0;

/// The bytes covered by the report signature (ABI spec Table 23, note on
/// SIGNATURE: "bits 0h to 29Fh").
pub const SIGNED_RANGE: Range<usize> = 0x000..0x2A0;

const MIN_VERSION: u32 = 2;
const MAX_VERSION: u32 = 5;

/// The signed body, 0x000..0x2A0. Field names follow the spec.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ReportBody {
    pub(crate) version: U32,                // 0x000
    pub(crate) guest_svn: U32,              // 0x004
    pub(crate) policy: U64,                 // 0x008
    pub(crate) family_id: [u8; 16],         // 0x010
    pub(crate) image_id: [u8; 16],          // 0x020
    pub(crate) vmpl: U32,                   // 0x030
    pub(crate) signature_algo: U32,         // 0x034
    pub(crate) current_tcb: [u8; 8],        // 0x038
    pub(crate) platform_info: U64,          // 0x040
    pub(crate) key_info: U32,               // 0x048
    pub(crate) reserved_04c: [u8; 4],       // 0x04C
    pub(crate) report_data: [u8; 64],       // 0x050
    pub(crate) measurement: [u8; 48],       // 0x090
    pub(crate) host_data: [u8; 32],         // 0x0C0
    pub(crate) id_key_digest: [u8; 48],     // 0x0E0
    pub(crate) author_key_digest: [u8; 48], // 0x110
    pub(crate) report_id: [u8; 32],         // 0x140
    pub(crate) report_id_ma: [u8; 32],      // 0x160
    pub(crate) reported_tcb: [u8; 8],       // 0x180
    pub(crate) cpuid_fam_id: u8,            // 0x188 (v3+)
    pub(crate) cpuid_mod_id: u8,            // 0x189 (v3+)
    pub(crate) cpuid_step: u8,              // 0x18A (v3+)
    pub(crate) reserved_18b: [u8; 21],      // 0x18B
    pub(crate) chip_id: [u8; 64],           // 0x1A0
    pub(crate) committed_tcb: [u8; 8],      // 0x1E0
    pub(crate) current_build: u8,           // 0x1E8
    pub(crate) current_minor: u8,           // 0x1E9
    pub(crate) current_major: u8,           // 0x1EA
    pub(crate) reserved_1eb: u8,            // 0x1EB
    pub(crate) committed_build: u8,         // 0x1EC
    pub(crate) committed_minor: u8,         // 0x1ED
    pub(crate) committed_major: u8,         // 0x1EE
    pub(crate) reserved_1ef: u8,            // 0x1EF
    pub(crate) launch_tcb: [u8; 8],         // 0x1F0
    pub(crate) launch_mit_vector: U64,      // 0x1F8 (v5)
    pub(crate) current_mit_vector: U64,     // 0x200 (v5)
    pub(crate) reserved_208: [u8; 0x98],    // 0x208..0x2A0
}

/// The signature, 0x2A0..0x4A0: ECDSA P-384 R and S as little-endian
/// integers in 72-byte fields (ABI spec Table 142, "ECDSA Signature Format"),
/// then reserved bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ReportSignature {
    pub(crate) r: [u8; 72],
    pub(crate) s: [u8; 72],
    pub(crate) reserved: [u8; 368],
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawReport {
    pub(crate) body: ReportBody,
    pub(crate) signature: ReportSignature,
}

const _: () = assert!(size_of::<ReportBody>() == SIGNED_RANGE.end);
const _: () = assert!(size_of::<ReportSignature>() == 0x200);
const _: () = assert!(size_of::<RawReport>() == REPORT_SIZE);

/// A parsed attestation report: the bytes as received, whose structure has
/// been checked. Nothing here says the report is authentic; only the
/// verifier can say that.
#[derive(Clone, PartialEq, Eq)]
pub struct AttestationReport {
    bytes: Box<[u8; REPORT_SIZE]>,
    product: Option<Product>,
}

impl core::fmt::Debug for AttestationReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttestationReport")
            .field("version", &self.version())
            .field("product", &self.product)
            .field("measurement", &Hex(self.measurement()))
            .finish_non_exhaustive()
    }
}

impl AttestationReport {
    /// Parse a report of version 2 to 5, checking its size, version,
    /// signature algorithm, signing key, product (v3+) and every reserved
    /// range. A v2 report does not name its product; its TCB fields use the
    /// Milan/Genoa layout, which is the only one v2 firmware produces.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: &[u8; REPORT_SIZE] = bytes.try_into().map_err(|_| Error::ReportSize {
            found: bytes.len(),
            expected: REPORT_SIZE,
        })?;
        let raw = RawReport::ref_from_bytes(bytes).map_err(|_| Error::ReportSize {
            found: bytes.len(),
            expected: REPORT_SIZE,
        })?;
        let body = &raw.body;

        let version = body.version.get();
        if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        let algo = body.signature_algo.get();
        if algo != 1 {
            return Err(Error::SignatureAlgorithm(algo));
        }
        KeyInfo(body.key_info.get()).check()?;

        let product = if version >= 3 {
            Some(Product::from_cpuid(
                body.cpuid_fam_id,
                body.cpuid_mod_id,
                body.cpuid_step,
            )?)
        } else {
            zero(
                &[body.cpuid_fam_id, body.cpuid_mod_id, body.cpuid_step],
                "cpuid",
                0x188,
            )?;
            None
        };

        zero(&body.reserved_04c, "reserved", 0x04C)?;
        zero(&body.reserved_18b, "reserved", 0x18B)?;
        zero(&[body.reserved_1eb], "reserved", 0x1EB)?;
        zero(&[body.reserved_1ef], "reserved", 0x1EF)?;
        if version < 5 {
            zero(
                body.launch_mit_vector.as_bytes(),
                "launch_mit_vector",
                0x1F8,
            )?;
            zero(
                body.current_mit_vector.as_bytes(),
                "current_mit_vector",
                0x200,
            )?;
        }
        zero(&body.reserved_208, "reserved", 0x208)?;

        // R and S are 384-bit values in 72-byte fields: the top 24 bytes of
        // each, and the rest of the signature area, must be zero. Checking
        // them keeps the unsigned part of the report canonical.
        let sig = &raw.signature;
        zero(
            sig.r.get(48..).unwrap_or_default(),
            "signature.r",
            0x2A0 + 48,
        )?;
        zero(
            sig.s.get(48..).unwrap_or_default(),
            "signature.s",
            0x2E8 + 48,
        )?;
        zero(&sig.reserved, "signature.reserved", 0x330)?;

        let report = AttestationReport {
            bytes: Box::new(*bytes),
            product,
        };
        // Decode every TCB once so a reserved byte in any of them is refused
        // here rather than when a caller first looks.
        let layout = report.tcb_layout();
        for (field, offset) in TCB_FIELDS {
            TcbVersion::decode(report.tcb_raw(offset), layout, field, offset)?;
        }
        Ok(report)
    }

    fn raw(&self) -> &RawReport {
        RawReport::ref_from_bytes(self.bytes.as_slice())
            .unwrap_or_else(|_| unreachable!("REPORT_SIZE is asserted to be the layout's size"))
    }

    fn body(&self) -> &ReportBody {
        &self.raw().body
    }

    fn tcb_raw(&self, offset: usize) -> [u8; 8] {
        let body = self.body();
        match offset {
            0x038 => body.current_tcb,
            0x180 => body.reported_tcb,
            0x1E0 => body.committed_tcb,
            _ => body.launch_tcb,
        }
    }

    /// The TCB layout: the product's, or Milan/Genoa's for a v2 report.
    fn tcb_layout(&self) -> Product {
        self.product.unwrap_or(Product::Milan)
    }

    fn tcb(&self, field: &'static str, offset: usize) -> TcbVersion {
        // Every TCB was decoded successfully in `from_bytes`.
        TcbVersion::decode(self.tcb_raw(offset), self.tcb_layout(), field, offset)
            .unwrap_or_default()
    }

    /// The report exactly as received.
    pub fn as_bytes(&self) -> &[u8; REPORT_SIZE] {
        &self.bytes
    }

    /// The bytes the signature covers, as received.
    pub fn signed_bytes(&self) -> &[u8] {
        self.body().as_bytes()
    }

    /// The product named by CPUID (v3 and later); `None` for v2.
    pub fn product(&self) -> Option<Product> {
        self.product
    }

    /// VERSION (0x000).
    pub fn version(&self) -> u32 {
        self.body().version.get()
    }
    /// GUEST_SVN (0x004).
    pub fn guest_svn(&self) -> u32 {
        self.body().guest_svn.get()
    }
    /// POLICY (0x008).
    pub fn policy(&self) -> GuestPolicy {
        GuestPolicy(self.body().policy.get())
    }
    /// FAMILY_ID (0x010).
    pub fn family_id(&self) -> &[u8; 16] {
        &self.body().family_id
    }
    /// IMAGE_ID (0x020).
    pub fn image_id(&self) -> &[u8; 16] {
        &self.body().image_id
    }
    /// VMPL (0x030): the privilege level that requested the report.
    pub fn vmpl(&self) -> u32 {
        self.body().vmpl.get()
    }
    /// SIGNATURE_ALGO (0x034); always 1 after parsing.
    pub fn signature_algo(&self) -> u32 {
        self.body().signature_algo.get()
    }
    /// CURRENT_TCB (0x038).
    pub fn current_tcb(&self) -> TcbVersion {
        self.tcb("current_tcb", 0x038)
    }
    /// PLATFORM_INFO (0x040).
    pub fn platform_info(&self) -> PlatformInfo {
        PlatformInfo(self.body().platform_info.get())
    }
    /// The word at 0x048: AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY.
    pub fn key_info(&self) -> KeyInfo {
        KeyInfo(self.body().key_info.get())
    }
    /// REPORT_DATA (0x050): the guest's 64 bytes.
    pub fn report_data(&self) -> &[u8; 64] {
        &self.body().report_data
    }
    /// MEASUREMENT (0x090): the launch digest.
    pub fn measurement(&self) -> &[u8; 48] {
        &self.body().measurement
    }
    /// HOST_DATA (0x0C0).
    pub fn host_data(&self) -> &[u8; 32] {
        &self.body().host_data
    }
    /// ID_KEY_DIGEST (0x0E0).
    pub fn id_key_digest(&self) -> &[u8; 48] {
        &self.body().id_key_digest
    }
    /// AUTHOR_KEY_DIGEST (0x110).
    pub fn author_key_digest(&self) -> &[u8; 48] {
        &self.body().author_key_digest
    }
    /// REPORT_ID (0x140).
    pub fn report_id(&self) -> &[u8; 32] {
        &self.body().report_id
    }
    /// REPORT_ID_MA (0x160).
    pub fn report_id_ma(&self) -> &[u8; 32] {
        &self.body().report_id_ma
    }
    /// REPORTED_TCB (0x180): the TCB the signing key was derived for.
    pub fn reported_tcb(&self) -> TcbVersion {
        self.tcb("reported_tcb", 0x180)
    }
    /// CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (0x188, v3 and later).
    pub fn cpuid(&self) -> Option<Cpuid> {
        let body = self.body();
        (self.version() >= 3).then_some(Cpuid {
            family: body.cpuid_fam_id,
            model: body.cpuid_mod_id,
            stepping: body.cpuid_step,
        })
    }
    /// CHIP_ID (0x1A0); zero when MASK_CHIP_ID is set or for a VLEK.
    pub fn chip_id(&self) -> &[u8; 64] {
        &self.body().chip_id
    }
    /// COMMITTED_TCB (0x1E0).
    pub fn committed_tcb(&self) -> TcbVersion {
        self.tcb("committed_tcb", 0x1E0)
    }
    /// CURRENT_MAJOR/MINOR/BUILD (0x1E8).
    pub fn current_version(&self) -> FirmwareVersion {
        let b = self.body();
        FirmwareVersion {
            major: b.current_major,
            minor: b.current_minor,
            build: b.current_build,
        }
    }
    /// COMMITTED_MAJOR/MINOR/BUILD (0x1EC).
    pub fn committed_version(&self) -> FirmwareVersion {
        let b = self.body();
        FirmwareVersion {
            major: b.committed_major,
            minor: b.committed_minor,
            build: b.committed_build,
        }
    }
    /// LAUNCH_TCB (0x1F0).
    pub fn launch_tcb(&self) -> TcbVersion {
        self.tcb("launch_tcb", 0x1F0)
    }
    /// LAUNCH_MIT_VECTOR (0x1F8, v5 and later).
    pub fn launch_mit_vector(&self) -> Option<u64> {
        (self.version() >= 5).then(|| self.body().launch_mit_vector.get())
    }
    /// CURRENT_MIT_VECTOR (0x200, v5 and later).
    pub fn current_mit_vector(&self) -> Option<u64> {
        (self.version() >= 5).then(|| self.body().current_mit_vector.get())
    }
    /// SIGNATURE R (0x2A0): the low 48 bytes of the little-endian field
    /// (the rest is checked to be zero).
    pub fn signature_r(&self) -> &[u8; 48] {
        low48(&self.raw().signature.r)
    }
    /// SIGNATURE S (0x2E8): the low 48 bytes of the little-endian field.
    pub fn signature_s(&self) -> &[u8; 48] {
        low48(&self.raw().signature.s)
    }
}

const TCB_FIELDS: [(&str, usize); 4] = [
    ("current_tcb", 0x038),
    ("reported_tcb", 0x180),
    ("committed_tcb", 0x1E0),
    ("launch_tcb", 0x1F0),
];

fn low48(field: &[u8; 72]) -> &[u8; 48] {
    let (low, _) = field
        .split_first_chunk::<48>()
        .unwrap_or_else(|| unreachable!("72 > 48"));
    low
}

/// CPUID family, model and stepping from a v3+ report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpuid {
    /// Extended family + base family.
    pub family: u8,
    /// Extended model + base model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

/// An SNP firmware version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FirmwareVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Build.
    pub build: u8,
}

impl core::fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)
    }
}

/// The guest policy the VM was launched with (ABI spec Table 9, "Guest
/// Policy Structure").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Bit 17 is reserved and must be one.
    pub const RESERVED_ONE: u64 = 1 << 17;
    /// Bits the spec defines (0..=25, less the reserved bit 17); any other
    /// bit set is unknown to this version of the ABI.
    pub const KNOWN_BITS: u64 = (1 << 26) - 1;

    fn bit(self, n: u32) -> bool {
        self.0.checked_shr(n).is_some_and(|v| v & 1 == 1)
    }
    /// ABI_MINOR (bits 7:0).
    pub fn abi_minor(self) -> u8 {
        self.0.to_le_bytes()[0]
    }
    /// ABI_MAJOR (bits 15:8).
    pub fn abi_major(self) -> u8 {
        self.0.to_le_bytes()[1]
    }
    /// SMT (bit 16): SMT is allowed.
    pub fn smt(self) -> bool {
        self.bit(16)
    }
    /// MIGRATE_MA (bit 18): association with a migration agent is allowed.
    pub fn migrate_ma(self) -> bool {
        self.bit(18)
    }
    /// DEBUG (bit 19): debugging is allowed.
    pub fn debug(self) -> bool {
        self.bit(19)
    }
    /// SINGLE_SOCKET (bit 20).
    pub fn single_socket(self) -> bool {
        self.bit(20)
    }
    /// CXL_ALLOW (bit 21).
    pub fn cxl_allow(self) -> bool {
        self.bit(21)
    }
    /// MEM_AES_256_XTS (bit 22).
    pub fn mem_aes_256_xts(self) -> bool {
        self.bit(22)
    }
    /// RAPL_DIS (bit 23).
    pub fn rapl_dis(self) -> bool {
        self.bit(23)
    }
    /// CIPHERTEXT_HIDING (bit 24).
    pub fn ciphertext_hiding(self) -> bool {
        self.bit(24)
    }
    /// PAGE_SWAP_DISABLE (bit 25).
    pub fn page_swap_disable(self) -> bool {
        self.bit(25)
    }
    /// Bits set that the spec reserves (above 25), if any.
    pub fn unknown_bits(self) -> u64 {
        self.0 & !Self::KNOWN_BITS
    }
}

/// PLATFORM_INFO (ABI spec Table 24). Informative: the platform's state when
/// the report was made. Unnamed bits are shown raw, not refused, since AMD
/// sets them on current parts (bit 6 on Turin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    /// The named bits, in order.
    pub const NAMES: [(u32, &'static str); 7] = [
        (0, "smt_en"),
        (1, "tsme_en"),
        (2, "ecc_en"),
        (3, "rapl_dis"),
        (4, "ciphertext_hiding_en"),
        (5, "alias_check_complete"),
        (7, "tio_en"),
    ];

    /// Whether bit `n` is set.
    pub fn bit(self, n: u32) -> bool {
        self.0.checked_shr(n).is_some_and(|v| v & 1 == 1)
    }
    /// SMT_EN (bit 0): SMT is enabled on the platform.
    pub fn smt_en(self) -> bool {
        self.bit(0)
    }
    /// TSME_EN (bit 1).
    pub fn tsme_en(self) -> bool {
        self.bit(1)
    }
}

/// The word at 0x048 (ABI spec Table 23): AUTHOR_KEY_EN (bit 0),
/// MASK_CHIP_KEY (bit 1), SIGNING_KEY (bits 4:2); bits 31:5 reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo(pub u32);

impl KeyInfo {
    fn check(self) -> Result<(), Error> {
        if self.0 >> 5 != 0 {
            return Err(Error::ReservedNonZero {
                field: "key_info",
                offset: 0x048,
            });
        }
        self.signing_key().map(|_| ())
    }
    /// AUTHOR_KEY_EN: the digest of the author key is in the report.
    pub fn author_key_en(self) -> bool {
        self.0 & 1 == 1
    }
    /// MASK_CHIP_KEY: CHIP_ID is masked (zero).
    pub fn mask_chip_key(self) -> bool {
        self.0 & 2 == 2
    }
    /// SIGNING_KEY: which key signed the report.
    pub fn signing_key(self) -> Result<SigningKey, Error> {
        match (self.0 >> 2) & 0b111 {
            0 => Ok(SigningKey::Vcek),
            1 => Ok(SigningKey::Vlek),
            7 => Ok(SigningKey::None),
            other => Err(Error::SigningKey(other)),
        }
    }
}

/// The key that signed a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key: derived from the chip's secrets and
    /// the reported TCB.
    Vcek,
    /// Versioned Loaded Endorsement Key: issued by AMD to a cloud provider.
    Vlek,
    /// No key: the report is unsigned.
    None,
}

impl core::fmt::Display for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
            SigningKey::None => "none",
        })
    }
}

struct Hex<'a>(&'a [u8]);

impl core::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;

    /// A structurally valid v3 Milan report with no signature.
    fn minimal(version: u32) -> Vec<u8> {
        let mut b = vec![0u8; REPORT_SIZE];
        b[0..4].copy_from_slice(&version.to_le_bytes());
        b[0x34] = 1;
        b[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes());
        if version >= 3 {
            b[0x188] = 0x19;
            b[0x189] = 0x01;
        }
        b
    }

    #[test]
    fn field_offsets_match_the_spec() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(ReportBody, vmpl), 0x030);
        assert_eq!(offset_of!(ReportBody, report_data), 0x050);
        assert_eq!(offset_of!(ReportBody, measurement), 0x090);
        assert_eq!(offset_of!(ReportBody, host_data), 0x0C0);
        assert_eq!(offset_of!(ReportBody, id_key_digest), 0x0E0);
        assert_eq!(offset_of!(ReportBody, author_key_digest), 0x110);
        assert_eq!(offset_of!(ReportBody, report_id), 0x140);
        assert_eq!(offset_of!(ReportBody, reported_tcb), 0x180);
        assert_eq!(offset_of!(ReportBody, chip_id), 0x1A0);
        assert_eq!(offset_of!(ReportBody, committed_tcb), 0x1E0);
        assert_eq!(offset_of!(ReportBody, launch_tcb), 0x1F0);
        assert_eq!(offset_of!(ReportBody, current_mit_vector), 0x200);
        assert_eq!(offset_of!(RawReport, signature), 0x2A0);
    }

    #[test]
    fn sizes_are_refused() {
        for len in [0, 1, REPORT_SIZE - 1, REPORT_SIZE + 1, 4000] {
            assert!(matches!(
                AttestationReport::from_bytes(&vec![0; len]),
                Err(Error::ReportSize { found, expected: REPORT_SIZE }) if found == len
            ));
        }
    }

    #[test]
    fn versions_outside_2_to_5_are_refused() {
        for v in [0, 1, 6, 0xFFFF_FFFF] {
            let mut b = minimal(3);
            b[0..4].copy_from_slice(&u32::to_le_bytes(v));
            assert!(matches!(
                AttestationReport::from_bytes(&b),
                Err(Error::UnsupportedVersion(x)) if x == v
            ));
        }
        for v in 2..=5 {
            assert!(AttestationReport::from_bytes(&minimal(v)).is_ok(), "v{v}");
        }
    }

    #[test]
    fn unknown_product_is_named() {
        let mut b = minimal(3);
        b[0x188] = 0x17;
        b[0x189] = 0x31;
        b[0x18A] = 0x02;
        let err = AttestationReport::from_bytes(&b).unwrap_err();
        assert!(err.to_string().contains("family 0x17 model 0x31"), "{err}");
    }

    #[test]
    fn every_reserved_byte_is_checked() {
        let reserved: Vec<Range<usize>> = vec![
            0x04C..0x050,
            0x18B..0x1A0,
            0x1EB..0x1EC,
            0x1EF..0x1F0,
            0x208..0x2A0,
            0x2D0..0x2E8,
            0x318..0x4A0,
        ];
        for range in reserved {
            for at in range {
                let mut b = minimal(5);
                b[at] = 0x80;
                match AttestationReport::from_bytes(&b) {
                    Err(Error::ReservedNonZero { offset, .. }) => assert_eq!(offset, at),
                    other => panic!("byte {at:#x}: {other:?}"),
                }
            }
        }
        // v2 reserves the CPUID bytes and, before v5, the mitigation vectors.
        for at in [0x188, 0x18A, 0x1F8, 0x207] {
            let mut b = minimal(2);
            b[at] = 1;
            assert!(
                matches!(AttestationReport::from_bytes(&b), Err(Error::ReservedNonZero { offset, .. }) if offset == at),
                "{at:#x}"
            );
        }
    }

    #[test]
    fn key_info_is_checked() {
        for (word, ok) in [
            (0u32, true),
            (1 << 2, true),
            (7 << 2, true),
            (2 << 2, false),
            (1 << 5, false),
        ] {
            let mut b = minimal(3);
            b[0x48..0x4C].copy_from_slice(&word.to_le_bytes());
            assert_eq!(AttestationReport::from_bytes(&b).is_ok(), ok, "{word:#x}");
        }
    }

    #[test]
    fn signature_algorithm_is_checked() {
        let mut b = minimal(3);
        b[0x34] = 2;
        assert!(matches!(
            AttestationReport::from_bytes(&b),
            Err(Error::SignatureAlgorithm(2))
        ));
    }
}
