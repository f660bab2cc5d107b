//! Grants as Kubernetes RBAC. The connector follows the grants on its
//! destination and reconciles: a ClusterRoleBinding per cluster-wide grant,
//! a RoleBinding per namespace grant, each binding the ClusterRole the role
//! names, labelled as managed by infra *for this destination*.
//!
//! - Each binding is reconciled on its own: a grant on a namespace that
//!   does not exist yet stays pending (and is tried again) while every
//!   other binding is applied.
//! - A connector owns only the bindings labelled with its destination, so
//!   two connectors on one API server never touch each other's; bindings
//!   without infra's labels are never touched at all.
//! - A managed binding whose subjects or roleRef someone changed is put
//!   back (a roleRef cannot change: delete and create), and the repair is
//!   logged.
//! - The state of every grant (`applied`, or `pending: why`) goes back to
//!   the server, which shows it in `infra grants list`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

use super::upstream::TokenFile;
use crate::api::{Grant, GrantStateReport, GrantStatesRequest};
use crate::client::{Client, enc};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "infra";
pub const DESTINATION_LABEL: &str = "infra.dev/destination";

/// One binding the grants ask for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wanted {
    pub name: String,
    pub namespace: Option<String>,
    pub role: String,
    /// `User` or `Group`.
    pub kind: &'static str,
    pub subject: String,
    /// The grants that ask for it (several may ask for the same binding).
    pub grants: Vec<String>,
}

impl Wanted {
    fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("RoleBinding {ns}/{}", self.name),
            None => format!("ClusterRoleBinding {}", self.name),
        }
    }
}

/// The bindings the grants on `destination` ask for. Names hash the
/// destination too, so two destinations on one cluster never share one.
pub fn wanted(destination: &str, grants: &[Grant]) -> Vec<Wanted> {
    let mut by_name: BTreeMap<String, Wanted> = BTreeMap::new();
    // Never bind Kubernetes' own names (the server refuses them anyway).
    for g in grants
        .iter()
        .filter(|g| !crate::api::is_reserved_name(&g.subject_name))
    {
        let (dest, ns) = crate::api::rbac::split_destination(&g.destination);
        if dest != destination {
            continue;
        }
        let ns = ns.map(str::to_string);
        let kind = crate::api::rbac::subject_kind(g.group.is_some());
        let name = crate::api::rbac::binding_name(
            destination,
            ns.as_deref(),
            &g.role,
            kind,
            &g.subject_name,
        );
        by_name
            .entry(format!("{}/{name}", ns.as_deref().unwrap_or("")))
            .or_insert_with(|| Wanted {
                name,
                namespace: ns,
                role: g.role.clone(),
                kind,
                subject: g.subject_name.clone(),
                grants: Vec::new(),
            })
            .grants
            .push(g.id.clone());
    }
    by_name.into_values().collect()
}

fn labels(destination: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (DESTINATION_LABEL.to_string(), destination.to_string()),
    ])
}

fn meta(w: &Wanted, destination: &str, resource_version: Option<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(w.name.clone()),
        namespace: w.namespace.clone(),
        labels: Some(labels(destination)),
        resource_version,
        ..Default::default()
    }
}

fn subjects(w: &Wanted) -> Vec<Subject> {
    vec![Subject {
        kind: w.kind.to_string(),
        name: w.subject.clone(),
        api_group: Some("rbac.authorization.k8s.io".to_string()),
        namespace: None,
    }]
}

fn role_ref(w: &Wanted) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_string(),
        kind: "ClusterRole".to_string(),
        name: w.role.clone(),
    }
}

/// The selector of this destination's managed bindings.
fn selector(destination: &str) -> ListParams {
    ListParams::default().labels(&format!(
        "{MANAGED_BY}={MANAGER},{DESTINATION_LABEL}={destination}"
    ))
}

/// A client for the API server that authenticates with the connector's
/// token file, the same source the proxy reads (re-read when the file
/// changes, trimmed as client-go does).
pub async fn kube_client(
    api: &str,
    token: Arc<TokenFile>,
    ca_file: &Path,
) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::new(api.parse().context("--kube-api is not a URL")?);
    config.root_cert_file = Some(ca_file.to_path_buf());
    let pem =
        std::fs::read(ca_file).with_context(|| format!("cannot read {}", ca_file.display()))?;
    let ders: Vec<Vec<u8>> = crate::api::certs::pem_certs(&pem)
        .map_err(|e| anyhow::anyhow!("{} is {e}", ca_file.display()))?
        .iter()
        .map(|c| c.to_vec())
        .collect();
    config.root_cert = Some(ders);
    let builder = kube::client::ClientBuilder::try_from(config)
        .context("cannot build the Kubernetes client")?;
    Ok(builder.with_layer(&BearerLayer(token)).build())
}

