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
use provenix_verifier::{Crl, Error, Policy, Refusal, Role, Verifier};

mod ak_cli;
mod checkpoints;
mod compare;
mod export;
mod input;
mod measure;
mod recursive;
mod report;
mod show;
mod sources;
mod substituter;
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
    /// Verify one bundle offline and decide on its subject under the
    /// policy: `provenix verify --bundle BUNDLE`, the same checks and the
    /// same verdict. Exit 0 accepted, 1 rejected, 2 error.
    VerifyBundle(verify::BundleArgs),
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
        /// The policy (TOML; see docs/policy.md). Without one, the report
        /// is only authenticated (AMD's roots, signature, TCB, chip), not
        /// appraised, and the exit code is 3.
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
    /// Serve a binary cache to a plain Nix that holds only what the policy
    /// accepts: each narinfo decided from the upstreams' bundles (M of N,
    /// recursively with `[graph] recursive`), re-signed with this
    /// substituter's key; rejected paths are 404, with the reason at
    /// `/why/<hash>`. Runs until killed.
    Substituter(substituter::SubstituterArgs),
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
        Command::VerifyBundle(args) => verify::run(args.into()),
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
            let loaded = policy.as_deref().map(Policy::load).transpose()?;
            if let Some(p) = &loaded {
                // A report has no statement: accepted commits can only
                // choose among reference-value manifests.
                let mut applies = vec!["trust_amd_roots", "roots", "measurements", "snp"];
                if p.snp.reference_values.is_empty() && p.sets("snp.accepted_commits") {
                    applies.retain(|a| *a != "snp");
                    applies.extend(SNP_REPORT_KEYS);
                }
                p.check_applicable("verify-report", &applies)?;
            }
            let appraised = loaded.is_some();
            let policy = loaded.unwrap_or_default();
            let verifier = verifier_with_crls(&policy, &crl)?;
            let at = at.unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());
            let (vek, chain) = gather_certs(vcek.as_deref(), chain.as_deref(), certs.as_deref())?;
            let bytes = input::read(&report, input::REPORT)?;
            let outcome = verify(
                &verifier,
                appraised.then_some(&policy),
                &bytes,
                &vek,
                &chain,
                at,
            );
            show::print_verdict(
                verifier.anchors(),
                &report,
                &outcome,
                policy.measurements == provenix_verifier::Measurements::Any,
                at,
                json,
            )?;
            Ok(match outcome {
                Ok(Verdict::Accepted(_)) => ExitCode::SUCCESS,
                Ok(Verdict::Authentic(_)) => ExitCode::from(3),
                Err(_) => ExitCode::from(1),
            })
        }
        Command::Verify(args) => verify::run(args),
        Command::Substituter(args) => substituter::run(args),
        Command::Report(args) => report::run(args),
        Command::Measure { what } => measure::run(what),
        Command::Export { what } => export::run(what),
        Command::Ak { what } => ak_cli::run(what),
    }
}

/// The `[snp]` keys that check a report's own fields (all but
/// `accepted_commits`, which needs a statement or manifests).
const SNP_REPORT_KEYS: [&str; 20] = [
    "snp.allow_debug",
    "snp.allow_migrate_ma",
    "snp.allow_smt",
    "snp.require_single_socket",
    "snp.max_vmpl",
    "snp.min_abi",
    "snp.min_build",
    "snp.products",
    "snp.signers",
    "snp.min_tcb",
    "snp.measurements",
    "snp.host_data",
    "snp.report_data",
    "snp.id_key_digests",
    "snp.author_key_digests",
    "snp.min_guest_svn",
    "snp.family_id",
    "snp.image_id",
    "snp.chip_ids",
    "snp.reference_values",
];

/// A verifier for the policy's trust anchors that honours the CRLs given
/// with `--crl` (DER or PEM): every command that verifies SEV-SNP evidence
/// takes them.
pub(crate) fn verifier_with_crls(policy: &Policy, crls: &[PathBuf]) -> Result<Verifier> {
    let mut verifier = Verifier::new(policy.anchors()?);
    for path in crls {
        verifier.add_crl(
            Crl::from_bytes(&input::read(path, input::CRL)?)
                .with_context(|| format!("{}", path.display()))?,
        );
    }
    Ok(verifier)
}

/// What `verify-report` found, when the report is authentic.
pub(crate) enum Verdict {
    /// Authentic and appraised against the policy.
    Accepted(provenix_verifier::VerifiedReport),
    /// Authentic; no policy was given, so nothing says whether the
    /// software it measured is acceptable.
    Authentic(provenix_verifier::AuthenticatedReport),
}

fn verify(
    verifier: &Verifier,
    policy: Option<&Policy>,
    bytes: &[u8],
    vek: &Option<Vec<u8>>,
    chain: &[Vec<u8>],
    at: i64,
) -> Result<Verdict, Refusal> {
    let report = decode_report(bytes).map_err(Error::from)?;
    let vek = vek.as_deref().ok_or(Error::MissingVek)?;
    let auth = verifier.authenticate(&report, vek, chain, at)?;
    match policy {
        Some(policy) => policy
            .appraise(auth)
            .map(Verdict::Accepted)
            .map_err(|rejection| Refusal::Policy {
                evidence: Role::Report,
                rejection,
            }),
        None => Ok(Verdict::Authentic(auth)),
    }
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
        let table = CertTable::from_bytes(&input::read(path, input::CERT_TABLE)?)
            .with_context(|| format!("{}", path.display()))?;
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
        let mut ders = provenix_verifier::certificates_from_pem_or_der(&input::read(
            path,
            input::CERTIFICATES,
        )?)
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
        links = provenix_verifier::certificates_from_pem_or_der(&input::read(
            path,
            input::CERTIFICATES,
        )?)
        .with_context(|| format!("{}", path.display()))?;
    }
    Ok((vek, links))
}

fn read_report(path: &Path) -> Result<AttestationReport> {
    let bytes = input::read(path, input::REPORT)?;
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
