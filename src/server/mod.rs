//! `infra server`: the organization's API server.
//!
//! This module wires the parts together: arguments, the data directory,
//! the store, TLS, bootstrap, the router and graceful shutdown. Handlers
//! live in `routes`, persistence in `store`, secrets in `crypto`.

pub mod bootstrap;
pub mod console;
pub mod crypto;
pub mod dev_idp;
pub mod device;
pub mod error;
pub mod extract;
pub mod issuers;
pub mod machine_auth;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod pages;
pub mod ratelimit;
pub mod recheck;
pub mod retention;
pub mod routes;
pub mod store;
pub mod tls;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use clap::Args;

use crate::api::{self, version};
use error::ApiError;
use store::Store;

/// Flags of `infra server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// How to write logs: text, or json (one object per line)
    #[arg(long, env = "INFRA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::edge::LogFormat,

    /// Address to serve HTTPS on
    #[arg(
        long,
        env = "INFRA_SERVER_LISTEN",
        default_value = "127.0.0.1:8443",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// PEM certificate to serve (default: a self-signed one kept in the data dir)
    #[arg(
        long,
        env = "INFRA_SERVER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert
    #[arg(
        long,
        env = "INFRA_SERVER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Where the server keeps its SQLite store, certificate and root key
    #[arg(long, env = "INFRA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL URL (postgres://USER:PASS@HOST/DB); default: SQLite in the data dir
    #[arg(long, env = "INFRA_DB", value_name = "URL")]
    pub db: Option<String>,

    /// YAML file that declares providers, users, groups, grants and an admin key
    #[arg(long, env = "INFRA_SERVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// File with the key that encrypts secrets at rest (default: root.key in the data dir)
    #[arg(long, env = "INFRA_ROOT_KEY_FILE", value_name = "FILE")]
    pub root_key_file: Option<PathBuf>,

    /// How long a key issued at login lasts
    #[arg(long, env = "INFRA_SESSION_EXPIRY", default_value = "30d", value_parser = parse_duration)]
    pub session_expiry: Duration,

    /// How long a key issued at login may go unused
    #[arg(long, env = "INFRA_SESSION_INACTIVITY_TIMEOUT", default_value = "3d", value_parser = parse_duration)]
    pub session_inactivity_timeout: Duration,

    /// The server's public URL: the issuer of cluster tokens (default: https://LISTEN-ADDRESS)
    #[arg(long, env = "INFRA_SERVER_URL", value_name = "URL")]
    pub url: Option<String>,

    /// How long a cluster token lasts
    #[arg(long, env = "INFRA_TOKEN_TTL", default_value = "5m", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Re-check a user with their identity provider when the last check is older than this
    #[arg(long, env = "INFRA_IDP_REVALIDATE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub idp_revalidate_interval: Duration,

    /// How often the token signing key is replaced
    #[arg(long, env = "INFRA_SIGNING_KEY_ROTATION", default_value = "24h", value_parser = parse_duration)]
    pub signing_key_rotation: Duration,

    /// Print the first start's admin access key, while it has not been used, and exit
    #[arg(long, env = "INFRA_PRINT_ADMIN_KEY")]
    pub print_admin_key: bool,

    /// Development mode: an embedded OpenID provider that signs in anyone (no real security)
    #[arg(long, env = "INFRA_DEV")]
    pub dev: bool,

    /// Keep everything in a temporary directory, removed at exit
    #[arg(long, env = "INFRA_EPHEMERAL", conflicts_with = "data_dir")]
    pub ephemeral: bool,

    /// Let --dev listen on a non-loopback address (anyone who reaches it can sign in)
    #[arg(long, env = "INFRA_DEV_ALLOW_REMOTE", requires = "dev")]
    pub dev_allow_remote: bool,

    /// Register this OpenID provider at start (its issuer URL)
    #[arg(long, env = "INFRA_OIDC_ISSUER_URL", value_name = "URL", requires_all = ["oidc_issuer_client_id", "oidc_issuer_client_secret"])]
    pub oidc_issuer_url: Option<String>,

    /// The client id registered at --oidc-issuer-url
    #[arg(long, env = "INFRA_OIDC_ISSUER_CLIENT_ID", value_name = "ID")]
    pub oidc_issuer_client_id: Option<String>,

    /// The client secret registered at --oidc-issuer-url
    #[arg(
        long,
        env = "INFRA_OIDC_ISSUER_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub oidc_issuer_client_secret: Option<secrecy::SecretString>,

    /// The claim that names users of the --oidc-issuer-url provider, e.g.
    /// preferred_username [default: the verified email]
    #[arg(long, env = "INFRA_OIDC_USERNAME_CLAIM", value_name = "CLAIM")]
    pub oidc_username_claim: Option<String>,

    /// PEM file with the CA of --oidc-issuer-url, when it is not publicly trusted
    #[arg(long, env = "INFRA_OIDC_CA_FILE", value_name = "FILE")]
    pub oidc_ca_file: Option<PathBuf>,

    /// The name of the provider registered from the --oidc-issuer-* flags
    #[arg(
        long,
        env = "INFRA_OIDC_PROVIDER_NAME",
        default_value = "oidc",
        value_name = "NAME"
    )]
    pub oidc_provider_name: String,

    /// The public URL of the server's web sign-in callback (behind a proxy)
    #[arg(long, env = "INFRA_OIDC_CALLBACK_URL", value_name = "URL")]
    pub oidc_callback_url: Option<String>,

    /// How long a device code (`infra login --device`) waits for approval
    #[arg(long, env = "INFRA_DEVICE_CODE_TTL", default_value = "10m", value_parser = parse_duration)]
    pub device_code_ttl: Duration,

    /// How often a device may poll for its sign-in at first
    #[arg(long, hide = true, env = "INFRA_DEVICE_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub device_poll_interval: Duration,

    #[command(flatten)]
    pub edge: crate::edge::EdgeArgs,

    /// Serve /metrics and /healthz over plain HTTP here (keep it private); "off" for none [default: 127.0.0.1:9464, skipped with a warning when taken]
    #[arg(long, env = "INFRA_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<crate::edge::MetricsListen>,

    /// Longest time a request may take, body included (long polls take up to 30s)
    #[arg(long, env = "INFRA_REQUEST_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How long the audit log keeps an entry (0 keeps them forever)
    #[arg(long, env = "INFRA_AUDIT_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub audit_retention: Duration,

    /// How long recorded exec and attach sessions are kept (0 keeps them forever)
    #[arg(long, env = "INFRA_SESSION_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub session_retention: Duration,

    /// The largest a session's recording may grow (bytes of asciicast); a connector that
    /// reaches it ends the session
    #[arg(long, env = "INFRA_MAX_SESSION_BYTES", default_value_t = crate::api::DEFAULT_MAX_SESSION_BYTES, value_name = "BYTES")]
    pub max_session_bytes: u64,

    /// How often old audit entries are removed (by one replica)
    #[arg(long, hide = true, env = "INFRA_AUDIT_PRUNE_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub audit_prune_interval: Duration,

    /// Connectors' long polls one replica holds open at once (one per connector); beyond it, 503 with Retry-After
    #[arg(
        long,
        env = "INFRA_MAX_LONG_POLLS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub max_long_polls: usize,

    /// Database connections per replica [default: 8 for SQLite, 16 for PostgreSQL]
    #[arg(long, env = "INFRA_DB_MAX_CONNECTIONS", value_name = "N")]
    pub db_max_connections: Option<u32>,
}

