//! `infra status`: each server this machine knows, who you are there, when
//! the key expires, where it is kept, and whether the server accepts it.

use serde::Serialize;

use super::output::{self, Format, FormatArg};
use super::session::trust_of;
use crate::client::{Client, ClientError};
use crate::local::config::Config;
use crate::local::credentials;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  infra status\n  infra status --format json")]
pub struct StatusArgs {
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerStatus {
    server: String,
    url: String,
    current: bool,
    user: String,
    #[serde(rename = "userID")]
    user_id: String,
    expires: Option<String>,
    key_store: String,
    /// `valid`, `not logged in`, `expired or revoked`, or `unreachable: …`.
    status: String,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let config = Config::load()?;
    let mut all = Vec::new();
    for entry in &config.servers {
        let found = credentials::load_key(
            &super::session::account(&entry.user_name, &entry.server),
            entry.key_store,
        )?;
        let (key_store, status) = match found {
            None => (entry.key_store.to_string(), "not logged in".to_string()),
            Some((key, store)) => {
                let client = Client::new(&entry.url, &trust_of(entry), Some(key))?;
                let status = match client
                    .get::<crate::api::ListResponse<crate::api::Grant>>("/api/grants?limit=1")
                    .await
                {
                    Ok(_) => "valid".to_string(),
                    Err(ClientError::Api { status: 401, .. }) => "expired or revoked".to_string(),
                    Err(e) => format!("unreachable: {e}"),
                };
                (store.to_string(), status)
            }
        };
        all.push(ServerStatus {
            server: entry.server.clone(),
            url: entry.url.clone(),
            current: config.current.as_deref() == Some(entry.server.as_str()),
            user: entry.user_name.clone(),
            user_id: entry.user_id.clone(),
            expires: entry.expires.clone(),
            key_store,
            status,
        });
    }
    let format = args.format.format();
    match format {
        Format::Table | Format::Plain => {
            if all.is_empty() {
                eprintln!("You are not logged in to any infra server. Run `infra login SERVER`.");
                return Ok(());
            }
            let tty = format == Format::Table;
            let mut out = String::new();
            for s in &all {
                let mark = if s.current { "* " } else { "  " };
                if tty {
                    out.push_str(&format!(
                        "{mark}{}\n    user:     {}\n    expires:  {}\n    key in:   {}\n    status:   {}\n",
                        s.server,
                        s.user,
                        s.expires.as_deref().map(output::short_time).unwrap_or_default(),
                        s.key_store,
                        s.status
                    ));
                } else {
                    out.push_str(&format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\n",
                        s.server,
                        s.user,
                        s.expires.as_deref().unwrap_or(""),
                        s.key_store,
                        s.status,
                        if s.current { "current" } else { "" }
                    ));
                }
            }
            output::line(out.trim_end())?;
        }
        f => output::data(f, &all)?,
    }
    if all.iter().any(|s| s.current && s.status != "valid") {
        let cur = all
            .iter()
            .find(|s| s.current)
            .map(|s| s.server.clone())
            .unwrap_or_default();
        return Err(super::AuthNeeded(format!(
            "the key for {cur} is not accepted; run `infra login {cur}`"
        ))
        .into());
    }
    Ok(())
}
