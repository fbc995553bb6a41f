//! The bindings between what a worker says and its hardware evidence
//! (DESIGN.md, "The binding, end to end"): the domain-separated SHA-512
//! values that REPORT_DATA (SEV-SNP) or the quote's qualifying data (TPM)
//! must hold, and the log origin of a worker key.

use ring::digest::SHA512;

/// Domain string of the identity binding.
pub const IDENTITY_DOMAIN: &[u8] = b"provenix identity v1";
/// Domain string of the checkpoint binding.
pub const CHECKPOINT_DOMAIN: &[u8] = b"provenix checkpoint v1";
/// Domain string of the direct-mode statement binding.
pub const STATEMENT_DOMAIN: &[u8] = b"provenix statement v1";

/// REPORT_DATA of a worker identity: SHA-512 over the domain string, the
/// worker's Ed25519 key K, its source commit C (ASCII hex) and the boot
/// nonce. K and the nonce have fixed lengths, so C is unambiguous.
pub fn identity_report_data(
    worker_key: &[u8; 32],
    source_commit: &str,
    boot_nonce: &[u8; 32],
) -> [u8; 64] {
    sha512(&[
        IDENTITY_DOMAIN,
        worker_key,
        source_commit.as_bytes(),
        boot_nonce,
    ])
}

/// REPORT_DATA of an attested checkpoint.
pub fn checkpoint_report_data(checkpoint: &str) -> [u8; 64] {
    sha512(&[CHECKPOINT_DOMAIN, checkpoint.as_bytes()])
}

/// REPORT_DATA of a statement in direct mode: over its deterministic CBOR.
pub fn statement_report_data(statement_cbor: &[u8]) -> [u8; 64] {
    sha512(&[STATEMENT_DOMAIN, statement_cbor])
}

/// The checkpoint origin of the log of worker key K (C2SP tlog-checkpoint
/// origin line): unique per key, so two workers' logs never mix.
pub fn log_origin(worker_key: &[u8; 32]) -> String {
    format!("provenix.dev/log/{}", hex::encode(worker_key))
}

fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut ctx = ring::digest::Context::new(&SHA512);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// TPM qualifying data for a binding: the first 32 bytes of the SHA-512
/// binding hash. A quote's TPM2B_DATA holds at most the TPM's largest
/// digest (32 bytes on a SHA-256-only TPM), so the full 64 bytes fit only
/// TPMs with SHA-512; 256 bits of SHA-512 keep 128-bit collision
/// resistance.
pub fn tpm_qualifying_data(binding: &[u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&binding[..32]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_bindings_are_domain_separated() {
        let k = [1u8; 32];
        let n = [2u8; 32];
        let a = identity_report_data(&k, "abc", &n);
        assert_ne!(a, identity_report_data(&k, "abd", &n));
        assert_ne!(a, identity_report_data(&n, "abc", &k));
        assert_ne!(checkpoint_report_data("x"), statement_report_data(b"x"));
        // The documented construction, spelt out.
        let mut input = b"provenix identity v1".to_vec();
        input.extend(k);
        input.extend(b"abc");
        input.extend(n);
        assert_eq!(&a[..], ring::digest::digest(&SHA512, &input).as_ref());
    }
}
