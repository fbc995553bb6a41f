//! AMD SEV-SNP evidence.
//!
//! References are to AMD's "SEV Secure Nested Paging Firmware ABI
//! Specification" (publication 56860, revision 1.58) and the "GHCB
//! Specification" (publication 56421).

mod certs;
mod report;
mod tcb;

#[cfg(feature = "guest")]
pub mod guest;

pub use certs::{CertKind, CertTable, CertTableEntry, MAX_ENTRIES, MAX_TABLE_SIZE};
pub use report::{
    AttestationReport, Cpuid, FirmwareVersion, GuestPolicy, KeyInfo, PlatformInfo, REPORT_SIZE,
    SIGNED_RANGE, SigningKey,
};
pub use tcb::{Product, TcbVersion};
