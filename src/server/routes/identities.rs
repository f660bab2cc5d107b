//! `/api/identities`: machine identities and their oidc-auth
//! configuration (admins only); and the unauthenticated oidc-auth login,
//! renew and revoke under `/api/v1/auth`, where a workload trades its own
//! OIDC JWT for an access token (checks in `machine_auth`). Those three take
//! JSON or a form, and no `Infra-Version` header (the path carries the
//! version), so a CI script can call them with plain curl; failed logins
//! are rate-limited like people's (`server::ratelimit`).

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;

use crate::api::{
    AccessTokenRequest, CreateIdentityRequest, FieldError, Identity, ListResponse,
    MachineAccessToken, NameQuery, OidcAuth, OidcAuthLoginRequest, OidcAuthRequest,
};
use crate::server::AppState;
use crate::server::crypto;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{
    ApiJson, ApiQuery, Caller, JsonOrForm, RemoteAddr, list as to_list, page,
};
use crate::server::machine_auth::{
    JwtError, binding_problem, config_problem, ip_trusted, parse_cidr, pattern_problem, verify_jwt,
};
use crate::server::ratelimit::{self, Account, Attempt};
use crate::server::store::{
    self, AccessKeyRow, AuditEntry, IdentityRow, MachineTokenRow, NewAccessKey, NewMachineToken,
    OidcAuthRow, StoreError,
};

use super::users::audit;
use super::{is_dns_label, ts};

fn to_api(i: IdentityRow) -> Identity {
    Identity {
        id: i.id,
        name: i.name,
        created: ts(i.created_at),
    }
}

#[utoipa::path(get, path = "/api/identities", tag = "identities", params(NameQuery),
    responses((status = 200, body = ListResponse<Identity>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<NameQuery>,
) -> ApiResult<Json<ListResponse<Identity>>> {
    caller.require_admin()?;
    let p = page(q.page, q.limit)?;
    let rows = state.store.list_identities(q.name.as_deref(), p).await?;
    Ok(Json(to_list(p, rows, to_api)?))
}

#[utoipa::path(get, path = "/api/identities/{id}", tag = "identities",
    responses((status = 200, body = Identity)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Identity>> {
    caller.require_admin()?;
    Ok(Json(to_api(state.store.get_identity(&id).await?)))
}

#[utoipa::path(post, path = "/api/identities", tag = "identities",
    request_body = CreateIdentityRequest, responses((status = 201, body = Identity)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<CreateIdentityRequest>,
) -> ApiResult<(StatusCode, Json<Identity>)> {
    caller.require_admin()?;
    if !is_dns_label(&req.name) {
        return Err(ApiError::field(
            "name",
            "must be lowercase letters, digits and dashes (at most 63), like a DNS label",
        ));
    }
    let i = state.store.create_identity(&req.name).await?;
    audit(&state, &caller, "identity.create", &i.name, &addr).await?;
    Ok((StatusCode::CREATED, Json(to_api(i))))
}

#[utoipa::path(delete, path = "/api/identities/{id}", tag = "identities",
    responses((status = 204)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let i = state.store.get_identity(&id).await?;
    state.store.delete_identity(&id).await?;
    audit(&state, &caller, "identity.remove", &i.name, &addr).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ oidc-auth configuration

const MAX_TTL_LIMIT: u64 = 10 * 365 * 86_400;

fn secs(d: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d)).to_string()
}

fn oidc_auth_to_api(c: OidcAuthRow, identity_name: String) -> OidcAuth {
    OidcAuth {
        identity_id: c.identity_id,
        identity_name,
        discovery_url: c.discovery_url,
        issuer: c.issuer,
        ca_cert: c.ca_pem,
        subject: c.subject,
        audiences: c.audiences,
        claims: c.claims,
        access_token_ttl: c.access_token_ttl.max(0) as u64,
        access_token_max_ttl: c.access_token_max_ttl.max(0) as u64,
        access_token_max_uses: c.access_token_max_uses.max(0) as u64,
        access_token_trusted_ips: c.trusted_ips,
        created: ts(c.created_at),
        updated: ts(c.updated_at),
    }
}

fn check_pattern(field: &str, p: &str) -> ApiResult<()> {
    if p.trim().is_empty() || p.len() > 1024 || p.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must be a pattern of 1 to 1024 characters without control characters",
        ));
    }
    if let Some(why) = pattern_problem(p) {
        return Err(ApiError::field(field, format!("{p:?}: {why}")));
    }
    Ok(())
}

