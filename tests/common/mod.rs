//! Shared parts of the integration tests: a real `infra server` process on
//! a free loopback port (SQLite or a fresh PostgreSQL database), a real
//! OpenID provider (npm `oidc-provider`), and a typed way to call the API.
//!
//! Time, in two ways, and no test sleeps on the wall clock:
//! - [`Clock`]: the clock of the processes a test runs (`src/clock.rs`'s
//!   seam). Every [`Server`] gets its own, set back to no offset; a test
//!   lets time pass for an expiry with [`Server::advance_clock`], and
//!   shares one clock between servers ([`ServerOptions::clock`]), a
//!   connector or the CLI ([`Clock::apply`], [`Machine::use_clock`]).
//! - [`wait_for`] / [`wait_until`] (and [`wait_for_blocking`] /
//!   [`wait_until_blocking`] outside async code): waiting for something to
//!   happen (a background loop, a line printed, a process ending), looking
//!   again every few milliseconds, failing after [`WAIT`] with what it
//!   waited for. The only place the tests pause.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_KEY: &str = "AdminKey01.AdminSecret0123456789abc";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates the tests `NAME::sqlite` and `NAME::postgres` from
/// `async fn NAME(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(super::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(super::common::Backend::Postgres).await
                }
            }
        )*
    };
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_infra"))
}

/// A fresh, empty PostgreSQL database on the server `tests/run.sh` started.
pub async fn postgres_db() -> String {
    let base = std::env::var("INFRA_TEST_POSTGRES_URL").expect(
        "INFRA_TEST_POSTGRES_URL is not set: run the tests with tests/run.sh, which starts a \
         throwaway PostgreSQL",
    );
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to the test PostgreSQL");
    let name = format!("infra_test_{}", random_suffix());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

pub fn random_suffix() -> String {
    infra::web::random_from(10, b"abcdefghijklmnopqrstuvwxyz")
}

// ------------------------------------------------------------------ time

/// How long any wait may take before the test fails. Generous, because a
/// loaded machine is slow and a wait that holds returns at once.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often a wait looks again.
const LOOK_EVERY: Duration = Duration::from_millis(25);

/// Waits until `probe` gives `Some`, looking at once and then every 25 ms;
/// fails with "timed out waiting for WHAT" after [`WAIT`].
pub async fn wait_for<T>(
    what: impl std::fmt::Display,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        look.tick().await;
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
    }
}

/// Waits until `cond` holds; see [`wait_for`].
pub async fn wait_until(what: impl std::fmt::Display, mut cond: impl AsyncFnMut() -> bool) {
    wait_for(what, async || cond().await.then_some(())).await
}

/// [`wait_for`] for code that is not async (a thread, a blocking test).
pub fn wait_for_blocking<T>(
    what: impl std::fmt::Display,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::park_timeout(LOOK_EVERY);
    }
}

/// [`wait_until`] for code that is not async.
pub fn wait_until_blocking(what: impl std::fmt::Display, mut cond: impl FnMut() -> bool) {
    wait_for_blocking(what, || cond().then_some(()))
}

/// Waits for a process to end (see [`wait_for_blocking`]); on a timeout
/// it is killed.
pub fn wait_for_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    struct KillIfPanicking<'c>(&'c mut Child);
    impl Drop for KillIfPanicking<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let child = KillIfPanicking(child);
    wait_for_blocking(format!("{what} to end"), || child.0.try_wait().unwrap())
}

/// The clock of the processes a test runs: `src/clock.rs` adds the number
/// of seconds in this file (read on every call, in debug builds) to their
/// system time. It starts at 0; [`Clock::advance`] lets time pass at once
/// for every process started with it, already running or not. Clones
/// share the file.
#[derive(Clone)]
pub struct Clock {
    dir: Arc<tempfile::TempDir>,
    /// Serialises the read-change-write of [`Clock::advance`].
    lock: Arc<Mutex<()>>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// The environment variable that names the file.
    pub const ENV: &str = "INFRA_TEST_CLOCK_FILE";

    pub fn new() -> Clock {
        let c = Clock {
            dir: Arc::new(tempfile::tempdir().unwrap()),
            lock: Arc::new(Mutex::new(())),
        };
        c.set(0);
        c
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("clock")
    }

