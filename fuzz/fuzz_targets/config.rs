//! The configuration loader: any text is a configuration or one error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_proxy::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::from_toml_str(text, "fuzz.toml") {
        assert!(!e.to_string().is_empty());
    }
});
