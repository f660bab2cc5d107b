//! `/api/identities`: machine identities (admins only).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use crate::api::{CreateIdentityRequest, Identity, ListResponse, NameQuery};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, Caller, RemoteAddr, list as to_list, page};
use crate::server::store::IdentityRow;

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
    Query(q): Query<NameQuery>,
) -> ApiResult<Json<ListResponse<Identity>>> {
    caller.require_admin()?;
    let p = page(q.page, q.limit)?;
    let rows = state.store.list_identities(q.name.as_deref(), p).await?;
    Ok(Json(to_list(p, rows, to_api)))
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
