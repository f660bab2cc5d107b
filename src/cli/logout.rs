//! `infra logout`: revoke the session key on the server (or several
//! servers' with `--all`), forget it on this machine, take the server's
//! contexts out of the kubeconfig and the server out of the config file,
//! and delete the cluster tokens cached for it.

use super::kubeconfig::remove_kubeconfig;
use super::session::{account, forget_cached_tokens, trust_of, update_config};
use super::{AuthNeeded, Usage};
use crate::client::{Client, ClientError};
use crate::local::config::{Config, KeyStore, canonical_server};
use crate::local::credentials;

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The server to log out of (default: the current one)
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,

    /// Log out of every server
    #[arg(long, env = "INFRA_LOGOUT_ALL", conflicts_with = "server")]
    pub all: bool,
}

pub async fn run(args: LogoutArgs) -> anyhow::Result<()> {
    let config = Config::load()?;
    let targets: Vec<String> = if args.all {
        config.servers.iter().map(|s| s.server.clone()).collect()
    } else {
        let s = match &args.server {
            Some(s) => canonical_server(s).map_err(Usage)?.0,
            None => config
                .current
                .clone()
                .ok_or_else(|| AuthNeeded("you are not logged in to any infra server".into()))?,
        };
        if config.find(&s).is_none() {
            return Err(AuthNeeded(format!("you are not logged in to {s}")).into());
        }
        vec![s]
    };
    for server in targets {
        let Some(entry) = config.find(&server).cloned() else {
            continue;
        };
        let acct = account(&entry.user_name, &server);
        if let Ok(Some((key, KeyStore::Keyring | KeyStore::File))) =
            credentials::load_key(&acct, entry.key_store)
        {
            let client = Client::new(&entry.url, &trust_of(&entry), Some(key))?;
            match client.logout().await {
                Ok(()) | Err(ClientError::Api { status: 401, .. }) => {}
                Err(e) => eprintln!(
                    "warning: could not revoke the key on {server} ({e}); forgetting it here anyway"
                ),
            }
        }
        credentials::delete_key(&acct)?;
        remove_kubeconfig(&server).await?;
        update_config(|config| {
            // The certificate trusted for the server stays pinned: it is the
            // server's, not the session's.
            config.log_out(&server);
            if config.current.as_deref() == Some(server.as_str()) || config.current.is_none() {
                config.current = config.servers.first().map(|s| s.server.clone());
            }
        })?;
        forget_cached_tokens(&server);
        eprintln!("Logged out of {server}");
    }
    // What is left of servers this config home is no longer logged in to
    // (an earlier logout that could not finish, an older infra's files).
    let home = crate::local::token_cache::this_home();
    let still: Vec<String> = Config::load()?
        .servers
        .iter()
        .map(|s| s.server.clone())
        .collect();
    if let Err(e) = crate::local::token_cache::prune(&home, &still) {
        eprintln!("warning: could not delete old cached cluster tokens: {e:#}");
    }
    Ok(())
}