    /// Seconds ahead of the system time.
    pub fn offset(&self) -> i64 {
        std::fs::read_to_string(self.file())
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Lets `secs` seconds pass.
    pub fn advance(&self, secs: i64) {
        let _held = self.lock.lock().unwrap();
        self.set(self.offset() + secs);
    }

    /// Written whole (a new file renamed over the old one): a process
    /// reading it never sees it empty or half-written.
    fn set(&self, offset: i64) {
        let tmp = self.dir.path().join("clock.new");
        std::fs::write(&tmp, offset.to_string()).unwrap();
        std::fs::rename(&tmp, self.file()).unwrap();
    }

    /// Now, in seconds since the Unix epoch, as the processes see it.
    pub fn now(&self) -> i64 {
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        system + self.offset()
    }

    /// Runs `cmd` on this clock. (It then ignores
    /// `INFRA_TEST_CLOCK_OFFSET_SECS`: start from an offset with `advance`.)
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env(Self::ENV, self.file())
    }
}

/// A running `infra server`.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub db: Option<String>,
    pub stderr: Arc<Mutex<String>>,
    pub client: reqwest::Client,
    /// The server's clock (shared with other servers of the test if
    /// [`ServerOptions::clock`] said so).
    pub clock: Clock,
    _tmp: Option<tempfile::TempDir>,
}

pub struct ServerOptions {
    pub backend: Backend,
    pub admin_key: Option<String>,
    pub db: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The open-files limit (soft and hard) the server starts under.
    pub open_files: Option<u64>,
    /// Another server's clock, for replicas that must see one time; by
    /// default each server has a clock of its own.
    pub clock: Option<Clock>,
}

impl ServerOptions {
    pub fn new(backend: Backend) -> Self {
        ServerOptions {
            backend,
            admin_key: Some(ADMIN_KEY.to_string()),
            db: None,
            data_dir: None,
            config: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            open_files: None,
            clock: None,
        }
    }
}

impl Server {
    pub async fn start(backend: Backend) -> Server {
        Self::start_with(ServerOptions::new(backend)).await
    }

