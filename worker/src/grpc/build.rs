//! The build API: a store derivation or a Nix expression in, Nix's build log
//! and the attested outputs out.
//!
//! A build runs, in a private work directory that holds its GC roots:
//!
//! 1. for an expression, `nix-instantiate` in restricted mode (the
//!    expression can read no file of the worker's but itself), which
//!    writes the store derivations;
//! 2. `nix-store --query --outputs` for each derivation, and `nix-store
//!    --check-validity` of the outputs: a request any of whose outputs is
//!    already valid is refused with `FAILED_PRECONDITION`, naming them.
//!    Nix would not build such an output again, and the worker signs only
//!    what it builds (it does not rebuild with `--check` either: a
//!    rebuild is not the build that registered the path). The statement
//!    about an output built earlier in this boot is in the log already;
//! 3. `nix-build` of the derivations, its stderr streamed to the client
//!    line by line as Nix writes it;
//! 4. `nix-store --realise` of every output with `--add-root`: it refuses
//!    any output that is not valid (no substituters: nothing is fetched)
//!    and roots them all until the backend has hashed them;
//! 5. [`BuildBackend::submit`] per derivation, which checks that Nix
//!    registered each output as built from it, here, in this boot, with the
//!    hash it computes (the daemon's `built` checks, which no entry point
//!    skips), then hashes, signs and logs the outputs, then
//!    [`BuildBackend::bundle`] per output.
//!
//! Every Nix command runs with `substituters` and `builders` empty, so the
//! worker's store holds only what the worker built (DESIGN.md: a daemon
//! that never signs what it did not build), and `post-build-hook` empty,
//! since this API logs its own outputs.

use std::collections::HashSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::backend::BuildBackend;
use super::proto;
use super::proto::build_request::Target;
use super::proto::build_server::{Build, BuildServer};

/// Largest build request decoded: an expression and its attributes, with
/// room for framing.
pub const MAX_BUILD_REQUEST: usize = 1 << 20;
/// Largest Nix expression accepted. Expressions that describe one build
/// are a few KiB; nixpkgs' biggest single files are about 200 KiB.
pub const MAX_EXPRESSION: usize = 256 << 10;
/// Most attribute paths in one request.
pub const MAX_ATTRIBUTES: usize = 16;
/// Longest attribute path.
pub const MAX_ATTRIBUTE_LEN: usize = 256;
/// Most derivations one build request may evaluate to.
pub const MAX_DERIVATIONS: usize = 64;
/// Most outputs of one build request, over all its derivations.
const MAX_OUTPUTS: usize = 256;
/// Longest build log line sent as one event; longer lines are split.
pub const MAX_LOG_LINE: usize = 64 << 10;
/// Most bytes read from a Nix command's stdout: store paths, one a line,
/// at most [`MAX_OUTPUTS`] of them.
const MAX_STDOUT: usize = 1 << 20;
/// Log lines buffered for a slow client before Nix is made to wait.
const LOG_BUFFER: usize = 256;

/// Longest store path name: Nix 2.8's `checkName`
/// (`src/libstore/path.cc`) refuses names over 211 characters.
const MAX_NAME_LEN: usize = 211;
/// Length of the hash part of a store path: 160 bits in Nix's base 32
/// (`StorePath::HashLen` in `src/libstore/path.hh`).
const HASH_LEN: usize = 32;
/// Nix's base-32 alphabet (`src/libutil/hash.cc`, `base32Chars`).
const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Options every Nix command runs with, after the configured ones so that
/// they win: nothing is substituted or built elsewhere, and no
/// post-build hook logs the outputs a second time.
const FORCED_OPTIONS: [(&str, &str); 3] = [
    ("substituters", ""),
    ("builders", ""),
    ("post-build-hook", ""),
];

