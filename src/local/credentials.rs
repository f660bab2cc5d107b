//! Where this machine keeps each server's access key: the OS keyring
//! (Secret Service over D-Bus on Linux and the BSDs, Keychain on macOS,
//! Credential Manager on Windows), or, when there is no usable keyring (a
//! headless box, a container, a locked or absent Secret Service), a private
//! fallback file `credentials` (0600, in the 0700 config directory). A key is
//! kept in exactly one of the two places, and `INFRA_ACCESS_KEY` overrides
//! both without being written anywhere.
//!
//! Keyring items have service `infra` and an account the caller names: the
//! CLI uses `USER@HOST:PORT` (one item per user and server, so two people or
//! two config dirs on one OS account never overwrite each other). On the
//! Secret Service their attributes are `service=infra username=ACCOUNT` (what
//! keyring's zbus store writes), so
//! `secret-tool lookup service infra username USER@HOST:PORT` finds them.
//!
//! Every keyring call runs on its own thread and is waited for with a
//! deadline (5 s, or `INFRA_KEYRING_TIMEOUT` seconds), so a hung D-Bus or an
//! unlock prompt nobody answers never hangs the CLI. Access keys are
//! [`SecretString`]s throughout: they never reach error text or `Debug`.
//!
//! Environment: `INFRA_ACCESS_KEY` (wins over both stores), `INFRA_NO_KEYRING`
//! (`1`: never touch the keyring, use the file), `INFRA_KEYRING_TIMEOUT`
//! (seconds, fractions allowed), `INFRA_HOME` (the directory, see
//! [`config_dir`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use keyring_core::api::CredentialStore;
use secrecy::{ExposeSecret, SecretString};

pub use super::config::KeyStore;
use super::config::config_dir;

/// The keyring service name of every item infra stores.
pub const SERVICE: &str = "infra";

/// Name of the fallback file inside [`config_dir`].
pub const CREDENTIALS_FILE: &str = "credentials";

/// How long one keyring call may take unless `INFRA_KEYRING_TIMEOUT` says otherwise.
pub const DEFAULT_KEYRING_TIMEOUT: Duration = Duration::from_secs(5);

/// Where [`store_key`] put a key, and what to tell the user about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub store: KeyStore,
    /// One line for stderr when the key did not go to the OS keyring.
    pub warning: Option<String>,
}

/// Stores `key` for the canonical `server` (`host:port`) in the OS keyring,
/// or in the fallback file when the keyring can't be used; see
/// [`Credentials::store_key`]. Settings come from the environment.
pub fn store_key(server: &str, key: &SecretString) -> anyhow::Result<Stored> {
    Credentials::from_env().store_key(server, key)
}

/// The access key for the canonical `server`: `INFRA_ACCESS_KEY` when it is
/// set, else from `hint` (where the config file says it was stored), else
/// from the other place. `Ok(None)`: there is none (log in again).
pub fn load_key(server: &str, hint: KeyStore) -> anyhow::Result<Option<(SecretString, KeyStore)>> {
    if let Some(key) = access_key_from_env() {
        return Ok(Some((key, KeyStore::Environment)));
    }
    Credentials::from_env().load_key(server, hint)
}

/// Removes the key of the canonical `server` from the keyring and the
/// fallback file; a missing entry is fine.
pub fn delete_key(server: &str) -> anyhow::Result<()> {
    Credentials::from_env().delete_key(server)
}

pub use crate::fsutil::read_key_from;

/// `INFRA_ACCESS_KEY`, trimmed, when set and not empty.
pub fn access_key_from_env() -> Option<SecretString> {
    let v = std::env::var("INFRA_ACCESS_KEY").ok()?;
    let trimmed = v.trim();
    if trimmed.is_empty() {
        return None;
    }
    let key = SecretString::from(trimmed);
    drop(SecretString::from(v)); // zeroize the untrimmed copy
    Some(key)
}

/// The two places a key can live, with explicit settings: the directory of
/// the fallback file and whether (and how patiently) to use the keyring.
/// The free functions use [`Credentials::from_env`].
#[derive(Debug, Clone)]
pub struct Credentials {
    dir: PathBuf,
    keyring: KeyringMode,
}

