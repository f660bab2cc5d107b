//! Identity providers. The client secret is stored encrypted with the root
//! key (the caller encrypts; this layer never sees the plain secret).

use sqlx::AssertSqlSafe;

use super::{Bind, List, Page, PageRequest, Result, Store, StoreError, conflict, new_id, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub url: String,
    pub client_id: String,
    pub client_secret_enc: String,
    pub issuer: String,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub jwks_url: String,
    /// Space-separated scopes the provider advertises that we request.
    pub scopes: String,
    /// PEM bundle of the CA that signs the provider's certificate; empty for the system roots.
    pub ca_pem: String,
    /// The claim that names users; empty: the verified email.
    pub username_claim: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a new or updated provider row holds.
#[derive(Debug, Clone)]
pub struct NewProvider {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub client_id: String,
    pub client_secret_enc: String,
    pub issuer: String,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub jwks_url: String,
    pub scopes: String,
    pub ca_pem: String,
    pub username_claim: String,
}

const SELECT: &str = "SELECT id, name, kind, url, client_id, client_secret_enc, issuer, \
     auth_url, token_url, userinfo_url, jwks_url, scopes, ca_pem, username_claim, created_at, \
     updated_at FROM providers";

impl Store {
    pub async fn create_provider(&self, p: &NewProvider) -> Result<ProviderRow> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO providers (id, name, kind, url, client_id, client_secret_enc, issuer, \
             auth_url, token_url, userinfo_url, jwks_url, scopes, ca_pem, username_claim, created_at, \
             updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
        )
        .bind(&id)
        .bind(&p.name)
        .bind(&p.kind)
        .bind(&p.url)
        .bind(&p.client_id)
        .bind(&p.client_secret_enc)
        .bind(&p.issuer)
        .bind(&p.auth_url)
        .bind(&p.token_url)
        .bind(&p.userinfo_url)
        .bind(&p.jwks_url)
        .bind(&p.scopes)
        .bind(&p.ca_pem)
        .bind(&p.username_claim)
        .bind(now())
        .execute(self.pool())
        .await
        .map_err(|e| {
            conflict(e, || {
                format!("a provider named {:?} already exists", p.name)
            })
        })?;
        self.get_provider(&id).await
    }

    /// Replaces every field but the name and id.
    /// Changes a provider. Moved to another issuer, whose `sub`s name other
    /// people, it keeps none of its sessions (see
    /// [`Store::end_provider_sessions`]).
    pub async fn update_provider(&self, id: &str, p: &NewProvider) -> Result<ProviderRow> {
        if self.get_provider(id).await?.issuer != p.issuer {
            self.end_provider_sessions(id).await?;
        }
        let done = sqlx::query(
            "UPDATE providers SET kind = $1, url = $2, client_id = $3, client_secret_enc = $4, \
             issuer = $5, auth_url = $6, token_url = $7, userinfo_url = $8, jwks_url = $9, \
             scopes = $10, ca_pem = $11, username_claim = $12, updated_at = $13 WHERE id = $14",
        )
        .bind(&p.kind)
        .bind(&p.url)
        .bind(&p.client_id)
        .bind(&p.client_secret_enc)
        .bind(&p.issuer)
        .bind(&p.auth_url)
        .bind(&p.token_url)
        .bind(&p.userinfo_url)
        .bind(&p.jwks_url)
        .bind(&p.scopes)
        .bind(&p.ca_pem)
        .bind(&p.username_claim)
        .bind(now())
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("provider"));
        }
        self.get_provider(id).await
    }

    pub async fn get_provider(&self, id: &str) -> Result<ProviderRow> {
        let sql = format!("{SELECT} WHERE id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("provider"))
    }

    pub async fn find_provider_by_name(&self, name: &str) -> Result<Option<ProviderRow>> {
        let sql = format!("{SELECT} WHERE name = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn list_providers(
        &self,
        name: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<ProviderRow>> {
        let list = List {
            select: SELECT,
            count_from: "providers",
            filter: "($1 IS NULL OR name = $1)",
            order_by: "name",
        };
        self.page_of(&list, &[Bind::Text(name)], page).await
    }

    /// Removes a provider, and the sessions that stand on it.
    pub async fn delete_provider(&self, id: &str) -> Result<ProviderRow> {
        let p = self.get_provider(id).await?;
        self.end_provider_sessions(id).await?;
        sqlx::query("DELETE FROM providers WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(p)
    }
}
