//! A client of a worker's gRPC `Log` API (`worker/proto/provenix.proto`),
//! one blocking function per RPC, and [`bundles_for`], which finds the
//! bundles of store paths in a worker's log.
//!
//! Where it connects: `unix:PATH`, `http://HOST:PORT` only when HOST is a
//! loopback address (as the worker serves plaintext only there), and
//! `https://HOST:PORT` with mTLS: a client certificate and key, and the CA
//! the worker's certificate must chain to, mirroring the worker's
//! `--tls-cert`, `--tls-key` and `--client-ca`.
//!
//! Nothing the worker answers is trusted: bundles are verified afterwards,
//! and proofs are checked by whoever asks for them. Each call has a time
//! limit; answers are bounded by tonic's decoding limit.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use provenix_verifier::{Hash, Subject, hash_from_slice};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use super::{Fetched, statement_subject};

/// The code `tonic-prost-build` generates from the worker's proto: the
/// messages and the `Log` client.
pub(crate) mod proto {
    // Generated code, not written to this crate's lints.
    #![allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )]
    tonic::include_proto!("provenix.v1");
}

use proto::log_client::LogClient;

/// Largest answer decoded: the worker keeps an `Entries` answer under
/// 3 MiB and a bundle is at most `MAX_BUNDLE_SIZE` (2 MiB); tonic's
/// default limit is this too, stated so it cannot drift.
const MAX_MESSAGE: usize = 4 << 20;
/// Most log entries [`bundles_for`] reads: a bound on the work a worker
/// can make a verifier do (ten million entries are 10,000 `Entries`
/// calls).
pub(crate) const MAX_SCAN: u64 = 10_000_000;
/// How long to wait between asks for a bundle that no attested checkpoint
/// covers yet (the worker attests one every N entries or T ms).
const RETRY_BUNDLE: Duration = Duration::from_millis(200);

/// mTLS client credentials, as files (PEM).
#[derive(Clone, Debug)]
pub(crate) struct Tls {
    /// The client's certificate chain.
    pub(crate) cert: PathBuf,
    /// The client's private key.
    pub(crate) key: PathBuf,
    /// The CA the worker's certificate must chain to.
    pub(crate) ca: PathBuf,
}

/// A connection to one worker's `Log` API.
pub(crate) struct LogApi {
    url: String,
    timeout: Duration,
    runtime: tokio::runtime::Runtime,
    client: LogClient<Channel>,
}

