//! `provenix measure snp`: the launch digest of an SEV, SEV-ES or SEV-SNP
//! guest from its boot artifacts.
//!
//! Options, their meaning, the output line and the exit status follow the
//! reference tool `sev-snp-measure` 0.0.13: exit 0 with the digest on
//! stdout; 1 when the computation refuses the inputs (a file missing, a
//! firmware without what the mode needs); 2 on a usage error. `--json`
//! prints every intermediate value instead.
//!
//! Where the reference tool's argument handling has quirks, they are kept:
//! `--append ""` is no command line, `--kernel ""` is no kernel, a zero
//! `--vcpu-sig` or `--vcpu-family` counts as not given, `snp:ovmf-hash`
//! ignores every other option, long options may be abbreviated and the last
//! of a repeated option wins. Where it would crash or silently drop an
//! input, this command refuses with a usage error instead (see
//! `SnpArgs::usage`).

// The doc comments of the argument structs are clap's help text, printed as
// written ("vmsa<N>.bin"), not rendered HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::builder::PossibleValuesParser;
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Subcommand};
use provenix_firmware::tpm::{EventLog, HashAlg};
use provenix_measurements::Error as MeasureError;
use provenix_measurements::snp::{
    self, DEFAULT_GUEST_FEATURES, DirectBoot, Ovmf, PAGE_SIZE, SnpInputs, SvsmInputs, VCPU_TYPES,
    VmmType,
};
use serde_json::{Value, json};

