//! TEMP STUB (replaced by the real module at merge).
use std::path::Path;
#[derive(Debug)]
pub struct ClientKeys;
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct ClientsFileError;
impl ClientKeys {
    pub fn load(_p: &Path) -> Result<ClientKeys, ClientsFileError> { Err(ClientsFileError) }
    pub fn len(&self) -> usize { 0 }
    pub fn is_empty(&self) -> bool { true }
}
pub struct Verified { pub name: String, pub access_key_id: String, pub region: String, pub service: String }
#[derive(Debug)]
pub enum Refusal { Missing }
impl Refusal {
    pub fn aws_code(&self) -> &'static str { "MissingAuthenticationTokenException" }
    pub fn message(&self) -> String { "Missing Authentication Token".into() }
    pub fn claimed_access_key_id(&self) -> Option<&str> { None }
}
pub fn verify(_k: &ClientKeys, _m: &http::Method, _u: &http::Uri, _h: &http::HeaderMap, _b: &[u8], _n: std::time::SystemTime) -> Result<Verified, Refusal> { Err(Refusal::Missing) }
