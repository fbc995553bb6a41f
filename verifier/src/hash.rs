//! The hash helpers the verifier, its CLI and the worker share: SHA-256,
//! and the algorithm of each TPM PCR bank.

use provenix_firmware::tpm::HashAlg;
use ring::digest;

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// ring's algorithm for a TPM hash (a PCR bank, a name's algorithm).
pub fn tpm_algorithm(alg: HashAlg) -> &'static digest::Algorithm {
    match alg {
        HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
    }
}

/// `bytes` hashed with a TPM hash algorithm.
pub fn tpm_digest(alg: HashAlg, bytes: &[u8]) -> Vec<u8> {
    digest::digest(tpm_algorithm(alg), bytes).as_ref().to_vec()
}
