//! The CLI's config file: the non-secret state of this machine's sessions
//! (which servers it is logged in to, as whom, until when, where each access
//! key is kept and which certificate each server is trusted with). Access
//! keys themselves never go here: they live in the credential store
//! (`local::credentials`). The file is YAML, written atomically with mode
//! 0600 in a 0700 directory, and every server is keyed by its canonical
//! `host:port` form so that `infra login example.com` and
//! `infra login https://example.com:8443/` name the same session.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Name of the config file inside [`config_dir`].
pub const CONFIG_FILE: &str = "config.yaml";

/// The port `infra server` listens on by default; a bare host means it.
pub const DEFAULT_SERVER_PORT: u16 = 8443;

/// The directory holding this machine's infra files: `$INFRA_HOME` when it is
/// set (and not empty), else the platform's config directory + `infra`
/// (`~/.config/infra` on Linux, `~/Library/Application Support/infra` on
/// macOS, `%APPDATA%\infra` on Windows).
pub fn config_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("INFRA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    default_config_dir()
}

/// The platform's config directory + `infra`, whatever `INFRA_HOME` says.
pub fn default_config_dir() -> PathBuf {
    // dirs only fails when no home directory can be found at all; a relative
    // directory is then the least surprising place.
    dirs::config_dir()
        .map(|d| d.join("infra"))
        .unwrap_or_else(|| PathBuf::from(".infra"))
}

/// The path of the config file: [`config_dir`]/`config.yaml`.
pub fn config_path() -> PathBuf {
    config_dir().join(CONFIG_FILE)
}

/// Where a server's access key is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStore {
    /// The OS keyring: Secret Service on Linux, Keychain on macOS,
    /// Credential Manager on Windows.
    #[default]
    Keyring,
    /// The fallback file `credentials` (0600) in [`config_dir`].
    File,
    /// The `INFRA_ACCESS_KEY` environment variable (never written anywhere).
    Environment,
}

impl fmt::Display for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyStore::Keyring => "keyring",
            KeyStore::File => "file",
            KeyStore::Environment => "environment",
        })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One server this machine has logged in to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerEntry {
    /// Canonical `host:port` (see [`canonical_server`]); the key of the entry.
    pub server: String,
    /// `https://host:port`.
    pub url: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub user_name: String,
    /// When the access key expires, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Where the access key was stored at login.
    #[serde(default)]
    pub key_store: KeyStore,
    /// SHA-256 fingerprint (`AB:CD:…`) of the server's leaf certificate,
    /// pinned when the user accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_fingerprint: Option<String>,
    /// PEM of a CA or certificate given with `--tls-trusted-cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_cert: Option<String>,
    /// The user chose to skip TLS verification for this server.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_tls_verify: bool,
}

/// The certificate trusted for a server this machine is not logged in to
/// (any more): it belongs to the server, not to a session, so a logout
/// keeps it and the next login does not ask again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedServer {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_cert: Option<String>,
}

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Canonical `host:port` of the server commands use when none is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    pub servers: Vec<ServerEntry>,
    /// Trust kept for servers logged out of (see [`PinnedServer`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<PinnedServer>,
}

const HEADER: &str =
    "# infra CLI configuration, written by infra. Access keys are not kept here.\n";

impl Config {
    /// Reads [`config_path`]; a missing file is an empty config.
    pub fn load() -> anyhow::Result<Config> {
        Self::load_from(&config_path())
    }

