//! The CLI as a person and a script use it: the real binary, with HOME,
//! INFRA_HOME and KUBECONFIG in a temp dir, against a real `infra server`,
//! keeping keys in the real Secret Service that tests/run.sh starts.

mod common;

use std::process::{Command, Output, Stdio};

use common::{ADMIN_KEY, Backend, Machine, OidcProvider, Server, ServerOptions};
use serde_json::{Value, json};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Logs the machine in as admin, trusting the server by fingerprint.
fn login_admin(m: &Machine, s: &Server) {
    m.login_admin(s);
}

fn require_keyring() {
    assert!(
        std::env::var("INFRA_TEST_KEYRING").is_ok(),
        "these tests need a real Secret Service: run them with tests/run.sh"
    );
}

fn secret_tool_lookup(server: &str) -> String {
    let out = Command::new("secret-tool")
        .args(["lookup", "service", "infra", "username", server])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_key_keeps_it_in_the_keyring() {
    require_keyring();
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);

    // The session key is in the Secret Service, and in no file.
    let stored = secret_tool_lookup(&format!("admin@{}", s.host()));
    assert_eq!(stored.len(), 35, "secret-tool finds the key: {stored:?}");
    for (path, content) in m.config_files() {
        let text = String::from_utf8_lossy(&content);
        assert!(!text.contains(&stored), "{} holds the key", path.display());
        assert!(
            !text.contains(ADMIN_KEY),
            "{} holds the admin key",
            path.display()
        );
    }

    // Status says where the key is and that the server takes it.
    let status: Value = serde_json::from_str(&m.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status[0]["server"], s.host());
    assert_eq!(status[0]["user"], "admin");
    assert_eq!(status[0]["keyStore"], "keyring");
    assert_eq!(status[0]["status"], "valid");
    assert_eq!(status[0]["current"], true);

    // Logout revokes the key on the server and forgets it here.
    let out = m.run(&["logout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(secret_tool_lookup(&format!("admin@{}", s.host())), "");
    let (code, _) = s.call("GET", "/api/grants", Some(&stored), None).await;
    assert_eq!(code, 401, "the key was revoked on the server");
    let out = m.run(&["users", "list"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("infra login"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dbus_the_key_goes_to_a_private_file() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    let out = m
        .cmd()
        .args([
            "login",
            &s.host(),
            "--key",
            ADMIN_KEY,
            "--tls-trusted-fingerprint",
            &s.fingerprint(),
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning:") && err.contains("keyring"), "{err}");
    let files = m.config_files();
    let (cred_path, _) = files
        .iter()
        .find(|(p, c)| !p.ends_with("config.yaml") && String::from_utf8_lossy(c).contains('.'))
        .expect("a credentials file");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cred_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", cred_path.display());
    let dir_mode = std::fs::metadata(m.infra_home())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    // The key works from there.
    let out = m
        .cmd()
        .args(["status", "--format", "json"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["keyStore"], "file");
    assert_eq!(status[0]["status"], "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_work_end_to_end() {
    let idp = OidcProvider::start();
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);

    // users
    m.ok(&["users", "add", "alice@example.com"]);
    let out = m
        .cmd()
        .args(["users", "add", "bob@example.com", "--password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = feed(out, "bob-password-1\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let list = m.ok(&["users", "list"]);
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice@example.com", "bob@example.com"]);
    let users: Value = serde_json::from_str(&m.ok(&["users", "list", "--format", "json"])).unwrap();
    assert!(users[1]["id"].is_string());
    let yaml = m.ok(&["users", "list", "--format", "yaml"]);
    assert!(yaml.contains("name: alice@example.com"), "{yaml}");
    let dup = m.run(&["users", "add", "alice@example.com"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    assert!(
        !stderr(&dup).contains("HTTP"),
        "no raw HTTP dump: {}",
        stderr(&dup)
    );

    // Bob logs in with his password from INFRA_PASSWORD, on his own machine.
    let bob = Machine::new();
    let out = bob
        .cmd()
        .args([
            "login",
            &s.host(),
            "--user",
            "bob@example.com",
            "--tls-trusted-fingerprint",
            &s.fingerprint(),
        ])
        .env("INFRA_PASSWORD", "bob-password-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = m
        .cmd()
        .args(["users", "edit", "bob@example.com", "--password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(feed(out, "bob-password-2\n").status.success());
    let out = bob
        .cmd()
        .args(["login", &s.host(), "--user", "bob@example.com"])
        .env("INFRA_PASSWORD", "bob-password-1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "old password refused: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("wrong user name or password"));

    // groups
    m.ok(&["groups", "add", "sre"]);
    m.ok(&["groups", "adduser", "sre", "alice@example.com"]);
    m.ok(&["groups", "adduser", "sre", "bob@example.com"]);
    assert_eq!(
        m.ok(&["groups", "list"]).trim().split('\t').nth(2),
        Some("2")
    );
    m.ok(&["groups", "removeuser", "sre", "bob@example.com"]);
    assert_eq!(
        m.ok(&["groups", "list"]).trim().split('\t').nth(2),
        Some("1")
    );

    // grants
    m.ok(&[
        "grants",
        "add",
        "prod",
        "--user",
        "bob@example.com",
        "--role",
        "view",
    ]);
    m.ok(&[
        "grants", "add", "prod.web", "--group", "sre", "--role", "edit",
    ]);
    let again = m.run(&[
        "grants",
        "add",
        "prod",
        "--user",
        "bob@example.com",
        "--role",
        "view",
    ]);
    assert_eq!(again.status.code(), Some(1));
    m.ok(&[
        "grants",
        "add",
        "prod",
        "--user",
        "bob@example.com",
        "--role",
        "view",
        "--force",
    ]);
    let bad = m.run(&[
        "grants",
        "add",
        "Prod!",
        "--user",
        "bob@example.com",
        "--role",
        "view",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("destination"),
        "field errors shown: {}",
        stderr(&bad)
    );
    let grants = m.ok(&["grants", "list", "--destination", "prod"]);
    assert!(
        grants.contains("user:bob@example.com\tview\tprod"),
        "{grants}"
    );
    assert!(grants.contains("group:sre\tedit\tprod.web"), "{grants}");
    // Bob sees his own grants only.
    let mine = bob.ok(&["grants", "list"]);
    assert_eq!(mine.trim(), "user:bob@example.com\tview\tprod");
    let theirs = bob.run(&["grants", "list", "--user", "alice@example.com"]);
    assert_eq!(theirs.status.code(), Some(1));
    assert!(stderr(&theirs).contains("only"), "{}", stderr(&theirs));
    m.ok(&[
        "grants",
        "remove",
        "prod",
        "--user",
        "bob@example.com",
        "--role",
        "view",
    ]);
    let gone = m.run(&[
        "grants",
        "remove",
        "prod",
        "--user",
        "bob@example.com",
        "--role",
        "view",
    ]);
    assert_eq!(gone.status.code(), Some(1));
    m.ok(&[
        "grants",
        "remove",
        "prod",
        "--user",
        "bob@example.com",
        "--role",
        "view",
        "--force",
    ]);

    // destinations
    s.ok(
        "POST",
        "/api/destinations",
        Some(serde_json::json!({"name": "prod"})),
        201,
    )
    .await;
    let d = m.ok(&["destinations", "list"]);
    assert!(d.starts_with("prod\t-\tdisconnected\tnever"), "{d}");
    m.ok(&["destinations", "remove", "prod"]);
    m.ok(&["destinations", "remove", "prod", "--force"]);
    assert_eq!(m.ok(&["destinations", "list"]), "");

    // keys
    let key = m.ok(&["keys", "add", "--name", "ci", "--expiry", "48h"]);
    let key = key.trim();
    assert_eq!(key.len(), 35, "the key alone on stdout: {key:?}");
    let (code, _) = s.call("GET", "/api/grants", Some(key), None).await;
    assert_eq!(code, 200);
    assert!(
        m.ok(&["keys", "list"])
            .lines()
            .any(|l| l.starts_with("ci\t"))
    );
    let connector = m.ok(&["keys", "add", "--connector", "--destination", "prod"]);
    assert_eq!(connector.trim().len(), 35);
    let for_alice = m.ok(&[
        "keys",
        "add",
        "--user",
        "alice@example.com",
        "--name",
        "given",
    ]);
    assert_eq!(for_alice.trim().len(), 35);
    assert!(
        m.ok(&["keys", "list", "--user", "alice@example.com"])
            .starts_with("given\t")
    );
    m.ok(&["keys", "remove", "ci"]);
    let (code, _) = s.call("GET", "/api/grants", Some(key), None).await;
    assert_eq!(code, 401);
    m.ok(&["keys", "remove", "ci", "--force"]);

    // providers
    m.ok(&[
        "providers",
        "add",
        "corp",
        "--url",
        &idp.issuer,
        "--client-id",
        "infra-test",
        "--client-secret",
        "infra-test-secret",
    ]);
    let p = m.ok(&["providers", "list"]);
    assert!(
        p.starts_with(&format!("corp\toidc\t{}\tinfra-test", idp.issuer)),
        "{p}"
    );
    m.ok(&["providers", "edit", "corp", "--client-id", "other"]);
    assert!(m.ok(&["providers", "list"]).contains("\tother"));
    let dead = m.run(&[
        "providers",
        "add",
        "dead",
        "--url",
        "http://127.0.0.1:9",
        "--client-id",
        "x",
        "--client-secret",
        "y",
    ]);
    assert_eq!(dead.status.code(), Some(1));
    assert!(stderr(&dead).contains("cannot fetch"), "{}", stderr(&dead));
    m.ok(&["providers", "remove", "corp"]);
    m.ok(&["providers", "remove", "corp", "--force"]);

    // users remove
    m.ok(&["users", "remove", "alice@example.com"]);
    let gone = m.run(&["users", "remove", "alice@example.com"]);
    assert_eq!(gone.status.code(), Some(1));
    m.ok(&["users", "remove", "alice@example.com", "--force"]);
    m.ok(&["groups", "remove", "sre"]);
}

/// Feeds `input` to a spawned command's stdin and waits for it.
fn feed(mut child: std::process::Child, input: &str) -> Output {
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_without_a_terminal_names_the_flags() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    let out = m.run(&["login", &s.host(), "--key", ADMIN_KEY]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for want in [
        "--tls-trusted-fingerprint",
        "--tls-trusted-cert",
        "--skip-tls-verify",
        &s.fingerprint(),
    ] {
        assert!(err.contains(want), "{want} not in {err}");
    }
    assert!(m.config_files().is_empty(), "nothing saved");

    // The CA file and skip-verify ways work too.
    let cert = s.data_dir.join("tls.crt");
    m.ok(&[
        "login",
        &s.host(),
        "--key",
        ADMIN_KEY,
        "--tls-trusted-cert",
        cert.to_str().unwrap(),
    ]);
    m.ok(&["users", "list"]);
    let other = Machine::new();
    let out = other.run(&["login", &s.host(), "--key", ADMIN_KEY, "--skip-tls-verify"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// Runs `infra ARGS` in a pseudo-terminal (util-linux `script`), typing
/// `input` once it asks.
fn in_terminal(m: &Machine, args: &[&str], input: &str) -> (i32, String) {
    let mut cmd = common::Terminal::command(&common::bin(), args);
    cmd.env("HOME", m.home())
        .env("INFRA_HOME", m.infra_home())
        .env("KUBECONFIG", m.home().join(".kube/config"))
        .env_remove("INFRA_ACCESS_KEY")
        .env_remove("INFRA_SERVER");
    let mut t = common::Terminal::start(cmd);
    // Type when the question is on the screen, as a person would.
    t.wait_for("[y/N]");
    t.type_keys(input);
    t.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_on_first_use_yes_no_and_changed_certificate() {
    let mut s = Server::start(Backend::Sqlite).await;
    let fp = s.fingerprint();

    // No: nothing saved.
    let m = Machine::new();
    let (code, screen) = in_terminal(&m, &["login", &s.host(), "--key", ADMIN_KEY], "n\n");
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains(&fp), "the fingerprint is shown: {screen}");
    assert!(screen.contains("not trusted"), "{screen}");
    assert!(m.config_files().is_empty());

    // Yes: pinned and logged in.
    let (code, screen) = in_terminal(&m, &["login", &s.host(), "--key", ADMIN_KEY], "y\n");
    assert_eq!(code, 0, "{screen}");
    let config = std::fs::read_to_string(m.infra_home().join("config.yaml")).unwrap();
    assert!(config.contains(&fp), "fingerprint pinned: {config}");
    m.ok(&["users", "list"]);

    // The server comes back with another certificate: refused, loudly.
    let data_dir = s.data_dir.clone();
    s.stop();
    std::fs::remove_file(data_dir.join("tls.crt")).unwrap();
    std::fs::remove_file(data_dir.join("tls.key")).unwrap();
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.data_dir = Some(data_dir);
    opts.extra_args = vec![];
    let port = s.host().rsplit(':').next().unwrap().to_string();
    let s2 = start_on_port(opts, &port).await;
    let new_fp = s2.fingerprint();
    assert_ne!(new_fp, fp);
    let out = m.run(&["users", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("HAS CHANGED"), "{err}");
    assert!(err.contains(&fp) && err.contains(&new_fp), "{err}");
    drop(s);
}

/// Starts a server on a given port (to replace one that stopped).
async fn start_on_port(mut opts: ServerOptions, port: &str) -> Server {
    // The listener flag comes last, so it wins over the harness's port 0.
    opts.extra_args
        .extend(["--listen".to_string(), format!("127.0.0.1:{port}")]);
    Server::start_with(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_key_exits_4_with_the_login_hint() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);
    m.ok(&["users", "list"]);
    // Age the session key on the server.
    let mut conn = s.db_connection().await;
    sqlx::query("UPDATE access_keys SET expires_at = 1000 WHERE name LIKE 'login-%'")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = m.run(&["users", "list"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains(&format!("infra login {}", s.host())), "{err}");
    let out = m.run(&["status"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("expired or revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_get_usage_errors_and_quiet_broken_pipes() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    // Not logged in: exit 4 with the hint.
    let out = m.run(&["users", "list"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("infra login"), "{}", stderr(&out));
    // Usage errors: exit 2.
    let out = m.run(&["users", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = m.run(&["login"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // INFRA_SERVER + INFRA_ACCESS_KEY work without logging in (CI), and a
    // reader that goes away is not an error.
    login_admin(&m, &s);
    for i in 0..50 {
        m.ok(&["users", "add", &format!("user{i:02}")]);
    }
    let mut child = m
        .cmd()
        .args(["users", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_revokes_every_server_key() {
    require_keyring();
    let a = Server::start(Backend::Sqlite).await;
    let b = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &a);
    login_admin(&m, &b);
    let status: Value = serde_json::from_str(&m.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 2);
    let keys: Vec<(String, String)> = [&a, &b]
        .iter()
        .map(|s| (s.host(), secret_tool_lookup(&format!("admin@{}", s.host()))))
        .collect();
    assert!(
        keys.iter().all(|(_, k)| k.len() == 35),
        "both keys are in the keyring"
    );
    let out = m.run(&["logout", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (s, (host, key)) in [&a, &b].iter().zip(&keys) {
        assert!(stderr(&out).contains(&format!("Logged out of {host}")));
        let (code, _) = s.call("GET", "/api/grants", Some(key), None).await;
        assert_eq!(code, 401, "the key for {host} was revoked");
    }
    let status: Value = serde_json::from_str(&m.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status, json!([]), "nothing is left");
}

/// A role that is probably a typo is accepted (it may be a ClusterRole of
/// the cluster's own) but warned about, with the likely one; Kubernetes'
/// user-facing roles are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_role_is_warned_about() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);
    m.ok(&["users", "add", "alice@example.com"]);
    let out = m.run(&[
        "grants",
        "add",
        "prod",
        "--user",
        "alice@example.com",
        "--role",
        "eidt",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: eidt is not one of Kubernetes' user-facing roles"),
        "{err}"
    );
    assert!(err.contains("did you mean edit?"), "{err}");
    let out = m.run(&[
        "grants",
        "add",
        "prod",
        "--user",
        "alice@example.com",
        "--role",
        "edit",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// `infra audit` lists the audit log, newest first, with the API's filters;
/// `infra keys remove ID` revokes any key an admin may revoke, whoever owns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_and_keys_removed_by_id() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);
    m.ok(&["users", "add", "alice@example.com"]);
    m.ok(&[
        "grants",
        "add",
        "prod",
        "--user",
        "alice@example.com",
        "--role",
        "view",
    ]);
    m.ok(&[
        "keys",
        "add",
        "--user",
        "alice@example.com",
        "--name",
        "laptop",
    ]);
    let keys: serde_json::Value = serde_json::from_str(&m.ok(&[
        "keys",
        "list",
        "--user",
        "alice@example.com",
        "--format",
        "json",
    ]))
    .unwrap();
    let id = keys[0]["id"].as_str().unwrap().to_string();
    // By id, without --user: the admin's own list does not hold it.
    let out = m.run(&["keys", "remove", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: serde_json::Value = serde_json::from_str(&m.ok(&[
        "keys",
        "list",
        "--user",
        "alice@example.com",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 0, "{keys}");
    let out = m.run(&["keys", "remove", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no access key"), "{}", stderr(&out));

    let plain = m.ok(&["audit"]);
    let newest = plain.lines().next().unwrap();
    assert!(
        newest.contains("\tadmin\tkey.remove\t"),
        "newest first: {plain}"
    );
    assert!(plain.contains("grant.create"), "{plain}");
    let json: serde_json::Value =
        serde_json::from_str(&m.ok(&["audit", "--action", "grant.create", "--format", "json"]))
            .unwrap();
    let events = json.as_array().unwrap();
    assert_eq!(events.len(), 1, "{json}");
    assert!(
        events[0]["target"]
            .as_str()
            .unwrap()
            .contains("alice@example.com"),
        "{json}"
    );
    let one = m.ok(&["audit", "--limit", "1", "--format", "json"]);
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1);
}

/// `--server` and `--format` work before the command as after it, and
/// `--format table` is a table with its header also into a pipe, while the
/// default off a terminal stays plain lines for scripts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_flags_and_tables_into_a_pipe() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);
    m.ok(&["users", "add", "alice@example.com"]);
    let before: serde_json::Value =
        serde_json::from_str(&m.ok(&["--server", &s.host(), "--format", "json", "users", "list"]))
            .unwrap();
    let after: serde_json::Value =
        serde_json::from_str(&m.ok(&["users", "list", "--server", &s.host(), "--format=json"]))
            .unwrap();
    assert_eq!(before, after);
    assert!(before.to_string().contains("alice@example.com"), "{before}");

    let table = m.ok(&["users", "list", "--format", "table"]);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("NAME"), "a header into a pipe: {table}");
    assert!(!table.contains('\t'), "aligned, not tab-separated: {table}");
    let plain = m.ok(&["users", "list"]);
    assert!(!plain.contains("NAME"), "{plain}");
    assert!(
        plain.lines().any(|l| l.starts_with("alice@example.com\t")),
        "{plain}"
    );
}
