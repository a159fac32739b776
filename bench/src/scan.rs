//! `berth-bench scan`: layer indexing against one-core gzip decompression
//! of the same layer, and the re-match of 1,000 indexed manifests.
//!
//! The layer is a real root file system slice of this machine (its
//! os-release (`etc/os-release` is a link to `usr/lib/os-release`), dpkg database and `usr/bin`, `usr/sbin`),
//! tarred and gzipped once with the system's `tar` and cached in
//! `~/.cache/berth-test/`. Indexing walks every entry of the stream (it
//! must, to find package databases and whiteouts), so its floor is
//! decompression; the ratio says how close it gets.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use berth_scanner::index::{index_layer, merge, ImageIndex, Limits};
use berth_scanner::matcher::{match_image, AdvisoryDb};
use serde_json::json;

fn layer() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/berth-test");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("bench-rootfs.tar.gz");
    if !out.exists() {
        eprintln!("building {} from this machine's /usr (once)", out.display());
        let tmp = dir.join("bench-rootfs.tar.gz.part");
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C / --ignore-failed-read -cf - etc/os-release usr/lib/os-release var/lib/dpkg/status usr/bin usr/sbin 2>/dev/null | gzip -6 > {}",
                tmp.display()
            ))
            .status()
            .context("tar | gzip")?;
        anyhow::ensure!(st.success() || std::fs::metadata(&tmp).map(|m| m.len() > 0).unwrap_or(false), "tar failed");
        std::fs::rename(&tmp, &out)?;
    }
    Ok(out)
}

pub fn run(manifests: usize, out: &std::path::Path) -> anyhow::Result<()> {
    let path = layer()?;
    let gz = std::fs::read(&path)?;
    // One core: gzip decompression of the layer to nowhere (best of 3).
    let mut raw_len = 0u64;
    let mut gunzip = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut d = flate2::read::MultiGzDecoder::new(&gz[..]);
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = d.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        raw_len = n;
        gunzip = gunzip.min(t.elapsed().as_secs_f64());
    }
    // One core: the indexer on the same bytes (best of 3).
    let mut index = None;
    let mut indexing = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let i = index_layer(&gz[..], &Limits::default())?;
        indexing = indexing.min(t.elapsed().as_secs_f64());
        index = Some(i);
    }
    let index = index.unwrap();
    let mb = raw_len as f64 / 1e6;
    let image: ImageIndex = merge(&[("sha256:layer".into(), index)]);
    let packages = image.packages.len();

    // A feed in the tracker's format naming every installed source
    // package of the layer, two advisories each (one open, one fixed
    // in a later version), as the re-match pass parses and uses it.
    let mut feed = serde_json::Map::new();
    for (i, p) in image.packages.iter().enumerate() {
        let entry = feed.entry(p.package.source_name.clone()).or_insert_with(|| json!({}));
        entry[format!("CVE-2099-{:05}", 2 * i)] = json!({"description": "open", "releases": {"bookworm": {"status": "open", "urgency": "low"}}});
        entry[format!("CVE-2099-{:05}", 2 * i + 1)] =
            json!({"description": "fixed later", "releases": {"bookworm": {"status": "resolved", "fixed_version": "999:1", "urgency": "high"}}});
    }
    let feed_bytes = serde_json::to_vec(&feed)?;
    let t = Instant::now();
    let (_, advisories) = berth_scanner::feed::parse(&feed_bytes)?;
    let db = AdvisoryDb::new(advisories);
    let feed_load = t.elapsed().as_secs_f64();
    let stored = serde_json::to_vec(&image)?;
    let t = Instant::now();
    let mut findings = 0usize;
    for _ in 0..manifests {
        // What the leader's pass does per manifest: decode its stored
        // index and match it; no layer is read.
        let idx: ImageIndex = serde_json::from_slice(&stored)?;
        findings += match_image(&db, &idx).keys().len();
    }
    let rematch = t.elapsed().as_secs_f64();

    let result = json!({
        "layer_gz_bytes": gz.len(), "layer_tar_bytes": raw_len, "packages": packages,
        "gunzip_mb_s": mb / gunzip, "index_mb_s": mb / indexing, "index_vs_gunzip": gunzip / indexing,
        "feed_bytes": feed_bytes.len(), "feed_load_s": feed_load,
        "rematch_manifests": manifests, "rematch_s": rematch, "findings": findings,
    });
    println!("layer: {:.0} MB tar ({:.0} MB gzip), {} packages", mb, gz.len() as f64 / 1e6, packages);
    println!("one-core gunzip: {:.0} MB/s; indexing: {:.0} MB/s; ratio {:.2} (target >= 0.7)", mb / gunzip, mb / indexing, gunzip / indexing);
    println!("re-match of {manifests} manifests ({packages} packages each, {} advisories): {:.2} s ({findings} findings)", db.len(), rematch);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(&result)?)?;
    Ok(())
}
