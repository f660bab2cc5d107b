//! The management commands: users, groups, grants, destinations, keys and
//! providers. Each resolves names to ids through the API, calls it, and
//! renders the result. `--force` makes removing something already gone a
//! success, so scripts can be re-run.

use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};

use super::Usage;
use super::output::{self, FormatArg, short_time};
use super::session::{ServerArg, Session, read_secret, resolve};
use crate::api::{self, AccessKey, Destination, Grant, Group, Provider, User};
use crate::client::{Client, enc};

// ------------------------------------------------------------------ users

/// Removes the `kind` named `name` from `/api/{collection}/{id}` when it was
/// found; with `force`, one that is already gone is fine.
pub(super) async fn remove_found(
    c: &Client,
    found: Option<String>,
    collection: &str,
    kind: &str,
    name: &str,
    force: bool,
) -> anyhow::Result<()> {
    match found {
        Some(id) => {
            c.delete(&format!("/api/{collection}/{id}")).await?;
            eprintln!("Removed {kind} {name}");
            Ok(())
        }
        None if force => Ok(()),
        None => anyhow::bail!("no {kind} named {name:?} (use --force to ignore)"),
    }
}

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

async fn user_id(c: &Client, name: &str) -> anyhow::Result<String> {
    match c.user_by_name(name).await? {
        Some(u) => Ok(u.id),
        None => anyhow::bail!("no user named {name:?}; see `infra users list`"),
    }
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

pub async fn users(cmd: UsersCmd) -> anyhow::Result<()> {
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
                format.format,
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
            let current_password = if user.id == me(&s) && user.has_password {
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

// ------------------------------------------------------------------ groups

#[derive(Debug, Subcommand)]
pub enum GroupsCmd {
    /// Add a group
    #[command(after_help = "Example:\n  infra groups add sre")]
    Add {
        /// The group's name
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List groups
    #[command(
        alias = "ls",
        after_help = "Examples:\n  infra groups list\n  infra groups list --format json"
    )]
    List {
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove a group and its grants
    #[command(alias = "rm", after_help = "Example:\n  infra groups remove sre")]
    Remove {
        /// The group's name
        name: String,
        /// Succeed even if the group does not exist
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Add a user to a group
    #[command(after_help = "Example:\n  infra groups adduser sre alice@example.com")]
    Adduser {
        /// The group's name
        group: String,
        /// The user's name
        user: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove a user from a group
    #[command(after_help = "Example:\n  infra groups removeuser sre alice@example.com")]
    Removeuser {
        /// The group's name
        group: String,
        /// The user's name
        user: String,
        /// Succeed even if the user or group does not exist
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

async fn group_id(c: &Client, name: &str) -> anyhow::Result<Option<String>> {
    Ok(c.group_by_name(name).await?.map(|g| g.id))
}

pub async fn groups(cmd: GroupsCmd) -> anyhow::Result<()> {
    match cmd {
        GroupsCmd::Add { name, server } => {
            let s = resolve(server.server.as_deref())?;
            let g: Group = s
                .client
                .post("/api/groups", &api::CreateGroupRequest { name })
                .await?;
            eprintln!("Added group {}", g.name);
        }
        GroupsCmd::List { format, server } => {
            let s = resolve(server.server.as_deref())?;
            let groups: Vec<Group> = s.client.list_all("/api/groups").await?;
            let rows: Vec<_> = groups
                .iter()
                .map(|g| vec![g.name.clone(), g.id.clone(), g.total_users.to_string()])
                .collect();
            output::list(format.format, &groups, &["NAME", "ID", "USERS"], rows)?;
        }
        GroupsCmd::Remove {
            name,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let found = group_id(&s.client, &name).await?;
            remove_found(&s.client, found, "groups", "group", &name, force).await?;
        }
        GroupsCmd::Adduser {
            group,
            user,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let gid = group_id(&s.client, &group).await?.ok_or_else(|| {
                anyhow::anyhow!("no group named {group:?}; see `infra groups list`")
            })?;
            let uid = user_id(&s.client, &user).await?;
            let _: Group = s
                .client
                .patch(
                    &format!("/api/groups/{gid}/users"),
                    &api::UpdateGroupUsersRequest {
                        users_to_add: vec![uid],
                        users_to_remove: vec![],
                    },
                )
                .await?;
            eprintln!("Added {user} to {group}");
        }
        GroupsCmd::Removeuser {
            group,
            user,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let gid = group_id(&s.client, &group).await?;
            let uid = s.client.user_by_name(&user).await?.map(|u| u.id);
            let (Some(gid), Some(uid)) = (gid, uid) else {
                if force {
                    return Ok(());
                }
                anyhow::bail!("no such group {group:?} or user {user:?} (use --force to ignore)");
            };
            let _: Group = s
                .client
                .patch(
                    &format!("/api/groups/{gid}/users"),
                    &api::UpdateGroupUsersRequest {
                        users_to_add: vec![],
                        users_to_remove: vec![uid],
                    },
                )
                .await?;
            eprintln!("Removed {user} from {group}");
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ grants

#[derive(Debug, clap::Args)]
#[group(required = false, multiple = false)]
pub struct SubjectArgs {
    /// A user, by name
    #[arg(long)]
    pub user: Option<String>,
    /// A group, by name
    #[arg(long)]
    pub group: Option<String>,
    /// A machine identity, by name
    #[arg(long)]
    pub identity: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GrantsCmd {
    /// Grant a role on a destination (or a namespace in it)
    #[command(
        after_help = "Examples:\n  infra grants add prod --user alice@example.com --role view\n  \
                            infra grants add prod.web --group sre --role edit\n  \
                            infra grants add infra --user bob@example.com --role admin"
    )]
    Add {
        /// DEST or DEST.NAMESPACE (`infra` for the server itself)
        destination: String,
        #[command(flatten)]
        subject: SubjectArgs,
        /// The role, e.g. view, edit, admin, cluster-admin
        #[arg(long)]
        role: String,
        /// Succeed if the grant already exists
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List grants (yours, or everyone's for admins)
    #[command(
        alias = "ls",
        after_help = "Examples:\n  infra grants list\n  infra grants list --user alice@example.com\n  \
                      infra grants list --destination prod --format json"
    )]
    List {
        #[command(flatten)]
        subject: SubjectArgs,
        /// Only grants on this destination (and its namespaces)
        #[arg(long)]
        destination: Option<String>,
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove a grant
    #[command(
        alias = "rm",
        after_help = "Example:\n  infra grants remove prod --user alice@example.com --role view"
    )]
    Remove {
        /// DEST or DEST.NAMESPACE, as granted
        destination: String,
        #[command(flatten)]
        subject: SubjectArgs,
        /// The role granted
        #[arg(long)]
        role: String,
        /// Succeed even if there is no such grant
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

/// The subject as an API query/field pair: ("user", id).
async fn subject_id(c: &Client, s: &SubjectArgs) -> anyhow::Result<Option<(&'static str, String)>> {
    if let Some(u) = &s.user {
        return Ok(Some(("user", user_id(c, u).await?)));
    }
    if let Some(g) = &s.group {
        let id = group_id(c, g)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no group named {g:?}; see `infra groups list`"))?;
        return Ok(Some(("group", id)));
    }
    if let Some(i) = &s.identity {
        let id = c
            .identity_by_name(i)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no identity named {i:?}"))?
            .id;
        return Ok(Some(("identity", id)));
    }
    Ok(None)
}

fn subject_label(g: &Grant) -> String {
    let kind = if g.group.is_some() {
        "group"
    } else if g.identity.is_some() {
        "identity"
    } else {
        "user"
    };
    format!("{kind}:{}", g.subject_name)
}

pub async fn grants(cmd: GrantsCmd) -> anyhow::Result<()> {
    match cmd {
        GrantsCmd::Add {
            destination,
            subject,
            role,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let (kind, id) = subject_id(&s.client, &subject).await?.ok_or_else(|| {
                Usage("name who gets the grant: --user, --group or --identity".into())
            })?;
            let mut req = api::CreateGrantRequest {
                destination: destination.clone(),
                role: role.clone(),
                ..Default::default()
            };
            match kind {
                "user" => req.user = Some(id),
                "group" => req.group = Some(id),
                _ => req.identity = Some(id),
            }
            match s.client.post::<_, Grant>("/api/grants", &req).await {
                Ok(g) => eprintln!(
                    "Granted {} {} on {}",
                    subject_label(&g),
                    g.role,
                    g.destination
                ),
                Err(e) if force && e.status() == Some(409) => {}
                Err(e) => return Err(e.into()),
            }
        }
        GrantsCmd::List {
            subject,
            destination,
            format,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let mut q = Vec::new();
            if let Some((kind, id)) = subject_id(&s.client, &subject).await? {
                q.push(format!("{kind}={}", enc(&id)));
                if kind == "user" {
                    q.push("showInherited=true".into());
                }
            }
            if let Some(d) = &destination {
                q.push(format!("destination={}", enc(d)));
            }
            let path = if q.is_empty() {
                "/api/grants".to_string()
            } else {
                format!("/api/grants?{}", q.join("&"))
            };
            let grants: Vec<Grant> = s.client.list_all(&path).await?;
            // Where grants stand on their clusters, once a connector said so.
            let states = grants.iter().any(|g| g.state.is_some());
            let rows: Vec<_> = grants
                .iter()
                .map(|g| {
                    let mut row = vec![subject_label(g), g.role.clone(), g.destination.clone()];
                    if states {
                        row.push(grant_state(g));
                    }
                    row
                })
                .collect();
            let mut headers = vec!["SUBJECT", "ROLE", "DESTINATION"];
            if states {
                headers.push("STATE");
            }
            output::list(format.format, &grants, &headers, rows)?;
        }
        GrantsCmd::Remove {
            destination,
            subject,
            role,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let found = match subject_id(&s.client, &subject).await {
                Ok(Some((kind, id))) => {
                    let path = format!(
                        "/api/grants?{kind}={}&destination={}&role={}",
                        enc(&id),
                        enc(&destination),
                        enc(&role)
                    );
                    let all: Vec<Grant> = s.client.list_all(&path).await?;
                    all.into_iter().find(|g| g.destination == destination)
                }
                Ok(None) => {
                    return Err(Usage(
                        "name whose grant to remove: --user, --group or --identity".into(),
                    )
                    .into());
                }
                Err(_) if force => None,
                Err(e) => return Err(e),
            };
            match found {
                Some(g) => {
                    s.client.delete(&format!("/api/grants/{}", g.id)).await?;
                    eprintln!(
                        "Removed {} {} on {}",
                        subject_label(&g),
                        g.role,
                        g.destination
                    );
                }
                None if force => {}
                None => {
                    anyhow::bail!("no such grant (use --force to ignore); see `infra grants list`")
                }
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ destinations

#[derive(Debug, Subcommand)]
pub enum DestinationsCmd {
    /// List destinations and whether their connectors are connected
    #[command(
        alias = "ls",
        after_help = "Examples:\n  infra destinations list\n  infra destinations list --format json"
    )]
    List {
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove a destination
    #[command(
        alias = "rm",
        after_help = "Example:\n  infra destinations remove prod"
    )]
    Remove {
        /// The destination's name
        name: String,
        /// Succeed even if it does not exist
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

pub async fn destinations(cmd: DestinationsCmd) -> anyhow::Result<()> {
    match cmd {
        DestinationsCmd::List { format, server } => {
            let s = resolve(server.server.as_deref())?;
            let list: Vec<Destination> = s.client.list_all("/api/destinations").await?;
            let rows: Vec<_> = list
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        if d.url.is_empty() {
                            "-".into()
                        } else {
                            d.url.clone()
                        },
                        if d.connected {
                            "connected"
                        } else {
                            "disconnected"
                        }
                        .into(),
                        d.last_seen
                            .as_deref()
                            .map(short_time)
                            .unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            output::list(
                format.format,
                &list,
                &["NAME", "URL", "STATUS", "LAST SEEN"],
                rows,
            )?;
        }
        DestinationsCmd::Remove {
            name,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let found = s.client.destination_by_name(&name).await?.map(|d| d.id);
            remove_found(
                &s.client,
                found,
                "destinations",
                "destination",
                &name,
                force,
            )
            .await?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ keys

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

fn me(s: &Session) -> String {
    s.entry
        .as_ref()
        .map(|e| e.user_id.clone())
        .unwrap_or_default()
}

/// `applied`, `pending: why`, or `-` when no connector said yet.
fn grant_state(g: &Grant) -> String {
    match (g.state.as_deref(), g.state_message.as_deref()) {
        (Some(s), Some(m)) if !m.is_empty() => format!("{s}: {m}"),
        (Some(s), _) => s.to_string(),
        (None, _) => "-".to_string(),
    }
}

pub async fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
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
                (None, false) => match me(&s) {
                    id if !id.is_empty() => format!("/api/access-keys?userID={}", enc(&id)),
                    _ => "/api/access-keys".to_string(),
                },
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
                format.format,
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
                None => Some(me(&s)).filter(|m| !m.is_empty()),
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
                None if force => {}
                None => anyhow::bail!(
                    "no access key named {key:?} (use --force to ignore); see `infra keys list`"
                ),
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ providers

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

pub async fn providers(cmd: ProvidersCmd) -> anyhow::Result<()> {
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
                format.format,
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
