//! `POST /api/tokens`: a cluster token for a destination the caller holds
//! a grant on, minted after the re-check with the identity provider; and
//! `GET /.well-known/jwks.json`, the keys connectors verify them with.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{
    CreateTokenRequest, CreateTokenResponse, INFRA_DESTINATION, REAUTH_REQUIRED, is_reserved_name,
};
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, Caller, KeyHolder};
use crate::server::recheck::{self, Refused};
use crate::server::store::{Access, Subject, base_destination};
use crate::server::tokens::Minted;

use super::{is_dns_label, ts};

#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses((status = 201, body = CreateTokenResponse), (status = 401, body = crate::api::ErrorResponse),
              (status = 403, body = crate::api::ErrorResponse), (status = 503, body = crate::api::ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    key: KeyHolder,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreateTokenResponse>)> {
    let dest = req.destination.as_str();
    if !is_dns_label(dest) || dest == INFRA_DESTINATION {
        return Err(ApiError::field(
            "destination",
            "must be a destination name such as prod",
        ));
    }
    // The hot path of kubectl's exec plugin: three reads in all. The key
    // (uncached, so a revoked one fails here), the user's provider sessions,
    // then their grants and groups together. The sessions come first so
    // that the groups are read after any re-check finished before it.
    let subject = key.subject();
    let sessions = match &subject {
        Subject::User(uid) => Some(recheck::sessions(&state, uid).await),
        _ => None,
    };
    let mut access = state.store.access_of(&subject).await?;
    let caller = Caller::with_access(key, &access.grants);
    check_grant(&access, dest, &caller.name)?;
    // The strictest bound on how recent the sign-in must be, of every grant
    // the token would carry onto the cluster.
    let max_auth_age = access
        .grants
        .iter()
        .filter(|g| base_destination(&g.destination) == dest)
        .filter_map(|g| g.max_auth_age_secs)
        .min();
    let not_after = match max_auth_age {
        Some(max_age) => Some(check_recent_sign_in(&state, &caller, dest, max_age)?),
        None => None,
    };
    // Kubernetes' own names (system:masters is cluster-admin anywhere) never
    // ride into a cluster token, whatever the store holds.
    if is_reserved_name(&caller.name) {
        return Err(ApiError::forbidden(format!(
            "{:?} starts with system:, which Kubernetes reserves; no cluster token is issued for it",
            caller.name
        )));
    }
    let groups = match sessions {
        Some(sessions) => {
            let rechecked = match sessions {
                Ok(rows) => {
                    recheck::recheck_user(
                        &state,
                        rows,
                        &caller.name,
                        caller.key_provider_id.as_deref(),
                    )
                    .await
                }
                Err(refused) => Err(refused),
            };
            match rechecked {
                // The provider may have changed the user's groups (and so
                // the grants they hold through them): read both again.
                Ok(true) => {
                    access = state.store.access_of(&subject).await?;
                    check_grant(&access, dest, &caller.name)?;
                }
                Ok(false) => {}
                Err(refused) => return Err(refused_error(&state, refused)),
            }
            access
                .groups
                .into_iter()
                .filter(|g| !is_reserved_name(g))
                .collect()
        }
        None => Vec::new(),
    };
    let (token, exp) = state
        .signer
        .mint(
            &state.store,
            &state.root_key,
            Minted {
                issuer: &state.public_url,
                audience: dest,
                subject: caller.subject.id(),
                name: &caller.name,
                groups,
                not_after,
                key_id: Some(&caller.key_id),
            },
        )
        .await?;
    state.metrics.token_minted();
    Ok((
        StatusCode::CREATED,
        Json(CreateTokenResponse {
            token: token.into(),
            expires: ts(exp),
        }),
    ))
}

/// Whether the caller's session stands on a sign-in at the provider within
/// `max_age` seconds (a grant's `maxAuthAge`); if so, until when it counts
/// as recent. Refused with 403 and reason [`REAUTH_REQUIRED`], so the exec
/// plugin can tell the person to sign in again (and never does so itself).
fn check_recent_sign_in(
    state: &AppState,
    caller: &Caller,
    dest: &str,
    max_age: i64,
) -> ApiResult<i64> {
    let host = state.public_url.trim_start_matches("https://");
    let window = crate::api::format_duration_secs(max_age.max(0) as u64);
    let refuse = |message: String| {
        let mut e = ApiError::forbidden(message);
        e.reason = Some(REAUTH_REQUIRED);
        e
    };
    let now = crate::server::store::now();
    match caller.key_auth_time {
        // A session made with a password, an access key of an admin's, or a
        // provider that did not say when the person authenticated.
        None => Err(refuse(format!(
            "{dest} asks for a sign-in within {window} through your identity provider, and this \
             session does not show one: run 'infra login {host} --reauth'"
        ))),
        Some(t) if now - t > max_age => Err(refuse(format!(
            "{dest} asks for a sign-in within {window}: run 'infra login {host} --reauth'"
        ))),
        Some(t) => Ok(t + max_age),
    }
}

/// A 403 unless the caller holds a role on `dest` or one of its namespaces.
fn check_grant(access: &Access, dest: &str, name: &str) -> Result<(), ApiError> {
    if access
        .grants
        .iter()
        .any(|g| base_destination(&g.destination) == dest)
    {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "you have no grant on {dest}; ask an admin (`infra grants add {dest} --user {name} --role view`)"
    )))
}

fn refused_error(state: &AppState, r: Refused) -> ApiError {
    let host = state.public_url.trim_start_matches("https://");
    match r {
        Refused::SessionEnded(why) => ApiError::unauthorized(format!(
            "session ended by your identity provider ({why}); run `infra login {host}`"
        )),
        Refused::Unavailable(why, secs) => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{why}; no token was issued (your login is kept): try again in {secs} seconds"
                ),
            );
            e.retry_after = Some(secs.max(1) as u64);
            e
        }
    }
}

/// The public keys of the token signers (no authentication, no version header).
/// What connectors (and anyone checking infra's cluster tokens) need to
/// know: the issuer the tokens name (the server's public URL, which may
/// differ from the URL a connector reaches it at) and where the keys are.
pub async fn discovery(State(state): State<AppState>) -> Response {
    let mut resp = Json(serde_json::json!({
        "issuer": state.public_url,
        "jwks_uri": format!("{}/.well-known/jwks.json", state.public_url),
        "id_token_signing_alg_values_supported": ["ES256"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["id_token"],
    }))
    .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    match state.signer.jwks(&state.store, &state.root_key).await {
        Ok(v) => {
            let mut resp = Json(v).into_response();
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            resp
        }
        Err(e) => ApiError::internal(format!("{e:#}")).into_response(),
    }
}
