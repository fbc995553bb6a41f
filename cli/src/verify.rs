//! `provenix verify`: bundles under an M-of-N policy, for a subject or a
//! whole closure.
//!
//! 1. Subjects: `--artifact` (the file's SHA-256), `--store-path` (the
//!    local path's NAR), `--store-path --closure` (every path of
//!    `nix-store -qR`, each one's NAR, hashed on `--jobs` threads), or,
//!    with none, whatever the bundles name.
//! 2. Bundles, from every source given (see `sources`): files, a
//!    directory, workers' gRPC log APIs, binary caches. The same bytes from
//!    two sources are one bundle.
//! 3. Verify each bundle once, on `--jobs` threads, with one `Verifier`
//!    (whose chain cache makes a chip's certificate chain cost once). A
//!    cache's narinfo must agree with the statement beside it. Evidence
//!    shared by many bundles (a worker's identity and checkpoint) is still
//!    authenticated per bundle: memoising it by its bytes needs a hook in
//!    `verify_bundle` (the library).
//! 4. [`provenix_verifier::Policy::decide`] per subject; one line each, and a summary for a
//!    closure. A progress bar goes to stderr when it is a terminal.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use provenix_verifier::{Actual, BundleVerifier, Error, Refusal, Subject, VerifiedBundle};

use crate::sources::{self, Fetched, Narinfo, cache::Cache, grpc};
use provenix_verifier::ProofSource;

/// Arguments of `provenix verify`.
#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("bundle-source")
        .required(true)
        .multiple(true)
        .args(["bundle", "bundles", "worker", "cache"])
))]
pub(crate) struct VerifyArgs {
    /// Bundle files to consider; may be repeated.
    #[arg(long, num_args = 1..)]
    bundle: Vec<PathBuf>,
    /// A directory: every `*.provenix` file in it whose statement names a
    /// subject is considered.
    #[arg(long, value_name = "DIR")]
    bundles: Option<PathBuf>,
    /// A worker's gRPC log API (`unix:PATH`, `http://LOOPBACK:PORT`, or
    /// `https://HOST:PORT` with --tls-*): its bundles for the store paths.
    /// May be repeated.
    #[arg(long, value_name = "URL")]
    worker: Vec<String>,
    /// A binary cache (`file://DIR`, `http://...`, `https://...`): each
    /// store path's narinfo and the bundle beside it. May be repeated.
    #[arg(long, value_name = "URL")]
    cache: Vec<String>,
    /// With --store-path: decide on every path of its closure
    /// (`nix-store -qR`), each against its own NAR.
    #[arg(long, requires = "store_path")]
    closure: bool,
    /// With --store-path: accept it only if every input in its builders'
    /// build traces is trusted too, recursively (content-addressed and
    /// checking itself, a root the policy names, or itself accepted with
    /// the hash the trace recorded). The path need not be in a local
    /// store. Also on when the policy sets `[graph] recursive`.
    #[arg(long, requires = "store_path", conflicts_with = "closure")]
    recursive: bool,
    /// mTLS to https:// workers: the client's certificate chain (PEM).
    #[arg(long, requires_all = ["tls_key", "tls_ca"], requires = "worker")]
    tls_cert: Option<PathBuf>,
    /// mTLS to https:// workers: the client's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// mTLS to https:// workers: the CA their certificates must chain to.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Seconds each network request may take (workers and caches).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// Threads for hashing NARs, fetching from caches and verifying
    /// [default: the number of CPUs].
    #[arg(long)]
    jobs: Option<NonZeroUsize>,
    #[command(flatten)]
    decide: DecideArgs,
}

/// Arguments of `provenix verify-bundle`: the one-bundle case of
/// `provenix verify`, which it runs.
#[derive(Args)]
pub(crate) struct BundleArgs {
    /// The bundle (`<artifact>.provenix`).
    bundle: PathBuf,
    #[command(flatten)]
    decide: DecideArgs,
}

/// What `verify` and `verify-bundle` both take: the subject, the policy and
/// what it is applied with, and the output form.
#[derive(Args)]
pub(crate) struct DecideArgs {
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
    /// An AMD CRL (DER or PEM) to honour; may be repeated.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// Print JSON for machines (docs/verify.md).
    #[arg(long)]
    json: bool,
    // Checkpoint memory and freshness (crate::checkpoints).
    #[command(flatten)]
    checkpoints: crate::checkpoints::CheckpointArgs,
}

