//! Server configuration: a TOML file (`configs/serve.toml`) whose every field has a default, and
//! which the `vqrae serve` flags override.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ServeError;

/// The shipped default model.
pub const DEFAULT_MODEL: &str = "models/vqrae-easyvqa";
/// The environment variable that holds the API key (the flag `--api-key` reads it too).
pub const API_KEY_ENV: &str = "VQRAE_API_KEY";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Model directory (a unified model: tokenizer + LM + projector).
    pub model: PathBuf,
    /// The id clients name the model by; empty: the model directory's name.
    pub model_id: String,
    /// Address to bind; 127.0.0.1 so that nothing outside the machine reaches the server
    /// unless asked for.
    pub host: IpAddr,
    /// Port; 0 picks a free one (tests).
    pub port: u16,
    /// Bearer token every `/v1/*` and `/metrics` request must carry; `None`: no auth.
    /// Better given through the environment (`VQRAE_API_KEY`) than in a file.
    pub api_key: Option<String>,
    /// Base of the URLs of `response_format: "url"` images, e.g. `https://vqrae.example.org`;
    /// empty: `http://<Host header>`.
    pub public_url: String,
    pub limits: Limits,
    pub batch: BatchConfig,
    pub images: StoreConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from(DEFAULT_MODEL),
            model_id: String::new(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            api_key: None,
            public_url: String::new(),
            limits: Limits::default(),
            batch: BatchConfig::default(),
            images: StoreConfig::default(),
        }
    }
}

/// What one request may ask for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, bytes (an inline image counts here, base64 and all).
    pub max_body_bytes: usize,
    /// Largest uploaded image, width x height, checked from the header before decoding (a
    /// small file can claim a huge size: a decompression bomb).
    pub max_image_pixels: u64,
    /// Longest prompt, question or negative prompt, in characters. The model's context is
    /// checked as well, in tokens.
    pub max_prompt_chars: usize,
    /// Most images one generation request may ask for (`n`).
    pub max_images: usize,
    /// Most tokens one answer may have (`max_tokens`).
    pub max_tokens: usize,
    /// Answer length when a request does not say.
    pub default_max_tokens: usize,
    /// Most messages in one chat request.
    pub max_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_image_pixels: 4096 * 4096,
            max_prompt_chars: 1000,
            max_images: 8,
            max_tokens: 64,
            default_max_tokens: 16,
            max_messages: 64,
        }
    }
}

/// The model worker's queue and batching.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Most images in one batched generation forward.
    pub max_batch: usize,
    /// How long the worker waits for more generation requests to join a batch, ms.
    pub max_wait_ms: u64,
    /// Most requests waiting for the model; past it requests get 503 with Retry-After.
    pub queue_capacity: usize,
    /// The Retry-After of a refused request, seconds.
    pub retry_after_secs: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_wait_ms: 10,
            queue_capacity: 64,
            retry_after_secs: 1,
        }
    }
}

/// The short-lived store behind `response_format: "url"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// How long a generated image stays downloadable, seconds.
    pub ttl_secs: u64,
    /// Most images kept; the oldest go first.
    pub max_images: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 600,
            max_images: 1024,
        }
    }
}

impl ServeConfig {
    pub fn from_toml_file(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let cfg: Self = toml::from_str(&text)
            .map_err(|e| ServeError::Config(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The model id: `model_id`, or the model directory's name.
    pub(crate) fn resolved_model_id(&self) -> String {
        if !self.model_id.trim().is_empty() {
            return self.model_id.trim().to_string();
        }
        self.model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "vqrae".to_string())
    }

    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |m: String| Err(ServeError::Config(m));
        let l = &self.limits;
        if l.max_body_bytes < 1024 {
            return bad(format!(
                "limits.max_body_bytes must be at least 1024, got {}",
                l.max_body_bytes
            ));
        }
        if l.max_image_pixels == 0 {
            return bad("limits.max_image_pixels must be at least 1".into());
        }
        if l.max_prompt_chars == 0 || l.max_images == 0 || l.max_tokens == 0 {
            return bad(
                "limits.max_prompt_chars, limits.max_images and limits.max_tokens must be at least 1"
                    .into(),
            );
        }
        if l.default_max_tokens == 0 || l.default_max_tokens > l.max_tokens {
            return bad(format!(
                "limits.default_max_tokens must be in 1..={} (limits.max_tokens), got {}",
                l.max_tokens, l.default_max_tokens
            ));
        }
        if l.max_messages == 0 {
            return bad("limits.max_messages must be at least 1".into());
        }
        let b = &self.batch;
        if b.max_batch == 0 || b.queue_capacity == 0 {
            return bad(format!(
                "batch.max_batch and batch.queue_capacity must be at least 1, got {} and {}",
                b.max_batch, b.queue_capacity
            ));
        }
        if b.max_wait_ms > 10_000 {
            return bad(format!(
                "batch.max_wait_ms is {} ms: a batch should wait milliseconds, not seconds",
                b.max_wait_ms
            ));
        }
        if self.images.max_images == 0 || self.images.ttl_secs == 0 {
            return bad("images.ttl_secs and images.max_images must be at least 1".into());
        }
        if matches!(&self.api_key, Some(k) if k.trim().is_empty()) {
            return bad("api_key is empty: leave it unset to turn auth off".into());
        }
        let url = &self.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return bad(format!(
                "public_url must start with http:// or https://, got {:?}",
                self.public_url
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bind_localhost() {
        let cfg = ServeConfig::default();
        cfg.validate().expect("defaults validate");
        assert_eq!(cfg.addr().to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.resolved_model_id(), "vqrae-easyvqa");
    }

    #[test]
    fn the_shipped_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/serve.toml");
        let cfg = ServeConfig::from_toml_file(&path).expect("configs/serve.toml");
        assert_eq!(cfg.addr().to_string(), "127.0.0.1:8080");
        assert!(cfg.api_key.is_none());
    }

    #[test]
    fn bad_values_are_refused() {
        let mut cfg = ServeConfig::default();
        cfg.batch.max_batch = 0;
        assert!(cfg.validate().is_err());
        let cfg = ServeConfig {
            api_key: Some(" ".into()),
            ..ServeConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = ServeConfig {
            public_url: "ftp://x".into(),
            ..ServeConfig::default()
        };
        assert!(cfg.validate().is_err());
        assert!(toml::from_str::<ServeConfig>("prot = 1").is_err());
    }
}
