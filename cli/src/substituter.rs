//! `provenix substituter`: a local binary cache that serves an unmodified
//! Nix only what the policy accepts (DESIGN.md, "Transitive trust"):
//! Trustix's proxy substituter, with M of N attested chips behind it.
//!
//! For each narinfo asked for, the bundles of the path are gathered from
//! the upstreams (binary caches that carry bundles beside their narinfos,
//! workers' gRPC log APIs, bundle directories), verified, and decided on
//! under the policy: on the path alone, or on its whole build graph when
//! the policy sets `[graph] recursive` (crate::recursive). Accepted, the
//! narinfo is served with the accepted NAR hash, size and references from
//! the counted builders' statements, signed with the substituter's own
//! key (the one key the user's Nix trusts). Rejected, the answer is 404,
//! the reason goes to the log and to `GET /why/<hash>`.
//!
//! A NAR is streamed from an upstream cache that serves it uncompressed,
//! hashed on the way, and the last chunk is held back until the whole NAR
//! has the accepted SHA-256 and size: an altered NAR is cut off before
//! its end, so Nix never receives it whole (it also checks the hash of
//! what it got).
//!
//! Decisions are remembered, at most `--max-decisions` of them (the oldest
//! go first); a rejection for `--rejection-ttl` seconds only, since a
//! missing builder may publish later.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use provenix_verifier::{
    BundleVerifier, Policy, ProofSource, Statement, Subject, Verifier, nixsig,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::checkpoints::CheckpointArgs;
use crate::recursive::WorkerLog;
use crate::sources::{self, Fetched, cache::Cache, grpc};

/// Arguments of `provenix substituter`.
#[derive(Args)]
pub(crate) struct SubstituterArgs {
    /// Where to serve HTTP: a loopback address and port (port 0 picks
    /// one; the address served is printed).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The policy (TOML; docs/policy.md). `[graph] recursive = true`
    /// decides on every path's build graph.
    #[arg(long)]
    policy: PathBuf,
    /// Where bundles and NARs come from; may be repeated: a binary cache
    /// (`file://DIR`, `http://...`, `https://...`) with bundles beside its
    /// narinfos, a worker's log API (`worker+unix:PATH`,
    /// `worker+http://LOOPBACK:PORT`), or a directory of bundles (an
    /// absolute path). NARs come from the caches.
    #[arg(long = "upstream", value_name = "URL", required = true)]
    upstreams: Vec<String>,
    /// The signing key, a Nix secret key file (`name:base64`, as
    /// `nix-store --generate-binary-cache-key` writes it); made, readable
    /// only by its owner, when it does not exist.
    #[arg(long, value_name = "FILE")]
    secret_key: PathBuf,
    /// The key's name when a new key is made.
    #[arg(long, default_value = "provenix-substituter-1")]
    key_name: String,
    /// Decisions remembered; the oldest are forgotten first.
    #[arg(long, default_value_t = 65_536)]
    max_decisions: usize,
    /// Seconds a rejection is remembered before the path is decided again.
    #[arg(long, default_value_t = 60)]
    rejection_ttl: u64,
    /// Seconds each upstream request may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// An AMD CRL (DER or PEM) to honour; may be repeated.
    #[arg(long)]
    crl: Vec<PathBuf>,
    // Checkpoint memory and freshness (crate::checkpoints).
    #[command(flatten)]
    checkpoints: CheckpointArgs,
}

/// `GET /nix-cache-info`: the store directory Nix must have, mass queries
/// welcome, and a priority ahead of cache.nixos.org's 40.
const CACHE_INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";
/// Bytes per chunk of a NAR streamed through.
const CHUNK: usize = 256 * 1024;