/// How builds run.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// The Nix store directory.
    pub store_dir: String,
    /// The directory of `nix-build`, `nix-instantiate` and `nix-store`;
    /// `None` looks them up in `PATH`.
    pub nix_bin_dir: Option<PathBuf>,
    /// Where each build's private work directory is made.
    pub work_dir: PathBuf,
    /// `--option NAME VALUE` pairs for every Nix command (for example
    /// `sandbox-paths`). `substituters`, `builders` and `post-build-hook`
    /// are always empty whatever this says.
    pub nix_options: Vec<(String, String)>,
    /// How long evaluating an expression may take.
    pub eval_timeout: Duration,
    /// How long a whole build request may take.
    pub build_timeout: Duration,
    /// Builds that run at once.
    pub max_concurrent_builds: usize,
    /// Builds that may wait for one of those; more are refused with
    /// `RESOURCE_EXHAUSTED`.
    pub max_queued_builds: usize,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            store_dir: "/nix/store".to_owned(),
            nix_bin_dir: None,
            work_dir: std::env::temp_dir(),
            nix_options: Vec::new(),
            eval_timeout: Duration::from_secs(60),
            build_timeout: Duration::from_secs(4 * 3600),
            // The reference machine has two cores.
            max_concurrent_builds: 2,
            max_queued_builds: 16,
        }
    }
}

