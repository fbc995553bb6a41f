//! Bundles: one output's statement with everything needed to verify it
//! offline, and the bindings between the statement and hardware evidence
//! (DESIGN.md, "The binding, end to end").
//!
//! Two shapes:
//!
//! - **Logged**: the statement is a leaf of the worker's log. The worker's
//!   identity evidence binds its key K and source commit C
//!   (`REPORT_DATA = SHA-512("provenix identity v1" || K || C || nonce)`);
//!   K signs the statement and the log checkpoint; the checkpoint's own
//!   evidence binds the checkpoint text
//!   (`REPORT_DATA = SHA-512("provenix checkpoint v1" || checkpoint)`); an
//!   inclusion proof ties the statement to the checkpoint's root.
//! - **Direct** (one-shot CI jobs): the report binds the statement itself
//!   (`REPORT_DATA = SHA-512("provenix statement v1" || statement)`).
//!
//! Encoding: deterministic CBOR maps with integer keys (see `cbor`).

use ciborium::Value;
use provenix_firmware::snp::{AttestationReport, CertKind, CertTable};
use ring::digest::SHA512;

use crate::authenticate::Verifier;
use crate::cbor::{Fields, decode_map, encode};
use std::collections::HashMap;
use std::sync::Mutex;

use crate::checkpoint::{VerifiedCheckpoint, VerifierKey, verify_checkpoint};
use crate::error::{Error, Rejection};
use crate::merkle::{hash_from_slice, leaf_hash, verify_inclusion};
use crate::policy::{Policy, VerifiedReport};
use crate::statement::Statement;
use crate::tpm::appraise::VerifiedTpm;
use crate::tpm::azure_appraise::VerifiedAzure;

/// The bundle format version this code writes and reads.
pub const BUNDLE_VERSION: u64 = 1;
/// Largest bundle accepted: evidence and certificates are a few KiB, an
/// inclusion proof at most 64 hashes, the statement at most 1 MiB.
pub const MAX_BUNDLE_SIZE: usize = 2 << 20;

/// Domain string of the identity binding.
pub const IDENTITY_DOMAIN: &[u8] = b"provenix identity v1";
/// Domain string of the checkpoint binding.
pub const CHECKPOINT_DOMAIN: &[u8] = b"provenix checkpoint v1";
/// Domain string of the direct-mode statement binding.
pub const STATEMENT_DOMAIN: &[u8] = b"provenix statement v1";

/// REPORT_DATA of a worker identity: SHA-512 over the domain string, the
/// worker's Ed25519 key K, its source commit C (ASCII hex) and the boot
/// nonce. K and the nonce have fixed lengths, so C is unambiguous.
pub fn identity_report_data(
    worker_key: &[u8; 32],
    source_commit: &str,
    boot_nonce: &[u8; 32],
) -> [u8; 64] {
    sha512(&[
        IDENTITY_DOMAIN,
        worker_key,
        source_commit.as_bytes(),
        boot_nonce,
    ])
}

/// REPORT_DATA of an attested checkpoint.
pub fn checkpoint_report_data(checkpoint: &str) -> [u8; 64] {
    sha512(&[CHECKPOINT_DOMAIN, checkpoint.as_bytes()])
}

/// REPORT_DATA of a statement in direct mode: over its deterministic CBOR.
pub fn statement_report_data(statement_cbor: &[u8]) -> [u8; 64] {
    sha512(&[STATEMENT_DOMAIN, statement_cbor])
}

/// The checkpoint origin of the log of worker key K (C2SP tlog-checkpoint
/// origin line): unique per key, so two workers' logs never mix.
pub fn log_origin(worker_key: &[u8; 32]) -> String {
    format!("provenix.dev/log/{}", hex::encode(worker_key))
}

fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut ctx = ring::digest::Context::new(&SHA512);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// TPM qualifying data for a binding: the first 32 bytes of the SHA-512
/// binding hash. A quote's TPM2B_DATA holds at most the TPM's largest
/// digest (32 bytes on a SHA-256-only TPM), so the full 64 bytes fit only
/// TPMs with SHA-512; 256 bits of SHA-512 keep 128-bit collision
/// resistance.
pub fn tpm_qualifying_data(binding: &[u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&binding[..32]);
    out
}

/// Hardware evidence: an SEV-SNP report or a TPM quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// An SEV-SNP attestation report.
    Snp(SnpEvidence),
    /// A TPM quote by an attestation key.
    Tpm(TpmEvidence),
    /// An Azure confidential VM's HCL report and its vTPM's quote.
    Azure(AzureEvidence),
}

