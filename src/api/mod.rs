//! The wire contract between the CLI, the connector and the server.
//!
//! Every request and response body lives here, once, so the server's
//! handlers, the typed client and the OpenAPI document cannot drift apart.
//! This module depends on nothing else in the crate.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod certs;
pub mod rbac;
pub mod version;

/// Clock skew allowed on a token's `exp`, `nbf` and `iat`, by the server
/// (ID tokens, workload JWTs) and the connectors (infra's tokens) alike.
pub const CLOCK_LEEWAY_SECS: u64 = 30;

/// Secrets on the wire: `SecretString` fields (redacted in `Debug`, never
/// shown by accident) are written out only here, where they go onto the wire.
pub mod secret {
    use secrecy::{ExposeSecret, SecretString};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose_secret())
    }

    pub fn serialize_option<S: Serializer>(
        s: &Option<SecretString>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match s {
            Some(s) => ser.serialize_some(s.expose_secret()),
            None => ser.serialize_none(),
        }
    }
}

/// The header every `/api` request carries with the caller's version.
pub const VERSION_HEADER: &str = "Infra-Version";

/// The error body of every failed API call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    pub code: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_errors: Vec<FieldError>,
    /// What a client may act on, beyond the status: [`REAUTH_REQUIRED`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The [`ErrorResponse::reason`] of a cluster token refused because a grant
/// asks for a more recent sign-in at the identity provider than the
/// session's (`infra login SERVER --reauth`).
pub const REAUTH_REQUIRED: &str = "reauth_required";

/// The longest `maxAuthAge` a grant may ask for.
pub const MAX_AUTH_AGE_LIMIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FieldError {
    pub field_name: String,
    pub errors: Vec<String>,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    pub items: Vec<T>,
    pub count: u64,
    pub page: u64,
    pub limit: u64,
    pub total_pages: u64,
    pub total_count: u64,
}

/// `?page&limit` on every list.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct PageQuery {
    pub page: Option<u64>,
    pub limit: Option<u64>,
}

pub const DEFAULT_PAGE_LIMIT: u64 = 100;
pub const MAX_PAGE_LIMIT: u64 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionResponse {
    pub version: String,
}

/// `GET /api/whoami`: who the access key of the request belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmIResponse {
    /// The user's (or machine identity's) id.
    pub id: String,
    pub name: String,
    /// `user` or `identity`.
    pub kind: String,
    /// The id of the access key the request was made with.
    #[serde(rename = "keyID")]
    pub key_id: String,
    /// When that key expires, RFC 3339.
    pub expires: String,
}

// ---------------------------------------------------------------- names

/// Kubernetes reserves names that start with `system:` for itself (the
/// group `system:masters` is cluster-admin on every cluster, whatever RBAC
/// says). infra never lets one be a user, group or identity name, and never
/// puts one into a cluster token.
pub const RESERVED_PREFIX: &str = "system:";

/// A `Warning` header's value as Kubernetes writes them: `299 - "text"`,
/// quotes and backslashes escaped.
pub fn warning_value(text: &str) -> String {
    format!(
        "299 - \"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// The text of a [`warning_value`] (`299 - "text"`), with control characters
/// dropped: the server's words go to a terminal or a page.
pub fn warning_text(header: &str) -> Option<String> {
    let quoted = header.strip_prefix("299 - ")?.trim();
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut text = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let c = if c == '\\' { chars.next()? } else { c };
        if !c.is_control() {
            text.push(c);
        }
    }
    Some(text)
}

/// Whether `name` is one of Kubernetes' reserved names (any case, leading
/// blanks ignored).
pub fn is_reserved_name(name: &str) -> bool {
    name.trim_start()
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// `s`, cut at a character boundary to at most `max` bytes (marked with
/// …): for text a stranger chose, logged or quoted back.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// A DNS label: what destinations, machine identities and Kubernetes
/// namespaces are named with.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A duration as the API and every flag write it: `30m`, `72h`, `30d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}: use a duration such as 30m, 72h or 30d"))
}

/// A duration in whole seconds as [`parse_duration`] reads it back, short:
/// `15m`, `1h30m`, `90s`.
pub fn format_duration_secs(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut left = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

// ---------------------------------------------------------------- login

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_credentials: Option<PasswordCredentials>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::serialize_option"
    )]
    #[schema(value_type = Option<String>)]
    pub access_key: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcLogin>,
}

