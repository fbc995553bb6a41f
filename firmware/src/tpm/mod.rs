//! TPM 2.0 evidence: the structures a quote is made of, the TCG PC Client
//! event log, and (feature `tpm`) quotes from a real TPM through tss-esapi.
//!
//! Parsing here is pure Rust and needs no libtss2, so the verifier can check
//! TPM evidence on any OS. Signatures are checked by the verifier.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

#[cfg(feature = "tpm")]
pub mod device;
pub mod eventlog;
pub mod events;
pub mod hcl;
mod reader;
pub mod structures;

pub use eventlog::{Event, EventLog, EventType};
pub use events::{Decoded, DevicePath, Guid};
pub use hcl::HclReport;
pub use reader::Reader;
pub use structures::{Attest, Public, Signature};

/// A TPM hash algorithm (TPM2_ALG_ID, TCG Algorithm Registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum HashAlg {
    /// TPM2_ALG_SHA1 (0x0004).
    Sha1,
    /// TPM2_ALG_SHA256 (0x000B).
    Sha256,
    /// TPM2_ALG_SHA384 (0x000C).
    Sha384,
    /// TPM2_ALG_SHA512 (0x000D).
    Sha512,
}

impl HashAlg {
    /// Every algorithm, in registry order.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// The algorithm with this TPM2_ALG_ID, if it is a supported hash.
    pub fn from_id(id: u16) -> Option<HashAlg> {
        match id {
            0x0004 => Some(HashAlg::Sha1),
            0x000B => Some(HashAlg::Sha256),
            0x000C => Some(HashAlg::Sha384),
            0x000D => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Its TPM2_ALG_ID.
    pub fn id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
            HashAlg::Sha512 => 0x000D,
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Lower-case name as tpm2-tools and the event log JSON use it.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// The algorithm with this name (`sha1`, `sha256`, `sha384`, `sha512`).
    pub fn from_name(name: &str) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|h| h.name() == name)
    }
}

impl core::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
