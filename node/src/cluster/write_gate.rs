//! The leader's rules for writes: which actor may submit which command,
//! judged against the leader's own state before the command is proposed
//! (the trust model is in [`berth_raft::forward`]).
//!
//! Every command falls in one class ([`rule_of`], the one table):
//! - bootstrap-only: the cluster's first command, made by `init` on its
//!   first node and never forwarded;
//! - the node's own work: blob holders, sweeps, audit batches and their
//!   pruning, registrations under a join token, the CA the node runs on.
//!   Only the node itself makes
//!   them, and a command that names a node names the submitting one;
//! - a client's command: pushes, deletes, repositories, organizations,
//!   teams, robots, tokens, permissions. The client must still exist on
//!   the leader (a user or robot not deleted, an application token neither
//!   deleted nor expired);
//! - a user's own record ([`Rule::OwnUser`]): a password change by the user
//!   itself, or by a superuser;
//! - cluster administration: node roles and removal, join tokens, node
//!   registration without a token, placement, probes, users created or
//!   deleted, token keys, CA rotation, drill reports, and whatever grants superuser. These need a
//!   superuser the leader knows, or the operator of a member, and come
//!   through a voter: a learner keeps no CA key, and must not be able to
//!   promote itself to get one or rotate to a CA of its own. (A probe,
//!   which changes nothing, and a drill's report, which grants nothing,
//!   come through any member.)
//!
//! What a client may do within its rights (push to this repository, grant
//! that team) stays the serving node's decision: it authenticated the
//! client and holds the same records, at most a heartbeat behind.

use berth_common::NodeId;
use berth_gateway::Principal;
use berth_raft::command::CaCommand;
use berth_raft::command::{IdentityCommand, TokenScope};
use berth_raft::command::{MetaCommand, MirrorCommand, NotificationCommand, OAuthCommand, ProxyCacheCommand, ScanCommand, TagCommand, UserRecord};
use berth_raft::state::{keys, StateError};
use berth_raft::{Actor, MetaState, Origin, StateRead, WriteGate};

use crate::identity::auth::principal_in;
use crate::util::now_ms;

/// Who may submit a command.
#[derive(Debug, PartialEq, Eq)]
enum Rule {
    /// `init` on the cluster's first node, for its operator.
    Bootstrap,
    /// The submitting node itself; every node named must be it.
    NodeOwn { names: Vec<NodeId> },
    /// The leader's own work, never forwarded.
    LeaderOwn,
    /// A client that still exists; the node named holding the blob is the
    /// submitting one, or one the leader already knows holds it (a mount
    /// links the copy another node has).
    ClientHolding { node: NodeId, holders: Vec<NodeId> },
    /// A client that still exists.
    Client,
    /// A client that still exists, through node `node`: the submitting one.
    ClientAt { node: NodeId },
    /// The user itself, or a superuser.
    OwnUser(String),
    /// A superuser, or a member's operator, through a voter.
    Admin,
    /// A superuser, or a member's operator, through any member: a write
    /// that changes nothing but proves the path (drills, `cluster probe`),
    /// or a drill's report, which changes no one's rights (an edge node
    /// serving the console records the region drill it ran).
    Probe,
}

