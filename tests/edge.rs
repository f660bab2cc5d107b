//! Hostile traffic at the server's edge, played against the real binary:
//! forwarded headers from trusted and untrusted peers, the PROXY protocol,
//! made-up methods against the metrics, half-sent requests, trickled
//! bodies, too many connections and oversized bodies.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Server, ServerOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn start(args: &[&str]) -> Server {
    let mut o = ServerOptions::new(Backend::Sqlite);
    o.extra_args = args.iter().map(|s| s.to_string()).collect();
    Server::start_with(o).await
}

fn addr(s: &Server) -> SocketAddr {
    s.host().parse().unwrap()
}

/// A client whose connections come from `from` (any of 127.0.0.0/8 is this machine).
fn client_from(s: &Server, from: &str) -> reqwest::Client {
    let pem = std::fs::read(s.data_dir.join("tls.crt")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A failed password login with these extra headers; returns where the
/// server's audit log says it came from.
async fn failed_login_seen_from(
    s: &Server,
    c: &reqwest::Client,
    headers: &[(&str, &str)],
) -> String {
    let user = common::random_suffix();
    let mut req = c
        .post(format!("{}/api/login", s.url))
        .header("Infra-Version", common::VERSION)
        .json(&json!({"passwordCredentials": {"name": user, "password": "wrong-password"}}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let audit = s.ok("GET", "/api/audit?action=login", None, 200).await;
    audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == json!(user))
        .expect("the failure is audited")["remoteAddr"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    // No trusted proxies: a client cannot choose its address.
    let s = start(&[]).await;
    let c = client_from(&s, "127.0.0.1");
    let seen = failed_login_seen_from(
        &s,
        &c,
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Real-IP", "203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(seen, "127.0.0.1");
    drop(s);

    // 127.0.0.1 is the load balancer: its X-Forwarded-For names the client,
    // the rightmost address it does not trust (the client wrote the left one).
    let s = start(&["--trusted-proxies", "127.0.0.1/32,10.0.0.0/8"]).await;
    let lb = client_from(&s, "127.0.0.1");
    let seen = failed_login_seen_from(
        &s,
        &lb,
        &[("X-Forwarded-For", "192.0.2.66, 203.0.113.9, 10.1.2.3")],
    )
    .await;
    assert_eq!(seen, "203.0.113.9");
    // Someone else, straight to the server: their header is ignored.
    let direct = client_from(&s, "127.0.0.2");
    let seen = failed_login_seen_from(&s, &direct, &[("X-Forwarded-For", "203.0.113.9")]).await;
    assert_eq!(seen, "127.0.0.2");
}

/// A TLS connection to the server from `from`, with `before` written on
/// the TCP connection first (a PROXY header).
async fn tls_to(
    s: &Server,
    from: &str,
    before: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tls_alpn(s, from, before, &[]).await
}

/// The same, offering these ALPN protocols (`h2`).
async fn tls_alpn(
    s: &Server,
    from: &str,
    before: &[u8],
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut tcp = sock.connect(addr(s)).await?;
    tcp.write_all(before).await?;
    tls_over(s, tcp, alpn).await
}

/// TLS to the server over `tcp`, trusting its certificate, offering `alpn`.
async fn tls_over(
    s: &Server,
    tcp: TcpStream,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(s.data_dir.join("tls.crt")).unwrap();
    for c in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
}

/// Sends one HTTP/1.1 request and reads the answer (the connection closes after it).
async fn http1<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    req: &str,
) -> String {
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_header_names_the_client_only_from_a_trusted_proxy() {
    // The load balancer is 127.0.0.3; the test's own API calls come from 127.0.0.1.
    let s = start(&["--trusted-proxies", "127.0.0.3", "--proxy-protocol"]).await;
    let client: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let header = infra::edge::proxy_v2_header(client, addr(&s));
    let mut tls = tls_to(&s, "127.0.0.3", &header).await.unwrap();
    let user = common::random_suffix();
    let body =
        format!(r#"{{"passwordCredentials":{{"name":"{user}","password":"wrong-password"}}}}"#);
    let answer = http1(
        &mut tls,
        &format!(
            "POST /api/login HTTP/1.1\r\nHost: x\r\nInfra-Version: {}\r\nContent-Type: application/json\r\n\
             X-Forwarded-For: 203.0.113.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            common::VERSION,
            body.len()
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let audit = s.ok("GET", "/api/audit?action=login", None, 200).await;
    let entry: &Value = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == json!(user))
        .unwrap();
    assert_eq!(entry["remoteAddr"], "198.51.100.7");

    // The trusted proxy must send the header: plain TLS from it is refused.
    assert!(tls_to(&s, "127.0.0.3", b"").await.is_err());
    // Anyone else talks TLS directly; a PROXY header from them is not read.
    let c = client_from(&s, "127.0.0.2");
    let seen = failed_login_seen_from(&s, &c, &[]).await;
    assert_eq!(seen, "127.0.0.2");
    let spoof = infra::edge::proxy_v2_header("192.0.2.1:1".parse().unwrap(), addr(&s));
    assert!(tls_to(&s, "127.0.0.2", &spoof).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_the_metrics() {
    let s = start(&[]).await;
    // /metrics is not on the public port.
    let (status, _) = s.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 404);
    assert!(s.metrics_url().starts_with("http://127.0.0.1:"));

    let before = s.metrics().await;
    let long = "Z".repeat(16 * 1024);
    let mut methods: Vec<String> = (0..40).map(|i| format!("ZQ{i}X")).collect();
    methods.push(long.clone());
    for m in &methods {
        let _ = s
            .client
            .request(
                reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                format!("{}/api/users/{}", s.url, common::random_suffix()),
            )
            .send()
            .await;
        let _ = s
            .client
            .get(format!("{}/no/such/{}", s.url, common::random_suffix()))
            .send()
            .await;
    }
    let after = s.metrics().await;
    assert!(!after.contains("ZQ"), "no made-up method is a label");
    assert!(!after.contains(&long[..64]));
    assert!(
        after.contains("method=\"other\",route=\"/api/users/{id}\""),
        "{after}"
    );
    assert!(after.contains("route=\"unmatched\""), "{after}");
    let series = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("infra_http_requests_total{"))
            .count()
    };
    assert!(
        series(&after) <= series(&before) + 4,
        "a handful of label sets, not one per request:\n{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let s = start(&["--header-read-timeout", "2s", "--request-timeout", "3s"]).await;

    // Half the headers, then nothing: closed after the header-read timeout.
    let mut tls = tls_to(&s, "127.0.0.1", b"").await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "still open after 15 s");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

    // A TCP connection that never starts TLS: closed after the handshake timeout.
    let mut tcp = TcpStream::connect(addr(&s)).await.unwrap();
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "still open after 15 s");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

    // A kept-alive connection waiting for its next request: closed too.
    let mut tls = tls_to(&s, "127.0.0.1", b"").await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "still open after 15 s");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

    // A body trickled a byte a second: the request times out.
    let mut tls = tls_to(&s, "127.0.0.1", b"").await.unwrap();
    tls.write_all(
        format!(
            "POST /api/login HTTP/1.1\r\nHost: x\r\nInfra-Version: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            common::VERSION
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let trickle = tokio::spawn(async move {
        // A byte every half second, the first after half a second.
        // real time: the server's request timeout runs on tokio's timer,
        // not on the test clock; this is the slow client it cuts off.
        let mut pace = tokio::time::interval(Duration::from_millis(500));
        pace.tick().await;
        for _ in 0..30 {
            pace.tick().await;
            if wr.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), rd.read_to_end(&mut got)).await;
    trickle.abort();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// Whether the server closes `tls` within `within` (reading whatever it sends).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(mut tls: S, within: Duration) -> bool {
    let mut buf = Vec::new();
    tokio::time::timeout(within, tls.read_to_end(&mut buf))
        .await
        .is_ok()
}

/// A connection that finishes TLS and then says nothing, or only begins
/// HTTP/2's preface, has the header-read timeout for its first request,
/// whatever the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_a_request_is_cut_off() {
    let s = start(&["--header-read-timeout", "2s", "--idle-timeout", "120s"]).await;
    let tls = tls_to(&s, "127.0.0.1", b"").await.unwrap();
    let t = Instant::now();
    assert!(
        closed_within(tls, Duration::from_secs(15)).await,
        "still open after 15 s"
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

    let mut tls = tls_alpn(&s, "127.0.0.1", b"", &[b"h2"]).await.unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let t = Instant::now();
    assert!(
        closed_within(tls, Duration::from_secs(15)).await,
        "still open after 15 s"
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

/// An HTTP/2 connection whose pings are answered (both ways) but that asks
/// for nothing is closed after the idle timeout: a few such connections
/// would otherwise hold every slot of --max-connections for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_pings_do_not_keep_an_idle_connection_open() {
    let s = start(&["--idle-timeout", "3s", "--max-connections", "2"]).await;
    let mut conns = Vec::new();
    for _ in 0..2 {
        let tls = tls_alpn(&s, "127.0.0.1", b"", &[b"h2"]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Duration::from_millis(300))
                .keep_alive_while_idle(true)
                .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(
                    tls,
                ))
                .await
                .unwrap();
        let done = tokio::spawn(conn);
        let req = axum::http::Request::get(format!("{}/healthz", s.url))
            .body(http_body_util::Empty::new())
            .unwrap();
        assert_eq!(send.send_request(req).await.unwrap().status(), 200);
        conns.push((send, done));
    }
    // Both slots are taken: a third client is turned away.
    let third = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(s.data_dir.join("tls.crt")).unwrap())
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(
        third
            .get(format!("{}/healthz", s.url))
            .send()
            .await
            .is_err()
    );
    // Idle but for pings: closed after about 3 s, and the slots free again.
    let t = Instant::now();
    for (_send, done) in conns {
        let r = tokio::time::timeout(Duration::from_secs(20), done).await;
        assert!(
            r.is_ok(),
            "an idle HTTP/2 connection is still open after 20 s"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let resp = third
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A client that asks for large answers and reads none of them holds no
/// connection for ever: once the server's writes wait on it with no
/// request of its in progress, or for the idle timeout on one answer, the
/// connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_cut_off() {
    let s = start(&["--idle-timeout", "3s"]).await;
    // Big enough to fill the socket buffers: many users, listed at once.
    for i in 0..400 {
        s.ok(
            "POST",
            "/api/users",
            Some(json!({"name": format!("user-{i:04}-{}", "x".repeat(200))})),
            201,
        )
        .await;
    }
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(addr(&s)).await.unwrap();
    let mut tls = tls_over(&s, tcp, &[]).await.unwrap();
    let mut req = String::new();
    // More than the kernel's send buffer can hold (4 MiB at most).
    for _ in 0..80 {
        req.push_str(&format!(
            "GET /api/users?limit=1000 HTTP/1.1\r\nHost: x\r\nInfra-Version: {}\r\n\
             Authorization: Bearer {}\r\n\r\n",
            common::VERSION,
            common::ADMIN_KEY
        ));
    }
    tls.write_all(req.as_bytes()).await.unwrap();
    // Read nothing for a while (real time: the server's timer), then see
    // whether the server gave up on this client.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "still open: the server waits on a client that reads nothing"
    );
    let answers = String::from_utf8_lossy(&buf)
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        answers < 80,
        "the client got all {answers} answers: nothing was held back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_and_bodies_are_bounded() {
    let s = start(&["--max-connections", "4"]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tls_to(&s, "127.0.0.1", b"").await.unwrap());
    }
    assert!(
        tls_to(&s, "127.0.0.1", b"").await.is_err(),
        "the fifth connection is closed"
    );
    held.pop();
    // Once the server has seen that one close, a new one gets its place.
    let mut fifth = common::wait_for("a connection in the freed place", async || {
        tls_to(&s, "127.0.0.1", b"").await.ok()
    })
    .await;
    let answer = http1(
        &mut fifth,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    drop(fifth);

    // A 2 MiB body, on any route: 413. (A connection the server closes at
    // once, because it has not yet seen the ones above close, is tried again.)
    for path in ["/api/login", "/api/device", "/device", "/no/such/route"] {
        let resp = common::wait_for(format!("the server to take POST {path}"), async || match s
            .client
            .post(format!("{}{path}", s.url))
            .header("Infra-Version", common::VERSION)
            .header("Content-Type", "application/json")
            .body(vec![b' '; 2 * 1024 * 1024])
            .send()
            .await
        {
            Ok(resp) => Some(resp),
            Err(e) if e.is_connect() => None,
            Err(e) => panic!("POST {path}: {e}"),
        })
        .await;
        assert_eq!(resp.status(), 413, "{path}");
    }

    // The same with curl, over HTTP/2 (what curl speaks to https), and as
    // a chunked body that never says its length (HTTP/1.1): the client
    // sees the 413, not a stream reset or a 400.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 2 * 1024 * 1024]).unwrap();
    let curl = |path: &str, extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args(["--cacert", s.data_dir.join("tls.crt").to_str().unwrap()])
            .args(["-H", &format!("Infra-Version: {}", common::VERSION)])
            .args(["-H", "Content-Type: application/json"])
            .args(extra)
            .arg("--data-binary")
            .arg(format!("@{}", big.display()))
            .arg(format!("{}{path}", s.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for path in [
        "/api/login",
        "/api/v1/auth/oidc-auth/login",
        "/no/such/route",
    ] {
        assert_eq!(curl(path, &["--http2"]), "413 2", "{path}");
    }
    for path in ["/api/login", "/api/v1/auth/oidc-auth/login", "/api/device"] {
        assert_eq!(
            curl(path, &["--http1.1", "-H", "Transfer-Encoding: chunked"]),
            "413 1.1",
            "{path}"
        );
    }
}