/// A 400 naming both fields that could bind a workload.
fn binds_nothing(why: String) -> ApiError {
    let field = |name: &str| FieldError {
        field_name: name.to_string(),
        errors: vec![why.clone()],
    };
    let mut e = ApiError::bad_request(format!("subject or claims: {why}"));
    e.field_errors = vec![field("subject"), field("claims")];
    e
}

/// Checks a configuration and fills in the defaults.
fn validate(identity_id: &str, req: OidcAuthRequest) -> ApiResult<OidcAuthRow> {
    let discovery_url = req.discovery_url.trim().to_string();
    match url::Url::parse(&discovery_url) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host_str().is_some() => {}
        _ => {
            return Err(ApiError::field(
                "discoveryURL",
                "must be an http(s) URL: the issuer's (e.g. https://gitlab.com) or its \
                 discovery document's",
            ));
        }
    }
    if req.issuer.trim().is_empty() || req.issuer.len() > 2048 {
        return Err(ApiError::field(
            "issuer",
            "must be the exact iss of the JWTs, e.g. https://gitlab.com",
        ));
    }
    let ca_pem = req.ca_cert.unwrap_or_default();
    if !ca_pem.trim().is_empty() {
        let ok = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
            .map(|c| !c.is_empty())
            .unwrap_or(false);
        if !ok {
            return Err(ApiError::field(
                "caCert",
                "must hold PEM certificates (-----BEGIN CERTIFICATE-----)",
            ));
        }
    }
    if !req.subject.is_empty() {
        check_pattern("subject", &req.subject)?;
    }
    for a in &req.audiences {
        check_pattern("audiences", a)?;
    }
    for (k, v) in &req.claims {
        if k.trim().is_empty() || k.len() > 256 {
            return Err(ApiError::field("claims", "claim names must not be empty"));
        }
        check_pattern("claims", v)?;
    }
    // Audiences do not count: every workload of the issuer can ask for one.
    if let Some(why) = binding_problem(&req.subject, &req.claims) {
        return Err(binds_nothing(why));
    }
    let ttl = req
        .access_token_ttl
        .unwrap_or(crate::api::DEFAULT_ACCESS_TOKEN_TTL);
    let max_ttl = req
        .access_token_max_ttl
        .unwrap_or(crate::api::DEFAULT_ACCESS_TOKEN_MAX_TTL);
    if max_ttl == 0 || max_ttl > MAX_TTL_LIMIT {
        return Err(ApiError::field(
            "accessTokenMaxTTL",
            "must be between 1 second and 10 years",
        ));
    }
    if ttl == 0 {
        return Err(ApiError::field(
            "accessTokenTTL",
            "must be at least 1 second",
        ));
    }
    if ttl > max_ttl {
        return Err(ApiError::field(
            "accessTokenTTL",
            format!(
                "the access token TTL ({}) must not exceed the max TTL ({})",
                secs(ttl),
                secs(max_ttl)
            ),
        ));
    }
    let max_uses = req.access_token_max_uses.unwrap_or(0);
    if max_uses > i64::MAX as u64 {
        return Err(ApiError::field("accessTokenMaxUses", "is too large"));
    }
    let ips = req.access_token_trusted_ips.unwrap_or_else(|| {
        crate::api::DEFAULT_TRUSTED_IPS
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    if ips.is_empty() {
        return Err(ApiError::field(
            "accessTokenTrustedIPs",
            "must hold at least one CIDR (0.0.0.0/0 and ::/0 allow every address)",
        ));
    }
    let mut trusted_ips = Vec::new();
    for ip in &ips {
        let net = parse_cidr(ip).map_err(|e| ApiError::field("accessTokenTrustedIPs", e))?;
        let s = net.to_string();
        if !trusted_ips.contains(&s) {
            trusted_ips.push(s);
        }
    }
    Ok(OidcAuthRow {
        identity_id: identity_id.to_string(),
        discovery_url,
        issuer: req.issuer.trim().to_string(),
        ca_pem,
        subject: req.subject,
        audiences: req.audiences,
        claims: req.claims,
        access_token_ttl: ttl as i64,
        access_token_max_ttl: max_ttl as i64,
        access_token_max_uses: max_uses as i64,
        trusted_ips,
        created_at: 0,
        updated_at: 0,
    })
}

#[utoipa::path(put, path = "/api/identities/{id}/oidc-auth", tag = "identities",
    request_body = OidcAuthRequest,
    responses((status = 200, body = OidcAuth), (status = 400, body = crate::api::ErrorResponse)))]
