//! Backup and restore of a whole cluster.
//!
//! A backup is the metadata as of one applied index, taken after a read
//! barrier (so it holds every write acknowledged before it was asked for),
//! plus an inventory of the blobs that metadata knows; `berth cluster
//! backup --with-blobs` also copies those blobs, skipping the ones a
//! previous run already copied. Every manifest in the metadata was only
//! accepted once its blobs were recorded, so a backup with its blobs is
//! complete: each manifest finds all of its blobs.
//!
//! A restore (`runtime::restore_cluster`) makes a new cluster (new id, new CA, node 1, as `cluster
//! init` does) and then, with the node stopped, puts every record of the
//! backup in place except those that describe the old cluster itself
//! ([`berth_raft::state::keys::belongs_to_cluster`]). Blobs are copied into
//! the node's store with their digests verified, and each blob record names
//! the new node as its holder, or no holder when the backup lacks the
//! blob. Users, robots, organizations and their secrets come back as they
//! were.

use std::path::{Path, PathBuf};

use anyhow::Context;
use berth_common::{decode_versioned, encode_versioned, Digest};
use berth_gateway::{ApiError, ErrorCode};
use berth_raft::command::{BlobRecord, ClusterRecord};
use berth_raft::state::{decode_record, keys};
use berth_raft::{MetaNodeHandle, StateRead, RECORD_VERSION};
use berth_replication::BlobStore;
use serde::{Deserialize, Serialize};

use crate::errors::{meta_err, state_err};

/// The metadata file of a backup directory.
pub const METADATA_FILE: &str = "metadata.berth";
/// The blob inventory of a backup directory (JSON, for people and scripts).
pub const INVENTORY_FILE: &str = "inventory.json";
/// Format version of [`Backup`].
const BACKUP_VERSION: u8 = 1;

/// What `GET /api/v1/cluster/backup` answers and `metadata.berth` holds.
#[derive(Serialize, Deserialize)]
pub struct Backup {
    pub cluster_id: String,
    pub taken_at_ms: u64,
    pub applied_index: Option<u64>,
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A blob the backed-up metadata knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobEntry {
    pub digest: String,
    pub size: u64,
    /// A repository it is linked into (where a registry pull finds it);
    /// `None` for a blob no repository links (nothing needs it).
    pub repo: Option<String>,
}

/// The node's side of `berth cluster backup`.
pub async fn take(meta: &MetaNodeHandle) -> Result<Vec<u8>, ApiError> {
    meta.read_barrier().await.map_err(meta_err)?;
    let cluster: ClusterRecord =
        meta.state().get(keys::CLUSTER).map_err(state_err)?.ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "this node has no cluster record yet"))?;
    let export = meta.export_state().await.map_err(meta_err)?;
    let backup = Backup { cluster_id: cluster.cluster_id, taken_at_ms: crate::util::now_ms(), applied_index: export.applied_index, records: export.records };
    tracing::info!(records = backup.records.len(), applied_index = ?backup.applied_index, "metadata backup taken");
    encode_versioned(BACKUP_VERSION, &backup).map_err(|e| ApiError::new(ErrorCode::Internal, format!("encoding the backup: {e}")))
}

impl Backup {
    pub fn decode(bytes: &[u8]) -> anyhow::Result<Backup> {
        decode_versioned(BACKUP_VERSION, bytes).map_err(|e| anyhow::anyhow!("not a berth backup (or one from a newer berth): {e}"))
    }

    /// Every blob record of the backup.
    fn blobs(&self) -> impl Iterator<Item = anyhow::Result<(Digest, BlobRecord)>> + '_ {
        self.records.iter().filter(|(k, _)| k.starts_with(keys::BLOB_PREFIX)).map(|(k, v)| {
            let digest = keys::blob_digest(k).with_context(|| format!("a blob record with an unreadable key {:?}", String::from_utf8_lossy(k)))?;
            Ok((digest, decode_record(k, v)?))
        })
    }

    /// The blobs the backed-up metadata knows.
    pub fn inventory(&self) -> anyhow::Result<Vec<BlobEntry>> {
        // The first repository of each blob in the index (the records are
        // in key order), for the records that no longer list theirs.
        let mut indexed: std::collections::HashMap<&[u8], String> = std::collections::HashMap::new();
        for (k, _) in self.records.iter().filter(|(k, _)| k.starts_with(keys::BLOB_REPO_PREFIX)) {
            if let Some(sep) = k.iter().position(|b| *b == 0) {
                indexed.entry(&k[keys::BLOB_REPO_PREFIX.len()..sep]).or_insert_with(|| String::from_utf8_lossy(&k[sep + 1..]).into_owned());
            }
        }
        self.blobs()
            .map(|b| {
                b.map(|(d, rec)| {
                    let repo = rec.repos.keys().next().cloned().or_else(|| indexed.get(d.to_string().as_bytes()).cloned());
                    BlobEntry { digest: d.to_string(), size: rec.size, repo }
                })
            })
            .collect()
    }
}

/// Where a backup directory keeps blob `digest`: `blobs/sha256/ab/<hex>`.
pub fn blob_path(dir: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let d: Digest = digest.parse().map_err(|e| anyhow::anyhow!("{digest}: {e}"))?;
    Ok(berth_replication::store::blob_path(&dir.join("blobs"), &d))
}

/// Puts the backup's blobs found in `from` into `store`, each verified by
/// its digest, and rewrites every blob record of `records` to name `me` as
/// its only holder, or no holder when the backup lacks the blob. Returns
/// how many blobs it restored and the digests of blobs that manifests use
/// but the backup does not hold.
pub async fn restore_blobs(backup: &mut Backup, from: &Path, store: &BlobStore, me: u64) -> anyhow::Result<(usize, Vec<String>)> {
    let blobs: Vec<(Digest, BlobRecord)> = backup.blobs().collect::<anyhow::Result<_>>()?;
    let mut held = std::collections::BTreeMap::new();
    let mut missing = Vec::new();
    for (digest, rec) in &blobs {
        let src = blob_path(from, &digest.to_string())?;
        let restored = match tokio::fs::File::open(&src).await {
            Ok(file) => {
                copy_verified(store, file, digest).await.with_context(|| format!("restoring blob {digest} from {}", src.display()))?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", src.display())),
        };
        if !restored && rec.refs > 0 {
            missing.push(digest.to_string());
        }
        held.insert(keys::blob(digest), restored);
    }
    for (k, v) in backup.records.iter_mut() {
        if let Some(restored) = held.get(k.as_slice()) {
            let mut rec: BlobRecord = decode_record(k, v)?;
            rec.holders = if *restored { [me].into() } else { Default::default() };
            *v = encode_versioned(RECORD_VERSION, &rec)?;
        }
    }
    Ok((held.values().filter(|r| **r).count(), missing))
}

/// Reads the backup in directory `from`.
pub fn read(from: &Path) -> anyhow::Result<Backup> {
    let meta_file = from.join(METADATA_FILE);
    let bytes = std::fs::read(&meta_file).with_context(|| format!("cannot read {}", meta_file.display()))?;
    Backup::decode(&bytes)
}

/// Copies `file` into `store` as `digest`, refusing it unless its bytes
/// hash to that digest.
async fn copy_verified(store: &BlobStore, mut file: tokio::fs::File, digest: &Digest) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut staging = store.create_staging().await?;
    let mut buf = bytes::BytesMut::new();
    loop {
        buf.reserve(1 << 20);
        if file.read_buf(&mut buf).await? == 0 {
            break;
        }
        staging.write(buf.split().freeze()).await?;
    }
    staging.commit(store, digest).await?;
    Ok(())
}
