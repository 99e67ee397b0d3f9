//! Cost of a client TLS handshake inside an intercepted CONNECT, with and without the
//! per-host leaf-certificate cache: the leaf lookup (or issue) plus a full in-memory rustls
//! handshake against a client that trusts the interception CA (`bench/README.md`).
//!
//! `cargo run --release --example intercept_cost`

use std::sync::Arc;
use std::time::Instant;

use retention_proxy::tunnel::ca::{Interceptor, init_ca};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;

fn handshake(server_cfg: Arc<rustls::ServerConfig>, client_cfg: Arc<rustls::ClientConfig>, host: &str) {
    let name = ServerName::try_from(host.to_string()).expect("name");
    let mut client = rustls::ClientConnection::new(client_cfg, name).expect("client");
    let mut server = rustls::ServerConnection::new(server_cfg).expect("server");
    let mut buf = Vec::new();
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("server read");
        }
        server.process_new_packets().expect("server process");
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("client read");
        }
        client.process_new_packets().expect("client process");
    }
}

fn main() {
    let dir = tempfile_dir();
    let (cert, key) = init_ca(&dir).expect("ca");
    let ca = CertificateDer::from_pem_file(&cert).expect("ca pem");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let client_cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let host = "chime.us-east-1.amazonaws.com";
    let iters = 300u32;
    println!(
        "{:<24} {:>16} {:>16}",
        "leaf certificate", "leaf µs/conn", "total µs/conn"
    );
    for cached in [true, false] {
        let mut i = Interceptor::load(&cert, &key).expect("interceptor");
        i.cache_enabled = cached;
        let _ = i.server_config(host).expect("warm");
        let (mut leaf, mut total) = (0u128, 0u128);
        for _ in 0..iters {
            let t0 = Instant::now();
            let cfg = i.server_config(host).expect("leaf");
            let t1 = Instant::now();
            handshake(cfg, client_cfg.clone(), host);
            leaf += (t1 - t0).as_micros();
            total += t0.elapsed().as_micros();
        }
        let label = if cached {
            "cached per host"
        } else {
            "issued per connection"
        };
        println!("{label:<24} {:>16} {:>16}", leaf / iters as u128, total / iters as u128);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("intercept-cost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
