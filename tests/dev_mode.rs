//! `infra server --dev` (an embedded OpenID provider) and providers given
//! by flags (`--oidc-issuer-url …`), through the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Backend, Browser, Machine, OidcProvider, Server, ServerOptions, free_port};
use serde_json::{Value, json};

fn dev_options() -> ServerOptions {
    let mut o = ServerOptions::new(Backend::Sqlite);
    o.extra_args = vec!["--dev".into()];
    o
}

/// A browser that trusts the server's certificate and fills in the dev sign-in form.
async fn dev_sign_in(s: &Server, auth_url: &str, user: &str, groups: &str) -> String {
    let pem = std::fs::read(s.data_dir.join("tls.crt")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(auth_url).send().await.unwrap();
    assert_eq!(form.status().as_u16(), 200);
    assert_eq!(form.headers()["x-frame-options"], "DENY");
    let html = form.text().await.unwrap();
    assert!(html.contains("Development mode"), "{html}");
    let rid = html
        .split("name=\"rid\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let resp = http
        .post(format!("{}/oidc/authorize", s.url))
        .form(&[
            ("rid", rid.as_str()),
            ("username", user),
            ("groups", groups),
        ])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    // The form cannot be posted twice.
    let again = http
        .post(format!("{}/oidc/authorize", s.url))
        .form(&[("rid", rid.as_str()), ("username", user)])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 400);
    resp.headers()["location"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_login_end_to_end() {
    let s = Server::start_with(dev_options()).await;
    let log = s.stderr();
    assert!(log.contains("DEVELOPMENT MODE: NO REAL SECURITY"), "{log}");
    assert!(log.contains("signs in ANYONE"), "{log}");
    // A cluster granted to a group the person will type in.
    let ca = std::fs::read_to_string(s.data_dir.join("tls.crt")).unwrap();
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "prod", "url": "https://127.0.0.1:6443", "ca": ca})),
        201,
    )
    .await;
    let sre = s
        .ok("POST", "/api/groups", Some(json!({"name": "sre"})), 201)
        .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": sre["id"], "destination": "prod", "role": "edit"})),
        201,
    )
    .await;

    let m = Machine::new();
    let port = free_port();
    let mut child = m
        .cmd()
        .args([
            "login",
            &s.host(),
            "--no-browser",
            "--listen-port",
            &port.to_string(),
            "--tls-trusted-fingerprint",
            &s.fingerprint(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("a sign-in URL").unwrap();
        if let Some(u) = line.trim().strip_prefix("https://") {
            break format!("https://{u}");
        }
    };
    assert!(
        url.starts_with(&format!("{}/oidc/authorize", s.url)),
        "{url}"
    );
    let back = dev_sign_in(&s, &url, "alice", "admins, sre").await;
    assert!(
        back.starts_with(&format!("http://localhost:{port}/?code=")),
        "{back}"
    );
    let (status, _) = Browser::new().visit(&back).await;
    assert_eq!(status, 200);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("Logged in") && l.contains("alice@example.com")),
        "{rest:?}"
    );

    // The server says what comes next: a connector for a cluster.
    let log = s.stderr();
    assert!(
        log.contains("alice@example.com signed in. Next, to reach a cluster")
            && log.contains("infra connector --name local"),
        "{log}"
    );

    // The groups she typed arrived: she is an admin and has the cluster.
    let users = m.ok(&["users", "list"]);
    assert!(users.contains("alice@example.com"), "{users}");
    let kube = std::fs::read_to_string(m.home().join(".kube/config")).unwrap();
    assert!(kube.contains("infra:prod"), "{kube}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_relying_party_accepts_the_dev_provider() {
    let s = Server::start_with(dev_options()).await;
    let log = s.stderr();
    let field = |name: &str| {
        log.split(&format!("{name} "))
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let (id, secret) = (field("id"), field("secret"));
    let node = std::env::var("INFRA_TEST_NODE").unwrap_or_else(|_| "node".into());
    let script = std::path::Path::new(
        &std::env::var("INFRA_TEST_OIDC_PROVIDER").expect("run with tests/run.sh"),
    )
    .with_file_name("rp_check.mjs");
    let out = Command::new(node)
        .arg(script)
        .args([format!("{}/oidc", s.url), id, secret])
        .env("NODE_EXTRA_CA_CERTS", s.data_dir.join("tls.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["claims"]["iss"], format!("{}/oidc", s.url));
    assert_eq!(v["claims"]["email"], "rp-user@example.com");
    assert_eq!(v["claims"]["groups"], json!(["team-a", "team-b"]));
    assert_eq!(v["userinfo"]["name"], "rp-user");
    assert_eq!(v["refreshed"], true);
}

#[test]
fn dev_mode_refuses_a_remote_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args([
            "server",
            "--dev",
            "--listen",
            "0.0.0.0:0",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--dev-allow-remote") && err.contains("0.0.0.0"),
        "{err}"
    );
    assert!(!dir.path().join("infra.db").exists(), "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_allow_remote_lets_it_listen_and_a_restart_means_signing_in_again() {
    let mut o = dev_options();
    o.extra_args.extend([
        "--dev-allow-remote".into(),
        "--listen".into(),
        "0.0.0.0:0".into(),
    ]);
    let mut s = Server::start_with(o).await;
    // The test plays the CLI against the dev provider.
    let (_, providers) = s.call("GET", "/api/providers", None, None).await;
    let p = providers["items"][0].clone();
    assert_eq!(p["name"], "dev");
    let port = free_port();
    let a = infra::login::Attempt::new(port);
    let scopes: Vec<String> = p["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    let url = a
        .authorization_url(
            p["authURL"].as_str().unwrap(),
            p["clientID"].as_str().unwrap(),
            &scopes,
        )
        .unwrap();
    let url = url.replace("https://localhost:", "https://127.0.0.1:");
    let back = dev_sign_in(&s, &url, "bob", "").await;
    let q: std::collections::HashMap<_, _> = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let (status, login) = s
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"oidc": {"providerID": p["id"], "code": q["code"],
            "redirectURL": a.redirect_url, "codeVerifier": a.code_verifier, "nonce": a.nonce}})),
        )
        .await;
    assert_eq!(status, 201, "{login}");
    let key = login["accessKey"].as_str().unwrap().to_string();
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200);

    s.stop();
    let mut o = dev_options();
    o.data_dir = Some(s.data_dir.clone());
    let s2 = Server::start_with(o).await;
    let (status, _) = s2.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(
        status, 401,
        "the dev provider's sessions end with the server"
    );
    drop(s);
}

