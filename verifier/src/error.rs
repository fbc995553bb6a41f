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
        reason: ProofFailure,
    },
    /// A consistency proof does not verify (RFC 9162 section 2.1.4.2).
    #[error("consistency proof from a tree of {size1} to one of {size2}: {reason}")]
    ConsistencyProof {
        /// The older tree size.
        size1: u64,
        /// The newer tree size.
        size2: u64,
        /// What failed.
        reason: ProofFailure,
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
        reason: ProofFailure,
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
        reason: ProofFailure,
    },
    /// A checkpoint is not a well-formed signed note (c2sp.org/signed-note,
    /// c2sp.org/tlog-checkpoint).
    #[error("checkpoint line {line}: {reason}")]
    Checkpoint {
        /// The line, from 1; 0 for the note as a whole.
        line: usize,
        /// What is wrong with it.
        reason: CheckpointFailure,
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
    StatementNixSignature(NixFailure),
    /// A Nix fingerprint, narinfo, key line or signature could not be made
    /// or checked.
    #[error("nix: {0}")]
    Nix(#[from] NixFailure),
    /// A bundle is malformed.
    #[error("bundle: {0}")]
    Bundle(String),
    /// A binding between a statement, a key, a checkpoint and evidence does
    /// not hold.
    #[error("binding: {0}")]
    Binding(String),

    // -- TPM appraisal (tpm::appraise) --
    /// The event log does not replay to the PCR values the quote vouches
    /// for: the log was edited, truncated or is of another boot.
    #[error("event log does not match the quote: {0}")]
    EventLogMismatch(String),

    // -- AK enrollment (tpm::ak) --
    /// An EK or AK certificate, or its chain to the CA given, does not
    /// verify.
    #[error("{which} certificate: {reason}")]
    AkChain {
        /// "EK" or "AK".
        which: &'static str,
        /// What is wrong, and with which certificate.
        reason: String,
    },
    /// The quote's qualifiedSigner is not the qualified name of the AK the
    /// evidence carries (as a primary of the endorsement hierarchy): the
    /// TPM signed with another TPMT_PUBLIC than the one given.
    #[error(
        "the quote's qualifiedSigner is {found}, the carried AK's qualified name is {expected}"
    )]
    QualifiedSigner {
        /// The quote's qualifiedSigner, hex.
        found: String,
        /// The AK's qualified name, hex.
        expected: String,
    },
    /// The EK public is not an endorsement key this verifier can encrypt
    /// to, or not the key its certificate names.
    #[error("EK: {0}")]
    Ek(String),
    /// Credential activation failed or could not be prepared.
    #[error("credential activation: {0}")]
    Activation(String),

    // -- TPM quotes and Azure HCL reports --
    /// The attestation key is not a restricted signing key (a key that is
    /// not restricted can sign anything, including a forged TPMS_ATTEST).
    #[error(
        "attestation key is not a restricted signing key: objectAttributes {attributes} (needs restricted|sign and not decrypt)"
    )]
    AkNotRestrictedSigning {
        /// Its attributes, as tpm2-tools names them.
        attributes: String,
    },
    /// The attestation key is of a kind quotes cannot be verified with.
    #[error("attestation key: {0}")]
    AkUnsupported(String),
    /// The signature's scheme is not the one the attestation key signs with.
    #[error("quote is signed with {signature} but the attestation key is {key}")]
    QuoteScheme {
        /// The key's scheme or kind.
        key: String,
        /// The signature's scheme.
        signature: String,
    },
    /// The signature's algorithm has no verifier here.
    #[error(
        "quote signature scheme {0} is not supported (RSASSA SHA-1/256/384/512, RSAPSS SHA-256/384/512, ECDSA P-256 with SHA-256, P-384 with SHA-384)"
    )]
    QuoteAlgorithm(String),
    /// The quote's signature does not verify with the attestation key.
    #[error("quote signature does not verify with the attestation key")]
    QuoteSignature,
    /// The signed TPMS_ATTEST is not a quote.
    #[error("the attestation is not a quote (TPMS_ATTEST type is not TPM_ST_ATTEST_QUOTE)")]
    NotAQuote,
    /// The quote's extraData is not the qualifying data expected.
    #[error("quote extraData is {found:?}, expected {expected:?} (hex)")]
    QualifyingData {
        /// The qualifying data expected, hex.
        expected: String,
        /// The quote's extraData, hex.
        found: String,
    },
    /// A PCR value was given for a PCR the quote does not select.
    #[error("PCR {bank}:{pcr} is not in the quote's selection")]
    PcrNotQuoted {
        /// The bank.
        bank: provenix_firmware::tpm::HashAlg,
        /// The PCR index.
        pcr: u32,
    },
    /// The quote selects a PCR whose value was not given.
    #[error("the quote selects PCR {bank}:{pcr} but no value was given for it")]
    PcrValueMissing {
        /// The bank.
        bank: provenix_firmware::tpm::HashAlg,
        /// The PCR index.
        pcr: u32,
    },
    /// A PCR value is not as long as its bank's digest.
    #[error("PCR {bank}:{pcr} value is {len} bytes, not a {bank} digest")]
    PcrValueLength {
        /// The bank.
        bank: provenix_firmware::tpm::HashAlg,
        /// The PCR index.
        pcr: u32,
        /// Its length.
        len: usize,
    },
    /// The PCR values given do not hash to the quote's pcrDigest.
    #[error("quote pcrDigest is {quoted} but the PCR values given hash ({hash}) to {computed}")]
    PcrDigest {
        /// The signature's hash, which pcrDigest uses.
        hash: provenix_firmware::tpm::HashAlg,
        /// pcrDigest, hex.
        quoted: String,
        /// The digest of the values given, hex.
        computed: String,
    },
    /// The HCL report's hardware report does not bind its runtime data.
    #[error(
        "HCL report: report data {found} is not {hash}(runtime data) = {expected} (zero-padded)"
    )]
    HclReportData {
        /// The hash the report declares.
        hash: provenix_firmware::tpm::HashAlg,
        /// The report data, hex.
        found: String,
        /// The hash of the runtime data, hex.
        expected: String,
    },
    /// The HCL report's runtime data is not what Azure writes.
    #[error("HCL runtime data: {0}")]
    HclRuntimeData(String),
    /// The HCL report is of a kind that cannot be verified here.
    #[error("HCL report: {0}")]
    HclUnsupported(String),
    /// The quote's AK is not the one the HCL report vouches for.
    #[error("the attestation key is not the HCL report's HCLAkPub ({0})")]
    HclAkMismatch(&'static str),
    // -- end TPM --
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

/// Why a bundle was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// Malformed, not authentic, or a binding does not hold.
    Invalid(Error),
    /// Authentic evidence the policy rejects; `evidence` says which.
    Policy {
        /// Which piece of the bundle's evidence.
        evidence: Role,
        /// Every finding.
        rejection: Rejection,
    },
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::Invalid(e) => write!(f, "{e}"),
            Refusal::Policy {
                evidence,
                rejection,
            } => write!(f, "{evidence} evidence {rejection}"),
        }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Invalid(e)
    }
}

