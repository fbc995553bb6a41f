//! The worker daemon: it hashes what Nix built, signs a statement per
//! output, appends it to its attested Merkle log with group commit, and
//! hands out bundles (DESIGN.md, "The binding, end to end", steps 2-5).
//!
//! [`Worker::start`] detects the platform, makes the identity (a key in
//! memory only, bound by evidence to the source commit), verifies that
//! evidence with the verifier library, and opens a new log directory for
//! it under the state directory. Then:
//!
//! - [`Worker::submit`] hashes each output itself (never taking a hash
//!   from a client), asks Nix for its references, and queues it. The
//!   appender thread signs queued statements with the indices they will
//!   get, appends them in one batch with one `fdatasync`, and acknowledges
//!   each submitter only after that (`appender`).
//! - The checkpointer signs and attests a checkpoint every N entries or T
//!   milliseconds (`checkpointer`).
//! - [`Worker::bundle`] returns a self-contained bundle for an entry, under
//!   the latest attested checkpoint covering it.
//!
//! # Restarts, keys and logs
//!
//! The key never leaves memory, so every start is a new identity K, and a
//! log belongs to exactly one K: it holds statements K signed and
//! checkpoints K signed, which is what `verify_bundle` requires (statement
//! key = identity key = checkpoint key). The state directory holds one log
//! directory per identity, `logs/<hex K>/` (see `LogDir`), whose `identity`
//! file records K at creation. A start opens every older log directory
//! (recovering it from a crash), never appends to it again, and creates a
//! new one. Old logs stay readable and verifiable: entries, proofs, and
//! bundles under their last attested checkpoint.
//!
//! An entry acknowledged after its log's last attested checkpoint (the
//! process was killed before the next one) stays in that log, durable and
//! signed, but no attested checkpoint of its key can ever cover it: the
//! key is gone. On start, the new identity therefore logs those outputs
//! again (it hashes them afresh from the store), and records in the old
//! directory's `relogged` file how far it got, so every acknowledged output
//! ends up with a bundle.
//!
//! A log directory that does not open (corruption, which a crash does not
//! cause) stops the start: the operator moves it aside. A directory whose
//! creation a crash interrupted (no `identity` file yet, so no entries) is
//! removed. The index from store path to newest statement is rebuilt at
//! start by reading every old entry (O(entries), a signature check each).
//!
//! One daemon per state directory: a start takes an abstract Unix socket
//! named after the state directory as a lock (released by the kernel when
//! the process dies, even by `kill -9`).

mod appender;
mod built;
mod checkpointer;
pub(crate) mod derivation;
mod logdir;
mod nix;
mod selfcheck;
mod trace;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use provenix_verifier::{Bundle, Hash, Identity, Policy, Statement, Subject};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

pub use logdir::{AttestedCheckpoint, Head, LOGS_DIR, LogDir, MAX_ENTRIES_PER_READ};
pub use nix::MAX_NAME_LEN;
pub(crate) use nix::truncate;

use crate::identity::{IdentityError, SOURCE_COMMIT, WorkerIdentity};
use crate::log::CheckpointSigner;
use crate::nar::{NarDigest, NarError};
use crate::platform::{Choice, Platform, TpmOptions, with_vek};
use appender::{Appender, Job};
use checkpointer::Checkpointer;
use selfcheck::SelfCheck;

