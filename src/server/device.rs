//! Sign-in without a local browser: RFC 8628's device flow, carried out
//! through the server's own web sign-in, so it works with every provider,
//! even those that have no device grant of their own.
//!
//! ```text
//! infra login SERVER --device
//!   POST /api/device {providerID?}      -> deviceCode, userCode, verificationURI, interval
//!   (the person, on any device)
//!   GET  /device[?user_code=]           -> form: the user code (+ CSRF token)
//!   POST /device                        -> 303 to the provider (state, nonce, PKCE S256),
//!                                          redirect URI = the server's callback URL
//!   GET  /login/callback?code&state     -> code exchanged and checked like POST /api/login,
//!                                          303 to /device/confirm
//!   GET  /device/confirm                -> "sign in as NAME on the device showing CODE?"
//!   POST /device/confirm (CSRF)         -> approved or denied
//!   POST /api/device/status {deviceCode} (every `interval` seconds)
//!                                       -> authorization_pending | slow_down | approved (+ a new
//!                                          access key, issued then) | access_denied |
//!                                          expired_token | invalid_grant
//! ```
//!
//! Everything lives in the store (device codes by the SHA-256 of the code,
//! browser sign-ins by the SHA-256 of their `state`), so any replica can
//! serve any step. The pages are plain server-rendered HTML without
//! JavaScript. Forms carry a CSRF token that must equal a `SameSite=Strict`
//! cookie (double submit, compared in constant time); a second, `Lax`
//! cookie binds a provider round trip to the browser that started it, so a
//! sign-in cannot be finished in another browser. Pages refuse framing and
//! show no secret: no access key, device code, authorization code or token.
//!
//! The provider's authorization URL and the random tokens come from
//! `crate::web`, the same code that builds the CLI's own browser sign-in.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::api::{
    DeviceAuthorization, DeviceAuthorizationRequest, DeviceStatus, DeviceStatusRequest,
    DeviceStatusResponse,
};
use crate::server::AppState;
use crate::server::crypto::hash_secret;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, RemoteAddr, parse_json};
use crate::server::ratelimit::{self, PerSource};
use crate::server::routes::auth;
use crate::server::store::{
    self, AuditEntry, DeviceCodeRow, DeviceSigninRow, NewDeviceCode, NewDeviceSignin, PageRequest,
    ProviderRow, StoreError,
};
use crate::web::{html_escape, random_token};

/// Letters a person cannot mistake for one another or for digits, and that
/// spell no words: no vowels, no I/L/O/0/1 look-alikes (RFC 8628 6.1).
pub const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// 20^8, about 2^34.6 codes; with the wrong-code limit below, guessing a
/// live one is hopeless.
pub const USER_CODE_LEN: usize = 8;

/// Device codes one source (a client address, an IPv6 client's /64) may
/// create per minute.
const CREATIONS: PerSource = PerSource {
    what: "device.create",
    max: 10,
    window_ms: 60 * 1000,
};
/// Wrong user codes one source may type per 10 minutes.
const WRONG_CODES: PerSource = PerSource {
    what: "device.wrong_code",
    max: 10,
    window_ms: 10 * 60 * 1000,
};
/// How much each `slow_down` adds to the polling interval (RFC 8628 3.5).
const SLOW_DOWN_STEP_SECS: i64 = 5;
/// How long a browser has from entering the code to answering the question.
const SIGNIN_TTL_SECS: i64 = 10 * 60;
/// Device codes are kept this long after they expire (for the "expired"
/// answers), then removed.
const KEEP_EXPIRED_SECS: i64 = 3600;

const CSRF_COOKIE: &str = "__Host-infra-csrf";
const BROWSER_COOKIE: &str = "__Host-infra-browser";

// ------------------------------------------------------------------ codes

/// A new user code, normalized (no dash).
fn new_user_code() -> String {
    crate::web::random_from(USER_CODE_LEN, USER_CODE_ALPHABET)
}

/// What a person typed (`wdjb mjht`, `WDJB-MJHT`) as the stored form
/// (`WDJBMJHT`), or None when it cannot be a user code.
pub fn normalize_user_code(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (s.len() == USER_CODE_LEN && s.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))).then_some(s)
}

/// `WDJBMJHT` -> `WDJB-MJHT`.
pub fn format_user_code(normalized: &str) -> String {
    if normalized.len() == USER_CODE_LEN && normalized.is_ascii() {
        format!("{}-{}", &normalized[..4], &normalized[4..])
    } else {
        normalized.to_string()
    }
}

