//! A registry client for tests (the gateway's, logged in as admin), and a
//! tap on what one node sends another.

#![allow(dead_code)]

pub use berth_gateway::testing::client::*;

/// A client of `node`'s registry, logged in as admin.
pub fn reg(node: &berth_node::runtime::RunningNode) -> Reg {
    Reg::at(format!("http://{}", node.http_addr), "admin", "admin-password")
}

/// A TCP proxy that keeps a copy of every byte its clients send, to see
/// what one node sends another.
pub struct Tap {
    pub addr: std::net::SocketAddr,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    target: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
}

impl Tap {
    pub async fn start() -> Tap {
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let target: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::new(Mutex::new(None));
        let (s, t) = (sent.clone(), target.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(to) = *t.lock().unwrap() else { continue };
                let s = s.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::TcpStream::connect(to).await else { return };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = tokio::io::split(server);
                    let up = async {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    s.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if sw.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Tap { addr, sent, target }
    }

    /// Where connections go from now on.
    pub fn point_at(&self, to: std::net::SocketAddr) {
        *self.target.lock().unwrap() = Some(to);
    }

    /// Everything clients sent so far, as text (binary bodies lossily).
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }
}
