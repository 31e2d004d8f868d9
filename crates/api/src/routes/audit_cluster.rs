//! `GET /api/v1/audit` and the register's journal facts in a cluster: every node's journal,
//! merged by time on the node the user called, each entry labelled with its node.
//!
//! The user's rights are checked here only (`Permission::Audit` on the route, then which
//! entries the user may see, as for this node's own journal); the other nodes' entries come
//! from their signed internal route `/internal/v1/journal/entries` (whole entries, filtered and
//! paged there). A node that cannot be asked (down, no answer) is listed in
//! `unavailable_nodes`, never silently left out.
//!
//! Paging: each node's journal has its own sequence numbers, so the cursor is one sequence
//! number per node (`next_after` = `rec-a:120,rec-b:87`). A page asks every node for at most
//! `limit` entries after its cursor and keeps the `limit` oldest of all, so pages follow each
//! other in time order and the next cursor moves only over what was kept. A node unavailable
//! for a page keeps its cursor: its entries come in a later page once it answers (earlier
//! than that page's others).
//!
//! Does not own: the single-node answer and the CSV columns (`routes::audit`), the internal
//! route (`routes::internal_journal`), the HTTP client (the binary's `ClusterInfo`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vigie_audit::{Action, Entry};
use vigie_core::Time90k;

use super::audit::{CSV_HEADER, csv_response, csv_row, entry_json, query_journal, visible};
use crate::access::Principal;
use crate::csvsafe::SafeCsv;
use crate::internal::CarriedIdentity;
use crate::{ApiError, AppState, ClusterInfo};

/// The filters of a journal read.
#[derive(Clone, Debug)]
pub struct Filters {
    pub start: Option<Time90k>,
    pub end: Option<Time90k>,
    pub actor: Option<String>,
    pub camera: Option<String>,
    pub action: Option<Action>,
    pub limit: usize,
}

/// One sequence number per node: where the next page starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cursor(BTreeMap<String, u64>);

impl Cursor {
    /// `node:seq,node:seq` (a bare number: this node's own sequence number).
    pub fn parse(s: Option<&str>, me: &str) -> Result<Cursor, ApiError> {
        let mut c = Cursor::default();
        let Some(s) = s.filter(|s| !s.is_empty()) else {
            return Ok(c);
        };
        let bad = || {
            ApiError::BadRequest(format!(
                "`after` must be the `next_after` of the previous page (node:seq,…), not {s:?}"
            ))
        };
        if let Ok(n) = s.parse::<u64>() {
            c.0.insert(me.to_owned(), n);
            return Ok(c);
        }
        for part in s.split(',') {
            let (node, seq) = part.rsplit_once(':').ok_or_else(bad)?;
            if node.is_empty() || node.len() > 64 || c.0.len() >= 1024 {
                return Err(bad());
            }
            c.0.insert(node.to_owned(), seq.parse().map_err(|_| bad())?);
        }
        Ok(c)
    }

