//! The Provenix attested build worker.
//!
//! Today this crate holds the platform layer: finding the SEV-SNP guest
//! interface, or falling back, loudly, to the simulated platform, and asking
//! it for evidence. The daemon, builds, statements and log (issue 4) build on
//! it.

#![forbid(unsafe_code)]

pub mod log;
pub mod nar;
pub mod platform;
