//! The clients of a chaos run: concurrent pushes of unique tags, moves of a
//! few shared tags, tag reads (linearizable and local), pulls by digest and
//! tag deletes, through every node; and the tag lifecycle: pushes of images
//! labelled to expire in [`EXPIRES_AFTER`] (and reads of them after),
//! locks of a client's own tags (and pushes over them, which must be
//! refused), restores of its deleted tags. Each operation's call, result
//! and times go into a [`History`] for the checker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_common::Digest;
use rand::{Rng, SeedableRng};

use crate::cluster::PASSWORD;

pub const REPO: &str = "chaos/app";
/// Tags every client moves: the registers the linearizability check reads.
pub const SHARED_TAGS: usize = 3;
/// How long after its push an expiring image's tag is gone (its
/// `quay.expires-after` label).
pub const EXPIRES_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The server answered with an error: the write may still have happened
    /// (a 503 "outcome unknown" does not say it did not).
    Failed(String),
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// A manifest PUT under a tag no one else writes.
    Push { tag: String, digest: Digest },
    /// A manifest PUT under a shared tag.
    Move { tag: String, digest: Digest },
    /// A manifest GET by tag; `got` is the digest of what came back.
    Read { tag: String, linearizable: bool, got: Option<Digest> },
    /// Manifest and blobs by digest, bytes checked against the digests.
    Pull { digest: Digest, bytes_ok: bool },
    /// A tag DELETE.
    Delete { tag: String },
    /// A push under a tag of its own of an image labelled to expire
    /// [`EXPIRES_AFTER`] after the push.
    PushExpiring { tag: String, digest: Digest },
    /// A lock of a tag of its own (`PUT …/tag/{tag}` `{immutable: true}`),
    /// which points at `digest`.
    Lock { tag: String, digest: Digest },
    /// A push of another image over a locked tag: `refused` when the node
    /// answered 409 TAG_IMMUTABLE.
    Overwrite { tag: String, refused: bool },
    /// A restore of a tag of its own that it deleted, to `digest`.
    Restore { tag: String, digest: Digest },
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub node: usize,
    pub kind: Kind,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
}

impl Op {
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    pub fn is_write(&self) -> bool {
        matches!(self.kind, Kind::Push { .. } | Kind::Move { .. } | Kind::PushExpiring { .. })
    }
}

#[derive(Clone, Default)]
pub struct History {
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn record(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }
}

/// A running workload; [`Workload::stop`] ends it and returns the history.
pub struct Workload {
    stop: Arc<AtomicBool>,
    /// Which nodes clients may use now (a scenario takes a removed node out).
    targets: Arc<Mutex<Vec<(usize, String)>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
    pub history: History,
}

/// One image's bytes: a layer and a config unique to `(client, n)`, and its manifest.
pub struct Image {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Image {
    pub fn new(client: usize, n: u64, layer_size: usize) -> Image {
        let mut layer = format!("layer of client {client} image {n}\n").into_bytes();
        layer.resize(layer_size.max(layer.len()), b'x');
        let config = format!("{{\"client\":{client},\"n\":{n}}}").into_bytes();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::sha256_of(&layer).to_string(), "size": layer.len()}],
        }))
        .expect("encode manifest");
        Image { layer, config, manifest }
    }

    /// An image whose config labels it to expire [`EXPIRES_AFTER`] after its push.
    pub fn expiring(client: usize, n: u64, layer_size: usize) -> Image {
        let mut image = Image::new(client, n, layer_size);
        let label = format!("{}s", EXPIRES_AFTER.as_secs());
        image.config =
            serde_json::to_vec(&serde_json::json!({"client": client, "n": n, "config": {"Labels": {"quay.expires-after": label}}})).expect("encode config");
        let mut m: serde_json::Value = serde_json::from_slice(&image.manifest).expect("our own manifest");
        m["config"]["digest"] = Digest::sha256_of(&image.config).to_string().into();
        m["config"]["size"] = image.config.len().into();
        image.manifest = serde_json::to_vec(&m).expect("encode manifest");
        image
    }

    pub fn digest(&self) -> Digest {
        Digest::sha256_of(&self.manifest)
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Pushes `image` under `tag` through `base`: both blobs (monolithic), then the manifest.
pub async fn push(http: &reqwest::Client, base: &str, tag: &str, image: &Image) -> Result<(), String> {
    for blob in [&image.layer, &image.config] {
        let d = Digest::sha256_of(blob);
        let r = http
            .post(format!("{base}/v2/{REPO}/blobs/uploads/?digest={d}"))
            .basic_auth("admin", Some(PASSWORD))
            .body(blob.clone())
            .send()
            .await
            .map_err(|e| fail("blob upload", e))?;
        if r.status().as_u16() != 201 {
            return Err(format!("blob upload answered {}", r.status()));
        }
    }
    let r = http
        .put(format!("{base}/v2/{REPO}/manifests/{tag}"))
        .basic_auth("admin", Some(PASSWORD))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(image.manifest.clone())
        .send()
        .await
        .map_err(|e| fail("manifest put", e))?;
    if r.status().as_u16() != 201 {
        return Err(format!("manifest put answered {}", r.status()));
    }
    Ok(())
}

/// GETs a manifest by tag; the digest of the bytes that came back.
pub async fn read_tag(http: &reqwest::Client, base: &str, tag: &str, linearizable: bool) -> Result<Option<Digest>, String> {
    let mut req = http
        .get(format!("{base}/v2/{REPO}/manifests/{tag}"))
        .basic_auth("admin", Some(PASSWORD))
        .header("accept", "application/vnd.oci.image.manifest.v1+json");
    if linearizable {
        req = req.header("x-berth-consistency", "linearizable");
    }
    let r = req.send().await.map_err(|e| fail("manifest get", e))?;
    match r.status().as_u16() {
        200 => Ok(Some(Digest::sha256_of(&r.bytes().await.map_err(|e| fail("manifest body", e))?))),
        404 => Ok(None),
        s => Err(format!("manifest get answered {s}")),
    }
}

/// Pulls a manifest and its blobs by digest; Ok(false) when some bytes do
/// not match their digest.
pub async fn pull(http: &reqwest::Client, base: &str, digest: &Digest) -> Result<bool, String> {
    let get = |path: String| http.get(format!("{base}/v2/{REPO}/{path}")).basic_auth("admin", Some(PASSWORD)).send();
    let r = get(format!("manifests/{digest}")).await.map_err(|e| fail("manifest get", e))?;
    if r.status().as_u16() != 200 {
        return Err(format!("manifest get by digest answered {}", r.status()));
    }
    let body = r.bytes().await.map_err(|e| fail("manifest body", e))?;
    let mut ok = Digest::sha256_of(&body) == *digest;
    let m: serde_json::Value = serde_json::from_slice(&body).map_err(|e| fail("manifest json", e))?;
    let blobs = std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten());
    for b in blobs {
        let d = b["digest"].as_str().unwrap_or_default();
        let r = get(format!("blobs/{d}")).await.map_err(|e| fail("blob get", e))?;
        if r.status().as_u16() != 200 {
            return Err(format!("blob get answered {}", r.status()));
        }
        let bytes = r.bytes().await.map_err(|e| fail("blob body", e))?;
        ok &= Digest::sha256_of(&bytes).to_string() == d;
    }
    Ok(ok)
}

