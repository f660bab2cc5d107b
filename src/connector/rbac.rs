//! Grants as Kubernetes RBAC. The connector follows the grants on its
//! destination and reconciles: a ClusterRoleBinding per cluster-wide grant,
//! a RoleBinding per namespace grant, each binding the ClusterRole the role
//! names, labelled as managed by infra. Bindings without that label are
//! never touched; managed ones no grant asks for are removed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use sha2::{Digest, Sha256};

use crate::api::Grant;
use crate::client::{Client, enc};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "infra";
const DESTINATION_LABEL: &str = "infra.dev/destination";

/// One binding a grant asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wanted {
    pub name: String,
    pub namespace: Option<String>,
    pub role: String,
    /// `User` or `Group`.
    pub kind: &'static str,
    pub subject: String,
}

/// The bindings the grants on `destination` ask for.
pub fn wanted(destination: &str, grants: &[Grant]) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = grants
        .iter()
        // Never bind Kubernetes' own names (the server refuses them anyway).
        .filter(|g| !crate::api::is_reserved_name(&g.subject_name))
        .filter_map(|g| {
            let (dest, ns) = match g.destination.split_once('.') {
                Some((d, n)) => (d, Some(n.to_string())),
                None => (g.destination.as_str(), None),
            };
            if dest != destination {
                return None;
            }
            let kind = if g.group.is_some() { "Group" } else { "User" };
            let digest = Sha256::digest(
                format!(
                    "{}\0{}\0{kind}\0{}",
                    ns.as_deref().unwrap_or(""),
                    g.role,
                    g.subject_name
                )
                .as_bytes(),
            );
            Some(Wanted {
                name: format!("infra-{}", &hex::encode(digest)[..16]),
                namespace: ns,
                role: g.role.clone(),
                kind,
                subject: g.subject_name.clone(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn meta(w: &Wanted, destination: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(w.name.clone()),
        namespace: w.namespace.clone(),
        labels: Some(BTreeMap::from([
            (MANAGED_BY.to_string(), MANAGER.to_string()),
            (DESTINATION_LABEL.to_string(), destination.to_string()),
        ])),
        ..Default::default()
    }
}

fn subjects(w: &Wanted) -> Option<Vec<Subject>> {
    Some(vec![Subject {
        kind: w.kind.to_string(),
        name: w.subject.clone(),
        api_group: Some("rbac.authorization.k8s.io".to_string()),
        namespace: None,
    }])
}

fn role_ref(w: &Wanted) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_string(),
        kind: "ClusterRole".to_string(),
        name: w.role.clone(),
    }
}

/// A client for the API server with the connector's own token file.
pub async fn kube_client(
    api: &str,
    token_file: &Path,
    ca_file: &Path,
) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::new(api.parse().context("--kube-api is not a URL")?);
    config.root_cert_file = Some(ca_file.to_path_buf());
    let pem =
        std::fs::read(ca_file).with_context(|| format!("cannot read {}", ca_file.display()))?;
    use rustls::pki_types::pem::PemObject;
    let ders: Vec<Vec<u8>> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    config.root_cert = Some(ders);
    config.auth_info.token_file = Some(token_file.display().to_string());
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}

/// What a reconciliation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub created: Vec<String>,
    pub deleted: Vec<String>,
}

