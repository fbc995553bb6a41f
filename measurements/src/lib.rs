//! Expected measurements, recomputed from boot artifacts.
//!
//! - [`snp`]: the AMD SEV-SNP launch digest (the attestation report's
//!   MEASUREMENT) from an OVMF image, the kernel, initrd and command line of
//!   a measured direct boot, and the vCPUs; byte for byte what the reference
//!   tool `sev-snp-measure` 0.0.13 computes. Also the SEV and SEV-ES launch
//!   digests and COCONUT-SVSM launches, which that tool offers too.
//!
//! - [`manifest`]: reference-value manifests, which tie a worker's source
//!   commit to its expected values on every platform shape it is deployed
//!   with; computed from a description of the image.
//!
//! - [`tpm`]: the TPM event digests of a boot (the kernel's Authenticode
//!   digest in PCR 4, the Linux EFI stub's load options and initrd in PCR
//!   9, a UKI's sections in PCR 11), and a golden event log with them put
//!   in, whose replay gives the expected PCRs.
//!
//! Inputs are untrusted: a malformed firmware image is an [`Error`] that
//! says what is wrong and where, never a panic.

#![forbid(unsafe_code)]

mod error;
mod hex;
pub mod manifest;
pub mod snp;
pub mod tpm;

pub use error::Error;
