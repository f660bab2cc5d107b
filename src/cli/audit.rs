//! `infra audit`: the audit log (admins), newest first, filtered as the
//! API filters it.

use super::output::{self, FormatArg, short_time};
use super::session::{ServerArg, resolve};
use crate::api::AuditEvent;
use crate::client::enc;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  infra audit\n  infra audit --actor alice@example.com \
                        --since 2026-12-01\n  infra audit --action grant.create --format json\n  \
                        infra audit --action login --limit 500"
)]
pub struct AuditArgs {
    /// Only this action (e.g. grant.create, login, destination.register)
    #[arg(long, env = "INFRA_AUDIT_ACTION")]
    pub action: Option<String>,
    /// Only entries by this actor (a user or identity name)
    #[arg(long, env = "INFRA_AUDIT_ACTOR")]
    pub actor: Option<String>,
    /// Only entries at or after this time: RFC 3339, a date (2026-12-01), or "2026-12-01 10:00" (UTC)
    #[arg(long, env = "INFRA_AUDIT_SINCE", value_name = "TIME")]
    pub since: Option<String>,
    /// Only entries before this time, in the same forms (a date includes that day)
    #[arg(long, env = "INFRA_AUDIT_UNTIL", value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many entries, newest first
    #[arg(long, env = "INFRA_AUDIT_LIMIT", default_value_t = 100)]
    pub limit: u64,
    #[command(flatten)]
    pub format: FormatArg,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let s = resolve(args.server.server.as_deref())?;
    let mut query = String::new();
    for (name, value) in [
        ("action", &args.action),
        ("actor", &args.actor),
        ("since", &args.since),
        ("until", &args.until),
    ] {
        if let Some(v) = value {
            query.push_str(&format!("&{name}={}", enc(v)));
        }
    }
    let events: Vec<AuditEvent> = s
        .client
        .list_at_most(
            &format!("/api/audit{}", query.replacen('&', "?", 1)),
            args.limit,
        )
        .await?;
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            let mut detail = e.detail.clone();
            if e.count > 1 {
                detail = format!("{}× until {} {detail}", e.count, short_time(&e.last_time));
            }
            vec![
                short_time(&e.time),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.result.clone(),
                e.remote_addr.clone(),
                detail.trim().to_string(),
            ]
        })
        .collect();
    output::list(
        args.format.format(),
        &events,
        &[
            "TIME", "ACTOR", "ACTION", "TARGET", "RESULT", "FROM", "DETAIL",
        ],
        rows,
    )
}