/// A private CA and a certificate signed by it, written to files.
fn private_ca_files(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (ca, cert, key) = common::private_ca();
    let (ca_path, cert_path, key_path) =
        (dir.join("ca.pem"), dir.join("idp.pem"), dir.join("idp.key"));
    std::fs::write(&ca_path, ca).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (ca_path, cert_path, key_path)
}

fn flags(idp: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--oidc-issuer-url",
        idp,
        "--oidc-issuer-client-id",
        "infra-test",
        "--oidc-provider-name",
        "corp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Runs `infra server` expecting it to refuse to start.
fn refused(args: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::bin())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(args)
        .env("INFRA_OIDC_ISSUER_CLIENT_SECRET", "infra-test-secret")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = common::wait_for_exit(&mut child, "the server that should refuse to start");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_flags_register_at_start_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca_files(dir.path());
    let idp = OidcProvider::start_with(&[
        ("OIDC_TLS_CERT", cert.to_str().unwrap()),
        ("OIDC_TLS_KEY", key.to_str().unwrap()),
    ]);
    assert!(idp.issuer.starts_with("https://"));

    // Without the CA: refused at start, naming the problem.
    let err = refused(&flags(&idp.issuer, &[]));
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );

    // With it: registered, and a sign-in through it works end to end.
    let mut o = ServerOptions::new(Backend::Sqlite);
    o.extra_args = flags(&idp.issuer, &["--oidc-ca-file", ca.to_str().unwrap()]);
    o.env = vec![(
        "INFRA_OIDC_ISSUER_CLIENT_SECRET".into(),
        "infra-test-secret".into(),
    )];
    let s = Server::start_with(o).await;
    let (_, providers) = s.call("GET", "/api/providers", None, None).await;
    let p = providers["items"][0].clone();
    assert_eq!(p["name"], "corp");
    assert!(!s.stderr().contains("infra-test-secret"));

    let port = free_port();
    let a = infra::login::Attempt::new(port);
    let scopes: Vec<String> = p["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    let url = a
        .authorization_url(p["authURL"].as_str().unwrap(), "infra-test", &scopes)
        .unwrap();
    let browser = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let back = common::Browser::with_client(browser)
        .sign_in(&url, "carol", &format!("http://localhost:{port}"))
        .await;
    let q: std::collections::HashMap<_, _> = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let (status, login) = s
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"oidc": {"providerID": p["id"], "code": q["code"],
            "redirectURL": a.redirect_url, "codeVerifier": a.code_verifier, "nonce": a.nonce}})),
        )
        .await;
    assert_eq!(status, 201, "{login}");
    assert_eq!(login["name"], "carol@example.com");
}

