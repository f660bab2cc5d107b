//! `infra connector`: runs next to a cluster's API server, registers its
//! destination with the infra server, verifies the cluster tokens users'
//! kubectl presents, and proxies their requests as them (impersonation),
//! keeping the cluster's RBAC in step with infra's grants.
//!
//! The connector talks to the infra server over HTTP only, through
//! `client`; it never imports the server, the CLI or this machine's files.

pub mod auth;
pub mod pipe;
pub mod proxy;
pub mod rbac;
pub mod recorder;
pub mod streams;
pub mod upstream;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use clap::Args;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use secrecy::SecretString;
use serde::Deserialize;

use crate::api::{CreateDestinationRequest, Destination};
use crate::client::{Client, Trust};

/// Flags of `infra connector`; each also reads `INFRA_CONNECTOR_*` and the
/// `--config` YAML file (flags < environment < nothing: flags and
/// environment win over the file).
#[derive(Debug, Clone, Args)]
pub struct ConnectorArgs {
    /// How to write logs: text, or json (one object per line)
    #[arg(long, env = "INFRA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::edge::LogFormat,

    /// The infra server's URL (https://infra.example.com)
    #[arg(long, env = "INFRA_CONNECTOR_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// A connector access key (`infra keys add --connector`)
    #[arg(
        long,
        env = "INFRA_CONNECTOR_ACCESS_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub access_key: Option<SecretString>,
    /// Read the connector access key from this file instead (kept out of `ps` and the environment)
    #[arg(
        long,
        env = "INFRA_CONNECTOR_ACCESS_KEY_FILE",
        value_name = "FILE",
        conflicts_with = "access_key"
    )]
    pub access_key_file: Option<PathBuf>,
    /// The destination name users see (e.g. prod)
    #[arg(long, env = "INFRA_CONNECTOR_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Address to serve on [default: 0.0.0.0:8443]
    #[arg(long, env = "INFRA_CONNECTOR_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// HOST:PORT users reach this connector at (written into their kubeconfig)
    #[arg(long, env = "INFRA_CONNECTOR_ENDPOINT", value_name = "HOST:PORT")]
    pub endpoint: Option<String>,
    /// CA certificate (PEM) that signs the serving certificate [default: generated and kept]
    #[arg(
        long,
        env = "INFRA_CONNECTOR_CA_CERT",
        value_name = "FILE",
        requires = "ca_key"
    )]
    pub ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM)
    #[arg(
        long,
        env = "INFRA_CONNECTOR_CA_KEY",
        value_name = "FILE",
        requires = "ca_cert"
    )]
    pub ca_key: Option<PathBuf>,
    /// Where a generated CA is kept [default: the platform's data dir]/infra-connector
    #[arg(long, env = "INFRA_CONNECTOR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Reach the cluster as a kubeconfig context does (outside a cluster: kind, minikube, k3d, …)
    #[arg(
        long,
        env = "INFRA_CONNECTOR_KUBECONFIG",
        value_name = "FILE",
        conflicts_with_all = ["kube_api", "kube_token_file", "kube_ca_file"]
    )]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig's context to use [default: its current context]
    #[arg(
        long,
        env = "INFRA_CONNECTOR_CONTEXT",
        value_name = "NAME",
        requires = "kubeconfig"
    )]
    pub context: Option<String>,
    /// The Kubernetes API [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]
    #[arg(long, env = "INFRA_CONNECTOR_KUBE_API", value_name = "URL")]
    pub kube_api: Option<String>,
    /// The connector's service-account token, re-read when it changes
    #[arg(long, env = "INFRA_CONNECTOR_KUBE_TOKEN_FILE", value_name = "FILE")]
    pub kube_token_file: Option<PathBuf>,
    /// The Kubernetes API's CA (PEM)
    #[arg(long, env = "INFRA_CONNECTOR_KUBE_CA_FILE", value_name = "FILE")]
    pub kube_ca_file: Option<PathBuf>,
    /// Trust the infra server's certificate from this PEM file
    #[arg(long, env = "INFRA_CONNECTOR_SERVER_CA_FILE", value_name = "FILE")]
    pub server_ca_file: Option<PathBuf>,
    /// Trust the infra server's certificate with this SHA-256 fingerprint
    #[arg(
        long,
        env = "INFRA_CONNECTOR_SERVER_TRUSTED_FINGERPRINT",
        value_name = "SHA256"
    )]
    pub server_trusted_fingerprint: Option<String>,
    /// Do not verify the infra server's certificate (unsafe)
    #[arg(long, env = "INFRA_CONNECTOR_SERVER_SKIP_TLS_VERIFY")]
    pub server_skip_tls_verify: bool,
    /// Keep Kubernetes RBAC bindings in step with infra's grants
    #[arg(long, env = "INFRA_CONNECTOR_SYNC_RBAC", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub sync_rbac: bool,
    /// Record every exec and attach session through this connector (asciicast v2, kept by the
    /// server: `infra sessions list`); a session that cannot be recorded is refused. Grants may
    /// ask for it too (`infra grants add --record-sessions`)
    #[arg(long, env = "INFRA_CONNECTOR_RECORD_SESSIONS")]
    pub record_sessions: bool,
    /// The largest a session's recording may grow; a session that reaches it is ended
    #[arg(long, env = "INFRA_CONNECTOR_MAX_SESSION_BYTES", value_name = "BYTES", default_value_t = crate::api::DEFAULT_MAX_SESSION_BYTES)]
    pub max_session_bytes: u64,
    /// YAML file with any of these settings (camelCase keys)
    #[arg(long, env = "INFRA_CONNECTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How often to heartbeat to the server [default: 5m while the grants'
    /// long poll tells the server the connector is alive, else 30s]
    #[arg(long, hide = true, value_parser = crate::api::parse_duration)]
    pub heartbeat: Option<Duration>,
    /// How often to retry grants that could not be applied yet
    #[arg(long, hide = true, default_value = "10s", value_parser = crate::api::parse_duration)]
    pub rbac_poll: Duration,
    /// How often to reconcile every binding anyway (repairs hand edits)
    #[arg(long, hide = true, default_value = "30s", value_parser = crate::api::parse_duration)]
    pub rbac_resync: Duration,
    /// Clock-skew leeway for token expiry, in seconds
    #[arg(long, hide = true, default_value_t = auth::LEEWAY_SECS)]
    pub leeway: u64,

    /// Serve /healthz and /metrics over plain HTTP here (off the users' port); "off" for none [default: 127.0.0.1:9465]
    #[arg(long, env = "INFRA_CONNECTOR_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<crate::edge::MetricsListen>,

    #[command(flatten)]
    pub edge: crate::edge::EdgeArgs,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    access_key: Option<SecretString>,
    access_key_file: Option<PathBuf>,
    name: Option<String>,
    listen: Option<SocketAddr>,
    endpoint: Option<String>,
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    #[serde(rename = "kubeAPI")]
    kube_api: Option<String>,
    kube_token_file: Option<PathBuf>,
    #[serde(rename = "kubeCAFile")]
    kube_ca_file: Option<PathBuf>,
    #[serde(rename = "serverCAFile")]
    server_ca_file: Option<PathBuf>,
    server_trusted_fingerprint: Option<String>,
    #[serde(rename = "serverSkipTLSVerify")]
    server_skip_tls_verify: Option<bool>,
    record_sessions: Option<bool>,
    max_session_bytes: Option<u64>,
}

