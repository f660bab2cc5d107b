//! `/api/sessions`: exec and attach sessions recorded by connectors. A
//! destination's connector starts a session, appends its recording
//! (asciicast v2 text) in numbered chunks while it runs, and ends it with
//! the exit code. Admins list and play every session; others their own.
//! Every playback is audited.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{
    ASCIICAST_MEDIA_TYPE, CreateSessionRequest, EndSessionRequest, ListResponse, Session,
    SessionChunkQuery, SessionQuery,
};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, ApiQuery, Caller, RemoteAddr, list as to_list, page};
use crate::server::store::{self, AppendRefused, NewSession, SessionRow, Subject};

use super::is_dns_label;

fn to_api(r: SessionRow) -> Session {
    Session {
        id: r.id,
        destination: r.destination,
        namespace: r.namespace,
        pod: r.pod,
        container: r.container,
        kind: r.kind,
        command: r.command,
        user: r.user_name,
        user_id: r.user_id,
        client_address: r.client_address,
        started: super::ts_ms(r.started_ms),
        ended: r.ended_ms.map(super::ts_ms),
        exit_code: r.exit_code,
        end_reason: r.end_reason,
        bytes: r.bytes.max(0) as u64,
    }
}

/// A text field of a new session: short and printable.
fn check_text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} bytes of printable text"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/sessions", tag = "sessions", request_body = CreateSessionRequest,
    responses((status = 201, body = Session), (status = 403, body = crate::api::ErrorResponse)))]
/// A destination's connector starts recording a session.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    if !caller.is_connector {
        return Err(ApiError::forbidden(
            "only a destination's connector records its sessions",
        ));
    }
    if !is_dns_label(&req.destination) {
        return Err(ApiError::field("destination", "must be a destination name"));
    }
    super::destinations::check_connector_destination(
        &state,
        &caller,
        &req.destination,
        &addr,
        "session.create",
    )
    .await?;
    if req.kind != "exec" && req.kind != "attach" {
        return Err(ApiError::field("kind", "must be exec or attach"));
    }
    for (field, value, max) in [
        ("namespace", &req.namespace, 253),
        ("pod", &req.pod, 253),
        ("container", &req.container, 253),
        ("userId", &req.user_id, 256),
        ("user", &req.user, 256),
        ("clientAddress", &req.client_address, 64),
    ] {
        check_text(field, value, max)?;
    }
    if req.command.len() > 16 * 1024 {
        return Err(ApiError::field("command", "must be at most 16 KiB"));
    }
    let row = state
        .store
        .create_session(&NewSession {
            destination: &req.destination,
            namespace: &req.namespace,
            pod: &req.pod,
            container: &req.container,
            kind: &req.kind,
            command: &req.command,
            user_id: &req.user_id,
            user_name: &req.user,
            client_address: &req.client_address,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(to_api(row))))
}

/// The session, if the caller is the connector of its destination.
async fn connectors_session(
    state: &AppState,
    caller: &Caller,
    id: &str,
    addr: &str,
) -> ApiResult<SessionRow> {
    if !caller.is_connector {
        return Err(ApiError::forbidden(
            "only a destination's connector records its sessions",
        ));
    }
    let row = state.store.get_session(id).await?;
    super::destinations::check_connector_destination(
        state,
        caller,
        &row.destination,
        addr,
        "session.record",
    )
    .await?;
    Ok(row)
}

#[utoipa::path(post, path = "/api/sessions/{id}/chunks", tag = "sessions", params(SessionChunkQuery),
    request_body(content = String, content_type = "application/x-asciicast"),
    responses((status = 204), (status = 409, body = crate::api::ErrorResponse), (status = 413, body = crate::api::ErrorResponse)))]
/// The next piece of a session's recording (a retried `seq` is kept once).
pub async fn append(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<SessionChunkQuery>,
    body: String,
) -> ApiResult<StatusCode> {
    connectors_session(&state, &caller, &id, &addr).await?;
    if q.seq < 0 {
        return Err(ApiError::field("seq", "must be 0 or more"));
    }
    let max = i64::try_from(state.max_session_bytes).unwrap_or(i64::MAX);
    match state
        .store
        .append_session_chunk(&id, q.seq, &body, max)
        .await?
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(AppendRefused::Ended) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "this session has ended",
        )),
        Err(AppendRefused::Full) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the recording reached this server's --max-session-bytes ({} bytes)",
                state.max_session_bytes
            ),
        )),
    }
}

