//! Decide: do enough distinct, trusted builders agree on a subject?
//!
//! The last phase (DESIGN.md, "The binding, end to end", step 7). Its input
//! is one subject, its actual digest when the caller could compute it (a
//! file's SHA-256, a local store path's NAR), and every bundle found for it,
//! verified ([`VerifiedBundle`]) or refused ([`Refusal`]). Its output is a
//! [`Decision`], which only [`Policy::decide`] makes: the verdict, the
//! builders counted, every bundle not counted with every reason, the named
//! builders that made no statement (misses), and the digests builders
//! disagree on.
//!
//! A builder counts when its bundle verified, names this subject, comes
//! from an accepted commit (the policy's `snp.accepted_commits`, and the
//! reference value its measurement matched, if any, is of that same
//! commit), is named by the policy (when the policy names builders), and
//! states the actual digest (when it is known). Builders are then grouped
//! by the digest they state, and within a digest by the policy's notion of
//! distinct (key, chip or platform): two bundles of one chip under
//! `distinct = "chip"` are one builder. The subject is accepted when one
//! digest has at least M distinct builders and no other digest does too.

use crate::error::CertRole;
use crate::error::Refusal;
use crate::policy::{Builders, Distinct, Policy};
use crate::statement::Subject;
use crate::verify_bundle::{VerifiedBundle, VerifiedEvidence};

/// The digest of the subject as computed locally: SHA-256 and size of a
/// file's bytes, or of a store path's NAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actual {
    /// SHA-256.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

/// A builder whose bundle verified, as the decision names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Builder {
    /// Where its bundle came from (a file name), for messages.
    pub source: String,
    /// The policy's name for it, or `worker <first 16 hex digits of key>`.
    pub name: String,
    /// Its Ed25519 key.
    pub worker_key: [u8; 32],
    /// The source commit its statement names.
    pub source_commit: String,
    /// What makes it distinct under the policy, e.g. `chip <CHIP_ID hex>`.
    pub unit: String,
    /// Its evidence: `"snp"`, `"tpm"` or `"azure"`.
    pub platform: &'static str,
    /// The commit whose reference values its measurement matched, when
    /// the policy names manifests.
    pub reference_commit: Option<String>,
    /// The SHA-256 it states.
    pub sha256: [u8; 32],
    /// The size it states.
    pub size: u64,
}

/// Why a bundle was not counted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Why {
    /// The bundle did not verify (malformed, not authentic, a broken
    /// binding, or evidence against the policy).
    Refused(String),
    /// The statement is about another subject (a replayed bundle).
    OtherSubject(Subject),
    /// The statement's source commit is not one the policy accepts.
    CommitNotAccepted(String),
    /// The measurement matched another commit's reference value than the
    /// one the statement names.
    MeasuredOtherCommit {
        /// The commit the statement names.
        stated: String,
        /// The commit whose reference value the measurement matched.
        measured: String,
    },
    /// The policy names builders, and not this key.
    KeyNotNamed,
    /// The stated digest is not the subject's actual digest.
    DigestMismatch {
        /// What the statement says.
        stated: Actual,
        /// What was computed locally.
        actual: Actual,
    },
    /// Another bundle of the same distinct unit already counted.
    Duplicate {
        /// The unit, e.g. `chip <hex>`.
        unit: String,
        /// The bundle that counted for it.
        counted: String,
    },
    /// It states another digest than the one accepted (or leading).
    Dissent {
        /// What it states.
        stated: Actual,
        /// The digest the counted builders state.
        counted: Actual,
    },
    /// Builders disagree and no single digest leads.
    Conflicting {
        /// What it states.
        stated: Actual,
    },
    /// Recursive verification: the statement carries no build trace
    /// (version 1), so nothing vouches for its inputs.
    NoTrace,
    /// Recursive verification: its build trace names inputs that are not
    /// trusted; each, with why.
    UntrustedInputs(Vec<crate::graph::UntrustedInput>),
}

/// A bundle that was not counted, with every reason.
#[derive(Clone, Debug)]
pub struct Excluded {
    /// Where the bundle came from.
    pub source: String,
    /// Its builder, when the bundle verified.
    pub builder: Option<Builder>,
    /// Every reason, never empty.
    pub reasons: Vec<Why>,
}

