//! Access keys: `<id>.<secret>`, of which only a SHA-256 of the secret is kept.

use sqlx::AssertSqlSafe;

use super::{Bind, List, Page, PageRequest, Result, Store, StoreError, conflict, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessKeyRow {
    pub id: String,
    pub name: String,
    pub owner_kind: String,
    pub owner_id: String,
    /// The owner's name at read time.
    pub owner_name: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub inactivity_timeout: i64,
    pub inactivity_deadline: i64,
    pub last_used_at: Option<i64>,
    /// A connector key's one destination.
    pub destination: Option<String>,
    /// The provider whose session the key stands on.
    pub provider_id: Option<String>,
    /// When the person last authenticated at the provider for the sign-in
    /// the key stands on (Unix seconds); `None`: not through a provider, or
    /// the provider did not say.
    pub auth_time: Option<i64>,
}

pub struct NewAccessKey<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub owner_kind: &'a str,
    pub owner_id: &'a str,
    pub secret_hash: &'a str,
    pub expires_at: i64,
    pub inactivity_timeout: i64,
    /// For a connector key: the one destination it may register and serve.
    pub destination: Option<&'a str>,
    /// For a user's key: the provider session it stands on.
    pub provider_id: Option<&'a str>,
    /// When the person authenticated at the provider (see [`AccessKeyRow::auth_time`]).
    pub auth_time: Option<i64>,
}

const SELECT: &str = "SELECT k.id, k.name, k.owner_kind, k.owner_id, k.secret_hash, k.created_at, \
     k.expires_at, k.inactivity_timeout, k.inactivity_deadline, k.last_used_at, \
     k.destination, k.provider_id, k.auth_time, \
     COALESCE(u.name, i.name, '') AS owner_name FROM access_keys k \
     LEFT JOIN users u ON k.owner_kind = 'user' AND u.id = k.owner_id \
     LEFT JOIN identities i ON k.owner_kind = 'identity' AND i.id = k.owner_id";

impl Store {
    pub async fn create_access_key(&self, k: &NewAccessKey<'_>) -> Result<AccessKeyRow> {
        let t = now();
        sqlx::query(
            "INSERT INTO access_keys (id, name, owner_kind, owner_id, secret_hash, created_at, \
             expires_at, inactivity_timeout, inactivity_deadline, destination, provider_id, auth_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(k.id)
        .bind(k.name)
        .bind(k.owner_kind)
        .bind(k.owner_id)
        .bind(k.secret_hash)
        .bind(t)
        .bind(k.expires_at)
        .bind(k.inactivity_timeout)
        .bind((t + k.inactivity_timeout).min(k.expires_at))
        .bind(k.destination)
        .bind(k.provider_id)
        .bind(k.auth_time)
        .execute(self.pool())
        .await
        .map_err(|e| {
            conflict(e, || {
                format!(
                    "an access key named {:?} (or with this id) already exists",
                    k.name
                )
            })
        })?;
        self.get_access_key(k.id).await
    }

    pub async fn get_access_key(&self, id: &str) -> Result<AccessKeyRow> {
        let sql = format!("{SELECT} WHERE k.id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("access key"))
    }

    pub async fn list_access_keys(
        &self,
        owner_id: Option<&str>,
        name: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<AccessKeyRow>> {
        let list = List {
            select: SELECT,
            count_from: "access_keys k",
            filter: "($1 IS NULL OR k.owner_id = $1) AND ($2 IS NULL OR k.name = $2)",
            order_by: "k.created_at, k.id",
        };
        self.page_of(&list, &[Bind::Text(owner_id), Bind::Text(name)], page)
            .await
    }

    /// Records a use: moves the inactivity deadline (never past expiry).
    pub async fn touch_access_key(
        &self,
        id: &str,
        now: i64,
        timeout: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE access_keys SET last_used_at = $1, inactivity_deadline = $2 WHERE id = $3",
        )
        .bind(now)
        .bind((now + timeout).min(expires_at))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn delete_access_key(&self, id: &str) -> Result<()> {
        let owner: Option<(String, String)> =
            sqlx::query_as("SELECT owner_kind, owner_id FROM access_keys WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        let done = sqlx::query("DELETE FROM access_keys WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("access key"));
        }
        if let Some((kind, owner)) = owner {
            self.keys_revoked(&kind, &owner).await?;
        }
        Ok(())
    }

    /// A revocation is a change for the connectors of every destination the
    /// owner holds grants on: they follow it to cut what is open.
    pub(super) async fn keys_revoked(&self, owner_kind: &str, owner_id: &str) -> Result<()> {
        let subject = match owner_kind {
            "identity" => super::Subject::Identity(owner_id.to_string()),
            _ => super::Subject::User(owner_id.to_string()),
        };
        let affected = self.destinations_of(&subject).await?;
        self.record_change(&affected).await
    }

    /// Revokes every key of an owner; returns how many.
    pub async fn delete_access_keys_of(&self, owner_kind: &str, owner_id: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM access_keys WHERE owner_kind = $1 AND owner_id = $2")
            .bind(owner_kind)
            .bind(owner_id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() > 0 {
            self.keys_revoked(owner_kind, owner_id).await?;
        }
        Ok(done.rows_affected())
    }

    /// Removes keys that expired or lapsed more than a day ago.
    pub async fn delete_stale_access_keys(&self) -> Result<u64> {
        let cutoff = now() - 86_400;
        let done = sqlx::query(
            "DELETE FROM access_keys WHERE expires_at < $1 OR inactivity_deadline < $1",
        )
        .bind(cutoff)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