/// Puts the token file's current token on every request of the kube client.
#[derive(Clone)]
struct BearerLayer(Arc<TokenFile>);

impl<S> tower::Layer<S> for BearerLayer {
    type Service = Bearer<S>;
    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            token: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Bearer<S> {
    inner: S,
    token: Arc<TokenFile>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for Bearer<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, tower::BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        let header = self
            .token
            .token()
            .map_err(|e| -> tower::BoxError { format!("{e:#}").into() })
            .and_then(|t| {
                axum::http::HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "the connector's token is not a valid header".into())
            });
        match header {
            Ok(mut v) => {
                v.set_sensitive(true);
                req.headers_mut()
                    .insert(axum::http::header::AUTHORIZATION, v);
                let fut = self.inner.call(req);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

/// Where a grant stands on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Applied,
    Pending(String),
}

/// What one reconciliation did, and where each grant stands.
#[derive(Debug, Default)]
pub struct Outcome {
    pub created: Vec<String>,
    pub repaired: Vec<String>,
    pub deleted: Vec<String>,
    pub states: BTreeMap<String, State>,
}

impl Outcome {
    pub fn pending(&self) -> bool {
        self.states.values().any(|s| matches!(s, State::Pending(_)))
    }
}

/// What happened to one binding.
enum Done {
    Unchanged,
    Created,
    Repaired(String),
}

/// Makes this destination's managed bindings exactly `wanted`: each binding
/// on its own, creations and repairs before deletions (so a renamed binding
/// never leaves a gap), failures kept per grant.
pub async fn reconcile(kube: &kube::Client, destination: &str, wanted: &[Wanted]) -> Outcome {
    let mut out = Outcome::default();
    let crbs: Api<ClusterRoleBinding> = Api::all(kube.clone());
    let rbs: Api<RoleBinding> = Api::all(kube.clone());
    let existing_crbs = crbs.list(&selector(destination)).await;
    let existing_rbs = rbs.list(&selector(destination)).await;

    let mut tasks = tokio::task::JoinSet::new();
    for w in wanted.iter().cloned() {
        let kube = kube.clone();
        let destination = destination.to_string();
        let current = match &w.namespace {
            None => match &existing_crbs {
                Ok(list) => Ok(list
                    .items
                    .iter()
                    .find(|b| b.metadata.name.as_deref() == Some(&w.name))
                    .map(|b| Current::Cluster(Box::new(b.clone())))),
                Err(e) => Err(format!(
                    "cannot list ClusterRoleBindings: {}",
                    kube_reason(e)
                )),
            },
            Some(ns) => match &existing_rbs {
                Ok(list) => Ok(list
                    .items
                    .iter()
                    .find(|b| {
                        b.metadata.name.as_deref() == Some(&w.name)
                            && b.metadata.namespace.as_deref() == Some(ns)
                    })
                    .map(|b| Current::Namespaced(Box::new(b.clone())))),
                Err(e) => Err(format!("cannot list RoleBindings: {}", kube_reason(e))),
            },
        };
        tasks.spawn(async move {
            let r = match current {
                Ok(current) => apply(&kube, &destination, &w, current).await,
                Err(e) => Err(e),
            };
            (w, r)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((w, r)) = joined else { continue };
        let state = match r {
            Ok(Done::Unchanged) => State::Applied,
            Ok(Done::Created) => {
                out.created.push(w.label());
                State::Applied
            }
            Ok(Done::Repaired(what)) => {
                tracing::warn!(binding = %w.label(), "repaired a managed binding: {what}");
                out.repaired.push(format!("{} ({what})", w.label()));
                State::Applied
            }
            Err(why) => {
                tracing::warn!(binding = %w.label(), "cannot apply a grant yet: {why}");
                State::Pending(why)
            }
        };
        for g in &w.grants {
            out.states.insert(g.clone(), state.clone());
        }
    }

    // Then what no grant asks for any more, each on its own.
    if let Ok(list) = &existing_crbs {
        for b in &list.items {
            let name = b.metadata.name.clone().unwrap_or_default();
            if wanted
                .iter()
                .any(|w| w.namespace.is_none() && w.name == name)
            {
                continue;
            }
            match crbs.delete(&name, &DeleteParams::default()).await {
                Ok(_) => out.deleted.push(format!("ClusterRoleBinding {name}")),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => tracing::warn!("cannot delete ClusterRoleBinding {name}: {e}"),
            }
        }
    }
    if let Ok(list) = &existing_rbs {
        for b in &list.items {
            let name = b.metadata.name.clone().unwrap_or_default();
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            if wanted
                .iter()
                .any(|w| w.namespace.as_deref() == Some(ns.as_str()) && w.name == name)
            {
                continue;
            }
            let api: Api<RoleBinding> = Api::namespaced(kube.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => out.deleted.push(format!("RoleBinding {ns}/{name}")),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => tracing::warn!("cannot delete RoleBinding {ns}/{name}: {e}"),
            }
        }
    }
    out
}

/// A managed binding as the API server has it.
enum Current {
    Cluster(Box<ClusterRoleBinding>),
    Namespaced(Box<RoleBinding>),
}

/// Creates the binding, or puts back what drifted.
async fn apply(
    kube: &kube::Client,
    destination: &str,
    w: &Wanted,
    current: Option<Current>,
) -> Result<Done, String> {
    let pp = PostParams::default();
    let want_subjects = subjects(w);
    let want_ref = role_ref(w);
    match (&w.namespace, current) {
        (None, found) => {
            let api: Api<ClusterRoleBinding> = Api::all(kube.clone());
            let found = match found {
                Some(Current::Cluster(b)) => Some(*b),
                _ => None,
            };
            let make = |rv| ClusterRoleBinding {
                metadata: meta(w, destination, rv),
                role_ref: want_ref.clone(),
                subjects: Some(want_subjects.clone()),
            };
            let Some(b) = found else {
                return create_or_adopt(
                    &api,
                    &w.name,
                    None,
                    make(None),
                    |rv| make(Some(rv)),
                    |b| &b.role_ref,
                )
                .await;
            };
            if b.role_ref != want_ref {
                recreate(&api, &w.name, make(None)).await?;
                return Ok(Done::Repaired(format!(
                    "roleRef was {} {}",
                    b.role_ref.kind, b.role_ref.name
                )));
            }
            if b.subjects.as_deref().unwrap_or_default() != want_subjects.as_slice() {
                api.replace(&w.name, &pp, &make(b.metadata.resource_version.clone()))
                    .await
                    .map_err(|e| kube_reason(&e))?;
                return Ok(Done::Repaired(subjects_drift(b.subjects.as_deref())));
            }
            Ok(Done::Unchanged)
        }
        (Some(ns), found) => {
            let api: Api<RoleBinding> = Api::namespaced(kube.clone(), ns);
            let found = match found {
                Some(Current::Namespaced(b)) => Some(*b),
                _ => None,
            };
            let make = |rv| RoleBinding {
                metadata: meta(w, destination, rv),
                role_ref: want_ref.clone(),
                subjects: Some(want_subjects.clone()),
            };
            let Some(b) = found else {
                return create_or_adopt(
                    &api,
                    &w.name,
                    Some(ns),
                    make(None),
                    |rv| make(Some(rv)),
                    |b| &b.role_ref,
                )
                .await;
            };
            if b.role_ref != want_ref {
                recreate(&api, &w.name, make(None)).await?;
                return Ok(Done::Repaired(format!(
                    "roleRef was {} {}",
                    b.role_ref.kind, b.role_ref.name
                )));
            }
            if b.subjects.as_deref().unwrap_or_default() != want_subjects.as_slice() {
                api.replace(&w.name, &pp, &make(b.metadata.resource_version.clone()))
                    .await
                    .map_err(|e| kube_reason(&e))?;
                return Ok(Done::Repaired(subjects_drift(b.subjects.as_deref())));
            }
            Ok(Done::Unchanged)
        }
    }
}

fn subjects_drift(found: Option<&[Subject]>) -> String {
    let names: Vec<String> = found
        .unwrap_or_default()
        .iter()
        .map(|s| format!("{} {}", s.kind, s.name))
        .collect();
    format!("subjects were [{}]", names.join(", "))
}

/// Creates `obj` (in namespace `ns`, for a RoleBinding); a binding of that
/// name without this destination's labels (someone removed them, or made
/// it again by hand) is ours by its name: it is replaced, or deleted and
/// made again when its roleRef is another (a roleRef cannot change).
async fn create_or_adopt<K>(
    api: &Api<K>,
    name: &str,
    ns: Option<&str>,
    obj: K,
    with_version: impl Fn(String) -> K,
    role_ref_of: impl Fn(&K) -> &RoleRef,
) -> Result<Done, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(Done::Created),
        Err(e) if is_status(&e, 409) => {
            let cur = api.get(name).await.map_err(|e| kube_reason(&e))?;
            let (had, want) = (role_ref_of(&cur), role_ref_of(&obj));
            if had != want {
                let was = format!("{} {}", had.kind, had.name);
                recreate(api, name, obj).await?;
                return Ok(Done::Repaired(format!(
                    "it was made without infra's labels, with roleRef {was}"
                )));
            }
            let rv = cur.meta().resource_version.clone().unwrap_or_default();
            api.replace(name, &PostParams::default(), &with_version(rv))
                .await
                .map_err(|e| kube_reason(&e))?;
            Ok(Done::Repaired("its labels were removed".into()))
        }
        Err(e) if ns.is_some_and(|ns| missing_namespace(&e, ns)) => Err(format!(
            "namespace {} does not exist",
            ns.unwrap_or_default()
        )),
        Err(e) => Err(kube_reason(&e)),
    }
}

/// Whether the API server refused because namespace `ns` does not exist
/// (its NamespaceLifecycle admission: 404 with details naming the
/// namespace), not because of another missing thing, such as the role.
fn missing_namespace(e: &kube::Error, ns: &str) -> bool {
    let kube::Error::Api(s) = e else {
        return false;
    };
    if s.code != 404 {
        return false;
    }
    match &s.details {
        Some(d) if !d.kind.is_empty() => d.kind == "namespaces" && d.name == ns,
        _ => s.message == format!("namespaces \"{ns}\" not found"),
    }
}

/// A roleRef cannot change: delete, then create.
async fn recreate<K>(api: &Api<K>, name: &str, obj: K) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(kube_reason(&e)),
    }
    api.create(&PostParams::default(), &obj)
        .await
        .map(|_| ())
        .map_err(|e| kube_reason(&e))
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The API server's own words for a failure.
fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({}, {})", s.message, s.reason, s.code),
        other => other.to_string(),
    }
}

