//! `/api/grants`: who may do what where. Admins manage grants; everyone
//! may read their own (including those held through groups).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::api::{
    ADMIN_ROLE, CONNECTOR_ROLE, CreateGrantRequest, Grant, GrantQuery, INFRA_DESTINATION,
    ListResponse,
};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, ApiQuery, Caller, RemoteAddr, list as to_list, page};
use crate::server::store::{GrantFilter, GrantRow, StoreError, Subject};

use super::users::audit;
use super::{is_dns_label, ts};

pub fn to_api(g: GrantRow) -> Grant {
    let (mut user, mut group, mut identity) = (None, None, None);
    match g.subject {
        Subject::User(id) => user = Some(id),
        Subject::Group(id) => group = Some(id),
        Subject::Identity(id) => identity = Some(id),
    }
    Grant {
        id: g.id,
        user,
        group,
        identity,
        subject_name: g.subject_name,
        destination: g.destination,
        role: g.role,
        created: ts(g.created_at),
        created_by: g.created_by,
        state: Some(g.state).filter(|s| !s.is_empty()),
        state_message: Some(g.state_message).filter(|s| !s.is_empty()),
        max_auth_age: g
            .max_auth_age_secs
            .map(|s| crate::api::format_duration_secs(s.max(0) as u64)),
        record_sessions: g.record_sessions.0,
    }
}

/// `maxAuthAge`: a positive duration of at most a day, in whole seconds.
pub fn check_max_auth_age(value: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(v) = value else { return Ok(None) };
    let d = crate::api::parse_duration(v).map_err(|e| ApiError::field("maxAuthAge", e))?;
    if d.as_secs() == 0 {
        return Err(ApiError::field(
            "maxAuthAge",
            "must be at least one second, e.g. 15m",
        ));
    }
    if d > crate::api::MAX_AUTH_AGE_LIMIT {
        return Err(ApiError::field(
            "maxAuthAge",
            "must be at most 24h: a sign-in older than a day is no recent one",
        ));
    }
    Ok(Some(d.as_secs() as i64))
}

#[utoipa::path(post, path = "/api/grants/states", tag = "grants",
    request_body = crate::api::GrantStatesRequest, responses((status = 204), (status = 403, body = crate::api::ErrorResponse)))]
