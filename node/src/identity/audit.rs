//! Usage logs: every login, push, pull, delete and identity change becomes
//! an [`AuditRecord`] in the replicated metadata, so any node answers a
//! query about any node's traffic.
//!
//! Requests never wait for their record: records go to a bounded queue and
//! a flusher commits them in batches (one Raft entry per batch, at most
//! [`FLUSH_EVERY`] apart). Changes made through the admin API call
//! [`AuditLog::flush`] before answering, so their record is committed when
//! the caller hears back. If the queue is full (no quorum for a long
//! while), new records are dropped and counted in
//! `berth_audit_dropped_records_total`, rather than slowing pulls down.
//!
//! A client logs in again and again: docker asks for a token for every
//! command, and for every scope within one. A node records one
//! `login_success` per account and address per [`LOGIN_WINDOW`]; every
//! failure is a row of its own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_common::NodeId;
use berth_gateway::Principal;
use berth_raft::command::MetaCommand;
use berth_raft::command::{AuditRecord, IdentityCommand};
use berth_raft::MetaNodeHandle;
use tokio::sync::{mpsc, oneshot};

use crate::util::now_ms;

pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
const QUEUE: usize = 20_000;
const BATCH: usize = 1_000;
const DAY_MS: u64 = 86_400_000;
/// Successful logins of one account from one address within this long are
/// one `login_success` row.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Past this many remembered logins, those outside the window are forgotten.
const MAX_REMEMBERED_LOGINS: usize = 10_000;

enum Msg {
    Record(Box<AuditRecord>),
    Flush(oneshot::Sender<()>),
}

/// A handle to this node's audit queue.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    node: NodeId,
    region: String,
    logins: Arc<Mutex<RecentLogins>>,
}

/// When each account last logged in successfully from each address.
#[derive(Default)]
struct RecentLogins(HashMap<(String, Option<IpAddr>), Instant>);

impl RecentLogins {
    /// Whether a successful login at `now` starts a new window (and so
    /// gets a row), remembering it if so.
    fn first_in_window(&mut self, account: &str, ip: Option<IpAddr>, now: Instant) -> bool {
        if self.0.len() >= MAX_REMEMBERED_LOGINS {
            self.0.retain(|_, at| now.duration_since(*at) < LOGIN_WINDOW);
        }
        match self.0.get(&(account.to_string(), ip)) {
            Some(at) if now.duration_since(*at) < LOGIN_WINDOW => false,
            _ => {
                self.0.insert((account.to_string(), ip), now);
                true
            }
        }
    }
}

