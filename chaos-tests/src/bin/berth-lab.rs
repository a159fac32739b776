//! `berth-lab`: a multi-region berth cluster on one machine, for demos and
//! manual drills, on loopback behind the userspace WAN (emulated latency,
//! bandwidth, cuts). It runs in the foreground and tears everything down
//! on Ctrl-C or `quit`. Commands on stdin inject faults while it runs:
//!
//! ```text
//! cut REGION | heal | kill N | hang N | resume N | start N | status | quit
//! ```
//!
//! For real network isolation with namespaces instead, see
//! `deploy/lab/netns.sh`.

use std::time::Duration;

use berth_chaos::cluster::{Cluster, Topology, PASSWORD};
use tokio::io::AsyncBufReadExt;

struct Args {
    regions: Vec<String>,
    per_region: usize,
    rtt_ms: Vec<u64>,
    rate_mb: Option<u64>,
}

const USAGE: &str = "usage: berth-lab [--regions eu,us,ap] [--nodes-per-region N] [--rtt-ms 30,80,150 | --rtt-ms 50] [--rate-mb MB_PER_S]
  --rtt-ms takes one RTT for every pair of regions, or one per pair in order (eu-us, eu-ap, us-ap for eu,us,ap)";

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args { regions: vec!["eu".into(), "us".into(), "ap".into()], per_region: 1, rtt_ms: vec![50], rate_mb: None };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--regions" => a.regions = value()?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            "--nodes-per-region" => a.per_region = value()?.parse().map_err(|e| format!("--nodes-per-region: {e}"))?,
            "--rtt-ms" => a.rtt_ms = value()?.split(',').map(|s| s.trim().parse().map_err(|e| format!("--rtt-ms: {e}"))).collect::<Result<_, _>>()?,
            "--rate-mb" => a.rate_mb = Some(value()?.parse().map_err(|e| format!("--rate-mb: {e}"))?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.regions.is_empty() || a.per_region == 0 || a.regions.len() * a.per_region > 9 {
        return Err("between 1 and 9 nodes in all, please".into());
    }
    let pairs = a.regions.len() * (a.regions.len() - 1) / 2;
    if a.rtt_ms.len() != 1 && a.rtt_ms.len() != pairs {
        return Err(format!("--rtt-ms needs 1 or {pairs} values for {} regions", a.regions.len()));
    }
    Ok(a)
}

fn topology(a: &Args) -> Topology {
    let names: Vec<&str> = a.regions.iter().map(String::as_str).collect();
    let mut t = Topology::regions(&names, Duration::from_millis(a.rtt_ms[0]));
    if a.rtt_ms.len() > 1 {
        for (pair, ms) in t.rtt.iter_mut().zip(&a.rtt_ms) {
            pair.1 = Duration::from_millis(*ms);
        }
    }
    t.regions.iter_mut().for_each(|r| r.1 = a.per_region);
    t.rate = a.rate_mb.map(|m| m * 1_000_000);
    t
}

/// The lab's nodes by the number its commands take (`kill N`), with the
/// node id the cluster knows them by, and which regions are cut off.
fn print_cluster(c: &Cluster, cut: &[String]) {
    for n in &c.nodes {
        let state = if !n.is_running() { "stopped" } else { "running" };
        let id = n.id.map(|i| format!("node id {i}")).unwrap_or_else(|| "not joined".into());
        let cut_off = if cut.contains(&n.region) { ", cut off" } else { "" };
        println!("  {} ({}, {id}): http://{}  data {}  {state}{cut_off}", n.index, n.region, n.http, n.dir.display());
    }
    if !cut.is_empty() {
        println!("  cut off from the rest: {}", cut.join(", "));
    }
}

/// The lab number of the node with cluster id `id`.
fn lab_number(c: &Cluster, id: u64) -> String {
    c.nodes.iter().find(|n| n.id == Some(id)).map(|n| n.index.to_string()).unwrap_or_else(|| "?".into())
}

#[tokio::main]
async fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-lab: {e}");
            std::process::exit(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = topology(&args);
    println!("starting {} nodes in {:?}…", args.regions.len() * args.per_region, args.regions);
    let mut c = Cluster::start(t.clone()).await;
    println!("berth lab is up; admin password: {PASSWORD:?}");
    for ((a, b), rtt) in &t.rtt {
        println!("  {a} <-> {b}: {} ms RTT", rtt.as_millis());
    }
    let mut cut: Vec<String> = Vec::new();
    print_cluster(&c, &cut);
    println!("try: docker login {} -u admin; berth cluster status --data-dir {}", c.nodes[0].http, c.nodes[0].dir.display());
    println!("commands: cut REGION | heal | kill N | hang N | resume N | start N | status | quit");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            l = lines.next_line() => match l { Ok(Some(l)) => l, _ => break },
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let node = |w: Option<&&str>| w.and_then(|s| s.parse::<usize>().ok()).filter(|i| *i < c.nodes.len());
        match words.as_slice() {
            ["cut", region] if !c.in_region(region).is_empty() => {
                c.cut_off(region);
                if !cut.iter().any(|r| r == region) {
                    cut.push(region.to_string());
                }
                println!("cut off {region}");
            }
            ["heal"] => {
                c.heal();
                cut.clear();
                println!("healed every link");
            }
            ["kill", _] | ["hang", _] | ["resume", _] | ["start", _] => match node(words.get(1)) {
                Some(i) => {
                    match words[0] {
                        "kill" => c.kill9(i),
                        "hang" => c.hang(i),
                        "resume" => c.resume(i),
                        _ if c.nodes[i].is_running() => println!("node {i} is running"),
                        _ => c.restart(i),
                    }
                    println!("{} node {i}", words[0]);
                }
                None => println!("no node {}", words[1]),
            },
            ["status"] => {
                print_cluster(&c, &cut);
                match c.any_status() {
                    Some(s) => match s["leader"].as_u64() {
                        Some(l) => println!("leader: {} (node id {l}), term {}", lab_number(&c, l), s["term"]),
                        None => println!("no leader, term {}", s["term"]),
                    },
                    None => println!("no node answered cluster status"),
                }
            }
            ["quit"] | ["exit"] => break,
            [] => {}
            _ => println!("commands: cut REGION | heal | kill N | hang N | resume N | start N | status | quit"),
        }
    }
    println!("tearing the lab down…");
    for i in 0..c.nodes.len() {
        c.kill9(i);
    }
}
