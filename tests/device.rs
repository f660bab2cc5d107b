//! Sign-in without a local browser: `infra login SERVER --device` and the
//! server's web sign-in, against a real OpenID provider (npm
//! `oidc-provider`), with an HTTP client (cookies on, no automatic
//! redirects) playing the person's browser, and once with a real headless
//! Chromium (`tests/oidc/device_pages.mjs`).
//!
//! The provider must know the server's callback, `https://127.0.0.1:PORT/
//! login/callback`, exactly: oidc-provider lets a "native" client use any
//! port only on http loopback URIs, and refuses https loopback URIs for
//! native clients altogether. So each test starts the server first (on a
//! port the OS picks), then the provider as a "web" client with
//! `OIDC_REDIRECT_URIS` = that callback, then registers the provider with
//! the server through the API, which needs no restart.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{Backend, Browser, Machine, OidcProvider, Server, ServerOptions};
use serde_json::{Value, json};

struct Setup {
    s: Server,
    provider: Value,
    _idp: OidcProvider,
}

async fn setup(backend: Backend, server_args: &[&str]) -> Setup {
    let mut opts = ServerOptions::new(backend);
    opts.extra_args = server_args.iter().map(|a| a.to_string()).collect();
    let s = Server::start_with(opts).await;
    let idp = OidcProvider::start_with(&[
        ("OIDC_APPLICATION_TYPE", "web"),
        ("OIDC_REDIRECT_URIS", &callback_url(&s)),
        ("OIDC_GROUPS", r#"{"alice":["sre","dev"]}"#),
    ]);
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
    Setup {
        s,
        provider,
        _idp: idp,
    }
}

fn callback_url(s: &Server) -> String {
    format!("{}/login/callback", s.url)
}

// ------------------------------------------------------------------ the browser

/// One page as the browser got it.
#[derive(Debug, Clone)]
struct Page {
    url: String,
    status: u16,
    location: Option<String>,
    retry_after: Option<String>,
    frame_options: Option<String>,
    csp: Option<String>,
    body: String,
}

impl Page {
    /// The value of the hidden input `name`.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let rest = self
            .body
            .split(&marker)
            .nth(1)
            .unwrap_or_else(|| panic!("no hidden {name} on {}: {}", self.url, self.body));
        rest.split('"').next().unwrap().to_string()
    }
}

/// A person's browser on the server's pages: its own cookie jar, shared
/// with the `common::Browser` that fills in the provider's forms. Every
/// page of the server it sees is kept, to check them all at the end.
#[derive(Clone)]
struct Web {
    client: reqwest::Client,
    base: String,
    pages: Arc<Mutex<Vec<Page>>>,
}

