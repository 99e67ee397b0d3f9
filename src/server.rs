//! Listeners and lifecycle. `run` takes already-bound listeners and a shutdown future (tests
//! bind port 0 and pass their own trigger), serves until the future resolves, then shuts down
//! in a fixed order: stop accepting → let in-flight requests finish within the grace period →
//! commit every queued audit record → stop the alert sinks → return. The alert sinks start
//! before the writer, each from its stored position in the log.
//!
//! Each request on the proxy listener is dispatched here, above both ways of serving it:
//! proxy authentication first, then `CONNECT` to [`crate::tunnel`] and the rest to
//! [`crate::proxy`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::admin::metrics::{Metrics, RouteLabels};
use crate::admin::{self, Admin};
use crate::alerts::Alerts;
use crate::audit::checkpoint::SigningKey;
use crate::audit::event::TokenKey;
use crate::audit::postgres::{Pool, Shipper};
use crate::audit::sqlite::{self, SqliteStore};
use crate::audit::writer::{CheckpointSettings, Turns, Writer};
use crate::audit::{AuditError, Store};
use crate::config::Config;
use crate::http::body::{ProxyBody, plain};
use crate::http::egress::{self, CheckedResolver};
use crate::http::first_byte::FirstByte;
use crate::http::headers::normalise_host;
use crate::http::proxy_auth::ProxyUsers;
use crate::http::upstream;
use crate::proxy::credentials::ProxyCredentials;
use crate::proxy::{self, App, Conn};
use crate::tunnel::ca::{InterceptError, Interceptor};
use crate::tunnel::{self, Tunnels};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The audit store could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Upstream TLS could not be set up.
    #[error(transparent)]
    Client(#[from] upstream::ClientError),
    /// The listener's TLS certificate or key could not be loaded.
    #[error("cannot load the listener's TLS certificate: {0}")]
    Tls(String),
    /// An upstream URL cannot be addressed.
    #[error("cannot address an upstream: {0}")]
    Upstream(String),
    /// The interception CA could not be loaded.
    #[error("cannot load the interception CA: {0}")]
    Intercept(#[from] InterceptError),
    /// An alert sink could not be started.
    #[error("cannot start alert delivery: {0}")]
    Alerts(String),
}

/// Bound sockets for `run`.
pub struct Listeners {
    /// The proxy listener; `None` for an admin-only console (`server.listen = ""`).
    pub proxy: Option<TcpListener>,
    /// The admin listener, if enabled.
    pub admin: Option<TcpListener>,
}

fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, RunError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Some((cert, key)) = &config.server.tls else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| RunError::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| RunError::Tls(format!("{}: {e}", key.display())))?;
    let sc =
        crate::http::tls::server_config(certs, key, &[b"h2", b"http/1.1"]).map_err(|e| RunError::Tls(e.to_string()))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(sc))))
}

/// Whether this process may run on one CPU only (a pinned sidecar, a one-CPU container). It
/// picks the single-threaded runtime, and has the audit writer take turns with it.
pub fn runs_on_one_cpu() -> bool {
    std::thread::available_parallelism().map_or(true, |n| n.get() == 1)
}

/// What every request on the proxy listener is dispatched with.
struct Front {
    app: Arc<App>,
    tunnels: Arc<Tunnels>,
    users: ProxyUsers,
    /// The egress policy's view of names the configuration gives itself.
    resolver: CheckedResolver,
}

/// Dispatches one request on the proxy listener: proxy authentication for the forward proxy
/// (absolute-form and `CONNECT`), then `CONNECT` to the tunnel and the rest to the proxy.
async fn dispatch(front: Arc<Front>, mut conn: Conn, req: Request<Incoming>) -> Response<ProxyBody> {
    let app = &front.app;
    let connect = req.method() == Method::CONNECT;
    if (connect || req.uri().scheme().is_some()) && front.users.enabled() {
        match front.users.check(req.headers()) {
            Ok(user) => conn.proxy_user = Some(user),
            Err(e) => {
                warn!(peer = %conn.peer, error = %e, "proxy authentication failed");
                app.metrics
                    .refused
                    .get_or_create(&RouteLabels { route: "proxy_auth" })
                    .inc();
                let mut r = plain(
                    StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                    &format!("retention-proxy: {e}"),
                );
                r.headers_mut().insert(
                    http::header::PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"retention-proxy\""),
                );
                return r;
            }
        }
    }
    if !connect && let Some(resp) = refuse_internal_forward(&front, &conn, &req).await {
        return resp;
    }
    if connect {
        return Box::pin(tunnel::connect(
            app.clone(),
            front.tunnels.clone(),
            conn.peer,
            conn.proxy_user,
            req,
        ))
        .await;
    }
    proxy::handle_request(app.clone(), conn, req).await
}

