//! The cluster's API server as the connector reaches it: its URL, the CA
//! that signs it, and the connector's own service-account token, re-read
//! when the file changes (projected tokens rotate).

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
    cached: Mutex<Option<(SystemTime, Arc<str>)>>,
}

impl TokenFile {
    pub fn new(path: &Path) -> TokenFile {
        TokenFile {
            path: path.to_path_buf(),
            cached: Mutex::new(None),
        }
    }

    /// The current token; reads the file again when it changed.
    pub fn token(&self) -> anyhow::Result<Arc<str>> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .with_context(|| format!("cannot read the token file {}", self.path.display()))?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, tok)) = cached.as_ref()
            && *t == modified
        {
            return Ok(tok.clone());
        }
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read the token file {}", self.path.display()))?;
        let tok: Arc<str> = Arc::from(text.trim());
        *cached = Some((modified, tok.clone()));
        Ok(tok)
    }

    pub fn path(&self) -> &Path {
        &self.path
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
    Ok(Upstream {
        requests: client(ca_pem, true)?,
        upgrades: client(ca_pem, false)?,
    })
}

fn client(ca_pem: &str, http2: bool) -> anyhow::Result<HttpsClient> {
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
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1();
    let https = if http2 {
        https.enable_http2().build()
    } else {
        https.build()
    };
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(hyper_util::rt::TokioTimer::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .http2_keep_alive_interval(std::time::Duration::from_secs(15))
        .http2_keep_alive_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_while_idle(true);
    Ok(b.build(https))
}

fn rustls_pki_certs(pem: &str) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    crate::api::certs::pem_certs(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the Kubernetes CA is {e}"))
}
