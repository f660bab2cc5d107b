//! The impersonating proxy: verify the user's token, replace every
//! credential and impersonation header with the connector's own token and
//! `Impersonate-User`/`Impersonate-Group`, and relay the request and the
//! response without buffering: chunked watch streams flow as they come, and
//! HTTP upgrades (SPDY and WebSocket, for exec, attach and port-forward)
//! become a byte pipe between the two sides.

use std::sync::Arc;
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
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
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

pub async fn handle(State(c): State<Arc<Connector>>, mut req: Request) -> Response {
    let started = Instant::now();
    let Some(token) = bearer(req.headers()) else {
        c.metrics.rejected(Rejection::Missing.reason());
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            Rejection::Missing.message(),
        );
    };
    let claims = match c.verifier.verify(token).await {
        Ok(claims) => claims,
        Err(r) => {
            c.metrics.rejected(r.reason());
            let client = crate::edge::client_ip(req.extensions(), req.headers());
            tracing::debug!(reason = r.reason(), client = ?client, "refused a token");
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", r.message());
        }
    };
    let sa_token = match c.token.token() {
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

    let upgrade = is_upgrade(req.headers());
    let client_upgrade = if upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let client = crate::edge::client_ip(req.extensions(), req.headers());
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
    let set = |h: &mut HeaderMap, k: &'static str, v: &str| -> bool {
        match HeaderValue::from_str(v) {
            Ok(v) => {
                h.append(HeaderName::from_static(k), v);
                true
            }
            Err(_) => false,
        }
    };
    if !set(h, "impersonate-user", &claims.name)
        || !claims.groups.iter().all(|g| set(h, "impersonate-group", g))
    {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the user or a group name cannot be sent to Kubernetes",
        );
    }
    match HeaderValue::from_str(&format!("Bearer {sa_token}")) {
        Ok(v) => {
            h.insert(header::AUTHORIZATION, v);
        }
        Err(_) => {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the connector's token is not a valid header",
            );
        }
    }
    if let (true, Some(u)) = (upgrade, upgrade_value) {
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, u);
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = match format!("{}{}", c.kube_api, path).parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "bad request path"),
    };
    parts.version = axum::http::Version::HTTP_11;

    let method = parts.method.clone();
    let resp = match c
        .upstream
        .request(axum::http::Request::from_parts(parts, body))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("upstream {method} {path} failed: {e}");
            c.metrics.proxied(502, started.elapsed());
            return status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                "the cluster's API server cannot be reached from the connector",
            );
        }
    };
    c.metrics.proxied(resp.status().as_u16(), started.elapsed());

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return status(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                "the API server switched protocols unasked",
            );
        };
        let mut resp = resp;
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client_io, upstream_io)) => {
                    let mut a = TokioIo::new(client_io);
                    let mut b = TokioIo::new(upstream_io);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
                Err(e) => tracing::warn!("upgrade failed: {e}"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::new(body))
}
