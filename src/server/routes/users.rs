//! `/api/users`: admins manage users; a user may read and re-password
//! themselves.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use crate::api::{CreateUserRequest, ListResponse, NameQuery, UpdateUserRequest, User};
use crate::server::AppState;
use crate::server::crypto;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, ApiQuery, Caller, RemoteAddr, list as to_list, page};
use crate::server::store::{AuditEntry, Origin, UserRow};

use super::{check_subject_name, ts};

pub fn to_api(u: UserRow) -> User {
    User {
        id: u.id,
        name: u.name,
        has_password: u.password_hash.is_some(),
        created: ts(u.created_at),
        updated: ts(u.updated_at),
        last_seen: u.last_seen_at.map(ts),
    }
}

const MIN_PASSWORD: usize = 8;

async fn hash(password: String) -> ApiResult<String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::field(
            "password",
            format!("must be at least {MIN_PASSWORD} characters"),
        ));
    }
    let secret = SecretString::from(password);
    tokio::task::spawn_blocking(move || crypto::hash_password(&secret))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

#[utoipa::path(get, path = "/api/users", tag = "users", params(NameQuery),
    responses((status = 200, body = ListResponse<User>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<NameQuery>,
) -> ApiResult<Json<ListResponse<User>>> {
    let p = page(q.page, q.limit)?;
    if !caller.is_admin && q.name.as_deref() != Some(caller.name.as_str()) {
        return Err(ApiError::forbidden(
            "only infra admins may list users; you may look up yourself with ?name=YOUR_NAME",
        ));
    }
    let rows = state.store.list_users(q.name.as_deref(), p).await?;
    Ok(Json(to_list(p, rows, to_api)?))
}

#[utoipa::path(get, path = "/api/users/{id}", tag = "users",
    responses((status = 200, body = User), (status = 404, body = crate::api::ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    if !caller.is_admin && caller.user_id() != Some(id.as_str()) {
        return Err(ApiError::forbidden("you may only read your own user"));
    }
    Ok(Json(to_api(state.store.get_user(&id).await?)))
}

#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUserRequest,
    responses((status = 201, body = User), (status = 409, body = crate::api::ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    caller.require_admin()?;
    check_subject_name("name", &req.name)?;
    if req.name.chars().any(char::is_whitespace) {
        return Err(ApiError::field("name", "must not hold spaces"));
    }
    let hash = match req.password {
        Some(p) => Some(hash(p.expose_secret().to_string()).await?),
        None => None,
    };
    let origin = match hash {
        Some(_) => Origin::Local,
        None => Origin::Invited,
    };
    let user = state
        .store
        .create_user(&req.name, "user", origin, hash.as_deref())
        .await?;
    audit(&state, &caller, "user.create", &user.name, &addr).await?;
    Ok((StatusCode::CREATED, Json(to_api(user))))
}

#[utoipa::path(put, path = "/api/users/{id}", tag = "users", request_body = UpdateUserRequest,
    responses((status = 200, body = User)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<User>> {
    if !caller.is_admin && caller.user_id() != Some(id.as_str()) {
        return Err(ApiError::forbidden("you may only change your own password"));
    }
    let user = state.store.get_user(&id).await?;
    // A user claimed by a provider account is a provider user too (the link
    // sets its origin; migration 0013 mends older ones).
    match user.origin() {
        // A password would let the person in after the provider ended their account.
        Origin::Provider => {
            return Err(ApiError::forbidden(format!(
                "{} signs in through an identity provider and cannot have a password: it \
                 would outlive the provider's account. An admin can make a separate local user \
                 (`infra users add NAME --password`)",
                user.name
            )));
        }
        Origin::Builtin if user.kind != "user" => {
            return Err(ApiError::forbidden("built-in users have no password"));
        }
        _ => {}
    }
    // Someone holding only a user's key must not be able to take over the password.
    if !caller.is_admin && user.password_hash.is_some() {
        let current = req.current_password.ok_or_else(|| {
            ApiError::field(
                "currentPassword",
                "give your current password to set a new one",
            )
        })?;
        let stored = user.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            crypto::verify_password(current.expose_secret(), stored.as_deref())
        })
        .await
        .map_err(ApiError::internal)?;
        if !ok {
            return Err(ApiError::field(
                "currentPassword",
                "is not your current password",
            ));
        }
    }
    let hash = hash(req.password.expose_secret().to_string()).await?;
    state.store.set_user_password(&id, &hash).await?;
    audit(&state, &caller, "user.password", &user.name, &addr).await?;
    Ok(Json(to_api(state.store.get_user(&id).await?)))
}

#[utoipa::path(delete, path = "/api/users/{id}", tag = "users", responses((status = 204)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if caller.user_id() == Some(id.as_str()) {
        return Err(ApiError::bad_request(
            "you cannot remove yourself; ask another admin",
        ));
    }
    let user = state.store.get_user(&id).await?;
    if user.kind != "user" {
        return Err(ApiError::bad_request("built-in users cannot be removed"));
    }
    state.store.delete_user(&id).await?;
    audit(&state, &caller, "user.remove", &user.name, &addr).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Records an admin action by `caller` in the audit log.
pub async fn audit(
    state: &AppState,
    caller: &Caller,
    action: &str,
    target: &str,
    addr: &str,
) -> ApiResult<()> {
    state
        .store
        .audit(&AuditEntry {
            actor: &caller.name,
            action,
            target,
            result: "success",
            remote_addr: addr,
            detail: "",
        })
        .await?;
    Ok(())
}
