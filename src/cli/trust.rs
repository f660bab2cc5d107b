//! Trust on first use: how `infra login` (and a machine login) trusts the
//! server's TLS certificate. A flag decides (`--skip-tls-verify`,
//! `--tls-trusted-cert`, `--tls-trusted-fingerprint`), else the trust
//! remembered for the server, else the system's roots; a certificate they
//! do not vouch for is shown by its fingerprint, for the person to accept
//! on a terminal or to pass with a flag.

use anyhow::Context;

use super::Usage;
use super::login::LoginArgs;
use super::session::{can_prompt, confirm, trust_of};
use crate::client::{Trust, tls};
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
        anyhow::bail!(
            "the certificate of {server} is not trusted by this system ({why}).\n\
             Its SHA-256 fingerprint is {fp}\n\
             Check it with your administrator, then run one of:\n  \
             infra login {server} --tls-trusted-fingerprint {fp}\n  \
             infra login {server} --tls-trusted-cert CA.pem\n  \
             infra login {server} --skip-tls-verify   (unsafe)",
            fp = probe.fingerprint
        );
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

fn split_host_port(server: &str) -> (String, u16) {
    match server.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap_or(443)),
        _ => (server.to_string(), 443),
    }
}
