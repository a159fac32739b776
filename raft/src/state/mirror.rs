//! The rules of repository states and mirrors (records and commands in
//! [`crate::mirror`]).
//!
//! Keys: `y` + repo holds a repository's [`RepoState`] (no key: `NORMAL`);
//! `Y` + repo its [`MirrorRecord`].
//!
//! [`guard`] runs before every content write is applied (see
//! `state::apply`): it is the one place a repository's state refuses a
//! push, a tag change, a delete or a blob link.

use berth_common::NodeId;

use super::{Changes, StateError, StateRead};
use crate::command::*;

pub const REPO_STATE_PREFIX: &[u8] = b"y";
pub const MIRROR_PREFIX: &[u8] = b"Y";

pub fn repo_state_key(repo: &str) -> Vec<u8> {
    let mut k = REPO_STATE_PREFIX.to_vec();
    k.extend_from_slice(repo.as_bytes());
    k
}

pub fn mirror_key(repo: &str) -> Vec<u8> {
    let mut k = MIRROR_PREFIX.to_vec();
    k.extend_from_slice(repo.as_bytes());
    k
}

/// The repository named by a key under [`MIRROR_PREFIX`].
pub fn repo_of_mirror_key(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[MIRROR_PREFIX.len()..]).into_owned()
}

pub fn repo_state(state: &impl StateRead, repo: &str) -> Result<RepoState, StateError> {
    Ok(state.get::<RepoState>(&repo_state_key(repo))?.unwrap_or_default())
}

pub fn mirror(state: &impl StateRead, repo: &str) -> Result<Option<MirrorRecord>, StateError> {
    state.get::<MirrorRecord>(&mirror_key(repo))
}

/// Every mirror, with its repository.
pub fn mirrors(state: &impl StateRead) -> Result<Vec<(String, MirrorRecord)>, StateError> {
    let mut out = Vec::new();
    for (k, v) in state.scan_raw(MIRROR_PREFIX)? {
        out.push((repo_of_mirror_key(&k), super::decode(&k, &v)?));
    }
    Ok(out)
}

/// The repository whose content `cmd` changes, if it is a content write
/// a repository's state rules on. The tag-expiry worker's closing of an
/// expired row is not: it enforces what was set before.
pub fn content_repo(cmd: &MetaCommand) -> Option<&str> {
    use MetaCommand as M;
    match cmd {
        M::PutManifest { record, .. } | M::PutManifestFrom { record, .. } => Some(&record.repo),
        M::DeleteManifest { repo, .. }
        | M::DeleteManifestAt { repo, .. }
        | M::SetTag { repo, .. }
        | M::DeleteTag { repo, .. }
        | M::DeleteTagAt { repo, .. }
        | M::LinkBlob { repo, .. } => Some(repo),
        M::Tag(TagCommand::SetExpiration { repo, .. } | TagCommand::SetImmutable { repo, .. } | TagCommand::Restore { repo, .. }) => Some(repo),
        _ => None,
    }
}

/// The refusal of `cmd`, made by `robot` (when made through
/// [`MetaCommand::AsRobot`]), by its repository's state; `None` when the
/// state allows it.
pub(super) fn guard(state: &impl StateRead, cmd: &MetaCommand, robot: Option<&str>) -> Result<Option<MetaResponse>, StateError> {
    let Some(repo) = content_repo(cmd) else { return Ok(None) };
    match repo_state(state, repo)? {
        RepoState::Normal => Ok(None),
        RepoState::ReadOnly => Ok(Some(MetaResponse::RepositoryState { state: RepoState::ReadOnly })),
        RepoState::Mirror => {
            let mirror_robot = mirror(state, repo)?.map(|m| m.config.robot);
            if robot.is_some() && robot == mirror_robot.as_deref() {
                Ok(None)
            } else {
                Ok(Some(MetaResponse::RepositoryState { state: RepoState::Mirror }))
            }
        }
    }
}

/// Drops a deleted repository's state and mirror.
pub(super) fn forget_repository(ch: &mut Changes, repo: &str) {
    ch.delete(repo_state_key(repo));
    ch.delete(mirror_key(repo));
}

