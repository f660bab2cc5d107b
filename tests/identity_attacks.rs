//! Attacks on the boundaries between identities, each played end to end
//! against the real `infra server` and a real OpenID provider (npm
//! `oidc-provider`), with the attacker choosing what a stranger controls:
//! the scopes of the authorization request, the claims of their own
//! provider account, the redirect URI, the names they give things.
//!
//! Each test is named for the attack it plays; each got through before
//! identities were keyed by (provider, `sub`).

mod common;

use std::collections::HashMap;

use common::{
    ADMIN_KEY, Backend, Browser, Machine, OidcProvider, Server, ServerOptions, free_port,
};
use infra::login::Attempt;
use serde_json::{Value, json};

const IDP_ADMIN: &str = "idp-admin-token";

struct Setup {
    idp: OidcProvider,
    s: Server,
    provider: Value,
}

/// A server with the provider `corp` (extra fields of the provider, e.g.
/// `usernameClaim`, from `provider_extra`).
async fn setup(idp_env: &[(&str, &str)], provider_extra: Value) -> Setup {
    setup_with(ServerOptions::new(Backend::Sqlite), idp_env, provider_extra).await
}

async fn setup_with(opts: ServerOptions, idp_env: &[(&str, &str)], extra: Value) -> Setup {
    let mut env = vec![("OIDC_ADMIN_TOKEN", IDP_ADMIN)];
    env.extend_from_slice(idp_env);
    let idp = OidcProvider::start_with(&env);
    let s = Server::start_with(opts).await;
    let mut body = json!({"name": "corp", "url": idp.issuer, "clientID": "infra-test",
                          "clientSecret": "infra-test-secret"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let provider = s.ok("POST", "/api/providers", Some(body), 201).await;
    Setup { idp, s, provider }
}

/// Signs `login` in at the provider with exactly these scopes (the
/// attacker writes the authorization URL) and returns the attempt and code.
async fn code(t: &Setup, login: &str, scopes: &[&str]) -> (Attempt, String) {
    code_at(&t.provider, login, scopes).await
}

async fn code_at(provider: &Value, login: &str, scopes: &[&str]) -> (Attempt, String) {
    let port = free_port();
    let a = Attempt::new(port);
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let url = a
        .authorization_url(provider["authURL"].as_str().unwrap(), "infra-test", &scopes)
        .unwrap();
    let back = Browser::new()
        .sign_in(&url, login, &format!("http://localhost:{port}"))
        .await;
    let q: HashMap<_, _> = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["state"], a.state);
    (a, q["code"].clone())
}

async fn exchange(t: &Setup, a: &Attempt, code: &str) -> (u16, Value) {
    exchange_at(&t.s, &t.provider, a, code).await
}

async fn exchange_at(s: &Server, provider: &Value, a: &Attempt, code: &str) -> (u16, Value) {
    s.call(
        "POST",
        "/api/login",
        None,
        Some(json!({"oidc": {"providerID": provider["id"], "code": code,
            "redirectURL": a.redirect_url, "codeVerifier": a.code_verifier, "nonce": a.nonce}})),
    )
    .await
}

/// Signs `login` in with the scopes the CLI asks for.
async fn sign_in(t: &Setup, login: &str) -> (u16, Value) {
    sign_in_at(&t.s, &t.provider, login).await
}

/// Signs `login` in at `provider` (as the server describes it now).
async fn sign_in_at(s: &Server, provider: &Value, login: &str) -> (u16, Value) {
    let scopes: Vec<String> = provider["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let (a, c) = code_at(provider, login, &scopes).await;
    exchange_at(s, provider, &a, &c).await
}

async fn idp_account(t: &Setup, sub: &str, claims: Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/__admin/account", t.idp.issuer))
        .bearer_auth(IDP_ADMIN)
        .json(&json!({"sub": sub, "claims": claims}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

/// An admin invites `name` (a user without a password).
async fn invite(s: &Server, name: &str) -> Value {
    s.ok("POST", "/api/users", Some(json!({"name": name})), 201)
        .await
}

/// Neither the user `id` (with its own `key`, and no current password to
/// give) nor an admin gives a provider user a password.
async fn no_password_for(s: &Server, id: &str, key: &str) {
    let (status, err) = s
        .call(
            "PUT",
            &format!("/api/users/{id}"),
            Some(key),
            Some(json!({"password": "my-own-password"})),
        )
        .await;
    assert_eq!(status, 403, "{err}");
    assert!(message(&err).contains("identity provider"), "{err}");
    let (status, _) = s
        .admin(
            "PUT",
            &format!("/api/users/{id}"),
            Some(json!({"password": "my-own-password"})),
        )
        .await;
    assert_eq!(status, 403);
}

/// The provider ends the account `sub` (its sessions and refresh tokens).
async fn idp_revoke(t: &Setup, sub: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{}/__admin/revoke?sub={sub}", t.idp.issuer))
        .bearer_auth(IDP_ADMIN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
}

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or_default().to_string()
}

async fn user_named(s: &Server, name: &str) -> Option<Value> {
    let list = s
        .ok("GET", &format!("/api/users?name={name}"), None, 200)
        .await;
    list["items"].as_array().unwrap().first().cloned()
}

async fn audit(s: &Server, action: &str) -> Vec<Value> {
    s.ok("GET", &format!("/api/audit?action={action}"), None, 200)
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// A cluster token for prod.
async fn mint(s: &Server, key: &str) -> (u16, Value) {
    s.call(
        "POST",
        "/api/tokens",
        Some(key),
        Some(json!({"destination": "prod"})),
    )
    .await
}

async fn keys_of(s: &Server, user_id: &str) -> u64 {
    s.ok(
        "GET",
        &format!("/api/access-keys?userID={user_id}"),
        None,
        200,
    )
    .await["totalCount"]
        .as_u64()
        .unwrap()
}

// ---------------------------------------------------------------- 1. takeover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_name_admin_does_not_sign_in_as_the_builtin_admin() {
    let t = setup(
        &[(
            "OIDC_ACCOUNTS",
            r#"{"mallory":{"name":"admin"},"mallory2":{"preferred_username":"admin"}}"#,
        )],
        json!({}),
    )
    .await;
    let admin = user_named(&t.s, "admin").await.unwrap();
    let admin_keys = keys_of(&t.s, admin["id"].as_str().unwrap()).await;

    // The attacker leaves `email` out of the scopes: only `name` is "admin".
    let (a, c) = code(&t, "mallory", &["openid", "profile"]).await;
    let (status, resp) = exchange(&t, &a, &c).await;
    assert_eq!(status, 401, "{resp}");
    assert!(resp.get("accessKey").is_none(), "{resp}");
    let msg = message(&resp);
    assert!(
        msg.contains("email") && msg.contains("scope"),
        "names the missing claim and scope: {msg}"
    );
    assert_eq!(
        keys_of(&t.s, admin["id"].as_str().unwrap()).await,
        admin_keys
    );

    // With the email, mallory is herself, never admin.
    let (status, resp) = sign_in(&t, "mallory").await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["name"], "mallory@example.com");
    assert_ne!(resp["userID"], admin["id"]);

    // A provider that names users by preferred_username: still not admin.
    t.s.ok(
        "PATCH",
        &format!("/api/providers/{}", t.provider["id"].as_str().unwrap()),
        Some(json!({"usernameClaim": "preferred_username"})),
        200,
    )
    .await;
    let (status, resp) = sign_in(&t, "mallory2").await;
    assert_eq!(status, 409, "{resp}");
    let msg = message(&resp);
    assert!(
        msg.contains("\"admin\"") && msg.contains("built-in"),
        "{msg}"
    );
    assert_eq!(
        keys_of(&t.s, admin["id"].as_str().unwrap()).await,
        admin_keys
    );
    let conflicts: Vec<Value> = audit(&t.s, "login")
        .await
        .into_iter()
        .filter(|e| e["result"] == "conflict")
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["target"], "admin");
    assert!(
        conflicts[0]["actor"]
            .as_str()
            .unwrap()
            .contains("corp:mallory2")
    );

    // A display name is never a user name, even when asked for.
    let (status, err) =
        t.s.admin(
            "PATCH",
            &format!("/api/providers/{}", t.provider["id"].as_str().unwrap()),
            Some(json!({"usernameClaim": "name"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["fieldErrors"][0]["fieldName"], "usernameClaim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_email_does_not_become_the_existing_user() {
    let t = setup(
        &[(
            "OIDC_ACCOUNTS",
            r#"{"eve":{"email":"carol@example.test","email_verified":false},
                "carol":{"email":"carol@example.test"},
                "eve2":{"email":"carol@example.test"}}"#,
        )],
        json!({}),
    )
    .await;
    // An admin invited carol (no password) and granted her a cluster.
    let carol = invite(&t.s, "carol@example.test").await;
    t.s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": carol["id"], "destination": "prod", "role": "admin"})),
        201,
    )
    .await;

    // eve claims carol's address, unverified: refused, nothing linked.
    let (status, resp) = sign_in(&t, "eve").await;
    assert_eq!(status, 401, "{resp}");
    let msg = message(&resp);
    assert!(msg.contains("email_verified"), "{msg}");
    assert_eq!(keys_of(&t.s, carol["id"].as_str().unwrap()).await, 0);

    // carol, whose address the provider vouches for, claims the invitation.
    let (status, resp) = sign_in(&t, "carol").await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["userID"], carol["id"]);

    // A second account with the same (verified) address: a 409 naming the
    // conflict, and an audit entry; carol keeps her link.
    let (status, resp) = sign_in(&t, "eve2").await;
    assert_eq!(status, 409, "{resp}");
    let msg = message(&resp);
    assert!(
        msg.contains("carol@example.test") && msg.contains("another"),
        "{msg}"
    );
    let conflict = audit(&t.s, "login")
        .await
        .into_iter()
        .find(|e| e["result"] == "conflict")
        .expect("audited");
    assert_eq!(conflict["target"], "carol@example.test");
    assert!(conflict["actor"].as_str().unwrap().ends_with(":eve2"));

    // Later sign-ins find carol by her account, whatever it calls itself now.
    idp_account(
        &t,
        "carol",
        json!({"email": "carol.new@example.test", "name": "Someone Else"}),
    )
    .await;
    let (status, resp) = sign_in(&t, "carol").await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["userID"], carol["id"]);
    assert_eq!(resp["name"], "carol@example.test");

    // With a username claim, an unverified account cannot claim a user either.
    t.s.ok(
        "PATCH",
        &format!("/api/providers/{}", t.provider["id"].as_str().unwrap()),
        Some(json!({"usernameClaim": "preferred_username"})),
        200,
    )
    .await;
    t.s.ok("POST", "/api/users", Some(json!({"name": "dave"})), 201)
        .await;
    idp_account(
        &t,
        "eve3",
        json!({"preferred_username": "dave", "email": "dave@example.test", "email_verified": false}),
    )
    .await;
    let (status, resp) = sign_in(&t, "eve3").await;
    assert_eq!(status, 409, "{resp}");
    assert!(message(&resp).contains("email_verified"), "{resp}");
    // A username that is someone else's address claims nobody, however
    // verified the account's own address is.
    invite(&t.s, "dave@example.test").await;
    idp_account(
        &t,
        "m3",
        json!({"preferred_username": "dave@example.test", "email": "m3@example.com"}),
    )
    .await;
    let (status, resp) = sign_in(&t, "m3").await;
    assert_eq!(status, 409, "{resp}");
    assert!(message(&resp).contains("not for that one"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_password_user_is_never_linked_to_a_provider_account() {
    let t = setup(&[], json!({})).await;
    // bob@example.com exists as a local user with a password.
    let (bob, _) = t.s.user_with_key("bob@example.com").await;
    let (status, resp) = sign_in(&t, "bob").await;
    assert_eq!(status, 409, "{resp}");
    assert!(message(&resp).contains("local user"), "{resp}");
    assert_eq!(
        keys_of(&t.s, &bob).await,
        1,
        "only the password login's key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_claim_that_is_missing_is_named_in_the_error() {
    let t = setup(
        &[("OIDC_ACCOUNTS", r#"{"quiet":{"preferred_username":null}}"#)],
        json!({"usernameClaim": "preferred_username"}),
    )
    .await;
    let (status, resp) = sign_in(&t, "quiet").await;
    assert_eq!(status, 401, "{resp}");
    assert!(message(&resp).contains("`preferred_username`"), "{resp}");
    // Named by the claim, not by the email.
    let (status, resp) = sign_in(&t, "frank").await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["name"], "frank");
}

// ---------------------------------------------------------------- system: names

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_names_are_refused_from_every_source() {
    let t = setup(
        &[(
            "OIDC_ACCOUNTS",
            r#"{"kcm":{"preferred_username":"system:kube-controller-manager"}}"#,
        )],
        json!({"usernameClaim": "preferred_username"}),
    )
    .await;
    // The API.
    for (path, body) in [
        ("/api/users", json!({"name": "system:admin"})),
        ("/api/users", json!({"name": "SYSTEM:admin"})),
        ("/api/groups", json!({"name": "system:masters"})),
        ("/api/groups", json!({"name": "System:Masters"})),
        ("/api/identities", json!({"name": "system:node"})),
    ] {
        let (status, err) = t.s.admin("POST", path, Some(body.clone())).await;
        assert_eq!(status, 400, "{path} {body}: {err}");
        assert_eq!(err["fieldErrors"][0]["fieldName"], "name", "{err}");
    }
    // A provider.
    let (status, resp) = sign_in(&t, "kcm").await;
    assert_eq!(status, 403, "{resp}");
    assert!(message(&resp).contains("system:"), "{resp}");
    assert!(
        user_named(&t.s, "system:kube-controller-manager")
            .await
            .is_none()
    );

    // The bootstrap file: the server refuses to start and names the entry.
    let dir = tempfile::tempdir().unwrap();
    for yaml in [
        "groups:\n  - name: system:masters\n    members: [mallory]\n",
        "users:\n  - name: system:admin\n",
        "grants:\n  - group: system:masters\n    destination: prod\n    role: view\n",
    ] {
        let config = dir.path().join("infra.yaml");
        std::fs::write(&config, yaml).unwrap();
        let out = std::process::Command::new(common::bin())
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .env("INFRA_ADMIN_ACCESS_KEY", ADMIN_KEY)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml}: started anyway:\n{err}");
        assert!(err.contains("system:") && err.contains("reserves"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_masters_from_a_provider_never_reaches_a_cluster_token() {
    let t = setup(
        &[("OIDC_GROUPS", r#"{"alice":["system:masters","sre"]}"#)],
        json!({}),
    )
    .await;
    let sre =
        t.s.ok("POST", "/api/groups", Some(json!({"name": "sre"})), 201)
            .await;
    t.s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": sre["id"], "destination": "prod.web", "role": "edit"})),
        201,
    )
    .await;
    let (status, login) = sign_in(&t, "alice").await;
    assert_eq!(status, 201, "{login}");
    let key = login["accessKey"].as_str().unwrap();
    let groups = t.s.call("GET", "/api/groups", Some(key), None).await.1;
    let names: Vec<&str> = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sre"], "the reserved group was not synced");
    let dropped = audit(&t.s, "groups.reserved").await;
    assert_eq!(dropped.len(), 1);
    assert!(
        dropped[0]["detail"]
            .as_str()
            .unwrap()
            .contains("system:masters")
    );

    // Even a system: group already in the store (an older version synced
    // it) never rides into a token.
    let mut db = t.s.db_connection().await;
    sqlx::query(
        "INSERT INTO groups (id, name, created_at, updated_at) VALUES ('legacy', 'system:masters', 0, 0)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ('legacy', $1)")
        .bind(login["userID"].as_str().unwrap())
        .execute(&mut db)
        .await
        .unwrap();
    let (status, tok) = mint(&t.s, key).await;
    assert_eq!(status, 201, "{tok}");
    let claims = jwt_claims(tok["token"].as_str().unwrap());
    assert_eq!(claims["groups"], json!(["sre"]), "{claims}");
}

fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

// ---------------------------------------------------------------- 4. redirect URIs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_for_the_servers_callback_is_not_redeemed_by_api_login() {
    // The provider knows the CLI's loopback and the server's own callback.
    let s = Server::start(Backend::Sqlite).await;
    let callback = format!("{}/login/callback", s.url);
    let idp = OidcProvider::start_with(&[
        ("OIDC_ADMIN_TOKEN", IDP_ADMIN),
        ("OIDC_APPLICATION_TYPE", "web"),
        (
            "OIDC_REDIRECT_URIS",
            &format!("http://localhost:8301,{callback}"),
        ),
    ]);
    let provider = s
        .ok("POST", "/api/providers",
            Some(json!({"name": "corp", "url": idp.issuer, "clientID": "infra-test", "clientSecret": "infra-test-secret"})), 201)
        .await;
    let t = Setup { idp, s, provider };

    // The attacker saw a code issued for the server's callback (a device
    // sign-in's, say) and asks /api/login to redeem it with the client secret.
    let mut a = Attempt::new(8301);
    a.redirect_url = callback.clone();
    let url = a
        .authorization_url(
            t.provider["authURL"].as_str().unwrap(),
            "infra-test",
            &["openid".into(), "email".into()],
        )
        .unwrap();
    let back = Browser::new().sign_in(&url, "victim", &callback).await;
    let q: HashMap<_, _> = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let (status, resp) = exchange(&t, &a, &q["code"]).await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["fieldErrors"][0]["fieldName"], "oidc.redirectURL");
    assert!(user_named(&t.s, "victim@example.com").await.is_none());

    // The server never spent the code: it is still good at the provider.
    let token = reqwest::Client::new()
        .post(format!("{}/token", t.idp.issuer))
        .basic_auth("infra-test", Some("infra-test-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("redirect_uri", callback.as_str()),
            ("code_verifier", a.code_verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200, "{}", token.text().await.unwrap());

    // Nothing but the loopback listener, whatever the spelling.
    for bad in [
        "https://localhost:8301",
        "http://evil.example:8301",
        "http://localhost.evil.example:8301",
        "http://localhost:8301/elsewhere",
        "http://localhost:8301/?next=x",
        "http://user@localhost:8301",
        "http://localhost",
        "http://127.0.0.2:8301",
        "http://0.0.0.0:8301",
        "http://localhost:8301/%2e%2e/x",
        "http://localhost:8301#x",
        "urn:ietf:wg:oauth:2.0:oob",
    ] {
        let (status, resp) =
            t.s.call(
                "POST",
                "/api/login",
                None,
                Some(json!({"oidc": {"providerID": t.provider["id"], "code": "x",
                "redirectURL": bad, "codeVerifier": "v", "nonce": "n"}})),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {resp}");
        assert_eq!(resp["fieldErrors"][0]["fieldName"], "oidc.redirectURL");
    }
    // The CLI's own spellings still work.
    for good in ["http://127.0.0.1:8301/", "http://[::1]:8301"] {
        let mut a = Attempt::new(8301);
        a.redirect_url = good.to_string();
        assert!(infra::server::routes::auth::check_loopback_redirect(&a.redirect_url).is_ok());
    }
}

// ---------------------------------------------------------------- 5. passwords and sessions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_user_cannot_give_themselves_a_password() {
    let t = setup(&[], json!({})).await;
    let (status, login) = sign_in(&t, "bob").await;
    assert_eq!(status, 201, "{login}");
    let key = login["accessKey"].as_str().unwrap();
    let me = login["userID"].as_str().unwrap();
    // Not even an admin gives one.
    no_password_for(&t.s, me, key).await;
    let (status, _) =
        t.s.call(
            "POST",
            "/api/login",
            None,
            Some(json!({"passwordCredentials": {"name": "bob@example.com", "password": "my-own-password"}})),
        )
        .await;
    assert_eq!(status, 401);

    // A password an older version let them set does not outlive the provider.
    let hash = infra::server::crypto::hash_password(&"old-password-1".into()).unwrap();
    let mut db = t.s.db_connection().await;
    sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(me)
        .execute(&mut db)
        .await
        .unwrap();
    let (status, err) =
        t.s.call(
            "POST",
            "/api/login",
            None,
            Some(json!({"passwordCredentials": {"name": "bob@example.com", "password": "old-password-1"}})),
        )
        .await;
    assert_eq!(status, 401, "{err}");
    assert!(message(&err).contains("identity provider"), "{err}");

    // A local user changing their own password gives the current one.
    let (carl, carl_key) = t.s.user_with_key("carl").await;
    let (status, err) =
        t.s.call(
            "PUT",
            &format!("/api/users/{carl}"),
            Some(&carl_key),
            Some(json!({"password": "new-password-2"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["fieldErrors"][0]["fieldName"], "currentPassword");
    let (status, err) =
        t.s.call(
            "PUT",
            &format!("/api/users/{carl}"),
            Some(&carl_key),
            Some(json!({"password": "new-password-2", "currentPassword": "password-1"})),
        )
        .await;
    assert_eq!(status, 200, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_refresh_token_ends_with_its_id_token() {
    const TTL: i64 = 6;
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.extra_args = vec!["--idp-revalidate-interval".into(), "1s".into()];
    let t = setup_with(
        opts,
        &[
            ("OIDC_REFRESH_TOKENS", "never"),
            ("OIDC_ID_TOKEN_TTL", &TTL.to_string()),
        ],
        json!({}),
    )
    .await;
    assert_eq!(t.provider["refreshTokens"], false);

    let (status, login) = sign_in(&t, "bob").await;
    assert_eq!(status, 201, "{login}");
    let key = login["accessKey"].as_str().unwrap().to_string();
    let expires = time::OffsetDateTime::parse(
        login["expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = (expires - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        left <= TTL,
        "the key lasts as long as the ID token: {left} s"
    );
    t.s.grant_view(login["userID"].as_str().unwrap(), "prod")
        .await;

    // A key bob makes himself for ten years lasts no longer.
    let (status, own) =
        t.s.call(
            "POST",
            "/api/access-keys",
            Some(&key),
            Some(json!({"name": "forever", "expiry": "87600h"})),
        )
        .await;
    assert_eq!(status, 201, "{own}");
    assert!(own["expires"].as_str().unwrap() <= login["expires"].as_str().unwrap());
    let own = own["accessKey"].as_str().unwrap().to_string();
    let (status, _) = mint(&t.s, &own).await;
    assert_eq!(status, 201);

    // The ID token's lifetime passes on the server's clock.
    t.s.advance_clock(TTL + 1);
    for k in [&key, &own] {
        let (status, err) = mint(&t.s, k).await;
        assert_eq!(status, 401, "{err}");
        assert!(message(&err).contains("log in again"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_add_warns_when_the_provider_gives_no_refresh_tokens() {
    let idp = OidcProvider::start_with(&[("OIDC_REFRESH_TOKENS", "never")]);
    let s = Server::start(Backend::Sqlite).await;
    let m = Machine::new();
    m.ok(&[
        "login",
        &s.host(),
        "--key",
        ADMIN_KEY,
        "--tls-trusted-fingerprint",
        &s.fingerprint(),
    ]);
    let out = m
        .cmd()
        .args([
            "providers",
            "add",
            "corp",
            "--url",
            &idp.issuer,
            "--client-id",
            "infra-test",
            "--client-secret",
            "infra-test-secret",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("does not offer refresh tokens") && err.contains("ID token"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_issued_key_is_revoked_when_the_provider_ends_the_session() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.extra_args = vec!["--idp-revalidate-interval".into(), "1s".into()];
    let t = setup_with(opts, &[], json!({})).await;
    let (status, login) = sign_in(&t, "alice").await;
    assert_eq!(status, 201, "{login}");
    let key = login["accessKey"].as_str().unwrap();
    t.s.grant_view(login["userID"].as_str().unwrap(), "prod")
        .await;
    let (status, own) =
        t.s.call(
            "POST",
            "/api/access-keys",
            Some(key),
            Some(json!({"name": "laptop", "expiry": "87600h"})),
        )
        .await;
    assert_eq!(status, 201, "{own}");
    let own = own["accessKey"].as_str().unwrap();
    idp_revoke(&t, "alice").await;
    // The re-check interval passes on the server's clock.
    t.s.advance_clock(2);
    let (status, err) = mint(&t.s, own).await;
    assert_eq!(status, 401, "{err}");
    for k in [key, own] {
        let (status, _) = t.s.call("GET", "/api/grants", Some(k), None).await;
        assert_eq!(status, 401, "revoked");
    }
}

/// An invitation a provider account claimed is a provider user from then
/// on: no password it could set itself would outlive the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_invitation_cannot_be_given_a_password() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.extra_args = vec!["--idp-revalidate-interval".into(), "1s".into()];
    let t = setup_with(
        opts,
        &[(
            "OIDC_ACCOUNTS",
            r#"{"carol":{"email":"carol@example.test"}}"#,
        )],
        json!({}),
    )
    .await;
    let carol = invite(&t.s, "carol@example.test").await;
    let id = carol["id"].as_str().unwrap();
    t.s.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": id, "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    let (status, login) = sign_in(&t, "carol").await;
    assert_eq!(status, 201, "{login}");
    assert_eq!(login["userID"], carol["id"]);
    let key = login["accessKey"].as_str().unwrap();
    // Neither carol (without a current password to give) nor an admin
    // gives her one.
    no_password_for(&t.s, id, key).await;
    // The provider ends her account: nothing of hers works any more.
    idp_revoke(&t, "carol").await;
    t.s.advance_clock(2);
    let (status, err) = mint(&t.s, key).await;
    assert_eq!(status, 401, "{err}");
    let (status, err) =
        t.s.call(
            "POST",
            "/api/login",
            None,
            Some(json!({"passwordCredentials": {"name": "carol@example.test", "password": "my-own-password"}})),
        )
        .await;
    assert_eq!(status, 401, "{err}");
}

/// Some providers (Cognito, older Entra ID) send `email_verified` as a
/// string; addresses come in the case people typed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_verified_as_a_string_and_addresses_in_any_case() {
    let t = setup(
        &[(
            "OIDC_ACCOUNTS",
            r#"{"strtrue":{"email":"str@example.test","email_verified":"true"},
                "strfalse":{"email":"carol@example.test","email_verified":"false"},
                "upper":{"email":"Carol@Example.TEST"}}"#,
        )],
        json!({}),
    )
    .await;
    let carol = invite(&t.s, "carol@example.test").await;
    let (status, resp) = sign_in(&t, "strtrue").await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["name"], "str@example.test");
    // "false" is not a vouch.
    let (status, resp) = sign_in(&t, "strfalse").await;
    assert_eq!(status, 401, "{resp}");
    assert!(message(&resp).contains("email_verified"), "{resp}");
    // Carol@Example.TEST is carol@example.test: it claims the invitation
    // instead of making a second user that differs only in case.
    let (status, resp) = sign_in(&t, "upper").await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["userID"], carol["id"]);
    assert_eq!(resp["name"], "carol@example.test");
}

/// Groups a re-check brings are held to the same rule as a sign-in's: no
/// `system:` group is ever made, joined or grantable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_groups_brought_by_a_recheck_are_never_stored() {
    let mut opts = ServerOptions::new(Backend::Sqlite);
    opts.extra_args = vec!["--idp-revalidate-interval".into(), "1s".into()];
    let t = setup_with(opts, &[("OIDC_GROUPS", r#"{"alice":["dev"]}"#)], json!({})).await;
    let (status, login) = sign_in(&t, "alice").await;
    assert_eq!(status, 201, "{login}");
    let key = login["accessKey"].as_str().unwrap();
    t.s.grant_view(login["userID"].as_str().unwrap(), "prod")
        .await;
    let resp = reqwest::Client::new()
        .post(format!("{}/__admin/groups", t.idp.issuer))
        .bearer_auth(IDP_ADMIN)
        .json(&json!({"sub": "alice", "groups": ["dev", "system:masters", "System:Nodes", "ops"]}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    t.s.advance_clock(2);
    let (status, token) = mint(&t.s, key).await;
    assert_eq!(status, 201, "{token}");
    let groups = jwt_claims(token["token"].as_str().unwrap())["groups"].clone();
    assert_eq!(
        groups,
        json!(["dev", "ops"]),
        "the re-check ran and kept only these"
    );
    let names: Vec<String> = t.s.ok("GET", "/api/groups", None, 200).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_lowercase())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("system:")), "{names:?}");
    let reserved = audit(&t.s, "groups.reserved").await;
    assert!(
        reserved
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("system:masters")),
        "{reserved:?}"
    );
}

/// A second provider whose account claims the same verified address does
/// not become a user another provider's account signs in as.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_provider_cannot_take_over_a_provider_user() {
    let t = setup(&[], json!({})).await;
    let (status, alice) = sign_in(&t, "alice").await;
    assert_eq!(status, 201, "{alice}");
    let partner_idp = OidcProvider::start_with(&[(
        "OIDC_ACCOUNTS",
        r#"{"mallory":{"email":"alice@example.com"}}"#,
    )]);
    let partner =
        t.s.ok(
            "POST",
            "/api/providers",
            Some(json!({"name": "partner", "url": partner_idp.issuer,
                        "clientID": "infra-test", "clientSecret": "infra-test-secret"})),
            201,
        )
        .await;
    let (status, resp) = sign_in_at(&t.s, &partner, "mallory").await;
    assert_eq!(status, 409, "{resp}");
    assert!(
        message(&resp).contains("alice@example.com") && message(&resp).contains("another provider"),
        "{resp}"
    );
    assert!(
        audit(&t.s, "login")
            .await
            .iter()
            .any(|e| e["result"] == "conflict" && e["actor"] == "partner:mallory"),
        "audited"
    );
    // alice still signs in as herself.
    let (status, again) = sign_in(&t, "alice").await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["userID"], alice["userID"]);
}

/// Keys stand on the provider they came from: removing it, or pointing it
/// at another issuer (whose `sub`s are other people), ends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_or_repointed_provider_ends_its_sessions() {
    let t = setup(&[], json!({})).await;
    let (status, alice) = sign_in(&t, "alice").await;
    assert_eq!(status, 201, "{alice}");
    let key = alice["accessKey"].as_str().unwrap();
    t.s.grant_view(alice["userID"].as_str().unwrap(), "prod")
        .await;
    assert_eq!(mint(&t.s, key).await.0, 201);
    // The provider now names another issuer, where "alice" is someone else.
    let other = OidcProvider::start_with(&[(
        "OIDC_ACCOUNTS",
        r#"{"alice":{"email":"mallory@evil.test"}}"#,
    )]);
    let id = t.provider["id"].as_str().unwrap();
    let moved =
        t.s.ok(
            "PATCH",
            &format!("/api/providers/{id}"),
            Some(json!({"url": other.issuer})),
            200,
        )
        .await;
    let (status, err) = mint(&t.s, key).await;
    assert_eq!(status, 401, "the old session ended: {err}");
    let (status, resp) = sign_in_at(&t.s, &moved, "alice").await;
    assert_eq!(status, 201, "{resp}");
    assert_ne!(resp["userID"], alice["userID"], "not the old alice");
    assert_eq!(resp["name"], "mallory@evil.test");
    // Removing the provider ends the sessions made through it.
    let key2 = resp["accessKey"].as_str().unwrap().to_string();
    assert_eq!(
        t.s.call("GET", "/api/grants", Some(&key2), None).await.0,
        200
    );
    t.s.ok("DELETE", &format!("/api/providers/{id}"), None, 204)
        .await;
    assert_eq!(
        t.s.call("GET", "/api/grants", Some(&key2), None).await.0,
        401
    );
}

/// A connector key serves its one destination and nothing else: it makes
/// no other keys, is not traded for a login key, and learns nothing of
/// another destination's grants, not even when they change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_key_makes_no_keys_and_waits_on_no_other_destination() {
    let s = Server::start(Backend::Sqlite).await;
    let made = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"connector": true, "destination": "dev", "name": "dev-connector"})),
            201,
        )
        .await;
    let key = made["accessKey"].as_str().unwrap();
    let (status, err) = s
        .call(
            "POST",
            "/api/access-keys",
            Some(key),
            Some(json!({"name": "forever", "expiry": "87600h"})),
        )
        .await;
    assert_eq!(status, 403, "{err}");
    let (status, err) = s
        .call("POST", "/api/login", None, Some(json!({"accessKey": key})))
        .await;
    assert_eq!(status, 403, "{err}");
    assert!(message(&err).contains("connector key"), "{err}");
    // prod's long poll: refused at once, not after prod's grants change.
    let started = std::time::Instant::now();
    let (status, err) = s
        .call(
            "GET",
            "/api/grants?destination=prod&lastUpdateIndex=0",
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 403, "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    // An admin's destination is audited with its URL and CA, as a
    // connector's registration is.
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "stage", "url": "https://stage.example.test:443", "ca": ""})),
        201,
    )
    .await;
    let reg = audit(&s, "destination.register").await;
    assert!(
        reg.iter().any(|e| e["target"] == "stage"
            && e["detail"]
                .as_str()
                .unwrap()
                .contains("https://stage.example.test:443")),
        "{reg:?}"
    );
}
