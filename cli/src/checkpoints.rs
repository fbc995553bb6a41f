//! The CLI side of checkpoint memory and freshness (`verifier::witness`),
//! shared by `provenix verify` and `provenix report`: where the memory
//! lives, where consistency proofs come from, and how a checkpoint that is
//! stale, forked or unproven turns a verified bundle into a refused one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use provenix_verifier::{
    Conflict, ConsistencyProof, Error, Finding, Hash, Observation, Policy, ProofSource, Refusal,
    Rejection, Seen, Unproven, VerifiedBundle, Witness, check_freshness,
};

use crate::sources::grpc;

/// Flags for the checkpoint memory (docs/policy.md, "Checkpoints").
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct CheckpointArgs {
    /// Where the checkpoints seen of each worker log are remembered.
    /// Default: $XDG_CACHE_HOME/provenix/checkpoints, else
    /// ~/.cache/provenix/checkpoints.
    #[arg(long, value_name = "DIR")]
    checkpoint_cache: Option<PathBuf>,
    /// Remember nothing between runs (bundles of one log must still agree
    /// with each other).
    #[arg(long, conflicts_with = "checkpoint_cache")]
    no_checkpoint_cache: bool,
    /// A consistency proof (`.consistency` file) to use; may be repeated.
    /// Those in a bundle directory are read too.
    #[arg(long, value_name = "FILE")]
    consistency: Vec<PathBuf>,
}

impl CheckpointArgs {
    /// The memory directory, or `None` with `--no-checkpoint-cache`.
    fn memory(&self) -> Result<Option<PathBuf>> {
        if self.no_checkpoint_cache {
            return Ok(None);
        }
        if let Some(dir) = &self.checkpoint_cache {
            return Ok(Some(dir.clone()));
        }
        let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(xdg) => PathBuf::from(xdg),
            None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                Some(home) => PathBuf::from(home).join(".cache"),
                None => bail!(
                    "neither XDG_CACHE_HOME nor HOME is set: pass --checkpoint-cache DIR or --no-checkpoint-cache"
                ),
            },
        };
        Ok(Some(base.join("provenix").join("checkpoints")))
    }
}

/// Consistency proofs read from files, then asked of other sources in turn
/// (workers' Log APIs, binary caches).
pub(crate) struct Proofs<'a> {
    files: Vec<ConsistencyProof>,
    asked: Vec<&'a dyn ProofSource>,
}

impl ProofSource for Proofs<'_> {
    fn consistency(&self, origin: &str, size1: u64, size2: u64) -> Option<Vec<Hash>> {
        self.files.consistency(origin, size1, size2).or_else(|| {
            self.asked
                .iter()
                .find_map(|s| s.consistency(origin, size1, size2))
        })
    }
}

/// Consistency proofs asked of workers' gRPC Log APIs (`--worker`), each
/// connected on first need. A worker serves its current log: its origin is
/// read from its latest checkpoint, and only proofs of that log are asked
/// of it. Nothing it answers is trusted; the witness verifies the proof.
pub(crate) struct LiveProofs {
    workers: std::cell::RefCell<Vec<LiveWorker>>,
    tls: Option<grpc::Tls>,
    timeout: Duration,
}

struct LiveWorker {
    url: String,
    /// `None` until connected; `Some(None)` once connecting failed.
    api: Option<Option<(grpc::LogApi, String)>>,
}

impl LiveProofs {
    pub(crate) fn new(urls: &[String], tls: Option<&grpc::Tls>, timeout: Duration) -> LiveProofs {
        LiveProofs {
            workers: std::cell::RefCell::new(
                urls.iter()
                    .map(|url| LiveWorker {
                        url: url.clone(),
                        api: None,
                    })
                    .collect(),
            ),
            tls: tls.cloned(),
            timeout,
        }
    }
}

impl ProofSource for LiveProofs {
    fn consistency(&self, origin: &str, size1: u64, size2: u64) -> Option<Vec<Hash>> {
        let mut workers = self.workers.borrow_mut();
        for w in workers.iter_mut() {
            let api = w.api.get_or_insert_with(|| {
                let connected = grpc::LogApi::connect(&w.url, self.tls.as_ref(), self.timeout)
                    .and_then(|api| {
                        let note = api.checkpoint(None)?.note;
                        let origin = note.lines().next().unwrap_or_default().to_owned();
                        Ok((api, origin))
                    });
                connected
                    .map_err(|e| eprintln!("provenix: warning: {}: {e:#}", w.url))
                    .ok()
            });
            if let Some((api, served)) = api
                && served == origin
            {
                match api.consistency_proof(size1, size2) {
                    Ok(proof) => return Some(proof),
                    Err(e) => eprintln!("provenix: warning: {}: {e:#}", w.url),
                }
            }
        }
        None
    }
}

/// Read the `--consistency` files and every `*.consistency` file in `dirs`.
pub(crate) fn proofs<'a>(
    args: &CheckpointArgs,
    dirs: &[&Path],
    asked: &[&'a dyn ProofSource],
) -> Result<Proofs<'a>> {
    let mut paths = args.consistency.clone();
    for dir in dirs {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot read {}", dir.display()))?
                .path();
            if path.extension().is_some_and(|e| e == "consistency") && path.is_file() {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let bytes = crate::input::read(&path, crate::input::CONSISTENCY)?;
        files.push(ConsistencyProof::parse(&bytes).with_context(|| path.display().to_string())?);
    }
    Ok(Proofs {
        files,
        asked: asked.to_vec(),
    })
}

