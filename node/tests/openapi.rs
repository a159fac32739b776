//! The admin API's OpenAPI document is generated from the code; here it is
//! checked by a validator from PyPI, and schemathesis (PyPI) throws
//! generated requests at a live node through it: no request may get a
//! server error. `BERTH_SCHEMATHESIS_EXAMPLES` (default 10) sets how many
//! examples per operation; `BERTH_SCHEMATHESIS_SEED` replays a run.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{fast_config, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_document_validates_and_schemathesis_finds_no_server_errors() {
    let c = Cluster::new(1, fast_config()).await;
    c.wait_voters(&[1], Duration::from_secs(20)).await;
    let base = format!("http://{}", c.node(1).http_addr);
    let doc = reqwest::get(format!("{base}/api/v1/openapi.json")).await.unwrap();
    assert_eq!(doc.status(), 200);
    let doc: serde_json::Value = doc.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    for path in [
        "/api/v1/organization/",
        "/api/v1/organization/{org}/robots/{short}",
        "/api/v1/repository/{namespace}/{repository}/permissions/user/{name}",
        "/api/v1/repository/{namespace}/{repository}/notification/",
        "/api/v1/repository/{namespace}/{repository}/notification/{uuid}/test",
        "/api/v1/organization/{org}/notifications/{uuid}",
        "/api/v1/repository/{namespace}/{repository}/tag/",
        "/api/v1/repository/{namespace}/{repository}/tag/{tag}",
        "/api/v1/repository/{namespace}/{repository}/tag/{tag}/restore",
        "/api/v1/organization/{org}/immutabilitypolicy/",
        "/api/v1/organization/{org}/immutabilitypolicy/{uuid}",
        "/api/v1/repository/{namespace}/{repository}/immutabilitypolicy/",
        "/api/v1/repository/{namespace}/{repository}/immutabilitypolicy/{uuid}",
        "/api/v1/organization/{org}/autoprunepolicy/",
        "/api/v1/organization/{org}/autoprunepolicy/{uuid}",
        "/api/v1/repository/{namespace}/{repository}/autoprunepolicy/",
        "/api/v1/repository/{namespace}/{repository}/autoprunepolicy/{uuid}",
        "/api/v1/organization/{org}/quota",
        "/api/v1/organization/{org}/quota/{id}",
        "/api/v1/organization/{org}/quota/{id}/limit",
        "/api/v1/organization/{org}/quota/{id}/limit/{limit_id}",
        "/api/v1/user/quota",
        "/api/v1/superuser/quota/default",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    // The time machine window is part of the organization's and user's settings.
    assert!(doc["paths"]["/api/v1/organization/{org}"].get("put").is_some(), "PUT /organization/{{org}} is documented");
    assert!(doc["components"]["schemas"]["OrgUpdate"]["properties"].get("tag_expiration_s").is_some());
    assert!(doc["components"]["schemas"]["PasswordChange"]["properties"].get("tag_expiration_s").is_some());
    // Repository states and mirrors, on Quay's paths.
    for op in ["changestate", "mirror", "mirror/sync-now", "mirror/sync-cancel"] {
        let path = format!("/api/v1/repository/{{namespace}}/{{repository}}/{op}");
        assert!(doc["paths"].get(&path).is_some(), "{path} is documented");
    }
    // Proxy-cache organizations, on Quay's path.
    let proxycache = &doc["paths"]["/api/v1/organization/{org}/proxycache"];
    for method in ["get", "post", "delete"] {
        assert!(proxycache.get(method).is_some(), "{method} /organization/{{org}}/proxycache is documented");
    }
    // OAuth applications, on Quay's paths, and the token endpoint.
    for path in [
        "/api/v1/organization/{org}/applications",
        "/api/v1/organization/{org}/applications/{client_id}",
        "/api/v1/organization/{org}/applications/{client_id}/resetclientsecret",
        "/api/v1/organization/{org}/applications/{client_id}/tokens",
        "/api/v1/organization/{org}/applications/{client_id}/tokens/{uuid}",
        "/api/v1/organization/{org}/applications/{client_id}/generatetoken",
        "/api/v1/app/{client_id}",
        "/oauth/access_token",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    // The cluster and drill API stays out: schemathesis holds the operator
    // token, and a generated isolation would cut the node off for minutes.
    for path in [
        "/api/v1/drill/isolate",
        "/api/v1/drill/probe",
        "/api/v1/drill/region",
        "/api/v1/drill/region/{region}",
        "/api/v1/drill/reports",
        "/api/v1/cluster/transfer-leader",
    ] {
        assert!(doc["paths"].get(path).is_none(), "{path} is not documented");
    }
    let file = c.root.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new("openapi-spec-validator").arg(&file).output().expect("openapi-spec-validator (pip install openapi-spec-validator)");
    assert!(out.status.success(), "the document does not validate: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // The operator token: it cannot be changed or throttled by what the run does.
    let token = berth_node::config::Layout::new(&c.dirs[&1]).read_operator_token().unwrap();
    let examples = std::env::var("BERTH_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".into());
    let seed = std::env::var("BERTH_SCHEMATHESIS_SEED").unwrap_or_else(|_| rand::random::<u32>().to_string());
    println!("schemathesis seed {seed} (BERTH_SCHEMATHESIS_SEED replays it)");
    let base_for_st = base.clone();
    // schemathesis keeps a cache in its working directory: the test's, not the checkout.
    let root = c.root.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .args(["run", &format!("{base_for_st}/api/v1/openapi.json"), "--checks", "not_a_server_error", "--max-examples", &examples, "--seed", &seed])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            // A feed source makes the nodes fetch its URL at once: a generated
            // URL must not send this machine's traffic anywhere.
            .args(["--exclude-path-regex", "/scanner/sources/"])
            .env("NO_COLOR", "1")
            .current_dir(&root)
            .output()
            .expect("schemathesis (pip install schemathesis)")
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed") && !text.contains("Server error"), "{text}");
    // The node still works afterwards.
    assert_eq!(reqwest::get(format!("{base}/health")).await.unwrap().status(), 200);
}
