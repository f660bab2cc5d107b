//! How the server carries many connectors. Run by hand, not in CI:
//!
//!     cargo bench --bench scale -- --connectors 100,300,1000
//!     cargo bench --bench scale -- --db postgres --replicas 1,2 --connectors 100,1000
//!
//! (`cargo bench` builds this and the `infra` binary it starts with the
//! release profile.) For every replica count K and every N, on fresh
//! servers and a fresh database, it starts K `infra server` processes (with
//! `--db postgres`: one throwaway PostgreSQL cluster for the whole run,
//! started with initdb/pg_ctl on 127.0.0.1 as tests/run.sh does, one
//! database per case; the replicas share it, the first one's root key, TLS
//! certificate and URL), makes N connector keys, and runs N simulated
//! connectors, spread round-robin over the replicas, each doing what
//! `infra connector` does (src/connector/mod.rs `run` and `heartbeat`,
//! src/connector/rbac.rs `sync_forever`):
//!
//! 1. registers: `POST /api/destinations {name, url, ca}` with its connector
//!    key; then `GET /.well-known/openid-configuration` and
//!    `GET /.well-known/jwks.json`;
//! 2. every 5 minutes heartbeats (the same POST) and fetches the JWKS again
//!    (its max-age has run out by then); the first heartbeats are spread
//!    evenly over the period, as a fleet started at different times would;
//! 3. reads its grants, `GET /api/grants?destination=NAME&limit=1000`, then
//!    long-polls with `&lastUpdateIndex=I` (I from the `Last-Update-Index`
//!    header) forever; after each answer it reports the grants it had not
//!    reported yet as applied (`POST /api/grants/states`), as it does once
//!    Kubernetes RBAC is reconciled (no Kubernetes here), and polls again.
//!
//! Measured:
//!
//! - **at rest**: once every connector waits in its long poll, utime+stime
//!   from /proc/PID/stat over `--idle-secs` (heartbeats keep coming), as %
//!   of one core: each server, and the sum over every PostgreSQL process
//!   (the postmaster and its children); the servers' RSS (VmRSS) then.
//!   The long polls all start within a second or so and last 30 s: with
//!   `--idle-secs` below 28 the window holds no renewal of them (polls/s 0),
//!   with 30 or more each connector's renewal once per 30 s is in it.
//! - **heartbeat** p50/p99: the time of the heartbeat POST, over the run.
//! - **propagation**: `--changes` times, an admin adds a grant on one
//!   destination through replica 1 (the destination's connector waits on
//!   replica 2 when there are two or more); from the moment the POST is
//!   sent, the time until each waiting long poll answers with a new index.
//!   "dest" is the changed destination's own connector; "all answers" every
//!   long poll the change woke (p50/p99/max over changes × woken); "last"
//!   the time until the last of the N answered (p50/max over changes, only
//!   changes that woke all N); "woken" the fewest the change woke (today
//!   every poller: the server keeps one change counter for all grants).
//!
//! The simulated connectors share a few HTTP clients (`--per-client`
//! connectors each, default 50): each client keeps one HTTP/2 connection per
//! replica, as the real connector negotiates HTTP/2 by ALPN; the server
//! allows 128 streams per connection and a connector can have two in
//! flight (long poll and heartbeat). `--per-client 1` gives every connector
//! its own connection, as a real fleet has (more bench CPU, more sockets).
//!
//! Options (defaults in brackets): --connectors N,N… [100]; --db
//! sqlite|postgres [sqlite]; --replicas K,K… [1] (more than 1 needs
//! postgres); --idle-secs S [20]; --changes C [20]; --per-client M [50];
//! --ramp R, registrations in flight while connectors start [64];
//! --herd, start every connector's long poll at once, as after a server
//! restart (by default each begins at its own moment within the first
//! 30 s, as in a fleet whose connectors started over time: the steady
//! state);
//! --pg-bin DIR, where initdb, pg_ctl and postgres are [the newest
//! /usr/lib/postgresql/*/bin, else the directory of `initdb` on PATH];
//! --pg-user USER, who runs PostgreSQL when this runs as root [infra-test
//! if it exists, else nobody].
//!
//! Everything it starts is stopped on success, panic, Ctrl-C and SIGTERM
//! (the servers also die with the bench on SIGKILL: PR_SET_PDEATHSIG; a
//! PostgreSQL cluster left by a SIGKILL is in /tmp/infra-scale-pg-*), and
//! its temporary directories removed. The numbers are only as good as the
//! machine is quiet: "box%" is the whole machine's busy share meanwhile. It raises its RLIMIT_NOFILE soft limit
//! to the hard one (the servers inherit it).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infra::api::{
    CreateDestinationRequest, Grant, GrantStateReport, GrantStatesRequest,
    LAST_UPDATE_INDEX_HEADER, ListResponse, MAX_PAGE_LIMIT, VERSION_HEADER, version::CURRENT,
};
use infra::client::enc;
use serde_json::{Value, json};

const KEY: &str = "BenchKey01.BenchSecret0123456789abc";
/// `--heartbeat`'s default in `infra connector` while it long-polls its
/// grants (the long poll tells the server it is alive). Each heartbeat is
/// followed by a JWKS fetch, as the server's max-age (300 s) has run out by
/// then.
const HEARTBEAT: Duration = Duration::from_secs(300);
/// `--rbac-poll`'s default: the wait after a failed read of the grants.
const RETRY: Duration = Duration::from_secs(10);
/// The server's default `--max-connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;

// ------------------------------------------------------------------ options

#[derive(Clone, Copy, PartialEq)]
enum Db {
    Sqlite,
    Postgres,
}

struct Opts {
    connectors: Vec<usize>,
    db: Db,
    replicas: Vec<usize>,
    idle_secs: u64,
    changes: usize,
    per_client: usize,
    ramp: usize,
    herd: bool,
    pg_bin: Option<PathBuf>,
    pg_user: Option<String>,
}

