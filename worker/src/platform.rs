//! Where evidence comes from: SEV-SNP hardware, or the simulator.

use std::fmt;

use provenix_firmware::Error;
use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind};
use provenix_firmware::snp::{Product, TcbVersion, guest};

/// Which platform to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// Hardware when present, else the simulator (with a warning).
    Auto,
    /// SEV-SNP hardware only: configfs-tsm, else /dev/sev-guest.
    Snp,
    /// The simulated platform.
    Sim,
}

/// A source of attestation evidence.
pub enum Platform {
    /// A real SEV-SNP guest interface.
    Snp(guest::Interface),
    /// The simulator: a test chain no default policy trusts.
    Sim(Box<SimPlatform>),
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Platform::Snp(interface) => write!(f, "SEV-SNP via {interface}"),
            Platform::Sim(sim) => write!(
                f,
                "SIMULATED SEV-SNP ({}, test root {})",
                sim.chain().params().product,
                hex::encode(provenix_firmware::sim::ark_fingerprint(
                    sim.chain().params().product
                ))
            ),
        }
    }
}

/// Evidence as the platform returns it, unparsed.
pub struct Evidence {
    /// The 1184-byte attestation report.
    pub report: Vec<u8>,
    /// The certificate table (VCEK/VLEK, ASK, ARK), when the host supplies
    /// one; cloud hosts often do not, and the VCEK then comes from AMD's KDS.
    pub cert_table: Option<Vec<u8>>,
}

/// How long a simulated endorsement key is valid: a year from now, as
/// AMD's VLEKs are.
const SIM_VALIDITY: i64 = 365 * 86_400;

impl Platform {
    /// Find the platform. With [`Choice::Auto`], `on_fallback` is called with
    /// the reason hardware was not used, so the caller can say so loudly.
    pub fn detect(
        choice: Choice,
        now: i64,
        on_fallback: impl FnOnce(&Error),
    ) -> Result<Platform, Error> {
        match choice {
            Choice::Snp => guest::detect().map(Platform::Snp),
            Choice::Sim => Self::simulator(now),
            Choice::Auto => match guest::detect() {
                Ok(interface) => Ok(Platform::Snp(interface)),
                Err(e) => {
                    on_fallback(&e);
                    Self::simulator(now)
                }
            },
        }
    }

    fn simulator(now: i64) -> Result<Platform, Error> {
        let mut chip = [0u8; 64];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut chip)
            .map_err(|_| Error::Sim("no randomness for a chip ID".into()))?;
        let params = ChainParams {
            product: Product::Milan,
            kind: VekKind::Vcek,
            tcb: ReportParams::default().tcb,
            hw_id: chip,
            not_before: now.saturating_sub(86_400),
            not_after: now.saturating_add(SIM_VALIDITY),
        };
        Ok(Platform::Sim(Box::new(SimPlatform::new(&params)?)))
    }

    /// Whether this is the simulator.
    pub fn is_simulated(&self) -> bool {
        matches!(self, Platform::Sim(_))
    }

    /// Ask for a report carrying `report_data`, at VMPL `vmpl`.
    pub fn evidence(&self, report_data: &[u8; 64], vmpl: u32) -> Result<Evidence, Error> {
        match self {
            Platform::Snp(interface) => {
                let raw = interface.request(report_data, vmpl, true)?;
                Ok(Evidence {
                    report: raw.report,
                    cert_table: raw.cert_table.filter(|t| !t.is_empty()),
                })
            }
            Platform::Sim(sim) => {
                let params = sim.chain().params();
                let report = sim.report_bytes(&ReportParams {
                    product: params.product,
                    tcb: TcbVersion { ..params.tcb },
                    chip_id: params.hw_id,
                    report_data: *report_data,
                    vmpl,
                    ..ReportParams::default()
                })?;
                Ok(Evidence {
                    report: report.to_vec(),
                    cert_table: Some(sim.cert_table()?),
                })
            }
        }
    }
}

/// A policy trusting the simulator's test roots and nothing else: what the
/// worker's self-checks apply on the simulator when no policy is given.
pub fn sim_policy() -> provenix_verifier::Policy {
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
