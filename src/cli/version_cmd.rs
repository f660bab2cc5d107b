//! `infra version`: this CLI's version and, when you are logged in, the
//! server's (`GET /api/version`). Not being logged in is not an error: the
//! CLI's version is still worth printing.

use serde::Serialize;

use super::output::{self, Format, FormatArg};
use super::session::{self, ServerArg};
use crate::api::{self, VersionResponse};

pub const AFTER_HELP: &str = "\
The server is the one you logged in to last, or --server. When you are not \
logged in, only the CLI's version is printed. A server too old or too new for \
this CLI refuses the call and says which side to upgrade.

Examples:
  infra version
  infra version --format json
  infra --version           (the CLI's version only)";

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    #[command(flatten)]
    pub server: ServerArg,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    client_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_version: Option<String>,
    /// Why the server's version is missing, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_error: Option<String>,
}

pub async fn run(args: VersionArgs) -> anyhow::Result<()> {
    let mut v = Versions {
        client_version: api::version::CURRENT,
        server: None,
        server_version: None,
        server_error: None,
    };
    let mut failure = None;
    match session::resolve(args.server.server.as_deref()) {
        Err(e) if e.downcast_ref::<super::AuthNeeded>().is_some() => {
            eprintln!("Not logged in: run `infra login SERVER` to see the server's version too.");
        }
        Err(e) => return Err(e),
        Ok(s) => {
            v.server = Some(s.server.clone());
            match s.client.get::<VersionResponse>("/api/version").await {
                Ok(r) => v.server_version = Some(r.version),
                Err(e) => {
                    v.server_error = Some(e.to_string());
                    failure = Some(e);
                }
            }
        }
    }
    match args.format.format() {
        Format::Table | Format::Plain => {
            let mut text = format!("Client: {}", v.client_version);
            if let (Some(server), Some(version)) = (&v.server, &v.server_version) {
                text.push_str(&format!("\nServer: {version} ({server})"));
            }
            output::line(&text)?;
        }
        f => output::data(f, &v)?,
    }
    match failure {
        Some(e) => {
            let server = v.server.unwrap_or_default();
            Err(anyhow::Error::new(e).context(format!("cannot get the version of {server}")))
        }
        None => Ok(()),
    }
}
