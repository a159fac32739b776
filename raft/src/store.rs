//! RocksDB storage of the metadata plane: the Raft log, the vote, and the
//! state machine, in one database so that one synced write orders them all.
//!
//! Column families:
//!
//! | cf | keys | values |
//! |---|---|---|
//! | `log` | log index (u64 BE) | versioned [`Entry`] |
//! | `raft` | `vote`, `committed`, `purged` | versioned openraft ids |
//! | `sm_meta` | `applied`, `membership`, `snapshot_file`, `installing` | versioned ids, the current snapshot's meta, the one being installed |
//! | `state` | see [`crate::state`] | versioned records |
//!
//! Invariants:
//! - Log appends, vote and purge are written with `sync = true` before they
//!   are acknowledged to openraft.
//! - Each applied entry's state changes and its log id go in one
//!   `WriteBatch`: after a crash the state machine is exactly at some applied
//!   id and re-applies from there. Those batches are not synced on their own;
//!   the WAL is shared, so the next synced log write persists them, and the
//!   log is never purged past what was applied.
//! - Installing a snapshot replaces the whole `state` family at once: its
//!   records, merged with the keys present (a delete for each one the
//!   snapshot lacks), are written to an SST file that RocksDB ingests
//!   whole, so no reader sees half of it and no write batch or memtable
//!   ever holds the whole state. `installing` names the snapshot from
//!   before the ingest until its applied id is written; a start that finds
//!   it finishes the install from the kept file first.
//! - A snapshot's bytes live in a file, `snapshots/<id>.snap` inside the
//!   database directory, written and read one record at a time
//!   ([`crate::snapshot_file`]); `snapshot_file` names the current one.
//! - Every RocksDB call runs on a blocking thread, never on the async ones.

use std::fmt::Debug;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use berth_common::{decode_versioned, encode_versioned, NodeId};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{ColumnFamilyDescriptor, Direction, IngestExternalFileOptions, IteratorMode, Options, SstFileWriter, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::command::{MetaRequest, MetaResponse};
use crate::snapshot_file;
use crate::state::{self, StateError, StateRead};
use crate::types::*;
use crate::watch::{KeyWatch, Watches};

const CF_LOG: &str = "log";
const CF_RAFT: &str = "raft";
const CF_SM_META: &str = "sm_meta";
const CF_STATE: &str = "state";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
/// Where releases before streamed snapshots kept the current snapshot,
/// meta and bytes in one value; read once after an upgrade, then deleted.
const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// The current snapshot's meta; its bytes are in [`snapshot_path`].
const KEY_SNAPSHOT_FILE: &[u8] = b"snapshot_file";
/// The meta of a snapshot whose install began and has not ended; its
/// bytes are in [`snapshot_path`].
const KEY_INSTALLING: &[u8] = b"installing";

/// The most WAL bytes kept before the oldest file's families are flushed.
const MAX_TOTAL_WAL_BYTES: u64 = 128 << 20;
/// The most memory all memtables take together before one is flushed.
const MAX_MEMTABLE_BYTES: usize = 128 << 20;

/// The state family's options: most of a write's reads are point reads of
/// keys that do not exist yet (the new tag, the new manifest, a
/// repository's first link), and without filters every one searches the
/// memtable's skip list and then each SST's index. A whole-key bloom filter
/// in the memtable and in every SST answers those misses from a few bits.
fn state_options() -> Options {
    let mut o = Options::default();
    o.set_memtable_prefix_bloom_ratio(0.05);
    o.set_memtable_whole_key_filtering(true);
    let mut t = rocksdb::BlockBasedOptions::default();
    t.set_bloom_filter(10.0, false);
    t.set_whole_key_filtering(true);
    o.set_block_based_table_factory(&t);
    o
}

/// Format version of log entries and Raft bookkeeping values.
const LOG_VERSION: u8 = 1;
/// Format version of snapshot bodies.
const SNAPSHOT_VERSION: u8 = 1;

/// An opened metadata database; hands out the log store and state machine.
#[derive(Clone)]
pub struct RocksStore {
    db: Arc<DB>,
    /// Who follows which keys of the applied state (see [`crate::watch`]).
    watches: Watches,
    /// Where snapshot files are kept.
    snapshots: PathBuf,
}

impl RocksStore {
    /// Opens the database at `path`, first finishing a snapshot install
    /// that a stop interrupted.
    pub fn open(path: &Path) -> std::io::Result<RocksStore> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        // The small families (`raft`, `sm_meta`) are written with every
        // entry but would take ages to fill a memtable, and a WAL file is
        // kept until every family with data in it has flushed: at 200,000
        // tags 430 of a node's 491 MiB were WAL files, replayed into memory
        // at each start. Past this total, RocksDB flushes the families that
        // hold the oldest file so it can go.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        // All memtables together, whichever families fill them (the log's
        // and the state's, 64 MiB each and two of each by default).
        opts.set_db_write_buffer_size(MAX_MEMTABLE_BYTES);
        let cfs =
            [CF_LOG, CF_RAFT, CF_SM_META, CF_STATE].map(|n| ColumnFamilyDescriptor::new(n, if n == CF_STATE { state_options() } else { Options::default() }));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(std::io::Error::other)?;
        let store = RocksStore { db: Arc::new(db), watches: Watches::default(), snapshots: path.join("snapshots") };
        if let Some(meta) = get_value::<SnapshotMeta>(&store.db, CF_SM_META, KEY_INSTALLING).map_err(std::io::Error::other)? {
            tracing::warn!(snapshot_id = %meta.snapshot_id, "finishing the install of a snapshot that a stop interrupted");
            store.state_machine().finish_install(&meta).map_err(std::io::Error::other)?;
        }
        Ok(store)
    }

    pub fn log_store(&self) -> RocksLogStore {
        RocksLogStore { db: self.db.clone() }
    }

    pub fn state_machine(&self) -> RocksStateMachine {
        RocksStateMachine { db: self.db.clone(), snapshot_seq: Arc::new(AtomicU64::new(0)), watches: self.watches.clone(), snapshots: self.snapshots.clone() }
    }

    /// Follows the keys under `prefixes` that the state machine changes
    /// from now on (see [`crate::watch`]).
    pub fn watch(&self, prefixes: &[&[u8]]) -> Arc<KeyWatch> {
        self.watches.watch(prefixes)
    }

    /// A read-only view of the applied state, for local reads.
    pub fn state(&self) -> MetaState {
        MetaState { db: self.db.clone() }
    }
}

