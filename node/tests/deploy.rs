//! What operators install: the systemd unit verifies cleanly, and a reload
//! request (`systemctl reload`, SIGHUP) never stops a node.

mod common;

use std::time::{Duration, Instant};

use common::daemons::*;
use common::procs::*;

const UNIT: &str = include_str!("../../deploy/systemd/berth.service");

/// `systemd-analyze verify` on the unit, with `ExecStart` pointing at the
/// binary this build made (verify checks that the command exists). A
/// misspelt or unknown directive is only a warning there, so any output
/// at all fails the test.
#[test]
fn the_systemd_unit_verifies_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("berth.service");
    assert!(UNIT.contains("ExecStart=/usr/local/bin/berth node start"), "the unit starts the installed binary");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/berth", BERTH)).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze (package systemd) is installed");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    for hardening in [
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "ReadWritePaths=/var/lib/berth",
        "LimitNOFILE=",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(UNIT.contains(hardening), "the unit sets {hardening}");
    }
}

/// SIGHUP's default action ends a process; a node must take it as a
/// reload in every TLS mode (here: plain HTTP, nothing to reload).
#[test]
fn a_reload_request_never_stops_a_node() {
    let mut c = ProcCluster::start(1);
    let pid = c.procs[0].pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let log = c.dirs[0].with_extension("log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("SIGHUP: nothing to reload") {
        assert!(c.procs[0].alive(), "SIGHUP stopped the node");
        assert!(Instant::now() < deadline, "the node never noted the SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.procs[0].alive(), "SIGHUP stopped the node");
    assert!(status(&c.dirs[0]).is_some_and(|s| s["leader"] == 1), "the node still answers");
}

/// `docker-compose down` when dropped, so a failed assertion leaves no
/// container running on the host's network.
struct ComposeProject {
    dir: std::path::PathBuf,
    docker_host: String,
    env: Vec<(&'static str, String)>,
}

impl ComposeProject {
    fn compose(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("docker-compose");
        cmd.current_dir(&self.dir).env("DOCKER_HOST", &self.docker_host).args(["-p", "berthtest", "-f", "compose.yaml"]);
        cmd.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        cmd
    }

    fn health(&self, service: &str) -> String {
        let id = run(self.compose().args(["ps", "-q", service])).trim().to_string();
        let mut inspect = std::process::Command::new("docker");
        inspect.env("DOCKER_HOST", &self.docker_host).args(["inspect", "--format", "{{.State.Health.Status}}", &id]);
        run(&mut inspect).trim().to_string()
    }

    fn wait_healthy(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let states: Vec<String> = ["node1", "node2", "node3"].iter().map(|s| self.health(s)).collect();
            if states.iter().all(|s| s == "healthy") {
                return;
            }
            if Instant::now() > deadline {
                let logs = self.compose().args(["logs", "--tail", "40"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
                panic!("{what}: the compose nodes never became healthy ({states:?}):\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.compose().args(["down", "-v", "--timeout", "10"]).output();
    }
}

/// The operator's compose file, started against a real dockerd with the
/// image `deploy/image/build.sh` assembles from this build's binary:
/// three nodes come up healthy (the first creates the cluster, the others
/// join with the token it leaves in its volume), form three voters, take a
/// `docker push` through one node and serve the pull through another, and a
/// restarted node comes back with the same command line.
#[test]
fn the_compose_cluster_takes_a_docker_push_and_serves_the_pull_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dockerd, host) = start_dockerd(tmp.path());

    // The image, from this build's binary; nothing is pulled.
    let archive = tmp.path().join("berth-image.tar");
    let repo_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    run(std::process::Command::new(repo_root.join("deploy/image/build.sh"))
        .args(["--binary", BERTH, "--tag", "berth:under-test", "--output"])
        .arg(format!("docker-archive:{}", archive.display())));
    let docker = || {
        let mut d = std::process::Command::new("docker");
        d.env("DOCKER_HOST", &host).env("DOCKER_CONFIG", tmp.path().join("docker-config"));
        d
    };
    run(docker().arg("load").arg("-i").arg(&archive));
    let user = run(docker().args(["image", "inspect", "--format", "{{.Config.User}}", "berth:under-test"]));
    assert_eq!(user.trim(), "10001:10001", "the image runs as non-root");
    let volumes = run(docker().args(["image", "inspect", "--format", "{{json .Config.Volumes}}", "berth:under-test"]));
    assert!(volumes.contains("/var/lib/berth"), "the data dir is a volume: {volumes}");

    // A loopback address of its own, so the fixed ports of the compose file
    // meet nothing else on this machine.
    let ip = "127.0.0.57";
    let project = tmp.path().join("compose");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::copy(repo_root.join("deploy/compose/compose.yaml"), project.join("compose.yaml")).unwrap();
    let password = "compose-admin-password";
    std::fs::write(project.join("admin-password"), password).unwrap();
    let compose = ComposeProject {
        dir: project,
        docker_host: host.clone(),
        env: vec![("BERTH_IMAGE", "berth:under-test".into()), ("BERTH_BIND", ip.into()), ("BERTH_HOST", ip.into())],
    };
    run(compose.compose().args(["up", "-d"]));
    compose.wait_healthy("first start");

    let pw_file = tmp.path().join("pw");
    std::fs::write(&pw_file, password).unwrap();
    let endpoint = format!("http://{ip}:5002");
    let status_of = || -> serde_json::Value {
        serde_json::from_str(&ok(&["cluster", "status", "--json", "--endpoint", &endpoint, "--password-file", pw_file.to_str().unwrap()])).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while voters(&status_of()).len() != 3 {
        assert!(Instant::now() < deadline, "the compose cluster never had 3 voters: {}", status_of());
        std::thread::sleep(Duration::from_millis(500));
    }

    // A small image of our own (docker import needs no registry), pushed
    // through node 1 and pulled through node 3 after the local copy is gone.
    let rootfs = tmp.path().join("rootfs.tar");
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("hello.txt"), "pushed through compose\n").unwrap();
    run(std::process::Command::new("tar").arg("-C").arg(&files).arg("-cf").arg(&rootfs).arg("hello.txt"));
    let (n1, n3) = (format!("{ip}:5001"), format!("{ip}:5003"));
    for node in [&n1, &n3] {
        let out = docker_login(docker(), node, "admin", password);
        assert!(out.status.success(), "docker login {node}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let pushed = format!("{n1}/team/hello:1");
    run(docker().args(["import", rootfs.to_str().unwrap(), &pushed]));
    let push = run(docker().args(["push", &pushed]));
    let digest = digest_in(&push);
    run(docker().args(["rmi", &pushed]));
    let pulled = format!("{n3}/team/hello:1");
    let pull = run(docker().args(["pull", &pulled]));
    assert_eq!(digest_in(&pull), digest, "node 3 serves what node 1 took");

    // Every later start is the same command: node 1 comes back as itself.
    run(compose.compose().args(["restart", "node1"]));
    compose.wait_healthy("after a restart");
    run(docker().args(["rmi", &pulled]));
    let again = run(docker().args(["pull", &format!("{n1}/team/hello:1")]));
    assert_eq!(digest_in(&again), digest);
    assert_eq!(voters(&status_of()).len(), 3);
}

/// The Kubernetes manifests render with `kubectl kustomize`, pass a strict
/// schema check of Kubernetes 1.30 (`kubernetes-validate`, from PyPI), and
/// say what the operator relies on: one StatefulSet per region with its own
/// BERTH_REGION, peers found through a headless Service that publishes pods
/// before they are ready, a PodDisruptionBudget of one, readiness on
/// /health/ready, a preStop that hands leadership over, and a container
/// command line this build's `berth` accepts. (No Kubernetes cluster runs
/// on this machine: the pods themselves are not started here.)
#[test]
fn the_kubernetes_manifests_render_validate_and_match_the_cli() {
    let repo_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let rendered = run(std::process::Command::new("kubectl").arg("kustomize").arg(repo_root.join("deploy/kubernetes")));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("berth.yaml");
    std::fs::write(&file, &rendered).unwrap();
    run(std::process::Command::new("kubernetes-validate").args(["--strict", "--quiet", "-k", "1.30"]).arg(&file));

    let json = run(std::process::Command::new("python3")
        .args(["-c", "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))"])
        .arg(&file));
    let docs: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let of_kind = |kind: &str| docs.iter().filter(|d| d["kind"] == kind).cloned().collect::<Vec<_>>();

    let peers = of_kind("Service").into_iter().find(|s| s["metadata"]["name"] == "berth-peers").expect("a headless peer Service");
    assert_eq!(peers["spec"]["clusterIP"], "None");
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);
    let pdb = of_kind("PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert_eq!(pdb[0]["spec"]["maxUnavailable"], 1);

    let sets = of_kind("StatefulSet");
    let mut regions = vec![];
    for set in &sets {
        assert_eq!(set["spec"]["serviceName"], "berth-peers");
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let c = &pod["containers"][0];
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health/ready");
        let pre_stop: Vec<&str> = c["lifecycle"]["preStop"]["exec"]["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(&pre_stop[1..3], ["node", "stepdown"]);
        let env = |name: &str| c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].as_str().unwrap_or("").to_string());
        let region = env("BERTH_REGION").expect("BERTH_REGION is set");
        assert!(set["metadata"]["name"].as_str().unwrap().ends_with(&region), "{} runs region {region}", set["metadata"]["name"]);
        regions.push(region);
        assert!(pod["volumes"].as_array().unwrap().iter().any(|v| v["secret"]["secretName"] == "berth-join"), "the join token comes from a Secret");

        // The container's command line, its $(VARS) filled in as the
        // kubelet would, is one this build's CLI accepts (`--help` at the
        // end makes clap check every argument before it and stop).
        let args: Vec<String> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("$(BERTH_REGION)", &env("BERTH_REGION").unwrap())
                    .replace("$(POD_NAME)", "berth-x-0")
                    .replace("$(POD_NAMESPACE)", "berth")
            })
            .collect();
        assert!(args.windows(2).any(|w| w[0] == "--init-on" && w[1] == "berth-eu-west-0"), "one pod creates the cluster: {args:?}");
        let mut check: Vec<&str> = args.iter().map(String::as_str).collect();
        check.push("--help");
        let out = berth(&check);
        assert!(out.status.success(), "berth refuses the pod's arguments {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let mut probe: Vec<&str> = pre_stop[1..].to_vec();
        probe.push("--help");
        assert!(berth(&probe).status.success(), "berth refuses the preStop command {pre_stop:?}");
    }
    regions.sort();
    assert_eq!(regions, ["ap-south", "eu-west", "us-east"]);
}

/// /proc mounted in a chroot for the duration of a test.
struct ProcMount(std::path::PathBuf);

impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The Debian package, installed with apt on a fresh Debian 12 root (from
/// debootstrap, with its dependencies from the Debian mirror), gives the
/// `berth` system user, /var/lib/berth closed to others, /etc/berth with its
/// conffile and the unit; a node created and run as that user answers on
/// /v2/; removing and purging the package keeps the node's data.
#[test]
fn the_debian_package_installs_on_a_fresh_debian_and_runs_a_node() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = run(std::process::Command::new(repo_root.join("deploy/debian/build-deb.sh")).args(["--binary", BERTH, "--out"]).arg(tmp.path()));
    let deb = std::path::PathBuf::from(out.lines().last().unwrap().trim());
    assert!(deb.exists(), "build-deb.sh names the package it wrote: {out}");

    let root = tmp.path().join("root");
    debian_root(&root);
    std::fs::copy(&deb, root.join("tmp/berth.deb")).unwrap();
    run(std::process::Command::new("mount").args(["-t", "proc", "proc"]).arg(root.join("proc")));
    let _proc = ProcMount(root.join("proc"));
    let chroot = |args: &[&str]| {
        let mut c = std::process::Command::new("chroot");
        c.arg(&root).args(args).env("DEBIAN_FRONTEND", "noninteractive").env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    };
    run(&mut chroot(&["apt-get", "update", "-qq"]));
    run(&mut chroot(&["apt-get", "install", "-y", "-qq", "/tmp/berth.deb"]));

    let passwd = run(&mut chroot(&["getent", "passwd", "berth"]));
    assert!(passwd.contains(":/var/lib/berth:/usr/sbin/nologin"), "a berth system user: {passwd}");
    assert_eq!(run(&mut chroot(&["stat", "-c", "%U:%G %a", "/var/lib/berth"])).trim(), "berth:berth 700");
    assert!(root.join("lib/systemd/system/berth.service").exists());
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/berth.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/berth node start --data-dir /var/lib/berth"), "the unit runs the packaged binary");
    assert!(run(&mut chroot(&["dpkg-query", "-W", "-f=${Conffiles}", "berth"])).contains("/etc/berth/berth.env"));

    // A node made and run as the berth user, as the postinst says.
    let ip = "127.0.0.58";
    let (http, peer) = free_addr_pair(ip);
    std::fs::write(root.join("tmp/pw"), "package-admin-pw").unwrap();
    run(&mut chroot(&["chmod", "0644", "/tmp/pw"]));
    let as_berth = |args: &[&str]| {
        let mut all = vec!["--userspec=berth:berth", root.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut c = std::process::Command::new("chroot");
        c.args(&all).env("HOME", "/var/lib/berth");
        c
    };
    run(&mut as_berth(&[
        "/usr/bin/berth",
        "cluster",
        "init",
        "--data-dir",
        "/var/lib/berth",
        "--region",
        "pkg",
        "--http",
        &http,
        "--peer",
        &peer,
        "--admin-password-file",
        "/tmp/pw",
    ]));
    let log = std::fs::File::create(tmp.path().join("node.log")).unwrap();
    let mut node = as_berth(&["/usr/bin/berth", "node", "start", "--data-dir", "/var/lib/berth"]).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !berth(&["node", "ready", "--url", &format!("http://{http}")]).status.success() {
        assert!(Instant::now() < deadline, "the packaged node never got ready: {}", std::fs::read_to_string(tmp.path().join("node.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(300));
    }
    let base = run(std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "admin:package-admin-pw"])
        .arg(format!("http://{http}/v2/")));
    assert_eq!(base, "200");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(node.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(node.wait().unwrap().success(), "SIGTERM stops the node cleanly");

    // Removing the software never removes the registry's data.
    run(&mut chroot(&["dpkg", "--purge", "berth"]));
    assert!(!root.join("usr/bin/berth").exists());
    assert!(root.join("var/lib/berth/berth.toml").exists(), "purge keeps the node's data");
}
