//! The link between a user and their account at an identity provider, and
//! the group memberships the provider asserts.

use sqlx::AssertSqlSafe;

use super::{Result, Store, new_id, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderUserRow {
    pub provider_id: String,
    pub user_id: String,
    pub subject: String,
    pub email: String,
    pub refresh_token_enc: String,
    pub last_check_at: i64,
    pub checking_until: i64,
    pub backoff_until: i64,
    /// 0 while a refresh token keeps the session; else when it ends.
    pub session_expires_at: i64,
}

const SELECT: &str = "SELECT provider_id, user_id, subject, email, refresh_token_enc, \
     last_check_at, checking_until, backoff_until, session_expires_at FROM provider_users";

/// What a sign-in through a provider records on the link.
pub struct SignIn<'a> {
    pub provider_id: &'a str,
    pub subject: &'a str,
    pub email: &'a str,
    /// Encrypted by the caller; empty when the provider gave none.
    pub refresh_token_enc: &'a str,
    /// When the session ends without a refresh token (the ID token's
    /// `exp`); 0 when a refresh token keeps it.
    pub session_expires_at: i64,
}

/// Why a provider account could not be linked to a user.
#[derive(Debug)]
pub enum LinkConflict {
    /// The user is already linked to another account (subject) at this provider.
    UserTaken { subject: String },
    /// The user is already linked to an account at another provider.
    OtherProvider,
    /// This account (subject) is already linked to another user.
    SubjectTaken { user_id: String },
}