    pub async fn start_with(opts: ServerOptions) -> Server {
        let (tmp, data_dir) = match opts.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let db = match (opts.backend, opts.db) {
            (_, Some(db)) => Some(db),
            (Backend::Postgres, None) => Some(postgres_db().await),
            (Backend::Sqlite, None) => None,
        };
        let mut cmd = Command::new(bin());
        cmd.arg("server");
        if !opts.extra_args.iter().any(|a| a == "--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        if !opts.extra_args.iter().any(|a| a == "--metrics-listen") {
            cmd.arg("--metrics-listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .args(&opts.extra_args)
            .env_remove("INFRA_ADMIN_ACCESS_KEY")
            .env("INFRA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(db) = &db {
            cmd.arg("--db").arg(db);
        }
        if let Some(c) = &opts.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(k) = &opts.admin_key {
            cmd.env("INFRA_ADMIN_ACCESS_KEY", k);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(n) = opts.open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
            unsafe {
                cmd.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, n, n));
            }
        }
        let clock = opts.clock.unwrap_or_default();
        clock.apply(&mut cmd);
        let mut child = cmd.spawn().expect("start infra server");
        let stderr = Arc::new(Mutex::new(String::new()));
        // The URL, once the start-up banner (which ends with the certificate's
        // fingerprint) is all in `stderr`.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = {
            let stderr = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut url = None;
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    {
                        let mut s = stderr.lock().unwrap();
                        s.push_str(&line);
                        s.push('\n');
                    }
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        url = Some(rest.trim().to_string());
                    }
                    if line.starts_with("TLS certificate SHA-256 fingerprint: ")
                        && let Some(url) = url.take()
                    {
                        let _ = tx.send(url);
                    }
                }
            })
        };
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            // A server on every address is reached, like a person would, on loopback.
            Ok(url) => url.replace("https://0.0.0.0:", "https://127.0.0.1:"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // Everything it printed, up to the end of the pipe.
                wait_until_blocking("the server's stderr to end", || reader.is_finished());
                panic!("infra server did not start:\n{}", stderr.lock().unwrap());
            }
        };
        let client = client_trusting(&data_dir.join("tls.crt"));
        Server {
            child,
            url,
            data_dir,
            db,
            stderr,
            client,
            clock,
            _tmp: tmp,
        }
    }

    /// Lets `secs` seconds pass on the server's clock (and on every process
    /// sharing it), at once.
    pub fn advance_clock(&self, secs: i64) {
        self.clock.advance(secs);
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The SHA-256 fingerprint the server printed at start-up.
    pub fn fingerprint(&self) -> String {
        self.stderr()
            .lines()
            .find_map(|l| l.strip_prefix("TLS certificate SHA-256 fingerprint: "))
            .expect("the server prints its fingerprint")
            .trim()
            .to_string()
    }

    /// The private metrics listener's `http://ADDR/metrics`.
    pub fn metrics_url(&self) -> String {
        self.stderr()
            .lines()
            .find_map(|l| l.strip_prefix("metrics on "))
            .expect("the server prints its metrics address")
            .trim()
            .to_string()
    }

    /// The Prometheus text from the private metrics listener.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.metrics_url())
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap()
    }

    /// `host:port`, as a person types it after `infra login`.
    pub fn host(&self) -> String {
        self.url.trim_start_matches("https://").to_string()
    }

    /// A connection straight to the server's database (SQLite or PostgreSQL).
    pub async fn db_connection(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let url = match &self.db {
            Some(db) => db.clone(),
            None => format!("sqlite://{}", self.data_dir.join("infra.db").display()),
        };
        sqlx::AnyConnection::connect(&url).await.unwrap()
    }

    /// Calls the API with the version header and, if given, a key.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        call(&self.client, &self.url, method, path, key, body).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN_KEY), body).await
    }

    /// Like `admin`, asserting the status.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
        let (status, v) = self.admin(method, path, body).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        v
    }

    /// Sends SIGTERM and waits for the process to end.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        // On a timeout, dropping `self` shows its log.
        wait_for_exit(&mut self.child, "the server (on SIGTERM)")
    }

    /// A user with a password, and a key from logging in as them.
    pub async fn user_with_key(&self, name: &str) -> (String, String) {
        let u = self
            .ok(
                "POST",
                "/api/users",
                Some(serde_json::json!({"name": name, "password": "password-1"})),
                201,
            )
            .await;
        let (status, login) = self
            .call(
                "POST",
                "/api/login",
                None,
                Some(serde_json::json!({"passwordCredentials": {"name": name, "password": "password-1"}})),
            )
            .await;
        assert_eq!(status, 201, "{login}");
        (
            u["id"].as_str().unwrap().to_string(),
            login["accessKey"].as_str().unwrap().to_string(),
        )
    }

    /// The admin grants the user `user_id` the view role on `destination`.
    pub async fn grant_view(&self, user_id: &str, destination: &str) {
        self.ok(
            "POST",
            "/api/grants",
            Some(serde_json::json!({"user": user_id, "destination": destination, "role": "view"})),
            201,
        )
        .await;
    }

    /// [`Server::user_with_key`], granted the view role on `destination`.
    pub async fn viewer_of(&self, name: &str, destination: &str) -> (String, String) {
        let (id, key) = self.user_with_key(name).await;
        self.grant_view(&id, destination).await;
        (id, key)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- infra server log ({}):\n{}", self.url, self.stderr());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_trusting(cert: &Path) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(cert).expect("the server wrote its certificate");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn call(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header("Infra-Version", VERSION);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// A real OpenID provider (npm `oidc-provider`) on a free loopback port.
pub struct OidcProvider {
    child: Child,
    pub issuer: String,
}

impl OidcProvider {
    pub fn start() -> OidcProvider {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> OidcProvider {
        let script = std::env::var("INFRA_TEST_OIDC_PROVIDER").expect(
            "INFRA_TEST_OIDC_PROVIDER is not set: run the tests with tests/run.sh, which installs \
             the npm oidc-provider",
        );
        let node = std::env::var("INFRA_TEST_NODE").unwrap_or_else(|_| "node".to_string());
        let mut cmd = Command::new(node);
        cmd.arg(script)
            .env("OIDC_PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Node 20 has been seen to deadlock, rarely, while the provider makes
        // its signing key at start-up: give each start a deadline, and retry.
        for attempt in 1..=3 {
            let mut child = cmd.spawn().expect("start the OIDC provider with node");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if !sent && let Some(i) = line.strip_prefix("OIDC_ISSUER=") {
                        let _ = tx.send(i.trim().to_string());
                        sent = true;
                    }
                    // Keep draining, so the provider never blocks on a full pipe.
                }
            });
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(issuer) => return OidcProvider { child, issuer },
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!("the OIDC provider did not start (attempt {attempt} of 3)");
                }
            }
        }
        panic!("the OIDC provider did not start in three attempts");
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person's browser: follows the provider's redirects and fills in its
/// login and consent forms (oidc-provider's development interactions),
/// stopping at the redirect back to the CLI.
pub struct Browser {
    client: reqwest::Client,
    /// How many times the provider showed its login form (rather than
    /// going on with the session it holds).
    login_forms: std::sync::atomic::AtomicUsize,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A browser with its own HTTP client (e.g. one that trusts a private CA).
    pub fn with_client(client: reqwest::Client) -> Browser {
        Browser {
            client,
            login_forms: Default::default(),
        }
    }

