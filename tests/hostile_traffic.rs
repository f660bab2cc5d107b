//! `infra server` under hostile traffic: floods of failed logins from one
//! address, repeats that would grow the database, and numbers that would
//! overflow. Each test is named for the attack; the real binary, on SQLite
//! and PostgreSQL where storage matters. Clients choose their source address
//! inside 127.0.0.0/8 (all loopback on Linux) to play several machines.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Backend, Server, ServerOptions, VERSION};
use serde_json::{Value, json};

both_backends!(
    repeated_failures_are_one_audit_entry_with_a_count,
    audit_entries_older_than_the_retention_are_removed,
);

/// An HTTP client whose connections come from `local`.
fn client_from(s: &Server, local: &str) -> reqwest::Client {
    let pem = std::fs::read(s.data_dir.join("tls.crt")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(local.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `POST /api/login` with a password, from `client`; status, Retry-After, body.
async fn password_login(
    s: &Server,
    client: &reqwest::Client,
    name: &str,
    password: &str,
) -> (u16, Option<u64>, Value) {
    let resp = client
        .post(format!("{}/api/login", s.url))
        .header("Infra-Version", VERSION)
        .json(&json!({"passwordCredentials": {"name": name, "password": password}}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, resp.json().await.unwrap())
}

async fn audit(s: &Server, action: &str) -> Vec<Value> {
    s.ok(
        "GET",
        &format!("/api/audit?action={action}&limit=1000"),
        None,
        200,
    )
    .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

// ------------------------------------------------------------------ floods

/// Wrong passwords for alice from 127.0.0.2 hold back that address's
/// guesses at alice, and nobody else's login: alice from 127.0.0.1, bob
/// from the flooding address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_from_one_address_does_not_lock_the_user_out() {
    let s = Server::start(Backend::Sqlite).await;
    for name in ["alice", "bob"] {
        s.ok(
            "POST",
            "/api/users",
            Some(json!({"name": name, "password": "the-right-one"})),
            201,
        )
        .await;
    }
    let attacker = client_from(&s, "127.0.0.2");
    let mut refused = 0;
    for _ in 0..30 {
        let (status, _, body) = password_login(&s, &attacker, "alice", "guess").await;
        match status {
            401 => assert!(message(&body).contains("wrong user name or password")),
            429 => {
                refused += 1;
                assert!(
                    message(&body)
                        .contains("too many failed logins as \"alice\" from your address"),
                    "{body}"
                );
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(refused >= 20, "the flood is held back: {refused} of 30");
    // Its own guess with the right password waits too.
    let (status, _, _) = password_login(&s, &attacker, "alice", "the-right-one").await;
    assert_eq!(status, 429);

    let (status, _, body) = password_login(&s, &s.client, "alice", "the-right-one").await;
    assert_eq!(status, 201, "alice signs in from her own address: {body}");
    let (status, _, body) = password_login(&s, &attacker, "bob", "the-right-one").await;
    assert_eq!(status, 201, "bob, from the same address, too: {body}");
}

/// Past the free failures each failure doubles the wait, and the answer
/// says how long: Retry-After 1, then 2, then 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_back_off_doubling_in_retry_after() {
    let s = Server::start(Backend::Sqlite).await;
    s.ok(
        "POST",
        "/api/users",
        Some(json!({"name": "alice", "password": "the-right-one"})),
        201,
    )
    .await;
    let c = &s.client;
    for _ in 0..5 {
        let (status, _, body) = password_login(&s, c, "alice", "guess").await;
        assert_eq!(status, 401, "{body}");
    }
    let mut waits = Vec::new();
    for _ in 0..3 {
        let (status, retry, body) = password_login(&s, c, "alice", "guess").await;
        assert_eq!(status, 429, "{body}");
        let secs = retry.expect("Retry-After");
        assert!(
            message(&body).contains(&format!("try again in {secs} second")),
            "{body}"
        );
        waits.push(secs);
        // The wait passes on the server's clock.
        s.advance_clock(secs as i64);
        let (status, _, body) = password_login(&s, c, "alice", "guess").await;
        assert_eq!(status, 401, "tried again after the wait: {body}");
    }
    assert_eq!(waits, [1, 2, 4]);
}

/// Guesses at one password from many addresses (5 each, under every
/// address's own limit) add up: past 50 in 15 minutes, addresses that never
/// signed in as the user wait for the 15 minutes to end, while the user's
/// own address still gets in. No count anyone can raise locks the user out
/// everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_spray_from_many_addresses_does_not_lock_out_the_users_own() {
    let s = Server::start(Backend::Sqlite).await;
    s.ok(
        "POST",
        "/api/users",
        Some(json!({"name": "alice", "password": "the-right-one"})),
        201,
    )
    .await;
    // Alice has signed in from her address before.
    let (status, _, _) = password_login(&s, &s.client, "alice", "the-right-one").await;
    assert_eq!(status, 201);
    for i in 10..20 {
        let bot = client_from(&s, &format!("127.0.0.{i}"));
        for _ in 0..5 {
            let (status, _, body) = password_login(&s, &bot, "alice", "guess").await;
            assert_eq!(status, 401, "127.0.0.{i}: {body}");
        }
    }
    let stranger = client_from(&s, "127.0.0.99");
    let (status, retry, body) = password_login(&s, &stranger, "alice", "the-right-one").await;
    assert_eq!(status, 429, "{body}");
    assert!(message(&body).contains("from many addresses"), "{body}");
    let secs = retry.unwrap();
    assert!(
        (600..=900).contains(&secs),
        "until the 15 minutes end: {secs}"
    );
    let (status, _, body) = password_login(&s, &s.client, "alice", "the-right-one").await;
    assert_eq!(status, 201, "her own address gets in: {body}");
}

/// An IPv6 client is its /64: whoever holds one address of it holds them
/// all. (Linux gives loopback only ::1, so rotating through a /64 is the
/// unit test `ipv6_sources_are_their_64`; here the server keys ::1 by its
/// /64 and holds it back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_64_counts_as_one_source() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.extra_args = vec!["--listen".into(), "[::1]:0".into()];
    let s = Server::start_with(opts).await;
    assert!(s.url.starts_with("https://[::1]:"), "{}", s.url);
    s.ok(
        "POST",
        "/api/users",
        Some(json!({"name": "alice", "password": "the-right-one"})),
        201,
    )
    .await;
    for _ in 0..5 {
        let (status, _, _) = password_login(&s, &s.client, "alice", "guess").await;
        assert_eq!(status, 401);
    }
    let (status, _, _) = password_login(&s, &s.client, "alice", "guess").await;
    assert_eq!(status, 429);
    let failures: Vec<Value> = audit(&s, "login")
        .await
        .into_iter()
        .filter(|e| e["result"] == "failure")
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["remoteAddr"], "::/64");
    assert_eq!(failures[0]["count"], 5);
}

// ------------------------------------------------------------------ the database

/// Failed logins (people's and machines') repeated from one source are
/// one audit entry with a count, not a row each.
async fn repeated_failures_are_one_audit_entry_with_a_count(b: Backend) {
    let s = Server::start(b).await;
    s.ok(
        "POST",
        "/api/users",
        Some(json!({"name": "alice", "password": "the-right-one"})),
        201,
    )
    .await;
    for _ in 0..4 {
        let (status, _, _) = password_login(&s, &s.client, "alice", "guess").await;
        assert_eq!(status, 401);
    }
    let other = client_from(&s, "127.0.0.3");
    let (status, _, _) = password_login(&s, &other, "alice", "guess").await;
    assert_eq!(status, 401);
    // Tokens whose header is 100 KB of the stranger's text, different each
    // time: one row, nothing of that size stored or echoed.
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    for i in 0..3 {
        let kid = format!("{i}{}", "k".repeat(100_000));
        let jwt = format!(
            "{}.{}.c2ln",
            b64(json!({"alg": "RS256", "kid": kid})),
            b64(json!({"sub": "x"}))
        );
        let (status, v) = s
            .call(
                "POST",
                "/api/v1/auth/oidc-auth/login",
                None,
                Some(json!({"identityId": "nope", "jwt": jwt})),
            )
            .await;
        assert_eq!(status, 401, "{v}");
        assert!(
            v.to_string().len() < 2000,
            "{} bytes echoed",
            v.to_string().len()
        );
    }
    // A machine identity without an oidc-auth configuration refuses every login.
    s.ok("POST", "/api/identities", Some(json!({"name": "ci"})), 201)
        .await;
    for _ in 0..3 {
        let (status, v) = s
            .call(
                "POST",
                "/api/v1/auth/oidc-auth/login",
                None,
                Some(json!({"identityId": "ci", "jwt": "not.a.jwt"})),
            )
            .await;
        assert_eq!(status, 401, "{v}");
    }

    let failures: Vec<Value> = audit(&s, "login")
        .await
        .into_iter()
        .filter(|e| e["result"] == "failure")
        .collect();
    assert_eq!(failures.len(), 2, "one per source: {failures:?}");
    let from = |addr: &str| {
        failures
            .iter()
            .find(|e| e["remoteAddr"] == addr)
            .unwrap_or_else(|| panic!("none from {addr}: {failures:?}"))
            .clone()
    };
    let local = from("127.0.0.1");
    assert_eq!(local["count"], 4);
    assert_eq!(local["target"], "alice");
    assert!(local["lastTime"].as_str().unwrap() >= local["time"].as_str().unwrap());
    assert_eq!(from("127.0.0.3")["count"], 1);
    let machine = audit(&s, "identity.login").await;
    assert_eq!(machine.len(), 2, "one row per refusal: {machine:?}");
    assert!(machine.iter().all(|e| e["count"] == 3), "{machine:?}");
    assert!(machine.iter().all(|e| e.to_string().len() < 2000));
    let machine: Vec<Value> = machine
        .into_iter()
        .filter(|e| e["target"] == "ci")
        .collect();
    let detail = machine[0]["detail"].as_str().unwrap();
    assert!(detail.contains("no oidc-auth configuration"), "{detail}");
    // A success is its own entry, with a count of 1.
    let (status, _, _) = password_login(&s, &s.client, "alice", "the-right-one").await;
    assert_eq!(status, 201);
    let ok: Vec<Value> = audit(&s, "login")
        .await
        .into_iter()
        .filter(|e| e["result"] == "success")
        .collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["count"], 1);
}

/// Inserts an audit entry `age_ms` old straight into the database.
async fn old_entry(s: &Server, id: &str, age_ms: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut conn = s.db_connection().await;
    sqlx::query(
        "INSERT INTO audit_log (id, time_ms, last_ms, actor, action, target, result, \
         remote_addr, detail, count) VALUES ($1, $2, $2, 'mallory', 'login', 'alice', \
         'failure', '192.0.2.1', 'password: wrong user name or password', 7)",
    )
    .bind(id)
    .bind(now - age_ms)
    .execute(&mut conn)
    .await
    .unwrap();
}

async fn ids(s: &Server) -> Vec<String> {
    s.ok("GET", "/api/audit?limit=1000", None, 200).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `f` holds (see `common::wait_until`).
async fn eventually(what: &str, f: impl AsyncFnMut() -> bool) {
    common::wait_until(what, f).await
}

/// Nothing is kept forever: entries older than `--audit-retention` go in
/// the background, newer ones stay.
async fn audit_entries_older_than_the_retention_are_removed(b: Backend) {
    let mut opts = ServerOptions::new(b);
    opts.extra_args = vec![
        "--audit-retention".into(),
        "1h".into(),
        "--audit-prune-interval".into(),
        "1s".into(),
    ];
    let s = Server::start_with(opts).await;
    s.ok("POST", "/api/users", Some(json!({"name": "alice"})), 201)
        .await;
    old_entry(&s, "old1", 2 * 3600 * 1000).await;
    old_entry(&s, "old2", 90 * 86_400 * 1000).await;
    old_entry(&s, "recent", 10 * 60 * 1000).await;
    eventually("the old entries are gone", async || {
        !ids(&s).await.iter().any(|i| i.starts_with("old"))
    })
    .await;
    let left = audit(&s, "login").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (&left[0]["id"], &left[0]["count"]),
        (&json!("recent"), &json!(7))
    );
    assert!(
        !audit(&s, "user.create").await.is_empty(),
        "today's entries stay"
    );
}

/// What a replica logs when another one holds the pruning lease.
const LEFT_TO_ANOTHER: &str = "another replica prunes";

/// Replicas share the pruning: while one holds the period's lease, the
/// others leave the log alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_at_a_time_prunes_the_audit_log() {
    let mut a = ServerOptions::new(Backend::Postgres);
    a.extra_args = vec!["--audit-retention".into(), "1h".into()];
    // Prunes at start, then holds the lease for its period: an hour.
    let a = Server::start_with(a).await;
    let mut b = ServerOptions::new(Backend::Postgres);
    b.db = a.db.clone();
    b.extra_args = vec![
        "--audit-retention".into(),
        "1h".into(),
        "--audit-prune-interval".into(),
        "1s".into(),
    ];
    // b says (at debug level) when it leaves a period to another replica.
    b.env = vec![(
        "INFRA_LOG".into(),
        "info,infra::server::retention=debug".into(),
    )];
    let b = Server::start_with(b).await;
    let left_alone = |b: &Server| b.stderr().matches(LEFT_TO_ANOTHER).count();
    old_entry(&a, "old", 2 * 3600 * 1000).await;
    // Three rounds of b's (a second apart) after the entry is in.
    let before = left_alone(&b);
    eventually("three of b's pruning rounds", async || {
        left_alone(&b) >= before + 3
    })
    .await;
    assert!(
        ids(&b).await.contains(&"old".to_string()),
        "b pruned while a held the lease"
    );
    // When a's lease is over, b takes the next period's.
    let mut conn = a.db_connection().await;
    sqlx::query("UPDATE settings SET value = '0' WHERE name = 'audit.prune_lease_until_ms'")
        .execute(&mut conn)
        .await
        .unwrap();
    eventually("b prunes", async || {
        !ids(&b).await.contains(&"old".to_string())
    })
    .await;
}

/// `?page=18446744073709551615` once wrapped around to a negative offset;
/// it is a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_past_any_end_is_a_400_not_an_overflow() {
    let s = Server::start(Backend::Sqlite).await;
    for path in [
        "/api/audit?page=18446744073709551615",
        "/api/users?page=18446744073709551615",
        "/api/users?page=9223372036854775807&limit=2",
    ] {
        let (status, err) = s.admin("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {err}");
        assert_eq!(err["fieldErrors"][0]["fieldName"], "page", "{path}: {err}");
        assert!(message(&err).contains("past the end"), "{err}");
    }
    // Past the end of this list: a 400 too, saying how long it is. The
    // first page of a list is served even when it is empty.
    let (status, err) = s.admin("GET", "/api/users?page=2", None).await;
    assert_eq!(status, 400, "{err}");
    assert!(message(&err).contains("past the end of the list"), "{err}");
    let v = s
        .ok("GET", "/api/grants?page=1&user=nobody", None, 200)
        .await;
    assert_eq!(v["count"], 0);
    // Malformed numbers are 400s in the API's JSON, naming the parameter.
    for path in [
        "/api/users?page=abc",
        "/api/users?page=-1",
        "/api/audit?limit=18446744073709551616",
    ] {
        let (status, err) = s.admin("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {err}");
        let field = err["fieldErrors"][0]["fieldName"]
            .as_str()
            .unwrap_or_default();
        assert!(field == "page" || field == "limit", "{path}: {err}");
    }
}

/// Under a low open-files limit the server says so at start, and says so
/// again when connections nearly exhaust it (the HTTP layer would
/// otherwise retry failed accepts without a word).
#[tokio::test]
async fn running_out_of_file_descriptors_is_logged() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.open_files = Some(120);
    let s = Server::start_with(opts).await;
    assert!(
        s.stderr().contains("may hold only 120 open files"),
        "{}",
        s.stderr()
    );
    let addr = s.url.trim_start_matches("https://").to_string();
    let mut held = Vec::new();
    for _ in 0..130 {
        // Connections that never finish their TLS handshake, each holding
        // a descriptor until the handshake timeout.
        if let Ok(c) = tokio::net::TcpStream::connect(&addr).await {
            held.push(c);
        }
    }
    common::wait_until("the warning that connections will be refused", async || {
        s.stderr().contains("new connections will be refused")
    })
    .await;
    drop(held);
}