/// What to measure.
#[derive(Subcommand)]
pub(crate) enum MeasureCommand {
    /// The launch digest of an SEV / SEV-ES / SEV-SNP guest, as
    /// sev-snp-measure 0.0.13 computes it. Exit 0 with the digest, 1 when
    /// the inputs are refused, 2 on a usage error.
    #[command(infer_long_args = true, args_override_self = true)]
    Snp(Box<SnpArgs>),
    /// Write a reference-value manifest (docs/reference-values.md): the
    /// expected measurements of an image, computed from a description of
    /// its artifacts and deployment shapes (TOML).
    Manifest {
        /// The image description; its paths are relative to it.
        #[arg(long)]
        description: PathBuf,
        /// The source commit (overrides the description's).
        #[arg(long)]
        commit: Option<String>,
        /// Where to write the manifest (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The TPM event digests a boot of these artifacts produces (PCR 4:
    /// the kernel's Authenticode digest as the firmware measures it; PCR 9:
    /// the Linux EFI stub's load options and initrd; PCR 11: a UKI's
    /// sections) and, with a golden log of the same firmware, the expected
    /// PCRs. Exit 0 with the values, 1 when the inputs are refused, 2 on a
    /// usage error.
    Tpm(Box<TpmArgs>),
    /// A user's check of an operator's image: compare the manifest the
    /// operator published with the image rebuilt from the same commit
    /// (`./run image`): each a manifest.json or an image directory, with
    /// the inputs.json beside it. Exit 0 when identical; 1 naming every
    /// reference value and every input that differs.
    Compare {
        /// The published manifest.json (or its directory).
        published: PathBuf,
        /// The rebuilt image directory (or its manifest.json).
        rebuilt: PathBuf,
    },
}

/// `provenix measure tpm`.
#[derive(Args)]
pub(crate) struct TpmArgs {
    /// The kernel (qemu-direct), or the UKI (uki).
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// The initrd.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// The command line: QEMU's -append (qemu-direct), or GRUB's `linux`
    /// line after the command, path included (disk).
    #[arg(long, value_name = "CMDLINE", allow_hyphen_values = true)]
    append: Option<String>,
    /// How the machine boots: QEMU direct kernel boot with OVMF, a UKI
    /// booted by the firmware, or a disk boot (shim, GRUB).
    #[arg(long, default_value = "qemu-direct", value_parser = PossibleValuesParser::new(["qemu-direct", "uki", "disk"]))]
    boot: String,
    /// disk: a boot application measured into PCR 4 before the kernel
    /// (shimx64.efi, grubx64.efi), in load order; repeat for each.
    #[arg(long = "efi-app", value_name = "PATH")]
    efi_apps: Vec<PathBuf>,
    /// qemu-direct: the QEMU machine type (the kernel digest depends on it).
    #[arg(long, default_value = "q35", value_parser = PossibleValuesParser::new(["q35", "pc"]))]
    machine: String,
    /// qemu-direct: guest RAM in MiB, QEMU's -m (the kernel digest depends
    /// on it).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    memory: u64,
    /// A golden event log of a boot of the same firmware: print the PCRs a
    /// boot of these artifacts replays to.
    #[arg(long, value_name = "LOG")]
    golden_log: Option<PathBuf>,
    /// Write the golden log with the computed events put in.
    #[arg(long, value_name = "PATH", requires = "golden_log")]
    out_log: Option<PathBuf>,
    /// The PCR bank to print.
    #[arg(long, default_value = "sha256", value_parser = PossibleValuesParser::new(["sha1", "sha256", "sha384", "sha512"]))]
    bank: String,
    /// Print JSON for machines.
    #[arg(long)]
    json: bool,
}

/// The options of `sev-snp-measure` 0.0.13, same names and meaning, and
/// `--json`.
#[derive(Args)]
pub(crate) struct SnpArgs {
    /// Print "Calculated <MODE> guest measurement: <digest>".
    #[arg(short, long)]
    verbose: bool,
    /// Guest mode.
    #[arg(long, value_parser = PossibleValuesParser::new(["sev", "seves", "snp", "snp:ovmf-hash", "snp:svsm"]))]
    mode: String,
    /// Number of guest vCPUs.
    #[arg(long, value_name = "N", value_parser = vcpu_count)]
    vcpus: Option<u32>,
    /// Type of guest vCPU (QEMU's CPU model name).
    #[arg(long, value_name = "CPUTYPE", value_parser = PossibleValuesParser::new(VCPU_TYPES.map(|t| t.name)))]
    vcpu_type: Option<String>,
    /// Guest vCPU signature value (CPUID Fn0000_0001_EAX); 0x.., 0o..,
    /// 0b.. or decimal.
    #[arg(long, value_name = "VALUE", value_parser = auto_base_u64)]
    vcpu_sig: Option<u64>,
    /// Guest vCPU family.
    #[arg(long, value_name = "FAMILY", value_parser = decimal_u64)]
    vcpu_family: Option<u64>,
    /// Guest vCPU model.
    #[arg(long, value_name = "MODEL", value_parser = decimal_u64)]
    vcpu_model: Option<u64>,
    /// Guest vCPU stepping.
    #[arg(long, value_name = "STEPPING", value_parser = decimal_u64)]
    vcpu_stepping: Option<u64>,
    /// Type of guest VMM (QEMU, ec2, gce).
    #[arg(long, value_name = "VMMTYPE", default_value = "QEMU")]
    vmm_type: String,
    /// OVMF file to calculate the hash from.
    #[arg(long, value_name = "PATH")]
    ovmf: OsString,
    /// Kernel file to calculate the hash from.
    #[arg(long, value_name = "PATH")]
    kernel: Option<OsString>,
    /// Initrd file to calculate the hash from (use with --kernel).
    #[arg(long, value_name = "PATH")]
    initrd: Option<OsString>,
    /// Kernel command line to calculate the hash from (use with --kernel).
    #[arg(long, value_name = "CMDLINE", allow_hyphen_values = true)]
    append: Option<String>,
    /// The guest features (SEV_FEATURES) of every VMSA; 0x.., 0o.., 0b..
    /// or decimal.
    #[arg(long, value_name = "VALUE", default_value = "0x1", value_parser = auto_base_u64)]
    guest_features: u64,
    /// Measurement output format.
    #[arg(long, default_value = "hex", value_parser = PossibleValuesParser::new(["hex", "base64"]))]
    output_format: String,
    /// Precalculated hash of the OVMF binary (hex string, 48 bytes).
    #[arg(long, value_name = "HASH")]
    snp_ovmf_hash: Option<String>,
    /// Write the measured VMSAs to vmsa<N>.bin (seves, snp, and snp:svsm
    /// modes only).
    #[arg(long)]
    dump_vmsa: bool,
    /// snp:svsm mode: the COCONUT-SVSM binary.
    #[arg(long, value_name = "PATH", help_heading = "snp:svsm mode")]
    svsm: Option<OsString>,
    /// snp:svsm mode: size of the OVMF_VARS file in bytes.
    #[arg(long, value_name = "SIZE", value_parser = decimal_u64, conflicts_with = "vars_file", help_heading = "snp:svsm mode")]
    vars_size: Option<u64>,
    /// snp:svsm mode: the OVMF_VARS file.
    #[arg(long, value_name = "PATH", help_heading = "snp:svsm mode")]
    vars_file: Option<OsString>,
    /// Print JSON for machines: the firmware hash, the hashes table and the
    /// kernel, initrd and command-line digests, the digest after every
    /// metadata section and every VMSA, and the measurement (hex).
    #[arg(long)]
    json: bool,
}

/// The mode, as the reference tool names it in its verbose line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sev,
    SevEs,
    Snp,
    Svsm,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sev => "SEV",
            Mode::SevEs => "SEV_ES",
            Mode::Snp => "SEV_SNP",
            Mode::Svsm => "SEV_SNP_SVSM",
        }
    }
}

