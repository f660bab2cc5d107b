//! The web console under `/ui`: for the people who would rather click than
//! type. Server-rendered HTML (maud: the templates are Rust, checked when
//! the server compiles, and escape whatever they print), no JavaScript
//! framework and no build step; every page works without JavaScript, and
//! one small script of ours (allowed by its hash) filters tables as you type.
//!
//! The console has no permission model of its own: each page calls the
//! same `/api` handlers the CLI reaches, as the signed-in person, so the
//! same checks apply and every change lands in the audit log with their
//! name. A session is an access key (issued at sign-in like the CLI's),
//! kept in a `__Host-` cookie (`HttpOnly`, `Secure`, `SameSite=Lax`) that
//! expires with the key; revoking the key ends the session. Every form
//! carries a CSRF token that must match a second cookie.
//!
//! This file holds the plumbing (sessions, CSRF, flash messages, the page
//! layout and its policy); `pages` holds the pages.

mod pages;

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::AppState;
use super::error::ApiError;
use super::extract::Caller;
use super::machine_auth::KeyUse;
use super::pages as web_pages;

pub(crate) const SESSION_COOKIE: &str = "__Host-infra-session";
const CSRF_COOKIE: &str = "__Host-infra-console-csrf";
const FLASH_COOKIE: &str = "__Host-infra-flash";
pub(crate) const SIGNIN_COOKIE: &str = "__Host-infra-console-signin";

/// The console's routes (the provider's answer comes to `/login/callback`,
/// shared with the device flow: see [`pages::finish_provider_sign_in`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(pages::clusters))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui/login",
            get(pages::login_page).post(pages::password_login),
        )
        .route("/ui/login/{provider}", get(pages::provider_sign_in))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/users", get(pages::users).post(pages::add_user))
        .route("/ui/users/{id}/remove", post(pages::remove_user))
        .route("/ui/users/{id}/password", post(pages::reset_password))
        .route("/ui/groups", get(pages::groups).post(pages::add_group))
        .route("/ui/groups/{id}", get(pages::group))
        .route("/ui/groups/{id}/remove", post(pages::remove_group))
        .route("/ui/groups/{id}/members", post(pages::add_member))
        .route(
            "/ui/groups/{id}/members/{user}/remove",
            post(pages::remove_member),
        )
        .route("/ui/grants", get(pages::grants).post(pages::add_grant))
        .route("/ui/grants/{id}/remove", post(pages::remove_grant))
        .route("/ui/destinations", get(pages::destinations))
        .route(
            "/ui/destinations/{id}/remove",
            post(pages::remove_destination),
        )
        .route(
            "/ui/providers",
            get(pages::providers).post(pages::add_provider),
        )
        .route("/ui/providers/{id}", post(pages::edit_provider))
        .route("/ui/providers/{id}/remove", post(pages::remove_provider))
        .route("/ui/keys", get(pages::keys).post(pages::add_key))
        .route("/ui/keys/{id}/remove", post(pages::remove_key))
        .route(
            "/ui/identities",
            get(pages::identities).post(pages::add_identity),
        )
        .route("/ui/identities/{id}", get(pages::identity))
        .route("/ui/identities/{id}/remove", post(pages::remove_identity))
        .route("/ui/identities/{id}/oidc-auth", post(pages::set_oidc_auth))
        .route(
            "/ui/identities/{id}/oidc-auth/remove",
            post(pages::remove_oidc_auth),
        )
        .route("/ui/audit", get(pages::audit))
        .route("/ui/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        // Any other address under /ui: a console page saying so.
        .route(
            "/ui/{*rest}",
            axum::routing::any(|| async { StatusCode::NOT_FOUND }),
        )
}

