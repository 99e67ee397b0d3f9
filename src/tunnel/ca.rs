//! TLS interception for `CONNECT` to vendor hosts: the interception CA (`ca init`), and leaf
//! certificates issued on the fly per host (right SAN, one day of validity, cached until an
//! hour before they expire).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Leaf certificate lifetime.
const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// A cached leaf is replaced this long before it expires.
const LEAF_REFRESH_MARGIN: Duration = Duration::from_secs(3600);

/// Why interception could not be set up or a leaf issued.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InterceptError(String);

/// Issues and caches leaf certificates under the configured CA.
pub struct Interceptor {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    cache: Mutex<HashMap<String, (Arc<rustls::ServerConfig>, Instant)>>,
    /// Whether leaves are cached (always, except in the cache benchmark).
    pub cache_enabled: bool,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor").finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Loads the CA certificate and key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Interceptor, InterceptError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| InterceptError(format!("cannot read {}: {e}", p.display())))
        };
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| InterceptError(format!("{} is not a usable private key: {e}", key.display())))?;
        let ca_der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| InterceptError(format!("{} is not a PEM certificate: {e}", cert.display())))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| InterceptError(format!("{} is not a usable CA certificate: {e}", cert.display())))?;
        Ok(Interceptor {
            issuer,
            ca_der,
            cache: Mutex::new(HashMap::new()),
            cache_enabled: true,
        })
    }

    /// The TLS server configuration presenting a leaf for `host`.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, InterceptError> {
        let host = host.to_ascii_lowercase();
        if self.cache_enabled {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((cfg, expires)) = cache.get(&host)
                && Instant::now() + LEAF_REFRESH_MARGIN < *expires
            {
                return Ok(cfg.clone());
            }
        }
        let cfg = Arc::new(self.issue(&host)?);
        if self.cache_enabled {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.insert(host, (cfg.clone(), Instant::now() + LEAF_VALIDITY));
        }
        Ok(cfg)
    }

    fn issue(&self, host: &str) -> Result<rustls::ServerConfig, InterceptError> {
        let err = |e: rcgen::Error| InterceptError(format!("cannot issue a certificate for {host}: {e}"));
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(err)?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::seconds(LEAF_VALIDITY.as_secs() as i64);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        crate::http::tls::server_config(chain, key_der, &[b"http/1.1"]).map_err(|e| InterceptError(e.to_string()))
    }
}

/// Creates an interception CA in `dir`: `ca.pem` (give it to clients) and `ca.key` (0600).
pub fn init_ca(dir: &Path) -> Result<(PathBuf, PathBuf), InterceptError> {
    let io = |e: std::io::Error| InterceptError(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(InterceptError(format!(
                "{} already exists; refusing to overwrite a CA",
                p.display()
            )));
        }
    }
    let err = |e: rcgen::Error| InterceptError(format!("cannot create the CA: {e}"));
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "retention-proxy interception CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "retention-proxy");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(825);
    let cert = params.self_signed(&key).map_err(err)?;
    let mut kf = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(io)?;
    kf.write_all(key.serialize_pem().as_bytes()).map_err(io)?;
    let mut cf = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&cert_path)
        .map_err(io)?;
    cf.write_all(cert.pem().as_bytes()).map_err(io)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_cached_leaves_clients_can_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = init_ca(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(init_ca(dir.path()).is_err(), "an existing CA is never overwritten");
        let i = Interceptor::load(&cert, &key).unwrap();
        let a = i.server_config("chime.us-east-1.amazonaws.com").unwrap();
        let b = i.server_config("CHIME.us-east-1.amazonaws.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "leaf is cached per host");
        let c = i.server_config("slack.com").unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
