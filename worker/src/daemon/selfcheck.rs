//! The worker verifies what it produces with the verifier library before it
//! relies on it: its identity evidence before it serves, each attested
//! checkpoint (through a whole bundle) before it publishes it.

use provenix_firmware::snp::{AttestationReport, CertKind, CertTable};
use provenix_verifier::{
    Bundle, Identity, Policy, SnpEvidence, VerifiedBundle, VerifiedReport, Verifier,
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
    pub(crate) fn identity(&self, id: &Identity, at: i64) -> Result<VerifiedReport, DaemonError> {
        let verified = self.evidence(&id.evidence, at)?;
        let want = identity_report_data(&id.worker_key, &id.source_commit, &id.boot_nonce);
        if verified.report().report_data() != &want {
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

    /// Authenticate `evidence` to the policy's roots and appraise it, as
    /// `verify_bundle` does for each piece of evidence in a bundle.
    fn evidence(&self, evidence: &SnpEvidence, at: i64) -> Result<VerifiedReport, DaemonError> {
        let fail = |what: String| DaemonError::SelfCheck(what);
        let report = AttestationReport::from_bytes(&evidence.report)
            .map_err(|e| fail(format!("report: {e}")))?;
        let mut vek = evidence.vek.clone();
        let mut chain = Vec::new();
        if let Some(table) = &evidence.cert_table {
            let table = CertTable::from_bytes(table)
                .map_err(|e| fail(format!("certificate table: {e}")))?;
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
        let vek = vek.ok_or_else(|| {
            fail("no VCEK/VLEK: the platform gave no certificate table; configure one".into())
        })?;
        let authenticated = self
            .verifier
            .authenticate(&report, &vek, &chain, at)
            .map_err(|e| fail(format!("identity evidence: {e}")))?;
        self.policy
            .appraise(authenticated)
            .map_err(|r| fail(format!("identity evidence {r}")))
    }
}
