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

/// Refuse a reserved range holding a non-zero byte, naming the byte's exact
/// offset (`offset` is where `bytes` starts in the enclosing structure).
fn zero(bytes: &[u8], field: &'static str, offset: usize) -> Result<(), crate::Error> {
    match bytes.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(at) => Err(crate::Error::ReservedNonZero {
            field,
            offset: offset.saturating_add(at),
        }),
    }
}
