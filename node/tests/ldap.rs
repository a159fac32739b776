//! LDAP sign-in against Debian's `slapd`, started by the test as an
//! ordinary process on a loopback port with a configuration and a small
//! directory (three users, two groups) the test writes.
//!
//! Shows, against a real `berth` node and a real dockerd: docker login as a
//! directory user and a push into a repository granted to a team synced
//! from a group; the grant gone after the user leaves the group and the
//! leader's next sync pass; a wrong password refused; a user name with
//! filter metacharacters refused without any bind or search reaching the
//! directory; with slapd stopped, the local admin still signing in and the
//! directory user refused with a 503 quickly.
//!
//! Needs the binary built (`cargo build -p berth-node --bin berth`) and
//! slapd, ldap-utils, docker.io (scripts/setup-debian.sh).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemons::*;
use common::procs::*;
use common::upstream::{api, eventually, text};
use serde_json::json;

const BASE: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "directory-root-pw";

/// slapd in the foreground (`-d stats`), its log in a file; killed when dropped.
struct Slapd {
    child: Option<Child>,
    url: String,
    log: std::path::PathBuf,
}

impl Slapd {
    fn start(dir: &Path) -> Slapd {
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        let conf = dir.join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 pidfile {pid}\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 database mdb\n\
                 maxsize 16777216\n\
                 suffix \"{BASE}\"\n\
                 rootdn \"{ROOT_DN}\"\n\
                 rootpw {ROOT_PW}\n\
                 directory {db}\n",
                pid = dir.join("slapd.pid").display(),
                db = db.display()
            ),
        )
        .unwrap();
        let mut ldif = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n"
        );
        for (uid, pw) in [("alice", "alice-pw-1"), ("bob", "bob-pw-1"), ("carol", "carol-pw-1")] {
            ldif += &format!(
                "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {uid}@example.org\nuserPassword: {pw}\n\n"
            );
        }
        for (cn, members) in [("developers", ["alice", "carol"]), ("operators", ["bob", "carol"])] {
            ldif += &format!("dn: cn={cn},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {cn}\n");
            for m in members {
                ldif += &format!("member: uid={m},ou=people,{BASE}\n");
            }
            ldif += "\n";
        }
        let ldif_file = dir.join("directory.ldif");
        std::fs::write(&ldif_file, ldif).unwrap();
        run(Command::new("slapadd").arg("-f").arg(&conf).arg("-l").arg(&ldif_file));
        let port = free_port("127.0.0.1");
        let url = format!("ldap://127.0.0.1:{port}");
        let log = dir.join("slapd.log");
        let child = Command::new("slapd")
            .args(["-d", "stats", "-h", &format!("{url}/"), "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("slapd (scripts/setup-debian.sh)");
        let s = Slapd { child: Some(child), url, log };
        eventually("slapd to answer", Duration::from_secs(15), || {
            Command::new("ldapsearch").args(["-x", "-H", &s.url, "-b", BASE, "-s", "base"]).output().is_ok_and(|o| o.status.success())
        });
        s
    }

    fn modify(&self, ldif: &str) {
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &self.url, "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), ldif.as_bytes()).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "ldapmodify: {}", text(&out));
    }

    /// Searches as the directory's administrator (a BIND the sync pass
    /// makes too) for a filter nothing else asks; returns that filter.
    fn marker(&self) -> String {
        let filter = format!("(description=berth-test-marker-{})", std::process::id());
        let out = Command::new("ldapsearch").args(["-x", "-H", &self.url, "-D", ROOT_DN, "-w", ROOT_PW, "-b", BASE, &filter]).output().unwrap();
        assert!(out.status.success(), "ldapsearch: {}", text(&out));
        filter
    }

    /// The BIND and SRCH operations slapd logged so far.
    fn operations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap().lines().filter(|l| l.contains(" BIND ") || l.contains(" SRCH ")).map(str::to_string).collect()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `curl -u creds http://node/v2/`: the status, and how long it took.
fn v2_login(node: &str, user: &str, password: &str) -> (u16, Duration) {
    let t = Instant::now();
    let out =
        run(Command::new("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-u", &format!("{user}:{password}")]).arg(format!("http://{node}/v2/")));
    (out.trim().parse().unwrap(), t.elapsed())
}