/// A usage error (exit 2) or a refusal of the inputs (exit 1).
enum Failure {
    Usage(String),
    Refused(anyhow::Error),
}

impl From<MeasureError> for Failure {
    fn from(e: MeasureError) -> Self {
        Failure::Refused(e.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Refused(e)
    }
}

/// Run a `measure` subcommand.
pub(crate) fn run(command: MeasureCommand) -> Result<ExitCode> {
    match command {
        MeasureCommand::Compare { published, rebuilt } => crate::compare::run(&published, &rebuilt),
        MeasureCommand::Snp(args) => match snp(&args) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(Failure::Usage(msg)) => {
                let mut cmd = crate::Cli::command().bin_name("provenix");
                cmd.build();
                let snp = cmd
                    .find_subcommand_mut("measure")
                    .and_then(|m| m.find_subcommand_mut("snp"))
                    .context("the measure snp command is missing")?;
                snp.error(ErrorKind::ArgumentConflict, msg).print()?;
                Ok(ExitCode::from(2))
            }
            Err(Failure::Refused(e)) => {
                eprintln!("provenix measure snp: error: {e:#}");
                Ok(ExitCode::from(1))
            }
        },
        MeasureCommand::Manifest {
            description,
            commit,
            out,
        } => {
            use provenix_measurements::manifest::{ImageDescription, describe_with};
            let desc = ImageDescription::read(&description)?;
            let base = description.parent().unwrap_or(Path::new("."));
            let manifest = describe_with(&desc, base, commit.as_deref(), Some(&replay_bytes))?;
            match out {
                Some(path) => std::fs::write(&path, manifest.to_json())
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{}", manifest.to_json()),
            }
            Ok(ExitCode::SUCCESS)
        }
        MeasureCommand::Tpm(args) => match tpm(&args) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("provenix measure tpm: error: {e:#}");
                Ok(ExitCode::from(1))
            }
        },
    }
}

/// Replay a log's bytes with the verifier's replay: every extended PCR of
/// every bank.
fn replay_bytes(log: &[u8]) -> Result<BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>, String> {
    let log = EventLog::parse(log).map_err(|e| e.to_string())?;
    let pcrs = provenix_verifier::tpm::replay(&log);
    Ok(pcrs
        .banks()
        .map(|alg| {
            let values = pcrs
                .extended()
                .filter_map(|i| Some((i, pcrs.get(alg, i)?.to_vec())))
                .collect();
            (alg, values)
        })
        .collect())
}

