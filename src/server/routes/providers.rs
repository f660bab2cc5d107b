//! `/api/providers`: identity providers. Listing is public (the CLI needs
//! it before anyone is logged in); changes are for admins, and a provider
//! is stored only once its discovery document checks out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;

use crate::api::{
    CreateProviderRequest, ListResponse, NameQuery, PROVIDER_KINDS, Provider, UpdateProviderRequest,
};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, ApiQuery, Caller, RemoteAddr, list as to_list, page};
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
        refresh_tokens: p.scopes.split_whitespace().any(|s| s == "offline_access"),
        scopes: p.scopes.split_whitespace().map(String::from).collect(),
        username_claim: p.username_claim,
        created: ts(p.created_at),
        updated: ts(p.updated_at),
    }
}

/// What an admin says of a provider (from the API, the config file or flags).
pub struct Settings<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub url: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub ca_pem: &'a str,
    pub username_claim: &'a str,
}

/// Validates the fields and the provider's discovery document, and
/// encrypts the client secret: everything the store needs.
pub async fn prepare(state: &AppState, p: Settings<'_>) -> ApiResult<NewProvider> {
    let Settings {
        name,
        kind,
        url,
        client_id,
        client_secret,
        ca_pem,
        username_claim,
    } = p;
    let username_claim = check_username_claim(username_claim)?;
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
        username_claim,
    })
}

/// The claim that names a provider's users: empty (or `email`) for the
/// verified email; never a display name, which anyone chooses for themselves.
fn check_username_claim(claim: &str) -> ApiResult<String> {
    let claim = claim.trim();
    if claim.is_empty() || claim == "email" {
        return Ok(String::new());
    }
    if ["name", "given_name", "family_name", "middle_name"].contains(&claim) {
        return Err(ApiError::field(
            "usernameClaim",
            format!(
                "{claim} is a display name that people choose for themselves, so anyone could \
                 take another's: use a unique claim such as preferred_username, or leave it out \
                 for the verified email"
            ),
        ));
    }
    if claim.len() > 64
        || !claim
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b))
    {
        return Err(ApiError::field(
            "usernameClaim",
            "must be a claim name such as preferred_username",
        ));
    }
    Ok(claim.to_string())
}

#[utoipa::path(get, path = "/api/providers", tag = "providers", params(NameQuery),
    responses((status = 200, body = ListResponse<Provider>)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<NameQuery>,
) -> ApiResult<Json<ListResponse<Provider>>> {
    let p = page(q.page, q.limit)?;
    let rows = state.store.list_providers(q.name.as_deref(), p).await?;
    Ok(Json(to_list(p, rows, to_api)?))
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
        Settings {
            name: &req.name,
            kind: &req.kind,
            url: &req.url,
            client_id: &req.client_id,
            client_secret: req.client_secret.expose_secret(),
            ca_pem: req.ca_cert.as_deref().unwrap_or(""),
            username_claim: req.username_claim.as_deref().unwrap_or(""),
        },
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
    built_in(&state, &cur.name, "changed")?;
    let secret = match req.client_secret {
        Some(s) => s,
        None => state.root_key.decrypt(&cur.client_secret_enc)?,
    };
    let new = prepare(
        &state,
        Settings {
            name: &cur.name,
            kind: &cur.kind,
            url: req.url.as_deref().unwrap_or(&cur.url),
            client_id: req.client_id.as_deref().unwrap_or(&cur.client_id),
            client_secret: secret.expose_secret(),
            ca_pem: req.ca_cert.as_deref().unwrap_or(&cur.ca_pem),
            username_claim: req.username_claim.as_deref().unwrap_or(&cur.username_claim),
        },
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
    built_in(
        &state,
        &state.store.get_provider(&id).await?.name,
        "removed",
    )?;
    let p = state.store.delete_provider(&id).await?;
    audit(&state, &caller, "provider.remove", &p.name, &addr).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The provider `infra server --dev` brings is its own: the server sets it
/// up at every start, and an edit would only break sign-in until then.
fn built_in(state: &AppState, name: &str, what: &str) -> ApiResult<()> {
    if state.dev_idp.is_some() && name == "dev" {
        return Err(ApiError::bad_request(format!(
            "the provider dev is built into `infra server --dev` and cannot be {what}; add \
             your own with `infra providers add NAME --url ISSUER --client-id ID`"
        )));
    }
    Ok(())
}
