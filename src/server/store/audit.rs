//! The audit log: who did what to what, from where, and how it ended.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Page, PageRequest, Result, Store, new_id, now_ms, total};

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: String,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub remote_addr: String,
    pub detail: String,
}

/// A new entry. `detail` must never hold a secret.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub result: &'a str,
    pub remote_addr: &'a str,
    pub detail: &'a str,
}

fn row(r: AnyRow) -> Result<AuditRow> {
    Ok(AuditRow {
        id: r.try_get("id")?,
        time_ms: r.try_get("time_ms")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        result: r.try_get("result")?,
        remote_addr: r.try_get("remote_addr")?,
        detail: r.try_get("detail")?,
    })
}

impl Store {
    pub async fn audit(&self, e: &AuditEntry<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (id, time_ms, actor, action, target, result, remote_addr, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_id())
        .bind(now_ms())
        .bind(e.actor)
        .bind(e.action)
        .bind(e.target)
        .bind(e.result)
        .bind(e.remote_addr)
        .bind(e.detail)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Newest first; each filter only when given (`since_ms`: at or after).
    pub async fn list_audit(
        &self,
        action: Option<&str>,
        actor: Option<&str>,
        since_ms: Option<i64>,
        page: PageRequest,
    ) -> Result<Page<AuditRow>> {
        const FILTER: &str = "($1 IS NULL OR action = $1) AND ($2 IS NULL OR actor = $2) \
             AND ($3 IS NULL OR time_ms >= $3)";
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, time_ms, actor, action, target, result, remote_addr, detail FROM audit_log \
             WHERE {FILTER} ORDER BY time_ms DESC, id LIMIT $4 OFFSET $5"
        )))
        .bind(action)
        .bind(actor)
        .bind(since_ms)
        .bind(page.limit.min(i64::MAX as u64) as i64)
        .bind(page.offset())
        .fetch_all(self.pool())
        .await?;
        let (count,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM audit_log WHERE {FILTER}"
        )))
        .bind(action)
        .bind(actor)
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(Page {
            items: rows.into_iter().map(row).collect::<Result<_>>()?,
            total: total(count),
        })
    }

    /// Failed logins since `since_ms` for this target or from this address,
    /// and the time of the oldest of the target's failures in the window.
    pub async fn login_failures(
        &self,
        target: &str,
        remote_addr: &str,
        since_ms: i64,
    ) -> Result<(u64, u64, Option<i64>)> {
        let (by_target, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(time_ms) FROM audit_log WHERE action = 'login' AND \
             result = 'failure' AND time_ms > $1 AND target = $2",
        )
        .bind(since_ms)
        .bind(target)
        .fetch_one(self.pool())
        .await?;
        let (by_addr,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'login' AND result = 'failure' AND \
             time_ms > $1 AND remote_addr = $2",
        )
        .bind(since_ms)
        .bind(remote_addr)
        .fetch_one(self.pool())
        .await?;
        Ok((total(by_target), total(by_addr), oldest))
    }
}