/// One bundle after `verify_bundle`: where it came from, its bytes, the
/// outcome.
pub(crate) type Checked<'b> = (String, &'b [u8], Result<VerifiedBundle, Refusal>);

/// Apply freshness (`[checkpoint] max_age`) and the checkpoint memory to
/// bundles `verify_bundle` accepted: a stale, forked or (by default)
/// unproven checkpoint refuses its bundle. Warnings and fork evidence go to
/// stderr; the memory is updated.
pub(crate) fn screen(
    args: &CheckpointArgs,
    policy: &Policy,
    at: i64,
    proofs: &Proofs<'_>,
    bundles: Vec<Checked<'_>>,
) -> Result<Vec<(String, Result<VerifiedBundle, Refusal>)>> {
    let mut witness = Witness::new(args.memory()?);
    // The checkpoint of each bundle still accepted, once fresh.
    let mut out: Vec<(String, Result<VerifiedBundle, Refusal>, Option<Seen>)> = Vec::new();
    for (source, bytes, outcome) in bundles {
        let (outcome, seen) = match outcome {
            Ok(v) => match Seen::from_bundle(bytes, &v) {
                Ok(None) => (Ok(v), None),
                Ok(Some(seen)) => match policy.checkpoint.max_age {
                    Some(max) => match check_freshness(seen.checkpoint(), max.0, at) {
                        Ok(()) => (Ok(v), Some(seen)),
                        Err(finding) => (Err(stale(finding)), None),
                    },
                    None => (Ok(v), Some(seen)),
                },
                Err(e) => (Err(Refusal::Invalid(e)), None),
            },
            Err(r) => (Err(r), None),
        };
        out.push((source, outcome, seen));
    }

    // Each distinct checkpoint once, smallest first per log, so proofs run
    // from old to new as logs serve them.
    let mut distinct: Vec<&Seen> = Vec::new();
    for seen in out.iter().filter_map(|(_, _, s)| s.as_ref()) {
        if !distinct.iter().any(|d| {
            d.worker_key() == seen.worker_key()
                && d.size() == seen.size()
                && d.root() == seen.root()
        }) {
            distinct.push(seen);
        }
    }
    distinct.sort_by_key(|s| (*s.worker_key(), s.size()));
    let mut verdicts: Vec<(Seen, Result<Observation, Conflict>)> = Vec::new();
    for seen in distinct {
        let verdict = witness.observe(seen, proofs)?;
        verdicts.push((seen.clone(), verdict));
    }
    for conflict in witness.commit(proofs)? {
        if let Conflict::Forked { fork, .. } = &conflict {
            for (s, v) in &mut verdicts {
                if s.origin() == fork.origin {
                    *v = Err(conflict.clone());
                }
            }
        }
    }
    // A fork found late refuses every bundle of the log, also those whose
    // checkpoint was observed before it.
    let forks: Vec<Conflict> = verdicts
        .iter()
        .filter_map(|(_, v)| v.as_ref().err())
        .filter(|c| matches!(c, Conflict::Forked { .. }))
        .cloned()
        .collect();
    let mut reported: Vec<String> = Vec::new();
    let mut result = Vec::new();
    for (source, outcome, seen) in out {
        let Some(seen) = seen else {
            result.push((source, outcome));
            continue;
        };
        let fork = forks.iter().find(|c| match c {
            Conflict::Forked { fork, .. } => fork.origin == seen.origin(),
            Conflict::Unproven { .. } => false,
        });
        let verdict = match fork {
            Some(c) => Err(c.clone()),
            None => verdicts
                .iter()
                .find(|(s, _)| {
                    s.worker_key() == seen.worker_key()
                        && s.size() == seen.size()
                        && s.root() == seen.root()
                })
                .map_or(Ok(Observation::Same), |(_, v)| v.clone()),
        };
        let outcome = match verdict {
            Ok(_) => outcome,
            Err(conflict) => {
                let message = conflict.to_string();
                if !reported.contains(&message) {
                    report(&conflict);
                    reported.push(message.clone());
                }
                match (&conflict, policy.checkpoint.unproven) {
                    (Conflict::Unproven { .. }, Unproven::Warn) => outcome,
                    _ => Err(Refusal::Invalid(Error::Binding(message))),
                }
            }
        };
        result.push((source, outcome));
    }
    Ok(result)
}

/// A stale checkpoint, as the policy finding it is.
fn stale(finding: Finding) -> Refusal {
    Refusal::Policy {
        evidence: provenix_verifier::Role::Checkpoint,
        rejection: Rejection {
            findings: vec![finding],
        },
    }
}

/// Tell the user on stderr; a fork with both signed notes, so the proof of
/// misbehaviour is in the output even without a memory directory.
fn report(conflict: &Conflict) {
    match conflict {
        Conflict::Forked { fork, .. } => {
            eprintln!("provenix: FORK: {conflict}");
            for (i, note) in fork.notes.iter().enumerate() {
                eprintln!("--- signed checkpoint {}:\n{note}", i.saturating_add(1));
            }
        }
        Conflict::Unproven { .. } => eprintln!("provenix: warning: {conflict}"),
    }
}
