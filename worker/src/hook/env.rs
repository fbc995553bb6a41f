//! What Nix hands the post-build hook: `DRV_PATH` and `OUT_PATHS` in its
//! environment, and where the daemon's socket is.

use std::path::PathBuf;

use super::{DEFAULT_SOCKET, HookError, SOCKET_ENV};

/// The socket path: `flag`, else `$PROVENIX_SOCKET`, else
/// [`DEFAULT_SOCKET`].
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// `DRV_PATH` (absent or empty: none) and `OUT_PATHS` (space-separated, at
/// least one) as Nix's post-build hook sets them.
///
/// Nix 2.8.0 runs the hook with `OUT_PATHS` set but empty
/// (NixOS/nix#6446, fixed in 2.8.1); Debian's `nix-bin` is that release.
/// Then the outputs are the derivation's, from `nix-store --query
/// --outputs DRV_PATH`: Nix builds every output of a derivation at once.
/// They are store paths like any others, which the daemon checks and
/// hashes itself.
pub fn request_from_env() -> Result<(Option<String>, Vec<String>), HookError> {
    let var = |name: &str| match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(HookError::Environment(format!("{name} is not valid UTF-8")))
        }
    };
    let drv = var("DRV_PATH")?.filter(|d| !d.is_empty());
    let outs: Vec<String> = var("OUT_PATHS")?
        .unwrap_or_default()
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect();
    let outs = match (&drv, outs.is_empty()) {
        (Some(drv), true) => outputs_of(drv)?,
        (_, _) => outs,
    };
    if outs.is_empty() {
        return Err(HookError::Environment(
            "OUT_PATHS is empty or unset: run this as Nix's post-build-hook".into(),
        ));
    }
    Ok((drv, outs))
}

/// The output paths of the derivation `drv`, as `nix-store --query
/// --outputs` lists them.
fn outputs_of(drv: &str) -> Result<Vec<String>, HookError> {
    let out = std::process::Command::new("nix-store")
        .args(["--query", "--outputs", drv])
        .output()
        .map_err(|e| {
            HookError::Environment(format!(
                "OUT_PATHS is empty, and nix-store --query --outputs {drv} failed: {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(HookError::Environment(format!(
            "OUT_PATHS is empty, and nix-store --query --outputs {drv} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let outs = String::from_utf8(out.stdout).map_err(|_| {
        HookError::Environment(format!(
            "nix-store --query --outputs {drv}: not valid UTF-8"
        ))
    })?;
    Ok(outs.split_ascii_whitespace().map(str::to_owned).collect())
}

/// Whether every output of the derivation `drv` is fixed (a fetcher:
/// `outputHash` set). Such outputs are content-addressed and check
/// themselves; the daemon refuses to sign them, so the hook does not ask,
/// and Nix's build does not fail for it. This only ever makes the daemon
/// sign less: the daemon decides what it signs from Nix's database.
pub fn fixed_output(drv: &str) -> bool {
    use std::io::Read;
    // A derivation's text; the daemon reads at most the same.
    const MAX_DRV: u64 = 16 << 20;
    let mut text = Vec::new();
    // A derivation the hook cannot read or parse is the daemon's to
    // refuse, with its reason.
    let read = std::fs::File::open(drv).and_then(|f| f.take(MAX_DRV).read_to_end(&mut text));
    match read.ok().map(|_| crate::daemon::derivation::parse(&text)) {
        Some(Ok(d)) => !d.outputs.is_empty() && d.outputs.iter().all(|o| o.fixed),
        _ => false,
    }
}
