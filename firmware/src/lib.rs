//! Hardware evidence for Provenix: the formats, and how to obtain them.
//!
//! - [`snp`]: AMD SEV-SNP attestation reports (ABI versions 2 to 5), TCB
//!   versions, the extended-report certificate table and, behind the `guest`
//!   feature, requests from inside a guest (configfs-tsm, `/dev/sev-guest`).
//! - [`tpm`]: TPM 2.0 quote structures and the TCG PC Client event log
//!   (pure Rust), and behind the `tpm` feature quotes through tss-esapi.
//! - [`sim`] (feature `sim`): a simulated SNP platform with an AMD-shaped test
//!   chain, producing byte-exact signed reports for development and CI.
//!
//! - [`file`](mod@file): how the project reads a file someone else wrote: regular
//!   files only, each format with its own limit, never trusting metadata.
//!
//! Parsing is pure: no I/O, no cryptography. Authenticity and policy are the
//! verifier's business (`provenix-verifier`), which depends on this crate with
//! no features so that it never links device code.

#![cfg_attr(not(feature = "guest"), forbid(unsafe_code))]

mod error;
pub mod file;
pub mod snp;
pub mod tpm;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(feature = "guest")]
mod sys;

pub use error::Error;
