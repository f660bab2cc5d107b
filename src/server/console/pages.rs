//! The console's pages. Each one calls the `/api` handlers as the signed-in
//! person (see the module above): the same checks, the same audit log.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use secrecy::ExposeSecret;

use super::{
    Ctx, Flash, SESSION_COOKIE, SIGNIN_COOKIE, clear_cookie, cookie, csrf_field, csrf_refused,
    filter_box, remove_button, see_other, set_cookie,
};
use crate::api::{self, ListResponse};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, ApiQuery, Caller, RemoteAddr};
use crate::server::routes as r;
use crate::server::store;

type F = Form<HashMap<String, String>>;

/// Where a person without a session goes.
fn to_login(ctx: Ctx) -> Response {
    ctx.redirect("/ui/login", Flash::Error("Sign in to continue.".into()))
}

/// The signed-in person, or the way to the sign-in page.
fn person(ctx: &Ctx) -> Option<Caller> {
    ctx.caller.clone()
}

/// For admin pages: the 403 page a plain user gets (never a blank one).
fn forbidden(ctx: Ctx) -> Response {
    ctx.page(
        StatusCode::FORBIDDEN,
        "Only infra admins may see this page",
        html! {
            p { "This page is for infra admins. Ask an admin for a grant of role "
                code { "admin" } " on destination " code { "infra" } "." }
            p { a href="/ui" { "Back to your clusters" } }
        },
    )
}

macro_rules! signed_in {
    ($ctx:expr) => {
        match person(&$ctx) {
            Some(c) => c,
            None => return to_login($ctx),
        }
    };
}

macro_rules! admin {
    ($ctx:expr) => {{
        let c = signed_in!($ctx);
        if !c.is_admin {
            return forbidden($ctx);
        }
        c
    }};
}

macro_rules! form_checked {
    ($ctx:expr, $form:expr) => {
        if !$ctx.csrf_ok(&$form) {
            return csrf_refused($ctx);
        }
    };
}

fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(|s| s.trim()).unwrap_or_default()
}

fn opt(form: &HashMap<String, String>, name: &str) -> Option<String> {
    Some(field(form, name).to_string()).filter(|s| !s.is_empty())
}

fn list_all() -> (Option<u64>, Option<u64>) {
    (Some(1), Some(api::MAX_PAGE_LIMIT))
}

fn items<T>(r: ApiResult<Json<ListResponse<T>>>) -> Result<Vec<T>, ApiError> {
    r.map(|Json(l)| l.items)
}

fn short(t: &str) -> String {
    t.replace('T', " ").trim_end_matches('Z').to_string()
}

fn error_page(ctx: Ctx, title: &str, e: ApiError) -> Response {
    let status = e.status;
    let back = if ctx.caller.is_some() {
        ("/ui", "Go to the console's start page")
    } else {
        ("/ui/login", "Sign in")
    };
    ctx.page(
        status,
        title,
        html! {
            p.error role="alert" { (e.message) }
            p { a href=(back.0) { (back.1) } }
        },
    )
}

// ------------------------------------------------------------------ sign-in

