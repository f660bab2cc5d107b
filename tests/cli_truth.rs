//! Messages that tell the truth: a server that is down is "cannot reach",
//! not "log in again"; a changed certificate says so with both
//! fingerprints; `INFRA_ACCESS_KEY` is its own identity, with trust from
//! the environment; `infra status` says where the key lives, whose it is,
//! until when, and how the server is; keys come from files and stdin; a
//! logout keeps the server's pinned certificate. The real binary, with
//! HOME, INFRA_HOME and KUBECONFIG in a temp dir, against real servers.

mod common;

use std::process::{Output, Stdio};

use common::{ADMIN_KEY, Backend, Machine, Server, ServerOptions};
use serde_json::{Value, json};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn login_admin(m: &Machine, s: &Server) {
    m.login_admin(s);
}

fn port_of(s: &Server) -> u16 {
    s.host().rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The exit code and stderr of `infra ARGS`, asserting the code.
fn fails(m: &Machine, args: &[&str], code: i32) -> (String, String) {
    let out = m.run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "infra {}: stdout {} stderr {}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    (stdout(&out), stderr(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_unreachable_not_a_login_problem() {
    let mut s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);
    let host = s.host();
    s.stop();

    for args in [
        &["list"][..],
        &["users", "list"],
        &["grants", "list"],
        &["tokens", "create", "--destination", "prod"],
    ] {
        let (_, err) = fails(&m, args, 1);
        assert!(
            err.contains(&format!("cannot reach https://{host}")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("not accepted"), "{args:?}: {err}");
        assert!(!err.contains("infra login"), "{args:?}: {err}");
    }

    // Status still prints what this machine knows, then says the server is down.
    let (out, err) = fails(&m, &["status"], 1);
    assert!(out.contains(&host), "{out}");
    assert!(out.contains("admin"), "{out}");
    assert!(out.contains("cannot reach"), "{out}");
    assert!(
        err.contains(&format!("cannot reach https://{host}")),
        "{err}"
    );
    assert!(!err.contains("not accepted"), "{err}");
    let (out, _) = fails(&m, &["status", "--format", "json"], 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["user"], "admin");
    assert!(
        v[0]["status"].as_str().unwrap().starts_with("cannot reach"),
        "{v}"
    );
    assert!(v[0].get("serverVersion").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_shown_with_both_fingerprints() {
    let mut a = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &a);
    let (host, pinned, port) = (a.host(), a.fingerprint(), port_of(&a));
    a.stop();
    // Another server (another certificate) on the same address.
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.extra_args = vec!["--listen".into(), format!("127.0.0.1:{port}")];
    let b = Server::start_with(opts).await;
    let seen = b.fingerprint();
    assert_ne!(pinned, seen);

    for args in [
        &["list"][..],
        &["status"],
        &["tokens", "create", "--destination", "prod"],
    ] {
        let (_, err) = fails(&m, args, 1);
        for want in [
            "HAS CHANGED",
            pinned.as_str(),
            seen.as_str(),
            &format!("infra login {host} --tls-trusted-fingerprint {seen}"),
        ] {
            assert!(err.contains(want), "{args:?}: {want} not in {err}");
        }
        assert!(!err.contains("not accepted"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_still_the_auth_exit_code() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);
    m.ok(&["logout"]);
    // INFRA_ACCESS_KEY that the server does not know.
    let out = m
        .cmd()
        .args(["tokens", "create", "--destination", "prod"])
        .env("INFRA_SERVER", s.host())
        .env("INFRA_ACCESS_KEY", "NoSuchKey0.NoSuchSecret0123456789abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("infra login"), "{}", stderr(&out));
    let out = m
        .cmd()
        .args(["status"])
        .env("INFRA_SERVER", s.host())
        .env("INFRA_ACCESS_KEY", "NoSuchKey0.NoSuchSecret0123456789abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("not accepted"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environments_key_is_its_own_identity() {
    let s = Server::start(Backend::Sqlite).await;
    let (alice_id, alice_key) = s.user_with_key("alice").await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": alice_id, "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    // This machine is logged in as admin; the environment holds alice's key.
    let m = Machine::new();
    login_admin(&m, &s);
    let as_alice = |args: &[&str]| {
        m.cmd()
            .args(args)
            .env("INFRA_ACCESS_KEY", &alice_key)
            .output()
            .unwrap()
    };
    let out = as_alice(&["status", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["user"], "alice", "{v}");
    assert_eq!(v[0]["userID"], alice_id.as_str(), "{v}");
    assert_eq!(v[0]["keyStore"], "environment", "{v}");
    assert!(
        v[0]["keyLocation"]
            .as_str()
            .unwrap()
            .contains("INFRA_ACCESS_KEY"),
        "{v}"
    );
    assert_eq!(v[0]["status"], "valid");
    assert_eq!(v[0]["serverVersion"], common::VERSION);
    let out = as_alice(&["status"]);
    assert!(stdout(&out).contains("alice"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("INFRA_ACCESS_KEY"),
        "{}",
        stdout(&out)
    );

    let out = as_alice(&["list", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[0]["destination"], "prod", "{rows}");
    assert_eq!(
        rows.as_array().unwrap().len(),
        1,
        "admin's grants are not alice's: {rows}"
    );
    let out = as_alice(&["keys", "list", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .all(|k| k["userName"] == "alice"),
        "{keys}"
    );

    // No config file at all: the server, the key and the trust from the
    // environment, for every command.
    let ci = Machine::new();
    let fp = s.fingerprint();
    let env = |c: &mut std::process::Command| {
        c.env("INFRA_SERVER", s.host())
            .env("INFRA_ACCESS_KEY", &alice_key);
    };
    for args in [
        &["list"][..],
        &["status"],
        &["grants", "list"],
        &["keys", "list"],
        &["version"],
        &["tokens", "create", "--destination", "prod"],
    ] {
        let mut c = ci.cmd();
        env(&mut c);
        let out = c
            .args(args)
            .env("INFRA_TLS_TRUSTED_FINGERPRINT", &fp)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert!(
        !ci.infra_home().join("config.yaml").exists(),
        "nothing written"
    );
    let cert = s.data_dir.join("tls.crt");
    let pem = std::fs::read_to_string(&cert).unwrap();
    for trusted in [cert.to_str().unwrap(), pem.as_str()] {
        let mut c = ci.cmd();
        env(&mut c);
        let out = c
            .args(["list"])
            .env("INFRA_TLS_TRUSTED_CERT", trusted)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // Without trust, the same help `infra login` gives, with the variables
    // (a destination with no cached token, so that the server is asked).
    for args in [
        &["list"][..],
        &["tokens", "create", "--destination", "staging"],
    ] {
        let mut c = ci.cmd();
        env(&mut c);
        let out = c.args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        for want in [
            fp.as_str(),
            "not trusted",
            "INFRA_TLS_TRUSTED_FINGERPRINT=",
            "INFRA_TLS_TRUSTED_CERT",
            "--tls-trusted-fingerprint",
        ] {
            assert!(err.contains(want), "{args:?}: {want} not in {err}");
        }
    }
    // A malformed fingerprint is a usage error.
    let mut c = ci.cmd();
    env(&mut c);
    let out = c
        .args(["list"])
        .env("INFRA_TLS_TRUSTED_FINGERPRINT", "nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("INFRA_TLS_TRUSTED_FINGERPRINT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_where_the_key_is_whose_and_how_the_server_is() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);
    let v: Value = serde_json::from_str(&m.ok(&["status", "--format", "json"])).unwrap();
    let st = &v[0];
    assert_eq!(st["user"], "admin");
    assert_eq!(st["status"], "valid");
    assert_eq!(st["serverVersion"], common::VERSION);
    assert!(
        st["expires"].as_str().is_some_and(|e| e.len() >= 20),
        "{st}"
    );
    let loc = st["keyLocation"].as_str().unwrap();
    match st["keyStore"].as_str().unwrap() {
        "keyring" => assert!(
            loc.contains("service infra") && loc.contains(&format!("admin@{}", s.host())),
            "{loc}"
        ),
        "file" => assert!(loc.contains("credentials"), "{loc}"),
        other => panic!("key in {other}"),
    }
    let text = m.ok(&["status"]);
    assert!(text.contains(common::VERSION), "{text}");

    // The file fallback names the file.
    let f = Machine::new();
    let out = f
        .cmd()
        .env("INFRA_NO_KEYRING", "1")
        .args([
            "login",
            &s.host(),
            "--key",
            ADMIN_KEY,
            "--tls-trusted-fingerprint",
            &s.fingerprint(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = f
        .cmd()
        .env("INFRA_NO_KEYRING", "1")
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let want = f.infra_home().join("credentials");
    assert_eq!(
        v[0]["keyLocation"],
        format!("file {}", want.display()),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_a_file_or_stdin() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    let file = m.home().join("admin.key");
    std::fs::write(&file, format!("{ADMIN_KEY}\n")).unwrap();
    let fp = s.fingerprint();
    m.ok(&[
        "login",
        &s.host(),
        "--access-key-file",
        file.to_str().unwrap(),
        "--tls-trusted-fingerprint",
        &fp,
    ]);
    m.ok(&["users", "list"]);
    m.ok(&["logout"]);

    let mut child = m
        .cmd()
        .args(["login", &s.host(), "--key", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{ADMIN_KEY}\n").as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    m.ok(&["users", "list"]);

    // An empty or missing file says which and where.
    let empty = m.home().join("empty.key");
    std::fs::write(&empty, "\n").unwrap();
    let (_, err) = fails(
        &m,
        &[
            "login",
            &s.host(),
            "--access-key-file",
            empty.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("holds no access key"), "{err}");

    // The connector reads its key from a file too, by flag or variable.
    let (_, err) = fails(
        &m,
        &[
            "connector",
            "--server",
            "https://127.0.0.1:1",
            "--name",
            "prod",
            "--access-key-file",
            "/nonexistent/infra.key",
        ],
        1,
    );
    assert!(err.contains("/nonexistent/infra.key"), "{err}");
    let out = m
        .cmd()
        .args([
            "connector",
            "--server",
            "https://127.0.0.1:1",
            "--name",
            "prod",
        ])
        .env("INFRA_CONNECTOR_ACCESS_KEY_FILE", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("holds no access key"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_keeps_the_servers_pinned_certificate() {
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    login_admin(&m, &s);
    m.ok(&["logout"]);
    let config = std::fs::read_to_string(m.infra_home().join("config.yaml")).unwrap();
    assert!(config.contains(&s.fingerprint()), "{config}");
    // No trust flag and no terminal: a prompt would fail; the pin answers.
    let out = m.run(&["login", &s.host(), "--key", ADMIN_KEY]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not trusted"), "{}", stderr(&out));
    m.ok(&["users", "list"]);
}
