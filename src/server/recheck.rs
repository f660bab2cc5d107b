//! The re-check with the identity provider before a cluster token is
//! minted (the seed's "every 5 minutes").
//!
//! If the user's last check with a provider is older than the interval,
//! refresh the provider token and call UserInfo; update groups. The
//! provider saying the grant is gone ends the session: every access key of
//! the user is revoked. A provider that cannot be reached refuses the token
//! (fail closed) but keeps the keys. A lease in the store makes sure only
//! one replica talks to the provider for a user at a time.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::AppState;
use super::oidc::{self, OidcError};
use super::store::{self, AuditEntry, ProviderUserRow};

/// How long a replica may hold the re-check lease.
const LEASE_SECS: i64 = 30;
/// After an unreachable provider, leave it alone this long.
const BACKOFF_UNREACHABLE_SECS: i64 = 5;
/// After a 429, leave it alone this long.
const BACKOFF_RATE_LIMITED_SECS: i64 = 60;
/// How long to wait for another replica's re-check.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(10);

/// Why no token may be minted.
#[derive(Debug)]
pub enum Refused {
    /// The provider ended the session; the keys are revoked.
    SessionEnded(String),
    /// The provider cannot be asked right now; try again later.
    Unavailable(String, i64),
}

/// The user's provider sessions, as [`recheck_user`] takes them. Read
/// them before whatever is to stand on the re-check's verdict (the groups a
/// token names): a re-check another request finishes after this read is
/// then either seen by that later read or waited for by [`recheck_user`].
pub async fn sessions(state: &AppState, user_id: &str) -> Result<Vec<ProviderUserRow>, Refused> {
    state
        .store
        .provider_users_of(user_id)
        .await
        .map_err(|e| Refused::Unavailable(format!("cannot read the session: {e}"), 5))
}

/// Re-checks every provider the user signed in with (`rows`, from
/// [`sessions`]) whose last check is older than the interval. `key_provider`:
/// the provider session the caller's key stands on; when that provider gave
/// no refresh token the session cannot be re-checked, so it ends with the
/// ID token it came from (keys made since are capped at that time; older
/// ones are revoked here).
///
/// `Ok(true)`: a re-check ran (here, or on another request this one waited
/// for), which may have changed the user's groups since `rows` were read:
/// read them again.
pub async fn recheck_user(
    state: &AppState,
    rows: Vec<ProviderUserRow>,
    user_name: &str,
    key_provider: Option<&str>,
) -> Result<bool, Refused> {
    let interval = state.idp_revalidate_interval.as_secs() as i64;
    let mut rechecked = false;
    for row in rows {
        if row.refresh_token_enc.is_empty() {
            let ended = row.session_expires_at == 0 || store::now() >= row.session_expires_at;
            if key_provider == Some(row.provider_id.as_str()) && ended {
                return Err(end_unverifiable(state, &row, user_name).await);
            }
            continue;
        }
        if store::now() - row.last_check_at < interval {
            continue;
        }
        recheck_one(state, row, user_name, interval).await?;
        rechecked = true;
    }
    Ok(rechecked)
}

/// A session that no refresh token can re-check, past its ID token: its
/// keys are revoked, as when the provider ends a session.
async fn end_unverifiable(state: &AppState, row: &ProviderUserRow, user_name: &str) -> Refused {
    let why = "your identity provider gave no refresh token, so infra cannot re-check your \
               session; it ended with the sign-in's ID token"
        .to_string();
    let revoked = state
        .store
        .delete_access_keys_of("user", &row.user_id)
        .await
        .unwrap_or(0);
    let _ = state
        .store
        .audit(&AuditEntry {
            actor: "infra",
            action: "session.ended",
            target: user_name,
            result: "success",
            remote_addr: "",
            detail: &format!("no refresh token to re-check it; {revoked} access keys revoked"),
        })
        .await;
    state.metrics.recheck("ended");
    Refused::SessionEnded(why)
}