impl ConnectorArgs {
    /// Fills what flags and environment left open from the config file.
    fn merged(mut self) -> anyhow::Result<ConnectorArgs> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let f: FileConfig = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        macro_rules! fill {
            ($($field:ident),*) => { $( if self.$field.is_none() { self.$field = f.$field; } )* };
        }
        fill!(
            server,
            access_key,
            access_key_file,
            name,
            listen,
            endpoint,
            ca_cert,
            ca_key,
            data_dir,
            kubeconfig,
            context,
            kube_api,
            kube_token_file,
            kube_ca_file,
            server_ca_file,
            server_trusted_fingerprint
        );
        if !self.server_skip_tls_verify {
            self.server_skip_tls_verify = f.server_skip_tls_verify.unwrap_or(false);
        }
        if !self.record_sessions {
            self.record_sessions = f.record_sessions.unwrap_or(false);
        }
        // A flag or variable left at its default gives way to the file.
        if self.max_session_bytes == crate::api::DEFAULT_MAX_SESSION_BYTES
            && let Some(n) = f.max_session_bytes
        {
            self.max_session_bytes = n;
        }
        Ok(self)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The connector's Prometheus metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    proxied: Family<StatusLabel, Counter>,
    rejections: Family<ReasonLabel, Counter>,
    latency: Histogram,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("infra_connector");
        let proxied = Family::<StatusLabel, Counter>::default();
        let rejections = Family::<ReasonLabel, Counter>::default();
        let latency = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ]);
        registry.register(
            "requests",
            "Requests proxied to the API server, by status",
            proxied.clone(),
        );
        registry.register(
            "token_rejections",
            "Requests refused, by reason",
            rejections.clone(),
        );
        registry.register(
            "upstream_seconds",
            "Time to the API server's response headers",
            latency.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            proxied,
            rejections,
            latency,
        }
    }

    pub fn proxied(&self, status: u16, took: Duration) {
        self.proxied.get_or_create(&StatusLabel { status }).inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub fn rejected(&self, reason: &str) {
        self.rejections
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// Everything a request needs.
/// The cluster as this connector reaches it: in a cluster by its service
/// account (or the `--kube-*` flags), else by a kubeconfig context.
struct Cluster {
    api: String,
    credential: upstream::Credential,
    upstream: upstream::Upstream,
    /// For the RBAC sync.
    kube: kube::Client,
}

impl Cluster {
    async fn from_args(args: &ConnectorArgs) -> anyhow::Result<Cluster> {
        if let Some(path) = &args.kubeconfig {
            let ctx = upstream::kubeconfig_context(path, args.context.as_deref()).await?;
            let credential = ctx.credential()?;
            // Fail now, not at the first user's request.
            credential.authorization().await?;
            let kube = kube::Client::try_from(ctx.config.clone())
                .with_context(|| format!("cannot build a Kubernetes client for {}", ctx.name))?;
            return Ok(Cluster {
                api: ctx.api(),
                upstream: upstream::clients_with(ctx.tls()?),
                credential,
                kube,
            });
        }
        let api = match &args.kube_api {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").context(
                    "outside a cluster, name a kubeconfig context (--kubeconfig FILE \
                     [--context NAME]) or the API server (--kube-api URL --kube-token-file \
                     FILE --kube-ca-file FILE); KUBERNETES_SERVICE_HOST is not set",
                )?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let token_path = args
            .kube_token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(upstream::IN_CLUSTER_TOKEN));
        let ca_path = args
            .kube_ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(upstream::IN_CLUSTER_CA));
        let ca = std::fs::read_to_string(&ca_path)
            .with_context(|| format!("cannot read the Kubernetes CA {}", ca_path.display()))?;
        let token = Arc::new(upstream::TokenFile::new(&token_path));
        token.token()?;
        let kube = rbac::kube_client(&api, token.clone(), &ca_path).await?;
        Ok(Cluster {
            upstream: upstream::clients(&ca)?,
            credential: upstream::Credential::File(token),
            kube,
            api,
        })
    }
}

