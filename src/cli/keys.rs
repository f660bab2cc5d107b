//! `infra keys`: access keys, for people (one's own, or another user's for
//! admins) and for connectors (each fixed to one destination). A new key is
//! printed once, on stdout; everything else goes to stderr.

use clap::Subcommand;
use secrecy::ExposeSecret;

use super::lookup::{me, user_id};
use super::output::{self, FormatArg, short_time};
use super::session::{ServerArg, resolve};
use crate::api::{self, AccessKey};
use crate::client::enc;

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an access key; it is printed once, on stdout
    #[command(after_help = "Examples:\n  infra keys add --name ci --expiry 720h\n  \
                            infra keys add --user alice@example.com\n  \
                            infra keys add --connector --destination prod\n\n\
                            A connector key serves exactly one destination, fixed when it is \
                            made (--destination, or else --name): the server refuses it for \
                            any other.")]
    Add {
        /// A name for the key
        #[arg(long)]
        name: Option<String>,
        /// How long the key lasts, e.g. 720h or 30d
        #[arg(long)]
        expiry: Option<String>,
        /// How long the key may go unused, e.g. 72h
        #[arg(long)]
        inactivity_timeout: Option<String>,
        /// Create the key for another user (admins)
        #[arg(long, conflicts_with = "connector")]
        user: Option<String>,
        /// Create a key for a connector (admins)
        #[arg(long)]
        connector: bool,
        /// With --connector: the one destination the key serves [default: --name]
        #[arg(long, requires = "connector", value_name = "NAME")]
        destination: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List access keys (yours; admins: --user NAME or --all)
    #[command(
        alias = "ls",
        after_help = "Examples:\n  infra keys list\n  infra keys list --user alice@example.com\n  \
                      infra keys list --all --format json"
    )]
    List {
        /// Keys of this user (admins)
        #[arg(long)]
        user: Option<String>,
        /// Everyone's keys (admins)
        #[arg(long, conflicts_with = "user")]
        all: bool,
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Revoke an access key, by name or id
    #[command(
        alias = "rm",
        after_help = "Examples:\n  infra keys remove ci\n  infra keys remove ci --user alice@example.com"
    )]
    Remove {
        /// The key's name or id
        key: String,
        /// Whose key (admins); default: yours
        #[arg(long)]
        user: Option<String>,
        /// Succeed even if there is no such key
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

pub async fn run(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Add {
            name,
            expiry,
            inactivity_timeout,
            user,
            connector,
            destination,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let requested_until = expiry
                .as_deref()
                .and_then(|e| crate::api::parse_duration(e).ok())
                .and_then(|d| time::Duration::try_from(d).ok())
                .map(|d| crate::clock::now_utc() + d);
            let user_id = match &user {
                Some(u) => Some(user_id(&s.client, u).await?),
                None => None,
            };
            let resp: api::CreateAccessKeyResponse = s
                .client
                .post(
                    "/api/access-keys",
                    &api::CreateAccessKeyRequest {
                        user_id,
                        connector,
                        destination,
                        name,
                        expiry,
                        inactivity_timeout,
                    },
                )
                .await?;
            output::line(resp.access_key.expose_secret())?;
            let serves = resp
                .destination
                .as_deref()
                .map(|d| format!(" for the connector of {d} (and no other destination)"))
                .unwrap_or_default();
            eprintln!(
                "Created access key {}{serves} (expires {}). It is shown only once: keep it safe.",
                resp.name,
                short_time(&resp.expires)
            );
            // Asked for longer than it got: the session it was made from
            // ends first (a provider that gives no refresh token).
            if let (Some(asked), Ok(got)) = (
                requested_until.as_ref(),
                time::OffsetDateTime::parse(
                    &resp.expires,
                    &time::format_description::well_known::Rfc3339,
                ),
            ) && got + time::Duration::minutes(1) < *asked
            {
                eprintln!(
                    "note: it lasts only until {}, when the session it was made from ends (your \
                     identity provider gives no refresh token to keep it longer); a key for \
                     longer needs an admin: `infra keys add --user NAME`",
                    short_time(&resp.expires)
                );
            }
        }
        KeysCmd::List {
            user,
            all,
            format,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let path = match (&user, all) {
                (Some(u), _) => format!(
                    "/api/access-keys?userID={}",
                    enc(&user_id(&s.client, u).await?)
                ),
                (None, true) => "/api/access-keys".to_string(),
                (None, false) => format!("/api/access-keys?userID={}", enc(&me(&s).await?)),
            };
            let keys: Vec<AccessKey> = s.client.list_all(&path).await?;
            let rows: Vec<_> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.name.clone(),
                        k.id.clone(),
                        k.user_name.clone(),
                        short_time(&k.expires),
                        k.inactivity_timeout.clone(),
                        k.last_used
                            .as_deref()
                            .map(short_time)
                            .unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            output::list(
                format.format(),
                &keys,
                &["NAME", "ID", "USER", "EXPIRES", "INACTIVITY", "LAST USED"],
                rows,
            )?;
        }
        KeysCmd::Remove {
            key,
            user,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let owner = match &user {
                Some(u) => Some(user_id(&s.client, u).await?),
                None => Some(me(&s).await?),
            };
            let path = match &owner {
                Some(o) => format!("/api/access-keys?userID={}", enc(o)),
                None => "/api/access-keys".to_string(),
            };
            let keys: Vec<AccessKey> = s.client.list_all(&path).await?;
            match keys.iter().find(|k| k.name == key || k.id == key) {
                Some(k) => {
                    s.client
                        .delete(&format!("/api/access-keys/{}", k.id))
                        .await?;
                    eprintln!("Revoked access key {}", k.name);
                }
                // An id names one key whoever owns it: the server decides
                // whether the caller may revoke it (admins: any).
                None if user.is_none() && looks_like_key_id(&key) => {
                    match s
                        .client
                        .delete(&format!("/api/access-keys/{}", enc(&key)))
                        .await
                    {
                        Ok(()) => eprintln!("Revoked access key {key}"),
                        Err(e) if e.is_not_found() && force => {}
                        Err(e) if e.is_not_found() => anyhow::bail!(
                            "no access key named or with the id {key:?} (use --force to ignore); \
                             see `infra keys list` (admins: `infra keys list --user NAME`)"
                        ),
                        Err(e) => return Err(e.into()),
                    }
                }
                None if force => {}
                None => anyhow::bail!(
                    "no access key named {key:?} (use --force to ignore); see `infra keys list`"
                ),
            }
        }
    }
    Ok(())
}

/// Access key ids: ten letters or digits.
fn looks_like_key_id(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}