/// One digest stated for the subject, and who stated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The digest.
    pub digest: Actual,
    /// The names of the builders stating it, in input order.
    pub builders: Vec<String>,
}

/// Why a subject was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Fewer than M distinct builders agree.
    TooFew {
        /// Distinct builders counted for the leading digest.
        counted: usize,
        /// M.
        required: u32,
        /// What distinct means.
        distinct: Distinct,
    },
    /// More than one digest has builders and none leads, or several reach M.
    Conflict {
        /// How many digests are stated.
        digests: usize,
    },
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Reason::TooFew {
                counted,
                required,
                distinct,
            } => write!(
                f,
                "{counted} distinct builder(s) by {} agree, the policy requires {required}",
                distinct.name()
            ),
            Reason::Conflict { digests } => write!(
                f,
                "builders state {digests} different digests and no one digest alone has the most distinct builders reaching the threshold"
            ),
        }
    }
}

impl core::fmt::Display for Why {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let digest = |d: &Actual| format!("sha256:{} ({} bytes)", hex::encode(d.sha256), d.size);
        match self {
            Why::Refused(e) => write!(f, "bundle refused: {e}"),
            Why::OtherSubject(s) => write!(f, "the statement is about {}", subject_name(s)),
            Why::CommitNotAccepted(c) => write!(f, "source commit {c} is not accepted"),
            Why::MeasuredOtherCommit { stated, measured } => write!(
                f,
                "the statement names commit {stated}, the measurement is commit {measured}'s"
            ),
            Why::KeyNotNamed => write!(f, "the policy does not name this worker key"),
            Why::DigestMismatch { stated, actual } => write!(
                f,
                "states {}, the actual digest is {}",
                digest(stated),
                digest(actual)
            ),
            Why::Duplicate { unit, counted } => {
                write!(f, "same {} as {counted}, counted once", short(unit))
            }
            Why::Dissent { stated, counted } => write!(
                f,
                "states {}, the counted builders state {}",
                digest(stated),
                digest(counted)
            ),
            Why::Conflicting { stated } => write!(f, "states {}", digest(stated)),
            Why::NoTrace => f.write_str(
                "its statement has no build trace (version 1): nothing vouches for its inputs",
            ),
            Why::UntrustedInputs(inputs) => {
                write!(f, "its build used {} untrusted input(s): ", inputs.len())?;
                for (i, u) in inputs.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{u}")?;
                }
                Ok(())
            }
        }
    }
}

/// A subject's name: its store path or file name.
fn subject_name(s: &Subject) -> &str {
    match s {
        Subject::StorePath(p) | Subject::File(p) => p,
    }
}

impl Subject {
    /// Its store path or file name.
    pub fn name(&self) -> &str {
        subject_name(self)
    }
    /// `"store_path"` or `"file"`, as the `--json` schema spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::StorePath(_) => "store_path",
            Subject::File(_) => "file",
        }
    }
}

impl Why {
    /// A stable code for machines (docs/verify.md).
    pub fn code(&self) -> &'static str {
        match self {
            Why::Refused(_) => "refused",
            Why::OtherSubject(_) => "other_subject",
            Why::CommitNotAccepted(_) => "commit_not_accepted",
            Why::MeasuredOtherCommit { .. } => "measured_other_commit",
            Why::KeyNotNamed => "key_not_named",
            Why::DigestMismatch { .. } => "digest_mismatch",
            Why::Duplicate { .. } => "duplicate",
            Why::Dissent { .. } => "dissent",
            Why::Conflicting { .. } => "conflicting",
            Why::NoTrace => "no_trace",
            Why::UntrustedInputs(_) => "untrusted_inputs",
        }
    }
}

impl Reason {
    /// A stable code for machines (docs/verify.md).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::TooFew { .. } => "too_few",
            Reason::Conflict { .. } => "conflict",
        }
    }
}

/// A unit with its hex cut to 16 digits, for people.
fn short(unit: &str) -> String {
    match unit.rsplit_once(' ') {
        Some((kind, id)) if id.len() > 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{kind} {}…", id.get(..16).unwrap_or(id))
        }
        _ => unit.to_owned(),
    }
}

