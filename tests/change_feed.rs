//! The change feed connectors follow: a grant change wakes exactly the
//! long polls of its destination, on every replica (PostgreSQL's
//! LISTEN/NOTIFY), even across a lost listener connection; and a replica
//! holds no more long polls than it is told to.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Server, ServerOptions};
use serde_json::{Value, json};

/// A connector key for `destination`, with the destination registered.
async fn connector_key(s: &Server, destination: &str) -> String {
    let key = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"connector": true, "name": format!("{destination}-{}", common::random_suffix()), "destination": destination})),
            201,
        )
        .await["accessKey"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = std::fs::read_to_string(s.data_dir.join("tls.crt")).unwrap();
    let (status, body) = s
        .call(
            "POST",
            "/api/destinations",
            Some(&key),
            Some(json!({"name": destination, "url": "https://127.0.0.1:6443", "ca": ca})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    key
}

/// The connector's read of its grants: (status, index, names of the
/// granted roles, Retry-After).
async fn poll(
    s: &Server,
    key: &str,
    destination: &str,
    index: Option<&str>,
) -> (u16, String, Vec<String>, Option<String>) {
    let mut url = format!("{}/api/grants?destination={destination}", s.url);
    if let Some(i) = index {
        url.push_str(&format!("&lastUpdateIndex={i}"));
    }
    let resp = s
        .client
        .get(url)
        .header("Infra-Version", common::VERSION)
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let index = header("last-update-index").unwrap_or_default();
    let retry = header("retry-after");
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let roles = body["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| g["role"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    (status, index, roles, retry)
}

/// Two replicas on one PostgreSQL, sharing the root key.
async fn two_replicas() -> (Server, Server) {
    let a = Server::start(Backend::Postgres).await;
    let mut opts = ServerOptions::new(Backend::Postgres);
    opts.db = a.db.clone();
    opts.extra_args = vec![
        "--root-key-file".into(),
        a.data_dir.join("root.key").display().to_string(),
    ];
    let b = Server::start_with(opts).await;
    (a, b)
}

async fn grant(s: &Server, user: &str, destination: &str, role: &str) {
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": user, "destination": destination, "role": role})),
        201,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_on_replica_a_wakes_the_long_poll_on_replica_b_and_no_other() {
    let (a, b) = two_replicas().await;
    let prod = connector_key(&a, "prod").await;
    let dev = connector_key(&a, "dev").await;
    let (alice, _) = a.user_with_key("alice").await;
    let (_, prod_index, _, _) = poll(&b, &prod, "prod", None).await;
    let (_, dev_index, _, _) = poll(&b, &dev, "dev", None).await;

    let b = std::sync::Arc::new(b);
    let waiting_prod = {
        let (b, prod, i) = (b.clone(), prod.clone(), prod_index.clone());
        tokio::spawn(async move {
            let r = poll(&b, &prod, "prod", Some(&i)).await;
            (r, Instant::now())
        })
    };
    let waiting_dev = {
        let (b, dev, i) = (b.clone(), dev.clone(), dev_index.clone());
        tokio::spawn(async move { poll(&b, &dev, "dev", Some(&i)).await })
    };
    // (Whether the polls are waiting yet or not, the answers are the same:
    // a poll that starts after the change sees the new index at once.)
    let changed = Instant::now();
    grant(&a, &alice, "prod.web", "edit").await;
    let ((status, index, roles, _), woke) = waiting_prod.await.unwrap();
    assert_eq!(status, 200);
    assert_ne!(index, prod_index, "a new index");
    assert_eq!(roles, ["edit"], "the answer holds the new grant");
    // Woken by the change, not by the 30 s timeout.
    let took = woke.duration_since(changed);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The change was not dev's: its poll still waits.
    assert!(
        !waiting_dev.is_finished(),
        "dev's poll was woken by prod's change"
    );
    waiting_dev.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_the_listener_is_down_is_still_delivered() {
    let (a, b) = two_replicas().await;
    let prod = connector_key(&a, "prod").await;
    let (alice, _) = a.user_with_key("alice").await;
    let (_, index, _, _) = poll(&b, &prod, "prod", None).await;
    let b = std::sync::Arc::new(b);
    let waiting = {
        let (b, prod, i) = (b.clone(), prod.clone(), index.clone());
        tokio::spawn(async move { poll(&b, &prod, "prod", Some(&i)).await })
    };

    // Cut every replica's listener connection, then change at once, while
    // they open new ones.
    use sqlx::Row;
    let mut db = a.db_connection().await;
    let cut = sqlx::query(
        "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%' AND datname = current_database()",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let n: i64 = cut.try_get("n").unwrap();
    assert_eq!(n, 2, "each replica has one listener connection");
    grant(&a, &alice, "prod", "view").await;

    let started = Instant::now();
    let (status, new_index, roles, _) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_ne!(new_index, index);
    assert_eq!(roles, ["view"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "delivered by the catch-up, not the 30 s timeout"
    );
    // And the replica keeps listening: the next change arrives too.
    let waiting = {
        let (b, prod, i) = (b.clone(), prod.clone(), new_index.clone());
        tokio::spawn(async move { poll(&b, &prod, "prod", Some(&i)).await })
    };
    grant(&a, &alice, "prod", "edit").await;
    let (_, _, roles, _) = waiting.await.unwrap();
    assert_eq!(roles.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_long_poll_cap_answers_503_with_retry_after() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.extra_args = vec!["--max-long-polls".into(), "1".into()];
    let s = std::sync::Arc::new(Server::start_with(opts).await);
    let prod = connector_key(&s, "prod").await;
    let (_, index, _, _) = poll(&s, &prod, "prod", None).await;
    let first = {
        let (s, prod, i) = (s.clone(), prod.clone(), index.clone());
        tokio::spawn(async move { poll(&s, &prod, "prod", Some(&i)).await })
    };
    // Once the first one holds the only place (the gauge says so)...
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !s.metrics().await.contains("infra_long_polls 1\n") {
        assert!(Instant::now() < deadline, "{}", s.metrics().await);
        tick.tick().await;
    }
    // ...a second is turned away at once, told when to come back.
    let (status, _, _, retry) = poll(&s, &prod, "prod", Some(&index)).await;
    assert_eq!(status, 503);
    assert_eq!(retry.as_deref(), Some("5"));
    // A read without an index is not a long poll: still served.
    let (status, _, _, _) = poll(&s, &prod, "prod", None).await;
    assert_eq!(status, 200);
    first.abort();
}

/// The feed carries revocations too: a user's key revoked, or the user
/// taken out of a group, wakes the long polls of the destinations they hold
/// grants on (what live revocation on the connector follows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_wake_the_destinations_they_concern() {
    let s = std::sync::Arc::new(Server::start(Backend::Sqlite).await);
    let prod = connector_key(&s, "prod").await;
    let (alice, _) = s.user_with_key("alice").await;
    let sre = s
        .ok("POST", "/api/groups", Some(json!({"name": "sre"})), 201)
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(
        "PATCH",
        &format!("/api/groups/{sre}/users"),
        Some(json!({"usersToAdd": [alice]})),
        200,
    )
    .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": sre, "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    let woken_by = async |change: &str| {
        let (_, index, _, _) = poll(&s, &prod, "prod", None).await;
        let waiting = {
            let (s, prod, i) = (s.clone(), prod.clone(), index.clone());
            tokio::spawn(async move { (poll(&s, &prod, "prod", Some(&i)).await, Instant::now()) })
        };
        let t = Instant::now();
        match change {
            "key" => {
                let keys = s
                    .ok(
                        "GET",
                        &format!("/api/access-keys?userID={alice}"),
                        None,
                        200,
                    )
                    .await;
                let id = keys["items"][0]["id"].as_str().unwrap().to_string();
                s.ok("DELETE", &format!("/api/access-keys/{id}"), None, 204)
                    .await;
            }
            _ => {
                s.ok(
                    "PATCH",
                    &format!("/api/groups/{sre}/users"),
                    Some(json!({"usersToRemove": [alice]})),
                    200,
                )
                .await;
            }
        }
        let ((status, new_index, _, _), woke) = waiting.await.unwrap();
        assert_eq!(status, 200);
        assert_ne!(new_index, index, "{change}: a new index");
        let took = woke.duration_since(t);
        assert!(took < Duration::from_secs(5), "{change}: took {took:?}");
    };
    woken_by("key").await;
    woken_by("membership").await;
}

/// Only a destination's own connector asks whether the people behind its
/// open streams still have access; the answer names what was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_destinations_connector_checks_open_streams() {
    let s = Server::start(Backend::Sqlite).await;
    let prod = connector_key(&s, "prod").await;
    let dev = connector_key(&s, "dev").await;
    let (alice, alice_key) = s.user_with_key("alice").await;
    grant(&s, &alice, "prod.web", "view").await;
    let sid = alice_key.split('.').next().unwrap();
    let ask = |holders: Value| json!({"destination": "prod", "holders": holders});
    let holder = |ns: &str| json!({"sub": alice, "sid": sid, "groups": [], "namespace": ns});
    for (key, who) in [(&alice_key, "a user"), (&dev, "dev's connector")] {
        let (status, body) = s
            .call(
                "POST",
                "/api/access/check",
                Some(key),
                Some(ask(json!([holder("web")]))),
            )
            .await;
        assert_eq!(status, 403, "{who}: {body}");
    }
    let (status, body) = s
        .call(
            "POST",
            "/api/access/check",
            Some(&prod),
            Some(ask(json!([
                holder("web"),
                holder("db"),
                {"sub": alice, "sid": sid, "groups": ["sre"]},
                {"sub": alice, "sid": "nokey", "groups": []},
            ]))),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let r = &body["results"];
    assert_eq!(r[0]["allowed"], true, "{body}");
    assert_eq!(r[1]["allowed"], false);
    assert_eq!(r[1]["reason"], "no grant on prod.db any more");
    assert_eq!(r[1]["tokenRevoked"], false, "other namespaces stay open");
    assert_eq!(r[2]["reason"], "no longer in the group sre");
    assert_eq!(r[2]["tokenRevoked"], true);
    assert_eq!(r[3]["reason"], "the access key nokey was revoked");
    let too_many: Vec<Value> = (0..1001).map(|_| holder("web")).collect();
    let (status, _) = s
        .call(
            "POST",
            "/api/access/check",
            Some(&prod),
            Some(ask(json!(too_many))),
        )
        .await;
    assert_eq!(status, 400);
}

/// A connector that holds the current grants (it sends their ETag back in
/// If-None-Match) gets 304 and no list; after a change it gets the list
/// again. Others always get the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_holding_the_current_grants_gets_304() {
    let s = Server::start(Backend::Sqlite).await;
    let prod = connector_key(&s, "prod").await;
    let (alice, _) = s.user_with_key("alice").await;
    grant(&s, &alice, "prod", "view").await;
    let get = async |key: &str, etag: Option<&str>| {
        let mut req = s
            .client
            .get(format!("{}/api/grants?destination=prod&limit=1000", s.url))
            .header("Infra-Version", common::VERSION)
            .bearer_auth(key);
        if let Some(t) = etag {
            req = req.header("If-None-Match", t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
        let (etag, index) = (h("etag"), h("last-update-index"));
        (status, etag, index, r.text().await.unwrap())
    };
    let (status, etag, index, body) = get(&prod, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"view\""), "{body}");
    let etag = etag.expect("an ETag");
    let (status, _, same_index, body) = get(&prod, Some(&etag)).await;
    assert_eq!((status, body.as_str()), (304, ""));
    assert_eq!(same_index, index);
    grant(&s, &alice, "prod", "edit").await;
    let (status, new_etag, new_index, body) = get(&prod, Some(&etag)).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"edit\""), "{body}");
    assert_ne!(new_etag.as_deref(), Some(etag.as_str()));
    assert_ne!(new_index, index);
    // An admin's read is no long poll: always the list.
    let (status, _, _, _) = get(common::ADMIN_KEY, new_etag.as_deref()).await;
    assert_eq!(status, 200);
}
