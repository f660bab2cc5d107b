//! Machine identities: workloads that log in with their own OIDC JWT.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Page, PageRequest, Result, Store, StoreError, conflict, new_id, now, total};

#[derive(Debug, Clone)]
pub struct IdentityRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

fn row(r: AnyRow) -> Result<IdentityRow> {
    Ok(IdentityRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
    })
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

    pub async fn get_identity(&self, id: &str) -> Result<IdentityRow> {
        match sqlx::query("SELECT id, name, created_at FROM identities WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
        {
            Some(r) => row(r),
            None => Err(StoreError::NotFound("identity")),
        }
    }

    pub async fn list_identities(
        &self,
        name: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<IdentityRow>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at FROM identities WHERE ($1 IS NULL OR name = $1) \
             ORDER BY name LIMIT $2 OFFSET $3",
        )
        .bind(name)
        .bind(page.limit.min(i64::MAX as u64) as i64)
        .bind(page.offset())
        .fetch_all(self.pool())
        .await?;
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM identities WHERE ($1 IS NULL OR name = $1)")
                .bind(name)
                .fetch_one(self.pool())
                .await?;
        Ok(Page {
            items: rows.into_iter().map(row).collect::<Result<_>>()?,
            total: total(count),
        })
    }

    /// Removes the identity with its grants and access keys.
    pub async fn delete_identity(&self, id: &str) -> Result<()> {
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
        Ok(())
    }
}
