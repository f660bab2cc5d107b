//! First start and declarative setup.
//!
//! An empty store gets an `admin` user holding `admin` on `infra`, and a
//! one-time admin access key printed to stderr, unless the key is given
//! by `INFRA_ADMIN_ACCESS_KEY` or the config file. The config file (YAML)
//! declares providers, users, groups and grants; applying it is idempotent,
//! so a platform team can keep it in git and restart at will.

use std::path::Path;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::AppState;
use super::crypto;
use super::routes::access_keys::CONNECTOR_USER;
use super::store::{NewAccessKey, Origin, StoreError, Subject};
use crate::api::{ADMIN_ROLE, CONNECTOR_ROLE, INFRA_DESTINATION};

pub const ADMIN_USER: &str = "admin";
const BOOTSTRAP_KEY_NAME: &str = "bootstrap";
const BOOTSTRAP_KEY_LIFETIME: i64 = 365 * 86_400;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// `<id>.<secret>`, or `env:VAR` / `file:PATH`.
    pub admin_access_key: Option<SecretString>,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    #[serde(default = "crate::api::default_provider_kind")]
    pub kind: String,
    pub url: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// The secret, or `env:VAR` / `file:PATH`.
    pub client_secret: SecretString,
    /// A PEM file with the provider's CA, when it is not publicly trusted.
    pub ca_file: Option<String>,
    /// The claim that names users (e.g. preferred_username); default: the verified email.
    pub username_claim: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// The password, or `env:VAR` / `file:PATH`.
    pub password: Option<SecretString>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantConfig {
    pub user: Option<String>,
    pub group: Option<String>,
    pub identity: Option<String>,
    pub destination: String,
    pub role: String,
}

pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Resolves `env:VAR` and `file:PATH` indirections for secrets.
fn resolve_secret(what: &str, value: &SecretString) -> anyhow::Result<SecretString> {
    let value = value.expose_secret();
    let v = if let Some(var) = value.strip_prefix("env:") {
        std::env::var(var)
            .with_context(|| format!("{what}: the environment variable {var} is not set"))?
    } else if let Some(path) = value.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .with_context(|| format!("{what}: cannot read {path}"))?
            .trim()
            .to_string()
    } else {
        value.to_string()
    };
    Ok(SecretString::from(v))
}

/// Checks every name in the file before anything is applied, so a bad file
/// changes nothing.
fn check_config(config: &Config) -> anyhow::Result<()> {
    let subject = |what: &str, name: &str| -> anyhow::Result<()> {
        super::routes::check_subject_name("name", name)
            .map_err(|e| anyhow::anyhow!("{what} {name:?}: {}", e.message))
    };
    for u in &config.users {
        subject("user", &u.name)?;
    }
    for g in &config.groups {
        subject("group", &g.name)?;
        for m in &g.members {
            subject(&format!("member of group {}", g.name), m)?;
        }
    }
    for g in &config.grants {
        for (what, name) in [
            ("user", &g.user),
            ("group", &g.group),
            ("identity", &g.identity),
        ] {
            if let Some(name) = name {
                subject(&format!("the {what} of a grant on {}", g.destination), name)?;
            }
        }
        if let Some(i) = &g.identity
            && !super::routes::is_dns_label(i)
        {
            anyhow::bail!(
                "identity {i:?} of a grant on {}: must be lowercase letters, digits and dashes",
                g.destination
            );
        }
    }
    Ok(())
}

