//! TLS pieces for egress-gateway tests: a throwaway CA that issues leaf certificates, a
//! TLS-terminating front that pipes each decrypted connection to a plain-HTTP listener (so the
//! plain [`super::fake_vendor::FakeVendor`] can stand behind real upstream TLS), and a client
//! side that opens a `CONNECT` tunnel through the proxy and speaks TLS and HTTP/1.1 inside it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::fake_vendor::SimpleResponse;

/// The one crypto provider of the crate's rustls build.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();
        TestCa {
            issuer: Issuer::new(params, key),
            cert_pem,
            cert_der,
        }
    }

    /// A server leaf for `names` (DNS names or IP literals) and its key.
    pub fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, key) = self.signed_leaf(names);
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.cert_der.clone()], key_der)
    }

    /// The same as PEM, for servers that read files: the leaf then this CA's certificate, and
    /// the leaf's PKCS#8 key.
    pub fn leaf_pem(&self, names: &[&str]) -> (String, String) {
        let (cert, key) = self.signed_leaf(names);
        (format!("{}{}", cert.pem(), self.cert_pem), key.serialize_pem())
    }

    fn signed_leaf(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("generate a leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf parameters");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        (cert, key)
    }

    /// A TLS server configuration presenting a leaf for `names` (HTTP/1.1 only).
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.leaf(names);
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

/// A TLS client configuration trusting exactly the PEM certificates in `pems`.
pub fn client_config(pems: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for pem in pems {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.expect("a PEM certificate")).expect("a usable trust anchor");
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Terminates TLS on 127.0.0.1 and pipes every decrypted connection to `backend` (plain TCP).
pub struct TlsFront {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// Starts the front.
    pub async fn start(config: Arc<rustls::ServerConfig>, backend: SocketAddr) -> TlsFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the TLS front");
        let addr = listener.local_addr().expect("TLS front address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (acc, hs) = (accepted.clone(), handshakes.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((stream, _)) = r else { continue };
                        acc.fetch_add(1, Ordering::SeqCst);
                        let acceptor = acceptor.clone();
                        let hs = hs.clone();
                        conns.spawn(async move {
                            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                            let Ok(Ok(mut tls)) = handshake.await else { return };
                            hs.fetch_add(1, Ordering::SeqCst);
                            let Ok(mut plain) = TcpStream::connect(backend).await else { return };
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        TlsFront {
            addr,
            accepted,
            handshakes,
            task,
        }
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

/// A plain TCP listener that counts connections and echoes every byte back; it closes its
/// side when the peer closes its side.
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoServer {
    /// Starts the server.
    pub async fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the echo server");
        let addr = listener.local_addr().expect("echo address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let acc = accepted.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((mut stream, _)) = r else { continue };
                        acc.fetch_add(1, Ordering::SeqCst);
                        conns.spawn(async move {
                            let (mut rd, mut wr) = stream.split();
                            let _ = tokio::io::copy(&mut rd, &mut wr).await;
                            let _ = wr.shutdown().await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        EchoServer { addr, accepted, task }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// The head of a proxy's answer to `CONNECT` (or any request read up to its blank line).
#[derive(Debug, Clone)]
pub struct Head {
    /// Status code (0 when no status line arrived).
    pub status: u16,
    /// The head, lossily decoded, without the blank line.
    pub text: String,
}

impl Head {
    /// A header value, case-insensitive.
    pub fn header(&self, name: &str) -> Option<String> {
        self.text.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Reads one byte at a time up to and including `\r\n\r\n`, so nothing after the head (the
/// tunnel's first bytes) is consumed.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Head> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut b).await? == 0 {
            break;
        }
        buf.push(b[0]);
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("head larger than 64 KiB"));
        }
    }
    let text = String::from_utf8_lossy(&buf).trim_end().to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Head { status, text })
}

/// Reads whatever the peer sends until it closes (bounded by `limit`).
pub async fn read_to_close<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    out
}

/// Opens a TCP connection to the proxy and sends `CONNECT target` with `extra` header lines
/// (each without CRLF). Returns the answer's head and the stream, positioned right after it.
pub async fn connect_tunnel(proxy: SocketAddr, target: &str, extra: &[String]) -> (Head, TcpStream) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to the proxy");
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write CONNECT");
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
        .await
        .expect("the proxy answered CONNECT in time")
        .expect("read the CONNECT answer");
    (head, stream)
}

/// A TLS handshake over `stream` with `sni`, trusting what `config` trusts.
pub async fn tls_handshake<S>(stream: S, sni: &str, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = match sni.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?,
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// An HTTP/1.1 client connection over any byte stream (for example a TLS stream inside a tunnel).
pub struct Http1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: JoinHandle<()>,
}

impl Drop for Http1 {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Http1 {
    /// Starts HTTP/1.1 over `io`.
    pub async fn over<S>(io: S) -> Result<Http1, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http1 { sender, conn })
    }

    /// Sends one request (a `Host` header must be set by the caller) and reads the whole answer.
    pub async fn send(&mut self, req: Request<Bytes>) -> Result<SimpleResponse, String> {
        let (parts, body) = req.into_parts();
        if !parts.headers.contains_key(http::header::HOST) {
            return Err("the request has no Host header".into());
        }
        let req = Request::from_parts(parts, Full::new(body));
        let fut = async {
            self.sender.ready().await.map_err(|e| format!("connection: {e}"))?;
            let resp = self.sender.send_request(req).await.map_err(|e| format!("send: {e}"))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| format!("read body: {e}"))?.to_bytes();
            Ok(SimpleResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(15), fut)
            .await
            .map_err(|_| "no answer within 15s".to_string())?
    }

    /// Whether the connection has been closed by the peer.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// `Proxy-Authorization: Basic …` for `user:password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Proxy-Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The same as a header value.
pub fn basic_auth_value(user: &str, password: &str) -> HeaderValue {
    let line = basic_auth(user, password);
    let v = line.split_once(": ").map(|(_, v)| v).unwrap_or("");
    HeaderValue::from_str(v).expect("header value")
}
