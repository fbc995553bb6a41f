//! `provenix-worker`: the attested build worker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use provenix_worker::platform::{Choice, Platform, TpmOptions};

#[cfg(feature = "tpm")]
mod ak;

/// The Provenix attested build worker.
#[derive(Parser)]
#[command(about, version = concat!(env!("CARGO_PKG_VERSION"), " (source commit ", env!("PROVENIX_SOURCE_COMMIT"), ")"))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Attest a file: an SEV-SNP report whose REPORT_DATA is the SHA-512 of
    /// the file, written with its certificate table to --out.
    Report {
        /// The file to bind into the report.
        #[arg(long)]
        file: PathBuf,
        /// Where to write report.bin and certs.bin.
        #[arg(long)]
        out: PathBuf,
        /// The platform: hardware when present, else the simulator.
        #[arg(long, value_enum, default_value_t = Choice::Auto)]
        platform: Choice,
        #[command(flatten)]
        tpm: TpmOptions,
        /// The VMPL to request the report at.
        #[arg(long, default_value_t = 0)]
        vmpl: u32,
    },
    /// Attest CI artifacts (direct mode): for each, a statement bound by its
    /// own hardware report, verified, and written beside it as
    /// `<artifact>.provenix`. Exits non-zero on any failure.
    Attest {
        /// The files to attest.
        #[arg(long = "artifact", required = true)]
        artifacts: Vec<PathBuf>,
        /// The platform: hardware when present, else the simulator.
        #[arg(long, value_enum, default_value_t = Choice::Auto)]
        platform: Choice,
        #[command(flatten)]
        tpm: TpmOptions,
        /// The VCEK/VLEK (DER or PEM), for hosts whose certificate table
        /// lacks it.
        #[arg(long)]
        vcek: Option<PathBuf>,
        /// The policy the self-check applies (default: AMD's roots on
        /// hardware, the simulator's test roots on the simulator).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Print the simulator's ARK fingerprints (SHA-256 of the DER), one line
    /// per product, as a policy pins them.
    SimRoots,
    /// Run the daemon: hash, sign and log what Nix's post-build hook
    /// reports, with attested checkpoints, until SIGTERM or SIGINT.
    Serve {
        /// The state directory (one log directory per identity).
        #[arg(long)]
        state: PathBuf,
        /// The hook socket [default: $PROVENIX_SOCKET, else
        /// /run/provenix/hook.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The platform: hardware when present, else the simulator.
        #[arg(long, value_enum, default_value_t = Choice::Auto)]
        platform: Choice,
        #[command(flatten)]
        tpm: TpmOptions,
        /// Attest a checkpoint after this many new entries.
        #[arg(long, default_value_t = provenix_worker::daemon::DEFAULT_CHECKPOINT_EVERY)]
        checkpoint_every: u64,
        /// Attest a checkpoint this often (milliseconds) while entries wait
        /// for one.
        #[arg(long, default_value_t = 1000)]
        checkpoint_ms: u64,
        /// The policy the self-checks apply (default: AMD's roots on
        /// hardware, the simulator's test roots on the simulator).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The VCEK/VLEK (DER or PEM), for hosts whose certificate table
        /// lacks it.
        #[arg(long)]
        vcek: Option<PathBuf>,
        /// A uid allowed to use the socket (repeatable) [default: root and
        /// the daemon's own uid]. Other uids also need --socket-group.
        #[arg(long = "allow-uid")]
        allow_uids: Vec<u32>,
        /// The group (numeric gid) of the socket file, which is then 0660
        /// instead of 0600: how uids other than the daemon's own reach it.
        /// It is never world-writable; the daemon still serves only the
        /// --allow-uid uids.
        #[arg(long)]
        socket_group: Option<u32>,
        /// The Nix store directory.
        #[arg(long, default_value = "/nix/store")]
        store: PathBuf,
        /// Most outputs in one submission.
        #[arg(long, default_value_t = provenix_worker::daemon::DEFAULT_MAX_OUTPUTS)]
        max_outputs: usize,
        /// Serve the gRPC build and log APIs here: `unix:PATH`, or a TCP
        /// address (loopback, or any address with --tls-*).
        #[arg(long, value_parser = parse_listen)]
        grpc: Option<provenix_worker::grpc::Listen>,
        /// mTLS for --grpc: the server's certificate chain (PEM).
        #[arg(long, requires_all = ["tls_key", "client_ca"])]
        tls_cert: Option<PathBuf>,
        /// mTLS for --grpc: the server's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// mTLS for --grpc: the CA that client certificates must chain to.
        #[arg(long, requires = "tls_cert")]
        client_ca: Option<PathBuf>,
        /// The deployment settings file (the image's init passes it): its
        /// SHA-256 must be SEV-SNP's HOST_DATA, or is extended into TPM PCR
        /// 15 before the worker serves (docs/image.md).
        #[arg(long)]
        settings: Option<PathBuf>,
        /// `NAME=VALUE`: a Nix option for builds through the gRPC API, e.g.
        /// `sandbox-paths=/bin/sh=...` (repeatable). Substituters, remote
        /// builders and the post-build hook are always off there.
        #[arg(long = "nix-option", value_parser = parse_nix_option)]
        nix_options: Vec<(String, String)>,
    },
    /// Nix's post-build-hook: send DRV_PATH and OUT_PATHS to the daemon and
    /// wait until every output is logged. Exits non-zero if it is not.
    Hook {
        /// The daemon's socket [default: $PROVENIX_SOCKET, else
        /// /run/provenix/hook.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Seconds to wait for the daemon (it hashes every output first).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Ask the daemon for the bundles of store paths and write each to
    /// `<out>/<basename>.provenix`. With --cache, also write the paths to a
    /// file:// binary cache signed with the worker's Nix signatures, and
    /// print the `trusted-public-keys` line for it. Exits non-zero if any is
    /// missing.
    Export {
        /// The daemon's socket [default: $PROVENIX_SOCKET, else
        /// /run/provenix/hook.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Where to write the bundles.
        #[arg(long)]
        out: PathBuf,
        /// Seconds to wait for each bundle (up to a checkpoint interval).
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Also write a Nix binary cache here (`nix-cache-info`, uncompressed
        /// NARs under `nar/`, `<hash>.narinfo` with the statement's `Sig:`),
        /// for `nix copy --from file://DIR` or `nix store verify --store`.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// The store paths.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Enroll the TPM's attestation key with an operator CA: `request`,
    /// then `activate` the operator's challenge (docs/tpm.md).
    #[cfg(feature = "tpm")]
    Ak {
        #[command(subcommand)]
        what: ak::AkCommand,
    },
}

/// The largest deployment settings file read.
const MAX_SETTINGS: usize = 1 << 20;

/// The name Nix's `post-build-hook` setting runs the worker by: Nix gives a
/// hook no arguments, so under this name the worker is `hook` with the
/// default socket (the image installs it as a symbolic link).
const POST_BUILD_HOOK_NAME: &str = "post-build-hook";

fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_os_string()));
    let cli = if invoked_as.as_deref() == Some(std::ffi::OsStr::new(POST_BUILD_HOOK_NAME)) {
        Cli::parse_from(["provenix-worker", "hook"])
    } else {
        Cli::parse()
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provenix-worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Report {
            file,
            out,
            platform,
            tpm,
            vmpl,
        } => {
            let platform = detect(platform, &tpm, unix_now())?;
            let contents =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let digest = ring::digest::digest(&ring::digest::SHA512, &contents);
            let mut report_data = [0u8; 64];
            report_data.copy_from_slice(digest.as_ref());
            let evidence = platform.evidence(&report_data, vmpl)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let mut files: Vec<(&str, &[u8])> = Vec::new();
            match &evidence {
                provenix_verifier::Evidence::Snp(e) => {
                    files.push(("report.bin", &e.report));
                    if let Some(table) = &e.cert_table {
                        files.push(("certs.bin", table));
                    }
                }
                provenix_verifier::Evidence::Tpm(e) => {
                    files.push(("quote.attest", &e.attest));
                    files.push(("quote.sig", &e.signature));
                    files.push(("ak.pub", &e.ak_public));
                    files.push(("eventlog.bin", &e.event_log));
                }
                provenix_verifier::Evidence::Azure(e) => {
                    files.push(("hcl-report.bin", &e.hcl_report));
                    files.push(("quote.attest", &e.attest));
                    files.push(("quote.sig", &e.signature));
                    files.push(("ak.pub", &e.ak_public));
                    files.push(("eventlog.bin", &e.event_log));
                }
            }
            for (name, bytes) in &files {
                std::fs::write(out.join(name), bytes)
                    .with_context(|| format!("cannot write {}", out.join(name).display()))?;
            }
            eprintln!(
                "report_data = SHA-512({}) = {}",
                file.display(),
                hex::encode(report_data)
            );
            if let Some((first, _)) = files.first() {
                println!("{}", out.join(first).display());
            }
            Ok(())
        }
        Command::Attest {
            artifacts,
            platform,
            tpm,
            vcek,
            policy,
        } => {
            use provenix_verifier::Policy;
            use provenix_worker::attest::{AttestOptions, attest};
            let now = unix_now();
            let platform = detect(platform, &tpm, now)?;
            let policy = match &policy {
                Some(path) => Policy::load(path)?,
                None => platform.self_check_policy(),
            };
            let vek = match &vcek {
                Some(path) => {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let mut ders = provenix_verifier::certificates_from_pem_or_der(&bytes)?;
                    Some(ders.swap_remove(0))
                }
                None => None,
            };
            let done = attest(
                &artifacts,
                &AttestOptions {
                    platform: &platform,
                    commit: provenix_worker::identity::SOURCE_COMMIT,
                    vek,
                    policy: &policy,
                    now,
                },
            )?;
            for a in done {
                println!(
                    "{}  sha256:{}  {} bytes  (provenance: {})",
                    a.bundle.display(),
                    hex::encode(a.sha256),
                    a.size,
                    a.slsa.display()
                );
            }
            Ok(())
        }
        Command::Serve {
            state,
            socket,
            platform,
            tpm,
            checkpoint_every,
            checkpoint_ms,
            policy,
            vcek,
            allow_uids,
            socket_group,
            store,
            max_outputs,
            grpc,
            tls_cert,
            tls_key,
            client_ca,
            settings,
            nix_options,
        } => {
            let mut config = provenix_worker::daemon::Config::new(state);
            config.platform = platform;
            config.tpm = tpm;
            config.settings = settings
                .as_deref()
                .map(|path| {
                    provenix_firmware::file::read_bounded(path, MAX_SETTINGS)
                        .with_context(|| format!("cannot read the settings {}", path.display()))
                })
                .transpose()?;
            config.policy = policy
                .as_deref()
                .map(provenix_verifier::Policy::load)
                .transpose()?;
            config.vek = vcek.as_deref().map(read_vek).transpose()?;
            config.checkpoint_every = checkpoint_every;
            config.checkpoint_interval = std::time::Duration::from_millis(checkpoint_ms);
            config.store_dir = store;
            config.max_outputs = max_outputs;
            let own_uid = rustix::process::geteuid().as_raw();
            if let Some(uid) = allow_uids
                .iter()
                .find(|&&u| u != 0 && u != own_uid)
                .filter(|_| socket_group.is_none())
            {
                anyhow::bail!(
                    "--allow-uid {uid} needs --socket-group: the socket file is 0600, so \
                     only its owner could connect"
                );
            }
            let options = provenix_worker::hook::ServerOptions {
                allowed_uids: allow_uids,
                ..provenix_worker::hook::ServerOptions::default()
            };
            let grpc = match grpc {
                Some(listen) => {
                    let tls = match (&tls_cert, &tls_key, &client_ca) {
                        (Some(c), Some(k), Some(ca)) => {
                            Some(provenix_worker::grpc::TlsConfig::from_files(c, k, ca)?)
                        }
                        _ => None,
                    };
                    Some((
                        provenix_worker::grpc::ServerConfig { listen, tls },
                        nix_options,
                    ))
                }
                None => None,
            };
            serve(
                config,
                provenix_worker::hook::socket_path(socket),
                socket_group,
                options,
                grpc,
            )
        }
        Command::Hook { socket, timeout } => {
            use provenix_worker::hook::{Client, request_from_env, socket_path};
            let (drv, outs) = request_from_env()?;
            if let Some(drv) = &drv {
                if provenix_worker::hook::env::fixed_output(drv) {
                    eprintln!(
                        "provenix-worker hook: {drv} is a fixed-output derivation: its outputs \
                         are content-addressed and check themselves; not logged"
                    );
                    return Ok(());
                }
            }
            let socket = socket_path(socket);
            let mut client = Client::connect(&socket, std::time::Duration::from_secs(timeout))?;
            let ack = client.submit(drv.as_deref(), &outs)?;
            let key = hex::encode(ack.worker_key);
            for (out, index) in outs.iter().zip(&ack.indices) {
                println!("{out} {key} {index}");
            }
            Ok(())
        }
        Command::Export {
            socket,
            out,
            timeout,
            cache,
            paths,
        } => {
            use provenix_worker::hook::{Client, socket_path};
            let socket = socket_path(socket);
            let mut client = Client::connect(&socket, std::time::Duration::from_secs(timeout))?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            if let Some(cache) = &cache {
                std::fs::create_dir_all(cache.join("nar"))
                    .with_context(|| format!("cannot create {}", cache.display()))?;
                std::fs::write(
                    cache.join("nix-cache-info"),
                    format!("StoreDir: {}\n", provenix_worker::nixsig::STORE_DIR),
                )
                .with_context(|| format!("cannot write {}", cache.display()))?;
            }
            let mut failed = 0usize;
            let mut keys: Vec<String> = Vec::new();
            let mut checkpoints: Vec<([u8; 32], u64)> = Vec::new();
            for path in &paths {
                let written = export_one(&mut client, path, &out, cache.as_deref());
                match written {
                    Ok(done) => {
                        println!("{}", done.file.display());
                        if let Some(key) = done.nix_key.filter(|k| !keys.contains(k)) {
                            keys.push(key);
                        }
                        checkpoints.extend(done.checkpoint);
                    }
                    Err(e) => {
                        eprintln!("provenix-worker: {path}: {e:#}");
                        failed = failed.saturating_add(1);
                    }
                }
            }
            let dirs: Vec<&std::path::Path> = std::iter::once(out.as_path())
                .chain(cache.as_deref())
                .collect();
            write_consistency(&mut client, &checkpoints, &dirs)?;
            if !keys.is_empty() {
                // As nix.conf takes it.
                println!("trusted-public-keys = {}", keys.join(" "));
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} bundles not exported", paths.len());
            }
            Ok(())
        }
        #[cfg(feature = "tpm")]
        Command::Ak { what } => ak::run(what),
        Command::SimRoots => {
            for (product, fingerprint) in provenix_firmware::sim::sim_ark_fingerprints() {
                println!("{product} {}", hex::encode(fingerprint));
            }
            Ok(())
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Find the platform, saying loudly when it is the simulator.
fn detect(choice: Choice, tpm: &TpmOptions, now: i64) -> Result<Platform> {
    let platform = Platform::open(choice, tpm, now, |why| {
        eprintln!("######################################################################");
        eprintln!("# WARNING: no SEV-SNP or TPM hardware: {why}");
        eprintln!("# Using the SIMULATED platform. Its evidence proves nothing about");
        eprintln!("# hardware and is accepted only by a policy that names its test root.");
        eprintln!("######################################################################");
    })?;
    eprintln!("platform: {platform}");
    Ok(platform)
}

/// A VCEK/VLEK file, DER or PEM: the first certificate.
fn read_vek(path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut ders = provenix_verifier::certificates_from_pem_or_der(&bytes)?;
    Ok(ders.swap_remove(0))
}

/// Run the daemon until SIGTERM or SIGINT, then shut it down cleanly: the
/// queue drained, a last attested checkpoint, the log synced.
fn serve(
    config: provenix_worker::daemon::Config,
    socket: PathBuf,
    socket_group: Option<u32>,
    options: provenix_worker::hook::ServerOptions,
    grpc: Option<(provenix_worker::grpc::ServerConfig, Vec<(String, String)>)>,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let worker = provenix_worker::daemon::Worker::start(config).await?;
        let listener = provenix_worker::hook::bind(&socket, socket_group)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        eprintln!(
            "provenix-worker: serving on {} as {} (log {}), platform: {}",
            socket.display(),
            hex::encode(worker.public_key()),
            worker.current_log().dir().display(),
            worker.platform()
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(provenix_worker::hook::serve(
            worker.clone(),
            listener,
            options,
            stopped.clone(),
        ));
        let grpc_server = match grpc {
            Some((grpc_config, nix_options)) => {
                use provenix_worker::grpc::{
                    BuildConfig, BuildService, DaemonBackend, LogService, Server,
                };
                let grpc_server = Server::bind(grpc_config).await?;
                eprintln!(
                    "provenix-worker: gRPC build and log APIs on {}",
                    grpc_server.listen()
                );
                let backend = Arc::new(DaemonBackend(worker.clone()));
                let build_config = BuildConfig {
                    work_dir: worker.current_log().dir().join("builds"),
                    nix_options,
                    ..BuildConfig::default()
                };
                std::fs::create_dir_all(&build_config.work_dir)?;
                let build = BuildService::new(backend.clone(), build_config);
                let log = LogService::new(backend);
                let mut stopped = stopped.clone();
                Some(tokio::spawn(async move {
                    grpc_server
                        .serve(Some(build), Some(log), async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        })
                        .await
                }))
            }
            None => None,
        };
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("provenix-worker: stopping");
        stop.send_replace(true);
        let _ = server.await;
        if let Some(grpc_server) = grpc_server {
            grpc_server.await??;
        }
        worker.shutdown().await?;
        Ok(())
    });
    // A hash of a large output may still run on a blocking thread for a
    // request the hook server aborted; nothing waits for its result, so
    // exit without waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// The bundles of one export sit under several checkpoints of the worker's
/// log; a verifier accepts them together only when it can prove those
/// checkpoints are one history. For the current log (older identities' logs
/// are closed and the daemon serves proofs of its own log only), write the
/// consistency proof between each two consecutive checkpoint sizes and from
/// each to the largest, as `.consistency` files (docs/policy.md).
fn write_consistency(
    client: &mut provenix_worker::hook::Client,
    checkpoints: &[([u8; 32], u64)],
    dirs: &[&std::path::Path],
) -> Result<()> {
    let head = client.head()?;
    let mut sizes: Vec<u64> = checkpoints
        .iter()
        .filter(|(key, _)| *key == head.worker_key)
        .map(|(_, size)| *size)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let Some(&largest) = sizes.last() else {
        return Ok(());
    };
    let mut pairs: Vec<(u64, u64)> = sizes.windows(2).map(|w| (w[0], w[1])).collect();
    pairs.extend(sizes.iter().map(|&s| (s, largest)));
    pairs.retain(|(a, b)| a < b);
    pairs.sort_unstable();
    pairs.dedup();
    let origin = provenix_verifier::log_origin(&head.worker_key);
    for (size1, size2) in pairs {
        let proof = provenix_verifier::ConsistencyProof {
            origin: origin.clone(),
            size1,
            size2,
            hashes: client.consistency(size1, size2)?,
        };
        let name = format!(
            "{}-{size1}-{size2}.consistency",
            hex::encode(head.worker_key.get(..8).unwrap_or_default())
        );
        for dir in dirs {
            let file = dir.join(&name);
            std::fs::write(&file, proof.to_text())
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
    }
    Ok(())
}

/// What exporting one store path wrote.
struct Exported {
    /// The bundle file.
    file: PathBuf,
    /// The worker's Nix public key line, with a cache.
    nix_key: Option<String>,
    /// For a logged bundle, its log (worker key) and checkpoint size.
    checkpoint: Option<([u8; 32], u64)>,
}

/// Fetch one bundle and write it to `<out>/<basename>.provenix`, and, with
/// `cache`, the path to that binary cache.
fn export_one(
    client: &mut provenix_worker::hook::Client,
    store_path: &str,
    out: &std::path::Path,
    cache: Option<&std::path::Path>,
) -> Result<Exported> {
    let name = std::path::Path::new(store_path)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.starts_with('.'))
        .context("not a store path")?;
    let bundle = client.export(store_path)?;
    let file = out.join(format!("{name}{}", provenix_worker::attest::BUNDLE_SUFFIX));
    let tmp = out.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, &bundle).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))?;
    let nix_key = cache
        .map(|cache| cache_one(cache, store_path, &bundle))
        .transpose()?;
    let checkpoint = match provenix_verifier::Bundle::from_cbor(&bundle)? {
        provenix_verifier::Bundle::Logged {
            identity, proof, ..
        } => Some((identity.worker_key, proof.size)),
        provenix_verifier::Bundle::Direct { .. } => None,
    };
    Ok(Exported {
        file,
        nix_key,
        checkpoint,
    })
}