/// Default: most outputs in one submission. Nix derivations have a handful
/// of outputs; the largest in nixpkgs have a few dozen.
pub const DEFAULT_MAX_OUTPUTS: usize = 64;
/// Default: checkpoint after this many new entries.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1024;
/// Default: checkpoint this often while entries are waiting for one.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where log directories live (`<state>/logs/<hex K>/`).
    pub state_dir: PathBuf,
    /// Which platform to ask for evidence.
    pub platform: Choice,
    /// The TPM and its attestation key, for the TPM platform.
    pub tpm: TpmOptions,
    /// The deployment settings file's bytes, bound before the worker
    /// serves: a TPM PCR, or SEV-SNP's HOST_DATA (docs/image.md).
    pub settings: Option<Vec<u8>>,
    /// What the self-checks trust. `None`: AMD's roots on hardware, the
    /// simulator's test roots on the simulator.
    pub policy: Option<Policy>,
    /// The VCEK/VLEK (DER), for hosts whose certificate table lacks it;
    /// put into the identity and every checkpoint's evidence.
    pub vek: Option<Vec<u8>>,
    /// The source commit. `None`: the one this binary was built from
    /// ([`SOURCE_COMMIT`]); tests override it.
    pub commit: Option<String>,
    /// The Nix store directory.
    pub store_dir: PathBuf,
    /// The `nix` binary (found through PATH by default), for `nix
    /// path-info --json`.
    pub nix: PathBuf,
    /// Refuse outputs Nix registered before this (Unix seconds). The boot
    /// time is used when this is earlier or unset: the worker signs only
    /// what its Nix built in this boot.
    pub built_since: Option<i64>,
    /// Checkpoint after this many new entries.
    pub checkpoint_every: u64,
    /// Checkpoint this often while entries wait for one.
    pub checkpoint_interval: Duration,
    /// Most outputs in one submission.
    pub max_outputs: usize,
    /// Submissions queued for the appender before submitters wait
    /// (backpressure).
    pub queue_depth: usize,
    /// Most statements in one batch (one `fdatasync`).
    pub max_batch: usize,
    /// Outputs hashed at once.
    pub hash_concurrency: usize,
    /// How long [`Worker::bundle`] waits for a checkpoint to cover an
    /// entry.
    pub bundle_timeout: Duration,
    /// Log again, under the new identity, outputs that older identities
    /// acknowledged but never covered by an attested checkpoint.
    pub relog_orphans: bool,
}

impl Config {
    /// Defaults, with state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Config {
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Config {
            state_dir: state_dir.into(),
            platform: Choice::Auto,
            tpm: TpmOptions::default(),
            settings: None,
            policy: None,
            vek: None,
            commit: None,
            store_dir: PathBuf::from("/nix/store"),
            nix: PathBuf::from("nix"),
            built_since: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            max_outputs: DEFAULT_MAX_OUTPUTS,
            queue_depth: 1024,
            max_batch: 4096,
            hash_concurrency: cpus.saturating_mul(2),
            bundle_timeout: Duration::from_secs(30),
            relog_orphans: true,
        }
    }
}