/// The verdict on one subject. Only [`Policy::decide`] makes one.
#[derive(Clone, Debug)]
pub struct Decision {
    subject: Subject,
    actual: Option<Actual>,
    required: u32,
    distinct: Distinct,
    digest: Option<Actual>,
    counted: Vec<Builder>,
    excluded: Vec<Excluded>,
    missing: Vec<String>,
    disagreement: Vec<Claim>,
    reasons: Vec<Reason>,
}

impl Decision {
    /// Whether the subject is accepted.
    pub fn accepted(&self) -> bool {
        self.reasons.is_empty()
    }
    /// The subject.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }
    /// The locally computed digest, when known.
    pub fn actual(&self) -> Option<Actual> {
        self.actual
    }
    /// M.
    pub fn required(&self) -> u32 {
        self.required
    }
    /// What distinct meant.
    pub fn distinct(&self) -> Distinct {
        self.distinct
    }
    /// The digest the counted builders state (the accepted one, when
    /// accepted).
    pub fn digest(&self) -> Option<Actual> {
        self.digest
    }
    /// The builders counted, one per distinct unit.
    pub fn counted(&self) -> &[Builder] {
        &self.counted
    }
    /// Every bundle not counted, with every reason.
    pub fn excluded(&self) -> &[Excluded] {
        &self.excluded
    }
    /// Named builders with no verified statement for the subject.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }
    /// When builders that would otherwise count state different digests:
    /// each digest and who states it. Empty when they agree.
    pub fn disagreement(&self) -> &[Claim] {
        &self.disagreement
    }
    /// Why the subject was rejected; empty when accepted.
    pub fn reasons(&self) -> &[Reason] {
        &self.reasons
    }
}

impl Policy {
    /// Decide on `subject` from every bundle found for it, each with where
    /// it came from. `actual` is the subject's digest computed locally,
    /// when the caller has the subject.
    pub fn decide(
        &self,
        subject: &Subject,
        actual: Option<Actual>,
        bundles: Vec<(String, Result<VerifiedBundle, Refusal>)>,
    ) -> Decision {
        self.decide_with(subject, actual, bundles, |_| Vec::new())
    }

