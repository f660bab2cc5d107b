//! Recorded exec and attach sessions: a row per session (who, where, when,
//! the command, how it ended) and its asciicast text in numbered chunks,
//! appended while the session runs.

use super::{Bind, List, Page, PageRequest, Result, Store, StoreError, new_id, now_ms};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    pub destination: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub kind: String,
    pub command: String,
    pub user_id: String,
    pub user_name: String,
    pub client_address: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub exit_code: Option<i64>,
    pub end_reason: String,
    pub bytes: i64,
}

/// A session starting.
pub struct NewSession<'a> {
    pub destination: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub kind: &'a str,
    pub command: &'a str,
    pub user_id: &'a str,
    pub user_name: &'a str,
    pub client_address: &'a str,
}

const SELECT: &str = "SELECT id, destination, namespace, pod, container, kind, command, user_id, \
                      user_name, client_address, started_ms, ended_ms, exit_code, end_reason, \
                      bytes FROM sessions";

/// Why a chunk was not kept.
#[derive(Debug, PartialEq, Eq)]
pub enum AppendRefused {
    /// The session ended (or never was).
    Ended,
    /// The recording would grow past the bound.
    Full,
}

impl Store {
    pub async fn create_session(&self, s: &NewSession<'_>) -> Result<SessionRow> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO sessions (id, destination, namespace, pod, container, kind, command, \
             user_id, user_name, client_address, started_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(s.destination)
        .bind(s.namespace)
        .bind(s.pod)
        .bind(s.container)
        .bind(s.kind)
        .bind(s.command)
        .bind(s.user_id)
        .bind(s.user_name)
        .bind(s.client_address)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.get_session(&id).await
    }

    pub async fn get_session(&self, id: &str) -> Result<SessionRow> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("session"))
    }

    /// Appends chunk `seq` (a retried chunk is kept once) unless the
    /// session ended or the recording would pass `max_bytes`.
    pub async fn append_session_chunk(
        &self,
        id: &str,
        seq: i64,
        data: &str,
        max_bytes: i64,
    ) -> Result<std::result::Result<(), AppendRefused>> {
        let mut tx = self.pool().begin().await?;
        let grown = sqlx::query(
            "UPDATE sessions SET bytes = bytes + $2, chunks = chunks + 1 \
             WHERE id = $1 AND ended_ms IS NULL AND bytes + $2 <= $3 \
             AND NOT EXISTS (SELECT 1 FROM session_chunks WHERE session_id = $1 AND seq = $4)",
        )
        .bind(id)
        .bind(data.len() as i64)
        .bind(max_bytes)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        if grown.rows_affected() == 0 {
            let row: Option<(Option<i64>, i64)> =
                sqlx::query_as("SELECT ended_ms, bytes FROM sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (seen,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM session_chunks WHERE session_id = $1 AND seq = $2",
            )
            .bind(id)
            .bind(seq)
            .fetch_one(&mut *tx)
            .await?;
            return Ok(match row {
                _ if seen > 0 => Ok(()),
                None | Some((Some(_), _)) => Err(AppendRefused::Ended),
                Some((None, _)) => Err(AppendRefused::Full),
            });
        }
        sqlx::query("INSERT INTO session_chunks (session_id, seq, data) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(seq)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Ends a session (once): its exit code if the command said, and why it
    /// ended when it was not the command's own end.
    pub async fn end_session(&self, id: &str, exit_code: Option<i64>, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET ended_ms = $2, exit_code = $3, end_reason = $4 \
             WHERE id = $1 AND ended_ms IS NULL",
        )
        .bind(id)
        .bind(now_ms())
        .bind(exit_code)
        .bind(reason)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The recording: its chunks in order.
    pub async fn session_recording(&self, id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT data FROM session_chunks WHERE session_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    /// Newest first; each filter only when given.
    pub async fn list_sessions(
        &self,
        user_id: Option<&str>,
        destination: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<SessionRow>> {
        let list = List {
            select: SELECT,
            count_from: "sessions",
            filter: "($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR destination = $2)",
            order_by: "started_ms DESC, id",
        };
        self.page_of(&list, &[Bind::Text(user_id), Bind::Text(destination)], page)
            .await
    }

    /// Removes sessions that started before `before_ms`, with their
    /// recordings; returns how many.
    pub async fn prune_sessions(&self, before_ms: i64) -> Result<u64> {
        sqlx::query(
            "DELETE FROM session_chunks WHERE session_id IN \
             (SELECT id FROM sessions WHERE started_ms < $1)",
        )
        .bind(before_ms)
        .execute(self.pool())
        .await?;
        let done = sqlx::query("DELETE FROM sessions WHERE started_ms < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
