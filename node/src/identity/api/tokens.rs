//! The caller's application tokens (`/user/apptoken`): the secret is
//! shown once, at creation, and kept hashed; a token never carries more
//! scopes than the caller creating it.

use super::*;

impl NodeIdentity {
    pub(super) async fn list_app_tokens(&self, who: &Access) -> Result<AppTokenList, ApiError> {
        let owner = self.own_name(who, "user:read")?;
        let tokens: Vec<AppTokenRecord> = self.state().scan(keys::APP_TOKEN_PREFIX).map_err(state_err)?;
        Ok(AppTokenList { tokens: tokens.iter().filter(|t| t.owner == owner).map(|t| Self::token_view(t, None)).collect() })
    }

    pub(super) async fn create_app_token(&self, who: &Access, req: AppTokenCreate) -> Result<AppTokenCreated, ApiError> {
        let owner = self.own_name(who, "user:admin")?;
        if req.title.trim().is_empty() || req.title.len() > 255 {
            return Err(bad("a token needs a title of 1-255 characters"));
        }
        let scopes: BTreeSet<TokenScope> = match &req.scopes {
            None => TokenScope::ALL.into_iter().filter(|s| *s != TokenScope::SuperUser).collect(),
            Some(list) => list.iter().map(|s| TokenScope::parse(s).ok_or_else(|| bad(format!("unknown scope {s:?}")))).collect::<Result<_, _>>()?,
        };
        // A token never carries more than the one creating it.
        if let Principal::App { .. } = &who.principal {
            if let Some(s) = scopes.iter().find(|s| !who.principal.has_scope(s.as_str())) {
                return Err(denied(&who.principal, &format!("create a token with {} it does not have", s.as_str())));
            }
        }
        let now = now_ms();
        let expires_at_ms = match req.expires_in {
            None => None,
            Some(0) => return Err(bad("expires_in must be positive")),
            Some(s) => Some(now.saturating_add(s.saturating_mul(1000))),
        };
        let id = hex::encode(rand::random::<[u8; 8]>());
        let secret = secret(40);
        let rec = AppTokenRecord { id: id.clone(), owner, title: req.title, scopes, secret_sha256: sha256_hex(&secret), created_at_ms: now, expires_at_ms };
        self.write(who, IdentityCommand::CreateAppToken(rec.clone()), || "the owner no longer exists".into()).await?;
        self.log(who, "create_app_specific_token", Some(&rec.owner), None, vec![("app_specific_token", id.clone()), ("title", rec.title.clone())]).await;
        Ok(AppTokenCreated { token: Self::token_view(&rec, Some(format!("{APP_TOKEN_PREFIX}{id}_{secret}"))) })
    }

    pub(super) async fn delete_app_token(&self, who: &Access, id: &str) -> Result<(), ApiError> {
        let caller = self.own_name(who, "user:admin")?;
        let rec: Option<AppTokenRecord> = self.state().get(&keys::app_token(id)).map_err(state_err)?;
        let owner = match rec {
            Some(r) if r.owner == caller || who.principal.is_superuser() => r.owner,
            _ => return Err(not_found(format!("no token {id}"))),
        };
        self.write(who, IdentityCommand::DeleteAppToken { id: id.to_string() }, || format!("no token {id}")).await?;
        self.log(who, "revoke_app_specific_token", Some(&owner), None, vec![("app_specific_token", id.to_string())]).await;
        Ok(())
    }

    fn token_view(t: &AppTokenRecord, code: Option<String>) -> AppTokenView {
        AppTokenView {
            uuid: t.id.clone(),
            title: t.title.clone(),
            scopes: t.scopes.iter().map(|s| s.as_str().to_string()).collect(),
            created: rfc3339(t.created_at_ms),
            expiration: t.expires_at_ms.map(rfc3339),
            token_code: code,
        }
    }
}