/// Around every console route: an answer that is not a page (an unknown
/// address, a form sent to a page that takes none, a query or form that
/// cannot be read) becomes a page that says what happened and where to go
/// on, with the console's headers.
pub async fn around(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers().clone();
    let ip = crate::edge::client_ip(req.extensions(), req.headers());
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_page = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_page {
        return resp;
    }
    let said = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let ctx = Ctx::new(&state, &headers, ip).await;
    let (title, text) = match status {
        StatusCode::NOT_FOUND => (
            "Page not found",
            "There is no console page at this address.".to_string(),
        ),
        StatusCode::METHOD_NOT_ALLOWED if method == axum::http::Method::GET => (
            "Use the page's button",
            "This address takes a form sent from a console page, not a visit.".to_string(),
        ),
        _ => (
            "The request could not be handled",
            if said.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                crate::api::clip(&said, 300).into_owned()
            },
        ),
    };
    ctx.page(
        status,
        title,
        html! {
            p.error role="alert" { (text) }
            p { a href="/ui" { "Go to the console's start page" } }
        },
    )
}

/// A small mark for the browser's tab.
const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
<rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#1f2328\"/>\
<path d=\"M4 4h8v2H9v4h3v2H4v-2h3V6H4z\" fill=\"#fff\"/></svg>";

async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
        .into_response()
}

pub(crate) use pages::finish_provider_sign_in;

