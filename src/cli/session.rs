//! Which server a command talks to, with which key and which TLS trust:
//! `--server` or `INFRA_SERVER` or the current server in the config file;
//! the key from `INFRA_ACCESS_KEY`, the keyring or its fallback file.
//! And how a login or a logout records itself on this machine: the config
//! file changed under its lock, the cluster tokens cached for the session
//! before deleted.

use std::sync::OnceLock;

use secrecy::SecretString;

use super::AuthNeeded;
use crate::client::{Client, Trust};
use crate::local::config::{Config, KeyStore, ServerEntry, canonical_server};
use crate::local::credentials;

static HINT_SERVER: OnceLock<String> = OnceLock::new();

/// The command that fixes an authentication error.
pub fn login_hint() -> String {
    match HINT_SERVER.get() {
        Some(s) => format!("run `infra login {s}` to log in again"),
        None => "run `infra login SERVER` to log in".to_string(),
    }
}

/// A server to talk to, with the key to use.
pub struct Session {
    pub server: String,
    pub entry: Option<ServerEntry>,
    pub client: Client,
    pub key_store: KeyStore,
}

/// The `--server` flag of commands that talk to a server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArg {
    /// Server to use (default: the one you logged in to last)
    #[arg(long, env = "INFRA_SERVER", value_name = "SERVER")]
    pub server: Option<String>,
}

/// Where a server's key is kept: one entry per user and server, so two
/// people (or two config dirs) on one OS account do not overwrite each other.
pub fn account(user_name: &str, server: &str) -> String {
    format!("{user_name}@{server}")
}

pub fn trust_of(entry: &ServerEntry) -> Trust {
    if entry.skip_tls_verify {
        Trust::Insecure
    } else if let Some(fp) = &entry.trusted_fingerprint {
        Trust::Fingerprint(fp.clone())
    } else if let Some(pem) = &entry.trusted_cert {
        Trust::Cert(pem.clone())
    } else {
        Trust::System
    }
}

/// Trust given in the environment, for machines with no config file (CI):
/// `INFRA_TLS_TRUSTED_FINGERPRINT` (SHA-256, as `infra login` shows it) or
/// `INFRA_TLS_TRUSTED_CERT` (a PEM file's path, or the PEM text itself).
/// When set, it wins over the trust remembered for the server.
pub fn env_trust() -> anyhow::Result<Option<Trust>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(fp) = var(ENV_FINGERPRINT) {
        let fp = crate::client::tls::normalize_fingerprint(&fp).ok_or_else(|| {
            super::Usage(format!(
                "{ENV_FINGERPRINT} must be a SHA-256 fingerprint: 64 hex digits, colons optional"
            ))
        })?;
        return Ok(Some(Trust::Fingerprint(fp)));
    }
    if let Some(v) = var(ENV_CERT) {
        if v.contains("-----BEGIN") {
            return Ok(Some(Trust::Cert(v)));
        }
        let pem = std::fs::read_to_string(v.trim()).map_err(|e| {
            super::Usage(format!(
                "{ENV_CERT}: cannot read the certificate {}: {e} (give a PEM file's path or the PEM text)",
                v.trim()
            ))
        })?;
        return Ok(Some(Trust::Cert(pem)));
    }
    Ok(None)
}

pub const ENV_FINGERPRINT: &str = "INFRA_TLS_TRUSTED_FINGERPRINT";
pub const ENV_CERT: &str = "INFRA_TLS_TRUSTED_CERT";

/// How a server is trusted: the environment's trust, else the entry's,
/// else the system's roots.
pub fn trust_for(entry: Option<&ServerEntry>) -> anyhow::Result<Trust> {
    Ok(match (env_trust()?, entry) {
        (Some(t), _) => t,
        (None, Some(e)) => trust_of(e),
        (None, None) => Trust::System,
    })
}

/// Who a key belongs to, as the server says (`GET /api/whoami`) or as the
/// config file remembers it from the login.
#[derive(Debug, Clone)]
pub struct Me {
    pub id: String,
    pub name: String,
}

