//! Appraisal of an Azure confidential VM's evidence: the HCL report's SNP
//! report authenticated to AMD's roots and appraised against `[snp]`, the
//! runtime data it binds naming the vTPM's attestation key, that key's
//! quote over the boot PCRs, the event log replayed to them, and the boot
//! appraised against `[tpm]` as any TPM's.
//!
//! Why the binding sits in the quote: the paravisor, not the guest, asks
//! for the SNP report, so its REPORT_DATA is H(runtime data) and cannot
//! carry the worker's binding. The guest's binding is the quote's
//! qualifying data, by the AK the runtime data names; the caller checks
//! it ([`crate::VerifiedEvidence::binds`]).

use provenix_firmware::tpm::Public;
use provenix_firmware::tpm::hcl::HclReport;

use super::appraise::{QuotedBoot, boot_findings, verify_boot_quote};
use super::azure::verify_hcl_report;
use crate::authenticate::Verifier;
use crate::error::{Error, Refusal, Rejection, Role};
use crate::evidence::AzureEvidence;
use crate::policy::{Policy, SnpPolicy, VerifiedReport};

/// Azure CVM evidence that is authentic and meets the policy. Only
/// [`appraise`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedAzure {
    snp: VerifiedReport,
    boot: QuotedBoot,
}

impl VerifiedAzure {
    /// The paravisor's SNP report, authenticated and appraised.
    pub fn snp(&self) -> &VerifiedReport {
        &self.snp
    }
    /// The guest's boot, as the vTPM's quote vouches for it. (Its
    /// measurement is the guest's; the SNP MEASUREMENT is the paravisor's.)
    pub fn boot(&self) -> &QuotedBoot {
        &self.boot
    }
    /// Same launch of the same VM on the same chip (SNP measurement, VCEK,
    /// REPORT_ID, which is per launch), same vTPM AK, same TPM boot (reset
    /// and restart counts) and same PCRs: what an identity and a
    /// checkpoint of one worker must share.
    pub(crate) fn same_launch(&self, other: &VerifiedAzure) -> bool {
        let (a, b) = (self.snp.authenticated(), other.snp.authenticated());
        a.report().measurement() == b.report().measurement()
            && a.vek_key_id() == b.vek_key_id()
            && a.report().report_id() == b.report().report_id()
            && self.boot.same_boot(&other.boot)
    }
}

/// Authenticate and appraise Azure CVM evidence at time `at`; `what` names
/// it in a policy refusal. Forged or inconsistent evidence is
/// [`Refusal::Invalid`]; authentic evidence that fails `[snp]` or `[tpm]`
/// is a policy refusal with every finding of both.
pub fn appraise(
    verifier: &Verifier,
    policy: &Policy,
    evidence: &AzureEvidence,
    at: i64,
    role: Role,
) -> Result<VerifiedAzure, Refusal> {
    // Authenticity, in the order each step vouches for the next: AMD's
    // roots -> VCEK -> SNP report -> runtime data -> AK -> quote -> PCRs
    // -> event log.
    let hcl = HclReport::from_bytes(&evidence.hcl_report).map_err(Error::from)?;
    let vek = evidence.vek.as_deref().ok_or(Error::MissingVek)?;
    let verified = verify_hcl_report(verifier, &hcl, vek, &evidence.vek_chain, at)?;
    let ak_public = Public::from_bytes(&evidence.ak_public).map_err(Error::from)?;
    let ak = verified.attestation_key(Some(&ak_public))?;
    let (quote, log, quoted) = verify_boot_quote(
        &ak,
        &evidence.attest,
        &evidence.signature,
        &evidence.pcrs,
        &evidence.event_log,
    )?;

    // Policy. The SNP report is the paravisor's launch: `[snp]` applies
    // to it (debug, TCB, measurements, chip IDs, ...) except what the
    // paravisor, not Provenix, decides: REPORT_DATA (H(runtime data)) and
    // reference values, whose manifests describe Provenix's own SNP
    // launch, not Azure's paravisor. The boot is the vTPM's: `[tpm]`.
    let snp_policy = Policy {
        snp: SnpPolicy {
            report_data: None,
            reference_values: Vec::new(),
            manifests: Vec::new(),
            ..policy.snp.clone()
        },
        // The paravisor's launch measurement is Azure's firmware, pinned
        // (if at all) by `snp.measurements`; what the worker booted is
        // pinned through the vTPM's boot below, fail-closed there.
        measurements: crate::policy::Measurements::Any,
        ..Policy::default()
    };
    let mut findings = Vec::new();
    let snp = match snp_policy.appraise(verified.snp().clone()) {
        Ok(r) => Some(r),
        Err(rejection) => {
            findings.extend(rejection.findings);
            None
        }
    };
    let (tpm_findings, reference_commit) = boot_findings(policy, &log, &quoted);
    findings.extend(tpm_findings);
    let snp = match snp {
        Some(snp) if findings.is_empty() => snp,
        _ => {
            return Err(Refusal::Policy {
                evidence: role,
                rejection: Rejection { findings },
            });
        }
    };
    Ok(VerifiedAzure {
        snp,
        boot: QuotedBoot::new(
            &ak,
            &evidence.ak_public,
            &quote,
            &evidence.pcrs,
            reference_commit,
        ),
    })
}
