//! The change feed: what a destination's connector follows (its grants
//! now, and whose access ended), as one index per destination.
//!
//! A change takes the next value of the one counter (`settings.
//! grants_version`) and writes it as the index of every destination it
//! concerns (`change_index`). Inside a replica, long polls wait on a
//! `watch` per destination, so a change wakes exactly the polls it
//! concerns and a waiting poll costs a socket and a waker, no query. Across
//! replicas on PostgreSQL, every change is also sent with `NOTIFY` on one
//! channel, and each replica's one listener connection wakes its own
//! waiters; a lost listener connection is opened again and followed by a
//! catch-up read of `change_index`, so no change is missed. SQLite is one
//! replica by definition: the in-process path is all there is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::{Backend, Result, Store};

/// The PostgreSQL channel changes are announced on.
const CHANNEL: &str = "infra_changes";
/// A `NOTIFY` payload must stay under 8000 bytes; beyond this many
/// destinations a change is announced as "look it up".
const MAX_NAMED: usize = 100;
/// The key of the watch that every change wakes.
const ALL: &str = "";

/// The in-process side: one watch per destination that someone waits on.
#[derive(Default)]
pub struct ChangeFeed {
    watches: Mutex<HashMap<String, watch::Sender<i64>>>,
}

impl ChangeFeed {
    /// A receiver that sees `destination`'s index change (`""`: any change).
    pub fn subscribe(&self, destination: &str) -> watch::Receiver<i64> {
        let mut w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        w.entry(destination.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Tells the waiters of `destinations` (and of every change) that
    /// their index is now at least `version`.
    pub fn publish(&self, version: i64, destinations: &[String]) {
        let mut w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody waits on a destination whose watch has no receivers left.
        if w.len() > 64 {
            w.retain(|_, tx| tx.receiver_count() > 0);
        }
        let bump = |tx: &watch::Sender<i64>| {
            tx.send_if_modified(|v| {
                let newer = version > *v;
                if newer {
                    *v = version;
                }
                newer
            });
        };
        for d in destinations.iter().map(String::as_str).chain([ALL]) {
            if let Some(tx) = w.get(d) {
                bump(tx);
            }
        }
    }

    /// A change whose destinations are not known here (a long NOTIFY, a
    /// catch-up): every waiter re-reads its index.
    fn publish_everywhere(&self, version: i64) {
        let w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for tx in w.values() {
            tx.send_if_modified(|v| {
                let newer = version > *v;
                if newer {
                    *v = version;
                }
                newer
            });
        }
    }
}

/// The destination a grant's `destination` (`NAME` or `NAME.NAMESPACE`)
/// belongs to.
pub fn base_destination(destination: &str) -> &str {
    destination.split('.').next().unwrap_or(destination)
}

impl Store {
    /// The in-process feed.
    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    /// Records a change that `destinations`' connectors must follow, and
    /// wakes their long polls here and (through NOTIFY) on every replica.
    pub async fn record_change(&self, destinations: &[String]) -> Result<()> {
        let mut dests: Vec<String> = destinations
            .iter()
            .map(|d| base_destination(d).to_string())
            .filter(|d| !d.is_empty())
            .collect();
        dests.sort();
        dests.dedup();
        if dests.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        let (value,): (String,) = sqlx::query_as(
            "INSERT INTO settings (name, value) VALUES ('grants_version', '1') \
             ON CONFLICT (name) DO UPDATE SET \
             value = CAST(CAST(settings.value AS BIGINT) + 1 AS TEXT) RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?;
        let version: i64 = value.parse().unwrap_or(0);
        for d in &dests {
            sqlx::query(
                "INSERT INTO change_index (destination, version) VALUES ($1, $2) \
                 ON CONFLICT (destination) DO UPDATE SET version = CASE \
                 WHEN excluded.version > change_index.version THEN excluded.version \
                 ELSE change_index.version END",
            )
            .bind(d)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        if self.backend == Backend::Postgres {
            // Sent when the transaction commits, to every replica's listener.
            let payload = if dests.len() <= MAX_NAMED {
                format!("{version} {}", dests.join(" "))
            } else {
                format!("{version} *")
            };
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.feed.publish(version, &dests);
        Ok(())
    }

    /// The index of the last change `destination`'s connector must follow
    /// (0: none yet).
    pub async fn destination_version(&self, destination: &str) -> Result<i64> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM change_index WHERE destination = $1")
                .bind(base_destination(destination))
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(v,)| v).unwrap_or(0))
    }

    /// The destinations whose connectors follow what `subject` may do:
    /// those of its grants (and, for a user, of their groups' grants).
    pub async fn destinations_of(&self, subject: &super::Subject) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT destination FROM grants \
             WHERE (subject_kind = $1 AND subject_id = $2) \
             OR ($1 = 'user' AND subject_kind = 'group' AND subject_id IN \
                 (SELECT group_id FROM group_members WHERE user_id = $2))",
        )
        .bind(subject.kind())
        .bind(subject.id())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }

    /// The destinations of a group's grants.
    pub async fn destinations_of_group(&self, group_id: &str) -> Result<Vec<String>> {
        self.destinations_of(&super::Subject::Group(group_id.to_string()))
            .await
    }

    /// Follows other replicas' changes (PostgreSQL only): one listener
    /// connection, opened again when lost, each time followed by a
    /// catch-up read so that nothing announced meanwhile is missed.
    pub fn follow_other_replicas(&self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let mut seen = 0i64;
            let mut failures = 0u32;
            loop {
                match store.listen_once(&mut seen).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(
                            "the change listener's database connection failed ({e}); \
                             opening it again"
                        );
                    }
                }
                // Quick first retry, then back off up to 5 s.
                let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Listens until the connection is lost.
    async fn listen_once(&self, seen: &mut i64) -> anyhow::Result<()> {
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        // Listening now: whatever changed before is in the table.
        self.catch_up(seen).await?;
        loop {
            match listener.try_recv().await? {
                Some(n) => {
                    let mut parts = n.payload().split(' ');
                    let version: i64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                    let dests: Vec<String> = parts.map(str::to_string).collect();
                    if dests.iter().any(|d| d == "*") {
                        self.feed.publish_everywhere(version);
                    } else {
                        self.feed.publish(version, &dests);
                    }
                    *seen = (*seen).max(version);
                }
                // The connection was lost: open a new one, then catch up.
                None => return Ok(()),
            }
        }
    }

    /// Publishes every change after `seen` that this replica may have
    /// missed.
    async fn catch_up(&self, seen: &mut i64) -> Result<()> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT destination, version FROM change_index WHERE version > $1")
                .bind(*seen)
                .fetch_all(self.pool())
                .await?;
        for (d, v) in rows {
            self.feed.publish(v, std::slice::from_ref(&d));
            *seen = (*seen).max(v);
        }
        Ok(())
    }
}