    /// Reads the config file at `path`; a missing (or empty) file is an
    /// empty config, an unreadable or corrupt one an error naming the file.
    pub fn load_from(path: &Path) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the infra config file {}", path.display())
                });
            }
        };
        Self::parse(&text).map_err(|e| {
            anyhow::anyhow!(
                "the infra config file {} is not valid: {}\nfix it, or remove it and log in again",
                path.display(),
                one_line(&e)
            )
        })
    }

    fn parse(text: &str) -> Result<Config, String> {
        // Only comments and blank lines (what an empty document looks like)
        // means "nothing yet".
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(Config::default());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// Writes [`config_path`] atomically, mode 0600, directory 0700.
    pub fn save(&self) -> anyhow::Result<()> {
        self.save_to(&config_path())
    }

    /// Writes the config to `path` atomically, mode 0600, directory 0700.
    pub fn save_to(&self, path: &Path) -> anyhow::Result<()> {
        let yaml = serde_saphyr::to_string(self).context("cannot serialize the infra config")?;
        let text = format!("{HEADER}{yaml}");
        crate::fsutil::write_private(path, text.as_bytes())
            .with_context(|| format!("cannot write the infra config file {}", path.display()))
    }

    /// The entry for the canonical `server` (`host:port`).
    pub fn find(&self, server: &str) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.server == server)
    }

    /// The entry for the canonical `server`, mutable.
    pub fn find_mut(&mut self, server: &str) -> Option<&mut ServerEntry> {
        self.servers.iter_mut().find(|s| s.server == server)
    }

    /// Replaces the entry with the same `server`, or appends it. The entry
    /// holds the server's trust from now on: a kept pin goes.
    pub fn upsert(&mut self, entry: ServerEntry) {
        self.pinned.retain(|p| p.server != entry.server);
        match self.find_mut(&entry.server) {
            Some(existing) => *existing = entry,
            None => self.servers.push(entry),
        }
    }

    /// The entry for `server`, or, when this machine is not logged in there
    /// but kept the server's trust at a logout, an entry holding only that
    /// trust (no user, no key): for deciding how to trust the server.
    pub fn trust_entry(&self, server: &str) -> Option<ServerEntry> {
        if let Some(e) = self.find(server) {
            return Some(e.clone());
        }
        let p = self.pinned.iter().find(|p| p.server == server)?;
        Some(ServerEntry {
            server: p.server.clone(),
            url: String::new(),
            user_id: String::new(),
            user_name: String::new(),
            expires: None,
            key_store: KeyStore::default(),
            trusted_fingerprint: p.trusted_fingerprint.clone(),
            trusted_cert: p.trusted_cert.clone(),
            skip_tls_verify: false,
        })
    }

    /// Removes the session of `server` (as [`Config::remove`]) but keeps
    /// the certificate it trusted, pinned, for the next login.
    pub fn log_out(&mut self, server: &str) -> Option<ServerEntry> {
        let old = self.remove(server)?;
        if old.trusted_fingerprint.is_some() || old.trusted_cert.is_some() {
            self.pinned.retain(|p| p.server != server);
            self.pinned.push(PinnedServer {
                server: server.to_string(),
                trusted_fingerprint: old.trusted_fingerprint.clone(),
                trusted_cert: old.trusted_cert.clone(),
            });
        }
        Some(old)
    }

    /// Removes and returns the entry for `server`; clears `current` when it
    /// named that server.
    pub fn remove(&mut self, server: &str) -> Option<ServerEntry> {
        let i = self.servers.iter().position(|s| s.server == server)?;
        if self.current.as_deref() == Some(server) {
            self.current = None;
        }
        Some(self.servers.remove(i))
    }
}

