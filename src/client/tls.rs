//! How the CLI trusts a server: the system's roots, a certificate the user
//! gave, a pinned SHA-256 fingerprint (trust on first use), or nothing at
//! all (`--skip-tls-verify`). Also the probe that fetches a server's
//! certificate so the user can decide whether to trust it.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, SignatureScheme};

/// How to trust a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's and the bundled web roots.
    System,
    /// Exactly this leaf certificate (SHA-256, `AB:CD:…`).
    Fingerprint(String),
    /// A CA or self-signed certificate, PEM.
    Cert(String),
    /// No verification at all.
    Insecure,
}

pub use crate::api::certs::{fingerprint, normalize_fingerprint};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The roots a server is checked against when nothing else is configured.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// Accepts exactly one leaf certificate, and records what was presented so
/// a mismatch can be reported with the new fingerprint.
#[derive(Debug)]
pub struct PinnedVerifier {
    pinned: String,
    pub seen: Arc<Mutex<Option<String>>>,
}

impl PinnedVerifier {
    pub fn new(pinned: String) -> Self {
        PinnedVerifier {
            pinned,
            seen: Arc::new(Mutex::new(None)),
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let fp = fingerprint(end_entity.as_ref());
        let ok = fp == self.pinned;
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp);
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(TlsError::General("certificate fingerprint mismatch".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a probe learned about a server's certificate.
#[derive(Debug, Clone)]
pub struct Probe {
    pub fingerprint: String,
    /// Whether the system roots vouch for it (for this host name).
    pub trusted_by_system: bool,
    /// Why not, when they do not.
    pub system_error: Option<String>,
}

/// Records the leaf and the system verdict, and lets the handshake finish.
#[derive(Debug)]
struct ProbeVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    result: Arc<Mutex<Option<Probe>>>,
}

impl ServerCertVerifier for ProbeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let verdict =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(Probe {
            fingerprint: fingerprint(end_entity.as_ref()),
            trusted_by_system: verdict.is_ok(),
            system_error: verdict.err().map(|e| e.to_string()),
        });
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Connects to `host:port`, completes a TLS handshake and reports the
/// server's certificate and whether the system trusts it.
pub async fn probe(host: &str, port: u16) -> anyhow::Result<Probe> {
    use anyhow::Context;
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(system_roots()),
        provider(),
    )
    .build()
    .context("cannot build the certificate verifier")?;
    let result = Arc::new(Mutex::new(None));
    let verifier = Arc::new(ProbeVerifier {
        inner,
        result: result.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(host.trim_matches(|c| c == '[' || c == ']').to_string())
        .with_context(|| format!("{host} is not a valid host name"))?;
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.trim_matches(|c| c == '[' || c == ']'), port)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out connecting to {host}:{port}"))?
    .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        connector.connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out in the TLS handshake with {host}:{port}"))?
    .with_context(|| format!("the TLS handshake with {host}:{port} failed"))?;
    let probe = result.lock().unwrap_or_else(|e| e.into_inner()).take();
    probe.with_context(|| format!("{host}:{port} presented no certificate"))
}
