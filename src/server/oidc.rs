//! Identity providers: discovery, and what the server needs to know of one.

use serde::Deserialize;

/// What a provider's discovery document must tell us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    pub auth_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub jwks_url: String,
    /// The scopes to request: `openid email profile`, plus `groups` and
    /// `offline_access` where the provider lists them.
    pub scopes: Vec<String>,
}

#[derive(Deserialize)]
struct Document {
    issuer: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    jwks_uri: Option<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
}

/// `okta.example.com` → `https://okta.example.com`; no trailing slash.
pub fn normalize_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        return Err(
            "is empty: give the provider's issuer URL, e.g. https://example.okta.com".into(),
        );
    }
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    let parsed = url::Url::parse(&full).map_err(|e| format!("{full:?} is not a URL: {e}"))?;
    if parsed.scheme() != "https" && parsed.scheme() != "http" {
        return Err(format!("{full:?} must be an https URL"));
    }
    if parsed.host_str().is_none() {
        return Err(format!("{full:?} has no host"));
    }
    Ok(full)
}

/// Fetches and checks `<url>/.well-known/openid-configuration`.
pub async fn discover(http: &reqwest::Client, url: &str) -> Result<Discovery, String> {
    let doc_url = super::issuers::document_url(url);
    let doc = super::issuers::fetch_document(http, url)
        .await
        .map_err(|e| format!("{e}: is {url} the provider's issuer URL?"))?;
    let doc: Document = serde_json::from_value(doc)
        .map_err(|e| format!("{doc_url} is not an OpenID discovery document: {e}"))?;
    let mut missing = Vec::new();
    let mut need = |v: Option<String>, name: &'static str| {
        let v = v.filter(|s| !s.trim().is_empty());
        if v.is_none() {
            missing.push(name);
        }
        v.unwrap_or_default()
    };
    let issuer = need(doc.issuer, "issuer");
    let auth_url = need(doc.authorization_endpoint, "authorization_endpoint");
    let token_url = need(doc.token_endpoint, "token_endpoint");
    let userinfo_url = need(doc.userinfo_endpoint, "userinfo_endpoint");
    let jwks_url = need(doc.jwks_uri, "jwks_uri");
    if !missing.is_empty() {
        return Err(format!(
            "the discovery document at {doc_url} lacks {}; infra needs a provider with \
             authorization, token, JWKS and UserInfo endpoints",
            missing.join(", ")
        ));
    }
    let mut scopes: Vec<String> = ["openid", "email", "profile"].map(String::from).to_vec();
    for extra in ["groups", "offline_access"] {
        if doc.scopes_supported.iter().any(|s| s == extra) {
            scopes.push(extra.to_string());
        }
    }
    Ok(Discovery {
        issuer,
        auth_url,
        token_url,
        userinfo_url,
        jwks_url,
        scopes,
    })
}

/// An error with its causes, for one-line messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::normalize_url;

    #[test]
    fn bare_domain_means_https() {
        assert_eq!(
            normalize_url("example.okta.com/").unwrap(),
            "https://example.okta.com"
        );
        assert_eq!(
            normalize_url("http://127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert!(normalize_url("").is_err());
        assert!(normalize_url("ftp://x").is_err());
    }
}

// ------------------------------------------------------------------ login

use openidconnect::core::{
    CoreClient, CoreGenderClaim, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, Nonce,
    OAuth2TokenResponse, PkceCodeVerifier, RedirectUrl, RefreshToken, TokenResponse,
    UserInfoClaims,
};
use secrecy::{ExposeSecret, SecretString};

use super::issuers::{ALLOWED_ALGS, CLOCK_LEEWAY_SECS, IssuerCache};

/// The algorithms ID tokens may be signed with, as openidconnect names them.
fn allowed_algs() -> Vec<CoreJwsSigningAlgorithm> {
    ALLOWED_ALGS
        .iter()
        .filter_map(|a| serde_json::from_value(serde_json::Value::String(a.to_string())).ok())
        .collect()
}

/// The claims OpenID Connect Core does not define (`groups`, and whatever
/// an admin names with `--username-claim`), as UserInfo sends them.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for ExtraClaims {}

impl ExtraClaims {
    fn groups(&self) -> Option<Vec<String>> {
        groups_of(self.rest.get("groups")?)
    }
}

fn groups_of(v: &serde_json::Value) -> Option<Vec<String>> {
    let items = v.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
    )
}

