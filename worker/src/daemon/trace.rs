//! The build trace of a submission (DESIGN.md, "Transitive trust"): every
//! store path the build could read, with the NAR hash it had in this
//! worker's store, so a verifier can check the inputs as well as the
//! output.
//!
//! The input closure is what Nix puts in the build's sandbox: the
//! derivation's input sources and the outputs of its input derivations it
//! names, closed over references (`nix path-info --json --recursive`, one
//! run). Every input derivation is read and checked like the derivation
//! itself (valid, intact, its text giving its path). Each input is hashed
//! here, from the store, never taken from Nix's database; a hash that
//! differs from the one Nix registered is store corruption and nothing is
//! signed. A content-addressed input also gets the content hash its
//! address names (the NAR hash for a recursive SHA-256 source, the file's
//! bytes for a flat fixed output or a text), computed here too and
//! compared with the `ca` Nix registered, so that the verifier can
//! recompute its store path from the trace alone.
//!
//! Inputs are immutable while valid, so each is hashed once per
//! registration ([`super::nix::Store::known_input`]).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use provenix_verifier::storepath::{ContentAddress, HashAlgo, Method};
use provenix_verifier::{Content, MAX_TRACE_INPUTS, Trace, TraceInput};

use super::nix::Registered;
use super::{DaemonError, Worker};
use crate::nar::NarError;

impl Worker {
    /// The trace of a build of `drv`, a derivation `check_built` accepted.
    pub(crate) async fn trace(&self, drv: &str) -> Result<Trace, DaemonError> {
        let not_traced = |reason: String| DaemonError::NotBuilt {
            path: drv.to_owned(),
            reason,
        };
        let parsed = self.derivation(drv).await?;
        let mut roots = parsed.input_srcs.clone();
        for (input_drv, names) in &parsed.input_drvs {
            self.store.check_drv(input_drv)?;
            let input = self.derivation(input_drv).await?;
            for name in names {
                let out = input
                    .outputs
                    .iter()
                    .find(|o| o.name == *name)
                    .ok_or_else(|| {
                        not_traced(format!(
                            "it uses output {name:?} of {input_drv}, which names no such output"
                        ))
                    })?;
                if out.path.is_empty() {
                    return Err(not_traced(format!(
                        "it uses a floating content-addressed output of {input_drv}, whose path \
                         only the build fixes: not traced"
                    )));
                }
                roots.push(out.path.clone());
            }
        }
        for r in &roots {
            self.store.check_path(r)?;
        }
        roots.sort_unstable();
        roots.dedup();
        let closure = self.store.closure_info(&roots).await?;
        if closure.len() > MAX_TRACE_INPUTS {
            return Err(not_traced(format!(
                "its input closure has {} paths, over the limit of {MAX_TRACE_INPUTS}",
                closure.len()
            )));
        }
        let mut inputs = Vec::with_capacity(closure.len());
        let mut unknown = Vec::new();
        for (path, info) in closure {
            self.store.check_path(&path)?;
            match self.store.known_input(&path, &info) {
                Some(input) => inputs.push(input),
                None => unknown.push((path, info)),
            }
        }
        for input in self.hash_inputs(unknown).await? {
            inputs.push(input);
        }
        inputs.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(Trace {
            derivation_sha256: parsed.sha256,
            inputs,
        })
    }

    /// Hash inputs not seen before, on one blocking thread (holding one of
    /// the daemon's hashing permits), and remember each.
    async fn hash_inputs(
        &self,
        unknown: Vec<(String, Registered)>,
    ) -> Result<Vec<TraceInput>, DaemonError> {
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| DaemonError::ShuttingDown)?;
        let hashed = tokio::task::spawn_blocking(move || {
            unknown
                .into_iter()
                .map(|(path, info)| hash_input(path, &info).map(|input| (info, input)))
                .collect::<Result<Vec<_>, DaemonError>>()
        })
        .await
        .map_err(|e| DaemonError::Internal(format!("hash task: {e}")))??;
        Ok(hashed
            .into_iter()
            .map(|(info, input)| {
                self.store.remember_input(&info, &input);
                input
            })
            .collect())
    }
}

/// One input, hashed from the store and checked against what Nix
/// registered.
fn hash_input(path: String, info: &Registered) -> Result<TraceInput, DaemonError> {
    let nar = super::nar_digest(Path::new(&path)).map_err(|source| DaemonError::Nar {
        path: path.clone(),
        source,
    })?;
    super::built::check_hash(&path, info, &nar)?;
    // MD5 fixed outputs (and a `ca` this code cannot read) are traced
    // like any other input: they do not check themselves.
    let kind = info.ca.as_deref().and_then(ContentAddress::parse_kind);
    let content = match kind {
        None => None,
        Some((method, algo)) => {
            let digest = if method == Method::Recursive && algo == HashAlgo::Sha256 {
                nar.sha256.to_vec()
            } else {
                content_hash(Path::new(&path), method, algo).map_err(|source| DaemonError::Nar {
                    path: path.clone(),
                    source,
                })?
            };
            let address = ContentAddress {
                method,
                algo,
                digest,
            };
            let registered = info.ca.clone().unwrap_or_default();
            if address.render() != registered {
                return Err(DaemonError::StoreCorruption {
                    path,
                    registered,
                    computed: address.render(),
                });
            }
            Some(Content {
                address,
                references: info.references.clone(),
            })
        }
    };
    Ok(TraceInput {
        path,
        nar_sha256: nar.sha256,
        content,
    })
}

/// The hash a content address names: of the file's bytes (text, flat) or
/// of the NAR (recursive), with `algo`.
fn content_hash(path: &Path, method: Method, algo: HashAlgo) -> Result<Vec<u8>, NarError> {
    struct Digest(ring::digest::Context);
    impl Write for Digest {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Digest(ring::digest::Context::new(algo.ring()));
    let io = |op: &'static str| {
        let path: PathBuf = path.to_owned();
        move |source| NarError::Io { op, path, source }
    };
    match method {
        Method::Recursive => {
            crate::nar::dump(path, &mut sink)?;
        }
        Method::Text | Method::Flat => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(io("opening"))?;
            if !file
                .metadata()
                .map_err(io("reading metadata of"))?
                .is_file()
            {
                return Err(NarError::Io {
                    op: "hashing",
                    path: path.to_owned(),
                    source: std::io::Error::other("a flat or text content address names a file"),
                });
            }
            let mut buf = vec![0; 256 * 1024];
            loop {
                let n = file.read(&mut buf).map_err(io("reading"))?;
                if n == 0 {
                    break;
                }
                sink.0.update(buf.get(..n).unwrap_or_default());
            }
        }
    }
    Ok(sink.0.finish().as_ref().to_vec())
}
