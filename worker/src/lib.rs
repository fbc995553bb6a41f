//! The Provenix attested build worker.
//!
//! - [`platform`]: finding the SEV-SNP guest interface, or falling back,
//!   loudly, to the simulated platform, and asking it for evidence.
//! - [`identity`]: the worker key, bound by evidence to the source commit.
//! - [`attest`]: one-shot attestation of CI artifacts (direct mode).
//! - [`nar`]: Nix archive serialisation and hashing.
//! - [`nixsig`]: Nix narinfo fingerprints, `Sig:` lines and narinfo text
//!   (the verifier's module, re-exported).
//! - [`log`]: the crash-safe append-only Merkle log and its checkpoints.
//! - [`daemon`]: the worker daemon: hashing, signing, group-commit logging,
//!   attested checkpoints and bundles.
//! - [`hook`]: Nix's post-build hook and the daemon's local socket.
//! - [`grpc`]: the gRPC build and log APIs, and where they listen.

#![forbid(unsafe_code)]

pub mod attest;
pub mod daemon;
pub mod grpc;
pub mod hook;
pub mod identity;
pub mod log;
pub use provenix_verifier::nar;
pub use provenix_verifier::nixsig;
pub mod platform;
