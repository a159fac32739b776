//! What a mirror configuration may say, and the sealing of its upstream
//! password: the rules the admin API and the sync worker share. A leaf
//! (it names no other module of the node but `util`), so both may use it.
//! The records, commands and their rules (states, leases, retries) are
//! `berth_raft::mirror` and `berth_raft::state::mirror`.

use berth_raft::command::ClusterRecord;
use berth_raft::state::{keys, StateError};
use berth_raft::{MetaState, StateRead};
use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest as _, Sha256};

/// Why an upstream password cannot be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cluster record unreadable: {0}")]
    Unreadable(#[from] StateError),
    #[error("cluster record missing")]
    NoCluster,
    #[error("mirror key unusable")]
    KeyUnusable,
    #[error("no randomness")]
    NoRandomness,
    #[error("sealing failed")]
    Sealing,
    #[error("sealed password is truncated")]
    Truncated,
    #[error("bad nonce")]
    BadNonce,
    #[error("sealed password does not open with this cluster's key")]
    WrongKey,
    #[error("sealed password is not text")]
    NotText,
}

/// Why a mirror's configuration is refused; the words are the API's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("external_reference {reference:?} is not host[:port]/path: {why}")]
    Reference { reference: String, why: &'static str },
    #[error("sync_start_date {0:?} is not in the form %Y-%m-%dT%H:%M:%SZ")]
    StartDateForm(String),
    #[error("sync_start_date {0:?} is not a valid date")]
    StartDate(String),
    /// A proxy cache's upstream (`identity::api::proxycache`).
    #[error("upstream_registry {upstream:?} is not host[:port][/path]: {why}")]
    Upstream { upstream: String, why: &'static str },
}

/// The key upstream passwords are sealed with: derived from the cluster's
/// token-signing key, which every member holds and no API shows, so any
/// node running a sync can open what any node sealed.
fn mirror_key(state: &MetaState) -> Result<aead::LessSafeKey, SealError> {
    let cluster: ClusterRecord = state.get(keys::CLUSTER)?.ok_or(SealError::NoCluster)?;
    let mut h = Sha256::new();
    h.update(b"berth mirror credentials v1\0");
    h.update(cluster.token_signing_key_pem.as_bytes());
    let key = aead::UnboundKey::new(&aead::AES_256_GCM, &h.finalize()).map_err(|_| SealError::KeyUnusable)?;
    Ok(aead::LessSafeKey::new(key))
}

/// Seals `secret` (nonce, then ciphertext with its tag).
pub fn seal(state: &MetaState, repo: &str, secret: &str) -> Result<Vec<u8>, SealError> {
    let key = mirror_key(state)?;
    let mut nonce = [0u8; aead::NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::NoRandomness)?;
    let mut buf = secret.as_bytes().to_vec();
    // The repository is bound in: a sealed password moved to another
    // repository's record does not open.
    key.seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(repo.as_bytes()), &mut buf).map_err(|_| SealError::Sealing)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

/// What a proxy-cache organization's sealed upstream password is bound
/// to (in place of a repository): never a repository name, which has no `:`.
pub fn proxy_cache_seal_scope(org: &str) -> String {
    format!("proxycache:{org}")
}

pub fn open(state: &MetaState, repo: &str, sealed: &[u8]) -> Result<String, SealError> {
    if sealed.len() < aead::NONCE_LEN {
        return Err(SealError::Truncated);
    }
    let key = mirror_key(state)?;
    let (nonce, ct) = sealed.split_at(aead::NONCE_LEN);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::BadNonce)?;
    let mut buf = ct.to_vec();
    let plain = key.open_in_place(nonce, aead::Aad::from(repo.as_bytes()), &mut buf).map_err(|_| SealError::WrongKey)?;
    String::from_utf8(plain.to_vec()).map_err(|_| SealError::NotText)
}

/// Whether `name` matches the shell-style glob `pattern` (`*`, `?`,
/// `[abc]`, `[a-z]`, `[!x]`), as Quay's `fnmatch` does.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed incl. ']').
        let mut i = 0;
        let negate = matches!(p.first(), Some('!') | Some('^'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                if p[i] <= c && c <= p[i + 2] {
                    matched = true;
                }
                i += 3;
            } else {
                if p[i] == c {
                    matched = true;
                }
                i += 1;
            }
        }
        None
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match (n.first(), class(&p[1..], *n.first().unwrap_or(&'\0'))) {
                (Some(_), Some((true, used))) => go(&p[1 + used..], &n[1..]),
                (Some(_), Some((false, _))) | (None, _) => false,
                // An unclosed '[' is a literal.
                (Some(c), None) => *c == '[' && go(&p[1..], &n[1..]),
            },
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Whether `tag` matches any of `globs`.
pub fn tag_wanted(globs: &[String], tag: &str) -> bool {
    globs.iter().any(|g| glob_match(g.trim(), tag))
}

/// Checks a registry's `host[:port]`: a DNS name or IPv4 address and an
/// optional port; the reason when it is not one.
pub fn check_host_port(host: &str) -> Result<(), &'static str> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
        return Err("bad host");
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err("bad port");
    }
    Ok(())
}

/// Checks `host[:port]/path`: an upstream repository, without scheme, tag
/// or digest.
pub fn check_reference(r: &str) -> Result<(), ConfigError> {
    let bad = |why: &'static str| Err(ConfigError::Reference { reference: r.to_string(), why });
    if r.contains("://") {
        return bad("no scheme");
    }
    let Some((host, path)) = r.split_once('/') else { return bad("no repository path") };
    if let Err(why) = check_host_port(host) {
        return bad(why);
    }
    if path.contains('@') || path.contains(':') {
        return bad("a repository, without tag or digest");
    }
    if path.parse::<berth_common::RepoName>().is_err() {
        return bad("bad repository path");
    }
    Ok(())
}

/// Parses Quay's `%Y-%m-%dT%H:%M:%SZ` into ms since the epoch.
pub fn parse_start_date(s: &str) -> Result<u64, ConfigError> {
    let shape_ok = s.len() == 20
        && s.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(ConfigError::StartDateForm(s.to_string()));
    }
    humantime::parse_rfc3339(s)
        .map_err(|_| ConfigError::StartDate(s.to_string()))
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

/// Quay's form of a date.
pub fn format_date(ms: u64) -> String {
    crate::util::rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_fnmatch() {
        let g = |p, n| glob_match(p, n);
        assert!(g("1-*", "1-1") && g("1-*", "1-") && !g("1-*", "2-0"));
        assert!(g("latest", "latest") && !g("latest", "latest2"));
        assert!(g("v?.?", "v1.2") && !g("v?.?", "v10.2"));
        assert!(g("v[0-9]", "v7") && !g("v[0-9]", "vx") && g("v[!0-9]", "vx"));
        assert!(g("*", "") && g("a*b*c", "aXbYc") && !g("a*b*c", "aXbY"));
        assert!(tag_wanted(&["1-*".into(), " latest".into()], "latest"));
    }

    #[test]
    fn references_and_dates() {
        assert!(check_reference("127.0.0.1:5000/lib/app").is_ok());
        assert!(check_reference("quay.io/coreos/etcd").is_ok());
        for bad in ["https://x/y", "x", "x/y:tag", "x/y@sha256:00", "h:notaport/y", "/y", "x/Y"] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_start_date("1970-01-01T00:01:00Z"), Ok(60_000));
        for bad in ["2024-01-01 00:00:00", "2024-01-01T00:00:00", "2024-13-01T00:00:00Z", "2024-01-01T00:00:00.5Z"] {
            assert!(parse_start_date(bad).is_err(), "{bad}");
        }
    }
}
