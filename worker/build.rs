//! Embeds the worker's source commit: `PROVENIX_SOURCE_COMMIT` when set (a
//! build from a tarball, or Nix, which knows the revision it fetched), else
//! `git rev-parse HEAD` of the checkout. The commit is part of the worker's
//! identity, so a build that knows neither says "unknown" and the worker
//! refuses to attest with it.
//!
//! Then compiles `proto/provenix.proto`, the gRPC APIs, with protox: a
//! protobuf compiler in pure Rust, so building the worker needs no system
//! `protoc` and the generated code depends only on versions that
//! Cargo.lock pins (the image built from a commit is the one measured).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PROVENIX_SOURCE_COMMIT");
    // HEAD moves on commit and checkout; the ref it points to is in
    // packed-refs or refs/heads.
    for path in ["../.git/HEAD", "../.git/packed-refs", "../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = std::env::var("PROVENIX_SOURCE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PROVENIX_SOURCE_COMMIT={commit}");

    if let Err(e) = compile_protos() {
        eprintln!("error: compiling proto/provenix.proto: {e}");
        std::process::exit(1);
    }
}

fn compile_protos() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/provenix.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