/// A refused recorded session: when, and the answer.
type Refusal = (std::time::Instant, axum::http::StatusCode, String);

pub struct Connector {
    pub verifier: auth::Verifier,
    /// The connector's own credential, for the proxy and the reviews.
    pub credential: upstream::Credential,
    pub upstream: upstream::Upstream,
    /// The destination this connector serves.
    pub name: String,
    /// `https://host:port` of the API server, without a trailing slash.
    pub kube_api: String,
    pub metrics: Metrics,
    /// Streams open through the proxy, cut when access is revoked.
    pub streams: Arc<streams::Streams>,
    /// The grants on this destination, as last read (none yet: unknown).
    pub grants: tokio::sync::watch::Receiver<Option<Arc<Vec<crate::api::Grant>>>>,
    /// `--record-sessions`: every exec and attach is recorded.
    pub record_all: bool,
    pub max_session_bytes: u64,
    /// The infra server, with the connector's key.
    pub server: Client,
    /// Recorded sessions refused lately, by (user, path): kubectl retries a
    /// refused WebSocket over SPDY and shows only the second answer.
    refusals: Mutex<std::collections::HashMap<(String, String), Refusal>>,
}

impl Connector {
    /// How long a refusal is remembered for the SPDY retry.
    const REFUSAL_MEMORY: Duration = Duration::from_secs(30);

