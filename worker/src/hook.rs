//! Nix's post-build hook and the daemon's local socket.
//!
//! `provenix-worker hook` is what Nix's `post-build-hook` runs. It reads
//! `DRV_PATH` and `OUT_PATHS` (space-separated) from its environment (see
//! [`request_from_env`] for Nix 2.8.0, which leaves `OUT_PATHS` empty), sends
//! them to the daemon over a Unix socket, and exits 0 once the daemon has
//! logged every output durably, or non-zero with the daemon's reason. It
//! never sends a hash: the daemon hashes each output itself.
//!
//! # Protocol
//!
//! Each message is a frame: its length as a 4-byte big-endian integer, then
//! that many bytes of CBOR (RFC 8949), a map with text keys. Requests:
//!
//! ```text
//! {"v": 1, "op": "submit", "drv": text (optional), "outs": [text, ...]}
//! {"v": 1, "op": "export", "path": text}
//! {"v": 1, "op": "head"}
//! ```
//!
//! Responses, one per request, in order:
//!
//! ```text
//! {"v": 1, "ok": true, "key": bytes(32), "indices": [uint, ...]}       submit
//! {"v": 1, "ok": true, "bundle": bytes}                                export
//! {"v": 1, "ok": true, "key": bytes(32), "size": uint, "checkpoint": uint}  head
//! {"v": 1, "ok": false, "error": text}                                 any
//! ```
//!
//! `key` is the worker key whose log holds the entries at `indices`;
//! `bundle` is a `Bundle::Logged` in its CBOR encoding. Unknown keys are
//! refused, so a client that tries to send a hash learns that it cannot.
//! A request is at most [`MAX_REQUEST`] bytes, a response at most
//! [`MAX_RESPONSE`]. A connection may carry any number of requests.
//!
//! # Who may connect
//!
//! The daemon reads each connection's peer credentials (`SO_PEERCRED`) and
//! serves only the configured uids (by default root and its own uid, as
//! Nix's daemon runs the hook as root). A malformed or hostile message gets
//! an error response, and a frame too large or too slow closes the
//! connection; neither affects other connections.

// Parses what clients, files or Nix hand it: no panics from input.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ciborium::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::daemon::{BundleFor, DaemonError, Worker};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/provenix/hook.sock";
/// The environment variable naming the socket.
pub const SOCKET_ENV: &str = "PROVENIX_SOCKET";
/// The protocol version.
pub const PROTOCOL_VERSION: u64 = 1;
/// Largest request: a submission of a few hundred outputs, each a store
/// path of at most ~500 bytes (store directory, hash, 211-byte name).
pub const MAX_REQUEST: usize = 256 << 10;
/// Largest response: a bundle (at most `provenix_verifier::MAX_BUNDLE_SIZE`)
/// with its envelope.
pub const MAX_RESPONSE: usize = provenix_verifier::MAX_BUNDLE_SIZE + (4 << 10);

/// Why the hook client failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// No daemon at the socket.
    #[error("cannot connect to the provenix daemon at {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed or timed out.
    #[error("talking to the provenix daemon: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered something this client does not understand.
    #[error("the provenix daemon's answer is malformed: {0}")]
    Protocol(String),
    /// The daemon refused or failed the request.
    #[error("the provenix daemon refused: {0}")]
    Daemon(String),
    /// The environment Nix should have set is missing or malformed.
    #[error("{0}")]
    Environment(String),
}

/// The daemon's acknowledgement of a submission: every output is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The key whose log holds the entries.
    pub worker_key: [u8; 32],
    /// One index per output, in the order sent.
    pub indices: Vec<u64>,
}

