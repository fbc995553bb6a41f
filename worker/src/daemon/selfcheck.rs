//! The worker verifies what it produces with the verifier library before it
//! relies on it: its identity evidence before it serves, each attested
//! checkpoint (through a whole bundle) before it publishes it.

use provenix_verifier::{
    Bundle, Identity, Policy, Role, VerifiedBundle, VerifiedEvidence, Verifier, appraise_evidence,
    identity_report_data, verify_bundle,
};

use super::DaemonError;

/// A verifier and the policy it applies.
pub(crate) struct SelfCheck {
    verifier: Verifier,
    policy: Policy,
}

impl SelfCheck {
    pub(crate) fn new(policy: Policy) -> Result<SelfCheck, DaemonError> {
        let anchors = policy
            .anchors()
            .map_err(|e| DaemonError::Config(format!("policy: {e}")))?;
        Ok(SelfCheck {
            verifier: Verifier::new(anchors),
            policy,
        })
    }

    /// Authenticate and appraise the identity evidence, and check that its
    /// REPORT_DATA binds the key, the commit and the nonce.
    pub(crate) fn identity(&self, id: &Identity, at: i64) -> Result<VerifiedEvidence, DaemonError> {
        let verified = appraise_evidence(
            &self.verifier,
            &self.policy,
            &id.evidence,
            at,
            Role::Identity,
        )
        .map_err(|e| DaemonError::SelfCheck(format!("identity evidence: {e}")))?;
        let want = identity_report_data(&id.worker_key, &id.source_commit, &id.boot_nonce);
        if !verified.binds(&want) {
            return Err(DaemonError::SelfCheck(
                "identity REPORT_DATA does not bind the worker key, commit and nonce".into(),
            ));
        }
        Ok(verified)
    }

    /// Verify a bundle exactly as a user would.
    pub(crate) fn bundle(&self, bundle: &Bundle, at: i64) -> Result<VerifiedBundle, DaemonError> {
        verify_bundle(&bundle.to_cbor(), &self.verifier, &self.policy, at)
            .map_err(|e| DaemonError::SelfCheck(e.to_string()))
    }
}
