//! Event-log replays per second: parse and replay the GCE SEV-SNP log
//! (`../shared/vectors/tpm/gce-ubuntu2404-amd-sevsnp/eventlog.bin`, 117
//! events, three banks) with [`EventLog::parse`] and [`replay`], beside
//! Debian's `tpm2_eventlog` on the same file, spawned once per iteration
//! (which is how a script would use it; its process start is part of its
//! cost).
//!
//! One group, `tpm_replay`: `parse_replay` and `tpm2_eventlog`. The ratio
//! printed at the end (`tpm2_eventlog / parse_replay`) is the result; the
//! machines are shared and absolute times are noisy. Run with `cargo bench
//! -p provenix-verifier --bench tpm_replay`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group};
use provenix_firmware::tpm::{EventLog, HashAlg};
use provenix_verifier::tpm::replay;

const GROUP: &str = "tpm_replay";
const OURS: &str = "parse_replay";
const TOOL: &str = "tpm2_eventlog";
const LOG: &str = "vectors/tpm/gce-ubuntu2404-amd-sevsnp/eventlog.bin";
/// Its SHA-256 PCR 0 (the vector's expected_pcrs.json): each bench must
/// time a correct replay, not an early error.
const PCR0: &str = "50597a27846e91d025eef597abbc89f72bff9af849094db97b0684d8bc4c515e";

fn shared_dir() -> PathBuf {
    std::env::var_os("PROVENIX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

fn parse_replay(bytes: &[u8]) -> Option<Vec<u8>> {
    let log = EventLog::parse(bytes).ok()?;
    replay(&log).get(HashAlg::Sha256, 0).map(<[u8]>::to_vec)
}

fn tool(path: &Path) -> bool {
    Command::new(TOOL)
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && o.stdout.windows(PCR0.len()).any(|w| w == PCR0.as_bytes())
        })
}

fn tpm_replay(c: &mut Criterion) {
    let path = shared_dir().join(LOG);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "SKIP {GROUP}: {}: {e} (set PROVENIX_SHARED)",
                path.display()
            );
            return;
        }
    };
    if parse_replay(&bytes).map(hex::encode).as_deref() != Some(PCR0) {
        eprintln!(
            "SKIP {GROUP}: {} does not replay to its expected PCR 0",
            path.display()
        );
        return;
    }
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));
    group.bench_function(OURS, |b| {
        b.iter(|| black_box(parse_replay(black_box(&bytes))))
    });
    if tool(&path) {
        group.bench_function(TOOL, |b| b.iter(|| black_box(tool(black_box(&path)))));
    } else {
        eprintln!("SKIP {GROUP}/{TOOL}: not installed or disagrees on PCR 0");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    targets = tpm_replay
}

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratio(started);
}

/// Replays per second and the ratio, from the estimates criterion wrote in
/// this run (nothing when a bench was filtered out, so stale figures never
/// mix in).
fn print_ratio(started: SystemTime) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("criterion"));
    let estimate = |bench: &str| -> Option<f64> {
        let path = home.join(GROUP).join(bench).join("new/estimates.json");
        if std::fs::metadata(&path).and_then(|m| m.modified()).ok()? < started {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        ["slope", "mean"]
            .iter()
            .find_map(|k| json.get(k)?.get("point_estimate")?.as_f64())
    };
    let Some(ours) = estimate(OURS) else { return };
    println!(
        "{GROUP}: parse+replay {:.1} us, {:.0} replays/s",
        ours / 1e3,
        1e9 / ours
    );
    if let Some(tool) = estimate(TOOL) {
        println!(
            "{GROUP}: tpm2_eventlog {:.2} ms, {:.0} runs/s; tpm2_eventlog/parse_replay = {:.0}x",
            tool / 1e6,
            1e9 / tool,
            tool / ours
        );
    }
}
