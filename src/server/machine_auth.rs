//! Machine identities' oidc-auth: a workload (a GitLab CI job, a SPIFFE
//! workload, anything an OIDC issuer vouches for) trades its own JWT for an
//! infra access token, and that token is held to its bounds on every use.
//!
//! What lives here: the pure checks (glob patterns, trusted IPs, the JWT
//! against the issuer's keys and the identity's bounds), the in-memory
//! cache of issuers' JWKS (a cache only: every replica fetches its own),
//! and the per-request check of a machine token (trusted IPs, uses) that
//! `extract` calls for keys owned by an identity. The routes that use them
//! are in `routes::identities`, the tables in `store::identities`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ipnet::IpNet;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::AppState;
use super::error::ApiError;
use super::oidc;
use super::store::{AccessKeyRow, AuditEntry, OidcAuthRow};

/// Clock skew allowed on a JWT's `exp`, `nbf` and `iat`.
pub const CLOCK_LEEWAY_SECS: u64 = 30;
/// How long an issuer's keys are used before they are fetched again.
const JWKS_LIFETIME: Duration = Duration::from_secs(300);
/// A JWT naming a key we do not know makes us fetch the keys again, but no
/// more often than this (so made-up `kid`s cannot hammer the issuer).
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Asymmetric algorithms only: never `none`, never an HMAC (whose "key"
/// anyone who has the public JWKS would know).
pub const ALLOWED_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

const ALLOWED_NAMES: &str = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 and EdDSA";

// ------------------------------------------------------------------ patterns

/// Matches `text` against a glob `pattern`: `*` stands for any run of
/// characters (`/` and `:` included), `?` for exactly one; everything else
/// matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it now stands up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Parses a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address,
/// returning the network in canonical form.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(format!(
            "{s:?} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32, nor an IP address"
        )),
    }
}

/// Whether `addr` is inside one of the networks. An unknown address is
/// trusted only where every address is.
pub fn ip_trusted(networks: &[String], addr: Option<IpAddr>) -> bool {
    let nets = networks.iter().filter_map(|n| parse_cidr(n).ok());
    match addr {
        // A client on an IPv6 socket may be an IPv4 one in disguise.
        Some(ip) => {
            let ip = ip.to_canonical();
            nets.into_iter().any(|n| n.contains(&ip))
        }
        None => {
            let all: Vec<IpNet> = nets.collect();
            all.iter()
                .any(|n| n.prefix_len() == 0 && n.addr().is_ipv4())
                && all
                    .iter()
                    .any(|n| n.prefix_len() == 0 && n.addr().is_ipv6())
        }
    }
}

/// The discovery document's URL: a URL that already names the document
/// (either spelling of `openid-configuration`) as given, else the base URL
/// with `/.well-known/openid-configuration` appended.
pub fn discovery_document_url(url: &str) -> String {
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

// ------------------------------------------------------------------ JWKS

struct CachedKeys {
    keys: Arc<Vec<Jwk>>,
    fetched: Instant,
    /// When a JWT with an unknown `kid` last made us fetch them.
    refreshed: Option<Instant>,
}

/// Issuers' public keys, by discovery URL and CA, kept for a few minutes.
#[derive(Default)]
pub struct JwksCache {
    entries: Mutex<HashMap<String, CachedKeys>>,
}

impl JwksCache {
    fn cache_key(cfg: &OidcAuthRow) -> String {
        format!("{}\n{}", cfg.discovery_url, cfg.ca_pem)
    }

    /// The issuer's keys: from the cache while fresh; with `refresh` (a
    /// JWT named a key we do not have), fetched again unless that was done
    /// moments ago.
    pub async fn keys(&self, cfg: &OidcAuthRow, refresh: bool) -> Result<Arc<Vec<Jwk>>, String> {
        let id = Self::cache_key(cfg);
        let mut last_refresh = None;
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = entries.get(&id) {
                last_refresh = c.refreshed;
                let fresh = c.fetched.elapsed() < JWKS_LIFETIME;
                let may_refresh = c
                    .refreshed
                    .is_none_or(|t| t.elapsed() >= JWKS_REFRESH_INTERVAL);
                if fresh && (!refresh || !may_refresh) {
                    return Ok(c.keys.clone());
                }
            }
        }
        let keys = Arc::new(fetch_keys(cfg).await?);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Forget issuers nobody logged in through for a while.
        entries.retain(|_, c| c.fetched.elapsed() < JWKS_LIFETIME * 4);
        entries.insert(
            id,
            CachedKeys {
                keys: keys.clone(),
                fetched: now,
                refreshed: if refresh { Some(now) } else { last_refresh },
            },
        );
        Ok(keys)
    }
}

