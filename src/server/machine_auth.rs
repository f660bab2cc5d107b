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

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ipnet::IpNet;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::AppState;
use super::error::ApiError;
use super::store::{AccessKeyRow, AuditEntry, OidcAuthRow};

use super::issuers::{ALLOWED_ALGS, CLOCK_LEEWAY_SECS, IssuerCache};

/// The algorithm of a JWT's `alg`, if it is one infra accepts (and
/// jsonwebtoken implements: not ES512).
fn accepted_alg(name: &str) -> Option<Algorithm> {
    ALLOWED_ALGS
        .contains(&name)
        .then(|| name.parse::<Algorithm>().ok())
        .flatten()
}

/// The accepted algorithms, for messages.
fn accepted_names() -> String {
    let names: Vec<&str> = ALLOWED_ALGS
        .into_iter()
        .filter(|n| accepted_alg(n).is_some())
        .collect();
    match names.split_last() {
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

// ------------------------------------------------------------------ patterns

/// One piece of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Matches itself.
    Literal(char),
    /// `?`: exactly one character other than `/` and `:`.
    One,
    /// `*`: any run of characters other than `/` and `:`.
    Star,
    /// `**`: any run of characters other than `:`.
    DoubleStar,
}

/// What `*` and `?` may match: anything but the separators of path
/// segments (`/`) and of the fields of GitLab and GitHub subjects (`:`).
fn in_segment(c: char) -> bool {
    c != '/' && c != ':'
}

/// The pieces of a pattern; three or more `*` in a row have no meaning.
fn pieces(pattern: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' => {
                let mut run = 1;
                while chars.next_if_eq(&'*').is_some() {
                    run += 1;
                }
                match run {
                    1 => Piece::Star,
                    2 => Piece::DoubleStar,
                    n => {
                        return Err(format!(
                            "{} has no meaning: use * (within one segment, never / or :) or ** \
                             (across /, never :)",
                            "*".repeat(n)
                        ));
                    }
                }
            }
            '?' => Piece::One,
            c => Piece::Literal(c),
        });
    }
    Ok(out)
}

/// Why `pattern` is not a valid pattern, if it is not.
pub fn pattern_problem(pattern: &str) -> Option<String> {
    pieces(pattern).err()
}

/// Matches `text` against a glob `pattern`:
///
/// - `*` stands for any run of characters (none too) within one segment:
///   never `/`, never `:`;
/// - `**` for any run of characters across `/`, but never `:` (which
///   separates the fields of GitLab and GitHub subjects, so no pattern
///   reaches from one field into the next);
/// - `?` for exactly one character other than `/` and `:`;
/// - everything else matches itself.
///
/// So `project_path:group/*:ref_type:branch:ref:main` takes the projects of
/// `group` but not those of its subgroups (`group/**` does), and
/// `repo:o/r:ref:refs/heads/*` takes a push to `main` but not to
/// `feature/x`, nor a pull request. A pattern with `***` matches nothing
/// (configurations refuse it; see [`pattern_problem`]).
///
/// The pattern runs as a set of positions over the text, one character at
/// a time: O(pattern × text), never backtracking.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Ok(pieces) = pieces(pattern) else {
        return false;
    };
    // at[i]: the first i pieces match the text read so far.
    let mut at = vec![false; pieces.len() + 1];
    let mut next = at.clone();
    at[0] = true;
    skip_empty_wildcards(&pieces, &mut at);
    for c in text.chars() {
        next.fill(false);
        let mut alive = false;
        for (i, piece) in pieces.iter().enumerate() {
            if !at[i] {
                continue;
            }
            let to = match *piece {
                Piece::Literal(l) if l == c => i + 1,
                Piece::One if in_segment(c) => i + 1,
                Piece::Star if in_segment(c) => i,
                Piece::DoubleStar if c != ':' => i,
                _ => continue,
            };
            next[to] = true;
            alive = true;
        }
        if !alive {
            return false;
        }
        skip_empty_wildcards(&pieces, &mut next);
        std::mem::swap(&mut at, &mut next);
    }
    at[pieces.len()]
}

