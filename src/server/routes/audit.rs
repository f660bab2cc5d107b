//! `/api/audit`: the audit log, newest first (admins only).

use axum::Json;
use axum::extract::{Query, State};

use crate::api::{AuditEvent, AuditQuery, ListResponse};
use crate::server::AppState;
use crate::server::error::ApiResult;
use crate::server::extract::{Caller, list as to_list, page};

#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = ListResponse<AuditEvent>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<ListResponse<AuditEvent>>> {
    caller.require_admin()?;
    let p = page(q.page, q.limit)?;
    let rows = state.store.list_audit(q.action.as_deref(), p).await?;
    Ok(Json(to_list(p, rows, |r| AuditEvent {
        id: r.id,
        time: super::ts_ms(r.time_ms),
        actor: r.actor,
        action: r.action,
        target: r.target,
        result: r.result,
        remote_addr: r.remote_addr,
        detail: r.detail,
        count: r.count,
        last_time: super::ts_ms(r.last_ms.max(r.time_ms)),
    })))
}