/// The first line of a parser message (its source snippet left out), without
/// the "error: " prefix.
fn one_line(s: &str) -> String {
    let first = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Turns what a user typed as a server into its canonical `host:port` (the
/// key used in the config file and the keyring) and its `https://host:port`
/// URL.
///
/// Accepted: `host`, `host:port`, `[v6addr]`, `[v6addr]:port`, a bare IPv6
/// address, and `https://host[:port][/]`. Hosts are lowercased.
///
/// The default port depends on the form, on purpose:
/// - a bare host (`infra.example.com`) means an `infra server` as it starts,
///   which listens on 8443 by default, so the port is 8443;
/// - an `https://` URL without a port means what it means everywhere else
///   (a browser, curl): port 443, e.g. a server behind a load balancer.
///
/// `http://` is refused: the server only speaks HTTPS.
pub fn canonical_server(input: &str) -> Result<(String, String), String> {
    let input = input.trim();
    if input.is_empty() {
        return Err("no server given: expected HOST, HOST:PORT or https://HOST[:PORT]".into());
    }
    let (rest, default_port) = match input.find("://") {
        Some(i) => {
            let scheme = input[..i].to_ascii_lowercase();
            let rest = &input[i + 3..];
            match scheme.as_str() {
                "https" => {}
                "http" => {
                    return Err(format!(
                        "'{input}': infra servers only speak HTTPS; use https://{} instead",
                        rest.trim_end_matches('/')
                    ));
                }
                _ => {
                    return Err(format!(
                        "'{input}': unsupported scheme '{scheme}'; use https://HOST[:PORT] or HOST[:PORT]"
                    ));
                }
            }
            // Only an empty path or "/" is allowed: the server is the whole origin.
            let (authority, tail) = match rest.find(['/', '?', '#']) {
                Some(j) => (&rest[..j], &rest[j..]),
                None => (rest, ""),
            };
            if !(tail.is_empty() || tail == "/") {
                return Err(format!(
                    "'{input}': a server URL has no path, query or fragment; use https://HOST[:PORT]"
                ));
            }
            (authority, 443)
        }
        None => {
            if input.contains(['/', '?', '#']) {
                return Err(format!(
                    "'{input}': expected HOST, HOST:PORT or https://HOST[:PORT]"
                ));
            }
            (input, DEFAULT_SERVER_PORT)
        }
    };
    if rest.contains('@') {
        return Err(format!(
            "'{input}': a server address has no user name; use HOST[:PORT]"
        ));
    }
    let (host, port) = split_host_port(rest, input)?;
    let port = match port {
        Some(p) => p,
        None => default_port,
    };
    let server = format!("{host}:{port}");
    let url = format!("https://{server}");
    Ok((server, url))
}

/// Splits an authority into a normalized host (IPv6 in brackets) and an
/// optional port.
fn split_host_port(authority: &str, input: &str) -> Result<(String, Option<u16>), String> {
    if authority.is_empty() {
        return Err(format!("'{input}': no host name"));
    }
    // A bare IPv6 address (more than one colon, no brackets): no port possible.
    if !authority.starts_with('[') && authority.matches(':').count() > 1 {
        return match authority.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Ok((format!("[{ip}]"), None)),
            Err(_) => Err(format!(
                "'{input}': not a valid address; write IPv6 addresses in brackets, e.g. [::1]:8443"
            )),
        };
    }
    let (host, port) = if let Some(after) = authority.strip_prefix('[') {
        let end = after
            .find(']')
            .ok_or_else(|| format!("'{input}': missing ']' after the IPv6 address"))?;
        let ip: std::net::Ipv6Addr = after[..end]
            .parse()
            .map_err(|_| format!("'{input}': '{}' is not an IPv6 address", &after[..end]))?;
        let tail = &after[end + 1..];
        let port = match tail {
            "" => None,
            _ => Some(
                tail.strip_prefix(':')
                    .ok_or_else(|| format!("'{input}': expected ':PORT' after the IPv6 address"))?,
            ),
        };
        (format!("[{ip}]"), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(format!("'{input}': no host name"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
            || host.starts_with(['.', '-'])
        {
            return Err(format!("'{input}': '{host}' is not a valid host name"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                return Err(format!("'{input}': '{p}' is not a valid port (1-65535)"));
            }
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> (String, String) {
        canonical_server(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn bare_host_defaults_to_8443() {
        assert_eq!(
            ok("infra.example.com"),
            (
                "infra.example.com:8443".into(),
                "https://infra.example.com:8443".into()
            )
        );
        assert_eq!(ok("  Infra.Example.COM "), ok("infra.example.com"));
        assert_eq!(ok("localhost").0, "localhost:8443");
        assert_eq!(ok("127.0.0.1").0, "127.0.0.1:8443");
    }

    #[test]
    fn host_with_port() {
        assert_eq!(
            ok("infra.example.com:9000"),
            (
                "infra.example.com:9000".into(),
                "https://infra.example.com:9000".into()
            )
        );
        assert_eq!(ok("localhost:443").0, "localhost:443");
    }

    #[test]
    fn https_url_defaults_to_443() {
        assert_eq!(
            ok("https://infra.example.com"),
            (
                "infra.example.com:443".into(),
                "https://infra.example.com:443".into()
            )
        );
        assert_eq!(ok("https://infra.example.com/").0, "infra.example.com:443");
        assert_eq!(ok("HTTPS://Infra.Example.com/").0, "infra.example.com:443");
    }

    #[test]
    fn https_url_with_port() {
        assert_eq!(
            ok("https://infra.example.com:8443/"),
            (
                "infra.example.com:8443".into(),
                "https://infra.example.com:8443".into()
            )
        );
        // The same server, however it is written.
        assert_eq!(
            ok("https://infra.example.com:8443"),
            ok("infra.example.com")
        );
    }

    #[test]
    fn ipv6() {
        assert_eq!(
            ok("[::1]:8443"),
            ("[::1]:8443".into(), "https://[::1]:8443".into())
        );
        assert_eq!(ok("[::1]").0, "[::1]:8443");
        assert_eq!(ok("::1").0, "[::1]:8443");
        assert_eq!(ok("https://[::1]").0, "[::1]:443");
        assert_eq!(ok("https://[::1]:9443/").0, "[::1]:9443");
        assert_eq!(ok("[2001:DB8:0:0::1]:8443").0, "[2001:db8::1]:8443");
    }

    #[test]
    fn http_is_refused() {
        let e = canonical_server("http://infra.example.com").unwrap_err();
        assert!(e.contains("HTTPS"), "{e}");
        assert!(e.contains("https://infra.example.com"), "{e}");
        assert!(canonical_server("HTTP://x:80/").is_err());
    }

    #[test]
    fn empty_is_an_error() {
        assert!(canonical_server("").unwrap_err().contains("no server"));
        assert!(canonical_server("   ").is_err());
        assert!(canonical_server("https://").is_err());
        assert!(canonical_server("https:///").is_err());
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "ftp://x",
            "https://x/api",
            "https://x?a=b",
            "https://user@x",
            "x:0",
            "x:65536",
            "x:abc",
            "x:",
            ":8443",
            "[::1",
            "[::1]x",
            "[nope]:1",
            "1::2::3",
            "a b",
            "x/y",
        ] {
            assert!(canonical_server(bad).is_err(), "{bad} was accepted");
        }
    }

    fn entry(server: &str) -> ServerEntry {
        let (server, url) = canonical_server(server).unwrap();
        ServerEntry {
            server,
            url,
            user_id: "u1".into(),
            user_name: "alice@example.com".into(),
            expires: None,
            key_store: KeyStore::Keyring,
            trusted_fingerprint: None,
            trusted_cert: None,
            skip_tls_verify: false,
        }
    }

    #[test]
    fn key_store_names() {
        assert_eq!(KeyStore::Keyring.to_string(), "keyring");
        assert_eq!(KeyStore::File.to_string(), "file");
        assert_eq!(KeyStore::Environment.to_string(), "environment");
        for k in [KeyStore::Keyring, KeyStore::File, KeyStore::Environment] {
            let yaml = serde_saphyr::to_string(&k).unwrap();
            assert_eq!(yaml.trim(), k.to_string());
        }
    }

    #[test]
    fn upsert_find_remove() {
        let mut c = Config::default();
        c.upsert(entry("a.example.com"));
        c.upsert(entry("b.example.com"));
        c.current = Some("a.example.com:8443".into());
        let mut a2 = entry("a.example.com");
        a2.user_name = "bob".into();
        c.upsert(a2);
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.find("a.example.com:8443").unwrap().user_name, "bob");
        c.find_mut("b.example.com:8443").unwrap().key_store = KeyStore::File;
        assert_eq!(
            c.find("b.example.com:8443").unwrap().key_store,
            KeyStore::File
        );
        assert!(c.find("a.example.com").is_none(), "keys are canonical");
        assert!(c.remove("nope:1").is_none());
        assert_eq!(c.remove("a.example.com:8443").unwrap().user_name, "bob");
        assert_eq!(c.current, None);
        assert_eq!(c.servers.len(), 1);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(CONFIG_FILE);
        assert_eq!(Config::load_from(&path).unwrap(), Config::default());

        let mut c = Config::default();
        let mut e = entry("[::1]:8443");
        e.expires = Some("2030-01-02T03:04:05Z".into());
        e.key_store = KeyStore::File;
        e.trusted_fingerprint = Some("AB:CD:EF:01".into());
        e.trusted_cert =
            Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into());
        e.skip_tls_verify = true;
        e.user_name = "yes".into(); // a YAML 1.1 boolean look-alike must stay a string
        c.upsert(e);
        c.upsert(entry("b.example.com"));
        c.current = Some("[::1]:8443".into());
        c.save_to(&path).unwrap();
        assert_eq!(Config::load_from(&path).unwrap(), c);

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("keyStore: file"), "{text}");
        assert!(text.contains("userName:"), "{text}");
        // Optional fields are left out when unset.
        let b_part = &text[text.find("b.example.com:8443").unwrap()..];
        assert!(!b_part.contains("skipTlsVerify"), "{text}");
        assert!(!b_part.contains("expires"), "{text}");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
    }

    #[test]
    fn minimal_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, "").unwrap();
        assert_eq!(Config::load_from(&path).unwrap(), Config::default());
        std::fs::write(&path, "# nothing\n\n").unwrap();
        assert_eq!(Config::load_from(&path).unwrap(), Config::default());
        std::fs::write(
            &path,
            "servers:\n- server: x:8443\n  url: https://x:8443\n  someFutureField: 1\n",
        )
        .unwrap();
        let c = Config::load_from(&path).unwrap();
        let e = c.find("x:8443").unwrap();
        assert_eq!(e.key_store, KeyStore::Keyring);
        assert!(!e.skip_tls_verify);
        assert_eq!(c.current, None);
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, "servers: [ {server: \n  : :\n").unwrap();
        let e = Config::load_from(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("remove it"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        assert_eq!(e.lines().count(), 2, "{e}");
        std::fs::write(&path, "servers: 3\n").unwrap();
        let e = Config::load_from(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
}
