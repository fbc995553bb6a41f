//! Quotes, keys and NV reads on a real software TPM (swtpm) through the
//! `tpm` feature, each quote checked by tpm2-tools' `tpm2_checkquote`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/swtpm.rs"]
mod swtpm;

use std::path::Path;
use std::process::Command;

use provenix_firmware::Error;
use provenix_firmware::tpm::HashAlg;
use provenix_firmware::tpm::device::{
    AkKind, EkKind, MAX_QUALIFYING_DATA, QUOTE_ATTEMPTS, Quote, Tpm, read_event_log,
};
use swtpm::Swtpm;

/// PCRs a measured boot fills (0-7: firmware and boot path, 9: the Linux
/// EFI stub's initrd) and one a test may extend (16, the debug PCR).
const PCRS: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 16];

fn start(test: &str) -> Option<(Swtpm, Tpm)> {
    if !swtpm::tool_available(test, "tpm2_checkquote", &["--version"]) {
        return None;
    }
    let sw = Swtpm::start(test)?;
    let tpm = Tpm::open(Some(&sw.tcti())).unwrap();
    Some((sw, tpm))
}

/// `tpm2_checkquote` on `quote` under the AK's TPM2B_PUBLIC, with the
/// qualifying data and, when the quote covers at most two PCRs per bank,
/// the PCR values read; true when it accepts. (tpm2-tools 5.4 fails with
/// "Failed to hash PCR values" on a raw PCR file of two banks with more
/// PCRs; the quote's pcrDigest is then checked by `Tpm::quote` itself and
/// by the verifier's tests.)
fn checkquote(dir: &Path, ak_public_2b: &[u8], quote: &Quote, qualifying: &[u8]) -> bool {
    std::fs::write(dir.join("ak.pub"), ak_public_2b).unwrap();
    std::fs::write(dir.join("quote.msg"), &quote.attest).unwrap();
    std::fs::write(dir.join("quote.sig"), &quote.signature).unwrap();
    let values: Vec<u8> = quote.pcrs.iter().flat_map(|p| p.value.clone()).collect();
    std::fs::write(dir.join("quote.pcrs"), values).unwrap();
    // The selection string in the quote's bank order, which is the values'.
    let mut banks: Vec<String> = Vec::new();
    let mut order: Vec<HashAlg> = quote.pcrs.iter().map(|p| p.bank).collect();
    order.dedup();
    for bank in order {
        let pcrs: Vec<String> = quote
            .pcrs
            .iter()
            .filter(|p| p.bank == bank)
            .map(|p| p.index.to_string())
            .collect();
        banks.push(format!("{bank}:{}", pcrs.join(",")));
    }
    let mut command = Command::new("tpm2_checkquote");
    command
        .current_dir(dir)
        .args([
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-g",
            "sha256",
        ])
        .args(["-q", &hex::encode(qualifying)]);
    if quote.pcrs.len() <= 2 * banks.len() {
        command.args(["-f", "quote.pcrs", "-l", &banks.join("+")]);
    }
    let out = command.output().unwrap();
    if !out.status.success() {
        eprintln!("tpm2_checkquote: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

#[test]
fn quotes_with_both_ak_kinds_pass_tpm2_checkquote() {
    let Some((sw, mut tpm)) = start("quotes_with_both_ak_kinds") else {
        return;
    };
    assert_eq!(tpm.pcr_banks().unwrap(), [HashAlg::Sha256, HashAlg::Sha384]);
    let qualifying = [0x5A; MAX_QUALIFYING_DATA];
    for kind in [AkKind::EccP256, AkKind::Rsa2048] {
        let ak = tpm.attestation_key(kind, None).unwrap();
        let started = std::time::Instant::now();
        let quote = tpm.quote(&ak, &qualifying, &PCRS).unwrap();
        eprintln!("{kind:?}: quote in {:?}", started.elapsed());
        assert_eq!(quote.attempts, 1);
        assert_eq!(quote.pcrs.len(), 2 * PCRS.len(), "both banks");
        assert!(quote.pcrs.iter().all(|p| p.value.len() == p.bank.size()));
        assert!(
            checkquote(sw.dir(), &ak.public_2b(), &quote, &qualifying),
            "{kind:?}"
        );
        // Two PCRs per bank: tpm2_checkquote checks the values too.
        let small = tpm.quote(&ak, &qualifying, &[0, 16]).unwrap();
        assert!(checkquote(sw.dir(), &ak.public_2b(), &small, &qualifying));
        let mut wrong = small.clone();
        wrong.pcrs[0].value[0] ^= 1;
        assert!(!checkquote(sw.dir(), &ak.public_2b(), &wrong, &qualifying));
        // One flipped bit of the quote and tpm2_checkquote refuses it.
        let mut bad = quote.clone();
        let last = bad.attest.len() - 1;
        bad.attest[last] ^= 1;
        assert!(!checkquote(sw.dir(), &ak.public_2b(), &bad, &qualifying));
    }
}

#[test]
fn the_same_tpm_gives_the_same_ak_and_a_persisted_one_loads() {
    let Some((sw, mut tpm)) = start("same_ak") else {
        return;
    };
    let first = tpm.attestation_key(AkKind::EccP256, None).unwrap();
    let persisted = tpm
        .attestation_key(AkKind::EccP256, Some(0x8100_0010))
        .unwrap();
    assert_eq!(
        first.public(),
        persisted.public(),
        "a primary key is derived"
    );
    drop(tpm);
    // A new connection finds it at the handle and quotes with it.
    let mut tpm = Tpm::open(Some(&sw.tcti())).unwrap();
    let loaded = tpm
        .attestation_key(AkKind::EccP256, Some(0x8100_0010))
        .unwrap();
    assert_eq!(loaded.public(), first.public());
    let quote = tpm.quote(&loaded, b"nonce", &[0]).unwrap();
    assert!(checkquote(sw.dir(), &loaded.public_2b(), &quote, b"nonce"));
    // The handle holds an ECC AK: asking it for an RSA one is refused.
    let err = tpm
        .attestation_key(AkKind::Rsa2048, Some(0x8100_0010))
        .unwrap_err();
    assert!(matches!(err, Error::TpmUnsupported(_)), "{err}");
}

#[test]
fn qualifying_data_over_64_bytes_is_refused_by_name() {
    let Some((_sw, mut tpm)) = start("qualifying_data_size") else {
        return;
    };
    let ak = tpm.attestation_key(AkKind::EccP256, None).unwrap();
    let err = tpm.quote(&ak, &[0; 65], &PCRS).unwrap_err();
    assert!(
        matches!(err, Error::QualifyingDataSize { found: 65, max: 64 }),
        "{err}"
    );
}

#[test]
fn a_pcr_extended_between_read_and_quote_is_retried() {
    let Some((sw, mut tpm)) = start("pcr_retry") else {
        return;
    };
    let ak = tpm.attestation_key(AkKind::Rsa2048, None).unwrap();
    // Extend PCR 16 after the first read, before the first quote: that
    // quote's pcrDigest no longer matches what was read, so it is done
    // again, and the second round is consistent.
    let mut extend_once = |tpm: &mut Tpm, attempt: u32| {
        if attempt == 1 {
            tpm.pcr_extend(16, HashAlg::Sha256, &[0xAB; 32])?;
        }
        Ok(())
    };
    let quote = tpm
        .quote_with_hook(&ak, b"retry", &PCRS, &mut extend_once)
        .unwrap();
    assert_eq!(quote.attempts, 2);
    let pcr16 = quote
        .pcrs
        .iter()
        .find(|p| p.bank == HashAlg::Sha256 && p.index == 16)
        .unwrap();
    assert_ne!(pcr16.value, [0; 32], "the extended value was read");
    assert!(checkquote(sw.dir(), &ak.public_2b(), &quote, b"retry"));
    let quote = tpm
        .quote_with_hook(&ak, b"retry", &[7, 16], &mut extend_once)
        .unwrap();
    assert_eq!(quote.attempts, 2);
    // Two PCRs per bank: tpm2_checkquote also checks the values read.
    assert!(checkquote(sw.dir(), &ak.public_2b(), &quote, b"retry"));

    // A PCR that changes every time: a named error after the last attempt.
    let mut extend_always =
        |tpm: &mut Tpm, _: u32| tpm.pcr_extend(16, HashAlg::Sha384, &[0xCD; 48]);
    let err = tpm
        .quote_with_hook(&ak, b"retry", &PCRS, &mut extend_always)
        .unwrap_err();
    assert!(
        matches!(err, Error::PcrsUnstable { attempts } if attempts == QUOTE_ATTEMPTS),
        "{err}"
    );
}

#[test]
fn ek_certificate_from_nv_certifies_the_default_template_ek() {
    let Some((sw, mut tpm)) = start("ek_cert") else {
        return;
    };
    let cert = tpm.ek_certificate(EkKind::Rsa2048).unwrap().unwrap();
    let pem = std::fs::read_to_string(sw.ca_issuer()).unwrap();
    assert!(cert.starts_with(&[0x30, 0x82]), "DER");
    assert!(!pem.is_empty());
    // The EK from the default template is the key the certificate names:
    // its modulus (the TPMT_PUBLIC's last 256 bytes) is in the certificate.
    let ek = tpm.endorsement_key(EkKind::Rsa2048).unwrap();
    let modulus = &ek.public()[ek.public().len() - 256..];
    assert!(cert.windows(256).any(|w| w == modulus));
    // swtpm makes no P-256 EK certificate, no cloud AK certificate; the
    // platform certificate (EK Credential Profile 0x01C08000) is there.
    assert_eq!(tpm.ek_certificate(EkKind::EccP256).unwrap(), None);
    assert_eq!(tpm.cloud_ak_certificate().unwrap(), None);
    assert!(tpm.nv_read(0x01c0_8000).unwrap().is_some());
}

#[test]
fn event_log_path_is_overridable_and_a_missing_one_is_named() {
    let dir = std::env::temp_dir().join(format!("provenix-eventlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("binary_bios_measurements");
    std::fs::write(&log, [1, 2, 3]).unwrap();
    assert_eq!(read_event_log(Some(&log)).unwrap(), [1, 2, 3]);
    let missing = dir.join("absent");
    let err = read_event_log(Some(&missing)).unwrap_err().to_string();
    assert!(err.contains("absent"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tcti_that_names_nothing_is_refused() {
    let err = Tpm::open(Some("carrier-pigeon:coop")).unwrap_err();
    assert!(err.to_string().contains("carrier-pigeon"), "{err}");
}
