//! Prometheus metrics: requests by route and status, logins by result.
//!
//! Every label comes from a fixed set, whatever a stranger sends: the
//! method is one of the standard ones or `other`, the route is the matched
//! route template (`/api/users/{id}`, never the path asked for) or
//! `unmatched`, and the status is a number below 600. The metrics are
//! served on their own private listener (`--metrics-listen`).

use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// The method as a label: the standard ones, else `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    method: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    logins: Family<LoginLabels, Counter>,
    tokens: Counter,
    /// Fetches of providers' and issuers' discovery documents and keys.
    pub issuer_fetches: Counter,
    /// Connectors' long polls waiting now.
    pub long_polls: prometheus_client::metrics::gauge::Gauge,
    rechecks: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("infra");
        let requests = Family::<RequestLabels, Counter>::default();
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "logins",
            "Login attempts by method and result",
            logins.clone(),
        );
        let tokens = Counter::default();
        registry.register("tokens_minted", "Cluster tokens minted", tokens.clone());
        let issuer_fetches = Counter::default();
        registry.register(
            "issuer_fetches",
            "Fetches of identity providers' and workload issuers' discovery documents and keys",
            issuer_fetches.clone(),
        );
        let long_polls = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "long_polls",
            "Long polls waiting for a change (at most --max-long-polls)",
            long_polls.clone(),
        );
        let rechecks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "idp_rechecks",
            "Re-checks with identity providers by result",
            rechecks.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            logins,
            tokens,
            issuer_fetches,
            long_polls,
            rechecks,
        }
    }

    pub fn token_minted(&self) {
        self.tokens.inc();
    }

    pub fn recheck(&self, result: &str) {
        self.rechecks
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn login(&self, method: &str, result: &str) {
        self.logins
            .get_or_create(&LoginLabels {
                method: method.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let resp = next.run(req).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
