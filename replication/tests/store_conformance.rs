//! The blob store's contract.

use berth_common::Digest;
use berth_replication::{BlobError, BlobRange, BlobStore};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

async fn put(store: &BlobStore, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    let mut s = store.create_staging().await.unwrap();
    for chunk in bytes.chunks(7) {
        s.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(s.commit(store, &d).await.unwrap(), bytes.len() as u64);
    d
}

async fn read(store: &BlobStore, d: &Digest, range: Option<BlobRange>) -> Vec<u8> {
    let mut r = store.open_read(d, range).await.unwrap().unwrap();
    let mut out = Vec::new();
    r.file.read_to_end(&mut out).await.unwrap();
    assert_eq!(out.len() as u64, r.len);
    out
}

#[tokio::test]
async fn commit_read_range_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let d = put(&store, &data).await;
    assert_eq!(store.stat(&d).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read(&store, &d, None).await, data);
    assert_eq!(read(&store, &d, Some(BlobRange { start: 10, end: Some(19) })).await, &data[10..20]);
    assert_eq!(read(&store, &d, Some(BlobRange { start: 9_990, end: None })).await, &data[9_990..]);
    assert_eq!(read(&store, &d, Some(BlobRange { start: 9_990, end: Some(1 << 40) })).await, &data[9_990..], "an end past the blob is clamped");
    for bad in [BlobRange { start: 10_000, end: None }, BlobRange { start: 20, end: Some(10) }] {
        assert!(matches!(store.open_read(&d, Some(bad)).await, Err(BlobError::RangeInvalid { .. })));
    }
    assert!(store.delete(&d).await.unwrap());
    assert!(!store.delete(&d).await.unwrap());
    assert!(store.open_read(&d, None).await.unwrap().is_none());
}

#[tokio::test]
async fn a_wrong_digest_stores_nothing_and_leaves_no_staging_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    let claimed = Digest::sha256_of(b"what the client said");
    let mut s = store.create_staging().await.unwrap();
    s.write(Bytes::from_static(b"what the client sent")).await.unwrap();
    match s.commit(&store, &claimed).await {
        Err(BlobError::DigestMismatch { expected, computed }) => {
            assert_eq!(expected, claimed);
            assert_eq!(computed, Digest::sha256_of(b"what the client sent"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.stat(&claimed).await.unwrap(), None);
    assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
    // An abandoned upload is cleaned up when dropped.
    let mut s = store.create_staging().await.unwrap();
    s.write(Bytes::from_static(b"half")).await.unwrap();
    drop(s);
    assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
}

#[tokio::test]
async fn sha512_digests_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    let bytes = b"sha512 content";
    use sha2::Digest as _;
    let d: Digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes))).parse().unwrap();
    let mut s = store.create_staging().await.unwrap();
    s.write(Bytes::from_static(bytes)).await.unwrap();
    s.commit(&store, &d).await.unwrap();
    assert_eq!(read(&store, &d, None).await, bytes);
    assert!(store.path_of(&d).to_string_lossy().contains("/sha512/"));
}

#[tokio::test]
async fn leftover_staging_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    let s = store.create_staging().await.unwrap();
    std::mem::forget(s); // as if the process died mid-upload
    assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 1);
    BlobStore::open(dir.path()).await.unwrap();
    assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
}

/// An upload session parks its staging blob between requests: the file is
/// closed (no descriptor, no chunks held) and reopened for the next
/// chunk, and the hash carries on as if it had never been closed.
#[tokio::test]
async fn a_parked_staging_blob_holds_no_file_and_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut s = store.create_staging().await.unwrap();
    assert!(!s.is_open(), "a new staging blob holds no descriptor");
    for chunk in data.chunks(70_001) {
        s.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        assert!(s.is_open());
        assert_eq!(s.park().await.unwrap(), s.len());
        assert!(!s.is_open(), "a parked staging blob holds no descriptor");
        assert_eq!(std::fs::metadata(s.path()).unwrap().len(), s.len(), "parking flushed every byte");
    }
    let d = Digest::sha256_of(&data);
    assert_eq!(s.commit(&store, &d).await.unwrap(), data.len() as u64);
    assert_eq!(read(&store, &d, None).await, data);
}

/// A flush dropped half way (a client gone mid-request) leaves the write
/// it waited for to the next flush: parking waits for it, and the blob goes
/// on in order.
///
/// The runtime has one blocking thread, held by the test while the flush is
/// polled, so the write is still queued when the flush is dropped: with a
/// free pool the write may end before the first poll, and the flush would
/// not be dropped half way at all.
#[test]
fn a_flush_dropped_half_way_leaves_its_write_to_the_next() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(1).build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let mut s = store.create_staging().await.unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let holder = tokio::task::spawn_blocking(move || {
            started.send(()).unwrap();
            held.recv().unwrap();
        });
        running.await.unwrap();
        // More than the write buffer: this write starts writing to the file.
        let first: Vec<u8> = (0..3u32 << 19).map(|i| (i % 251) as u8).collect();
        s.write(Bytes::from(first.clone())).await.unwrap();
        let dropped = futures::FutureExt::now_or_never(s.flush());
        assert!(dropped.is_none(), "the flush waits for the blocking pool");
        assert_eq!(s.len(), first.len() as u64);
        release.send(()).unwrap();
        holder.await.unwrap();
        assert_eq!(s.park().await.unwrap(), s.len());
        assert_eq!(std::fs::metadata(s.path()).unwrap().len(), s.len(), "parking waited for the dropped flush's write");
        s.write(Bytes::from_static(b"and the rest")).await.unwrap();
        let mut all = first;
        all.extend_from_slice(b"and the rest");
        let d = Digest::sha256_of(&all);
        assert_eq!(s.commit(&store, &d).await.unwrap(), all.len() as u64);
        assert_eq!(read(&store, &d, None).await, all);
    });
}

#[tokio::test]
async fn delete_stale_waits_for_pins_and_looks_again_under_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let d = put(&store, b"pinned bytes").await;
    // A commit stamps the copy with its own time, so it is fresh.
    assert!(!store.delete_stale(&d, before, || true).await.unwrap(), "a copy newer than the cutoff stays");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    assert!(!store.delete_stale(&d, later, || false).await.unwrap(), "a copy the cluster knows stays");
    // While pinned, a delete waits; once the pin goes, the check runs then.
    let pin = store.pin(&d).await;
    let deleting = tokio::spawn({
        let store = store.clone();
        let d = d.clone();
        async move { store.delete_stale(&d, later, || true).await.unwrap() }
    });
    // A fixed wait, on purpose: nothing is observable while the delete
    // waits on the pin, and an unpinned delete ends well within this (a
    // stat and an unlink), so a delete that ignored the pin would be caught.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!deleting.is_finished(), "the delete waits for the pin");
    assert!(store.stat(&d).await.unwrap().is_some());
    drop(pin);
    assert!(deleting.await.unwrap(), "unpinned, stale and unknown: deleted");
    assert!(store.stat(&d).await.unwrap().is_none());
    assert!(!store.delete_stale(&d, later, || true).await.unwrap(), "nothing left to delete");
    // Two pins of one digest do not wait for each other.
    let (_a, _b) = (store.pin(&d).await, store.pin(&d).await);
}
