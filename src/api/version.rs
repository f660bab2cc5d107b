//! Version skew between a CLI (or connector) and the server.
//!
//! Both sides run the same check so their messages agree. The rule, for
//! `MAJOR.MINOR.PATCH` versions: the same major is required; a client newer
//! than the server by a minor version or more must wait for the server to
//! be upgraded; a client more than one minor version behind must upgrade.

use std::fmt;

/// This build's version.
pub const CURRENT: &str = env!("CARGO_PKG_VERSION");

/// How many minor versions behind the server a client may be.
pub const SUPPORTED_MINOR_SKEW: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skew {
    /// The header is absent.
    Missing,
    /// The header does not hold a version.
    Invalid(String),
    /// The server must be upgraded to serve this client.
    ServerTooOld { client: String, server: String },
    /// The client must be upgraded to talk to this server.
    ClientTooOld { client: String, server: String },
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skew::Missing => write!(
                f,
                "the Infra-Version header is missing: this server ({CURRENT}) needs a client that \
                 sends it; use the infra CLI {CURRENT} or set the header"
            ),
            Skew::Invalid(v) => write!(
                f,
                "the Infra-Version header {v:?} is not a version such as {CURRENT}"
            ),
            Skew::ServerTooOld { client, server } => write!(
                f,
                "the infra CLI is version {client} but the server is {server}: upgrade the server \
                 to {client} or use a CLI {server}"
            ),
            Skew::ClientTooOld { client, server } => write!(
                f,
                "the infra CLI is version {client} but the server is {server}: upgrade the CLI to \
                 {server}"
            ),
        }
    }
}

/// Checks a client's version against the server's.
pub fn check(client: Option<&str>, server: &str) -> Result<(), Skew> {
    let client = client.ok_or(Skew::Missing)?.trim();
    let c = semver::Version::parse(client).map_err(|_| Skew::Invalid(client.to_string()))?;
    let s = semver::Version::parse(server).map_err(|_| Skew::Invalid(server.to_string()))?;
    let skew = || (client.to_string(), server.to_string());
    if c.major > s.major || (c.major == s.major && c.minor > s.minor) {
        let (client, server) = skew();
        return Err(Skew::ServerTooOld { client, server });
    }
    if c.major < s.major || s.minor - c.minor > SUPPORTED_MINOR_SKEW {
        let (client, server) = skew();
        return Err(Skew::ClientTooOld { client, server });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_and_patch_skew_are_fine() {
        assert_eq!(check(Some("1.4.0"), "1.4.0"), Ok(()));
        assert_eq!(check(Some("1.4.9"), "1.4.0"), Ok(()));
        assert_eq!(check(Some("1.3.2"), "1.4.0"), Ok(()));
    }

    #[test]
    fn newer_client_needs_newer_server() {
        let err = check(Some("1.5.0"), "1.4.0").unwrap_err();
        assert!(matches!(err, Skew::ServerTooOld { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("1.5.0") && msg.contains("1.4.0") && msg.contains("upgrade the server")
        );
        assert!(matches!(
            check(Some("2.0.0"), "1.9.0"),
            Err(Skew::ServerTooOld { .. })
        ));
    }

    #[test]
    fn old_client_must_upgrade() {
        let err = check(Some("1.2.0"), "1.4.0").unwrap_err();
        assert!(err.to_string().contains("upgrade the CLI to 1.4.0"));
        assert!(matches!(
            check(Some("0.9.0"), "1.0.0"),
            Err(Skew::ClientTooOld { .. })
        ));
    }

    #[test]
    fn missing_and_garbage() {
        assert_eq!(check(None, "1.0.0"), Err(Skew::Missing));
        assert!(matches!(
            check(Some("latest"), "1.0.0"),
            Err(Skew::Invalid(_))
        ));
    }
}