/// A wildcard may match nothing: a position before one is also after it.
fn skip_empty_wildcards(pieces: &[Piece], at: &mut [bool]) {
    for (i, piece) in pieces.iter().enumerate() {
        if at[i] && matches!(piece, Piece::Star | Piece::DoubleStar) {
            at[i + 1] = true;
        }
    }
}

/// Claims that never say *which* workload holds the JWT, so a pattern on
/// them binds nobody: on a shared issuer (gitlab.com, GitHub Actions) any
/// project can have a branch `main`, an environment `production`, a push
/// event, a job started by a given user, and so on; a configuration bound
/// by them alone (say `ref: main`, or `user_login: alice`, who may run
/// jobs in any project) would accept a job of every project. The first
/// ones are the JWT's own metadata: `iss` is checked on its own, `aud`
/// binds the token to infra, not to a workload.
pub const NON_IDENTIFYING_CLAIMS: &[&str] = &[
    // The token itself.
    "iss",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "azp",
    "auth_time",
    "nonce",
    "sid",
    "acr",
    "amr",
    "at_hash",
    "c_hash",
    // What a CI job runs on, for, and who started it: any project has these.
    "ref",
    "ref_type",
    "ref_path",
    "ref_protected",
    "environment",
    "environment_protected",
    "environment_action",
    "deployment_tier",
    "event_name",
    "pipeline_source",
    "runner_environment",
    "runner_id",
    "job_id",
    "pipeline_id",
    "run_id",
    "run_number",
    "run_attempt",
    "sha",
    "workflow",
    "workflow_sha",
    "job_workflow_sha",
    "ci_config_sha",
    "head_ref",
    "base_ref",
    "repository_visibility",
    "actor",
    "actor_id",
    "user_login",
    "user_email",
    "user_id",
    "triggering_actor",
    // Who started it and how visible the project is: shared by many.
    "user_access_level",
    "user_identities",
    "groups_direct",
    "project_visibility",
    "check_run_id",
    "runner_version",
];

/// Whether a pattern pins something: at least one letter or digit that is
/// not a wildcard (`*`, `**`, `?`, `*:*` and `*/*` pin nothing).
fn pins_something(pattern: &str) -> bool {
    pieces(pattern).is_ok_and(|p| {
        p.iter()
            .any(|piece| matches!(piece, Piece::Literal(c) if c.is_alphanumeric()))
    })
}

/// Where a pattern names the tenant of a shared issuer (the GitHub owner,
/// the top GitLab group): after `repo:` or `project_path:` in a subject,
/// and at the start of these claims. That part must be spelled out, or the
/// pattern takes in every owner's project of that name.
fn tenant_part<'a>(claim: Option<&str>, pattern: &'a str) -> Option<&'a str> {
    match claim {
        // The `sub` claim is the subject, however it is named.
        None | Some("sub") => pattern
            .strip_prefix("repo:")
            .or_else(|| pattern.strip_prefix("project_path:")),
        Some(
            "repository" | "repository_owner" | "project_path" | "namespace_path"
            | "job_workflow_ref" | "workflow_ref",
        ) => Some(pattern),
        // HOST/GROUP/PROJECT//PATH@REF: the group follows the host.
        Some("ci_config_ref_uri") => Some(pattern.split_once('/').map_or("", |(_, rest)| rest)),
        _ => None,
    }
}

/// Whether a subject (`claim` None) or claim pattern binds a workload: it
/// pins something, and where it names a shared issuer's tenant, that part
/// holds no wildcard (`repo:*/deploy:…` and `project_path:**:…` take every
/// owner's project).
fn binds(claim: Option<&str>, pattern: &str) -> bool {
    // A number names one thing or, with a wildcard, any of a range.
    if claim.is_some_and(|c| c.ends_with("_id")) && pattern.contains(['*', '?']) {
        return false;
    }
    pins_something(pattern)
        && tenant_part(claim, pattern).is_none_or(|rest| {
            let tenant = rest.split(['/', ':']).next().unwrap_or_default();
            !tenant.is_empty() && !tenant.contains(['*', '?'])
        })
}

