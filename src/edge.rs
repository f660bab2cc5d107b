//! The network edge both long-running roles share (server and connector):
//! who the client really is behind a load balancer, and what a stranger's
//! connection may cost.
//!
//! - **Client addresses.** The TCP peer is the client unless it is one of
//!   the `--trusted-proxies`. From those peers the address comes from the
//!   PROXY protocol v2 header (`--proxy-protocol`, read before TLS) or from
//!   `X-Forwarded-For`: the rightmost address that is not itself a trusted
//!   proxy. Anyone else's forwarded headers are ignored, so a client cannot
//!   choose the address its rate limits, trusted IPs and audit entries see.
//! - **Connections.** A cap on concurrent connections (`--max-connections`),
//!   a timeout on the TLS handshake and on a PROXY header, a first request
//!   due within the header-read timeout (whatever protocol the client
//!   speaks, or none), and a connection with no request in progress closed
//!   after the idle timeout. Idleness counts requests, not bytes: HTTP/2
//!   pings answered for ever do not keep a connection, while a watch, a long
//!   poll or an upgraded stream (exec, port-forward) is a request in
//!   progress for as long as it lasts. The header-read timeout of later
//!   HTTP/1 requests and the request timeout live with hyper and the router.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, Request};
use axum_server::accept::Accept;
use clap::Args;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

// ------------------------------------------------------------------ trusted proxies

/// The peers whose word on the client's address is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// `10.0.0.0/8,192.168.1.7,fd00::/8`: networks or single addresses.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "{item:?} is not a CIDR (10.0.0.0/8, fd00::/8) or an IP address"
                        ));
                    }
                },
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// What the edge knows of a connection, put on each of its requests.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client a trusted proxy named in a PROXY protocol header.
    pub proxied: Option<IpAddr>,
    pub trusted: Arc<TrustedProxies>,
}

/// The client's address for a request: see the module comment. `None` only
/// for requests that did not come through the edge (never in production).
pub fn client_ip(extensions: &axum::http::Extensions, headers: &HeaderMap) -> Option<IpAddr> {
    let conn = extensions.get::<ConnInfo>()?;
    Some(resolve(conn, headers))
}

/// The client behind `conn`, given the request's headers.
pub fn resolve(conn: &ConnInfo, headers: &HeaderMap) -> IpAddr {
    let peer = conn.peer.ip().to_canonical();
    if !conn.trusted.contains(peer) {
        return peer;
    }
    // A trusted peer: what it (or the proxies before it) says, walked from
    // the nearest hop outwards, up to the first address we do not trust.
    let mut nearest = conn.proxied.map(|p| p.to_canonical()).unwrap_or(peer);
    if !conn.trusted.contains(nearest) {
        return nearest;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if conn.trusted.contains(ip) => nearest = ip,
            Some(ip) => return ip,
            // Garbage a trusted proxy passed on: stop at the last hop we know.
            None => return nearest,
        }
    }
    nearest
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = hop.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

// ------------------------------------------------------------------ PROXY protocol v2

const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Addresses and TLVs: more than real proxies send, little enough to read.
const PROXY_V2_MAX_LEN: usize = 1024;

/// Reads a PROXY protocol v2 header, and not a byte more. `Ok(None)`: the
/// LOCAL command (the proxy's own health check) or an unspecified family.
pub async fn read_proxy_v2<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<IpAddr>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let mut head = [0u8; 16];
    r.read_exact(&mut head).await?;
    if head[..12] != PROXY_V2_SIGNATURE {
        return Err(bad(
            "expected a PROXY protocol v2 header from this trusted proxy (--proxy-protocol)",
        ));
    }
    let version = head[12] >> 4;
    let command = head[12] & 0x0f;
    if version != 2 || command > 1 {
        return Err(bad("unsupported PROXY protocol version or command"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > PROXY_V2_MAX_LEN {
        return Err(bad("PROXY protocol header too long"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if command == 0 {
        return Ok(None);
    }
    let family = head[13] >> 4;
    match family {
        1 if body.len() >= 12 => Ok(Some(IpAddr::V4(Ipv4Addr::new(
            body[0], body[1], body[2], body[3],
        )))),
        2 if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            Ok(Some(IpAddr::V6(Ipv6Addr::from(a)).to_canonical()))
        }
        1 | 2 => Err(bad("PROXY protocol addresses cut short")),
        _ => Ok(None),
    }
}

/// A PROXY protocol v2 header for `src` → `dst` (TCP), as a load balancer
/// sends it; for tests and tools.
pub fn proxy_v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = PROXY_V2_SIGNATURE.to_vec();
    out.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src).octets());
            out.extend_from_slice(&v6(dst).octets());
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
    out
}

// ------------------------------------------------------------------ the acceptor

/// How the edge treats connections.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub trusted: Arc<TrustedProxies>,
    /// Read a PROXY protocol v2 header from trusted peers.
    pub proxy_protocol: bool,
    /// Concurrent connections at most; more are closed at once.
    pub max_connections: usize,
    /// For the TLS handshake, a PROXY header, and the first request.
    pub handshake_timeout: Duration,
    /// Close a connection with no request in progress for this long.
    pub idle_timeout: Duration,
}

