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
    let doc_url = format!("{url}/.well-known/openid-configuration");
    let resp = http
        .get(&doc_url)
        .send()
        .await
        .map_err(|e| format!("cannot fetch {doc_url}: {}", error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!(
            "{doc_url} answered {}: is {url} the provider's issuer URL?",
            resp.status()
        ));
    }
    let doc: Document = resp
        .json()
        .await
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
