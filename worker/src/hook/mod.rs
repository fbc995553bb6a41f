//! Nix's post-build hook and the daemon's local socket.
//!
//! `provenix-worker hook` is what Nix's `post-build-hook` runs. It reads
//! `DRV_PATH` and `OUT_PATHS` (space-separated) from its environment (see
//! [`request_from_env`] for Nix 2.8.0, which leaves `OUT_PATHS` empty), sends
//! them to the daemon over a Unix socket, and exits 0 once the daemon has
//! logged every output durably, or non-zero with the daemon's reason. It
//! never sends a hash: the daemon hashes each output itself, and signs it
//! only if Nix registered it as built from `DRV_PATH` by this machine in
//! this boot, with the hash the daemon computed (`crate::daemon`, "What
//! the daemon signs").
//!
//! Four parts: [`env`](mod@env) (what Nix hands the hook), [`protocol`] (messages
//! and frames), [`client`] (the hook's side) and [`server`] (the daemon's
//! side, with its bounds).
//!
//! # Protocol
//!
//! Each message is a frame: its length as a 4-byte big-endian integer, then
//! that many bytes of deterministically encoded CBOR (RFC 8949 section
//! 4.2.1), a map with text keys. Requests:
//!
//! ```text
//! {"v": 1, "op": "submit", "drv": text, "outs": [text, ...]}
//! {"v": 1, "op": "export", "path": text}
//! {"v": 1, "op": "head"}
//! {"v": 1, "op": "consistency", "size1": uint, "size2": uint}
//! ```
//!
//! Responses, one per request, in order:
//!
//! ```text
//! {"v": 1, "ok": true, "key": bytes(32), "indices": [uint, ...]}       submit
//! {"v": 1, "ok": true, "bundle": bytes}                                export
//! {"v": 1, "ok": true, "key": bytes(32), "size": uint, "checkpoint": uint}  head
//! {"v": 1, "ok": true, "proof": [bytes(32), ...]}                      consistency
//! {"v": 1, "ok": false, "error": text}                                 any
//! ```
//!
//! `key` is the worker key whose log holds the entries at `indices`;
//! `bundle` is a `Bundle::Logged` in its CBOR encoding. Both sides refuse
//! what the statement decoder refuses (the verifier's `cbor::decode_map`):
//! non-canonical encodings, keys out of order, unknown keys (so a client
//! that tries to send a hash learns that it cannot) and trailing bytes.
//! A request is at most [`MAX_REQUEST`] bytes, a response at most
//! [`MAX_RESPONSE`]. A connection may carry any number of requests.
//!
//! # Who may connect
//!
//! The socket file is `0600`, owned by the daemon's uid (root in the
//! image), or `0660` with the group `--socket-group` names when other uids
//! are allowed: never world-writable. The daemon also reads each
//! connection's peer credentials (`SO_PEERCRED`) and serves only the
//! configured uids (by default root and its own uid: Nix's daemon runs the
//! hook as root). A caller can only name store paths; what the daemon signs
//! is decided from Nix's database and the store, so a hostile caller can at
//! worst have an output Nix really built here logged again, or be refused.
//! Connections are bounded per process, in number and in time
//! ([`server`]); a malformed or hostile message gets an error response and
//! never affects other connections.

pub mod client;
pub mod env;
pub mod protocol;
pub mod server;

use std::path::PathBuf;

pub use client::Client;
pub use env::{request_from_env, socket_path};
pub use protocol::{Ack, HeadInfo, MAX_REQUEST, MAX_RESPONSE, PROTOCOL_VERSION, Request, Response};
pub use server::{HookListener, ServerOptions, bind, serve};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/provenix/hook.sock";
/// The environment variable naming the socket.
pub const SOCKET_ENV: &str = "PROVENIX_SOCKET";

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
