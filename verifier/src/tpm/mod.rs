//! TPM evidence: quote signatures and PCR digests, event-log replay, AK
//! trust (certificates, credential activation) and Azure's HCL report.
//!
//! Parsing is in `provenix_firmware::tpm`; everything that needs
//! cryptography or a trust decision is here.

pub mod ak;
pub mod appraise;
pub mod azure;
pub mod azure_appraise;
pub mod quote;
pub mod replay;

pub use appraise::{QuotedBoot, VerifiedTpm};
pub use azure::{HclRuntimeData, VerifiedHclReport, bound_runtime_data, verify_hcl_report};
pub use azure_appraise::VerifiedAzure;
pub use quote::{AttestationKey, PcrValues, VerifiedQuote, name_of, verify_quote};
pub use replay::{PcrMismatch, Pcrs, replay};
