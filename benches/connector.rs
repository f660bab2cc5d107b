//! The connector's cost: requests per second and latency of `GET /version`
//! straight to a stand-in API server, through nginx as a plain reverse
//! proxy, and through `infra connector` (which also verifies the token and
//! rewrites the headers), all in one run.
//!
//!     benches/connector.sh        (installs nginx-light if missing, then runs this)
//!
//! Knobs: BENCH_SECONDS (default 5 per target), BENCH_CONCURRENCY (default 16).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "BenchKey01.BenchSecret0123456789abc";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_line(child: &mut Child, needle: &'static str) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = tx.send(line.clone());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no {needle:?} line"))
}

async fn load(
    client: reqwest::Client,
    url: String,
    bearer: Option<String>,
    concurrency: usize,
    secs: u64,
) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, bearer, done) =
            (client.clone(), url.clone(), bearer.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut req = client.get(&url);
                if let Some(b) = &bearer {
                    req = req.bearer_auth(b);
                }
                let resp = req.send().await.expect("request");
                assert!(resp.status().is_success(), "{url}: {}", resp.status());
                let _ = resp.bytes().await;
                lat.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let start = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        pct(0.5),
        pct(0.99),
    )
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is not installed: run benches/connector.sh (it installs nginx-light)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        // The stand-in API server.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(d.join("kube.crt"), cert.pem()).unwrap();
        std::fs::write(d.join("kube.key"), key.serialize_pem()).unwrap();
        std::fs::write(d.join("token"), "sa-token").unwrap();
        let app = axum::Router::new().route(
            "/version",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})) }),
        );
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.pem().into_bytes(), key.serialize_pem().into_bytes()).await.unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let standin = format!("https://127.0.0.1:{}", l.local_addr().unwrap().port());
        tokio::spawn(async move { axum_server::from_tcp_rustls(l, tls).unwrap().serve(app.into_make_service()).await.unwrap() });

        // The infra server, a user with a grant, and a token for them.
        let mut server = Command::new(env!("CARGO_BIN_EXE_infra"))
            .args(["server", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir"])
            .arg(d.join("server"))
            .env("INFRA_ADMIN_ACCESS_KEY", KEY)
            .env("INFRA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let line = wait_for_line(&mut server, "listening on");
        let _server = Kill(server);
        let server_url = line.split("listening on ").nth(1).unwrap().trim().to_string();
        let server_pem = std::fs::read(d.join("server/tls.crt")).unwrap();
        let api = reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&server_pem).unwrap()).build().unwrap();
        let call = |method: reqwest::Method, path: &str, key: &str, body: serde_json::Value| {
            api.request(method, format!("{server_url}{path}")).header("Infra-Version", env!("CARGO_PKG_VERSION")).bearer_auth(key.to_string()).json(&body).send()
        };
        let user: serde_json::Value = call(reqwest::Method::POST, "/api/users", KEY, serde_json::json!({"name": "bench"})).await.unwrap().json().await.unwrap();
        call(reqwest::Method::POST, "/api/grants", KEY, serde_json::json!({"user": user["id"], "destination": "prod", "role": "view"})).await.unwrap();
        let ukey: serde_json::Value = call(reqwest::Method::POST, "/api/access-keys", KEY, serde_json::json!({"userID": user["id"]})).await.unwrap().json().await.unwrap();
        let ckey: serde_json::Value = call(reqwest::Method::POST, "/api/access-keys", KEY, serde_json::json!({"connector": true, "destination": "prod"})).await.unwrap().json().await.unwrap();

        // The connector.
        let cport = free_port();
        let mut connector = Command::new(env!("CARGO_BIN_EXE_infra"))
            .args(["connector", "--server", &server_url, "--name", "prod", "--sync-rbac", "false"])
            .args(["--listen", &format!("127.0.0.1:{cport}"), "--kube-api", &standin])
            .arg("--kube-token-file").arg(d.join("token"))
            .arg("--kube-ca-file").arg(d.join("kube.crt"))
            .arg("--server-ca-file").arg(d.join("server/tls.crt"))
            .arg("--data-dir").arg(d.join("connector"))
            .env("INFRA_CONNECTOR_ACCESS_KEY", ckey["accessKey"].as_str().unwrap())
            .env("INFRA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_line(&mut connector, "listening on");
        let _connector = Kill(connector);
        let token: serde_json::Value = call(reqwest::Method::POST, "/api/tokens", ukey["accessKey"].as_str().unwrap(), serde_json::json!({"destination": "prod"})).await.unwrap().json().await.unwrap();
        let token = token["token"].as_str().unwrap().to_string();
        let connector_ca = std::fs::read(d.join("connector/ca.crt")).unwrap();

        // nginx as a plain TLS reverse proxy with upstream keep-alive.
        let nport = free_port();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/nginx-error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  upstream kube {{ server 127.0.0.1:{sport}; keepalive 64; }}\n\
               server {{\n    listen 127.0.0.1:{nport} ssl;\n    ssl_certificate {d}/kube.crt;\n    ssl_certificate_key {d}/kube.key;\n\
                 location / {{\n      proxy_pass https://kube;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                   proxy_ssl_verify off;\n      proxy_ssl_session_reuse on;\n    }}\n  }}\n}}\n",
            d = d.display(),
            sport = standin.rsplit(':').next().unwrap(),
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let nginx = Command::new(nginx).arg("-p").arg(d).arg("-c").arg(d.join("nginx.conf")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let _nginx = Kill(nginx);
        tokio::time::sleep(Duration::from_millis(500)).await;

        let trusting = |pem: &[u8]| {
            reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
                .http1_only()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap()
        };
        let kube_pem = std::fs::read(d.join("kube.crt")).unwrap();
        println!("GET /version, {concurrency} concurrent clients, {secs}s each, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        let (drps, d50, d99) = load(trusting(&kube_pem), format!("{standin}/version"), None, concurrency, secs).await;
        println!("{:<22} {drps:>8.0} req/s   p50 {d50:>9.2?}   p99 {d99:>9.2?}", "direct to stand-in");
        let (nrps, n50, n99) = load(trusting(&kube_pem), format!("https://127.0.0.1:{nport}/version"), None, concurrency, secs).await;
        println!("{:<22} {nrps:>8.0} req/s   p50 {n50:>9.2?}   p99 {n99:>9.2?}   added p50 {:>9.2?} p99 {:>9.2?}", "through nginx", n50.saturating_sub(d50), n99.saturating_sub(d99));
        let (crps, c50, c99) = load(trusting(&connector_ca), format!("https://127.0.0.1:{cport}/version"), Some(token), concurrency, secs).await;
        println!("{:<22} {crps:>8.0} req/s   p50 {c50:>9.2?}   p99 {c99:>9.2?}   added p50 {:>9.2?} p99 {:>9.2?}", "through the connector", c50.saturating_sub(d50), c99.saturating_sub(d99));
        let ratio = c50.saturating_sub(d50).as_secs_f64() / n50.saturating_sub(d50).as_secs_f64().max(1e-6);
        println!("connector added median latency / nginx's: {ratio:.2} (target <= 1.2)");
    });
}