/// What the CLI got back from the provider through the browser, for the
/// server to exchange.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcLogin {
    #[serde(rename = "providerID")]
    pub provider_id: String,
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub code: SecretString,
    /// The CLI's loopback listener, `http://localhost:PORT` (or 127.0.0.1,
    /// [::1]); any other redirect URI is refused.
    #[serde(rename = "redirectURL")]
    pub redirect_url: String,
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub code_verifier: SecretString,
    pub nonce: String,
    /// The sign-in asked the provider to authenticate the person again
    /// (`max_age=0`, `prompt=login`): the server then refuses an ID token
    /// whose `auth_time` is not recent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reauth: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordCredentials {
    pub name: String,
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub password: SecretString,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    #[serde(rename = "userID")]
    pub user_id: String,
    pub name: String,
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub access_key: SecretString,
    /// RFC 3339.
    pub expires: String,
}

// ---------------------------------------------------------------- users

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub name: String,
    /// Whether the user can sign in with a password.
    pub has_password: bool,
    pub created: String,
    pub updated: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserRequest {
    pub name: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::serialize_option"
    )]
    #[schema(value_type = Option<String>)]
    pub password: Option<SecretString>,
}

/// A new password. Users who sign in through an identity provider cannot
/// have one. A user setting their own password gives the current one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub password: SecretString,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::serialize_option"
    )]
    #[schema(value_type = Option<String>)]
    pub current_password: Option<SecretString>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct NameQuery {
    pub name: Option<String>,
    pub page: Option<u64>,
    pub limit: Option<u64>,
}

// ---------------------------------------------------------------- groups

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: String,
    pub name: String,
    pub total_users: u64,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateGroupUsersRequest {
    #[serde(default, rename = "usersToAdd")]
    pub users_to_add: Vec<String>,
    #[serde(default, rename = "usersToRemove")]
    pub users_to_remove: Vec<String>,
}

// ---------------------------------------------------------------- identities

/// A machine identity: a workload that logs in with its own OIDC JWT.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub created: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateIdentityRequest {
    pub name: String,
}

// ---------------------------------------------------------------- grants

/// The destination that stands for the infra server itself.
pub const INFRA_DESTINATION: &str = "infra";
/// The role on [`INFRA_DESTINATION`] that makes a server admin.
pub const ADMIN_ROLE: &str = "admin";
/// The role on [`INFRA_DESTINATION`] held by connectors.
pub const CONNECTOR_ROLE: &str = "connector";

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The subject's name, for display.
    pub subject_name: String,
    /// `DEST` or `DEST.NAMESPACE`.
    pub destination: String,
    pub role: String,
    pub created: String,
    pub created_by: String,
    /// Where the grant stands on its cluster, as its connector last said:
    /// `applied` or `pending` (absent: not known yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why a grant is pending, e.g. `namespace web does not exist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_message: Option<String>,
    /// How recently the person must have signed in at the identity
    /// provider for a cluster token under this grant, e.g. `15m` (absent:
    /// no bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_auth_age: Option<String>,
    /// Exec and attach sessions under this grant are recorded (and refused
    /// when they cannot be).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_sessions: bool,
}

/// `POST /api/grants/states`: a connector says where the grants on its
/// destination stand.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantStatesRequest {
    pub destination: String,
    pub states: Vec<GrantStateReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantStateReport {
    #[serde(rename = "grantID")]
    pub grant_id: String,
    /// `applied` or `pending`.
    pub state: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGrantRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub destination: String,
    pub role: String,
    /// Ask for a sign-in at the identity provider within this duration
    /// (e.g. `15m`, at most 24h) before a cluster token is issued under
    /// this grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_auth_age: Option<String>,
    /// Record exec and attach sessions under this grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_sessions: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct GrantQuery {
    pub user: Option<String>,
    pub group: Option<String>,
    pub identity: Option<String>,
    pub destination: Option<String>,
    pub role: Option<String>,
    /// With `user`: include grants the user holds through groups.
    pub show_inherited: Option<bool>,
    /// Long poll: answer only once the grants changed after this index (the
    /// `Last-Update-Index` header of an earlier answer), or after 30 s.
    pub last_update_index: Option<i64>,
    pub page: Option<u64>,
    pub limit: Option<u64>,
}

