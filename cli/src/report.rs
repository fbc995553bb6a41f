//! `provenix report`: reproducibility per derivation over a set of bundles.
//!
//! Every bundle is verified as `provenix verify` would (evidence, bindings,
//! policy, checkpoint freshness and memory); only verified statements are
//! counted. They are grouped by derivation and output, and for each output
//! the report lists every builder (key, source commit, chip), the NAR hash
//! each states, and whether they agree. docs/report.md documents the text
//! and the `provenix.report/v1` JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use provenix_verifier::{
    Builders, BundleVerifier, CertRole, Policy, Subject, Trace, VerifiedBundle, VerifiedEvidence,
};
use serde_json::{Value, json};

use crate::checkpoints::{self, CheckpointArgs};

/// The JSON schema name; fields are only added within a version.
const SCHEMA: &str = "provenix.report/v1";

/// How deep directories are searched: an export directory, or a directory
/// of them per worker, is two levels; eight leaves room without following
/// a link loop forever.
const MAX_DEPTH: usize = 8;

/// Most bundle files read in one report, so a mistaken `/` fails fast.
const MAX_FILES: usize = 1_000_000;

/// Arguments of `provenix report`.
#[derive(Args)]
pub(crate) struct ReportArgs {
    /// Bundle files, or directories searched for `*.provenix` files (what
    /// `provenix-worker export` writes), with their subdirectories.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// An AMD CRL (DER or PEM) to honour; may be repeated.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// The policy (TOML; see docs/policy.md).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Verification time: RFC 3339, YYYY-MM-DD or @UNIX-SECONDS.
    #[arg(long, value_parser = crate::parse_time)]
    at: Option<i64>,
    /// Print JSON for machines (docs/report.md).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
}

/// One verified statement about an output, by one builder.
struct Entry {
    bundle: String,
    name: String,
    worker_key: [u8; 32],
    source_commit: String,
    chip: String,
    sha256: [u8; 32],
    size: u64,
    log_index: Option<u64>,
    /// The build's trace, when the statement has one.
    trace: Option<Trace>,
}

/// Reproducibility of one output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Two or more builders, one digest.
    Agree,
    /// Builders state different digests.
    Disagree,
    /// One builder: nothing to compare.
    Single,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Agree => "agree",
            Status::Disagree => "disagree",
            Status::Single => "single",
        }
    }
}

/// A stated digest: the NAR's SHA-256 and size.
type Digest = ([u8; 32], u64);

/// An input whose hash builders' traces disagree on: each hash (`None`:
/// not in the trace) with the builders whose trace states it.
struct InputDifference<'a> {
    path: &'a str,
    stated: Vec<(Option<[u8; 32]>, Vec<&'a str>)>,
}