pub use crate::api::parse_duration;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub root_key: crypto::RootKey,
    pub metrics: metrics::Metrics,
    pub http: reqwest::Client,
    pub session_expiry: Duration,
    pub session_inactivity_timeout: Duration,
    pub signer: tokens::Signer,
    /// `https://host:port`: the issuer of cluster tokens.
    pub public_url: String,
    pub idp_revalidate_interval: Duration,
    /// The embedded provider of `--dev`.
    pub dev_idp: Option<Arc<dev_idp::DevIdp>>,
    /// Where providers send the browser back for web sign-in.
    pub callback_url: String,
    /// Machine identities' issuers' keys (a per-replica cache).
    pub issuers: issuers::IssuerCache,
    /// How long a device code lives.
    pub device_code_ttl: Duration,
    /// The first polling interval of a device code.
    pub device_poll_interval: Duration,
    /// The SHA-256 fingerprint of the TLS certificate, once it is loaded.
    pub tls_fingerprint: std::sync::OnceLock<String>,
    /// Places for connectors' long polls (`--max-long-polls`).
    pub long_polls: Arc<tokio::sync::Semaphore>,
    /// How large a session's recording may grow (`--max-session-bytes`).
    pub max_session_bytes: u64,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        store: Store,
        root_key: crypto::RootKey,
        args: &ServerArgs,
        public_url: String,
        dev_idp: Option<Arc<dev_idp::DevIdp>>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("infra/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("cannot build the HTTP client")?;
        let metrics = metrics::Metrics::new();
        let issuers = issuers::IssuerCache::new(metrics.issuer_fetches.clone());
        Ok(AppState(Arc::new(Inner {
            store,
            root_key,
            metrics,
            http,
            session_expiry: args.session_expiry,
            session_inactivity_timeout: args.session_inactivity_timeout,
            signer: tokens::Signer::new(args.signing_key_rotation, args.token_ttl),
            idp_revalidate_interval: args.idp_revalidate_interval,
            dev_idp,
            callback_url: callback_url(args, &public_url),
            public_url,
            issuers,
            device_code_ttl: args.device_code_ttl,
            device_poll_interval: args.device_poll_interval,
            tls_fingerprint: std::sync::OnceLock::new(),
            long_polls: Arc::new(tokio::sync::Semaphore::new(args.max_long_polls.max(1))),
            max_session_bytes: args.max_session_bytes,
        })))
    }
}

