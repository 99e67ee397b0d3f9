//! The floor of the crate stack: the smallest HTTP/1.1 forwarder that hyper 1, hyper-util and
//! tokio allow, and nothing of the proxy. Each client connection gets one upstream connection;
//! each request is sent upstream as it came and the response is streamed back as it came. No
//! routing, no recognition, no header rewriting, no timeouts, no limits, no log.
//!
//! `bench/run.sh` loads it beside nginx and the proxy when `FLOOR=1`, so that the part of the
//! pass-through gap that belongs to the stack and the part that belongs to the proxy's own work
//! are measured in one run. It is a measuring stick, not a product: it must not be deployed.
//!
//! `cargo run --release --example hyper_floor -- LISTEN UPSTREAM [LAYER...]` (both `host:port`)
//!
//! The layers the proxy puts around a connection can be added one by one, to price each:
//! `auto` (hyper-util's HTTP/1-or-2 server with upgrades, as the proxy serves), `graceful`
//! (hyper-util's graceful-shutdown watcher around each connection), `header-timeout` (hyper's
//! header-read timer with tokio's timer, armed for every request) and `request-timeout` (a
//! tokio timeout around every upstream exchange).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Answer = Response<http_body_util::Either<Incoming, Full<Bytes>>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1).cloned(), args.get(2).cloned()) else {
        eprintln!("usage: hyper_floor LISTEN UPSTREAM [auto] [graceful] [header-timeout] [request-timeout]");
        std::process::exit(2);
    };
    let mut layers = Layers::default();
    for a in &args[3..] {
        match a.as_str() {
            "auto" => layers.auto = true,
            "graceful" => layers.graceful = true,
            "header-timeout" => layers.header_timeout = true,
            "request-timeout" => layers.request_timeout = true,
            other => {
                eprintln!("hyper_floor: unknown layer {other:?}");
                std::process::exit(2);
            }
        }
    }
    // The same choice of runtime as the proxy makes.
    let built = if retention_proxy::server::runs_on_one_cpu() {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    };
    let runtime = built.unwrap_or_else(|e| {
        eprintln!("hyper_floor: cannot start the runtime: {e}");
        std::process::exit(1)
    });
    if let Err(e) = runtime.block_on(serve(listen, upstream, layers)) {
        eprintln!("hyper_floor: {e}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, Default)]
struct Layers {
    auto: bool,
    graceful: bool,
    header_timeout: bool,
    request_timeout: bool,
}

async fn serve(listen: String, upstream: String, layers: Layers) -> std::io::Result<()> {
    let listener = TcpListener::bind(&listen).await?;
    let upstream = Arc::new(upstream);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut auto = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.keep_alive(true);
    if layers.header_timeout {
        auto.http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        http1
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
    } else {
        auto.http1().header_read_timeout(None);
        http1.header_read_timeout(None);
    }
    let (auto, http1) = (Arc::new(auto), Arc::new(http1));
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        let (auto, http1) = (auto.clone(), http1.clone());
        let watcher = layers.graceful.then(|| graceful.watcher());
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(up) = TcpStream::connect(upstream.as_str()).await else {
                return;
            };
            let _ = up.set_nodelay(true);
            let Ok((sender, conn)) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(up)).await
            else {
                return;
            };
            tokio::spawn(conn);
            let sender = Arc::new(Mutex::new(sender));
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let sender = sender.clone();
                async move {
                    let sent = {
                        let mut s = sender.lock().await;
                        match s.ready().await {
                            Ok(()) => Some(s.send_request(req)),
                            Err(_) => None,
                        }
                    };
                    let answer: Answer = match sent {
                        Some(fut) => {
                            let got = if layers.request_timeout {
                                tokio::time::timeout(Duration::from_secs(30), fut).await.ok()
                            } else {
                                Some(fut.await)
                            };
                            match got {
                                Some(Ok(resp)) => resp.map(http_body_util::Either::Left),
                                _ => bad_gateway(),
                            }
                        }
                        None => bad_gateway(),
                    };
                    Ok::<_, Infallible>(answer)
                }
            });
            let io = TokioIo::new(client);
            match (layers.auto, watcher) {
                (true, Some(w)) => drop(w.watch(auto.serve_connection_with_upgrades(io, svc).into_owned()).await),
                (true, None) => drop(auto.serve_connection_with_upgrades(io, svc).await),
                (false, Some(w)) => drop(w.watch(http1.serve_connection(io, svc)).await),
                (false, None) => drop(http1.serve_connection(io, svc).await),
            }
        });
    }
}

fn bad_gateway() -> Answer {
    let mut resp = Response::new(http_body_util::Either::Right(Full::new(Bytes::from_static(
        b"bad gateway\n",
    ))));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