    pub fn render(&self) -> String {
        self.0
            .iter()
            .map(|(n, s)| format!("{n}:{s}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A merged page.
pub struct Merged {
    /// (node, entry), oldest first (ties: by node, then sequence number).
    pub entries: Vec<(String, Entry)>,
    /// Cursor of the next page; `None` when no node had more (and every node answered).
    pub next: Option<Cursor>,
    /// (node, why) of the nodes that could not be asked.
    pub unavailable: Vec<(String, String)>,
}

/// The identity carried to the other nodes (they do not journal reads of their journal: the
/// read of `audit` is not journaled on a single node either).
pub fn carried(who: &Principal) -> CarriedIdentity {
    CarriedIdentity {
        user: who.user.clone(),
        role: who.role,
        scope: who.scope.clone(),
        actor: who.actor(),
        request_id: hex::encode(rand::random::<[u8; 8]>()),
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub(super) fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Path and query of `/internal/v1/journal/entries` for these filters.
pub fn entries_path(f: &Filters, actions: &[Action], after: Option<u64>, limit: usize) -> String {
    let mut q = vec![format!("limit={limit}")];
    if let Some(t) = f.start {
        q.push(format!("start_90k={}", t.0));
    }
    if let Some(t) = f.end {
        q.push(format!("end_90k={}", t.0));
    }
    if let Some(a) = &f.actor {
        q.push(format!("actor={}", pct(a)));
    }
    if let Some(c) = &f.camera {
        q.push(format!("camera={}", pct(c)));
    }
    let actions: Vec<&str> = f.action.iter().chain(actions).map(|a| a.as_str()).collect();
    if !actions.is_empty() {
        q.push(format!("actions={}", actions.join(",")));
    }
    if let Some(a) = after {
        q.push(format!("after={a}"));
    }
    format!("/internal/v1/journal/entries?{}", q.join("&"))
}

/// One page of a node's journal as answered by its internal route.
pub struct RemotePage {
    pub entries: Vec<Entry>,
    pub more: bool,
}

pub fn parse_page(v: &Value) -> Result<RemotePage, String> {
    let entries = serde_json::from_value(v["entries"].clone())
        .map_err(|e| format!("entries not understood: {e}"))?;
    Ok(RemotePage {
        entries,
        more: v["more"].as_bool().unwrap_or(false),
    })
}

/// Asks `node` for one page; `Err`: why it could not be had.
pub async fn remote_page(
    cluster: &Arc<dyn ClusterInfo>,
    node: &str,
    path: String,
    who: CarriedIdentity,
) -> Result<RemotePage, String> {
    let v = cluster.internal_json(node, path, who).await?;
    parse_page(&v)
}

/// The oldest `f.limit` entries of every node's journal after `cursor`.
pub async fn merged_page(
    state: &AppState,
    cluster: &Arc<dyn ClusterInfo>,
    who: &Principal,
    f: &Filters,
    cursor: Cursor,
) -> Result<Merged, ApiError> {
    let me = cluster.node().to_owned();
    let carried = carried(who);
    let nodes = cluster.journal_nodes();
    let asks = nodes.iter().filter(|n| n.node != me).map(|n| {
        let path = entries_path(f, &[], cursor.0.get(&n.node).copied(), f.limit);
        let carried = carried.clone();
        async move {
            if !n.up {
                return (
                    n.node.clone(),
                    Err("the node is down (no live registration)".to_owned()),
                );
            }
            (
                n.node.clone(),
                remote_page(cluster, &n.node, path, carried).await,
            )
        }
    });
    let local = query_journal(
        state,
        vigie_audit::Query {
            start: f.start,
            end: f.end,
            actor: f.actor.clone(),
            camera: f.camera.clone(),
            action: f.action,
            after_seq: cursor.0.get(&me).copied(),
            limit: Some(f.limit),
        },
    );
    let (local, remote) = futures::join!(local, futures::future::join_all(asks));
    let local = local?;
    let mut more = local.len() == f.limit;
    let mut all: Vec<(String, Entry)> = local.into_iter().map(|e| (me.clone(), e)).collect();
    let mut unavailable = Vec::new();
    for (node, page) in remote {
        match page {
            Ok(p) => {
                more |= p.more;
                all.extend(p.entries.into_iter().map(|e| (node.clone(), e)));
            }
            Err(why) => {
                tracing::warn!(node = %node, reason = %why, "journal of another node unavailable");
                unavailable.push((node, why));
            }
        }
    }
    all.sort_by(|(na, a), (nb, b)| (a.time_90k, na, a.seq).cmp(&(b.time_90k, nb, b.seq)));
    more |= all.len() > f.limit;
    all.truncate(f.limit);
    let mut next = cursor;
    for (node, e) in &all {
        next.0.insert(node.clone(), e.seq);
    }
    let entries = all
        .into_iter()
        .filter(|(_, e)| visible(state, who, e))
        .collect();
    Ok(Merged {
        entries,
        next: (more || !unavailable.is_empty()).then_some(next),
        unavailable,
    })
}

/// The merged page as JSON (`entries` with `node`, `next_after`, `unavailable_nodes`) or CSV
/// (the journal's columns and `node`; the unavailable nodes in the `x-vigie-unavailable-nodes`
/// header).
pub fn answer(m: Merged, csv: bool) -> Response {
    let unavailable: Vec<Value> = m
        .unavailable
        .iter()
        .map(|(node, reason)| json!({ "node": node, "reason": reason }))
        .collect();
    if !csv {
        let entries: Vec<Value> = m
            .entries
            .iter()
            .map(|(node, e)| {
                let mut v = entry_json(e);
                v["node"] = json!(node);
                v
            })
            .collect();
        return Json(json!({
            "entries": entries,
            "next_after": m.next.as_ref().map(Cursor::render),
            "unavailable_nodes": unavailable,
        }))
        .into_response();
    }
    let mut w = SafeCsv::from_writer(Vec::new());
    let mut header: Vec<&str> = CSV_HEADER.to_vec();
    header.push("node");
    let _ = w.write_record(header);
    for (node, e) in &m.entries {
        let mut row = csv_row(e).to_vec();
        row.push(node.clone());
        let _ = w.write_record(row);
    }
    let mut resp = csv_response(w, "vigie-journal.csv");
    let names: Vec<&str> = m.unavailable.iter().map(|(n, _)| n.as_str()).collect();
    if !names.is_empty()
        && let Ok(v) = HeaderValue::from_str(&names.join(","))
    {
        resp.headers_mut().insert("x-vigie-unavailable-nodes", v);
    }
    if let Some(next) = &m.next
        && let Ok(v) = HeaderValue::from_str(&next.render())
    {
        resp.headers_mut().insert("x-vigie-next-after", v);
    }
    resp
}

/// Another node's journal facts for the register, read page by page (from a blocking thread:
/// each page is awaited on `rt`).
pub struct RemoteFacts {
    pub node: String,
    buf: VecDeque<Entry>,
    after: Option<u64>,
    more: bool,
}

/// Page size of the register's reads of other nodes.
const REGISTER_PAGE: usize = 1000;

/// The register's journal facts of every other node: the first page of each, asked in
/// parallel (before the answer starts, so that the nodes that cannot be asked are known);
/// returns the readers and the (node, why) of those unavailable.
pub async fn register_sources(
    cluster: &Arc<dyn ClusterInfo>,
    who: &Principal,
    f: &Filters,
    actions: &[Action],
) -> (Vec<RemoteFacts>, Vec<(String, String)>) {
    let me = cluster.node().to_owned();
    let carried = carried(who);
    let asks = cluster
        .journal_nodes()
        .into_iter()
        .filter(|n| n.node != me)
        .map(|n| {
            let path = entries_path(f, actions, None, REGISTER_PAGE);
            let carried = carried.clone();
            async move {
                if !n.up {
                    return (
                        n.node,
                        Err("the node is down (no live registration)".to_owned()),
                    );
                }
                let r = remote_page(cluster, &n.node, path, carried).await;
                (n.node, r)
            }
        });
    let mut sources = Vec::new();
    let mut unavailable = Vec::new();
    for (node, r) in futures::future::join_all(asks).await {
        match r {
            Ok(p) => sources.push(RemoteFacts {
                node,
                after: p.entries.last().map(|e| e.seq),
                more: p.more,
                buf: p.entries.into(),
            }),
            Err(why) => {
                tracing::warn!(node = %node, reason = %why, "journal of another node unavailable for the register");
                unavailable.push((node, why));
            }
        }
    }
    (sources, unavailable)
}

impl RemoteFacts {
    /// The next entry's time, fetching the next page when this one is used up.
    pub fn peek_time(
        &mut self,
        rt: &tokio::runtime::Handle,
        cluster: &Arc<dyn ClusterInfo>,
        who: &CarriedIdentity,
        f: &Filters,
        actions: &[Action],
    ) -> Result<Option<i64>, String> {
        if self.buf.is_empty() && self.more {
            let path = entries_path(f, actions, self.after, REGISTER_PAGE);
            let p = rt
                .block_on(remote_page(cluster, &self.node, path, who.clone()))
                .map_err(|e| format!("journal of node {}: {e}", self.node))?;
            self.after = p.entries.last().map(|e| e.seq).or(self.after);
            self.more = p.more && !p.entries.is_empty();
            self.buf = p.entries.into();
        }
        Ok(self.buf.front().map(|e| e.time_90k))
    }

    pub fn pop(&mut self) -> Option<Entry> {
        self.buf.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_reads_back_what_it_wrote_and_refuses_garbage() {
        let c = Cursor::parse(Some("rec-a:12,rec-b:0"), "rec-c").unwrap();
        assert_eq!(c.render(), "rec-a:12,rec-b:0");
        assert_eq!(
            Cursor::parse(Some("7"), "rec-c").unwrap().render(),
            "rec-c:7"
        );
        assert_eq!(Cursor::parse(None, "rec-c").unwrap(), Cursor::default());
        for bad in ["rec-a", "rec-a:x", ":3", "rec-a:-1"] {
            assert!(Cursor::parse(Some(bad), "rec-c").is_err(), "{bad}");
        }
        assert_eq!(pct("a b/é"), "a%20b%2F%C3%A9");
    }
}
