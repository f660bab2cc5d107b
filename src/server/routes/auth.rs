//! Logging in and out without a browser: password or access key in, a new
//! access key out. Failed attempts are audited and rate-limited through the
//! audit log, so every replica sees the same count.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::ExposeSecret;

use crate::api::{LoginRequest, LoginResponse, VersionResponse, version};
use crate::server::AppState;
use crate::server::crypto;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, Caller, RemoteAddr};
use crate::server::oidc;
use crate::server::store::{self, AuditEntry, NewAccessKey};

/// Failed logins allowed per name (or key) in the window.
const MAX_FAILURES_PER_TARGET: u64 = 5;
/// Failed logins allowed per client address in the window.
const MAX_FAILURES_PER_ADDR: u64 = 20;
const FAILURE_WINDOW_MS: i64 = 5 * 60 * 1000;

#[utoipa::path(get, path = "/api/version", tag = "auth",
    responses((status = 200, body = VersionResponse)))]
pub async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: version::CURRENT.to_string(),
    })
}

#[utoipa::path(post, path = "/api/login", tag = "auth", request_body = LoginRequest,
    responses((status = 201, body = LoginResponse), (status = 401, body = crate::api::ErrorResponse),
              (status = 429, body = crate::api::ErrorResponse)))]
pub async fn login(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<(StatusCode, Json<LoginResponse>)> {
    match (req.password_credentials, req.access_key, req.oidc) {
        (Some(pc), None, None) => {
            let target = pc.name.trim().to_string();
            check_rate(&state, &target, &addr).await?;
            let user = state.store.find_user_by_name(&target).await?;
            let hash = user
                .as_ref()
                .filter(|u| u.kind == "user")
                .and_then(|u| u.password_hash.clone());
            let password = pc.password;
            let ok = tokio::task::spawn_blocking({
                let hash = hash.clone();
                move || crypto::verify_password(&password, hash.as_deref())
            })
            .await
            .map_err(ApiError::internal)?;
            let user = match user {
                Some(u) if ok => u,
                _ => {
                    fail(
                        &state,
                        "password",
                        &target,
                        &addr,
                        "wrong user name or password",
                    )
                    .await?;
                    return Err(ApiError::unauthorized(
                        "wrong user name or password; if you sign in through your company's \
                         identity provider, run `infra login SERVER` without --user",
                    ));
                }
            };
            let resp = issue_login_key(&state, "user", &user.id, &user.name, None).await?;
            state.store.touch_user(&user.id).await?;
            succeed(&state, "password", &user.name, &addr).await?;
            Ok((StatusCode::CREATED, Json(resp)))
        }
        (None, Some(key), None) => {
            let target = match crypto::parse_access_key(&key) {
                Some((id, _)) => format!("key:{id}"),
                None => "key:malformed".to_string(),
            };
            check_rate(&state, &target, &addr).await?;
            let row = match state.verify_access_key(&key).await {
                Ok(row) => row,
                Err(e) => {
                    fail(&state, "access_key", &target, &addr, &e.message).await?;
                    return Err(e);
                }
            };
            let resp = issue_login_key(
                &state,
                &row.owner_kind,
                &row.owner_id,
                &row.owner_name,
                Some(row.expires_at),
            )
            .await?;
            succeed(&state, "access_key", &row.owner_name, &addr).await?;
            Ok((StatusCode::CREATED, Json(resp)))
        }
        (None, None, Some(o)) => {
            let resp = oidc_login(&state, &addr, o).await?;
            Ok((StatusCode::CREATED, Json(resp)))
        }
        _ => Err(ApiError::field(
            "passwordCredentials",
            "give exactly one of passwordCredentials, accessKey or oidc",
        )),
    }
}

#[utoipa::path(post, path = "/api/logout", tag = "auth",
    responses((status = 204), (status = 401, body = crate::api::ErrorResponse)))]
