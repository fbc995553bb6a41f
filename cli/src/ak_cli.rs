//! `provenix ak`: certify a TPM's attestation key with the operator's CA,
//! once the TPM has proven, by its EK certificate and credential
//! activation, that it holds the key (the protocol is in docs/tpm.md).
//!
//! Exit codes: 0 done, 1 refused (the request, response or certificate
//! does not hold up), 2 error (a file cannot be read or written, bad
//! arguments, an unusable CA key).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use provenix_firmware::tpm::structures::Public;
use provenix_verifier::tpm::ak::{
    AkRequest, AkResponse, EnrollmentState, finish_enrollment, issue_ak_certificate,
    make_challenge, verify_ak_certificate,
};
use provenix_verifier::tpm::name_of;
use provenix_verifier::{Error, certificates_from_pem_or_der};

/// `provenix ak ...`.
#[derive(Subcommand)]
pub(crate) enum AkCommand {
    /// Enroll a TPM attestation key: `challenge` for the worker's request,
    /// then `finish` with its response. Exit 0 done, 1 refused, 2 error.
    Enroll {
        #[command(subcommand)]
        step: EnrollStep,
    },
    /// Verify an AK certificate chain (as `--ak-cert` files hold it) to a
    /// CA, for an attestation key. Exit 0 valid, 1 refused, 2 error.
    Verify {
        /// The AK certificate, then any intermediates (PEM or DER).
        #[arg(long)]
        ak_cert: PathBuf,
        /// The CA certificates to trust (PEM or DER; repeatable).
        #[arg(long, required = true)]
        ca: Vec<PathBuf>,
        /// The AK: a TPMT_PUBLIC or TPM2B_PUBLIC file, or the worker's
        /// request.json.
        #[arg(long)]
        ak_public: PathBuf,
        /// Verification time: RFC 3339, YYYY-MM-DD or @UNIX-SECONDS.
        #[arg(long, value_parser = super::parse_time)]
        at: Option<i64>,
    },
}

/// The operator's two steps of an enrollment.
#[derive(Subcommand)]
pub(crate) enum EnrollStep {
    /// Verify the request's EK certificate and AK, and make a challenge
    /// only that TPM can answer; keep the state for `finish`.
    Challenge {
        /// `provenix-worker ak request`'s output.
        #[arg(long)]
        request: PathBuf,
        /// The EK CAs to trust: TPM vendor CAs, or swtpm's local CA (PEM
        /// or DER; repeatable; every certificate in them is trusted).
        #[arg(long, required = true)]
        ek_ca: Vec<PathBuf>,
        /// Intermediate CAs for the EK chain, not trusted on their own
        /// (PEM or DER; repeatable).
        #[arg(long)]
        ek_intermediates: Vec<PathBuf>,
        /// Where to keep the enrollment's state (operator only, mode 0600).
        #[arg(long)]
        state: PathBuf,
        /// Where to write the challenge for the worker.
        #[arg(long)]
        out: PathBuf,
        /// The time to verify at: RFC 3339, YYYY-MM-DD or @UNIX-SECONDS.
        #[arg(long, value_parser = super::parse_time)]
        at: Option<i64>,
    },
    /// Check the worker's response against the state and issue the AK
    /// certificate; write it followed by the CA certificate (PEM), as
    /// `provenix-worker --ak-cert` takes it.
    Finish {
        /// The state `challenge` wrote.
        #[arg(long)]
        state: PathBuf,
        /// `provenix-worker ak activate`'s output.
        #[arg(long)]
        response: PathBuf,
        /// The operator CA's certificate (PEM or DER): what policies name
        /// in `[tpm] ak_roots`.
        #[arg(long)]
        ca_cert: PathBuf,
        /// The operator CA's private key, PKCS#8 PEM (`openssl genpkey`).
        #[arg(long)]
        ca_key: PathBuf,
        /// How long the AK certificate is valid, in days.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u16).range(1..=3650))]
        days: u16,
        /// Where to write the AK certificate chain.
        #[arg(long)]
        out: PathBuf,
        /// The time to finish at: RFC 3339, YYYY-MM-DD or @UNIX-SECONDS.
        #[arg(long, value_parser = super::parse_time)]
        at: Option<i64>,
    },
}

