//! Appraisal of TPM evidence: the attestation key certified by a CA the
//! policy names, the quote signed by that key over the carried PCR values,
//! the event log replayed to exactly those values, and the boot's events
//! matched against the reference values of an accepted commit.
//!
//! The binding (what the qualifying data must be) is the caller's:
//! [`crate::VerifiedEvidence::binds`].

use std::collections::BTreeMap;

use provenix_firmware::tpm::events::{
    PROVENIX_SETTINGS_PCR as SETTINGS_PCR, PROVENIX_SETTINGS_TAG, PROVENIX_SETTINGS_TEXT,
};
use provenix_firmware::tpm::{Attest, EventLog, EventType, HashAlg, Public, Signature};

use super::ak::verify_ak_certificate;
use super::quote::{
    AttestationKey, PcrValues, TPM_RH_ENDORSEMENT, VerifiedQuote, primary_qualified_name,
    verify_quote,
};
use super::replay::replay;
use crate::error::{Error, Finding, Refusal, Rejection, Role};
use crate::evidence::{PcrValue, TpmEvidence};
use crate::policy::{Measurements, Policy};

/// What a verified quote says about the boot it was made in: shared by TPM
/// and Azure evidence.
#[derive(Clone, Debug)]
pub struct QuotedBoot {
    ak_public: Vec<u8>,
    ak_key_id: [u8; 32],
    qualifying_data: Vec<u8>,
    reset_count: u32,
    restart_count: u32,
    pcrs: Vec<PcrValue>,
    reference_commit: Option<String>,
}

