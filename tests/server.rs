//! `infra server` as a user of the API meets it: the real binary on a free
//! loopback port, over HTTPS, on SQLite and on PostgreSQL.

mod common;

use common::{ADMIN_KEY, Backend, OidcProvider, Server, ServerOptions, VERSION};
use serde_json::{Value, json};

both_backends!(
    users_and_login,
    groups_and_members,
    grants_and_authorization,
    destinations,
    access_keys,
    providers,
    identities,
    wrong_password_is_rate_limited,
    expired_and_revoked_keys,
    request_errors,
    restart_keeps_all_data,
    audit_log_and_metrics,
);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[field].as_str().unwrap().to_string())
        .collect()
}

async fn users_and_login(b: Backend) {
    let s = Server::start(b).await;
    let alice = s
        .ok(
            "POST",
            "/api/users",
            Some(json!({"name": "alice@example.com", "password": "correct-horse"})),
            201,
        )
        .await;
    assert_eq!(alice["name"], "alice@example.com");
    assert_eq!(alice["hasPassword"], true);
    let got = s
        .ok("GET", &format!("/api/users/{}", id(&alice)), None, 200)
        .await;
    assert_eq!(got, alice);

    // Duplicates are a 409.
    let (status, err) = s
        .admin(
            "POST",
            "/api/users",
            Some(json!({"name": "alice@example.com"})),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert!(err["message"].as_str().unwrap().contains("already exists"));

    // Password login returns a key that works, and the list pages.
    let (status, login) = s
        .call("POST", "/api/login", None,
            Some(json!({"passwordCredentials": {"name": "alice@example.com", "password": "correct-horse"}})))
        .await;
    assert_eq!(status, 201, "{login}");
    assert_eq!(login["userID"], alice["id"]);
    assert_eq!(login["name"], "alice@example.com");
    let key = login["accessKey"].as_str().unwrap();
    let (status, me) = s
        .call(
            "GET",
            &format!("/api/users/{}", id(&alice)),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert!(me["lastSeen"].is_string());

    for n in ["bob", "carol", "dave"] {
        s.ok("POST", "/api/users", Some(json!({"name": n})), 201)
            .await;
    }
    let page = s.ok("GET", "/api/users?limit=2&page=2", None, 200).await;
    assert_eq!(page["count"], 2);
    assert_eq!(page["page"], 2);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["totalCount"], 5); // admin, alice, bob, carol, dave
    assert_eq!(page["totalPages"], 3);
    assert_eq!(names(&page, "name"), ["bob", "carol"]);

    // A user may change their own password, and then only the new one works.
    let (status, _) = s
        .call(
            "PUT",
            &format!("/api/users/{}", id(&alice)),
            Some(key),
            Some(json!({"password": "battery-staple", "currentPassword": "correct-horse"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call("POST", "/api/login", None,
            Some(json!({"passwordCredentials": {"name": "alice@example.com", "password": "correct-horse"}})))
        .await;
    assert_eq!(status, 401);
    let (status, _) = s
        .call("POST", "/api/login", None,
            Some(json!({"passwordCredentials": {"name": "alice@example.com", "password": "battery-staple"}})))
        .await;
    assert_eq!(status, 201);

    // Login with an access key exchanges it for a new one.
    let (status, exchanged) = s
        .call("POST", "/api/login", None, Some(json!({"accessKey": key})))
        .await;
    assert_eq!(status, 201, "{exchanged}");
    assert_ne!(exchanged["accessKey"], login["accessKey"]);
    assert_eq!(exchanged["userID"], alice["id"]);

    // Logout revokes the key it was called with.
    let new_key = exchanged["accessKey"].as_str().unwrap();
    let (status, _) = s.call("POST", "/api/logout", Some(new_key), None).await;
    assert_eq!(status, 204);
    let (status, err) = s.call("GET", "/api/grants", Some(new_key), None).await;
    assert_eq!(status, 401, "{err}");

    // Deleting a user removes them and their keys.
    let (status, _) = s
        .admin("DELETE", &format!("/api/users/{}", id(&alice)), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .admin("GET", &format!("/api/users/{}", id(&alice)), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = s.call("GET", "/api/grants", Some(key), None).await;
    assert_eq!(status, 401);

    // Nothing secret reached the log.
    let log = s.stderr();
    for secret in ["correct-horse", "battery-staple", key, new_key, ADMIN_KEY] {
        assert!(
            !log.contains(secret),
            "the server log holds a secret: {log}"
        );
    }
}

async fn groups_and_members(b: Backend) {
    let s = Server::start(b).await;
    let dev = s
        .ok("POST", "/api/groups", Some(json!({"name": "dev"})), 201)
        .await;
    let (status, _) = s
        .admin("POST", "/api/groups", Some(json!({"name": "dev"})))
        .await;
    assert_eq!(status, 409);
    let a = s
        .ok("POST", "/api/users", Some(json!({"name": "a"})), 201)
        .await;
    let bb = s
        .ok("POST", "/api/users", Some(json!({"name": "b"})), 201)
        .await;
    let path = format!("/api/groups/{}/users", id(&dev));
    let g = s
        .ok(
            "PATCH",
            &path,
            Some(json!({"usersToAdd": [id(&a), id(&bb)]})),
            200,
        )
        .await;
    assert_eq!(g["totalUsers"], 2);
    let members = s.ok("GET", &path, None, 200).await;
    assert_eq!(names(&members, "name"), ["a", "b"]);
    let g = s
        .ok(
            "PATCH",
            &path,
            Some(json!({"usersToRemove": [id(&a)]})),
            200,
        )
        .await;
    assert_eq!(g["totalUsers"], 1);
    let (status, err) = s
        .admin("PATCH", &path, Some(json!({"usersToAdd": ["nobody"]})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["fieldErrors"][0]["fieldName"], "usersToAdd[0]");
    let listed = s.ok("GET", "/api/groups?name=dev", None, 200).await;
    assert_eq!(listed["totalCount"], 1);
    let (status, _) = s
        .admin("DELETE", &format!("/api/groups/{}", id(&dev)), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .admin("GET", &format!("/api/groups/{}", id(&dev)), None)
        .await;
    assert_eq!(status, 404);
}

async fn grants_and_authorization(b: Backend) {
    let s = Server::start(b).await;
    let (alice, alice_key) = s.user_with_key("alice").await;
    let (bob, bob_key) = s.user_with_key("bob").await;
    let ops = s
        .ok("POST", "/api/groups", Some(json!({"name": "ops"})), 201)
        .await;
    s.ok(
        "PATCH",
        &format!("/api/groups/{}/users", id(&ops)),
        Some(json!({"usersToAdd": [alice]})),
        200,
    )
    .await;

    let g1 = s
        .ok(
            "POST",
            "/api/grants",
            Some(json!({"user": alice, "destination": "prod", "role": "view"})),
            201,
        )
        .await;
    assert_eq!(g1["subjectName"], "alice");
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": id(&ops), "destination": "prod.kube-system", "role": "edit"})),
        201,
    )
    .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": bob, "destination": "staging", "role": "admin"})),
        201,
    )
    .await;
    let (status, _) = s
        .admin(
            "POST",
            "/api/grants",
            Some(json!({"user": alice, "destination": "prod", "role": "view"})),
        )
        .await;
    assert_eq!(status, 409);
    for (body, field) in [
        (
            json!({"user": alice, "destination": "Prod!", "role": "view"}),
            "destination",
        ),
        (
            json!({"user": alice, "destination": "prod", "role": "View Me"}),
            "role",
        ),
        (
            json!({"user": alice, "destination": "infra", "role": "cluster-admin"}),
            "role",
        ),
        (
            json!({"user": "nobody", "destination": "prod", "role": "view"}),
            "user",
        ),
        (json!({"destination": "prod", "role": "view"}), "user"),
    ] {
        let (status, err) = s.admin("POST", "/api/grants", Some(body)).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["fieldErrors"][0]["fieldName"], field, "{err}");
    }

    // A user reads their own grants, including those through groups...
    let (status, mine) = s.call("GET", "/api/grants", Some(&alice_key), None).await;
    assert_eq!(status, 200, "{mine}");
    let mut dests = names(&mine, "destination");
    dests.sort();
    assert_eq!(dests, ["prod", "prod.kube-system"]);
    // ...but not another user's (403), nor anyone's by group.
    let (status, err) = s
        .call(
            "GET",
            &format!("/api/grants?user={bob}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(status, 403, "{err}");
    let (status, _) = s
        .call(
            "GET",
            &format!("/api/grants?group={}", id(&ops)),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            "GET",
            &format!("/api/grants/{}", id(&g1)),
            Some(&bob_key),
            None,
        )
        .await;
    assert_eq!(status, 403);
    // Users are not admins: no user list, no grant changes.
    let (status, _) = s.call("GET", "/api/users", Some(&alice_key), None).await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            "POST",
            "/api/grants",
            Some(&alice_key),
            Some(json!({"user": alice, "destination": "infra", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 403);
    // No key at all is 401.
    let (status, _) = s.call("GET", "/api/grants", None, None).await;
    assert_eq!(status, 401);

    // Admin filters: by destination (with its namespaces) and by role.
    let prod = s.ok("GET", "/api/grants?destination=prod", None, 200).await;
    assert_eq!(prod["totalCount"], 2);
    let edit = s.ok("GET", "/api/grants?role=edit", None, 200).await;
    assert_eq!(edit["totalCount"], 1);
    let inherited = s
        .ok(
            "GET",
            &format!("/api/grants?user={alice}&showInherited=true"),
            None,
            200,
        )
        .await;
    assert_eq!(inherited["totalCount"], 2);

    // An admin grant makes an admin.
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": bob, "destination": "infra", "role": "admin"})),
        201,
    )
    .await;
    let (status, _) = s.call("GET", "/api/users", Some(&bob_key), None).await;
    assert_eq!(status, 200);

    let (status, _) = s
        .admin("DELETE", &format!("/api/grants/{}", id(&g1)), None)
        .await;
    assert_eq!(status, 204);
    let (_, mine) = s.call("GET", "/api/grants", Some(&alice_key), None).await;
    assert_eq!(names(&mine, "destination"), ["prod.kube-system"]);
}

async fn destinations(b: Backend) {
    let s = Server::start(b).await;
    let ca = std::fs::read_to_string(s.data_dir.join("tls.crt")).unwrap();
    let d = s
        .ok(
            "POST",
            "/api/destinations",
            Some(json!({"name": "prod", "url": "https://prod.example.com:8443", "ca": ca})),
            201,
        )
        .await;
    assert_eq!(d["connected"], false);
    assert!(d.get("lastSeen").is_none());
    let (status, _) = s
        .admin("POST", "/api/destinations", Some(json!({"name": "prod"})))
        .await;
    assert_eq!(status, 409);
    let (status, err) = s
        .admin("POST", "/api/destinations", Some(json!({"name": "infra"})))
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = s
        .admin(
            "POST",
            "/api/destinations",
            Some(json!({"name": "x", "ca": "not a certificate"})),
        )
        .await;
    assert_eq!(
        (status, err["fieldErrors"][0]["fieldName"].as_str()),
        (400, Some("ca"))
    );
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "staging"})),
        201,
    )
    .await;

    // A connector registers (and heartbeats) its destination.
    let ck = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"connector": true, "name": "prod-connector", "destination": "prod"})),
            201,
        )
        .await;
    let connector_key = ck["accessKey"].as_str().unwrap();
    let (status, reg) = s
        .call(
            "POST",
            "/api/destinations",
            Some(connector_key),
            Some(json!({"name": "prod", "url": "https://10.0.0.1:443", "ca": ca})),
        )
        .await;
    assert_eq!(status, 201, "{reg}");
    assert_eq!(reg["id"], d["id"]);
    assert_eq!(reg["url"], "https://10.0.0.1:443");
    assert_eq!(reg["connected"], true);
    assert!(reg["lastSeen"].is_string());

    // A user sees only the destinations they hold grants on.
    let (alice, alice_key) = s.user_with_key("alice").await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": alice, "destination": "prod.web", "role": "edit"})),
        201,
    )
    .await;
    let (status, seen) = s
        .call("GET", "/api/destinations", Some(&alice_key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(names(&seen, "name"), ["prod"]);
    let all = s.ok("GET", "/api/destinations", None, 200).await;
    assert_eq!(names(&all, "name"), ["prod", "staging"]);
    let staging = all["items"][1].clone();
    let (status, _) = s
        .call(
            "GET",
            &format!("/api/destinations/{}", id(&staging)),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/destinations/{}", id(&d)),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(status, 403);

    let upd = s
        .ok(
            "PUT",
            &format!("/api/destinations/{}", id(&staging)),
            Some(json!({"name": "staging", "url": "https://staging:443"})),
            200,
        )
        .await;
    assert_eq!(upd["url"], "https://staging:443");
    let (status, _) = s
        .admin(
            "DELETE",
            &format!("/api/destinations/{}", id(&staging)),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let all = s.ok("GET", "/api/destinations", None, 200).await;
    assert_eq!(names(&all, "name"), ["prod"]);
}

async fn access_keys(b: Backend) {
    let s = Server::start(b).await;
    let (alice, alice_key) = s.user_with_key("alice").await;
    let (bob, bob_key) = s.user_with_key("bob").await;

    // A user creates their own key; it is shown once and works.
    let (status, k) = s
        .call(
            "POST",
            "/api/access-keys",
            Some(&alice_key),
            Some(json!({"name": "ci", "expiry": "48h", "inactivityTimeout": "2h"})),
        )
        .await;
    assert_eq!(status, 201, "{k}");
    let new_key = k["accessKey"].as_str().unwrap().to_string();
    let (status, _) = s.call("GET", "/api/grants", Some(&new_key), None).await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call(
            "POST",
            "/api/access-keys",
            Some(&alice_key),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(status, 409);

    // Listing shows metadata, never the secret.
    let (status, list) = s
        .call("GET", "/api/access-keys", Some(&alice_key), None)
        .await;
    assert_eq!(status, 200);
    assert!(
        !list
            .to_string()
            .contains(new_key.split('.').nth(1).unwrap())
    );
    let ci = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "ci")
        .unwrap()
        .clone();
    assert_eq!(ci["inactivityTimeout"], "2h");
    assert_eq!(ci["userName"], "alice");

    // Users cannot see, make or remove others' keys; admins can.
    let (status, _) = s
        .call(
            "GET",
            &format!("/api/access-keys?userID={bob}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            "POST",
            "/api/access-keys",
            Some(&alice_key),
            Some(json!({"userID": bob})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            "POST",
            "/api/access-keys",
            Some(&alice_key),
            Some(json!({"connector": true})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/access-keys/{}", id(&ci)),
            Some(&bob_key),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let for_bob = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"userID": bob, "name": "given"})),
            201,
        )
        .await;
    assert_eq!(for_bob["userID"], json!(bob));
    let all = s
        .ok(
            "GET",
            &format!("/api/access-keys?userID={alice}"),
            None,
            200,
        )
        .await;
    assert!(all["totalCount"].as_u64().unwrap() >= 2);

    // Bad durations name the field.
    let (status, err) = s
        .admin("POST", "/api/access-keys", Some(json!({"expiry": "soon"})))
        .await;
    assert_eq!(
        (status, err["fieldErrors"][0]["fieldName"].as_str()),
        (400, Some("expiry"))
    );

    // Removing revokes.
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/access-keys/{}", id(&ci)),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = s.call("GET", "/api/grants", Some(&new_key), None).await;
    assert_eq!(status, 401);
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/access-keys/{}", id(&ci)),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

async fn providers(b: Backend) {
    let idp = OidcProvider::start();
    let s = Server::start(b).await;
    let body = json!({"name": "okta", "url": idp.issuer, "clientID": "infra-test", "clientSecret": "infra-test-secret"});
    let p = s
        .ok("POST", "/api/providers", Some(body.clone()), 201)
        .await;
    assert_eq!(p["kind"], "oidc");
    assert_eq!(p["clientID"], "infra-test");
    assert!(p["authURL"].as_str().unwrap().starts_with(&idp.issuer));
    let scopes: Vec<&str> = p["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        scopes,
        ["openid", "email", "profile", "groups", "offline_access"]
    );
    assert!(!p.to_string().contains("infra-test-secret"));
    let (status, _) = s.admin("POST", "/api/providers", Some(body)).await;
    assert_eq!(status, 409);

    // Listing needs no key: the CLI reads it before anyone is logged in.
    let (status, list) = s.call("GET", "/api/providers", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(names(&list, "name"), ["okta"]);

    // A provider that is down, or whose document lacks endpoints, is refused
    // with a clear error and nothing is stored.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    };
    let (status, err) = s
        .admin(
            "POST",
            "/api/providers",
            Some(json!({"name": "dead", "url": dead, "clientID": "x", "clientSecret": "y"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["fieldErrors"][0]["fieldName"], "url");
    assert!(
        err["message"].as_str().unwrap().contains("cannot fetch"),
        "{err}"
    );

    let incomplete = serve_incomplete_discovery(&idp.issuer).await;
    let (status, err) = s
        .admin(
            "POST",
            "/api/providers",
            Some(
                json!({"name": "partial", "url": incomplete, "clientID": "x", "clientSecret": "y"}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("userinfo_endpoint"), "{msg}");
    let list = s.ok("GET", "/api/providers", None, 200).await;
    assert_eq!(names(&list, "name"), ["okta"]);

    // Edit keeps the secret unless given, and re-checks discovery.
    let upd = s
        .ok(
            "PATCH",
            &format!("/api/providers/{}", id(&p)),
            Some(json!({"clientID": "other"})),
            200,
        )
        .await;
    assert_eq!(upd["clientID"], "other");
    let (status, _) = s
        .admin(
            "PATCH",
            &format!("/api/providers/{}", id(&p)),
            Some(json!({"url": dead})),
        )
        .await;
    assert_eq!(status, 400);

    let (status, _) = s
        .admin("DELETE", &format!("/api/providers/{}", id(&p)), None)
        .await;
    assert_eq!(status, 204);
    let list = s.ok("GET", "/api/providers", None, 200).await;
    assert_eq!(list["totalCount"], 0);

    // The client secret is stored encrypted, not in the clear.
    let s2 = s;
    s2.ok("POST", "/api/providers",
        Some(json!({"name": "again", "url": idp.issuer, "clientID": "c", "clientSecret": "very-secret-value"})), 201)
        .await;
    let stored = raw_query(&s2, "SELECT client_secret_enc FROM providers").await;
    assert!(stored.starts_with("v1:") && !stored.contains("very-secret-value"));
}

/// Serves the real provider's discovery document without `userinfo_endpoint`.
async fn serve_incomplete_discovery(issuer: &str) -> String {
    let doc: Value = reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut doc = doc.as_object().unwrap().clone();
    assert!(doc.remove("userinfo_endpoint").is_some());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(Value::Object(doc)) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Reads one text value straight from the server's database.
async fn raw_query(s: &Server, sql: &'static str) -> String {
    let mut conn = s.db_connection().await;
    let (v,): (String,) = sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap();
    v
}

async fn exec_sql(s: &Server, sql: &'static str) {
    let mut conn = s.db_connection().await;
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

async fn identities(b: Backend) {
    let s = Server::start(b).await;
    let ci = s
        .ok(
            "POST",
            "/api/identities",
            Some(json!({"name": "gitlab-ci"})),
            201,
        )
        .await;
    let (status, _) = s
        .admin(
            "POST",
            "/api/identities",
            Some(json!({"name": "gitlab-ci"})),
        )
        .await;
    assert_eq!(status, 409);
    let g = s
        .ok(
            "POST",
            "/api/grants",
            Some(json!({"identity": id(&ci), "destination": "prod", "role": "edit"})),
            201,
        )
        .await;
    assert_eq!(g["identity"], ci["id"]);
    assert_eq!(g["subjectName"], "gitlab-ci");
    let list = s.ok("GET", "/api/identities", None, 200).await;
    assert_eq!(names(&list, "name"), ["gitlab-ci"]);
    let (status, _) = s
        .admin("DELETE", &format!("/api/identities/{}", id(&ci)), None)
        .await;
    assert_eq!(status, 204);
    let grants = s.ok("GET", "/api/grants?destination=prod", None, 200).await;
    assert_eq!(grants["totalCount"], 0, "the identity's grants go with it");
}

async fn wrong_password_is_rate_limited(b: Backend) {
    let s = Server::start(b).await;
    s.ok(
        "POST",
        "/api/users",
        Some(json!({"name": "mallory-target", "password": "the-right-one"})),
        201,
    )
    .await;
    let attempt = |pw: &'static str| {
        s.call(
            "POST",
            "/api/login",
            None,
            Some(json!({"passwordCredentials": {"name": "mallory-target", "password": pw}})),
        )
    };
    for _ in 0..5 {
        let (status, err) = attempt("wrong").await;
        assert_eq!(status, 401, "{err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("wrong user name or password")
        );
    }
    // Now even the right password waits, and the answer says for how long.
    let resp = s
        .client
        .post(format!("{}/api/login", s.url))
        .header("Infra-Version", VERSION)
        .json(&json!({"passwordCredentials": {"name": "mallory-target", "password": "the-right-one"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "Retry-After {retry}");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("too many failed logins")
    );
    // An unknown user is told the same as a wrong password.
    let (status, err) = s
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"passwordCredentials": {"name": "nobody", "password": "x"}})),
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("wrong user name or password")
    );
    // Failures are in the audit log, without the password.
    let audit = s.ok("GET", "/api/audit?action=login", None, 200).await;
    let text = audit.to_string();
    assert!(text.contains("failure") && text.contains("mallory-target"));
    assert!(!text.contains("the-right-one") && !text.contains("\"wrong\""));
}

async fn expired_and_revoked_keys(b: Backend) {
    let s = Server::start(b).await;
    let (_, key) = s.user_with_key("alice").await;
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200);
    exec_sql(
        &s,
        "UPDATE access_keys SET expires_at = 1000 WHERE name LIKE 'login-%'",
    )
    .await;
    let (status, err) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401);
    assert!(
        err["message"].as_str().unwrap().contains("expired"),
        "{err}"
    );

    let (_, key) = s.user_with_key("bob").await;
    exec_sql(&s, "UPDATE access_keys SET inactivity_deadline = 1000 WHERE owner_id IN (SELECT id FROM users WHERE name = 'bob')").await;
    let (status, err) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401);
    assert!(err["message"].as_str().unwrap().contains("unused"), "{err}");

    let (_, key) = s.user_with_key("carol").await;
    let keys = s.ok("GET", "/api/access-keys", None, 200).await;
    let carol = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["userName"] == "carol")
        .unwrap();
    s.ok(
        "DELETE",
        &format!("/api/access-keys/{}", id(carol)),
        None,
        204,
    )
    .await;
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401);

    // A key of the right shape but a wrong secret, and garbage.
    let forged = format!("{}.{}", &key[..10], "x".repeat(24));
    for bad in [forged.as_str(), "garbage", ""] {
        let (status, _) = s.call("GET", "/api/grants", Some(bad), None).await;
        assert_eq!(status, 401, "{bad:?}");
    }
}

async fn request_errors(b: Backend) {
    let s = Server::start(b).await;
    // No version header: 400 naming the server's version.
    let resp = s
        .client
        .get(format!("{}/api/users", s.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("Infra-Version"),
        "{body}"
    );
    assert_eq!(body["code"], 400);
    // A version too new: 400 naming both.
    let resp = s
        .client
        .get(format!("{}/api/users", s.url))
        .header("Infra-Version", "99.0.0")
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let msg = resp.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("99.0.0") && msg.contains(VERSION), "{msg}");

    // Malformed JSON and wrong types: 400 with field errors.
    let resp = s
        .client
        .post(format!("{}/api/users", s.url))
        .header("Infra-Version", VERSION)
        .header("Content-Type", "application/json")
        .bearer_auth(ADMIN_KEY)
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["fieldErrors"][0]["fieldName"], "body", "{body}");
    let (status, err) = s
        .admin("POST", "/api/users", Some(json!({"name": 42})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["fieldErrors"][0]["fieldName"], "name");
    let (status, err) = s.admin("POST", "/api/users", Some(json!({}))).await;
    assert_eq!(status, 400);
    assert_eq!(err["fieldErrors"][0]["fieldName"], "name");
    assert!(
        err["fieldErrors"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("missing")
    );
    let (status, err) = s
        .admin(
            "POST",
            "/api/users",
            Some(json!({"name": "x", "password": "short"})),
        )
        .await;
    assert_eq!(
        (status, err["fieldErrors"][0]["fieldName"].as_str()),
        (400, Some("password"))
    );
    let (status, _) = s.admin("GET", "/api/users?limit=0", None).await;
    assert_eq!(status, 400);
    let (status, err) = s.admin("GET", "/api/nothing-here", None).await;
    assert_eq!(status, 404);
    assert_eq!(err["code"], 404);

    // Health, version and the OpenAPI document.
    let health = s
        .client
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let (status, v) = s.call("GET", "/api/version", None, None).await;
    assert_eq!((status, v["version"].as_str()), (200, Some(VERSION)));
    let doc: Value = s
        .client
        .get(format!("{}/api/openapi.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/grants"]["get"].is_object());
}

async fn restart_keeps_all_data(b: Backend) {
    let mut s = Server::start(b).await;
    let (alice, alice_key) = s.user_with_key("alice").await;
    let g = s
        .ok("POST", "/api/groups", Some(json!({"name": "dev"})), 201)
        .await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": id(&g), "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "prod"})),
        201,
    )
    .await;
    let status = s.stop();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    assert!(s.stderr().contains("stopped"));

    let mut opts = ServerOptions::new(b);
    opts.data_dir = Some(s.data_dir.clone());
    opts.db = s.db.clone();
    let s2 = Server::start_with(opts).await;
    let (status, _) = s2
        .call(
            "GET",
            &format!("/api/users/{alice}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "the old key still works");
    let grants = s2
        .ok("GET", "/api/grants?destination=prod", None, 200)
        .await;
    assert_eq!(grants["totalCount"], 1);
    let dests = s2.ok("GET", "/api/destinations", None, 200).await;
    assert_eq!(names(&dests, "name"), ["prod"]);
    // The same certificate is served again (trust on first use holds).
    assert_eq!(
        std::fs::read(s.data_dir.join("tls.crt")).unwrap(),
        std::fs::read(s2.data_dir.join("tls.crt")).unwrap()
    );
    drop(s);
}

async fn audit_log_and_metrics(b: Backend) {
    let s = Server::start(b).await;
    let (alice, _) = s.user_with_key("alice").await;
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": alice, "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    let k = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"name": "robot"})),
            201,
        )
        .await;
    s.ok("DELETE", &format!("/api/access-keys/{}", id(&k)), None, 204)
        .await;
    let audit = s.ok("GET", "/api/audit?limit=100", None, 200).await;
    let actions: Vec<String> = names(&audit, "action");
    for want in [
        "user.create",
        "login",
        "grant.create",
        "key.create",
        "key.remove",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }
    // Filtered by time, as people write it: everything happened today.
    let today = audit["items"][0]["time"].as_str().unwrap()[..10].to_string();
    let count = |q: String| {
        let s = &s;
        async move {
            s.ok("GET", &q, None, 200).await["totalCount"]
                .as_u64()
                .unwrap()
        }
    };
    let all = count("/api/audit?limit=100".into()).await;
    assert_eq!(
        count(format!("/api/audit?since={today}&until={today}")).await,
        all
    );
    assert_eq!(count(format!("/api/audit?until={today}%2000:00")).await, 0);
    assert_eq!(count(format!("/api/audit?since={today}T23:59:59")).await, 0);
    let (status, err) = s.admin("GET", "/api/audit?until=yesterday", None).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["fieldErrors"][0]["fieldName"], "until");
    let (_, alice_key) = {
        let (status, login) = s
            .call(
                "POST",
                "/api/login",
                None,
                Some(json!({"passwordCredentials": {"name": "alice", "password": "password-1"}})),
            )
            .await;
        assert_eq!(status, 201);
        (status, login["accessKey"].as_str().unwrap().to_string())
    };
    let (status, _) = s.call("GET", "/api/audit", Some(&alice_key), None).await;
    assert_eq!(status, 403);

    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            "infra_http_requests_total{method=\"POST\",route=\"/api/grants\",status=\"201\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("infra_logins_total{method=\"password\",result=\"success\"} 2"),
        "{metrics}"
    );
}

