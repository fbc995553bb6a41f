//! Verifying a bundle: parse it, authenticate and appraise each piece of
//! evidence, check every binding between the statement, the worker's
//! identity, its log and the evidence, and hand back a [`VerifiedBundle`]
//! (which only this module makes) or a [`Refusal`].

use std::collections::HashMap;
use std::sync::Mutex;

use provenix_firmware::snp::{AttestationReport, CertKind, CertTable};

use crate::authenticate::Verifier;
use crate::binding::{
    checkpoint_report_data, identity_report_data, log_origin, statement_report_data,
    tpm_qualifying_data,
};
use crate::bundle::Bundle;
use crate::checkpoint::{VerifiedCheckpoint, VerifierKey, verify_checkpoint};
use crate::error::{Error, Refusal, Role};
use crate::evidence::{Evidence, SnpEvidence};
use crate::merkle::{leaf_hash, verify_inclusion};
use crate::policy::{Policy, VerifiedReport};
use crate::statement::Statement;
use crate::tpm::appraise::VerifiedTpm;
use crate::tpm::azure_appraise::VerifiedAzure;

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

    /// The policy bundles are appraised against.
    pub fn policy(&self) -> &'a Policy {
        self.policy
    }

    /// The verification time.
    pub fn at(&self) -> i64 {
        self.at
    }

    /// Authenticate and appraise `evidence`, or recall that it was.
    fn appraise(&self, evidence: &Evidence, role: Role) -> Result<VerifiedEvidence, Refusal> {
        let key = crate::hash::sha256(&evidence.to_cbor());
        if let Some(v) = lock(&self.evidence).get(&key) {
            return Ok(v.clone());
        }
        let v = appraise_evidence(self.verifier, self.policy, evidence, self.at, role)?;
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
                let verified = self.appraise(&evidence, Role::Statement)?;
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
                let id = self.appraise(&identity.evidence, Role::Identity)?;
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
                let cpe = self.appraise(&checkpoint_evidence, Role::Checkpoint)?;
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

/// A memo's lock: a panic elsewhere cannot leave a half-written entry (an
/// insert is one call), so a poisoned lock's data is still good.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn binding(what: &str) -> Error {
    Error::Binding(what.to_owned())
}

/// Authenticate and appraise one piece of evidence, as [`verify_bundle`]
/// does for each in a bundle, in the role `role` (which a policy refusal
/// names). The caller checks what it binds.
pub fn appraise_evidence(
    verifier: &Verifier,
    policy: &Policy,
    evidence: &Evidence,
    at: i64,
    role: Role,
) -> Result<VerifiedEvidence, Refusal> {
    match evidence {
        Evidence::Snp(e) => appraise_snp(verifier, policy, e, at, role).map(VerifiedEvidence::Snp),
        Evidence::Tpm(e) => {
            crate::tpm::appraise::appraise(policy, e, at, role).map(VerifiedEvidence::Tpm)
        }
        Evidence::Azure(e) => crate::tpm::azure_appraise::appraise(verifier, policy, e, at, role)
            .map(VerifiedEvidence::Azure),
    }
}

fn appraise_snp(
    verifier: &Verifier,
    policy: &Policy,
    evidence: &SnpEvidence,
    at: i64,
    role: Role,
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
        evidence: role,
        rejection,
    })
}
