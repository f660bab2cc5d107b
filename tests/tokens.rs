//! Cluster tokens: `POST /api/tokens`, the JWKS they verify against, key
//! rotation shared by replicas, and the re-check with a real identity
//! provider (npm `oidc-provider`) before each mint.

mod common;

use common::{Backend, Browser, OidcProvider, Server, ServerOptions, free_port};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};

const IDP_ADMIN: &str = "idp-admin-token";

async fn jwks(s: &Server) -> JwkSet {
    s.client
        .get(format!("{}/.well-known/jwks.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Verifies a cluster token against a server's JWKS, as a connector would.
async fn verify(s: &Server, token: &str, aud: &str) -> Value {
    verify_issued_by(s, token, aud, &s.url).await
}

async fn verify_issued_by(s: &Server, token: &str, aud: &str, issuer: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("a kid");
    let set = jwks(s).await;
    let jwk = set
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} is published"));
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[aud]);
    v.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("token does not verify: {e}"))
        .claims
}

async fn mint(s: &Server, key: &str, dest: &str) -> (u16, Value) {
    s.call(
        "POST",
        "/api/tokens",
        Some(key),
        Some(json!({"destination": dest})),
    )
    .await
}

async fn metric(s: &Server, line_prefix: &str) -> u64 {
    let text = s.metrics().await;
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

both_backends!(tokens_for_granted_destinations_only);

async fn tokens_for_granted_destinations_only(b: Backend) {
    let s = Server::start(b).await;
    let (alice, key) = s.user_with_key("alice").await;
    let g = s
        .ok("POST", "/api/groups", Some(json!({"name": "sre"})), 201)
        .await;
    s.ok(
        "PATCH",
        &format!("/api/groups/{}/users", g["id"].as_str().unwrap()),
        Some(json!({"usersToAdd": [alice]})),
        200,
    )
    .await;
    let grant = s
        .ok(
            "POST",
            "/api/grants",
            Some(json!({"user": alice, "destination": "prod.web", "role": "edit"})),
            201,
        )
        .await;

    let (status, t) = mint(&s, &key, "prod").await;
    assert_eq!(status, 201, "a namespace grant is enough: {t}");
    let claims = verify(&s, t["token"].as_str().unwrap(), "prod").await;
    assert_eq!(claims["sub"], json!(alice));
    assert_eq!(claims["name"], "alice");
    assert_eq!(claims["groups"], json!(["sre"]));
    assert_eq!(claims["aud"], "prod");
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 300, "five minutes by default");
    assert!(t["expires"].as_str().unwrap().ends_with('Z'));

    let (status, err) = mint(&s, &key, "staging").await;
    assert_eq!(status, 403, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no grant on staging")
    );
    let (status, _) = mint(&s, &key, "infra").await;
    assert_eq!(status, 400);
    let (status, _) = mint(&s, "nope", "prod").await;
    assert_eq!(status, 401);
    // A token for one destination is no good for another.
    let header = jsonwebtoken::decode_header(t["token"].as_str().unwrap()).unwrap();
    let set = jwks(&s).await;
    let key = DecodingKey::from_jwk(set.find(&header.kid.unwrap()).unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["staging"]);
    assert!(jsonwebtoken::decode::<Value>(t["token"].as_str().unwrap(), &key, &v).is_err());
    assert_eq!(metric(&s, "infra_tokens_minted_total").await, 1);
    // JWKS needs no key and no version header.
    assert!(!jwks(&s).await.keys.is_empty());

    // Nothing of the caller is cached on this path: a grant taken away, or
    // the key revoked, counts on the very next mint.
    let user_key = key_of(&s, &alice).await;
    let (status, _) = mint(&s, &user_key, "prod").await;
    assert_eq!(status, 201);
    s.ok(
        "DELETE",
        &format!("/api/grants/{}", grant["id"].as_str().unwrap()),
        None,
        204,
    )
    .await;
    let (status, err) = mint(&s, &user_key, "prod").await;
    assert_eq!(status, 403, "the grant is gone: {err}");
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": g["id"], "destination": "prod", "role": "view"})),
        201,
    )
    .await;
    let (status, err) = mint(&s, &user_key, "prod").await;
    assert_eq!(status, 201, "a group's grant is enough: {err}");
    let id = user_key.split('.').next().unwrap();
    s.ok("DELETE", &format!("/api/access-keys/{id}"), None, 204)
        .await;
    let (status, err) = mint(&s, &user_key, "prod").await;
    assert_eq!(status, 401, "the key was revoked: {err}");
}