impl From<BundleArgs> for VerifyArgs {
    fn from(a: BundleArgs) -> VerifyArgs {
        VerifyArgs {
            bundle: vec![a.bundle],
            bundles: None,
            worker: Vec::new(),
            cache: Vec::new(),
            closure: false,
            recursive: false,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            timeout: 30,
            jobs: NonZeroUsize::new(1),
            decide: a.decide,
        }
    }
}

/// One bundle found, from one or more sources.
struct Found {
    /// Where it came from (the first source that had it).
    source: String,
    bytes: Vec<u8>,
    /// The subject its statement names, when it can be decoded (nothing
    /// is trusted from it but the choice of subject).
    claimed: Option<Subject>,
    /// Subjects a source returned it for (a cache or worker asked about a
    /// store path): it is considered for them whatever it claims, so a
    /// bundle served for the wrong path is reported as a replay.
    asked_for: Vec<Subject>,
    /// Named by `--bundle`: considered for the one subject given.
    explicit: bool,
    /// Narinfos served beside it; each must agree with its statement.
    narinfos: Vec<Narinfo>,
}

/// A bundle found and verified. The list of these, complete before any
/// decision, is where the verified bundles (and their checkpoints) can be
/// taken from.
struct Checked {
    found: Found,
    outcome: Result<VerifiedBundle, Refusal>,
}

