//! Namespace quotas on Quay's paths: superusers set a namespace's quota
//! and its limits, the namespace's members read it with the usage. The
//! usage and the Reject check are the state machine's
//! (`berth_raft::state::quotas`).

use std::collections::BTreeMap;

use berth_raft::command::{QuotaCommand, QuotaLimit, QuotaLimitKind, QuotaRecord};
use berth_raft::state::quotas;

use super::*;

const UNITS: [(&str, u64); 11] = [
    ("B", 1),
    ("KB", 1000),
    ("MB", 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
    ("TB", 1000 * 1000 * 1000 * 1000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("K", 1 << 10),
    ("M", 1 << 20),
];

/// A size as people write it: `10 GiB`, `500MB`, `1.5 TiB`, `1024`.
pub(super) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = (text[..split].trim(), text[split..].trim());
    let per = if unit.is_empty() { 1 } else { UNITS.iter().find(|(u, _)| u.eq_ignore_ascii_case(unit)).map(|(_, n)| *n)? };
    let bytes = match number.split_once('.') {
        None => number.parse::<u64>().ok()?.checked_mul(per)?,
        Some((whole, frac)) if !frac.is_empty() && frac.len() <= 6 => {
            let scale = 10u128.pow(frac.len() as u32);
            let n = u128::from(whole.parse::<u64>().unwrap_or(0)) * scale + u128::from(frac.parse::<u64>().ok()?);
            u64::try_from(n * u128::from(per) / scale).ok()?
        }
        _ => return None,
    };
    Some(bytes)
}

fn format_size(bytes: u64) -> String {
    for (unit, n) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= n && bytes.is_multiple_of(n) {
            return format!("{} {unit}", bytes / n);
        }
    }
    format!("{bytes} B")
}

fn quota_bytes(req: &QuotaBody) -> Result<u64, ApiError> {
    let bytes = match (req.limit_bytes, req.limit.as_deref()) {
        (Some(b), None) => b,
        (None, Some(t)) => parse_size(t).ok_or_else(|| bad(format!("limit {t:?} is not a size such as \"10 GiB\"")))?,
        _ => return Err(bad("give exactly one of limit_bytes and limit")),
    };
    if bytes == 0 {
        return Err(bad("a quota must be larger than 0 bytes"));
    }
    Ok(bytes)
}

fn new_id() -> String {
    crate::util::random_hex(8)
}

impl NodeIdentity {
    fn quota_view(&self, ns: &str, q: QuotaRecord) -> Result<QuotaView, ApiError> {
        let state = self.state();
        let mut repositories = BTreeMap::new();
        for (k, _) in state.scan_raw(&keys::repos_in(ns)).map_err(state_err)? {
            let repo = String::from_utf8_lossy(&k[keys::REPO_PREFIX.len()..]).into_owned();
            let bytes = quotas::repository_usage(&state, &repo).map_err(state_err)?;
            repositories.insert(repo, bytes);
        }
        let limits = q
            .limits
            .iter()
            .map(|l| QuotaLimitView {
                id: l.id.clone(),
                kind: match l.kind {
                    QuotaLimitKind::Warning => "Warning".into(),
                    QuotaLimitKind::Reject => "Reject".into(),
                },
                limit_percent: l.threshold_percent,
            })
            .collect();
        let bytes = quotas::usage_of(&state, ns).map_err(state_err)?;
        Ok(QuotaView { id: q.id, limit_bytes: q.limit_bytes, limit: format_size(q.limit_bytes), limits, usage: QuotaUsage { bytes, repositories } })
    }

    /// The quota of `ns` with id `id`, for a superuser's change (the
    /// freshest: a quota set through another node a moment ago is found).
    async fn quota_to_change(&self, who: &Access, ns: &str, id: &str) -> Result<QuotaRecord, ApiError> {
        self.require_superuser(who, "change quotas")?;
        if let Err(e) = self.meta.read_barrier().await {
            tracing::debug!(error = %e, "read barrier failed; answering from local state");
        }
        quotas::quota_of(&self.state(), ns).map_err(state_err)?.filter(|q| q.id == id).ok_or_else(|| not_found(format!("no quota {id} on namespace {ns}")))
    }

