//! `infra status`: each server this machine knows (or, with
//! `INFRA_ACCESS_KEY`, the one that key is for), where its key lives, whose
//! key it is and until when (as the server says, `GET /api/whoami`), and
//! whether the server answers, with its version.
//!
//! Exit status, from the server commands use by default (the current one,
//! or `--server` / `INFRA_SERVER`): 0 when it takes the key; 4 when there
//! is no key or the server refuses it (log in again); 1 when the server
//! cannot be reached or its certificate changed. The local facts are
//! printed first in every case.

use serde::Serialize;
use tokio::task::JoinSet;

use super::output::{self, Format, FormatArg};
use super::session::{ServerArg, account, trust_for};
use crate::api::VersionResponse;
use crate::client::{Client, ClientError};
use crate::local::config::{Config, KeyStore, ServerEntry, canonical_server};
use crate::local::credentials;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "For each server: where its access key lives (the OS keyring's entry, \
                        the fallback file, or INFRA_ACCESS_KEY), whose key it is and when it \
                        expires (as the server says), and whether the server answers, with its \
                        version. With INFRA_ACCESS_KEY set, only the server that key is for \
                        (--server, INFRA_SERVER or the current one).\n\n\
                        Exit status: 0 when the current server takes its key; 4 when there is \
                        no key or the server refuses it (log in again); 1 when the server cannot \
                        be reached or its certificate changed.\n\n\
                        Examples:\n  infra status\n  infra status --format json"
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArg,
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
    /// `keyring`, `file`, `environment` or `none`.
    key_store: String,
    /// Where exactly: the keyring entry, the file's path, or the variable.
    key_location: String,
    /// The server's version, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_version: Option<String>,
    /// `valid`, `not logged in`, `expired or revoked`, `cannot reach …`,
    /// `certificate changed …` or the server's error.
    status: String,
    #[serde(skip)]
    failure: Option<Failure>,
}

#[derive(Debug)]
enum Failure {
    NoKey,
    Refused,
    Client(ClientError),
}

/// A server to look at: its config entry (none for `INFRA_ACCESS_KEY` on a
/// server this machine never logged in to), whether it is the default.
struct Target {
    server: String,
    url: String,
    entry: Option<ServerEntry>,
    current: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let config = Config::load()?;
    let env_key = credentials::access_key_from_env();
    let chosen = match &args.server.server {
        Some(s) => Some(
            canonical_server(s)
                .map_err(|e| super::Usage(format!("--server: {e}")))?
                .0,
        ),
        None => config.current.clone(),
    };
    let target = |server: &str| -> anyhow::Result<Target> {
        let entry = config.find(server).cloned();
        let url = match &entry {
            Some(e) => e.url.clone(),
            None => canonical_server(server).map_err(super::Usage)?.1,
        };
        Ok(Target {
            server: server.to_string(),
            url,
            entry,
            current: chosen.as_deref() == Some(server),
        })
    };
    let targets: Vec<Target> = match (&env_key, &chosen, &args.server.server) {
        // The environment's key is for one server only.
        (Some(_), Some(c), _) => vec![target(c)?],
        (Some(_), None, _) => {
            return Err(super::Usage(
                "INFRA_ACCESS_KEY is set but no server is: set INFRA_SERVER or pass --server"
                    .into(),
            )
            .into());
        }
        (None, c, Some(_)) => c.iter().map(|c| target(c)).collect::<anyhow::Result<_>>()?,
        (None, _, None) => config
            .servers
            .iter()
            .map(|e| target(&e.server))
            .collect::<anyhow::Result<_>>()?,
    };

