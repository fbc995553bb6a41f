//! A simulated SEV-SNP platform, for development and CI.
//!
//! It holds a test chain shaped like AMD's (ARK -> ASK/ASVK -> VCEK/VLEK,
//! see [`SimChain`]) and produces byte-exact attestation reports of any
//! version 2 to 5 for Milan, Genoa or Turin, signed the way the firmware
//! signs them: ECDSA P-384 with SHA-384 over bytes 0x000..0x2A0, R and S
//! little-endian in 72-byte fields.
//!
//! The verifier checks these reports with the same code as real ones; only
//! the root differs, and it is trusted only where a policy pins it. Nothing
//! here is secret: the ARK and ASK keys are committed test keys.

mod chain;
mod der;

pub use chain::{
    ChainParams, SIM_CA_NOT_AFTER, SIM_CA_NOT_BEFORE, SIM_CSP_ID, SimChain, VekKind, ark_der,
    ark_fingerprint, ask_der, crl, sim_ark_fingerprints,
};

use crate::Error;
use crate::snp::{
    AttestationReport, CertKind, CertTable, CertTableEntry, Product, REPORT_SIZE, TcbVersion,
};

/// The simulator's launch measurement: all zeros, as it launches no image.
/// Policies that accept simulated evidence pin it like any measurement.
pub const SIM_MEASUREMENT: [u8; 48] = [0; 48];

/// What to put in a simulated report. `Default` is a v5 Milan report at
/// VMPL 0 with a plausible recent TCB and no debug.
#[derive(Clone, Debug)]
pub struct ReportParams {
    /// VERSION, 2 to 5.
    pub version: u32,
    /// The product; a v2 report cannot say, but its signing key can.
    pub product: Product,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY (bit 17 must be set for a valid policy).
    pub policy: u64,
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// VMPL.
    pub vmpl: u32,
    /// REPORTED_TCB; CURRENT, COMMITTED and LAUNCH_TCB equal it.
    pub tcb: TcbVersion,
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// AUTHOR_KEY_EN.
    pub author_key_en: bool,
    /// MASK_CHIP_KEY: CHIP_ID is zeroed in the report.
    pub mask_chip_key: bool,
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// MEASUREMENT.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: [u8; 48],
    /// REPORT_ID.
    pub report_id: [u8; 32],
    /// CHIP_ID; on Turin only the first 8 bytes are used, the rest is zero.
    pub chip_id: [u8; 64],
    /// Firmware version (major, minor, build), current and committed.
    pub firmware: (u8, u8, u8),
    /// LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR (v5).
    pub mit_vector: u64,
    /// CPUID stepping written in v3+ reports.
    pub stepping: u8,
}

impl Default for ReportParams {
    fn default() -> Self {
        ReportParams {
            version: 5,
            product: Product::Milan,
            guest_svn: 0,
            // ABI 0.0, SMT allowed, reserved bit 17 set (ABI spec Table 9).
            policy: 0x3_0000,
            family_id: [0; 16],
            image_id: [0; 16],
            vmpl: 0,
            tcb: TcbVersion {
                fmc: None,
                bootloader: 4,
                tee: 0,
                snp: 24,
                microcode: 219,
            },
            platform_info: 1,
            author_key_en: false,
            mask_chip_key: false,
            report_data: [0; 64],
            measurement: SIM_MEASUREMENT,
            host_data: [0; 32],
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            report_id: [0; 32],
            chip_id: [0x5A; 64],
            firmware: (1, 55, 29),
            mit_vector: 0,
            stepping: 1,
        }
    }
}

/// The CPUID family and model written for each product: real parts'.
fn cpuid(product: Product) -> (u8, u8) {
    match product {
        Product::Milan => (0x19, 0x01),
        Product::Genoa => (0x19, 0x11),
        Product::Turin => (0x1A, 0x02),
    }
}

/// A simulated SNP platform: one chip, one chain.
pub struct SimPlatform {
    chain: SimChain,
}

impl SimPlatform {
    /// A platform with a fresh endorsement key for `params`.
    pub fn new(params: &ChainParams) -> Result<Self, Error> {
        Ok(SimPlatform {
            chain: SimChain::generate(params)?,
        })
    }

    /// The chain.
    pub fn chain(&self) -> &SimChain {
        &self.chain
    }

