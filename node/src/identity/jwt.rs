//! Registry tokens: compact JWS, ES256 only, signed with the cluster's
//! token key (replicated, so every node verifies every node's tokens).
//!
//! Verification is strict: the header must say `ES256` (never `none`, never
//! an HMAC an attacker could forge with the public key), the `kid` must be a
//! key of the cluster's ring, and `aud`, `iss`, `exp` and `nbf` must hold.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "berth";
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// How long an upload grant lives: one forwarded request, started at once.
pub const UPLOAD_GRANT_TTL_SECS: u64 = 60;
/// The grant kind naming the one upload session an upload grant is for.
pub const UPLOAD_GRANT_KIND: &str = "upload";

/// The audience of upload grants: the tokens a node signs for the node
/// that owns an upload session when it forwards a request of that session
/// over plain HTTP, instead of the client's credentials. It is not the
/// cluster id, so a grant is never accepted as a registry token.
pub fn upload_grant_audience(service: &str) -> String {
    format!("{service}/upload-grant")
}

/// The audience of console sessions ([`crate::identity::session`]): not
/// the cluster id either, so a session is never taken as a registry token
/// on `/v2`, nor a registry token as a session.
pub fn session_audience(service: &str) -> String {
    format!("{service}/console-session")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not accepted (ES256 only)")]
    Algorithm(String),
    #[error("token was signed by an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token is for {0:?}, not this cluster")]
    Audience(String),
    #[error("token was issued by {0:?}")]
    Issuer(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
}

/// One granted resource, as in the Docker token spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The principal's name; empty for anonymous.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<Grant>,
    /// `user`, `robot`, `app_token` or `anonymous`.
    #[serde(default)]
    pub berth_kind: String,
    /// For `app_token`: the token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub berth_app: Option<String>,
    /// For `user` and `robot`: the account's credential generation when the
    /// token was issued. A new password or robot secret bumps it, and the
    /// token stops working at once instead of at `exp`. Absent (tokens
    /// from before generations existed): 0, an unchanged account's.
    #[serde(default)]
    pub berth_gen: u64,
}

/// Why a token-signing key does not load.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM private key")]
    NotPem,
    #[error("not a P-256 PKCS#8 key: {0}")]
    NotP256(ring::error::KeyRejected),
}

/// A P-256 signing key from its PKCS#8 PEM.
pub struct SigningKey {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl SigningKey {
    pub fn from_pem(kid: &str, pem: &str) -> Result<SigningKey, KeyError> {
        let der = pem_body(pem).ok_or(KeyError::NotPem)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new()).map_err(KeyError::NotP256)?;
        Ok(SigningKey { kid: kid.to_string(), pair })
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header { alg: "ES256".into(), typ: Some("JWT".into()), kid: Some(self.kid.clone()) };
        let signing_input =
            format!("{}.{}", B64.encode(serde_json::to_vec(&header).expect("header encodes")), B64.encode(serde_json::to_vec(claims).expect("claims encode")));
        let sig = self.pair.sign(&SystemRandom::new(), signing_input.as_bytes()).expect("ECDSA signing does not fail");
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// The header of a token, unverified (to find its key).
pub fn peek_header(token: &str) -> Result<Header, JwtError> {
    let (h, _) = token.split_once('.').ok_or(JwtError::Malformed("no '.'"))?;
    let bytes = B64.decode(h).map_err(|_| JwtError::Malformed("header is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("header is not JSON"))
}

/// Checks `token` against `public_key` (uncompressed P-256 point) and the
/// expected audience at time `now` (seconds), and returns its claims.
pub fn verify(token: &str, public_key: &[u8], audience: &str, now: u64) -> Result<Claims, JwtError> {
    check_claims(verify_signature(token, public_key)?, audience, now)
}

/// The signature check alone (the costly half of [`verify`]): the claims
/// `public_key` signed, unchecked.
fn verify_signature(token: &str, public_key: &[u8]) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("a token has three parts"));
    };
    let header = peek_header(token)?;
    if header.alg != "ES256" {
        return Err(JwtError::Algorithm(header.alg));
    }
    let sig = B64.decode(s).map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key).verify(signing_input.as_bytes(), &sig).map_err(|_| JwtError::Signature)?;
    serde_json::from_slice(&B64.decode(p).map_err(|_| JwtError::Malformed("claims are not base64url"))?)
        .map_err(|_| JwtError::Malformed("claims are not the expected JSON"))
}

/// The cheap half of [`verify`]: issuer, audience and validity window.
fn check_claims(claims: Claims, audience: &str, now: u64) -> Result<Claims, JwtError> {
    if claims.iss != ISSUER {
        return Err(JwtError::Issuer(claims.iss));
    }
    if claims.aud != audience {
        return Err(JwtError::Audience(claims.aud));
    }
    if claims.exp + LEEWAY_SECS <= now {
        return Err(JwtError::Expired);
    }
    if claims.nbf > now + LEEWAY_SECS {
        return Err(JwtError::NotYetValid);
    }
    Ok(claims)
}