/// Two servers on one PostgreSQL serve the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_postgres() {
    let a = Server::start(Backend::Postgres).await;
    let mut opts = ServerOptions::new(Backend::Postgres);
    opts.db = a.db.clone();
    let b = Server::start_with(opts).await;
    assert_ne!(a.url, b.url);
    let (alice, key) = a.user_with_key("alice").await;
    b.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": alice, "destination": "prod", "role": "edit"})),
        201,
    )
    .await;
    let (status, mine) = a.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200);
    assert_eq!(names(&mine, "destination"), ["prod"]);
    // A key made on one works on the other, and revoking it on one ends it on both.
    let (status, _) = b.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200);
    let (status, _) = b.call("POST", "/api/logout", Some(&key), None).await;
    assert_eq!(status, 204);
    let (status, _) = a.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401);
    // Failed logins count across replicas.
    for s in [&a, &b, &a, &b, &a] {
        let (status, _) = s
            .call(
                "POST",
                "/api/login",
                None,
                Some(json!({"passwordCredentials": {"name": "alice", "password": "nope"}})),
            )
            .await;
        assert_eq!(status, 401);
    }
    let (status, _) = b
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"passwordCredentials": {"name": "alice", "password": "password-1"}})),
        )
        .await;
    assert_eq!(status, 429);
}