    pub fn remember_refusal(
        &self,
        sub: &str,
        path: &str,
        code: axum::http::StatusCode,
        message: &str,
    ) {
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|_, (t, _, _)| t.elapsed() < Self::REFUSAL_MEMORY);
        if r.len() < 1_000 {
            r.insert(
                (sub.to_string(), path.to_string()),
                (std::time::Instant::now(), code, message.to_string()),
            );
        }
    }

    /// The answer a recent refusal of the same session gave, again.
    pub fn recent_refusal(&self, sub: &str, path: &str) -> Option<axum::response::Response> {
        let r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let (t, code, message) = r.get(&(sub.to_string(), path.to_string()))?;
        (t.elapsed() < Self::REFUSAL_MEMORY).then(|| {
            proxy::status(
                *code,
                code.canonical_reason().unwrap_or("Forbidden"),
                message,
            )
        })
    }
}

/// The users' port: every path goes to the API server (its own /healthz,
/// /livez, /readyz and /metrics included), as the signed-in user.
fn router(c: Arc<Connector>) -> Router {
    Router::new().fallback(proxy::handle).with_state(c)
}

/// The connector's own health and metrics, on `--metrics-listen`.
fn metrics_router(c: Arc<Connector>) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(c)
}

/// Where the connector's metrics go without `--metrics-listen`.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9465);

async fn metrics(State(c): State<Arc<Connector>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        c.metrics.render(),
    )
}

fn required<T>(v: Option<T>, flag: &str, what: &str) -> anyhow::Result<T> {
    v.ok_or_else(|| anyhow::anyhow!("{what} is required: give {flag} (or its INFRA_CONNECTOR_* variable, or the config file)"))
}

/// The CA that signs the serving certificate: given, or made once and kept.
fn load_or_create_ca(args: &ConnectorArgs) -> anyhow::Result<(String, String)> {
    if let (Some(c), Some(k)) = (&args.ca_cert, &args.ca_key) {
        let cert = std::fs::read_to_string(c)
            .with_context(|| format!("cannot read --ca-cert {}", c.display()))?;
        let key = std::fs::read_to_string(k)
            .with_context(|| format!("cannot read --ca-key {}", k.display()))?;
        return Ok((cert, key));
    }
    let dir = args.data_dir.clone().unwrap_or_else(|| {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("infra-connector")
    });
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if !cert_path.exists() || !key_path.exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "infra connector CA");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        crate::fsutil::write_private(&key_path, key.serialize_pem().as_bytes())?;
        crate::fsutil::write_private(&cert_path, cert.pem().as_bytes())?;
        eprintln!("generated a CA for the connector in {}", dir.display());
    }
    Ok((
        std::fs::read_to_string(&cert_path)?,
        std::fs::read_to_string(&key_path)?,
    ))
}