impl BuildConfig {
    fn tool(&self, name: &str) -> PathBuf {
        match &self.nix_bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// A Nix command with the configured and the forced options.
    fn nix(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.tool(tool));
        let configured = self
            .nix_options
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in configured.chain(FORCED_OPTIONS) {
            cmd.arg("--option").arg(name).arg(value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The last resort; `NixProcess` stops Nix gently first.
            .kill_on_drop(true);
        cmd
    }
}

/// What to build, validated.
#[derive(Debug)]
enum Validated {
    Derivation(String),
    Expression {
        contents: Vec<u8>,
        attributes: Vec<String>,
    },
}

/// The `Build` gRPC service over a [`BuildBackend`].
pub struct BuildService {
    backend: Arc<dyn BuildBackend>,
    config: Arc<BuildConfig>,
    queue: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

impl BuildService {
    /// The service over `backend`.
    pub fn new(backend: Arc<dyn BuildBackend>, config: BuildConfig) -> Self {
        let running = config.max_concurrent_builds.max(1);
        let queue = running.saturating_add(config.max_queued_builds);
        BuildService {
            backend,
            config: Arc::new(config),
            queue: Arc::new(Semaphore::new(queue)),
            running: Arc::new(Semaphore::new(running)),
        }
    }

    /// The tonic server of this service, with its request size limit.
    pub fn into_server(self) -> BuildServer<BuildService> {
        BuildServer::new(self).max_decoding_message_size(MAX_BUILD_REQUEST)
    }
}

#[tonic::async_trait]
impl Build for BuildService {
    type BuildStream = ReceiverStream<Result<proto::BuildEvent, Status>>;

    async fn build(
        &self,
        request: Request<proto::BuildRequest>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let target = validate(request.into_inner(), &self.config)?;
        let queued = Arc::clone(&self.queue)
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("too many builds are running or waiting"))?;
        let (tx, rx) = mpsc::channel(LOG_BUFFER);
        let job = Job {
            backend: Arc::clone(&self.backend),
            config: Arc::clone(&self.config),
            tx: tx.clone(),
        };
        let running = Arc::clone(&self.running);
        tokio::spawn(async move {
            let _queued = queued;
            let event = match running.acquire_owned().await {
                // Gone while it waited: nothing to build for.
                Ok(_) if tx.is_closed() => return,
                Ok(_permit) => {
                    let timeout = job.config.build_timeout;
                    match tokio::time::timeout(timeout, job.run(target)).await {
                        Ok(result) => result,
                        Err(_) => Err(Status::deadline_exceeded(format!(
                            "the build took longer than {} s",
                            timeout.as_secs()
                        ))),
                    }
                }
                Err(_) => Err(Status::unavailable("the build service is shutting down")),
            };
            let event = event.map(|result| proto::BuildEvent {
                event: Some(proto::build_event::Event::Result(result)),
            });
            // The client may have gone; nothing is left to tell it.
            let _ = tx.send(event).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Check a request against the limits, and that a derivation is a store
/// derivation that exists.
fn validate(request: proto::BuildRequest, config: &BuildConfig) -> Result<Validated, Status> {
    let proto::BuildRequest { target, attributes } = request;
    match target {
        None => Err(Status::invalid_argument(
            "no target: give a derivation or an expression",
        )),
        Some(Target::Derivation(path)) => {
            if !attributes.is_empty() {
                return Err(Status::invalid_argument(
                    "attributes select from an expression, not a derivation",
                ));
            }
            check_store_path(&config.store_dir, &path, true)
                .map_err(|why| Status::invalid_argument(format!("derivation: {why}")))?;
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => Ok(Validated::Derivation(path)),
                _ => Err(Status::invalid_argument(format!(
                    "derivation {path} is not in the worker's store"
                ))),
            }
        }
        Some(Target::Expression(contents)) => {
            if contents.len() > MAX_EXPRESSION {
                return Err(Status::invalid_argument(format!(
                    "expression of {} bytes is over the {MAX_EXPRESSION}-byte limit",
                    contents.len()
                )));
            }
            if attributes.len() > MAX_ATTRIBUTES {
                return Err(Status::invalid_argument(format!(
                    "{} attributes are over the limit of {MAX_ATTRIBUTES}",
                    attributes.len()
                )));
            }
            for a in &attributes {
                check_attribute(a)
                    .map_err(|why| Status::invalid_argument(format!("attribute: {why}")))?;
            }
            Ok(Validated::Expression {
                contents,
                attributes,
            })
        }
    }
}

/// An attribute path as `nix-build -A` takes it: dot-separated names of
/// letters, digits, `_`, `'` and `-`, not starting with `-` (it is one
/// argument, but it must not read as an option either).
fn check_attribute(attr: &str) -> Result<(), String> {
    if attr.is_empty() || attr.len() > MAX_ATTRIBUTE_LEN {
        return Err(format!(
            "must be 1 to {MAX_ATTRIBUTE_LEN} bytes, not {}",
            attr.len()
        ));
    }
    if attr.starts_with('-') {
        return Err("starts with '-'".to_owned());
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-' | '.');
    if !attr.chars().all(ok) || attr.split('.').any(str::is_empty) {
        return Err(format!(
            "{:?} is not a plain attribute path",
            truncate(attr)
        ));
    }
    Ok(())
}

/// Check that `path` is `<store>/<32 base-32 chars>-<name>` with a name
/// Nix accepts, ending in `.drv` exactly when `derivation` is set: a
/// top-level store path, nothing under it, no `..`.
fn check_store_path(store_dir: &str, path: &str, derivation: bool) -> Result<(), String> {
    let rest = path
        .strip_prefix(store_dir)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("{:?} is not in the Nix store", truncate(path)))?;
    let (hash, name) = rest
        .split_once('-')
        .ok_or_else(|| format!("{:?} has no hash part", truncate(path)))?;
    if hash.len() != HASH_LEN || !hash.bytes().all(|b| NIX32.contains(&b)) {
        return Err(format!(
            "the hash part of {:?} is not 32 characters of Nix's base 32",
            truncate(path)
        ));
    }
    // Nix 2.8's `checkName`: letters, digits and `+-._?=`, not starting
    // with a dot (which also rules out `.` and `..`).
    let name_ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b));
    if !name_ok {
        return Err(format!("{:?} has a name Nix refuses", truncate(path)));
    }
    if name.ends_with(".drv") != derivation {
        return Err(if derivation {
            format!("{:?} is not a store derivation (.drv)", truncate(path))
        } else {
            format!("{:?} is a store derivation, not an output", truncate(path))
        });
    }
    Ok(())
}

/// At most 80 characters of untrusted text, for error messages.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// One build request in progress.
struct Job {
    backend: Arc<dyn BuildBackend>,
    config: Arc<BuildConfig>,
    tx: mpsc::Sender<Result<proto::BuildEvent, Status>>,
}

impl Job {
    async fn run(&self, target: Validated) -> Result<proto::BuildResult, Status> {
        let work = WorkDir::create(&self.config.work_dir)?;
        let derivations = match target {
            Validated::Derivation(path) => vec![path],
            Validated::Expression {
                contents,
                attributes,
            } => {
                let timeout = self.config.eval_timeout;
                tokio::time::timeout(timeout, self.instantiate(&work, &contents, &attributes))
                    .await
                    .map_err(|_| {
                        Status::deadline_exceeded(format!(
                            "evaluating the expression took longer than {} s",
                            timeout.as_secs()
                        ))
                    })??
            }
        };

        let mut outputs: Vec<(String, Vec<String>)> = Vec::with_capacity(derivations.len());
        let mut all = Vec::new();
        for drv in derivations {
            let outs = self.query_outputs(&drv).await?;
            all.extend(outs.iter().cloned());
            if all.len() > MAX_OUTPUTS {
                return Err(Status::invalid_argument(format!(
                    "the request builds more than {MAX_OUTPUTS} outputs"
                )));
            }
            outputs.push((drv, outs));
        }

        self.refuse_valid(&all).await?;
        self.build(&work, &outputs, &all).await?;
        self.root_outputs(&work, &all).await?;

        let mut built = Vec::with_capacity(all.len());
        for (drv, outs) in outputs {
            let indices = self.backend.submit(Some(drv.clone()), outs.clone()).await?;
            if indices.len() != outs.len() {
                return Err(Status::internal(format!(
                    "the log returned {} indices for {} outputs",
                    indices.len(),
                    outs.len()
                )));
            }
            for (store_path, log_index) in outs.into_iter().zip(indices) {
                built.push(proto::BuiltOutput {
                    derivation: drv.clone(),
                    store_path,
                    log_index,
                    bundle: Vec::new(),
                });
            }
        }
        for output in &mut built {
            if let Some(bundle) = self.backend.bundle(output.log_index).await? {
                output.bundle = bundle;
            }
        }
        Ok(proto::BuildResult { outputs: built })
    }

    /// Write the expression into the work directory and evaluate it in
    /// restricted mode with only that directory readable; returns its
    /// store derivations, rooted in the work directory.
    async fn instantiate(
        &self,
        work: &WorkDir,
        contents: &[u8],
        attributes: &[String],
    ) -> Result<Vec<String>, Status> {
        let file = work.path.join("default.nix");
        std::fs::write(&file, contents).map_err(|e| {
            Status::internal(format!("writing the expression to {}: {e}", file.display()))
        })?;
        let mut cmd = self.config.nix("nix-instantiate");
        cmd.args(["--option", "restrict-eval", "true"])
            .arg("-I")
            .arg(&work.path)
            .arg("--add-root")
            .arg(work.path.join("drv"));
        for a in attributes {
            cmd.arg("-A").arg(a);
        }
        cmd.arg(&file);
        let (status, stdout) = self.exec(cmd, "nix-instantiate").await?;
        if !status.success() {
            return Err(Status::invalid_argument(format!(
                "evaluating the expression failed (nix-instantiate: {status}); \
                 the log says why"
            )));
        }
        // With --add-root, nix-instantiate prints the roots it made: one
        // symlink in the work directory per derivation it printed.
        let roots = lines(&stdout, "nix-instantiate")?;
        if roots.is_empty() {
            return Err(Status::invalid_argument(
                "the expression evaluates to no derivation",
            ));
        }
        if roots.len() > MAX_DERIVATIONS {
            return Err(Status::invalid_argument(format!(
                "the expression evaluates to {} derivations, over the limit of {MAX_DERIVATIONS}",
                roots.len()
            )));
        }
        let mut derivations = Vec::with_capacity(roots.len());
        for root in roots {
            let target = std::fs::read_link(root)
                .map_err(|e| Status::internal(format!("nix-instantiate's root {root}: {e}")))?;
            let drv = target
                .to_str()
                .ok_or_else(|| Status::internal("nix-instantiate made a root that is not UTF-8"))?
                .to_owned();
            check_store_path(&self.config.store_dir, &drv, true)
                .map_err(|why| Status::internal(format!("nix-instantiate: {why}")))?;
            // `-A a -A a`, or a list with a derivation twice: built and
            // logged once.
            if !derivations.contains(&drv) {
                derivations.push(drv);
            }
        }
        Ok(derivations)
    }

    /// The output paths of a store derivation.
    async fn query_outputs(&self, drv: &str) -> Result<Vec<String>, Status> {
        let mut cmd = self.config.nix("nix-store");
        cmd.args(["--query", "--outputs", drv]);
        let (status, stdout) = self.exec(cmd, "nix-store --query").await?;
        if !status.success() {
            return Err(Status::invalid_argument(format!(
                "{drv}: nix-store --query --outputs failed ({status})"
            )));
        }
        let outs = self.output_paths(&stdout, "nix-store --query")?;
        if outs.is_empty() {
            return Err(Status::invalid_argument(format!("{drv} has no outputs")));
        }
        Ok(outs)
    }

    /// `nix-build` of every derivation, the log streamed. Builds every
    /// output: in Nix 2.8 `nix-build DRV` realises the whole derivation
    /// (an input-addressed build makes all its outputs), though it prints
    /// only the default one.
    async fn build(
        &self,
        work: &WorkDir,
        outputs: &[(String, Vec<String>)],
        all: &[String],
    ) -> Result<(), Status> {
        let mut cmd = self.config.nix("nix-build");
        cmd.arg("--out-link").arg(work.path.join("result"));
        cmd.args(outputs.iter().map(|(drv, _)| drv));
        let (status, stdout) = self.exec(cmd, "nix-build").await?;
        if !status.success() {
            return Err(Status::aborted(format!(
                "the build failed (nix-build: {status}); the log says why"
            )));
        }
        // It prints the store paths it built (not the links it made).
        let expected: HashSet<&str> = all.iter().map(String::as_str).collect();
        for path in lines(&stdout, "nix-build")? {
            if !expected.contains(path) {
                return Err(Status::internal(format!(
                    "nix-build built {}, which is no output of the derivations",
                    truncate(path)
                )));
            }
        }
        Ok(())
    }

    /// Refuse the request if any output is valid already (see the module
    /// documentation): Nix would not build it, so signing it would say
    /// this request built what it did not.
    async fn refuse_valid(&self, all: &[String]) -> Result<(), Status> {
        let mut cmd = self.config.nix("nix-store");
        cmd.args(["--check-validity", "--print-invalid", "--"])
            .args(all);
        let (status, stdout) = self.exec(cmd, "nix-store --check-validity").await?;
        if !status.success() {
            return Err(Status::internal(format!(
                "nix-store --check-validity failed ({status})"
            )));
        }
        let invalid: HashSet<&str> = lines(&stdout, "nix-store --check-validity")?
            .into_iter()
            .collect();
        let valid: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|p| !invalid.contains(p))
            .collect();
        if valid.is_empty() {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "already valid in the worker's store, so this request would not build: {}; the \
             worker signs only outputs a request builds (fetch the statement of an earlier \
             build from the log)",
            valid.iter().take(8).copied().collect::<Vec<_>>().join(", ")
        )))
    }

