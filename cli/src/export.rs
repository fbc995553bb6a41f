//! `provenix export`: a verified bundle in formats supply-chain tools read.
//!
//! `provenix export slsa BUNDLE --key KEY`: an in-toto Statement v1 with a
//! SLSA Provenance v1 predicate in a DSSE envelope, signed with the Ed25519
//! key in KEY (PKCS#8, DER or PEM). The worker, which holds the worker key,
//! runs the same code ([`provenix_verifier::slsa::export_slsa`]) with it;
//! a user signs with their own key, and the worker's signed statement and
//! hardware evidence ride along as byproducts. Exit 0 exported, 1 the bundle
//! does not verify, 2 error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine as _;
use clap::Subcommand;
use provenix_verifier::slsa::{ExportError, export_slsa};
use provenix_verifier::{Subject, verify_bundle};
use ring::signature::Ed25519KeyPair;

#[derive(Subcommand)]
pub(crate) enum ExportCommand {
    /// An in-toto Statement v1 with SLSA Provenance v1, in a DSSE envelope.
    /// Only a bundle that verifies is exported. Exit 0 exported, 1 the
    /// bundle does not verify, 2 error.
    Slsa {
        /// The bundle (`<artifact>.provenix`).
        bundle: PathBuf,
        /// Where to write the envelope (JSON). Default: stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The policy (TOML; see docs/policy.md).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Verification time: RFC 3339, YYYY-MM-DD or @UNIX-SECONDS.
        #[arg(long, value_parser = super::parse_time)]
        at: Option<i64>,
        /// The Ed25519 signing key, PKCS#8 (DER, or PEM "PRIVATE KEY").
        #[arg(long)]
        key: PathBuf,
        /// An AMD CRL (DER or PEM) to honour; may be repeated.
        #[arg(long)]
        crl: Vec<PathBuf>,
    },
}

pub(crate) fn run(cmd: ExportCommand) -> Result<ExitCode> {
    match cmd {
        ExportCommand::Slsa {
            bundle,
            out,
            policy,
            at,
            key,
            crl,
        } => {
            let policy = crate::input::policy(policy.as_deref())?;
            // One bundle, no checkpoint memory: `provenix verify` applies
            // `[checkpoint]`; export refuses a policy that relies on it.
            policy.check_applicable(
                "export slsa",
                &[
                    "trust_amd_roots",
                    "roots",
                    "measurements",
                    "snp",
                    "tpm",
                    "threshold",
                ],
            )?;
            let verifier = crate::verifier_with_crls(&policy, &crl)?;
            let at = at.unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());
            let signer = load_key(&key)?;
            let bytes = crate::input::read(&bundle, crate::input::BUNDLE)?;
            // The same decision `provenix verify --bundle` makes: accepted
            // commits, named builders and M of N apply to an export too.
            let outcome = verify_bundle(&bytes, &verifier, &policy, at);
            let subject = match &outcome {
                Ok(v) => v.statement().subject.clone(),
                Err(_) => Subject::File(bundle.display().to_string()),
            };
            let decision = policy.decide(
                &subject,
                None,
                vec![(bundle.display().to_string(), outcome)],
            );
            if !decision.accepted() {
                println!("{}: REJECTED", bundle.display());
                for e in decision.excluded() {
                    for why in &e.reasons {
                        println!("  - {why}");
                    }
                }
                for r in decision.reasons() {
                    println!("  - {r}");
                }
                return Ok(ExitCode::from(1));
            }
            match export_slsa(&bytes, &verifier, &policy, at, &signer) {
                Ok(mut envelope) => {
                    envelope.push(b'\n');
                    match &out {
                        Some(path) => std::fs::write(path, &envelope)
                            .with_context(|| format!("cannot write {}", path.display()))?,
                        None => {
                            use std::io::Write as _;
                            std::io::stdout().write_all(&envelope)?;
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ ExportError::Refused(_)) => {
                    println!("{}: REJECTED", bundle.display());
                    println!("  - {e}");
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// An Ed25519 key from PKCS#8 v1 or v2, DER or PEM.
fn load_key(path: &Path) -> Result<Ed25519KeyPair> {
    let bytes = crate::input::read(path, crate::input::SMALL)?;
    let der = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => {
            let body: String = text
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .with_context(|| format!("{}: not a PEM private key", path.display()))?
        }
        _ => bytes,
    };
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()))
}
