//! `infra destinations`: the clusters (destinations) the server knows,
//! whether each one's connector is connected, and their removal.

use clap::Subcommand;

use super::lookup::remove_found;
use super::output::{self, FormatArg, short_time};
use super::session::{ServerArg, resolve};
use crate::api::Destination;

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

pub async fn run(cmd: DestinationsCmd) -> anyhow::Result<()> {
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
                format.format(),
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