fn is_token(v: &str) -> bool {
    (32..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

// ------------------------------------------------------------------ API

#[utoipa::path(post, path = "/api/device", tag = "auth",
    request_body = DeviceAuthorizationRequest,
    responses(
        (status = 201, description = "A new device code and the user code to type at verificationURI",
         body = DeviceAuthorization),
        (status = 400, description = "No provider, an unknown one, or several and none chosen",
         body = crate::api::ErrorResponse),
        (status = 429, description = "Too many device codes from this address; see Retry-After",
         body = crate::api::ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<DeviceAuthorization>)> {
    let req: DeviceAuthorizationRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DeviceAuthorizationRequest::default()
    } else {
        parse_json(&body)?
    };
    let now_ms = store::now_ms();
    if let Some(until) = CREATIONS.held_until(&state.store, &addr).await? {
        return Err(ratelimit::too_many(
            "too many device sign-ins from this address",
            until,
            now_ms,
        ));
    }
    let provider = choose_provider(&state, req.provider_id.as_deref()).await?;

    let now = now_ms / 1000;
    // Old codes go now and then; any replica may do it.
    state
        .store
        .delete_stale_device_codes(now - KEEP_EXPIRED_SECS)
        .await?;
    let ttl = state.device_code_ttl.as_secs().max(1) as i64;
    let interval = state.device_poll_interval.as_secs().max(1) as i64;
    let device_code = random_token();
    let device_code_hash = hash_secret(&device_code);
    let id = store::new_id();
    let mut user_code = new_user_code();
    let mut tries = 0;
    loop {
        let new = NewDeviceCode {
            id: &id,
            device_code_hash: &device_code_hash,
            user_code: &user_code,
            provider_id: &provider.id,
            client_addr: &addr,
            poll_interval: interval,
            created_at_ms: now_ms,
            expires_at: now + ttl,
        };
        match state.store.create_device_code(&new).await {
            Ok(()) => break,
            Err(StoreError::Conflict(_)) if tries < 5 => {
                tries += 1;
                user_code = new_user_code();
            }
            Err(e) => return Err(e.into()),
        }
    }
    CREATIONS.hit(&state.store, &addr).await?;
    // Anyone may do this: one entry per source, provider and hour, counted.
    state
        .store
        .audit_repeated(
            &AuditEntry {
                actor: "anonymous",
                action: "device.create",
                target: "device",
                result: "success",
                remote_addr: &ratelimit::source(&addr),
                detail: &format!("provider {}", provider.name),
            },
            ratelimit::AUDIT_REPEAT_WINDOW_MS,
        )
        .await?;
    let shown = format_user_code(&user_code);
    let verification_uri = format!("{}/device", state.public_url);
    Ok((
        StatusCode::CREATED,
        Json(DeviceAuthorization {
            device_code: device_code.into(),
            verification_uri_complete: format!("{verification_uri}?user_code={shown}"),
            verification_uri,
            user_code: shown,
            expires_in: ttl as u64,
            interval: interval as u64,
        }),
    ))
}

/// The provider asked for, or the only one.
async fn choose_provider(state: &AppState, id: Option<&str>) -> ApiResult<ProviderRow> {
    if let Some(id) = id {
        return match state.store.get_provider(id).await {
            Ok(p) => Ok(p),
            Err(StoreError::NotFound(_)) => Err(ApiError::field(
                "providerID",
                "no such provider; see GET /api/providers",
            )),
            Err(e) => Err(e.into()),
        };
    }
    let mut all = state
        .store
        .list_providers(None, PageRequest::all())
        .await?
        .items;
    match all.len() {
        0 => Err(ApiError::field(
            "providerID",
            "this server has no identity provider to sign in with; log in with \
             `infra login SERVER --key KEY` or `--user NAME`, or ask an admin to add one",
        )),
        1 => Ok(all.remove(0)),
        _ => {
            let names: Vec<String> = all
                .iter()
                .map(|p| format!("{} (id {})", p.name, p.id))
                .collect();
            Err(ApiError::field(
                "providerID",
                format!(
                    "this server has several identity providers; choose one: {}",
                    names.join(", ")
                ),
            ))
        }
    }
}

#[utoipa::path(post, path = "/api/device/status", tag = "auth",
    request_body = DeviceStatusRequest,
    responses(
        (status = 200, description = "Where the sign-in stands: `status` is authorization_pending, \
          slow_down, approved (with accessKey, userID, name, expires), access_denied, \
          expired_token or invalid_grant (unknown or already used)", body = DeviceStatusResponse),
        (status = 400, description = "Malformed request", body = crate::api::ErrorResponse)))]