/// The one table: the rule for each command, given the leader's state
/// (whether a user record grants or keeps superuser is read there).
fn rule_of(state: &MetaState, cmd: &MetaCommand) -> Result<Rule, StateError> {
    use IdentityCommand as I;
    use MetaCommand as M;
    Ok(match cmd {
        M::Bootstrap(_) => Rule::Bootstrap,
        M::RegisterNode { token: Some(_), .. } => Rule::NodeOwn { names: vec![] },
        M::RegisterNode { token: None, .. } => Rule::Admin,
        M::SetNodeRole { .. } | M::RemoveNode { .. } | M::CreateJoinToken(_) | M::RevokeJoinToken { .. } => Rule::Admin,
        M::SetPlacement { .. } => Rule::Admin,
        M::Probe { .. } => Rule::Probe,
        M::RecordDrill(_) => Rule::Probe,
        // A change of the state's format, once every member reads it.
        M::IndexBlobRepos => Rule::LeaderOwn,
        M::PutUser(rec) if rec.superuser || is_superuser(state, &rec.name)? => Rule::Admin,
        M::PutUser(rec) => Rule::OwnUser(rec.name.clone()),
        M::AddBlobHolder { node, .. } | M::RemoveBlobHolder { node, .. } => Rule::NodeOwn { names: vec![*node] },
        M::SweepBlob { .. } => Rule::NodeOwn { names: vec![] },
        M::LinkBlob { digest, node, .. } => {
            let holders = state.get::<berth_raft::command::BlobRecord>(&keys::blob(digest))?.map(|b| b.holders.into_iter().collect()).unwrap_or_default();
            Rule::ClientHolding { node: *node, holders }
        }
        M::CreateRepository(_)
        | M::PutManifest { .. }
        | M::DeleteManifest { .. }
        | M::DeleteManifestAt { .. }
        | M::SetTag { .. }
        | M::DeleteTag { .. }
        | M::DeleteTagAt { .. }
        | M::UnlinkBlob { .. } => Rule::Client,
        // Expiration, locks and restores are the repository's business:
        // whether the client may (write; admin to unlock) is the serving
        // node's decision, as for a push.
        M::Tag(TagCommand::SetExpiration { .. } | TagCommand::SetImmutable { .. } | TagCommand::Restore { .. }) => Rule::Client,
        // The lifecycle worker's, re-checked when applied: only an expired row closes.
        M::Tag(TagCommand::CloseExpired { .. }) => Rule::NodeOwn { names: vec![] },
        // A push with its origin is a push, and names the node that took
        // it; the notification settings are the repository's or
        // namespace's admins' (the serving node checks).
        M::PutManifestFrom { origin, .. } => Rule::ClientAt { node: origin.node },
        M::Notification(c) => match c {
            NotificationCommand::Create(_) | NotificationCommand::Delete { .. } | NotificationCommand::Reset { .. } | NotificationCommand::Test { .. } => {
                Rule::Client
            }
            // The deliverer's and the workers', re-checked when applied.
            NotificationCommand::Delivered { .. } | NotificationCommand::GaveUp { .. } | NotificationCommand::Emit { .. } => Rule::NodeOwn { names: vec![] },
        },
        // A namespace's window is its administrator's business, judged by
        // the serving node like a repository's settings.
        M::Tag(TagCommand::SetTimeMachine { .. }) => Rule::Client,
        // The lifecycle worker's and the collector's, re-checked when
        // applied against the window in the state.
        M::Tag(TagCommand::PruneHistory { .. } | TagCommand::CollectManifests { .. } | TagCommand::AutoPrune { .. }) => Rule::NodeOwn { names: vec![] },
        // Policies are their namespace's or repository's administrators'
        // business, judged by the serving node.
        M::Tag(
            TagCommand::PutImmutabilityPolicy { .. }
            | TagCommand::DeleteImmutabilityPolicy { .. }
            | TagCommand::PutAutoPrunePolicy { .. }
            | TagCommand::DeleteAutoPrunePolicy { .. },
        ) => Rule::Client,
        // Quotas are set by superusers only (members read them).
        M::Quota(_) => Rule::Admin,
        M::Mirror(c) => match c {
            // Whether the client administers the repository is the
            // serving node's decision, as for its other settings.
            MirrorCommand::SetRepoState { .. } | MirrorCommand::PutMirror { .. } | MirrorCommand::SyncNow { .. } | MirrorCommand::SyncCancel { .. } => {
                Rule::Client
            }
            // The sync worker's, for the node running the sync.
            MirrorCommand::AcquireLease { node, .. } | MirrorCommand::RenewLease { node, .. } | MirrorCommand::FinishSync { node, .. } => {
                Rule::NodeOwn { names: vec![*node] }
            }
        },
        // Applications are their organization's administrators' business,
        // and a token goes to the user who approved it: the serving node
        // checks both (the write names that user), as for app tokens.
        M::OAuth(OAuthCommand::IssueToken { token, .. } | OAuthCommand::ExchangeCode { token, .. })
            if token.scopes.contains(&TokenScope::SuperUser) && is_superuser(state, &token.owner)? =>
        {
            Rule::Admin
        }
        M::OAuth(_) => Rule::Client,
        // Judged in `judge`: the robot's own, then the command's rule.
        M::AsRobot { cmd, .. } => rule_of(state, cmd)?,
        M::ProxyCache(c) => match c {
            // Whether the client administers the organization is the
            // serving node's decision, as for its other settings.
            ProxyCacheCommand::Put { .. } | ProxyCacheCommand::Delete { .. } => Rule::Client,
            // The fill's, for the node fetching.
            ProxyCacheCommand::AcquireFetch { node, .. } | ProxyCacheCommand::RenewFetch { node, .. } | ProxyCacheCommand::FinishFetch { node, .. } => {
                Rule::NodeOwn { names: vec![*node] }
            }
            // Judged in `judge`: the node's operator's, then the command's rule.
            ProxyCacheCommand::Fill(cmd) => rule_of(state, cmd)?,
        },
        M::Scan(c) => match c {
            // The scan worker's, for the node holding the scan.
            ScanCommand::Acquire { node, .. } | ScanCommand::Renew { node, .. } | ScanCommand::Finish { node, .. } => Rule::NodeOwn { names: vec![*node] },
            // Any node's: a layer's index and a re-match are facts every
            // node computes the same, re-checked against the generation.
            ScanCommand::PutLayerIndex { .. } | ScanCommand::Rematched { .. } => Rule::NodeOwn { names: vec![] },
            // Feeds decide what every image reports: superusers only.
            ScanCommand::ImportFeed { .. } => Rule::Admin,
            // Whether the client may rescan the repository's image is the
            // serving node's decision.
            ScanCommand::Requeue { .. } => Rule::Client,
            // Which URLs feed every image's report: superusers only.
            ScanCommand::PutSource { .. } | ScanCommand::RemoveSource { .. } => Rule::Admin,
            // The scheduled fetch's, for the node holding the source's lease
            // (the state machine checks the lease).
            ScanCommand::AcquireSource { node, .. } | ScanCommand::SourceFetched { node, .. } => Rule::NodeOwn { names: vec![*node] },
        },
        M::Ca(c) => match c {
            CaCommand::ReportNodeCa { node, .. } => Rule::NodeOwn { names: vec![*node] },
            // The leader drops the key once it holds it in its keyring;
            // from anyone else it could lose the only copy.
            CaCommand::ForgetLegacyKey => Rule::LeaderOwn,
            CaCommand::StartRotation { .. } | CaCommand::FinishRotation => Rule::Admin,
        },
        M::Identity(c) => match c {
            I::AppendAudit(records) => Rule::NodeOwn { names: records.iter().map(|r| r.node).collect() },
            I::PruneAudit { .. } => Rule::NodeOwn { names: vec![] },
            I::CreateUser(_) | I::DeleteUser { .. } | I::RotateTokenKey { .. } => Rule::Admin,
            // A superuser's token with `super:user` is a superuser.
            I::CreateAppToken(t) if t.scopes.contains(&TokenScope::SuperUser) && is_superuser(state, &t.owner)? => Rule::Admin,
            I::CreateOrg { .. }
            | I::DeleteOrg { .. }
            | I::PutTeam { .. }
            | I::DeleteTeam { .. }
            | I::SetTeamMember { .. }
            | I::PutRobot(_)
            | I::DeleteRobot { .. }
            | I::CreateAppToken(_)
            | I::DeleteAppToken { .. }
            | I::CreateRepository(_)
            | I::UpdateRepository { .. }
            | I::DeleteRepository { .. }
            | I::SetPermission { .. } => Rule::Client,
        },
    })
}

