//! `infra access explain USER DEST[.NS]` and `infra whoami --destination`:
//! the real binary against a real `infra server` (SQLite and PostgreSQL).
//! Which grants apply where (a grant on `prod` also in `prod.web`, one on
//! `prod.web` only there, one on `staging` not on `prod`), through which
//! group, from where each membership came, the RBAC binding the connector
//! makes for each grant (the connector's own naming function) and its
//! state, and who may ask.

mod common;

use common::{ADMIN_KEY, Backend, Machine, Server};
use infra::api::rbac::binding_name;
use serde_json::{Value, json};

fn login(m: &Machine, s: &Server, key: &str) {
    let out = m.run(&[
        "login",
        &s.host(),
        "--key",
        key,
        "--tls-trusted-fingerprint",
        &s.fingerprint(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json_of(m: &Machine, args: &[&str]) -> Value {
    serde_json::from_str(&m.ok(args)).unwrap()
}

fn grant(x: &Value, role: &str, destination: &str) -> Value {
    x["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["role"] == role && g["destination"] == destination)
        .cloned()
        .unwrap_or_else(|| panic!("no grant {role} on {destination} in {x:#}"))
}

fn destinations(x: &Value) -> Vec<String> {
    let mut d: Vec<String> = x["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{} {}",
                g["role"].as_str().unwrap(),
                g["destination"].as_str().unwrap()
            )
        })
        .collect();
    d.sort();
    d
}

struct World {
    s: Server,
    alice: String,
    alice_key: String,
    bob_key: String,
    view_id: String,
    edit_id: String,
}

/// alice: view on prod (directly), edit on prod.web through group sre
/// (added by an admin), admin on staging; in group oncall through a
/// provider's groups claim. bob: view on prod.
async fn world(backend: Backend) -> World {
    let s = Server::start(backend).await;
    let (alice, alice_key) = s.user_with_key("alice").await;
    let (bob, bob_key) = s.user_with_key("bob").await;
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "prod"})),
        201,
    )
    .await;
    let group = |name: &'static str| {
        let s = &s;
        let alice = alice.clone();
        async move {
            let g = s
                .ok("POST", "/api/groups", Some(json!({"name": name})), 201)
                .await;
            let id = g["id"].as_str().unwrap().to_string();
            s.ok(
                "PATCH",
                &format!("/api/groups/{id}/users"),
                Some(json!({"usersToAdd": [alice]})),
                200,
            )
            .await;
            id
        }
    };
    let sre = group("sre").await;
    let oncall = group("oncall").await;
    // What a sign-in through provider okta with `groups: [oncall]` records
    // (store::provider_users): the membership names its provider.
    {
        let mut db = s.db_connection().await;
        sqlx::query(
            "INSERT INTO providers (id, name, kind, url, client_id, client_secret_enc, issuer, \
             auth_url, token_url, userinfo_url, jwks_url, scopes, created_at, updated_at) \
             VALUES ('p-okta', 'okta', 'oidc', 'https://okta.example.com', 'c', '', \
             'https://okta.example.com', '', '', '', '', 'openid', 0, 0)",
        )
        .execute(&mut db)
        .await
        .unwrap();
        sqlx::query("UPDATE group_members SET provider_id = 'p-okta' WHERE group_id = $1")
            .bind(&oncall)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let add = |body: Value| {
        let s = &s;
        async move {
            s.ok("POST", "/api/grants", Some(body), 201).await["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let view_id = add(json!({"user": alice, "destination": "prod", "role": "view"})).await;
    let edit_id = add(json!({"group": sre, "destination": "prod.web", "role": "edit"})).await;
    add(json!({"user": alice, "destination": "staging", "role": "admin"})).await;
    add(json!({"user": bob, "destination": "prod", "role": "view"})).await;
    World {
        s,
        alice,
        alice_key,
        bob_key,
        view_id,
        edit_id,
    }
}

async fn explain_for_admins(backend: Backend) {
    let w = world(backend).await;
    let s = &w.s;
    // The connector of prod says where the grants stand.
    let ckey = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"connector": true, "name": "prod-connector", "destination": "prod"})),
            201,
        )
        .await["accessKey"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = s
        .call(
            "POST",
            "/api/grants/states",
            Some(&ckey),
            Some(json!({"destination": "prod", "states": [
                {"grantID": w.view_id, "state": "applied"},
                {"grantID": w.edit_id, "state": "pending", "message": "namespace web does not exist"},
            ]})),
        )
        .await;
    assert_eq!(code, 204, "{body}");

    let m = Machine::new();
    login(&m, s, ADMIN_KEY);

    // On the whole destination: the direct grant, the group's namespace
    // grant; not the grant on staging.
    let x = json_of(
        &m,
        &["access", "explain", "alice", "prod", "--format", "json"],
    );
    assert_eq!(x["name"], "alice");
    assert_eq!(x["id"], w.alice);
    assert_eq!(x["registered"], true);
    assert_eq!(destinations(&x), ["edit prod.web", "view prod"], "{x:#}");

    let view = grant(&x, "view", "prod");
    assert_eq!(view["id"], w.view_id);
    assert_eq!(view["user"], w.alice);
    assert!(view.get("viaGroup").is_none() && view.get("namespace").is_none());
    assert_eq!(view["state"], "applied");
    assert_eq!(
        view["binding"],
        json!({
            "kind": "ClusterRoleBinding",
            "name": binding_name("prod", None, "view", "User", "alice"),
            "role": "view", "subjectKind": "User", "subject": "alice",
        })
    );

    let edit = grant(&x, "edit", "prod.web");
    assert_eq!(edit["id"], w.edit_id);
    assert_eq!(edit["viaGroup"], "sre");
    assert_eq!(edit["subjectName"], "sre");
    assert_eq!(edit["namespace"], "web");
    assert_eq!(edit["state"], "pending");
    assert_eq!(edit["stateMessage"], "namespace web does not exist");
    assert_eq!(
        edit["binding"],
        json!({
            "kind": "RoleBinding",
            "name": binding_name("prod", Some("web"), "edit", "Group", "sre"),
            "namespace": "web",
            "role": "edit", "subjectKind": "Group", "subject": "sre",
        })
    );
    // No grant here carries a maximum authentication age.
    assert!(view.get("maxAuthAge").is_none());

    // Groups and where each membership came from.
    let groups = x["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{x:#}");
    assert_eq!(groups[0]["name"], "oncall");
    assert_eq!(groups[0]["source"], "provider");
    assert_eq!(groups[0]["providerName"], "okta");
    assert_eq!(groups[0]["providerID"], "p-okta");
    assert_eq!(groups[1]["name"], "sre");
    assert_eq!(groups[1]["source"], "admin");
    assert!(groups[1].get("providerName").is_none());

    // What the cluster sees: every group rides in the token.
    assert_eq!(
        x["effective"],
        json!({
            "user": "alice",
            "groups": ["oncall", "sre"],
            "roles": [{"roles": ["view"]}, {"namespace": "web", "roles": ["edit"]}],
        })
    );

    // In namespace web: both; in namespace db: only the cluster-wide one.
    let x = json_of(
        &m,
        &["access", "explain", "alice", "prod.web", "--format", "json"],
    );
    assert_eq!(destinations(&x), ["edit prod.web", "view prod"]);
    let x = json_of(
        &m,
        &["access", "explain", "alice", "prod.db", "--format", "json"],
    );
    assert_eq!(destinations(&x), ["view prod"]);
    assert_eq!(x["effective"]["roles"], json!([{"roles": ["view"]}]));
    // On staging (not registered, but alice holds a grant there): only that.
    let x = json_of(
        &m,
        &["access", "explain", "alice", "staging", "--format", "json"],
    );
    assert_eq!(destinations(&x), ["admin staging"]);
    assert_eq!(x["registered"], false);

    // For a person: the same, readable.
    let text = m.ok(&["access", "explain", "alice", "prod"]);
    for want in [
        "user alice on prod",
        "oncall",
        "synced from provider okta (groups claim)",
        "added by an admin",
        "group sre",
        "directly",
        "namespace web",
        &format!(
            "RoleBinding web/{}",
            binding_name("prod", Some("web"), "edit", "Group", "sre")
        ),
        &format!(
            "ClusterRoleBinding {}",
            binding_name("prod", None, "view", "User", "alice")
        ),
        "pending: namespace web does not exist",
        "applied",
        "system:authenticated",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    assert!(!text.contains("staging"), "{text}");

    // Unknown user, unknown destination: what to do next.
    let out = m.run(&["access", "explain", "nobody", "prod"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no user named \"nobody\"") && err.contains("infra users list"),
        "{err}"
    );
    let out = m.run(&["access", "explain", "alice", "nowhere"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no destination named \"nowhere\"") && err.contains("infra destinations list"),
        "{err}"
    );
    let out = m.run(&["access", "explain", "alice", "Prod!"]);
    assert!(!out.status.success());
    // No grant on a registered destination: say how to add one.
    let text = m.ok(&["access", "explain", "admin", "prod"]);
    assert!(
        text.contains("infra grants add prod --user admin --role view"),
        "{text}"
    );
}

async fn only_admins_explain_others(backend: Backend) {
    let w = world(backend).await;
    let s = &w.s;
    // The API: bob may not ask about alice (by name or id), nor learn
    // whether a user exists.
    for user in ["alice", w.alice.as_str(), "nobody"] {
        let (code, body) = s
            .call(
                "GET",
                &format!("/api/access/explain?user={user}&destination=prod"),
                Some(&w.bob_key),
                None,
            )
            .await;
        assert_eq!(code, 403, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("infra whoami --destination"),
            "{body}"
        );
    }
    // ... but about himself.
    let (code, body) = s
        .call(
            "GET",
            "/api/access/explain?user=bob&destination=prod",
            Some(&w.bob_key),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(destinations(&body), ["view prod"]);

    // The CLI, logged in as bob.
    let m = Machine::new();
    login(&m, s, &w.bob_key);
    let out = m.run(&["access", "explain", "alice", "prod"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("your own access"), "{err}");
}

async fn whoami_for_oneself(backend: Backend) {
    let w = world(backend).await;
    let s = &w.s;
    let m = Machine::new();
    login(&m, s, &w.alice_key);
    assert_eq!(m.ok(&["whoami"]).trim(), format!("alice on {}", s.host()));
    let me = json_of(&m, &["whoami", "--format", "json"]);
    assert_eq!(me["user"], "alice");
    assert_eq!(me["userID"], w.alice);
    // With INFRA_ACCESS_KEY, the key's own person, as the server says.
    let out = m
        .cmd()
        .args(["whoami"])
        .env("INFRA_ACCESS_KEY", &w.bob_key)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("bob on {}", s.host()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let x = json_of(&m, &["whoami", "--destination", "prod", "--format", "json"]);
    assert_eq!(x["name"], "alice");
    assert_eq!(destinations(&x), ["edit prod.web", "view prod"]);
    assert_eq!(x["effective"]["groups"], json!(["oncall", "sre"]));
    // The same answer as an admin's `infra access explain`.
    let (code, by_admin) = s
        .admin(
            "GET",
            &format!("/api/access/explain?user={}&destination=prod", w.alice),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(x, by_admin);
    let text = m.ok(&["whoami", "--destination", "prod.web"]);
    assert!(text.contains("user alice on prod.web"), "{text}");
    assert!(text.contains("edit in namespace web"), "{text}");
    assert!(text.contains("view in all namespaces"), "{text}");
}

both_backends!(
    explain_for_admins,
    only_admins_explain_others,
    whoami_for_oneself
);
