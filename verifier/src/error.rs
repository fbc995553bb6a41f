//! The one error type of this crate, and the appraisal findings.

use core::fmt;

use provenix_firmware::snp::{Product, SigningKey};
use thiserror::Error;

/// Which certificate of the chain an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertRole {
    /// AMD Root Key (self-signed trust anchor).
    Ark,
    /// AMD SEV Key: signs VCEKs.
    Ask,
    /// AMD SEV VLEK Key: signs VLEKs.
    Asvk,
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
    /// A certificate whose role is not known yet.
    Unknown,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertRole::Ark => "ARK",
            CertRole::Ask => "ASK",
            CertRole::Asvk => "ASVK",
            CertRole::Vcek => "VCEK",
            CertRole::Vlek => "VLEK",
            CertRole::Unknown => "certificate",
        })
    }
}

/// Why evidence could not be authenticated, or an input could not be used.
///
/// Authentication stops at the first of these: evidence that is not
/// authentic has no fields worth appraising. Appraisal against a policy
/// instead collects every [`Finding`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The report or certificate table did not parse.
    #[error(transparent)]
    Parse(#[from] provenix_firmware::Error),
    /// A certificate is malformed or outside AMD's profile.
    #[error("{role}: {reason}")]
    Certificate {
        /// Which certificate.
        role: CertRole,
        /// What is wrong.
        reason: String,
    },
    /// No endorsement key (VCEK or VLEK) was given.
    #[error("no VCEK or VLEK given (pass --vcek, or a certificate table holding one)")]
    MissingVek,
    /// The endorsement key is a VCEK but the report says VLEK, or the reverse.
    #[error("report is signed by a {report} but the endorsement key given is a {cert}")]
    SignerMismatch {
        /// SIGNING_KEY from the report.
        report: SigningKey,
        /// What the certificate is.
        cert: CertRole,
    },
    /// The report has no signature (SIGNING_KEY = 7).
    #[error("report is unsigned (SIGNING_KEY = none)")]
    Unsigned,
    /// The report's CPUID product and the certificate's productName differ.
    #[error("report is from a {report} but the {role} is for {cert}")]
    ProductMismatch {
        /// The product from the report's CPUID.
        report: Product,
        /// The certificate's product.
        cert: Product,
        /// Which certificate.
        role: CertRole,
    },
    /// A v2 report (which names no product) with a key for a product whose
    /// firmware never produces v2 reports.
    #[error("a version {version} report cannot come from {cert}, which the {role} is for")]
    VersionProductMismatch {
        /// The report version.
        version: u32,
        /// The certificate's product.
        cert: Product,
        /// Which certificate.
        role: CertRole,
    },
    /// No trust anchor for the product.
    #[error("no trusted ARK for {product}{detail}")]
    UntrustedRoot {
        /// The product.
        product: Product,
        /// What was offered instead, if anything.
        detail: String,
    },
    /// No intermediate (ASK or ASVK) issued the endorsement key.
    #[error("no {role} for {product} issued this {vek}")]
    NoIssuer {
        /// The intermediate sought.
        role: CertRole,
        /// The product.
        product: Product,
        /// The endorsement key.
        vek: CertRole,
    },
    /// A certificate's issuer name is not its issuer's subject.
    #[error("{role} is not issued by the {issuer} (issuer and subject names differ)")]
    IssuerMismatch {
        /// The certificate.
        role: CertRole,
        /// The claimed issuer.
        issuer: CertRole,
    },
    /// A certificate signature does not verify.
    #[error("{role} signature does not verify with the {issuer}'s key")]
    CertSignature {
        /// The certificate.
        role: CertRole,
        /// Its issuer.
        issuer: CertRole,
    },
    /// A certificate is outside its validity period.
    #[error("{role} is not valid at {}: valid from {} to {}", fmt_time(*.at), fmt_time(*.not_before), fmt_time(*.not_after))]
    Expired {
        /// The certificate.
        role: CertRole,
        /// notBefore (unix seconds).
        not_before: i64,
        /// notAfter (unix seconds).
        not_after: i64,
        /// The verification time (unix seconds).
        at: i64,
    },
    /// A certificate is on the CRL.
    #[error("{role} serial {serial} is revoked by the CRL")]
    Revoked {
        /// The certificate.
        role: CertRole,
        /// Its serial number, hex.
        serial: String,
    },
    /// The CRL given cannot be used.
    #[error("CRL: {0}")]
    Crl(String),
    /// The endorsement key's TCB extensions differ from REPORTED_TCB.
    #[error(
        "{role} was issued for {component} SPL {cert} but the report's REPORTED_TCB has {report}"
    )]
    TcbMismatch {
        /// The endorsement key.
        role: CertRole,
        /// The TCB component.
        component: &'static str,
        /// From the report.
        report: u8,
        /// From the certificate.
        cert: u8,
    },
    /// The VCEK's hwID is not the report's CHIP_ID.
    #[error("VCEK hwID {cert} does not match the report's CHIP_ID {report}")]
    ChipIdMismatch {
        /// From the report (the bytes compared), hex.
        report: String,
        /// From the certificate, hex.
        cert: String,
    },
    /// The report signature does not verify with the endorsement key.
    #[error("report signature does not verify with the {0}'s key")]
    ReportSignature(CertRole),
    /// A policy file could not be read or is invalid.
    #[error("policy: {0}")]
    Policy(String),
    /// A Merkle hash (leaf, node or root) received is not 32 bytes.
    #[error("{what}: a SHA-256 hash is 32 bytes, found {len}")]
    HashLength {
        /// Which field.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// An inclusion proof does not verify (RFC 9162 section 2.1.3.2).
    #[error("inclusion proof of leaf {index} in a tree of {size}: {reason}")]
    InclusionProof {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
        /// What failed.
        reason: crate::merkle::ProofFailure,
    },
    /// A consistency proof does not verify (RFC 9162 section 2.1.4.2).
    #[error("consistency proof from a tree of {size1} to one of {size2}: {reason}")]
    ConsistencyProof {
        /// The older tree size.
        size1: u64,
        /// The newer tree size.
        size2: u64,
        /// What failed.
        reason: crate::merkle::ProofFailure,
    },
    /// A subtree inclusion proof does not verify
    /// (draft-ietf-plants-merkle-tree-certs, "Subtree Inclusion Proofs").
    #[error("inclusion proof of leaf {index} in the subtree [{start}, {end}): {reason}")]
    SubtreeInclusionProof {
        /// The leaf index.
        index: u64,
        /// The subtree's first leaf.
        start: u64,
        /// One past the subtree's last leaf.
        end: u64,
        /// What failed.
        reason: crate::merkle::ProofFailure,
    },
    /// A subtree consistency proof does not verify
    /// (draft-ietf-plants-merkle-tree-certs, "Subtree Consistency Proofs").
    #[error("consistency proof of the subtree [{start}, {end}) in a tree of {size}: {reason}")]
    SubtreeConsistencyProof {
        /// The subtree's first leaf.
        start: u64,
        /// One past the subtree's last leaf.
        end: u64,
        /// The tree size.
        size: u64,
        /// What failed.
        reason: crate::merkle::ProofFailure,
    },
    /// A checkpoint is not a well-formed signed note (c2sp.org/signed-note,
    /// c2sp.org/tlog-checkpoint).
    #[error("checkpoint line {line}: {reason}")]
    Checkpoint {
        /// The line, from 1; 0 for the note as a whole.
        line: usize,
        /// What is wrong with it.
        reason: crate::checkpoint::CheckpointFailure,
    },
    /// A note verifier key (`<name>+<hex key ID>+<base64 key>`) or key name
    /// is malformed.
    #[error("note verifier key: {reason}")]
    VerifierKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No signature on the checkpoint is by the key asked for.
    #[error("checkpoint carries no signature by {key}")]
    CheckpointUnsigned {
        /// The key's name and ID, `<name>+<hex key ID>`.
        key: String,
    },
    /// A signature by the key asked for does not verify: the whole note is
    /// refused (c2sp.org/signed-note, "Signatures").
    #[error("checkpoint signature by {key} does not verify")]
    CheckpointSignature {
        /// The key's name and ID, `<name>+<hex key ID>`.
        key: String,
    },
    /// The checkpoint is for another log.
    #[error("checkpoint origin is {found:?}, expected {expected:?}")]
    CheckpointOrigin {
        /// The origin asked for.
        expected: String,
        /// The checkpoint's origin line.
        found: String,
    },
    /// A statement is malformed: not deterministic CBOR, a missing or
    /// unknown field, a wrong type, or a COSE envelope we do not accept.
    #[error("statement: {0}")]
    Statement(String),
    /// A statement's COSE_Sign1 signature does not verify with the worker
    /// key it names.
    #[error("statement signature does not verify with the worker key it names")]
    StatementSignature,
    /// A statement's Nix signature (its `Sig:` line) does not verify over
    /// the fingerprint of the statement's own store path, NAR hash, size
    /// and references with the worker key it names, or the statement
    /// cannot have one (it is not about a store path Nix accepts).
    #[error("statement's Nix signature: {0}")]
    StatementNixSignature(crate::nixsig::NixFailure),
    /// A Nix fingerprint, narinfo, key line or signature could not be made
    /// or checked.
    #[error("nix: {0}")]
    Nix(#[from] crate::nixsig::NixFailure),
    /// A bundle is malformed.
    #[error("bundle: {0}")]
    Bundle(String),
    /// A binding between a statement, a key, a checkpoint and evidence does
    /// not hold.
    #[error("binding: {0}")]
    Binding(String),
}

/// An RFC 3339 rendering of a unix time, for messages.
pub(crate) fn fmt_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{t}"))
}

/// One failed policy check: the field, what was found, what was expected.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The report field or property checked, named as in the spec.
    pub field: &'static str,
    /// What the evidence holds.
    pub found: String,
    /// What the policy requires.
    pub expected: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: found {}, expected {}",
            self.field, self.found, self.expected
        )
    }
}

/// Authentic evidence that the policy rejects, with every reason.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("rejected by policy: {}", .findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Rejection {
    /// Every failed check, in the order they were made.
    pub findings: Vec<Finding>,
}
