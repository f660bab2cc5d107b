//! Cluster tokens: short-lived ES256 JWTs that connectors verify against
//! the server's JWKS.
//!
//! Signing keys live in the store, encrypted with the root key, one per
//! rotation epoch; a replica that needs the current epoch's key either
//! finds it or creates it (the epoch is UNIQUE, so exactly one replica
//! wins). A key stays published until the last token it signed expired.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use super::crypto::RootKey;
use super::store::{self, NewSigningKey, SigningKeyRow, Store};

/// The claims of a cluster token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub name: String,
    pub groups: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The access key the token was minted with: a connector asks whether
    /// it still stands (`POST /api/access/check`) to cut open streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Whom a token is for, and where.
pub struct Minted<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub subject: &'a str,
    pub name: &'a str,
    pub groups: Vec<String>,
    /// The token expires no later than this (Unix seconds): the end of the
    /// window a grant gives a sign-in.
    pub not_after: Option<i64>,
    /// The access key asking.
    pub key_id: Option<&'a str>,
}

/// The current epoch's key, parsed once: ring's key pair, ready to sign,
/// and the token header naming it, already encoded. Replaced when the epoch
/// (and so the key) rotates.
struct CachedKey {
    epoch: i64,
    pair: EcdsaKeyPair,
    /// `base64url(header) + "."`, the start of every token it signs.
    header: String,
}

/// Mints tokens with the current epoch's key.
pub struct Signer {
    rotation: Duration,
    ttl: Duration,
    cache: Mutex<Option<Arc<CachedKey>>>,
    rng: SystemRandom,
}

impl Signer {
    pub fn new(rotation: Duration, ttl: Duration) -> Signer {
        Signer {
            rotation: rotation.max(Duration::from_secs(1)),
            ttl,
            cache: Mutex::new(None),
            rng: SystemRandom::new(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn epoch(&self, now: i64) -> i64 {
        now / self.rotation.as_secs() as i64
    }

    /// The key for the current epoch, from the cache, the store, or new.
    /// The cache holds one epoch's key: the first call of a new epoch reads
    /// (or makes) that epoch's key and replaces it.
    async fn current(&self, store: &Store, root: &RootKey) -> anyhow::Result<Arc<CachedKey>> {
        let now = store::now();
        let epoch = self.epoch(now);
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && c.epoch == epoch
        {
            return Ok(c.clone());
        }
        let SigningKeyRow {
            id: kid,
            private_enc,
        } = match store.find_signing_key(epoch).await? {
            Some(k) => k,
            None => {
                self.create(store, root, epoch, now).await?;
                // This replica's key, or the one another replica stored first.
                store
                    .find_signing_key(epoch)
                    .await?
                    .ok_or(store::StoreError::NotFound("signing key"))?
            }
        };
        let der = URL_SAFE_NO_PAD.decode(secrecy::ExposeSecret::expose_secret(
            &root.decrypt(&private_enc)?,
        ))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &self.rng)
            .map_err(|e| anyhow::anyhow!("cannot load the signing key {kid}: {e}"))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid);
        let header = format!("{}.", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?));
        let key = Arc::new(CachedKey {
            epoch,
            pair,
            header,
        });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Never step back to an older epoch's key (a request that read the
        // clock just before the rotation may finish after one that did not).
        if cache.as_ref().is_none_or(|c| c.epoch <= epoch) {
            *cache = Some(key.clone());
        }
        Ok(key)
    }

    async fn create(
        &self,
        store: &Store,
        root: &RootKey,
        epoch: i64,
        now: i64,
    ) -> anyhow::Result<()> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate a signing key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("cannot load the new signing key"))?;
        let public = pair.public_key().as_ref();
        let kid = store::random_string(16, b"abcdefghijklmnopqrstuvwxyz0123456789");
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        });
        // Signs until the epoch ends; published until its tokens expire.
        let epoch_end = (epoch + 1) * self.rotation.as_secs() as i64;
        let publish_until = epoch_end + self.ttl.as_secs() as i64 + 300;
        store
            .create_signing_key(&NewSigningKey {
                id: &kid,
                epoch,
                private_enc: &root.encrypt(&URL_SAFE_NO_PAD.encode(pkcs8.as_ref())),
                public_jwk: &jwk.to_string(),
                created_at: now,
                publish_until,
            })
            .await?;
        Ok(())
    }

    /// Signs a token for `who` on `who.audience`.
    pub async fn mint(
        &self,
        store: &Store,
        root: &RootKey,
        who: Minted<'_>,
    ) -> anyhow::Result<(String, i64)> {
        let key = self.current(store, root).await?;
        let now = store::now();
        let mut exp = now + self.ttl.as_secs() as i64;
        if let Some(limit) = who.not_after {
            exp = exp.min(limit.max(now));
        }
        let claims = Claims {
            iss: who.issuer.to_string(),
            aud: who.audience.to_string(),
            sub: who.subject.to_string(),
            name: who.name.to_string(),
            groups: who.groups,
            iat: now,
            nbf: now - 30,
            exp,
            jti: store::new_id(),
            sid: who.key_id.map(str::to_string),
        };
        // A JWS in compact form, as `jsonwebtoken::encode` makes it, signed
        // by the key parsed once per epoch rather than once per token.
        let mut token = key.header.clone();
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(&claims)?, &mut token);
        let sig = key
            .pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| anyhow::anyhow!("cannot sign the token"))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut token);
        Ok((token, exp))
    }

    /// The public keys to publish, making sure the current one exists.
    pub async fn jwks(&self, store: &Store, root: &RootKey) -> anyhow::Result<serde_json::Value> {
        self.current(store, root).await?;
        let published = store.published_signing_keys().await?;
        let mut keys = Vec::with_capacity(published.len());
        for text in published {
            keys.push(serde_json::from_str::<serde_json::Value>(&text)?);
        }
        Ok(serde_json::json!({ "keys": keys }))
    }

    /// Removes keys no longer published.
    pub async fn prune(store: &Store) -> anyhow::Result<u64> {
        Ok(store.delete_retired_signing_keys().await?)
    }
}
