//! The accept loop, shared by HTTP and HTTPS, and the limits that keep
//! clients from holding connections they do not use.
//!
//! Three limits ([`HttpLimits`]):
//! - **Header timeout.** Once the first byte of a request arrives, its
//!   headers must be complete within `header_timeout`; a new connection
//!   must deliver its first request's headers within that long too (a
//!   silent connection, half a header, headers dripped a line at a time,
//!   a TLS handshake that stalls).
//! - **Idle timeout.** A connection with no request in flight (none being
//!   handled, no response body being sent) for `idle_timeout` is closed.
//! - **Connection cap.** At most `max_connections` are served at once.
//!   Past that the node still accepts, so the listen queue never fills and
//!   health checks get an answer: over HTTP the extra connection gets a
//!   503 `UNAVAILABLE` with `Retry-After` and `Connection: close`, served
//!   by a minimal handler for at most [`REFUSAL_TIMEOUT`]; over HTTPS it is
//!   closed at once, because answering needs a TLS handshake, the very work
//!   the cap is there to bound. Refusals in progress are capped too
//!   ([`REFUSALS_AT_ONCE`]); past that a connection is closed at once.
//!
//! Both timeouts are enforced here rather than with hyper's
//! `header_read_timeout`: hyper's runs while a keep-alive connection waits
//! for its next request (so it would double as a short idle timeout), and
//! covers neither the HTTP/1-or-2 sniffing of the first bytes nor HTTP/2.
//! Here a watcher per connection sees when requests start and finish
//! ([`Activity`]) and when bytes arrive while none is in flight.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request};
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::error::{ApiError, ErrorCode};

/// How long a refused connection is given to send its request and read
/// the 503.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Refused connections being answered at once; more are just closed.
pub const REFUSALS_AT_ONCE: usize = 64;

/// How long an idle connection being closed may take to finish writing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long open connections may finish their requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Limits on the connections one listener serves.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request's headers must arrive within this long of its first byte,
    /// and a new connection's first request within this long of the accept.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are refused (see the module doc).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { header_timeout: Duration::from_secs(20), idle_timeout: Duration::from_secs(60), max_connections: 4096 }
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown`
/// resolves, within `limits`.
pub async fn serve_with_limits(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let (stop, stopped) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: accepting again at
                    // once would spin; a moment later some may be free.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let (app, tls, stopped) = (app.clone(), tls.clone(), stopped.clone());
                connections.spawn(async move {
                    serve_connection(tcp, peer, app, tls, limits, stopped).await;
                    drop(permit);
                });
            }
            Err(_) => {
                metrics::counter!("berth_http_connections_refused_total").increment(1);
                tracing::debug!(%peer, max_connections = limits.max_connections, "connection refused: too many open");
                if tls.is_none() {
                    if let Ok(slot) = refusals.clone().try_acquire_owned() {
                        connections.spawn(async move {
                            refuse(tcp).await;
                            drop(slot);
                        });
                    }
                }
                // Otherwise `tcp` drops here: closed at once.
            }
        }
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    connections.abort_all();
    Ok(())
}

async fn serve_connection(
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: HttpLimits,
    stopped: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let tcp = Watched { inner: tcp, activity: activity.clone() };
    match tls {
        None => serve_stream(tcp, peer, app, limits, activity, stopped).await,
        Some(acceptor) => {
            // The handshake is part of the first request's header time.
            let stream = match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            serve_stream(stream, peer, app, limits, activity, stopped).await
        }
    }
}

async fn serve_stream<I>(io: I, peer: std::net::SocketAddr, app: Router, limits: HttpLimits, activity: Arc<Activity>, mut stopped: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tracked = activity.clone();
    let service = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        // What axum's `ConnectInfo` would give: handlers see the client address.
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        let guard = tracked.request_started();
        let app = app.clone();
        async move {
            let resp = tower::ServiceExt::oneshot(app, req).await?;
            // In flight until the response body is sent (or dropped).
            Ok::<_, Infallible>(resp.map(|body| Body::new(Tracked { inner: body, _guard: guard })))
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), hyper_util::service::TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        why = activity.expired(limits) => {
            tracing::debug!(%peer, reason = why, "closing connection");
        }
        _ = async { stopped.wait_for(|s| *s).await.is_ok() } => {
            // Shutting down: requests in flight finish, within the
            // server's shutdown grace.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            return;
        }
    }
    // Nothing is in flight: close, giving a response still in the
    // buffers a moment to leave.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(tcp: TcpStream) {
    let service = tower::service_fn(|_req: Request<hyper::body::Incoming>| async {
        let mut resp =
            ApiError::new(ErrorCode::Unavailable, "this node is serving as many connections as it takes; retry shortly or use another node").into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(resp)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().keep_alive(false);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), hyper_util::service::TowerToHyperService::new(service));
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, conn).await;
}

/// What one connection is doing, as its watcher needs to know.
struct Activity {
    /// Requests being handled or having their response body sent.
    in_flight: AtomicUsize,
    /// A request has been dispatched on this connection.
    served_any: AtomicBool,
    /// Since when nothing is in flight, and since when bytes of a next
    /// request have been arriving (none yet: `None`).
    idle: Mutex<(Instant, Option<Instant>)>,
    /// Wakes the watcher when any of the above changes.
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity { in_flight: AtomicUsize::new(0), served_any: AtomicBool::new(false), idle: Mutex::new((Instant::now(), None)), changed: Notify::new() }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served_any.store(true, Ordering::SeqCst);
        self.changed.notify_one();
        InFlight { activity: self.clone() }
    }

    /// Bytes arrived: with nothing in flight, the next request has begun.
    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            let mut idle = self.idle.lock().expect("activity lock");
            if idle.1.is_none() {
                idle.1 = Some(Instant::now());
                drop(idle);
                self.changed.notify_one();
            }
        }
    }

    /// Resolves when the connection has broken a limit; says which.
    async fn expired(&self, limits: HttpLimits) -> &'static str {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so no change is missed.
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let (idle_since, head_since) = *self.idle.lock().expect("activity lock");
            let (deadline, why) = match head_since {
                Some(t) => (t + limits.header_timeout, "request headers took too long"),
                None if !self.served_any.load(Ordering::SeqCst) => (idle_since + limits.header_timeout, "no request after connecting"),
                None => (idle_since + limits.idle_timeout, "idle"),
            };
            if Instant::now() >= deadline {
                return why;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = changed => {}
            }
        }
    }
}

/// A request in flight; dropped when its response body is done.
struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        let mut idle = a.idle.lock().expect("activity lock");
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *idle = (Instant::now(), None);
        }
        drop(idle);
        a.changed.notify_one();
    }
}

/// A response body that keeps its request in flight until it is sent.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket, telling its [`Activity`] when bytes arrive.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