pub(crate) fn run(args: SubstituterArgs) -> Result<std::process::ExitCode> {
    let policy = Policy::load(&args.policy)?;
    let verifier = crate::verifier_with_crls(&policy, &args.crl)?;
    let timeout = Duration::from_secs(args.timeout);
    let (key, key_name) = signing_key(&args.secret_key, &args.key_name)?;
    let public: [u8; 32] = key
        .public_key()
        .as_ref()
        .try_into()
        .context("an Ed25519 public key is 32 bytes")?;
    let mut caches = Vec::new();
    let mut workers = Vec::new();
    let mut files: HashMap<String, Vec<Fetched>> = HashMap::new();
    for url in &args.upstreams {
        if let Some(worker) = url.strip_prefix("worker+") {
            let api = grpc::LogApi::connect(worker, None, timeout)?;
            workers.push(WorkerLog::open(api)?);
        } else if url.starts_with('/') {
            for path in sources::bundle_files(Path::new(url))? {
                let f = sources::read_file(&path)?;
                if let Some(Subject::StorePath(p)) = sources::claimed_subject(&f.bytes) {
                    files.entry(p).or_default().push(f);
                }
            }
        } else {
            caches.push(Cache::open(url, timeout)?);
        }
    }
    if args.max_decisions == 0 {
        bail!("--max-decisions must be at least 1");
    }
    let state = Arc::new(State {
        recursive: policy.graph.recursive,
        policy,
        verifier,
        caches,
        files,
        workers: Mutex::new(workers),
        key,
        key_name: key_name.clone(),
        checkpoints: args.checkpoints,
        decisions: Mutex::new(Decisions::new(args.max_decisions)),
        rejection_ttl: Duration::from_secs(args.rejection_ttl),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("substituter: http://{addr}");
        println!(
            "trusted-public-keys = {}",
            nixsig::public_key_line(&key_name, &public)?
        );
        eprintln!(
            "provenix substituter: serving http://{addr}, {} decisions{}",
            if state.recursive {
                "recursive"
            } else {
                "per path"
            },
            if state.policy.measurements == provenix_verifier::Measurements::Any {
                " (WARNING: the policy accepts any measured software)"
            } else {
                ""
            }
        );
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("provenix substituter: accept: {e}");
                    continue;
                }
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                });
                // A client that breaks the protocol or goes away ends its
                // own connection only.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A Nix secret key file: `name:base64(seed || public key)`, made when
