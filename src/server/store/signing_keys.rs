//! The keys that sign cluster tokens, one per rotation epoch. The private
//! half is stored encrypted with the root key (the caller encrypts and
//! decrypts; this layer never sees it in the clear); the public half is its
//! JWK as JSON text, published until `publish_until`. What the keys are and
//! when they rotate is decided in `server::tokens`.

use super::{Result, Store, now};

/// The key that signs an epoch's tokens.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    /// The `kid` of the tokens it signs.
    pub id: String,
    pub private_enc: String,
}

pub struct NewSigningKey<'a> {
    pub id: &'a str,
    pub epoch: i64,
    pub private_enc: &'a str,
    /// The public key as a JWK (JSON text).
    pub public_jwk: &'a str,
    pub created_at: i64,
    pub publish_until: i64,
}

impl Store {
    /// The key of `epoch`, if one was made.
    pub async fn find_signing_key(&self, epoch: i64) -> Result<Option<SigningKeyRow>> {
        Ok(
            sqlx::query_as("SELECT id, private_enc FROM signing_keys WHERE epoch = $1")
                .bind(epoch)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Stores the key of its epoch unless that epoch has one already (the
    /// epoch is UNIQUE: of several replicas, exactly one key is kept).
    pub async fn create_signing_key(&self, k: &NewSigningKey<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO signing_keys (id, epoch, alg, private_enc, public_jwk, created_at, \
             publish_until) VALUES ($1, $2, 'ES256', $3, $4, $5, $6) \
             ON CONFLICT (epoch) DO NOTHING",
        )
        .bind(k.id)
        .bind(k.epoch)
        .bind(k.private_enc)
        .bind(k.public_jwk)
        .bind(k.created_at)
        .bind(k.publish_until)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The JWKs (JSON text) published now, newest epoch first.
    pub async fn published_signing_keys(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT public_jwk FROM signing_keys WHERE publish_until > $1 ORDER BY epoch DESC",
        )
        .bind(now())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(jwk,)| jwk).collect())
    }

    /// Removes the keys no longer published; returns how many.
    pub async fn delete_retired_signing_keys(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE publish_until < $1")
            .bind(now())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