fn tpm(a: &TpmArgs) -> Result<()> {
    use provenix_measurements::tpm::{self, Boot, Machine, QemuVm};
    let read = |p: &Path| crate::input::read(p, crate::input::BOOT_ARTIFACT);
    let bank = HashAlg::from_name(&a.bank).context("unknown bank")?;
    let golden = match &a.golden_log {
        Some(p) => Some(
            EventLog::parse(&read(p)?).with_context(|| format!("golden log {}", p.display()))?,
        ),
        None => None,
    };
    // Digests in the bank asked for and in every bank of the golden log.
    let mut banks = vec![bank];
    for &b in golden.iter().flat_map(|g| g.banks()) {
        if !banks.contains(&b) {
            banks.push(b);
        }
    }
    let kernel = read(&a.kernel)?;
    let initrd = a.initrd.as_deref().map(read).transpose()?;
    let apps = a
        .efi_apps
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let cmdline = a.append.clone().unwrap_or_default();
    let vm = QemuVm {
        machine: Machine::from_name(&a.machine).context("unknown machine")?,
        memory_mib: a.memory,
    };
    let boot = match a.boot.as_str() {
        "uki" => Boot::Uki { image: &kernel },
        "disk" => Boot::Disk {
            applications: apps
                .iter()
                .map(|(n, b)| (n.clone(), b.as_slice()))
                .chain([(a.kernel.display().to_string(), kernel.as_slice())])
                .collect(),
            cmdline: a.append.as_deref().map(str::as_bytes),
            initrd: initrd.as_deref(),
        },
        _ => Boot::QemuDirect {
            vm,
            kernel: &kernel,
            initrd: initrd.as_deref(),
            cmdline: cmdline.as_bytes(),
        },
    };
    let expected = tpm::expected_events(&boot, &banks)?;
    let pcrs = match &golden {
        Some(g) => {
            let log = tpm::substitute(g, &expected)?;
            if let Some(out) = &a.out_log {
                std::fs::write(out, &log)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            let all = replay_bytes(&log).map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(
                all.get(&bank)
                    .cloned()
                    .with_context(|| format!("the golden log has no {bank} bank"))?,
            )
        }
        None => None,
    };
    let events: Vec<Value> = expected
        .iter()
        .map(|e| {
            json!({
                "pcr": e.pcr,
                "event_type": e.event_type.name(),
                "source": e.source.to_string(),
                "digest": e.digest(bank).map(hex::encode),
            })
        })
        .collect();
    if a.json {
        let mut v = json!({ "boot": a.boot, "bank": a.bank, "events": events });
        if a.boot == "qemu-direct" {
            v["qemu"] = json!({ "machine": a.machine, "memory_mib": a.memory });
        }
        if let Some(p) = &pcrs {
            v["pcrs"] = json!(
                p.iter()
                    .map(|(i, d)| (i.to_string(), hex::encode(d)))
                    .collect::<BTreeMap<_, _>>()
            );
        }
        print(pretty(&v).map_err(failure)?).map_err(failure)?;
        return Ok(());
    }
    let mut text = String::new();
    for e in &expected {
        text.push_str(&format!(
            "PCR {:<2} {:<32} {:<24} {}\n",
            e.pcr,
            e.event_type.name().unwrap_or("?"),
            e.source.to_string(),
            e.digest(bank).map(hex::encode).unwrap_or_default()
        ));
    }
    if let Some(p) = &pcrs {
        for (i, d) in p {
            text.push_str(&format!("{bank}:{i:<2} {}\n", hex::encode(d)));
        }
    }
    print(text.trim_end().to_string()).map_err(failure)?;
    Ok(())
}

fn failure(f: Failure) -> anyhow::Error {
    match f {
        Failure::Usage(m) => anyhow::anyhow!(m),
        Failure::Refused(e) => e,
    }
}

/// The direct-boot paths after the reference tool's "empty is absent".
struct Boot {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    append: Option<String>,
}

impl Boot {
    fn as_direct_boot(&self) -> DirectBoot<'_> {
        DirectBoot {
            kernel: &self.kernel,
            initrd: self.initrd.as_deref(),
            cmdline: self.append.as_deref(),
        }
    }
}

fn nonempty(v: &Option<OsString>) -> Option<PathBuf> {
    v.as_ref().filter(|s| !s.is_empty()).map(PathBuf::from)
}

