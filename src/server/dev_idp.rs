//! The development-mode OpenID provider, served under `/oidc` by
//! `infra server --dev` so a newcomer can see the whole product work with no
//! identity provider of their own.
//!
//! It is a small but standards-following provider: discovery, JWKS, an
//! authorization endpoint with a sign-in form that accepts any user name
//! (and optional groups), a token endpoint (authorization code with PKCE
//! S256 required, refresh tokens), and UserInfo. ID tokens are ES256. Every
//! piece of its state, the signing key and client secret included, lives in
//! memory only: a restart means signing in again. It has no security on
//! purpose, and the server says so loudly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::web::html_escape;

const CODE_TTL: Duration = Duration::from_secs(120);
const PENDING_TTL: Duration = Duration::from_secs(600);
const ACCESS_TTL: Duration = Duration::from_secs(3600);
const REFRESH_TTL: Duration = Duration::from_secs(30 * 86_400);
pub const SCOPES: [&str; 5] = ["openid", "email", "profile", "groups", "offline_access"];

#[derive(Debug, Clone)]
struct DevUser {
    name: String,
    groups: Vec<String>,
}

impl DevUser {
    fn email(&self) -> String {
        if self.name.contains('@') {
            self.name.clone()
        } else {
            format!("{}@example.com", self.name)
        }
    }
}

#[derive(Debug, Clone)]
struct AuthRequest {
    redirect_uri: String,
    scope: Vec<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    at: Instant,
}

#[derive(Debug, Clone)]
struct Grant {
    user: DevUser,
    scope: Vec<String>,
    expires: Instant,
}

#[derive(Default)]
struct Stores {
    pending: HashMap<String, AuthRequest>,
    codes: HashMap<String, (AuthRequest, DevUser, Instant)>,
    access: HashMap<String, Grant>,
    refresh: HashMap<String, Grant>,
}

/// The provider: its identity, keys, and in-memory grants.
pub struct DevIdp {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The server's own web callback, allowed as a redirect URI.
    callback_url: Option<String>,
    kid: String,
    key: EncodingKey,
    jwk: Value,
    stores: Mutex<Stores>,
}

fn random(n: usize) -> String {
    crate::web::random_string_b64(n)
}

impl DevIdp {
    /// A fresh provider at `public_url` + `/oidc`.
    pub fn new(public_url: &str, callback_url: Option<String>) -> anyhow::Result<DevIdp> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate the dev provider's key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("cannot load the dev provider's key"))?;
        let public = pair.public_key().as_ref();
        let kid = format!("dev-{}", &random(6));
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        });
        Ok(DevIdp {
            issuer: format!("{}/oidc", public_url.trim_end_matches('/')),
            client_id: format!("infra-dev-{}", random(6)),
            client_secret: random(24),
            callback_url,
            kid,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
            stores: Mutex::new(Stores::default()),
        })
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    fn stores(&self) -> std::sync::MutexGuard<'_, Stores> {
        self.stores.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loopback http URIs (any port, RFC 8252) and the server's callback.
    fn redirect_allowed(&self, uri: &str) -> bool {
        if self.callback_url.as_deref() == Some(uri) {
            return true;
        }
        match url::Url::parse(uri) {
            Ok(u) => {
                u.scheme() == "http"
                    && matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
                    && u.fragment().is_none()
            }
            Err(_) => false,
        }
    }

    fn id_token(&self, user: &DevUser, scope: &[String], nonce: Option<&str>) -> String {
        let now = crate::server::store::now();
        let mut claims = json!({
            "iss": self.issuer, "sub": user.name, "aud": self.client_id,
            "iat": now, "exp": now + ACCESS_TTL.as_secs() as i64, "auth_time": now,
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        add_claims(&mut claims, user, scope);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap_or_default()
    }
}

fn add_claims(claims: &mut Value, user: &DevUser, scope: &[String]) {
    let has = |s: &str| scope.iter().any(|x| x == s);
    if has("email") {
        claims["email"] = json!(user.email());
        claims["email_verified"] = json!(true);
    }
    if has("profile") {
        claims["name"] = json!(user.name);
        claims["preferred_username"] = json!(user.name);
    }
    if has("groups") {
        claims["groups"] = json!(user.groups);
    }
}

/// The routes, to be nested under `/oidc`.
pub fn router(idp: Arc<DevIdp>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize).post(sign_in))
        .route("/token", axum::routing::post(token))
        .route("/userinfo", get(userinfo).post(userinfo))
        .with_state(idp)
}

async fn discovery(State(idp): State<Arc<DevIdp>>) -> Response {
    axum::Json(json!({
        "issuer": idp.issuer,
        "authorization_endpoint": idp.endpoint("/authorize"),
        "token_endpoint": idp.endpoint("/token"),
        "userinfo_endpoint": idp.endpoint("/userinfo"),
        "jwks_uri": idp.endpoint("/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "authorization_response_iss_parameter_supported": true,
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "email",
            "email_verified", "name", "preferred_username", "groups"],
    }))
    .into_response()
}

