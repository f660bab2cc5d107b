//! Logging in and out without a browser: password or access key in, a new
//! access key out. Failed attempts are audited (repeats from one source as
//! one entry with a count) and rate-limited per client address and per
//! account at that address (`server::ratelimit`), in the store, so every
//! replica sees the same counts.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::ExposeSecret;

use crate::api::{LoginRequest, LoginResponse, VersionResponse, WhoAmIResponse, version};
use crate::server::AppState;
use crate::server::crypto;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{ApiJson, Caller, RemoteAddr};
use crate::server::oidc;
use crate::server::ratelimit::{self, Account, Attempt};
use crate::server::store::{self, AuditEntry, NewAccessKey};

/// Longer names are no user's (see `check_subject_name`); only this much of
/// one is kept in the audit log.
const MAX_NAME_LEN: usize = 256;

#[utoipa::path(get, path = "/api/version", tag = "auth",
    responses((status = 200, body = VersionResponse)))]
pub async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: version::CURRENT.to_string(),
    })
}

#[utoipa::path(get, path = "/api/whoami", tag = "auth",
    responses((status = 200, body = WhoAmIResponse), (status = 401, body = crate::api::ErrorResponse)))]
pub async fn whoami(caller: Caller) -> Json<WhoAmIResponse> {
    Json(WhoAmIResponse {
        id: caller.subject.id().to_string(),
        name: caller.name.clone(),
        kind: caller.subject.kind().to_string(),
        key_id: caller.key_id.clone(),
        expires: super::ts(caller.key_expires_at),
    })
}

#[utoipa::path(post, path = "/api/login", tag = "auth", request_body = LoginRequest,
    responses((status = 201, body = LoginResponse), (status = 401, body = crate::api::ErrorResponse),
              (status = 429, body = crate::api::ErrorResponse)))]
pub async fn login(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<(StatusCode, Json<LoginResponse>)> {
    match (req.password_credentials, req.access_key, req.oidc) {
        (Some(pc), None, None) => {
            let name = pc.name.trim();
            let target: String = name.chars().take(MAX_NAME_LEN).collect();
            let attempt = Attempt::person(&addr, Account::User(&target));
            ratelimit::check(&state, &attempt).await?;
            let user = state.store.find_user_by_name(name).await?;
            let hash = user
                .as_ref()
                .filter(|u| u.kind == "user")
                .and_then(|u| u.password_hash.clone());
            let password = pc.password;
            let ok = tokio::task::spawn_blocking({
                let hash = hash.clone();
                move || crypto::verify_password(password.expose_secret(), hash.as_deref())
            })
            .await
            .map_err(ApiError::internal)?;
            let user = match user {
                Some(u) if ok => u,
                _ => {
                    fail(
                        &state,
                        &attempt,
                        "password",
                        &target,
                        "wrong user name or password",
                    )
                    .await?;
                    return Err(ApiError::unauthorized(
                        "wrong user name or password; if you sign in through your company's \
                         identity provider, run `infra login SERVER` without --user",
                    ));
                }
            };
            // A password set by an older version must not outlive the provider.
            if user.origin() == store::Origin::Provider {
                fail(
                    &state,
                    &attempt,
                    "password",
                    &target,
                    "signs in through a provider",
                )
                .await?;
                return Err(ApiError::unauthorized(format!(
                    "{} signs in through an identity provider, not with a password; run \
                     `infra login SERVER` without --user",
                    user.name
                )));
            }
            let resp =
                issue_login_key(&state, "user", &user.id, &user.name, None, None, None).await?;
            state.store.touch_user(&user.id).await?;
            ratelimit::succeeded(&state.store, &attempt).await?;
            succeed(&state, "password", &user.name, &addr).await?;
            Ok((StatusCode::CREATED, Json(resp)))
        }
        (None, Some(key), None) => {
            let key = key.expose_secret();
            let id = crypto::parse_access_key(key).map(|(id, _)| id);
            let target = match id {
                Some(id) => format!("key:{id}"),
                None => "key:malformed".to_string(),
            };
            let attempt = Attempt::person(&addr, id.map_or(Account::None, Account::Key));
            ratelimit::check(&state, &attempt).await?;
            let row = match state.verify_access_key(key).await {
                Ok(row) => row,
                Err(e) => {
                    fail(&state, &attempt, "access_key", &target, &e.message).await?;
                    return Err(e);
                }
            };
            // A connector key serves one destination: traded for a login
            // key, it would serve none, and outlive it.
            if let Some(d) = &row.destination {
                return Err(ApiError::forbidden(format!(
                    "a connector key (for {d}) cannot be traded for a login key; `infra connector` \
                     uses it as it is"
                )));
            }
            let resp = issue_login_key(
                &state,
                &row.owner_kind,
                &row.owner_id,
                &row.owner_name,
                Some(row.expires_at),
                row.provider_id.as_deref(),
                // The same sign-in, traded for a new key: not a new one.
                row.provider_id.as_ref().and(row.auth_time),
            )
            .await?;
            ratelimit::succeeded(&state.store, &attempt).await?;
            succeed(&state, "access_key", &row.owner_name, &addr).await?;
            Ok((StatusCode::CREATED, Json(resp)))
        }
        (None, None, Some(o)) => {
            let resp = oidc_login(&state, &addr, o).await?;
            Ok((StatusCode::CREATED, Json(resp)))
        }
        _ => Err(ApiError::field(
            "passwordCredentials",
            "give exactly one of passwordCredentials, accessKey or oidc",
        )),
    }
}

#[utoipa::path(post, path = "/api/logout", tag = "auth",
    responses((status = 204), (status = 401, body = crate::api::ErrorResponse)))]
