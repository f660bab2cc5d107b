//! `infra tokens create`: kubectl's exec credential plugin, run before every
//! kubectl call. It prints an `ExecCredential` holding a short-lived cluster
//! token (a JWT the server mints for one destination) on stdout, and nothing
//! else there, ever.
//!
//! Two paths, split by cost:
//! - the warm path ([`warm()`]) runs from `main` before anything else starts:
//!   the arguments are recognised by hand, the token is read from the cache
//!   (`local::token_cache`, keyed by config home, server, destination and
//!   the environment's key) and printed if it is valid for longer than the
//!   margin by this machine's clock, and this caller has not already been
//!   given it (kubectl asking again for the same token means the cluster
//!   refused it: see `token_cache::judge`). No async runtime, no keyring, no
//!   config file, no network, no clap, no logging. Any miss or oddity falls
//!   through to the normal CLI.
//! - the cold path ([`create`]) reads the config (whose user this config
//!   home is logged in as: a cached token of anyone else is a miss), takes
//!   the entry's file lock, re-reads the cache (a parallel kubectl call may
//!   have refreshed it meanwhile), mints a token with `POST /api/tokens`,
//!   saves it with its lifetime in local time ([`local_expiry`]) and prints
//!   it, so any number of parallel calls make one request to the server.
//!
//! It never opens a browser nor prompts: when the session is gone it says to
//! run `infra login SERVER` and exits with code 4.
//!
//! The files follow the same split: `warm.rs` (the warm path, and the
//! margin both paths use), `cold.rs` (the cold path) and `credential.rs`
//! (the `ExecCredential` both print). This one holds the command's clap
//! definition and makes the parts reachable as `cli::tokens::…`, where
//! `main` and `infra-credential` call [`warm()`].

mod cold;
mod credential;
mod warm;

pub use cold::{create, local_expiry};
pub use credential::{API_V1, API_V1BETA1, ExecApi, api_from_env, exec_credential, rfc3339};
pub use warm::{DEFAULT_MARGIN, FastArgs, fast_args, margin_from_env, warm};

#[derive(Debug, clap::Subcommand)]
pub enum TokensCmd {
    /// Print a credential for a cluster (kubectl runs this; see `infra login`)
    #[command(
        after_help = "kubectl runs this through the kubeconfig entries `infra login` writes; \
                            it prints an ExecCredential on stdout.\n\n\
                            Environment:\n  \
                            INFRA_TOKEN_MARGIN  refresh a cached token this many seconds before it \
                            expires (default 60)\n  \
                            INFRA_CACHE_DIR     where tokens are cached (default: your cache \
                            directory + infra/tokens)\n  \
                            INFRA_ACCESS_KEY    mint tokens with this access key\n\n\
                            Example:\n  infra tokens create --server infra.example.com --destination prod"
    )]
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The server: host, host:port or https URL (default: the current one)
    #[arg(long, env = "INFRA_SERVER", value_name = "SERVER")]
    pub server: Option<String>,

    /// The destination (cluster) to get a token for
    #[arg(long, env = "INFRA_DESTINATION", value_name = "NAME")]
    pub destination: String,
}

pub async fn run(cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create(args) => create(args).await,
    }
}