/// Counts what the edge turned away, for logs and metrics.
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub over_limit: AtomicU64,
    pub bad_proxy_header: AtomicU64,
}

/// Wraps an inner acceptor (TLS): caps connections, reads the PROXY header,
/// bounds idleness, and tells each request about its connection.
#[derive(Clone)]
pub struct EdgeAcceptor<A> {
    inner: A,
    cfg: Arc<EdgeConfig>,
    slots: Arc<Semaphore>,
    pub stats: Arc<EdgeStats>,
}

impl<A> EdgeAcceptor<A> {
    pub fn new(inner: A, cfg: EdgeConfig) -> Self {
        EdgeAcceptor {
            inner,
            slots: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            cfg: Arc::new(cfg),
            stats: Arc::new(EdgeStats::default()),
        }
    }
}

impl<A, S> Accept<TcpStream, S> for EdgeAcceptor<A>
where
    A: Accept<TcpStream, S> + Clone + Send + Sync + 'static,
    A::Future: Send,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send,
    A::Service: Send,
    S: Send + 'static,
{
    type Stream = EdgeStream<A::Stream>;
    type Service = WithConn<A::Service>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, mut stream: TcpStream, service: S) -> Self::Future {
        let slot = self.slots.clone().try_acquire_owned();
        let inner = self.inner.clone();
        let cfg = self.cfg.clone();
        let stats = self.stats.clone();
        Box::pin(async move {
            let Ok(slot) = slot else {
                if stats
                    .over_limit
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(1000)
                {
                    tracing::warn!(
                        max = cfg.max_connections,
                        "connection limit reached: closing new connections (--max-connections)"
                    );
                }
                return Err(io::Error::other("connection limit reached"));
            };
            let peer = stream.peer_addr()?;
            let proxied = if cfg.proxy_protocol && cfg.trusted.contains(peer.ip()) {
                match tokio::time::timeout(cfg.handshake_timeout, read_proxy_v2(&mut stream)).await
                {
                    Ok(Ok(ip)) => ip,
                    Ok(Err(e)) => {
                        stats.bad_proxy_header.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, "closed a connection: {e}");
                        return Err(e);
                    }
                    Err(_) => {
                        stats.bad_proxy_header.fetch_add(1, Ordering::Relaxed);
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no PROXY protocol header in time",
                        ));
                    }
                }
            } else {
                None
            };
            let (stream, service) = inner.accept(stream, service).await?;
            let activity = Arc::new(Activity::default());
            let born = tokio::time::Instant::now();
            Ok((
                EdgeStream {
                    inner: stream,
                    _slot: slot,
                    activity: activity.clone(),
                    born,
                    first: cfg.handshake_timeout,
                    idle: cfg.idle_timeout,
                    timer: Box::pin(tokio::time::sleep_until(born + cfg.handshake_timeout)),
                    write_stalled: None,
                },
                WithConn {
                    inner: service,
                    info: ConnInfo {
                        peer,
                        proxied,
                        trusted: cfg.trusted.clone(),
                    },
                    activity,
                    born,
                },
            ))
        })
    }
}

/// What one connection is doing, shared by its stream and its service.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests whose response, body included, is not finished.
    in_flight: AtomicUsize,
    /// Whether a request came (before one, the header-read timeout bounds
    /// the connection).
    requested: AtomicBool,
    /// Switched protocols (exec, attach, port-forward): the stream is the
    /// request now, for as long as it lasts.
    upgraded: AtomicBool,
    /// When the last response finished, in ms since the connection began.
    last_end_ms: AtomicU64,
}

/// Counts one request in progress until dropped (with its response body).
struct InFlight {
    activity: Arc<Activity>,
    born: tokio::time::Instant,
}