impl SnpArgs {
    /// The reference tool's argument checks, in its order, and ours where it
    /// would crash or drop an input silently (marked "not in the
    /// reference").
    fn usage(&self, mode: Mode) -> Result<(Option<Boot>, u32, VmmType), Failure> {
        let usage = |m: &str| Err(Failure::Usage(m.to_string()));
        let initrd = nonempty(&self.initrd);
        let append = self.append.clone().filter(|a| !a.is_empty());
        if initrd.is_some() && self.kernel.is_none() {
            return usage("--kernel required when using --initrd");
        }
        if append.is_some() && self.kernel.is_none() {
            return usage("--kernel required when using --append");
        }
        let boot = match nonempty(&self.kernel) {
            Some(kernel) => Some(Boot {
                kernel,
                initrd,
                append,
            }),
            // Not in the reference: it would measure no kernel and drop
            // the initrd and command line without a word.
            None if initrd.is_some() || append.is_some() => {
                return usage("--kernel is empty, but --initrd or --append is given");
            }
            None => None,
        };
        if mode != Mode::Sev && self.vcpus.is_none() {
            return usage(&format!("missing --vcpus N in guest mode '{}'", self.mode));
        }
        let Ok(vmm) = self.vmm_type.parse::<VmmType>() else {
            return usage(&format!("unknown VMM type '{}'", self.vmm_type));
        };
        let vcpu_sig = self.vcpu_sig(mode, vmm)?;
        if mode == Mode::Svsm {
            if self.svsm.is_none() {
                // Not in the reference: it fails opening `None`.
                return usage("snp:svsm mode requires --svsm");
            }
            if boot.is_some() {
                // Not in the reference: it ignores them in this mode.
                return usage("--kernel, --initrd and --append are not measured in snp:svsm mode");
            }
            if self.vars_file.is_none() && self.vars_size.unwrap_or(0) == 0 {
                return usage("snp:svsm mode requires --vars-size or --vars-file");
            }
        }
        if self.dump_vmsa && mode == Mode::Sev {
            return usage("--dump-vmsa is not available in the selected mode");
        }
        Ok((boot, vcpu_sig, vmm))
    }

    /// The reference's precedence: family, then signature, then type; a
    /// zero family or signature counts as absent. EC2 and GCE do not use
    /// the signature, so none is needed there.
    fn vcpu_sig(&self, mode: Mode, vmm: VmmType) -> Result<u32, Failure> {
        if mode == Mode::Sev {
            return Ok(0);
        }
        if let Some(family) = self.vcpu_family.filter(|f| *f != 0) {
            let (Some(model), Some(stepping)) = (self.vcpu_model, self.vcpu_stepping) else {
                // Not in the reference: it crashes (TypeError).
                return Err(Failure::Usage(
                    "--vcpu-family needs --vcpu-model and --vcpu-stepping".into(),
                ));
            };
            return Ok(snp::cpu_signature(family, model, stepping));
        }
        if let Some(sig) = self.vcpu_sig.filter(|s| *s != 0) {
            // CPUID Fn0000_0001_EAX is 32 bits wide.
            return u32::try_from(sig)
                .map_err(|_| Failure::Usage(format!("--vcpu-sig {sig:#x} is wider than 32 bits")));
        }
        if let Some(name) = &self.vcpu_type {
            return snp::vcpu_type_signature(name)
                .ok_or_else(|| Failure::Usage(format!("unknown vCPU type {name}")));
        }
        if vmm == VmmType::Qemu {
            return Err(Failure::Usage(format!(
                "missing --vcpu-type or --vcpu-sig or --vcpu-family in guest mode '{}'",
                self.mode
            )));
        }
        Ok(0)
    }
}

