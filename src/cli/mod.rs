//! The command line: one clap definition (help, man pages and completions
//! come from it), dispatch to one file per command group, and the mapping
//! from errors to exit codes. Commands stay thin: parse, call the server
//! through `client`, render through `output`.

pub mod access;
pub mod audit;
pub mod completion;
mod destinations;
pub mod device;
pub mod grants;
pub mod groups;
pub mod help;
pub mod identities;
pub mod keys;
pub mod kubeconfig;
pub mod list;
pub mod login;
pub mod logout;
mod lookup;
pub mod output;
pub mod providers;
pub mod session;
pub mod sessions;
pub mod status;
pub mod tokens;
pub mod trust;
pub mod use_cmd;
pub mod users;
pub mod version_cmd;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::client::ClientError;

/// Exit codes: 0 ok, 1 error, 2 usage, 4 authentication needed.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const AUTH: i32 = 4;
    pub const CANCELLED: i32 = 130;
}

/// An error that means "log in (again)": exit code 4.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthNeeded(pub String);

/// The person cancelled (Ctrl-C at a prompt or while waiting): exit code 130.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// A mistake in how the command was called: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "infra",
    version,
    about = "Access to Kubernetes clusters through OpenID Connect",
    long_about = "infra gives people and workloads access to Kubernetes clusters through OpenID \
                  Connect.\n\nStart with `infra login SERVER`.",
    propagate_version = true,
    after_help = "Examples:\n  infra login infra.example.com\n  infra list\n  infra use prod\n\n\
                  Run `infra help COMMAND` or `infra COMMAND --help` for more about a command, and \
                  `man infra-COMMAND` once installed (./install.sh)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to an infra server
    #[command(after_help = "Examples:\n  infra login infra.example.com\n  \
                            infra login infra.example.com --access-key-file ~/infra.key\n  \
                            infra login infra.example.com --key - < ~/infra.key\n  \
                            infra login localhost:8443 --user admin@example.com\n  \
                            infra login infra.example.com --method=oidc-auth \\\n    \
                            --machine-identity-id deploy --oidc-jwt $JWT")]
    Login(login::LoginArgs),
    /// Log out: revoke the access key and forget it on this machine
    #[command(after_help = "Examples:\n  infra logout\n  infra logout --all")]
    Logout(logout::LogoutArgs),
    /// Show where you are logged in and whether each key still works
    Status(status::StatusArgs),
    /// Show whom you are logged in as, and your access to a destination
    Whoami(access::WhoamiArgs),
    /// List the clusters and namespaces you can reach, with your roles
    #[command(
        after_help = "STATUS is connected, disconnected (its connector has not reported in \
                      lately) or not registered (no connector yet, so nothing to use). CURRENT \
                      marks kubectl's current context.\n\nExamples:\n  infra list\n  \
                      infra list --format json"
    )]
    List(list::ListArgs),
    /// Switch kubectl to a cluster (or a namespace in it) you can reach
    #[command(
        after_help = "Sets kubectl's current context to infra:DEST or infra:DEST.NAMESPACE, \
                      adding the kubeconfig entries first if they are missing.\n\n\
                      With no argument on a terminal, opens a picker: type to filter (fuzzy, \
                      like fzf); Up/Down or Ctrl-N/Ctrl-P move, and so do j/k while the filter \
                      is empty (once you type, every letter filters); Enter switches; Esc, \
                      Ctrl-C, or q with an empty filter, leave without changes (exit 130). \
                      Without a terminal, it prints the list and exits with 2 (usage): name \
                      the cluster instead.\n\nExamples:\n  infra use prod\n  \
                      infra use prod.web\n  infra use"
    )]
    Use(use_cmd::UseArgs),
    /// Manage users (admins)
    #[command(subcommand)]
    Users(users::UsersCmd),
    /// Manage groups and their members (admins)
    #[command(subcommand)]
    Groups(groups::GroupsCmd),
    /// Manage grants: who may do what where
    #[command(subcommand)]
    Grants(grants::GrantsCmd),
    /// List and remove destinations (clusters)
    #[command(subcommand)]
    Destinations(destinations::DestinationsCmd),
    /// Manage access keys
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Manage identity providers (admins)
    #[command(subcommand)]
    Providers(providers::ProvidersCmd),
    /// Show the audit log (admins)
    Audit(audit::AuditArgs),
    /// Recorded exec and attach sessions: list, play back, export
    #[command(subcommand)]
    Sessions(sessions::SessionsCmd),
    /// Manage machine identities and their OIDC JWT logins (admins)
    #[command(subcommand)]
    Identities(identities::IdentitiesCmd),
    /// Explain access: who may do what where, and why
    #[command(subcommand)]
    Access(access::AccessCmd),
    /// Credentials for clusters: kubectl's exec plugin
    #[command(subcommand)]
    Tokens(tokens::TokensCmd),
    /// Run the infra API server
    #[command(after_help = "Examples:\n  infra server --dev\n  \
                      infra server --listen 0.0.0.0:8443 --url https://infra.example.com \\\n    \
                      --tls-cert tls.crt --tls-key tls.key --config infra.yaml\n  \
                      infra server --db postgres://infra@db/infra --url https://infra.example.com \\\n    \
                      --root-key-file /run/secrets/infra-root.key")]
    Server(crate::server::ServerArgs),
    /// Run the connector next to a cluster's API server
    #[command(
        after_help = "Example:\n  infra connector --server https://infra.example.com \\\n    --access-key-file /run/secrets/infra-connector.key \\\n    --name prod --endpoint prod-connector.example.com:443\n\n\
                      The key can also come from INFRA_CONNECTOR_ACCESS_KEY_FILE (a file's path) \
                      or INFRA_CONNECTOR_ACCESS_KEY (the key itself; visible to anyone who can \
                      read the process's environment)."
    )]
    Connector(crate::connector::ConnectorArgs),
    /// Print the completion script for a shell
    #[command(after_help = completion::AFTER_HELP)]
    Completion(completion::CompletionArgs),
    /// Print the CLI's version and the server's
    #[command(after_help = version_cmd::AFTER_HELP)]
    Version(version_cmd::VersionArgs),
}

