//! Where evidence comes from: SEV-SNP hardware, a TPM, or the simulator.

use std::fmt;

use provenix_firmware::Error;
use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind};
use provenix_firmware::snp::{Product, TcbVersion, guest};
use provenix_verifier::{Evidence, SnpEvidence};

/// Which platform to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// Hardware when present, else the simulator (with a warning).
    Auto,
    /// SEV-SNP hardware only: configfs-tsm, else /dev/sev-guest.
    Snp,
    /// A TPM (`--tpm-tcti`, default /dev/tpmrm0) with a certified
    /// attestation key: `--ak-cert FILE`, or without it (or with
    /// `--ak-cert nv`) the cloud's AK and its certificate from NV.
    #[cfg(feature = "tpm")]
    Tpm,
    /// An Azure confidential VM: the paravisor's HCL report from vTPM NV
    /// 0x01400001 and quotes by its AK at 0x81000003 (`--azure-vcek`).
    #[cfg(feature = "tpm")]
    Azure,
    /// The simulated platform.
    Sim,
}

/// A source of attestation evidence.
pub enum Platform {
    /// A real SEV-SNP guest interface.
    Snp(guest::Interface),
    /// A TPM quoting with a certified attestation key.
    #[cfg(feature = "tpm")]
    Tpm(tpm::TpmPlatform),
    /// The simulator: a test chain no default policy trusts.
    Sim(Box<SimPlatform>),
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Platform::Snp(interface) => write!(f, "SEV-SNP via {interface}"),
            #[cfg(feature = "tpm")]
            Platform::Tpm(t) => write!(f, "{t}"),
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

/// How to reach the TPM and which attestation key to quote with.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TpmOptions {
    /// The TPM's TCTI, e.g. `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321` [default: device:/dev/tpmrm0].
    #[arg(long)]
    pub tpm_tcti: Option<String>,
    /// The attestation key: an ECC P-256 (`ecc`) or RSA 2048 (`rsa`)
    /// restricted signing primary key in the endorsement hierarchy, as
    /// `provenix-worker ak request` made it.
    #[arg(long, value_enum, default_value_t = AkChoice::Ecc)]
    pub ak_kind: AkChoice,
    /// The AK's persistent handle, when it was made persistent (hex).
    #[arg(long, value_parser = parse_handle)]
    pub ak_handle: Option<u32>,
    /// The AK's certificate and its chain (PEM), from `provenix ak
    /// enroll`. Without it, or with `nv`, the cloud's AK (GCP: made from
    /// the template in NV 0x01c10001/0x01c10003; Azure: 0x81000003) and
    /// its certificate from NV (0x01c10000/0x01c10002, 0x01c101d0).
    #[arg(long)]
    pub ak_cert: Option<std::path::PathBuf>,
    /// With the cloud's AK: the NV certificate's issuers up to the cloud's
    /// AK CA (PEM or DER), carried in the evidence; the last one is what
    /// the worker's own check trusts when no policy is given.
    #[arg(long)]
    pub ak_chain: Option<std::path::PathBuf>,
    /// On Azure (`--platform azure`): the VCEK that signed the HCL report's
    /// SNP report, then its ASK and ARK (PEM or DER), as Azure's
    /// IMDS/THIM serves them.
    #[arg(long)]
    pub azure_vcek: Option<std::path::PathBuf>,
    /// The TCG event log [default: the kernel's securityfs copy].
    #[arg(long)]
    pub event_log: Option<std::path::PathBuf>,
    /// The deployment settings to bind ([`SETTINGS_PCR`]); set from
    /// `serve --settings`, never a flag of its own.
    #[arg(skip)]
    pub settings: Option<Vec<u8>>,
}

