//! `/api/access-keys`: a user's keys (admins: anyone's, and connectors').
//! The key itself is returned once, at creation.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;

use crate::api::{
    AccessKey, AccessKeyQuery, CreateAccessKeyRequest, CreateAccessKeyResponse, ListResponse,
};
use crate::server::AppState;
use crate::server::crypto;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, ApiQuery, Caller, RemoteAddr, list as to_list, page};
use crate::server::store::{self, AccessKeyRow, NewAccessKey, StoreError, Subject};

use super::ts;
use super::users::audit;

/// The name of the built-in user that owns connector keys.
pub const CONNECTOR_USER: &str = "connector";
const DEFAULT_EXPIRY: Duration = Duration::from_secs(30 * 86_400);
const DEFAULT_INACTIVITY: Duration = Duration::from_secs(3 * 86_400);
const MAX_EXPIRY: Duration = Duration::from_secs(10 * 365 * 86_400);

fn to_api(k: AccessKeyRow) -> AccessKey {
    AccessKey {
        id: k.id,
        name: k.name,
        user_id: k.owner_id,
        user_name: k.owner_name,
        created: ts(k.created_at),
        expires: ts(k.expires_at),
        inactivity_timeout: humantime::format_duration(Duration::from_secs(
            k.inactivity_timeout.max(0) as u64,
        ))
        .to_string(),
        inactivity_deadline: ts(k.inactivity_deadline),
        last_used: k.last_used_at.map(ts),
        destination: k.destination,
    }
}

fn duration(field: &str, value: Option<&str>, default: Duration) -> ApiResult<Duration> {
    let Some(v) = value else { return Ok(default) };
    let d = crate::server::parse_duration(v).map_err(|e| ApiError::field(field, e))?;
    if d.as_secs() < 60 {
        return Err(ApiError::field(field, "must be at least a minute"));
    }
    if d > MAX_EXPIRY {
        return Err(ApiError::field(field, "must be at most 10 years"));
    }
    Ok(d)
}