#[derive(Debug, Clone)]
enum KeyringMode {
    Use { timeout: Duration },
    Off { reason: String },
}

impl Credentials {
    /// The keyring (default timeout) and the fallback file in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Credentials {
            dir: dir.into(),
            keyring: KeyringMode::Use {
                timeout: DEFAULT_KEYRING_TIMEOUT,
            },
        }
    }

    /// [`config_dir`], with `INFRA_NO_KEYRING` and `INFRA_KEYRING_TIMEOUT`
    /// applied (an unparsable timeout means the default).
    pub fn from_env() -> Self {
        let mut c = Credentials::new(config_dir());
        if let Some(secs) = std::env::var("INFRA_KEYRING_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
        {
            c = c.with_keyring_timeout(Duration::from_secs_f64(secs));
        }
        if let Ok(v) = std::env::var("INFRA_NO_KEYRING") {
            let v = v.trim().to_ascii_lowercase();
            if !matches!(v.as_str(), "" | "0" | "false" | "no") {
                c = c.without_keyring("INFRA_NO_KEYRING is set");
            }
        }
        c
    }

    /// Never touch the keyring: keys go to the file. `reason` ends up in the
    /// warning of [`Credentials::store_key`].
    pub fn without_keyring(mut self, reason: impl Into<String>) -> Self {
        self.keyring = KeyringMode::Off {
            reason: reason.into(),
        };
        self
    }

    /// How long one keyring call may take.
    pub fn with_keyring_timeout(mut self, timeout: Duration) -> Self {
        if let KeyringMode::Use { .. } = self.keyring {
            self.keyring = KeyringMode::Use { timeout };
        }
        self
    }

    /// The fallback file: `DIR/credentials`.
    pub fn file_path(&self) -> PathBuf {
        self.dir.join(CREDENTIALS_FILE)
    }

    /// The keyring's account for `account` (`user@host:port`): the keyring
    /// is one per OS account, so a config home other than the default one
    /// (`INFRA_HOME`) adds its tag, and two homes logged in as the same
    /// person never overwrite each other's key. (The default home keeps
    /// the plain name, as older versions wrote it.)
    pub fn keyring_account(&self, account: &str) -> String {
        if self.dir == crate::local::config::default_config_dir() {
            return account.to_string();
        }
        format!(
            "{account} {}",
            crate::local::token_cache::home_tag(&self.dir)
        )
    }

    /// Stores `key` for `server` in the keyring and removes any copy from
    /// the file; when the keyring can't be used, stores it in the file
    /// (0600, directory 0700), removes any copy from the keyring it can
    /// reach, and returns a one-line warning saying so.
    pub fn store_key(&self, server: &str, key: &SecretString) -> anyhow::Result<Stored> {
        check_server(server)?;
        if key.expose_secret().trim().is_empty() {
            anyhow::bail!("refusing to store an empty access key for {server}");
        }
        // What to say about the keyring, and whether it answers at all.
        let (what, reason, keyring_reachable) = match &self.keyring {
            KeyringMode::Off { reason } => ("the OS keyring is not used", reason.clone(), None),
            KeyringMode::Use { timeout } => {
                let (s, k) = (self.keyring_account(server), key.clone());
                match call(*timeout, move || kr_set(&s, &k)) {
                    Ok(()) => {
                        self.remove_from_file(server).with_context(|| {
                            format!(
                                "the access key for {server} is now in the OS keyring, but the old copy could not be removed from {}",
                                self.file_path().display()
                            )
                        })?;
                        return Ok(Stored {
                            store: KeyStore::Keyring,
                            warning: None,
                        });
                    }
                    Err(KrError::Unavailable(r)) => ("the OS keyring is not available", r, None),
                    Err(KrError::Failed(r)) => {
                        ("the OS keyring is not available", r, Some(*timeout))
                    }
                }
            }
        };
        let path = self.file_path();
        let mut keys = read_file(&path)?;
        keys.insert(server.to_string(), key.clone());
        write_file(&path, &keys)?;
        // One copy only: an older key for this server may still be in a
        // keyring that answers but could not store (e.g. it is read-only).
        if let Some(timeout) = keyring_reachable {
            let s = server.to_string();
            let _ = call(timeout, move || kr_delete(&s));
        }
        Ok(Stored {
            store: KeyStore::File,
            warning: Some(format!(
                "{what} ({reason}); the access key is stored in {} (readable only by you)",
                path.display()
            )),
        })
    }

    /// The key for `server`, looked for first where `hint` says, then in the
    /// other place (`Environment` as a hint means keyring first). When it is
    /// in neither and the keyring could not be read although the hint
    /// pointed at it, that is an error (rather than "log in again").
    pub fn load_key(
        &self,
        server: &str,
        hint: KeyStore,
    ) -> anyhow::Result<Option<(SecretString, KeyStore)>> {
        check_server(server)?;
        let order = match hint {
            KeyStore::File => [KeyStore::File, KeyStore::Keyring],
            KeyStore::Keyring | KeyStore::Environment => [KeyStore::Keyring, KeyStore::File],
        };
        let mut keyring_error = None;
        for place in order {
            match place {
                KeyStore::File => {
                    if let Some(key) = read_file(&self.file_path())?.remove(server) {
                        return Ok(Some((key, KeyStore::File)));
                    }
                }
                _ => {
                    let KeyringMode::Use { timeout } = self.keyring else {
                        continue;
                    };
                    let s = self.keyring_account(server);
                    // Keys stored before homes were told apart, under the
                    // plain name, are still found.
                    let legacy = (s != server).then(|| server.to_string());
                    match call(timeout, move || match kr_get(&s)? {
                        Some(key) => Ok(Some(key)),
                        None => match legacy {
                            Some(l) => kr_get(&l),
                            None => Ok(None),
                        },
                    }) {
                        Ok(Some(key)) => return Ok(Some((key, KeyStore::Keyring))),
                        Ok(None) => {}
                        Err(e) => keyring_error = Some(e.reason()),
                    }
                }
            }
        }
        match keyring_error {
            Some(reason) if hint != KeyStore::File => Err(anyhow::anyhow!(
                "cannot read the access key for {server} from the OS keyring ({reason}); \
                 unlock the keyring and retry, set INFRA_ACCESS_KEY, or run 'infra login {server}'"
            )),
            _ => Ok(None),
        }
    }

    /// Removes the key of `server` from the file and from the keyring. A
    /// missing entry, or a keyring that is not there at all, is fine; a
    /// keyring that is there but refuses is an error (after the file copy
    /// is gone).
    pub fn delete_key(&self, server: &str) -> anyhow::Result<()> {
        check_server(server)?;
        let file = self.remove_from_file(server);
        if let KeyringMode::Use { timeout } = self.keyring {
            let s = self.keyring_account(server);
            match call(timeout, move || kr_delete(&s)) {
                Ok(_) | Err(KrError::Unavailable(_)) => {}
                Err(KrError::Failed(reason)) => {
                    file?;
                    anyhow::bail!(
                        "cannot remove the access key for {server} from the OS keyring ({reason}); \
                         remove the item with service '{SERVICE}' and account '{server}' with your keyring manager"
                    );
                }
            }
        }
        file
    }

    fn remove_from_file(&self, server: &str) -> anyhow::Result<()> {
        let path = self.file_path();
        let mut keys = read_file(&path)?;
        if keys.remove(server).is_some() {
            write_file(&path, &keys)?;
        }
        Ok(())
    }
}