    /// Root every output in the work directory, which also checks that
    /// each is valid in the store: without substituters, `nix-store
    /// --realise` of a path that is not valid fails.
    async fn root_outputs(&self, work: &WorkDir, all: &[String]) -> Result<(), Status> {
        let mut cmd = self.config.nix("nix-store");
        cmd.arg("--add-root")
            .arg(work.path.join("out"))
            .arg("--realise")
            .args(all);
        let (status, _) = self.exec(cmd, "nix-store --realise").await?;
        if !status.success() {
            return Err(Status::internal(format!(
                "an output is not valid after the build (nix-store --realise: {status})"
            )));
        }
        Ok(())
    }

    fn output_paths(&self, stdout: &[u8], tool: &str) -> Result<Vec<String>, Status> {
        let mut outs = Vec::new();
        for line in lines(stdout, tool)? {
            check_store_path(&self.config.store_dir, line, false)
                .map_err(|why| Status::internal(format!("{tool}: {why}")))?;
            outs.push(line.to_owned());
        }
        Ok(outs)
    }

    /// Run a Nix command: its stderr streamed to the client as log
    /// events, its stdout collected (at most [`MAX_STDOUT`] bytes). Ends
    /// with `CANCELLED` as soon as the client goes away, stopping Nix.
    async fn exec(&self, mut cmd: Command, tool: &str) -> Result<(ExitStatus, Vec<u8>), Status> {
        let mut child = cmd.spawn().map_err(|e| {
            Status::internal(format!(
                "cannot start {}: {e}",
                self.config.tool(tool).display()
            ))
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Status::internal("no stdout pipe"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| Status::internal("no stderr pipe"))?;
        let mut process = NixProcess(Some(child));
        let io =
            async { tokio::try_join!(read_limited(stdout, tool), stream_lines(stderr, &self.tx)) };
        // A silent build sends nothing that would notice a client gone.
        let (out, ()) = tokio::select! {
            io = io => io?,
            () = self.tx.closed() => return Err(Status::cancelled("the client went away")),
        };
        let child = process
            .0
            .as_mut()
            .ok_or_else(|| Status::internal("no child process"))?;
        let status = child
            .wait()
            .await
            .map_err(|e| Status::internal(format!("waiting for {tool}: {e}")))?;
        Ok((status, out))
    }
}

/// How long Nix has to stop its builders after SIGTERM before it is
/// killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running Nix command. Dropped before it exited (the client went away,
/// the build timed out, an error), it gets SIGTERM, on which Nix kills its
/// builders and exits, and SIGKILL after [`STOP_GRACE`]. SIGKILL alone
/// would orphan the builders: they run as build users in their own
/// process groups and keep running.
struct NixProcess(Option<tokio::process::Child>);

impl Drop for NixProcess {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // The child is not reaped yet (try_wait said so, and only this
        // struct waits for it), so its pid is still its own.
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if tokio::time::timeout(STOP_GRACE, child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                });
            }
            // No runtime to wait in: kill_on_drop kills it now.
            Err(_) => drop(child),
        }
    }
}