/// How far before now an AK certificate starts: verifiers whose clocks
/// run a little behind still accept it.
const BACKDATE: i64 = 300;

/// Run `provenix ak ...`: Ok(0) done, Ok(1) refused, Err for errors.
pub(crate) fn run(command: AkCommand) -> Result<ExitCode> {
    let now = || time::OffsetDateTime::now_utc().unix_timestamp();
    let outcome = match command {
        AkCommand::Enroll {
            step:
                EnrollStep::Challenge {
                    request,
                    ek_ca,
                    ek_intermediates,
                    state,
                    out,
                    at,
                },
        } => challenge(
            &request,
            &ek_ca,
            &ek_intermediates,
            &state,
            &out,
            at.unwrap_or_else(now),
        )?,
        AkCommand::Enroll {
            step:
                EnrollStep::Finish {
                    state,
                    response,
                    ca_cert,
                    ca_key,
                    days,
                    out,
                    at,
                },
        } => finish(
            &state,
            &response,
            &ca_cert,
            &ca_key,
            days,
            &out,
            at.unwrap_or_else(now),
        )?,
        AkCommand::Verify {
            ak_cert,
            ca,
            ak_public,
            at,
        } => verify(&ak_cert, &ca, &ak_public, at.unwrap_or_else(now))?,
    };
    Ok(match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(refusal) => {
            eprintln!("provenix: refused: {refusal}");
            ExitCode::from(1)
        }
    })
}

/// The outcome of a step whose files could be read: done, or refused
/// with the reason.
type Outcome = Result<(), Error>;

fn challenge(
    request: &Path,
    ek_ca: &[PathBuf],
    ek_intermediates: &[PathBuf],
    state_path: &Path,
    out: &Path,
    at: i64,
) -> Result<Outcome> {
    let roots = read_certs(ek_ca)?;
    let intermediates = read_certs(ek_intermediates)?;
    let bytes = crate::input::read(request, crate::input::SMALL)?;
    let made = AkRequest::from_json(&bytes).and_then(|request| {
        make_challenge(
            &request,
            &roots,
            &intermediates,
            at,
            &ring::rand::SystemRandom::new(),
        )
    });
    let (challenge, state) = match made {
        Ok(made) => made,
        Err(e) => return Ok(Err(in_file(request, e))),
    };
    write_file(state_path, state.to_json().as_bytes(), true)?;
    write_file(out, challenge.to_json().as_bytes(), false)?;
    eprintln!(
        "EK certificate verified (SHA-256 {}); challenge {} for AK {} written to {}, state to {}",
        hex::encode(provenix_verifier::sha256(&state.ek_certificate)),
        hex::encode(&challenge.id),
        hex::encode(&challenge.ak_name),
        out.display(),
        state_path.display()
    );
    Ok(Ok(()))
}

