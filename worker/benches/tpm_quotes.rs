//! Quotes per second against swtpm: the worker's `Tpm::quote` (read the
//! PCRs, quote, check pcrDigest against what was read) with an ECC P-256
//! and an RSA 2048 attestation key, beside tpm2-tools' `tpm2_quote` of the
//! same PCRs with the same kind of key, one process per quote, in the same
//! run on the same swtpm.
//!
//! `cargo bench -p provenix-worker --bench tpm_quotes`; under `cargo test
//! --benches` one short round shows that it works.

// A bench that cannot set up has nothing to measure: it stops loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/swtpm.rs"]
mod swtpm;

use std::process::Command;
use std::time::Instant;

use provenix_firmware::tpm::device::{AkKind, Tpm};

const PCRS: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 5 } else { 200 };
    let Some(sw) = swtpm::Swtpm::start("tpm_quotes") else {
        return;
    };
    let qualifying = [0x5a; 32];
    let mut ours = Vec::new();
    for kind in [AkKind::EccP256, AkKind::Rsa2048] {
        let mut tpm = Tpm::open(Some(&sw.tcti())).unwrap();
        let ak = tpm.attestation_key(kind, None).unwrap();
        tpm.quote(&ak, &qualifying, &PCRS).unwrap(); // warm up
        let started = Instant::now();
        for _ in 0..rounds {
            tpm.quote(&ak, &qualifying, &PCRS).unwrap();
        }
        let per = started.elapsed().as_secs_f64() / f64::from(rounds);
        ours.push((kind, per));
    }
    // The peer: tpm2_quote with an AK that tpm2_createak made, the context
    // loaded once, one process per quote as a shell script would run it.
    let dir = sw.dir();
    let tools = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", sw.tcti())
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
        assert!(
            out.status.success(),
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // swtpm has no resource manager: every object a tool loads stays
    // loaded, and it has three slots. Flushing is not timed.
    let flush = || {
        tools(&["tpm2_flushcontext", "-t"]);
        tools(&["tpm2_flushcontext", "-s"]);
    };
    tools(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
    let mut peer = Vec::new();
    for (alg, sig) in [("ecc", "ecdsa"), ("rsa", "rsassa")] {
        tools(&[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            alg,
            "-g",
            "sha256",
            "-s",
            sig,
        ]);
        flush();
        let peer_rounds = rounds.min(50);
        let mut spent = std::time::Duration::ZERO;
        for _ in 0..peer_rounds {
            let started = Instant::now();
            tools(&[
                "tpm2_quote",
                "-c",
                "ak.ctx",
                "-l",
                "sha256:0,1,2,3,4,5,6,7,8,9",
                "-q",
                "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-o",
                "quote.pcrs",
            ]);
            spent += started.elapsed();
            flush();
        }
        let per = spent.as_secs_f64() / f64::from(peer_rounds);
        peer.push((alg, per));
    }
    for ((kind, o), (alg, p)) in ours.iter().zip(&peer) {
        println!(
            "tpm_quotes/{kind:?}: provenix {:.2} ms ({:.0}/s), tpm2_quote ({alg}) {:.2} ms ({:.0}/s), ratio {:.1}x",
            o * 1e3,
            1.0 / o,
            p * 1e3,
            1.0 / p,
            p / o
        );
    }
}