/// The response header carrying the grants' change counter.
pub const LAST_UPDATE_INDEX_HEADER: &str = "Last-Update-Index";

// ---------------------------------------------------------------- open streams checked

/// `POST /api/access/check`: a connector asks whether the people behind
/// its open streams (watches, exec, attach, port-forward, logs -f) still
/// have access, after its grants' long poll woke (a grant removed, a user
/// removed or out of a group, a key revoked). At most
/// [`MAX_ACCESS_CHECK_HOLDERS`] at once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessCheckRequest {
    /// The connector's destination.
    pub destination: String,
    pub holders: Vec<AccessHolder>,
}

pub const MAX_ACCESS_CHECK_HOLDERS: usize = 1_000;

/// Who holds a stream open, as their cluster token says.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct AccessHolder {
    /// The token's `sub`: the user's (or machine identity's) id.
    pub sub: String,
    /// The token's `sid`: the access key it was minted with.
    #[serde(default)]
    pub sid: Option<String>,
    /// The token's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The namespace the stream is in; none for cluster-wide requests.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// One answer per holder, in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessCheckResponse {
    pub results: Vec<AccessVerdict>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccessVerdict {
    pub allowed: bool,
    /// Why not (for the connector's log), when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The token itself is no good any more (its key revoked or expired,
    /// its user removed, a group it names lost): the connector refuses it
    /// for new requests too, not only the open streams.
    #[serde(default)]
    pub token_revoked: bool,
}

// ---------------------------------------------------------------- access explained

/// `GET /api/access/explain`: whose access, where.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct AccessExplainQuery {
    /// A user's name or id; absent: the caller.
    pub user: Option<String>,
    /// `DEST` or `DEST.NAMESPACE`.
    pub destination: String,
}

/// Why a user may do what on a destination: their groups and where each
/// membership came from, every grant that applies there with the RBAC
/// binding the connector makes for it, and what the cluster sees.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccessExplanation {
    /// `user` or `identity`.
    pub kind: String,
    pub id: String,
    pub name: String,
    /// As asked: `DEST` or `DEST.NAMESPACE`.
    pub destination: String,
    /// Whether a connector registered the destination.
    pub registered: bool,
    pub connected: bool,
    /// Every group the user is in (all of them ride in the cluster token).
    pub groups: Vec<GroupMembership>,
    /// The grants that apply on the destination: on `DEST` itself, and on
    /// `DEST.NS` (only those on the namespace asked when one is).
    pub grants: Vec<ExplainedGrant>,
    pub effective: EffectiveAccess,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GroupMembership {
    pub id: String,
    pub name: String,
    /// `admin` (added by an admin) or `provider` (synced from an identity
    /// provider's groups claim).
    pub source: String,
    /// The provider that asserted the membership.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "providerID"
    )]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
    /// Kubernetes reserves `system:` names: such a group never reaches a cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withheld: bool,
}

/// A grant as `GET /api/grants` shows it (state and, when grants carry it,
/// `maxAuthAge` included), and how it reaches the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExplainedGrant {
    #[serde(flatten)]
    pub grant: Grant,
    /// The group the grant reaches the user through (absent: held directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_group: Option<String>,
    /// The namespace it is scoped to (absent: cluster-wide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The binding the connector makes for it (absent: none is made, as for
    /// a `system:` name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<RbacBinding>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RbacBinding {
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The ClusterRole bound.
    pub role: String,
    /// `User` or `Group`.
    pub subject_kind: String,
    pub subject: String,
}

/// What the cluster sees: the connector impersonates `user` with `groups`
/// (the cluster token's name and groups; Kubernetes adds
/// `system:authenticated`), and the roles the bindings give, per namespace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveAccess {
    pub user: String,
    pub groups: Vec<String>,
    pub roles: Vec<NamespaceRoles>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRoles {
    /// Absent: every namespace (a cluster-wide grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub roles: Vec<String>,
}

// ---------------------------------------------------------------- destinations

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub id: String,
    pub name: String,
    pub url: String,
    /// PEM of the CA that signs the connector's serving certificate.
    pub ca: String,
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// The version of the connector that last registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_version: Option<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDestinationRequest {
    pub name: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub ca: String,
}

