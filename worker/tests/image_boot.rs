//! The worker image (`./run image`, docs/image.md) booted as a cloud boots
//! it: QEMU (TCG) with Debian's OVMF and a swtpm TPM boots disk.raw's UKI
//! as a GCP VM: SMBIOS vendor Google, the address by DHCP, the deployment
//! settings from the metadata server (a responder behind QEMU's guestfwd
//! at 169.254.169.254 that wants GCP's `Metadata-Flavor` header); the
//! worker serves its gRPC API on the VM's network, forwarded to a loopback
//! port here.
//!
//! From the host: the TPM's attestation key is enrolled before the boot
//! (through both CLIs, as an operator would; nothing by hand inside). The
//! image's init proves Nix's sandbox and the post-build hook with a build
//! of its own; a Build of a small derivation goes in over mTLS and its
//! bundle comes out. The host rebuilds both outputs with its own Nix, and
//! `provenix verify` accepts them under a policy that pins the image's
//! manifest.json and commit, naming that commit; the self-test's bundle
//! comes from the worker's log API. A manifest computed for a UKI one byte
//! different rejects the same bundle, naming the UKI's measurement.
//!
//! Needs the image in $PROVENIX_IMAGE_DIR (default target/image; `./run
//! test` builds it first), QEMU, OVMF, swtpm and Nix. Without them: SKIP,
//! or with CI=true a failure.
#![cfg(feature = "tpm")]
// A failed expectation is what a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/pki.rs"]
mod pki;
#[path = "../../tests/support/vm.rs"]
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pki::Pki;
use provenix_worker::grpc::proto::build_client::BuildClient;
use provenix_worker::grpc::proto::build_event::Event;
use provenix_worker::grpc::proto::build_request::Target;
use provenix_worker::grpc::proto::log_client::LogClient;
use provenix_worker::grpc::proto::{self, BuildRequest};
use tonic::transport::Endpoint;

/// The derivation the image's init builds at boot (init/src/main.rs): the
/// host builds the same one to compare.
const SELF_TEST: &str = r#"derivation { name = "provenix-self-test"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo provenix self-test > $out" ]; }"#;

/// The guest's gRPC port in the settings.
const GUEST_PORT: u16 = 7443;

