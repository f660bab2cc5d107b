//! Requests per second of the API's busiest calls, on SQLite and on
//! PostgreSQL: `POST /api/login` with an access key (a key exchange: one
//! verification and one insert), an authenticated `GET /api/grants`, and
//! `POST /api/tokens` (what kubectl's exec plugin asks for on a cache miss:
//! a cluster token for a user holding a few grants, directly and through
//! groups).
//!
//! Run it through tests/run.sh, which starts the PostgreSQL it needs:
//!
//!     INFRA_TEST_CMD='cargo bench --bench api' INFRA_TEST_NO_LINT=1 tests/run.sh
//!
//! Knobs: BENCH_SECONDS (default 5 per case), BENCH_CONCURRENCY (default 16),
//! BENCH_ONLY (run only the cases whose name holds this text: `login`,
//! `grants`, `tokens`, `sqlite`, `postgres`), BENCH_INFRA_BIN (the server
//! binary to run, default this build's: to compare two builds).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "BenchKey01.BenchSecret0123456789abc";

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
    /// HTTP/1.1 only, a connection per concurrent client.
    http1: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(db: Option<String>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let bin =
        std::env::var("BENCH_INFRA_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_infra").into());
    let mut cmd = Command::new(bin);
    cmd.args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--data-dir",
    ])
    .arg(dir.path())
    .env("INFRA_ADMIN_ACCESS_KEY", KEY)
    .env("INFRA_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(db) = &db {
        cmd.arg("--db").arg(db);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("listening on ").nth(1) {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server start");
    let pem = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let cert = reqwest::Certificate::from_pem(&pem).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(cert.clone())
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let http1 = reqwest::Client::builder()
        .add_root_certificate(cert)
        .pool_max_idle_per_host(64)
        .http1_only()
        .build()
        .unwrap();
    Server {
        child,
        url,
        _dir: dir,
        client,
        http1,
    }
}

async fn postgres_db() -> String {
    let base = std::env::var("INFRA_TEST_POSTGRES_URL")
        .expect("INFRA_TEST_POSTGRES_URL is not set: run this bench through tests/run.sh");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    let name = format!("infra_bench_{}", std::process::id());
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Runs `make` from `concurrency` tasks for `secs`; returns (rps, p50, p99).
async fn load<F, Fut>(concurrency: usize, secs: u64, make: F) -> (f64, Duration, Duration)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send,
{
    let make = Arc::new(make);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(
        std::collections::BTreeMap::<u16, u64>::new(),
    ));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (make, done, failed) = (make.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = make().await;
                lat.push(t.elapsed());
                if (200..300).contains(&status) {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    *failed.lock().unwrap().entry(status).or_default() += 1;
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "some requests failed (status: count; 0 is no response): {failed:?}"
    );
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        pct(0.5),
        pct(0.99),
    )
}

/// Whether the case `name` runs, by BENCH_ONLY.
fn wanted(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| name.contains(&only))
}

async fn bench(label: &str, db: Option<String>, concurrency: usize, secs: u64) {
    if !["login", "grants", "tokens"]
        .iter()
        .any(|c| wanted(&format!("{label} {c}")))
    {
        return;
    }
    let s = Arc::new(start(db).await);
    let version = env!("CARGO_PKG_VERSION");
    // A user with grants to read, through a group as well.
    let post = |path: &str, body: serde_json::Value| {
        s.client
            .post(format!("{}{path}", s.url))
            .header("Infra-Version", version)
            .bearer_auth(KEY)
            .json(&body)
            .send()
    };
    let user: serde_json::Value = post("/api/users", serde_json::json!({"name": "bench"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uid = user["id"].as_str().unwrap().to_string();
    for d in ["prod", "staging", "dev"] {
        post(
            "/api/grants",
            serde_json::json!({"user": uid, "destination": d, "role": "edit"}),
        )
        .await
        .unwrap();
    }
    // Two groups the user is in, one with a grant of its own.
    for (g, grant) in [("bench-team", Some("prod")), ("bench-oncall", None)] {
        let group: serde_json::Value = post("/api/groups", serde_json::json!({"name": g}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let gid = group["id"].as_str().unwrap().to_string();
        let r = s
            .client
            .patch(format!("{}/api/groups/{gid}/users", s.url))
            .header("Infra-Version", version)
            .bearer_auth(KEY)
            .json(&serde_json::json!({"usersToAdd": [uid]}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        if let Some(d) = grant {
            post(
                "/api/grants",
                serde_json::json!({"group": gid, "destination": d, "role": "view"}),
            )
            .await
            .unwrap();
        }
    }
    let key: serde_json::Value = post(
        "/api/access-keys",
        serde_json::json!({"userID": uid, "name": "bench"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let user_key = Arc::new(key["accessKey"].as_str().unwrap().to_string());

    if wanted(&format!("{label} login")) {
        let (s1, k1) = (s.clone(), user_key.clone());
        let (rps, p50, p99) = load(concurrency, secs, move || {
            let (s, k) = (s1.clone(), k1.clone());
            async move {
                s.client
                    .post(format!("{}/api/login", s.url))
                    .header("Infra-Version", version)
                    .json(&serde_json::json!({"accessKey": *k}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .await;
        println!(
            "{label:<10} POST /api/login (access key)  {rps:>8.0} req/s   p50 {p50:>8.2?}   p99 {p99:>8.2?}"
        );
    }

    if wanted(&format!("{label} grants")) {
        let (s2, k2) = (s.clone(), user_key.clone());
        let (rps, p50, p99) = load(concurrency, secs, move || {
            let (s, k) = (s2.clone(), k2.clone());
            async move {
                s.client
                    .get(format!("{}/api/grants", s.url))
                    .header("Infra-Version", version)
                    .bearer_auth(&*k)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .await;
        println!(
            "{label:<10} GET /api/grants (authed)      {rps:>8.0} req/s   p50 {p50:>8.2?}   p99 {p99:>8.2?}"
        );
    }

    // Each `infra tokens create` of kubectl's exec plugin is a process of
    // its own with a connection of its own, so these clients keep one
    // HTTP/1.1 connection each rather than share one HTTP/2 connection
    // (which, past a few thousand POSTs a second, hyper's h2 ends with
    // GOAWAY "too_many_internal_resets").
    if wanted(&format!("{label} tokens")) {
        let (s3, k3) = (s.clone(), user_key.clone());
        let (rps, p50, p99) = load(concurrency, secs, move || {
            let (s, k) = (s3.clone(), k3.clone());
            async move {
                s.http1
                    .post(format!("{}/api/tokens", s.url))
                    .header("Infra-Version", version)
                    .bearer_auth(&*k)
                    .json(&serde_json::json!({"destination": "prod"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or_else(|e| {
                        eprintln!("POST /api/tokens: {e:?}");
                        0
                    })
            }
        })
        .await;
        println!(
            "{label:<10} POST /api/tokens (mint)       {rps:>8.0} req/s   p50 {p50:>8.2?}   p99 {p99:>8.2?}"
        );
    }
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "infra API benchmark: {concurrency} concurrent clients, {secs}s per case, {} cores",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        bench("sqlite", None, concurrency, secs).await;
        if ["login", "grants", "tokens"]
            .iter()
            .any(|c| wanted(&format!("postgres {c}")))
        {
            let db = postgres_db().await;
            bench("postgres", Some(db), concurrency, secs).await;
        }
    });
}