// ---------------------------------------------------------------- access keys

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccessKey {
    pub id: String,
    pub name: String,
    #[serde(rename = "userID")]
    pub user_id: String,
    pub user_name: String,
    pub created: String,
    pub expires: String,
    /// How long the key may go unused, e.g. `72h`.
    pub inactivity_timeout: String,
    /// When the key lapses if it stays unused.
    pub inactivity_deadline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
    /// A connector key's one destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAccessKeyRequest {
    /// The owner; defaults to the caller. Only admins may name another user.
    #[serde(default, rename = "userID", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Create the key for the built-in connector identity (admins only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub connector: bool,
    /// With `connector`: the one destination the key may register and
    /// serve (default: `name`). Using it for another answers 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A duration such as `720h` or `30d`; default 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
    /// A duration such as `72h`; default 3 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateAccessKeyResponse {
    pub id: String,
    pub name: String,
    #[serde(rename = "userID")]
    pub user_id: String,
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub access_key: SecretString,
    pub expires: String,
    /// A connector key's one destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyQuery {
    #[serde(rename = "userID")]
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub page: Option<u64>,
    pub limit: Option<u64>,
}

// ---------------------------------------------------------------- providers

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub url: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Where the CLI sends the browser.
    #[serde(rename = "authURL")]
    pub auth_url: String,
    /// The scopes to request.
    pub scopes: Vec<String>,
    /// The claim that names users; empty: the verified email.
    #[serde(default)]
    pub username_claim: String,
    /// Whether the provider offers refresh tokens (lists `offline_access`).
    /// Without them infra cannot re-check a session, which then lasts only
    /// as long as the sign-in's ID token.
    #[serde(default)]
    pub refresh_tokens: bool,
    pub created: String,
    pub updated: String,
}

/// The kinds of provider infra knows; all speak OpenID Connect.
pub const PROVIDER_KINDS: &[&str] = &[
    "oidc", "okta", "azure", "google", "gitlab", "dex", "keycloak",
];

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProviderRequest {
    pub name: String,
    #[serde(default = "default_provider_kind")]
    pub kind: String,
    pub url: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub client_secret: SecretString,
    /// PEM bundle of the provider's CA, when it is not publicly trusted.
    #[serde(default, rename = "caCert", skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The claim that names this provider's users, e.g. `preferred_username`
    /// (Dex, Keycloak, GitLab); default: the verified email. Never `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,
}

pub fn default_provider_kind() -> String {
    "oidc".to_string()
}

/// Partial update: fields left out keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateProviderRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, rename = "clientID", skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::serialize_option"
    )]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<SecretString>,
    /// PEM bundle of the provider's CA; an empty string goes back to the system roots.
    #[serde(default, rename = "caCert", skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The claim that names users; an empty string goes back to the verified email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,
}

// ---------------------------------------------------------------- audit

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: String,
    /// When it happened (the first time, when `count` is more than 1).
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    /// The client's address; for repeated failures and device codes, which
    /// are counted per source, the source (an IPv6 client's /64).
    pub remote_addr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// How many times it happened: the same failed login (or new device
    /// code) from the same source within an hour is one event.
    #[serde(default = "one")]
    pub count: u64,
    /// When it last happened (`time` when `count` is 1).
    #[serde(default)]
    pub last_time: String,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct AuditQuery {
    pub action: Option<String>,
    /// Only entries by this actor.
    pub actor: Option<String>,
    /// Only entries at or after this time: RFC 3339, a date (`2026-12-01`),
    /// or a date and time without a zone (`2026-12-01T10:00`, UTC).
    pub since: Option<String>,
    /// Only entries before this time (a date: up to its end), in the same
    /// forms as `since`.
    pub until: Option<String>,
    pub page: Option<u64>,
    pub limit: Option<u64>,
}

// ---------------------------------------------------------------- recorded sessions

/// A recorded exec or attach session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    pub destination: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// `exec` or `attach`.
    pub kind: String,
    /// The command, its words joined as a shell would read them.
    pub command: String,
    /// Who: the user's (or machine identity's) name, and id.
    pub user: String,
    pub user_id: String,
    pub client_address: String,
    pub started: String,
    /// Absent while the session runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// The command's exit code, when the cluster said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it ended when not by itself: `access revoked`, `recording limit`…
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub end_reason: String,
    /// The recording's size (asciicast v2 text).
    pub bytes: u64,
}

