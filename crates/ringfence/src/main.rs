use std::process::ExitCode as ProcessExit;

use ringfence::cli::{self, Cli, Command, LogFormat};
use ringfence::exit::{CliError, ExitCode};
use tokio_util::sync::CancellationToken;

/// Every command (the server, the router, the CLI) allocates through mimalloc: with thousands
/// of rollouts in progress glibc's malloc took about a third of the server's CPU, mostly in
/// contention and consolidation between the runtime's threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ProcessExit {
    let cli = match cli::parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ProcessExit::from(if e.use_stderr() { ExitCode::Usage as u8 } else { 0 });
        }
    };
    init_logging(&cli);
    // A socket handed over by whoever started this process (the server, or systemd): taken
    // while the process has one thread, since taking it edits the environment.
    let inherited = match &cli.command {
        Command::Router(_) => match listenfd::ListenFd::from_env().take_tcp_listener(0) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("error: the socket passed in LISTEN_FDS is not a TCP listening socket: {e}");
                return ProcessExit::from(ExitCode::Invalid as u8);
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ProcessExit::from(ExitCode::Failure as u8);
        }
    };
    let result = runtime.block_on(run(cli, inherited));
    match result {
        Ok(code) => ProcessExit::from(code as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ProcessExit::from(e.code as u8)
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match cli.command {
        Command::Server(_) | Command::Router(_) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_env("RINGFENCE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

/// Cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
        t.cancel();
    });
    token
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<tokio::net::TcpListener, CliError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::new(ExitCode::Failure, format!("cannot listen on {addr} for the {what}: {e}")))
}

async fn run(cli: Cli, inherited: Option<std::net::TcpListener>) -> Result<ExitCode, CliError> {
    match &cli.command {
        Command::Server(args) => {
            let data_dir = args.data_dir.clone().unwrap_or_else(cli::default_data_dir);
            let tls = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(
                    ringfence::server::tls::server_config(cert, key)
                        .map_err(|e| CliError::new(ExitCode::Invalid, format!("{e:#}")))?,
                ),
                _ => None,
            };
            if !args.listen.ip().is_loopback() && tls.is_none() {
                return Err(CliError::new(
                    ExitCode::Usage,
                    format!(
                        "refusing to serve the API on {}: it is not a loopback address and no TLS is configured, so tokens would cross the network in the clear. Give --tls-cert and --tls-key, or bind 127.0.0.1 behind a TLS-terminating reverse proxy (docs/security.md), with its name in --allowed-host.",
                        args.listen
                    ),
                ));
            }
            let store =
                ringfence::state::StoreLocation::parse(args.store.as_deref(), args.store_password_file.as_deref())
                    .map_err(|e| CliError::new(ExitCode::Usage, e))?;
            let replica = match &args.replica_id {
                None => None,
                Some(_) if matches!(store, ringfence::state::StoreLocation::Sqlite) => {
                    return Err(CliError::new(
                        ExitCode::Usage,
                        "--replica-id: replicas share a PostgreSQL event log; give --store postgres://...",
                    ));
                }
                Some(id)
                    if id.is_empty()
                        || id.len() > 64
                        || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                {
                    return Err(CliError::new(
                        ExitCode::Usage,
                        format!("--replica-id {id:?}: expected 1 to 64 letters, digits, '-', '_' or '.'"),
                    ));
                }
                Some(id) => Some(id.clone()),
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            let listener = bind(args.listen, "API").await?;
            let addr = listener.local_addr().map_err(|e| CliError::new(ExitCode::Failure, e.to_string()))?;
            println!("ringfence server listening on {scheme}://{addr} (data in {})", data_dir.display());
            let mut config = ringfence::server::ServerConfig::new(data_dir)?;
            config.tick = args.tick;
            config.stop_workloads_on_exit = !args.keep_workloads;
            config.allowed_hosts = args.allowed_hosts.clone();
            config.tls = tls;
            config.store = store;
            config.replica = replica;
            ringfence::server::run(config, listener, shutdown_on_signal()).await?;
            Ok(ExitCode::Ok)
        }
        Command::Router(args) => {
            // Before listening: a router that will refuse to start must not write its ready file.
            let admin_auth =
                ringfence_router::AdminAuth::from_options(args.admin_token_file.as_deref(), args.insecure_admin)?;
            let client = if args.control_plane.is_empty() { None } else { Some(tier_client(args)?) };
            let listener = router_listener(args.listen, inherited).await?;
            if let Some(path) = &args.handover_socket {
                // Serving users matters more than the handover: without it, a server that
                // adopts this router has no copy of its socket, as before.
                let copy = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned();
                if let Err(e) = copy.map_err(anyhow::Error::from).and_then(|fd| ringfence::handover::serve(path, fd)) {
                    tracing::warn!(error = %format!("{e:#}"), "the users' socket cannot be handed over");
                }
            }
            let admin = bind(args.admin, "router admin API").await?;
            let (listen, admin_addr) = (
                listener.local_addr().map_err(|e| CliError::new(ExitCode::Failure, e.to_string()))?,
                admin.local_addr().map_err(|e| CliError::new(ExitCode::Failure, e.to_string()))?,
            );
            tracing::info!(%listen, admin = %admin_addr, "router listening");
            if let Some(path) = &args.ready_file {
                let ready = ringfence::routerproc::ReadyFile { pid: std::process::id(), listen, admin: admin_addr };
                ringfence_router::write_atomically(path, &serde_json::to_vec(&ready).expect("serializes")).map_err(
                    |e| {
                        CliError::new(ExitCode::Failure, format!("cannot write the ready file {}: {e}", path.display()))
                    },
                )?;
            }
            let mut config = ringfence_router::RouterConfig::new(admin_auth);
            config.state_file = args.state_file.clone();
            config.upstream_timeout = args.upstream_timeout;
            config.tier = !args.control_plane.is_empty();
            config.workers = args
                .workers
                .map_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get), usize::from);
            let router = ringfence_router::Router::new(config).await;
            let shutdown = shutdown_on_signal();
            if let Some(client) = client {
                tokio::spawn(client.run(router.tier(), shutdown.clone()));
            }
            router.run(listener, admin, shutdown).await?;
            Ok(ExitCode::Ok)
        }
        Command::SampleApp(args) => {
            ringfence::sample_app::run(args.clone()).await?;
            Ok(ExitCode::Ok)
        }
        Command::Demo(args) => ringfence::demo::run(args, shutdown_on_signal()).await,
        Command::Audit(cmd) => ringfence::audit::run(cmd, cli.output == cli::Output::Json),
        _ => cli::run_client(&cli).await,
    }
}

