//! Durable pushes on real processes: a push is acknowledged only once two
//! nodes hold verified copies of every blob, the second copy streamed to
//! its node while the client uploads (see `replication/src/pipeline.rs`),
//! and a second holder that dies mid-upload costs the client nothing.
//!
//! "At the moment of the ack" is taken literally: each client talks to a
//! node through a proxy that, when the node answers a manifest PUT with
//! 201, reads every node's disk before it passes the answer on.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use berth_common::Digest;
use common::daemons::*;
use common::procs::*;
use sha2::Digest as _;

/// Which nodes hold a verified copy of `digest`, by their data directories.
fn verified_on(dirs: &[PathBuf], digest: &Digest) -> Vec<usize> {
    let hex = digest.hex();
    (0..dirs.len())
        .filter(|i| {
            let path = dirs[*i].join("blobs/sha256").join(&hex[..2]).join(hex);
            std::fs::read(path).is_ok_and(|bytes| hex::encode(sha2::Sha256::digest(&bytes)) == hex)
        })
        .map(|i| i + 1)
        .collect()
}

/// Every blob a manifest names.
fn blobs_of(manifest: &[u8]) -> Vec<Digest> {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().parse().unwrap()];
    out.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().parse().unwrap()));
    out
}

/// What the proxies saw at each acknowledged manifest PUT: the blob and the
/// nodes that held a verified copy of it then.
type Acks = Arc<Mutex<Vec<(Digest, Vec<usize>)>>>;

#[derive(Clone)]
struct Tap {
    target: String,
    dirs: Arc<Vec<PathBuf>>,
    acks: Acks,
    http: reqwest::Client,
}

/// Passes a request on to the node; for a manifest PUT answered 201, looks
/// at the disks first.
async fn forward(State(tap): State<Tap>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let url = format!("http://{}{}", tap.target, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let manifest_put = parts.method == axum::http::Method::PUT && parts.uri.path().contains("/manifests/");
    let mut out = tap.http.request(parts.method.clone(), url);
    for (name, value) in parts.headers.iter().filter(|(n, _)| *n != axum::http::header::HOST) {
        out = out.header(name, value);
    }
    let (out, manifest) = if manifest_put {
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (out.body(bytes.clone()), Some(bytes))
    } else {
        (out.body(reqwest::Body::wrap_stream(body.into_data_stream())), None)
    };
    let resp = out.send().await.unwrap();
    if let (Some(bytes), 201) = (manifest, resp.status().as_u16()) {
        let (dirs, acks) = (tap.dirs.clone(), tap.acks.clone());
        tokio::task::spawn_blocking(move || {
            for d in blobs_of(&bytes) {
                let on = verified_on(&dirs, &d);
                acks.lock().unwrap().push((d, on));
            }
        })
        .await
        .unwrap();
    }
    let mut back = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        back = back.header(name, value);
    }
    back.body(Body::from_stream(resp.bytes_stream())).unwrap()
}

