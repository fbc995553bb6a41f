//! Appraisal: does authentic evidence meet the policy?
//!
//! A policy is a TOML file (documented in `docs/policy.md`). Every check
//! runs and every failure is reported with the field, what was found and
//! what was expected; success is a [`VerifiedReport`], which only
//! [`Policy::appraise`] makes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use provenix_firmware::snp::{AttestationReport, GuestPolicy, Product, TcbVersion};
use provenix_measurements::manifest::{Manifest, SnpReference};
use serde::Deserialize;

use crate::anchors::TrustAnchors;
use crate::authenticate::AuthenticatedReport;
use crate::error::{CertRole, Error, Finding, Rejection};

/// Largest policy file: hand-written TOML, a few KiB; a list of every
/// chip ID of a fleet still fits.
pub const MAX_POLICY_SIZE: usize = 1 << 20;
/// Largest CA file `tpm.ak_roots` names: a PEM bundle of a few CAs.
const MAX_CA_FILE: usize = 512 << 10;

/// A reference-value manifest file the policy names.
fn read_manifest(path: &Path) -> Result<Manifest, Error> {
    provenix_firmware::file::read_bounded_text(
        path,
        provenix_measurements::manifest::MAX_MANIFEST_SIZE,
    )
    .map_err(|e| Error::Policy(e.to_string()))
    .and_then(|text| {
        Manifest::from_json(&text).map_err(|e| Error::Policy(format!("{}: {e}", path.display())))
    })
}

/// A verification policy for SEV-SNP evidence. Absent fields do not
/// constrain, except where a secure default is stated.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Trust AMD's embedded roots (default true).
    #[serde(default = "yes")]
    pub trust_amd_roots: bool,
    /// Further roots, by the SHA-256 of the ARK's DER: how the simulator's
    /// root is admitted. Never implied.
    #[serde(default)]
    pub roots: Vec<RootPin>,
    /// SEV-SNP report checks.
    #[serde(default)]
    pub snp: SnpPolicy,
    /// TPM quote checks.
    #[serde(default)]
    pub tpm: TpmPolicy,
    /// How many distinct builders must agree on a subject (the decide
    /// phase, [`Policy::decide`]).
    #[serde(default)]
    pub threshold: Threshold,
    /// How fresh a log checkpoint must be, and what to do with one that is
    /// not proven consistent with what was seen before.
    #[serde(default)]
    pub checkpoint: CheckpointPolicy,
    /// Whether evidence is accepted only when the policy pins what it
    /// measured (default), or whatever software it ran (`"any"`).
    #[serde(default)]
    pub measurements: Measurements,
    /// Recursive verification: whether to decide on inputs too (the
    /// substituter's default), and the roots of the build graph.
    #[serde(default)]
    pub graph: GraphPolicy,
    /// The keys the policy file set (`"snp.max_vmpl"`, `"measurements"`),
    /// filled by [`Policy::from_toml`] and [`Policy::load`], so that a
    /// command can refuse a key it cannot apply
    /// ([`Policy::check_applicable`]).
    #[serde(skip)]
    pub keys: Vec<String>,
}

/// Whether appraisal requires the policy to pin the measured software.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Measurements {
    /// Fail closed: SEV-SNP evidence must match `snp.measurements` or
    /// `snp.reference_values`, TPM (and Azure vTPM) evidence
    /// `tpm.reference_values`. A policy that pins nothing accepts nothing.
    #[default]
    Pinned,
    /// Any measured software: authentic evidence is accepted whatever it
    /// ran, and every verdict says so. For trying things out only.
    Any,
}

impl Default for Policy {
    /// AMD's roots, no other; debug and migration agents forbidden.
    fn default() -> Self {
        Policy {
            trust_amd_roots: true,
            roots: Vec::new(),
            snp: SnpPolicy::default(),
            tpm: TpmPolicy::default(),
            threshold: Threshold::default(),
            checkpoint: CheckpointPolicy::default(),
            measurements: Measurements::Pinned,
            graph: GraphPolicy::default(),
            keys: Vec::new(),
        }
    }
}

