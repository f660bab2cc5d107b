//! `infra groups`: add, list and remove groups, and add users to them or
//! remove users from them.

use clap::Subcommand;

use super::lookup::{group_id, remove_found, user_id};
use super::output::{self, FormatArg};
use super::session::{ServerArg, resolve};
use crate::api::{self, Group};

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

pub async fn run(cmd: GroupsCmd) -> anyhow::Result<()> {
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
            output::list(format.format(), &groups, &["NAME", "ID", "USERS"], rows)?;
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