pub async fn login_page(State(state): State<AppState>, ctx: Ctx) -> Response {
    if ctx.caller.is_some() {
        return see_other("/ui", &ctx.cookies);
    }
    let providers = items(
        r::providers::list(
            State(state),
            ApiQuery(api::NameQuery {
                name: None,
                page: list_all().0,
                limit: list_all().1,
            }),
        )
        .await,
    )
    .unwrap_or_default();
    let body = html! {
        @if !providers.is_empty() {
            h2 { "With your identity provider" }
            ul {
                // At the public URL, whatever name this page was reached
                // by: the provider sends the browser back there, where the
                // sign-in's cookie must be.
                @for p in &providers {
                    li { a href=(format!("{}/ui/login/{}", ctx.state.public_url, p.id)) { "Sign in with " (p.name) } }
                }
            }
        }
        h2 { "With a local user's password" }
        form method="post" action="/ui/login" {
            (csrf_field(&ctx))
            label for="name" { "User name" }
            input id="name" name="name" autocomplete="username" required;
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
        p.muted { "From a terminal: " code { "infra login " (host(&ctx.state)) } }
    };
    ctx.page(StatusCode::OK, "Sign in to infra", body)
}

/// The console's session: a new access key as from `POST /api/login`.
fn start_session(ctx: &mut Ctx, login: &api::LoginResponse) {
    let left = time::OffsetDateTime::parse(
        &login.expires,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| (t - crate::clock::now_utc()).whole_seconds())
    .unwrap_or(3600);
    ctx.cookies.push(set_cookie(
        SESSION_COOKIE,
        login.access_key.expose_secret(),
        left,
        "Lax",
    ));
}

pub async fn password_login(
    State(state): State<AppState>,
    mut ctx: Ctx,
    Form(form): F,
) -> Response {
    form_checked!(ctx, form);
    let req = api::LoginRequest {
        password_credentials: Some(api::PasswordCredentials {
            name: field(&form, "name").to_string(),
            password: field(&form, "password").to_string().into(),
        }),
        ..Default::default()
    };
    match r::auth::login(State(state), RemoteAddr(ctx.addr.clone()), ApiJson(req)).await {
        Ok((_, Json(login))) => {
            start_session(&mut ctx, &login);
            let name = login.name.clone();
            ctx.redirect("/ui", Flash::Ok(format!("Signed in as {name}.")))
        }
        // The API's words are for the terminal; these are for this page.
        Err(e) if e.status == StatusCode::UNAUTHORIZED => ctx.redirect(
            "/ui/login",
            Flash::Error(if e.message.contains("not with a password") {
                "This user signs in through an identity provider, not with a password: \
                 choose the provider above."
                    .into()
            } else {
                "Wrong user name or password. Users of your identity provider sign in with \
                 the provider above; an admin can reset a local user's password."
                    .into()
            }),
        ),
        Err(e) => ctx.redirect("/ui/login", Flash::Error(e.message)),
    }
}

/// The sign-in attempt a browser carries to the provider and back: the
/// state, nonce and PKCE verifier, sealed with the root key.
#[derive(serde::Serialize, serde::Deserialize)]
struct Attempt {
    provider: String,
    state: String,
    nonce: String,
    verifier: String,
    until: i64,
}

pub async fn provider_sign_in(
    State(state): State<AppState>,
    mut ctx: Ctx,
    Path(provider): Path<String>,
) -> Response {
    let p = match state.store.get_provider(&provider).await {
        Ok(p) => p,
        Err(e) => return error_page(ctx, "Cannot sign in", e.into()),
    };
    let a = crate::web::Attempt::to(state.callback_url.clone());
    let sealed = Attempt {
        provider: p.id.clone(),
        state: a.state.clone(),
        nonce: a.nonce.clone(),
        verifier: a.code_verifier.clone(),
        until: store::now() + 600,
    };
    let Ok(json) = serde_json::to_string(&sealed) else {
        return error_page(
            ctx,
            "Cannot sign in",
            ApiError::internal("cannot seal the attempt"),
        );
    };
    let scopes: Vec<String> = p.scopes.split_whitespace().map(String::from).collect();
    let url = match a.authorization_url(&p.auth_url, &p.client_id, &scopes) {
        Ok(u) => u,
        Err(e) => {
            return error_page(ctx, "Cannot sign in", ApiError::internal(format!("{e:#}")));
        }
    };
    // Lax: the provider's redirect back is a top-level GET from its site.
    ctx.cookies.push(set_cookie(
        SIGNIN_COOKIE,
        &state.root_key.encrypt(&json),
        600,
        "Lax",
    ));
    see_other(&url, &ctx.cookies)
}

/// `/login/callback` for a console sign-in: `None` when the browser has no
/// console attempt for this `state` (it is then a device sign-in's).
pub(crate) async fn finish_provider_sign_in(
    state: &AppState,
    addr: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Option<Response> {
    let sealed = cookie(headers, SIGNIN_COOKIE)?;
    let plain = state.root_key.decrypt(&sealed).ok()?;
    let a: Attempt = serde_json::from_str(plain.expose_secret()).ok()?;
    let given = q.get("state")?;
    if !crate::web::ct_eq(&a.state, given) {
        return None;
    }
    let ip = addr.parse().ok();
    let mut ctx = Ctx::new(state, headers, ip).await;
    ctx.cookies.push(clear_cookie(SIGNIN_COOKIE));
    if a.until < store::now() {
        return Some(ctx.redirect(
            "/ui/login",
            Flash::Error("The sign-in took too long. Start again.".into()),
        ));
    }
    if let Some(err) = q.get("error") {
        let why = q
            .get("error_description")
            .map(|d| format!("{err}: {d}"))
            .unwrap_or_else(|| err.clone());
        return Some(ctx.redirect(
            "/ui/login",
            Flash::Error(format!(
                "Your identity provider did not sign you in ({why})."
            )),
        ));
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return Some(ctx.redirect(
            "/ui/login",
            Flash::Error("The identity provider sent no authorization code back.".into()),
        ));
    };
    let provider = match state.store.get_provider(&a.provider).await {
        Ok(p) => p,
        Err(e) => return Some(ctx.redirect("/ui/login", Flash::Error(ApiError::from(e).message))),
    };
    let signed_in = match crate::server::routes::auth::sign_in_with_provider(
        state,
        addr,
        &provider,
        crate::server::routes::auth::ProviderAnswer {
            code,
            redirect_url: &state.callback_url,
            code_verifier: &a.verifier,
            nonce: &a.nonce,
            reauth: false,
        },
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return Some(ctx.redirect("/ui/login", Flash::Error(e.message))),
    };
    let login = match crate::server::routes::auth::issue_login_key(
        state,
        "user",
        &signed_in.user.id,
        &signed_in.user.name,
        signed_in.session_expires_at,
        Some(&provider.id),
        signed_in.auth_time,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return Some(ctx.redirect("/ui/login", Flash::Error(e.message))),
    };
    let _ = crate::server::routes::auth::succeed(state, "console", &login.name, addr).await;
    start_session(&mut ctx, &login);
    let name = login.name.clone();
    Some(ctx.redirect("/ui", Flash::Ok(format!("Signed in as {name}."))))
}

pub async fn logout(State(state): State<AppState>, mut ctx: Ctx, Form(form): F) -> Response {
    form_checked!(ctx, form);
    if let Some(c) = person(&ctx) {
        let _ = r::auth::logout(State(state), RemoteAddr(ctx.addr.clone()), c).await;
    }
    ctx.cookies.push(clear_cookie(SESSION_COOKIE));
    ctx.redirect("/ui/login", Flash::Ok("Signed out.".into()))
}

// ------------------------------------------------------------------ my clusters

fn host(state: &AppState) -> String {
    state
        .public_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

pub async fn clusters(State(state): State<AppState>, ctx: Ctx) -> Response {
    let me = signed_in!(ctx);
    let grants = r::grants::read(
        &state,
        me.clone(),
        &ctx.addr,
        api::GrantQuery {
            user: me.user_id().map(String::from),
            show_inherited: Some(true),
            page: list_all().0,
            limit: list_all().1,
            ..Default::default()
        },
    )
    .await
    .map(|l| l.items);
    let grants = match grants {
        Ok(g) => g,
        Err(e) => return error_page(ctx, "My clusters", e),
    };
    let dests: BTreeMap<String, api::Destination> = items(
        r::destinations::list(
            State(state.clone()),
            me.clone(),
            ApiQuery(api::NameQuery {
                name: None,
                page: list_all().0,
                limit: list_all().1,
            }),
        )
        .await,
    )
    .unwrap_or_default()
    .into_iter()
    .map(|d| (d.name.clone(), d))
    .collect();
    let clusters: Vec<&api::Grant> = grants
        .iter()
        .filter(|g| g.destination.split('.').next() != Some(api::INFRA_DESTINATION))
        .collect();
    let fingerprint = state.tls_fingerprint.get().cloned().unwrap_or_default();
    let login = if fingerprint.is_empty() {
        format!("infra login {}", host(&state))
    } else {
        format!(
            "infra login {} --tls-trusted-fingerprint {fingerprint}",
            host(&state)
        )
    };
    let body = html! {
        @if clusters.is_empty() {
            p.empty { "You have no clusters yet. Ask an infra admin for a grant, e.g. "
                code { "infra grants add prod --user " (me.name) " --role view" } "." }
        } @else {
            table id="clusters" {
                thead { tr { th scope="col" { "Cluster" } th scope="col" { "Namespace" } th scope="col" { "Role" }
                    th scope="col" { "Through" } th scope="col" { "Connected" } th scope="col" { "Last seen" } th scope="col" { "kubectl context" } } }
                tbody {
                    @for g in &clusters {
                        @let (dest, ns) = match g.destination.split_once('.') { Some((d, n)) => (d, n), None => (g.destination.as_str(), "") };
                        @let d = dests.get(dest);
                        tr {
                            td data-label="Cluster" { (dest) }
                            td data-label="Namespace" { @if ns.is_empty() { span.muted { "all" } } @else { (ns) } }
                            td data-label="Role" { (g.role) }
                            td data-label="Through" { @if g.group.is_some() { "group " (g.subject_name) } @else { "you" } }
                            td data-label="Connected" {
                                @match d {
                                    Some(d) if d.connected => span.ok { "connected" },
                                    Some(_) => span.bad { "disconnected" },
                                    None => span.muted { "not registered" },
                                }
                            }
                            td data-label="Last seen" { (d.and_then(|d| d.last_seen.as_deref()).map(short).unwrap_or_else(|| "never".into())) }
                            td data-label="kubectl context" { code { "infra:" (g.destination) } }
                        }
                    }
                }
            }
        }
        h2 { "Connect from a terminal" }
        p { "Log in once; kubectl then gets a fresh token for every call:" }
        pre { code { (login) } }
        p { "Then pick a cluster with " code { "infra use" } " or " code { "kubectl config use-context infra:CLUSTER" } "." }
    };
    ctx.page(StatusCode::OK, "My clusters", body)
}

// ------------------------------------------------------------------ users

#[derive(serde::Deserialize, Default)]
pub struct Search {
    #[serde(default)]
    q: String,
}

pub async fn users(State(state): State<AppState>, ctx: Ctx, Query(s): Query<Search>) -> Response {
    let me = admin!(ctx);
    let list = match items(
        r::users::list(
            State(state),
            me,
            ApiQuery(api::NameQuery {
                name: None,
                page: list_all().0,
                limit: list_all().1,
            }),
        )
        .await,
    ) {
        Ok(l) => l,
        Err(e) => return error_page(ctx, "Users", e),
    };
    let q = s.q.to_lowercase();
    let shown: Vec<&api::User> = list
        .iter()
        .filter(|u| q.is_empty() || u.name.to_lowercase().contains(&q))
        .collect();
    let body = html! {
        (filter_box("Search users", "users", &s.q))
        @if shown.is_empty() {
            p.empty { "No users match. People who sign in through a provider appear here after their first sign-in; add a local user below." }
        } @else {
            table id="users" {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Password" } th scope="col" { "Last seen" } th scope="col" { "Actions" } } }
                tbody {
                    @for u in &shown {
                        tr {
                            td data-label="Name" { (u.name) }
                            td data-label="Password" { @if u.has_password { "yes" } @else { span.muted { "no" } } }
                            td data-label="Last seen" { (u.last_seen.as_deref().map(short).unwrap_or_else(|| "never".into())) }
                            td data-label="Actions" {
                                (remove_button(&ctx, &format!("/ui/users/{}/remove", u.id), &u.name))
                                @if u.has_password {
                                    details {
                                        summary { "Reset password" }
                                        form method="post" action=(format!("/ui/users/{}/password", u.id)) {
                                            (csrf_field(&ctx))
                                            label for=(format!("pw-{}", u.id)) { "New password for " (u.name) }
                                            input id=(format!("pw-{}", u.id)) name="password" type="password" autocomplete="new-password" minlength="8" required;
                                            button type="submit" { "Set password" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action="/ui/users" {
            fieldset {
                legend { "Add a user" }
                (csrf_field(&ctx))
                label for="new-name" { "Name (an email for people who will sign in through a provider)" }
                input id="new-name" name="name" required autocomplete="off";
                label for="new-password" { "Password (only for a local user; leave empty otherwise)" }
                input id="new-password" name="password" type="password" autocomplete="new-password";
                button type="submit" { "Add user" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Users", body)
}

pub async fn add_user(State(state): State<AppState>, ctx: Ctx, Form(form): F) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let req = api::CreateUserRequest {
        name: field(&form, "name").to_string(),
        password: opt(&form, "password").map(Into::into),
    };
    let r = r::users::create(State(state), me, RemoteAddr(ctx.addr.clone()), ApiJson(req)).await;
    ctx.after("/ui/users", r, |(_, Json(u))| {
        format!("Added user {}.", u.name)
    })
}

pub async fn remove_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let r = r::users::remove(State(state), me, RemoteAddr(ctx.addr.clone()), Path(id)).await;
    ctx.after("/ui/users", r, |_| {
        "Removed the user, with their grants and keys.".into()
    })
}

pub async fn reset_password(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let req = api::UpdateUserRequest {
        password: field(&form, "password").to_string().into(),
        current_password: None,
    };
    let r = r::users::update(
        State(state),
        me,
        RemoteAddr(ctx.addr.clone()),
        Path(id),
        ApiJson(req),
    )
    .await;
    ctx.after("/ui/users", r, |Json(u)| {
        format!("Set a new password for {}.", u.name)
    })
}

// ------------------------------------------------------------------ groups

pub async fn groups(State(state): State<AppState>, ctx: Ctx, Query(s): Query<Search>) -> Response {
    let me = admin!(ctx);
    let list = match items(
        r::groups::list(
            State(state),
            me,
            ApiQuery(api::NameQuery {
                name: None,
                page: list_all().0,
                limit: list_all().1,
            }),
        )
        .await,
    ) {
        Ok(l) => l,
        Err(e) => return error_page(ctx, "Groups", e),
    };
    let q = s.q.to_lowercase();
    let body = html! {
        (filter_box("Search groups", "groups", &s.q))
        @if list.is_empty() {
            p.empty { "No groups yet. Groups from your identity provider appear after their members sign in; add one below to grant to it." }
        } @else {
            table id="groups" {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Members" } th scope="col" { "Actions" } } }
                tbody {
                    @for g in list.iter().filter(|g| q.is_empty() || g.name.to_lowercase().contains(&q)) {
                        tr {
                            td data-label="Name" { a href=(format!("/ui/groups/{}", g.id)) { (g.name) } }
                            td data-label="Members" { (g.total_users) }
                            td data-label="Actions" { (remove_button(&ctx, &format!("/ui/groups/{}/remove", g.id), &g.name)) }
                        }
                    }
                }
            }
        }
        form method="post" action="/ui/groups" {
            fieldset {
                legend { "Add a group" }
                (csrf_field(&ctx))
                label for="group-name" { "Name" }
                input id="group-name" name="name" required autocomplete="off";
                button type="submit" { "Add group" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Groups", body)
}

pub async fn add_group(State(state): State<AppState>, ctx: Ctx, Form(form): F) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let req = api::CreateGroupRequest {
        name: field(&form, "name").to_string(),
    };
    let r = r::groups::create(State(state), me, RemoteAddr(ctx.addr.clone()), ApiJson(req)).await;
    ctx.after("/ui/groups", r, |(_, Json(g))| {
        format!("Added group {}.", g.name)
    })
}

pub async fn remove_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let r = r::groups::remove(State(state), me, RemoteAddr(ctx.addr.clone()), Path(id)).await;
    ctx.after("/ui/groups", r, |_| "Removed the group.".into())
}

pub async fn group(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let me = admin!(ctx);
    let g = match r::groups::get(State(state.clone()), me.clone(), Path(id.clone())).await {
        Ok(Json(g)) => g,
        Err(e) => return error_page(ctx, "Group", e),
    };
    let members =
        items(r::groups::members(State(state), me, Path(id.clone())).await).unwrap_or_default();
    let title = format!("Group {}", g.name);
    let body = html! {
        p { a href="/ui/groups" { "All groups" } }
        @if members.is_empty() {
            p.empty { "No members yet. Add one below, or let your identity provider assert this group." }
        } @else {
            table id="members" {
                thead { tr { th scope="col" { "Member" } th scope="col" { "Actions" } } }
                tbody {
                    @for u in &members {
                        tr {
                            td data-label="Member" { (u.name) }
                            td data-label="Actions" { (remove_button(&ctx, &format!("/ui/groups/{id}/members/{}/remove", u.id), &u.name)) }
                        }
                    }
                }
            }
        }
        form method="post" action=(format!("/ui/groups/{id}/members")) {
            fieldset {
                legend { "Add a member" }
                (csrf_field(&ctx))
                label for="member" { "User name" }
                input id="member" name="user" required autocomplete="off";
                button type="submit" { "Add member" }
            }
        }
    };
    ctx.page(StatusCode::OK, &title, body)
}

async fn user_id_by_name(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<String, ApiError> {
    let found = items(
        r::users::list(
            State(state.clone()),
            caller.clone(),
            ApiQuery(api::NameQuery {
                name: Some(name.to_string()),
                page: Some(1),
                limit: Some(1),
            }),
        )
        .await,
    )?;
    found
        .into_iter()
        .next()
        .map(|u| u.id)
        .ok_or_else(|| ApiError::bad_request(format!("no user named {name:?}")))
}

pub async fn add_member(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let back = format!("/ui/groups/{id}");
    let uid = match user_id_by_name(&state, &me, field(&form, "user")).await {
        Ok(u) => u,
        Err(e) => return ctx.redirect(&back, Flash::Error(e.message)),
    };
    let req = api::UpdateGroupUsersRequest {
        users_to_add: vec![uid],
        users_to_remove: vec![],
    };
    let r = r::groups::update_members(
        State(state),
        me,
        RemoteAddr(ctx.addr.clone()),
        Path(id),
        ApiJson(req),
    )
    .await;
    ctx.after(&back, r, |_| "Added the member.".into())
}

pub async fn remove_member(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, user)): Path<(String, String)>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let back = format!("/ui/groups/{id}");
    let req = api::UpdateGroupUsersRequest {
        users_to_add: vec![],
        users_to_remove: vec![user],
    };
    let r = r::groups::update_members(
        State(state),
        me,
        RemoteAddr(ctx.addr.clone()),
        Path(id),
        ApiJson(req),
    )
    .await;
    ctx.after(&back, r, |_| "Removed the member.".into())
}

// ------------------------------------------------------------------ grants

const ROLES: [&str; 4] = ["view", "edit", "admin", "cluster-admin"];

pub async fn grants(State(state): State<AppState>, ctx: Ctx, Query(s): Query<Search>) -> Response {
    let me = admin!(ctx);
    let list = r::grants::read(
        &state,
        me.clone(),
        &ctx.addr,
        api::GrantQuery {
            page: list_all().0,
            limit: list_all().1,
            ..Default::default()
        },
    )
    .await
    .map(|l| l.items);
    let list = match list {
        Ok(l) => l,
        Err(e) => return error_page(ctx, "Grants", e),
    };
    // Filtered here too, so the search works without JavaScript.
    let q = s.q.to_lowercase();
    let list: Vec<api::Grant> = list
        .into_iter()
        .filter(|g| {
            q.is_empty()
                || [&g.subject_name, &g.role, &g.destination]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&q))
        })
        .collect();
    let dests = items(
        r::destinations::list(
            State(state),
            me,
            ApiQuery(api::NameQuery {
                name: None,
                page: list_all().0,
                limit: list_all().1,
            }),
        )
        .await,
    )
    .unwrap_or_default();
    let body = html! {
        (filter_box("Search grants", "grants", &s.q))
        table id="grants" {
            thead { tr { th scope="col" { "Subject" } th scope="col" { "Role" } th scope="col" { "Destination" } th scope="col" { "State on the cluster" } th scope="col" { "Actions" } } }
            tbody {
                @for g in &list {
                    @let kind = if g.group.is_some() { "group" } else if g.identity.is_some() { "identity" } else { "user" };
                    tr {
                        td data-label="Subject" { (kind) " " (g.subject_name) }
                        td data-label="Role" { (g.role) }
                        td data-label="Destination" { (g.destination) }
                        td data-label="State on the cluster" {
                            @match g.state.as_deref() {
                                _ if g.destination == api::INFRA_DESTINATION => span.muted { "(this server)" },
                                Some("applied") => span.ok { "applied" },
                                Some(other) => span.bad { (other) @if let Some(m) = &g.state_message { ": " (m) } },
                                None => span.muted { "not reported" },
                            }
                        }
                        td data-label="Actions" { (remove_button(&ctx, &format!("/ui/grants/{}/remove", g.id), &format!("{} {} on {}", g.subject_name, g.role, g.destination))) }
                    }
                }
            }
        }
        form method="post" action="/ui/grants" {
            fieldset {
                legend { "Add a grant" }
                (csrf_field(&ctx))
                label for="kind" { "Who" }
                select id="kind" name="kind" {
                    option value="user" { "User" }
                    option value="group" { "Group" }
                    option value="identity" { "Machine identity" }
                }
                label for="subject" { "Name" }
                input id="subject" name="subject" required autocomplete="off";
                label for="destination" { "Destination" }
                select id="destination" name="destination" {
                    @for d in &dests { option value=(d.name) { (d.name) } }
                    option value=(api::INFRA_DESTINATION) { "infra (this server)" }
                }
                label for="namespace" { "Namespace (empty: the whole cluster)" }
                input id="namespace" name="namespace" autocomplete="off";
                label for="role" { "Role" }
                select id="role" name="role" {
                    @for r in ROLES { option value=(r) { (r) } }
                }
                label for="other-role" { "Or another ClusterRole by name" }
                input id="other-role" name="other_role" autocomplete="off";
                button type="submit" { "Add grant" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Grants", body)
}

pub async fn add_grant(State(state): State<AppState>, ctx: Ctx, Form(form): F) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let name = field(&form, "subject").to_string();
    let kind = field(&form, "kind");
    let subject = match kind {
        "group" => items(
            r::groups::list(
                State(state.clone()),
                me.clone(),
                ApiQuery(api::NameQuery {
                    name: Some(name.clone()),
                    page: Some(1),
                    limit: Some(1),
                }),
            )
            .await,
        )
        .map(|l| l.into_iter().next().map(|g| g.id)),
        "identity" => items(
            r::identities::list(
                State(state.clone()),
                me.clone(),
                ApiQuery(api::NameQuery {
                    name: Some(name.clone()),
                    page: Some(1),
                    limit: Some(1),
                }),
            )
            .await,
        )
        .map(|l| l.into_iter().next().map(|i| i.id)),
        _ => user_id_by_name(&state, &me, &name).await.map(Some),
    };
    let id = match subject {
        Ok(Some(id)) => id,
        Ok(None) => {
            return ctx.redirect(
                "/ui/grants",
                Flash::Error(format!("no {kind} named {name:?}")),
            );
        }
        Err(e) => return ctx.redirect("/ui/grants", Flash::Error(e.message)),
    };
    let dest = field(&form, "destination");
    let destination = match opt(&form, "namespace") {
        Some(ns) => format!("{dest}.{ns}"),
        None => dest.to_string(),
    };
    let role = opt(&form, "other_role").unwrap_or_else(|| field(&form, "role").to_string());
    let mut req = api::CreateGrantRequest {
        destination,
        role,
        ..Default::default()
    };
    match kind {
        "group" => req.group = Some(id),
        "identity" => req.identity = Some(id),
        _ => req.user = Some(id),
    }
    let r = r::grants::create(State(state), me, RemoteAddr(ctx.addr.clone()), ApiJson(req)).await;
    ctx.after("/ui/grants", r, |(_, headers, Json(g))| {
        // A likely typo in the role is said here as the CLI says it.
        let warning = headers
            .get(axum::http::header::WARNING)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::api::warning_text)
            .map(|w| format!(" Warning: {w}"))
            .unwrap_or_default();
        format!(
            "Granted {} on {} to {}.{warning}",
            g.role, g.destination, g.subject_name
        )
    })
}

pub async fn remove_grant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let r = r::grants::remove(State(state), me, RemoteAddr(ctx.addr.clone()), Path(id)).await;
    ctx.after("/ui/grants", r, |_| "Removed the grant.".into())
}

// ------------------------------------------------------------------ destinations

pub async fn destinations(State(state): State<AppState>, ctx: Ctx) -> Response {
    let me = admin!(ctx);
    let list = match items(
        r::destinations::list(
            State(state),
            me,
            ApiQuery(api::NameQuery {
                name: None,
                page: list_all().0,
                limit: list_all().1,
            }),
        )
        .await,
    ) {
        Ok(l) => l,
        Err(e) => return error_page(ctx, "Destinations", e),
    };
    let body = html! {
        @if list.is_empty() {
            p.empty { "No clusters are registered yet. Run a connector next to a cluster: make its key with "
                code { "infra keys add --connector --destination prod" } " and see the README's connector section." }
        } @else {
            table id="destinations" {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Last seen" } th scope="col" { "Connector version" } th scope="col" { "URL" } th scope="col" { "Actions" } } }
                tbody {
                    @for d in &list {
                        tr {
                            td data-label="Name" { (d.name) }
                            td data-label="Status" { @if d.connected { span.ok { "connected" } } @else { span.bad { "disconnected" } } }
                            td data-label="Last seen" { (d.last_seen.as_deref().map(short).unwrap_or_else(|| "never".into())) }
                            td data-label="Connector version" { (d.connector_version.clone().unwrap_or_else(|| "unknown".into())) }
                            td data-label="URL" { (d.url) }
                            td data-label="Actions" { (remove_button(&ctx, &format!("/ui/destinations/{}/remove", d.id), &d.name)) }
                        }
                    }
                }
            }
        }
    };
    ctx.page(StatusCode::OK, "Destinations", body)
}

pub async fn remove_destination(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let r = r::destinations::remove(State(state), me, RemoteAddr(ctx.addr.clone()), Path(id)).await;
    ctx.after("/ui/destinations", r, |_| "Removed the destination.".into())
}

// ------------------------------------------------------------------ providers

pub async fn providers(State(state): State<AppState>, ctx: Ctx) -> Response {
    let _me = admin!(ctx);
    let list = match items(
        r::providers::list(
            State(state.clone()),
            ApiQuery(api::NameQuery {
                name: None,
                page: list_all().0,
                limit: list_all().1,
            }),
        )
        .await,
    ) {
        Ok(l) => l,
        Err(e) => return error_page(ctx, "Identity providers", e),
    };
    let body = html! {
        @if list.is_empty() {
            p.empty { "No identity provider yet: people can only use local passwords. Add one below (the README says how to register infra at Okta, Entra ID, Google, Keycloak, Dex and GitLab)." }
        } @else {
            table id="providers" {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Issuer URL" } th scope="col" { "Users named by" } th scope="col" { "Refresh tokens" } th scope="col" { "Actions" } } }
                tbody {
                    @for p in &list {
                        tr {
                            td data-label="Name" { (p.name) }
                            td data-label="Kind" { (p.kind) }
                            td data-label="Issuer URL" { (p.url) }
                            td data-label="Users named by" { @if p.username_claim.is_empty() { "verified email" } @else { (p.username_claim) } }
                            td data-label="Refresh tokens" { @if p.refresh_tokens { "offered" } @else { span.bad { "none: sessions last one ID token" } } }
                            td data-label="Actions" {
                                (remove_button(&ctx, &format!("/ui/providers/{}/remove", p.id), &p.name))
                                details {
                                    summary { "Edit" }
                                    form method="post" action=(format!("/ui/providers/{}", p.id)) {
                                        (csrf_field(&ctx))
                                        label for=(format!("url-{}", p.id)) { "Issuer URL" }
                                        input id=(format!("url-{}", p.id)) name="url" value=(p.url);
                                        label for=(format!("cid-{}", p.id)) { "Client ID" }
                                        input id=(format!("cid-{}", p.id)) name="client_id" value=(p.client_id);
                                        label for=(format!("sec-{}", p.id)) { "New client secret (empty: keep)" }
                                        input id=(format!("sec-{}", p.id)) name="client_secret" type="password" autocomplete="off";
                                        label for=(format!("claim-{}", p.id)) { "Name users by claim (empty: verified email)" }
                                        input id=(format!("claim-{}", p.id)) name="username_claim" value=(p.username_claim);
                                        button type="submit" { "Save" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action="/ui/providers" {
            fieldset {
                legend { "Add an identity provider" }
                (csrf_field(&ctx))
                label for="p-name" { "Name (lowercase, e.g. okta)" }
                input id="p-name" name="name" required autocomplete="off";
                label for="p-kind" { "Kind" }
                select id="p-kind" name="kind" { @for k in api::PROVIDER_KINDS { option value=(k) { (k) } } }
                label for="p-url" { "Issuer URL" }
                input id="p-url" name="url" required placeholder="https://example.okta.com" autocomplete="off";
                label for="p-cid" { "Client ID" }
                input id="p-cid" name="client_id" required autocomplete="off";
                label for="p-secret" { "Client secret" }
                input id="p-secret" name="client_secret" type="password" required autocomplete="off";
                label for="p-claim" { "Name users by claim (empty: verified email; e.g. preferred_username)" }
                input id="p-claim" name="username_claim" autocomplete="off";
                label for="p-ca" { "CA certificate (PEM), when it is not publicly trusted" }
                textarea id="p-ca" name="ca_cert" rows="3" {}
                p.muted { "The provider's discovery document is checked before it is saved." }
                button type="submit" { "Add provider" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Identity providers", body)
}

pub async fn add_provider(State(state): State<AppState>, ctx: Ctx, Form(form): F) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let req = api::CreateProviderRequest {
        name: field(&form, "name").to_string(),
        kind: opt(&form, "kind").unwrap_or_else(api::default_provider_kind),
        url: field(&form, "url").to_string(),
        client_id: field(&form, "client_id").to_string(),
        client_secret: field(&form, "client_secret").to_string().into(),
        ca_cert: opt(&form, "ca_cert"),
        username_claim: opt(&form, "username_claim"),
    };
    let r =
        r::providers::create(State(state), me, RemoteAddr(ctx.addr.clone()), ApiJson(req)).await;
    ctx.after("/ui/providers", r, |(_, Json(p))| {
        format!("Added provider {}.", p.name)
    })
}

pub async fn edit_provider(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let req = api::UpdateProviderRequest {
        url: opt(&form, "url"),
        client_id: opt(&form, "client_id"),
        client_secret: opt(&form, "client_secret").map(Into::into),
        ca_cert: None,
        username_claim: Some(field(&form, "username_claim").to_string()),
    };
    let r = r::providers::update(
        State(state),
        me,
        RemoteAddr(ctx.addr.clone()),
        Path(id),
        ApiJson(req),
    )
    .await;
    ctx.after("/ui/providers", r, |Json(p)| {
        format!("Saved provider {}.", p.name)
    })
}

pub async fn remove_provider(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let r = r::providers::remove(State(state), me, RemoteAddr(ctx.addr.clone()), Path(id)).await;
    ctx.after("/ui/providers", r, |_| "Removed the provider.".into())
}

// ------------------------------------------------------------------ access keys

pub async fn keys(State(state): State<AppState>, ctx: Ctx) -> Response {
    let me = signed_in!(ctx);
    let owner = if me.is_admin {
        None
    } else {
        me.user_id().map(String::from)
    };
    let list = match items(
        r::access_keys::list(
            State(state),
            me.clone(),
            ApiQuery(api::AccessKeyQuery {
                user_id: owner,
                name: None,
                page: list_all().0,
                limit: list_all().1,
            }),
        )
        .await,
    ) {
        Ok(l) => l,
        Err(e) => return error_page(ctx, "Access keys", e),
    };
    let body = html! {
        @if me.is_admin { p.muted { "Everyone's keys (you are an admin)." } }
        table id="keys" {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Owner" } th scope="col" { "Destination" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { "Actions" } } }
            tbody {
                @for k in &list {
                    tr {
                        td data-label="Name" { (k.name) @if k.id == me.key_id { " " span.muted { "(this session)" } } }
                        td data-label="Owner" { (k.user_name) }
                        td data-label="Destination" { (k.destination.clone().unwrap_or_default()) }
                        td data-label="Expires" { (short(&k.expires)) }
                        td data-label="Last used" { (k.last_used.as_deref().map(short).unwrap_or_else(|| "never".into())) }
                        td data-label="Actions" { (remove_button(&ctx, &format!("/ui/keys/{}/remove", k.id), &k.name)) }
                    }
                }
            }
        }
        form method="post" action="/ui/keys" {
            fieldset {
                legend { "Create an access key" }
                (csrf_field(&ctx))
                label for="k-name" { "Name (e.g. ci)" }
                input id="k-name" name="name" required autocomplete="off";
                label for="k-expiry" { "Lasts (e.g. 30d, 720h)" }
                input id="k-expiry" name="expiry" value="30d" autocomplete="off";
                @if me.is_admin {
                    label for="k-dest" { "For a connector: its one destination (empty: a key of yours)" }
                    input id="k-dest" name="destination" autocomplete="off";
                }
                button type="submit" { "Create key" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Access keys", body)
}

pub async fn add_key(State(state): State<AppState>, ctx: Ctx, Form(form): F) -> Response {
    let me = signed_in!(ctx);
    form_checked!(ctx, form);
    let destination = opt(&form, "destination");
    let req = api::CreateAccessKeyRequest {
        connector: destination.is_some(),
        destination,
        name: opt(&form, "name"),
        expiry: opt(&form, "expiry"),
        ..Default::default()
    };
    match r::access_keys::create(State(state), me, RemoteAddr(ctx.addr.clone()), ApiJson(req)).await
    {
        Ok((_, Json(k))) => {
            let body = html! {
                p.secret role="status" { "This is the key. It is shown only this once: copy it now and keep it safe." }
                pre { code id="new-key" { (k.access_key.expose_secret()) } }
                p { "Use it with " code { "infra login SERVER --key KEY" } " or as " code { "INFRA_ACCESS_KEY" } "." }
                p { a href="/ui/keys" { "Back to the access keys" } }
            };
            let title = format!("Access key {} created", k.name);
            ctx.page(StatusCode::CREATED, &title, body)
        }
        Err(e) => ctx.redirect("/ui/keys", Flash::Error(e.message)),
    }
}

pub async fn remove_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = signed_in!(ctx);
    form_checked!(ctx, form);
    let r = r::access_keys::remove(State(state), me, RemoteAddr(ctx.addr.clone()), Path(id)).await;
    ctx.after("/ui/keys", r, |_| "Revoked the key.".into())
}

// ------------------------------------------------------------------ machine identities

pub async fn identities(State(state): State<AppState>, ctx: Ctx) -> Response {
    let me = admin!(ctx);
    let list = match items(
        r::identities::list(
            State(state),
            me,
            ApiQuery(api::NameQuery {
                name: None,
                page: list_all().0,
                limit: list_all().1,
            }),
        )
        .await,
    ) {
        Ok(l) => l,
        Err(e) => return error_page(ctx, "Machine identities", e),
    };
    let body = html! {
        @if list.is_empty() {
            p.empty { "No machine identities yet. A CI job or workload logs in with its own OIDC JWT as one (GitLab CI, SPIRE, GitHub Actions): add one, then set how it logs in." }
        } @else {
            table id="identities" {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Actions" } } }
                tbody {
                    @for i in &list {
                        tr {
                            td data-label="Name" { a href=(format!("/ui/identities/{}", i.id)) { (i.name) } }
                            td data-label="Created" { (short(&i.created)) }
                            td data-label="Actions" { (remove_button(&ctx, &format!("/ui/identities/{}/remove", i.id), &i.name)) }
                        }
                    }
                }
            }
        }
        form method="post" action="/ui/identities" {
            fieldset {
                legend { "Add a machine identity" }
                (csrf_field(&ctx))
                label for="i-name" { "Name (lowercase, e.g. deploy)" }
                input id="i-name" name="name" required autocomplete="off";
                button type="submit" { "Add identity" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Machine identities", body)
}

pub async fn add_identity(State(state): State<AppState>, ctx: Ctx, Form(form): F) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let req = api::CreateIdentityRequest {
        name: field(&form, "name").to_string(),
    };
    let r =
        r::identities::create(State(state), me, RemoteAddr(ctx.addr.clone()), ApiJson(req)).await;
    ctx.after("/ui/identities", r, |(_, Json(i))| {
        format!("Added machine identity {}.", i.name)
    })
}

pub async fn remove_identity(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let r = r::identities::remove(State(state), me, RemoteAddr(ctx.addr.clone()), Path(id)).await;
    ctx.after("/ui/identities", r, |_| {
        "Removed the machine identity.".into()
    })
}

pub async fn identity(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let me = admin!(ctx);
    let i = match r::identities::get(State(state.clone()), me.clone(), Path(id.clone())).await {
        Ok(Json(i)) => i,
        Err(e) => return error_page(ctx, "Machine identity", e),
    };
    let cfg = r::identities::get_oidc_auth(State(state), me, Path(id.clone()))
        .await
        .ok()
        .map(|Json(c)| c);
    let claims = cfg
        .as_ref()
        .map(|c| {
            c.claims
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let title = format!("Machine identity {}", i.name);
    let body = html! {
        p { a href="/ui/identities" { "All machine identities" } }
        h2 { "How it logs in (OIDC)" }
        @match &cfg {
            Some(c) => {
                table id="oidc" {
                    tbody {
                        tr { th scope="row" { "Issuer" } td { (c.issuer) } }
                        tr { th scope="row" { "Discovery URL" } td { (c.discovery_url) } }
                        tr { th scope="row" { "Subject" } td { (c.subject) } }
                        tr { th scope="row" { "Audiences" } td { (c.audiences.join(", ")) } }
                        tr { th scope="row" { "Claims" } td { (claims) } }
                        tr { th scope="row" { "Token lifetime" } td { (c.access_token_ttl) " s (at most " (c.access_token_max_ttl) " s)" } }
                        tr { th scope="row" { "Trusted IPs" } td { (c.access_token_trusted_ips.join(", ")) } }
                    }
                }
                form.inline method="post" action=(format!("/ui/identities/{id}/oidc-auth/remove")) {
                    (csrf_field(&ctx))
                    button.danger type="submit" { "Remove the OIDC configuration" }
                }
            }
            None => p.empty { "Not set: this identity cannot log in yet. Set it below." },
        }
        form method="post" action=(format!("/ui/identities/{id}/oidc-auth")) {
            fieldset {
                legend { "Set how it logs in" }
                (csrf_field(&ctx))
                label for="o-disc" { "Discovery URL (the issuer's base URL)" }
                input id="o-disc" name="discovery_url" required value=(cfg.as_ref().map(|c| c.discovery_url.clone()).unwrap_or_default()) autocomplete="off";
                label for="o-iss" { "Issuer (the JWT's iss, exactly)" }
                input id="o-iss" name="issuer" required value=(cfg.as_ref().map(|c| c.issuer.clone()).unwrap_or_default()) autocomplete="off";
                label for="o-sub" { "Subject pattern (* within a segment, ** across /)" }
                input id="o-sub" name="subject" value=(cfg.as_ref().map(|c| c.subject.clone()).unwrap_or_default()) autocomplete="off";
                label for="o-aud" { "Audiences (comma-separated)" }
                input id="o-aud" name="audiences" value=(cfg.as_ref().map(|c| c.audiences.join(",")).unwrap_or_default()) autocomplete="off";
                label for="o-claims" { "Claims, one NAME=PATTERN a line" }
                textarea id="o-claims" name="claims" rows="3" { (claims) }
                button type="submit" { "Save" }
            }
        }
    };
    ctx.page(StatusCode::OK, &title, body)
}

pub async fn set_oidc_auth(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let back = format!("/ui/identities/{id}");
    let req = api::OidcAuthRequest {
        discovery_url: field(&form, "discovery_url").to_string(),
        issuer: field(&form, "issuer").to_string(),
        subject: field(&form, "subject").to_string(),
        audiences: field(&form, "audiences")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        claims: field(&form, "claims")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
        ..Default::default()
    };
    let r = r::identities::put_oidc_auth(
        State(state),
        me,
        RemoteAddr(ctx.addr.clone()),
        Path(id),
        ApiJson(req),
    )
    .await;
    ctx.after(&back, r, |_| "Saved how it logs in.".into())
}

pub async fn remove_oidc_auth(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): F,
) -> Response {
    let me = admin!(ctx);
    form_checked!(ctx, form);
    let back = format!("/ui/identities/{id}");
    let r =
        r::identities::delete_oidc_auth(State(state), me, RemoteAddr(ctx.addr.clone()), Path(id))
            .await;
    ctx.after(&back, r, |_| "Removed the OIDC configuration.".into())
}

// ------------------------------------------------------------------ audit

#[derive(serde::Deserialize, Default)]
pub struct AuditFilter {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    page: Option<u64>,
}

pub async fn audit(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(f): Query<AuditFilter>,
) -> Response {
    let me = admin!(ctx);
    let page = f.page.unwrap_or(1).max(1);
    let q = api::AuditQuery {
        action: Some(f.action.trim().to_string()).filter(|s| !s.is_empty()),
        actor: Some(f.actor.trim().to_string()).filter(|s| !s.is_empty()),
        since: Some(f.since.trim().to_string()).filter(|s| !s.is_empty()),
        until: Some(f.until.trim().to_string()).filter(|s| !s.is_empty()),
        page: Some(page),
        limit: Some(50),
    };
    let list = match r::audit::list(State(state), me, ApiQuery(q)).await {
        Ok(Json(l)) => l,
        Err(e) => return error_page(ctx, "Audit log", e),
    };
    let link = |p: u64| {
        let mut u = url::Url::parse("https://x/ui/audit").expect("a fixed URL");
        u.query_pairs_mut()
            .append_pair("action", &f.action)
            .append_pair("actor", &f.actor)
            .append_pair("since", &f.since)
            .append_pair("until", &f.until)
            .append_pair("page", &p.to_string());
        format!("/ui/audit?{}", u.query().unwrap_or_default())
    };
    let body = html! {
        form method="get" action="/ui/audit" {
            fieldset {
                legend { "Filter" }
                label for="a-action" { "Action (e.g. login, grant.create)" }
                input id="a-action" name="action" value=(f.action) autocomplete="off";
                label for="a-actor" { "Actor" }
                input id="a-actor" name="actor" value=(f.actor) autocomplete="off";
                label for="a-since" { "From (UTC, e.g. 2026-12-01 or 2026-12-01 10:00)" }
                input id="a-since" name="since" value=(f.since) autocomplete="off";
                label for="a-until" { "Until (UTC; a date includes that day)" }
                input id="a-until" name="until" value=(f.until) autocomplete="off";
                button type="submit" { "Filter" }
            }
        }
        @if list.items.is_empty() {
            p.empty { "Nothing matches. Clear the filter to see everything." }
        } @else {
            table id="audit" {
                thead { tr { th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Result" } th scope="col" { "From" } th scope="col" { "Detail" } } }
                tbody {
                    @for e in &list.items {
                        tr {
                            td data-label="Time" { (short(&e.time)) }
                            td data-label="Actor" { (e.actor) }
                            td data-label="Action" { (e.action) }
                            td data-label="Target" { (e.target) }
                            td data-label="Result" { (e.result) @if e.count > 1 { " " span.muted { "(" (e.count) " times)" } } }
                            td data-label="From" { (e.remote_addr) }
                            td data-label="Detail" { (e.detail) }
                        }
                    }
                }
            }
            nav aria-label="Pages" {
                p {
                    "Page " (list.page) " of " (list.total_pages.max(1)) " (" (list.total_count) " entries) "
                    @if list.page > 1 { a href=(link(list.page - 1)) { "Newer" } " " }
                    @if list.page < list.total_pages { a href=(link(list.page + 1)) { "Older" } }
                }
            }
        }
    };
    ctx.page(StatusCode::OK, "Audit log", body)
}