    async fn set_quota(&self, who: &Access, ns: &str, quota: Option<QuotaRecord>, kind: &str, meta: Vec<(&str, String)>) -> Result<(), ApiError> {
        let cmd = MetaCommand::Quota(QuotaCommand::Set { namespace: ns.to_string(), quota });
        match self.meta.write(actor_of(&who.principal), cmd).await.map_err(meta_err)? {
            MetaResponse::Done => {}
            MetaResponse::NotFound => return Err(not_found(format!("no organization or user {ns}"))),
            MetaResponse::Refused(why) => return Err(bad(why)),
            other => return Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
        self.log(who, kind, Some(ns), None, meta).await;
        Ok(())
    }

    pub(super) async fn quotas_of(&self, who: &Access, ns: Option<&str>) -> Result<Vec<QuotaView>, ApiError> {
        let ns = match ns {
            Some(ns) => ns.to_string(),
            None => self.own_name(who, "user:read")?,
        };
        let state = self.state();
        let is_org = state.get_raw(&keys::org(&ns)).map_err(state_err)?.is_some();
        let own = matches!(&who.principal, Principal::User { name, .. } | Principal::App { owner: name, .. } if *name == ns);
        let member = is_org && policy::is_org_member(&state, &who.principal, &ns).map_err(state_err)?;
        if !(member || own || who.principal.is_superuser()) {
            return Err(if is_org || self.user_record(&ns)?.is_some() {
                denied(&who.principal, &format!("read the quota of {ns}"))
            } else {
                not_found(format!("no organization or user {ns}"))
            });
        }
        quotas::effective_quota(&state, &ns).map_err(state_err)?.map(|q| self.quota_view(&ns, q)).into_iter().collect()
    }

    pub(super) async fn default_quota_view(&self, who: &Access) -> Result<DefaultQuota, ApiError> {
        self.require_superuser(who, "read the default quota")?;
        Ok(DefaultQuota { limit_bytes: quotas::default_quota(&self.state()).map_err(state_err)?.map(|q| q.limit_bytes) })
    }

    pub(super) async fn default_quota_set(&self, who: &Access, req: Option<QuotaBody>) -> Result<DefaultQuota, ApiError> {
        let limit_bytes = req.as_ref().map(quota_bytes).transpose()?;
        self.require_superuser(who, "set the default quota")?;
        let cmd = MetaCommand::Quota(QuotaCommand::SetDefault { limit_bytes });
        match self.meta.write(actor_of(&who.principal), cmd).await.map_err(meta_err)? {
            MetaResponse::Done => {}
            MetaResponse::NotFound => return Err(not_found("there is no default quota")),
            MetaResponse::Refused(why) => return Err(bad(why)),
            other => return Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
        let kind = if limit_bytes.is_some() { "change_default_quota" } else { "delete_default_quota" };
        self.log(who, kind, None, None, vec![("limit_bytes", limit_bytes.map_or("none".into(), |b| b.to_string()))]).await;
        Ok(DefaultQuota { limit_bytes })
    }

    pub(super) async fn quota_create(&self, who: &Access, ns: &str, req: QuotaBody) -> Result<QuotaView, ApiError> {
        let bytes = quota_bytes(&req)?;
        self.require_superuser(who, "set quotas")?;
        if let Err(e) = self.meta.read_barrier().await {
            tracing::debug!(error = %e, "read barrier failed; answering from local state");
        }
        if quotas::quota_of(&self.state(), ns).map_err(state_err)?.is_some() {
            return Err(ApiError::new(ErrorCode::Conflict, format!("namespace {ns} has a quota already: change it instead")));
        }
        let q = QuotaRecord { id: new_id(), limit_bytes: bytes, limits: vec![] };
        self.set_quota(who, ns, Some(q.clone()), "org_create_quota", vec![("limit_bytes", bytes.to_string())]).await?;
        self.quota_view(ns, q)
    }

    pub(super) async fn quota_update(&self, who: &Access, ns: &str, id: &str, req: QuotaBody) -> Result<QuotaView, ApiError> {
        let bytes = quota_bytes(&req)?;
        let mut q = self.quota_to_change(who, ns, id).await?;
        q.limit_bytes = bytes;
        self.set_quota(who, ns, Some(q.clone()), "org_change_quota", vec![("limit_bytes", bytes.to_string())]).await?;
        self.quota_view(ns, q)
    }

    pub(super) async fn quota_delete(&self, who: &Access, ns: &str, id: &str) -> Result<(), ApiError> {
        self.quota_to_change(who, ns, id).await?;
        self.set_quota(who, ns, None, "org_delete_quota", vec![("id", id.to_string())]).await
    }

    pub(super) async fn quota_limit_create(&self, who: &Access, ns: &str, id: &str, req: QuotaLimitBody) -> Result<QuotaView, ApiError> {
        let kind = match req.kind.as_str() {
            "Warning" | "warning" => QuotaLimitKind::Warning,
            "Reject" | "reject" => QuotaLimitKind::Reject,
            k => return Err(bad(format!("limit type {k:?} is not Warning or Reject"))),
        };
        if !(1..=100).contains(&req.threshold_percent) {
            return Err(bad(format!("threshold_percent {} is not between 1 and 100", req.threshold_percent)));
        }
        let mut q = self.quota_to_change(who, ns, id).await?;
        let limit = QuotaLimit { id: new_id(), kind, threshold_percent: req.threshold_percent as u8 };
        q.limits.push(limit.clone());
        let meta = vec![("type", req.kind.clone()), ("threshold_percent", req.threshold_percent.to_string()), ("limit_id", limit.id.clone())];
        self.set_quota(who, ns, Some(q.clone()), "org_create_quota_limit", meta).await?;
        self.quota_view(ns, q)
    }

    pub(super) async fn quota_limit_delete(&self, who: &Access, ns: &str, id: &str, limit_id: &str) -> Result<(), ApiError> {
        let mut q = self.quota_to_change(who, ns, id).await?;
        let before = q.limits.len();
        q.limits.retain(|l| l.id != limit_id);
        if q.limits.len() == before {
            return Err(not_found(format!("no limit {limit_id} on quota {id}")));
        }
        self.set_quota(who, ns, Some(q), "org_delete_quota_limit", vec![("limit_id", limit_id.to_string())]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_people_write_them() {
        for (text, bytes) in [("10 GiB", 10u64 << 30), ("10GiB", 10 << 30), ("500 MB", 500_000_000), ("1024", 1024), ("1.5 KiB", 1536), ("4 mib", 4 << 20)] {
            assert_eq!(parse_size(text), Some(bytes), "{text}");
        }
        for bad in ["", "lots", "10 GiBs", "-1 GiB", "1.5.1 GiB", "99999999999 TiB", "1. GiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!((format_size(10 << 20), format_size(1000)), ("10 MiB".to_string(), "1000 B".to_string()));
    }
}