impl InputDifference<'_> {
    fn json(&self) -> Value {
        json!({
            "path": self.path,
            "stated": self.stated.iter().map(|(h, names)| json!({
                "sha256": h.map(hex::encode),
                "builders": names,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Builders of one output, grouped by the digest they state.
struct Output {
    subject: Subject,
    entries: Vec<Entry>,
}

impl Output {
    /// Each digest (SHA-256, size) with the entries that state it, in the
    /// order first seen.
    fn digests(&self) -> Vec<(Digest, Vec<&Entry>)> {
        let mut out: Vec<(Digest, Vec<&Entry>)> = Vec::new();
        for e in &self.entries {
            let d = (e.sha256, e.size);
            match out.iter_mut().find(|(g, _)| *g == d) {
                Some((_, members)) => members.push(e),
                None => out.push((d, vec![e])),
            }
        }
        out
    }

    fn builders(&self) -> usize {
        let mut keys: Vec<&[u8; 32]> = self.entries.iter().map(|e| &e.worker_key).collect();
        keys.sort();
        keys.dedup();
        keys.len()
    }

    fn chips(&self) -> usize {
        let mut chips: Vec<&str> = self.entries.iter().map(|e| e.chip.as_str()).collect();
        chips.sort_unstable();
        chips.dedup();
        chips.len()
    }

    /// Whether the builders' builds used the same inputs: `None` when a
    /// statement carries no trace or there is one builder; else the inputs
    /// whose NAR hashes differ between the traces (or that only some
    /// traces name), each with every hash stated and who stated it (the
    /// hash absent: not in that trace). Empty: the same inputs.
    fn input_differences(&self) -> Option<Vec<InputDifference<'_>>> {
        if self.entries.len() < 2 {
            return None;
        }
        let traces: Vec<&Trace> = self
            .entries
            .iter()
            .map(|e| e.trace.as_ref())
            .collect::<Option<_>>()?;
        let mut paths: Vec<&str> = traces
            .iter()
            .flat_map(|t| t.inputs.iter().map(|i| i.path.as_str()))
            .collect();
        paths.sort_unstable();
        paths.dedup();
        let mut out = Vec::new();
        for path in paths {
            let mut stated: Vec<(Option<[u8; 32]>, Vec<&str>)> = Vec::new();
            for (e, t) in self.entries.iter().zip(&traces) {
                let hash = t.input(path).map(|i| i.nar_sha256);
                match stated.iter_mut().find(|(h, _)| *h == hash) {
                    Some((_, names)) => names.push(&e.name),
                    None => stated.push((hash, vec![&e.name])),
                }
            }
            if stated.len() > 1 {
                out.push(InputDifference { path, stated });
            }
        }
        Some(out)
    }

    fn status(&self) -> Status {
        if self.digests().len() > 1 {
            Status::Disagree
        } else if self.builders() > 1 {
            Status::Agree
        } else {
            Status::Single
        }
    }
}

pub(crate) fn run(args: ReportArgs) -> Result<ExitCode> {
    let policy = crate::input::policy(args.policy.as_deref())?;
    // A report groups every verified builder; it decides nothing, so M
    // and the notion of distinct (it shows chips) are `verify`'s keys.
    policy.check_applicable(
        "report",
        &[
            "trust_amd_roots",
            "roots",
            "measurements",
            "snp",
            "tpm",
            "checkpoint",
            "threshold.builders",
        ],
    )?;
    let verifier = crate::verifier_with_crls(&policy, &args.crl)?;
    let at = args
        .at
        .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());

    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            collect(path, 0, &mut files, &mut dirs)?;
        } else {
            files.push(path.clone());
        }
    }
    let mut read = Vec::new();
    for path in &files {
        read.push((path.display().to_string(), read_bundle(path)?));
    }
    let memo = BundleVerifier::new(&verifier, &policy, at);
    let checked = read
        .iter()
        .map(|(source, bytes)| (source.clone(), bytes.as_slice(), memo.verify(bytes)))
        .collect();
    let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let proofs = checkpoints::proofs(&args.checkpoints, &dir_refs, &[])?;
    let outcomes = checkpoints::screen(&args.checkpoints, &policy, at, &proofs, checked)?;

    // derivation -> output name -> output.
    let mut derivations: BTreeMap<Option<String>, BTreeMap<String, Output>> = BTreeMap::new();
    let mut refused = Vec::new();
    for (source, outcome) in outcomes {
        // The per-bundle checks `verify` applies before counting a builder.
        let outcome = outcome.map(|v| {
            let why = policy.ineligible(&v);
            (v, why)
        });
        match outcome {
            Ok((_, why)) if !why.is_empty() => {
                let why: Vec<String> = why.iter().map(ToString::to_string).collect();
                refused.push((source, why.join("; ")));
            }
            Ok((v, _)) => {
                let s = v.statement();
                let outputs = derivations.entry(s.deriver.clone()).or_default();
                let output = outputs
                    .entry(s.subject.name().to_owned())
                    .or_insert_with(|| Output {
                        subject: s.subject.clone(),
                        entries: Vec::new(),
                    });
                let entry = entry(&policy, source, &v);
                // The same statement twice (a bundle copied, or exported
                // under two checkpoints) is one claim.
                if !output.entries.iter().any(|e| {
                    e.worker_key == entry.worker_key
                        && e.sha256 == entry.sha256
                        && e.size == entry.size
                }) {
                    output.entries.push(entry);
                }
            }
            Err(r) => refused.push((source, r.to_string())),
        }
    }
    let disagree = derivations
        .values()
        .flat_map(BTreeMap::values)
        .any(|o| o.status() == Status::Disagree);
    if args.json {
        let doc = to_json(at, files.len(), &derivations, &refused);
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", to_text(files.len(), &derivations, &refused));
    }
    Ok(if disagree {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every `*.provenix` file under `dir`, sorted; `dirs` gets every
/// directory visited (for `.consistency` files beside the bundles).
fn collect(
    dir: &Path,
    depth: usize,
    files: &mut Vec<PathBuf>,
    dirs: &mut Vec<PathBuf>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!(
            "{}: directories nested deeper than {MAX_DEPTH}",
            dir.display()
        );
    }
    dirs.push(dir.to_owned());
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        entries.push(
            entry
                .with_context(|| format!("cannot read {}", dir.display()))?
                .path(),
        );
    }
    entries.sort();
    for path in entries {
        // Symbolic links to directories are not followed: no loops.
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            collect(&path, depth.saturating_add(1), files, dirs)?;
        } else if path.extension().is_some_and(|e| e == "provenix") && path.is_file() {
            if files.len() >= MAX_FILES {
                bail!("more than {MAX_FILES} bundle files");
            }
            files.push(path);
        }
    }
    Ok(())
}

fn read_bundle(path: &Path) -> Result<Vec<u8>> {
    crate::input::read(path, crate::input::BUNDLE)
}

fn entry(policy: &Policy, bundle: String, v: &VerifiedBundle) -> Entry {
    let s = v.statement();
    let name = match &policy.threshold.builders {
        Builders::Named(named) => named
            .iter()
            .find(|n| n.key.0 == s.worker_key)
            .map(|n| n.name.clone()),
        Builders::Any => None,
    }
    .unwrap_or_else(|| {
        format!(
            "worker {}",
            hex::encode(s.worker_key.get(..8).unwrap_or_default())
        )
    });
    // As `distinct = "chip"` counts them (docs/policy.md): CHIP_ID for a
    // VCEK (on Turin its first 8 bytes), the cloud for a VLEK, the
    // attestation key for a TPM.
    let chip = match v.evidence() {
        VerifiedEvidence::Snp(r) if r.authenticated().signer() == CertRole::Vlek => format!(
            "VLEK {}",
            r.authenticated().csp_id().unwrap_or("unnamed cloud")
        ),
        VerifiedEvidence::Snp(r) => {
            let chip = r.report().chip_id();
            let len = r.authenticated().product().hw_id_len();
            hex::encode(chip.get(..len).unwrap_or(chip))
        }
        VerifiedEvidence::Azure(a) => {
            let chip = a.snp().report().chip_id();
            let len = a.snp().authenticated().product().hw_id_len();
            hex::encode(chip.get(..len).unwrap_or(chip))
        }
        VerifiedEvidence::Tpm(t) => format!(
            "TPM AK {}",
            hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                t.boot().ak_public()
            ))
        ),
    };
    Entry {
        bundle,
        name,
        worker_key: s.worker_key,
        source_commit: s.source_commit.clone(),
        chip,
        sha256: s.sha256,
        size: s.size,
        log_index: v.log_index(),
        trace: s.trace.clone(),
    }
}

