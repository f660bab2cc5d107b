//! What the server fetches from identity providers and workload issuers,
//! all through one path: the discovery document, then the JWKS it names,
//! kept for a few minutes. A token naming a key we do not have makes us
//! fetch the keys again, but no more often than every few seconds, so
//! made-up `kid`s cannot hammer an issuer; a login whose keys are known
//! fetches nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Clock skew allowed on a token's `exp`, `nbf` and `iat`.
pub use crate::api::CLOCK_LEEWAY_SECS;

/// How long an issuer's document and keys are used before they are
/// fetched again.
const LIFETIME: Duration = Duration::from_secs(300);
/// A token naming an unknown key makes us fetch again, but no more often
/// than this.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Asymmetric signing algorithms only: never `none`, never an HMAC (whose
/// "key" anyone holding the public JWKS would know). Both the providers'
/// ID tokens and the workloads' JWTs are held to this list.
pub const ALLOWED_ALGS: [&str; 10] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];

/// One issuer as last fetched.
#[derive(Clone)]
pub struct Issuer {
    /// The discovery document.
    pub document: Arc<Value>,
    /// The JWKS it names (`{"keys": [...]}`).
    pub jwks: Arc<Value>,
}

struct Cached {
    issuer: Issuer,
    fetched: Instant,
    /// When a token with an unknown key last made us fetch.
    refreshed: Option<Instant>,
}

/// Issuers' documents and keys, by discovery URL and CA.
pub struct IssuerCache {
    entries: Mutex<HashMap<String, Cached>>,
    /// Counts the fetches (the metrics' `infra_issuer_fetches_total`).
    fetches: prometheus_client::metrics::counter::Counter,
}

impl IssuerCache {
    pub fn new(fetches: prometheus_client::metrics::counter::Counter) -> IssuerCache {
        IssuerCache {
            entries: Mutex::default(),
            fetches,
        }
    }

    /// The issuer at `url` (its base URL or its document's URL), reached
    /// through `ca_pem` (empty: the system's roots): from the cache while
    /// fresh; with `refresh` (a token named a key we do not have), fetched
    /// again unless that was done moments ago.
    pub async fn get(&self, url: &str, ca_pem: &str, refresh: bool) -> Result<Issuer, String> {
        let id = format!("{url}\n{ca_pem}");
        let mut last_refresh = None;
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = entries.get(&id) {
                last_refresh = c.refreshed;
                let fresh = c.fetched.elapsed() < LIFETIME;
                let may_refresh = c.refreshed.is_none_or(|t| t.elapsed() >= REFRESH_INTERVAL);
                if fresh && (!refresh || !may_refresh) {
                    return Ok(c.issuer.clone());
                }
            }
        }
        let http = super::oidc::provider_http(ca_pem).map_err(|e| e.to_string())?;
        let document = fetch_document(&http, url).await?;
        let jwks_url = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| {
                format!(
                    "the discovery document {} has no jwks_uri",
                    document_url(url)
                )
            })?
            .to_string();
        let jwks: Value = get_json(&http, &jwks_url, "the issuer's JWKS").await?;
        if !jwks.get("keys").is_some_and(Value::is_array) {
            return Err(format!("{jwks_url} is not a JWKS: it has no \"keys\" list"));
        }
        self.fetches.inc();
        let issuer = Issuer {
            document: Arc::new(document),
            jwks: Arc::new(jwks),
        };
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Forget issuers nobody signed in through for a while.
        entries.retain(|_, c| c.fetched.elapsed() < LIFETIME * 4);
        entries.insert(
            id,
            Cached {
                issuer: issuer.clone(),
                fetched: now,
                refreshed: if refresh { Some(now) } else { last_refresh },
            },
        );
        Ok(issuer)
    }
}

/// The discovery document's URL: a URL that already names the document
/// (either spelling of `openid-configuration`) as given, else the base URL
/// with `/.well-known/openid-configuration` appended.
pub fn document_url(url: &str) -> String {
    let url = url.trim();
    let path = url.split(['?', '#']).next().unwrap_or(url);
    if path.ends_with("/.well-known/openid-configuration")
        || path.ends_with("/.well-known/openid_configuration")
    {
        url.to_string()
    } else {
        format!(
            "{}/.well-known/openid-configuration",
            url.trim_end_matches('/')
        )
    }
}

/// Fetches an issuer's discovery document (a JSON object).
pub async fn fetch_document(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let doc_url = document_url(url);
    let doc = get_json(http, &doc_url, "the discovery document").await?;
    if !doc.is_object() {
        return Err(format!("{doc_url} is not an OpenID discovery document"));
    }
    Ok(doc)
}

async fn get_json(http: &reqwest::Client, url: &str, what: &str) -> Result<Value, String> {
    let resp = http.get(url).send().await.map_err(|e| {
        format!(
            "cannot fetch {what} {url}: {} (if the issuer's certificate is signed by a private \
             CA, give that CA: `infra providers add/edit --ca-file`, `infra identities oidc-auth \
             set --ca-cert`)",
            super::oidc::error_chain(&e)
        )
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{what} {url} answered {status}"));
    }
    resp.json()
        .await
        .map_err(|e| format!("{what} {url} is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls() {
        assert_eq!(
            document_url("https://gitlab.com"),
            "https://gitlab.com/.well-known/openid-configuration"
        );
        assert_eq!(
            document_url("https://idp.example/realm/"),
            "https://idp.example/realm/.well-known/openid-configuration"
        );
        assert_eq!(
            document_url("https://x/.well-known/openid-configuration"),
            "https://x/.well-known/openid-configuration"
        );
        assert_eq!(
            document_url("https://x/.well-known/openid_configuration"),
            "https://x/.well-known/openid_configuration"
        );
    }
}
