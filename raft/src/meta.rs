//! [`MetaNodeHandle`]: the metadata plane as the rest of a node sees it.
//!
//! - `write` works on any node: a follower forwards the command to the
//!   leader, follows leader changes, and returns once the entry is applied
//!   locally too, so the caller reads its own write on this node.
//! - `state()` reads the local state machine (fast, possibly behind);
//!   `read_barrier` makes the next local reads linearizable.
//! - Membership follows the node records through [`crate::membership`].
//! - Every write names its [`Actor`], and the leader judges it with the
//!   node's [`WriteGate`] before proposing it, whether it was submitted
//!   on the leader or forwarded to it ([`MetaNodeHandle::judge`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_common::NodeId;
use openraft::{Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::command::{MetaCommand, MetaRequest, MetaResponse};
use crate::forward::{Actor, ForwardedWrite, Origin, WriteGate};
use berth_common::LinkFilter;

use berth_common::PeerTls;

use crate::group::Proposer;
use crate::network::{call, CallError, PeerChannels, PeerFeatures, PeerNetworkFactory, PeerRpc};
use crate::store::{MetaState, RocksStore};
use crate::types::*;
use crate::wire::{ForwardReply, LeaderView, PeerResult, PreVoteReply, PreVoteRequest};

/// How long a forwarded write may stay unanswered once another node leads
/// (see `MetaNodeHandle::superseded`).
const FORWARD_GRACE: Duration = Duration::from_secs(1);

/// Timing of the metadata group. Defaults suit regions up to ~300 ms apart.
///
/// `heartbeat_ms` must exceed the largest round trip between two nodes:
/// openraft 0.9 gives each AppendEntries call one heartbeat interval, so
/// across a slower link every call times out and followers never catch up
/// (`chaos-tests/tests/wan_raft.rs` holds this at 150 ms). A LAN-only
/// cluster can use 100 / 500 / 1000 for faster failover.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaConfig {
    /// How often the leader sends heartbeats, in ms.
    pub heartbeat_ms: u64,
    /// A voter that hears no leader for the leader lease (which is
    /// election_max_ms) plus a random time in [election_min_ms / 2,
    /// election_min_ms] asks the others whether they would vote for it,
    /// and campaigns if a majority would (see `run_elections`); after a
    /// split vote or a refused round it waits as long again.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so that a slightly lagging
    /// follower catches up from the log instead of a snapshot.
    pub keep_entries_after_snapshot: u64,
    /// Upper bound on one snapshot transfer, in ms.
    pub install_snapshot_timeout_ms: u64,
    /// How long a write may wait for a leader and a quorum before failing
    /// with "unavailable", in ms.
    pub write_timeout_ms: u64,
    /// The most committed entries a follower takes beyond what it has
    /// applied (fewer when entries are large: about 32 MiB of them at
    /// most). The leader sends the rest once the follower has applied
    /// more, so one that applies slower than it receives does not hold
    /// the difference in memory.
    pub unapplied_entries: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            heartbeat_ms: 400,
            election_min_ms: 1200,
            election_max_ms: 2400,
            snapshot_after_entries: 10_000,
            keep_entries_after_snapshot: 1_000,
            install_snapshot_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            unapplied_entries: 4_096,
        }
    }
}

impl MetaConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ms == 0 || self.heartbeat_ms * 2 > self.election_min_ms {
            return Err(ConfigError::Heartbeat { heartbeat_ms: self.heartbeat_ms, election_min_ms: self.election_min_ms });
        }
        if self.election_min_ms >= self.election_max_ms {
            return Err(ConfigError::ElectionWindow { min: self.election_min_ms, max: self.election_max_ms });
        }
        if self.snapshot_after_entries == 0 {
            return Err(ConfigError::NoSnapshots);
        }
        if self.unapplied_entries == 0 {
            return Err(ConfigError::NoUnapplied);
        }
        Ok(())
    }

    fn openraft(&self) -> Result<Config, MetaError> {
        let cfg = Config {
            cluster_name: "berth".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.keep_entries_after_snapshot,
            // Elections are this crate's, with a pre-vote (`run_elections`).
            enable_elect: false,
            ..Default::default()
        };
        cfg.validate().map_err(|e| MetaError::Config(e.to_string()))
    }
}

