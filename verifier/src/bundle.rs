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

use crate::cbor::{decode_map, encode};
use crate::error::Error;
use crate::evidence::{Evidence, evidence_from, evidence_value};
use crate::merkle::hash_from_slice;

/// The bundle format version this code writes and reads.
pub const BUNDLE_VERSION: u64 = 1;
/// Largest bundle accepted: evidence and certificates are a few KiB, an
/// inclusion proof at most 64 hashes, the statement at most 1 MiB.
pub const MAX_BUNDLE_SIZE: usize = 2 << 20;

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
    /// [`identity_report_data`](crate::binding::identity_report_data).
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
        /// Evidence whose REPORT_DATA is [`checkpoint_report_data`](crate::binding::checkpoint_report_data).
        checkpoint_evidence: Evidence,
    },
    /// The report binds the statement itself.
    Direct {
        /// The COSE_Sign1 statement.
        statement: Vec<u8>,
        /// Evidence whose REPORT_DATA is [`statement_report_data`](crate::binding::statement_report_data).
        evidence: Evidence,
    },
}

const KIND_LOGGED: u64 = 0;
const KIND_DIRECT: u64 = 1;
const MAX_COMMIT: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{AzureEvidence, PcrValue, SnpEvidence, TpmEvidence};

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
