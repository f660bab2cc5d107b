//! `infra grants`: who (a user, a group or a machine identity) may do what
//! (a role) where (a destination, or a namespace in it); and, once a
//! connector has said so, where each grant stands on its cluster.

use clap::Subcommand;

use super::Usage;
use super::lookup::{group_id, user_id};
use super::output::{self, FormatArg};
use super::session::{ServerArg, resolve};
use crate::api::{self, Grant};
use crate::client::{Client, enc};

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
                            infra grants add prod --group sre --role admin --max-auth-age 15m\n  \
                            infra grants add prod --group contractors --role edit --record-sessions\n  \
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
        /// Ask for a sign-in at the identity provider within this long (e.g. 15m, at most 24h)
        /// before issuing a cluster token under this grant; `infra login SERVER --reauth` signs in again
        #[arg(long, value_name = "DURATION", value_parser = crate::api::parse_duration)]
        max_auth_age: Option<std::time::Duration>,
        /// Record exec and attach sessions under this grant (`infra sessions list`); a session
        /// that cannot be recorded is refused
        #[arg(long)]
        record_sessions: bool,
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

/// `applied`, `pending: why`, or `-` when no connector said yet.
fn grant_state(g: &Grant) -> String {
    match (g.state.as_deref(), g.state_message.as_deref()) {
        (Some(s), Some(m)) if !m.is_empty() => format!("{s}: {m}"),
        (Some(s), _) => s.to_string(),
        (None, _) => "-".to_string(),
    }
}

pub async fn run(cmd: GrantsCmd) -> anyhow::Result<()> {
    match cmd {
        GrantsCmd::Add {
            destination,
            subject,
            role,
            max_auth_age,
            record_sessions,
            force,
            server,
        } => {
            if let Some(d) = max_auth_age {
                if d.as_secs() == 0 {
                    return Err(Usage("--max-auth-age must be at least 1s, e.g. 15m".into()).into());
                }
                if d > api::MAX_AUTH_AGE_LIMIT {
                    return Err(Usage("--max-auth-age must be at most 24h".into()).into());
                }
            }
            let s = resolve(server.server.as_deref())?;
            let (kind, id) = subject_id(&s.client, &subject).await?.ok_or_else(|| {
                Usage("name who gets the grant: --user, --group or --identity".into())
            })?;
            let mut req = api::CreateGrantRequest {
                destination: destination.clone(),
                role: role.clone(),
                max_auth_age: max_auth_age.map(|d| api::format_duration_secs(d.as_secs())),
                record_sessions: record_sessions.then_some(true),
                ..Default::default()
            };
            match kind {
                "user" => req.user = Some(id),
                "group" => req.group = Some(id),
                _ => req.identity = Some(id),
            }
            match s.client.post::<_, Grant>("/api/grants", &req).await {
                Ok(g) => eprintln!(
                    "Granted {} {} on {}{}{}",
                    subject_label(&g),
                    g.role,
                    g.destination,
                    g.max_auth_age
                        .as_deref()
                        .map(|a| format!(" (asks for a sign-in within {a})"))
                        .unwrap_or_default(),
                    if g.record_sessions {
                        " (exec and attach sessions recorded)"
                    } else {
                        ""
                    }
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
            // How recent a sign-in grants ask for, where any asks.
            let ages = grants.iter().any(|g| g.max_auth_age.is_some());
            let recorded = grants.iter().any(|g| g.record_sessions);
            let rows: Vec<_> = grants
                .iter()
                .map(|g| {
                    let mut row = vec![subject_label(g), g.role.clone(), g.destination.clone()];
                    if ages {
                        row.push(g.max_auth_age.clone().unwrap_or_else(|| "-".into()));
                    }
                    if recorded {
                        row.push(if g.record_sessions { "yes" } else { "-" }.into());
                    }
                    if states {
                        row.push(grant_state(g));
                    }
                    row
                })
                .collect();
            let mut headers = vec!["SUBJECT", "ROLE", "DESTINATION"];
            if ages {
                headers.push("MAX AUTH AGE");
            }
            if recorded {
                headers.push("RECORDED");
            }
            if states {
                headers.push("STATE");
            }
            output::list(format.format(), &grants, &headers, rows)?;
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
