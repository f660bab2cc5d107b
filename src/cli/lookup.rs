//! What the management commands share: a name resolved to an id through the
//! API (users, groups), the id of the user this machine is logged in as,
//! and removal by name, where `--force` makes removing something already
//! gone a success, so scripts can be re-run.

use super::session::Session;
use crate::client::Client;

/// Removes the `kind` named `name` from `/api/{collection}/{id}` when it was
/// found; with `force`, one that is already gone is fine.
pub(super) async fn remove_found(
    c: &Client,
    found: Option<String>,
    collection: &str,
    kind: &str,
    name: &str,
    force: bool,
) -> anyhow::Result<()> {
    match found {
        Some(id) => {
            c.delete(&format!("/api/{collection}/{id}")).await?;
            eprintln!("Removed {kind} {name}");
            Ok(())
        }
        None if force => Ok(()),
        None => anyhow::bail!("no {kind} named {name:?} (use --force to ignore)"),
    }
}

pub(super) async fn user_id(c: &Client, name: &str) -> anyhow::Result<String> {
    match c.user_by_name(name).await? {
        Some(u) => Ok(u.id),
        None => anyhow::bail!("no user named {name:?}; see `infra users list`"),
    }
}

pub(super) async fn group_id(c: &Client, name: &str) -> anyhow::Result<Option<String>> {
    Ok(c.group_by_name(name).await?.map(|g| g.id))
}

/// The id of the user (or machine identity) the session's key belongs to:
/// with `INFRA_ACCESS_KEY`, the server says whose it is.
pub(super) async fn me(s: &Session) -> anyhow::Result<String> {
    Ok(s.me().await?.id)
}