pub(crate) fn run(args: VerifyArgs) -> Result<ExitCode> {
    let policy = crate::input::policy(args.decide.policy.as_deref())?;
    let verifier = crate::verifier_with_crls(&policy, &args.decide.crl)?;
    let at = args
        .decide
        .at
        .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());
    let jobs = args
        .jobs
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let timeout = Duration::from_secs(args.timeout);
    let progress =
        Progress::new(args.closure && !args.decide.json && std::io::stderr().is_terminal());

    if (!args.worker.is_empty() || !args.cache.is_empty()) && args.decide.store_path.is_none() {
        bail!("--worker and --cache look bundles up by store path: give --store-path");
    }
    if (args.recursive || policy.graph.recursive)
        && let Some(path) = &args.decide.store_path
    {
        if args.closure {
            bail!(
                "--closure decides on each path of a closure on its own; the policy asks for recursive verification ([graph] recursive), which decides on the build graph: drop --closure"
            );
        }
        return run_recursive(&args, path, &policy, &verifier, at, timeout);
    }

    // 1. The subjects, with their actual digests when the subject is here.
    let mut targets: Vec<(Subject, Option<Actual>)> = Vec::new();
    if let Some(path) = &args.decide.artifact {
        let name = path
            .file_name()
            .with_context(|| format!("{}: not a file name", path.display()))?
            .to_string_lossy()
            .into_owned();
        let (sha256, size) = crate::input::sha256_file(path)?;
        targets.push((Subject::File(name), Some(Actual { sha256, size })));
    } else if let Some(path) = &args.decide.store_path {
        let paths = if args.closure {
            closure(path)?
        } else {
            vec![store_path_name(path)]
        };
        progress.phase("hashing NARs", paths.len());
        let digests = parallel(jobs, &paths, |p| {
            let d = nar(Path::new(p));
            progress.tick();
            d
        });
        for (p, d) in paths.into_iter().zip(digests) {
            targets.push((Subject::StorePath(p), Some(d?)));
        }
    }
    let given_subject = !targets.is_empty();
    let store_paths: Vec<&str> = targets
        .iter()
        .filter_map(|(s, _)| match s {
            Subject::StorePath(p) => Some(p.as_str()),
            Subject::File(_) => None,
        })
        .collect();

    // 2. The bundles.
    let mut found = FoundList::new();
    for path in &args.bundle {
        found.add(sources::read_file(path)?, None, true);
    }
    if let Some(dir) = &args.bundles {
        let wanted: HashSet<(&str, &str)> =
            targets.iter().map(|(s, _)| (s.kind(), s.name())).collect();
        for path in sources::bundle_files(dir)? {
            let f = sources::read_file(&path)?;
            let claimed = sources::claimed_subject(&f.bytes);
            // From a directory, only bundles about a subject (and
            // unreadable ones, which are reported as refused).
            if !given_subject
                || claimed
                    .as_ref()
                    .is_none_or(|c| wanted.contains(&(c.kind(), c.name())))
            {
                found.add(f, None, false);
            }
        }
    }
    let tls = args.tls_cert.as_ref().and_then(|cert| {
        Some(grpc::Tls {
            cert: cert.clone(),
            key: args.tls_key.clone()?,
            ca: args.tls_ca.clone()?,
        })
    });
    let wanted: HashSet<&str> = store_paths.iter().copied().collect();
    for url in &args.worker {
        let api = grpc::LogApi::connect(url, tls.as_ref(), timeout)?;
        progress.phase(&format!("reading {url}"), 0);
        let fetched = grpc::bundles_for(&api, &wanted, |done, total| {
            progress.set(done, total);
        })?;
        for f in fetched {
            // Asked for whichever path it claims: the worker found it by
            // that claim, so it was asked for nothing else.
            found.add(f, None, false);
        }
    }
    let mut caches = Vec::new();
    for url in &args.cache {
        let cache = Cache::open(url, timeout)?;
        progress.phase(&format!("fetching from {url}"), store_paths.len());
        let fetched = parallel(jobs, &store_paths, |p| {
            let f = cache.fetch(p);
            progress.tick();
            f
        });
        for (p, f) in store_paths.iter().zip(fetched) {
            found.add(f?, Some(Subject::StorePath((*p).to_owned())), false);
        }
        caches.push(cache);
    }
    let found = found.into_vec();

    // Without a subject, every subject the bundles name.
    if !given_subject {
        for s in found.iter().filter_map(|f| f.claimed.as_ref()) {
            if !targets.iter().any(|(o, _)| o == s) {
                targets.push((s.clone(), None));
            }
        }
        if targets.is_empty() {
            bail!("no bundle has a readable statement, so there is no subject to decide on");
        }
    }

    // 3. Verify each bundle once; evidence and checkpoints that bundles
    // share are authenticated once.
    let memo = BundleVerifier::new(&verifier, &policy, at);
    progress.phase("verifying bundles", found.len());
    let outcomes = parallel(jobs, &found, |f| {
        let outcome = check(f, &memo);
        progress.tick();
        outcome
    });
    let checked: Vec<Checked> = found
        .into_iter()
        .zip(outcomes)
        .map(|(found, outcome)| Checked { found, outcome })
        .collect();
    progress.clear();

    // --- checkpoint memory and freshness (crate::checkpoints) ---
    // A verified bundle whose checkpoint is stale, forked or unproven is
    // refused here. Such a bundle is then considered only for the subject
    // it claims: the re-check below for a second subject would not see
    // this refusal.
    let checked: Vec<Checked> = {
        let live = crate::checkpoints::LiveProofs::new(&args.worker, tls.as_ref(), timeout);
        let dirs: Vec<&Path> = args.bundles.iter().map(PathBuf::as_path).collect();
        // Proofs the worker serves, then those a cache holds beside its
        // bundles (as `provenix-worker export --cache` writes them).
        let mut asked: Vec<&dyn ProofSource> = vec![&live];
        asked.extend(caches.iter().map(|c| c as &dyn ProofSource));
        let proofs = crate::checkpoints::proofs(&args.decide.checkpoints, &dirs, &asked)?;
        let (founds, outcomes): (Vec<Found>, Vec<_>) =
            checked.into_iter().map(|c| (c.found, c.outcome)).unzip();
        let was_ok: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
        let input = founds
            .iter()
            .zip(outcomes)
            .map(|(f, o)| (f.source.clone(), f.bytes.as_slice(), o))
            .collect();
        let screened =
            crate::checkpoints::screen(&args.decide.checkpoints, &policy, at, &proofs, input)?;
        founds
            .into_iter()
            .zip(screened)
            .zip(was_ok)
            .map(|((mut found, (_, outcome)), was_ok)| {
                if was_ok && outcome.is_err() {
                    found.asked_for.clear();
                }
                Checked { found, outcome }
            })
            .collect()
    };
    // --- end of checkpoint memory ---

    // 4. Decide on each subject.
    let single = targets.len() == 1 && given_subject;
    let relevant = |c: &Checked, s: &Subject| match &c.found.claimed {
        Some(claimed) => {
            claimed == s || c.found.asked_for.contains(s) || (c.found.explicit && single)
        }
        None => true,
    };
    let mut uses: Vec<usize> = checked
        .iter()
        .map(|c| targets.iter().filter(|(s, _)| relevant(c, s)).count())
        .collect();
    let mut by_subject: Vec<Vec<usize>> = vec![Vec::new(); targets.len()];
    for (i, c) in checked.iter().enumerate() {
        for (t, (s, _)) in targets.iter().enumerate() {
            if relevant(c, s)
                && let Some(list) = by_subject.get_mut(t)
            {
                list.push(i);
            }
        }
    }
    let mut outcomes: Vec<Option<Result<VerifiedBundle, Refusal>>> = Vec::new();
    let mut sources_of = Vec::new();
    for c in checked {
        outcomes.push(Some(c.outcome));
        sources_of.push(c.found);
    }
    let mut decisions = Vec::with_capacity(targets.len());
    for ((subject, actual), indices) in targets.iter().zip(by_subject) {
        let mut bundles = Vec::with_capacity(indices.len());
        for i in indices {
            let (Some(slot), Some(f), Some(left)) =
                (outcomes.get_mut(i), sources_of.get(i), uses.get_mut(i))
            else {
                continue;
            };
            *left = left.saturating_sub(1);
            // The last use takes the outcome; earlier ones copy it (a
            // refusal is recomputed, as it is not `Clone`).
            let outcome = match slot {
                Some(Ok(v)) if *left > 0 => Ok(v.clone()),
                Some(Err(_)) if *left > 0 => check(f, &memo),
                _ => match slot.take() {
                    Some(o) => o,
                    None => continue,
                },
            };
            // One statement reached through two bundles (a worker's log
            // serves it under a later checkpoint than an export did) is one
            // claim: keep the first.
            if let Ok(v) = &outcome
                && bundles
                    .iter()
                    .any(|(_, o): &(String, Result<VerifiedBundle, Refusal>)| {
                        o.as_ref().is_ok_and(|w| w.statement() == v.statement())
                    })
            {
                continue;
            }
            bundles.push((f.source.clone(), outcome));
        }
        decisions.push(policy.decide(subject, *actual, bundles));
    }

    crate::show::print_decisions(&policy, &decisions, at, args.decide.json)?;
    let accepted = decisions.iter().filter(|d| d.accepted()).count();
    if args.closure && !args.decide.json {
        println!(
            "closure of {}: {} paths, {accepted} accepted, {} rejected",
            args.decide
                .store_path
                .as_deref()
                .map(store_path_name)
                .unwrap_or_default(),
            decisions.len(),
            decisions.len().saturating_sub(accepted)
        );
    }
    Ok(if accepted == decisions.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--recursive`: decide on the build graph of `path` (crate::recursive).
fn run_recursive(
    args: &VerifyArgs,
    path: &Path,
    policy: &provenix_verifier::Policy,
    verifier: &provenix_verifier::Verifier,
    at: i64,
    timeout: Duration,
) -> Result<ExitCode> {
    let target = store_path_name(path);
    sources::store_path_parts(&target)?;
    // The local path's NAR when there is one; else what builders state.
    let actual = if path.exists() {
        Some(nar(path)?)
    } else {
        None
    };

    let mut files: HashMap<String, Vec<Fetched>> = HashMap::new();
    let mut add_file = |f: Fetched, explicit: bool| match sources::claimed_subject(&f.bytes) {
        Some(Subject::StorePath(p)) => files.entry(p).or_default().push(f),
        // An unreadable bundle named on the command line is reported
        // against the target; from a directory it is about nothing.
        _ if explicit => files.entry(target.clone()).or_default().push(f),
        _ => {}
    };
    for p in &args.bundle {
        add_file(sources::read_file(p)?, true);
    }
    if let Some(dir) = &args.bundles {
        for p in sources::bundle_files(dir)? {
            add_file(sources::read_file(&p)?, false);
        }
    }
    let caches = args
        .cache
        .iter()
        .map(|url| Cache::open(url, timeout))
        .collect::<Result<Vec<_>>>()?;
    let tls = args.tls_cert.as_ref().and_then(|cert| {
        Some(grpc::Tls {
            cert: cert.clone(),
            key: args.tls_key.clone()?,
            ca: args.tls_ca.clone()?,
        })
    });
    let mut workers = Vec::new();
    for url in &args.worker {
        let api = grpc::LogApi::connect(url, tls.as_ref(), timeout)?;
        workers.push(crate::recursive::WorkerLog::open(api)?);
    }
    let workers = std::sync::Mutex::new(workers);

    let memo = BundleVerifier::new(verifier, policy, at);
    let live = crate::checkpoints::LiveProofs::new(&args.worker, tls.as_ref(), timeout);
    let dirs: Vec<&Path> = args.bundles.iter().map(PathBuf::as_path).collect();
    let mut asked: Vec<&dyn ProofSource> = vec![&live];
    asked.extend(caches.iter().map(|c| c as &dyn ProofSource));
    let proofs = crate::checkpoints::proofs(&args.decide.checkpoints, &dirs, &asked)?;
    let mut screen_error: Option<anyhow::Error> = None;
    let check = |path: &str, fetched: Vec<Fetched>| {
        check_found(path, fetched, &memo, &args.decide.checkpoints, &proofs).unwrap_or_else(|e| {
            screen_error.get_or_insert(e);
            Vec::new()
        })
    };
    let mut lookup = crate::recursive::Sources {
        files: &files,
        caches: &caches,
        workers: &workers,
        check: Box::new(check),
        failures: Vec::new(),
        lookups: 0,
    };
    let graph = provenix_verifier::decide_graph(policy, &target, actual, &mut lookup);
    for failure in &lookup.failures {
        eprintln!("provenix: warning: {failure}");
    }
    let lookups = lookup.lookups;
    drop(lookup);
    if let Some(e) = screen_error {
        return Err(e.context("checking checkpoints"));
    }
    crate::show::print_graph(policy, &graph, lookups, at, args.decide.json)?;
    Ok(if graph.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The bundles sources found for the store path `path`, each verified
/// once (the same bytes from two sources are one bundle), its narinfos
/// checked against it and its checkpoint screened against the memory.
pub(crate) fn check_found(
    path: &str,
    fetched: Vec<Fetched>,
    memo: &BundleVerifier<'_>,
    checkpoints: &crate::checkpoints::CheckpointArgs,
    proofs: &crate::checkpoints::Proofs<'_>,
) -> Result<provenix_verifier::Found> {
    let mut found = FoundList::new();
    for f in fetched {
        found.add(f, Some(Subject::StorePath(path.to_owned())), false);
    }
    let found = found.into_vec();
    let input = found
        .iter()
        .map(|f| (f.source.clone(), f.bytes.as_slice(), check(f, memo)))
        .collect();
    crate::checkpoints::screen(checkpoints, memo.policy(), memo.at(), proofs, input)
}

/// Verify one bundle, then check every narinfo served beside it against
/// its statement.
fn check(found: &Found, memo: &BundleVerifier<'_>) -> Result<VerifiedBundle, Refusal> {
    let verified = memo.verify(&found.bytes)?;
    let wrong: Vec<String> = found
        .narinfos
        .iter()
        .filter_map(|n| n.check(verified.statement()).err())
        .collect();
    if wrong.is_empty() {
        Ok(verified)
    } else {
        Err(Refusal::Invalid(Error::Binding(wrong.join("; "))))
    }
}

/// Bundles found so far, each once by its bytes.
struct FoundList {
    list: Vec<Found>,
    /// SHA-256 of a bundle's bytes -> its position in `list`.
    seen: HashMap<[u8; 32], usize>,
}

impl FoundList {
    fn new() -> FoundList {
        FoundList {
            list: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// Add a bundle; the same bytes again (from another source) only add
    /// what that source says about it.
    fn add(&mut self, f: Fetched, asked_for: Option<Subject>, explicit: bool) {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &f.bytes)
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        if let Some(existing) = self.seen.get(&key).and_then(|&i| self.list.get_mut(i)) {
            existing.explicit |= explicit;
            existing.narinfos.extend(f.narinfos);
            if let Some(s) = asked_for
                && !existing.asked_for.contains(&s)
            {
                existing.asked_for.push(s);
            }
            return;
        }
        self.seen.insert(key, self.list.len());
        self.list.push(Found {
            source: f.source,
            claimed: sources::claimed_subject(&f.bytes),
            bytes: f.bytes,
            asked_for: asked_for.into_iter().collect(),
            explicit,
            narinfos: f.narinfos,
        });
    }

    fn into_vec(self) -> Vec<Found> {
        self.list
    }
}

/// `f` over every item on up to `jobs` threads, which take the next item
/// from a shared counter; results in the items' order.
fn parallel<T: Sync, R: Send>(jobs: usize, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = jobs.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            // A panicking worker is a bug; its items are then missing and
            // the zip with the items below would misalign, so re-raise.
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Every path of `path`'s closure, sorted: `nix-store --query
/// --requisites` (Nix 2.8's `nix path-info --recursive` needs an
/// experimental feature).
fn closure(path: &Path) -> Result<Vec<String>> {
    let out = Command::new("nix-store")
        .args(["--query", "--requisites"])
        .arg(path)
        .output()
        .context("cannot run nix-store (Debian package nix-bin)")?;
    if !out.status.success() {
        bail!(
            "nix-store --query --requisites {}: {}: {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text =
        String::from_utf8(out.stdout).context("nix-store printed a path that is not UTF-8")?;
    let mut paths: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        sources::store_path_parts(line).context("nix-store --query --requisites")?;
        paths.push(line.to_owned());
    }
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        bail!(
            "nix-store --query --requisites {}: no paths",
            path.display()
        );
    }
    Ok(paths)
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

/// A one-line progress bar on stderr, redrawn in place at most ten times
/// a second; does nothing when disabled (stderr is not a terminal, or
/// `--json`).
struct Progress {
    enabled: bool,
    done: AtomicUsize,
    state: Mutex<ProgressState>,
}

struct ProgressState {
    phase: String,
    total: usize,
    drawn: Option<Instant>,
}

impl Progress {
    const WIDTH: usize = 30;
    const EVERY: Duration = Duration::from_millis(100);

    fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            done: AtomicUsize::new(0),
            state: Mutex::new(ProgressState {
                phase: String::new(),
                total: 0,
                drawn: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        // The state is plain values; a panic mid-update leaves it usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Start a phase of `total` steps (0: unknown yet).
    fn phase(&self, phase: &str, total: usize) {
        if !self.enabled {
            return;
        }
        self.done.store(0, Ordering::Relaxed);
        let mut s = self.lock();
        s.phase = phase.to_owned();
        s.total = total;
        s.drawn = None;
        self.draw(&mut s, true);
    }

    /// One step done.
    fn tick(&self) {
        if self.enabled {
            self.done.fetch_add(1, Ordering::Relaxed);
            let mut s = self.lock();
            self.draw(&mut s, false);
        }
    }

    /// `done` of `total` steps done.
    fn set(&self, done: u64, total: u64) {
        if self.enabled {
            let done = usize::try_from(done).unwrap_or(usize::MAX);
            self.done.store(done, Ordering::Relaxed);
            let mut s = self.lock();
            s.total = usize::try_from(total).unwrap_or(usize::MAX);
            self.draw(&mut s, false);
        }
    }

    fn draw(&self, s: &mut ProgressState, force: bool) {
        let now = Instant::now();
        let done = self.done.load(Ordering::Relaxed);
        let last = s.total > 0 && done >= s.total;
        if !force && !last && s.drawn.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            return;
        }
        s.drawn = Some(now);
        let filled = done
            .min(s.total)
            .saturating_mul(Self::WIDTH)
            .checked_div(s.total)
            .unwrap_or(0);
        let bar: String = "#".repeat(filled) + &".".repeat(Self::WIDTH.saturating_sub(filled));
        // `\r` and clear-to-end-of-line (ECMA-48 EL, `ESC [ K`): one line,
        // redrawn in place.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{} [{bar}] {done}/{}", s.phase, s.total);
        let _ = err.flush();
    }

    /// Remove the bar before the verdicts are printed.
    fn clear(&self) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}