/// The non-empty lines of a Nix command's stdout.
fn lines<'a>(stdout: &'a [u8], tool: &str) -> Result<Vec<&'a str>, Status> {
    let text = std::str::from_utf8(stdout)
        .map_err(|_| Status::internal(format!("{tool} printed something that is not UTF-8")))?;
    Ok(text.lines().filter(|l| !l.is_empty()).collect())
}

async fn read_limited(reader: impl AsyncRead + Unpin, tool: &str) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    let limit = u64::try_from(MAX_STDOUT)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .await
        .map_err(|e| Status::internal(format!("reading {tool}'s output: {e}")))?;
    if out.len() > MAX_STDOUT {
        return Err(Status::internal(format!(
            "{tool} printed more than {MAX_STDOUT} bytes"
        )));
    }
    Ok(out)
}

/// Send each line of `reader` (without its newline) as a log event, lines
/// over [`MAX_LOG_LINE`] in pieces. Fails with `CANCELLED` when the client
/// has gone, which ends the build.
async fn stream_lines(
    reader: impl AsyncRead + Unpin,
    tx: &mpsc::Sender<Result<proto::BuildEvent, Status>>,
) -> Result<(), Status> {
    let send = |line: Vec<u8>| async {
        tx.send(Ok(proto::BuildEvent {
            event: Some(proto::build_event::Event::Log(line)),
        }))
        .await
        .map_err(|_| Status::cancelled("the client went away"))
    };
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        let buf = reader
            .fill_buf()
            .await
            .map_err(|e| Status::internal(format!("reading the build log: {e}")))?;
        if buf.is_empty() {
            if !line.is_empty() {
                send(line).await?;
            }
            return Ok(());
        }
        let (chunk, newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (buf.get(..at).unwrap_or_default(), true),
            None => (buf, false),
        };
        let room = MAX_LOG_LINE.saturating_sub(line.len());
        let (take, _) = chunk.split_at(chunk.len().min(room));
        line.extend_from_slice(take);
        let ended = newline && take.len() == chunk.len();
        let consumed = take.len().saturating_add(usize::from(ended));
        reader.consume(consumed);
        if ended || line.len() >= MAX_LOG_LINE {
            send(std::mem::take(&mut line)).await?;
        }
    }
}