async fn jwks(State(idp): State<Arc<DevIdp>>) -> Response {
    axum::Json(json!({ "keys": [idp.jwk] })).into_response()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;\
padding:0 1rem;color:#222}.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.6rem .8rem;\
border-radius:4px}label{display:block;margin:1rem 0 .3rem}input{width:100%;padding:.4rem;\
font-size:1rem;box-sizing:border-box}button{margin-top:1.2rem;padding:.5rem 1.2rem;font-size:1rem}";

/// A page; `form_targets`: the CSP sources its form may post (and redirect)
/// to. The sign-in form posts here, and the answer redirects to the
/// client's redirect URI: `form-action` governs both (Chrome checks the
/// redirect too), so it names this origin and exactly that redirect's origin.
fn page(status: StatusCode, body: String, form_targets: &[String]) -> Response {
    let policy = super::pages::csp(STYLE, None, Some(form_targets));
    super::pages::html(
        status,
        crate::web::document(
            "development sign-in",
            STYLE,
            &format!("<main>{body}</main>"),
        ),
        &policy,
        "no-referrer",
        &[],
    )
}

fn error_page(msg: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        format!("<h1>Cannot sign in</h1><p>{}</p>", html_escape(msg)),
        &[],
    )
}

/// Sends an OAuth error back to a redirect URI that has been checked.
fn redirect_error(uri: &str, error: &str, description: &str, state: Option<&str>) -> Response {
    let mut u = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(_) => return error_page(description),
    };
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("error", error)
            .append_pair("error_description", description);
        if let Some(s) = state {
            q.append_pair("state", s);
        }
    }
    Redirect::to(u.as_str()).into_response()
}

async fn authorize(
    State(idp): State<Arc<DevIdp>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if get("client_id") != Some(idp.client_id.as_str()) {
        return error_page("unknown client_id");
    }
    let Some(redirect_uri) = get("redirect_uri").filter(|u| idp.redirect_allowed(u)) else {
        return error_page(
            "redirect_uri is missing or not allowed (http://localhost:PORT, or the server's callback)",
        );
    };
    let state = get("state");
    if get("response_type") != Some("code") {
        return redirect_error(
            redirect_uri,
            "unsupported_response_type",
            "only response_type=code",
            state,
        );
    }
    let scope: Vec<String> = get("scope")
        .unwrap_or("")
        .split_whitespace()
        .filter(|s| SCOPES.contains(s))
        .map(String::from)
        .collect();
    if !scope.iter().any(|s| s == "openid") {
        return redirect_error(
            redirect_uri,
            "invalid_scope",
            "the openid scope is required",
            state,
        );
    }
    let (Some(challenge), Some("S256")) = (get("code_challenge"), get("code_challenge_method"))
    else {
        return redirect_error(
            redirect_uri,
            "invalid_request",
            "PKCE with S256 is required",
            state,
        );
    };
    let rid = random(18);
    {
        let mut st = idp.stores();
        st.pending.retain(|_, r| r.at.elapsed() < PENDING_TTL);
        st.pending.insert(
            rid.clone(),
            AuthRequest {
                redirect_uri: redirect_uri.to_string(),
                scope,
                state: state.map(String::from),
                nonce: get("nonce").map(String::from),
                code_challenge: challenge.to_string(),
                at: Instant::now(),
            },
        );
    }
    // The form posts to this server, whose answer redirects to the client.
    let mut form_targets = vec!["'self'".to_string()];
    if let Ok(u) = url::Url::parse(redirect_uri) {
        form_targets.push(u.origin().ascii_serialization());
    }
    page(
        StatusCode::OK,
        format!(
            "<h1>Sign in to infra</h1><p class=\"warn\"><strong>Development mode.</strong> Any user \
             name works and nothing is verified. Never use this for real access.</p>\
             <form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"rid\" value=\"{rid}\">\
             <label for=\"username\">User name or email</label>\
             <input id=\"username\" name=\"username\" required autofocus autocomplete=\"username\">\
             <label for=\"groups\">Groups (comma-separated, optional; <code>admins</code> makes you an \
             infra admin)</label><input id=\"groups\" name=\"groups\">\
             <button type=\"submit\">Sign in</button></form>",
            action = html_escape(&idp.endpoint("/authorize")),
            rid = html_escape(&rid),
        ),
        &form_targets,
    )
}

#[derive(Deserialize)]
struct SignInForm {
    rid: String,
    username: String,
    #[serde(default)]
    groups: String,
}