/// Why the daemon refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// Another daemon holds the state directory.
    #[error("{}: another provenix-worker is using this state directory", .0.display())]
    Locked(PathBuf),
    /// The platform failed.
    #[error("platform evidence: {0}")]
    Platform(#[from] provenix_firmware::Error),
    /// No identity could be made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Something the worker produced did not verify: it serves nothing it
    /// could not verify itself.
    #[error("self-check: {0}")]
    SelfCheck(String),
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] crate::log::Error),
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// To which file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file of the state directory holds what the daemon never writes.
    #[error("{}: {reason}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A submission without outputs.
    #[error("no output paths")]
    NoOutputs,
    /// A submission with more outputs than allowed.
    #[error("{count} outputs, more than the limit of {max}")]
    TooManyOutputs {
        /// How many were sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The same output twice in one submission.
    #[error("output {0} is listed twice")]
    DuplicateOutput(String),
    /// Not a store path the daemon accepts.
    #[error("{path:?}: {reason}")]
    BadStorePath {
        /// The path, cut to 300 bytes.
        path: String,
        /// Why.
        reason: String,
    },
    /// An output could not be hashed.
    #[error("hashing {path}: {source}")]
    Nar {
        /// The output.
        path: String,
        /// The cause.
        #[source]
        source: NarError,
    },
    /// Not something this worker's Nix built in this boot (see `built`):
    /// nothing of the submission is signed.
    #[error("refusing to sign {path}: {reason}")]
    NotBuilt {
        /// The output or derivation.
        path: String,
        /// Which check failed.
        reason: String,
    },
    /// The store no longer holds what Nix registered: nothing is signed.
    #[error(
        "store corruption: {path} hashes to {computed} in the store, but Nix registered {registered}"
    )]
    StoreCorruption {
        /// The path.
        path: String,
        /// What Nix registered.
        registered: String,
        /// What the daemon computed.
        computed: String,
    },
    /// An entry acknowledged before a restart that no attested checkpoint
    /// covers, and that could not be logged again.
    #[error(
        "{path} was acknowledged as entry {index} of log {key} before a restart, no attested \
         checkpoint covers it, and it could not be logged again: {reason}"
    )]
    Lost {
        /// The store path.
        path: String,
        /// The old log's key (hex).
        key: String,
        /// The entry.
        index: u64,
        /// Why it could not be logged again.
        reason: String,
    },
    /// Nix failed or said something unexpected about an output.
    #[error("nix on {path}: {reason}")]
    Nix {
        /// The output.
        path: String,
        /// What happened.
        reason: String,
    },
    /// A statement over the log's entry limit (too many references).
    #[error("the statement for {path} is {len} bytes, over the log's entry limit")]
    StatementTooLarge {
        /// The output.
        path: String,
        /// The signed statement's length.
        len: usize,
    },
    /// Signing, encoding or a checkpoint failed.
    #[error(transparent)]
    Verifier(#[from] provenix_verifier::Error),
    /// The batch was not appended (the log is reopened; retry).
    #[error("append failed: {0}")]
    Append(String),
    /// The daemon is stopping.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// No statement for this store path or index.
    #[error("no statement for {0}")]
    NotFound(String),
    /// No attested checkpoint covers the entry (yet, or ever: an old log's
    /// entries past its last checkpoint are logged again by the next
    /// identity).
    #[error("no attested checkpoint covers entry {index} yet")]
    NotCovered {
        /// The entry.
        index: u64,
    },
    /// Waiting for a checkpoint took too long.
    #[error("no attested checkpoint covered the entry within {0:?}")]
    Timeout(Duration),
    /// A bug, or a task that died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// One output logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The output.
    pub store_path: String,
    /// Its entry in the log of `worker_key`.
    pub log_index: u64,
    /// Its NAR hash and size, as the daemon computed them.
    pub nar: NarDigest,
    /// The key whose log holds it.
    pub worker_key: [u8; 32],
}

/// How long [`Worker::shutdown`] waits for the last writer to let go of
/// the state directory.
const SHUTDOWN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long [`lock_state`] waits for a state directory that looks held
/// before it calls it held by another daemon.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Which entry a bundle is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleFor {
    /// The newest statement about this store path, in any log.
    StorePath(String),
    /// An entry of the current log.
    Index(u64),
    /// An entry of the log of this key.
    LogIndex([u8; 32], u64),
}

/// The newest statement for each store path: which log, which entry.
#[derive(Default)]
pub(crate) struct PathIndex(Mutex<HashMap<String, (Arc<LogDir>, u64)>>);

impl PathIndex {
    pub(crate) fn record<'s>(&self, log: &Arc<LogDir>, done: impl Iterator<Item = &'s Submitted>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for s in done {
            map.insert(s.store_path.clone(), (log.clone(), s.log_index));
        }
    }

    fn get(&self, path: &str) -> Option<(Arc<LogDir>, u64)> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(path).cloned()
    }
}

/// An entry of an older log that could not be logged again: the log's
/// key, the entry's index, and why.
type LostEntry = ([u8; 32], u64, String);

