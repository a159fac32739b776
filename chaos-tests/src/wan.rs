//! A WAN in userspace (this kernel has no netem): one proxy in front of
//! each node's peer port, on one port for both TCP (Raft) and UDP (QUIC).
//! Nodes advertise their proxy's address, so every byte between two nodes
//! crosses an emulated link.
//!
//! A [`Wan`] knows which host each source address belongs to and what each
//! directed link `a → b` is like: one-way delay, jitter, a bandwidth limit,
//! UDP loss, or cut. Nodes send from their own peer address (Raft calls
//! bind to it, QUIC sends from its listening socket), which is how a proxy
//! tells the links apart. Links change while traffic flows: that is how the
//! chaos scenarios cut regions off and flap links.
//!
//! UDP datagrams are delayed, paced, dropped one by one, so QUIC sees the
//! real round trip, rate and loss, and its own congestion control reacts.
//!
//! TCP cannot be delayed per packet from userspace: the proxy terminates the
//! connection. To keep it honest, the bytes in flight are capped at
//! `tcp_window`, and a chunk's credit comes back when its ack would (one
//! way after delivery), so a stream tops out at `tcp_window / rtt` as the
//! kernel's does with that window over that RTT. A cut holds TCP bytes
//! until the link heals (as retransmissions would deliver them) and drops
//! datagrams. Loss applies to UDP only; for TCP it would show up as
//! retransmission delay, which the delay and jitter already cover.
//!
//! Only loopback is ever addressed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// What one direction of a link is like.
#[derive(Debug, Clone, Copy)]
pub struct LinkSpec {
    /// Added to each direction: the round trip grows by twice this.
    pub one_way_delay: Duration,
    /// Each chunk or datagram gets up to this much more delay, at random
    /// (order is kept, as most WAN paths keep it).
    pub jitter: Duration,
    /// Bytes per second the link carries; `None` is unlimited.
    pub rate: Option<u64>,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Bytes a TCP stream may have in flight across the link.
    pub tcp_window: usize,
}

impl LinkSpec {
    pub fn rtt(rtt: Duration) -> LinkSpec {
        LinkSpec { one_way_delay: rtt / 2, jitter: Duration::ZERO, rate: None, loss: 0.0, tcp_window: kernel_tcp_window() }
    }

    pub fn with_rate(self, bytes_per_sec: u64) -> LinkSpec {
        LinkSpec { rate: Some(bytes_per_sec), ..self }
    }

    pub fn with_jitter(self, jitter: Duration) -> LinkSpec {
        LinkSpec { jitter, ..self }
    }

    pub fn with_loss(self, loss: f64) -> LinkSpec {
        LinkSpec { loss, ..self }
    }
}

/// The kernel's largest TCP receive window (`tcp_rmem` max): what a real TCP
/// stream could use over the link.
pub fn kernel_tcp_window() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").ok().and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok())).unwrap_or(6 << 20)
}

/// How long a datagram may wait for a rate-limited link before it is
/// dropped, like the queue limit of a `tbf` qdisc.
const UDP_QUEUE_LIMIT: Duration = Duration::from_millis(50);

/// Which host sent a packet; `None` for an address the WAN does not know
/// (links to and from it follow the default spec, with their own pacing).
pub type Host = Option<usize>;

struct Link {
    spec: LinkSpec,
    cut: bool,
    /// When the link finishes sending what is queued on it (pacing).
    busy_until: Instant,
}

struct WanState {
    hosts: HashMap<IpAddr, usize>,
    /// A host's own uplink (its NIC), shared by all its links: bytes per
    /// second, and when it finishes sending what is queued.
    egress: HashMap<usize, (u64, Instant)>,
    default: LinkSpec,
    links: HashMap<(Host, Host), Link>,
    rng: u64,
}

impl WanState {
    fn link(&mut self, from: Host, to: Host) -> &mut Link {
        let default = self.default;
        self.links.entry((from, to)).or_insert_with(|| Link { spec: default, cut: false, busy_until: Instant::now() })
    }