/// What [`RocksStore::force_new_cluster`] found, and did unless it was a
/// dry run.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The node that becomes the only voter.
    pub node: NodeId,
    /// The term the recovered group starts in (the last one seen plus one).
    pub term: u64,
    /// The last entry of this node's log before the recovery.
    pub last_index: u64,
    /// The last entry this node knew to be committed.
    pub known_committed: Option<u64>,
    /// Members of the old group that the recovery removes for good.
    pub removed: Vec<NodeId>,
}

impl Recovery {
    /// Entries this node holds beyond the last commit it heard of: they are
    /// kept (the lost majority may have committed them) although no client
    /// may have been told so.
    pub fn beyond_commit(&self) -> u64 {
        self.last_index.saturating_sub(self.known_committed.unwrap_or(0))
    }
}

impl RocksStore {
    /// Disaster recovery, with the node stopped: makes node `me` the only
    /// voter of a group that keeps everything in its log (etcd's
    /// `--force-new-cluster`). For when a majority of the voters is gone
    /// for good and the group can never commit again.
    ///
    /// Appends, in a new term led by `me`: a membership entry naming `me`
    /// alone, then a `RemoveNode` for every other member, and records a
    /// committed vote for `me`. When the node starts, openraft restores it
    /// as the leader of a one-voter group, which commits and applies every
    /// entry of the log, these included; new nodes then join as usual.
    /// With `dry_run` nothing is written.
    pub fn force_new_cluster(&self, me: NodeId, dry_run: bool) -> Result<Recovery, OfflineError> {
        use crate::records::NodeRecord;
        let db = &self.db;
        let fail = |what: &'static str, e: &dyn std::fmt::Display| OfflineError::While { what, why: e.to_string() };
        let vote: Option<Vote> = get_value(db, CF_RAFT, KEY_VOTE).map_err(|e| fail("reading the vote", &e))?;
        let purged: Option<LogId> = get_value(db, CF_RAFT, KEY_PURGED).map_err(|e| fail("reading the log", &e))?;
        let committed: Option<LogId> = get_value::<Option<LogId>>(db, CF_RAFT, KEY_COMMITTED).map_err(|e| fail("reading the log", &e))?.flatten();
        let applied: Option<LogId> = get_value::<Option<LogId>>(db, CF_SM_META, KEY_APPLIED).map_err(|e| fail("reading the state", &e))?.flatten();
        // The newest membership: the last one in the log, else the applied one.
        let mut last: Option<LogId> = None;
        let mut membership: Option<Membership> = None;
        for item in db.iterator_cf(cf(db, CF_LOG), IteratorMode::End) {
            let (_, v) = item.map_err(|e| fail("reading the log", &e))?;
            let e: Entry = decode_versioned(LOG_VERSION, &v).map_err(|e| fail("reading the log", &e))?;
            last.get_or_insert(e.log_id);
            if let EntryPayload::Membership(m) = e.payload {
                membership = Some(m);
                break;
            }
        }
        let last = last.or(purged).or(applied);
        let membership = match membership {
            Some(m) => m,
            None => get_value::<StoredMembership>(db, CF_SM_META, KEY_MEMBERSHIP)
                .map_err(|e| fail("reading the state", &e))?
                .map(|m| m.membership().clone())
                .ok_or(OfflineError::NoMembership)?,
        };
        let Some(node) = membership.get_node(&me).cloned() else {
            return Err(OfflineError::NotAMember(me));
        };
        let nodes: Vec<NodeRecord> = self.state().scan(crate::state::keys::NODE_PREFIX).map_err(|e| fail("reading the node records", &e))?;
        let mut others: std::collections::BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        others.extend(nodes.iter().filter(|n| !n.removed).map(|n| n.id));
        others.remove(&me);
        let term = vote.map(|v| v.leader_id().get_term()).unwrap_or(0).max(last.map(|l| l.leader_id.term).unwrap_or(0)) + 1;
        let recovery = Recovery {
            node: me,
            term,
            last_index: last.map(|l| l.index).unwrap_or(0),
            known_committed: committed.or(applied).map(|l| l.index),
            removed: others.iter().copied().collect(),
        };
        if dry_run {
            return Ok(recovery);
        }
        let leader = openraft::CommittedLeaderId::new(term, me);
        let mut index = recovery.last_index;
        let mut entries = Vec::new();
        index += 1;
        let alone = Membership::new(vec![std::collections::BTreeSet::from([me])], std::collections::BTreeMap::from([(me, node)]));
        entries.push(Entry { log_id: LogId::new(leader, index), payload: EntryPayload::Membership(alone) });
        for gone in &others {
            index += 1;
            let cmd = crate::command::MetaCommand::RemoveNode { node: *gone };
            entries.push(Entry { log_id: LogId::new(leader, index), payload: EntryPayload::Normal(MetaRequest::V1(cmd)) });
        }
        let mut batch = WriteBatch::default();
        for e in &entries {
            batch.put_cf(cf(db, CF_LOG), e.log_id.index.to_be_bytes(), encode(e).map_err(|e| fail("encoding", &e))?);
        }
        batch.put_cf(cf(db, CF_RAFT), KEY_VOTE, encode(&Vote::new_committed(term, me)).map_err(|e| fail("encoding", &e))?);
        let new_last = entries.last().map(|e| e.log_id);
        batch.put_cf(cf(db, CF_RAFT), KEY_COMMITTED, encode(&new_last).map_err(|e| fail("encoding", &e))?);
        db.write_opt(batch, &sync_write()).map_err(|e| fail("writing the recovery", &e))?;
        Ok(recovery)
    }
}