/// Who the provider says signed in: the account (`subject`), and the
/// claims that may name it.
#[derive(Debug, Clone)]
pub struct ProviderIdentity {
    pub subject: String,
    /// The address, as the provider gave it (verified or not).
    pub email: String,
    /// Whether the provider vouches for `email` (`email_verified: true`).
    pub email_verified: bool,
    pub groups: Option<Vec<String>>,
    pub refresh_token: Option<SecretString>,
    /// The ID token's `exp` (Unix seconds): how long a session without a
    /// refresh token may last.
    pub id_token_expires_at: i64,
    /// The ID token's `auth_time` (Unix seconds): when the person last
    /// authenticated at the provider; `None` when the provider did not say.
    pub auth_time: Option<i64>,
    /// Every claim of the ID token and, where it lacks one, of UserInfo.
    claims: serde_json::Map<String, serde_json::Value>,
}

/// Why no user name could be taken from a sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoUserName(pub String);

impl ProviderIdentity {
    /// The infra user name this account gets at its first sign-in: its
    /// verified email, or the claim the admin named for the provider
    /// (`--username-claim`). Never the display name: anyone can choose one.
    pub fn user_name(&self, username_claim: &str, provider: &str) -> Result<String, NoUserName> {
        let claim = username_claim.trim();
        let name = if claim.is_empty() || claim == "email" {
            if self.email.trim().is_empty() {
                return Err(NoUserName(format!(
                    "{provider} sent no email claim, and infra names users by their verified \
                     email: the sign-in must ask for the `email` scope (or an admin names another \
                     claim with `infra providers edit {provider} --username-claim CLAIM`)"
                )));
            }
            if !self.email_verified {
                return Err(NoUserName(format!(
                    "{provider} does not vouch for the email {:?} (email_verified is not true), \
                     and infra names users only by a verified email; verify the address at the \
                     provider, or an admin names another claim with `infra providers edit \
                     {provider} --username-claim CLAIM`",
                    self.email
                )));
            }
            // One address, one name: providers keep the case people typed.
            self.email.trim().to_lowercase()
        } else {
            let value = match self.claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.trim().to_string(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            if value.is_empty() {
                return Err(NoUserName(format!(
                    "{provider} sent no `{claim}` claim, which names its users (its \
                     --username-claim); the sign-in must ask for the scope that releases it \
                     (`profile` for preferred_username), or the provider must be set up to send it"
                )));
            }
            value
        };
        if name.len() > 256 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(NoUserName(format!(
                "the user name {provider} gives ({name:?}) holds blanks or control characters, or \
                 is too long"
            )));
        }
        Ok(name)
    }
}

/// Why a login through a provider failed; shown to the person.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider or its answer cannot be trusted or used (401).
    #[error("{0}")]
    Rejected(String),
    /// The provider could not be reached (502).
    #[error("{0}")]
    Unreachable(String),
    /// The provider asked us to slow down (429).
    #[error("{0}")]
    RateLimited(String),
}

/// What the provider needs from us: its stored configuration.
pub struct ProviderConfig<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a SecretString,
    pub ca_pem: &'a str,
    /// Where the provider's discovery document and keys are kept.
    pub issuers: &'a IssuerCache,
}

/// An HTTP client for talking to one provider: its CA, no redirects (as
/// OAuth 2 requires), bounded time.
pub fn provider_http(ca_pem: &str) -> Result<reqwest::Client, OidcError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("infra/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15));
    if !ca_pem.trim().is_empty() {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).map_err(|e| {
            OidcError::Rejected(format!("the provider's CA bundle is not PEM: {e}"))
        })?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| OidcError::Unreachable(format!("cannot build an HTTP client: {e}")))
}

/// The provider's metadata and keys, from the server's issuer cache
/// (`refresh`: fetched again, because a token named a key we lack).
async fn discover_metadata(
    p: &ProviderConfig<'_>,
    refresh: bool,
) -> Result<CoreProviderMetadata, OidcError> {
    let issuer = p
        .issuers
        .get(p.issuer, p.ca_pem, refresh)
        .await
        .map_err(|e| {
            OidcError::Unreachable(format!(
                "cannot read the discovery document of {}: {e}",
                p.issuer
            ))
        })?;
    let metadata: CoreProviderMetadata = serde_json::from_value((*issuer.document).clone())
        .map_err(|e| {
            OidcError::Rejected(format!(
                "the discovery document of {} is not valid: {e}",
                p.issuer
            ))
        })?;
    // The document must be the issuer's own (OpenID Connect Discovery §4.3).
    if metadata.issuer().as_str().trim_end_matches('/') != p.issuer.trim_end_matches('/') {
        return Err(OidcError::Rejected(format!(
            "the discovery document of {} names another issuer ({})",
            p.issuer,
            metadata.issuer().as_str()
        )));
    }
    let jwks = serde_json::from_value((*issuer.jwks).clone())
        .map_err(|e| OidcError::Rejected(format!("the JWKS of {} is not valid: {e}", p.issuer)))?;
    Ok(metadata.set_jwks(jwks))
}

