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
use crate::checkpoint::{VerifierKey, verify_checkpoint};
use crate::error::{Error, Rejection};
use crate::merkle::{hash_from_slice, leaf_hash, verify_inclusion};
use crate::policy::{Policy, VerifiedReport};
use crate::statement::Statement;

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
    /// Evidence whose REPORT_DATA is [`identity_report_data`].
    pub evidence: SnpEvidence,
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
        checkpoint_evidence: SnpEvidence,
    },
    /// The report binds the statement itself.
    Direct {
        /// The COSE_Sign1 statement.
        statement: Vec<u8>,
        /// Evidence whose REPORT_DATA is [`statement_report_data`].
        evidence: SnpEvidence,
    },
}

const KIND_LOGGED: u64 = 0;
const KIND_DIRECT: u64 = 1;
const MAX_EVIDENCE_PART: usize = 1 << 20;
const MAX_COMMIT: usize = 64;

fn evidence_value(e: &SnpEvidence) -> Value {
    let mut m = vec![(Value::from(1u64), Value::Bytes(e.report.clone()))];
    if let Some(t) = &e.cert_table {
        m.push((Value::from(2u64), Value::Bytes(t.clone())));
    }
    if let Some(v) = &e.vek {
        m.push((Value::from(3u64), Value::Bytes(v.clone())));
    }
    Value::Map(m)
}

fn evidence_from(mut f: Fields) -> Result<SnpEvidence, Error> {
    let report = f.byte_string(1, "evidence report", MAX_EVIDENCE_PART)?;
    let cert_table = f.optional(2, |f| {
        f.byte_string(2, "evidence cert table", MAX_EVIDENCE_PART)
    })?;
    let vek = f.optional(3, |f| f.byte_string(3, "evidence VEK", MAX_EVIDENCE_PART))?;
    f.finish()?;
    Ok(SnpEvidence {
        report,
        cert_table,
        vek,
    })
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

/// A bundle whose statement is bound to authentic, accepted evidence. Only
/// [`verify_bundle`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    statement: Statement,
    evidence: VerifiedReport,
    log_index: Option<u64>,
}

impl VerifiedBundle {
    /// The statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }
    /// The verified evidence the statement is bound to: the worker's
    /// identity (logged) or the statement's own report (direct).
    pub fn evidence(&self) -> &VerifiedReport {
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
    match Bundle::from_cbor(bytes)? {
        Bundle::Direct {
            statement,
            evidence,
        } => {
            let s = Statement::verify(&statement)?;
            if s.log_index.is_some() {
                return Err(binding("a direct-mode statement carries a log index").into());
            }
            let verified = appraise(verifier, policy, &evidence, at, "statement")?;
            if verified.report().report_data() != &statement_report_data(&s.to_cbor()) {
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
                return Err(
                    binding("the statement is signed by another key than the identity's").into(),
                );
            }
            if s.source_commit != identity.source_commit {
                return Err(
                    binding("the statement names another source commit than the identity").into(),
                );
            }
            let id = appraise(verifier, policy, &identity.evidence, at, "identity")?;
            let want = identity_report_data(
                &identity.worker_key,
                &identity.source_commit,
                &identity.boot_nonce,
            );
            if id.report().report_data() != &want {
                return Err(binding(
                    "identity REPORT_DATA does not bind the worker key, commit and nonce",
                )
                .into());
            }
            let key =
                VerifierKey::ed25519(&log_origin(&identity.worker_key), &identity.worker_key)?;
            let cp = verify_checkpoint(
                checkpoint.as_bytes(),
                &key,
                &log_origin(&identity.worker_key),
            )?;
            let cpe = appraise(verifier, policy, &checkpoint_evidence, at, "checkpoint")?;
            if cpe.report().report_data() != &checkpoint_report_data(&checkpoint) {
                return Err(binding("checkpoint REPORT_DATA does not bind the checkpoint").into());
            }
            // Both reports must come from the same launch of the same chip.
            if cpe.report().measurement() != id.report().measurement()
                || cpe.authenticated().vek_fingerprint() != id.authenticated().vek_fingerprint()
                || cpe.report().report_id() != id.report().report_id()
            {
                return Err(
                    binding("the checkpoint is attested by another VM than the identity").into(),
                );
            }
            if s.log_index != Some(proof.index) {
                return Err(binding("the statement's log index is not the proof's").into());
            }
            if proof.size != cp.size() {
                return Err(
                    binding("the inclusion proof is not for the checkpoint's tree size").into(),
                );
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

fn binding(what: &str) -> Error {
    Error::Binding(what.to_owned())
}

/// Authenticate and appraise one piece of evidence.
fn appraise(
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
        let ev = SnpEvidence {
            report: vec![1; 1184],
            cert_table: Some(vec![2; 10]),
            vek: None,
        };
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
            checkpoint_evidence: ev.clone(),
        };
        let direct = Bundle::Direct {
            statement: vec![8; 40],
            evidence: ev,
        };
        for b in [logged, direct] {
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