pub async fn status(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<DeviceStatusRequest>,
) -> ApiResult<Json<DeviceStatusResponse>> {
    let default_interval = state.device_poll_interval.as_secs().max(1);
    let answer = |status, message: &str, interval: u64| DeviceStatusResponse {
        status,
        message: message.to_string(),
        interval,
        user_id: None,
        name: None,
        access_key: None,
        expires: None,
    };
    let Some(code) = state
        .store
        .find_device_code_by_hash(&hash_secret(
            secrecy::ExposeSecret::expose_secret(&req.device_code).trim(),
        ))
        .await?
    else {
        return Ok(Json(answer(
            DeviceStatus::InvalidGrant,
            "this device code is not known (or expired long ago); run `infra login SERVER \
             --device` again",
            default_interval,
        )));
    };
    let interval = code.poll_interval.max(1) as u64;
    let now_ms = store::now_ms();
    let expired = code.expires_at <= now_ms / 1000;
    match code.status.as_str() {
        "consumed" => {
            return Ok(Json(answer(
                DeviceStatus::InvalidGrant,
                "this device code was already used to sign in; run `infra login SERVER \
                 --device` again",
                interval,
            )));
        }
        "denied" => {
            return Ok(Json(answer(
                DeviceStatus::AccessDenied,
                "the sign-in was denied in the browser",
                interval,
            )));
        }
        _ if expired => {
            return Ok(Json(answer(
                DeviceStatus::ExpiredToken,
                "the code expired before the sign-in was approved",
                interval,
            )));
        }
        "approved" => return approved(&state, &addr, &code, interval).await.map(Json),
        _ => {}
    }
    // Pending. A device that asks sooner than its interval allows must
    // slow down, for this and every later poll. A little slack (a fifth of
    // the interval, at most a second) absorbs clock differences between
    // replicas; a device that waits the interval after each answer never
    // comes closer than the interval.
    let interval_ms = code.poll_interval.max(1) * 1000;
    let slack_ms = (interval_ms / 5).min(1000);
    let too_soon = code.last_poll_ms > 0 && now_ms - code.last_poll_ms < interval_ms - slack_ms;
    let next = if too_soon {
        code.poll_interval.max(1) + SLOW_DOWN_STEP_SECS
    } else {
        code.poll_interval.max(1)
    };
    state
        .store
        .record_device_poll(&code.id, now_ms, next)
        .await?;
    if too_soon {
        state
            .store
            .audit(&AuditEntry {
                actor: "anonymous",
                action: "device.poll",
                target: &format!("device:{}", code.id),
                result: "slow_down",
                remote_addr: &addr,
                detail: &format!("polled too often; interval now {next} s"),
            })
            .await?;
        return Ok(Json(answer(
            DeviceStatus::SlowDown,
            &format!("polled too often; wait {next} seconds between polls"),
            next as u64,
        )));
    }
    Ok(Json(answer(
        DeviceStatus::AuthorizationPending,
        "",
        interval,
    )))
}