/// Where providers send the browser back after web sign-in.
pub fn callback_url(args: &ServerArgs, public_url: &str) -> String {
    args.oidc_callback_url
        .clone()
        .unwrap_or_else(|| format!("{public_url}/login/callback"))
}

/// Builds the whole HTTP application: everything but the metrics (see
/// [`metrics_router`]), each request held to `request_timeout` and a 1 MiB body.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let dev = state.dev_idp.clone();
    let (mut api, mut by_path) = (Router::new(), Router::new());
    for route in routes::api_routes() {
        if route.needs_version {
            api = api.route(route.path, route.handler);
        } else {
            by_path = by_path.route(route.path, route.handler);
        }
    }
    let api = api
        .route_layer(middleware::from_fn(require_version))
        .merge(by_path);
    let mut app = Router::new();
    if let Some(dev) = dev {
        app = app.nest_service("/oidc", dev_idp::router(dev));
    }
    app.merge(api)
        .merge(device::pages())
        .merge(
            console::router().route_layer(middleware::from_fn_with_state(
                state.clone(),
                console::around,
            )),
        )
        .route("/api/openapi.json", axum::routing::get(openapi::serve))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/.well-known/jwks.json",
            axum::routing::get(routes::tokens::jwks),
        )
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(routes::tokens::discovery),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}

/// Where metrics go when `--metrics-listen` is not given.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

/// The largest request body any route takes.
const MAX_BODY: usize = 1024 * 1024;

/// `/metrics` and `/healthz`, for the private `--metrics-listen` address.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics::serve))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(state)
}

/// Every `/api` call states the client's version; skew is refused early.
async fn require_version(headers: HeaderMap, req: Request, next: Next) -> Response {
    let client = headers
        .get(api::VERSION_HEADER)
        .and_then(|v| v.to_str().ok());
    match version::check(client, version::CURRENT) {
        Ok(()) => next.run(req).await,
        Err(skew) => ApiError::bad_request(skew.to_string()).into_response(),
    }
}

