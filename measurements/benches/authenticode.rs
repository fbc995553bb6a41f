//! The Authenticode digest of Debian's cloud kernel (target/vm/kernel, from
//! tests/vm/fetch-kernel.sh), ours next to osslsigncode's on the same file
//! in the same run:
//!
//! - `ours_sha256`: read the file, parse it, SHA-256 Authenticode;
//! - `osslsigncode_sha256`: `osslsigncode extract-data -h sha256`, which
//!   reads, parses and hashes the file the same way, plus a process start
//!   and a small DER write (about a millisecond of its time).
//!
//! Run with `cargo bench -p provenix-measurements --bench authenticode`;
//! the ratio is printed at the end.

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use provenix_firmware::tpm::HashAlg;
use provenix_measurements::tpm::PeImage;

fn kernel() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("sh")
        .arg(repo.join("tests/vm/fetch-kernel.sh"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("vmlinuz"))
}

fn ours(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    PeImage::parse(&bytes)
        .unwrap()
        .authenticode(HashAlg::Sha256)
}

fn osslsigncode(path: &Path, out: &Path) {
    let _ = std::fs::remove_file(out);
    let ok = Command::new("osslsigncode")
        .args(["extract-data", "-h", "sha256", "-in"])
        .arg(path)
        .arg("-out")
        .arg(out)
        .output()
        .unwrap();
    assert!(ok.status.success());
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

fn main() {
    let Some(kernel) = kernel() else {
        eprintln!("SKIP: no cloud kernel (tests/vm/fetch-kernel.sh failed)");
        return;
    };
    if Command::new("osslsigncode")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: osslsigncode is not installed");
        return;
    }
    let out = std::env::temp_dir().join(format!("authenticode-bench-{}.der", std::process::id()));
    let size = std::fs::metadata(&kernel).unwrap().len();
    let runs = 21;
    let t_ours = median(runs, || {
        black_box(ours(&kernel));
    });
    let t_theirs = median(runs, || osslsigncode(&kernel, &out));
    let _ = std::fs::remove_file(&out);
    let mib = |t: Duration| size as f64 / t.as_secs_f64() / f64::from(1 << 20);
    println!(
        "kernel {} ({size} bytes), median of {runs}:",
        kernel.display()
    );
    println!(
        "  ours_sha256          {:>8.2} ms  {:>7.0} MiB/s",
        t_ours.as_secs_f64() * 1e3,
        mib(t_ours)
    );
    println!(
        "  osslsigncode_sha256  {:>8.2} ms  {:>7.0} MiB/s",
        t_theirs.as_secs_f64() * 1e3,
        mib(t_theirs)
    );
    println!(
        "  osslsigncode/ours    {:>8.2}",
        t_theirs.as_secs_f64() / t_ours.as_secs_f64()
    );
}
