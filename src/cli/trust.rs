//! Trust on first use: how `infra login` (and a machine login) trusts the
//! server's TLS certificate. A flag decides (`--skip-tls-verify`,
//! `--tls-trusted-cert`, `--tls-trusted-fingerprint`), else the
//! environment (`INFRA_TLS_TRUSTED_FINGERPRINT`, `INFRA_TLS_TRUSTED_CERT`),
//! else the trust remembered for the server (kept across a logout), else
//! the system's roots; a certificate they
//! do not vouch for is shown by its fingerprint, for the person to accept
//! on a terminal or to pass with a flag.

use anyhow::Context;

use super::Usage;
use super::login::LoginArgs;
use super::session::{can_prompt, confirm, trust_of};
use crate::client::{ClientError, Trust, tls};
use crate::local::config::ServerEntry;

/// Decides how to trust the server, asking the person if needed.
pub(super) async fn decide_trust(
    args: &LoginArgs,
    server: &str,
    existing: Option<&ServerEntry>,
) -> anyhow::Result<Trust> {
    if args.skip_tls_verify {
        eprintln!(
            "warning: not verifying the TLS certificate of {server}: anyone on the network path can read your credentials"
        );
        return Ok(Trust::Insecure);
    }
    if let Some(path) = &args.tls_trusted_cert {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the certificate {}", path.display()))?;
        return Ok(Trust::Cert(pem));
    }
    if let Some(fp) = &args.tls_trusted_fingerprint {
        let fp = tls::normalize_fingerprint(fp).ok_or_else(|| {
            Usage("--tls-trusted-fingerprint must be a SHA-256 fingerprint: 64 hex digits, colons optional".into())
        })?;
        return Ok(Trust::Fingerprint(fp));
    }
    if let Some(t) = super::session::env_trust()? {
        return Ok(t);
    }
    if let Some(e) = existing {
        let t = trust_of(e);
        if t != Trust::System {
            return Ok(t);
        }
    }
    let (host, port) = split_host_port(server);
    let probe = tls::probe(&host, port).await?;
    if probe.trusted_by_system {
        return Ok(Trust::System);
    }
    let why = probe.system_error.unwrap_or_default();
    if !can_prompt() {
        anyhow::bail!("{}", untrusted_message(server, &why, &probe.fingerprint));
    }
    eprintln!(
        "The certificate of {server} is not trusted by this system ({why}).\n\
         SHA-256 fingerprint: {}\n\
         Compare it with the one the server printed at start-up or that your administrator gave you.",
        probe.fingerprint
    );
    if confirm("Trust this certificate and remember it for this server?")? {
        Ok(Trust::Fingerprint(probe.fingerprint))
    } else {
        anyhow::bail!("the certificate of {server} was not trusted; nothing was saved")
    }
}

/// What to do about a certificate the system does not vouch for: its
/// fingerprint, and the flags (for `infra login`) and the environment
/// variables (for a machine with no login) that trust it.
pub fn untrusted_message(server: &str, why: &str, fp: &str) -> String {
    format!(
        "the certificate of {server} is not trusted by this system ({why}).\n\
         Its SHA-256 fingerprint is {fp}\n\
         (the server prints it at start-up; or ask your administrator).\n\
         Check it with your administrator, then run one of:\n  \
         infra login {server} --tls-trusted-fingerprint {fp}\n  \
         infra login {server} --tls-trusted-cert CA.pem\n  \
         infra login {server} --skip-tls-verify   (unsafe)\n\
         or, without logging in (CI), set in the environment:\n  \
         {env_fp}={fp}\n  \
         {env_cert}=CA.pem   (a PEM file's path, or the PEM text)",
        env_fp = super::session::ENV_FINGERPRINT,
        env_cert = super::session::ENV_CERT,
    )
}

/// Turns a [`ClientError::Untrusted`] into [`untrusted_message`], with the
/// fingerprint from a fresh probe of the server; any other error is
/// returned as it is.
pub async fn explain_untrusted(e: anyhow::Error) -> anyhow::Error {
    let Some(ClientError::Untrusted { server, reason }) = e.downcast_ref::<ClientError>() else {
        return e;
    };
    let host = server.trim_start_matches("https://").trim_end_matches('/');
    let (h, p) = split_host_port(host);
    match tls::probe(&h, p).await {
        Ok(probe) => anyhow::anyhow!(
            "{}",
            untrusted_message(
                host,
                probe.system_error.as_deref().unwrap_or(reason),
                &probe.fingerprint
            )
        ),
        Err(_) => e,
    }
}

fn split_host_port(server: &str) -> (String, u16) {
    match server.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap_or(443)),
        _ => (server.to_string(), 443),
    }
}
