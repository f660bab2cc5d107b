//! `infra list`: every destination (and namespace) you can reach through a
//! server, with your roles there, whether its connector is connected, and
//! which one kubectl uses now. `infra use` chooses from the same list, so
//! building it (grants + destinations + the kubeconfig's current context)
//! lives here, apart from fetching and printing.

use serde::Serialize;

use super::output::{self, Format, FormatArg};
use super::session::{ServerArg, Session};
use crate::api::{Destination, Grant, INFRA_DESTINATION};
use crate::local::kubeconfig::{self, Contexts};
use crate::tui;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub server: ServerArg,
    #[command(flatten)]
    pub format: FormatArg,
}

/// One destination or `destination.namespace` the user holds a grant on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reachable {
    /// `DEST` or `DEST.NAMESPACE`: what `infra use` takes.
    pub name: String,
    pub destination: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Every role granted there, directly or through a group; sorted.
    pub roles: Vec<String>,
    /// `connected`, `disconnected` or `not registered`.
    pub status: &'static str,
    /// The connector reported in recently.
    pub connected: bool,
    /// A connector has registered the destination (it has a URL), so it
    /// has a kubeconfig context.
    pub registered: bool,
    /// The kubeconfig context: `infra:DEST[.NAMESPACE]`.
    pub context: String,
    /// kubectl's current context is this one.
    pub current: bool,
}

impl Reachable {
    pub fn state(&self) -> tui::Status {
        match (self.registered, self.connected) {
            (false, _) => tui::Status::NotRegistered,
            (true, true) => tui::Status::Connected,
            (true, false) => tui::Status::Disconnected,
        }
    }
}

/// The list, and who and where it is for.
#[derive(Debug)]
pub struct Listing {
    pub server: String,
    pub user_id: String,
    pub rows: Vec<Reachable>,
}

/// Builds the rows: one per granted `DEST` or `DEST.NS` (not the `infra`
/// destination, which is the server itself), sorted by destination then
/// namespace. `current` is set only when kubectl's current context is an
/// entry of this `server`.
pub fn rows(
    grants: &[Grant],
    destinations: &[Destination],
    contexts: &Contexts,
    server: &str,
) -> Vec<Reachable> {
    let mut out: Vec<Reachable> = Vec::new();
    for g in grants {
        let (dest, ns) = match g.destination.split_once('.') {
            Some((d, n)) if !n.is_empty() => (d, Some(n.to_string())),
            Some((d, _)) => (d, None),
            None => (g.destination.as_str(), None),
        };
        if dest == INFRA_DESTINATION || dest.is_empty() {
            continue;
        }
        let context = kubeconfig::context_name(dest, ns.as_deref());
        if let Some(row) = out.iter_mut().find(|r| r.context == context) {
            if !row.roles.contains(&g.role) {
                row.roles.push(g.role.clone());
                row.roles.sort();
            }
            continue;
        }
        let d = destinations.iter().find(|d| d.name == dest);
        let registered = d.is_some_and(|d| !d.url.is_empty());
        let connected = registered && d.is_some_and(|d| d.connected);
        let current = contexts.current.as_deref() == Some(context.as_str())
            && contexts
                .find(&context)
                .is_some_and(|c| c.server.as_deref() == Some(server));
        let mut row = Reachable {
            name: context.trim_start_matches(kubeconfig::PREFIX).to_string(),
            destination: dest.to_string(),
            namespace: ns,
            roles: vec![g.role.clone()],
            status: "",
            connected,
            registered,
            context,
            current,
        };
        row.status = row.state().label();
        out.push(row);
    }
    out.sort_by(|a, b| (&a.destination, &a.namespace).cmp(&(&b.destination, &b.namespace)));
    out
}

/// The kubeconfig's contexts; a kubeconfig that cannot be read only costs
/// the current marker, with a warning.
pub fn local_contexts() -> Contexts {
    match kubeconfig::read_contexts(&kubeconfig::kubeconfig_path()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: {e:#}");
            Contexts::default()
        }
    }
}

/// Fetches the user's grants (with those through groups) and the
/// destinations, and builds the list.
pub async fn fetch(session: &Session, contexts: &Contexts) -> anyhow::Result<Listing> {
    let me = session.me().await?;
    let grants: Vec<Grant> = session
        .client
        .list_all(&format!(
            "/api/grants?user={}&showInherited=true",
            crate::client::enc(&me.id)
        ))
        .await?;
    let destinations: Vec<Destination> = session.client.list_all("/api/destinations").await?;
    Ok(Listing {
        server: session.server.clone(),
        user_id: me.id.clone(),
        rows: rows(&grants, &destinations, contexts, &session.server),
    })
}

