//! `provenix-worker`: the attested build worker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use provenix_worker::platform::{Choice, Platform};

/// The Provenix attested build worker.
#[derive(Parser)]
#[command(about, version = concat!(env!("CARGO_PKG_VERSION"), " (source commit ", env!("PROVENIX_SOURCE_COMMIT"), ")"))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attest a file: an SEV-SNP report whose REPORT_DATA is the SHA-512 of
    /// the file, written with its certificate table to --out.
    Report {
        /// The file to bind into the report.
        #[arg(long)]
        file: PathBuf,
        /// Where to write report.bin and certs.bin.
        #[arg(long)]
        out: PathBuf,
        /// The platform: hardware when present, else the simulator.
        #[arg(long, value_enum, default_value_t = Choice::Auto)]
        platform: Choice,
        /// The VMPL to request the report at.
        #[arg(long, default_value_t = 0)]
        vmpl: u32,
    },
    /// Attest CI artifacts (direct mode): for each, a statement bound by its
    /// own hardware report, verified, and written beside it as
    /// `<artifact>.provenix`. Exits non-zero on any failure.
    Attest {
        /// The files to attest.
        #[arg(long = "artifact", required = true)]
        artifacts: Vec<PathBuf>,
        /// The platform: hardware when present, else the simulator.
        #[arg(long, value_enum, default_value_t = Choice::Auto)]
        platform: Choice,
        /// The VCEK/VLEK (DER or PEM), for hosts whose certificate table
        /// lacks it.
        #[arg(long)]
        vcek: Option<PathBuf>,
        /// The policy the self-check applies (default: AMD's roots on
        /// hardware, the simulator's test roots on the simulator).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Print the simulator's ARK fingerprints (SHA-256 of the DER), one line
    /// per product, as a policy pins them.
    SimRoots,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provenix-worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Report {
            file,
            out,
            platform,
            vmpl,
        } => {
            let platform = detect(platform, unix_now())?;
            let contents =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let digest = ring::digest::digest(&ring::digest::SHA512, &contents);
            let mut report_data = [0u8; 64];
            report_data.copy_from_slice(digest.as_ref());
            let evidence = platform.evidence(&report_data, vmpl)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            std::fs::write(out.join("report.bin"), &evidence.report)?;
            if let Some(table) = &evidence.cert_table {
                std::fs::write(out.join("certs.bin"), table)?;
            }
            eprintln!(
                "report_data = SHA-512({}) = {}",
                file.display(),
                hex::encode(report_data)
            );
            println!("{}", out.join("report.bin").display());
            Ok(())
        }
        Command::Attest {
            artifacts,
            platform,
            vcek,
            policy,
        } => {
            use provenix_verifier::Policy;
            use provenix_worker::attest::{AttestOptions, attest};
            let now = unix_now();
            let platform = detect(platform, now)?;
            let policy = match &policy {
                Some(path) => Policy::load(path)?,
                None if platform.is_simulated() => sim_policy(),
                None => Policy::default(),
            };
            let vek = match &vcek {
                Some(path) => {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let mut ders = provenix_verifier::certificates_from_pem_or_der(&bytes)?;
                    Some(ders.swap_remove(0))
                }
                None => None,
            };
            let done = attest(
                &artifacts,
                &AttestOptions {
                    platform: &platform,
                    commit: provenix_worker::identity::SOURCE_COMMIT,
                    vek,
                    policy: &policy,
                    now,
                },
            )?;
            for a in done {
                println!(
                    "{}  sha256:{}  {} bytes",
                    a.bundle.display(),
                    hex::encode(a.sha256),
                    a.size
                );
            }
            Ok(())
        }
        Command::SimRoots => {
            for (product, fingerprint) in provenix_firmware::sim::sim_ark_fingerprints() {
                println!("{product} {}", hex::encode(fingerprint));
            }
            Ok(())
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Find the platform, saying loudly when it is the simulator.
fn detect(choice: Choice, now: i64) -> Result<Platform> {
    let platform = Platform::detect(choice, now, |why| {
        eprintln!("######################################################################");
        eprintln!("# WARNING: no SEV-SNP hardware: {why}");
        eprintln!("# Using the SIMULATED platform. Its evidence proves nothing about");
        eprintln!("# hardware and is accepted only by a policy that names its test root.");
        eprintln!("######################################################################");
    })?;
    eprintln!("platform: {platform}");
    Ok(platform)
}

/// A policy trusting the simulator's test roots and nothing else.
fn sim_policy() -> provenix_verifier::Policy {
    let mut policy = provenix_verifier::Policy {
        trust_amd_roots: false,
        ..provenix_verifier::Policy::default()
    };
    for (product, sha256) in provenix_firmware::sim::sim_ark_fingerprints() {
        policy.roots.push(provenix_verifier::RootPin {
            name: "provenix simulator (TEST ROOT)".into(),
            product,
            sha256: provenix_verifier::Hex(sha256),
        });
    }
    policy
}