/// First start without a given key prints a one-time admin key; later starts do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_a_one_time_admin_key() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.admin_key = None;
    // The start-up banner is all in `stderr` once the server has started.
    let mut s = Server::start_with(opts).await;
    let log = s.stderr();
    let key = log
        .split_whitespace()
        .find(|w| w.len() == 35 && w.as_bytes()[10] == b'.')
        .unwrap_or_else(|| panic!("no admin key in: {log}"))
        .to_string();
    let (status, users) = s.call("GET", "/api/users", Some(&key), None).await;
    assert_eq!(status, 200, "{users}");
    assert_eq!(names(&users, "name"), ["admin"]);
    s.stop();

    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.admin_key = None;
    opts.data_dir = Some(s.data_dir.clone());
    let s2 = Server::start_with(opts).await;
    assert!(!s2.stderr().contains(&key), "the key is shown only once");
    let (status, _) = s2.call("GET", "/api/users", Some(&key), None).await;
    assert_eq!(status, 200);
    drop(s);
}

/// The admin key of a new server is not lost to a start that fails after
/// it was made: it is printed only once the server serves, again at every
/// start until it is used, and `infra server --print-admin-key` reads it
/// while unused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_key_is_shown_until_it_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key_in = |log: &str| {
        log.split_whitespace()
            .find(|w| w.len() == 35 && w.as_bytes()[10] == b'.')
            .map(String::from)
    };
    // A first start that fails late: its provider cannot be reached.
    let out = std::process::Command::new(common::bin())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--oidc-issuer-url",
            "https://127.0.0.1:9",
            "--oidc-issuer-client-id",
            "x",
            "--oidc-issuer-client-secret",
            "y",
        ])
        .env_remove("INFRA_ADMIN_ACCESS_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert_eq!(key_in(&log), None, "no key before the server serves: {log}");

    let print = || {
        std::process::Command::new(common::bin())
            .args(["server", "--print-admin-key", "--data-dir"])
            .arg(&data)
            .env_remove("INFRA_ADMIN_ACCESS_KEY")
            .output()
            .unwrap()
    };
    let start = || {
        let mut opts = ServerOptions::new(Backend::Sqlite);
        opts.admin_key = None;
        opts.data_dir = Some(data.clone());
        Server::start_with(opts)
    };
    let mut s = start().await;
    let key = key_in(&s.stderr()).unwrap_or_else(|| panic!("no key in: {}", s.stderr()));
    s.stop();
    let mut s = start().await;
    assert_eq!(
        key_in(&s.stderr()).as_deref(),
        Some(key.as_str()),
        "unused: shown again"
    );
    s.stop();
    let out = print();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), key);

    // Used once: never shown again.
    let mut s = start().await;
    let (status, _) = s.call("GET", "/api/users", Some(&key), None).await;
    assert_eq!(status, 200);
    s.stop();
    let mut s = start().await;
    assert_eq!(key_in(&s.stderr()), None, "{}", s.stderr());
    s.stop();
    let out = print();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no unused admin key"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty());
}

