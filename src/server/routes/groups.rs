//! `/api/groups`: groups and their members (admins only).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::api::{
    CreateGroupRequest, Group, ListResponse, NameQuery, UpdateGroupUsersRequest, User,
};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, ApiQuery, Caller, RemoteAddr, list as to_list, page};
use crate::server::store::{GroupRow, PageRequest, StoreError};

use super::users::audit;
use super::{check_subject_name, ts};

fn to_api(g: GroupRow) -> Group {
    Group {
        id: g.id,
        name: g.name,
        total_users: g.total_users.max(0) as u64,
        created: ts(g.created_at),
        updated: ts(g.updated_at),
    }
}

#[utoipa::path(get, path = "/api/groups", tag = "groups", params(NameQuery),
    responses((status = 200, body = ListResponse<Group>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<NameQuery>,
) -> ApiResult<Json<ListResponse<Group>>> {
    let p = page(q.page, q.limit)?;
    // Everyone may see their own groups; admins see all.
    let only_mine = if caller.is_admin {
        None
    } else {
        caller.user_id()
    };
    if !caller.is_admin && only_mine.is_none() {
        return Err(ApiError::forbidden("only users and admins may list groups"));
    }
    let rows = state
        .store
        .list_groups(q.name.as_deref(), only_mine, p)
        .await?;
    Ok(Json(to_list(p, rows, to_api)?))
}

#[utoipa::path(get, path = "/api/groups/{id}", tag = "groups", responses((status = 200, body = Group)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Group>> {
    caller.require_admin()?;
    Ok(Json(to_api(state.store.get_group(&id).await?)))
}

#[utoipa::path(post, path = "/api/groups", tag = "groups", request_body = CreateGroupRequest,
    responses((status = 201, body = Group)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    caller.require_admin()?;
    check_subject_name("name", &req.name)?;
    let g = state.store.create_group(&req.name).await?;
    audit(&state, &caller, "group.create", &g.name, &addr).await?;
    Ok((StatusCode::CREATED, Json(to_api(g))))
}

#[utoipa::path(delete, path = "/api/groups/{id}", tag = "groups", responses((status = 204)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let g = state.store.get_group(&id).await?;
    state.store.delete_group(&id).await?;
    audit(&state, &caller, "group.remove", &g.name, &addr).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/groups/{id}/users", tag = "groups",
    responses((status = 200, body = ListResponse<User>)))]
pub async fn members(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ListResponse<User>>> {
    caller.require_admin()?;
    state.store.get_group(&id).await?;
    let users = state.store.group_members(&id).await?;
    let total = users.len() as u64;
    let p = PageRequest {
        page: 1,
        limit: total.max(1),
    };
    Ok(Json(to_list(
        p,
        crate::server::store::Page {
            items: users,
            total,
        },
        super::users::to_api,
    )?))
}

#[utoipa::path(patch, path = "/api/groups/{id}/users", tag = "groups",
    request_body = UpdateGroupUsersRequest, responses((status = 200, body = Group)))]
pub async fn update_members(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateGroupUsersRequest>,
) -> ApiResult<Json<Group>> {
    caller.require_admin()?;
    let g = state.store.get_group(&id).await?;
    for (i, uid) in req.users_to_add.iter().enumerate() {
        match state.store.get_user(uid).await {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => {
                return Err(ApiError::field(
                    &format!("usersToAdd[{i}]"),
                    format!("no user with id {uid:?}"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    state
        .store
        .update_group_members(&id, &req.users_to_add, &req.users_to_remove)
        .await?;
    audit(&state, &caller, "group.members", &g.name, &addr).await?;
    Ok(Json(to_api(state.store.get_group(&id).await?)))
}
