//! `/api/destinations`: clusters, registered by their connectors (which
//! heartbeat by registering again) or created by an admin. A user sees the
//! destinations they hold a grant on.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::api::{
    CreateDestinationRequest, Destination, INFRA_DESTINATION, ListResponse, NameQuery,
};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, ApiQuery, Caller, RemoteAddr, list as to_list, page};
use crate::server::store::{self, AuditEntry, DestinationRow, Registration};

use super::users::audit;
use super::{is_dns_label, ts};

/// A connector silent for longer than this is shown as disconnected.
pub const CONNECTED_WITHIN_SECS: i64 = 120;

fn to_api(d: DestinationRow) -> Destination {
    let now = store::now();
    Destination {
        connected: d
            .last_seen_at
            .is_some_and(|t| now - t <= CONNECTED_WITHIN_SECS),
        id: d.id,
        name: d.name,
        url: d.url,
        ca: d.ca,
        last_seen: d.last_seen_at.map(ts),
        connector_version: Some(d.connector_version).filter(|v| !v.is_empty()),
        created: ts(d.created_at),
        updated: ts(d.updated_at),
    }
}

/// The destination names a non-admin caller may see, or `None` for all.
async fn visible(state: &AppState, caller: &Caller) -> ApiResult<Option<Vec<String>>> {
    if caller.is_admin {
        return Ok(None);
    }
    if caller.is_connector {
        return Ok(Some(caller.key_destination.iter().cloned().collect()));
    }
    let mut names: Vec<String> = state
        .store
        .grants_of(&caller.subject)
        .await?
        .into_iter()
        .map(|g| {
            g.destination
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|d| d != INFRA_DESTINATION)
        .collect();
    names.sort();
    names.dedup();
    Ok(Some(names))
}

fn check(req: &CreateDestinationRequest) -> ApiResult<()> {
    if !is_dns_label(&req.name) || req.name == INFRA_DESTINATION {
        return Err(ApiError::field(
            "name",
            "must be lowercase letters, digits and dashes (at most 63), and not \"infra\"",
        ));
    }
    if !req.url.is_empty() {
        let u = url::Url::parse(&req.url)
            .map_err(|e| ApiError::field("url", format!("not a URL: {e}")))?;
        if u.scheme() != "https" {
            return Err(ApiError::field("url", "must be an https URL"));
        }
    }
    if !req.ca.is_empty() && crate::server::tls::first_cert_der(&req.ca).is_none() {
        return Err(ApiError::field("ca", "must be a PEM certificate"));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/destinations", tag = "destinations", params(NameQuery),
    responses((status = 200, body = ListResponse<Destination>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<NameQuery>,
) -> ApiResult<Json<ListResponse<Destination>>> {
    let p = page(q.page, q.limit)?;
    let only = visible(&state, &caller).await?;
    let rows = state
        .store
        .list_destinations(q.name.as_deref(), only.as_deref(), p)
        .await?;
    Ok(Json(to_list(p, rows, to_api)?))
}

#[utoipa::path(get, path = "/api/destinations/{id}", tag = "destinations",
    responses((status = 200, body = Destination)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Destination>> {
    let d = state.store.get_destination(&id).await?;
    if let Some(only) = visible(&state, &caller).await?
        && !only.contains(&d.name)
    {
        return Err(ApiError::not_found("destination not found"));
    }
    Ok(Json(to_api(d)))
}

#[utoipa::path(post, path = "/api/destinations", tag = "destinations",
    request_body = CreateDestinationRequest, responses((status = 201, body = Destination)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<CreateDestinationRequest>,
) -> ApiResult<(StatusCode, Json<Destination>)> {
    check(&req)?;
    let d = if caller.is_connector {
        // A connector (re)registers its destination; this is its heartbeat.
        check_connector_destination(&state, &caller, &req.name, &addr, "destination.register")
            .await?;
        let (d, change) = state
            .store
            .register_destination(&req.name, &req.url, &req.ca, &connector_version(&headers))
            .await?;
        audit_registration(&state, &caller, &d, change, &addr).await?;
        d
    } else {
        caller.require_admin()?;
        let d = state
            .store
            .create_destination(&req.name, &req.url, &req.ca)
            .await?;
        audit_registration(&state, &caller, &d, Registration::Created, &addr).await?;
        d
    };
    Ok((StatusCode::CREATED, Json(to_api(d))))
}

#[utoipa::path(put, path = "/api/destinations/{id}", tag = "destinations",
    request_body = CreateDestinationRequest, responses((status = 200, body = Destination)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateDestinationRequest>,
) -> ApiResult<Json<Destination>> {
    if !caller.is_connector {
        caller.require_admin()?;
    }
    check(&req)?;
    let current = state.store.get_destination(&id).await?;
    if caller.is_connector {
        check_connector_destination(
            &state,
            &caller,
            &current.name,
            &addr,
            "destination.register",
        )
        .await?;
    }
    if current.name != req.name {
        return Err(ApiError::field("name", "a destination cannot be renamed"));
    }
    let d = if caller.is_connector {
        let (d, change) = state
            .store
            .register_destination(&req.name, &req.url, &req.ca, &connector_version(&headers))
            .await?;
        audit_registration(&state, &caller, &d, change, &addr).await?;
        d
    } else {
        let d = state
            .store
            .update_destination(&id, &req.url, &req.ca)
            .await?;
        let change = if d.url != current.url || d.ca != current.ca {
            Registration::Changed {
                url: (d.url != current.url).then(|| current.url.clone()),
                ca: d.ca != current.ca,
            }
        } else {
            Registration::Unchanged
        };
        audit_registration(&state, &caller, &d, change, &addr).await?;
        d
    };
    Ok(Json(to_api(d)))
}

/// The version the connector states in every call (`Infra-Version`).
fn connector_version(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(crate::api::VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && semver::Version::parse(v).is_ok())
        .unwrap_or_default()
        .to_string()
}

/// A connector key serves the one destination it was made for: any other
/// name is refused (403) and the attempt audited.
pub async fn check_connector_destination(
    state: &AppState,
    caller: &Caller,
    name: &str,
    addr: &str,
    action: &str,
) -> ApiResult<()> {
    let why = match caller.key_destination.as_deref() {
        Some(bound) if bound == name => return Ok(()),
        Some(bound) => format!(
            "this connector key (id {}) is bound to destination {bound} and cannot be used for \
             {name}; start the connector with --name {bound}, or make a key for {name} with \
             `infra keys add --connector --destination {name}`",
            caller.key_id
        ),
        None => format!(
            "this connector key (id {}) is bound to no destination (it was made by an older \
             infra); make one for {name} with `infra keys add --connector --destination {name}`",
            caller.key_id
        ),
    };
    state
        .store
        .audit(&AuditEntry {
            actor: &caller.name,
            action,
            target: name,
            result: "forbidden",
            remote_addr: addr,
            detail: &why,
        })
        .await?;
    Err(ApiError::forbidden(why))
}

/// Registrations and changes of URL or CA are audited; heartbeats that
/// change nothing are not.
async fn audit_registration(
    state: &AppState,
    caller: &Caller,
    d: &DestinationRow,
    change: Registration,
    addr: &str,
) -> ApiResult<()> {
    let (action, detail) = match change {
        Registration::Unchanged => return Ok(()),
        Registration::Created => (
            "destination.register",
            format!(
                "url {}, CA {}",
                d.url,
                crate::server::tls::fingerprint_pem(&d.ca)
            ),
        ),
        Registration::Changed { url, ca } => {
            let mut parts = Vec::new();
            if let Some(old) = url {
                parts.push(format!("url {old} -> {}", d.url));
            }
            if ca {
                parts.push(format!(
                    "CA changed, now {}",
                    crate::server::tls::fingerprint_pem(&d.ca)
                ));
            }
            ("destination.update", parts.join("; "))
        }
    };
    state
        .store
        .audit(&AuditEntry {
            actor: &caller.name,
            action,
            target: &d.name,
            result: "success",
            remote_addr: addr,
            detail: &format!("{detail} (key {})", caller.key_id),
        })
        .await?;
    Ok(())
}

#[utoipa::path(delete, path = "/api/destinations/{id}", tag = "destinations",
    responses((status = 204)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let d = state.store.delete_destination(&id).await?;
    audit(&state, &caller, "destination.remove", &d.name, &addr).await?;
    Ok(StatusCode::NO_CONTENT)
}