/// A serving certificate for the endpoint's host, signed by the CA.
fn serving_cert(
    ca_cert: &str,
    ca_key: &str,
    endpoint_host: &str,
) -> anyhow::Result<(String, String)> {
    let ca_key = rcgen::KeyPair::from_pem(ca_key).context("the CA key is not a PEM private key")?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert, ca_key)
        .context("the CA certificate is not usable")?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !names.iter().any(|n| n == endpoint_host) {
        names.push(endpoint_host.to_string());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "infra connector");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((format!("{}{}", cert.pem(), ca_cert), key.serialize_pem()))
}

fn server_trust(args: &ConnectorArgs) -> anyhow::Result<Trust> {
    if args.server_skip_tls_verify {
        eprintln!(
            "warning: not verifying the infra server's certificate (--server-skip-tls-verify)"
        );
        return Ok(Trust::Insecure);
    }
    if let Some(f) = &args.server_ca_file {
        return Ok(Trust::Cert(std::fs::read_to_string(f).with_context(
            || format!("cannot read --server-ca-file {}", f.display()),
        )?));
    }
    if let Some(fp) = &args.server_trusted_fingerprint {
        let fp = crate::client::tls::normalize_fingerprint(fp).context(
            "--server-trusted-fingerprint must be a SHA-256 fingerprint (64 hex digits)",
        )?;
        return Ok(Trust::Fingerprint(fp));
    }
    Ok(Trust::System)
}