// ------------------------------------------------------------------ policy

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1f2328;\
background:#f6f8fa;line-height:1.45}\
header{background:#1f2328;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;\
align-items:center;gap:.4rem 1rem}\
header .brand{font-weight:700;margin-right:.5rem}\
header nav{display:flex;flex-wrap:wrap;gap:.2rem .9rem;flex:1}\
header a{color:#fff}header form{margin:0}\
header .who{color:#d0d7de;font-size:.9rem}\
main{max-width:64rem;margin:0 auto;padding:1rem}\
h1{font-size:1.5rem;margin:.6rem 0 1rem}h2{font-size:1.15rem;margin:1.6rem 0 .6rem}\
a{color:#0550ae}\
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}\
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #d0d7de;\
vertical-align:top;overflow-wrap:anywhere}\
th{background:#eef1f4;font-weight:600}\
form.inline{display:inline;margin:0}\
fieldset{border:1px solid #d0d7de;background:#fff;padding:.8rem 1rem;margin:1rem 0}\
legend{font-weight:600;padding:0 .3rem}\
label{display:block;margin:.5rem 0 .2rem;font-weight:600}\
input,select,textarea{font:inherit;padding:.4rem;border:1px solid #8c959f;border-radius:4px;\
width:100%;max-width:28rem;background:#fff;color:#1f2328}\
button{font:inherit;padding:.4rem .9rem;border-radius:4px;border:1px solid #0550ae;\
background:#0550ae;color:#fff;cursor:pointer;margin-top:.6rem}\
fieldset button{display:block}\
button.danger{background:#fff;color:#a40e26;border-color:#a40e26;margin-top:0}\
header button{margin:0;background:#fff;color:#1f2328;border-color:#fff}\
.flash,.error,.secret{overflow-wrap:anywhere}\
.flash{padding:.6rem .8rem;border-radius:4px;background:#dafbe1;border:1px solid #1a7f37}\
.error{padding:.6rem .8rem;border-radius:4px;background:#ffebe9;border:1px solid #a40e26}\
.muted{color:#57606a}\
.empty{background:#fff;border:1px dashed #8c959f;padding:1rem}\
pre,code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9rem}\
pre{background:#fff;border:1px solid #d0d7de;padding:.6rem;overflow-x:auto;white-space:pre-wrap;\
word-break:break-all}\
.ok{color:#1a7f37;font-weight:600}.bad{color:#a40e26;font-weight:600}\
.secret{background:#fff8c5;border:1px solid #9a6700;padding:.6rem .8rem}\
@media (max-width:40rem){thead{display:none}table,tbody,tr,td{display:block;width:100%}\
tr{border-bottom:2px solid #d0d7de}td{border:0;padding:.25rem .6rem}\
td[data-label]::before{content:attr(data-label) ': ';font-weight:600}}";

/// Filters the rows of tables marked `data-filter` as one types in the
/// search box before them. The pages work without it (the box submits).
const SCRIPT: &str = "document.querySelectorAll('input[data-filter]').forEach(function(i){\
var t=document.getElementById(i.getAttribute('data-filter'));if(!t)return;\
i.addEventListener('input',function(){var q=i.value.toLowerCase();\
t.querySelectorAll('tbody tr').forEach(function(r){\
r.hidden=q!==''&&r.textContent.toLowerCase().indexOf(q)<0;});});});";

/// Our style and script by their hashes, forms only to ourselves.
static CSP: LazyLock<String> =
    LazyLock::new(|| web_pages::csp(STYLE, Some(SCRIPT), Some(&["'self'".to_string()])));

/// Headers every console answer carries.
fn harden(resp: &mut Response, cookies: &[String]) {
    web_pages::harden(resp, &CSP, "same-origin", cookies);
}

// ------------------------------------------------------------------ cookies

pub(crate) use super::pages::{clear_cookie, cookie};

/// A `__Host-` cookie that lasts `max_age_secs`.
pub(crate) fn set_cookie(name: &str, value: &str, max_age_secs: i64, same_site: &str) -> String {
    web_pages::set_cookie(name, value, Some(max_age_secs), same_site)
}

fn token() -> String {
    crate::web::random_token()
}

// ------------------------------------------------------------------ the request

/// What a console page knows of its request.
pub struct Ctx {
    pub state: AppState,
    /// The signed-in person, if any.
    pub caller: Option<Caller>,
    /// The form token of this browser (and the cookie to set, if new).
    pub csrf: String,
    pub cookies: Vec<String>,
    pub addr: String,
    /// A message from the action before the redirect to this page.
    pub flash: Option<Flash>,
}

pub enum Flash {
    Ok(String),
    Error(String),
}

impl axum::extract::FromRequestParts<AppState> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Ctx, Self::Rejection> {
        let ip = super::extract::client_ip(parts);
        Ok(Ctx::new(state, &parts.headers, ip).await)
    }
}

impl Ctx {
    pub async fn new(
        state: &AppState,
        headers: &HeaderMap,
        parts_ip: Option<std::net::IpAddr>,
    ) -> Ctx {
        let mut cookies = Vec::new();
        let csrf = match cookie(headers, CSRF_COOKIE).filter(|c| c.len() >= 32) {
            Some(c) => c,
            None => {
                let t = token();
                cookies.push(set_cookie(CSRF_COOKIE, &t, 86_400 * 30, "Strict"));
                t
            }
        };
        let flash = cookie(headers, FLASH_COOKIE).and_then(|v| {
            cookies.push(clear_cookie(FLASH_COOKIE));
            let (kind, text) = v.split_once('.')?;
            let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())?;
            Some(match kind {
                "ok" => Flash::Ok(text),
                _ => Flash::Error(text),
            })
        });
        let caller = match cookie(headers, SESSION_COOKIE) {
            Some(key) => session(state, &key, parts_ip).await,
            None => None,
        };
        if caller.is_none() && cookie(headers, SESSION_COOKIE).is_some() {
            // A key that ended (expired, revoked): forget it.
            cookies.push(clear_cookie(SESSION_COOKIE));
        }
        Ctx {
            state: state.clone(),
            caller,
            csrf,
            cookies,
            addr: parts_ip.map(|i| i.to_string()).unwrap_or_default(),
            flash,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.caller.as_ref().is_some_and(|c| c.is_admin)
    }

    /// The page, with this request's cookies and headers.
    pub fn page(mut self, status: StatusCode, title: &str, body: Markup) -> Response {
        let doc = layout(&self, title, body);
        let mut resp = (status, Html(doc.into_string())).into_response();
        harden(&mut resp, &std::mem::take(&mut self.cookies));
        resp
    }

    /// After an action: back to `to`, with a message for the next page.
    pub fn redirect(mut self, to: &str, flash: Flash) -> Response {
        let (kind, text) = match flash {
            Flash::Ok(t) => ("ok", t),
            Flash::Error(t) => ("error", t),
        };
        let text: String = text.chars().take(600).collect();
        let v = format!(
            "{kind}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
        );
        self.cookies.push(set_cookie(FLASH_COOKIE, &v, 60, "Lax"));
        see_other(to, &self.cookies)
    }

    /// An action whose outcome is an API result: ok message or its error.
    pub fn after<T>(
        self,
        to: &str,
        r: Result<T, ApiError>,
        ok: impl FnOnce(T) -> String,
    ) -> Response {
        match r {
            Ok(v) => {
                let msg = ok(v);
                self.redirect(to, Flash::Ok(msg))
            }
            Err(e) => self.redirect(to, Flash::Error(e.message)),
        }
    }

    /// The CSRF check of a form.
    pub fn csrf_ok(&self, form: &HashMap<String, String>) -> bool {
        form.get("csrf")
            .is_some_and(|t| crate::web::ct_eq(t, &self.csrf))
    }
}

/// A redirect (303) that carries cookies and the console's headers.
pub fn see_other(location: &str, cookies: &[String]) -> Response {
    web_pages::see_other(location, &CSP, "same-origin", cookies)
}

/// The person behind a session cookie: an access key of a user (never a
/// machine identity's), checked like any API call.
async fn session(state: &AppState, key: &str, ip: Option<std::net::IpAddr>) -> Option<Caller> {
    let (row, machine) = state.verify_key(key, KeyUse::Request(ip)).await.ok()?;
    if machine || row.owner_kind != "user" {
        return None;
    }
    state.caller_for_key(row).await.ok()
}

// ------------------------------------------------------------------ layout

fn layout(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    let admin = ctx.is_admin();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { "infra: " (title) }
                link rel="icon" href="/ui/favicon.svg" type="image/svg+xml";
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    span.brand { "infra" }
                    @if let Some(c) = &ctx.caller {
                        nav aria-label="Main" {
                            a href="/ui" { "My clusters" }
                            a href="/ui/keys" { "Access keys" }
                            @if admin {
                                a href="/ui/users" { "Users" }
                                a href="/ui/groups" { "Groups" }
                                a href="/ui/grants" { "Grants" }
                                a href="/ui/destinations" { "Destinations" }
                                a href="/ui/providers" { "Providers" }
                                a href="/ui/identities" { "Machine identities" }
                                a href="/ui/audit" { "Audit log" }
                            }
                        }
                        span.who { "Signed in as " (c.name) }
                        form.inline method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @match &ctx.flash {
                        Some(Flash::Ok(m)) => p.flash role="status" { (m) },
                        Some(Flash::Error(m)) => p.error role="alert" { (m) },
                        None => {},
                    }
                    (body)
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// A "Remove" button that posts to `action`.
pub fn remove_button(ctx: &Ctx, action: &str, what: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(ctx))
            button.danger type="submit" aria-label=(format!("Remove {what}")) { "Remove" }
        }
    }
}

/// A search box that filters `table_id` as one types (and submits `q`).
pub fn filter_box(label: &str, table_id: &str, value: &str) -> Markup {
    html! {
        form method="get" {
            label for="q" { (label) }
            input id="q" name="q" type="search" value=(value) data-filter=(table_id) autocomplete="off";
        }
    }
}

/// The page for a request without a form token, or with the wrong one.
pub fn csrf_refused(ctx: Ctx) -> Response {
    ctx.page(
        StatusCode::FORBIDDEN,
        "The form has expired",
        html! {
            p { "This form could not be checked (it may be from an old tab). Go back, reload the page and try again." }
        },
    )
}