impl From<SnpEvidence> for Evidence {
    fn from(e: SnpEvidence) -> Self {
        Evidence::Snp(e)
    }
}

impl From<TpmEvidence> for Evidence {
    fn from(e: TpmEvidence) -> Self {
        Evidence::Tpm(e)
    }
}

/// A TPM quote with what makes it checkable offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmEvidence {
    /// The TPMS_ATTEST the TPM signed.
    pub attest: Vec<u8>,
    /// Its TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The attestation key's TPMT_PUBLIC.
    pub ak_public: Vec<u8>,
    /// The AK's certificate then its intermediates (DER), when the AK is
    /// vouched for by a CA (`provenix ak enroll`, or a cloud's).
    pub ak_chain: Vec<Vec<u8>>,
    /// The quoted PCR values, in the quote's selection order.
    pub pcrs: Vec<PcrValue>,
    /// The TCG event log of the boot (binary_bios_measurements).
    pub event_log: Vec<u8>,
}

impl From<AzureEvidence> for Evidence {
    fn from(e: AzureEvidence) -> Self {
        Evidence::Azure(e)
    }
}

/// An Azure confidential VM's evidence: the guest cannot ask for an SNP
/// report itself, so the paravisor's HCL report (vTPM NV 0x01400001)
/// vouches for the vTPM's attestation key, and that key quotes the boot
/// PCRs with the binding as qualifying data (docs/tpm.md, "Azure CVMs").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureEvidence {
    /// The HCL report as read from NV: header, SNP report, runtime data.
    pub hcl_report: Vec<u8>,
    /// The VCEK (DER) that signed the SNP report: Azure's IMDS/THIM
    /// serves it; the guest cannot get it from the report request.
    pub vek: Option<Vec<u8>>,
    /// The VCEK's issuers (ASK, ARK; DER), when not AMD's embedded ones.
    pub vek_chain: Vec<Vec<u8>>,
    /// The vTPM AK's TPMT_PUBLIC (persistent handle 0x81000003): the key
    /// the runtime data's `HCLAkPub` names, with its attributes.
    pub ak_public: Vec<u8>,
    /// The TPMS_ATTEST the AK signed.
    pub attest: Vec<u8>,
    /// Its TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The quoted PCR values, in the quote's selection order.
    pub pcrs: Vec<PcrValue>,
    /// The TCG event log of the boot.
    pub event_log: Vec<u8>,
}

/// One PCR value of a quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrValue {
    /// The bank (TPM2_ALG_ID of its hash).
    pub bank: u16,
    /// The PCR index.
    pub index: u8,
    /// The value.
    pub value: Vec<u8>,
}

/// SEV-SNP evidence as a platform returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpEvidence {
    /// The attestation report.
    pub report: Vec<u8>,
    /// The extended report's certificate table (VCEK/VLEK, ASK, ARK).
    pub cert_table: Option<Vec<u8>>,
    /// The VCEK/VLEK, when not in the table (e.g. fetched from AMD's KDS).
    pub vek: Option<Vec<u8>>,
}

/// A worker's identity document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// K: the worker's Ed25519 public key.
    pub worker_key: [u8; 32],
    /// C: the worker's source commit.
    pub source_commit: String,
    /// A fresh random value per boot.
    pub boot_nonce: [u8; 32],
    /// Evidence whose REPORT_DATA (or qualifying data) is
    /// [`identity_report_data`].
    pub evidence: Evidence,
}

/// An inclusion proof in the worker's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    /// The leaf index.
    pub index: u64,
    /// The tree size the proof is for (the checkpoint's).
    pub size: u64,
    /// The audit path, leaf to root (RFC 9162 section 2.1.3).
    pub hashes: Vec<[u8; 32]>,
}

/// One output's statement and what proves it.
// A bundle is decoded or built once and then read, never moved in bulk;
// boxing the logged variant would only make its fields awkward to match.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bundle {
    /// The statement is in the worker's attested log.
    Logged {
        /// The COSE_Sign1 statement (a log leaf).
        statement: Vec<u8>,
        /// The worker's identity.
        identity: Identity,
        /// The statement's inclusion in the checkpoint.
        proof: InclusionProof,
        /// The C2SP checkpoint, signed by the worker key.
        checkpoint: String,
        /// Evidence whose REPORT_DATA is [`checkpoint_report_data`].
        checkpoint_evidence: Evidence,
    },
    /// The report binds the statement itself.
    Direct {
        /// The COSE_Sign1 statement.
        statement: Vec<u8>,
        /// Evidence whose REPORT_DATA is [`statement_report_data`].
        evidence: Evidence,
    },
}