const USAGE: &str = "usage: cargo bench --bench scale -- [--connectors N,N…] [--db sqlite|postgres] \
[--replicas K,K…] [--idle-secs S] [--changes C] [--per-client M] [--ramp R] [--herd] [--pg-bin DIR] [--pg-user USER]";

fn die(msg: &str) -> ! {
    eprintln!("scale: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn list_of(flag: &str, v: &str) -> Vec<usize> {
    v.split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse()
                .ok()
                .filter(|&n: &usize| n >= 1)
                .unwrap_or_else(|| die(&format!("{flag}: positive numbers, comma-separated")))
        })
        .collect()
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            connectors: vec![100],
            db: Db::Sqlite,
            replicas: vec![1],
            idle_secs: 20,
            changes: 20,
            per_client: 50,
            ramp: 64,
            herd: false,
            pg_bin: None,
            pg_user: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            // `cargo bench` passes --bench to every bench binary.
            if flag == "--herd" {
                o.herd = true;
                continue;
            }
            if flag == "--bench" {
                continue;
            }
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .unwrap_or_else(|| die(&format!("{flag} needs a value")))
            };
            let num = |flag: &str, v: String| -> u64 {
                v.parse()
                    .unwrap_or_else(|_| die(&format!("{flag}: a number, not {v:?}")))
            };
            match flag.as_str() {
                "--connectors" => o.connectors = list_of(&flag, &value()),
                "--replicas" => o.replicas = list_of(&flag, &value()),
                "--db" => {
                    o.db = match value().as_str() {
                        "sqlite" => Db::Sqlite,
                        "postgres" | "postgresql" | "pg" => Db::Postgres,
                        v => die(&format!("--db: sqlite or postgres, not {v:?}")),
                    }
                }
                "--idle-secs" => o.idle_secs = num(&flag, value()).max(1),
                "--changes" => o.changes = num(&flag, value()) as usize,
                "--per-client" => o.per_client = (num(&flag, value()) as usize).max(1),
                "--ramp" => o.ramp = (num(&flag, value()) as usize).max(1),
                "--pg-bin" => o.pg_bin = Some(PathBuf::from(value())),
                "--pg-user" => o.pg_user = Some(value()),
                _ => die(&format!("unknown argument {a:?}")),
            }
        }
        if o.db == Db::Sqlite && o.replicas.iter().any(|&k| k > 1) {
            die("more than one replica needs --db postgres (replicas share one database)");
        }
        o
    }
}

// ------------------------------------------------------------------ cleanup

/// What must not outlive the bench, for the signal handler (Drop does it
/// on the normal and the panic paths).
static SERVER_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static PG_RUNNING: Mutex<Option<PgStop>> = Mutex::new(None);
static TEMP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

#[derive(Clone)]
struct PgStop {
    pg_ctl: PathBuf,
    data: PathBuf,
    user: Option<String>,
}

impl PgStop {
    fn stop(&self) {
        let mut c = as_user(self.user.as_deref(), &self.pg_ctl);
        c.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status();
        // pg_ctl failed or timed out: the postmaster's pid is the first line.
        if let Some(pid) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
        {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn emergency_cleanup() {
    for &pid in lock(&SERVER_PIDS).iter() {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    if let Some(pg) = lock(&PG_RUNNING).take() {
        pg.stop();
    }
    for d in lock(&TEMP_DIRS).iter() {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    lock(&TEMP_DIRS).push(d.path().to_path_buf());
    d
}

// ------------------------------------------------------------------ /proc

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn rss_mib(pid: u32) -> f64 {
    status_field(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0
}

/// `ppid` and the processes whose parent it is.
fn family(ppid: u32) -> Vec<u32> {
    let mut pids = vec![ppid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                && status_field(pid, "PPid:") == Some(u64::from(ppid))
            {
                pids.push(pid);
            }
        }
    }
    pids
}

fn family_ticks(ppid: Option<u32>) -> BTreeMap<u32, u64> {
    ppid.map(family)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| cpu_ticks(p).map(|t| (p, t)))
        .collect()
}

/// Busy and total jiffies of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Raises RLIMIT_NOFILE's soft limit to the hard one; returns it.
fn raise_nofile() -> u64 {
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        r.rlim_cur
    }
}

// ------------------------------------------------------------------ PostgreSQL

/// A throwaway cluster on 127.0.0.1, trust auth, fsync off (as tests/run.sh).
struct Pg {
    _dir: tempfile::TempDir,
    stop: PgStop,
    /// `postgres://infra_bench@127.0.0.1:PORT/`
    base: String,
    postmaster: u32,
}

impl Drop for Pg {
    fn drop(&mut self) {
        lock(&PG_RUNNING).take();
        self.stop.stop();
    }
}

fn find_pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| d.join(b).exists())
        })
        .collect();
    // The newest major version (numeric order).
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(d) = dirs.pop() {
        return Some(d);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .map(|d| {
            std::fs::canonicalize(d.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(d)
        })
}

fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn user_exists(u: &str) -> bool {
    Command::new("id")
        .arg(u)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_postgres(o: &Opts) -> Pg {
    let bin = o.pg_bin.clone().or_else(find_pg_bin).unwrap_or_else(|| {
        die("no initdb/pg_ctl/postgres found: install postgresql or give --pg-bin DIR")
    });
    // initdb and postgres refuse to run as root.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let user = root.then(|| {
        o.pg_user.clone().unwrap_or_else(|| {
            if user_exists("infra-test") {
                "infra-test".into()
            } else {
                "nobody".into()
            }
        })
    });
    let dir = temp_dir("infra-scale-pg-");
    let pg = dir.path().join("pg");
    std::fs::create_dir(&pg).unwrap();
    if let Some(u) = &user {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ok = Command::new("chown")
            .arg(format!("{u}:"))
            .arg(&pg)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot chown {} to {u}", pg.display());
    }
    let data = pg.join("data");
    let sock = pg.join("sock");
    let log = pg.join("server.log");
    let out = as_user(user.as_deref(), &bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "infra_bench",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .current_dir(&pg)
        .output()
        .expect("initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = as_user(user.as_deref(), Path::new("mkdir"))
        .args(["-m", "700"])
        .arg(&sock)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot make {}", sock.display());
    let stop = PgStop {
        pg_ctl: bin.join("pg_ctl"),
        data: data.clone(),
        user: user.clone(),
    };
    for _ in 0..5 {
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 300\nshared_buffers = 128MB\nlog_min_messages = warning\n",
            sock.display()
        );
        // Written through the user that owns the data directory.
        let mut tee = as_user(user.as_deref(), Path::new("tee"))
            .arg(data.join("postgresql.auto.conf"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut tee.stdin.take().unwrap(), conf.as_bytes()).unwrap();
        assert!(
            tee.wait().unwrap().success(),
            "cannot write postgresql.auto.conf"
        );
        *lock(&PG_RUNNING) = Some(stop.clone());
        let started = as_user(user.as_deref(), &bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .current_dir(&pg)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if started {
            let postmaster = std::fs::read_to_string(data.join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next()?.trim().parse().ok())
                .expect("postmaster.pid");
            let version = Command::new(bin.join("postgres"))
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            eprintln!(
                "{version} on 127.0.0.1:{port} (pid {postmaster}, {})",
                bin.display()
            );
            return Pg {
                _dir: dir,
                stop,
                base: format!("postgres://infra_bench@127.0.0.1:{port}/postgres"),
                postmaster,
            };
        }
        lock(&PG_RUNNING).take();
        eprintln!("postgres did not start on port {port}, trying another");
    }
    panic!(
        "could not start postgres: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

async fn create_db(base: &str, name: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let mut url = url::Url::parse(base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

async fn drop_db(base: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

// ------------------------------------------------------------------ servers

struct Server {
    child: Child,
    pid: u32,
    url: String,
    dir: tempfile::TempDir,
    /// Warnings and errors the server logged: count and the first few.
    log: Arc<Mutex<(u64, Vec<String>)>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        lock(&SERVER_PIDS).retain(|&p| p != self.pid);
    }
}

fn start_server(db: Option<&str>, extra: &[String]) -> Server {
    let dir = temp_dir("infra-scale-server-");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_infra"));
    cmd.args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--data-dir",
    ])
    .arg(dir.path())
    .args(extra)
    .env("INFRA_ADMIN_ACCESS_KEY", KEY)
    .env("INFRA_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(db) = db {
        cmd.arg("--db").arg(db);
    }
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start infra server");
    let pid = child.id();
    lock(&SERVER_PIDS).push(pid);
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new((0u64, Vec::new())));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut first = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("listening on ").nth(1) {
                let _ = tx.send(Ok(url.trim().to_string()));
            } else if line.contains("WARN") || line.contains("ERROR") {
                let mut l = lock(&log2);
                l.0 += 1;
                if l.1.len() < 5 {
                    l.1.push(line);
                }
            } else if first.len() < 20 {
                first.push(line);
            }
        }
        let _ = tx.send(Err(first.join("\n")));
    });
    let url = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(url)) => url,
        Ok(Err(out)) => panic!("infra server exited before listening:\n{out}"),
        Err(_) => panic!("infra server did not listen within 60 s"),
    };
    Server {
        child,
        pid,
        url,
        dir,
        log,
    }
}