impl LogApi {
    /// Connect to the worker at `url`; `timeout` bounds connecting and
    /// each call.
    pub(crate) fn connect(url: &str, tls: Option<&Tls>, timeout: Duration) -> Result<LogApi> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let channel = runtime
            .block_on(async { tokio::time::timeout(timeout, channel(url, tls, timeout)).await })
            .map_err(|_| anyhow::anyhow!("worker {url}: no connection within {timeout:?}"))??;
        let client = LogClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(LogApi {
            url: url.to_owned(),
            timeout,
            runtime,
            client,
        })
    }

    /// The worker's URL, as given.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Run one call with the time limit; errors name the worker and the RPC.
    /// The client is a cheap clone of one channel, so calls take `&self`.
    fn call<T, F>(&self, rpc: &str, f: F) -> Result<T, CallError>
    where
        F: AsyncFnOnce(&mut LogClient<Channel>) -> Result<tonic::Response<T>, tonic::Status>,
    {
        let timeout = self.timeout;
        let mut client = self.client.clone();
        match self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, f(&mut client)).await })
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(CallError::Status(
                format!("worker {} {rpc}", self.url),
                status,
            )),
            Err(_) => Err(CallError::Timeout(format!(
                "worker {} {rpc}: no answer within {timeout:?}",
                self.url
            ))),
        }
    }

    /// `Head`: the log's size and root.
    pub(crate) fn head(&self) -> Result<(u64, Hash)> {
        let head = self.call("Head", async |c| c.head(proto::HeadRequest {}).await)?;
        let root = hash_from_slice("head root", &head.root)
            .with_context(|| format!("worker {} Head", self.url))?;
        Ok((head.size, root))
    }

    /// `Entries`: entries from `start`, up to `end` (the worker may return
    /// fewer, never none).
    pub(crate) fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>> {
        let entries = self
            .call("Entries", async |c| {
                c.entries(proto::EntriesRequest { start, end }).await
            })?
            .entries;
        let asked = end.saturating_sub(start);
        if entries.is_empty() || u64::try_from(entries.len()).unwrap_or(u64::MAX) > asked {
            bail!(
                "worker {} Entries: {} entries for the range {start}..{end}",
                self.url,
                entries.len()
            );
        }
        Ok(entries)
    }

    /// `InclusionProof` of entry `index` in the tree of `size` entries.
    // For the checkpoint memory (witness), like the two below.
    #[allow(dead_code)]
    pub(crate) fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        let proof = self.call("InclusionProof", async |c| {
            c.inclusion_proof(proto::InclusionProofRequest { index, size })
                .await
        })?;
        self.hashes("InclusionProof", &proof.hashes)
    }

    /// `ConsistencyProof` from the tree of `size1` entries to that of
    /// `size2`.
    #[allow(dead_code)]
    pub(crate) fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>> {
        let proof = self.call("ConsistencyProof", async |c| {
            c.consistency_proof(proto::ConsistencyProofRequest { size1, size2 })
                .await
        })?;
        self.hashes("ConsistencyProof", &proof.hashes)
    }

    /// `Checkpoint`: the attested checkpoint of tree size `size`, or the
    /// latest one, as the worker sent it (its note and evidence are for the
    /// caller to verify).
    #[allow(dead_code)]
    pub(crate) fn checkpoint(&self, size: Option<u64>) -> Result<proto::CheckpointResponse> {
        Ok(self.call("Checkpoint", async |c| {
            c.checkpoint(proto::CheckpointRequest { size }).await
        })?)
    }

    /// `Bundle` of entry `index`. A worker answers UNAVAILABLE while no
    /// attested checkpoint covers the entry; it is asked again until the
    /// time limit.
    pub(crate) fn bundle(&self, index: u64) -> Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.call("Bundle", async |c| {
                c.bundle(proto::BundleRequest { index }).await
            }) {
                Ok(b) => return Ok(b.bundle),
                Err(CallError::Status(_, s))
                    if s.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
                {
                    std::thread::sleep(RETRY_BUNDLE);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn hashes(&self, rpc: &str, hashes: &[Vec<u8>]) -> Result<Vec<Hash>> {
        hashes
            .iter()
            .map(|h| hash_from_slice("proof hash", h))
            .collect::<Result<_, _>>()
            .with_context(|| format!("worker {} {rpc}", self.url))
    }
}

/// Why a call failed: the worker's status, or no answer in time.
#[derive(Debug)]
pub(crate) enum CallError {
    Status(String, tonic::Status),
    Timeout(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status(what, s) => write!(f, "{what}: {:?}: {}", s.code(), s.message()),
            CallError::Timeout(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for CallError {}

/// The bundles of every entry of the worker's log about one of `wanted`
/// (store paths): the log is read from the start (the `Log` API has no
/// index by subject), each entry's statement decoded to see what it is
/// about, and each matching entry's bundle fetched. `progress` is told of
/// every entry read.
pub(crate) fn bundles_for(
    api: &LogApi,
    wanted: &HashSet<&str>,
    progress: impl FnMut(u64, u64),
) -> Result<Vec<Fetched>> {
    let (index, _) = subjects(api, 0, |p| wanted.contains(p), progress)?;
    let mut matching: Vec<u64> = index.into_values().flatten().collect();
    matching.sort_unstable();
    matching
        .into_iter()
        .map(|index| bundle(api, index))
        .collect()
}

/// The bundle of entry `index` of the worker's log.
pub(crate) fn bundle(api: &LogApi, index: u64) -> Result<Fetched> {
    Ok(Fetched {
        source: format!("{}#{index}", api.url()),
        bytes: api.bundle(index)?,
        narinfos: Vec::new(),
    })
}

/// Which entries of the worker's log, from entry `from` on, are about
/// which store path, for the paths `keep` selects, and the log's size:
/// each entry's statement is decoded (unverified) to see what it is about.
pub(crate) fn subjects(
    api: &LogApi,
    from: u64,
    keep: impl Fn(&str) -> bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<(HashMap<String, Vec<u64>>, u64)> {
    let (size, _) = api.head()?;
    if size > MAX_SCAN {
        bail!(
            "worker {}: its log has {size} entries, more than the {MAX_SCAN} this verifier reads",
            api.url()
        );
    }
    let mut index: HashMap<String, Vec<u64>> = HashMap::new();
    let mut next = from;
    while next < size {
        let entries = api.entries(next, size)?;
        for entry in entries {
            if let Some(Subject::StorePath(p)) = statement_subject(&entry)
                && keep(&p)
            {
                index.entry(p).or_default().push(next);
            }
            next = next.saturating_add(1);
        }
        progress(next, size);
    }
    Ok((index, size))
}

/// A channel to `url`, plaintext only to a Unix socket or loopback.
async fn channel(url: &str, tls: Option<&Tls>, timeout: Duration) -> Result<Channel> {
    if let Some(path) = url.strip_prefix("unix:") {
        if path.is_empty() {
            bail!("worker {url:?}: unix: needs a socket path");
        }
        if tls.is_some() {
            bail!("worker {url}: TLS options are for https:// workers, not a Unix socket");
        }
        let path = PathBuf::from(path);
        // The URI is required but unused: the connector dials the socket.
        return Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .with_context(|| format!("worker {url}: cannot connect"));
    }
    let (tls_wanted, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!("worker {url:?}: not unix:PATH, http://HOST:PORT or https://HOST:PORT");
    };
    let host = host_of(rest);
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("worker {url:?}: not a URL"))?
        .connect_timeout(timeout);
    let endpoint = match (tls_wanted, tls) {
        (false, Some(_)) => {
            bail!("worker {url}: TLS options given for a plaintext http:// URL; use https://")
        }
        (false, None) => {
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!(
                    "worker {url}: plaintext gRPC only to a loopback address or a Unix socket; \
                     use https:// with --tls-cert, --tls-key and --tls-ca"
                );
            }
            endpoint
        }
        (true, None) => {
            bail!("worker {url}: https:// needs mTLS: --tls-cert, --tls-key and --tls-ca")
        }
        (true, Some(tls)) => {
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read_pem(&tls.ca)?))
                .identity(Identity::from_pem(
                    read_pem(&tls.cert)?,
                    read_pem(&tls.key)?,
                ))
                .domain_name(host);
            endpoint
                .tls_config(config)
                .with_context(|| format!("worker {url}: TLS configuration"))?
        }
    };
    endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("worker {url}: cannot connect: {}", error_chain(&e)))
}

/// The host of `host:port/...` (IPv6 in brackets), without brackets.
fn host_of(rest: &str) -> &str {
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// tonic's transport errors say "transport error" at the top; the cause
/// is underneath.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn read_pem(path: &Path) -> Result<Vec<u8>> {
    crate::input::read(path, crate::input::CERTIFICATES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_urls() {
        assert_eq!(host_of("127.0.0.1:7443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7443/x"), "::1");
        assert_eq!(host_of("worker.example:443"), "worker.example");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn plaintext_is_refused_beyond_loopback() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = Duration::from_secs(1);
        for (url, says) in [
            ("http://192.0.2.1:7443", "plaintext gRPC only to a loopback"),
            ("https://192.0.2.1:7443", "needs mTLS"),
            ("ftp://x", "not unix:PATH"),
            ("unix:", "needs a socket path"),
        ] {
            let e = rt.block_on(channel(url, None, t)).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
