//! `provenix verify`: bundles under an M-of-N policy, for a subject.
//!
//! Gathers the bundles (`--bundle FILE...` or every `*.provenix` in
//! `--bundles DIR`), computes the subject's actual digest when given one
//! (`--artifact`: the file's SHA-256; `--store-path`: the local path's NAR),
//! verifies every bundle and lets [`Policy::decide`] judge each subject.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use provenix_verifier::{
    Actual, Bundle, MAX_BUNDLE_SIZE, Policy, Statement, Subject, Verifier, verify_bundle,
};

/// Arguments of `provenix verify`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("bundle-source").required(true).args(["bundle", "bundles"])))]
pub(crate) struct VerifyArgs {
    /// Bundle files to consider; may be repeated.
    #[arg(long, num_args = 1..)]
    bundle: Vec<PathBuf>,
    /// A directory: every `*.provenix` file in it whose statement names the
    /// subject is considered.
    #[arg(long, value_name = "DIR")]
    bundles: Option<PathBuf>,
    /// The artifact (a file) the statements must describe; its SHA-256 is
    /// compared with theirs.
    #[arg(long, conflicts_with = "store_path")]
    artifact: Option<PathBuf>,
    /// A local store path the statements must describe; its NAR is
    /// computed and compared with theirs.
    #[arg(long, value_name = "PATH")]
    store_path: Option<PathBuf>,
    /// The policy (TOML; see docs/policy.md).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Verification time: RFC 3339, YYYY-MM-DD or @UNIX-SECONDS.
    #[arg(long, value_parser = crate::parse_time)]
    at: Option<i64>,
    /// Print JSON for machines (docs/verify.md).
    #[arg(long)]
    json: bool,
}

/// One bundle file, read.
struct Found {
    source: String,
    bytes: Vec<u8>,
    /// The subject its statement names, if the statement could be read
    /// (its signature checks; nothing else is trusted from it here).
    claimed: Option<Subject>,
}

pub(crate) fn run(args: VerifyArgs) -> Result<ExitCode> {
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    let verifier = Verifier::new(policy.anchors()?);
    let at = args
        .at
        .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());

    let target = match (&args.artifact, &args.store_path) {
        (Some(path), _) => {
            let name = path
                .file_name()
                .with_context(|| format!("{}: not a file name", path.display()))?
                .to_string_lossy()
                .into_owned();
            let (sha256, size) = crate::sha256_file(path)?;
            Some((Subject::File(name), Actual { sha256, size }))
        }
        (None, Some(path)) => Some((Subject::StorePath(store_path_name(path)), nar(path)?)),
        (None, None) => None,
    };

    let from_dir = args.bundles.is_some();
    let mut found = Vec::new();
    for path in bundle_files(&args)? {
        let bytes = read_bundle(&path)?;
        found.push(Found {
            source: path.display().to_string(),
            claimed: claimed_subject(&bytes),
            bytes,
        });
    }

    let subjects: Vec<(Subject, Option<Actual>)> = match target {
        Some((s, a)) => vec![(s, Some(a))],
        None => {
            let mut out: Vec<(Subject, Option<Actual>)> = Vec::new();
            for s in found.iter().filter_map(|f| f.claimed.as_ref()) {
                if !out.iter().any(|(o, _)| o == s) {
                    out.push((s.clone(), None));
                }
            }
            if out.is_empty() {
                bail!("no bundle has a readable statement, so there is no subject to decide on");
            }
            out
        }
    };
    let given_subject = args.artifact.is_some() || args.store_path.is_some();

    let mut decisions = Vec::new();
    for (subject, actual) in &subjects {
        let bundles = found
            .iter()
            .filter(|f| match &f.claimed {
                // From a directory, only bundles about this subject (and
                // unreadable ones, which are reported as refused). Named
                // explicitly, every bundle is considered: one about another
                // subject is a replay and is reported as such.
                Some(c) => c == subject || (given_subject && !from_dir),
                None => true,
            })
            .map(|f| {
                (
                    f.source.clone(),
                    verify_bundle(&f.bytes, &verifier, &policy, at),
                )
            })
            .collect();
        decisions.push(policy.decide(subject, *actual, bundles));
    }
    crate::show::print_decisions(&policy, &decisions, at, args.json)?;
    Ok(if decisions.iter().all(|d| d.accepted()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The bundle files, sorted so output is stable.
fn bundle_files(args: &VerifyArgs) -> Result<Vec<PathBuf>> {
    let Some(dir) = &args.bundles else {
        return Ok(args.bundle.clone());
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "provenix") && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn read_bundle(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Larger ones are refused by the decoder anyway; this only avoids
    // reading a huge file into memory first.
    let limit = u64::try_from(MAX_BUNDLE_SIZE).unwrap_or(u64::MAX);
    if meta.len() > limit {
        bail!(
            "{}: {} bytes exceeds the bundle limit of {limit}",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The subject a bundle's statement names, used only to pick bundles;
/// [`verify_bundle`] then checks everything.
fn claimed_subject(bytes: &[u8]) -> Option<Subject> {
    let statement = match Bundle::from_cbor(bytes).ok()? {
        Bundle::Logged { statement, .. } | Bundle::Direct { statement, .. } => statement,
    };
    Statement::verify(&statement).ok().map(|s| s.subject)
}

/// A store path as statements name it: as given, without a trailing slash.
fn store_path_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        s.into_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(unix)]
fn nar(path: &Path) -> Result<Actual> {
    let d = provenix_verifier::nar::hash_path(path)
        .with_context(|| format!("cannot compute the NAR of {}", path.display()))?;
    Ok(Actual {
        sha256: d.sha256,
        size: d.size,
    })
}

#[cfg(not(unix))]
fn nar(path: &Path) -> Result<Actual> {
    bail!(
        "{}: computing a NAR needs a Unix file system",
        path.display()
    )
}
