//! The Provenix attested build worker.
//!
//! - [`platform`]: finding the SEV-SNP guest interface, or falling back,
//!   loudly, to the simulated platform, and asking it for evidence.
//! - [`identity`]: the worker key, bound by evidence to the source commit.
//! - [`attest`]: one-shot attestation of CI artifacts (direct mode).
//! - [`nar`]: Nix archive serialisation and hashing.
//! - [`nixsig`]: Nix narinfo fingerprints, `Sig:` lines and narinfo text.
//! - [`log`]: the crash-safe append-only Merkle log and its checkpoints.

#![forbid(unsafe_code)]

pub mod attest;
pub mod identity;
pub mod log;
pub mod nar;
pub mod nixsig;
pub mod platform;
