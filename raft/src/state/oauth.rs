//! OAuth applications (`O`), their authorization codes (`C`) and which
//! application holds which application token (`E`).
//!
//! A token an application gets is an ordinary application token of the
//! approving user ([`AppTokenRecord`] under `A`), so it acts for that user
//! within its scopes and every rule of those tokens holds (a deleted user
//! takes it along). A code is consumed in the same step that stores the
//! token, so one code never gives two tokens whatever the races.

use super::{keys, Changes, StateError, StateRead};
use crate::command::*;

fn refused(why: impl Into<String>) -> MetaResponse {
    MetaResponse::Refused(why.into())
}

pub fn app(state: &impl StateRead, client_id: &str) -> Result<Option<OAuthAppRecord>, StateError> {
    state.get(&keys::oauth_app(client_id))
}

/// The applications of organization `org`.
pub fn apps_of(state: &impl StateRead, org: &str) -> Result<Vec<OAuthAppRecord>, StateError> {
    Ok(state.scan::<OAuthAppRecord>(keys::OAUTH_APP_PREFIX)?.into_iter().filter(|a| a.org == org).collect())
}

/// The live tokens application `client_id` holds (a token its user
/// deleted is gone from here too).
pub fn tokens_of(state: &impl StateRead, client_id: &str) -> Result<Vec<AppTokenRecord>, StateError> {
    let prefix = keys::oauth_tokens_of(client_id);
    let mut out = Vec::new();
    for (k, _) in state.scan_raw(&prefix)? {
        let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        if let Some(t) = state.get::<AppTokenRecord>(&keys::app_token(&id))? {
            out.push(t);
        }
    }
    Ok(out)
}

pub(crate) fn apply(state: &impl StateRead, ch: &mut Changes, cmd: &OAuthCommand) -> Result<MetaResponse, StateError> {
    use OAuthCommand as O;
    match cmd {
        O::CreateApp(rec) => {
            if state.get_raw(&keys::org(&rec.org))?.is_none() {
                return Ok(refused(format!("organization {} does not exist", rec.org)));
            }
            if app(state, &rec.client_id)?.is_some() {
                return Ok(refused(format!("client id {} is taken", rec.client_id)));
            }
            ch.put(keys::oauth_app(&rec.client_id), rec);
            Ok(MetaResponse::Done)
        }
        O::UpdateApp(rec) => match app(state, &rec.client_id)? {
            None => Ok(MetaResponse::NotFound),
            Some(old) if old.org != rec.org => Ok(refused("an application stays in its organization")),
            Some(_) => {
                ch.put(keys::oauth_app(&rec.client_id), rec);
                Ok(MetaResponse::Done)
            }
        },
        O::DeleteApp { client_id } => {
            if app(state, client_id)?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            forget_app(state, ch, client_id)?;
            Ok(MetaResponse::Done)
        }
        O::IssueCode(code) => {
            if app(state, &code.client_id)?.is_none() {
                return Ok(refused("the application no longer exists"));
            }
            if state.get_raw(&keys::user(&code.user))?.is_none() {
                return Ok(refused(format!("user {} no longer exists", code.user)));
            }
            ch.put(keys::oauth_code(&code.code_sha256), code);
            Ok(MetaResponse::Done)
        }
        O::ExchangeCode { code_sha256, client_id, token, now_ms } => {
            let Some(code) = state.get::<OAuthCodeRecord>(&keys::oauth_code(code_sha256))? else {
                return Ok(MetaResponse::NotFound);
            };
            // Whatever happens next, the code is spent.
            ch.delete(keys::oauth_code(code_sha256));
            if code.client_id != *client_id {
                return Ok(refused("the code was issued to another application"));
            }
            if code.expires_at_ms <= *now_ms {
                return Ok(refused("the code has expired"));
            }
            if token.owner != code.user || !token.scopes.is_subset(&code.scopes) {
                return Ok(refused("the token asks for more than the code grants"));
            }
            issue(state, ch, client_id, token)
        }
        O::IssueToken { client_id, token } => issue(state, ch, client_id, token),
        O::RevokeToken { client_id, token_id } => {
            if state.get_raw(&keys::oauth_token(client_id, token_id))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            ch.delete(keys::oauth_token(client_id, token_id));
            ch.delete(keys::app_token(token_id));
            Ok(MetaResponse::Done)
        }
    }
}

fn issue(state: &impl StateRead, ch: &mut Changes, client_id: &str, token: &AppTokenRecord) -> Result<MetaResponse, StateError> {
    if app(state, client_id)?.is_none() {
        return Ok(refused("the application no longer exists"));
    }
    if state.get_raw(&keys::user(&token.owner))?.is_none() {
        return Ok(refused(format!("user {} no longer exists", token.owner)));
    }
    if state.get_raw(&keys::app_token(&token.id))?.is_some() {
        return Ok(refused("token id is taken"));
    }
    ch.put(keys::app_token(&token.id), token);
    ch.put(keys::oauth_token(client_id, &token.id), &());
    Ok(MetaResponse::Done)
}