/// Prints the list on stdout: a table on a terminal, tab-separated lines
/// otherwise (NAME, ROLE, STATUS, CURRENT), or JSON / YAML.
pub fn print(format: Format, rows: &[Reachable]) -> anyhow::Result<()> {
    output::list(
        format,
        rows,
        &["NAME", "ROLE", "STATUS", "CURRENT"],
        rows.iter().map(|r| {
            vec![
                r.name.clone(),
                r.roles.join(","),
                r.status.to_string(),
                if r.current { "*" } else { "" }.to_string(),
            ]
        }),
    )
}

/// The picker's items for the rows, in the same order.
pub fn items(rows: &[Reachable]) -> Vec<tui::Item> {
    rows.iter()
        .map(|r| tui::Item {
            name: r.name.clone(),
            roles: r.roles.join(","),
            status: r.state(),
            current: r.current,
        })
        .collect()
}

/// Said on stderr when there is nothing to list.
pub fn no_grants(server: &str) -> String {
    format!(
        "You have no cluster grants on {server} yet; ask an admin for one (`infra grants add`)."
    )
}

pub async fn run(args: ListArgs) -> anyhow::Result<()> {
    let session = super::session::resolve(args.server.server.as_deref())?;
    let listing = fetch(&session, &local_contexts()).await?;
    if listing.rows.is_empty() && matches!(args.format.format(), Format::Table | Format::Plain) {
        eprintln!("{}", no_grants(&listing.server));
        return Ok(());
    }
    print(args.format.format(), &listing.rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::kubeconfig::InfraContext;

    const S: &str = "infra.example.com";

    fn grant(dest: &str, role: &str) -> Grant {
        Grant {
            id: format!("{dest}-{role}"),
            user: Some("u1".into()),
            group: None,
            identity: None,
            subject_name: "alice".into(),
            destination: dest.into(),
            role: role.into(),
            created: String::new(),
            created_by: String::new(),
            state: None,
            state_message: None,
            max_auth_age: None,
            record_sessions: false,
        }
    }

    fn dest(name: &str, url: &str, connected: bool) -> Destination {
        Destination {
            id: name.into(),
            name: name.into(),
            url: url.into(),
            ca: String::new(),
            connected,
            last_seen: None,
            connector_version: None,
            created: String::new(),
            updated: String::new(),
        }
    }

    #[test]
    fn one_row_per_destination_or_namespace_with_all_roles() {
        let grants = [
            grant("stage", "edit"),
            grant("prod.web", "view"),
            grant("infra", "admin"),
            grant("prod", "view"),
            grant("prod.web", "edit"),
            grant("prod.web", "view"),
            grant("new", "view"),
            grant("prod-eu", "view"),
        ];
        let dests = [
            dest("prod", "https://prod.example", true),
            dest("stage", "https://stage.example", false),
            dest("new", "", true),
            dest("prod-eu", "https://eu.example", true),
        ];
        let contexts = Contexts {
            current: Some("infra:prod.web".into()),
            infra: vec![InfraContext {
                name: "infra:prod.web".into(),
                server: Some(S.into()),
            }],
        };
        let r = rows(&grants, &dests, &contexts, S);
        let got: Vec<(&str, String, &str, bool)> = r
            .iter()
            .map(|r| (r.name.as_str(), r.roles.join(","), r.status, r.current))
            .collect();
        assert_eq!(
            got,
            [
                ("new", "view".into(), "not registered", false),
                ("prod", "view".into(), "connected", false),
                ("prod.web", "edit,view".into(), "connected", true),
                ("prod-eu", "view".into(), "connected", false),
                ("stage", "edit".into(), "disconnected", false),
            ]
        );
        assert_eq!(r[2].context, "infra:prod.web");
        assert_eq!(r[2].destination, "prod");
        assert_eq!(r[2].namespace.as_deref(), Some("web"));
        assert!(!r[0].connected, "not registered is never connected");
        let json = serde_json::to_value(&r[2]).unwrap();
        assert_eq!(json["roles"], serde_json::json!(["edit", "view"]));
        assert_eq!(json["current"], true);
        assert_eq!(serde_json::to_value(&r[1]).unwrap().get("namespace"), None);
    }

    #[test]
    fn current_only_for_this_servers_entry() {
        let grants = [grant("prod", "view")];
        let dests = [dest("prod", "https://prod.example", true)];
        let mut contexts = Contexts {
            current: Some("infra:prod".into()),
            infra: vec![InfraContext {
                name: "infra:prod".into(),
                server: Some("other.example.com".into()),
            }],
        };
        assert!(!rows(&grants, &dests, &contexts, S)[0].current);
        contexts.infra[0].server = Some(S.into());
        assert!(rows(&grants, &dests, &contexts, S)[0].current);
        contexts.current = Some("kind".into());
        assert!(!rows(&grants, &dests, &contexts, S)[0].current);
    }

    #[test]
    fn missing_destination_is_not_registered() {
        let r = rows(&[grant("ghost", "view")], &[], &Contexts::default(), S);
        assert_eq!(r[0].state(), tui::Status::NotRegistered);
        assert_eq!(items(&r)[0].status, tui::Status::NotRegistered);
    }
}
