//! What the CLI and the server share on the browser's side of sign-in,
//! beyond the wire contract in `api`: the secrets of one OAuth attempt
//! (state, nonce, PKCE verifier) and the provider's authorization URL built
//! from them, random tokens, and HTML escaping for hand-made pages.
//!
//! The CLI's loopback sign-in (`login`) and the server's own web sign-in
//! (the device flow, the console, the development provider) both use it,
//! so neither side imports the other.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// 256 random bits, base64url: state, nonces, PKCE verifiers, CSRF tokens.
/// A number in [0, 1) from the system's generator (for jitter).
pub fn random_fraction() -> f64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 4];
    match SystemRandom::new().fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.0,
    }
}

pub fn random_token() -> String {
    random_string_b64(32)
}

/// `n` random bytes from the system's generator, base64url.
pub fn random_string_b64(n: usize) -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system random generator failed");
    URL_SAFE_NO_PAD.encode(b)
}

/// `len` characters drawn uniformly from `alphabet` with the system's
/// generator (ids, user codes, key secrets).
pub fn random_from(len: usize, alphabet: &[u8]) -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    assert!(!alphabet.is_empty() && alphabet.len() <= 256);
    let rng = SystemRandom::new();
    // Rejection sampling: bytes past the last whole multiple of the
    // alphabet's size would favour its first letters.
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf)
            .expect("the system random generator failed");
        for &b in &buf {
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// The PKCE S256 challenge of a verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The secrets of one sign-in attempt.
pub struct Attempt {
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
    pub redirect_url: String,
    /// Ask the provider to authenticate the person again, whatever session
    /// it holds (`max_age=0`, `prompt=login`), for a fresh `auth_time`.
    pub reauth: bool,
}

impl Attempt {
    /// An attempt whose provider answers the CLI's loopback listener.
    pub fn new(port: u16) -> Attempt {
        Attempt::to(format!("http://localhost:{port}"))
    }

    /// An attempt whose provider answers `redirect_url`.
    pub fn to(redirect_url: String) -> Attempt {
        Attempt {
            state: random_token(),
            nonce: random_token(),
            code_verifier: random_token(),
            redirect_url,
            reauth: false,
        }
    }

    /// The provider's authorization URL for this attempt.
    pub fn authorization_url(
        &self,
        auth_url: &str,
        client_id: &str,
        scopes: &[String],
    ) -> anyhow::Result<String> {
        let mut url = url::Url::parse(auth_url).map_err(|e| {
            anyhow::anyhow!("the provider's authorization URL {auth_url:?} is not valid: {e}")
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", client_id)
                .append_pair("redirect_uri", &self.redirect_url)
                .append_pair("scope", &scopes.join(" "))
                .append_pair("state", &self.state)
                .append_pair("nonce", &self.nonce)
                .append_pair("code_challenge", &pkce_challenge(&self.code_verifier))
                .append_pair("code_challenge_method", "S256");
            // Providers that follow oidc-provider grant offline_access (a
            // refresh token, for the server's re-checks) only with consent.
            let consent = scopes.iter().any(|s| s == "offline_access");
            if self.reauth {
                // A new authentication, which the ID token's auth_time
                // then shows (OpenID Connect Core §3.1.2.1).
                q.append_pair("max_age", "0");
                q.append_pair("prompt", if consent { "login consent" } else { "login" });
            } else if consent {
                q.append_pair("prompt", "consent");
            }
        }
        Ok(url.to_string())
    }
}

/// Compares two secrets in constant time.
pub fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The Content-Security-Policy source that allows one inline style or
/// script: `'sha256-…'` of its text.
pub fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text))
    )
}

/// A whole page, as every hand-made page of infra's is shaped: UTF-8, a
/// viewport for phones, no referrer, the title (escaped), one inline style
/// (allow it with [`csp_hash`]) and the body (HTML, already escaped).
pub fn document(title: &str, style: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>infra: {}</title><style>{style}</style></head><body>{body}</body></html>",
        html_escape(title)
    )
}

/// Escapes text for HTML content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        let s = random_from(1000, b"abc");
        assert_eq!(s.len(), 1000);
        for c in ['a', 'b', 'c'] {
            let n = s.chars().filter(|&x| x == c).count();
            assert!((200..=466).contains(&n), "{c}: {n}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