#[test]
fn the_booted_image_serves_builds_that_verify_against_its_manifest() {
    let test = "image_boot";
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let Some(tools) = vm::tools(test) else { return };
    if !common::nix_available(test) {
        return;
    }
    let image = std::env::var_os("PROVENIX_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| vm::repo_root().join("target/image"));
    if !image.join("manifest.json").is_file() {
        let why = format!("no image in {} (./run image builds it)", image.display());
        assert!(!ci, "CI=true: {test}: {why}");
        eprintln!("SKIP: {test}: {why}");
        return;
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest.json")).unwrap()).unwrap();
    let commit = manifest["commit"].as_str().unwrap().to_owned();
    let provenix = common::provenix_bin();
    let files = common::TempDir::new("image-boot");
    let f = |name: &str| files.path().join(name);

    // The operator's side, before the boot: a TPM, its AK enrolled, mTLS
    // certificates, and the settings.
    let tpm = vm::TpmState::manufactured().unwrap();
    let enrolled = vm::enroll(
        &tpm,
        Path::new(env!("CARGO_BIN_EXE_provenix-worker")),
        &provenix,
        files.path(),
    )
    .unwrap();
    let pki = Pki::new(&files.path().join("pki"));
    let settings = format!(
        "grpc_port = {GUEST_PORT}\n\
         platform = \"tpm\"\ncheckpoint_ms = 200\n\
         ak_cert = '''\n{}'''\ntls_cert = '''\n{}'''\ntls_key = '''\n{}'''\nclient_ca = '''\n{}'''\n",
        read_text(&enrolled.ak_chain),
        read_text(&pki.path("server.pem")),
        read_text(&pki.path("server.key")),
        read_text(&pki.path("ca.pem")),
    );
    std::fs::write(f("settings.toml"), &settings).unwrap();

    let mut machine = vm::ImageVm::start(
        &tools,
        &tpm,
        &image.join("disk.raw"),
        &f("settings.toml"),
        vm::Delivery::GcpMetadata,
        GUEST_PORT,
    )
    .unwrap();
    let (_, serving) = machine
        .wait_for("worker serving gRPC", Duration::from_secs(300))
        .unwrap();
    // The address came by DHCP and the settings from the metadata server.
    let console = machine.serial();
    for expect in [
        "eth0 169.254.169.15/24 by DHCP from 169.254.169.2",
        "settings from the instance metadata attribute provenix-settings",
    ] {
        assert!(
            console.contains(expect),
            "{expect:?} is not on the console:\n{console}"
        );
    }
    let (line, self_tested) = machine
        .wait_for("self-test built", Duration::from_secs(180))
        .unwrap();
    let self_test_path = line
        .split_whitespace()
        .find(|w| w.starts_with("/nix/store/"))
        .unwrap_or_else(|| panic!("no store path in {line:?}"))
        .to_owned();
    let settings_digest = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        settings.as_bytes(),
    ));
    assert!(
        machine
            .serial()
            .contains(&format!("deployment settings {settings_digest}: bound")),
        "the worker did not bind the settings: {}",
        machine.serial()
    );

    // A Build round trip over mTLS through the port forward.
    let nonce = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        std::process::id()
    );
    let expression = format!(
        r#"derivation {{ name = "provenix-image-build-{nonce}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo {nonce} > $out" ]; }}"#
    );
    let round_trip = Instant::now();
    let (built_path, bundle) =
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(build(machine.grpc, &pki, &expression));
    let round_trip = round_trip.elapsed();
    std::fs::write(f("build.provenix"), &bundle).unwrap();

    // The host rebuilds both outputs with its own Nix: same derivations,
    // same paths, and the NARs the statements must describe.
    assert_eq!(host_build(&expression), built_path);
    assert_eq!(host_build(SELF_TEST), self_test_path);

    // `provenix verify` of the Build's bundle and the host's rebuild of its
    // output under a policy: the exit code and everything it printed.
    let verify_build = |policy: &Path| {
        let out = Command::new(&provenix)
            .arg("verify")
            .arg("--bundle")
            .arg(f("build.provenix"))
            .arg("--store-path")
            .arg(&built_path)
            .arg("--policy")
            .arg(policy)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let policy = |name: &str, manifest: &Path, settings: &str| {
        let path = f(name);
        std::fs::write(
            &path,
            format!(
                "trust_amd_roots = false\n[tpm]\nak_roots = [{:?}]\nreference_values = [{:?}]\n\
                 accepted_commits = [{commit:?}]\nsettings = [{settings:?}]\n",
                enrolled.operator_ca, manifest
            ),
        )
        .unwrap();
        path
    };
    let manifest_path = image.join("manifest.json");
    let pinned = policy("policy.toml", &manifest_path, &settings_digest);
    let verifying = Instant::now();
    let out = Command::new(&provenix)
        .arg("verify")
        .arg("--bundle")
        .arg(f("build.provenix"))
        .arg("--store-path")
        .arg(&built_path)
        .arg("--policy")
        .arg(&pinned)
        .arg("--json")
        .output()
        .unwrap();
    let verified_in = verifying.elapsed();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify against the image's manifest: {json:#}"
    );
    let counted = &json["subjects"][0]["counted"][0];
    assert_eq!(counted["platform"], "tpm", "{json:#}");
    assert_eq!(counted["reference_commit"], commit.as_str(), "{json:#}");

    // The post-build hook's output, from the worker's log API.
    let out = Command::new(&provenix)
        .arg("verify")
        .arg("--worker")
        .arg(format!("https://localhost:{}", machine.grpc.port()))
        .arg("--tls-cert")
        .arg(pki.path("client.pem"))
        .arg("--tls-key")
        .arg(pki.path("client.key"))
        .arg("--tls-ca")
        .arg(pki.path("ca.pem"))
        .arg("--store-path")
        .arg(&self_test_path)
        .arg("--policy")
        .arg(&pinned)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify of the post-build hook's output: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // An image one byte different: the UKI with one byte of its .osrel
    // changed. Its manifest rejects the bundle, naming the UKI's events.
    let mut uki = std::fs::read(image.join("provenix-worker.efi")).unwrap();
    let at = find(&uki, b"ID=provenix").expect("the UKI's .osrel");
    uki[at] ^= 0x20;
    std::fs::write(f("other.efi"), &uki).unwrap();
    std::fs::write(
        f("other.toml"),
        format!(
            "commit = {commit:?}\n[firmware]\novmf = {:?}\n[[tpm]]\nboot = \"uki\"\nuki = {:?}\nbanks = [\"sha256\", \"sha384\"]\n",
            image.join("OVMF.amdsev.fd"),
            f("other.efi"),
        ),
    )
    .unwrap();
    let measured = Command::new(&provenix)
        .args(["measure", "manifest", "--description"])
        .arg(f("other.toml"))
        .arg("--out")
        .arg(f("other.json"))
        .output()
        .unwrap();
    assert!(
        measured.status.success(),
        "{}",
        String::from_utf8_lossy(&measured.stderr)
    );
    let other = policy("other-policy.toml", &f("other.json"), &settings_digest);
    let (code, text) = verify_build(&other);
    assert_eq!(code, Some(1), "a one-byte-different image accepted: {text}");
    assert!(
        text.contains("uki"),
        "the rejection does not name the UKI: {text}"
    );

    // Other deployment settings than the ones the worker runs with.
    let other_settings = policy("settings-policy.toml", &manifest_path, &"00".repeat(32));
    let (code, text) = verify_build(&other_settings);
    assert_eq!(code, Some(1), "other settings accepted: {text}");
    assert!(
        text.contains("deployment settings") && text.contains(&settings_digest),
        "the rejection does not name the settings: {text}"
    );

    eprintln!(
        "{test}: gRPC served {serving:.1?} after QEMU started; self-test build done at {self_tested:.1?}; \
         Build round trip {round_trip:.1?}; provenix verify {verified_in:.1?}"
    );
    // What the init said until the worker served: where the boot's time goes.
    for line in console.lines().filter(|l| l.contains("provenix-init:")) {
        eprintln!("{test}: console: {line}");
    }
}