/// The config file declares providers, users, groups, grants and the admin key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_bootstraps_the_server() {
    let idp = OidcProvider::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("infra.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
adminAccessKey: env:MY_ADMIN_KEY
providers:
  - name: corp
    url: {}
    clientID: infra-test
    clientSecret: env:CORP_SECRET
users:
  - name: alice@example.com
    password: file:{}
groups:
  - name: sre
    members: [alice@example.com, bob@example.com]
grants:
  - group: sre
    destination: prod
    role: edit
  - user: alice@example.com
    destination: infra
    role: admin
"#,
            idp.issuer,
            dir.path().join("pw").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("pw"), "from-a-file\n").unwrap();
    let key = "CfgKey0001.ConfigSecret0123456789ab";
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.admin_key = None;
    opts.config = Some(config.clone());
    opts.env = vec![
        ("MY_ADMIN_KEY".into(), key.into()),
        ("CORP_SECRET".into(), "s3cret-from-env".into()),
    ];
    let mut s = Server::start_with(opts).await;
    let (status, users) = s.call("GET", "/api/users", Some(key), None).await;
    assert_eq!(status, 200, "{users}");
    let mut all = names(&users, "name");
    all.sort();
    assert_eq!(all, ["admin", "alice@example.com", "bob@example.com"]);
    let (_, providers) = s.call("GET", "/api/providers", None, None).await;
    assert_eq!(names(&providers, "name"), ["corp"]);
    let (status, login) = s
        .call("POST", "/api/login", None,
            Some(json!({"passwordCredentials": {"name": "alice@example.com", "password": "from-a-file"}})))
        .await;
    assert_eq!(status, 201, "{login}");
    let alice_key = login["accessKey"].as_str().unwrap();
    let alice_id = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice@example.com")
        .unwrap()["id"]
        .clone();
    let (status, mine) = s
        .call(
            "GET",
            &format!(
                "/api/grants?user={}&showInherited=true",
                alice_id.as_str().unwrap()
            ),
            Some(alice_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{mine}");
    let mut held: Vec<String> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{} {} {}",
                g["subjectName"].as_str().unwrap(),
                g["role"].as_str().unwrap(),
                g["destination"].as_str().unwrap()
            )
        })
        .collect();
    held.sort();
    assert_eq!(held, ["alice@example.com admin infra", "sre edit prod"]);
    assert!(!s.stderr().contains("s3cret-from-env"));
    s.stop();

    // Applying it again is idempotent.
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.admin_key = None;
    opts.config = Some(config);
    opts.data_dir = Some(s.data_dir.clone());
    opts.env = vec![
        ("MY_ADMIN_KEY".into(), key.into()),
        ("CORP_SECRET".into(), "s3cret-from-env".into()),
    ];
    let s2 = Server::start_with(opts).await;
    let grants = s2
        .call("GET", "/api/grants?destination=prod", Some(key), None)
        .await
        .1;
    assert_eq!(grants["totalCount"], 1);
    drop(s);
}