/// The whole command line as clap sees it: the derive, plus the grouped
/// top-level help. Help, man pages and completions all come from here.
pub fn command() -> clap::Command {
    help::grouped(boolish_env(Cli::command()))
}

/// Switches (`--dev`) read their `INFRA_*` variable as people write them:
/// `1`/`0`, `yes`/`no`, `on`/`off`, `true`/`false` (clap alone takes only
/// `true`/`false` there).
fn boolish_env(mut cmd: clap::Command) -> clap::Command {
    let switches: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| {
            a.get_env().is_some()
                && matches!(
                    a.get_action(),
                    clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
                )
        })
        .map(|a| a.get_id().clone())
        .collect();
    for id in switches {
        cmd = cmd.mut_arg(id, |a| {
            a.value_parser(clap::builder::BoolishValueParser::new())
        });
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, boolish_env);
    }
    cmd
}

/// Parses the process arguments with [`command`].
fn parse() -> Result<Cli, clap::Error> {
    let mut cmd = command();
    let args = hoist_global_flags(std::env::args_os().collect());
    let mut matches = cmd.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))
}

/// The flags that work before the command as well as after it.
const GLOBAL_FLAGS: [&str; 2] = ["--server", "--format"];

/// `infra --server S list` as `infra list --server S`: the flags of
/// [`GLOBAL_FLAGS`] given before the command move behind it (before any
/// `--`), where each command that takes them defines them.
pub fn hoist_global_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut front = Vec::new();
    let mut hoisted = Vec::new();
    let mut rest = args.into_iter();
    if let Some(program) = rest.next() {
        front.push(program);
    }
    let mut rest = rest.peekable();
    while let Some(a) = rest.peek() {
        let text = a.to_string_lossy();
        if GLOBAL_FLAGS.contains(&text.as_ref()) {
            hoisted.extend(rest.next());
            hoisted.extend(rest.next());
        } else if GLOBAL_FLAGS
            .iter()
            .any(|f| text.starts_with(&format!("{f}=")))
        {
            hoisted.extend(rest.next());
        } else if text.starts_with('-') {
            front.extend(rest.next());
        } else {
            break;
        }
    }
    let mut tail: Vec<_> = rest.collect();
    if hoisted.is_empty() {
        front.append(&mut tail);
        return front;
    }
    let dashes = tail.iter().position(|a| a == "--").unwrap_or(tail.len());
    let after: Vec<_> = tail.split_off(dashes);
    front.extend(tail);
    front.extend(hoisted);
    front.extend(after);
    front
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match parse() {
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
        Command::Server(args) => {
            LOG_JSON.store(
                args.log_format == crate::edge::LogFormat::Json,
                std::sync::atomic::Ordering::Relaxed,
            );
            run_async(true, crate::server::run(args))
        }
        Command::Connector(args) => {
            LOG_JSON.store(
                args.log_format == crate::edge::LogFormat::Json,
                std::sync::atomic::Ordering::Relaxed,
            );
            run_async(true, crate::connector::run(args))
        }
        Command::Login(args) => run_async(false, login::run(args)),
        Command::Logout(args) => run_async(false, logout::run(args)),
        Command::Status(args) => run_async(false, status::run(args)),
        Command::Whoami(args) => run_async(false, access::whoami(args)),
        Command::Access(cmd) => run_async(false, access::run(cmd)),
        Command::List(args) => run_async(false, list::run(args)),
        Command::Use(args) => run_async(false, use_cmd::run(args)),
        Command::Users(cmd) => run_async(false, users::run(cmd)),
        Command::Groups(cmd) => run_async(false, groups::run(cmd)),
        Command::Grants(cmd) => run_async(false, grants::run(cmd)),
        Command::Destinations(cmd) => run_async(false, destinations::run(cmd)),
        Command::Keys(cmd) => run_async(false, keys::run(cmd)),
        Command::Audit(args) => run_async(false, audit::run(args)),
        Command::Sessions(cmd) => run_async(false, sessions::run(cmd)),
        Command::Providers(cmd) => run_async(false, providers::run(cmd)),
        Command::Identities(cmd) => run_async(false, identities::run(cmd)),
        Command::Tokens(cmd) => run_async(false, tokens::run(cmd)),
        Command::Completion(args) => match completion::run(args) {
            Ok(()) => exit::OK,
            Err(e) => report(&e),
        },
        Command::Version(args) => run_async(false, version_cmd::run(args)),
    }
}