/// Refuses an absolute-form request whose host (not a `[forward.resolve]` entry nor a name
/// the configuration gives itself) resolves to an internal address: `403`, one sentence. The
/// upstream connector checks the addresses it connects to as well; this check only gives the
/// client a clear answer.
async fn refuse_internal_forward(front: &Front, conn: &Conn, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let uri = req.uri();
    if uri.scheme_str() != Some("http") || conn.tunnel.is_some() {
        return None;
    }
    let host = normalise_host(uri.host()?);
    let forward = &front.app.config.forward;
    if forward.resolve.contains_key(&host) || front.resolver.trusts(&host) || !forward.allows(&host) {
        return None;
    }
    match egress::resolve_checked(&host, uri.port_u16().unwrap_or(443)).await {
        Err(e) if e.is_refusal() => {
            warn!(host = %host, peer = %conn.peer, error = %e, "forward request to an internal address refused");
            front
                .app
                .metrics
                .refused
                .get_or_create(&RouteLabels { route: "forward" })
                .inc();
            Some(plain(StatusCode::FORBIDDEN, &format!("retention-proxy: {e}")))
        }
        _ => None,
    }
}

/// Names the configuration gives itself: the reverse-proxy upstreams and the targets of
/// `[forward.resolve]`. They resolve without the egress check; every other name is checked.
fn configured_names(config: &Config) -> Vec<String> {
    let u = &config.upstreams;
    [&u.chime, &u.chime_messaging, &u.chime_identity, &u.slack]
        .into_iter()
        .chain(config.forward.resolve.values())
        .map(|up| up.host.clone())
        .collect()
}

/// Back-off for a failing `accept`: the error that stops it (typically no file descriptor
/// left) returns at once while the connection waits in the backlog, so retrying at once spins
/// a core and logs without end. Waits 10 ms, doubling to 1 s, and logs at most once a second
/// with the number of failures since the last line.
struct AcceptBackoff {
    delay: Duration,
    failures: u64,
    logged: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> AcceptBackoff {
        AcceptBackoff {
            delay: AcceptBackoff::FIRST,
            failures: 0,
            logged: None,
        }
    }

    /// Notes a failure of `listener`; how long to wait before accepting again.
    fn failed(&mut self, listener: &'static str, e: &std::io::Error) -> Duration {
        self.failures += 1;
        if self.logged.is_none_or(|t| t.elapsed() >= AcceptBackoff::MAX) {
            warn!(listener, error = %e, failures = self.failures, "accept failed; backing off");
            self.logged = Some(Instant::now());
            self.failures = 0;
        }
        let d = self.delay;
        self.delay = (self.delay * 2).min(AcceptBackoff::MAX);
        d
    }

    fn succeeded(&mut self) {
        self.delay = AcceptBackoff::FIRST;
    }
}

/// Serves the admin listener until `stop` changes: at most `server.admin_max_connections`
/// at once, each with the proxy listener's first-byte and header deadlines.
async fn serve_admin(
    l: TcpListener,
    admin: Arc<Admin>,
    max: usize,
    header_read_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(max));
    let mut backoff = AcceptBackoff::new();
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = stop.changed() => break,
            acc = l.accept() => match acc {
                Ok((s, _)) => {
                    backoff.succeeded();
                    s
                }
                Err(e) => {
                    let wait = backoff.failed("admin", &e);
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(admin::handle(admin, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(FirstByte::new(stream, header_read_timeout)), svc)
                .await;
        });
    }
}

pub use crate::proxy::reload::ReloadRequest;

/// Runs the proxy (and admin listener) until `shutdown` resolves; its guardrails stay those
/// of `config`.
pub async fn run(
    listeners: Listeners,
    config: Config,
    credentials: Option<ProxyCredentials>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let (_none, reloads) = tokio::sync::mpsc::channel(1);
    run_with_reloads(listeners, config, credentials, shutdown, reloads).await
}