// ------------------------------------------------------------------ clients

fn tls_config(ca_pem: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in infra::api::certs::pem_certs(ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What reqwest offers by itself (with its http2 feature, as infra builds it).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// As `infra::client::Client::new` builds it (user agent, timeouts).
fn http_client(tls: &rustls::ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .user_agent(concat!("infra/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn api(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
) -> reqwest::RequestBuilder {
    http.request(method, url)
        .header(VERSION_HEADER, CURRENT)
        .bearer_auth(key)
}

/// An admin call that must succeed; its JSON answer.
async fn admin(http: &reqwest::Client, base: &str, method: &str, path: &str, body: Value) -> Value {
    let method: reqwest::Method = method.parse().unwrap();
    let mut req = api(http, method.clone(), format!("{base}{path}"), KEY);
    if method != reqwest::Method::DELETE {
        req = req.json(&body);
    }
    for attempt in 0.. {
        match req.try_clone().unwrap().send().await {
            Ok(r) if r.status().is_success() => {
                return r.json().await.unwrap_or(Value::Null);
            }
            Ok(r) if attempt < 3 && r.status().is_server_error() => {}
            Ok(r) => {
                let s = r.status();
                panic!(
                    "{method} {path}: {s}: {}",
                    r.text().await.unwrap_or_default()
                )
            }
            Err(e) if attempt < 3 => eprintln!("  {method} {path}: {e}; again"),
            Err(e) => panic!("{method} {path}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    unreachable!()
}

/// Runs `f(i)` for i in 0..n, `width` at a time; the answers in order.
async fn parallel<F, Fut, T>(n: usize, width: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures::StreamExt;
    futures::stream::iter((0..n).map(f))
        .buffered(width)
        .collect()
        .await
}

// ------------------------------------------------------------------ connectors

struct Stats {
    epoch: Instant,
    heartbeat: Mutex<Vec<Duration>>,
    errors: Mutex<BTreeMap<String, u64>>,
    error_samples: Mutex<Vec<String>>,
    polls: AtomicU64,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            epoch: Instant::now(),
            heartbeat: Mutex::default(),
            errors: Mutex::default(),
            error_samples: Mutex::default(),
            polls: AtomicU64::new(0),
        }
    }
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    fn error(&self, what: &str, detail: String) {
        *lock(&self.errors).entry(what.into()).or_default() += 1;
        let mut s = lock(&self.error_samples);
        if s.len() < 5 {
            s.push(format!("{what}: {detail}"));
        }
    }
}

/// What the coordinator sees of one simulated connector.
struct Conn {
    name: String,
    key: String,
    base: String,
    replica: usize,
    http: reqwest::Client,
    /// The last `Last-Update-Index`; -1 before the first answer.
    index: AtomicI64,
    /// When `index` last changed, and when a poll last answered (ns since the epoch).
    changed_ns: AtomicU64,
    returned_ns: AtomicU64,
    /// A long poll (with an index) is in flight.
    polling: AtomicBool,
    /// Registered, and not given up.
    alive: AtomicBool,
    /// The grant ids of the last answer.
    grants: Mutex<Vec<String>>,
}

async fn run_connector(
    c: Arc<Conn>,
    stats: Arc<Stats>,
    ca: Arc<String>,
    ramp: Arc<tokio::sync::Semaphore>,
    phase: Duration,
    pause: Duration,
) {
    let http = &c.http;
    let registration = CreateDestinationRequest {
        name: c.name.clone(),
        url: format!("https://{}.scale.invalid:443", c.name),
        ca: (*ca).clone(),
    };
    let permit = ramp.acquire().await.unwrap();
    let r = api(
        http,
        reqwest::Method::POST,
        format!("{}/api/destinations", c.base),
        &c.key,
    )
    .json(&registration)
    .send()
    .await;
    match r {
        Ok(r) if r.status().is_success() => {
            let _ = r.bytes().await;
        }
        Ok(r) => {
            let s = r.status();
            stats.error(
                &format!("register {}", s.as_u16()),
                r.text().await.unwrap_or_default(),
            );
            return;
        }
        Err(e) => {
            stats.error("register transport", format!("{e:?}"));
            return;
        }
    }
    // learn_issuer, then the first JWKS fetch, as `run` does.
    for (what, path) in [
        ("discovery", "/.well-known/openid-configuration"),
        ("jwks", "/.well-known/jwks.json"),
    ] {
        match http.get(format!("{}{path}", c.base)).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
            }
            Ok(r) => stats.error(&format!("{what} {}", r.status().as_u16()), String::new()),
            Err(e) => stats.error(&format!("{what} transport"), format!("{e:?}")),
        }
    }
    drop(permit);
    c.alive.store(true, Ordering::Release);
    tokio::join!(
        heartbeat(&c, &stats, &registration, phase),
        sync(&c, &stats, pause)
    );
}

/// `heartbeat` in src/connector/mod.rs: re-register, then refresh the JWKS.
async fn heartbeat(
    c: &Conn,
    stats: &Stats,
    registration: &CreateDestinationRequest,
    phase: Duration,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, HEARTBEAT);
    loop {
        tick.tick().await;
        let t = Instant::now();
        let r = api(
            &c.http,
            reqwest::Method::POST,
            format!("{}/api/destinations", c.base),
            &c.key,
        )
        .json(registration)
        .send()
        .await;
        match r {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                lock(&stats.heartbeat).push(t.elapsed());
            }
            Ok(r) => {
                let s = r.status();
                stats.error(
                    &format!("heartbeat {}", s.as_u16()),
                    r.text().await.unwrap_or_default(),
                )
            }
            Err(e) => stats.error("heartbeat transport", format!("{e:?}")),
        }
        match c
            .http
            .get(format!("{}/.well-known/jwks.json", c.base))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
            }
            Ok(r) => stats.error(&format!("jwks {}", r.status().as_u16()), String::new()),
            Err(e) => stats.error("jwks transport", format!("{e:?}")),
        }
    }
}

