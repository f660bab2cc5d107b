//! The cluster's API server as the connector reaches it: its URL, the CA
//! that signs it, and the connector's own credential. In a cluster that is
//! its service-account token, re-read when the file changes (projected
//! tokens rotate); outside one, any kubeconfig context (`--kubeconfig
//! FILE --context NAME`): a client certificate (kind, minikube, k3d), a
//! token or token file, or an exec plugin, refreshed as kubectl would.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, axum::body::Body>;

/// The in-cluster defaults.
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The service-account token, cached by the file's modification time.
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, std::time::Instant, Arc<str>)>>,
}

/// What tells a file changed without reading it: when it was written, its
/// length and (on Unix) which file it is, since a kubelet swaps a projected
/// token in by its `..data` symlink, and a clock tick can hold two writes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(SystemTime, u64, u64);

impl Stamp {
    fn of(m: &std::fs::Metadata) -> std::io::Result<Stamp> {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let ino = 0;
        Ok(Stamp(m.modified()?, m.len(), ino))
    }
}

/// However alike the file looks, it is read again this often.
const REREAD: std::time::Duration = std::time::Duration::from_secs(1);

impl TokenFile {
    pub fn new(path: &Path) -> TokenFile {
        TokenFile {
            path: path.to_path_buf(),
            cached: Mutex::new(None),
        }
    }

    /// The current token; reads the file again when it changed (or, in
    /// case a change did not show, once a second at most).
    pub fn token(&self) -> anyhow::Result<Arc<str>> {
        let stamp = std::fs::metadata(&self.path)
            .and_then(|m| Stamp::of(&m))
            .with_context(|| format!("cannot read the token file {}", self.path.display()))?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, at, tok)) = cached.as_ref()
            && *s == stamp
            && at.elapsed() < REREAD
        {
            return Ok(tok.clone());
        }
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read the token file {}", self.path.display()))?;
        let tok: Arc<str> = Arc::from(text.trim());
        *cached = Some((stamp, std::time::Instant::now(), tok.clone()));
        Ok(tok)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The connector's own credential to the API server, for the proxy, the
/// impersonation reviews and the RBAC sync alike.
pub enum Credential {
    /// A bearer token file (in a cluster, or `--kube-token-file`), the one
    /// source the RBAC sync's client reads too.
    File(Arc<TokenFile>),
    /// A kubeconfig context's user, as kube-rs reads it.
    Kubeconfig {
        /// `FILE (context NAME)`, for messages.
        name: String,
        /// Puts the `Authorization` header the context's user calls for
        /// (token, token file, exec plugin; refreshed before expiry), or
        /// none for a client certificate, which is presented in TLS.
        auth: Option<tokio::sync::Mutex<AuthService>>,
    },
}

/// A service that answers with the `Authorization` header kube-rs's
/// auth layer put on an empty request.
pub type AuthService = tower::util::BoxService<
    axum::http::Request<axum::body::Body>,
    Option<axum::http::HeaderValue>,
    tower::BoxError,
>;

impl Credential {
    /// The `Authorization` header for the API server, if the credential is
    /// a bearer one.
    pub async fn authorization(&self) -> anyhow::Result<Option<axum::http::HeaderValue>> {
        match self {
            Credential::File(f) => {
                let mut v = axum::http::HeaderValue::from_str(&format!("Bearer {}", f.token()?))
                    .map_err(|_| {
                        anyhow::anyhow!("the token in {} is not a valid header", f.path().display())
                    })?;
                v.set_sensitive(true);
                Ok(Some(v))
            }
            Credential::Kubeconfig { auth: None, .. } => Ok(None),
            Credential::Kubeconfig {
                auth: Some(svc),
                name,
            } => {
                use tower::{Service, ServiceExt};
                let mut svc = svc.lock().await;
                let v = svc
                    .ready()
                    .await
                    .map_err(|e| anyhow::anyhow!("the credential of {name}: {e}"))?
                    .call(axum::http::Request::new(axum::body::Body::empty()))
                    .await
                    .map_err(|e| anyhow::anyhow!("the credential of {name}: {e}"))?;
                Ok(v.map(|mut v| {
                    v.set_sensitive(true);
                    v
                }))
            }
        }
    }

    /// What the credential is, for messages to the cluster's admin.
    pub fn describe(&self) -> String {
        match self {
            Credential::File(f) => format!("its service-account token {}", f.path().display()),
            Credential::Kubeconfig { name, .. } => format!("the credentials of {name}"),
        }
    }
}

/// A kubeconfig context as the connector uses it.
pub struct KubeconfigContext {
    pub config: kube::Config,
    /// `FILE (context NAME)`.
    pub name: String,
}