async fn sign_in(State(idp): State<Arc<DevIdp>>, Form(f): Form<SignInForm>) -> Response {
    // The request id is single-use and unguessable: it is the form's CSRF token.
    let Some(req) = idp.stores().pending.remove(&f.rid) else {
        return error_page(
            "this sign-in form has expired or was already used; start again from infra login",
        );
    };
    let name = f.username.trim();
    if name.is_empty()
        || name.len() > 256
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return error_page("the user name must be one word without spaces");
    }
    let groups: Vec<String> = f
        .groups
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty() && g.len() <= 256 && !g.chars().any(char::is_control))
        .map(String::from)
        .collect();
    let user = DevUser {
        name: name.to_string(),
        groups,
    };
    let code = random(24);
    let mut u = match url::Url::parse(&req.redirect_uri) {
        Ok(u) => u,
        Err(_) => return error_page("bad redirect_uri"),
    };
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(s) = &req.state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &idp.issuer);
    }
    let mut st = idp.stores();
    st.codes.retain(|_, (_, _, at)| at.elapsed() < CODE_TTL);
    st.codes.insert(code, (req, user, Instant::now()));
    Redirect::to(u.as_str()).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"infra-dev\""),
        );
    }
    resp
}

/// The client's id and secret from HTTP Basic or the form.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = String::from_utf8(STANDARD.decode(basic.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let unescape = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return Some((unescape(id), unescape(secret)));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
    ))
}

async fn token(
    State(idp): State<Arc<DevIdp>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some((id, secret)) = client_credentials(&headers, &form) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication is required",
        );
    };
    let secret_ok = crate::web::ct_eq(&secret, &idp.client_secret);
    if id != idp.client_id || !secret_ok {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            // Single use: the code is gone whether or not the rest checks out.
            let Some((req, user, at)) = idp.stores().codes.remove(&code) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "unknown, expired or used code",
                );
            };
            if at.elapsed() > CODE_TTL {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code expired");
            }
            if form.get("redirect_uri") != Some(&req.redirect_uri) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "redirect_uri does not match",
                );
            }
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if !crate::web::ct_eq(&challenge, &req.code_challenge) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "PKCE verification failed",
                );
            }
            issue(&idp, user, req.scope, req.nonce.as_deref())
        }
        Some("refresh_token") => {
            let rt = form.get("refresh_token").cloned().unwrap_or_default();
            let grant = {
                let mut st = idp.stores();
                match st.refresh.remove(&rt) {
                    Some(g) if g.expires > Instant::now() => g,
                    _ => {
                        return oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "unknown or expired refresh token",
                        );
                    }
                }
            };
            issue(&idp, grant.user, grant.scope, None)
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "use authorization_code or refresh_token",
        ),
    }
}

fn issue(idp: &DevIdp, user: DevUser, scope: Vec<String>, nonce: Option<&str>) -> Response {
    let access = random(32);
    let now = Instant::now();
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_TTL.as_secs(),
        "scope": scope.join(" "),
        "id_token": idp.id_token(&user, &scope, nonce),
    });
    let mut st = idp.stores();
    st.access.retain(|_, g| g.expires > now);
    st.refresh.retain(|_, g| g.expires > now);
    if scope.iter().any(|s| s == "offline_access") {
        let refresh = random(32);
        body["refresh_token"] = json!(refresh);
        st.refresh.insert(
            refresh,
            Grant {
                user: user.clone(),
                scope: scope.clone(),
                expires: now + REFRESH_TTL,
            },
        );
    }
    st.access.insert(
        access,
        Grant {
            user,
            scope,
            expires: now + ACCESS_TTL,
        },
    );
    (
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response()
}

async fn userinfo(State(idp): State<Arc<DevIdp>>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let grant = idp.stores().access.get(bearer).cloned();
    match grant.filter(|g| g.expires > Instant::now()) {
        Some(g) => {
            let mut claims = json!({ "sub": g.user.name });
            add_claims(&mut claims, &g.user, &g.scope);
            axum::Json(claims).into_response()
        }
        None => {
            let mut resp = StatusCode::UNAUTHORIZED.into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            resp
        }
    }
}

/// The start-up warning of development mode.
pub fn warning(idp: &DevIdp) -> String {
    let bar = "!".repeat(72);
    format!(
        "{bar}\n\
         !!  DEVELOPMENT MODE: NO REAL SECURITY\n\
         !!  The embedded identity provider at {issuer}\n\
         !!  signs in ANYONE under ANY name, with any groups they type.\n\
         !!  Sign in with the group `admins` to become an infra admin.\n\
         !!  Never expose this server to a network or use it for real clusters.\n\
         !!  Its client: id {id}  secret {secret}\n\
         {bar}",
        issuer = idp.issuer,
        id = idp.client_id,
        secret = idp.client_secret,
    )
}
