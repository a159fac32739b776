//! Sign-in against an LDAP directory (`[auth.ldap]`).
//!
//! A login is checked the way directories expect: search for the user with
//! the service account (`bind_dn`), then bind as the entry found with the
//! password given. Only a name that is a valid berth user name is ever put
//! into a filter, and then escaped (RFC 4515) as well, so a name such as
//! `*)(uid=*` never reaches the directory. An empty password is refused
//! before any bind: LDAP treats a simple bind without one as anonymous and
//! lets it succeed (RFC 4513 5.1.2).
//!
//! Every conversation with the directory runs under `timeout_secs`, so a
//! directory that is down or hangs turns into [`Unavailable`] (a 503 for
//! the caller) rather than a login that never answers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_common::names::valid_component;
use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};

use crate::config::LdapConfig;

/// LDAP result code for a wrong password (RFC 4511 4.1.9).
const INVALID_CREDENTIALS: u32 = 49;

/// What the directory says about a login.
#[derive(Debug)]
pub enum Verdict {
    Valid(DirectoryUser),
    /// Refused, with the reason for the usage log (never shown to the caller).
    Refused(&'static str),
}

/// A user as the directory knows them.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    pub dn: String,
    pub mail: Option<String>,
    /// Names (`group_name_attr`) of the groups the user is in; empty when
    /// group sync is off.
    pub groups: BTreeSet<String>,
}

/// The directory could not be asked (down, slow, refusing the service
/// account, TLS failure).
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the directory is unavailable: {}", self.0)
    }
}

pub struct Directory {
    cfg: LdapConfig,
    /// The service account's password, read from `bind_password_file` at start.
    bind_password: Option<String>,
    /// TLS settings when `ca_file` names the roots; ldap3's defaults otherwise.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Whether `name` may be looked up in the directory at all: berth user
/// names only (lowercase letters and digits separated by `.`, `_`, `-`),
/// so filter metacharacters never get as far as escaping.
pub fn valid_login_name(name: &str) -> bool {
    (2..=255).contains(&name.len()) && valid_component(name)
}

fn unavailable(e: LdapError) -> Unavailable {
    Unavailable(e.to_string())
}

impl Directory {
    pub fn new(cfg: &LdapConfig) -> anyhow::Result<Directory> {
        cfg.validate()?;
        let bind_password = match &cfg.bind_password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read auth.ldap bind_password_file {}", p.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => None,
        };
        let tls = match &cfg.ca_file {
            Some(p) => {
                let pem = std::fs::read(p).with_context(|| format!("cannot read auth.ldap ca_file {}", p.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    roots.add(cert.context("auth.ldap ca_file")?).context("auth.ldap ca_file")?;
                }
                if roots.is_empty() {
                    anyhow::bail!("auth.ldap ca_file {} holds no certificate", p.display());
                }
                Some(Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()))
            }
            None => None,
        };
        Ok(Directory { cfg: cfg.clone(), bind_password, tls })
    }

    pub fn config(&self) -> &LdapConfig {
        &self.cfg
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs)
    }

    /// A connection bound as the service account (or anonymous).
    async fn connect(&self) -> Result<Ldap, Unavailable> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.timeout()).set_starttls(self.cfg.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url).await.map_err(unavailable)?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "ldap connection ended");
            }
        });
        if let (Some(dn), Some(pw)) = (&self.cfg.bind_dn, &self.bind_password) {
            ldap.simple_bind(dn, pw).await.map_err(unavailable)?.success().map_err(|e| Unavailable(format!("service bind refused: {e}")))?;
        }
        Ok(ldap)
    }

    /// The entry of `name` and its groups, searched as the service account.
    async fn find(&self, ldap: &mut Ldap, name: &str) -> Result<Option<DirectoryUser>, Unavailable> {
        let filter = format!("(&{}({}={}))", self.cfg.user_filter, self.cfg.uid_attr, ldap_escape(name));
        let (entries, _) = ldap
            .search(&self.cfg.base_dn, Scope::Subtree, &filter, vec![self.cfg.mail_attr.as_str()])
            .await
            .map_err(unavailable)?
            .success()
            .map_err(unavailable)?;
        // Two entries for one name is a directory that cannot say who this is.
        let mut entries = entries.into_iter();
        let (Some(entry), None) = (entries.next(), entries.next()) else { return Ok(None) };
        let entry = SearchEntry::construct(entry);
        let mail = entry.attrs.get(&self.cfg.mail_attr).and_then(|v| v.first().cloned());
        let groups = self.groups(ldap, &entry.dn, name).await?;
        Ok(Some(DirectoryUser { dn: entry.dn, mail, groups }))
    }

    async fn groups(&self, ldap: &mut Ldap, dn: &str, name: &str) -> Result<BTreeSet<String>, Unavailable> {
        let Some(base) = self.cfg.group_base_dn.as_deref().filter(|_| !self.cfg.teams.is_empty()) else { return Ok(BTreeSet::new()) };
        let filter = self.cfg.group_filter.replace("{dn}", &ldap_escape(dn)).replace("{uid}", &ldap_escape(name));
        let attr = self.cfg.group_name_attr.as_str();
        let (entries, _) = ldap.search(base, Scope::Subtree, &filter, vec![attr]).await.map_err(unavailable)?.success().map_err(unavailable)?;
        Ok(entries.into_iter().filter_map(|e| SearchEntry::construct(e).attrs.get(attr).and_then(|v| v.first().cloned())).collect())
    }

    /// Checks `name`'s password by binding as them.
    pub async fn login(&self, name: &str, password: &str) -> Result<Verdict, Unavailable> {
        if !valid_login_name(name) {
            return Ok(Verdict::Refused("not a valid user name"));
        }
        if password.is_empty() {
            return Ok(Verdict::Refused("empty password"));
        }
        let work = async {
            let mut ldap = self.connect().await?;
            let Some(user) = self.find(&mut ldap, name).await? else {
                let _ = ldap.unbind().await;
                return Ok(Verdict::Refused("no such user in the directory"));
            };
            let verdict = match ldap.simple_bind(&user.dn, password).await.map_err(unavailable)?.success() {
                Ok(_) => Verdict::Valid(user),
                Err(LdapError::LdapResult { result }) if result.rc == INVALID_CREDENTIALS => Verdict::Refused("wrong directory password"),
                Err(e) => return Err(unavailable(e)),
            };
            let _ = ldap.unbind().await;
            Ok(verdict)
        };
        tokio::time::timeout(self.timeout(), work).await.unwrap_or_else(|_| Err(Unavailable(format!("no answer within {} s", self.cfg.timeout_secs))))
    }

    /// `name` as the directory knows them now (for the periodic team sync);
    /// `None` when the directory has no such user any more.
    pub async fn lookup(&self, name: &str) -> Result<Option<DirectoryUser>, Unavailable> {
        if !valid_login_name(name) {
            return Ok(None);
        }
        let work = async {
            let mut ldap = self.connect().await?;
            let found = self.find(&mut ldap, name).await;
            let _ = ldap.unbind().await;
            found
        };
        tokio::time::timeout(self.timeout(), work).await.unwrap_or_else(|_| Err(Unavailable(format!("no answer within {} s", self.cfg.timeout_secs))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_metacharacters_are_not_login_names() {
        for bad in ["*)(uid=*", "*", "a)(b", "x\\2a", "Alice", "a b", "a\0b", ""] {
            assert!(!valid_login_name(bad), "{bad:?}");
        }
        assert!(valid_login_name("alice"));
        assert!(valid_login_name("bob.smith-2"));
        // And escaping stands behind the name rule.
        assert_eq!(ldap_escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
    }
}