/// The first poll after approval: the code is used up and the device gets
/// a new access key, made now and shown to nobody else.
async fn approved(
    state: &AppState,
    addr: &str,
    code: &DeviceCodeRow,
    interval: u64,
) -> ApiResult<DeviceStatusResponse> {
    let used = |message: &str| DeviceStatusResponse {
        status: DeviceStatus::InvalidGrant,
        message: message.to_string(),
        interval,
        user_id: None,
        name: None,
        access_key: None,
        expires: None,
    };
    let Some(user_id) = code.user_id.as_deref() else {
        return Err(ApiError::internal("an approved device code without a user"));
    };
    if !state.store.consume_device_code(&code.id).await? {
        return Ok(used(
            "this device code was already used to sign in; run `infra login SERVER --device` again",
        ));
    }
    let user = match state.store.get_user(user_id).await {
        Ok(u) => u,
        Err(StoreError::NotFound(_)) => {
            return Ok(used(
                "the user who approved this sign-in no longer exists; sign in again",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // The key stands on the provider session the person just signed in with.
    let cap = state
        .store
        .get_provider_user(&code.provider_id, &user.id)
        .await?
        .map(|l| l.session_expires_at)
        .filter(|&t| t > 0);
    let login = auth::issue_login_key(
        state,
        "user",
        &user.id,
        &user.name,
        cap,
        Some(&code.provider_id),
    )
    .await?;
    state.store.touch_user(&user.id).await?;
    auth::succeed(state, "device", &user.name, addr).await?;
    Ok(DeviceStatusResponse {
        status: DeviceStatus::Approved,
        message: format!("signed in as {}", user.name),
        interval,
        user_id: Some(login.user_id),
        name: Some(login.name),
        access_key: Some(login.access_key),
        expires: Some(login.expires),
    })
}

// ------------------------------------------------------------------ pages

/// The web sign-in pages, mounted outside `/api` (browsers send no
/// `Infra-Version`).
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/device", get(enter_page).post(submit_code))
        .route("/device/confirm", get(confirm_page).post(confirm))
        .route("/login/callback", get(callback))
}

const STYLE: &str = "\
:root{color-scheme:light}\
body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f3f4f6;color:#1f2937}\
main{max-width:28rem;margin:8vh auto;background:#fff;border:1px solid #e5e7eb;border-radius:12px;\
padding:2rem 2.25rem;box-shadow:0 1px 3px rgba(0,0,0,.06)}\
.brand{font-weight:700;letter-spacing:.08em;color:#6b7280;margin:0 0 1.25rem;font-size:.8rem;text-transform:uppercase}\
h1{font-size:1.35rem;margin:0 0 .75rem}\
p{line-height:1.5;margin:.6rem 0}\
label{display:block;font-weight:600;margin:1.25rem 0 .4rem}\
input[type=text]{box-sizing:border-box;width:100%;font:600 1.6rem ui-monospace,Menlo,Consolas,monospace;\
letter-spacing:.15em;text-align:center;text-transform:uppercase;padding:.6rem;border:2px solid #d1d5db;border-radius:8px}\
input[type=text]:focus{outline:none;border-color:#2563eb}\
.code{font:700 2rem ui-monospace,Menlo,Consolas,monospace;letter-spacing:.15em;text-align:center;\
background:#f3f4f6;border-radius:8px;padding:.75rem;margin:1rem 0}\
.actions{display:flex;gap:.75rem;margin-top:1.5rem}\
button{flex:1;font:600 1rem system-ui,sans-serif;padding:.75rem 1rem;border-radius:8px;border:1px solid transparent;cursor:pointer}\
.primary{background:#2563eb;color:#fff}\
.secondary{background:#fff;color:#1f2937;border-color:#d1d5db}\
.error{background:#fef2f2;border:1px solid #fecaca;color:#991b1b;border-radius:8px;padding:.75rem 1rem}\
.warn{background:#fffbeb;border:1px solid #fde68a;color:#78350f;border-radius:8px;padding:.75rem 1rem;font-size:.95rem}\
.muted{color:#6b7280;font-size:.9rem}\
dl{display:grid;grid-template-columns:auto 1fr;gap:.35rem 1rem;margin:1rem 0}\
dt{color:#6b7280}dd{margin:0;font-weight:600;word-break:break-all}\
a{color:#2563eb}";

/// No scripts, no framing, no base tag, styles only from the hash of ours.
static CSP: LazyLock<String> = LazyLock::new(|| {
    use sha2::{Digest, Sha256};
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; frame-ancestors 'none'; base-uri 'none'"
    )
});

fn document(title: &str, main: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>infra: {t}</title><style>{STYLE}</style></head>\
         <body><main><p class=\"brand\">infra</p>{main}</main></body></html>",
        t = html_escape(title),
    )
}

/// Headers every page and redirect carries.
fn harden(resp: &mut Response, cookies: &[String]) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&CSP) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
}

fn html(status: StatusCode, title: &str, main: &str, cookies: &[String]) -> Response {
    let mut resp = (status, Html(document(title, main))).into_response();
    harden(&mut resp, cookies);
    resp
}

fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    harden(&mut resp, cookies);
    resp
}

/// A page that says what went wrong and how to start again.
fn problem(status: StatusCode, title: &str, message: &str) -> Response {
    let mut resp = html(
        status,
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>\
             <p><a href=\"/device\">Enter a code again</a></p>",
            html_escape(title),
            html_escape(message)
        ),
        &[],
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        // The caller sets the real value; a minute is a safe default.
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    resp
}

/// An API error as a page, keeping its status and Retry-After.
fn error_page(e: ApiError) -> Response {
    let title = match e.status {
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "Sign-in failed",
        StatusCode::BAD_GATEWAY => "Your identity provider could not be reached",
        s if s.is_server_error() => "Something went wrong",
        _ => "Sign-in failed",
    };
    let mut resp = problem(e.status, title, &e.message);
    if let Some(secs) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| is_token(v))
}