/// The `[graph]` section: recursive verification over build traces
/// (docs/policy.md).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GraphPolicy {
    /// Decide recursively by default (`provenix substituter`;
    /// `provenix verify` asks with `--recursive`).
    #[serde(default)]
    pub recursive: bool,
    /// Store paths trusted without statements: the graph's roots (a
    /// bootstrap set).
    #[serde(default)]
    pub trusted_paths: std::collections::BTreeSet<String>,
    /// Plain Nix public keys (`name:base64`): a path a cache serves with a
    /// valid signature by one of them, stating the NAR hash a trace
    /// recorded, is a root.
    #[serde(default)]
    pub trusted_nix_keys: Vec<String>,
}

/// A further trusted root.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RootPin {
    /// A name for messages, e.g. "provenix simulator".
    pub name: String,
    /// The product the root anchors.
    pub product: Product,
    /// SHA-256 of the ARK's DER, hex.
    pub sha256: Hex<32>,
}

/// Checks on the report's fields.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnpPolicy {
    /// Allow POLICY.DEBUG (default false).
    #[serde(default)]
    pub allow_debug: bool,
    /// Allow POLICY.MIGRATE_MA (default false).
    #[serde(default)]
    pub allow_migrate_ma: bool,
    /// Allow POLICY.SMT (default true).
    #[serde(default = "yes")]
    pub allow_smt: bool,
    /// Require POLICY.SINGLE_SOCKET.
    #[serde(default)]
    pub require_single_socket: bool,
    /// Highest VMPL accepted (0 is the most privileged).
    pub max_vmpl: Option<u32>,
    /// Lowest firmware ABI (CURRENT_MAJOR.CURRENT_MINOR), e.g. "1.55".
    pub min_abi: Option<AbiVersion>,
    /// Lowest CURRENT_BUILD, checked when `min_abi` is met exactly.
    pub min_build: Option<u8>,
    /// Products accepted.
    pub products: Option<Vec<Product>>,
    /// Signing keys accepted: "VCEK", "VLEK".
    pub signers: Option<Vec<Signer>>,
    /// Lowest REPORTED_TCB per product, per component.
    #[serde(default)]
    pub min_tcb: BTreeMap<Product, MinTcb>,
    /// MEASUREMENT values accepted.
    pub measurements: Option<Vec<Hex<48>>>,
    /// HOST_DATA values accepted: one (`"<hex>"`), or a list, one per
    /// deployment's settings (docs/image.md).
    #[serde(default, deserialize_with = "one_or_more")]
    pub host_data: Option<Vec<Hex<32>>>,
    /// REPORT_DATA required.
    pub report_data: Option<Hex<64>>,
    /// ID_KEY_DIGEST values accepted.
    pub id_key_digests: Option<Vec<Hex<48>>>,
    /// AUTHOR_KEY_DIGEST values accepted (also requires AUTHOR_KEY_EN).
    pub author_key_digests: Option<Vec<Hex<48>>>,
    /// Lowest GUEST_SVN.
    pub min_guest_svn: Option<u32>,
    /// FAMILY_ID required.
    pub family_id: Option<Hex<16>>,
    /// IMAGE_ID required.
    pub image_id: Option<Hex<16>>,
    /// CHIP_ID values accepted (a VLEK report has a zero CHIP_ID).
    pub chip_ids: Option<Vec<Hex<64>>>,
    /// Reference-value manifests (docs/reference-values.md): MEASUREMENT
    /// must be one they list. Paths are relative to the policy file.
    #[serde(default)]
    pub reference_values: Vec<PathBuf>,
    /// Source commits accepted; with `reference_values`, only these
    /// commits' manifests count.
    pub accepted_commits: Option<Vec<String>>,
    /// The manifests `reference_values` names, once loaded.
    #[serde(skip)]
    pub manifests: Vec<Manifest>,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        SnpPolicy {
            allow_debug: false,
            allow_migrate_ma: false,
            allow_smt: true,
            require_single_socket: false,
            max_vmpl: None,
            min_abi: None,
            min_build: None,
            products: None,
            signers: None,
            min_tcb: BTreeMap::new(),
            measurements: None,
            host_data: None,
            report_data: None,
            id_key_digests: None,
            author_key_digests: None,
            min_guest_svn: None,
            family_id: None,
            image_id: None,
            chip_ids: None,
            reference_values: Vec::new(),
            accepted_commits: None,
            manifests: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// The `[tpm]` section: which attestation keys are trusted and what the
/// measured boot must be. Without `ak_roots`, no TPM evidence is accepted.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TpmPolicy {
    /// CA certificates (PEM or DER files, relative to the policy file) that
    /// certify attestation keys: an operator CA (`provenix ak enroll`) or
    /// a cloud's AK CA.
    #[serde(default)]
    pub ak_roots: Vec<PathBuf>,
    /// PCRs every quote must cover, in every bank it quotes (default 0-9:
    /// firmware, boot loader, kernel, Secure Boot state, initrd and
    /// command line).
    #[serde(default = "boot_pcrs")]
    pub pcrs: Vec<u32>,
    /// Reference-value manifests with a TPM part: the event log must match
    /// one of them. Paths are relative to the policy file.
    #[serde(default)]
    pub reference_values: Vec<PathBuf>,
    /// Source commits accepted for TPM workers; with `reference_values`,
    /// only these commits' manifests count.
    pub accepted_commits: Option<Vec<String>>,
    /// SHA-256 digests of the deployment settings accepted (docs/image.md):
    /// PCR 15 must be quoted and hold exactly the worker's settings event,
    /// with one of these digests. Unset: the settings are not appraised.
    pub settings: Option<Vec<Hex<32>>>,
    /// The certificates `ak_roots` names, DER, once loaded.
    #[serde(skip)]
    pub roots: Vec<Vec<u8>>,
    /// The manifests `reference_values` names, once loaded.
    #[serde(skip)]
    pub manifests: Vec<Manifest>,
}