    /// [`Policy::decide`], where `more` gives further reasons a verified
    /// bundle's builder cannot count (recursive verification: its build
    /// trace names an input that is not trusted).
    pub fn decide_with(
        &self,
        subject: &Subject,
        actual: Option<Actual>,
        bundles: Vec<(String, Result<VerifiedBundle, Refusal>)>,
        mut more: impl FnMut(&VerifiedBundle) -> Vec<Why>,
    ) -> Decision {
        let t = &self.threshold;
        let mut excluded = Vec::new();
        // Builders that pass every check but the digest (contenders), and
        // whether they also state the actual digest.
        let mut contenders: Vec<(Builder, Option<Why>)> = Vec::new();
        let mut seen_keys: Vec<[u8; 32]> = Vec::new();
        for (source, outcome) in bundles {
            let v = match outcome {
                Ok(v) => v,
                Err(refusal) => {
                    excluded.push(Excluded {
                        source,
                        builder: None,
                        reasons: vec![Why::Refused(refusal.to_string())],
                    });
                    continue;
                }
            };
            let s = v.statement();
            let builder = Builder {
                name: self.builder_name(&s.worker_key),
                worker_key: s.worker_key,
                source_commit: s.source_commit.clone(),
                unit: unit(&v, t.distinct),
                platform: match v.evidence() {
                    VerifiedEvidence::Snp(_) => "snp",
                    VerifiedEvidence::Tpm(_) => "tpm",
                    VerifiedEvidence::Azure(_) => "azure",
                },
                reference_commit: v.evidence().reference_commit().map(str::to_owned),
                sha256: s.sha256,
                size: s.size,
                source,
            };
            let mut reasons = Vec::new();
            if s.subject != *subject {
                reasons.push(Why::OtherSubject(s.subject.clone()));
            } else if !seen_keys.contains(&s.worker_key) {
                seen_keys.push(s.worker_key);
            }
            reasons.extend(self.ineligible(&v));
            if reasons.is_empty() {
                reasons.extend(more(&v));
            }
            let stated = Actual {
                sha256: s.sha256,
                size: s.size,
            };
            let mismatch = actual
                .filter(|a| *a != stated)
                .map(|actual| Why::DigestMismatch { stated, actual });
            if reasons.is_empty() {
                contenders.push((builder, mismatch));
            } else {
                reasons.extend(mismatch);
                excluded.push(Excluded {
                    source: builder.source.clone(),
                    builder: Some(builder),
                    reasons,
                });
            }
        }

        // Who states what, among builders that would otherwise count.
        let mut claims: Vec<Claim> = Vec::new();
        for (b, _) in &contenders {
            let d = digest_of(b);
            match claims.iter_mut().find(|c| c.digest == d) {
                Some(c) => c.builders.push(b.name.clone()),
                None => claims.push(Claim {
                    digest: d,
                    builders: vec![b.name.clone()],
                }),
            }
        }
        let disagreement = if claims.len() > 1 { claims } else { Vec::new() };

        // Per digest, one builder per distinct unit.
        let mut groups: Vec<(Actual, Vec<Builder>)> = Vec::new();
        for (b, mismatch) in contenders {
            if let Some(why) = mismatch {
                excluded.push(Excluded {
                    source: b.source.clone(),
                    builder: Some(b),
                    reasons: vec![why],
                });
                continue;
            }
            let d = digest_of(&b);
            let at = match groups.iter().position(|(g, _)| *g == d) {
                Some(i) => i,
                None => {
                    groups.push((d, Vec::new()));
                    groups.len().saturating_sub(1)
                }
            };
            let Some((_, members)) = groups.get_mut(at) else {
                continue;
            };
            match members.iter().find(|m| m.unit == b.unit) {
                Some(first) => excluded.push(Excluded {
                    source: b.source.clone(),
                    reasons: vec![Why::Duplicate {
                        unit: b.unit.clone(),
                        counted: first.source.clone(),
                    }],
                    builder: Some(b),
                }),
                None => members.push(b),
            }
        }

        let m = usize::try_from(t.m).unwrap_or(usize::MAX);
        let reached = groups.iter().filter(|(_, g)| g.len() >= m).count();
        let most = groups.iter().map(|(_, g)| g.len()).max().unwrap_or(0);
        let leaders = groups.iter().filter(|(_, g)| g.len() == most).count();
        let mut reasons = Vec::new();
        let lead = if reached > 1 || (reached == 0 && leaders > 1) {
            reasons.push(Reason::Conflict {
                digests: groups.len(),
            });
            None
        } else {
            groups.iter().position(|(_, g)| g.len() == most)
        };
        let digest = lead.and_then(|i| groups.get(i)).map(|(d, _)| *d);
        let groups_len = groups.len();
        let mut counted = Vec::new();
        for (i, (d, members)) in groups.into_iter().enumerate() {
            if Some(i) == lead {
                counted = members;
                continue;
            }
            for b in members {
                let why = match digest {
                    Some(c) => Why::Dissent {
                        stated: d,
                        counted: c,
                    },
                    None => Why::Conflicting { stated: d },
                };
                excluded.push(Excluded {
                    source: b.source.clone(),
                    builder: Some(b),
                    reasons: vec![why],
                });
            }
        }
        // On a conflict nothing is counted; say how far the best digest got
        // only when that is short of M too.
        let short = if lead.is_some() || groups_len == 0 {
            Some(counted.len()).filter(|&c| c < m)
        } else {
            Some(most).filter(|&c| c < m)
        };
        if let Some(counted) = short {
            reasons.push(Reason::TooFew {
                counted,
                required: t.m,
                distinct: t.distinct,
            });
        }
        let missing = match &t.builders {
            Builders::Named(named) => named
                .iter()
                .filter(|n| !seen_keys.contains(&n.key.0))
                .map(|n| n.name.clone())
                .collect(),
            Builders::Any => Vec::new(),
        };
        Decision {
            subject: subject.clone(),
            actual,
            required: t.m,
            distinct: t.distinct,
            digest,
            counted,
            excluded,
            missing,
            disagreement,
            reasons,
        }
    }

