//! Integration tests of `infra::local::credentials` against real stores: a
//! real Secret Service (gnome-keyring on a private D-Bus session, started by
//! tests/run.sh, which sets `INFRA_TEST_KEYRING=1`), a missing D-Bus, a D-Bus
//! socket that never answers, and the fallback file.
//!
//! This binary has its own `main` (harness = false): every case runs in a
//! child process (this binary again, running one `child_*` function named
//! by an environment variable) with its own environment: `INFRA_HOME`
//! pointing at a fresh temporary directory, and `DBUS_SESSION_BUS_ADDRESS`,
//! `INFRA_NO_KEYRING` or `INFRA_ACCESS_KEY` as the case needs. Environment
//! variables are process-wide and the keyring store is set up once per
//! process, so this keeps the parallel tests of this binary out of each
//! other's way and tests the public functions exactly as the CLI calls them.
//!
//! Linux only: it checks the Secret Service with `secret-tool`.
#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use infra::local::config::{KeyStore, config_dir};
use infra::local::credentials::{self, Credentials, delete_key, load_key, store_key};
use secrecy::{ExposeSecret, SecretString};

/// Set in the environment of the child processes.
const CHILD: &str = "INFRA_TEST_CREDENTIALS_CHILD";
/// Printed by a child when its body ran to the end.
const DONE: &str = "INFRA-CHILD-DONE";

/// Fails (never skips) when there is no real Secret Service to test against.
fn require_keyring() {
    if std::env::var("INFRA_TEST_KEYRING").as_deref() != Ok("1") {
        panic!(
            "this test needs a real Secret Service (gnome-keyring on a private D-Bus session) \
             and INFRA_TEST_KEYRING=1: run the tests with tests/run.sh, e.g. \
             INFRA_TEST_CMD='cargo test --test credentials' INFRA_TEST_NO_LINT=1 tests/run.sh"
        );
    }
}

/// Runs the child case `name` of this binary in a child process with
/// `INFRA_HOME=home` and `env`, and fails with its output unless its body
/// ran to the end.
fn run_child(name: &str, home: &Path, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.env(CHILD, name)
        .env("INFRA_HOME", home)
        .env_remove("INFRA_ACCESS_KEY")
        .env_remove("INFRA_NO_KEYRING")
        .env_remove("INFRA_KEYRING_TIMEOUT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("{DONE} {name}")),
        "child {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout.into_owned()
}

/// True in a child started by [`run_child`]; checks its environment, so a
/// child never touches the real config directory and keyring.
fn in_child() -> bool {
    if std::env::var_os(CHILD).is_none() {
        return false;
    }
    // Make sure the child's files go to the test's temporary directory.
    let home = std::env::var_os("INFRA_HOME").expect("INFRA_HOME is set for children");
    assert_eq!(config_dir(), PathBuf::from(home));
    true
}

fn done(name: &str) {
    println!("{DONE} {name}");
}

/// A server name no other test or run uses.
fn unique_server(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{nanos}.test.example:8443", std::process::id())
}

fn fresh_home() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    // Not created yet: the code must create it, 0700.
    let home = tmp.path().join("infra-home");
    (tmp, home)
}

/// `secret-tool lookup` with the attributes keyring's zbus Secret Service
/// store writes (`service`, `username`); None when nothing matches.
fn secret_tool_lookup(server: &str) -> Option<String> {
    let out = Command::new("timeout")
        .args([
            "20",
            "secret-tool",
            "lookup",
            "service",
            credentials::SERVICE,
            "username",
            server,
        ])
        .output()
        .expect("run secret-tool (libsecret-tools)");
    if out.status.success() {
        Some(String::from_utf8(out.stdout).unwrap())
    } else {
        assert!(
            out.stdout.is_empty(),
            "secret-tool failed but printed: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        None
    }
}

/// `secret-tool search` output (labels and attributes) for the item.
fn secret_tool_search(server: &str) -> String {
    let out = Command::new("timeout")
        .args([
            "20",
            "secret-tool",
            "search",
            "--all",
            "service",
            credentials::SERVICE,
            "username",
            server,
        ])
        .output()
        .expect("run secret-tool");
    // Leave the secret out of what a failing test prints.
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .lines()
    .filter(|l| !l.starts_with("secret ="))
    .collect::<Vec<_>>()
    .join("\n")
}

/// The keyring item's account for `server` in the config home `home`.
fn keyring_item(server: &str, home: &Path) -> String {
    format!("{server} {}", infra::local::token_cache::home_tag(home))
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            found.push(p);
        }
    }
    found
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn key_for(tag: &str) -> SecretString {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    SecretString::from(format!("{tag}.{}{nanos}", std::process::id()))
}

