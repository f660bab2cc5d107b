//! `/api/providers`: identity providers. Listing is public (the CLI needs
//! it before anyone is logged in); changes are for admins, and a provider
//! is stored only once its discovery document checks out.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;

use crate::api::{
    CreateProviderRequest, ListResponse, NameQuery, PROVIDER_KINDS, Provider, UpdateProviderRequest,
};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, Caller, RemoteAddr, list as to_list, page};
use crate::server::oidc;
use crate::server::store::{NewProvider, ProviderRow};

use super::users::audit;
use super::{is_dns_label, ts};

fn to_api(p: ProviderRow) -> Provider {
    Provider {
        id: p.id,
        name: p.name,
        kind: p.kind,
        url: p.url,
        client_id: p.client_id,
        auth_url: p.auth_url,
        scopes: p.scopes.split_whitespace().map(String::from).collect(),
        created: ts(p.created_at),
        updated: ts(p.updated_at),
    }
}

/// Validates the fields and the provider's discovery document, and
/// encrypts the client secret: everything the store needs.
pub async fn prepare(
    state: &AppState,
    name: &str,
    kind: &str,
    url: &str,
    client_id: &str,
    client_secret: &str,
    ca_pem: &str,
) -> ApiResult<NewProvider> {
    if !is_dns_label(name) {
        return Err(ApiError::field(
            "name",
            "must be lowercase letters, digits and dashes (at most 63)",
        ));
    }
    if !PROVIDER_KINDS.contains(&kind) {
        return Err(ApiError::field(
            "kind",
            format!("must be one of {}", PROVIDER_KINDS.join(", ")),
        ));
    }
    if client_id.trim().is_empty() {
        return Err(ApiError::field("clientID", "must not be empty"));
    }
    if client_secret.is_empty() {
        return Err(ApiError::field("clientSecret", "must not be empty"));
    }
    if !ca_pem.trim().is_empty() && crate::server::tls::first_cert_der(ca_pem).is_none() {
        return Err(ApiError::field(
            "caCert",
            "must be a PEM certificate bundle",
        ));
    }
    let url = oidc::normalize_url(url).map_err(|e| ApiError::field("url", e))?;
    let http = oidc::provider_http(ca_pem).map_err(|e| ApiError::field("caCert", e.to_string()))?;
    let d = oidc::discover(&http, &url)
        .await
        .map_err(|e| ApiError::field("url", e))?;
    Ok(NewProvider {
        name: name.to_string(),
        kind: kind.to_string(),
        url,
        client_id: client_id.trim().to_string(),
        client_secret_enc: state.root_key.encrypt(client_secret),
        issuer: d.issuer,
        auth_url: d.auth_url,
        token_url: d.token_url,
        userinfo_url: d.userinfo_url,
        jwks_url: d.jwks_url,
        scopes: d.scopes.join(" "),
        ca_pem: ca_pem.to_string(),
    })
}

#[utoipa::path(get, path = "/api/providers", tag = "providers", params(NameQuery),
    responses((status = 200, body = ListResponse<Provider>)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<NameQuery>,
) -> ApiResult<Json<ListResponse<Provider>>> {
    let p = page(q.page, q.limit)?;
    let rows = state.store.list_providers(q.name.as_deref(), p).await?;
    Ok(Json(to_list(p, rows, to_api)))
}

#[utoipa::path(get, path = "/api/providers/{id}", tag = "providers",
    responses((status = 200, body = Provider)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Provider>> {
    Ok(Json(to_api(state.store.get_provider(&id).await?)))
}

#[utoipa::path(post, path = "/api/providers", tag = "providers",
    request_body = CreateProviderRequest, responses((status = 201, body = Provider)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<CreateProviderRequest>,
) -> ApiResult<(StatusCode, Json<Provider>)> {
    caller.require_admin()?;
    if state
        .store
        .find_provider_by_name(&req.name)
        .await?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a provider named {:?} already exists", req.name),
        ));
    }
    let new = prepare(
        &state,
        &req.name,
        &req.kind,
        &req.url,
        &req.client_id,
        &req.client_secret,
        req.ca_cert.as_deref().unwrap_or(""),
    )
    .await?;
    let p = state.store.create_provider(&new).await?;
    audit(&state, &caller, "provider.create", &p.name, &addr).await?;
    Ok((StatusCode::CREATED, Json(to_api(p))))
}

#[utoipa::path(patch, path = "/api/providers/{id}", tag = "providers",
    request_body = UpdateProviderRequest, responses((status = 200, body = Provider)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateProviderRequest>,
) -> ApiResult<Json<Provider>> {
    caller.require_admin()?;
    let cur = state.store.get_provider(&id).await?;
    let secret = match req.client_secret {
        Some(s) => s,
        None => state
            .root_key
            .decrypt(&cur.client_secret_enc)?
            .expose_secret()
            .to_string(),
    };
    let new = prepare(
        &state,
        &cur.name,
        &cur.kind,
        req.url.as_deref().unwrap_or(&cur.url),
        req.client_id.as_deref().unwrap_or(&cur.client_id),
        &secret,
        req.ca_cert.as_deref().unwrap_or(&cur.ca_pem),
    )
    .await?;
    let p = state.store.update_provider(&id, &new).await?;
    audit(&state, &caller, "provider.update", &p.name, &addr).await?;
    Ok(Json(to_api(p)))
}

#[utoipa::path(delete, path = "/api/providers/{id}", tag = "providers", responses((status = 204)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    RemoteAddr(addr): RemoteAddr,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let p = state.store.delete_provider(&id).await?;
    audit(&state, &caller, "provider.remove", &p.name, &addr).await?;
    Ok(StatusCode::NO_CONTENT)
}
