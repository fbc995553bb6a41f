//! TPM evidence: quote signatures and PCR digests, event-log replay, AK
//! trust (certificates, credential activation) and Azure's HCL report.
//!
//! Parsing is in `provenix_firmware::tpm`; everything that needs
//! cryptography or a trust decision is here.