/// The running daemon.
pub struct Worker {
    store: nix::Store,
    identity: WorkerIdentity,
    current: Arc<LogDir>,
    /// Every log, oldest first; the current one last.
    logs: Vec<Arc<LogDir>>,
    check: Arc<SelfCheck>,
    paths: Arc<PathIndex>,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    appender: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    nudge: Arc<Notify>,
    hashing: Semaphore,
    /// Outputs registered before this (Unix seconds) are refused.
    built_since: i64,
    /// Entries of older logs that could not be logged again, by store
    /// path: the old log's key, the entry and why.
    lost: Mutex<HashMap<String, LostEntry>>,
    max_outputs: usize,
    bundle_timeout: Duration,
    platform_name: String,
    lock: Mutex<Option<Arc<StateLock>>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("key", &hex::encode(self.identity.public()))
            .field("log", &self.current.dir())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Start: platform, identity, self-check, logs, appender and
    /// checkpointer. Must run inside a multi-threaded tokio runtime.
    pub async fn start(config: Config) -> Result<Arc<Worker>, DaemonError> {
        if config.max_outputs == 0
            || config.queue_depth == 0
            || config.max_batch == 0
            || config.hash_concurrency == 0
            || config.checkpoint_every == 0
            || config.checkpoint_interval.is_zero()
        {
            return Err(DaemonError::Config(
                "limits, batch size and checkpoint period must be positive".into(),
            ));
        }
        let store = nix::Store::new(&config.store_dir, config.nix.clone())?;
        let built_since = built::boot_time()?.max(config.built_since.unwrap_or(i64::MIN));
        let logs_dir = config.state_dir.join(LOGS_DIR);
        std::fs::create_dir_all(&logs_dir).map_err(|source| DaemonError::Io {
            op: "create",
            path: logs_dir.clone(),
            source,
        })?;
        let lock = Arc::new(lock_state(&config.state_dir)?);

        let now = unix_now();
        // A TPM worker extends its settings into a PCR as it opens the TPM.
        let mut tpm = config.tpm.clone();
        tpm.settings.clone_from(&config.settings);
        let platform = Platform::open(config.platform, &tpm, now, |why| {
            eprintln!("######################################################################");
            eprintln!("# WARNING: no SEV-SNP or TPM hardware: {why}");
            eprintln!("# Using the SIMULATED platform. Its evidence proves nothing about");
            eprintln!("# hardware and is accepted only by a policy that names its test root.");
            eprintln!("######################################################################");
        })?;
        if let Some(settings) = &config.settings {
            platform.check_settings(settings)?;
            let bound = if platform.is_simulated() {
                "NOT bound (simulated)"
            } else {
                "bound to the evidence"
            };
            eprintln!(
                "provenix-worker: deployment settings {}: {bound}",
                hex::encode(provenix_verifier::sha256(settings))
            );
        }
        let policy = match &config.policy {
            Some(p) => p.clone(),
            None => platform.self_check_policy(),
        };
        let check = Arc::new(SelfCheck::new(policy)?);
        let commit = config
            .commit
            .clone()
            .unwrap_or_else(|| SOURCE_COMMIT.to_owned());
        let identity = WorkerIdentity::new(&platform, &commit)?;
        let mut document = identity.document().clone();
        document.evidence = with_vek(document.evidence, config.vek.as_deref());
        check.identity(&document, now)?;

        // Older logs, oldest first, recovered; then this identity's.
        let old = tokio::task::spawn_blocking({
            let logs_dir = logs_dir.clone();
            move || open_logs(&logs_dir)
        })
        .await
        .map_err(|e| DaemonError::Internal(format!("opening logs: {e}")))??;
        let generation = old.last().map_or(1, |l| l.generation().saturating_add(1));
        let current = Arc::new(LogDir::create(&logs_dir, generation, document)?);
        let paths = Arc::new(PathIndex::default());
        let old = tokio::task::spawn_blocking({
            let paths = paths.clone();
            move || index_paths(old, &paths)
        })
        .await
        .map_err(|e| DaemonError::Internal(format!("indexing logs: {e}")))??;
        let mut lost = HashMap::new();
        for log in &old {
            for (index, path, why) in log.lost()? {
                lost.insert(path, (*log.key(), index, why));
            }
        }
        let mut logs = old;
        logs.push(current.clone());

        let (head_tx, head_rx) = watch::channel(current.head());
        let (queue_tx, queue_rx) = mpsc::channel(config.queue_depth);
        let appender = Appender {
            log: current.clone(),
            key: identity.key().clone(),
            public: *identity.public(),
            commit,
            head: head_tx,
            paths: paths.clone(),
            max_batch: config.max_batch,
            nix_signatures: config.store_dir
                == std::path::Path::new(provenix_verifier::nixsig::STORE_DIR),
            _lock: lock.clone(),
        };
        let appender = std::thread::Builder::new()
            .name("provenix-appender".into())
            .spawn(move || appender.run(queue_rx))
            .map_err(|e| DaemonError::Internal(format!("appender thread: {e}")))?;

        let (stop, stop_rx) = watch::channel(false);
        let nudge = Arc::new(Notify::new());
        let platform_name = platform.to_string();
        let checkpointer = Checkpointer {
            log: current.clone(),
            signer: CheckpointSigner::new(current.origin(), identity.key().clone())?,
            platform: Arc::new(platform),
            check: check.clone(),
            vek: config.vek.clone(),
            head: head_rx,
            nudge: nudge.clone(),
            stop: stop_rx,
            every: config.checkpoint_every,
            interval: config.checkpoint_interval,
            _lock: lock.clone(),
        };
        let checkpointer = tokio::spawn(checkpointer.run());

        let worker = Arc::new(Worker {
            store,
            identity,
            current,
            logs,
            check,
            paths,
            queue: Mutex::new(Some(queue_tx)),
            appender: Mutex::new(Some(appender)),
            checkpointer: Mutex::new(Some(checkpointer)),
            stop,
            nudge,
            hashing: Semaphore::new(config.hash_concurrency),
            built_since,
            lost: Mutex::new(lost),
            max_outputs: config.max_outputs,
            bundle_timeout: config.bundle_timeout,
            platform_name,
            lock: Mutex::new(Some(lock)),
        });
        if config.relog_orphans {
            let w = worker.clone();
            tokio::spawn(async move { w.relog_orphans().await });
        }
        Ok(worker)
    }

