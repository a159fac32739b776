//! The web console in a real browser: Debian's `chromium` driven over
//! WebDriver (`chromedriver`, spoken to directly with reqwest) against
//! three real `berth` processes in three regions, a real dockerd for the
//! robot's push and a webhook receiver started here.
//!
//! One browser session walks a person's path (sign in on node 1, make
//! `acme` and `acme/app`, a robot with write and its `docker login`
//! line, a push through node 2 outside the browser, the tag on node 3
//! with its digest and size, its security scan (the page against the
//! security API's own answer), its expiration, a webhook and its test, the
//! robot's push in the usage log with node and region, an OAuth
//! application with its secret shown once, reset and deleted), then the
//! security checks (cookie flags, CSRF, a refused action shown inline,
//! hostile strings shown as text), then the cluster page through a
//! leader SIGKILL. Screenshots at 1280×800 (and one at phone size) go
//! to `target/console-screenshots/`.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::daemons::{digest_in, docker_in, docker_login, run, start_dockerd};
use common::debian::{check_report, debian_layout, feed_v1, skopeo_push, vulnerability_rows};
use common::procs::*;
use common::receiver::start_receiver;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const T: Duration = Duration::from_secs(20);

/// `chromedriver` and one headless chromium session, closed when dropped.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    shots: PathBuf,
}

