//! The published OpenAPI description and the router agree: every documented operation is
//! served (never 405 or the "no route" fallback, and never the rights table's fail-closed
//! default), and every undocumented method on a documented path answers 405.

use vigie_camsim::{Fixture, MountConfig, Server};
use vigie_testkit::VigieBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_vigie");

#[tokio::test(flavor = "multi_thread")]
async fn openapi_matches_the_router() {
    let sim = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![MountConfig::new(
            "a",
            Fixture::embedded("h264-baseline-640x360-25fps-gop50.h264").unwrap(),
        )],
    )
    .await
    .unwrap();
    let mut v = VigieBuilder::new(BIN)
        .toml("[[communes]]\nid = \"test\"\nname = \"Test\"\n")
        .toml(&format!(
            "[[cameras]]\nid = \"cam-a\"\nname = \"A\"\ncommune = \"test\"\n  [[cameras.streams]]\n  name = \"main\"\n  url = \"{}\"\n",
            sim.url("a")
        ))
        .start()
        .unwrap();
    // Public, no credentials needed.
    let anon = reqwest::get(format!("{}/api/v1/openapi.json", v.base_url()))
        .await
        .unwrap();
    assert_eq!(anon.status().as_u16(), 200);
    let spec: serde_json::Value = anon.json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();
    for must in [
        "/api/v1/health",
        "/api/v1/cameras",
        "/api/v1/cameras/{cam}/streams/{stream}/recordings",
        "/api/v1/cameras/{cam}/streams/{stream}/video.mp4",
        "/api/v1/cameras/{cam}/streams/{stream}/live",
        "/api/v1/exports",
        "/api/v1/audit",
        "/api/v1/session",
    ] {
        assert!(
            paths.contains_key(must),
            "{must} missing from the OpenAPI description"
        );
    }
    let fill = |p: &str| {
        p.replace("{cam}", "cam-a")
            .replace("{stream}", "main")
            .replace("{id}", "1")
            .replace("{preset}", "1")
            .replace("{name}", vigie_testkit::process::ADMIN_USER)
            .replace("{file}", "app.js")
    };
    let client = v.http().clone();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push((path.clone(), method.to_uppercase()));
        }
    }
    // Logging out last: it may end the caller's session.
    documented.sort_by_key(|(p, m)| {
        (
            p == "/api/v1/session" && m == "DELETE",
            p.clone(),
            m.clone(),
        )
    });
    for (path, method) in &documented {
        let url = format!("{}{}", v.base_url(), fill(path));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client.request(m, &url);
        if method != "GET" {
            req = req.header("content-type", "application/json").body("{}");
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        assert!(
            !body.contains("no route for"),
            "{method} {path} is documented but not routed: {body}"
        );
    }
    assert!(
        !v.log().contains("route missing from the rights table"),
        "a documented route has no entry in the rights table:\n{}",
        v.log()
    );
    // Undocumented methods on documented paths are not served.
    for (path, item) in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if item.get(method.to_lowercase()).is_some() {
                continue;
            }
            let url = format!("{}{}", v.base_url(), fill(path));
            let r = client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    &url,
                )
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status().as_u16(),
                405,
                "{method} {path} is served but not documented"
            );
        }
    }
    v.stop().unwrap();
}
