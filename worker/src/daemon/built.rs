//! What the daemon signs: only outputs its own Nix built, in this boot.
//!
//! Every submission (the post-build hook, the gRPC build API, the relog of
//! a crashed identity's entries) goes through [`Worker::check_built`]
//! before anything is signed. An output is signed only when all of these
//! hold, each from Nix's database (`nix path-info --json`, one run for all
//! outputs) or the store itself, never from the caller:
//!
//! 1. a derivation is named, is valid in the store, is intact (its NAR
//!    hash is the one Nix registered) and names the path as an output;
//! 2. the path is valid, and Nix registered it with that derivation as its
//!    deriver: a path added (`nix-store --add`: no deriver) or claimed for
//!    another derivation is refused by name;
//! 3. Nix built it on this machine (`ultimate`): substituted, copied and
//!    imported paths are not, whatever deriver they carry;
//! 4. it is input-addressed (no `ca`): content-addressed paths are added
//!    or fetched, not built, and check themselves;
//! 5. Nix registered it during this boot (`registrationTime` at or after
//!    the kernel's boot time, or a later configured instant): the store may
//!    persist across boots, and what an earlier boot, or another image,
//!    built is not this worker's to sign;
//! 6. the NAR hash and size the daemon computes from the store equal the
//!    ones Nix registered; a difference is store corruption, reported with
//!    the path and both hashes, and nothing is signed.
//!
//! A caller that may use the hook socket can therefore only make the
//! daemon log again an output its Nix really built in this boot, unchanged.

// Parses what Nix and the store hand it: no panics from input.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use provenix_verifier::storepath::{self, ContentAddress, HashAlgo, Method};

use super::appender::Output;
use super::derivation::{self, Derivation};
use super::nix::Registered;
use super::{DaemonError, Worker};
use crate::nar::NarDigest;

/// Largest store derivation read. nixpkgs' largest `.drv` files (long
/// environment variables) are a few MiB.
const MAX_DRV_SIZE: u64 = 16 << 20;

impl Worker {
    /// The outputs `outs` of `drv`, hashed and with their references, if
    /// every check of the module documentation holds for each; else the
    /// first failure, naming the path.
    pub(crate) async fn check_built(
        &self,
        drv: Option<&str>,
        outs: &[String],
    ) -> Result<Vec<Output>, DaemonError> {
        let not_built = |path: &str, reason: String| DaemonError::NotBuilt {
            path: path.to_owned(),
            reason,
        };
        let first = outs.first().map_or("", String::as_str);
        let Some(drv) = drv else {
            return Err(not_built(
                first,
                "no derivation is named: the worker signs only outputs Nix registered as built \
                 from one"
                    .into(),
            ));
        };
        // Outputs and derivations that passed before need no Nix query
        // (see `Store::known`); the rest are asked about in one run each.
        let known: Vec<Option<Registered>> = outs.iter().map(|o| self.store.known(o)).collect();
        let unknown: Vec<String> = outs
            .iter()
            .zip(&known)
            .filter(|(_, k)| k.is_none())
            .map(|(o, _)| o.clone())
            .collect();
        let known_drv = self.store.known_drv(drv);
        let (queried, drv_outputs) = tokio::join!(
            async {
                if unknown.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.store.path_info(&unknown, false).await
                }
            },
            async {
                match known_drv {
                    Some(parsed) => Ok(parsed),
                    None => self.derivation(drv).await,
                }
            }
        );
        let mut queried = queried?.into_iter();
        let drv_outputs = drv_outputs?;
        let infos: Vec<Option<Registered>> = known
            .into_iter()
            .map(|k| k.or_else(|| queried.next().flatten()))
            .collect();