/// The account a key is stored under: normally the canonical `host:port`;
/// anything not empty and without control characters is accepted.
fn check_server(server: &str) -> anyhow::Result<()> {
    if server.trim().is_empty() || server.chars().any(char::is_control) {
        anyhow::bail!("{server:?} is not a valid account for an access key (expected host:port)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The fallback file: a YAML map `host:port: key`.
// ---------------------------------------------------------------------------

const FILE_HEADER: &str = "# infra access keys, used because the OS keyring was not available.\n\
# Keep this file private (mode 0600). Each line: HOST:PORT: ACCESS-KEY\n";

fn read_file(path: &Path) -> anyhow::Result<BTreeMap<String, SecretString>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => SecretString::from(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read the infra credentials file {}", path.display())
            });
        }
    };
    let text = text.expose_secret();
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(BTreeMap::new());
    }
    // The parser's message may quote the file, which holds secrets: leave it out.
    let parsed: BTreeMap<String, String> = serde_saphyr::from_str(text).map_err(|_| {
        anyhow::anyhow!(
            "the infra credentials file {} is not a valid map of server to access key; \
             fix it, or remove it and log in again",
            path.display()
        )
    })?;
    Ok(parsed
        .into_iter()
        .map(|(server, key)| (server, SecretString::from(key)))
        .collect())
}

