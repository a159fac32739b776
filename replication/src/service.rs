//! Answering peers: every incoming connection is mutual TLS (the transport
//! refuses a peer without a certificate from the cluster CA), every stream
//! one request.
//!
//! A peer this node may not hear (a cut link, a drill's island) gets its
//! connection closed with [`CUT`], at the handshake or at its next request:
//! a partitioned node neither fetches from nor serves the other side.

use crate::error::{ReplicationError, Result};
use crate::protocol::{read_frame, write_frame, GetReply, Reply, Request};
use crate::{bump, BlobError, BlobRange, Replicator};
use bytes::Bytes;
use futures::StreamExt;

const SERVE_CHUNK: usize = 256 << 10;

/// A relay stream with no new bytes for this long is given up.
const RELAY_STALL: std::time::Duration = std::time::Duration::from_secs(15);

/// Application close code of a connection from a peer whose link is cut.
pub const CUT: u32 = 2;

/// Closes a connection from a peer this node may not hear now.
fn close_cut(conn: &quinn::Connection) {
    tracing::debug!(peer = ?crate::transport::peer_node_id(conn), "closing a blob connection: the link is cut");
    conn.close(CUT.into(), b"link cut");
}

impl Replicator {
    pub(crate) async fn serve(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let incoming = tokio::select! {
                i = self.inner.transport.endpoint().accept() => i,
                _ = shutdown.changed() => return,
            };
            let Some(incoming) = incoming else { return };
            if self.inner.faults.refuse_peers.load(std::sync::atomic::Ordering::Relaxed) {
                incoming.refuse();
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::info!(error = %e, "refused a blob connection");
                        return;
                    }
                };
                loop {
                    if !me.admits(&conn) {
                        return close_cut(&conn);
                    }
                    let Ok((send, recv)) = conn.accept_bi().await else { return };
                    // The link may have been cut while the connection idled.
                    if !me.admits(&conn) {
                        return close_cut(&conn);
                    }
                    let me = me.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.handle_stream(send, recv).await {
                            tracing::debug!(error = %e, "blob request failed");
                        }
                    });
                }
            });
        }
    }

    /// The fetch a GET for a blob not on disk may follow: one in flight, or
    /// a new one when placement wants the blob here anyway (see
    /// [`crate::reconcile::relay_parent`]: the asker is next in a relay chain
    /// and may be ahead of this node's own reconciler).
    fn relay_fetch(&self, digest: &berth_common::Digest) -> Option<std::sync::Arc<crate::Fetch>> {
        if let Some(f) = self.inner.fetches.lock().expect("fetch map lock").get(digest) {
            return Some(f.clone());
        }
        let info = self.inner.view.blob(digest)?;
        if !info.wanted_here || info.holders.is_empty() || info.holders.contains(&self.inner.view.self_id()) {
            return None;
        }
        let up = self.upstream(digest, &info);
        Some(self.fetch(digest, info.size, up))
    }

    /// Serves a range of a blob this node is still receiving, as it lands.
    /// The last byte goes out only once the blob checked out here; a relay
    /// that makes no progress for [`RELAY_STALL`] gives up, so the asker
    /// falls back to a holder.
    async fn serve_relay(&self, mut send: quinn::SendStream, fetch: std::sync::Arc<crate::Fetch>, range: Option<BlobRange>) -> Result<()> {
        use futures::StreamExt;
        let size = fetch.size;
        let (start, len, stream) = match self.follow(fetch, range) {
            Ok(s) => s,
            Err(BlobError::RangeInvalid { .. }) => {
                write_frame(&mut send, &GetReply::RangeInvalid).await.map_err(ReplicationError::answer)?;
                send.finish().map_err(ReplicationError::answer)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        write_frame(&mut send, &GetReply::Ok { size, start, len }).await.map_err(ReplicationError::answer)?;
        let mut stream = std::pin::pin!(stream);
        loop {
            let chunk = match tokio::time::timeout(RELAY_STALL, stream.next()).await {
                Ok(None) => break,
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(e))) => {
                    let _ = send.reset(1u32.into());
                    return Err(ReplicationError::answer(e));
                }
                Err(_) => {
                    let _ = send.reset(1u32.into());
                    return Err(ReplicationError::RelayStalled(RELAY_STALL));
                }
            };
            let n = chunk.len() as u64;
            send.write_chunk(chunk).await.map_err(ReplicationError::answer)?;
            bump(&self.inner.stats.bytes_served, n);
        }
        send.finish().map_err(ReplicationError::answer)?;
        let _ = send.stopped().await;
        Ok(())
    }

    /// Whether requests on `conn` may be heard: not from a node recorded
    /// as removed (its certificate still checks out against the CA), and
    /// not across a cut link.
    fn admits(&self, conn: &quinn::Connection) -> bool {
        if let Some(id) = crate::transport::peer_node_id(conn) {
            if self.inner.view.removed(id) {
                tracing::warn!(node_id = id, "refused a blob connection from a removed node");
                return false;
            }
        }
        self.inner.transport.admits(conn)
    }

    async fn handle_stream(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<()> {
        if self.inner.faults.refuse_peers.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = send.reset(1u32.into());
            return Err(ReplicationError::RefusingPeers);
        }
        let req: Request = read_frame(&mut recv).await.map_err(ReplicationError::answer)?;
        match req {
            Request::Have { digests } => {
                let mut have = Vec::with_capacity(digests.len());
                for d in &digests {
                    have.push(self.inner.store.stat(d).await?.is_some());
                }
                write_frame(&mut send, &Reply::Have(have)).await.map_err(ReplicationError::answer)?;
            }
            Request::Get { digest, start, len } => {
                bump(&self.inner.stats.requests_served, 1);
                let range = Some(BlobRange { start, end: len.map(|l| start + l.saturating_sub(1)) }).filter(|r| r.start > 0 || r.end.is_some());
                match self.inner.store.open_read(&digest, range).await {
                    Ok(None) => match self.relay_fetch(&digest) {
                        Some(fetch) => return self.serve_relay(send, fetch, range).await,
                        None => write_frame(&mut send, &GetReply::NotFound).await.map_err(ReplicationError::answer)?,
                    },
                    Err(BlobError::RangeInvalid { .. }) => write_frame(&mut send, &GetReply::RangeInvalid).await.map_err(ReplicationError::answer)?,
                    Err(e) => return Err(e.into()),
                    Ok(Some(r)) => {
                        write_frame(&mut send, &GetReply::Ok { size: r.size, start: r.start, len: r.len }).await.map_err(ReplicationError::answer)?;
                        // Mapped windows of the page cache, handed to quinn
                        // as they are: no read into a buffer, no copy into
                        // the stream (quinn keeps the `Bytes` until acked).
                        let file = r.file.into_inner().into_std().await;
                        let mut windows = std::pin::pin!(crate::store::mapped_stream(file, r.start, r.len));
                        let mut first = true;
                        while let Some(window) = windows.next().await {
                            let window = window.map_err(ReplicationError::answer)?;
                            for at in (0..window.len()).step_by(SERVE_CHUNK) {
                                let mut chunk = window.slice(at..(at + SERVE_CHUNK).min(window.len()));
                                if first && self.inner.faults.corrupt_served.load(std::sync::atomic::Ordering::Relaxed) {
                                    let mut bad = chunk.to_vec();
                                    bad[0] ^= 0xff;
                                    chunk = Bytes::from(bad);
                                }
                                first = false;
                                let n = chunk.len() as u64;
                                send.write_chunk(chunk).await.map_err(ReplicationError::answer)?;
                                bump(&self.inner.stats.bytes_served, n);
                                let delay = self.inner.faults.serve_delay_us.load(std::sync::atomic::Ordering::Relaxed);
                                if delay > 0 {
                                    tokio::time::sleep(std::time::Duration::from_micros(delay)).await;
                                }
                            }
                        }
                    }
                }
            }
            Request::Replicate { digest, size, from } => {
                let reply = if self.inner.store.stat(&digest).await?.is_some() {
                    match self.inner.view.record_holder(&digest, size).await {
                        Ok(()) => Reply::Replicated,
                        Err(e) => Reply::Failed(e.to_string()),
                    }
                } else {
                    match self.fetch(&digest, size, Some(from)).wait().await {
                        Ok(()) => Reply::Replicated,
                        Err(e) => Reply::Failed(e.to_string()),
                    }
                };
                write_frame(&mut send, &reply).await.map_err(ReplicationError::answer)?;
            }
            Request::Rtts => {
                let rtts = self.rtts().into_iter().map(|(id, d)| (id, d.as_micros() as u64)).collect();
                write_frame(&mut send, &Reply::Rtts(rtts)).await.map_err(ReplicationError::answer)?;
            }
            Request::Mirror { from } => return self.receive_mirror(send, recv, from).await,
            Request::Disk => {
                write_frame(&mut send, &Reply::Disk(self.local_disk().await)).await.map_err(ReplicationError::answer)?;
            }
            Request::Announce { .. } => {
                self.wake();
                write_frame(&mut send, &Reply::Ack).await.map_err(ReplicationError::answer)?;
            }
        }
        send.finish().map_err(ReplicationError::answer)?;
        // Let the peer read everything before the stream goes away.
        let _ = send.stopped().await;
        Ok(())
    }
}
