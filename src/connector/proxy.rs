//! The impersonating proxy: verify the user's token, replace every
//! credential and impersonation header with the connector's own token and
//! `Impersonate-User`/`Impersonate-Group`, and relay the request and the
//! response without buffering: chunked watch streams flow as they come, and
//! HTTP upgrades (SPDY and WebSocket, for exec, attach and port-forward)
//! become a byte pipe between the two sides.
//!
//! - **Nested impersonation** (`kubectl --as`, `--as-group`): allowed only
//!   when a SubjectAccessReview says the signed-in person may impersonate
//!   what they ask for, as Pinniped does; the real person goes along as the
//!   extra `infra.dev/original-user`. Otherwise 403, never ignored.
//! - **Audit**: every request carries the extras `infra.dev/client-address`
//!   and `infra.dev/request-id` into the cluster's audit log, and the
//!   connector logs one line per request (and a start and an end line with
//!   the bytes each way for exec, attach and port-forward).
//! - **The connector's own credential**: an upstream 401 means the API
//!   server refused the connector's service-account token, not the user:
//!   it is answered 503 naming the connector, and logged loudly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::Connector;
use super::auth::Rejection;

/// A Kubernetes `Status` error, the shape kubectl prints.
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    resp.extensions_mut().insert(Made(message.to_string()));
    resp
}

/// Marks an answer the connector made itself (not the API server's), with
/// its message.
#[derive(Clone)]
struct Made(String);

/// What [`handle`] learns of a request as [`serve`] goes: who asked (once
/// their token is verified), and whether its log line is written.
#[derive(Default)]
struct Trail {
    user: Option<String>,
    logged: bool,
}

/// Every request on the users' port: [`serve`]d, with one log line whatever
/// happened. An answer the connector made itself to kubectl's API
/// discovery (`/api`, `/apis/…`) is plain text: client-go shows a
/// discovery failure's body only then ("unknown" otherwise), and the
/// message says what is wrong.
pub async fn handle(State(c): State<Arc<Connector>>, req: Request) -> Response {
    let started = Instant::now();
    let asked = Asked::of(&req);
    let mut trail = Trail::default();
    let resp = serve(c, req, &asked, &mut trail).await;
    let Some(Made(message)) = resp.extensions().get::<Made>().cloned() else {
        return resp;
    };
    let Asked {
        client,
        method,
        path,
        rid,
    } = asked;
    if !trail.logged {
        tracing::info!(user = trail.user.as_deref().unwrap_or("-"),
            verb = kube_verb(&method, &path), method = %method,
            path = %path, status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64, client = ?client,
            request_id = %rid, reason = %crate::api::clip(&message, 200), "request");
    }
    if is_discovery(&path) {
        // client-go shows its own words for a 503 whatever the body says;
        // a 502 (the connector is the gateway that failed) shows ours.
        let code = match resp.status() {
            StatusCode::SERVICE_UNAVAILABLE => StatusCode::BAD_GATEWAY,
            other => other,
        };
        return (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response();
    }
    resp
}

/// What a request asks, and the id [`handle`] gave it.
struct Asked {
    client: Option<std::net::IpAddr>,
    method: axum::http::Method,
    path: String,
    rid: String,
}

impl Asked {
    fn of(req: &Request) -> Asked {
        Asked {
            client: crate::edge::client_ip(req.extensions(), req.headers()),
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            rid: request_id(),
        }
    }
}

/// Whether `path` is kubectl's API discovery: `/api`, `/apis`, `/api/v1`,
/// `/apis/GROUP`, `/apis/GROUP/VERSION`.
fn is_discovery(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    matches!(
        parts.as_slice(),
        ["api"] | ["api", _] | ["apis"] | ["apis", _] | ["apis", _, _]
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    // Exactly one Authorization header: a second one is an attempt to confuse.
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Headers that describe one hop, never forwarded (RFC 9110 7.6.1); the
/// upgrade pair is put back for upgrade requests.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        && headers.contains_key(header::UPGRADE)
}

/// Whether `Upgrade` names WebSocket (asked for, or switched to).
fn upgrades_to_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The WebSocket subprotocol the API server chose ("" for none).
fn websocket_protocol(headers: &HeaderMap) -> &str {
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map_or("", str::trim)
}

/// The extras infra adds to every impersonated request.
pub const EXTRA_ORIGINAL_USER: &str = "infra.dev/original-user";
pub const EXTRA_CLIENT_ADDRESS: &str = "infra.dev/client-address";
pub const EXTRA_REQUEST_ID: &str = "infra.dev/request-id";

/// `Impersonate-Extra-<key>` with the key percent-encoded as Kubernetes
/// expects (lower case; `/` and other reserved characters escaped).
fn extra_header(key: &str) -> Option<HeaderName> {
    let mut name = String::from("impersonate-extra-");
    for b in key.to_ascii_lowercase().bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02x}"));
        }
    }
    HeaderName::from_bytes(name.as_bytes()).ok()
}

