//! Server configuration: a TOML file (`configs/serve.toml`) whose every field has a default, and
//! which the `vqrae serve` flags override.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ServeError;

/// The shipped default model.
pub const DEFAULT_MODEL: &str = "models/vqrae-easyvqa";
/// Where a LLaVA model's base GGUF and encoder are installed (`scripts/setup-smollm2.sh`,
/// `scripts/convert-dinov2.sh`).
pub const DEFAULT_MODELS_ROOT: &str = ".data/models";
/// The environment variable that holds the API key (the flag `--api-key` reads it too).
pub const API_KEY_ENV: &str = "VQRAE_API_KEY";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Model directory: a unified model (`unified.json`: tokenizer + LM + projector) or a
    /// LLaVA model (`llava.json` + `adapters.safetensors`: a chat LM from a GGUF with adapters,
    /// an image encoder, a projector).
    pub model: PathBuf,
    /// Where a LLaVA model's base GGUF and encoder are found (by the paths and sha256 its
    /// `llava.json` records); unused by a unified model.
    pub models_root: PathBuf,
    /// How a LLaVA model's base runs: `true` its GGUF's quantized blocks (adapters as side
    /// paths), `false` dequantized to f32 (adapters merged); unset: the model directory's
    /// `serve_quantized`. Set for a unified model, loading fails.
    pub quantized: Option<bool>,
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
    pub timeouts: Timeouts,
    /// What to do with a prompt or question outside the model card's vocabulary and question
    /// forms: refuse it with a 400 that says what the model knows (the default), or answer it
    /// with a warning. A model without a card is never checked.
    pub ood: OodPolicy,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from(DEFAULT_MODEL),
            models_root: PathBuf::from(DEFAULT_MODELS_ROOT),
            quantized: None,
            model_id: String::new(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            api_key: None,
            public_url: String::new(),
            limits: Limits::default(),
            batch: BatchConfig::default(),
            images: StoreConfig::default(),
            timeouts: Timeouts::default(),
            ood: OodPolicy::default(),
        }
    }
}

/// [`ServeConfig::ood`]: `"refuse"` or `"warn"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OodPolicy {
    /// 400, `code: "out_of_distribution"`.
    #[default]
    Refuse,
    /// Answered; the response carries `warnings` and an `x-vqrae-warning` header.
    Warn,
}

impl OodPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::Warn => "warn",
        }
    }
}

impl std::str::FromStr for OodPolicy {
    type Err = ServeError;

    fn from_str(s: &str) -> Result<Self, ServeError> {
        match s.trim() {
            "refuse" => Ok(Self::Refuse),
            "warn" => Ok(Self::Warn),
            other => Err(ServeError::Config(format!(
                "ood must be \"refuse\" or \"warn\", got {other:?}"
            ))),
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
    /// Longest side of an uploaded image, pixels (checked from the header).
    pub max_image_side: u32,
    /// Most long side / short side of an uploaded image (checked from the header): the model
    /// squashes every image to a square, and a 16,777,216 x 1 strip means nothing to it.
    pub max_image_aspect: u32,
    /// Most images decoded at once. Decoding runs before the model's queue, so the queue's
    /// back-pressure does not bound it: past this many, requests wait for a decoder (and get
    /// 503 with Retry-After after 10 s of waiting).
    pub max_concurrent_decodes: usize,
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
            max_image_side: 16_384,
            max_image_aspect: 64,
            max_concurrent_decodes: 2,
            max_prompt_chars: 1000,
            max_images: 8,
            max_tokens: 64,
            default_max_tokens: 16,
            max_messages: 64,
        }
    }
}

impl Limits {
    /// What decoding one upload may cost: the pixel, side and aspect limits, and a decoder
    /// allocation of 4 bytes a pixel of `max_image_pixels` (64 MiB by default: 8-bit RGBA at
    /// the full size; a 16-bit image is accepted up to half the pixels).
    pub fn decode_limits(&self) -> vqrae_data::image_io::DecodeLimits {
        vqrae_data::image_io::DecodeLimits::new(
            self.max_image_pixels,
            self.max_image_side,
            self.max_image_aspect,
        )
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

/// How long the server waits on clients, seconds. Without them a client that connects and
/// says nothing, or trickles its headers a byte at a time, holds a connection (and SIGTERM)
/// for as long as it likes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// A request's head (request line and headers) must be complete this long after its first
    /// byte arrived (after the connection opened, for its first request); past it the
    /// connection is closed.
    pub header_read_secs: f64,
    /// A keep-alive connection with no request in flight is closed after this long without a
    /// byte from the client.
    pub idle_secs: f64,
    /// After SIGTERM or Ctrl-C the requests in flight (streams included) get this long to
    /// finish; connections still open then are closed and the server stops.
    pub shutdown_secs: f64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read_secs: 10.0,
            idle_secs: 60.0,
            shutdown_secs: 30.0,
        }
    }
}

/// The longest any timeout may be, seconds (a day).
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

impl Timeouts {
    pub(crate) fn header_read(&self) -> Duration {
        secs(self.header_read_secs)
    }

    pub(crate) fn idle(&self) -> Duration {
        secs(self.idle_secs)
    }

    pub(crate) fn shutdown(&self) -> Duration {
        secs(self.shutdown_secs)
    }