fn write_file(path: &Path, keys: &BTreeMap<String, SecretString>) -> anyhow::Result<()> {
    if keys.is_empty() {
        return match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot remove the infra credentials file {}",
                    path.display()
                )
            }),
        };
    }
    let plain: BTreeMap<&str, &str> = keys
        .iter()
        .map(|(s, k)| (s.as_str(), k.expose_secret()))
        .collect();
    let yaml = SecretString::from(
        serde_saphyr::to_string(&plain)
            .map_err(|_| anyhow::anyhow!("cannot serialize the infra credentials"))?,
    );
    let text = SecretString::from(format!("{FILE_HEADER}{}", yaml.expose_secret()));
    crate::fsutil::write_private(path, text.expose_secret().as_bytes())
        .with_context(|| format!("cannot write the infra credentials file {}", path.display()))
}

// ---------------------------------------------------------------------------
// The OS keyring, through keyring 4 (keyring-core + the platform store).
// ---------------------------------------------------------------------------

/// Why a keyring call did not succeed. `Unavailable`: there is no usable
/// keyring at all (no store, no D-Bus, no answer in time), so nothing in it
/// can be reached either. `Failed`: the keyring is there but the call failed.
/// Both carry one line with no secret in it.
#[derive(Debug)]
enum KrError {
    Unavailable(String),
    Failed(String),
}

impl KrError {
    fn reason(self) -> String {
        match self {
            KrError::Unavailable(r) | KrError::Failed(r) => r,
        }
    }
}

/// Set once a keyring call timed out: later calls in this process give up at
/// once instead of waiting again for a keyring that doesn't answer.
static GAVE_UP: OnceLock<String> = OnceLock::new();

/// Runs `f` on its own thread and waits at most `timeout` for it.
fn call<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> Result<T, KrError> + Send + 'static,
) -> Result<T, KrError> {
    call_with(&GAVE_UP, timeout, f)
}

