//! Accepting and serving connections: hyper's HTTP/1 directly instead of `axum::serve`, which
//! has no header-read or idle timeout (a client trickling its headers held a connection, and
//! SIGTERM, for as long as it liked).
//!
//! Each connection keeps a [`Clock`]: requests in flight (from the parsed head until the
//! response's last byte is flushed) and, between requests, when the connection went quiet and
//! when the next head's first byte came. From it follow the two timeouts (config `timeouts`):
//! quiet and silent for `idle_secs`, or a head unfinished `header_read_secs` after its first
//! byte, closes the connection. On shutdown, quiet connections close at once, the others finish
//! their response (streams included), and whatever is still open after `shutdown_secs` is
//! dropped.
//!
//! hyper answers a request it cannot parse (a 100 KB URI: 414, headers past its buffer: 431,
//! a bad request line: 400) itself, with an empty body; [`Watched`] rewrites such a response,
//! the only bytes ever written while a connection is quiet, into OpenAI's error shape.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::Service;

use crate::config::Timeouts;
use crate::error::ApiError;

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets the
/// connections finish their requests in flight for at most `timeouts.shutdown_secs`, drops the
/// ones still open, and returns the shutdown deadline.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) -> Instant {
    let (draining_tx, draining) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = connection(stream, peer, router.clone(), timeouts, draining.clone());
                    conns.spawn(conn);
                }
                Err(e) => accept_error(e).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let deadline = Instant::now() + timeouts.shutdown();
    tracing::info!(
        connections = conns.len(),
        "shutting down: finishing the requests in flight (at most {:?})",
        timeouts.shutdown()
    );
    let _ = draining_tx.send(true);
    let drained = tokio::time::timeout_at(deadline, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "the shutdown deadline has passed: closing the connections still open"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    deadline
}

/// As `axum::serve`: a failed handshake is the client's business; anything else (out of file
/// descriptors) is logged and accepting pauses a second rather than spinning.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection, until it closes, times out, or shutdown finds it quiet.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    timeouts: Timeouts,
    mut draining: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched::new(stream, state.clone()));
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = Busy::start(svc_state.clone());
        let mut router = router.clone();
        async move {
            let resp = match router.call(req.map(Body::new)).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|inner| Tracked { inner, _busy: busy }))
        }
    });
    let mut conn = pin!(http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, svc));
    let mut shutting_down = false;
    loop {
        let deadline = state.clock().deadline(&timeouts);
        let wake = deadline.unwrap_or_else(|| Instant::now() + timeouts.idle());
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = state.changed.notified() => {}
            _ = tokio::time::sleep_until(wake) => {
                if let Some(why) = state.timed_out(&timeouts) {
                    tracing::debug!(%peer, "closing the connection: {why} timeout");
                    return;
                }
            }
            _ = draining.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
        if shutting_down && state.clock().quiet() {
            return;
        }
    }
}

/// What one connection's timeouts and error rewriting go by.
struct ConnState {
    clock: Mutex<Clock>,
    /// Woken on every change of the clock that moves a deadline.
    changed: Notify,
}

struct Clock {
    /// Requests from their parsed head until their response body is done.
    busy: usize,
    /// The last response body is done but its last bytes may not be flushed yet.
    flushing: bool,
    /// When the connection last became quiet (opened, or flushed its last response).
    quiet_since: Instant,
    /// When the first byte of the next request head arrived; the connection's opening for
    /// its first request.
    head_started: Option<Instant>,
}

impl Clock {
    /// No request in flight and every response byte flushed: what the connection writes now
    /// is not a response of the application's.
    fn quiet(&self) -> bool {
        self.busy == 0 && !self.flushing
    }

    /// When the connection times out; `None` while a request is in flight.
    fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        if !self.quiet() {
            return None;
        }
        Some(match self.head_started {
            Some(at) => at + t.header_read(),
            None => self.quiet_since + t.idle(),
        })
    }
}

impl ConnState {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            clock: Mutex::new(Clock {
                busy: 0,
                flushing: false,
                quiet_since: now,
                head_started: Some(now),
            }),
            changed: Notify::new(),
        }
    }

    fn clock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Clock) -> bool) {
        let changed = f(&mut self.clock());
        if changed {
            self.changed.notify_one();
        }
    }

    /// Which timeout has passed, if one has.
    fn timed_out(&self, t: &Timeouts) -> Option<&'static str> {
        let c = self.clock();
        let passed = c.deadline(t).is_some_and(|d| d <= Instant::now());
        match (passed, c.head_started.is_some()) {
            (false, _) => None,
            (true, true) => Some("header read"),
            (true, false) => Some("idle"),
        }
    }

    fn read(&self) {
        self.update(|c| {
            let starts_head = c.quiet() && c.head_started.is_none();
            if starts_head {
                c.head_started = Some(Instant::now());
            }
            starts_head
        });
    }

    fn flushed(&self) {
        self.update(|c| {
            let now_quiet = c.busy == 0 && c.flushing;
            if now_quiet {
                c.flushing = false;
                c.quiet_since = Instant::now();
            }
            now_quiet
        });
    }
}