/// The PCR a TPM worker extends with its deployment settings (each bank
/// with that bank's hash of the settings file) before it serves, so that a
/// quote shows the settings it runs with. docs/image.md.
pub const SETTINGS_PCR: u8 = 15;
const _: () = assert!(SETTINGS_PCR as u32 == provenix_firmware::tpm::events::PROVENIX_SETTINGS_PCR);

/// The kind of attestation key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AkChoice {
    /// ECC NIST P-256, ECDSA-SHA256.
    #[default]
    Ecc,
    /// RSA 2048, RSASSA-SHA256.
    Rsa,
}

fn parse_handle(s: &str) -> Result<u32, String> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(hex, 16).map_err(|e| format!("{s:?} is not a hex handle: {e}"))
}

/// Attach a VCEK/VLEK the operator supplied (cloud hosts often give no
/// certificate table; the VEK then comes from AMD's KDS) to SNP evidence,
/// or to an Azure CVM's (whose HCL report never carries one).
pub fn with_vek(mut evidence: Evidence, vek: Option<&[u8]>) -> Evidence {
    match (&mut evidence, vek) {
        (Evidence::Snp(e), Some(vek)) => e.vek = Some(vek.to_vec()),
        (Evidence::Azure(e), Some(vek)) => e.vek = Some(vek.to_vec()),
        _ => {}
    }
    evidence
}