impl Web {
    fn new(s: &Server) -> Web {
        let pem = std::fs::read(s.data_dir.join("tls.crt")).unwrap();
        Web {
            client: reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: s.url.clone(),
            pages: Arc::default(),
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    async fn page(&self, resp: reqwest::Response) -> Page {
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let (location, retry_after, frame_options, csp) = (
            header("location"),
            header("retry-after"),
            header("x-frame-options"),
            header("content-security-policy"),
        );
        let page = Page {
            url,
            status,
            location: location.map(|l| {
                url::Url::parse(&self.base)
                    .unwrap()
                    .join(&l)
                    .unwrap()
                    .to_string()
            }),
            retry_after,
            frame_options,
            csp,
            body: resp.text().await.unwrap(),
        };
        self.pages.lock().unwrap().push(page.clone());
        page
    }

    async fn get(&self, path: &str) -> Page {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        self.page(resp).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let resp = self
            .client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap();
        self.page(resp).await
    }

    /// Opens the code page and sends `typed`; returns the answer.
    async fn enter_code(&self, link: &str, typed: &str) -> Page {
        let form = self.get(link).await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.hidden("csrf");
        self.post("/device", &[("user_code", typed), ("csrf", &csrf)])
            .await
    }

    /// Enters the code, signs in at the provider as `login`, and comes back
    /// to the approval page.
    async fn sign_in(&self, s: &Server, typed: &str, login: &str) -> Page {
        let sent = self.enter_code("/device", typed).await;
        assert_eq!(sent.status, 303, "{}", sent.body);
        let to_provider = sent.location.clone().unwrap();
        let back = Browser::with_client(self.client.clone())
            .sign_in(&to_provider, login, &callback_url(s))
            .await;
        let cb = self.get(&back).await;
        assert_eq!(cb.status, 303, "the callback: {}", cb.body);
        let confirm = cb.location.clone().unwrap();
        assert!(confirm.contains("/device/confirm?attempt="), "{confirm}");
        let page = self.get(&confirm).await;
        assert_eq!(page.status, 200, "{}", page.body);
        page
    }

    /// Presses Approve or Deny on an approval page.
    async fn answer(&self, confirm: &Page, decision: &str) -> Page {
        self.post(
            "/device/confirm",
            &[
                ("csrf", &confirm.hidden("csrf")),
                ("attempt", &confirm.hidden("attempt")),
                ("decision", decision),
            ],
        )
        .await
    }

    /// Every page seen so far refused framing; none held `secret`.
    fn check_pages(&self, secrets: &[&str]) {
        let pages = self.pages.lock().unwrap();
        assert!(!pages.is_empty());
        for p in pages.iter() {
            assert_eq!(p.frame_options.as_deref(), Some("DENY"), "{}", p.url);
            let csp = p.csp.as_deref().unwrap_or("");
            assert!(csp.contains("frame-ancestors 'none'"), "{}: {csp}", p.url);
            assert!(csp.contains("default-src 'none'"), "{}: {csp}", p.url);
            for s in secrets {
                assert!(!p.body.contains(s), "{} shows a secret: {}", p.url, p.body);
            }
        }
    }
}

// ------------------------------------------------------------------ the CLI

/// A running `infra login`, with its stderr collected.
struct LoginRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
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
    // A person at a machine with a desktop, unless a test says otherwise.
    .env("DISPLAY", ":0")
    .env_remove("SSH_CONNECTION")
    .env_remove("BROWSER")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, lines) = mpsc::channel();
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let acc = stderr.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            let mut a = acc.lock().unwrap();
            a.push_str(&line);
            a.push('\n');
        }
    });
    LoginRun {
        child,
        lines,
        stderr,
        reader,
    }
}

/// What the CLI told the person.
struct Prompt {
    verification_uri: String,
    complete: String,
    code: String,
}

fn is_user_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 9
        && b[4] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || b"BCDFGHJKLMNPQRSTVWXZ".contains(c))
}

impl LoginRun {
    fn prompt(&self) -> Prompt {
        let (mut uri, mut complete, mut code) = (None, None, None);
        while uri.is_none() || complete.is_none() || code.is_none() {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!("no device prompt printed: {}", self.stderr.lock().unwrap())
                });
            let t = line.trim();
            if t.starts_with("https://") && t.contains("user_code=") {
                complete = Some(t.to_string());
            } else if t.starts_with("https://") {
                uri = Some(t.to_string());
            } else if is_user_code(t) {
                code = Some(t.to_string());
            }
        }
        Prompt {
            verification_uri: uri.unwrap(),
            complete: complete.unwrap(),
            code: code.unwrap(),
        }
    }

    fn finish(mut self) -> (i32, String, String) {
        let mut stdout = String::new();
        use std::io::Read;
        let out = self.child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = out;
            let _ = out.read_to_string(&mut stdout);
            stdout
        });
        let status = common::wait_for_exit(&mut self.child, "infra login");
        let stdout = reader.join().unwrap();
        // All of stderr, to the end of the pipe.
        common::wait_until_blocking("infra login's stderr to end", || self.reader.is_finished());
        let err = self.stderr.lock().unwrap().clone();
        (status.code().unwrap_or(-1), stdout, err)
    }
}

impl Drop for LoginRun {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- infra login's stderr:\n{}", self.stderr.lock().unwrap());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubeconfig(m: &Machine) -> Value {
    let text = std::fs::read_to_string(m.home().join(".kube/config")).unwrap_or_default();
    serde_saphyr::from_str(&text).unwrap_or(Value::Null)
}