/// The key of an `Impersonate-Extra-` header, decoded.
fn extra_key(header: &str) -> Option<String> {
    let enc = header.strip_prefix("impersonate-extra-")?;
    let bytes = enc.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let v = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Who the client asked to act as (`kubectl --as`, `--as-group`, `--as-uid`,
/// `--as-user-extra`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Requested {
    user: Option<String>,
    groups: Vec<String>,
    uid: Option<String>,
    extras: Vec<(String, Vec<String>)>,
}

impl Requested {
    fn from(headers: &HeaderMap) -> Result<Option<Requested>, String> {
        let mut r = Requested::default();
        let mut any = false;
        for (name, value) in headers {
            let n = name.as_str();
            if !n.starts_with("impersonate-") {
                continue;
            }
            any = true;
            // UTF-8, as the API server takes it (names are not all ASCII).
            let v = String::from_utf8(value.as_bytes().to_vec())
                .map_err(|_| format!("the {n} header is not UTF-8 text"))?;
            match n {
                "impersonate-user" if r.user.is_some() => {
                    return Err("more than one Impersonate-User header".into());
                }
                "impersonate-user" => r.user = Some(v),
                "impersonate-group" => r.groups.push(v),
                "impersonate-uid" => r.uid = Some(v),
                _ => match extra_key(n) {
                    Some(k) => match r.extras.iter_mut().find(|(key, _)| *key == k) {
                        Some((_, vals)) => vals.push(v),
                        None => r.extras.push((k, vec![v])),
                    },
                    None => return Err(format!("unknown impersonation header {n}")),
                },
            }
        }
        if !any {
            return Ok(None);
        }
        if r.user.is_none() {
            return Err(
                "impersonating groups, a uid or extras needs a user too (kubectl --as)".into(),
            );
        }
        // infra's own audit extras name the real person and where they are:
        // nobody writes them but the connector.
        if let Some((k, _)) = r.extras.iter().find(|(k, _)| k.starts_with("infra.dev/")) {
            return Err(format!(
                "the extra {k:?} is infra's own (in the cluster's audit log) and cannot be set \
                 with --as-user-extra"
            ));
        }
        Ok(Some(r))
    }

    /// The SubjectAccessReview resource attributes each part needs, as the
    /// API server checks them: (api group, resource, subresource, namespace, name).
    fn checks(&self) -> Vec<(&'static str, &'static str, String, String, String)> {
        let mut out = Vec::new();
        if let Some(u) = &self.user {
            // As the API server splits it: exactly NAMESPACE:NAME, or a user.
            match u
                .strip_prefix("system:serviceaccount:")
                .and_then(|r| r.split_once(':'))
                .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
            {
                Some((ns, name)) => out.push((
                    "",
                    "serviceaccounts",
                    String::new(),
                    ns.to_string(),
                    name.to_string(),
                )),
                None => out.push(("", "users", String::new(), String::new(), u.clone())),
            }
        }
        for g in &self.groups {
            out.push(("", "groups", String::new(), String::new(), g.clone()));
        }
        if let Some(uid) = &self.uid {
            out.push((
                "authentication.k8s.io",
                "uids",
                String::new(),
                String::new(),
                uid.clone(),
            ));
        }
        for (k, vals) in &self.extras {
            for v in vals {
                out.push((
                    "authentication.k8s.io",
                    "userextras",
                    k.clone(),
                    String::new(),
                    v.clone(),
                ));
            }
        }
        out
    }
}

/// Why a nested impersonation was not allowed.
enum NotAllowed {
    /// The API server says this person may not (403 to them).
    Refused(String),
    /// The connector could not ask (its own credential or permission, or
    /// the API server): not the person's doing (503, logged).
    CannotAsk(String),
}

/// Asks the API server whether the signed-in person may impersonate each
/// part of `r`; the first refusal, in the API server's words.
async fn authorize_nested(
    c: &Connector,
    who: &super::auth::Claims,
    r: &Requested,
    auth: Option<&HeaderValue>,
) -> Result<(), NotAllowed> {
    // The person as the API server sees them when the connector
    // impersonates them: with the group every authenticated user has.
    let mut groups = who.groups.clone();
    groups.push("system:authenticated".to_string());
    for (group, resource, sub, ns, name) in r.checks() {
        let review = serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": who.name,
                "groups": groups,
                "resourceAttributes": {
                    "verb": "impersonate", "group": group, "resource": resource,
                    "subresource": sub, "namespace": ns, "name": name,
                },
            },
        });
        let mut req = axum::http::Request::builder()
            .method("POST")
            .uri(format!(
                "{}/apis/authorization.k8s.io/v1/subjectaccessreviews",
                c.kube_api
            ))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(review.to_string()))
            .map_err(|e| NotAllowed::CannotAsk(e.to_string()))?;
        if let Some(a) = auth {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        let resp = c.upstream.requests.request(req).await.map_err(|e| {
            NotAllowed::CannotAsk(format!(
                "cannot reach the API server for an access review: {e}"
            ))
        })?;
        let status_code = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| NotAllowed::CannotAsk(e.to_string()))?
            .to_bytes();
        if status_code == StatusCode::UNAUTHORIZED {
            return Err(NotAllowed::CannotAsk(
                "the API server refused the connector's own credential (401)".into(),
            ));
        }
        if !status_code.is_success() {
            return Err(NotAllowed::CannotAsk(format!(
                "the API server did not take the connector's access review ({status_code}): its \
                 ClusterRole needs create on subjectaccessreviews"
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| NotAllowed::CannotAsk(format!("an access review answer: {e}")))?;
        if v["status"]["allowed"] != serde_json::Value::Bool(true) {
            let what = if sub.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{sub}")
            };
            let reason = v["status"]["reason"].as_str().unwrap_or_default();
            return Err(NotAllowed::Refused(format!(
                "{what} {name:?} is forbidden: {} may not impersonate it{}",
                who.name,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            )));
        }
    }
    Ok(())
}