pub async fn run(state: &AppState, config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = match config_path {
        Some(p) => {
            let c = load_config(p)?;
            check_config(&c).map_err(|e| anyhow::anyhow!("{}: {e:#}", p.display()))?;
            c
        }
        None => Config::default(),
    };
    let store = &state.store;

    // The built-in users: the first admin, and the owner of connector keys.
    let admin = ensure_user(state, ADMIN_USER, "user", Origin::Builtin).await?;
    ensure_grant(
        state,
        &Subject::User(admin.clone()),
        INFRA_DESTINATION,
        ADMIN_ROLE,
        "system",
    )
    .await?;
    let connector = ensure_user(state, CONNECTOR_USER, "connector", Origin::Builtin).await?;
    ensure_grant(
        state,
        &Subject::User(connector),
        INFRA_DESTINATION,
        CONNECTOR_ROLE,
        "system",
    )
    .await?;

    let given = match std::env::var("INFRA_ADMIN_ACCESS_KEY")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(v) => Some(SecretString::from(v)),
        None => match &config.admin_access_key {
            Some(v) => Some(resolve_secret("adminAccessKey", v)?),
            None => None,
        },
    };
    // Only one replica wins this insert, so the key is made (and shown) once.
    let first_start = store.set_setting_once("bootstrapped", "1").await?;
    match given {
        Some(key) => install_admin_key(state, &admin, key.expose_secret()).await?,
        None if first_start => {
            let key = crypto::generate_access_key();
            store
                .create_access_key(&NewAccessKey {
                    id: &key.id,
                    name: BOOTSTRAP_KEY_NAME,
                    owner_kind: "user",
                    owner_id: &admin,
                    secret_hash: &key.secret_hash,
                    expires_at: super::store::now() + BOOTSTRAP_KEY_LIFETIME,
                    inactivity_timeout: BOOTSTRAP_KEY_LIFETIME,
                    destination: None,
                    provider_id: None,
                    auth_time: None,
                })
                .await?;
            // Kept (sealed with the root key) until its first use, so a
            // start that fails after this point does not lose it; printed
            // once the server serves (`unused_admin_key`).
            store
                .set_setting(
                    UNUSED_ADMIN_KEY,
                    &state.root_key.encrypt(key.key.expose_secret()),
                )
                .await?;
        }
        None => {}
    }

    for p in &config.providers {
        let secret = resolve_secret(&format!("provider {}", p.name), &p.client_secret)?;
        let ca_pem = match &p.ca_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("provider {}: cannot read caFile {f}", p.name))?,
            None => String::new(),
        };
        let prepared = super::routes::providers::prepare(
            state,
            super::routes::providers::Settings {
                name: &p.name,
                kind: &p.kind,
                url: &p.url,
                client_id: &p.client_id,
                client_secret: secret.expose_secret(),
                ca_pem: &ca_pem,
                username_claim: p.username_claim.as_deref().unwrap_or_default(),
            },
        )
        .await;
        let new = match prepared {
            Ok(new) => new,
            Err(e) => {
                // The provider may be down right now; keep what was stored.
                eprintln!(
                    "warning: provider {} from the config file was not applied: {}",
                    p.name, e.message
                );
                continue;
            }
        };
        match store.find_provider_by_name(&p.name).await? {
            Some(cur) => store.update_provider(&cur.id, &new).await.map(|_| ())?,
            None => store.create_provider(&new).await.map(|_| ())?,
        }
    }
    for u in &config.users {
        let origin = match u.password {
            Some(_) => Origin::Local,
            None => Origin::Invited,
        };
        let id = ensure_user(state, &u.name, "user", origin).await?;
        if let Some(pw) = &u.password {
            if store.get_user(&id).await?.origin() == Origin::Provider {
                eprintln!(
                    "warning: user {} signs in through an identity provider; its password in the \
                     config file was not applied (a local password would outlive the provider)",
                    u.name
                );
                continue;
            }
            let pw = resolve_secret(&format!("user {}", u.name), pw)?;
            let hash = tokio::task::spawn_blocking(move || crypto::hash_password(&pw)).await??;
            store.set_user_password(&id, &hash).await?;
        }
    }
    for g in &config.groups {
        let gid = match store.find_group_by_name(&g.name).await? {
            Some(row) => row.id,
            None => store.create_group(&g.name).await?.id,
        };
        let mut ids = Vec::new();
        for m in &g.members {
            ids.push(ensure_user(state, m, "user", Origin::Invited).await?);
        }
        store.update_group_members(&gid, &ids, &[]).await?;
    }
    for g in &config.grants {
        let subject = match (&g.user, &g.group, &g.identity) {
            (Some(u), None, None) => {
                Subject::User(ensure_user(state, u, "user", Origin::Invited).await?)
            }
            (None, Some(name), None) => match store.find_group_by_name(name).await? {
                Some(row) => Subject::Group(row.id),
                None => Subject::Group(store.create_group(name).await?.id),
            },
            (None, None, Some(name)) => {
                let page = store
                    .list_identities(Some(name), super::store::PageRequest::all())
                    .await?;
                match page.items.into_iter().next() {
                    Some(i) => Subject::Identity(i.id),
                    None => Subject::Identity(store.create_identity(name).await?.id),
                }
            }
            _ => anyhow::bail!(
                "a grant in the config file must name exactly one of user, group or identity"
            ),
        };
        super::routes::grants::check_destination_and_role(&g.destination, &g.role)
            .map_err(|e| anyhow::anyhow!("grant to {}: {}", g.destination, e.message))?;
        ensure_grant(state, &subject, &g.destination, &g.role, "config").await?;
    }
    Ok(())
}

