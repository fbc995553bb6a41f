//! The worker signs only what its Nix built, in this boot (issue 10,
//! section 1), through the real binaries: `provenix-worker serve` on the
//! simulated platform, `provenix-worker hook` as Nix runs it, Debian's
//! real Nix (2.8) as root.
//!
//! Each negative case is a known-good submission with one mutation, and
//! asserts the daemon's exact refusal and that nothing was logged.
//!
//! Without Nix the tests print `SKIP: ...` and pass, unless CI=true.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use provenix_worker::hook::Client;

mod common;
mod nixbuild;

use common::{TempDir, nix_available, wait_for};
use nixbuild::Built;

const WORKER: &str = env!("CARGO_BIN_EXE_provenix-worker");

/// The daemon binary, killed when dropped; its stderr goes to a file.
struct Serve {
    child: Child,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(dir: &Path, extra: &[&str]) -> Serve {
        let socket = dir.join("hook.sock");
        // A crashed daemon's socket file would pass `wait_for` at once.
        let _ = std::fs::remove_file(&socket);
        let log = dir.join("daemon.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(WORKER)
            .args(["serve", "--platform", "sim"])
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        wait_for(&socket);
        Serve { child, socket, log }
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket, Duration::from_secs(30)).unwrap()
    }

    fn log_size(&self) -> u64 {
        self.client().head().unwrap().size
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the hook binary with Nix's environment.
fn hook(socket: &Path, drv: Option<&str>, outs: &[&str]) -> Output {
    let mut cmd = Command::new(WORKER);
    cmd.arg("hook")
        .env("PROVENIX_SOCKET", socket)
        .env("OUT_PATHS", outs.join(" "))
        .env_remove("DRV_PATH");
    if let Some(d) = drv {
        cmd.env("DRV_PATH", d);
    }
    cmd.output().unwrap()
}

/// The hook is refused with exactly `want` and nothing is logged.
fn assert_refused(serve: &Serve, drv: Option<&str>, outs: &[&str], want: &str, case: &str) {
    let before = serve.log_size();
    let out = hook(&serve.socket, drv, outs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{case}: accepted");
    assert!(
        stderr.contains(&format!("the provenix daemon refused: {want}")),
        "{case}: {stderr}\nwanted: {want}"
    );
    assert_eq!(serve.log_size(), before, "{case}: something was logged");
}

fn nix_path_info(path: &str) -> serde_json::Value {
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(["path-info", "--json", path])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json[0].clone()
}

fn add_to_store(dir: &Path, tag: &str) -> String {
    let file = dir.join(format!("provenix-added-{tag}"));
    std::fs::write(&file, tag).unwrap();
    let out = Command::new("nix-store")
        .arg("--add")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Overwrite the store file `out` (as root), returning what Nix
/// registered and what the store now holds, as the daemon prints them.
fn tamper(out: &str, tag: &str) -> (String, String) {
    let info = nix_path_info(out);
    let registered = format!(
        "{} ({} bytes)",
        info["narHash"].as_str().unwrap(),
        info["narSize"].as_u64().unwrap()
    );
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(out, format!("tampered {tag}\n")).unwrap();
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o444)).unwrap();
    let now = provenix_worker::nar::hash_path(Path::new(out)).unwrap();
    let computed = format!(
        "sha256-{} ({} bytes)",
        base64::engine::general_purpose::STANDARD.encode(now.sha256),
        now.size
    );
    (registered, computed)
}

fn tag() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn the_hook_signs_only_outputs_this_nix_built_in_this_boot() {
    if !nix_available("signing") {
        return;
    }
    let dir = TempDir::new("signing");
    let serve = Serve::start(dir.path(), &["--checkpoint-ms", "100"]);
    let tag = tag();
    let built = nixbuild::simple(&tag, 5);
    let [a, b, c, d, e] = built.as_slice() else {
        panic!("{built:?}")
    };
    let (a_out, b_out, d_out, e_out) = (&a.outs[0], &b.outs[0], &d.outs[0], &e.outs[0]);

    // Known good: an output with the derivation Nix built it from.
    let out = hook(&serve.socket, Some(&a.drv), &[a_out]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serve.log_size(), 1);

    // A fake deriver: another valid derivation, unrelated to the output.
    assert_refused(
        &serve,
        Some(&c.drv),
        &[b_out],
        &format!(
            "refusing to sign {b_out}: Nix registered it as built from {}, not {}",
            b.drv, c.drv
        ),
        "fake deriver",
    );
    // No derivation named at all.
    assert_refused(
        &serve,
        None,
        &[b_out],
        &format!(
            "refusing to sign {b_out}: no derivation is named: the worker signs only outputs \
             Nix registered as built from one"
        ),
        "no deriver",
    );
    // A derivation that is not in the store.
    let missing_drv = format!("{}x.drv", &b.drv[..b.drv.len() - 4]);
    assert_refused(
        &serve,
        Some(&missing_drv),
        &[b_out],
        &format!("refusing to sign {missing_drv}: the derivation is not valid in the Nix store"),
        "missing derivation",
    );
    // One good output and one output of another derivation: all refused.
    assert_refused(
        &serve,
        Some(&b.drv),
        &[b_out, d_out],
        &format!(
            "refusing to sign {d_out}: Nix registered it as built from {}, not {}",
            d.drv, b.drv
        ),
        "a foreign output among good ones",
    );

    // A path added with `nix-store --add`, whatever derivation is named.
    let added = add_to_store(dir.path(), &tag);
    assert_refused(
        &serve,
        Some(&b.drv),
        &[&added],
        &format!(
            "refusing to sign {added}: Nix records no deriver for it (added to the store, not \
             built from {})",
            b.drv
        ),
        "added path",
    );

    // A path Nix imported (as a substitution or `nix copy` would register
    // it): the right deriver, but not built here.
    let export = dir.path().join("e.nar");
    let exported = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "nix-store --export {e_out} > {} && nix-store --delete {e_out} && nix-store --import < {}",
            export.display(),
            export.display()
        ))
        .output()
        .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert_eq!(nix_path_info(e_out)["deriver"], e.drv.as_str());
    assert_refused(
        &serve,
        Some(&e.drv),
        &[e_out],
        &format!(
            "refusing to sign {e_out}: Nix did not build it on this machine (it was \
             substituted, copied or imported)"
        ),
        "imported path",
    );