// ---------------------------------------------------------------------------
// The OS keyring (real Secret Service).
// ---------------------------------------------------------------------------

fn keyring_store_load_delete() {
    require_keyring();
    let (_tmp, home) = fresh_home();
    run_child("child_keyring_store_load_delete", &home, &[]);
}

fn child_keyring_store_load_delete() {
    if !in_child() {
        return;
    }
    let home = config_dir();
    let server = unique_server("kr");
    // The keyring is one per OS account: a config home of its own (this
    // INFRA_HOME) is part of the item's name.
    let item = keyring_item(&server, &home);

    // An older copy in the fallback file must go when the keyring takes the key.
    let old = key_for("old");
    let file_only = Credentials::new(&home).without_keyring("test");
    assert_eq!(
        file_only.store_key(&server, &old).unwrap().store,
        KeyStore::File
    );
    assert_eq!(files_containing(&home, old.expose_secret()).len(), 1);

    let key = key_for("kr");
    let stored = store_key(&server, &key).unwrap();
    assert_eq!(stored.store, KeyStore::Keyring, "{:?}", stored.warning);
    assert_eq!(stored.warning, None);

    // The real Secret Service has it, under service=infra username=SERVER.
    assert_eq!(
        secret_tool_lookup(&item).as_deref(),
        Some(key.expose_secret())
    );
    let search = secret_tool_search(&item);
    println!("secret-tool search:\n{search}");
    assert!(
        search.contains(&format!("infra access key for {server}")),
        "label missing:\n{search}"
    );

    // Exactly one copy: not in any file under INFRA_HOME, old one gone too.
    assert_eq!(
        files_containing(&home, key.expose_secret()),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(&home, old.expose_secret()),
        Vec::<PathBuf>::new()
    );

    for hint in [KeyStore::Keyring, KeyStore::File] {
        let (got, from) = load_key(&server, hint).unwrap().expect("key is found");
        assert_eq!(got.expose_secret(), key.expose_secret());
        assert_eq!(from, KeyStore::Keyring);
    }

    // Storing again replaces the item rather than adding a second one.
    let key2 = key_for("kr2");
    assert_eq!(store_key(&server, &key2).unwrap().store, KeyStore::Keyring);
    assert_eq!(
        secret_tool_lookup(&item).as_deref(),
        Some(key2.expose_secret())
    );

    delete_key(&server).unwrap();
    assert_eq!(secret_tool_lookup(&item), None);
    assert!(load_key(&server, KeyStore::Keyring).unwrap().is_none());
    delete_key(&server).unwrap(); // already gone: fine
    done("child_keyring_store_load_delete");
}

/// Two config homes logged in to one server as one person (the same
/// account name) keep a key each in the one keyring: neither login
/// overwrites the other's, and a logout takes only its own.
fn two_homes_keep_their_own_keys() {
    require_keyring();
    let (_a, home_a) = fresh_home();
    let (_b, home_b) = fresh_home();
    let account = format!("alice@{}", unique_server("homes"));
    let step = |home: &Path, what: &str, key: &str| {
        run_child(
            "child_two_homes",
            home,
            &[("ACCOUNT", account.as_str()), ("STEP", what), ("KEY", key)],
        );
    };
    step(&home_a, "store", "HomeA00001.SecretOfHomeA0123456789");
    step(&home_b, "store", "HomeB00001.SecretOfHomeB0123456789");
    step(&home_a, "expect", "HomeA00001.SecretOfHomeA0123456789");
    step(&home_b, "expect", "HomeB00001.SecretOfHomeB0123456789");
    step(&home_a, "delete", "");
    step(&home_a, "expect", "");
    step(&home_b, "expect", "HomeB00001.SecretOfHomeB0123456789");
    step(&home_b, "delete", "");
}

fn child_two_homes() {
    if !in_child() {
        return;
    }
    let account = std::env::var("ACCOUNT").unwrap();
    let key = std::env::var("KEY").unwrap();
    match std::env::var("STEP").unwrap().as_str() {
        "store" => {
            let stored = store_key(&account, &SecretString::from(key)).unwrap();
            assert_eq!(stored.store, KeyStore::Keyring, "{:?}", stored.warning);
        }
        "expect" => {
            let got = load_key(&account, KeyStore::Keyring).unwrap();
            assert_eq!(
                got.map(|(k, _)| k.expose_secret().to_string())
                    .unwrap_or_default(),
                key
            );
        }
        "delete" => delete_key(&account).unwrap(),
        other => panic!("no step {other}"),
    }
    done("child_two_homes");
}