/// Why an operation on a stopped node's store (recovery, backup, restore)
/// failed; the operator reads it.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Rocks(#[from] rocksdb::Error),
    #[error(transparent)]
    Codec(#[from] berth_common::CodecError),
    /// Boxed: openraft's error is large, and this one is returned by value.
    #[error(transparent)]
    Storage(Box<StorageError>),
    /// Reading or writing failed while doing `what`.
    #[error("{what}: {why}")]
    While { what: &'static str, why: String },
    #[error("this data directory holds no membership: it never belonged to a cluster")]
    NoMembership,
    #[error("node {0} is not a member of the group this data directory knows; recover on a node that was")]
    NotAMember(NodeId),
    #[error("this node has applied nothing: run `cluster init` first")]
    NothingApplied,
}

impl From<StorageError> for OfflineError {
    fn from(e: StorageError) -> Self {
        OfflineError::Storage(Box::new(e))
    }
}

/// A consistent copy of the applied metadata: every record, as of one
/// applied log index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateExport {
    pub applied_index: Option<u64>,
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RocksStore {
    /// Every record of the applied state, read from one RocksDB snapshot so
    /// that they agree with each other and with `applied_index`.
    pub fn export_state(&self) -> Result<StateExport, OfflineError> {
        let db = &self.db;
        let snap = db.snapshot();
        let applied: Option<LogId> = match snap.get_cf(cf(db, CF_SM_META), KEY_APPLIED)? {
            Some(v) => decode_versioned(LOG_VERSION, &v)?,
            None => None,
        };
        let mut records = Vec::new();
        for item in snap.iterator_cf(cf(db, CF_STATE), IteratorMode::Start) {
            let (k, v) = item?;
            records.push((k.to_vec(), v.to_vec()));
        }
        Ok(StateExport { applied_index: applied.map(|l| l.index), records })
    }

    /// Restore, with the node stopped, on a node just made by `cluster
    /// init`: replaces every record but those of the cluster itself
    /// ([`crate::state::keys::belongs_to_cluster`]: its id, CA, nodes,
    /// join tokens) with `records`, as if it had been applied at the
    /// current applied index. Then it builds a snapshot and drops the log
    /// behind it, so that nodes joining later receive these records in
    /// that snapshot (they were never entries of the log). Returns how many
    /// records it wrote.
    pub fn import_records(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<usize, OfflineError> {
        use crate::state::keys::belongs_to_cluster;
        let db = &self.db;
        let applied: LogId = get_value::<Option<LogId>>(db, CF_SM_META, KEY_APPLIED)?.flatten().ok_or(OfflineError::NothingApplied)?;
        let state_cf = cf(db, CF_STATE);
        let mut batch = WriteBatch::default();
        for item in db.iterator_cf(state_cf, IteratorMode::Start) {
            let (k, _) = item?;
            if !belongs_to_cluster(&k) {
                batch.delete_cf(state_cf, k);
            }
        }
        let mut written = 0;
        for (k, v) in records {
            if !belongs_to_cluster(&k) {
                batch.put_cf(state_cf, k, v);
                written += 1;
            }
        }
        db.write_opt(batch, &sync_write())?;
        self.watches.replaced();
        self.state_machine().build()?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(db, CF_RAFT), KEY_PURGED, encode(&applied)?);
        batch.delete_range_cf(cf(db, CF_LOG), 0u64.to_be_bytes(), (applied.index + 1).to_be_bytes());
        db.write_opt(batch, &sync_write())?;
        Ok(written)
    }
}

/// Where the bytes of the snapshot `meta` are kept in `dir`.
fn snapshot_path(dir: &Path, meta: &SnapshotMeta) -> PathBuf {
    let name: String = meta.snapshot_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    dir.join(format!("{name}.snap"))
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column family created at open")
}

fn sync_write() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Write, e)
}

fn get_value<T: DeserializeOwned>(db: &DB, cf_name: &str, key: &[u8]) -> Result<Option<T>, StorageError> {
    match db.get_cf(cf(db, cf_name), key).map_err(read_err)? {
        None => Ok(None),
        Some(v) => decode_versioned(LOG_VERSION, &v).map(Some).map_err(read_err),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    encode_versioned(LOG_VERSION, value).map_err(write_err)
}

/// Runs RocksDB work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StorageError> + Send + 'static) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(write_err(std::io::Error::other(e.to_string()))),
    }
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct RocksLogStore {
    db: Arc<DB>,
}

/// The most log bytes one AppendEntries carries (at least one entry,
/// however large). openraft gives each AppendEntries one heartbeat interval;
/// a batch of its default 300 entries of up to 4 MiB each would never
/// arrive in time over a WAN link, and the follower would never catch up.
/// One MiB takes 20 ms at 50 MB/s; a single 4 MiB manifest goes alone.
pub const MAX_APPEND_BYTES: usize = 1 << 20;