/// A 503 for what is wrong with the connector, not with the person (who is
/// not sent to `infra login` for it).
fn connector_unavailable(c: &Connector, why: &str) -> Response {
    status(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        &format!(
            "the infra connector of {} cannot serve this request: {why}; this is not your \
             login: tell the cluster's administrator",
            c.name
        ),
    )
}

/// The Kubernetes verb of a request, as the API server's audit log names
/// it: get, list and watch for reads (a collection is listed, `?watch`
/// watches), create, update, patch, delete, deletecollection for writes.
fn kube_verb(method: &axum::http::Method, path: &str) -> &'static str {
    use axum::http::Method;
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // After /api/v1 or /apis/GROUP/VERSION: the resource path.
    let rest: &[&str] = match parts.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return method_verb(method),
    };
    let rest = match rest {
        ["namespaces", _, r @ ..] if !r.is_empty() => r,
        r => r,
    };
    let collection = rest.len() == 1;
    let watching = query
        .split('&')
        .any(|kv| kv == "watch=1" || kv == "watch=true");
    match *method {
        Method::GET if watching => "watch",
        Method::GET if collection => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// The verb of a request outside the resource paths (/version, /healthz).
fn method_verb(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// Whether `path` goes through the API server to a pod, service or node
/// (`…/pods/NAME/proxy/…`): what answers there is that workload.
fn is_proxy_subresource(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    parts
        .windows(3)
        .any(|w| matches!(w[0], "pods" | "services" | "nodes") && w[2] == "proxy")
}

/// A short random id for one request, in logs and the cluster's audit log.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}{n:08x}", crate::web::random_from(8, b"0123456789abcdef"))
}

async fn serve(c: Arc<Connector>, mut req: Request, asked: &Asked, trail: &mut Trail) -> Response {
    let started = Instant::now();
    let (client, method, path, rid) = (
        asked.client,
        asked.method.clone(),
        asked.path.clone(),
        asked.rid.clone(),
    );
    // Its log line is written by `handle` (no user: no valid token).
    let refused = |r: Rejection| {
        c.metrics.rejected(r.reason());
        status(StatusCode::UNAUTHORIZED, "Unauthorized", r.message())
    };
    let Some(token) = bearer(req.headers()) else {
        return refused(Rejection::Missing);
    };
    let claims = match c.verifier.verify(token).await {
        Ok(claims) => claims,
        Err(r) => return refused(r),
    };
    trail.user = Some(claims.name.clone());
    let own_auth = match c.credential.authorization().await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e:#}");
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the connector cannot read its own credentials",
            );
        }
    };
    // Asked to act as someone else: only what the API server lets this
    // person impersonate, never silently dropped.
    let nested = match Requested::from(req.headers()) {
        Ok(n) => n,
        Err(why) => return status(StatusCode::BAD_REQUEST, "BadRequest", &why),
    };
    if let Some(n) = &nested {
        match authorize_nested(&c, &claims, n, own_auth.as_ref()).await {
            Ok(()) => {}
            // Logged by `handle`, with why.
            Err(NotAllowed::Refused(why)) => {
                return status(StatusCode::FORBIDDEN, "Forbidden", &why);
            }
            Err(NotAllowed::CannotAsk(why)) => {
                tracing::error!(request_id = %rid, credential = %c.credential.describe(),
                    "cannot check a kubectl --as with the API server: {why}");
                return connector_unavailable(&c, &why);
            }
        }
    }

    let upgrade = is_upgrade(req.headers());
    // An exec or attach that must be recorded: only over WebSocket, whose
    // frames the recorder reads (SPDY's are compressed per connection).
    let record = match (upgrade, SessionTarget::of(&path)) {
        (true, Some(t)) if must_record(&c, &claims, &t.namespace) => Some(t),
        _ => None,
    };
    if record.is_some() && !upgrades_to_websocket(req.headers()) {
        // kubectl 1.30+ falls back to SPDY when its WebSocket is refused:
        // tell it why the WebSocket was, not about SPDY.
        if let Some(refusal) = c.recent_refusal(&claims.sub, &path) {
            return refusal;
        }
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "exec and attach on {} are recorded, and this kubectl asked for SPDY, which the \
                 recorder cannot read: use kubectl 1.30 or later (WebSocket), or set \
                 KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true with kubectl 1.29",
                c.name
            ),
        );
    }
    let client_upgrade = if upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let (mut parts, body) = req.into_parts();

    // Who the user is comes from the verified token and nothing else; where
    // they are, from the edge (the API server's audit log records
    // X-Forwarded-For: a client must not write its own).
    let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
    let names: Vec<HeaderName> = parts.headers.keys().cloned().collect();
    for name in names {
        let n = name.as_str();
        if n == "authorization"
            || n.starts_with("impersonate-")
            || HOP_BY_HOP.contains(&n)
            || n == "host"
            || n == "x-forwarded-for"
            || n == "x-real-ip"
            || n == "forwarded"
        {
            parts.headers.remove(&name);
        }
    }
    if let Some(ip) = client
        && let Ok(v) = HeaderValue::from_str(&ip.to_string())
    {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    let h = &mut parts.headers;
    // Names go as UTF-8 bytes (josé@example.com), as client-go sends them;
    // only control characters cannot go at all.
    let set = |h: &mut HeaderMap, k: HeaderName, v: &str| -> bool {
        match HeaderValue::from_bytes(v.as_bytes()) {
            Ok(v) => {
                h.append(k, v);
                true
            }
            Err(_) => false,
        }
    };
    let user_h = HeaderName::from_static("impersonate-user");
    let group_h = HeaderName::from_static("impersonate-group");
    let mut extras: Vec<(String, String)> = vec![(EXTRA_REQUEST_ID.into(), rid.clone())];
    if let Some(ip) = client {
        extras.push((EXTRA_CLIENT_ADDRESS.into(), ip.to_string()));
    }
    let as_user = match &nested {
        Some(n) => {
            extras.push((EXTRA_ORIGINAL_USER.into(), claims.name.clone()));
            for (k, vals) in &n.extras {
                for v in vals {
                    extras.push((k.clone(), v.clone()));
                }
            }
            n.user.clone().unwrap_or_default()
        }
        None => claims.name.clone(),
    };
    let groups = match &nested {
        Some(n) => n.groups.clone(),
        None => claims.groups.clone(),
    };
    let mut ok = set(h, user_h, &as_user) && groups.iter().all(|g| set(h, group_h.clone(), g));
    if let Some(uid) = nested.as_ref().and_then(|n| n.uid.as_deref()) {
        ok &= set(h, HeaderName::from_static("impersonate-uid"), uid);
    }
    for (k, v) in &extras {
        ok &= extra_header(k).is_some_and(|name| set(h, name, v));
    }
    if !ok {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the user or a group name cannot be sent to Kubernetes",
        );
    }
    // The connector's own credential, never the user's infra token (a
    // client certificate is presented in TLS instead).
    match own_auth {
        Some(v) => {
            h.insert(header::AUTHORIZATION, v);
        }
        None => {
            h.remove(header::AUTHORIZATION);
        }
    }
    if let (true, Some(u)) = (upgrade, upgrade_value) {
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, u);
    }
    parts.uri = match format!("{}{}", c.kube_api, path).parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "bad request path"),
    };
    parts.version = axum::http::Version::HTTP_11;

    let upstream = if upgrade {
        &c.upstream.upgrades
    } else {
        &c.upstream.requests
    };
    let resp = match upstream
        .request(axum::http::Request::from_parts(parts, body))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(request_id = %rid, "upstream {method} {path} failed: {e}");
            c.metrics.proxied(502, started.elapsed());
            return status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                "the cluster's API server cannot be reached from the connector",
            );
        }
    };
    let code = resp.status();
    c.metrics.proxied(code.as_u16(), started.elapsed());
    // The user was verified here; the API server only saw the connector's
    // own credential, and the impersonation the connector asked for. A 401
    // from the API server's authentication is about that credential, and
    // a refusal to impersonate is about the connector's permissions: not
    // the user's doing, so they are not sent to `infra login` for it. (A
    // 401 a proxied service or an aggregated API gives is theirs to pass.)
    let resp = if matches!(code, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        && !is_proxy_subresource(&path)
    {
        let (parts, body) = resp.into_parts();
        let bytes =
            match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, 64 * 1024))
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => axum::body::Bytes::new(),
            };
        // A Status, in JSON or (asked for by the client) protobuf, whose
        // strings are kept as they are: looked for in the bytes.
        let said: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let protobuf = bytes.starts_with(b"k8s\0");
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        let message = match said["message"].as_str() {
            Some(m) => m.to_string(),
            None if protobuf => String::from_utf8_lossy(&bytes)
                .split(|c: char| c.is_control())
                .find(|p| p.contains("cannot impersonate"))
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        };
        let own_fault = (said["kind"] == "Status" || protobuf)
            && if code == StatusCode::UNAUTHORIZED {
                said["reason"] == "Unauthorized" || (protobuf && has(b"Unauthorized"))
            } else {
                has(b"cannot impersonate resource")
            };
        if own_fault {
            let why = if code == StatusCode::UNAUTHORIZED {
                "the API server refused the connector's own credential (401)".to_string()
            } else {
                format!("the connector may not impersonate this person: {message}")
            };
            tracing::error!(request_id = %rid, credential = %c.credential.describe(), "{why}");
            return connector_unavailable(&c, &why);
        }
        axum::http::Response::from_parts(parts, Body::from(bytes))
    } else {
        resp.map(Body::new)
    };
    let shown_user = match &nested {
        Some(_) => format!("{} as {as_user}", claims.name),
        None => claims.name.clone(),
    };
    tracing::info!(
        user = %shown_user,
        verb = kube_verb(&method, &path),
        method = %method,
        path = %path,
        status = code.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        client = ?client,
        request_id = %rid,
        "request"
    );
    trail.logged = true;

    // A plain request ends in moments: only what stays open (exec,
    // attach, port-forward, watches, `logs -f`) is followed, so that the
    // server is asked about people with streams open, not about everyone.
    let (parts, body) = resp.into_parts();
    if code != StatusCode::SWITCHING_PROTOCOLS && !is_watch(&path) && !is_follow(&path) {
        return Response::from_parts(parts, Body::new(body));
    }
    let resp = axum::http::Response::from_parts(parts, body);
    // Open until it ends: cut if the person's access goes (see `streams`).
    let holder = crate::api::AccessHolder {
        sub: claims.sub.clone(),
        sid: claims.sid.clone(),
        groups: claims.groups.clone(),
        namespace: namespace_of(&path).map(str::to_string),
    };
    let (ticket, cut) = c.streams.open(holder, &shown_user, &path);

    if code == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return status(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                "the API server switched protocols unasked",
            );
        };
        let mut resp = resp;
        // Exec and attach over WebSocket speak the binary channel
        // protocols, where a cut can end with a status on the error
        // channel; port-forward's frames (a tunnelled SPDY session, or a
        // port's own error channel) get no such frame, only the close.
        let websocket = upgrades_to_websocket(resp.headers())
            && matches!(
                websocket_protocol(resp.headers()),
                "v5.channel.k8s.io" | "v4.channel.k8s.io" | "channel.k8s.io"
            );
        let recorder = match &record {
            Some(t) => match start_recording(&c, &claims, t, client, resp.headers(), &ticket).await
            {
                Ok(r) => Some(r),
                Err((code, message)) => {
                    c.remember_refusal(&claims.sub, &path, code, &message);
                    return status(
                        code,
                        code.canonical_reason().unwrap_or("Forbidden"),
                        &message,
                    );
                }
            },
            None => None,
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _ticket = ticket;
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client_io, upstream_io)) => {
                    tracing::info!(user = %shown_user, path = %path, request_id = %rid, "session started");
                    let began = Instant::now();
                    // A side that hangs up without a goodbye ends it too.
                    let moved = super::pipe::relay(
                        TokioIo::new(client_io),
                        TokioIo::new(upstream_io),
                        websocket,
                        cut,
                        recorder.as_deref(),
                    )
                    .await;
                    if let Some(r) = &recorder {
                        r.finish(moved.cut.as_ref()).await;
                    }
                    tracing::info!(
                        user = %shown_user,
                        path = %path,
                        request_id = %rid,
                        bytes_in = moved.up,
                        bytes_out = moved.down,
                        secs = began.elapsed().as_secs(),
                        cut = moved.cut.as_ref().map(|c| c.reason.as_str()),
                        recording = recorder.as_ref().map(|r| r.session.id.as_str()),
                        "session ended"
                    );
                }
                Err(e) => {
                    tracing::warn!(request_id = %rid, "upgrade failed: {e}");
                    if let Some(r) = &recorder {
                        r.finish(None).await;
                    }
                }
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let json_watch = is_watch(&path)
        && resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        Body::new(super::pipe::Guarded::new(body, ticket, cut, json_watch)),
    )
}