const KIND_LOGGED: u64 = 0;
const KIND_DIRECT: u64 = 1;
const MAX_EVIDENCE_PART: usize = 1 << 20;
const MAX_COMMIT: usize = 64;

/// Evidence map key 0: the platform; absent for SEV-SNP, so bundles made
/// before TPM support read unchanged.
const PLATFORM_TPM: u64 = 1;
/// Evidence map key 0 of an Azure CVM's evidence.
const PLATFORM_AZURE: u64 = 2;
const MAX_CHAIN: usize = 8;
const MAX_PCRS: usize = 3 * 24;

fn evidence_value(e: &Evidence) -> Value {
    let k = |n: u64| Value::from(n);
    let b = |v: &[u8]| Value::Bytes(v.to_vec());
    Value::Map(match e {
        Evidence::Snp(e) => {
            let mut m = vec![(k(1), b(&e.report))];
            if let Some(t) = &e.cert_table {
                m.push((k(2), b(t)));
            }
            if let Some(v) = &e.vek {
                m.push((k(3), b(v)));
            }
            m
        }
        Evidence::Tpm(e) => vec![
            (k(0), k(PLATFORM_TPM)),
            (k(10), b(&e.attest)),
            (k(11), b(&e.signature)),
            (k(12), b(&e.ak_public)),
            (
                k(13),
                Value::Array(e.ak_chain.iter().map(|c| b(c)).collect()),
            ),
            (k(14), pcrs_value(&e.pcrs)),
            (k(15), b(&e.event_log)),
        ],
        Evidence::Azure(e) => {
            let mut m = vec![
                (k(0), k(PLATFORM_AZURE)),
                (k(10), b(&e.attest)),
                (k(11), b(&e.signature)),
                (k(12), b(&e.ak_public)),
                (k(14), pcrs_value(&e.pcrs)),
                (k(15), b(&e.event_log)),
                (k(20), b(&e.hcl_report)),
            ];
            if let Some(v) = &e.vek {
                m.push((k(21), b(v)));
            }
            m.push((
                k(22),
                Value::Array(e.vek_chain.iter().map(|c| b(c)).collect()),
            ));
            m
        }
    })
}

fn pcrs_value(pcrs: &[PcrValue]) -> Value {
    Value::Array(
        pcrs.iter()
            .map(|p| {
                Value::Array(vec![
                    Value::from(p.bank),
                    Value::from(p.index),
                    Value::Bytes(p.value.clone()),
                ])
            })
            .collect(),
    )
}

/// An array of certificates (DER) at `key`.
fn certificates(f: &mut Fields, key: u64, what: &'static str) -> Result<Vec<Vec<u8>>, Error> {
    f.array(key, what, MAX_CHAIN)?
        .into_iter()
        .map(|v| match v {
            Value::Bytes(c) if c.len() <= MAX_EVIDENCE_PART => Ok(c),
            _ => Err(Error::Bundle(format!(
                "a {what} entry is not a certificate's bytes"
            ))),
        })
        .collect()
}