    // A fixed-output (content-addressed) output, built here.
    let content = format!("fixed {tag}");
    let sha = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        content.as_bytes(),
    ));
    let fixed = nixbuild::build(&format!(
        r#"derivation {{ name = "provenix-fixed-{tag}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "printf '{content}' > $out" ]; outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "{sha}"; }}"#
    ));
    let fixed_out = &fixed[0].outs[0];
    let ca = nix_path_info(fixed_out)["ca"].as_str().unwrap().to_owned();
    // The daemon refuses it, asked directly ...
    let before = serve.log_size();
    let err = serve
        .client()
        .submit(Some(&fixed[0].drv), std::slice::from_ref(fixed_out))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the provenix daemon refused: refusing to sign {fixed_out}: it is content-addressed \
             ({ca}): added or fetched, not built, and it checks itself"
        )
    );
    // ... and the hook does not ask, so Nix's build does not fail.
    let out = hook(&serve.socket, Some(&fixed[0].drv), &[fixed_out]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "{} is a fixed-output derivation: its outputs are content-addressed and check \
             themselves; not logged",
            fixed[0].drv
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serve.log_size(), before);

    // An output modified in the store after Nix registered it: one never
    // submitted, and one logged before (whose checks the daemon keeps).
    for (built, out) in [(d, d_out), (a, a_out)] {
        let (registered, computed) = tamper(out, &tag);
        assert_refused(
            &serve,
            Some(&built.drv),
            &[out],
            &format!(
                "store corruption: {out} hashes to {computed} in the store, but Nix registered \
                 {registered}"
            ),
            "output modified on disk",
        );
    }
    // The corrupt paths are Nix's problem to repair; leave no trace.
    for out in [d_out, a_out] {
        let _ = Command::new("nix-store").args(["--delete", out]).output();
    }

    // After all that, the known good case still works, and only it and
    // the first were logged.
    let out = hook(&serve.socket, Some(&b.drv), &[b_out]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serve.log_size(), 2);
}