fn is_superuser(state: &MetaState, name: &str) -> Result<bool, StateError> {
    Ok(state.get::<UserRecord>(&keys::user(name))?.is_some_and(|u| u.superuser))
}

/// The client `actor` names, as the leader's state has it now.
fn client(state: &MetaState, actor: &Actor) -> Result<Principal, String> {
    let Actor::Client(account) = actor else { return Err("a node may not make a client's command for itself".into()) };
    let found = principal_in(state, account, now_ms()).map_err(|e| format!("the leader could not read the account: {e}"))?;
    match found {
        None => Err(format!("the {} this write is for no longer exists on the leader", Actor::Client(account.clone()).kind())),
        Some(Principal::Anonymous) => Err("an anonymous client may not write".into()),
        Some(p) => Ok(p),
    }
}

fn node_own(origin: Origin, actor: &Actor, names: &[NodeId]) -> Result<(), String> {
    if *actor != Actor::Node {
        return Err("only a node makes this command, for itself".into());
    }
    match names.iter().find(|n| **n != origin.node) {
        Some(other) => Err(format!("node {} may not make this command for node {other}", origin.node)),
        None => Ok(()),
    }
}

/// Judges `cmd` for `actor`, submitted at `origin`, by its rule.
pub fn judge(state: &MetaState, origin: Origin, actor: &Actor, cmd: &MetaCommand) -> Result<(), String> {
    // A write a robot makes names that robot: the repository's state
    // trusts the name (a mirror takes its robot's writes only).
    if let MetaCommand::AsRobot { robot, .. } = cmd {
        if *actor != Actor::Client(berth_raft::ClientAccount::Robot(robot.clone())) {
            return Err("a robot's write must come from that robot".into());
        }
    }
    // A proxy cache's fill is the node's own work, made as its operator
    // (no client may write into a proxy-cache organization).
    if let MetaCommand::ProxyCache(ProxyCacheCommand::Fill(_)) = cmd {
        if *actor != Actor::OPERATOR {
            return Err("a proxy cache's fill is made by a node as its operator".into());
        }
    }
    let rule = rule_of(state, cmd).map_err(|e| format!("the leader could not read its state: {e}"))?;
    match rule {
        Rule::Bootstrap if origin.forwarded => Err("bootstrap is never forwarded".into()),
        Rule::Bootstrap if *actor == Actor::OPERATOR => Ok(()),
        Rule::Bootstrap => Err("only the operator bootstraps a cluster".into()),
        Rule::NodeOwn { names } => node_own(origin, actor, &names),
        Rule::LeaderOwn if origin.forwarded => Err(format!("node {} may not make a command only the leader makes", origin.node)),
        Rule::LeaderOwn => node_own(origin, actor, &[]),
        Rule::ClientHolding { node, holders } => {
            client(state, actor)?;
            if node == origin.node || holders.contains(&node) {
                Ok(())
            } else {
                Err(format!("node {} may not say that node {node} holds a blob it does not hold", origin.node))
            }
        }
        Rule::Client => client(state, actor).map(|_| ()),
        Rule::ClientAt { node } => {
            client(state, actor)?;
            if node == origin.node {
                Ok(())
            } else {
                Err(format!("node {} may not say that node {node} took a push", origin.node))
            }
        }
        Rule::OwnUser(name) => {
            let p = client(state, actor)?;
            let own = match &p {
                Principal::User { name: me, .. } => *me == name,
                Principal::App { owner, .. } => *owner == name && p.has_scope("user:admin"),
                _ => false,
            };
            if own || p.is_superuser() {
                Ok(())
            } else {
                Err(format!("a {} may not change another user's record", p.kind()))
            }
        }
        // A learner (an edge node, or a voter's replacement catching up)
        // never holds the CA key; were it to make cluster commands, it
        // could promote itself to get the key or rotate to a CA of its own.
        Rule::Admin if !origin.voter => {
            Err(format!("node {} is not a voter: cluster administration goes through a voter (`berth cluster status` lists them)", origin.node))
        }
        Rule::Admin | Rule::Probe => match client(state, actor)? {
            p if p.is_superuser() => Ok(()),
            p => Err(format!("a {} that is not a superuser on the leader may not make this command", p.kind())),
        },
    }
}