fn evidence_from(mut f: Fields) -> Result<Evidence, Error> {
    let bad = Error::Bundle;
    let platform = f.optional(0, |f| f.uint(0, "evidence platform"))?;
    let evidence = match platform {
        None => {
            let report = f.byte_string(1, "evidence report", MAX_EVIDENCE_PART)?;
            let cert_table = f.optional(2, |f| {
                f.byte_string(2, "evidence cert table", MAX_EVIDENCE_PART)
            })?;
            let vek = f.optional(3, |f| f.byte_string(3, "evidence VEK", MAX_EVIDENCE_PART))?;
            Evidence::Snp(SnpEvidence {
                report,
                cert_table,
                vek,
            })
        }
        Some(PLATFORM_TPM) => {
            let attest = f.byte_string(10, "TPM attest", MAX_EVIDENCE_PART)?;
            let signature = f.byte_string(11, "TPM signature", MAX_EVIDENCE_PART)?;
            let ak_public = f.byte_string(12, "TPM AK public", MAX_EVIDENCE_PART)?;
            let ak_chain = certificates(&mut f, 13, "TPM AK chain")?;
            let pcrs = f
                .array(14, "TPM PCR values", MAX_PCRS)?
                .into_iter()
                .map(pcr_value)
                .collect::<Result<_, _>>()?;
            let event_log = f.byte_string(15, "TPM event log", MAX_EVIDENCE_PART)?;
            Evidence::Tpm(TpmEvidence {
                attest,
                signature,
                ak_public,
                ak_chain,
                pcrs,
                event_log,
            })
        }
        Some(PLATFORM_AZURE) => {
            let attest = f.byte_string(10, "Azure TPM attest", MAX_EVIDENCE_PART)?;
            let signature = f.byte_string(11, "Azure TPM signature", MAX_EVIDENCE_PART)?;
            let ak_public = f.byte_string(12, "Azure TPM AK public", MAX_EVIDENCE_PART)?;
            let pcrs = f
                .array(14, "Azure TPM PCR values", MAX_PCRS)?
                .into_iter()
                .map(pcr_value)
                .collect::<Result<_, _>>()?;
            let event_log = f.byte_string(15, "Azure TPM event log", MAX_EVIDENCE_PART)?;
            let hcl_report = f.byte_string(20, "Azure HCL report", MAX_EVIDENCE_PART)?;
            let vek = f.optional(21, |f| f.byte_string(21, "Azure VCEK", MAX_EVIDENCE_PART))?;
            let vek_chain = certificates(&mut f, 22, "Azure VCEK chain")?;
            Evidence::Azure(AzureEvidence {
                hcl_report,
                vek,
                vek_chain,
                ak_public,
                attest,
                signature,
                pcrs,
                event_log,
            })
        }
        Some(other) => return Err(bad(format!("unknown evidence platform {other}"))),
    };
    f.finish()?;
    Ok(evidence)
}

fn pcr_value(v: Value) -> Result<PcrValue, Error> {
    let bad = || Error::Bundle("a PCR value is not [bank, index, digest]".into());
    let Value::Array(parts) = v else {
        return Err(bad());
    };
    match <[Value; 3]>::try_from(parts) {
        Ok(
            [
                Value::Integer(bank),
                Value::Integer(index),
                Value::Bytes(value),
            ],
        ) => {
            let bank = u16::try_from(bank).map_err(|_| bad())?;
            let index = u8::try_from(index)
                .ok()
                .filter(|&i| i < 24)
                .ok_or_else(bad)?;
            if value.len() > 64 {
                return Err(bad());
            }
            Ok(PcrValue { bank, index, value })
        }
        _ => Err(bad()),
    }
}

impl Evidence {
    /// The deterministic CBOR encoding, as in a bundle.
    pub fn to_cbor(&self) -> Vec<u8> {
        encode(&evidence_value(self))
    }

    /// Decode strictly (see [`Bundle::from_cbor`]).
    pub fn from_cbor(bytes: &[u8]) -> Result<Evidence, Error> {
        evidence_from(decode_map(bytes, MAX_BUNDLE_SIZE, Error::Bundle)?)
    }
}