/// Locks `tag` through the admin API.
async fn lock_tag(http: &reqwest::Client, base: &str, tag: &str) -> Result<(), String> {
    let r = http
        .put(format!("{base}/api/v1/repository/{REPO}/tag/{tag}"))
        .basic_auth("admin", Some(PASSWORD))
        .json(&serde_json::json!({"immutable": true}))
        .send()
        .await
        .map_err(|e| fail("tag lock", e))?;
    match r.status().as_u16() {
        201 => Ok(()),
        s => Err(format!("tag lock answered {s}")),
    }
}

/// Restores `tag` to `digest` through the admin API.
async fn restore_tag(http: &reqwest::Client, base: &str, tag: &str, digest: &Digest) -> Result<(), String> {
    let r = http
        .post(format!("{base}/api/v1/repository/{REPO}/tag/{tag}/restore"))
        .basic_auth("admin", Some(PASSWORD))
        .json(&serde_json::json!({"manifest_digest": digest.to_string()}))
        .send()
        .await
        .map_err(|e| fail("tag restore", e))?;
    match r.status().as_u16() {
        200 => Ok(()),
        s => Err(format!("tag restore answered {s}")),
    }
}

/// Pushes `image` over a locked `tag`: Ok(true) when refused with 409
/// TAG_IMMUTABLE, Ok(false) when it went through (a violation).
async fn overwrite(http: &reqwest::Client, base: &str, tag: &str, image: &Image) -> Result<bool, String> {
    match push(http, base, tag, image).await {
        Ok(()) => Ok(false),
        Err(e) if e == "manifest put answered 409 Conflict" => Ok(true),
        Err(e) => Err(e),
    }
}

async fn delete_tag(http: &reqwest::Client, base: &str, tag: &str) -> Result<(), String> {
    let r = http.delete(format!("{base}/v2/{REPO}/manifests/{tag}")).basic_auth("admin", Some(PASSWORD)).send().await.map_err(|e| fail("tag delete", e))?;
    match r.status().as_u16() {
        202 => Ok(()),
        s => Err(format!("tag delete answered {s}")),
    }
}

impl Workload {
    /// Starts `clients` clients over `targets` (node index, base URL).
    pub fn start(clients: usize, targets: Vec<(usize, String)>, seed: u64, layer_size: usize) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(targets));
        let history = History::default();
        let handles = (0..clients)
            .map(|c| {
                let (stop, targets, history) = (stop.clone(), targets.clone(), history.clone());
                tokio::spawn(client(c, seed, layer_size, stop, targets, history))
            })
            .collect();
        Workload { stop, targets, clients: handles, history }
    }

    pub fn set_targets(&self, targets: Vec<(usize, String)>) {
        *self.targets.lock().expect("targets lock") = targets;
    }

    pub async fn stop(self) -> Vec<Op> {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            // A client that panicked is a bug in the harness: say so, loudly.
            c.await.expect("a workload client panicked");
        }
        self.history.ops()
    }
}

