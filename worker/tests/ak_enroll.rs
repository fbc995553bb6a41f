//! AK enrollment against a real software TPM (swtpm): the verifier's
//! pure-Rust MakeCredential, the TPM's ActivateCredential, the EK
//! certificate chain to swtpm's local CA; then the whole enrollment
//! through both CLIs (`provenix-worker ak`, `provenix ak enroll`), the AK
//! certificate a TPM bundle then verifies under, and each refusal.
//!
//! The operator CA is made with `openssl`, as an operator would. The
//! `provenix` binary belongs to another package, so cargo gives this test
//! no path to it: the test builds it with the cargo that runs the test.

// Test code: a failed unwrap is a failed test.
#![cfg(feature = "tpm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../tests/support/swtpm.rs"]
mod swtpm;

use common::{provenix_bin, shared, unix_now};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use provenix_firmware::tpm::EventLog;
use provenix_firmware::tpm::device::{AkKind, EkKind, Tpm};
use provenix_firmware::tpm::structures::Public;
use provenix_verifier::tpm::ak::{check_ak_public, make_credential, verify_ek};
use provenix_verifier::tpm::name_of;
use ring::rand::SystemRandom;
use swtpm::Swtpm;

fn pem_certs(path: &std::path::Path) -> Vec<Vec<u8>> {
    provenix_verifier::certificates_from_pem_or_der(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn make_credential_in_rust_activates_on_the_tpm_for_both_ek_kinds() {
    let Some(sw) = Swtpm::start("ak_activate") else {
        return;
    };
    let mut tpm = Tpm::open(Some(&sw.tcti())).unwrap();
    let rng = SystemRandom::new();
    for (ek_kind, ak_kind) in [
        (EkKind::Rsa2048, AkKind::EccP256),
        (EkKind::EccP256, AkKind::Rsa2048),
    ] {
        let ek = tpm.endorsement_key(ek_kind).unwrap();
        let ak = tpm.attestation_key(ak_kind, None).unwrap();
        let ak_public = Public::from_bytes(ak.public()).unwrap();
        check_ak_public(&ak_public).unwrap();
        let ek_public = Public::from_bytes(ek.public()).unwrap();
        let secret = [0x42u8; 32];
        let started = std::time::Instant::now();
        let cred = make_credential(&ek_public, &name_of(&ak_public), &secret, &rng).unwrap();
        let made = started.elapsed();
        let got = tpm
            .activate_credential(&ak, &ek, &cred.credential_blob, &cred.encrypted_secret)
            .unwrap();
        eprintln!(
            "{ek_kind:?} EK: MakeCredential {made:?}, ActivateCredential {:?}",
            started.elapsed() - made
        );
        assert_eq!(got, secret, "{ek_kind:?}");

        // One flipped byte of the blob: the TPM's integrity check refuses it.
        let mut tampered = cred.credential_blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        let err = tpm
            .activate_credential(&ak, &ek, &tampered, &cred.encrypted_secret)
            .unwrap_err();
        assert!(err.to_string().contains("ActivateCredential"), "{err}");

        // Wrapped for another name (another AK): refused as well.
        let mut other = name_of(&ak_public);
        *other.last_mut().unwrap() ^= 1;
        let cred = make_credential(&ek_public, &other, &secret, &rng).unwrap();
        assert!(
            tpm.activate_credential(&ak, &ek, &cred.credential_blob, &cred.encrypted_secret)
                .is_err()
        );
        tpm.flush(ak).unwrap();
        tpm.flush(ek).unwrap();
    }
}

#[test]
fn a_credential_for_one_tpm_does_not_activate_on_another() {
    let (Some(a), Some(b)) = (Swtpm::start("ak_tpm_a"), Swtpm::start("ak_tpm_b")) else {
        return;
    };
    let rng = SystemRandom::new();
    let mut tpm_a = Tpm::open(Some(&a.tcti())).unwrap();
    let ek_a = tpm_a.endorsement_key(EkKind::Rsa2048).unwrap();
    let ak_a = tpm_a.attestation_key(AkKind::EccP256, None).unwrap();
    let cred = make_credential(
        &Public::from_bytes(ek_a.public()).unwrap(),
        &name_of(&Public::from_bytes(ak_a.public()).unwrap()),
        &[7; 32],
        &rng,
    )
    .unwrap();
    drop(tpm_a);
    let mut tpm_b = Tpm::open(Some(&b.tcti())).unwrap();
    let ek_b = tpm_b.endorsement_key(EkKind::Rsa2048).unwrap();
    let ak_b = tpm_b.attestation_key(AkKind::EccP256, None).unwrap();
    assert!(
        tpm_b
            .activate_credential(&ak_b, &ek_b, &cred.credential_blob, &cred.encrypted_secret)
            .is_err()
    );
}

#[test]
fn ek_certificate_chains_to_its_own_local_ca_only() {
    let (Some(a), Some(b)) = (Swtpm::start("ek_chain_a"), Swtpm::start("ek_chain_b")) else {
        return;
    };
    let mut tpm = Tpm::open(Some(&a.tcti())).unwrap();
    let cert = tpm.ek_certificate(EkKind::Rsa2048).unwrap().unwrap();
    let ek = tpm.endorsement_key(EkKind::Rsa2048).unwrap();
    let at = unix_now();
    let verified = verify_ek(
        &cert,
        &pem_certs(&a.ca_issuer()),
        &pem_certs(&a.ca_root()),
        at,
        ek.public(),
    )
    .unwrap();
    assert!(!verified.serial().is_empty());
    // The other swtpm's CA: no chain.
    let err = verify_ek(
        &cert,
        &pem_certs(&b.ca_issuer()),
        &pem_certs(&b.ca_root()),
        at,
        ek.public(),
    )
    .unwrap_err();
    assert!(
        matches!(err, provenix_verifier::Error::AkChain { which: "EK", .. }),
        "{err}"
    );
    // The right chain, the wrong EK public (the P-256 EK): refused.
    let other = tpm.endorsement_key(EkKind::EccP256).unwrap();
    let err = verify_ek(
        &cert,
        &pem_certs(&a.ca_issuer()),
        &pem_certs(&a.ca_root()),
        at,
        other.public(),
    )
    .unwrap_err();
    assert!(matches!(err, provenix_verifier::Error::Ek(_)), "{err}");
}

const WORKER: &str = env!("CARGO_BIN_EXE_provenix-worker");

/// Run a command; its exit code and stderr.
fn run(cmd: &mut Command) -> (i32, String) {
    let out: Output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[track_caller]
fn ok(cmd: &mut Command, what: &str) {
    let (code, stderr) = run(cmd);
    assert_eq!(code, 0, "{what}: {stderr}");
}

/// The command failed with `code` and said `needle`.
#[track_caller]
fn refused(cmd: &mut Command, code: i32, needle: &str, what: &str) {
    let (got, stderr) = run(cmd);
    assert_eq!(got, code, "{what}: exit {got}, expected {code}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{what}: {needle:?} not in {stderr:?}"
    );
}

/// An operator CA made with openssl: (certificate, PKCS#8 key), PEM.
fn openssl_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "30", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-subj", &format!("/C=DE/O=Provenix test/CN={name}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        "openssl req",
    );
    (cert, key)
}

/// `provenix-worker ak SUBCOMMAND` on `sw` with an AK of `kind`.
fn worker_ak(sub: &str, sw: &Swtpm, kind: &str) -> Command {
    let mut cmd = Command::new(WORKER);
    cmd.args(["ak", sub, "--tpm-tcti", &sw.tcti(), "--ak-kind", kind]);
    cmd
}

/// `provenix ak enroll challenge` trusting `sw`'s local EK CA.
fn challenge(provenix: &Path, ek_ca: &Swtpm, request: &Path, state: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(provenix);
    cmd.args(["ak", "enroll", "challenge", "--request"])
        .arg(request)
        .arg("--ek-ca")
        .arg(ek_ca.ca_root())
        .arg("--ek-intermediates")
        .arg(ek_ca.ca_issuer())
        .arg("--state")
        .arg(state)
        .arg("--out")
        .arg(out);
    cmd
}

fn finish(
    provenix: &Path,
    state: &Path,
    response: &Path,
    ca: &(PathBuf, PathBuf),
    out: &Path,
) -> Command {
    let mut cmd = Command::new(provenix);
    cmd.args(["ak", "enroll", "finish", "--state"])
        .arg(state)
        .arg("--response")
        .arg(response)
        .arg("--ca-cert")
        .arg(&ca.0)
        .arg("--ca-key")
        .arg(&ca.1)
        .args(["--days", "2", "--out"])
        .arg(out);
    cmd
}

/// Rewrite one field of a JSON file with `f`.
fn edit_json(from: &Path, to: &Path, field: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(from).unwrap()).unwrap();
    f(v.get_mut(field).unwrap());
    std::fs::write(to, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Flip one bit of a base64 field's bytes at `index`.
fn flip_b64(v: &mut serde_json::Value, index: usize, bit: u8) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64.decode(v.as_str().unwrap()).unwrap();
    bytes[index] ^= bit;
    *v = serde_json::Value::String(b64.encode(bytes));
}

#[test]
fn enrolled_through_both_clis_a_tpm_bundle_verifies_under_the_operator_ca_only() {
    let test = "ak_enroll_cli";
    if !swtpm::tool_available(test, "openssl", &["version"]) {
        return;
    }
    let Some(shared) = shared("ak_enroll", "vectors/tpm") else {
        return;
    };
    let Some(sw) = Swtpm::start(test) else { return };
    let provenix = provenix_bin();
    let dir = sw.dir().to_path_buf();
    let started = std::time::Instant::now();

    // The TPM boots "again": every measured event of a real log extended,
    // so the PCRs the worker quotes are what the log replays to.
    let log_path = shared.join("vectors/tpm/gce-ubuntu2404-amd-sevsnp/eventlog.bin");
    let log = EventLog::parse(&std::fs::read(&log_path).unwrap()).unwrap();
    let mut tpm = Tpm::open(Some(&sw.tcti())).unwrap();
    let banks = tpm.pcr_banks().unwrap();
    for e in log.events().iter().filter(|e| e.is_extended()) {
        for (bank, digest) in e.digests.iter().filter(|(b, _)| banks.contains(b)) {
            tpm.pcr_extend(u8::try_from(e.pcr).unwrap(), *bank, digest)
                .unwrap();
        }
    }
    drop(tpm); // swtpm serves one connection at a time

    let f = |name: &str| dir.join(name);
    let ca = openssl_ca(&dir, "operator-ca");
    ok(
        worker_ak("request", &sw, "ecc")
            .arg("--out")
            .arg(f("request.json")),
        "ak request",
    );
    ok(
        &mut challenge(
            &provenix,
            &sw,
            &f("request.json"),
            &f("state.json"),
            &f("challenge.json"),
        ),
        "ak enroll challenge",
    );
    ok(
        worker_ak("activate", &sw, "ecc")
            .arg("--challenge")
            .arg(f("challenge.json"))
            .arg("--out")
            .arg(f("response.json")),
        "ak activate",
    );
    ok(
        &mut finish(
            &provenix,
            &f("state.json"),
            &f("response.json"),
            &ca,
            &f("ak-chain.pem"),
        ),
        "ak enroll finish",
    );
    let enrolled = started.elapsed();
    ok(
        Command::new(&provenix)
            .args(["ak", "verify", "--ak-cert"])
            .arg(f("ak-chain.pem"))
            .arg("--ca")
            .arg(&ca.0)
            .arg("--ak-public")
            .arg(f("request.json")),
        "ak verify",
    );
    // The state keeps no secret, only a commitment, and is the operator's.
    let state = std::fs::read_to_string(f("state.json")).unwrap();
    let response: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f("response.json")).unwrap()).unwrap();
    assert!(!state.contains(response["secret"].as_str().unwrap()));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(f("state.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "state.json mode {mode:o}");
    }

    // The worker attests with the enrolled AK; the verifier accepts the
    // bundle under a policy naming the operator CA.
    let policy = |name: &str, ca: &Path| {
        let path = f(name);
        std::fs::write(
            &path,
            format!(
                "trust_amd_roots = false\n# swtpm boots nothing to pin: the AK and quote are under test.\nmeasurements = \"any\"\n[tpm]\nak_roots = [{:?}]\n",
                ca.display().to_string()
            ),
        )
        .unwrap();
        path
    };
    let trusted = policy("policy.toml", &ca.0);
    let artifact = f("artifact.txt");
    std::fs::write(&artifact, b"built by an enrolled TPM\n").unwrap();
    ok(
        Command::new(WORKER)
            .args([
                "attest",
                "--platform",
                "tpm",
                "--tpm-tcti",
                &sw.tcti(),
                "--ak-kind",
                "ecc",
            ])
            .arg("--ak-cert")
            .arg(f("ak-chain.pem"))
            .arg("--event-log")
            .arg(&log_path)
            .arg("--policy")
            .arg(&trusted)
            .arg("--artifact")
            .arg(&artifact),
        "provenix-worker attest",
    );
    let bundle = f("artifact.txt.provenix");
    let verify_bundle = |policy: &Path| {
        let mut cmd = Command::new(&provenix);
        cmd.arg("verify-bundle")
            .arg(&bundle)
            .arg("--artifact")
            .arg(&artifact)
            .arg("--policy")
            .arg(policy);
        cmd
    };
    ok(&mut verify_bundle(&trusted), "verify-bundle, operator CA");
    // Another CA (same subject): the AK certificate does not chain to it.
    let other = openssl_ca(&mkdir(f("other")), "operator-ca");
    let (code, stderr) = run(&mut verify_bundle(&policy("other.toml", &other.0)));
    assert_eq!(code, 1, "verify-bundle under another CA: {stderr}");
    eprintln!(
        "enrollment through both CLIs: {enrolled:?}; with attest and verify: {:?}",
        started.elapsed()
    );
}

