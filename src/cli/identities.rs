//! `infra identities`: machine identities and their oidc-auth
//! configuration (admins); and the machine side of `infra login
//! --method=oidc-auth`, which trades a workload's OIDC JWT for an access
//! token. The machine login lives here, beside the identities it logs in
//! as, rather than in `login.rs`: it has its own output contract
//! (`--plain`, `--silent`) for pipelines.

use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};

use super::kubeconfig::write_kubeconfig_with;
use super::login::LoginArgs;
use super::output::{self, Format, FormatArg, short_time};
use super::session::{ServerArg, account, forget_cached_tokens, resolve, update_config};
use super::trust::decide_trust;
use super::{AuthNeeded, Usage};
use crate::api::{self, Identity, MachineAccessToken, OidcAuth};
use crate::client::{Client, ClientError, Trust, enc};
use crate::local::config::{Config, KeyStore, ServerEntry, canonical_server};
use crate::local::credentials;

#[derive(Debug, Subcommand)]
pub enum IdentitiesCmd {
    /// Add a machine identity
    #[command(after_help = "Example:\n  infra identities add deploy-bot\n\n\
                            Then let it log in with its own OIDC JWT (`infra identities oidc-auth \
                            set`) and grant it access (`infra grants add prod --identity \
                            deploy-bot --role edit`).")]
    Add {
        /// Lowercase letters, digits and dashes
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List machine identities
    #[command(
        alias = "ls",
        after_help = "Examples:\n  infra identities list\n  infra identities list --format json"
    )]
    List {
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove a machine identity, with its grants and access tokens
    #[command(
        alias = "rm",
        after_help = "Example:\n  infra identities remove deploy-bot"
    )]
    Remove {
        /// The identity's name
        name: String,
        /// Succeed even if it does not exist
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// How an identity logs in with its workload's OIDC JWT
    #[command(
        subcommand,
        name = "oidc-auth",
        after_help = "A configuration must bind a workload: --subject, or --claims on an \
                      identifying claim such as project_path or repository. Patterns: * within \
                      one segment (never / or :), ** across / (never :), ? one character. See \
                      `infra identities oidc-auth set --help`."
    )]
    OidcAuth(OidcAuthCmd),
}

/// `infra identities oidc-auth set --help`, after the flags.
const SET_HELP: &str = "\
Patterns: --subject, --audiences and the values of --claims are glob patterns.
  *    any run of characters within one segment: never / nor :
  **   any run of characters across /, never :
  ?    exactly one character other than / and :
  Anything else matches itself; *** (or more) is refused. GitLab and GitHub subjects
  separate their fields with :, so no pattern reaches from one field into the next.
  A list-valued claim matches if one of its elements does.

Binding: the configuration must name the workload: --subject, or --claims on an
identifying claim (project_path, namespace_path, project_id, repository,
repository_owner, ...), with a letter or digit outside the wildcards. It is refused
otherwise: audiences alone, '*', and claims that any project's job can have (ref,
ref_type, ref_protected, environment, event_name, pipeline_source, user_login,
actor, sha, ...) accept every project of a shared issuer like gitlab.com or GitHub
Actions. Configurations saved before this rule refuse every login until fixed.

Flags left out take their defaults (the whole configuration is replaced).

Examples:
  # GitLab: the main branch of group/app
  infra identities oidc-auth set deploy-bot --discovery-url https://gitlab.com \\
    --issuer https://gitlab.com --audiences https://infra.example.com \\
    --subject 'project_path:group/app:ref_type:branch:ref:main'
  # GitLab: main of the projects directly in group (not of its subgroups)
    --subject 'project_path:group/*:ref_type:branch:ref:main'
  # GitLab: main of every project of group and of its nested subgroups
    --subject 'project_path:group/**:ref_type:branch:ref:main'
  # GitHub Actions: pushes to main of octo-org/octo-repo (not its pull requests)
  infra identities oidc-auth set gh-deploy \\
    --discovery-url https://token.actions.githubusercontent.com \\
    --issuer https://token.actions.githubusercontent.com \\
    --audiences https://infra.example.com \\
    --subject 'repo:octo-org/octo-repo:ref:refs/heads/main'
  # GitHub Actions: its jobs of the environment prod; its pull requests
    --subject 'repo:octo-org/octo-repo:environment:prod'
    --subject 'repo:octo-org/octo-repo:pull_request'
  # SPIRE: every workload under /workload/ (one segment deep)
  infra identities oidc-auth set api-server --discovery-url https://oidc.spire.example \\
    --issuer https://oidc.spire.example --ca-cert spire-ca.pem \\
    --subject 'spiffe://example.org/workload/*' --audiences infra \\
    --access-token-ttl 10m --access-token-trusted-ips 10.0.0.0/8";

