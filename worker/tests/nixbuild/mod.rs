//! Real builds for tests that submit outputs to the daemon: the daemon
//! signs only outputs Nix registered as built from a derivation, on this
//! machine, in this boot, so tests build what they submit.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::process::Command;

/// One derivation built: its store derivation and its outputs.
#[derive(Clone, Debug)]
pub struct Built {
    /// The `.drv` path.
    pub drv: String,
    /// Every output path, as `nix-store --query --outputs` lists them.
    pub outs: Vec<String>,
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Instantiate `expr` (a derivation or a list of them) and build every
/// output of every derivation, without the sandbox, substituters or a
/// post-build hook (as root, with Debian's nix-bin).
pub fn build(expr: &str) -> Vec<Built> {
    let drvs: Vec<String> = run(
        Command::new("nix-instantiate").args(["--expr", expr]),
        "nix-instantiate",
    )
    .lines()
    .map(str::to_owned)
    .collect();
    run(
        Command::new("nix-store")
            .args(["--option", "sandbox", "false"])
            .args(["--option", "substituters", ""])
            .args(["--option", "post-build-hook", ""])
            .arg("--realise")
            .args(&drvs),
        "nix-store --realise",
    );
    drvs.into_iter()
        .map(|drv| {
            let outs = run(
                Command::new("nix-store").args(["--query", "--outputs", &drv]),
                "nix-store --query --outputs",
            )
            .lines()
            .map(str::to_owned)
            .collect();
            Built { drv, outs }
        })
        .collect()
}

/// `n` one-file derivations, unique to `tag`, built.
pub fn simple(tag: &str, n: usize) -> Vec<Built> {
    build(&format!(
        r#"builtins.genList (i: derivation {{ name = "provenix-{tag}-${{toString i}}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo {tag} ${{toString i}} > $out" ]; }}) {n}"#
    ))
}

/// Remove `path` from the store (it must have no referrers or roots).
pub fn delete(path: &str) {
    run(
        Command::new("nix-store").args(["--delete", path]),
        "nix-store --delete",
    );
}
