//! `provenix-worker`: the attested build worker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use provenix_worker::platform::{Choice, Platform};

/// The Provenix attested build worker.
#[derive(Parser)]
#[command(version, about)]
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
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let platform = Platform::detect(platform, now, |why| {
                eprintln!("######################################################################");
                eprintln!("# WARNING: no SEV-SNP hardware: {why}");
                eprintln!("# Using the SIMULATED platform. Its evidence proves nothing about");
                eprintln!("# hardware and is accepted only by a policy that names its test root.");
                eprintln!("######################################################################");
            })?;
            eprintln!("platform: {platform}");
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
        Command::SimRoots => {
            for (product, fingerprint) in provenix_firmware::sim::sim_ark_fingerprints() {
                println!("{product} {}", hex::encode(fingerprint));
            }
            Ok(())
        }
    }
}