/// The CSRF token for a form: the browser's, or a new one with its cookie.
fn csrf_for(headers: &HeaderMap) -> (String, Vec<String>) {
    match cookie(headers, CSRF_COOKIE) {
        Some(t) => (t, Vec::new()),
        None => {
            let t = random_token();
            let c = format!("{CSRF_COOKIE}={t}; Path=/; Secure; HttpOnly; SameSite=Strict");
            (t, vec![c])
        }
    }
}

/// Double submit: the form's token must equal the cookie's.
fn csrf_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    match (cookie(headers, CSRF_COOKIE), form.get("csrf")) {
        (Some(c), Some(f)) => ct_eq(&c, f),
        _ => false,
    }
}

fn csrf_refused() -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form was not sent from this server's own page (its security token is missing or \
         wrong), so nothing was done. Open the page again and retry.",
    )
}

/// Whether this browser is the one that started the sign-in.
fn same_browser(headers: &HeaderMap, signin: &DeviceSigninRow) -> bool {
    cookie(headers, BROWSER_COOKIE).is_some_and(|b| ct_eq(&hash_secret(&b), &signin.binding_hash))
}

fn code_form(headers: &HeaderMap, status: StatusCode, prefill: &str, error: &str) -> Response {
    let (csrf, cookies) = csrf_for(headers);
    let error = if error.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            html_escape(error)
        )
    };
    let main = format!(
        "<h1>Sign in a device</h1>\
         <p>Enter the code that <code>infra login --device</code> shows in your terminal.</p>\
         {error}\
         <form method=\"post\" action=\"/device\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"user_code\">Code</label>\
         <input type=\"text\" id=\"user_code\" name=\"user_code\" value=\"{prefill}\" \
         placeholder=\"XXXX-XXXX\" maxlength=\"20\" autocomplete=\"off\" autocapitalize=\"characters\" \
         spellcheck=\"false\" required autofocus>\
         <div class=\"actions\"><button class=\"primary\" type=\"submit\">Continue</button></div>\
         </form>\
         <p class=\"muted\">Next you sign in with your identity provider. The device gets \
         nothing until you approve it on the following page.</p>",
        prefill = html_escape(prefill),
    );
    html(status, "Sign in a device", &main, &cookies)
}

/// `GET /device[?user_code=]`: asks for the code.
async fn enter_page(headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let prefill = q
        .get("user_code")
        .map(|c| match normalize_user_code(c) {
            Some(n) => format_user_code(&n),
            None => c.chars().take(20).collect(),
        })
        .unwrap_or_default();
    code_form(&headers, StatusCode::OK, &prefill, "")
}

/// `POST /device`: checks the code and sends the browser to the provider.
async fn submit_code(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !csrf_ok(&headers, &form) {
        return csrf_refused();
    }
    let typed = form.get("user_code").map(String::as_str).unwrap_or("");
    match begin_signin(&state, &addr, &headers, typed).await {
        Ok(resp) => resp,
        Err(e) => error_page(e),
    }
}