fn core_client(p: &ProviderConfig<'_>, metadata: CoreProviderMetadata) -> CoreClientFromMetadata {
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(p.client_id.to_string()),
        Some(ClientSecret::new(
            p.client_secret.expose_secret().to_string(),
        )),
    )
}

type CoreClientFromMetadata = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// Exchanges an authorization code (with its PKCE verifier) at the
/// provider, verifies the ID token, and reads UserInfo.
pub async fn exchange_code(
    p: &ProviderConfig<'_>,
    code: &str,
    redirect_url: &str,
    code_verifier: &str,
    nonce: &str,
) -> Result<ProviderIdentity, OidcError> {
    let http = provider_http(p.ca_pem)?;
    let redirect = RedirectUrl::new(redirect_url.to_string())
        .map_err(|e| OidcError::Rejected(format!("redirectURL is not a URL: {e}")))?;
    let mut client =
        core_client(p, discover_metadata(p, false).await?).set_redirect_uri(redirect.clone());
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|e| OidcError::Rejected(format!("the provider has no token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(code_verifier.to_string()))
        .request_async(&http)
        .await
        .map_err(token_error)?;
    let id_token = token
        .id_token()
        .ok_or_else(|| OidcError::Rejected("the provider returned no ID token".into()))?;
    let nonce = Nonce::new(nonce.to_string());
    let verify = |client: &CoreClientFromMetadata| {
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(allowed_algs())
            .set_time_fn(|| {
                chrono::DateTime::from_timestamp_millis(crate::clock::now_millis())
                    .unwrap_or_else(chrono::Utc::now)
                    - chrono::Duration::seconds(CLOCK_LEEWAY_SECS as i64)
            });
        id_token.claims(&verifier, &nonce).map(|c| {
            (
                c.subject().clone(),
                c.expiration().timestamp(),
                c.auth_time().map(|t| t.timestamp()),
            )
        })
    };
    let verified = match verify(&client) {
        // The provider may have rotated its keys since we fetched them.
        Err(openidconnect::ClaimsVerificationError::SignatureVerification(
            openidconnect::SignatureVerificationError::NoMatchingKey,
        )) => {
            client = core_client(p, discover_metadata(p, true).await?).set_redirect_uri(redirect);
            verify(&client)
        }
        other => other,
    };
    let (subject, id_token_expires_at, auth_time) =
        verified.map_err(|e| OidcError::Rejected(format!("the ID token is not valid: {e}")))?;
    let id_claims = verified_payload(&id_token.to_string()).unwrap_or_default();

    let userinfo: UserInfoClaims<ExtraClaims, CoreGenderClaim> = client
        .user_info(token.access_token().clone(), Some(subject.clone()))
        .map_err(|e| OidcError::Rejected(format!("the provider has no UserInfo endpoint: {e}")))?
        .request_async(&http)
        .await
        .map_err(|e| userinfo_error(&e))?;
    // The claims of UserInfo, under those of the (signed) ID token.
    let mut all = userinfo.additional_claims().rest.clone();
    let mut put = |k: &str, v: Option<serde_json::Value>| {
        if let Some(v) = v {
            all.insert(k.to_string(), v);
        }
    };
    put(
        "email",
        userinfo.email().map(|e| serde_json::json!(e.as_str())),
    );
    put(
        "email_verified",
        userinfo.email_verified().map(|v| serde_json::json!(v)),
    );
    put(
        "preferred_username",
        userinfo
            .preferred_username()
            .map(|u| serde_json::json!(u.as_str())),
    );
    put(
        "nickname",
        userinfo
            .nickname()
            .and_then(|n| n.get(None))
            .map(|n| serde_json::json!(n.as_str())),
    );
    put("sub", Some(serde_json::json!(subject.as_str())));
    for (k, v) in &id_claims {
        all.insert(k.clone(), v.clone());
    }
    // The address and whether it is vouched for come from one source: the
    // ID token if it has an email, else UserInfo.
    let source = if id_claims.contains_key("email") {
        &id_claims
    } else {
        &all
    };
    let email = source
        .get("email")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let email_verified = matches!(
        source.get("email_verified"),
        Some(serde_json::Value::Bool(true))
    ) || matches!(source.get("email_verified"), Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("true"));
    Ok(ProviderIdentity {
        subject: subject.to_string(),
        email,
        email_verified,
        groups: userinfo
            .additional_claims()
            .groups()
            .or_else(|| id_claims.get("groups").and_then(groups_of)),
        refresh_token: token
            .refresh_token()
            .map(|r| SecretString::from(r.secret().to_string())),
        id_token_expires_at,
        auth_time,
        claims: all,
    })
}

/// The outcome of a re-check with the provider.
pub struct Refreshed {
    pub groups: Option<Vec<String>>,
    pub refresh_token: Option<SecretString>,
}

/// Refreshes the provider token and calls UserInfo. `Rejected` means the
/// provider ended the session (invalid_grant, 401).
pub async fn refresh(
    p: &ProviderConfig<'_>,
    refresh_token: &SecretString,
    subject: &str,
) -> Result<Refreshed, OidcError> {
    let http = provider_http(p.ca_pem)?;
    let client = core_client(p, discover_metadata(p, false).await?);
    let rt = RefreshToken::new(refresh_token.expose_secret().to_string());
    let token = client
        .exchange_refresh_token(&rt)
        .map_err(|e| OidcError::Rejected(format!("the provider has no token endpoint: {e}")))?
        .request_async(&http)
        .await
        .map_err(token_error)?;
    let userinfo: UserInfoClaims<ExtraClaims, CoreGenderClaim> = client
        .user_info(
            AccessToken::new(token.access_token().secret().clone()),
            // UserInfo must be about the account that signed in.
            Some(openidconnect::SubjectIdentifier::new(subject.to_string())),
        )
        .map_err(|e| OidcError::Rejected(format!("the provider has no UserInfo endpoint: {e}")))?
        .request_async(&http)
        .await
        .map_err(|e| userinfo_error(&e))?;
    Ok(Refreshed {
        groups: userinfo.additional_claims().groups(),
        refresh_token: token
            .refresh_token()
            .map(|r| SecretString::from(r.secret().to_string())),
    })
}

/// The claims of an ID token whose signature was already verified.
fn verified_payload(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn token_error<E: std::error::Error + 'static>(
    e: openidconnect::RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> OidcError {
    use openidconnect::RequestTokenError as R;
    use openidconnect::core::CoreErrorResponseType as T;
    match e {
        // The provider says it cannot answer now: not a refusal of the account.
        R::ServerResponse(r) if matches!(r.error(), T::Extension(x) if x == "server_error" || x == "temporarily_unavailable") => {
            OidcError::Unreachable(format!(
                "the provider's token endpoint is failing: {}",
                r.error()
            ))
        }
        R::ServerResponse(r) => {
            let mut msg = format!("the provider refused: {}", r.error());
            if let Some(d) = r.error_description() {
                msg.push_str(&format!(": {d}"));
            }
            OidcError::Rejected(msg)
        }
        R::Request(e) => OidcError::Unreachable(format!(
            "cannot reach the provider's token endpoint: {}",
            error_chain(&e)
        )),
        // No OAuth answer at all (an outage page, a proxy's 503): the
        // provider is not working, which says nothing about the account.
        R::Parse(e, _) => OidcError::Unreachable(format!(
            "the provider's token endpoint did not answer as OAuth 2 says: {e}"
        )),
        R::Other(e) => OidcError::Unreachable(format!("the token request failed: {e}")),
    }
}

fn userinfo_error<E: std::error::Error + 'static>(
    e: &openidconnect::UserInfoError<E>,
) -> OidcError {
    use openidconnect::UserInfoError as U;
    match e {
        U::Request(inner) => OidcError::Unreachable(format!(
            "cannot reach the provider's UserInfo endpoint: {}",
            error_chain(inner)
        )),
        U::Response(status, _, _) if status.as_u16() == 401 || status.as_u16() == 403 => {
            OidcError::Rejected(format!(
                "the provider's UserInfo refused the token ({status})"
            ))
        }
        U::Response(status, _, _) if status.as_u16() == 429 => {
            OidcError::RateLimited(format!("the provider's UserInfo answered {status}"))
        }
        U::Response(status, _, _) if status.is_server_error() => {
            OidcError::Unreachable(format!("the provider's UserInfo answered {status}"))
        }
        other => OidcError::Rejected(format!("UserInfo failed: {}", error_chain(other))),
    }
}