/// The default data directory: `$XDG_DATA_HOME/infra` or the platform's.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("infra")
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    crate::edge::raise_open_files_limit();
    if args.dev && !args.listen.ip().is_loopback() && !args.dev_allow_remote {
        anyhow::bail!(
            "--dev signs in anyone, so it listens only on a loopback address, not {}; use \
             --listen 127.0.0.1:8443, or add --dev-allow-remote if you really mean it",
            args.listen
        );
    }
    // Kept alive until the server stops; removed then.
    let ephemeral = if args.ephemeral {
        Some(tempfile::Builder::new().prefix("infra-server-").tempdir()?)
    } else {
        None
    };
    let data_dir = match &ephemeral {
        Some(t) => t.path().to_path_buf(),
        None => args.data_dir.clone().unwrap_or_else(default_data_dir),
    };
    crate::fsutil::create_private_dir(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;

    let db_url = match &args.db {
        Some(url) => url.clone(),
        None => format!("sqlite://{}?mode=rwc", data_dir.join("infra.db").display()),
    };
    let store = Store::connect(&db_url, args.db_max_connections).await?;
    store.follow_other_replicas();
    store.flush_seen_every_second();
    let root_key_path = args
        .root_key_file
        .clone()
        .unwrap_or_else(|| data_dir.join("root.key"));
    let root_key = crypto::RootKey::load_or_create(&root_key_path)?;
    if args.print_admin_key {
        return match bootstrap::unused_admin_key(&store, &root_key).await? {
            Some(k) => {
                println!("{}", secrecy::ExposeSecret::expose_secret(&k));
                Ok(())
            }
            None => Err(anyhow::anyhow!(
                "this server has no unused admin key: it was used (or never made, when \
                 INFRA_ADMIN_ACCESS_KEY or the config file gives one); log in with an admin's \
                 key, or set INFRA_ADMIN_ACCESS_KEY to install one"
            )),
        };
    }
    let listener = std::net::TcpListener::bind(args.listen).with_context(|| {
        format!(
            "cannot listen on {}: is another server running there? Choose another with --listen",
            args.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let public_url = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None if addr.ip().is_unspecified() => format!("https://localhost:{}", addr.port()),
        None => format!("https://{addr}"),
    };
    let dev = if args.dev {
        Some(Arc::new(dev_idp::DevIdp::new(
            &public_url,
            Some(callback_url(&args, &public_url)),
        )?))
    } else {
        None
    };
    let state = AppState::new(store.clone(), root_key, &args, public_url, dev.clone())?;
    let tls = tls::load_or_create(
        &data_dir,
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.listen,
    )?;
    let _ = state.tls_fingerprint.set(tls.fingerprint.clone());
    if let Some(idp) = &dev {
        bootstrap::register_dev_provider(&state, idp, &tls.cert_pem).await?;
        eprintln!("{}", dev_idp::warning(idp));
    }

    bootstrap::run(&state, args.config.as_deref()).await?;
    if let Some(url) = &args.oidc_issuer_url {
        bootstrap::register_flag_provider(&state, &args, url).await?;
    }

    let handle = axum_server::Handle::new();
    tokio::spawn(crate::shutdown::on_signal(handle.clone()));
    tokio::spawn(periodic_cleanup(store.clone()));
    // A short retention is kept to closely: pruned every tenth of it.
    let prune_every = [args.audit_retention, args.session_retention]
        .into_iter()
        .filter(|r| !r.is_zero())
        .map(|r| (r / 10).max(Duration::from_secs(1)))
        .fold(args.audit_prune_interval, Duration::min);
    tokio::spawn(retention::run(
        store.clone(),
        retention::Retention {
            audit: args.audit_retention,
            sessions: args.session_retention,
        },
        prune_every,
    ));

    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        tls.cert_pem.into_bytes(),
        tls.key_pem.into_bytes(),
    )
    .await
    .context("cannot load the TLS certificate and key")?;
    crate::edge::serve_private(
        metrics_router(state.clone()),
        args.metrics_listen,
        DEFAULT_METRICS_LISTEN,
    )
    .await?;
    // Every start-up check has passed and the socket is bound: the admin
    // key can be shown without the risk of a start that fails after it.
    if let Some(k) = bootstrap::unused_admin_key(&store, &state.root_key).await? {
        eprintln!("{}", bootstrap::admin_key_banner(&k));
    }
    eprintln!(
        "infra server {} listening on https://{addr}",
        version::CURRENT
    );
    eprintln!("TLS certificate SHA-256 fingerprint: {}", tls.fingerprint);
    tracing::info!(%addr, backend = ?store.backend(), "serving");

    let tls = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .handshake_timeout(args.edge.header_read_timeout);
    let acceptor = crate::edge::EdgeAcceptor::new(tls, args.edge.config());
    let mut server = axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle);
    crate::edge::limit_http(server.http_builder(), args.edge.header_read_timeout);
    server
        .serve(
            router(state, args.request_timeout).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .context("the server stopped with an error")?;
    store.close().await;
    eprintln!("infra server stopped");
    Ok(())
}

/// Removes long-dead access keys once an hour. Idempotent, so replicas
/// need not coordinate.
async fn periodic_cleanup(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        if let Err(e) = tokens::Signer::prune(&store).await {
            tracing::warn!("cannot remove retired signing keys: {e}");
        }
        match store.delete_stale_access_keys().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed expired access keys"),
            Err(e) => tracing::warn!("cannot remove expired access keys: {e}"),
        }
    }
}
