//! What handlers take from a request: a JSON body whose errors name the
//! field, the authenticated caller, the client's address, and paging.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::api::{DEFAULT_PAGE_LIMIT, FieldError, MAX_PAGE_LIMIT};
use crate::server::AppState;
use crate::server::crypto;
use crate::server::error::ApiError;
use crate::server::machine_auth::{self, KeyUse};
use crate::server::store::{self, AccessKeyRow, PageRequest, Subject};

/// A JSON body. Malformed input is a 400 whose `fieldErrors` name the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE)
            && !ct.to_str().unwrap_or("").starts_with("application/json")
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(read_error)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A body that could not be read: too long is a 413 (whether it said its
/// length or not), anything else a 400.
fn read_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, "the request body is too large (at most 1 MiB)");
    }
    ApiError::new(status, format!("cannot read the request body: {e}"))
}

/// Query parameters. Malformed ones (`?page=abc`, a number too big) are a
/// 400 in the API's JSON shape, naming the parameter where it can.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let why = e.into_inner().to_string();
                if field.is_empty() || field == "." {
                    ApiError::bad_request(format!("the query parameters are not valid: {why}"))
                } else {
                    ApiError::field(&field, why)
                }
            })
    }
}

/// A JSON body, or the same fields as a form
/// (`application/x-www-form-urlencoded`, what `curl --data-urlencode`
/// sends): for the `/api/v1/auth` endpoints, which CI scripts call with
/// plain curl. Form values are strings, each field given once; errors name
/// the field as [`ApiJson`]'s do.
pub struct JsonOrForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let form = match req.headers().get(header::CONTENT_TYPE) {
            None => false,
            Some(ct) => {
                let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
                if ct.starts_with("application/x-www-form-urlencoded") {
                    true
                } else if ct.starts_with("application/json") {
                    false
                } else {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "the request body must be JSON (Content-Type: application/json) or a \
                         form (Content-Type: application/x-www-form-urlencoded)",
                    ));
                }
            }
        };
        let bytes = Bytes::from_request(req, state).await.map_err(read_error)?;
        if form {
            parse_form(&bytes).map(JsonOrForm)
        } else {
            parse_json(&bytes).map(JsonOrForm)
        }
    }
}

/// A form body as the fields of `T`, every value a string.
pub fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut fields = serde_json::Map::new();
    for (name, value) in url::form_urlencoded::parse(bytes) {
        if fields.contains_key(name.as_ref()) {
            return Err(ApiError::field(&name, "is given more than once"));
        }
        fields.insert(
            name.into_owned(),
            serde_json::Value::String(value.into_owned()),
        );
    }
    serde_path_to_error::deserialize(serde_json::Value::Object(fields)).map_err(body_error)
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(body_error)
}

/// A 400 whose `fieldErrors` name the field a body failed at.
fn body_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let text = inner.to_string();
    // Broken JSON is about the body as a whole, not where parsing stopped.
    let path = if inner.is_syntax() || inner.is_eof() {
        ".".to_string()
    } else {
        path
    };
    // serde reports missing and unknown fields at the parent's path.
    let field = backticked(&text, "missing field `")
        .or_else(|| backticked(&text, "unknown field `"))
        .map(|f| match path.as_str() {
            "." => f,
            p if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
            p => format!("{p}.{f}"),
        })
        .unwrap_or_else(|| {
            if path == "." {
                "body".to_string()
            } else {
                path
            }
        });
    let message = strip_position(&text);
    let mut err = ApiError::bad_request(format!("invalid request body: {field}: {message}"));
    err.field_errors = vec![FieldError {
        field_name: field,
        errors: vec![message],
    }];
    err
}

fn backticked(text: &str, prefix: &str) -> Option<String> {
    let rest = text.split(prefix).nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

fn strip_position(text: &str) -> String {
    match text.find(" at line ") {
        Some(i) if text.contains("column") => text[..i].to_string(),
        _ => text.to_string(),
    }
}

/// The client's address: the TCP peer, or what a trusted proxy says of it
/// (see [`crate::edge`]).
pub struct RemoteAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RemoteAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RemoteAddr(
            client_ip(parts)
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
        ))
    }
}

/// The client's address for a request, as [`RemoteAddr`] gives it.
pub fn client_ip(parts: &Parts) -> Option<std::net::IpAddr> {
    crate::edge::client_ip(&parts.extensions, &parts.headers).or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_canonical())
    })
}