/// An exec or attach request: where, and what.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionTarget {
    pub kind: &'static str,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
}

impl SessionTarget {
    /// `/api/v1/namespaces/NS/pods/POD/exec?command=…&container=…` (or
    /// `/attach`).
    pub fn of(path: &str) -> Option<SessionTarget> {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
        let ["api", "v1", "namespaces", ns, "pods", pod, sub] = parts.as_slice() else {
            return None;
        };
        let kind = match *sub {
            "exec" => "exec",
            "attach" => "attach",
            _ => return None,
        };
        let mut t = SessionTarget {
            kind,
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: String::new(),
            command: Vec::new(),
        };
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            match &*k {
                "command" => t.command.push(v.into_owned()),
                "container" => t.container = v.into_owned(),
                _ => {}
            }
        }
        Some(t)
    }
}

/// Whether a session of this person in `namespace` must be recorded: the
/// connector records all, or a grant that applies asks for it. Before the
/// grants are first read, it is recorded (never the other way round).
fn must_record(c: &Connector, claims: &super::auth::Claims, namespace: &str) -> bool {
    if c.record_all {
        return true;
    }
    let grants = c.grants.borrow().clone();
    let Some(grants) = grants else {
        return true;
    };
    let here = format!("{}.{namespace}", c.name);
    grants.iter().any(|g| {
        g.record_sessions
            && (g.destination == c.name || g.destination == here)
            && (g.user.as_deref() == Some(claims.sub.as_str())
                || g.identity.as_deref() == Some(claims.sub.as_str())
                || (g.group.is_some() && claims.groups.contains(&g.subject_name)))
    })
}