/// Why a [`MetaConfig`] is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("heartbeat_ms ({heartbeat_ms}) must be non-zero and at most half of election_min_ms ({election_min_ms})")]
    Heartbeat { heartbeat_ms: u64, election_min_ms: u64 },
    #[error("election_min_ms ({min}) must be below election_max_ms ({max})")]
    ElectionWindow { min: u64, max: u64 },
    #[error("snapshot_after_entries must be at least 1")]
    NoSnapshots,
    #[error("unapplied_entries must be at least 1")]
    NoUnapplied,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaError {
    /// No leader, no quorum, or the leader could not be reached in time.
    /// Callers map this to 503: the write may be retried.
    #[error("metadata unavailable: {0}")]
    Unavailable(String),
    /// A forwarded write timed out after it was sent: it may or may not
    /// have been applied.
    #[error("metadata write outcome unknown: {0}")]
    Unknown(String),
    /// The leader's rules refuse the write for its actor; nothing was
    /// proposed. Callers map this to 403.
    #[error("write refused: {0}")]
    Refused(String),
    #[error("invalid metadata configuration: {0}")]
    Config(String),
    #[error("metadata storage failed: {0}")]
    Fatal(String),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Keeps `since` at the moment this node last lost its leader (None while
/// it knows one), from openraft's metrics.
async fn track_leaderless(mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, MetaNode>>, since: Arc<Mutex<Option<Instant>>>) {
    loop {
        let has_leader = metrics.borrow_and_update().current_leader.is_some();
        {
            let mut s = since.lock().expect("leaderless lock");
            match (has_leader, *s) {
                (true, _) => *s = None,
                (false, None) => *s = Some(Instant::now()),
                (false, Some(_)) => {}
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// How long a voter waits without hearing a leader before it asks the
/// others whether it may campaign: the leader lease (election_max_ms: until
/// then the other voters refuse to vote) plus a random half to whole
/// election_min_ms, which spreads the voters' attempts.
fn campaign_after(config: &MetaConfig) -> Duration {
    let min = config.election_min_ms;
    Duration::from_millis(config.election_max_ms + min / 2 + rand::random::<u64>() % (min / 2).max(1))
}

/// About the most bytes of committed entries a follower takes beyond what
/// it has applied (see [`MetaNodeHandle::room_to_apply`]).
const UNAPPLIED_BYTES: u64 = 32 << 20;

/// What a pre-vote round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Canvass {
    /// A majority of the voters would vote for this node.
    Majority,
    /// A majority answered, but not enough of them would vote: a leader is
    /// still heard there, or this node's log is behind.
    Refused,
    /// No majority of the voters answered at all: this node is cut off.
    Unreachable,
}

/// How often the leader looks whether a format change is due.
const FORMAT_CHECK_EVERY: Duration = Duration::from_secs(2);

/// On the leader: turns on a format of the state that this release reads
/// and releases before it do not, once every member has said it reads it.
/// A cluster made by this release has it from its bootstrap; an upgraded
/// one gets it after its last node is upgraded (a rolling upgrade changes
/// nothing until then). Today: blob records whose repositories are kept
/// in an index ([`MetaCommand::IndexBlobRepos`]).
async fn adopt_formats(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(FORMAT_CHECK_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.raft.metrics().borrow().state == ServerState::Shutdown {
            return;
        }
        let node = MetaNodeHandle { inner };
        // Looked at again even once on: a restored backup from before it
        // replaces the state without it.
        match crate::state::StateRead::get_raw(&node.state(), crate::state::keys::BLOB_REPO_INDEX) {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the state's format");
                continue;
            }
        }
        let inner = &node.inner;
        if !node.is_leader() || !crate::group::every_member_reads(inner.id, &inner.raft, &inner.features, crate::network::FEATURE_BLOB_REPO_INDEX) {
            continue;
        }
        match node.write(Actor::Node, MetaCommand::IndexBlobRepos).await {
            Ok(MetaResponse::Done) => {
                tracing::info!(target: "berth_raft::format", "every member reads the blob repository index: blob records keep their repositories there from now on")
            }
            Ok(other) => tracing::warn!(response = ?other, "the blob repository index was not turned on"),
            Err(e) => tracing::warn!(error = %e, "the blob repository index was not turned on"),
        }
    }
}

/// Elections, run by this crate instead of openraft's timer (which is off,
/// see `MetaConfig::openraft`): a voter that has heard no leader for
/// [`campaign_after`] first asks the other voters whether they would vote
/// for it (pre-vote), and campaigns only when a majority would.
///
/// openraft 0.9 has no pre-vote. Without it a voter cut off from the
/// others raises its term at every failed election, and when the cut heals
/// its higher term makes the leader step down: the whole cluster stops
/// taking writes for an election it did not need. With it, the cut-off
/// voter never campaigns, so it keeps its term, and the heal changes
/// nothing. A round that reaches no majority also tells the node it is cut
/// off, and from then on it refuses writes at once ([`MetaNodeHandle::refuses_writes`]).
///
/// A leader handing over asks its target to campaign directly (`Elect`),
/// at the lease plus a fifth of election_min_ms, before any voter here
/// would, so a transfer still goes where it was asked.
async fn run_elections(inner: std::sync::Weak<Inner>) {
    // The moment the current wait started and when it ends.
    let mut deadline: Option<(Instant, Instant)> = None;
    // The leader this node follows and since when it has known it: a leader
    // just learnt of counts as heard then, whatever `leader_heard` says yet.
    let mut following: Option<(NodeId, Instant)> = None;
    // When this node last canvassed or campaigned: a failed round waits a
    // fresh delay before the next.
    let mut last_try: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(inner) = inner.upgrade() else { return };
        let (voter, voters, leader, state) = {
            let m = inner.raft.metrics();
            // Shut down: end at once, so that this task holds no handle
            // (and so no lock on the store) after the node is gone.
            if m.has_changed().is_err() || m.borrow().state == ServerState::Shutdown {
                return;
            }
            let m = m.borrow();
            let voters = m.membership_config.membership().voter_ids().count();
            let voter = m.membership_config.membership().voter_ids().any(|v| v == inner.id);
            (voter, voters, m.current_leader, m.state)
        };
        if !voter || state == ServerState::Leader {
            inner.note_leader_acked();
            (deadline, following, last_try) = (None, None, None);
            inner.set_cut_off(false);
            continue;
        }
        if voters == 1 {
            // The only voter needs nobody's consent; a restarted single
            // node leads again at once.
            if last_try.is_none_or(|t| t.elapsed() > Duration::from_millis(inner.config.election_min_ms)) {
                last_try = Some(Instant::now());
                let _ = inner.raft.trigger().elect().await;
            }
            continue;
        }
        let mut quiet_since = inner.started;
        if let Some(leader) = leader.filter(|l| *l != inner.id) {
            let since = match following {
                Some((l, since)) if l == leader => since,
                _ => following.insert((leader, Instant::now())).1,
            };
            quiet_since = quiet_since.max(since);
        } else {
            following = None;
        }
        if let Some(contact) = inner.last_contact() {
            quiet_since = quiet_since.max(contact);
        }
        if let Some(t) = last_try {
            quiet_since = quiet_since.max(t);
        }
        // A new deadline (and a new random delay) for every call heard.
        let at = match deadline {
            Some((q, at)) if q == quiet_since => at,
            _ => {
                let at = quiet_since + campaign_after(&inner.config);
                deadline = Some((quiet_since, at));
                at
            }
        };
        if Instant::now() < at {
            continue;
        }
        let began = Instant::now();
        last_try = Some(began);
        let canvass = inner.canvass().await;
        inner.set_cut_off(canvass == Canvass::Unreachable);
        *inner.last_round.lock().expect("last_round lock") = Some((began, canvass));
        // A leader heard while the round was out (a peer that won the
        // election this node's round was part of) is followed, not
        // challenged: campaigning now would only depose it.
        if inner.last_contact().is_some_and(|heard| heard > began) {
            tracing::debug!(node_id = inner.id, "a leader was heard during the pre-vote round; not campaigning");
            continue;
        }
        if canvass == Canvass::Majority {
            tracing::info!(node_id = inner.id, quiet_ms = quiet_since.elapsed().as_millis() as u64, "no leader heard and a majority would vote; campaigning");
            let _ = inner.raft.trigger().elect().await;
        } else {
            tracing::debug!(node_id = inner.id, ?canvass, "pre-vote found no majority; not campaigning");
        }
    }
}

struct Inner {
    id: NodeId,
    raft: Raft,
    /// Proposes this node's writes while it leads, grouped under load.
    proposer: Proposer,
    store: RocksStore,
    channels: PeerChannels,
    filter: LinkFilter,
    config: MetaConfig,
    /// Judges every write this node proposes as the leader.
    gate: Arc<dyn WriteGate>,
    /// Set while this leader hands leadership over: it proposes nothing new,
    /// so its followers' leases can run out and the target can win.
    handing_over: std::sync::atomic::AtomicBool,
    /// Since when this node has known no leader (None while it knows one).
    leaderless_since: Arc<Mutex<Option<Instant>>>,
    /// When this node last accepted an AppendEntries or a snapshot from
    /// its leader.
    leader_heard: Mutex<Option<Instant>>,
    /// When a majority last acknowledged this node as the leader, noted
    /// while it leads: once it steps down this, not the heartbeat it last
    /// heard before it led, is its last contact.
    led_acked: Mutex<Option<Instant>>,
    /// When this process started the node: its state is at least as fresh
    /// as its last contact before that.
    started: Instant,
    /// Since when this node's pre-vote rounds have reached no majority of
    /// the voters, with no leader heard since (None otherwise).
    cut_off_since: Mutex<Option<Instant>>,
    /// When this node's last pre-vote round began, and what it found.
    last_round: Mutex<Option<(Instant, Canvass)>>,
    /// Read barriers asked for: each costs the leader a round of
    /// heartbeats, so the node exports the count.
    read_barriers: std::sync::atomic::AtomicU64,
    /// What each peer said it reads.
    features: PeerFeatures,
    /// The removed nodes, which every peer call is checked against.
    removed: RemovedNodes,
}

/// The ids of the nodes recorded as removed, read again only after a node
/// record changed: a point read on every peer call was 3% of a node's
/// work while it copied small blobs.
struct RemovedNodes {
    changes: Arc<crate::watch::KeyWatch>,
    known: Mutex<Option<std::collections::BTreeSet<NodeId>>>,
}

impl Inner {
    /// The id of the last entry in this node's log, as a vote compares it.
    async fn last_log_id(&self) -> Result<Option<LogId>, openraft::StorageError<NodeId>> {
        use openraft::storage::RaftLogStorage;
        Ok(self.store.log_store().get_log_state().await?.last_log_id)
    }

    /// When this node last heard a leader or, as the leader, was last
    /// acknowledged by a majority; None if neither since it started.
    fn last_contact(&self) -> Option<Instant> {
        let heard = *self.leader_heard.lock().expect("leader_heard lock");
        let led = *self.led_acked.lock().expect("led_acked lock");
        heard.max(led)
    }

    /// While this node leads, when a majority last acknowledged it.
    fn leader_acked(&self) -> Option<Instant> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let ms = (m.current_leader == Some(self.id)).then_some(m.millis_since_quorum_ack).flatten()?;
        let now = Instant::now();
        Some(now.checked_sub(Duration::from_millis(ms)).unwrap_or(now))
    }

    /// Keeps [`Inner::leader_acked`] for after this node steps down (the
    /// election loop calls it while the node leads).
    fn note_leader_acked(&self) {
        if let Some(acked) = self.leader_acked() {
            let mut led = self.led_acked.lock().expect("led_acked lock");
            *led = (*led).max(Some(acked));
        }
    }

    /// Notes whether this node knows it is cut off from a majority.
    fn set_cut_off(&self, cut: bool) {
        let mut since = self.cut_off_since.lock().expect("cut_off_since lock");
        match (cut, *since) {
            (true, None) => {
                tracing::warn!(node_id = self.id, "no majority of the voters answered a pre-vote round: this node looks cut off");
                *since = Some(Instant::now());
            }
            (false, Some(t)) => {
                tracing::info!(node_id = self.id, after_ms = t.elapsed().as_millis() as u64, "in touch with a majority again");
                *since = None;
            }
            _ => {}
        }
    }

    /// One pre-vote round: asks every other voter at once whether it would
    /// vote for this node, and counts this node's own vote.
    ///
    /// A peer of an older version has no `PreVote` method; its answer
    /// counts as yes (it would vote as Raft does), so a rolling upgrade
    /// can still elect.
    async fn canvass(&self) -> Canvass {
        let voters: Vec<(NodeId, String)> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            membership.voter_ids().filter(|v| *v != self.id).filter_map(|v| membership.get_node(&v).map(|n| (v, n.peer_addr.clone()))).collect()
        };
        let Ok(last_log_id) = self.last_log_id().await else {
            return Canvass::Refused;
        };
        let ask = PreVoteRequest { candidate: self.id, last_log_id };
        let timeout = Duration::from_millis(self.config.election_min_ms);
        let mut answers: futures::stream::FuturesUnordered<_> = voters
            .iter()
            .map(|(to, addr)| {
                let ask = &ask;
                async move {
                    let answer = if self.filter.allows(self.id, *to) {
                        match self.channels.channel(addr) {
                            Ok(channel) => call::<_, PreVoteReply>(channel, addr, PeerRpc::PreVote, ask, timeout).await,
                            Err(e) => Err(e),
                        }
                    } else {
                        Err(CallError::Cut { from: self.id, to: *to })
                    };
                    (*to, answer)
                }
            })
            .collect();
        // Answers are counted as they come: a majority decides the round
        // at once, without waiting out a voter that is hung (typically the
        // old leader, whose silence started the round).
        let all = voters.len() + 1;
        let (mut answered, mut granted, mut refused) = (1, 1, 0);
        while let Some((to, answer)) = futures::StreamExt::next(&mut answers).await {
            match answer {
                Ok(PreVoteReply::Granted) => (answered, granted) = (answered + 1, granted + 1),
                Err(CallError::Status { status, .. }) if status.starts_with("Unimplemented") => (answered, granted) = (answered + 1, granted + 1),
                Ok(PreVoteReply::Refused(why)) => {
                    (answered, refused) = (answered + 1, refused + 1);
                    tracing::debug!(node_id = self.id, voter = to, reason = %why, "pre-vote refused");
                }
                Err(e) => tracing::debug!(node_id = self.id, voter = to, error = %e, "pre-vote unanswered"),
            }
            if granted * 2 > all || refused * 2 >= all {
                break;
            }
        }
        if granted * 2 > all {
            Canvass::Majority
        } else if answered * 2 > all {
            Canvass::Refused
        } else {
            Canvass::Unreachable
        }
    }
}

/// What a node knows of the group: what the node crate reads, so that
/// openraft's own types stay inside this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub term: u64,
    pub leader: Option<NodeId>,
    pub voters: std::collections::BTreeSet<NodeId>,
    /// Voters and learners.
    pub members: std::collections::BTreeSet<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The log up to here was dropped behind a snapshot.
    pub purged_index: Option<u64>,
    /// The last index of the snapshot this node holds.
    pub snapshot_index: Option<u64>,
    /// A membership change is under way (a joint configuration).
    pub changing_membership: bool,
}