#[test]
fn a_mismatched_issuer_is_refused_at_start() {
    let idp = OidcProvider::start();
    let wrong = idp.issuer.replace("127.0.0.1", "localhost");
    let err = refused(&flags(&wrong, &[]));
    assert!(err.contains("issuer mismatch"), "{err}");
    assert!(
        err.contains(&wrong) && err.contains(&idp.issuer),
        "names both: {err}"
    );
}

/// The quickstart's fixed ports (8443, 8301): one test at a time.
static QUICKSTART: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `infra server --dev`, then `infra login localhost:8443` in a terminal,
/// the certificate trusted, up to the browser being opened: the server
/// (killed on drop), the login's terminal and the sign-in URL.
async fn quickstart_until_the_browser(
    m: &Machine,
) -> (
    std::process::Child,
    common::KillOnDrop,
    common::Terminal,
    String,
) {
    let mut server = Command::new(common::bin())
        .args(["server", "--dev"])
        .env("HOME", m.home())
        .env("XDG_DATA_HOME", m.home().join(".local/share"))
        .env_remove("INFRA_ADMIN_ACCESS_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = common::KillOnDrop(server.id());
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on https://127.0.0.1:8443") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(log.contains("DEVELOPMENT MODE"), "{log}");

    // A browser launcher that hands the URL to the test.
    let seen = m.home().join("url");
    let launcher = m.home().join("browser.sh");
    std::fs::write(
        &launcher,
        format!("#!/bin/sh\necho \"$1\" > {}\n", seen.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = common::Terminal::command(&common::bin(), &["login", "localhost:8443"]);
    cmd.env("HOME", m.home())
        .env("INFRA_HOME", m.infra_home())
        .env("KUBECONFIG", m.home().join(".kube/config"))
        .env("BROWSER", &launcher)
        .env("DISPLAY", ":0")
        .env_remove("INFRA_ACCESS_KEY")
        .env_remove("INFRA_SERVER");
    let mut login = common::Terminal::start(cmd);
    login.wait_for("[y/N]");
    login.type_keys("y\n");
    let url = common::wait_for("the browser to be opened", async || {
        let url = std::fs::read_to_string(&seen).unwrap_or_default();
        let url = url.trim();
        (!url.is_empty()).then(|| url.to_string())
    })
    .await;
    assert!(
        url.starts_with("https://127.0.0.1:8443/oidc/authorize"),
        "the browser was opened: {url:?}"
    );
    (server, guard, login, url)
}

/// The README's quickstart, exactly as written, from a clean HOME:
/// `infra server --dev`, then `infra login localhost:8443` in a terminal
/// (trust the certificate, sign in in the browser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_works_as_written() {
    let _one = QUICKSTART.lock().await;
    let m = Machine::new();
    let (mut server, _server_guard, login, url) = quickstart_until_the_browser(&m).await;

    // The person signs in in a real browser (Chromium, which enforces the
    // pages' Content-Security-Policy as people's browsers do; told to accept
    // the self-signed certificate, as they would).
    let report = common::chromium_script(
        "quickstart_pages.mjs",
        &[
            ("SIGNIN_URL", url.as_str()),
            ("LOGIN", "newcomer"),
            ("GROUPS", "admins"),
            ("BACK_PREFIX", "http://localhost:8301/"),
        ],
    )
    .await;
    assert!(
        report["final"]
            .as_str()
            .unwrap()
            .starts_with("http://localhost:8301/"),
        "{report}"
    );
    // The page says who, once the server took the sign-in.
    assert!(
        report["text"]
            .as_str()
            .unwrap()
            .contains("signed in to infra as newcomer@example.com"),
        "{report}"
    );
    let (code, screen) = login.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("SHA-256 fingerprint"), "{screen}");
    assert!(
        screen.contains("Logged in to localhost:8443 as newcomer@example.com"),
        "{screen}"
    );
    let status: Value = serde_json::from_str(&m.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status[0]["status"], "valid");
    // "Then, as an admin:" — the README's commands, as written there.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("Then, as an admin:")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the quickstart's admin commands");
    let mut ran = 0;
    for line in block.lines().filter(|l| l.starts_with("infra ")) {
        let words = shlex::split(line).unwrap();
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        m.ok(&args);
        ran += 1;
    }
    assert!(ran >= 3, "{block}");
    let grants = m.ok(&["grants", "list", "--format", "json"]);
    assert!(grants.contains("\"prod\""), "{grants}");
    let _ = server.kill();
    let _ = server.wait();
}

/// The browser says "signed in" only when the server took the sign-in: a
/// name the server refuses (Kubernetes' reserved `system:`) gets a page
/// that says it failed, and the CLI says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_says_signed_in_only_after_the_server_took_it() {
    let _one = QUICKSTART.lock().await;
    let m = Machine::new();
    let (mut server, _server_guard, login, url) = quickstart_until_the_browser(&m).await;
    let report = common::chromium_script(
        "quickstart_pages.mjs",
        &[
            ("SIGNIN_URL", url.as_str()),
            ("LOGIN", "system:masters"),
            ("BACK_PREFIX", "http://localhost:8301/"),
            ("EXPECT", "sign-in failed"),
        ],
    )
    .await;
    let text = report["text"].as_str().unwrap();
    assert!(
        !text.to_lowercase().contains("you are signed in"),
        "{report}"
    );
    assert!(text.contains("infra did not accept it"), "{report}");
    let (code, screen) = login.finish();
    assert_ne!(code, 0, "{screen}");
    assert!(screen.contains("system:"), "the CLI says why: {screen}");
    let _ = server.kill();
    let _ = server.wait();
}

