//! Camera → node assignment, as pure functions (no etcd, no clock): the controller calls
//! [`assign`] with the live nodes, the cameras and the assignment in force, and writes what it
//! returns.
//!
//! The rule, in order:
//! 1. A camera may go to the *active* nodes (alive, not draining) of its site (a camera without
//!    a site: any active node). A camera with no such node stays on its current owner if that
//!    owner is alive (e.g. draining: better recorded than not), else is unassigned.
//! 2. Each node has a quota: its fair share of the cameras it may record, weighted by capacity
//!    (`Σ_c cap_n / Σ_{m ∈ eligible(c)} cap_m`, rounded up).
//! 3. A camera stays where it is while its owner is eligible and under the ceiling of its
//!    quota (no movement for its own sake); if the nodes under the floor of their quota (a
//!    joiner) need more than what is left, the most loaded nodes give up their weakest ties.
//! 4. The other cameras, in camera-id order, first fill the nodes under the floor of their
//!    quota (previous owner first, then by weighted rendezvous score `cap / -ln(h)`, `h` a
//!    hash of node and camera in (0, 1)); what is left goes back to its previous owner while
//!    under the ceiling of its quota, else to the node under its ceiling with the most room
//!    relative to its share (rendezvous score breaks ties), else to the
//!    least loaded eligible node relative to its capacity (overloaded rather than unrecorded).
//!
//! So a join moves at most the joiner's quota (⌈N/nodes⌉ for equal capacities), and only to
//! the joiner; a leave moves only the leaver's cameras.
//!
//! Does not: read etcd, decide who is alive or who is controller.

use std::collections::{BTreeMap, BTreeSet};

use sha2::Digest;

/// A node as the assignment sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub site: Option<String>,
    pub capacity_streams: u32,
    pub draining: bool,
}

/// A camera as the assignment sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraInfo {
    pub id: String,
    pub site: Option<String>,
}

/// camera id → node name. Cameras without an eligible live node are absent.
pub type Assignment = BTreeMap<String, String>;

/// May `node` record `cam` (site rule only)?
pub fn site_allows(node: &NodeInfo, cam: &CameraInfo) -> bool {
    match &cam.site {
        None => true,
        Some(s) => node.site.as_deref() == Some(s.as_str()),
    }
}