/// An authenticated caller: the owner of a valid access key.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: Subject,
    pub name: String,
    pub key_id: String,
    pub key_expires_at: i64,
    pub is_admin: bool,
    pub is_connector: bool,
    /// The key is a machine identity's token from an oidc-auth login,
    /// bound by its TTL, uses and trusted IPs.
    pub machine_token: bool,
    /// The provider session the key stands on (a user's key).
    pub key_provider_id: Option<String>,
    /// The one destination a connector key serves.
    pub key_destination: Option<String>,
    /// When the person last authenticated at the provider for the sign-in
    /// the key stands on (Unix seconds), if they did.
    pub key_auth_time: Option<i64>,
}

impl Caller {
    pub fn user_id(&self) -> Option<&str> {
        match &self.subject {
            Subject::User(id) => Some(id),
            _ => None,
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "only infra admins may do this; ask an admin for a grant of role admin on \
                 destination infra",
            ))
        }
    }
}

/// The owner of a valid access key, checked (uncached: a revoked key fails
/// here on its very next use) but nothing else read of them yet: for
/// handlers that read the caller's grants together with more than
/// [`Caller`] does, and then make one with [`Caller::with_access`].
pub struct KeyHolder {
    pub row: AccessKeyRow,
    pub machine_token: bool,
}

impl KeyHolder {
    pub fn subject(&self) -> Subject {
        subject_of(&self.row)
    }
}

