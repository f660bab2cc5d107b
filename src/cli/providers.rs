//! `infra providers`: the OpenID Connect identity providers people sign in
//! with. After adding or changing one, it says what an admin should know:
//! whether the provider gives refresh tokens, and which claim names users.

use clap::Subcommand;
use secrecy::SecretString;

use super::Usage;
use super::lookup::remove_found;
use super::output::{self, FormatArg};
use super::session::{ServerArg, resolve};
use crate::api::{self, Provider};

#[derive(Debug, Subcommand)]
pub enum ProvidersCmd {
    /// Add an OpenID Connect identity provider
    #[command(
        after_help = "Example:\n  infra providers add okta --url example.okta.com \\\n    \
                            --client-id 0oa1b2c3 --client-secret $SECRET"
    )]
    Add {
        /// A name for the provider, e.g. okta (`infra login --provider NAME`)
        name: String,
        /// The provider's issuer URL (a bare domain means https)
        #[arg(long)]
        url: String,
        /// The client id of the application registered at the provider
        #[arg(long)]
        client_id: String,
        /// The client secret (or INFRA_PROVIDER_CLIENT_SECRET)
        #[arg(long, env = "INFRA_PROVIDER_CLIENT_SECRET", hide_env_values = true)]
        client_secret: SecretString,
        /// oidc, okta, azure, google, gitlab, dex or keycloak
        #[arg(long, default_value = "oidc")]
        kind: String,
        /// PEM file with the provider's CA, when it is not publicly trusted
        #[arg(long, value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
        /// The claim that names users, e.g. preferred_username (Dex, Keycloak,
        /// GitLab) [default: the verified email]
        #[arg(long, value_name = "CLAIM")]
        username_claim: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List identity providers
    #[command(
        alias = "ls",
        after_help = "Examples:\n  infra providers list\n  infra providers list --format json"
    )]
    List {
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Change a provider's URL, client id or secret
    #[command(
        after_help = "Examples:\n  infra providers edit okta --client-secret $NEW_SECRET\n  \
                      infra providers edit okta --url https://example.okta.com/oauth2/default"
    )]
    Edit {
        /// The provider's name
        name: String,
        /// A new issuer URL
        #[arg(long)]
        url: Option<String>,
        /// A new client id
        #[arg(long)]
        client_id: Option<String>,
        /// A new client secret (or INFRA_PROVIDER_CLIENT_SECRET)
        #[arg(long, env = "INFRA_PROVIDER_CLIENT_SECRET", hide_env_values = true)]
        client_secret: Option<SecretString>,
        /// PEM file with the provider's CA
        #[arg(long, value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
        /// The claim that names new users, e.g. preferred_username; "email"
        /// goes back to the verified email
        #[arg(long, value_name = "CLAIM")]
        username_claim: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove a provider
    #[command(alias = "rm", after_help = "Example:\n  infra providers remove okta")]
    Remove {
        /// The provider's name
        name: String,
        /// Succeed even if it does not exist
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

fn read_ca(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    path.map(|p| {
        std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the CA file {}", p.display()))
    })
    .transpose()
}

/// What an admin should know about a provider they just added or changed.
fn warn_provider(p: &Provider) {
    if !p.refresh_tokens {
        eprintln!(
            "warning: {} does not offer refresh tokens (its discovery document lists no \
             offline_access scope), so infra cannot re-check its users' sessions: each one lasts \
             only as long as the sign-in's ID token, and people log in again after that",
            p.name
        );
    }
    let by = if p.username_claim.is_empty() {
        "their verified email"
    } else {
        p.username_claim.as_str()
    };
    eprintln!("Users of {} are named by {by}.", p.name);
}

pub async fn run(cmd: ProvidersCmd) -> anyhow::Result<()> {
    match cmd {
        ProvidersCmd::Add {
            name,
            url,
            client_id,
            client_secret,
            kind,
            ca_file,
            username_claim,
            server,
        } => {
            let ca_cert = read_ca(ca_file.as_deref())?;
            let s = resolve(server.server.as_deref())?;
            let p: Provider = s
                .client
                .post(
                    "/api/providers",
                    &api::CreateProviderRequest {
                        name,
                        kind,
                        url,
                        client_id,
                        client_secret,
                        ca_cert,
                        username_claim,
                    },
                )
                .await?;
            eprintln!("Added provider {} ({})", p.name, p.url);
            warn_provider(&p);
        }
        ProvidersCmd::List { format, server } => {
            let s = resolve(server.server.as_deref())?;
            let list: Vec<Provider> = s.client.list_all("/api/providers").await?;
            let rows: Vec<_> = list
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.kind.clone(),
                        p.url.clone(),
                        p.client_id.clone(),
                    ]
                })
                .collect();
            output::list(
                format.format(),
                &list,
                &["NAME", "KIND", "URL", "CLIENT ID"],
                rows,
            )?;
        }
        ProvidersCmd::Edit {
            name,
            url,
            client_id,
            client_secret,
            ca_file,
            username_claim,
            server,
        } => {
            let ca_cert = read_ca(ca_file.as_deref())?;
            if url.is_none()
                && client_id.is_none()
                && client_secret.is_none()
                && ca_cert.is_none()
                && username_claim.is_none()
            {
                return Err(Usage(
                    "nothing to change: give --url, --client-id, --client-secret, --ca-file or \
                     --username-claim"
                        .into(),
                )
                .into());
            }
            let s = resolve(server.server.as_deref())?;
            let p = s.client.provider_by_name(&name).await?.ok_or_else(|| {
                anyhow::anyhow!("no provider named {name:?}; see `infra providers list`")
            })?;
            let p: Provider = s
                .client
                .patch(
                    &format!("/api/providers/{}", p.id),
                    &api::UpdateProviderRequest {
                        url,
                        client_id,
                        client_secret,
                        ca_cert,
                        username_claim,
                    },
                )
                .await?;
            eprintln!("Updated provider {name}");
            warn_provider(&p);
        }
        ProvidersCmd::Remove {
            name,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let found = s.client.provider_by_name(&name).await?.map(|p| p.id);
            remove_found(&s.client, found, "providers", "provider", &name, force).await?;
        }
    }
    Ok(())
}