        let mut checked = Vec::with_capacity(outs.len());
        for (path, info) in outs.iter().zip(infos) {
            let info =
                info.ok_or_else(|| not_built(path, "it is not valid in the Nix store".into()))?;
            match info.deriver.as_deref() {
                Some(d) if d == drv => {}
                Some(other) => {
                    return Err(not_built(
                        path,
                        format!("Nix registered it as built from {other}, not {drv}"),
                    ));
                }
                None => {
                    return Err(not_built(
                        path,
                        format!(
                            "Nix records no deriver for it (added to the store, not built from \
                             {drv})"
                        ),
                    ));
                }
            }
            if !drv_outputs.outputs.iter().any(|o| o.path == *path) {
                return Err(not_built(path, format!("{drv} names no such output")));
            }
            if !info.ultimate {
                return Err(not_built(
                    path,
                    "Nix did not build it on this machine (it was substituted, copied or \
                     imported)"
                        .into(),
                ));
            }
            if let Some(ca) = &info.ca {
                return Err(not_built(
                    path,
                    format!(
                        "it is content-addressed ({ca}): added or fetched, not built, and it \
                         checks itself"
                    ),
                ));
            }
            if info.registration_time < self.built_since {
                return Err(not_built(
                    path,
                    format!(
                        "Nix registered it at {} (Unix time), before this boot began at {}",
                        info.registration_time, self.built_since
                    ),
                ));
            }
            let nar = self.hash(path).await?;
            check_hash(path, &info, &nar)?;
            self.store.remember(path, &info);
            checked.push(Output {
                path: path.clone(),
                nar,
                references: info.references,
            });
        }
        Ok(checked)
    }

    /// The valid derivation `drv`, read and checked (cached).
    pub(crate) async fn derivation(&self, drv: &str) -> Result<Arc<Derivation>, DaemonError> {
        if let Some(known) = self.store.known_drv(drv) {
            return Ok(known);
        }
        let drv_list = [drv.to_owned()];
        let info = match self.store.path_info(&drv_list, true).await {
            Ok(mut v) => v.pop().flatten(),
            // `nix path-info --derivation` fails on a path that is not
            // valid, rather than saying so.
            Err(DaemonError::Nix { reason, .. }) if reason.contains("not a valid store path") => {
                None
            }
            Err(e) => return Err(e),
        }
        .ok_or_else(|| DaemonError::NotBuilt {
            path: drv.to_owned(),
            reason: "the derivation is not valid in the Nix store".into(),
        })?;
        let parsed = Arc::new(self.read_derivation(drv, &info).await?);
        self.store.remember_drv(drv, &parsed);
        Ok(parsed)
    }

    /// What `drv` names, from its file, once its NAR hash is the one Nix
    /// registered and (in the default store) its text gives its path.
    async fn read_derivation(
        &self,
        drv: &str,
        info: &Registered,
    ) -> Result<Derivation, DaemonError> {
        let nar = self.hash(drv).await?;
        check_hash(drv, info, &nar)?;
        let mut text = Vec::new();
        std::fs::File::open(drv)
            .and_then(|f| {
                f.take(MAX_DRV_SIZE.saturating_add(1))
                    .read_to_end(&mut text)
            })
            .map_err(|source| DaemonError::Io {
                op: "read",
                path: Path::new(drv).to_owned(),
                source,
            })?;
        if u64::try_from(text.len()).unwrap_or(u64::MAX) > MAX_DRV_SIZE {
            return Err(DaemonError::NotBuilt {
                path: drv.to_owned(),
                reason: format!("the derivation is over {MAX_DRV_SIZE} bytes"),
            });
        }
        let not_built = |reason: String| DaemonError::NotBuilt {
            path: drv.to_owned(),
            reason,
        };
        let parsed = derivation::parse(&text).map_err(not_built)?;
        // A store derivation is a text path whose references are its input
        // sources and derivations (Nix's `writeDerivation`): its text is
        // the one its path was made from, or it is not what Nix wrote.
        if self.store.dir() == provenix_verifier::nixsig::STORE_DIR {
            let mut references = parsed.input_srcs.clone();
            references.extend(parsed.input_drvs.iter().map(|(d, _)| d.clone()));
            let made = storepath::name_of(drv)
                .and_then(|name| {
                    ContentAddress {
                        method: Method::Text,
                        algo: HashAlgo::Sha256,
                        digest: parsed.sha256.to_vec(),
                    }
                    .store_path(name, &references, false)
                })
                .map_err(|e| not_built(e.to_string()))?;
            if made != drv {
                return Err(not_built(format!(
                    "its text gives the store path {made}: it is not the derivation Nix wrote"
                )));
            }
        }
        Ok(parsed)
    }
}

/// Refuse, as store corruption, a path whose NAR the daemon hashed to
/// something other than what Nix registered.
pub(super) fn check_hash(
    path: &str,
    info: &Registered,
    nar: &NarDigest,
) -> Result<(), DaemonError> {
    let (registered, computed) = match info.nar_hash.split_once(':') {
        // `sha256:<nix32>`, as `nix-store --query --hash` prints it.
        Some(_) => (
            info.nar_hash.clone(),
            format!("sha256:{}", provenix_verifier::nixsig::nix32(&nar.sha256)),
        ),
        // SRI, as `nix path-info --json` prints it in Nix 2.8.
        None => (
            info.nar_hash.clone(),
            format!(
                "sha256-{}",
                base64::engine::general_purpose::STANDARD.encode(nar.sha256)
            ),
        ),
    };
    if registered != computed || info.nar_size != nar.size {
        return Err(DaemonError::StoreCorruption {
            path: path.to_owned(),
            registered: format!("{registered} ({} bytes)", info.nar_size),
            computed: format!("{computed} ({} bytes)", nar.size),
        });
    }
    Ok(())
}

/// The kernel's boot time (Unix seconds): `btime` in `/proc/stat`
/// (proc(5)).
pub(crate) fn boot_time() -> Result<i64, DaemonError> {
    let path = Path::new("/proc/stat");
    let text = std::fs::read_to_string(path).map_err(|source| DaemonError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| DaemonError::State {
            path: path.to_owned(),
            reason: "no btime line".into(),
        })
}