pub async fn logout(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    caller: Caller,
) -> ApiResult<StatusCode> {
    state.store.delete_access_key(&caller.key_id).await?;
    state
        .store
        .audit(&AuditEntry {
            actor: &caller.name,
            action: "logout",
            target: &format!("key:{}", caller.key_id),
            result: "success",
            remote_addr: &addr,
            detail: "",
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Exchanges the code the CLI got through the browser, and signs the
/// person in as the user the provider vouches for.
async fn oidc_login(
    state: &AppState,
    addr: &str,
    o: crate::api::OidcLogin,
) -> ApiResult<LoginResponse> {
    let provider = match state.store.get_provider(&o.provider_id).await {
        Ok(p) => p,
        Err(store::StoreError::NotFound(_)) => {
            return Err(ApiError::field(
                "oidc.providerID",
                "no such provider; see GET /api/providers",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let user = sign_in_with_provider(
        state,
        addr,
        &provider,
        &o.code,
        &o.redirect_url,
        &o.code_verifier,
        &o.nonce,
    )
    .await?;
    let resp = issue_login_key(state, "user", &user.id, &user.name, None).await?;
    succeed(state, "oidc", &user.name, addr).await?;
    Ok(resp)
}

/// Exchanges an authorization code at the provider (with its PKCE
/// verifier), verifies the ID token and reads UserInfo, then makes the
/// person an infra user: created at the first sign-in, the provider's groups
/// synced, the provider link and refresh token (encrypted) kept. Failures
/// are audited and rate-limited per provider and client address. Issues no
/// key: that is the caller's business.
///
/// Shared by `POST /api/login` (the CLI's loopback redirect) and the web
/// sign-in of device codes (the server's own redirect URI).
pub(crate) async fn sign_in_with_provider(
    state: &AppState,
    addr: &str,
    provider: &store::ProviderRow,
    code: &str,
    redirect_url: &str,
    code_verifier: &str,
    nonce: &str,
) -> ApiResult<store::UserRow> {
    let target = format!("oidc:{}", provider.id);
    check_rate(state, &target, addr).await?;
    let secret = state.root_key.decrypt(&provider.client_secret_enc)?;
    let cfg = oidc::ProviderConfig {
        issuer: &provider.issuer,
        client_id: &provider.client_id,
        client_secret: &secret,
        ca_pem: &provider.ca_pem,
    };
    let id = match oidc::exchange_code(&cfg, code, redirect_url, code_verifier, nonce).await {
        Ok(id) => id,
        Err(oidc::OidcError::Rejected(msg)) => {
            fail(state, "oidc", &target, addr, &msg).await?;
            return Err(ApiError::unauthorized(format!(
                "sign-in with {} failed: {msg}",
                provider.name
            )));
        }
        Err(oidc::OidcError::Unreachable(msg) | oidc::OidcError::RateLimited(msg)) => {
            state.metrics.login("oidc", "error");
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("sign-in with {} failed: {msg}", provider.name),
            ));
        }
    };
    let user = match state.store.find_user_by_name(&id.user_name).await? {
        Some(u) => u,
        None => match state.store.create_user(&id.user_name, "user", None).await {
            Ok(u) => u,
            // Two sign-ins of a new user at once: the other one created it.
            Err(store::StoreError::Conflict(_)) => state
                .store
                .find_user_by_name(&id.user_name)
                .await?
                .ok_or_else(|| ApiError::internal("user vanished during sign-in"))?,
            Err(e) => return Err(e.into()),
        },
    };
    if user.kind != "user" {
        fail(state, "oidc", &target, addr, "reserved user name").await?;
        return Err(ApiError::forbidden(format!(
            "{:?} is a built-in user and cannot sign in",
            user.name
        )));
    }
    if let Some(groups) = &id.groups {
        state
            .store
            .sync_provider_groups(&provider.id, &user.id, groups)
            .await?;
    }
    let refresh_enc = id
        .refresh_token
        .as_ref()
        .map(|t| state.root_key.encrypt(t.expose_secret()))
        .unwrap_or_default();
    state
        .store
        .upsert_provider_user(&provider.id, &user.id, &id.subject, &id.email, &refresh_enc)
        .await?;
    state.store.touch_user(&user.id).await?;
    Ok(user)
}

/// A new session key for the owner, lasting the session expiry (and never
/// longer than `cap`, the key it was exchanged for).
pub(crate) async fn issue_login_key(
    state: &AppState,
    owner_kind: &str,
    owner_id: &str,
    owner_name: &str,
    cap: Option<i64>,
) -> ApiResult<LoginResponse> {
    let now = store::now();
    let mut expires_at = now + state.session_expiry.as_secs() as i64;
    if let Some(cap) = cap {
        expires_at = expires_at.min(cap);
    }
    let key = crypto::generate_access_key();
    let name = format!("login-{}", key.id.to_ascii_lowercase());
    state
        .store
        .create_access_key(&NewAccessKey {
            id: &key.id,
            name: &name,
            owner_kind,
            owner_id,
            secret_hash: &key.secret_hash,
            expires_at,
            inactivity_timeout: state.session_inactivity_timeout.as_secs() as i64,
        })
        .await?;
    Ok(LoginResponse {
        user_id: owner_id.to_string(),
        name: owner_name.to_string(),
        access_key: key.key.expose_secret().to_string(),
        expires: super::ts(expires_at),
    })
}

async fn check_rate(state: &AppState, target: &str, addr: &str) -> ApiResult<()> {
    let now = store::now_ms();
    let (by_target, by_addr, oldest) = state
        .store
        .login_failures(target, addr, now - FAILURE_WINDOW_MS)
        .await?;
    if by_target >= MAX_FAILURES_PER_TARGET || by_addr >= MAX_FAILURES_PER_ADDR {
        let until = match (by_target >= MAX_FAILURES_PER_TARGET, oldest) {
            (true, Some(oldest)) => oldest + FAILURE_WINDOW_MS,
            _ => now + FAILURE_WINDOW_MS,
        };
        let secs = ((until - now) / 1000).max(1) as u64;
        state.metrics.login("any", "rate_limited");
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins; try again in {secs} seconds"),
        );
        err.retry_after = Some(secs);
        return Err(err);
    }
    Ok(())
}

async fn fail(
    state: &AppState,
    method: &str,
    target: &str,
    addr: &str,
    why: &str,
) -> ApiResult<()> {
    state.metrics.login(method, "failure");
    state
        .store
        .audit(&AuditEntry {
            actor: target,
            action: "login",
            target,
            result: "failure",
            remote_addr: addr,
            detail: &format!("{method}: {why}"),
        })
        .await?;
    Ok(())
}

pub(crate) async fn succeed(
    state: &AppState,
    method: &str,
    name: &str,
    addr: &str,
) -> ApiResult<()> {
    state.metrics.login(method, "success");
    state
        .store
        .audit(&AuditEntry {
            actor: name,
            action: "login",
            target: name,
            result: "success",
            remote_addr: addr,
            detail: method,
        })
        .await?;
    Ok(())
}
