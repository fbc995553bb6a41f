//! Every file the CLI reads, through one door: a regular file (a FIFO,
//! device or directory is refused by name, without blocking), read up to
//! its format's limit without trusting its metadata
//! ([`provenix_firmware::file`]). Each limit is the one its format's parser
//! (and writer) uses, so a file the reader takes is one the parser could.

use std::path::Path;

use anyhow::Result;

/// A bundle: the format's own limit.
pub(crate) const BUNDLE: usize = provenix_verifier::MAX_BUNDLE_SIZE;
/// An SEV-SNP report: 1184 bytes raw, or as hex text (2368 digits) with
/// whitespace between them.
pub(crate) const REPORT: usize = 8 << 10;
/// PEM or DER certificates (a chain, a CA file): up to 16 PEM blocks of
/// certificates of at most 16 KiB each, base64-expanded.
pub(crate) const CERTIFICATES: usize = 512 << 10;
/// An extended report's certificate table.
pub(crate) const CERT_TABLE: usize = provenix_firmware::snp::MAX_TABLE_SIZE;
/// An AMD CRL.
pub(crate) const CRL: usize = provenix_verifier::MAX_CRL_SIZE;
/// A consistency proof file.
pub(crate) const CONSISTENCY: usize = provenix_verifier::ConsistencyProof::MAX_LEN;
/// AK enrollment files (docs/tpm.md: "At most 256 KiB each"), TPM public
/// areas and PEM private keys.
pub(crate) const SMALL: usize = 256 << 10;
/// A boot artifact to measure (OVMF, a kernel, an initrd, a UKI) or a TCG
/// event log: Debian's largest initrds are a few hundred MiB.
pub(crate) const BOOT_ARTIFACT: usize = 1 << 30;

/// The regular file `path`, at most `limit` bytes; the error names it.
pub(crate) fn read(path: &Path, limit: usize) -> Result<Vec<u8>> {
    Ok(provenix_firmware::file::read_bounded(path, limit)?)
}

/// SHA-256 and size of the regular file `path`, streamed (an artifact may
/// be of any size).
pub(crate) fn sha256_file(path: &Path) -> Result<([u8; 32], u64)> {
    use std::io::Read;
    let mut file = provenix_firmware::file::open_regular(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.update(buf.get(..n).unwrap_or_default());
        size = size.saturating_add(u64::try_from(n)?);
    }
    let mut sha = [0u8; 32];
    sha.copy_from_slice(ctx.finish().as_ref());
    Ok((sha, size))
}

/// The policy file at `path` (its manifests and CA files are read through
/// the same door, relative to it), or the default policy.
pub(crate) fn policy(path: Option<&Path>) -> Result<provenix_verifier::Policy> {
    Ok(match path {
        Some(path) => provenix_verifier::Policy::load(path)?,
        None => provenix_verifier::Policy::default(),
    })
}
