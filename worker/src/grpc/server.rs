//! Where the APIs listen, and who may connect.
//!
//! - A Unix socket: only local processes the socket's mode (0600: the
//!   daemon's user, and root) lets in. The default.
//! - A loopback TCP address (`127.0.0.0/8`, `::1`): only processes on the
//!   worker's VM.
//! - Any other TCP address only with mTLS: the server presents its
//!   certificate and requires a client certificate that chains to the
//!   configured CA. [`Server::bind`] refuses a network address without it,
//!   before anything listens.

use std::fmt;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::GrpcError;
use super::build::BuildService;
use super::log::LogService;

/// Concurrent requests (HTTP/2 streams) on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Largest HTTP/2 header list accepted: gRPC's own headers are a few
/// hundred bytes (hyper's default is 16 MiB).
const MAX_HEADER_LIST: u32 = 16 << 10;
/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings that find dead peers, whose streams would hold builds.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest PEM file read for TLS.
const MAX_PEM_FILE: u64 = 1 << 20;

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket at this path; a stale socket there is replaced.
    Unix(PathBuf),
    /// A TCP address. Port 0 picks a free port.
    Tcp(SocketAddr),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
            Listen::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// mTLS: the server's certificate and key, and the CA that client
/// certificates must chain to. There is no TLS without client
/// certificates: a network client is either configured or refused.
#[derive(Clone)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert_chain_pem: Vec<u8>,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
    /// The CA certificate(s) of the clients, PEM.
    pub client_ca_pem: Vec<u8>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_chain_pem", &self.cert_chain_pem.len())
            .field("key_pem", &"<redacted>")
            .field("client_ca_pem", &self.client_ca_pem.len())
            .finish()
    }
}

impl TlsConfig {
    /// Read the three PEM files.
    pub fn from_files(cert_chain: &Path, key: &Path, client_ca: &Path) -> Result<Self, GrpcError> {
        Ok(TlsConfig {
            cert_chain_pem: read_pem(cert_chain)?,
            key_pem: read_pem(key)?,
            client_ca_pem: read_pem(client_ca)?,
        })
    }

    fn server_tls(&self) -> Result<ServerTlsConfig, GrpcError> {
        for (what, pem) in [
            ("server certificate", &self.cert_chain_pem),
            ("client CA", &self.client_ca_pem),
        ] {
            let certs = provenix_verifier::certificates_from_pem_or_der(pem)
                .map_err(|e| GrpcError::Tls(format!("{what}: {e}")))?;
            if certs.is_empty() {
                return Err(GrpcError::Tls(format!("{what}: no certificate")));
            }
        }
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_chain_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.client_ca_pem))
            // Client certificates are required, not optional.
            .client_auth_optional(false)
            .timeout(TLS_HANDSHAKE_TIMEOUT))
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, GrpcError> {
    use std::io::Read;
    let io = |op| {
        let what = path.display().to_string();
        move |source| GrpcError::Io { op, what, source }
    };
    let file = std::fs::File::open(path).map_err(io("open"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io("read"))?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_PEM_FILE) {
        return Err(GrpcError::Tls(format!(
            "{} is over {MAX_PEM_FILE} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Where to listen and how.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The address.
    pub listen: Listen,
    /// mTLS; required for a TCP address that is not loopback.
    pub tls: Option<TlsConfig>,
}

/// A bound listener, ready to serve.
pub struct Server {
    listener: Listener,
    listen: Listen,
    builder: tonic::transport::Server,
}

enum Listener {
    Unix(UnixListener, SocketFile),
    Tcp(TcpListener),
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listen)
            .finish()
    }
}

impl Server {
    /// Check the configuration and bind. A TCP address that is not
    /// loopback without [`TlsConfig`] is refused with
    /// [`GrpcError::InsecureBind`]; a TLS configuration that does not load
    /// is refused here too, not at the first connection.
    pub async fn bind(config: ServerConfig) -> Result<Server, GrpcError> {
        if let Listen::Tcp(addr) = config.listen {
            if !addr.ip().is_loopback() && config.tls.is_none() {
                return Err(GrpcError::InsecureBind { addr });
            }
        }
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .http2_max_header_list_size(MAX_HEADER_LIST)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
        if let Some(tls) = &config.tls {
            builder = builder.tls_config(tls.server_tls()?)?;
        }
        let (listener, listen) = match config.listen {
            Listen::Unix(path) => {
                let (listener, file) = bind_unix(&path).await?;
                (Listener::Unix(listener, file), Listen::Unix(path))
            }
            Listen::Tcp(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| GrpcError::Io {
                        op: "bind",
                        what: addr.to_string(),
                        source,
                    })?;
                let local = listener.local_addr().map_err(|source| GrpcError::Io {
                    op: "local address of",
                    what: addr.to_string(),
                    source,
                })?;
                (Listener::Tcp(listener), Listen::Tcp(local))
            }
        };
        Ok(Server {
            listener,
            listen,
            builder,
        })
    }

    /// Where the server listens: for TCP, with the port it was given.
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// Serve the given APIs until `shutdown` completes, then wait for the
    /// requests in flight. A Unix socket is removed when this returns.
    pub async fn serve(
        mut self,
        build: Option<BuildService>,
        log: Option<LogService>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), GrpcError> {
        let router = self
            .builder
            .add_optional_service(build.map(BuildService::into_server))
            .add_optional_service(log.map(LogService::into_server));
        match self.listener {
            Listener::Unix(listener, _file) => {
                router
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
                    .await?;
            }
            Listener::Tcp(listener) => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
        }
        Ok(())
    }
}

/// A Unix socket file, removed on drop.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bind a Unix socket with mode 0600, replacing a stale socket (one that
/// refuses connections) but nothing else.
async fn bind_unix(path: &Path) -> Result<(UnixListener, SocketFile), GrpcError> {
    let io = |op| {
        let what = path.display().to_string();
        move |source| GrpcError::Io { op, what, source }
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
            Ok(_) => {
                return Err(io("bind")(std::io::Error::new(
                    ErrorKind::AddrInUse,
                    "another process serves this socket",
                )));
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io("remove stale socket"))?;
            }
            Err(e) => return Err(io("probe")(e)),
        },
        Ok(_) => {
            return Err(io("bind")(std::io::Error::new(
                ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io("stat")(e)),
    }
    let listener = UnixListener::bind(path).map_err(io("bind"))?;
    let file = SocketFile(path.to_owned());
    // The socket is created with the process's umask; until this chmod it
    // is as open as that umask allows, so the socket's directory should be
    // private too (the daemon's state or runtime directory is).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod"))?;
    Ok((listener, file))
}
