//! Recent sign-in per grant: `infra grants add DEST ... --max-auth-age 15m`
//! makes the server refuse a cluster token for DEST unless the person
//! signed in at the identity provider within that window (the ID token's
//! `auth_time`), and `infra login SERVER --reauth` asks the provider for a
//! new sign-in (`max_age=0`, `prompt=login`). Against a real OpenID
//! provider (npm `oidc-provider`), with `infra tokens create` run as kubectl
//! runs it, on the server's test clock.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{ADMIN_KEY, Backend, Browser, Machine, OidcProvider, Server, free_port};
use serde_json::{Value, json};

/// What kubectl puts in the environment of an exec plugin.
const EXEC_INFO: &str = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

struct Setup {
    _idp: OidcProvider,
    s: Server,
    /// alice's machine, on the server's clock.
    m: Machine,
}

/// A provider that puts alice in `sre`, a server with three clusters:
/// `prod` (sre admin, sign-in within 15m), `staging` (sre edit, within 15m)
/// and `dev` (sre edit, no bound), the grants made with the CLI.
async fn setup(idp_env: &[(&str, &str)]) -> Setup {
    let mut env = vec![("OIDC_GROUPS", r#"{"alice":["sre"]}"#)];
    env.extend_from_slice(idp_env);
    let idp = OidcProvider::start_with(&env);
    let s = Server::start(Backend::Sqlite).await;
    s.ok(
        "POST",
        "/api/providers",
        Some(json!({"name": "corp", "url": idp.issuer, "clientID": "infra-test", "clientSecret": "infra-test-secret"})),
        201,
    )
    .await;
    let ca = std::fs::read_to_string(s.data_dir.join("tls.crt")).unwrap();
    for dest in ["prod", "staging", "dev"] {
        s.ok(
            "POST",
            "/api/destinations",
            Some(json!({"name": dest, "url": "https://127.0.0.1:6443", "ca": ca})),
            201,
        )
        .await;
    }
    s.ok("POST", "/api/groups", Some(json!({"name": "sre"})), 201)
        .await;
    let admin = Machine::new();
    admin.login_admin(&s);
    for args in [
        &["prod", "--role", "admin", "--max-auth-age", "15m"][..],
        &["staging", "--role", "edit", "--max-auth-age", "15m"][..],
        &["dev", "--role", "edit"][..],
    ] {
        let mut all = vec!["grants", "add", "--group", "sre"];
        all.extend_from_slice(args);
        admin.ok(&all);
    }
    let mut m = Machine::new();
    m.use_clock(&s.clock);
    Setup { _idp: idp, s, m }
}

/// A running `infra login`, with its stderr collected.
struct LoginRun {
    child: Child,
    url_rx: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

fn start_login(m: &Machine, s: &Server, port: u16, extra: &[&str]) -> LoginRun {
    let mut child = m
        .cmd()
        .args([
            "login",
            &s.host(),
            "--tls-trusted-fingerprint",
            &s.fingerprint(),
            "--no-browser",
            "--listen-port",
            &port.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, url_rx) = mpsc::channel();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let acc = stderr.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(u) = line.trim().strip_prefix("http").map(|r| format!("http{r}")) {
                let _ = tx.send(u);
            }
            let mut a = acc.lock().unwrap();
            a.push_str(&line);
            a.push('\n');
        }
    });
    LoginRun {
        child,
        url_rx,
        stderr,
        reader,
    }
}

impl LoginRun {
    fn auth_url(&self) -> String {
        self.url_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no sign-in URL printed: {}", self.stderr.lock().unwrap()))
    }

    fn finish(mut self) -> (i32, String) {
        let status = common::wait_for_exit(&mut self.child, "infra login");
        common::wait_until_blocking("infra login's stderr to end", || self.reader.is_finished());
        let err = self.stderr.lock().unwrap().clone();
        (status.code().unwrap_or(-1), err)
    }
}

/// alice signs in with `browser` (which keeps the provider's session
/// cookies); returns the authorization URL the CLI printed, the exit code
/// and stderr of `infra login`.
async fn login(
    m: &Machine,
    s: &Server,
    browser: &Browser,
    extra: &[&str],
) -> (url::Url, i32, String) {
    let port = free_port();
    let run = start_login(m, s, port, extra);
    let url = run.auth_url();
    let back = browser
        .sign_in(&url, "alice", &format!("http://localhost:{port}"))
        .await;
    let (status, page) = browser.visit(&back).await;
    assert_eq!(status, 200, "{page}");
    let (code, err) = run.finish();
    (url::Url::parse(&url).unwrap(), code, err)
}

fn query(u: &url::Url) -> std::collections::HashMap<String, String> {
    u.query_pairs().into_owned().collect()
}

/// `infra tokens create` for `dest`, as kubectl runs it (the args of the
/// kubeconfig, KUBERNETES_EXEC_INFO, no terminal), with a "browser" that
/// leaves a mark if anything opens it.
fn exec_plugin(m: &Machine, s: &Server, dest: &str) -> Output {
    let marker = m.home().join("browser-was-opened");
    let launcher = m.home().join("browser.sh");
    if !launcher.exists() {
        std::fs::write(
            &launcher,
            format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = m
        .cmd()
        .args([
            "tokens",
            "create",
            "--server",
            &s.host(),
            "--destination",
            dest,
        ])
        .env("KUBERNETES_EXEC_INFO", EXEC_INFO)
        .env("BROWSER", &launcher)
        .env("DISPLAY", ":0")
        .output()
        .unwrap();
    assert!(!marker.exists(), "infra tokens create opened a browser");
    out
}

/// The token's expiry from a successful exec plugin run, in Unix seconds.
fn credential_expiry(out: &Output) -> i64 {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    let cred: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cred["kind"], "ExecCredential");
    assert!(
        cred["status"]["token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let ts = cred["status"]["expirationTimestamp"].as_str().unwrap();
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

fn assert_reauth_refusal(out: &Output, s: &Server, dest: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(4), "the auth exit code: {err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(
        err.contains(&format!("{dest} asks for a sign-in within 15m"))
            && err.contains(&format!("run 'infra login {} --reauth'", s.host())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_asks_for_a_recent_sign_in_and_reauth_gives_one_for_every_cluster() {
    let t = setup(&[]).await;
    let (s, m) = (&t.s, &t.m);
    let browser = Browser::new();

    // A plain sign-in: the provider does not say when the person
    // authenticated (no max_age was asked), so nothing shows a recent one.
    let (url, code, err) = login(m, s, &browser, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!query(&url).contains_key("max_age"), "{url}");
    assert_eq!(browser.login_forms_shown(), 1);

    // The grant without the option works as ever; the others refuse, with
    // the auth exit code and what to run, and no browser.
    credential_expiry(&exec_plugin(m, s, "dev"));
    let out = exec_plugin(m, s, "prod");
    assert_reauth_refusal(&out, s, "prod");
    assert_reauth_refusal(&exec_plugin(m, s, "staging"), s, "staging");

    // Signing in again the plain way rides on the provider's session: no
    // login form, and still refused.
    let (_, code, err) = login(m, s, &browser, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        browser.login_forms_shown(),
        1,
        "the provider kept its session"
    );
    assert_reauth_refusal(&exec_plugin(m, s, "prod"), s, "prod");

    // --reauth: the provider is asked for a new authentication, shows its
    // login form although it holds a session, and says when (auth_time).
    let (url, code, err) = login(m, s, &browser, &["--reauth"]).await;
    assert_eq!(code, 0, "{err}");
    let q = query(&url);
    assert_eq!(q["max_age"], "0", "{url}");
    assert!(
        q["prompt"].split(' ').any(|p| p == "login"),
        "prompt=login: {url}"
    );
    assert_eq!(browser.login_forms_shown(), 2, "the provider asked again");
    let signed_in = s.clock.now();

    // One fresh sign-in covers every cluster that asks for one.
    let prod_exp = credential_expiry(&exec_plugin(m, s, "prod"));
    credential_expiry(&exec_plugin(m, s, "staging"));
    credential_expiry(&exec_plugin(m, s, "dev"));
    assert!(prod_exp <= s.clock.now() + 300, "short-lived: {prod_exp}");

    // 12 minutes on: a new token (the first expired), which lives no longer
    // than the sign-in's window, so no cache serves it past that.
    s.advance_clock(12 * 60);
    let exp = credential_expiry(&exec_plugin(m, s, "prod"));
    assert!(exp > prod_exp, "a new token");
    assert!(
        exp <= signed_in + 15 * 60,
        "capped at auth_time + 15m: exp {exp}, signed in by {signed_in}"
    );
    assert!(exp < s.clock.now() + 240, "shorter than a token lives");

    // 16 minutes on: the window is over. Refused again, for every cluster
    // that asks, and the others keep working.
    s.advance_clock(4 * 60);
    assert_reauth_refusal(&exec_plugin(m, s, "prod"), s, "prod");
    assert_reauth_refusal(&exec_plugin(m, s, "staging"), s, "staging");
    credential_expiry(&exec_plugin(m, s, "dev"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_ignores_max_age_cannot_pass_an_old_sign_in_off_as_new() {
    // The provider's clock is 30 minutes behind: every auth_time it gives
    // says the person authenticated half an hour ago, as a provider that
    // ignores max_age and reuses an old session would.
    let t = setup(&[("OIDC_CLOCK_OFFSET", "-1800")]).await;
    let browser = Browser::new();
    let (url, code, err) = login(&t.m, &t.s, &browser, &["--reauth"]).await;
    assert_eq!(query(&url)["max_age"], "0");
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("authenticate you again") && err.contains("max_age"),
        "{err}"
    );
    // No session was made.
    let out = exec_plugin(&t.m, &t.s, "dev");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_auth_age_is_checked_listed_and_asks_password_sessions_for_a_provider_sign_in() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let s = Server::start(backend).await;
        let (bob, key) = s.user_with_key("bob").await;
        for (bad, why) in [
            ("0s", "at least"),
            ("25h", "at most 24h"),
            ("soon", "duration"),
        ] {
            let (status, v) = s
                .admin(
                    "POST",
                    "/api/grants",
                    Some(json!({"user": bob, "destination": "prod", "role": "view", "maxAuthAge": bad})),
                )
                .await;
            assert_eq!(status, 400, "{bad}: {v}");
            assert_eq!(v["fieldErrors"][0]["fieldName"], "maxAuthAge", "{v}");
            assert!(v["message"].as_str().unwrap().contains(why), "{bad}: {v}");
        }
        let (status, v) = s
            .admin(
                "POST",
                "/api/grants",
                Some(json!({"user": bob, "destination": "infra", "role": "view", "maxAuthAge": "15m"})),
            )
            .await;
        assert_eq!(status, 400, "the infra destination mints no tokens: {v}");

        let g = s
            .ok(
                "POST",
                "/api/grants",
                Some(json!({"user": bob, "destination": "prod", "role": "view", "maxAuthAge": "900s"})),
                201,
            )
            .await;
        assert_eq!(g["maxAuthAge"], "15m");
        let g = s
            .ok(
                "POST",
                "/api/grants",
                Some(json!({"user": bob, "destination": "dev", "role": "view"})),
                201,
            )
            .await;
        assert!(g.get("maxAuthAge").is_none(), "omitted when none: {g}");
        let listed = s
            .ok("GET", &format!("/api/grants?user={bob}"), None, 200)
            .await;
        let ages: Vec<(String, Value)> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["destination"].as_str().unwrap().into(),
                    g["maxAuthAge"].clone(),
                )
            })
            .collect();
        assert_eq!(
            ages,
            [("dev".into(), Value::Null), ("prod".into(), json!("15m"))]
        );

        // A password session shows no sign-in at the provider at all.
        let (status, v) = s
            .call(
                "POST",
                "/api/tokens",
                Some(&key),
                Some(json!({"destination": "prod"})),
            )
            .await;
        assert_eq!(status, 403, "{v}");
        assert_eq!(v["reason"], "reauth_required", "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.starts_with("prod asks for a sign-in within 15m through your identity provider")
                && msg.contains("--reauth"),
            "{msg}"
        );
        let (status, v) = s
            .call(
                "POST",
                "/api/tokens",
                Some(&key),
                Some(json!({"destination": "dev"})),
            )
            .await;
        assert_eq!(status, 201, "no bound on dev: {v}");
        assert!(v.get("reason").is_none());

        // The CLI shows the bound.
        let admin = Machine::new();
        admin.ok(&[
            "login",
            &s.host(),
            "--key",
            ADMIN_KEY,
            "--tls-trusted-fingerprint",
            &s.fingerprint(),
        ]);
        // (Not on a terminal: tab-separated rows, no header.)
        let table = admin.ok(&["grants", "list", "--user", "bob"]);
        let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(
            rows,
            [
                vec!["user:bob", "view", "dev", "-"],
                vec!["user:bob", "view", "prod", "15m"]
            ],
            "{table}"
        );
        let out = admin.run(&[
            "grants",
            "add",
            "dev",
            "--user",
            "bob",
            "--role",
            "edit",
            "--max-auth-age",
            "2d",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("at most 24h"), "{}", stderr(&out));
    }
}