/// Starts the recording of an upgraded exec or attach; the answer that
/// refuses the session when it cannot be recorded.
async fn start_recording(
    c: &Arc<Connector>,
    claims: &super::auth::Claims,
    t: &SessionTarget,
    client: Option<std::net::IpAddr>,
    resp: &HeaderMap,
    ticket: &super::streams::Ticket,
) -> Result<Arc<super::recorder::Recorder>, (StatusCode, String)> {
    let protocol = websocket_protocol(resp);
    if protocol != "v5.channel.k8s.io" && protocol != "v4.channel.k8s.io" {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "exec and attach on {} are recorded, and the session would use the protocol \
                 {protocol:?}, which the recorder cannot read: use kubectl 1.30 or later",
                c.name
            ),
        ));
    }
    let req = crate::api::CreateSessionRequest {
        destination: c.name.clone(),
        namespace: t.namespace.clone(),
        pod: t.pod.clone(),
        container: t.container.clone(),
        kind: t.kind.to_string(),
        command: super::recorder::shell_words(&t.command),
        user_id: claims.sub.clone(),
        user: claims.name.clone(),
        client_address: client.map(|ip| ip.to_string()).unwrap_or_default(),
    };
    match super::recorder::Recorder::start(
        c.server.clone(),
        req,
        c.max_session_bytes,
        ticket.cutter(),
    )
    .await
    {
        Ok(r) => {
            tracing::info!(session = %r.session.id, user = %claims.name, "recording the session");
            Ok(r)
        }
        Err(e) => {
            tracing::error!(user = %claims.name, "cannot start a session's recording, so the session is refused: {e:#}");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "exec and attach on {} are recorded, and the recording cannot start, so \
                     the session was not started: {e}",
                    c.name
                ),
            ))
        }
    }
}

