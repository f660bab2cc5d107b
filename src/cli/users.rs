//! `infra users`: add, list and remove users, and change a local user's
//! password (one's own takes the current one first).

use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};

use super::lookup::{me, remove_found};
use super::output::{self, FormatArg, short_time};
use super::session::{ServerArg, read_secret, resolve};
use crate::api::{self, User};

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Add a user
    #[command(after_help = "Examples:\n  infra users add alice@example.com\n  \
                            infra users add alice@example.com --password")]
    Add {
        /// The user's name, usually their email address
        name: String,
        /// Set a password (prompted on a terminal, else one line of stdin)
        #[arg(long)]
        password: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List users
    #[command(
        alias = "ls",
        after_help = "Examples:\n  infra users list\n  infra users list --format json"
    )]
    List {
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Change a local user's password (yours: give the current one first)
    #[command(
        after_help = "Users who sign in through an identity provider have no password.\n\n\
                      Example:\n  infra users edit alice --password\n\n\
                      Without a terminal the passwords are read from standard input, one a line: \
                      your current one first when you change your own."
    )]
    Edit {
        /// The user's name
        name: String,
        /// Set a new password (prompted on a terminal, else one line of stdin)
        #[arg(long, required = true)]
        password: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove a user, with their grants and keys
    #[command(
        alias = "rm",
        after_help = "Example:\n  infra users remove alice@example.com"
    )]
    Remove {
        /// The user's name
        name: String,
        /// Succeed even if the user does not exist
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

fn new_password(name: &str) -> anyhow::Result<SecretString> {
    let first = read_secret(&format!("New password for {name}: "), None)?;
    if super::session::can_prompt() {
        let again = read_secret("Again: ", None)?;
        if again.expose_secret() != first.expose_secret() {
            anyhow::bail!("the passwords do not match; nothing was changed");
        }
    }
    Ok(first)
}

pub async fn run(cmd: UsersCmd) -> anyhow::Result<()> {
    match cmd {
        UsersCmd::Add {
            name,
            password,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let password = if password {
                Some(new_password(&name)?)
            } else {
                None
            };
            let u: User = s
                .client
                .post("/api/users", &api::CreateUserRequest { name, password })
                .await?;
            eprintln!("Added user {}", u.name);
        }
        UsersCmd::List { format, server } => {
            let s = resolve(server.server.as_deref())?;
            let users: Vec<User> = s.client.list_all("/api/users").await?;
            let rows = users.iter().map(|u| {
                vec![
                    u.name.clone(),
                    u.id.clone(),
                    if u.has_password { "yes" } else { "no" }.into(),
                    u.last_seen
                        .as_deref()
                        .map(short_time)
                        .unwrap_or_else(|| "never".into()),
                ]
            });
            output::list(
                format.format(),
                &users,
                &["NAME", "ID", "PASSWORD", "LAST SEEN"],
                rows.collect::<Vec<_>>(),
            )?;
        }
        UsersCmd::Edit { name, server, .. } => {
            let s = resolve(server.server.as_deref())?;
            let user =
                s.client.user_by_name(&name).await?.ok_or_else(|| {
                    anyhow::anyhow!("no user named {name:?}; see `infra users list`")
                })?;
            // Changing one's own password takes the current one.
            let current_password = if user.has_password && user.id == me(&s).await? {
                Some(read_secret("Current password: ", None)?)
            } else {
                None
            };
            let password = new_password(&name)?;
            let _: User = s
                .client
                .put(
                    &format!("/api/users/{}", user.id),
                    &api::UpdateUserRequest {
                        password,
                        current_password,
                    },
                )
                .await?;
            eprintln!("Changed the password of {name}");
        }
        UsersCmd::Remove {
            name,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let found = s.client.user_by_name(&name).await?.map(|u| u.id);
            remove_found(&s.client, found, "users", "user", &name, force).await?;
        }
    }
    Ok(())
}