/// The dev provider is `--dev`'s own: an admin cannot edit it into a broken
/// state (sign-in would then fail in the CLI while the browser said all
/// was well) or remove it; other providers stay editable.
#[tokio::test]
async fn the_dev_provider_is_read_only() {
    let s = Server::start_with(dev_options()).await;
    let m = Machine::new();
    m.login_admin(&s);
    for args in [
        &["providers", "edit", "dev", "--client-secret", "X"][..],
        &["providers", "remove", "dev"][..],
    ] {
        let out = m.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("built into `infra server --dev`"),
            "{args:?}: {err}"
        );
    }
    // It is still there, as it was.
    let p = s.ok("GET", "/api/providers?name=dev", None, 200).await;
    assert_eq!(p["items"].as_array().unwrap().len(), 1, "{p}");
}

/// Switches read their variable as people write it: `INFRA_DEV=1` is
/// `--dev` (here refused on a non-loopback address, which shows it was
/// taken), `INFRA_DEV=0` is not.
#[test]
fn infra_dev_1_is_dev_mode() {
    for (value, dev) in [("1", true), ("yes", true), ("true", true), ("0", false)] {
        let out = Command::new(common::bin())
            .args(["server", "--listen", "192.0.2.1:1", "--ephemeral"])
            .env("INFRA_DEV", value)
            .env_remove("INFRA_ADMIN_ACCESS_KEY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("invalid value"), "INFRA_DEV={value}: {err}");
        assert_eq!(
            err.contains("--dev signs in anyone"),
            dev,
            "INFRA_DEV={value}: {err}"
        );
        if !dev {
            // Not dev mode: it tried to listen there (an address not its own).
            assert!(!out.status.success(), "{err}");
        }
    }
}
