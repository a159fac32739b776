//! Answering peers: every incoming connection is mutual TLS (the transport
//! refuses a peer without a certificate from the cluster CA), every stream
//! one request.
//!
//! A peer this node may not hear (a cut link, a drill's island) gets its
//! connection closed with [`CUT`], at the handshake or at its next request:
//! a partitioned node neither fetches from nor serves the other side.

use crate::protocol::{read_frame, write_frame, GetReply, Reply, Request};
use crate::{bump, BlobError, BlobRange, Replicator};

const SERVE_CHUNK: usize = 256 << 10;

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

    fn admits(&self, conn: &quinn::Connection) -> bool {
        self.inner.transport.admits(conn)
    }

    async fn handle_stream(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<(), String> {
        if self.inner.faults.refuse_peers.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = send.reset(1u32.into());
            return Err("refusing peers (fault injected)".into());
        }
        let req: Request = read_frame(&mut recv).await.map_err(|e| e.to_string())?;
        match req {
            Request::Have { digests } => {
                let mut have = Vec::with_capacity(digests.len());
                for d in &digests {
                    have.push(self.inner.store.stat(d).await.map_err(|e| e.to_string())?.is_some());
                }
                write_frame(&mut send, &Reply::Have(have)).await.map_err(|e| e.to_string())?;
            }
            Request::Get { digest, start, len } => {
                bump(&self.inner.stats.requests_served, 1);
                let range = Some(BlobRange { start, end: len.map(|l| start + l.saturating_sub(1)) }).filter(|r| r.start > 0 || r.end.is_some());
                match self.inner.store.open_read(&digest, range).await {
                    Ok(None) => write_frame(&mut send, &GetReply::NotFound).await.map_err(|e| e.to_string())?,
                    Err(BlobError::RangeInvalid { .. }) => write_frame(&mut send, &GetReply::RangeInvalid).await.map_err(|e| e.to_string())?,
                    Err(e) => return Err(e.to_string()),
                    Ok(Some(mut r)) => {
                        write_frame(&mut send, &GetReply::Ok { size: r.size, start: r.start, len: r.len }).await.map_err(|e| e.to_string())?;
                        let mut buf = vec![0u8; SERVE_CHUNK];
                        let mut first = true;
                        loop {
                            let n = tokio::io::AsyncReadExt::read(&mut r.file, &mut buf).await.map_err(|e| e.to_string())?;
                            if n == 0 {
                                break;
                            }
                            if first && self.inner.faults.corrupt_served.load(std::sync::atomic::Ordering::Relaxed) {
                                buf[0] ^= 0xff;
                            }
                            first = false;
                            send.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
                            bump(&self.inner.stats.bytes_served, n as u64);
                            let delay = self.inner.faults.serve_delay_us.load(std::sync::atomic::Ordering::Relaxed);
                            if delay > 0 {
                                tokio::time::sleep(std::time::Duration::from_micros(delay)).await;
                            }
                        }
                    }
                }
            }
            Request::Replicate { digest, size, from } => {
                let reply = if self.inner.store.stat(&digest).await.map_err(|e| e.to_string())?.is_some() {
                    match self.inner.view.record_holder(&digest, size).await {
                        Ok(()) => Reply::Replicated,
                        Err(e) => Reply::Failed(e),
                    }
                } else {
                    match self.fetch(&digest, size, Some(from)).wait().await {
                        Ok(()) => Reply::Replicated,
                        Err(e) => Reply::Failed(e),
                    }
                };
                write_frame(&mut send, &reply).await.map_err(|e| e.to_string())?;
            }
            Request::Rtts => {
                let rtts = self.rtts().into_iter().map(|(id, d)| (id, d.as_micros() as u64)).collect();
                write_frame(&mut send, &Reply::Rtts(rtts)).await.map_err(|e| e.to_string())?;
            }
            Request::Announce { .. } => {
                self.wake();
                write_frame(&mut send, &Reply::Ack).await.map_err(|e| e.to_string())?;
            }
        }
        send.finish().map_err(|e| e.to_string())?;
        // Let the peer read everything before the stream goes away.
        let _ = send.stopped().await;
        Ok(())
    }
}