/// `POST /api/sessions`: a connector starts recording a session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSessionRequest {
    pub destination: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub kind: String,
    pub command: String,
    /// The token's `sub` and `name`.
    pub user_id: String,
    pub user: String,
    pub client_address: String,
}

/// `POST /api/sessions/{id}/end`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndSessionRequest {
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub reason: String,
}

/// `POST /api/sessions/{id}/chunks?seq=N`: the next piece of the recording.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct SessionChunkQuery {
    pub seq: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct SessionQuery {
    /// A user's name or id (admins).
    pub user: Option<String>,
    pub destination: Option<String>,
    pub page: Option<u64>,
    pub limit: Option<u64>,
}

/// The media type of a recording.
pub const ASCIICAST_MEDIA_TYPE: &str = "application/x-asciicast";

/// How large a recording may grow by default (`--max-session-bytes`).
pub const DEFAULT_MAX_SESSION_BYTES: u64 = 64 * 1024 * 1024;

// ---------------------------------------------------------------- cluster tokens

/// `POST /api/tokens`: a short-lived token for one destination.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The destination (cluster) name, without a namespace.
    pub destination: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateTokenResponse {
    /// An ES256 JWT: `iss` the server, `aud` the destination, `sub` the
    /// user's id, `name`, `groups`, `iat`, `exp`; `kid` in the header.
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub token: SecretString,
    /// RFC 3339.
    pub expires: String,
}

// ---------------------------------------------------------------- machine identities: oidc-auth

/// Default lifetime of a machine identity's access token: 2 hours.
pub const DEFAULT_ACCESS_TOKEN_TTL: u64 = 7200;
/// Default limit on renewals, counted from login: 30 days.
pub const DEFAULT_ACCESS_TOKEN_MAX_TTL: u64 = 30 * 86_400;
/// Default trusted IPs: everywhere.
pub const DEFAULT_TRUSTED_IPS: &[&str] = &["0.0.0.0/0", "::/0"];

/// `PUT /api/identities/{id}/oidc-auth`: how a machine identity logs in
/// with its workload's OIDC JWT. Replaces the whole configuration; fields
/// left out take their defaults. `subject`, `audiences` and the values of
/// `claims` are glob patterns: `*` any run of characters within one segment
/// (never `/` or `:`), `**` any run across `/` (never `:`), `?` one
/// character other than `/` and `:`; `***` is refused. The configuration
/// must bind a workload: `subject`, or an identifying claim (not `ref`,
/// `environment`, `aud`, …), must hold a letter or digit outside the
/// wildcards; otherwise it is refused (400 naming `subject` and `claims`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcAuthRequest {
    /// The issuer's base URL (`/.well-known/openid-configuration` is
    /// appended) or the full URL of its discovery document.
    #[serde(rename = "discoveryURL")]
    pub discovery_url: String,
    /// What the JWT's `iss` must be, exactly.
    pub issuer: String,
    /// PEM bundle of the CA that signs the issuer's certificate, when it is
    /// not publicly trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Pattern the JWT's `sub` must match.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// Patterns one of which one of the JWT's `aud` must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Claim name → pattern; a list-valued claim matches if one element does.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub claims: std::collections::BTreeMap<String, String>,
    /// Seconds an access token lasts (and each renewal adds); default 7200.
    #[serde(
        default,
        rename = "accessTokenTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_token_ttl: Option<u64>,
    /// Seconds from login past which no renewal reaches; default 30 days.
    #[serde(
        default,
        rename = "accessTokenMaxTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_token_max_ttl: Option<u64>,
    /// How many requests an access token may make; 0 (default): unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_max_uses: Option<u64>,
    /// CIDRs the token may be used (and the login made) from; default everywhere.
    #[serde(
        default,
        rename = "accessTokenTrustedIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_token_trusted_ips: Option<Vec<String>>,
}

/// A machine identity's oidc-auth configuration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OidcAuth {
    #[serde(rename = "identityID")]
    pub identity_id: String,
    pub identity_name: String,
    #[serde(rename = "discoveryURL")]
    pub discovery_url: String,
    pub issuer: String,
    #[serde(default)]
    pub ca_cert: String,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
    #[serde(rename = "accessTokenTTL")]
    pub access_token_ttl: u64,
    #[serde(rename = "accessTokenMaxTTL")]
    pub access_token_max_ttl: u64,
    pub access_token_max_uses: u64,
    #[serde(rename = "accessTokenTrustedIPs")]
    pub access_token_trusted_ips: Vec<String>,
    pub created: String,
    pub updated: String,
}