/// Add one output to the file:// binary cache `cache`: its NAR, dumped
/// afresh and checked against the statement's hash and size, uncompressed
/// at `nar/<nix32 hash>.nar`, and `<hash part>.narinfo` with the
/// statement's Nix signature, and the bundle beside it as
/// `<hash part>-<name>.provenix`. Returns the worker's Nix public key line.
fn cache_one(cache: &std::path::Path, store_path: &str, bundle: &[u8]) -> Result<String> {
    use provenix_verifier::{Bundle, Statement, Subject, nixsig};
    use std::io::Write;

    /// Hashes what it writes, so the NAR in the cache is the one checked.
    struct Hashing<W>(W, ring::digest::Context);
    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.0.write(buf)?;
            self.1.update(buf.get(..n).unwrap_or_default());
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }

    let (Bundle::Logged { statement, .. } | Bundle::Direct { statement, .. }) =
        Bundle::from_cbor(bundle)?;
    // Checks the COSE signature and the Nix signature.
    let statement = Statement::verify(&statement)?;
    anyhow::ensure!(
        statement.subject == Subject::StorePath(store_path.to_owned()),
        "the bundle is about {:?}",
        statement.subject
    );
    let sig = statement
        .nix_signature
        .clone()
        .context("the statement carries no Nix signature")?;
    let text = nixsig::narinfo(
        store_path,
        &statement.sha256,
        statement.size,
        &statement.references,
        statement.deriver.as_deref(),
        &[sig],
    )?;
    let hash = nixsig::nix32(&statement.sha256);
    let nar = cache.join("nar").join(format!("{hash}.nar"));
    let tmp = cache.join("nar").join(format!(".{hash}.tmp"));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut out = Hashing(file, ring::digest::Context::new(&ring::digest::SHA256));
    let size = provenix_worker::nar::dump(std::path::Path::new(store_path), &mut out)?;
    let digest = out.1.finish();
    anyhow::ensure!(
        digest.as_ref() == statement.sha256 && size == statement.size,
        "{store_path} no longer has the NAR hash and size its statement gives"
    );
    std::fs::rename(&tmp, &nar).with_context(|| format!("cannot write {}", nar.display()))?;
    // narinfo has checked the path: `/nix/store/` and a 32-character hash.
    let hash_part = store_path
        .strip_prefix(nixsig::STORE_DIR)
        .and_then(|base| base.get(1..33))
        .context("not a store path")?;
    let info = cache.join(format!("{hash_part}.narinfo"));
    std::fs::write(&info, text).with_context(|| format!("cannot write {}", info.display()))?;
    // The bundle beside the narinfo, where `provenix verify --cache` looks.
    let base = store_path
        .strip_prefix(nixsig::STORE_DIR)
        .and_then(|p| p.strip_prefix('/'))
        .context("not a store path")?;
    let beside = cache.join(format!("{base}{}", provenix_worker::attest::BUNDLE_SUFFIX));
    std::fs::write(&beside, bundle)
        .with_context(|| format!("cannot write {}", beside.display()))?;
    Ok(nixsig::worker_key_line(&statement.worker_key))
}

fn parse_listen(s: &str) -> Result<provenix_worker::grpc::Listen, String> {
    use provenix_worker::grpc::Listen;
    match s.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(Listen::Unix(PathBuf::from(path))),
        Some(_) => Err("unix: needs a path".into()),
        None => s.parse().map(Listen::Tcp).map_err(|e| {
            format!("{s:?} is neither unix:PATH nor an address like 127.0.0.1:7443: {e}")
        }),
    }
}

fn parse_nix_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}
