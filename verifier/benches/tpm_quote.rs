//! Quote verifications per second, beside `tpm2_checkquote` on the same
//! quote in the same run.
//!
//! Setup: a real swtpm (through tpm2-tools, as `tests/tpm_quote.rs` runs
//! it) makes an RSA-2048 (RSASSA-SHA256) and an ECC P-256 (ECDSA-SHA256) AK
//! under its EK and quotes sha256:0,1,7,16 with each. One iteration of
//! `verify_*` parses the AK's TPM2B_PUBLIC and the TPMT_SIGNATURE, checks
//! the AK, the signature, the qualifying data and the PCR digest. One
//! iteration of `checkquote_*` spawns `tpm2_checkquote` on the same files:
//! that is how a shell pipeline verifies a quote, so the process start is
//! part of its cost. The ratios printed at the end are the result. Without
//! swtpm or tpm2-tools the bench prints SKIP.
//!
//! Run with `cargo bench -p provenix-verifier --bench tpm_quote`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/tpm_quote/swtpm.rs"]
mod swtpm;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use provenix_firmware::tpm::HashAlg;
use provenix_firmware::tpm::structures::{Public, Signature};
use provenix_verifier::tpm::{AttestationKey, PcrValues, verify_quote};
use swtpm::{AKS, SwQuote, Swtpm};

const GROUP: &str = "tpm_quote";
const PCRS: [u32; 4] = [0, 1, 7, 16];

/// Nanoseconds per iteration of each bench, from its last batch.
static PER_ITER: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

fn record(name: &str, iters: u64, elapsed: Duration) -> Duration {
    let per = elapsed.as_secs_f64() * 1e9 / iters.max(1) as f64;
    PER_ITER.lock().unwrap().insert(name.to_owned(), per);
    elapsed
}

struct Case {
    quote: SwQuote,
    qualifying: Vec<u8>,
    pcrs: PcrValues,
}

impl Case {
    fn verify(&self) -> bool {
        let Ok(public) = Public::from_tpm2b(&self.quote.ak_public) else {
            return false;
        };
        let (Ok(ak), Ok(sig)) = (
            AttestationKey::from_public(&public),
            Signature::from_bytes(&self.quote.signature),
        ) else {
            return false;
        };
        verify_quote(&ak, &self.quote.attest, &sig, &self.qualifying, &self.pcrs).is_ok()
    }
}

fn tpm_quote(c: &mut Criterion) {
    if !swtpm::tools_present() {
        eprintln!("SKIP {GROUP}: swtpm or tpm2-tools missing");
        return;
    }
    let tpm = Swtpm::start();
    tpm.tool(&["tpm2_pcrextend", &format!("16:sha256={}", "cd".repeat(32))]);
    let qualifying = vec![0x5A; 32];
    let cases: Vec<(&str, Case)> = [("rsa2048", &AKS[0]), ("p256", &AKS[1])]
        .into_iter()
        .map(|(label, spec)| {
            let quote = tpm.ak_quote(spec, "sha256:0,1,7,16", &hex::encode(&qualifying));
            let pcrs = PCRS
                .iter()
                .zip(quote.values.chunks(32))
                .map(|(&i, v)| ((HashAlg::Sha256, i), v.to_vec()))
                .collect();
            let case = Case {
                quote,
                qualifying: qualifying.clone(),
                pcrs,
            };
            // Both sides must time a success, not an early error.
            assert!(case.verify(), "{label}: our verifier refuses the quote");
            assert!(
                tpm.checkquote(&case.quote),
                "{label}: tpm2_checkquote refuses it"
            );
            (label, case)
        })
        .collect();

    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));
    for (label, case) in &cases {
        let name = format!("verify_{label}");
        group.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    assert!(black_box(black_box(case).verify()));
                }
                record(&name, iters, start.elapsed())
            });
        });
        let name = format!("checkquote_{label}");
        group.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    assert!(tpm.checkquote(&case.quote));
                }
                record(&name, iters, start.elapsed())
            });
        });
    }
    group.finish();
    drop(tpm);

    let per = PER_ITER.lock().unwrap();
    for (label, _) in &cases {
        if let (Some(ours), Some(theirs)) = (
            per.get(&format!("verify_{label}")),
            per.get(&format!("checkquote_{label}")),
        ) {
            println!(
                "{GROUP} {label}: provenix {:.0}/s ({ours:.0} ns), tpm2_checkquote {:.1}/s ({:.2} ms), ratio {:.0}x",
                1e9 / ours,
                1e9 / theirs,
                theirs / 1e6,
                theirs / ours
            );
        }
    }
}

criterion_group! {
    name = benches;
    // tpm2_checkquote takes milliseconds per spawn: few samples, short runs.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = tpm_quote
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
