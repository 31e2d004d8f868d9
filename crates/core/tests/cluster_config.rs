//! `[cluster]` validation: every mistake named by its key, and the camera-list hash the nodes
//! compare.

use vigie_core::config::{Config, ConfigError};

const BASE: &str = r#"
[storage]
data_dir = "/tmp/vigie-test"
[[communes]]
id = "c"
name = "C"
[[cameras]]
id = "cam-1"
name = "One"
commune = "c"
site = "nord"
  [[cameras.streams]]
  name = "main"
  url = "rtsp://10.0.0.1/s"
"#;

fn env(_: &str) -> Option<String> {
    None
}

fn load(cluster: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(&format!("{BASE}\n{cluster}"), "t", &env)
}

fn problems(cluster: &str) -> String {
    match load(cluster) {
        Ok(_) => panic!("accepted:\n{cluster}"),
        Err(e) => e.to_string(),
    }
}

const GOOD: &str = r#"
[cluster]
etcd = ["http://127.0.0.1:2379"]
node = "rec-a"
advertise_url = "http://127.0.0.1:8081"
site = "nord"
capacity_streams = 400
"#;

#[test]
fn a_valid_cluster_section_and_its_defaults() {
    let c = load(GOOD).unwrap().cluster.unwrap();
    assert_eq!(c.lease_ttl_s, 5);
    assert_eq!(c.prefix, "/vigie");
    assert_eq!(c.site.as_deref(), Some("nord"));
    assert!(load("").unwrap().cluster.is_none(), "absent = single node");
}

#[test]
fn every_mistake_is_named_by_its_key() {
    let cases = [
        (
            "etcd = [\"http://127.0.0.1:2379\"]",
            "etcd = []",
            "cluster.etcd",
        ),
        (
            "etcd = [\"http://127.0.0.1:2379\"]",
            "etcd = [\"127.0.0.1:2379\"]",
            "cluster.etcd[0]",
        ),
        (
            "etcd = [\"http://127.0.0.1:2379\"]",
            "etcd = [\"http://u:p@h:2379\"]",
            "must not carry credentials",
        ),
        ("node = \"rec-a\"", "node = \"Rec_A\"", "cluster.node"),
        ("node = \"rec-a\"", "node = \"\"", "cluster.node"),
        (
            "advertise_url = \"http://127.0.0.1:8081\"",
            "advertise_url = \"nowhere\"",
            "cluster.advertise_url",
        ),
        ("site = \"nord\"", "site = \"Nord!\"", "cluster.site"),
        (
            "capacity_streams = 400",
            "capacity_streams = 0",
            "cluster.capacity_streams",
        ),
        (
            "capacity_streams = 400",
            "capacity_streams = 400\nlease_ttl_s = 1",
            "cluster.lease_ttl_s",
        ),
        (
            "capacity_streams = 400",
            "capacity_streams = 400\nprefix = \"vigie/\"",
            "cluster.prefix",
        ),
        (
            "capacity_streams = 400",
            "capacity_streams = 400\netcd_ca_file = \"/ca.pem\"",
            "no etcd endpoint is https",
        ),
        (
            "etcd = [\"http://127.0.0.1:2379\"]",
            "etcd = [\"https://127.0.0.1:2379\"]\netcd_cert_file = \"/c.pem\"",
            "cluster.etcd_cert_file",
        ),
        (
            "capacity_streams = 400",
            "capacity_streams = 400\nunknown = 1",
            "unknown field",
        ),
    ];
    for (from, to, expected) in cases {
        let text = GOOD.replace(from, to);
        let p = problems(&text);
        assert!(p.contains(expected), "{to}: {p}");
    }
    let bad_site = BASE.replace("site = \"nord\"", "site = \"NORD\"");
    let e = Config::from_toml_str(&bad_site, "t", &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cameras[0].site"), "{e}");
}

#[test]
fn the_camera_hash_follows_what_decides_who_records_what() {
    let a = load(GOOD).unwrap();
    let same = Config::from_toml_str(
        &format!(
            "{}\n{GOOD}",
            BASE.replace("name = \"One\"", "name = \"Renamed\"")
        ),
        "t",
        &env,
    )
    .unwrap();
    assert_eq!(
        a.cameras_hash(),
        same.cameras_hash(),
        "a name does not count"
    );
    for (from, to) in [
        ("site = \"nord\"", "site = \"sud\""),
        ("rtsp://10.0.0.1/s", "rtsp://10.0.0.2/s"),
        ("id = \"cam-1\"", "id = \"cam-2\""),
    ] {
        let other =
            Config::from_toml_str(&format!("{}\n{GOOD}", BASE.replace(from, to)), "t", &env)
                .unwrap();
        assert_ne!(a.cameras_hash(), other.cameras_hash(), "{to}");
    }
}

#[test]
fn the_cluster_secret_comes_from_env_or_file_and_is_refused_when_short() {
    let c = load(GOOD).unwrap().cluster.unwrap();
    assert!(
        c.secret(&|_| None).unwrap().is_none(),
        "no secret configured"
    );
    let with_env = load(&GOOD.replace(
        "capacity_streams = 400",
        "capacity_streams = 400\nsecret_env = \"VIGIE_TEST_SECRET\"",
    ))
    .unwrap()
    .cluster
    .unwrap();
    let long = "0123456789abcdef0123456789abcdef";
    let s = with_env
        .secret(&|v| (v == "VIGIE_TEST_SECRET").then(|| format!("{long}\n")))
        .unwrap()
        .unwrap();
    assert_eq!(s.expose(), long);
    assert!(!format!("{s:?}").contains(long), "never printed");
    let e = with_env
        .secret(&|_| Some("short-secret".into()))
        .unwrap_err();
    assert!(e.contains("at least 32"), "{e}");
    assert!(
        !e.contains("short-secret"),
        "the error never shows the secret: {e}"
    );
    let e = with_env.secret(&|_| None).unwrap_err();
    assert!(e.contains("VIGIE_TEST_SECRET"), "{e}");
    let dir = std::env::temp_dir().join(format!("vigie-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("secret");
    std::fs::write(&f, format!("  {long}{long}  \n")).unwrap();
    let with_file = load(&GOOD.replace(
        "capacity_streams = 400",
        &format!(
            "capacity_streams = 400\nsecret_file = {:?}",
            f.display().to_string()
        ),
    ))
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(
        with_file.secret(&|_| None).unwrap().unwrap().expose(),
        format!("{long}{long}")
    );
    std::fs::remove_dir_all(&dir).ok();
    let p = problems(&GOOD.replace(
        "capacity_streams = 400",
        "capacity_streams = 400\nsecret_env = \"A\"\nsecret_file = \"/x\"",
    ));
    assert!(p.contains("cluster.secret_env"), "{p}");
}