fn repo_exists(state: &impl StateRead, repo: &str) -> Result<bool, StateError> {
    Ok(state.get_raw(&super::keys::repo(repo))?.is_some())
}

/// Whether the robot `ns+short` exists in the repository's namespace.
fn robot_of_namespace(state: &impl StateRead, repo: &str, robot: &str) -> Result<bool, StateError> {
    let Some((ns, short)) = robot.split_once('+') else { return Ok(false) };
    let repo_ns = repo.split_once('/').map(|(ns, _)| ns).unwrap_or("");
    Ok(ns == repo_ns && state.get_raw(&super::keys::robot(ns, short))?.is_some())
}

fn lease_live(rec: &MirrorRecord, now_ms: u64) -> bool {
    rec.lease.as_ref().is_some_and(|l| l.until_ms > now_ms)
}

/// Whether a sync of `rec` is due at `now_ms`: asked for, scheduled, or
/// one whose node stopped renewing its lease.
pub fn due(rec: &MirrorRecord, now_ms: u64) -> bool {
    if !rec.config.is_enabled || lease_live(rec, now_ms) {
        return false;
    }
    match rec.status.sync_status {
        SyncStatus::SyncNow | SyncStatus::Syncing => true,
        _ => now_ms >= rec.status.next_start_ms,
    }
}

pub(super) fn apply(state: &impl StateRead, ch: &mut Changes, cmd: &MirrorCommand) -> Result<MetaResponse, StateError> {
    let repo = cmd.repo();
    if !repo_exists(state, repo)? {
        return Ok(MetaResponse::NotFound);
    }
    let current = mirror(state, repo)?;
    match cmd {
        MirrorCommand::SetRepoState { state: new, .. } => return Ok(set_repo_state(ch, repo, *new, current.is_some())),
        MirrorCommand::PutMirror { config, create, keep_password, .. } => return put_mirror(state, ch, repo, current, config, *create, *keep_password),
        _ => {}
    }
    let Some(mut rec) = current else { return Ok(MetaResponse::NotFound) };
    let refused = match cmd {
        MirrorCommand::SetRepoState { .. } | MirrorCommand::PutMirror { .. } => unreachable!("handled above"),
        MirrorCommand::SyncNow { now_ms, .. } => sync_now(&mut rec, *now_ms),
        MirrorCommand::SyncCancel { now_ms, .. } => {
            sync_cancel(&mut rec, *now_ms);
            None
        }
        MirrorCommand::AcquireLease { node, now_ms, until_ms, .. } => acquire_lease(state, ch, repo, &mut rec, *node, *now_ms, *until_ms)?,
        MirrorCommand::RenewLease { node, until_ms, .. } => renew_lease(&mut rec, *node, *until_ms),
        MirrorCommand::FinishSync { node, outcome, now_ms, .. } => finish_sync(state, ch, repo, &mut rec, *node, outcome, *now_ms)?,
    };
    if let Some(refused) = refused {
        return Ok(refused);
    }
    ch.put(mirror_key(repo), &rec);
    Ok(MetaResponse::Done)
}

// The handlers below change `rec` and return the refusal, if any; `apply`
// stores `rec` only when there is none.

fn set_repo_state(ch: &mut Changes, repo: &str, new: RepoState, configured: bool) -> MetaResponse {
    if new == RepoState::Mirror && !configured {
        return MetaResponse::Refused(format!("repository {repo} has no mirror configuration: configure one first"));
    }
    if new == RepoState::Normal {
        ch.delete(repo_state_key(repo));
    } else {
        ch.put(repo_state_key(repo), &new);
    }
    MetaResponse::Done
}