/// A running member (or not-yet-member) of the metadata group.
#[derive(Clone)]
pub struct MetaNodeHandle {
    inner: Arc<Inner>,
}

impl MetaNodeHandle {
    /// Starts the Raft node over an opened store. Serving the peer service
    /// is separate ([`crate::server::serve`]). Outgoing calls leave from
    /// `local_ip` when it is given and not a wildcard. `gate` judges the
    /// writes this node proposes while it leads, its own and forwarded
    /// ones alike.
    pub async fn start(
        id: NodeId,
        store: RocksStore,
        tls: &PeerTls,
        filter: LinkFilter,
        config: MetaConfig,
        local_ip: Option<std::net::IpAddr>,
        gate: Arc<dyn WriteGate>,
    ) -> Result<MetaNodeHandle> {
        config.validate().map_err(|e| MetaError::Config(e.to_string()))?;
        let channels = PeerChannels::new(tls, local_ip);
        let features = PeerFeatures::default();
        let network = PeerNetworkFactory { self_id: id, channels: channels.clone(), filter: filter.clone(), features: features.clone() };
        let raft = Raft::new(id, Arc::new(config.openraft()?), network, store.log_store(), store.state_machine())
            .await
            .map_err(|e| MetaError::Fatal(e.to_string()))?;
        let proposer = Proposer::start(id, raft.clone(), features.clone());
        let leaderless_since = Arc::new(Mutex::new(Some(Instant::now())));
        tokio::spawn(track_leaderless(raft.metrics(), leaderless_since.clone()));
        let removed = RemovedNodes { changes: store.watch(&[crate::state::keys::NODE_PREFIX]), known: Mutex::new(None) };
        let inner = Arc::new(Inner {
            id,
            raft,
            proposer,
            store,
            channels,
            filter,
            config,
            gate,
            handing_over: Default::default(),
            leaderless_since,
            leader_heard: Mutex::new(None),
            led_acked: Mutex::new(None),
            read_barriers: Default::default(),
            started: Instant::now(),
            cut_off_since: Mutex::new(None),
            last_round: Mutex::new(None),
            features,
            removed,
        });
        tokio::spawn(run_elections(Arc::downgrade(&inner)));
        tokio::spawn(adopt_formats(Arc::downgrade(&inner)));
        Ok(MetaNodeHandle { inner })
    }