pub async fn report_states(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<crate::api::GrantStatesRequest>,
) -> ApiResult<StatusCode> {
    if !caller.is_connector {
        return Err(ApiError::forbidden(
            "only a destination's connector says where its grants stand",
        ));
    }
    super::destinations::check_connector_destination(
        &state,
        &caller,
        &req.destination,
        &addr,
        "grants.state",
    )
    .await?;
    if req.states.len() > crate::api::MAX_PAGE_LIMIT as usize * 10 {
        return Err(ApiError::field("states", "too many states in one report"));
    }
    for s in &req.states {
        if !["applied", "pending"].contains(&s.state.as_str()) {
            return Err(ApiError::field(
                "states.state",
                "must be applied or pending",
            ));
        }
        let message: String = s.message.chars().take(500).collect();
        state
            .store
            .set_grant_state(&req.destination, &s.grant_id, &s.state, &message)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Checks `DEST` or `DEST.NAMESPACE` and the role for it.
pub fn check_destination_and_role(destination: &str, role: &str) -> ApiResult<()> {
    let (dest, ns) = match destination.split_once('.') {
        Some((d, n)) => (d, Some(n)),
        None => (destination, None),
    };
    if !is_dns_label(dest) {
        return Err(ApiError::field(
            "destination",
            "must be DEST or DEST.NAMESPACE, each lowercase letters, digits and dashes",
        ));
    }
    if let Some(ns) = ns
        && (!is_dns_label(ns) || dest == INFRA_DESTINATION)
    {
        return Err(ApiError::field(
            "destination",
            "the namespace must be lowercase letters, digits and dashes (and infra has none)",
        ));
    }
    let role_ok = !role.is_empty()
        && role.len() <= 253
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-:.".contains(&b));
    if !role_ok {
        return Err(ApiError::field(
            "role",
            "must be a Kubernetes role name such as view, edit, admin or cluster-admin",
        ));
    }
    if dest == INFRA_DESTINATION && role == CONNECTOR_ROLE {
        // Only connector keys, each bound to its one destination, act for
        // connectors; a grant would let a user's key register any.
        return Err(ApiError::field(
            "role",
            "connectors use connector keys, each bound to one destination: `infra keys add \
             --connector --destination NAME`",
        ));
    }
    if dest == INFRA_DESTINATION && ![ADMIN_ROLE, "view"].contains(&role) {
        return Err(ApiError::field(
            "role",
            "the infra destination takes the roles admin or view",
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/grants", tag = "grants", params(GrantQuery),
    responses((status = 200, body = ListResponse<Grant>), (status = 304, description = "a connector's long poll: nothing changed since the ETag it sent in If-None-Match"),
              (status = 403, body = crate::api::ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    request: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<GrantQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    Ok(match list_with(&state, caller, &addr, &request, q).await? {
        Listed::NotModified(headers) => (StatusCode::NOT_MODIFIED, headers).into_response(),
        Listed::List(headers, list) => (headers, Json(list)).into_response(),
    })
}

/// The grants the caller may read, as the console lists them.
pub async fn read(
    state: &AppState,
    caller: Caller,
    addr: &str,
    q: GrantQuery,
) -> ApiResult<ListResponse<Grant>> {
    match list_with(state, caller, addr, &axum::http::HeaderMap::new(), q).await? {
        Listed::List(_, list) => Ok(list),
        Listed::NotModified(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no list to show",
        )),
    }
}

/// A grants list, or (for a connector holding the current one) none.
enum Listed {
    NotModified(axum::http::HeaderMap),
    List(axum::http::HeaderMap, ListResponse<Grant>),
}

async fn list_with(
    state: &AppState,
    caller: Caller,
    addr: &str,
    request: &axum::http::HeaderMap,
    q: GrantQuery,
) -> ApiResult<Listed> {
    let p = page(q.page, q.limit)?;
    // Who may read what is settled first: a long poll waits only for
    // grants the caller may read (a connector key for another destination
    // is refused at once, not after learning when that one changed).
    let mut filter = GrantFilter {
        user: q.user,
        group: q.group,
        identity: q.identity,
        inherited: q.show_inherited.unwrap_or(false),
        destination: q.destination,
        include_namespaces: true,
        role: q.role,
    };
    // A connector reads the grants on the destination it serves.
    let connector_read = caller.is_connector
        && filter.destination.is_some()
        && filter.user.is_none()
        && filter.group.is_none()
        && filter.identity.is_none();
    if connector_read {
        let asked = filter.destination.as_deref().unwrap_or_default();
        let dest = asked.split('.').next().unwrap_or_default();
        super::destinations::check_connector_destination(state, &caller, dest, addr, "grants.read")
            .await?;
    }
    if !caller.is_admin && !connector_read {
        let forbidden = || ApiError::forbidden("you may only read your own grants");
        if filter.group.is_some() {
            return Err(forbidden());
        }
        match &caller.subject {
            Subject::User(me) => {
                if filter.identity.is_some() || filter.user.as_deref().is_some_and(|u| u != me) {
                    return Err(forbidden());
                }
                if filter.user.is_none() {
                    filter.user = Some(me.clone());
                    filter.inherited = true;
                }
            }
            Subject::Identity(me) => {
                if filter.user.is_some() || filter.identity.as_deref().is_some_and(|i| i != me) {
                    return Err(forbidden());
                }
                filter.identity = Some(me.clone());
            }
            Subject::Group(_) => return Err(forbidden()),
        }
    }
    let mut seen_version = None;
    // A long poll: wait (up to 30 s) for what the caller follows to change
    // after the index it saw: a destination's grants (its connector), or
    // any grant. The index is in the store, and a change wakes exactly the
    // polls it concerns, on every replica (see `store::changes`); a waiting
    // poll costs no query.
    let mut headers = axum::http::HeaderMap::new();
    if q.last_update_index.is_some() || caller.is_connector {
        let dest = filter
            .destination
            .as_deref()
            .map(|d| crate::server::store::base_destination(d).to_string());
        // A connector's long poll tells that it is alive, as its heartbeat does.
        if caller.is_connector
            && let Some(d) = &dest
            && caller.key_destination.as_deref() == Some(d.as_str())
        {
            state.store.mark_seen(d);
        }
        // Subscribed before reading, so no change slips between the two.
        let mut changed = state.store.feed().subscribe(dest.as_deref().unwrap_or(""));
        let read = || async {
            match &dest {
                Some(d) => state.store.destination_version(d).await,
                None => state.store.grants_version().await,
            }
        };
        let mut version = read().await?;
        if let Some(seen) = q.last_update_index
            && version <= seen
        {
            let Ok(_place) = state.long_polls.clone().try_acquire_owned() else {
                let mut e = ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "this server holds as many long polls as it may (--max-long-polls); try \
                     again shortly",
                );
                e.retry_after = Some(5);
                return Err(e);
            };
            state.metrics.long_polls.inc();
            let _counted = scopeguard(|| {
                state.metrics.long_polls.dec();
            });
            let deadline = tokio::time::sleep(long_poll_wait());
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    woke = changed.changed() => if woke.is_err() { break },
                    _ = &mut deadline => break,
                }
                version = read().await?;
                if version > seen {
                    break;
                }
            }
        }
        if let Ok(v) = axum::http::HeaderValue::from_str(&version.to_string()) {
            headers.insert(crate::api::LAST_UPDATE_INDEX_HEADER, v);
        }
        seen_version = Some(version);
    }
    // A connector that has this version of its grants already (it sends
    // the ETag back in If-None-Match) gets 304 and no list: a long poll
    // that ends without a change reads nothing more. Connectors that do not
    // send it get the list, as ever.
    if connector_read && let Some(v) = seen_version {
        let etag = format!("W/\"{v}-{}-{}\"", p.page, p.limit);
        if let Ok(value) = axum::http::HeaderValue::from_str(&etag) {
            headers.insert(axum::http::header::ETAG, value);
        }
        let matches = request
            .get_all(axum::http::header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == etag);
        if matches {
            return Ok(Listed::NotModified(headers));
        }
    }
    let rows = state.store.list_grants(&filter, p).await?;
    Ok(Listed::List(headers, to_list(p, rows, to_api)?))
}

#[utoipa::path(get, path = "/api/grants/{id}", tag = "grants", responses((status = 200, body = Grant)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Grant>> {
    let g = state.store.get_grant(&id).await?;
    if !caller.is_admin && g.subject != caller.subject {
        return Err(ApiError::forbidden("you may only read your own grants"));
    }
    Ok(Json(to_api(g)))
}

#[utoipa::path(post, path = "/api/grants", tag = "grants", request_body = CreateGrantRequest,
    responses((status = 201, body = Grant), (status = 409, body = crate::api::ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<CreateGrantRequest>,
) -> ApiResult<(StatusCode, axum::http::HeaderMap, Json<Grant>)> {
    caller.require_admin()?;
    let subject = match (req.user, req.group, req.identity) {
        (Some(u), None, None) => Subject::User(u),
        (None, Some(g), None) => Subject::Group(g),
        (None, None, Some(i)) => Subject::Identity(i),
        _ => {
            return Err(ApiError::field(
                "user",
                "give exactly one of user, group or identity",
            ));
        }
    };
    let exists = match &subject {
        Subject::User(id) => state.store.get_user(id).await.map(|_| ()),
        Subject::Group(id) => state.store.get_group(id).await.map(|_| ()),
        Subject::Identity(id) => state.store.get_identity(id).await.map(|_| ()),
    };
    match exists {
        Ok(()) => {}
        Err(StoreError::NotFound(what)) => {
            return Err(ApiError::field(
                subject.kind(),
                format!("no {what} with id {:?}", subject.id()),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    check_destination_and_role(&req.destination, &req.role)?;
    let max_auth_age = check_max_auth_age(req.max_auth_age.as_deref())?;
    if max_auth_age.is_some() && req.destination == INFRA_DESTINATION {
        return Err(ApiError::field(
            "maxAuthAge",
            "applies to cluster tokens, and the infra destination issues none",
        ));
    }
    if max_auth_age.is_some() && matches!(subject, Subject::Identity(_)) {
        return Err(ApiError::field(
            "maxAuthAge",
            "machine identities never sign in at an identity provider; give it to user or \
             group grants",
        ));
    }
    let record_sessions = req.record_sessions.unwrap_or(false);
    if record_sessions && req.destination == INFRA_DESTINATION {
        return Err(ApiError::field(
            "recordSessions",
            "applies to exec and attach on clusters, and the infra destination is none",
        ));
    }
    let g = state
        .store
        .create_grant(
            &subject,
            &req.destination,
            &req.role,
            max_auth_age,
            record_sessions,
            &caller.name,
        )
        .await?;
    let mut target = format!(
        "{} {} {} on {}",
        g.subject.kind(),
        g.subject_name,
        g.role,
        g.destination
    );
    if let Some(secs) = g.max_auth_age_secs {
        target.push_str(&format!(
            " (sign-in within {})",
            crate::api::format_duration_secs(secs.max(0) as u64)
        ));
    }
    if g.record_sessions.0 {
        target.push_str(" (sessions recorded)");
    }
    audit(&state, &caller, "grant.create", &target, &addr).await?;
    let mut headers = axum::http::HeaderMap::new();
    if let Some(w) = unknown_role_warning(&state, &g).await? {
        // As Kubernetes does: `Warning: 299 - "text"`, shown by clients.
        if let Ok(v) = axum::http::HeaderValue::from_str(&crate::api::warning_value(&w)) {
            headers.insert(axum::http::header::WARNING, v);
        }
    }
    Ok((StatusCode::CREATED, headers, Json(to_api(g))))
}

/// Kubernetes' user-facing ClusterRoles, which every cluster has.
const USER_FACING_ROLES: [&str; 4] = ["view", "edit", "admin", "cluster-admin"];

/// A role that is neither one of Kubernetes' user-facing roles nor one the
/// destination's connector has bound before is likely a typo (`eidt`): the
/// binding would be made and give nothing.
async fn unknown_role_warning(state: &AppState, g: &GrantRow) -> ApiResult<Option<String>> {
    let dest = crate::server::store::base_destination(&g.destination);
    if dest == INFRA_DESTINATION || USER_FACING_ROLES.contains(&g.role.as_str()) {
        return Ok(None);
    }
    let known = state
        .store
        .list_grants(
            &GrantFilter {
                destination: Some(dest.to_string()),
                include_namespaces: true,
                role: Some(g.role.clone()),
                ..Default::default()
            },
            crate::server::store::PageRequest::all(),
        )
        .await?
        .items
        .iter()
        .any(|o| o.id != g.id && o.state == "applied");
    if known {
        return Ok(None);
    }
    let close = USER_FACING_ROLES
        .iter()
        .find(|r| strsim::levenshtein(r, &g.role) <= 2)
        .map(|r| format!(" (did you mean {r}?)"))
        .unwrap_or_default();
    Ok(Some(format!(
        "{} is not one of Kubernetes' user-facing roles (view, edit, admin, cluster-admin) nor \
         a role {dest}'s connector has bound{close}; unless a ClusterRole {} exists there, this \
         grant gives nothing (`infra grants list` shows its state once the connector applied it)",
        g.role, g.role
    )))
}

#[utoipa::path(delete, path = "/api/grants/{id}", tag = "grants", responses((status = 204)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let g = state.store.get_grant(&id).await?;
    if g.destination == INFRA_DESTINATION && g.role == ADMIN_ROLE && g.subject == caller.subject {
        return Err(ApiError::bad_request(
            "you cannot remove your own admin grant; ask another admin",
        ));
    }
    let g = state.store.delete_grant(&id).await?;
    let target = format!(
        "{} {} {} on {}",
        g.subject.kind(),
        g.subject_name,
        g.role,
        g.destination
    );
    audit(&state, &caller, "grant.remove", &target, &addr).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How long one long poll waits without a change: 24–30 s, at random, so
/// connectors that all came back together (after a restart) spread out
/// within a few rounds instead of renewing in the same second forever.
fn long_poll_wait() -> std::time::Duration {
    use std::time::Duration;
    Duration::from_secs(30) - Duration::from_secs(6).mul_f64(crate::web::random_fraction())
}

/// Runs `f` when dropped (also when the request is cancelled).
fn scopeguard<F: FnMut()>(f: F) -> impl Drop {
    struct Guard<F: FnMut()>(F);
    impl<F: FnMut()> Drop for Guard<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    Guard(f)
}