/// `POST /api/v1/auth/oidc-auth/login`: a workload's JWT in, an access token out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcAuthLoginRequest {
    /// The machine identity's id or name.
    pub identity_id: String,
    /// The JWT the workload's platform gave it (GitLab CI's `id_tokens`,
    /// a SPIFFE JWT-SVID, …).
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub jwt: SecretString,
}

/// A machine identity's access token: use it as `Authorization: Bearer`
/// (or `INFRA_ACCESS_KEY`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineAccessToken {
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub access_token: SecretString,
    /// Seconds until it expires, unless renewed.
    pub expires_in: u64,
    /// Seconds from login past which it cannot be renewed.
    #[serde(rename = "accessTokenMaxTTL")]
    pub access_token_max_ttl: u64,
    /// Always `Bearer`.
    pub token_type: String,
    pub identity_id: String,
    pub identity_name: String,
}

/// `POST /api/v1/auth/token/renew` and `/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenRequest {
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub access_token: SecretString,
}

// ---------------------------------------------------------------- device sign-in

/// `POST /api/device`: start a sign-in for a machine without a browser
/// (RFC 8628's device authorization request, through the server's own web
/// sign-in). No authentication.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceAuthorizationRequest {
    /// The identity provider to sign in with; may be left out when the
    /// server has only one.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Ask the provider to authenticate the person again (`max_age=0`,
    /// `prompt=login`), as `infra login --reauth` does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reauth: bool,
}

/// RFC 8628's device authorization response, in the API's camelCase.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceAuthorization {
    /// The secret the device polls with; only its SHA-256 is stored.
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub device_code: SecretString,
    /// What the person types at `verificationURI`, e.g. `WDJB-MJHT`.
    pub user_code: String,
    /// The page to open on any device: `https://SERVER/device`.
    #[serde(rename = "verificationURI")]
    pub verification_uri: String,
    /// The same page with the user code filled in (for a QR code or a link).
    #[serde(rename = "verificationURIComplete")]
    pub verification_uri_complete: String,
    /// Seconds until both codes expire.
    pub expires_in: u64,
    /// Seconds to wait between polls of `POST /api/device/status`.
    pub interval: u64,
}

/// `POST /api/device/status`: has the person approved yet?
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceStatusRequest {
    #[serde(serialize_with = "secret::serialize")]
    #[schema(value_type = String)]
    pub device_code: SecretString,
}

/// Where a device sign-in stands, named as in RFC 8628 section 3.5 (and
/// RFC 6749's `invalid_grant`). Every answer about a device code is a 200
/// with one of these; HTTP errors are kept for malformed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Nobody has approved or denied yet: poll again after `interval`.
    AuthorizationPending,
    /// Polled sooner than `interval` allows: the interval grew by 5 seconds
    /// (the new value is in `interval`) for this and every later poll.
    SlowDown,
    /// Approved: the answer carries a new access key, issued now, once.
    Approved,
    /// The person denied the sign-in.
    AccessDenied,
    /// The codes expired before the sign-in was approved.
    ExpiredToken,
    /// The device code is unknown, or was already used.
    InvalidGrant,
}

/// The answer of `POST /api/device/status`. With `status: approved` it also
/// holds what `POST /api/login` returns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatusResponse {
    pub status: DeviceStatus,
    /// What happened, for a person (empty while pending).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Seconds to wait before the next poll.
    pub interval: u64,
    #[serde(default, rename = "userID", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret::serialize_option"
    )]
    #[schema(value_type = Option<String>)]
    pub access_key: Option<SecretString>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

#[cfg(test)]
mod clip_tests {
    use super::clip;

