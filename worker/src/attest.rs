//! One-shot attestation for CI jobs (direct mode, DESIGN.md step 6): each
//! artifact's statement is bound by its own hardware report, and its bundle
//! is written beside it as `<artifact>.provenix`.

use std::io::Read;
use std::path::{Path, PathBuf};

use provenix_verifier::{
    Bundle, Policy, Statement, Subject, Verifier, statement_report_data, verify_bundle,
};
use ring::rand::SystemRandom;

use crate::identity::{IdentityError, generate_key};
use crate::platform::{Platform, with_vek};

/// The suffix of a bundle written beside its artifact.
pub const BUNDLE_SUFFIX: &str = ".provenix";
/// The suffix of the in-toto/SLSA provenance (a DSSE envelope signed by the
/// worker key) written beside its artifact.
pub const SLSA_SUFFIX: &str = ".intoto.json";

/// Why attestation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// An artifact could not be read or a bundle written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The artifact is not a regular file.
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// No key, or no commit.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The platform refused to produce evidence.
    #[error("platform evidence: {0}")]
    Evidence(#[from] provenix_firmware::Error),
    /// Signing or encoding failed.
    #[error(transparent)]
    Format(#[from] provenix_verifier::Error),
    /// The SLSA provenance could not be made.
    #[error("SLSA provenance of {}: {reason}", path.display())]
    Slsa {
        /// The artifact.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The bundle just written does not verify: nothing is trusted that the
    /// worker could not verify itself.
    #[error("self-check of {}: {reason}", path.display())]
    SelfCheck {
        /// The bundle.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
}

/// One artifact attested.
#[derive(Clone, Debug)]
pub struct Attested {
    /// The artifact.
    pub artifact: PathBuf,
    /// Its bundle.
    pub bundle: PathBuf,
    /// Its SLSA provenance, signed by the worker key.
    pub slsa: PathBuf,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
    /// Its size.
    pub size: u64,
}

/// How to attest.
pub struct AttestOptions<'a> {
    /// Where evidence comes from.
    pub platform: &'a Platform,
    /// The worker's source commit.
    pub commit: &'a str,
    /// The endorsement key certificate (DER), when the platform's
    /// certificate table lacks it (clouds that do not populate it).
    pub vek: Option<Vec<u8>>,
    /// What the self-check trusts.
    pub policy: &'a Policy,
    /// The time to put in statements and to verify at, unix seconds.
    pub now: i64,
}

/// Attest each artifact and write its bundle beside it; verify each bundle
/// with the verifier library before returning. Stops at the first failure.
pub fn attest(
    artifacts: &[PathBuf],
    opts: &AttestOptions<'_>,
) -> Result<Vec<Attested>, AttestError> {
    if opts.commit.is_empty() || opts.commit == "unknown" {
        return Err(IdentityError::UnknownCommit.into());
    }
    let (key, public) = generate_key(&SystemRandom::new())?;
    let verifier = Verifier::new(opts.policy.anchors()?);
    let mut out = Vec::with_capacity(artifacts.len());
    for artifact in artifacts {
        let (sha256, size) = hash_file(artifact)?;
        let name = artifact.file_name().map_or_else(
            || artifact.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let statement = Statement {
            subject: Subject::File(name),
            sha256,
            size,
            references: Vec::new(),
            deriver: None,
            worker_key: public,
            source_commit: opts.commit.to_owned(),
            log_index: None,
            time: opts.now,
            nix_signature: None,
            trace: None,
        };
        let signed = statement.sign(&key)?;
        let evidence = opts
            .platform
            .evidence(&statement_report_data(&statement.to_cbor()), 0)?;
        let bundle = Bundle::Direct {
            statement: signed,
            evidence: with_vek(evidence, opts.vek.as_deref()),
        }
        .to_cbor();
        let path = bundle_path(artifact);
        verify_bundle(&bundle, &verifier, opts.policy, opts.now).map_err(|e| {
            AttestError::SelfCheck {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        // Only the worker holds its key, so the worker signs the provenance
        // now; `provenix export slsa` makes the same document for others.
        let envelope =
            provenix_verifier::slsa::export_slsa(&bundle, &verifier, opts.policy, opts.now, &key)
                .map_err(|e| AttestError::Slsa {
                path: artifact.clone(),
                reason: e.to_string(),
            })?;
        let slsa = suffixed(artifact, SLSA_SUFFIX);
        write_atomically(&path, &bundle)?;
        write_atomically(&slsa, &envelope)?;
        out.push(Attested {
            artifact: artifact.clone(),
            bundle: path,
            slsa,
            sha256,
            size,
        });
    }
    Ok(out)
}

/// `<artifact>.provenix`.
pub fn bundle_path(artifact: &Path) -> PathBuf {
    suffixed(artifact, BUNDLE_SUFFIX)
}

fn suffixed(artifact: &Path, suffix: &str) -> PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// SHA-256 and size of a regular file, streamed.
pub fn hash_file(path: &Path) -> Result<([u8; 32], u64), AttestError> {
    let io = |op| {
        move |source| AttestError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let meta = std::fs::metadata(path).map_err(io("stat"))?;
    if !meta.is_file() {
        return Err(AttestError::NotAFile(path.to_path_buf()));
    }
    let mut file = std::fs::File::open(path).map_err(io("open"))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("read"))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        ctx.update(chunk);
        size = size.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
    let mut sha = [0u8; 32];
    sha.copy_from_slice(ctx.finish().as_ref());
    Ok((sha, size))
}

/// Write to a temporary file beside `path`, sync it, then rename it into
/// place, so a reader never sees half a bundle.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AttestError> {
    use std::io::Write;
    let io = |op| {
        move |source| AttestError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io("create"))?;
    f.write_all(bytes).map_err(io("write"))?;
    f.sync_all().map_err(io("sync"))?;
    std::fs::rename(&tmp, path).map_err(io("rename"))
}