/// A bad admin key in the environment stops the server with a clear message.
#[test]
fn malformed_admin_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("INFRA_ADMIN_ACCESS_KEY", "too-short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must look like"), "{err}");
    assert!(
        !err.contains("too-short"),
        "the bad key is not echoed: {err}"
    );
}

both_backends!(a_users_destinations_page_like_any_list);

/// What a user may see of the destinations is filtered before it is paged:
/// pages and totals count only the destinations they hold grants on, and
/// with no grant they see none.
async fn a_users_destinations_page_like_any_list(b: Backend) {
    let s = Server::start(b).await;
    for name in ["alpha", "bravo", "charlie", "delta"] {
        s.ok(
            "POST",
            "/api/destinations",
            Some(json!({"name": name})),
            201,
        )
        .await;
    }
    let (alice, alice_key) = s.user_with_key("alice").await;
    let (_, bob_key) = s.user_with_key("bob").await;
    for dest in ["alpha", "charlie.web", "delta"] {
        s.ok(
            "POST",
            "/api/grants",
            Some(json!({"user": alice, "destination": dest, "role": "view"})),
            201,
        )
        .await;
    }
    let get = |path: &'static str, key: String| {
        let s = &s;
        async move {
            let (status, list) = s.call("GET", path, Some(&key), None).await;
            assert_eq!(status, 200, "{path}: {list}");
            list
        }
    };
    let first = get("/api/destinations?limit=2", alice_key.clone()).await;
    assert_eq!(names(&first, "name"), ["alpha", "charlie"]);
    assert_eq!(first["totalCount"], 3);
    let second = get("/api/destinations?limit=2&page=2", alice_key.clone()).await;
    assert_eq!(names(&second, "name"), ["delta"]);
    assert_eq!(second["totalCount"], 3);
    let named = get("/api/destinations?name=charlie", alice_key.clone()).await;
    assert_eq!(names(&named, "name"), ["charlie"]);
    let hidden = get("/api/destinations?name=bravo", alice_key).await;
    assert_eq!(hidden["totalCount"], 0);
    let none = get("/api/destinations", bob_key).await;
    assert_eq!(
        (&none["count"], &none["totalCount"]),
        (&json!(0), &json!(0))
    );
}