fn snp(a: &SnpArgs) -> Result<(), Failure> {
    let mode = match a.mode.as_str() {
        // Checked first and alone, as the reference does: every other
        // option is ignored.
        "snp:ovmf-hash" => {
            let hash = snp::ovmf_hash(&load(&a.ovmf)?)?;
            return print(if a.json {
                pretty(&json!({ "mode": a.mode, "firmware_hash": hex::encode(hash) }))?
            } else {
                hex::encode(hash)
            });
        }
        "sev" => Mode::Sev,
        "seves" => Mode::SevEs,
        "snp" => Mode::Snp,
        _ => Mode::Svsm,
    };
    let (boot, vcpu_sig, vmm) = a.usage(mode)?;
    let vcpus = a.vcpus.unwrap_or(0);
    let direct_boot = boot.as_ref().map(Boot::as_direct_boot);

    // What the reference refuses only once it computes (exit 1).
    let ovmf_hash = match a.snp_ovmf_hash.as_deref().filter(|h| !h.is_empty()) {
        Some(_) if mode != Mode::Snp => {
            return Err(anyhow::anyhow!("--snp-ovmf-hash only works with --mode snp").into());
        }
        Some(h) => Some(from_hex_48(h)?),
        None => None,
    };
    let ovmf = load(&a.ovmf)?;
    let mut json = json!({
        "mode": a.mode,
        "vmm_type": vmm.to_string(),
        "vcpus": vcpus,
        "vcpu_sig": format!("{vcpu_sig:#x}"),
    });
    // Each mode: the digest, its JSON fields, and the VMSA pages to dump.
    let digest = match mode {
        Mode::Sev | Mode::SevEs => {
            let m = if mode == Mode::Sev {
                snp::sev_launch_digest(&ovmf, direct_boot.as_ref())?
            } else {
                snp::seves_launch_digest(&ovmf, direct_boot.as_ref(), vcpus, vcpu_sig, vmm)?
            };
            merge(&mut json, serde_json::to_value(&m).context("JSON")?);
            dump_vmsas(a.dump_vmsa, vcpus, |i| m.vmsa_page(i))?;
            m.digest.to_vec()
        }
        Mode::Snp => {
            let m = snp::launch_digest(&SnpInputs {
                ovmf: &ovmf,
                direct_boot,
                vcpus,
                vcpu_sig,
                vmm,
                guest_features: a.guest_features,
                ovmf_hash,
            })?;
            json["guest_features"] = json!(format!("{:#x}", a.guest_features));
            merge(&mut json, serde_json::to_value(&m).context("JSON")?);
            dump_vmsas(a.dump_vmsa, vcpus, |i| m.vmsa_page(i))?;
            m.digest.to_vec()
        }
        Mode::Svsm => {
            let svsm_path = a.svsm.clone().unwrap_or_default();
            let vars_size = match &a.vars_file {
                Some(f) => std::fs::metadata(f)
                    .with_context(|| format!("cannot stat {}", Path::new(f).display()))?
                    .len(),
                None => a.vars_size.unwrap_or(0),
            };
            let m = snp::svsm_launch_digest(&SvsmInputs {
                ovmf: &ovmf,
                svsm: &load(&svsm_path)?,
                vars_size,
                vcpus,
                vcpu_sig,
                vmm,
            })?;
            json["guest_features"] = json!(format!("{DEFAULT_GUEST_FEATURES:#x}"));
            merge(&mut json, serde_json::to_value(&m).context("JSON")?);
            dump_vmsas(a.dump_vmsa, vcpus, |i| m.vmsa_page(i))?;
            m.digest.to_vec()
        }
    };
    if a.json {
        json["measurement"] = json!(hex::encode(&digest));
        return print(pretty(&json)?);
    }
    let text = match a.output_format.as_str() {
        "base64" => base64(&digest),
        _ => hex::encode(&digest),
    };
    if a.verbose {
        print(format!(
            "Calculated {} guest measurement: {text}",
            mode.name()
        ))
    } else {
        print(text)
    }
}

/// `--dump-vmsa`: write each vCPU's VMSA page to vmsa<N>.bin in the
/// working directory, as the reference does.
fn dump_vmsas<'m>(
    enabled: bool,
    vcpus: u32,
    page: impl Fn(u32) -> Option<&'m [u8; PAGE_SIZE]>,
) -> Result<(), Failure> {
    if enabled {
        for i in 0..vcpus {
            let Some(bytes) = page(i) else { break };
            let name = format!("vmsa{i}.bin");
            std::fs::write(&name, bytes).with_context(|| format!("cannot write {name}"))?;
        }
    }
    Ok(())
}

fn print(line: String) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(())
}

fn pretty(v: &Value) -> Result<String, Failure> {
    Ok(serde_json::to_string_pretty(v).context("JSON")?)
}

/// Add the fields of `extra` (an object) to `json` (an object). Its
/// `digest` is left out: the output names it `measurement`.
fn merge(json: &mut Value, extra: Value) {
    if let (Some(dst), Value::Object(src)) = (json.as_object_mut(), extra) {
        dst.extend(src.into_iter().filter(|(k, _)| k != "digest"));
    }
}

fn load(path: &OsString) -> Result<Ovmf, Failure> {
    Ok(Ovmf::read(Path::new(path))?)
}