/// The namespace a request path is in (`/api/v1/namespaces/web/pods`,
/// `/apis/apps/v1/watch/namespaces/web/deployments`), if any.
pub fn namespace_of(path: &str) -> Option<&str> {
    let path = path.split('?').next().unwrap_or_default();
    let mut parts = path.trim_start_matches('/').split('/');
    // /api/v1/... or /apis/GROUP/VERSION/...
    match parts.next()? {
        "api" => {
            parts.next()?;
        }
        "apis" => {
            parts.next()?;
            parts.next()?;
        }
        _ => return None,
    }
    let mut next = parts.next()?;
    if next == "watch" {
        next = parts.next()?;
    }
    if next != "namespaces" {
        return None;
    }
    parts.next().filter(|ns| !ns.is_empty())
}

/// Whether a request path follows a log (`?follow=true`).
fn is_follow(path: &str) -> bool {
    path.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| kv == "follow=true" || kv == "follow=1" || kv == "follow")
    })
}

/// Whether a request path asks for a watch (`?watch=true`, `/watch/`).
fn is_watch(path: &str) -> bool {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    p.contains("/watch/")
        || q.split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_verbs() {
        use axum::http::Method;
        let v = |m: Method, p: &str| kube_verb(&m, p);
        assert_eq!(v(Method::GET, "/api/v1/namespaces/a/pods"), "list");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/a/pods/web"), "get");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/a/pods?watch=1"), "watch");
        assert_eq!(v(Method::GET, "/api/v1/namespaces"), "list");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/a"), "get");
        assert_eq!(v(Method::GET, "/apis/apps/v1/deployments"), "list");
        assert_eq!(
            v(
                Method::POST,
                "/api/v1/namespaces/a/pods/web/exec?command=sh"
            ),
            "create"
        );
        assert_eq!(
            v(Method::DELETE, "/api/v1/namespaces/a/pods"),
            "deletecollection"
        );
        assert_eq!(
            v(Method::PATCH, "/apis/apps/v1/namespaces/a/deployments/d"),
            "patch"
        );
        assert_eq!(v(Method::GET, "/version"), "get");
    }

    #[test]
    fn proxy_subresources_are_the_workloads_own() {
        assert!(is_proxy_subresource(
            "/api/v1/namespaces/a/pods/web/proxy/x?y=1"
        ));
        assert!(is_proxy_subresource(
            "/api/v1/namespaces/a/services/web:80/proxy/"
        ));
        assert!(is_proxy_subresource("/api/v1/nodes/n1/proxy/metrics"));
        assert!(!is_proxy_subresource("/api/v1/namespaces/proxy/pods"));
        assert!(!is_proxy_subresource("/api/v1/namespaces/a/pods/web/log"));
    }

    #[test]
    fn exec_and_attach_targets() {
        let t = SessionTarget::of(
            "/api/v1/namespaces/web/pods/api-1/exec?command=sh&command=-c&command=echo%20hi&container=app&stdin=true",
        )
        .unwrap();
        assert_eq!(t.kind, "exec");
        assert_eq!((t.namespace.as_str(), t.pod.as_str()), ("web", "api-1"));
        assert_eq!(t.container, "app");
        assert_eq!(t.command, ["sh", "-c", "echo hi"]);
        assert_eq!(
            SessionTarget::of("/api/v1/namespaces/web/pods/api-1/attach")
                .unwrap()
                .kind,
            "attach"
        );
        assert!(SessionTarget::of("/api/v1/namespaces/web/pods/api-1/portforward").is_none());
        assert!(SessionTarget::of("/api/v1/namespaces/web/pods/api-1").is_none());
    }

    #[test]
    fn namespaces_of_paths() {
        assert_eq!(namespace_of("/api/v1/namespaces/web/pods"), Some("web"));
        assert_eq!(
            namespace_of("/apis/apps/v1/watch/namespaces/web/deployments?x=1"),
            Some("web")
        );
        assert_eq!(namespace_of("/api/v1/pods?watch=true"), None);
        assert_eq!(namespace_of("/api/v1/namespaces/web"), Some("web"));
        assert_eq!(namespace_of("/version"), None);
        assert!(is_watch("/api/v1/pods?watch=true&resourceVersion=1"));
        assert!(is_watch("/api/v1/watch/pods"));
        assert!(!is_watch("/api/v1/pods?watchful=1"));
        assert!(is_follow(
            "/api/v1/namespaces/a/pods/b/log?container=c&follow=true"
        ));
        assert!(!is_follow("/api/v1/namespaces/a/pods/b/log"));
    }

    #[test]
    fn extra_keys_round_trip_as_kubernetes_encodes_them() {
        let h = extra_header("infra.dev/original-user").unwrap();
        assert_eq!(h.as_str(), "impersonate-extra-infra.dev%2foriginal-user");
        assert_eq!(
            extra_key(h.as_str()).as_deref(),
            Some("infra.dev/original-user")
        );
        assert_eq!(
            extra_key("impersonate-extra-scopes").as_deref(),
            Some("scopes")
        );
    }

    #[test]
    fn requested_impersonation() {
        let mut h = HeaderMap::new();
        assert_eq!(Requested::from(&h), Ok(None));
        h.append("impersonate-group", "dev".parse().unwrap());
        assert!(Requested::from(&h).is_err(), "groups need a user");
        h.append("impersonate-user", "bob".parse().unwrap());
        h.append("impersonate-extra-scopes", "a".parse().unwrap());
        h.append("impersonate-extra-scopes", "b".parse().unwrap());
        let r = Requested::from(&h).unwrap().unwrap();
        assert_eq!(r.user.as_deref(), Some("bob"));
        assert_eq!(r.groups, ["dev"]);
        assert_eq!(
            r.extras,
            [("scopes".to_string(), vec!["a".into(), "b".into()])]
        );
        let checks = r.checks();
        assert_eq!(checks.len(), 4);
        assert_eq!(checks[0].1, "users");
        assert_eq!(checks[3].1, "userextras");
        assert_eq!(checks[3].2, "scopes");
        let mut sa = HeaderMap::new();
        sa.append(
            "impersonate-user",
            "system:serviceaccount:kube-system:default".parse().unwrap(),
        );
        let c = Requested::from(&sa).unwrap().unwrap().checks();
        assert_eq!(
            (c[0].1, c[0].3.as_str(), c[0].4.as_str()),
            ("serviceaccounts", "kube-system", "default")
        );
        // More parts than NAMESPACE:NAME: the API server takes it for a user.
        let mut odd = HeaderMap::new();
        odd.append(
            "impersonate-user",
            "system:serviceaccount:a:b:c".parse().unwrap(),
        );
        let c = Requested::from(&odd).unwrap().unwrap().checks();
        assert_eq!(
            (c[0].1, c[0].4.as_str()),
            ("users", "system:serviceaccount:a:b:c")
        );
    }
}
