//! The gRPC build and log APIs, through the real server in-process: on
//! `127.0.0.1:0`, on a Unix socket, and with mTLS.
//!
//! The backend is a test double over the real Merkle log
//! (`provenix_worker::log::Log`): its proofs verify with the verifier's
//! functions, and it records what the build API submits. Builds run the
//! real `nix-build` (Debian's nix-bin, as root, without the sandbox so the
//! builder can be the host's `/bin/sh`); without Nix those tests print
//! `SKIP: ...` and pass, unless CI=true, where they fail. The mTLS test
//! makes its throwaway CA and certificates with the `openssl` CLI.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use pki::Pki;
use provenix_verifier::{
    Evidence, Hash, SnpEvidence, VerifierKey, checkpoint_report_data, leaf_hash, log_origin,
    verify_checkpoint, verify_consistency, verify_inclusion,
};
use provenix_worker::grpc::proto::build_client::BuildClient;
use provenix_worker::grpc::proto::build_event::Event;
use provenix_worker::grpc::proto::build_request::Target;
use provenix_worker::grpc::proto::log_client::LogClient;
use provenix_worker::grpc::proto::{self, BuildRequest};
use provenix_worker::grpc::{
    AttestedCheckpoint, BuildBackend, BuildConfig, BuildService, GrpcError, Head, Listen,
    LogBackend, LogService, MAX_ATTRIBUTES, MAX_ENTRIES, MAX_EXPRESSION, Server, ServerConfig,
    TlsConfig,
};
use provenix_worker::log::{CheckpointSigner, Log};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tokio::sync::oneshot;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};
use tonic::{Code, Status};

// ---------------------------------------------------------------------------
// The test backend
// ---------------------------------------------------------------------------

/// What the build API submitted: a derivation and its outputs.
type Submission = (Option<String>, Vec<String>);

/// The real log in a scratch directory, checkpoints signed by a real key
/// with stand-in evidence, and a record of every submission.
struct TestBackend {
    log: Mutex<Log>,
    signer: CheckpointSigner,
    key: [u8; 32],
    checkpoints: Mutex<Vec<AttestedCheckpoint>>,
    submitted: Mutex<Vec<Submission>>,
    _dir: Scratch,
}

impl TestBackend {
    fn new(name: &str) -> Arc<TestBackend> {
        let dir = Scratch::new(name);
        let log = Log::open(&dir.0.join("log")).unwrap();
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Arc::new(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap());
        let key: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        let signer = CheckpointSigner::new(&log_origin(&key), pair).unwrap();
        Arc::new(TestBackend {
            log: Mutex::new(log),
            signer,
            key,
            checkpoints: Mutex::new(Vec::new()),
            submitted: Mutex::new(Vec::new()),
            _dir: dir,
        })
    }

    fn append(&self, entry: &[u8]) -> u64 {
        self.log.lock().unwrap().append(entry).unwrap()
    }

    /// Sign and "attest" the current head.
    fn checkpoint_now(&self) -> AttestedCheckpoint {
        let log = self.log.lock().unwrap();
        let note = log
            .checkpoint(&log_origin(&self.key), &self.signer)
            .unwrap();
        let cp = AttestedCheckpoint {
            evidence: SnpEvidence {
                report: checkpoint_report_data(&note).to_vec(),
                cert_table: None,
                vek: None,
            }
            .into(),
            note,
            size: log.size(),
            root: log.root(),
        };
        self.checkpoints.lock().unwrap().push(cp.clone());
        cp
    }

    fn vkey(&self) -> &VerifierKey {
        self.signer.vkey()
    }

