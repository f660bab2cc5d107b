//! `infra login SERVER` through a real OpenID provider (npm `oidc-provider`):
//! the CLI's loopback listener, a "browser" that fills in the provider's
//! forms, the server's code exchange and checks, and the kubeconfig.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{ADMIN_KEY, Backend, Browser, Machine, OidcProvider, Server, free_port};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "idp-admin-token";

struct Setup {
    idp: OidcProvider,
    s: Server,
    provider: Value,
}

async fn setup(idp_env: &[(&str, &str)]) -> Setup {
    let mut env = vec![
        ("OIDC_ADMIN_TOKEN", ADMIN_TOKEN),
        ("OIDC_GROUPS", r#"{"alice":["sre","dev"]}"#),
    ];
    env.extend_from_slice(idp_env);
    let idp = OidcProvider::start_with(&env);
    let s = Server::start(Backend::Sqlite).await;
    let provider = s
        .ok(
            "POST",
            "/api/providers",
            Some(json!({"name": "corp", "url": idp.issuer, "clientID": "infra-test", "clientSecret": "infra-test-secret"})),
            201,
        )
        .await;
    // A cluster, granted to the sre group (which alice's provider asserts).
    let ca = std::fs::read_to_string(s.data_dir.join("tls.crt")).unwrap();
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "prod", "url": "https://127.0.0.1:6443", "ca": ca})),
        201,
    )
    .await;
    s.ok("POST", "/api/groups", Some(json!({"name": "sre"})), 201)
        .await;
    let sre = s.ok("GET", "/api/groups?name=sre", None, 200).await["items"][0]["id"].clone();
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": sre, "destination": "prod.web", "role": "edit"})),
        201,
    )
    .await;
    Setup { idp, s, provider }
}

/// A running `infra login`, with its stderr collected.
struct LoginRun {
    child: Child,
    url_rx: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Collects stderr; ends when the pipe does.
    reader: std::thread::JoinHandle<()>,
}

fn start_login(m: &Machine, s: &Server, extra: &[&str], env: &[(&str, &str)]) -> LoginRun {
    let mut cmd = m.cmd();
    cmd.args([
        "login",
        &s.host(),
        "--tls-trusted-fingerprint",
        &s.fingerprint(),
    ])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
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

    fn finish(mut self) -> (i32, String, String) {
        let mut stdout = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        // All of stderr, to the end of the pipe.
        common::wait_until_blocking("infra login's stderr to end", || self.reader.is_finished());
        let err = self.stderr.lock().unwrap().clone();
        (status.code().unwrap_or(-1), stdout, err)
    }
}