    /// When this node last knew its state was current: as the leader, when
    /// a majority last acknowledged it; otherwise the later of when it last
    /// accepted a call from its leader and when a majority last
    /// acknowledged it as the leader; failing both, when it started.
    ///
    /// A leader that steps down (a transfer, a newer term) is in touch as
    /// of its last acknowledgement, not as of the last heartbeat it heard
    /// before it led: that one may be long past, and a node that takes it
    /// for its last contact refuses tokens issued while it led.
    pub fn last_in_touch(&self) -> Instant {
        if let Some(acked) = self.inner.leader_acked() {
            return acked;
        }
        self.inner.last_contact().unwrap_or(self.inner.started)
    }

    /// The wall-clock time of this node's last contact with a majority, if
    /// that was longer ago than two election timeouts (the same patience as
    /// for writes) and the node cannot tell that it holds every committed
    /// change, so that its state may miss changes made since. `None` while
    /// it is in touch.
    ///
    /// A follower can tell from its pre-vote round begun since that
    /// contact: a majority that would vote for it holds no log ahead of
    /// its own, and every committed entry is on a majority, so its log has
    /// them all (Raft's election argument); the leader it is about to elect
    /// applies them at once. That is an ordinary election, however long it
    /// runs on a loaded machine, and it must not turn every session and
    /// token on the node away. A round that reached no majority (a cut), or
    /// was refused (a leader is heard elsewhere, or a voter's log is ahead),
    /// leaves the node out of touch; so does a drill's island. A leader
    /// goes by the majority's acknowledgements, a learner by time alone.
    pub fn out_of_touch_since(&self) -> Option<std::time::SystemTime> {
        let last = self.last_in_touch();
        let elapsed = last.elapsed();
        if elapsed <= Duration::from_millis(2 * self.inner.config.election_max_ms) {
            return None;
        }
        let voter = self.metrics().membership_config.membership().voter_ids().any(|v| v == self.inner.id);
        let electing_follower = voter && !self.is_leader() && self.cut_off_from_quorum().is_none();
        let round = *self.inner.last_round.lock().expect("last_round lock");
        let round_since = round.filter(|(began, _)| *began >= last).map(|(_, found)| found);
        (!electing_follower || round_since != Some(Canvass::Majority)).then(|| std::time::SystemTime::now() - elapsed)
    }

    /// Notes that this node just accepted a call from its leader (the peer
    /// service calls it).
    pub fn heard_leader(&self) {
        *self.inner.leader_heard.lock().expect("leader_heard lock") = Some(Instant::now());
        self.inner.set_cut_off(false);
    }

