//! Expected measurements, recomputed from boot artifacts.
//!
//! This crate will hold the SEV-SNP launch-digest calculation (OVMF metadata,
//! kernel hashes, VMSA per vCPU), TPM PCR prediction and the reference-value
//! manifests that tie a worker's source commit to its expected values
//! (issues 3 and 6). It is a workspace member now so the dependency direction
//! `verifier -> measurements` is fixed from the start.

#![forbid(unsafe_code)]
