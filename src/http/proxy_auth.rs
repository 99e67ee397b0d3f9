//! Proxy authentication for the forward proxy and CONNECT (`Proxy-Authorization: Basic`),
//! against users configured with Argon2id password hashes (`retention-proxy hash-password`).
//! A verified `(user, password)` pair is remembered by its SHA-256 so that the Argon2 cost
//! is paid once per credential, not once per request.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Proxy-Authorization` header.
    #[error("proxy authentication required")]
    Missing,
    /// Malformed header, unknown user or wrong password.
    #[error("proxy authentication failed")]
    Failed,
}

/// The configured users.
pub struct ProxyUsers {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for ProxyUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyUsers")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Checks that a configured hash is an Argon2 PHC string.
pub fn validate_hash(hash: &str) -> Result<(), String> {
    PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|e| format!("is not an Argon2 password hash ({e}); create one with `retention-proxy hash-password`"))
}

/// Hashes a password for the configuration.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

impl ProxyUsers {
    /// Users by name → Argon2 PHC hash (already validated).
    pub fn new(users: BTreeMap<String, String>) -> ProxyUsers {
        ProxyUsers {
            users,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Whether authentication is required at all.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// The authenticated user of a request.
    pub fn check(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        let v = headers
            .get(http::header::PROXY_AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let v = v.to_str().map_err(|_| AuthError::Failed)?;
        let (scheme, b64) = v.trim().split_once(' ').ok_or(AuthError::Failed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(AuthError::Failed);
        }
        let decoded = STANDARD.decode(b64.trim()).map_err(|_| AuthError::Failed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Failed)?;
        let (user, password) = decoded.split_once(':').ok_or(AuthError::Failed)?;
        let hash = self.users.get(user).ok_or(AuthError::Failed)?;
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .chain_update([0u8])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if self.verified.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return Ok(user.to_string());
        }
        let parsed = PasswordHash::new(hash).map_err(|_| AuthError::Failed)?;
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .map_err(|_| AuthError::Failed)?;
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        Ok(user.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "proxy-authorization",
            format!("Basic {}", STANDARD.encode(user_pass)).parse().unwrap(),
        );
        h
    }

    #[test]
    fn basic_auth_against_argon2_hashes() {
        let hash = hash_password("s3cret:with:colons").unwrap();
        assert!(validate_hash(&hash).is_ok());
        assert!(validate_hash("plain").is_err());
        let users = ProxyUsers::new(BTreeMap::from([("alice".to_string(), hash)]));
        assert_eq!(users.check(&basic("alice:s3cret:with:colons")), Ok("alice".into()));
        assert_eq!(
            users.check(&basic("alice:s3cret:with:colons")),
            Ok("alice".into()),
            "cached"
        );
        assert_eq!(users.check(&basic("alice:wrong")), Err(AuthError::Failed));
        assert_eq!(users.check(&basic("bob:s3cret:with:colons")), Err(AuthError::Failed));
        assert_eq!(users.check(&HeaderMap::new()), Err(AuthError::Missing));
        let mut h = HeaderMap::new();
        h.insert("proxy-authorization", "Bearer x".parse().unwrap());
        assert_eq!(users.check(&h), Err(AuthError::Failed));
        h.insert("proxy-authorization", "Basic !!!".parse().unwrap());
        assert_eq!(users.check(&h), Err(AuthError::Failed));
    }
}