    /// K, this identity's public key.
    pub fn public_key(&self) -> &[u8; 32] {
        self.identity.public()
    }
    /// This identity's document (key, commit, nonce, evidence).
    pub fn identity(&self) -> &Identity {
        self.current.identity()
    }
    /// What the platform is, for logs.
    pub fn platform(&self) -> &str {
        &self.platform_name
    }
    /// This identity's log.
    pub fn current_log(&self) -> &Arc<LogDir> {
        &self.current
    }
    /// Every log in the state directory, oldest first, the current one
    /// last.
    pub fn logs(&self) -> &[Arc<LogDir>] {
        &self.logs
    }
    /// The log of key `key`.
    pub fn log(&self, key: &[u8; 32]) -> Option<&Arc<LogDir>> {
        self.logs.iter().find(|l| l.key() == key)
    }

    /// Log one build's outputs: hash each (here, from the store), take its
    /// references from Nix, and append a signed statement per output. Returns
    /// once all are durable, with their indices in the current log.
    pub async fn submit(
        &self,
        drv_path: Option<String>,
        out_paths: Vec<String>,
    ) -> Result<Vec<Submitted>, DaemonError> {
        if out_paths.is_empty() {
            return Err(DaemonError::NoOutputs);
        }
        if out_paths.len() > self.max_outputs {
            return Err(DaemonError::TooManyOutputs {
                count: out_paths.len(),
                max: self.max_outputs,
            });
        }
        for (i, p) in out_paths.iter().enumerate() {
            self.store.check_path(p)?;
            if out_paths.get(..i).is_some_and(|before| before.contains(p)) {
                return Err(DaemonError::DuplicateOutput(p.clone()));
            }
        }
        if let Some(drv) = &drv_path {
            self.store.check_drv(drv)?;
        }
        let sender = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(DaemonError::ShuttingDown)?;
        let outputs = self.check_built(drv_path.as_deref(), &out_paths).await?;
        // `check_built` refuses a submission without a derivation.
        let trace = match &drv_path {
            Some(drv) => Some(self.trace(drv).await?),
            None => None,
        };
        let (reply, ack) = oneshot::channel();
        sender
            .send(Job {
                deriver: drv_path,
                trace,
                outputs,
                reply,
            })
            .await
            .map_err(|_| DaemonError::ShuttingDown)?;
        ack.await
            .map_err(|_| DaemonError::Internal("the appender stopped".into()))?
    }