async fn begin_signin(
    state: &AppState,
    addr: &str,
    headers: &HeaderMap,
    typed: &str,
) -> ApiResult<Response> {
    let now_ms = store::now_ms();
    if let Some(until) = WRONG_CODES.held_until(&state.store, addr).await? {
        let secs = ((until - now_ms + 999) / 1000).max(1) as u64;
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many wrong codes were entered from your address. Try again in {} minutes.",
                secs.div_ceil(60)
            ),
        );
        err.retry_after = Some(secs);
        return Err(err);
    }
    let shown: String = typed.trim().chars().take(20).collect();
    let found = match normalize_user_code(typed) {
        Some(n) => state.store.find_device_code_by_user_code(&n).await?,
        None => None,
    };
    let Some(code) = found else {
        WRONG_CODES.hit(&state.store, addr).await?;
        state
            .store
            .audit_repeated(
                &AuditEntry {
                    actor: "anonymous",
                    action: "device.verify",
                    target: "device",
                    result: "failure",
                    remote_addr: &ratelimit::source(addr),
                    detail: "wrong user code",
                },
                ratelimit::AUDIT_REPEAT_WINDOW_MS,
            )
            .await?;
        return Ok(code_form(
            headers,
            StatusCode::BAD_REQUEST,
            &shown,
            "That code is not right. Check the code in your terminal (8 letters, like BCDF-GHJK) \
             and type it again.",
        ));
    };
    let now = now_ms / 1000;
    if code.expires_at <= now {
        return Ok(code_form(
            headers,
            StatusCode::BAD_REQUEST,
            &shown,
            "This code has expired. Run `infra login --device` again for a new one.",
        ));
    }
    if code.status != "pending" {
        return Ok(code_form(
            headers,
            StatusCode::CONFLICT,
            &shown,
            "This code was already used. Run `infra login --device` again for a new one.",
        ));
    }
    let provider = state.store.get_provider(&code.provider_id).await?;

    let oauth_state = random_token();
    let nonce = random_token();
    let verifier = random_token();
    let mut cookies = Vec::new();
    let browser = cookie(headers, BROWSER_COOKIE).unwrap_or_else(|| {
        let b = random_token();
        cookies.push(format!(
            "{BROWSER_COOKIE}={b}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=86400"
        ));
        b
    });
    let signin_id = store::new_id();
    state
        .store
        .create_device_signin(&NewDeviceSignin {
            id: &signin_id,
            device_code_id: &code.id,
            state_hash: &hash_secret(&oauth_state),
            binding_hash: &hash_secret(&browser),
            nonce_enc: &state.root_key.encrypt(&nonce),
            verifier_enc: &state.root_key.encrypt(&verifier),
            created_at: now,
            expires_at: code.expires_at.min(now + SIGNIN_TTL_SECS),
        })
        .await?;
    state
        .store
        .audit(&AuditEntry {
            actor: "anonymous",
            action: "device.verify",
            target: &format!("device:{}", code.id),
            result: "success",
            remote_addr: addr,
            detail: &format!("to provider {}", provider.name),
        })
        .await?;
    let attempt = crate::web::Attempt {
        state: oauth_state,
        nonce,
        code_verifier: verifier,
        redirect_url: state.callback_url.clone(),
    };
    let scopes: Vec<String> = provider
        .scopes
        .split_whitespace()
        .map(String::from)
        .collect();
    let url = attempt
        .authorization_url(&provider.auth_url, &provider.client_id, &scopes)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(see_other(&url, &cookies))
}

/// `GET /login/callback`: the provider sends the browser back here.
async fn callback(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // A sign-in to the web console shares this callback.
    if let Some(resp) =
        crate::server::console::finish_provider_sign_in(&state, &addr, &headers, &q).await
    {
        return resp;
    }
    match finish_signin(&state, &addr, &headers, &q).await {
        Ok(resp) => resp,
        Err(e) => error_page(e),
    }
}

async fn finish_signin(
    state: &AppState,
    addr: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let unknown = || {
        ApiError::bad_request(
            "This sign-in link is not known, or was already used. Enter the code from your \
             terminal again.",
        )
    };
    let oauth_state = q
        .get("state")
        .filter(|s| !s.is_empty())
        .ok_or_else(unknown)?;
    let signin = state
        .store
        .find_device_signin_by_state(&hash_secret(oauth_state))
        .await?
        .ok_or_else(unknown)?;
    if !same_browser(headers, &signin) {
        return Err(ApiError::forbidden(
            "This sign-in was started in another browser. Enter the code from your terminal \
             again, in this browser.",
        ));
    }
    if signin.expires_at <= store::now() {
        return Err(ApiError::bad_request(
            "This sign-in took too long. Enter the code from your terminal again.",
        ));
    }
    if !state
        .store
        .advance_device_signin(&signin.id, "started", "exchanging", None)
        .await?
    {
        return Err(unknown());
    }
    let fail = |e: ApiError| mark_failed(state, &signin.id, e);
    if let Some(err) = q.get("error") {
        let mut why = err.clone();
        if let Some(d) = q.get("error_description").filter(|d| !d.is_empty()) {
            why.push_str(": ");
            why.push_str(d);
        }
        return Err(fail(ApiError::unauthorized(format!(
            "Your identity provider did not sign you in ({why}). The device was not signed in."
        )))
        .await);
    }
    let Some(auth_code) = q.get("code").filter(|c| !c.is_empty()) else {
        return Err(fail(ApiError::bad_request(
            "The identity provider sent no authorization code back.",
        ))
        .await);
    };
    let code = state.store.get_device_code(&signin.device_code_id).await?;
    if let Err(e) = still_open(&code) {
        return Err(fail(e).await);
    }
    let provider = state.store.get_provider(&code.provider_id).await?;
    let nonce = state.root_key.decrypt(&signin.nonce_enc)?;
    let verifier = state.root_key.decrypt(&signin.verifier_enc)?;
    use secrecy::ExposeSecret;
    let user = match auth::sign_in_with_provider(
        state,
        addr,
        &provider,
        auth_code,
        &state.callback_url,
        verifier.expose_secret(),
        nonce.expose_secret(),
    )
    .await
    {
        Ok(signed_in) => signed_in.user,
        Err(e) => return Err(fail(e).await),
    };
    state
        .store
        .advance_device_signin(&signin.id, "exchanging", "authenticated", Some(&user.id))
        .await?;
    // A fresh URL without the code, so a reload asks nothing of the provider.
    Ok(see_other(
        &format!("{}/device/confirm?attempt={}", state.public_url, signin.id),
        &[],
    ))
}