fn call_with<T: Send + 'static>(
    gave_up: &OnceLock<String>,
    timeout: Duration,
    f: impl FnOnce() -> Result<T, KrError> + Send + 'static,
) -> Result<T, KrError> {
    if let Some(reason) = gave_up.get() {
        return Err(KrError::Unavailable(reason.clone()));
    }
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("infra-keyring".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| KrError::Unavailable(format!("cannot start a thread for it: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => {
            // The thread is left behind; it holds nothing we wait for.
            let reason = format!(
                "it did not answer within {}",
                humantime::format_duration(timeout)
            );
            let _ = gave_up.set(reason.clone());
            Err(KrError::Unavailable(reason))
        }
        Err(RecvTimeoutError::Disconnected) => {
            Err(KrError::Failed("the keyring call crashed".into()))
        }
    }
}

/// The platform's credential store, selected explicitly: keyring 4's `v1`
/// layer picks the Secret Service (zbus, pure Rust) on Linux and the BSDs,
/// Keychain on macOS and Credential Manager on Windows, and makes it
/// keyring-core's default. keyring-core also has an in-memory mock store
/// that keeps nothing across processes; refuse it should it ever be the
/// default.
fn platform_store() -> Result<Arc<CredentialStore>, KrError> {
    if let Err(e) = keyring::Entry::store_status() {
        return Err(KrError::Unavailable(format!(
            "cannot connect to it: {}",
            describe(e)
        )));
    }
    let store = keyring_core::get_default_store()
        .ok_or_else(|| KrError::Unavailable("no credential store is set up".into()))?;
    if store.as_any().is::<keyring_core::mock::Store>() {
        return Err(KrError::Unavailable(
            "only an in-memory mock credential store is set up".into(),
        ));
    }
    Ok(store)
}

fn entry(server: &str) -> Result<keyring_core::Entry, KrError> {
    let store = platform_store()?;
    // The Secret Service store takes a label for keyring UIs (seahorse); the
    // other stores refuse unknown modifiers.
    #[cfg(all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    ))]
    let label = format!("infra access key for {server}");
    #[cfg(all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    ))]
    let modifiers = HashMap::from([("label", label.as_str())]);
    #[cfg(not(all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    )))]
    let modifiers: HashMap<&str, &str> = HashMap::new();
    store
        .build(SERVICE, server, Some(&modifiers))
        .map_err(|e| KrError::Failed(describe(&e)))
}

fn kr_set(server: &str, key: &SecretString) -> Result<(), KrError> {
    let e = entry(server)?;
    match e.set_password(key.expose_secret()) {
        Ok(()) => Ok(()),
        // Duplicates (e.g. made by another tool): replace them all by one.
        Err(keyring_core::Error::Ambiguous(items)) => {
            for item in items {
                item.delete_credential()
                    .map_err(|e| KrError::Failed(describe(&e)))?;
            }
            e.set_password(key.expose_secret())
                .map_err(|e| KrError::Failed(describe(&e)))
        }
        Err(err) => Err(KrError::Failed(describe(&err))),
    }
}

fn kr_get(server: &str) -> Result<Option<SecretString>, KrError> {
    match entry(server)?.get_password() {
        Ok(p) => Ok(Some(SecretString::from(p))),
        Err(keyring_core::Error::NoEntry) => Ok(None),
        Err(e) => Err(KrError::Failed(describe(&e))),
    }
}

/// `Ok(true)` when something was deleted.
fn kr_delete(server: &str) -> Result<bool, KrError> {
    match entry(server)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring_core::Error::NoEntry) => Ok(false),
        Err(keyring_core::Error::Ambiguous(items)) => {
            for item in items {
                item.delete_credential()
                    .map_err(|e| KrError::Failed(describe(&e)))?;
            }
            Ok(true)
        }
        Err(e) => Err(KrError::Failed(describe(&e))),
    }
}