/// `--log-format json` writes one JSON object per log line, for collectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_as_json_lines() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.extra_args = vec!["--log-format".into(), "json".into()];
    let s = Server::start_with(opts).await;
    let log = s.stderr();
    let serving = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "serving")
        .unwrap_or_else(|| panic!("no JSON 'serving' line in:\n{log}"));
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(!log.contains('\u{1b}'), "no colour codes: {log}");
}

both_backends!(recorded_sessions_api);

/// What a connector writes of a recorded session and who may read it: the
/// destination's own connector writes (a retried chunk is kept once, the
/// server's --max-session-bytes holds, an ended session takes no more),
/// admins read everyone's, users their own, and playback is audited.
async fn recorded_sessions_api(b: Backend) {
    let mut o = ServerOptions::new(b);
    o.extra_args = vec!["--max-session-bytes".into(), "400".into()];
    let s = Server::start_with(o).await;
    let connector_key = |dest: &'static str| {
        let s = &s;
        async move {
            s.ok(
                "POST",
                "/api/access-keys",
                Some(json!({"connector": true, "name": format!("c-{dest}"), "destination": dest})),
                201,
            )
            .await["accessKey"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let prod = connector_key("prod").await;
    let dev = connector_key("dev").await;
    let (alice, alice_key) = s.user_with_key("alice").await;
    let (_bob, bob_key) = s.user_with_key("bob").await;
    let new = json!({"destination": "prod", "namespace": "web", "pod": "api-1",
        "container": "app", "kind": "exec", "command": "sh", "userId": alice,
        "user": "alice", "clientAddress": "192.0.2.7"});
    for (key, who) in [(&dev, "dev's connector"), (&alice_key, "a user")] {
        let (status, _) = s
            .call("POST", "/api/sessions", Some(key), Some(new.clone()))
            .await;
        assert_eq!(status, 403, "{who}");
    }
    let (status, session) = s
        .call("POST", "/api/sessions", Some(&prod), Some(new.clone()))
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_string();
    let append = async |key: &str, seq: i64, text: &str| -> u16 {
        s.client
            .post(format!("{}/api/sessions/{id}/chunks?seq={seq}", s.url))
            .header("Infra-Version", VERSION)
            .header("Content-Type", "application/x-asciicast")
            .bearer_auth(key)
            .body(text.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let header = "{\"version\":2,\"width\":80,\"height\":24}\n";
    assert_eq!(append(&dev, 0, header).await, 403, "another connector");
    assert_eq!(append(&prod, 0, header).await, 204);
    assert_eq!(append(&prod, 1, "[0.5,\"o\",\"hi\\r\\n\"]\n").await, 204);
    assert_eq!(
        append(&prod, 1, "[0.5,\"o\",\"hi\\r\\n\"]\n").await,
        204,
        "a retry"
    );
    assert_eq!(
        append(&prod, 2, &"x".repeat(400)).await,
        413,
        "past the bound"
    );
    let (status, ended) = s
        .call(
            "POST",
            &format!("/api/sessions/{id}/end"),
            Some(&prod),
            Some(json!({"exitCode": 3})),
        )
        .await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["exitCode"], 3);
    assert!(ended["ended"].is_string());
    assert_eq!(append(&prod, 3, "[1,\"o\",\"late\"]\n").await, 409);

    // Read back: the chunks in order, each once.
    let recording = |key: String| {
        let s = &s;
        let id = id.clone();
        async move {
            let resp = s
                .client
                .get(format!("{}/api/sessions/{id}/recording", s.url))
                .header("Infra-Version", VERSION)
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, cast) = recording(ADMIN_KEY.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(cast, format!("{header}[0.5,\"o\",\"hi\\r\\n\"]\n"));
    assert_eq!(recording(alice_key.clone()).await.0, 200, "her own");
    assert_eq!(recording(bob_key.clone()).await.0, 404, "not his");
    let (_, list) = s.call("GET", "/api/sessions", Some(&bob_key), None).await;
    assert_eq!(list["totalCount"], 0, "{list}");
    let (_, list) = s
        .call("GET", "/api/sessions?user=alice", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(list["totalCount"], 1, "{list}");
    assert_eq!(list["items"][0]["bytes"], cast.len());
    let (status, _) = s
        .call("GET", "/api/sessions?user=alice", Some(&bob_key), None)
        .await;
    assert_eq!(status, 403);
    let (_, audit) = s
        .call(
            "GET",
            "/api/audit?action=session.play",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(audit["totalCount"], 2, "{audit}");
}

/// Recordings are not kept forever: a session older than
/// `--session-retention` goes, with its recording, in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_sessions_older_than_the_retention_are_removed() {
    let mut o = ServerOptions::new(Backend::Sqlite);
    o.extra_args = vec![
        "--session-retention".into(),
        "1h".into(),
        "--audit-prune-interval".into(),
        "1s".into(),
    ];
    let s = Server::start_with(o).await;
    let key = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"connector": true, "name": "c-prod", "destination": "prod"})),
            201,
        )
        .await["accessKey"]
        .as_str()
        .unwrap()
        .to_string();
    let new = json!({"destination": "prod", "namespace": "web", "pod": "api-1",
        "container": "app", "kind": "exec", "command": "sh", "userId": "u1",
        "user": "alice", "clientAddress": ""});
    let (status, old) = s
        .call("POST", "/api/sessions", Some(&key), Some(new.clone()))
        .await;
    assert_eq!(status, 201, "{old}");
    // Two hours later, a new session; the first is past the retention.
    s.advance_clock(2 * 3600);
    let (_, recent) = s.call("POST", "/api/sessions", Some(&key), Some(new)).await;
    common::wait_until("the old session to go", async || {
        let (status, _) = s
            .admin("GET", &format!("/api/sessions/{}", id(&old)), None)
            .await;
        status == 404
    })
    .await;
    let (status, _) = s
        .admin("GET", &format!("/api/sessions/{}", id(&recent)), None)
        .await;
    assert_eq!(status, 200, "the recent one stays");
}
