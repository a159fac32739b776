//! Usage logs on Quay's paths: who may read which, and the pages, newest
//! first, read from the audit records every node holds.

use super::*;

/// Parses the time forms the logs API takes: RFC 3339, Quay's
/// `MM/DD/YYYY`, or milliseconds since the epoch.
pub fn parse_time(s: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0));
    }
    let parts: Vec<&str> = s.split('/').collect();
    if let [m, d, y] = parts[..] {
        if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{y:0>4}-{m:0>2}-{d:0>2} 00:00:00")) {
            return Ok(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0));
        }
    }
    Err(bad(format!("time {s:?} is not RFC 3339, MM/DD/YYYY or milliseconds since the epoch")))
}

const LOG_PAGE: usize = 500;

impl NodeIdentity {
    pub(super) async fn log_page(&self, who: &Access, filter: LogFilter) -> Result<LogPage, ApiError> {
        let state = self.state();
        let caller = who.principal.performer();
        self.require_log_reader(&state, who, &filter, &caller)?;
        // A namespace is its name and its creation time: records from
        // before the current holder of the name belong to an earlier one.
        let since = match (&filter.namespace, filter.performer_is_caller) {
            (Some(ns), _) => self.created_at(ns)?,
            (None, true) => self.created_at(&caller)?,
            (None, false) => 0,
        };
        let now = now_ms();
        let end = filter.query.endtime.as_deref().map(parse_time).transpose()?.unwrap_or(now + 1);
        let start = filter.query.starttime.as_deref().map(parse_time).transpose()?.unwrap_or(end.saturating_sub(7 * 86_400_000));
        if start > end {
            return Err(bad("starttime is after endtime"));
        }
        let start = start.max(since).min(end);
        let (logs, next_page) = read_page(&state, &filter, &caller, start, end)?;
        Ok(LogPage { start_time: rfc3339(start), end_time: rfc3339(end), logs, next_page })
    }

    /// Who may read what: superusers everything; org admins their
    /// organization; repository admins their repository; anyone their own.
    /// Application tokens also need the scope Quay asks for on each path
    /// (`org:admin` on a namespace's logs, `user:read` on the user's), so
    /// a `repo:read` token made for pulls reads no history.
    fn require_log_reader(&self, state: &MetaState, who: &Access, filter: &LogFilter, caller: &str) -> Result<(), ApiError> {
        match (&filter.repo, &filter.namespace) {
            (Some(repo), _) => {
                self.repo_with(who, repo, Role::Admin)?;
            }
            (None, Some(ns)) => {
                if state.get_raw(&keys::org(ns)).map_err(state_err)?.is_some() {
                    self.require_org_admin(who, ns)?;
                } else if !who.principal.is_superuser() && ns != caller {
                    return Err(denied(&who.principal, &format!("read the logs of {ns}")));
                }
                if !who.principal.is_superuser() {
                    require_scope(who, "org:admin", &format!("read the logs of {ns}"))?;
                }
            }
            (None, None) if filter.performer_is_caller => {
                if who.principal == Principal::Anonymous {
                    return Err(denied(&who.principal, "read logs"));
                }
                require_scope(who, "user:read", "read the user's logs")?;
            }
            (None, None) => self.require_superuser(who, "read every log")?,
        }
        Ok(())
    }
}

/// One page of the records `filter` keeps between `start` and `end`, and
/// the name of the next page. Pages go backwards in time, newest first as
/// Quay shows them; a page ends after a record, named `<ms>-<id>`, and the
/// next one starts just before it.
fn read_page(state: &MetaState, filter: &LogFilter, caller: &str, start: u64, end: u64) -> Result<(Vec<LogView>, Option<String>), ApiError> {
    let mut upper = keys::audit(end, 0);
    if let Some(p) = &filter.query.next_page {
        let (ms, id) = p
            .split_once('-')
            .and_then(|(m, i)| Some((m.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
            .ok_or_else(|| bad("next_page is not one this API gave"))?;
        upper = upper.min(keys::audit(ms, id));
    }
    let lower = keys::audit(start, 0);
    let mut logs = Vec::new();
    let mut next_page = None;
    // Hour-long windows, widening while they come back empty.
    let mut span = 3_600_000u64;
    'scan: while upper > lower {
        let upper_ms = u64::from_be_bytes(upper[1..9].try_into().expect("audit keys hold a time"));
        let from = keys::audit(upper_ms.saturating_sub(span).max(start), 0).max(lower.clone());
        let chunk = state.range_raw(&from, &upper, usize::MAX).map_err(state_err)?;
        if chunk.is_empty() {
            span = span.saturating_mul(2);
        }
        for (_, v) in chunk.into_iter().rev() {
            let rec: AuditRecord = berth_common::decode_versioned(berth_raft::state::RECORD_VERSION, &v).map_err(state_err)?;
            if !keeps(filter, caller, &rec) {
                continue;
            }
            if logs.len() == LOG_PAGE {
                break 'scan;
            }
            next_page = Some(format!("{}-{}", rec.at_ms, rec.id));
            logs.push(view(rec));
        }
        upper = from;
    }
    // A page that is not full is the last one.
    if logs.len() < LOG_PAGE {
        next_page = None;
    }
    Ok((logs, next_page))
}

fn keeps(filter: &LogFilter, caller: &str, rec: &AuditRecord) -> bool {
    filter.repo.as_ref().is_none_or(|r| rec.repo.as_ref() == Some(r))
        && filter.namespace.as_ref().is_none_or(|n| rec.namespace.as_ref() == Some(n))
        && (!filter.performer_is_caller || rec.performer == caller)
        && filter.query.kind.as_ref().is_none_or(|k| *k == rec.kind)
}

fn view(rec: AuditRecord) -> LogView {
    let mut metadata = rec.metadata;
    let performer_kind = metadata.remove("performer_kind").unwrap_or_default();
    LogView {
        kind: rec.kind,
        datetime: rfc3339(rec.at_ms),
        performer: Performer { name: rec.performer, kind: performer_kind },
        namespace: rec.namespace,
        repository: rec.repo,
        ip: rec.ip,
        node: rec.node,
        region: rec.region,
        metadata,
    }
}
