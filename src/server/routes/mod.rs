//! The `/api` routes, one file per resource. `api_routes` is the single
//! table the router is built from; the OpenAPI test walks it too.

pub mod access;
pub mod access_keys;
pub mod audit;
pub mod auth;
pub mod destinations;
pub mod grants;
pub mod groups;
pub mod identities;
pub mod providers;
pub mod sessions;
pub mod tokens;
pub mod users;

use axum::routing::{MethodRouter, delete, get, post};

use super::AppState;
use super::error::ApiError;

pub struct Route {
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub handler: MethodRouter<AppState>,
    /// Callers must send `Infra-Version` (all but the Infisical-shaped
    /// `/api/v1/auth` endpoints, whose path carries the version and which
    /// CI scripts call with plain curl).
    pub needs_version: bool,
}

fn route(
    path: &'static str,
    methods: &'static [&'static str],
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        path,
        methods,
        handler,
        needs_version: true,
    }
}

/// A route that takes no `Infra-Version` header.
fn versioned_by_path(
    path: &'static str,
    methods: &'static [&'static str],
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        needs_version: false,
        ..route(path, methods, handler)
    }
}

pub fn api_routes() -> Vec<Route> {
    vec![
        route("/api/version", &["get"], get(auth::version)),
        route("/api/whoami", &["get"], get(auth::whoami)),
        route("/api/login", &["post"], post(auth::login)),
        route("/api/logout", &["post"], post(auth::logout)),
        route("/api/device", &["post"], post(super::device::create)),
        route("/api/device/status", &["post"], post(super::device::status)),
        route(
            "/api/users",
            &["get", "post"],
            get(users::list).post(users::create),
        ),
        route(
            "/api/users/{id}",
            &["get", "put", "delete"],
            get(users::get).put(users::update).delete(users::remove),
        ),
        route(
            "/api/groups",
            &["get", "post"],
            get(groups::list).post(groups::create),
        ),
        route(
            "/api/groups/{id}",
            &["get", "delete"],
            get(groups::get).delete(groups::remove),
        ),
        route(
            "/api/groups/{id}/users",
            &["get", "patch"],
            get(groups::members).patch(groups::update_members),
        ),
        route(
            "/api/identities",
            &["get", "post"],
            get(identities::list).post(identities::create),
        ),
        route(
            "/api/identities/{id}",
            &["get", "delete"],
            get(identities::get).delete(identities::remove),
        ),
        route(
            "/api/identities/{id}/oidc-auth",
            &["get", "put", "delete"],
            get(identities::get_oidc_auth)
                .put(identities::put_oidc_auth)
                .delete(identities::delete_oidc_auth),
        ),
        versioned_by_path(
            "/api/v1/auth/oidc-auth/login",
            &["post"],
            post(identities::oidc_auth_login),
        ),
        versioned_by_path(
            "/api/v1/auth/token/renew",
            &["post"],
            post(identities::renew_token),
        ),
        versioned_by_path(
            "/api/v1/auth/token/revoke",
            &["post"],
            post(identities::revoke_token),
        ),
        route(
            "/api/grants",
            &["get", "post"],
            get(grants::list).post(grants::create),
        ),
        route("/api/grants/states", &["post"], post(grants::report_states)),
        route(
            "/api/grants/{id}",
            &["get", "delete"],
            get(grants::get).delete(grants::remove),
        ),
        route(
            "/api/destinations",
            &["get", "post"],
            get(destinations::list).post(destinations::create),
        ),
        route(
            "/api/destinations/{id}",
            &["get", "put", "delete"],
            get(destinations::get)
                .put(destinations::update)
                .delete(destinations::remove),
        ),
        route(
            "/api/access-keys",
            &["get", "post"],
            get(access_keys::list).post(access_keys::create),
        ),
        route(
            "/api/access-keys/{id}",
            &["delete"],
            delete(access_keys::remove),
        ),
        route(
            "/api/providers",
            &["get", "post"],
            get(providers::list).post(providers::create),
        ),
        route(
            "/api/providers/{id}",
            &["get", "patch", "delete"],
            get(providers::get)
                .patch(providers::update)
                .delete(providers::remove),
        ),
        route("/api/audit", &["get"], get(audit::list)),
        route("/api/tokens", &["post"], post(tokens::create)),
        route("/api/access/explain", &["get"], get(access::explain)),
        route("/api/access/check", &["post"], post(access::check)),
        route(
            "/api/sessions",
            &["get", "post"],
            get(sessions::list).post(sessions::create),
        ),
        route("/api/sessions/{id}", &["get"], get(sessions::get)),
        route(
            "/api/sessions/{id}/chunks",
            &["post"],
            post(sessions::append),
        ),
        route("/api/sessions/{id}/end", &["post"], post(sessions::end)),
        route(
            "/api/sessions/{id}/recording",
            &["get"],
            get(sessions::recording),
        ),
    ]
}

/// RFC 3339 for a Unix time.
pub fn ts(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub fn ts_ms(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1_000_000)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A DNS label: what Kubernetes accepts as a namespace name.
pub use crate::api::is_dns_label;

/// Checks a user, group or identity name: a name field that is not one of
/// Kubernetes' reserved `system:` names.
pub fn check_subject_name(field: &str, value: &str) -> Result<(), ApiError> {
    check_name(field, value, 256)?;
    if crate::api::is_reserved_name(value) {
        return Err(ApiError::field(
            field,
            "must not start with system:, which Kubernetes reserves for itself (system:masters \
             is cluster-admin on every cluster)",
        ));
    }
    Ok(())
}

/// Checks a name field: not empty, not too long, no control characters or
/// surrounding blanks.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.trim() != value || value.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must not hold control characters or leading or trailing blanks",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Only the Infisical-shaped endpoints go without `Infra-Version`.
    #[test]
    fn only_v1_auth_routes_skip_the_version_header() {
        for r in super::api_routes() {
            assert_eq!(
                r.needs_version,
                !r.path.starts_with("/api/v1/auth/"),
                "{}",
                r.path
            );
        }
    }
}