impl Default for TpmPolicy {
    fn default() -> Self {
        TpmPolicy {
            ak_roots: Vec::new(),
            pcrs: boot_pcrs(),
            reference_values: Vec::new(),
            accepted_commits: None,
            settings: None,
            roots: Vec::new(),
            manifests: Vec::new(),
        }
    }
}

fn boot_pcrs() -> Vec<u32> {
    (0..10).collect()
}

/// The `[threshold]` section: M of N distinct builders.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// M: how many distinct builders must state the same digest (default 1,
    /// at least 1).
    #[serde(default = "one")]
    pub m: u32,
    /// What makes two builders distinct (default `"chip"`: two runs on one
    /// machine are one builder).
    #[serde(default)]
    pub distinct: Distinct,
    /// Which builders count: `"any"` (default: any attested worker of an
    /// accepted commit) or a list of named worker keys.
    #[serde(default)]
    pub builders: Builders,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            m: 1,
            distinct: Distinct::Chip,
            builders: Builders::Any,
        }
    }
}

fn one() -> u32 {
    1
}

/// What makes two builders distinct for the threshold.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Distinct {
    /// Distinct worker keys: weaker than it looks, and never the default.
    /// A key lives in one VM's memory, but one machine can boot any number
    /// of VMs, so M keys can be one chip run M times.
    Key,
    /// Distinct chips (the default): CHIP_ID for a VCEK (authenticated: it
    /// must equal the VCEK's hwID); for a VLEK, which has no chip ID, the
    /// cloud (cspId) and the VLEK's public key, so one VLEK, however many
    /// chips share it, is one; for a TPM its EK's public key (named by the
    /// AK certificate), else the AK's public key.
    #[default]
    Chip,
    /// Distinct platforms: product and signer kind for a VCEK (all Milan
    /// chips with VCEKs are one), the cloud (cspId) for a VLEK.
    Platform,
}

