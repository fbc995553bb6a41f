//! Bundles from a Nix binary cache: `<hash>.narinfo`, and the bundle
//! beside it as `<hash>-<name>.provenix`, which is what
//! `provenix-worker export --out DIR --cache DIR` writes (the bundle under
//! the store path's base name, the narinfo under its hash part).
//!
//! The cache is not trusted (DESIGN.md, "Trust model"): the bundle is
//! verified like any other, and the narinfo is checked against the verified
//! statement, because Nix substitutes the NAR that the narinfo describes.
//! A narinfo whose StorePath, NarHash or NarSize differs from the statement
//! means the cache serves something other than what the worker attested.
//!
//! `http://` and `https://` go through ureq (blocking, rustls with ring,
//! the system's trust store for https); `file://` reads the directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use provenix_verifier::{MAX_BUNDLE_SIZE, Statement, Subject};

use super::{Fetched, store_path_parts};

/// Largest narinfo read: each reference is one base name of at most 244
/// bytes, and a statement holds at most `MAX_REFERENCES` (65,536) of them,
/// so a narinfo that is not absurd stays under 16 MiB; real ones are a
/// few hundred bytes.
const MAX_NARINFO: usize = 16 << 20;

/// A binary cache, by URL.
pub(crate) struct Cache {
    /// The URL as given, without a trailing `/`.
    url: String,
    kind: Kind,
}

enum Kind {
    File(PathBuf),
    Http(ureq::Agent),
}

/// A narinfo's fields that a statement must agree with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Narinfo {
    /// Where it was read, for messages.
    pub(crate) url: String,
    /// `StorePath:`.
    pub(crate) store_path: String,
    /// `NarHash:` as written (`sha256:<nix32>` or `sha256:<hex>`).
    pub(crate) nar_hash: String,
    /// `NarSize:`.
    pub(crate) nar_size: u64,
    /// `References:`: base names (`<hash>-<name>`), as Nix writes them;
    /// absent is none, as Nix reads it.
    pub(crate) references: Vec<String>,
    /// `Sig:` values, each `name:base64`, unchecked.
    pub(crate) sigs: Vec<String>,
    /// `URL:`: where the (compressed) NAR is, relative to the cache.
    pub(crate) nar_url: Option<String>,
    /// `Compression:` (absent: `bzip2`, as Nix reads it).
    pub(crate) compression: Option<String>,
}