#[derive(Debug, Subcommand)]
pub enum OidcAuthCmd {
    /// Set (replace) the identity's oidc-auth configuration
    #[command(after_help = SET_HELP)]
    Set(Box<SetArgs>),
    /// Show the identity's oidc-auth configuration
    #[command(
        after_help = "Examples:\n  infra identities oidc-auth show deploy-bot\n  \
                      infra identities oidc-auth show deploy-bot --format json"
    )]
    Show {
        /// The identity's name
        name: String,
        #[command(flatten)]
        format: FormatArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove the identity's oidc-auth configuration and revoke the access tokens it issued
    #[command(
        alias = "rm",
        after_help = "Example:\n  infra identities oidc-auth remove deploy-bot"
    )]
    Remove {
        /// The identity's name
        name: String,
        /// Succeed even if there is none
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

/// The flags of `infra identities oidc-auth set`.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The identity's name
    pub name: String,
    /// The issuer's URL, or the full URL of its discovery document
    #[arg(long, value_name = "URL")]
    pub discovery_url: String,
    /// The JWTs' iss, exactly
    #[arg(long, value_name = "ISS")]
    pub issuer: String,
    /// PEM file with the CA of the issuer's certificate, when it is not publicly trusted
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Pattern the JWT's sub must match
    #[arg(long, value_name = "PATTERN")]
    pub subject: Option<String>,
    /// Patterns one of which the JWT's aud must match (comma-separated)
    #[arg(long, value_name = "PATTERN,…", value_delimiter = ',')]
    pub audiences: Vec<String>,
    /// Claims the JWT must carry, NAME=PATTERN (comma-separated or repeated)
    #[arg(long, value_name = "NAME=PATTERN,…", value_delimiter = ',', value_parser = parse_claim)]
    pub claims: Vec<(String, String)>,
    /// How long an access token lasts, and how much each renewal adds
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = crate::api::parse_duration)]
    pub access_token_ttl: std::time::Duration,
    /// How long after login an access token can be renewed up to
    #[arg(long, value_name = "DURATION", default_value = "720h", value_parser = crate::api::parse_duration)]
    pub access_token_max_ttl: std::time::Duration,
    /// How many requests an access token may make (0: unlimited)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub access_token_max_uses: u64,
    /// Where the login and the access token may be used from (CIDRs, comma-separated)
    #[arg(long, value_name = "CIDR,…", value_delimiter = ',', default_values_t = api::DEFAULT_TRUSTED_IPS.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub access_token_trusted_ips: Vec<String>,
    #[command(flatten)]
    pub server: ServerArg,
}

fn parse_claim(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.is_empty() => {
            Ok((k.trim().to_string(), v.to_string()))
        }
        _ => Err(format!("{s:?} is not NAME=PATTERN, e.g. ref=main")),
    }
}

async fn identity(c: &Client, name: &str) -> anyhow::Result<Option<Identity>> {
    Ok(c.identity_by_name(name).await?)
}

async fn identity_id(c: &Client, name: &str) -> anyhow::Result<String> {
    match identity(c, name).await? {
        Some(i) => Ok(i.id),
        None => anyhow::bail!("no identity named {name:?}; see `infra identities list`"),
    }
}