    /// Why the builder of the verified bundle `v` cannot count for any
    /// subject under this policy: its source commit is not accepted, its
    /// measurement matched another commit's reference values, or the
    /// policy names builders and not its key. Empty when it can. The one
    /// place these checks live: [`Policy::decide`] and every command that
    /// reports on bundles apply them.
    pub fn ineligible(&self, v: &VerifiedBundle) -> Vec<Why> {
        let s = v.statement();
        let mut reasons = Vec::new();
        let accepted_commits = match v.evidence() {
            VerifiedEvidence::Snp(_) => &self.snp.accepted_commits,
            // An Azure CVM's boot is appraised as a TPM's.
            VerifiedEvidence::Tpm(_) | VerifiedEvidence::Azure(_) => &self.tpm.accepted_commits,
        };
        if let Some(commits) = accepted_commits
            && !commits.contains(&s.source_commit)
        {
            reasons.push(Why::CommitNotAccepted(s.source_commit.clone()));
        }
        if let Some(r) = v.evidence().reference_commit()
            && r != s.source_commit
        {
            reasons.push(Why::MeasuredOtherCommit {
                stated: s.source_commit.clone(),
                measured: r.to_owned(),
            });
        }
        if let Builders::Named(named) = &self.threshold.builders
            && !named.iter().any(|n| n.key.0 == s.worker_key)
        {
            reasons.push(Why::KeyNotNamed);
        }
        reasons
    }

    fn builder_name(&self, key: &[u8; 32]) -> String {
        if let Builders::Named(named) = &self.threshold.builders
            && let Some(n) = named.iter().find(|n| n.key.0 == *key)
        {
            return n.name.clone();
        }
        format!("worker {}", hex::encode(key.get(..8).unwrap_or_default()))
    }
}

fn digest_of(b: &Builder) -> Actual {
    Actual {
        sha256: b.sha256,
        size: b.size,
    }
}

/// What makes `v`'s builder distinct under `distinct`. CHIP_ID is
/// authenticated for a VCEK (it must equal the VCEK's hwID; on Turin the
/// hwID is CHIP_ID's first 8 bytes, so only those count). A VLEK report has
/// no chip ID: a VLEK is one unit per cloud and public key, since the
/// cloud may load it on any number of chips. A TPM's unit is its
/// endorsement key (the AK certificate names it by its public key), else
/// its attestation key's public key (fixedTPM: one TPM), and its platform
/// the CA that certified the AK. An Azure CVM is its SNP report's chip, and
/// its platform the cloud. Every unit is read from signed, canonical
/// content (STYLE.md, "Identity"): never from bytes as received.
fn unit(v: &VerifiedBundle, distinct: Distinct) -> String {
    if distinct == Distinct::Key {
        return format!("key {}", hex::encode(v.statement().worker_key));
    }
    let snp = match v.evidence() {
        VerifiedEvidence::Snp(r) => r,
        // An Azure CVM runs on the chip its paravisor's SNP report names
        // (CHIP_ID, authenticated by the VCEK), so it counts as that chip.
        VerifiedEvidence::Azure(_) if distinct == Distinct::Platform => {
            return "cloud Azure".into();
        }
        VerifiedEvidence::Azure(a) => a.snp(),
        VerifiedEvidence::Tpm(t) => {
            return match distinct {
                Distinct::Platform => format!("TPM certified by {}", t.ak_issuer()),
                _ => match t.ek_key_id() {
                    Some(ek) => format!("TPM EK {}", hex::encode(ek)),
                    None => format!("TPM AK {}", hex::encode(t.boot().ak_key_id())),
                },
            };
        }
    };
    let auth = snp.authenticated();
    let vlek = auth.signer() == CertRole::Vlek;
    let cloud = auth.csp_id().unwrap_or("unnamed cloud");
    match distinct {
        Distinct::Key => format!("key {}", hex::encode(v.statement().worker_key)),
        Distinct::Chip if vlek => {
            format!("VLEK {cloud} {}", hex::encode(auth.vek_key_id()))
        }
        Distinct::Chip => {
            let chip = snp.report().chip_id();
            let len = auth.product().hw_id_len();
            format!("chip {}", hex::encode(chip.get(..len).unwrap_or(chip)))
        }
        Distinct::Platform if vlek => format!("cloud {cloud}"),
        Distinct::Platform => format!("platform {} VCEK", auth.product()),
    }
}