/// The current log's head, as the daemon reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadInfo {
    /// The current worker key.
    pub worker_key: [u8; 32],
    /// Entries in its log.
    pub size: u64,
    /// Entries its latest attested checkpoint covers.
    pub checkpoint: u64,
}

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

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// A request, as the daemon decodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Log these outputs of this derivation.
    Submit {
        /// The derivation, if known.
        drv: Option<String>,
        /// The outputs.
        outs: Vec<String>,
    },
    /// The bundle of the newest statement about this store path.
    Export {
        /// The store path.
        path: String,
    },
    /// The current log's head.
    Head,
    /// The consistency proof between two sizes of the current log.
    Consistency {
        /// The older tree size.
        size1: u64,
        /// The newer tree size.
        size2: u64,
    },
}

impl Request {
    /// The CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut map = vec![("v", Value::from(PROTOCOL_VERSION))];
        match self {
            Request::Submit { drv, outs } => {
                map.push(("op", Value::from("submit")));
                if let Some(d) = drv {
                    map.push(("drv", Value::from(d.as_str())));
                }
                map.push((
                    "outs",
                    Value::Array(outs.iter().map(|o| Value::from(o.as_str())).collect()),
                ));
            }
            Request::Export { path } => {
                map.push(("op", Value::from("export")));
                map.push(("path", Value::from(path.as_str())));
            }
            Request::Head => map.push(("op", Value::from("head"))),
            Request::Consistency { size1, size2 } => {
                map.push(("op", Value::from("consistency")));
                map.push(("size1", Value::from(*size1)));
                map.push(("size2", Value::from(*size2)));
            }
        }
        encode(map)
    }

    /// Decode an untrusted request.
    pub fn decode(bytes: &[u8]) -> Result<Request, String> {
        let mut m = TextFields::decode(bytes)?;
        m.version()?;
        let op = m.text("op")?;
        let request = match op.as_str() {
            "submit" => Request::Submit {
                drv: m.optional_text("drv")?,
                outs: m.text_array("outs")?,
            },
            "export" => Request::Export {
                path: m.text("path")?,
            },
            "head" => Request::Head,
            "consistency" => Request::Consistency {
                size1: m.uint("size1")?,
                size2: m.uint("size2")?,
            },
            other => return Err(format!("unknown op {:?}", crate::daemon::truncate(other))),
        };
        m.finish()?;
        Ok(request)
    }
}

/// A response, as the client decodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Submitted.
    Ack(Ack),
    /// A bundle.
    Bundle(Vec<u8>),
    /// The head.
    Head(HeadInfo),
    /// A consistency proof's nodes.
    Proof(Vec<[u8; 32]>),
    /// Refused or failed.
    Error(String),
}

impl Response {
    /// The CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut map = vec![("v", Value::from(PROTOCOL_VERSION))];
        match self {
            Response::Ack(ack) => {
                map.push(("ok", Value::Bool(true)));
                map.push(("key", Value::Bytes(ack.worker_key.to_vec())));
                map.push((
                    "indices",
                    Value::Array(ack.indices.iter().map(|&i| Value::from(i)).collect()),
                ));
            }
            Response::Bundle(b) => {
                map.push(("ok", Value::Bool(true)));
                map.push(("bundle", Value::Bytes(b.clone())));
            }
            Response::Head(h) => {
                map.push(("ok", Value::Bool(true)));
                map.push(("key", Value::Bytes(h.worker_key.to_vec())));
                map.push(("size", Value::from(h.size)));
                map.push(("checkpoint", Value::from(h.checkpoint)));
            }
            Response::Proof(hashes) => {
                map.push(("ok", Value::Bool(true)));
                map.push((
                    "proof",
                    Value::Array(hashes.iter().map(|h| Value::Bytes(h.to_vec())).collect()),
                ));
            }
            Response::Error(e) => {
                map.push(("ok", Value::Bool(false)));
                map.push(("error", Value::from(e.as_str())));
            }
        }
        encode(map)
    }

    /// Decode a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, String> {
        let mut m = TextFields::decode(bytes)?;
        m.version()?;
        let response = match m.take("ok") {
            Some(Value::Bool(false)) => Response::Error(m.text("error")?),
            Some(Value::Bool(true)) => {
                if let Some(bundle) = m.take("bundle") {
                    match bundle {
                        Value::Bytes(b) => Response::Bundle(b),
                        _ => return Err("bundle is not a byte string".into()),
                    }
                } else if let Some(proof) = m.take("proof") {
                    let Value::Array(nodes) = proof else {
                        return Err("proof is not an array".into());
                    };
                    if nodes.len() > provenix_verifier::MAX_CONSISTENCY_PROOF {
                        return Err("proof is longer than any log's".into());
                    }
                    Response::Proof(
                        nodes
                            .into_iter()
                            .map(|n| match n {
                                Value::Bytes(b) => b
                                    .try_into()
                                    .map_err(|_| "a proof node is not 32 bytes".to_owned()),
                                _ => Err("a proof node is not a byte string".to_owned()),
                            })
                            .collect::<Result<_, _>>()?,
                    )
                } else if m.has("indices") {
                    Response::Ack(Ack {
                        worker_key: m.key()?,
                        indices: m.uint_array("indices")?,
                    })
                } else {
                    Response::Head(HeadInfo {
                        worker_key: m.key()?,
                        size: m.uint("size")?,
                        checkpoint: m.uint("checkpoint")?,
                    })
                }
            }
            _ => return Err("no ok field".into()),
        };
        m.finish()?;
        Ok(response)
    }
}

