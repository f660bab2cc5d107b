//! Destinations: the clusters (and the namespaces in them) that grants
//! point at, registered by their connectors or created by an admin.

use sqlx::AssertSqlSafe;

use super::{
    Bind, List, Page, PageRequest, Result, Store, StoreError, conflict, new_id, now, placeholders,
};

#[derive(Debug, Clone, sqlx::FromRow)]
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

const SELECT: &str = "SELECT id, name, url, ca, created_at, updated_at, last_seen_at, \
     connector_version FROM destinations";

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
    /// Notes that `name`'s connector called in now; written by
    /// `flush_seen` within a second.
    pub fn mark_seen(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), now());
    }

    /// Writes the times connectors were last seen, in one statement.
    pub async fn flush_seen(&self) -> Result<()> {
        let batch = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        // Every time in a batch is within the last second: one value will do.
        let t = batch.values().copied().max().unwrap_or_else(now);
        let names: Vec<&String> = batch.keys().collect();
        for chunk in names.chunks(500) {
            let sql = format!(
                "UPDATE destinations SET last_seen_at = $1 WHERE name IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(t);
            for n in chunk {
                q = q.bind(n.as_str());
            }
            q.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Flushes `mark_seen` once a second, for as long as the server runs.
    pub fn flush_seen_every_second(&self) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = store.flush_seen().await {
                    tracing::warn!("cannot record when connectors were last seen: {e}");
                }
            }
        });
    }

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

    /// A connector's registration (and heartbeat): creates the destination
    /// `name` or sets its URL and CA, marks it seen now, and says what changed.
    pub async fn register_destination(
        &self,
        name: &str,
        url: &str,
        ca: &str,
        connector_version: &str,
    ) -> Result<(DestinationRow, Registration)> {
        let before = self.find_destination_by_name(name).await?;
        let t = now();
        if let Some(b) = &before
            && b.url == url
            && b.ca == ca
            && b.connector_version == connector_version
        {
            // A heartbeat: only the time it was seen, written with others.
            self.mark_seen(name);
            let mut row = b.clone();
            row.last_seen_at = Some(t);
            return Ok((row, Registration::Unchanged));
        }
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
        let sql = format!("{SELECT} WHERE id = $1");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound("destination"))
    }

    pub async fn find_destination_by_name(&self, name: &str) -> Result<Option<DestinationRow>> {
        let sql = format!("{SELECT} WHERE name = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Lists destinations; `only` restricts the list to those names (what a
    /// non-admin may see).
    pub async fn list_destinations(
        &self,
        name: Option<&str>,
        only: Option<&[String]>,
        page: PageRequest,
    ) -> Result<Page<DestinationRow>> {
        const BY_NAME: &str = "($1 IS NULL OR name = $1)";
        let filter = match only {
            None => BY_NAME.to_string(),
            // `IN ()` is no SQL: who may see no destination sees none.
            Some([]) => {
                return Ok(Page {
                    items: Vec::new(),
                    total: 0,
                });
            }
            Some(names) => format!("{BY_NAME} AND name IN ({})", placeholders(2, names.len())),
        };
        let list = List {
            select: SELECT,
            count_from: "destinations",
            filter: &filter,
            order_by: "name",
        };
        let binds: Vec<Bind> = std::iter::once(Bind::Text(name))
            .chain(only.unwrap_or_default().iter().map(|n| Bind::Text(Some(n))))
            .collect();
        self.page_of(&list, &binds, page).await
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