pub async fn put_oidc_auth(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<OidcAuthRequest>,
) -> ApiResult<Json<OidcAuth>> {
    caller.require_admin()?;
    let i = state.store.find_identity(&id).await?;
    let row = validate(&i.id, req)?;
    let row = state.store.put_oidc_auth(&row).await?;
    audit(&state, &caller, "identity.oidc_auth.set", &i.name, &addr).await?;
    Ok(Json(oidc_auth_to_api(row, i.name)))
}

#[utoipa::path(get, path = "/api/identities/{id}/oidc-auth", tag = "identities",
    responses((status = 200, body = OidcAuth), (status = 404, body = crate::api::ErrorResponse)))]
pub async fn get_oidc_auth(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<OidcAuth>> {
    caller.require_admin()?;
    let i = state.store.find_identity(&id).await?;
    let row = state.store.get_oidc_auth(&i.id).await?;
    Ok(Json(oidc_auth_to_api(row, i.name)))
}

/// Removes the configuration and revokes the access tokens it issued.
#[utoipa::path(delete, path = "/api/identities/{id}/oidc-auth", tag = "identities",
    responses((status = 204), (status = 404, body = crate::api::ErrorResponse)))]
pub async fn delete_oidc_auth(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let i = state.store.find_identity(&id).await?;
    state.store.delete_oidc_auth(&i.id).await?;
    audit(&state, &caller, "identity.oidc_auth.remove", &i.name, &addr).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ oidc-auth login

/// Records a refused login (counted against its limits; the same refusal
/// from the same source within an hour is one audit entry), tells the
/// caller which check failed.
async fn refuse(state: &AppState, attempt: &Attempt<'_>, target: &str, why: &str) -> ApiError {
    state.metrics.login("oidc_auth", "failure");
    // The stranger's own text (an identity name, a token's `kid`) is
    // quoted back only so far.
    let target = crate::api::clip(target, 128);
    let why = crate::api::clip(why, 512);
    let (target, why) = (target.as_ref(), why.as_ref());
    if let Err(e) = ratelimit::failed(&state.store, attempt).await {
        return e.into();
    }
    let entry = AuditEntry {
        actor: target,
        action: "identity.login",
        target,
        result: "failure",
        remote_addr: &attempt.source,
        detail: &format!("oidc-auth: {why}"),
    };
    if let Err(e) = state
        .store
        .audit_repeated(&entry, ratelimit::AUDIT_REPEAT_WINDOW_MS)
        .await
    {
        return e.into();
    }
    ApiError::unauthorized(format!("oidc-auth login as {target:?} failed: {why}"))
}

fn token_response(
    key: &str,
    expires_at: i64,
    now: i64,
    max_ttl: i64,
    identity_id: &str,
    identity_name: &str,
) -> MachineAccessToken {
    MachineAccessToken {
        access_token: key.to_string().into(),
        expires_in: (expires_at - now).max(0) as u64,
        access_token_max_ttl: max_ttl.max(0) as u64,
        token_type: "Bearer".to_string(),
        identity_id: identity_id.to_string(),
        identity_name: identity_name.to_string(),
    }
}

/// A workload trades its OIDC JWT for an access token of a machine
/// identity. No authentication: the JWT is the credential. Like renew and
/// revoke it needs no `Infra-Version` header and takes JSON or a form.
#[utoipa::path(post, path = "/api/v1/auth/oidc-auth/login", tag = "identities",
    request_body(content(
        (OidcAuthLoginRequest = "application/json"),
        (OidcAuthLoginRequest = "application/x-www-form-urlencoded"))),
    responses((status = 200, body = MachineAccessToken), (status = 401, body = crate::api::ErrorResponse),
              (status = 429, body = crate::api::ErrorResponse)))]