impl Bundle {
    /// The deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        let k = |n: u64| Value::from(n);
        let map = match self {
            Bundle::Logged {
                statement,
                identity,
                proof,
                checkpoint,
                checkpoint_evidence,
            } => vec![
                (k(1), Value::from(BUNDLE_VERSION)),
                (k(2), Value::from(KIND_LOGGED)),
                (k(3), Value::Bytes(statement.clone())),
                (
                    k(4),
                    Value::Map(vec![
                        (k(1), Value::Bytes(identity.worker_key.to_vec())),
                        (k(2), Value::from(identity.source_commit.as_str())),
                        (k(3), Value::Bytes(identity.boot_nonce.to_vec())),
                        (k(4), evidence_value(&identity.evidence)),
                    ]),
                ),
                (
                    k(5),
                    Value::Map(vec![
                        (k(1), Value::from(proof.index)),
                        (k(2), Value::from(proof.size)),
                        (
                            k(3),
                            Value::Array(
                                proof
                                    .hashes
                                    .iter()
                                    .map(|h| Value::Bytes(h.to_vec()))
                                    .collect(),
                            ),
                        ),
                    ]),
                ),
                (k(6), Value::from(checkpoint.as_str())),
                (k(7), evidence_value(checkpoint_evidence)),
            ],
            Bundle::Direct {
                statement,
                evidence,
            } => vec![
                (k(1), Value::from(BUNDLE_VERSION)),
                (k(2), Value::from(KIND_DIRECT)),
                (k(3), Value::Bytes(statement.clone())),
                (k(8), evidence_value(evidence)),
            ],
        };
        encode(&Value::Map(map))
    }

    /// Decode strictly: the deterministic encoding only, known keys only,
    /// every size bounded.
    pub fn from_cbor(bytes: &[u8]) -> Result<Bundle, Error> {
        let bad = Error::Bundle;
        let mut f = decode_map(bytes, MAX_BUNDLE_SIZE, Error::Bundle)?;
        let version = f.uint(1, "version")?;
        if version != BUNDLE_VERSION {
            return Err(bad(format!(
                "version {version}, this verifier reads version {BUNDLE_VERSION}"
            )));
        }
        let kind = f.uint(2, "kind")?;
        let statement = f.byte_string(3, "statement", crate::statement::MAX_STATEMENT_SIZE)?;
        let bundle = match kind {
            KIND_LOGGED => {
                let mut id = f.map(4, "identity")?;
                let worker_key = id.bytes::<32>(1, "identity worker key")?;
                let source_commit = id.text(2, "identity source commit")?;
                if source_commit.len() > MAX_COMMIT {
                    return Err(bad(format!(
                        "identity source commit is longer than {MAX_COMMIT}"
                    )));
                }
                let boot_nonce = id.bytes::<32>(3, "identity boot nonce")?;
                let evidence = evidence_from(id.map(4, "identity evidence")?)?;
                id.finish()?;
                let mut p = f.map(5, "inclusion proof")?;
                let index = p.uint(1, "proof index")?;
                let size = p.uint(2, "proof size")?;
                let hashes = p
                    .array(3, "proof hashes", crate::merkle::MAX_INCLUSION_PROOF)?
                    .into_iter()
                    .map(|v| match v {
                        Value::Bytes(b) => hash_from_slice("proof hash", &b),
                        _ => Err(bad("a proof hash is not a byte string".into())),
                    })
                    .collect::<Result<_, _>>()?;
                p.finish()?;
                let checkpoint = f.text(6, "checkpoint")?;
                let checkpoint_evidence = evidence_from(f.map(7, "checkpoint evidence")?)?;
                Bundle::Logged {
                    statement,
                    identity: Identity {
                        worker_key,
                        source_commit,
                        boot_nonce,
                        evidence,
                    },
                    proof: InclusionProof {
                        index,
                        size,
                        hashes,
                    },
                    checkpoint,
                    checkpoint_evidence,
                }
            }
            KIND_DIRECT => {
                let evidence = evidence_from(f.map(8, "evidence")?)?;
                Bundle::Direct {
                    statement,
                    evidence,
                }
            }
            other => return Err(bad(format!("unknown bundle kind {other}"))),
        };
        f.finish()?;
        Ok(bundle)
    }
}

