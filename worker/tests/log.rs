//! The worker's Merkle log: proofs it serves verify with the verifier's
//! functions, it survives reopening, torn writes and `kill -9`, and its
//! checkpoints verify as C2SP signed notes.
//!
//! The crash test re-runs this test binary in a "child mode"
//! (`crash_child`, selected by an environment variable) that appends in a
//! loop and prints each acknowledged range; the parent kills it with
//! SIGKILL at random moments, and after some kills also garbles what a
//! power cut could have lost (a kill alone leaves the page cache, so it
//! never tears a write). The seed is printed; set
//! `PROVENIX_LOG_CRASH_SEED` to replay a run.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use provenix_verifier::{
    EMPTY_ROOT, Hash, VerifierKey, leaf_hash, verify_checkpoint, verify_consistency,
    verify_inclusion,
};
use provenix_worker::log::{CheckpointSigner, Error, Log, MAX_ENTRY_LEN, Recovery};
use ring::signature::Ed25519KeyPair;

/// A fresh directory under cargo's per-target scratch space.
fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("log-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// Entry `i`'s bytes: a function of `i` alone, so whoever reads the log
/// knows what each index must hold. Lengths vary from 14 to ~2 KiB.
fn content(i: u64) -> Vec<u8> {
    let mut v = format!("statement {i}:").into_bytes();
    let filler = (i.wrapping_mul(7919) % 2048) as usize;
    v.extend((0..filler).map(|k| (i as u8).wrapping_add(k as u8)));
    v
}

/// SplitMix64: small, seedable, good enough to pick sizes and moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("PROVENIX_LOG_CRASH_SEED") {
        Ok(s) => s.parse().expect("PROVENIX_LOG_CRASH_SEED is a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// Check every entry, the root from the leaves, and proofs from each
/// `(size, root)` seen before to the current tree.
fn check_log(log: &Log, earlier: &[(u64, Hash)]) {
    for i in 0..log.size() {
        assert_eq!(log.entry(i).unwrap(), content(i), "entry {i}");
    }
    log.verify().unwrap();
    for &(size, root) in earlier {
        if size == 0 {
            assert_eq!(root, EMPTY_ROOT);
            continue;
        }
        let proof = log.consistency_proof(size, log.size()).unwrap();
        verify_consistency(size, log.size(), &proof, &root, &log.root())
            .unwrap_or_else(|e| panic!("from {size} to {}: {e}", log.size()));
    }
}

#[test]
fn inclusion_proofs_for_every_index_and_size_up_to_70() {
    let dir = tmp("inclusion");
    let mut log = Log::open(&dir).unwrap();
    let mut roots = vec![log.root()];
    for i in 0..70 {
        assert_eq!(log.append(&content(i)).unwrap(), i);
        roots.push(log.root());
    }
    assert_eq!(roots[0], EMPTY_ROOT);
    for size in 1..=70u64 {
        let root = roots[size as usize];
        // The root from stored hashes agrees with the in-memory border's.
        assert_eq!(log.root_at(size).unwrap(), root);
        for index in 0..size {
            let proof = log.inclusion_proof(index, size).unwrap();
            let leaf = leaf_hash(&log.entry(index).unwrap());
            assert_eq!(log.leaf_hash(index).unwrap(), leaf);
            verify_inclusion(&leaf, index, size, &proof, &root)
                .unwrap_or_else(|e| panic!("{index}/{size}: {e}"));
        }
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn consistency_proofs_between_all_sizes_up_to_40() {
    let dir = tmp("consistency");
    let mut log = Log::open(&dir).unwrap();
    let mut roots = vec![log.root()];
    for i in 0..40 {
        log.append(&content(i)).unwrap();
        roots.push(log.root());
    }
    for size2 in 1..=40u64 {
        for size1 in 1..=size2 {
            let proof = log.consistency_proof(size1, size2).unwrap();
            verify_consistency(
                size1,
                size2,
                &proof,
                &roots[size1 as usize],
                &roots[size2 as usize],
            )
            .unwrap_or_else(|e| panic!("{size1} -> {size2}: {e}"));
        }
    }
    assert!(matches!(
        log.consistency_proof(0, 5),
        Err(Error::NoConsistencyProof { size1: 0, size2: 5 })
    ));
    assert!(matches!(
        log.consistency_proof(6, 5),
        Err(Error::NoConsistencyProof { size1: 6, size2: 5 })
    ));
    assert!(matches!(
        log.consistency_proof(5, 41),
        Err(Error::SizeOutOfRange {
            requested: 41,
            size: 40
        })
    ));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn random_pairs_at_larger_sizes() {
    let seed = seed();
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tmp("random");
    let mut log = Log::open(&dir).unwrap();
    let mut heads = vec![(0u64, log.root())];
    while log.size() < 20_000 {
        let k = 1 + rng.below(700);
        let first = log.size();
        let batch: Vec<Vec<u8>> = (first..first + k).map(content).collect();
        assert_eq!(log.append_batch(&batch).unwrap(), first..first + k);
        heads.push((log.size(), log.root()));
        if rng.below(10) == 0 {
            log.sync().unwrap();
        }
    }
    for _ in 0..2000 {
        let (size, root) = heads[1 + rng.below(heads.len() as u64 - 1) as usize];
        let index = rng.below(size);
        let proof = log.inclusion_proof(index, size).unwrap();
        verify_inclusion(&leaf_hash(&content(index)), index, size, &proof, &root)
            .unwrap_or_else(|e| panic!("{index}/{size}: {e}"));
    }
    for _ in 0..500 {
        let a = heads[1 + rng.below(heads.len() as u64 - 1) as usize];
        let b = heads[1 + rng.below(heads.len() as u64 - 1) as usize];
        let ((size1, root1), (size2, root2)) = if a.0 <= b.0 { (a, b) } else { (b, a) };
        let proof = log.consistency_proof(size1, size2).unwrap();
        verify_consistency(size1, size2, &proof, &root1, &root2)
            .unwrap_or_else(|e| panic!("{size1} -> {size2}: {e}"));
    }
    log.verify().unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reopen_keeps_everything() {
    let dir = tmp("reopen");
    let mut log = Log::open(&dir).unwrap();
    assert_eq!(log.recovery(), Recovery::default());
    log.append_batch(&(0..60).map(content).collect::<Vec<_>>())
        .unwrap();
    log.append_batch(&(60..100).map(content).collect::<Vec<_>>())
        .unwrap();
    let root100 = log.root();
    // Dropped without a sync: the derived files are rebuilt from `entries`.
    drop(log);

    let mut log = Log::open(&dir).unwrap();
    assert_eq!(
        log.recovery(),
        Recovery {
            replayed: 100,
            truncated_bytes: 0
        }
    );
    assert_eq!((log.size(), log.root()), (100, root100));
    for i in 100..150 {
        assert_eq!(log.append(&content(i)).unwrap(), i);
    }
    let root150 = log.root();
    log.close().unwrap();

    // Closed cleanly: nothing to replay.
    let log = Log::open(&dir).unwrap();
    assert_eq!(log.recovery(), Recovery::default());
    assert_eq!((log.size(), log.root()), (150, root150));
    check_log(&log, &[(100, root100)]);
    fs::remove_dir_all(&dir).unwrap();
}

fn entries_path(dir: &Path) -> PathBuf {
    dir.join("entries")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn flip_byte(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
}

#[test]
fn torn_tail_is_cut() {
    let dir = tmp("torn");
    let path = entries_path(&dir);
    let mut log = Log::open(&dir).unwrap();
    log.append_batch(&(0..10).map(content).collect::<Vec<_>>())
        .unwrap();
    let root10 = log.root();
    drop(log);
    let good_len = file_len(&path);

    // A header promising 100 bytes, then 10 of them.
    let mut torn = 100u32.to_be_bytes().to_vec();
    torn.extend_from_slice(&[7; 32 + 10]);
    append_bytes(&path, &torn);
    let log = Log::open(&dir).unwrap();
    assert_eq!(
        log.recovery(),
        Recovery {
            replayed: 10,
            truncated_bytes: torn.len() as u64
        }
    );
    assert_eq!((log.size(), log.root()), (10, root10));
    assert_eq!(file_len(&path), good_len);
    drop(log);

    // The file grew but the data never landed: zeros.
    append_bytes(&path, &[0; 4096]);
    let mut log = Log::open(&dir).unwrap();
    assert_eq!(log.recovery().truncated_bytes, 4096);
    assert_eq!(log.size(), 10);

    // Unsynced records, the last one damaged: it goes, the rest stay.
    log.append_batch(&(10..20).map(content).collect::<Vec<_>>())
        .unwrap();
    let root19 = log.root_at(19).unwrap();
    drop(log);
    let len = file_len(&path);
    flip_byte(&path, len - 1);
    let record19 = 4 + 32 + content(19).len() as u64;
    let mut log = Log::open(&dir).unwrap();
    assert_eq!(
        log.recovery(),
        Recovery {
            replayed: 9,
            truncated_bytes: record19
        }
    );
    assert_eq!((log.size(), log.root()), (19, root19));

    // And the log goes on.
    assert_eq!(log.append(&content(19)).unwrap(), 19);
    check_log(&log, &[(10, root10), (19, root19)]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damage_far_from_the_end_is_refused_not_cut() {
    let dir = tmp("far");
    let path = entries_path(&dir);
    let mut log = Log::open(&dir).unwrap();
    // 20 MiB in one batch: written and synced in two parts, none synced to
    // the derived files.
    let big: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; MAX_ENTRY_LEN]).collect();
    assert_eq!(log.append_batch(&big).unwrap(), 0..20);
    drop(log);
    let len = file_len(&path);
    // The first record's data: 16 MiB and more before the end.
    flip_byte(&path, 16 + 36 + 5);
    match Log::open(&dir) {
        Err(Error::Corrupt { offset: 16, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(file_len(&path), len, "nothing was cut");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn derived_files_are_rebuilt_or_their_loss_refused() {
    let dir = tmp("derived");
    let mut log = Log::open(&dir).unwrap();
    log.append_batch(&(0..300).map(content).collect::<Vec<_>>())
        .unwrap();
    let root = log.root();
    log.close().unwrap();

    // Everything derived gone: rebuilt from `entries`.
    for f in ["hashes", "offsets", "synced"] {
        fs::remove_file(dir.join(f)).unwrap();
    }
    let log = Log::open(&dir).unwrap();
    assert_eq!(log.recovery().replayed, 300);
    assert_eq!((log.size(), log.root()), (300, root));
    check_log(&log, &[]);
    drop(log);

    // `synced` vouches for hashes that are gone: refused.
    fs::remove_file(dir.join("hashes")).unwrap();
    assert!(matches!(Log::open(&dir), Err(Error::Corrupt { .. })));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn not_a_log_is_refused() {
    let dir = tmp("notalog");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("entries"), b"certainly not a Provenix log").unwrap();
    match Log::open(&dir) {
        Err(Error::Corrupt {
            offset: 0, reason, ..
        }) => assert!(reason.contains("magic")),
        other => panic!("{other:?}"),
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn limits_and_errors() {
    let dir = tmp("limits");
    let mut log = Log::open(&dir).unwrap();
    assert_eq!(log.append_batch::<&[u8]>(&[]).unwrap(), 0..0);
    log.append(&content(0)).unwrap();
    match log.append(&vec![0; MAX_ENTRY_LEN + 1]) {
        Err(Error::EntryTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_ENTRY_LEN + 1, MAX_ENTRY_LEN))
        }
        other => panic!("{other:?}"),
    }
    // Refused before any write: the log goes on.
    assert_eq!(log.append(&vec![1; MAX_ENTRY_LEN]).unwrap(), 1);
    assert_eq!(log.append(b"").unwrap(), 2);
    assert_eq!(log.entry(2).unwrap(), b"");
    assert!(matches!(
        log.entry(3),
        Err(Error::IndexOutOfRange { index: 3, size: 3 })
    ));
    assert!(matches!(
        log.inclusion_proof(3, 3),
        Err(Error::IndexOutOfRange { index: 3, size: 3 })
    ));
    assert!(matches!(
        log.inclusion_proof(0, 4),
        Err(Error::SizeOutOfRange {
            requested: 4,
            size: 3
        })
    ));
    assert!(matches!(log.root_at(4), Err(Error::SizeOutOfRange { .. })));
    assert_eq!(log.root_at(0).unwrap(), EMPTY_ROOT);
    fs::remove_dir_all(&dir).unwrap();
}

fn signer(origin: &str) -> CheckpointSigner {
    let pair = Ed25519KeyPair::from_seed_unchecked(&[42; 32]).unwrap();
    CheckpointSigner::new(origin, Arc::new(pair)).unwrap()
}

#[test]
fn checkpoints_verify_with_the_verifier() {
    let dir = tmp("checkpoint");
    let mut log = Log::open(&dir).unwrap();
    let origin = "provenix.dev/worker/test";
    let signer = signer(origin);
    let vkey = VerifierKey::parse(&signer.vkey().to_string()).unwrap();

    let empty = log.checkpoint(origin, &signer).unwrap();
    let v = verify_checkpoint(empty.as_bytes(), &vkey, origin).unwrap();
    assert_eq!((v.size(), *v.root()), (0, EMPTY_ROOT));

    log.append_batch(&(0..17).map(content).collect::<Vec<_>>())
        .unwrap();
    let note = log.checkpoint(origin, &signer).unwrap();
    assert!(note.starts_with("provenix.dev/worker/test\n17\n"), "{note}");
    let v = verify_checkpoint(note.as_bytes(), &vkey, origin).unwrap();
    assert_eq!((v.size(), *v.root()), (17, log.root()));
    // A bundle's proof checks against the checkpoint's root.
    let proof = log.inclusion_proof(5, v.size()).unwrap();
    verify_inclusion(&leaf_hash(&content(5)), 5, v.size(), &proof, v.root()).unwrap();
    // And the two checkpoints are consistent... trivially from 0; from a
    // later one:
    log.append(&content(17)).unwrap();
    let later = log.checkpoint(origin, &signer).unwrap();
    let w = verify_checkpoint(later.as_bytes(), &vkey, origin).unwrap();
    let proof = log.consistency_proof(v.size(), w.size()).unwrap();
    verify_consistency(v.size(), w.size(), &proof, v.root(), w.root()).unwrap();

    // A bad origin is refused before signing.
    assert!(matches!(
        log.checkpoint("two\nlines", &signer),
        Err(Error::Checkpoint(_))
    ));
    fs::remove_dir_all(&dir).unwrap();
}

const CHILD_ENV: &str = "PROVENIX_LOG_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "PROVENIX_LOG_CRASH_CHILD_SEED";

/// Child mode of `crash_safety_under_kill_9`: does nothing unless the
/// parent set `PROVENIX_LOG_CRASH_CHILD` to a log directory. Then appends
/// batches forever, printing `ack <first> <end>` once each is durable,
/// now and then `cp <size> <root>`, and syncing the derived files now and
/// then so kills land there too.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let mut rng = Rng(seed);
    let mut log = Log::open(Path::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    // libtest has printed "test crash_child ... " without a newline: start
    // a line of our own.
    writeln!(out, "\nopen {} {}", log.size(), hex::encode(log.root())).unwrap();
    out.flush().unwrap();
    loop {
        let first = log.size();
        let k = 1 + rng.below(64);
        let batch: Vec<Vec<u8>> = (first..first + k).map(content).collect();
        let range = log.append_batch(&batch).unwrap();
        writeln!(out, "ack {} {}", range.start, range.end).unwrap();
        if rng.below(8) == 0 {
            writeln!(out, "cp {} {}", log.size(), hex::encode(log.root())).unwrap();
        }
        out.flush().unwrap();
        if rng.below(40) == 0 {
            log.sync().unwrap();
        }
    }
}

/// Garble the tail of `path` past `keep` bytes: cut it at a random point,
/// zero a random range of it, or flip random bytes in it.
fn garble_tail(path: &Path, keep: u64, rng: &mut Rng) -> String {
    let len = file_len(path);
    if len <= keep {
        return "nothing past the durable part".to_owned();
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = keep + rng.below(len - keep);
    match rng.below(3) {
        0 => {
            f.set_len(at).unwrap();
            format!("cut {} bytes", len - at)
        }
        1 => {
            let n = 1 + rng.below(len - at);
            f.write_all_at(&vec![0; n as usize], at).unwrap();
            format!("zeroed {n} bytes")
        }
        _ => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                flip_byte(path, keep + rng.below(len - keep));
            }
            format!("flipped {n} bytes")
        }
    }
}

/// After a kill, simulate a power loss too: a kill leaves the page cache
/// whole, a power cut does not. Whatever was not acknowledged (entries past
/// the acknowledged ones) or not synced (derived files past `synced`) may
/// be lost or garbage.
fn lose_power(dir: &Path, acked_end: u64, rng: &mut Rng) -> String {
    let durable = 16
        + (0..acked_end)
            .map(|i| 36 + content(i).len() as u64)
            .sum::<u64>();
    let entries = garble_tail(&dir.join("entries"), durable, rng);
    let synced = fs::read(dir.join("synced"))
        .map(|b| u64::from_be_bytes(b[16..24].try_into().unwrap()))
        .unwrap_or(0);
    let stored = 2 * synced - u64::from(synced.count_ones());
    let hashes = garble_tail(&dir.join("hashes"), stored * 32, rng);
    let offsets = garble_tail(&dir.join("offsets"), synced * 8, rng);
    format!("power loss: entries {entries}, hashes {hashes}, offsets {offsets}")
}

fn parse_head(fields: &[&str]) -> (u64, Hash) {
    let size = fields[1].parse().unwrap();
    let root: Hash = hex::decode(fields[2]).unwrap().try_into().unwrap();
    (size, root)
}

#[test]
fn crash_safety_under_kill_9() {
    const KILLS: usize = 5;
    let seed = seed();
    println!("crash test seed {seed} (replay: PROVENIX_LOG_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tmp("crash");
    let exe = std::env::current_exe().unwrap();
    let mut heads: Vec<(u64, Hash)> = Vec::new();
    let mut acked_end = 0u64;

    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &dir)
            .env(CHILD_SEED_ENV, rng.next().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Wait until the child has opened (and so recovered) the log, let
        // it append for a random while, then SIGKILL it.
        let started = Instant::now();
        let opened = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the child did not open the log");
            if line.starts_with("open ") {
                break line;
            }
            assert!(started.elapsed() < Duration::from_secs(20));
        };
        let fields: Vec<&str> = opened.split(' ').collect();
        let (size, root) = parse_head(&fields);
        assert!(
            size >= acked_end,
            "round {round}: reopened at {size}, but {acked_end} were acknowledged"
        );
        heads.push((size, root));
        let run_for = Duration::from_millis(10 + rng.below(150));
        std::thread::sleep(run_for);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child should have been killed");
        reader.join().unwrap();

        let mut acks = 0;
        for line in rx.try_iter() {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[0] {
                "ack" => {
                    acks += 1;
                    acked_end = acked_end.max(fields[2].parse().unwrap());
                }
                "cp" => heads.push(parse_head(&fields)),
                _ => {}
            }
        }

        let power = if rng.below(2) == 0 {
            lose_power(&dir, acked_end, &mut rng)
        } else {
            "no power loss".to_owned()
        };

        // Every other round the parent checks the log itself; on the others
        // the next child recovers the torn end on its own.
        let checked = if round % 2 == 0 {
            let log = Log::open(&dir).unwrap();
            assert!(log.size() >= acked_end, "lost acknowledged entries");
            check_log(&log, &heads);
            heads.push((log.size(), log.root()));
            format!(
                "reopened at {} ({} replayed, {} bytes cut)",
                log.size(),
                log.recovery().replayed,
                log.recovery().truncated_bytes
            )
        } else {
            "left for the next child to recover".to_owned()
        };
        println!(
            "round {round}: killed after {run_for:?}, {acks} batches acknowledged up to {acked_end}; {power}; {checked}"
        );
        assert!(acks > 0 || round > 0 || acked_end == 0);
    }

    let log = Log::open(&dir).unwrap();
    assert!(log.size() >= acked_end, "lost acknowledged entries");
    check_log(&log, &heads);
    // Every pair of heads seen, before and after each kill, is consistent.
    heads.sort();
    heads.dedup();
    for pair in heads.windows(2) {
        let ((size1, root1), (size2, root2)) = (pair[0], pair[1]);
        if size1 == 0 {
            continue;
        }
        assert!(size1 < size2, "two roots for size {size1}");
        let proof = log.consistency_proof(size1, size2).unwrap();
        verify_consistency(size1, size2, &proof, &root1, &root2).unwrap();
    }
    println!(
        "{KILLS} kills, {} entries, {acked_end} acknowledged, {} heads consistent",
        log.size(),
        heads.len()
    );
    assert!(acked_end > 0, "no append was acknowledged in {KILLS} runs");
    fs::remove_dir_all(&dir).unwrap();
}

/// Appends per second, one at a time and in batches. Not run by default;
/// `cargo test --release -p provenix-worker --test log -- --ignored
/// --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    fn percentile(lat: &mut [Duration], p: f64) -> Duration {
        lat.sort();
        lat[((lat.len() - 1) as f64 * p) as usize]
    }
    let dir = tmp("throughput");
    let mut log = Log::open(&dir).unwrap();
    // A statement-sized entry.
    let entry = vec![0x5a; 600];
    let window = Duration::from_secs(3);
    for batch in [1usize, 8, 32, 128, 512] {
        let entries = vec![entry.clone(); batch];
        let mut lat = Vec::new();
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed() < window {
            let t = Instant::now();
            log.append_batch(&entries).unwrap();
            lat.push(t.elapsed());
            n += batch;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "batch {batch:>3}: {:>8.0} entries/s, {:>6.0} fsyncs/s, batch latency p50 {:?} p99 {:?}",
            n as f64 / secs,
            lat.len() as f64 / secs,
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99)
        );
    }
    let t = Instant::now();
    log.sync().unwrap();
    println!("sync of the derived files: {:?}", t.elapsed());

    // Group commit as the daemon will do it: statements arrive at 5,000/s
    // (open loop, evenly spaced); one committer appends whatever has queued
    // as one batch. Latency is from arrival to acknowledgement.
    let (tx, rx) = mpsc::channel::<Instant>();
    let producer = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..15_000u32 {
            let due = start + Duration::from_micros(200) * i;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            tx.send(Instant::now()).unwrap();
        }
    });
    let mut lat = Vec::new();
    let mut batches = 0usize;
    let start = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut arrived = vec![first];
        arrived.extend(rx.try_iter());
        log.append_batch(&vec![entry.clone(); arrived.len()])
            .unwrap();
        let done = Instant::now();
        lat.extend(arrived.iter().map(|a| done - *a));
        batches += 1;
    }
    producer.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "group commit at 5000/s offered: {:.0} entries/s, {batches} batches (mean {:.1}), latency p50 {:?} p99 {:?} max {:?}",
        lat.len() as f64 / secs,
        lat.len() as f64 / batches as f64,
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        percentile(&mut lat, 1.0)
    );
    let t = Instant::now();
    for i in 0..1000 {
        let size = log.size();
        log.inclusion_proof((i * 7919) % size, size).unwrap();
    }
    println!(
        "inclusion proof at size {}: {:?} each",
        log.size(),
        t.elapsed() / 1000
    );
    fs::remove_dir_all(&dir).unwrap();
}
