//! Recursive verification: a store path is accepted only if its statement
//! is, and every input its build used is trusted, recursively
//! (DESIGN.md, "Transitive trust").
//!
//! A builder counts for a path only when the build trace in its statement
//! names trusted inputs alone. An input is trusted when
//!
//! 1. it is content-addressed and checks itself: the content hash the
//!    trace recorded, its name and references reproduce its store path
//!    ([`TraceInput::check_content`]), offline;
//! 2. the policy names it as a root of the graph (`[graph] trusted_paths`),
//!    or a plain Nix key the policy names signed it with the NAR hash the
//!    trace recorded (`[graph] trusted_nix_keys`, checked by the caller's
//!    [`BundleLookup::signed_by`]);
//! 3. or it is itself accepted under the policy, recursively, and the
//!    accepted NAR hash is the one the trace recorded.
//!
//! Each path is decided once, however many traces name it; the walk keeps
//! its own stack, so a deep graph cannot overflow the thread's, and a
//! cycle (which Nix cannot make, but a hostile trace can claim) makes the
//! input untrusted instead of looping.

use std::collections::HashMap;
use std::fmt;

use crate::decide::{Actual, Claim, Decision, Why};
use crate::error::Refusal;
use crate::nixsig::nar_hash;
use crate::policy::Policy;
use crate::statement::Subject;
use crate::trace::TraceInput;
use crate::verify_bundle::VerifiedBundle;

/// The bundles found for one path: each verified or refused, with where
/// it came from (what [`Policy::decide`] takes).
pub type Found = Vec<(String, Result<VerifiedBundle, Refusal>)>;

/// Where recursive verification finds the bundles of a path.
pub trait BundleLookup {
    /// Every bundle found for the store path `path`, each verified (or
    /// refused) and with where it came from.
    fn bundles(&mut self, path: &str) -> Found;

    /// Whether a plain Nix signature by one of `keys` (`name:base64`)
    /// states `nar_sha256` for `path`: the name of the key that signed, if
    /// one did. Only asked when the policy names keys; the default finds
    /// no signature.
    fn signed_by(
        &mut self,
        _path: &str,
        _nar_sha256: &[u8; 32],
        _keys: &[String],
    ) -> Option<String> {
        None
    }
}

/// An input a build trace names that is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UntrustedInput {
    /// The input's store path.
    pub path: String,
    /// The SHA-256 of its NAR the trace recorded.
    pub recorded: [u8; 32],
    /// Why it is not trusted.
    pub problem: Problem,
}

/// Why an input is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// It is content-addressed, and what the trace recorded does not
    /// reproduce its path.
    Content(String),
    /// It is accepted under the policy, with another NAR hash.
    OtherHash {
        /// The accepted digest.
        accepted: Actual,
        /// The builders counted for it.
        builders: Vec<String>,
    },
    /// It is not accepted under the policy.
    NotAccepted {
        /// Every digest stated for it by builders that were not excluded
        /// for other reasons, and who states it.
        claims: Vec<Claim>,
        /// Why its decision rejected it.
        reasons: Vec<String>,
        /// Untrusted inputs of its own builds, by path: where the
        /// problem lies further down.
        below: Vec<String>,
    },
    /// Deciding it needs its own decision (a cycle).
    Cycle,
}

impl fmt::Display for UntrustedInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let recorded = nar_hash(&self.recorded);
        write!(f, "{} (the trace recorded {recorded}): ", self.path)?;
        match &self.problem {
            Problem::Content(why) => write!(f, "content-addressed, but {why}"),
            Problem::OtherHash { accepted, builders } => write!(
                f,
                "the builders trusted for it ({}) state {}",
                builders.join(", "),
                nar_hash(&accepted.sha256)
            ),
            Problem::NotAccepted {
                claims,
                reasons,
                below,
            } => {
                f.write_str("not accepted under the policy")?;
                if !reasons.is_empty() {
                    write!(f, " ({})", reasons.join("; "))?;
                }
                if claims.is_empty() {
                    f.write_str(", no builder that counts states a hash for it")?;
                }
                for c in claims {
                    write!(
                        f,
                        ", {} states {}",
                        c.builders.join(" and "),
                        nar_hash(&c.digest.sha256)
                    )?;
                }
                if !below.is_empty() {
                    write!(f, ", its builds used untrusted {}", below.join(", "))?;
                }
                Ok(())
            }
            Problem::Cycle => f.write_str("its trace leads back to itself"),
        }
    }
}