/// One line about a keyring error, never the secret bytes some variants carry.
fn describe(e: &keyring_core::Error) -> String {
    use keyring_core::Error as E;
    let s = match e {
        E::PlatformFailure(inner) => inner.to_string(),
        E::NoStorageAccess(inner) => format!("it is locked or refused access: {inner}"),
        E::BadEncoding(_) => "the stored value is not text".to_string(),
        E::BadDataFormat(_, _) => "the stored value is malformed".to_string(),
        E::Ambiguous(items) => format!("{} keyring items match", items.len()),
        E::NoDefaultStore => "no credential store is set up".to_string(),
        other => other.to_string(),
    };
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.is_empty() {
        "unknown keyring error".to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        }
        #[cfg(not(unix))]
        {
            let _ = p;
            0
        }
    }

    #[test]
    fn file_store_round_trip_without_keyring() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("infra");
        let c = Credentials::new(&dir).without_keyring("for the test");
        let key = SecretString::from("k1.secret-value");

        let stored = c.store_key("a.example:8443", &key).unwrap();
        assert_eq!(stored.store, KeyStore::File);
        let w = stored.warning.unwrap();
        assert!(w.contains("for the test"), "{w}");
        assert!(w.contains(&c.file_path().display().to_string()), "{w}");
        if cfg!(unix) {
            assert_eq!(mode(&c.file_path()), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }

        c.store_key("b.example:443", &SecretString::from("k2"))
            .unwrap();
        let (got, from) = c
            .load_key("a.example:8443", KeyStore::Keyring)
            .unwrap()
            .unwrap();
        assert_eq!(got.expose_secret(), "k1.secret-value");
        assert_eq!(from, KeyStore::File);
        assert!(c.load_key("c.example:1", KeyStore::File).unwrap().is_none());

        c.delete_key("a.example:8443").unwrap();
        c.delete_key("a.example:8443").unwrap(); // missing is fine
        assert!(
            c.load_key("a.example:8443", KeyStore::File)
                .unwrap()
                .is_none()
        );
        let (got, _) = c
            .load_key("b.example:443", KeyStore::File)
            .unwrap()
            .unwrap();
        assert_eq!(got.expose_secret(), "k2");
        c.delete_key("b.example:443").unwrap();
        assert!(
            !c.file_path().exists(),
            "an empty credentials file is removed"
        );
    }

    #[test]
    fn awkward_keys_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Credentials::new(tmp.path()).without_keyring("test");
        let odd = "Alice Smith@a.example:8443";
        c.store_key(odd, &SecretString::from("k")).unwrap();
        assert!(c.load_key(odd, KeyStore::File).unwrap().is_some());
        for (i, k) in ["yes", "null", "123", "a: b", "#x", " - [x]", "'\"\\"]
            .iter()
            .enumerate()
        {
            let server = format!("[::1]:{}", 1000 + i);
            c.store_key(&server, &SecretString::from(*k)).unwrap();
            let (got, _) = c.load_key(&server, KeyStore::File).unwrap().unwrap();
            // Keys are trimmed by nobody here: what goes in comes out.
            assert_eq!(got.expose_secret(), *k, "{k}");
        }
    }

    #[test]
    fn corrupt_file_error_names_file_but_not_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Credentials::new(tmp.path()).without_keyring("test");
        std::fs::write(c.file_path(), "x:1: [supersecret\n").unwrap();
        let e = format!("{:#}", c.load_key("x:1", KeyStore::File).unwrap_err());
        assert!(e.contains(&c.file_path().display().to_string()), "{e}");
        assert!(!e.contains("supersecret"), "{e}");
        assert!(e.contains("remove it"), "{e}");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let key = SecretString::from("hunter2-topsecret");
        assert!(!format!("{key:?}").contains("hunter2"));
        let c = Credentials::new("/nonexistent").without_keyring("x");
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = c.store_key("", &key).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let e = describe(&keyring_core::Error::BadEncoding(b"hunter2".to_vec()));
        assert!(!e.contains("hunter2"), "{e}");
        let e = describe(&keyring_core::Error::BadDataFormat(
            b"hunter2".to_vec(),
            "bad".into(),
        ));
        assert!(!e.contains("hunter2"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let c = Credentials::new(tmp.path()).without_keyring("x");
        let stored = c.store_key("x:1", &key).unwrap();
        assert!(!format!("{stored:?}").contains("hunter2"));
        let loaded = c.load_key("x:1", KeyStore::File).unwrap();
        assert!(!format!("{loaded:?}").contains("hunter2"));
    }

    #[test]
    fn empty_key_and_bad_server_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Credentials::new(tmp.path()).without_keyring("test");
        assert!(c.store_key("x:1", &SecretString::from("  ")).is_err());
        assert!(c.store_key("x\n1", &SecretString::from("k")).is_err());
        assert!(c.store_key(" ", &SecretString::from("k")).is_err());
        assert!(!c.file_path().exists());
    }

    #[test]
    fn timeout_gives_up() {
        let gave_up = OnceLock::new();
        let started = std::time::Instant::now();
        let r: Result<(), KrError> = call_with(&gave_up, Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(10));
            Ok(())
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        match r {
            Err(KrError::Unavailable(reason)) => {
                assert!(reason.contains("did not answer within 50ms"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Later calls don't wait again.
        let r: Result<(), KrError> = call_with(&gave_up, Duration::from_secs(60), || Ok(()));
        assert!(matches!(r, Err(KrError::Unavailable(_))));
        // A fast call is not affected by a timeout elsewhere.
        let r = call_with(&OnceLock::new(), Duration::from_secs(5), || Ok(7));
        assert_eq!(r.unwrap(), 7);
    }
}