    /// The extended-report certificate table (VCEK or VLEK, ASK, ARK), as
    /// the kernel returns it with a report.
    pub fn cert_table(&self) -> Result<Vec<u8>, Error> {
        let vek_kind = match self.chain.params().kind {
            VekKind::Vcek => CertKind::Vcek,
            VekKind::Vlek => CertKind::Vlek,
        };
        CertTable::new(vec![
            CertTableEntry {
                kind: vek_kind,
                data: self.chain.vek_der().to_vec(),
            },
            CertTableEntry {
                kind: CertKind::Ask,
                data: self.chain.ask_der().to_vec(),
            },
            CertTableEntry {
                kind: CertKind::Ark,
                data: self.chain.ark_der().to_vec(),
            },
        ])
        .to_bytes()
    }

    /// Produce a signed report. The product, TCB and chip ID come from
    /// `params`; the signing-key field from the chain's key kind. A report
    /// whose TCB or chip ID differs from the chain's is produced as asked
    /// (tests use that to check the verifier refuses it).
    pub fn report(&self, params: &ReportParams) -> Result<AttestationReport, Error> {
        let bytes = self.report_bytes(params)?;
        AttestationReport::from_bytes(&bytes)
    }

    /// As [`SimPlatform::report`], but the raw bytes.
    pub fn report_bytes(&self, p: &ReportParams) -> Result<[u8; REPORT_SIZE], Error> {
        if !(2..=5).contains(&p.version) {
            return Err(Error::UnsupportedVersion(p.version));
        }
        if p.version == 2 && p.product.has_fmc() {
            return Err(Error::Sim(format!(
                "{} firmware does not produce v2 reports",
                p.product
            )));
        }
        let signing_key: u32 = match self.chain.params().kind {
            VekKind::Vcek => 0,
            VekKind::Vlek => 1,
        };
        let key_info =
            u32::from(p.author_key_en) | u32::from(p.mask_chip_key) << 1 | signing_key << 2;
        let tcb = p.tcb.encode(p.product);
        let mut chip_id = if p.mask_chip_key || signing_key == 1 {
            [0; 64]
        } else {
            p.chip_id
        };
        if p.product.has_fmc() {
            chip_id[8..].fill(0);
        }
        let (major, minor, build) = p.firmware;

        let mut b = [0u8; REPORT_SIZE];
        let mut put =
            |offset: usize, bytes: &[u8]| b[offset..offset + bytes.len()].copy_from_slice(bytes);
        put(0x000, &p.version.to_le_bytes());
        put(0x004, &p.guest_svn.to_le_bytes());
        put(0x008, &p.policy.to_le_bytes());
        put(0x010, &p.family_id);
        put(0x020, &p.image_id);
        put(0x030, &p.vmpl.to_le_bytes());
        put(0x034, &1u32.to_le_bytes()); // ECDSA P-384 with SHA-384
        put(0x038, &tcb);
        put(0x040, &p.platform_info.to_le_bytes());
        put(0x048, &key_info.to_le_bytes());
        put(0x050, &p.report_data);
        put(0x090, &p.measurement);
        put(0x0C0, &p.host_data);
        put(0x0E0, &p.id_key_digest);
        put(0x110, &p.author_key_digest);
        put(0x140, &p.report_id);
        put(0x180, &tcb);
        if p.version >= 3 {
            let (family, model) = cpuid(p.product);
            put(0x188, &[family, model, p.stepping]);
        }
        put(0x1A0, &chip_id);
        put(0x1E0, &tcb);
        put(0x1E8, &[build, minor, major, 0, build, minor, major, 0]);
        put(0x1F0, &tcb);
        if p.version >= 5 {
            put(0x1F8, &p.mit_vector.to_le_bytes());
            put(0x200, &p.mit_vector.to_le_bytes());
        }
        let sig = self.chain.sign_report(&b[..0x2A0])?;
        let (r, s) = sig.split_at(48);
        let mut r_le = r.to_vec();
        let mut s_le = s.to_vec();
        r_le.reverse();
        s_le.reverse();
        b[0x2A0..0x2A0 + 48].copy_from_slice(&r_le);
        b[0x2E8..0x2E8 + 48].copy_from_slice(&s_le);
        Ok(b)
    }
}