/// The router's users' socket: the one handed over, else a new one on `--listen`. A socket
/// handed over keeps the connections that arrived while no router was accepting, so a router
/// restarted on it refuses none.
async fn router_listener(
    listen: Option<std::net::SocketAddr>,
    inherited: Option<std::net::TcpListener>,
) -> Result<tokio::net::TcpListener, CliError> {
    let Some(socket) = inherited else {
        let Some(addr) = listen else {
            return Err(CliError::new(
                ExitCode::Usage,
                "the router needs --listen ADDR, or a listening socket handed over in LISTEN_FDS (systemd socket activation)",
            ));
        };
        return bind(addr, "router").await;
    };
    let fail = |e: std::io::Error| {
        CliError::new(ExitCode::Failure, format!("cannot serve on the listening socket passed in LISTEN_FDS: {e}"))
    };
    let local = socket.local_addr().map_err(fail)?;
    if let Some(addr) = listen
        && addr != local
        && !(addr.port() == 0 && addr.ip() == local.ip())
    {
        return Err(CliError::new(
            ExitCode::Usage,
            format!("--listen {addr} differs from the socket passed in LISTEN_FDS, which listens on {local}"),
        ));
    }
    socket.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(socket).map_err(fail)
}

/// The client of a router of the tier, from its options: every URL checked, the token read.
fn tier_client(args: &cli::RouterArgs) -> Result<ringfence::tierclient::TierClient, CliError> {
    for url in &args.control_plane {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.parse::<hyper::Uri>().is_err() {
            return Err(CliError::new(
                ExitCode::Usage,
                format!("--control-plane {url:?}: expected the server's URL, like http://127.0.0.1:7070"),
            ));
        }
    }
    let Some(file) = &args.api_token_file else {
        return Err(CliError::new(
            ExitCode::Usage,
            "--control-plane needs --api-token-file: a file holding an API token with the `router` role (ringfence token create NAME --role router)",
        ));
    };
    let token = ringfence::secrets::read_private_file(file).map_err(|e| CliError::new(ExitCode::Usage, e))?;
    let name = args.name.clone().unwrap_or_else(|| format!("router-{}", std::process::id()));
    Ok(ringfence::tierclient::TierClient {
        control_planes: args.control_plane.clone(),
        token,
        name,
        http: ringfence::http::HttpClient::new(),
    })
}