fn put_mirror(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    current: Option<MirrorRecord>,
    config: &MirrorConfig,
    create: bool,
    keep_password: bool,
) -> Result<MetaResponse, StateError> {
    if !robot_of_namespace(state, repo, &config.robot)? {
        return Ok(MetaResponse::Refused(format!("robot {} is not a robot of the repository's namespace", config.robot)));
    }
    let rec = match (current, create) {
        (Some(_), true) => return Ok(MetaResponse::Exists(format!("repository {repo} already has a mirror configuration"))),
        (None, false) => return Ok(MetaResponse::NotFound),
        (None, true) => {
            ch.put(repo_state_key(repo), &RepoState::Mirror);
            MirrorRecord {
                config: config.clone(),
                status: MirrorStatus {
                    sync_status: SyncStatus::NeverRun,
                    next_start_ms: config.sync_start_ms,
                    expiration_ms: None,
                    retries_remaining: MIRROR_RETRIES,
                    last_message: None,
                    last_end_ms: None,
                },
                lease: None,
            }
        }
        (Some(mut old), false) => {
            let mut config = config.clone();
            if keep_password {
                config.sealed_password = old.config.sealed_password.clone();
            }
            if config.sync_start_ms != old.config.sync_start_ms {
                old.status.next_start_ms = config.sync_start_ms;
            }
            old.config = config;
            old
        }
    };
    ch.put(mirror_key(repo), &rec);
    Ok(MetaResponse::Done)
}

fn sync_now(rec: &mut MirrorRecord, now_ms: u64) -> Option<MetaResponse> {
    if lease_live(rec, now_ms) {
        return Some(MetaResponse::Refused("a sync of this mirror is running".into()));
    }
    rec.status.sync_status = SyncStatus::SyncNow;
    rec.status.next_start_ms = now_ms;
    None
}

fn sync_cancel(rec: &mut MirrorRecord, now_ms: u64) {
    rec.status.sync_status = SyncStatus::Cancel;
    rec.status.expiration_ms = None;
    rec.status.next_start_ms = next_aligned_start(rec.config.sync_start_ms, rec.config.sync_interval_s, now_ms);
    rec.lease = None;
}

fn acquire_lease(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    rec: &mut MirrorRecord,
    node: NodeId,
    now_ms: u64,
    until_ms: u64,
) -> Result<Option<MetaResponse>, StateError> {
    if repo_state(state, repo)? != RepoState::Mirror {
        return Ok(Some(MetaResponse::Refused(format!("repository {repo} is not in MIRROR state"))));
    }
    if !due(rec, now_ms) {
        return Ok(Some(MetaResponse::Refused("not due, or another node holds the lease".into())));
    }
    // A takeover of a lapsed lease goes on with the same sync: it
    // was announced when it started.
    if rec.status.sync_status != SyncStatus::Syncing {
        let event = NotificationEvent::MirrorSyncStarted { repo: repo.to_string(), message: format!("sync of {} started", rec.config.external_reference) };
        super::notifications::on_event(state, ch, repo, event, now_ms)?;
    }
    rec.lease = Some(MirrorLease { node, until_ms });
    rec.status.sync_status = SyncStatus::Syncing;
    rec.status.expiration_ms = Some(now_ms + rec.config.timeout_s * 1000);
    Ok(None)
}

fn renew_lease(rec: &mut MirrorRecord, node: NodeId, until_ms: u64) -> Option<MetaResponse> {
    match &mut rec.lease {
        Some(l) if l.node == node => {
            l.until_ms = until_ms.max(l.until_ms);
            None
        }
        _ => Some(MetaResponse::Refused("the lease is not this node's any more".into())),
    }
}