#[test]
fn enrollment_refuses_each_broken_piece() {
    let test = "ak_enroll_refusals";
    if !swtpm::tool_available(test, "openssl", &["version"]) {
        return;
    }
    let (Some(sw), Some(other)) = (Swtpm::start(test), Swtpm::start("ak_enroll_other")) else {
        return;
    };
    let provenix = provenix_bin();
    let dir = sw.dir().to_path_buf();
    let f = |name: &str| dir.join(name);
    let ca = openssl_ca(&dir, "operator-ca");
    ok(
        worker_ak("request", &sw, "rsa")
            .arg("--out")
            .arg(f("request.json")),
        "ak request",
    );

    // An EK certificate from another CA: the other swtpm's local CA.
    refused(
        &mut challenge(
            &provenix,
            &other,
            &f("request.json"),
            &f("s.json"),
            &f("c.json"),
        ),
        1,
        "EK certificate",
        "EK CA of another TPM",
    );
    // An AK that is not restricted could sign a forged quote.
    edit_json(
        &f("request.json"),
        &f("unrestricted.json"),
        "ak_public",
        |v| {
            flip_b64(v, 5, 0x01); // objectAttributes bit 16: restricted
        },
    );
    refused(
        &mut challenge(
            &provenix,
            &sw,
            &f("unrestricted.json"),
            &f("s.json"),
            &f("c.json"),
        ),
        1,
        "restricted",
        "unrestricted AK",
    );
    // A CA file that cannot be read is an error, not a refusal.
    refused(
        challenge(
            &provenix,
            &sw,
            &f("request.json"),
            &f("s.json"),
            &f("c.json"),
        )
        .arg("--ek-ca")
        .arg(f("missing.pem")),
        2,
        "missing.pem",
        "an unreadable CA file is an error",
    );

    // Two challenges for the same AK, each with its own state.
    for n in ["1", "2"] {
        ok(
            &mut challenge(
                &provenix,
                &sw,
                &f("request.json"),
                &f(&format!("state{n}.json")),
                &f(&format!("challenge{n}.json")),
            ),
            "ak enroll challenge",
        );
    }
    let activate = |tpm: &Swtpm, kind: &str, challenge: &str, out: &str| {
        let mut cmd = worker_ak("activate", tpm, kind);
        cmd.arg("--challenge")
            .arg(f(challenge))
            .arg("--out")
            .arg(f(out));
        cmd
    };
    // A modified challenge: the TPM's integrity check refuses it.
    edit_json(
        &f("challenge1.json"),
        &f("tampered.json"),
        "credential_blob",
        |v| {
            flip_b64(v, 40, 0x80);
        },
    );
    refused(
        &mut activate(&sw, "rsa", "tampered.json", "r.json"),
        1,
        "the TPM refused the challenge",
        "tampered challenge",
    );
    // Another TPM, or another AK of this one: not the AK the challenge names.
    refused(
        &mut activate(&other, "rsa", "challenge1.json", "r.json"),
        1,
        "the challenge is for the AK named",
        "activation on another swtpm",
    );
    refused(
        &mut activate(&sw, "ecc", "challenge1.json", "r.json"),
        1,
        "the challenge is for the AK named",
        "activation with another AK",
    );
    ok(
        &mut activate(&sw, "rsa", "challenge1.json", "response1.json"),
        "ak activate",
    );

    // A wrong secret.
    edit_json(
        &f("response1.json"),
        &f("wrong-secret.json"),
        "secret",
        |v| {
            flip_b64(v, 0, 0x01);
        },
    );
    refused(
        &mut finish(
            &provenix,
            &f("state1.json"),
            &f("wrong-secret.json"),
            &ca,
            &f("x.pem"),
        ),
        1,
        "the secret does not match",
        "wrong secret",
    );
    // A response replayed against another enrollment's state, as is and
    // with its identifier rewritten.
    refused(
        &mut finish(
            &provenix,
            &f("state2.json"),
            &f("response1.json"),
            &ca,
            &f("x.pem"),
        ),
        1,
        "a response to another enrollment",
        "replayed response",
    );
    let id2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f("state2.json")).unwrap()).unwrap();
    edit_json(&f("response1.json"), &f("replayed.json"), "id", |v| {
        *v = id2["id"].clone();
    });
    refused(
        &mut finish(
            &provenix,
            &f("state2.json"),
            &f("replayed.json"),
            &ca,
            &f("x.pem"),
        ),
        1,
        "the secret does not match",
        "replayed response with the other id",
    );
    // A state whose AK was swapped for another (here: the ECC AK's
    // request) no longer matches the secret's commitment.
    ok(
        worker_ak("request", &sw, "ecc")
            .arg("--out")
            .arg(f("request-ecc.json")),
        "ak request",
    );
    let ecc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f("request-ecc.json")).unwrap()).unwrap();
    edit_json(
        &f("state1.json"),
        &f("swapped-state.json"),
        "ak_public",
        |v| {
            *v = ecc["ak_public"].clone();
        },
    );
    refused(
        &mut finish(
            &provenix,
            &f("swapped-state.json"),
            &f("response1.json"),
            &ca,
            &f("x.pem"),
        ),
        1,
        "the secret does not match",
        "state with another AK",
    );
    // Too late.
    refused(
        finish(
            &provenix,
            &f("state1.json"),
            &f("response1.json"),
            &ca,
            &f("x.pem"),
        )
        .args(["--at", "@4102444800"]),
        1,
        "expired",
        "expired challenge",
    );
    // Files swapped: the challenge given as the response.
    refused(
        &mut finish(
            &provenix,
            &f("state1.json"),
            &f("challenge1.json"),
            &ca,
            &f("x.pem"),
        ),
        1,
        "\"provenix-ak-challenge\" file",
        "challenge as response",
    );
    // A CA key that is not the CA certificate's: an error, nothing written.
    let other_ca = openssl_ca(&mkdir(f("other")), "operator-ca");
    refused(
        &mut finish(
            &provenix,
            &f("state1.json"),
            &f("response1.json"),
            &(ca.0.clone(), other_ca.1.clone()),
            &f("x.pem"),
        ),
        2,
        "does not verify under",
        "mismatched CA key",
    );
    assert!(!f("x.pem").exists());
    // And the untouched files still enroll the RSA AK.
    ok(
        &mut finish(
            &provenix,
            &f("state1.json"),
            &f("response1.json"),
            &ca,
            &f("ak-chain.pem"),
        ),
        "ak enroll finish",
    );
    ok(
        Command::new(&provenix)
            .args(["ak", "verify", "--ak-cert"])
            .arg(f("ak-chain.pem"))
            .arg("--ca")
            .arg(&ca.0)
            .arg("--ak-public")
            .arg(f("request.json")),
        "ak verify",
    );
    refused(
        Command::new(&provenix)
            .args(["ak", "verify", "--ak-cert"])
            .arg(f("ak-chain.pem"))
            .arg("--ca")
            .arg(&other_ca.0)
            .arg("--ak-public")
            .arg(f("request.json")),
        1,
        "AK certificate",
        "ak verify under another CA",
    );
}

/// `path`, created as a directory.
fn mkdir(path: PathBuf) -> PathBuf {
    std::fs::create_dir_all(&path).unwrap();
    path
}
