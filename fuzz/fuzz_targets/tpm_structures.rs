//! The TPM structure parsers on arbitrary bytes: `Attest`, `Signature` and
//! `Public` (each bare and TPM2B-sized) and Azure's `HclReport`. The first
//! byte picks the parser. Parsing never panics, and what parses is the
//! bytes received: `as_bytes` returns them, a signature marshals back to
//! them, a quote's PCR selections marshal back to their bytes. A parsed
//! public area then goes through the verifier's AK checks and name.

#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_firmware::tpm::hcl::HclReport;
use provenix_firmware::tpm::structures::{Attest, Public, Signature};
use provenix_verifier::tpm::{AttestationKey, bound_runtime_data, name_of};

fn attest(a: &Attest) {
    if let Some(q) = a.quote() {
        let mut marshalled = Vec::new();
        for sel in &q.pcr_select {
            marshalled.extend_from_slice(&sel.to_bytes());
            for pcr in sel.pcrs() {
                assert!(sel.contains(pcr));
            }
        }
        // The selections sit between the fixed header fields and pcrDigest.
        let bytes = a.as_bytes();
        let end = bytes.len() - 2 - q.pcr_digest.len();
        assert!(bytes[..end].ends_with(&marshalled));
        let _ = q.selected().count();
    }
    let _ = (
        a.qualified_signer(),
        a.extra_data(),
        a.clock_info(),
        a.firmware_version(),
        format!("{a:?}"),
    );
}

fn public(p: &Public) {
    let _ = (p.name_alg(), p.auth_policy(), p.scheme(), p.key());
    let _ = p.object_attributes().to_string();
    assert_eq!(name_of(p).len(), 2 + p.name_alg().size());
    if let Ok(ak) = AttestationKey::from_public(p) {
        assert!(p.object_attributes().restricted() && p.object_attributes().sign());
        assert_eq!(ak.name(), Some(name_of(p).as_slice()));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => {
            if let Ok(a) = Attest::from_bytes(input) {
                assert_eq!(a.as_bytes(), input);
                attest(&a);
            }
        }
        1 => {
            if let Ok(a) = Attest::from_tpm2b(input) {
                assert_eq!(a.as_bytes(), &input[2..]);
                attest(&a);
            }
        }
        2 => {
            if let Ok(s) = Signature::from_bytes(input) {
                assert_eq!(s.to_bytes().as_deref(), Some(input));
                let _ = (s.scheme(), s.hash());
            }
        }
        3 => {
            if let Ok(p) = Public::from_bytes(input) {
                assert_eq!(p.as_bytes(), input);
                public(&p);
            }
        }
        4 => {
            if let Ok(p) = Public::from_tpm2b(input) {
                assert_eq!(p.as_bytes(), &input[2..]);
                public(&p);
            }
        }
        _ => {
            if let Ok(r) = HclReport::from_bytes(input) {
                assert_eq!(r.as_bytes(), input);
                let _ = (
                    r.version(),
                    r.report_data_hash(),
                    r.hw_report().report_data(),
                );
                assert!(r.runtime_data().len() <= input.len());
                let _ = bound_runtime_data(&r);
            }
        }
    }
});
