//! The hook socket's bounds (issue 10, section 4), through the real daemon
//! binary: a client that pipelines requests and never reads, and floods of
//! idle connections (from one process, and from many), do not delay a
//! legitimate hook past a second, and SIGTERM ends the daemon in under
//! five seconds while they stay connected. Also: non-canonical CBOR frames
//! are refused with the statement decoder's errors, and the socket file is
//! never world-writable.
//!
//! Without Nix the tests print `SKIP: ...` and pass, unless CI=true.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use provenix_worker::hook::{Request, Response};

mod common;
mod nixbuild;

use common::{TempDir, nix_available, wait_for};

const WORKER: &str = env!("CARGO_BIN_EXE_provenix-worker");

fn serve(dir: &Path, extra: &[&str]) -> (Child, PathBuf) {
    let socket = dir.join("hook.sock");
    let child = Command::new(WORKER)
        .args(["serve", "--platform", "sim", "--checkpoint-ms", "100"])
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&socket)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&socket);
    (child, socket)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn read_response(stream: &mut UnixStream) -> Option<Response> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(Response::decode(&body).unwrap())
}

/// Run the hook for `built` and return how long it took.
fn timed_hook(socket: &Path, built: &nixbuild::Built) -> Duration {
    let start = Instant::now();
    let out = Command::new(WORKER)
        .arg("hook")
        .env("PROVENIX_SOCKET", socket)
        .env("DRV_PATH", &built.drv)
        .env("OUT_PATHS", built.outs.join(" "))
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// A process (perl, in the Debian base system) that holds `n` idle
/// connections to `socket` until killed, and prints `ok` once they are
/// open.
fn idle_holder(socket: &Path, n: usize) -> Child {
    let script = format!(
        "use IO::Socket::UNIX; $|=1; my @s; for (1..{n}) {{ push @s, IO::Socket::UNIX->new(Peer => '{}') or die $!; }} print \"ok\\n\"; sleep 600;",
        socket.display()
    );
    let mut child = Command::new("perl")
        .args(["-e", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ok = [0u8; 3];
    child.stdout.as_mut().unwrap().read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok\n");
    child
}

#[test]
fn floods_and_non_reading_clients_neither_delay_a_hook_nor_hold_sigterm() {
    if !nix_available("hook_socket") {
        return;
    }
    let dir = TempDir::new("hook-socket");
    let (mut daemon, socket) = serve(dir.path(), &[]);
    let tag = format!("{}-{}", std::process::id(), common::unix_now());
    let built = nixbuild::simple(&format!("socket-{tag}"), 3);

    // Known good: a hook with nothing else connected.
    let quiet = timed_hook(&socket, &built[0]);
    eprintln!("hook alone: {quiet:?}");

    // A client that pipelines head requests and never reads: the daemon
    // answers until the socket's buffer is full, then drops it after its
    // write deadline (5 s) instead of waiting for it.
    let pipeline = |socket: &Path| {
        let mut s = UnixStream::connect(socket).unwrap();
        let started = Instant::now();
        std::thread::spawn(move || {
            let request = frame(&Request::Head.encode());
            let mut sent = 0usize;
            while s.write_all(&request).is_ok() {
                sent += 1;
            }
            (sent, started.elapsed())
        })
    };
    let pipeliner = pipeline(&socket);
    // 256 idle connections from this process: all but the per-process
    // limit are refused at once, with a reason.
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..256 {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match read_response(&mut s) {
            Some(Response::Error(e)) => {
                assert!(e.contains("connections, the limit per process"), "{e}");
                refused += 1;
            }
            Some(other) => panic!("{other:?}"),
            None => idle.push(s),
        }
    }
    // This process also holds the pipeliner's connection.
    assert_eq!(idle.len() + 1, 8, "{refused} refused");
    // And 256 more from 32 other processes, 8 each: the daemon's total
    // limit, so a new connection closes the longest idle one.
    let holders: Vec<Child> = (0..32).map(|_| idle_holder(&socket, 8)).collect();

    let mut flooded = Vec::new();
    for b in &built[1..] {
        flooded.push(timed_hook(&socket, b));
    }
    eprintln!("hook under the floods: {flooded:?}");
    for took in &flooded {
        assert!(*took < Duration::from_secs(1), "{took:?}");
    }

    // The non-reading client was dropped by the write deadline.
    let (sent, dropped_after) = pipeliner.join().unwrap();
    eprintln!("the pipeliner sent {sent} requests and was dropped after {dropped_after:?}");
    assert!(dropped_after < Duration::from_secs(8), "{dropped_after:?}");

    // SIGTERM with a non-reading client and the idle floods connected.
    let pipeliner = pipeline(&socket);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!pipeliner.is_finished());
    let start = Instant::now();
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let status = daemon.wait().unwrap();
    let stopped = start.elapsed();
    eprintln!("SIGTERM to exit: {stopped:?}");
    assert!(status.success(), "{status}");
    assert!(stopped < Duration::from_secs(5), "{stopped:?}");
    assert!(!socket.exists());
    pipeliner.join().unwrap();
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
}

#[test]
fn non_canonical_frames_are_refused_with_the_statement_decoders_errors() {
    if !nix_available("hook_socket_cbor") {
        return;
    }
    let dir = TempDir::new("hook-socket-cbor");
    let (mut daemon, socket) = serve(dir.path(), &[]);
    let mut s = UnixStream::connect(&socket).unwrap();
    let mut ask = |body: &[u8]| {
        s.write_all(&frame(body)).unwrap();
        read_response(&mut s).unwrap()
    };
    // Known good: {"v": 1, "op": "head"} in canonical order.
    let good = Request::Head.encode();
    assert_eq!(good, b"\xa2\x61v\x01\x62op\x64head");
    assert!(matches!(ask(&good), Response::Head(_)));
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "indefinite-length map",
            b"\xbf\x61v\x01\x62op\x64head\xff".to_vec(),
            "not in deterministic CBOR encoding (RFC 8949 section 4.2.1)",
        ),
        (
            "non-shortest integer",
            b"\xa2\x61v\x18\x01\x62op\x64head".to_vec(),
            "not in deterministic CBOR encoding (RFC 8949 section 4.2.1)",
        ),
        (
            "unsorted keys",
            b"\xa2\x62op\x64head\x61v\x01".to_vec(),
            "missing protocol version (key v)",
        ),
        (
            "trailing bytes",
            b"\xa2\x61v\x01\x62op\x64head\x00\x00".to_vec(),
            "2 trailing bytes after the CBOR item",
        ),
        (
            "indefinite-length text",
            b"\xa2\x61v\x01\x62op\x7f\x64head\xff".to_vec(),
            "not in deterministic CBOR encoding (RFC 8949 section 4.2.1)",
        ),
    ];
    for (name, body, want) in cases {
        match ask(&body) {
            Response::Error(e) => {
                assert!(e.starts_with("bad request: "), "{name}: {e}");
                assert!(e.contains(want), "{name}: {e}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // The connection still serves.
    assert!(matches!(ask(&good), Response::Head(_)));
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn the_socket_is_never_world_writable() {
    let dir = TempDir::new("hook-socket-mode");
    let (mut daemon, socket) = serve(dir.path(), &[]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let _ = daemon.kill();
    let _ = daemon.wait();

    // Another uid without a group: refused at start, with the reason.
    let out = Command::new(WORKER)
        .args(["serve", "--platform", "sim", "--allow-uid", "1000"])
        .arg("--state")
        .arg(dir.path().join("state2"))
        .arg("--socket")
        .arg(dir.path().join("other.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--allow-uid 1000 needs --socket-group"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With a group: 0660, that group.
    use std::os::unix::fs::MetadataExt;
    let (mut daemon, socket) = serve(
        &dir.path().join("g"),
        &["--allow-uid", "1000", "--socket-group", "100"],
    );
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 100);
    let _ = daemon.kill();
    let _ = daemon.wait();
}