/// Ends a sign-in that went wrong; passes the error on.
async fn mark_failed(state: &AppState, id: &str, e: ApiError) -> ApiError {
    if let Err(db) = state
        .store
        .advance_device_signin(id, "exchanging", "failed", None)
        .await
    {
        tracing::warn!("cannot mark a device sign-in as failed: {db}");
    }
    e
}

/// A device code that can still be approved, or why not.
fn still_open(code: &DeviceCodeRow) -> ApiResult<()> {
    if code.status != "pending" {
        let what = match code.status.as_str() {
            "denied" => "was denied",
            _ => "was already approved",
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "This code {what}. Run `infra login --device` again if you need a new sign-in."
            ),
        ));
    }
    if code.expires_at <= store::now() {
        return Err(ApiError::bad_request(
            "This code has expired. Run `infra login --device` again for a new one.",
        ));
    }
    Ok(())
}

/// The sign-in of this browser that waits for approve or deny.
async fn waiting_signin(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> ApiResult<(DeviceSigninRow, DeviceCodeRow)> {
    let signin = state.store.get_device_signin(id).await?.ok_or_else(|| {
        ApiError::bad_request("This sign-in is not known. Enter the code from your terminal again.")
    })?;
    if !same_browser(headers, &signin) {
        return Err(ApiError::forbidden(
            "This sign-in was started in another browser. Enter the code from your terminal \
             again, in this browser.",
        ));
    }
    match signin.status.as_str() {
        "authenticated" => {}
        "done" => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "You already answered for this code.",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "This sign-in did not finish. Enter the code from your terminal again.",
            ));
        }
    }
    if signin.expires_at <= store::now() {
        return Err(ApiError::bad_request(
            "This sign-in took too long. Enter the code from your terminal again.",
        ));
    }
    let code = state.store.get_device_code(&signin.device_code_id).await?;
    still_open(&code)?;
    Ok((signin, code))
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 60 => "just now".to_string(),
        s if s < 120 => "a minute ago".to_string(),
        s => format!("{} minutes ago", s / 60),
    }
}

/// `GET /device/confirm?attempt=ID`: approve or deny?
async fn confirm_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let id = q.get("attempt").map(String::as_str).unwrap_or("");
    let result = async {
        let (signin, code) = waiting_signin(&state, &headers, id).await?;
        let user = state
            .store
            .get_user(signin.user_id.as_deref().unwrap_or_default())
            .await?;
        let provider = state.store.get_provider(&code.provider_id).await?;
        Ok::<_, ApiError>((signin, code, user, provider))
    }
    .await;
    let (signin, code, user, provider) = match result {
        Ok(v) => v,
        Err(e) => return error_page(e),
    };
    let now = store::now();
    let (csrf, cookies) = csrf_for(&headers);
    let left = (code.expires_at - now).max(0);
    let main = format!(
        "<h1>Approve this sign-in?</h1>\
         <p>You are signed in as <strong>{user}</strong> through {provider}.</p>\
         <p>A device asks to use infra as you. It shows this code:</p>\
         <p class=\"code\" id=\"user-code\">{code}</p>\
         <dl><dt>Requested from</dt><dd>{from}</dd><dt>Requested</dt><dd>{when}</dd>\
         <dt>Code expires in</dt><dd>{left}</dd></dl>\
         <p class=\"warn\">Approve only if you started <code>infra login --device</code> yourself \
         and your terminal shows the same code. The device will reach everything you can \
         reach.</p>\
         <form method=\"post\" action=\"/device/confirm\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"attempt\" value=\"{attempt}\">\
         <div class=\"actions\">\
         <button class=\"primary\" type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button class=\"secondary\" type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\
         </div></form>",
        user = html_escape(&user.name),
        provider = html_escape(&provider.name),
        code = html_escape(&format_user_code(&code.user_code)),
        from = html_escape(&code.client_addr),
        when = ago(now - code.created_at_ms / 1000),
        left = if left >= 120 {
            format!("{} minutes", left / 60)
        } else {
            format!("{left} seconds")
        },
        attempt = html_escape(&signin.id),
    );
    html(StatusCode::OK, "Approve this sign-in?", &main, &cookies)
}

