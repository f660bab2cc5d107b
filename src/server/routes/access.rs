//! `/api/access/explain`: why a user may do what on a destination. Their
//! groups and where each membership came from (an admin, or a provider's
//! groups claim), every grant that applies there with the RBAC binding its
//! connector makes for it (named as the connector names it) and the state
//! the connector reported, and what the cluster sees: the user and groups
//! the connector impersonates and the roles per namespace. Admins may ask
//! about anyone; everyone else about themselves.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;

use crate::api::rbac::{binding_name, split_destination, subject_kind};
use crate::api::{
    AccessExplainQuery, AccessExplanation, EffectiveAccess, ExplainedGrant, GroupMembership,
    INFRA_DESTINATION, NamespaceRoles, RbacBinding, is_reserved_name,
};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::ApiQuery;
use crate::server::extract::Caller;
use crate::server::store::{self, Subject};

use super::destinations::CONNECTED_WITHIN_SECS;
use super::is_dns_label;

/// Checks `DEST` or `DEST.NAMESPACE` as a place on a cluster.
fn check_destination(destination: &str) -> ApiResult<()> {
    let (dest, ns) = split_destination(destination);
    if dest == INFRA_DESTINATION {
        return Err(ApiError::field(
            "destination",
            "infra is the server itself, not a cluster; its grants are listed by `infra grants \
             list --destination infra`",
        ));
    }
    if !is_dns_label(dest) || ns.is_some_and(|ns| !is_dns_label(ns)) {
        return Err(ApiError::field(
            "destination",
            "must be DEST or DEST.NAMESPACE, each lowercase letters, digits and dashes",
        ));
    }
    Ok(())
}

/// Whom to explain: the caller, or (admins only, or oneself) the user named.
async fn subject_of(
    state: &AppState,
    caller: &Caller,
    user: Option<&str>,
) -> ApiResult<(Subject, String)> {
    if caller.is_connector {
        return Err(ApiError::forbidden("connectors have no access to explain"));
    }
    let Some(asked) = user.filter(|u| !u.is_empty()) else {
        return Ok((caller.subject.clone(), caller.name.clone()));
    };
    let myself = matches!(caller.subject, Subject::User(_))
        && (asked == caller.name || asked == caller.subject.id());
    if myself {
        return Ok((caller.subject.clone(), caller.name.clone()));
    }
    if !caller.is_admin {
        return Err(ApiError::forbidden(
            "you may only explain your own access (`infra whoami --destination DEST`); ask an \
             infra admin about someone else's",
        ));
    }
    let found = match state.store.get_user(asked).await {
        Ok(u) => Some(u),
        Err(store::StoreError::NotFound(_)) => state.store.find_user_by_name(asked).await?,
        Err(e) => return Err(e.into()),
    };
    match found {
        Some(u) => Ok((Subject::User(u.id), u.name)),
        None => Err(ApiError::not_found(format!(
            "no user named {asked:?}; see `infra users list` (users who sign in through an \
             identity provider appear after their first login)"
        ))),
    }
}

#[utoipa::path(get, path = "/api/access/explain", tag = "access", params(AccessExplainQuery),
    responses((status = 200, body = AccessExplanation), (status = 403, body = crate::api::ErrorResponse),
              (status = 404, body = crate::api::ErrorResponse)))]