/// Which piece of a bundle's evidence something is about: a role the
/// verifier gives it, never a string the caller rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The worker's identity evidence (logged bundles).
    Identity,
    /// The attested checkpoint's evidence (logged bundles).
    Checkpoint,
    /// The evidence that binds the statement itself (direct bundles).
    Statement,
    /// An SEV-SNP report given on its own (`provenix verify-report`).
    Report,
}

impl core::fmt::Display for Role {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Role::Identity => "identity",
            Role::Checkpoint => "checkpoint",
            Role::Statement => "statement",
            Role::Report => "report",
        })
    }
}

/// Why a Merkle proof did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofFailure {
    /// The leaf index is not inside the tree (or the subtree).
    IndexOutOfRange,
    /// The older tree (or the subtree's end) is larger than the newer tree.
    SizeOrder,
    /// A consistency proof from the empty tree: RFC 9162 defines none
    /// (section 2.1.4.1 requires `0 < m`), and one would prove nothing.
    EmptyTree,
    /// `[start, end)` is not a subtree: `start` must be a multiple of the
    /// smallest power of two not below `end - start`.
    InvalidSubtree,
    /// The proof has more nodes than any tree of `u64` size needs.
    TooLong {
        /// Nodes in the proof.
        found: usize,
        /// The most any proof of this kind has.
        max: usize,
    },
    /// The proof does not have the number of nodes these sizes call for.
    WrongLength {
        /// Nodes in the proof.
        found: usize,
        /// Nodes the sizes call for.
        expected: usize,
    },
    /// The proof does not lead back to the older root (or the subtree's).
    FirstRootMismatch,
    /// The proof does not lead to the root given.
    RootMismatch,
    /// An empty subtree whose hash is not the empty tree's.
    EmptySubtreeHash,
}