impl FromRequestParts<AppState> for KeyHolder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized("this request needs an access key; log in first")
            })?;
        let key = header.strip_prefix("Bearer ").ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <access key>`")
        })?;
        // Machine tokens are bound to trusted IPs, so the address goes along.
        let remote = client_ip(parts);
        let (row, machine_token) = state.verify_key(key, KeyUse::Request(remote)).await?;
        Ok(KeyHolder { row, machine_token })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let KeyHolder { row, machine_token } = KeyHolder::from_request_parts(parts, state).await?;
        let mut caller = state.caller_for_key(row).await?;
        caller.machine_token = machine_token;
        Ok(caller)
    }
}

/// Whom an access key speaks for.
fn subject_of(row: &AccessKeyRow) -> Subject {
    match row.owner_kind.as_str() {
        "identity" => Subject::Identity(row.owner_id.clone()),
        _ => Subject::User(row.owner_id.clone()),
    }
}

impl Caller {
    /// The caller a key holder is, given the roles they hold (as
    /// [`store::Store::access_of`] reads them).
    pub fn with_access(key: KeyHolder, grants: &[store::Held]) -> Caller {
        let on_infra = |role: &str| {
            grants
                .iter()
                .any(|g| g.destination == crate::api::INFRA_DESTINATION && g.role == role)
        };
        let (is_admin, is_connector) = (
            on_infra(crate::api::ADMIN_ROLE),
            on_infra(crate::api::CONNECTOR_ROLE),
        );
        let mut caller = Caller::from_row(key.row, is_admin, is_connector);
        caller.machine_token = key.machine_token;
        caller
    }

    fn from_row(row: AccessKeyRow, is_admin: bool, is_connector: bool) -> Caller {
        Caller {
            is_admin,
            is_connector,
            subject: subject_of(&row),
            name: row.owner_name,
            key_id: row.id,
            key_expires_at: row.expires_at,
            machine_token: false,
            key_provider_id: row.provider_id,
            key_destination: row.destination,
            key_auth_time: row.auth_time,
        }
    }
}

impl AppState {
    /// Checks a key presented to be traded for another (`POST /api/login`);
    /// see [`AppState::verify_key`].
    pub async fn verify_access_key(&self, key: &str) -> Result<AccessKeyRow, ApiError> {
        self.verify_key(key, KeyUse::Exchange)
            .await
            .map(|(row, _)| row)
    }

    /// Checks an `<id>.<secret>` key against the store: shape, secret,
    /// expiry and inactivity; for a machine identity's token also its
    /// trusted IPs and uses (the only extra queries, and only for those).
    /// Records the use. Also says whether it is a machine token.
    pub async fn verify_key(
        &self,
        key: &str,
        how: KeyUse,
    ) -> Result<(AccessKeyRow, bool), ApiError> {
        let invalid = || ApiError::unauthorized("the access key is not valid; log in again");
        let (id, secret) = crypto::parse_access_key(key).ok_or_else(invalid)?;
        let row = match self.store.get_access_key(id).await {
            Ok(row) => row,
            Err(store::StoreError::NotFound(_)) => return Err(invalid()),
            Err(e) => return Err(e.into()),
        };
        if !crypto::secret_matches(secret, &row.secret_hash) {
            return Err(invalid());
        }
        let now = store::now();
        if row.expires_at <= now {
            return Err(ApiError::unauthorized(
                "the access key has expired; log in again",
            ));
        }
        if row.inactivity_deadline <= now {
            return Err(ApiError::unauthorized(
                "the access key lapsed after going unused for its inactivity timeout; log in again",
            ));
        }
        let machine_token =
            row.owner_kind == "identity" && machine_auth::check_use(self, &row, how).await?;
        // Extending the deadline on every call would make each read a write;
        // once a minute is as good for a timeout measured in hours.
        if row.last_used_at.is_none_or(|t| now - t >= 60) {
            self.store
                .touch_access_key(&row.id, now, row.inactivity_timeout, row.expires_at)
                .await?;
        }
        Ok((row, machine_token))
    }

    pub async fn caller_for_key(&self, row: AccessKeyRow) -> Result<Caller, ApiError> {
        let roles = self.store.grants_of(&subject_of(&row)).await?;
        let on_infra = |role: &str| {
            roles
                .iter()
                .any(|g| g.destination == crate::api::INFRA_DESTINATION && g.role == role)
        };
        Ok(Caller::from_row(
            row,
            on_infra(crate::api::ADMIN_ROLE),
            on_infra(crate::api::CONNECTOR_ROLE),
        ))
    }
}

/// Turns `?page&limit` into a page request, checking the bounds.
pub fn page(page: Option<u64>, limit: Option<u64>) -> Result<PageRequest, ApiError> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if page == 0 {
        return Err(ApiError::field("page", "pages start at 1"));
    }
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_PAGE_LIMIT}"),
        ));
    }
    // Rows to skip must fit the database's BIGINT: no list is that long.
    let last = i64::MAX as u64 / limit + 1;
    if page > last {
        return Err(ApiError::field(
            "page",
            format!("is past the end of any list: at most {last} with limit {limit}"),
        ));
    }
    Ok(PageRequest { page, limit })
}

/// Wraps a page of rows as the API's list response; a page past the end
/// of the list (but the first, which may be empty) is a 400.
pub fn list<T, R>(
    page: PageRequest,
    rows: store::Page<R>,
    f: impl FnMut(R) -> T,
) -> Result<crate::api::ListResponse<T>, ApiError> {
    let total_pages = rows.total.div_ceil(page.limit);
    if page.page > total_pages.max(1) {
        return Err(ApiError::field(
            "page",
            format!(
                "is past the end of the list: it has {} (of {})",
                match total_pages {
                    0 | 1 => "one page".to_string(),
                    n => format!("{n} pages"),
                },
                page.limit
            ),
        ));
    }
    let items: Vec<T> = rows.items.into_iter().map(f).collect();
    Ok(crate::api::ListResponse {
        count: items.len() as u64,
        items,
        page: page.page,
        limit: page.limit,
        total_pages,
        total_count: rows.total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CreateUserRequest;

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<CreateUserRequest>(br#"{"password": "x"}"#).unwrap_err();
        assert_eq!(e.field_errors[0].field_name, "name");
        let e = parse_json::<CreateUserRequest>(br#"{"name": 3}"#).unwrap_err();
        assert_eq!(e.field_errors[0].field_name, "name");
        let e = parse_json::<CreateUserRequest>(br#"{"name": "a", "bogus": 1}"#).unwrap_err();
        assert_eq!(e.field_errors[0].field_name, "bogus");
        let e = parse_json::<CreateUserRequest>(br#"{"name": "#).unwrap_err();
        assert_eq!(e.field_errors[0].field_name, "body");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn form_errors_name_the_field() {
        use crate::api::OidcAuthLoginRequest;
        use secrecy::ExposeSecret;
        let r: OidcAuthLoginRequest = parse_form(b"identityId=deploy&jwt=a.b%2Bc").unwrap();
        assert_eq!(r.identity_id, "deploy");
        assert_eq!(r.jwt.expose_secret(), "a.b+c");
        let e = parse_form::<OidcAuthLoginRequest>(b"identityId=deploy").unwrap_err();
        assert_eq!(e.field_errors[0].field_name, "jwt");
        let e = parse_form::<OidcAuthLoginRequest>(b"identityId=a&jwt=b&role=x").unwrap_err();
        assert_eq!(e.field_errors[0].field_name, "role");
        let e = parse_form::<OidcAuthLoginRequest>(b"identityId=a&jwt=b&jwt=c").unwrap_err();
        assert_eq!(e.field_errors[0].field_name, "jwt");
    }

    #[test]
    fn pages_past_any_end_are_refused_not_wrapped() {
        let e = page(Some(u64::MAX), None).unwrap_err();
        assert_eq!(e.field_errors[0].field_name, "page");
        let e = page(Some(u64::MAX / 1000 + 1), Some(1000)).unwrap_err();
        assert_eq!(e.field_errors[0].field_name, "page");
        let last = i64::MAX as u64 / 1000 + 1;
        let p = page(Some(last), Some(1000)).unwrap();
        assert!(p.offset() >= 0);
        assert!(page(Some(last + 1), Some(1000)).is_err());
    }
}
