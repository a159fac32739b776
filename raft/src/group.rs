//! Group commit on the leader: writes that arrive while earlier ones are
//! still being committed go into one Raft entry together.
//!
//! openraft 0.9 appends and syncs each client write as an entry of its own,
//! one after another, and replicates and applies it as one; with many
//! clients writing at once that per-entry work, not the disk, bounds the
//! write rate. The [`Proposer`] keeps at most [`IN_FLIGHT`] proposal
//! uncommitted; writes that arrive meanwhile wait in its queue, and the next
//! proposal takes all of them (up to [`MAX_GROUP`] commands and
//! [`MAX_GROUP_BYTES`]) as one [`MetaRequest::Batch`]. A lone write still
//! goes as a `V1` entry at once, so a quiet cluster's latency and log are
//! as before.
//!
//! Each command of a group keeps its own response: the state machine
//! applies them in order, each with its checks, and the entry lands as one
//! atomic change ([`crate::state::overlay`]). A group fails or moves to
//! another leader as a whole, as its entry does.
//!
//! Releases before this one cannot read a grouped entry, so the leader
//! groups only while every member's last AppendEntries reply said it reads
//! them ([`PeerFeatures`]); during a rolling upgrade from such a release it
//! proposes one entry per write, as that release did.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use berth_common::NodeId;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::command::{MetaCommand, MetaRequest, MetaResponse};
use crate::network::PeerFeatures;
use crate::types::*;
use crate::wire::ForwardReply;

/// Proposals uncommitted at a time; later writes queue up for the next
/// group meanwhile. One gives the largest groups, and on 3 nodes sharing 2
/// cores the most writes: `berth-bench scale` (30,000 tags, 64 clients)
/// measured about 2,000 tags/s with 1 (groups of about 27 writes), 1,850
/// with 2 (15), 1,630 with 4 (8) and 1,690 with 8 (5). What a write costs
/// the nodes' CPU, not the disk, is the bound there, and each entry costs
/// every node a log append, a replication round and an apply of its own.
pub const IN_FLIGHT: usize = 1;
/// The most commands in one entry.
pub const MAX_GROUP: usize = 256;
/// The most encoded command bytes in one entry (a command larger than
/// this goes alone): a group stays well within one AppendEntries
/// ([`crate::store::MAX_APPEND_BYTES`]), so grouping does not slow a
/// follower that catches up over a WAN.
pub const MAX_GROUP_BYTES: usize = 256 << 10;

struct Proposal {
    cmd: MetaCommand,
    /// The command's encoded size, for [`MAX_GROUP_BYTES`].
    size: usize,
    reply: oneshot::Sender<ForwardReply>,
}

/// Hands the leader's writes to Raft, grouped under load. Cloned by every
/// writer; the task behind it ends when the last clone is dropped.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Proposal>,
    stats: Arc<GroupStats>,
}

/// How much grouping this node did as the leader, since it started.
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Grouped entries proposed.
    pub groups: AtomicU64,
    /// Writes that went in them.
    pub grouped_writes: AtomicU64,
}

impl Proposer {
    /// Starts the proposing task for `raft`, whose node is `me`.
    pub fn start(me: NodeId, raft: Raft, features: PeerFeatures) -> Proposer {
        let (queue, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(GroupStats::default());
        tokio::spawn(run(me, raft, features, stats.clone(), rx));
        Proposer { queue, stats }
    }

    /// (grouped entries proposed, writes in them) since this node started.
    pub fn stats(&self) -> (u64, u64) {
        (self.stats.groups.load(Ordering::Relaxed), self.stats.grouped_writes.load(Ordering::Relaxed))
    }

    /// Proposes `cmd` (already judged by this leader) and waits for the
    /// outcome: applied on this node with its response, not the leader
    /// (nothing committed), or failed.
    pub async fn propose(&self, cmd: MetaCommand) -> ForwardReply {
        let size = berth_common::encode_versioned(1, &cmd).map(|b| b.len()).unwrap_or(MAX_GROUP_BYTES);
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Proposal { cmd, size, reply }).is_err() {
            return ForwardReply::Failed("this node's metadata store is shutting down".into());
        }
        answer.await.unwrap_or_else(|_| ForwardReply::Failed("this node's metadata store shut down before the write committed".into()))
    }
}

async fn run(me: NodeId, raft: Raft, features: PeerFeatures, stats: Arc<GroupStats>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held: Option<Proposal> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        if !every_member_reads_groups(me, &raft, &features) {
            // One entry per write, as many at once as come, as releases
            // before grouped entries did.
            let raft = raft.clone();
            tokio::spawn(async move { commit(&raft, vec![first]).await });
            continue;
        }
        // While every slot is taken, later writes gather in the queue.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut group = vec![first];
        let mut bytes = group[0].size;
        while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            if bytes + next.size > MAX_GROUP_BYTES {
                held = Some(next);
                break;
            }
            bytes += next.size;
            group.push(next);
        }
        if group.len() > 1 {
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats.grouped_writes.fetch_add(group.len() as u64, Ordering::Relaxed);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, group).await;
            drop(slot);
        });
    }
}

/// Whether every other member of the current membership said it reads
/// grouped entries.
fn every_member_reads_groups(me: NodeId, raft: &Raft, features: &PeerFeatures) -> bool {
    every_member_reads(me, raft, features, crate::network::FEATURE_GROUPED)
}

/// Whether every other member of the current membership (learners too)
/// said it reads `feature`.
pub(crate) fn every_member_reads(me: NodeId, raft: &Raft, features: &PeerFeatures, feature: &str) -> bool {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let all = m.membership_config.membership().nodes().all(|(id, _)| *id == me || features.reads(*id, feature));
    all
}

/// Proposes `group` as one entry and answers each writer.
async fn commit(raft: &Raft, mut group: Vec<Proposal>) {
    if group.len() == 1 {
        let p = group.pop().expect("one proposal");
        let out = match raft.client_write(MetaRequest::V1(p.cmd)).await {
            Ok(r) => ForwardReply::Applied { log_id: r.log_id, response: r.data },
            Err(e) => failure(e),
        };
        let _ = p.reply.send(out);
        return;
    }
    let (cmds, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    match raft.client_write(MetaRequest::Batch(cmds)).await {
        Ok(r) => match r.data {
            MetaResponse::Batch(resps) if resps.len() == n => {
                for (reply, response) in replies.into_iter().zip(resps) {
                    let _ = reply.send(ForwardReply::Applied { log_id: r.log_id, response });
                }
            }
            other => {
                // The state machine answers a group with one response per
                // command; anything else is a bug, said to every writer.
                let why = format!("a group of {n} writes was applied at {} but answered {other:?}", r.log_id);
                tracing::error!("{why}");
                for reply in replies {
                    let _ = reply.send(ForwardReply::Failed(why.clone()));
                }
            }
        },
        Err(e) => {
            let out = failure(e);
            for reply in replies {
                let _ = reply.send(out.clone());
            }
        }
    }
}

/// A failed proposal as a forwarded write's reply: not the leader, or a
/// failure.
fn failure(e: RaftError<NodeId, ClientWriteError<NodeId, MetaNode>>) -> ForwardReply {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardReply::NotLeader { leader: f.leader_id.zip(f.leader_node) },
        e => ForwardReply::Failed(e.to_string()),
    }
}