    /// How many of the entries in `rpc` (`bytes` long on the wire) this
    /// follower takes now, after waiting up to a quarter of a heartbeat
    /// for its state machine to catch up. openraft reads each newly
    /// committed range of the log whole and queues it for the state
    /// machine, so a follower that applies slower than it receives (one
    /// catching up through the log, or one busier than the others) would
    /// hold everything in between in memory: at 200,000 tags a joining node
    /// held 5,633 such entries and peaked at 505 MiB. Taking only entries
    /// within `unapplied_entries` (see [`MetaConfig`]) and about
    /// [`UNAPPLIED_BYTES`] (at this request's mean entry size) of what it
    /// has applied bounds that; the leader, answered with a partial
    /// success, sends the rest at its next call.
    ///
    /// The bound counts from the applied index, not the end of the log: a
    /// node restarted with entries in its log that are not yet known to be
    /// committed takes none beyond them, but the request's commit index
    /// still lets it apply, so it always makes progress.
    pub(crate) async fn room_to_apply(&self, rpc: &openraft::raft::AppendEntriesRequest<TypeConfig>, bytes: usize) -> usize {
        let Some(last) = rpc.entries.last().map(|e| e.log_id.index) else { return 0 };
        let per_entry = (bytes / rpc.entries.len()).max(1) as u64;
        let ahead = (UNAPPLIED_BYTES / per_entry).clamp(1, self.inner.config.unapplied_entries);
        let applied = || self.inner.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        if last > applied() + ahead {
            // The leader gives the call one heartbeat, round trip included.
            let wait = Duration::from_millis(self.inner.config.heartbeat_ms / 4);
            let _ = self.inner.raft.wait(Some(wait)).applied_index_at_least(Some(last - ahead), "room to apply").await;
        }
        let limit = applied() + ahead;
        rpc.entries.iter().take_while(|e| e.log_id.index <= limit).count()
    }