/// How a path of the graph came to be trusted, other than by its own
/// decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphRoot {
    /// Named in `[graph] trusted_paths`.
    Named,
    /// Signed by this plain Nix key the policy names.
    SignedBy(String),
}

/// The outcome of recursive verification.
#[derive(Debug)]
pub struct GraphDecision {
    target: String,
    decisions: HashMap<String, Decision>,
    roots: Vec<(String, GraphRoot)>,
    content_addressed: usize,
}

impl GraphDecision {
    /// The decision on the path asked about.
    pub fn decision(&self) -> &Decision {
        // `decide_graph` always decides the target.
        self.decisions
            .get(&self.target)
            .unwrap_or_else(|| unreachable!("the target is decided"))
    }

    /// Whether it is accepted.
    pub fn accepted(&self) -> bool {
        self.decision().accepted()
    }

    /// Every path decided (the target and the inputs that needed a
    /// decision), in path order.
    pub fn decisions(&self) -> Vec<&Decision> {
        let mut all: Vec<&Decision> = self.decisions.values().collect();
        all.sort_by(|a, b| a.subject().name().cmp(b.subject().name()));
        all
    }

    /// Inputs trusted as roots of the graph, and how.
    pub fn roots(&self) -> &[(String, GraphRoot)] {
        &self.roots
    }

    /// Distinct content-addressed inputs that checked themselves.
    pub fn content_addressed(&self) -> usize {
        self.content_addressed
    }
}

/// Decide on the store path `target` and, recursively, on every input its
/// builds used. `actual` is the target's digest computed locally, when
/// the caller has it.
pub fn decide_graph(
    policy: &Policy,
    target: &str,
    actual: Option<Actual>,
    lookup: &mut dyn BundleLookup,
) -> GraphDecision {
    let mut walk = Walk {
        policy,
        lookup,
        decisions: HashMap::new(),
        content: HashMap::new(),
        roots: HashMap::new(),
    };
    let mut pending: HashMap<String, Found> = HashMap::new();
    let mut stack: Vec<(String, bool)> = vec![(target.to_owned(), false)];
    while let Some((path, expanded)) = stack.pop() {
        if walk.decisions.contains_key(&path) {
            continue;
        }
        if !expanded {
            if pending.contains_key(&path) {
                continue;
            }
            let bundles = walk.lookup.bundles(&path);
            let mut needed = Vec::new();
            for v in bundles.iter().filter_map(|(_, o)| o.as_ref().ok()) {
                if !walk.counts_but_for_trace(v, &path) {
                    continue;
                }
                for input in v.statement().trace.iter().flat_map(|t| &t.inputs) {
                    if walk.needs_decision(input)
                        && !walk.decisions.contains_key(&input.path)
                        && !pending.contains_key(&input.path)
                    {
                        needed.push(input.path.clone());
                    }
                }
            }
            pending.insert(path.clone(), bundles);
            stack.push((path, true));
            stack.extend(needed.into_iter().map(|p| (p, false)));
        } else {
            let bundles = pending.remove(&path).unwrap_or_default();
            let actual = if path == target { actual } else { None };
            let subject = Subject::StorePath(path.clone());
            let decision = {
                let policy = walk.policy;
                policy.decide_with(&subject, actual, bundles, |v| walk.trace_reasons(v))
            };
            walk.decisions.insert(path, decision);
        }
    }
    let mut roots: Vec<(String, GraphRoot)> = walk
        .roots
        .into_iter()
        .filter_map(|((path, _), root)| Some((path, root?)))
        .collect();
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    roots.dedup_by(|a, b| a.0 == b.0);
    GraphDecision {
        target: target.to_owned(),
        decisions: walk.decisions,
        roots,
        content_addressed: walk.content.values().filter(|r| r.is_ok()).count(),
    }
}

