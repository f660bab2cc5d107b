//! Destinations: the clusters (and the namespaces in them) that grants
//! point at, registered by their connectors or created by an admin.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Page, PageRequest, Result, Store, StoreError, conflict, new_id, now, total};

#[derive(Debug, Clone)]
pub struct DestinationRow {
    pub id: String,
    pub name: String,
    pub url: String,
    pub ca: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_seen_at: Option<i64>,
    /// The version of the connector that last registered it ('' unknown).
    pub connector_version: String,
}

const COLUMNS: &str = "id, name, url, ca, created_at, updated_at, last_seen_at, connector_version";

fn row(r: AnyRow) -> Result<DestinationRow> {
    Ok(DestinationRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        ca: r.try_get("ca")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        connector_version: r.try_get("connector_version")?,
    })
}

/// What a registration changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Created,
    /// The URL (its old value given) or the CA changed.
    Changed {
        url: Option<String>,
        ca: bool,
    },
    Unchanged,
}

impl Store {
    pub async fn create_destination(
        &self,
        name: &str,
        url: &str,
        ca: &str,
    ) -> Result<DestinationRow> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO destinations (id, name, url, ca, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&id)
        .bind(name)
        .bind(url)
        .bind(ca)
        .bind(now())
        .execute(self.pool())
        .await
        .map_err(|e| conflict(e, || format!("a destination named {name:?} already exists")))?;
        self.get_destination(&id).await
    }

    /// Creates or updates the destination `name` and marks it seen now: a
    /// connector's registration and heartbeat.
    /// A connector's registration (and heartbeat): creates the destination
    /// or sets its URL and CA, and says what changed.
    pub async fn register_destination(
        &self,
        name: &str,
        url: &str,
        ca: &str,
        connector_version: &str,
    ) -> Result<(DestinationRow, Registration)> {
        let before = self.find_destination_by_name(name).await?;
        let t = now();
        sqlx::query(
            "INSERT INTO destinations (id, name, url, ca, created_at, updated_at, last_seen_at, \
             connector_version) VALUES ($1, $2, $3, $4, $5, $5, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET url = excluded.url, ca = excluded.ca, \
             updated_at = excluded.updated_at, last_seen_at = excluded.last_seen_at, \
             connector_version = excluded.connector_version",
        )
        .bind(new_id())
        .bind(name)
        .bind(url)
        .bind(ca)
        .bind(t)
        .bind(connector_version)
        .execute(self.pool())
        .await?;
        let row = self
            .find_destination_by_name(name)
            .await?
            .ok_or(StoreError::NotFound("destination"))?;
        let change = match before {
            None => Registration::Created,
            Some(b) if b.url != row.url || b.ca != row.ca => Registration::Changed {
                url: (b.url != row.url).then_some(b.url),
                ca: b.ca != row.ca,
            },
            Some(_) => Registration::Unchanged,
        };
        Ok((row, change))
    }

    pub async fn update_destination(
        &self,
        id: &str,
        url: &str,
        ca: &str,
    ) -> Result<DestinationRow> {
        let done =
            sqlx::query("UPDATE destinations SET url = $1, ca = $2, updated_at = $3 WHERE id = $4")
                .bind(url)
                .bind(ca)
                .bind(now())
                .bind(id)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("destination"));
        }
        self.get_destination(id).await
    }

    pub async fn get_destination(&self, id: &str) -> Result<DestinationRow> {
        let sql = format!("SELECT {COLUMNS} FROM destinations WHERE id = $1");
        match sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
        {
            Some(r) => row(r),
            None => Err(StoreError::NotFound("destination")),
        }
    }

    pub async fn find_destination_by_name(&self, name: &str) -> Result<Option<DestinationRow>> {
        let sql = format!("SELECT {COLUMNS} FROM destinations WHERE name = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .map(row)
            .transpose()
    }

    /// Lists destinations; `only` restricts the list to those names (what a
    /// non-admin may see).
    pub async fn list_destinations(
        &self,
        name: Option<&str>,
        only: Option<&[String]>,
        page: PageRequest,
    ) -> Result<Page<DestinationRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM destinations WHERE ($1 IS NULL OR name = $1) ORDER BY name"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .fetch_all(self.pool())
            .await?;
        let mut all = rows.into_iter().map(row).collect::<Result<Vec<_>>>()?;
        if let Some(only) = only {
            all.retain(|d| only.iter().any(|n| n == &d.name));
        }
        let total = total(all.len() as i64);
        let items = all
            .into_iter()
            .skip(page.offset() as usize)
            .take(page.limit.min(usize::MAX as u64) as usize)
            .collect();
        Ok(Page { items, total })
    }

    pub async fn delete_destination(&self, id: &str) -> Result<DestinationRow> {
        let dest = self.get_destination(id).await?;
        sqlx::query("DELETE FROM destinations WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(dest)
    }
}