    /// The answer to a voter that asks whether this node would vote for it
    /// (see [`run_elections`]): no while this node still hears a leader
    /// within the lease (or leads with a majority's recent acknowledgement),
    /// or when the candidate's log is behind this node's, the two reasons
    /// a real vote would be refused. Nothing changes here either way.
    pub async fn answer_pre_vote(&self, ask: &PreVoteRequest) -> PreVoteReply {
        let lease = Duration::from_millis(self.inner.config.election_max_ms);
        let m = self.metrics();
        if m.state == ServerState::Leader {
            match m.millis_since_quorum_ack {
                Some(ms) if Duration::from_millis(ms) < lease => {
                    return PreVoteReply::Refused(format!("node {} leads, acknowledged by a majority {ms} ms ago", self.inner.id))
                }
                _ => {}
            }
        } else if let (Some(leader), Some(heard)) = (m.current_leader, *self.inner.leader_heard.lock().expect("leader_heard lock")) {
            if heard.elapsed() < lease {
                return PreVoteReply::Refused(format!("node {} heard leader {leader} {} ms ago", self.inner.id, heard.elapsed().as_millis()));
            }
        }
        let mine = match self.inner.last_log_id().await {
            Ok(l) => l,
            Err(e) => return PreVoteReply::Refused(format!("node {} cannot read its log: {e}", self.inner.id)),
        };
        if ask.last_log_id < mine {
            return PreVoteReply::Refused(format!("node {}'s log ends at {mine:?}, ahead of node {}'s {:?}", self.inner.id, ask.candidate, ask.last_log_id));
        }
        PreVoteReply::Granted
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn config(&self) -> &MetaConfig {
        &self.inner.config
    }

    pub fn filter(&self) -> &LinkFilter {
        &self.inner.filter
    }

    /// Every record of this node's applied state as of one applied index
    /// (a backup; call [`MetaNodeHandle::read_barrier`] first for a point
    /// no older than the last acknowledged write).
    pub async fn export_state(&self) -> Result<crate::store::StateExport> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.export_state())
            .await
            .map_err(|e| MetaError::Fatal(e.to_string()))?
            .map_err(|e| MetaError::Fatal(e.to_string()))
    }

    /// Whether `node` is recorded as removed from the cluster, as this
    /// node has applied ([`crate::state::node_removed`], kept in memory
    /// between changes to the node records).
    pub fn node_removed(&self, node: NodeId) -> bool {
        let removed = &self.inner.removed;
        let mut known = removed.known.lock().unwrap_or_else(|e| e.into_inner());
        // Taken before reading: a change applied meanwhile is seen next time.
        let unchanged = matches!(removed.changes.take(), crate::watch::Changed::Keys(k) if k.is_empty());
        if let (true, Some(ids)) = (unchanged, known.as_ref()) {
            return ids.contains(&node);
        }
        match crate::state::StateRead::scan::<crate::command::NodeRecord>(&self.state(), crate::state::keys::NODE_PREFIX) {
            Ok(nodes) => known.insert(nodes.into_iter().filter(|n| n.removed).map(|n| n.id).collect()).contains(&node),
            Err(e) => {
                tracing::error!(error = %e, "cannot read node records");
                *known = None;
                false
            }
        }
    }

    /// The local applied state.
    pub fn state(&self) -> MetaState {
        self.inner.store.state()
    }

    /// Follows the keys under `prefixes` that this node applies from now
    /// on: what changed since the last look, for jobs that would otherwise
    /// re-read a whole part of the state on every pass.
    pub fn watch(&self, prefixes: &[&[u8]]) -> Arc<crate::watch::KeyWatch> {
        self.inner.store.watch(prefixes)
    }

    pub(crate) fn metrics(&self) -> RaftMetrics {
        self.inner.raft.metrics().borrow().clone()
    }

    /// True while a leadership transfer away from this node is under way.
    pub fn handing_over(&self) -> bool {
        self.inner.handing_over.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_leader(&self) -> bool {
        let m = self.metrics();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.id)
    }

    /// Makes this node the first and only voter of a new group.
    pub async fn initialize(&self, node: MetaNode) -> Result<()> {
        let members = std::collections::BTreeMap::from([(self.inner.id, node)]);
        self.inner.raft.initialize(members).await.map_err(|e| MetaError::Fatal(e.to_string()))?;
        Ok(())
    }

    /// Waits until some leader is known, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let m = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|e| MetaError::Unavailable(format!("no leader after {timeout:?}: {e}")))?;
        Ok(m.current_leader.expect("waited for a leader"))
    }

    /// Where member `node` takes peer calls, as this node's membership has it.
    fn member_addr(&self, node: NodeId) -> Option<String> {
        let m = self.metrics();
        m.membership_config.membership().get_node(&node).map(|n| n.peer_addr.clone())
    }

    /// This node's view of the group, in the crate's own terms.
    pub fn view(&self) -> GroupView {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        // A leader no majority has acknowledged for the lease may have been
        // replaced: it does not claim to lead.
        let leader = m.current_leader.filter(|l| *l != self.inner.id || self.knows_it_is_cut_off().is_none());
        GroupView {
            term: m.current_term,
            leader,
            voters: membership.voter_ids().collect(),
            members: membership.nodes().map(|(id, _)| *id).collect(),
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            changing_membership: membership.get_joint_config().len() > 1,
        }
    }

    /// The voters of the membership this node knows.
    pub fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        self.view().voters
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.metrics().current_leader
    }

    /// Calls `rpc` on member `to`, found in the membership this node knows,
    /// over the node's mutual-TLS channel.
    pub async fn call_member<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        to: NodeId,
        rpc: PeerRpc,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let addr = self
            .member_addr(to)
            .ok_or_else(|| CallError::Unreachable { addr: format!("node {to}"), message: "not in the membership this node knows".into() })?;
        self.call_peer(to, &addr, rpc, req, timeout).await
    }

    async fn call_peer<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        to: NodeId,
        addr: &str,
        rpc: PeerRpc,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        if !self.inner.filter.allows(self.inner.id, to) {
            return Err(CallError::Cut { from: self.inner.id, to });
        }
        let channel = self.inner.channels.channel(addr)?;
        call(channel, addr, rpc, req, timeout).await
    }

    /// Why no write or read barrier through this node can succeed now, when
    /// the node knows it: a drill made it an island whose side (the node
    /// and the nodes it keeps) holds no majority of the voters, so no
    /// leader it can reach can commit anything. Such a node refuses at once
    /// instead of letting every client wait `write_timeout_ms` for nothing.
    ///
    /// The island's side is taken to be the whole partition: the drill sets
    /// the same side on each of its members. Without an island a node
    /// cannot tell a partition from a slow network, and waits as before.
    pub fn cut_off_from_quorum(&self) -> Option<String> {
        let me = self.inner.id;
        let island = self.inner.filter.island(me)?;
        let m = self.metrics();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let reachable = voters.iter().filter(|v| **v == me || island.keep.contains(v)).count();
        if reachable * 2 > voters.len() {
            return None;
        }
        Some(format!(
            "node {me} is cut off by a drill for {} ms more: its side holds {reachable} of the {} voters, no quorum",
            island.left().as_millis(),
            voters.len()
        ))
    }

    /// Why this node would refuse a write now, without trying: a drill has
    /// cut it off from a majority, or it has known no leader for longer
    /// than two election timeouts. Work that only leads up to a write (a
    /// push waiting for blob copies) checks this to give up as early.
    pub fn refuses_writes(&self) -> Option<String> {
        self.cut_off_from_quorum().or_else(|| self.knows_it_is_cut_off()).or_else(|| self.leaderless_too_long())
    }

    /// Why a write should be refused at once because this node knows it
    /// cannot reach a majority: as a follower, its last pre-vote round
    /// reached no majority of the voters and it has heard no leader for two
    /// leases (election_max_ms); as the leader, no majority has acknowledged
    /// it for two leases (the others may have elected another leader). A
    /// slow network or a loaded machine can fail one round, so one round
    /// alone is not enough. A leader not acknowledged yet, or a single
    /// voter, is not judged.
    fn knows_it_is_cut_off(&self) -> Option<String> {
        let patience = Duration::from_millis(2 * self.inner.config.election_max_ms);
        let m = self.metrics();
        if m.state == ServerState::Leader {
            if m.membership_config.membership().voter_ids().count() < 2 {
                return None;
            }
            return m
                .millis_since_quorum_ack
                .filter(|ms| Duration::from_millis(*ms) > patience)
                .map(|ms| format!("no metadata quorum: leader node {} has not been acknowledged by a majority of the voters for {ms} ms", self.inner.id));
        }
        (*self.inner.cut_off_since.lock().expect("cut_off_since lock"))?;
        let quiet = self.inner.last_contact().unwrap_or(self.inner.started).elapsed();
        (quiet > patience).then(|| {
            format!("no metadata quorum: node {} has heard no leader for {} ms and reaches no majority of the voters", self.inner.id, quiet.as_millis())
        })
    }

    /// Why a write should be refused at once because this node has known no
    /// leader for longer than two full election timeouts: elections finish
    /// well within that, so the node is on the minority side of a partition
    /// (or the majority is down), and a client is better served by a 503 now
    /// than by one at the end of the write timeout. A write that arrives
    /// during an ordinary election still waits for its outcome.
    fn leaderless_too_long(&self) -> Option<String> {
        let since = (*self.inner.leaderless_since.lock().expect("leaderless lock"))?;
        let patience = Duration::from_millis(2 * self.inner.config.election_max_ms);
        let for_how_long = since.elapsed();
        (for_how_long > patience)
            .then(|| format!("node {} has known no leader for {} ms (it cannot reach a majority of the voters)", self.inner.id, for_how_long.as_millis()))
    }

    /// Waits until this node has applied `index`. Gives up early when the
    /// node gets cut off meanwhile (a write forwarded just before a drill's
    /// cut is committed, but its entry cannot reach this node until the
    /// heal): the client hears so at once instead of at the deadline.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<()> {
        const CHECK_EVERY: Duration = Duration::from_millis(100);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let waited = self.inner.raft.wait(Some(left.min(CHECK_EVERY))).applied_index_at_least(Some(index), "read-your-writes").await;
            match waited {
                Ok(_) => return Ok(()),
                Err(e @ openraft::metrics::WaitError::ShuttingDown) => return Err(MetaError::Unavailable(e.to_string())),
                Err(e) if left <= CHECK_EVERY => return Err(MetaError::Unavailable(format!("this node has not applied index {index} yet: {e}"))),
                Err(_) => {}
            }
            if let Some(why) = self.cut_off_from_quorum() {
                return Err(MetaError::Unavailable(format!("committed at index {index}, but this node cannot apply it now: {why}")));
            }
        }
    }

    /// The leader's check of a write before proposing it: the gate's
    /// verdict on `cmd` for `actor`, submitted at `origin`, against this
    /// node's state. A refusal is logged with the submitting node and the
    /// command's kind, never its payload.
    pub fn judge(&self, origin: Origin, actor: &Actor, cmd: &MetaCommand) -> Result<(), String> {
        let verdict = self.inner.gate.check(&self.state(), origin, actor, cmd);
        if let Err(why) = &verdict {
            tracing::warn!(
                node_id = origin.node,
                forwarded = origin.forwarded,
                command = cmd.kind(),
                actor = actor.kind(),
                reason = %why,
                "refused a write"
            );
        }
        verdict
    }

    /// Commits `cmd`, made for `actor`, through the leader and returns its
    /// response once it is applied on this node. The leader may refuse it
    /// for its actor ([`MetaError::Refused`]).
    pub async fn write(&self, actor: Actor, cmd: MetaCommand) -> Result<MetaResponse> {
        let kind = cmd.kind();
        let local = Origin { node: self.inner.id, forwarded: false, voter: true };
        let forwarded = ForwardedWrite::V1 { actor: actor.clone(), request: MetaRequest::V1(cmd.clone()) };
        let deadline = Instant::now() + Duration::from_millis(self.inner.config.write_timeout_ms);
        let mut last_problem = String::from("no leader is known");
        loop {
            if Instant::now() >= deadline {
                return Err(MetaError::Unavailable(format!("{kind} not committed within {} ms: {last_problem}", self.inner.config.write_timeout_ms)));
            }
            if let Some(why) = self.refuses_writes() {
                return Err(MetaError::Unavailable(format!("{kind} refused: {why}")));
            }
            let leader = self.metrics().current_leader;
            if leader == Some(self.inner.id) && self.handing_over() {
                last_problem = "leadership is being handed over".into();
            } else if leader == Some(self.inner.id) {
                self.judge(local, &actor, &cmd).map_err(MetaError::Refused)?;
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.propose(cmd.clone())).await {
                    Err(_) => return Err(MetaError::Unknown(format!("{kind} was proposed but not committed within the timeout (no quorum?)"))),
                    Ok(ForwardReply::Applied { response, .. }) => return Ok(response),
                    Ok(ForwardReply::NotLeader { .. }) => last_problem = "leadership changed".into(),
                    Ok(ForwardReply::Failed(why)) => return Err(MetaError::Fatal(format!("{kind}: {why}"))),
                    Ok(other) => return Err(MetaError::Fatal(format!("{kind}: the proposer answered {other:?}"))),
                }
            } else if let Some(leader) = leader {
                match self.member_addr(leader) {
                    None => last_problem = format!("leader {leader} has no known address"),
                    Some(addr) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let reply = tokio::select! {
                            r = self.call_peer::<_, ForwardReply>(leader, &addr, PeerRpc::Forward, &forwarded, left) => r,
                            _ = self.superseded(leader) => {
                                return Err(MetaError::Unknown(format!(
                                    "{kind} was forwarded to node {leader}, which lost the leadership without answering"
                                )))
                            }
                            why = self.refusing() => {
                                return Err(MetaError::Unknown(format!(
                                    "{kind} was forwarded to node {leader} without an answer, and this node now refuses writes: {why}"
                                )))
                            }
                        };
                        match reply {
                            Ok(ForwardReply::Applied { log_id, response }) => {
                                self.wait_applied(log_id.index, deadline).await?;
                                return Ok(response);
                            }
                            Ok(ForwardReply::NotLeader { .. }) => last_problem = format!("node {leader} is no longer the leader"),
                            Ok(ForwardReply::Refused(why)) => return Err(MetaError::Refused(why)),
                            Ok(other) => return Err(MetaError::Unavailable(format!("leader {leader} refused {kind}: {other:?}"))),
                            // Nothing was sent: safe to retry.
                            Err(e @ (CallError::Cut { .. } | CallError::Unreachable { .. })) => last_problem = e.to_string(),
                            Err(e @ CallError::Timeout { .. }) => return Err(MetaError::Unknown(e.to_string())),
                            Err(e) => return Err(MetaError::Unavailable(e.to_string())),
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resolves, with the reason, once this node refuses writes (see
    /// [`MetaNodeHandle::refuses_writes`]). A call to the leader that was
    /// under way when a partition began gets no answer until the heal (a
    /// dropped path, not a refused connection); raced against this, the
    /// client hears that this node is cut off when the node knows it,
    /// about two leases after the cut, not when the partition heals. Work
    /// that only leads up to a write (a push's blob copies) races it too.
    pub async fn refusing(&self) -> String {
        loop {
            if let Some(why) = self.refuses_writes() {
                return why;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (grouped entries proposed, writes in them) since this node started
    /// (see [`crate::group`]).
    pub fn grouped_writes(&self) -> (u64, u64) {
        self.inner.proposer.stats()
    }

    /// Proposes `cmd`, already judged by this node as the leader, grouped
    /// with the writes proposed at the same time (see [`crate::group`]).
    pub async fn propose(&self, cmd: MetaCommand) -> ForwardReply {
        self.inner.proposer.propose(cmd).await
    }

    /// Resolves once another node has led for [`FORWARD_GRACE`]: a write
    /// forwarded to `leader` that is still unanswered then went to a node
    /// that is hung or cut off, and waiting out the whole write timeout
    /// would hold the client up long after the cluster moved on. (A leader
    /// handing over gracefully answers well within the grace.)
    async fn superseded(&self, leader: NodeId) {
        let mut m = self.inner.raft.metrics();
        if m.wait_for(|m| m.current_leader.is_some_and(|l| l != leader)).await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(FORWARD_GRACE).await;
    }

    /// How many read barriers this node has asked for since it started.
    pub fn read_barriers(&self) -> u64 {
        self.inner.read_barriers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// After this returns, local reads observe every write committed before
    /// it was called (a linearizable read through the leader's read index).
    pub async fn read_barrier(&self) -> Result<()> {
        self.inner.read_barriers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_millis(self.inner.config.write_timeout_ms);
        loop {
            if Instant::now() >= deadline {
                return Err(MetaError::Unavailable("no leader confirmed a read index in time".into()));
            }
            if let Some(why) = self.refuses_writes() {
                return Err(MetaError::Unavailable(why));
            }
            match self.metrics().current_leader {
                Some(l) if l == self.inner.id => match self.inner.raft.ensure_linearizable().await {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        tracing::debug!(error = %e, "read barrier on leader failed; retrying")
                    }
                },
                Some(l) => {
                    if let Some(addr) = self.member_addr(l) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let asked = tokio::select! {
                            r = self.call_peer::<_, ForwardReply>(l, &addr, PeerRpc::ReadIndex, &(), left) => r,
                            why = self.refusing() => return Err(MetaError::Unavailable(why)),
                        };
                        if let Ok(ForwardReply::ReadIndex { read_log_id }) = asked {
                            if let Some(id) = read_log_id {
                                self.wait_applied(id.index, deadline).await?;
                            }
                            return Ok(());
                        }
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks `to` to start an election now. Used by the leader during a
    /// transfer, after its followers' leases ran out.
    async fn ask_to_elect(&self, to: NodeId) -> Result<()> {
        let addr = self.member_addr(to).ok_or_else(|| MetaError::Unavailable(format!("node {to} is not a member")))?;
        let r: PeerResult<()> =
            self.call_peer(to, &addr, PeerRpc::Elect, &(), Duration::from_secs(5)).await.map_err(|e| MetaError::Unavailable(e.to_string()))?;
        r.map_err(MetaError::Unavailable)
    }

    /// Run on the leader: hands leadership to `to` (or to the most caught-up
    /// other voter) and returns the new leader.
    ///
    /// openraft 0.9 has no transfer primitive; voters refuse to vote while
    /// they hold a leader lease (election_max_ms), and every append renews
    /// it. So the leader stops proposing (writes wait and then go to the new
    /// leader), stops heartbeats, waits out the
    /// lease, and asks the target to campaign — before any other follower
    /// does, at least half of election_min_ms after the lease (see
    /// `run_elections`).
    pub async fn hand_over_leadership(&self, to: Option<NodeId>) -> Result<NodeId> {
        if !self.is_leader() {
            return Err(MetaError::Unavailable("this node is not the leader".into()));
        }
        let m = self.metrics();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().filter(|v| *v != self.inner.id).collect();
        let matched = |id: NodeId| m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
        let target = match to {
            Some(t) if t == self.inner.id => return Ok(t),
            Some(t) if !voters.contains(&t) => return Err(MetaError::Unavailable(format!("node {t} is not a voter"))),
            Some(t) => t,
            None => *voters.iter().max_by_key(|v| matched(**v)).ok_or_else(|| MetaError::Unavailable("there is no other voter to take over".into()))?,
        };
        let rc = self.inner.raft.runtime_config();
        self.inner.handing_over.store(true, std::sync::atomic::Ordering::Relaxed);
        rc.heartbeat(false);
        let lease = Duration::from_millis(self.inner.config.election_max_ms);
        tokio::time::sleep(lease + Duration::from_millis(self.inner.config.election_min_ms / 5)).await;
        let asked = self.ask_to_elect(target).await;
        let waited =
            self.inner.raft.wait(Some(lease * 3)).metrics(|m| m.current_leader.is_some() && m.current_leader != Some(self.inner.id), "leadership moved").await;
        rc.heartbeat(true);
        self.inner.handing_over.store(false, std::sync::atomic::Ordering::Relaxed);
        asked?;
        let m = waited.map_err(|e| MetaError::Unavailable(format!("leadership did not move: {e}")))?;
        Ok(m.current_leader.expect("waited for another leader"))
    }

    /// Transfers leadership from whichever node leads now. A hand-over to
    /// a named node can be won by another voter (whose election timer ran
    /// out before the target was asked, on a busy host); the new leader is
    /// then asked again, up to three times in all.
    pub async fn transfer_leader(&self, to: Option<NodeId>) -> Result<NodeId> {
        let mut attempt = 1;
        loop {
            let moved = self.transfer_once(to).await?;
            if to.is_none_or(|t| t == moved) || attempt == 3 {
                return Ok(moved);
            }
            tracing::info!(wanted = ?to, moved, attempt, "leadership went to another voter; asking again");
            // The next hand-over is asked of the new leader: this node
            // must know it first.
            let lease = Duration::from_millis(self.inner.config.election_max_ms);
            let _ = self.inner.raft.wait(Some(lease * 3)).metrics(|m| m.current_leader == Some(moved), "the new leader known here").await;
            attempt += 1;
        }
    }

    async fn transfer_once(&self, to: Option<NodeId>) -> Result<NodeId> {
        let leader = self.wait_for_leader(Duration::from_millis(self.inner.config.write_timeout_ms)).await?;
        if leader == self.inner.id {
            return self.hand_over_leadership(to).await;
        }
        let addr = self.member_addr(leader).ok_or_else(|| MetaError::Unavailable(format!("leader {leader} has no known address")))?;
        let timeout = Duration::from_millis(self.inner.config.election_max_ms * 6 + 5_000);
        let r: PeerResult<NodeId> =
            self.call_peer(leader, &addr, PeerRpc::TransferLeader, &to, timeout).await.map_err(|e| MetaError::Unavailable(e.to_string()))?;
        r.map_err(MetaError::Unavailable)
    }

    /// The leader's view of replication; from a follower, asked of the leader.
    pub async fn leader_view(&self) -> Result<LeaderView> {
        let m = self.metrics();
        if m.current_leader == Some(self.inner.id) {
            if let Some(why) = self.knows_it_is_cut_off() {
                return Err(MetaError::Unavailable(why));
            }
            let matched = m.replication.as_ref().map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect()).unwrap_or_default();
            return Ok(LeaderView {
                leader: self.inner.id,
                term: m.current_term,
                last_log_index: m.last_log_index,
                committed: m.last_applied.map(|l| l.index),
                matched,
            });
        }
        let leader = m.current_leader.ok_or_else(|| MetaError::Unavailable("no leader is known".into()))?;
        let addr = self.member_addr(leader).ok_or_else(|| MetaError::Unavailable(format!("leader {leader} has no known address")))?;
        let r: PeerResult<LeaderView> =
            self.call_peer(leader, &addr, PeerRpc::Status, &(), Duration::from_secs(3)).await.map_err(|e| MetaError::Unavailable(e.to_string()))?;
        r.map_err(MetaError::Unavailable)
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
