//! The audit log: who did what to what, from where, and how it ended.
//!
//! Anyone can make the server write here (a failed login needs no key), so
//! such entries are written with [`Store::audit_repeated`]: the same event
//! from the same source within a window adds to one row's `count` instead
//! of adding a row. Every text is bounded. Old rows are removed by
//! `server::retention`.

use sha2::{Digest, Sha256};

use crate::api::clip;

use super::{Bind, Count, List, Page, PageRequest, Result, Store, new_id, now_ms};

/// Rows removed per statement when pruning, so no statement holds the
/// table (SQLite: the database) for long.
const PRUNE_BATCH: i64 = 5000;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: String,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub remote_addr: String,
    pub detail: String,
    /// How many times it happened (see [`Store::audit_repeated`]); 1 for most.
    #[sqlx(try_from = "Count<1>")]
    pub count: u64,
    /// When it last happened (`time_ms` is the first time).
    pub last_ms: i64,
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

/// The most of a name (actor, target) and of a detail kept, in bytes.
const MAX_NAME: usize = 256;
const MAX_DETAIL: usize = 1024;

impl AuditEntry<'_> {
    fn clipped(&self) -> [String; 4] {
        [
            clip(self.actor, MAX_NAME).into_owned(),
            clip(self.target, MAX_NAME).into_owned(),
            clip(self.remote_addr, MAX_NAME).into_owned(),
            clip(self.detail, MAX_DETAIL).into_owned(),
        ]
    }
}

impl Store {
    pub async fn audit(&self, e: &AuditEntry<'_>) -> Result<()> {
        let now = now_ms();
        let [actor, target, remote_addr, detail] = e.clipped();
        sqlx::query(
            "INSERT INTO audit_log (id, time_ms, last_ms, actor, action, target, result, \
             remote_addr, detail) VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_id())
        .bind(now)
        .bind(actor)
        .bind(e.action)
        .bind(target)
        .bind(e.result)
        .bind(remote_addr)
        .bind(detail)
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
        until_ms: Option<i64>,
        page: PageRequest,
    ) -> Result<Page<AuditRow>> {
        let list = List {
            select: "SELECT id, time_ms, actor, action, target, result, remote_addr, detail, \
                     count, last_ms FROM audit_log",
            count_from: "audit_log",
            filter: "($1 IS NULL OR action = $1) AND ($2 IS NULL OR actor = $2) \
                     AND ($3 IS NULL OR time_ms >= $3 OR last_ms >= $3) \
                     AND ($4 IS NULL OR time_ms < $4)",
            order_by: "time_ms DESC, id",
        };
        let binds = [
            Bind::Text(action),
            Bind::Text(actor),
            Bind::Int(since_ms),
            Bind::Int(until_ms),
        ];
        self.page_of(&list, &binds, page).await
    }

    /// Records an event that strangers can repeat at will (a failed login,
    /// a new device code): the same entry (actor, action, target, result,
    /// address and detail, each clipped) within the same window of
    /// `window_ms` adds one to the `count` of a single row, whichever
    /// replica writes it. How many distinct entries one source can cause is
    /// bounded by its login rate limits; the text a stranger chooses (a
    /// token's header) is never quoted at length in a detail.
    pub async fn audit_repeated(&self, e: &AuditEntry<'_>, window_ms: i64) -> Result<()> {
        let now = now_ms();
        let window = now / window_ms.max(1);
        let [actor, target, remote_addr, detail] = e.clipped();
        let mut h = Sha256::new();
        for part in [
            actor.as_str(),
            e.action,
            target.as_str(),
            e.result,
            remote_addr.as_str(),
            detail.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        h.update(window.to_be_bytes());
        let repeat_key = hex::encode(h.finalize());
        sqlx::query(
            "INSERT INTO audit_log (id, time_ms, last_ms, actor, action, target, result, \
             remote_addr, detail, count, repeat_key) \
             VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, 1, $9) \
             ON CONFLICT (repeat_key) DO UPDATE SET count = audit_log.count + 1, \
             last_ms = excluded.last_ms",
        )
        .bind(new_id())
        .bind(now)
        .bind(actor)
        .bind(e.action)
        .bind(target)
        .bind(e.result)
        .bind(remote_addr)
        .bind(detail)
        .bind(repeat_key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes the entries that began before `before_ms`, a batch at a
    /// time; returns how many.
    pub async fn prune_audit(&self, before_ms: i64) -> Result<u64> {
        let mut removed = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM audit_log WHERE id IN \
                 (SELECT id FROM audit_log WHERE time_ms < $1 LIMIT $2)",
            )
            .bind(before_ms)
            .bind(PRUNE_BATCH)
            .execute(self.pool())
            .await?;
            removed += done.rows_affected();
            if done.rows_affected() < PRUNE_BATCH as u64 {
                return Ok(removed);
            }
        }
    }
}