async fn recheck_one(
    state: &AppState,
    row: ProviderUserRow,
    user_name: &str,
    interval: i64,
) -> Result<(), Refused> {
    let unavailable = |msg: String, secs: i64| Refused::Unavailable(msg, secs.max(1));
    let db = |e: store::StoreError| unavailable(format!("cannot record the re-check: {e}"), 5);
    let now = store::now();
    if row.backoff_until > now {
        return Err(unavailable(
            "your identity provider could not be reached to re-check your session".into(),
            row.backoff_until - now,
        ));
    }
    if !state
        .store
        .take_recheck_lease(
            &row.provider_id,
            &row.user_id,
            LEASE_SECS,
            row.last_check_at,
        )
        .await
        .map_err(db)?
    {
        return wait_for_other(state, &row, interval).await;
    }
    let provider = match state.store.get_provider(&row.provider_id).await {
        Ok(p) => p,
        Err(e) => return Err(db(e)),
    };
    let secret = state
        .root_key
        .decrypt(&provider.client_secret_enc)
        .map_err(|e| unavailable(format!("{e:#}"), 5))?;
    let refresh_token = state
        .root_key
        .decrypt(&row.refresh_token_enc)
        .map_err(|e| unavailable(format!("{e:#}"), 5))?;
    let cfg = oidc::ProviderConfig {
        issuer: &provider.issuer,
        client_id: &provider.client_id,
        client_secret: &secret,
        ca_pem: &provider.ca_pem,
        issuers: &state.issuers,
    };
    match oidc::refresh(&cfg, &refresh_token, &row.subject).await {
        Ok(r) => {
            if let Some(groups) = &r.groups {
                sync_provider_groups(state, &provider, &row.user_id, user_name, groups, "")
                    .await
                    .map_err(db)?;
            }
            let enc = r
                .refresh_token
                .as_ref()
                .map(|t| state.root_key.encrypt(t.expose_secret()));
            state
                .store
                .finish_recheck(&row.provider_id, &row.user_id, enc.as_deref())
                .await
                .map_err(db)?;
            state.metrics.recheck("valid");
            Ok(())
        }
        Err(OidcError::Rejected(why)) => {
            let revoked = state
                .store
                .delete_access_keys_of("user", &row.user_id)
                .await
                .map_err(db)?;
            state
                .store
                .end_provider_session(&row.provider_id, &row.user_id)
                .await
                .map_err(db)?;
            let _ = state
                .store
                .audit(&AuditEntry {
                    actor: &provider.name,
                    action: "session.ended",
                    target: user_name,
                    result: "success",
                    remote_addr: "",
                    detail: &format!("{why}; {revoked} access keys revoked"),
                })
                .await;
            state.metrics.recheck("ended");
            Err(Refused::SessionEnded(why))
        }
        Err(OidcError::RateLimited(why)) => {
            let _ = state
                .store
                .fail_recheck(
                    &row.provider_id,
                    &row.user_id,
                    store::now() + BACKOFF_RATE_LIMITED_SECS,
                )
                .await;
            state.metrics.recheck("rate_limited");
            Err(unavailable(why, BACKOFF_RATE_LIMITED_SECS))
        }
        Err(OidcError::Unreachable(why)) => {
            let _ = state
                .store
                .fail_recheck(
                    &row.provider_id,
                    &row.user_id,
                    store::now() + BACKOFF_UNREACHABLE_SECS,
                )
                .await;
            state.metrics.recheck("unreachable");
            Err(unavailable(why, BACKOFF_UNREACHABLE_SECS))
        }
    }
}

/// Another replica (or request) holds the lease: wait for its verdict.
async fn wait_for_other(
    state: &AppState,
    row: &ProviderUserRow,
    interval: i64,
) -> Result<(), Refused> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rows = state
            .store
            .provider_users_of(&row.user_id)
            .await
            .unwrap_or_default();
        let Some(cur) = rows.into_iter().find(|r| r.provider_id == row.provider_id) else {
            break;
        };
        let now = store::now();
        if cur.refresh_token_enc.is_empty() {
            return Err(Refused::SessionEnded(
                "the session was ended by the identity provider".into(),
            ));
        }
        // Someone finished a re-check after we looked: its verdict stands.
        if cur.last_check_at > row.last_check_at || now - cur.last_check_at < interval {
            return Ok(());
        }
        if cur.backoff_until > now {
            return Err(Refused::Unavailable(
                "your identity provider could not be reached to re-check your session".into(),
                cur.backoff_until - now,
            ));
        }
    }
    Err(Refused::Unavailable(
        "the re-check with your identity provider is taking too long".into(),
        5,
    ))
}

/// Makes the user's groups from `provider` exactly `groups`, at every
/// sign-in and re-check, leaving out (logged and audited) the names
/// Kubernetes reserves for itself: a provider never makes anyone a member
/// of `system:masters`.
pub async fn sync_provider_groups(
    state: &AppState,
    provider: &store::ProviderRow,
    user_id: &str,
    user_name: &str,
    groups: &[String],
    addr: &str,
) -> Result<(), store::StoreError> {
    let (kept, reserved): (Vec<String>, Vec<String>) = groups
        .iter()
        .cloned()
        .partition(|g| !crate::api::is_reserved_name(g));
    if !reserved.is_empty() {
        tracing::warn!(
            provider = %provider.name,
            user = %user_name,
            groups = ?reserved,
            "ignored groups with Kubernetes' reserved prefix system:"
        );
        state
            .store
            .audit(&AuditEntry {
                actor: &provider.name,
                action: "groups.reserved",
                target: user_name,
                result: "refused",
                remote_addr: addr,
                detail: &format!(
                    "ignored groups with Kubernetes' reserved prefix system: {}",
                    reserved.join(", ")
                ),
            })
            .await?;
    }
    state
        .store
        .sync_provider_groups(&provider.id, user_id, &kept)
        .await
}
