//! `Verifier::authenticate` on mutated evidence: a report, an endorsement key
//! and a chain, none of which may make the verifier panic.
//!
//! Input layout (all lengths little-endian; `seeds.sh` writes it):
//!
//! ```text
//! 0      u8   time: index into TIMES, modulo its length
//! 1..3   u16  report length (a report is 1184 bytes, ABI spec Table 23)
//! 3..5   u16  VEK length (DER)
//! 5..    the report, the VEK, then the rest: the chain, PEM or one DER
//!        certificate, as `certificates_from_pem_or_der` takes it; empty
//!        means "no chain", so the verifier uses its embedded ASKs and ARKs
//! ```
//!
//! One verifier serves every input, so its chain cache is exercised too.
//! Each input is authenticated twice, and the second answer, which may come
//! from the cache, must be the first.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use provenix_firmware::snp::AttestationReport;
use provenix_verifier::{AuthenticatedReport, Error, TrustAnchors, Verifier};

/// Verification times, unix seconds.
const TIMES: [i64; 7] = [
    1_780_272_000, // 2026-06-01: every VCEK in the vectors is valid
    1_748_736_000, // 2025-06-01: inside the AWS VLEK's one-year validity
    1_795_305_600, // 2026-11-22: the tests' pinned "today"
    0,
    -1,
    i64::MIN,
    i64::MAX,
];

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| match TrustAnchors::amd() {
        Ok(anchors) => Verifier::new(anchors),
        Err(e) => panic!("embedded AMD anchors: {e}"),
    })
}

struct Input<'a> {
    at: i64,
    report: &'a [u8],
    vek: &'a [u8],
    chain: &'a [u8],
}

fn split(data: &[u8]) -> Option<Input<'_>> {
    let (&[time, r0, r1, v0, v1], rest) = data.split_first_chunk::<5>()?;
    let at = TIMES[usize::from(time) % TIMES.len()];
    let (report, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes([r0, r1])))?;
    let (vek, chain) = rest.split_at_checked(usize::from(u16::from_le_bytes([v0, v1])))?;
    Some(Input {
        at,
        report,
        vek,
        chain,
    })
}

/// What must not change between two calls on the same input.
fn outcome(result: &Result<AuthenticatedReport, Error>) -> String {
    match result {
        Ok(auth) => format!(
            "ok {} {} {:02x?} {:02x?} {:?}",
            auth.product(),
            auth.signer(),
            auth.root_fingerprint(),
            auth.vek_fingerprint(),
            auth.csp_id()
        ),
        Err(e) => format!("error {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = split(data) else {
        return;
    };
    let Ok(report) = AttestationReport::from_bytes(input.report) else {
        return;
    };
    let chain = if input.chain.is_empty() {
        Vec::new()
    } else {
        match provenix_verifier::certificates_from_pem_or_der(input.chain) {
            Ok(chain) => chain,
            Err(_) => return,
        }
    };

    let verifier = verifier();
    let first = verifier.authenticate(&report, input.vek, &chain, input.at);
    if let Ok(auth) = &first {
        // The verifier vouches for the bytes it was given, not a copy.
        assert_eq!(auth.report().as_bytes().as_slice(), input.report);
        let _ = format!("{auth:?}");
    } else if let Err(e) = &first {
        let _ = format!("{e:?}");
    }
    let second = verifier.authenticate(&report, input.vek, &chain, input.at);
    assert_eq!(outcome(&first), outcome(&second), "a second call disagrees");
});