/// Why a bundle was not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// Malformed, not authentic, or a binding does not hold.
    Invalid(Error),
    /// Authentic evidence the policy rejects; `evidence` says which.
    Policy {
        /// "identity", "checkpoint" or "statement".
        evidence: &'static str,
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

/// Evidence that is authentic and meets the policy.
#[derive(Clone, Debug)]
pub enum VerifiedEvidence {
    /// An SEV-SNP report.
    Snp(VerifiedReport),
    /// A TPM quote with its replayed event log.
    Tpm(VerifiedTpm),
    /// An Azure CVM: the HCL report's SNP report and the vTPM's quote.
    Azure(VerifiedAzure),
}

impl VerifiedEvidence {
    /// The SEV-SNP report, if that is what this is.
    pub fn snp(&self) -> Option<&VerifiedReport> {
        match self {
            VerifiedEvidence::Snp(r) => Some(r),
            VerifiedEvidence::Tpm(_) | VerifiedEvidence::Azure(_) => None,
        }
    }

    /// The TPM quote, if that is what this is.
    pub fn tpm(&self) -> Option<&VerifiedTpm> {
        match self {
            VerifiedEvidence::Snp(_) | VerifiedEvidence::Azure(_) => None,
            VerifiedEvidence::Tpm(t) => Some(t),
        }
    }

    /// The Azure CVM evidence, if that is what this is.
    pub fn azure(&self) -> Option<&VerifiedAzure> {
        match self {
            VerifiedEvidence::Azure(a) => Some(a),
            VerifiedEvidence::Snp(_) | VerifiedEvidence::Tpm(_) => None,
        }
    }

    /// The commit whose reference values the measurement matched, when
    /// the policy names manifests.
    pub fn reference_commit(&self) -> Option<&str> {
        match self {
            VerifiedEvidence::Snp(r) => r.reference().map(|r| r.commit.as_str()),
            VerifiedEvidence::Tpm(t) => t.boot().reference_commit(),
            VerifiedEvidence::Azure(a) => a.boot().reference_commit(),
        }
    }

    /// What the evidence measured: the SEV-SNP launch measurement, or for
    /// a TPM (an Azure CVM's vTPM too: the paravisor's SNP measurement is
    /// Azure's, the boot is in the PCRs) the SHA-256 of the quoted PCR
    /// values in selection order.
    pub fn measurement(&self) -> Vec<u8> {
        match self {
            VerifiedEvidence::Snp(r) => r.report().measurement().to_vec(),
            VerifiedEvidence::Tpm(t) => t.boot().measurement().to_vec(),
            VerifiedEvidence::Azure(a) => a.boot().measurement().to_vec(),
        }
    }

    /// Whether the evidence carries `binding`: as REPORT_DATA (SNP), or as
    /// qualifying data (TPM and Azure's vTPM, [`tpm_qualifying_data`]; on
    /// Azure the SNP report's REPORT_DATA binds the paravisor's runtime
    /// data instead).
    pub fn binds(&self, binding: &[u8; 64]) -> bool {
        match self {
            VerifiedEvidence::Snp(r) => r.report().report_data() == binding,
            VerifiedEvidence::Tpm(t) => t.boot().qualifying_data() == tpm_qualifying_data(binding),
            VerifiedEvidence::Azure(a) => {
                a.boot().qualifying_data() == tpm_qualifying_data(binding)
            }
        }
    }

    /// Whether both come from the same launch of the same machine: an
    /// identity and a checkpoint must.
    fn same_launch(&self, other: &VerifiedEvidence) -> bool {
        match (self, other) {
            (VerifiedEvidence::Snp(a), VerifiedEvidence::Snp(b)) => {
                a.report().measurement() == b.report().measurement()
                    && a.authenticated().vek_key_id() == b.authenticated().vek_key_id()
                    && a.report().report_id() == b.report().report_id()
            }
            (VerifiedEvidence::Tpm(a), VerifiedEvidence::Tpm(b)) => a.boot().same_boot(b.boot()),
            (VerifiedEvidence::Azure(a), VerifiedEvidence::Azure(b)) => a.same_launch(b),
            _ => false,
        }
    }
}

/// A bundle whose statement is bound to authentic, accepted evidence. Only
/// [`verify_bundle`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    statement: Statement,
    evidence: VerifiedEvidence,
    log_index: Option<u64>,
}

impl VerifiedBundle {
    /// The statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }
    /// The verified evidence the statement is bound to: the worker's
    /// identity (logged) or the statement's own evidence (direct).
    pub fn evidence(&self) -> &VerifiedEvidence {
        &self.evidence
    }
    /// The statement's position in the worker's log, if logged.
    pub fn log_index(&self) -> Option<u64> {
        self.log_index
    }
}

/// Verify a bundle offline: every signature, every binding, every piece of
/// evidence against `verifier`'s roots and `policy`, at time `at`.
pub fn verify_bundle(
    bytes: &[u8],
    verifier: &Verifier,
    policy: &Policy,
    at: i64,
) -> Result<VerifiedBundle, Refusal> {
    BundleVerifier::new(verifier, policy, at).verify(bytes)
}

/// Verifies many bundles under one policy at one time, as
/// [`verify_bundle`] does, but authenticates each distinct piece of evidence
/// and each distinct checkpoint once: the bundles of one worker share its
/// identity and a few attested checkpoints, and their hardware signatures
/// are most of the cost. Only what verified is remembered, keyed by its
/// bytes; a refusal is found again each time. Safe to share between
/// threads.
pub struct BundleVerifier<'a> {
    verifier: &'a Verifier,
    policy: &'a Policy,
    at: i64,
    evidence: Mutex<HashMap<[u8; 32], VerifiedEvidence>>,
    checkpoints: Mutex<HashMap<(String, [u8; 32]), VerifiedCheckpoint>>,
}

impl<'a> BundleVerifier<'a> {
    /// A verifier of bundles against `verifier`'s roots and `policy` at `at`.
    pub fn new(verifier: &'a Verifier, policy: &'a Policy, at: i64) -> Self {
        BundleVerifier {
            verifier,
            policy,
            at,
            evidence: Mutex::new(HashMap::new()),
            checkpoints: Mutex::new(HashMap::new()),
        }
    }

    /// Authenticate and appraise `evidence`, or recall that it was.
    fn appraise(
        &self,
        evidence: &Evidence,
        what: &'static str,
    ) -> Result<VerifiedEvidence, Refusal> {
        let key = sha256(&evidence.to_cbor());
        if let Some(v) = lock(&self.evidence).get(&key) {
            return Ok(v.clone());
        }
        let v = appraise_evidence(self.verifier, self.policy, evidence, self.at, what)?;
        lock(&self.evidence).insert(key, v.clone());
        Ok(v)
    }

