//! The one error type of this crate.

use thiserror::Error;

/// Why evidence could not be parsed, built or obtained.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    // -- attestation reports --
    /// The report is not exactly 1184 bytes.
    #[error("attestation report is {found} bytes, expected {expected}")]
    ReportSize {
        /// Bytes received.
        found: usize,
        /// Bytes required.
        expected: usize,
    },
    /// A report version outside the supported range.
    #[error("unsupported attestation report version {0} (supported: 2 to 5)")]
    UnsupportedVersion(u32),
    /// CPUID family/model that maps to no supported product.
    #[error(
        "unknown or unsupported SEV-SNP product: CPUID family {family:#04x} model {model:#04x} stepping {stepping:#x}"
    )]
    UnknownProduct {
        /// CPUID family.
        family: u8,
        /// CPUID model.
        model: u8,
        /// CPUID stepping.
        stepping: u8,
    },
    /// A product name (VCEK extension, policy, flag) that is not supported.
    #[error("unknown or unsupported SEV-SNP product name {0:?} (expected Milan, Genoa or Turin)")]
    UnknownProductName(String),
    /// A reserved or must-be-zero range holds a non-zero byte.
    #[error("reserved field {field} at offset {offset:#05x} is not zero")]
    ReservedNonZero {
        /// Name of the reserved range or the field it belongs to.
        field: &'static str,
        /// Byte offset of the first non-zero byte's range.
        offset: usize,
    },
    /// SIGNATURE_ALGO other than ECDSA P-384 with SHA-384.
    #[error("unsupported signature algorithm {0} (expected 1: ECDSA P-384 with SHA-384)")]
    SignatureAlgorithm(u32),
    /// SIGNING_KEY is a reserved value.
    #[error("unknown signing key {0} (expected 0 VCEK, 1 VLEK or 7 none)")]
    SigningKey(u32),

    // -- certificate tables --
    /// The certificate table is malformed.
    #[error("certificate table: {0}")]
    CertTable(String),

    // -- TPM structures and event logs --
    /// A TPM structure or event log is malformed.
    #[error("{structure} at byte {offset}: {reason}")]
    Tpm {
        /// What was being parsed (e.g. "TPMS_ATTEST", "event log").
        structure: &'static str,
        /// Byte offset where parsing stopped.
        offset: usize,
        /// What is wrong there.
        reason: String,
    },

    // -- TPM device (feature `tpm`; the variants exist either way) --
    /// A TPM command or the TSS failed.
    #[error("TPM {op}: {reason}")]
    TpmDevice {
        /// The command or step (e.g. "TPM2_Quote").
        op: &'static str,
        /// What the TPM or the TSS said.
        reason: String,
    },
    /// Qualifying data longer than a quote's TPM2B_DATA holds.
    #[error("qualifying data is {found} bytes; a quote takes at most {max}")]
    QualifyingDataSize {
        /// Bytes given.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// The PCRs changed between reading them and quoting, every time.
    #[error("the PCRs changed between reading and quoting on each of {attempts} attempts")]
    PcrsUnstable {
        /// Read-and-quote rounds tried.
        attempts: u32,
    },
    /// The TPM lacks something asked of it (a PCR bank, a key kind, a PCR).
    #[error("TPM: unsupported: {0}")]
    TpmUnsupported(String),

    // -- simulator --
    /// The simulator could not build a certificate or sign a report.
    #[error("simulator: {0}")]
    Sim(String),

    // -- guest requests --
    /// An I/O operation on a guest device or configfs entry failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or device.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No SEV-SNP guest interface (configfs-tsm or /dev/sev-guest) is present.
    #[error("no SEV-SNP guest interface: {0}")]
    NoGuestDevice(String),
    /// The firmware or the hypervisor refused a guest request.
    #[error("guest request failed: firmware error {fw_error:#x}, VMM error {vmm_error:#x}")]
    GuestRequest {
        /// SNP firmware status code (ABI spec Table 27).
        fw_error: u32,
        /// Hypervisor status (GHCB spec, SNP_GUEST_REQUEST exit info).
        vmm_error: u32,
    },
    /// Another process changed the configfs-tsm report entry while we used it.
    #[error(
        "configfs-tsm report entry {path} was changed concurrently (generation {before} -> {after})"
    )]
    GenerationChanged {
        /// The report entry.
        path: String,
        /// Generation after our writes.
        before: u64,
        /// Generation after our reads.
        after: u64,
    },
    /// The guest interface answered with something that is not a report.
    #[error("guest interface returned a malformed response: {0}")]
    GuestResponse(String),
    /// A report was requested for a VMPL that does not exist.
    #[error("VMPL {0} is out of range (SEV-SNP has VMPLs 0 to 3)")]
    Vmpl(u32),
    // -- end guest requests --
}