impl RocksLogStore {
    /// Entries `[start, end)`, stopping after the first one that brings
    /// the stored size to `budget` bytes.
    async fn read_entries(&self, start: u64, end: Option<u64>, budget: usize) -> Result<Vec<Entry>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let mut out = Vec::new();
            let mut bytes = 0usize;
            let from = start.to_be_bytes();
            for item in db.iterator_cf(cf(&db, CF_LOG), IteratorMode::From(&from, Direction::Forward)) {
                let (k, v) = item.map_err(read_err)?;
                let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| read_err(std::io::Error::other("bad log key")))?);
                if end.is_some_and(|e| idx >= e) || bytes >= budget {
                    break;
                }
                bytes += v.len();
                out.push(decode_versioned(LOG_VERSION, &v).map_err(|e| io_err(ErrorSubject::LogIndex(idx), ErrorVerb::Read, e))?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for RocksLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(&mut self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Some(e + 1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        self.read_entries(start, end, usize::MAX).await
    }

    /// What replication sends: at most [`MAX_APPEND_BYTES`] a batch.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(start, Some(end), MAX_APPEND_BYTES).await
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = RocksLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let last_purged_log_id: Option<LogId> = get_value(&db, CF_RAFT, KEY_PURGED)?;
            let last = match db.iterator_cf(cf(&db, CF_LOG), IteratorMode::End).next() {
                None => None,
                Some(item) => {
                    let (_, v) = item.map_err(read_err)?;
                    let e: Entry = decode_versioned(LOG_VERSION, &v).map_err(read_err)?;
                    Some(e.log_id)
                }
            };
            Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let db = self.db.clone();
        let bytes = encode(vote)?;
        blocking(move || db.put_cf_opt(cf(&db, CF_RAFT), KEY_VOTE, bytes, &sync_write()).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let db = self.db.clone();
        blocking(move || get_value(&db, CF_RAFT, KEY_VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let bytes = encode(&committed)?;
        // Not synced: a lost `committed` only means re-learning it from the leader.
        blocking(move || db.put_cf(cf(&db, CF_RAFT), KEY_COMMITTED, bytes).map_err(write_err)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || Ok(get_value::<Option<LogId>>(&db, CF_RAFT, KEY_COMMITTED)?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        {
            let log = cf(&self.db, CF_LOG);
            for e in entries {
                batch.put_cf(log, e.log_id.index.to_be_bytes(), encode(&e)?);
            }
        }
        let db = self.db.clone();
        let res = blocking(move || db.write_opt(batch, &sync_write()).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))).await;
        callback.log_io_completed(res.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf(&db, CF_LOG), log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
            batch.delete_cf(cf(&db, CF_LOG), u64::MAX.to_be_bytes());
            db.write_opt(batch, &sync_write()).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        let purged = encode(&log_id)?;
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.put_cf(cf(&db, CF_RAFT), KEY_PURGED, purged);
            batch.delete_range_cf(cf(&db, CF_LOG), 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes());
            db.write_opt(batch, &sync_write()).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
        })
        .await
    }
}

/// The current snapshot as releases before streamed snapshots stored it
/// (under [`KEY_SNAPSHOT`]): its meta and its bytes.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The state machine, kept in the `state` column family.
#[derive(Clone)]
pub struct RocksStateMachine {
    db: Arc<DB>,
    /// Makes snapshot ids unique when two are built at the same log id.
    snapshot_seq: Arc<AtomicU64>,
    /// Told of every key an applied entry or snapshot changes.
    watches: Watches,
    /// Where snapshot files are kept.
    snapshots: PathBuf,
}

struct DbState<'a>(&'a DB);

impl StateRead for DbState<'_> {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.0.get_cf(cf(self.0, CF_STATE), key).map_err(|e| StateError::Read(e.to_string()))
    }

    fn get_many_raw(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.0
            .batched_multi_get_cf(cf(self.0, CF_STATE), keys, false)
            .into_iter()
            .map(|v| v.map(|v| v.map(|v| v.to_vec())).map_err(|e| StateError::Read(e.to_string())))
            .collect()
    }

    fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        self.range_raw(prefix, &state::prefix_end(prefix), usize::MAX)
    }
    fn range_raw(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        // The bound goes to RocksDB too: a seek that finds nothing in the
        // range stops at its end rather than stepping over whatever
        // deleted keys follow it.
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(to.to_vec());
        let mut out = Vec::new();
        for item in self.0.iterator_cf_opt(cf(self.0, CF_STATE), opts, IteratorMode::From(from, Direction::Forward)) {
            let (k, v) = item.map_err(|e| StateError::Read(e.to_string()))?;
            if k.as_ref() >= to || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

impl RocksStateMachine {
    fn build(&self) -> Result<Snapshot, StorageError> {
        let db = &self.db;
        // One RocksDB snapshot so the records and the applied id agree.
        let snap = db.snapshot();
        let applied: Option<LogId> = match snap.get_cf(cf(db, CF_SM_META), KEY_APPLIED).map_err(read_err)? {
            Some(v) => decode_versioned(LOG_VERSION, &v).map_err(read_err)?,
            None => None,
        };
        let membership: StoredMembership = match snap.get_cf(cf(db, CF_SM_META), KEY_MEMBERSHIP).map_err(read_err)? {
            Some(v) => decode_versioned(LOG_VERSION, &v).map_err(read_err)?,
            None => StoredMembership::default(),
        };
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, seq),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id };
        let snap_err = |e: std::io::Error| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
        // Two passes over the same RocksDB snapshot: the count comes first
        // in the layout, and counting keeps nothing in memory.
        let mut count = 0u64;
        for item in snap.iterator_cf(cf(db, CF_STATE), IteratorMode::Start) {
            item.map_err(read_err)?;
            count += 1;
        }
        let path = snapshot_path(&self.snapshots, &meta);
        let part = path.with_extension("part");
        std::fs::create_dir_all(&self.snapshots).map_err(snap_err)?;
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&part).map_err(snap_err)?);
        snapshot_file::write_header(&mut w, SNAPSHOT_VERSION, count).map_err(snap_err)?;
        let mut written = 0u64;
        for item in snap.iterator_cf(cf(db, CF_STATE), IteratorMode::Start).take(count as usize) {
            let (k, v) = item.map_err(read_err)?;
            snapshot_file::write_record(&mut w, &k, &v).map_err(snap_err)?;
            written += 1;
        }
        if written != count {
            return Err(snap_err(std::io::Error::other(format!("snapshot counted {count} records and then read {written}"))));
        }
        let file = w.into_inner().map_err(|e| snap_err(e.into_error()))?;
        file.sync_all().map_err(snap_err)?;
        let bytes = file.metadata().map_err(snap_err)?.len();
        std::fs::rename(&part, &path).map_err(snap_err)?;
        self.make_current(&meta, &path, WriteBatch::default())?;
        tracing::info!(snapshot_id = %meta.snapshot_id, records = count, bytes, "built metadata snapshot");
        let file = std::fs::File::open(&path).map_err(snap_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }

    /// Makes the snapshot `meta`, whose bytes are in its file, the applied
    /// state and the current snapshot. Run again after a stop part way, it
    /// ends in the same place.
    fn finish_install(&self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let path = snapshot_path(&self.snapshots, meta);
        let records = self.replace_state(&path).map_err(|e| io_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        self.complete_install(meta, &path, records)
    }

    /// The last step of an install, once the state is the snapshot's: its
    /// applied id and membership, and it (its bytes at `path`) becomes the
    /// current snapshot.
    fn complete_install(&self, meta: &SnapshotMeta, path: &Path, records: u64) -> Result<(), StorageError> {
        let db = &self.db;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(db, CF_SM_META), KEY_APPLIED, encode(&meta.last_log_id)?);
        batch.put_cf(cf(db, CF_SM_META), KEY_MEMBERSHIP, encode(&meta.last_membership)?);
        batch.delete_cf(cf(db, CF_SM_META), KEY_INSTALLING);
        self.make_current(meta, path, batch)?;
        self.watches.replaced();
        tracing::info!(snapshot_id = %meta.snapshot_id, records, "installed metadata snapshot");
        Ok(())
    }

    /// Replaces the `state` family with the records of the snapshot file at
    /// `path` in one step: the records, merged in key order with the keys
    /// present, become one SST of puts (every record) and deletes (every
    /// present key the snapshot lacks) that RocksDB ingests whole. Memory
    /// stays at a block or so whatever the size of the state. Returns the
    /// number of records.
    fn replace_state(&self, path: &Path) -> std::io::Result<u64> {
        let db = &self.db;
        let state_cf = cf(db, CF_STATE);
        let rocks = std::io::Error::other;
        let sst_path = self.snapshots.join(format!("ingest-{}.sst", self.snapshot_seq.fetch_add(1, Ordering::Relaxed)));
        let opts = state_options();
        let mut sst = SstFileWriter::create(&opts);
        sst.open(&sst_path).map_err(rocks)?;
        let mut entries = 0u64;
        let records = {
            let mut present = db.iterator_cf(state_cf, IteratorMode::Start);
            let mut next_present = || present.next().transpose().map(|kv| kv.map(|(k, _)| k)).map_err(rocks);
            let mut cursor = next_present()?;
            let mut last: Option<Vec<u8>> = None;
            let file = std::fs::File::open(path)?;
            let records = snapshot_file::read_records(&mut BufReader::with_capacity(1 << 20, file), SNAPSHOT_VERSION, |k, v| {
                if last.as_ref().is_some_and(|l| *l >= k) {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "snapshot records are not in strictly increasing key order"));
                }
                while cursor.as_deref().is_some_and(|p| p < k.as_slice()) {
                    sst.delete(cursor.take().expect("checked above")).map_err(rocks)?;
                    entries += 1;
                    cursor = next_present()?;
                }
                if cursor.as_deref() == Some(k.as_slice()) {
                    cursor = next_present()?;
                }
                sst.put(&k, &v).map_err(rocks)?;
                entries += 1;
                last = Some(k);
                Ok(())
            })?;
            while let Some(p) = cursor.take() {
                sst.delete(p).map_err(rocks)?;
                entries += 1;
                cursor = next_present()?;
            }
            records
        };
        if entries == 0 {
            // Nothing present and nothing to put: RocksDB writes no empty SST.
            drop(sst);
            let _ = std::fs::remove_file(&sst_path);
            return Ok(records);
        }
        sst.finish().map_err(rocks)?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        db.ingest_external_file_cf_opts(state_cf, &ingest, vec![&sst_path]).map_err(rocks)?;
        let _ = std::fs::remove_file(&sst_path);
        Ok(records)
    }

    /// Records `meta` (its bytes at `path`) as the current snapshot, with
    /// the rest of `batch`, and removes every other snapshot file. A file
    /// still being sent or received stays readable through its open handle.
    fn make_current(&self, meta: &SnapshotMeta, path: &Path, mut batch: WriteBatch) -> Result<(), StorageError> {
        let db = &self.db;
        batch.put_cf(cf(db, CF_SM_META), KEY_SNAPSHOT_FILE, encode(meta)?);
        batch.delete_cf(cf(db, CF_SM_META), KEY_SNAPSHOT);
        db.write_opt(batch, &sync_write()).map_err(|e| io_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        if let Ok(dir) = std::fs::read_dir(&self.snapshots) {
            for f in dir.flatten().filter(|f| f.path() != path) {
                let _ = std::fs::remove_file(f.path());
            }
        }
        Ok(())
    }

    /// The current snapshot, reading one a previous release stored whole
    /// into a file first.
    fn current(&self) -> Result<Option<Snapshot>, StorageError> {
        let db = &self.db;
        let snap_err = |e: std::io::Error| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        if let Some(meta) = get_value::<SnapshotMeta>(db, CF_SM_META, KEY_SNAPSHOT_FILE)? {
            return match std::fs::File::open(snapshot_path(&self.snapshots, &meta)) {
                Ok(f) => Ok(Some(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(f)) })),
                // Gone (a data directory copied without it): openraft builds another.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(snap_err(e)),
            };
        }
        let Some(old) = get_value::<StoredSnapshot>(db, CF_SM_META, KEY_SNAPSHOT)? else { return Ok(None) };
        let path = snapshot_path(&self.snapshots, &old.meta);
        std::fs::create_dir_all(&self.snapshots).map_err(snap_err)?;
        std::fs::write(path.with_extension("part"), &old.data).map_err(snap_err)?;
        std::fs::rename(path.with_extension("part"), &path).map_err(snap_err)?;
        self.make_current(&old.meta, &path, WriteBatch::default())?;
        let f = std::fs::File::open(&path).map_err(snap_err)?;
        Ok(Some(Snapshot { meta: old.meta, snapshot: Box::new(tokio::fs::File::from_std(f)) }))
    }

    /// Adds one entry's state changes to its write batch: deletes first,
    /// then puts.
    fn write_changes(db: &DB, batch: &mut WriteBatch, changes: &state::Changes) -> Result<(), StorageError> {
        let state_cf = cf(db, CF_STATE);
        for k in &changes.deletes {
            // A delete of a key that is not there would still leave a
            // tombstone that every later read of that range steps over
            // until a compaction (a tag write deletes its absent
            // expiration row, for one).
            if db.get_pinned_cf(state_cf, k).map_err(read_err)?.is_some() {
                batch.delete_cf(state_cf, k);
            }
        }
        for (k, v) in &changes.puts {
            batch.put_cf(state_cf, k, v);
        }
        Ok(())
    }

    fn apply_blocking(db: &DB, watches: &Watches, entries: Vec<Entry>) -> Result<Vec<MetaResponse>, StorageError> {
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let log_id = entry.log_id;
            let mut batch = WriteBatch::default();
            let mut changed = state::Changes::default();
            let resp = match &entry.payload {
                EntryPayload::Blank => MetaResponse::Done,
                EntryPayload::Normal(MetaRequest::V1(cmd)) => {
                    let (resp, changes) = state::apply(&DbState(db), cmd).map_err(|e| io_err(ErrorSubject::Apply(log_id), ErrorVerb::Write, e))?;
                    Self::write_changes(db, &mut batch, &changes)?;
                    changed = changes;
                    resp
                }
                EntryPayload::Normal(MetaRequest::Batch(cmds)) => {
                    let base = DbState(db);
                    let mut overlay = state::overlay::Overlay::new(&base);
                    let mut resps = Vec::with_capacity(cmds.len());
                    for cmd in cmds {
                        resps.push(overlay.apply(cmd).map_err(|e| io_err(ErrorSubject::Apply(log_id), ErrorVerb::Write, e))?);
                    }
                    let changes = overlay.into_changes();
                    Self::write_changes(db, &mut batch, &changes)?;
                    changed = changes;
                    MetaResponse::Batch(resps)
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(log_id), m.clone());
                    batch.put_cf(cf(db, CF_SM_META), KEY_MEMBERSHIP, encode(&stored)?);
                    MetaResponse::Done
                }
            };
            batch.put_cf(cf(db, CF_SM_META), KEY_APPLIED, encode(&Some(log_id))?);
            db.write(batch).map_err(|e| io_err(ErrorSubject::Apply(log_id), ErrorVerb::Write, e))?;
            watches.changed(changed.deletes.iter().map(Vec::as_slice).chain(changed.puts.iter().map(|(k, _)| k.as_slice())));
            out.push(resp);
        }
        Ok(out)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for RocksStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let me = self.clone();
        blocking(move || me.build()).await
    }
}