impl InFlight {
    fn new(activity: Arc<Activity>, born: tokio::time::Instant) -> Self {
        activity.requested.store(true, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { activity, born }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.activity.last_end_ms.fetch_max(ms, Ordering::Relaxed);
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A service that puts [`ConnInfo`] on every request, and counts it as in
/// progress until its response body is done.
#[derive(Clone)]
pub struct WithConn<S> {
    inner: S,
    info: ConnInfo,
    activity: Arc<Activity>,
    born: tokio::time::Instant,
}

impl<S, B, R> tower::Service<Request<B>> for WithConn<S>
where
    S: tower::Service<Request<Kept<B>>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    R: http_body::Body + Unpin + Send,
{
    type Response = axum::http::Response<Tracked<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.info.clone());
        let guard = InFlight::new(self.activity.clone(), self.born);
        let (parts, body) = req.into_parts();
        let body = Arc::new(std::sync::Mutex::new(body));
        let fut = self
            .inner
            .call(Request::from_parts(parts, Kept(body.clone())));
        Box::pin(async move {
            let resp = fut.await?;
            if resp.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
                guard.activity.upgraded.store(true, Ordering::Relaxed);
            } else {
                drain(&body).await;
            }
            Ok(resp.map(|b| Tracked {
                body: b,
                _guard: guard,
                _request: Box::new(body),
            }))
        })
    }
}

/// The most of a request body left unread by its handler that is read
/// (and dropped) before the answer, and for how long at most.
const DRAIN_BYTES: usize = 8 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads what is left of a request body the handler did not read (an
/// early 401, 404 or 413), within bounds, so that the stream ends cleanly:
/// HTTP/2 clients then need not handle a reset of a stream they are still
/// sending on (curl before 8.1 reports such a 413 as a failed transfer).
async fn drain<B: http_body::Body + Unpin>(body: &Arc<std::sync::Mutex<B>>) {
    use hyper::body::Buf;
    let mut left = DRAIN_BYTES;
    let read = std::future::poll_fn(|cx| {
        let mut b = body.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if b.is_end_stream() || left == 0 {
                return Poll::Ready(());
            }
            match Pin::new(&mut *b).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, |d| d.remaining());
                    left = left.saturating_sub(n.max(1));
                }
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    });
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// A request's body, held (not read) by its response until that is done
/// as well as by the handler. HTTP/2 ends a stream whose request body was
/// not all read with RST_STREAM(NO_ERROR) after the response, but with
/// CANCEL, which clients take as a failure, when the body goes first: a
/// client still sending gets the 401 or 413 it was answered.
pub struct Kept<B>(Arc<std::sync::Mutex<B>>);

impl<B: http_body::Body + Unpin> http_body::Body for Kept<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).size_hint()
    }
}

/// A response body that keeps its request in progress (and its request's
/// body, see [`Kept`]) until it is done.
pub struct Tracked<B> {
    body: B,
    _guard: InFlight,
    _request: Box<dyn Send>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection holding its slot, closed when its first request does not
/// come in time, or when no request has been in progress for `idle`.
pub struct EdgeStream<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    activity: Arc<Activity>,
    born: tokio::time::Instant,
    first: Duration,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Since when a write has waited on a client that reads nothing.
    write_stalled: Option<tokio::time::Instant>,
}

impl<S> EdgeStream<S> {
    /// When the connection is to close if nothing changes (`None`: not
    /// while a request is in progress, unless the client stopped reading
    /// its answer; never once upgraded).
    fn deadline(&self) -> Option<tokio::time::Instant> {
        let a = &self.activity;
        if a.upgraded.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(since) = self.write_stalled {
            return Some(since + self.idle);
        }
        if a.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !a.requested.load(Ordering::Relaxed) {
            return Some(self.born + self.first);
        }
        let last = Duration::from_millis(a.last_end_ms.load(Ordering::Relaxed));
        Some(self.born + last + self.idle)
    }

    /// Whether the connection is past its deadline; if not, the timer is
    /// set to wake this task at it (a request in progress is looked at
    /// again when its connection is next polled).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.deadline() else {
            return false;
        };
        if tokio::time::Instant::now() >= at {
            return true;
        }
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