    let mut tasks = JoinSet::new();
    for (i, t) in targets.into_iter().enumerate() {
        let key = match (&env_key, &t.entry) {
            (Some(k), _) => Some((k.clone(), KeyStore::Environment)),
            (None, Some(e)) => credentials::Credentials::from_env()
                .load_key(&account(&e.user_name, &e.server), e.key_store)?,
            (None, None) => None,
        };
        // A server logged out of keeps its pinned certificate.
        let trust = trust_for(config.trust_entry(&t.server).as_ref())?;
        let client = Client::new(&t.url, &trust, key.as_ref().map(|(k, _)| k.clone()))?;
        let store = key.as_ref().map(|(_, s)| *s);
        tasks.spawn(async move { (i, look(t, client, store).await) });
    }
    let mut all: Vec<(usize, ServerStatus)> = tasks.join_all().await;
    all.sort_by_key(|(i, _)| *i);
    let mut all: Vec<ServerStatus> = all.into_iter().map(|(_, s)| s).collect();

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
                let server_line = match &s.server_version {
                    Some(v) => format!("{} (infra {v})", s.url),
                    None => s.url.clone(),
                };
                if tty {
                    out.push_str(&format!(
                        "{mark}{}\n    server:   {server_line}\n    user:     {}\n    \
                         expires:  {}\n    key in:   {}\n    status:   {}\n",
                        s.server,
                        s.user,
                        s.expires
                            .as_deref()
                            .map(output::short_time)
                            .unwrap_or_default(),
                        s.key_location,
                        s.status
                    ));
                } else {
                    out.push_str(&format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                        s.server,
                        s.user,
                        s.expires.as_deref().unwrap_or(""),
                        s.key_location,
                        s.status,
                        if s.current { "current" } else { "" },
                        s.server_version.as_deref().unwrap_or("")
                    ));
                }
            }
            output::line(out.trim_end())?;
        }
        f => output::data(f, &all)?,
    }
    let Some(cur) = all.iter_mut().find(|s| s.current) else {
        return Ok(());
    };
    let server = cur.server.clone();
    match cur.failure.take() {
        None => Ok(()),
        Some(Failure::NoKey) => Err(super::AuthNeeded(format!(
            "there is no access key for {server} here; run `infra login {server}`"
        ))
        .into()),
        Some(Failure::Refused) => Err(super::AuthNeeded(format!(
            "the key for {server} is not accepted ({}); run `infra login {server}`",
            cur.status
        ))
        .into()),
        Some(Failure::Client(e)) => Err(e.into()),
    }
}

/// Where a key lives, for a person to find it.
fn key_location(store: Option<KeyStore>, entry: Option<&ServerEntry>) -> String {
    match (store, entry) {
        (Some(KeyStore::Environment), _) => "INFRA_ACCESS_KEY (environment)".to_string(),
        (Some(KeyStore::File), _) => format!(
            "file {}",
            credentials::Credentials::from_env().file_path().display()
        ),
        (Some(KeyStore::Keyring), Some(e)) => format!(
            "OS keyring (service {}, entry {})",
            credentials::SERVICE,
            credentials::Credentials::from_env().keyring_account(&account(&e.user_name, &e.server))
        ),
        _ => "none".to_string(),
    }
}

/// Asks the server for its version and whose the key is.
async fn look(t: Target, client: Client, store: Option<KeyStore>) -> ServerStatus {
    let mut s = ServerStatus {
        server: t.server.clone(),
        url: t.url.clone(),
        current: t.current,
        user: t
            .entry
            .as_ref()
            .map(|e| e.user_name.clone())
            .unwrap_or_default(),
        user_id: t
            .entry
            .as_ref()
            .map(|e| e.user_id.clone())
            .unwrap_or_default(),
        expires: t.entry.as_ref().and_then(|e| e.expires.clone()),
        key_store: store.map_or("none".to_string(), |s| s.to_string()),
        key_location: key_location(store, t.entry.as_ref()),
        server_version: None,
        status: String::new(),
        failure: None,
    };
    if store == Some(KeyStore::Environment) {
        // Not the login's user: the server says whose this key is.
        s.user.clear();
        s.user_id.clear();
        s.expires = None;
    }
    match client.get::<VersionResponse>("/api/version").await {
        Ok(v) => s.server_version = Some(v.version),
        Err(e @ ClientError::Api { .. }) => {
            // It answers, but not with its version (a version skew, say).
            s.status = e.to_string();
            s.failure = Some(Failure::Client(e));
            return s;
        }
        Err(e) => {
            s.status = e.to_string();
            s.failure = Some(Failure::Client(e));
            return s;
        }
    }
    if store.is_none() {
        s.status = "not logged in".to_string();
        s.failure = Some(Failure::NoKey);
        return s;
    }
    match client.whoami().await {
        Ok(w) => {
            s.user = w.name;
            s.user_id = w.id;
            s.expires = Some(w.expires);
            s.status = "valid".to_string();
        }
        Err(ClientError::Api { status: 401, .. }) => {
            s.status = "expired or revoked".to_string();
            s.failure = Some(Failure::Refused);
        }
        Err(e) => {
            s.status = e.to_string();
            s.failure = Some(Failure::Client(e));
        }
    }
    s
}
