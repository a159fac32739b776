//! `/metrics`: the Prometheus text format, names prefixed `berth_` with
//! units in the names. Counters of the layers (requests, peer fetches)
//! are recorded as they happen through the `metrics` facade; the state
//! of the node (Raft, uploads, replication backlog, GC and scrub totals) is
//! read when scraped.
//!
//! The recorder is process-wide: one node per process in production. In
//! `berth dev` and in-process tests, nodes share it and the gauges show
//! the node that was scraped last.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::registry::gc::GcStats;
use crate::registry::uploads::UploadManager;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets, seconds: sub-millisecond reads to slow WAN writes.
const SECONDS_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process's recorder (once) and returns its handle.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS).ok()?;
            match builder.install_recorder() {
                Ok(h) => {
                    describe();
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

pub struct Sources<'a> {
    pub meta: &'a berth_raft::MetaNodeHandle,
    pub uploads: &'a UploadManager,
    pub replicator: &'a berth_replication::Replicator,
    pub gc: &'a GcStats,
}

/// Reads the node's state into gauges and renders everything.
pub fn render(src: &Sources<'_>) -> String {
    let Some(handle) = handle() else { return String::new() };
    let m = src.meta.view();
    metrics::gauge!("berth_raft_term").set(m.term as f64);
    metrics::gauge!("berth_raft_leader_id").set(m.leader.map(|l| l as f64).unwrap_or(-1.0));
    metrics::gauge!("berth_raft_is_leader").set(if src.meta.is_leader() { 1.0 } else { 0.0 });
    let last_log = m.last_log_index.unwrap_or(0);
    let applied = m.applied_index.unwrap_or(0);
    metrics::gauge!("berth_raft_last_log_index").set(last_log as f64);
    metrics::gauge!("berth_raft_applied_index").set(applied as f64);
    metrics::gauge!("berth_raft_apply_lag_entries").set(last_log.saturating_sub(applied) as f64);
    metrics::gauge!("berth_uploads_in_progress").set(src.uploads.in_progress() as f64);
    let (missing, missing_bytes) = src.replicator.backlog();
    metrics::gauge!("berth_replication_backlog_blobs").set(missing as f64);
    metrics::gauge!("berth_replication_backlog_bytes").set(missing_bytes as f64);
    let st = src.replicator.stats();
    let c = |name: &'static str, v: u64| metrics::counter!(name).absolute(v);
    c("berth_peer_requests_served_total", st.requests_served.load(Ordering::Relaxed));
    c("berth_peer_served_bytes_total", st.bytes_served.load(Ordering::Relaxed));
    c("berth_replication_fetched_blobs_total", st.fetched.load(Ordering::Relaxed));
    c("berth_replication_corrupt_copies_total", st.corrupt.load(Ordering::Relaxed));
    c("berth_scrub_runs_total", st.scrub_runs.load(Ordering::Relaxed));
    c("berth_scrub_checked_blobs_total", st.scrub_checked.load(Ordering::Relaxed));
    c("berth_scrub_repaired_blobs_total", st.scrub_corrupt.load(Ordering::Relaxed));
    c("berth_raft_read_barriers_total", src.meta.read_barriers());
    let (groups, grouped) = src.meta.grouped_writes();
    c("berth_raft_write_groups_total", groups);
    c("berth_raft_grouped_writes_total", grouped);
    c("berth_gc_runs_total", src.gc.runs.load(Ordering::Relaxed));
    c("berth_gc_swept_blobs_total", src.gc.swept.load(Ordering::Relaxed));
    c("berth_gc_deleted_files_total", src.gc.deleted.load(Ordering::Relaxed));
    notifications(src.meta);
    handle.render()
}

/// The cluster's notifications, by method, as the replicated state has
/// them (every node shows the same): events waiting, delivered, given up
/// on, and notifications skipped after their failures.
fn notifications(meta: &berth_raft::MetaNodeHandle) {
    use std::collections::BTreeMap;
    let state = meta.state();
    let (Ok(all), Ok(pending)) = (berth_raft::state::notifications::all(&state), berth_raft::state::notifications::pending(&state)) else { return };
    let method_of: BTreeMap<&str, &str> = all.iter().map(|n| (n.uuid.as_str(), n.method.as_str())).collect();
    for method in crate::notify::METHODS {
        let of = || all.iter().filter(|n| n.method == *method);
        let waiting = pending.iter().filter(|e| method_of.get(e.notification.as_str()) == Some(method)).count();
        metrics::gauge!("berth_notifications_pending", "method" => *method).set(waiting as f64);
        metrics::gauge!("berth_notifications_skipped", "method" => *method).set(of().filter(|n| n.skipped()).count() as f64);
        metrics::counter!("berth_notifications_delivered_total", "method" => *method).absolute(of().map(|n| n.delivered).sum());
        metrics::counter!("berth_notifications_failed_total", "method" => *method).absolute(of().map(|n| n.failed).sum());
        metrics::counter!("berth_notifications_dropped_total", "method" => *method).absolute(of().map(|n| n.dropped).sum());
    }
}

/// Help text for every metric berth exports (promtool wants it, and so do
/// the people reading a dashboard).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("berth_http_requests_total", "HTTP requests answered, by endpoint kind, method and status");
    describe_histogram!(
        "berth_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (to the response head), by endpoint kind and method"
    );
    describe_counter!("berth_http_received_bytes_total", Unit::Bytes, "Request body bytes announced by Content-Length, by endpoint kind");
    describe_counter!("berth_http_sent_bytes_total", Unit::Bytes, "Response body bytes announced by Content-Length, by endpoint kind");
    describe_counter!("berth_ldap_unavailable_total", "Directory (LDAP) logins refused with a 503 because the directory did not answer");
    describe_counter!("berth_blob_reads_total", "Blob reads served, by source: local disk or streamed from a peer");
    describe_counter!("berth_peer_fetches_total", "Blob fetches from a peer, by peer node id and outcome");
    describe_counter!("berth_peer_fetched_bytes_total", Unit::Bytes, "Blob bytes received from peers, by peer node id");
    describe_counter!(
        "berth_pipelined_copies_total",
        "Copies of uploads this node took, streamed to peers while uploaded: recorded, or lost (then made after the upload)"
    );
    describe_counter!("berth_peer_requests_served_total", "Blob GET requests this node answered for peers");
    describe_counter!("berth_peer_served_bytes_total", Unit::Bytes, "Blob bytes this node sent to peers");
    describe_counter!("berth_replication_fetched_blobs_total", "Blobs fetched from peers and committed");
    describe_counter!("berth_replication_corrupt_copies_total", "Fetched copies discarded because their digest did not match");
    describe_gauge!("berth_replication_backlog_blobs", "Blobs placement wants here that this node does not hold yet");
    describe_gauge!("berth_replication_backlog_bytes", Unit::Bytes, "Bytes of the blobs placement wants here that this node does not hold yet");
    describe_gauge!(
        "berth_reconcile_pass_seconds",
        Unit::Seconds,
        "Time the last reconciler pass took to find what this node misses (reads only the blob records changed since the pass before)"
    );
    describe_gauge!(
        "berth_reconcile_full_read_seconds",
        Unit::Seconds,
        "Time the reconciler's last full read of every blob record took (at start, after a snapshot or a placement change, and every 10 minutes)"
    );
    describe_gauge!("berth_raft_term", "Current Raft term");
    describe_gauge!("berth_raft_leader_id", "Node id of the current Raft leader (-1: none known)");
    describe_gauge!("berth_raft_is_leader", "1 when this node leads the metadata group");
    describe_gauge!("berth_raft_last_log_index", "Index of the last entry in this node's Raft log");
    describe_gauge!("berth_raft_applied_index", "Index of the last entry this node applied");
    describe_gauge!("berth_raft_apply_lag_entries", "Entries in this node's log not yet applied");
    describe_counter!("berth_raft_read_barriers_total", "Read barriers this node asked the leader for (reads that had to catch up first)");
    describe_counter!("berth_raft_write_groups_total", "Raft entries this node proposed as the leader holding several client writes (group commit)");
    describe_counter!("berth_raft_grouped_writes_total", "Client writes that went into those grouped entries");
    describe_gauge!("berth_uploads_in_progress", "Upload sessions open on this node");
    describe_gauge!("berth_notifications_pending", "Notification events waiting for delivery, by method");
    describe_gauge!("berth_notifications_skipped", "Notifications skipped after 3 events given up on in a row, until reset, by method");
    describe_counter!("berth_notifications_delivered_total", "Notification events a receiver took (2xx, or the SMTP server accepted), by method");
    describe_counter!("berth_notifications_failed_total", "Notification events given up on after their retries, by method");
    describe_counter!("berth_notifications_dropped_total", "Notification events not queued: the notification was skipped or its outbox full, by method");
    describe_counter!(
        "berth_proxy_cache_fetches_total",
        "Upstream fetches of a proxy-cache organization this node made, by outcome: filled, confirmed (a re-checked tag had not moved), stale (the upstream failed; the cached copy served), failed"
    );
    describe_counter!("berth_scrub_runs_total", "Scrub passes run");
    describe_counter!("berth_scrub_checked_blobs_total", "Blobs re-hashed by scrub");
    describe_counter!("berth_scrub_repaired_blobs_total", "Bad copies found by scrub (quarantined and fetched again)");
    describe_counter!("berth_gc_runs_total", "Garbage collections run");
    describe_counter!("berth_gc_swept_blobs_total", "Blobs the cluster forgot because nothing referenced them (on the leader)");
    describe_counter!("berth_gc_deleted_files_total", "Local copies of forgotten blobs deleted");
    describe_counter!("berth_scans_total", "Image scans this node finished, by status (scanned, failed, unsupported)");
    describe_histogram!("berth_scan_seconds", Unit::Seconds, "Time this node took to scan one image");
    describe_gauge!("berth_scans_queued", "Images waiting for a scan, cluster-wide, as this node sees them");
    describe_gauge!("berth_scan_feed_age_seconds", Unit::Seconds, "Age of the oldest advisory feed snapshot imported");
    describe_gauge!("berth_scan_advisories", "Advisories in this node's matcher database");
}
