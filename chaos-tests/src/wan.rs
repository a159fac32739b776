//! A WAN link in userspace: one proxy per node, on one port for both TCP
//! and UDP, forwarding to the node with a one-way delay each direction.
//!
//! UDP (QUIC) datagrams are delayed one by one, both ways, so QUIC sees the
//! real round trip and its own flow and congestion control do the rest.
//!
//! TCP cannot be delayed per packet from userspace: the proxy terminates the
//! connection. To keep TCP honest, the bytes in flight through the proxy
//! are capped at `tcp_window` and a chunk's credit comes back only a full
//! round trip after it was read, as a TCP window would on a real link; so a
//! TCP stream through it tops out at `tcp_window / rtt`, like the kernel's
//! does with that window over that RTT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct LinkSpec {
    /// Added to each direction: the round trip grows by twice this.
    pub one_way_delay: Duration,
    /// Bytes a TCP stream may have in flight across the link.
    pub tcp_window: usize,
}

impl LinkSpec {
    pub fn rtt(rtt: Duration) -> LinkSpec {
        LinkSpec { one_way_delay: rtt / 2, tcp_window: kernel_tcp_window() }
    }
}

/// The kernel's largest TCP receive window (`tcp_rmem` max): what a real TCP
/// stream could use over the link.
pub fn kernel_tcp_window() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").ok().and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok())).unwrap_or(6 << 20)
}

/// A running proxy; stops when dropped.
pub struct WanProxy {
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for WanProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A FIFO that hands each item on `delay` after it was queued.
struct DelayLine<T> {
    tx: mpsc::UnboundedSender<(Instant, T)>,
    delay: Duration,
}

impl<T: Send + 'static> DelayLine<T> {
    fn new(delay: Duration, mut deliver: impl FnMut(T) + Send + 'static) -> DelayLine<T> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, T)>();
        tokio::spawn(async move {
            while let Some((at, item)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                deliver(item);
            }
        });
        DelayLine { tx, delay }
    }

    fn send(&self, item: T) -> bool {
        self.tx.send((Instant::now() + self.delay, item)).is_ok()
    }
}

impl<T> Clone for DelayLine<T> {
    fn clone(&self) -> Self {
        DelayLine { tx: self.tx.clone(), delay: self.delay }
    }
}

impl WanProxy {
    /// Listens on `listen` (TCP and UDP, same port) and forwards to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr, spec: LinkSpec) -> std::io::Result<WanProxy> {
        let tcp = TcpListener::bind(listen).await?;
        let addr = tcp.local_addr()?;
        let udp = Arc::new(udp_socket(addr)?);
        let tasks = vec![tokio::spawn(tcp_loop(tcp, target, spec)), tokio::spawn(udp_loop(udp, target, spec))];
        Ok(WanProxy { addr, tasks })
    }
}

/// A UDP socket with buffers as large as the kernel allows (up to 4 MiB),
/// so bursts queue in the emulated link rather than drop at the proxy.
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&std);
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    std.set_nonblocking(true)?;
    UdpSocket::from_std(std)
}

async fn udp_loop(front: Arc<UdpSocket>, target: SocketAddr, spec: LinkSpec) {
    // One upstream socket per client, so replies find their way back.
    let upstreams: Arc<Mutex<HashMap<SocketAddr, DelayLine<Vec<u8>>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else { return };
        let mut map = upstreams.lock().await;
        let to_target = match map.get(&client) {
            Some(tx) => tx.clone(),
            None => {
                let Ok(up) = udp_socket("127.0.0.1:0".parse().expect("a literal address")) else { continue };
                if up.connect(target).await.is_err() {
                    continue;
                }
                let up = Arc::new(up);
                let send_up = up.clone();
                // Sends are best effort, as on a real link: a full socket buffer drops.
                let tx = DelayLine::new(spec.one_way_delay, move |pkt: Vec<u8>| {
                    let _ = send_up.try_send(&pkt);
                });
                let back = front.clone();
                let to_client = DelayLine::new(spec.one_way_delay, move |pkt: Vec<u8>| {
                    let _ = back.try_send_to(&pkt, client);
                });
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = up.recv(&mut b).await {
                        if !to_client.send(b[..n].to_vec()) {
                            return;
                        }
                    }
                });
                map.insert(client, tx.clone());
                tx
            }
        };
        drop(map);
        let _ = to_target.send(buf[..n].to_vec());
    }
}

async fn tcp_loop(listener: TcpListener, target: SocketAddr, spec: LinkSpec) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(target).await else { return };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::spawn(pump(cr, uw, spec));
            tokio::spawn(pump(ur, cw, spec));
        });
    }
}

/// Copies one direction through a delay line, with at most `tcp_window`
/// bytes in flight, each credited back a round trip after it was read.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, spec: LinkSpec) {
    let window = Arc::new(Semaphore::new(spec.tcp_window));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Ok(permit) = window.clone().acquire_many_owned(n.min(spec.tcp_window) as u32).await else { break };
        let now = Instant::now();
        let _ = tx.send((now + spec.one_way_delay, buf[..n].to_vec()));
        // The window opens again when the receiver's ack would be back.
        let rtt = spec.one_way_delay * 2;
        tokio::spawn(async move {
            tokio::time::sleep_until(now + rtt).await;
            drop(permit);
        });
    }
    drop(tx);
    let _ = writer.await;
}