impl Store {
    /// The link of the account `subject` at a provider, if it signed in before.
    pub async fn find_provider_user(
        &self,
        provider_id: &str,
        subject: &str,
    ) -> Result<Option<ProviderUserRow>> {
        let sql = format!("{SELECT} WHERE provider_id = $1 AND subject = $2");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(provider_id)
            .bind(subject)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Links a provider account to a user, at its first sign-in. Never
    /// replaces a link: a user keeps the subject it was first linked with.
    pub async fn link_provider_user(
        &self,
        user_id: &str,
        s: &SignIn<'_>,
    ) -> Result<std::result::Result<(), LinkConflict>> {
        let t = now();
        // A user belongs to one account at one provider: a link is made only
        // while no other provider holds the user; with it, the user signs in
        // only through that account (one transaction: never one without
        // the other).
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "INSERT INTO provider_users (provider_id, user_id, subject, email, refresh_token_enc, \
             session_expires_at, last_check_at, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $7, $7 WHERE NOT EXISTS \
             (SELECT 1 FROM provider_users WHERE user_id = $2 AND provider_id <> $1) \
             ON CONFLICT DO NOTHING",
        )
        .bind(s.provider_id)
        .bind(user_id)
        .bind(s.subject)
        .bind(s.email)
        .bind(s.refresh_token_enc)
        .bind(s.session_expires_at)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            sqlx::query(
                "UPDATE users SET origin = 'provider' WHERE id = $1 AND origin = 'invited'",
            )
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Ok(()));
        }
        tx.rollback().await?;
        if let Some(other) = self.find_provider_user(s.provider_id, s.subject).await? {
            if other.user_id == user_id {
                return Ok(Ok(()));
            }
            return Ok(Err(LinkConflict::SubjectTaken {
                user_id: other.user_id,
            }));
        }
        if self
            .provider_users_of(user_id)
            .await?
            .iter()
            .any(|r| r.provider_id != s.provider_id)
        {
            return Ok(Err(LinkConflict::OtherProvider));
        }
        let sql = format!("{SELECT} WHERE provider_id = $1 AND user_id = $2");
        let taken: Option<ProviderUserRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(s.provider_id)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(Err(LinkConflict::UserTaken {
            subject: taken.map(|r| r.subject).unwrap_or_default(),
        }))
    }

    /// Records a later sign-in of a linked account: its email, and a new
    /// refresh token (an empty one keeps the one stored, which still
    /// re-checks the account), checked now.
    pub async fn record_sign_in(&self, user_id: &str, s: &SignIn<'_>) -> Result<()> {
        sqlx::query(
            "UPDATE provider_users SET email = $1, \
             refresh_token_enc = CASE WHEN $2 = '' THEN refresh_token_enc ELSE $2 END, \
             session_expires_at = CASE WHEN $2 = '' AND refresh_token_enc = '' THEN $3 ELSE 0 END, \
             last_check_at = $4, checking_until = 0, backoff_until = 0, updated_at = $4 \
             WHERE provider_id = $5 AND user_id = $6 AND subject = $7",
        )
        .bind(s.email)
        .bind(s.refresh_token_enc)
        .bind(s.session_expires_at)
        .bind(now())
        .bind(s.provider_id)
        .bind(user_id)
        .bind(s.subject)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The provider ended the session: its refresh token is forgotten.
    pub async fn end_provider_session(&self, provider_id: &str, user_id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE provider_users SET refresh_token_enc = '', session_expires_at = $1, \
             checking_until = 0, updated_at = $1 WHERE provider_id = $2 AND user_id = $3",
        )
        .bind(now())
        .bind(provider_id)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The link a key of the user stands on.
    pub async fn get_provider_user(
        &self,
        provider_id: &str,
        user_id: &str,
    ) -> Result<Option<ProviderUserRow>> {
        let sql = format!("{SELECT} WHERE provider_id = $1 AND user_id = $2");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(provider_id)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn provider_users_of(&self, user_id: &str) -> Result<Vec<ProviderUserRow>> {
        let sql = format!("{SELECT} WHERE user_id = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(self.pool())
            .await?)
    }

    /// The ids of the users linked to accounts at `provider_id`.
    pub async fn users_of_provider(&self, provider_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT user_id FROM provider_users WHERE provider_id = $1")
                .bind(provider_id)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Ends every session that stands on `provider_id`: the keys made from
    /// its sign-ins are revoked and the links to its accounts forgotten. For
    /// a provider removed, or now at another issuer (whose `sub`s name
    /// other people). Returns how many keys were revoked.
    pub async fn end_provider_sessions(&self, provider_id: &str) -> Result<u64> {
        let users = self.users_of_provider(provider_id).await?;
        let done = sqlx::query("DELETE FROM access_keys WHERE provider_id = $1")
            .bind(provider_id)
            .execute(self.pool())
            .await?;
        for user_id in &users {
            self.keys_revoked("user", user_id).await?;
        }
        self.delete_provider_users(provider_id).await?;
        Ok(done.rows_affected())
    }

    /// Forgets every link to accounts at `provider_id` (with their refresh
    /// tokens); the users stay.
    pub async fn delete_provider_users(&self, provider_id: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM provider_users WHERE provider_id = $1")
            .bind(provider_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Takes the re-check lease for this user at this provider if nobody
    /// holds it, no back-off is running and nobody finished a re-check since
    /// `seen_last_check` was read; true when taken. One atomic UPDATE, so
    /// only one replica wins, and one that read the row before another's
    /// re-check ended does not check again right after it.
    pub async fn take_recheck_lease(
        &self,
        provider_id: &str,
        user_id: &str,
        lease_secs: i64,
        seen_last_check: i64,
    ) -> Result<bool> {
        let t = now();
        let done = sqlx::query(
            "UPDATE provider_users SET checking_until = $1 WHERE provider_id = $2 AND user_id = $3 \
             AND checking_until < $4 AND backoff_until <= $4 AND last_check_at = $5",
        )
        .bind(t + lease_secs)
        .bind(provider_id)
        .bind(user_id)
        .bind(t)
        .bind(seen_last_check)
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
        let leaving = current.iter().any(|(gid,)| !ids.contains(gid));
        // Leaving a group changes what the user's cluster tokens may carry:
        // the connectors of every destination they reach follow it (and cut
        // open streams whose token names the group).
        let affected = if leaving {
            self.destinations_of(&super::Subject::User(user_id.to_string()))
                .await?
        } else {
            Vec::new()
        };
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
        if leaving {
            self.record_change(&affected).await?;
        }
        Ok(())
    }
}