impl Cache {
    /// A cache at `url` (`file://DIR`, `http://...` or `https://...`);
    /// `timeout` bounds each HTTP request from connecting to the last byte.
    pub(crate) fn open(url: &str, timeout: Duration) -> Result<Cache> {
        let url = url.trim_end_matches('/').to_owned();
        let kind = if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() {
                bail!("cache {url:?}: file:// needs a directory");
            }
            Kind::File(PathBuf::from(dir))
        } else if url.starts_with("http://") || url.starts_with("https://") {
            Kind::Http(agent(timeout)?)
        } else {
            bail!("cache {url:?}: not a file://, http:// or https:// URL");
        };
        Ok(Cache { url, kind })
    }

    /// The narinfo and the bundle of `store_path`. A missing file (HTTP
    /// 404), a timeout or a malformed narinfo is an error naming the URL.
    pub(crate) fn fetch(&self, store_path: &str) -> Result<Fetched> {
        let (hash, base) = store_path_parts(store_path)?;
        let narinfo_url = format!("{}/{hash}.narinfo", self.url);
        let text = self.get(&format!("{hash}.narinfo"), MAX_NARINFO)?;
        let narinfo = Narinfo::parse(&narinfo_url, &text)?;
        let bundle_name = format!("{}.provenix", url_escape(base));
        let bytes = self.get(&bundle_name, MAX_BUNDLE_SIZE)?;
        Ok(Fetched {
            source: format!("{}/{bundle_name}", self.url),
            bytes,
            narinfos: vec![narinfo],
        })
    }

    /// [`Cache::fetch`], where a path the cache does not have (no narinfo
    /// or no bundle: HTTP 404, or no such file) is `None`, not an error:
    /// in a build graph most caches lack most paths, and a plain Nix cache
    /// has no bundles.
    pub(crate) fn fetch_if_present(&self, store_path: &str) -> Result<Option<Fetched>> {
        let (_, base) = store_path_parts(store_path)?;
        let Some(narinfo) = self.fetch_narinfo_if_present(store_path)? else {
            return Ok(None);
        };
        let bundle_name = format!("{}.provenix", url_escape(base));
        Ok(self
            .get_if_present(&bundle_name, MAX_BUNDLE_SIZE)?
            .map(|bytes| Fetched {
                source: format!("{}/{bundle_name}", self.url),
                bytes,
                narinfos: vec![narinfo],
            }))
    }

    /// The narinfo of `store_path`, if the cache has one.
    pub(crate) fn fetch_narinfo_if_present(&self, store_path: &str) -> Result<Option<Narinfo>> {
        let (hash, _) = store_path_parts(store_path)?;
        self.narinfo_by_hash(hash)
    }

    /// The narinfo of the store path whose hash part is `hash` (32
    /// characters of Nix's base 32, checked by the caller), if the cache
    /// has one.
    pub(crate) fn narinfo_by_hash(&self, hash: &str) -> Result<Option<Narinfo>> {
        let name = format!("{hash}.narinfo");
        self.get_if_present(&name, MAX_NARINFO)?
            .map(|text| Narinfo::parse(&format!("{}/{name}", self.url), &text))
            .transpose()
    }

    /// [`Cache::get`], `None` when the cache has no such file.
    fn get_if_present(&self, name: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        let missing = match &self.kind {
            Kind::File(dir) => !dir.join(name).exists(),
            Kind::Http(agent) => {
                let url = format!("{}/{name}", self.url);
                match agent.get(&url).call() {
                    Err(ureq::Error::StatusCode(404)) => true,
                    Err(e) => return Err(http_error(&url, e)),
                    Ok(mut response) => {
                        return response
                            .body_mut()
                            .with_config()
                            .limit(u64::try_from(limit).unwrap_or(u64::MAX))
                            .read_to_vec()
                            .map(Some)
                            .map_err(|e| http_error(&url, e));
                    }
                }
            }
        };
        if missing {
            Ok(None)
        } else {
            self.get(name, limit).map(Some)
        }
    }

    /// A reader of the file `name` (a NAR) in the cache, streamed.
    pub(crate) fn open_file(&self, name: &str) -> Result<Box<dyn std::io::Read + Send>> {
        let url = format!("{}/{name}", self.url);
        match &self.kind {
            Kind::File(dir) => Ok(Box::new(
                std::fs::File::open(dir.join(name)).with_context(|| url.clone())?,
            )),
            Kind::Http(agent) => {
                let response = agent.get(&url).call().map_err(|e| http_error(&url, e))?;
                Ok(Box::new(response.into_body().into_reader()))
            }
        }
    }

    /// The cache's URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The bytes of `name` in the cache, at most `limit` of them.
    fn get(&self, name: &str, limit: usize) -> Result<Vec<u8>> {
        let url = format!("{}/{name}", self.url);
        match &self.kind {
            Kind::File(dir) => {
                crate::input::read(&dir.join(name), limit).with_context(|| url.clone())
            }
            Kind::Http(agent) => {
                let mut response = agent.get(&url).call().map_err(|e| http_error(&url, e))?;
                response
                    .body_mut()
                    .with_config()
                    .limit(u64::try_from(limit).unwrap_or(u64::MAX))
                    .read_to_vec()
                    .map_err(|e| http_error(&url, e))
            }
        }
    }
}

/// A cache holds the consistency proofs `provenix-worker export --cache`
/// writes: `<first 16 hex digits of the worker key>-<size1>-<size2>.consistency`.
/// A missing or malformed one is no proof (the checkpoint then counts as
/// unproven); nothing in it is trusted, the witness verifies it.
impl provenix_verifier::ProofSource for Cache {
    fn consistency(
        &self,
        origin: &str,
        size1: u64,
        size2: u64,
    ) -> Option<Vec<provenix_verifier::Hash>> {
        let key = origin.strip_prefix("provenix.dev/log/")?.get(..16)?;
        let name = format!("{key}-{size1}-{size2}.consistency");
        let text = self
            .get(&name, provenix_verifier::ConsistencyProof::MAX_LEN)
            .ok()?;
        let proof = provenix_verifier::ConsistencyProof::parse(&text).ok()?;
        (proof.origin == origin && proof.size1 == size1 && proof.size2 == size2)
            .then_some(proof.hashes)
    }
}