pub async fn logout(
    State(state): State<AppState>,
    RemoteAddr(addr): RemoteAddr,
    caller: Caller,
) -> ApiResult<StatusCode> {
    state.store.delete_access_key(&caller.key_id).await?;
    state
        .store
        .audit(&AuditEntry {
            actor: &caller.name,
            action: "logout",
            target: &format!("key:{}", caller.key_id),
            result: "success",
            remote_addr: &addr,
            detail: "",
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Exchanges the code the CLI got through the browser, and signs the
/// person in as the user the provider vouches for.
async fn oidc_login(
    state: &AppState,
    addr: &str,
    o: crate::api::OidcLogin,
) -> ApiResult<LoginResponse> {
    // Only the CLI's loopback listener: a code issued for any other redirect
    // (the server's own web callback above all) is not the caller's to redeem.
    check_loopback_redirect(&o.redirect_url)?;
    let provider = match state.store.get_provider(&o.provider_id).await {
        Ok(p) => p,
        Err(store::StoreError::NotFound(_)) => {
            return Err(ApiError::field(
                "oidc.providerID",
                "no such provider; see GET /api/providers",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let signed_in = sign_in_with_provider(
        state,
        addr,
        &provider,
        ProviderAnswer {
            code: o.code.expose_secret(),
            redirect_url: &o.redirect_url,
            code_verifier: o.code_verifier.expose_secret(),
            nonce: &o.nonce,
            reauth: o.reauth,
        },
    )
    .await?;
    let resp = issue_login_key(
        state,
        "user",
        &signed_in.user.id,
        &signed_in.user.name,
        signed_in.session_expires_at,
        Some(&provider.id),
        signed_in.auth_time,
    )
    .await?;
    succeed(state, "oidc", &signed_in.user.name, addr).await?;
    if state.dev_idp.is_some() && provider.name == "dev" {
        dev_next_step(&signed_in.user.name);
    }
    Ok(resp)
}

/// `infra server --dev` says, once, what comes after the first sign-in: a
/// cluster needs a connector before kubectl can reach it.
fn dev_next_step(user: &str) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    eprintln!(
        "\n{user} signed in. Next, to reach a cluster with kubectl, run a connector for it \
         (here, outside the cluster, with a kubeconfig context that may impersonate):\n\n    \
         infra keys add --connector --destination local > connector.key\n    \
         infra connector --name local --server https://localhost:8443 --server-ca-file \
         TLS.CRT --access-key-file connector.key --kubeconfig ~/.kube/config --context \
         CONTEXT --listen 127.0.0.1:8444 --endpoint localhost:8444\n    \
         infra grants add local --group admins --role view\n    \
         infra use local && kubectl get pods -A\n\n\
         (TLS.CRT is this server's certificate: tls.crt in its data directory. See the \
         README's \"All the way to kubectl\".)\n"
    );
}

/// `redirectURL` of `POST /api/login` must be the CLI's loopback listener:
/// `http://localhost:PORT`, `http://127.0.0.1:PORT` or `http://[::1]:PORT`,
/// with no path (or `/`), query, fragment or user info.
pub fn check_loopback_redirect(redirect: &str) -> ApiResult<()> {
    let refuse = || {
        ApiError::field(
            "oidc.redirectURL",
            "must be the CLI's loopback listener, http://localhost:PORT (or 127.0.0.1 or [::1]) \
             with no path: codes issued for other redirect URIs are not exchanged here",
        )
    };
    let u = url::Url::parse(redirect).map_err(|_| refuse())?;
    let loopback = matches!(
        u.host(),
        Some(url::Host::Domain("localhost"))
            | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
            | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    );
    let ok = u.scheme() == "http"
        && loopback
        && u.port().is_some()
        && u.username().is_empty()
        && u.password().is_none()
        && u.path() == "/"
        && u.query().is_none()
        && u.fragment().is_none()
        // `url` normalizes away what the provider would compare byte for byte.
        && !redirect.contains(['\\', '%', '@']);
    if ok { Ok(()) } else { Err(refuse()) }
}

/// Who signed in through a provider, and until when the session may last
/// without a refresh token (`None`: a refresh token keeps it).
pub(crate) struct SignedIn {
    pub user: store::UserRow,
    pub session_expires_at: Option<i64>,
    /// When the person authenticated at the provider (the ID token's
    /// `auth_time`), if it said.
    pub auth_time: Option<i64>,
}

/// What came back from the provider's redirect, and what the sign-in asked
/// of it: the code, the redirect URI it was issued for, the PKCE verifier
/// and nonce, and whether a new authentication was asked for (`max_age=0`).
pub(crate) struct ProviderAnswer<'a> {
    pub code: &'a str,
    pub redirect_url: &'a str,
    pub code_verifier: &'a str,
    pub nonce: &'a str,
    pub reauth: bool,
}

/// How recent `auth_time` must be after a sign-in that asked the provider
/// to authenticate the person again (`max_age=0`): the round trip through
/// the browser, plus the clock leeway.
pub(crate) const REAUTH_FRESH_SECS: i64 = 300;

/// After a sign-in that asked for a new authentication: why the provider's
/// `auth_time` does not show one, if it does not. A provider that ignores
/// `max_age` must not pass an old sign-in off as a new one.
pub(crate) fn stale_reauth(auth_time: Option<i64>, now: i64) -> Option<String> {
    let leeway = crate::server::issuers::CLOCK_LEEWAY_SECS as i64;
    match auth_time {
        None => Some(
            "it was asked to authenticate you again (max_age=0) but its ID token carries no \
             auth_time"
                .into(),
        ),
        Some(t) if now - t > REAUTH_FRESH_SECS + leeway => Some(format!(
            "it was asked to authenticate you again (max_age=0) but says you last did {} ago; \
             the provider may not honour max_age",
            crate::api::format_duration_secs((now - t) as u64)
        )),
        Some(t) if t - now > leeway => Some(
            "its ID token says you authenticated in the future (auth_time); check the clocks"
                .into(),
        ),
        Some(_) => None,
    }
}

/// Exchanges an authorization code at the provider (with its PKCE
/// verifier), verifies the ID token and reads UserInfo, then finds the
/// person by what the provider vouches for: the account (provider,
/// `sub`), linked to one user at its first sign-in. Groups are synced (never
/// a reserved `system:` one) and the refresh token kept (encrypted).
/// Failures are audited and rate-limited per client address (never per
/// provider: its id is public, and one address's failures must not stop
/// everyone's sign-in; there is no account before the exchange). Issues no
/// key: that is the caller's business.
///
/// Shared by `POST /api/login` (the CLI's loopback redirect) and the web
/// sign-in of device codes (the server's own redirect URI).
pub(crate) async fn sign_in_with_provider(
    state: &AppState,
    addr: &str,
    provider: &store::ProviderRow,
    answer: ProviderAnswer<'_>,
) -> ApiResult<SignedIn> {
    let ProviderAnswer {
        code,
        redirect_url,
        code_verifier,
        nonce,
        reauth,
    } = answer;
    let target = format!("oidc:{}", provider.id);
    let attempt = Attempt::person(addr, Account::None);
    ratelimit::check(state, &attempt).await?;
    let secret = state.root_key.decrypt(&provider.client_secret_enc)?;
    let cfg = oidc::ProviderConfig {
        issuer: &provider.issuer,
        client_id: &provider.client_id,
        client_secret: &secret,
        ca_pem: &provider.ca_pem,
        issuers: &state.issuers,
    };
    let id = match oidc::exchange_code(&cfg, code, redirect_url, code_verifier, nonce).await {
        Ok(id) => id,
        Err(oidc::OidcError::Rejected(msg)) => {
            fail(state, &attempt, "oidc", &target, &msg).await?;
            return Err(ApiError::unauthorized(format!(
                "sign-in with {} failed: {msg}",
                provider.name
            )));
        }
        Err(oidc::OidcError::Unreachable(msg) | oidc::OidcError::RateLimited(msg)) => {
            state.metrics.login("oidc", "error");
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("sign-in with {} failed: {msg}", provider.name),
            ));
        }
    };
    if reauth && let Some(why) = stale_reauth(id.auth_time, store::now()) {
        fail(state, &attempt, "oidc", &target, &why).await?;
        return Err(ApiError::unauthorized(format!(
            "sign-in with {} refused: {why}",
            provider.name
        )));
    }
    let session_expires_at = match id.refresh_token {
        Some(_) => None,
        None => Some(id.id_token_expires_at),
    };
    let refresh_enc = id
        .refresh_token
        .as_ref()
        .map(|t| state.root_key.encrypt(t.expose_secret()))
        .unwrap_or_default();
    let sign_in = store::SignIn {
        provider_id: &provider.id,
        subject: &id.subject,
        email: &id.email,
        refresh_token_enc: &refresh_enc,
        session_expires_at: session_expires_at.unwrap_or(0),
    };
    let user = match state
        .store
        .find_provider_user(&provider.id, &id.subject)
        .await?
    {
        // Known account: whatever it calls itself now, it is this user.
        Some(link) => {
            let user = state.store.get_user(&link.user_id).await?;
            if user.origin() == store::Origin::Builtin || user.kind != "user" {
                fail(state, &attempt, "oidc", &target, "built-in user").await?;
                return Err(ApiError::forbidden(format!(
                    "{:?} is a built-in user and cannot sign in through a provider",
                    user.name
                )));
            }
            state.store.record_sign_in(&user.id, &sign_in).await?;
            user
        }
        None => first_sign_in(state, &attempt, provider, &id, &target, &sign_in).await?,
    };
    if let Some(groups) = &id.groups {
        crate::server::recheck::sync_provider_groups(
            state, provider, &user.id, &user.name, groups, addr,
        )
        .await?;
    }
    state.store.touch_user(&user.id).await?;
    Ok(SignedIn {
        user,
        session_expires_at,
        auth_time: id.auth_time,
    })
}

/// The first sign-in of a provider account: a user named by the verified
/// email (or the provider's username claim) is made, or an invited one is
/// claimed when the provider vouches for the address (so is a provider
/// user whose provider was removed or moved to another issuer). Local
/// users, the built-in ones and users linked to any other account, at this
/// provider or another, are never taken over: that is a 409, audited.
async fn first_sign_in(
    state: &AppState,
    attempt: &Attempt<'_>,
    provider: &store::ProviderRow,
    id: &oidc::ProviderIdentity,
    target: &str,
    sign_in: &store::SignIn<'_>,
) -> ApiResult<store::UserRow> {
    let name = match id.user_name(&provider.username_claim, &provider.name) {
        Ok(n) => n,
        Err(oidc::NoUserName(why)) => {
            fail(state, attempt, "oidc", target, &why).await?;
            return Err(ApiError::unauthorized(format!(
                "sign-in with {} failed: {why}",
                provider.name
            )));
        }
    };
    if crate::api::is_reserved_name(&name) {
        let why = format!(
            "the user name {name:?} starts with system:, which Kubernetes reserves for itself"
        );
        fail(state, attempt, "oidc", target, &why).await?;
        return Err(ApiError::forbidden(format!(
            "sign-in with {} refused: {why}",
            provider.name
        )));
    }
    // Two first sign-ins of one account at once: the second finds the first's link.
    for _ in 0..2 {
        let user = match state.store.find_user_by_name(&name).await? {
            None => match state
                .store
                .create_user(&name, "user", store::Origin::Provider, None)
                .await
            {
                Ok(u) => u,
                Err(store::StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            },
            Some(existing) => {
                let refusal = match existing.origin() {
                    store::Origin::Builtin => Some(format!(
                        "{name:?} is a built-in user; no provider account can become it"
                    )),
                    store::Origin::Local => Some(format!(
                        "{name:?} is a local user (signs in with a password); infra never links \
                         a provider account to a local user"
                    )),
                    // A name that is an address is claimed only by the
                    // account whose address it is, whatever claim named it.
                    _ if name.contains('@') && !id.email.trim().eq_ignore_ascii_case(&name) => {
                        Some(format!(
                            "a user named {name:?} already exists, and {} vouches for this \
                             account's address {:?}, not for that one, so it cannot claim that user",
                            provider.name,
                            id.email.trim()
                        ))
                    }
                    _ if !id.email_verified => Some(format!(
                        "a user named {name:?} already exists, and {} does not vouch for this \
                         account's email (email_verified is not true), so it cannot claim that user",
                        provider.name
                    )),
                    _ => None,
                };
                if let Some(why) = refusal {
                    return Err(conflict(state, attempt.addr, provider, id, &name, &why).await);
                }
                existing
            }
        };
        match state.store.link_provider_user(&user.id, sign_in).await? {
            Ok(()) => return Ok(user),
            Err(store::LinkConflict::UserTaken { .. }) => {
                let why = format!(
                    "the user {name:?} is already linked to another {} account (another \
                     subject); infra never moves a user to a different account",
                    provider.name
                );
                return Err(conflict(state, attempt.addr, provider, id, &name, &why).await);
            }
            Err(store::LinkConflict::OtherProvider) => {
                let why = format!(
                    "the user {name:?} already signs in through another provider; infra never \
                     moves a user to a different account"
                );
                return Err(conflict(state, attempt.addr, provider, id, &name, &why).await);
            }
            // The same account, linked a moment ago by a parallel sign-in.
            Err(store::LinkConflict::SubjectTaken { user_id }) => {
                return Ok(state.store.get_user(&user_id).await?);
            }
        }
    }
    Err(ApiError::internal(
        "the user vanished while signing in; try again",
    ))
}

/// A provider account that would take over another user: refused (409)
/// and audited with both sides named.
async fn conflict(
    state: &AppState,
    addr: &str,
    provider: &store::ProviderRow,
    id: &oidc::ProviderIdentity,
    name: &str,
    why: &str,
) -> ApiError {
    state.metrics.login("oidc", "failure");
    let audited = state
        .store
        .audit(&AuditEntry {
            actor: &format!("{}:{}", provider.name, id.subject),
            action: "login",
            target: name,
            result: "conflict",
            remote_addr: addr,
            detail: why,
        })
        .await;
    if let Err(e) = audited {
        return e.into();
    }
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "sign-in with {} refused: {why}. Ask an infra admin: they can remove the user \
             or sign the account in under another name",
            provider.name
        ),
    )
}

/// A new session key for the owner, lasting the session expiry (and never
/// longer than `cap`: the key it was exchanged for, or the ID token of a
/// sign-in that brought no refresh token). `provider_id`: the provider
/// session it stands on; `auth_time`: when the person authenticated there.
pub(crate) async fn issue_login_key(
    state: &AppState,
    owner_kind: &str,
    owner_id: &str,
    owner_name: &str,
    cap: Option<i64>,
    provider_id: Option<&str>,
    auth_time: Option<i64>,
) -> ApiResult<LoginResponse> {
    let now = store::now();
    let mut expires_at = now + state.session_expiry.as_secs() as i64;
    if let Some(cap) = cap {
        expires_at = expires_at.min(cap);
    }
    let key = crypto::generate_access_key();
    let name = format!("login-{}", key.id.to_ascii_lowercase());
    state
        .store
        .create_access_key(&NewAccessKey {
            id: &key.id,
            name: &name,
            owner_kind,
            owner_id,
            secret_hash: &key.secret_hash,
            expires_at,
            inactivity_timeout: state.session_inactivity_timeout.as_secs() as i64,
            destination: None,
            provider_id,
            auth_time,
        })
        .await?;
    Ok(LoginResponse {
        user_id: owner_id.to_string(),
        name: owner_name.to_string(),
        access_key: key.key.expose_secret().to_string().into(),
        expires: super::ts(expires_at),
    })
}

/// A failed login: counted against the attempt's limits, and audited (the
/// same failure from the same source within an hour as one entry).
async fn fail(
    state: &AppState,
    attempt: &Attempt<'_>,
    method: &str,
    target: &str,
    why: &str,
) -> ApiResult<()> {
    state.metrics.login(method, "failure");
    ratelimit::failed(&state.store, attempt).await?;
    state
        .store
        .audit_repeated(
            &AuditEntry {
                actor: target,
                action: "login",
                target,
                result: "failure",
                remote_addr: &attempt.source,
                detail: &format!("{method}: {why}"),
            },
            ratelimit::AUDIT_REPEAT_WINDOW_MS,
        )
        .await?;
    Ok(())
}

pub(crate) async fn succeed(
    state: &AppState,
    method: &str,
    name: &str,
    addr: &str,
) -> ApiResult<()> {
    state.metrics.login(method, "success");
    state
        .store
        .audit(&AuditEntry {
            actor: name,
            action: "login",
            target: name,
            result: "success",
            remote_addr: addr,
            detail: method,
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::stale_reauth;

    #[test]
    fn a_reauth_needs_a_recent_auth_time() {
        let now = 1_800_000_000;
        assert!(stale_reauth(Some(now - 10), now).is_none());
        assert!(stale_reauth(Some(now - 300), now).is_none());
        let old = stale_reauth(Some(now - 3600), now).unwrap();
        assert!(old.contains("max_age") && old.contains("1h"), "{old}");
        assert!(stale_reauth(None, now).unwrap().contains("no auth_time"));
        assert!(stale_reauth(Some(now + 3600), now).is_some());
    }
}
