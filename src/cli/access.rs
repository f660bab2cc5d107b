//! `infra access explain USER DEST[.NS]` and `infra whoami`: why someone
//! may do what on a cluster. The groups they are in and where each
//! membership came from, the grants that apply there (directly or through
//! a group), the RBAC binding the connector makes for each and its state,
//! and what the cluster sees: the user and groups the connector
//! impersonates and the roles per namespace. One server call
//! (`GET /api/access/explain`); the rendering is here.

use std::fmt::Write as _;

use clap::Subcommand;
use serde::Serialize;

use super::output::{self, Format, FormatArg};
use super::session::{ServerArg, resolve};
use crate::api::{AccessExplanation, ExplainedGrant};
use crate::client::enc;

#[derive(Debug, Subcommand)]
pub enum AccessCmd {
    /// Explain a user's access to a destination: groups, grants, RBAC bindings
    #[command(
        after_help = "Shows the user's groups (added by an admin, or synced from an \
                      identity provider's groups claim), every grant that applies on the \
                      destination (a grant on prod also applies in prod.web; one on prod.web \
                      only there), the RBAC binding the connector makes for each and the state \
                      it reported, and the Kubernetes user and groups the connector \
                      impersonates, which `kubectl auth whoami` shows through it.\n\n\
                      Admins may explain anyone's access; others their own (see `infra whoami \
                      --destination`).\n\nExamples:\n  infra access explain alice@example.com prod\n  \
                      infra access explain alice@example.com prod.web\n  \
                      infra access explain alice@example.com prod --format json"
    )]
    Explain {
        /// The user, by name (or id)
        user: String,
        /// DEST or DEST.NAMESPACE
        destination: String,
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without --destination, prints whom you are logged in as. With it, \
                  explains your access there as `infra access explain` does: groups, grants, \
                  RBAC bindings and the Kubernetes user and groups the connector \
                  impersonates.\n\nExamples:\n  infra whoami\n  infra whoami --destination prod\n  \
                  infra whoami --destination prod.web --format json"
)]
pub struct WhoamiArgs {
    /// Explain your access to this destination (DEST or DEST.NAMESPACE)
    #[arg(long)]
    pub destination: Option<String>,
    #[command(flatten)]
    pub format: FormatArg,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(cmd: AccessCmd) -> anyhow::Result<()> {
    match cmd {
        AccessCmd::Explain {
            user,
            destination,
            format,
            server,
        } => explain(Some(&user), &destination, format.format(), server).await,
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Whoami {
    server: String,
    user: String,
    #[serde(rename = "userID")]
    user_id: String,
}

pub async fn whoami(args: WhoamiArgs) -> anyhow::Result<()> {
    if let Some(d) = &args.destination {
        return explain(None, d, args.format.format(), args.server).await;
    }
    let s = resolve(args.server.server.as_deref())?;
    // INFRA_ACCESS_KEY is someone of its own: the server says whom.
    if crate::local::credentials::access_key_from_env().is_some() {
        let w = s.client.whoami().await?;
        let me = Whoami {
            server: s.server.clone(),
            user: w.name,
            user_id: w.id,
        };
        return show_whoami(&me, args.format.format());
    }
    // A session whose key has ended is nobody's any more.
    if let Some(ended) = s
        .entry
        .as_ref()
        .and_then(|e| e.expires.as_deref())
        .filter(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|t| t <= crate::clock::now_utc())
        })
    {
        anyhow::bail!(
            "your session on {} ended at {ended}; run `infra login {}` to sign in again",
            s.server,
            s.server
        );
    }
    let me = match &s.entry {
        Some(e) => Whoami {
            server: s.server.clone(),
            user: e.user_name.clone(),
            user_id: e.user_id.clone(),
        },
        None => anyhow::bail!(
            "this machine is not logged in to {}; run `infra login {}`",
            s.server,
            s.server
        ),
    };
    show_whoami(&me, args.format.format())
}

fn show_whoami(me: &Whoami, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table | Format::Plain => output::line(&format!("{} on {}", me.user, me.server)),
        f => output::data(f, me),
    }
}

async fn explain(
    user: Option<&str>,
    destination: &str,
    format: Format,
    server: ServerArg,
) -> anyhow::Result<()> {
    let s = resolve(server.server.as_deref())?;
    let mut path = format!("/api/access/explain?destination={}", enc(destination));
    if let Some(u) = user {
        path.push_str(&format!("&user={}", enc(u)));
    }
    // An unknown user or destination: the server's message says what to do next.
    let x: AccessExplanation = s.client.get(&path).await?;
    match format {
        Format::Table | Format::Plain => output::line(render(&x).trim_end()),
        f => output::data(f, &x),
    }
}