/// An HTTP client: one timeout over a whole request, rustls with ring,
/// the system's roots. Responses with 4xx/5xx status are errors.
fn agent(timeout: Duration) -> Result<ureq::Agent> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    // ureq takes rustls' process default when no provider is configured;
    // ring is the workspace's one crypto library. An Err only says a
    // provider was already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The system's trust store (as curl and Nix use it); errors for single
    // unreadable certificates are ignored like theirs, and an https cache
    // whose chain ends nowhere in it fails its handshake, naming the URL.
    let roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(roots)))
                .build(),
        )
        .build();
    Ok(config.into())
}

fn http_error(url: &str, e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::StatusCode(404) => anyhow::anyhow!("{url}: not found (HTTP 404)"),
        ureq::Error::StatusCode(code) => anyhow::anyhow!("{url}: HTTP status {code}"),
        ureq::Error::Timeout(what) => anyhow::anyhow!("{url}: timed out ({what})"),
        ureq::Error::BodyExceedsLimit(limit) => {
            anyhow::anyhow!("{url}: larger than the limit of {limit} bytes")
        }
        other => anyhow::anyhow!("{url}: {other}"),
    }
}

/// `s` with every byte but unreserved ones (RFC 3986 section 2.3)
/// percent-encoded: store path names may hold `?`, `=` and `+`.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Narinfo {
    /// Parse the fields Nix's `NarInfo` constructor requires
    /// (`src/libstore/nar-info.cc`): `StorePath`, `NarHash` and `NarSize`,
    /// each once; other keys are Nix's business. `url` names the file in
    /// errors.
    pub(crate) fn parse(url: &str, bytes: &[u8]) -> Result<Narinfo> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| anyhow::anyhow!("{url}: malformed narinfo: not UTF-8 ({e})"))?;
        let mut store_path = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut sigs = Vec::new();
        let mut nar_url = None;
        let mut compression = None;
        for (n, line) in text.lines().enumerate() {
            let lineno = n.saturating_add(1);
            if line.is_empty() {
                continue;
            }
            // Nix writes `References: ` with nothing after it for none.
            let Some((key, value)) = line.split_once(": ").or_else(|| {
                line.strip_suffix(':')
                    .filter(|k| *k == "References")
                    .map(|k| (k, ""))
            }) else {
                bail!("{url}: malformed narinfo: line {lineno} is not `Key: value`");
            };
            let slot = match key {
                "StorePath" => &mut store_path,
                "NarHash" => &mut nar_hash,
                "NarSize" => &mut nar_size,
                "References" => &mut references,
                "URL" => &mut nar_url,
                "Compression" => &mut compression,
                "Sig" => {
                    sigs.push(value.to_owned());
                    continue;
                }
                _ => continue,
            };
            if slot.replace(value.to_owned()).is_some() {
                bail!("{url}: malformed narinfo: {key} given twice (line {lineno})");
            }
        }
        let missing = |key: &str| anyhow::anyhow!("{url}: malformed narinfo: no {key}");
        let store_path = store_path.ok_or_else(|| missing("StorePath"))?;
        let nar_hash = nar_hash.ok_or_else(|| missing("NarHash"))?;
        let nar_size = nar_size.ok_or_else(|| missing("NarSize"))?;
        let nar_size = nar_size.parse::<u64>().map_err(|_| {
            anyhow::anyhow!("{url}: malformed narinfo: NarSize {nar_size:?} is not a number")
        })?;
        let well_formed = nar_hash.strip_prefix("sha256:").is_some_and(|h| {
            (h.len() == 52
                && h.bytes()
                    .all(|b| b"0123456789abcdfghijklmnpqrsvwxyz".contains(&b)))
                || (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        if !well_formed {
            bail!(
                "{url}: malformed narinfo: NarHash {nar_hash:?} is not sha256:<nix32> or sha256:<hex>"
            );
        }
        let mut references: Vec<String> = references
            .unwrap_or_default()
            .split(' ')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        references.sort();
        Ok(Narinfo {
            url: url.to_owned(),
            store_path,
            nar_hash,
            nar_size,
            references,
            sigs,
            nar_url,
            compression,
        })
    }

    /// Every way this narinfo disagrees with `statement`, as one message;
    /// `Ok` when it agrees.
    pub(crate) fn check(&self, statement: &Statement) -> Result<(), String> {
        let mut wrong = Vec::new();
        if statement.subject != Subject::StorePath(self.store_path.clone()) {
            wrong.push(format!(
                "StorePath {} (the statement is about {})",
                self.store_path,
                statement.subject.name()
            ));
        }
        let stated = provenix_verifier::nixsig::nar_hash(&statement.sha256);
        let hash = self.nar_hash.strip_prefix("sha256:").unwrap_or_default();
        let same = if hash.len() == 64 {
            hash.eq_ignore_ascii_case(&hex::encode(statement.sha256))
        } else {
            self.nar_hash == stated
        };
        if !same {
            wrong.push(format!(
                "NarHash {} (the statement states {stated})",
                self.nar_hash
            ));
        }
        if self.nar_size != statement.size {
            wrong.push(format!(
                "NarSize {} (the statement states {})",
                self.nar_size, statement.size
            ));
        }
        // The statement holds full store paths; a narinfo, base names.
        let mut stated: Vec<&str> = statement
            .references
            .iter()
            .map(|r| r.rsplit_once('/').map_or(r.as_str(), |(_, base)| base))
            .collect();
        stated.sort_unstable();
        if stated != self.references {
            wrong.push(format!(
                "References {:?} (the statement states {:?})",
                self.references.join(" "),
                stated.join(" ")
            ));
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the narinfo at {} disagrees with the statement: {}",
                self.url,
                wrong.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "StorePath: /nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-x\n\
        URL: nar/a.nar\nCompression: none\n\
        NarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n\
        NarSize: 120\nReferences: \n";

    #[test]
    fn narinfo_fields_parse_and_malformed_ones_are_named() {
        let n = Narinfo::parse("u", GOOD.as_bytes()).unwrap();
        assert_eq!(
            n.store_path,
            "/nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-x"
        );
        assert_eq!(n.nar_size, 120);
        for (bad, says) in [
            (GOOD.replace("NarSize: 120", "NarSize: x"), "NarSize \"x\""),
            (GOOD.replace("NarSize: 120\n", ""), "no NarSize"),
            (GOOD.replace("StorePath: ", "StorePath:"), "line 1"),
            (GOOD.replace("sha256:1b8", "md5:1b8"), "NarHash"),
            (GOOD.replace("ymkq1iyzicy5s", "ymkq1iyzicy5"), "NarHash"),
            (format!("{GOOD}NarSize: 1\n"), "NarSize given twice"),
        ] {
            let e = Narinfo::parse("http://c/x.narinfo", bad.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("http://c/x.narinfo: malformed narinfo"),
                "{e}"
            );
            assert!(e.contains(says), "{e}");
        }
        assert!(Narinfo::parse("u", b"\xff").is_err());
    }

    #[test]
    fn every_narinfo_field_that_differs_from_the_statement_is_refused() {
        let statement = Statement {
            subject: Subject::StorePath("/nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-x".into()),
            sha256: [0x11; 32],
            size: 120,
            references: vec![
                "/nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-x".into(),
                "/nix/store/9c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-y".into(),
            ],
            deriver: None,
            worker_key: [7; 32],
            source_commit: "c0ffee".into(),
            log_index: None,
            time: 0,
            nix_signature: None,
            trace: None,
        };
        let good = GOOD.replace(
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
            &"11".repeat(32),
        );
        let good = good.replace(
            "References: \n",
            "References: 9c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-y 0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-x\n",
        );
        Narinfo::parse("u", good.as_bytes())
            .unwrap()
            .check(&statement)
            .unwrap();
        for (bad, says) in [
            (good.replace("-x\nURL", "-z\nURL"), "StorePath"),
            (good.replace("sha256:11", "sha256:12"), "NarHash"),
            (good.replace("NarSize: 120", "NarSize: 121"), "NarSize"),
            (good.replace(" 0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-x\n", "\n"), "References"),
            (good.replace("References: ", "References: 1c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-w "), "References"),
            (good.replace("References: 9c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-y 0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-x\n", ""), "References"),
        ] {
            let e = Narinfo::parse("u", bad.as_bytes())
                .unwrap()
                .check(&statement)
                .unwrap_err();
            assert!(e.contains(says), "{says}: {e}");
        }
    }

    #[test]
    fn names_are_escaped_for_urls() {
        assert_eq!(url_escape("abc-x.y_z"), "abc-x.y_z");
        assert_eq!(url_escape("a?b=c+d"), "a%3Fb%3Dc%2Bd");
    }
}
