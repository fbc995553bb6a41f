//! `provenix-worker ak`: the TPM's side of attestation-key enrollment
//! (docs/tpm.md). `request` writes the AK's public area and the EK
//! certificates for the operator; `activate` answers the operator's
//! challenge with TPM2_ActivateCredential, which only the TPM holding both
//! the EK and the AK can do.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use provenix_firmware::tpm::device::{AkKind, EkKind, Key, Tpm};
use provenix_firmware::tpm::structures::{EccCurve, Public, PublicKey};
use provenix_verifier::tpm::ak::{AkChallenge, AkRequest, AkResponse, RequestEk};
use provenix_verifier::tpm::name_of;
use provenix_worker::platform::AkChoice;

/// `provenix-worker ak ...`.
#[derive(Subcommand)]
pub(crate) enum AkCommand {
    /// Write an enrollment request: the attestation key's public area and
    /// every EK certificate the TPM holds, with the EK's public area.
    Request {
        #[command(flatten)]
        tpm: AkTpm,
        /// Where to write the request (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Answer the operator's challenge with TPM2_ActivateCredential.
    Activate {
        /// `provenix ak enroll challenge`'s output.
        #[arg(long)]
        challenge: PathBuf,
        #[command(flatten)]
        tpm: AkTpm,
        /// Where to write the response (JSON).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Which TPM and which attestation key: the same flags, with the same
/// meaning, as `attest` and `serve` take.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct AkTpm {
    /// The TPM's TCTI, e.g. `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321` [default: device:/dev/tpmrm0].
    #[arg(long)]
    tpm_tcti: Option<String>,
    /// The attestation key: ECC P-256 (`ecc`) or RSA 2048 (`rsa`).
    #[arg(long, value_enum, default_value_t = AkChoice::Ecc)]
    ak_kind: AkChoice,
    /// The AK's persistent handle (hex), to make it persistent there or
    /// load it from there.
    #[arg(long, value_parser = parse_handle)]
    ak_handle: Option<u32>,
}

/// The EK kinds asked for, in the order the request prefers them: RSA
/// first, as every TPM has an RSA EK certificate and the verifier's
/// RSA-OAEP path is the most used.
const EK_KINDS: [EkKind; 2] = [EkKind::Rsa2048, EkKind::EccP256];

/// Run `provenix-worker ak ...`.
pub(crate) fn run(command: AkCommand) -> Result<()> {
    match command {
        AkCommand::Request { tpm, out } => request(&tpm, &out),
        AkCommand::Activate {
            challenge,
            tpm,
            out,
        } => activate(&challenge, &tpm, &out),
    }
}

fn request(options: &AkTpm, out: &Path) -> Result<()> {
    let mut tpm = Tpm::open(options.tpm_tcti.as_deref())?;
    let ak = attestation_key(&mut tpm, options)?;
    let mut eks = Vec::new();
    for kind in EK_KINDS {
        let Some(certificate) = tpm.ek_certificate(kind)? else {
            continue;
        };
        let ek = tpm.endorsement_key(kind)?;
        eks.push(RequestEk {
            certificate,
            public: ek.public().to_vec(),
        });
        tpm.flush(ek)?;
    }
    if eks.is_empty() {
        bail!(
            "the TPM holds no EK certificate for an RSA 2048 or ECC P-256 EK (NV {:#010x}, {:#010x}): \
             nothing can vouch for its attestation key",
            EkKind::Rsa2048.certificate_index(),
            EkKind::EccP256.certificate_index()
        );
    }
    let request = AkRequest::new(ak.public().to_vec(), eks);
    write(out, &request.to_json())?;
    eprintln!(
        "AK {} ({:?}) and {} EK certificate(s) written to {}",
        hex::encode(name_of(&Public::from_bytes(ak.public())?)),
        options.ak_kind,
        request.endorsement_keys.len(),
        out.display()
    );
    Ok(())
}

fn activate(challenge_path: &Path, options: &AkTpm, out: &Path) -> Result<()> {
    let bytes = read_limited(challenge_path)?;
    let challenge =
        AkChallenge::from_json(&bytes).with_context(|| format!("{}", challenge_path.display()))?;
    let ek_kind = ek_kind_of(&challenge.ek_public)
        .with_context(|| format!("{}: ek_public", challenge_path.display()))?;
    let mut tpm = Tpm::open(options.tpm_tcti.as_deref())?;
    let ak = attestation_key(&mut tpm, options)?;
    // Both checks only give a clearer message than the TPM would: a
    // credential for another AK or EK fails to activate anyway.
    let name = name_of(&Public::from_bytes(ak.public())?);
    if name != challenge.ak_name {
        bail!(
            "the challenge is for the AK named {}, but this TPM's {:?} AK is {} \
             (another --ak-kind or --ak-handle, or another TPM)",
            hex::encode(&challenge.ak_name),
            options.ak_kind,
            hex::encode(&name)
        );
    }
    let ek = tpm.endorsement_key(ek_kind)?;
    if ek.public() != challenge.ek_public.as_slice() {
        bail!("the challenge is for another TPM: its {ek_kind:?} EK is not this TPM's");
    }
    let secret = tpm
        .activate_credential(
            &ak,
            &ek,
            &challenge.credential_blob,
            &challenge.encrypted_secret,
        )
        .context(
            "the TPM refused the challenge: it was made for another TPM or AK, or it was modified",
        )?;
    let response = AkResponse::new(challenge.id.clone(), secret);
    write(out, &response.to_json())?;
    eprintln!(
        "challenge {} answered; response written to {}",
        hex::encode(&challenge.id),
        out.display()
    );
    Ok(())
}

fn attestation_key(tpm: &mut Tpm, options: &AkTpm) -> Result<Key> {
    let kind = match options.ak_kind {
        AkChoice::Ecc => AkKind::EccP256,
        AkChoice::Rsa => AkKind::Rsa2048,
    };
    Ok(tpm.attestation_key(kind, options.ak_handle)?)
}

/// The EK template that makes the key `ek_public` (TPMT_PUBLIC) names.
fn ek_kind_of(ek_public: &[u8]) -> Result<EkKind> {
    Ok(match Public::from_bytes(ek_public)?.key() {
        PublicKey::Rsa(k) if k.key_bits == 2048 => EkKind::Rsa2048,
        PublicKey::Ecc(k) if matches!(k.curve, EccCurve::NistP256) => EkKind::EccP256,
        _ => bail!("not an RSA 2048 or ECC P-256 endorsement key"),
    })
}

/// Read at most one byte more than an enrollment file may hold, so
/// [`AkChallenge::from_json`] refuses an oversized file without this
/// reading all of it.
fn read_limited(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let limit = provenix_verifier::tpm::ak::MAX_ENROLLMENT_FILE.saturating_add(1);
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(u64::try_from(limit).unwrap_or(u64::MAX))
                .read_to_end(&mut bytes)
        })
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn parse_handle(s: &str) -> Result<u32, String> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(hex, 16).map_err(|e| format!("{s:?} is not a hex handle: {e}"))
}