/// Resolves the server and key for a command, or says how to log in.
///
/// `INFRA_ACCESS_KEY`, when set, is the key, whatever the config file says;
/// whose it is then comes from the server ([`Session::me`]), never from the
/// config file's user.
pub fn resolve(server: Option<&str>) -> anyhow::Result<Session> {
    let config = Config::load()?;
    let chosen = match server {
        Some(s) => {
            let (canonical, _) =
                canonical_server(s).map_err(|e| super::Usage(format!("--server: {e}")))?;
            canonical
        }
        None => config.current.clone().ok_or_else(|| {
            AuthNeeded("you are not logged in to any infra server; run `infra login SERVER`".into())
        })?,
    };
    let _ = HINT_SERVER.set(chosen.clone());
    let entry = config.find(&chosen).cloned();
    let url = match &entry {
        Some(e) => e.url.clone(),
        None => canonical_server(&chosen).map_err(super::Usage)?.1,
    };
    // A server logged out of keeps its pinned certificate: an
    // INFRA_ACCESS_KEY for it is checked against that too.
    let trust = trust_for(config.trust_entry(&chosen).as_ref())?;
    let found = match (credentials::access_key_from_env(), &entry) {
        (Some(k), _) => Some((k, KeyStore::Environment)),
        (None, Some(e)) => credentials::load_key(&account(&e.user_name, &e.server), e.key_store)?,
        (None, None) => None,
    };
    let Some((key, key_store)) = found else {
        return Err(AuthNeeded(format!(
            "you are not logged in to {chosen}; run `infra login {chosen}`"
        ))
        .into());
    };
    if matches!(trust, Trust::Insecure) {
        eprintln!("warning: not verifying the TLS certificate of {chosen} (--skip-tls-verify)");
    }
    let client = Client::new(&url, &trust, Some(key))?;
    Ok(Session {
        server: chosen,
        entry,
        client,
        key_store,
    })
}

impl Session {
    /// Whose key this session uses: the login's user for a key this
    /// machine keeps, else (`INFRA_ACCESS_KEY`) whoever the server says.
    pub async fn me(&self) -> anyhow::Result<Me> {
        if self.key_store != KeyStore::Environment
            && let Some(e) = &self.entry
            && !e.user_id.is_empty()
        {
            return Ok(Me {
                id: e.user_id.clone(),
                name: e.user_name.clone(),
            });
        }
        let w = self.client.whoami().await?;
        Ok(Me {
            id: w.id,
            name: w.name,
        })
    }
}

/// Reads a secret: prompted without echo on a terminal, else from `env`
/// or one line of stdin.
pub fn read_secret(prompt: &str, env: Option<&str>) -> anyhow::Result<SecretString> {
    use std::io::IsTerminal;
    if let Some(var) = env
        && let Ok(v) = std::env::var(var)
        && !v.is_empty()
    {
        return Ok(SecretString::from(v));
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let v = rpassword::prompt_password(prompt)?;
        return Ok(SecretString::from(v));
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let v = line.trim_end_matches(['\n', '\r']).to_string();
    if v.is_empty() {
        let from = env.map(|e| format!("set {e} or ")).unwrap_or_default();
        anyhow::bail!("no password given: {from}pass it on standard input");
    }
    Ok(SecretString::from(v))
}

/// Whether we may ask the person a question.
pub fn can_prompt() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks a yes/no question on the terminal; default no.
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut err = std::io::stderr();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Changes the config file under a lock, re-reading it first, so parallel
/// logins and logouts do not lose each other's entries.
pub(super) fn update_config(f: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
    let dir = crate::local::config::config_dir();
    let _lock = crate::local::lock::FileLock::acquire(
        &dir.join("config.lock"),
        std::time::Duration::from_secs(30),
    )?;
    let mut config = Config::load()?;
    f(&mut config);
    config.save()
}

/// Deletes the cluster tokens this config home has cached for `server`,
/// with their lock files; call it once the config file says who is logged
/// in there now (or that nobody is). A failure is a warning.
pub(super) fn forget_cached_tokens(server: &str) {
    let home = crate::local::token_cache::this_home();
    if let Err(e) = crate::local::token_cache::remove_server(&home, server) {
        eprintln!("warning: could not delete the cached cluster tokens of {server}: {e:#}");
    }
}
