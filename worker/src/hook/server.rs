//! The daemon's side of the hook socket: who may connect, how much each
//! connection may hold, and how long anything may take.
//!
//! Bounds, and why:
//!
//! - Access: the socket file is `0600` (owner only), or `0660` with a
//!   group when other uids are allowed ([`bind`]); then every connection's
//!   uid (`SO_PEERCRED`) must be one of [`ServerOptions::allowed_uids`].
//! - Per peer: a process (`SO_PEERCRED` pid) holds at most
//!   [`ServerOptions::max_per_peer`] connections. Nix runs each post-build
//!   hook as its own process, which makes one connection, so a peer with
//!   more is flooding and the excess is refused at once, never queued.
//! - In total: at most [`ServerOptions::max_connections`]; when they are
//!   all taken, a new connection closes the one idle the longest, so idle
//!   connections from many processes cannot lock a hook out either.
//! - Time: a connection may wait [`ServerOptions::idle_timeout`] for its
//!   next request; a request's body must arrive, and a response must be
//!   taken by the client, within [`ServerOptions::io_timeout`]. A client
//!   that pipelines requests and never reads is closed when its response
//!   does not fit the socket's buffer within that time.
//! - Shutdown: idle connections, and those whose client has not taken its
//!   response, close at once; requests in progress get
//!   [`ServerOptions::shutdown_grace`], then their tasks are aborted.

// Parses what clients hand it: no panics from input.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::protocol::{
    Ack, FRAME_HEADER, HeadInfo, MAX_REQUEST, Request, Response, frame, frame_len,
};
use crate::daemon::{BundleFor, DaemonError, Worker};

/// Who may connect, and how much a connection may hold.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Uids served. Empty: root and the daemon's own uid.
    pub allowed_uids: Vec<u32>,
    /// Connections served at once, over all peers.
    pub max_connections: usize,
    /// Connections one process may hold at once.
    pub max_per_peer: usize,
    /// How long a connection may wait between requests.
    pub idle_timeout: Duration,
    /// How long a request's body may take to arrive once its length has,
    /// and a response may take to be taken by the client.
    pub io_timeout: Duration,
    /// How long requests in progress may run on after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            allowed_uids: Vec::new(),
            // Each connection is a file descriptor: a quarter of the
            // usual soft RLIMIT_NOFILE (1024), leaving the rest to the
            // log, Nix queries and gRPC.
            max_connections: 256,
            // A hook is one process with one connection; `export` too.
            // Eight leaves room for a client that retries.
            max_per_peer: 8,
            // Nix's hook sends its request as soon as it connects, and
            // `export` its next as soon as it wrote the last bundle.
            idle_timeout: Duration::from_secs(10),
            // A frame is at most 2 MiB through a local socket: a
            // millisecond for a client that reads.
            io_timeout: Duration::from_secs(5),
            // SIGTERM must end the daemon within a few seconds whatever
            // clients do (systemd's default stop timeout is 90 s; the
            // appender and the last checkpoint need the rest).
            shutdown_grace: Duration::from_secs(2),
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
/// or if the path is not a socket), and restrict the socket file to its
/// owner (`0600`), or with `group` to its owner and that group (`0660`,
/// the file's group set to `group`). It is never world-writable: connecting
/// to a Unix socket needs write permission on its file, so the file mode
/// is the first gate and the uid check of each connection the second.
/// Must run inside a tokio runtime.
pub fn bind(path: &Path, group: Option<u32>) -> std::io::Result<HookListener> {
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
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    // The socket file is ours: its owner is the daemon's effective uid.
    let own_uid = std::fs::metadata(path)?.uid();
    Ok(HookListener {
        listener,
        path: path.to_owned(),
        own_uid,
    })
}

/// The connections being served: per process, and which are idle.
#[derive(Default)]
struct Registry {
    next: u64,
    slots: HashMap<u64, Slot>,
}

struct Slot {
    pid: Option<i32>,
    /// Since when it waits for a request; `None` while serving one.
    idle_since: Option<Instant>,
    evict: Arc<Notify>,
}

type Shared = Arc<Mutex<Registry>>;