fn duration(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

pub async fn run(cmd: IdentitiesCmd) -> anyhow::Result<()> {
    match cmd {
        IdentitiesCmd::Add { name, server } => {
            let s = resolve(server.server.as_deref())?;
            let i: Identity = s
                .client
                .post("/api/identities", &api::CreateIdentityRequest { name })
                .await?;
            eprintln!("Added identity {} (id {})", i.name, i.id);
        }
        IdentitiesCmd::List { format, server } => {
            let s = resolve(server.server.as_deref())?;
            let list: Vec<Identity> = s.client.list_all("/api/identities").await?;
            let rows: Vec<_> = list
                .iter()
                .map(|i| vec![i.name.clone(), i.id.clone(), short_time(&i.created)])
                .collect();
            output::list(format.format(), &list, &["NAME", "ID", "CREATED"], rows)?;
        }
        IdentitiesCmd::Remove {
            name,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let found = identity(&s.client, &name).await?.map(|i| i.id);
            super::lookup::remove_found(&s.client, found, "identities", "identity", &name, force)
                .await?;
        }
        IdentitiesCmd::OidcAuth(cmd) => oidc_auth(cmd).await?,
    }
    Ok(())
}

async fn oidc_auth(cmd: OidcAuthCmd) -> anyhow::Result<()> {
    match cmd {
        OidcAuthCmd::Set(args) => {
            let SetArgs {
                name,
                discovery_url,
                issuer,
                ca_cert,
                subject,
                audiences,
                claims,
                access_token_ttl,
                access_token_max_ttl,
                access_token_max_uses,
                access_token_trusted_ips,
                server,
            } = *args;
            if access_token_ttl > access_token_max_ttl {
                return Err(Usage(format!(
                    "--access-token-ttl ({}) must not exceed --access-token-max-ttl ({})",
                    humantime::format_duration(access_token_ttl),
                    humantime::format_duration(access_token_max_ttl)
                ))
                .into());
            }
            let ca_cert = match &ca_cert {
                Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                    anyhow::anyhow!("cannot read the CA file {}: {e}", p.display())
                })?),
                None => None,
            };
            let s = resolve(server.server.as_deref())?;
            let id = identity_id(&s.client, &name).await?;
            let req = api::OidcAuthRequest {
                discovery_url,
                issuer,
                ca_cert,
                subject: subject.unwrap_or_default(),
                audiences: audiences.into_iter().filter(|a| !a.is_empty()).collect(),
                claims: claims.into_iter().collect(),
                access_token_ttl: Some(access_token_ttl.as_secs()),
                access_token_max_ttl: Some(access_token_max_ttl.as_secs()),
                access_token_max_uses: Some(access_token_max_uses),
                access_token_trusted_ips: Some(access_token_trusted_ips),
            };
            let c: OidcAuth = match s
                .client
                .put(&format!("/api/identities/{}/oidc-auth", enc(&id)), &req)
                .await
            {
                Ok(c) => c,
                Err(ClientError::Api {
                    status: 400, body, ..
                }) => {
                    return Err(Usage(flag_names(&body.message)).into());
                }
                Err(e) => return Err(e.into()),
            };
            eprintln!(
                "Set oidc-auth of {}: JWTs from {} yield access tokens for {} (renewable up to {} \
                 after login)",
                c.identity_name,
                c.issuer,
                duration(c.access_token_ttl),
                duration(c.access_token_max_ttl)
            );
        }
        OidcAuthCmd::Show {
            name,
            format,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let id = identity_id(&s.client, &name).await?;
            let c: OidcAuth = match s
                .client
                .get(&format!("/api/identities/{}/oidc-auth", enc(&id)))
                .await
            {
                Ok(c) => c,
                Err(e) if e.is_not_found() => anyhow::bail!(
                    "{name} has no oidc-auth configuration; add one with `infra identities \
                     oidc-auth set {name}`"
                ),
                Err(e) => return Err(e.into()),
            };
            match format.format() {
                Format::Table | Format::Plain => show(&c)?,
                f => output::data(f, &c)?,
            }
        }
        OidcAuthCmd::Remove {
            name,
            force,
            server,
        } => {
            let s = resolve(server.server.as_deref())?;
            let id = match identity(&s.client, &name).await? {
                Some(i) => i.id,
                None if force => return Ok(()),
                None => anyhow::bail!("no identity named {name:?} (use --force to ignore)"),
            };
            match s
                .client
                .delete(&format!("/api/identities/{}/oidc-auth", enc(&id)))
                .await
            {
                Ok(()) => eprintln!(
                    "Removed the oidc-auth configuration of {name} and revoked its access tokens"
                ),
                Err(e) if force && e.is_not_found() => {}
                Err(e) if e.is_not_found() => {
                    anyhow::bail!("{name} has no oidc-auth configuration (use --force to ignore)")
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The server's field names, as the flags a person typed: the message
/// starts with the field (`subject: …`, or `subject or claims: …`).
fn flag_names(message: &str) -> String {
    const FLAGS: [(&str, &str); 10] = [
        ("discoveryURL", "--discovery-url"),
        ("issuer", "--issuer"),
        ("caCert", "--ca-cert"),
        ("subject", "--subject"),
        ("audiences", "--audiences"),
        ("claims", "--claims"),
        ("accessTokenTTL", "--access-token-ttl"),
        ("accessTokenMaxTTL", "--access-token-max-ttl"),
        ("accessTokenMaxUses", "--access-token-max-uses"),
        ("accessTokenTrustedIPs", "--access-token-trusted-ips"),
    ];
    let Some((fields, rest)) = message.split_once(": ") else {
        return message.to_string();
    };
    let flags: Option<Vec<&str>> = fields
        .split(" or ")
        .map(|f| {
            FLAGS
                .iter()
                .find(|(name, _)| *name == f)
                .map(|(_, flag)| *flag)
        })
        .collect();
    match flags {
        Some(flags) => format!("{}: {rest}", flags.join(" or ")),
        None => message.to_string(),
    }
}

fn show(c: &OidcAuth) -> anyhow::Result<()> {
    let or_any = |s: &str| {
        if s.is_empty() {
            "(any)".to_string()
        } else {
            s.to_string()
        }
    };
    let claims = c
        .claims
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = vec![
        vec![
            "identity".into(),
            format!("{} ({})", c.identity_name, c.identity_id),
        ],
        vec!["discovery URL".into(), c.discovery_url.clone()],
        vec!["issuer".into(), c.issuer.clone()],
        vec![
            "CA certificate".into(),
            if c.ca_cert.trim().is_empty() {
                "(system roots)".into()
            } else {
                "(custom PEM)".into()
            },
        ],
        vec!["subject".into(), or_any(&c.subject)],
        vec!["audiences".into(), or_any(&c.audiences.join(", "))],
        vec!["claims".into(), or_any(&claims)],
        vec!["access token TTL".into(), duration(c.access_token_ttl)],
        vec![
            "access token max TTL".into(),
            duration(c.access_token_max_ttl),
        ],
        vec![
            "access token max uses".into(),
            match c.access_token_max_uses {
                0 => "unlimited".into(),
                n => n.to_string(),
            },
        ],
        vec![
            "access token trusted IPs".into(),
            c.access_token_trusted_ips.join(", "),
        ],
        vec!["updated".into(), short_time(&c.updated)],
    ];
    output::table(&["SETTING", "VALUE"], rows)
}

// ------------------------------------------------------------------ machine login

/// `infra login SERVER --method=oidc-auth`: the workload's JWT in, the
/// identity's access token out. With `--plain` the token goes to stdout
/// only (the server's TLS trust is remembered, so `INFRA_ACCESS_KEY` and
/// `INFRA_SERVER` work next); otherwise it is kept like a person's key.
pub async fn machine_login(args: &LoginArgs) -> anyhow::Result<()> {
    let input = args.server.clone().ok_or_else(|| {
        Usage(
            "which server? run `infra login SERVER --method=oidc-auth …` (or set INFRA_SERVER)"
                .into(),
        )
    })?;
    let (server, url) = canonical_server(&input).map_err(|e| Usage(format!("{input:?}: {e}")))?;
    let identity = args
        .machine_identity_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Usage(
                "--method=oidc-auth needs --machine-identity-id ID (the identity's id or name)"
                    .into(),
            )
        })?;
    let jwt = args
        .oidc_jwt
        .as_ref()
        .map(|j| j.expose_secret())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Usage(
                "--method=oidc-auth needs the workload's JWT: --oidc-jwt JWT or INFRA_OIDC_JWT"
                    .into(),
            )
        })?;
    let config = Config::load()?;
    let existing = config.find(&server).cloned();
    let trust = decide_trust(args, &server, config.trust_entry(&server).as_ref()).await?;
    let client = Client::new(&url, &trust, None)?;
    let req = api::OidcAuthLoginRequest {
        identity_id: identity.to_string(),
        jwt: jwt.to_string().into(),
    };
    let resp: MachineAccessToken = match client.post("/api/v1/auth/oidc-auth/login", &req).await {
        Ok(r) => r,
        Err(e @ ClientError::Api { status: 401, .. }) => {
            return Err(AuthNeeded(format!("machine login to {server} failed: {e}")).into());
        }
        Err(e) => return Err(e.into()),
    };
    drop(req);
    let key = SecretString::from(resp.access_token.clone());
    let (trusted_fingerprint, trusted_cert, skip_tls_verify) = match &trust {
        Trust::Fingerprint(fp) => (Some(fp.clone()), None, false),
        Trust::Cert(pem) => (None, Some(pem.clone()), false),
        Trust::Insecure => (None, None, true),
        Trust::System => (None, None, false),
    };
    let expires = crate::clock::now_utc() + time::Duration::seconds(resp.expires_in as i64);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .ok();
    let mut entry = ServerEntry {
        server: server.clone(),
        url,
        user_id: resp.identity_id.clone(),
        user_name: resp.identity_name.clone(),
        expires,
        key_store: KeyStore::Environment,
        trusted_fingerprint,
        trusted_cert,
        skip_tls_verify,
    };

    if args.plain {
        // Remember only how to trust the server (no key), unless this
        // machine already knows it: someone's login there stays as it is.
        if existing.is_none() {
            update_config(|config| {
                config.upsert(entry);
                if config.current.is_none() {
                    config.current = Some(server.clone());
                }
            })?;
        }
        // Cluster tokens cached for another identity or person must not be reused.
        forget_cached_tokens(&server);
        output::line(resp.access_token.expose_secret())?;
        if !args.silent {
            eprintln!(
                "Logged in to {server} as machine identity {} (the access token expires in {})",
                resp.identity_name,
                duration(resp.expires_in)
            );
        }
        return Ok(());
    }

    // Like `infra login --key`: the key this machine held is replaced.
    if let Some(old) = &existing {
        let old_account = account(&old.user_name, &server);
        if let Ok(Some((old_key, KeyStore::Keyring | KeyStore::File))) =
            credentials::load_key(&old_account, old.key_store)
        {
            let _ = client.clone().with_key(old_key).logout().await;
        }
        credentials::delete_key(&old_account)?;
    }
    let stored = credentials::store_key(&account(&resp.identity_name, &server), &key)?;
    if let Some(w) = &stored.warning
        && !args.silent
    {
        eprintln!("warning: {w}");
    }
    entry.key_store = stored.store;
    update_config(|config| {
        config.upsert(entry);
        config.current = Some(server.clone());
    })?;
    forget_cached_tokens(&server);
    if !args.silent {
        eprintln!(
            "Logged in to {server} as machine identity {} (the access token expires in {}, \
             renewable up to {} after login)",
            resp.identity_name,
            duration(resp.expires_in),
            duration(resp.access_token_max_ttl)
        );
    }
    let client = client.with_key(key);
    let grants = format!("/api/grants?identity={}", enc(&resp.identity_id));
    write_kubeconfig_with(&client, &server, &grants, args.silent).await
}