#[test]
fn ldap_users_sign_in_push_through_synced_teams_and_are_refused_clearly() {
    let root = tempfile::tempdir().unwrap();
    let mut slapd = Slapd::start(root.path());
    let bind_pw = root.path().join("ldap-bind.pw");
    std::fs::write(&bind_pw, format!("{ROOT_PW}\n")).unwrap();
    let url = slapd.url.clone();
    let c = ProcCluster::start_configured(1, &[], |t| {
        let ldap: toml::Table = toml::from_str(&format!(
            r#"
            url = "{url}"
            bind_dn = "{ROOT_DN}"
            bind_password_file = "{pw}"
            base_dn = "ou=people,{BASE}"
            user_filter = "(objectClass=inetOrgPerson)"
            group_base_dn = "ou=groups,{BASE}"
            group_filter = "(&(objectClass=groupOfNames)(member={{dn}}))"
            sync_interval_secs = 2
            timeout_secs = 5
            [teams]
            developers = "acme/devs"
            operators = "acme/ops"
            "#,
            pw = bind_pw.display()
        ))
        .unwrap();
        let mut auth = toml::Table::new();
        auth.insert("ldap".into(), toml::Value::Table(ldap));
        t.insert("auth".into(), toml::Value::Table(auth));
    });
    let n1 = c.http[0].clone();
    let admin = format!("admin:{}", c.password);

    // The organization, its two teams (mapped to the groups) and a
    // repository only the developers' team may write.
    let (s, v) = api(&n1, &admin, "POST", "/api/v1/organization/", Some(json!({"name": "acme"})));
    assert_eq!(s, 201, "{v}");
    for team in ["devs", "ops"] {
        let (s, v) = api(&n1, &admin, "PUT", &format!("/api/v1/organization/acme/team/{team}"), Some(json!({"role": "member"})));
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) =
        api(&n1, &admin, "POST", "/api/v1/repository", Some(json!({"namespace": "acme", "repository": "app", "visibility": "private", "description": ""})));
    assert!(s == 201 || s == 200, "{s} {v}");
    let (s, v) = api(&n1, &admin, "PUT", "/api/v1/repository/acme/app/permissions/team/devs", Some(json!({"role": "write"})));
    assert_eq!(s, 200, "{v}");

    // docker login as alice (a directory user, unknown to berth until now)
    // and a push into acme/app, which she may write through acme/devs.
    let (_dockerd, docker_host) = start_dockerd(c.root.path());
    let docker_config = root.path().join("docker-config");
    let docker = || docker_in(&docker_host, &docker_config);
    let out = docker_login(docker(), &n1, "alice", "alice-pw-1");
    assert!(out.status.success(), "docker login: {}", text(&out));
    let (s, v) = api(&n1, &admin, "GET", "/api/v1/superuser/users/", None);
    assert_eq!(s, 200, "{v}");
    assert!(v["users"].as_array().unwrap().iter().any(|u| u["username"] == "alice"), "alice not created: {v}");
    let members = |team: &str| {
        let (s, v) = api(&n1, &admin, "GET", &format!("/api/v1/organization/acme/team/{team}/members"), None);
        assert_eq!(s, 200, "{v}");
        v["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(members("devs"), ["alice"], "synced on login");
    assert!(members("ops").is_empty(), "alice is not an operator");
    let rootfs = root.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("hello.txt"), "from the directory").unwrap();
    let tar = root.path().join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."));
    let image = format!("{n1}/acme/app:v1");
    run(docker().arg("import").arg(&tar).arg(&image));
    let out = docker().args(["push", &image]).output().unwrap();
    assert!(out.status.success(), "alice's push: {}", text(&out));
    // berth login as alice: the CLI signs in through the same check.
    let cli_dir = root.path().join("cli");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["login", "--endpoint", &format!("http://{n1}"), "--user", "alice"])
        .env("BERTH_CONFIG_DIR", &cli_dir)
        .env("BERTH_PASSWORD", "alice-pw-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "berth login as alice: {}", text(&out));
    assert!(std::fs::read_to_string(cli_dir.join("login.json")).unwrap().contains("\"alice\""));

    // A directory user cannot give themselves a local password (it would
    // take over from the directory's), and the refusal changes nothing.
    let (s, v) = api(&n1, "alice:alice-pw-1", "PUT", "/api/v1/user/", Some(json!({"password": "a-local-password-9"})));
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("directory"), "{v}");
    assert_eq!(v2_login(&n1, "alice", "a-local-password-9").0, 401);

    // The usage log is written in batches.
    eventually("login_success with method ldap for alice in the usage log", Duration::from_secs(15), || {
        let (s, v) = api(&n1, &admin, "GET", "/api/v1/superuser/logs", None);
        assert_eq!(s, 200, "{v}");
        v["logs"].as_array().unwrap().iter().any(|l| l["kind"] == "login_success" && l["metadata"]["method"] == "ldap" && l["performer"]["name"] == "alice")
    });

    // A wrong password is refused, by docker login and on /v2/.
    let out = docker_login(docker(), &n1, "bob", "not-bobs-password");
    assert!(!out.status.success(), "wrong password accepted");
    assert_eq!(v2_login(&n1, "bob", "not-bobs-password").0, 401);
    let (_, v) = api(&n1, &admin, "GET", "/api/v1/superuser/users/", None);
    assert!(!v["users"].as_array().unwrap().iter().any(|u| u["username"] == "bob"), "a wrong password created bob: {v}");

    // A name with filter metacharacters is refused, and nothing about it
    // reaches the directory (no bind, no search).
    let before = slapd.operations().len();
    for name in ["*)(uid=*", "*", "alice)(uid=*"] {
        assert_eq!(v2_login(&n1, name, "alice-pw-1").0, 401, "{name}");
    }
    // slapd logs in order: once a search made after those refusals is in
    // its log, so is anything they asked.
    let marker = slapd.marker();
    eventually("slapd to log the marker search", Duration::from_secs(15), || slapd.operations().iter().any(|l| l.contains(&marker)));
    let after: Vec<String> = slapd.operations().into_iter().filter(|l| !l.contains(&marker)).collect();
    // The leader's sync pass (every 2 s) binds as the service account and
    // looks alice up meanwhile; nothing else may appear.
    let sync_pass = |l: &&String| {
        l.contains(&format!("BIND dn=\"{ROOT_DN}\""))
            || l.contains("filter=\"(&(objectClass=inetOrgPerson)(uid=alice))\"")
            || l.contains(&format!("(member=uid=alice,ou=people,{BASE}))"))
            || l.contains(" SRCH attr=")
    };
    let asked: Vec<&String> = after[before..].iter().filter(|l| !sync_pass(l)).collect();
    assert!(asked.is_empty(), "the directory was asked about a metacharacter name: {asked:?}");
    assert!(!after.iter().any(|l| l.contains("\\2a") || l.contains("uid=*") || l.contains("uid=\\2a")), "{after:?}");

    // alice leaves the developers group; the leader's next pass removes her
    // from acme/devs, and her push is refused.
    slapd.modify(&format!("dn: cn=developers,ou=groups,{BASE}\nchangetype: modify\ndelete: member\nmember: uid=alice,ou=people,{BASE}\n"));
    eventually("alice leaving acme/devs", Duration::from_secs(15), || members("devs").is_empty());
    run(docker().arg("tag").arg(&image).arg(format!("{n1}/acme/app:v2")));
    let out = docker().args(["push", &format!("{n1}/acme/app:v2")]).output().unwrap();
    assert!(!out.status.success(), "a push after leaving the group succeeded: {}", text(&out));

    // The directory hanging (slapd stopped with SIGSTOP: connections are
    // accepted, nothing answers): alice's login is refused with a 503 once
    // the 5 s timeout passes, not held open; the admin signs in at once.
    let pid = nix::unistd::Pid::from_raw(slapd.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let (status, took) = v2_login(&n1, "alice", "alice-pw-1");
    assert_eq!(status, 503, "an LDAP user with the directory hanging");
    assert!(took >= Duration::from_secs(4) && took < Duration::from_secs(8), "took {took:?}");
    let (status, took) = v2_login(&n1, "admin", &c.password);
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(3), "the admin waited for the directory: {took:?}");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();

    // The directory down: the local admin signs in; alice gets a clear 503
    // within the timeout, not a hang.
    slapd.stop();
    assert_eq!(v2_login(&n1, "admin", &c.password).0, 200);
    let out = docker_login(docker(), &n1, "admin", &c.password);
    assert!(out.status.success(), "admin docker login with slapd down: {}", text(&out));
    let (status, took) = v2_login(&n1, "alice", "alice-pw-1");
    assert_eq!(status, 503, "an LDAP user with the directory down");
    assert!(took < Duration::from_secs(7), "took {took:?}");
    let out = Command::new("curl").args(["-sS", "-u", "alice:alice-pw-1"]).arg(format!("http://{n1}/v2/")).output().unwrap();
    assert!(text(&out).contains("directory"), "{}", text(&out));
    // A refusal for unavailability is not a failed login: no throttling.
    assert_eq!(v2_login(&n1, "admin", &c.password).0, 200);
}
