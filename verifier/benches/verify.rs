//! How much authenticating an SEV-SNP report costs next to its floor: one
//! ECDSA P-384 verification of the report signature.
//!
//! One group, `snp_verify`, three benches on the same real report (project
//! Oak's Milan v3 report, its VCEK and AMD's Milan ASK/ARK from
//! `../shared/vectors/snp`):
//!
//! - `ring_ecdsa_p384_raw`: ring's ECDSA P-384/SHA-384 over the signed bytes
//!   with the VCEK's key. Nothing can be faster than this.
//! - `verify_cached`: [`Verifier::authenticate`] on a verifier that has seen
//!   this VCEK and chain before, so the chain is cached.
//! - `verify_cold`: a new [`Verifier`] each time: parse the VCEK, ASK and
//!   ARK, two RSA-4096 PSS chain checks, then the report.
//!
//! The machines are shared and noisy, so absolute times mean little; the
//! ratios printed at the end (`cached/raw`, `cold/raw`) are the result. The
//! target is `cached/raw <= 1.25`. Run with `cargo bench -p
//! provenix-verifier --bench verify`; see `benches/README.md`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group};
use provenix_firmware::snp::AttestationReport;
use provenix_verifier::{TrustAnchors, Verifier, certificates_from_pem_or_der};
use ring::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};

/// The criterion group, and the directory under criterion's output folder
/// where its estimates land.
const GROUP: &str = "snp_verify";
const RAW: &str = "ring_ecdsa_p384_raw";
const CACHED: &str = "verify_cached";
const COLD: &str = "verify_cold";

/// The vector (an entry of `vectors/snp/vectors.json`, id `oak-milan-v3`).
const REPORT: &str = "project-oak/milan_report.bin";
const VCEK: &str = "project-oak/milan_vcek.der";
const CHAIN: &str = "amd-anchors/ask_ark_milan.pem";
/// 2026-06-01T00:00:00Z, when every VCEK in the vectors is valid (vectors
/// README, "Clock"; the same instant as the tests' `vcek_time()`).
const AT: i64 = 1_780_272_000;

/// Everything the benches need, loaded and checked once.
struct Vector {
    report: AttestationReport,
    vcek: Vec<u8>,
    chain: Vec<Vec<u8>>,
    /// The VCEK's uncompressed P-384 point.
    point: Vec<u8>,
    /// The report signature as ring takes it: big-endian `r || s`.
    signature: [u8; 96],
}

/// `PROVENIX_SHARED`, or `../shared` beside the repository, as the tests
/// find it (`verifier/tests/common`).
fn shared_dir() -> PathBuf {
    std::env::var_os("PROVENIX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

fn load() -> Result<Vector, String> {
    let dir = shared_dir().join("vectors/snp");
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let report =
        AttestationReport::from_bytes(&read(REPORT)?).map_err(|e| format!("{REPORT}: {e}"))?;
    let vcek = certificates_from_pem_or_der(&read(VCEK)?)
        .map_err(|e| format!("{VCEK}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{VCEK}: no certificate"))?;
    let chain = certificates_from_pem_or_der(&read(CHAIN)?).map_err(|e| format!("{CHAIN}: {e}"))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&vcek).map_err(|e| format!("{VCEK}: {e}"))?;
    let point = cert.public_key().subject_public_key.data.to_vec();

    // R and S are 48-byte little-endian fields (SEV-SNP ABI spec, Table 142
    // and the ECDSA signature format table); ring wants big-endian r || s.
    let mut signature = [0u8; 96];
    let (r, s) = signature.split_at_mut(48);
    r.copy_from_slice(report.signature_r());
    s.copy_from_slice(report.signature_s());
    r.reverse();
    s.reverse();

    let vector = Vector {
        report,
        vcek,
        chain,
        point,
        signature,
    };
    // Every bench must time a success, not an early error.
    vector
        .raw()
        .map_err(|_| "ring rejects the report signature".to_owned())?;
    let verifier = new_verifier()?;
    vector
        .authenticate(&verifier)
        .map_err(|e| format!("authenticate: {e}"))?;
    vector
        .authenticate(&verifier)
        .map_err(|e| format!("authenticate (cached): {e}"))?;
    Ok(vector)
}

fn new_verifier() -> Result<Verifier, String> {
    TrustAnchors::amd()
        .map(Verifier::new)
        .map_err(|e| format!("AMD anchors: {e}"))
}

impl Vector {
    fn raw(&self) -> Result<(), ring::error::Unspecified> {
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &self.point)
            .verify(self.report.signed_bytes(), &self.signature)
    }

    fn authenticate(
        &self,
        verifier: &Verifier,
    ) -> Result<provenix_verifier::AuthenticatedReport, provenix_verifier::Error> {
        verifier.authenticate(&self.report, &self.vcek, &self.chain, AT)
    }
}

fn snp_verify(c: &mut Criterion) {
    let vector = match load() {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "SKIP {GROUP}: {e} (shared vectors looked for in {}; set PROVENIX_SHARED)",
                shared_dir().display()
            );
            return;
        }
    };
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));

    group.bench_function(RAW, |b| {
        b.iter(|| black_box(black_box(&vector).raw()));
    });

    let warm = match new_verifier() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("SKIP {GROUP}: {e}");
            return;
        }
    };
    group.bench_function(CACHED, |b| {
        b.iter(|| black_box(black_box(&vector).authenticate(&warm)));
    });

    group.bench_function(COLD, |b| {
        b.iter(|| {
            // `TrustAnchors::amd()` is memoised: this clones the embedded
            // anchors, it does not parse them again.
            let verifier = TrustAnchors::amd().map(Verifier::new);
            black_box(verifier.map(|v| black_box(&vector).authenticate(&v)))
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short enough that the whole run stays well under a minute; the result
    // is the ratio, which these times estimate well enough. 50 samples of a
    // ~1 ms routine fit in 3 s (100 would need ~5 s per bench).
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = snp_verify
}

/// `criterion_main!(benches)`, plus the ratios at the end.
fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios(started);
}

/// Print `cached/raw` and `cold/raw` from the estimates criterion just wrote.
/// Says nothing when a bench did not run in this process (a filter,
/// `--test`, `--list`), so stale estimates are never mixed in.
fn print_ratios(started: SystemTime) {
    let dir = criterion_home().join(GROUP);
    let estimate = |bench: &str| -> Option<f64> {
        let path = dir.join(bench).join("new/estimates.json");
        let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        if written < started {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        // The figure criterion prints as `time:`: the slope of the linear
        // regression when it sampled linearly, else the mean.
        ["slope", "mean"]
            .iter()
            .find_map(|k| json.get(k)?.get("point_estimate")?.as_f64())
    };
    let (Some(raw), Some(cached), Some(cold)) = (estimate(RAW), estimate(CACHED), estimate(COLD))
    else {
        return;
    };
    println!(
        "{GROUP}: raw {raw:.0} ns, cached {cached:.0} ns, cold {cold:.0} ns per report\n\
         {GROUP}: cached/raw = {:.2}x (target <= 1.25x), cold/raw = {:.2}x",
        cached / raw,
        cold / raw
    );
}

/// Where criterion writes, found as criterion finds it: `CRITERION_HOME`,
/// else `$CARGO_TARGET_DIR/criterion`, else the target directory `cargo
/// metadata` names, else `target/criterion`.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let from_metadata = || -> Option<PathBuf> {
        let output = std::process::Command::new(std::env::var_os("CARGO")?)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        Some(PathBuf::from(json.get("target_directory")?.as_str()?))
    };
    from_metadata()
        .map(|t| t.join("criterion"))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}