/// Makes the managed bindings exactly `wanted`.
pub async fn reconcile(
    kube: &kube::Client,
    destination: &str,
    wanted: &[Wanted],
) -> anyhow::Result<Changes> {
    let mut changes = Changes::default();
    let selector = ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    let pp = PostParams::default();

    let crbs: Api<ClusterRoleBinding> = Api::all(kube.clone());
    let existing = crbs
        .list(&selector)
        .await
        .context("cannot list ClusterRoleBindings")?;
    for b in &existing.items {
        let name = b.metadata.name.clone().unwrap_or_default();
        let keep = wanted
            .iter()
            .any(|w| w.namespace.is_none() && w.name == name);
        if !keep {
            crbs.delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("cannot delete ClusterRoleBinding {name}"))?;
            changes.deleted.push(name);
        }
    }
    for w in wanted.iter().filter(|w| w.namespace.is_none()) {
        if existing
            .items
            .iter()
            .any(|b| b.metadata.name.as_deref() == Some(&w.name))
        {
            continue;
        }
        let b = ClusterRoleBinding {
            metadata: meta(w, destination),
            role_ref: role_ref(w),
            subjects: subjects(w),
        };
        crbs.create(&pp, &b)
            .await
            .with_context(|| format!("cannot create ClusterRoleBinding {}", w.name))?;
        changes.created.push(w.name.clone());
    }

    let all_rbs: Api<RoleBinding> = Api::all(kube.clone());
    let existing = all_rbs
        .list(&selector)
        .await
        .context("cannot list RoleBindings")?;
    for b in &existing.items {
        let name = b.metadata.name.clone().unwrap_or_default();
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        let keep = wanted
            .iter()
            .any(|w| w.namespace.as_deref() == Some(ns.as_str()) && w.name == name);
        if !keep {
            let api: Api<RoleBinding> = Api::namespaced(kube.clone(), &ns);
            api.delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("cannot delete RoleBinding {ns}/{name}"))?;
            changes.deleted.push(format!("{ns}/{name}"));
        }
    }
    for w in wanted.iter() {
        let Some(ns) = &w.namespace else { continue };
        if existing.items.iter().any(|b| {
            b.metadata.name.as_deref() == Some(&w.name)
                && b.metadata.namespace.as_deref() == Some(ns)
        }) {
            continue;
        }
        let api: Api<RoleBinding> = Api::namespaced(kube.clone(), ns);
        let b = RoleBinding {
            metadata: meta(w, destination),
            role_ref: role_ref(w),
            subjects: subjects(w),
        };
        api.create(&pp, &b)
            .await
            .with_context(|| format!("cannot create RoleBinding {ns}/{}", w.name))?;
        changes.created.push(format!("{ns}/{}", w.name));
    }
    Ok(changes)
}

/// Follows the grants on `destination` with long polls (the server answers
/// when they change, or every 30 s) and reconciles after each answer; that
/// also repairs bindings someone changed by hand. Errors back off `every`.
pub async fn sync_forever(
    client: Client,
    kube: kube::Client,
    destination: String,
    every: Duration,
) {
    let base = format!(
        "/api/grants?destination={}&limit={}",
        enc(&destination),
        crate::api::MAX_PAGE_LIMIT
    );
    let mut index: Option<String> = None;
    loop {
        let path = match &index {
            Some(i) => format!("{base}&lastUpdateIndex={}", enc(i)),
            None => base.clone(),
        };
        match client
            .get_with_header::<crate::api::ListResponse<Grant>>(
                &path,
                crate::api::LAST_UPDATE_INDEX_HEADER,
            )
            .await
        {
            Ok((list, idx)) => {
                let w = wanted(&destination, &list.items);
                match reconcile(&kube, &destination, &w).await {
                    Ok(c) if !c.created.is_empty() || !c.deleted.is_empty() => {
                        tracing::info!(created = ?c.created, deleted = ?c.deleted, "RBAC reconciled");
                        index = idx;
                    }
                    Ok(_) => index = idx,
                    Err(e) => {
                        tracing::warn!("RBAC reconciliation failed: {e:#}");
                        // Ask again without waiting for a change.
                        index = None;
                        tokio::time::sleep(every).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!("cannot read the grants of {destination}: {e}");
                index = None;
                tokio::time::sleep(every).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(dest: &str, role: &str, user: Option<&str>, group: Option<&str>) -> Grant {
        Grant {
            id: "x".into(),
            user: user.map(|_| "uid".to_string()),
            group: group.map(|_| "gid".to_string()),
            identity: None,
            subject_name: user.or(group).unwrap().to_string(),
            destination: dest.into(),
            role: role.into(),
            created: String::new(),
            created_by: String::new(),
        }
    }

    #[test]
    fn grants_become_bindings() {
        let g = vec![
            grant("prod", "view", Some("alice@example.com"), None),
            grant("prod.web", "edit", None, Some("sre")),
            grant("staging", "admin", Some("bob"), None),
        ];
        let w = wanted("prod", &g);
        assert_eq!(w.len(), 2);
        let crb = w.iter().find(|w| w.namespace.is_none()).unwrap();
        assert_eq!(
            (crb.kind, crb.subject.as_str(), crb.role.as_str()),
            ("User", "alice@example.com", "view")
        );
        let rb = w.iter().find(|w| w.namespace.is_some()).unwrap();
        assert_eq!(
            (rb.kind, rb.namespace.as_deref(), rb.role.as_str()),
            ("Group", Some("web"), "edit")
        );
        assert!(crb.name.starts_with("infra-") && crb.name.len() == 22);
        // Stable names: the same grants give the same bindings.
        assert_eq!(wanted("prod", &g), w);
    }
}