/// Reads `context` (or the current one) of the kubeconfig at `path`.
pub async fn kubeconfig_context(
    path: &Path,
    context: Option<&str>,
) -> anyhow::Result<KubeconfigContext> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
    let chosen = match context {
        Some(c) => c.to_string(),
        None => kubeconfig.current_context.clone().with_context(|| {
            format!(
                "the kubeconfig {} has no current context: name one with --context",
                path.display()
            )
        })?,
    };
    if !kubeconfig.contexts.iter().any(|c| c.name == chosen) {
        let known: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        anyhow::bail!(
            "the kubeconfig {} has no context {chosen:?} (it has: {})",
            path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    let name = format!("{} (context {chosen})", path.display());
    let options = kube::config::KubeConfigOptions {
        context: Some(chosen),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("cannot use {name}"))?;
    anyhow::ensure!(
        !config.accept_invalid_certs,
        "{name} skips verifying the API server's certificate (insecure-skip-tls-verify); the \
         connector sends every user's requests there, so give the cluster's CA instead"
    );
    anyhow::ensure!(
        config.proxy_url.is_none(),
        "{name} reaches the API server through a proxy (proxy-url), which the connector does \
         not support"
    );
    Ok(KubeconfigContext { config, name })
}

impl KubeconfigContext {
    /// The context's user as the connector's credential.
    pub fn credential(&self) -> anyhow::Result<Credential> {
        use kube::client::ConfigExt;
        let auth = self
            .config
            .auth_layer()
            .with_context(|| format!("cannot use the user of {}", self.name))?
            .map(|layer| {
                use axum::http::header::AUTHORIZATION;
                // Answers with the header the auth layer put on the request.
                let echo =
                    tower::service_fn(|req: axum::http::Request<axum::body::Body>| async move {
                        let mut resp = axum::http::Response::new(());
                        if let Some(v) = req.headers().get(AUTHORIZATION) {
                            resp.headers_mut().insert(AUTHORIZATION, v.clone());
                        }
                        Ok::<_, tower::BoxError>(resp)
                    });
                let svc = tower::ServiceExt::map_response(
                    tower::Layer::layer(&layer, echo),
                    |r: axum::http::Response<()>| r.headers().get(AUTHORIZATION).cloned(),
                );
                tokio::sync::Mutex::new(tower::util::BoxService::new(tower::ServiceExt::map_err(
                    svc,
                    Into::<tower::BoxError>::into,
                )))
            });
        Ok(Credential::Kubeconfig {
            name: self.name.clone(),
            auth,
        })
    }

    /// The API server's URL, without a trailing slash.
    pub fn api(&self) -> String {
        self.config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string()
    }

    /// The TLS settings (the cluster's CA, the user's client certificate).
    pub fn tls(&self) -> anyhow::Result<rustls::ClientConfig> {
        use kube::client::ConfigExt;
        self.config
            .rustls_client_config()
            .with_context(|| format!("cannot use the TLS settings of {}", self.name))
    }
}

/// The two ways to the API server.
pub struct Upstream {
    /// HTTP/2 where the API server offers it (it does), with keep-alive
    /// pings so a dead connection is noticed in seconds, not minutes.
    pub requests: HttpsClient,
    /// HTTP/1.1 only: exec, attach and port-forward upgrade the connection,
    /// which HTTP/2 cannot.
    pub upgrades: HttpsClient,
}

/// Clients for the API server that trust `ca_pem`.
pub fn clients(ca_pem: &str) -> anyhow::Result<Upstream> {
    let tls = trusting(ca_pem)?;
    Ok(Upstream {
        requests: client(tls.clone(), true),
        upgrades: client(tls, false),
    })
}

/// Clients for the API server with these TLS settings.
pub fn clients_with(mut tls: rustls::ClientConfig) -> Upstream {
    // hyper-rustls sets the protocols of each client itself.
    tls.alpn_protocols.clear();
    Upstream {
        requests: client(tls.clone(), true),
        upgrades: client(tls, false),
    }
}

/// TLS that trusts only `ca_pem`, and presents no certificate.
fn trusting(ca_pem: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let mut found = false;
    for cert in rustls_pki_certs(ca_pem)? {
        roots
            .add(cert)
            .context("the Kubernetes CA is not a usable certificate")?;
        found = true;
    }
    anyhow::ensure!(found, "the Kubernetes CA file holds no PEM certificate");
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn client(tls: rustls::ClientConfig, http2: bool) -> HttpsClient {
    // A dead address fails within seconds, not after the system's two
    // minutes; a connection whose peer vanished (an exec, a port-forward
    // idle for a while) is found by TCP keep-alive.
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
    tcp.set_keepalive(Some(std::time::Duration::from_secs(30)));
    tcp.set_keepalive_interval(Some(std::time::Duration::from_secs(10)));
    tcp.set_keepalive_retries(Some(3));
    tcp.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1();
    let https = if http2 {
        https.enable_http2().wrap_connector(tcp)
    } else {
        https.wrap_connector(tcp)
    };
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(hyper_util::rt::TokioTimer::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .http2_keep_alive_interval(std::time::Duration::from_secs(15))
        .http2_keep_alive_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_while_idle(true);
    b.build(https)
}

fn rustls_pki_certs(pem: &str) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    crate::api::certs::pem_certs(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the Kubernetes CA is {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubelet swaps a projected token in by its `..data` symlink: two
    /// directories written in one clock tick look alike but for the file.
    #[cfg(unix)]
    #[test]
    fn a_token_swapped_in_by_symlink_is_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let when = SystemTime::now();
        for (d, tok) in [("a", "token-one\n"), ("b", "token-two\n")] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            let f = dir.path().join(d).join("token");
            std::fs::write(&f, tok).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        let data = dir.path().join("..data");
        std::os::unix::fs::symlink("a", &data).unwrap();
        let link = dir.path().join("token");
        std::os::unix::fs::symlink("..data/token", &link).unwrap();
        let tf = TokenFile::new(&link);
        assert_eq!(&*tf.token().unwrap(), "token-one");
        let next = dir.path().join("..data.tmp");
        std::os::unix::fs::symlink("b", &next).unwrap();
        std::fs::rename(&next, &data).unwrap();
        assert_eq!(&*tf.token().unwrap(), "token-two");
    }
}