/// The node's [`WriteGate`]: [`judge`].
pub struct WriteRules;

impl WriteGate for WriteRules {
    fn check(&self, state: &MetaState, origin: Origin, actor: &Actor, cmd: &MetaCommand) -> Result<(), String> {
        judge(state, origin, actor, cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_raft::ClientAccount;

    /// A node's own work names only the node that submits it; cluster
    /// commands need an administrator the leader knows; a bootstrap never
    /// travels.
    #[test]
    fn node_work_names_only_the_submitter() {
        let dir = tempfile::tempdir().unwrap();
        let store = berth_raft::RocksStore::open(dir.path()).unwrap();
        let state = store.state();
        let d = berth_common::Digest::sha256_of(b"x");
        let here = Origin { node: 2, forwarded: true, voter: true };
        let own = MetaCommand::AddBlobHolder { digest: d.clone(), size: 1, node: 2 };
        let other = MetaCommand::RemoveBlobHolder { digest: d.clone(), node: 3 };
        assert_eq!(judge(&state, here, &Actor::Node, &own), Ok(()));
        assert!(judge(&state, here, &Actor::Node, &other).unwrap_err().contains("node 3"));
        assert!(judge(&state, here, &Actor::OPERATOR, &own).is_err(), "a client does not make a node's work");
        // The operator is a member's; anyone else must exist on the leader.
        let probe = MetaCommand::Probe { at_ms: 1 };
        assert_eq!(judge(&state, here, &Actor::OPERATOR, &probe), Ok(()));
        assert!(judge(&state, here, &Actor::Node, &probe).is_err());
        assert!(judge(&state, here, &Actor::Client(ClientAccount::User("ghost".into())), &probe).unwrap_err().contains("no longer exists"));
        let boot = MetaCommand::Bootstrap(berth_raft::command::ClusterRecord {
            cluster_id: "c".into(),
            ca_cert_pem: String::new(),
            ca_key_pem: String::new(),
            token_signing_key_pem: String::new(),
            created_at_ms: 0,
        });
        assert!(judge(&state, here, &Actor::OPERATOR, &boot).is_err());
        assert_eq!(judge(&state, Origin { node: 1, forwarded: false, voter: true }, &Actor::OPERATOR, &boot), Ok(()));
    }

    /// Cluster administration comes through a voter, whoever asks: a
    /// learner's operator (or a learner claiming a superuser) cannot
    /// promote it, remove a voter or rotate the CA. Its clients' work, its
    /// own work and a probe still pass; the legacy key is the leader's.
    #[test]
    fn cluster_administration_comes_through_a_voter() {
        let dir = tempfile::tempdir().unwrap();
        let store = berth_raft::RocksStore::open(dir.path()).unwrap();
        let state = store.state();
        let learner = Origin { node: 4, forwarded: true, voter: false };
        let voter = Origin { node: 2, forwarded: true, voter: true };
        let admin = [
            MetaCommand::SetNodeRole { node: 4, role: berth_raft::command::NodeRole::Voter },
            MetaCommand::RemoveNode { node: 1 },
            MetaCommand::Ca(CaCommand::FinishRotation),
        ];
        for cmd in &admin {
            let why = judge(&state, learner, &Actor::OPERATOR, cmd).unwrap_err();
            assert!(why.contains("node 4 is not a voter"), "{}: {why}", cmd.kind());
            assert_eq!(judge(&state, voter, &Actor::OPERATOR, cmd), Ok(()), "{}", cmd.kind());
        }
        assert_eq!(judge(&state, learner, &Actor::OPERATOR, &MetaCommand::Probe { at_ms: 1 }), Ok(()));
        let report = MetaCommand::RecordDrill(berth_raft::command::DrillReportRecord {
            kind: berth_raft::command::DrillKind::Region,
            by: "operator".into(),
            started_ms: 1,
            ended_ms: 2,
            target: "edge".into(),
            nodes: vec![4],
            figures_json: "{}".into(),
        });
        assert_eq!(judge(&state, learner, &Actor::OPERATOR, &report), Ok(()), "a drill's report comes through any member");
        assert!(judge(&state, learner, &Actor::Node, &report).is_err(), "an administrator's, not a node's own");
        let d = berth_common::Digest::sha256_of(b"x");
        assert_eq!(judge(&state, learner, &Actor::Node, &MetaCommand::AddBlobHolder { digest: d, size: 1, node: 4 }), Ok(()));
        let forget = MetaCommand::Ca(CaCommand::ForgetLegacyKey);
        assert!(judge(&state, voter, &Actor::Node, &forget).is_err(), "not from a follower, even a voter");
        assert_eq!(judge(&state, Origin { node: 1, forwarded: false, voter: true }, &Actor::Node, &forget), Ok(()));
    }

    /// The tag lifecycle's commands are a client's: a node cannot make them
    /// for itself, and a client the leader does not know cannot either.
    #[test]
    fn tag_commands_are_a_clients() {
        let dir = tempfile::tempdir().unwrap();
        let store = berth_raft::RocksStore::open(dir.path()).unwrap();
        let state = store.state();
        let here = Origin { node: 2, forwarded: true, voter: true };
        let (repo, tag, d) = (String::from("r"), String::from("t"), berth_common::Digest::sha256_of(b"x"));
        let cmds = [
            MetaCommand::DeleteTagAt { repo: repo.clone(), tag: tag.clone(), if_current: None, now_ms: 1 },
            MetaCommand::DeleteManifestAt { repo: repo.clone(), digest: d.clone(), now_ms: 1 },
            MetaCommand::Tag(TagCommand::SetExpiration { repo: repo.clone(), tag: tag.clone(), expiration_ms: None, now_ms: 1 }),
            MetaCommand::Tag(TagCommand::SetImmutable { repo: repo.clone(), tag: tag.clone(), immutable: false, now_ms: 1 }),
            MetaCommand::Tag(TagCommand::Restore { repo: repo.clone(), tag, digest: d.clone(), now_ms: 1 }),
            MetaCommand::Tag(TagCommand::SetTimeMachine { namespace: "ns".into(), tag_expiration_s: 0 }),
            MetaCommand::Tag(TagCommand::DeleteImmutabilityPolicy { scope: "ns".into(), uuid: "u".into() }),
            MetaCommand::Tag(TagCommand::DeleteAutoPrunePolicy { scope: "ns".into(), uuid: "u".into() }),
        ];
        for cmd in &cmds {
            assert_eq!(rule_of(&state, cmd).unwrap(), Rule::Client, "{}", cmd.kind());
            assert!(judge(&state, here, &Actor::Node, cmd).is_err(), "{}", cmd.kind());
            assert!(judge(&state, here, &Actor::Client(ClientAccount::User("ghost".into())), cmd).unwrap_err().contains("no longer exists"));
        }
        let delivered = MetaCommand::Notification(NotificationCommand::Delivered { uuid: "n".into(), seq: 0 });
        assert_eq!(judge(&state, here, &Actor::Node, &delivered), Ok(()), "the deliverer's");
        assert!(judge(&state, here, &Actor::OPERATOR, &delivered).is_err(), "a client does not mark deliveries");
        let origin = |node| berth_raft::command::PushOrigin { pushed_by: "ghost".into(), node, region: "eu".into(), registry: "https://r".into() };
        let record = berth_raft::command::ManifestRecord {
            repo: "r".into(),
            digest: berth_common::Digest::sha256_of(b"m"),
            media_type: "m".into(),
            bytes: vec![],
            blobs: vec![],
            children: vec![],
            subject: None,
            pushed_at_ms: 1,
        };
        let push = |node| MetaCommand::PutManifestFrom { record: record.clone(), tag: None, origin: origin(node), expiration_ms: Some(2), immutable: false };
        assert_eq!(rule_of(&state, &push(2)).unwrap(), Rule::ClientAt { node: 2 });
        assert!(judge(&state, here, &Actor::OPERATOR, &push(3)).unwrap_err().contains("node 3"), "a push names the node that took it");
        assert_eq!(judge(&state, here, &Actor::OPERATOR, &push(2)), Ok(()));
        let reset = MetaCommand::Notification(NotificationCommand::Reset { uuid: "n".into() });
        assert!(judge(&state, here, &Actor::Node, &reset).is_err(), "a node does not reset a notification for itself");
        for worker in [
            MetaCommand::Tag(TagCommand::CloseExpired { repo: "r".into(), tag: "t".into(), now_ms: 1 }),
            MetaCommand::Tag(TagCommand::PruneHistory { repo: "r".into(), now_ms: 1 }),
            MetaCommand::Tag(TagCommand::CollectManifests { repo: "r".into(), digests: vec![d.clone()], now_ms: 1, min_age_ms: 0 }),
            MetaCommand::Tag(TagCommand::AutoPrune { repo: "r".into(), tags: vec!["t".into()], now_ms: 1 }),
        ] {
            assert_eq!(judge(&state, here, &Actor::Node, &worker), Ok(()), "the worker's: {}", worker.kind());
            assert!(judge(&state, here, &Actor::OPERATOR, &worker).is_err(), "a client does not make the worker's: {}", worker.kind());
        }
        // Quotas are a superuser's: not a node's, not a plain user's.
        use berth_raft::command::QuotaCommand;
        for quota in [
            MetaCommand::Quota(QuotaCommand::Set { namespace: "ns".into(), quota: None }),
            MetaCommand::Quota(QuotaCommand::SetDefault { limit_bytes: Some(1) }),
        ] {
            assert_eq!(rule_of(&state, &quota).unwrap(), Rule::Admin, "{}", quota.kind());
            assert!(judge(&state, here, &Actor::Node, &quota).is_err());
            assert!(judge(&state, here, &Actor::Client(ClientAccount::User("ghost".into())), &quota).is_err());
        }
        // A robot's content write is that robot's alone.
        let link = MetaCommand::LinkBlob { repo: "r".into(), digest: berth_common::Digest::sha256_of(b"x"), size: 1, node: 2, now_ms: 1 };
        let as_robot = MetaCommand::AsRobot { robot: "team+sync".into(), cmd: Box::new(link) };
        for other in
            [Actor::Node, Actor::OPERATOR, Actor::Client(ClientAccount::Robot("team+other".into())), Actor::Client(ClientAccount::User("team+sync".into()))]
        {
            assert_eq!(judge(&state, here, &other, &as_robot), Err("a robot's write must come from that robot".into()), "{other:?}");
        }
        assert!(
            judge(&state, here, &Actor::Client(ClientAccount::Robot("team+sync".into())), &as_robot).unwrap_err().contains("no longer exists"),
            "then judged as the command"
        );
        // The sync worker's lease commands name the submitting node only.
        let lease = |node| MetaCommand::Mirror(MirrorCommand::RenewLease { repo: "r".into(), node, now_ms: 1, until_ms: 2 });
        assert_eq!(judge(&state, here, &Actor::Node, &lease(2)), Ok(()));
        assert!(judge(&state, here, &Actor::Node, &lease(3)).is_err());
        // A proxy cache's fill is a node's, made as its operator; its fetch
        // leases name the submitting node only.
        use berth_raft::ProxyCacheCommand;
        let link = MetaCommand::LinkBlob { repo: "cache/a".into(), digest: berth_common::Digest::sha256_of(b"x"), size: 1, node: 2, now_ms: 1 };
        let fill = MetaCommand::ProxyCache(ProxyCacheCommand::Fill(Box::new(link)));
        assert_eq!(judge(&state, here, &Actor::OPERATOR, &fill), Ok(()));
        for other in [Actor::Node, Actor::Client(ClientAccount::User("admin".into())), Actor::Client(ClientAccount::Robot("cache+r".into()))] {
            assert!(judge(&state, here, &other, &fill).unwrap_err().contains("operator"), "{other:?}");
        }
        let fetch =
            |node| MetaCommand::ProxyCache(ProxyCacheCommand::AcquireFetch { repo: "cache/a".into(), reference: "1".into(), node, now_ms: 1, until_ms: 2 });
        assert_eq!(judge(&state, here, &Actor::Node, &fetch(2)), Ok(()));
        assert!(judge(&state, here, &Actor::Node, &fetch(3)).is_err());
        assert!(judge(&state, here, &Actor::OPERATOR, &fetch(2)).is_err());
    }
}
