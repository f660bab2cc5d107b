//! Verifying the cluster tokens users present: ES256 JWTs signed by the
//! server. Keys come from the server's JWKS, cached, and fetched again when
//! a token names a `kid` we do not know (at most once every few seconds, so
//! a stream of forged `kid`s cannot make us hammer the server).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde::Deserialize;

/// Leeway for `exp` and `nbf`, for clock skew.
pub use crate::api::CLOCK_LEEWAY_SECS as LEEWAY_SECS;
/// How often an unknown `kid` may trigger a JWKS fetch.
const REFETCH_EVERY: Duration = Duration::from_secs(5);

/// The claims the connector uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The access key the token was minted with (tokens of older servers
    /// have none).
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(default)]
    pub jti: String,
}

/// How many distinct dropped group names are logged (each once).
const LOGGED_DROPS_CAPACITY: usize = 1_000;

/// How many verified tokens to remember. A user's kubectl presents the same
/// token for minutes, and checking an ES256 signature costs far more than a
/// lookup, so each token's signature is checked once.
const VERIFIED_CAPACITY: usize = 10_000;

/// Why a token was refused; the label of the rejection metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Missing,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    WrongAudience,
    WrongIssuer,
    Algorithm,
    Invalid,
    /// The token names a user Kubernetes reserves (`system:…`).
    ReservedUser,
    /// The server said the token's access was revoked.
    Revoked,
}

impl Rejection {
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::WrongIssuer => "wrong_issuer",
            Rejection::Algorithm => "algorithm",
            Rejection::Invalid => "invalid",
            Rejection::ReservedUser => "reserved_user",
            Rejection::Revoked => "revoked",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Rejection::Missing => "no bearer token: configure kubectl with `infra login`",
            Rejection::Expired => {
                "the token has expired; kubectl fetches a new one from `infra tokens create`"
            }
            Rejection::WrongAudience => "the token is for another cluster",
            Rejection::WrongIssuer => "the token was issued by another infra server",
            Rejection::ReservedUser => {
                "the token names a user that Kubernetes reserves for itself (system:...)"
            }
            Rejection::Revoked => {
                "your access was revoked; kubectl fetches a new token from `infra tokens create`, \
                 which says whether you still have access"
            }
            _ => "the token is not valid for this cluster",
        }
    }
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    /// When an unknown `kid` last made us fetch; other fetches don't count.
    refetched: Option<Instant>,
    /// Until when the keys are fresh, by the JWKS response's
    /// `Cache-Control: max-age`.
    fresh_until: Option<Instant>,
}

/// How long a JWKS stays fresh without a `max-age`, and at most.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
const LONGEST_MAX_AGE: Duration = Duration::from_secs(3600);

/// The `max-age` of a `Cache-Control` header (`no-cache`/`no-store`: zero).
fn max_age(cache_control: Option<&str>) -> Duration {
    let Some(v) = cache_control else {
        return DEFAULT_MAX_AGE;
    };
    let mut age = DEFAULT_MAX_AGE;
    for d in v.split(',').map(str::trim) {
        let lower = d.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Duration::ZERO;
        }
        if let Some(n) = lower.strip_prefix("max-age=")
            && let Ok(n) = n.trim_matches('"').parse::<u64>()
        {
            age = Duration::from_secs(n);
        }
    }
    age.min(LONGEST_MAX_AGE)
}

/// Verifies tokens for one destination.
pub struct Verifier {
    /// The issuer the server's tokens name (learnt from the server).
    issuer: Mutex<String>,
    /// Issuers of refused tokens already logged.
    logged_issuers: Mutex<std::collections::HashSet<String>>,
    audience: String,
    jwks_url: String,
    http: reqwest::Client,
    leeway: u64,
    keys: Mutex<Keys>,
    fetch_lock: tokio::sync::Mutex<()>,
    verified: Mutex<HashMap<String, Claims>>,
    /// Reserved group names already logged as dropped.
    logged_drops: Mutex<std::collections::HashSet<String>>,
    /// Tokens the server said are revoked (`jti` → `exp`), refused until
    /// they expire anyway.
    revoked: Mutex<HashMap<String, i64>>,
}