    /// A xorshift step: the proxies need cheap randomness, not good randomness.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happens to a chunk or datagram sent now.
enum Fate {
    /// Hand it over at this instant.
    Deliver(Instant),
    Drop,
    /// The link is cut (TCP holds and retries).
    Cut,
}

/// The emulated network. Cheap to clone; all clones share the links.
#[derive(Clone)]
pub struct Wan {
    state: Arc<Mutex<WanState>>,
}

impl Wan {
    /// A network where every link is `default` until told otherwise.
    pub fn new(default: LinkSpec) -> Wan {
        let rng = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
        Wan { state: Arc::new(Mutex::new(WanState { hosts: HashMap::new(), egress: HashMap::new(), default, links: HashMap::new(), rng })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WanState> {
        self.state.lock().expect("wan lock")
    }

    /// Packets from `ip` come from host `host`.
    pub fn add_host(&self, host: usize, ip: IpAddr) {
        self.lock().hosts.insert(ip, host);
    }

    fn host_of(&self, ip: IpAddr) -> Host {
        self.lock().hosts.get(&ip).copied()
    }

    /// Sets the link `from → to` (one direction).
    pub fn set_link(&self, from: usize, to: usize, spec: LinkSpec) {
        self.lock().link(Some(from), Some(to)).spec = spec;
    }

    /// Sets both directions between `a` and `b`.
    pub fn set_path(&self, a: usize, b: usize, spec: LinkSpec) {
        self.set_link(a, b, spec);
        self.set_link(b, a, spec);
    }

    /// Caps everything `host` sends, over all its links, at `bytes_per_sec`:
    /// a node's one uplink, which a fan-out to many peers shares.
    pub fn set_egress(&self, host: usize, bytes_per_sec: u64) {
        self.lock().egress.insert(host, (bytes_per_sec, Instant::now()));
    }

    /// Cuts `from → to` only.
    pub fn cut(&self, from: usize, to: usize) {
        self.lock().link(Some(from), Some(to)).cut = true;
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let mut st = self.lock();
        for &x in a {
            for &y in b {
                st.link(Some(x), Some(y)).cut = true;
                st.link(Some(y), Some(x)).cut = true;
            }
        }
    }

    /// Restores every cut link (delays and rates stay).
    pub fn heal(&self) {
        for l in self.lock().links.values_mut() {
            l.cut = false;
        }
    }

    fn fate(&self, from: Host, to: Host, bytes: usize, datagram: bool) -> (Fate, Duration) {
        let mut st = self.lock();
        let jitter_draw = st.random();
        let loss_draw = st.random();
        let link = st.link(from, to);
        let spec = link.spec;
        if link.cut {
            return (Fate::Cut, spec.one_way_delay);
        }
        if datagram && spec.loss > 0.0 && loss_draw < spec.loss {
            return (Fate::Drop, spec.one_way_delay);
        }
        let now = Instant::now();
        let link_busy = link.busy_until;
        let egress = from.and_then(|h| st.egress.get(&h).copied());
        let start = [Some(now), spec.rate.map(|_| link_busy), egress.map(|(_, busy)| busy)].into_iter().flatten().max().unwrap_or(now);
        if datagram && start - now > UDP_QUEUE_LIMIT {
            return (Fate::Drop, spec.one_way_delay);
        }
        let on_wire = |rate: u64| start + Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
        let mut sent = start;
        if let Some(rate) = spec.rate {
            sent = sent.max(on_wire(rate));
            st.link(from, to).busy_until = on_wire(rate);
        }
        if let (Some(host), Some((rate, _))) = (from, egress) {
            sent = sent.max(on_wire(rate));
            st.egress.insert(host, (rate, on_wire(rate)));
        }
        (Fate::Deliver(sent + spec.one_way_delay + spec.jitter.mul_f64(jitter_draw)), spec.one_way_delay)
    }

    /// A proxy for host `to`: listens on `listen` (TCP and UDP, same port)
    /// and forwards to `target` through the links into `to`.
    pub async fn proxy(&self, listen: SocketAddr, target: SocketAddr, to: usize) -> std::io::Result<WanProxy> {
        let tcp = TcpListener::bind(listen).await?;
        let addr = tcp.local_addr()?;
        let udp = Arc::new(udp_socket(addr)?);
        let children: Children = Arc::default();
        let tasks = vec![tokio::spawn(tcp_loop(self.clone(), tcp, target, to)), tokio::spawn(udp_loop(self.clone(), udp, target, to, children.clone()))];
        Ok(WanProxy { addr, tasks, children })
    }
}

/// A running proxy; stops when dropped.
pub struct WanProxy {
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    children: Children,
}

/// Tasks a proxy spawned per client, stopped with it.
type Children = Arc<Mutex<Vec<tokio::task::AbortHandle>>>;

impl WanProxy {
    /// A proxy on its own network where every link is `spec`: for a bench
    /// or test that needs one emulated link and no faults.
    pub async fn start(listen: SocketAddr, target: SocketAddr, spec: LinkSpec) -> std::io::Result<WanProxy> {
        Wan::new(spec).proxy(listen, target, 0).await
    }
}

impl Drop for WanProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.children.lock().expect("proxy tasks lock").iter() {
            t.abort();
        }
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

/// A FIFO of datagrams, each handed on at its own instant.
fn datagram_line(mut deliver: impl FnMut(Vec<u8>) + Send + 'static) -> mpsc::UnboundedSender<(Instant, Vec<u8>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, pkt)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            deliver(pkt);
        }
    });
    tx
}

/// Queues a datagram on `line` according to the link's fate.
fn send_datagram(wan: &Wan, from: Host, to: Host, line: &mpsc::UnboundedSender<(Instant, Vec<u8>)>, pkt: &[u8]) -> bool {
    match wan.fate(from, to, pkt.len(), true).0 {
        Fate::Deliver(at) => line.send((at, pkt.to_vec())).is_ok(),
        Fate::Drop | Fate::Cut => true,
    }
}

async fn udp_loop(wan: Wan, front: Arc<UdpSocket>, target: SocketAddr, me: usize, children: Children) {
    // One upstream socket per client, so replies find their way back.
    let mut upstreams: HashMap<SocketAddr, mpsc::UnboundedSender<(Instant, Vec<u8>)>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else { return };
        let from = wan.host_of(client.ip());
        if !upstreams.contains_key(&client) {
            let Ok(up) = udp_socket("127.0.0.1:0".parse().expect("a literal address")) else { continue };
            if up.connect(target).await.is_err() {
                continue;
            }
            let up = Arc::new(up);
            let send_up = up.clone();
            // Sends are best effort, as on a real link: a full socket buffer drops.
            let line = datagram_line(move |pkt| {
                let _ = send_up.try_send(&pkt);
            });
            let back = front.clone();
            let to_client = datagram_line(move |pkt| {
                let _ = back.try_send_to(&pkt, client);
            });
            let wan_back = wan.clone();
            let replies = tokio::spawn(async move {
                let mut b = vec![0u8; 65536];
                loop {
                    // A connected UDP socket reports an ICMP "port unreachable"
                    // (the node is down) as an error: the node may come back.
                    let n = match up.recv(&mut b).await {
                        Ok(n) => n,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    // Replies travel the reverse link, me → client.
                    if !send_datagram(&wan_back, Some(me), from, &to_client, &b[..n]) {
                        return;
                    }
                }
            });
            children.lock().expect("proxy tasks lock").push(replies.abort_handle());
            upstreams.insert(client, line);
        }
        let line = &upstreams[&client];
        send_datagram(&wan, from, Some(me), line, &buf[..n]);
    }
}

async fn tcp_loop(wan: Wan, listener: TcpListener, target: SocketAddr, me: usize) {
    while let Ok((client, peer)) = listener.accept().await {
        let wan = wan.clone();
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(target).await else { return };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let from = wan.host_of(peer.ip());
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::spawn(pump(wan.clone(), cr, uw, from, Some(me)));
            tokio::spawn(pump(wan, ur, cw, Some(me), from));
        });
    }
}

/// Copies one direction of a TCP connection over the link `from → to`, with
/// at most `tcp_window` bytes in flight.
async fn pump(wan: Wan, mut src: tokio::net::tcp::OwnedReadHalf, mut dst: tokio::net::tcp::OwnedWriteHalf, from: Host, to: Host) {
    let window_size = wan.lock().default.tcp_window;
    let window = Arc::new(Semaphore::new(window_size));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if dst.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = dst.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Ok(permit) = window.clone().acquire_many_owned(n.min(window_size) as u32).await else { break };
        let (at, one_way) = loop {
            let (fate, one_way) = wan.fate(from, to, n, false);
            match fate {
                Fate::Deliver(at) => break (at, one_way),
                // A cut link holds the bytes until it heals, as TCP retransmission would.
                Fate::Cut | Fate::Drop => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
        // The window opens again when the receiver's ack would be back.
        tokio::spawn(async move {
            tokio::time::sleep_until(at + one_way).await;
            drop(permit);
        });
    }
    drop(tx);
    let _ = writer.await;
}