/// Follows the grants on `destination` with long polls (the server answers
/// when they change, or every 30 s) and reconciles after each answer, and
/// every `resync` anyway, which repairs bindings changed by hand. While a
/// grant is pending it is tried again every `every`, without waiting for
/// the next answer. Every change in where grants stand goes to the server.
pub async fn sync_forever(
    client: Client,
    kube: Option<kube::Client>,
    destination: String,
    every: Duration,
    resync: Duration,
    published: tokio::sync::watch::Sender<Option<std::sync::Arc<Vec<Grant>>>>,
) {
    let base = format!(
        "/api/grants?destination={}&limit={}",
        enc(&destination),
        crate::api::MAX_PAGE_LIMIT
    );
    // The grants held are sent back as an ETag: a long poll that ends
    // without a change answers 304, and the server reads no list for it.
    let poll = |index: Option<String>, etag: Option<String>| {
        let client = client.clone();
        let path = match &index {
            Some(i) => format!("{base}&lastUpdateIndex={}", enc(i)),
            None => base.clone(),
        };
        async move {
            client
                .get_if_changed::<crate::api::ListResponse<Grant>>(
                    &path,
                    etag.as_deref(),
                    crate::api::LAST_UPDATE_INDEX_HEADER,
                )
                .await
        }
    };
    let mut reported: HashMap<String, State> = HashMap::new();
    let mut grants: Option<Vec<Grant>> = None;
    let mut pending = false;
    let mut next = Box::pin(poll(None, None));
    loop {
        tokio::select! {
            answer = &mut next => match answer {
                Ok(fresh) => {
                    match fresh.value {
                        Some(list) => {
                            published.send_replace(Some(std::sync::Arc::new(list.items.clone())));
                            grants = Some(list.items);
                        }
                        // Unchanged: still wakes the check of open streams.
                        None => published.send_modify(|_| {}),
                    }
                    let etag = fresh.etag.filter(|_| grants.is_some());
                    next = Box::pin(poll(fresh.header, etag));
                }
                Err(e) => {
                    tracing::warn!("cannot read the grants of {destination}: {e}");
                    // A busy server says when to come back; spread the
                    // returns so its connectors do not come back at once.
                    tokio::time::sleep(with_jitter(e.retry_after().unwrap_or(every))).await;
                    next = Box::pin(poll(None, None));
                    continue;
                }
            },
            _ = tokio::time::sleep(every), if pending => {}
            _ = tokio::time::sleep(resync) => {}
        }
        let (Some(g), Some(kube)) = (&grants, &kube) else {
            continue;
        };
        let w = wanted(&destination, g);
        let outcome = reconcile(kube, &destination, &w).await;
        if !outcome.created.is_empty() || !outcome.deleted.is_empty() {
            tracing::info!(created = ?outcome.created, deleted = ?outcome.deleted, "RBAC reconciled");
        }
        pending = outcome.pending();
        report(&client, &destination, &outcome.states, &mut reported).await;
    }
}

