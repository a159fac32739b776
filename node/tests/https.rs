//! HTTPS on the registry endpoint: cluster certificates trusted by real
//! clients through the exported CA, HTTP/2 by ALPN, operator certificates
//! rotated under load, and start-up refusals.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemons::*;
use common::procs::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// Polls an https URL until it answers (the node is up).
fn wait_https(url: &str, ca: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(ca).arg(url).output().unwrap();
        if String::from_utf8_lossy(&out.stdout) == "200" {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered over https: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cluster_certificates_serve_docker_skopeo_and_podman_over_https_and_http2() {
    let c = ProcCluster::start_with(3, &["--tls-cluster"]);
    let work = c.root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let ca = work.join("ca.pem");
    let pem = run(Command::new(BERTH).args(["cluster", "ca", "export", "--data-dir"]).arg(&c.dirs[0]));
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    std::fs::write(&ca, &pem).unwrap();
    for h in &c.http {
        wait_https(&format!("https://{h}/health"), &ca);
    }
    let pw = c.password.clone();
    let creds = format!("admin:{pw}");
    // HTTP/2 where the client offers it; HTTP/1.1 still works.
    let v = run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--http2", "-w", "%{http_version}", "-u", &creds, "--cacert"])
        .arg(&ca)
        .arg(format!("https://{}/v2/", c.http[0])));
    assert_eq!(v, "2");
    let v = run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--http1.1", "-w", "%{http_version}", "-u", &creds, "--cacert"])
        .arg(&ca)
        .arg(format!("https://{}/v2/", c.http[1])));
    assert_eq!(v, "1.1");
    // Without the CA a client refuses the certificate.
    let untrusted = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).arg(format!("https://{}/v2/", c.http[0])).output().unwrap();
    assert!(!untrusted.status.success());
    // The CLI reaches an https node through its data directory.
    assert!(run(Command::new(BERTH).args(["cluster", "status", "--data-dir"]).arg(&c.dirs[2])).contains("voter"));

    // skopeo with --cert-dir.
    let certs = work.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let layout = work.join("img");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let put = |b: &[u8]| {
        let d = berth_common::Digest::sha256_of(b);
        std::fs::write(layout.join("blobs/sha256").join(d.hex()), b).unwrap();
        (d.to_string(), b.len())
    };
    std::fs::create_dir_all(work.join("layer-src")).unwrap();
    std::fs::write(work.join("layer-src/hello.txt"), "over https").unwrap();
    run(Command::new("tar").arg("-C").arg(work.join("layer-src")).arg("-cf").arg(work.join("layer.tar")).arg("."));
    let (ld, ls) = put(&std::fs::read(work.join("layer.tar")).unwrap());
    let (cd, cs) = put(format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{ld}"]}}}}"#).as_bytes());
    let m = serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cs},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":ld,"size":ls}]});
    let (md, ms) = put(&serde_json::to_vec(&m).unwrap());
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":md,"size":ms,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]})).unwrap()).unwrap();
    let digest_file = work.join("pushed.digest");
    run(Command::new("skopeo")
        .args(["copy", "--dest-creds", &creds, "--dest-cert-dir"])
        .arg(&certs)
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/tls/skopeo:v1", c.http[0])));
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    assert!(md.starts_with("sha256:"));
    let got = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--creds", &creds, "--cert-dir"])
        .arg(&certs)
        .arg(format!("docker://{}/tls/skopeo:v1", c.http[2])));
    assert_eq!(berth_common::Digest::sha256_of(got.as_bytes()).to_string(), pushed.trim(), "node 3 serves over https what skopeo pushed to node 1");

    // podman with --cert-dir.
    let pod = work.join("podman");
    let podman = || podman_in(&pod);
    let auth = work.join("auth.json");
    run(podman().args(["login", "-u", "admin", "-p", &pw, "--cert-dir"]).arg(&certs).arg("--authfile").arg(&auth).arg(&c.http[1]));
    run(podman().args(["pull", "--cert-dir"]).arg(&certs).arg("--authfile").arg(&auth).arg(format!("{}/tls/skopeo:v1", c.http[1])));

    // docker, trusting the CA through certs.d.
    let certs_d = Path::new("/etc/docker/certs.d").join(&c.http[0]);
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(&ca, certs_d.join("ca.crt")).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(certs_d);
    let (dockerd, host) = start_dockerd(c.root.path());
    let docker = || {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", &host).env("DOCKER_CONFIG", work.join("docker-config"));
        cmd
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(docker().args(["login", "-u", "admin", "-p", &pw, &c.http[0]]));
        let tar = work.join("rootfs.tar");
        std::fs::create_dir_all(work.join("rootfs")).unwrap();
        std::fs::write(work.join("rootfs/f.txt"), "over https").unwrap();
        run(Command::new("tar").arg("-C").arg(work.join("rootfs")).arg("-cf").arg(&tar).arg("."));
        let image = format!("{}/tls/docker:v1", c.http[0]);
        run(docker().arg("import").arg(&tar).arg(&image));
        let out = run(docker().args(["push", &image]));
        assert!(out.contains("digest: sha256:"), "{out}");
        run(docker().args(["rmi", &image]));
        run(docker().args(["pull", &image]));
    }));
    drop(dockerd);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