/// Discovery, then the JWKS it points to, through the identity's CA.
async fn fetch_keys(cfg: &OidcAuthRow) -> Result<Vec<Jwk>, String> {
    let http = oidc::provider_http(&cfg.ca_pem).map_err(|e| e.to_string())?;
    let doc_url = discovery_document_url(&cfg.discovery_url);
    let doc: Value = get_json(&http, &doc_url, "the discovery document").await?;
    let jwks_url = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| format!("the discovery document {doc_url} has no jwks_uri"))?;
    let set: Value = get_json(&http, jwks_url, "the issuer's JWKS").await?;
    let keys: Vec<Jwk> = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{jwks_url} is not a JWKS: it has no \"keys\" list"))?
        .iter()
        // A key infra cannot use (another kty, a malformed entry) is skipped.
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| k.common.public_key_use != Some(PublicKeyUse::Encryption))
        .collect();
    if keys.is_empty() {
        return Err(format!("the issuer's JWKS {jwks_url} holds no usable key"));
    }
    Ok(keys)
}

async fn get_json(http: &reqwest::Client, url: &str, what: &str) -> Result<Value, String> {
    let resp = http.get(url).send().await.map_err(|e| {
        format!(
            "cannot fetch {what} {url}: {} (if the issuer's certificate is signed by a private \
             CA, give it with --ca-cert)",
            oidc::error_chain(&e)
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

// ------------------------------------------------------------------ JWT

/// Why a JWT was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// It names a key the issuer's JWKS (as we have it) lacks: fetch the
    /// keys again and retry.
    UnknownKey(String),
    /// Rejected: the message names the check that failed.
    Rejected(String),
}

fn rejected(msg: impl Into<String>) -> JwtError {
    JwtError::Rejected(msg.into())
}

fn b64_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn fits(jwk: &Jwk, alg: Algorithm, alg_name: &str) -> bool {
    use jsonwebtoken::AlgorithmFamily as F;
    let family_ok = matches!(
        (&jwk.algorithm, alg.family()),
        (AlgorithmParameters::RSA(_), F::Rsa)
            | (AlgorithmParameters::EllipticCurve(_), F::Ec)
            | (AlgorithmParameters::OctetKeyPair(_), F::Ed)
    );
    family_ok
        && jwk
            .common
            .key_algorithm
            .is_none_or(|ka| ka.to_string() == alg_name)
}

/// Verifies `jwt` with the issuer's `keys` and checks it against the
/// identity's bounds; returns its claims. `now` in Unix seconds.
pub fn verify_jwt(
    jwt: &str,
    keys: &[Jwk],
    cfg: &OidcAuthRow,
    now: i64,
) -> Result<Map<String, Value>, JwtError> {
    let jwt = jwt.trim();
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err(rejected(
            "the JWT is malformed: it must be three base64url parts separated by dots",
        ));
    }
    let header = b64_json(parts[0])
        .ok_or_else(|| rejected("the JWT's header is not base64url-encoded JSON"))?;
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let alg = alg_name
        .parse::<Algorithm>()
        .ok()
        .filter(|a| ALLOWED_ALGS.contains(a))
        .ok_or_else(|| {
            rejected(format!(
                "the JWT's algorithm (alg) {alg_name:?} is not accepted: infra accepts \
                 {ALLOWED_NAMES}, never none or HMAC (HS256, …)"
            ))
        })?;
    let kid = header.get("kid").and_then(Value::as_str);
    let candidates: Vec<&Jwk> = keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.common.key_id.as_deref() == Some(kid)))
        .filter(|k| fits(k, alg, alg_name))
        .collect();
    if candidates.is_empty() {
        return Err(match kid {
            Some(kid) => JwtError::UnknownKey(format!(
                "the JWT's signing key (kid {kid:?}, {alg_name}) is not in the issuer's JWKS"
            )),
            None => rejected(format!(
                "the JWT names no key (kid) and no key in the issuer's JWKS is for {alg_name}"
            )),
        });
    }

    let mut v = Validation::new(alg);
    v.leeway = CLOCK_LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    // Audiences are glob patterns, checked below.
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "iss"]);
    v.set_issuer(&[&cfg.issuer]);
    let mut claims = None;
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Map<String, Value>>(jwt, &key, &v) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => continue,
                // The signature held; a claim did not.
                kind => return Err(rejected(describe(kind, parts[1], cfg, now))),
            },
        }
    }
    let claims = claims.ok_or_else(|| {
        rejected(
            "the JWT's signature does not verify with the issuer's keys: it was not signed by \
             the configured issuer",
        )
    })?;
    check_bounds(&claims, cfg, now)?;
    Ok(claims)
}