/// Runs the connector until SIGTERM or Ctrl-C.
pub async fn run(args: ConnectorArgs) -> anyhow::Result<()> {
    crate::edge::raise_open_files_limit();
    let args = args.merged()?;
    let server = required(args.server.clone(), "--server", "the infra server's URL")?;
    let server = server.trim_end_matches('/').to_string();
    let server = if server.contains("://") {
        server
    } else {
        format!("https://{server}")
    };
    let key = match (&args.access_key, &args.access_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(path)) => crate::fsutil::read_key_from(path, "--access-key-file")?,
        (None, None) => required(
            None,
            "--access-key-file or --access-key",
            "a connector access key",
        )?,
    };
    // The key's id (before the dot) is not secret; it says which key this is.
    let key_id = secrecy::ExposeSecret::expose_secret(&key)
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let name = required(args.name.clone(), "--name", "the destination name")?;
    anyhow::ensure!(
        crate::api::is_dns_label(&name) && name != crate::api::INFRA_DESTINATION,
        "--name {name:?} must be lowercase letters, digits and dashes (and not \"infra\")"
    );
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443)));
    let endpoint = match &args.endpoint {
        Some(e) => e
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string(),
        None if !listen.ip().is_unspecified() => listen.to_string(),
        None => anyhow::bail!(
            "--endpoint HOST:PORT is required: the address users' kubectl reaches this connector at"
        ),
    };
    let endpoint_host = endpoint
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&endpoint)
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let cluster = Cluster::from_args(&args).await?;
    let kube_api = cluster.api.clone();

    let trust = server_trust(&args)?;
    let client = Client::new(&server, &trust, Some(key))?;
    let (ca_cert, ca_key) = load_or_create_ca(&args)?;
    let (cert_pem, key_pem) = serving_cert(&ca_cert, &ca_key, &endpoint_host)?;

    // The grants' long poll publishes each answer: the proxy reads which
    // grants ask for recorded sessions, and the open streams are checked.
    let (grants_tx, grants_rx) = tokio::sync::watch::channel(None);
    let connector = Arc::new(Connector {
        verifier: auth::Verifier::new(&server, &name, client.http().clone(), args.leeway),
        credential: cluster.credential,
        upstream: cluster.upstream,
        name: name.clone(),
        kube_api: kube_api.clone(),
        metrics: Metrics::new(),
        streams: Arc::default(),
        grants: grants_rx.clone(),
        record_all: args.record_sessions,
        max_session_bytes: args.max_session_bytes,
        server: client.clone(),
        refusals: Mutex::default(),
    });

    // Register before serving, so a misconfiguration shows at once.
    let registration = CreateDestinationRequest {
        name: name.clone(),
        url: format!("https://{endpoint}"),
        ca: ca_cert.clone(),
    };
    let d: Destination = client
        .post("/api/destinations", &registration)
        .await
        .with_context(|| {
            format!(
                "cannot register the destination {name} with {server} using the access key \
                 {key_id}"
            )
        })?;
    eprintln!(
        "registered destination {} ({}) with {server}",
        d.name, d.url
    );
    // Neither holds up the start for long: a slow answer is only a warning
    // (the keys are fetched again at the first token that needs them).
    let soon = Duration::from_secs(10);
    match tokio::time::timeout(soon, connector.verifier.learn_issuer(&server)).await {
        Ok(Ok(iss)) if iss != server.trim_end_matches('/') => {
            eprintln!("the server's tokens name it {iss}")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!(
            "warning: cannot read the server's discovery document, so tokens must name {server} \
             as their issuer: {e}"
        ),
        Err(_) => eprintln!(
            "warning: the server's discovery document did not come within 10 s, so tokens must \
             name {server} as their issuer"
        ),
    }
    match tokio::time::timeout(soon, connector.verifier.refresh(false)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: cannot fetch the server's signing keys yet: {e}"),
        Err(_) => eprintln!("warning: the server's signing keys did not come within 10 s"),
    }
    // The grants' long poll (every 30 s at most) also tells the server the
    // connector is alive; the heartbeat then only re-registers now and then.
    let every = args.heartbeat.unwrap_or(if args.sync_rbac {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(30)
    });
    tokio::spawn(heartbeat(
        client.clone(),
        registration,
        every,
        connector.clone(),
    ));
    // Each answer of the grants' long poll (a change, or 30 s) wakes the
    // check of open streams; without the RBAC sync it only follows.
    tokio::spawn(rbac::sync_forever(
        client.clone(),
        args.sync_rbac.then_some(cluster.kube),
        name.clone(),
        args.rbac_poll,
        args.rbac_resync,
        grants_tx,
    ));
    tokio::spawn(streams::guard_forever(
        client.clone(),
        name.clone(),
        connector.clone(),
        grants_rx,
    ));

    crate::edge::serve_private(
        metrics_router(connector.clone()),
        args.metrics_listen,
        DEFAULT_METRICS_LISTEN,
    )
    .await?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}; choose another with --listen"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.into_bytes(),
        key_pem.into_bytes(),
    )
    .await
    .context("cannot load the serving certificate")?;
    let handle = axum_server::Handle::new();
    tokio::spawn(crate::shutdown::on_signal(handle.clone()));
    eprintln!(
        "infra connector {name} listening on https://{addr} (users reach https://{endpoint}), proxying to {kube_api}"
    );
    // Watches, exec and port-forward stay open as long as they are used:
    // no idle timeout here, only the handshake and header-read ones.
    let tls = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .handshake_timeout(args.edge.header_read_timeout);
    let acceptor = crate::edge::EdgeAcceptor::new(tls, args.edge.config());
    let mut server = axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle);
    crate::edge::limit_http(server.http_builder(), args.edge.header_read_timeout);
    server
        .serve(router(connector).into_make_service())
        .await
        .context("the connector stopped with an error")?;
    eprintln!("infra connector stopped");
    Ok(())
}

/// Re-registers (the heartbeat) and refreshes the signing keys when the
/// server's cache headers say they are stale, so a rotated key is usually
/// known before the first token signed with it (an unknown `kid` fetches
/// them at once anyway).
async fn heartbeat(
    client: Client,
    registration: CreateDestinationRequest,
    every: Duration,
    c: Arc<Connector>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = client
            .post::<_, Destination>("/api/destinations", &registration)
            .await
        {
            tracing::warn!("heartbeat to the infra server failed: {e}");
        }
        if let Err(e) = c.verifier.refresh_if_stale().await {
            tracing::warn!("cannot refresh the server's signing keys: {e}");
        }
    }
}
