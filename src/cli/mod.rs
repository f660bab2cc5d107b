//! The command line: one clap definition (help, man pages and completions
//! come from it), dispatch to one file per command group, and the mapping
//! from errors to exit codes.

use clap::{Parser, Subcommand};

/// Exit codes: 0 ok, 1 error, 2 usage, 4 authentication needed.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const AUTH: i32 = 4;
}

#[derive(Debug, Parser)]
#[command(
    name = "infra",
    version,
    about = "Access to Kubernetes clusters through OpenID Connect"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the infra API server
    Server(crate::server::ServerArgs),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Server(args) => run_async(async move { crate::server::run(args).await }),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INFRA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Starts the runtime, the TLS provider and logging for commands that need them.
fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> i32 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ERROR;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::ERROR
        }
    }
}