/// What is wrong with a checkpoint note; the error carries the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointFailure {
    /// The note is longer than the note limit (`checkpoint::MAX_NOTE_LEN`).
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Not UTF-8 (signed-note: "MUST be valid UTF-8").
    NotUtf8,
    /// A control character other than newline (signed-note: "MUST NOT
    /// contain any ASCII control characters ... other than newline").
    ControlCharacter,
    /// The note does not end with a newline.
    NoFinalNewline,
    /// A line longer than the line limit (`checkpoint::MAX_LINE_LEN`).
    LineTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A line ends in whitespace.
    TrailingWhitespace,
    /// An empty line other than the one between text and signatures
    /// (tlog-checkpoint: the text's lines are non-empty).
    EmptyLine,
    /// Fewer than the three lines origin, tree size, root hash.
    MissingLine,
    /// More than `checkpoint::MAX_EXTENSION_LINES` extension lines.
    TooManyExtensionLines,
    /// The tree size is not canonical decimal ("no leading zeroes") or
    /// does not fit 64 bits.
    TreeSize,
    /// The root hash is not canonical base64 of 32 bytes.
    RootHash,
    /// No signature line: the blank line, or what follows it, is missing.
    NoSignatures,
    /// More than `checkpoint::MAX_SIGNATURES` signature lines.
    TooManySignatures,
    /// A signature line is not `— <name> <base64>`.
    SignatureLine,
    /// A key name is empty or holds a space or a plus.
    KeyName,
    /// A signature is not canonical base64 of a key ID and at least one
    /// byte of signature.
    SignatureEncoding,
}

/// Why a fingerprint, narinfo, key line or signature could not be made or
/// checked; the crate's [`Error`](enum@Error) carries it as [`Error::Nix`], or as
/// [`Error::StatementNixSignature`] for a statement's own signature.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NixFailure {
    /// A path is not a store path in the store directory (`nixsig::STORE_DIR`) as Nix prints one.
    StorePath {
        /// Which input: "store path", "reference" or "deriver".
        field: &'static str,
        /// The path as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The NAR size is 0. Every NAR is at least 72 bytes, and Nix reads 0
    /// as "not known" and refuses to make a fingerprint.
    EmptyNar,
    /// A key name Nix or its settings would split or misread.
    KeyName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key or signature line is not `<name>:<base64>`.
    Malformed {
        /// "public key" or "signature".
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key or signature decodes to the wrong number of bytes.
    Length {
        /// "public key" or "signature".
        what: &'static str,
        /// Bytes decoded.
        found: usize,
        /// Bytes an Ed25519 key or signature has.
        expected: usize,
    },
    /// The signature names another key than the one given.
    NameMismatch {
        /// The key name in the signature.
        signature: String,
        /// The name of the public key given.
        key: String,
    },
    /// The Ed25519 signature does not verify over the fingerprint.
    BadSignature {
        /// The key name.
        name: String,
    },
}
