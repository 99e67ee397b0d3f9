//! The `retention-proxy` binary: arguments, tracing, configuration, signals. Everything else
//! lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use retention_proxy::cli::{self, Cli, Command, LogFormat};
use retention_proxy::config::Config;
use retention_proxy::proxy::credentials::ProxyCredentials;
use retention_proxy::server;
use tokio::sync::mpsc;
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    // The AWS credential chain warns about every source it tries in vain (instance metadata
    // off EC2, three times over); the proxy reports the outcome once, with the reason.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,aws_config=error"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Turns every SIGHUP into a request to reload the guardrails from `config`.
fn reloads_on_sighup(config: Option<PathBuf>) -> mpsc::Receiver<server::ReloadRequest> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let Some(path) = &config else {
                        tracing::warn!(
                            "SIGHUP received, but the proxy runs on its embedded defaults: there is no file to reload"
                        );
                        continue;
                    };
                    tracing::info!(file = %path.display(), "SIGHUP received: reloading the guardrails");
                    let request = server::ReloadRequest {
                        path: path.clone(),
                        trigger: "SIGHUP".into(),
                    };
                    // One waiting reload reads the file as it is then: a second is not needed.
                    if tx.try_send(request).is_err() && tx.is_closed() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP: changed guardrails need a restart"),
    }
    rx
}

/// Raises the soft limit on open files to the hard one: every client connection, admin
/// connection and tunnel (two descriptors) holds descriptors, and the default soft limit
/// (often 1024) is far below what the connection limits allow. Warns when even the hard
/// limit is below what they need.
fn raise_fd_limit(config: &Config) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    /// The audit store, its journal, the listeners, the log, upstream connections in the pool.
    const MARGIN: u64 = 64;
    let s = &config.server;
    let need = (s.max_connections as u64)
        .saturating_add(s.admin_max_connections as u64)
        .saturating_add(2 * config.forward.max_tunnels as u64)
        .saturating_add(MARGIN);
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    let have = getrlimit(Resource::Nofile).current;
    if let Some(have) = have
        && have < need
    {
        tracing::warn!(
            limit = have,
            need,
            "the open-file limit is below what server.max_connections + server.admin_max_connections + 2 x forward.max_tunnels need; \
             connections beyond it wait until descriptors free up"
        );
    }
}

/// One line, before anything is opened or bound, of what this proxy runs with: where its
/// configuration came from, its database, its name, listeners, upstreams, how many guardrails
/// and alert sinks, whether it intercepts TLS and where its fleet store is. Never a secret: the
/// admin token, passwords and keys are not shown, and the fleet store's URL is shown with its
/// passwords `REDACTED`. (The listeners' bound addresses follow in their own lines.)
fn log_startup(config_path: Option<&PathBuf>, config: &Config) {
    let source = config_path.map_or_else(|| "embedded defaults".to_string(), |p| p.display().to_string());
    let addr = |a: Option<std::net::SocketAddr>, none: &str| a.map_or_else(|| none.to_string(), |a| a.to_string());
    let u = &config.upstreams;
    let upstreams = format!(
        "chime={} chime_messaging={} chime_identity={} slack={}",
        u.chime, u.chime_messaging, u.chime_identity, u.slack
    );
    let database = config.audit.path.display().to_string();
    let listen = addr(config.server.listen, "none (admin-only console)");
    let admin_listen = addr(config.server.admin_listen, "off");
    let fleet_store = config
        .raw
        .audit
        .central
        .as_ref()
        .map(|c| retention_proxy::config::central::redact_url(c.url.trim()));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = source.as_str(),
        database = database.as_str(),
        proxy_instance = config.audit.proxy_instance.as_str(),
        listen = listen.as_str(),
        listen_tls = config.server.tls.is_some(),
        admin_listen = admin_listen.as_str(),
        upstreams = upstreams.as_str(),
        guardrails = config.guardrails.len(),
        alert_sinks = config.alerts.len(),
        tls_interception = config.forward.ca.is_some(),
        fleet_store = fleet_store.as_deref(),
        "retention-proxy starting"
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve { config, log_format } = cli.command else {
        return cli::run_offline(cli.command);
    };
    init_tracing(log_format);
    // Every configuration problem is reported before any port is bound.
    let config_path = config.clone();
    let config = match cli::load_config(config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(cli::EXIT_CONFIG);
        }
    };
    log_startup(config_path.as_ref(), &config);
    raise_fd_limit(&config);
    match (&config.reverse.clients, config.reverse.allow_unauthenticated) {
        (Some(keys), _) => tracing::info!(
            clients = keys.len(),
            "reverse-mode AWS callers must sign with a key from [reverse] clients_file"
        ),
        (None, true) if config.server.listen.is_some_and(|l| !l.ip().is_loopback()) => tracing::warn!(
            listen = %config.server.listen.map(|l| l.to_string()).unwrap_or_default(),
            "[reverse] allow_unauthenticated: anyone who reaches this listener can act with the proxy's AWS credentials"
        ),
        (None, _) => {}
    }
    // On one CPU (a pinned sidecar, a small container) the single-threaded scheduler costs
    // about a third less CPU per request than a one-worker multi-threaded one.
    let built = if server::runs_on_one_cpu() {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    };
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("retention-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Before anything slow: a SIGHUP must never end the process.
        let reloads = reloads_on_sighup(config_path);
        // The standard AWS chain, first asked in the background: start-up never waits for it
        // (instance metadata can take seconds to answer, or not answer, off EC2).
        let credentials = ProxyCredentials::standard_chain();
        credentials.prime();
        let listeners = match server::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("retention-proxy: {e}");
                return ExitCode::FAILURE;
            }
        };
        match server::run_with_reloads(listeners, config, Some(credentials), shutdown_signal(), reloads).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("retention-proxy: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