fn finish(
    state_path: &Path,
    response_path: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    days: u16,
    out: &Path,
    at: i64,
) -> Result<Outcome> {
    let ca = read_one_cert(ca_cert)?;
    let ca_key_pem = String::from_utf8(crate::input::read(ca_key, crate::input::SMALL)?)
        .with_context(|| format!("{}: not a PEM file", ca_key.display()))?;
    let state =
        match EnrollmentState::from_json(&crate::input::read(state_path, crate::input::SMALL)?) {
            Ok(s) => s,
            Err(e) => return Ok(Err(in_file(state_path, e))),
        };
    let response =
        match AkResponse::from_json(&crate::input::read(response_path, crate::input::SMALL)?) {
            Ok(r) => r,
            Err(e) => return Ok(Err(in_file(response_path, e))),
        };
    let activated = match finish_enrollment(&state, &response, at) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    let not_after = at.saturating_add(i64::from(days).saturating_mul(86_400));
    let cert = issue_ak_certificate(
        activated.ak_public(),
        activated.ek(),
        &ca,
        &ca_key_pem,
        at.saturating_sub(BACKDATE),
        not_after,
        &ring::rand::SystemRandom::new(),
    )
    .with_context(|| format!("{} / {}", ca_cert.display(), ca_key.display()))?;
    // What every verifier will do: a key that is not the CA certificate's,
    // or a CA not valid now, fails here rather than in the field.
    verify_ak_certificate(
        &cert,
        &[],
        std::slice::from_ref(&ca),
        at,
        activated.ak_public(),
    )
    .with_context(|| {
        format!(
            "the issued certificate does not verify under {}: is {} its key, and is it valid now?",
            ca_cert.display(),
            ca_key.display()
        )
    })?;
    let mut chain = pem_certificate(&cert);
    chain.push_str(&pem_certificate(&ca));
    write_file(out, chain.as_bytes(), false)?;
    eprintln!(
        "AK {} certified until {not_after} (unix) for the TPM with EK key {}; chain written to {}",
        hex::encode(name_of(activated.ak_public())),
        hex::encode(activated.ek().key_id()),
        out.display()
    );
    Ok(Ok(()))
}

fn verify(ak_cert: &Path, ca: &[PathBuf], ak_public: &Path, at: i64) -> Result<Outcome> {
    let roots = read_certs(ca)?;
    let chain = read_certs(std::slice::from_ref(&ak_cert.to_path_buf()))?;
    let bytes = crate::input::read(ak_public, crate::input::SMALL)?;
    let public = if bytes.first() == Some(&b'{') {
        AkRequest::from_json(&bytes).and_then(|r| Ok(Public::from_bytes(&r.ak_public)?))
    } else {
        Public::from_bytes(&bytes)
            .or_else(|_| Public::from_tpm2b(&bytes))
            .map_err(Error::from)
    };
    let public = match public {
        Ok(p) => p,
        Err(e) => return Ok(Err(in_file(ak_public, e))),
    };
    let Some((leaf, intermediates)) = chain.split_first() else {
        bail!("{}: no certificate", ak_cert.display());
    };
    match verify_ak_certificate(leaf, intermediates, &roots, at, &public) {
        Ok(verified) => {
            println!(
                "valid: AK {}{}",
                hex::encode(name_of(&public)),
                verified
                    .ek_key_id()
                    .map(|f| format!(", enrolled from the TPM with EK key {}", hex::encode(f)))
                    .unwrap_or_default()
            );
            Ok(Ok(()))
        }
        Err(e) => Ok(Err(e)),
    }
}

/// A refusal that names the file it is about, when the error does not.
fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Activation(reason) => Error::Activation(format!("{}: {reason}", path.display())),
        Error::Parse(e) => Error::Activation(format!("{}: {e}", path.display())),
        other => other,
    }
}

/// Every certificate in `paths` (PEM or DER).
fn read_certs(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for path in paths {
        out.extend(
            certificates_from_pem_or_der(&crate::input::read(path, crate::input::CERTIFICATES)?)
                .with_context(|| format!("{}", path.display()))?,
        );
    }
    Ok(out)
}

fn read_one_cert(path: &Path) -> Result<Vec<u8>> {
    let mut certs = read_certs(std::slice::from_ref(&path.to_path_buf()))?;
    if certs.len() != 1 {
        bail!(
            "{}: expected one certificate, found {}",
            path.display(),
            certs.len()
        );
    }
    Ok(certs.swap_remove(0))
}

/// Write `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half a file; `private` files are readable by their
/// owner only.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// One certificate as PEM (RFC 7468), base64 in lines of 64.
fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
