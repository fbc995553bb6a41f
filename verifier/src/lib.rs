//! Verification of Provenix hardware evidence.
//!
//! Phases, one module each: parse (in `provenix-firmware`), authenticate
//! ([`Verifier::authenticate`]: the chain to a pinned AMD root, the report
//! signature, TCB and chip bindings), appraise ([`Policy::appraise`]: every
//! policy check, every failure reported), decide ([`Policy::decide`]: M of N
//! distinct builders on one subject, every reason reported). Only this crate
//! can make an [`AuthenticatedReport`], a [`VerifiedReport`] or a
//! [`Decision`].
//!
//! Time, trust anchors and CRLs are parameters: the library never reads the
//! clock or the network on its own.

#![forbid(unsafe_code)]

mod anchors;
mod authenticate;
mod binding;
mod bundle;
pub mod cbor;
mod checkpoint;
mod crl;
mod decide;
mod der;
mod error;
mod evidence;
mod graph;
mod hash;
mod merkle;
#[cfg(unix)]
pub mod nar;
pub mod nixsig;
mod policy;
pub mod slsa;
mod statement;
pub mod storepath;
pub mod tpm;
mod trace;
mod verify_bundle;
mod witness;
mod x509;

pub use anchors::{Root, TrustAnchors};
pub use authenticate::{AuthenticatedReport, Verifier};
pub use binding::{
    CHECKPOINT_DOMAIN, IDENTITY_DOMAIN, STATEMENT_DOMAIN, checkpoint_report_data,
    identity_report_data, log_origin, statement_report_data, tpm_qualifying_data,
};
pub use bundle::{BUNDLE_VERSION, Bundle, Identity, InclusionProof, MAX_BUNDLE_SIZE};
pub use checkpoint::{
    Checkpoint, CheckpointFailure, MAX_EXTENSION_LINES, MAX_LINE_LEN, MAX_NOTE_LEN, MAX_SIGNATURES,
    VerifiedCheckpoint, VerifierKey, signature_line, verify_checkpoint,
};
pub use crl::{Crl, MAX_CRL_SIZE};
pub use decide::{Actual, Builder, Claim, Decision, Excluded, Reason, Why};
pub use error::{CertRole, Error, Finding, Refusal, Rejection, Role};
pub use evidence::{AzureEvidence, Evidence, PcrValue, SnpEvidence, TpmEvidence};
pub use graph::{
    BundleLookup, Found, GraphDecision, GraphRoot, Problem, UntrustedInput, decide_graph,
};
pub use hash::{sha256, tpm_algorithm, tpm_digest};
pub use merkle::{
    EMPTY_ROOT, Hash, MAX_CONSISTENCY_PROOF, MAX_INCLUSION_PROOF, ProofFailure, hash_from_slice,
    leaf_hash, node_hash, root_from_consistency, root_from_inclusion, verify_consistency,
    verify_inclusion, verify_subtree_consistency, verify_subtree_inclusion,
};
pub use nixsig::NixFailure;
pub use policy::{
    AbiVersion, Age, Builders, CheckpointPolicy, Distinct, GraphPolicy, Hex, MAX_POLICY_SIZE,
    Measurements, MinTcb, NamedBuilder, Policy, ReferenceMatch, RootPin, Signer, SnpPolicy,
    Threshold, TpmPolicy, Unproven, VerifiedReport,
};
pub use statement::{
    MAX_REFERENCES, MAX_STATEMENT_SIZE, STATEMENT_CONTENT_TYPE, STATEMENT_VERSION, Statement,
    Subject,
};
pub use trace::{Content, MAX_TRACE_INPUTS, Trace, TraceInput};
pub use verify_bundle::{
    BundleVerifier, VerifiedBundle, VerifiedEvidence, appraise_evidence, verify_bundle,
};
pub use witness::{
    Conflict, ConsistencyProof, FORK_SCHEMA, Fork, MAX_CLOCK_SKEW, Observation, ProofSource, Seen,
    TIME_EXTENSION, Witness, check_freshness, checkpoint_time, fmt_age, time_extension,
};

/// Split a PEM bundle (or one DER certificate) into DER certificates, as
/// `--chain` files and KDS `cert_chain` responses hold them.
pub fn certificates_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    x509::parse_pem_or_der(bytes).map_err(|reason| Error::Certificate {
        role: CertRole::Unknown,
        reason,
    })
}