/// A grant's `maxAuthAge`, when grants carry one (read off the wire form,
/// so this needs no change when the field comes and goes).
fn max_auth_age(g: &ExplainedGrant) -> Option<String> {
    let v = serde_json::to_value(&g.grant).ok()?;
    match v.get("maxAuthAge")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn state(g: &ExplainedGrant) -> String {
    match (g.grant.state.as_deref(), g.grant.state_message.as_deref()) {
        (Some(s), Some(m)) if !m.is_empty() => format!("{s}: {m}"),
        (Some(s), _) => s.to_string(),
        (None, _) => "not reported yet".to_string(),
    }
}

/// Rows as aligned columns under a header.
fn columns(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String], out: &mut String| {
        let mut s = String::from("  ");
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        out,
    );
    for row in rows {
        line(row, out);
    }
}

/// The explanation for a person to read.
fn render(x: &AccessExplanation) -> String {
    let mut out = String::new();
    let (dest, _) = crate::api::rbac::split_destination(&x.destination);
    let status = if !x.registered {
        "not registered: no connector has run for it yet"
    } else if x.connected {
        "connected"
    } else {
        "disconnected: its connector has not reported in lately"
    };
    let _ = writeln!(out, "{} {} on {} ({status})", x.kind, x.name, x.destination);

    let _ = writeln!(out, "\nGroups:");
    if x.groups.is_empty() {
        let _ = writeln!(out, "  (none)");
    } else {
        let rows: Vec<Vec<String>> = x
            .groups
            .iter()
            .map(|g| {
                let mut from = match (&g.provider_name, &g.provider_id) {
                    (Some(p), _) => format!("synced from provider {p} (groups claim)"),
                    (None, Some(id)) => format!("synced from a removed provider ({id})"),
                    (None, None) => "added by an admin".to_string(),
                };
                if g.withheld {
                    from.push_str("; never sent to Kubernetes (system: name)");
                }
                vec![g.name.clone(), from]
            })
            .collect();
        columns(&mut out, &["GROUP", "MEMBERSHIP"], &rows);
    }

    let _ = writeln!(out, "\nGrants:");
    if x.grants.is_empty() {
        let who = if x.kind == "identity" {
            format!("--identity {}", x.name)
        } else {
            format!("--user {}", x.name)
        };
        let _ = writeln!(
            out,
            "  (none) {} has no grant on {}; an admin can add one: `infra grants add {} {who} \
             --role view`",
            x.name, x.destination, x.destination
        );
    } else {
        let ages: Vec<Option<String>> = x.grants.iter().map(max_auth_age).collect();
        let with_age = ages.iter().any(Option::is_some);
        let rows: Vec<Vec<String>> = x
            .grants
            .iter()
            .zip(&ages)
            .map(|(g, age)| {
                let through = match &g.via_group {
                    Some(group) => format!("group {group}"),
                    None => "directly".to_string(),
                };
                let scope = match &g.namespace {
                    Some(ns) => format!("namespace {ns}"),
                    None => "all namespaces".to_string(),
                };
                let binding = match &g.binding {
                    Some(b) => match &b.namespace {
                        Some(ns) => format!("{} {ns}/{}", b.kind, b.name),
                        None => format!("{} {}", b.kind, b.name),
                    },
                    None => "none (system: names are never bound)".to_string(),
                };
                let mut row = vec![g.grant.role.clone(), scope, through, binding, state(g)];
                if with_age {
                    row.push(age.clone().unwrap_or_else(|| "-".into()));
                }
                row.push(g.grant.id.clone());
                row
            })
            .collect();
        let mut headers = vec!["ROLE", "WHERE", "THROUGH", "BINDING", "STATE"];
        if with_age {
            headers.push("MAX AUTH AGE");
        }
        headers.push("GRANT");
        columns(&mut out, &headers, &rows);
    }

    let e = &x.effective;
    let _ = writeln!(
        out,
        "\nOn the cluster (what `kubectl auth whoami` shows through {dest}):"
    );
    let _ = writeln!(out, "  user:    {}", e.user);
    let groups = if e.groups.is_empty() {
        "(none)".to_string()
    } else {
        e.groups.join(", ")
    };
    let _ = writeln!(
        out,
        "  groups:  {groups}  (Kubernetes adds system:authenticated)"
    );
    if e.roles.is_empty() {
        let _ = writeln!(out, "  roles:   none");
    } else {
        for (i, r) in e.roles.iter().enumerate() {
            let label = if i == 0 { "roles:" } else { "" };
            let place = match &r.namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "in all namespaces".to_string(),
            };
            let _ = writeln!(out, "  {label:<8} {} {place}", r.roles.join(", "));
        }
    }
    out
}