/// `POST /device/confirm`: the answer.
async fn confirm(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !csrf_ok(&headers, &form) {
        return csrf_refused();
    }
    let approve = match form.get("decision").map(String::as_str) {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "No answer",
                "Choose Approve or Deny.",
            );
        }
    };
    let id = form.get("attempt").map(String::as_str).unwrap_or("");
    match decide(&state, &addr, &headers, id, approve).await {
        Ok(resp) => resp,
        Err(e) => error_page(e),
    }
}

async fn decide(
    state: &AppState,
    addr: &str,
    headers: &HeaderMap,
    id: &str,
    approve: bool,
) -> ApiResult<Response> {
    let (signin, code) = waiting_signin(state, headers, id).await?;
    let user_id = signin.user_id.clone().unwrap_or_default();
    if !state
        .store
        .advance_device_signin(&signin.id, "authenticated", "done", None)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "You already answered for this code.",
        ));
    }
    if !state
        .store
        .decide_device_code(&code.id, approve, &user_id, store::now())
        .await?
    {
        // Someone else answered first, or it just expired.
        let now = state.store.get_device_code(&code.id).await?;
        still_open(&now)?;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "This code was already answered.",
        ));
    }
    let user = state.store.get_user(&user_id).await?;
    state
        .store
        .audit(&AuditEntry {
            actor: &user.name,
            action: if approve {
                "device.approve"
            } else {
                "device.deny"
            },
            target: &format!("device:{}", code.id),
            result: "success",
            remote_addr: addr,
            detail: &format!("requested from {}", code.client_addr),
        })
        .await?;
    let shown = html_escape(&format_user_code(&code.user_code));
    Ok(if approve {
        html(
            StatusCode::OK,
            "Device signed in",
            &format!(
                "<h1>Device signed in</h1>\
                 <p>The device showing <strong>{shown}</strong> is now signed in as \
                 <strong>{}</strong>. It receives its own access key directly from the server.</p>\
                 <p>You can close this tab and go back to your terminal.</p>",
                html_escape(&user.name)
            ),
            &[],
        )
    } else {
        html(
            StatusCode::OK,
            "Sign-in denied",
            &format!(
                "<h1>Sign-in denied</h1>\
                 <p>The device showing <strong>{shown}</strong> was not signed in. It has been \
                 told so.</p><p>You can close this tab.</p>"
            ),
            &[],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_easy_to_type() {
        for _ in 0..200 {
            let c = new_user_code();
            assert_eq!(c.len(), USER_CODE_LEN);
            assert!(c.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)), "{c}");
            assert_eq!(normalize_user_code(&c).as_deref(), Some(c.as_str()));
        }
        // No vowels (no words), no digits (no 0/O, 1/I mix-ups).
        assert!(
            USER_CODE_ALPHABET
                .iter()
                .all(|b| b.is_ascii_uppercase() && !b"AEIOUY".contains(b))
        );
    }

    #[test]
    fn user_codes_compare_without_case_dash_or_spaces() {
        assert_eq!(
            normalize_user_code(" wdjb-mjht ").as_deref(),
            Some("WDJBMJHT")
        );
        assert_eq!(
            normalize_user_code("WDJB MJHT").as_deref(),
            Some("WDJBMJHT")
        );
        assert_eq!(normalize_user_code("wdjbmjht").as_deref(), Some("WDJBMJHT"));
        assert_eq!(normalize_user_code("WDJB-MJH"), None, "too short");
        assert_eq!(normalize_user_code("WDJB-MJHA"), None, "a vowel");
        assert_eq!(normalize_user_code("WDJB-MJH0"), None, "a digit");
        assert_eq!(format_user_code("WDJBMJHT"), "WDJB-MJHT");
    }

    #[test]
    fn csp_refuses_framing_and_scripts() {
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(CSP.contains("default-src 'none'"));
        assert!(!CSP.contains("unsafe"));
    }
}