pub async fn oidc_auth_login(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    JsonOrForm(req): JsonOrForm<OidcAuthLoginRequest>,
) -> ApiResult<Json<MachineAccessToken>> {
    let wanted = req.identity_id.trim();
    if wanted.is_empty() || wanted.len() > 256 {
        return Err(ApiError::field(
            "identityId",
            "must be the machine identity's id or name",
        ));
    }
    let identity = match state.store.find_identity(wanted).await {
        Ok(i) => Some(i),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let account = match &identity {
        Some(i) => Account::Identity {
            id: &i.id,
            name: &i.name,
        },
        None => Account::None,
    };
    let attempt = Attempt::machine(&addr, account);
    ratelimit::check(&state, &attempt).await?;
    let Some(identity) = &identity else {
        return Err(refuse(&state, &attempt, wanted, "there is no such identity").await);
    };
    let target = identity.name.as_str();
    let cfg = match state.store.get_oidc_auth(&identity.id).await {
        Ok(c) => c,
        Err(StoreError::NotFound(_)) => {
            let why = format!(
                "the identity has no oidc-auth configuration; an admin adds one with `infra \
                 identities oidc-auth set {target}`"
            );
            return Err(refuse(&state, &attempt, target, &why).await);
        }
        Err(e) => return Err(e.into()),
    };
    let remote = addr.parse::<IpAddr>().ok();
    if !ip_trusted(&cfg.trusted_ips, remote) {
        let why = format!(
            "logins from {} are not allowed: the address is not among the identity's trusted IPs",
            if addr.is_empty() { "here" } else { &addr }
        );
        return Err(refuse(&state, &attempt, target, &why).await);
    }
    // Saved by an older version, it may accept every workload of the issuer.
    if let Some(why) = config_problem(&cfg) {
        let why = format!(
            "its oidc-auth configuration is refused: {why}; an admin fixes it with `infra \
             identities oidc-auth set {target} …`"
        );
        return Err(refuse(&state, &attempt, target, &why).await);
    }
    let now = store::now();
    let mut refreshed = false;
    let claims = loop {
        let keys =
            match crate::server::machine_auth::issuer_keys(&state.issuers, &cfg, refreshed).await {
                Ok(k) => k,
                Err(why) => return Err(refuse(&state, &attempt, target, &why).await),
            };
        match verify_jwt(req.jwt.expose_secret(), &keys, &cfg, now) {
            Ok(c) => break c,
            // The issuer may have rotated its keys: fetch them once more.
            Err(JwtError::UnknownKey(_)) if !refreshed => refreshed = true,
            Err(JwtError::UnknownKey(why) | JwtError::Rejected(why)) => {
                return Err(refuse(&state, &attempt, target, &why).await);
            }
        }
    };

    let key = crypto::generate_access_key();
    let name = format!("oidc-auth-{}", key.id.to_ascii_lowercase());
    let expires_at = now + cfg.access_token_ttl.min(cfg.access_token_max_ttl);
    state
        .store
        .create_machine_token(&NewMachineToken {
            key: NewAccessKey {
                id: &key.id,
                name: &name,
                owner_kind: "identity",
                owner_id: &identity.id,
                secret_hash: &key.secret_hash,
                expires_at,
                // The expiry, moved by renewals, is what ends it.
                inactivity_timeout: cfg.access_token_max_ttl,
                destination: None,
                provider_id: None,
                auth_time: None,
            },
            login_at: now,
            ttl: cfg.access_token_ttl,
            max_ttl: cfg.access_token_max_ttl,
            max_uses: cfg.access_token_max_uses,
            trusted_ips: &cfg.trusted_ips,
        })
        .await?;
    state.metrics.login("oidc_auth", "success");
    ratelimit::succeeded(&state.store, &attempt).await?;
    let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("");
    state
        .store
        .audit(&AuditEntry {
            actor: target,
            action: "identity.login",
            target,
            result: "success",
            remote_addr: &addr,
            detail: &format!("oidc-auth: sub {sub:?}, key {}", key.id),
        })
        .await?;
    Ok(Json(token_response(
        key.key.expose_secret(),
        expires_at,
        now,
        cfg.access_token_max_ttl,
        &identity.id,
        &identity.name,
    )))
}

/// The stored key and bounds of a presented machine token; 401 when it is
/// not one that exists, 400 when it is another kind of key.
async fn machine_token(
    state: &AppState,
    presented: &str,
) -> ApiResult<(AccessKeyRow, MachineTokenRow)> {
    let invalid = || ApiError::unauthorized("the access token is not valid; log in again");
    let (id, secret) = crypto::parse_access_key(presented).ok_or_else(invalid)?;
    let row = match state.store.get_access_key(id).await {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => return Err(invalid()),
        Err(e) => return Err(e.into()),
    };
    if !crypto::secret_matches(secret, &row.secret_hash) {
        return Err(invalid());
    }
    match state.store.get_machine_token(&row.id).await? {
        Some(t) => Ok((row, t)),
        None => Err(ApiError::field(
            "accessToken",
            "is not a machine identity's access token (from POST /api/v1/auth/oidc-auth/login)",
        )),
    }
}

/// Extends a machine token by its TTL, never past its max TTL from login.
#[utoipa::path(post, path = "/api/v1/auth/token/renew", tag = "identities",
    request_body(content(
        (AccessTokenRequest = "application/json"),
        (AccessTokenRequest = "application/x-www-form-urlencoded"))),
    responses((status = 200, body = MachineAccessToken), (status = 401, body = crate::api::ErrorResponse)))]