fn encode(map: Vec<(&str, Value)>) -> Vec<u8> {
    let value = Value::Map(map.into_iter().map(|(k, v)| (Value::from(k), v)).collect());
    let mut out = Vec::new();
    // Writing to a Vec fails only if allocation does.
    let _ = ciborium::ser::into_writer(&value, &mut out);
    out
}

/// The fields of a CBOR map with text keys, taken one by one; `finish`
/// refuses any left over.
struct TextFields(Vec<(Value, Value)>);

impl TextFields {
    fn decode(bytes: &[u8]) -> Result<TextFields, String> {
        // Bounded by the frame limit; ciborium bounds nesting (256 levels).
        let value: Value =
            ciborium::de::from_reader(bytes).map_err(|e| format!("not CBOR: {e}"))?;
        match value {
            Value::Map(entries) => Ok(TextFields(entries)),
            _ => Err("not a CBOR map".into()),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k.as_text() == Some(key))
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        let at = self.0.iter().position(|(k, _)| k.as_text() == Some(key))?;
        Some(self.0.swap_remove(at).1)
    }

    fn version(&mut self) -> Result<(), String> {
        match self.take("v") {
            Some(Value::Integer(i)) if u64::try_from(i) == Ok(PROTOCOL_VERSION) => Ok(()),
            Some(_) => Err(format!("protocol version is not {PROTOCOL_VERSION}")),
            None => Err("no protocol version".into()),
        }
    }

    fn text(&mut self, key: &str) -> Result<String, String> {
        match self.take(key) {
            Some(Value::Text(t)) => Ok(t),
            Some(_) => Err(format!("{key} is not text")),
            None => Err(format!("{key} is missing")),
        }
    }