fn access_key_env_wins_over_keyring_and_file() {
    require_keyring();
    let (_tmp, home) = fresh_home();
    run_child(
        "child_access_key_env_wins_over_keyring_and_file",
        &home,
        &[("INFRA_ACCESS_KEY", " from-the-environment \n")],
    );
}

fn child_access_key_env_wins_over_keyring_and_file() {
    if !in_child() {
        return;
    }
    let in_keyring = unique_server("envkr");
    let in_file = unique_server("envfile");
    let key = key_for("kr");
    assert_eq!(
        store_key(&in_keyring, &key).unwrap().store,
        KeyStore::Keyring
    );
    Credentials::new(config_dir())
        .without_keyring("test")
        .store_key(&in_file, &key_for("file"))
        .unwrap();

    for (server, hint) in [
        (&in_keyring, KeyStore::Keyring),
        (&in_file, KeyStore::File),
        (&"never-stored.example:8443".to_string(), KeyStore::Keyring),
    ] {
        let (got, from) = load_key(server, hint).unwrap().unwrap();
        assert_eq!(got.expose_secret(), "from-the-environment");
        assert_eq!(from, KeyStore::Environment);
    }
    // The stored copies are untouched by the override.
    let item = keyring_item(&in_keyring, &config_dir());
    assert_eq!(
        secret_tool_lookup(&item).as_deref(),
        Some(key.expose_secret())
    );
    delete_key(&in_keyring).unwrap();
    delete_key(&in_file).unwrap();
    assert_eq!(secret_tool_lookup(&item), None);
    done("child_access_key_env_wins_over_keyring_and_file");
}

// ---------------------------------------------------------------------------
// No usable keyring: the fallback file.
// ---------------------------------------------------------------------------

fn fallback_without_dbus() {
    let (_tmp, home) = fresh_home();
    run_child(
        "child_fallback_without_dbus",
        &home,
        &[(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/infra-test-bus",
        )],
    );
}

fn child_fallback_without_dbus() {
    if !in_child() {
        return;
    }
    let home = config_dir();
    let server = unique_server("nodbus");
    let key = key_for("file");
    let started = Instant::now();
    let stored = store_key(&server, &key).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no D-Bus must fail fast"
    );
    assert_eq!(stored.store, KeyStore::File);
    let file = home.join(credentials::CREDENTIALS_FILE);
    let warning = stored.warning.expect("a warning");
    println!("warning: {warning}");
    assert!(
        warning.starts_with("the OS keyring is not available ("),
        "{warning}"
    );
    assert!(
        warning.contains(&format!(
            "the access key is stored in {} (readable only by you)",
            file.display()
        )),
        "{warning}"
    );
    assert!(!warning.contains('\n'), "{warning}");
    assert!(!warning.contains(key.expose_secret()), "{warning}");

    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&home), 0o700);
    assert_eq!(
        files_containing(&home, key.expose_secret()),
        vec![file.clone()]
    );

    for hint in [KeyStore::File, KeyStore::Keyring] {
        let (got, from) = load_key(&server, hint).unwrap().expect("found");
        assert_eq!(got.expose_secret(), key.expose_secret());
        assert_eq!(from, KeyStore::File);
    }

    delete_key(&server).unwrap();
    assert!(files_containing(&home, key.expose_secret()).is_empty());
    assert!(load_key(&server, KeyStore::File).unwrap().is_none());
    // The config says "keyring" but the keyring can't be asked: say so,
    // rather than pretend there is no key.
    let e = load_key(&server, KeyStore::Keyring)
        .unwrap_err()
        .to_string();
    assert!(e.contains("OS keyring"), "{e}");
    done("child_fallback_without_dbus");
}

