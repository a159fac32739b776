//! Robot accounts with real clients against 3 `berth` processes, set up
//! through the `berth` CLI: docker logs in as `org+robot` and pushes
//! through node 1, skopeo and podman use the robot on the other nodes, a
//! token issued by one node is accepted by another, and once the robot is
//! deleted (through node 2) every client is refused on every node.

mod common;

use std::process::Command;

use common::daemons::*;
use common::procs::*;

fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(!out.status.success(), "expected a refusal: {cmd:?}\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `curl -sS` with `args`; returns (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl").args(["-sS", "-w", "\n%{http_code}"]).args(args).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

#[test]
fn robots_log_in_with_docker_skopeo_and_podman_and_a_deleted_robot_is_refused_everywhere() {
    let c = ProcCluster::start(3);
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let d = |i: usize| c.dirs[i].to_str().unwrap().to_string();
    ok(&["org", "create", "acme", "--data-dir", &d(0)]);
    let robot: serde_json::Value = serde_json::from_str(&ok(&["robot", "create", "acme+ci", "--json", "--data-dir", &d(0)])).unwrap();
    assert_eq!(robot["name"], "acme+ci");
    let secret = robot["token"].as_str().unwrap().to_string();
    ok(&["repo", "create", "acme/app", "--data-dir", &d(0)]);
    ok(&["repo", "grant", "acme/app", "--account", "acme+ci", "write", "--data-dir", &d(0)]);
    // Bad input: one line, non-zero, nothing changed.
    let d0 = d(0);
    for args in [
        vec!["robot", "create", "no-plus-sign"],
        vec!["repo", "grant", "acme/app", "write"],
        vec!["repo", "grant", "acme/app", "--account", "acme+ci", "owner"],
        vec!["org", "create", "Not Valid"],
        vec!["team", "create", "nope", "devs"],
    ] {
        let mut full = args.clone();
        full.extend(["--data-dir", d0.as_str()]);
        let out = berth(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.trim().lines().count() >= 1, "berth {args:?}: {err}");
        assert!(err.contains("error"), "berth {args:?}: {err}");
    }
    let perms = ok(&["repo", "permissions", "acme/app", "--data-dir", &d(2)]);
    assert!(perms.contains("acme+ci") && perms.contains("write"), "node 3 shows the grant: {perms}");

    // docker: log in as the robot on node 1, push, pull back through node 3.
    let work = c.root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (_dockerd, docker_host) = start_dockerd(c.root.path());
    let docker_config = work.join("docker-config");
    let docker = || docker_in(&docker_host, &docker_config);
    let login = |host: &str| docker_login(docker(), host, "acme+ci", &secret);
    let out = login(&n1);
    assert!(out.status.success(), "docker login as a robot: {}", String::from_utf8_lossy(&out.stderr));
    let src = work.join("rootfs");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), "robot").unwrap();
    let tar = work.join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tar).arg("."));
    let image = format!("{n1}/acme/app:v1");
    run(docker().arg("import").arg(&tar).arg(&image));
    let pushed = digest_in(&run(docker().args(["push", &image])));
    assert!(login(&n3).status.success());
    let far = format!("{n3}/acme/app:v1");
    run(docker().args(["pull", &far]));
    assert_eq!(digest_in(&run(docker().args(["inspect", "--format", "{{index .RepoDigests 0}}", &far]))), pushed);

    // skopeo: log in on node 2, inspect.
    let authfile = work.join("auth.json");
    run(Command::new("skopeo").args(["login", "--tls-verify=false", "-u", "acme+ci", "-p", &secret, "--authfile"]).arg(&authfile).arg(&n2));
    let inspect = |host: &str| {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}", "--authfile"]).arg(&authfile).arg(format!("docker://{host}/acme/app:v1"));
        cmd
    };
    assert_eq!(run(&mut inspect(&n2)).trim(), pushed);

    // podman: log in on node 3, pull.
    let pod_root = work.join("podman");
    let podman = || podman_in(&pod_root);
    let pod_auth = work.join("podman-auth.json");
    run(podman().args(["login", "--tls-verify=false", "-u", "acme+ci", "-p", &secret, "--authfile"]).arg(&pod_auth).arg(&n3));
    run(podman().args(["pull", "--tls-verify=false", "--authfile"]).arg(&pod_auth).arg(&far));

    // A token node 1 issued, accepted by node 2; anonymous is refused.
    let user = format!("acme+ci:{secret}");
    let (s, body) = curl(&["-u", &user, &format!("http://{n1}/v2/auth?scope=repository:acme/app:pull")]);
    assert_eq!(s, 200, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"].as_str().unwrap().to_string();
    let accept = "Accept: application/vnd.docker.distribution.manifest.v2+json";
    let (s, _) =
        curl(&["-o", "/dev/null", "-I", "-H", accept, "-H", &format!("Authorization: Bearer {token}"), &format!("http://{n2}/v2/acme/app/manifests/v1")]);
    assert_eq!(s, 200, "node 2 accepts node 1's token");
    let (s, _) = curl(&["-o", "/dev/null", "-I", &format!("http://{n2}/v2/acme/app/manifests/v1")]);
    assert_eq!(s, 401, "a private repository refuses anonymous pulls");

    // Deleted through node 2: refused on every node, by every client.
    ok(&["robot", "delete", "acme+ci", "--data-dir", &d(1)]);
    for host in [&n1, &n2, &n3] {
        let out = login(host);
        assert!(!out.status.success(), "docker login on {host} after the robot was deleted");
        let (s, _) = curl(&["-o", "/dev/null", "-I", "-H", &format!("Authorization: Bearer {token}"), &format!("http://{host}/v2/acme/app/manifests/v1")]);
        assert_eq!(s, 401, "{host}: a token of the deleted robot");
    }
    fails(&mut inspect(&n1));
    fails(&mut inspect(&n3));
    fails(podman().args(["pull", "--tls-verify=false", "--authfile"]).arg(&pod_auth).arg(format!("{n2}/acme/app:v1")));
    // Usage records are committed in batches every half second: wait
    // until the last of them are there.
    let kinds = ["create_robot", "push_repo", "pull_repo", "login_success", "delete_robot", "login_failure"];
    let read_logs = || ok(&["logs", "--namespace", "acme", "--json", "--data-dir", &d(2)]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let logs = rt.block_on(common::eventually(std::time::Duration::from_secs(20), "every kind of record in the usage log", || async {
        let logs = read_logs();
        kinds.iter().all(|kind| logs.contains(kind)).then_some(logs)
    }));
    assert!(!logs.contains(&secret), "no secret in the usage log");
}