/// Words for a claim check that jsonwebtoken refused.
fn describe(kind: &ErrorKind, payload: &str, cfg: &OidcAuthRow, now: i64) -> String {
    let claims = b64_json(payload).unwrap_or(Value::Null);
    match kind {
        ErrorKind::ExpiredSignature => {
            let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
            format!(
                "the JWT has expired (exp was {} s ago; {CLOCK_LEEWAY_SECS} s of clock skew are \
                 allowed): get a fresh one",
                now - exp
            )
        }
        ErrorKind::ImmatureSignature => format!(
            "the JWT is not valid yet (nbf is in the future, beyond {CLOCK_LEEWAY_SECS} s of \
             clock skew)"
        ),
        ErrorKind::InvalidIssuer => format!(
            "the JWT's issuer (iss) {} is not the configured issuer {:?}",
            claims
                .get("iss")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            cfg.issuer
        ),
        ErrorKind::MissingRequiredClaim(c) => format!("the JWT has no {c} claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("the JWT's {c} claim is not a number"),
        other => format!("the JWT is malformed ({other:?})"),
    }
}

/// One claim value as text, for patterns: strings as they are, numbers and
/// booleans as JSON writes them.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

/// The values of a claim: one, or each element of a list.
fn values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// `iat`, `sub`, `aud` and the configured claims.
fn check_bounds(claims: &Map<String, Value>, cfg: &OidcAuthRow, now: i64) -> Result<(), JwtError> {
    if let Some(iat) = claims.get("iat") {
        let iat = iat
            .as_f64()
            .ok_or_else(|| rejected("the JWT's iat claim is not a number"))?;
        if iat > (now + CLOCK_LEEWAY_SECS as i64) as f64 {
            return Err(rejected(format!(
                "the JWT was issued in the future (iat), beyond {CLOCK_LEEWAY_SECS} s of clock skew"
            )));
        }
    }
    if !cfg.subject.is_empty() {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| rejected("the JWT has no sub claim"))?;
        if !glob_match(&cfg.subject, sub) {
            return Err(rejected(format!(
                "the JWT's subject (sub) {sub:?} does not match the configured subject {:?}",
                cfg.subject
            )));
        }
    }
    if !cfg.audiences.is_empty() {
        let auds = claims
            .get("aud")
            .map(values)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| rejected("the JWT has no aud claim"))?;
        let ok = auds
            .iter()
            .any(|a| cfg.audiences.iter().any(|p| glob_match(p, a)));
        if !ok {
            return Err(rejected(format!(
                "none of the JWT's audiences (aud) {auds:?} matches the configured audiences {:?}",
                cfg.audiences
            )));
        }
    }
    for (name, pattern) in &cfg.claims {
        let found = claims
            .get(name)
            .map(values)
            .ok_or_else(|| rejected(format!("the JWT has no {name} claim")))?;
        if !found.iter().any(|v| glob_match(pattern, v)) {
            return Err(rejected(format!(
                "the JWT's claim {name} ({}) does not match the configured {pattern:?}",
                claims[name]
            )));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ use

/// How an access key is presented.
#[derive(Debug, Clone, Copy)]
pub enum KeyUse {
    /// On a request, from this address (when the socket is known).
    Request(Option<IpAddr>),
    /// To be traded for another key (`POST /api/login {accessKey}`).
    Exchange,
}

/// For a key owned by an identity: if it came from an oidc-auth login,
/// holds it to its trusted IPs and counts the use against its limit, and
/// says `true`. Other keys pass untouched (`false`).
pub async fn check_use(
    state: &AppState,
    row: &AccessKeyRow,
    how: KeyUse,
) -> Result<bool, ApiError> {
    let Some(t) = state.store.get_machine_token(&row.id).await? else {
        return Ok(false);
    };
    let remote = match how {
        KeyUse::Exchange => {
            return Err(ApiError::unauthorized(
                "this is a machine identity's access token: use it as it is (Authorization: \
                 Bearer, or INFRA_ACCESS_KEY); it cannot be traded for another key",
            ));
        }
        KeyUse::Request(remote) => remote,
    };
    if !ip_trusted(&t.trusted_ips, remote) {
        let addr = remote.map(|a| a.to_string()).unwrap_or_default();
        state
            .store
            .audit(&AuditEntry {
                actor: &row.owner_name,
                action: "identity.token",
                target: &format!("key:{}", row.id),
                result: "failure",
                remote_addr: &addr,
                detail: "used from outside its trusted IPs",
            })
            .await?;
        return Err(ApiError::unauthorized(format!(
            "this access token may not be used from {}: the address is not among its trusted \
             IPs",
            if addr.is_empty() { "here" } else { &addr }
        )));
    }
    if !state.store.use_machine_token(&row.id).await? {
        return Err(ApiError::unauthorized(format!(
            "this access token has used up its {} uses; log in again with a fresh JWT",
            t.max_uses
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("abc", "abc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(!glob_match("abcd", "abc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything/at:all"));
        assert!(glob_match("a*c", "ac"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbbd"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match(
            "project_path:group/*:ref_type:branch:ref:main",
            "project_path:group/project:ref_type:branch:ref:main"
        ));
        assert!(!glob_match(
            "project_path:group/*:ref_type:branch:ref:main",
            "project_path:group/project:ref_type:branch:ref:feature"
        ));
        assert!(glob_match(
            "spiffe://example.org/workload/*",
            "spiffe://example.org/workload/api-server"
        ));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b*", "xxbxxaxx"));
        assert!(glob_match("é?", "éü"));
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
        let all = vec!["0.0.0.0/0".to_string(), "::/0".to_string()];
        let ten = vec!["10.0.0.0/8".to_string()];
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(ip_trusted(&all, Some(lo)));
        assert!(ip_trusted(&all, None));
        assert!(!ip_trusted(&ten, Some(lo)));
        assert!(!ip_trusted(&ten, None));
        assert!(ip_trusted(&ten, Some("10.9.8.7".parse().unwrap())));
        // An IPv4 client seen through an IPv6 socket.
        assert!(ip_trusted(&ten, Some("::ffff:10.9.8.7".parse().unwrap())));
    }

    #[test]
    fn discovery_urls() {
        assert_eq!(
            discovery_document_url("https://gitlab.com"),
            "https://gitlab.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_document_url("https://idp.example/realm/"),
            "https://idp.example/realm/.well-known/openid-configuration"
        );
        for full in [
            "https://spire.example/.well-known/openid-configuration",
            "https://spire.example/.well-known/openid_configuration",
        ] {
            assert_eq!(discovery_document_url(full), full);
        }
    }

    fn cfg() -> OidcAuthRow {
        OidcAuthRow {
            identity_id: "i".into(),
            discovery_url: "https://issuer.example".into(),
            issuer: "https://issuer.example".into(),
            ca_pem: String::new(),
            subject: "repo:*".into(),
            audiences: vec!["infra".into()],
            claims: [("ref".to_string(), "main".to_string())].into(),
            access_token_ttl: 60,
            access_token_max_ttl: 120,
            access_token_max_uses: 0,
            trusted_ips: vec![],
            created_at: 0,
            updated_at: 0,
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn bounds() {
        let c = cfg();
        let ok =
            json_claims(r#"{"sub":"repo:x","aud":["a","infra"],"ref":["dev","main"],"iat":100}"#);
        assert_eq!(check_bounds(&ok, &c, 100), Ok(()));
        let bad_sub = json_claims(r#"{"sub":"other","aud":"infra","ref":"main"}"#);
        assert!(
            matches!(check_bounds(&bad_sub, &c, 0), Err(JwtError::Rejected(m)) if m.contains("subject (sub)"))
        );
        let bad_aud = json_claims(r#"{"sub":"repo:x","aud":"else","ref":"main"}"#);
        assert!(
            matches!(check_bounds(&bad_aud, &c, 0), Err(JwtError::Rejected(m)) if m.contains("audiences (aud)"))
        );
        let no_claim = json_claims(r#"{"sub":"repo:x","aud":"infra"}"#);
        assert!(
            matches!(check_bounds(&no_claim, &c, 0), Err(JwtError::Rejected(m)) if m.contains("no ref claim"))
        );
        let future = json_claims(r#"{"sub":"repo:x","aud":"infra","ref":"main","iat":1000}"#);
        assert!(
            matches!(check_bounds(&future, &c, 100), Err(JwtError::Rejected(m)) if m.contains("iat"))
        );
    }

    fn json_claims(s: &str) -> Map<String, Value> {
        claims(serde_json::from_str(s).unwrap())
    }

    #[test]
    fn none_and_hmac_are_refused_before_any_key_is_looked_at() {
        let c = cfg();
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let body =
            enc(serde_json::json!({"sub": "repo:x", "iss": c.issuer, "exp": 4_000_000_000u64}));
        for alg in ["none", "HS256", "HS512", ""] {
            let jwt = format!("{}.{body}.", enc(serde_json::json!({"alg": alg})));
            let e = verify_jwt(&jwt, &[], &c, 0).unwrap_err();
            assert!(
                matches!(&e, JwtError::Rejected(m) if m.contains("algorithm")),
                "{alg}: {e:?}"
            );
        }
        assert!(matches!(
            verify_jwt("not-a-jwt", &[], &c, 0),
            Err(JwtError::Rejected(m)) if m.contains("malformed")
        ));
    }
}
