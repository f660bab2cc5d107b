//! The link between a user and their account at an identity provider, and
//! the group memberships the provider asserts.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, new_id, now};

#[derive(Debug, Clone)]
pub struct ProviderUserRow {
    pub provider_id: String,
    pub user_id: String,
    pub subject: String,
    pub email: String,
    pub refresh_token_enc: String,
    pub last_check_at: i64,
    pub checking_until: i64,
    pub backoff_until: i64,
}

fn row(r: AnyRow) -> Result<ProviderUserRow> {
    Ok(ProviderUserRow {
        provider_id: r.try_get("provider_id")?,
        user_id: r.try_get("user_id")?,
        subject: r.try_get("subject")?,
        email: r.try_get("email")?,
        refresh_token_enc: r.try_get("refresh_token_enc")?,
        last_check_at: r.try_get("last_check_at")?,
        checking_until: r.try_get("checking_until")?,
        backoff_until: r.try_get("backoff_until")?,
    })
}

impl Store {
    /// Records a sign-in: the subject, and the refresh token (encrypted by
    /// the caller; empty when the provider gave none).
    pub async fn upsert_provider_user(
        &self,
        provider_id: &str,
        user_id: &str,
        subject: &str,
        email: &str,
        refresh_token_enc: &str,
    ) -> Result<()> {
        let t = now();
        sqlx::query(
            "INSERT INTO provider_users (provider_id, user_id, subject, email, refresh_token_enc, \
             last_check_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $6) \
             ON CONFLICT (provider_id, user_id) DO UPDATE SET subject = excluded.subject, \
             email = excluded.email, refresh_token_enc = excluded.refresh_token_enc, \
             last_check_at = excluded.last_check_at, checking_until = 0, backoff_until = 0, \
             updated_at = excluded.updated_at",
        )
        .bind(provider_id)
        .bind(user_id)
        .bind(subject)
        .bind(email)
        .bind(refresh_token_enc)
        .bind(t)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn provider_users_of(&self, user_id: &str) -> Result<Vec<ProviderUserRow>> {
        let rows = sqlx::query(
            "SELECT provider_id, user_id, subject, email, refresh_token_enc, last_check_at, \
             checking_until, backoff_until FROM provider_users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(row).collect()
    }

    /// Takes the re-check lease for this user at this provider if nobody
    /// holds it and no back-off is running; true when taken. One atomic
    /// UPDATE, so only one replica wins.
    pub async fn take_recheck_lease(
        &self,
        provider_id: &str,
        user_id: &str,
        lease_secs: i64,
    ) -> Result<bool> {
        let t = now();
        let done = sqlx::query(
            "UPDATE provider_users SET checking_until = $1 WHERE provider_id = $2 AND user_id = $3 \
             AND checking_until < $4 AND backoff_until <= $4",
        )
        .bind(t + lease_secs)
        .bind(provider_id)
        .bind(user_id)
        .bind(t)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a successful re-check: new refresh token (if rotated), checked now.
    pub async fn finish_recheck(
        &self,
        provider_id: &str,
        user_id: &str,
        refresh_token_enc: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE provider_users SET last_check_at = $1, checking_until = 0, backoff_until = 0, \
             refresh_token_enc = COALESCE($2, refresh_token_enc), updated_at = $1 \
             WHERE provider_id = $3 AND user_id = $4",
        )
        .bind(now())
        .bind(refresh_token_enc)
        .bind(provider_id)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Ends a failed re-check; the provider is left alone until `backoff_until`.
    pub async fn fail_recheck(
        &self,
        provider_id: &str,
        user_id: &str,
        backoff_until: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE provider_users SET checking_until = 0, backoff_until = $1 \
             WHERE provider_id = $2 AND user_id = $3",
        )
        .bind(backoff_until)
        .bind(provider_id)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Makes the user's memberships asserted by `provider_id` exactly
    /// `groups`, creating groups as needed. Memberships an admin added are
    /// left alone.
    pub async fn sync_provider_groups(
        &self,
        provider_id: &str,
        user_id: &str,
        groups: &[String],
    ) -> Result<()> {
        let mut ids = Vec::with_capacity(groups.len());
        for name in groups {
            let name = name.trim();
            if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                continue;
            }
            let t = now();
            sqlx::query(
                "INSERT INTO groups (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(new_id())
            .bind(name)
            .bind(t)
            .execute(self.pool())
            .await?;
            let (id,): (String,) = sqlx::query_as("SELECT id FROM groups WHERE name = $1")
                .bind(name)
                .fetch_one(self.pool())
                .await?;
            ids.push(id);
        }
        let mut tx = self.pool().begin().await?;
        let current: Vec<(String,)> = sqlx::query_as(
            "SELECT group_id FROM group_members WHERE user_id = $1 AND provider_id = $2",
        )
        .bind(user_id)
        .bind(provider_id)
        .fetch_all(&mut *tx)
        .await?;
        for (gid,) in &current {
            if !ids.contains(gid) {
                sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2 AND provider_id = $3")
                    .bind(gid)
                    .bind(user_id)
                    .bind(provider_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for gid in &ids {
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id, provider_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (group_id, user_id) DO NOTHING",
            )
            .bind(gid)
            .bind(user_id)
            .bind(provider_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