impl Distinct {
    /// The policy's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Distinct::Key => "key",
            Distinct::Chip => "chip",
            Distinct::Platform => "platform",
        }
    }
}

/// Which builders count toward the threshold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Builders {
    /// Any attested worker of an accepted commit.
    #[default]
    Any,
    /// Only these worker keys; N is their number.
    Named(Vec<NamedBuilder>),
}

/// A builder the policy names.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamedBuilder {
    /// A name for messages.
    pub name: String,
    /// The worker's Ed25519 key, hex.
    pub key: Hex<32>,
}

impl<'de> Deserialize<'de> for Builders {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Builders;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#""any" or a list of { name, key } tables"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Builders, E> {
                if v == "any" {
                    Ok(Builders::Any)
                } else {
                    Err(E::custom(format!(
                        r#"builders = {v:?}: expected "any" or a list of {{ name, key }} tables"#
                    )))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Builders, A::Error> {
                let mut named = Vec::new();
                while let Some(b) = seq.next_element::<NamedBuilder>()? {
                    named.push(b);
                }
                Ok(Builders::Named(named))
            }
        }
        d.deserialize_any(Visit)
    }
}

impl Threshold {
    /// Refuse thresholds that can never be met or are ambiguous.
    fn check(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::Policy(format!("[threshold] {what}")));
        if self.m == 0 {
            return bad("m = 0: at least one builder must agree".into());
        }
        if let Builders::Named(named) = &self.builders {
            if named.is_empty() {
                return bad("builders is an empty list".into());
            }
            let n = named.len();
            if usize::try_from(self.m).is_ok_and(|m| m > n) {
                return bad(format!("m = {} exceeds the {n} named builders", self.m));
            }
            for (i, b) in named.iter().enumerate() {
                for other in named.iter().skip(i.saturating_add(1)) {
                    if other.key == b.key {
                        return bad(format!(
                            "builders {:?} and {:?} have the same key",
                            b.name, other.name
                        ));
                    }
                    if other.name == b.name {
                        return bad(format!("two builders are named {:?}", b.name));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `[checkpoint]` section (docs/policy.md, "Checkpoints").
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPolicy {
    /// How old a logged bundle's checkpoint may be at the verification
    /// time, by the time the worker signed into it; unset, age is not
    /// checked.
    pub max_age: Option<Age>,
    /// What to do with a checkpoint that no consistency proof relates to
    /// the one seen before (default: refuse its bundles).
    #[serde(default)]
    pub unproven: Unproven,
}

/// What to do with a checkpoint not proven consistent with the log's
/// remembered one.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unproven {
    /// Refuse its bundles: without a proof, an extension and a fork look
    /// alike.
    #[default]
    Refuse,
    /// Accept its bundles with a warning, and do not remember it.
    Warn,
}

/// A duration in whole seconds, written `<n>s`, `<n>m`, `<n>h` or `<n>d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Age(pub u64);

impl<'de> Deserialize<'de> for Age {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "duration {s:?} is not a positive whole number followed by s, m, h or d"
            ))
        };
        let split = s.len().checked_sub(1).ok_or_else(bad)?;
        let (digits, unit) = (s.get(..split).ok_or_else(bad)?, s.get(split..));
        let scale: u64 = match unit {
            Some("s") => 1,
            Some("m") => 60,
            Some("h") => 3_600,
            Some("d") => 86_400,
            _ => return Err(bad()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        match n.checked_mul(scale) {
            Some(secs) if secs > 0 => Ok(Age(secs)),
            _ => Err(bad()),
        }
    }
}

/// A signing-key kind in a policy.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Signer {
    /// Versioned Chip Endorsement Key.
    #[serde(rename = "VCEK")]
    Vcek,
    /// Versioned Loaded Endorsement Key.
    #[serde(rename = "VLEK")]
    Vlek,
}

/// Per-component minimum TCB; absent components are not constrained.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// FMC SPL (Turin).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: Option<u8>,
    /// TEE SPL.
    pub tee: Option<u8>,
    /// SNP firmware SPL.
    pub snp: Option<u8>,
    /// Microcode SPL.
    pub microcode: Option<u8>,
}