/// A proxy in front of node `target`; returns its address.
async fn tap(target: &str, dirs: &[PathBuf], acks: &Acks) -> SocketAddr {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let tap = Tap { target: target.to_string(), dirs: Arc::new(dirs.to_vec()), acks: acks.clone(), http };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(forward).with_state(tap);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A root filesystem tarball of `mib` MiB of incompressible bytes.
fn rootfs_tar(dir: &Path, name: &str, mib: usize) -> PathBuf {
    let src = dir.join(format!("rootfs-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    let mut bytes = Vec::with_capacity(mib << 20);
    let mut x = name.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    while bytes.len() < mib << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(src.join("data.bin"), bytes).unwrap();
    let tar = dir.join(format!("rootfs-{name}.tar"));
    run(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tar).arg("."));
    tar
}

/// The pipelined copies a node's `/metrics` counts, by outcome.
fn pipelined(http: &str, outcome: &str) -> u64 {
    let text = run(Command::new("curl").args(["-sS", &format!("http://{http}/metrics")]));
    let key = format!("berth_pipelined_copies_total{{outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).map(|v| v.trim().parse().unwrap()).unwrap_or(0)
}

#[test]
fn docker_and_skopeo_pushes_through_each_node_are_acknowledged_on_two_verified_copies() {
    berth_node::install_crypto_provider();
    let c = ProcCluster::start(3);
    let pw = c.password.clone();
    let work = c.root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // Copies only where pushed and where min_copies asks: what the disks
    // hold at the ack is what the push made.
    ok(&["placement", "set", "durable", "--on-demand", "--data-dir", c.dirs[0].to_str().unwrap()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acks: Acks = Arc::default();
    let taps: Vec<String> = c.http.iter().map(|h| rt.block_on(tap(h, &c.dirs, &acks)).to_string()).collect();

    let (_dockerd, docker_host) = start_dockerd(c.root.path());
    let docker_config = work.join("docker-config");
    let docker = || docker_in(&docker_host, &docker_config);
    let creds = format!("admin:{pw}");
    for (i, via) in taps.iter().enumerate() {
        let node = i + 1;
        // docker: a 24 MiB layer, pushed through this node.
        let out = docker_login(docker(), via, "admin", &pw);
        assert!(out.status.success(), "docker login: {}", String::from_utf8_lossy(&out.stderr));
        let image = format!("{via}/durable/docker-{node}:v1");
        run(docker().arg("import").arg(rootfs_tar(&work, &format!("docker-{node}"), 24)).arg(&image));
        run(docker().args(["push", &image]));
        // skopeo: another image, copied from the docker daemon.
        let src = format!("local/skopeo-{node}:v1");
        run(docker().arg("import").arg(rootfs_tar(&work, &format!("skopeo-{node}"), 24)).arg(&src));
        run(Command::new("skopeo")
            .args(["copy", "--src-daemon-host", &docker_host, "--dest-tls-verify=false", "--dest-creds", &creds])
            .arg(format!("docker-daemon:{src}"))
            .arg(format!("docker://{via}/durable/skopeo-{node}:v1")));
    }

    let acks = acks.lock().unwrap().clone();
    assert_eq!(acks.len(), 12, "two blobs (config and layer) in each of six acknowledged pushes: {acks:?}");
    for (digest, on) in &acks {
        assert!(on.len() >= 2, "{digest} was on {on:?} only when its push was acknowledged");
    }
    // Each layer's second copy was streamed while it was uploaded, not
    // fetched after it.
    let recorded: u64 = c.http.iter().map(|h| pipelined(h, "recorded")).sum();
    let lost: u64 = c.http.iter().map(|h| pipelined(h, "lost")).sum();
    assert!(recorded >= 12, "pipelined copies recorded: {recorded}");
    assert_eq!(lost, 0, "no pipelined copy was given up");
}

#[test]
fn a_second_holder_killed_mid_upload_leaves_the_push_acknowledged_on_another_node() {
    berth_node::install_crypto_provider();
    let mut c = ProcCluster::start(3);
    ok(&["placement", "set", "durable", "--on-demand", "--data-dir", c.dirs[0].to_str().unwrap()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let password = c.password.clone();
    let send = |m: reqwest::Method, url: &str, body: Vec<u8>, content_type: Option<&str>| {
        let mut rb = http.request(m, url).basic_auth("admin", Some(&password)).body(body);
        if let Some(t) = content_type {
            rb = rb.header("content-type", t);
        }
        rt.block_on(async {
            let r = rb.send().await.unwrap();
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            (status, headers, String::from_utf8_lossy(&r.bytes().await.unwrap()).to_string())
        })
    };
    let base = format!("http://{}", c.http[0]);
    let layer: Vec<u8> = (0..32u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let digest = Digest::sha256_of(&layer);

    // Half the layer through node 1, in one PATCH.
    let (status, headers, _) = send(reqwest::Method::POST, &format!("{base}/v2/durable/app/blobs/uploads/"), vec![], None);
    assert_eq!(status, 202);
    let loc = format!("{base}{}", headers["location"].to_str().unwrap());
    assert_eq!(send(reqwest::Method::PATCH, &loc, layer[..16 << 20].to_vec(), None).0, 202);
    // The peer receiving the second copy has that half in staging: kill it.
    let staged = |i: usize| std::fs::read_dir(c.dirs[i].join("blobs/staging")).unwrap().filter_map(|e| e.unwrap().metadata().ok()).any(|m| m.len() == 16 << 20);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let victim = loop {
        if let Some(i) = [1, 2].into_iter().find(|i| staged(*i)) {
            break i;
        }
        assert!(std::time::Instant::now() < deadline, "no peer received the first half while it was uploaded");
        std::thread::sleep(Duration::from_millis(50));
    };
    c.procs[victim].kill9();
    let survivor = 3 - victim;

    // The rest, the PUT and the manifest: acknowledged all the same.
    assert_eq!(send(reqwest::Method::PATCH, &loc, layer[16 << 20..].to_vec(), None).0, 202);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let (status, _, body) = send(reqwest::Method::PUT, &format!("{loc}{sep}digest={digest}"), vec![], None);
    assert_eq!(status, 201, "{body}");
    let config = b"{\"killed\":true}".to_vec();
    let config_digest = Digest::sha256_of(&config);
    let (status, _, body) = send(reqwest::Method::POST, &format!("{base}/v2/durable/app/blobs/uploads/?digest={config_digest}"), config.clone(), None);
    assert_eq!(status, 201, "{body}");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.to_string(), "size": layer.len() }],
    });
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let (status, _, body) = send(reqwest::Method::PUT, &format!("{base}/v2/durable/app/manifests/v1"), serde_json::to_vec(&manifest).unwrap(), Some(oci));
    assert_eq!(status, 201, "{body}");
    // At the ack: node 1 and the surviving peer hold verified copies.
    for d in [&digest, &config_digest] {
        let on = verified_on(&c.dirs, d);
        assert!(on.contains(&1) && on.contains(&(survivor + 1)), "{d} on {on:?} at the ack; node {} was killed", victim + 1);
    }
    assert!(pipelined(&c.http[0], "lost") >= 1, "node 1 gave up the copy on the killed node");
}
