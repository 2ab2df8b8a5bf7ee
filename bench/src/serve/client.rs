//! The HTTP client of `bench-serve`: hyper's pooled client (hyper-util's legacy `Client` on an
//! `HttpConnector`) rather than a hand-written one, so keep-alive, chunked bodies and
//! connections the server closed are handled by a well-tested implementation. The pool keeps
//! each connection open between requests; a request that finds its pooled connection closed
//! before it was sent is retried on a fresh one (hyper's `retry_canceled_requests`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

/// Where the server is and what every request carries.
#[derive(Debug)]
pub(crate) struct Target {
    /// host:port (port 80 when the URL names none).
    pub(crate) authority: String,
    /// Path prefix of the base URL, without the trailing slash.
    pub(crate) prefix: String,
    key: Option<String>,
    /// Per request, from sending it to the last byte of the answer.
    timeout: Duration,
}

impl Target {
    /// Only plain `http://` URLs: the benchmark runs next to the server, and TLS would be one
    /// more thing measured.
    pub(crate) fn parse(url: &str, key: Option<String>, timeout: Duration) -> Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            anyhow!("--url {url:?}: only plain http:// URLs (run it next to the server)")
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        ensure!(!authority.is_empty(), "--url {url:?} names no host");
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            prefix: prefix.to_string(),
            key,
            timeout,
        })
    }

    /// The full URI of a route (`path` starts with `/`).
    pub(crate) fn uri(&self, path: &str) -> Result<Uri> {
        let uri = format!("http://{}{}{path}", self.authority, self.prefix);
        uri.parse()
            .with_context(|| format!("{uri:?} is not a valid URI"))
    }
}

/// A cheap-to-clone handle on one connection pool to the target: the load workers share it,
/// so each of them keeps a keep-alive connection while requests are in flight.
#[derive(Clone)]
pub(crate) struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    target: Arc<Target>,
}

impl Client {
    /// Needs no runtime to build; requests must run on a tokio runtime with I/O and time.
    pub(crate) fn new(target: Target) -> Self {
        let mut connector = HttpConnector::new();
        // requests are small and latency is what is measured: no Nagle delay
        connector.set_nodelay(true);
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Self {
            http,
            target: Arc::new(target),
        }
    }

    /// `GET path`: `(status, body)`.
    pub(crate) async fn get(&self, path: &str) -> Result<(u16, Bytes)> {
        self.request(Method::GET, path, Vec::new()).await
    }

    /// `POST path` with a JSON body: `(status, body)`.
    pub(crate) async fn post(&self, path: &str, body: Vec<u8>) -> Result<(u16, Bytes)> {
        self.request(Method::POST, path, body).await
    }

    /// One request, the whole answer read, within the target's timeout.
    async fn request(&self, method: Method, path: &str, body: Vec<u8>) -> Result<(u16, Bytes)> {
        let uri = self.target.uri(path)?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "*/*");
        if let Some(k) = &self.target.key {
            req = req.header(AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .context("building the request (is the API key valid in a header?)")?;
        let exchange = async {
            let resp = self.http.request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let timeout = self.target.timeout;
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r.with_context(|| format!("{method} {path} at {}", self.target.authority)),
            Err(_) => Err(anyhow!(
                "{method} {path} at {}: no answer within {} s",
                self.target.authority,
                timeout.as_secs_f64()
            )),
        }
    }
}