/// A firmware ABI version "MAJOR.MINOR".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AbiVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
}

impl<'de> Deserialize<'de> for AbiVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed = s.split_once('.').and_then(|(a, b)| {
            Some(AbiVersion {
                major: a.parse().ok()?,
                minor: b.parse().ok()?,
            })
        });
        parsed.ok_or_else(|| {
            serde::de::Error::custom(format!("ABI version {s:?} is not MAJOR.MINOR"))
        })
    }
}

/// Exactly `N` bytes, written as hex in the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected {N} bytes as {} hex digits, got {} characters: {e}",
                N.saturating_mul(2),
                s.len()
            ))
        })?;
        Ok(Hex(out))
    }
}

/// A policy value that is one hex string or a list of them.
fn one_or_more<'de, D: serde::Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<Option<Vec<Hex<N>>>, D::Error> {
    struct OneOrMore<const N: usize>;
    impl<'de, const N: usize> serde::de::Visitor<'de> for OneOrMore<N> {
        type Value = Vec<Hex<N>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} hex digits, or a list of them", N.saturating_mul(2))
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(vec![Hex::deserialize(
                serde::de::value::StrDeserializer::<E>::new(s),
            )?])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(one) = seq.next_element()? {
                all.push(one);
            }
            Ok(all)
        }
    }
    d.deserialize_any(OneOrMore::<N>).map(Some)
}

/// Evidence that is authentic and meets the policy. Only
/// [`Policy::appraise`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedReport {
    authenticated: AuthenticatedReport,
    reference: Option<ReferenceMatch>,
}

/// The reference value a measurement matched: which commit's image, in
/// which deployment shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceMatch {
    /// The worker source commit of the manifest.
    pub commit: String,
    /// The shape (VMM, vCPUs) whose launch digest matched.
    pub shape: SnpReference,
}

impl VerifiedReport {
    /// The report.
    pub fn report(&self) -> &AttestationReport {
        self.authenticated.report()
    }
    /// What authentication established (product, signer, root).
    pub fn authenticated(&self) -> &AuthenticatedReport {
        &self.authenticated
    }
    /// The reference value the measurement matched, when the policy names
    /// manifests.
    pub fn reference(&self) -> Option<&ReferenceMatch> {
        self.reference.as_ref()
    }
}

impl Policy {
    /// Parse a TOML policy, naming the field at fault on error. Manifests
    /// it names are read relative to the current directory; use
    /// [`Policy::load`] for a policy file.
    pub fn from_toml(text: &str) -> Result<Policy, Error> {
        Self::from_toml_in(text, Path::new("."))
    }

    /// Read a policy file; the manifests it names are relative to it. It
    /// and they must be regular files within their formats' limits.
    pub fn load(path: &Path) -> Result<Policy, Error> {
        let text = provenix_firmware::file::read_bounded_text(path, MAX_POLICY_SIZE)
            .map_err(|e| Error::Policy(e.to_string()))?;
        Self::from_toml_in(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| Error::Policy(format!("{}: {e}", path.display())))
    }

