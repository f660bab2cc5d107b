//! `/api/audit`: the audit log, newest first (admins only).

use axum::Json;
use axum::extract::State;

use crate::api::{AuditEvent, AuditQuery, ListResponse};
use crate::server::AppState;
use crate::server::error::ApiResult;
use crate::server::extract::{ApiQuery, Caller, list as to_list, page};

/// RFC 3339, or a date (its midnight UTC), in Unix milliseconds.
fn parse_since(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let d = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp() * 1000)
}

#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = ListResponse<AuditEvent>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<ListResponse<AuditEvent>>> {
    caller.require_admin()?;
    let p = page(q.page, q.limit)?;
    let since = match q.since.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(parse_since(s).ok_or_else(|| {
            crate::server::error::ApiError::field(
                "since",
                "must be a time such as 2026-12-01T10:00:00Z, or a date such as 2026-12-01",
            )
        })?),
    };
    let rows = state
        .store
        .list_audit(q.action.as_deref(), q.actor.as_deref(), since, p)
        .await?;
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
    })?))
}