/// The kernel's TPM resource manager, where `auto` looks for a TPM.
#[cfg(feature = "tpm")]
const TPM_DEVICE: &str = "/dev/tpmrm0";

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
        Self::open(choice, &TpmOptions::default(), now, on_fallback)
    }

    /// [`Platform::detect`] with the TPM's options. [`Choice::Auto`] takes
    /// SEV-SNP when present, else a TPM when an AK certificate is given or
    /// /dev/tpmrm0 holds a cloud's certified AK, else the simulator.
    pub fn open(
        choice: Choice,
        tpm: &TpmOptions,
        now: i64,
        on_fallback: impl FnOnce(&Error),
    ) -> Result<Platform, Error> {
        let _ = tpm;
        match choice {
            Choice::Snp => guest::detect().map(Platform::Snp),
            #[cfg(feature = "tpm")]
            Choice::Tpm => tpm::TpmPlatform::open(tpm).map(Platform::Tpm),
            #[cfg(feature = "tpm")]
            Choice::Azure => tpm::TpmPlatform::open_azure(tpm).map(Platform::Tpm),
            Choice::Sim => Self::simulator(now),
            Choice::Auto => match guest::detect() {
                Ok(interface) => Ok(Platform::Snp(interface)),
                #[cfg(feature = "tpm")]
                Err(_) if tpm.ak_cert.is_some() => tpm::TpmPlatform::open(tpm).map(Platform::Tpm),
                // A TPM whose AK a verifier can trust: a cloud's, certified
                // in NV. Without one, its quotes would prove nothing.
                #[cfg(feature = "tpm")]
                Err(snp) if tpm.tpm_tcti.is_none() && std::path::Path::new(TPM_DEVICE).exists() => {
                    match tpm::TpmPlatform::open(tpm) {
                        Ok(t) => Ok(Platform::Tpm(t)),
                        Err(e) => {
                            on_fallback(&Error::TpmUnsupported(format!(
                                "{snp}; {TPM_DEVICE} is present but unusable: {e}"
                            )));
                            Self::simulator(now)
                        }
                    }
                }
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

    /// The policy the worker's self-checks apply when none is given: AMD's
    /// roots on SEV-SNP, the test roots on the simulator, the AK's own CA
    /// on a TPM (the self-check proves the evidence is well-formed and
    /// bound; whom to trust is the verifier's policy). It accepts any
    /// measurement: a worker cannot pin its own launch from the inside.
    pub fn self_check_policy(&self) -> provenix_verifier::Policy {
        let mut policy = match self {
            Platform::Snp(_) => provenix_verifier::Policy::default(),
            #[cfg(feature = "tpm")]
            Platform::Tpm(t) => {
                // On Azure the AK is vouched for by the SNP report, which
                // AMD's roots (the default) authenticate.
                let mut policy = provenix_verifier::Policy::default();
                policy.tpm.roots.extend(t.ak_root().map(<[u8]>::to_vec));
                policy
            }
            Platform::Sim(_) => sim_policy(),
        };
        policy.measurements = provenix_verifier::Measurements::Any;
        policy
    }

    /// Bind the deployment settings a TPM worker already extended into
    /// [`SETTINGS_PCR`] when it opened: on SEV-SNP, the host must have
    /// launched the VM with HOST_DATA = SHA-256 of the settings, else the
    /// worker refuses to run with them. The simulator binds nothing.
    pub fn check_settings(&self, settings: &[u8]) -> Result<(), Error> {
        match self {
            Platform::Snp(_) => {
                let want = provenix_verifier::sha256(settings);
                let Evidence::Snp(evidence) = self.evidence(&[0; 64], 0)? else {
                    return Err(Error::GuestResponse("SEV-SNP gave other evidence".into()));
                };
                let report =
                    provenix_firmware::snp::AttestationReport::from_bytes(&evidence.report)?;
                if report.host_data() != want.as_ref() {
                    return Err(Error::GuestResponse(format!(
                        "HOST_DATA is {}, the settings' SHA-256 is {}: launch the VM with \
                         host-data set to the settings' hash",
                        hex::encode(report.host_data()),
                        hex::encode(want)
                    )));
                }
                Ok(())
            }
            #[cfg(feature = "tpm")]
            Platform::Tpm(_) => Ok(()),
            Platform::Sim(_) => Ok(()),
        }
    }

    /// Whether this is the simulator.
    pub fn is_simulated(&self) -> bool {
        matches!(self, Platform::Sim(_))
    }

    /// Ask for evidence carrying `report_data` (SNP: at VMPL `vmpl`).
    pub fn evidence(&self, report_data: &[u8; 64], vmpl: u32) -> Result<Evidence, Error> {
        match self {
            Platform::Snp(interface) => {
                let raw = interface.request(report_data, vmpl, true)?;
                Ok(Evidence::Snp(SnpEvidence {
                    report: raw.report,
                    cert_table: raw.cert_table.filter(|t| !t.is_empty()),
                    vek: None,
                }))
            }
            #[cfg(feature = "tpm")]
            Platform::Tpm(t) => t.evidence(report_data),
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
                Ok(Evidence::Snp(SnpEvidence {
                    report: report.to_vec(),
                    cert_table: Some(sim.cert_table()?),
                    vek: None,
                }))
            }
        }
    }
}

/// A policy trusting the simulator's test roots and nothing else, and
/// pinning the simulator's launch measurement: what the worker's
/// self-checks apply on the simulator when no policy is given.
// Field by field, as a policy file would set them.
#[allow(clippy::field_reassign_with_default)]
pub fn sim_policy() -> provenix_verifier::Policy {
    let mut policy = provenix_verifier::Policy::default();
    policy.trust_amd_roots = false;
    policy.snp.measurements = Some(vec![provenix_verifier::Hex(
        provenix_firmware::sim::SIM_MEASUREMENT,
    )]);
    for (product, sha256) in provenix_firmware::sim::sim_ark_fingerprints() {
        policy.roots.push(provenix_verifier::RootPin {
            name: "provenix simulator (TEST ROOT)".into(),
            product,
            sha256: provenix_verifier::Hex(sha256),
        });
    }
    policy
}
#[cfg(feature = "tpm")]
mod tpm {
    //! The TPM platforms. A tss-esapi context cannot move between threads,
    //! so one thread owns the TPM and answers evidence requests over a
    //! channel; the platform itself is then shared like the others.

    use std::fmt;
    use std::path::Path;
    use std::sync::mpsc;

    use provenix_firmware::Error;
    use provenix_firmware::tpm::device::{AZURE_AK_HANDLE, AkKind, Key, Tpm, read_event_log};
    use provenix_firmware::tpm::events::{PROVENIX_SETTINGS_TAG, PROVENIX_SETTINGS_TEXT};
    use provenix_firmware::tpm::hcl::HCL_REPORT_NV_INDEX;
    use provenix_firmware::tpm::{Event, EventType};
    use provenix_verifier::{
        AzureEvidence, Evidence, PcrValue, TpmEvidence, certificates_from_pem_or_der,
    };

    use super::{AkChoice, TpmOptions};

    /// The PCRs a quote covers: the boot chain, firmware (0-7), the
    /// Linux EFI stub's initrd and command line (9), and 8 for boot
    /// loaders that use it.
    /// And systemd-stub's UKI sections (11), so the log's events for them
    /// are vouched for by the quote, and the deployment settings
    /// ([`SETTINGS_PCR`]).
    const BOOT_PCRS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, super::SETTINGS_PCR];

    /// `--ak-cert nv`: the cloud's AK certificate from NV.
    const AK_CERT_FROM_NV: &str = "nv";

    type Reply = mpsc::Sender<Result<Evidence, Error>>;

    /// Where the AK comes from and what vouches for it.
    enum Source {
        /// Our AK template, certified by the operator's CA (`--ak-cert`).
        Enrolled(Vec<Vec<u8>>),
        /// The cloud's AK and NV certificate, with these issuers.
        Cloud(Vec<Vec<u8>>),
        /// Azure's AK at 0x81000003, vouched for by the HCL report, whose
        /// SNP report this VCEK (and its ASK, ARK) signed.
        Azure(Vec<Vec<u8>>),
    }

    /// A TPM with a trusted attestation key, served by its own thread.
    pub struct TpmPlatform {
        // `None` only while dropping: closing it ends the thread.
        requests: Option<mpsc::Sender<([u8; 32], Reply)>>,
        thread: Option<std::thread::JoinHandle<()>>,
        description: String,
        ak_root: Option<Vec<u8>>,
    }

    impl Drop for TpmPlatform {
        /// Close the channel and wait for the thread, so the TPM's
        /// transient objects are flushed before the caller goes on (a TPM
        /// without a resource manager has three slots).
        fn drop(&mut self) {
            drop(self.requests.take());
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    impl fmt::Display for TpmPlatform {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.description)
        }
    }

    fn certificates(path: &Path, what: &'static str) -> Result<Vec<Vec<u8>>, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            op: what,
            path: path.display().to_string(),
            source,
        })?;
        certificates_from_pem_or_der(&bytes)
            .map_err(|e| Error::TpmUnsupported(format!("{}: {e}", path.display())))
    }

    impl TpmPlatform {
        /// Open the TPM with an AK certified by `--ak-cert`, or, without
        /// it or with `--ak-cert nv`, with the cloud's AK and NV
        /// certificate.
        pub fn open(options: &TpmOptions) -> Result<TpmPlatform, Error> {
            let source = match &options.ak_cert {
                Some(path) if path.as_os_str() != AK_CERT_FROM_NV => {
                    Source::Enrolled(certificates(path, "read the AK certificate")?)
                }
                _ => Source::Cloud(match &options.ak_chain {
                    Some(path) => certificates(path, "read the AK certificate's issuers")?,
                    None => Vec::new(),
                }),
            };
            let ak_root = match &source {
                Source::Enrolled(chain) | Source::Cloud(chain) => chain.last().cloned(),
                Source::Azure(_) => None,
            };
            let what = match &source {
                Source::Enrolled(_) => format!("{:?} attestation key", options.ak_kind),
                _ => "the cloud's attestation key (NV certificate)".into(),
            };
            Self::start(options, source, what, ak_root)
        }

        /// Open an Azure CVM's vTPM: the HCL report and the AK the
        /// paravisor made, with the VCEK of `--azure-vcek`.
        pub fn open_azure(options: &TpmOptions) -> Result<TpmPlatform, Error> {
            let vcek = match &options.azure_vcek {
                Some(path) => certificates(path, "read the VCEK")?,
                None => Vec::new(),
            };
            let what = "Azure CVM HCL report and AK".to_owned();
            Self::start(options, Source::Azure(vcek), what, None)
        }

        fn start(
            options: &TpmOptions,
            source: Source,
            what: String,
            ak_root: Option<Vec<u8>>,
        ) -> Result<TpmPlatform, Error> {
            let options = options.clone();
            let tcti = options
                .tpm_tcti
                .clone()
                .unwrap_or_else(|| "device:/dev/tpmrm0".into());
            let description = format!("TPM via {tcti}, {what}");
            let (requests, inbox) = mpsc::channel::<([u8; 32], Reply)>();
            let (ready, started) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("tpm".into())
                .spawn(move || serve(&options, source, &ready, &inbox))
                .map_err(|source| Error::Io {
                    op: "start the TPM thread",
                    path: tcti.clone(),
                    source,
                })?;
            started
                .recv()
                .map_err(|_| Error::TpmUnsupported("the TPM thread stopped".into()))??;
            Ok(TpmPlatform {
                requests: Some(requests),
                thread: Some(thread),
                description,
                ak_root,
            })
        }

        /// The last certificate of the AK's chain: its CA.
        pub fn ak_root(&self) -> Option<&[u8]> {
            self.ak_root.as_deref()
        }

        /// Quote the boot PCRs with `binding`'s qualifying data.
        pub fn evidence(&self, binding: &[u8; 64]) -> Result<Evidence, Error> {
            let stopped = || Error::TpmUnsupported("the TPM thread stopped".into());
            let (reply, answer) = mpsc::channel();
            self.requests
                .as_ref()
                .ok_or_else(stopped)?
                .send((provenix_verifier::tpm_qualifying_data(binding), reply))
                .map_err(|_| stopped())?;
            answer.recv().map_err(|_| stopped())?
        }
    }

    /// The AK of `source` and, for a cloud AK, its chain (NV certificate
    /// first).
    fn load_ak(
        tpm: &mut Tpm,
        options: &TpmOptions,
        source: &Source,
    ) -> Result<(Key, Vec<Vec<u8>>), Error> {
        match source {
            Source::Enrolled(chain) => {
                let kind = match options.ak_kind {
                    AkChoice::Ecc => AkKind::EccP256,
                    AkChoice::Rsa => AkKind::Rsa2048,
                };
                Ok((tpm.attestation_key(kind, options.ak_handle)?, chain.clone()))
            }
            Source::Cloud(issuers) => {
                let cloud = tpm.cloud_attestation_key()?.ok_or_else(|| {
                    Error::TpmUnsupported(
                        "no --ak-cert, and no cloud AK certificate in NV (GCP 0x01c10000, \
                         0x01c10002; Azure 0x01c101d0): a verifier could not trust this TPM's quotes"
                            .into(),
                    )
                })?;
                let mut chain = vec![cloud.certificate];
                chain.extend(issuers.iter().cloned());
                Ok((cloud.key, chain))
            }
            Source::Azure(_) => Ok((tpm.persistent_key(AZURE_AK_HANDLE)?, Vec::new())),
        }
    }

    /// The TPM thread: open, load the AK, then answer until the platform
    /// is dropped.
    fn serve(
        options: &TpmOptions,
        source: Source,
        ready: &mpsc::Sender<Result<(), Error>>,
        inbox: &mpsc::Receiver<([u8; 32], Reply)>,
    ) {
        let opened = Tpm::open(options.tpm_tcti.as_deref()).and_then(|mut tpm| {
            // The settings' event, appended to every copy of the firmware's
            // log the worker ships, so that the log replays to the quote.
            let settings_event = match &options.settings {
                Some(settings) => Some(extend_settings(&mut tpm, settings)?),
                None => None,
            };
            let (ak, chain) = load_ak(&mut tpm, options, &source)?;
            if let Source::Azure(_) = source {
                // Fail at start, not at the first quote, off Azure.
                hcl_report(&mut tpm)?;
            }
            Ok((tpm, ak, chain, settings_event))
        });
        let (mut tpm, ak, ak_chain, settings_event) = match opened {
            Ok(t) => {
                let _ = ready.send(Ok(()));
                t
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        for (qualifying, reply) in inbox {
            let evidence = tpm.quote(&ak, &qualifying, &BOOT_PCRS).and_then(|quote| {
                let mut event_log = read_event_log(options.event_log.as_deref())?;
                event_log.extend(settings_event.iter().flatten());
                Ok(match &source {
                    Source::Azure(vcek) => {
                        let (vek, vek_chain) = match vcek.split_first() {
                            Some((vek, chain)) => (Some(vek.clone()), chain.to_vec()),
                            None => (None, Vec::new()),
                        };
                        Evidence::Azure(AzureEvidence {
                            // Read per quote: the paravisor refreshes it
                            // when the guest writes NV 0x01400002.
                            hcl_report: hcl_report(&mut tpm)?,
                            vek,
                            vek_chain,
                            ak_public: ak.public().to_vec(),
                            attest: quote.attest,
                            signature: quote.signature,
                            pcrs: pcr_values(quote.pcrs),
                            event_log,
                        })
                    }
                    _ => Evidence::Tpm(TpmEvidence {
                        attest: quote.attest,
                        signature: quote.signature,
                        ak_public: ak.public().to_vec(),
                        ak_chain: ak_chain.clone(),
                        pcrs: pcr_values(quote.pcrs),
                        event_log,
                    }),
                })
            });
            let _ = reply.send(evidence);
        }
    }

    /// Extend the settings into [`super::SETTINGS_PCR`] of every active
    /// bank, each with its own hash of them: the `TCG_PCR_EVENT2` that
    /// records it (EV_EVENT_TAG, [`PROVENIX_SETTINGS_TAG`]).
    fn extend_settings(tpm: &mut Tpm, settings: &[u8]) -> Result<Vec<u8>, Error> {
        let mut digests = Vec::new();
        for bank in tpm.pcr_banks()? {
            let digest = provenix_verifier::tpm_digest(bank, settings);
            tpm.pcr_extend(super::SETTINGS_PCR, bank, &digest)?;
            digests.push((bank, digest));
        }
        let mut data = PROVENIX_SETTINGS_TAG.to_le_bytes().to_vec();
        data.extend_from_slice(
            &u32::try_from(PROVENIX_SETTINGS_TEXT.len())
                .unwrap_or(0)
                .to_le_bytes(),
        );
        data.extend_from_slice(PROVENIX_SETTINGS_TEXT);
        Ok(Event {
            index: 0,
            offset: 0,
            pcr: u32::from(super::SETTINGS_PCR),
            event_type: EventType::EVENT_TAG,
            digests,
            data,
        }
        .to_event2())
    }

    fn hcl_report(tpm: &mut Tpm) -> Result<Vec<u8>, Error> {
        tpm.nv_read(HCL_REPORT_NV_INDEX)?.ok_or_else(|| {
            Error::TpmUnsupported(format!(
                "no HCL report: vTPM NV index {HCL_REPORT_NV_INDEX:#010x} is not defined (not an Azure CVM?)"
            ))
        })
    }

    fn pcr_values(pcrs: Vec<provenix_firmware::tpm::device::PcrValue>) -> Vec<PcrValue> {
        pcrs.into_iter()
            .map(|p| PcrValue {
                bank: p.bank.id(),
                index: p.index,
                value: p.value,
            })
            .collect()
    }
}