fn lock(registry: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    // A panic while holding the lock leaves counts that are at worst
    // stale, which only refuses or evicts early.
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a connection is not served.
fn admit(
    registry: &Shared,
    options: &ServerOptions,
    pid: Option<i32>,
) -> Result<(u64, Arc<Notify>), String> {
    let mut reg = lock(registry);
    if let Some(pid) = pid {
        let held = reg.slots.values().filter(|s| s.pid == Some(pid)).count();
        if held >= options.max_per_peer {
            return Err(format!(
                "process {pid} already holds {held} connections, the limit per process"
            ));
        }
    }
    if reg.slots.len() >= options.max_connections.max(1) {
        let oldest = reg
            .slots
            .iter()
            .filter_map(|(id, s)| s.idle_since.map(|t| (t, *id)))
            .min();
        match oldest.and_then(|(_, id)| reg.slots.remove(&id)) {
            Some(evicted) => evicted.evict.notify_one(),
            None => {
                return Err(format!(
                    "the daemon is serving {} requests, its limit; try again",
                    reg.slots.len()
                ));
            }
        }
    }
    let id = reg.next;
    reg.next = reg.next.wrapping_add(1);
    let evict = Arc::new(Notify::new());
    reg.slots.insert(
        id,
        Slot {
            pid,
            idle_since: Some(Instant::now()),
            evict: evict.clone(),
        },
    );
    Ok((id, evict))
}

/// Removes a connection's slot when its task ends, however it ends.
struct SlotGuard {
    registry: Shared,
    id: u64,
}

impl SlotGuard {
    fn set_idle(&self, idle: bool) {
        if let Some(slot) = lock(&self.registry).slots.get_mut(&self.id) {
            slot.idle_since = idle.then(Instant::now);
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        lock(&self.registry).slots.remove(&self.id);
    }
}

/// Serve `listener` until `shutdown` turns true; then stop accepting,
/// remove the socket, close idle connections, give requests in progress
/// [`ServerOptions::shutdown_grace`] and abort what is left.
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
    let registry: Shared = Arc::default();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                eprintln!("provenix-worker: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (uid, pid) = match stream.peer_cred() {
            Ok(cred) => (cred.uid(), cred.pid()),
            Err(e) => {
                eprintln!("provenix-worker: peer credentials: {e}");
                continue;
            }
        };
        let admitted = if allowed.contains(&uid) {
            admit(&registry, &options, pid)
        } else {
            Err(format!("uid {uid} may not use this socket"))
        };
        let (id, evict) = match admitted {
            Ok(slot) => slot,
            Err(why) => {
                refuse(&stream, &why);
                continue;
            }
        };
        let conn = Connection {
            worker: worker.clone(),
            options: options.clone(),
            shutdown: shutdown.clone(),
            evict,
            slot: SlotGuard {
                registry: registry.clone(),
                id,
            },
        };
        connections.spawn(conn.run(stream));
    }
    let _ = std::fs::remove_file(&listener.path);
    drop(listener);
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Say why, without waiting: a fresh connection's socket buffer takes a
/// short frame at once, and a peer that is refused gets no time of ours.
fn refuse(stream: &UnixStream, why: &str) {
    if let Some(bytes) = frame(&Response::Error(why.to_owned()).encode()) {
        let _ = stream.try_write(&bytes);
    }
}

struct Connection {
    worker: Arc<Worker>,
    options: ServerOptions,
    shutdown: watch::Receiver<bool>,
    evict: Arc<Notify>,
    slot: SlotGuard,
}

/// What reading a frame found.
enum Frame {
    Body(Vec<u8>),
    /// The peer closed, or the connection is to close without a word.
    Closed,
    /// The connection cannot go on: say why, then close.
    Fatal(String),
}

impl Connection {
    async fn run(mut self, mut stream: UnixStream) {
        loop {
            self.slot.set_idle(true);
            let mut header = [0u8; FRAME_HEADER];
            let waited = tokio::select! {
                read = tokio::time::timeout(self.options.idle_timeout, stream.read_exact(&mut header)) => Some(read),
                _ = self.shutdown.wait_for(|s| *s) => return,
                () = self.evict.notified() => None,
            };
            let Some(waited) = waited else {
                let why = "closed to make room for another connection".to_owned();
                let _ = self.write(&mut stream, &Response::Error(why)).await;
                return;
            };
            self.slot.set_idle(false);
            let frame = match waited {
                Err(_) => Frame::Fatal("idle for too long".into()),
                Ok(Err(_)) => Frame::Closed,
                Ok(Ok(_)) => self.read_body(&mut stream, frame_len(header)).await,
            };
            let body = match frame {
                Frame::Body(body) => body,
                Frame::Closed => return,
                Frame::Fatal(why) => {
                    let _ = self.write(&mut stream, &Response::Error(why)).await;
                    return;
                }
            };
            let response = match Request::decode(&body) {
                Ok(request) => self.handle(request).await,
                Err(why) => Response::Error(format!("bad request: {why}")),
            };
            // A response the client does not take holds up nothing at
            // shutdown: the request is done, only the answer is waiting.
            let mut shutdown = self.shutdown.clone();
            let written = tokio::select! {
                written = self.write(&mut stream, &response) => written,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            if written.is_err() {
                return;
            }
        }
    }

    async fn read_body(&self, stream: &mut UnixStream, len: usize) -> Frame {
        if len > MAX_REQUEST {
            return Frame::Fatal(format!(
                "a request of {len} bytes is over the limit of {MAX_REQUEST}"
            ));
        }
        let mut body = vec![0u8; len];
        match tokio::time::timeout(self.options.io_timeout, stream.read_exact(&mut body)).await {
            Err(_) => Frame::Fatal("a request took too long to arrive".into()),
            Ok(Err(_)) => Frame::Closed,
            Ok(Ok(_)) => Frame::Body(body),
        }
    }

    /// Write a response, or give up after the I/O timeout: a client that
    /// does not take its answers loses its connection.
    async fn write(&self, stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
        let bytes =
            frame(&response.encode()).ok_or_else(|| std::io::Error::other("response too large"))?;
        tokio::time::timeout(self.options.io_timeout, stream.write_all(&bytes))
            .await
            .map_err(|_| std::io::Error::other("the client does not read its responses"))?
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