    /// Verify a checkpoint signed by `worker_key`, or recall that it was.
    fn checkpoint(
        &self,
        checkpoint: &str,
        worker_key: &[u8; 32],
    ) -> Result<VerifiedCheckpoint, Error> {
        let key = (checkpoint.to_owned(), *worker_key);
        if let Some(cp) = lock(&self.checkpoints).get(&key) {
            return Ok(cp.clone());
        }
        let origin = log_origin(worker_key);
        let cp = verify_checkpoint(
            checkpoint.as_bytes(),
            &VerifierKey::ed25519(&origin, worker_key)?,
            &origin,
        )?;
        lock(&self.checkpoints).insert(key, cp.clone());
        Ok(cp)
    }

    /// Verify one bundle (see [`verify_bundle`]).
    pub fn verify(&self, bytes: &[u8]) -> Result<VerifiedBundle, Refusal> {
        match Bundle::from_cbor(bytes)? {
            Bundle::Direct {
                statement,
                evidence,
            } => {
                let s = Statement::verify(&statement)?;
                if s.log_index.is_some() {
                    return Err(binding("a direct-mode statement carries a log index").into());
                }
                let verified = self.appraise(&evidence, "statement")?;
                if !verified.binds(&statement_report_data(&s.to_cbor())) {
                    return Err(binding("REPORT_DATA is not the statement's binding").into());
                }
                Ok(VerifiedBundle {
                    statement: s,
                    evidence: verified,
                    log_index: None,
                })
            }
            Bundle::Logged {
                statement,
                identity,
                proof,
                checkpoint,
                checkpoint_evidence,
            } => {
                let s = Statement::verify(&statement)?;
                if s.worker_key != identity.worker_key {
                    return Err(binding(
                        "the statement is signed by another key than the identity's",
                    )
                    .into());
                }
                if s.source_commit != identity.source_commit {
                    return Err(binding(
                        "the statement names another source commit than the identity",
                    )
                    .into());
                }
                let id = self.appraise(&identity.evidence, "identity")?;
                let want = identity_report_data(
                    &identity.worker_key,
                    &identity.source_commit,
                    &identity.boot_nonce,
                );
                if !id.binds(&want) {
                    return Err(binding(
                        "identity REPORT_DATA does not bind the worker key, commit and nonce",
                    )
                    .into());
                }
                let cp = self.checkpoint(&checkpoint, &identity.worker_key)?;
                let cpe = self.appraise(&checkpoint_evidence, "checkpoint")?;
                if !cpe.binds(&checkpoint_report_data(&checkpoint)) {
                    return Err(
                        binding("checkpoint REPORT_DATA does not bind the checkpoint").into(),
                    );
                }
                // Both pieces of evidence must come from the same launch of the
                // same machine.
                if !cpe.same_launch(&id) {
                    return Err(binding(
                        "the checkpoint is attested by another VM than the identity",
                    )
                    .into());
                }
                if s.log_index != Some(proof.index) {
                    return Err(binding("the statement's log index is not the proof's").into());
                }
                if proof.size != cp.size() {
                    return Err(binding(
                        "the inclusion proof is not for the checkpoint's tree size",
                    )
                    .into());
                }
                verify_inclusion(
                    &leaf_hash(&statement),
                    proof.index,
                    proof.size,
                    &proof.hashes,
                    cp.root(),
                )?;
                Ok(VerifiedBundle {
                    statement: s,
                    evidence: id,
                    log_index: Some(proof.index),
                })
            }
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// A memo's lock: a panic elsewhere cannot leave a half-written entry (an
/// insert is one call), so a poisoned lock's data is still good.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn binding(what: &str) -> Error {
    Error::Binding(what.to_owned())
}

/// Authenticate and appraise one piece of evidence, as [`verify_bundle`]
/// does for each in a bundle; `what` names it in a policy refusal
/// ("identity", "checkpoint", "statement"). The caller checks what it binds.
pub fn appraise_evidence(
    verifier: &Verifier,
    policy: &Policy,
    evidence: &Evidence,
    at: i64,
    what: &'static str,
) -> Result<VerifiedEvidence, Refusal> {
    match evidence {
        Evidence::Snp(e) => appraise_snp(verifier, policy, e, at, what).map(VerifiedEvidence::Snp),
        Evidence::Tpm(e) => crate::tpm::appraise::appraise(policy, e, at)
            .map(VerifiedEvidence::Tpm)
            .map_err(|refusal| match refusal {
                Refusal::Policy { rejection, .. } => Refusal::Policy {
                    evidence: what,
                    rejection,
                },
                other => other,
            }),
        Evidence::Azure(e) => crate::tpm::azure_appraise::appraise(verifier, policy, e, at, what)
            .map(VerifiedEvidence::Azure),
    }
}

fn appraise_snp(
    verifier: &Verifier,
    policy: &Policy,
    evidence: &SnpEvidence,
    at: i64,
    what: &'static str,
) -> Result<VerifiedReport, Refusal> {
    let report = AttestationReport::from_bytes(&evidence.report).map_err(Error::from)?;
    let mut chain = Vec::new();
    let mut vek = evidence.vek.clone();
    if let Some(table) = &evidence.cert_table {
        let table = CertTable::from_bytes(table).map_err(Error::from)?;
        if vek.is_none() {
            vek = table
                .get(CertKind::Vcek)
                .or(table.get(CertKind::Vlek))
                .map(<[u8]>::to_vec);
        }
        chain.extend(
            [CertKind::Ask, CertKind::Ark]
                .into_iter()
                .filter_map(|k| table.get(k).map(<[u8]>::to_vec)),
        );
    }
    let vek = vek.ok_or(Error::MissingVek)?;
    let auth = verifier.authenticate(&report, &vek, &chain, at)?;
    policy.appraise(auth).map_err(|rejection| Refusal::Policy {
        evidence: what,
        rejection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_bindings_are_domain_separated() {
        let k = [1u8; 32];
        let n = [2u8; 32];
        let a = identity_report_data(&k, "abc", &n);
        assert_ne!(a, identity_report_data(&k, "abd", &n));
        assert_ne!(a, identity_report_data(&n, "abc", &k));
        assert_ne!(checkpoint_report_data("x"), statement_report_data(b"x"));
        // The documented construction, spelt out.
        let mut input = b"provenix identity v1".to_vec();
        input.extend(k);
        input.extend(b"abc");
        input.extend(n);
        assert_eq!(&a[..], ring::digest::digest(&SHA512, &input).as_ref());
    }

    #[test]
    fn bundles_round_trip_and_refuse_other_encodings() {
        let ev = Evidence::Snp(SnpEvidence {
            report: vec![1; 1184],
            cert_table: Some(vec![2; 10]),
            vek: None,
        });
        let tpm = Evidence::Tpm(TpmEvidence {
            attest: vec![9; 100],
            signature: vec![10; 70],
            ak_public: vec![11; 90],
            ak_chain: vec![vec![12; 300]],
            pcrs: vec![PcrValue {
                bank: 0x000B,
                index: 9,
                value: vec![13; 32],
            }],
            event_log: vec![14; 500],
        });
        let logged = Bundle::Logged {
            statement: vec![3; 50],
            identity: Identity {
                worker_key: [4; 32],
                source_commit: "ab".repeat(20),
                boot_nonce: [5; 32],
                evidence: ev.clone(),
            },
            proof: InclusionProof {
                index: 3,
                size: 9,
                hashes: vec![[6; 32], [7; 32]],
            },
            checkpoint: "origin\n9\nAAAA\n\n— x y\n".into(),
            checkpoint_evidence: tpm,
        };
        let direct = Bundle::Direct {
            statement: vec![8; 40],
            evidence: ev,
        };
        let azure = |vek: Option<Vec<u8>>| Bundle::Direct {
            statement: vec![8; 40],
            evidence: Evidence::Azure(AzureEvidence {
                hcl_report: vec![15; 2048],
                vek,
                vek_chain: vec![vec![16; 900], vec![17; 1400]],
                ak_public: vec![18; 280],
                attest: vec![19; 120],
                signature: vec![20; 262],
                pcrs: vec![PcrValue {
                    bank: 0x000B,
                    index: 4,
                    value: vec![21; 32],
                }],
                event_log: vec![22; 700],
            }),
        };
        for b in [logged, direct, azure(Some(vec![23; 1300])), azure(None)] {
            let bytes = b.to_cbor();
            assert_eq!(Bundle::from_cbor(&bytes).unwrap(), b);
            for len in [0, 1, bytes.len() / 2, bytes.len() - 1] {
                assert!(
                    Bundle::from_cbor(&bytes[..len]).is_err(),
                    "truncated at {len}"
                );
            }
            let mut extra = bytes.clone();
            extra.push(0);
            assert!(Bundle::from_cbor(&extra).is_err());
        }
    }
}