/// `sync_forever` in src/connector/rbac.rs, without Kubernetes: every grant
/// on the destination is applied at once.
/// `pause`: before the first long poll (the connector's phase in the
/// fleet's 30 s rhythm).
async fn sync(c: &Conn, stats: &Stats, pause: Duration) {
    let mut pause = Some(pause);
    let http = &c.http;
    let base = format!(
        "{}/api/grants?destination={}&limit={}",
        c.base,
        enc(&c.name),
        MAX_PAGE_LIMIT
    );
    let mut index: Option<String> = None;
    // As the connector does: the ETag of the grants held goes back in
    // If-None-Match, and an unchanged answer is a 304 without a list.
    let mut etag: Option<String> = None;
    let mut held: Vec<Grant> = Vec::new();
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        let url = match &index {
            Some(i) => format!("{base}&lastUpdateIndex={}", enc(i)),
            None => base.clone(),
        };
        c.polling.store(index.is_some(), Ordering::Release);
        let mut req = api(http, reqwest::Method::GET, url, &c.key);
        if let Some(t) = &etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, t);
        }
        let r = req.send().await;
        c.polling.store(false, Ordering::Release);
        let answer = match r {
            Ok(r) if r.status().is_success() || r.status().as_u16() == 304 => {
                let header = |name: &str| {
                    r.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from)
                };
                let (idx, tag) = (header(LAST_UPDATE_INDEX_HEADER), header("etag"));
                if r.status().as_u16() == 304 {
                    etag = tag;
                    Ok((
                        ListResponse {
                            count: held.len() as u64,
                            items: held.clone(),
                            page: 1,
                            limit: MAX_PAGE_LIMIT,
                            total_pages: 1,
                            total_count: held.len() as u64,
                        },
                        idx,
                    ))
                } else {
                    match r.json::<ListResponse<Grant>>().await {
                        Ok(list) => {
                            etag = tag;
                            held = list.items.clone();
                            Ok((list, idx))
                        }
                        Err(e) => Err(("poll body".to_string(), format!("{e:?}"))),
                    }
                }
            }
            Ok(r) => {
                let s = r.status();
                Err((
                    format!("poll {}", s.as_u16()),
                    r.text().await.unwrap_or_default(),
                ))
            }
            Err(e) => Err(("poll transport".to_string(), format!("{e:?}"))),
        };
        let (list, idx) = match answer {
            Ok(a) => a,
            Err((what, detail)) => {
                stats.error(&what, detail);
                tokio::time::sleep(RETRY).await;
                index = None;
                etag = None;
                continue;
            }
        };
        let now = stats.now_ns();
        let ids: Vec<String> = list.items.into_iter().map(|g| g.id).collect();
        *lock(&c.grants) = ids.clone();
        let i: i64 = idx.as_deref().and_then(|i| i.parse().ok()).unwrap_or(-1);
        if c.index.load(Ordering::Acquire) != i {
            c.changed_ns.store(now, Ordering::Release);
            c.index.store(i, Ordering::Release);
        }
        c.returned_ns.store(now, Ordering::Release);
        stats.polls.fetch_add(1, Ordering::Relaxed);
        // `report`: the states that changed since the last report.
        let new: Vec<GrantStateReport> = ids
            .iter()
            .filter(|id| !reported.contains(*id))
            .map(|id| GrantStateReport {
                grant_id: id.clone(),
                state: "applied".into(),
                message: String::new(),
            })
            .collect();
        reported.retain(|id| ids.contains(id));
        if !new.is_empty() {
            let req = GrantStatesRequest {
                destination: c.name.clone(),
                states: new,
            };
            let r = api(
                http,
                reqwest::Method::POST,
                format!("{}/api/grants/states", c.base),
                &c.key,
            )
            .json(&req)
            .send()
            .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    reported.extend(req.states.into_iter().map(|s| s.grant_id));
                }
                Ok(r) => {
                    let s = r.status();
                    stats.error(
                        &format!("report {}", s.as_u16()),
                        r.text().await.unwrap_or_default(),
                    )
                }
                Err(e) => stats.error("report transport", format!("{e:?}")),
            }
        }
        index = idx;
        if let Some(p) = pause.take() {
            tokio::time::sleep(p).await;
        }
    }
}