    /// The NAR hash and size of a store path, computed on a blocking
    /// thread, at most `hash_concurrency` at once.
    async fn hash(&self, path: &str) -> Result<NarDigest, DaemonError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| DaemonError::ShuttingDown)?;
        let owned = PathBuf::from(path);
        tokio::task::spawn_blocking(move || nar_digest(&owned))
            .await
            .map_err(|e| DaemonError::Internal(format!("hash task: {e}")))?
            .map_err(|source| DaemonError::Nar {
                path: path.to_owned(),
                source,
            })
    }

    /// A bundle for an entry, under the latest attested checkpoint that
    /// covers it; for the current log, waits (up to the configured timeout)
    /// for the next checkpoint and asks for it to come early. The bundle is
    /// verified with the verifier library before it is returned.
    pub async fn bundle(&self, which: BundleFor) -> Result<Bundle, DaemonError> {
        let (log, index) = match which {
            BundleFor::StorePath(path) => {
                self.store.check_path(&path)?;
                self.paths.get(&path).ok_or(DaemonError::NotFound(path))?
            }
            BundleFor::Index(i) => (self.current.clone(), i),
            BundleFor::LogIndex(key, i) => (
                self.log(&key)
                    .cloned()
                    .ok_or_else(|| DaemonError::NotFound(format!("log {}", hex::encode(key))))?,
                i,
            ),
        };
        if index >= log.head().size {
            return Err(DaemonError::NotFound(format!("entry {index}")));
        }
        let deadline = tokio::time::Instant::now() + self.bundle_timeout;
        let mut latest = log.subscribe();
        let cp = loop {
            if let Some(cp) = latest
                .borrow_and_update()
                .clone()
                .filter(|cp| cp.size > index)
            {
                break cp;
            }
            if !Arc::ptr_eq(&log, &self.current) {
                return Err(self.lost_or_uncovered(&log, index));
            }
            self.nudge.notify_one();
            match tokio::time::timeout_at(deadline, latest.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(DaemonError::ShuttingDown),
                Err(_) => return Err(DaemonError::Timeout(self.bundle_timeout)),
            }
        };
        let check = self.check.clone();
        tokio::task::spawn_blocking(move || {
            let bundle = log.bundle_under(index, &cp)?;
            check.bundle(&bundle, unix_now())?;
            Ok(bundle)
        })
        .await
        .map_err(|e| DaemonError::Internal(format!("bundle task: {e}")))?
    }

    /// Why entry `index` of the old log `log` has no bundle: it was
    /// recorded lost (by path), or it is not logged again yet.
    fn lost_or_uncovered(&self, log: &LogDir, index: u64) -> DaemonError {
        let lost = self.lost.lock().unwrap_or_else(PoisonError::into_inner);
        let found = lost
            .iter()
            .find(|(_, (key, i, _))| key == log.key() && *i == index);
        match found {
            Some((path, (key, index, why))) => DaemonError::Lost {
                path: path.clone(),
                key: hex::encode(key),
                index: *index,
                reason: why.clone(),
            },
            None => DaemonError::NotCovered { index },
        }
    }

    /// The current log's tree head.
    pub fn head(&self) -> Head {
        self.current.head()
    }
    /// The current log's latest attested checkpoint.
    pub fn latest_checkpoint(&self) -> Option<Arc<AttestedCheckpoint>> {
        self.current.latest_checkpoint()
    }
    /// Entries of the current log (at most [`MAX_ENTRIES_PER_READ`]).
    /// Reads files: call from a blocking context for large ranges.
    pub fn entries(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, DaemonError> {
        self.current.entries(range)
    }
    /// An inclusion proof in the current log.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, DaemonError> {
        self.current.inclusion_proof(index, size)
    }
    /// A consistency proof in the current log.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, DaemonError> {
        self.current.consistency_proof(size1, size2)
    }

    /// Stop: refuse new submissions, let the appender finish what is
    /// queued, make a last attested checkpoint, sync the log and release
    /// the state directory. Idempotent.
    pub async fn shutdown(&self) -> Result<(), DaemonError> {
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let appender = self
            .appender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = appender {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| DaemonError::Internal(format!("joining the appender: {e}")))?
                .map_err(|_| DaemonError::Internal("the appender panicked".into()))?;
        }
        self.stop.send_replace(true);
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = checkpointer {
            handle
                .await
                .map_err(|e| DaemonError::Internal(format!("checkpointer: {e}")))?;
        }
        self.current.write_log().sync()?;
        let lock = self
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(lock) = lock {
            // Blocking work the checkpointer started (evidence requests) may
            // still hold the lock for a moment after its task ended; the
            // state directory is free only once nothing that writes to it
            // is left, so wait for that, boundedly, before returning.
            let deadline = tokio::time::Instant::now() + SHUTDOWN_LOCK_WAIT;
            while Arc::strong_count(&lock) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            if Arc::strong_count(&lock) > 1 {
                return Err(DaemonError::Internal(
                    "a writer still holds the state directory after shutdown".into(),
                ));
            }
        }
        Ok(())
    }

    /// Log again the outputs older identities acknowledged after their last
    /// attested checkpoint (see the module documentation).
    async fn relog_orphans(self: Arc<Self>) {
        for old in self.logs.iter().filter(|l| !Arc::ptr_eq(l, &self.current)) {
            let covered = old.latest_checkpoint().map_or(0, |cp| cp.size);
            let from = match old.relogged() {
                Ok(done) => done.max(covered),
                Err(e) => {
                    eprintln!("provenix-worker: {e}");
                    continue;
                }
            };
            let to = old.head().size;
            let mut relogged = 0u64;
            for index in from..to {
                let statement = old
                    .entry(index)
                    .and_then(|e| Statement::verify(&e).map_err(DaemonError::from));
                let (path, deriver) = match statement {
                    Ok(Statement {
                        subject: Subject::StorePath(path),
                        deriver,
                        ..
                    }) => (path, deriver),
                    Ok(_) => continue,
                    Err(e) => {
                        eprintln!(
                            "provenix-worker: log {} entry {index}: {e}",
                            old.dir().display()
                        );
                        continue;
                    }
                };
                match self.submit(deriver, vec![path.clone()]).await {
                    Ok(_) => relogged = relogged.saturating_add(1),
                    Err(DaemonError::ShuttingDown) => return,
                    Err(e) => {
                        // Never silently: the log says so by name, and
                        // `export` of the path says why from now on.
                        let why = e.to_string();
                        eprintln!(
                            "provenix-worker: LOST: {path}, acknowledged as entry {index} of log {} \
                             before a restart, cannot be logged again: {why}",
                            hex::encode(old.key())
                        );
                        if let Err(e) = old.record_lost(index, &path, &why) {
                            eprintln!("provenix-worker: {e}");
                        }
                        self.lost
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(path, (*old.key(), index, why));
                    }
                }
            }
            if from < to {
                eprintln!(
                    "provenix-worker: logged again {relogged} of {} entries that no attested checkpoint of {} covers",
                    to.saturating_sub(from),
                    hex::encode(old.key())
                );
            }
            if let Err(e) = old.set_relogged(to) {
                eprintln!("provenix-worker: {e}");
            }
        }
    }
}