impl Verifier {
    pub fn new(issuer: &str, audience: &str, http: reqwest::Client, leeway: u64) -> Verifier {
        let issuer = issuer.trim_end_matches('/').to_string();
        Verifier {
            jwks_url: format!("{issuer}/.well-known/jwks.json"),
            issuer: Mutex::new(issuer),
            logged_issuers: Mutex::new(std::collections::HashSet::new()),
            audience: audience.to_string(),
            http,
            leeway,
            keys: Mutex::new(Keys {
                by_kid: HashMap::new(),
                refetched: None,
                fresh_until: None,
            }),
            fetch_lock: tokio::sync::Mutex::new(()),
            verified: Mutex::new(HashMap::new()),
            logged_drops: Mutex::new(std::collections::HashSet::new()),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    /// Defence in depth: the server never puts Kubernetes' reserved
    /// `system:` names into a token, and the connector never impersonates
    /// one that arrives anyway. Such a user is refused; such groups are
    /// dropped, each logged once.
    fn without_reserved(&self, mut claims: Claims) -> Result<Claims, Rejection> {
        if crate::api::is_reserved_name(&claims.name) {
            tracing::warn!(
                user = %claims.name,
                sub = %claims.sub,
                "refused a token naming a user with Kubernetes' reserved prefix system:"
            );
            return Err(Rejection::ReservedUser);
        }
        let (kept, dropped): (Vec<String>, Vec<String>) = std::mem::take(&mut claims.groups)
            .into_iter()
            .partition(|g| !crate::api::is_reserved_name(g));
        claims.groups = kept;
        if !dropped.is_empty() {
            let mut logged = self.logged_drops.lock().unwrap_or_else(|e| e.into_inner());
            for g in dropped {
                if logged.len() < LOGGED_DROPS_CAPACITY && logged.insert(g.clone()) {
                    tracing::warn!(
                        group = %g,
                        user = %claims.name,
                        "dropped a group with Kubernetes' reserved prefix system: from a token; \
                         it is never impersonated"
                    );
                }
            }
        }
        Ok(claims)
    }

    /// The issuer tokens must name.
    pub fn issuer(&self) -> String {
        self.issuer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Learns the issuer the server's tokens name from its discovery
    /// document (`/.well-known/openid-configuration`): a server reached at
    /// `https://localhost:8443` may sign as `https://127.0.0.1:8443`. A
    /// server without one keeps the URL the connector was given.
    pub async fn learn_issuer(&self, server: &str) -> anyhow::Result<String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            server.trim_end_matches('/')
        );
        let resp = self.http.get(&url).send().await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(self.issuer());
        }
        let doc: serde_json::Value = resp.error_for_status()?.json().await?;
        let issuer = doc["issuer"]
            .as_str()
            .filter(|s| s.starts_with("https://") || s.starts_with("http://"))
            .ok_or_else(|| anyhow::anyhow!("{url} names no issuer"))?
            .trim_end_matches('/')
            .to_string();
        *self.issuer.lock().unwrap_or_else(|e| e.into_inner()) = issuer.clone();
        Ok(issuer)
    }