/// Records the outcome and schedules the next sync: at the next aligned
/// start after a success or the last retry, at once for a retry.
fn finish_sync(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    rec: &mut MirrorRecord,
    node: NodeId,
    outcome: &SyncOutcome,
    now_ms: u64,
) -> Result<Option<MetaResponse>, StateError> {
    if rec.lease.as_ref().map(|l| l.node) != Some(node) {
        return Ok(Some(MetaResponse::Refused("the lease is not this node's any more".into())));
    }
    rec.lease = None;
    rec.status.expiration_ms = None;
    rec.status.last_end_ms = Some(now_ms);
    let (ok, message) = match outcome {
        SyncOutcome::Success(m) => (true, m),
        SyncOutcome::Fail(m) => (false, m),
    };
    rec.status.last_message = Some(message.clone());
    // Quay's events: the tags the repository has after a success.
    let event = if ok {
        let tags = super::tags::visible_tag_names(state, repo, now_ms)?;
        NotificationEvent::MirrorSyncSuccess { repo: repo.to_string(), tags, message: message.clone() }
    } else {
        NotificationEvent::MirrorSyncFailed { repo: repo.to_string(), tags: vec![], message: message.clone() }
    };
    super::notifications::on_event(state, ch, repo, event, now_ms)?;
    let retries = if ok { MIRROR_RETRIES } else { rec.status.retries_remaining.saturating_sub(1) };
    rec.status.sync_status = if ok { SyncStatus::Success } else { SyncStatus::Fail };
    if ok || retries == 0 {
        rec.status.next_start_ms = next_aligned_start(rec.config.sync_start_ms, rec.config.sync_interval_s, now_ms);
        rec.status.retries_remaining = MIRROR_RETRIES;
    } else {
        // A retry is due at once.
        rec.status.next_start_ms = now_ms;
        rec.status.retries_remaining = retries;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use berth_common::Digest;

    use super::*;
    use crate::state::MemState;

    fn config(robot: &str) -> MirrorConfig {
        MirrorConfig {
            is_enabled: true,
            external_reference: "localhost:5000/lib/app".into(),
            username: None,
            sealed_password: None,
            sync_start_ms: 1_000,
            sync_interval_s: 60,
            robot: robot.into(),
            tag_globs: vec!["*".into()],
            verify_tls: true,
            unsigned_images: false,
            http_proxy: None,
            https_proxy: None,
            no_proxy: None,
            timeout_s: 300,
            architecture_filter: None,
            preferred_region: None,
        }
    }

    fn setup() -> MemState {
        let s = MemState::default();
        let org = OrgRecord { name: "team".into(), email: None, created_at_ms: 0 };
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: Some("admin".into()) })), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("team/app", 0)))), MetaResponse::Done);
        let robot = RobotRecord { namespace: "team".into(), short: "sync".into(), description: String::new(), secret_sha256: "s".into(), created_at_ms: 0 };
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::PutRobot(robot))), MetaResponse::Done);
        s
    }

    fn mirror_cmd(cmd: MirrorCommand) -> MetaCommand {
        MetaCommand::Mirror(cmd)
    }

    fn link(repo: &str) -> MetaCommand {
        MetaCommand::LinkBlob { repo: repo.into(), digest: Digest::sha256_of(b"b"), size: 1, node: 1, now_ms: 1 }
    }

    /// A read-only repository takes no content write; a mirror takes them
    /// from its robot only; back to normal takes them again.
    #[test]
    fn repository_state_guards_content_writes() {
        let s = setup();
        let set = |state| s.run(mirror_cmd(MirrorCommand::SetRepoState { repo: "team/app".into(), state }));
        assert_eq!(set(RepoState::ReadOnly), MetaResponse::Done);
        assert_eq!(s.run(link("team/app")), MetaResponse::RepositoryState { state: RepoState::ReadOnly });
        let as_robot = |cmd| MetaCommand::AsRobot { robot: "team+sync".into(), cmd: Box::new(cmd) };
        assert_eq!(s.run(as_robot(link("team/app"))), MetaResponse::RepositoryState { state: RepoState::ReadOnly }, "not even a robot");
        assert!(matches!(set(RepoState::Mirror), MetaResponse::Refused(_)), "no mirror configured");
        let put = MirrorCommand::PutMirror { repo: "team/app".into(), config: config("team+sync"), create: true, keep_password: false, now_ms: 0 };
        assert_eq!(s.run(mirror_cmd(put.clone())), MetaResponse::Done);
        assert_eq!(repo_state(&s, "team/app").unwrap(), RepoState::Mirror, "creating a mirror makes the repository one");
        assert!(matches!(s.run(mirror_cmd(put)), MetaResponse::Exists(_)), "created once");
        assert_eq!(s.run(link("team/app")), MetaResponse::RepositoryState { state: RepoState::Mirror });
        assert_eq!(
            s.run(MetaCommand::AsRobot { robot: "team+other".into(), cmd: Box::new(link("team/app")) }),
            MetaResponse::RepositoryState { state: RepoState::Mirror }
        );
        assert_eq!(s.run(as_robot(link("team/app"))), MetaResponse::Done);
        assert_eq!(set(RepoState::Normal), MetaResponse::Done);
        assert_eq!(s.run(link("team/app")), MetaResponse::Done);
        // Deleting the repository forgets its state and mirror.
        assert_eq!(set(RepoState::ReadOnly), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::DeleteRepository { name: "team/app".into() })), MetaResponse::Done);
        assert_eq!(s.get_raw(&repo_state_key("team/app")).unwrap(), None);
        assert_eq!(s.get_raw(&mirror_key("team/app")).unwrap(), None);
    }

    #[test]
    fn a_robot_of_another_namespace_is_refused() {
        let s = setup();
        let put = MirrorCommand::PutMirror { repo: "team/app".into(), config: config("other+sync"), create: true, keep_password: false, now_ms: 0 };
        assert!(matches!(s.run(mirror_cmd(put)), MetaResponse::Refused(_)));
        assert_eq!(s.get_raw(&mirror_key("team/app")).unwrap(), None);
        assert_eq!(repo_state(&s, "team/app").unwrap(), RepoState::Normal);
    }

    /// A sync's start (not a takeover's) and outcome are queued, in the
    /// same command, for the repository's and namespace's notifications
    /// of those events.
    #[test]
    fn sync_events_are_queued_for_notifications() {
        let s = setup();
        let repo = || "team/app".to_string();
        let put = MirrorCommand::PutMirror { repo: repo(), config: config("team+sync"), create: true, keep_password: false, now_ms: 0 };
        assert_eq!(s.run(mirror_cmd(put)), MetaResponse::Done);
        for (uuid, scope, event) in [
            ("started", NotificationScope::Repository(repo()), "repo_mirror_sync_started"),
            ("success", NotificationScope::Namespace("team".into()), "repo_mirror_sync_success"),
            ("failed", NotificationScope::Repository(repo()), "repo_mirror_sync_failed"),
        ] {
            let n = NotificationRecord {
                uuid: uuid.into(),
                scope,
                title: String::new(),
                event: event.into(),
                method: "webhook".into(),
                config_json: "{}".into(),
                event_config_json: "{}".into(),
                secret: "s".into(),
                created_at_ms: 0,
                number_of_failures: 0,
                next_seq: 0,
                delivered: 0,
                failed: 0,
                dropped: 0,
            };
            assert_eq!(s.run(MetaCommand::Notification(NotificationCommand::Create(n))), MetaResponse::Done);
        }
        let kinds = |uuid: &str| -> Vec<String> { super::super::notifications::outbox(&s, uuid).unwrap().iter().map(|o| o.event.kind().to_string()).collect() };
        let acquire = |node, now_ms| s.run(mirror_cmd(MirrorCommand::AcquireLease { repo: repo(), node, now_ms, until_ms: now_ms + 100 }));
        assert_eq!(acquire(1, 1_000), MetaResponse::Done);
        assert_eq!(kinds("started"), vec!["repo_mirror_sync_started"]);
        assert_eq!(acquire(2, 1_200), MetaResponse::Done, "a takeover");
        assert_eq!(kinds("started").len(), 1, "a takeover goes on with the announced sync");
        let finish = |outcome| s.run(mirror_cmd(MirrorCommand::FinishSync { repo: repo(), node: 2, outcome, now_ms: 1_250 }));
        assert_eq!(finish(SyncOutcome::Fail("upstream down".into())), MetaResponse::Done);
        assert_eq!(kinds("failed"), vec!["repo_mirror_sync_failed"]);
        assert!(kinds("success").is_empty());
        assert_eq!(acquire(2, 1_300), MetaResponse::Done, "the retry");
        assert_eq!(kinds("started").len(), 2);
        assert_eq!(finish(SyncOutcome::Success("synced".into())), MetaResponse::Done);
        assert_eq!(kinds("success"), vec!["repo_mirror_sync_success"]);
    }

    /// One node holds the lease; another takes it after it lapses; the
    /// loser's finish changes nothing; retries and schedule follow Quay.
    #[test]
    fn leases_and_retries() {
        let s = setup();
        let repo = || "team/app".to_string();
        let put = MirrorCommand::PutMirror { repo: repo(), config: config("team+sync"), create: true, keep_password: false, now_ms: 0 };
        assert_eq!(s.run(mirror_cmd(put)), MetaResponse::Done);
        let acquire = |node, now_ms| s.run(mirror_cmd(MirrorCommand::AcquireLease { repo: repo(), node, now_ms, until_ms: now_ms + 100 }));
        assert!(matches!(acquire(1, 500), MetaResponse::Refused(_)), "not due before the start");
        assert_eq!(acquire(1, 1_000), MetaResponse::Done);
        assert!(matches!(acquire(2, 1_050), MetaResponse::Refused(_)), "node 1 holds it");
        assert_eq!(s.run(mirror_cmd(MirrorCommand::RenewLease { repo: repo(), node: 1, now_ms: 1_050, until_ms: 1_200 })), MetaResponse::Done);
        assert!(matches!(acquire(2, 1_150), MetaResponse::Refused(_)), "renewed");
        assert_eq!(acquire(2, 1_200), MetaResponse::Done, "lapsed: taken over");
        let finish = |node, outcome, now_ms| s.run(mirror_cmd(MirrorCommand::FinishSync { repo: repo(), node, outcome, now_ms }));
        assert!(matches!(finish(1, SyncOutcome::Success("late".into()), 1_250), MetaResponse::Refused(_)), "the old holder's finish");
        assert_eq!(finish(2, SyncOutcome::Fail("upstream down".into()), 1_300), MetaResponse::Done);
        let rec = mirror(&s, "team/app").unwrap().unwrap();
        assert_eq!((rec.status.sync_status, rec.status.retries_remaining, rec.status.next_start_ms), (SyncStatus::Fail, 2, 1_300));
        for (i, now) in [2_000u64, 3_000].into_iter().enumerate() {
            assert_eq!(acquire(1, now), MetaResponse::Done, "retry {i}");
            assert_eq!(finish(1, SyncOutcome::Fail("still down".into()), now + 10), MetaResponse::Done);
        }
        let rec = mirror(&s, "team/app").unwrap().unwrap();
        assert_eq!(rec.status.retries_remaining, MIRROR_RETRIES, "retries used up: reset for the next interval");
        assert_eq!(rec.status.next_start_ms, 61_000, "aligned to the interval from the start");
        assert!(matches!(acquire(1, 4_000), MetaResponse::Refused(_)));
        assert_eq!(s.run(mirror_cmd(MirrorCommand::SyncNow { repo: repo(), now_ms: 4_000 })), MetaResponse::Done);
        assert_eq!(acquire(1, 4_000), MetaResponse::Done);
        assert!(matches!(s.run(mirror_cmd(MirrorCommand::SyncNow { repo: repo(), now_ms: 4_010 })), MetaResponse::Refused(_)), "running");
        assert_eq!(s.run(mirror_cmd(MirrorCommand::SyncCancel { repo: repo(), now_ms: 4_020 })), MetaResponse::Done);
        let rec = mirror(&s, "team/app").unwrap().unwrap();
        assert_eq!((rec.status.sync_status, rec.lease), (SyncStatus::Cancel, None));
        assert!(matches!(finish(1, SyncOutcome::Success("done".into()), 4_030), MetaResponse::Refused(_)), "a cancelled sync's finish");
    }

    #[test]
    fn aligned_starts() {
        assert_eq!(next_aligned_start(1_000, 60, 0), 1_000);
        assert_eq!(next_aligned_start(1_000, 60, 1_000), 61_000);
        assert_eq!(next_aligned_start(1_000, 60, 60_999), 61_000);
        assert_eq!(next_aligned_start(1_000, 60, 61_000), 121_000);
    }
}
