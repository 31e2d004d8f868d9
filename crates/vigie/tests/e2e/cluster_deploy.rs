//! The cluster's deployment files are usable as shipped: `deploy/k8s/*.yaml` parse (PyYAML, an
//! independent parser) into the objects the README describes, the node configs of
//! `deploy/cluster/` and the one rendered from the Kubernetes ConfigMap pass
//! `vigie check-config`, the etcd member settings agree with each other and with the nodes'
//! `[cluster] etcd`, and `gen-certs.sh` produces certificates `openssl verify` accepts. No
//! Kubernetes cluster or etcd needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_vigie");

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every YAML document of `files` as JSON (through python3 + PyYAML), or `None` when they are
/// missing outside CI.
fn yaml_docs(files: &[PathBuf]) -> Option<Vec<Value>> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, json, yaml\n\
             docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d is not None]\n\
             print(json.dumps(docs))",
        )
        .args(files)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).unwrap()),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'yaml'") => {
            skip_or_fail("python3-yaml");
            None
        }
        Ok(o) => panic!(
            "YAML does not parse: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => {
            skip_or_fail("python3");
            None
        }
    }
}

fn skip_or_fail(pkg: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{pkg} missing under CI: .ci/run installs python3-yaml"
    );
    eprintln!("SKIPPED: {pkg} not installed (Debian python3-yaml)");
}

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vigie.toml");
    std::fs::write(&p, text).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&p)
        .env("VIGIE_CAM_VERSAILLES_GARE", "x")
        .env("VIGIE_CAM_VERSAILLES_CHATEAU", "x")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn cluster_deploy_files_parse_and_configs_validate() {
    // Kubernetes manifests.
    let k8s = deploy().join("k8s");
    let files: Vec<PathBuf> = ["namespace.yaml", "etcd.yaml", "vigie.yaml"]
        .iter()
        .map(|f| k8s.join(f))
        .collect();
    if let Some(docs) = yaml_docs(&files) {
        for d in &docs {
            assert!(
                d["apiVersion"].is_string()
                    && d["kind"].is_string()
                    && d["metadata"]["name"].is_string(),
                "incomplete object: {d}"
            );
        }
        for (sts, svc) in [("vigie", "vigie"), ("vigie-etcd", "vigie-etcd")] {
            let s = find(&docs, "StatefulSet", sts);
            assert_eq!(s["spec"]["serviceName"], svc);
            assert!(
                s["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].is_string(),
                "{sts}: no volume per pod"
            );
            let service = find(&docs, "Service", svc);
            assert_eq!(
                service["spec"]["clusterIP"], "None",
                "{svc} is not headless"
            );
            assert_eq!(
                service["spec"]["selector"], s["spec"]["template"]["metadata"]["labels"],
                "{svc} does not select {sts}'s pods"
            );
        }
        let vigie = find(&docs, "StatefulSet", "vigie");
        let pod = &vigie["spec"]["template"]["spec"];
        assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 60);
        let secret_refs = pod["containers"][0]["envFrom"].to_string();
        assert!(
            secret_refs.contains("vigie-camera-passwords"),
            "{secret_refs}"
        );
        find(&docs, "Secret", "vigie-camera-passwords");
        // The config the init container renders for pod vigie-0 is valid.
        let cm = find(&docs, "ConfigMap", "vigie-config");
        let rendered = format!(
            "{}{}",
            cm["data"]["node.toml"]
                .as_str()
                .unwrap()
                .replace("@NODE@", "vigie-0")
                .replace("@NAMESPACE@", "vigie"),
            cm["data"]["cameras.toml"].as_str().unwrap()
        );
        let (ok, out) = check_config(&rendered);
        assert!(
            ok,
            "the Kubernetes node config is refused: {out}\n{rendered}"
        );
    }

    // The three-node systemd example.
    let cl = deploy().join("cluster");
    let cameras = std::fs::read_to_string(cl.join("cameras.toml")).unwrap();
    let mut initial = None;
    let mut client_urls = Vec::new();
    let mut etcd_lists = Vec::new();
    for node in ["rec-a", "rec-b", "rec-c"] {
        let dir = cl.join("nodes").join(node);
        let head = std::fs::read_to_string(dir.join("vigie-node.toml")).unwrap();
        let (ok, out) = check_config(&format!("{head}{cameras}"));
        assert!(ok, "{node}: config refused: {out}");
        let env = std::fs::read_to_string(dir.join("etcd.env")).unwrap();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{node}: no {k}"))
                .to_owned()
        };
        assert_eq!(get("ETCD_NAME"), node);
        let ic = get("ETCD_INITIAL_CLUSTER");
        assert!(ic.contains(&format!(
            "{node}={}",
            get("ETCD_INITIAL_ADVERTISE_PEER_URLS")
        )));
        assert_eq!(
            *initial.get_or_insert(ic.clone()),
            ic,
            "{node}: another initial cluster"
        );
        assert_eq!(get("ETCD_CLIENT_CERT_AUTH"), "true");
        assert_eq!(get("ETCD_PEER_CLIENT_CERT_AUTH"), "true");
        client_urls.push(get("ETCD_ADVERTISE_CLIENT_URLS"));
        let cfg: toml::Value = head.parse().unwrap();
        let etcd: Vec<String> = cfg["cluster"]["etcd"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        assert_eq!(cfg["cluster"]["node"].as_str(), Some(node));
        assert!(cfg["cluster"]["etcd_cert_file"].is_str());
        etcd_lists.push((node, etcd));
    }
    for (node, etcd) in &etcd_lists {
        for u in &client_urls {
            assert!(
                etcd.contains(u),
                "{node}: etcd list {etcd:?} lacks member {u}"
            );
        }
    }

    // The certificates: a CA and, per node, certificates that verify against it.
    let pki = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(cl.join("gen-certs.sh"))
        .arg(pki.path().join("pki"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = pki.path().join("pki");
    for node in ["rec-a", "rec-b", "rec-c"] {
        for kind in ["etcd-peer", "etcd-server", "vigie-etcd", "vigie-https"] {
            let cert = p.join(format!("{node}-{kind}.pem"));
            let v = Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(p.join("ca.pem"))
                .arg(&cert)
                .output()
                .unwrap();
            assert!(
                v.status.success(),
                "{}: {}",
                cert.display(),
                String::from_utf8_lossy(&v.stderr)
            );
        }
    }
}