    fn from_toml_in(text: &str, base: &Path) -> Result<Policy, Error> {
        let mut policy: Policy = toml::from_str(text).map_err(|e| Error::Policy(e.to_string()))?;
        let table: toml::Table = toml::from_str(text).map_err(|e| Error::Policy(e.to_string()))?;
        for (key, value) in &table {
            match value {
                toml::Value::Table(section) => policy
                    .keys
                    .extend(section.keys().map(|k| format!("{key}.{k}"))),
                _ => policy.keys.push(key.clone()),
            }
        }
        policy.threshold.check()?;
        for path in &policy.graph.trusted_paths {
            crate::storepath::check_path(path)
                .map_err(|e| Error::Policy(format!("graph.trusted_paths: {e}")))?;
        }
        for key in &policy.graph.trusted_nix_keys {
            crate::nixsig::check_public_key_line(key)
                .map_err(|e| Error::Policy(format!("graph.trusted_nix_keys: {e}")))?;
        }
        let snp = &mut policy.snp;
        snp.manifests = snp
            .reference_values
            .iter()
            .map(|p| read_manifest(&base.join(p)))
            .collect::<Result<_, _>>()?;
        if let Some(commits) = &snp.accepted_commits
            && !snp.manifests.is_empty()
            && !snp.manifests.iter().any(|m| commits.contains(&m.commit))
        {
            return Err(Error::Policy(
                "no reference-value manifest is for an accepted commit".into(),
            ));
        }
        let tpm = &mut policy.tpm;
        if let Some(pcr) = tpm.pcrs.iter().find(|&&p| p > 23) {
            return Err(Error::Policy(format!(
                "tpm.pcrs: PCR {pcr} does not exist (0 to 23)"
            )));
        }
        for path in &tpm.ak_roots {
            let path = base.join(path);
            let bytes = provenix_firmware::file::read_bounded(&path, MAX_CA_FILE)
                .map_err(|e| Error::Policy(format!("tpm.ak_roots: {e}")))?;
            tpm.roots
                .extend(crate::certificates_from_pem_or_der(&bytes)?);
        }
        tpm.manifests = tpm
            .reference_values
            .iter()
            .map(|p| read_manifest(&base.join(p)))
            .collect::<Result<_, _>>()?;
        if let Some(commits) = &tpm.accepted_commits
            && !tpm.manifests.is_empty()
            && !tpm.manifests.iter().any(|m| commits.contains(&m.commit))
        {
            return Err(Error::Policy(
                "no TPM reference-value manifest is for an accepted commit".into(),
            ));
        }
        Ok(policy)
    }

    /// The trust anchors this policy names: AMD's (unless turned off) and
    /// any pinned roots.
    pub fn anchors(&self) -> Result<TrustAnchors, Error> {
        let mut anchors = if self.trust_amd_roots {
            TrustAnchors::amd()?
        } else {
            TrustAnchors::empty()
        };
        for pin in &self.roots {
            anchors.add_root(pin.product, pin.sha256.0, &pin.name);
        }
        Ok(anchors)
    }