/// [`run`], reloading the guardrails on each request `reloads` brings (SIGHUP in the
/// binary; tests send their own), one at a time, until shutdown.
pub async fn run_with_reloads(
    listeners: Listeners,
    config: Config,
    credentials: Option<ProxyCredentials>,
    shutdown: impl Future<Output = ()>,
    mut reloads: tokio::sync::mpsc::Receiver<ReloadRequest>,
) -> Result<(), RunError> {
    let store = SqliteStore::open(&config.audit.path)?;
    let checkpointer = sqlite::Checkpointer::start(&config.audit.path, sqlite::Checkpointer::INTERVAL)?;
    let hmac_key = sqlite::load_or_create_key(&config.audit.hmac_key_file)?;
    let mut metrics = Metrics::default();
    metrics.watch_audit_db(&config.audit.path);
    if let Some(c) = &credentials {
        metrics.register_credential_refreshes(c.refresh_counter());
    }
    let metrics = Arc::new(metrics);
    // Before the writer takes any record: each sink's position is where this run starts.
    let alerts = Alerts::start(
        &config.audit.path,
        &config.alerts,
        metrics.alerts.clone(),
        config.upstreams.request_timeout + Duration::from_secs(5),
    )
    .map_err(RunError::Alerts)?;
    let turns = if runs_on_one_cpu() { Turns::Shared } else { Turns::Own };
    let key = SigningKey::load_or_create(&config.audit.checkpoint_key_file).map_err(|reason| AuditError::Open {
        path: config.audit.checkpoint_key_file.display().to_string(),
        reason,
    })?;
    let checkpoints = CheckpointSettings {
        key,
        instance: config.audit.proxy_instance.clone(),
        every: config.audit.checkpoint_every,
        interval: config.audit.checkpoint_interval,
        dir: config.audit.checkpoint_dir.clone(),
    };
    let writer = Writer::start_with_checkpoints(store, config.audit.queue_capacity, turns, checkpoints)?;
    // Shipping starts once the writer holds the log: it reads what is committed.
    let shipper = config.audit.central.clone().map(|c| {
        info!(database = %c.display(), instance = %config.audit.proxy_instance, mode = ?c.mode, "shipping the audit chain to the central store");
        Shipper::start(
            c,
            config.audit.proxy_instance.clone(),
            config.audit.path.clone(),
            writer.handle().stats.commit_signal.clone(),
        )
    });
    let fleet = config.audit.central.clone().map(Pool::new);
    let store = match &fleet {
        Some(pool) => Store::Central(pool.clone()),
        None => Store::Local(config.audit.path.clone()),
    };
    let resolver = CheckedResolver::new(configured_names(&config));
    let dialer = upstream::Dialer::new(
        config.upstreams.ca_file.as_deref(),
        config.upstreams.connect_timeout,
        resolver.clone(),
    )?;
    let tls = tls_acceptor(&config)?;
    let interceptor = match &config.forward.ca {
        Some((cert, key)) => Some(Interceptor::load(cert, key)?),
        None => None,
    };
    let admin = Arc::new(Admin {
        token: config.server.admin_token.clone(),
        audit: writer.handle(),
        metrics: metrics.clone(),
        store: store.clone(),
        shipping: shipper.as_ref().map(|s| s.state.clone()),
        chain: admin::chain::ChainWatch::new(config.audit.proxy_instance.clone()),
    });
    let front = Arc::new(Front {
        tunnels: Arc::new(Tunnels::new(interceptor, config.forward.max_tunnels, resolver.clone())),
        users: ProxyUsers::new(config.forward.users.clone()),
        resolver,
        app: Arc::new(App {
            audit: writer.handle(),
            dialer,
            metrics,
            credentials,
            token_key: TokenKey::new(&hmac_key),
            slack_identities: Default::default(),
            fleet,
            shipping: shipper.as_ref().map(|s| s.state.clone()),
            reverse: proxy::state::ReverseTargets::new(&config.upstreams)
                .map_err(|e| RunError::Upstream(e.to_string()))?,
            guardrails: proxy::state::Guardrails::new(proxy::state::RuleSet {
                rules: config.guardrails.clone(),
                raw: config.raw.guardrails.clone(),
            }),
            config,
        }),
    });
    let app = front.app.clone();

    let graceful = GracefulShutdown::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ticker = tokio::spawn(keep_a_timer_due());
    let reloader = {
        let (app, mut stop) = (app.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    r = reloads.recv() => match r {
                        Some(r) => {
                            let _ = proxy::reload::reload(&app, &r).await;
                        }
                        None => break,
                    },
                }
            }
        })
    };
    if let Some(a) = listeners.admin.as_ref().and_then(|l| l.local_addr().ok()) {
        info!(listen = %a, "admin listening");
    }
    let chain_task = listeners.admin.is_some().then(|| {
        tokio::spawn(
            admin
                .chain
                .clone()
                .run(store.clone(), admin::chain::EVERY, stop_rx.clone()),
        )
    });
    let admin_task = listeners.admin.map(|l| {
        tokio::spawn(serve_admin(
            l,
            admin,
            app.config.server.admin_max_connections,
            app.config.server.header_read_timeout,
            stop_rx.clone(),
        ))
    });

    let limit = Arc::new(Semaphore::new(app.config.server.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.server.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let header_read_timeout = app.config.server.header_read_timeout;
    let mut backoff = AcceptBackoff::new();
    tokio::pin!(shutdown);
    let Some(proxy_listener) = listeners.proxy else {
        info!("no proxy listener (server.listen is empty): serving the admin listener only, as an audit console");
        shutdown.await;
        return stop(Stopping {
            graceful,
            stop_tx,
            admin_task,
            chain_task,
            reloader,
            ticker,
            front,
            app,
            writer,
            shipper,
            alerts,
            checkpointer,
        })
        .await;
    };
    info!(listen = %proxy_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "proxy listening");
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            acc = proxy_listener.accept() => match acc {
                Ok(a) => {
                    backoff.succeeded();
                    a
                }
                Err(e) => {
                    let wait = backoff.failed("proxy", &e);
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(
            async move {
                let _permit = permit;
                let conn = Conn::new(&front.app, peer);
                let svc = service_fn(move |req| {
                    let front = front.clone();
                    let conn = conn.clone();
                    async move { Ok::<_, std::convert::Infallible>(dispatch(front, conn, req).await) }
                });
                let result = match tls {
                    Some(acceptor) => {
                        let hs =
                            tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await;
                        match hs {
                            Ok(Ok(s)) => {
                                watcher
                                    .watch(
                                        builder
                                            .serve_connection_with_upgrades(
                                                TokioIo::new(FirstByte::new(s, header_read_timeout)),
                                                svc,
                                            )
                                            .into_owned(),
                                    )
                                    .await
                            }
                            Ok(Err(e)) => {
                                warn!(peer = %peer, error = %e, "TLS handshake with client failed");
                                return;
                            }
                            Err(_) => {
                                warn!(peer = %peer, "TLS handshake with client timed out");
                                return;
                            }
                        }
                    }
                    None => {
                        watcher
                            .watch(
                                builder
                                    .serve_connection_with_upgrades(
                                        TokioIo::new(FirstByte::new(stream, header_read_timeout)),
                                        svc,
                                    )
                                    .into_owned(),
                            )
                            .await
                    }
                };
                if let Err(e) = result {
                    debug!(error = %e, "connection ended with an error");
                }
            }
            // Debug level: a span entered on every poll of every connection is a measurable part
            // of a pass-through request. Warnings name their peer themselves.
            .instrument(debug_span!("conn", peer = %peer)),
        );
    }

    drop(proxy_listener);
    stop(Stopping {
        graceful,
        stop_tx,
        admin_task,
        chain_task,
        reloader,
        ticker,
        front,
        app,
        writer,
        shipper,
        alerts,
        checkpointer,
    })
    .await
}

/// What shutting down stops, in order.
struct Stopping {
    graceful: GracefulShutdown,
    stop_tx: tokio::sync::watch::Sender<bool>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    chain_task: Option<tokio::task::JoinHandle<()>>,
    reloader: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
    front: Arc<Front>,
    app: Arc<App>,
    writer: Writer,
    shipper: Option<Shipper>,
    alerts: Alerts,
    checkpointer: sqlite::Checkpointer,
}

/// Shuts down in order: in-flight requests finish within the grace period, the admin
/// listener stops, every queued record is committed and shipped (briefly), the alert sinks
/// stop.
async fn stop(s: Stopping) -> Result<(), RunError> {
    let Stopping {
        graceful,
        stop_tx,
        admin_task,
        chain_task,
        reloader,
        ticker,
        front,
        app,
        writer,
        shipper,
        alerts,
        checkpointer,
    } = s;
    info!("shutting down: draining in-flight requests");
    let grace = app.config.server.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        warn!(?grace, "in-flight requests did not finish within the grace period");
    }
    let _ = stop_tx.send(true);
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    if let Some(t) = chain_task {
        let _ = t.await;
    }
    let _ = reloader.await;
    ticker.abort();
    drop(front);
    drop(app);
    writer.shutdown().await;
    // After the writer: what it committed last is shipped if the central store answers soon.
    if let Some(s) = shipper {
        s.stop(Duration::from_secs(5)).await;
    }
    // After the writer: a sink may still pass what was committed last, but never waits for it.
    alerts.stop().await;
    let _ = tokio::task::spawn_blocking(move || checkpointer.stop()).await;
    info!("audit records committed; stopped");
    Ok(())
}

/// Keeps a timer due within a second, for as long as the proxy runs.
///
/// tokio's time driver writes to its wake-up eventfd whenever a timer is armed while no
/// earlier one is pending, even from the runtime's own thread. An audited call arms two (the
/// upstream timeout, then hyper's header-read timer for the connection's next request), often
/// when the runtime has just woken with nothing else timed: two `write` system calls per call.
/// This timer is earlier than any of those, so arming them costs no system call.
async fn keep_a_timer_due() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Binds the configured listeners (proxy, then admin).
pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
    let bind = |a: SocketAddr| async move {
        TcpListener::bind(a)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))
    };
    let proxy = match config.server.listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let admin = match config.server.admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    Ok(Listeners { proxy, admin })
}
