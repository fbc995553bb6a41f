//! Load for `benches/hook.sh`: N client threads send hook submissions (one
//! output each, round-robin over the given store paths) to a running daemon
//! through its socket, each waiting for the acknowledgement (a durable
//! append) before sending the next. Prints statements per second and the
//! latency percentiles of one submission.
//!
//! Usage: `hook_load --socket PATH --clients N (--seconds S | --passes P) STORE_PATH...`
//!
//! `--passes P` submits every path P times in total (split over the
//! clients) instead of running for a time: a first pass measures the cold
//! path (each path's first submission runs `nix path-info --json` for it
//! and its derivation).
//!
//! The daemon signs only outputs Nix built on this machine in this boot,
//! submitted with their derivation: give outputs of `nix-build` (their
//! derivers are looked up here, once), not `nix-store --add` paths.

// An example binary: a bad flag is a usage error, not a library failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use provenix_worker::hook::Client;

fn main() {
    let mut socket = None;
    let mut clients = 1usize;
    let mut seconds = None;
    let mut passes = None;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(args.next().expect("--socket PATH"))),
            "--clients" => clients = args.next().expect("--clients N").parse().unwrap(),
            "--seconds" => {
                seconds = Some(args.next().expect("--seconds S").parse::<f64>().unwrap())
            }
            "--passes" => passes = Some(args.next().expect("--passes P").parse::<usize>().unwrap()),
            _ => paths.push(arg),
        }
    }
    let socket = socket.expect("--socket PATH");
    assert!(!paths.is_empty(), "no store paths");
    let paths: Arc<Vec<(String, String)>> = Arc::new(with_derivers(paths));
    let total = passes.map(|p| p * paths.len());
    let deadline = seconds.map(Duration::from_secs_f64);
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (socket, paths, next, barrier) =
                (socket.clone(), paths.clone(), next.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(&socket, Duration::from_secs(60)).unwrap();
                let mut latencies = Vec::new();
                barrier.wait();
                let start = Instant::now();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if total.is_some_and(|t| n >= t)
                        || deadline.is_some_and(|d| start.elapsed() >= d)
                    {
                        break;
                    }
                    let (path, drv) = &paths[n % paths.len()];
                    let t = Instant::now();
                    client
                        .submit(Some(drv), std::slice::from_ref(path))
                        .unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1e3
    };
    println!(
        "clients {clients:>2}: {:>6} statements in {:.2} s = {:>7.0} statements/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}

/// Each path with its deriver, from one `nix-store --query --deriver`.
fn with_derivers(paths: Vec<String>) -> Vec<(String, String)> {
    let out = std::process::Command::new("nix-store")
        .args(["--query", "--deriver", "--"])
        .args(&paths)
        .output()
        .expect("running nix-store --query --deriver");
    assert!(out.status.success(), "nix-store --query --deriver failed");
    let derivers: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(derivers.len(), paths.len());
    assert!(
        derivers.iter().all(|d| d.ends_with(".drv")),
        "a path has no deriver (added, not built): {derivers:?}"
    );
    paths.into_iter().zip(derivers).collect()
}
