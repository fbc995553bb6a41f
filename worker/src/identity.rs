//! The worker's identity: an Ed25519 key that lives only in memory, bound
//! by hardware evidence to the worker's source commit and this boot.

use std::sync::Arc;

use provenix_verifier::{Identity, identity_report_data};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::platform::Platform;

/// The source commit this binary was built from (see `build.rs`).
pub const SOURCE_COMMIT: &str = env!("PROVENIX_SOURCE_COMMIT");

/// Why an identity could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The binary does not know its source commit.
    #[error(
        "this build does not know its source commit (build from git, or set PROVENIX_SOURCE_COMMIT)"
    )]
    UnknownCommit,
    /// No randomness for the key or the nonce.
    #[error("the system random number generator failed")]
    Random,
    /// The platform refused to produce evidence.
    #[error("platform evidence: {0}")]
    Evidence(#[from] provenix_firmware::Error),
}

/// A worker key and the evidence binding it.
pub struct WorkerIdentity {
    key: Arc<Ed25519KeyPair>,
    public: [u8; 32],
    document: Identity,
}

impl WorkerIdentity {
    /// Generate a key in memory (never written anywhere) and ask `platform`
    /// for evidence whose REPORT_DATA binds it to `commit` and a fresh nonce.
    pub fn new(platform: &Platform, commit: &str) -> Result<Self, IdentityError> {
        if commit.is_empty() || commit == "unknown" {
            return Err(IdentityError::UnknownCommit);
        }
        let rng = SystemRandom::new();
        let (key, public) = generate_key(&rng)?;
        let mut boot_nonce = [0u8; 32];
        rng.fill(&mut boot_nonce)
            .map_err(|_| IdentityError::Random)?;
        let evidence = platform.evidence(&identity_report_data(&public, commit, &boot_nonce), 0)?;
        Ok(WorkerIdentity {
            key: Arc::new(key),
            public,
            document: Identity {
                worker_key: public,
                source_commit: commit.to_owned(),
                boot_nonce,
                evidence,
            },
        })
    }

    /// The signing key (shared with the log's checkpoint signer).
    pub fn key(&self) -> &Arc<Ed25519KeyPair> {
        &self.key
    }
    /// K, the public key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }
    /// The identity document for bundles.
    pub fn document(&self) -> &Identity {
        &self.document
    }
}

/// A fresh Ed25519 key pair and its public key.
pub fn generate_key(rng: &SystemRandom) -> Result<(Ed25519KeyPair, [u8; 32]), IdentityError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| IdentityError::Random)?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| IdentityError::Random)?;
    let public: [u8; 32] = key
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| IdentityError::Random)?;
    Ok((key, public))
}
