//! Device codes (sign-in without a local browser) and the browser sign-ins
//! that approve them. Both live here rather than in memory so that any
//! replica can serve the web page, the provider's callback or the poll.
//! Every change of state is one conditional UPDATE, so two replicas (or two
//! browsers) racing for the same code cannot both win.

use sqlx::AssertSqlSafe;

use super::{Result, Store, StoreError, conflict};

/// A device code as the server sees it; the code itself is never stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceCodeRow {
    pub id: String,
    pub device_code_hash: String,
    /// Normalized: upper case, no dash.
    pub user_code: String,
    pub provider_id: String,
    /// `pending`, `approved`, `denied` or `consumed`.
    pub status: String,
    pub client_addr: String,
    /// Seconds the device must wait between polls.
    pub poll_interval: i64,
    /// When the device last polled (Unix ms; 0: never).
    pub last_poll_ms: i64,
    /// Who approved or denied it.
    pub user_id: Option<String>,
    pub created_at_ms: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// 1: the device asked for a new authentication at the provider.
    pub reauth: i64,
    /// The approving sign-in's `auth_time` at the provider, if it said.
    pub auth_time: Option<i64>,
}

pub struct NewDeviceCode<'a> {
    pub id: &'a str,
    pub device_code_hash: &'a str,
    pub user_code: &'a str,
    pub provider_id: &'a str,
    pub client_addr: &'a str,
    pub poll_interval: i64,
    pub created_at_ms: i64,
    pub expires_at: i64,
    pub reauth: bool,
}

/// One browser's sign-in at the provider for a device code.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceSigninRow {
    pub id: String,
    pub device_code_id: String,
    pub binding_hash: String,
    pub nonce_enc: String,
    pub verifier_enc: String,
    /// `started`, `exchanging`, `authenticated`, `done` or `failed`.
    pub status: String,
    pub user_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The provider's `auth_time` for this sign-in, once authenticated.
    pub auth_time: Option<i64>,
}

pub struct NewDeviceSignin<'a> {
    pub id: &'a str,
    pub device_code_id: &'a str,
    pub state_hash: &'a str,
    pub binding_hash: &'a str,
    pub nonce_enc: &'a str,
    pub verifier_enc: &'a str,
    pub created_at: i64,
    pub expires_at: i64,
}

const CODE_COLUMNS: &str = "id, device_code_hash, user_code, provider_id, status, client_addr, \
     poll_interval, last_poll_ms, user_id, created_at_ms, expires_at, reauth, auth_time";

const SIGNIN_COLUMNS: &str = "id, device_code_id, binding_hash, nonce_enc, verifier_enc, status, \
     user_id, created_at, expires_at, auth_time";

impl Store {
    /// Stores a new device code; a `Conflict` means its user code (or,
    /// improbably, its hash) is taken: make another.
    pub async fn create_device_code(&self, c: &NewDeviceCode<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_codes (id, device_code_hash, user_code, provider_id, status, \
             client_addr, poll_interval, last_poll_ms, created_at_ms, expires_at, reauth) \
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, 0, $7, $8, $9)",
        )
        .bind(c.id)
        .bind(c.device_code_hash)
        .bind(c.user_code)
        .bind(c.provider_id)
        .bind(c.client_addr)
        .bind(c.poll_interval)
        .bind(c.created_at_ms)
        .bind(c.expires_at)
        .bind(i64::from(c.reauth))
        .execute(self.pool())
        .await
        .map_err(|e| conflict(e, || "the user code is taken".to_string()))?;
        Ok(())
    }

    pub async fn get_device_code(&self, id: &str) -> Result<DeviceCodeRow> {
        let sql = format!("SELECT {CODE_COLUMNS} FROM device_codes WHERE id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("device code"))
    }

    pub async fn find_device_code_by_hash(&self, hash: &str) -> Result<Option<DeviceCodeRow>> {
        let sql = format!("SELECT {CODE_COLUMNS} FROM device_codes WHERE device_code_hash = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(self.pool())
            .await?)
    }

    /// By normalized user code.
    pub async fn find_device_code_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceCodeRow>> {
        let sql = format!("SELECT {CODE_COLUMNS} FROM device_codes WHERE user_code = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(user_code)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Records a poll at `now_ms`, with the interval from now on.
    pub async fn record_device_poll(
        &self,
        id: &str,
        now_ms: i64,
        poll_interval: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE device_codes SET last_poll_ms = $1, poll_interval = $2 WHERE id = $3")
            .bind(now_ms)
            .bind(poll_interval)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Approves or denies a pending, unexpired code for `user_id` (who
    /// authenticated at the provider at `auth_time`); false when it was not
    /// pending (any more) or has expired.
    pub async fn decide_device_code(
        &self,
        id: &str,
        approve: bool,
        user_id: &str,
        auth_time: Option<i64>,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE device_codes SET status = $1, user_id = $2, decided_at = $3, auth_time = $5 \
             WHERE id = $4 AND status = 'pending' AND expires_at > $3",
        )
        .bind(if approve { "approved" } else { "denied" })
        .bind(user_id)
        .bind(now)
        .bind(id)
        .bind(auth_time)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks an approved code as used; true for the one caller that did it.
    pub async fn consume_device_code(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE device_codes SET status = 'consumed' WHERE id = $1 AND status = 'approved'",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes device codes (and their sign-ins) that expired before `before`.
    pub async fn delete_stale_device_codes(&self, before: i64) -> Result<u64> {
        sqlx::query(
            "DELETE FROM device_signins WHERE device_code_id IN \
             (SELECT id FROM device_codes WHERE expires_at < $1)",
        )
        .bind(before)
        .execute(self.pool())
        .await?;
        let done = sqlx::query("DELETE FROM device_codes WHERE expires_at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn create_device_signin(&self, s: &NewDeviceSignin<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_signins (id, device_code_id, state_hash, binding_hash, nonce_enc, \
             verifier_enc, status, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'started', $7, $8)",
        )
        .bind(s.id)
        .bind(s.device_code_id)
        .bind(s.state_hash)
        .bind(s.binding_hash)
        .bind(s.nonce_enc)
        .bind(s.verifier_enc)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(self.pool())
        .await
        .map_err(|e| conflict(e, || "this sign-in already exists".to_string()))?;
        Ok(())
    }

    pub async fn find_device_signin_by_state(
        &self,
        state_hash: &str,
    ) -> Result<Option<DeviceSigninRow>> {
        let sql = format!("SELECT {SIGNIN_COLUMNS} FROM device_signins WHERE state_hash = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(state_hash)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn get_device_signin(&self, id: &str) -> Result<Option<DeviceSigninRow>> {
        let sql = format!("SELECT {SIGNIN_COLUMNS} FROM device_signins WHERE id = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Moves a sign-in from `from` to `to` (setting the user and the
    /// provider's `auth_time` when given); true for the one caller that did it.
    pub async fn advance_device_signin(
        &self,
        id: &str,
        from: &str,
        to: &str,
        user_id: Option<&str>,
        auth_time: Option<i64>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE device_signins SET status = $1, user_id = COALESCE($2, user_id), \
             auth_time = COALESCE($5, auth_time) WHERE id = $3 AND status = $4",
        )
        .bind(to)
        .bind(user_id)
        .bind(id)
        .bind(from)
        .bind(auth_time)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