/// `--log-format json` of the server or connector being started.
static LOG_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INFRA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if LOG_JSON.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        return;
    }
    // Colour only for a person at a terminal; log files and pipes get text.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

/// Starts the runtime, the TLS provider and logging for commands that need
/// them, and maps the outcome to an exit code.
fn run_async(server: bool, fut: impl std::future::Future<Output = anyhow::Result<()>>) -> i32 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_tracing(if server { "info,sqlx=warn" } else { "warn" });
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
    let result = rt.block_on(async {
        match fut.await {
            Err(e) => Err(trust::explain_untrusted(e).await),
            ok => ok,
        }
    });
    // Don't wait for stray blocking tasks (a hung keyring call, say).
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => exit::OK,
        Err(e) => report(&e),
    }
}

/// Prints an error the way a person should read it; returns the exit code.
pub fn report(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        return exit::OK;
    }
    if let Some(a) = e.downcast_ref::<AuthNeeded>() {
        eprintln!("error: {a}");
        return exit::AUTH;
    }
    if e.downcast_ref::<Cancelled>().is_some() {
        eprintln!("cancelled");
        return exit::CANCELLED;
    }
    if e.downcast_ref::<crate::login::ListenError>().is_some() {
        eprintln!("error: {e}");
        return exit::ERROR;
    }
    if let Some(u) = e.downcast_ref::<Usage>() {
        eprintln!("error: {u}");
        return exit::USAGE;
    }
    if let Some(ce) = e.downcast_ref::<ClientError>() {
        match ce {
            ClientError::CertificateChanged {
                server,
                pinned,
                seen,
            } => {
                eprintln!(
                    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                     @  WARNING: THE CERTIFICATE OF {server} HAS CHANGED!\n\
                     @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                     Someone could be intercepting your connection, or the server's \
                     certificate was replaced.\n\
                     Pinned fingerprint:    {pinned}\n\
                     Presented fingerprint: {seen}\n\
                     Nothing was sent. If your administrator confirms the new certificate, run:\n  \
                     infra login {host} --tls-trusted-fingerprint {seen}",
                    host = server.trim_start_matches("https://"),
                );
                return exit::ERROR;
            }
            ClientError::Api {
                status: 400, body, ..
            } if upgrade_hint(&body.message).is_some() => {
                let hint = upgrade_hint(&body.message).unwrap_or_default();
                eprintln!("error: {e:#}\n{hint}");
                return exit::ERROR;
            }
            ClientError::Api { status: 401, .. } => {
                let hint = session::login_hint();
                eprintln!("error: {ce}\n{hint}");
                return exit::AUTH;
            }
            _ => {}
        }
        eprintln!("error: {e:#}");
        return exit::ERROR;
    }
    eprintln!("error: {e:#}");
    exit::ERROR
}

/// How to act on a server's refusal of this CLI's version (the message of
/// `api::version::Skew::ClientTooOld`): the server's message says which
/// side to upgrade; this says how, when the side is ours.
fn upgrade_hint(message: &str) -> Option<String> {
    let (_, version) = message.split_once(": upgrade the CLI to ")?;
    let version = version.trim();
    Some(format!(
        "To upgrade: in a checkout of infra {version}, run ./install.sh (or `cargo install \
         --locked --path .`)."
    ))
}

