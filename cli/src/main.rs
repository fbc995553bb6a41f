//! `provenix`: the user's verifier.
//!
//! Exit codes: 0 accepted, 1 rejected, 2 error (unreadable input, bad
//! arguments or policy). Evidence that is malformed, not authentic or against
//! the policy is *rejected*, with every reason printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use provenix_firmware::snp::{AttestationReport, CertKind, CertTable, REPORT_SIZE};
use provenix_verifier::{Crl, Error, Policy, Verifier};

mod ak_cli;
mod checkpoints;
mod export;
mod measure;
mod report;
mod show;
mod sources;
mod verify;

/// Verify Provenix hardware evidence.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every field of an SEV-SNP attestation report.
    Inspect {
        /// The report: 1184 raw bytes, or hex text.
        report: PathBuf,
        /// Print JSON for machines.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle offline: the statement's signature, its binding to
    /// hardware evidence, the evidence against the policy, and (with
    /// --artifact) that the artifact is the one the statement names.
    /// Exit 0 accepted, 1 rejected, 2 error.
    VerifyBundle {
        /// The bundle (`<artifact>.provenix`).
        bundle: PathBuf,
        /// The artifact the statement must describe.
        #[arg(long)]
        artifact: Option<PathBuf>,
        /// The policy (TOML; see docs/policy.md).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Verification time: RFC 3339, YYYY-MM-DD or @UNIX-SECONDS.
        #[arg(long, value_parser = parse_time)]
        at: Option<i64>,
        /// Print JSON for machines.
        #[arg(long)]
        json: bool,
    },
    /// Authenticate an SEV-SNP report to AMD's roots and appraise it against a
    /// policy. Exit 0 accepted, 1 rejected, 2 error.
    VerifyReport {
        /// The report: 1184 raw bytes, or hex text.
        report: PathBuf,
        /// The VCEK or VLEK that signed it (DER or PEM). Optional when
        /// `--certs` holds one.
        #[arg(long, alias = "vlek")]
        vcek: Option<PathBuf>,
        /// The ASK (or ASVK) and ARK, PEM or DER, as AMD's KDS `cert_chain`
        /// returns them. Defaults to the embedded AMD chain for the product.
        #[arg(long)]
        chain: Option<PathBuf>,
        /// An extended report's certificate table (configfs-tsm `auxblob`):
        /// the VCEK/VLEK and chain, as the host supplied them.
        #[arg(long)]
        certs: Option<PathBuf>,
        /// The policy (TOML; see docs/policy.md). Default: AMD roots, no
        /// debug, no migration agent.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// An AMD CRL (DER or PEM) to honour; may be repeated.
        #[arg(long)]
        crl: Vec<PathBuf>,
        /// Verification time: RFC 3339, YYYY-MM-DD or @UNIX-SECONDS.
        /// Default: now.
        #[arg(long, value_parser = parse_time)]
        at: Option<i64>,
        /// Print JSON for machines.
        #[arg(long)]
        json: bool,
    },
    /// Decide whether enough distinct trusted builders agree on a subject
    /// (an artifact, a local store path, or what the bundles name), under
    /// the policy's `[threshold]`. Exit 0 accepted, 1 rejected, 2 error.
    Verify(verify::VerifyArgs),
    /// Summarise reproducibility per derivation over bundles: who built
    /// each output, which NAR hashes they state, and whether they agree.
    /// Exit 0 no disagreement, 1 builders disagree, 2 error.
    Report(report::ReportArgs),
    /// Compute expected measurements from boot artifacts.
    Measure {
        #[command(subcommand)]
        what: measure::MeasureCommand,
    },
    /// Export a verified bundle to supply-chain formats.
    Export {
        #[command(subcommand)]
        what: export::ExportCommand,
    },
    /// Enroll TPM attestation keys with an operator CA (EK certificate and
    /// credential activation), and verify AK certificates.
    Ak {
        #[command(subcommand)]
        what: ak_cli::AkCommand,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("provenix: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Inspect { report, json } => {
            let report = read_report(&report)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&show::report_json(&report))?
                );
            } else {
                print!("{}", show::report_text(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyBundle {
            bundle,
            artifact,
            policy,
            at,
            json,
        } => {
            let policy = match &policy {
                Some(path) => {
                    read(path)?;
                    Policy::load(path)?
                }
                None => Policy::default(),
            };
            let verifier = Verifier::new(policy.anchors()?);
            let at = at.unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());
            let bytes = read(&bundle)?;
            let digest = match &artifact {
                Some(path) => Some(sha256_file(path)?),
                None => None,
            };
            let outcome = provenix_verifier::verify_bundle(&bytes, &verifier, &policy, at)
                .map_err(|e| e.to_string())
                .and_then(|v| match digest {
                    Some((sha, size)) if sha != v.statement().sha256 || size != v.statement().size => Err(format!(
                        "the artifact (sha256:{}, {size} bytes) is not the statement's subject (sha256:{}, {} bytes)",
                        hex::encode(sha),
                        hex::encode(v.statement().sha256),
                        v.statement().size
                    )),
                    _ => Ok(v),
                });
            show::print_bundle_verdict(&bundle, &outcome, json)?;
            Ok(if outcome.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::VerifyReport {
            report,
            vcek,
            chain,
            certs,
            policy,
            crl,
            at,
            json,
        } => {
            let policy = match &policy {
                Some(path) => {
                    read(path)?; // the size limit and a clear message for a missing file
                    Policy::load(path)?
                }
                None => Policy::default(),
            };
            let mut verifier = Verifier::new(policy.anchors()?);
            for path in &crl {
                verifier.add_crl(
                    Crl::from_bytes(&read(path)?).with_context(|| format!("{}", path.display()))?,
                );
            }
            let at = match at {
                Some(t) => t,
                None => time::OffsetDateTime::now_utc().unix_timestamp(),
            };
            let (vek, chain) = gather_certs(vcek.as_deref(), chain.as_deref(), certs.as_deref())?;
            let bytes = read(&report)?;
            let outcome = verify(&verifier, &policy, &bytes, &vek, &chain, at);
            show::print_verdict(verifier.anchors(), &report, &outcome, at, json)?;
            Ok(match outcome {
                Ok(_) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            })
        }
        Command::Verify(args) => verify::run(args),
        Command::Report(args) => report::run(args),
        Command::Measure { what } => measure::run(what),
        Command::Export { what } => export::run(what),
        Command::Ak { what } => ak_cli::run(what),
    }
}

/// Why a report was not accepted.
pub(crate) enum Refusal {
    /// Not authentic, or malformed.
    Authentication(Error),
    /// Authentic, but against the policy.
    Policy(provenix_verifier::Rejection),
}

fn verify(
    verifier: &Verifier,
    policy: &Policy,
    bytes: &[u8],
    vek: &Option<Vec<u8>>,
    chain: &[Vec<u8>],
    at: i64,
) -> Result<provenix_verifier::VerifiedReport, Refusal> {
    let report = decode_report(bytes)
        .map_err(Error::from)
        .map_err(Refusal::Authentication)?;
    let vek = vek
        .as_deref()
        .ok_or(Refusal::Authentication(Error::MissingVek))?;
    let auth = verifier
        .authenticate(&report, vek, chain, at)
        .map_err(Refusal::Authentication)?;
    policy.appraise(auth).map_err(Refusal::Policy)
}

/// An endorsement key (if any was given) and the chain offered with it.
type Offered = (Option<Vec<u8>>, Vec<Vec<u8>>);

/// The endorsement key and chain from `--vcek`, `--chain` and `--certs`.
/// Explicit flags win over the certificate table.
fn gather_certs(
    vcek: Option<&Path>,
    chain: Option<&Path>,
    certs: Option<&Path>,
) -> Result<Offered> {
    let mut vek = None;
    let mut links = Vec::new();
    if let Some(path) = certs {
        let table =
            CertTable::from_bytes(&read(path)?).with_context(|| format!("{}", path.display()))?;
        vek = table
            .get(CertKind::Vcek)
            .or(table.get(CertKind::Vlek))
            .map(<[u8]>::to_vec);
        for kind in [CertKind::Ask, CertKind::Ark] {
            if let Some(der) = table.get(kind) {
                links.push(der.to_vec());
            }
        }
    }
    if let Some(path) = vcek {
        let mut ders = provenix_verifier::certificates_from_pem_or_der(&read(path)?)
            .with_context(|| format!("{}", path.display()))?;
        if ders.len() != 1 {
            bail!(
                "{}: expected one certificate, found {}",
                path.display(),
                ders.len()
            );
        }
        vek = ders.pop();
    }
    if let Some(path) = chain {
        links = provenix_verifier::certificates_from_pem_or_der(&read(path)?)
            .with_context(|| format!("{}", path.display()))?;
    }
    Ok((vek, links))
}

/// Largest file read: a report as hex with whitespace is under 4 KiB; a
/// certificate table or CRL under 1 MiB.
const MAX_INPUT: u64 = 1 << 20;

fn read(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_INPUT {
        bail!(
            "{}: {} bytes exceeds the limit of {MAX_INPUT}",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_report(path: &Path) -> Result<AttestationReport> {
    let bytes = read(path)?;
    decode_report(&bytes).with_context(|| format!("{}", path.display()))
}

/// A report is raw bytes, or (as some tools write it) hex text.
fn decode_report(bytes: &[u8]) -> Result<AttestationReport, provenix_firmware::Error> {
    if bytes.len() != REPORT_SIZE
        && bytes
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace())
    {
        let text: String = bytes
            .iter()
            .filter(|b| !b.is_ascii_whitespace())
            .map(|&b| char::from(b))
            .collect();
        if let Ok(raw) = hex::decode(&text) {
            return AttestationReport::from_bytes(&raw);
        }
    }
    AttestationReport::from_bytes(bytes)
}

/// SHA-256 and size of a file, streamed.
fn sha256_file(path: &Path) -> Result<([u8; 32], u64)> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
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

fn parse_time(s: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    if let Some(secs) = s.strip_prefix('@') {
        return secs.parse().map_err(|e| format!("{s:?}: {e}"));
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let date = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| format!("{s:?} is not RFC 3339, YYYY-MM-DD or @UNIX-SECONDS"))?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}