/// absent.
fn signing_key(path: &Path, name: &str) -> Result<(Ed25519KeyPair, String)> {
    if !path.exists() {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| anyhow::anyhow!("no randomness for a key"))?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| anyhow::anyhow!("making an Ed25519 key"))?;
        let mut secret = seed.to_vec();
        secret.extend_from_slice(pair.public_key().as_ref());
        let line = format!(
            "{name}:{}",
            base64::engine::general_purpose::STANDARD.encode(&secret)
        );
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .with_context(|| format!("writing the new key {}", path.display()))?;
    }
    let text = crate::input::read(path, 4096)?;
    let text = String::from_utf8(text).context("the secret key file is not UTF-8")?;
    let (name, b64) = text
        .trim()
        .split_once(':')
        .with_context(|| format!("{}: not a Nix secret key (name:base64)", path.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .with_context(|| format!("{}: the key is not base64", path.display()))?;
    let (Some(seed), Some(public)) = (bytes.get(..32), bytes.get(32..64)) else {
        bail!("{}: a Nix secret key is 64 bytes", path.display());
    };
    let pair = Ed25519KeyPair::from_seed_and_public_key(seed, public)
        .map_err(|_| anyhow::anyhow!("{}: the key's halves do not match", path.display()))?;
    Ok((pair, name.to_owned()))
}

struct State {
    policy: Policy,
    verifier: Verifier,
    recursive: bool,
    caches: Vec<Cache>,
    files: HashMap<String, Vec<Fetched>>,
    workers: Mutex<Vec<WorkerLog>>,
    key: Ed25519KeyPair,
    key_name: String,
    checkpoints: CheckpointArgs,
    decisions: Mutex<Decisions>,
    rejection_ttl: Duration,
}

/// Where an accepted NAR is fetched from.
#[derive(Clone, Debug)]
struct NarSource {
    /// Index into `State::caches`.
    cache: usize,
    /// Its `URL:`, relative to the cache.
    url: String,
    sha256: [u8; 32],
    size: u64,
}

/// One decision, as served.
struct Entry {
    at: Instant,
    /// The narinfo and the NAR, when accepted.
    accepted: Option<(String, NarSource)>,
    /// The decision as text (`GET /why/<hash>`).
    why: String,
}

/// Remembered decisions by hash part, the oldest forgotten first, and the
/// accepted NARs by their hash (`nar/<nix32>.nar`).
struct Decisions {
    by_hash: HashMap<String, Arc<Entry>>,
    order: VecDeque<String>,
    nars: HashMap<String, NarSource>,
    max: usize,
}

impl Decisions {
    fn new(max: usize) -> Decisions {
        Decisions {
            by_hash: HashMap::new(),
            order: VecDeque::new(),
            nars: HashMap::new(),
            max,
        }
    }

    fn insert(&mut self, hash: &str, entry: Arc<Entry>) {
        if self
            .by_hash
            .insert(hash.to_owned(), Arc::clone(&entry))
            .is_none()
        {
            self.order.push_back(hash.to_owned());
        }
        if let Some((_, nar)) = &entry.accepted {
            self.nars.insert(nixsig::nix32(&nar.sha256), nar.clone());
        }
        while self.by_hash.len() > self.max {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_hash.remove(&old)
                && let Some((_, nar)) = &gone.accepted
            {
                self.nars.remove(&nixsig::nix32(&nar.sha256));
            }
        }
    }
}

type HttpBody = BoxBody<Bytes, std::io::Error>;

fn text(status: StatusCode, body: String) -> Response<HttpBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

use http_body_util::BodyExt as _;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<HttpBody> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n".into());
    }
    let path = req.uri().path().to_owned();
    let response = if path == "/nix-cache-info" {
        text(StatusCode::OK, CACHE_INFO.into())
    } else if let Some(hash) = path
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix(".narinfo"))
    {
        narinfo(state, hash).await
    } else if let Some(hash) = path.strip_prefix("/why/") {
        why(state, hash).await
    } else if let Some(nar) = path
        .strip_prefix("/nar/")
        .and_then(|p| p.strip_suffix(".nar"))
    {
        nar_stream(&state, nar)
    } else {
        text(StatusCode::NOT_FOUND, "not found\n".into())
    };
    if head {
        let (parts, _) = response.into_parts();
        return Response::from_parts(
            parts,
            Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
        );
    }
    response
}

/// A hash part: 32 characters of Nix's base 32.
fn hash_part(hash: &str) -> Option<&str> {
    (hash.len() == 32
        && hash
            .bytes()
            .all(|b| b"0123456789abcdfghijklmnpqrsvwxyz".contains(&b)))
    .then_some(hash)
}

async fn decided(state: Arc<State>, hash: &str) -> Option<Arc<Entry>> {
    let hash = hash_part(hash)?.to_owned();
    tokio::task::spawn_blocking(move || state.decide(&hash))
        .await
        .ok()
}

async fn narinfo(state: Arc<State>, hash: &str) -> Response<HttpBody> {
    match decided(state, hash).await {
        Some(entry) => match &entry.accepted {
            Some((narinfo, _)) => {
                let mut r = text(StatusCode::OK, narinfo.clone());
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/x-nix-narinfo"),
                );
                r
            }
            None => text(
                StatusCode::NOT_FOUND,
                format!("not accepted; see /why/{hash}\n"),
            ),
        },
        None => text(StatusCode::NOT_FOUND, "not a store path hash\n".into()),
    }
}

async fn why(state: Arc<State>, hash: &str) -> Response<HttpBody> {
    match decided(state, hash).await {
        Some(entry) => text(StatusCode::OK, entry.why.clone()),
        None => text(StatusCode::NOT_FOUND, "not a store path hash\n".into()),
    }
}

