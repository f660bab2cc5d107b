//! Machine identities log in with their own OIDC JWT (`oidc-auth`):
//! JWTs from a real issuer (npm `oidc-provider`, RS256) and from loopback
//! stand-ins shaped like GitLab CI (ES256, over HTTP, base-URL discovery)
//! and SPIRE (ES384, over HTTPS with a private CA, discovery at the
//! `/.well-known/openid_configuration` spelling); every bound accepting
//! and refusing; the access token's TTL, max TTL, uses, trusted IPs and
//! revocation; and a pipeline: JWT → `infra login --method=oidc-auth` →
//! `INFRA_ACCESS_KEY` → the API, `infra tokens create` and kubectl.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ADMIN_KEY, Backend, Browser, Machine, OidcProvider, Server};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ------------------------------------------------------------------ a test issuer

/// A signing key and the JWK that publishes it.
#[derive(Clone)]
struct Key {
    alg: Algorithm,
    kid: String,
    enc: EncodingKey,
    jwk: Jwk,
}

impl Key {
    fn new(alg: Algorithm, kid: &str) -> Key {
        let rc = match alg {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            other => panic!("no test keys for {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(rc).unwrap();
        let enc = EncodingKey::from_ec_der(&pair.serialize_der());
        let mut jwk = Jwk::from_encoding_key(&enc, alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        Key {
            alg,
            kid: kid.to_string(),
            enc,
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.enc).unwrap()
    }
}

#[derive(Clone)]
struct IssuerState {
    base: Arc<Mutex<String>>,
    keys: Arc<Mutex<Vec<Jwk>>>,
    jwks_fetches: Arc<AtomicUsize>,
}

/// A loopback OIDC issuer: a discovery document and a JWKS.
struct Issuer {
    /// What to configure as the discovery URL.
    discovery_url: String,
    key: Key,
    state: IssuerState,
    ca_pem: Option<String>,
    handle: axum_server::Handle<std::net::SocketAddr>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

impl Issuer {
    /// `https`: serve with a private CA. `underscore`: the discovery
    /// document is at `/.well-known/openid_configuration` and the full URL
    /// is configured; otherwise the base URL is.
    async fn start(alg: Algorithm, https: bool, underscore: bool) -> Issuer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = Key::new(alg, "key-1");
        let state = IssuerState {
            base: Default::default(),
            keys: Arc::new(Mutex::new(vec![key.jwk.clone()])),
            jwks_fetches: Default::default(),
        };
        let doc_path = if underscore {
            "/.well-known/openid_configuration"
        } else {
            "/.well-known/openid-configuration"
        };
        let app = axum::Router::new()
            .route(
                doc_path,
                axum::routing::get(
                    |axum::extract::State(st): axum::extract::State<IssuerState>| async move {
                        let base = st.base.lock().unwrap().clone();
                        axum::Json(json!({
                            "issuer": base,
                            "jwks_uri": format!("{base}/keys"),
                            "id_token_signing_alg_values_supported": ["ES256", "ES384"],
                        }))
                    },
                ),
            )
            .route(
                "/keys",
                axum::routing::get(
                    |axum::extract::State(st): axum::extract::State<IssuerState>| async move {
                        st.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                        let keys = st.keys.lock().unwrap().clone();
                        axum::Json(serde_json::to_value(JwkSet { keys }).unwrap())
                    },
                ),
            )
            .with_state(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = axum_server::Handle::new();
        let (base, ca_pem) = if https {
            let (ca, cert, key_pem) = common::private_ca();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem(
                cert.into_bytes(),
                key_pem.into_bytes(),
            )
            .await
            .unwrap();
            let server = axum_server::from_tcp_rustls(listener, config)
                .unwrap()
                .handle(handle.clone());
            tokio::spawn(async move {
                let _ = server.serve(app.into_make_service()).await;
            });
            (format!("https://{addr}"), Some(ca))
        } else {
            let server = axum_server::from_tcp(listener)
                .unwrap()
                .handle(handle.clone());
            tokio::spawn(async move {
                let _ = server.serve(app.into_make_service()).await;
            });
            (format!("http://{addr}"), None)
        };
        *state.base.lock().unwrap() = base.clone();
        let discovery_url = if underscore {
            format!("{base}{doc_path}")
        } else {
            base.clone()
        };
        Issuer {
            discovery_url,
            key,
            state,
            ca_pem,
            handle,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.key.sign(claims)
    }

    fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

// ------------------------------------------------------------------ helpers

const GITLAB_ISS: &str = "https://gitlab.example.com";
const GITLAB_SUB: &str = "project_path:group/project:ref_type:branch:ref:main";
const INFRA_AUD: &str = "https://infra.example.com";

/// The claims of a GitLab CI `id_tokens` JWT, valid for 5 minutes.
fn gitlab_claims() -> Value {
    let t = now();
    json!({
        "iss": GITLAB_ISS,
        "sub": GITLAB_SUB,
        "aud": INFRA_AUD,
        "namespace_path": "group",
        "project_path": "group/project",
        "ref": "main",
        "ref_type": "branch",
        "ref_protected": "true",
        "pipeline_source": "push",
        "groups_direct": ["group", "ops"],
        "iat": t,
        "nbf": t,
        "exp": t + 300,
        "jti": "3b0a6d52-3f0f-4bbd-a0ef-000000000000",
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

async fn add_identity(s: &Server, name: &str) -> String {
    let v = s
        .ok("POST", "/api/identities", Some(json!({"name": name})), 201)
        .await;
    v["id"].as_str().unwrap().to_string()
}

async fn set_oidc_auth(s: &Server, id: &str, cfg: Value) -> Value {
    s.ok(
        "PUT",
        &format!("/api/identities/{id}/oidc-auth"),
        Some(cfg),
        200,
    )
    .await
}

async fn login(s: &Server, identity: &str, jwt: &str) -> (u16, Value) {
    s.call(
        "POST",
        "/api/v1/auth/oidc-auth/login",
        None,
        Some(json!({"identityId": identity, "jwt": jwt})),
    )
    .await
}

/// Logs in, expecting success; returns the access token.
async fn token(s: &Server, identity: &str, jwt: &str) -> String {
    let (status, v) = login(s, identity, jwt).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["tokenType"], "Bearer");
    v["accessToken"].as_str().unwrap().to_string()
}

/// Logs in, expecting a 401 whose message contains `why`.
async fn refused(s: &Server, identity: &str, jwt: &str, why: &str) {
    let (status, v) = login(s, identity, jwt).await;
    assert_eq!(status, 401, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(why), "{msg:?} should say {why:?}");
    assert!(!msg.contains(jwt), "the JWT must not be echoed: {msg}");
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

// ------------------------------------------------------------------ bounds

both_backends!(gitlab_shaped_jwts_meet_every_bound);

async fn gitlab_shaped_jwts_meet_every_bound(b: Backend) {
    let issuer = Issuer::start(Algorithm::ES256, false, false).await;
    let s = Server::start(b).await;
    let id = add_identity(&s, "deploy").await;

    // Configuration is checked: TTL over max TTL, no bound at all, bad CIDRs.
    let base = json!({"discoveryURL": issuer.discovery_url, "issuer": GITLAB_ISS,
                      "subject": GITLAB_SUB});
    for (extra, field, says) in [
        (
            json!({"accessTokenTTL": 7200, "accessTokenMaxTTL": 3600}),
            "accessTokenTTL",
            "must not exceed the max TTL",
        ),
        (json!({"subject": null}), "subject", "binds no workload"),
        (
            json!({"accessTokenTrustedIPs": ["10.0.0.0/33"]}),
            "accessTokenTrustedIPs",
            "not a CIDR",
        ),
        (json!({"discoveryURL": "gitlab"}), "discoveryURL", "URL"),
    ] {
        let (status, v) = s
            .admin(
                "PUT",
                &format!("/api/identities/{id}/oidc-auth"),
                Some(with(base.clone(), extra)),
            )
            .await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["fieldErrors"][0]["fieldName"], field, "{v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    // Only admins configure; nobody reads it without a key.
    let (_, alice_key) = s.user_with_key("alice").await;
    let (status, _) = s
        .call(
            "PUT",
            &format!("/api/identities/{id}/oidc-auth"),
            Some(&alice_key),
            Some(base.clone()),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .call(
            "GET",
            &format!("/api/identities/{id}/oidc-auth"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = s
        .admin("GET", &format!("/api/identities/{id}/oidc-auth"), None)
        .await;
    assert_eq!(status, 404, "no configuration yet");
    refused(
        &s,
        "deploy",
        &issuer.sign(&gitlab_claims()),
        "no oidc-auth configuration",
    )
    .await;

    // Exact subject, audience and claims; defaults for the rest.
    let cfg = set_oidc_auth(
        &s,
        &id,
        json!({"discoveryURL": issuer.discovery_url, "issuer": GITLAB_ISS, "subject": GITLAB_SUB,
               "audiences": [INFRA_AUD], "claims": {"project_path": "group/project", "ref": "main"}}),
    )
    .await;
    assert_eq!(cfg["accessTokenTTL"], 7200);
    assert_eq!(cfg["accessTokenMaxTTL"], 30 * 86400);
    assert_eq!(cfg["accessTokenMaxUses"], 0);
    assert_eq!(cfg["accessTokenTrustedIPs"], json!(["0.0.0.0/0", "::/0"]));
    let by_name = s
        .ok("GET", "/api/identities/deploy/oidc-auth", None, 200)
        .await;
    assert_eq!(by_name["identityID"], id.as_str());

    // Accepted, by name and by id; the token works like an access key.
    let jwt = issuer.sign(&gitlab_claims());
    let (status, v) = login(&s, "deploy", &jwt).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["tokenType"], "Bearer");
    assert_eq!(v["accessTokenMaxTTL"], 30 * 86400);
    let expires_in = v["expiresIn"].as_i64().unwrap();
    assert!((7190..=7200).contains(&expires_in), "{v}");
    assert_eq!(v["identityName"], "deploy");
    let key = token(&s, &id, &jwt).await;
    let (status, grants) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200, "{grants}");
    // An identity's token is no admin's.
    let (status, _) = s.call("GET", "/api/users", Some(&key), None).await;
    assert_eq!(status, 403);

    // Each bound refuses, naming the check.
    let c = gitlab_claims;
    let feature = "project_path:group/project:ref_type:branch:ref:feature";
    for (claims, why) in [
        (with(c(), json!({"sub": feature})), "subject (sub)"),
        (with(c(), json!({"sub": null})), "no sub claim"),
        (
            with(c(), json!({"aud": "https://elsewhere.example"})),
            "audiences (aud)",
        ),
        (with(c(), json!({"aud": ["a", "b"]})), "audiences (aud)"),
        (with(c(), json!({"ref": "feature"})), "claim ref"),
        (
            with(c(), json!({"project_path": null})),
            "no project_path claim",
        ),
        (
            with(c(), json!({"iss": "https://gitlab.other.example"})),
            "issuer (iss)",
        ),
        (with(c(), json!({"iss": null})), "no iss claim"),
        (with(c(), json!({"exp": now() - 120})), "expired"),
        (with(c(), json!({"exp": null})), "no exp claim"),
        (with(c(), json!({"nbf": now() + 600})), "not valid yet"),
        (
            with(c(), json!({"iat": now() + 600})),
            "issued in the future",
        ),
    ] {
        refused(&s, "deploy", &issuer.sign(&claims), why).await;
    }
    // Clock skew within the leeway is fine; an aud list needs one match.
    token(
        &s,
        "deploy",
        &issuer.sign(&with(c(), json!({"exp": now() - 10}))),
    )
    .await;
    token(
        &s,
        "deploy",
        &issuer.sign(&with(c(), json!({"aud": ["x", INFRA_AUD]}))),
    )
    .await;

    // Forgeries: another key under the same kid, alg none, HS256 keyed with
    // the public key, garbage; and an unknown identity.
    let other = Key::new(Algorithm::ES256, "key-1");
    refused(&s, "deploy", &other.sign(&c()), "signature does not verify").await;
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        enc(json!({"alg": "none", "typ": "JWT"})),
        enc(c())
    );
    refused(&s, "deploy", &none, "algorithm (alg) \"none\"").await;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("key-1".into());
    let public = serde_json::to_vec(&issuer.key.jwk).unwrap();
    let hs = jsonwebtoken::encode(&h, &c(), &EncodingKey::from_secret(&public)).unwrap();
    refused(&s, "deploy", &hs, "algorithm (alg) \"HS256\"").await;
    refused(&s, "deploy", "not.a.jwt", "header").await;
    refused(&s, "nobody", &jwt, "no such identity").await;

    // Globs: any project of the group on main; claims too; a list-valued
    // claim matches when one element does.
    set_oidc_auth(
        &s,
        &id,
        json!({"discoveryURL": issuer.discovery_url, "issuer": GITLAB_ISS,
               "subject": "project_path:group/*:ref_type:branch:ref:main",
               "audiences": ["https://infra.*"], "claims": {"groups_direct": "op?"}}),
    )
    .await;
    let other_project = "project_path:group/other:ref_type:branch:ref:main";
    token(
        &s,
        "deploy",
        &issuer.sign(&with(c(), json!({"sub": other_project}))),
    )
    .await;
    refused(
        &s,
        "deploy",
        &issuer.sign(&with(
            c(),
            json!({"sub": "project_path:evil/project:ref_type:branch:ref:main"}),
        )),
        "subject (sub)",
    )
    .await;
    refused(
        &s,
        "deploy",
        &issuer.sign(&with(c(), json!({"sub": feature}))),
        "subject (sub)",
    )
    .await;
    refused(
        &s,
        "deploy",
        &issuer.sign(&with(c(), json!({"aud": "https://other.example"}))),
        "audiences (aud)",
    )
    .await;
    refused(
        &s,
        "deploy",
        &issuer.sign(&with(c(), json!({"groups_direct": ["group", "dev"]}))),
        "claim groups_direct",
    )
    .await;

    // Keys are cached; a JWT from a rotated-in key fetches them again once.
    let fetches = issuer.fetches();
    token(&s, "deploy", &issuer.sign(&c())).await;
    assert_eq!(issuer.fetches(), fetches, "the JWKS is cached");
    let rotated = Key::new(Algorithm::ES256, "key-2");
    issuer.state.keys.lock().unwrap().push(rotated.jwk.clone());
    token(&s, "deploy", &rotated.sign(&c())).await;
    assert_eq!(
        issuer.fetches(),
        fetches + 1,
        "an unknown kid refreshes the JWKS"
    );
    let stranger = Key::new(Algorithm::ES256, "key-3");
    refused(
        &s,
        "deploy",
        &stranger.sign(&c()),
        "not in the issuer's JWKS",
    )
    .await;
    refused(
        &s,
        "deploy",
        &stranger.sign(&c()),
        "not in the issuer's JWKS",
    )
    .await;
    assert_eq!(
        issuer.fetches(),
        fetches + 1,
        "unknown kids do not hammer the issuer"
    );

    // Every refusal is audited with its reason, never with the JWT.
    let audit = s
        .ok(
            "GET",
            "/api/audit?action=identity.login&limit=1000",
            None,
            200,
        )
        .await;
    let items = audit["items"].as_array().unwrap();
    assert!(items.iter().any(
        |e| e["result"] == "failure" && e["detail"].as_str().unwrap().contains("subject (sub)")
    ));
    assert!(
        items
            .iter()
            .any(|e| e["result"] == "success" && e["actor"] == "deploy")
    );
    let text = audit.to_string();
    assert!(!text.contains(&jwt) && !text.contains(&key));

    // Removing the configuration revokes the tokens it issued.
    s.ok(
        "DELETE",
        &format!("/api/identities/{id}/oidc-auth"),
        None,
        204,
    )
    .await;
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401);
}

// ------------------------------------------------------------------ binding, and globs on real subjects

const GITHUB_ISS: &str = "https://token.actions.githubusercontent.com";

/// The claims of a GitHub Actions OIDC token of `octo-org/octo-repo`.
fn github_claims(sub: &str) -> Value {
    let t = now();
    json!({
        "iss": GITHUB_ISS,
        "sub": sub,
        "aud": INFRA_AUD,
        "repository": "octo-org/octo-repo",
        "repository_owner": "octo-org",
        "ref": "refs/heads/main",
        "event_name": "push",
        "iat": t,
        "nbf": t,
        "exp": t + 300,
    })
}

/// `PUT …/oidc-auth` expecting a 400; returns the error body.
async fn set_refused(s: &Server, id: &str, cfg: Value) -> Value {
    let (status, v) = s
        .admin("PUT", &format!("/api/identities/{id}/oidc-auth"), Some(cfg))
        .await;
    assert_eq!(status, 400, "{v}");
    v
}

/// Audiences alone, `*`, and claims any project has (ref, environment, …)
/// accept every job of a shared issuer like gitlab.com: such a
/// configuration is refused when saved, naming subject and claims, from the
/// API and from the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configurations_that_accept_every_project_of_a_shared_issuer_are_refused() {
    let issuer = Issuer::start(Algorithm::ES256, false, false).await;
    let s = Server::start(Backend::Sqlite).await;
    let id = add_identity(&s, "deploy").await;
    let base = json!({"discoveryURL": issuer.discovery_url, "issuer": GITLAB_ISS,
                      "audiences": [INFRA_AUD]});
    for unbound in [
        json!({}),
        json!({"subject": "*"}),
        json!({"subject": "**"}),
        json!({"subject": "*:*"}),
        json!({"subject": "*/*"}),
        json!({"subject": "?"}),
        json!({"claims": {"ref": "main"}}),
        json!({"claims": {"ref": "main", "ref_type": "branch", "ref_protected": "true",
                          "environment": "production", "pipeline_source": "push"}}),
        json!({"claims": {"user_login": "alice"}}),
        json!({"claims": {"project_path": "**"}}),
        json!({"subject": "*", "claims": {"namespace_path": "*", "ref": "main"}}),
    ] {
        let v = set_refused(&s, &id, with(base.clone(), unbound.clone())).await;
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.starts_with("subject or claims: the configuration binds no workload"),
            "{unbound}: {msg}"
        );
        for example in [
            "project_path:mygroup/myproject:ref_type:branch:ref:main",
            "repo:my-org/my-repo:ref:refs/heads/main",
        ] {
            assert!(msg.contains(example), "{unbound}: {msg}");
        }
        let fields: Vec<&str> = v["fieldErrors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["fieldName"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["subject", "claims"], "{v}");
    }
    // It says which part binds nothing.
    let v = set_refused(&s, &id, with(base.clone(), json!({"subject": "*"}))).await;
    assert!(
        v["message"].as_str().unwrap().contains(r#"subject "*""#),
        "{v}"
    );
    let v = set_refused(
        &s,
        &id,
        with(base.clone(), json!({"claims": {"ref": "main"}})),
    )
    .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("ref identifies no workload"),
        "{v}"
    );
    // Three stars have no meaning.
    let v = set_refused(
        &s,
        &id,
        with(base.clone(), json!({"subject": "project_path:group/***"})),
    )
    .await;
    assert_eq!(v["fieldErrors"][0]["fieldName"], "subject", "{v}");
    assert!(v["message"].as_str().unwrap().contains("***"), "{v}");
    let (status, _) = s
        .admin("GET", &format!("/api/identities/{id}/oidc-auth"), None)
        .await;
    assert_eq!(status, 404, "nothing was saved");

    // A subject, or one identifying claim, binds.
    for bound in [
        json!({"subject": GITLAB_SUB}),
        json!({"subject": "project_path:group/**:ref_type:branch:ref:main"}),
        json!({"claims": {"project_path": "group/project", "ref": "main"}}),
        json!({"claims": {"namespace_path": "group"}}),
    ] {
        set_oidc_auth(&s, &id, with(base.clone(), bound)).await;
    }
    token(&s, "deploy", &issuer.sign(&gitlab_claims())).await;

    // The CLI shows the server's refusal with the flags' names.
    let admin = Machine::new();
    admin.ok(&[
        "login",
        &s.host(),
        "--key",
        ADMIN_KEY,
        "--tls-trusted-fingerprint",
        &s.fingerprint(),
    ]);
    let out = admin.run(&[
        "identities",
        "oidc-auth",
        "set",
        "deploy",
        "--discovery-url",
        &issuer.discovery_url,
        "--issuer",
        GITLAB_ISS,
        "--audiences",
        INFRA_AUD,
        "--claims",
        "ref=main",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--subject or --claims: the configuration binds no workload"),
        "{err}"
    );
    assert!(err.contains("project_path:mygroup/myproject"), "{err}");
}

both_backends!(a_configuration_stored_without_a_binding_is_refused_at_login);

/// A configuration saved before binding was required (audiences only, `*`,
/// a ref claim) is refused at every login, with the reason, and audited;
/// the issuer is not even asked for its keys.
async fn a_configuration_stored_without_a_binding_is_refused_at_login(b: Backend) {
    let issuer = Issuer::start(Algorithm::ES256, false, false).await;
    let s = Server::start(b).await;
    let jwt = issuer.sign(&gitlab_claims());
    let mut conn = s.db_connection().await;
    for (name, subject, claims) in [
        ("audience-only", "", "{}"),
        ("star", "*", "{}"),
        ("ref-only", "", r#"{"ref":"main"}"#),
    ] {
        let id = add_identity(&s, name).await;
        sqlx::query(
            "INSERT INTO identity_oidc_auth (identity_id, discovery_url, issuer, ca_pem, \
             subject, audiences, claims, access_token_ttl, access_token_max_ttl, \
             access_token_max_uses, trusted_ips, created_at, updated_at) \
             VALUES ($1, $2, $3, '', $4, $5, $6, 3600, 7200, 0, $7, 1, 1)",
        )
        .bind(&id)
        .bind(&issuer.discovery_url)
        .bind(GITLAB_ISS)
        .bind(subject)
        .bind(json!([INFRA_AUD]).to_string())
        .bind(claims)
        .bind(json!(["0.0.0.0/0", "::/0"]).to_string())
        .execute(&mut conn)
        .await
        .unwrap();
        // An admin still sees it, as it is.
        let shown = s
            .ok("GET", &format!("/api/identities/{id}/oidc-auth"), None, 200)
            .await;
        assert_eq!(shown["subject"], subject);
        refused(&s, name, &jwt, "the configuration binds no workload").await;
    }
    assert_eq!(issuer.fetches(), 0, "the issuer was not asked for its keys");
    let audit = s
        .ok(
            "GET",
            "/api/audit?action=identity.login&limit=1000",
            None,
            200,
        )
        .await;
    for name in ["audience-only", "star", "ref-only"] {
        assert!(
            audit["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["actor"] == name
                    && e["result"] == "failure"
                    && e["detail"].as_str().unwrap().contains("binds no workload")),
            "{name}: {audit}"
        );
    }
}

/// On gitlab.com, `group/*` is meant as the projects of group: a job of a
/// project in a nested subgroup (`group/sub/app`, which another team may
/// own) does not match it; `group/**` takes them in on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_job_of_a_nested_subgroup_does_not_match_group_star() {
    let issuer = Issuer::start(Algorithm::ES256, false, false).await;
    let s = Server::start(Backend::Sqlite).await;
    let id = add_identity(&s, "deploy").await;
    let cfg = |subject: &str| {
        json!({"discoveryURL": issuer.discovery_url, "issuer": GITLAB_ISS,
               "audiences": [INFRA_AUD], "subject": subject})
    };
    let job = |project: &str, r#ref: &str| {
        issuer.sign(&with(
            gitlab_claims(),
            json!({"sub": format!("project_path:{project}:ref_type:branch:ref:{ref}"),
                   "project_path": project, "ref": r#ref}),
        ))
    };
    set_oidc_auth(
        &s,
        &id,
        cfg("project_path:group/*:ref_type:branch:ref:main"),
    )
    .await;
    token(&s, "deploy", &job("group/app", "main")).await;
    refused(&s, "deploy", &job("group/sub/app", "main"), "subject (sub)").await;
    refused(
        &s,
        "deploy",
        &job("group/app", "feature/main"),
        "subject (sub)",
    )
    .await;
    refused(&s, "deploy", &job("other/app", "main"), "subject (sub)").await;

    set_oidc_auth(
        &s,
        &id,
        cfg("project_path:group/**:ref_type:branch:ref:main"),
    )
    .await;
    token(&s, "deploy", &job("group/sub/app", "main")).await;
    token(&s, "deploy", &job("group/app", "main")).await;
    refused(&s, "deploy", &job("groupie/app", "main"), "subject (sub)").await;
    refused(&s, "deploy", &job("group/sub/app", "dev"), "subject (sub)").await;
}

/// On GitHub Actions, `refs/heads/*` is a branch push of a top-level
/// branch: not a pull request, not `feature/x`; and `repo:octo-org/*` does
/// not take in the org's pull-request jobs (`*` never crosses `:`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_pull_request_does_not_match_a_branch_pattern() {
    let issuer = Issuer::start(Algorithm::ES256, false, false).await;
    let s = Server::start(Backend::Sqlite).await;
    let id = add_identity(&s, "gh-deploy").await;
    let cfg = |subject: &str| {
        json!({"discoveryURL": issuer.discovery_url, "issuer": GITHUB_ISS,
               "audiences": [INFRA_AUD], "subject": subject})
    };
    let job = |sub: &str| issuer.sign(&github_claims(sub));
    let main = "repo:octo-org/octo-repo:ref:refs/heads/main";
    let pr = "repo:octo-org/octo-repo:pull_request";
    let nested = "repo:octo-org/octo-repo:ref:refs/heads/feature/x";

    set_oidc_auth(&s, &id, cfg("repo:octo-org/octo-repo:ref:refs/heads/*")).await;
    token(&s, "gh-deploy", &job(main)).await;
    refused(&s, "gh-deploy", &job(pr), "subject (sub)").await;
    refused(&s, "gh-deploy", &job(nested), "subject (sub)").await;
    refused(
        &s,
        "gh-deploy",
        &job("repo:octo-org/octo-repo:environment:prod"),
        "subject (sub)",
    )
    .await;

    set_oidc_auth(&s, &id, cfg("repo:octo-org/*")).await;
    refused(&s, "gh-deploy", &job(pr), "subject (sub)").await;
    refused(&s, "gh-deploy", &job(main), "subject (sub)").await;

    set_oidc_auth(&s, &id, cfg("repo:octo-org/octo-repo:ref:refs/heads/**")).await;
    token(&s, "gh-deploy", &job(nested)).await;
    refused(&s, "gh-deploy", &job(pr), "subject (sub)").await;

    set_oidc_auth(&s, &id, cfg("repo:octo-org/octo-repo:environment:prod")).await;
    token(
        &s,
        "gh-deploy",
        &job("repo:octo-org/octo-repo:environment:prod"),
    )
    .await;
    refused(&s, "gh-deploy", &job(main), "subject (sub)").await;
}

// ------------------------------------------------------------------ lifetime

both_backends!(tokens_renew_up_to_max_ttl_count_uses_and_revoke);

async fn tokens_renew_up_to_max_ttl_count_uses_and_revoke(b: Backend) {
    let issuer = Issuer::start(Algorithm::ES256, false, false).await;
    let s = Server::start(b).await;
    let id = add_identity(&s, "job").await;
    let cfg = |ttl: u64, max: u64, uses: u64| {
        json!({"discoveryURL": issuer.discovery_url, "issuer": GITLAB_ISS,
               "subject": GITLAB_SUB, "audiences": [INFRA_AUD], "accessTokenTTL": ttl,
               "accessTokenMaxTTL": max, "accessTokenMaxUses": uses})
    };
    let renew = |t: &str| {
        s.call(
            "POST",
            "/api/v1/auth/token/renew",
            None,
            Some(json!({"accessToken": t})),
        )
    };

    // Uses: three requests, then the token stops working.
    set_oidc_auth(&s, &id, cfg(3600, 7200, 3)).await;
    let key = token(&s, "job", &issuer.sign(&gitlab_claims())).await;
    for _ in 0..3 {
        let (status, v) = s.call("GET", "/api/grants", Some(&key), None).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("used up its 3 uses"),
        "{v}"
    );
    let (status, v) = renew(&key).await;
    assert_eq!(status, 401, "{v}");
    // A fresh login starts a fresh count.
    let key = token(&s, "job", &issuer.sign(&gitlab_claims())).await;
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200);

    // TTL 10 s, max TTL 25 s: renewals keep it alive past its TTL, but not
    // past login + 25 s; then renewing says to log in again. Time passes on
    // the server's clock, 5 s a round (whole seconds: a round's own real
    // time may add one more, still well within the TTL).
    set_oidc_auth(&s, &id, cfg(10, 25, 0)).await;
    let (status, v) = login(&s, "job", &issuer.sign(&gitlab_claims())).await;
    assert_eq!(status, 200, "{v}");
    let t0 = s.clock.now();
    let key = v["accessToken"].as_str().unwrap().to_string();
    assert_eq!(v["accessTokenMaxTTL"], 25);
    assert!(v["expiresIn"].as_i64().unwrap() <= 10, "{v}");
    let mut alive_at = t0;
    let ended = loop {
        assert!(
            s.clock.now() <= t0 + 28,
            "renewals went on past the max TTL"
        );
        let (status, v) = renew(&key).await;
        if status != 200 {
            break v;
        }
        assert_eq!(v["accessToken"], key.as_str());
        assert!(v["expiresIn"].as_i64().unwrap() <= 10, "{v}");
        let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
        if status == 200 {
            alive_at = s.clock.now();
        }
        s.advance_clock(5);
    };
    assert!(alive_at >= t0 + 11, "renewed past its 10 s TTL");
    let msg = ended["message"].as_str().unwrap();
    assert!(
        msg.contains("max TTL") && msg.contains("log in again"),
        "{msg}"
    );
    assert!(s.clock.now() <= t0 + 27, "ended by the max TTL");
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401);

    // Unrenewed, a token just expires after its TTL.
    set_oidc_auth(&s, &id, cfg(1, 60, 0)).await;
    let key = token(&s, "job", &issuer.sign(&gitlab_claims())).await;
    s.advance_clock(2);
    let (status, v) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401);
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    let (status, v) = renew(&key).await;
    assert_eq!(status, 401);
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");

    // Revoke: it stops working at once.
    set_oidc_auth(&s, &id, cfg(3600, 7200, 0)).await;
    let key = token(&s, "job", &issuer.sign(&gitlab_claims())).await;
    let revoke = json!({"accessToken": key});
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/auth/token/revoke",
            None,
            Some(revoke.clone()),
        )
        .await;
    assert_eq!(status, 204, "{v}");
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401);
    let (status, _) = s
        .call("POST", "/api/v1/auth/token/revoke", None, Some(revoke))
        .await;
    assert_eq!(status, 401);

    // A machine token is used as it is: it buys no longer-lived key.
    let key = token(&s, "job", &issuer.sign(&gitlab_claims())).await;
    let (status, v) = s
        .call("POST", "/api/login", None, Some(json!({"accessKey": key})))
        .await;
    assert_eq!(status, 401);
    assert!(
        v["message"].as_str().unwrap().contains("cannot be traded"),
        "{v}"
    );
    let (status, v) = s
        .call(
            "POST",
            "/api/access-keys",
            Some(&key),
            Some(json!({"expiry": "87600h"})),
        )
        .await;
    assert_eq!(status, 403, "{v}");
    // Renew and revoke take machine tokens only.
    let (status, v) = renew(ADMIN_KEY).await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = renew("Nope012345.NopeSecret0123456789abc").await;
    assert_eq!(status, 401);
    // Normal keys keep working as before.
    let (status, _) = s.call("GET", "/api/users", Some(ADMIN_KEY), None).await;
    assert_eq!(status, 200);
}

// ------------------------------------------------------------------ hostile traffic, curl

/// `POST /api/v1/auth/oidc-auth/login` from `client`, as JSON, with the
/// version header; status, Retry-After and body.
async fn login_from(
    s: &Server,
    client: &reqwest::Client,
    identity: &str,
    jwt: &str,
) -> (u16, Option<u64>, Value) {
    let resp = client
        .post(format!("{}/api/v1/auth/oidc-auth/login", s.url))
        .header("Infra-Version", common::VERSION)
        .json(&json!({"identityId": identity, "jwt": jwt}))
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

/// Failed machine-identity logins were only audited: a flood of junk JWTs
/// ran the server's checks (and filled the audit log) without end. Now the
/// flooding address waits after 20 failures per identity (60 in all), and
/// the pipeline at another address logs in as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_jwts_is_held_back_without_stopping_the_pipeline() {
    let issuer = Issuer::start(Algorithm::ES256, false, false).await;
    let s = Server::start(Backend::Sqlite).await;
    let id = add_identity(&s, "deploy").await;
    set_oidc_auth(
        &s,
        &id,
        json!({"discoveryURL": issuer.discovery_url, "issuer": GITLAB_ISS,
               "subject": GITLAB_SUB, "audiences": [INFRA_AUD]}),
    )
    .await;
    let attacker = client_from(&s, "127.0.0.2");
    let forged = Key::new(Algorithm::ES256, "key-1").sign(&gitlab_claims());
    for i in 0..21 {
        let jwt = if i % 2 == 0 { "not.a.jwt" } else { &forged };
        let (status, retry, v) = login_from(&s, &attacker, "deploy", jwt).await;
        if i < 20 {
            assert_eq!(status, 401, "{i}: {v}");
        } else {
            assert_eq!(status, 429, "{i}: {v}");
            let secs = retry.expect("Retry-After");
            let msg = v["message"].as_str().unwrap();
            assert!(
                msg.contains("too many failed logins as identity \"deploy\" from your address")
                    && msg.contains(&format!("try again in {secs} second")),
                "{msg}"
            );
        }
    }
    // The real pipeline, elsewhere, is not held back by the flood.
    let (status, _, v) = login_from(&s, &s.client, "deploy", &issuer.sign(&gitlab_claims())).await;
    assert_eq!(status, 200, "{v}");
    // Nor is the flooding address for another identity, until its own
    // limit: 60 failures, whatever identity they name.
    let mut limited_at = None;
    for i in 0..70 {
        let (status, _, v) = login_from(&s, &attacker, &format!("nobody-{i}"), "x.y.z").await;
        if status == 429 {
            let msg = v["message"].as_str().unwrap();
            assert!(
                msg.contains("too many failed logins from your address"),
                "{msg}"
            );
            limited_at = Some(i);
            break;
        }
        assert_eq!(status, 401, "{i}: {v}");
    }
    // 20 failures as deploy, 40 more as nobody-*.
    assert_eq!(limited_at, Some(40));
    // One audit entry per identity refused, with its count, not one per try.
    let audit = s
        .ok(
            "GET",
            "/api/audit?action=identity.login&limit=1000",
            None,
            200,
        )
        .await;
    let deploy: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "deploy" && e["result"] == "failure")
        .collect();
    let total: u64 = deploy.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 20, "{deploy:?}");
    assert_eq!(
        deploy.len(),
        2,
        "one entry per distinct refusal: {deploy:?}"
    );
}

/// CI scripts call the Infisical-shaped endpoints with plain curl, as
/// Infisical's documentation shows: no `Infra-Version` header (the path
/// carries the version), and a form body. Both were refused with a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_scripts_call_the_v1_endpoints_with_plain_curl() {
    let issuer = Issuer::start(Algorithm::ES256, false, false).await;
    let s = Server::start(Backend::Sqlite).await;
    let id = add_identity(&s, "deploy").await;
    set_oidc_auth(
        &s,
        &id,
        json!({"discoveryURL": issuer.discovery_url, "issuer": GITLAB_ISS,
               "subject": GITLAB_SUB, "audiences": [INFRA_AUD]}),
    )
    .await;
    let url = |path: &str| format!("{}/api/v1/auth/{path}", s.url);
    let jwt = issuer.sign(&gitlab_claims());

    // curl itself: --data-urlencode sends a form.
    let cacert = s.data_dir.join("tls.crt");
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail-with-body", "--cacert"])
        .arg(&cacert)
        .args(["--request", "POST", &url("oidc-auth/login")])
        .args(["--data-urlencode", "identityId=deploy"])
        .args(["--data-urlencode", &format!("jwt={jwt}")])
        .output()
        .expect("curl is installed");
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{body} {}", stderr(&out));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tokenType"], "Bearer");
    let key = v["accessToken"].as_str().unwrap().to_string();
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200);

    // The same without curl: a form, and JSON, neither with the header.
    let c = &s.client;
    let resp = c
        .post(url("oidc-auth/login"))
        .form(&[("identityId", "deploy"), ("jwt", jwt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = c
        .post(url("oidc-auth/login"))
        .json(&json!({"identityId": "deploy", "jwt": jwt}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = c
        .post(url("token/renew"))
        .form(&[("accessToken", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["accessToken"], key.as_str());
    let resp = c
        .post(url("token/revoke"))
        .form(&[("accessToken", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401, "revoked");

    // A form's mistakes are named like JSON's.
    let resp = c
        .post(url("oidc-auth/login"))
        .form(&[("identityId", "deploy")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["fieldErrors"][0]["fieldName"], "jwt", "{v}");
    let resp = c
        .post(url("token/renew"))
        .header("Content-Type", "text/plain")
        .body("accessToken=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    // The rest of the API still wants the version header.
    let resp = c
        .post(format!("{}/api/login", s.url))
        .json(&json!({"accessKey": ADMIN_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("Infra-Version"),
        "{v}"
    );
}

// ------------------------------------------------------------------ SPIRE, HTTPS, trusted IPs

const SPIFFE_ID: &str = "spiffe://example.org/workload/api-server";

fn svid_claims(sub: &str) -> Value {
    let t = now();
    json!({"iss": "https://oidc.spire.example", "sub": sub, "aud": ["infra"],
           "iat": t, "exp": t + 300})
}

/// An HTTP client whose connections come from `local` (any 127.0.0.0/8
/// address reaches the server on 127.0.0.1).
fn client_from(s: &Server, local: &str) -> reqwest::Client {
    let pem = std::fs::read(s.data_dir.join("tls.crt")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(local.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spire_svids_over_https_with_a_private_ca_and_trusted_ips() {
    let issuer = Issuer::start(Algorithm::ES384, true, true).await;
    assert!(
        issuer
            .discovery_url
            .ends_with("/.well-known/openid_configuration")
    );
    let s = Server::start(Backend::Sqlite).await;
    let id = add_identity(&s, "api-server").await;
    let ca = issuer.ca_pem.clone().unwrap();
    let cfg = |ca: Option<&str>, ips: Value| {
        let mut v = json!({"discoveryURL": issuer.discovery_url,
                           "issuer": "https://oidc.spire.example",
                           "subject": "spiffe://example.org/workload/*", "audiences": ["infra"],
                           "accessTokenTrustedIPs": ips});
        if let Some(ca) = ca {
            v["caCert"] = json!(ca);
        }
        v
    };
    let svid = issuer.sign(&svid_claims(SPIFFE_ID));

    // The issuer's CA is not trusted by default, nor is another CA.
    set_oidc_auth(&s, &id, cfg(None, json!(["0.0.0.0/0", "::/0"]))).await;
    refused(
        &s,
        "api-server",
        &svid,
        "cannot fetch the discovery document",
    )
    .await;
    let (other_ca, _, _) = common::private_ca();
    set_oidc_auth(&s, &id, cfg(Some(&other_ca), json!(["0.0.0.0/0", "::/0"]))).await;
    refused(&s, "api-server", &svid, "certificate").await;
    let (status, v) = s
        .admin(
            "PUT",
            &format!("/api/identities/{id}/oidc-auth"),
            Some(cfg(Some("not a certificate"), json!(["0.0.0.0/0"]))),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["fieldErrors"][0]["fieldName"], "caCert");

    // With the right CA: the workload's SPIFFE ID matches the glob.
    let shown = set_oidc_auth(&s, &id, cfg(Some(&ca), json!(["0.0.0.0/0", "::/0"]))).await;
    assert_eq!(shown["caCert"], ca.as_str());
    token(&s, "api-server", &svid).await;
    refused(
        &s,
        "api-server",
        &issuer.sign(&svid_claims("spiffe://other.org/workload/api-server")),
        "subject (sub)",
    )
    .await;
    refused(
        &s,
        "api-server",
        &issuer.sign(&with(svid_claims(SPIFFE_ID), json!({"aud": ["vault"]}))),
        "audiences (aud)",
    )
    .await;

    // Trusted IPs: the test calls from 127.0.0.1, which 10.0.0.0/8 is not.
    set_oidc_auth(&s, &id, cfg(Some(&ca), json!(["10.0.0.0/8"]))).await;
    refused(
        &s,
        "api-server",
        &svid,
        "not among the identity's trusted IPs",
    )
    .await;

    // Checked on every use, not only at login: a token bound to 127.0.0.1
    // does not work from 127.0.0.2.
    set_oidc_auth(&s, &id, cfg(Some(&ca), json!(["127.0.0.1"]))).await;
    let key = token(&s, "api-server", &svid).await;
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200);
    let elsewhere = client_from(&s, "127.0.0.2");
    let (status, v) =
        common::call(&elsewhere, &s.url, "GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("127.0.0.2"), "{v}");
    let (status, _) = common::call(
        &elsewhere,
        &s.url,
        "POST",
        "/api/v1/auth/oidc-auth/login",
        None,
        Some(json!({"identityId": "api-server", "jwt": svid})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = common::call(
        &elsewhere,
        &s.url,
        "POST",
        "/api/v1/auth/token/renew",
        None,
        Some(json!({"accessToken": key})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200, "still fine from the trusted address");
}

// ------------------------------------------------------------------ a real issuer

/// Signs `login` in at the provider (code flow with PKCE, as a workload's
/// platform would have) and returns the RS256 ID token it issued.
async fn id_token_from(idp: &OidcProvider, login: &str) -> String {
    use sha2::Digest;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // PKCE verifiers are 43 to 128 characters.
    let verifier: String = (0..5).map(|_| common::random_suffix()).collect();
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let redirect = "http://localhost:8301";
    let mut auth = url::Url::parse(doc["authorization_endpoint"].as_str().unwrap()).unwrap();
    auth.query_pairs_mut()
        .append_pair("client_id", "infra-test")
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid email")
        .append_pair("state", "state-123")
        .append_pair("nonce", "nonce-123")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let back = Browser::new().sign_in(auth.as_str(), login, redirect).await;
    let code = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    let resp: Value = http
        .post(doc["token_endpoint"].as_str().unwrap())
        .basic_auth("infra-test", Some("infra-test-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token: {resp}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_of_a_real_openid_provider() {
    let idp = OidcProvider::start();
    let s = Server::start(Backend::Sqlite).await;
    let id = add_identity(&s, "runner").await;
    set_oidc_auth(
        &s,
        &id,
        json!({"discoveryURL": idp.issuer, "issuer": idp.issuer, "subject": "ci-runner",
               "audiences": ["infra-test"], "claims": {"email": "*@example.com"}}),
    )
    .await;
    let jwt = id_token_from(&idp, "ci-runner").await;
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    let key = token(&s, "runner", &jwt).await;
    let (status, _) = s.call("GET", "/api/grants", Some(&key), None).await;
    assert_eq!(status, 200);
    // Someone else signed in at the same provider is not this identity.
    let other = id_token_from(&idp, "intruder").await;
    refused(&s, "runner", &other, "subject (sub)").await;
    // Nor is a token for another client of the provider.
    set_oidc_auth(
        &s,
        &id,
        json!({"discoveryURL": idp.issuer, "issuer": idp.issuer, "subject": "ci-runner",
               "audiences": ["someone-else"]}),
    )
    .await;
    refused(&s, "runner", &jwt, "audiences (aud)").await;
}

// ------------------------------------------------------------------ the pipeline

/// A stand-in for a cluster behind a connector: accepts a bearer token
/// that the infra server signed for `aud` = prod, and answers with its
/// claims.
struct Cluster {
    url: String,
    ca_pem: String,
    handle: axum_server::Handle<std::net::SocketAddr>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

#[derive(Clone)]
struct ClusterState {
    server: String,
    http: reqwest::Client,
}

async fn serve_cluster(
    axum::extract::State(st): axum::extract::State<ClusterState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let unauthorized = || {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "reason": "Unauthorized", "code": 401}),
            ),
        )
            .into_response()
    };
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return unauthorized();
    };
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return unauthorized();
    };
    let set: JwkSet = st
        .http
        .get(format!("{}/.well-known/jwks.json", st.server))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let Some(jwk) = header.kid.as_deref().and_then(|k| set.find(k)) else {
        return unauthorized();
    };
    let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
    v.set_audience(&["prod"]);
    v.set_issuer(&[&st.server]);
    match jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    ) {
        Ok(data) => axum::Json(json!({"kind": "Whoami", "claims": data.claims})).into_response(),
        Err(_) => unauthorized(),
    }
}

impl Cluster {
    async fn start(s: &Server) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (ca_pem, cert, key) = common::private_ca();
        let app = axum::Router::new()
            .fallback(serve_cluster)
            .with_state(ClusterState {
                server: s.url.clone(),
                http: s.client.clone(),
            });
        let config =
            axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
                .await
                .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, config)
            .unwrap()
            .handle(handle.clone());
        tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        Cluster {
            url: format!("https://{addr}"),
            ca_pem,
            handle,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_logs_in_with_its_jwt_and_reaches_the_cluster() {
    let issuer = Issuer::start(Algorithm::ES256, false, false).await;
    let s = Server::start(Backend::Sqlite).await;
    let cluster = Cluster::start(&s).await;
    s.ok(
        "POST",
        "/api/destinations",
        Some(json!({"name": "prod", "url": cluster.url, "ca": cluster.ca_pem})),
        201,
    )
    .await;
    let (host, fp) = (s.host(), s.fingerprint());

    // The admin sets the identity up with the CLI.
    let admin = Machine::new();
    admin.ok(&[
        "login",
        &host,
        "--key",
        ADMIN_KEY,
        "--tls-trusted-fingerprint",
        &fp,
    ]);
    admin.ok(&["identities", "add", "deploy"]);
    let set = |extra: &[&str]| {
        let mut args = vec![
            "identities",
            "oidc-auth",
            "set",
            "deploy",
            "--discovery-url",
            &issuer.discovery_url,
            "--issuer",
            GITLAB_ISS,
            "--subject",
            "project_path:group/project:ref_type:branch:ref:*",
            "--audiences",
            INFRA_AUD,
            "--claims",
            "project_path=group/project,ref_protected=true",
        ];
        args.extend_from_slice(extra);
        admin.run(&args)
    };
    let out = set(&["--access-token-ttl", "3h", "--access-token-max-ttl", "2h"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("--access-token-ttl (3h) must not exceed --access-token-max-ttl (2h)"),
        "{}",
        stderr(&out)
    );
    let out = set(&["--access-token-trusted-ips", "10.0.0.0/99"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--access-token-trusted-ips:"),
        "{}",
        stderr(&out)
    );
    let out = set(&["--access-token-ttl", "1h", "--access-token-max-uses", "100"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: Value = serde_json::from_str(&admin.ok(&[
        "identities",
        "oidc-auth",
        "show",
        "deploy",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(shown["accessTokenTTL"], 3600);
    assert_eq!(shown["accessTokenMaxUses"], 100);
    assert_eq!(
        shown["claims"],
        json!({"project_path": "group/project", "ref_protected": "true"})
    );
    let table = admin.ok(&["identities", "oidc-auth", "show", "deploy"]);
    assert!(table.contains(GITLAB_ISS), "{table}");
    admin.ok(&[
        "grants",
        "add",
        "prod",
        "--identity",
        "deploy",
        "--role",
        "edit",
    ]);
    let list = admin.ok(&["identities", "list"]);
    assert!(list.starts_with("deploy\t"), "{list}");

    // The job: its JWT from the environment, the token alone on stdout.
    let jwt = issuer.sign(&gitlab_claims());
    let job = Machine::new();
    let out = job
        .cmd()
        .args([
            "login",
            &host,
            "--tls-trusted-fingerprint",
            &fp,
            "--method=oidc-auth",
            "--machine-identity-id",
            "deploy",
            "--silent",
            "--plain",
        ])
        .env("INFRA_OIDC_JWT", &jwt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "--silent prints nothing on stderr");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.trim_end_matches('\n');
    assert_eq!(stdout, format!("{key}\n"), "only the token: {stdout:?}");
    assert!(
        !job.config_files()
            .iter()
            .any(|(_, c)| { String::from_utf8_lossy(c).contains(key) }),
        "--plain keeps the token nowhere"
    );

    // export INFRA_ACCESS_KEY=$(infra login …); infra grants list
    let env = |c: &mut std::process::Command| {
        c.env("INFRA_ACCESS_KEY", key).env("INFRA_SERVER", &host);
    };
    let mut cmd = job.cmd();
    env(&mut cmd);
    let out = cmd.args(["grants", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let grants = String::from_utf8(out.stdout).unwrap();
    assert_eq!(grants.trim(), "identity:deploy\tedit\tprod", "{grants}");

    // infra tokens create (kubectl's exec plugin) with that key.
    let mut cmd = job.cmd();
    env(&mut cmd);
    let out = cmd
        .args(["tokens", "create", "--destination", "prod"])
        .env("INFRA_CACHE_DIR", job.home().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let cred: Value = serde_json::from_slice(&out.stdout).unwrap();
    let claims = claims_of(cred["status"]["token"].as_str().unwrap());
    let identity = s.ok("GET", "/api/identities?name=deploy", None, 200).await["items"][0].clone();
    assert_eq!(claims["sub"], identity["id"]);
    assert_eq!(claims["name"], "deploy");
    assert_eq!(claims["aud"], "prod");
    assert_eq!(claims["groups"], json!([]));

    // Without --plain the token is kept like a person's key, and the
    // kubeconfig gets the identity's clusters: kubectl works.
    let job2 = Machine::new();
    let out = job2
        .cmd()
        .args([
            "login",
            &host,
            "--tls-trusted-fingerprint",
            &fp,
            "--method",
            "oidc-auth",
            "--machine-identity-id",
            identity["id"].as_str().unwrap(),
            "--oidc-jwt",
            &jwt,
        ])
        .env("INFRA_NO_KEYRING", "1")
        .env("INFRA_CACHE_DIR", job2.home().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("Logged in to") && stderr(&out).contains("machine identity deploy"),
        "{}",
        stderr(&out)
    );
    let grants = job2.ok(&["grants", "list"]);
    assert!(grants.contains("prod"), "{grants}");
    let out = std::process::Command::new("kubectl")
        .args([
            "--context",
            "infra:prod",
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods",
        ])
        .env("HOME", job2.home())
        .env("INFRA_HOME", job2.infra_home())
        .env("XDG_CONFIG_HOME", job2.home().join(".config"))
        .env("KUBECONFIG", job2.home().join(".kube/config"))
        .env("INFRA_NO_KEYRING", "1")
        .env("INFRA_CACHE_DIR", job2.home().join("cache"))
        .env_remove("INFRA_ACCESS_KEY")
        .env_remove("INFRA_SERVER")
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "kubectl: {}", stderr(&out));
    let whoami: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(whoami["claims"]["sub"], identity["id"]);
    assert_eq!(whoami["claims"]["name"], "deploy");

    // A refused JWT: exit 4 and the reason.
    let out = job
        .cmd()
        .args([
            "login",
            &host,
            "--tls-trusted-fingerprint",
            &fp,
            "--method=oidc-auth",
            "--machine-identity-id",
            "deploy",
            "--plain",
        ])
        .env(
            "INFRA_OIDC_JWT",
            issuer.sign(&with(gitlab_claims(), json!({"ref_protected": "false"}))),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("claim ref_protected"),
        "{}",
        stderr(&out)
    );
    // Missing the JWT: a usage error.
    let out = job
        .cmd()
        .args([
            "login",
            &host,
            "--method=oidc-auth",
            "--machine-identity-id",
            "deploy",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("INFRA_OIDC_JWT"), "{}", stderr(&out));

    // The admin removes the identity: its tokens stop working.
    admin.ok(&["identities", "remove", "deploy"]);
    let (status, _) = s.call("GET", "/api/grants", Some(key), None).await;
    assert_eq!(status, 401);
    admin.ok(&["identities", "remove", "deploy", "--force"]);
}