impl QuotedBoot {
    /// The boot a verified `quote` by the AK `ak` (whose TPMT_PUBLIC, or
    /// other form as carried, is `ak_public`) vouches for, with the PCR
    /// values it covers and the reference commit they matched.
    pub(super) fn new(
        ak: &AttestationKey,
        ak_public: &[u8],
        quote: &VerifiedQuote,
        pcrs: &[PcrValue],
        reference_commit: Option<String>,
    ) -> QuotedBoot {
        let clock = quote.clock_info();
        QuotedBoot {
            ak_public: ak_public.to_vec(),
            ak_key_id: ak.key_id(),
            qualifying_data: quote.extra_data().to_vec(),
            reset_count: clock.reset_count,
            restart_count: clock.restart_count,
            pcrs: pcrs.to_vec(),
            reference_commit,
        }
    }
    /// The quote's qualifying data (extraData): the binding.
    pub fn qualifying_data(&self) -> &[u8] {
        &self.qualifying_data
    }
    /// The attestation key as the evidence carried it (a TPMT_PUBLIC).
    pub fn ak_public(&self) -> &[u8] {
        &self.ak_public
    }
    /// The attestation key's identity by its public key alone
    /// ([`super::quote::key_id`]): what a TPM without an EK is counted by.
    pub fn ak_key_id(&self) -> &[u8; 32] {
        &self.ak_key_id
    }
    /// The quoted PCR values, which the event log replays to.
    pub fn pcrs(&self) -> &[PcrValue] {
        &self.pcrs
    }
    /// The commit whose reference values the boot matched, when the policy
    /// names manifests.
    pub fn reference_commit(&self) -> Option<&str> {
        self.reference_commit.as_deref()
    }
    /// SHA-256 over the quoted PCR values in selection order: one value
    /// naming the measured boot, as a launch measurement does for SNP.
    pub fn measurement(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for p in &self.pcrs {
            ctx.update(&p.value);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
    /// Same AK, same boot (TPM reset and restart counts) and same PCRs:
    /// what an identity and a checkpoint of one worker must share.
    pub(crate) fn same_boot(&self, other: &QuotedBoot) -> bool {
        self.ak_key_id == other.ak_key_id
            && self.reset_count == other.reset_count
            && self.restart_count == other.restart_count
            && self.pcrs == other.pcrs
    }
}

/// TPM evidence that is authentic and meets the policy. Only [`appraise`]
/// makes one.
#[derive(Clone, Debug)]
pub struct VerifiedTpm {
    boot: QuotedBoot,
    ak_issuer: String,
    ek_key_id: Option<[u8; 32]>,
}

impl VerifiedTpm {
    /// The boot the quote vouches for.
    pub fn boot(&self) -> &QuotedBoot {
        &self.boot
    }
    /// The subject of the CA that certified the AK.
    pub fn ak_issuer(&self) -> &str {
        &self.ak_issuer
    }
    /// The EK of the TPM the AK was enrolled from, by its public key
    /// ([`super::quote::key_id`]), when the AK certificate names one: the
    /// TPM's identity.
    pub fn ek_key_id(&self) -> Option<[u8; 32]> {
        self.ek_key_id
    }
}

/// Authenticate and appraise TPM evidence at time `at`: every check that
/// can fail on authentic evidence is a policy finding, and all of them are
/// reported; forged or inconsistent evidence is [`Refusal::Invalid`].
pub fn appraise(
    policy: &Policy,
    evidence: &TpmEvidence,
    at: i64,
    role: Role,
) -> Result<VerifiedTpm, Refusal> {
    let tpm = &policy.tpm;
    if tpm.roots.is_empty() {
        return Err(rejected(
            role,
            vec![Finding {
                field: "tpm.ak_roots",
                found: "TPM evidence".into(),
                expected: "a policy naming the CAs that certify attestation keys".into(),
            }],
        ));
    }
    // Authenticity: the AK by its certificate, the quote by the AK, the
    // PCR values by the quote, the log by the PCR values.
    let ak_public = Public::from_bytes(&evidence.ak_public).map_err(Error::from)?;
    let (leaf, intermediates) = evidence.ak_chain.split_first().ok_or(Error::AkChain {
        which: "AK",
        reason: "the evidence carries no AK certificate".into(),
    })?;
    let certified = verify_ak_certificate(leaf, intermediates, &tpm.roots, at, &ak_public)?;
    let (quote, log, quoted) = verify_boot_quote(
        certified.attestation_key(),
        &evidence.attest,
        &evidence.signature,
        &evidence.pcrs,
        &evidence.event_log,
    )?;

    // The quote's qualifiedSigner commits to the whole TPMT_PUBLIC the TPM
    // signed with: the AK carried must be that one, so its attributes
    // (fixedTPM, restricted) are the TPM's word, not the operator's. The
    // worker makes its AKs as primaries of the endorsement hierarchy.
    let expected = primary_qualified_name(&ak_public, TPM_RH_ENDORSEMENT);
    if quote.attest().qualified_signer() != expected.as_slice() {
        return Err(Error::QualifiedSigner {
            found: hex::encode(quote.attest().qualified_signer()),
            expected: hex::encode(&expected),
        }
        .into());
    }

    // Policy: the boot PCRs quoted, and the boot matching a reference.
    let (findings, reference_commit) = boot_findings(policy, &log, &quoted);
    if !findings.is_empty() {
        return Err(rejected(role, findings));
    }
    Ok(VerifiedTpm {
        boot: QuotedBoot::new(
            certified.attestation_key(),
            &evidence.ak_public,
            &quote,
            &evidence.pcrs,
            reference_commit,
        ),
        ak_issuer: issuer_of(leaf),
        ek_key_id: certified.ek_key_id(),
    })
}

/// Authenticate a quote by `ak` over the PCR values carried (its
/// qualifying data is the caller's to check against a binding), then
/// replay the event log to exactly those values in every quoted bank.
/// Returns the quote, the parsed log and the quoted values.
pub(super) fn verify_boot_quote(
    ak: &AttestationKey,
    attest_bytes: &[u8],
    signature: &[u8],
    pcrs: &[PcrValue],
    event_log: &[u8],
) -> Result<(VerifiedQuote, EventLog, PcrValues), Error> {
    let attest = Attest::from_bytes(attest_bytes)?;
    let signature = Signature::from_bytes(signature)?;
    let mut quoted = PcrValues::new();
    for p in pcrs {
        let bank = HashAlg::from_id(p.bank).ok_or_else(|| {
            Error::Bundle(format!("PCR {} of unknown bank {:#06x}", p.index, p.bank))
        })?;
        if quoted
            .insert((bank, u32::from(p.index)), p.value.clone())
            .is_some()
        {
            return Err(Error::Bundle(format!("PCR {bank}:{} given twice", p.index)));
        }
    }
    let quote = verify_quote(ak, attest_bytes, &signature, attest.extra_data(), &quoted)?;
    let log = EventLog::parse(event_log)?;
    let replayed = replay(&log);
    let differ: Vec<String> = quoted
        .iter()
        .filter(|((bank, pcr), value)| replayed.get(*bank, *pcr) != Some(value.as_slice()))
        .map(|((bank, pcr), value)| {
            format!(
                "{bank} PCR {pcr} is {} in the quote, {} replayed",
                hex::encode(value),
                replayed
                    .get(*bank, *pcr)
                    .map_or_else(|| "not".into(), hex::encode)
            )
        })
        .collect();
    if !differ.is_empty() {
        return Err(Error::EventLogMismatch(differ.join("; ")));
    }
    Ok((quote, log, quoted))
}

/// The `[tpm]` checks of a quoted boot whose log replayed to `quoted`:
/// every PCR the policy names is quoted in every bank, and the boot
/// matches a reference of an accepted commit (returned) when the policy
/// names manifests. Shared with Azure CVM evidence, whose quote is made
/// by the vTPM the same way.
pub(super) fn boot_findings(
    policy: &Policy,
    log: &EventLog,
    quoted: &PcrValues,
) -> (Vec<Finding>, Option<String>) {
    let tpm = &policy.tpm;
    let mut findings = Vec::new();
    let banks: Vec<HashAlg> = {
        let mut b: Vec<HashAlg> = quoted.keys().map(|(bank, _)| *bank).collect();
        b.dedup();
        b
    };
    for bank in &banks {
        let missing: Vec<String> = tpm
            .pcrs
            .iter()
            .filter(|&&pcr| !quoted.contains_key(&(*bank, pcr)))
            .map(u32::to_string)
            .collect();
        if !missing.is_empty() {
            findings.push(Finding {
                field: "quoted PCRs",
                found: format!("{bank} without PCR {}", missing.join(", ")),
                expected: format!("PCRs {:?} quoted", tpm.pcrs),
            });
        }
    }
    if let Some(accepted) = &tpm.settings {
        settings_findings(accepted, log, quoted, &mut findings);
    }
    let reference_commit = reference(policy, log, quoted, &mut findings);
    // Fail closed, as for SEV-SNP: a boot no reference pins is not
    // accepted unless the policy accepts any software by name.
    if tpm.manifests.is_empty() && policy.measurements == Measurements::Pinned {
        findings.push(Finding {
            field: "TPM reference values",
            found: "a boot the policy does not pin".into(),
            expected:
                "a boot tpm.reference_values lists (measurements = \"any\" accepts any software)"
                    .into(),
        });
    }
    (findings, reference_commit)
}

/// `tpm.settings`: the log (which replays to the quote) holds in
/// [`SETTINGS_PCR`] exactly one event, the worker's settings event, whose
/// SHA-256 digest the policy accepts; and the PCR is quoted.
fn settings_findings(
    accepted: &[crate::policy::Hex<32>],
    log: &EventLog,
    quoted: &PcrValues,
    findings: &mut Vec<Finding>,
) {
    let expected = || {
        let list: Vec<String> = accepted.iter().map(|h| hex::encode(h.0)).collect();
        format!("the settings event with one of [{}]", list.join(", "))
    };
    if !quoted.contains_key(&(HashAlg::Sha256, SETTINGS_PCR)) {
        findings.push(Finding {
            field: "deployment settings",
            found: format!("PCR {SETTINGS_PCR} not quoted in the sha256 bank"),
            expected: expected(),
        });
        return;
    }
    let events: Vec<_> = log
        .events()
        .iter()
        .filter(|e| e.pcr == SETTINGS_PCR)
        .collect();
    let found = match &events[..] {
        [] => "no event".to_owned(),
        [one] => match (
            one.event_type == EventType::EVENT_TAG && settings_tag(&one.data),
            one.digest(HashAlg::Sha256),
        ) {
            (true, Some(d)) if accepted.iter().any(|h| h.0 == d) => return,
            (true, Some(d)) => format!("settings {}", hex::encode(d)),
            _ => "an event that is not the worker's settings event".to_owned(),
        },
        more => format!("{} events", more.len()),
    };
    findings.push(Finding {
        field: "deployment settings",
        found: format!("PCR {SETTINGS_PCR}: {found}"),
        expected: expected(),
    });
}

/// Whether tagged-event data is the worker's settings event.
fn settings_tag(data: &[u8]) -> bool {
    let mut want = PROVENIX_SETTINGS_TAG.to_le_bytes().to_vec();
    want.extend_from_slice(
        &u32::try_from(PROVENIX_SETTINGS_TEXT.len())
            .unwrap_or(0)
            .to_le_bytes(),
    );
    want.extend_from_slice(PROVENIX_SETTINGS_TEXT);
    data == want
}

/// The first manifest of an accepted commit whose TPM reference the boot
/// matches, by its events and, where the reference has them, PCR values.
/// When none matches, the closest reference's differences are findings.
fn reference(
    policy: &Policy,
    log: &EventLog,
    quoted: &PcrValues,
    findings: &mut Vec<Finding>,
) -> Option<String> {
    let tpm = &policy.tpm;
    if tpm.manifests.is_empty() {
        return None;
    }
    let mut closest: Option<(usize, String, Vec<String>)> = None;
    for m in &tpm.manifests {
        if let Some(commits) = &tpm.accepted_commits
            && !commits.contains(&m.commit)
        {
            continue;
        }
        for r in &m.tpm {
            let Some(bank) = HashAlg::from_name(&r.bank) else {
                continue;
            };
            let values: BTreeMap<u32, Vec<u8>> = quoted
                .iter()
                .filter(|((b, _), _)| *b == bank)
                .map(|((_, pcr), v)| (*pcr, v.clone()))
                .collect();
            if values.is_empty() {
                continue;
            }
            let mut diffs: Vec<String> = r.check(log).iter().map(|d| d.to_string()).collect();
            diffs.extend(r.check_pcrs(&values).iter().map(|d| d.to_string()));
            if diffs.is_empty() {
                return Some(m.commit.clone());
            }
            let label = format!("commit {} ({} boot, {bank})", m.commit, r.boot_path);
            if closest.as_ref().is_none_or(|(n, _, _)| diffs.len() < *n) {
                closest = Some((diffs.len(), label, diffs));
            }
        }
    }
    match closest {
        Some((_, label, diffs)) => findings.push(Finding {
            field: "TPM reference values",
            found: diffs.join("; "),
            expected: format!("the boot of {label}"),
        }),
        None => findings.push(Finding {
            field: "TPM reference values",
            found: "no reference in a quoted bank for an accepted commit".into(),
            expected: "a manifest with a TPM part".into(),
        }),
    }
    None
}

/// The issuer's distinguished name, as RFC 4514 text. The certificate
/// verified, so it parses.
fn issuer_of(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.issuer().to_string())
        .unwrap_or_else(|_| "an unnamed CA".into())
}

fn rejected(role: Role, findings: Vec<Finding>) -> Refusal {
    Refusal::Policy {
        evidence: role,
        rejection: Rejection { findings },
    }
}