impl<S> EdgeStream<S> {
    /// After a write: a client that reads nothing for the idle timeout
    /// (a slow reader holding a big answer, and the connection) is cut off.
    fn wrote(
        &mut self,
        r: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Pending => {
                self.write_stalled
                    .get_or_insert_with(tokio::time::Instant::now);
                if self.expired(cx) {
                    return Poll::Ready(Err(idle_error()));
                }
                Poll::Pending
            }
            other => {
                self.write_stalled = None;
                other
            }
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for EdgeStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EdgeStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(r, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Sets hyper's limits on a server: the HTTP/1 header-read timeout (which
/// also ends idle keep-alive connections waiting for their next request),
/// and HTTP/2 keep-alive pings and stream caps.
pub fn limit_http(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    header_read_timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(128)
        .max_header_list_size(64 * 1024);
}

/// The network edge's flags, shared by `infra server` and `infra connector`.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Load balancers and proxies (CIDR,…) whose X-Forwarded-For or PROXY header names the client
    #[arg(long, env = "INFRA_TRUSTED_PROXIES", value_name = "CIDR,…", value_parser = parse_trusted_proxies)]
    pub trusted_proxies: Option<TrustedProxies>,

    /// Read a PROXY protocol v2 header (before TLS) from --trusted-proxies
    #[arg(long, env = "INFRA_PROXY_PROTOCOL", requires = "trusted_proxies")]
    pub proxy_protocol: bool,

    /// Connections open at once at most; more are closed at once
    #[arg(
        long,
        env = "INFRA_MAX_CONNECTIONS",
        default_value_t = 4096,
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Time a client has for its TLS handshake and each request's headers (also ends idle keep-alive)
    #[arg(long, env = "INFRA_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = crate::api::parse_duration)]
    pub header_read_timeout: Duration,

    /// Close a connection with no request in progress for this long (a watch, a long poll or an exec session is one in progress while it lasts)
    #[arg(long, env = "INFRA_IDLE_TIMEOUT", default_value = "120s", value_parser = crate::api::parse_duration)]
    pub idle_timeout: Duration,
}

impl EdgeArgs {
    /// The edge as these flags set it.
    pub fn config(&self) -> EdgeConfig {
        EdgeConfig {
            trusted: std::sync::Arc::new(self.trusted_proxies.clone().unwrap_or_default()),
            proxy_protocol: self.proxy_protocol,
            max_connections: self.max_connections,
            handshake_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// `--metrics-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" | "" => Ok(MetricsListen(None)),
            a => a.parse().map(|a| MetricsListen(Some(a))).map_err(|e| {
                format!("{a:?} is not an address such as 127.0.0.1:9464 ({e}), nor off")
            }),
        }
    }
}

/// Serves a private plain-HTTP app (health and metrics) on the address the
/// admin chose, or on `default`. A chosen address must work; the default
/// may be taken (another server on this machine), which costs a warning.
pub async fn serve_private(
    app: axum::Router,
    chosen: Option<MetricsListen>,
    default: SocketAddr,
) -> anyhow::Result<()> {
    let addr = match chosen {
        Some(MetricsListen(None)) => return Ok(()),
        Some(MetricsListen(Some(a))) => a,
        None => default,
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if chosen.is_none() => {
            eprintln!(
                "warning: no metrics: cannot listen on {addr} ({e}); choose another address with \
                 --metrics-listen ADDR"
            );
            return Ok(());
        }
        Err(e) => {
            anyhow::bail!(
                "cannot listen for metrics on {addr}: {e}; choose another with --metrics-listen \
                 ADDR, or --metrics-listen off"
            );
        }
    };
    eprintln!("metrics on http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics listener stopped: {e}");
        }
    });
    Ok(())
}

/// `--max-connections` etc. parsing helper for clap.
pub fn parse_trusted_proxies(s: &str) -> Result<TrustedProxies, String> {
    TrustedProxies::parse(s)
}

/// How the server and the connector write their logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people (colour only on a terminal, never with NO_COLOR)
    #[default]
    Text,
    /// One JSON object per line, for log collectors
    Json,
}

