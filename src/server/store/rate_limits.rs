//! Counters behind the rate limits (failed logins, device codes), shared by
//! every replica. What a key means and what the numbers allow is decided in
//! `server::ratelimit`; here a key is only a row found by its primary key,
//! so a check is one indexed lookup and a hit one upsert.

use sqlx::AssertSqlSafe;

use super::{Count, Result, Store, placeholders};

/// How long a counter lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Forgotten this long (ms) after the latest hit: a source that keeps
    /// failing keeps its count.
    Quiet(i64),
    /// Forgotten this long (ms) after the first hit.
    Fixed(i64),
}

/// A live counter: `hits` since it started, the latest at `last_ms`, gone
/// at `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RateCount {
    pub key: String,
    #[sqlx(try_from = "Count<0>")]
    pub hits: u64,
    pub last_ms: i64,
    pub expires_ms: i64,
}

impl Store {
    /// The live counters among `keys` (absent ones are not returned).
    pub async fn rate_counts(&self, keys: &[String], now_ms: i64) -> Result<Vec<RateCount>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT key, hits, last_ms, expires_ms FROM rate_limits \
             WHERE expires_ms > $1 AND key IN ({})",
            placeholders(2, keys.len())
        );
        let mut q = sqlx::query_as(AssertSqlSafe(sql)).bind(now_ms);
        for k in keys {
            q = q.bind(k.as_str());
        }
        Ok(q.fetch_all(self.pool()).await?)
    }

    /// Counts one hit; a counter that had expired starts again at 1. One
    /// statement, so hits from several replicas at once all count.
    pub async fn rate_hit(&self, key: &str, now_ms: i64, window: Window) -> Result<()> {
        let (len, extend) = match window {
            Window::Quiet(ms) => (ms, 1i64),
            Window::Fixed(ms) => (ms, 0i64),
        };
        sqlx::query(
            "INSERT INTO rate_limits (key, hits, last_ms, expires_ms) VALUES ($1, 1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET \
             hits = CASE WHEN rate_limits.expires_ms <= $2 THEN 1 ELSE rate_limits.hits + 1 END, \
             expires_ms = CASE WHEN rate_limits.expires_ms <= $2 OR $4 = 1 THEN $3 \
                          ELSE rate_limits.expires_ms END, \
             last_ms = $2",
        )
        .bind(key)
        .bind(now_ms)
        .bind(now_ms.saturating_add(len))
        .bind(extend)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Keeps a row with no hits until `expires_ms`: a mark that something
    /// happened (e.g. a successful sign-in from an address).
    pub async fn rate_mark(&self, key: &str, now_ms: i64, expires_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO rate_limits (key, hits, last_ms, expires_ms) VALUES ($1, 0, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET hits = 0, last_ms = $2, expires_ms = $3",
        )
        .bind(key)
        .bind(now_ms)
        .bind(expires_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets a counter.
    pub async fn rate_clear(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM rate_limits WHERE key = $1")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes the counters that expired; idempotent.
    pub async fn prune_rate_limits(&self, now_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM rate_limits WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