impl RaftStateMachine<TypeConfig> for RocksStateMachine {
    type SnapshotBuilder = RocksStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let applied = get_value::<Option<LogId>>(&db, CF_SM_META, KEY_APPLIED)?.flatten();
            let membership = get_value::<StoredMembership>(&db, CF_SM_META, KEY_MEMBERSHIP)?.unwrap_or_default();
            Ok((applied, membership))
        })
        .await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (db, watches) = (self.db.clone(), self.watches.clone());
        blocking(move || Self::apply_blocking(&db, &watches, entries)).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let me = self.clone();
        blocking(move || {
            let snap_err = |e: std::io::Error| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
            std::fs::create_dir_all(&me.snapshots).map_err(snap_err)?;
            let path = me.snapshots.join(format!("receiving-{}.part", me.snapshot_seq.fetch_add(1, Ordering::Relaxed)));
            let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(snap_err)?;
            // Nameless from here on: it lives as long as the handle, and a
            // crash leaves nothing behind.
            let _ = std::fs::remove_file(&path);
            Ok(Box::new(tokio::fs::File::from_std(f)))
        })
        .await
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<tokio::fs::File>) -> Result<(), StorageError> {
        let me = self.clone();
        let meta = meta.clone();
        // Waits for writes still in flight on the handle.
        let mut file = snapshot.into_std().await;
        blocking(move || {
            let signature = meta.signature();
            let snap_err = |e: std::io::Error| io_err(ErrorSubject::Snapshot(Some(signature.clone())), ErrorVerb::Write, e);
            // Kept as this node's current snapshot, for nodes it may serve,
            // and for a restart to finish the install from.
            let path = snapshot_path(&me.snapshots, &meta);
            let part = path.with_extension("part");
            file.seek(SeekFrom::Start(0)).map_err(snap_err)?;
            let mut copy = std::fs::File::create(&part).map_err(snap_err)?;
            std::io::copy(&mut file, &mut copy).map_err(snap_err)?;
            copy.sync_all().map_err(snap_err)?;
            std::fs::rename(&part, &path).map_err(snap_err)?;
            me.db.put_cf_opt(cf(&me.db, CF_SM_META), KEY_INSTALLING, encode(&meta)?, &sync_write()).map_err(write_err)?;
            let records = match me.replace_state(&path) {
                Ok(records) => records,
                Err(e) => {
                    // Nothing was ingested (the ingest is the last step,
                    // and all or nothing): the state is as it was, so the
                    // mark goes and no start tries this snapshot again.
                    me.db.delete_cf_opt(cf(&me.db, CF_SM_META), KEY_INSTALLING, &sync_write()).map_err(write_err)?;
                    return Err(snap_err(e));
                }
            };
            me.complete_install(&meta, &path, records)
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let me = self.clone();
        blocking(move || me.current()).await
    }
}

/// Local, read-only access to the applied metadata. Reads are as fresh as
/// this node's applied index; use the node's linearizable read where an API
/// needs more.
#[derive(Clone)]
pub struct MetaState {
    db: Arc<DB>,
}

impl StateRead for MetaState {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        DbState(&self.db).get_raw(key)
    }

    fn get_many_raw(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        DbState(&self.db).get_many_raw(keys)
    }

    fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        DbState(&self.db).scan_raw(prefix)
    }

    fn range_raw(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        DbState(&self.db).range_raw(from, to, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{MetaCommand, NodeRegistration, NodeRole};

    /// An entry whose stored form is about `bytes` long.
    fn entry(index: u64, bytes: usize) -> Entry {
        let registration = NodeRegistration { region: "eu".into(), peer_addr: "p:1".into(), http_addr: "h".repeat(bytes), role: NodeRole::Auto };
        let cmd = MetaCommand::RegisterNode { registration, token: None, now_ms: 0 };
        Entry { log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(MetaRequest::V1(cmd)) }
    }

    /// A grouped entry leaves the state and answers that the same commands
    /// leave and answer as entries of their own, one after another: each
    /// command sees what the ones before it wrote, a key written, deleted
    /// and written again within the group ends as the last one left it, and
    /// a delete of a key the group created and removed leaves no tombstone
    /// behind.
    #[tokio::test]
    async fn a_grouped_entry_applies_as_its_commands_would_one_by_one() {
        use crate::command::{IdentityCommand, UserRecord};
        let user = |name: &str, superuser: bool| UserRecord { name: name.into(), password_hash: "h".into(), superuser, created_at_ms: 1 };
        let cmds = vec![
            MetaCommand::Identity(IdentityCommand::CreateUser(user("ann", false))),
            MetaCommand::Identity(IdentityCommand::CreateUser(user("ann", true))),
            MetaCommand::Identity(IdentityCommand::DeleteUser { name: "ann".into() }),
            MetaCommand::Identity(IdentityCommand::DeleteUser { name: "ann".into() }),
            MetaCommand::Identity(IdentityCommand::CreateUser(user("ann", true))),
            MetaCommand::Identity(IdentityCommand::CreateUser(user("bob", false))),
            MetaCommand::Identity(IdentityCommand::DeleteUser { name: "bob".into() }),
            MetaCommand::Identity(IdentityCommand::CreateUser(user("cy", false))),
        ];
        let leader = openraft::CommittedLeaderId::new(1, 1);

        let one_dir = tempfile::tempdir().unwrap();
        let one = RocksStore::open(one_dir.path()).unwrap();
        let entries: Vec<Entry> = cmds
            .iter()
            .enumerate()
            .map(|(i, c)| Entry { log_id: LogId::new(leader, i as u64 + 1), payload: EntryPayload::Normal(MetaRequest::V1(c.clone())) })
            .collect();
        let singly = one.state_machine().apply(entries).await.unwrap();

        let grouped_dir = tempfile::tempdir().unwrap();
        let grouped = RocksStore::open(grouped_dir.path()).unwrap();
        let watch = grouped.watch(&[b"u"]);
        watch.take();
        let entry = Entry { log_id: LogId::new(leader, 1), payload: EntryPayload::Normal(MetaRequest::Batch(cmds.clone())) };
        let answer = grouped.state_machine().apply([entry]).await.unwrap();

        assert_eq!(answer, vec![MetaResponse::Batch(singly.clone())]);
        assert!(matches!(singly[1], MetaResponse::Refused(_)), "the second create sees the first: {:?}", singly[1]);
        assert_eq!(singly[3], MetaResponse::NotFound, "the second delete sees the first");
        let dump = |s: &RocksStore| s.state().scan_raw(b"").unwrap();
        assert_eq!(dump(&grouped), dump(&one));
        assert_eq!(grouped.state().get::<UserRecord>(&crate::state::keys::user("ann")).unwrap(), Some(user("ann", true)));
        assert!(grouped.state().get_raw(&crate::state::keys::user("bob")).unwrap().is_none());
        let deletes = |s: &RocksStore| s.db.property_int_value_cf(cf(&s.db, CF_STATE), "rocksdb.num-deletes-active-mem-table").unwrap();
        assert_eq!(deletes(&grouped), Some(0), "nothing the group left was there before it");
        assert_eq!(deletes(&one), Some(2), "one by one, ann and bob were each deleted once they existed");
        let (applied, _) = grouped.state_machine().applied_state().await.unwrap();
        assert_eq!(applied, Some(LogId::new(leader, 1)), "one entry, applied with its log id");
        match watch.take() {
            crate::watch::Changed::Keys(keys) => assert!(keys.contains(&crate::state::keys::user("ann")) && keys.contains(&crate::state::keys::user("cy"))),
            other => panic!("the watch hears the group's keys, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_snapshot_goes_through_a_file_and_one_a_previous_release_stored_is_still_served() {
        use tokio::io::AsyncReadExt;
        let read_all = |mut f: Box<tokio::fs::File>| async move {
            let mut v = Vec::new();
            f.read_to_end(&mut v).await.unwrap();
            v
        };
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let db = store.db.clone();
        for i in 0..1000u32 {
            db.put_cf(cf(&db, CF_STATE), format!("k{i:04}"), vec![i as u8; (i % 300) as usize]).unwrap();
        }
        let mut sm = store.state_machine();
        let built = sm.build_snapshot().await.unwrap();
        let meta = built.meta.clone();
        let bytes = read_all(built.snapshot).await;
        assert_eq!(std::fs::read_dir(dir.path().join("snapshots")).unwrap().count(), 1, "one file, the current snapshot");

        // Installed into another node: the same records, and its current snapshot.
        let other_dir = tempfile::tempdir().unwrap();
        let other = RocksStore::open(other_dir.path()).unwrap();
        let mut other_sm = other.state_machine();
        let watch = other.watch(&[b"k"]);
        watch.take();
        let mut incoming = other_sm.begin_receiving_snapshot().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes).await.unwrap();
        other_sm.install_snapshot(&meta, incoming).await.unwrap();
        assert_eq!(other.state().scan_raw(b"k").unwrap(), store.state().scan_raw(b"k").unwrap());
        assert_eq!(watch.take(), crate::watch::Changed::All, "a watch hears that the whole state was replaced");
        let current = other_sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, meta);
        assert!(read_all(current.snapshot).await == bytes);

        // A node upgraded from a release that stored the snapshot whole.
        let old_dir = tempfile::tempdir().unwrap();
        let old = RocksStore::open(old_dir.path()).unwrap();
        let stored = encode(&StoredSnapshot { meta: meta.clone(), data: bytes.clone() }).unwrap();
        old.db.put_cf(cf(&old.db, CF_SM_META), KEY_SNAPSHOT, stored).unwrap();
        let current = old.state_machine().get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, meta);
        assert!(read_all(current.snapshot).await == bytes);
        assert!(old.db.get_cf(cf(&old.db, CF_SM_META), KEY_SNAPSHOT).unwrap().is_none(), "moved into a file");
        let again = old.state_machine().get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(again.meta, meta);
    }

    /// A batch read answers what one read of each key answers, in the
    /// order asked, whether the key is in a memtable, in an SST or nowhere.
    #[test]
    fn a_batch_read_answers_as_reads_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let state = cf(&store.db, CF_STATE);
        for i in (0..400u32).step_by(2) {
            store.db.put_cf(state, format!("k{i:04}"), i.to_be_bytes()).unwrap();
        }
        store.db.flush_cf(state).unwrap();
        store.db.put_cf(state, "k0001", b"in the memtable").unwrap();
        store.db.delete_cf(state, "k0002").unwrap();
        let keys: Vec<Vec<u8>> = ["k0398", "k0001", "k0002", "k0003", "k0000", "k0398", "none"].iter().map(|k| k.as_bytes().to_vec()).collect();
        let one_by_one: Vec<_> = keys.iter().map(|k| store.state().get_raw(k).unwrap()).collect();
        assert_eq!(store.state().get_many_raw(&keys).unwrap(), one_by_one);
        assert_eq!(one_by_one.iter().filter(|v| v.is_some()).count(), 4);
    }

    /// An install leaves exactly the snapshot's records, whatever the node
    /// held before (keys the snapshot lacks, older values, in memtables and
    /// in SSTs), and a stop part way through, before or after the ingest,
    /// is finished at the next start: the same records, the snapshot's
    /// applied id, nothing left marked as installing. A snapshot that does
    /// not read whole changes nothing.
    #[tokio::test]
    async fn an_install_replaces_the_whole_state_and_a_stop_part_way_is_finished_at_the_next_start() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let applied = LogId::new(openraft::CommittedLeaderId::new(3, 1), 42);
        store.db.put_cf(cf(&store.db, CF_SM_META), KEY_APPLIED, encode(&Some(applied)).unwrap()).unwrap();
        for i in 0..2000u32 {
            store.db.put_cf(cf(&store.db, CF_STATE), format!("k{i:05}"), vec![i as u8; (i % 200) as usize]).unwrap();
        }
        let built = store.state_machine().build_snapshot().await.unwrap();
        let meta = built.meta.clone();
        let mut bytes = Vec::new();
        { built.snapshot }.read_to_end(&mut bytes).await.unwrap();
        let want = store.state().scan_raw(b"").unwrap();
        assert_eq!(want.len(), 2000);

        // What a node held before: keys before, between and after the
        // snapshot's, and older values of its own; half flushed to an SST.
        let held = |s: &RocksStore| {
            let state = cf(&s.db, CF_STATE);
            for (k, v) in [("a-gone", "x"), ("k00005", "old"), ("k00999x", "between")] {
                s.db.put_cf(state, k, v).unwrap();
            }
            s.db.flush_cf(state).unwrap();
            for (k, v) in [("k01500", "old"), ("z-gone", "y")] {
                s.db.put_cf(state, k, v).unwrap();
            }
        };
        let applied_of = |s: &RocksStore| get_value::<Option<LogId>>(&s.db, CF_SM_META, KEY_APPLIED).unwrap().flatten();

        let other_dir = tempfile::tempdir().unwrap();
        let other = RocksStore::open(other_dir.path()).unwrap();
        held(&other);
        let mut sm = other.state_machine();
        let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes).await.unwrap();
        sm.install_snapshot(&meta, incoming).await.unwrap();
        assert!(other.state().scan_raw(b"").unwrap() == want, "exactly the snapshot's records");
        assert_eq!(applied_of(&other), Some(applied));
        assert!(get_value::<SnapshotMeta>(&other.db, CF_SM_META, KEY_INSTALLING).unwrap().is_none());
        let files: Vec<_> = std::fs::read_dir(other_dir.path().join("snapshots")).unwrap().map(|f| f.unwrap().file_name()).collect();
        assert_eq!(files.len(), 1, "only the current snapshot is left: {files:?}");

        // Stopped after keeping the file and marking the install, before
        // the ingest; and stopped after the ingest, before the applied id.
        for ingested in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            {
                let node = RocksStore::open(dir.path()).unwrap();
                held(&node);
                std::fs::create_dir_all(&node.snapshots).unwrap();
                std::fs::write(snapshot_path(&node.snapshots, &meta), &bytes).unwrap();
                node.db.put_cf_opt(cf(&node.db, CF_SM_META), KEY_INSTALLING, encode(&meta).unwrap(), &sync_write()).unwrap();
                if ingested {
                    node.state_machine().replace_state(&snapshot_path(&node.snapshots, &meta)).unwrap();
                    assert!(node.state().scan_raw(b"").unwrap() == want);
                }
                assert_eq!(applied_of(&node), None, "stopped before the applied id was written");
            }
            let node = RocksStore::open(dir.path()).unwrap();
            assert!(node.state().scan_raw(b"").unwrap() == want, "ingested before the stop: {ingested}");
            assert_eq!(applied_of(&node), Some(applied));
            assert!(get_value::<SnapshotMeta>(&node.db, CF_SM_META, KEY_INSTALLING).unwrap().is_none());
            assert_eq!(node.state_machine().get_current_snapshot().await.unwrap().unwrap().meta, meta);
        }

        // A snapshot that does not read to its end changes nothing and
        // leaves no mark for the next start to trip on.
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let node = RocksStore::open(dir.path()).unwrap();
            held(&node);
            let before = node.state().scan_raw(b"").unwrap();
            let mut sm = node.state_machine();
            let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes[..bytes.len() / 2]).await.unwrap();
            assert!(sm.install_snapshot(&meta, incoming).await.is_err(), "half a snapshot is refused");
            assert!(node.state().scan_raw(b"").unwrap() == before);
            assert!(get_value::<SnapshotMeta>(&node.db, CF_SM_META, KEY_INSTALLING).unwrap().is_none());
            before
        };
        let node = RocksStore::open(dir.path()).unwrap();
        assert!(node.state().scan_raw(b"").unwrap() == before, "what it held before");
        assert_eq!(applied_of(&node), None);
    }

    #[tokio::test]
    async fn replication_batches_stop_at_the_byte_budget_but_never_come_back_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let mut log = store.log_store();
        // 1..=20 of 300 KiB each, then 21..=22 of 4 MiB, then 23..=122 tiny.
        let sizes = (1..=20u64).map(|i| (i, 300 << 10)).chain([(21, 4 << 20), (22, 4 << 20)]).chain((23..=122).map(|i| (i, 16)));
        for (i, size) in sizes {
            log.db.put_cf(cf(&log.db, CF_LOG), i.to_be_bytes(), encode_versioned(LOG_VERSION, &entry(i, size)).unwrap()).unwrap();
        }
        let indexes = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        // 300 KiB entries: the fourth one passes 1 MiB, so four go.
        assert_eq!(indexes(log.limited_get_log_entries(1, 123).await.unwrap()), vec![1, 2, 3, 4]);
        // A 4 MiB entry goes alone: never an empty batch.
        assert_eq!(indexes(log.limited_get_log_entries(21, 123).await.unwrap()), vec![21]);
        // Small entries fill the range they were asked for.
        assert_eq!(log.limited_get_log_entries(23, 123).await.unwrap().len(), 100);
        // The unlimited reader is unchanged.
        assert_eq!(log.try_get_log_entries(1..123).await.unwrap().len(), 122);
    }
}
