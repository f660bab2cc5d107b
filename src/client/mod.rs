//! The typed HTTP client for the server's API, used by the CLI and the
//! connector. It sends `Infra-Version`, applies the chosen TLS trust, and
//! turns error bodies into [`ClientError`]s that carry the server's message.

pub mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{self, ErrorResponse, ListResponse};
pub use tls::Trust;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{}", api_message(.body))]
    Api {
        status: u16,
        body: ErrorResponse,
        /// The server's `Retry-After`, in seconds, when it sent one.
        retry_after: Option<u64>,
    },
    /// A pinned server presented another certificate.
    #[error("the certificate of {server} has changed (it was {pinned}, it is now {seen})")]
    CertificateChanged {
        server: String,
        pinned: String,
        seen: String,
    },
    /// The server's certificate is not vouched for by the trusted roots
    /// (the system's, or the certificate given to trust).
    #[error("cannot reach {server}: its TLS certificate is not trusted ({reason})")]
    Untrusted { server: String, reason: String },
    /// The server could not be reached, or answered with something that is
    /// not the infra API.
    #[error("{0}")]
    Transport(String),
}

fn api_message(body: &ErrorResponse) -> String {
    let mut msg = body.message.clone();
    for fe in &body.field_errors {
        let line = format!("{}: {}", fe.field_name, fe.errors.join(", "));
        if !msg.contains(&line) {
            msg.push_str(&format!("\n  {line}"));
        }
    }
    msg
}

/// The answer of [`Client::get_if_changed`]: `value` is `None` when the
/// copy held is still current.
#[derive(Debug)]
pub struct Conditional<T> {
    pub value: Option<T>,
    pub header: Option<String>,
    pub etag: Option<String>,
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// How long the server asked to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api { retry_after, .. } => retry_after.map(Duration::from_secs),
            _ => None,
        }
    }
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<SecretString>,
    pinned: Option<(String, Arc<Mutex<Option<String>>>)>,
    /// Certificates are checked against roots (not pinned, not skipped).
    verifying: bool,
}

impl Client {
    /// `base` is `https://host:port`.
    pub fn new(base: &str, trust: &Trust, key: Option<SecretString>) -> anyhow::Result<Client> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("infra/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        let mut pinned = None;
        match trust {
            Trust::System => {}
            Trust::Insecure => b = b.danger_accept_invalid_certs(true),
            Trust::Cert(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(|e| anyhow::anyhow!("the trusted certificate is not PEM: {e}"))?;
                anyhow::ensure!(
                    !certs.is_empty(),
                    "the trusted certificate file holds no PEM certificate"
                );
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            Trust::Fingerprint(fp) => {
                let verifier = tls::PinnedVerifier::new(fp.clone());
                pinned = Some((fp.clone(), verifier.seen.clone()));
                let provider = rustls::crypto::CryptoProvider::get_default()
                    .cloned()
                    .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                b = b.use_preconfigured_tls(config);
            }
        }
        Ok(Client {
            http: b.build()?,
            base: base.trim_end_matches('/').to_string(),
            key,
            pinned,
            verifying: matches!(trust, Trust::System | Trust::Cert(_)),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client, with this server's TLS trust.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn with_key(mut self, key: SecretString) -> Client {
        self.key = Some(key);
        self
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response> {
        self.send_with(method, path, |req| match body {
            Some(b) => req.json(b),
            None => req,
        })
        .await
    }

    /// Sends a request `body` finishes (a JSON or text body).
    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(api::VERSION_HEADER, api::version::CURRENT);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k.expose_secret());
        }
        req = body(req);
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        for w in resp.headers().get_all(reqwest::header::WARNING) {
            if let Some(text) = w.to_str().ok().and_then(api::warning_text) {
                eprintln!("warning: {text}");
            }
        }
        let status = resp.status();
        // 304 only ever answers a conditional GET (`get_if_changed`).
        if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str::<ErrorResponse>(&text).unwrap_or_else(|_| ErrorResponse {
            code: status.as_u16(),
            message: format!(
                "{} answered {status} without an infra error body: is it an infra server?",
                self.base
            ),
            field_errors: Vec::new(),
            reason: None,
        });
        Err(ClientError::Api {
            status: status.as_u16(),
            body,
            retry_after,
        })
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        if let Some((pinned, seen)) = &self.pinned {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(seen) = seen.filter(|s| s != pinned) {
                return ClientError::CertificateChanged {
                    server: self.base.clone(),
                    pinned: pinned.clone(),
                    seen,
                };
            }
        }
        if self.verifying
            && let Some(reason) = certificate_error(&e)
        {
            return ClientError::Untrusted {
                server: self.base.clone(),
                reason,
            };
        }
        let mut msg = format!("cannot reach {}: {e}", self.base);
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            let t = s.to_string();
            if !msg.contains(&t) {
                msg.push_str(": ");
                msg.push_str(&t);
            }
            src = s.source();
        }
        ClientError::Transport(msg)
    }