/// A path Nix registered before the daemon's "this boot" instant is
/// refused: through the library, whose configuration can move that
/// instant past the build (the binary always uses the boot time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_registered_before_this_boot_are_refused() {
    use provenix_worker::daemon::{Config, DaemonError, Worker};
    use provenix_worker::platform::Choice;
    if !nix_available("signing_boot") {
        return;
    }
    let dir = TempDir::new("signing-boot");
    let tag = tag();
    let built = tokio::task::spawn_blocking(move || nixbuild::simple(&tag, 1))
        .await
        .unwrap();
    let Built { drv, outs } = built[0].clone();
    let registered = nix_path_info(&outs[0])["registrationTime"]
        .as_i64()
        .unwrap();

    let start = |since: i64| {
        let mut c = Config::new(dir.path().join(format!("state-{since}")));
        c.platform = Choice::Sim;
        c.built_since = Some(since);
        Worker::start(c)
    };
    // Known good: the build is at or after the instant.
    let w = start(registered).await.unwrap();
    w.submit(Some(drv.clone()), outs.clone()).await.unwrap();
    w.shutdown().await.unwrap();
    // One second later: refused.
    let w = start(registered + 1).await.unwrap();
    let err = w.submit(Some(drv), outs.clone()).await.unwrap_err();
    assert!(matches!(err, DaemonError::NotBuilt { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to sign {}: Nix registered it at {registered} (Unix time), before this \
             boot began at {}",
            outs[0],
            registered + 1
        )
    );
    assert_eq!(w.head().size, 0);
    w.shutdown().await.unwrap();
}

/// An entry acknowledged before a crash whose path is gone when the next
/// identity logs it again: the daemon's log and `export` name it.
#[test]
fn a_path_deleted_after_its_ack_and_a_crash_is_reported_by_name() {
    if !nix_available("signing_lost") {
        return;
    }
    let dir = TempDir::new("signing-lost");
    // No checkpoint before the kill: the entries stay uncovered.
    let slow = ["--checkpoint-ms", "600000", "--checkpoint-every", "1000000"];
    let mut serve = Serve::start(dir.path(), &slow);
    let tag = tag();
    let built = nixbuild::simple(&tag, 2);
    let [kept, gone] = built.as_slice() else {
        panic!("{built:?}")
    };
    for b in [kept, gone] {
        let out = hook(&serve.socket, Some(&b.drv), &[&b.outs[0]]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let old_key = hex::encode(serve.client().head().unwrap().worker_key);
    // A crash (SIGKILL: nothing is flushed or checkpointed), then the
    // second output disappears.
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    nixbuild::delete(&gone.outs[0]);

    let serve = Serve::start(dir.path(), &["--checkpoint-ms", "100"]);
    let gone_out = &gone.outs[0];
    let reason = format!("refusing to sign {gone_out}: it is not valid in the Nix store");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serve.log_text().contains("LOST:") {
        assert!(Instant::now() < deadline, "{}", serve.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let want_log = format!(
        "provenix-worker: LOST: {gone_out}, acknowledged as entry 1 of log {old_key} before a \
         restart, cannot be logged again: {reason}"
    );
    assert!(serve.log_text().contains(&want_log), "{}", serve.log_text());

    // Known good: the kept output was logged again and exports.
    let out_dir = dir.path().join("bundles");
    let export = |path: &str| {
        Command::new(WORKER)
            .arg("export")
            .arg("--socket")
            .arg(&serve.socket)
            .arg("--out")
            .arg(&out_dir)
            .arg(path)
            .output()
            .unwrap()
    };
    let ok = export(&kept.outs[0]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The lost one: export fails and says why, by name.
    let lost = export(gone_out);
    assert!(!lost.status.success());
    let want_export = format!(
        "{gone_out} was acknowledged as entry 1 of log {old_key} before a restart, no attested \
         checkpoint covers it, and it could not be logged again: {reason}"
    );
    let stderr = String::from_utf8_lossy(&lost.stderr);
    assert!(stderr.contains(&want_export), "{stderr}");

    // It stays reported after another restart.
    drop(serve);
    let serve = Serve::start(dir.path(), &["--checkpoint-ms", "100"]);
    let again = Command::new(WORKER)
        .arg("export")
        .arg("--socket")
        .arg(&serve.socket)
        .arg("--out")
        .arg(&out_dir)
        .arg(gone_out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains(&want_export),
        "{stderr}"
    );
}