/// A request in flight on its connection: from the service call until the response body is
/// done (or the request is dropped).
struct Busy(Arc<ConnState>);

impl Busy {
    fn start(state: Arc<ConnState>) -> Self {
        state.update(|c| {
            c.busy += 1;
            c.head_started = None;
            true
        });
        Self(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|c| {
            c.busy = c.busy.saturating_sub(1);
            if c.busy == 0 {
                c.flushing = true;
            }
            true
        });
    }
}

/// A response body that holds its request's [`Busy`] until it is done.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, watched: reads start the header-read clock, flushes end a response, and hyper's
/// own error responses are rewritten into OpenAI's error shape.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
    /// A rewritten response still to be written, and how much of it has been.
    pending: Vec<u8>,
    sent: usize,
}

impl Watched {
    fn new(inner: TcpStream, state: Arc<ConnState>) -> Self {
        Self {
            inner,
            state,
            pending: Vec::new(),
            sent: 0,
        }
    }

    /// Writes what is left of a rewritten response.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Poll::Ready(Ok(()))
    }

    /// `buf` rewritten when it is hyper's own error response: a whole response head with a
    /// 4xx/5xx status written while the connection is quiet.
    fn rewrite(&self, buf: &[u8]) -> Option<Vec<u8>> {
        if !self.state.clock().quiet() {
            return None;
        }
        let status = hypers_error_status(buf)?;
        Some(error_response(status))
    }
}

/// The status of a complete response head with no body and a 4xx/5xx status.
fn hypers_error_status(buf: &[u8]) -> Option<StatusCode> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let code = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    (code.is_client_error() || code.is_server_error()).then_some(code)
}

/// A whole HTTP/1.1 response carrying `status` as an [`ApiError`] body; the connection closes
/// after it, as hyper closes it after its own.
fn error_response(status: StatusCode) -> Vec<u8> {
    let (message, code) = match status {
        StatusCode::URI_TOO_LONG => (
            "The request's URI is too long (the limit is 64 KiB).",
            "uri_too_long",
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("The request's headers are too large.", "headers_too_large")
        }
        _ => ("The request is not valid HTTP/1.1.", "malformed_request"),
    };
    let body = ApiError::new(status, "invalid_request_error", message)
        .code(code)
        .body()
        .to_string();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.state.read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(replacement) = this.rewrite(buf) {
            this.pending = replacement;
            this.sent = 0;
            // written by the flush that follows; hyper counts its own bytes as written
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(replacement) = this.rewrite(first) {
                this.pending = replacement;
                this.sent = 0;
                return Poll::Ready(Ok(first.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.state.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_error_heads_are_hypers() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hypers_error_status(head), Some(StatusCode::URI_TOO_LONG));
        assert_eq!(hypers_error_status(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(hypers_error_status(b"HTTP/1.1 431 X\r\ncontent-le"), None);
        assert_eq!(hypers_error_status(b"{\"HTTP/1.1 400\"}\r\n\r\n"), None);
    }

    #[test]
    fn error_responses_are_openai_shaped() {
        let r = String::from_utf8(error_response(StatusCode::URI_TOO_LONG)).expect("utf-8");
        let (head, body) = r.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "uri_too_long");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn deadlines_follow_the_clock() {
        let t = Timeouts {
            header_read_secs: 1.0,
            idle_secs: 5.0,
            shutdown_secs: 1.0,
        };
        let s = ConnState::new();
        let opened = s.clock().quiet_since;
        // a new connection: its first head is due within the header-read timeout
        assert_eq!(
            s.clock().deadline(&t),
            Some(opened + Duration::from_secs(1))
        );
        let busy = Busy::start(Arc::new(ConnState::new()));
        let st = busy.0.clone();
        assert_eq!(st.clock().deadline(&t), None);
        drop(busy);
        // the body is done but not yet flushed: still no deadline
        assert_eq!(st.clock().deadline(&t), None);
        st.flushed();
        let quiet = st.clock().quiet_since;
        assert_eq!(
            st.clock().deadline(&t),
            Some(quiet + Duration::from_secs(5))
        );
        st.read();
        let head = st.clock().head_started.expect("a head started");
        assert_eq!(st.clock().deadline(&t), Some(head + Duration::from_secs(1)));
    }
}