/// Raises the soft limit on open files to the hard one: every connection
/// (and every connector's long poll) holds a file descriptor, and the
/// usual soft limit of 1024 would refuse connections long before the
/// machine is busy. Says what it could get.
pub fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 4096 => tracing::warn!(
            "this process may hold only {n} open files (connections); raise the limit \
             (`ulimit -n`, or LimitNOFILE= in a systemd unit) to serve many clients"
        ),
        Ok(n) => tracing::debug!("open files limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    // The HTTP server retries a failed accept without a word; this says so
    // instead, when the descriptors are nearly all taken.
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        let mut last_warned: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
                return;
            };
            let open = match std::fs::read_dir("/proc/self/fd") {
                Ok(dir) => dir.count() as u64,
                // Reading the list takes a descriptor too.
                Err(e) if e.raw_os_error() == Some(24 /* EMFILE */) => soft,
                Err(_) => return,
            };
            if open * 10 >= soft * 9
                && last_warned.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60))
            {
                last_warned = Some(std::time::Instant::now());
                tracing::warn!(
                    "{open} of the {soft} open files this process may hold are in use: new \
                     connections will be refused; raise the limit (`ulimit -n`, or \
                     LimitNOFILE= in a systemd unit)"
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(peer: &str, proxied: Option<&str>, trusted: &str) -> ConnInfo {
        ConnInfo {
            peer: format!("{peer}:1234")
                .parse()
                .unwrap_or_else(|_| SocketAddr::new(peer.parse().unwrap(), 1234)),
            proxied: proxied.map(|p| p.parse().unwrap()),
            trusted: Arc::new(TrustedProxies::parse(trusted).unwrap()),
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer cannot choose its address.
        let c = conn("203.0.113.9", None, "10.0.0.0/8");
        assert_eq!(resolve(&c, &xff(&["198.51.100.1"])), ip("203.0.113.9"));
        // A trusted proxy: the rightmost address it does not trust.
        let c = conn("10.0.0.2", None, "10.0.0.0/8");
        assert_eq!(
            resolve(&c, &xff(&["1.1.1.1, 198.51.100.7, 10.0.0.5"])),
            ip("198.51.100.7"),
            "the client's own (spoofable) entry on the left is ignored"
        );
        assert_eq!(
            resolve(&c, &xff(&["1.1.1.1", "198.51.100.7:4567"])),
            ip("198.51.100.7")
        );
        assert_eq!(resolve(&c, &xff(&["[2001:db8::7]:443"])), ip("2001:db8::7"));
        // No header: the proxy itself.
        assert_eq!(resolve(&c, &HeaderMap::new()), ip("10.0.0.2"));
        // Garbage from the chain: stop at the last known hop.
        assert_eq!(
            resolve(&c, &xff(&["198.51.100.7, not-an-ip, 10.0.0.9"])),
            ip("10.0.0.9")
        );
        // A PROXY header from a trusted peer names the client.
        let c = conn("10.0.0.2", Some("198.51.100.8"), "10.0.0.0/8");
        assert_eq!(resolve(&c, &xff(&["1.1.1.1"])), ip("198.51.100.8"));
        // IPv4 through an IPv6 socket is the same IPv4 address.
        let c = conn("::ffff:10.0.0.2", None, "10.0.0.0/8");
        assert_eq!(resolve(&c, &xff(&["198.51.100.7"])), ip("198.51.100.7"));
    }

    #[test]
    fn trusted_proxy_lists() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7,fd00::/8").unwrap();
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("192.168.1.7".parse().unwrap()));
        assert!(!t.contains("192.168.1.8".parse().unwrap()));
        assert!(t.contains("fd00::1".parse().unwrap()));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
    }

    #[tokio::test]
    async fn proxy_v2_headers() {
        let src: SocketAddr = "198.51.100.7:5555".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut bytes = proxy_v2_header(src, dst);
        bytes.extend_from_slice(b"TLS...");
        let mut r = &bytes[..];
        assert_eq!(read_proxy_v2(&mut r).await.unwrap(), Some(src.ip()));
        assert_eq!(r, b"TLS...", "not a byte more is read");
        let src6: SocketAddr = "[2001:db8::5]:5555".parse().unwrap();
        let bytes = proxy_v2_header(src6, "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(
            read_proxy_v2(&mut &bytes[..]).await.unwrap(),
            Some(src6.ip())
        );
        // LOCAL: the proxy's own health check.
        let mut local = PROXY_V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read_proxy_v2(&mut &local[..]).await.unwrap(), None);
        // Not a PROXY header at all (a plain TLS ClientHello).
        let hello = [0x16u8, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3, 0, 0, 0, 0, 0];
        assert!(read_proxy_v2(&mut &hello[..]).await.is_err());
        // A length past what proxies send.
        let mut long = PROXY_V2_SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(read_proxy_v2(&mut &long[..]).await.is_err());
    }
}