/// A hash of (node, camera) mapped into the open interval (0, 1); stable across processes,
/// builds and platforms (SHA-256, not `std`'s hasher).
fn unit_hash(node: &str, cam: &str) -> f64 {
    let mut h = sha2::Sha256::new();
    h.update(node.as_bytes());
    h.update([0u8]);
    h.update(cam.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    // 53 bits of mantissa, shifted off 0 and 1.
    ((u64::from_be_bytes(b) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Weighted rendezvous score: the node with the highest score is preferred; a node with twice
/// the capacity wins about twice as many cameras.
pub fn score(node: &NodeInfo, cam: &str) -> f64 {
    let w = f64::from(node.capacity_streams.max(1));
    w / -unit_hash(&node.name, cam).ln()
}

/// Computes the assignment (see the module doc). `previous` is the assignment in force;
/// `nodes` are the live nodes (draining ones included, flagged).
pub fn assign(nodes: &[NodeInfo], cameras: &[CameraInfo], previous: &Assignment) -> Assignment {
    let by_name: BTreeMap<&str, &NodeInfo> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let eligible = |cam: &CameraInfo| -> Vec<&NodeInfo> {
        nodes
            .iter()
            .filter(|n| !n.draining && site_allows(n, cam))
            .collect()
    };
    // Quotas: each camera's unit shared among its eligible nodes by capacity.
    let mut share: BTreeMap<&str, f64> = BTreeMap::new();
    for cam in cameras {
        let el = eligible(cam);
        let total: f64 = el
            .iter()
            .map(|n| f64::from(n.capacity_streams.max(1)))
            .sum();
        for n in el {
            *share.entry(n.name.as_str()).or_default() +=
                f64::from(n.capacity_streams.max(1)) / total;
        }
    }
    // Floor and ceiling of each share (the small epsilon keeps 10.000000001 from becoming 11).
    let floor: BTreeMap<&str, usize> = share
        .iter()
        .map(|(n, s)| (*n, (s + 1e-9).floor().max(0.0) as usize))
        .collect();
    let ceil: BTreeMap<&str, usize> = share
        .iter()
        .map(|(n, s)| (*n, (s - 1e-9).ceil().max(0.0) as usize))
        .collect();
    let get = |m: &BTreeMap<&str, usize>, n: &str| m.get(n).copied().unwrap_or(0);
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Assignment::new();

    // Keep: cameras whose owner is still eligible, strongest ties first, up to the ceiling.
    let mut keep: Vec<(&CameraInfo, &NodeInfo, f64)> = cameras
        .iter()
        .filter_map(|cam| {
            let owner = by_name.get(previous.get(&cam.id)?.as_str())?;
            (!owner.draining && site_allows(owner, cam))
                .then(|| (cam, *owner, score(owner, &cam.id)))
        })
        .collect();
    keep.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.id.cmp(&b.0.id)));
    let mut kept: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (cam, owner, _) in keep {
        let k = kept.entry(owner.name.as_str()).or_default();
        if k.len() < get(&ceil, &owner.name) {
            k.push(cam.id.as_str());
        }
    }
    // Release more (weakest ties of the most loaded nodes first) while the nodes under their
    // floor (a joiner) need more than what is left to place.
    let kept_total: usize = kept.values().map(Vec::len).sum();
    let mut unplaced = cameras.len().saturating_sub(kept_total);
    let deficit: usize = nodes
        .iter()
        .filter(|n| !n.draining)
        .map(|n| get(&floor, &n.name).saturating_sub(kept.get(n.name.as_str()).map_or(0, Vec::len)))
        .sum();
    while unplaced < deficit {
        let fullest = kept
            .iter_mut()
            .filter(|(n, k)| k.len() > get(&floor, n))
            .max_by(|(a, ka), (b, kb)| {
                let ra = ka.len() as f64 / share.get(*a).copied().unwrap_or(1.0);
                let rb = kb.len() as f64 / share.get(*b).copied().unwrap_or(1.0);
                ra.total_cmp(&rb).then_with(|| b.cmp(a))
            });
        match fullest {
            Some((_, k)) => {
                k.pop();
                unplaced += 1;
            }
            None => break,
        }
    }
    for (node, cams) in &kept {
        load.insert(node, cams.len());
        for cam in cams {
            out.insert((*cam).to_owned(), (*node).to_owned());
        }
    }

    let ranked = |cam: &CameraInfo| -> Vec<&NodeInfo> {
        let mut el = eligible(cam);
        el.sort_by(|a, b| {
            score(b, &cam.id)
                .total_cmp(&score(a, &cam.id))
                .then_with(|| a.name.cmp(&b.name))
        });
        el
    };
    let mut rest: Vec<&CameraInfo> = cameras
        .iter()
        .filter(|c| !out.contains_key(&c.id))
        .collect();
    rest.sort_by(|a, b| a.id.cmp(&b.id));

    // Pass A: fill the nodes under their floor (a joiner, the survivors of a leave), the
    // previous owner first, then by rendezvous score.
    let mut later = Vec::new();
    for cam in rest {
        let el = ranked(cam);
        let prev = previous.get(&cam.id);
        let under_floor = |n: &&&NodeInfo| get(&load, &n.name) < get(&floor, &n.name);
        let chosen = el
            .iter()
            .find(|n| Some(&n.name) == prev && under_floor(n))
            .or_else(|| el.iter().find(under_floor));
        match chosen {
            Some(n) => {
                *load.entry(n.name.as_str()).or_default() += 1;
                out.insert(cam.id.clone(), n.name.clone());
            }
            None => later.push(cam),
        }
    }

    // Pass B: the rest, to the previous owner while under its ceiling, else by rendezvous
    // score under the ceiling, else to the least loaded node relative to its capacity.
    for cam in later {
        let el = ranked(cam);
        if el.is_empty() {
            // No active node may take it: stay on a live (draining) owner rather than stop.
            if let Some(owner) = previous
                .get(&cam.id)
                .and_then(|o| by_name.get(o.as_str()))
                .filter(|o| site_allows(o, cam))
            {
                out.insert(cam.id.clone(), owner.name.clone());
            }
            continue;
        }
        let prev = previous.get(&cam.id);
        let under_ceil = |n: &&&NodeInfo| get(&load, &n.name) < get(&ceil, &n.name);
        let chosen = el
            .iter()
            .find(|n| Some(&n.name) == prev && under_ceil(n))
            .or_else(|| {
                // The most room relative to its share first (a joiner before an old node),
                // then rendezvous order (`el` is sorted by score; min_by keeps the first).
                el.iter().filter(under_ceil).min_by(|a, b| {
                    let ra = get(&load, &a.name) as f64
                        / share.get(a.name.as_str()).copied().unwrap_or(1.0);
                    let rb = get(&load, &b.name) as f64
                        / share.get(b.name.as_str()).copied().unwrap_or(1.0);
                    ra.total_cmp(&rb)
                })
            })
            .copied()
            .unwrap_or_else(|| {
                el.iter()
                    .min_by(|a, b| {
                        let ra = get(&load, &a.name) as f64 / f64::from(a.capacity_streams.max(1));
                        let rb = get(&load, &b.name) as f64 / f64::from(b.capacity_streams.max(1));
                        ra.total_cmp(&rb)
                    })
                    .copied()
                    .unwrap_or(el[0])
            });
        *load.entry(chosen.name.as_str()).or_default() += 1;
        out.insert(cam.id.clone(), chosen.name.clone());
    }
    out
}

/// Cameras whose owner differs between two assignments (added, removed or moved).
pub fn moved(a: &Assignment, b: &Assignment) -> BTreeSet<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cap: u32) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            site: None,
            capacity_streams: cap,
            draining: false,
        }
    }
    fn cams(n: usize) -> Vec<CameraInfo> {
        (0..n)
            .map(|i| CameraInfo {
                id: format!("cam-{i:03}"),
                site: None,
            })
            .collect()
    }
    fn counts(a: &Assignment) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for n in a.values() {
            *m.entry(n.clone()).or_default() += 1;
        }
        m
    }

    #[test]
    fn every_camera_gets_exactly_one_node_and_loads_are_fair() {
        let nodes = vec![node("a", 100), node("b", 100), node("c", 100)];
        let a = assign(&nodes, &cams(30), &Assignment::new());
        assert_eq!(a.len(), 30);
        for (n, c) in counts(&a) {
            assert_eq!(c, 10, "node {n}");
        }
        // Deterministic: same input, same output.
        assert_eq!(a, assign(&nodes, &cams(30), &Assignment::new()));
        // Stable: re-running on its own output moves nothing.
        assert_eq!(a, assign(&nodes, &cams(30), &a));
    }

    #[test]
    fn capacity_weights_the_shares() {
        let nodes = vec![node("a", 100), node("b", 300)];
        let a = assign(&nodes, &cams(400), &Assignment::new());
        let c = counts(&a);
        assert_eq!(c["a"], 100);
        assert_eq!(c["b"], 300);
    }

    #[test]
    fn a_join_moves_at_most_its_fair_share_and_only_to_the_joiner() {
        for n_cams in [7usize, 30, 31, 100, 1200] {
            let three = vec![node("a", 10), node("b", 10), node("c", 10)];
            let before = assign(&three, &cams(n_cams), &Assignment::new());
            let mut four = three.clone();
            four.push(node("d", 10));
            let after = assign(&four, &cams(n_cams), &before);
            let m = moved(&before, &after);
            assert!(
                m.len() <= n_cams.div_ceil(4) + 1,
                "{n_cams} cameras: a join moved {} (> ⌈N/4⌉ + 1)",
                m.len()
            );
            for cam in &m {
                assert_eq!(after[cam], "d", "a join moves cameras to the joiner only");
            }
            let c = counts(&after);
            let (lo, hi) = (n_cams / 4, n_cams.div_ceil(4));
            for (name, k) in &c {
                assert!(
                    (lo..=hi).contains(k),
                    "{n_cams}: {name} has {k}, not in {lo}..={hi}"
                );
            }
        }
    }

    #[test]
    fn a_leave_moves_only_the_leavers_cameras_spread_over_survivors() {
        let four = vec![node("a", 10), node("b", 10), node("c", 10), node("d", 10)];
        let before = assign(&four, &cams(40), &Assignment::new());
        let three: Vec<_> = four.iter().filter(|n| n.name != "b").cloned().collect();
        let after = assign(&three, &cams(40), &before);
        let m = moved(&before, &after);
        let of_b: BTreeSet<_> = before
            .iter()
            .filter(|(_, n)| *n == "b")
            .map(|(c, _)| c.clone())
            .collect();
        assert_eq!(m, of_b, "only b's cameras move");
        let c = counts(&after);
        assert_eq!(after.len(), 40);
        for k in c.values() {
            assert!((13..=14).contains(k), "{c:?}");
        }
    }

    #[test]
    fn draining_nodes_lose_their_cameras_unless_nobody_else_may_take_them() {
        let mut nodes = vec![node("a", 10), node("b", 10)];
        let before = assign(&nodes, &cams(10), &Assignment::new());
        nodes[0].draining = true;
        let after = assign(&nodes, &cams(10), &before);
        assert!(after.values().all(|n| n == "b"));
        assert_eq!(after.len(), 10);
        // Alone and draining: keeps what it has (never unrecorded for a drain).
        let alone = vec![NodeInfo {
            draining: true,
            ..node("a", 10)
        }];
        let kept = assign(&alone, &cams(10), &before);
        assert_eq!(
            kept.len(),
            before.values().filter(|n| *n == "a").count(),
            "a draining node alone keeps its own cameras"
        );
    }

    #[test]
    fn sites_are_respected_and_a_site_without_nodes_is_unassigned() {
        let mut nodes = vec![
            node("n1", 10),
            node("n2", 10),
            node("s1", 10),
            node("x", 10),
        ];
        nodes[0].site = Some("nord".into());
        nodes[1].site = Some("nord".into());
        nodes[2].site = Some("sud".into());
        let mut cs = cams(30);
        for (i, c) in cs.iter_mut().enumerate() {
            c.site = match i % 3 {
                0 => Some("nord".into()),
                1 => Some("sud".into()),
                _ => None,
            };
        }
        cs.push(CameraInfo {
            id: "cam-ouest".into(),
            site: Some("ouest".into()),
        });
        let a = assign(&nodes, &cs, &Assignment::new());
        for c in &cs {
            match c.site.as_deref() {
                Some("ouest") => assert!(!a.contains_key(&c.id)),
                Some(s) => {
                    let n = nodes.iter().find(|n| n.name == a[&c.id]).unwrap();
                    assert_eq!(n.site.as_deref(), Some(s), "{}", c.id);
                }
                None => assert!(a.contains_key(&c.id)),
            }
        }
        // The only "sud" node dies: its site's cameras do not go north.
        let without_sud: Vec<_> = nodes.iter().filter(|n| n.name != "s1").cloned().collect();
        let b = assign(&without_sud, &cs, &a);
        for c in cs.iter().filter(|c| c.site.as_deref() == Some("sud")) {
            assert!(!b.contains_key(&c.id), "{} moved off its site", c.id);
        }
    }

    #[test]
    fn overloaded_nodes_still_record_everything() {
        let nodes = vec![node("a", 1), node("b", 1)];
        let a = assign(&nodes, &cams(10), &Assignment::new());
        assert_eq!(a.len(), 10);
        assert_eq!(counts(&a).values().copied().collect::<Vec<_>>(), vec![5, 5]);
    }

    #[test]
    fn no_nodes_no_assignment() {
        assert!(assign(&[], &cams(5), &Assignment::new()).is_empty());
    }
}