    fn entry(&self, index: u64) -> Vec<u8> {
        self.log.lock().unwrap().entry(index).unwrap()
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl LogBackend for TestBackend {
    async fn head(&self) -> Result<Head, Status> {
        let log = self.log.lock().unwrap();
        Ok(Head {
            size: log.size(),
            root: log.root(),
        })
    }

    async fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Status> {
        assert!(start < end && end - start <= MAX_ENTRIES, "{start}..{end}");
        let log = self.log.lock().unwrap();
        assert!(end <= log.size());
        (start..end)
            .map(|i| log.entry(i).map_err(internal))
            .collect()
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Status> {
        let log = self.log.lock().unwrap();
        assert!(index < size && size <= log.size(), "{index} {size}");
        log.inclusion_proof(index, size).map_err(internal)
    }

    async fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, Status> {
        let log = self.log.lock().unwrap();
        assert!(0 < size1 && size1 <= size2 && size2 <= log.size());
        log.consistency_proof(size1, size2).map_err(internal)
    }

    async fn checkpoint(&self, size: Option<u64>) -> Result<Option<AttestedCheckpoint>, Status> {
        let cps = self.checkpoints.lock().unwrap();
        Ok(match size {
            None => cps.last().cloned(),
            Some(size) => cps.iter().find(|cp| cp.size == size).cloned(),
        })
    }

    async fn bundle(&self, index: u64) -> Result<Option<Vec<u8>>, Status> {
        let covered = self
            .checkpoints
            .lock()
            .unwrap()
            .last()
            .is_some_and(|cp| index < cp.size);
        Ok(covered.then(|| format!("bundle {index}").into_bytes()))
    }
}

#[tonic::async_trait]
impl BuildBackend for TestBackend {
    async fn submit(
        &self,
        derivation: Option<String>,
        out_paths: Vec<String>,
    ) -> Result<Vec<u64>, Status> {
        let drv = derivation.clone().unwrap_or_default();
        let indices = out_paths
            .iter()
            .map(|out| self.append(format!("{drv} {out}").as_bytes()))
            .collect();
        self.submitted.lock().unwrap().push((derivation, out_paths));
        Ok(indices)
    }

    async fn bundle(&self, index: u64) -> Result<Option<Vec<u8>>, Status> {
        // As a daemon's would after its next checkpoint.
        self.checkpoint_now();
        LogBackend::bundle(self, index).await
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fresh directory under the system's temporary directory, removed when
/// dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "provenix-grpc-{}-{nanos}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server running in this process; stopped (and its requests in flight
/// drained) when dropped or by [`Running::stop`].
struct Running {
    listen: Listen,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), GrpcError>>>,
}

impl Running {
    async fn start(
        config: ServerConfig,
        backend: &Arc<TestBackend>,
        build: Option<BuildConfig>,
    ) -> Running {
        let server = Server::bind(config).await.unwrap();
        let listen = server.listen().clone();
        let build = build.map(|c| BuildService::new(backend.clone(), c));
        let log = LogService::new(backend.clone());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.serve(build, Some(log), async {
            let _ = stopped.await;
        }));
        Running {
            listen,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn addr(&self) -> SocketAddr {
        match &self.listen {
            Listen::Tcp(addr) => *addr,
            Listen::Unix(path) => panic!("{} is a Unix socket", path.display()),
        }
    }

    async fn channel(&self) -> Channel {
        match &self.listen {
            Listen::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
            Listen::Unix(path) => unix_channel(path).await,
        }
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn unix_channel(path: &Path) -> Channel {
    let path = path.to_owned();
    // The URI is required but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

fn loopback() -> ServerConfig {
    ServerConfig {
        listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        tls: None,
    }
}

fn hash(bytes: &[u8]) -> Hash {
    bytes.try_into().unwrap()
}

fn hashes(proof: &proto::ProofResponse) -> Vec<Hash> {
    proof.hashes.iter().map(|h| hash(h)).collect()
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Err(status) if status.code() == code => status,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// The Nix tools are there and we can build as root; otherwise `SKIP` (a
/// failure with CI=true).
fn nix_available(test: &str) -> bool {
    let found = Command::new("nix-build")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // A fresh machine has no store until the first Nix command makes one.
    if found && !Path::new("/nix/store").is_dir() {
        let _ = Command::new("nix-store").arg("--init").status();
    }
    let why = if !found {
        "nix-build (Debian package nix-bin) is not on PATH"
    } else if !Path::new("/nix/store").is_dir() {
        "there is no /nix/store"
    } else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why}"
    );
    eprintln!("SKIP: {test}: {why}");
    false
}

/// Builds without the sandbox, so the builder can be the host's /bin/sh.
fn build_config(work: &Scratch) -> BuildConfig {
    BuildConfig {
        work_dir: work.0.clone(),
        nix_options: vec![("sandbox".into(), "false".into())],
        ..BuildConfig::default()
    }
}

/// What a build stream said: its log lines, and its result or error.
struct Outcome {
    log: Vec<String>,
    result: Result<proto::BuildResult, Status>,
}

async fn build(client: &mut BuildClient<Channel>, request: BuildRequest) -> Outcome {
    let mut stream = match client.build(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Outcome {
                log: Vec::new(),
                result: Err(status),
            };
        }
    };
    let mut log = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(proto::BuildEvent {
                event: Some(Event::Log(line)),
            })) => log.push(String::from_utf8_lossy(&line).into_owned()),
            Ok(Some(proto::BuildEvent {
                event: Some(Event::Result(result)),
            })) => {
                assert!(
                    stream.message().await.unwrap().is_none(),
                    "events after the result"
                );
                return Outcome {
                    log,
                    result: Ok(result),
                };
            }
            Ok(other) => panic!("unexpected event {other:?}"),
            Err(status) => {
                return Outcome {
                    log,
                    result: Err(status),
                };
            }
        }
    }
}

fn expression(text: &str) -> BuildRequest {
    BuildRequest {
        target: Some(Target::Expression(text.as_bytes().to_vec())),
        attributes: Vec::new(),
    }
}

/// A unique tag, so that each run builds anew instead of finding its
/// outputs valid from an earlier run.
fn nonce() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}-{}", t.as_nanos(), std::process::id())
}

// ---------------------------------------------------------------------------
// The log API
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn log_api_serves_verifiable_proofs() {
    let backend = TestBackend::new("log-api");
    for i in 0..7u32 {
        backend.append(format!("statement {i}").as_bytes());
    }
    let cp7 = backend.checkpoint_now();
    for i in 7..13u32 {
        backend.append(format!("statement {i}").as_bytes());
    }
    let server = Running::start(loopback(), &backend, None).await;
    assert!(server.addr().ip().is_loopback());
    let mut client = LogClient::new(server.channel().await);

    let head = client
        .head(proto::HeadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.size, 13);
    let root = hash(&head.root);

    let entries = client
        .entries(proto::EntriesRequest { start: 0, end: 13 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 13);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e, format!("statement {i}").as_bytes());
    }
    let some = client
        .entries(proto::EntriesRequest { start: 4, end: 6 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(some, entries[4..6]);

    // Every inclusion proof in the current tree and in the checkpoint's.
    for (size, root) in [(13, root), (7, cp7.root)] {
        for index in 0..size {
            let proof = client
                .inclusion_proof(proto::InclusionProofRequest { index, size })
                .await
                .unwrap()
                .into_inner();
            let leaf = leaf_hash(&entries[usize::try_from(index).unwrap()]);
            verify_inclusion(&leaf, index, size, &hashes(&proof), &root).unwrap();
        }
    }

    // Consistency from the checkpoint, and between every pair of sizes.
    let mut roots = vec![];
    {
        let log = backend.log.lock().unwrap();
        for size in 1..=13 {
            roots.push(log.root_at(size).unwrap());
        }
    }
    for size1 in 1..=13u64 {
        for size2 in size1..=13u64 {
            let proof = client
                .consistency_proof(proto::ConsistencyProofRequest { size1, size2 })
                .await
                .unwrap()
                .into_inner();
            let r = |s: u64| roots[usize::try_from(s - 1).unwrap()];
            verify_consistency(size1, size2, &hashes(&proof), &r(size1), &r(size2)).unwrap();
        }
    }

    // The latest checkpoint, and the one of size 7: signed notes whose
    // evidence is what the backend attested.
    let cp13 = backend.checkpoint_now();
    for (request, expected) in [(None, &cp13), (Some(7), &cp7)] {
        let got = client
            .checkpoint(proto::CheckpointRequest { size: request })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.note, expected.note);
        assert_eq!((got.size, hash(&got.root)), (expected.size, expected.root));
        let verified = verify_checkpoint(
            got.note.as_bytes(),
            backend.vkey(),
            &log_origin(&backend.key),
        )
        .unwrap();
        assert_eq!(verified.size(), expected.size);
        let evidence = got.evidence.unwrap();
        assert_eq!(evidence.report, checkpoint_report_data(&got.note).to_vec());
        assert_eq!((evidence.cert_table, evidence.vek), (None, None));
        // The platform-neutral encoding carries the same evidence.
        let Evidence::Snp(decoded) = Evidence::from_cbor(&got.evidence_cbor).unwrap() else {
            panic!("SNP evidence expected");
        };
        assert_eq!(decoded.report, evidence.report);
    }
    let missing = client
        .checkpoint(proto::CheckpointRequest { size: Some(5) })
        .await;
    assert_code(missing, Code::NotFound);

    // Bundles: covered entries now, the next entry only after a checkpoint.
    let bundle = client
        .bundle(proto::BundleRequest { index: 12 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bundle.bundle, b"bundle 12");
    backend.append(b"statement 13");
    let pending = client.bundle(proto::BundleRequest { index: 13 }).await;
    assert_code(pending, Code::Unavailable);
    backend.checkpoint_now();
    client
        .bundle(proto::BundleRequest { index: 13 })
        .await
        .unwrap();

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_are_bounded_by_count_and_bytes() {
    let backend = TestBackend::new("entries-bounds");
    // 1,200 small entries, then 60 of 64 KiB.
    {
        let mut log = backend.log.lock().unwrap();
        let small: Vec<Vec<u8>> = (0..1200u32).map(|i| i.to_be_bytes().to_vec()).collect();
        log.append_batch(&small).unwrap();
        let big: Vec<Vec<u8>> = (0..60u8).map(|i| vec![i; 64 << 10]).collect();
        log.append_batch(&big).unwrap();
    }
    let server = Running::start(loopback(), &backend, None).await;
    let mut client = LogClient::new(server.channel().await);

    let got = client
        .entries(proto::EntriesRequest {
            start: 0,
            end: 1200,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(u64::try_from(got.len()).unwrap(), MAX_ENTRIES);
    assert_eq!(got[999], 999u32.to_be_bytes());

    // 3 MiB of 64 KiB entries is 48 of them.
    let got = client
        .entries(proto::EntriesRequest {
            start: 1200,
            end: 1260,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(got.len(), 48);
    assert_eq!(got[47], vec![47u8; 64 << 10]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_log_requests_are_refused_and_the_server_keeps_serving() {
    let backend = TestBackend::new("log-hostile");
    for i in 0..5u32 {
        backend.append(&i.to_be_bytes());
    }
    let server = Running::start(loopback(), &backend, None).await;
    let channel = server.channel().await;
    let mut client = LogClient::new(channel.clone());
    use Code::{InvalidArgument, OutOfRange};

    let entries = |start, end| proto::EntriesRequest { start, end };
    for (request, code) in [
        (entries(3, 3), InvalidArgument),
        (entries(4, 2), InvalidArgument),
        (entries(0, 6), OutOfRange),
        (entries(0, u64::MAX), OutOfRange),
        (entries(u64::MAX - 1, u64::MAX), OutOfRange),
    ] {
        assert_code(client.entries(request).await, code);
    }
    let inclusion = |index, size| proto::InclusionProofRequest { index, size };
    for (request, code) in [
        (inclusion(0, 0), InvalidArgument),
        (inclusion(5, 5), InvalidArgument),
        (inclusion(7, 3), InvalidArgument),
        (inclusion(0, 6), OutOfRange),
        (inclusion(u64::MAX - 1, u64::MAX), OutOfRange),
    ] {
        assert_code(client.inclusion_proof(request).await, code);
    }
    let consistency = |size1, size2| proto::ConsistencyProofRequest { size1, size2 };
    for (request, code) in [
        (consistency(0, 0), InvalidArgument),
        (consistency(0, 3), InvalidArgument),
        (consistency(4, 3), InvalidArgument),
        (consistency(1, 6), OutOfRange),
        (consistency(1, u64::MAX), OutOfRange),
    ] {
        assert_code(client.consistency_proof(request).await, code);
    }
    let far = client
        .checkpoint(proto::CheckpointRequest { size: Some(6) })
        .await;
    assert_code(far, OutOfRange);
    let none = client
        .checkpoint(proto::CheckpointRequest { size: None })
        .await;
    assert_code(none, Code::NotFound);
    assert_code(
        client.bundle(proto::BundleRequest { index: 5 }).await,
        OutOfRange,
    );

    // An oversized message to a log method: refused before it is decoded
    // (the log's limit is 1 KiB).
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.unwrap();
    let big = proto::BundleResponse {
        bundle: vec![0; 4096],
    };
    let answer: Result<tonic::Response<proto::HeadResponse>, Status> = raw
        .unary(
            tonic::Request::new(big),
            "/provenix.v1.Log/Head".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_code(answer, OutOfRange);

    // Garbage that is not protobuf at all.
    raw.ready().await.unwrap();
    let answer: Result<tonic::Response<proto::HeadResponse>, Status> = raw
        .unary(
            tonic::Request::new(proto::BundleResponse {
                bundle: vec![0xff; 16],
            }),
            "/provenix.v1.Log/Entries".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert!(answer.is_err());

    // Still serving, on the same connection and on a new one.
    assert_eq!(
        client
            .head(proto::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .size,
        5
    );
    let mut fresh = LogClient::new(server.channel().await);
    assert_eq!(
        fresh
            .head(proto::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .size,
        5
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The build API
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn hostile_build_requests_are_refused_and_the_server_keeps_serving() {
    let backend = TestBackend::new("build-hostile");
    let work = Scratch::new("build-hostile-work");
    let server = Running::start(loopback(), &backend, Some(build_config(&work))).await;
    let channel = server.channel().await;
    let mut client = BuildClient::new(channel.clone());
    use Code::{InvalidArgument, OutOfRange};

    let drv = |path: &str, attributes: Vec<String>| BuildRequest {
        target: Some(Target::Derivation(path.to_owned())),
        attributes,
    };
    let absent = "/nix/store/00000000000000000000000000000000-provenix-absent.drv";
    let too_many = vec!["a".to_owned(); MAX_ATTRIBUTES + 1];
    let cases = [
        (
            BuildRequest {
                target: None,
                attributes: vec![],
            },
            InvalidArgument,
        ),
        (drv("", vec![]), InvalidArgument),
        (drv("/etc/passwd", vec![]), InvalidArgument),
        (
            drv("/nix/store/../../etc/shadow.drv", vec![]),
            InvalidArgument,
        ),
        (
            drv(
                "/nix/store/00000000000000000000000000000000-x.drv/../../../etc",
                vec![],
            ),
            InvalidArgument,
        ),
        (drv(absent, vec![]), InvalidArgument),
        (drv(absent, vec!["a".into()]), InvalidArgument),
        (
            BuildRequest {
                attributes: vec!["--option".into()],
                ..expression("1")
            },
            InvalidArgument,
        ),
        (
            BuildRequest {
                attributes: too_many,
                ..expression("1")
            },
            InvalidArgument,
        ),
        (expression(&" ".repeat(MAX_EXPRESSION + 1)), InvalidArgument),
        // Over the 1 MiB message limit: refused before it is decoded.
        (expression(&" ".repeat(2 << 20)), OutOfRange),
    ];
    for (request, code) in cases {
        let outcome = build(&mut client, request).await;
        let status = assert_code(outcome.result, code);
        assert!(outcome.log.is_empty(), "{status:?}: {:?}", outcome.log);
    }
    assert!(backend.submitted.lock().unwrap().is_empty());

    // Still serving both APIs.
    let mut log = LogClient::new(channel);
    assert_eq!(
        log.head(proto::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .size,
        0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_with_the_real_nix_build_stream_the_log_and_log_the_outputs() {
    if !nix_available("builds_with_the_real_nix_build_stream_the_log_and_log_the_outputs") {
        return;
    }
    let backend = TestBackend::new("build-nix");
    let work = Scratch::new("build-nix-work");
    let server = Running::start(loopback(), &backend, Some(build_config(&work))).await;
    let mut client = BuildClient::new(server.channel().await);
    let tag = nonce();

    // An expression with one derivation: its builder's stdout and stderr
    // arrive as log lines, then the result.
    let text = format!(
        r#"derivation {{
  name = "provenix-grpc-one-{tag}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo provenix-log-stdout; echo provenix-log-stderr >&2; echo built > $out" ];
}}"#
    );
    let outcome = build(&mut client, expression(&text)).await;
    let result = outcome.result.unwrap();
    for line in ["provenix-log-stdout", "provenix-log-stderr"] {
        assert!(
            outcome.log.iter().any(|l| l == line),
            "{line} not in {:?}",
            outcome.log
        );
    }
    assert_eq!(result.outputs.len(), 1);
    let out = &result.outputs[0];
    assert!(
        out.derivation
            .ends_with(&format!("-provenix-grpc-one-{tag}.drv"))
    );
    assert!(
        out.store_path
            .ends_with(&format!("-provenix-grpc-one-{tag}"))
    );
    assert_eq!(std::fs::read_to_string(&out.store_path).unwrap(), "built\n");
    assert_eq!(out.log_index, 0);
    assert_eq!(out.bundle, b"bundle 0");
    assert_eq!(
        backend.entry(0),
        format!("{} {}", out.derivation, out.store_path).as_bytes()
    );
    assert_eq!(
        *backend.submitted.lock().unwrap(),
        vec![(Some(out.derivation.clone()), vec![out.store_path.clone()])]
    );

    // The same derivation by its store path: its output is already valid,
    // so nothing would be built; refused, never signed silently.
    let request = BuildRequest {
        target: Some(Target::Derivation(out.derivation.clone())),
        attributes: vec![],
    };
    let status = build(&mut client, request).await.result.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with(&format!(
            "already valid in the worker's store, so this request would not build: {}",
            out.store_path
        )),
        "{status:?}"
    );
    assert_eq!(backend.submitted.lock().unwrap().len(), 1);

    // Two derivations with two outputs each; -A picks one of three.
    let text = format!(
        r#"let d = n: derivation {{
  name = "provenix-grpc-multi-${{n}}-{tag}";
  outputs = [ "out" "dev" ];
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo building ${{n}}; echo ${{n}} > $out; echo ${{n}}-dev > $dev" ];
}}; in {{ a = d "a"; b = d "b"; c = d "c"; }}"#
    );
    let request = BuildRequest {
        attributes: vec!["a".into(), "c".into(), "a".into()],
        ..expression(&text)
    };
    let outcome = build(&mut client, request).await;
    let result = outcome.result.unwrap();
    assert!(outcome.log.iter().any(|l| l == "building a"));
    assert!(outcome.log.iter().any(|l| l == "building c"));
    assert!(!outcome.log.iter().any(|l| l == "building b"));
    let mut names: Vec<String> = result
        .outputs
        .iter()
        .map(|o| o.store_path.split_once('-').unwrap().1.to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("provenix-grpc-multi-a-{tag}"),
            format!("provenix-grpc-multi-a-{tag}-dev"),
            format!("provenix-grpc-multi-c-{tag}"),
            format!("provenix-grpc-multi-c-{tag}-dev"),
        ]
    );
    for o in &result.outputs {
        let expected = format!("{} {}", o.derivation, o.store_path);
        assert_eq!(backend.entry(o.log_index), expected.as_bytes());
        assert!(Path::new(&o.store_path).exists());
    }
    assert_eq!(backend.submitted.lock().unwrap().len(), 3);

    // The work directories (and their GC roots) are gone.
    assert_eq!(std::fs::read_dir(&work.0).unwrap().count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_builds_and_forbidden_evaluations_are_errors_with_their_log() {
    if !nix_available("failed_builds_and_forbidden_evaluations_are_errors_with_their_log") {
        return;
    }
    let backend = TestBackend::new("build-fail");
    let work = Scratch::new("build-fail-work");
    let server = Running::start(loopback(), &backend, Some(build_config(&work))).await;
    let mut client = BuildClient::new(server.channel().await);
    let tag = nonce();

    // The builder fails: ABORTED, after its log.
    let text = format!(
        r#"derivation {{
  name = "provenix-grpc-fail-{tag}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo about-to-fail; exit 3" ];
}}"#
    );
    let outcome = build(&mut client, expression(&text)).await;
    assert_code(outcome.result, Code::Aborted);
    assert!(
        outcome.log.iter().any(|l| l == "about-to-fail"),
        "{:?}",
        outcome.log
    );

    // Restricted evaluation: the expression cannot read the worker's files.
    let outcome = build(
        &mut client,
        expression(r#"builtins.readFile "/etc/passwd""#),
    )
    .await;
    assert_code(outcome.result, Code::InvalidArgument);
    assert!(
        outcome
            .log
            .iter()
            .any(|l| l.contains("forbidden in restricted mode")),
        "{:?}",
        outcome.log
    );
    let outcome = build(&mut client, expression("import /etc/nix/nix.conf")).await;
    assert_code(outcome.result, Code::InvalidArgument);

    // A syntax error, and an expression with no derivation.
    let outcome = build(&mut client, expression("{ a = ; }")).await;
    assert_code(outcome.result, Code::InvalidArgument);
    let outcome = build(&mut client, expression("{ a = 1; }")).await;
    assert_code(outcome.result, Code::InvalidArgument);
    // A missing attribute.
    let request = BuildRequest {
        attributes: vec!["nope".into()],
        ..expression("{ a = 1; }")
    };
    assert_code(
        build(&mut client, request).await.result,
        Code::InvalidArgument,
    );

    assert!(backend.submitted.lock().unwrap().is_empty());
    server.stop().await;
}

/// Processes whose command line has `needle` as an argument.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| {
            cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == needle.as_bytes())
        })
        .count()
}

/// Wait up to 20 s for `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A build whose builder sleeps for an hour, with a unique sleep argument
/// to find it by.
fn sleeper(tag: &str) -> (BuildRequest, String) {
    let arg = format!("3600.{}", tag.replace('-', ""));
    let text = format!(
        r#"derivation {{
  name = "provenix-grpc-sleep-{tag}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo sleeping; exec /bin/sleep {arg}" ];
}}"#
    );
    (expression(&text), arg)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_that_times_out_or_loses_its_client_stops_its_builder() {
    if !nix_available("a_build_that_times_out_or_loses_its_client_stops_its_builder") {
        return;
    }
    let backend = TestBackend::new("build-stop");
    let work = Scratch::new("build-stop-work");
    let config = BuildConfig {
        build_timeout: std::time::Duration::from_secs(3),
        max_concurrent_builds: 1,
        max_queued_builds: 0,
        ..build_config(&work)
    };
    let server = Running::start(loopback(), &backend, Some(config)).await;
    let mut client = BuildClient::new(server.channel().await);

    // Timeout: DEADLINE_EXCEEDED, and the builder is gone soon after.
    let (request, arg) = sleeper(&nonce());
    let outcome = build(&mut client, request).await;
    assert_code(outcome.result, Code::DeadlineExceeded);
    assert!(
        outcome.log.iter().any(|l| l == "sleeping"),
        "{:?}",
        outcome.log
    );
    eventually("the timed-out builder to stop", || {
        processes_with(&arg) == 0
    })
    .await;

    // The client goes away mid-build: the builder stops too.
    let (request, arg) = sleeper(&nonce());
    let mut stream = client.build(request).await.unwrap().into_inner();
    loop {
        match stream.message().await.unwrap().unwrap().event.unwrap() {
            Event::Log(line) if line == b"sleeping" => break,
            Event::Log(_) => {}
            Event::Result(r) => panic!("finished: {r:?}"),
        }
    }
    assert_eq!(processes_with(&arg), 1, "the builder runs");
    // One build at a time and none waiting: another is refused.
    let busy = build(&mut client, expression("1")).await;
    assert_code(busy.result, Code::ResourceExhausted);
    drop(stream);
    eventually("the abandoned builder to stop", || {
        processes_with(&arg) == 0
    })
    .await;

    assert!(backend.submitted.lock().unwrap().is_empty());
    // The work directories are gone once Nix has stopped.
    eventually("the work directories to go", || {
        std::fs::read_dir(&work.0).unwrap().count() == 0
    })
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Where the server listens
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn serves_on_a_unix_socket_with_mode_0600() {
    let backend = TestBackend::new("unix");
    backend.append(b"one");
    let dir = Scratch::new("unix-sock");
    let path = dir.0.join("api.sock");

    // A stale socket (nobody listens) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let config = ServerConfig {
        listen: Listen::Unix(path.clone()),
        tls: None,
    };
    let server = Running::start(config.clone(), &backend, None).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut client = LogClient::new(server.channel().await);
    assert_eq!(
        client
            .head(proto::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .size,
        1
    );

    // A live socket is not taken over, and a file that is not a socket is
    // not removed.
    let err = Server::bind(config).await.unwrap_err();
    assert!(matches!(err, GrpcError::Io { .. }), "{err}");
    let file = dir.0.join("not-a-socket");
    std::fs::write(&file, b"keep").unwrap();
    let err = Server::bind(ServerConfig {
        listen: Listen::Unix(file.clone()),
        tls: None,
    })
    .await
    .unwrap_err();
    assert!(matches!(err, GrpcError::Io { .. }), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");

    server.stop().await;
    assert!(!path.exists(), "the socket is removed on shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_address_without_mtls_is_refused() {
    for addr in [
        "0.0.0.0:0",
        "[::]:0",
        "192.0.2.1:50051",
        "[2001:db8::1]:50051",
    ] {
        let err = Server::bind(ServerConfig {
            listen: Listen::Tcp(addr.parse().unwrap()),
            tls: None,
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, GrpcError::InsecureBind { .. }),
            "{addr}: {err}"
        );
        assert!(err.to_string().contains("mTLS"), "{err}");
    }
    // Loopback, v4 and v6, needs none.
    for addr in ["127.0.0.1:0", "127.0.0.2:0"] {
        let server = Server::bind(ServerConfig {
            listen: Listen::Tcp(addr.parse().unwrap()),
            tls: None,
        })
        .await
        .unwrap();
        assert!(matches!(server.listen(), Listen::Tcp(a) if a.port() != 0));
    }
    // A TLS configuration that does not load is refused at startup.
    let err = Server::bind(ServerConfig {
        listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        tls: Some(TlsConfig {
            cert_chain_pem: b"not a certificate".to_vec(),
            key_pem: b"not a key".to_vec(),
            client_ca_pem: b"not a CA".to_vec(),
        }),
    })
    .await
    .unwrap_err();
    assert!(matches!(err, GrpcError::Tls(_)), "{err}");
}

/// Head over TLS with `tls`: the size, or the error (of the connection or
/// of the call).
async fn head_over_tls(addr: SocketAddr, tls: ClientTlsConfig) -> Result<u64, String> {
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = LogClient::new(channel);
    client
        .head(proto::HeadRequest {})
        .await
        .map(|r| r.into_inner().size)
        .map_err(|s| format!("call: {s:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_requires_a_client_certificate_from_the_configured_ca() {
    let scratch = Scratch::new("pki");
    let pki = Pki::new(&scratch.0);
    let backend = TestBackend::new("mtls");
    backend.append(b"one");
    backend.append(b"two");
    let tls = TlsConfig::from_files(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        &pki.path("ca.pem"),
    )
    .unwrap();
    assert!(
        !format!("{tls:?}").contains("PRIVATE KEY"),
        "the key is not printed"
    );
    let config = ServerConfig {
        listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        tls: Some(tls),
    };
    let server = Running::start(config, &backend, None).await;
    let addr = server.addr();

    // No client certificate, and one from another CA: refused.
    let err = head_over_tls(addr, pki.client(None)).await.unwrap_err();
    eprintln!("without a certificate: {err}");
    let err = head_over_tls(addr, pki.client(Some("rogue")))
        .await
        .unwrap_err();
    eprintln!("with a rogue certificate: {err}");
    // Plaintext to the TLS port: refused.
    let plain = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        LogClient::new(channel)
            .head(proto::HeadRequest {})
            .await
            .map_err(|e| e.to_string())
    };
    assert!(plain.await.is_err());

    // A certificate the configured CA signed: served, on a server that
    // kept running through the refusals.
    assert_eq!(head_over_tls(addr, pki.client(Some("client"))).await, Ok(2));
    server.stop().await;
}