impl AuditLog {
    /// Starts the flusher. Every `retention_days` the leader also prunes
    /// older records.
    pub fn start(
        meta: MetaNodeHandle,
        region: String,
        retention_days: u64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let node = meta.id();
        let task = tokio::spawn(async move {
            let mut pending: Vec<AuditRecord> = Vec::new();
            let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            let mut last_prune = 0u64;
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(Msg::Record(r)) => {
                            pending.push(*r);
                            if pending.len() < BATCH {
                                continue;
                            }
                        }
                        Some(Msg::Flush(w)) => waiters.push(w),
                        None => return,
                    },
                    _ = tick.tick() => {}
                    _ = stop.changed() => {
                        flush(&meta, &mut pending).await;
                        return;
                    }
                }
                flush(&meta, &mut pending).await;
                if pending.is_empty() {
                    waiters.drain(..).for_each(|w| {
                        let _ = w.send(());
                    });
                }
                let now = now_ms();
                if retention_days > 0 && now > last_prune + 3_600_000 && meta.is_leader() {
                    last_prune = now;
                    let before_ms = now.saturating_sub(retention_days * DAY_MS);
                    if let Err(e) = meta.write(berth_raft::Actor::Node, MetaCommand::Identity(IdentityCommand::PruneAudit { before_ms })).await {
                        tracing::warn!(error = %e, "pruning old audit records failed");
                    }
                }
            }
        });
        (AuditLog { tx, node, region, logins: Default::default() }, task)
    }

    /// Queues a record of a cluster worker's action (`performer`: the
    /// worker's name, as Quay names its own workers); never waits.
    pub fn record_worker(&self, kind: &str, performer: &str, namespace: Option<&str>, repo: Option<&str>, metadata: Vec<(&str, String)>) {
        self.queue(kind, performer.to_string(), "worker", None, namespace, repo, metadata, None);
    }

    /// Queues a record; never waits.
    pub fn record(&self, kind: &str, who: &Principal, ip: Option<IpAddr>, namespace: Option<&str>, repo: Option<&str>, metadata: Vec<(&str, String)>) {
        let app = match who {
            Principal::App { id, .. } => Some(id.clone()),
            _ => None,
        };
        self.queue(kind, who.performer(), who.kind(), ip, namespace, repo, metadata, app);
    }

    /// A record of the cluster's own doing (no client asked): the
    /// performer is `(node)`.
    pub fn record_node(&self, kind: &str, namespace: Option<&str>, repo: Option<&str>, metadata: Vec<(&str, String)>) {
        self.queue(kind, "(node)".into(), "node", None, namespace, repo, metadata, None);
    }

    /// Builds a record stamped with this node, its region and now, and
    /// queues it; a full queue drops it and counts the drop.
    #[allow(clippy::too_many_arguments)]
    fn queue(
        &self,
        kind: &str,
        performer: String,
        performer_kind: &str,
        ip: Option<IpAddr>,
        namespace: Option<&str>,
        repo: Option<&str>,
        metadata: Vec<(&str, String)>,
        app_token: Option<String>,
    ) {
        let mut meta: BTreeMap<String, String> = metadata.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if let Some(id) = app_token {
            meta.insert("app_token".into(), id);
        }
        meta.insert("performer_kind".into(), performer_kind.into());
        let rec = AuditRecord {
            at_ms: now_ms(),
            id: rand::random(),
            kind: kind.to_string(),
            performer,
            namespace: namespace.map(str::to_string),
            repo: repo.map(str::to_string),
            node: self.node,
            region: self.region.clone(),
            ip: ip.map(|i| i.to_string()),
            metadata: meta,
        };
        if self.tx.try_send(Msg::Record(Box::new(rec))).is_err() {
            metrics::counter!("berth_audit_dropped_records_total").increment(1);
        }
    }

    /// A login attempt with credentials (never the secret). Successes of
    /// one account from one address within [`LOGIN_WINDOW`] are one row.
    pub fn login(&self, ok: bool, account: &str, ip: Option<IpAddr>, detail: &str) {
        if ok && !self.logins.lock().expect("recent logins lock").first_in_window(account, ip, Instant::now()) {
            return;
        }
        let who = Principal::User { name: account.to_string(), superuser: false };
        let ns = account.split_once('+').map(|(ns, _)| ns);
        let kind = if ok { "login_success" } else { "login_failure" };
        self.record(kind, &who, ip, ns, None, vec![("detail", detail.to_string())]);
    }

    /// A successful login checked somewhere other than berth's own
    /// passwords (`method`: `ldap`); one row per window like [`Self::login`],
    /// and written first, so the row of the window says how.
    pub fn login_via(&self, account: &str, ip: Option<IpAddr>, method: &str) {
        if !self.logins.lock().expect("recent logins lock").first_in_window(account, ip, Instant::now()) {
            return;
        }
        let who = Principal::User { name: account.to_string(), superuser: false };
        self.record("login_success", &who, ip, None, None, vec![("method", method.to_string())]);
    }

    /// Waits until everything queued so far is committed (or 5 s passed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

async fn flush(meta: &MetaNodeHandle, pending: &mut Vec<AuditRecord>) {
    while !pending.is_empty() {
        let n = pending.len().min(BATCH);
        let batch: Vec<AuditRecord> = pending[..n].to_vec();
        match meta.write(berth_raft::Actor::Node, MetaCommand::Identity(IdentityCommand::AppendAudit(batch))).await {
            Ok(_) => {
                pending.drain(..n);
            }
            Err(e) => {
                tracing::debug!(error = %e, "audit records not committed yet; keeping them");
                if pending.len() > QUEUE {
                    let excess = pending.len() - QUEUE;
                    pending.drain(..excess);
                    metrics::counter!("berth_audit_dropped_records_total").increment(excess as u64);
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_logins_from_one_place_are_one_row_a_window() {
        let mut seen = RecentLogins::default();
        let (t0, here, there) = (Instant::now(), Some("192.0.2.1".parse().unwrap()), Some("192.0.2.2".parse().unwrap()));
        assert!(seen.first_in_window("alice", here, t0));
        assert!(!seen.first_in_window("alice", here, t0 + Duration::from_secs(5)), "docker's second token of the same command");
        assert!(seen.first_in_window("alice", there, t0 + Duration::from_secs(5)), "another address is another row");
        assert!(seen.first_in_window("bob", here, t0 + Duration::from_secs(5)), "another account is another row");
        assert!(seen.first_in_window("alice", here, t0 + LOGIN_WINDOW), "a new window, a new row");
    }
}