/// Tokens whose signature this node has verified, so that a client
/// presenting the same token on every request of a pull (a 10-layer image
/// is a dozen requests) pays one ECDSA verification per node, not one per
/// request. Keyed by a hash of the public key and the whole token: a
/// different key, or any changed byte, is a miss. Only the signature check
/// is skipped; the claims are checked again on every use (so an entry stops
/// working when the token expires), and whatever the caller checks after
/// (the key still on the ring, the account's credential generation) is
/// checked as before.
pub struct VerifiedTokens {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], Claims>>,
}

impl VerifiedTokens {
    /// At most this many tokens are remembered; past it, expired entries go
    /// first, then everything (a flood of distinct tokens costs what it
    /// cost before, never memory).
    pub const CAPACITY: usize = 4096;

    pub fn new() -> VerifiedTokens {
        VerifiedTokens { entries: Default::default() }
    }

    /// [`verify`], remembering a good signature.
    pub fn verify(&self, token: &str, public_key: &[u8], audience: &str, now: u64) -> Result<Claims, JwtError> {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update((public_key.len() as u64).to_be_bytes());
        h.update(public_key);
        h.update(token.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        let known = self.entries.lock().expect("token cache lock").get(&key).cloned();
        let claims = match known {
            Some(c) => c,
            None => {
                let c = verify_signature(token, public_key)?;
                let mut entries = self.entries.lock().expect("token cache lock");
                if entries.len() >= Self::CAPACITY {
                    entries.retain(|_, c| c.exp + LEEWAY_SECS > now);
                    if entries.len() >= Self::CAPACITY {
                        entries.clear();
                    }
                }
                entries.insert(key, c.clone());
                c
            }
        };
        check_claims(claims, audience, now)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("token cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        VerifiedTokens::new()
    }
}

/// A PKCS#8 PEM private key for signing registry tokens.
pub fn new_signing_key_pem() -> Result<String, rcgen::Error> {
    Ok(rcgen::KeyPair::generate()?.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str) -> SigningKey {
        SigningKey::from_pem(kid, &rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap()
    }

    fn claims(now: u64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: "cluster-1".into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "j".into(),
            access: vec![Grant { kind: "repository".into(), name: "acme/app".into(), actions: vec!["pull".into()] }],
            berth_kind: "user".into(),
            berth_app: None,
            berth_gen: 0,
        }
    }

    #[test]
    fn the_verified_token_cache_skips_only_the_signature() {
        let now = 1_000_000;
        let (k, other) = (key("k1"), key("k2"));
        let cache = VerifiedTokens::new();
        let t = k.sign(&claims(now));
        assert_eq!(cache.verify(&t, k.public_key(), "cluster-1", now).unwrap(), claims(now));
        assert_eq!(cache.len(), 1);
        // A hit still checks the claims: the audience, and expiry as time passes.
        assert_eq!(cache.verify(&t, k.public_key(), "cluster-2", now), Err(JwtError::Audience("cluster-1".into())));
        assert_eq!(cache.verify(&t, k.public_key(), "cluster-1", now + 301 + LEEWAY_SECS), Err(JwtError::Expired));
        // Another key, or one changed byte, is a miss and verified afresh.
        assert_eq!(cache.verify(&t, other.public_key(), "cluster-1", now), Err(JwtError::Signature));
        let mut forged = t.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(cache.verify(std::str::from_utf8(&forged).unwrap(), k.public_key(), "cluster-1", now).is_err());
        assert_eq!(cache.len(), 1, "failures are not remembered");
        // Bounded: a flood of distinct tokens never grows it past its capacity.
        for i in 0..VerifiedTokens::CAPACITY + 10 {
            let mut c = claims(now);
            c.jti = i.to_string();
            cache.verify(&k.sign(&c), k.public_key(), "cluster-1", now).unwrap();
        }
        assert!(cache.len() <= VerifiedTokens::CAPACITY);
    }

    #[test]
    fn round_trip_and_refusals() {
        let now = 1_800_000_000;
        let k = key("k1");
        let t = k.sign(&claims(now));
        assert_eq!(verify(&t, k.public_key(), "cluster-1", now).unwrap(), claims(now));
        assert_eq!(peek_header(&t).unwrap().kid.as_deref(), Some("k1"));
        // Another key, another audience, expiry, not-before.
        assert_eq!(verify(&t, key("k2").public_key(), "cluster-1", now), Err(JwtError::Signature));
        assert_eq!(verify(&t, k.public_key(), "cluster-2", now), Err(JwtError::Audience("cluster-1".into())));
        assert_eq!(verify(&t, k.public_key(), "cluster-1", now + 301 + LEEWAY_SECS), Err(JwtError::Expired));
        let mut early = claims(now);
        early.nbf = now + 3600;
        assert_eq!(verify(&k.sign(&early), k.public_key(), "cluster-1", now), Err(JwtError::NotYetValid));
        // alg none, with or without a signature.
        let parts: Vec<&str> = t.split('.').collect();
        let none = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(verify(&format!("{none}.{}.", parts[1]), k.public_key(), "cluster-1", now), Err(JwtError::Algorithm("none".into())));
        // A widened scope: the signature no longer matches.
        let mut wide = claims(now);
        wide.access[0].actions.push("push".into());
        let forged = format!("{}.{}.{}", parts[0], B64.encode(serde_json::to_vec(&wide).unwrap()), parts[2]);
        assert_eq!(verify(&forged, k.public_key(), "cluster-1", now), Err(JwtError::Signature));
    }
}