#[utoipa::path(get, path = "/api/access-keys", tag = "access-keys", params(AccessKeyQuery),
    responses((status = 200, body = ListResponse<AccessKey>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AccessKeyQuery>,
) -> ApiResult<Json<ListResponse<AccessKey>>> {
    let p = page(q.page, q.limit)?;
    let owner = if caller.is_admin {
        q.user_id
    } else {
        let me = caller.subject.id().to_string();
        if q.user_id.as_deref().is_some_and(|u| u != me) {
            return Err(ApiError::forbidden(
                "you may only list your own access keys",
            ));
        }
        Some(me)
    };
    let rows = state
        .store
        .list_access_keys(owner.as_deref(), q.name.as_deref(), p)
        .await?;
    Ok(Json(to_list(p, rows, to_api)?))
}

#[utoipa::path(post, path = "/api/access-keys", tag = "access-keys",
    request_body = CreateAccessKeyRequest, responses((status = 201, body = CreateAccessKeyResponse)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<CreateAccessKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreateAccessKeyResponse>)> {
    if caller.machine_token {
        // It would outlive the token's TTL, uses and trusted IPs.
        return Err(ApiError::forbidden(
            "a machine identity's access token cannot create access keys; renew it or log in \
             again with a fresh JWT",
        ));
    }
    if let Some(d) = &caller.key_destination {
        // A connector key serves one destination and nothing else: a key
        // it made would serve none, and outlive it.
        return Err(ApiError::forbidden(format!(
            "a connector key (for {d}) cannot create access keys"
        )));
    }
    if req.connector {
        caller.require_admin()?;
    }
    if req.destination.is_some() && !req.connector {
        return Err(ApiError::field(
            "destination",
            "only connector keys are bound to a destination (add connector: true)",
        ));
    }
    // A connector key serves exactly one destination, fixed now.
    let destination = if req.connector {
        let d = req
            .destination
            .clone()
            .or_else(|| req.name.clone())
            .ok_or_else(|| {
                ApiError::field(
                    "destination",
                    "a connector key serves one destination: name it (e.g. prod)",
                )
            })?;
        if !super::is_dns_label(&d) || d == crate::api::INFRA_DESTINATION {
            return Err(ApiError::field(
                "destination",
                "must be a destination name: lowercase letters, digits and dashes (at most 63), \
                 not \"infra\"",
            ));
        }
        Some(d)
    } else {
        None
    };
    let (owner_kind, owner_id, owner_name) = if req.connector {
        caller.require_admin()?;
        let u = state
            .store
            .find_user_by_name(CONNECTOR_USER)
            .await?
            .ok_or_else(|| ApiError::internal("the built-in connector user is missing"))?;
        ("user", u.id, u.name)
    } else if let Some(uid) = req
        .user_id
        .as_deref()
        .filter(|u| Some(*u) != caller.user_id())
    {
        caller.require_admin()?;
        match state.store.get_user(uid).await {
            Ok(u) => ("user", u.id, u.name),
            Err(StoreError::NotFound(_)) => {
                return Err(ApiError::field(
                    "userID",
                    format!("no user with id {uid:?}"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        let kind = match caller.subject {
            Subject::Identity(_) => "identity",
            _ => "user",
        };
        (kind, caller.subject.id().to_string(), caller.name.clone())
    };
    let mut expires_at =
        store::now() + duration("expiry", req.expiry.as_deref(), DEFAULT_EXPIRY)?.as_secs() as i64;
    // A key the user makes with their own key stands on the same provider
    // session: it is revoked with it, and never outlives a session that no
    // refresh token can re-check.
    let provider_id = if owner_id == caller.subject.id() && !req.connector {
        caller.key_provider_id.clone()
    } else {
        None
    };
    if let Some(p) = &provider_id
        && let Some(link) = state.store.get_provider_user(p, &owner_id).await?
        && link.refresh_token_enc.is_empty()
    {
        expires_at = expires_at.min(caller.key_expires_at);
    }
    let inactivity = duration(
        "inactivityTimeout",
        req.inactivity_timeout.as_deref(),
        DEFAULT_INACTIVITY,
    )?;
    let key = crypto::generate_access_key();
    let name = match req.name {
        Some(n) => {
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(ApiError::field(
                    "name",
                    "must be 1 to 64 letters, digits, dots, dashes or underscores",
                ));
            }
            n
        }
        None => format!("key-{}", key.id.to_ascii_lowercase()),
    };
    let row = state
        .store
        .create_access_key(&NewAccessKey {
            id: &key.id,
            name: &name,
            owner_kind,
            owner_id: &owner_id,
            secret_hash: &key.secret_hash,
            expires_at,
            inactivity_timeout: inactivity.as_secs() as i64,
            destination: destination.as_deref(),
            provider_id: provider_id.as_deref(),
            // The same sign-in, so the same moment of authentication.
            auth_time: provider_id.as_ref().and(caller.key_auth_time),
        })
        .await?;
    let target = match &destination {
        Some(d) => format!("{owner_name}/{name} (destination {d})"),
        None => format!("{owner_name}/{name}"),
    };
    audit(&state, &caller, "key.create", &target, &addr).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateAccessKeyResponse {
            id: row.id,
            name: row.name,
            user_id: row.owner_id,
            access_key: key.key.expose_secret().into(),
            expires: ts(row.expires_at),
            destination: row.destination,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/access-keys/{id}", tag = "access-keys",
    responses((status = 204)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let k = state.store.get_access_key(&id).await?;
    if !caller.is_admin && k.owner_id != caller.subject.id() {
        return Err(ApiError::forbidden(
            "you may only remove your own access keys",
        ));
    }
    state.store.delete_access_key(&id).await?;
    audit(
        &state,
        &caller,
        "key.remove",
        &format!("{}/{}", k.owner_name, k.name),
        &addr,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