pub async fn explain(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AccessExplainQuery>,
) -> ApiResult<Json<AccessExplanation>> {
    let (subject, name) = subject_of(&state, &caller, q.user.as_deref()).await?;
    check_destination(&q.destination)?;
    let (dest, _) = split_destination(&q.destination);
    let registered = state.store.find_destination_by_name(dest).await?;
    let rows = state
        .store
        .grants_applying(&subject, &q.destination)
        .await?;
    if registered.is_none() && rows.is_empty() {
        return Err(ApiError::not_found(format!(
            "no destination named {dest:?} is registered, and {name} holds no grant on it; see \
             `infra destinations list` (a destination appears once its connector runs)"
        )));
    }
    let groups: Vec<GroupMembership> = match &subject {
        Subject::User(id) => state
            .store
            .memberships(id)
            .await?
            .into_iter()
            .map(|m| GroupMembership {
                withheld: is_reserved_name(&m.group_name),
                id: m.group_id,
                name: m.group_name,
                source: if m.provider_id.is_some() {
                    "provider"
                } else {
                    "admin"
                }
                .to_string(),
                provider_id: m.provider_id,
                provider_name: m.provider_name,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut roles: BTreeMap<Option<String>, BTreeSet<String>> = BTreeMap::new();
    let grants: Vec<ExplainedGrant> = rows
        .into_iter()
        .map(|g| {
            let (gdest, ns) = split_destination(&g.destination);
            let is_group = matches!(g.subject, Subject::Group(_));
            let kind = subject_kind(is_group);
            // The connector never binds Kubernetes' own names.
            let binding = (!is_reserved_name(&g.subject_name)).then(|| RbacBinding {
                kind: if ns.is_some() {
                    "RoleBinding"
                } else {
                    "ClusterRoleBinding"
                }
                .to_string(),
                name: binding_name(gdest, ns, &g.role, kind, &g.subject_name),
                namespace: ns.map(str::to_string),
                role: g.role.clone(),
                subject_kind: kind.to_string(),
                subject: g.subject_name.clone(),
            });
            if binding.is_some() {
                roles
                    .entry(ns.map(str::to_string))
                    .or_default()
                    .insert(g.role.clone());
            }
            let namespace = ns.map(str::to_string);
            let via_group = is_group.then(|| g.subject_name.clone());
            ExplainedGrant {
                grant: super::grants::to_api(g),
                via_group,
                namespace,
                binding,
            }
        })
        .collect();
    let effective = EffectiveAccess {
        user: name.clone(),
        groups: groups
            .iter()
            .filter(|g| !g.withheld)
            .map(|g| g.name.clone())
            .collect(),
        roles: roles
            .into_iter()
            .map(|(namespace, roles)| NamespaceRoles {
                namespace,
                roles: roles.into_iter().collect(),
            })
            .collect(),
    };
    let now = store::now();
    Ok(Json(AccessExplanation {
        kind: subject.kind().to_string(),
        id: subject.id().to_string(),
        name,
        destination: q.destination,
        registered: registered.is_some(),
        connected: registered
            .and_then(|d| d.last_seen_at)
            .is_some_and(|t| now - t <= CONNECTED_WITHIN_SECS),
        groups,
        grants,
        effective,
    }))
}

/// Whether a subject exists, and its name.
async fn exists(state: &AppState, subject: &Subject) -> ApiResult<bool> {
    let found = match subject {
        Subject::User(id) => state.store.get_user(id).await.map(|_| ()),
        Subject::Identity(id) => state.store.get_identity(id).await.map(|_| ()),
        Subject::Group(_) => return Ok(false),
    };
    match found {
        Ok(()) => Ok(true),
        Err(store::StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether one holder of an open stream on `dest` still has access now.
async fn verdict(
    state: &AppState,
    dest: &str,
    h: &crate::api::AccessHolder,
    now: i64,
) -> ApiResult<crate::api::AccessVerdict> {
    let no = |reason: String, token: bool| crate::api::AccessVerdict {
        allowed: false,
        reason: Some(reason),
        token_revoked: token,
    };
    // Whose token it is: the key it was minted with says, and must still be
    // there (revoked keys and `infra logout` delete it).
    let subject = match &h.sid {
        Some(sid) => match state.store.get_access_key(sid).await {
            Ok(k) if k.owner_id != h.sub => {
                return Ok(no("the token's key belongs to someone else".into(), true));
            }
            Ok(k) if k.expires_at <= now || k.inactivity_deadline <= now => {
                return Ok(no(format!("the access key {sid} expired"), true));
            }
            Ok(k) if k.owner_kind == "identity" => Subject::Identity(k.owner_id),
            Ok(k) => Subject::User(k.owner_id),
            Err(store::StoreError::NotFound(_)) => {
                return Ok(no(format!("the access key {sid} was revoked"), true));
            }
            Err(e) => return Err(e.into()),
        },
        // A token minted before tokens named their key: the subject alone.
        None if exists(state, &Subject::User(h.sub.clone())).await? => Subject::User(h.sub.clone()),
        None => Subject::Identity(h.sub.clone()),
    };
    if !exists(state, &subject).await? {
        return Ok(no("the user was removed".into(), true));
    }
    let access = state.store.access_of(&subject).await?;
    if let Some(lost) = h.groups.iter().find(|g| !access.groups.contains(g)) {
        return Ok(no(format!("no longer in the group {lost}"), true));
    }
    // A grant on the whole destination counts anywhere in it; one on a
    // namespace, in that namespace (and for cluster-wide requests).
    let on_dest: Vec<&str> = access
        .grants
        .iter()
        .map(|g| g.destination.as_str())
        .filter(|d| store::base_destination(d) == dest)
        .collect();
    let here = h.namespace.as_ref().map(|ns| format!("{dest}.{ns}"));
    let allowed = match &here {
        Some(here) => on_dest.iter().any(|d| *d == dest || d == here),
        None => !on_dest.is_empty(),
    };
    if allowed {
        return Ok(crate::api::AccessVerdict {
            allowed: true,
            reason: None,
            token_revoked: false,
        });
    }
    let anywhere = !on_dest.is_empty();
    Ok(match &h.namespace {
        Some(ns) if anywhere => no(format!("no grant on {dest}.{ns} any more"), false),
        _ => no(format!("no grant on {dest} any more"), true),
    })
}

#[utoipa::path(post, path = "/api/access/check", tag = "access", request_body = crate::api::AccessCheckRequest,
    responses((status = 200, body = crate::api::AccessCheckResponse), (status = 403, body = crate::api::ErrorResponse)))]
/// A connector's question after its grants changed: do the people behind
/// its open streams still have access? Only the destination's own
/// connector may ask.
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    crate::server::extract::RemoteAddr(addr): crate::server::extract::RemoteAddr,
    crate::server::extract::ApiJson(req): crate::server::extract::ApiJson<
        crate::api::AccessCheckRequest,
    >,
) -> ApiResult<Json<crate::api::AccessCheckResponse>> {
    if !caller.is_connector {
        return Err(ApiError::forbidden(
            "only a destination's connector checks the access behind its open streams",
        ));
    }
    super::destinations::check_connector_destination(
        &state,
        &caller,
        &req.destination,
        &addr,
        "access.check",
    )
    .await?;
    if req.holders.len() > crate::api::MAX_ACCESS_CHECK_HOLDERS {
        return Err(ApiError::field(
            "holders",
            format!("at most {} at once", crate::api::MAX_ACCESS_CHECK_HOLDERS),
        ));
    }
    let now = store::now();
    let mut results = Vec::with_capacity(req.holders.len());
    for h in &req.holders {
        results.push(verdict(&state, &req.destination, h, now).await?);
    }
    Ok(Json(crate::api::AccessCheckResponse { results }))
}
