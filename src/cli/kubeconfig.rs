//! What the CLI keeps in kubectl's kubeconfig: a context, cluster and user
//! for every destination (and namespace) a session's grants reach, whose
//! user runs the credential plugin (`credential_plugin`). Written after a
//! login (a person's or a machine's) and by `infra use`, each time dropping
//! the server's contexts no longer granted; taken out at logout. The file
//! itself (format, lock, whose entry is whose) is `local::kubeconfig`'s.

use std::path::PathBuf;

use anyhow::Context;

use crate::client::Client;

/// Writes a kubeconfig context for every destination the user may reach
/// through this server, and removes this server's contexts that are gone.
pub async fn write_kubeconfig(client: &Client, server: &str, user_id: &str) -> anyhow::Result<()> {
    let grants = format!(
        "/api/grants?user={}&showInherited=true",
        crate::client::enc(user_id)
    );
    write_kubeconfig_with(client, server, &grants, false).await
}

/// [`write_kubeconfig`] for the grants at `grants_path`; `quiet` keeps
/// stderr silent except for warnings.
pub async fn write_kubeconfig_with(
    client: &Client,
    server: &str,
    grants_path: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    use crate::local::kubeconfig::{self, InfraCluster};
    let grants: Vec<crate::api::Grant> = client.list_all(grants_path).await?;
    let destinations: Vec<crate::api::Destination> = client.list_all("/api/destinations").await?;
    let mut clusters: Vec<InfraCluster> = Vec::new();
    for g in &grants {
        let (dest, ns) = match g.destination.split_once('.') {
            Some((d, n)) => (d, Some(n.to_string())),
            None => (g.destination.as_str(), None),
        };
        let Some(d) = destinations
            .iter()
            .find(|d| d.name == dest && !d.url.is_empty())
        else {
            continue;
        };
        let c = InfraCluster {
            destination: dest.to_string(),
            namespace: ns,
            url: d.url.clone(),
            ca_pem: d.ca.clone(),
        };
        if !clusters.contains(&c) {
            clusters.push(c);
        }
    }
    let exe = std::env::current_exe().context("cannot find the path of the infra executable")?;
    let exe = credential_plugin(exe.canonicalize().unwrap_or(exe));
    let path = kubeconfig::kubeconfig_path();
    let owner = server.to_string();
    let summary = tokio::task::spawn_blocking(move || {
        kubeconfig::write_infra_entries(&path, &owner, &exe, &clusters)
    });
    let summary = summary.await??;
    if let Some(stale) = &summary.stale_lock {
        eprintln!("note: {stale}");
    }
    let mut contexts: Vec<&String> = summary.added.iter().chain(&summary.updated).collect();
    contexts.sort();
    let changed =
        !summary.added.is_empty() || !summary.updated.is_empty() || !summary.removed.is_empty();
    if quiet {
        // Only the warnings below.
    } else if changed {
        let names: Vec<&str> = contexts.iter().map(|s| s.as_str()).collect();
        eprintln!(
            "Updated {}: {}",
            summary.path.display(),
            if names.is_empty() {
                "no clusters".into()
            } else {
                names.join(", ")
            }
        );
        if !summary.removed.is_empty() {
            eprintln!(
                "Removed contexts no longer granted: {}",
                summary.removed.join(", ")
            );
        }
    } else if grants
        .iter()
        .all(|g| g.destination == crate::api::INFRA_DESTINATION)
    {
        eprintln!("You have no cluster grants yet; ask an admin for one (`infra grants add`).");
    }
    for s in &summary.skipped {
        eprintln!(
            "warning: not writing {} to the kubeconfig: an entry of that name belongs to {}",
            s.context, s.owner
        );
    }
    Ok(())
}

/// Removes this server's contexts (with their clusters and users) from the
/// kubeconfig, at logout.
pub(super) async fn remove_kubeconfig(server: &str) -> anyhow::Result<()> {
    let path = crate::local::kubeconfig::kubeconfig_path();
    let srv = server.to_string();
    let removed = tokio::task::spawn_blocking(move || {
        crate::local::kubeconfig::remove_infra_entries(&path, &srv)
    })
    .await??;
    if let Some(stale) = &removed.stale_lock {
        eprintln!("note: {stale}");
    }
    if !removed.removed.is_empty() {
        eprintln!(
            "Removed contexts {} from {}",
            removed.removed.join(", "),
            removed.path.display()
        );
    }
    Ok(())
}

/// What kubectl runs for a credential: `infra-credential` beside this
/// executable (the warm path alone, which starts as fast as `cat`), or this
/// executable itself when it is not there (both take the same arguments).
fn credential_plugin(infra: PathBuf) -> PathBuf {
    let small = infra.with_file_name(if cfg!(windows) {
        "infra-credential.exe"
    } else {
        "infra-credential"
    });
    if small.is_file() { small } else { infra }
}