async fn ensure_user(
    state: &AppState,
    name: &str,
    kind: &str,
    origin: Origin,
) -> anyhow::Result<String> {
    if let Some(u) = state.store.find_user_by_name(name).await? {
        return Ok(u.id);
    }
    match state.store.create_user(name, kind, origin, None).await {
        Ok(u) => Ok(u.id),
        // Another replica made it first.
        Err(StoreError::Conflict(_)) => Ok(state
            .store
            .find_user_by_name(name)
            .await?
            .context("user vanished during bootstrap")?
            .id),
        Err(e) => Err(e.into()),
    }
}

async fn ensure_grant(
    state: &AppState,
    subject: &Subject,
    destination: &str,
    role: &str,
    created_by: &str,
) -> anyhow::Result<()> {
    match state
        .store
        .create_grant(subject, destination, role, None, false, created_by)
        .await
    {
        Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The setting that holds the first start's admin key until it is used.
const UNUSED_ADMIN_KEY: &str = "unused_admin_key";

/// The admin key the first start made, while nobody has used it yet: what
/// `infra server` prints once it serves, and `--print-admin-key` prints.
/// Once used (or revoked), it is forgotten.
pub async fn unused_admin_key(
    store: &super::store::Store,
    root_key: &crypto::RootKey,
) -> anyhow::Result<Option<SecretString>> {
    let Some(sealed) = store.get_setting(UNUSED_ADMIN_KEY).await? else {
        return Ok(None);
    };
    let key = root_key.decrypt(&sealed)?;
    let unused = match crypto::parse_access_key(key.expose_secret()) {
        Some((id, _)) => match store.get_access_key(id).await {
            Ok(row) => row.last_used_at.is_none(),
            Err(super::store::StoreError::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        },
        None => false,
    };
    if !unused {
        store.delete_setting(UNUSED_ADMIN_KEY).await?;
        return Ok(None);
    }
    Ok(Some(key))
}

/// The start-up lines that show the unused admin key.
pub fn admin_key_banner(key: &SecretString) -> String {
    format!(
        "\nThe admin access key of this new server (shown at each start until it is first \
         used):\n\n    {}\n\nLog in with:  infra login SERVER --key <the key above>\n",
        key.expose_secret()
    )
}

/// Installs (or refreshes) the admin key the operator chose.
async fn install_admin_key(state: &AppState, admin: &str, key: &str) -> anyhow::Result<()> {
    let (id, secret) = crypto::parse_access_key(key).with_context(|| {
        format!(
            "the admin access key from INFRA_ADMIN_ACCESS_KEY or the config file must look like {}",
            crypto::access_key_shape()
        )
    })?;
    let hash = crypto::hash_secret(secret);
    match state.store.get_access_key(id).await {
        Ok(row) if row.owner_id == admin && crypto::secret_matches(secret, &row.secret_hash) => {
            return Ok(());
        }
        Ok(_) => {
            state.store.delete_access_key(id).await?;
        }
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let res = state
        .store
        .create_access_key(&NewAccessKey {
            id,
            name: &format!("{BOOTSTRAP_KEY_NAME}-{}", id.to_ascii_lowercase()),
            owner_kind: "user",
            owner_id: admin,
            secret_hash: &hash,
            expires_at: super::store::now() + BOOTSTRAP_KEY_LIFETIME,
            inactivity_timeout: BOOTSTRAP_KEY_LIFETIME,
            destination: None,
            provider_id: None,
            auth_time: None,
        })
        .await;
    match res {
        Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Registers the embedded provider of `--dev` as `dev`, trusting the
/// server's own certificate. Sessions from an earlier run of it end: its
/// keys are new, so everyone signs in again.
pub async fn register_dev_provider(
    state: &AppState,
    idp: &super::dev_idp::DevIdp,
    own_cert_pem: &str,
) -> anyhow::Result<()> {
    let store = &state.store;
    let new = super::store::NewProvider {
        name: "dev".into(),
        kind: "oidc".into(),
        url: idp.issuer.clone(),
        client_id: idp.client_id.clone(),
        client_secret_enc: state.root_key.encrypt(&idp.client_secret),
        issuer: idp.issuer.clone(),
        auth_url: idp.endpoint("/authorize"),
        token_url: idp.endpoint("/token"),
        userinfo_url: idp.endpoint("/userinfo"),
        jwks_url: idp.endpoint("/jwks"),
        scopes: super::dev_idp::SCOPES.join(" "),
        ca_pem: own_cert_pem.to_string(),
        username_claim: String::new(),
    };
    match store.find_provider_by_name("dev").await? {
        Some(cur) => {
            for uid in store.users_of_provider(&cur.id).await? {
                store.delete_access_keys_of("user", &uid).await?;
            }
            store.delete_provider_users(&cur.id).await?;
            store.update_provider(&cur.id, &new).await?;
        }
        None => {
            store.create_provider(&new).await?;
        }
    }
    // Signing in with the group `admins` makes an infra admin.
    let admins = match store.find_group_by_name("admins").await? {
        Some(g) => g.id,
        None => store.create_group("admins").await?.id,
    };
    ensure_grant(
        state,
        &Subject::Group(admins),
        INFRA_DESTINATION,
        ADMIN_ROLE,
        "dev",
    )
    .await?;
    Ok(())
}

/// Registers (or updates) the provider given by the `--oidc-issuer-*` flags.
pub async fn register_flag_provider(
    state: &AppState,
    args: &super::ServerArgs,
    url: &str,
) -> anyhow::Result<()> {
    let client_id = args.oidc_issuer_client_id.as_deref().unwrap_or_default();
    let secret = args
        .oidc_issuer_client_secret
        .as_ref()
        .map(|s| s.expose_secret())
        .unwrap_or_default();
    let ca = match &args.oidc_ca_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --oidc-ca-file {}", f.display()))?,
        None => String::new(),
    };
    let name = &args.oidc_provider_name;
    let claim = args.oidc_username_claim.as_deref().unwrap_or_default();
    let new = super::routes::providers::prepare(
        state,
        super::routes::providers::Settings {
            name,
            kind: "oidc",
            url,
            client_id,
            client_secret: secret,
            ca_pem: &ca,
            username_claim: claim,
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "--oidc-issuer-url {url}: {}",
            e.message.trim_start_matches("url: ")
        )
    })?;
    let given = super::oidc::normalize_url(url).unwrap_or_else(|_| url.to_string());
    if new.issuer.trim_end_matches('/') != given.trim_end_matches('/') {
        anyhow::bail!(
            "issuer mismatch: --oidc-issuer-url is {given} but the provider's discovery document \
             says its issuer is {}; use exactly the issuer URL the provider announces",
            new.issuer
        );
    }
    match state.store.find_provider_by_name(name).await? {
        Some(cur) => {
            state.store.update_provider(&cur.id, &new).await?;
        }
        None => {
            state.store.create_provider(&new).await?;
        }
    }
    eprintln!("registered the identity provider {name} ({given})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config file's secrets never show in `Debug` (an error, a log line).
    #[test]
    fn debug_of_the_config_file_redacts_secrets() {
        let yaml = "adminAccessKey: AbCdEf0123.Sup3rS3cretV4lue\n\
                    providers:\n  - name: okta\n    url: example.okta.com\n    clientID: x\n    \
                    clientSecret: Sup3rS3cretV4lue\n\
                    users:\n  - name: alice\n    password: Sup3rS3cretV4lue\n";
        let c: Config = serde_saphyr::from_str(yaml).unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("Sup3rS3cretV4lue"), "{shown}");
        assert_eq!(
            resolve_secret("x", c.users[0].password.as_ref().unwrap())
                .unwrap()
                .expose_secret(),
            "Sup3rS3cretV4lue"
        );
    }
}