struct TestPki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    fn new() -> TestPki {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "berth test CA");
        let cert = p.self_signed(&key).unwrap();
        TestPki { ca_pem: cert.pem(), issuer: Issuer::new(p, key) }
    }

    /// (cert PEM, key PEM), valid from `from` days to `to` days from now.
    fn server(&self, from_days: i64, to_days: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, format!("berth test server {}", rand_suffix()));
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(from_days);
        p.not_after = now + time::Duration::days(to_days);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The certificate a fresh TLS connection to `addr` is shown (DER).
async fn served_cert(addr: &str, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

use rustls::pki_types::pem::PemObject;

#[test]
fn operator_certificates_rotate_under_load_and_bad_ones_stop_the_node_at_start() {
    berth_node::install_crypto_provider();
    let pki = TestPki::new();
    let c = ProcCluster::start(1);
    let dir = c.dirs[0].clone();
    let work = c.root.path().join("tls");
    std::fs::create_dir_all(&work).unwrap();
    let (cert, key) = (work.join("server.pem"), work.join("server.key"));
    let (c1, k1) = pki.server(-1, 30);
    std::fs::write(&cert, &c1).unwrap();
    std::fs::write(&key, &k1).unwrap();
    // The cluster's node restarts below with certificates.
    let mut c = c;
    for p in c.procs.iter_mut() {
        p.terminate();
    }
    let mut procs: Vec<Proc> = Vec::new();
    let start = |extra: &[&str]| berth(&[&["node", "start", "--data-dir", dir.to_str().unwrap()], extra].concat());

    // Start-up refusals, each one line, non-zero.
    let (expired_c, expired_k) = pki.server(-30, -1);
    let (other_c, _) = pki.server(-1, 30);
    let cases: Vec<(String, String, &str)> = vec![
        (work.join("missing.pem").display().to_string(), key.display().to_string(), "cannot read TLS certificate"),
        (work.display().to_string(), key.display().to_string(), "cannot read TLS certificate"),
        (write(&work, "expired.pem", &expired_c), write(&work, "expired.key", &expired_k), "expired"),
        (write(&work, "other.pem", &other_c), key.display().to_string(), "does not match"),
        (write(&work, "garbage.pem", "not a certificate"), key.display().to_string(), "no certificate"),
    ];
    for (cf, kf, why) in cases {
        let out = start(&["--tls-cert", &cf, "--tls-key", &kf]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{why}: must not start");
        assert!(err.contains(why), "{why}: {err}");
        assert_eq!(err.trim().lines().filter(|l| l.contains("berth: error")).count(), 1, "{err}");
    }

    procs.push(Proc::start_with(&dir, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]));
    let ca_file = write(&work, "ca.pem", &pki.ca_pem);
    let url = format!("https://{}/v2/", c.http[0]);
    wait_https(&format!("https://{}/health", c.http[0]), Path::new(&ca_file));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let first = served_cert(&c.http[0], &pki.ca_pem).await;
        let client = reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()).build().unwrap();
        // Load: pulls on kept-alive and fresh connections while the files change.
        // Each load task counts the requests it has done, so the test waits
        // for requests to happen (before and after the switch), not for time.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        let mut counts = Vec::new();
        for fresh in [false, true] {
            let client = if fresh { None } else { Some(client.clone()) };
            let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
            counts.push(done.clone());
            let (url, ca, pw, stop) = (url.clone(), pki.ca_pem.clone(), c.password.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let cl = client.clone().unwrap_or_else(|| {
                        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()).build().unwrap()
                    });
                    let r = cl.get(&url).basic_auth("admin", Some(&pw)).send().await.expect("no request fails during rotation");
                    assert_eq!(r.status(), 200);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        let done = |i: usize| counts[i].load(std::sync::atomic::Ordering::Relaxed);
        // Some requests on both kinds of connection before the files change…
        common::eventually(Duration::from_secs(10), "the load runs", || async { done(0) >= 5 && done(1) >= 5 }).await;
        let (c2, k2) = pki.server(-1, 60);
        std::fs::write(&key, &k2).unwrap();
        std::fs::write(&cert, &c2).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = served_cert(&c.http[0], &pki.ca_pem).await;
            if now != first {
                let expected = rustls::pki_types::CertificateDer::from_pem_slice(c2.as_bytes()).unwrap();
                assert_eq!(now, expected.as_ref(), "new connections see the new certificate");
                break;
            }
            assert!(Instant::now() < deadline, "the new certificate was never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // …and some after the switch, on the kept-alive connection too.
        let at_switch = [done(0), done(1)];
        common::eventually(Duration::from_secs(10), "the load goes on after the switch", || async {
            done(0) >= at_switch[0] + 5 && done(1) >= at_switch[1] + 5
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for l in load {
            l.await.unwrap();
        }
    });
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}
