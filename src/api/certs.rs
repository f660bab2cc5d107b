//! Certificates as both sides name them: PEM bundles read with rustls's
//! own parser, and SHA-256 fingerprints in one canonical form
//! (`AB:CD:…`), which the server prints and the CLI and connectors pin.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// SHA-256 of a DER certificate, upper-case hex pairs joined by colons.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts `AB:CD:…`, `abcd…` or `SHA256:…`; returns the canonical form.
pub fn normalize_fingerprint(fp: &str) -> Option<String> {
    let hex: String = fp
        .trim()
        .trim_start_matches("SHA256:")
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let upper = hex.to_ascii_uppercase();
    Some(
        upper
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// Every certificate of a PEM bundle; an error says what is wrong with it,
/// and a bundle without any certificate is one.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

/// The DER bytes of the first certificate in a PEM bundle.
pub fn first_cert_der(pem: &str) -> Option<Vec<u8>> {
    pem_certs(pem.as_bytes())
        .ok()
        .and_then(|c| c.into_iter().next())
        .map(|c| c.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize() {
        let fp = "ab".repeat(32);
        let want = vec!["AB"; 32].join(":");
        assert_eq!(normalize_fingerprint(&fp).unwrap(), want);
        assert_eq!(normalize_fingerprint(&want).unwrap(), want);
        assert_eq!(
            normalize_fingerprint(&format!("SHA256:{fp}")).unwrap(),
            want
        );
        assert!(normalize_fingerprint("AB:CD").is_none());
        assert!(normalize_fingerprint(&"zz".repeat(32)).is_none());
        assert_eq!(fingerprint(b"x").len(), 95);
    }

    #[test]
    fn pem_bundles() {
        let cert = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let pem = cert.cert.pem();
        let der = first_cert_der(&pem).unwrap();
        assert_eq!(der, cert.cert.der().to_vec());
        assert_eq!(
            pem_certs(format!("{pem}{pem}").as_bytes()).unwrap().len(),
            2
        );
        assert!(first_cert_der("").is_none());
        assert!(
            first_cert_der("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")
                .is_none()
        );
        assert!(pem_certs(b"hello").is_err());
    }
}
