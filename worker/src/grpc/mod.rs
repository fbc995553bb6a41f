//! The worker's gRPC APIs (`proto/provenix.proto`): builds with the real
//! `nix-build`, and reads of the attested log in the spirit of Trustix's
//! log API.
//!
//! - [`BuildService`]: validates a build request (a store derivation that
//!   exists, or the contents of a Nix expression file evaluated in
//!   restricted mode), runs `nix-instantiate` and `nix-build`, streams the
//!   build log, then hands the derivations and their outputs to a
//!   [`BuildBackend`], which hashes, signs and logs them itself, and
//!   returns log indices and bundles.
//! - [`LogService`]: head, entries, inclusion and consistency proofs,
//!   attested checkpoints and bundles, from a [`LogBackend`]; every
//!   position is checked against the head before the backend sees it.
//! - [`Server`]: where the APIs listen. A Unix socket or a loopback
//!   address by default; any other address only with mTLS
//!   ([`TlsConfig`]), or [`Server::bind`] refuses to start.
//!
//! No request carries a hash: nothing a client sends is signed, only what
//! the backend computed from the store (DESIGN.md, "Trust model").
//!
//! The backends are traits so that this module does not depend on the
//! daemon's internals: the daemon implements them over its worker and log
//! directory.

mod backend;
mod build;
mod daemon_backend;
mod log;
mod server;

pub use backend::{AttestedCheckpoint, BuildBackend, Head, LogBackend};
pub use build::{
    BuildConfig, BuildService, MAX_ATTRIBUTE_LEN, MAX_ATTRIBUTES, MAX_BUILD_REQUEST,
    MAX_DERIVATIONS, MAX_EXPRESSION, MAX_LOG_LINE,
};
pub use daemon_backend::DaemonBackend;
pub use log::{LogService, MAX_ENTRIES, MAX_ENTRIES_BYTES, MAX_LOG_REQUEST};
pub use server::{Listen, Server, ServerConfig, TlsConfig};

/// The code `tonic-prost-build` generates from `proto/provenix.proto`:
/// messages, servers and clients.
pub mod proto {
    // Generated code: its items are documented by the .proto's comments
    // where it has them, and it is not written to this crate's lints.
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

/// Why the gRPC server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// A TCP address that is not loopback, without mTLS: the build API
    /// serves a network only to clients with configured certificates.
    #[error(
        "refusing to serve on {addr}: not a loopback address, and no mTLS is \
         configured (a server certificate, its key and the CA of the client \
         certificates)"
    )]
    InsecureBind {
        /// The address asked for.
        addr: std::net::SocketAddr,
    },
    /// A socket or file operation failed.
    #[error("{op} {what}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// To which address or file.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}
