//! `infra use [DEST[.NAMESPACE]]`: point kubectl's current context at an
//! infra entry (`infra:DEST[.NS]`).
//!
//! With a name, a context already in the kubeconfig is switched to without
//! asking the server (fast, and works offline); a missing one is looked up
//! in the user's grants, the kubeconfig entries are refreshed, then
//! switched to. An unknown name is an error that lists the close names.
//! Without a name, on a terminal, the picker (`crate::tui`) chooses; without
//! a terminal, the list is printed and the command exits with 2 (usage), as
//! a choice it needs was not given.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::list::{self, Listing, Reachable};
use super::output::Format;
use super::session::{ServerArg, Session, resolve};
use super::{Cancelled, Usage};
use crate::local::config::canonical_server;
use crate::local::kubeconfig;
use crate::tui;

#[derive(Debug, clap::Args)]
pub struct UseArgs {
    /// The destination, or destination.namespace, to switch to; leave it out
    /// to pick from a list (on a terminal)
    #[arg(value_name = "DEST[.NAMESPACE]")]
    pub name: Option<String>,

    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(args: UseArgs) -> anyhow::Result<()> {
    let server = args.server.server.as_deref();
    match args.name {
        Some(name) => by_name(&name, server).await,
        None => pick(server).await,
    }
}

/// `DEST[.NS]` (an `infra:` prefix is allowed) as (name, context).
fn parse_name(input: &str) -> anyhow::Result<(String, String)> {
    let bare = input.trim().trim_start_matches(kubeconfig::PREFIX);
    let (dest, ns) = match bare.split_once('.') {
        Some((d, n)) => (d, Some(n)),
        None => (bare, None),
    };
    if dest.is_empty() || bare.chars().any(char::is_whitespace) {
        return Err(Usage(format!(
            "{input:?} is not a cluster name: give DEST or DEST.NAMESPACE, as `infra list` shows them"
        ))
        .into());
    }
    let context = kubeconfig::context_name(dest, ns);
    let name = context.trim_start_matches(kubeconfig::PREFIX).to_string();
    Ok((name, context))
}

async fn by_name(input: &str, server: Option<&str>) -> anyhow::Result<()> {
    let (name, context) = parse_name(input)?;
    let path = kubeconfig::kubeconfig_path();
    let local = kubeconfig::read_contexts(&path)?;
    if let Some(ctx) = local.find(&context) {
        let ours = match server {
            None => true,
            Some(s) => canonical_server(s).is_ok_and(|(c, _)| ctx.server.as_deref() == Some(&c)),
        };
        if ours {
            return switch(path, context).await;
        }
    }
    let session = resolve(server)?;
    let listing = list::fetch(&session, &local).await?;
    match listing.rows.iter().find(|r| r.name == name) {
        Some(row) => ensure_and_switch(&session, &listing, row, path).await,
        None => Err(unknown(&name, &listing)),
    }
}

async fn pick(server: Option<&str>) -> anyhow::Result<()> {
    let session = resolve(server)?;
    let listing = list::fetch(&session, &list::local_contexts()).await?;
    if listing.rows.is_empty() {
        anyhow::bail!("{}", list::no_grants(&listing.server));
    }
    if !tui::terminal::interactive() {
        list::print(Format::default_here(), &listing.rows)?;
        return Err(Usage(
            "which one? run `infra use DEST[.NAMESPACE]` with a name from the list above \
             (on a terminal, `infra use` alone opens a picker)"
                .into(),
        )
        .into());
    }
    let mut picker = tui::Picker::new(
        format!("Switch kubectl to a cluster on {}", listing.server),
        list::items(&listing.rows),
    );
    picker.color = tui::color_allowed();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_signals(stop.clone());
    let choice = tokio::task::spawn_blocking(move || tui::run(picker, &stop)).await?;
    if let Some(w) = watcher {
        w.abort();
    }
    match choice? {
        Some(i) => {
            let row = &listing.rows[i];
            let path = kubeconfig::kubeconfig_path();
            let local = kubeconfig::read_contexts(&path)?;
            if local
                .find(&row.context)
                .is_some_and(|c| c.server.as_deref() == Some(&listing.server))
            {
                switch(path, row.context.clone()).await
            } else {
                ensure_and_switch(&session, &listing, row, path).await
            }
        }
        None => Err(Cancelled.into()),
    }
}

/// Ends the picker (as if cancelled) on SIGTERM, SIGHUP or SIGINT, so the
/// terminal is restored; in raw mode Ctrl-C is a key, not a signal.
fn watch_signals(stop: Arc<AtomicBool>) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok()?;
        let mut hup = signal(SignalKind::hangup()).ok()?;
        let mut int = signal(SignalKind::interrupt()).ok()?;
        Some(tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = hup.recv() => {}
                _ = int.recv() => {}
            }
            stop.store(true, Ordering::SeqCst);
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = stop;
        None
    }
}