/// `d` plus up to half of it again, at random.
fn with_jitter(d: Duration) -> Duration {
    d + d.mul_f64(crate::web::random_fraction() / 2.0)
}

/// Tells the server where the grants stand, when that changed.
async fn report(
    client: &Client,
    destination: &str,
    states: &BTreeMap<String, State>,
    reported: &mut HashMap<String, State>,
) {
    let changed: Vec<GrantStateReport> = states
        .iter()
        .filter(|(id, s)| reported.get(*id) != Some(*s))
        .map(|(id, s)| GrantStateReport {
            grant_id: id.clone(),
            state: match s {
                State::Applied => "applied".into(),
                State::Pending(_) => "pending".into(),
            },
            message: match s {
                State::Applied => String::new(),
                State::Pending(why) => why.clone(),
            },
        })
        .collect();
    reported.retain(|id, _| states.contains_key(id));
    if changed.is_empty() {
        return;
    }
    let req = GrantStatesRequest {
        destination: destination.to_string(),
        states: changed,
    };
    match client
        .post::<_, serde_json::Value>("/api/grants/states", &req)
        .await
    {
        Ok(_) => {
            for s in &req.states {
                if let Some(state) = states.get(&s.grant_id) {
                    reported.insert(s.grant_id.clone(), state.clone());
                }
            }
        }
        Err(e) => tracing::warn!("cannot tell the server where the grants stand: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: &str, dest: &str, role: &str, user: Option<&str>, group: Option<&str>) -> Grant {
        Grant {
            id: id.into(),
            user: user.map(|_| "uid".to_string()),
            group: group.map(|_| "gid".to_string()),
            identity: None,
            subject_name: user.or(group).unwrap().to_string(),
            destination: dest.into(),
            role: role.into(),
            created: String::new(),
            created_by: String::new(),
            state: None,
            state_message: None,
            max_auth_age: None,
            record_sessions: false,
        }
    }

    #[test]
    fn grants_become_bindings() {
        let g = vec![
            grant("1", "prod", "view", Some("alice@example.com"), None),
            grant("2", "prod.web", "edit", None, Some("sre")),
            grant("3", "staging", "admin", Some("bob"), None),
            grant("4", "prod.web", "edit", None, Some("sre")),
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
        assert_eq!(rb.grants, ["2", "4"], "one binding for both grants");
        assert!(crb.name.starts_with("infra-") && crb.name.len() == 22);
        // The name the server shows in `infra access explain`.
        assert_eq!(
            crb.name,
            crate::api::rbac::binding_name("prod", None, "view", "User", "alice@example.com")
        );
        // Stable names: the same grants give the same bindings.
        assert_eq!(wanted("prod", &g), w);
        // Another destination on the same cluster gets other names.
        let other = wanted(
            "prod-b",
            &[grant(
                "5",
                "prod-b",
                "view",
                Some("alice@example.com"),
                None,
            )],
        );
        assert_ne!(other[0].name, crb.name);
    }
}