/// Why a configuration with this subject and these claims binds no
/// workload, or `None` when it binds one: its subject, or the pattern of
/// one identifying claim (not in [`NON_IDENTIFYING_CLAIMS`]), must hold a
/// letter or digit, and spell out the owner or group where it names one
/// (see [`binds`]). Audiences never bind: every job of the issuer can ask
/// for a token with infra's audience.
pub fn binding_problem(subject: &str, claims: &BTreeMap<String, String>) -> Option<String> {
    if binds(None, subject)
        || claims.iter().any(|(name, pattern)| {
            !NON_IDENTIFYING_CLAIMS.contains(&name.as_str()) && binds(Some(name), pattern)
        })
    {
        return None;
    }
    let open_tenant = |claim: Option<&str>, p: &str| pins_something(p) && !binds(claim, p);
    let mut found = Vec::new();
    if subject.is_empty() {
        found.push("no subject".to_string());
    } else if open_tenant(None, subject) {
        found.push(format!(
            "the subject {subject:?} leaves the owner or group open"
        ));
    } else {
        found.push(format!("the subject {subject:?} pins nothing"));
    }
    let (plain, identifying): (Vec<_>, Vec<_>) = claims
        .iter()
        .partition(|(name, _)| NON_IDENTIFYING_CLAIMS.contains(&name.as_str()));
    for (name, pattern) in identifying {
        if open_tenant(Some(name), pattern) {
            found.push(format!(
                "the claim {name} {pattern:?} leaves the owner or group open"
            ));
        } else {
            found.push(format!("the claim {name} {pattern:?} pins nothing"));
        }
    }
    match plain.len() {
        0 if claims.is_empty() => found.push("no claims".to_string()),
        0 => {}
        1 => found.push(format!("{} identifies no workload", plain[0].0)),
        _ => found.push(format!(
            "{} identify no workload",
            plain
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    Some(format!(
        "the configuration binds no workload ({}): audiences alone, \"*\" and claims such as ref \
         accept every project of a shared issuer like gitlab.com; set --subject (e.g. \
         'project_path:mygroup/myproject:ref_type:branch:ref:main' on GitLab, \
         'repo:my-org/my-repo:ref:refs/heads/main' on GitHub Actions) or --claims on an \
         identifying claim (project_path, namespace_path, repository, repository_owner …)",
        found.join("; ")
    ))
}

/// Whether a stored configuration may be used at all: every pattern valid
/// and a workload bound. Saving checks the same (`routes::identities`), but
/// a configuration saved by an older version may not meet it.
pub fn config_problem(cfg: &OidcAuthRow) -> Option<String> {
    let patterns = std::iter::once(("subject", &cfg.subject))
        .chain(cfg.audiences.iter().map(|a| ("audiences", a)))
        .chain(cfg.claims.iter().map(|(n, p)| (n.as_str(), p)));
    for (what, pattern) in patterns {
        if let Some(why) = pattern_problem(pattern) {
            return Some(format!("its {what} pattern {pattern:?} is invalid: {why}"));
        }
    }
    binding_problem(&cfg.subject, &cfg.claims)
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

pub use super::issuers::document_url as discovery_document_url;

// ------------------------------------------------------------------ JWKS

/// The issuer's usable public keys, through the server's issuer cache
/// (`refresh`: a JWT named a key we do not have).
pub async fn issuer_keys(
    cache: &IssuerCache,
    cfg: &OidcAuthRow,
    refresh: bool,
) -> Result<Vec<Jwk>, String> {
    let issuer = cache.get(&cfg.discovery_url, &cfg.ca_pem, refresh).await?;
    let keys: Vec<Jwk> = issuer.jwks["keys"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        // A key infra cannot use (another kty, a malformed entry) is skipped.
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| k.common.public_key_use != Some(PublicKeyUse::Encryption))
        .collect();
    if keys.is_empty() {
        return Err(format!(
            "the issuer's JWKS ({}) holds no usable key",
            issuer.document["jwks_uri"].as_str().unwrap_or_default()
        ));
    }
    Ok(keys)
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
    let alg = accepted_alg(alg_name).ok_or_else(|| {
        rejected(format!(
            "the JWT's algorithm (alg) {alg_name:?} is not accepted: infra accepts {}, never \
             none or HMAC (HS256, …)",
            accepted_names()
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
                "the JWT's signing key (kid {:?}, {alg_name}) is not in the issuer's JWKS",
                crate::api::clip(kid, 64)
            )),
            None => rejected(format!(
                "the JWT names no key (kid) and no key in the issuer's JWKS is for {alg_name}"
            )),
        });
    }

    let mut v = Validation::new(alg);
    // `exp` and `nbf` are checked below, by the server's clock.
    v.validate_exp = false;
    v.validate_nbf = false;
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
    let time = |c: &str| claims.get(c).and_then(Value::as_f64).map(|t| t as i64);
    match crate::clock::check_token_times(time("exp"), time("nbf"), now, CLOCK_LEEWAY_SECS) {
        Ok(()) => {}
        Err(crate::clock::TokenTime::Expired(_)) => {
            return Err(rejected(describe(
                &ErrorKind::ExpiredSignature,
                parts[1],
                cfg,
                now,
            )));
        }
        Err(crate::clock::TokenTime::NotYetValid) => {
            return Err(rejected(describe(
                &ErrorKind::ImmatureSignature,
                parts[1],
                cfg,
                now,
            )));
        }
    }
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

/// The configuration itself (see [`config_problem`]), then `iat`, `sub`,
/// `aud` and the configured claims.
fn check_bounds(claims: &Map<String, Value>, cfg: &OidcAuthRow, now: i64) -> Result<(), JwtError> {
    if let Some(why) = config_problem(cfg) {
        return Err(rejected(why));
    }
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
        assert!(glob_match("**", ""));
        assert!(glob_match("*", "any-thing.at_all@x"));
        assert!(glob_match("a*c", "ac"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbbd"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b*", "xxbxxaxx"));
        assert!(glob_match("é?", "éü"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        // `*` and `?` stay within a segment; `**` crosses `/` only.
        for sep in ["/", ":"] {
            assert!(!glob_match("*", sep), "{sep}");
            assert!(!glob_match("a?b", &format!("a{sep}b")), "{sep}");
            assert!(!glob_match("a*b", &format!("a{sep}b")), "{sep}");
            assert!(glob_match(&format!("a*{sep}*b"), &format!("a{sep}b")));
        }
        assert!(glob_match("a**b", "a/x/y/b"));
        assert!(glob_match("a/**/b", "a/x/y/b"));
        assert!(!glob_match("a**b", "a:b"));
        assert!(!glob_match("a**b", "a/x:y/b"));
        assert!(!glob_match("**", "a:b"));
        assert!(glob_match("*/**", "a/b/c"));
        assert!(!glob_match("*/**", "a"));
        // Three stars or more have no meaning: they match nothing.
        assert!(!glob_match("***", "a"));
        assert!(!glob_match("a***", "a"));
        assert!(pattern_problem("a***b").is_some_and(|m| m.contains("***")));
        assert!(pattern_problem("****").is_some_and(|m| m.contains("****")));
        assert_eq!(pattern_problem("a**/*?b"), None);
    }

    /// GitLab CI subjects: `project_path:GROUP/PROJECT:ref_type:TYPE:ref:REF`.
    #[test]
    fn gitlab_subjects() {
        let group_star = "project_path:group/*:ref_type:branch:ref:main";
        let group_all = "project_path:group/**:ref_type:branch:ref:main";
        let direct = "project_path:group/app:ref_type:branch:ref:main";
        let nested = "project_path:group/sub/app:ref_type:branch:ref:main";
        assert!(glob_match(group_star, direct));
        assert!(!glob_match(group_star, nested), "a nested subgroup");
        assert!(glob_match(group_all, nested));
        assert!(glob_match(group_all, direct));
        for other in [
            "project_path:group/app:ref_type:branch:ref:feature",
            "project_path:group/app:ref_type:branch:ref:feature/main",
            "project_path:group/app:ref_type:tag:ref:main",
            "project_path:groupie/app:ref_type:branch:ref:main",
            "project_path:other/group/app:ref_type:branch:ref:main",
            "project_path:group/app:ref_type:branch:ref:main:x",
        ] {
            assert!(!glob_match(group_star, other), "{other}");
            assert!(!glob_match(group_all, other), "{other}");
        }
        // A branch name with `/` needs `**`.
        let any_ref = "project_path:group/app:ref_type:branch:ref:*";
        assert!(glob_match(
            any_ref,
            "project_path:group/app:ref_type:branch:ref:main"
        ));
        assert!(!glob_match(
            any_ref,
            "project_path:group/app:ref_type:branch:ref:feature/x"
        ));
        assert!(glob_match(
            "project_path:group/app:ref_type:branch:ref:**",
            "project_path:group/app:ref_type:branch:ref:feature/x"
        ));
        // `**` does not reach into the next field.
        assert!(!glob_match(
            "project_path:**",
            "project_path:group/app:ref_type:branch:ref:main"
        ));
        assert!(!glob_match("project_path:group/*", direct));
        assert!(glob_match(
            "spiffe://example.org/workload/*",
            "spiffe://example.org/workload/api-server"
        ));
        assert!(!glob_match(
            "spiffe://example.org/workload/*",
            "spiffe://example.org/workload/ns/api-server"
        ));
    }

    /// GitHub Actions subjects: `repo:OWNER/REPO:ref:REF`,
    /// `repo:OWNER/REPO:pull_request`, `repo:OWNER/REPO:environment:ENV`.
    #[test]
    fn github_subjects() {
        let heads = "repo:o/r:ref:refs/heads/*";
        assert!(glob_match(heads, "repo:o/r:ref:refs/heads/main"));
        assert!(!glob_match(heads, "repo:o/r:ref:refs/heads/feature/x"));
        assert!(!glob_match(heads, "repo:o/r:pull_request"));
        assert!(!glob_match(heads, "repo:o/r:ref:refs/tags/v1"));
        assert!(!glob_match(heads, "repo:o/r2:ref:refs/heads/main"));
        assert!(glob_match(
            "repo:o/r:ref:refs/heads/**",
            "repo:o/r:ref:refs/heads/feature/x"
        ));
        for sub in [
            "repo:o/r:pull_request",
            "repo:o/r:ref:refs/heads/main",
            "repo:o/r:environment:prod",
        ] {
            assert!(!glob_match("repo:o/*", sub), "{sub}");
            assert!(!glob_match("repo:o/**", sub), "{sub}");
        }
        assert!(glob_match("repo:o/r:pull_request", "repo:o/r:pull_request"));
        assert!(glob_match("repo:o/*:pull_request", "repo:o/r:pull_request"));
        assert!(glob_match(
            "repo:o/r:environment:prod",
            "repo:o/r:environment:prod"
        ));
        assert!(!glob_match(
            "repo:o/r:environment:prod",
            "repo:o/r:environment:prod-eu"
        ));
        // Only one-field subjects are one `*` away from `repo:o/r:`.
        assert!(glob_match("repo:o/r:*", "repo:o/r:pull_request"));
        assert!(!glob_match("repo:o/r:*", "repo:o/r:ref:refs/heads/main"));
    }

    /// A hostile pattern against a long text takes time linear in the text,
    /// not exponential.
    #[test]
    fn hostile_patterns_finish_quickly() {
        let start = std::time::Instant::now();
        for star in ["*", "**"] {
            let pattern = format!("{star}a").repeat(50);
            let text = "a".repeat(20_000);
            assert!(glob_match(&pattern, &text));
            assert!(!glob_match(&pattern, &format!("{text}b")));
            assert!(!glob_match(&format!("{pattern}b"), &text));
            let slashes = "/a".repeat(10_000);
            assert_eq!(glob_match(&pattern, &slashes), star == "**");
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "took {:?}",
            start.elapsed()
        );
    }

    fn claim_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn binding() {
        let binds = |subject: &str, claims: &[(&str, &str)]| {
            binding_problem(subject, &claim_map(claims)).is_none()
        };
        // A subject with a letter or digit outside the wildcards binds.
        for subject in [
            "project_path:group/app:ref_type:branch:ref:main",
            "project_path:group/*:ref_type:branch:ref:main",
            "project_path:group/**:ref_type:branch:ref:main",
            "repo:octo-org/octo-repo:ref:refs/heads/main",
            "repo:octo-org/octo-repo:pull_request",
            "repo:octo-org/octo-repo:environment:prod",
            "spiffe://example.org/workload/*",
            "ci-runner",
            "7",
        ] {
            assert!(binds(subject, &[]), "{subject}");
        }
        // Wildcards and separators alone bind nothing.
        for subject in [
            "", "*", "**", "?", "*:*", "*/*", "**:**:*", "?*/-_.:", "***",
        ] {
            assert!(!binds(subject, &[]), "{subject:?}");
            assert!(!binds(subject, &[("ref", "main")]), "{subject:?}");
        }
        // An identifying claim binds.
        for claim in [
            ("project_path", "group/app"),
            ("project_path", "group/**"),
            ("namespace_path", "group"),
            ("project_id", "42"),
            ("repository", "octo-org/octo-repo"),
            ("repository_owner", "octo-org"),
            (
                "job_workflow_ref",
                "octo-org/workflows/.github/workflows/deploy.yml@*",
            ),
            ("email", "*@example.com"),
            ("sub", "repo:octo-org/*:pull_request"),
        ] {
            assert!(binds("", &[claim]), "{claim:?}");
            assert!(binds("*", &[claim, ("ref", "main")]), "{claim:?}");
        }
        // Claims any project's job can have do not, nor an identifying
        // claim on a wildcard.
        for claims in [
            &[("ref", "main")][..],
            &[("ref", "refs/heads/main"), ("ref_type", "branch")],
            &[("environment", "production"), ("ref_protected", "true")],
            &[("event_name", "push"), ("pipeline_source", "push")],
            &[("user_login", "alice")],
            &[("actor", "octocat"), ("triggering_actor", "octocat")],
            &[("iss", "https://gitlab.com"), ("aud", "infra")],
            &[("project_path", "*")],
            &[("project_path", "**"), ("namespace_path", "*/*")],
        ] {
            assert!(!binds("", claims), "{claims:?}");
            assert!(!binds("*", claims), "{claims:?}");
        }
        // Where a pattern names a shared issuer's tenant (the GitHub owner,
        // the top GitLab group), a wildcard there takes every tenant's
        // project of that name.
        for subject in [
            "project_path:**:ref_type:branch:ref:main",
            "project_path:*/app:ref_type:branch:ref:main",
            "project_path:gr*/app:ref_type:branch:ref:main",
            "repo:*/deploy:ref:refs/heads/main",
            "repo:?cto-org/deploy:pull_request",
            "repo::ref:refs/heads/main",
        ] {
            assert!(!binds(subject, &[]), "{subject}");
            let why = binding_problem(subject, &BTreeMap::new()).unwrap();
            assert!(why.contains("leaves the owner or group open"), "{why}");
        }
        for claims in [
            &[("repository", "*/deploy")][..],
            &[("project_path", "**/app")],
            &[("namespace_path", "*")],
            &[("repository_owner", "octo-*")],
        ] {
            assert!(!binds("", claims), "{claims:?}");
        }
        // Workflow files and CI configurations name their owner too, and a
        // number with a wildcard binds a range, not a workload.
        for claims in [
            &[(
                "job_workflow_ref",
                "*/*/.github/workflows/deploy.yml@refs/heads/main",
            )][..],
            &[("workflow_ref", "**/.github/workflows/deploy.yml@**")],
            &[(
                "ci_config_ref_uri",
                "gitlab.com/**//.gitlab-ci.yml@refs/heads/main",
            )],
            &[("repository_id", "1*")],
            &[("user_access_level", "maintainer")],
            &[("groups_direct", "mygroup")],
            &[("project_visibility", "public")],
        ] {
            assert!(!binds("", claims), "{claims:?}");
        }
        assert!(binds(
            "",
            &[(
                "job_workflow_ref",
                "octo-org/infra/.github/workflows/deploy.yml@refs/heads/main"
            )]
        ));
        assert!(binds(
            "",
            &[(
                "ci_config_ref_uri",
                "gitlab.com/mygroup/app//.gitlab-ci.yml@refs/heads/main"
            )]
        ));
        assert!(binds("", &[("repository_id", "123456")]));
        // The claim `sub` is the subject by another name.
        assert!(!binds("", &[("sub", "repo:*/*:ref:refs/heads/main")]));
        assert!(binds("", &[("sub", "repo:octo-org/*:ref:refs/heads/main")]));
        assert!(binds("", &[("repository", "octo-org/*")]));
        assert!(binds("", &[("project_path", "group/**")]));

        // The refusal says what it found, and what to do.
        let why = binding_problem("", &BTreeMap::new()).unwrap();
        assert!(why.contains("(no subject; no claims)"), "{why}");
        assert!(why.contains("project_path:mygroup/myproject:ref_type:branch:ref:main"));
        assert!(why.contains("repo:my-org/my-repo:ref:refs/heads/main"));
        let why = binding_problem("*", &claim_map(&[("ref", "main")])).unwrap();
        assert!(why.contains(r#"the subject "*" pins nothing"#), "{why}");
        assert!(why.contains("ref identifies no workload"), "{why}");
        let why = binding_problem(
            "",
            &claim_map(&[("project_path", "**"), ("ref", "main"), ("sha", "*")]),
        )
        .unwrap();
        assert!(
            why.contains(r#"the claim project_path "**" pins nothing"#),
            "{why}"
        );
        assert!(why.contains("ref, sha identify no workload"), "{why}");
        // Every name in the list is a claim name, once.
        let mut names = NON_IDENTIFYING_CLAIMS.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NON_IDENTIFYING_CLAIMS.len());
    }

    /// A configuration saved before these rules is held to them at login.
    #[test]
    fn stored_configurations_are_checked_at_every_use() {
        let mut c = cfg();
        assert_eq!(config_problem(&c), None);
        let ok = json_claims(r#"{"sub":"repo:x","aud":"infra","ref":"main"}"#);
        assert_eq!(check_bounds(&ok, &c, 0), Ok(()));
        c.subject = "*".into();
        let why = config_problem(&c).unwrap();
        assert!(why.contains("binds no workload"), "{why}");
        assert!(
            matches!(check_bounds(&ok, &c, 0), Err(JwtError::Rejected(m)) if m == why),
            "an unbound configuration refuses even a JWT that meets it"
        );
        c.subject = String::new();
        c.claims.clear();
        assert!(config_problem(&c).is_some());
        c.subject = "repo:***".into();
        assert!(config_problem(&c).is_some_and(|m| m.contains("subject pattern")));
        c.subject = "repo:*".into();
        c.audiences = vec!["in***fra".into()];
        assert!(config_problem(&c).is_some_and(|m| m.contains("audiences pattern")));
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

    fn cfg() -> OidcAuthRow {
        OidcAuthRow {
            identity_id: "i".into(),
            discovery_url: "https://issuer.example".into(),
            issuer: "https://issuer.example".into(),
            ca_pem: String::new(),
            subject: "repo:x".into(),
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