    fn validate(&self) -> Result<(), ServeError> {
        for (name, v) in [
            ("timeouts.header_read_secs", self.header_read_secs),
            ("timeouts.idle_secs", self.idle_secs),
            ("timeouts.shutdown_secs", self.shutdown_secs),
        ] {
            if !(v > 0.0 && v <= MAX_TIMEOUT_SECS) {
                return Err(ServeError::Config(format!(
                    "{name} must be a number of seconds in (0, {MAX_TIMEOUT_SECS}], got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// Values given on the command line (`vqrae serve`'s flags), each replacing its field of a
/// [`ServeConfig`] when set ([`ServeConfig::with_overrides`]).
#[derive(Clone, Debug, Default)]
pub struct ServeOverrides {
    pub model: Option<PathBuf>,
    pub models_root: Option<PathBuf>,
    pub quantized: Option<bool>,
    pub model_id: Option<String>,
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub api_key: Option<String>,
    pub public_url: Option<String>,
    pub max_batch: Option<usize>,
    pub max_wait_ms: Option<u64>,
    pub queue_capacity: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_image_pixels: Option<u64>,
    pub header_read_secs: Option<f64>,
    pub idle_secs: Option<f64>,
    pub shutdown_secs: Option<f64>,
    pub ood: Option<OodPolicy>,
}

/// `*field = v` when `v` is set.
fn set<T>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}

/// Seconds as a [`Duration`]; validated values never fail, anything else is clamped.
fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.clamp(0.0, MAX_TIMEOUT_SECS)).unwrap_or(Duration::ZERO)
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

    /// This config with every field `o` sets replaced, validated.
    pub fn with_overrides(mut self, o: ServeOverrides) -> Result<Self, ServeError> {
        set(&mut self.model, o.model);
        set(&mut self.models_root, o.models_root);
        self.quantized = o.quantized.or(self.quantized);
        set(&mut self.model_id, o.model_id);
        set(&mut self.host, o.host);
        set(&mut self.port, o.port);
        self.api_key = o.api_key.or(self.api_key);
        set(&mut self.public_url, o.public_url);
        set(&mut self.batch.max_batch, o.max_batch);
        set(&mut self.batch.max_wait_ms, o.max_wait_ms);
        set(&mut self.batch.queue_capacity, o.queue_capacity);
        set(&mut self.limits.max_body_bytes, o.max_body_bytes);
        set(&mut self.limits.max_image_pixels, o.max_image_pixels);
        set(&mut self.timeouts.header_read_secs, o.header_read_secs);
        set(&mut self.timeouts.idle_secs, o.idle_secs);
        set(&mut self.timeouts.shutdown_secs, o.shutdown_secs);
        set(&mut self.ood, o.ood);
        self.validate()?;
        Ok(self)
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
        if l.max_image_side == 0 || l.max_image_aspect == 0 || l.max_concurrent_decodes == 0 {
            return bad(format!(
                "limits.max_image_side, limits.max_image_aspect and limits.max_concurrent_decodes \
                 must be at least 1, got {}, {} and {}",
                l.max_image_side, l.max_image_aspect, l.max_concurrent_decodes
            ));
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
        self.timeouts.validate()?;
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
    fn image_limits_must_be_positive_and_size_the_decoder() {
        let l = Limits::default().decode_limits();
        assert_eq!(
            (l.max_pixels, l.max_side, l.max_aspect),
            (4096 * 4096, 16_384, 64)
        );
        assert_eq!(l.max_alloc, 64 * 1024 * 1024);
        for set in [
            |l: &mut Limits| l.max_image_side = 0,
            |l: &mut Limits| l.max_image_aspect = 0,
            |l: &mut Limits| l.max_concurrent_decodes = 0,
        ] {
            let mut cfg = ServeConfig::default();
            set(&mut cfg.limits);
            assert!(cfg.validate().is_err(), "{:?}", cfg.limits);
        }
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
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            let mut cfg = ServeConfig::default();
            cfg.timeouts.idle_secs = bad;
            assert!(cfg.validate().is_err(), "idle_secs = {bad}");
        }
    }

    #[test]
    fn overrides_replace_only_what_they_set_and_are_validated() {
        let base = ServeConfig {
            port: 9000,
            quantized: Some(true),
            ..ServeConfig::default()
        };
        let same = base.clone().with_overrides(ServeOverrides::default());
        assert_eq!(same.ok(), Some(base.clone()));
        let o = ServeOverrides {
            port: Some(1),
            max_batch: Some(3),
            idle_secs: Some(2.5),
            quantized: Some(false),
            ..ServeOverrides::default()
        };
        let cfg = base.clone().with_overrides(o).expect("valid");
        assert_eq!(
            (cfg.port, cfg.batch.max_batch, cfg.quantized),
            (1, 3, Some(false))
        );
        assert_eq!(cfg.timeouts.idle_secs, 2.5);
        assert_eq!(cfg.model, base.model);
        let bad = ServeOverrides {
            max_batch: Some(0),
            ..ServeOverrides::default()
        };
        assert!(base.with_overrides(bad).is_err());
    }

    #[test]
    fn ood_is_refuse_unless_told() {
        assert_eq!(ServeConfig::default().ood, OodPolicy::Refuse);
        let cfg: ServeConfig = toml::from_str("ood = \"warn\"").expect("toml");
        assert_eq!(cfg.ood, OodPolicy::Warn);
        assert!(toml::from_str::<ServeConfig>("ood = \"ignore\"").is_err());
        assert_eq!("warn".parse::<OodPolicy>().ok(), Some(OodPolicy::Warn));
        assert!("loud".parse::<OodPolicy>().is_err());
    }

    #[test]
    fn timeouts_take_whole_and_fractional_seconds() {
        let cfg: ServeConfig =
            toml::from_str("[timeouts]\nheader_read_secs = 5\nidle_secs = 0.25").expect("toml");
        assert_eq!(cfg.timeouts.header_read(), Duration::from_secs(5));
        assert_eq!(cfg.timeouts.idle(), Duration::from_millis(250));
        assert_eq!(cfg.timeouts.shutdown(), Duration::from_secs(30));
        cfg.validate().expect("valid");
    }
}