/// Writes the kubeconfig entries if `row`'s context is missing, then
/// switches to it.
async fn ensure_and_switch(
    session: &Session,
    listing: &Listing,
    row: &Reachable,
    path: PathBuf,
) -> anyhow::Result<()> {
    if !row.registered {
        anyhow::bail!(
            "{} is not registered yet: no connector has reported in for {} on {}, so there is \
             no cluster to point kubectl at; ask an admin to run `infra connector` for it",
            row.name,
            row.destination,
            listing.server
        );
    }
    super::kubeconfig::write_kubeconfig(&session.client, &session.server, &listing.user_id).await?;
    let local = kubeconfig::read_contexts(&path)?;
    match local.find(&row.context) {
        Some(c) if c.server.as_deref() == Some(&listing.server) => {
            switch(path, row.context.clone()).await
        }
        Some(c) => anyhow::bail!(
            "the kubeconfig {} has a context {} of another server ({}); log out of that \
             server (`infra logout {}`) or use `--server` to pick it",
            path.display(),
            row.context,
            c.server.as_deref().unwrap_or("unknown"),
            c.server.as_deref().unwrap_or("SERVER"),
        ),
        None => anyhow::bail!(
            "could not add the context {} to the kubeconfig {}",
            row.context,
            path.display()
        ),
    }
}

async fn switch(path: PathBuf, context: String) -> anyhow::Result<()> {
    let ctx = context.clone();
    let switched =
        tokio::task::spawn_blocking(move || kubeconfig::set_current_context(&path, &ctx)).await??;
    if let Some(stale) = &switched.stale_lock {
        eprintln!("note: {stale}");
    }
    eprintln!("Switched to {context}");
    Ok(())
}

/// The error for a name the user cannot reach, with the close ones.
fn unknown(name: &str, listing: &Listing) -> anyhow::Error {
    if listing.rows.is_empty() {
        return anyhow::anyhow!(
            "you cannot reach {name}: {}",
            list::no_grants(&listing.server)
        );
    }
    let names: Vec<&str> = listing.rows.iter().map(|r| r.name.as_str()).collect();
    let close = close_names(name, &names);
    let hint = match close.as_slice() {
        [] if names.len() <= 8 => format!("you can reach: {}", names.join(", ")),
        [] => "`infra list` shows what you can reach".to_string(),
        [one] => format!("did you mean {one}?"),
        many => format!("did you mean one of: {}?", many.join(", ")),
    };
    anyhow::anyhow!(
        "no cluster {name} that you can reach on {}; {hint}",
        listing.server
    )
}

/// The names close to `input`, closest first (at most 5): within a small
/// edit distance (a typo, a swapped pair), or one a prefix of the other,
/// or the same destination with another namespace.
pub fn close_names<'a>(input: &str, names: &[&'a str]) -> Vec<&'a str> {
    let input = input.to_lowercase();
    let dest = input.split('.').next().unwrap_or_default();
    let limit = (input.chars().count() / 3).max(1);
    let mut scored: Vec<(usize, &'a str)> = names
        .iter()
        .filter_map(|&n| {
            let d = strsim::osa_distance(&input, n);
            let related =
                n.starts_with(&input) || input.starts_with(n) || n.split('.').next() == Some(dest);
            (d <= limit || related).then_some((d, n))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 6] = ["dev", "prod", "prod.web", "prod.db", "stage", "staging-eu"];

    #[test]
    fn close_names_catch_typos_prefixes_and_namespaces() {
        assert_eq!(close_names("prd.web", &NAMES), ["prod.web"]);
        assert_eq!(
            close_names("prod.wbe", &NAMES),
            ["prod.web", "prod.db", "prod"]
        );
        assert_eq!(close_names("stag", &NAMES), ["stage", "staging-eu"]);
        assert_eq!(
            close_names("prod.api", &NAMES),
            ["prod.db", "prod.web", "prod"]
        );
        assert_eq!(close_names("PROD", &NAMES)[0], "prod");
        assert!(close_names("kube-system", &NAMES).is_empty());
        assert!(close_names("x", &NAMES).is_empty());
    }

    #[test]
    fn names_are_parsed_like_contexts() {
        let ok = |s: &str| parse_name(s).unwrap();
        assert_eq!(ok("prod"), ("prod".into(), "infra:prod".into()));
        assert_eq!(ok("prod.web"), ("prod.web".into(), "infra:prod.web".into()));
        assert_eq!(
            ok("infra:prod.web"),
            ("prod.web".into(), "infra:prod.web".into())
        );
        assert_eq!(ok("prod."), ("prod".into(), "infra:prod".into()));
        for bad in ["", "infra:", ".web", "pr od"] {
            let e = parse_name(bad).unwrap_err();
            assert!(e.downcast_ref::<Usage>().is_some(), "{bad:?}: {e}");
        }
    }

    #[test]
    fn unknown_names_list_the_close_ones_or_all() {
        let row = |name: &str| Reachable {
            name: name.into(),
            destination: name.split('.').next().unwrap().into(),
            namespace: None,
            roles: vec!["view".into()],
            status: "connected",
            connected: true,
            registered: true,
            context: format!("infra:{name}"),
            current: false,
        };
        let listing = |names: &[&str]| Listing {
            server: "infra.example.com".into(),
            user_id: "u".into(),
            rows: names.iter().map(|n| row(n)).collect(),
        };
        let e = unknown("prd.web", &listing(&NAMES)).to_string();
        assert_eq!(
            e,
            "no cluster prd.web that you can reach on infra.example.com; did you mean prod.web?"
        );
        let e = unknown("kube", &listing(&NAMES)).to_string();
        assert!(
            e.ends_with("you can reach: dev, prod, prod.web, prod.db, stage, staging-eu"),
            "{e}"
        );
        let many: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = unknown("zzzzzz", &listing(&many)).to_string();
        assert!(e.ends_with("`infra list` shows what you can reach"), "{e}");
        let e = unknown("prod", &listing(&[])).to_string();
        assert!(e.contains("no cluster grants"), "{e}");
    }
}
