//! `/api/audit`: the audit log, newest first (admins only).

use axum::Json;
use axum::extract::State;

use crate::api::{AuditEvent, AuditQuery, ListResponse};
use crate::server::AppState;
use crate::server::error::ApiResult;
use crate::server::extract::{ApiQuery, Caller, list as to_list, page};

/// A time as people and forms write it, in Unix milliseconds: RFC 3339; a
/// date and time without a zone, `T` or a space between, seconds optional
/// (what a browser's date-time field sends), taken as UTC; or a date, its
/// midnight UTC, or with `end_of_day` the midnight after it.
fn parse_time(s: &str, end_of_day: bool) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let s = s.replacen(' ', "T", 1);
    for f in [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ] {
        if let Ok(t) = time::PrimitiveDateTime::parse(&s, f) {
            return Some(t.assume_utc().unix_timestamp() * 1000);
        }
    }
    let d = time::Date::parse(&s, format_description!("[year]-[month]-[day]")).ok()?;
    let d = if end_of_day { d.next_day()? } else { d };
    Some(d.midnight().assume_utc().unix_timestamp() * 1000)
}

/// The query's `name` parameter as a time (see [`parse_time`]).
fn time_param(
    name: &str,
    value: Option<&str>,
    end_of_day: bool,
) -> Result<Option<i64>, crate::server::error::ApiError> {
    match value.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => parse_time(s, end_of_day).map(Some).ok_or_else(|| {
            crate::server::error::ApiError::field(
                name,
                "must be a time such as 2026-12-01T10:00:00Z or 2026-12-01 10:00 (UTC), or a \
                 date such as 2026-12-01",
            )
        }),
    }
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
    let since = time_param("since", q.since.as_deref(), false)?;
    let until = time_param("until", q.until.as_deref(), true)?;
    let rows = state
        .store
        .list_audit(q.action.as_deref(), q.actor.as_deref(), since, until, p)
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

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_as_people_and_forms_write_them() {
        let at = |s: &str| parse_time(s, false);
        let noon = Some(1_796_644_800_000); // 2026-12-07T12:00:00Z
        assert_eq!(at("2026-12-07T12:00:00Z"), noon);
        assert_eq!(at("2026-12-07T13:00:00+01:00"), noon);
        assert_eq!(at("2026-12-07T12:00"), noon);
        assert_eq!(at("2026-12-07 12:00:00"), noon);
        assert_eq!(at("2026-12-07"), Some(1_796_601_600_000));
        assert_eq!(parse_time("2026-12-07", true), Some(1_796_688_000_000));
        assert_eq!(at("yesterday"), None);
    }
}