/// A fresh access key of `user`.
async fn key_of(s: &Server, user: &str) -> String {
    let k = s
        .ok(
            "POST",
            "/api/access-keys",
            Some(json!({"userID": user, "name": "revocable"})),
            201,
        )
        .await;
    k["accessKey"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_rotate_with_overlap_and_are_shared_by_replicas() {
    let mut opts = ServerOptions::new(Backend::Postgres);
    const URL: &str = "https://infra.example.test";
    opts.extra_args = vec![
        "--signing-key-rotation".into(),
        "2s".into(),
        "--url".into(),
        URL.into(),
    ];
    let a = Server::start_with(opts).await;
    let mut opts = ServerOptions::new(Backend::Postgres);
    opts.db = a.db.clone();
    opts.clock = Some(a.clock.clone());
    opts.extra_args = vec![
        "--signing-key-rotation".into(),
        "2s".into(),
        "--url".into(),
        URL.into(),
        "--root-key-file".into(),
        a.data_dir.join("root.key").display().to_string(),
    ];
    let b = Server::start_with(opts).await;
    let (alice, key) = a.user_with_key("alice").await;
    a.ok(
        "POST",
        "/api/grants",
        Some(json!({"user": alice, "destination": "prod", "role": "view"})),
        201,
    )
    .await;

    let (_, t1) = mint(&a, &key, "prod").await;
    let kid1 = jsonwebtoken::decode_header(t1["token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    // The other replica publishes the same key...
    assert!(jwks(&b).await.find(&kid1).is_some());
    // ...and signs with it in the same epoch (or the next one, shared too).
    let (_, tb) = mint(&b, &key, "prod").await;
    let kid_b = jsonwebtoken::decode_header(tb["token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert!(jwks(&a).await.find(&kid_b).is_some());

    // The next epoch, on both (they share the clock).
    a.advance_clock(2);
    let (_, t2) = mint(&a, &key, "prod").await;
    let kid2 = jsonwebtoken::decode_header(t2["token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(kid1, kid2, "a new key after the rotation period");
    let set = jwks(&b).await;
    assert!(
        set.find(&kid1).is_some() && set.find(&kid2).is_some(),
        "the old key stays published while its tokens live"
    );
    // Both tokens still verify.
    verify_issued_by(&a, t1["token"].as_str().unwrap(), "prod", URL).await;
    verify_issued_by(&b, t2["token"].as_str().unwrap(), "prod", URL).await;
}

/// Signs alice in through the provider (the test plays the CLI) and
/// returns her access key.
async fn oidc_sign_in(s: &Server, provider: &Value, login: &str) -> String {
    let port = free_port();
    let a = infra::login::Attempt::new(port);
    let scopes: Vec<String> = provider["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let url = a
        .authorization_url(provider["authURL"].as_str().unwrap(), "infra-test", &scopes)
        .unwrap();
    let back = Browser::new()
        .sign_in(&url, login, &format!("http://localhost:{port}"))
        .await;
    let q: std::collections::HashMap<_, _> = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let (status, resp) = s
        .call(
            "POST",
            "/api/login",
            None,
            Some(json!({"oidc": {
            "providerID": provider["id"], "code": q["code"], "redirectURL": a.redirect_url,
            "codeVerifier": a.code_verifier, "nonce": a.nonce}})),
        )
        .await;
    assert_eq!(status, 201, "{resp}");
    resp["accessKey"].as_str().unwrap().to_string()
}

async fn idp_admin(idp: &OidcProvider, path: &str, body: Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", idp.issuer))
        .bearer_auth(IDP_ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
}

async fn recheck_setup(backend: Backend) -> (OidcProvider, Server, Value) {
    let idp = OidcProvider::start_with(&[
        ("OIDC_ADMIN_TOKEN", IDP_ADMIN),
        ("OIDC_GROUPS", r#"{"alice":["sre"]}"#),
    ]);
    let s = start_rechecking(backend, None).await;
    let provider = s
        .ok("POST", "/api/providers",
            Some(json!({"name": "corp", "url": idp.issuer, "clientID": "infra-test", "clientSecret": "infra-test-secret"})), 201)
        .await;
    s.ok("POST", "/api/groups", Some(json!({"name": "sre"})), 201)
        .await;
    let sre = s.ok("GET", "/api/groups?name=sre", None, 200).await["items"][0]["id"].clone();
    s.ok(
        "POST",
        "/api/grants",
        Some(json!({"group": sre, "destination": "prod", "role": "edit"})),
        201,
    )
    .await;
    (idp, s, provider)
}

/// How often the servers here re-check a session with the provider; the
/// tests let it pass on the servers' clock ([`let_the_interval_pass`]), so
/// "within the interval" holds however slow the machine is.
const RECHECK_INTERVAL: i64 = 60;

fn let_the_interval_pass(s: &Server) {
    s.advance_clock(RECHECK_INTERVAL + 1);
}

/// A server that re-checks sessions every [`RECHECK_INTERVAL`]; `shared`:
/// a replica's database, root key and clock.
async fn start_rechecking(backend: Backend, shared: Option<&Server>) -> Server {
    let mut opts = ServerOptions::new(backend);
    opts.extra_args = vec![
        "--idp-revalidate-interval".into(),
        format!("{RECHECK_INTERVAL}s"),
    ];
    if let Some(a) = shared {
        opts.db = a.db.clone();
        opts.clock = Some(a.clock.clone());
        opts.extra_args.extend([
            "--root-key-file".into(),
            a.data_dir.join("root.key").display().to_string(),
        ]);
    }
    Server::start_with(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recheck_updates_groups_and_ends_revoked_sessions() {
    let (idp, s, provider) = recheck_setup(Backend::Sqlite).await;
    let key = oidc_sign_in(&s, &provider, "alice").await;
    let (status, t) = mint(&s, &key, "prod").await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(
        verify(&s, t["token"].as_str().unwrap(), "prod").await["groups"],
        json!(["sre"])
    );

    // The provider changes her groups: the next mint after the interval has them.
    idp_admin(
        &idp,
        "/__admin/groups",
        json!({"sub": "alice", "groups": ["sre", "oncall"]}),
    )
    .await;
    let_the_interval_pass(&s);
    let (status, t) = mint(&s, &key, "prod").await;
    assert_eq!(status, 201, "{t}");
    let mut groups: Vec<String> = serde_json::from_value(
        verify(&s, t["token"].as_str().unwrap(), "prod").await["groups"].clone(),
    )
    .unwrap();
    groups.sort();
    assert_eq!(groups, ["oncall", "sre"]);
    assert_eq!(
        metric(&s, "infra_idp_rechecks_total{result=\"valid\"}").await,
        1
    );

    // Within the interval, no re-check.
    let (status, _) = mint(&s, &key, "prod").await;
    assert_eq!(status, 201);
    assert_eq!(
        metric(&s, "infra_idp_rechecks_total{result=\"valid\"}").await,
        1
    );

    // The provider ends her session: refused, and every key of hers revoked.
    let other_key = oidc_sign_in(&s, &provider, "alice").await;
    let resp = reqwest::Client::new()
        .post(format!("{}/__admin/revoke?sub=alice", idp.issuer))
        .bearer_auth(IDP_ADMIN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let_the_interval_pass(&s);
    let (status, err) = mint(&s, &key, "prod").await;
    assert_eq!(status, 401, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("session ended by your identity provider") && msg.contains("infra login"),
        "{msg}"
    );
    for k in [&key, &other_key] {
        let (status, _) = s.call("GET", "/api/grants", Some(k), None).await;
        assert_eq!(status, 401, "the key was revoked");
    }
    let audit = s
        .ok("GET", "/api/audit?action=session.ended", None, 200)
        .await;
    assert_eq!(audit["totalCount"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_fails_closed_but_keeps_the_keys() {
    let (idp, s, provider) = recheck_setup(Backend::Sqlite).await;
    let key = oidc_sign_in(&s, &provider, "alice").await;
    idp_admin(&idp, "/__admin/down", json!({})).await;
    let_the_interval_pass(&s);
    let resp = s
        .client
        .post(format!("{}/api/tokens", s.url))
        .header("Infra-Version", common::VERSION)
        .bearer_auth(&key)
        .json(&json!({"destination": "prod"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("login is kept"),
        "{body}"
    );
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200, "the key still works");

    // The provider is back: after the back-off, tokens flow again.
    idp_admin(&idp, "/__admin/up", json!({})).await;
    let resp = s
        .client
        .post(format!("{}/api/tokens", s.url))
        .header("Infra-Version", common::VERSION)
        .bearer_auth(&key)
        .json(&json!({"destination": "prod"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503, "still backing off");
    let retry_after: i64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    s.advance_clock(retry_after);
    let (status, t) = mint(&s, &key, "prod").await;
    assert_eq!(
        status, 201,
        "tokens are minted again once the provider is back: {t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_replica_rechecks_a_user_at_a_time() {
    let (_idp, a, provider) = recheck_setup(Backend::Postgres).await;
    let b = start_rechecking(Backend::Postgres, Some(&a)).await;
    let key = oidc_sign_in(&a, &provider, "alice").await;
    let_the_interval_pass(&a);
    let mut calls = Vec::new();
    for i in 0..12 {
        let s = if i % 2 == 0 { &a } else { &b };
        calls.push(mint(s, &key, "prod"));
    }
    let results = futures_join(calls).await;
    for (status, body) in &results {
        assert_eq!(*status, 201, "{body}");
    }
    let total = metric(&a, "infra_idp_rechecks_total{result=\"valid\"}").await
        + metric(&b, "infra_idp_rechecks_total{result=\"valid\"}").await;
    assert_eq!(
        total, 1,
        "one re-check for twelve parallel mints on two replicas"
    );
}

async fn futures_join<F: std::future::Future<Output = (u16, Value)>>(
    fs: Vec<F>,
) -> Vec<(u16, Value)> {
    let mut handles = Vec::new();
    for f in fs {
        handles.push(f);
    }
    let mut out = Vec::new();
    // Drive them concurrently on this task.
    let mut pinned: Vec<_> = handles.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<(u16, Value)>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for d in done {
        out.push(d.unwrap());
    }
    out
}
