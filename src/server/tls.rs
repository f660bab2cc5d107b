//! The server's TLS identity: the operator's certificate, or a self-signed
//! one made on first start and kept in the data directory.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    /// SHA-256 of the leaf certificate, `AB:CD:…`, for trust on first use.
    pub fingerprint: String,
}

pub fn load_or_create(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    listen: SocketAddr,
) -> anyhow::Result<TlsIdentity> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        _ => {
            let c = data_dir.join("tls.crt");
            let k = data_dir.join("tls.key");
            if !c.exists() || !k.exists() {
                let (cert_pem, key_pem) = self_signed(listen)?;
                crate::fsutil::write_private(&k, key_pem.as_bytes())
                    .with_context(|| format!("cannot write {}", k.display()))?;
                crate::fsutil::write_private(&c, cert_pem.as_bytes())
                    .with_context(|| format!("cannot write {}", c.display()))?;
                eprintln!("generated a self-signed TLS certificate in {}", c.display());
            }
            (c, k)
        }
    };
    let cert_pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("cannot read the TLS certificate {}", cert_path.display()))?;
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read the TLS key {}", key_path.display()))?;
    let der = first_cert_der(&cert_pem)
        .with_context(|| format!("{} holds no PEM certificate", cert_path.display()))?;
    Ok(TlsIdentity {
        fingerprint: crate::api::certs::fingerprint(&der),
        cert_pem,
        key_pem,
    })
}

fn self_signed(listen: SocketAddr) -> anyhow::Result<(String, String)> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    if let Some(host) = hostname() {
        names.push(host);
    }
    let mut params = rcgen::CertificateParams::new(names).context("bad certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "infra server");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/etc/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    .then(|| h.to_string())
}

pub use crate::api::certs::first_cert_der;

/// `SHA-256 AB:CD:…` of the first certificate in a PEM bundle, for the
/// audit log; `none` without one.
pub fn fingerprint_pem(pem: &str) -> String {
    match first_cert_der(pem) {
        Some(der) => format!("SHA-256 {}", crate::api::certs::fingerprint(&der)),
        None => "none".to_string(),
    }
}