#[utoipa::path(post, path = "/api/sessions/{id}/end", tag = "sessions", request_body = EndSessionRequest,
    responses((status = 200, body = Session)))]
/// Ends a session: the exit code, and why when not by itself.
pub async fn end(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<EndSessionRequest>,
) -> ApiResult<Json<Session>> {
    connectors_session(&state, &caller, &id, &addr).await?;
    check_text("reason", &req.reason, 256)?;
    state
        .store
        .end_session(&id, req.exit_code, &req.reason)
        .await?;
    Ok(Json(to_api(state.store.get_session(&id).await?)))
}

/// The user id a non-admin may see sessions of: their own.
fn own_user(caller: &Caller) -> ApiResult<String> {
    match &caller.subject {
        Subject::User(id) | Subject::Identity(id) if !caller.is_connector => Ok(id.clone()),
        _ => Err(ApiError::forbidden("connectors do not read sessions")),
    }
}

#[utoipa::path(get, path = "/api/sessions", tag = "sessions", params(SessionQuery),
    responses((status = 200, body = ListResponse<Session>)))]
/// Recorded sessions, newest first: everyone's for admins, else one's own.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<SessionQuery>,
) -> ApiResult<Json<ListResponse<Session>>> {
    let p = page(q.page, q.limit)?;
    let user = match q.user.as_deref().filter(|u| !u.is_empty()) {
        Some(u) if caller.is_admin => Some(match state.store.get_user(u).await {
            Ok(row) => row.id,
            Err(store::StoreError::NotFound(_)) => state
                .store
                .find_user_by_name(u)
                .await?
                .map(|r| r.id)
                .unwrap_or_else(|| u.to_string()),
            Err(e) => return Err(e.into()),
        }),
        Some(_) => return Err(ApiError::forbidden("you may only list your own sessions")),
        None if caller.is_admin => None,
        None => Some(own_user(&caller)?),
    };
    let rows = state
        .store
        .list_sessions(user.as_deref(), q.destination.as_deref(), p)
        .await?;
    Ok(Json(to_list(p, rows, to_api)?))
}

/// A session the caller may see.
async fn visible(state: &AppState, caller: &Caller, id: &str) -> ApiResult<SessionRow> {
    let row = match state.store.get_session(id).await {
        Ok(r) => r,
        Err(store::StoreError::NotFound(_)) => {
            return Err(ApiError::not_found(format!(
                "no session {id:?}; see `infra sessions list`"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if caller.is_admin || own_user(caller).is_ok_and(|me| me == row.user_id) {
        return Ok(row);
    }
    Err(ApiError::not_found(format!(
        "no session {id:?}; see `infra sessions list`"
    )))
}

#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions",
    responses((status = 200, body = Session), (status = 404, body = crate::api::ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Session>> {
    Ok(Json(to_api(visible(&state, &caller, &id).await?)))
}

#[utoipa::path(get, path = "/api/sessions/{id}/recording", tag = "sessions",
    responses((status = 200, content_type = "application/x-asciicast", body = String), (status = 404, body = crate::api::ErrorResponse)))]
/// The recording, as an asciicast v2 file (`asciinema play` plays it).
pub async fn recording(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = visible(&state, &caller, &id).await?;
    let chunks = state.store.session_recording(&row.id).await?;
    let target = format!(
        "session {} ({} on {}/{}/{})",
        row.id, row.user_name, row.destination, row.namespace, row.pod
    );
    super::users::audit(&state, &caller, "session.play", &target, &addr).await?;
    Ok((
        [
            (header::CONTENT_TYPE, ASCIICAST_MEDIA_TYPE.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.cast\"", row.id),
            ),
        ],
        chunks.concat(),
    )
        .into_response())
}
