//! A webhook receiver for notification tests: every request it takes is
//! kept (path, headers, body), `/flaky` fails until a set moment and
//! `/fail` while asked to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

/// What a receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub at: Instant,
    pub path: String,
    pub content_type: String,
    pub signature: String,
    pub event_id: String,
    pub body: Vec<u8>,
    pub json: Value,
}

#[derive(Clone, Default)]
pub struct Inbox {
    pub got: Arc<Mutex<Vec<Got>>>,
    /// `/flaky` answers 500 until then.
    pub flaky_until: Arc<Mutex<Option<Instant>>>,
    /// `/fail` answers 500 while set.
    pub failing: Arc<AtomicBool>,
}

impl Inbox {
    /// Every body taken so far, as JSON (`null` when not JSON).
    pub fn jsons(&self) -> Vec<Value> {
        self.got.lock().unwrap().iter().map(|g| g.json.clone()).collect()
    }

    pub fn at(&self, path: &str) -> Vec<Got> {
        self.got.lock().unwrap().iter().filter(|g| g.path == path).cloned().collect()
    }
}

async fn take(State(inbox): State<Inbox>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let path = uri.path().to_string();
    if path == "/flaky" && inbox.flaky_until.lock().unwrap().is_some_and(|t| Instant::now() < t) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if path == "/fail" && inbox.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let got = Got {
        at: Instant::now(),
        path,
        content_type: h("content-type"),
        signature: h("x-berth-signature"),
        event_id: h("x-berth-event-id"),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body: body.to_vec(),
    };
    inbox.got.lock().unwrap().push(got);
    StatusCode::OK
}

pub async fn start_receiver() -> (Inbox, SocketAddr) {
    let inbox = Inbox::default();
    let app = axum::Router::new().fallback(take).with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (inbox, addr)
}

/// [`start_receiver`] for a test without a runtime: served by a runtime
/// of its own on a thread, for the life of the process.
pub fn start_receiver_thread() -> (Inbox, SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            tx.send(start_receiver().await).unwrap();
            std::future::pending::<()>().await
        })
    });
    rx.recv().unwrap()
}