/// Python's `bytes.fromhex`: pairs of hex digits, ASCII whitespace allowed
/// between pairs; then exactly 48 bytes, a SHA-384 digest.
fn from_hex_48(s: &str) -> Result<[u8; 48], Failure> {
    let bad = || {
        Failure::Refused(anyhow::anyhow!(
            "--snp-ovmf-hash: {s:?} is not 48 bytes of hex"
        ))
    };
    let mut out = Vec::with_capacity(48);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let hi = c.to_digit(16).ok_or_else(bad)?;
        let lo = chars.next().and_then(|c| c.to_digit(16)).ok_or_else(bad)?;
        out.push(u8::try_from(hi * 16 + lo).map_err(|_| bad())?);
    }
    <[u8; 48]>::try_from(out).map_err(|_| bad())
}

/// Standard base64 with padding (RFC 4648, section 4), as Python's
/// `base64.b64encode`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |v: u32| char::from(ALPHABET[usize::try_from(v & 63).unwrap_or(0)]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// Python's `int(s, 0)`: optional sign, 0x/0o/0b prefix or a decimal
/// without leading zeros, `_` between digits, surrounding whitespace.
/// Negative values are refused: nothing here can be negative.
fn auto_base_u64(s: &str) -> Result<u64, String> {
    py_int(s, true)
}

/// Python's `int(s)`: decimal, leading zeros allowed.
fn decimal_u64(s: &str) -> Result<u64, String> {
    py_int(s, false)
}

fn vcpu_count(s: &str) -> Result<u32, String> {
    let n = py_int(s, false)?;
    u32::try_from(n).map_err(|_| format!("{n} vCPUs is more than a VM can have"))
}

fn py_int(s: &str, auto_base: bool) -> Result<u64, String> {
    let invalid = || format!("invalid int value: {s:?}");
    let t = s.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = if !auto_base {
        (10, lower.as_str())
    } else if let Some(d) = lower.strip_prefix("0x") {
        (16, d.strip_prefix('_').unwrap_or(d))
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.strip_prefix('_').unwrap_or(d))
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.strip_prefix('_').unwrap_or(d))
    } else {
        // Base 0 refuses a decimal with a leading zero, unless all zeros.
        let plain = lower.replace('_', "");
        if plain.len() > 1 && plain.starts_with('0') && plain.bytes().any(|b| b != b'0') {
            return Err(invalid());
        }
        (10, lower.as_str())
    };
    // `_` only between two digits.
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(invalid());
    }
    let value = u64::from_str_radix(&digits.replace('_', ""), radix).map_err(|e| {
        if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
            format!("{s:?} does not fit in 64 bits")
        } else {
            invalid()
        }
    })?;
    if negative && value != 0 {
        return Err(format!("{s:?} is negative"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_int_parsing() {
        for (s, v) in [
            ("0x800f12", 0x80_0f12),
            ("0X800F12", 0x80_0f12),
            (" 0x1 ", 1),
            ("8392466", 8_392_466),
            ("0", 0),
            ("000", 0),
            ("0b101", 5),
            ("0o17", 15),
            ("1_000", 1000),
            ("0x_ff", 255),
            ("+7", 7),
            ("-0", 0),
            ("0xffffffffffffffff", u64::MAX),
        ] {
            assert_eq!(auto_base_u64(s), Ok(v), "{s:?}");
        }
        for s in [
            "",
            "0x",
            "010",
            "1__0",
            "_1",
            "1_",
            "0x1g",
            "-1",
            "1.0",
            "0x1_0000_0000_0000_0000",
        ] {
            assert!(auto_base_u64(s).is_err(), "{s:?}");
        }
        assert_eq!(decimal_u64("010"), Ok(10));
        assert!(decimal_u64("0x10").is_err());
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, out) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input), out);
        }
    }

    #[test]
    fn fromhex_like_python() {
        let hex = "ab".repeat(48);
        assert!(from_hex_48(&hex).is_ok());
        let spaced: String = hex
            .as_bytes()
            .chunks(2)
            .map(|c| format!("{} ", std::str::from_utf8(c).unwrap()))
            .collect();
        assert!(from_hex_48(&spaced).is_ok());
        assert!(from_hex_48(&hex[1..]).is_err());
        assert!(from_hex_48(&"ab".repeat(47)).is_err());
        assert!(from_hex_48("a b").is_err());
    }
}
