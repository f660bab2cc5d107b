//! The server's secrets: the root key that encrypts secrets at rest,
//! access keys (`<id>.<secret>`, only a SHA-256 of the secret stored), and
//! argon2id password hashes.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Length of the id part of an access key.
pub const KEY_ID_LEN: usize = 10;
/// Length of the secret part of an access key (≈143 bits).
pub const KEY_SECRET_LEN: usize = 24;
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Encrypts and decrypts secrets kept in the store (AES-256-GCM).
pub struct RootKey {
    key: LessSafeKey,
}

impl RootKey {
    /// Reads the key from `path`, creating it (0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<RootKey> {
        let bytes =
            if path.exists() {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the root key {}", path.display()))?;
                B64.decode(text.trim()).ok().filter(|b| b.len() == 32).with_context(|| {
                format!(
                    "the root key {} is not 32 base64-encoded bytes; restore it from a backup \
                     (secrets encrypted with it cannot be read without it)",
                    path.display()
                )
            })?
            } else {
                let mut bytes = vec![0u8; 32];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| anyhow::anyhow!("no randomness available"))?;
                crate::fsutil::write_private(path, format!("{}\n", B64.encode(&bytes)).as_bytes())
                    .with_context(|| format!("cannot write the root key {}", path.display()))?;
                bytes
            };
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<RootKey> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| anyhow::anyhow!("the root key must be 32 bytes"))?;
        Ok(RootKey {
            key: LessSafeKey::new(key),
        })
    }

    /// `v1:` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn encrypt(&self, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random generator failed");
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("AES-GCM sealing cannot fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("v1:{}", B64.encode(out))
    }

    pub fn decrypt(&self, sealed: &str) -> anyhow::Result<SecretString> {
        let data = sealed
            .strip_prefix("v1:")
            .and_then(|b| B64.decode(b).ok())
            .filter(|d| d.len() > NONCE_LEN)
            .context("an encrypted value in the store is malformed")?;
        let (nonce, rest) = data.split_at(NONCE_LEN);
        let mut buf = rest.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("nonce length checked");
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot decrypt a secret in the store: the root key is not the one it was \
                     encrypted with (servers sharing one database must share the root key: give \
                     each the same --root-key-file)"
                )
            })?;
        Ok(SecretString::from(
            String::from_utf8(plain.to_vec()).context("decrypted secret is not UTF-8")?,
        ))
    }
}

/// A freshly made access key and what the store keeps of it.
pub struct NewKey {
    pub id: String,
    pub secret_hash: String,
    /// The whole key, `<id>.<secret>`, shown once.
    pub key: SecretString,
}

pub fn generate_access_key() -> NewKey {
    let id = random_token(KEY_ID_LEN);
    let secret = random_token(KEY_SECRET_LEN);
    NewKey {
        secret_hash: hash_secret(&secret),
        key: SecretString::from(format!("{id}.{secret}")),
        id,
    }
}

/// Splits `<id>.<secret>`, checking the shape; the secret stays borrowed.
pub fn parse_access_key(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.trim().split_once('.')?;
    let ok = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (ok(id, KEY_ID_LEN) && ok(secret, KEY_SECRET_LEN)).then_some((id, secret))
}

/// The access-key shape, for error messages.
pub fn access_key_shape() -> String {
    format!("<{KEY_ID_LEN} letters or digits>.<{KEY_SECRET_LEN} letters or digits>")
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    crate::web::ct_eq(&hash_secret(secret), stored_hash)
}

fn random_token(len: usize) -> String {
    crate::web::random_from(len, KEY_ALPHABET)
}

pub fn hash_password(password: &SecretString) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| anyhow::anyhow!("bad salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// Verifies a password; with no stored hash it still spends the same time,
/// so a response's timing does not tell whether the user exists.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY
        .get_or_init(|| hash_password(&SecretString::from("not-a-password")).unwrap_or_default());
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (dummy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_keys_round_trip() {
        let k = generate_access_key();
        let (id, secret) = parse_access_key(k.key.expose_secret()).unwrap();
        assert_eq!(id, k.id);
        assert!(secret_matches(secret, &k.secret_hash));
        assert!(!secret_matches("x", &k.secret_hash));
        assert!(parse_access_key("abc.def").is_none());
        assert!(parse_access_key("").is_none());
    }

    #[test]
    fn encryption_round_trip_and_wrong_key() {
        let a = RootKey::from_bytes(&[7u8; 32]).unwrap();
        let b = RootKey::from_bytes(&[8u8; 32]).unwrap();
        let sealed = a.encrypt("client-secret");
        assert!(!sealed.contains("client-secret"));
        assert_eq!(a.decrypt(&sealed).unwrap().expose_secret(), "client-secret");
        assert!(b.decrypt(&sealed).is_err());
        assert_ne!(a.encrypt("x"), a.encrypt("x"), "nonces must differ");
    }

    #[test]
    fn passwords() {
        let h = hash_password(&SecretString::from("hunter2")).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("hunter2", Some(&h)));
        assert!(!verify_password("hunter3", Some(&h)));
        assert!(!verify_password("not-a-password", None));
    }
}