/// NARs up to this size are serialised and hashed on the calling thread.
/// `nar::hash_path` overlaps reading with hashing on a second thread with
/// four 256 KiB buffers, which pays off for large outputs but costs a
/// thread and 1 MiB of zeroed memory per call: most of the CPU time of a
/// small output's submission (`benches/hook.sh`).
const INLINE_NAR_LIMIT: u64 = 1 << 20;

/// The NAR hash and size of `path`: `nar::dump` into SHA-256 on this
/// thread while the NAR stays under [`INLINE_NAR_LIMIT`], else (starting
/// over) `nar::hash_path`. Both serialise with the same encoder, so the
/// bytes hashed are the same either way.
fn nar_digest(path: &Path) -> Result<NarDigest, NarError> {
    struct Hasher {
        ctx: ring::digest::Context,
        len: u64,
        over: bool,
    }
    impl std::io::Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
            self.len = self.len.saturating_add(len);
            if self.len > INLINE_NAR_LIMIT {
                self.over = true;
                return Err(std::io::Error::other("large NAR"));
            }
            self.ctx.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hasher = Hasher {
        ctx: ring::digest::Context::new(&ring::digest::SHA256),
        len: 0,
        over: false,
    };
    match crate::nar::dump(path, &mut hasher) {
        Ok(size) => {
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(hasher.ctx.finish().as_ref());
            Ok(NarDigest { sha256, size })
        }
        Err(NarError::Write(_)) if hasher.over => crate::nar::hash_path(path),
        Err(e) => Err(e),
    }
}