    /// Refuse, naming them, the keys this policy file set that `command`
    /// cannot apply: those under none of `applies` (`"snp"` covers every
    /// `snp.*` key, `"snp.max_vmpl"` only itself). A key a command cannot
    /// apply must not pass silently.
    pub fn check_applicable(&self, command: &str, applies: &[&str]) -> Result<(), Error> {
        let covered = |key: &str| {
            applies.iter().any(|a| {
                key == *a
                    || key
                        .strip_prefix(a)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        };
        let unusable: Vec<&str> = self
            .keys
            .iter()
            .map(String::as_str)
            .filter(|k| !covered(k))
            .collect();
        if unusable.is_empty() {
            return Ok(());
        }
        Err(Error::Policy(format!(
            "{command} cannot apply the policy's {}: use `provenix verify` for {}",
            unusable.join(", "),
            if unusable.len() == 1 { "it" } else { "them" }
        )))
    }

    /// Whether the policy file set `key` (dotted, e.g. `"threshold.m"`).
    pub fn sets(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Run every check; return the verified report or every finding.
    pub fn appraise(
        &self,
        authenticated: AuthenticatedReport,
    ) -> Result<VerifiedReport, Rejection> {
        let mut findings = self.snp.findings(&authenticated);
        // Fail closed: authentic evidence of unknown software is not
        // accepted unless the policy says, by name, that any will do.
        if self.measurements == Measurements::Pinned
            && self.snp.measurements.is_none()
            && self.snp.manifests.is_empty()
        {
            findings.push(Finding {
                field: "measurement",
                found: hex::encode(authenticated.report().measurement()),
                expected: "a measurement the policy pins (snp.measurements or \
                           snp.reference_values; measurements = \"any\" accepts any software)"
                    .into(),
            });
        }
        let reference = self.snp.reference(&authenticated, &mut findings);
        if findings.is_empty() {
            Ok(VerifiedReport {
                authenticated,
                reference,
            })
        } else {
            Err(Rejection { findings })
        }
    }
}

impl SnpPolicy {
    /// With manifests: the one that lists this MEASUREMENT for an accepted
    /// commit, or a finding saying none does.
    fn reference(
        &self,
        auth: &AuthenticatedReport,
        findings: &mut Vec<Finding>,
    ) -> Option<ReferenceMatch> {
        if self.manifests.is_empty() {
            return None;
        }
        let accepted = |m: &&Manifest| {
            self.accepted_commits
                .as_ref()
                .is_none_or(|c| c.contains(&m.commit))
        };
        let measurement = auth.report().measurement();
        let found = self
            .manifests
            .iter()
            .filter(accepted)
            .find_map(|m| m.snp_reference(measurement).map(|r| (m, r)));
        if let Some((m, r)) = found {
            return Some(ReferenceMatch {
                commit: m.commit.clone(),
                shape: r.clone(),
            });
        }
        let commits = self
            .manifests
            .iter()
            .filter(accepted)
            .map(|m| m.commit.clone());
        let shapes: usize = self
            .manifests
            .iter()
            .filter(accepted)
            .map(|m| m.snp.len())
            .sum();
        findings.push(Finding {
            field: "measurement",
            found: hex::encode(measurement),
            expected: format!(
                "a reference value of commit {} ({shapes} shapes)",
                list(commits)
            ),
        });
        None
    }

    fn findings(&self, auth: &AuthenticatedReport) -> Vec<Finding> {
        let r = auth.report();
        let policy = r.policy();
        let mut out = Vec::new();
        let mut fail = |field: &'static str, found: String, expected: String| {
            out.push(Finding {
                field,
                found,
                expected,
            });
        };

        if policy.0 & GuestPolicy::RESERVED_ONE == 0 {
            fail(
                "policy",
                format!("{:#x} (bit 17 clear)", policy.0),
                "bit 17 set (reserved, must be one)".into(),
            );
        }
        if policy.unknown_bits() != 0 {
            fail(
                "policy",
                format!("unknown bits {:#x}", policy.unknown_bits()),
                "only bits 0-25".into(),
            );
        }
        if policy.debug() && !self.allow_debug {
            fail("policy.debug", "1 (debugging allowed)".into(), "0".into());
        }
        if policy.migrate_ma() && !self.allow_migrate_ma {
            fail(
                "policy.migrate_ma",
                "1 (migration agent allowed)".into(),
                "0".into(),
            );
        }
        if policy.smt() && !self.allow_smt {
            fail("policy.smt", "1 (SMT allowed)".into(), "0".into());
        }
        if self.require_single_socket && !policy.single_socket() {
            fail("policy.single_socket", "0".into(), "1".into());
        }
        if let Some(max) = self.max_vmpl
            && r.vmpl() > max
        {
            fail("vmpl", r.vmpl().to_string(), format!("at most {max}"));
        }
        let fw = r.current_version();
        if let Some(min) = self.min_abi {
            let have = AbiVersion {
                major: fw.major,
                minor: fw.minor,
            };
            if have < min {
                fail(
                    "current_version",
                    fw.to_string(),
                    format!("ABI at least {}.{}", min.major, min.minor),
                );
            } else if have == min && self.min_build.is_some_and(|b| fw.build < b) {
                fail(
                    "current_build",
                    fw.build.to_string(),
                    format!("at least {}", self.min_build.unwrap_or(0)),
                );
            }
        }
        let product = auth.product();
        if let Some(products) = &self.products
            && !products.contains(&product)
        {
            fail(
                "product",
                product.to_string(),
                list(products.iter().map(Product::to_string)),
            );
        }
        let signer = match auth.signer() {
            CertRole::Vlek => Signer::Vlek,
            _ => Signer::Vcek,
        };
        if let Some(signers) = &self.signers
            && !signers.contains(&signer)
        {
            fail(
                "signing_key",
                auth.signer().to_string(),
                list(signers.iter().map(|s| format!("{s:?}").to_uppercase())),
            );
        }
        if let Some(min) = self.min_tcb.get(&product) {
            tcb_findings(&r.reported_tcb(), min, &mut fail);
        }
        if let Some(allowed) = &self.measurements {
            one_of("measurement", r.measurement(), allowed, &mut fail);
        }
        if let Some(allowed) = &self.host_data {
            one_of("host_data", r.host_data(), allowed, &mut fail);
        }
        if let Some(want) = &self.report_data {
            equal("report_data", r.report_data(), &want.0, &mut fail);
        }
        if let Some(allowed) = &self.id_key_digests {
            one_of("id_key_digest", r.id_key_digest(), allowed, &mut fail);
        }
        if let Some(allowed) = &self.author_key_digests {
            if !r.key_info().author_key_en() {
                fail(
                    "author_key_en",
                    "0".into(),
                    "1 (an author key signed the ID block)".into(),
                );
            }
            one_of(
                "author_key_digest",
                r.author_key_digest(),
                allowed,
                &mut fail,
            );
        }
        if let Some(min) = self.min_guest_svn
            && r.guest_svn() < min
        {
            fail(
                "guest_svn",
                r.guest_svn().to_string(),
                format!("at least {min}"),
            );
        }
        if let Some(want) = &self.family_id {
            equal("family_id", r.family_id(), &want.0, &mut fail);
        }
        if let Some(want) = &self.image_id {
            equal("image_id", r.image_id(), &want.0, &mut fail);
        }
        if let Some(allowed) = &self.chip_ids {
            one_of("chip_id", r.chip_id(), allowed, &mut fail);
        }
        out
    }
}

fn tcb_findings(
    have: &TcbVersion,
    min: &MinTcb,
    fail: &mut impl FnMut(&'static str, String, String),
) {
    let wanted = [
        ("reported_tcb.fmc", have.fmc, min.fmc),
        (
            "reported_tcb.bootloader",
            Some(have.bootloader),
            min.bootloader,
        ),
        ("reported_tcb.tee", Some(have.tee), min.tee),
        ("reported_tcb.snp", Some(have.snp), min.snp),
        (
            "reported_tcb.microcode",
            Some(have.microcode),
            min.microcode,
        ),
    ];
    for (field, have, want) in wanted {
        let Some(want) = want else { continue };
        match have {
            Some(h) if h >= want => {}
            Some(h) => fail(field, h.to_string(), format!("at least {want}")),
            None => fail(
                field,
                "absent (no FMC on this product)".into(),
                format!("at least {want}"),
            ),
        }
    }
}

fn equal<const N: usize>(
    field: &'static str,
    have: &[u8; N],
    want: &[u8; N],
    fail: &mut impl FnMut(&'static str, String, String),
) {
    if have != want {
        fail(field, hex::encode(have), hex::encode(want));
    }
}

fn one_of<const N: usize>(
    field: &'static str,
    have: &[u8; N],
    allowed: &[Hex<N>],
    fail: &mut impl FnMut(&'static str, String, String),
) {
    if !allowed.iter().any(|a| a.0 == *have) {
        fail(
            field,
            hex::encode(have),
            list(allowed.iter().map(|a| hex::encode(a.0))),
        );
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let mut out = String::from("one of [");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{item}");
    }
    out.push(']');
    out
}