fn kubeconfig(m: &Machine) -> Value {
    let out = std::process::Command::new("kubectl")
        .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
        .arg(m.home().join(".kube/config"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl reads the kubeconfig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn context_names(k: &Value) -> Vec<String> {
    let mut v: Vec<String> = k["contexts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_signs_in_and_writes_the_kubeconfig() {
    let t = setup(&[]).await;
    let m = Machine::new();
    // Someone's existing kubeconfig, with tricky values, must survive.
    std::fs::create_dir_all(m.home().join(".kube")).unwrap();
    let existing = "apiVersion: v1\nkind: Config\ncurrent-context: home\nclusters:\n- name: home\n  cluster:\n    server: https://10.0.0.1:6443\n    insecure-skip-tls-verify: true\ncontexts:\n- name: home\n  context:\n    cluster: home\n    user: me\n    namespace: \"0123\"\nusers:\n- name: me\n  user:\n    token: \"yes\"\npreferences: {}\n";
    std::fs::write(m.home().join(".kube/config"), existing).unwrap();
    let before = kubeconfig(&m);

    let port = free_port();
    let run = start_login(
        &m,
        &t.s,
        &["--no-browser", "--listen-port", &port.to_string()],
        &[],
    );
    let url = run.auth_url();
    assert!(url.starts_with(&t.idp.issuer), "{url}");
    let browser = Browser::new();
    let back = browser
        .sign_in(&url, "alice", &format!("http://localhost:{port}"))
        .await;
    let (status, page) = browser.visit(&back).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("close this tab"), "{page}");
    let (code, stdout, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout, "", "nothing but data on stdout");
    assert!(
        err.contains("Logged in to") && err.contains("alice@example.com"),
        "{err}"
    );

    // The user and their provider groups arrived on the server.
    let users =
        t.s.ok("GET", "/api/users?name=alice@example.com", None, 200)
            .await;
    let alice = users["items"][0]["id"].as_str().unwrap().to_string();
    let groups = t.s.ok("GET", "/api/groups", None, 200).await;
    let names: Vec<&str> = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"dev") && names.contains(&"sre"),
        "{names:?}"
    );
    let sre = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "sre")
        .unwrap();
    assert_eq!(sre["totalUsers"], 1);
    let mine =
        t.s.ok(
            "GET",
            &format!("/api/grants?user={alice}&showInherited=true"),
            None,
            200,
        )
        .await;
    assert_eq!(mine["items"][0]["destination"], "prod.web");

    // The kubeconfig has the granted cluster, and the old entries as they were.
    let after = kubeconfig(&m);
    assert_eq!(context_names(&after), ["home", "infra:prod.web"]);
    assert_eq!(after["current-context"], "home");
    for kind in ["clusters", "users", "contexts"] {
        let old: Vec<&Value> = before[kind].as_array().unwrap().iter().collect();
        for entry in old {
            assert!(
                after[kind].as_array().unwrap().contains(entry),
                "{kind} entry changed: {entry}"
            );
        }
    }
    let ctx = after["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "infra:prod.web")
        .unwrap();
    assert_eq!(ctx["context"]["namespace"], "web");
    let user = after["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "infra:prod")
        .unwrap();
    let exec = &user["user"]["exec"];
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(exec["interactiveMode"], "Never");
    assert_eq!(exec["provideClusterInfo"], true);
    assert!(std::path::Path::new(exec["command"].as_str().unwrap()).is_absolute());
    let args: Vec<&str> = exec["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "tokens",
            "create",
            "--server",
            &t.s.host(),
            "--destination",
            "prod"
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(m.home().join(".kube/config"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // The key works, and logout takes the contexts away again.
    m.ok(&["grants", "list"]);
    m.ok(&["logout"]);
    assert_eq!(context_names(&kubeconfig(&m)), ["home"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_state_is_refused_and_the_listener_keeps_waiting() {
    let t = setup(&[]).await;
    let m = Machine::new();
    let port = free_port();
    let run = start_login(
        &m,
        &t.s,
        &["--no-browser", "--listen-port", &port.to_string()],
        &[],
    );
    let url = run.auth_url();
    let browser = Browser::new();
    for bad in [
        "?code=forged&state=wrong",
        "?code=forged",
        "?error=access_denied",
    ] {
        let (status, page) = browser
            .visit(&format!("http://localhost:{port}/{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}: {page}");
        assert!(page.contains("does not belong"), "{page}");
    }
    let back = browser
        .sign_in(&url, "alice", &format!("http://localhost:{port}"))
        .await;
    let (status, _) = browser.visit(&back).await;
    assert_eq!(status, 200);
    let (code, _, err) = run.finish();
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_error_is_shown_in_the_browser_and_the_terminal() {
    let t = setup(&[]).await;
    let m = Machine::new();
    let port = free_port();
    let run = start_login(
        &m,
        &t.s,
        &["--no-browser", "--listen-port", &port.to_string()],
        &[],
    );
    let url = run.auth_url();
    let browser = Browser::new();
    let back = browser
        .abort(&url, &format!("http://localhost:{port}"))
        .await;
    assert!(back.contains("error=access_denied"), "{back}");
    let (status, page) = browser.visit(&back).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("access_denied"),
        "the provider's error is shown: {page}"
    );
    let (code, _, err) = run.finish();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("access_denied"), "{err}");
    assert!(m.config_files().is_empty(), "nothing saved");
}

/// The test plays the CLI: its own state, nonce and PKCE, then the server's login.
async fn code_for(t: &Setup, login: &str) -> (infra::login::Attempt, String) {
    let port = free_port();
    let attempt = infra::login::Attempt::new(port);
    let scopes: Vec<String> = t.provider["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let url = attempt
        .authorization_url(
            t.provider["authURL"].as_str().unwrap(),
            "infra-test",
            &scopes,
        )
        .unwrap();
    let back = Browser::new()
        .sign_in(&url, login, &format!("http://localhost:{port}"))
        .await;
    let u = url::Url::parse(&back).unwrap();
    let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(q["state"], attempt.state);
    (attempt, q["code"].clone())
}

async fn server_login(
    t: &Setup,
    a: &infra::login::Attempt,
    code: &str,
    nonce: &str,
) -> (u16, Value) {
    t.s.call(
        "POST",
        "/api/login",
        None,
        Some(json!({"oidc": {
            "providerID": t.provider["id"], "code": code, "redirectURL": a.redirect_url,
            "codeVerifier": a.code_verifier, "nonce": nonce,
        }})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_checks_code_nonce_verifier_and_claims() {
    let t = setup(&[("OIDC_ACCOUNTS", r#"{"nameless":{"name":null,"email":null,"email_verified":null,"preferred_username":null,"groups":null}}"#)]).await;

    // A good exchange, then the same code again: refused by the provider.
    let (a, code) = code_for(&t, "bob").await;
    let (status, ok) = server_login(&t, &a, &code, &a.nonce).await;
    assert_eq!(status, 201, "{ok}");
    assert_eq!(ok["name"], "bob@example.com");
    let (status, err) = server_login(&t, &a, &code, &a.nonce).await;
    assert_eq!(status, 401, "a replayed code is refused: {err}");
    assert!(
        err["message"].as_str().unwrap().contains("invalid_grant"),
        "{err}"
    );

    // A nonce other than the one in the authorization request.
    let (a, code) = code_for(&t, "bob").await;
    let (status, err) = server_login(&t, &a, &code, "not-the-nonce").await;
    assert_eq!(status, 401, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("nonce"),
        "{err}"
    );

    // A PKCE verifier that does not match the challenge.
    let (mut a, code) = code_for(&t, "bob").await;
    a.code_verifier = infra::login::random_token();
    let nonce = a.nonce.clone();
    let (status, err) = server_login(&t, &a, &code, &nonce).await;
    assert_eq!(status, 401, "{err}");

    // UserInfo with neither name nor email.
    let (a, code) = code_for(&t, "nameless").await;
    let (status, err) = server_login(&t, &a, &code, &a.nonce).await;
    assert_eq!(status, 401, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("email") && msg.contains("name"), "{msg}");

    // An ID token made out to another audience.
    let resp = reqwest::Client::new()
        .post(format!("{}/__admin/tamper", t.idp.issuer))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"idTokenAudience": "someone-else"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let (a, code) = code_for(&t, "bob").await;
    let (status, err) = server_login(&t, &a, &code, &a.nonce).await;
    assert_eq!(status, 401, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("audience"),
        "{err}"
    );

    // Every failure is audited, with no code or token in it.
    let audit =
        t.s.ok("GET", "/api/audit?action=login", None, 200)
            .await
            .to_string();
    assert!(audit.contains("oidc:"), "{audit}");
    assert!(!audit.contains(&code));

    // Six exchanges, one fetch of the provider's discovery document and
    // keys: a login whose keys are known fetches nothing.
    let metrics = reqwest::get(t.s.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("infra_issuer_fetches_total 1\n"),
        "{metrics}"
    );
}

/// Made-up codes for the provider (whose id is public), from one address.
async fn junk_logins(
    client: reqwest::Client,
    url: String,
    provider_id: String,
    n: usize,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let resp = client
            .post(format!("{url}/api/login"))
            .header("Infra-Version", common::VERSION)
            .json(&json!({"oidc": {
                "providerID": provider_id, "code": format!("junk-{i}"),
                "redirectURL": "http://localhost:8301", "codeVerifier": infra::login::random_token(),
                "nonce": "junk",
            }}))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    statuses
}

/// Eight junk logins once locked everyone out of SSO for five minutes:
/// failures were counted per provider. Now a flood from 127.0.0.2 holds
/// back 127.0.0.2 only, and alice signs in with the CLI from 127.0.0.1
/// while it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_login_flood_from_another_address_does_not_stop_sso() {
    let t = setup(&[]).await;
    let pem = std::fs::read(t.s.data_dir.join("tls.crt")).unwrap();
    let attacker = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let provider_id = t.provider["id"].as_str().unwrap().to_string();
    let flood = |n| junk_logins(attacker.clone(), t.s.url.clone(), provider_id.clone(), n);

    // It floods, and goes on while alice signs in.
    let first = flood(21).await;
    let more = tokio::spawn(flood(30));
    let m = Machine::new();
    let port = free_port();
    let run = start_login(
        &m,
        &t.s,
        &["--no-browser", "--listen-port", &port.to_string()],
        &[],
    );
    let url = run.auth_url();
    let browser = Browser::new();
    let back = browser
        .sign_in(&url, "alice", &format!("http://localhost:{port}"))
        .await;
    let (status, page) = browser.visit(&back).await;
    assert_eq!(status, 200, "{page}");
    let (code, _, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("alice@example.com"), "{err}");
    // The flood ran into its own address's limit: 20 failures.
    assert!(first[..20].iter().all(|s| *s == 401), "{first:?}");
    assert_eq!(first[20], 429, "{first:?}");
    let statuses = more.await.unwrap();
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 20,
        "the flood stayed held back: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_id_token_is_refused() {
    let t = setup(&[("OIDC_CLOCK_OFFSET", "-7200")]).await;
    let (a, code) = code_for(&t, "bob").await;
    let (status, err) = server_login(&t, &a, &code, &a.nonce).await;
    assert_eq!(status, 401, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("expired"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_port_timeout_and_no_browser_output() {
    let t = setup(&[]).await;
    let m = Machine::new();
    // The port is taken: say so and name the flag, nothing saved.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = start_login(&m, &t.s, &["--no-browser", "--listen-port", &port], &[]);
    let (code, _, err) = run.finish();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&port) && err.contains("--listen-port"),
        "{err}"
    );
    assert!(
        !err.contains("open this URL"),
        "no sign-in URL when nobody can receive it: {err}"
    );

    // Nobody signs in: a clear timeout.
    let port = free_port().to_string();
    let run = start_login(
        &m,
        &t.s,
        &["--no-browser", "--listen-port", &port],
        &[("INFRA_LOGIN_TIMEOUT", "2s")],
    );
    let url = run.auth_url();
    assert!(url.contains("code_challenge_method=S256"));
    let (code, stdout, err) = run.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("open this URL"), "{err}");
    assert_eq!(stdout, "");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_port_is_8301_and_a_busy_one_is_reported() {
    let t = setup(&[]).await;
    let m = Machine::new();
    // Hold 8301 ourselves (if something else holds it, the message is the same).
    let _hold = std::net::TcpListener::bind("127.0.0.1:8301");
    let run = start_login(&m, &t.s, &["--no-browser"], &[]);
    let (code, _, err) = run.finish();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("8301") && err.contains("--listen-port"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_launcher_never_writes_to_stdout() {
    let t = setup(&[]).await;
    let m = Machine::new();
    // A "browser" that chatters on stdout and hands the URL to the test.
    let seen = m.home().join("opened-url");
    let launcher = m.home().join("browser.sh");
    std::fs::write(
        &launcher,
        format!(
            "#!/bin/sh\necho 'browser says hello on stdout'\necho \"$1\" > {}\n",
            seen.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let run = start_login(
        &m,
        &t.s,
        &["--listen-port", &port.to_string()],
        &[("BROWSER", launcher.to_str().unwrap()), ("DISPLAY", ":0")],
    );
    let printed = run.auth_url();
    let opened = common::wait_for("the launcher to be run", async || {
        Some(std::fs::read_to_string(&seen).unwrap_or_default()).filter(|o| !o.is_empty())
    })
    .await;
    assert_eq!(
        opened.trim(),
        printed,
        "the launcher got the URL that was printed"
    );
    let browser = Browser::new();
    let back = browser
        .sign_in(&printed, "alice", &format!("http://localhost:{port}"))
        .await;
    browser.visit(&back).await;
    let (code, stdout, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout, "", "the launcher's chatter stayed off stdout");
    assert!(err.contains("Opening your browser"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_login_writes_the_kubeconfig_too() {
    let t = setup(&[]).await;
    let m = Machine::new();
    let bob =
        t.s.ok("POST", "/api/users", Some(json!({"name": "bob"})), 201)
            .await;
    t.s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": bob["id"], "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    let key =
        t.s.ok(
            "POST",
            "/api/access-keys",
            Some(json!({"userID": bob["id"]})),
            201,
        )
        .await;
    m.ok(&[
        "login",
        &t.s.host(),
        "--key",
        key["accessKey"].as_str().unwrap(),
        "--tls-trusted-fingerprint",
        &t.s.fingerprint(),
    ]);
    assert_eq!(context_names(&kubeconfig(&m)), ["infra:prod"]);
    // The grant goes away: the next login removes the context.
    let g =
        t.s.ok(
            "GET",
            &format!("/api/grants?user={}", bob["id"].as_str().unwrap()),
            None,
            200,
        )
        .await;
    t.s.ok(
        "DELETE",
        &format!("/api/grants/{}", g["items"][0]["id"].as_str().unwrap()),
        None,
        204,
    )
    .await;
    m.ok(&[
        "login",
        &t.s.host(),
        "--key",
        key["accessKey"].as_str().unwrap(),
    ]);
    assert!(context_names(&kubeconfig(&m)).is_empty());
    let _ = ADMIN_KEY;
}

/// Twenty `infra login` processes at once, each for another server name
/// (and so other kubeconfig entries), on one machine: the kubeconfig and
/// the config file end up valid, with every entry present, and the entries
/// infra does not own untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_logins_share_one_kubeconfig() {
    let mut o = common::ServerOptions::new(Backend::Sqlite);
    o.extra_args = vec!["--listen".into(), "0.0.0.0:0".into()];
    let s = Server::start_with(o).await;
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let ca = std::fs::read_to_string(s.data_dir.join("tls.crt")).unwrap();
    let mut keys = Vec::new();
    for i in 0..20 {
        let dest = format!("d{i:02}");
        s.ok(
            "POST",
            "/api/destinations",
            Some(json!({"name": dest, "url": format!("https://10.0.0.{i}:443"), "ca": ca})),
            201,
        )
        .await;
        let u = s
            .ok(
                "POST",
                "/api/users",
                Some(json!({"name": format!("user{i:02}")})),
                201,
            )
            .await;
        s.ok(
            "POST",
            "/api/grants",
            Some(json!({"user": u["id"], "destination": dest, "role": "view"})),
            201,
        )
        .await;
        let k = s
            .ok(
                "POST",
                "/api/access-keys",
                Some(json!({"userID": u["id"]})),
                201,
            )
            .await;
        keys.push(k["accessKey"].as_str().unwrap().to_string());
    }
    let m = Machine::new();
    std::fs::create_dir_all(m.home().join(".kube")).unwrap();
    std::fs::write(
        m.home().join(".kube/config"),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: home\n  cluster: {server: 'https://10.1.1.1'}\ncontexts:\n- name: home\n  context: {cluster: home, user: me}\nusers:\n- name: me\n  user: {token: \"0123\"}\ncurrent-context: home\n",
    )
    .unwrap();
    let fp = s.fingerprint();
    let children: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            // 127.0.0.2 … 127.0.0.21: twenty names for the one server.
            m.cmd()
                .args([
                    "login",
                    &format!("127.0.0.{}:{port}", i + 2),
                    "--key",
                    key,
                    "--tls-trusted-fingerprint",
                    &fp,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let k = kubeconfig(&m);
    let mut want: Vec<String> = (0..20).map(|i| format!("infra:d{i:02}")).collect();
    want.push("home".into());
    want.sort();
    assert_eq!(context_names(&k), want);
    assert_eq!(k["current-context"], "home");
    let home_user = k["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "me")
        .unwrap();
    assert_eq!(
        home_user["user"]["token"], "0123",
        "a string that looks like a number stays a string"
    );
    let status: Value = serde_json::from_str(&m.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(
        status.as_array().unwrap().len(),
        20,
        "every login is in the config file"
    );
}