type Derivations = BTreeMap<Option<String>, BTreeMap<String, Output>>;

fn to_json(
    at: i64,
    bundles: usize,
    derivations: &Derivations,
    refused: &[(String, String)],
) -> Value {
    let mut counts = [0usize; 3];
    let mut outputs_total = 0usize;
    let derivations_json: Vec<Value> = derivations
        .iter()
        .map(|(drv, outputs)| {
            let outputs: Vec<Value> = outputs
                .values()
                .map(|o| {
                    let status = o.status();
                    outputs_total = outputs_total.saturating_add(1);
                    let slot = match status {
                        Status::Agree => 0,
                        Status::Disagree => 1,
                        Status::Single => 2,
                    };
                    if let Some(c) = counts.get_mut(slot) {
                        *c = c.saturating_add(1);
                    }
                    let inputs = match o.input_differences() {
                        None => json!({"status": "untraced"}),
                        Some(d) if d.is_empty() => json!({"status": "same"}),
                        Some(d) => json!({
                            "status": "differ",
                            "differing": d.iter().map(InputDifference::json).collect::<Vec<_>>(),
                        }),
                    };
                    json!({
                        "subject": {"kind": o.subject.kind(), "name": o.subject.name()},
                        "status": status.name(),
                        "inputs": inputs,
                        "counts": {
                            "builders": o.builders(),
                            "chips": o.chips(),
                            "digests": o.digests().len(),
                        },
                        "builders": o.entries.iter().map(|e| json!({
                            "bundle": e.bundle,
                            "name": e.name,
                            "worker_key": hex::encode(e.worker_key),
                            "source_commit": e.source_commit,
                            "chip": e.chip,
                            "sha256": hex::encode(e.sha256),
                            "size": e.size,
                            "log_index": e.log_index,
                            "traced_inputs": e.trace.as_ref().map(|t| t.inputs.len()),
                        })).collect::<Vec<_>>(),
                        "digests": o.digests().iter().map(|((sha, size), members)| json!({
                            "sha256": hex::encode(sha),
                            "size": size,
                            "builders": members.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"derivation": drv, "outputs": outputs})
        })
        .collect();
    let [agree, disagree, single] = counts;
    json!({
        "schema": SCHEMA,
        "at": at,
        "summary": {
            "bundles": bundles,
            "refused": refused.len(),
            "derivations": derivations.len(),
            "outputs": outputs_total,
            "agree": agree,
            "disagree": disagree,
            "single": single,
        },
        "derivations": derivations_json,
        "refused": refused.iter().map(|(b, r)| json!({"bundle": b, "reason": r})).collect::<Vec<_>>(),
    })
}

fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

fn to_text(bundles: usize, derivations: &Derivations, refused: &[(String, String)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (mut agree, mut disagree, mut single, mut outputs) = (0usize, 0usize, 0usize, 0usize);
    let _ = writeln!(
        out,
        "{:<9} {:>8} {:>7}  DERIVATION -> OUTPUT",
        "STATUS", "BUILDERS", "DIGESTS"
    );
    for (drv, outs) in derivations {
        for o in outs.values() {
            outputs = outputs.saturating_add(1);
            let status = o.status();
            let counter = match status {
                Status::Agree => &mut agree,
                Status::Disagree => &mut disagree,
                Status::Single => &mut single,
            };
            *counter = counter.saturating_add(1);
            let label = match status {
                Status::Disagree => "DISAGREE".to_owned(),
                s => s.name().to_owned(),
            };
            let digests = o.digests();
            let _ = writeln!(
                out,
                "{label:<9} {:>8} {:>7}  {} -> {}",
                o.builders(),
                digests.len(),
                drv.as_deref().unwrap_or("(no derivation)"),
                o.subject.name()
            );
            if status == Status::Disagree {
                // Different inputs, or the same inputs and another output:
                // a reproducibility failure of the inputs, or of the build.
                match o.input_differences() {
                    None => {
                        let _ = writeln!(out, "    inputs: not all statements carry a build trace");
                    }
                    Some(d) if d.is_empty() => {
                        let _ = writeln!(
                            out,
                            "    inputs: the same in every trace: the build is not deterministic"
                        );
                    }
                    Some(d) => {
                        let _ = writeln!(out, "    inputs: {} differ between the traces:", d.len());
                        for diff in &d {
                            let stated: Vec<String> = diff
                                .stated
                                .iter()
                                .map(|(h, names)| {
                                    format!(
                                        "{} by {}",
                                        h.map_or_else(
                                            || "absent".to_owned(),
                                            |h| provenix_verifier::nixsig::nar_hash(&h)
                                        ),
                                        names.join(", ")
                                    )
                                })
                                .collect();
                            let _ = writeln!(out, "      {}: {}", diff.path, stated.join("; "));
                        }
                    }
                }
                for ((sha, size), members) in &digests {
                    let who: Vec<String> = members
                        .iter()
                        .map(|e| {
                            format!(
                                "{} [commit {}, chip {}]",
                                e.name,
                                short(&e.source_commit),
                                short(&e.chip)
                            )
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "    sha256:{} ({size} bytes): {}",
                        hex::encode(sha),
                        who.join(", ")
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{outputs} output(s) of {} derivation(s) from {bundles} bundle(s): {agree} agree, {disagree} disagree, {single} single; {} bundle(s) refused",
        derivations.len(),
        refused.len()
    );
    for (bundle, reason) in refused {
        let _ = writeln!(out, "  refused: {bundle}: {reason}");
    }
    out
}