/// Build `expression` through the worker's gRPC API: the output's store
/// path and its bundle (from the log API once a checkpoint covers it).
async fn build(addr: std::net::SocketAddr, pki: &Pki, expression: &str) -> (String, Vec<u8>) {
    let tls = pki.client(Some("client"));
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to the worker at {addr}: {e:?}"));
    let mut stream = BuildClient::new(channel.clone())
        .build(BuildRequest {
            target: Some(Target::Expression(expression.as_bytes().to_vec())),
            attributes: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut log = Vec::new();
    let result = loop {
        match stream.message().await {
            Ok(Some(proto::BuildEvent {
                event: Some(Event::Log(line)),
            })) => {
                log.push(String::from_utf8_lossy(&line).into_owned());
            }
            Ok(Some(proto::BuildEvent {
                event: Some(Event::Result(result)),
            })) => break result,
            other => panic!("build: {other:?}\n{}", log.join("\n")),
        }
    };
    let [output] = &result.outputs[..] else {
        panic!("one output expected: {result:?}");
    };
    let mut bundle = output.bundle.clone();
    let mut log_api = LogClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(60);
    while bundle.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint covered entry {}",
            output.log_index
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(response) = log_api
            .bundle(proto::BundleRequest {
                index: output.log_index,
            })
            .await
        {
            bundle = response.into_inner().bundle;
        }
    }
    (output.store_path.clone(), bundle)
}

/// Build `expression` with the host's Nix: its output path.
fn host_build(expression: &str) -> String {
    let out = Command::new("nix-build")
        .args(["--no-out-link", "--option", "sandbox", "false"])
        .args(["--option", "substituters", ""])
        .args(["--expr", expression])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