// ------------------------------------------------------------------ measuring

fn pct(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) if d.as_secs_f64() < 0.01 => format!("{:.1}", d.as_secs_f64() * 1000.0),
        Some(d) => format!("{:.0}", d.as_secs_f64() * 1000.0),
        None => "-".into(),
    }
}

/// Waits until every live connector has a long poll in flight and none
/// answered in the last 300 ms.
async fn settle(conns: &[Arc<Conn>], stats: &Stats, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let now = stats.now_ns();
        let quiet = conns
            .iter()
            .filter(|c| c.alive.load(Ordering::Acquire))
            .all(|c| {
                c.polling.load(Ordering::Acquire)
                    && now.saturating_sub(c.returned_ns.load(Ordering::Acquire)) > 300_000_000
            });
        if quiet {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Each live connector's index now (`None`: not live).
fn snapshot(conns: &[Arc<Conn>]) -> Vec<Option<i64>> {
    conns
        .iter()
        .map(|c| {
            c.alive
                .load(Ordering::Acquire)
                .then(|| c.index.load(Ordering::Acquire))
        })
        .collect()
}

/// How long after `t0` each connector saw its index change (`None`: not
/// within the wait). Waits until every live one did, or until `grace` after
/// connector `x` did, or `limit`.
async fn changed_since(
    conns: &[Arc<Conn>],
    base: &[Option<i64>],
    x: usize,
    t0: u64,
    grace: Duration,
    limit: Duration,
) -> Vec<Option<Duration>> {
    let start = Instant::now();
    let mut x_seen: Option<Instant> = None;
    loop {
        let seen: Vec<Option<Duration>> = conns
            .iter()
            .zip(base)
            .map(|(c, b)| {
                let b = (*b)?;
                (c.index.load(Ordering::Acquire) != b).then(|| {
                    Duration::from_nanos(c.changed_ns.load(Ordering::Acquire).saturating_sub(t0))
                })
            })
            .collect();
        if x_seen.is_none() && seen[x].is_some() {
            x_seen = Some(Instant::now());
        }
        let want = base.iter().flatten().count();
        let done = seen.iter().flatten().count() >= want
            || x_seen.is_some_and(|t| t.elapsed() >= grace)
            || start.elapsed() >= limit;
        if done {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[derive(Default)]
struct Row {
    label: String,
    wanted: usize,
    connected: usize,
    ramp: Duration,
    server_cpu: Vec<f64>,
    pg_cpu: Option<f64>,
    bench_cpu: f64,
    machine_busy: f64,
    rss: Vec<f64>,
    polls_per_s: f64,
    heartbeat: (Option<Duration>, Option<Duration>, usize),
    dest: (Option<Duration>, Option<Duration>),
    answers: (Option<Duration>, Option<Duration>, Option<Duration>),
    last: (Option<Duration>, Option<Duration>, usize),
    /// One change for every destination: p50, p99, max, answered, live.
    fanout: (
        Option<Duration>,
        Option<Duration>,
        Option<Duration>,
        usize,
        usize,
    ),
    woken_min: usize,
    /// `POST /api/tokens` per second (16 keep-alive clients, 8 s) with the
    /// connectors still there, and the failures.
    mints: (f64, u64),
    changes: usize,
    missed: usize,
    errors: BTreeMap<String, u64>,
    server_warnings: u64,
    notes: Vec<String>,
}

async fn run_case(o: &Opts, pg: Option<&Pg>, replicas: usize, n: usize, nofile: u64) -> Row {
    let mut row = Row {
        label: match pg {
            Some(_) => format!("pg x{replicas}"),
            None => "sqlite x1".into(),
        },
        wanted: n,
        ..Row::default()
    };
    // Sockets: one per (client, replica) here and in the servers, and some
    // for the databases and the rest.
    let clients = n.div_ceil(o.per_client);
    if (clients * replicas) as u64 + 512 > nofile {
        row.notes.push(format!(
            "RLIMIT_NOFILE {nofile} is too low for {clients} clients x {replicas} replicas"
        ));
        return row;
    }
    let db_name = format!("infra_scale_{}_{n}_{replicas}", std::process::id());
    let db = match pg {
        Some(pg) => Some(create_db(&pg.base, &db_name).await),
        None => None,
    };
    let mut extra: Vec<String> = Vec::new();
    if clients + 256 > DEFAULT_MAX_CONNECTIONS {
        let m = clients + 1024;
        extra.extend(["--max-connections".into(), m.to_string()]);
        row.notes.push(format!(
            "--max-connections {m} (default {DEFAULT_MAX_CONNECTIONS})"
        ));
    }
    let mut servers = vec![start_server(db.as_deref(), &extra)];
    let first_dir = servers[0].dir.path().to_path_buf();
    for _ in 1..replicas {
        let mut e = extra.clone();
        e.extend([
            "--url".into(),
            servers[0].url.clone(),
            "--root-key-file".into(),
            first_dir.join("root.key").display().to_string(),
            "--tls-cert".into(),
            first_dir.join("tls.crt").display().to_string(),
            "--tls-key".into(),
            first_dir.join("tls.key").display().to_string(),
        ]);
        servers.push(start_server(db.as_deref(), &e));
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let ca_pem = std::fs::read(first_dir.join("tls.crt")).unwrap();
    let tls = tls_config(&ca_pem);
    let admin_http = http_client(&tls);
    let a = urls[0].as_str();
    let admin_http = &admin_http;

    // The data: a connector key per destination, a user to grant to.
    let t = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("scale-{i:05}")).collect();
    let keys: Vec<String> = parallel(n, 16, |i| {
        let name = names[i].clone();
        async move {
            let v = admin(
                admin_http,
                a,
                "POST",
                "/api/access-keys",
                json!({"connector": true, "name": name, "destination": name}),
            )
            .await;
            v["accessKey"].as_str().unwrap().to_string()
        }
    })
    .await;
    let granted = admin(
        admin_http,
        a,
        "POST",
        "/api/users",
        json!({"name": "granted"}),
    )
    .await;
    let granted = granted["id"].as_str().unwrap().to_string();
    eprintln!(
        "  {} N={n}: {n} connector keys in {:.1}s",
        row.label,
        t.elapsed().as_secs_f64()
    );

    // The shared clients, each connected to every replica first (so that
    // the connectors' first calls find one HTTP/2 connection to share).
    let https: Vec<reqwest::Client> = (0..clients).map(|_| http_client(&tls)).collect();
    parallel(clients * urls.len(), 16, |i| {
        let (http, url) = (&https[i / urls.len()], &urls[i % urls.len()]);
        async move {
            let _ = http
                .get(format!("{url}/.well-known/openid-configuration"))
                .send()
                .await;
        }
    })
    .await;

    let stats = Arc::new(Stats::new());
    let ca = Arc::new(String::from_utf8(ca_pem.clone()).unwrap());
    let ramp = Arc::new(tokio::sync::Semaphore::new(o.ramp));
    let conns: Vec<Arc<Conn>> = (0..n)
        .map(|i| {
            Arc::new(Conn {
                name: names[i].clone(),
                key: keys[i].clone(),
                base: urls[i % urls.len()].clone(),
                replica: i % urls.len(),
                http: https[i / o.per_client].clone(),
                index: AtomicI64::new(-1),
                changed_ns: AtomicU64::new(0),
                returned_ns: AtomicU64::new(0),
                polling: AtomicBool::new(false),
                alive: AtomicBool::new(false),
                grants: Mutex::default(),
            })
        })
        .collect();
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, c) in conns.iter().enumerate() {
        // Phases spread evenly (golden-ratio sequence) over the heartbeat period.
        let spread = (i as f64 * 0.618_033_988_75).fract();
        let phase = HEARTBEAT.mul_f64(spread);
        // Likewise their long polls over the 30 s a poll lasts, unless
        // they all came back at once (--herd).
        let pause = if o.herd {
            Duration::ZERO
        } else {
            Duration::from_secs(30).mul_f64(spread)
        };
        tasks.push(tokio::spawn(run_connector(
            c.clone(),
            stats.clone(),
            ca.clone(),
            ramp.clone(),
            phase,
            pause,
        )));
    }
    // Registered (or failed) and answered once: then waiting.
    let up_limit = Duration::from_secs(60 + n as u64 / 20);
    let ready = |conns: &[Arc<Conn>]| {
        conns
            .iter()
            .filter(|c| c.index.load(Ordering::Acquire) >= 0)
            .count()
    };
    let finished =
        |tasks: &[tokio::task::JoinHandle<()>]| tasks.iter().filter(|t| t.is_finished()).count();
    while ready(&conns) + finished(&tasks) < n && t.elapsed() < up_limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    row.ramp = t.elapsed();
    row.connected = ready(&conns);
    if row.connected < n {
        row.notes.push(format!(
            "only {} of {n} connectors registered and polling after {:.0}s",
            row.connected,
            row.ramp.as_secs_f64()
        ));
    }
    eprintln!(
        "  {} N={n}: {} connectors polling in {:.1}s",
        row.label,
        row.connected,
        row.ramp.as_secs_f64()
    );
    if o.herd {
        if !settle(&conns, &stats, Duration::from_secs(30)).await {
            row.notes
                .push("connectors did not all settle into their long polls in 30 s".into());
        }
    } else {
        // Spread out: every connector in its long poll (after its pause).
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // At rest.
    eprintln!("  {} N={n}: at rest for {}s", row.label, o.idle_secs);
    let tck = clock_ticks();
    let postmaster = pg.map(|p| p.postmaster);
    let me = std::process::id();
    let s0: Vec<u64> = servers
        .iter()
        .map(|s| cpu_ticks(s.pid).unwrap_or(0))
        .collect();
    let pg0 = family_ticks(postmaster);
    let b0 = cpu_ticks(me).unwrap_or(0);
    let m0 = machine_ticks();
    let p0 = stats.polls.load(Ordering::Relaxed);
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.idle_secs)).await;
    let secs = w0.elapsed().as_secs_f64();
    let pct_core = |d: u64| d as f64 / tck / secs * 100.0;
    row.server_cpu = servers
        .iter()
        .zip(&s0)
        .map(|(s, t0)| pct_core(cpu_ticks(s.pid).unwrap_or(0).saturating_sub(*t0)))
        .collect();
    if postmaster.is_some() {
        let d: u64 = family_ticks(postmaster)
            .iter()
            .map(|(p, t)| t.saturating_sub(pg0.get(p).copied().unwrap_or(0)))
            .sum();
        row.pg_cpu = Some(pct_core(d));
    }
    row.bench_cpu = pct_core(cpu_ticks(me).unwrap_or(0).saturating_sub(b0));
    let m1 = machine_ticks();
    row.machine_busy = (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64 * 100.0;
    row.polls_per_s = (stats.polls.load(Ordering::Relaxed) - p0) as f64 / secs;
    row.rss = servers.iter().map(|s| rss_mib(s.pid)).collect();

    // Propagation: a grant through replica 1, on a destination whose
    // connector waits on replica 2 (1 with one replica).
    eprintln!("  {} N={n}: {} grant changes", row.label, o.changes);
    let on = if urls.len() > 1 { 1 } else { 0 };
    let targets: Vec<usize> = (0..n)
        .filter(|&i| conns[i].replica == on && conns[i].alive.load(Ordering::Acquire))
        .collect();
    let mut dest = Vec::new();
    let mut answers = Vec::new();
    let mut last = Vec::new();
    let mut woken_min = usize::MAX;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(me);
    for s in 0..o.changes.min(targets.len()) {
        // The connector followed is waiting in its long poll (the others
        // renew theirs all the time in a fleet that started over time).
        let x = targets[(s * 7919) % targets.len()];
        settle(&conns[x..=x], &stats, Duration::from_secs(10)).await;
        // Off the server's poll ticks: a random wait of up to 250 ms.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 250)).await;
        let base = snapshot(&conns);
        let live = base.iter().flatten().count();
        let t0 = stats.now_ns();
        let g = admin(
            admin_http,
            a,
            "POST",
            "/api/grants",
            json!({"user": granted, "destination": conns[x].name, "role": format!("r{s}")}),
        )
        .await;
        let gid = g["id"].as_str().unwrap_or_default().to_string();
        let seen = changed_since(
            &conns,
            &base,
            x,
            t0,
            Duration::from_secs(3),
            Duration::from_secs(40),
        )
        .await;
        row.changes += 1;
        match seen[x] {
            Some(d) => {
                dest.push(d);
                if !lock(&conns[x].grants).contains(&gid) {
                    stats.error("propagation: answer without the new grant", gid.clone());
                }
            }
            None => row.missed += 1,
        }
        let woken: Vec<Duration> = seen.iter().flatten().copied().collect();
        woken_min = woken_min.min(woken.len());
        if woken.len() == live {
            last.push(woken.iter().max().copied().unwrap_or_default());
        }
        answers.extend(woken);
    }
    let dest = sorted(dest);
    row.dest = (pct(&dest, 0.5), pct(&dest, 0.99));
    let answers = sorted(answers);
    row.answers = (
        pct(&answers, 0.5),
        pct(&answers, 0.99),
        answers.last().copied(),
    );
    let last_n = last.len();
    let last = sorted(last);
    row.last = (pct(&last, 0.5), last.last().copied(), last_n);
    row.woken_min = if row.changes == 0 { 0 } else { woken_min };

    // Fan-out: one change that concerns every destination (a member leaves
    // a group granted on all of them), until every connector has it.
    eprintln!("  {} N={n}: a change for all {n} destinations", row.label);
    let everyone = admin(
        admin_http,
        a,
        "POST",
        "/api/groups",
        json!({"name": "everywhere"}),
    )
    .await;
    let everyone = everyone["id"].as_str().unwrap_or_default().to_string();
    admin(
        admin_http,
        a,
        "PATCH",
        &format!("/api/groups/{everyone}/users"),
        json!({"usersToAdd": [granted]}),
    )
    .await;
    parallel(n, 16, |i| {
        let (http, a, name, group) = (
            admin_http.clone(),
            a.to_string(),
            conns[i].name.clone(),
            everyone.clone(),
        );
        async move {
            admin(
                &http,
                &a,
                "POST",
                "/api/grants",
                json!({"group": group, "destination": name, "role": "view"}),
            )
            .await;
        }
    })
    .await;
    // Every connector has taken its grant and waits again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let base = snapshot(&conns);
    let live = base.iter().flatten().count();
    let t0 = stats.now_ns();
    admin(
        admin_http,
        a,
        "PATCH",
        &format!("/api/groups/{everyone}/users"),
        json!({"usersToRemove": [granted]}),
    )
    .await;
    let seen = changed_since(
        &conns,
        &base,
        0,
        t0,
        Duration::from_secs(40),
        Duration::from_secs(40),
    )
    .await;
    let all = sorted(seen.iter().flatten().copied().collect());
    row.fanout = (
        pct(&all, 0.5),
        pct(&all, 0.99),
        all.last().copied(),
        all.len(),
        live,
    );

    // Minting, the exec plugin's cold path, with the N connectors idle in
    // the background (compare the row with N = 0).
    eprintln!("  {} N={n}: minting for 8 s (16 clients)", row.label);
    admin(
        admin_http,
        a,
        "POST",
        "/api/grants",
        json!({"user": granted, "destination": "mintbench", "role": "view"}),
    )
    .await;
    let mint_key = admin(
        admin_http,
        a,
        "POST",
        "/api/access-keys",
        json!({"userID": granted, "name": "mint-bench"}),
    )
    .await["accessKey"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let until = Instant::now() + Duration::from_secs(8);
    let minted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut minters = Vec::new();
    for _ in 0..16 {
        let (http, url, key) = (
            http_client(&tls),
            format!("{a}/api/tokens"),
            mint_key.clone(),
        );
        let (minted, failed) = (minted.clone(), failed.clone());
        minters.push(tokio::spawn(async move {
            while Instant::now() < until {
                let r = api(&http, reqwest::Method::POST, url.clone(), &key)
                    .json(&json!({"destination": "mintbench"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let _ = r.bytes().await;
                        minted.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for m in minters {
        let _ = m.await;
    }
    row.mints = (
        minted.load(Ordering::Relaxed) as f64 / 8.0,
        failed.load(Ordering::Relaxed),
    );

    let hb = sorted(lock(&stats.heartbeat).clone());
    row.heartbeat = (pct(&hb, 0.5), pct(&hb, 0.99), hb.len());
    row.errors = lock(&stats.errors).clone();
    for s in lock(&stats.error_samples).iter() {
        row.notes.push(format!("error: {}", cut(s, 300)));
    }
    for s in &servers {
        let l = lock(&s.log);
        row.server_warnings += l.0;
        for line in &l.1 {
            row.notes.push(format!("server log: {}", cut(line, 300)));
        }
    }

    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(servers);
    if let Some(pg) = pg {
        drop_db(&pg.base, &db_name).await;
    }
    row
}

fn cut(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn list(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join("+")
}

fn print_rows(rows: &[Row], o: &Opts) {
    println!();
    println!(
        "== at rest over {}s: CPU in % of one core (per replica when several), RSS in MiB ==",
        o.idle_secs
    );
    println!(
        "{:<10} {:>6} {:>6} {:>7} {:>16} {:>7} {:>13} {:>8} {:>7} {:>7}",
        "setup",
        "N",
        "up",
        "ramp s",
        "server cpu%",
        "pg cpu%",
        "server rss",
        "polls/s",
        "bench%",
        "box%"
    );
    for r in rows {
        let cpu = if r.server_cpu.len() > 1 {
            format!(
                "{:.1} ({})",
                r.server_cpu.iter().sum::<f64>(),
                list(&r.server_cpu, 1)
            )
        } else {
            list(&r.server_cpu, 1)
        };
        println!(
            "{:<10} {:>6} {:>6} {:>7.1} {:>16} {:>7} {:>13} {:>8.1} {:>7.1} {:>7.0}",
            r.label,
            r.wanted,
            r.connected,
            r.ramp.as_secs_f64(),
            cpu,
            r.pg_cpu.map(|c| format!("{c:.1}")).unwrap_or("-".into()),
            list(&r.rss, 0),
            r.polls_per_s,
            r.bench_cpu,
            r.machine_busy,
        );
    }
    println!();
    println!("== latency in ms: heartbeat POST; a grant change until the long polls answer ==");
    println!(
        "{:<10} {:>6} {:>14} {:>12} {:>19} {:>12} {:>7} {:>7}",
        "setup", "N", "heartbeat", "dest", "all answers", "last of N", "woken", "missed"
    );
    println!(
        "{:<10} {:>6} {:>14} {:>12} {:>19} {:>12} {:>7} {:>7}",
        "", "", "p50/p99 (n)", "p50/p99", "p50/p99/max", "p50/max", "min", ""
    );
    for r in rows {
        println!(
            "{:<10} {:>6} {:>14} {:>12} {:>19} {:>12} {:>7} {:>7}",
            r.label,
            r.wanted,
            format!(
                "{}/{} ({})",
                ms(r.heartbeat.0),
                ms(r.heartbeat.1),
                r.heartbeat.2
            ),
            format!("{}/{}", ms(r.dest.0), ms(r.dest.1)),
            format!(
                "{}/{}/{}",
                ms(r.answers.0),
                ms(r.answers.1),
                ms(r.answers.2)
            ),
            format!("{}/{}", ms(r.last.0), ms(r.last.1)),
            r.woken_min,
            format!("{}/{}", r.missed, r.changes),
        );
    }
    println!();
    println!("== fan-out in ms: one change for every destination, until each connector has it ==");
    for r in rows {
        let (p50, p99, max, got, live) = r.fanout;
        println!(
            "{:<10} {:>6}: p50/p99/max {}/{}/{}, {got} of {live} connectors",
            r.label,
            r.wanted,
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
    println!();
    println!("== POST /api/tokens with the connectors idle in the background ==");
    for r in rows {
        println!(
            "{:<10} {:>6}: {:.0} mints/s, {} failed",
            r.label, r.wanted, r.mints.0, r.mints.1
        );
    }
    println!();
    println!("== errors and notes ==");
    for r in rows {
        let errors: u64 = r.errors.values().sum();
        println!(
            "{:<10} {:>6}: {} connector errors{}, {} server warnings; {} of {} changes woke all N",
            r.label,
            r.wanted,
            errors,
            if errors > 0 {
                format!(" {:?}", r.errors)
            } else {
                String::new()
            },
            r.server_warnings,
            r.last.2,
            r.changes,
        );
        for n in &r.notes {
            println!("{:<10} {:>6}   {n}", "", "");
        }
    }
}

async fn on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).unwrap();
    let mut int = signal(SignalKind::interrupt()).unwrap();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn main() {
    let o = Opts::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "infra scale benchmark: connectors {:?}, {} with replicas {:?}, {}s at rest, {} changes, \
         {} connectors per HTTP client; {} ({}); {cores} cores, RLIMIT_NOFILE {nofile}",
        o.connectors,
        if o.db == Db::Postgres {
            "postgres"
        } else {
            "sqlite"
        },
        o.replicas,
        o.idle_secs,
        o.changes,
        o.per_client,
        env!("CARGO_BIN_EXE_infra"),
        Command::new(env!("CARGO_BIN_EXE_infra"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
    );
    let started = Instant::now();
    let rows = rt.block_on(async {
        let work = async {
            let pg = (o.db == Db::Postgres).then(|| start_postgres(&o));
            let mut rows = Vec::new();
            for &k in &o.replicas {
                for &n in &o.connectors {
                    eprintln!(
                        "{} x{k} with {n} connectors",
                        if pg.is_some() { "postgres" } else { "sqlite" }
                    );
                    let row = run_case(&o, pg.as_ref(), k, n, nofile).await;
                    eprintln!(
                        "  -> server {:.1}% cpu, heartbeat p99 {} ms, all answers p99 {} ms, {} errors",
                        row.server_cpu.iter().sum::<f64>(),
                        ms(row.heartbeat.1),
                        ms(row.answers.1),
                        row.errors.values().sum::<u64>()
                    );
                    rows.push(row);
                }
            }
            rows
        };
        tokio::select! {
            rows = work => Some(rows),
            _ = on_signal() => None,
        }
    });
    let Some(rows) = rows else {
        eprintln!("scale: interrupted; stopping what it started");
        emergency_cleanup();
        std::process::exit(130);
    };
    print_rows(&rows, &o);
    println!("\n(total {:.0}s)", started.elapsed().as_secs_f64());
}
