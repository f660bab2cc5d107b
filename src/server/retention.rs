//! Keeps the audit log, recorded sessions and the rate-limit counters from
//! growing forever: in the background, entries older than
//! `--audit-retention`, sessions older than `--session-retention` and
//! counters that ran out are removed. With several replicas on one database, a
//! lease in `settings` lets one replica do it per period; any replica may
//! take the next one.

use std::time::Duration;

use crate::server::store::{self, Store};

/// The `settings` row that holds the pruning lease (Unix ms until it is held).
const LEASE: &str = "audit.prune_lease_until_ms";

/// How long what is kept: zero keeps forever.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub audit: Duration,
    pub sessions: Duration,
}

/// Prunes every `every` until the process ends. A zero retention keeps
/// that kind forever (the counters are still pruned).
pub async fn run(store: Store, retention: Retention, every: Duration) {
    let every = every.max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = prune_once(&store, retention, every).await {
            tracing::warn!("cannot prune the audit log: {e}");
        }
    }
}

/// One period's pruning, if this replica gets the lease; returns the audit
/// entries removed.
pub async fn prune_once(
    store: &Store,
    retention: Retention,
    every: Duration,
) -> store::Result<Option<u64>> {
    let now = store::now_ms();
    let period = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    if !store
        .take_lease(LEASE, now, now.saturating_add(period))
        .await?
    {
        tracing::debug!("another replica prunes the audit log this period");
        return Ok(None);
    }
    store.prune_rate_limits(now).await?;
    if !retention.sessions.is_zero() {
        let keep = i64::try_from(retention.sessions.as_millis()).unwrap_or(i64::MAX);
        let removed = store.prune_sessions(now.saturating_sub(keep)).await?;
        if removed > 0 {
            tracing::info!(
                removed,
                retention = %humantime::format_duration(retention.sessions),
                "removed recorded sessions older than the retention"
            );
        }
    }
    let retention = retention.audit;
    if retention.is_zero() {
        return Ok(Some(0));
    }
    let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let removed = store.prune_audit(now.saturating_sub(keep)).await?;
    if removed > 0 {
        tracing::info!(
            removed,
            retention = %humantime::format_duration(retention),
            "removed audit log entries older than the retention"
        );
    }
    Ok(Some(removed))
}