fn fallback_when_dbus_hangs() {
    // A socket that accepts connections and never says a word: the D-Bus
    // handshake waits forever, so only the timeout gets us out.
    let (tmp, home) = fresh_home();
    let sock = tmp.path().join("hung-bus");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // Connections are held open, unanswered, until the test is done with them.
    let (done, until_done) = std::sync::mpsc::channel::<()>();
    let keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(8) {
            match s {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
        let _ = until_done.recv();
        drop(held);
    });
    let started = Instant::now();
    run_child(
        "child_fallback_when_dbus_hangs",
        &home,
        &[
            (
                "DBUS_SESSION_BUS_ADDRESS",
                &format!("unix:path={}", sock.display()),
            ),
            ("INFRA_KEYRING_TIMEOUT", "1"),
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // Lets go of them (if fewer than 8 came, it ends with the test process).
    drop(done);
    drop(keep);
}

fn child_fallback_when_dbus_hangs() {
    if !in_child() {
        return;
    }
    let server = unique_server("hung");
    let key = key_for("hung");
    let started = Instant::now();
    let stored = store_key(&server, &key).unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert_eq!(stored.store, KeyStore::File);
    let warning = stored.warning.unwrap();
    println!("warning: {warning}");
    assert!(warning.contains("did not answer within 1s"), "{warning}");
    // Later calls in the same process don't wait again.
    let started = Instant::now();
    let (got, from) = load_key(&server, KeyStore::Keyring).unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(got.expose_secret(), key.expose_secret());
    assert_eq!(from, KeyStore::File);
    delete_key(&server).unwrap();
    done("child_fallback_when_dbus_hangs");
}

fn fallback_when_infra_no_keyring() {
    let (_tmp, home) = fresh_home();
    run_child(
        "child_fallback_when_infra_no_keyring",
        &home,
        &[("INFRA_NO_KEYRING", "1")],
    );
}

fn child_fallback_when_infra_no_keyring() {
    if !in_child() {
        return;
    }
    let home = config_dir();
    let server = unique_server("nokr");
    let key = key_for("nokr");
    let stored = store_key(&server, &key).unwrap();
    assert_eq!(stored.store, KeyStore::File);
    let warning = stored.warning.unwrap();
    println!("warning: {warning}");
    assert!(warning.contains("INFRA_NO_KEYRING"), "{warning}");
    assert!(
        warning.contains(&home.join("credentials").display().to_string()),
        "{warning}"
    );
    if std::env::var("INFRA_TEST_KEYRING").as_deref() == Ok("1") {
        for item in [server.clone(), keyring_item(&server, &home)] {
            assert_eq!(secret_tool_lookup(&item), None, "the keyring was touched");
        }
    }
    let (got, from) = load_key(&server, KeyStore::File).unwrap().unwrap();
    assert_eq!(got.expose_secret(), key.expose_secret());
    assert_eq!(from, KeyStore::File);
    delete_key(&server).unwrap();
    assert!(!home.join("credentials").exists());
    done("child_fallback_when_infra_no_keyring");
}

fn access_key_env_wins_over_file() {
    // The same rule as above, without a keyring, so it runs everywhere.
    let (_tmp, home) = fresh_home();
    run_child(
        "child_access_key_env_wins_over_file",
        &home,
        &[("INFRA_ACCESS_KEY", "env-key"), ("INFRA_NO_KEYRING", "1")],
    );
}

fn child_access_key_env_wins_over_file() {
    if !in_child() {
        return;
    }
    let server = unique_server("envonly");
    store_key(&server, &key_for("file")).unwrap();
    let (got, from) = load_key(&server, KeyStore::File).unwrap().unwrap();
    assert_eq!(got.expose_secret(), "env-key");
    assert_eq!(from, KeyStore::Environment);
    delete_key(&server).unwrap();
    done("child_access_key_env_wins_over_file");
}

// ---------------------------------------------------------------------------

fn main() {
    let children: &[(&str, fn())] = &[
        (
            "child_keyring_store_load_delete",
            child_keyring_store_load_delete,
        ),
        ("child_two_homes", child_two_homes),
        (
            "child_access_key_env_wins_over_keyring_and_file",
            child_access_key_env_wins_over_keyring_and_file,
        ),
        ("child_fallback_without_dbus", child_fallback_without_dbus),
        (
            "child_fallback_when_dbus_hangs",
            child_fallback_when_dbus_hangs,
        ),
        (
            "child_fallback_when_infra_no_keyring",
            child_fallback_when_infra_no_keyring,
        ),
        (
            "child_access_key_env_wins_over_file",
            child_access_key_env_wins_over_file,
        ),
    ];
    if let Ok(name) = std::env::var(CHILD) {
        let Some((_, f)) = children.iter().find(|(n, _)| *n == name) else {
            eprintln!("no child case named {name}");
            std::process::exit(2);
        };
        f();
        return;
    }
    let tests: &[(&str, fn())] = &[
        ("keyring_store_load_delete", keyring_store_load_delete),
        (
            "two_homes_keep_their_own_keys",
            two_homes_keep_their_own_keys,
        ),
        (
            "access_key_env_wins_over_keyring_and_file",
            access_key_env_wins_over_keyring_and_file,
        ),
        ("fallback_without_dbus", fallback_without_dbus),
        ("fallback_when_dbus_hangs", fallback_when_dbus_hangs),
        (
            "fallback_when_infra_no_keyring",
            fallback_when_infra_no_keyring,
        ),
        (
            "access_key_env_wins_over_file",
            access_key_env_wins_over_file,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        if !filter.is_empty() && !filter.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
        match std::panic::catch_unwind(f) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(101);
    }
}