async fn client(c: usize, seed: u64, layer_size: usize, stop: Arc<AtomicBool>, targets: Arc<Mutex<Vec<(usize, String)>>>, history: History) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("http client");
    let mut n = 0u64;
    let mut mine: Vec<(String, Digest)> = Vec::new();
    // Tags this client locked, deleted (to restore), pushed to expire.
    let mut locked: Vec<(String, Digest)> = Vec::new();
    let mut deleted: Vec<(String, Digest)> = Vec::new();
    let mut expiring: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // Clients live in regions: each mostly uses its home node (as a
        // client behind a regional load balancer would), sometimes another.
        let (node, base) = {
            let t = targets.lock().expect("targets lock");
            let home = c % t.len();
            t[if rng.random_bool(0.75) { home } else { rng.random_range(0..t.len()) }].clone()
        };
        let roll: u32 = rng.random_range(0..100);
        let start = Instant::now();
        let (kind, outcome) = if roll < 35 || mine.is_empty() {
            n += 1;
            let image = Image::new(c, n, layer_size);
            let tag = format!("c{c}-{n}");
            let r = push(&http, &base, &tag, &image).await;
            if r.is_ok() {
                mine.push((tag.clone(), image.digest()));
            }
            (Kind::Push { tag, digest: image.digest() }, r)
        } else if roll < 53 {
            n += 1;
            let image = Image::new(c, n, layer_size);
            let tag = format!("shared-{}", rng.random_range(0..SHARED_TAGS));
            let r = push(&http, &base, &tag, &image).await;
            (Kind::Move { tag, digest: image.digest() }, r)
        } else if roll < 73 {
            let tag = format!("shared-{}", rng.random_range(0..SHARED_TAGS));
            let linearizable = rng.random_bool(0.5);
            match read_tag(&http, &base, &tag, linearizable).await {
                Ok(got) => (Kind::Read { tag, linearizable, got }, Ok(())),
                Err(e) => (Kind::Read { tag, linearizable, got: None }, Err(e)),
            }
        } else if roll < 86 {
            let (_, digest) = mine[rng.random_range(0..mine.len())].clone();
            match pull(&http, &base, &digest).await {
                Ok(bytes_ok) => (Kind::Pull { digest, bytes_ok }, Ok(())),
                Err(e) => (Kind::Pull { digest, bytes_ok: true }, Err(e)),
            }
        } else if roll < 89 {
            n += 1;
            let image = Image::expiring(c, n, layer_size);
            let tag = format!("c{c}-exp-{n}");
            let r = push(&http, &base, &tag, &image).await;
            expiring.push(tag.clone());
            (Kind::PushExpiring { tag, digest: image.digest() }, r)
        } else if roll < 91 && !expiring.is_empty() {
            // A read of an expiring tag, before or after its moment.
            let tag = expiring[rng.random_range(0..expiring.len())].clone();
            match read_tag(&http, &base, &tag, false).await {
                Ok(got) => (Kind::Read { tag, linearizable: false, got }, Ok(())),
                Err(e) => (Kind::Read { tag, linearizable: false, got: None }, Err(e)),
            }
        } else if roll < 93 {
            let (tag, digest) = mine.swap_remove(rng.random_range(0..mine.len()));
            let r = lock_tag(&http, &base, &tag).await;
            if r.is_ok() {
                locked.push((tag.clone(), digest.clone()));
            }
            // Not locked for sure: neither mine (it may be) nor locked.
            (Kind::Lock { tag, digest }, r)
        } else if roll < 95 && !locked.is_empty() {
            n += 1;
            let image = Image::new(c, n, layer_size);
            let (tag, _) = locked[rng.random_range(0..locked.len())].clone();
            match overwrite(&http, &base, &tag, &image).await {
                Ok(refused) => (Kind::Overwrite { tag, refused }, Ok(())),
                Err(e) => (Kind::Overwrite { tag, refused: false }, Err(e)),
            }
        } else if roll < 96 && !deleted.is_empty() {
            let (tag, digest) = deleted.swap_remove(rng.random_range(0..deleted.len()));
            let r = restore_tag(&http, &base, &tag, &digest).await;
            if r.is_ok() {
                mine.push((tag.clone(), digest.clone()));
            }
            (Kind::Restore { tag, digest }, r)
        } else {
            let (tag, digest) = mine.swap_remove(rng.random_range(0..mine.len()));
            let r = delete_tag(&http, &base, &tag).await;
            if r.is_ok() {
                deleted.push((tag.clone(), digest));
            }
            (Kind::Delete { tag }, r)
        };
        let outcome = match outcome {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Failed(e),
        };
        let failed = outcome != Outcome::Ok;
        history.record(Op { client: c, node, kind, start, end: Instant::now(), outcome });
        if failed {
            // A refused client backs off a little, as real ones do.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