/// Deletes an application with its codes and the tokens it holds.
pub(crate) fn forget_app(state: &impl StateRead, ch: &mut Changes, client_id: &str) -> Result<(), StateError> {
    ch.delete(keys::oauth_app(client_id));
    for (k, v) in state.scan_raw(keys::OAUTH_CODE_PREFIX)? {
        let code: OAuthCodeRecord = super::decode(&k, &v)?;
        if code.client_id == client_id {
            ch.delete(k);
        }
    }
    let prefix = keys::oauth_tokens_of(client_id);
    for (k, _) in state.scan_raw(&prefix)? {
        let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        ch.delete(keys::app_token(&id));
        ch.delete(k);
    }
    Ok(())
}

/// Deletes every application of organization `org` (with the organization).
pub(crate) fn forget_org(state: &impl StateRead, ch: &mut Changes, org: &str) -> Result<(), StateError> {
    for a in apps_of(state, org)? {
        forget_app(state, ch, &a.client_id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;
    use std::collections::BTreeSet;

    fn setup() -> MemState {
        let s = MemState::default();
        let user = UserRecord { name: "alice".into(), password_hash: "x".into(), superuser: false, created_at_ms: 0 };
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::CreateUser(user))), MetaResponse::Done);
        let org = OrgRecord { name: "acme".into(), email: None, created_at_ms: 0 };
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: Some("alice".into()) })), MetaResponse::Done);
        let app = OAuthAppRecord {
            client_id: "CID".into(),
            org: "acme".into(),
            name: "ci".into(),
            description: String::new(),
            application_uri: String::new(),
            redirect_uri: "https://ci.example/cb".into(),
            avatar_email: None,
            secret_sha256: "h".into(),
            public_client: false,
            created_at_ms: 0,
        };
        assert_eq!(s.run(MetaCommand::OAuth(OAuthCommand::CreateApp(app))), MetaResponse::Done);
        s
    }

    fn code(expires_at_ms: u64) -> OAuthCodeRecord {
        OAuthCodeRecord {
            code_sha256: "c1".into(),
            client_id: "CID".into(),
            user: "alice".into(),
            scopes: BTreeSet::from([TokenScope::RepoRead, TokenScope::RepoWrite]),
            redirect_uri: "https://ci.example/cb".into(),
            code_challenge: None,
            expires_at_ms,
        }
    }

    fn token(id: &str, scopes: &[TokenScope]) -> AppTokenRecord {
        AppTokenRecord {
            id: id.into(),
            owner: "alice".into(),
            title: "ci".into(),
            scopes: scopes.iter().copied().collect(),
            secret_sha256: "s".into(),
            created_at_ms: 0,
            expires_at_ms: None,
        }
    }

    fn exchange(id: &str, scopes: &[TokenScope], now_ms: u64) -> MetaCommand {
        MetaCommand::OAuth(OAuthCommand::ExchangeCode { code_sha256: "c1".into(), client_id: "CID".into(), token: token(id, scopes), now_ms })
    }

    #[test]
    fn a_code_gives_one_token_once() {
        let s = setup();
        assert_eq!(s.run(MetaCommand::OAuth(OAuthCommand::IssueCode(code(100)))), MetaResponse::Done);
        assert_eq!(s.run(exchange("t1", &[TokenScope::RepoRead], 50)), MetaResponse::Done);
        assert_eq!(s.run(exchange("t2", &[TokenScope::RepoRead], 50)), MetaResponse::NotFound);
        let held: Vec<String> = tokens_of(&s, "CID").unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(held, vec!["t1".to_string()]);
    }

    #[test]
    fn an_expired_or_widened_code_issues_nothing_and_is_spent() {
        let s = setup();
        s.run(MetaCommand::OAuth(OAuthCommand::IssueCode(code(100))));
        assert!(matches!(s.run(exchange("t1", &[TokenScope::RepoRead], 100)), MetaResponse::Refused(_)));
        assert_eq!(s.run(exchange("t1", &[TokenScope::RepoRead], 50)), MetaResponse::NotFound);
        s.run(MetaCommand::OAuth(OAuthCommand::IssueCode(code(100))));
        assert!(matches!(s.run(exchange("t2", &[TokenScope::RepoAdmin], 50)), MetaResponse::Refused(_)));
        assert!(tokens_of(&s, "CID").unwrap().is_empty());
        assert!(s.get_raw(&keys::app_token("t2")).unwrap().is_none());
    }

    #[test]
    fn deleting_the_app_or_its_org_takes_its_tokens() {
        let s = setup();
        let issue = |id: &str| MetaCommand::OAuth(OAuthCommand::IssueToken { client_id: "CID".into(), token: token(id, &[TokenScope::RepoRead]) });
        assert_eq!(s.run(issue("t1")), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::OAuth(OAuthCommand::DeleteApp { client_id: "CID".into() })), MetaResponse::Done);
        assert!(s.get_raw(&keys::app_token("t1")).unwrap().is_none());
        assert!(matches!(s.run(issue("t2")), MetaResponse::Refused(_)));
    }
}