    async fn json<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        // No body (204) reads as `null`: fine for `()` and `Value` answers.
        let text = if text.trim().is_empty() {
            "null"
        } else {
            text.as_str()
        };
        serde_json::from_str(text).map_err(|e| {
            ClientError::Transport(format!(
                "{} sent a response infra cannot read: {e}",
                self.base
            ))
        })
    }

    /// A GET that answers nothing new when the server still has the copy
    /// the caller holds (`etag`, sent as If-None-Match; 304). Also returns
    /// the response header `header` and the new ETag.
    pub async fn get_if_changed<T: DeserializeOwned>(
        &self,
        path: &str,
        etag: Option<&str>,
        header: &str,
    ) -> Result<Conditional<T>> {
        let resp = self
            .send_with(Method::GET, path, |req| match etag {
                Some(t) => req.header(reqwest::header::IF_NONE_MATCH, t),
                None => req,
            })
            .await?;
        let value_of = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let (index, new_etag) = (value_of(header), value_of("etag"));
        let value = if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            None
        } else {
            Some(self.json(resp).await?)
        };
        Ok(Conditional {
            value,
            header: index,
            etag: new_etag,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send::<()>(Method::GET, path, None).await?;
        self.json(resp).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let resp = self.send(Method::POST, path, Some(body)).await?;
        self.json(resp).await
    }

    /// POST a text body of `media_type`, expecting no answer body.
    pub async fn post_text(&self, path: &str, text: &str, media_type: &str) -> Result<()> {
        let text = text.to_string();
        self.send_with(Method::POST, path, |req| {
            req.header(reqwest::header::CONTENT_TYPE, media_type)
                .body(text)
        })
        .await
        .map(|_| ())
    }

    /// GET a text answer (a recording, say).
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let resp = self.send::<()>(Method::GET, path, None).await?;
        resp.text().await.map_err(|e| self.transport(e))
    }

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let resp = self.send(Method::PUT, path, Some(body)).await?;
        self.json(resp).await
    }

    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let resp = self.send(Method::PATCH, path, Some(body)).await?;
        self.json(resp).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send::<()>(Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    /// Every item of a list, following pages.
    pub async fn list_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        self.list_at_most(path, u64::MAX).await
    }

    /// The first `most` items of a list, following pages.
    pub async fn list_at_most<T: DeserializeOwned>(&self, path: &str, most: u64) -> Result<Vec<T>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let limit = most.clamp(1, api::MAX_PAGE_LIMIT);
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let resp: ListResponse<T> = self
                .get(&format!("{path}{sep}page={page}&limit={limit}"))
                .await?;
            let done = page >= resp.total_pages;
            items.extend(resp.items);
            if done || items.len() as u64 >= most {
                items.truncate(usize::try_from(most).unwrap_or(usize::MAX));
                return Ok(items);
            }
            page += 1;
        }
    }

    // ------------------------------------------------------------ typed calls

    pub async fn login(&self, req: &api::LoginRequest) -> Result<api::LoginResponse> {
        self.post("/api/login", req).await
    }

    /// Who the key belongs to.
    pub async fn whoami(&self) -> Result<api::WhoAmIResponse> {
        self.get("/api/whoami").await
    }

    pub async fn logout(&self) -> Result<()> {
        self.send::<()>(Method::POST, "/api/logout", None)
            .await
            .map(|_| ())
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<api::User>> {
        let list: ListResponse<api::User> =
            self.get(&format!("/api/users?name={}", enc(name))).await?;
        Ok(list.items.into_iter().next())
    }

    pub async fn group_by_name(&self, name: &str) -> Result<Option<api::Group>> {
        let list: ListResponse<api::Group> =
            self.get(&format!("/api/groups?name={}", enc(name))).await?;
        Ok(list.items.into_iter().next())
    }

    pub async fn identity_by_name(&self, name: &str) -> Result<Option<api::Identity>> {
        let list: ListResponse<api::Identity> = self
            .get(&format!("/api/identities?name={}", enc(name)))
            .await?;
        Ok(list.items.into_iter().next())
    }

    pub async fn destination_by_name(&self, name: &str) -> Result<Option<api::Destination>> {
        let list: ListResponse<api::Destination> = self
            .get(&format!("/api/destinations?name={}", enc(name)))
            .await?;
        Ok(list.items.into_iter().next())
    }

    pub async fn provider_by_name(&self, name: &str) -> Result<Option<api::Provider>> {
        let list: ListResponse<api::Provider> = self
            .get(&format!("/api/providers?name={}", enc(name)))
            .await?;
        Ok(list.items.into_iter().next())
    }
}

/// Why the TLS handshake refused the server's certificate, when it did.
fn certificate_error(e: &reqwest::Error) -> Option<String> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(t @ rustls::Error::InvalidCertificate(_)) = tls {
            return Some(t.to_string());
        }
        // hyper wraps the handshake's error in ways a downcast does not
        // always see through; rustls's own words are unmistakable.
        let text = s.to_string();
        if let Some(i) = text.find("invalid peer certificate") {
            return Some(text[i..].to_string());
        }
        src = s.source();
    }
    None
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