struct Walk<'a> {
    policy: &'a Policy,
    lookup: &'a mut dyn BundleLookup,
    decisions: HashMap<String, Decision>,
    /// Content-addressed inputs checked, by what the trace says of them.
    content: HashMap<TraceInput, Result<(), String>>,
    /// Roots asked about, by path and recorded hash.
    roots: HashMap<(String, [u8; 32]), Option<GraphRoot>>,
}

impl Walk<'_> {
    /// Whether `v`'s builder could count for `path` if its trace were
    /// trusted: only such builders' inputs are worth fetching.
    fn counts_but_for_trace(&self, v: &VerifiedBundle, path: &str) -> bool {
        v.statement().subject == Subject::StorePath(path.to_owned())
            && self.policy.ineligible(v).is_empty()
    }

    /// Whether the input is trusted only through its own decision.
    fn needs_decision(&mut self, input: &TraceInput) -> bool {
        input.content.is_none() && self.root(input).is_none()
    }

    fn root(&mut self, input: &TraceInput) -> Option<GraphRoot> {
        let key = (input.path.clone(), input.nar_sha256);
        if let Some(known) = self.roots.get(&key) {
            return known.clone();
        }
        let root = if self.policy.graph.trusted_paths.contains(&input.path) {
            Some(GraphRoot::Named)
        } else if self.policy.graph.trusted_nix_keys.is_empty() {
            None
        } else {
            self.lookup
                .signed_by(
                    &input.path,
                    &input.nar_sha256,
                    &self.policy.graph.trusted_nix_keys,
                )
                .map(GraphRoot::SignedBy)
        };
        self.roots.insert(key, root.clone());
        root
    }

    /// Why `v`'s builder cannot count: no trace, or untrusted inputs.
    fn trace_reasons(&mut self, v: &VerifiedBundle) -> Vec<Why> {
        let Some(trace) = &v.statement().trace else {
            return vec![Why::NoTrace];
        };
        let mut untrusted = Vec::new();
        for input in &trace.inputs {
            if let Some(problem) = self.problem(input) {
                untrusted.push(UntrustedInput {
                    path: input.path.clone(),
                    recorded: input.nar_sha256,
                    problem,
                });
            }
        }
        if untrusted.is_empty() {
            Vec::new()
        } else {
            vec![Why::UntrustedInputs(untrusted)]
        }
    }

    /// Why `input` is not trusted, or `None` when it is.
    fn problem(&mut self, input: &TraceInput) -> Option<Problem> {
        if input.content.is_some() {
            let checked = match self.content.get(input) {
                Some(known) => known.clone(),
                None => {
                    let r = input.check_content().unwrap_or(Ok(()));
                    self.content.insert(input.clone(), r.clone());
                    r
                }
            };
            return checked.err().map(Problem::Content);
        }
        if self.root(input).is_some() {
            return None;
        }
        let Some(d) = self.decisions.get(&input.path) else {
            return Some(Problem::Cycle);
        };
        if d.accepted() {
            let accepted = d.digest()?;
            return (accepted.sha256 != input.nar_sha256).then(|| Problem::OtherHash {
                accepted,
                builders: d.counted().iter().map(|b| b.name.clone()).collect(),
            });
        }
        let mut claims: Vec<Claim> = d.disagreement().to_vec();
        if claims.is_empty()
            && let Some(digest) = d.digest()
            && !d.counted().is_empty()
        {
            claims.push(Claim {
                digest,
                builders: d.counted().iter().map(|b| b.name.clone()).collect(),
            });
        }
        let mut below: Vec<String> = d
            .excluded()
            .iter()
            .flat_map(|e| &e.reasons)
            .filter_map(|w| match w {
                Why::UntrustedInputs(u) => Some(u.iter().map(|u| u.path.clone())),
                _ => None,
            })
            .flatten()
            .collect();
        below.sort();
        below.dedup();
        Some(Problem::NotAccepted {
            claims,
            reasons: d.reasons().iter().map(ToString::to_string).collect(),
            below,
        })
    }
}