    fn optional_text(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(_) => Err(format!("{key} is not text")),
        }
    }

    fn text_array(&mut self, key: &str) -> Result<Vec<String>, String> {
        match self.take(key) {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::Text(t) => Ok(t),
                    _ => Err(format!("an item of {key} is not text")),
                })
                .collect(),
            Some(_) => Err(format!("{key} is not an array")),
            None => Err(format!("{key} is missing")),
        }
    }

    fn uint(&mut self, key: &str) -> Result<u64, String> {
        match self.take(key) {
            Some(Value::Integer(i)) => u64::try_from(i).map_err(|_| format!("{key} is negative")),
            _ => Err(format!("{key} is missing or not an integer")),
        }
    }

    fn uint_array(&mut self, key: &str) -> Result<Vec<u64>, String> {
        match self.take(key) {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::Integer(i) => u64::try_from(i).map_err(|_| format!("{key}: negative")),
                    _ => Err(format!("an item of {key} is not an integer")),
                })
                .collect(),
            _ => Err(format!("{key} is missing or not an array")),
        }
    }

    fn key(&mut self) -> Result<[u8; 32], String> {
        match self.take("key") {
            Some(Value::Bytes(b)) => b.try_into().map_err(|_| "key is not 32 bytes".into()),
            _ => Err("key is missing or not bytes".into()),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self.0.first() {
            None => Ok(()),
            Some((k, _)) => Err(match k.as_text() {
                Some(name) => format!("unknown field {:?}", crate::daemon::truncate(name)),
                None => "a key is not text".into(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Client (blocking: the hook is a short-lived process)
// ---------------------------------------------------------------------------

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    stream: std::os::unix::net::UnixStream,
}

impl Client {
    /// Connect to the daemon at `socket`; every read and write on the
    /// connection times out after `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client, HookError> {
        let stream = std::os::unix::net::UnixStream::connect(socket).map_err(|source| {
            HookError::Connect {
                path: socket.to_owned(),
                source,
            }
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client { stream })
    }

    /// Send one request and read its response.
    pub fn call(&mut self, request: &Request) -> Result<Response, HookError> {
        let body = request.encode();
        if body.len() > MAX_REQUEST {
            return Err(HookError::Protocol(format!(
                "request of {} bytes is over the daemon's limit of {MAX_REQUEST}",
                body.len()
            )));
        }
        let len = u32::try_from(body.len()).map_err(|_| HookError::Protocol("too long".into()))?;
        let mut frame = Vec::with_capacity(body.len().saturating_add(4));
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        // The daemon may refuse a connection (a uid it does not serve)
        // with an answer and close it before reading the request; writing
        // then fails, but the answer says why, so read it all the same.
        let written = self.stream.write_all(&frame);
        match (self.read_response(), written) {
            (Ok(response), _) => Ok(response),
            (Err(_), Err(write)) => Err(write.into()),
            (Err(read), Ok(())) => Err(read),
        }
    }

    fn read_response(&mut self) -> Result<Response, HookError> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > MAX_RESPONSE {
            return Err(HookError::Protocol(format!("a response of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Response::decode(&body).map_err(HookError::Protocol)
    }

    /// Log the outputs of a build; returns once they are durable.
    pub fn submit(&mut self, drv: Option<&str>, outs: &[String]) -> Result<Ack, HookError> {
        let request = Request::Submit {
            drv: drv.map(str::to_owned),
            outs: outs.to_vec(),
        };
        match self.call(&request)? {
            Response::Ack(ack) if ack.indices.len() == outs.len() => Ok(ack),
            Response::Error(e) => Err(HookError::Daemon(e)),
            other => Err(HookError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// The bundle of the newest statement about `store_path`.
    pub fn export(&mut self, store_path: &str) -> Result<Vec<u8>, HookError> {
        match self.call(&Request::Export {
            path: store_path.to_owned(),
        })? {
            Response::Bundle(b) => Ok(b),
            Response::Error(e) => Err(HookError::Daemon(e)),
            other => Err(HookError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// The consistency proof from the current log's tree of `size1` leaves
    /// to that of `size2` (RFC 9162 section 2.1.4).
    pub fn consistency(&mut self, size1: u64, size2: u64) -> Result<Vec<[u8; 32]>, HookError> {
        match self.call(&Request::Consistency { size1, size2 })? {
            Response::Proof(p) => Ok(p),
            Response::Error(e) => Err(HookError::Daemon(e)),
            other => Err(HookError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// The current log's head.
    pub fn head(&mut self) -> Result<HeadInfo, HookError> {
        match self.call(&Request::Head)? {
            Response::Head(h) => Ok(h),
            Response::Error(e) => Err(HookError::Daemon(e)),
            other => Err(HookError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// Who may connect, and how much a connection may hold.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Uids served. Empty: root and the daemon's own uid.
    pub allowed_uids: Vec<u32>,
    /// Connections served at once; further ones wait in the backlog.
    pub max_connections: usize,
    /// How long a connection may sit between requests, or take to send
    /// one, before it is closed.
    pub idle_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            allowed_uids: Vec::new(),
            max_connections: 256,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The daemon's listening socket.
#[derive(Debug)]
pub struct HookListener {
    listener: UnixListener,
    path: PathBuf,
    own_uid: u32,
}

impl HookListener {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Listen on `path`: create its directory if needed, replace a stale
/// socket a crashed daemon left (refusing if a daemon still answers on it,
/// or if the path is not a socket), and restrict the socket to its owner
/// unless `world` (access is checked per connection by uid either way).
/// Must run inside a tokio runtime.
pub fn bind(path: &Path, world: bool) -> std::io::Result<HookListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{}: a daemon is already listening", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    let mode = if world { 0o666 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    // The socket file is ours: its owner is the daemon's effective uid.
    let own_uid = std::fs::metadata(path)?.uid();
    Ok(HookListener {
        listener,
        path: path.to_owned(),
        own_uid,
    })
}

/// Serve `listener` until `shutdown` turns true; then stop accepting, let
/// each connection finish its current request, and remove the socket.
pub async fn serve(
    worker: Arc<Worker>,
    listener: HookListener,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let allowed: Arc<[u32]> = if options.allowed_uids.is_empty() {
        vec![0, listener.own_uid].into()
    } else {
        options.allowed_uids.clone().into()
    };
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // Take a slot before accepting: excess clients wait in the backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _)) => {
                let conn = Connection {
                    worker: worker.clone(),
                    allowed: allowed.clone(),
                    idle: options.idle_timeout,
                    shutdown: shutdown.clone(),
                };
                connections.spawn(async move {
                    conn.run(stream).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                eprintln!("provenix-worker: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&listener.path);
    while connections.join_next().await.is_some() {}
}

struct Connection {
    worker: Arc<Worker>,
    allowed: Arc<[u32]>,
    idle: Duration,
    shutdown: watch::Receiver<bool>,
}

/// What reading a frame found.
enum Frame {
    Body(Vec<u8>),
    /// The peer closed between frames.
    Closed,
    /// The connection cannot go on: say why, then close.
    Fatal(String),
}

impl Connection {
    async fn run(mut self, mut stream: UnixStream) {
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                eprintln!("provenix-worker: peer credentials: {e}");
                return;
            }
        };
        if !self.allowed.contains(&uid) {
            let _ = write_frame(
                &mut stream,
                &Response::Error(format!("uid {uid} may not use this socket")).encode(),
            )
            .await;
            return;
        }
        loop {
            let frame = tokio::select! {
                frame = read_frame(&mut stream, self.idle) => frame,
                _ = self.shutdown.wait_for(|s| *s) => return,
            };
            let body = match frame {
                Frame::Body(body) => body,
                Frame::Closed => return,
                Frame::Fatal(why) => {
                    let _ = write_frame(&mut stream, &Response::Error(why).encode()).await;
                    return;
                }
            };
            let response = match Request::decode(&body) {
                Ok(request) => self.handle(request).await,
                Err(why) => Response::Error(format!("bad request: {why}")),
            };
            if write_frame(&mut stream, &response.encode()).await.is_err() {
                return;
            }
        }
    }

    async fn handle(&self, request: Request) -> Response {
        let error = |e: DaemonError| Response::Error(e.to_string());
        match request {
            Request::Submit { drv, outs } => match self.worker.submit(drv, outs).await {
                Ok(done) => Response::Ack(Ack {
                    worker_key: *self.worker.public_key(),
                    indices: done.iter().map(|s| s.log_index).collect(),
                }),
                Err(e) => error(e),
            },
            Request::Export { path } => {
                match self.worker.bundle(BundleFor::StorePath(path)).await {
                    Ok(bundle) => Response::Bundle(bundle.to_cbor()),
                    Err(e) => error(e),
                }
            }
            Request::Consistency { size1, size2 } => {
                match self.worker.consistency_proof(size1, size2) {
                    Ok(p) => Response::Proof(p),
                    Err(e) => error(e),
                }
            }
            Request::Head => Response::Head(HeadInfo {
                worker_key: *self.worker.public_key(),
                size: self.worker.head().size,
                checkpoint: self.worker.latest_checkpoint().map_or(0, |c| c.size),
            }),
        }
    }
}

/// Read one frame: the length within `idle`, the body within `idle` too.
async fn read_frame(stream: &mut UnixStream, idle: Duration) -> Frame {
    let mut len = [0u8; 4];
    match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
        Err(_) => return Frame::Fatal("idle for too long".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Frame::Closed,
        Ok(Err(_)) => return Frame::Closed,
        Ok(Ok(_)) => {}
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_REQUEST {
        return Frame::Fatal(format!(
            "a request of {len} bytes is over the limit of {MAX_REQUEST}"
        ));
    }
    let mut body = vec![0u8; len];
    match tokio::time::timeout(idle, stream.read_exact(&mut body)).await {
        Err(_) => Frame::Fatal("a request took too long to arrive".into()),
        Ok(Err(_)) => Frame::Closed,
        Ok(Ok(_)) => Frame::Body(body),
    }
}

async fn write_frame(stream: &mut UnixStream, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("response too large"))?;
    let mut frame = Vec::with_capacity(body.len().saturating_add(4));
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for r in [
            Request::Submit {
                drv: Some("/nix/store/x.drv".into()),
                outs: vec!["/nix/store/a".into(), "/nix/store/b".into()],
            },
            Request::Submit {
                drv: None,
                outs: vec![],
            },
            Request::Export {
                path: "/nix/store/a".into(),
            },
            Request::Head,
            Request::Consistency { size1: 3, size2: 7 },
        ] {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        for r in [
            Response::Ack(Ack {
                worker_key: [7; 32],
                indices: vec![1, 2, u64::MAX],
            }),
            Response::Bundle(vec![1, 2, 3]),
            Response::Head(HeadInfo {
                worker_key: [1; 32],
                size: 10,
                checkpoint: 8,
            }),
            Response::Error("no".into()),
        ] {
            assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn hostile_requests_are_refused() {
        let with = |extra: Vec<(&str, Value)>| {
            let mut map = vec![
                ("v", Value::from(1u64)),
                ("op", Value::from("submit")),
                ("outs", Value::Array(vec![Value::from("/nix/store/a")])),
            ];
            map.extend(extra);
            encode(map)
        };
        assert!(Request::decode(&with(vec![])).is_ok());
        let hash = with(vec![("sha256", Value::Bytes(vec![0; 32]))]);
        assert!(
            Request::decode(&hash)
                .unwrap_err()
                .contains("unknown field")
        );
        let v2 = encode(vec![("v", Value::from(2u64)), ("op", Value::from("head"))]);
        assert!(Request::decode(&v2).unwrap_err().contains("version"));
        for garbage in [
            &b""[..],
            b"\xff",
            b"\x9f",
            b"\xa1\x01\x02",
            b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            assert!(Request::decode(garbage).is_err(), "{garbage:?}");
        }
        // Deep nesting is refused by ciborium's recursion limit, not the
        // stack.
        let mut deep = vec![0x81u8; 100_000];
        deep.push(0);
        assert!(Request::decode(&deep).is_err());
        let outs_not_text = encode(vec![
            ("v", Value::from(1u64)),
            ("op", Value::from("submit")),
            ("outs", Value::Array(vec![Value::from(1u64)])),
        ]);
        assert!(Request::decode(&outs_not_text).is_err());
    }
}
