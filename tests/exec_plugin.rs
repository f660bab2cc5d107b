//! `infra tokens create`, kubectl's exec credential plugin, as kubectl and
//! client libraries run it: the real binary with HOME, INFRA_HOME,
//! KUBECONFIG and INFRA_CACHE_DIR in a temp dir, against a real
//! `infra server`; the real `kubectl` (several versions) and the Python
//! `kubernetes` client against a loopback HTTPS stand-in for a cluster that
//! checks each bearer token against the server's JWKS.
//!
//! The attacks on the cache are played here too, each in a test named for
//! it: two `INFRA_HOME`s logged in as two people on one OS account, a clock
//! minutes off (moved with `INFRA_TEST_CLOCK_OFFSET_SECS`, which debug
//! builds honour), kubectl's retry after a cluster refused a cached token,
//! the files logout must not leave, and a stale kubeconfig lock.
//!
//! Run with tests/run.sh (keys go to the Secret Service it starts, and it
//! installs the Python client).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::{Backend, Machine, Server};
use serde_json::{Value, json};

const V1: &str = "client.authentication.k8s.io/v1";
const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A server with a user alice granted `prod` (but not `secret`), and a
/// machine logged in as alice.
struct Setup {
    s: Server,
    m: Machine,
    alice_id: String,
    alice_key: String,
}

impl Setup {
    async fn new() -> Setup {
        Self::with_cluster("https://127.0.0.1:1", "").await
    }

    /// `prod` is served at `url` with the CA `ca_pem`.
    async fn with_cluster(url: &str, ca_pem: &str) -> Setup {
        let s = Server::start(Backend::Sqlite).await;
        s.ok(
            "POST",
            "/api/destinations",
            Some(json!({"name": "prod", "url": url, "ca": ca_pem})),
            201,
        )
        .await;
        s.ok(
            "POST",
            "/api/destinations",
            Some(json!({"name": "secret", "url": "https://127.0.0.1:2"})),
            201,
        )
        .await;
        let (alice_id, alice_key) = s.user_with_key("alice").await;
        s.ok(
            "POST",
            "/api/grants",
            Some(json!({"user": alice_id, "destination": "prod", "role": "view"})),
            201,
        )
        .await;
        let m = Machine::new();
        let su = Setup {
            s,
            m,
            alice_id,
            alice_key,
        };
        let out = su.m.run(&[
            "login",
            &su.s.host(),
            "--key",
            &su.alice_key,
            "--tls-trusted-fingerprint",
            &su.s.fingerprint(),
        ]);
        assert!(out.status.success(), "login: {}", stderr(&out));
        su
    }

    fn cache_dir(&self) -> PathBuf {
        self.m.home().join("cache").join("tokens")
    }

    /// The environment a person's kubectl has on this machine.
    fn env(&self, c: &mut Command) {
        let home = self.m.home();
        c.env("HOME", home)
            .env("INFRA_HOME", self.m.infra_home())
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("KUBECONFIG", home.join(".kube/config"))
            .env("INFRA_CACHE_DIR", self.cache_dir())
            .env_remove("INFRA_ACCESS_KEY")
            .env_remove("INFRA_SERVER")
            .env_remove("INFRA_NO_KEYRING")
            .env_remove("INFRA_TOKEN_MARGIN")
            .env_remove("KUBERNETES_EXEC_INFO")
            .stdin(Stdio::null());
    }

    /// `infra tokens create --server HOST --destination DEST`, as kubectl
    /// runs it: from a process of its own each time (a shell, as from a
    /// script of kubectl calls), so that calls in a row are not one
    /// kubectl asking again after a 401 (see `from_one_process`).
    fn plugin(&self, dest: &str) -> Command {
        let mut c = Command::new("sh");
        self.env(&mut c);
        // `; exit $?` keeps the shell from replacing itself with the call.
        c.args(["-c", r#""$0" "$@"; exit $?"#])
            .arg(common::bin())
            .args([
                "tokens",
                "create",
                "--server",
                &self.s.host(),
                "--destination",
                dest,
            ]);
        c
    }

    /// Another infra command on this machine, with the same environment.
    fn infra(&self, args: &[&str]) -> Output {
        self.infra_with(args, &[])
    }

    /// [`Setup::infra`] with more environment variables.
    fn infra_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(common::bin());
        self.env(&mut c);
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args).output().unwrap()
    }

    /// `infra login` with `key`, trusting the server, in this environment
    /// plus `env`; asserts success and returns stderr.
    fn login(&self, key: &str, env: &[(&str, &str)]) -> String {
        let out = self.infra_with(
            &[
                "login",
                &self.s.host(),
                "--key",
                key,
                "--tls-trusted-fingerprint",
                &self.s.fingerprint(),
            ],
            env,
        );
        assert!(out.status.success(), "login: {}", stderr(&out));
        stderr(&out)
    }

