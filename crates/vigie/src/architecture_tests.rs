//! The crate map of docs/ARCHITECTURE.md (the picture of the crates and their dependency
//! arrows) matches `cargo metadata`, and no crate depends on one of its own or a higher layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One crate of the picture: its layer (`None` for the crates drawn "beside") and its arrows.
#[derive(Debug, Default)]
struct Drawn {
    layer: Option<u32>,
    deps: BTreeSet<String>,
}

fn full_name(short: &str) -> String {
    if short == "vigie" || short.starts_with("vigie-") {
        short.to_owned()
    } else {
        format!("vigie-{short}")
    }
}

/// Comma-separated dependency names at the start of `s`; `true` when the list goes on to the
/// next line (it ends with a comma).
fn dep_list(s: &str, into: &mut BTreeSet<String>) -> bool {
    let list = s.split("  ").next().unwrap_or("").trim();
    for d in list.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        into.insert(full_name(d));
    }
    list.ends_with(',')
}

/// Parses the first code block of the "## Crates" section.
fn parse_picture(doc: &str) -> BTreeMap<String, Drawn> {
    let section = doc.split("## Crates").nth(1).expect("a ## Crates section");
    let block = section
        .split("```")
        .nth(1)
        .expect("a picture in ``` fences");
    let mut out: BTreeMap<String, Drawn> = BTreeMap::new();
    let mut layer = None;
    let mut continued: Option<String> = None;
    for line in block.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("layer ") {
            layer = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if trimmed.starts_with("beside:") {
            layer = None;
        }
        if let Some(c) = continued.take() {
            let rest = trimmed.trim_start_matches(['│', ' ']);
            let drawn = out.get_mut(&c).expect("continued crate");
            if dep_list(rest, &mut drawn.deps) {
                continued = Some(c);
            }
            continue;
        }
        // Every `vigie…` word starts a crate; an arrow after it lists its dependencies.
        let mut rest = line;
        while let Some(i) = rest.find("vigie") {
            let before_ok = i == 0 || rest[..i].ends_with(' ');
            let tail = &rest[i..];
            let name_len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(tail.len());
            let name = &tail[..name_len];
            rest = &tail[name_len..];
            if !before_ok {
                continue;
            }
            let drawn = out.entry(name.to_owned()).or_default();
            drawn.layer = layer;
            // Skip an annotation in parentheses, then the arrow's shaft.
            let mut after = rest.trim_start();
            if after.starts_with('(') {
                after = after.split_once(')').map_or("", |(_, a)| a).trim_start();
            }
            let after = after.trim_start_matches(['─', ' ']);
            if let Some(deps) = after.strip_prefix('▶') {
                if dep_list(deps.trim_start(), &mut drawn.deps) {
                    continued = Some(name.to_owned());
                }
                rest = deps;
            }
        }
    }
    out
}

/// Normal dependencies between workspace crates, from `cargo metadata`.
fn metadata(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = v["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|n| names.contains(n))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_crate_map_matches_cargo_metadata_and_layers_point_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let drawn = parse_picture(&doc);
    let actual = metadata(&root);
    let drawn_names: BTreeSet<&String> = drawn.keys().collect();
    let actual_names: BTreeSet<&String> = actual.keys().collect();
    assert_eq!(
        drawn_names, actual_names,
        "the picture must show every crate"
    );
    for (name, deps) in &actual {
        assert_eq!(
            &drawn[name].deps, deps,
            "arrows of {name} in docs/ARCHITECTURE.md vs cargo metadata"
        );
    }
    for (name, d) in &drawn {
        let Some(layer) = d.layer else { continue };
        for dep in &d.deps {
            let dep_layer = drawn[dep].layer;
            assert!(
                dep_layer.is_some_and(|l| l < layer),
                "{name} (layer {layer}) depends on {dep} (layer {dep_layer:?}): arrows go down"
            );
        }
    }
}