    #[test]
    fn texts_are_clipped_at_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(600);
        let c = clip(&long, 256);
        assert!(c.len() <= 256 && c.ends_with('…'), "{}", c.len());
        assert!(c.trim_end_matches('…').chars().all(|ch| ch == 'é'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_short_and_read_back() {
        for (secs, text) in [
            (900, "15m"),
            (5400, "1h30m"),
            (90, "1m30s"),
            (86_400, "1d"),
            (0, "0s"),
        ] {
            assert_eq!(format_duration_secs(secs), text);
            assert_eq!(parse_duration(text).unwrap().as_secs(), secs);
        }
    }

    const SECRET: &str = "Sup3rS3cretV4lue";

    /// Every request and response that carries a secret: `Debug` (a log
    /// line, an error) never shows it, while the wire still carries it.
    #[test]
    fn secrets_stay_out_of_debug_but_go_on_the_wire() {
        let s = || SecretString::from(SECRET);
        let shown: Vec<(String, String)> = vec![
            dbg_json(&LoginRequest {
                access_key: Some(s()),
                ..Default::default()
            }),
            dbg_json(&LoginRequest {
                password_credentials: Some(PasswordCredentials {
                    name: "a".into(),
                    password: s(),
                }),
                ..Default::default()
            }),
            dbg_json(&OidcLogin {
                provider_id: "p".into(),
                code: s(),
                redirect_url: "http://localhost:8301".into(),
                code_verifier: s(),
                nonce: "n".into(),
                reauth: false,
            }),
            dbg_json(&LoginResponse {
                user_id: "u".into(),
                name: "a".into(),
                access_key: s(),
                expires: "e".into(),
            }),
            dbg_json(&CreateUserRequest {
                name: "a".into(),
                password: Some(s()),
            }),
            dbg_json(&UpdateUserRequest {
                password: s(),
                current_password: Some(s()),
            }),
            dbg_json(&CreateAccessKeyResponse {
                id: "i".into(),
                name: "n".into(),
                user_id: "u".into(),
                access_key: s(),
                expires: "e".into(),
                destination: None,
            }),
            dbg_json(&CreateProviderRequest {
                name: "n".into(),
                kind: "oidc".into(),
                url: "u".into(),
                client_id: "c".into(),
                client_secret: s(),
                ca_cert: None,
                username_claim: None,
            }),
            dbg_json(&UpdateProviderRequest {
                client_secret: Some(s()),
                ..Default::default()
            }),
            dbg_json(&CreateTokenResponse {
                token: s(),
                expires: "e".into(),
            }),
            dbg_json(&OidcAuthLoginRequest {
                identity_id: "i".into(),
                jwt: s(),
            }),
            dbg_json(&AccessTokenRequest { access_token: s() }),
            dbg_json(&DeviceStatusRequest { device_code: s() }),
            dbg_json(&DeviceStatusResponse {
                status: DeviceStatus::Approved,
                message: String::new(),
                interval: 5,
                user_id: None,
                name: None,
                access_key: Some(s()),
                expires: None,
            }),
        ];
        for (debug, json) in shown {
            assert!(!debug.contains(SECRET), "{debug}");
            assert!(json.contains(SECRET), "the wire carries it: {json}");
        }
        // And back: a secret read from the wire is the same secret.
        let back: LoginRequest =
            serde_json::from_str(&format!(r#"{{"accessKey":"{SECRET}"}}"#)).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(back.access_key.unwrap().expose_secret(), SECRET);
    }

    fn dbg_json<T: std::fmt::Debug + Serialize>(v: &T) -> (String, String) {
        (format!("{v:?} {v:#?}"), serde_json::to_string(v).unwrap())
    }

    #[test]
    fn reserved_names() {
        for n in ["system:masters", "SYSTEM:masters", " system:x", "System:"] {
            assert!(is_reserved_name(n), "{n}");
        }
        for n in ["system", "systems:x", "my-system:x", "", "sys"] {
            assert!(!is_reserved_name(n), "{n}");
        }
    }

    #[test]
    fn warning_headers_round_trip_as_kubernetes_writes_them() {
        use super::{warning_text, warning_value};
        for text in [r#"eidt is "odd""#, r"back\slash", "plain"] {
            assert_eq!(warning_text(&warning_value(text)).as_deref(), Some(text));
        }
        assert_eq!(
            warning_text(r#"299 - "eidt is \"odd\"""#).as_deref(),
            Some(r#"eidt is "odd""#)
        );
        assert_eq!(warning_text("199 - \"other\""), None);
        assert_eq!(
            warning_text("299 - \"a\u{1b}[31mb\"").as_deref(),
            Some("a[31mb")
        );
    }
}