    /// Says once per issuer why its tokens are refused: a token of another
    /// issuer is most often a connector given another name of the server.
    fn log_wrong_issuer(&self, token: &str) {
        let Some(iss) = unverified_issuer(token) else {
            return;
        };
        let mut logged = self
            .logged_issuers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if logged.len() < LOGGED_DROPS_CAPACITY && logged.insert(iss.clone()) {
            tracing::warn!(
                token_issuer = %iss,
                expected_issuer = %self.issuer(),
                "refused a token issued by {iss}: this connector accepts tokens of {} (the \
                 issuer its server names); if both are the same server, give the server the one name \
                 users and connectors reach it at (`infra server --url`)",
                self.issuer()
            );
        }
    }

    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_kid
            .get(kid)
            .cloned()
    }

    /// Fetches the JWKS. `for_unknown_kid` fetches are rate-limited.
    pub async fn refresh(&self, for_unknown_kid: bool) -> anyhow::Result<()> {
        let _guard = self.fetch_lock.lock().await;
        if for_unknown_kid {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            if keys.refetched.is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
                return Ok(());
            }
            keys.refetched = Some(Instant::now());
        }
        let resp = self
            .http
            .get(&self.jwks_url)
            .send()
            .await?
            .error_for_status()?;
        let age = max_age(
            resp.headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        let set: JwkSet = resp.json().await?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) {
                by_kid.insert(kid.clone(), key);
            }
        }
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.by_kid = by_kid;
        keys.fresh_until = Some(Instant::now() + age);
        Ok(())
    }

    /// Fetches the JWKS when its cache headers say it is stale (or it was
    /// never fetched); a fresh one costs nothing.
    pub async fn refresh_if_stale(&self) -> anyhow::Result<()> {
        let stale = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fresh_until
            .is_none_or(|t| Instant::now() >= t);
        if stale {
            self.refresh(false).await?;
        }
        Ok(())
    }

    /// Checks a bearer token: signature (ES256 only), `iss`, `aud`, `exp`,
    /// `nbf`. A token verified before is only checked for expiry.
    pub async fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        let now = crate::clock::now();
        if let Some(c) = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            return if c.exp + self.leeway as i64 > now {
                Ok(c.clone())
            } else {
                Err(Rejection::Expired)
            };
        }
        let claims = self.without_reserved(self.verify_signed(token).await?)?;
        if !claims.jti.is_empty()
            && self
                .revoked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&claims.jti)
        {
            return Err(Rejection::Revoked);
        }
        crate::clock::check_token_times(Some(claims.exp), claims.nbf, now, self.leeway)
            .map_err(|_| Rejection::Expired)?;
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VERIFIED_CAPACITY {
            cache.retain(|_, c| c.exp + self.leeway as i64 > now);
            if cache.len() >= VERIFIED_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), claims.clone());
        Ok(claims)
    }

    /// Refuses from now on every token verified so far for this holder
    /// (same subject, key and groups): the server said its access is gone.
    pub fn revoke_matching(&self, sub: &str, sid: Option<&str>, groups: &[String]) {
        let now = crate::clock::now();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, exp| *exp + self.leeway as i64 > now);
        verified.retain(|_, c| {
            let matches = c.sub == sub && c.sid.as_deref() == sid && c.groups == groups;
            if matches && !c.jti.is_empty() {
                revoked.insert(c.jti.clone(), c.exp);
            }
            !matches
        });
    }

    async fn verify_signed(&self, token: &str) -> Result<Claims, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        if header.alg != Algorithm::ES256 {
            return Err(Rejection::Algorithm);
        }
        let kid = header.kid.ok_or(Rejection::UnknownKey)?;
        let key = match self.cached(&kid) {
            Some(k) => k,
            None => {
                if let Err(e) = self.refresh(true).await {
                    tracing::warn!("cannot fetch the server's JWKS: {e}");
                }
                self.cached(&kid).ok_or(Rejection::UnknownKey)?
            }
        };
        let mut v = Validation::new(Algorithm::ES256);
        v.algorithms = vec![Algorithm::ES256];
        // `exp` and `nbf` are checked by the connector's clock, in `verify`.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.set_audience(&[&self.audience]);
        v.set_issuer(&[self.issuer()]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature | K::ImmatureSignature => Rejection::Expired,
                    K::InvalidAudience => Rejection::WrongAudience,
                    K::InvalidIssuer => {
                        self.log_wrong_issuer(token);
                        Rejection::WrongIssuer
                    }
                    K::InvalidSignature => Rejection::BadSignature,
                    K::InvalidAlgorithm => Rejection::Algorithm,
                    _ => Rejection::Invalid,
                }
            })
    }
}

/// The `iss` of a token, unverified (for a log line only).
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let iss = v.get("iss")?.as_str()?;
    // Printable and short: it goes into a log line.
    Some(iss.chars().filter(|c| !c.is_control()).take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_MAX_AGE, LONGEST_MAX_AGE, max_age};
    use std::time::Duration;

    #[test]
    fn max_age_follows_cache_control() {
        assert_eq!(
            max_age(Some("public, max-age=300")),
            Duration::from_secs(300)
        );
        assert_eq!(max_age(Some("max-age=0")), Duration::ZERO);
        assert_eq!(max_age(Some("no-store")), Duration::ZERO);
        assert_eq!(max_age(Some("public")), DEFAULT_MAX_AGE);
        assert_eq!(max_age(None), DEFAULT_MAX_AGE);
        assert_eq!(max_age(Some("max-age=999999")), LONGEST_MAX_AGE);
    }
}