#[cfg(test)]
mod tests {
    /// Every flag of the commands a deployment or CI job runs can be set by
    /// an `INFRA_*` variable, as the README says. Listed here when one is
    /// missing.
    #[test]
    fn every_flag_has_an_environment_variable() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_positional() || matches!(id, "help" | "version") || a.is_hide_set() {
                    continue;
                }
                match a.get_env() {
                    Some(e) if e.to_string_lossy().starts_with("INFRA_") => {}
                    _ => missing.push(format!("{path} --{}", a.get_long().unwrap_or(id))),
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        // The commands a deployment or a CI job configures by environment;
        // the management commands name what they act on, on the line.
        let mut missing = Vec::new();
        let cmd = super::command();
        for name in ["server", "connector", "login", "logout", "status", "list"] {
            walk(
                cmd.find_subcommand(name).unwrap(),
                &format!("infra {name}"),
                &mut missing,
            );
        }
        walk(
            cmd.find_subcommand("tokens")
                .and_then(|t| t.find_subcommand("create"))
                .unwrap(),
            "infra tokens create",
            &mut missing,
        );
        // Read from the environment by the trust code itself (the variable
        // takes a PEM text as well as a file).
        missing.retain(|m| {
            !m.ends_with("--tls-trusted-fingerprint") && !m.ends_with("--tls-trusted-cert")
        });
        assert!(
            missing.is_empty(),
            "flags without an INFRA_ variable:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn global_flags_move_behind_the_command() {
        let h = |args: &[&str]| -> Vec<String> {
            super::hoist_global_flags(args.iter().map(|a| a.into()).collect())
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            h(&["infra", "--server", "s.example", "grants", "list"]),
            ["infra", "grants", "list", "--server", "s.example"]
        );
        assert_eq!(
            h(&["infra", "--format=json", "list"]),
            ["infra", "list", "--format=json"]
        );
        assert_eq!(
            h(&["infra", "--server", "s", "x", "--", "--server"]),
            ["infra", "x", "--server", "s", "--", "--server"]
        );
        assert_eq!(
            h(&["infra", "list", "--server", "s"]),
            ["infra", "list", "--server", "s"]
        );
        assert_eq!(h(&["infra", "--help"]), ["infra", "--help"]);
    }

    use super::*;
    use crate::api::version::{self, Skew};

    #[test]
    fn a_server_newer_than_the_cli_gets_an_upgrade_hint() {
        let skew = version::check(Some("1.2.0"), "1.4.0").unwrap_err();
        assert!(matches!(skew, Skew::ClientTooOld { .. }));
        let hint = upgrade_hint(&skew.to_string()).expect("a hint for an old CLI");
        assert!(
            hint.contains("infra 1.4.0") && hint.contains("./install.sh"),
            "{hint}"
        );
        // An old server is the administrator's to upgrade: its message says so.
        let skew = version::check(Some("1.5.0"), "1.4.0").unwrap_err();
        assert_eq!(upgrade_hint(&skew.to_string()), None);
    }

    /// `Debug` of the parsed arguments (what a `{:?}` in a log line shows)
    /// never holds a secret given on the command line.
    #[test]
    fn debug_of_arguments_redacts_secrets() {
        const SECRET: &str = "Sup3rS3cretV4lue";
        let key = format!("AbCdEf0123.{SECRET}");
        for argv in [
            vec!["infra", "login", "example.com", "--key", key.as_str()],
            vec![
                "infra",
                "login",
                "example.com",
                "--method",
                "oidc-auth",
                "--machine-identity-id",
                "ci",
                "--oidc-jwt",
                SECRET,
            ],
            vec![
                "infra",
                "connector",
                "--server",
                "https://infra.example.com",
                "--access-key",
                key.as_str(),
                "--name",
                "prod",
            ],
            vec![
                "infra",
                "server",
                "--oidc-issuer-url",
                "https://idp.example.com",
                "--oidc-issuer-client-id",
                "infra",
                "--oidc-issuer-client-secret",
                SECRET,
            ],
            vec![
                "infra",
                "providers",
                "add",
                "okta",
                "--url",
                "example.okta.com",
                "--client-id",
                "x",
                "--client-secret",
                SECRET,
            ],
        ] {
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let shown = format!("{cli:?} {cli:#?}");
            assert!(
                !shown.contains(SECRET),
                "{argv:?} shows the secret: {shown}"
            );
            assert!(shown.contains("REDACTED"), "{shown}");
        }
    }
}