fn context_names(k: &Value) -> Vec<String> {
    k["contexts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `infra_http_requests_total` for one route and status.
async fn requests(s: &Server, route: &str, status: u16) -> u64 {
    let text = s.metrics().await;
    text.lines()
        .filter(|l| {
            l.starts_with("infra_http_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status=\"{status}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn audit(s: &Server, action: &str) -> Vec<Value> {
    s.ok("GET", &format!("/api/audit?action={action}"), None, 200)
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// `POST /api/device` as a device would, without a key.
async fn new_device(s: &Server) -> Value {
    let (status, v) = s.call("POST", "/api/device", None, Some(json!({}))).await;
    assert_eq!(status, 201, "{v}");
    v
}

async fn poll(s: &Server, device: &Value) -> Value {
    let (status, v) = s
        .call(
            "POST",
            "/api/device/status",
            None,
            Some(json!({"deviceCode": device["deviceCode"]})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

// ------------------------------------------------------------------ tests

async fn cli_device_login(backend: Backend) {
    let t = setup(backend, &["--device-poll-interval", "1s"]).await;
    let m = Machine::new();
    let run = start_login(&m, &t.s, &["--device"], &[]);
    let p = run.prompt();
    assert_eq!(p.verification_uri, format!("{}/device", t.s.url));
    assert_eq!(
        p.complete,
        format!("{}/device?user_code={}", t.s.url, p.code)
    );

    // The person takes a moment; the CLI polls meanwhile (twice, a second apart).
    common::wait_until("the CLI to poll twice", async || {
        requests(&t.s, "/api/device/status", 200).await >= 2
    })
    .await;
    let web = Web::new(&t.s);
    let form = web.get(&p.complete).await;
    assert!(
        form.body.contains(&format!("value=\"{}\"", p.code)),
        "the link fills in the code: {}",
        form.body
    );
    let confirm = web.sign_in(&t.s, &p.code, "alice").await;
    assert!(
        confirm.body.contains("alice@example.com"),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains(&p.code), "{}", confirm.body);
    assert!(confirm.body.contains("corp"), "{}", confirm.body);
    let done = web.answer(&confirm, "approve").await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Device signed in"), "{}", done.body);

    let (code, stdout, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout, "", "nothing but data on stdout");
    assert!(
        err.contains(&format!("Logged in to {} as alice@example.com", t.s.host())),
        "{err}"
    );
    assert!(!err.contains("note:"), "asked for, so no note: {err}");
    // Stored and written exactly like a browser login: the kubeconfig has
    // the granted cluster, and the key works.
    assert_eq!(context_names(&kubeconfig(&m)), ["infra:prod.web"]);
    let reachable = m.ok(&["list", "--format", "json"]);
    assert!(reachable.contains("prod"), "{reachable}");
    web.check_pages(&[]);

    // The CLI waited its interval every time: polled, and never told to slow down.
    let polls = requests(&t.s, "/api/device/status", 200).await;
    assert!(polls >= 2, "the CLI polled {polls} times");
    assert!(audit(&t.s, "device.poll").await.is_empty());
    let logins = audit(&t.s, "login").await;
    assert!(
        logins
            .iter()
            .any(|e| e["result"] == "success" && e["detail"] == "device"),
        "{logins:?}"
    );
}

async fn api_flow_reuse_and_slow_down(backend: Backend) {
    let t = setup(backend, &[]).await;
    let s = &t.s;
    let d = new_device(s).await;
    // RFC 8628's answer, with the defaults.
    let code = d["userCode"].as_str().unwrap().to_string();
    assert!(is_user_code(&code), "{d}");
    assert_eq!(d["verificationURI"], format!("{}/device", s.url));
    assert_eq!(
        d["verificationURIComplete"],
        format!("{}/device?user_code={code}", s.url)
    );
    assert_eq!(d["expiresIn"], 600);
    assert_eq!(d["interval"], 5);
    let device_code = d["deviceCode"].as_str().unwrap().to_string();
    assert!(device_code.len() >= 43);

    // Polling faster than the interval: slow_down, and the interval grows by 5 s.
    let first = poll(s, &d).await;
    assert_eq!(first["status"], "authorization_pending", "{first}");
    assert_eq!(first["interval"], 5);
    let second = poll(s, &d).await;
    assert_eq!(second["status"], "slow_down", "{second}");
    assert_eq!(second["interval"], 10);
    let third = poll(s, &d).await;
    assert_eq!(third["status"], "slow_down", "{third}");
    assert_eq!(third["interval"], 15);
    let slow = audit(s, "device.poll").await;
    assert_eq!(slow.len(), 2, "{slow:?}");
    assert!(slow.iter().all(|e| e["result"] == "slow_down"));

    // Two browsers sign in for the same code; the code is typed in lower
    // case, with a space for the dash.
    let typed = code.to_lowercase().replace('-', " ");
    let a = Web::new(s);
    let b = Web::new(s);
    let confirm_a = a.sign_in(s, &typed, "alice").await;
    let confirm_b = b.sign_in(s, &code, "bob").await;
    assert!(confirm_b.body.contains("bob@example.com"));

    // The first answer wins; the second approval of the same code fails.
    let done = a.answer(&confirm_a, "approve").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let again = b.answer(&confirm_b, "approve").await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains("already approved"), "{}", again.body);
    let replay = a.answer(&confirm_a, "approve").await;
    assert_eq!(replay.status, 409, "{}", replay.body);

    // The first poll after approval gets a new key, whatever its timing.
    let ok = poll(s, &d).await;
    assert_eq!(ok["status"], "approved", "{ok}");
    assert_eq!(ok["name"], "alice@example.com");
    let key = ok["accessKey"].as_str().unwrap().to_string();
    let user = ok["userID"].as_str().unwrap();
    assert!(!ok["expires"].as_str().unwrap().is_empty());
    let (status, grants) = s
        .call(
            "GET",
            &format!("/api/grants?user={user}&showInherited=true"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{grants}");
    assert_eq!(grants["items"][0]["destination"], "prod.web");

    // Single use: the next poll is refused, and so is the code in a browser.
    let used = poll(s, &d).await;
    assert_eq!(used["status"], "invalid_grant", "{used}");
    assert!(used.get("accessKey").is_none());
    let later = Web::new(s).enter_code("/device", &code).await;
    assert_eq!(later.status, 409, "{}", later.body);
    assert!(later.body.contains("already used"), "{}", later.body);

    // No page showed the key or the device code; all refuse framing.
    for w in [&a, &b] {
        w.check_pages(&[&key, &device_code]);
    }
    // Nor did the audit log keep them.
    let log = s.ok("GET", "/api/audit", None, 200).await.to_string();
    assert!(!log.contains(&key) && !log.contains(&device_code));
    assert!(log.contains("device.approve"), "{log}");
}

async fn denied_without_a_display(backend: Backend) {
    let t = setup(backend, &["--device-poll-interval", "1s"]).await;
    let m = Machine::new();
    // No --device: an SSH session without X forwarding chooses it.
    let run = start_login(
        &m,
        &t.s,
        &[],
        &[
            ("SSH_CONNECTION", "10.1.2.3 50000 10.1.2.4 22"),
            ("DISPLAY", ""),
        ],
    );
    let p = run.prompt();
    let web = Web::new(&t.s);
    let confirm = web.sign_in(&t.s, &p.code, "alice").await;
    let done = web.answer(&confirm, "deny").await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Sign-in denied"), "{}", done.body);
    let (code, stdout, err) = run.finish();
    assert_eq!(code, 4, "denied means authentication needed: {err}");
    assert_eq!(stdout, "");
    let note: Vec<&str> = err.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(note.len(), 1, "{err}");
    assert!(
        note[0].contains("SSH") && note[0].contains("--device"),
        "{err}"
    );
    assert!(err.contains("denied"), "{err}");
    assert!(m.config_files().is_empty(), "nothing saved");
    assert!(context_names(&kubeconfig(&m)).is_empty());
    assert_eq!(audit(&t.s, "device.deny").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_ends_the_cli_and_the_page_says_so() {
    let t = setup(
        Backend::Sqlite,
        &["--device-code-ttl", "2s", "--device-poll-interval", "1s"],
    )
    .await;
    let m = Machine::new();
    let run = start_login(&m, &t.s, &["--device"], &[]);
    let p = run.prompt();
    let raw = new_device(&t.s).await;
    assert_eq!(raw["expiresIn"], 2);
    // Both codes' two seconds pass on the server's clock.
    t.s.advance_clock(3);
    let (code, _, err) = run.finish();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("--device"), "says how to start again: {err}");
    assert!(m.config_files().is_empty(), "nothing saved");
    let late = poll(&t.s, &raw).await;
    assert_eq!(late["status"], "expired_token", "{late}");
    let web = Web::new(&t.s);
    let page = web.enter_code(&p.complete, &p.code).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("expired"), "{}", page.body);
    web.check_pages(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_code_shows_an_error_then_the_right_one_works() {
    let t = setup(Backend::Sqlite, &[]).await;
    let s = &t.s;
    let d = new_device(s).await;
    let code = d["userCode"].as_str().unwrap();
    let web = Web::new(s);
    // One letter off (still a valid-looking code), then not a code at all.
    let wrong = if code.starts_with('B') {
        code.replacen('B', "C", 1)
    } else {
        format!("B{}", &code[1..])
    };
    let page = web.enter_code("/device", &wrong).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("not right"), "{}", page.body);
    assert!(
        page.body.contains("name=\"user_code\"") && page.body.contains(&wrong),
        "the form again, with what was typed: {}",
        page.body
    );
    let page = web.enter_code("/device", "hello").await;
    assert_eq!(page.status, 400, "{}", page.body);
    // The right code goes on to the provider, with state, nonce and PKCE,
    // and the server's own callback.
    let page = web.enter_code("/device", code).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let to = url::Url::parse(page.location.as_deref().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["redirect_uri"], callback_url(s));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], "infra-test");
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43);

    // Wrong codes from one address are limited: 10 per 10 minutes.
    for _ in 0..8 {
        let p = web.enter_code("/device", &wrong).await;
        assert_eq!(p.status, 400, "{}", p.body);
    }
    let limited = web.enter_code("/device", code).await;
    assert_eq!(
        limited.status, 429,
        "even the right code waits: {}",
        limited.body
    );
    let secs: u64 = limited.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=600).contains(&secs), "{secs}");
    assert!(limited.body.contains("Too many"), "{}", limited.body);
    // The ten wrong codes from one address are one entry with a count.
    let verify = audit(s, "device.verify").await;
    let counts: Vec<(&str, u64)> = verify
        .iter()
        .map(|e| (e["result"].as_str().unwrap(), e["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [("success", 1), ("failure", 10)], "{verify:?}");
    web.check_pages(&[d["deviceCode"].as_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_the_csrf_token_and_the_same_browser() {
    let t = setup(Backend::Sqlite, &[]).await;
    let s = &t.s;
    let d = new_device(s).await;
    let code = d["userCode"].as_str().unwrap();
    let web = Web::new(s);
    let form = web.get("/device").await;
    let csrf = form.hidden("csrf");

    // The code form: token missing, wrong, or without its cookie.
    let p = web.post("/device", &[("user_code", code)]).await;
    assert_eq!(p.status, 403, "{}", p.body);
    let p = web
        .post("/device", &[("user_code", code), ("csrf", &"x".repeat(43))])
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    let stranger = Web::new(s);
    let p = stranger
        .post("/device", &[("user_code", code), ("csrf", &csrf)])
        .await;
    assert_eq!(p.status, 403, "a token without its cookie: {}", p.body);
    assert!(
        audit(s, "device.verify").await.is_empty(),
        "nothing happened"
    );

    // The approval form: a wrong token does nothing.
    let confirm = web.sign_in(s, code, "alice").await;
    let p = web
        .post(
            "/device/confirm",
            &[
                ("csrf", "wrong"),
                ("attempt", &confirm.hidden("attempt")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert_eq!(poll(s, &d).await["status"], "authorization_pending");

    // Another browser cannot finish a sign-in this one started, nor answer
    // for it.
    let sent = web.enter_code("/device", code).await;
    let back = Browser::with_client(stranger.client.clone())
        .sign_in(
            sent.location.as_deref().unwrap(),
            "mallory",
            &callback_url(s),
        )
        .await;
    let p = stranger.get(&back).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("another browser"), "{}", p.body);
    let theirs = stranger.get("/device").await;
    let p = stranger
        .post(
            "/device/confirm",
            &[
                ("csrf", &theirs.hidden("csrf")),
                ("attempt", &confirm.hidden("attempt")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    let still = poll(s, &d).await;
    assert!(
        still["status"] == "authorization_pending" || still["status"] == "slow_down",
        "still waiting: {still}"
    );

    // With the token, from this browser, it works.
    let done = web.answer(&confirm, "approve").await;
    assert_eq!(done.status, 200, "{}", done.body);
    web.check_pages(&[]);
    stranger.check_pages(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_codes_are_rate_limited_per_address() {
    let t = setup(Backend::Sqlite, &[]).await;
    for _ in 0..10 {
        // No body at all is fine: the only provider.
        let resp =
            t.s.client
                .post(format!("{}/api/device", t.s.url))
                .header("Infra-Version", common::VERSION)
                .send()
                .await
                .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    let resp =
        t.s.client
            .post(format!("{}/api/device", t.s.url))
            .header("Infra-Version", common::VERSION)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let secs: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 429);
    assert!(
        body["message"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    // Anyone may ask for codes: one audit entry per address and hour, counted.
    let created = audit(&t.s, "device.create").await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["count"], 10);
    assert_eq!(created[0]["remoteAddr"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_providers_must_be_chosen_from() {
    let t = setup(Backend::Sqlite, &[]).await;
    let s = &t.s;
    let issuer = s.ok("GET", "/api/providers", None, 200).await["items"][0]["url"].clone();
    let other = s
        .ok(
            "POST",
            "/api/providers",
            Some(json!({"name": "other", "url": issuer, "clientID": "infra-test", "clientSecret": "infra-test-secret"})),
            201,
        )
        .await;
    let (status, err) = s.call("POST", "/api/device", None, Some(json!({}))).await;
    assert_eq!(status, 400, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("corp") && msg.contains("other"), "{msg}");
    assert_eq!(err["fieldErrors"][0]["fieldName"], "providerID");
    let (status, err) = s
        .call(
            "POST",
            "/api/device",
            None,
            Some(json!({"providerID": "nope"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, ok) = s
        .call(
            "POST",
            "/api/device",
            None,
            Some(json!({"providerID": other["id"]})),
        )
        .await;
    assert_eq!(status, 201, "{ok}");
    let (status, ok) = s
        .call(
            "POST",
            "/api/device",
            None,
            Some(json!({"providerID": t.provider["id"]})),
        )
        .await;
    assert_eq!(status, 201, "{ok}");

    // The CLI picks like `infra login`: --provider, else a usage error off a terminal.
    let m = Machine::new();
    let (code, _, err) = start_login(&m, s, &["--device"], &[]).finish();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--provider"), "{err}");
    let run = start_login(&m, s, &["--device", "--provider", "other"], &[]);
    let p = run.prompt();
    assert!(run.stderr.lock().unwrap().contains("sign in with other"));
    let web = Web::new(s);
    let confirm = web.sign_in(s, &p.code, "alice").await;
    assert!(confirm.body.contains("through other"), "{}", confirm.body);
}

/// The pages in a real browser: `tests/oidc/device_pages.mjs` drives
/// Debian's Chromium (headless) through the code page, the provider and the
/// approval page, takes screenshots and presses Approve; the CLI then
/// finishes its login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_signs_a_device_in() {
    let chromium = std::env::var("INFRA_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: run the tests with tests/run.sh, which installs Debian's chromium"
    );
    let script = std::path::Path::new(
        &std::env::var("INFRA_TEST_OIDC_PROVIDER")
            .expect("INFRA_TEST_OIDC_PROVIDER is not set: run the tests with tests/run.sh"),
    )
    .with_file_name("device_pages.mjs");
    let node = std::env::var("INFRA_TEST_NODE").unwrap_or_else(|_| "node".to_string());
    let t = setup(Backend::Sqlite, &["--device-poll-interval", "1s"]).await;
    let m = Machine::new();
    let run = start_login(&m, &t.s, &["--device"], &[]);
    let p = run.prompt();
    let out_dir = std::env::var("INFRA_TEST_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
        .join(format!("device-pages-{}", common::random_suffix()));
    let out = tokio::process::Command::new(node)
        .arg(&script)
        .env("DEVICE_URL", &p.complete)
        .env("DEVICE_CODE", &p.code)
        .env("DEVICE_LOGIN", "alice")
        .env("DEVICE_OUT_DIR", &out_dir)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|_| {
            panic!(
                "device_pages.mjs said: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success() && report["ok"] == true,
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["codeShown"], p.code.as_str());
    for shot in report["screenshots"].as_array().unwrap() {
        let png = std::fs::read(shot.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{shot}");
    }
    eprintln!("screenshots in {}", out_dir.display());
    let (code, _, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("as alice@example.com"), "{err}");
    assert_eq!(context_names(&kubeconfig(&m)), ["infra:prod.web"]);
}

both_backends!(
    cli_device_login,
    api_flow_reuse_and_slow_down,
    denied_without_a_display
);

/// The device flow against `infra server --dev`'s embedded provider, in
/// headless Chromium: the code page, the development sign-in page (whose
/// form's answer redirects to the server's own callback), the approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_signs_a_device_in_with_the_dev_provider() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.extra_args = vec!["--dev".into(), "--device-poll-interval".into(), "1s".into()];
    let s = Server::start_with(opts).await;
    let m = Machine::new();
    let run = start_login(&m, &s, &["--device"], &[]);
    let p = run.prompt();
    let report = common::chromium_script(
        "device_pages.mjs",
        &[
            ("DEVICE_URL", p.complete.as_str()),
            ("DEVICE_CODE", p.code.as_str()),
            ("DEVICE_LOGIN", "dora"),
        ],
    )
    .await;
    assert_eq!(report["codeShown"], p.code.as_str());
    let (code, _, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("as dora@example.com"), "{err}");
}
