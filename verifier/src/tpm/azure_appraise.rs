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

use super::appraise::{boot_findings, verify_boot_quote};
use super::azure::verify_hcl_report;
use crate::authenticate::Verifier;
use crate::bundle::{AzureEvidence, PcrValue, Refusal};
use crate::error::{Error, Rejection};
use crate::policy::{Policy, SnpPolicy, VerifiedReport};

/// Azure CVM evidence that is authentic and meets the policy. Only
/// [`appraise`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedAzure {
    snp: VerifiedReport,
    ak_public: Vec<u8>,
    qualifying_data: Vec<u8>,
    reset_count: u32,
    restart_count: u32,
    pcrs: Vec<PcrValue>,
    reference_commit: Option<String>,
}

impl VerifiedAzure {
    /// The paravisor's SNP report, authenticated and appraised.
    pub fn snp(&self) -> &VerifiedReport {
        &self.snp
    }
    /// The vTPM attestation key's TPMT_PUBLIC.
    pub fn ak_public(&self) -> &[u8] {
        &self.ak_public
    }
    /// The quote's qualifying data (extraData): the binding.
    pub fn qualifying_data(&self) -> &[u8] {
        &self.qualifying_data
    }
    /// The quoted PCR values, which the event log replays to.
    pub fn pcrs(&self) -> &[PcrValue] {
        &self.pcrs
    }
    /// The commit whose TPM reference values the boot matched.
    pub fn reference_commit(&self) -> Option<&str> {
        self.reference_commit.as_deref()
    }
    /// SHA-256 over the quoted PCR values in selection order: the guest's
    /// boot. (The SNP MEASUREMENT is the paravisor's, Azure's firmware.)
    pub fn measurement(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for p in &self.pcrs {
            ctx.update(&p.value);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
    /// Same launch of the same VM on the same chip (SNP measurement, VCEK,
    /// REPORT_ID, which is per launch), same vTPM AK, same TPM boot (reset
    /// and restart counts) and same PCRs: what an identity and a
    /// checkpoint of one worker must share.
    pub(crate) fn same_launch(&self, other: &VerifiedAzure) -> bool {
        let (a, b) = (self.snp.authenticated(), other.snp.authenticated());
        a.report().measurement() == b.report().measurement()
            && a.vek_fingerprint() == b.vek_fingerprint()
            && a.report().report_id() == b.report().report_id()
            && self.ak_public == other.ak_public
            && self.reset_count == other.reset_count
            && self.restart_count == other.restart_count
            && self.pcrs == other.pcrs
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
    what: &'static str,
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
                evidence: what,
                rejection: Rejection { findings },
            });
        }
    };
    let clock = quote.clock_info();
    Ok(VerifiedAzure {
        snp,
        ak_public: evidence.ak_public.clone(),
        qualifying_data: quote.extra_data().to_vec(),
        reset_count: clock.reset_count,
        restart_count: clock.restart_count,
        pcrs: evidence.pcrs.clone(),
        reference_commit,
    })
}