impl Browser {
    async fn start(shots: PathBuf) -> Browser {
        let port = free_port("127.0.0.1");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            // Its own process group: chromium and its helpers are killed
            // with it when the test ends, however it ends.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (apt-get install chromium chromium-driver)");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + T;
        while http.get(format!("{root}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800", "--no-first-run", "--disable-extensions"],
            },
        }}});
        let v: Value = http.post(format!("{root}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {v}")).to_string();
        std::fs::create_dir_all(&shots).unwrap();
        let b = Browser { driver, base: format!("{root}/session/{id}"), http, shots };
        b.size(1280, 800).await;
        b
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn size(&self, width: u32, height: u32) {
        // The window's outer size; make the viewport exactly width × height.
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
        let inner = self.js("return [window.innerWidth, window.innerHeight]", json!([])).await;
        let (iw, ih) = (inner[0].as_u64().unwrap() as u32, inner[1].as_u64().unwrap() as u32);
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": 2 * width - iw, "height": 2 * height - ih}))).await;
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn js(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// The elements matching `css`, now.
    async fn all(&self, css: &str) -> Vec<String> {
        let v = self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.as_array().map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(String::from)).collect()).unwrap_or_default()
    }

    async fn text_of(&self, el: &str) -> String {
        self.read_text(el).await.unwrap_or_default()
    }

    /// An element's text, or `None` once the page has replaced it (the
    /// cluster page renders anew every second).
    async fn read_text(&self, el: &str) -> Option<String> {
        self.call(reqwest::Method::GET, &format!("/element/{el}/text"), None).await.as_str().map(String::from)
    }

    /// Waits for an element matching `css` whose text satisfies `pred`.
    async fn wait(&self, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_text(css, what, pred).await.0
    }

    /// Waits as `wait` does, and returns the text it matched with the
    /// element: reading it again could find the element replaced.
    async fn wait_text(&self, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> (String, String) {
        let deadline = Instant::now() + T;
        loop {
            for el in self.all(css).await {
                if let Some(text) = self.read_text(&el).await.filter(|t| pred(t)) {
                    return (el, text);
                }
            }
            if Instant::now() > deadline {
                let body = self.js("return document.body.innerText", json!([])).await;
                let log = self.call(reqwest::Method::POST, "/se/log", Some(json!({"type": "browser"}))).await;
                panic!("{what}: no {css} in time; the page shows:\n{}\nconsole: {log}", body.as_str().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.wait_text(css, css, |_| true).await.1
    }

    async fn click(&self, css: &str) {
        let el = self.wait(css, css, |_| true).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/click"), Some(json!({}))).await;
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.wait(css, css, |_| true).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/clear"), Some(json!({}))).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/value"), Some(json!({"text": text}))).await;
    }

    /// Chooses `value` in a `<select>`, as a person picking from the list.
    async fn choose(&self, css: &str, value: &str) {
        self.wait(css, css, |_| true).await;
        let ok = self
            .js("const s = document.querySelector(arguments[0]); if (![...s.options].some(o => o.value === arguments[1])) return false; s.value = arguments[1]; s.dispatchEvent(new Event('change')); return true", json!([css, value]))
            .await;
        assert_eq!(ok, json!(true), "{css} offers {value}");
    }

    async fn attr(&self, el: &str, name: &str) -> Option<String> {
        self.call(reqwest::Method::GET, &format!("/element/{el}/attribute/{name}"), None).await.as_str().map(String::from)
    }

    /// Waits until nothing matches `css`.
    async fn gone(&self, css: &str, what: &str) {
        let deadline = Instant::now() + T;
        while !self.all(css).await.is_empty() {
            assert!(Instant::now() < deadline, "{what}: {css} still shown");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Accepts the page's `confirm()` question, once it is asked.
    async fn accept_dialog(&self) {
        let deadline = Instant::now() + T;
        loop {
            let v = self.http.post(format!("{}/alert/accept", self.base)).json(&json!({})).send().await.unwrap();
            if v.status().is_success() {
                return;
            }
            assert!(Instant::now() < deadline, "no confirmation was asked");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Presses keys as a person would, on whatever has the focus
    /// (`\u{E004}` is Tab, `\u{E007}` Enter).
    async fn keys(&self, text: &str) {
        let mut actions = Vec::new();
        for c in text.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.call(reqwest::Method::POST, "/actions", Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}))).await;
    }

    /// Presses Tab until the focused element matches `css` (at most 40 times).
    async fn tab_to(&self, css: &str) {
        for _ in 0..40 {
            if self.js("return document.activeElement.matches(arguments[0])", json!([css])).await == json!(true) {
                return;
            }
            self.keys("\u{E004}").await;
        }
        panic!("Tab never reached {css}");
    }

    async fn shot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
    }

    async fn cookie(&self, name: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/cookie/{name}"), None).await
    }

    async fn refresh(&self) {
        self.call(reqwest::Method::POST, "/refresh", Some(json!({}))).await;
    }

    /// Opens the console on `node` afresh, signed in as `user` (signing
    /// out whoever else the node's cookie names).
    async fn sign_in(&self, node: &str, user: &str, password: &str) {
        self.go(&format!("http://{node}/")).await;
        self.refresh().await;
        self.wait("body[data-ready=true]", "the console", |_| true).await;
        if !self.all(&format!("#nav [data-user='{user}']")).await.is_empty() {
            return;
        }
        if !self.all("#nav [data-action=sign-out]").await.is_empty() {
            self.click("#nav [data-action=sign-out]").await;
        }
        self.fill("form[data-form=sign-in] input[name=username]", user).await;
        self.fill("form[data-form=sign-in] input[name=password]", password).await;
        self.click("form[data-form=sign-in] button[type=submit]").await;
        self.wait(&format!("#nav [data-user='{user}']"), "signed in", |_| true).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// A GET of the admin API as the admin, its JSON body.
async fn admin_get(http: &reqwest::Client, url: String, pw: &str) -> Value {
    http.get(url).basic_auth("admin", Some(pw)).send().await.unwrap().json().await.unwrap()
}

fn shots_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("console-screenshots")
}

const HOSTILE: &str = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_runs_the_registry_from_the_browser() {
    berth_node::install_crypto_provider();
    let started = Instant::now();
    let (hook, hook_addr) = start_receiver().await;
    let mut c = tokio::task::block_in_place(|| {
        ProcCluster::start_configured(3, &[], |t| {
            t.insert("notifications".into(), toml::Value::Table(toml::toml! { allowed_networks = ["127.0.0.0/8"] }));
            t.insert("scan".into(), toml::Value::Table(toml::toml! { poll_interval_ms = 300 }));
        })
    });
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let pw = c.password.clone();
    let http = reqwest::Client::new();
    let b = Browser::start(shots_dir()).await;

    // Sign in through node 1; the page paints fast and the cookie is locked down.
    b.go(&format!("http://{n1}/")).await;
    b.wait("form[data-form=sign-in]", "the sign-in form", |_| true).await;
    let paint = b.js("const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null", json!([])).await;
    let fcp = paint.as_f64().expect("the browser reports a first contentful paint");
    assert!(fcp < 1000.0, "first contentful paint took {fcp} ms");
    b.shot("01-sign-in").await;
    b.sign_in(&n1, "admin", &pw).await;
    let cookie = b.cookie("berth_session").await;
    assert_eq!(cookie["httpOnly"], json!(true), "{cookie}");
    assert_eq!(cookie["sameSite"], json!("Lax"), "{cookie}");
    assert_eq!(cookie["secure"], json!(false), "plain HTTP: not Secure ({cookie})");
    let session = cookie["value"].as_str().unwrap().to_string();
    assert_eq!(b.js("return document.cookie", json!([])).await, json!(""), "the page's script cannot read the session");

    // Organization acme, repository app (with a hostile description).
    b.go(&format!("http://{n1}/#/organizations")).await;
    b.fill("form[data-form=create-org] input[name=name]", "acme").await;
    b.click("form[data-form=create-org] button[type=submit]").await;
    b.wait(".tabs a[data-tab=robots]", "the organization page", |_| true).await;
    b.go(&format!("http://{n1}/#/repositories")).await;
    b.click("details.panel summary").await;
    b.choose("form[data-form=create-repo] select[name=namespace]", "acme").await;
    b.fill("form[data-form=create-repo] input[name=repository]", "app").await;
    b.fill("form[data-form=create-repo] textarea[name=description]", &format!("The app. {HOSTILE}")).await;
    b.click("form[data-form=create-repo] button[type=submit]").await;
    let desc = b.text("[data-field=description]").await;
    assert!(desc.contains("<script>window.__xss=1</script>"), "the description shows as text: {desc}");
    b.shot("02-repository-information").await;

    // Robot acme+ci with write on acme/app; its credentials, copied from the page.
    b.go(&format!("http://{n1}/#/organization/acme/robots")).await;
    b.fill("form[data-form=create-robot] input[name=short]", "ci").await;
    b.fill("form[data-form=create-robot] textarea[name=description]", &format!("CI pushes {HOSTILE}")).await;
    b.choose("form[data-form=create-robot] select[name=repo]", "app").await;
    b.choose("form[data-form=create-robot] select[name=role]", "write").await;
    b.click("form[data-form=create-robot] button[type=submit]").await;
    let login_line = b.text("[data-credentials='acme+ci'] pre[data-copy='docker login']").await;
    let secret = login_line.split("-p '").nth(1).and_then(|s| s.strip_suffix('\'')).unwrap_or_else(|| panic!("a docker login line: {login_line}")).to_string();
    assert!(login_line.starts_with(&format!("docker login {n1} -u 'acme+ci'")), "{login_line}");
    let k8s = b.text("[data-credentials='acme+ci'] pre[data-copy='Kubernetes pull secret']").await;
    assert!(k8s.contains("kubernetes.io/dockerconfigjson"), "{k8s}");
    let robot_desc = b.text("tr[data-robot='acme+ci'] td.desc").await;
    assert!(robot_desc.contains("<script>"), "robot description as text: {robot_desc}");
    b.shot("03-organization-robot-credentials").await;

    // Outside the browser: docker login with them and push through node 2.
    let work = c.root.path().join("work");
    std::fs::create_dir_all(work.join("rootfs")).unwrap();
    let (_dockerd, docker_host) = tokio::task::block_in_place(|| start_dockerd(c.root.path()));
    let docker_config = work.join("docker-config");
    let docker = || docker_in(&docker_host, &docker_config);
    let pushed = tokio::task::block_in_place(|| {
        let out = docker_login(docker(), &n2, "acme+ci", &secret);
        assert!(out.status.success(), "docker login with the copied credentials: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(work.join("rootfs/hello.txt"), "from the console test").unwrap();
        let tar = work.join("rootfs.tar");
        run(Command::new("tar").arg("-C").arg(work.join("rootfs")).arg("-cf").arg(&tar).arg("."));
        let image = format!("{n2}/acme/app:v1");
        run(docker().arg("import").arg(&tar).arg(&image));
        digest_in(&run(docker().args(["push", &image])))
    });

    // Back in the browser, on node 3, with the cookie node 1 issued.
    b.go(&format!("http://{n3}/console/none")).await;
    b.call(
        reqwest::Method::POST,
        "/cookie",
        Some(json!({"cookie": {"name": "berth_session", "value": session, "path": "/", "httpOnly": true, "sameSite": "Lax"}})),
    )
    .await;
    b.go(&format!("http://{n3}/#/repository/acme/app/tags")).await;
    b.wait("#nav [data-user=admin]", "node 3 honours node 1's session", |_| true).await;
    let row = "tr[data-tag=v1]";
    let digest = b.text(&format!("{row} [data-field=digest]")).await;
    assert_eq!(digest, pushed, "the tag's digest on node 3");
    let size = b.text(&format!("{row} [data-field=size]")).await;
    assert!(size.ends_with("B") && size != "—", "a size: {size}");
    assert!(b.text(&format!("{row} [data-field=expires]")).await.starts_with("Never"));
    b.shot("04-repository-tags").await;

    // Its security tab, from the tag list's security column: the page
    // shows what the security API says for that manifest, once a node
    // has scanned it (the nodes run the scan worker; the image is a
    // plain tar with no package database).
    let summary = b.wait(&format!("{row} [data-field=security] a"), "the tag's security summary", |_| true).await;
    assert_eq!(b.attr(&summary, "href").await.unwrap(), format!("#/repository/acme/app/security/{pushed}"), "the summary links to the tag's scan");
    b.click(&format!("{row} [data-field=security] a")).await;
    b.wait(".tabs a[data-tab=security][aria-current=page]", "the security tab", |_| true).await;
    assert_eq!(b.text("[data-field=scan-digest]").await, pushed, "the scan of the tag's manifest");
    let scan_status = b.wait("[data-field=scan-status]", "the scan leaves the queue without a reload", |t| !t.is_empty() && t != "queued").await;
    let scan_status = b.text_of(&scan_status).await;
    let report: Value = admin_get(&http, format!("http://{n3}/api/v1/repository/acme/app/manifest/{pushed}/security?vulnerabilities=true"), &pw).await;
    assert_eq!(json!(scan_status), report["status"], "the page shows the API's status: {report}");
    let features = report["data"]["Layer"]["Features"].as_array().cloned().unwrap_or_default();
    assert_eq!(b.all("tr[data-package]").await.len(), features.len(), "every package the API lists: {report}");
    let vulns: usize = features.iter().map(|f| f["Vulnerabilities"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(b.all("tr[data-vulnerability]").await.len(), vulns, "every vulnerability the API lists: {report}");
    if scan_status == "scanned" && features.is_empty() {
        let said = b.text("[data-field=scan-summary]").await;
        assert!(said.starts_with("No packages found"), "a scan with no package database says so: {said}");
        assert_eq!(b.text("[data-field=no-vulnerabilities]").await, "No known vulnerabilities.");
    }
    b.shot("security").await;
    // The tag list's summary agrees once the scan is done.
    b.go(&format!("http://{n3}/#/repository/acme/app/tags")).await;
    let cell = b.wait(&format!("{row} [data-field=security]"), "the tag's scan status in the list", |_| true).await;
    assert_eq!(b.attr(&cell, "data-status").await.unwrap(), scan_status, "the tag list's summary");

    // A scanned image with real findings: this machine's Debian packages
    // (common::debian) pushed with skopeo into acme/debian through node 2,
    // matched against a Debian tracker feed imported through node 1. Its
    // Security tab groups the findings by severity, worst first, each with
    // the version that fixes it, exactly as the security API lists them.
    let made = http
        .post(format!("http://{n2}/api/v1/repository"))
        .basic_auth("admin", Some(&pw))
        .json(&json!({"namespace": "acme", "repository": "debian", "visibility": "private"}))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.text().await.unwrap());
    let fed =
        http.post(format!("http://{n1}/api/v1/superuser/scanner/feeds?name=debian")).basic_auth("admin", Some(&pw)).json(&feed_v1()).send().await.unwrap();
    assert_eq!(fed.status(), 201, "{}", fed.text().await.unwrap());
    let deb = c.root.path().join("debian");
    let layer = debian_layout(&deb);
    let deb_digest = tokio::task::block_in_place(|| skopeo_push(&deb, &n2, &pw, "acme/debian:bookworm"));
    // Pushed through node 2: node 3 shows it once it has applied the tag.
    common::eventually(T, "acme/debian:bookworm on node 3", || async {
        let tags = admin_get(&http, format!("http://{n3}/api/v1/repository/acme/debian/tag/?onlyActiveTags=true"), &pw).await;
        tags["tags"].as_array().is_some_and(|t| t.iter().any(|x| x["name"] == json!("bookworm") && x["manifest_digest"] == json!(deb_digest))).then_some(())
    })
    .await;
    b.go(&format!("http://{n3}/#/repository/acme/debian/tags")).await;
    b.click("tr[data-tag=bookworm] [data-field=security] a").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = b.text("[data-field=scan-status]").await;
        if st == "scanned" {
            break;
        }
        assert!(st == "queued" && Instant::now() < deadline, "the Debian image's scan: {st}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report: Value = admin_get(&http, format!("http://{n3}/api/v1/repository/acme/debian/manifest/{deb_digest}/security?vulnerabilities=true"), &pw).await;
    check_report(&report, &layer, false);
    let rows = vulnerability_rows(report["data"]["Layer"]["Features"].as_array().unwrap());
    assert!(rows.iter().any(|r| !r.2.is_empty()), "a finding with a fixed-in version: {rows:?}");
    const ORDER: [&str; 6] = ["Critical", "High", "Medium", "Low", "Negligible", "Unknown"];
    let mut want_sections: Vec<&str> = ORDER.iter().copied().filter(|sev| rows.iter().any(|r| r.3 == *sev)).collect();
    assert!(want_sections.len() >= 2, "findings of more than one severity: {rows:?}");
    let sections = b.js("return [...document.querySelectorAll('section.severity')].map(s => s.dataset.severity)", json!([])).await;
    assert_eq!(sections, json!(want_sections), "one section per severity, worst first");
    let mut want: Vec<Value> =
        rows.iter().map(|(pkg, cve, fixed, sev)| json!([sev, cve, pkg, if fixed.is_empty() { "no fix yet" } else { fixed.as_str() }])).collect();
    let mut shown = b
        .js(
            "return [...document.querySelectorAll('section.severity tr[data-vulnerability]')].map(tr => [tr.closest('section').dataset.severity, tr.dataset.vulnerability, tr.cells[1].textContent, tr.querySelector('[data-field=fixed-by]').textContent])",
            json!([]),
        )
        .await
        .as_array()
        .cloned()
        .unwrap();
    want.sort_by_key(|v| v.to_string());
    shown.sort_by_key(|v| v.to_string());
    assert_eq!(shown, want, "every finding in its severity's section with its fixed-in version");
    for sev in want_sections.drain(..) {
        let n = rows.iter().filter(|r| r.3 == sev).count();
        let head = b.text(&format!("section[data-severity='{sev}'] h3")).await;
        assert_eq!(head, format!("{sev} ({n})"), "the section's count");
    }
    let (_, cve, _, _) = rows.iter().find(|r| !r.2.is_empty()).unwrap();
    let link = b.wait(&format!("tr[data-vulnerability='{cve}'] a"), "the advisory's link", |t| t == cve).await;
    assert_eq!(b.attr(&link, "href").await.unwrap(), format!("https://security-tracker.debian.org/tracker/{cve}"));
    b.shot("security-findings").await;
    b.go(&format!("http://{n3}/#/repository/acme/app/tags")).await;
    b.wait(&format!("{row} [data-field=digest]"), "back to acme/app's tags", |_| true).await;

    // Its expiration, three days from now.
    b.click(&format!("{row} [data-action=change-expiration]")).await;
    let local = b
        .js("const d = new Date(Date.now() + 3*86400e3); d.setSeconds(0, 0); return [new Date(d - d.getTimezoneOffset()*60e3).toISOString().slice(0,16), d.getTime()/1000]", json!([]))
        .await;
    b.js("const i = document.querySelector('[data-expiry-input=v1]'); i.value = arguments[0]; i.dispatchEvent(new Event('input'))", json!([local[0]])).await;
    b.click(&format!("{row} [data-action=set-expiration]")).await;
    b.wait(&format!("{row} [data-field=expires]"), "the new expiration", |t| !t.starts_with("Never")).await;
    let tags: Value = admin_get(&http, format!("http://{n1}/api/v1/repository/acme/app/tag/?onlyActiveTags=true"), &pw).await;
    assert_eq!(tags["tags"][0]["expiration"].as_f64(), local[1].as_f64(), "the API has the expiration: {tags}");
    b.shot("05-repository-tag-expiration").await;

    // Where the image's blobs are held: with min_copies 2 the push was
    // acknowledged only once every blob was on at least 2 nodes.
    b.click(&format!("{row} [data-action=show-placement]")).await;
    b.wait(&format!("{row} tr[data-blob] [data-field=holders]"), "the blobs' holders", |_| true).await;
    let cells = b.all(&format!("{row} tr[data-blob] [data-field=holders]")).await;
    assert!(cells.len() >= 2, "a config and at least one layer: {} rows", cells.len());
    for cell in &cells {
        let count: usize = b.attr(cell, "data-count").await.unwrap().parse().unwrap();
        let text = b.text_of(cell).await;
        assert!(count >= 2, "each blob on at least 2 nodes: {text}");
        assert!(REGIONS.iter().filter(|r| text.contains(*r)).count() >= 2, "holders named with their regions: {text}");
    }
    b.shot("05b-repository-tag-placement").await;
    let placement: Value = admin_get(&http, format!("http://{n2}/api/v1/repository/acme/app/manifest/{pushed}/placement"), &pw).await;
    let blobs = placement["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), cells.len(), "the page shows every blob: {placement}");
    assert_eq!(blobs.iter().filter(|x| x["kind"] == json!("config")).count(), 1, "{placement}");
    assert!(blobs.iter().all(|x| x["size"].as_u64().unwrap() > 0), "{placement}");
    let robot_asks =
        http.get(format!("http://{n2}/api/v1/repository/acme/app/manifest/{pushed}/placement")).basic_auth("acme+ci", Some(&secret)).send().await.unwrap();
    assert_eq!(robot_asks.status(), 403, "placement is for administrators, not a robot with write");
    let bad = http.get(format!("http://{n2}/api/v1/repository/acme/app/manifest/sha256:nothex/placement")).basic_auth("admin", Some(&pw)).send().await.unwrap();
    assert_eq!(bad.status(), 400, "a malformed digest");

    // Delete the tag from the page: it leaves the tags, shows in the
    // history, and a restore brings it back.
    let missing = http.delete(format!("http://{n2}/api/v1/repository/acme/app/tag/nosuch")).basic_auth("admin", Some(&pw)).send().await.unwrap();
    assert_eq!(missing.status(), 404, "deleting a tag that does not exist");
    b.click(&format!("{row} [data-action=delete-tag]")).await;
    b.accept_dialog().await;
    b.gone(row, "the deleted tag").await;
    b.wait(".notice.ok", "the deletion is confirmed", |t| t.contains("Deleted tag v1")).await;
    b.wait("tr[data-history-tag=v1] [data-action=restore-tag]", "the deleted tag in the history", |_| true).await;
    let active: Value = admin_get(&http, format!("http://{n2}/api/v1/repository/acme/app/tag/?onlyActiveTags=true"), &pw).await;
    assert_eq!(active["tags"], json!([]), "no live tag after the delete: {active}");
    let logged: Value = admin_get(&http, format!("http://{n2}/api/v1/repository/acme/app/logs?kind=delete_tag"), &pw).await;
    assert!(logged["logs"].as_array().unwrap().iter().any(|l| l["metadata"]["tag"] == json!("v1") && l["performer"]["name"] == json!("admin")), "{logged}");
    b.shot("05c-repository-tag-deleted").await;
    b.click("tr[data-history-tag=v1] [data-action=restore-tag]").await;
    let back = b.wait(&format!("{row} [data-field=digest]"), "the restored tag", |_| true).await;
    assert_eq!(b.text_of(&back).await, pushed, "restored to the pushed digest");

    // A webhook notification, and its test reaches the receiver.
    b.go(&format!("http://{n3}/#/repository/acme/app/settings")).await;
    let title = format!("hook {HOSTILE}");
    b.fill("form[data-form=add-notification] input[name=title]", &title).await;
    b.fill("form[data-form=add-notification] input[name=target]", &format!("http://{hook_addr}/hook")).await;
    b.click("form[data-form=add-notification] button[type=submit]").await;
    let shown = b.wait("tr[data-notification] td", "the notification's title", |t| t.starts_with("hook ")).await;
    assert_eq!(b.text_of(&shown).await, title, "the title shows as text");
    b.click("tr[data-notification] [data-action=test-notification]").await;
    b.wait("tr[data-notification] .notice.ok", "the test was sent", |t| t.contains("Test sent")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.jsons().is_empty() {
        assert!(Instant::now() < deadline, "the receiver never got the test");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = hook.jsons();
    assert!(got.iter().any(|g| g["repository"] == json!("acme/app")), "{got:?}");
    b.shot("06-repository-settings").await;

    // The usage log shows the robot's push with node and region.
    let deadline = Instant::now() + T;
    loop {
        b.go(&format!("http://{n3}/#/repository/acme/app/logs")).await;
        b.refresh().await;
        b.wait(".chart", "the usage page", |_| true).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut found = false;
        for el in b.all("tr[data-log=push_repo]").await {
            let t = b.text_of(&el).await;
            if t.contains("acme+ci (robot)") && t.contains(REGIONS[1]) {
                found = true;
            }
        }
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "no push by acme+ci through node 2 in the usage log");
    }
    let node_cell = b.text("tr[data-log=push_repo] [data-field=node]").await;
    assert_eq!(node_cell, "2", "pushed through node 2");
    b.shot("07-repository-usage-logs").await;
    b.go(&format!("http://{n3}/#/organization/acme/teams")).await;
    b.wait("section.tabbody", "teams", |_| true).await;
    b.shot("08-organization-teams").await;

    // An OAuth application made from the page: its client secret is shown
    // once (40 characters), its client id is in the list, a reset shows a
    // new secret, and its description shows as text.
    b.click(".tabs a[data-tab=applications]").await;
    b.fill("form[data-form=create-application] input[name=name]", "deploy dashboard").await;
    b.fill("form[data-form=create-application] input[name=redirect_uri]", "https://dash.example/callback").await;
    b.fill("form[data-form=create-application] input[name=application_uri]", "https://dash.example/").await;
    b.fill("form[data-form=create-application] textarea[name=description]", &format!("Deploys {HOSTILE}")).await;
    b.click("form[data-form=create-application] button[type=submit]").await;
    let shown = b.wait("[data-client-secret]", "the new application's secret", |_| true).await;
    let client_id = b.attr(&shown, "data-client-secret").await.unwrap();
    let first = b.text("[data-client-secret] pre[data-copy='client secret']").await;
    assert_eq!(first.len(), 40, "a 40-character client secret: {first}");
    assert_eq!(b.text("[data-client-secret] pre[data-copy='client id']").await, client_id);
    let listed = b.text(&format!("tr[data-application='{client_id}'] [data-field=client-id]")).await;
    assert_eq!(listed, client_id, "the client id in the list");
    let apps: Value =
        http.get(format!("http://{n3}/api/v1/organization/acme/applications")).basic_auth("admin", Some(&pw)).send().await.unwrap().json().await.unwrap();
    let app = apps["applications"].as_array().unwrap().iter().find(|a| a["client_id"] == json!(client_id)).unwrap_or_else(|| panic!("{apps}"));
    assert_eq!(app["client_secret"], Value::Null, "the list never carries the secret: {apps}");
    assert_eq!(app["redirect_uri"], json!("https://dash.example/callback"), "{apps}");
    let desc = b.text(&format!("tr[data-application='{client_id}'] [data-field=description]")).await;
    assert!(desc.contains("<script>"), "the description as text: {desc}");
    b.shot("oauth-apps").await;
    b.click(&format!("tr[data-application='{client_id}'] [data-action=reset-secret]")).await;
    b.accept_dialog().await;
    let again = b.wait("[data-client-secret] pre[data-copy='client secret']", "a new secret after the reset", |t| t.len() == 40 && t != first).await;
    let second = b.text_of(&again).await;
    assert_ne!(first, second);
    // Edited from the page: the new name in the list, the API has the new
    // fields, and a hostile name shows as text.
    b.click(&format!("tr[data-application='{client_id}'] [data-action=edit-application]")).await;
    let form = "form[data-form=edit-application]";
    assert_eq!(
        b.js(&format!("return document.querySelector('{form} input[name=name]').value"), json!([])).await,
        json!("deploy dashboard"),
        "the form starts from the application"
    );
    let renamed = format!("release board {HOSTILE}");
    b.fill(&format!("{form} input[name=name]"), &renamed).await;
    b.fill(&format!("{form} input[name=redirect_uri]"), "https://board.example/callback").await;
    b.fill(&format!("{form} textarea[name=description]"), "Releases, now").await;
    b.shot("oauth-app-edit").await;
    b.click(&format!("{form} button[type=submit]")).await;
    b.wait(".notice.ok", "the edit is saved", |t| t.starts_with("Saved application release board")).await;
    let name = b.wait(&format!("tr[data-application='{client_id}'] th"), "the new name in the list", |t| t.starts_with("release board")).await;
    assert_eq!(b.text_of(&name).await, renamed, "the new name, as text");
    b.gone(form, "the edit form after saving").await;
    let edited: Value = admin_get(&http, format!("http://{n1}/api/v1/organization/acme/applications/{client_id}"), &pw).await;
    assert_eq!(
        (&edited["name"], &edited["redirect_uri"], &edited["description"]),
        (&json!(renamed), &json!("https://board.example/callback"), &json!("Releases, now")),
        "{edited}"
    );
    assert_eq!(edited["client_id"], json!(client_id), "the same application");
    // A token the application holds (generated for the admin, as Quay's
    // Generate Token tab does), listed on the page and revoked from it:
    // gone from the list, and refused from then on.
    let tokens_api = format!("http://{n2}/api/v1/organization/acme/applications/{client_id}");
    let g: Value = http
        .post(format!("{tokens_api}/generatetoken"))
        .basic_auth("admin", Some(&pw))
        .json(&json!({"scope": "repo:read"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (uuid, access) = (g["uuid"].as_str().unwrap_or_else(|| panic!("{g}")).to_string(), g["access_token"].as_str().unwrap().to_string());
    let with_token = || http.get(format!("http://{n3}/api/v1/repository/acme/app")).bearer_auth(&access).send();
    assert_eq!(with_token().await.unwrap().status(), 200, "the application's token reads acme/app");
    b.click(&format!("tr[data-application='{client_id}'] [data-action=show-tokens]")).await;
    let token_row = format!("[data-tokens-of='{client_id}'] tr[data-token='{uuid}']");
    assert_eq!(b.text(&format!("{token_row} [data-field=user]")).await, "admin");
    assert_eq!(b.text(&format!("{token_row} [data-field=scopes]")).await, "repo:read");
    b.shot("oauth-app-tokens").await;
    b.click(&format!("{token_row} [data-action=revoke-token]")).await;
    b.accept_dialog().await;
    b.gone(&token_row, "the revoked token").await;
    b.wait(".notice.ok", "the revocation is confirmed", |t| t == "Revoked the token of admin.").await;
    b.wait(&format!("[data-tokens-of='{client_id}'] p.empty"), "no token left", |t| t == "This application holds no tokens.").await;
    let left: Value = admin_get(&http, format!("{tokens_api}/tokens"), &pw).await;
    assert_eq!(left["tokens"], json!([]), "{left}");
    for node in [&n1, &n2, &n3] {
        let node = node.to_string();
        common::eventually(T, "the revoked token refused", || async {
            (http.get(format!("http://{node}/api/v1/repository/acme/app")).bearer_auth(&access).send().await.unwrap().status() == 401).then_some(())
        })
        .await;
    }
    b.click(&format!("tr[data-application='{client_id}'] [data-action=delete-application]")).await;
    b.accept_dialog().await;
    b.gone(&format!("tr[data-application='{client_id}']"), "the deleted application").await;
    let gone = http.get(format!("http://{n3}/api/v1/organization/acme/applications/{client_id}")).basic_auth("admin", Some(&pw)).send().await.unwrap();
    assert_eq!(gone.status(), 404, "the application is deleted");
    b.go(&format!("http://{n3}/#/account")).await;
    b.wait("form[data-form=create-token]", "the account page", |_| true).await;
    b.shot("09-account").await;
    b.go(&format!("http://{n3}/#/repositories")).await;
    b.wait("tr[data-repo='acme/app']", "the repository list", |_| true).await;
    b.shot("10-repositories").await;
    b.size(390, 844).await;
    b.shot("11-repositories-phone").await;
    b.size(1280, 800).await;
    assert_eq!(b.js("return window.__xss === undefined", json!([])).await, json!(true), "no hostile string ran");

    // CSRF: the session cookie alone cannot change anything.
    let cross = http
        .post(format!("http://{n3}/api/v1/organization/"))
        .header("Cookie", format!("berth_session={session}"))
        .header("Origin", "http://evil.example")
        .json(&json!({"name": "evil"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403, "a cross-site POST without the CSRF token");
    let wrong = http
        .post(format!("http://{n3}/api/v1/organization/"))
        .header("Cookie", format!("berth_session={session}"))
        .header("X-Berth-CSRF", "0".repeat(64))
        .json(&json!({"name": "evil"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403, "a wrong CSRF token");
    let org = http.get(format!("http://{n1}/api/v1/organization/evil")).basic_auth("admin", Some(&pw)).send().await.unwrap();
    assert_eq!(org.status(), 404, "nothing was created");
    // /v2 never takes the cookie.
    let v2 = http.get(format!("http://{n3}/v2/acme/app/tags/list")).header("Cookie", format!("berth_session={session}")).send().await.unwrap();
    assert_eq!(v2.status(), 401, "the registry API ignores the console cookie");

    // A user without the right: the API refuses, the page says so inline.
    let made = http
        .post(format!("http://{n1}/api/v1/superuser/users/"))
        .basic_auth("admin", Some(&pw))
        .json(&json!({"username": "bob", "password": "bob-password-1"}))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.text().await.unwrap());
    b.click("#nav [data-action=sign-out]").await;
    b.wait("form[data-form=sign-in]", "signed out", |_| true).await;
    assert_eq!(b.cookie("berth_session").await.get("value").and_then(Value::as_str).unwrap_or(""), "", "sign-out clears the cookie");
    b.sign_in(&n3, "bob", "bob-password-1").await;
    assert!(b.all("#nav a[href='#/cluster']").await.is_empty(), "no cluster link for bob");
    b.go(&format!("http://{n3}/#/repositories")).await;
    b.click("details.panel summary").await;
    // A page tampered with to offer acme: the API still refuses.
    b.js("document.querySelector('form[data-form=create-repo] select[name=namespace]').append(new Option('acme', 'acme'))", json!([])).await;
    b.choose("form[data-form=create-repo] select[name=namespace]", "acme").await;
    b.fill("form[data-form=create-repo] input[name=repository]", "sneaky").await;
    b.click("form[data-form=create-repo] button[type=submit]").await;
    let refusal = b.text("form[data-form=create-repo] .notice.error").await;
    assert!(refusal.contains("bob"), "the refusal is shown: {refusal}");
    b.go(&format!("http://{n3}/#/cluster")).await;
    b.wait(".notice.error", "the cluster page refused", |t| t.contains("not a cluster administrator")).await;
    b.shot("12-refused").await;
    // A new password ends bob's session on every node; robots and wrong
    // passwords get no session at all.
    let bobs = b.cookie("berth_session").await["value"].as_str().unwrap().to_string();
    let who = |node: String, cookie: String| {
        let http = http.clone();
        async move { http.get(format!("http://{node}/api/v1/session")).header("Cookie", format!("berth_session={cookie}")).send().await.unwrap().status() }
    };
    assert_eq!(who(n1.clone(), bobs.clone()).await, 200, "node 1 honours node 3's session");
    let changed = http
        .put(format!("http://{n1}/api/v1/superuser/users/bob"))
        .basic_auth("admin", Some(&pw))
        .json(&json!({"password": "bob-password-2"}))
        .send()
        .await
        .unwrap();
    assert!(changed.status().is_success());
    for node in [&n1, &n2, &n3] {
        common::eventually(T, "the old session refused", || async { (who(node.to_string(), bobs.clone()).await == 401).then_some(()) }).await;
    }
    for (user, password) in [("acme+ci", secret.as_str()), ("admin", "wrong password")] {
        let r = http.post(format!("http://{n2}/api/v1/session")).json(&json!({"username": user, "password": password})).send().await.unwrap();
        assert_eq!(r.status(), 401, "{user}");
        assert!(r.headers().get("set-cookie").is_none(), "{user}: no cookie");
    }
    let repo = http.get(format!("http://{n1}/api/v1/repository/acme/sneaky")).basic_auth("admin", Some(&pw)).send().await.unwrap();
    assert_eq!(repo.status(), 404, "nothing was created for bob");

    // The cluster page: 3 nodes in 3 regions, the RTT matrix, a failover live.
    let leader = status(&c.dirs[0]).and_then(|s| s["leader"].as_u64()).expect("a leader");
    let page = if leader == 3 { n1.clone() } else { n3.clone() };

    // The keyboard only: skip link, sign in, open acme/app.
    b.go(&format!("http://{page}/")).await;
    b.refresh().await;
    b.wait("form[data-form=sign-in]", "bob's ended session shows the sign-in form", |_| true).await;
    b.js("document.activeElement.blur(); window.scrollTo(0, 0)", json!([])).await;
    b.tab_to("a.skip").await;
    b.keys("\u{E007}").await;
    assert_eq!(
        b.js("return [document.activeElement.id, location.hash]", json!([])).await,
        json!(["main", "#/signin"]),
        "the skip link moves focus to the content"
    );
    b.tab_to("form[data-form=sign-in] input[name=username]").await;
    b.keys("admin\u{E004}").await;
    b.keys(&pw).await;
    b.keys("\u{E007}").await;
    b.wait("#nav [data-user=admin]", "signed in by keyboard", |_| true).await;
    b.tab_to("a[href='#/repository/acme/app']").await;
    b.keys("\u{E007}").await;
    b.wait("header.pagehead h1", "the repository opened by keyboard", |t| t == "acme/app").await;
    b.go(&format!("http://{page}/#/cluster")).await;
    b.wait(".node[data-leader=true]", "the leader", |_| true).await;
    assert_eq!(b.all(".region").await.len(), 3);
    assert_eq!(b.all(".node").await.len(), 3);
    for r in REGIONS {
        b.wait(&format!(".region[data-region='{r}'] .node"), r, |_| true).await;
    }
    b.wait("td[data-rtt='1-2']", "an RTT", |t| t.ends_with(" ms")).await;
    b.wait("td[data-rtt='3-1']", "an RTT", |t| t.ends_with(" ms")).await;
    // Per node: the blobs it holds (the pushed image is on at least 2
    // nodes) and its replication backlog.
    let cluster: Value = admin_get(&http, format!("http://{page}/api/v1/cluster/status"), &pw).await;
    let node_of =
        |id: u64| cluster["nodes"].as_array().unwrap().iter().find(|x| x["id"] == json!(id)).cloned().unwrap_or_else(|| panic!("node {id}: {cluster}"));
    let mut holding = 0;
    for n in 1..=3 {
        // Its disk, as the node reports it: the page's numbers are the API's.
        // The cells are read in one script, from one rendering of the page.
        b.wait(&format!(".node[data-node='{n}'] [data-field=disk-use]"), "a node's disk", |t| t.contains(" used of ")).await;
        let cells = b
            .js(
                "const n = document.querySelector(`.node[data-node='${arguments[0]}']`);
                 const f = (x) => n.querySelector(`[data-field=${x}]`);
                 return [f('disk-use').dataset.total, f('disk-use').dataset.used, f('blobs-held').textContent, f('backlog').textContent]",
                json!([n]),
            )
            .await;
        let cell = |i: usize| cells[i].as_str().unwrap_or_else(|| panic!("node {n}'s cells: {cells}"));
        let total = node_of(n)["disk"]["total_bytes"].as_u64().unwrap_or_else(|| panic!("node {n} reports its disk: {cluster}"));
        assert!(total > 0);
        assert_eq!(cell(0), total.to_string(), "node {n}'s disk size");
        let used: u64 = cell(1).parse().unwrap_or_else(|_| panic!("node {n}'s cells: {cells}"));
        assert!(used > 0 && used <= total, "node {n}: {used} of {total}");
        let held = cell(2);
        let count: u64 = held.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("node {n} blobs held: {held}"));
        holding += usize::from(count >= 2);
        let backlog = cell(3);
        assert!(backlog.ends_with(')') && backlog.contains(" blobs ("), "node {n} backlog: {backlog}");
    }
    assert!(holding >= 2, "the image's config and layer on at least 2 nodes");
    b.shot("13-cluster").await;

    // The region drill from the page. A region the cluster does not have
    // (a tampered page): the node refuses it as `berth drill region` does.
    let page_id: u64 = if leader == 3 { 1 } else { 3 };
    let target = 6 - leader - page_id;
    let (target_addr, target_region) = (c.http[target as usize - 1].clone(), node_of(target)["region"].as_str().unwrap().to_string());
    b.click("details[data-panel=drill] summary").await;
    b.js("document.querySelector('[data-field=drill-region]').append(new Option('mars', 'mars'))", json!([])).await;
    b.choose("[data-field=drill-region]", "mars").await;
    b.click("[data-action=drill-region]").await;
    b.accept_dialog().await;
    b.wait("details[data-panel=drill] .notice.error", "the refused drill", |t| t.contains("region \"mars\" has no nodes")).await;
    // The region of the node that is neither the leader nor this page's,
    // for a minute (healed sooner from the page): the node is cut off, so
    // it reports no disk and writes through it are refused, while writes
    // through the rest go on.
    let probe = |node: String| {
        let (http, pw) = (http.clone(), pw.clone());
        async move {
            let r = http.post(format!("http://{node}/api/v1/drill/probe")).basic_auth("admin", Some(&pw)).timeout(Duration::from_secs(30)).send().await;
            r.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    };
    b.choose("[data-field=drill-region]", &target_region).await;
    b.fill("[data-field=drill-seconds]", "60").await;
    b.click("[data-action=drill-region]").await;
    b.accept_dialog().await;
    b.wait(&format!("[data-drilled='{target_region}'] [data-isolated='{target}']"), "the cut-off node", |_| true).await;
    assert_eq!(b.all("[data-isolated]").await.len(), 1, "only the region's node is cut off");
    b.wait(&format!(".node[data-node='{target}'] [data-field=disk-use]"), "the cut-off node's disk", |t| t == "not reported").await;
    let refused = probe(target_addr.clone()).await;
    assert!(refused == 0 || refused >= 500, "a write through the cut-off node is refused: {refused}");
    assert_eq!(probe(page.clone()).await, 204, "writes through the rest go on");
    b.shot("15-cluster-region-drill").await;
    b.click("[data-action=heal-region]").await;
    b.wait("details[data-panel=drill] .notice.ok", "the heal", |t| t.starts_with(&format!("Region {target_region} healed"))).await;
    common::eventually(Duration::from_secs(30), "writes through the healed node", || async { (probe(target_addr.clone()).await == 204).then_some(()) }).await;
    b.wait(&format!(".node[data-node='{target}'] [data-field=disk-use]"), "the healed node's disk", |t| t.contains(" used of ")).await;
    // The healed drill is reported: the page lists it with the poll, and
    // another node's API lists the same report (it is kept in the metadata).
    let row = format!("[data-panel=drill-reports] tr[data-drill-report=region][data-target='{target_region}']");
    b.wait(&format!("{row} [data-field=target]"), "the drill in the reports", |t| t == target_region).await;
    assert_eq!(b.text(&format!("{row} [data-field=kind]")).await, "region");
    assert_eq!(b.text(&format!("{row} [data-field=by]")).await, "admin");
    let figures = b.text(&format!("{row} [data-field=figures]")).await;
    assert!(figures.contains("ended by a heal") && figures.contains("from the console"), "{figures}");
    let reports = common::eventually(T, "the report on the drilled node", || async {
        let r = admin_get(&http, format!("http://{target_addr}/api/v1/drill/reports"), &pw).await;
        r.as_array().is_some_and(|a| !a.is_empty()).then_some(r)
    })
    .await;
    let listed = reports.as_array().unwrap_or_else(|| panic!("{reports}"));
    assert_eq!(listed.len(), 1, "the refused drill is not reported: {reports:#}");
    assert_eq!((&listed[0]["kind"], &listed[0]["target"], &listed[0]["by"]), (&json!("region"), &json!(target_region), &json!("admin")));
    assert_eq!(listed[0]["nodes"], json!([target]), "the nodes cut off");
    assert_eq!(listed[0]["figures"]["ended_by"], "healed");
    assert!(listed[0]["started_ms"].as_u64().unwrap() <= listed[0]["ended_ms"].as_u64().unwrap(), "{reports:#}");
    // A bad report is refused whole: 400 with the error JSON, nothing kept.
    let bad = http
        .post(format!("http://{page}/api/v1/drill/reports"))
        .basic_auth("admin", Some(&pw))
        .json(&json!({"kind": "tornado", "started_ms": 1, "ended_ms": 2, "target": HOSTILE}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("kind")), "{body}");
    // A report whose fields are markup is shown as text, like everything else.
    let hostile = json!({"kind": "region", "started_ms": 1, "ended_ms": 2, "target": HOSTILE, "figures": {"source": HOSTILE, "ended_by": HOSTILE}});
    let posted = http.post(format!("http://{page}/api/v1/drill/reports")).basic_auth("admin", Some(&pw)).json(&hostile).send().await.unwrap();
    assert_eq!(posted.status(), reqwest::StatusCode::CREATED);
    b.wait("[data-panel=drill-reports] tr[data-drill-report] [data-field=target]", "the hostile report, first", |t| t == HOSTILE).await;
    assert_eq!(b.all("[data-panel=drill-reports] tr[data-drill-report]").await.len(), 2, "the bad report was not kept");
    assert_eq!(b.js("return window.__xss === undefined", json!([])).await, json!(true), "no markup ran");
    b.js("document.querySelector('[data-panel=drill-reports]').scrollIntoView()", json!([])).await;
    b.shot("16-cluster-drill-reports").await;
    // Leadership to the drilled node with the page's transfer, so the
    // failover below kills neither this page's node nor a stale leader.
    // First the election its return may cause (it comes back with a
    // higher term) is over: it and the page's node agree on leader and
    // term, and the leader has replicated everything to it (a transfer
    // stops heartbeats, so a target behind the leader's log cannot win).
    let now = common::eventually(T, "the healed node agrees on the leader", || async {
        let (here, there) = tokio::join!(
            admin_get(&http, format!("http://{page}/api/v1/cluster/status"), &pw),
            admin_get(&http, format!("http://{target_addr}/api/v1/cluster/status"), &pw)
        );
        let caught_up = here["nodes"].as_array().is_some_and(|n| n.iter().any(|x| x["id"] == json!(target) && x["lag"] == json!(0)));
        (here["leader"].is_u64() && here["leader"] == there["leader"] && here["term"] == there["term"] && caught_up).then_some(here)
    })
    .await;
    if now["leader"] != json!(target) {
        b.choose("[data-field=transfer-to]", &target.to_string()).await;
        b.click("[data-action=transfer-leader]").await;
        b.accept_dialog().await;
        b.wait(".notice.ok", "the transfer", |t| t.ends_with(&format!("to node {target}."))).await;
    }
    let leader = target;
    b.wait("[data-field=leader]", "the leader shown", |t| t.starts_with(&format!("Leader: node {leader} "))).await;
    c.procs[leader as usize - 1].kill9();
    let killed = Instant::now();
    b.wait("[data-field=leader]", "a new leader, without a reload", |t| t.starts_with("Leader: node ") && !t.starts_with(&format!("Leader: node {leader} ")))
        .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "the new leader showed after {took:?}");
    b.wait("tr[data-change=leader]", "the change in the list", |_| true).await;
    b.wait(&format!(".node[data-node='{leader}'][data-health=unreachable]"), "the killed node shown unreachable", |_| true).await;
    b.shot("14-cluster-after-failover").await;
    eprintln!("console: new leader shown {took:?} after SIGKILL; first paint {fcp:.0} ms; whole test {:?}", started.elapsed());
}
