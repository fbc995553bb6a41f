//! Compiles the worker's gRPC API (`worker/proto/provenix.proto`, the one
//! definition both crates use) into a `Log` client for
//! `provenix verify --worker`, with protox: a protobuf compiler in pure
//! Rust, so building the verifier needs no system `protoc`.

fn main() {
    const DIR: &str = "../worker/proto";
    const PROTO: &str = "../worker/proto/provenix.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let compiled = protox::compile([PROTO], [DIR])
        .map_err(|e| e.to_string())
        .and_then(|fds| {
            tonic_prost_build::configure()
                .build_client(true)
                .build_server(false)
                .compile_fds(fds)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = compiled {
        eprintln!("error: compiling {PROTO}: {e}");
        std::process::exit(1);
    }
}