    /// How many login forms the provider showed this browser so far.
    pub fn login_forms_shown(&self) -> usize {
        self.login_forms.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn new() -> Browser {
        Browser::with_client(
            reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        )
    }

    /// Signs in as `login` and returns the URL the provider redirects to
    /// (starting with `redirect_prefix`), without visiting it.
    pub async fn sign_in(&self, url: &str, login: &str, redirect_prefix: &str) -> String {
        self.drive(url, Some(login), redirect_prefix).await
    }

    /// Clicks "abort" on the provider's page instead of signing in.
    pub async fn abort(&self, url: &str, redirect_prefix: &str) -> String {
        self.drive(url, None, redirect_prefix).await
    }

    async fn drive(&self, start: &str, login: Option<&str>, prefix: &str) -> String {
        let mut url = start.to_string();
        for _ in 0..30 {
            if url.starts_with(prefix) {
                return url;
            }
            let resp = self.client.get(&url).send().await.expect("browser GET");
            if resp.status().is_redirection() {
                url = next(&url, &resp);
                continue;
            }
            let page = resp.url().to_string();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert!(
                status.is_success() && page.contains("/interaction/"),
                "unexpected page {page} ({status}): {body}"
            );
            let Some(name) = login else {
                url = format!("{}/abort", page.trim_end_matches('/'));
                continue;
            };
            let form: Vec<(&str, &str)> = if body.contains("name=\"login\"") {
                self.login_forms
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                vec![
                    ("prompt", "login"),
                    ("login", name),
                    ("password", "anything"),
                ]
            } else {
                vec![("prompt", "consent")]
            };
            let resp = self
                .client
                .post(&page)
                .form(&form)
                .send()
                .await
                .expect("browser POST");
            assert!(
                resp.status().is_redirection(),
                "form post answered {}",
                resp.status()
            );
            url = next(&page, &resp);
        }
        panic!("the browser went round in circles from {start}");
    }

    /// Visits a URL (the CLI's listener) like a browser; returns status and page.
    pub async fn visit(&self, url: &str) -> (u16, String) {
        let resp = reqwest::get(url).await.expect("visit");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

fn next(base: &str, resp: &reqwest::Response) -> String {
    let loc = resp.headers()["location"].to_str().unwrap();
    url::Url::parse(base)
        .unwrap()
        .join(loc)
        .unwrap()
        .to_string()
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A person's machine: its own home, config dir and kubeconfig.
pub struct Machine {
    pub dir: tempfile::TempDir,
    /// The clock of its commands, when a test shares one with them.
    clock: Option<Clock>,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    pub fn new() -> Machine {
        Machine {
            dir: tempfile::tempdir().unwrap(),
            clock: None,
        }
    }

    /// Runs this machine's commands on `clock` (e.g. a server's), so that
    /// time a test lets pass passes for them too.
    pub fn use_clock(&mut self, clock: &Clock) {
        self.clock = Some(clock.clone());
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn infra_home(&self) -> std::path::PathBuf {
        self.dir.path().join(".config/infra")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("HOME", self.home())
            .env("INFRA_HOME", self.infra_home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("XDG_DATA_HOME", self.home().join(".local/share"))
            .env("KUBECONFIG", self.home().join(".kube/config"))
            .env_remove("INFRA_ACCESS_KEY")
            .env_remove("INFRA_SERVER")
            .env_remove("INFRA_PASSWORD")
            .env_remove("INFRA_NO_KEYRING")
            .stdin(Stdio::null());
        if let Some(clock) = &self.clock {
            clock.apply(&mut c);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    /// Logs in to `s` as its admin, trusting it by fingerprint.
    pub fn login_admin(&self, s: &Server) {
        let out = self.run(&[
            "login",
            &s.host(),
            "--key",
            ADMIN_KEY,
            "--tls-trusted-fingerprint",
            &s.fingerprint(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("Logged in to"), "{err}");
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "infra {}: {:?}\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every file under the config dir, with its contents.
    pub fn config_files(&self) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.infra_home()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out
    }
}

/// A command in a pseudo-terminal (util-linux `script`), as a person at a
/// terminal runs it: the test reads the screen as it comes, and types.
pub struct Terminal {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    /// Everything shown so far (the command's output and the typing's echo).
    screen: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Terminal {
    /// `script` running `program args...`; the caller sets its environment.
    pub fn command(program: &Path, args: &[&str]) -> Command {
        let line = std::iter::once(program.display().to_string())
            .chain(args.iter().map(|a| a.to_string()))
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
        cmd
    }

    /// Starts a command made by [`Terminal::command`].
    pub fn start(mut cmd: Command) -> Terminal {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script (util-linux)");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let collect = |mut pipe: Box<dyn std::io::Read + Send>| {
            let screen = screen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        let readers = vec![
            collect(Box::new(child.stdout.take().unwrap())),
            collect(Box::new(child.stderr.take().unwrap())),
        ];
        Terminal {
            stdin: child.stdin.take(),
            child,
            screen,
            readers,
        }
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until `text` is on the screen.
    pub fn wait_for(&self, text: &str) {
        wait_until_blocking(format!("{text:?} on the screen"), || {
            self.screen().contains(text)
        });
    }

    /// Types `keys`.
    pub fn type_keys(&mut self, keys: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("the terminal is open");
        stdin.write_all(keys.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the command to end (the keyboard stays connected until
    /// then); returns its exit code and the whole screen.
    pub fn finish(mut self) -> (i32, String) {
        let status = wait_for_exit(&mut self.child, "the command in the terminal");
        self.stdin = None;
        for r in std::mem::take(&mut self.readers) {
            wait_until_blocking("the terminal's output to end", || r.is_finished());
        }
        (status.code().unwrap_or(-1), self.screen())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the terminal:\n{}", self.screen());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private CA and a serving certificate for localhost and 127.0.0.1
/// signed by it: `(ca_pem, cert_pem, key_pem)`.
pub fn private_ca() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "infra test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&leaf_key, &ca).unwrap();
    (ca.pem(), cert.pem(), leaf_key.serialize_pem())
}

/// Runs one of the headless-Chromium scripts in `tests/oidc` (playwright-core
/// with Debian's chromium) with `env`, and returns its JSON report, failing
/// the test when the script does. Screenshots go to `OUT_DIR`, a fresh
/// directory under the tests' scratch dir.
pub async fn chromium_script(script: &str, env: &[(&str, &str)]) -> Value {
    let chromium =
        std::env::var("INFRA_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run the tests with tests/run.sh, which installs Debian's chromium"
    );
    let path = Path::new(
        &std::env::var("INFRA_TEST_OIDC_PROVIDER")
            .expect("INFRA_TEST_OIDC_PROVIDER is not set: run the tests with tests/run.sh"),
    )
    .with_file_name(script);
    let node = std::env::var("INFRA_TEST_NODE").unwrap_or_else(|_| "node".to_string());
    let out_dir = std::env::var("INFRA_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
        .join(format!(
            "{}-{}",
            script.trim_end_matches(".mjs"),
            random_suffix()
        ));
    let mut cmd = tokio::process::Command::new(node);
    cmd.arg(&path)
        .env("OUT_DIR", &out_dir)
        .env("CHROMIUM", &chromium);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|_| {
            panic!(
                "{script} said: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success() && report["ok"] == true,
        "{script}: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shot in report["screenshots"].as_array().into_iter().flatten() {
        let png = std::fs::read(shot.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{shot}");
    }
    eprintln!("{script}: screenshots in {}", out_dir.display());
    report
}

/// Kills a process when dropped, so a failing test leaves nothing running
/// (a server on a fixed port would make the next run fail too).
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}
