//! The real daemon binary end to end: `provenix-worker serve` on the
//! simulated platform with the gRPC APIs on a Unix socket; a build through
//! the Build API runs the real nix-build, the output's statement is logged
//! and its bundle, served by the Log API, verifies offline and names the NAR
//! hash Nix itself reports. A second request for an output that is already
//! valid is refused (FAILED_PRECONDITION), never signed without a build.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use provenix_verifier::{Subject, Verifier, verify_bundle};
use provenix_worker::grpc::proto::build_client::BuildClient;
use provenix_worker::grpc::proto::build_event::Event;
use provenix_worker::grpc::proto::build_request::Target;
use provenix_worker::grpc::proto::log_client::LogClient;
use provenix_worker::grpc::proto::{BuildRequest, BundleRequest, HeadRequest};
use provenix_worker::platform::sim_policy;
use tonic::transport::{Channel, Endpoint, Uri};

mod common;

use common::{Daemon, nix_available, wait_for};

async fn channel(path: &Path) -> Channel {
    let path = path.to_owned();
    let waiting = path.clone();
    tokio::task::spawn_blocking(move || wait_for(&waiting))
        .await
        .unwrap();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .unwrap()
}

/// The error a build stream ends with (log lines are skipped).
async fn refused(
    mut stream: tonic::Streaming<provenix_worker::grpc::proto::BuildEvent>,
) -> tonic::Status {
    loop {
        match stream.message().await {
            Ok(Some(event)) => match event.event {
                Some(Event::Log(_)) => {}
                other => panic!("a result where a refusal was expected: {other:?}"),
            },
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => return status,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_build_is_logged_and_its_bundle_verifies() {
    if !nix_available("serve") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("provenix-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let grpc = dir.join("grpc.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_provenix-worker"))
        .args(["serve", "--platform", "sim", "--checkpoint-ms", "100"])
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("hook.sock"))
        .arg("--grpc")
        .arg(format!("unix:{}", grpc.display()))
        // The test's builder is the host's /bin/sh, outside any sandbox.
        .args(["--nix-option", "sandbox=false"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon(child, dir.clone());
    let channel = channel(&grpc).await;

    let tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let expression = format!(
        r#"derivation {{ name = "provenix-serve-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo hello from the build; echo {tag} > $out" ]; }}"#
    );
    let mut stream = BuildClient::new(channel.clone())
        .build(BuildRequest {
            target: Some(Target::Expression(expression.clone().into_bytes())),
            attributes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut log = Vec::new();
    let result = loop {
        match stream.message().await.unwrap().unwrap().event.unwrap() {
            Event::Log(line) => log.push(String::from_utf8_lossy(&line).into_owned()),
            Event::Result(r) => break r,
        }
    };
    assert!(
        log.iter().any(|l| l.contains("hello from the build")),
        "{log:?}"
    );
    let [output] = result.outputs.as_slice() else {
        panic!("one output expected: {result:?}")
    };

    // The same request again: its output is valid already, so Nix would
    // not build it; refused, naming it, and nothing is logged.
    let size_before = LogClient::new(channel.clone())
        .head(HeadRequest {})
        .await
        .unwrap()
        .into_inner()
        .size;
    let again = BuildClient::new(channel.clone())
        .build(BuildRequest {
            target: Some(Target::Expression(expression.clone().into_bytes())),
            attributes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = refused(again).await;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "already valid in the worker's store, so this request would not build: {}; the \
             worker signs only outputs a request builds (fetch the statement of an earlier \
             build from the log)",
            output.store_path
        )
    );
    // A derivation built outside the API, then asked for by path: the
    // same.
    let outside = format!(
        r#"derivation {{ name = "provenix-serve-outside-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo {tag} > $out" ]; }}"#
    );
    let built = Command::new("nix-build")
        .args(["--no-out-link", "--option", "sandbox", "false"])
        .args(["--option", "substituters", "", "--expr", &outside])
        .output()
        .unwrap();
    assert!(built.status.success());
    let outside_out = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    let drv = Command::new("nix-store")
        .args(["--query", "--deriver", &outside_out])
        .output()
        .unwrap();
    let drv = String::from_utf8(drv.stdout).unwrap().trim().to_owned();
    let again = BuildClient::new(channel.clone())
        .build(BuildRequest {
            target: Some(Target::Derivation(drv)),
            attributes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = refused(again).await;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains(&outside_out), "{status:?}");
    assert_eq!(
        LogClient::new(channel.clone())
            .head(HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .size,
        size_before
    );

    // The Log API serves the statement's bundle once a checkpoint covers it.
    let mut log_client = LogClient::new(channel);
    assert!(
        log_client
            .head(HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .size
            > output.log_index
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let bundle = loop {
        match log_client
            .bundle(BundleRequest {
                index: output.log_index,
            })
            .await
        {
            Ok(r) => break r.into_inner().bundle,
            Err(status) if Instant::now() < deadline => {
                eprintln!("waiting for a checkpoint: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status}"),
        }
    };
    let policy = sim_policy();
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let verified = verify_bundle(
        &bundle,
        &Verifier::new(policy.anchors().unwrap()),
        &policy,
        now,
    )
    .unwrap();
    assert_eq!(
        verified.statement().subject,
        Subject::StorePath(output.store_path.clone())
    );
    assert_eq!(verified.log_index(), Some(output.log_index));

    // The NAR hash is the worker's own, and it is Nix's.
    let info = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
        ])
        .arg(&output.store_path)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let nar_hash = json[0]["narHash"].as_str().unwrap();
    let sha = nar_hash.strip_prefix("sha256-").expect("SRI narHash");
    use base64::Engine as _;
    let sha = base64::engine::general_purpose::STANDARD
        .decode(sha)
        .unwrap();
    assert_eq!(verified.statement().sha256.as_slice(), sha.as_slice());
    assert_eq!(
        verified.statement().size,
        json[0]["narSize"].as_u64().unwrap()
    );
}
