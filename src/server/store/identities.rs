//! Machine identities: workloads that log in with their own OIDC JWT.
//! An identity may have one oidc-auth configuration (the issuer and the
//! bounds its JWTs must meet); each login through it yields an access key
//! whose bounds (max TTL from login, uses, trusted IPs) are kept beside it.

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;

use super::{
    Bind, JsonText, List, NewAccessKey, Page, PageRequest, Result, Store, StoreError, conflict,
    new_id, now,
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

impl Store {
    pub async fn create_identity(&self, name: &str) -> Result<IdentityRow> {
        let id = new_id();
        sqlx::query("INSERT INTO identities (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(now())
            .execute(self.pool())
            .await
            .map_err(|e| conflict(e, || format!("an identity named {name:?} already exists")))?;
        self.get_identity(&id).await
    }

    /// The identity with this id or, failing that, this name.
    pub async fn find_identity(&self, id_or_name: &str) -> Result<IdentityRow> {
        sqlx::query_as(
            "SELECT id, name, created_at FROM identities WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound("identity"))
    }

    pub async fn get_identity(&self, id: &str) -> Result<IdentityRow> {
        sqlx::query_as("SELECT id, name, created_at FROM identities WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("identity"))
    }

    pub async fn list_identities(
        &self,
        name: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<IdentityRow>> {
        let list = List {
            select: "SELECT id, name, created_at FROM identities",
            count_from: "identities",
            filter: "($1 IS NULL OR name = $1)",
            order_by: "name",
        };
        self.page_of(&list, &[Bind::Text(name)], page).await
    }

    /// Removes the identity with its grants and access keys.
    pub async fn delete_identity(&self, id: &str) -> Result<()> {
        let affected = self
            .destinations_of(&super::Subject::Identity(id.to_string()))
            .await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM grants WHERE subject_kind = 'identity' AND subject_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM access_keys WHERE owner_kind = 'identity' AND owner_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM identities WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("identity"));
        }
        tx.commit().await?;
        self.record_change(&affected).await?;
        Ok(())
    }
}

/// An identity's oidc-auth configuration. Times and durations in seconds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OidcAuthRow {
    pub identity_id: String,
    pub discovery_url: String,
    pub issuer: String,
    /// PEM bundle trusted for the discovery and JWKS requests; empty: the
    /// system's roots.
    pub ca_pem: String,
    /// Glob pattern for `sub`; empty: any.
    pub subject: String,
    /// Glob patterns, one of which some `aud` must match; empty: any.
    #[sqlx(try_from = "JsonText")]
    pub audiences: Vec<String>,
    /// Claim name to glob pattern.
    #[sqlx(try_from = "JsonText")]
    pub claims: BTreeMap<String, String>,
    pub access_token_ttl: i64,
    pub access_token_max_ttl: i64,
    /// 0: unlimited.
    pub access_token_max_uses: i64,
    /// CIDRs, normalized.
    #[sqlx(try_from = "JsonText")]
    pub trusted_ips: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An access key issued by an oidc-auth login, with its bounds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MachineTokenRow {
    pub key_id: String,
    pub identity_id: String,
    pub login_at: i64,
    pub ttl: i64,
    pub max_ttl: i64,
    pub uses: i64,
    /// 0: unlimited.
    pub max_uses: i64,
    #[sqlx(try_from = "JsonText")]
    pub trusted_ips: Vec<String>,
}

impl MachineTokenRow {
    /// The key may not live past this: login time + max TTL.
    pub fn hard_expiry(&self) -> i64 {
        self.login_at.saturating_add(self.max_ttl)
    }
}

/// What a new machine token is bound by.
pub struct NewMachineToken<'a> {
    pub key: NewAccessKey<'a>,
    pub login_at: i64,
    pub ttl: i64,
    pub max_ttl: i64,
    pub max_uses: i64,
    pub trusted_ips: &'a [String],
}

const OIDC_AUTH_COLUMNS: &str = "identity_id, discovery_url, issuer, ca_pem, subject, audiences, \
     claims, access_token_ttl, access_token_max_ttl, access_token_max_uses, trusted_ips, \
     created_at, updated_at";

impl Store {
    /// Creates or replaces the identity's oidc-auth configuration. Tokens
    /// issued earlier keep the bounds they were issued with.
    pub async fn put_oidc_auth(&self, c: &OidcAuthRow) -> Result<OidcAuthRow> {
        let t = now();
        let sql = format!(
            "INSERT INTO identity_oidc_auth ({OIDC_AUTH_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
             ON CONFLICT (identity_id) DO UPDATE SET discovery_url = excluded.discovery_url, \
             issuer = excluded.issuer, ca_pem = excluded.ca_pem, subject = excluded.subject, \
             audiences = excluded.audiences, claims = excluded.claims, \
             access_token_ttl = excluded.access_token_ttl, \
             access_token_max_ttl = excluded.access_token_max_ttl, \
             access_token_max_uses = excluded.access_token_max_uses, \
             trusted_ips = excluded.trusted_ips, updated_at = excluded.updated_at"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(&c.identity_id)
            .bind(&c.discovery_url)
            .bind(&c.issuer)
            .bind(&c.ca_pem)
            .bind(&c.subject)
            .bind(JsonText::list(&c.audiences))
            .bind(JsonText::map(&c.claims))
            .bind(c.access_token_ttl)
            .bind(c.access_token_max_ttl)
            .bind(c.access_token_max_uses)
            .bind(JsonText::list(&c.trusted_ips))
            .bind(t)
            .execute(self.pool())
            .await;
        match done {
            Ok(_) => {}
            // The identity went away meanwhile (a foreign-key violation).
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Err(StoreError::NotFound("identity"));
            }
            Err(e) => return Err(e.into()),
        }
        self.get_oidc_auth(&c.identity_id).await
    }

    pub async fn get_oidc_auth(&self, identity_id: &str) -> Result<OidcAuthRow> {
        let sql =
            format!("SELECT {OIDC_AUTH_COLUMNS} FROM identity_oidc_auth WHERE identity_id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(identity_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("oidc-auth configuration"))
    }

    /// Removes the configuration and revokes the access tokens it issued;
    /// returns how many tokens were revoked.
    pub async fn delete_oidc_auth(&self, identity_id: &str) -> Result<u64> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("DELETE FROM identity_oidc_auth WHERE identity_id = $1")
            .bind(identity_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("oidc-auth configuration"));
        }
        let revoked = sqlx::query(
            "DELETE FROM access_keys WHERE id IN \
             (SELECT key_id FROM identity_access_tokens WHERE identity_id = $1)",
        )
        .bind(identity_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM identity_access_tokens WHERE identity_id = $1")
            .bind(identity_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked.rows_affected())
    }

    /// Stores the access key of an oidc-auth login with its bounds, at once.
    pub async fn create_machine_token(&self, t: &NewMachineToken<'_>) -> Result<()> {
        let k = &t.key;
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO access_keys (id, name, owner_kind, owner_id, secret_hash, created_at, \
             expires_at, inactivity_timeout, inactivity_deadline) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7)",
        )
        .bind(k.id)
        .bind(k.name)
        .bind(k.owner_kind)
        .bind(k.owner_id)
        .bind(k.secret_hash)
        .bind(t.login_at)
        .bind(k.expires_at)
        .bind(k.inactivity_timeout)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, || "an access key with this id already exists".into()))?;
        sqlx::query(
            "INSERT INTO identity_access_tokens (key_id, identity_id, login_at, ttl, max_ttl, \
             uses, max_uses, trusted_ips) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
        )
        .bind(k.id)
        .bind(k.owner_id)
        .bind(t.login_at)
        .bind(t.ttl)
        .bind(t.max_ttl)
        .bind(t.max_uses)
        .bind(JsonText::list(t.trusted_ips))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The bounds of an access key issued by an oidc-auth login; `None`
    /// for any other key.
    pub async fn get_machine_token(&self, key_id: &str) -> Result<Option<MachineTokenRow>> {
        Ok(sqlx::query_as(
            "SELECT key_id, identity_id, login_at, ttl, max_ttl, uses, max_uses, trusted_ips \
             FROM identity_access_tokens WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Counts one use of a machine token; `false` when it has no use left
    /// (then nothing is counted). Atomic, so parallel requests on several
    /// replicas never exceed the limit.
    pub async fn use_machine_token(&self, key_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE identity_access_tokens SET uses = uses + 1 \
             WHERE key_id = $1 AND (max_uses = 0 OR uses < max_uses)",
        )
        .bind(key_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a machine token's expiry (and its inactivity deadline with it).
    pub async fn renew_machine_token(&self, key_id: &str, expires_at: i64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE access_keys SET expires_at = $1, inactivity_deadline = $1 WHERE id = $2",
        )
        .bind(expires_at)
        .bind(key_id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("access key"));
        }
        Ok(())
    }
}