pub async fn renew_token(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    JsonOrForm(req): JsonOrForm<AccessTokenRequest>,
) -> ApiResult<Json<MachineAccessToken>> {
    let (row, t) = machine_token(&state, req.access_token.expose_secret()).await?;
    let now = store::now();
    if now >= t.hard_expiry() {
        return Err(ApiError::unauthorized(format!(
            "the access token reached its max TTL ({} since login) and cannot be renewed; log in \
             again with a fresh JWT",
            secs(t.max_ttl.max(0) as u64)
        )));
    }
    if row.expires_at <= now {
        return Err(ApiError::unauthorized(
            "the access token has expired (renew it before it does); log in again with a fresh JWT",
        ));
    }
    if !ip_trusted(&t.trusted_ips, addr.parse().ok()) {
        return Err(ApiError::unauthorized(format!(
            "this access token may not be used from {addr}: the address is not among its \
             trusted IPs"
        )));
    }
    if t.max_uses > 0 && t.uses >= t.max_uses {
        return Err(ApiError::unauthorized(format!(
            "this access token has used up its {} uses; log in again with a fresh JWT",
            t.max_uses
        )));
    }
    let expires_at = (now + t.ttl).min(t.hard_expiry()).max(row.expires_at);
    state.store.renew_machine_token(&row.id, expires_at).await?;
    state
        .store
        .audit(&AuditEntry {
            actor: &row.owner_name,
            action: "identity.renew",
            target: &format!("key:{}", row.id),
            result: "success",
            remote_addr: &addr,
            detail: "",
        })
        .await?;
    Ok(Json(token_response(
        req.access_token.expose_secret().trim(),
        expires_at,
        now,
        t.max_ttl,
        &row.owner_id,
        &row.owner_name,
    )))
}

/// Revokes a machine token (expired ones too).
#[utoipa::path(post, path = "/api/v1/auth/token/revoke", tag = "identities",
    request_body(content(
        (AccessTokenRequest = "application/json"),
        (AccessTokenRequest = "application/x-www-form-urlencoded"))),
    responses((status = 204), (status = 401, body = crate::api::ErrorResponse)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    JsonOrForm(req): JsonOrForm<AccessTokenRequest>,
) -> ApiResult<StatusCode> {
    let (row, _) = machine_token(&state, req.access_token.expose_secret()).await?;
    match state.store.delete_access_key(&row.id).await {
        Ok(()) | Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    state
        .store
        .audit(&AuditEntry {
            actor: &row.owner_name,
            action: "identity.revoke",
            target: &format!("key:{}", row.id),
            result: "success",
            remote_addr: &addr,
            detail: "",
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