impl State {
    /// The remembered decision on the path with hash part `hash`, or a
    /// new one.
    fn decide(&self, hash: &str) -> Arc<Entry> {
        if let Some(e) = lock(&self.decisions).by_hash.get(hash)
            && (e.accepted.is_some() || e.at.elapsed() < self.rejection_ttl)
        {
            return Arc::clone(e);
        }
        let (accepted, why) = match self.decide_now(hash) {
            Ok(decided) => decided,
            Err(e) => (None, format!("REJECTED: {e:#}\n")),
        };
        eprint!(
            "provenix substituter: {}",
            why.lines()
                .next()
                .map(|l| format!("{l}\n"))
                .unwrap_or_default()
        );
        let entry = Arc::new(Entry {
            at: Instant::now(),
            accepted,
            why,
        });
        lock(&self.decisions).insert(hash, Arc::clone(&entry));
        entry
    }

    fn decide_now(&self, hash: &str) -> Result<(Option<(String, NarSource)>, String)> {
        // The store path, from an upstream that knows it.
        let prefix = format!("{}/{hash}-", nixsig::STORE_DIR);
        let mut narinfos = Vec::new();
        for (i, cache) in self.caches.iter().enumerate() {
            match cache.narinfo_by_hash(hash) {
                Ok(Some(n)) if n.store_path.starts_with(&prefix) => narinfos.push((i, n)),
                Ok(_) => {}
                Err(e) => eprintln!("provenix substituter: warning: {e:#}"),
            }
        }
        let in_workers = || {
            lock(&self.workers)
                .iter()
                .find_map(|w| w.find(&prefix).map(str::to_owned))
        };
        let mut path = narinfos
            .first()
            .map(|(_, n)| n.store_path.clone())
            .or_else(|| self.files.keys().find(|p| p.starts_with(&prefix)).cloned())
            .or_else(in_workers);
        if path.is_none() {
            // Workers log new outputs all the time: read what they logged
            // since the last look (a miss is remembered for the TTL).
            for w in lock(&self.workers).iter_mut() {
                if let Err(e) = w.catch_up() {
                    eprintln!("provenix substituter: warning: {e:#}");
                }
            }
            path = in_workers();
        }
        let Some(path) = path else {
            return Ok((
                None,
                format!("REJECTED {prefix}...: no upstream knows this path\n"),
            ));
        };
        sources::store_path_parts(&path)?;

        let at = time::OffsetDateTime::now_utc().unix_timestamp();
        let memo = BundleVerifier::new(&self.verifier, &self.policy, at);
        let asked: Vec<&dyn ProofSource> =
            self.caches.iter().map(|c| c as &dyn ProofSource).collect();
        let proofs = crate::checkpoints::proofs(&self.checkpoints, &[], &asked)?;
        // Shared with the lookup's check, which outlives nothing here.
        let statements: RefCell<Vec<Statement>> = RefCell::new(Vec::new());
        let screen_error: RefCell<Option<anyhow::Error>> = RefCell::new(None);
        let mut lookup = crate::recursive::Sources {
            files: &self.files,
            caches: &self.caches,
            workers: &self.workers,
            check: Box::new(|p: &str, fetched| {
                let found =
                    crate::verify::check_found(p, fetched, &memo, &self.checkpoints, &proofs)
                        .unwrap_or_else(|e| {
                            screen_error.borrow_mut().get_or_insert(e);
                            Vec::new()
                        });
                if p == path {
                    statements.borrow_mut().extend(
                        found
                            .iter()
                            .filter_map(|(_, o)| o.as_ref().ok())
                            .map(|v| v.statement().clone()),
                    );
                }
                found
            }),
            failures: Vec::new(),
            lookups: 0,
        };
        let (decision, graph_text) = if self.recursive {
            let graph = provenix_verifier::decide_graph(&self.policy, &path, None, &mut lookup);
            let text = crate::show::graph_text(&graph);
            (graph.decision().clone(), text)
        } else {
            let found = provenix_verifier::BundleLookup::bundles(&mut lookup, &path);
            let subject = Subject::StorePath(path.clone());
            (self.policy.decide(&subject, None, found), String::new())
        };
        for f in &lookup.failures {
            eprintln!("provenix substituter: warning: {f}");
        }
        drop(lookup);
        if let Some(e) = screen_error.take() {
            return Err(e.context("checking checkpoints"));
        }
        let statements = statements.take();
        let mut why = crate::show::decision_text(&self.policy, &decision);
        why.push_str(&graph_text);
        let (true, Some(digest)) = (decision.accepted(), decision.digest()) else {
            return Ok((None, why));
        };
        // References and deriver from a counted builder's signed statement.
        let Some(statement) = statements.iter().find(|s| {
            s.sha256 == digest.sha256
                && decision
                    .counted()
                    .iter()
                    .any(|b| b.worker_key == s.worker_key)
        }) else {
            return Ok((None, format!("{why}  - no counted statement was kept\n")));
        };
        // The NAR, from a cache that serves it as accepted, uncompressed.
        let nar_hash = nixsig::nar_hash(&digest.sha256);
        let Some(source) = narinfos.iter().find_map(|(i, n)| {
            (n.nar_hash == nar_hash
                && n.nar_size == digest.size
                && n.compression.as_deref() == Some("none"))
            .then(|| {
                Some(NarSource {
                    cache: *i,
                    url: n.nar_url.clone()?,
                    sha256: digest.sha256,
                    size: digest.size,
                })
            })
            .flatten()
        }) else {
            return Ok((
                None,
                format!(
                    "REJECTED {path}: accepted, but no upstream cache serves its NAR ({nar_hash}) uncompressed\n{why}"
                ),
            ));
        };
        let fingerprint =
            nixsig::fingerprint(&path, &digest.sha256, digest.size, &statement.references)?;
        let sig = nixsig::sign(&self.key_name, &self.key, &fingerprint)?;
        let narinfo = nixsig::narinfo(
            &path,
            &digest.sha256,
            digest.size,
            &statement.references,
            statement.deriver.as_deref(),
            &[sig],
        )?;
        Ok((Some((narinfo, source)), why))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing a panicking holder leaves half-done is trusted: the maps
    // hold whole entries.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `GET /nar/<nix32>.nar`: an accepted NAR, streamed from its upstream,
/// its last chunk held back until the whole has the accepted hash and
/// size.
fn nar_stream(state: &Arc<State>, nar: &str) -> Response<HttpBody> {
    let Some(source) = lock(&state.decisions).nars.get(nar).cloned() else {
        return text(
            StatusCode::NOT_FOUND,
            "no accepted path has this NAR (ask for its narinfo first)\n".into(),
        );
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let state = Arc::clone(state);
    let size = source.size;
    tokio::task::spawn_blocking(move || {
        let outcome = stream_checked(&state, &source, &tx);
        if let Err(e) = outcome {
            eprintln!(
                "provenix substituter: NAR {} cut off: {e:#}",
                nixsig::nar_hash(&source.sha256)
            );
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let mut r = Response::new(BoxBody::new(Channel(rx)));
    r.headers_mut().insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(size),
    );
    r
}

/// Send the NAR chunk by chunk, hashing it, the last chunk only once the
/// whole is the accepted NAR.
fn stream_checked(
    state: &State,
    source: &NarSource,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<()> {
    let cache = state
        .caches
        .get(source.cache)
        .context("the upstream is gone")?;
    let mut reader = cache.open_file(&source.url)?;
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let mut held: Option<Bytes> = None;
    let mut total: u64 = 0;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {}/{}", cache.url(), source.url))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        if total > source.size {
            bail!(
                "the upstream NAR is longer than the accepted {} bytes",
                source.size
            );
        }
        hasher.update(&buf);
        if let Some(previous) = held.replace(Bytes::from(buf))
            && tx.blocking_send(Ok(previous)).is_err()
        {
            return Ok(()); // the client went away
        }
    }
    if total != source.size {
        bail!(
            "the upstream NAR has {total} bytes, the accepted one {}",
            source.size
        );
    }
    if hasher.finish().as_ref() != source.sha256 {
        bail!(
            "the upstream NAR does not have the accepted hash {}",
            nixsig::nar_hash(&source.sha256)
        );
    }
    if let Some(last) = held {
        let _ = tx.blocking_send(Ok(last));
    }
    Ok(())
}

/// A response body fed by a channel; an error ends the connection
/// without the body's end, so the client sees a truncated transfer.
struct Channel(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}