/// A private directory for one build: the expression, and the GC roots
/// that keep its derivations and outputs alive until they are logged.
/// Removed on drop, which lets Nix collect them again.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(parent: &Path) -> Result<WorkDir, Status> {
        let mut nonce = [0u8; 16];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Status::internal("no randomness for a work directory name"))?;
        let path = parent.join(format!("provenix-build-{}", hex::encode(nonce)));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                Status::internal(format!(
                    "creating the work directory {}: {e}",
                    path.display()
                ))
            })?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Best effort: a directory left behind holds GC roots until it is
        // removed, nothing else.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRV: &str = "/nix/store/dd28pkqsv73lvvrd307lvx8ims8yzssa-grpc-probe2-a.drv";
    const OUT: &str = "/nix/store/m2iislqrlp0cq17s7infmxzmgwa74xly-grpc-probe2-a";

    #[test]
    fn store_paths() {
        let store = "/nix/store";
        assert_eq!(check_store_path(store, DRV, true), Ok(()));
        assert_eq!(check_store_path(store, OUT, false), Ok(()));
        let bad = [
            (OUT, true),
            (DRV, false),
            (
                "/nix/store/dd28pkqsv73lvvrd307lvx8ims8yzssa-x.drv/../../etc/passwd",
                true,
            ),
            ("/nix/store/../etc/shadow.drv", true),
            ("/nix/storex/dd28pkqsv73lvvrd307lvx8ims8yzssa-a.drv", true),
            ("/nix/store/dd28pkqsv73lvvrd307lvx8ims8yzssa-.drv", true),
            ("/nix/store/dd28pkqsv73lvvrd307lvx8ims8yzsse-a.drv", true),
            ("/nix/store/dd28pkqsv73lvvrd307lvx8ims8yzss-a.drv", true),
            ("/nix/store/dd28pkqsv73lvvrd307lvx8ims8yzssa-", false),
            ("/nix/store/dd28pkqsv73lvvrd307lvx8ims8yzssa-a b", false),
            ("relative/dd28pkqsv73lvvrd307lvx8ims8yzssa-a", false),
            ("", false),
        ];
        for (path, drv) in bad {
            assert!(check_store_path(store, path, drv).is_err(), "{path}");
        }
        let long = format!(
            "/nix/store/dd28pkqsv73lvvrd307lvx8ims8yzssa-{}",
            "a".repeat(212)
        );
        assert!(check_store_path(store, &long, false).is_err());
    }

    #[test]
    fn attributes() {
        for ok in ["a", "a.b", "pkgs.hello-2'", "_x.y_1"] {
            assert_eq!(check_attribute(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "-A", "--option", "a..b", ".a", "a.", "a b", "a\"b", "${x}",
        ] {
            assert!(check_attribute(bad).is_err(), "{bad}");
        }
        assert!(check_attribute(&"a".repeat(MAX_ATTRIBUTE_LEN + 1)).is_err());
    }
}