    /// A user `name` with a key, granted `prod`.
    async fn granted_user(&self, name: &str) -> (String, String) {
        self.s.viewer_of(name, "prod").await
    }

    fn run(&self, dest: &str, env: &[(&str, &str)]) -> Output {
        let mut c = self.plugin(dest);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Runs the plugin, asserts success and a clean stderr, and returns the
    /// ExecCredential.
    fn credential(&self, env: &[(&str, &str)]) -> Value {
        let out = self.run("prod", env);
        assert!(
            out.status.success(),
            "{:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        assert_eq!(stderr(&out), "", "nothing on stderr when all is well");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The single cache file (there is one per server and destination).
    fn cache_file(&self) -> PathBuf {
        let files = token_files(&self.cache_dir());
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    /// Makes the cached token look expired (same token and record, expiry
    /// in the past): `v2 SERVED EXPIRES MINTED USER`.
    fn expire_cache(&self) {
        let path = self.cache_file();
        let text = std::fs::read_to_string(&path).unwrap();
        let (head, token) = text.split_once('\n').unwrap();
        let mut fields: Vec<String> = head.split(' ').map(str::to_string).collect();
        assert_eq!((fields[0].as_str(), fields.len()), ("v2", 5), "{head}");
        fields[2] = (now() - 10).to_string();
        fields[3] = (now() - 310).to_string();
        std::fs::write(&path, format!("{}\n{token}", fields.join(" "))).unwrap();
    }

    async fn minted(&self) -> u64 {
        minted(&self.s).await
    }
}

/// The names of every file in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn token_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "token"))
        .collect();
    v.sort();
    v
}

/// `infra_tokens_minted_total` from the server's /metrics.
async fn minted(s: &Server) -> u64 {
    let text = s.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix("infra_tokens_minted_total "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

fn token_of(cred: &Value) -> String {
    cred["status"]["token"].as_str().unwrap().to_string()
}

/// The claims of a JWT, unverified (the stand-in cluster verifies).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn assert_credential(cred: &Value, api: &str) {
    assert_eq!(cred["apiVersion"], api, "{cred}");
    assert_eq!(cred["kind"], "ExecCredential", "{cred}");
    let token = token_of(cred);
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let ts = cred["status"]["expirationTimestamp"].as_str().unwrap();
    let exp = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp();
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    assert_eq!(exp, claims(&token)["exp"].as_i64().unwrap(), "{cred}");
    assert!(exp > now() + 60, "expires in the future: {ts}");
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_the_version_asked_and_then_from_the_cache() {
    let mut su = Setup::new().await;
    assert_eq!(su.minted().await, 0);

    // Cold: no KUBERNETES_EXEC_INFO means v1beta1.
    let first = su.credential(&[]);
    assert_credential(&first, V1BETA1);
    let token = token_of(&first);
    let c = claims(&token);
    assert_eq!(c["aud"], "prod");
    assert_eq!(c["sub"], su.alice_id);
    assert_eq!(c["name"], "alice");
    assert_eq!(su.minted().await, 1);

    // The cache: one private file in a private directory.
    let file = su.cache_file();
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    assert!(std::fs::read_to_string(&file).unwrap().contains(&token));

    // Warm, in each version and however the JSON is spaced.
    let client_go = format!(
        r#"{{"kind":"ExecCredential","apiVersion":"{V1}","spec":{{"cluster":{{"server":"https://127.0.0.1:1","certificate-authority-data":"TFMwdExTMUNSVWRKVGlCRFJWSlU=","config":{{"apiVersion":"{V1BETA1}"}}}},"interactive":false}}}}"#
    );
    let python = format!(
        r#"{{"apiVersion": "{V1}", "kind": "ExecCredential", "spec": {{"interactive": false}}}}"#
    );
    let beta = format!(r#"{{"kind":"ExecCredential","apiVersion":"{V1BETA1}","spec":{{}}}}"#);
    for (info, api) in [
        (client_go.as_str(), V1),
        (python.as_str(), V1),
        (beta.as_str(), V1BETA1),
        ("not json", V1BETA1),
    ] {
        let cred = su.credential(&[("KUBERNETES_EXEC_INFO", info)]);
        assert_credential(&cred, api);
        assert_eq!(token_of(&cred), token, "from the cache");
        assert_eq!(
            cred["status"]["expirationTimestamp"],
            first["status"]["expirationTimestamp"]
        );
    }
    // `--flag=value` and another order take the warm path too.
    let out = {
        let mut c = Command::new(common::bin());
        su.env(&mut c);
        c.args([
            "tokens",
            "create",
            "--destination=prod",
            &format!("--server={}", su.s.host()),
        ]);
        c.output().unwrap()
    };
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        token_of(&serde_json::from_slice(&out.stdout).unwrap()),
        token
    );
    assert_eq!(su.minted().await, 1, "none of these asked the server");

    // With the server gone, the cache still answers; it needs neither the
    // config file nor the keyring either.
    su.s.stop();
    std::fs::write(su.m.infra_home().join("config.yaml"), "servers: [ {").unwrap();
    let cred = su.credential(&[
        ("KUBERNETES_EXEC_INFO", &python),
        ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus"),
    ]);
    assert_credential(&cred, V1);
    assert_eq!(token_of(&cred), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_a_token_inside_the_margin() {
    let su = Setup::new().await;
    let first = token_of(&su.credential(&[]));
    assert_eq!(su.minted().await, 1);
    // A margin longer than a token lives: every call refreshes.
    let second = token_of(&su.credential(&[("INFRA_TOKEN_MARGIN", "100000")]));
    assert_ne!(second, first);
    assert_eq!(su.minted().await, 2);
    // The new token is cached: with the default margin it is used as it is.
    assert_eq!(token_of(&su.credential(&[])), second);
    assert_eq!(su.minted().await, 2);
    // An expired cache entry is refreshed with the default margin too.
    su.expire_cache();
    let third = token_of(&su.credential(&[]));
    assert_ne!(third, second);
    assert_eq!(su.minted().await, 3);
    // A corrupt cache file is a miss, and is overwritten.
    std::fs::write(su.cache_file(), "garbage").unwrap();
    let fourth = token_of(&su.credential(&[]));
    assert_eq!(su.minted().await, 4);
    assert!(
        std::fs::read_to_string(su.cache_file())
            .unwrap()
            .contains(&fourth)
    );
    // A bad margin is a usage error, with nothing on stdout.
    let out = su.run("prod", &[("INFRA_TOKEN_MARGIN", "soon")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("INFRA_TOKEN_MARGIN"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_calls_mint_one_token() {
    let su = Setup::new().await;
    su.credential(&[]);
    assert_eq!(su.minted().await, 1);
    // Round 1: the cached token has expired. Round 2: there is none.
    for round in [1, 2] {
        match round {
            1 => su.expire_cache(),
            _ => std::fs::remove_file(su.cache_file()).unwrap(),
        }
        let children: Vec<_> = (0..50)
            .map(|_| {
                su.plugin("prod")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let mut tokens = std::collections::BTreeSet::new();
        for out in &outs {
            assert!(out.status.success(), "{}", stderr(out));
            let cred: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_credential(&cred, V1BETA1);
            tokens.insert(token_of(&cred));
        }
        assert_eq!(
            tokens.len(),
            1,
            "round {round}: everyone got the same token"
        );
        assert_eq!(
            su.minted().await,
            1 + round,
            "round {round}: exactly one POST /api/tokens"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_logged_in_says_how_to_log_in() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    let mut c = Command::new(common::bin());
    c.env("HOME", m.home())
        .env("INFRA_HOME", m.infra_home())
        .env("XDG_CONFIG_HOME", m.home().join(".config"))
        .env("INFRA_CACHE_DIR", m.home().join("cache"))
        .env_remove("INFRA_ACCESS_KEY")
        .env_remove("INFRA_SERVER")
        .args([
            "tokens",
            "create",
            "--server",
            &s.host(),
            "--destination",
            "prod",
        ])
        .stdin(Stdio::null());
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "stdout stays empty");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("infra login {}", s.host())),
        "names the command: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_eq!(minted(&s).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_means_log_in_again() {
    let su = Setup::new().await;
    su.credential(&[]);
    // An admin removes every key alice has, the one this machine holds too.
    let keys =
        su.s.ok(
            "GET",
            &format!("/api/access-keys?userID={}", su.alice_id),
            None,
            200,
        )
        .await;
    for k in keys["items"].as_array().unwrap() {
        let id = k["id"].as_str().unwrap();
        su.s.ok("DELETE", &format!("/api/access-keys/{id}"), None, 204)
            .await;
    }
    // The cached token still answers while it is valid...
    su.credential(&[]);
    // ...but a refresh fails, without a browser or a prompt.
    let out = su.run("prod", &[("INFRA_TOKEN_MARGIN", "100000")]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("infra login {}", su.s.host())),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    // So does a wrong INFRA_ACCESS_KEY.
    let out = su.run(
        "prod",
        &[("INFRA_ACCESS_KEY", "Nope012345.NopeSecret0123456789abc")],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grant_is_an_error_not_a_login() {
    let su = Setup::new().await;
    let out = su.run("secret", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains("secret") && err.contains("grant"), "{err}");
    assert!(!err.contains("infra login"), "{err}");
    assert!(token_files(&su.cache_dir()).is_empty(), "nothing cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_named() {
    let mut su = Setup::new().await;
    let token = token_of(&su.credential(&[]));
    su.s.stop();
    // Inside the margin but not expired: the cached token, with a warning.
    let out = su.run("prod", &[("INFRA_TOKEN_MARGIN", "100000")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cred: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(token_of(&cred), token);
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    // Expired: an error naming the server, nothing on stdout.
    su.expire_cache();
    let out = su.run("prod", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains(&su.s.host()), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_key_never_gets_another_identitys_token() {
    let su = Setup::new().await;
    let (bob_id, bob_key) = su.s.user_with_key("bob").await;
    su.s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": bob_id, "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    let alice = token_of(&su.credential(&[]));
    assert_eq!(claims(&alice)["name"], "alice");
    let bob = token_of(&su.credential(&[("INFRA_ACCESS_KEY", &bob_key)]));
    assert_eq!(claims(&bob)["name"], "bob");
    assert_eq!(token_files(&su.cache_dir()).len(), 2);
    // Both are cached, each for its own key.
    assert_eq!(token_of(&su.credential(&[])), alice);
    assert_eq!(
        token_of(&su.credential(&[("INFRA_ACCESS_KEY", &bob_key)])),
        bob
    );
    assert_eq!(su.minted().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_deletes_the_cached_tokens() {
    let su = Setup::new().await;
    su.credential(&[]);
    assert_eq!(token_files(&su.cache_dir()).len(), 1);
    let out = su.infra(&["logout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(token_files(&su.cache_dir()).is_empty());
    let out = su.run("prod", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

// ------------------------------------------------------------ the attacks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_infra_homes_logged_in_as_different_users_get_their_own_tokens() {
    let su = Setup::new().await;
    let (_, bob_key) = su.granted_user("bob").await;
    // One OS account, one cache directory, a second config home as bob.
    let home_b = su.m.home().join("work").join("infra");
    let b = [("INFRA_HOME", home_b.to_str().unwrap())];
    su.login(&bob_key, &b);

    let alice = token_of(&su.credential(&[]));
    assert_eq!(claims(&alice)["name"], "alice");
    let bob = token_of(&su.credential(&b));
    assert_eq!(claims(&bob)["name"], "bob", "home B got home A's token");
    // Each is served from its own cache entry from now on.
    for _ in 0..2 {
        assert_eq!(token_of(&su.credential(&[])), alice);
        assert_eq!(token_of(&su.credential(&b)), bob);
    }
    assert_eq!(su.minted().await, 2);
    assert_eq!(token_files(&su.cache_dir()).len(), 2);

    // Bob logs out of home B: his token goes, alice's stays and is used.
    let out = su.infra_with(&["logout"], &b);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(token_files(&su.cache_dir()).len(), 1);
    assert_eq!(token_of(&su.credential(&[])), alice);
    let out = su.run("prod", &b);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(su.minted().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_as_someone_else_never_serves_the_previous_users_token() {
    let su = Setup::new().await;
    let (_, bob_key) = su.granted_user("bob").await;
    let alice = token_of(&su.credential(&[]));
    assert_eq!(claims(&alice)["name"], "alice");
    su.login(&bob_key, &[]);
    let bob = token_of(&su.credential(&[]));
    assert_eq!(claims(&bob)["name"], "bob");
    assert_eq!(token_of(&su.credential(&[])), bob);
    assert_eq!(su.minted().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_clock_does_not_serve_a_token_whose_lifetime_is_over() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: INFRA_TEST_CLOCK_OFFSET_SECS exists in debug builds only");
        return;
    }
    let su = Setup::new().await;
    let clock = |offset: i64| offset.to_string();
    // The laptop's clock is two minutes slow.
    let slow = clock(-120);
    let first = su.credential(&[("INFRA_TEST_CLOCK_OFFSET_SECS", &slow)]);
    let t1 = token_of(&first);
    let (iat, exp) = {
        let c = claims(&t1);
        (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap())
    };
    assert_eq!(exp - iat, 300, "the server's default lifetime");
    // kubectl is told when the token expires by its own (slow) clock.
    let ts = first["status"]["expirationTimestamp"].as_str().unwrap();
    let told = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp();
    assert!((told - (exp - 120)).abs() <= 2, "told {told}, exp {exp}");
    // Five and a half minutes later, the clock still two minutes slow: the
    // token has been dead for 30 s, though by that clock `exp` is 90 s away.
    let later = clock(330 - 120);
    let t2 = token_of(&su.credential(&[("INFRA_TEST_CLOCK_OFFSET_SECS", &later)]));
    assert_ne!(t2, t1, "served a token whose lifetime was over");
    assert_eq!(su.minted().await, 2);

    // A clock ten minutes fast sees every token's `exp` in the past; it
    // must still mint once and then use the cache.
    let fast = clock(600);
    let t3 = token_of(&su.credential(&[("INFRA_TEST_CLOCK_OFFSET_SECS", &fast)]));
    assert_eq!(su.minted().await, 3);
    for _ in 0..3 {
        let t = token_of(&su.credential(&[("INFRA_TEST_CLOCK_OFFSET_SECS", &fast)]));
        assert_eq!(t, t3, "a fast clock minted again");
    }
    assert_eq!(su.minted().await, 3);
}

/// A shell that runs the plugin `times` times in a row, as one kubectl
/// process does when it asks again; returns the tokens it got.
fn from_one_process(su: &Setup, times: usize) -> Vec<String> {
    let call = r#""$0" tokens create --server "$1" --destination prod"#;
    // `; true` keeps the shell from replacing itself with the last call.
    let script = format!("{}; true", vec![call; times].join("; "));
    let mut c = Command::new("sh");
    su.env(&mut c);
    let out = c
        .arg("-c")
        .arg(script)
        .arg(common::bin())
        .arg(su.s.host())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| token_of(&serde_json::from_str(l).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_call_right_after_the_first_is_the_401_retry_and_mints() {
    let su = Setup::new().await;
    let t1 = token_of(&su.credential(&[]));
    assert_eq!(su.minted().await, 1);
    // Other processes, one after the other or all at once, each asking
    // once: all served from the cache, none taken for a retry.
    assert_eq!(from_one_process(&su, 1), std::slice::from_ref(&t1));
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = Command::new("sh");
            su.env(&mut c);
            c.arg("-c")
                .arg(r#""$0" tokens create --server "$1" --destination prod; true"#)
                .arg(common::bin())
                .arg(su.s.host())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(token_of(&serde_json::from_slice(&out.stdout).unwrap()), t1);
    }
    assert_eq!(su.minted().await, 1);

    // One process that got the cached token and asks again at once (what
    // kubectl does after a 401): a new token, not the refused one.
    let got = from_one_process(&su, 2);
    assert_eq!(got[0], t1, "the first call is served from the cache");
    assert_ne!(got[1], t1, "the retry got the token the cluster refused");
    assert_eq!(su.minted().await, 2);
    // The new token is cached for everyone else.
    assert_eq!(token_of(&su.credential(&[])), got[1]);
    assert_eq!(from_one_process(&su, 1), [got[1].clone()]);
    // A token minted in place of a refused one is not suspected again:
    // a process asking twice for it gets it twice (one forced refresh per
    // token lifetime, at most).
    assert_eq!(from_one_process(&su, 2), [got[1].clone(), got[1].clone()]);
    assert_eq!(su.minted().await, 2);
    // Once a token minted the usual way is in the cache, a retry is
    // recognised again.
    su.expire_cache();
    let t3 = token_of(&su.credential(&[]));
    assert_eq!(su.minted().await, 3);
    let got = from_one_process(&su, 2);
    assert_eq!(got[0], t3);
    assert_ne!(got[1], t3);
    assert_eq!(su.minted().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectls_retry_after_a_401_gets_a_new_token_not_the_cached_one() {
    let cluster = Cluster::start().await;
    let su = Setup::with_cluster(&cluster.url, &cluster.ca_pem).await;
    cluster.trust(&su.s);
    let t1 = token_of(&su.credential(&[]));
    assert_eq!(su.minted().await, 1);
    // The cluster refuses the cached token, valid as it looks here.
    cluster.refused.lock().unwrap().push(t1.clone());
    let kubectl = || {
        let mut c = Command::new("kubectl");
        su.env(&mut c);
        c.args([
            "--context",
            "infra:prod",
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods",
        ])
        .output()
        .unwrap()
    };
    // kubectl gets t1 from the cache, is answered 401, runs the plugin again.
    let first = kubectl();
    assert_eq!(
        su.minted().await,
        2,
        "kubectl's call after the 401 was served the refused token again: {}",
        stderr(&first)
    );
    assert!(!cluster.rejected.lock().unwrap().is_empty());
    // The new token is cached: the next kubectls work with it. (The Google
    // Cloud SDK's kubectl replays the 401 its version check got from its
    // HTTP cache and asks twice each time: that costs no more mints.)
    let rejected = cluster.rejected.lock().unwrap().len();
    for _ in 0..2 {
        let out = kubectl();
        assert!(out.status.success(), "{}", stderr(&out));
        let pods: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(pods["items"][0]["metadata"]["name"], POD);
    }
    assert_eq!(cluster.rejected.lock().unwrap().len(), rejected);
    assert_eq!(su.minted().await, 2);

    // With no token cached, kubectl's first call mints one; the cluster
    // refuses it; kubectl asks again at once: another is minted, not the
    // refused one served from the cache. (client-go does not send the
    // refused request again: that kubectl fails, the next one works.)
    // (Nor kubectl's HTTP cache, whose 401 replayed from the first part
    // would make it ask twice before any request.)
    for f in token_files(&su.cache_dir()) {
        std::fs::remove_file(f).unwrap();
    }
    let _ = std::fs::remove_dir_all(su.m.home().join(".kube/cache"));
    *cluster.state.refuse_new.lock().unwrap() = 1;
    let _ = kubectl();
    assert_eq!(su.minted().await, 4, "the retry minted a new token");
    let out = kubectl();
    assert!(
        out.status.success(),
        "kubectl's retry was served the token just refused: {}",
        stderr(&out)
    );
    assert_eq!(su.minted().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_removes_the_token_and_lock_files_of_its_home() {
    let su = Setup::new().await;
    su.credential(&[]);
    let dir = su.cache_dir();
    let names = file_names(&dir);
    assert_eq!(names.len(), 2, "a token and its lock: {names:?}");
    let out = su.infra(&["logout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_names(&dir), Vec::<String>::new(), "token and lock go");

    su.login(&su.alice_key, &[]);
    su.credential(&[]);
    let token = token_files(&dir)[0].clone();
    let stem = token.file_stem().unwrap().to_str().unwrap().to_string();
    let (home, rest) = stem.split_once('_').unwrap();
    let (server, _) = rest.split_once('_').unwrap();
    // Left over: the lock of a server this home was logged out of by an
    // older infra, and that infra's files (no home in their names).
    let leftovers = [
        format!("{home}_gone.example%3A8443_prod.lock"),
        format!("{server}_prod.token"),
        format!("{server}_prod.lock"),
    ];
    for f in &leftovers {
        std::fs::write(dir.join(f), "").unwrap();
    }
    // Another config home's entry for the same server is not this logout's.
    let other = format!("HFFFFFFFFFFFFFFFF_{server}_prod.token");
    std::fs::copy(&token, dir.join(&other)).unwrap();

    let out = su.infra(&["logout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_names(&dir), [other], "leftovers are gone too");
    let out = su.run("prod", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // The refusal left no lock file behind either.
    assert_eq!(file_names(&dir).len(), 1, "{:?}", file_names(&dir));
}

/// Whether process `pid` has `path` open (Linux: its `/proc/PID/fd`).
fn holds_open(pid: u32, path: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_kubeconfig_lock_does_not_block_login() {
    let su = Setup::new().await;
    let lock = su.m.home().join(".kube/config.lock");
    let kubectl = |args: &[&str]| {
        let mut c = Command::new("kubectl");
        su.env(&mut c);
        c.args(args).output().unwrap()
    };
    // As a kubectl killed while writing leaves it: empty, an hour old.
    let f = std::fs::File::create(&lock).unwrap();
    f.set_modified(SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();
    drop(f);
    // kubectl itself refuses to write until someone removes it.
    let out = kubectl(&["config", "use-context", "infra:prod"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("config.lock"), "{}", stderr(&out));

    let started = std::time::Instant::now();
    let err = su.login(&su.alice_key, &[]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        err.contains(&format!("removed the stale lock file {}", lock.display())),
        "{err}"
    );
    assert!(!lock.exists(), "no lock left behind");
    let out = kubectl(&["config", "use-context", "infra:prod"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A fresh one (a kubectl writing right now) is waited for, not removed.
    std::fs::File::create(&lock).unwrap();
    let mut c = Command::new(common::bin());
    su.env(&mut c);
    let login = c
        .args([
            "login",
            &su.s.host(),
            "--key",
            &su.alice_key,
            "--tls-trusted-fingerprint",
            &su.s.fingerprint(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it holds infra's own lock of the kubeconfig, it is at kubectl's
    // (a removal of a live lock would also be reported, checked below).
    let infra_lock = std::fs::canonicalize(su.m.home().join(".kube"))
        .unwrap()
        .join("config.infra.lock");
    common::wait_until_blocking("infra login to hold the kubeconfig's infra lock", || {
        holds_open(login.id(), &infra_lock)
    });
    assert!(lock.exists(), "a live lock was removed");
    std::fs::remove_file(&lock).unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("stale"), "{}", stderr(&out));
    assert!(!lock.exists());
}

// ------------------------------------------------------------ a real client

/// A loopback HTTPS stand-in for a cluster's API server: it accepts a
/// request only with a bearer token signed by a key in the infra server's
/// JWKS, issued by it, for `prod`, and answers the pods of `default`.
struct Cluster {
    url: String,
    ca_pem: String,
    seen: Arc<Mutex<Vec<Value>>>,
    rejected: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<String>>>,
    state: ClusterState,
    handle: axum_server::Handle<SocketAddr>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

#[derive(Clone)]
struct ClusterState {
    jwks_url: Arc<Mutex<String>>,
    issuer: Arc<Mutex<String>>,
    http: Arc<Mutex<Option<reqwest::Client>>>,
    seen: Arc<Mutex<Vec<Value>>>,
    rejected: Arc<Mutex<Vec<String>>>,
    /// Tokens answered 401 however valid they are (as by a connector whose
    /// clock is ahead, or that does not know the signing key yet).
    refused: Arc<Mutex<Vec<String>>>,
    /// How many tokens not seen before to refuse (added to `refused`).
    refuse_new: Arc<Mutex<usize>>,
}

const POD: &str = "web-6b7f9c5d4-x2x9q";

impl Cluster {
    async fn start() -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (ca_pem, cert_pem, key_pem) = common::private_ca();

        let state = ClusterState {
            jwks_url: Default::default(),
            issuer: Default::default(),
            http: Default::default(),
            seen: Default::default(),
            rejected: Default::default(),
            refused: Default::default(),
            refuse_new: Default::default(),
        };
        let app = axum::Router::new()
            .fallback(serve_cluster)
            .with_state(state.clone());
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert_pem.into_bytes(),
            key_pem.into_bytes(),
        )
        .await
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, config)
            .unwrap()
            .handle(handle.clone());
        tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        Cluster {
            url: format!("https://{addr}"),
            ca_pem,
            seen: state.seen.clone(),
            rejected: state.rejected.clone(),
            refused: state.refused.clone(),
            state,
            handle,
        }
    }

    /// Trust tokens from this infra server.
    fn trust(&self, s: &Server) {
        let st = &self.state;
        *st.jwks_url.lock().unwrap() = format!("{}/.well-known/jwks.json", s.url);
        *st.issuer.lock().unwrap() = s.url.clone();
        *st.http.lock().unwrap() = Some(s.client.clone());
    }
}

async fn serve_cluster(
    axum::extract::State(st): axum::extract::State<ClusterState>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let status = |code: StatusCode, reason: &str, message: String| {
        (
            code,
            axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16(),
            })),
        )
            .into_response()
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    if let Some(t) = &token {
        let mut new = st.refuse_new.lock().unwrap();
        let mut refused = st.refused.lock().unwrap();
        let seen = st.seen.lock().unwrap().iter().any(|c| c["_token"] == *t);
        if *new > 0 && !seen && !refused.contains(t) {
            *new -= 1;
            refused.push(t.clone());
        }
    }
    let claims = match token.clone() {
        None => Err("no bearer token".to_string()),
        Some(t) if st.refused.lock().unwrap().contains(&t) => {
            Err("token refused (expired by this cluster's clock)".to_string())
        }
        Some(t) => verify(&st, &t).await,
    };
    let claims = match claims {
        Ok(c) => c,
        Err(e) => {
            st.rejected.lock().unwrap().push(format!("{uri}: {e}"));
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", e);
        }
    };
    let mut claims = claims;
    claims["_token"] = json!(token.unwrap_or_default());
    st.seen.lock().unwrap().push(claims);
    if uri.path() != "/api/v1/namespaces/default/pods" {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} not found", uri.path()),
        );
    }
    axum::Json(json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "42"},
        "items": [{
            "metadata": {
                "name": POD, "namespace": "default",
                "uid": "8d3c1a52-4b43-4f0e-9a53-6f1c2e7a9b10",
                "resourceVersion": "41", "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": {"app": "web"},
            },
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}], "nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "10.0.0.7"},
        }],
    }))
    .into_response()
}

/// Checks a token the way a connector does: signature by `kid` from the
/// server's JWKS, `iss`, `aud`, `exp`.
async fn verify(st: &ClusterState, token: &str) -> Result<Value, String> {
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let jwks_url = st.jwks_url.lock().unwrap().clone();
    let issuer = st.issuer.lock().unwrap().clone();
    let http = st
        .http
        .lock()
        .unwrap()
        .clone()
        .ok_or("no server to trust")?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
    let kid = header.kid.ok_or("no kid")?;
    let jwks: JwkSet = http
        .get(&jwks_url)
        .send()
        .await
        .map_err(|e| format!("jwks: {e}"))?
        .json()
        .await
        .map_err(|e| format!("jwks: {e}"))?;
    let jwk = jwks.find(&kid).ok_or(format!("unknown kid {kid}"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("jwk: {e}"))?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["prod"]);
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| format!("token: {e}"))
}

/// `kubectl` as found on PATH, and the versioned binaries beside it.
fn kubectls() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kubectl = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is not on PATH (it comes with the Google Cloud CLI here)");
    let real = std::fs::canonicalize(&kubectl).unwrap();
    let dir = real.parent().unwrap();
    let mut out = vec![kubectl.clone()];
    for v in ["1.27", "1.33"] {
        let p = dir.join(format!("kubectl.{v}"));
        assert!(p.is_file(), "{} is missing", p.display());
        out.push(p);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_the_python_client_reach_a_cluster_through_the_plugin() {
    let cluster = Cluster::start().await;
    let su = Setup::with_cluster(&cluster.url, &cluster.ca_pem).await;
    cluster.trust(&su.s);
    let kubeconfig = su.m.home().join(".kube/config");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains("infra:prod"), "{text}");

    // The kubeconfig infra wrote asks for v1; a copy asks for v1beta1.
    let beta = su.m.home().join(".kube/config-v1beta1");
    let beta_text = text.replace(&format!("{V1}\n"), &format!("{V1BETA1}\n"));
    assert_ne!(beta_text, text);
    std::fs::write(&beta, beta_text).unwrap();

    let mut runs = 0;
    for kubectl in kubectls() {
        for config in [&kubeconfig, &beta] {
            // Each time from a cold cache, then warm.
            let _ = std::fs::remove_dir_all(su.cache_dir());
            for _ in 0..2 {
                let mut c = Command::new(&kubectl);
                su.env(&mut c);
                let out = c
                    .arg("--kubeconfig")
                    .arg(config)
                    .args([
                        "--context",
                        "infra:prod",
                        "get",
                        "--raw",
                        "/api/v1/namespaces/default/pods",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{} with {}: {}\n{}",
                    kubectl.display(),
                    config.display(),
                    stderr(&out),
                    String::from_utf8_lossy(&out.stdout)
                );
                let pods: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(pods["items"][0]["metadata"]["name"], POD);
                runs += 1;
            }
        }
    }
    let rejected = cluster.rejected.lock().unwrap().clone();
    assert!(
        rejected.is_empty(),
        "every request carried a valid token: {rejected:?}"
    );
    let seen = cluster.seen.lock().unwrap().clone();
    assert!(
        seen.len() >= runs,
        "{} requests for {runs} runs",
        seen.len()
    );
    assert!(
        seen.iter()
            .all(|c| c["name"] == "alice" && c["aud"] == "prod")
    );

    // The Python client, through the same kubeconfig.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/list_pods.py");
    let _ = std::fs::remove_dir_all(su.cache_dir());
    for _ in 0..2 {
        // tests/run.sh installs the client into the tests' own venv.
        let python = std::env::var("INFRA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut c = Command::new(python);
        su.env(&mut c);
        let out = c
            .arg(&script)
            .args(["infra:prod", "default"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python (run the tests with tests/run.sh, which installs the kubernetes package): {}",
            stderr(&out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), POD);
    }
    assert!(cluster.seen.lock().unwrap().len() >= seen.len() + 2);
    assert!(cluster.rejected.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_cluster_refuses_other_tokens() {
    // A test of the test: without a token from the infra server, no pods.
    let cluster = Cluster::start().await;
    let s = Server::start(Backend::Sqlite).await;
    cluster.trust(&s);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cluster.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("{}/api/v1/namespaces/default/pods", cluster.url);
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let forged = "eyJhbGciOiJFUzI1NiIsImtpZCI6IngifQ.eyJhdWQiOiJwcm9kIn0.c2ln";
    let resp = http.get(&url).bearer_auth(forged).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // A real token for another destination is refused too.
    let (uid, key) = s.user_with_key("carol").await;
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "stage", "url": "https://127.0.0.1:3"})),
        201,
    )
    .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": uid, "destination": "stage", "role": "view"})),
        201,
    )
    .await;
    let (status, t) = s
        .call(
            "POST",
            "/api/tokens",
            Some(&key),
            Some(json!({"destination": "stage"})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let resp = http
        .get(&url)
        .bearer_auth(t["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(cluster.seen.lock().unwrap().is_empty());
    assert_eq!(cluster.rejected.lock().unwrap().len(), 3);
}

/// What `infra login` writes for kubectl is the small credential plugin
/// beside infra: it answers warm calls itself and hands the rest to infra.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_runs_the_small_credential_plugin() {
    let su = Setup::new().await;
    let view = Command::new("kubectl")
        .args([
            "config",
            "view",
            "-o",
            "jsonpath={.users[?(@.name==\"infra:prod\")].user.exec.command}",
            "--kubeconfig",
        ])
        .arg(su.m.home().join(".kube/config"))
        .output()
        .unwrap();
    let command = PathBuf::from(String::from_utf8_lossy(&view.stdout).trim());
    assert_eq!(
        command.file_name().unwrap(),
        "infra-credential",
        "{command:?}"
    );
    assert_eq!(
        command.parent(),
        common::bin().canonicalize().unwrap().parent()
    );
    // Each from a process of its own, as kubectl calls from a script.
    let run = |exe: &Path| {
        let mut c = Command::new("sh");
        su.env(&mut c);
        c.args(["-c", r#""$0" "$@"; exit $?"#])
            .arg(exe)
            .args([
                "tokens",
                "create",
                "--server",
                &su.s.host(),
                "--destination",
                "prod",
            ])
            .output()
            .unwrap()
    };
    // No token yet: infra mints it (exec'd by the plugin), exactly once.
    let before = su.minted().await;
    let first = run(&command);
    assert!(first.status.success(), "{}", stderr(&first));
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_credential(&first, V1BETA1);
    assert_eq!(su.minted().await, before + 1);
    // Warm: the plugin answers from the cache (another process, so not a retry).
    let out = run(&command);
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(token_of(&again), token_of(&first));
    assert_eq!(su.minted().await, before + 1, "served from the cache");

    // Alone, without infra beside it, a miss says what is wrong.
    let lonely = tempfile::tempdir().unwrap();
    let copy = lonely.path().join("infra-credential");
    std::fs::copy(&command, &copy).unwrap();
    su.expire_cache();
    let out = run(&copy);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("infra executable installed beside it"),
        "{}",
        stderr(&out)
    );
}