/// Open every log directory under `logs`, oldest generation first.
fn open_logs(logs: &Path) -> Result<Vec<Arc<LogDir>>, DaemonError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(logs).map_err(|source| DaemonError::Io {
        op: "list",
        path: logs.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| DaemonError::Io {
            op: "list",
            path: logs.to_owned(),
            source,
        })?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if logdir::abandoned(&path)? {
            // A start killed before its identity file was in place: it
            // never appended anything, and no bundle names it.
            eprintln!(
                "provenix-worker: removing {}, a log directory whose creation was interrupted",
                path.display()
            );
            std::fs::remove_dir_all(&path).map_err(|source| DaemonError::Io {
                op: "remove",
                path: path.clone(),
                source,
            })?;
            continue;
        }
        out.push(Arc::new(LogDir::open(&path)?));
    }
    out.sort_by_key(|l| l.generation());
    if out
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.generation() == b.generation()))
    {
        return Err(DaemonError::State {
            path: logs.to_owned(),
            reason: "two log directories have the same generation".into(),
        });
    }
    Ok(out)
}

/// Record the newest statement of each store path in `logs` (oldest
/// first). O(entries), with a signature check each.
fn index_paths(logs: Vec<Arc<LogDir>>, paths: &PathIndex) -> Result<Vec<Arc<LogDir>>, DaemonError> {
    for log in &logs {
        let size = log.head().size;
        let mut start = 0;
        while start < size {
            let chunk = log.entries(start..size)?;
            let mut done = Vec::with_capacity(chunk.len());
            for (index, entry) in (start..).zip(&chunk) {
                let s = Statement::verify(entry)?;
                if let Subject::StorePath(store_path) = s.subject {
                    done.push(Submitted {
                        store_path,
                        log_index: index,
                        nar: NarDigest {
                            sha256: s.sha256,
                            size: s.size,
                        },
                        worker_key: s.worker_key,
                    });
                }
            }
            paths.record(log, done.iter());
            start = start.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX).max(1));
        }
    }
    Ok(logs)
}

/// The hold on a state directory: released when the last of the worker,
/// its appender thread and its checkpointer task lets go of it, so no
/// write to the directory can follow its release.
#[derive(Debug)]
pub(crate) struct StateLock {
    _socket: std::os::unix::net::UnixListener,
}

/// Hold the state directory: bind an abstract Unix socket named after its
/// canonical path. The kernel releases it when the process exits, however
/// it exits, so a crashed daemon never leaves a stale lock.
fn lock_state(state: &Path) -> Result<StateLock, DaemonError> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let canonical = state.canonicalize().map_err(|source| DaemonError::Io {
        op: "resolve",
        path: state.to_owned(),
        source,
    })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_os_str().as_bytes());
    let name = format!(
        "provenix-worker-state-{}",
        hex::encode(digest.as_ref().get(..16).unwrap_or_default())
    );
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(|source| {
            DaemonError::Io {
                op: "lock",
                path: state.to_owned(),
                source,
            }
        })?;
    // A process forked by another thread holds a copy of every descriptor
    // until it execs (close-on-exec acts only then), so a lock released a
    // moment ago can still be held for a few milliseconds by a child on its
    // way to exec. A daemon holds it for good: retry briefly, then refuse.
    let deadline = std::time::Instant::now() + LOCK_RETRY;
    loop {
        match std::os::unix::net::UnixListener::bind_addr(&addr) {
            Ok(listener) => return Ok(StateLock { _socket: listener }),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(DaemonError::Locked(state.to_owned()));
            }
            Err(source) => {
                return Err(DaemonError::Io {
                    op: "lock",
                    path: state.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
